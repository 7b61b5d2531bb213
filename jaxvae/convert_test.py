"""Tests of jaxvae.convert (JAX only). Goldens: hand-written PyTorch names/shapes and float64
NumPy implementations of torch's Conv2d / ConvTranspose2d / flatten / BatchNorm semantics.
The cross-framework checks (a real torch model's state_dict) live in parity_tests/test_models.py."""

from __future__ import annotations

import math

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from flax import nnx

from jaxvae import convert, models
from vaecommon import presets
from vaecommon.weights import WeightsMismatchError

jax.config.update("jax_default_matmul_precision", "highest")

PRESETS = models.list_models()
SMALL = {"manning_glasses_vae": {"image_size": 64}}


def _abstract(name, **overrides):
    return nnx.eval_shape(lambda: models.build_model(name, key=0, **overrides))


def _random_canonical(name, seed=0, **overrides):
    """Random canonical weights of the right names/shapes (positive variances, a count)."""
    rng = np.random.default_rng(seed)
    out = {}
    for k, shape in convert.canonical_shapes(_abstract(name, **overrides)).items():
        if k.endswith("num_batches_tracked"):
            out[k] = np.array(rng.integers(0, 1000), np.int64)
        elif k.endswith("running_var"):
            out[k] = rng.uniform(0.5, 2.0, shape).astype(np.float32)
        else:
            fan_in = math.prod(shape[1:]) if len(shape) > 1 else 50
            out[k] = (rng.uniform(-1, 1, shape) / math.sqrt(fan_in)).astype(np.float32)
    return out


# ---- names, shapes, dtypes (hand-written from the source classes) ---------------------------------

def _bn_keys(prefix, c):
    return {f"{prefix}.weight": (c,), f"{prefix}.bias": (c,), f"{prefix}.running_mean": (c,),
            f"{prefix}.running_var": (c,), f"{prefix}.num_batches_tracked": ()}


EXPECTED_KEYS = {
    "pytorch_examples": {
        "fc1.weight": (400, 784), "fc1.bias": (400,), "fc21.weight": (20, 400), "fc21.bias": (20,),
        "fc22.weight": (20, 400), "fc22.bias": (20,), "fc3.weight": (400, 20), "fc3.bias": (400,),
        "fc4.weight": (784, 400), "fc4.bias": (784,)},
    "flax_examples": {
        "encoder.fc1.weight": (500, 784), "encoder.fc1.bias": (500,),
        "encoder.fc2_mean.weight": (20, 500), "encoder.fc2_mean.bias": (20,),
        "encoder.fc2_logvar.weight": (20, 500), "encoder.fc2_logvar.bias": (20,),
        "decoder.fc1.weight": (500, 20), "decoder.fc1.bias": (500,),
        "decoder.fc2.weight": (784, 500), "decoder.fc2.bias": (784,)},
    "leaky_vae": {
        "encoder.0.weight": (400, 784), "encoder.0.bias": (400,), "encoder.2.weight": (200, 400),
        "encoder.2.bias": (200,), "mean_layer.weight": (2, 200), "mean_layer.bias": (2,),
        "logvar_layer.weight": (2, 200), "logvar_layer.bias": (2,), "decoder.0.weight": (200, 2),
        "decoder.0.bias": (200,), "decoder.2.weight": (400, 200), "decoder.2.bias": (400,),
        "decoder.4.weight": (784, 400), "decoder.4.bias": (784,)},
    "manning_ae": {
        "common.weight": (200, 784), "common.bias": (200,), "encoded.weight": (20, 200),
        "encoded.bias": (20,), "l1.weight": (200, 20), "l1.bias": (200,),
        "decode.weight": (784, 200), "decode.bias": (784,)},
    "manning_glasses_vae": {  # at 64 px: conv3 output 7x7x32 = 1568 features
        "encoder.conv1.weight": (8, 3, 3, 3), "encoder.conv1.bias": (8,),
        "encoder.conv2.weight": (16, 8, 3, 3), "encoder.conv2.bias": (16,),
        **_bn_keys("encoder.batch2", 16),
        "encoder.conv3.weight": (32, 16, 3, 3), "encoder.conv3.bias": (32,),
        "encoder.linear1.weight": (1024, 1568), "encoder.linear1.bias": (1024,),
        "encoder.linear2.weight": (100, 1024), "encoder.linear2.bias": (100,),
        "encoder.linear3.weight": (100, 1024), "encoder.linear3.bias": (100,),
        "decoder.decoder_lin.0.weight": (1024, 100), "decoder.decoder_lin.0.bias": (1024,),
        "decoder.decoder_lin.2.weight": (1568, 1024), "decoder.decoder_lin.2.bias": (1568,),
        "decoder.decoder_conv.0.weight": (32, 16, 3, 3), "decoder.decoder_conv.0.bias": (16,),
        **_bn_keys("decoder.decoder_conv.1", 16),
        "decoder.decoder_conv.3.weight": (16, 8, 3, 3), "decoder.decoder_conv.3.bias": (8,),
        **_bn_keys("decoder.decoder_conv.4", 8),
        "decoder.decoder_conv.6.weight": (8, 3, 3, 3), "decoder.decoder_conv.6.bias": (3,)},
    "conv_vae": {
        "encoder.0.weight": (32, 1, 4, 4), "encoder.0.bias": (32,),
        "encoder.2.weight": (64, 32, 4, 4), "encoder.2.bias": (64,),
        "fc_mean.weight": (16, 3136), "fc_mean.bias": (16,),
        "fc_logvar.weight": (16, 3136), "fc_logvar.bias": (16,),
        "decoder_fc.weight": (3136, 16), "decoder_fc.bias": (3136,),
        "decoder.0.weight": (64, 32, 4, 4), "decoder.0.bias": (32,),
        "decoder.2.weight": (32, 1, 4, 4), "decoder.2.bias": (1,)},
}


@pytest.mark.parametrize("name", list(EXPECTED_KEYS))
def test_canonical_names_and_shapes(name):
    assert convert.canonical_shapes(_abstract(name, **SMALL.get(name, {}))) == EXPECTED_KEYS[name]


def test_resnet_names():
    shapes = convert.canonical_shapes(_abstract("resnet_vae"))
    assert shapes["encoder.2.conv1.weight"] == (32, 32, 3, 3)
    assert "encoder.2.conv1.bias" not in shapes                        # bias=False convs
    assert shapes["decoder.0.bn2.running_var"] == (64,)
    assert shapes["decoder.3.bn1.num_batches_tracked"] == ()
    assert shapes["decoder.4.weight"] == (32, 1, 4, 4)                  # ConvT (in, out, k, k)
    assert len(shapes) == 14 + 4 * (2 + 2 * 5)                          # conv_vae's + 4 ResBlocks


def test_dtypes():
    w = convert.to_canonical(_random_model_from(_random_canonical("resnet_vae"), "resnet_vae"))
    for k, v in w.items():
        assert v.dtype == (np.int64 if k.endswith("num_batches_tracked") else np.float32), k


def _random_model_from(weights, name, **overrides):
    return convert.from_canonical(name, weights, **overrides)


# ---- exact round trips ---------------------------------------------------------------------------

@pytest.mark.parametrize("name", PRESETS)
def test_round_trips_are_bit_exact(name):
    kw = SMALL.get(name, {})
    w = _random_canonical(name, **kw)
    m = convert.from_canonical(name, w, **kw)
    back = convert.to_canonical(m)                                   # canonical -> JAX -> canonical
    assert list(back) == list(convert.canonical_shapes(m)) and set(back) == set(w)
    for k in w:
        assert back[k].dtype == w[k].dtype and back[k].shape == w[k].shape, k
        np.testing.assert_array_equal(back[k], w[k], err_msg=k)
    m2 = convert.from_canonical(name, back, **kw)                   # JAX -> canonical -> JAX
    for (p1, a), (p2, b) in zip(nnx.to_flat_state(nnx.state(m)), nnx.to_flat_state(nnx.state(m2))):
        assert p1 == p2
        np.testing.assert_array_equal(a.get_value(), b.get_value(), err_msg=str(p1))


def test_build_model_round_trip_and_into_existing_model():
    m = models.build_model("simple_ae", key=3)
    w = convert.to_canonical(m)
    other = convert.load_canonical_into(models.build_model("simple_ae", key=4), w)
    for k, v in convert.to_canonical(other).items():
        np.testing.assert_array_equal(v, w[k])


# ---- layouts against float64 NumPy implementations of torch's semantics ----------------------------

def _conv_ref(x, w, b, s, p):
    """torch Conv2d: x (N, C, H, W), w (O, C, k, k) cross-correlation."""
    x = np.pad(x, ((0, 0), (0, 0), (p, p), (p, p)))
    k = w.shape[-1]
    ho, wo = (x.shape[2] - k) // s + 1, (x.shape[3] - k) // s + 1
    out = np.zeros((x.shape[0], w.shape[0], ho, wo))
    for i in range(ho):
        for j in range(wo):
            out[:, :, i, j] = np.einsum("nckl,ockl->no", x[:, :, i * s:i * s + k, j * s:j * s + k], w)
    return out + b[None, :, None, None]


def _conv_transpose_ref(x, w, b, s, p, op):
    """torch ConvTranspose2d: w (C_in, O, k, k); each input pixel scatters k x k * w; output
    (i - 1) * s - 2p + k + op, cropping p at the start (output_padding extends the end)."""
    n, _, h, wd = x.shape
    k = w.shape[-1]
    full = np.zeros((n, w.shape[1], (h - 1) * s + k + op, (wd - 1) * s + k + op))
    for i in range(h):
        for j in range(wd):
            full[:, :, i * s:i * s + k, j * s:j * s + k] += np.einsum("nc,cokl->nokl", x[:, :, i, j], w)
    ho, wo = (h - 1) * s - 2 * p + k + op, (wd - 1) * s - 2 * p + k + op
    return full[:, :, p:p + ho, p:p + wo] + b[None, :, None, None]


class _One(nnx.Module):
    def __init__(self, layer):
        self.layer = layer

    def __call__(self, x):
        return self.layer(x)


@pytest.mark.parametrize("k,s,p", [(3, 2, 1), (3, 2, 0), (4, 2, 1), (3, 1, 1)],
                         ids=lambda v: str(v))
def test_conv_layout(k, s, p):
    rng = np.random.default_rng(0)
    one = nnx.eval_shape(lambda: _One(models._conv(3, 5, k, s, p, rngs=nnx.Rngs(0), init="default")))
    w = rng.normal(size=(5, 3, k, k)).astype(np.float32)
    b = rng.normal(size=5).astype(np.float32)
    convert.load_canonical_into(one, {"layer.weight": w, "layer.bias": b})
    x = rng.normal(size=(2, 3, 9, 9)).astype(np.float32)
    got = np.asarray(one(jnp.asarray(x.transpose(0, 2, 3, 1)))).transpose(0, 3, 1, 2)
    want = _conv_ref(x.astype(np.float64), w.astype(np.float64), b.astype(np.float64), s, p)
    np.testing.assert_allclose(got, want, rtol=1e-5, atol=1e-5)


CONVT_COMBOS = [  # (k, s, p, output_padding, n): the presets' layers and the edge cases
    (3, 2, 0, 1, 7),   # glasses decoder_conv.0
    (3, 2, 1, 1, 8),   # glasses decoder_conv.3 / .6
    (4, 2, 1, 0, 7),   # conv_vae / resnet_vae decoder
    (3, 1, 1, 0, 5),   # stride 1, "same"
    (5, 3, 2, 2, 4),   # output_padding = stride - 1 > padding
    (2, 2, 0, 0, 4),   # k = s, no overlap
]


@pytest.mark.parametrize("k,s,p,op,n", CONVT_COMBOS, ids=lambda v: str(v))
def test_conv_transpose_layout_and_padding(k, s, p, op, n):
    rng = np.random.default_rng(1)
    one = nnx.eval_shape(
        lambda: _One(models._conv_transpose(4, 3, k, s, p, op, rngs=nnx.Rngs(0), init="default")))
    w = rng.normal(size=(4, 3, k, k)).astype(np.float32)        # torch (in, out, k, k)
    b = rng.normal(size=3).astype(np.float32)
    convert.load_canonical_into(one, {"layer.weight": w, "layer.bias": b})
    x = rng.normal(size=(2, 4, n, n)).astype(np.float32)
    got = np.asarray(one(jnp.asarray(x.transpose(0, 2, 3, 1)))).transpose(0, 3, 1, 2)
    want = _conv_transpose_ref(x.astype(np.float64), w.astype(np.float64), b.astype(np.float64), s, p, op)
    assert got.shape == want.shape == (2, 3, (n - 1) * s - 2 * p + k + op, (n - 1) * s - 2 * p + k + op)
    np.testing.assert_allclose(got, want, rtol=1e-5, atol=1e-5)


def test_linear_layout():
    w = _random_canonical("pytorch_examples")
    m = convert.from_canonical("pytorch_examples", w)
    np.testing.assert_array_equal(m.fc1.kernel[...], w["fc1.weight"].T)
    np.testing.assert_array_equal(m.fc1.bias[...], w["fc1.bias"])


@pytest.mark.parametrize("name,enc,dec", [
    ("conv_vae", "fc_mean", "decoder_fc"),
    ("manning_glasses_vae", "encoder.linear1", "decoder.decoder_lin.2"),
])
def test_flatten_order(name, enc, dec):
    """The Linear after the conv stack reads a torch (C, H, W) flatten; the one before the
    unflatten writes one. Checked with the canonical weights in NumPy, torch's order."""
    kw = SMALL.get(name, {})
    w = _random_canonical(name, **kw)
    m = convert.from_canonical(name, w, **kw)
    c, h, wd = presets.feature_shape(m.spec)
    rng = np.random.default_rng(2)
    fmap = rng.normal(size=(2, c, h, wd)).astype(np.float32)            # torch NCHW feature map
    want = fmap.reshape(2, -1).astype(np.float64) @ w[f"{enc}.weight"].T.astype(np.float64) + w[f"{enc}.bias"]
    got = _layer(m, enc)(jnp.asarray(fmap.transpose(0, 2, 3, 1).reshape(2, -1)))  # NHWC flatten
    np.testing.assert_allclose(got, want, rtol=1e-5, atol=1e-5)
    din = w[f"{dec}.weight"].shape[1]
    z = rng.normal(size=(2, din)).astype(np.float32)
    want = (z.astype(np.float64) @ w[f"{dec}.weight"].T.astype(np.float64) + w[f"{dec}.bias"])
    want = want.reshape(2, c, h, wd).transpose(0, 2, 3, 1)              # torch unflatten -> NHWC
    got = np.asarray(_layer(m, dec)(jnp.asarray(z))).reshape(2, h, wd, c)
    np.testing.assert_allclose(got, want, rtol=1e-5, atol=1e-5)


def _layer(m, dotted):
    obj = m
    for p in dotted.split("."):
        obj = obj.layers[int(p)] if p.isdigit() else getattr(obj, p)
    return obj


def test_batchnorm_statistics_mapping():
    """Loaded running_mean/running_var/weight/bias are what eval-mode BatchNorm uses."""
    w = _random_canonical("resnet_vae")
    m = convert.from_canonical("resnet_vae", w)
    m.eval()
    bn = m.encoder.layers[2].bn1
    p = "encoder.2.bn1"
    assert int(bn.num_batches_tracked[...]) == int(w[f"{p}.num_batches_tracked"])
    x = np.random.default_rng(3).normal(size=(2, 3, 3, 32)).astype(np.float32)
    want = ((x - w[f"{p}.running_mean"]) / np.sqrt(w[f"{p}.running_var"].astype(np.float64) + 1e-5)
            * w[f"{p}.weight"] + w[f"{p}.bias"])
    np.testing.assert_allclose(bn(jnp.asarray(x)), want, rtol=1e-5, atol=1e-6)


# ---- errors and safety -------------------------------------------------------------------------

def test_mismatches_name_the_tensor():
    w = _random_canonical("conv_vae")
    missing = dict(w)
    del missing["fc_mean.bias"]
    with pytest.raises(WeightsMismatchError, match=r"missing tensors: \['fc_mean.bias'\]"):
        convert.from_canonical("conv_vae", missing)
    extra = dict(w, **{"fc_extra.weight": np.zeros(3, np.float32)})
    with pytest.raises(WeightsMismatchError, match=r"unexpected tensors: \['fc_extra.weight'\]"):
        convert.from_canonical("conv_vae", extra)
    bad = dict(w, **{"decoder.0.weight": np.zeros((32, 64, 4, 4), np.float32)})  # in/out swapped
    with pytest.raises(WeightsMismatchError, match=r"decoder.0.weight: model needs \(64, 32, 4, 4\)"):
        convert.from_canonical("conv_vae", bad)
    with pytest.raises(WeightsMismatchError, match="fc_mean.weight"):  # built for another latent size
        convert.from_canonical("conv_vae", w, latent_dim=8)
    ints = dict(w, **{"fc_mean.bias": np.zeros(16, np.int64)})
    with pytest.raises(WeightsMismatchError, match="fc_mean.bias: expected a floating"):
        convert.from_canonical("conv_vae", ints)
    with pytest.raises(TypeError, match="overrides"):
        convert.from_canonical(convert.from_canonical("conv_vae", w), w, latent_dim=3)


def test_negative_count_is_refused():
    w = _random_canonical("resnet_vae")
    w["encoder.2.bn1.num_batches_tracked"] = np.array(-1, np.int64)
    with pytest.raises(WeightsMismatchError, match="num_batches_tracked"):
        convert.from_canonical("resnet_vae", w)


def test_loaded_model_does_not_alias_the_input_arrays():
    """Arrays handed in (e.g. views of live torch tensors) may change later; the model must not."""
    w = _random_canonical("resnet_vae")
    m = convert.from_canonical("resnet_vae", w)
    snapshot = {k: v.copy() for k, v in convert.to_canonical(m).items()}
    for v in w.values():
        v[...] = 0  # in-place, like torch updating running stats behind a .numpy() view
    for k, v in convert.to_canonical(m).items():
        np.testing.assert_array_equal(v, snapshot[k], err_msg=k)


def test_unknown_layer_type_fails_loudly():
    class WithLayerNorm(nnx.Module):
        def __init__(self):
            self.fc = nnx.Linear(2, 2, rngs=nnx.Rngs(0))
            self.norm = nnx.LayerNorm(2, rngs=nnx.Rngs(0))

    with pytest.raises(TypeError, match="no conversion rule for variable norm"):
        convert.to_canonical(WithLayerNorm())
