"""Reconstruction terms, Gaussian KL, ELBO and its variants in JAX. Twin: `torchvae/losses.py`.

This docstring is the loss specification. Both `losses.py` files implement it with the same public
names, signatures and order (so `diff` of the two is meaningful), and `parity_tests/oracle.py`
re-implements it in float64 NumPy; both frameworks are tested against the oracle.
Everything here is jit-able and vmap-able: no Python branching on traced values.

Conventions
-----------
* B is the batch size, D the number of data dimensions per example (pixels x channels; 784 for
  MNIST) and K the latent size. JAX images are (B, H, W, C), torch images (B, C, H, W). Every loss
  reshapes x to the decoder output's shape; for C = 1 both layouts flatten to the same order, so
  (B, 784) logits work with either.
* Units: nats per example (natural log). Bits per dimension:
  bits_per_dim(nats, D) = nats / (D ln 2).
* Per example, then one batch reduction. Reconstruction terms and KLs return (B,): a sum over every
  non-batch axis. Objectives build per-example vectors (B,) and reduce them with `reduce_batch`:
  "mean" (the default; independent of batch size) or "sum" (the source notebooks' numbers).
  Batch-level penalties (MMD, DIP, capacity, free bits) are computed once per batch and added to
  every example, so "sum" is always exactly B x "mean".
* Randomness is an argument: noise enters as `eps` and is never drawn inside the library.

Reparameterization
------------------
    z = mean + exp(logvar / 2) * eps,      eps ~ N(0, I),  mean, logvar: (B, K)

`reparameterize(mean, logvar, eps)` broadcasts leading sample axes of eps ((S, B, K)).
exp(logvar / 2) is the standard deviation; the variance is exp(logvar).

Reconstruction terms: negative log-likelihood, (B,)
---------------------------------------------------
`RECONSTRUCTION[name] = (fn, input_kind)`. A "logits" term receives the decoder's raw
(pre-sigmoid) output l; a "probs" term receives p = sigmoid(l), a probability for BCE and the
mean mu for the squared-error and Gaussian terms. `reconstruction_nll(x, logits, likelihood,
**params)` does this routing, so an objective is always given raw logits. A custom
(fn, input_kind) pair may be passed instead of a name. Sums run over the D dimensions of one
example.

    name                  input   per example
    bernoulli             logits  sum softplus(l) - x*l   (BCE with logits; finite for any l,
                                  also +-1e9; x may be continuous in [0, 1])
    bce_probs             probs   -sum [x*max(log p, -100) + (1-x)*max(log(1-p), -100)]
                                  (exactly F.binary_cross_entropy, see below)
    mse_sum               probs   sum (x - mu)^2   (book AE / glasses VAE; the Gaussian NLL with
                                  sigma^2 = 1/2 minus D/2 log pi)
    mse_mean              probs   (1/D) sum (x - mu)^2   (reduction "mean": exactly nn.MSELoss())
    gaussian              probs   sum [(x - mu)^2 / (2 sigma^2) + log sigma + 1/2 log 2pi],
                                  fixed `sigma` (default 1)
    gaussian_learned      probs   the same with sigma = exp(log_sigma); `log_sigma` is a scalar,
                                  one example's shape (per pixel) or (B, ...): a trainable
                                  parameter passed in
    gaussian_calibrated   probs   the same with sigma^2 = stop_grad(max(MSE, exp(2 min_log_sigma)))
                                  (Rybkin et al. 2021, "optimal sigma", below)
    continuous_bernoulli  logits  sum [softplus(l) - x*l - log C(l)]  (Loaiza-Ganem & Cunningham
                                  2019; a density, so it can be negative)

* bce_probs exists only to reproduce the sigmoid-output presets faithfully. PyTorch clamps each log
  at -100 and uses the gradient (p - x) / max(p(1-p), 1e-12) with respect to p; this file
  reproduces both with a `custom_vjp` (plain autodiff of the clamp gives 0*inf = NaN at p in
  {0, 1}). The valid domain is p, x in [0, 1]: PyTorch raises RuntimeError outside it, JAX returns
  NaN (it cannot raise under jit). Once sigmoid(l) rounds to 1 in float32 (l >~ 17) a wrong pixel
  costs a flat 100 nats with zero gradient. Prefer `bernoulli` on logits.
* Calibrated decoder. sigma*^2 = MSE maximises the likelihood over sigma. calibration="batch" (the
  default, as in the paper's code) uses one sigma for the batch (the MSE over all elements);
  "example" gives each example its own. sigma* is held constant for the gradient; because it is
  the optimum, the gradient with respect to mu equals that of the un-stopped loss (envelope
  theorem) wherever the floor min_log_sigma = -6 is inactive, which the parity tests check against
  finite differences of the un-stopped oracle. Per example the value is D/2 (1 + log 2pi + log MSE).
* Continuous-Bernoulli normaliser. With lambda = sigmoid(l),
  C = 2 artanh(1 - 2 lambda) / (1 - 2 lambda) simplifies to C = l / tanh(l/2): even in l,
  C(0) = 2, log C ~ log|l| for large |l|. For |l| >= 0.5 it is evaluated as
  log1p(exp(-a)) - log(-expm1(-a)/a) with a = |l| (one log of a ratio: no cancellation); for
  |l| < 0.5 as the series in u = l/2,
  log 2 + u^2/3 - 7u^4/90 + 62u^6/2835 - 127u^8/18900 + 146u^10/66825 (converges for |u| < pi;
  truncation error below 1e-10). Both branches use the double-where pattern, so gradients stay
  finite everywhere.

KL and latent densities
-----------------------
    kl_normal_per_dim(mean, logvar) = 1/2 (exp(logvar) + mean^2 - 1 - logvar)           (B, K)
    kl_normal(mean, logvar)         = sum_k kl_normal_per_dim                            (B,)
    kl_normal_std(mean, std)        = sum_k (std^2/2 + mean^2/2 - log std - 1/2)         (B,)
                                      the book's form; = kl_normal(mean, 2 log std)
    log_normal_pdf(x, mean, logvar) = -1/2 (log 2pi + logvar + (x - mean)^2 exp(-logvar))
                                      elementwise
    kl_monte_carlo(z, mean, logvar) = sum_k [log N(z; mean, exp(logvar)) - log N(z; 0, 1)]
                                      (..., B) for z (..., B, K)

Hand values: mean = 0, logvar = 0 gives KL 0; mean = 1, logvar = 0 gives 1/2 per latent
dimension. exp(logvar) - 1 - logvar is computed as expm1(logvar) - logvar, so near-collapsed
dimensions keep their digits. The mean of kl_monte_carlo over samples converges to kl_normal at
rate 1/sqrt(n) (tested).

Estimators (evaluation)
-----------------------
    log_importance_weights(x, mean, logvar, eps, decode, likelihood) -> (k, B)
        z_k = mean + exp(logvar/2) * eps_k,  eps: (k, B, K),  decode: (k*B, K) -> logits
        log w_k = log p(x|z_k) + log N(z_k; 0, I) - log q(z_k|x)
    importance_sampled_log_likelihood(...) = logsumexp_k(log w_k) - log k   (B,)  (Burda 2016);
        chunk=c decodes c samples at a time and log-adds the chunks (the same value)
    importance_sampled_nll(...)            = -importance_sampled_log_likelihood   (B,)
    elbo_terms(x, out, likelihood) = {"recon", "kl", "loss" = recon + kl}, each (B,), analytic KL

log q is computed as -1/2 sum (log 2pi + logvar + eps^2): as a function of (mean, logvar, eps) the
same as the z-form, without its cancellation. To chunk over samples, concatenate the (k, B)
weights of several calls (or accumulate them with logaddexp) and subtract log k_total.

Objectives
----------
    loss, terms = OBJECTIVES[name](x, out, *, likelihood, step=0, reduction="mean", decode=None,
                                   eps=None, **params)

`out` is `ModelOutput(logits, mean, logvar, z)`, used through attribute access only (an
autoencoder has logvar None). Keyword parameters an objective does not name go to the
reconstruction term (sigma, log_sigma, calibration, ...), so a misspelt name raises TypeError.
`terms` holds scalars and always contains "loss", "recon" and "kl", where "kl" is the analytic
KL(q(z|x) || N(0, I)) even when the loss uses something else. `step` may be a traced integer and
numeric parameters may be traced (sweeps vmap over them).

    name            per-example loss.  Parameters (default). Extra terms
    reconstruction  recon; "kl" is reported (0 for an AE)
    elbo            recon + KL
    beta_vae        recon + beta KL.  beta (4.0). Terms: beta
    kl_warmup       recon + beta(t) KL, beta = min(t/T, 1).  warmup_steps T (10000). Terms: beta
    cyclical        recon + beta(t) KL, tau = (t mod P)/P, beta = min(tau/R, 1).  cycle_steps P,
                    or total_steps and n_cycles (4) with P = ceil(total/n); ratio R (0.5).
                    Terms: beta
    capacity        recon + gamma |mean_b KL_b - C(t)|, C = c_max min(t/c_steps, 1).
                    gamma (1000), c_max (25), c_steps (1e5). Terms: capacity
    free_bits       recon + sum_k max(lam, mean_b KL_bk).  lam (0.5 nats per latent dimension).
                    Terms: kl_free_bits
    beta_tcvae      recon + alpha MI + beta TC + gamma dwKL.  dataset_size N (required), alpha
                    (1), beta (6), gamma (1), sampling ("mws" | "mss"). Terms: mi, tc, dw_kl
    dip_vae_i       recon + KL + lambda_od sum_{i!=j} C_ij^2 + lambda_d sum_i (C_ii - 1)^2,
                    C = Cov_b[mean].  lambda_od (10), lambda_d (100). Terms: dip_offdiag, dip_diag
    dip_vae_ii      as dip_vae_i with C = Cov_b[mean] + mean_b diag(exp(logvar)).  lambda_od (10),
                    lambda_d (10). Terms: dip_offdiag, dip_diag
    info_vae        recon + (1 - alpha) KL + (alpha + lam - 1) MMD(q(z), p(z)).  alpha (1:
                    MMD-VAE), lam (1000), kernel ("rbf" | "imq"), kernel_scale (2K),
                    prior_samples. Terms: mmd
    iwae            -log (1/k) sum_k w_k.  k (checked against eps). Terms: iwae_bound,
                    elbo (mean_k log w_k)

* Batch-level statistics. The MMD, the DIP covariances, the capacity penalty (on the batch-mean
  KL, as the common reference implementation does) and free bits (on the batch-mean KL per
  dimension, Kingma et al. 2016) are computed once per batch. They are invariant to duplicating
  the batch (the covariance is normalised by 1/B, the MMD is the biased V-statistic); MWS is too,
  MSS is not.
* beta-TCVAE (Chen et al. 2018) uses out.z and the (B, B, K) matrix log q(z_i,k | x_j); let
  mat_ij = sum_k log q(z_i,k | x_j). MWS, as in the paper: log q(z_i) = logsumexp_j(mat_ij) -
  log(B N), likewise per dimension. MSS: weight 1/N on j = i, (N - M)/(N M) on j = (i+1) mod B and
  1/M elsewhere, M = B - 1 (each row sums to 1). Then MI = log q(z|x) - log q(z),
  TC = log q(z) - sum_k log q(z_k), dwKL = sum_k log q(z_k) - log p(z); the three sum to
  kl_monte_carlo. With identical posteriors MSS gives MI = TC = 0, while MWS's fixed offsets give
  MI = log N and TC = (K-1) log N: constants, so the gradients are unaffected, but the reported
  values carry them. The reference code's `log_importance_weight_matrix` fills columns 0 and 1
  instead of the diagonal (rtqichen/beta-tcvae PR #1); this file implements the paper's estimator.
* InfoVAE / MMD-VAE (Zhao et al. 2019). Kernel RBF exp(-|a-b|^2 / C) or IMQ C / (C + |a-b|^2),
  with C = 2K (Tolstikhin et al. 2018) and no matmul. The prior samples (M, K) ~ N(0, I) come in
  through eps.
* IWAE needs `decode` and eps of shape (k, B, K); with k = 1 it equals the single-sample ELBO.
* Noise shapes. `extra_noise_shape(name, B, K, **params)` is the shape of the standard normal noise
  an objective needs: (k, B, K) for iwae, (prior_samples or B, K) for info_vae, None otherwise.

Adding a variant takes one function in each framework and one in `oracle.py`, plus a registry
entry; the tests iterate over OBJECTIVES and require the oracle to have the same keys.

Reproducing the sources
-----------------------
    source                                          likelihood  objective          reduction
    pytorch/examples, teaching SimpleVAE            bce_probs   elbo (beta_vae     "sum"
      (F.binary_cross_entropy(..., "sum") + KL)                 for the beta one)
    teaching SimpleAutoencoder (nn.MSELoss())       mse_mean    reconstruction     "mean"
    book AE and glasses VAE                         mse_sum     reconstruction /   "sum"
      (((imgs-out)**2).sum() + the std-form KL)                 elbo
    Flax example (sigmoid_binary_cross_entropy)     bernoulli   elbo               "mean"

What the source notes get wrong, and what this library does instead
-------------------------------------------------------------------
1. Wrong KL in the book flashcards: -0.5 * sum(1 + std**2 - mu**2 - exp(std)) puts std where
   log sigma^2 and sigma^2 belong. For q = N(0, 1) it gives 0.36 nats instead of 0 and disagrees
   with a Monte-Carlo estimate by more than 100 standard errors (tested). The library uses the
   log-variance form `kl_normal` and the book's training-code std form `kl_normal_std`; they agree.
2. Mean-reduced BCE plus a summed KL: F.binary_cross_entropy(recon, x) (a mean over batch and
   pixels) next to a KL summed over the batch is a beta-VAE with an implicit beta = B*D, divided
   by B*D (tested). The library sums every term per example, then applies one explicit reduction.
3. logvar used as the scale (z = mu + logvar * eps, the first notebook in the comparison notes):
   that sample has variance logvar^2, not exp(logvar), collapses at logvar = 0 and ignores the sign
   of logvar, while the KL still assumes exp(logvar) (tested). The library samples with
   exp(logvar/2); the quirk survives only as the model option reparam="logvar_as_scale", for
   faithful reproduction. (The follow-up notebook's var = exp(0.5 * log_var) is correct but
   misnamed: it is the standard deviation.)
4. A decoder without its sigmoid fed to probability BCE (the follow-up notebook comments out
   nn.Sigmoid()): F.binary_cross_entropy raises for values outside [0, 1] and silently gives wrong
   numbers for raw values inside it (tested; JAX gives NaN). Decoders here return logits and the
   registry routes "probs" terms through the sigmoid, so this cannot happen.
5. Inconsistent MSE reductions: the book's text says "average over pixels, sum over images", its
   code sums over everything, the teaching notebook averages over everything. The library has two
   named terms (mse_sum, mse_mean) and an explicit batch reduction.
6. Probability-space BCE by default: kept only where a preset reproduces a source; new models use
   `bernoulli` on logits, which stays finite at logits of +-1e9.

The tolerances the tests hold these functions to, and the measured worst cases, are in
parity_tests/README.md.
"""

from __future__ import annotations

import math
from typing import Any, Callable

import jax
import jax.numpy as jnp
import numpy as np

__all__ = [
    "reduce_batch",
    "bernoulli",
    "bce_probs",
    "mse_sum",
    "mse_mean",
    "gaussian",
    "gaussian_learned",
    "gaussian_calibrated",
    "continuous_bernoulli_log_norm",
    "continuous_bernoulli",
    "RECONSTRUCTION",
    "reconstruction_nll",
    "reparameterize",
    "log_normal_pdf",
    "kl_normal_per_dim",
    "kl_normal",
    "kl_normal_std",
    "kl_monte_carlo",
    "log_standard_normal",
    "log_mixture",
    "kl_single_sample",
    "log_importance_weights",
    "importance_sampled_log_likelihood",
    "importance_sampled_nll",
    "elbo_terms",
    "KL_ESTIMATES",
    "bits_per_dim",
    "warmup_beta",
    "cyclical_beta",
    "capacity_schedule",
    "log_importance_weight_matrix",
    "tc_decomposition",
    "posterior_diagnostics",
    "dip_penalties",
    "mmd",
    "reconstruction",
    "elbo",
    "beta_vae",
    "kl_warmup",
    "cyclical",
    "capacity",
    "free_bits",
    "beta_tcvae",
    "dip_vae_i",
    "dip_vae_ii",
    "info_vae",
    "iwae",
    "OBJECTIVES",
    "extra_noise_shape",
]

LOG_2PI = math.log(2.0 * math.pi)
# PyTorch's F.binary_cross_entropy clamps each log term at -100 and divides its gradient by
# max(p * (1 - p), 1e-12); bce_probs reproduces both.
_BCE_LOG_CLAMP = -100.0
_BCE_GRAD_EPS = 1e-12
# |logit| below which the continuous-Bernoulli log-normaliser uses its Taylor series (the closed
# form is 0/0 at logit 0). The series in u^2 = (l/2)^2 converges for |u| < pi; at |l| < 0.5 the
# terms kept (to u^10) leave a truncation error below 1e-10.
_CB_TAYLOR_BELOW = 0.5
_CB_TAYLOR = (1.0 / 3.0, -7.0 / 90.0, 62.0 / 2835.0, -127.0 / 18900.0, 146.0 / 66825.0)


def _sum_per_example(t: jax.Array) -> jax.Array:
    """(B, ...) -> (B,): sum over every non-batch axis."""
    return jnp.sum(t.reshape(t.shape[0], -1), axis=1)


def reduce_batch(per_example: jax.Array, reduction: str = "mean") -> jax.Array:
    """The one batch reduction of every objective.

    Args:
      per_example: (B,) per-example values (nats per example).
      reduction: "mean" (average over the batch: the default, batch-size independent) or
        "sum" (sum over the batch: the source notebooks' numbers).
    Returns:
      () scalar.
    """
    if reduction == "mean":
        return jnp.mean(per_example)
    if reduction == "sum":
        return jnp.sum(per_example)
    raise ValueError(f"reduction must be 'mean' or 'sum', got {reduction!r}")


# ---------------------------------------------------------------------------------------------
# Reconstruction terms: per-example negative log-likelihood (B,), summed over non-batch axes.


def bernoulli(x: jax.Array, logits: jax.Array) -> jax.Array:
    """Bernoulli NLL from logits (BCE with logits), stable for any logit size.

    -log p(x|l) = sum_i softplus(l_i) - x_i * l_i, computed as the twin's
    F.binary_cross_entropy_with_logits does, max(l, 0) - x l + log(1 + exp(-|l|)), so logits of
    +-1e9 give finite values and gradients. x may be continuous in [0, 1]. No select: XLA:CPU fuses
    it with the decoder's matmuls into one YNNPACK kernel (optax's log-sigmoid form, which has
    selects, ran ~6x slower per pixel in the importance-sampled NLL).

    Args:
      x: (B, ...) targets in [0, 1].
      logits: (B, ...) decoder logits, same shape as x.
    Returns:
      (B,) nats per example.
    """
    x = x.astype(logits.dtype)
    return _sum_per_example(jnp.maximum(logits, 0.0) - x * logits
                            + jnp.log1p(jnp.exp(-jnp.abs(logits))))


def _in_unit_interval(v: jax.Array) -> jax.Array:
    """Elementwise 0 <= v <= 1 (False for NaN)."""
    return (v >= 0.0) & (v <= 1.0)


@jax.custom_vjp
def _bce_probs_elementwise(probs, x):
    # Same expression as ATen's binary_cross_entropy kernel: log1p(-p), each log clamped at -100.
    log_p = jnp.maximum(jnp.log(probs), _BCE_LOG_CLAMP)
    log_1mp = jnp.maximum(jnp.log1p(-probs), _BCE_LOG_CLAMP)
    # Outside the domain NaN (as the twin): a target x > 1 would otherwise give a finite,
    # even negative, "NLL" that trains silently. Written without a select, so that XLA:CPU fuses
    # the term (and the decoder matmuls before it) into one YNNPACK kernel; jnp.where here made
    # the importance-sampled NLL's per-pixel term ~3x slower. p outside [0, 1] (or NaN) makes one
    # log NaN (jnp.maximum propagates it); x outside [0, 1] makes x (1 - x) < 0 and its sqrt NaN.
    return -(x * log_p + (1.0 - x) * log_1mp) + 0.0 * jnp.sqrt(x * (1.0 - x))


def _bce_probs_fwd(probs, x):
    return _bce_probs_elementwise(probs, x), (probs, x)


def _bce_probs_bwd(res, g):
    probs, x = res
    # PyTorch's backward, not the derivative of the clamped forward: (p - x) / max(p(1-p), 1e-12).
    # Autodiff of the clamp would give 0 * inf = NaN at p in {0, 1}; this stays finite.
    d_probs = g * (probs - x) / jnp.maximum(probs * (1.0 - probs), _BCE_GRAD_EPS)
    d_x = g * (
        jnp.maximum(jnp.log1p(-probs), _BCE_LOG_CLAMP) - jnp.maximum(jnp.log(probs), _BCE_LOG_CLAMP)
    )
    valid = _in_unit_interval(probs) & _in_unit_interval(x)
    return jnp.where(valid, d_probs, jnp.nan), jnp.where(valid, d_x, jnp.nan)


_bce_probs_elementwise.defvjp(_bce_probs_fwd, _bce_probs_bwd)


def bce_probs(x: jax.Array, probs: jax.Array) -> jax.Array:
    """Binary cross-entropy on probabilities, exactly as PyTorch's F.binary_cross_entropy.

    -sum_i [x_i * max(log p_i, -100) + (1 - x_i) * max(log(1 - p_i), -100)], with PyTorch's
    gradient (p - x) / max(p (1 - p), 1e-12) w.r.t. p. Only for faithful reproduction of the
    sigmoid-output presets; prefer `bernoulli` on logits. Valid domain: p and x in [0, 1]; an
    element outside it (or NaN) gives NaN, value and gradient, in both twins (no exceptions
    under jit; the trainers' NaN guard names the step). F.binary_cross_entropy raises there.

    Args:
      x: (B, ...) targets in [0, 1].
      probs: (B, ...) probabilities (sigmoid of the decoder output).
    Returns:
      (B,) nats per example.
    """
    return _sum_per_example(_bce_probs_elementwise(probs, x.astype(probs.dtype)))


def mse_sum(x: jax.Array, mean: jax.Array) -> jax.Array:
    """Squared error summed over pixels: sum_i (x_i - mean_i)^2 (the book's AE/VAE).

    Equals the Gaussian NLL with variance 1/2 up to the constant D/2 * log(pi).

    Args:
      x: (B, ...) targets.
      mean: (B, ...) reconstructions (sigmoid outputs).
    Returns:
      (B,) per example.
    """
    return _sum_per_example(jnp.square(x.astype(mean.dtype) - mean))


def mse_mean(x: jax.Array, mean: jax.Array) -> jax.Array:
    """Squared error averaged over the pixels of each example: mean_i (x_i - mean_i)^2.

    With reduction="mean" this is exactly nn.MSELoss() (mean over batch and pixels), as in the
    teaching notebook's AE.

    Args:
      x: (B, ...) targets.
      mean: (B, ...) reconstructions.
    Returns:
      (B,) per example.
    """
    return mse_sum(x, mean) / math.prod(mean.shape[1:])


def _gaussian_nll(x: jax.Array, mean: jax.Array, log_sigma: jax.Array) -> jax.Array:
    """(B,) sum_i [ (x_i - mean_i)^2 / (2 sigma_i^2) + log sigma_i + log(2 pi) / 2 ]."""
    sq = jnp.square(x.astype(mean.dtype) - mean)
    nll = 0.5 * sq * jnp.exp(-2.0 * log_sigma) + log_sigma + 0.5 * LOG_2PI
    return _sum_per_example(jnp.broadcast_to(nll, sq.shape))


def gaussian(x: jax.Array, mean: jax.Array, *, sigma: float = 1.0) -> jax.Array:
    """Gaussian NLL with a fixed standard deviation sigma (same for every pixel).

    Args:
      x: (B, ...) targets.
      mean: (B, ...) decoder means (sigmoid outputs).
      sigma: fixed standard deviation > 0.
    Returns:
      (B,) nats per example.
    """
    return _gaussian_nll(x, mean, jnp.log(jnp.asarray(sigma, mean.dtype)))


def gaussian_learned(x: jax.Array, mean: jax.Array, *, log_sigma: jax.Array) -> jax.Array:
    """Gaussian NLL with a learned log standard deviation (a trainable parameter passed in).

    Args:
      x: (B, ...) targets.
      mean: (B, ...) decoder means.
      log_sigma: () global, or one example's shape (per-pixel), or (B, ...): broadcast to x.
    Returns:
      (B,) nats per example.
    """
    return _gaussian_nll(x, mean, jnp.asarray(log_sigma, mean.dtype))


def gaussian_calibrated(
    x: jax.Array, mean: jax.Array, *, calibration: str = "batch", min_log_sigma: float = -6.0
) -> jax.Array:
    """Gaussian NLL with the analytic optimal sigma ("calibrated decoder", Rybkin et al. 2021).

    sigma*^2 = MSE (the maximiser of the likelihood over sigma), floored at exp(2 * min_log_sigma)
    and held constant for the gradient (stop-gradient, as Rybkin et al.'s optimal-sigma VAE).
    Because sigma* is the optimum, the gradient w.r.t. `mean` equals that of the un-stopped loss
    (envelope theorem) wherever the floor is inactive.

    Args:
      x: (B, ...) targets.
      mean: (B, ...) decoder means.
      calibration: "batch" (one sigma for the whole batch: MSE over all elements, as the paper's
        reference code) or "example" (one sigma per example: MSE over its pixels).
      min_log_sigma: floor on log sigma (the paper's -6) so a perfect fit cannot give -inf.
    Returns:
      (B,) nats per example.
    """
    sq = jnp.square(x.astype(mean.dtype) - mean)
    if calibration == "batch":
        var = jnp.mean(sq)
    elif calibration == "example":
        var = jnp.mean(sq.reshape(sq.shape[0], -1), axis=1).reshape((-1,) + (1,) * (sq.ndim - 1))
    else:
        raise ValueError(f"calibration must be 'batch' or 'example', got {calibration!r}")
    var = jax.lax.stop_gradient(jnp.maximum(var, math.exp(2.0 * min_log_sigma)))
    return _gaussian_nll(x, mean, 0.5 * jnp.log(var))


def continuous_bernoulli_log_norm(logits: jax.Array) -> jax.Array:
    """Elementwise log C(lambda) of the continuous Bernoulli (Loaiza-Ganem & Cunningham 2019).

    With lambda = sigmoid(l), C = 2 artanh(1 - 2 lambda) / (1 - 2 lambda) simplifies to
    C = l / tanh(l / 2), an even function of l with C(0) = 2. For |l| >= 0.5:
    log C = log1p(exp(-a)) - log(-expm1(-a) / a), a = |l| (one log of a ratio: no cancellation,
    stable up to any a). For |l| < 0.5 the Taylor series in u = l / 2:
    log C = log 2 + u^2/3 - 7 u^4/90 + 62 u^6/2835 - 127 u^8/18900 + 146 u^10/66825.

    Args:
      logits: (...) logits.
    Returns:
      (...) log normalising constant (>= log 2).
    """
    a = jnp.abs(logits)
    small = a < _CB_TAYLOR_BELOW
    # Double-where: each branch only sees inputs where it is finite, so gradients stay finite.
    a_big = jnp.where(small, 1.0, a)
    direct = jnp.log1p(jnp.exp(-a_big)) - jnp.log(-jnp.expm1(-a_big) / a_big)
    u2 = jnp.square(jnp.where(small, logits, 0.0) / 2.0)
    series = 0.0
    for c in reversed(_CB_TAYLOR):  # Horner in u^2
        series = (series + c) * u2
    return jnp.where(small, math.log(2.0) + series, direct)


def continuous_bernoulli(x: jax.Array, logits: jax.Array) -> jax.Array:
    """Continuous-Bernoulli NLL from logits: BCE-with-logits minus the log normaliser.

    -log p(x|l) = sum_i [softplus(l_i) - x_i l_i - log C(l_i)]. A density on [0, 1], so the
    value can be negative.

    Args:
      x: (B, ...) targets in [0, 1].
      logits: (B, ...) decoder logits.
    Returns:
      (B,) nats per example.
    """
    return bernoulli(x, logits) - _sum_per_example(continuous_bernoulli_log_norm(logits))


# name -> (fn, input_kind): "logits" terms get the decoder's raw output, "probs" terms get
# sigmoid(raw output). Sources: bce_probs / mse_* / gaussian* for the sigmoid-output presets.
RECONSTRUCTION: dict[str, tuple[Callable[..., jax.Array], str]] = {
    "bernoulli": (bernoulli, "logits"),
    "bce_probs": (bce_probs, "probs"),
    "mse_sum": (mse_sum, "probs"),
    "mse_mean": (mse_mean, "probs"),
    "gaussian": (gaussian, "probs"),
    "gaussian_learned": (gaussian_learned, "probs"),
    "gaussian_calibrated": (gaussian_calibrated, "probs"),
    "continuous_bernoulli": (continuous_bernoulli, "logits"),
}


def _likelihood(likelihood) -> tuple[Callable[..., jax.Array], str]:
    if isinstance(likelihood, str):
        if likelihood not in RECONSTRUCTION:
            raise KeyError(
                f"unknown likelihood {likelihood!r}; valid: {', '.join(sorted(RECONSTRUCTION))}"
            )
        return RECONSTRUCTION[likelihood]
    fn, kind = likelihood
    if kind not in ("logits", "probs"):
        raise ValueError(f"input_kind must be 'logits' or 'probs', got {kind!r}")
    return fn, kind


def reconstruction_nll(x: jax.Array, logits: jax.Array, likelihood, **recon_params) -> jax.Array:
    """Per-example reconstruction NLL from the decoder's raw output.

    Args:
      x: data, any shape with B * prod(logits.shape[1:]) elements; reshaped to logits.shape
        (MLP decoders return (B, 784); for C = 1, NHWC and NCHW flatten to the same order).
      logits: (B, ...) the decoder's pre-sigmoid output.
      likelihood: a RECONSTRUCTION name, or a custom (fn, input_kind) pair.
      **recon_params: keyword parameters of the term (sigma, log_sigma, calibration, ...).
    Returns:
      (B,) nats per example.
    """
    fn, kind = _likelihood(likelihood)
    x = x.reshape(logits.shape).astype(logits.dtype)
    return fn(x, jax.nn.sigmoid(logits) if kind == "probs" else logits, **recon_params)


# ---------------------------------------------------------------------------------------------
# Gaussian latents: reparameterization, densities, KL to N(0, I).


def reparameterize(mean: jax.Array, logvar: jax.Array, eps: jax.Array) -> jax.Array:
    """z = mean + exp(logvar / 2) * eps (broadcasts eps's leading sample axes).

    Args:
      mean: (B, D) posterior means.
      logvar: (B, D) posterior log-variances.
      eps: (..., B, D) standard normal noise.
    Returns:
      (..., B, D) samples of q(z|x).
    """
    return mean + jnp.exp(0.5 * logvar) * eps


def log_normal_pdf(x: jax.Array, mean: jax.Array, logvar: jax.Array) -> jax.Array:
    """Elementwise log N(x; mean, exp(logvar)) (no reduction; arguments broadcast).

    Returns:
      -(log(2 pi) + logvar + (x - mean)^2 exp(-logvar)) / 2, broadcast shape.
    """
    return -0.5 * (LOG_2PI + logvar + jnp.square(x - mean) * jnp.exp(-logvar))


def kl_normal_per_dim(mean: jax.Array, logvar: jax.Array) -> jax.Array:
    """KL(N(mean, exp(logvar)) || N(0, 1)) per latent dimension.

    (exp(logvar) + mean^2 - 1 - logvar) / 2, computed with expm1(logvar) - logvar so that
    near-collapsed dimensions (logvar ~ 0) keep their digits.

    Args:
      mean: (B, D).
      logvar: (B, D).
    Returns:
      (B, D) nats.
    """
    return 0.5 * (jnp.square(mean) + (jnp.expm1(logvar) - logvar))


def kl_normal(mean: jax.Array, logvar: jax.Array) -> jax.Array:
    """KL(q(z|x) || N(0, I)) per example, log-variance form, summed over latent dimensions.

    Args:
      mean: (B, D).
      logvar: (B, D).
    Returns:
      (B,) nats.
    """
    return _sum_per_example(kl_normal_per_dim(mean, logvar))


def kl_normal_std(mean: jax.Array, std: jax.Array) -> jax.Array:
    """The same KL in the book's standard-deviation form: sum std^2/2 + mean^2/2 - log std - 1/2.

    Args:
      mean: (B, D).
      std: (B, D) standard deviations > 0.
    Returns:
      (B,) nats (equals kl_normal(mean, 2 log std)).
    """
    return _sum_per_example(0.5 * jnp.square(std) + 0.5 * jnp.square(mean) - jnp.log(std) - 0.5)


def kl_monte_carlo(z: jax.Array, mean: jax.Array, logvar: jax.Array) -> jax.Array:
    """Single-sample KL estimates log q(z|x) - log N(z; 0, I), summed over the latent axis.

    Args:
      z: (..., B, D) samples (any leading sample axes).
      mean: (B, D).
      logvar: (B, D).
    Returns:
      (..., B) nats; its average over samples converges to kl_normal(mean, logvar).
    """
    zeros = jnp.zeros((), z.dtype)
    return jnp.sum(log_normal_pdf(z, mean, logvar) - log_normal_pdf(z, zeros, zeros), axis=-1)


def log_standard_normal(z: jax.Array) -> jax.Array:
    """log N(z; 0, I) summed over the latent axis: (..., D) -> (...)."""
    zeros = jnp.zeros((), z.dtype)
    return jnp.sum(log_normal_pdf(z, zeros, zeros), axis=-1)


def log_mixture(z: jax.Array, means: jax.Array, logvars: jax.Array) -> jax.Array:
    """log (1/K) sum_k N(z; means_k, exp(logvars_k)), the VampPrior's density, summed over D.

    The squared distances are expanded into matmuls (z^2 @ exp(-logvar).T - 2 z @ (mean
    exp(-logvar)).T + sum mean^2 exp(-logvar)), so (S, B, D) samples against K components never
    build an (S, B, K, D) array.

    Args:
      z: (..., D) samples.
      means, logvars: (K, D) component parameters.
    Returns:
      (...) nats.
    """
    prec = jnp.exp(-logvars)  # (K, D)
    quad = (jnp.square(z) @ prec.T - 2.0 * (z @ (means * prec).T)
            + jnp.sum(jnp.square(means) * prec, axis=-1))  # (..., K)
    log_k = -0.5 * (z.shape[-1] * LOG_2PI + jnp.sum(logvars, axis=-1) + quad)
    return jax.nn.logsumexp(log_k, axis=-1) - math.log(means.shape[0])


def kl_single_sample(z: jax.Array, mean: jax.Array, logvar: jax.Array,
                     log_prior: Callable[[jax.Array], jax.Array] | None = None) -> jax.Array:
    """The single-sample KL estimate log q(z|x) - log p(z) per example, for any prior.

    What the VampPrior code trains with (for its standard prior too): unbiased, and the only
    choice where KL(q || p) has no closed form.

    Args:
      z: (B, D) the reparameterized sample; mean, logvar: (B, D).
      log_prior: z (B, D) -> (B,) log p(z); None: the standard normal.
    Returns:
      (B,) nats.
    """
    log_p = (log_prior or log_standard_normal)(z)
    return jnp.sum(log_normal_pdf(z, mean, logvar), axis=-1) - log_p


# ---------------------------------------------------------------------------------------------
# Estimators for evaluation.


def _log_weight_parts(x, mean, logvar, eps, decode, likelihood, log_prior=None, **recon_params):
    """(k, B) arrays log p(x|z), log p(z), log q(z|x) for z = mean + exp(logvar/2) * eps
    (`log_prior`: z (..., D) -> (...); None: the standard normal)."""
    k, b, d = eps.shape
    z = reparameterize(mean, logvar, eps)  # (k, B, D)
    logits = decode(z.reshape(k * b, d))  # (k*B, ...)
    x = x.reshape((1, b) + logits.shape[1:])
    x_rep = jnp.broadcast_to(x, (k,) + x.shape[1:]).reshape(logits.shape)
    log_px_z = -reconstruction_nll(x_rep, logits, likelihood, **recon_params).reshape(k, b)
    log_pz = (log_prior or log_standard_normal)(z)
    # log q(z|x) written in eps: identical as a function of (mean, logvar, eps), and exact even
    # where exp(-logvar) * (z - mean)^2 would cancel badly.
    log_qz_x = jnp.sum(-0.5 * (LOG_2PI + logvar + jnp.square(eps)), axis=-1)
    return log_px_z, log_pz, log_qz_x


def log_importance_weights(
    x: jax.Array, mean: jax.Array, logvar: jax.Array, eps: jax.Array,
    decode: Callable[[jax.Array], jax.Array], likelihood="bernoulli", **recon_params,
) -> jax.Array:
    """log w = log p(x|z) + log p(z) - log q(z|x) for k posterior samples per example.

    Chunk over samples by concatenating (or log-adding) the weights of several calls.

    Args:
      x: (B, ...) data.
      mean, logvar: (B, D) posterior parameters.
      eps: (k, B, D) standard normal noise; z = mean + exp(logvar/2) * eps.
      decode: maps z (k*B, D) to logits (k*B, ...).
      likelihood: RECONSTRUCTION name (or (fn, input_kind)).
      **recon_params: the likelihood's parameters, and `log_prior` (z (..., D) -> (...), the
        model's prior density; default the standard normal).
    Returns:
      (k, B) log importance weights in nats.
    """
    log_px_z, log_pz, log_qz_x = _log_weight_parts(
        x, mean, logvar, eps, decode, likelihood, **recon_params
    )
    return log_px_z + log_pz - log_qz_x


def importance_sampled_log_likelihood(
    x: jax.Array, mean: jax.Array, logvar: jax.Array, eps: jax.Array,
    decode: Callable[[jax.Array], jax.Array], likelihood="bernoulli", *, chunk: int | None = None,
    **recon_params,
) -> jax.Array:
    """log p(x) ~ log (1/k) sum_k w_k (Burda et al. 2016), per example; a lower bound in mean.

    Args: as `log_importance_weights`, and
      chunk: decode the k samples `chunk` at a time, each chunk one (chunk * B, K) block through
        the decoder, combined with a running log-sum-exp (a scan over the full chunks, then the
        remainder), so memory stays bounded for k = 5000; None: all k at once. The same value
        up to float rounding (except gaussian_calibrated with calibration "batch", whose one
        sigma is then that of each decoded block).
    Returns:
      (B,) nats.
    """
    k = eps.shape[0]
    if chunk is None or chunk >= k:
        lw = log_importance_weights(x, mean, logvar, eps, decode, likelihood, **recon_params)
        return jax.nn.logsumexp(lw, axis=0) - math.log(k)

    def log_sum_w(e):  # (chunk, B, K) -> (B,) log sum_chunk w
        lw = log_importance_weights(x, mean, logvar, e, decode, likelihood, **recon_params)
        return jax.nn.logsumexp(lw, axis=0)

    full = k // chunk
    head = eps[: full * chunk].reshape((full, chunk) + eps.shape[1:])
    acc, _ = jax.lax.scan(lambda a, e: (jnp.logaddexp(a, log_sum_w(e)), None),
                          jnp.full(eps.shape[1:2], -jnp.inf, mean.dtype), head)
    if full * chunk < k:
        acc = jnp.logaddexp(acc, log_sum_w(eps[full * chunk:]))
    return acc - math.log(k)


def importance_sampled_nll(
    x: jax.Array, mean: jax.Array, logvar: jax.Array, eps: jax.Array,
    decode: Callable[[jax.Array], jax.Array], likelihood="bernoulli", *, chunk: int | None = None,
    **recon_params,
) -> jax.Array:
    """-importance_sampled_log_likelihood: the per-example NLL estimate (B,) in nats."""
    return -importance_sampled_log_likelihood(
        x, mean, logvar, eps, decode, likelihood, chunk=chunk, **recon_params
    )


def elbo_terms(x: jax.Array, out: Any, likelihood, *, log_prior=None, kl_estimate="analytic",
               **recon_params) -> dict[str, jax.Array]:
    """Per-example {"recon", "kl", "loss"} (each (B,), nats) for evaluation; loss = -ELBO.

    kl is the analytic KL(q(z|x) || N(0, I)) (`kl_estimate="analytic"`), or the single-sample
    estimate log q(out.z|x) - log p(out.z) (`kl_estimate="single_sample"`, and always when a
    `log_prior` other than the standard normal is given); 0 for autoencoders (out.logvar None).
    """
    if kl_estimate not in KL_ESTIMATES:
        raise ValueError(f"kl_estimate must be one of {KL_ESTIMATES}, got {kl_estimate!r}")
    recon = reconstruction_nll(x, out.logits, likelihood, **recon_params)
    if out.logvar is None:
        kl = jnp.zeros_like(recon)
    elif log_prior is not None or kl_estimate == "single_sample":
        kl = kl_single_sample(out.z, out.mean, out.logvar, log_prior)
    else:
        kl = kl_normal(out.mean, out.logvar)
    return {"recon": recon, "kl": kl, "loss": recon + kl}


def bits_per_dim(nats, num_dims: int):
    """Convert nats per example to bits per dimension: nats / (num_dims * ln 2)."""
    return nats / (num_dims * math.log(2.0))


# ---------------------------------------------------------------------------------------------
# Schedules (pure functions of the global step; jit-able with a traced step).


def warmup_beta(step, warmup_steps, epoch_steps=0) -> jax.Array:
    """Linear KL warm-up: min(step / warmup_steps, 1); 1 when warmup_steps <= 0.

    With `epoch_steps` > 0 the step is rounded up to the end of its epoch, (step // epoch_steps
    + 1) * epoch_steps: one beta per epoch, min(e / W, 1) for 1-based epoch e when
    warmup_steps = W * epoch_steps (the VampPrior / Exemplar VAE code's `set_beta`).
    """
    step = jnp.asarray(step, jnp.float32)
    es = jnp.asarray(epoch_steps, jnp.float32)
    step = jnp.where(es > 0, (jnp.floor(step / jnp.maximum(es, 1.0)) + 1.0) * es, step)
    ws = jnp.asarray(warmup_steps, jnp.float32)
    return jnp.where(ws > 0, jnp.clip(step / jnp.maximum(ws, 1.0), 0.0, 1.0), 1.0)


def cyclical_beta(step, *, cycle_steps=None, n_cycles=4, total_steps=None, ratio=0.5) -> jax.Array:
    """Cyclical annealing (Fu et al. 2019): tau = (step mod T) / T, beta = min(tau / ratio, 1).

    The period T is cycle_steps, or ceil(total_steps / n_cycles).
    """
    if cycle_steps is None:
        if total_steps is None:
            raise ValueError("cyclical annealing needs cycle_steps, or total_steps and n_cycles")
        cycle_steps = jnp.ceil(jnp.asarray(total_steps, jnp.float32) / n_cycles)
    period = jnp.maximum(jnp.asarray(cycle_steps, jnp.float32), 1.0)
    tau = jnp.mod(jnp.asarray(step, jnp.float32), period) / period
    return jnp.minimum(tau / ratio, 1.0)


def capacity_schedule(step, c_max, c_steps) -> jax.Array:
    """Burgess et al. 2018 capacity C = c_max * min(step / c_steps, 1) (c_max when c_steps <= 0)."""
    step = jnp.asarray(step, jnp.float32)
    cs = jnp.asarray(c_steps, jnp.float32)
    frac = jnp.where(cs > 0, jnp.clip(step / jnp.maximum(cs, 1.0), 0.0, 1.0), 1.0)
    return jnp.asarray(c_max, jnp.float32) * frac


# ---------------------------------------------------------------------------------------------
# Batch-statistic pieces of the variants.


def log_importance_weight_matrix(batch_size: int, dataset_size) -> jax.Array:
    """Minibatch stratified sampling weights of Chen et al. 2018, as log (B, B).

    Row i (z_i drawn from x_i): W[i, i] = 1/N, W[i, (i+1) mod B] = (N - M) / (N M), else 1/M,
    with M = B - 1; each row sums to 1. (The reference code's strided assignment fills columns
    0 and 1 instead of the diagonal, rtqichen/beta-tcvae PR #1; this is the paper's estimator.)
    """
    if batch_size < 2:
        raise ValueError("minibatch stratified sampling needs batch_size >= 2")
    n = jnp.asarray(dataset_size, jnp.float32)
    m = batch_size - 1
    eye = np.eye(batch_size, dtype=bool)
    nxt = np.roll(eye, 1, axis=1)  # (i, i+1 mod B)
    w = jnp.where(eye, 1.0 / n, jnp.where(nxt, (n - m) / (n * m), 1.0 / m))
    return jnp.log(w)


def tc_decomposition(
    z: jax.Array, mean: jax.Array, logvar: jax.Array, *, dataset_size, sampling: str = "mws"
) -> dict[str, jax.Array]:
    """Per-example log densities of the beta-TCVAE decomposition (Chen et al. 2018).

    log q(z_i) and log prod_d q(z_i,d) are estimated from the minibatch:
      "mws" (minibatch weighted sampling, the paper's eq.): log q(z_i) =
          logsumexp_j log q(z_i|x_j) - log(B N), and likewise per dimension;
      "mss" (minibatch stratified sampling): logsumexp_j (log W_ij + log q(z_i|x_j)).
    MI = log q(z|x) - log q(z), TC = log q(z) - log prod q(z_d),
    dim-wise KL = log prod q(z_d) - log p(z); the three sum to kl_monte_carlo(z, mean, logvar).
    Note: with identical posteriors MSS gives MI = TC = 0, while MWS's fixed log(B N) offsets
    give MI = log N and TC = (D - 1) log N (constants: the gradients are unaffected).

    Args:
      z: (B, D) posterior samples; mean, logvar: (B, D); dataset_size: N.
    Returns:
      dict of (B,): "log_qz_x", "log_qz", "log_prod_qzi", "log_pz".
    """
    b = z.shape[0]
    mat = log_normal_pdf(z[:, None, :], mean[None, :, :], logvar[None, :, :])  # (B_i, B_j, D)
    if sampling == "mws":
        log_w = -jnp.log(jnp.asarray(dataset_size, jnp.float32) * b)
        log_qz = jax.nn.logsumexp(jnp.sum(mat, axis=-1), axis=1) + log_w
        log_prod = jnp.sum(jax.nn.logsumexp(mat, axis=1) + log_w, axis=-1)
    elif sampling == "mss":
        log_w = log_importance_weight_matrix(b, dataset_size)  # (B, B)
        log_qz = jax.nn.logsumexp(log_w + jnp.sum(mat, axis=-1), axis=1)
        log_prod = jnp.sum(jax.nn.logsumexp(log_w[:, :, None] + mat, axis=1), axis=-1)
    else:
        raise ValueError(f"sampling must be 'mws' or 'mss', got {sampling!r}")
    zeros = jnp.zeros((), z.dtype)
    return {
        "log_qz_x": jnp.sum(log_normal_pdf(z, mean, logvar), axis=-1),
        "log_qz": log_qz,
        "log_prod_qzi": log_prod,
        "log_pz": jnp.sum(log_normal_pdf(z, zeros, zeros), axis=-1),
    }


def posterior_diagnostics(z: jax.Array, mean: jax.Array, logvar: jax.Array, *, dataset_size,
                          mi_tc: bool | jax.Array = True) -> dict[str, jax.Array]:
    """Posterior-collapse diagnostics of one batch (not differentiated; every VAE run tracks them).

    kl_per_dim: (D,) batch mean of KL(q(z_d|x) || N(0, 1)); mean_sum, mean_sq: (D,) sums of the
    posterior means and their squares over the batch (an epoch's Var_x E_q[z_d] follows, hence
    the active units of Burda et al.); mutual_info: the minibatch estimate of I(x; z) =
    E[log q(z|x) - log q(z)] and total_correlation: E[log q(z) - log prod_d q(z_d)], both with
    `tc_decomposition`'s stratified (mss) estimator, which gives 0 for identical posteriors
    (a collapsed encoder). dataset_size: N of the training set. mi_tc: whether to compute
    mutual_info and total_correlation (a bool or a traced one, `lax.cond`); when False both are
    0 (the trainer computes them on `vaecommon.lifecycle.sampled_step` steps only).
    """
    z, mean, logvar = (jax.lax.stop_gradient(a) for a in (z, mean, logvar))

    def estimates():
        d = tc_decomposition(z, mean, logvar, dataset_size=dataset_size, sampling="mss")
        return (jnp.mean(d["log_qz_x"] - d["log_qz"]), jnp.mean(d["log_qz"] - d["log_prod_qzi"]))

    def skipped():
        return (jnp.zeros((), z.dtype),) * 2

    if isinstance(mi_tc, bool):
        mi, tc = estimates() if mi_tc else skipped()
    else:
        mi, tc = jax.lax.cond(mi_tc, estimates, skipped)
    return {"kl_per_dim": jnp.mean(kl_normal_per_dim(mean, logvar), axis=0),
            "mean_sum": jnp.sum(mean, axis=0), "mean_sq": jnp.sum(jnp.square(mean), axis=0),
            "mutual_info": mi, "total_correlation": tc}


def dip_penalties(cov: jax.Array) -> tuple[jax.Array, jax.Array]:
    """DIP-VAE penalties of a (D, D) covariance: (sum_{i!=j} C_ij^2, sum_i (C_ii - 1)^2)."""
    diag = jnp.diagonal(cov)
    # Square the off-diagonal entries themselves: sum(C^2) - sum(diag^2) would cancel.
    offdiag = jnp.sum(jnp.square(cov - jnp.diag(diag)))
    return offdiag, jnp.sum(jnp.square(diag - 1.0))


def _batch_cov(v: jax.Array) -> jax.Array:
    """(B, D) -> (D, D) covariance over the batch, 1/B normalised (batch-duplication invariant).

    Broadcast products rather than a matmul: exact float32 on any backend, no precision flag.
    """
    c = v - jnp.mean(v, axis=0)
    return jnp.mean(c[:, :, None] * c[:, None, :], axis=0)


def mmd(z: jax.Array, prior_z: jax.Array, *, kernel: str = "rbf", kernel_scale=None) -> jax.Array:
    """Squared MMD between samples, biased V-statistic (diagonal terms included).

    mean k(z, z') + mean k(p, p') - 2 mean k(z, p), with k the RBF exp(-|a - b|^2 / C) or the
    inverse multiquadric C / (C + |a - b|^2), C = kernel_scale or 2 * D (Tolstikhin et al. 2018
    with a unit prior). The V-statistic is >= 0 and unchanged by duplicating either sample set.

    Args:
      z: (B, D) posterior samples; prior_z: (M, D) samples of N(0, I).
    Returns:
      () scalar.
    """
    c = 2.0 * z.shape[-1] if kernel_scale is None else kernel_scale

    def k(a, b):
        # Pairwise squared distances by broadcasting (no |a|^2 + |b|^2 - 2ab cancellation).
        d2 = jnp.sum(jnp.square(a[:, None, :] - b[None, :, :]), axis=-1)
        if kernel == "rbf":
            return jnp.exp(-d2 / c)
        if kernel == "imq":
            return c / (c + d2)
        raise ValueError(f"kernel must be 'rbf' or 'imq', got {kernel!r}")

    return jnp.mean(k(z, z)) + jnp.mean(k(prior_z, prior_z)) - 2.0 * jnp.mean(k(z, prior_z))


# ---------------------------------------------------------------------------------------------
# Objectives: loss, terms = fn(x, out, *, likelihood, step, reduction, decode, eps, **params).
# Leftover keyword params go to the reconstruction term (sigma, log_sigma, ...).


def _finish(per_example: dict[str, jax.Array], reduction: str, **scalars):
    """Reduce every per-example (B,) value with `reduce_batch`; add hyperparameter scalars."""
    terms = {name: reduce_batch(v, reduction) for name, v in per_example.items()}
    terms.update({name: jnp.asarray(v, jnp.float32) for name, v in scalars.items()})
    return terms["loss"], terms


def _require_vae(out, name: str):
    if out.logvar is None:
        raise ValueError(f"objective {name!r} needs a VAE output (out.logvar is None)")


def reconstruction(x, out, *, likelihood, step=0, reduction="mean", decode=None, eps=None,
                   **recon_params):
    """Autoencoder loss: reconstruction only. terms: loss, recon, kl (reported, not optimised;
    0 for AEs)."""
    t = elbo_terms(x, out, likelihood, **recon_params)
    return _finish({"loss": t["recon"], "recon": t["recon"], "kl": t["kl"]}, reduction)


def elbo(x, out, *, likelihood, step=0, reduction="mean", decode=None, eps=None, log_prior=None,
         kl_estimate="analytic", **recon_params):
    """Negative ELBO: recon + KL(q(z|x) || p(z)) per example. terms: loss, recon, kl.

    `log_prior` (the model's prior density, e.g. a VampPrior) makes the KL the single-sample
    estimate; `kl_estimate="single_sample"` does so for the standard normal too (see elbo_terms).
    """
    _require_vae(out, "elbo")
    t = elbo_terms(x, out, likelihood, log_prior=log_prior, kl_estimate=kl_estimate, **recon_params)
    return _finish(t, reduction)


def beta_vae(x, out, *, likelihood, step=0, reduction="mean", decode=None, eps=None, beta=4.0,
             log_prior=None, kl_estimate="analytic", **recon_params):
    """beta-VAE (Higgins et al. 2017): recon + beta * KL. terms: loss, recon, kl, beta."""
    _require_vae(out, "beta_vae")
    t = elbo_terms(x, out, likelihood, log_prior=log_prior, kl_estimate=kl_estimate, **recon_params)
    return _finish({"loss": t["recon"] + beta * t["kl"], "recon": t["recon"], "kl": t["kl"]},
                   reduction, beta=beta)


def kl_warmup(x, out, *, likelihood, step=0, reduction="mean", decode=None, eps=None,
              warmup_steps=10000, epoch_steps=0, log_prior=None, kl_estimate="analytic",
              **recon_params):
    """recon + beta(step) * KL with beta rising linearly 0 -> 1 over warmup_steps (Bowman et al.
    2016, Sonderby et al. 2016). terms: loss, recon, kl, beta.

    `epoch_steps` > 0 holds beta for a whole epoch at its end-of-epoch value, as the VampPrior
    code's per-epoch warm-up does: beta = min(1, e / W) in 1-based epoch e for
    warmup_steps = W * epoch_steps (see `warmup_beta`).
    """
    _require_vae(out, "kl_warmup")
    beta = warmup_beta(step, warmup_steps, epoch_steps)
    t = elbo_terms(x, out, likelihood, log_prior=log_prior, kl_estimate=kl_estimate, **recon_params)
    return _finish({"loss": t["recon"] + beta * t["kl"], "recon": t["recon"], "kl": t["kl"]},
                   reduction, beta=beta)


def cyclical(x, out, *, likelihood, step=0, reduction="mean", decode=None, eps=None,
             cycle_steps=None, n_cycles=4, total_steps=None, ratio=0.5, **recon_params):
    """Cyclical KL annealing (Fu et al. 2019): recon + cyclical_beta(step) * KL.
    terms: loss, recon, kl, beta."""
    _require_vae(out, "cyclical")
    beta = cyclical_beta(step, cycle_steps=cycle_steps, n_cycles=n_cycles,
                         total_steps=total_steps, ratio=ratio)
    t = elbo_terms(x, out, likelihood, **recon_params)
    return _finish({"loss": t["recon"] + beta * t["kl"], "recon": t["recon"], "kl": t["kl"]},
                   reduction, beta=beta)


def capacity(x, out, *, likelihood, step=0, reduction="mean", decode=None, eps=None,
             gamma=1000.0, c_max=25.0, c_steps=100000, **recon_params):
    """Controlled capacity (Burgess et al. 2018): recon + gamma * |mean_batch KL - C(step)|.

    The penalty is on the batch-averaged KL (a batch-level term, broadcast to every example).
    terms: loss, recon, kl, capacity.
    """
    _require_vae(out, "capacity")
    c = capacity_schedule(step, c_max, c_steps)
    t = elbo_terms(x, out, likelihood, **recon_params)
    penalty = gamma * jnp.abs(jnp.mean(t["kl"]) - c)
    return _finish({"loss": t["recon"] + penalty, "recon": t["recon"], "kl": t["kl"]},
                   reduction, capacity=c)


def free_bits(x, out, *, likelihood, step=0, reduction="mean", decode=None, eps=None, lam=0.5,
              **recon_params):
    """Free bits (Kingma et al. 2016): recon + sum_d max(lam, mean_batch KL_d).

    The floor applies per latent dimension to the batch-averaged KL (batch-level, broadcast).
    terms: loss, recon, kl (the true KL), kl_free_bits (the floored KL in the loss).
    """
    _require_vae(out, "free_bits")
    recon = reconstruction_nll(x, out.logits, likelihood, **recon_params)
    kl_d = kl_normal_per_dim(out.mean, out.logvar)  # (B, D)
    floored = jnp.sum(jnp.maximum(lam, jnp.mean(kl_d, axis=0)))  # ()
    floored = jnp.broadcast_to(floored, recon.shape)
    return _finish({"loss": recon + floored, "recon": recon, "kl": jnp.sum(kl_d, axis=-1),
                    "kl_free_bits": floored}, reduction)


def beta_tcvae(x, out, *, likelihood, step=0, reduction="mean", decode=None, eps=None,
               dataset_size, alpha=1.0, beta=6.0, gamma=1.0, sampling="mws", **recon_params):
    """beta-TCVAE (Chen et al. 2018): recon + alpha MI + beta TC + gamma dim-wise KL.

    Uses out.z (B, D) and the minibatch estimators of `tc_decomposition` (sampling "mws" or
    "mss"); needs dataset_size. terms: loss, recon, kl (analytic), mi, tc, dw_kl.
    """
    _require_vae(out, "beta_tcvae")
    recon = reconstruction_nll(x, out.logits, likelihood, **recon_params)
    d = tc_decomposition(out.z, out.mean, out.logvar, dataset_size=dataset_size, sampling=sampling)
    mi = d["log_qz_x"] - d["log_qz"]
    tc = d["log_qz"] - d["log_prod_qzi"]
    dw_kl = d["log_prod_qzi"] - d["log_pz"]
    return _finish({"loss": recon + alpha * mi + beta * tc + gamma * dw_kl, "recon": recon,
                    "kl": kl_normal(out.mean, out.logvar), "mi": mi, "tc": tc, "dw_kl": dw_kl},
                   reduction)


def _dip(x, out, likelihood, reduction, lambda_od, lambda_d, cov, recon_params):
    t = elbo_terms(x, out, likelihood, **recon_params)
    off, dg = dip_penalties(cov)
    penalty = lambda_od * off + lambda_d * dg
    ones = jnp.ones_like(t["kl"])
    return _finish({"loss": t["loss"] + penalty, "recon": t["recon"], "kl": t["kl"],
                    "dip_offdiag": off * ones, "dip_diag": dg * ones}, reduction)


def dip_vae_i(x, out, *, likelihood, step=0, reduction="mean", decode=None, eps=None,
              lambda_od=10.0, lambda_d=100.0, **recon_params):
    """DIP-VAE-I (Kumar et al. 2018): -ELBO + lambda_od sum_{i!=j} C_ij^2 + lambda_d sum (C_ii-1)^2
    with C = Cov_batch[mean] (1/B normalised; batch-level, broadcast).
    terms: loss, recon, kl, dip_offdiag, dip_diag."""
    _require_vae(out, "dip_vae_i")
    return _dip(x, out, likelihood, reduction, lambda_od, lambda_d, _batch_cov(out.mean),
                recon_params)


def dip_vae_ii(x, out, *, likelihood, step=0, reduction="mean", decode=None, eps=None,
               lambda_od=10.0, lambda_d=10.0, **recon_params):
    """DIP-VAE-II: as DIP-VAE-I with C = Cov_q(z) = mean_batch diag(exp(logvar)) + Cov_batch[mean].
    terms: loss, recon, kl, dip_offdiag, dip_diag."""
    _require_vae(out, "dip_vae_ii")
    cov = _batch_cov(out.mean) + jnp.diag(jnp.mean(jnp.exp(out.logvar), axis=0))
    return _dip(x, out, likelihood, reduction, lambda_od, lambda_d, cov, recon_params)


def info_vae(x, out, *, likelihood, step=0, reduction="mean", decode=None, eps=None,
             alpha=1.0, lam=1000.0, kernel="rbf", kernel_scale=None, prior_samples=None,
             **recon_params):
    """InfoVAE (Zhao et al. 2019): recon + (1 - alpha) KL + (alpha + lam - 1) MMD(q(z), p(z)).

    alpha = 1 is the MMD-VAE. `eps` carries the prior samples (M, D) ~ N(0, I) (see
    `extra_noise_shape`); the MMD (`mmd`, V-statistic) of out.z against them is batch-level,
    broadcast to every example. terms: loss, recon, kl, mmd.
    """
    _require_vae(out, "info_vae")
    if eps is None:
        raise ValueError("info_vae needs prior samples: pass eps=(M, D) standard normal noise")
    if prior_samples is not None and eps.shape[0] != prior_samples:
        raise ValueError(f"eps has {eps.shape[0]} prior samples, prior_samples={prior_samples}")
    t = elbo_terms(x, out, likelihood, **recon_params)
    m = mmd(out.z, eps.astype(out.z.dtype), kernel=kernel, kernel_scale=kernel_scale)
    loss = t["recon"] + (1.0 - alpha) * t["kl"] + (alpha + lam - 1.0) * m
    return _finish({"loss": loss, "recon": t["recon"], "kl": t["kl"],
                    "mmd": m * jnp.ones_like(t["kl"])}, reduction)


def iwae(x, out, *, likelihood, step=0, reduction="mean", decode=None, eps=None, k=None,
         log_prior=None, **recon_params):
    """Importance-weighted bound (Burda et al. 2016): loss = -log (1/k) sum_k w_k per example.

    Needs `decode` (z -> logits) and `eps` (k, B, D); z_k = mean + exp(logvar/2) eps_k
    (out.z and out.logits are not used). Log-mean-exp via logsumexp. With k = 1 it is the
    single-sample ELBO. terms: loss, recon (mean over k of -log p(x|z_k)), kl (analytic),
    iwae_bound, elbo (mean over k of log w_k).
    """
    _require_vae(out, "iwae")
    if decode is None or eps is None:
        raise ValueError("iwae needs decode (z -> logits) and eps (k, B, D)")
    if k is not None and eps.shape[0] != k:
        raise ValueError(f"eps has {eps.shape[0]} samples per example, k={k}")
    log_px_z, log_pz, log_qz_x = _log_weight_parts(
        x, out.mean, out.logvar, eps.astype(out.mean.dtype), decode, likelihood,
        log_prior=log_prior, **recon_params
    )
    lw = log_px_z + log_pz - log_qz_x  # (k, B)
    bound = jax.nn.logsumexp(lw, axis=0) - math.log(lw.shape[0])
    return _finish({"loss": -bound, "recon": -jnp.mean(log_px_z, axis=0),
                    "kl": kl_normal(out.mean, out.logvar), "iwae_bound": bound,
                    "elbo": jnp.mean(lw, axis=0)}, reduction)


KL_ESTIMATES = ("analytic", "single_sample")
"""How elbo/beta_vae/kl_warmup estimate KL(q || p): closed form (standard prior only), or
log q(z|x) - log p(z) at the reparameterized sample."""

OBJECTIVES: dict[str, Callable[..., tuple[jax.Array, dict[str, jax.Array]]]] = {
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


def extra_noise_shape(objective: str, batch_size: int, latent_dim: int, **params):
    """Shape of the standard normal `eps` an objective needs, or None.

    iwae: (k, B, D) with k = params.get("k", 5); info_vae: (prior_samples or B, D).
    Unknown params are ignored, so callers can pass the objective's params as they are.
    """
    if objective == "iwae":
        return (int(params.get("k") or 5), batch_size, latent_dim)
    if objective == "info_vae":
        return (int(params.get("prior_samples") or batch_size), latent_dim)
    return None
