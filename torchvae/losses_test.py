"""Unit tests of torchvae.losses (PyTorch only; twin: jaxvae/losses_test.py).

Single-framework behaviour: the registries' and objectives' contract (terms, dtypes,
reductions, batch-size invariance), finiteness at extreme inputs, input validation, and PyTorch
specifics (F.binary_cross_entropy's validation, learned log-sigma as an nn.Parameter trained
through the objective). The hand-derived goldens (ln 2 per pixel at logit 0, KL 1/2 per unit
mean, ...), checked on the float64 oracle and both frameworks, and cross-framework agreement
live in parity_tests/test_losses.py.
"""

from __future__ import annotations

import ast
import math
from pathlib import Path
from typing import Any, NamedTuple

import numpy as np
import pytest
import torch

from torchvae import losses

B, P, D = 4, 6, 3


class ModelOutput(NamedTuple):
    """Stand-in for models.ModelOutput (same fields)."""

    logits: Any
    mean: Any
    logvar: Any
    z: Any


# Parameters each objective needs here (default none): a new objective is picked up from the
# registry; add its parameters here if it has required ones.
PARAMS = {
    "kl_warmup": {"warmup_steps": 100},
    "cyclical": {"cycle_steps": 100},
    "capacity": {"c_max": 50.0, "c_steps": 100},
    "beta_tcvae": {"dataset_size": 1000},
}
# The terms each objective reports (identical table in jaxvae/losses_test.py).
EXPECTED_TERMS = {
    "reconstruction": set(),
    "elbo": set(),
    "beta_vae": {"beta"},
    "kl_warmup": {"beta"},
    "cyclical": {"beta"},
    "capacity": {"capacity"},
    "free_bits": {"kl_free_bits"},
    "beta_tcvae": {"mi", "tc", "dw_kl"},
    "dip_vae_i": {"dip_offdiag", "dip_diag"},
    "dip_vae_ii": {"dip_offdiag", "dip_diag"},
    "info_vae": {"mmd"},
    "iwae": {"iwae_bound", "elbo"},
}

LN2 = math.log(2.0)


def t(a) -> torch.Tensor:
    return torch.as_tensor(np.asarray(a, np.float32))


def make_batch(seed: int = 0, b: int = B):
    rng = np.random.default_rng(seed)
    f = lambda *s: t(rng.normal(size=s))  # noqa: E731
    x = t(rng.uniform(size=(b, 2, 3)))
    mean, logvar = f(b, D), 0.5 * f(b, D)
    out = ModelOutput(2.0 * f(b, P), mean, logvar, mean + torch.exp(0.5 * logvar) * f(b, D))
    w, bias = 0.7 * f(D, P), 0.3 * f(P)
    eps = {"iwae": f(5, b, D), "info_vae": f(6, D)}
    return x, out, (lambda z: z @ w + bias), eps


def call(name, x, out, decode, eps, **kw):
    return losses.OBJECTIVES[name](x, out, likelihood=kw.pop("likelihood", "bernoulli"), step=30,
                                   decode=decode, eps=eps.get(name), **{**PARAMS.get(name, {}), **kw})


def close(actual, desired, **kw):
    desired = desired.detach().numpy() if isinstance(desired, torch.Tensor) else desired
    np.testing.assert_allclose(torch.as_tensor(actual).detach().numpy(), desired, **kw)


# ---- reconstruction terms and their registry ---------------------------------------------------


def test_learned_log_sigma_is_trained_through_the_objective():
    x, out, dec, eps = make_batch()
    log_sigma = torch.nn.Parameter(torch.zeros(P))  # per-pixel, as a model would hold it
    loss, _ = losses.elbo(x, out, likelihood="gaussian_learned", log_sigma=log_sigma)
    loss.backward()
    # d/dlog_sigma_i of mean_b sum_i [sq e^{-2 ls} / 2 + ls] at ls = 0: 1 - mean_b sq_i
    sq = (x.reshape(B, P) - torch.sigmoid(out.logits)) ** 2
    close(log_sigma.grad, 1.0 - sq.mean(0), rtol=1e-5)


def test_registry_routes_probs_terms_through_sigmoid():
    x, logits = t([[1.0, 0.0, 0.3]]), t([[2.0, -1.0, 0.5]])
    for name, (fn, kind) in losses.RECONSTRUCTION.items():
        params = {"log_sigma": torch.zeros(())} if name == "gaussian_learned" else {}
        want = fn(x, torch.sigmoid(logits) if kind == "probs" else logits, **params)
        close(losses.reconstruction_nll(x.reshape(1, 3, 1), logits, name, **params), want)
    assert {k for k, (_, kind) in losses.RECONSTRUCTION.items() if kind == "logits"} == {
        "bernoulli", "continuous_bernoulli"}
    custom = (lambda xx, raw: raw.sum(dim=1), "logits")  # a custom (fn, kind) pair
    close(losses.reconstruction_nll(x, logits, custom), [1.5])


# ---- objectives: contract, reductions, invariances, extremes -----------------------------------


def twice(a):
    return torch.cat([a, a])


def extreme(out, name):
    """logits +-1e4 and logvar +-50 (DIP-II: +-40, it squares exp(logvar): exp(50)^2 > float32 max)."""
    lv = 40.0 if name == "dip_vae_ii" else 50.0
    return out._replace(logits=t([1e4, -1e4, 0.0]).repeat(B, 2), logvar=t([lv, -lv, 0.0]).repeat(B, 1))


@pytest.mark.parametrize("name", sorted(losses.OBJECTIVES))
def test_objective_terms_and_reductions(name):
    x, out, dec, eps = make_batch()
    loss, terms = call(name, x, out, dec, eps)
    assert set(terms) == {"loss", "recon", "kl"} | EXPECTED_TERMS[name]
    assert all(v.shape == () and v.dtype == torch.float32 for v in terms.values())
    assert loss is terms["loss"] and all(math.isfinite(float(v)) for v in terms.values())
    _, terms_sum = call(name, x, out, dec, eps, reduction="sum")
    for k in ("loss", "recon", "kl"):  # "sum" is exactly B times "mean"
        close(terms_sum[k], (B * terms[k]).item(), rtol=2e-6, atol=1e-6)


@pytest.mark.parametrize("name", sorted(losses.OBJECTIVES))
def test_objective_invariant_to_duplicating_the_batch(name):
    """Mean-reduced objectives do not change when every example appears twice. True for the
    batch-statistic variants as well: DIP's 1/B covariance, the MMD V-statistic, MWS's
    log(B N) normaliser, the batch-mean KL of capacity / free bits and the calibrated sigma."""
    x, out, dec, eps = make_batch()
    eps2 = {**eps, "iwae": torch.cat([eps["iwae"], eps["iwae"]], dim=1)}
    _, t1 = call(name, x, out, dec, eps)
    _, t2 = call(name, twice(x), ModelOutput(*map(twice, out)), dec, eps2)
    for k in t1:
        close(t2[k], t1[k].item(), rtol=2e-6, atol=2e-6, err_msg=k)


@pytest.mark.parametrize("name", sorted(losses.OBJECTIVES))
def test_objectives_finite_at_extremes(name):
    x, out, dec, eps = make_batch()
    ext = ModelOutput(*[a.clone().requires_grad_() for a in extreme(out, name)])
    loss, terms = call(name, x, ext, dec, eps)
    grads = torch.autograd.grad(loss, list(ext), allow_unused=True)
    assert all(math.isfinite(float(v.detach())) for v in terms.values()), terms
    assert all(g is None or torch.isfinite(g).all() for g in grads)


def test_mss_is_not_invariant_to_duplicating_the_batch():
    """MSS gives each row's own posterior weight 1/N and the others ~1/(B-1): a duplicate of
    x_i counts as a different example, so MSS (unlike MWS) changes; documented, not a bug."""
    x, out, dec, eps = make_batch()
    _, t1 = call("beta_tcvae", x, out, dec, eps, sampling="mss")
    _, t2 = call("beta_tcvae", twice(x), ModelOutput(*map(twice, out)), dec, eps, sampling="mss")
    assert abs(float(t2["mi"]) - float(t1["mi"])) > 1e-3


def test_iwae_with_one_sample_is_the_single_sample_elbo():
    x, out, dec, eps = make_batch()
    e = eps["iwae"][:1]
    loss, terms = losses.iwae(x, out, likelihood="bernoulli", decode=dec, eps=e)
    z = losses.reparameterize(out.mean, out.logvar, e[0])
    want = losses.bernoulli(x.reshape(B, P), dec(z)) + losses.kl_monte_carlo(z, out.mean, out.logvar)
    close(loss, want.mean().item(), rtol=1e-6)
    close(terms["elbo"], -loss.item(), rtol=1e-6)


def test_free_bits_gradient_vanishes_below_the_floor():
    x, out, dec, eps = make_batch()
    mean, logvar = out.mean.clone(), out.logvar.clone()
    mean[:, 0], logvar[:, 0] = 0.0, 0.0
    mean.requires_grad_(), logvar.requires_grad_()
    out = out._replace(mean=mean, logvar=logvar)
    loss, _ = losses.free_bits(x, out, likelihood="bernoulli", lam=0.1)
    gm, glv = torch.autograd.grad(loss, [mean, logvar])
    assert float(gm[:, 0].abs().max()) == 0.0 and float(glv[:, 0].abs().max()) == 0.0
    assert float(gm[:, 1:].abs().min()) > 0.0


def test_reconstruction_objective_for_autoencoders():
    x, out, dec, eps = make_batch()
    ae = ModelOutput(out.logits, out.mean, None, out.mean)
    loss, terms = losses.reconstruction(x, ae, likelihood="mse_mean")
    assert float(terms["kl"]) == 0.0
    # with reduction "mean", mse_mean is exactly nn.MSELoss() of the teaching notebook
    close(loss, torch.nn.MSELoss()(torch.sigmoid(out.logits), x.reshape(B, P)).item(), rtol=1e-6)
    for name in sorted(set(losses.OBJECTIVES) - {"reconstruction"}):
        with pytest.raises(ValueError, match="VAE output"):
            call(name, x, ae, dec, eps)


def test_input_errors():
    x, out, dec, eps = make_batch()
    with pytest.raises(KeyError, match="valid"):
        losses.elbo(x, out, likelihood="bernouli")
    with pytest.raises(ValueError):
        losses.elbo(x, out, likelihood="bernoulli", reduction="median")
    with pytest.raises(TypeError):  # a misspelt parameter reaches the term and is refused
        losses.beta_vae(x, out, likelihood="bernoulli", betta=2.0)
    with pytest.raises(ValueError, match="decode"):
        losses.iwae(x, out, likelihood="bernoulli", eps=eps["iwae"])
    with pytest.raises(ValueError, match="k=3"):
        losses.iwae(x, out, likelihood="bernoulli", decode=dec, eps=eps["iwae"], k=3)
    with pytest.raises(ValueError, match="prior samples"):
        losses.info_vae(x, out, likelihood="bernoulli")
    with pytest.raises(ValueError):
        losses.beta_tcvae(x, out, likelihood="bernoulli", dataset_size=10, sampling="xyz")
    with pytest.raises(ValueError):
        losses.info_vae(x, out, likelihood="bernoulli", eps=eps["info_vae"], kernel="laplace")
    with pytest.raises(ValueError):
        losses.gaussian_calibrated(x, x, calibration="pixel")
    with pytest.raises(ValueError):  # neither cycle_steps nor total_steps
        losses.cyclical_beta(3)
    with pytest.raises(ValueError):  # MSS needs two examples
        losses.log_importance_weight_matrix(1, 1000)


def test_extra_noise_shape():
    assert losses.extra_noise_shape("iwae", 8, 3, k=7) == (7, 8, 3)
    assert losses.extra_noise_shape("iwae", 8, 3) == (5, 8, 3)
    assert losses.extra_noise_shape("info_vae", 8, 3, lam=10.0) == (8, 3)
    assert losses.extra_noise_shape("info_vae", 8, 3, prior_samples=20) == (20, 3)
    assert losses.extra_noise_shape("elbo", 8, 3, beta=2.0) is None


# ---- extremes ------------------------------------------------------------------------------------


@pytest.mark.parametrize("big", [1e4, 1e9])
def test_reconstruction_terms_finite_at_extreme_logits(big):
    x = t([[1.0, 0.0, 0.0, 1.0, 0.5, 0.3]])
    for name in losses.RECONSTRUCTION:
        logits = t([[big, -big, big, -big, big, -big]]).requires_grad_()
        params = {"log_sigma": torch.zeros(())} if name == "gaussian_learned" else {}
        v = losses.reconstruction_nll(x, logits, name, **params).sum()
        (g,) = torch.autograd.grad(v, logits)
        assert math.isfinite(float(v.detach())) and torch.isfinite(g).all(), (name, v, g)


def test_kl_finite_at_extreme_logvar():
    mean, logvar = t([[0.0, 3.0]]).requires_grad_(), t([[50.0, -50.0]]).requires_grad_()
    v = losses.kl_normal(mean, logvar).sum()
    g = torch.autograd.grad(v, [mean, logvar])
    want = 0.5 * (math.exp(50) - 51.0) + 0.5 * (math.exp(-50) + 9 - 1 + 50)
    assert float(v.detach()) == pytest.approx(want, rel=1e-6)
    assert all(torch.isfinite(gi).all() for gi in g)


def test_bce_probs_outside_unit_interval_is_nan():
    """F.binary_cross_entropy raises for probabilities (and targets) outside [0, 1], e.g. a
    decoder whose sigmoid was left out or 8-bit pixels; bce_probs documents NaN there instead
    (value and gradient), as the JAX twin, which cannot raise under jit."""
    x = t([[1.0, 0.0]])
    with pytest.raises(RuntimeError, match="between 0 and 1"):
        torch.nn.functional.binary_cross_entropy(t([[1.2, 0.5]]), x)
    assert torch.isnan(losses.bce_probs(x, t([[1.2, 0.5]]))).all()
    assert torch.isnan(losses.bce_probs(x, t([[0.5, -0.1]]))).all()
    assert torch.isnan(losses.bce_probs(x, t([[math.nan, 0.5]]))).all()
    for bad_x in (2.0, -0.5, 255.0, math.nan):  # targets out of range: 8-bit pixels, NaN
        p = t([[0.5, 0.5]]).requires_grad_()
        v = losses.bce_probs(t([[bad_x, 0.0]]), p).sum()
        v.backward()
        assert torch.isnan(v) and torch.isnan(p.grad[0, 0]), bad_x
        # the valid pixel's gradient is untouched: (p - x) / (p (1 - p)) = 0.5 / 0.25 = 2
        assert float(p.grad[0, 1]) == pytest.approx(2.0, rel=1e-6)
    # the domain's edges stay valid: ln 2 at p = x = 1/2, the clamp's 100 nats at p = 0, x = 1
    close(losses.bce_probs(t([[0.5, 1.0, 0.0]]), t([[0.5, 0.0, 0.0]])), [LN2 + 100.0], rtol=1e-6)


def test_no_cross_framework_imports():
    """losses.py and this test import neither jax nor the JAX twin (AST: no subprocess)."""
    for path in (Path(losses.__file__), Path(__file__)):
        assert imported_roots(path).isdisjoint({"jax", "jaxvae", "flax", "optax", "parity_tests"}), path


def imported_roots(path: Path) -> set[str]:
    roots = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.Import):
            roots |= {a.name.split(".")[0] for a in node.names}
        elif isinstance(node, ast.ImportFrom) and node.module:
            roots.add(node.module.split(".")[0])
    return roots
