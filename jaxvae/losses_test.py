"""Unit tests of jaxvae.losses (JAX only; twin: torchvae/losses_test.py).

Single-framework behaviour: the registries' and objectives' contract (terms, dtypes,
reductions, batch-size invariance), finiteness at extreme inputs, input validation, and JAX
specifics (jit with a traced step and traced hyperparameters, no retrace, vmap, NaN where torch
raises). The hand-derived goldens (ln 2 per pixel at logit 0, KL 1/2 per unit mean, ...), checked
on the float64 oracle and both frameworks, and cross-framework agreement live in
parity_tests/test_losses.py.
"""

from __future__ import annotations

import math

import ast
import functools
from pathlib import Path
from typing import Any, NamedTuple

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from jaxvae import losses

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
# The terms each objective reports (identical table in torchvae/losses_test.py).
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


def make_batch(seed: int = 0, b: int = B):
    rng = np.random.default_rng(seed)
    f = lambda *s: jnp.asarray(rng.normal(size=s), jnp.float32)  # noqa: E731
    x = jnp.asarray(rng.uniform(size=(b, 2, 3)), jnp.float32)
    mean, logvar = f(b, D), 0.5 * f(b, D)
    out = ModelOutput(2.0 * f(b, P), mean, logvar, mean + jnp.exp(0.5 * logvar) * f(b, D))
    w, bias = 0.7 * f(D, P), 0.3 * f(P)
    eps = {"iwae": f(5, b, D), "info_vae": f(6, D)}
    return x, out, (lambda z: z @ w + bias), eps


def call(name, x, out, decode, eps, **kw):
    return losses.OBJECTIVES[name](x, out, likelihood=kw.pop("likelihood", "bernoulli"), step=30,
                                   decode=decode, eps=eps.get(name), **{**PARAMS.get(name, {}), **kw})


# ---- the reconstruction registry ---------------------------------------------------------------


# Tests evaluate their inputs inside one jax.jit: eager JAX compiles every primitive for every
# new shape, which costs several times more than one compile.


def test_registry_routes_probs_terms_through_sigmoid():
    x, logits = jnp.array([[1.0, 0.0, 0.3]]), jnp.array([[2.0, -1.0, 0.5]])
    custom = (lambda xx, raw: jnp.sum(raw, axis=1), "logits")  # a custom (fn, kind) pair

    @jax.jit
    def values(x, logits):
        res = {}
        for name, (fn, kind) in losses.RECONSTRUCTION.items():
            params = {"log_sigma": jnp.zeros(())} if name == "gaussian_learned" else {}
            want = fn(x, jax.nn.sigmoid(logits) if kind == "probs" else logits, **params)
            res[name] = (losses.reconstruction_nll(x.reshape(1, 3, 1), logits, name, **params), want)
        return res, losses.reconstruction_nll(x, logits, custom)

    res, custom_value = values(x, logits)
    for name, (got, want) in res.items():
        np.testing.assert_allclose(got, want, err_msg=name)
    assert {k for k, (_, kind) in losses.RECONSTRUCTION.items() if kind == "logits"} == {
        "bernoulli", "continuous_bernoulli"}
    np.testing.assert_allclose(custom_value, [1.5])


# ---- objectives: contract, reductions, invariances, extremes -----------------------------------


def twice(a):
    return jnp.concatenate([a, a])


def extreme(out, name):
    """logits +-1e4 and logvar +-50 (DIP-II: +-40, it squares exp(logvar): exp(50)^2 > float32 max)."""
    lv = 40.0 if name == "dip_vae_ii" else 50.0
    return out._replace(logits=jnp.tile(jnp.array([1e4, -1e4, 0.0]), (B, 2)),
                        logvar=jnp.tile(jnp.array([lv, -lv, 0.0]), (B, 1)))


@functools.lru_cache(maxsize=None)
def all_objective_results():
    """Everything the per-objective tests check, for every objective, from ONE jit compile
    (eager JAX compiles each primitive separately, and one merged compile costs about half of
    one compile per objective)."""
    x, out, dec, eps = make_batch()
    eps2 = {**eps, "iwae": jnp.concatenate([eps["iwae"], eps["iwae"]], axis=1)}

    def value_and_grad(name, o, xx, ee):
        return jax.value_and_grad(lambda oo: call(name, xx, oo, dec, ee), has_aux=True)(o)

    @jax.jit
    def run(out, extremes):
        res = {}
        for name in sorted(losses.OBJECTIVES):
            _, terms = call(name, x, out, dec, eps)
            _, terms_sum = call(name, x, out, dec, eps, reduction="sum")
            _, terms_twice = call(name, twice(x), ModelOutput(*map(twice, out)), dec, eps2)
            (_, terms_ext), grads_ext = value_and_grad(name, extremes[name], x, eps)
            res[name] = (terms, terms_sum, terms_twice, terms_ext, grads_ext)
        return res

    extremes = {name: extreme(out, name) for name in losses.OBJECTIVES}
    return jax.tree.map(np.asarray, run(out, extremes))


def objective_results(name: str):
    return all_objective_results()[name]


@pytest.mark.parametrize("name", sorted(losses.OBJECTIVES))
def test_objective_terms_and_reductions(name):
    terms, terms_sum, *_ = objective_results(name)
    assert set(terms) == {"loss", "recon", "kl"} | EXPECTED_TERMS[name]
    assert all(t.shape == () and t.dtype == np.float32 for t in terms.values())
    assert all(np.isfinite(t) for t in terms.values())
    for k in ("loss", "recon", "kl"):  # "sum" is exactly B times "mean"
        np.testing.assert_allclose(terms_sum[k], B * terms[k], rtol=2e-6, atol=1e-6)


@pytest.mark.parametrize("name", sorted(losses.OBJECTIVES))
def test_objective_invariant_to_duplicating_the_batch(name):
    """Mean-reduced objectives do not change when every example appears twice. True for the
    batch-statistic variants as well: DIP's 1/B covariance, the MMD V-statistic, MWS's
    log(B N) normaliser, the batch-mean KL of capacity / free bits and the calibrated sigma."""
    terms, _, terms_twice, *_ = objective_results(name)
    for k in terms:
        np.testing.assert_allclose(terms_twice[k], terms[k], rtol=2e-6, atol=2e-6, err_msg=k)


@pytest.mark.parametrize("name", sorted(losses.OBJECTIVES))
def test_objectives_finite_at_extremes(name):
    *_, terms_ext, grads_ext = objective_results(name)
    assert all(np.isfinite(t) for t in terms_ext.values()), terms_ext
    assert all(np.all(np.isfinite(g)) for g in jax.tree.leaves(grads_ext))


def test_mss_is_not_invariant_to_duplicating_the_batch():
    """MSS gives each row's own posterior weight 1/N and the others ~1/(B-1): a duplicate of
    x_i counts as a different example, so MSS (unlike MWS) changes; documented, not a bug."""
    x, out, dec, eps = make_batch()
    mss = jax.jit(lambda xx, o: call("beta_tcvae", xx, o, dec, eps, sampling="mss")[1])
    t1, t2 = mss(x, out), mss(twice(x), ModelOutput(*map(twice, out)))
    assert abs(float(t2["mi"]) - float(t1["mi"])) > 1e-3


def test_iwae_with_one_sample_is_the_single_sample_elbo():
    x, out, dec, eps = make_batch()

    @jax.jit
    def both(x, out, e):
        loss, terms = losses.iwae(x, out, likelihood="bernoulli", decode=dec, eps=e)
        z = losses.reparameterize(out.mean, out.logvar, e[0])
        want = losses.bernoulli(x.reshape(B, P), dec(z)) + losses.kl_monte_carlo(z, out.mean, out.logvar)
        return loss, terms["elbo"], jnp.mean(want)

    loss, elbo, want = both(x, out, eps["iwae"][:1])
    np.testing.assert_allclose(loss, want, rtol=1e-6)
    np.testing.assert_allclose(elbo, -loss, rtol=1e-6)


def test_free_bits_gradient_vanishes_below_the_floor():
    x, out, dec, eps = make_batch()
    out = out._replace(mean=out.mean.at[:, 0].set(0.0), logvar=out.logvar.at[:, 0].set(0.0))
    def loss(m, lv):
        return losses.free_bits(x, out._replace(mean=m, logvar=lv), likelihood="bernoulli", lam=0.1)[0]

    g = jax.jit(jax.grad(loss, argnums=(0, 1)))
    gm, glv = g(out.mean, out.logvar)
    assert float(jnp.abs(gm[:, 0]).max()) == 0.0 and float(jnp.abs(glv[:, 0]).max()) == 0.0
    assert float(jnp.abs(gm[:, 1:]).min()) > 0.0


def test_reconstruction_objective_for_autoencoders():
    x, out, dec, eps = make_batch()
    ae = ModelOutput(out.logits, out.mean, None, out.mean)
    loss, terms = losses.reconstruction(x, ae, likelihood="mse_mean")
    assert float(terms["kl"]) == 0.0
    want = jnp.mean((jax.nn.sigmoid(out.logits) - x.reshape(B, P)) ** 2)  # nn.MSELoss()
    np.testing.assert_allclose(loss, want, rtol=1e-6)
    for name in sorted(set(losses.OBJECTIVES) - {"reconstruction"}):
        with pytest.raises(ValueError, match="VAE output"):
            call(name, x, ae, dec, eps)


def test_input_errors():
    x, out, dec, eps = make_batch()

    def raises(exc, fn, match=None, **kw):
        with pytest.raises(exc, match=match):
            jax.jit(lambda: fn(x, out, **kw)).trace()  # tracing raises; nothing is compiled

    raises(KeyError, losses.elbo, "valid", likelihood="bernouli")
    raises(ValueError, losses.elbo, likelihood="bernoulli", reduction="median")
    raises(TypeError, losses.beta_vae, likelihood="bernoulli", betta=2.0)  # a misspelt parameter
    raises(ValueError, losses.iwae, "decode", likelihood="bernoulli", eps=eps["iwae"])
    raises(ValueError, losses.iwae, "k=3", likelihood="bernoulli", decode=dec, eps=eps["iwae"], k=3)
    raises(ValueError, losses.info_vae, "prior samples", likelihood="bernoulli")
    raises(ValueError, losses.beta_tcvae, likelihood="bernoulli", dataset_size=10, sampling="xyz")
    raises(ValueError, losses.info_vae, likelihood="bernoulli", eps=eps["info_vae"], kernel="laplace")
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


@jax.jit
def all_terms_value_and_grad(x, logits):
    """Every reconstruction term's value and d/dlogits, in one compile."""
    res = {}
    for name in losses.RECONSTRUCTION:
        params = {"log_sigma": jnp.zeros(())} if name == "gaussian_learned" else {}
        total = lambda l: losses.reconstruction_nll(x, l, name, **params).sum()  # noqa: E731
        res[name] = jax.value_and_grad(total)(logits)
    return res


@pytest.mark.parametrize("big", [1e4, 1e9])
def test_reconstruction_terms_finite_at_extreme_logits(big):
    x = jnp.array([[1.0, 0.0, 0.0, 1.0, 0.5, 0.3]])
    logits = jnp.array([[big, -big, big, -big, big, -big]])
    for name, (v, g) in all_terms_value_and_grad(x, logits).items():
        assert np.isfinite(float(v)) and np.all(np.isfinite(g)), (name, v, g)


def test_bce_probs_outside_unit_interval_is_nan():
    """F.binary_cross_entropy raises here; under jit JAX cannot, so the documented domain p, x in
    [0, 1] gives NaN outside it (value and gradient, as the torch twin), never a number. A target
    x = 2 with p = 1/2 used to give -(2 ln(1/2) + (1 - 2) ln(1/2)) = ln 2 - 2 ln 2 < 0."""
    x = jnp.array([[1.0, 0.0]])
    assert np.all(np.isnan(losses.bce_probs(x, jnp.array([[1.2, 0.5]]))))
    assert np.all(np.isnan(losses.bce_probs(x, jnp.array([[0.5, -0.1]]))))
    assert np.all(np.isnan(losses.bce_probs(x, jnp.array([[jnp.nan, 0.5]]))))
    for bad_x in (2.0, -0.5, 255.0, jnp.nan):  # targets out of range: 8-bit pixels, NaN
        v, g = jax.value_and_grad(lambda p, t=bad_x: losses.bce_probs(jnp.array([[t, 0.0]]), p).sum())(
            jnp.array([[0.5, 0.5]]))
        assert np.isnan(v) and np.isnan(g[0, 0]), bad_x
        # the valid pixel's gradient is untouched: (p - x) / (p (1 - p)) = 0.5 / 0.25 = 2
        np.testing.assert_allclose(g[0, 1], 2.0, rtol=1e-6)
    # the domain's edges stay valid: ln 2 at p = x = 1/2, the clamp's 100 nats at p = 0, x = 1
    np.testing.assert_allclose(losses.bce_probs(jnp.array([[0.5, 1.0, 0.0]]),
                                                jnp.array([[0.5, 0.0, 0.0]])), [LN2 + 100.0], rtol=1e-6)


# ---- JAX specifics -------------------------------------------------------------------------------


def test_jit_with_traced_step_and_hyperparameters_compiles_once():
    x, out, dec, eps = make_batch()
    traces = []

    @jax.jit
    def step_fn(o, step, beta, warmup, c_max, n):
        traces.append(None)  # runs only while tracing
        loss = losses.beta_vae(x, o, likelihood="bernoulli", step=step, beta=beta)[0]
        loss += losses.kl_warmup(x, o, likelihood="bernoulli", step=step, warmup_steps=warmup)[0]
        loss += losses.cyclical(x, o, likelihood="bernoulli", step=step, total_steps=warmup)[0]
        loss += losses.capacity(x, o, likelihood="bernoulli", step=step, c_max=c_max, c_steps=warmup)[0]
        for sampling in ("mws", "mss"):
            loss += losses.beta_tcvae(x, o, likelihood="bernoulli", dataset_size=n, sampling=sampling)[0]
        return loss

    vals = [float(step_fn(out, jnp.int32(s), jnp.float32(2.0), jnp.float32(100.0),
                          jnp.float32(25.0), jnp.float32(1000.0))) for s in range(4)]
    assert len(traces) == 1 and len(set(vals)) == 4


def test_objectives_vmap_over_a_leading_axis():
    x, out, dec, eps = make_batch()
    outs = [make_batch(seed=s)[1] for s in range(3)]
    stacked = ModelOutput(*[jnp.stack(f) for f in zip(*outs)])
    names = sorted(losses.OBJECTIVES)
    all_losses = lambda o: jnp.stack([call(n, x, o, dec, eps)[0] for n in names])  # noqa: E731
    got = jax.jit(jax.vmap(all_losses))(stacked)  # (3, n_objectives): one compile for all
    one = jax.jit(all_losses)
    np.testing.assert_allclose(got, [one(o) for o in outs], rtol=2e-6)


def test_no_cross_framework_imports():
    """losses.py and this test import neither torch nor the torch twin (AST: no subprocess)."""
    for path in (Path(losses.__file__), Path(__file__)):
        assert imported_roots(path).isdisjoint({"torch", "torchvae", "parity_tests"}), path


def imported_roots(path: Path) -> set[str]:
    roots = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.Import):
            roots |= {a.name.split(".")[0] for a in node.names}
        elif isinstance(node, ast.ImportFrom) and node.module:
            roots.add(node.module.split(".")[0])
    return roots
