"""The VampPrior, the single-sample KL, the epoch-wise KL warm-up, AdamNormGrad and the
exemplar_vae preset (Exemplar VAE / VampPrior code), in both frameworks against the float64 oracle
and hand-derived values."""

from __future__ import annotations

import math

import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest
import torch

from jaxvae import convert as jconvert
from jaxvae import losses as jl
from jaxvae import models as jmodels
from jaxvae import optim as joptim
from parity_tests import oracle
from parity_tests.asserts import TOL, assert_close
from torchvae import losses as tl
from torchvae import models as tmodels
from torchvae import optim as toptim

LIB = {"jax": jl, "torch": tl}
FWS = pytest.mark.parametrize("fw", ["jax", "torch"])
RNG = np.random.default_rng(7)


def _t(a, fw):
    return jnp.asarray(a, jnp.float32) if fw == "jax" else torch.as_tensor(np.asarray(a, np.float32))


def _np(a):
    return a.detach().numpy() if isinstance(a, torch.Tensor) else np.asarray(a)


@FWS
def test_log_standard_normal_at_zero_is_minus_half_d_log_2pi(fw):
    got = _np(LIB[fw].log_standard_normal(_t(np.zeros((3, 40)), fw)))
    np.testing.assert_allclose(got, -20 * math.log(2 * math.pi), rtol=1e-6)


@FWS
def test_a_one_component_mixture_at_the_origin_is_the_standard_normal(fw):
    z = RNG.normal(size=(4, 6, 5))
    got = _np(LIB[fw].log_mixture(_t(z, fw), _t(np.zeros((1, 5)), fw), _t(np.zeros((1, 5)), fw)))
    assert_close(got, oracle.log_standard_normal(z), name="K=1 mixture", **TOL["per_example_loss"])


@FWS
@pytest.mark.parametrize("shape", [(8, 5), (3, 8, 5)], ids=["B,D", "S,B,D"])
def test_log_mixture_matches_the_direct_float64_form(fw, shape):
    z = RNG.normal(size=shape) * 1.5
    means, logvars = RNG.normal(size=(50, 5)), RNG.uniform(-3, 1, size=(50, 5))
    got = _np(LIB[fw].log_mixture(_t(z, fw), _t(means, fw), _t(logvars, fw)))
    # the library expands the squares into matmuls: float32 cancellation, a looser row
    assert_close(got, oracle.log_mixture(z, means, logvars), name="log_mixture",
                 rtol=2e-5, atol=2e-4)


@FWS
def test_mixture_of_identical_components_equals_one_component(fw):
    z = RNG.normal(size=(6, 4))
    m, lv = RNG.normal(size=(1, 4)), RNG.uniform(-1, 1, size=(1, 4))
    one = _np(LIB[fw].log_mixture(_t(z, fw), _t(m, fw), _t(lv, fw)))
    many = _np(LIB[fw].log_mixture(_t(z, fw), _t(np.repeat(m, 7, 0), fw), _t(np.repeat(lv, 7, 0), fw)))
    np.testing.assert_allclose(many, one, rtol=1e-5, atol=1e-5)


@FWS
def test_single_sample_kl_matches_the_oracle_and_averages_to_the_analytic_kl(fw):
    mean, logvar = RNG.normal(size=(3, 4)), RNG.uniform(-2, 1, size=(3, 4))
    eps = RNG.normal(size=(20000, 3, 4))
    z = mean + np.exp(0.5 * logvar) * eps
    got = _np(LIB[fw].kl_single_sample(_t(z[0], fw), _t(mean, fw), _t(logvar, fw)))
    assert_close(got, oracle.kl_single_sample(z[0], mean, logvar), name="kl_single_sample",
                 **TOL["per_example_loss"])
    # unbiased: the mean of 20000 single-sample estimates is within 5 standard errors of the
    # closed form
    many = _np(LIB[fw].kl_single_sample(_t(z, fw), _t(mean, fw), _t(logvar, fw)))
    se = many.std(axis=0) / math.sqrt(len(many))
    assert np.all(np.abs(many.mean(axis=0) - oracle.kl_normal(mean, logvar)) < 5 * se + 1e-6)


@FWS
def test_elbo_terms_with_a_prior_use_the_single_sample_kl(fw):
    from types import SimpleNamespace

    x = (RNG.uniform(size=(5, 12)) > 0.5).astype(np.float32)
    logits, mean, logvar = RNG.normal(size=(5, 12)), RNG.normal(size=(5, 3)), RNG.uniform(-1, 1, (5, 3))
    z = mean + np.exp(0.5 * logvar) * RNG.normal(size=(5, 3))
    comps = (RNG.normal(size=(9, 3)), RNG.uniform(-1, 1, (9, 3)))
    out = SimpleNamespace(logits=_t(logits, fw), mean=_t(mean, fw), logvar=_t(logvar, fw), z=_t(z, fw))
    lib = LIB[fw]
    prior = lambda v: lib.log_mixture(v, _t(comps[0], fw), _t(comps[1], fw))  # noqa: E731
    t = lib.elbo_terms(_t(x, fw), out, "bernoulli", log_prior=prior)
    want_kl = oracle.kl_single_sample(z, mean, logvar, lambda v: oracle.log_mixture(v, *comps))
    assert_close(_np(t["kl"]), want_kl, name="kl vampprior", rtol=2e-5, atol=2e-4)
    assert_close(_np(t["recon"]), oracle.bernoulli(x, logits), name="recon", **TOL["per_example_loss"])
    std = lib.elbo_terms(_t(x, fw), out, "bernoulli", kl_estimate="single_sample")
    assert_close(_np(std["kl"]), oracle.kl_single_sample(z, mean, logvar), name="kl single",
                 **TOL["per_example_loss"])
    with pytest.raises(ValueError, match="kl_estimate must be one of"):
        lib.elbo_terms(_t(x, fw), out, "bernoulli", kl_estimate="exact")


def _vampprior_weights_case(fw, k):
    """Binary x (4, 6), a posterior over 2 latents, k samples of eps, a linear decoder and a
    5-component VampPrior mixture. Returns (x, mean, logvar, eps as the twin's arrays; decode;
    log_prior; the oracle's log weights (k, 4))."""
    x = (RNG.uniform(size=(4, 6)) > 0.5).astype(np.float32)
    mean, logvar, eps = RNG.normal(size=(4, 2)), RNG.uniform(-1, 0, (4, 2)), RNG.normal(size=(k, 4, 2))
    w = RNG.normal(size=(2, 6))
    comps = (RNG.normal(size=(5, 2)), RNG.uniform(-1, 1, (5, 2)))
    lib = LIB[fw]
    decode = (lambda z: z @ jnp.asarray(w, jnp.float32)) if fw == "jax" else \
        (lambda z: z @ torch.as_tensor(w, dtype=torch.float32))
    log_prior = lambda v: lib.log_mixture(v, _t(comps[0], fw), _t(comps[1], fw))  # noqa: E731
    want = oracle.log_importance_weights_prior(x, mean, logvar, eps, lambda z: z @ w,
                                               lambda v: oracle.log_mixture(v, *comps))
    return [_t(a, fw) for a in (x, mean, logvar, eps)], decode, log_prior, want


@FWS
def test_importance_weights_use_the_prior(fw):
    args, decode, log_prior, want = _vampprior_weights_case(fw, 3)
    got = LIB[fw].log_importance_weights(*args, decode, "bernoulli", log_prior=log_prior)
    assert_close(_np(got), want, name="log w (vampprior)", rtol=2e-5, atol=2e-4)


@FWS
def test_chunked_nll_uses_the_prior(fw):
    """The chunked NLL (2 + 2 + 1 of k = 5 samples) with the VampPrior's log-density."""
    args, decode, log_prior, lw = _vampprior_weights_case(fw, 5)
    got = LIB[fw].importance_sampled_nll(*args, decode, "bernoulli", chunk=2, log_prior=log_prior)
    want = -(oracle.logsumexp(lw, axis=0) - np.log(5))
    assert_close(_np(got), want, name="nll (vampprior, chunk 2)", rtol=2e-5, atol=2e-4)


@FWS
@pytest.mark.parametrize("step, want", [(0, 0.01), (499, 0.01), (500, 0.02), (49_499, 0.99),
                                        (49_500, 1.0), (10**6, 1.0)])
def test_epoch_wise_warmup_is_the_reference_set_beta(fw, step, want):
    """set_beta(epoch) = min(1, epoch / 100) for 1-based epochs of 500 steps."""
    got = float(LIB[fw].warmup_beta(step, 100 * 500, 500))
    assert got == pytest.approx(want, rel=1e-6) == pytest.approx(oracle.warmup_beta(step, 50_000, 500))


# ---- AdamNormGrad ------------------------------------------------------------------------------

def _quadratic_grads(targets):
    """Gradients of sum_i ||p_i - t_i||^2 (a fixed, hand-checkable problem)."""
    return lambda ps: [2 * (p - t) for p, t in zip(ps, targets)]


@pytest.mark.parametrize("wd", [0.0, 0.01], ids=["plain", "weight_decay"])
def test_adam_norm_grad_follows_the_oracle_in_both_frameworks(wd):
    p0 = [RNG.normal(size=(4, 3)), RNG.normal(size=(3,))]
    targets = [RNG.normal(size=(4, 3)), RNG.normal(size=(3,))]
    steps = 25
    want = oracle.adam_norm_grad(p0, [_quadratic_grads(targets)] * steps, lr=0.05, weight_decay=wd)

    tx = optax.chain(joptim.scale_by_adam_norm_grad(weight_decay=wd), optax.scale(-0.05))
    jp = [jnp.asarray(p, jnp.float32) for p in p0]
    st = tx.init(jp)
    for _ in range(steps):
        g = [2 * (p - jnp.asarray(t, jnp.float32)) for p, t in zip(jp, targets)]
        upd, st = tx.update(g, st, jp)
        jp = optax.apply_updates(jp, upd)

    tp = [torch.nn.Parameter(torch.as_tensor(p, dtype=torch.float32)) for p in p0]
    opt = toptim.AdamNormGrad(tp, lr=0.05, weight_decay=wd)
    for _ in range(steps):
        opt.zero_grad()
        sum(((p - torch.as_tensor(t, dtype=torch.float32)) ** 2).sum() for p, t in zip(tp, targets)).backward()
        opt.step()
    for a, b, w in zip(jp, tp, want):
        assert_close(np.asarray(a), w, name="jax adam_norm_grad", **TOL["adam_steps"])
        assert_close(b.detach().numpy(), w, name="torch adam_norm_grad", **TOL["adam_steps"])


def test_adam_norm_grad_first_step_is_lr_times_the_normalised_sign():
    """Step 1 by hand: m = 0.1 g', v = 0.001 g'^2, update = sqrt(0.001)/0.1 * 0.1 g' / (sqrt(0.001)|g'| + eps)
    = g'/|g'| (up to eps), so each coordinate moves by lr * sign(g)."""
    p = torch.nn.Parameter(torch.tensor([1.0, -2.0, 3.0]))
    opt = toptim.AdamNormGrad([p], lr=0.1)
    p.grad = torch.tensor([3.0, -4.0, 0.0])
    opt.step()
    np.testing.assert_allclose(p.detach().numpy(), [0.9, -1.9, 3.0], atol=1e-6)
    tx = joptim.scale_by_adam_norm_grad()
    upd, _ = tx.update([jnp.array([3.0, -4.0, 0.0])], tx.init([jnp.zeros(3)]), None)
    np.testing.assert_allclose(np.asarray(upd[0]), [1.0, -1.0, 0.0], atol=1e-5)


# ---- the preset ------------------------------------------------------------------------------------

REFERENCE_NAMES = {"q_z_layers.0.h.weight", "q_z_layers.0.g.weight", "q_z_layers.1.h.bias",
                   "q_z_mean.weight", "q_z_logvar.linear.weight", "p_x_layers.0.h.weight",
                   "p_x_layers.1.g.bias", "p_x_mean.linear.weight", "p_x_mean.linear.bias"}


@pytest.mark.parametrize("prior, count", [("standard", 1_116_864), ("vampprior", 1_508_864)])
def test_exemplar_vae_pairs_convert_exactly_and_agree(prior, count):
    tm = tmodels.build_model("exemplar_vae", generator=torch.Generator().manual_seed(0), prior=prior)
    assert tmodels.num_params(tm) == count
    sd = {k: v.numpy() for k, v in tm.state_dict().items()}
    assert REFERENCE_NAMES <= set(sd), "the reference's parameter names (its state_dict loads)"
    jm = jconvert.from_canonical("exemplar_vae", sd, prior=prior)
    assert jmodels.num_params(jm) == count
    back = jconvert.to_canonical(jm)
    assert set(back) == set(sd) and all(np.array_equal(back[k], sd[k]) for k in sd)
    x = RNG.uniform(size=(6, 1, 28, 28)).astype(np.float32)
    eps = RNG.normal(size=(6, 40)).astype(np.float32)
    with torch.no_grad():
        to = tm(torch.from_numpy(x), eps=torch.from_numpy(eps))
        tlp = tm.log_prior(to.z).numpy()
    jo = jm(jnp.asarray(x.transpose(0, 2, 3, 1)), eps=jnp.asarray(eps))
    # four gated matmul layers to the logits: float32 accumulation reaches ~3e-6 absolute near
    # logit 0 (relative 3e-7 of the logits' scale), so the forward row's atol is 1e-5 here
    assert_close(np.asarray(jo.logits), to.logits.numpy(), name="logits", rtol=1e-5, atol=1e-5)
    assert_close(np.asarray(jo.logvar), to.logvar.numpy(), name="logvar", **TOL["forward"])
    assert float(to.logvar.min()) >= -6.0 and float(to.logvar.max()) <= 2.0  # Hardtanh(-6, 2)
    assert_close(np.asarray(jm.log_prior(jo.z)), tlp, name="log_prior", rtol=1e-5, atol=1e-4)


@pytest.mark.parametrize("fw", ["jax", "torch"])
def test_exemplar_vae_uses_the_reference_init(fw):
    """he_init: Linear weights N(0, sqrt(2 / fan_in)); biases torch's U(+-1/sqrt(fan_in));
    pseudo-inputs he-initialised too (the reference's he_initializer runs after them)."""
    if fw == "torch":
        m = tmodels.build_model("exemplar_vae", generator=torch.Generator().manual_seed(1),
                                prior="vampprior")
        w = {k: v.numpy() for k, v in m.state_dict().items()}
    else:
        w = jconvert.to_canonical(jmodels.build_model("exemplar_vae", key=1, prior="vampprior"))
    big = w["q_z_layers.0.h.weight"]  # (300, 784): 235,200 draws
    assert big.std() == pytest.approx(math.sqrt(2 / 784), rel=0.02) and abs(big.mean()) < 1e-3
    b = w["q_z_layers.0.h.bias"]
    assert np.abs(b).max() <= 1 / math.sqrt(784) and b.std() == pytest.approx(1 / math.sqrt(3 * 784), rel=0.15)
    u = w["means.linear.weight"]  # (784, 500): fan_in K = 500
    assert u.std() == pytest.approx(math.sqrt(2 / 500), rel=0.02)
