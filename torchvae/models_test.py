"""Tests of torchvae.models (torch only; the golden values are hand arithmetic and float64 NumPy).
Twin: jaxvae/models_test.py."""

from __future__ import annotations

import math
import subprocess
import sys

import numpy as np
import pytest
import torch

from torchvae import models
from vaecommon import presets

PRESETS = models.list_models()
SMALL = {"manning_glasses_vae": {"image_size": 64}}  # the 256 px model is tested once, below


# Parameter counts by hand arithmetic, independent of the model code (see also vaecommon.presets).
def _lin(i, o):
    return i * o + o


def _conv(ci, co, k, bias=True):
    return co * ci * k * k + (co if bias else 0)


def _convt(ci, co, k):
    return ci * co * k * k + co


def _bn(c):
    return 2 * c  # weight + bias; running stats are buffers


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


def _gen(seed):
    return torch.Generator().manual_seed(seed)


@pytest.fixture(scope="module")
def built():
    """One model per preset (small glasses), built lazily and shared by read-only tests."""
    cache = {}

    def get(name):
        if name not in cache:
            cache[name] = models.build_model(name, generator=_gen(0), **SMALL.get(name, {}))
        return cache[name]

    return get


def _inputs(spec, batch, seed=0):
    c, h, w = spec.input_shape
    rng = np.random.default_rng(seed)
    x = rng.random((batch, c, h, w), dtype=np.float32)
    eps = rng.standard_normal((batch, spec.latent_dim)).astype(np.float32)
    return torch.from_numpy(x), torch.from_numpy(eps)


def _abstract(name, **overrides):
    """The model with shapes only (meta device: no memory, no init), for counts and shapes."""
    spec = presets.get_spec(name, **overrides)
    with torch.device("meta"):
        return models.FAMILIES[spec.family](spec)


def test_expected_params_match_preset_table():
    assert set(EXPECTED_PARAMS) == set(PRESETS)
    for name in PRESETS:
        assert presets.PRESETS[name].params == EXPECTED_PARAMS[name], name


@pytest.mark.parametrize("name", PRESETS)
def test_param_count(name):
    assert models.num_params(_abstract(name)) == EXPECTED_PARAMS[name]


def test_glasses_256_param_count_and_one_forward():
    """The book's 256 px model: 63,332,411 parameters and one real forward of the right shape."""
    m = models.build_model("manning_glasses_vae", generator=_gen(0))
    assert models.num_params(m) == EXPECTED_PARAMS["manning_glasses_vae"] == 63_332_411
    x, eps = _inputs(m.spec, 1)
    with torch.no_grad():
        out = m.eval()(x, eps=eps)
    assert out.logits.shape == (1, 3, 256, 256) and out.mean.shape == out.logvar.shape == (1, 100)
    assert bool(torch.isfinite(out.logits).all())


@pytest.mark.parametrize("name", PRESETS)
def test_forward_contract(name, built):
    """Shapes, dtypes, AE/VAE fields, reparameterisation, decode/generate/sample ranges."""
    m = built(name)
    m.eval()  # BatchNorm models: running statistics, so repeated calls are comparable
    try:
        with torch.no_grad():
            _check_contract(m)
    finally:
        m.train()


def _check_contract(m):
    spec = m.spec
    c, h, w = spec.input_shape
    x, eps = _inputs(spec, 3)
    out = m(x, eps=eps)
    assert isinstance(out, models.ModelOutput) and out._fields == ("logits", "mean", "logvar", "z")
    conv = spec.family in ("manning_glasses_vae", "conv_vae", "resnet_vae", "burgess_vae")
    assert tuple(out.logits.shape) == ((3, c, h, w) if conv else (3, c * h * w))
    assert tuple(out.mean.shape) == (3, spec.latent_dim)
    for a in (out.logits, out.mean, out.z):
        assert a.dtype == torch.float32 and bool(torch.isfinite(a).all())
    mean, logvar, z = (a.double().numpy() if a is not None else None
                       for a in (out.mean, out.logvar, out.z))
    if spec.is_vae:
        assert tuple(out.logvar.shape) == (3, spec.latent_dim)
        np.testing.assert_allclose(z, mean + np.exp(0.5 * logvar) * eps.numpy(), rtol=1e-6, atol=1e-6)
    else:
        assert out.logvar is None
        assert torch.equal(out.z, out.mean)
    # decode_logits(z) is the forward's logits; decode is the source's output; generate in [0, 1]
    logits = m.decode_logits(out.z)
    torch.testing.assert_close(logits, out.logits, rtol=0, atol=0)
    sig = 1 / (1 + np.exp(-logits.double().numpy()))
    np.testing.assert_allclose(m.decode(out.z).numpy(), sig if spec.output == "probs" else logits.numpy(),
                               rtol=1e-6, atol=1e-7)
    gen = m.generate(out.z)
    np.testing.assert_allclose(gen.numpy(), sig, rtol=1e-6, atol=1e-7)
    assert bool(((gen >= 0) & (gen <= 1)).all())
    s = m.sample(2, generator=_gen(1))
    assert tuple(s.shape) == (2, c, h, w) and s.dtype == torch.float32
    assert bool(((s >= 0) & (s <= 1)).all())
    torch.testing.assert_close(s, m.sample(2, generator=_gen(1)), rtol=0, atol=0)
    # MLPs also take flat inputs, conv models flat rows too (reshaped to the spec's image)
    torch.testing.assert_close(m(x.reshape(3, -1), eps=eps).logits, out.logits, rtol=1e-6, atol=1e-6)


def test_reparameterize_hand_values(built):
    m = built("simple_vae")
    mean = torch.tensor([[1.0, 2.0]])
    logvar = torch.tensor([[0.0, 2 * math.log(2.0)]])   # std 1 and 2
    eps = torch.tensor([[0.5, -1.0]])
    np.testing.assert_allclose(m.reparameterize(mean, logvar, eps).numpy(), [[1.5, 0.0]], atol=1e-6)


def test_logvar_as_scale_quirk():
    """leaky_vae's notebook passes logvar where a scale is expected: z = mean + logvar * eps."""
    m = models.build_model("leaky_vae", generator=_gen(0), reparam="logvar_as_scale")
    mean, logvar, eps = torch.tensor([[1.0, 2.0]]), torch.tensor([[0.0, -3.0]]), torch.tensor([[0.5, 2.0]])
    np.testing.assert_allclose(m.reparameterize(mean, logvar, eps).numpy(), [[1.0, -4.0]], atol=1e-6)
    x, eps = _inputs(m.spec, 2)
    with torch.no_grad():
        out = m(x, eps=eps)
    torch.testing.assert_close(out.z, out.mean + out.logvar * eps, rtol=1e-6, atol=1e-6)
    assert _abstract("leaky_vae").spec.reparam == "logvar"  # default: the correct form


def test_glasses_encode_std(built):
    """encode_std is the book's (mu, std = exp(linear3)); encode's logvar = 2 log std."""
    m = built("manning_glasses_vae").eval()
    try:
        x, _ = _inputs(m.spec, 2)
        with torch.no_grad():
            mean, std = m.encode_std(x)
            mean2, logvar = m.encode(x)
            e = m.encoder
            h = torch.relu(e.conv3(torch.relu(e.batch2(e.conv2(torch.relu(e.conv1(x)))))))
            h = torch.relu(e.linear1(torch.flatten(h, 1)))
            want_std = torch.exp(e.linear3(h))
        assert torch.equal(mean, mean2) and bool((std > 0).all())
        np.testing.assert_allclose(logvar.numpy(), 2 * np.log(std.double().numpy()), rtol=1e-5, atol=1e-6)
        torch.testing.assert_close(std, want_std, rtol=1e-6, atol=0)
    finally:
        m.train()


def test_forward_needs_eps_or_generator(built):
    m = built("pytorch_examples")
    x, _ = _inputs(m.spec, 2)
    with pytest.raises(ValueError, match="eps"):
        m(x)
    with torch.no_grad():
        a = m(x, generator=_gen(3))
        b = m(x, eps=torch.randn((2, m.spec.latent_dim), generator=_gen(3)))
        built("simple_ae")(x)  # an AE needs no noise
    assert torch.equal(a.z, b.z)


def test_manning_ae_decode_method_and_layer():
    """The source's Linear named `decode` is in the state_dict; `model.decode` is the method."""
    m = models.build_model("manning_ae", generator=_gen(0))
    assert "decode.weight" in m.state_dict() and callable(m.decode)
    assert isinstance(m._modules["decode"], torch.nn.Linear)
    z = torch.zeros(2, 20)
    with torch.no_grad():
        want = torch.sigmoid(m._modules["decode"](torch.relu(m.l1(z))))
        torch.testing.assert_close(m.decode(z), want, rtol=0, atol=0)


def test_build_model_errors():
    with pytest.raises(KeyError, match="valid presets"):
        models.build_model("nope")
    with pytest.raises(ValueError, match="init"):
        models.build_model("conv_vae", init="xavier")
    with pytest.raises(TypeError, match="valid overrides"):
        models.build_model("conv_vae", latent=3)
    with pytest.raises(ValueError, match="hidden"):
        models.build_model("simple_vae", hidden=(10,))
    with pytest.raises(ValueError, match="multiple of 8"):
        models.build_model("manning_glasses_vae", image_size=60)
    with pytest.raises(ValueError, match="multiples of 16, got 72x72"):
        models.build_model("burgess_vae", image_size=72)


def test_overrides_change_shapes():
    m = models.build_model("conv_vae", generator=_gen(0), latent_dim=3, hidden=(4, 8))
    assert m.spec.params == 0 and m.spec.latent_dim == 3
    with torch.no_grad():
        out = m(torch.zeros(2, 1, 28, 28), eps=torch.zeros(2, 3))
    assert tuple(out.logits.shape) == (2, 1, 28, 28) and tuple(out.mean.shape) == (2, 3)
    assert tuple(m.encoder[0].weight.shape) == (4, 1, 4, 4)
    m = _abstract("leaky_vae_256", hidden=(16, 5))
    assert tuple(m.mean_layer.weight.shape) == (2, 5) and tuple(m.encoder[0].weight.shape) == (16, 784)


# ---- init --------------------------------------------------------------------------------------

# (layer, fan_in by torch's rule): conv fan_in = in*k*k; ConvTranspose's = out*k*k (torch quirk)
CONV_VAE_FAN_IN = {
    "encoder.0": 1 * 4 * 4, "encoder.2": 32 * 4 * 4, "fc_mean": 3136, "fc_logvar": 3136,
    "decoder_fc": 16, "decoder.0": 32 * 4 * 4, "decoder.2": 1 * 4 * 4,
}


@pytest.mark.parametrize("init", models.INITS)
def test_init_bounds_and_spread(init):
    """Every weight and bias ~ U(-1/sqrt(fan_in), 1/sqrt(fan_in)) with torch's fan_in."""
    m = models.build_model("conv_vae", generator=_gen(0), init=init)
    mods = dict(m.named_modules())
    for name, fan_in in CONV_VAE_FAN_IN.items():
        b = 1 / math.sqrt(fan_in)
        for what in ("weight", "bias"):
            a = getattr(mods[name], what).detach().double().numpy()
            assert np.abs(a).max() <= b * (1 + 1e-6), (name, what)
            if a.size >= 500:
                assert np.abs(a).max() >= 0.95 * b, (name, what)
                assert abs(a.std() / (b / math.sqrt(3)) - 1) < 0.1, (name, what)
    # ConvTranspose(32 -> 1, k4): bound 1/sqrt(1*16) = 0.25, not 1/sqrt(32*16) (the in_channels rule)
    assert m.decoder[2].weight.abs().max() > 0.2


@pytest.mark.parametrize("name", [p for p in PRESETS if p != "exemplar_vae"])
def test_init_equals_torch_default_construction(name):
    """build_model(generator seeded s) == torch.manual_seed(s) + the plain constructor (torch's own
    reset_parameters on the global generator), bit for bit, without touching the global RNG.
    (exemplar_vae re-draws its weights with the reference's he_init:
    parity_tests/test_priors.py::test_exemplar_vae_uses_the_reference_init.)"""
    kw = SMALL.get(name, {})
    state = torch.random.get_rng_state()
    ours = models.build_model(name, generator=_gen(5), **kw)
    assert torch.equal(state, torch.random.get_rng_state())  # global RNG untouched
    with torch.random.fork_rng():
        torch.manual_seed(5)
        ref = models.FAMILIES[ours.spec.family](ours.spec)
    a, b = ours.state_dict(), ref.state_dict()
    assert list(a) == list(b)
    for k in a:
        assert torch.equal(a[k], b[k]), k


def test_batchnorm_init():
    bn = models.build_model("resnet_vae", generator=_gen(0)).encoder[2].bn1
    assert bool((bn.weight == 1).all() and (bn.bias == 0).all())
    assert bool((bn.running_mean == 0).all() and (bn.running_var == 1).all())
    assert int(bn.num_batches_tracked) == 0


# ---- BatchNorm ---------------------------------------------------------------------------------

def _bn_oracle(x, scale, bias, rmean, rvar, momentum=0.1, eps=1e-5):
    """float64 (NCHW): normalise with the biased batch variance, track the unbiased one."""
    axes = (0, 2, 3)
    n = x.size // x.shape[1]
    mean, var = x.mean(axes), x.var(axes)
    b = (None, slice(None), None, None)
    y = (x - mean[b]) / np.sqrt(var[b] + eps) * scale[b] + bias[b]
    return y, (1 - momentum) * rmean + momentum * mean, (1 - momentum) * rvar + momentum * var * n / (n - 1)


def test_batchnorm_matches_float64_oracle_over_steps():
    rng = np.random.default_rng(0)
    bn = models.BatchNorm(5)
    with torch.no_grad():
        bn.weight.copy_(torch.from_numpy(rng.normal(size=5).astype(np.float32)))
        bn.bias.copy_(torch.from_numpy(rng.normal(size=5).astype(np.float32)))
    scale, bias = bn.weight.detach().double().numpy(), bn.bias.detach().double().numpy()
    rmean, rvar = np.zeros(5), np.ones(5)
    for step in range(4):
        x = (rng.normal(size=(3, 5, 4, 4)) * 3 + step).astype(np.float32)
        with torch.no_grad():
            y = bn(torch.from_numpy(x))
        want, rmean, rvar = _bn_oracle(x.astype(np.float64), scale, bias, rmean, rvar)
        np.testing.assert_allclose(y.numpy(), want, rtol=1e-5, atol=1e-5)
        np.testing.assert_allclose(bn.running_mean.numpy(), rmean, rtol=1e-5, atol=1e-6)
        np.testing.assert_allclose(bn.running_var.numpy(), rvar, rtol=1e-5, atol=1e-6)
        assert int(bn.num_batches_tracked) == step + 1
    bn.eval()
    x = rng.normal(size=(2, 5, 3, 3)).astype(np.float32)
    b = (None, slice(None), None, None)
    want = (x - rmean[b]) / np.sqrt(rvar[b] + 1e-5) * scale[b] + bias[b]
    with torch.no_grad():
        np.testing.assert_allclose(bn(torch.from_numpy(x)).numpy(), want, rtol=1e-5, atol=1e-5)
    assert int(bn.num_batches_tracked) == 4


def test_train_eval_modes():
    """train(): batch statistics, running stats move; eval(): running stats, nothing moves."""
    m = models.build_model("resnet_vae", generator=_gen(0))
    x, eps = _inputs(m.spec, 2)
    before = {k: v.clone() for k, v in m.state_dict().items() if "running" in k or "num_batches" in k}
    with torch.no_grad():
        out_train = m(x, eps=eps)
    after = m.state_dict()
    assert len(before) == 8 * 3 and all(not torch.equal(before[k], after[k]) for k in before)
    m.eval()
    frozen = {k: v.clone() for k, v in m.state_dict().items()}
    with torch.no_grad():
        a, b = m(x, eps=eps), m(x, eps=eps)
    assert torch.equal(a.logits, b.logits)
    assert all(torch.equal(frozen[k], v) for k, v in m.state_dict().items())
    assert not torch.allclose(a.logits, out_train.logits)


def test_torchvae_models_does_not_import_jax():
    code = ("import sys, torchvae.models, torchvae.convert; "
            "assert 'jax' not in sys.modules and 'jaxvae' not in sys.modules and 'flax' not in sys.modules")
    subprocess.run([sys.executable, "-c", code], check=True)
