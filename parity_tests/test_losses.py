"""jaxvae.losses and torchvae.losses, each against the float64 oracle: values and gradients.

Every check compares ONE framework (float32) with `oracle.py` (float64 NumPy): never one
framework with the other. Gradients: jax.grad / torch.autograd against central finite
differences of the oracle. Inputs are drawn in float64, rounded to float32 once, and that same
float32 input goes to the oracle, so input rounding is not counted as error.
"""

from __future__ import annotations

import functools
import math
import zlib
from typing import Any, NamedTuple

import jax
import jax.numpy as jnp
import numpy as np
import pytest
import torch
import torch.nn.functional as F
from hypothesis import given, settings
from hypothesis import strategies as st

from jaxvae import losses as jl
from parity_tests import oracle
from parity_tests.asserts import TOL, assert_close
from torchvae import losses as tl

FRAMEWORKS = ("jax", "torch")
LIB = {"jax": jl, "torch": tl}


class ModelOutput(NamedTuple):
    """Stand-in for models.ModelOutput (same fields); the losses use attribute access only."""

    logits: Any
    mean: Any
    logvar: Any
    z: Any


# ---- framework adapters -------------------------------------------------------------------------


def to_fw(fw: str, a):
    if a is None:
        return None
    if fw == "jax":
        return jnp.asarray(np.asarray(a, np.float32))
    return torch.tensor(np.asarray(a, np.float32))


def to_np(a) -> np.ndarray:
    if isinstance(a, torch.Tensor):
        return a.detach().cpu().numpy().astype(np.float64)
    return np.asarray(a, np.float64)


def value_and_grads(fw: str, f, args: list):
    """(value, aux, grads) of scalar f(*args) in framework fw; args are NumPy float32 arrays.

    f receives framework arrays and returns (scalar, aux dict). Unused args get zero grads.
    """
    if fw == "jax":
        vg = jax.jit(jax.value_and_grad(f, argnums=tuple(range(len(args))), has_aux=True))
        (v, aux), g = vg(*[to_fw(fw, a) for a in args])
        return float(v), {k: to_np(t) for k, t in aux.items()}, [to_np(t) for t in g]
    ts = [to_fw(fw, a).requires_grad_() for a in args]
    v, aux = f(*ts)
    g = torch.autograd.grad(v, ts, allow_unused=True)
    g = [torch.zeros_like(t) if gi is None else gi for gi, t in zip(g, ts)]
    return float(v.detach()), {k: to_np(t) for k, t in aux.items()}, [to_np(t) for t in g]


def value_and_grads_many(fw: str, jobs: dict):
    """value_and_grads of many (f, args) jobs: {key: (value, aux, grads)}.

    JAX evaluates all jobs in ONE jit (one compile per family of checks: merging halves the
    compile time, which dominates these tests); PyTorch runs them one by one.
    """
    if fw == "torch":
        return {k: value_and_grads(fw, f, args) for k, (f, args) in jobs.items()}
    keys = sorted(jobs)

    @jax.jit
    def run(all_args):
        return {k: jax.value_and_grad(jobs[k][0], argnums=tuple(range(len(a))), has_aux=True)(*a)
                for k, a in zip(keys, all_args)}

    res = run([[to_fw(fw, a) for a in jobs[k][1]] for k in keys])
    return {k: (float(v), {n: to_np(t) for n, t in aux.items()}, [to_np(t) for t in g])
            for k, ((v, aux), g) in res.items()}


def compiled(fw: str, fn):
    """jax.jit(fn) for JAX (one compile instead of one per primitive in eager mode), fn for torch."""
    return jax.jit(fn) if fw == "jax" else fn


def linear_decoder(fw: str, w: np.ndarray, b: np.ndarray):
    """z (N, D) -> z W + b, in framework fw (elementwise products: no matmul precision flags)."""
    if fw == "oracle":
        return lambda z: np.asarray(z, np.float64) @ w.astype(np.float64) + b.astype(np.float64)
    w_, b_ = to_fw(fw, w), to_fw(fw, b)
    return lambda z: (z[:, :, None] * w_[None]).sum(1) + b_


def f32(a):
    return np.asarray(a, np.float32)


def seeded(name: str) -> np.random.Generator:
    return np.random.default_rng(zlib.crc32(name.encode()))


# ---- registries ---------------------------------------------------------------------------------


def test_registries_and_public_names_match():
    assert list(jl.__all__) == list(tl.__all__), "public names (and their order) differ"
    for name in jl.__all__:
        assert hasattr(jl, name) and hasattr(tl, name), name
    assert sorted(jl.OBJECTIVES) == sorted(tl.OBJECTIVES) == sorted(oracle.OBJECTIVES)
    assert sorted(jl.RECONSTRUCTION) == sorted(tl.RECONSTRUCTION) == sorted(oracle.RECONSTRUCTION)
    for name in jl.RECONSTRUCTION:
        assert jl.RECONSTRUCTION[name][1] == tl.RECONSTRUCTION[name][1] == oracle.RECONSTRUCTION[name][1]
    assert jl.__doc__ and "torchvae/losses.py" in jl.__doc__
    assert tl.__doc__ and "jaxvae/losses.py" in tl.__doc__


# ---- reconstruction terms -----------------------------------------------------------------------

B, P, D = 4, 6, 3  # x is (B, 2, 3): the terms reshape it to the logits' (B, 6)

# Parameters a term needs in these tests (default: none). A new term is picked up from the
# registry automatically; give it parameters here if it needs any.
RECON_PARAMS = {
    "gaussian": {"sigma": 0.3},
    "gaussian_learned": {"log_sigma": f32(seeded("log_sigma").normal(size=(P,)) * 0.3)},
}
RECON_CASES = [(name, RECON_PARAMS.get(name, {})) for name in sorted(jl.RECONSTRUCTION)] + [
    ("gaussian_learned", {"log_sigma": np.float32(-0.7)}),
    ("gaussian_calibrated", {"calibration": "example"}),
]
RECON_IDS = [name for name, _ in RECON_CASES[:-2]] + ["gaussian_learned-global",
                                                      "gaussian_calibrated-example"]
assert len(set(RECON_IDS)) == len(RECON_IDS)


@functools.lru_cache(maxsize=None)
def recon_case(idx: int):
    name, params = RECON_CASES[idx]
    rng = seeded(RECON_IDS[idx])
    x = f32(rng.uniform(size=(B, 2, 3)))
    logits = f32(rng.normal(size=(B, P)) * 2.0)
    arr_params = {k: v for k, v in params.items() if isinstance(v, np.ndarray | np.floating)}
    static = {k: v for k, v in params.items() if k not in arr_params}
    keys = list(arr_params)

    def f_oracle(lg, *ps):
        return float(np.sum(oracle.reconstruction_nll(x, lg, name, **static, **dict(zip(keys, ps)))))

    args = [logits] + [np.asarray(arr_params[k]) for k in keys]
    per_example = oracle.reconstruction_nll(x, logits, name, **params)
    return x, args, keys, static, per_example, oracle.numerical_grad(f_oracle, args)


@functools.lru_cache(maxsize=None)
def recon_results(fw: str):
    jobs = {}
    for idx, (name, _) in enumerate(RECON_CASES):
        x, args, keys, static, _, _ = recon_case(idx)

        def f(lg, *ps, name=name, xf=to_fw(fw, x), keys=keys, static=static):
            per = LIB[fw].reconstruction_nll(xf, lg, name, **static, **dict(zip(keys, ps)))
            return per.sum(), {"per_example": per}

        jobs[RECON_IDS[idx]] = (f, args)
    return value_and_grads_many(fw, jobs)


@pytest.mark.parametrize("fw", FRAMEWORKS)
@pytest.mark.parametrize("idx", range(len(RECON_CASES)), ids=RECON_IDS)
def test_reconstruction_vs_oracle(fw, idx):
    name = RECON_CASES[idx][0]
    _, _, keys, _, want, want_grads = recon_case(idx)
    _, aux, grads = recon_results(fw)[RECON_IDS[idx]]
    assert_close(aux["per_example"], want, name=f"{fw}:{name}", **TOL["per_example_loss"])
    for g, w, arg in zip(grads, want_grads, ["logits"] + keys):
        assert_close(g, w, name=f"{fw}:d{name}/d{arg}", **TOL["loss_gradients"])


@pytest.mark.parametrize("fw", FRAMEWORKS)
def test_bce_probs_reproduces_torch_backward(fw):
    """bce_probs's gradient w.r.t. p is PyTorch's (p - x) / max(p(1-p), 1e-12), even where it is
    not the derivative of the clamped forward (p = 0, 1, or p(1-p) < 1e-12)."""
    p = f32([[0.0, 1e-30, 1e-13, 0.3, 0.5, 1 - 1e-7, 1.0, 0.9]])
    for xv in (0.0, 1.0, 0.25):
        x = np.full_like(p, xv)
        def f(pp, xf=to_fw(fw, x)):
            v = LIB[fw].bce_probs(xf, pp)
            return v.sum(), {"v": v}

        _, aux, (g,) = value_and_grads(fw, f, [p])
        assert_close(aux["v"], oracle.bce_probs(x, p), name=f"{fw}:bce_probs(x={xv})",
                     **TOL["per_example_loss"])
        assert_close(g, oracle.bce_probs_grad_torch_rule(x, p), name=f"{fw}:bce_probs grad (x={xv})",
                     **TOL["loss_gradients"])


@pytest.mark.parametrize("fw", FRAMEWORKS)
def test_bce_probs_domain_is_nan_outside_unit_interval(fw):
    """The documented domain p, x in [0, 1]: one example per pixel, NaN (value and gradient)
    exactly where p or x is outside it or NaN, the oracle's values (and PyTorch's gradient)
    inside, the edges 0 and 1 included."""
    p = f32([[0.5], [0.0], [1.0], [0.3], [0.5], [0.5], [1.2], [-0.1], [np.nan], [0.5]])
    x = f32([[0.5], [1.0], [0.0], [1.0], [2.0], [-0.5], [1.0], [0.0], [1.0], [np.nan]])
    valid = np.array([True] * 4 + [False] * 6)

    def f(pp, xf=to_fw(fw, x)):
        v = LIB[fw].bce_probs(xf, pp)
        return v.sum(), {"v": v}

    _, aux, (g,) = value_and_grads(fw, f, [p])
    want = oracle.bce_probs(x, p)
    assert np.array_equal(np.isnan(want), ~valid)
    assert np.array_equal(np.isnan(aux["v"]), ~valid), f"{fw}: {aux['v']}"
    assert np.array_equal(np.isnan(g[:, 0]), ~valid), f"{fw}: {g}"
    assert_close(aux["v"][valid], want[valid], name=f"{fw}:bce_probs inside [0, 1]",
                 **TOL["per_example_loss"])
    assert_close(g[valid], oracle.bce_probs_grad_torch_rule(x, p)[valid],
                 name=f"{fw}:bce_probs grad inside [0, 1]", **TOL["loss_gradients"])


@pytest.mark.parametrize("fw", FRAMEWORKS)
def test_bce_terms_without_gradients_vs_oracle(fw):
    """Evaluation (no gradients: the torch twin's vectorized path, the JAX twin's select-free
    form under jit): bce_probs's clamps, edges and NaN domain, and bernoulli at logits up to
    +-1e9, against the oracle."""
    p = f32([[0.5, 0.0, 1.0, 0.3, 1e-30, 1 - 1e-7], [0.5, 0.5, 1.2, -0.1, np.nan, 0.5],
             [0.9, 0.2, 0.5, 0.5, 0.5, 0.5]])
    x = f32([[0.5, 1.0, 0.0, 1.0, 0.25, 0.0], [0.5, 0.5, 0.5, 0.5, 0.5, 0.5],
             [1.0, 0.0, 2.0, -0.5, np.nan, 0.5]])
    want = oracle.bce_probs(x, p)
    assert np.isfinite(want[0]) and np.isnan(want[1:]).all()
    with torch.no_grad():
        got = to_np(compiled(fw, LIB[fw].bce_probs)(to_fw(fw, x), to_fw(fw, p)))
    assert np.array_equal(np.isnan(got), np.isnan(want)), f"{fw}: {got}"
    assert_close(got[:1], want[:1], name=f"{fw}:bce_probs (no gradients)", **TOL["per_example_loss"])
    logits = f32([[0.0, 3.0, -3.0, 30.0, -30.0, 1e9, -1e9, 17.0]] * 2)
    xb = f32([[0.0, 1.0, 0.25, 1.0, 0.0, 1.0, 0.0, 0.5], [1.0, 0.0, 0.75, 0.0, 1.0, 0.0, 1.0, 0.5]])
    with torch.no_grad():
        got = to_np(compiled(fw, LIB[fw].bernoulli)(to_fw(fw, xb), to_fw(fw, logits)))
    assert_close(got, oracle.bernoulli(xb, logits), name=f"{fw}:bernoulli (no gradients)",
                 **TOL["per_example_loss"])


# ---- Gaussian latents ---------------------------------------------------------------------------


def latent_case(name: str, n_samples: int = 0):
    rng = seeded(name)
    mean = f32(rng.normal(size=(B, D)) * 1.5)
    logvar = f32(rng.normal(size=(B, D)))
    eps = f32(rng.normal(size=(n_samples, B, D) if n_samples else (B, D)))
    return mean, logvar, eps


EXP = {jl: jnp.exp, tl: torch.exp}
LATENT_FNS = {
    # name: (library call on (mean, logvar, eps), oracle call)
    "kl_normal": (lambda L, m, lv, e: L.kl_normal(m, lv), lambda m, lv, e: oracle.kl_normal(m, lv)),
    "kl_normal_per_dim": (lambda L, m, lv, e: L.kl_normal_per_dim(m, lv),
                          lambda m, lv, e: oracle.kl_normal_per_dim(m, lv)),
    # std = exp(logvar / 2) so the book's std form is compared with the log-variance truth.
    "kl_normal_std": (lambda L, m, lv, e: L.kl_normal_std(m, EXP[L](0.5 * lv)),
                      lambda m, lv, e: oracle.kl_normal(m, lv)),
    "reparameterize": (lambda L, m, lv, e: L.reparameterize(m, lv, e),
                       lambda m, lv, e: oracle.reparameterize(m, lv, e)),
    "log_normal_pdf": (lambda L, m, lv, e: L.log_normal_pdf(e, m, lv),
                       lambda m, lv, e: oracle.log_normal_pdf(e, m, lv)),
    "kl_monte_carlo": (lambda L, m, lv, e: L.kl_monte_carlo(L.reparameterize(m, lv, e), m, lv),
                       lambda m, lv, e: oracle.kl_monte_carlo(oracle.reparameterize(m, lv, e), m, lv)),
}


def latent_inputs(name: str):
    # kl_monte_carlo gets leading sample axes (S, B, D); the others one sample (B, D).
    return latent_case(name, n_samples=3 if name == "kl_monte_carlo" else 0)


@functools.lru_cache(maxsize=None)
def latent_results(fw: str):
    jobs = {}
    for name, (lib_fn, _) in LATENT_FNS.items():
        def f(m, lv, e, lib_fn=lib_fn):
            v = lib_fn(LIB[fw], m, lv, e)
            return v.sum(), {"v": v}

        jobs[name] = (f, list(latent_inputs(name)))
    return value_and_grads_many(fw, jobs)


@pytest.mark.parametrize("fw", FRAMEWORKS)
@pytest.mark.parametrize("name", sorted(LATENT_FNS))
def test_latent_functions_vs_oracle(fw, name):
    _, oracle_fn = LATENT_FNS[name]
    mean, logvar, eps = latent_inputs(name)
    _, aux, grads = latent_results(fw)[name]
    assert_close(aux["v"], oracle_fn(mean, logvar, eps), name=f"{fw}:{name}", **TOL["per_example_loss"])
    want = oracle.numerical_grad(lambda m, lv, e: float(np.sum(oracle_fn(m, lv, e))),
                                 [mean, logvar, eps])
    for g, w, arg in zip(grads, want, ("mean", "logvar", "eps")):
        assert_close(g, w, name=f"{fw}:d{name}/d{arg}", **TOL["loss_gradients"])


# ---- posterior-collapse diagnostics -------------------------------------------------------------


@pytest.mark.parametrize("fw", FRAMEWORKS)
def test_posterior_diagnostics_vs_oracle_and_a_collapsed_encoder(fw):
    """Every run's collapse diagnostics: the per-dimension KL and the sums of the posterior means
    by formula, I(x; z) and the total correlation as the float64 oracle's stratified estimate;
    an encoder that ignores x (identical posteriors) has I(x; z) = TC = 0 exactly by that
    estimator, whatever the posterior."""
    rng = seeded("posterior_diagnostics")
    mean, logvar = f32(rng.normal(size=(8, D))), f32(rng.normal(size=(8, D)) * 0.5)
    z = f32(mean + np.exp(0.5 * logvar) * rng.normal(size=(8, D)))
    got = {k: to_np(v) for k, v in LIB[fw].posterior_diagnostics(
        to_fw(fw, z), to_fw(fw, mean), to_fw(fw, logvar), dataset_size=1000).items()}
    d = oracle.tc_decomposition(z, mean, logvar, dataset_size=1000, sampling="mss")
    want = {"kl_per_dim": oracle.kl_normal_per_dim(mean, logvar).mean(0),
            "mean_sum": mean.astype(np.float64).sum(0),
            "mean_sq": (mean.astype(np.float64) ** 2).sum(0),
            "mutual_info": np.mean(d["log_qz_x"] - d["log_qz"]),
            "total_correlation": np.mean(d["log_qz"] - d["log_prod_qzi"])}
    assert sorted(got) == sorted(want)
    for k in want:
        assert_close(got[k], want[k], name=f"{fw}:{k}", **TOL["per_example_loss"])
    same_m, same_lv = np.repeat(mean[:1], 8, 0), np.repeat(logvar[:1], 8, 0)
    collapsed = LIB[fw].posterior_diagnostics(to_fw(fw, z), to_fw(fw, same_m), to_fw(fw, same_lv),
                                              dataset_size=1000)
    assert abs(float(to_np(collapsed["mutual_info"]))) < 1e-5
    assert abs(float(to_np(collapsed["total_correlation"]))) < 1e-5


# ---- estimators ---------------------------------------------------------------------------------

ESTIMATORS = ("log_importance_weights", "importance_sampled_log_likelihood", "importance_sampled_nll")


ESTIMATOR_LIKELIHOODS = ("bernoulli", "gaussian")


def estimator_inputs(name: str, likelihood: str):
    rng = seeded(f"{name}-{likelihood}")
    x = f32(rng.uniform(size=(B, 2, 3)))
    mean, logvar = f32(rng.normal(size=(B, D))), f32(rng.normal(size=(B, D)) * 0.5)
    eps = f32(rng.normal(size=(7, B, D)))
    w, b = f32(rng.normal(size=(D, P))), f32(rng.normal(size=(P,)))
    return x, mean, logvar, eps, w, b


@functools.lru_cache(maxsize=None)
def estimator_results(fw: str):
    jobs = {}
    for name in ESTIMATORS:
        for likelihood in ESTIMATOR_LIKELIHOODS:
            x, mean, logvar, eps, w, b = estimator_inputs(name, likelihood)

            def f(m, lv, name=name, likelihood=likelihood, xf=to_fw(fw, x), ef=to_fw(fw, eps),
                  dec=linear_decoder(fw, w, b)):
                v = getattr(LIB[fw], name)(xf, m, lv, ef, dec, likelihood)
                return v.sum(), {"v": v}

            jobs[f"{name}-{likelihood}"] = (f, [mean, logvar])
    return value_and_grads_many(fw, jobs)


@pytest.mark.parametrize("fw", FRAMEWORKS)
@pytest.mark.parametrize("likelihood", ESTIMATOR_LIKELIHOODS)
@pytest.mark.parametrize("name", ESTIMATORS)
def test_estimators_vs_oracle(fw, name, likelihood):
    x, mean, logvar, eps, w, b = estimator_inputs(name, likelihood)
    _, aux, grads = estimator_results(fw)[f"{name}-{likelihood}"]
    o = functools.partial(getattr(oracle, name), x, eps=eps, decode=linear_decoder("oracle", w, b),
                          likelihood=likelihood)
    assert_close(aux["v"], o(mean=mean, logvar=logvar), name=f"{fw}:{name}", **TOL["per_example_loss"])
    want = oracle.numerical_grad(lambda m, lv: float(np.sum(o(mean=m, logvar=lv))), [mean, logvar])
    for g, wg, arg in zip(grads, want, ("mean", "logvar")):
        assert_close(g, wg, name=f"{fw}:d{name}/d{arg}", **TOL["loss_gradients"])


@pytest.mark.parametrize("fw", FRAMEWORKS)
@pytest.mark.parametrize("likelihood", sorted(jl.RECONSTRUCTION))
@pytest.mark.parametrize("chunk", [3, 4])
def test_chunked_importance_sampled_nll_vs_oracle(fw, likelihood, chunk):
    """The test NLL decodes `chunk` of the k = 7 samples at a time and log-adds the chunks (full
    chunks, then the remainder: 3+3+1 and 4+3): the all-at-once estimate, for every likelihood.
    gaussian_calibrated with one sigma per example: its default one sigma per decoded block
    depends on the block, so its chunked NLL does too (documented in the spec)."""
    x, mean, logvar, eps, w, b = estimator_inputs("chunked", likelihood)
    params = RECON_PARAMS.get(likelihood, {})
    if likelihood == "gaussian_calibrated":
        params = {"calibration": "example"}
    fn = compiled(fw, lambda x, m, lv, e: LIB[fw].importance_sampled_nll(
        x, m, lv, e, linear_decoder(fw, w, b), likelihood, chunk=chunk,
        **{k: v if isinstance(v, (str, float)) else to_fw(fw, v) for k, v in params.items()}))
    got = to_np(fn(*(to_fw(fw, a) for a in (x, mean, logvar, eps))))
    want = oracle.importance_sampled_nll(x, mean, logvar, eps, linear_decoder("oracle", w, b),
                                         likelihood, **params)
    assert_close(got, want, name=f"{fw}:importance_sampled_nll(chunk={chunk}, {likelihood})",
                 **TOL["per_example_loss"])


@pytest.mark.parametrize("fw", FRAMEWORKS)
def test_elbo_terms_and_bits_per_dim_vs_oracle(fw):
    rng = seeded("elbo_terms")
    x = f32(rng.uniform(size=(B, 2, 3)))
    out = ModelOutput(f32(rng.normal(size=(B, P))), f32(rng.normal(size=(B, D))),
                      f32(rng.normal(size=(B, D))), None)
    got = compiled(fw, lambda x, out: LIB[fw].elbo_terms(x, out, "bernoulli"))(
        to_fw(fw, x), ModelOutput(*[to_fw(fw, a) for a in out]))
    want = oracle.elbo_terms(x, out, "bernoulli")
    assert sorted(got) == sorted(want) == ["kl", "loss", "recon"]
    for k in want:
        assert_close(got[k], want[k], name=f"{fw}:elbo_terms[{k}]", **TOL["per_example_loss"])
    bpd = LIB[fw].bits_per_dim(got["loss"], P)
    assert_close(bpd, oracle.bits_per_dim(want["loss"], P), name=f"{fw}:bits_per_dim",
                 **TOL["per_example_loss"])


# ---- objectives ---------------------------------------------------------------------------------

STEP = 30
# Parameters per objective for these tests (default: none); a new objective is picked up from
# the registry automatically. Steps put every schedule mid-ramp (warm-up 0.3, cyclical 0.6,
# capacity at 30% of c_max).
OBJ_PARAMS = {
    "kl_warmup": {"warmup_steps": 100},
    "cyclical": {"cycle_steps": 100, "ratio": 0.5},
    "capacity": {"gamma": 100.0, "c_steps": 100},  # c_max set per case (see objective_case)
    "beta_tcvae": {"dataset_size": 1000},
    "iwae": {"k": 5},
}
OBJ_CASES = [(name, "bernoulli", OBJ_PARAMS.get(name, {})) for name in sorted(jl.OBJECTIVES)] + [
    ("beta_tcvae", "bernoulli", {"dataset_size": 1000, "sampling": "mss"}),
    ("info_vae", "bernoulli", {"kernel": "imq", "alpha": 0.5, "lam": 10.0, "kernel_scale": 3.0}),
    ("iwae", "gaussian_calibrated", {"calibration": "example"}),
    ("reconstruction", "mse_mean", {"autoencoder": True}),
    ("beta_vae", "gaussian_learned", {"beta": 0.5, "log_sigma": np.float32(-1.0)}),
] + [("elbo", lik, RECON_PARAMS.get(lik, {})) for lik in sorted(jl.RECONSTRUCTION) if lik != "bernoulli"]
OBJ_IDS = [f"{o}-{lik}" + "".join(f"-{k}" for k in sorted(p) if k not in OBJ_PARAMS.get(o, {}))
           for o, lik, p in OBJ_CASES]
assert len(set(OBJ_IDS)) == len(OBJ_IDS)


@functools.lru_cache(maxsize=None)
def objective_case(idx: int):
    name, likelihood, params = OBJ_CASES[idx]
    params = dict(params)
    ae = params.pop("autoencoder", False)
    rng = seeded(OBJ_IDS[idx])
    x = f32(rng.uniform(size=(B, 2, 3)))
    logits = f32(rng.normal(size=(B, P)) * 2.0)
    mean = f32(rng.normal(size=(B, D)))
    logvar = f32(rng.normal(size=(B, D)) * 0.5)
    z = f32(mean + np.exp(0.5 * logvar) * rng.normal(size=(B, D)))
    w, b = f32(rng.normal(size=(D, P)) * 0.7), f32(rng.normal(size=(P,)) * 0.3)
    eps = {"iwae": f32(rng.normal(size=(5, B, D))), "info_vae": f32(rng.normal(size=(6, D)))}.get(name)
    if name == "capacity":
        # C between the per-example KLs (above their mean), so |mean KL - C| differs from the
        # mean of |KL_b - C| and the test pins the batch-level penalty.
        kls = oracle.kl_normal(mean, logvar)
        c_target = kls.mean() + 0.5 * (kls.max() - kls.mean())
        params["c_max"] = float(np.float32(c_target * params["c_steps"] / STEP))
    if name == "free_bits":
        # lam in the widest gap between the per-dimension batch-mean KLs: max() is smooth there.
        kls = np.sort(np.concatenate([[0.0], oracle.kl_normal_per_dim(mean, logvar).mean(0)]))
        i = int(np.argmax(np.diff(kls)))
        params["lam"] = float(np.float32((kls[i] + kls[i + 1]) / 2))
    dec_o = linear_decoder("oracle", w, b)

    def f_oracle(lg, m, lv, zz):
        out = ModelOutput(lg, None if ae else m, None if ae else lv, None if ae else zz)
        return oracle.OBJECTIVES[name](x, out, likelihood=likelihood, step=STEP, decode=dec_o,
                                       eps=eps, **params)

    args = [logits, mean, logvar, z]
    loss, terms = f_oracle(*args)
    grads = oracle.numerical_grad(lambda *a: f_oracle(*a)[0], args)
    return dict(x=x, args=args, w=w, b=b, eps=eps, params=params, ae=ae, terms=terms, grads=grads)


def objective_fn(fw: str, idx: int):
    """f(logits, mean, logvar, z) -> (loss, terms) of objective case idx in framework fw."""
    name, likelihood, _ = OBJ_CASES[idx]
    c = objective_case(idx)
    lib = LIB[fw]
    xf, ef, dec = to_fw(fw, c["x"]), to_fw(fw, c["eps"]), linear_decoder(fw, c["w"], c["b"])
    params = {k: to_fw(fw, v) if isinstance(v, np.ndarray | np.floating) else v
              for k, v in c["params"].items()}

    def f(lg, m, lv, zz):
        out = ModelOutput(lg, m, lv, zz) if not c["ae"] else ModelOutput(lg, m, None, m)
        return lib.OBJECTIVES[name](xf, out, likelihood=likelihood, step=STEP, decode=dec, eps=ef,
                                    **params)

    return f


def extreme_inputs(name: str):
    """The base case's inputs with logits +-1e4 and logvar +-50 (DIP-II: +-40, see below)."""
    c = objective_case(OBJ_IDS.index(f"{name}-bernoulli"))
    lv_big = EXTREME_LOGVAR.get(name, 50.0)
    logits = f32(np.tile([1e4, -1e4, 0.0], (B, 2)))
    logvar = f32(np.tile([lv_big, -lv_big, 0.0], (B, 1)))
    return [logits, c["args"][1], logvar, c["args"][3]]


EXTREME_LOGVAR = {"dip_vae_ii": 40.0}  # exp(50)^2 = 2.7e43 exceeds float32: the true value is inf


@functools.lru_cache(maxsize=None)
def objective_results(fw: str):
    """Every objective case, plus every objective at extreme inputs: one JAX compile."""
    jobs = {OBJ_IDS[i]: (objective_fn(fw, i), objective_case(i)["args"]) for i in range(len(OBJ_CASES))}
    for name in sorted(jl.OBJECTIVES):
        base = OBJ_IDS.index(f"{name}-bernoulli")
        jobs[f"extreme:{name}"] = (objective_fn(fw, base), extreme_inputs(name))
    return value_and_grads_many(fw, jobs)


@pytest.mark.parametrize("fw", FRAMEWORKS)
@pytest.mark.parametrize("idx", range(len(OBJ_CASES)), ids=OBJ_IDS)
def test_objective_vs_oracle(fw, idx):
    name = OBJ_CASES[idx][0]
    c = objective_case(idx)
    loss, terms, grads = objective_results(fw)[OBJ_IDS[idx]]
    assert sorted(terms) == sorted(c["terms"]), "term keys differ from the oracle's"
    assert {"loss", "recon", "kl"} <= set(terms)
    assert_close(loss, c["terms"]["loss"], name=f"{fw}:{name} loss", **TOL["per_example_loss"])
    for k, want in c["terms"].items():
        assert_close(terms[k], want, name=f"{fw}:{name} terms[{k}]", **TOL["per_example_loss"])
    want_grads = c["grads"] if not c["ae"] else [c["grads"][0]] + [0 * g for g in c["grads"][1:]]
    for g, want, arg in zip(grads, want_grads, ("logits", "mean", "logvar", "z")):
        assert_close(g, want, name=f"{fw}:d{name}/d{arg}", **TOL["loss_gradients"])


def test_every_objective_has_a_case():
    assert {o for o, _, _ in OBJ_CASES} == set(oracle.OBJECTIVES) == set(jl.OBJECTIVES)


@pytest.mark.parametrize("fw", FRAMEWORKS)
def test_schedules_vs_oracle(fw):
    lib = LIB[fw]
    for step in (0, 1, 17, 50, 99, 100, 101, 250, 399, 400, 1000):
        assert_close(lib.warmup_beta(step, 100), oracle.warmup_beta(step, 100),
                     name=f"{fw}:warmup_beta({step})", rtol=1e-6, atol=0)
        assert_close(lib.cyclical_beta(step, total_steps=400, n_cycles=4, ratio=0.5),
                     oracle.cyclical_beta(step, total_steps=400, n_cycles=4, ratio=0.5),
                     name=f"{fw}:cyclical_beta({step})", rtol=1e-6, atol=0)
        assert_close(lib.capacity_schedule(step, 25.0, 400), oracle.capacity_schedule(step, 25.0, 400),
                     name=f"{fw}:capacity_schedule({step})", rtol=1e-6, atol=0)
    assert float(lib.warmup_beta(5, 0)) == 1.0 and float(lib.capacity_schedule(5, 3.0, 0)) == 3.0


@pytest.mark.parametrize("fw", FRAMEWORKS)
def test_mss_weights_vs_oracle(fw):
    for b, n in ((2, 10), (5, 60000), (7, 7)):
        assert_close(LIB[fw].log_importance_weight_matrix(b, n),
                     oracle.log_importance_weight_matrix(b, n),
                     name=f"{fw}:log_importance_weight_matrix({b},{n})", rtol=1e-6, atol=0)


# ---- hand-derived goldens: the oracle and both frameworks ---------------------------------------
#
# The one home of the losses' hand-derivable values (STYLE §2): logit 0 costs ln 2 per pixel,
# mu = 0, logvar = 0 has KL 0, ... Each golden is asserted on the float64 oracle (which anchors
# the oracle itself to derivations made by hand) and on both frameworks; jaxvae/losses_test.py
# and torchvae/losses_test.py keep single-framework behaviour only. Tolerances are the goldens'
# own (float32 rounding of the stated values), not TOL rows.

IMPLS = ("oracle",) + FRAMEWORKS
LN2 = math.log(2.0)
LOG_2PI = math.log(2.0 * math.pi)


def impl_lib(impl: str):
    return oracle if impl == "oracle" else LIB[impl]


def evaluate(impl: str, fn, **inputs):
    """fn(library, **arrays) -> a pytree of values, evaluated in impl; float64 NumPy leaves.

    The oracle gets the inputs in float64 (hand values such as ln 2 stay exact), the frameworks
    in float32; JAX evaluates fn in one jit (eager JAX compiles every primitive separately).
    """
    if impl == "oracle":
        out = fn(oracle, **{k: np.asarray(a, np.float64) for k, a in inputs.items()})
    elif impl == "jax":
        out = jax.jit(lambda **xs: fn(jl, **xs))(**{k: to_fw(impl, a) for k, a in inputs.items()})
    else:
        out = fn(tl, **{k: to_fw(impl, a) for k, a in inputs.items()})
    return jax.tree.map(to_np, out)


@pytest.mark.parametrize("impl", IMPLS)
def test_reconstruction_goldens(impl):
    x = seeded("golden").uniform(size=(3, 5))
    xm, m = np.array([[0.0, 1.0, 0.5, 0.5]]), np.array([[0.5, 0.5, 0.5, 1.5]])

    def values(L, x, xm, m, one_zero, zero_one, confident, zero, big, ln2, ln2s):
        return {
            "bernoulli(l=0)": L.bernoulli(x, 0.0 * x), "bce(p=.5)": L.bce_probs(x, 0.0 * x + 0.5),
            "cb(l=0)": L.continuous_bernoulli(x, 0.0 * x),
            "right": L.bernoulli(one_zero, confident), "wrong": L.bernoulli(zero, big),
            "clamped": L.bce_probs(one_zero, zero_one),
            "mse_sum": L.mse_sum(xm, m), "mse_mean": L.mse_mean(xm, m),
            "gauss_exact": L.gaussian(xm, xm, sigma=2.0), "gauss": L.gaussian(xm, m, sigma=2.0),
            "learned": L.gaussian_learned(xm, m, log_sigma=ln2),
            "learned_pixel": L.gaussian_learned(xm, m, log_sigma=ln2s),
            "cal_batch": L.gaussian_calibrated(xm, m, calibration="batch"),
            "cal_example": L.gaussian_calibrated(xm, m, calibration="example"),
            "cal_perfect": L.gaussian_calibrated(xm, xm),
        }

    v = evaluate(impl, values, x=x, xm=xm, m=m, one_zero=[[1.0, 0.0]], zero_one=[[0.0, 1.0]],
                 confident=[[30.0, -30.0]], zero=[[0.0]], big=[[1e4]], ln2=LN2, ln2s=np.full(4, LN2))
    # logit 0 <=> p = 1/2: ln 2 per pixel for any target in [0, 1]
    assert_close(v["bernoulli(l=0)"], np.full(3, 5 * LN2), name=f"{impl}:bernoulli(l=0)", rtol=1e-6,
                 atol=0)
    assert_close(v["bce(p=.5)"], np.full(3, 5 * LN2), name=f"{impl}:bce(p=.5)", rtol=1e-6, atol=0)
    # continuous Bernoulli with logit 0 is the uniform density on [0, 1]: NLL 0
    assert_close(v["cb(l=0)"], np.zeros(3), name=f"{impl}:cb(l=0)", rtol=0, atol=1e-7)
    # a confident right answer costs ~0 (2 e^-30; torch's binary_cross_entropy_with_logits rounds
    # log(1 + e^-30) to 0), a confident wrong one ~|logit|
    assert_close(v["right"], [2 * math.exp(-30)], name=f"{impl}:right", rtol=0, atol=1e-12)
    assert_close(v["wrong"], [1e4], name=f"{impl}:wrong", rtol=1e-7, atol=0)
    # PyTorch's clamp: a probability of exactly 0 for a 1 costs 100 nats, not inf
    assert_close(v["clamped"], [200.0], name=f"{impl}:bce clamp", rtol=1e-7, atol=0)
    assert_close(v["mse_sum"], [0.25 + 0.25 + 0 + 1.0], name=f"{impl}:mse_sum", rtol=1e-7, atol=0)
    assert_close(v["mse_mean"], [1.5 / 4], name=f"{impl}:mse_mean", rtol=1e-7, atol=0)
    # x = mean: only the normaliser, log sigma + log(2 pi)/2 per pixel
    assert_close(v["gauss_exact"], [4 * (LN2 + 0.5 * LOG_2PI)], name=f"{impl}:gaussian(x=mean)",
                 rtol=1e-6, atol=0)
    want = 0.5 * 1.5 / 4.0 + 4 * (LN2 + 0.5 * LOG_2PI)  # sigma = 2: sq / (2 * 4)
    for k in ("gauss", "learned", "learned_pixel"):
        assert_close(v[k], [want], name=f"{impl}:{k}", rtol=1e-6, atol=0)
    # calibrated: sigma^2 = MSE -> D/2 * (1 + log(2 pi) + log MSE)
    want_cal = 2.0 * (1.0 + LOG_2PI + math.log(1.5 / 4))
    for k in ("cal_batch", "cal_example"):
        assert_close(v[k], [want_cal], name=f"{impl}:{k}", rtol=1e-6, atol=0)
    # perfect fit: the floor log sigma = -6 instead of -inf
    assert_close(v["cal_perfect"], [4 * (-6.0 + 0.5 * LOG_2PI)], name=f"{impl}:cal_perfect",
                 rtol=1e-6, atol=0)


@pytest.mark.parametrize("impl", IMPLS)
def test_calibrated_gradient_holds_sigma_fixed(impl):
    """d/dmean of the calibrated NLL is -(x - mean) / sigma*^2: the frameworks hold sigma* fixed
    (stop-gradient / detach); the oracle's finite differences agree because sigma* minimises the
    NLL, so d NLL / d sigma = 0 there (the envelope theorem)."""
    # float32-representable, so the oracle's float64 inputs are the frameworks' float32 ones
    x = f32([[0.1, 0.9, 0.4], [0.3, 0.2, 0.8]]).astype(np.float64)
    m = f32([[0.3, 0.5, 0.5], [0.1, 0.6, 0.6]]).astype(np.float64)
    if impl == "oracle":
        (g,) = oracle.numerical_grad(
            lambda mm: float(np.sum(oracle.gaussian_calibrated(x, mm, calibration="example"))), [m])
    else:
        def f(mm, xf=to_fw(impl, x)):
            v = LIB[impl].gaussian_calibrated(xf, mm, calibration="example")
            return v.sum(), {}

        _, _, (g,) = value_and_grads(impl, f, [m])
    var = np.mean((x - m) ** 2, axis=1, keepdims=True)
    assert_close(g, -(x - m) / var, name=f"{impl}:d calibrated / d mean", rtol=1e-5, atol=0)


@pytest.mark.parametrize("impl", IMPLS)
def test_continuous_bernoulli_log_norm_goldens(impl):
    # float32-representable (see test_calibrated_gradient_holds_sigma_fixed)
    l = f32([0.0, -7.0, 7.0, 1e4, -1e9, 0.3, 0.499, 0.501, 2.0]).astype(np.float64)
    got = evaluate(impl, lambda L, l: L.continuous_bernoulli_log_norm(l), l=l)
    # logit 0: the uniform density, log C = log 2
    assert_close(got[0], LN2, name=f"{impl}:log C(0)", rtol=1e-7, atol=0)
    # even in the logit (|log C(-7) - log C(7)| <= 1e-7 log C(7))
    assert_close(got[1] - got[2], 0.0, name=f"{impl}:log C(-7) - log C(7)", rtol=0,
                 atol=1e-7 * abs(got[2]))
    # log C -> log |l| for large |l|
    assert_close(got[3:5], np.log([1e4, 1e9]), name=f"{impl}:log C(large)", rtol=1e-7, atol=0)
    # C(l) = l / tanh(l / 2) on both sides of the Taylor switch at |l| = 0.5
    assert_close(got[5:], np.log(l[5:] / np.tanh(l[5:] / 2)), name=f"{impl}:log C near the switch",
                 rtol=3e-7, atol=0)


@pytest.mark.parametrize("impl", IMPLS)
def test_kl_and_latent_goldens(impl):
    std, mean = np.array([[0.5, 2.0, 1.0]]), np.array([[0.2, -1.0, 0.0]])
    r_mean, r_logvar = np.array([[1.0, -2.0]]), np.array([[0.0, 2.0 * LN2]])
    r_eps = np.array([[[1.0, 1.0]], [[-1.0, 0.5]]])  # (S=2, B=1, D=2)

    def values(L, zeros, zero, ln2, small, std, logvar_of_std, mean, r_mean, r_logvar, r_eps, nats):
        return {
            "zero": L.kl_normal(zeros, zeros), "one": L.kl_normal(zeros + 1.0, zeros),
            "std_one": L.kl_normal_std(zeros + 1.0, zeros + 1.0),
            "var2": L.kl_normal_per_dim(zero, ln2), "collapsed": L.kl_normal_per_dim(zero, small),
            "std": L.kl_normal_std(mean, std), "logvar": L.kl_normal(mean, logvar_of_std),
            "z": L.reparameterize(r_mean, r_logvar, r_eps),
            "kl_mc": L.kl_monte_carlo(r_mean[None], r_mean, r_logvar),
            "bpd": L.bits_per_dim(nats, 2),
        }

    v = evaluate(impl, values, zeros=np.zeros((3, 5)), zero=[[0.0]], ln2=[[LN2]], small=[[1e-3]],
                 std=std, logvar_of_std=2 * np.log(std), mean=mean, r_mean=r_mean,
                 r_logvar=r_logvar, r_eps=r_eps, nats=[2 * LN2, 0.0])
    # KL: mu = 0, logvar = 0 -> 0; mu = 1, logvar = 0 (std 1) -> 1/2 per latent dimension
    assert_close(v["zero"], np.zeros(3), name=f"{impl}:kl(0,0)", rtol=0, atol=0)
    assert_close(v["one"], np.full(3, 2.5), name=f"{impl}:kl(1,0)", rtol=1e-7, atol=0)
    assert_close(v["std_one"], np.full(3, 2.5), name=f"{impl}:kl_std(1,1)", rtol=1e-7, atol=0)
    # variance 2: (2 - 1 - ln 2) / 2
    assert_close(v["var2"], [[0.5 * (2.0 - 1.0 - LN2)]], name=f"{impl}:kl(var 2)", rtol=1e-6, atol=0)
    # the std form is the log-variance form at logvar = 2 log std
    assert_close(v["std"], v["logvar"], name=f"{impl}:kl_std vs kl(2 log std)", rtol=1e-6, atol=0)
    want = 0.5 * np.sum(std ** 2 + mean ** 2 - 1.0 - 2.0 * np.log(std), axis=-1)
    assert_close(v["std"], want, name=f"{impl}:kl_std", rtol=1e-6, atol=0)
    # a near-collapsed dimension keeps its digits: KL ~ logvar^2 / 4
    assert_close(v["collapsed"], [[(math.expm1(1e-3) - 1e-3) / 2]], name=f"{impl}:kl(collapsed)",
                 rtol=1e-3, atol=0)
    # z = mean + exp(logvar / 2) eps (the oracle's float64 exp(ln 2) is 2 + 4e-16: atol 1e-12)
    assert_close(v["z"], [[[2.0, 0.0]], [[0.0, -1.0]]], name=f"{impl}:reparameterize", rtol=1e-6,
                 atol=1e-12)
    # at z = mean, log q - log p = -logvar/2 + mean^2/2 per dim
    assert_close(v["kl_mc"], [[-LN2 + 0.5 + 2.0]], name=f"{impl}:kl_monte_carlo(z=mean)", rtol=1e-6,
                 atol=0)
    assert_close(v["bpd"], [1.0, 0.0], name=f"{impl}:bits_per_dim", rtol=1e-6, atol=0)
    # on Python numbers, eagerly (as evaluation code calls it)
    assert_close(impl_lib(impl).bits_per_dim(784 * LN2, 784), 1.0, name=f"{impl}:bits_per_dim(784 ln 2)",
                 rtol=1e-12, atol=0)


@pytest.mark.parametrize("impl", IMPLS)
def test_kl_at_extreme_logvar(impl):
    """logvar +-50: the closed-form value; finite gradients (frameworks)."""
    mean, logvar = np.array([[0.0, 3.0]]), np.array([[50.0, -50.0]])
    want = 0.5 * (math.exp(50) - 51.0) + 0.5 * (math.exp(-50) + 9 - 1 + 50)
    if impl == "oracle":
        v = float(np.sum(oracle.kl_normal(mean, logvar)))
    else:
        def f(m, lv):
            return LIB[impl].kl_normal(m, lv).sum(), {}

        v, _, grads = value_and_grads(impl, f, [f32(mean), f32(logvar)])
        assert all(np.all(np.isfinite(g)) for g in grads), grads
    assert_close(v, want, name=f"{impl}:kl(logvar +-50)", rtol=1e-6, atol=0)


@pytest.mark.parametrize("impl", IMPLS)
def test_schedule_goldens(impl):
    L = impl_lib(impl)
    for step, want in [(0, 0.0), (50, 0.5), (100, 1.0), (1000, 1.0)]:
        assert float(L.warmup_beta(step, 100)) == pytest.approx(want), step
    assert float(L.warmup_beta(0, 0)) == 1.0
    for step, want in [(0, 0.0), (25, 0.5), (50, 1.0), (99, 1.0), (100, 0.0), (125, 0.5), (399, 1.0)]:
        assert float(L.cyclical_beta(step, cycle_steps=100, ratio=0.5)) == pytest.approx(want), step
        assert float(L.cyclical_beta(step, total_steps=400, n_cycles=4)) == pytest.approx(want), step
    assert float(L.capacity_schedule(50, 25.0, 100)) == pytest.approx(12.5)
    assert float(L.capacity_schedule(500, 25.0, 100)) == pytest.approx(25.0)


@pytest.mark.parametrize("impl", IMPLS)
def test_mss_weight_goldens(impl):
    """Minibatch stratified sampling: rows sum to 1, 1/N on the diagonal, (N - M) / (N M) next
    to it (M = B - 1)."""
    n, b = 1000, 5
    w = np.exp(to_np(impl_lib(impl).log_importance_weight_matrix(b, n)))
    assert_close(w.sum(axis=1), np.ones(b), name=f"{impl}:row sums", rtol=1e-6, atol=0)
    assert_close(np.diag(w), np.full(b, 1.0 / n), name=f"{impl}:diagonal", rtol=1e-6, atol=0)
    strat = (n - (b - 1)) / (n * (b - 1))
    assert_close(np.array([w[i, (i + 1) % b] for i in range(b)]), np.full(b, strat),
                 name=f"{impl}:stratum weights", rtol=1e-6, atol=0)


@pytest.mark.parametrize("impl", IMPLS)
def test_tc_decomposition_with_identical_posteriors(impl):
    """Identical posteriors: q(z) = q(z|x) exactly. MSS gets MI = TC = 0; MWS has its fixed offsets
    MI = log N and TC = (D - 1) log N. The three terms always sum to the Monte-Carlo KL."""
    n, b, d = 500, 6, 3
    rng = np.random.default_rng(3)
    mean = np.tile(f32(rng.normal(size=(1, d))), (b, 1))
    logvar = np.tile(f32(rng.normal(size=(1, d))), (b, 1))
    z = f32(mean + np.exp(0.5 * logvar) * f32(rng.normal(size=(b, d))))

    def values(L, z, mean, logvar):
        return {s: L.tc_decomposition(z, mean, logvar, dataset_size=n, sampling=s)
                for s in ("mss", "mws")}, L.kl_monte_carlo(z, mean, logvar)

    res, kl_mc = evaluate(impl, values, z=z, mean=mean, logvar=logvar)
    for sampling, mi_want, tc_want in [("mss", 0.0, 0.0), ("mws", math.log(n), (d - 1) * math.log(n))]:
        t = res[sampling]
        assert_close(t["log_qz_x"] - t["log_qz"], np.full(b, mi_want), name=f"{impl}:{sampling} MI",
                     rtol=1e-7, atol=2e-5)
        assert_close(t["log_qz"] - t["log_prod_qzi"], np.full(b, tc_want),
                     name=f"{impl}:{sampling} TC", rtol=1e-7, atol=5e-5)
        assert_close(t["log_qz_x"] - t["log_pz"], kl_mc, name=f"{impl}:{sampling} MI + TC + dw-KL",
                     rtol=1e-6, atol=1e-6)


@pytest.mark.parametrize("impl", IMPLS)
def test_mmd_and_dip_goldens(impl):
    z = f32(np.random.default_rng(4).normal(size=(8, 2)))

    def values(L, z, zz, eye, cov):
        mmds = {k: (L.mmd(z, z, kernel=k), L.mmd(z, zz, kernel=k), L.mmd(z, z + 3.0, kernel=k))
                for k in ("rbf", "imq")}
        return mmds, L.dip_penalties(eye), L.dip_penalties(cov)

    mmds, (off0, dg0), (off, dg) = evaluate(impl, values, z=z, zz=np.concatenate([z, z]),
                                            eye=np.eye(3), cov=[[2.0, 0.5], [0.5, 1.0]])
    for kernel, (same, dup, shifted) in mmds.items():
        assert abs(float(same)) < 1e-6, (impl, kernel)  # same samples: 0
        assert abs(float(dup)) < 1e-6, (impl, kernel)  # V-statistic: duplicating a set changes nothing
        assert float(shifted) > 0.1, (impl, kernel)
    assert float(off0) == 0.0 and float(dg0) == 0.0
    # off-diagonal 2 * 0.5^2; diagonal (2 - 1)^2 + (1 - 1)^2
    assert float(off) == pytest.approx(0.5) and float(dg) == pytest.approx(1.0)


@pytest.mark.parametrize("impl", IMPLS)
def test_capacity_penalises_the_batch_mean_kl(impl):
    """gamma |mean_b KL_b - C|, not mean_b |KL_b - C|: KL = (0.5, 2), C = 1 -> 0.25 gamma."""

    def values(L, x, logits, mean, logvar):
        return L.capacity(x, ModelOutput(logits, mean, logvar, None), likelihood="bernoulli",
                          gamma=2.0, c_max=1.0, c_steps=0)

    loss, terms = evaluate(impl, values, x=np.full((2, 3), 0.5), logits=np.zeros((2, 3)),
                           mean=[[1.0, 0.0], [2.0, 0.0]], logvar=np.zeros((2, 2)))
    assert_close(terms["kl"], 1.25, name=f"{impl}:capacity kl", rtol=1e-6, atol=0)
    assert_close(loss, 3 * LN2 + 2.0 * 0.25, name=f"{impl}:capacity loss", rtol=1e-6, atol=0)


# ---- extremes -----------------------------------------------------------------------------------


EXTREME_X = f32([[1.0, 0.0, 0.0, 1.0, 0.3, 0.7]])


def extreme_logits(big: float):
    return f32([[big, -big, big, -big, 0.5, -3.0]])


@functools.lru_cache(maxsize=None)
def extreme_logit_results(fw: str):
    jobs = {}
    for big in (1e4, 1e9):
        for name in sorted(jl.RECONSTRUCTION):
            params = {k: to_fw(fw, v) if isinstance(v, np.ndarray) else v
                      for k, v in RECON_PARAMS.get(name, {}).items()}

            def f(lg, name=name, params=params):
                v = LIB[fw].reconstruction_nll(to_fw(fw, EXTREME_X), lg, name, **params)
                return v.sum(), {"v": v}

            jobs[f"{name}:{big:g}"] = (f, [extreme_logits(big)])
    return value_and_grads_many(fw, jobs)


@pytest.mark.parametrize("fw", FRAMEWORKS)
@pytest.mark.parametrize("big", [1e4, 1e9])
def test_extreme_logits(fw, big):
    """Logits of +-1e4 / +-1e9: finite values equal to the oracle, finite gradients."""
    for name in sorted(jl.RECONSTRUCTION):
        _, aux, (g,) = extreme_logit_results(fw)[f"{name}:{big:g}"]
        assert np.all(np.isfinite(aux["v"])) and np.all(np.isfinite(g)), (name, aux["v"], g)
        want = oracle.reconstruction_nll(EXTREME_X, extreme_logits(big), name,
                                         **RECON_PARAMS.get(name, {}))
        assert_close(aux["v"], want, name=f"{fw}:{name}(+-{big:g})", **TOL["per_example_loss"])


@pytest.mark.parametrize("fw", FRAMEWORKS)
@pytest.mark.parametrize("name", sorted(jl.OBJECTIVES))
def test_objectives_finite_at_extremes(fw, name):
    """logvar +-50 (and logits +-1e4): finite loss, terms and gradients for every objective, and
    loss / recon / kl equal to the oracle's."""
    loss, terms, grads = objective_results(fw)[f"extreme:{name}"]
    assert np.isfinite(loss), loss
    assert all(np.all(np.isfinite(t)) for t in terms.values()), terms
    assert all(np.all(np.isfinite(g)) for g in grads), grads
    c = objective_case(OBJ_IDS.index(f"{name}-bernoulli"))
    _, want = oracle.OBJECTIVES[name](c["x"], ModelOutput(*extreme_inputs(name)), likelihood="bernoulli",
                                      step=STEP, decode=linear_decoder("oracle", c["w"], c["b"]),
                                      eps=c["eps"], **c["params"])
    for k in ("loss", "recon", "kl"):
        assert_close(terms[k], want[k], name=f"{fw}:{name} extreme {k}", **TOL["per_example_loss"])


# ---- continuous Bernoulli: the oracle's own truth, then both frameworks near the switch ---------


def test_oracle_continuous_bernoulli_is_a_normalised_density():
    # logit form == the paper's lambda form where the latter is accurate in float64
    # (for |l| > ~10 the lambda form itself loses digits: 1 - 2 lambda cancels, artanh -> inf)
    l = np.array([-10.0, -5.0, -0.3, -1e-3, 1e-3, 0.1, 2.0, 10.0])
    lam = 1.0 / (1.0 + np.exp(-l))
    np.testing.assert_allclose(oracle.continuous_bernoulli_log_norm(l),
                               oracle.continuous_bernoulli_log_norm_lambda(lam), rtol=1e-9)
    # integral over x in [0, 1] of exp(-NLL) = 1 (Gauss-Legendre, exact to float64 here)
    nodes, weights = np.polynomial.legendre.leggauss(200)
    xs = (nodes + 1.0) / 2.0
    for logit in (-50.0, -4.0, -0.5, -1e-5, 0.0, 0.05, 0.5, 3.0, 20.0):
        dens = np.exp(-oracle.continuous_bernoulli(xs[:, None], np.full((200, 1), logit)))
        assert abs(np.sum(weights * dens) / 2.0 - 1.0) < 1e-9, logit


@pytest.mark.parametrize("fw", FRAMEWORKS)
def test_continuous_bernoulli_log_norm_near_the_taylor_switch(fw):
    edges = [0.4999999, 0.5, 0.5000001, -0.5, 1e-7, -1e-30]
    l = f32(np.concatenate([np.linspace(-1.5, 1.5, 301), edges]))
    got = to_np(compiled(fw, LIB[fw].continuous_bernoulli_log_norm)(to_fw(fw, l)))
    want = oracle.continuous_bernoulli_log_norm(l)
    assert_close(got, want, name=f"{fw}:cb_log_norm near 0", rtol=4e-7, atol=0)  # direct: <3 ulp
    # The Taylor branch (|l| < 0.5) is correctly rounded to 0.6 ulp; series truncated one term
    # early would be off by 2.4 ulp (1.4e-7) at the switch: 8e-8 (1.4 ulp) tells them apart.
    taylor = np.abs(l) < 0.5
    assert_close(got[taylor], want[taylor], name=f"{fw}:cb_log_norm Taylor branch", rtol=8e-8, atol=0)


# ---- hypothesis: elementwise terms over wide input ranges ---------------------------------------

N_HYP = 8
_wide = st.lists(st.floats(-1e4, 1e4, width=32), min_size=N_HYP, max_size=N_HYP)
_unit = st.lists(st.floats(0.0, 1.0, width=32), min_size=N_HYP, max_size=N_HYP)


ELEMENTWISE = {  # jitted once (fixed shapes): hypothesis calls them many times
    ("jax", "bernoulli"): jax.jit(jl.bernoulli),
    ("jax", "continuous_bernoulli"): jax.jit(jl.continuous_bernoulli),
    ("jax", "kl_normal_per_dim"): jax.jit(jl.kl_normal_per_dim),
    ("torch", "bernoulli"): tl.bernoulli,
    ("torch", "continuous_bernoulli"): tl.continuous_bernoulli,
    ("torch", "kl_normal_per_dim"): tl.kl_normal_per_dim,
}


@settings(max_examples=30, deadline=None)
@given(logits=_wide, x=_unit)
def test_property_bernoulli_terms_vs_oracle(logits, x):
    lg, xx = f32([logits]).T, f32([x]).T  # (8, 1): one pixel per example
    for fw in FRAMEWORKS:
        for name in ("bernoulli", "continuous_bernoulli"):
            got = ELEMENTWISE[fw, name](to_fw(fw, xx), to_fw(fw, lg))
            # atol: x * l is rounded to float32 inside the frameworks (|l| up to 1e4 -> ~1e-3)
            assert_close(got, getattr(oracle, name)(xx, lg), name=f"{fw}:{name}", rtol=1e-6,
                         atol=1e-6 * float(np.max(np.abs(lg))) + 1e-6)


@settings(max_examples=30, deadline=None)
@given(mean=st.lists(st.floats(-20, 20, width=32), min_size=N_HYP, max_size=N_HYP),
       logvar=st.lists(st.floats(-50, 50, width=32), min_size=N_HYP, max_size=N_HYP))
def test_property_kl_vs_oracle(mean, logvar):
    m, lv = f32([mean]), f32([logvar])
    want = oracle.kl_normal_per_dim(m, lv)
    assert np.all(want >= 0)
    for fw in FRAMEWORKS:
        got = ELEMENTWISE[fw, "kl_normal_per_dim"](to_fw(fw, m), to_fw(fw, lv))
        assert_close(got, want, name=f"{fw}:kl_normal_per_dim", rtol=1e-6, atol=1e-6)


# ---- estimators vs a model with a closed-form likelihood ----------------------------------------


def linear_gaussian_model(rng, *, p=5, d=2, s=0.5, orthogonal=False):
    w = rng.normal(size=(p, d))
    if orthogonal:  # W^T W diagonal -> the exact posterior is mean-field
        q, _ = np.linalg.qr(w)
        w = q * np.array([1.5, 0.7])[:d]
    return f32(w), f32(rng.normal(size=(p,)) * 0.5), s


def gaussian_identity_likelihood(fw, s):
    # The decoder output is the Gaussian mean itself: pass it through as "logits" (no sigmoid).
    if fw == "oracle":
        return (functools.partial(oracle.gaussian, sigma=s), "logits")
    return (functools.partial(LIB[fw].gaussian, sigma=s), "logits")


def iw_log_likelihood(fw, x, mean, logvar, eps, w, b, s):
    dec = linear_decoder(fw, w.T, b)  # z (N, d) -> z W^T + b
    lik = gaussian_identity_likelihood(fw, s)
    fn = functools.partial(LIB[fw].importance_sampled_log_likelihood, decode=dec, likelihood=lik)
    if fw == "jax":
        fn = jax.jit(fn)  # one compile per shape instead of one per primitive
    return to_np(fn(to_fw(fw, x), to_fw(fw, mean), to_fw(fw, logvar), to_fw(fw, eps)))


@pytest.mark.parametrize("fw", FRAMEWORKS)
def test_importance_sampling_exact_with_exact_posterior(fw):
    """q(z|x) = p(z|x) makes every weight equal to p(x): the estimate is exact for any k."""
    rng = seeded("exact-posterior")
    w, b, s = linear_gaussian_model(rng, orthogonal=True)
    x = f32(rng.normal(size=(6, 5)) + b)
    m, cov = oracle.linear_gaussian_posterior(x, w, b, s)
    assert np.allclose(cov, np.diag(np.diag(cov)), atol=1e-6)
    logvar = np.tile(np.log(np.diag(cov)), (6, 1))
    eps = rng.normal(size=(3, 6, 2))
    got = iw_log_likelihood(fw, x, m, logvar, eps, w, b, s)
    assert_close(got, oracle.linear_gaussian_log_px(x, w, b, s), name=f"{fw}:log p(x) exact q",
                 rtol=1e-5, atol=1e-5)


@pytest.mark.parametrize("fw", FRAMEWORKS)
def test_iwae_bound_increases_with_k_towards_log_px(fw):
    """Mean-field q with its mean shifted by one posterior sd and its variance doubled (the exact
    posterior is correlated too): the k-sample bound rises with k in expectation and approaches
    log p(x). E[bound_k] is estimated from one pool of 4096 samples per x split into 4096/k
    groups of k, so the estimates for different k share samples and their differences are
    far less noisy than the levels (checked over seeds: smallest rise 0.007, noise ~1e-3)."""
    rng = seeded("iwae-k")
    w, b, s = linear_gaussian_model(rng)
    n_x, pool = 4, 4096
    x0 = f32(rng.normal(size=(n_x, 5)) * 0.5 + b)
    m, cov = oracle.linear_gaussian_posterior(x0, w, b, s)
    mean = f32(m + np.sqrt(np.diag(cov)))
    logvar = f32(np.tile(np.log(2.0 * np.diag(cov)), (n_x, 1)))
    log_px = oracle.linear_gaussian_log_px(x0, w, b, s)
    eps = f32(rng.normal(size=(pool, n_x, 2)))
    bounds = []
    for k in (1, 4, 16, 64, 256):
        r = pool // k  # replicates, folded into the batch axis: (k, r * n_x, 2)
        e = eps.reshape(k, r * n_x, 2)
        tile = lambda a: np.tile(a, (r, 1))  # noqa: E731
        est = iw_log_likelihood(fw, tile(x0), tile(mean), tile(logvar), e, w, b, s)
        bounds.append(est.reshape(r, n_x).mean(axis=0))
    bounds = np.array(bounds)  # (5, n_x)
    gaps = log_px[None, :] - bounds
    assert np.all(np.diff(bounds, axis=0) > 1e-3), bounds  # monotone in k, with a margin
    assert np.all(gaps[0] > 0.5), gaps  # the ELBO (k = 1) is far below log p(x)
    assert np.all(np.abs(gaps[-1]) < 0.1) and np.all(np.abs(gaps[-1]) < gaps[0] / 10), gaps


@pytest.mark.parametrize("fw", FRAMEWORKS)
def test_kl_monte_carlo_converges_as_one_over_sqrt_n(fw):
    """Averages of the first n single-sample estimates (64 independent runs): the RMS error
    against the closed form falls ~4x per 16x samples."""
    rng = seeded("mc-kl")
    mean, logvar = f32([[0.8, -1.2, 0.1]]), f32([[-0.5, 0.7, -2.0]])
    exact = oracle.kl_normal(mean, logvar)[0]
    lib = LIB[fw]
    eps = to_fw(fw, rng.normal(size=(64, 4096, 1, 3)))
    z = lib.reparameterize(to_fw(fw, mean), to_fw(fw, logvar), eps)
    per_sample = to_np(lib.kl_monte_carlo(z, to_fw(fw, mean), to_fw(fw, logvar)))[..., 0]  # (64, 4096)
    rms = [np.sqrt(np.mean((per_sample[:, :n].mean(axis=1) - exact) ** 2)) for n in (16, 256, 4096)]
    ratios = np.array(rms[:-1]) / np.array(rms[1:])  # expected sqrt(16) = 4 each
    assert np.all((ratios > 2.5) & (ratios < 6.5)), (rms, ratios)
    assert rms[-1] < 0.05


# ---- the source notes' mistakes ------------------------------------------------------------------


def wrong_book_kl(mu, std):
    """The flashcards' KL: -0.5 * sum(1 + std**2 - mu**2 - exp(std)) (std used as log-variance)."""
    return -0.5 * np.sum(1.0 + std ** 2 - mu ** 2 - np.exp(std), axis=-1)


@pytest.mark.parametrize("fw", FRAMEWORKS)
def test_mistake_wrong_book_kl(fw):
    """The wrong KL disagrees with the closed form and with a Monte-Carlo estimate; the library's
    std form agrees with both."""
    rng = seeded("wrong-kl")
    mu, std = f32([[0.2, 0.3], [0.0, 0.0]]), f32([[0.1, 0.1], [1.0, 1.0]])  # the card's example + N(0,1)
    exact = oracle.kl_normal_std(mu, std)
    eps = rng.normal(size=(200_000, 2, 2))
    z = mu + std * eps
    mc = oracle.kl_monte_carlo(z, mu, 2 * np.log(std))
    mc_mean, mc_se = mc.mean(axis=0), mc.std(axis=0) / np.sqrt(len(mc))
    lib_kl = to_np(LIB[fw].kl_normal_std(to_fw(fw, mu), to_fw(fw, std)))
    assert np.all(np.abs(lib_kl - exact) < 1e-5)
    assert np.all(np.abs(mc_mean - exact) < 4 * mc_se + 1e-9)
    wrong = wrong_book_kl(mu.astype(np.float64), std.astype(np.float64))
    assert np.all(np.abs(wrong - exact) > 0.3), (wrong, exact)  # q = N(0,1) even gets 0.36, not 0
    assert np.all(np.abs(wrong - mc_mean) > 100 * mc_se)


@pytest.mark.parametrize("fw", FRAMEWORKS)
def test_mistake_logvar_used_as_scale(fw):
    """z = mu + logvar * eps (the leaky notebook) has variance logvar^2, not exp(logvar): at
    logvar = 0 the posterior collapses to a point; the library's z = mu + exp(logvar/2) * eps
    has the right variance and its Monte-Carlo KL matches the closed form."""
    rng = seeded("logvar-scale")
    lib = LIB[fw]
    mean, logvar = f32([[0.5, -1.0, 0.0]]), f32([[0.0, -2.0, 1.0]])
    eps = f32(rng.normal(size=(100_000, 1, 3)))
    right = to_np(lib.reparameterize(to_fw(fw, mean), to_fw(fw, logvar), to_fw(fw, eps)))
    wrong = mean + logvar * eps
    np.testing.assert_allclose(right.var(axis=0)[0], np.exp(logvar[0]), rtol=0.02)
    assert wrong.var(axis=0)[0, 0] == 0.0  # logvar = 0 -> no noise at all
    np.testing.assert_allclose(wrong.var(axis=0)[0], logvar[0] ** 2, rtol=0.02)
    assert np.all(np.abs(wrong.var(axis=0)[0] - np.exp(logvar[0])) > 0.2)
    kl = oracle.kl_normal(mean, logvar)[0]
    mc_right = to_np(lib.kl_monte_carlo(to_fw(fw, right), to_fw(fw, mean), to_fw(fw, logvar))).mean()
    assert abs(mc_right - kl) < 0.02
    with np.errstate(divide="ignore", invalid="ignore"):
        mc_wrong = oracle.kl_monte_carlo(wrong[:, :, 1:], mean[:, 1:], logvar[:, 1:]).mean()
    assert abs(mc_wrong - oracle.kl_normal(mean[:, 1:], logvar[:, 1:])[0]) > 0.5


def test_mistake_bce_on_raw_decoder_output():
    """A decoder without its sigmoid fed to probability BCE: PyTorch's F.binary_cross_entropy
    raises for outputs outside [0, 1], both twins' bce_probs return NaN (JAX cannot raise under
    jit), and raw outputs that happen to lie in [0, 1] give silently wrong numbers (not the
    Bernoulli NLL of those logits)."""
    raw = f32([[-0.3, 0.4, 1.7, 0.2]])
    x = f32([[0.0, 1.0, 1.0, 0.0]])
    with pytest.raises(RuntimeError, match="between 0 and 1"):
        F.binary_cross_entropy(torch.tensor(raw), torch.tensor(x))
    assert np.isnan(to_np(tl.bce_probs(torch.tensor(x), torch.tensor(raw)))).all()
    assert np.isnan(to_np(jl.bce_probs(jnp.asarray(x), jnp.asarray(raw)))).all()
    inside = f32([[0.3, 0.4, 0.9, 0.2]])
    for fw in FRAMEWORKS:
        as_probs = to_np(LIB[fw].bce_probs(to_fw(fw, x), to_fw(fw, inside)))
        as_logits = to_np(LIB[fw].bernoulli(to_fw(fw, x), to_fw(fw, inside)))
        assert np.isfinite(as_probs).all() and abs(as_probs - as_logits).max() > 0.3
        # the registry routes "probs" terms through the sigmoid, so raw logits are always safe:
        via_registry = to_np(LIB[fw].reconstruction_nll(to_fw(fw, x), to_fw(fw, raw), "bce_probs"))
        assert_close(via_registry, oracle.bernoulli(x, raw), name=f"{fw}:bce_probs(sigmoid(raw))",
                     **TOL["per_example_loss"])


def test_mistake_mean_reduced_bce_plus_summed_kl():
    """The flashcards' F.binary_cross_entropy(recon, x) (default: mean over batch AND pixels) +
    a summed KL is beta-VAE with an implicit beta = B * D, divided by B * D."""
    rng = seeded("mean-bce")
    b, d = 8, 12
    probs = torch.tensor(f32(rng.uniform(0.05, 0.95, size=(b, d))))
    x = torch.tensor(f32(rng.uniform(size=(b, d))))
    mu, logvar = torch.tensor(f32(rng.normal(size=(b, 2)))), torch.tensor(f32(rng.normal(size=(b, 2))))
    kl_sum = -0.5 * torch.sum(1 + logvar - mu.pow(2) - logvar.exp())
    notebook = F.binary_cross_entropy(probs, x) + kl_sum
    out = ModelOutput(torch.logit(probs.double()).float(), mu, logvar, mu)
    implicit, _ = tl.beta_vae(x, out, likelihood="bce_probs", reduction="sum", beta=b * d)
    assert_close(notebook, implicit / (b * d), name="notebook loss", rtol=1e-5, atol=0)
