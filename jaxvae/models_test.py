"""Tests of jaxvae.models (JAX only; the golden values are hand arithmetic and float64 NumPy).
Twin: torchvae/models_test.py."""

from __future__ import annotations

import math
import subprocess
import sys

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from flax import nnx

from jaxvae import models
from vaecommon import presets

jax.config.update("jax_default_matmul_precision", "highest")

PRESETS = models.list_models()
BN_PRESETS = ["manning_glasses_vae", "resnet_vae"]
SMALL = {"manning_glasses_vae": {"image_size": 64}}  # the 256 px model is tested once, below


# Parameter counts by hand arithmetic, independent of the model code (see also vaecommon.presets).
def _lin(i, o):
    return i * o + o


def _conv(ci, co, k, bias=True):
    return co * ci * k * k + (co if bias else 0)


def _convt(ci, co, k):
    return ci * co * k * k + co


def _bn(c):
    return 2 * c  # weight + bias; running stats are not parameters


def _res(c):
    return 2 * _conv(c, c, 3, bias=False) + 2 * _bn(c)


EXPECTED_PARAMS = {
    "pytorch_examples": _lin(784, 400) + 2 * _lin(400, 20) + _lin(20, 400) + _lin(400, 784),
    "flax_examples": _lin(784, 500) + 2 * _lin(500, 20) + _lin(20, 500) + _lin(500, 784),
    "pytorch_mnist_vae": (_lin(784, 512) + _lin(512, 256) + 2 * _lin(256, 2) + _lin(2, 256)
                          + _lin(256, 512) + _lin(512, 784)),
    "leaky_vae": (_lin(784, 400) + _lin(400, 200) + 2 * _lin(200, 2) + _lin(2, 200)
                  + _lin(200, 400) + _lin(400, 784)),
    "leaky_vae_256": (_lin(784, 256) + _lin(256, 2) + 2 * _lin(2, 2) + _lin(2, 2) + _lin(2, 256)
                      + _lin(256, 784)),
    "manning_ae": _lin(784, 200) + _lin(200, 20) + _lin(20, 200) + _lin(200, 784),
    "manning_glasses_vae": (
        _conv(3, 8, 3) + _conv(8, 16, 3) + _bn(16) + _conv(16, 32, 3) + _lin(31 * 31 * 32, 1024)
        + 2 * _lin(1024, 100)
        + _lin(100, 1024) + _lin(1024, 31 * 31 * 32) + _convt(32, 16, 3) + _bn(16)
        + _convt(16, 8, 3) + _bn(8) + _convt(8, 3, 3)),
    "simple_ae": _lin(784, 128) + _lin(128, 32) + _lin(32, 128) + _lin(128, 784),
    "simple_vae": (_lin(784, 512) + _lin(512, 256) + 2 * _lin(256, 32) + _lin(32, 256)
                   + _lin(256, 512) + _lin(512, 784)),
    "conv_vae": (_conv(1, 32, 4) + _conv(32, 64, 4) + 2 * _lin(64 * 7 * 7, 16)
                 + _lin(16, 64 * 7 * 7) + _convt(64, 32, 4) + _convt(32, 1, 4)),
    "resnet_vae": (_conv(1, 32, 4) + _conv(32, 64, 4) + 2 * _lin(64 * 7 * 7, 16)
                   + _lin(16, 64 * 7 * 7) + _convt(64, 32, 4) + _convt(32, 1, 4)
                   + 2 * _res(32) + 2 * _res(64)),
    # two gated layers (h and g) each way, mean and logvar heads, the decoder's output layer
    "exemplar_vae": (2 * _lin(784, 300) + 2 * _lin(300, 300) + 2 * _lin(300, 40)
                     + 2 * _lin(40, 300) + 2 * _lin(300, 300) + _lin(300, 784)),
    "burgess_vae": (_conv(1, 32, 4) + 3 * _conv(32, 32, 4) + _lin(32 * 4 * 4, 256)
                    + _lin(256, 256) + 2 * _lin(256, 10) + _lin(10, 256) + _lin(256, 256)
                    + _lin(256, 32 * 4 * 4) + 3 * _convt(32, 32, 4) + _convt(32, 1, 4)),
}


def _random_model(name, seed=0, **overrides):
    """build_model's structure (nnx.eval_shape: no init compute) filled with random NumPy values.

    Eager init compiles one random draw per parameter shape (~0.2 s each on CPU); the contract
    tests only need some weights (init itself is tested below, on conv_vae and resnet_vae).
    """
    rng = np.random.default_rng(seed)
    m = nnx.eval_shape(lambda: models.build_model(name, key=0, **overrides))
    graphdef, state = nnx.split(m)

    def fill(path, v):
        if path[-1] == "num_batches_tracked":
            return jnp.zeros(v.shape, v.dtype)
        if path[-1] == "var":
            return jnp.asarray(rng.uniform(0.5, 1.5, v.shape), v.dtype)
        fan_in = math.prod(v.shape[:-1]) if len(v.shape) > 1 else 100
        return jnp.asarray(rng.uniform(-1, 1, v.shape) / math.sqrt(fan_in), v.dtype)

    flat = [(p, fill(p, v)) for p, v in nnx.to_flat_state(state)]
    return nnx.merge(graphdef, nnx.from_flat_state(flat))


@pytest.fixture(scope="module")
def built():
    """One model per preset (small glasses), made lazily and shared by read-only tests."""
    cache = {}

    def get(name):
        if name not in cache:
            cache[name] = _random_model(name, **SMALL.get(name, {}))
        return cache[name]

    return get


def _inputs(spec, batch, seed=0):
    c, h, w = spec.input_shape
    rng = np.random.default_rng(seed)
    x = rng.random((batch, h, w, c), dtype=np.float32)
    eps = rng.standard_normal((batch, spec.latent_dim)).astype(np.float32)
    return jnp.asarray(x), jnp.asarray(eps)


def test_expected_params_match_preset_table():
    assert set(EXPECTED_PARAMS) == set(PRESETS)
    for name in PRESETS:
        assert presets.PRESETS[name].params == EXPECTED_PARAMS[name], name


def _abstract(name, **overrides):
    """The model with shapes only (nnx.eval_shape: no init compute), for counts and shapes."""
    return nnx.eval_shape(lambda: models.build_model(name, key=0, **overrides))


@pytest.mark.parametrize("name", PRESETS)
def test_param_count(name):
    assert models.num_params(_abstract(name)) == EXPECTED_PARAMS[name]


def test_glasses_256_forward_shapes():
    """The book's 256 px model traced once end to end (abstractly: shapes, no 63M-param compute)."""
    m = _abstract("manning_glasses_vae")
    x, eps = _inputs(m.spec, 1)
    graphdef, state = nnx.split(m)
    out = jax.eval_shape(lambda s, x, e: nnx.merge(graphdef, s)(x, eps=e), state, x, eps)
    assert out.logits.shape == (1, 256, 256, 3) and out.mean.shape == out.logvar.shape == (1, 100)
    assert out.logits.dtype == jnp.float32


@pytest.mark.parametrize("name", PRESETS)
def test_forward_contract(name, built):
    """Shapes, dtypes, AE/VAE fields, reparameterisation, decode/generate/sample ranges."""
    m = built(name)
    m.eval()  # BatchNorm models: running statistics, so repeated calls are comparable
    try:
        _check_contract(m)
    finally:
        m.train()


@nnx.jit
def _contract_outputs(m, x, eps, key):
    """Everything the contract test looks at, in one compiled call (eager JAX compiles per op)."""
    out = m(x, eps=eps)
    return dict(out=out, logits=m.decode_logits(out.z), dec=m.decode(out.z),
                gen=m.generate(out.z), sample=m.sample(2, key),
                flat=m(x.reshape(x.shape[0], -1), eps=eps).logits)


def _check_contract(m):
    spec = m.spec
    c, h, w = spec.input_shape
    x, eps = _inputs(spec, 3)
    r = _contract_outputs(m, x, eps, jax.random.key(1))
    out = r["out"]
    assert isinstance(out, models.ModelOutput) and out._fields == ("logits", "mean", "logvar", "z")
    conv = spec.family in ("manning_glasses_vae", "conv_vae", "resnet_vae", "burgess_vae")
    assert out.logits.shape == ((3, h, w, c) if conv else (3, c * h * w))
    assert out.mean.shape == (3, spec.latent_dim)
    for a in (out.logits, out.mean, out.z):
        assert a.dtype == jnp.float32 and bool(jnp.all(jnp.isfinite(a)))
    mean, logvar, z = (np.asarray(a, np.float64) if a is not None else None
                       for a in (out.mean, out.logvar, out.z))
    if spec.is_vae:
        assert out.logvar.shape == (3, spec.latent_dim)
        np.testing.assert_allclose(z, mean + np.exp(0.5 * logvar) * np.asarray(eps), rtol=1e-6, atol=1e-6)
    else:
        assert out.logvar is None
        np.testing.assert_array_equal(out.z, out.mean)
    # decode_logits(z) is the forward's logits; decode is the source's output; generate in [0, 1]
    np.testing.assert_allclose(r["logits"], out.logits, rtol=1e-6, atol=1e-6)
    want_dec = 1 / (1 + np.exp(-np.asarray(r["logits"], np.float64))) if spec.output == "probs" else r["logits"]
    np.testing.assert_allclose(r["dec"], want_dec, rtol=1e-6, atol=1e-7)
    np.testing.assert_allclose(r["gen"], 1 / (1 + np.exp(-np.asarray(r["logits"], np.float64))),
                               rtol=1e-6, atol=1e-7)
    assert bool(jnp.all((r["gen"] >= 0) & (r["gen"] <= 1)))
    s = r["sample"]
    assert s.shape == (2, h, w, c) and s.dtype == jnp.float32
    assert bool(jnp.all((s >= 0) & (s <= 1)))
    # MLPs also take flat inputs, conv models flat rows too (reshaped to the spec's image)
    np.testing.assert_allclose(r["flat"], out.logits, rtol=1e-6, atol=1e-6)


def test_reparameterize_hand_values(built):
    m = built("simple_vae")
    mean = jnp.array([[1.0, 2.0]])
    logvar = jnp.array([[0.0, 2 * math.log(2.0)]])      # std 1 and 2
    eps = jnp.array([[0.5, -1.0]])
    np.testing.assert_allclose(m.reparameterize(mean, logvar, eps), [[1.5, 0.0]], atol=1e-6)


def test_logvar_as_scale_quirk():
    """leaky_vae's notebook passes logvar where a scale is expected: z = mean + logvar * eps."""
    m = _random_model("leaky_vae", reparam="logvar_as_scale")
    mean, logvar, eps = jnp.array([[1.0, 2.0]]), jnp.array([[0.0, -3.0]]), jnp.array([[0.5, 2.0]])
    np.testing.assert_allclose(m.reparameterize(mean, logvar, eps), [[1.0, -4.0]], atol=1e-6)
    x, eps = _inputs(m.spec, 2)
    out = m(x, eps=eps)
    np.testing.assert_allclose(out.z, out.mean + out.logvar * eps, rtol=1e-6, atol=1e-6)
    assert _abstract("leaky_vae").spec.reparam == "logvar"  # default: the correct form


def test_glasses_encode_std(built):
    """encode_std is the book's (mu, std = exp(linear3)); encode's logvar = 2 log std."""
    m = built("manning_glasses_vae")
    m.eval()
    try:
        x, _ = _inputs(m.spec, 2)
        mean, std = m.encode_std(x)
        mean2, logvar = m.encode(x)
        np.testing.assert_array_equal(mean, mean2)
        assert bool(jnp.all(std > 0))
        np.testing.assert_allclose(logvar, 2 * np.log(np.asarray(std, np.float64)), rtol=1e-5, atol=1e-6)
        h = jax.nn.relu(m.encoder.linear1(_glasses_features(m, x)))
        np.testing.assert_allclose(std, jnp.exp(m.encoder.linear3(h)), rtol=1e-6)
    finally:
        m.train()


def _glasses_features(m, x):
    e = m.encoder
    h = jax.nn.relu(e.conv1(x))
    h = jax.nn.relu(e.batch2(e.conv2(h)))
    return jax.nn.relu(e.conv3(h)).reshape(x.shape[0], -1)


def test_forward_needs_eps_or_key(built):
    m = built("pytorch_examples")
    x, eps = _inputs(m.spec, 2)
    with pytest.raises(ValueError, match="eps"):
        m(x)
    a = m(x, key=jax.random.key(3))
    b = m(x, eps=jax.random.normal(jax.random.key(3), (2, m.spec.latent_dim)))
    np.testing.assert_array_equal(a.z, b.z)
    built("simple_ae")(x)  # an AE needs no noise


def test_build_model_errors():
    with pytest.raises(KeyError, match="valid presets"):
        models.build_model("nope", key=0)
    with pytest.raises(ValueError, match="init"):
        models.build_model("conv_vae", key=0, init="xavier")
    with pytest.raises(ValueError, match="exactly one"):
        models.build_model("conv_vae")
    with pytest.raises(TypeError, match="valid overrides"):
        models.build_model("conv_vae", key=0, latent=3)
    with pytest.raises(ValueError, match="hidden"):
        models.build_model("simple_vae", key=0, hidden=(10,))
    with pytest.raises(ValueError, match="multiple of 8"):
        models.build_model("manning_glasses_vae", key=0, image_size=60)
    with pytest.raises(ValueError, match="multiples of 16, got 72x72"):
        models.build_model("burgess_vae", key=0, image_size=72)


def test_overrides_change_shapes():
    m = _abstract("conv_vae", latent_dim=3, hidden=(4, 8))
    assert m.spec.params == 0 and m.spec.latent_dim == 3
    graphdef, state = nnx.split(m)
    out = jax.eval_shape(lambda s, x, e: nnx.merge(graphdef, s)(x, eps=e), state,
                         jnp.zeros((2, 28, 28, 1)), jnp.zeros((2, 3)))
    assert out.logits.shape == (2, 28, 28, 1) and out.mean.shape == (2, 3)
    assert m.encoder.layers[0].kernel.shape == (4, 4, 1, 4)
    m = _abstract("leaky_vae_256", hidden=(16, 5))
    assert m.mean_layer.kernel.shape == (5, 2) and m.encoder.layers[0].kernel.shape == (784, 16)


# ---- init --------------------------------------------------------------------------------------

def _bound(fan_in):
    return 1 / math.sqrt(fan_in)


# (layer, fan_in by torch's rule): conv fan_in = in*k*k; ConvTranspose's = out*k*k (torch quirk)
CONV_VAE_FAN_IN = {
    "encoder.0": 1 * 4 * 4, "encoder.2": 32 * 4 * 4, "fc_mean": 3136, "fc_logvar": 3136,
    "decoder_fc": 16, "decoder.0": 32 * 4 * 4, "decoder.2": 1 * 4 * 4,
}


def _layer(m, dotted):
    obj = m
    for p in dotted.split("."):
        obj = obj.layers[int(p)] if p.isdigit() else getattr(obj, p)
    return obj


def test_torch_init_bounds_and_spread():
    """init="torch": every weight and bias ~ U(-1/sqrt(fan_in), 1/sqrt(fan_in)), torch's fan_in."""
    m = models.build_model("conv_vae", key=0, init="torch")
    for name, fan_in in CONV_VAE_FAN_IN.items():
        b = _bound(fan_in)
        layer = _layer(m, name)
        for what in ("kernel", "bias"):
            a = np.asarray(getattr(layer, what)[...], np.float64)
            assert np.abs(a).max() <= b * (1 + 1e-6), (name, what)
            if a.size >= 500:  # enough draws to see the edges and the spread of a uniform
                assert np.abs(a).max() >= 0.95 * b, (name, what)
                assert abs(a.std() / (b / math.sqrt(3)) - 1) < 0.1, (name, what)
    # ConvTranspose(32 -> 1, k4): bound 1/sqrt(1*16) = 0.25, not 1/sqrt(32*16) (the in_channels rule)
    assert np.abs(np.asarray(m.decoder.layers[2].kernel[...])).max() > 0.2


def test_default_init_is_flax():
    m = models.build_model("conv_vae", key=0)
    assert float(jnp.abs(m.fc_mean.bias[...]).max()) == 0.0          # Flax: zero biases
    w = np.asarray(m.fc_mean.kernel[...])
    assert abs(w.std() * math.sqrt(3136) - 1) < 0.1                  # lecun_normal: var 1/fan_in


def test_conv_default_init_is_bitwise_flax_default():
    """The 2-D draw used for conv kernels (faster to compile) gives nnx.Conv's own numbers."""
    ours = models._conv(3, 8, 3, 2, 1, rngs=nnx.Rngs(params=7), init="default")
    flax = nnx.Conv(3, 8, (3, 3), strides=2, padding=1, rngs=nnx.Rngs(params=7))
    np.testing.assert_array_equal(ours.kernel[...], flax.kernel[...])
    # (ConvTranspose uses the same _as_2d wrapper on its (k, k, out, in) kernel)


def test_batchnorm_init():
    """Both inits leave BatchNorm at torch's reset state (BatchNorm takes no rngs/init)."""
    for bn in (models.BatchNorm(4), models.ResBlock(4, rngs=nnx.Rngs(0), init="torch").bn1):
        np.testing.assert_array_equal(bn.scale[...], 1.0)
        np.testing.assert_array_equal(bn.bias[...], 0.0)
        np.testing.assert_array_equal(bn.mean[...], 0.0)
        np.testing.assert_array_equal(bn.var[...], 1.0)
        assert int(bn.num_batches_tracked[...]) == 0


# ---- BatchNorm ---------------------------------------------------------------------------------

def _bn_oracle(x, scale, bias, rmean, rvar, momentum=0.1, eps=1e-5):
    """float64 torch semantics: normalise with the biased batch variance, track the unbiased one."""
    axes = tuple(range(x.ndim - 1))
    n = x.size // x.shape[-1]
    mean, var = x.mean(axes), x.var(axes)
    y = (x - mean) / np.sqrt(var + eps) * scale + bias
    return y, (1 - momentum) * rmean + momentum * mean, (1 - momentum) * rvar + momentum * var * n / (n - 1)


def test_batchnorm_matches_float64_oracle_over_steps():
    rng = np.random.default_rng(0)
    bn = models.BatchNorm(5)
    bn.scale[...] = jnp.asarray(rng.normal(size=5), jnp.float32)
    bn.bias[...] = jnp.asarray(rng.normal(size=5), jnp.float32)
    scale, bias = np.asarray(bn.scale[...], np.float64), np.asarray(bn.bias[...], np.float64)
    rmean, rvar = np.zeros(5), np.ones(5)
    for step in range(4):
        x = (rng.normal(size=(3, 4, 4, 5)) * 3 + step).astype(np.float32)
        y = bn(jnp.asarray(x))
        want, rmean, rvar = _bn_oracle(x.astype(np.float64), scale, bias, rmean, rvar)
        np.testing.assert_allclose(y, want, rtol=1e-5, atol=1e-5)
        np.testing.assert_allclose(bn.mean[...], rmean, rtol=1e-5, atol=1e-6)
        np.testing.assert_allclose(bn.var[...], rvar, rtol=1e-5, atol=1e-6)
        assert int(bn.num_batches_tracked[...]) == step + 1
    bn.use_running_average = True
    x = rng.normal(size=(2, 3, 3, 5)).astype(np.float32)
    want = (x - rmean) / np.sqrt(rvar + 1e-5) * scale + bias
    np.testing.assert_allclose(bn(jnp.asarray(x)), want, rtol=1e-5, atol=1e-5)
    np.testing.assert_allclose(bn.var[...], rvar, rtol=1e-5)  # eval: no update
    assert int(bn.num_batches_tracked[...]) == 4


def test_batchnorm_refuses_single_value_per_channel():
    with pytest.raises(ValueError, match="more than 1 value"):
        models.BatchNorm(3)(jnp.ones((1, 3)))


def test_train_eval_modes():
    """train(): batch statistics, running stats move; eval(): running stats, nothing moves."""
    m = models.build_model("resnet_vae", key=0)
    x, eps = _inputs(m.spec, 2)
    graphdef, state = nnx.split(m)

    @jax.jit
    def step(state, x, eps):
        mm = nnx.merge(graphdef, state)
        out = mm(x, eps=eps)
        return out, nnx.state(mm)

    stats0 = [np.array(a) for a in jax.tree.leaves(nnx.state(m, nnx.BatchStat))]  # copies
    out_train, state1 = step(state, x, eps)
    nnx.update(m, state1)
    moved = [not np.array_equal(a, b) for a, b in
             zip(stats0, jax.tree.leaves(nnx.state(m, nnx.BatchStat)))]
    assert len(moved) == 8 * 3 and all(moved)  # 4 ResBlocks x 2 BatchNorms x (mean, var, count)
    m.eval()
    before = [np.array(a) for a in jax.tree.leaves(nnx.state(m, nnx.BatchStat))]
    out_eval = m(x, eps=eps)
    out_eval2 = m(x, eps=eps)
    np.testing.assert_array_equal(out_eval.logits, out_eval2.logits)
    after = nnx.state(m, nnx.BatchStat)
    for a, b in zip(before, jax.tree.leaves(after)):
        np.testing.assert_array_equal(a, b)
    assert not np.allclose(out_eval.logits, out_train.logits)


def test_split_merge_jit_does_not_retrace(built):
    m = built("simple_vae")
    graphdef, params, rest = nnx.split(m, nnx.Param, ...)
    traces = []

    @jax.jit
    def f(params, rest, x, eps):
        traces.append(1)
        return nnx.merge(graphdef, params, rest)(x, eps=eps).logits

    x, eps = _inputs(m.spec, 2)
    f(params, rest, x, eps)
    f(params, rest, x + 1, eps * 2)
    assert len(traces) == 1


def test_spec_is_hashable_for_graphdefs(built):
    """jit hashes graphdefs, which hold the spec as a static attribute."""
    m = built("conv_vae")
    graphdef, _ = nnx.split(m)
    hash(graphdef)


def test_jaxvae_models_does_not_import_torch():
    code = ("import sys, jaxvae.models, jaxvae.convert; "
            "assert 'torch' not in sys.modules and 'torchvae' not in sys.modules")
    subprocess.run([sys.executable, "-c", code], check=True)
