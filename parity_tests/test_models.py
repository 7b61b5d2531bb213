"""The model twins agree: every preset, same weights (torch init, converted through the canonical
format), the same injected eps (one NumPy array fed to both).

Order matters for diagnosis: single layers first (ConvTranspose padding arithmetic, Conv layout,
the conv -> linear flatten order, BatchNorm train/eval statistics), then per preset: parameter
count, exact canonical round trips, encode, reparameterize, decode, the full forward.
Tolerances from `asserts.TOL` (STYLE.md section 6); measured worst cases are in the report of
the test run (JAXVAE_REPORT_TOL=1) and in parity_tests/README.md.
"""

from __future__ import annotations

import jax.numpy as jnp
import numpy as np
import pytest
import torch
from flax import nnx

from jaxvae import convert as jconvert
from jaxvae import models as jmodels
from parity_tests.asserts import TOL, assert_close
from parity_tests.twins import (BN_PRESETS, CONV_PRESETS, PRESETS, draw_inputs, make_pair, perturb_batchnorm_,
                                to_nchw, to_nhwc, to_torch)
from torchvae import convert as tconvert
from torchvae import models as tmodels
from vaecommon import presets

FWD = TOL["forward"]
EXACT = TOL["weight_roundtrip"]
# Loosened on purpose, for the train-mode forward of the BatchNorm presets only. Normalising with
# the statistics of a 4-example batch divides each channel by its batch std; at init some
# channels (after a ReLU) have a small std, which amplifies the ~1e-7 relative summation-order
# differences between XLA's and oneDNN's convolutions through resnet_vae's eight BatchNorms.
# Measured on CPU over 20 seeds: worst |diff| 1.45e-5 on logits of magnitude up to ~7 (2e-6 of
# the output scale); mean/logvar/z <= 2.2e-6; the glasses VAE <= 1.8e-6. Eval mode and the
# single-layer BatchNorm test hold the `forward` row. Bound: about 7x the worst measured.
FWD_BN_TRAIN = {"rtol": 1e-5, "atol": 1e-4}
# exemplar_vae: four gated matmul layers before the logits; float32 accumulation reaches ~3e-6
# absolute near logit 0 (relative ~3e-7 of the logits' scale)
FWD_DEEP = {"exemplar_vae": {"rtol": 1e-5, "atol": 1e-5}}
B = 4  # batch: BatchNorm in train mode needs > 1 value per channel
# The glasses VAE is compared at 64 px here (same layers, 31x31 -> 7x7 feature maps); its 256 px
# parameter count and shapes are pinned in jaxvae/models_test.py and torchvae/models_test.py.
SMALL = {"manning_glasses_vae": {"image_size": 64}}


def _overrides(name: str) -> dict:
    return dict(SMALL.get(name, {}))


def _pair(name: str, seed: int = 0, **over):
    """(torch model, JAX model): same weights, BatchNorms perturbed, both in train mode."""
    p = make_pair(name, seed=seed, perturb_batchnorm=True, **{**_overrides(name), **over})
    return p.torch_model, p.jax_model


def _jx(x: np.ndarray):
    """NCHW NumPy input -> NHWC JAX array."""
    return jnp.asarray(to_nhwc(x))


class _One(nnx.Module):
    """One JAX layer under the name `layer` (canonical keys `layer.weight`, `layer.bias`, ...)."""

    def __init__(self, layer):
        self.layer = layer

    def __call__(self, x):
        return self.layer(x)


def _jax_twin(layer_factory, torch_layer):
    one = nnx.eval_shape(lambda: _One(layer_factory()))
    weights = {f"layer.{k}": v.detach().numpy().copy() for k, v in torch_layer.state_dict().items()}
    return jconvert.load_canonical_into(one, weights)


# ---- single layers ---------------------------------------------------------------------------------

def _conv_cases(kind):
    """(id, (cin, cout, k, s, p, op, bias)) for every Conv2d / ConvTranspose2d of the conv presets."""
    cases = []
    for name in CONV_PRESETS:
        spec = presets.get_spec(name, **_overrides(name))
        with torch.device("meta"):
            m = tmodels.FAMILIES[spec.family](spec)
        for path, layer in m.named_modules():
            if type(layer) is kind:
                op = getattr(layer, "output_padding", (0,))[0]
                cfg = (layer.in_channels, layer.out_channels, layer.kernel_size[0], layer.stride[0],
                       layer.padding[0], op, layer.bias is not None)
                cases.append((f"{name}:{path}", cfg))
    return cases


EXTRA_CONVT = [("stride1-same", (4, 3, 3, 1, 1, 0, True)), ("s3-op2>p", (4, 3, 5, 3, 2, 2, True)),
               ("k=s", (4, 3, 2, 2, 0, 0, True)), ("s2-p2-op1", (3, 2, 5, 2, 2, 1, True))]
CONVT_CASES = _conv_cases(torch.nn.ConvTranspose2d) + EXTRA_CONVT
CONV_CASES = _conv_cases(torch.nn.Conv2d)


@pytest.mark.parametrize("cfg", [c for _, c in CONVT_CASES], ids=[i for i, _ in CONVT_CASES])
def test_conv_transpose_layer(cfg, rng):
    cin, cout, k, s, p, op, _ = cfg
    torch.manual_seed(0)  # (test-only global seed for the layer's default init)
    tl = torch.nn.ConvTranspose2d(cin, cout, k, stride=s, padding=p, output_padding=op)
    jl = _jax_twin(lambda: jmodels._conv_transpose(cin, cout, k, s, p, op, rngs=nnx.Rngs(0),
                                                   init="default"), tl)
    x = rng.standard_normal((2, cin, 5, 5)).astype(np.float32)
    with torch.no_grad():
        want = tl(to_torch(x)).numpy()
    got = to_nchw(jl(_jx(x)))
    assert got.shape == want.shape == (2, cout, 4 * s - 2 * p + k + op, 4 * s - 2 * p + k + op)
    assert_close(got, want, name=f"convT{cfg}", **FWD)


@pytest.mark.parametrize("cfg", [c for _, c in CONV_CASES], ids=[i for i, _ in CONV_CASES])
def test_conv_layer(cfg, rng):
    cin, cout, k, s, p, _, bias = cfg
    torch.manual_seed(0)  # (test-only global seed for the layer's default init)
    tl = torch.nn.Conv2d(cin, cout, k, stride=s, padding=p, bias=bias)
    jl = _jax_twin(lambda: jmodels._conv(cin, cout, k, s, p, use_bias=bias, rngs=nnx.Rngs(0),
                                         init="default"), tl)
    x = rng.standard_normal((2, cin, 9, 9)).astype(np.float32)
    with torch.no_grad():
        want = tl(to_torch(x)).numpy()
    assert_close(to_nchw(jl(_jx(x))), want, name=f"conv{cfg}", **FWD)


FLATTEN_LAYERS = {  # preset -> (Linear reading the flattened conv map, Linear feeding the unflatten)
    "manning_glasses_vae": ("encoder.linear1", "decoder.decoder_lin.2"),
    "conv_vae": ("fc_mean", "decoder_fc"),
    "resnet_vae": ("fc_mean", "decoder_fc"),
    "burgess_vae": ("encoder_fc.0", "decoder_fc.4"),
}


def _get(model, dotted, jax_side):
    obj = model
    for part in dotted.split("."):
        if part.isdigit():
            obj = obj.layers[int(part)] if jax_side else obj[int(part)]
        else:
            obj = getattr(obj, part)
    return obj


@pytest.mark.parametrize("name", CONV_PRESETS)
def test_flatten_order(name, rng):
    """torch flattens (C, H, W), NHWC flattens (H, W, C): the converted Linear layers agree."""
    assert set(FLATTEN_LAYERS) == set(CONV_PRESETS)
    tm, jm = _pair(name, seed=1)
    c, h, w = presets.feature_shape(tm.spec)
    enc, dec = FLATTEN_LAYERS[name]
    fmap = rng.standard_normal((2, c, h, w)).astype(np.float32)               # NCHW feature map
    with torch.no_grad():
        want = _get(tm, enc, False)(torch.flatten(to_torch(fmap), 1)).numpy()
    got = _get(jm, enc, True)(_jx(fmap).reshape(2, -1))             # NHWC flatten
    assert_close(got, want, name=f"{name}:{enc}(flatten)", **FWD)
    lin = _get(tm, dec, False)
    v = rng.standard_normal((2, lin.in_features)).astype(np.float32)
    with torch.no_grad():
        want = lin(to_torch(v)).reshape(2, c, h, w).numpy()                          # unflatten (C, H, W)
    got = np.asarray(_get(jm, dec, True)(v)).reshape(2, h, w, c)              # NHWC reshape
    assert_close(to_nchw(got), want, name=f"{name}:{dec}(unflatten)", **FWD)


@pytest.mark.parametrize("name", BN_PRESETS)
def test_batchnorm_layer(name, rng):
    """Train mode over several steps (batch statistics, running mean and torch's unbiased running
    variance, num_batches_tracked), then eval mode, for each BatchNorm width of the preset."""
    tm, _ = _pair(name, seed=2)
    widths = sorted({m.num_features for m in tm.modules() if isinstance(m, torch.nn.BatchNorm2d)})
    for c in widths:
        tl = torch.nn.BatchNorm2d(c)
        perturb_batchnorm_(tl, torch.Generator().manual_seed(c))
        jl = _jax_twin(lambda: jmodels.BatchNorm(c), tl)
        for step in range(3):
            x = (rng.standard_normal((B, c, 5, 5)) * (1 + step) + step).astype(np.float32)
            with torch.no_grad():
                want = tl(to_torch(x)).numpy()
            assert_close(to_nchw(jl(_jx(x))), want,
                         name=f"{name}:bn{c}:train{step}", **FWD)
            for k_t, k_j in (("running_mean", "mean"), ("running_var", "var")):
                assert_close(getattr(jl.layer, k_j)[...], getattr(tl, k_t).numpy(),
                             name=f"{name}:bn{c}:{k_t}{step}", **FWD)
            assert int(jl.layer.num_batches_tracked[...]) == int(tl.num_batches_tracked)
        tl.eval()
        jl.layer.use_running_average = True  # what model.eval() sets
        x = rng.standard_normal((B, c, 5, 5)).astype(np.float32)
        with torch.no_grad():
            want = tl(to_torch(x)).numpy()
        assert_close(to_nchw(jl(_jx(x))), want, name=f"{name}:bn{c}:eval", **FWD)


# ---- whole models ----------------------------------------------------------------------------------

EXPECTED_PARAMS = {**{p: presets.PRESETS[p].params for p in PRESETS},
                   # 64 px glasses: the 256 px count (63,332,411) with linear1 and decoder_lin.2
                   # at 7*7*32 = 1568 features: -(30752-1568)*1024 - (30752-1568)*1025
                   "manning_glasses_vae": 63_332_411 - (30752 - 1568) * (1024 + 1025)}


@pytest.mark.parametrize("name", PRESETS)
def test_param_count(name):
    tm, jm = _pair(name)
    assert tmodels.num_params(tm) == jmodels.num_params(jm) == EXPECTED_PARAMS[name]


@pytest.mark.parametrize("name", PRESETS)
def test_canonical_round_trips(name):
    """torch -> canonical -> JAX -> canonical and JAX -> canonical -> torch (strict) are exact."""
    tm, jm = _pair(name, seed=3)
    w_t = tconvert.to_canonical(tm)
    w_j = jconvert.to_canonical(jm)
    assert set(w_j) == set(w_t)
    for k in w_t:
        assert w_j[k].dtype == w_t[k].dtype, k
        assert_close(w_j[k], w_t[k], name=f"{name}:{k}", **EXACT)
    fresh = tmodels.build_model(name, generator=torch.Generator().manual_seed(99), **_overrides(name))
    fresh.load_state_dict({k: torch.from_numpy(v) for k, v in w_j.items()}, strict=True)
    for k, v in fresh.state_dict().items():
        assert_close(v.numpy(), w_t[k], name=f"{name}:{k}:back", **EXACT)


def _eval_pair(name, seed):
    tm, jm = _pair(name, seed=seed)
    tm.eval()
    jm.eval()
    return tm, jm


@pytest.mark.parametrize("name", PRESETS)
def test_encode(name, rng):
    tm, jm = _eval_pair(name, 4)
    x, _ = draw_inputs(tm.spec, B, rng)[:2]
    with torch.no_grad():
        mean_t, logvar_t = tm.encode(to_torch(x))
    mean_j, logvar_j = jm.encode(_jx(x))
    assert_close(mean_j, mean_t, name=f"{name}:mean", **FWD)
    if tm.spec.is_vae:
        assert_close(logvar_j, logvar_t, name=f"{name}:logvar", **FWD)
    else:
        assert logvar_t is None and logvar_j is None
    if name == "manning_glasses_vae":
        with torch.no_grad():
            std_t = tm.encode_std(to_torch(x))[1]
        assert_close(jm.encode_std(_jx(x))[1], std_t, name=f"{name}:std", **FWD)


@pytest.mark.parametrize("name", PRESETS)
def test_reparameterize(name, rng):
    """Same (mean, logvar, eps) arrays into both: the formula, not the encoder, is compared."""
    tm, jm = _pair(name, seed=5)
    d = tm.spec.latent_dim
    mean, logvar, eps = (rng.standard_normal((B, d)).astype(np.float32) for _ in range(3))
    with torch.no_grad():
        want = tm.reparameterize(to_torch(mean), to_torch(logvar), to_torch(eps)).numpy()
    assert_close(jm.reparameterize(mean, logvar, eps), want, name=f"{name}:z", **FWD)


def test_reparameterize_logvar_as_scale(rng):
    tm, jm = _pair("leaky_vae", reparam="logvar_as_scale")
    mean, logvar, eps = (rng.standard_normal((B, 2)).astype(np.float32) for _ in range(3))
    with torch.no_grad():
        want = tm.reparameterize(to_torch(mean), to_torch(logvar), to_torch(eps)).numpy()
    assert_close(want, mean + logvar * eps, name="quirk:torch", **FWD)
    assert_close(jm.reparameterize(mean, logvar, eps), want, name="quirk:z", **FWD)


@pytest.mark.parametrize("name", PRESETS)
def test_decode(name, rng):
    tm, jm = _eval_pair(name, 6)
    z = rng.standard_normal((B, tm.spec.latent_dim)).astype(np.float32)
    with torch.no_grad():
        zt = to_torch(z)
        lt, dt, gt = tm.decode_logits(zt).numpy(), tm.decode(zt).numpy(), tm.generate(zt).numpy()
    assert_close(to_nchw(jm.decode_logits(z)), lt, name=f"{name}:decode_logits", **FWD)
    assert_close(to_nchw(jm.decode(z)), dt, name=f"{name}:decode", **FWD)
    assert_close(to_nchw(jm.generate(z)), gt, name=f"{name}:generate", **FWD)


def _forward_cases():
    cases = [(p, "eval") for p in PRESETS]
    return cases + [(p, "train") for p in BN_PRESETS]  # train == eval for models without BN


@pytest.mark.parametrize("name,mode", _forward_cases(), ids=[f"{p}-{m}" for p, m in _forward_cases()])
def test_forward(name, mode, rng):
    """The full forward with one eps; in train mode also the running statistics after the step."""
    tm, jm = _pair(name, seed=7)
    getattr(tm, mode)()
    getattr(jm, mode)()
    x, eps = draw_inputs(tm.spec, B, rng)[:2]
    with torch.no_grad():
        ot = tm(to_torch(x), eps=to_torch(eps))
    oj = jm(_jx(x), eps=eps)
    for field in ("mean", "logvar", "z", "logits"):
        a, b = getattr(oj, field), getattr(ot, field)
        if b is None:
            assert a is None, field
            continue
        tol = FWD_BN_TRAIN if mode == "train" else FWD_DEEP.get(name, FWD)
        assert_close(to_nchw(a), b.numpy(), name=f"{name}:{mode}:{field}", **tol)
    if mode == "train":
        w_t, w_j = tconvert.to_canonical(tm), jconvert.to_canonical(jm)
        for k in w_t:
            if "running" in k or "num_batches" in k:
                assert_close(w_j[k], w_t[k], name=f"{name}:{k}", **FWD)
