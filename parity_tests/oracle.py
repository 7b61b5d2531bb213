"""Float64 NumPy implementation of the loss specification: the only truth the parity tests use.

Written from the formulas of the specification in jaxvae/losses.py's docstring, not from either
framework, and on purpose in a different form where one exists (softplus instead of log-sigmoid, the
z-form of log q(z|x), explicit weight matrices for both TC estimators, np.cov for DIP), so a
shared slip in `jaxvae.losses` / `torchvae.losses` cannot hide behind an identical oracle.
Values only: oracle gradients come from central finite differences of these functions
(`numerical_grad`). Public names mirror the library's.
"""

from __future__ import annotations

import math
from typing import Callable

import numpy as np

LOG_2PI = math.log(2.0 * math.pi)


def _f64(a):
    return None if a is None else np.asarray(a, dtype=np.float64)


def _sum_per_example(t: np.ndarray) -> np.ndarray:
    return t.reshape(t.shape[0], -1).sum(axis=1)


def logsumexp(a: np.ndarray, axis: int) -> np.ndarray:
    m = np.max(a, axis=axis, keepdims=True)
    m = np.where(np.isfinite(m), m, 0.0)
    return np.squeeze(m, axis=axis) + np.log(np.sum(np.exp(a - m), axis=axis))


def reduce_batch(per_example: np.ndarray, reduction: str = "mean") -> float:
    if reduction == "mean":
        return float(np.mean(per_example))
    if reduction == "sum":
        return float(np.sum(per_example))
    raise ValueError(reduction)


def sigmoid(l: np.ndarray) -> np.ndarray:
    e = np.exp(-np.abs(_f64(l)))  # never overflows
    return np.where(_f64(l) >= 0, 1.0 / (1.0 + e), e / (1.0 + e))


# ---- reconstruction terms (B,) -----------------------------------------------------------------


def bernoulli(x, logits):
    """sum softplus(l) - x l  (= -x log sigmoid(l) - (1 - x) log(1 - sigmoid(l)))."""
    x, l = _f64(x), _f64(logits)
    return _sum_per_example(np.logaddexp(0.0, l) - x * l)


def bce_probs(x, probs):
    """PyTorch's F.binary_cross_entropy: log terms clamped at -100; NaN where p or x is outside
    [0, 1] (F.binary_cross_entropy raises there; the spec says NaN, which jit can return)."""
    x, p = _f64(x), _f64(probs)
    with np.errstate(divide="ignore", invalid="ignore"):
        log_p = np.log(p)
        log_1mp = np.log1p(-p)
        per_pixel = -(x * np.maximum(log_p, -100.0) + (1.0 - x) * np.maximum(log_1mp, -100.0))
    valid = (p >= 0) & (p <= 1) & (x >= 0) & (x <= 1)  # False for NaN
    return _sum_per_example(np.where(valid, per_pixel, np.nan))


def bce_probs_grad_torch_rule(x, probs):
    """PyTorch's documented backward of F.binary_cross_entropy w.r.t. p (elementwise)."""
    x, p = _f64(x), _f64(probs)
    return (p - x) / np.maximum(p * (1.0 - p), 1e-12)


def mse_sum(x, mean):
    return _sum_per_example((_f64(x) - _f64(mean)) ** 2)


def mse_mean(x, mean):
    mean = _f64(mean)
    return mse_sum(x, mean) / np.prod(mean.shape[1:])


def _gauss(x, mean, var):
    """-log N(x; mean, var) summed per example."""
    x, mean = _f64(x), _f64(mean)
    var = np.broadcast_to(_f64(var), x.shape)
    return _sum_per_example(0.5 * np.log(2.0 * np.pi * var) + (x - mean) ** 2 / (2.0 * var))


def gaussian(x, mean, *, sigma=1.0):
    return _gauss(x, mean, float(sigma) ** 2)


def gaussian_learned(x, mean, *, log_sigma):
    return _gauss(x, mean, np.exp(2.0 * _f64(log_sigma)))


def gaussian_calibrated(x, mean, *, calibration="batch", min_log_sigma=-6.0):
    sq = (_f64(x) - _f64(mean)) ** 2
    if calibration == "batch":
        var = np.mean(sq)
    elif calibration == "example":
        var = sq.reshape(sq.shape[0], -1).mean(axis=1).reshape((-1,) + (1,) * (sq.ndim - 1))
    else:
        raise ValueError(calibration)
    return _gauss(x, mean, np.maximum(var, math.exp(2.0 * min_log_sigma)))


def continuous_bernoulli_log_norm(logits):
    """log C = log(l / tanh(l / 2)) (log 2 at l = 0), accurate in float64 for every l != 0."""
    l = _f64(logits)
    safe = np.where(l == 0.0, 1.0, l)
    return np.where(l == 0.0, math.log(2.0), np.log(safe / np.tanh(safe / 2.0)))


def continuous_bernoulli_log_norm_lambda(lam):
    """The paper's form log(2 artanh(1 - 2 lam) / (1 - 2 lam)) (lam != 0.5), for cross-checks."""
    lam = _f64(lam)
    t = 1.0 - 2.0 * lam
    return np.log(2.0 * np.arctanh(t) / t)


def continuous_bernoulli(x, logits):
    return bernoulli(x, logits) - _sum_per_example(continuous_bernoulli_log_norm(logits))


RECONSTRUCTION: dict[str, tuple[Callable, str]] = {
    "bernoulli": (bernoulli, "logits"),
    "bce_probs": (bce_probs, "probs"),
    "mse_sum": (mse_sum, "probs"),
    "mse_mean": (mse_mean, "probs"),
    "gaussian": (gaussian, "probs"),
    "gaussian_learned": (gaussian_learned, "probs"),
    "gaussian_calibrated": (gaussian_calibrated, "probs"),
    "continuous_bernoulli": (continuous_bernoulli, "logits"),
}


def reconstruction_nll(x, logits, likelihood, **params):
    fn, kind = RECONSTRUCTION[likelihood] if isinstance(likelihood, str) else likelihood
    logits = _f64(logits)
    x = _f64(x).reshape(logits.shape)
    return fn(x, sigmoid(logits) if kind == "probs" else logits, **params)


# ---- Gaussian latents -------------------------------------------------------------------------


def reparameterize(mean, logvar, eps):
    return _f64(mean) + np.sqrt(np.exp(_f64(logvar))) * _f64(eps)


def log_normal_pdf(x, mean, logvar):
    x, mean, logvar = _f64(x), _f64(mean), _f64(logvar)
    var = np.exp(logvar)
    return -0.5 * np.log(2.0 * np.pi * var) - (x - mean) ** 2 / (2.0 * var)


def kl_normal_per_dim(mean, logvar):
    mean, logvar = _f64(mean), _f64(logvar)
    return -0.5 * (1.0 + logvar - mean ** 2 - np.exp(logvar))


def kl_normal(mean, logvar):
    return _sum_per_example(kl_normal_per_dim(mean, logvar))


def kl_normal_std(mean, std):
    return kl_normal(mean, 2.0 * np.log(_f64(std)))


def kl_monte_carlo(z, mean, logvar):
    return np.sum(log_normal_pdf(z, mean, logvar) - log_normal_pdf(z, 0.0, 0.0), axis=-1)


# ---- estimators -------------------------------------------------------------------------------


def _log_weight_parts(x, mean, logvar, eps, decode, likelihood, **params):
    mean, logvar, eps = _f64(mean), _f64(logvar), _f64(eps)
    k, b, d = eps.shape
    z = reparameterize(mean, logvar, eps)
    logits = _f64(decode(z.reshape(k * b, d)))
    x = _f64(x).reshape((1, b) + logits.shape[1:])
    x_rep = np.broadcast_to(x, (k,) + x.shape[1:]).reshape(logits.shape)
    log_px_z = -reconstruction_nll(x_rep, logits, likelihood, **params).reshape(k, b)
    log_pz = np.sum(log_normal_pdf(z, 0.0, 0.0), axis=-1)
    log_qz_x = np.sum(log_normal_pdf(z, mean, logvar), axis=-1)  # z-form, unlike the library
    return log_px_z, log_pz, log_qz_x


def log_importance_weights(x, mean, logvar, eps, decode, likelihood="bernoulli", **params):
    a, b, c = _log_weight_parts(x, mean, logvar, eps, decode, likelihood, **params)
    return a + b - c


def importance_sampled_log_likelihood(x, mean, logvar, eps, decode, likelihood="bernoulli",
                                      **params):
    lw = log_importance_weights(x, mean, logvar, eps, decode, likelihood, **params)
    return logsumexp(lw, axis=0) - math.log(lw.shape[0])


def importance_sampled_nll(x, mean, logvar, eps, decode, likelihood="bernoulli", **params):
    return -importance_sampled_log_likelihood(x, mean, logvar, eps, decode, likelihood, **params)


def elbo_terms(x, out, likelihood, **params):
    recon = reconstruction_nll(x, out.logits, likelihood, **params)
    kl = np.zeros_like(recon) if out.logvar is None else kl_normal(out.mean, out.logvar)
    return {"recon": recon, "kl": kl, "loss": recon + kl}


def bits_per_dim(nats, num_dims):
    return _f64(nats) / (num_dims * math.log(2.0))


def linear_gaussian_log_px(x, w, b, s):
    """Exact log p(x) of p(z) = N(0, I), p(x|z) = N(W z + b, s^2 I): N(x; b, W W^T + s^2 I).

    Args: x (B, P); w (P, D); b (P,); s > 0. Returns (B,).
    """
    x, w, b = _f64(x), _f64(w), _f64(b)
    p = w.shape[0]
    cov = w @ w.T + s ** 2 * np.eye(p)
    _, logdet = np.linalg.slogdet(cov)
    r = x - b
    maha = np.einsum("bi,ij,bj->b", r, np.linalg.inv(cov), r)
    return -0.5 * (p * LOG_2PI + logdet + maha)


def linear_gaussian_posterior(x, w, b, s):
    """Exact posterior N(m, S) of the linear-Gaussian model: S = (I + W^T W / s^2)^-1,
    m = S W^T (x - b) / s^2. Returns m (B, D), S (D, D)."""
    x, w, b = _f64(x), _f64(w), _f64(b)
    d = w.shape[1]
    cov = np.linalg.inv(np.eye(d) + w.T @ w / s ** 2)
    return (x - b) @ w @ cov.T / s ** 2, cov


# ---- schedules --------------------------------------------------------------------------------


def warmup_beta(step, warmup_steps, epoch_steps=0):
    if epoch_steps > 0:  # one beta per epoch, its end-of-epoch value
        step = (step // epoch_steps + 1) * epoch_steps
    return 1.0 if warmup_steps <= 0 else min(max(step / warmup_steps, 0.0), 1.0)


def log_standard_normal(z):
    return np.sum(log_normal_pdf(_f64(z), 0.0, 0.0), axis=-1)


def log_mixture(z, means, logvars):
    """log (1/K) sum_k N(z; m_k, exp(lv_k)): the direct (..., K, D) form the library avoids."""
    z, means, logvars = _f64(z), _f64(means), _f64(logvars)
    comp = np.sum(log_normal_pdf(z[..., None, :], means, logvars), axis=-1)  # (..., K)
    return logsumexp(comp, axis=-1) - math.log(means.shape[0])


def kl_single_sample(z, mean, logvar, log_prior=None):
    log_p = (log_prior or log_standard_normal)(z)
    return np.sum(log_normal_pdf(_f64(z), _f64(mean), _f64(logvar)), axis=-1) - log_p


def log_importance_weights_prior(x, mean, logvar, eps, decode, log_prior, likelihood="bernoulli"):
    """`log_importance_weights` with the prior density `log_prior` (z (k, B, D) -> (k, B))."""
    mean, logvar, eps = _f64(mean), _f64(logvar), _f64(eps)
    a, _, c = _log_weight_parts(x, mean, logvar, eps, decode, likelihood)
    return a + log_prior(reparameterize(mean, logvar, eps)) - c


def adam_norm_grad(params, grads_per_step, *, lr, b1=0.9, b2=0.999, eps=1e-8, weight_decay=0.0):
    """The VampPrior code's AdamNormGrad on a list of float64 tensors, one step per entry of
    `grads_per_step` (callables params -> grads, or fixed gradient lists). Returns the params."""
    params = [_f64(p).copy() for p in params]
    m = [np.zeros_like(p) for p in params]
    v = [np.zeros_like(p) for p in params]
    for t, grads in enumerate(grads_per_step, 1):
        g_all = grads(params) if callable(grads) else grads
        for i, (p, g) in enumerate(zip(params, g_all)):
            g = _f64(g) / (np.linalg.norm(_f64(g).ravel()) + 1e-7)
            g = g + weight_decay * p
            m[i] = b1 * m[i] + (1 - b1) * g
            v[i] = b2 * v[i] + (1 - b2) * g * g
            step = lr * math.sqrt(1 - b2**t) / (1 - b1**t)
            params[i] = p - step * m[i] / (np.sqrt(v[i]) + eps)
    return params


def cyclical_beta(step, *, cycle_steps=None, n_cycles=4, total_steps=None, ratio=0.5):
    period = cycle_steps if cycle_steps is not None else math.ceil(total_steps / n_cycles)
    tau = (step % period) / period
    return min(tau / ratio, 1.0)


def capacity_schedule(step, c_max, c_steps):
    return c_max if c_steps <= 0 else c_max * min(max(step / c_steps, 0.0), 1.0)


# ---- batch-statistic pieces -------------------------------------------------------------------


def log_importance_weight_matrix(batch_size, dataset_size):
    n, m = float(dataset_size), batch_size - 1
    w = np.empty((batch_size, batch_size))
    for i in range(batch_size):
        for j in range(batch_size):
            if j == i:
                w[i, j] = 1.0 / n
            elif j == (i + 1) % batch_size:
                w[i, j] = (n - m) / (n * m)
            else:
                w[i, j] = 1.0 / m
    return np.log(w)


def tc_decomposition(z, mean, logvar, *, dataset_size, sampling="mws"):
    z, mean, logvar = _f64(z), _f64(mean), _f64(logvar)
    b = z.shape[0]
    if sampling == "mws":
        log_w = np.full((b, b), -math.log(b * float(dataset_size)))
    else:
        log_w = log_importance_weight_matrix(b, dataset_size)
    log_qz, log_prod = np.empty(b), np.empty(b)
    for i in range(b):
        per_dim = log_normal_pdf(z[i][None, :], mean, logvar)  # (B_j, D): log q(z_i,d | x_j)
        log_qz[i] = logsumexp(log_w[i] + per_dim.sum(axis=1), axis=0)
        log_prod[i] = np.sum(logsumexp(log_w[i][:, None] + per_dim, axis=0))
    return {
        "log_qz_x": np.sum(log_normal_pdf(z, mean, logvar), axis=-1),
        "log_qz": log_qz,
        "log_prod_qzi": log_prod,
        "log_pz": np.sum(log_normal_pdf(z, 0.0, 0.0), axis=-1),
    }


def dip_penalties(cov):
    cov = _f64(cov)
    off = cov - np.diag(np.diag(cov))
    return float(np.sum(off ** 2)), float(np.sum((np.diag(cov) - 1.0) ** 2))


def mmd(z, prior_z, *, kernel="rbf", kernel_scale=None):
    z, p = _f64(z), _f64(prior_z)
    c = 2.0 * z.shape[-1] if kernel_scale is None else kernel_scale

    def gram(a, b):
        d2 = np.array([[np.sum((ai - bj) ** 2) for bj in b] for ai in a])
        return np.exp(-d2 / c) if kernel == "rbf" else c / (c + d2)

    return float(gram(z, z).mean() + gram(p, p).mean() - 2.0 * gram(z, p).mean())


# ---- objectives -------------------------------------------------------------------------------


def _finish(per_example, reduction, **scalars):
    terms = {k: reduce_batch(v, reduction) for k, v in per_example.items()}
    terms.update({k: float(v) for k, v in scalars.items()})
    return terms["loss"], terms


def reconstruction(x, out, *, likelihood, step=0, reduction="mean", decode=None, eps=None, **p):
    t = elbo_terms(x, out, likelihood, **p)
    return _finish({"loss": t["recon"], "recon": t["recon"], "kl": t["kl"]}, reduction)


def elbo(x, out, *, likelihood, step=0, reduction="mean", decode=None, eps=None, **p):
    return _finish(elbo_terms(x, out, likelihood, **p), reduction)


def _annealed(x, out, likelihood, reduction, beta, p):
    t = elbo_terms(x, out, likelihood, **p)
    return _finish({"loss": t["recon"] + beta * t["kl"], "recon": t["recon"], "kl": t["kl"]},
                   reduction, beta=beta)


def beta_vae(x, out, *, likelihood, step=0, reduction="mean", decode=None, eps=None, beta=4.0, **p):
    return _annealed(x, out, likelihood, reduction, beta, p)


def kl_warmup(x, out, *, likelihood, step=0, reduction="mean", decode=None, eps=None,
              warmup_steps=10000, **p):
    return _annealed(x, out, likelihood, reduction, warmup_beta(step, warmup_steps), p)


def cyclical(x, out, *, likelihood, step=0, reduction="mean", decode=None, eps=None,
             cycle_steps=None, n_cycles=4, total_steps=None, ratio=0.5, **p):
    beta = cyclical_beta(step, cycle_steps=cycle_steps, n_cycles=n_cycles,
                         total_steps=total_steps, ratio=ratio)
    return _annealed(x, out, likelihood, reduction, beta, p)


def capacity(x, out, *, likelihood, step=0, reduction="mean", decode=None, eps=None,
             gamma=1000.0, c_max=25.0, c_steps=100000, **p):
    c = capacity_schedule(step, c_max, c_steps)
    t = elbo_terms(x, out, likelihood, **p)
    loss = t["recon"] + gamma * abs(np.mean(t["kl"]) - c)
    return _finish({"loss": loss, "recon": t["recon"], "kl": t["kl"]}, reduction, capacity=c)


def free_bits(x, out, *, likelihood, step=0, reduction="mean", decode=None, eps=None, lam=0.5, **p):
    t = elbo_terms(x, out, likelihood, **p)
    kl_d = kl_normal_per_dim(out.mean, out.logvar)
    floored = np.full_like(t["kl"], np.sum(np.maximum(lam, kl_d.mean(axis=0))))
    return _finish({"loss": t["recon"] + floored, "recon": t["recon"], "kl": t["kl"],
                    "kl_free_bits": floored}, reduction)


def beta_tcvae(x, out, *, likelihood, step=0, reduction="mean", decode=None, eps=None,
               dataset_size, alpha=1.0, beta=6.0, gamma=1.0, sampling="mws", **p):
    t = elbo_terms(x, out, likelihood, **p)
    d = tc_decomposition(out.z, out.mean, out.logvar, dataset_size=dataset_size, sampling=sampling)
    mi = d["log_qz_x"] - d["log_qz"]
    tc = d["log_qz"] - d["log_prod_qzi"]
    dw = d["log_prod_qzi"] - d["log_pz"]
    return _finish({"loss": t["recon"] + alpha * mi + beta * tc + gamma * dw, "recon": t["recon"],
                    "kl": t["kl"], "mi": mi, "tc": tc, "dw_kl": dw}, reduction)


def _dip(x, out, likelihood, reduction, lambda_od, lambda_d, cov, p):
    t = elbo_terms(x, out, likelihood, **p)
    off, dg = dip_penalties(cov)
    ones = np.ones_like(t["kl"])
    return _finish({"loss": t["loss"] + lambda_od * off + lambda_d * dg, "recon": t["recon"],
                    "kl": t["kl"], "dip_offdiag": off * ones, "dip_diag": dg * ones}, reduction)


def dip_vae_i(x, out, *, likelihood, step=0, reduction="mean", decode=None, eps=None,
              lambda_od=10.0, lambda_d=100.0, **p):
    cov = np.cov(_f64(out.mean).T, bias=True).reshape(out.mean.shape[1], out.mean.shape[1])
    return _dip(x, out, likelihood, reduction, lambda_od, lambda_d, cov, p)


def dip_vae_ii(x, out, *, likelihood, step=0, reduction="mean", decode=None, eps=None,
               lambda_od=10.0, lambda_d=10.0, **p):
    d = out.mean.shape[1]
    cov = np.cov(_f64(out.mean).T, bias=True).reshape(d, d)
    cov = cov + np.diag(np.exp(_f64(out.logvar)).mean(axis=0))
    return _dip(x, out, likelihood, reduction, lambda_od, lambda_d, cov, p)


def info_vae(x, out, *, likelihood, step=0, reduction="mean", decode=None, eps=None,
             alpha=1.0, lam=1000.0, kernel="rbf", kernel_scale=None, prior_samples=None, **p):
    t = elbo_terms(x, out, likelihood, **p)
    m = mmd(out.z, eps, kernel=kernel, kernel_scale=kernel_scale)
    loss = t["recon"] + (1.0 - alpha) * t["kl"] + (alpha + lam - 1.0) * m
    return _finish({"loss": loss, "recon": t["recon"], "kl": t["kl"],
                    "mmd": m * np.ones_like(t["kl"])}, reduction)


def iwae(x, out, *, likelihood, step=0, reduction="mean", decode=None, eps=None, k=None, **p):
    log_px_z, log_pz, log_qz_x = _log_weight_parts(x, out.mean, out.logvar, eps, decode,
                                                   likelihood, **p)
    lw = log_px_z + log_pz - log_qz_x
    bound = logsumexp(lw, axis=0) - math.log(lw.shape[0])
    return _finish({"loss": -bound, "recon": -log_px_z.mean(axis=0),
                    "kl": kl_normal(out.mean, out.logvar), "iwae_bound": bound,
                    "elbo": lw.mean(axis=0)}, reduction)


OBJECTIVES: dict[str, Callable[..., tuple[float, dict[str, float]]]] = {
    "reconstruction": reconstruction,
    "elbo": elbo,
    "beta_vae": beta_vae,
    "kl_warmup": kl_warmup,
    "cyclical": cyclical,
    "capacity": capacity,
    "free_bits": free_bits,
    "beta_tcvae": beta_tcvae,
    "dip_vae_i": dip_vae_i,
    "dip_vae_ii": dip_vae_ii,
    "info_vae": info_vae,
    "iwae": iwae,
}


# ---- finite differences -----------------------------------------------------------------------


def numerical_grad(f: Callable[..., float], args: list[np.ndarray], *,
                   h: float = 1e-6) -> list[np.ndarray]:
    """Central finite differences of scalar f(*args) w.r.t. every element of every arg (float64).

    Error ~ h^2 |f'''| + 1e-16 |f| / h: about 1e-9 for the O(10) losses here.
    """
    args = [np.array(a, dtype=np.float64) for a in args]
    grads = []
    for i, a in enumerate(args):
        g = np.zeros_like(a)
        flat, gflat = a.reshape(-1), g.reshape(-1)
        for j in range(flat.size):
            orig = flat[j]
            step = h * max(1.0, abs(orig))
            flat[j] = orig + step
            fp = f(*args)
            flat[j] = orig - step
            fm = f(*args)
            flat[j] = orig
            gflat[j] = (fp - fm) / (2.0 * step)
        grads.append(g)
    return grads

