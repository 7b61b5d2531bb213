"""Reconstruction terms, Gaussian KL, ELBO and its variants in PyTorch. Twin: `jaxvae/losses.py`.

Both files expose the same public names, signatures and order, so `diff` of the two is
meaningful. The specification (every formula, with shapes, reductions, defaults and the source
notebooks' mistakes) is written once, in the twin's module docstring (`jaxvae/losses.py`), and
re-implemented in float64 NumPy by `parity_tests/oracle.py`, which both are tested against.

Conventions (identical in the twin):
  * Reconstruction terms return the per-example negative log-likelihood `(B,)` in nats, summed
    over all non-batch axes. `RECONSTRUCTION[name] = (fn, input_kind)`: "logits" terms get the
    decoder's raw output, "probs" terms get `sigmoid(raw output)` (a probability or a mean).
  * Objectives are `loss, terms = fn(x, out, *, likelihood, step=0, reduction="mean",
    decode=None, eps=None, **params)`; `out` is a `ModelOutput(logits, mean, logvar, z)` used
    through attribute access only. Every objective builds per-example values `(B,)` (batch-level
    penalties such as MMD are broadcast to every example) and reduces them with the one visible
    function `reduce_batch`, so "sum" is always exactly B times "mean".
  * Randomness is an argument: `eps` (IWAE: `(k, B, K)`; InfoVAE: prior samples `(M, K)`; K is
    the latent size).
  * Plain eager PyTorch; the JAX twin is additionally jit/vmap-able.
"""

from __future__ import annotations

import math
from typing import Any, Callable

import torch
import torch.nn.functional as F

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
# |logit| below which the continuous-Bernoulli log-normaliser uses its Taylor series (the closed
# form is 0/0 at logit 0). The series in u^2 = (l/2)^2 converges for |u| < pi; at |l| < 0.5 the
# terms kept (to u^10) leave a truncation error below 1e-10.
_CB_TAYLOR_BELOW = 0.5
_CB_TAYLOR = (1.0 / 3.0, -7.0 / 90.0, 62.0 / 2835.0, -127.0 / 18900.0, 146.0 / 66825.0)


def _sum_per_example(t: torch.Tensor) -> torch.Tensor:
    """(B, ...) -> (B,): sum over every non-batch axis."""
    return t.reshape(t.shape[0], -1).sum(dim=1)


def reduce_batch(per_example: torch.Tensor, reduction: str = "mean") -> torch.Tensor:
    """The one batch reduction of every objective.

    Args:
      per_example: (B,) per-example values (nats per example).
      reduction: "mean" (average over the batch: the default, batch-size independent) or
        "sum" (sum over the batch: the source notebooks' numbers).
    Returns:
      () scalar.
    """
    if reduction == "mean":
        return per_example.mean()
    if reduction == "sum":
        return per_example.sum()
    raise ValueError(f"reduction must be 'mean' or 'sum', got {reduction!r}")


# ---------------------------------------------------------------------------------------------
# Reconstruction terms: per-example negative log-likelihood (B,), summed over non-batch axes.


def bernoulli(x: torch.Tensor, logits: torch.Tensor) -> torch.Tensor:
    """Bernoulli NLL from logits (BCE with logits), stable for any logit size.

    -log p(x|l) = sum_i softplus(l_i) - x_i * l_i, computed by F.binary_cross_entropy_with_logits
    as max(l, 0) - x l + log(1 + exp(-|l|)), so logits of +-1e9 give finite values and gradients
    (it rounds log(1 + e^-30) to 0: absolute error < 1e-7 per pixel). x may be in [0, 1].

    Args:
      x: (B, ...) targets in [0, 1].
      logits: (B, ...) decoder logits, same shape as x.
    Returns:
      (B,) nats per example.
    """
    x = x.to(logits.dtype)
    if not (logits.requires_grad or x.requires_grad):
        # Without autograd (evaluation, the test NLL) the same formula from vectorized ops, as
        # max(l, 0) - x l - log(sigmoid(|l|)) in four passes over the block (log1p, and with it
        # F.binary_cross_entropy_with_logits's kernel and F.softplus, is scalar in ATen). On
        # (3200, 784) logits, one thread: 7-15 ms, against 37-58 ms for the earlier
        # log(1 + exp(-|l|)) form's seven passes.
        # sigmoid(|l|) rounds to 1 for |l| > 17: an error below e^-17 < 1e-7 per pixel.
        per = torch.relu(logits).addcmul_(x, logits, value=-1.0)
        per -= logits.abs().sigmoid_().log_()
        return _sum_per_example(per)
    return _sum_per_example(F.binary_cross_entropy_with_logits(logits, x, reduction="none"))


def bce_probs(x: torch.Tensor, probs: torch.Tensor) -> torch.Tensor:
    """Binary cross-entropy on probabilities: F.binary_cross_entropy itself.

    -sum_i [x_i * max(log p_i, -100) + (1 - x_i) * max(log(1 - p_i), -100)], gradient
    (p - x) / max(p (1 - p), 1e-12) w.r.t. p (PyTorch's own). Only for faithful reproduction of
    the sigmoid-output presets; prefer `bernoulli` on logits. Valid domain: p and x in [0, 1]; an
    element outside it (or NaN) gives NaN, value and gradient, in both twins (the JAX twin cannot
    raise under jit; the trainers' NaN guard names the step). F.binary_cross_entropy raises there.

    Args:
      x: (B, ...) targets in [0, 1].
      probs: (B, ...) probabilities (sigmoid of the decoder output).
    Returns:
      (B,) nats per example.
    """
    x = x.to(probs.dtype)
    if not (probs.requires_grad or x.requires_grad):
        # Without autograd (evaluation, the test NLL) the same expression from vectorized ops,
        # each log clamped at -100 as ATen does: F.binary_cross_entropy's CPU kernel is scalar,
        # slower per pixel than the decoder's matmuls. log(1 - p), not log1p(-p) (scalar in ATen,
        # 2.4x slower): they differ by < 6e-8 per pixel. p outside [0, 1] (or NaN) makes a log NaN.
        # x log p + (1 - x) log(1 - p) as one lerp (exact at x = 0 and 1), two allocations
        per = torch.rsub(probs, 1.0).log_().clamp_(min=-100.0)
        per.lerp_(torch.log(probs).clamp_(min=-100.0), x)
        lo, hi = torch.aminmax(x)
        if not (bool(lo >= 0) and bool(hi <= 1)):  # False for NaN
            per.masked_fill_(~((x >= 0) & (x <= 1)), math.nan)
        return -_sum_per_example(per)
    valid = (probs >= 0) & (probs <= 1) & (x >= 0) & (x <= 1)  # False for NaN
    # F.binary_cross_entropy sees the valid elements only (it raises on the others: a host sync
    # and an exception mid-step). Outside the domain the value and the gradient are NaN, as in the
    # JAX twin: mask * (p + x) is 0 with zero gradient inside and NaN with NaN gradient outside.
    bce = F.binary_cross_entropy(torch.where(valid, probs, 0.5), torch.where(valid, x, 0.5),
                                 reduction="none")
    nan_outside = torch.zeros_like(probs).masked_fill(~valid, math.nan)
    return _sum_per_example(bce + nan_outside * (probs + x))


def mse_sum(x: torch.Tensor, mean: torch.Tensor) -> torch.Tensor:
    """Squared error summed over pixels: sum_i (x_i - mean_i)^2 (the book's AE/VAE).

    Equals the Gaussian NLL with variance 1/2 up to the constant D/2 * log(pi).

    Args:
      x: (B, ...) targets.
      mean: (B, ...) reconstructions (sigmoid outputs).
    Returns:
      (B,) per example.
    """
    return _sum_per_example((x.to(mean.dtype) - mean).square())


def mse_mean(x: torch.Tensor, mean: torch.Tensor) -> torch.Tensor:
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


def _gaussian_nll(x: torch.Tensor, mean: torch.Tensor, log_sigma: torch.Tensor) -> torch.Tensor:
    """(B,) sum_i [ (x_i - mean_i)^2 / (2 sigma_i^2) + log sigma_i + log(2 pi) / 2 ]."""
    sq = (x.to(mean.dtype) - mean).square()
    nll = 0.5 * sq * torch.exp(-2.0 * log_sigma) + log_sigma + 0.5 * LOG_2PI
    return _sum_per_example(nll.expand(sq.shape))


def gaussian(x: torch.Tensor, mean: torch.Tensor, *, sigma: float = 1.0) -> torch.Tensor:
    """Gaussian NLL with a fixed standard deviation sigma (same for every pixel).

    Args:
      x: (B, ...) targets.
      mean: (B, ...) decoder means (sigmoid outputs).
      sigma: fixed standard deviation > 0.
    Returns:
      (B,) nats per example.
    """
    return _gaussian_nll(x, mean, torch.log(torch.as_tensor(sigma, dtype=mean.dtype)))


def gaussian_learned(
    x: torch.Tensor, mean: torch.Tensor, *, log_sigma: torch.Tensor
) -> torch.Tensor:
    """Gaussian NLL with a learned log standard deviation (a trainable parameter passed in).

    Args:
      x: (B, ...) targets.
      mean: (B, ...) decoder means.
      log_sigma: () global, or one example's shape (per-pixel), or (B, ...): broadcast to x.
    Returns:
      (B,) nats per example.
    """
    return _gaussian_nll(x, mean, torch.as_tensor(log_sigma, dtype=mean.dtype))


def gaussian_calibrated(
    x: torch.Tensor, mean: torch.Tensor, *, calibration: str = "batch", min_log_sigma: float = -6.0
) -> torch.Tensor:
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
    sq = (x.to(mean.dtype) - mean).square()
    if calibration == "batch":
        var = sq.mean()
    elif calibration == "example":
        var = sq.reshape(sq.shape[0], -1).mean(dim=1).reshape((-1,) + (1,) * (sq.dim() - 1))
    else:
        raise ValueError(f"calibration must be 'batch' or 'example', got {calibration!r}")
    var = var.clamp(min=math.exp(2.0 * min_log_sigma)).detach()
    return _gaussian_nll(x, mean, 0.5 * torch.log(var))


def continuous_bernoulli_log_norm(logits: torch.Tensor) -> torch.Tensor:
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
    a = logits.abs()
    small = a < _CB_TAYLOR_BELOW
    # Double-where: each branch only sees inputs where it is finite, so gradients stay finite.
    a_big = torch.where(small, torch.ones_like(a), a)
    direct = torch.log1p(torch.exp(-a_big)) - torch.log(-torch.expm1(-a_big) / a_big)
    u2 = (torch.where(small, logits, torch.zeros_like(logits)) / 2.0).square()
    series = 0.0
    for c in reversed(_CB_TAYLOR):  # Horner in u^2
        series = (series + c) * u2
    return torch.where(small, math.log(2.0) + series, direct)


def continuous_bernoulli(x: torch.Tensor, logits: torch.Tensor) -> torch.Tensor:
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
RECONSTRUCTION: dict[str, tuple[Callable[..., torch.Tensor], str]] = {
    "bernoulli": (bernoulli, "logits"),
    "bce_probs": (bce_probs, "probs"),
    "mse_sum": (mse_sum, "probs"),
    "mse_mean": (mse_mean, "probs"),
    "gaussian": (gaussian, "probs"),
    "gaussian_learned": (gaussian_learned, "probs"),
    "gaussian_calibrated": (gaussian_calibrated, "probs"),
    "continuous_bernoulli": (continuous_bernoulli, "logits"),
}


def _likelihood(likelihood) -> tuple[Callable[..., torch.Tensor], str]:
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


def reconstruction_nll(
    x: torch.Tensor, logits: torch.Tensor, likelihood, **recon_params
) -> torch.Tensor:
    """Per-example reconstruction NLL from the decoder's raw output.

    Args:
      x: data, any shape with B * prod(logits.shape[1:]) elements; reshaped to logits.shape
        (MLP decoders return (B, 784); for C = 1, NCHW and NHWC flatten to the same order).
      logits: (B, ...) the decoder's pre-sigmoid output.
      likelihood: a RECONSTRUCTION name, or a custom (fn, input_kind) pair.
      **recon_params: keyword parameters of the term (sigma, log_sigma, calibration, ...).
    Returns:
      (B,) nats per example.
    """
    fn, kind = _likelihood(likelihood)
    x = x.reshape(logits.shape).to(logits.dtype)
    return fn(x, torch.sigmoid(logits) if kind == "probs" else logits, **recon_params)


# ---------------------------------------------------------------------------------------------
# Gaussian latents: reparameterization, densities, KL to N(0, I).


def reparameterize(mean: torch.Tensor, logvar: torch.Tensor, eps: torch.Tensor) -> torch.Tensor:
    """z = mean + exp(logvar / 2) * eps (broadcasts eps's leading sample axes).

    Args:
      mean: (B, D) posterior means.
      logvar: (B, D) posterior log-variances.
      eps: (..., B, D) standard normal noise.
    Returns:
      (..., B, D) samples of q(z|x).
    """
    return mean + torch.exp(0.5 * logvar) * eps


def log_normal_pdf(x: torch.Tensor, mean: torch.Tensor, logvar: torch.Tensor) -> torch.Tensor:
    """Elementwise log N(x; mean, exp(logvar)) (no reduction; arguments broadcast).

    Returns:
      -(log(2 pi) + logvar + (x - mean)^2 exp(-logvar)) / 2, broadcast shape.
    """
    return -0.5 * (LOG_2PI + logvar + (x - mean).square() * torch.exp(-logvar))


def kl_normal_per_dim(mean: torch.Tensor, logvar: torch.Tensor) -> torch.Tensor:
    """KL(N(mean, exp(logvar)) || N(0, 1)) per latent dimension.

    (exp(logvar) + mean^2 - 1 - logvar) / 2, computed with expm1(logvar) - logvar so that
    near-collapsed dimensions (logvar ~ 0) keep their digits.

    Args:
      mean: (B, D).
      logvar: (B, D).
    Returns:
      (B, D) nats.
    """
    return 0.5 * (mean.square() + (torch.expm1(logvar) - logvar))


def kl_normal(mean: torch.Tensor, logvar: torch.Tensor) -> torch.Tensor:
    """KL(q(z|x) || N(0, I)) per example, log-variance form, summed over latent dimensions.

    Args:
      mean: (B, D).
      logvar: (B, D).
    Returns:
      (B,) nats.
    """
    return _sum_per_example(kl_normal_per_dim(mean, logvar))


def kl_normal_std(mean: torch.Tensor, std: torch.Tensor) -> torch.Tensor:
    """The same KL in the book's standard-deviation form: sum std^2/2 + mean^2/2 - log std - 1/2.

    Args:
      mean: (B, D).
      std: (B, D) standard deviations > 0.
    Returns:
      (B,) nats (equals kl_normal(mean, 2 log std)).
    """
    return _sum_per_example(0.5 * std.square() + 0.5 * mean.square() - torch.log(std) - 0.5)


def kl_monte_carlo(z: torch.Tensor, mean: torch.Tensor, logvar: torch.Tensor) -> torch.Tensor:
    """Single-sample KL estimates log q(z|x) - log N(z; 0, I), summed over the latent axis.

    Args:
      z: (..., B, D) samples (any leading sample axes).
      mean: (B, D).
      logvar: (B, D).
    Returns:
      (..., B) nats; its average over samples converges to kl_normal(mean, logvar).
    """
    zeros = torch.zeros((), dtype=z.dtype, device=z.device)
    return (log_normal_pdf(z, mean, logvar) - log_normal_pdf(z, zeros, zeros)).sum(dim=-1)


def log_standard_normal(z: torch.Tensor) -> torch.Tensor:
    """log N(z; 0, I) summed over the latent axis: (..., D) -> (...)."""
    zeros = torch.zeros((), dtype=z.dtype, device=z.device)
    return log_normal_pdf(z, zeros, zeros).sum(dim=-1)


def log_mixture(z: torch.Tensor, means: torch.Tensor, logvars: torch.Tensor) -> torch.Tensor:
    """log (1/K) sum_k N(z; means_k, exp(logvars_k)), the VampPrior's density, summed over D.

    The squared distances are expanded into matmuls (z^2 @ exp(-logvar).T - 2 z @ (mean
    exp(-logvar)).T + sum mean^2 exp(-logvar)), so (S, B, D) samples against K components never
    build an (S, B, K, D) tensor.

    Args:
      z: (..., D) samples.
      means, logvars: (K, D) component parameters.
    Returns:
      (...) nats.
    """
    prec = torch.exp(-logvars)  # (K, D)
    quad = (z.square() @ prec.T - 2.0 * (z @ (means * prec).T)
            + (means.square() * prec).sum(dim=-1))  # (..., K)
    log_k = -0.5 * (z.shape[-1] * LOG_2PI + logvars.sum(dim=-1) + quad)
    return torch.logsumexp(log_k, dim=-1) - math.log(means.shape[0])


def kl_single_sample(z: torch.Tensor, mean: torch.Tensor, logvar: torch.Tensor,
                     log_prior: Callable[[torch.Tensor], torch.Tensor] | None = None) -> torch.Tensor:
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
    return log_normal_pdf(z, mean, logvar).sum(dim=-1) - log_p


# ---------------------------------------------------------------------------------------------
# Estimators for evaluation.


def _log_weight_parts(x, mean, logvar, eps, decode, likelihood, log_prior=None, **recon_params):
    """(k, B) tensors log p(x|z), log p(z), log q(z|x) for z = mean + exp(logvar/2) * eps
    (`log_prior`: z (..., D) -> (...); None: the standard normal)."""
    k, b, d = eps.shape
    z = reparameterize(mean, logvar, eps)  # (k, B, D)
    logits = decode(z.reshape(k * b, d))  # (k*B, ...)
    x = x.reshape((1, b) + tuple(logits.shape[1:]))
    x_rep = x.expand((k,) + tuple(x.shape[1:])).reshape(logits.shape)
    log_px_z = -reconstruction_nll(x_rep, logits, likelihood, **recon_params).reshape(k, b)
    log_pz = (log_prior or log_standard_normal)(z)
    # log q(z|x) written in eps: identical as a function of (mean, logvar, eps), and exact even
    # where exp(-logvar) * (z - mean)^2 would cancel badly.
    log_qz_x = (-0.5 * (LOG_2PI + logvar + eps.square())).sum(dim=-1)
    return log_px_z, log_pz, log_qz_x


def log_importance_weights(
    x: torch.Tensor, mean: torch.Tensor, logvar: torch.Tensor, eps: torch.Tensor,
    decode: Callable[[torch.Tensor], torch.Tensor], likelihood="bernoulli", **recon_params,
) -> torch.Tensor:
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
    x: torch.Tensor, mean: torch.Tensor, logvar: torch.Tensor, eps: torch.Tensor,
    decode: Callable[[torch.Tensor], torch.Tensor], likelihood="bernoulli", *,
    chunk: int | None = None, **recon_params,
) -> torch.Tensor:
    """log p(x) ~ log (1/k) sum_k w_k (Burda et al. 2016), per example; a lower bound in mean.

    Args: as `log_importance_weights`, and
      chunk: decode the k samples `chunk` at a time, each chunk one (chunk * B, K) block through
        the decoder, combined with a running log-sum-exp, so memory stays bounded for k = 5000;
        None: all k at once. The same value up to float rounding (except gaussian_calibrated
        with calibration "batch", whose one sigma is then that of each decoded block).
    Returns:
      (B,) nats.
    """
    k = eps.shape[0]
    acc = None
    for c in range(0, k, chunk or k):
        lw = log_importance_weights(x, mean, logvar, eps[c: c + (chunk or k)], decode, likelihood,
                                    **recon_params)
        lse = torch.logsumexp(lw, dim=0)
        acc = lse if acc is None else torch.logaddexp(acc, lse)
    return acc - math.log(k)


def importance_sampled_nll(
    x: torch.Tensor, mean: torch.Tensor, logvar: torch.Tensor, eps: torch.Tensor,
    decode: Callable[[torch.Tensor], torch.Tensor], likelihood="bernoulli", *,
    chunk: int | None = None, **recon_params,
) -> torch.Tensor:
    """-importance_sampled_log_likelihood: the per-example NLL estimate (B,) in nats."""
    return -importance_sampled_log_likelihood(
        x, mean, logvar, eps, decode, likelihood, chunk=chunk, **recon_params
    )


def elbo_terms(x: torch.Tensor, out: Any, likelihood, *, log_prior=None, kl_estimate="analytic",
               **recon_params) -> dict[str, torch.Tensor]:
    """Per-example {"recon", "kl", "loss"} (each (B,), nats) for evaluation; loss = -ELBO.

    kl is the analytic KL(q(z|x) || N(0, I)) (`kl_estimate="analytic"`), or the single-sample
    estimate log q(out.z|x) - log p(out.z) (`kl_estimate="single_sample"`, and always when a
    `log_prior` other than the standard normal is given); 0 for autoencoders (out.logvar None).
    """
    if kl_estimate not in KL_ESTIMATES:
        raise ValueError(f"kl_estimate must be one of {KL_ESTIMATES}, got {kl_estimate!r}")
    recon = reconstruction_nll(x, out.logits, likelihood, **recon_params)
    if out.logvar is None:
        kl = torch.zeros_like(recon)
    elif log_prior is not None or kl_estimate == "single_sample":
        kl = kl_single_sample(out.z, out.mean, out.logvar, log_prior)
    else:
        kl = kl_normal(out.mean, out.logvar)
    return {"recon": recon, "kl": kl, "loss": recon + kl}


def bits_per_dim(nats, num_dims: int):
    """Convert nats per example to bits per dimension: nats / (num_dims * ln 2)."""
    return nats / (num_dims * math.log(2.0))


# ---------------------------------------------------------------------------------------------
# Schedules (pure functions of the global step).


def warmup_beta(step, warmup_steps, epoch_steps=0) -> torch.Tensor:
    """Linear KL warm-up: min(step / warmup_steps, 1); 1 when warmup_steps <= 0.

    With `epoch_steps` > 0 the step is rounded up to the end of its epoch, (step // epoch_steps
    + 1) * epoch_steps: one beta per epoch, min(e / W, 1) for 1-based epoch e when
    warmup_steps = W * epoch_steps (the VampPrior / Exemplar VAE code's `set_beta`).
    """
    if warmup_steps <= 0:
        return torch.tensor(1.0)
    step = torch.as_tensor(step, dtype=torch.float32)
    if epoch_steps > 0:
        step = (torch.floor(step / epoch_steps) + 1.0) * epoch_steps
    return (step / warmup_steps).clamp(0.0, 1.0)


def cyclical_beta(
    step, *, cycle_steps=None, n_cycles=4, total_steps=None, ratio=0.5
) -> torch.Tensor:
    """Cyclical annealing (Fu et al. 2019): tau = (step mod T) / T, beta = min(tau / ratio, 1).

    The period T is cycle_steps, or ceil(total_steps / n_cycles).
    """
    if cycle_steps is None:
        if total_steps is None:
            raise ValueError("cyclical annealing needs cycle_steps, or total_steps and n_cycles")
        cycle_steps = math.ceil(total_steps / n_cycles)
    period = max(float(cycle_steps), 1.0)
    tau = torch.remainder(torch.as_tensor(step, dtype=torch.float32), period) / period
    return (tau / ratio).clamp(max=1.0)


def capacity_schedule(step, c_max, c_steps) -> torch.Tensor:
    """Burgess et al. 2018 capacity C = c_max * min(step / c_steps, 1) (c_max when c_steps <= 0)."""
    if c_steps <= 0:
        return torch.tensor(float(c_max))
    step = torch.as_tensor(step, dtype=torch.float32)
    return c_max * (step / c_steps).clamp(0.0, 1.0)


# ---------------------------------------------------------------------------------------------
# Batch-statistic pieces of the variants.


def log_importance_weight_matrix(batch_size: int, dataset_size) -> torch.Tensor:
    """Minibatch stratified sampling weights of Chen et al. 2018, as log (B, B).

    Row i (z_i drawn from x_i): W[i, i] = 1/N, W[i, (i+1) mod B] = (N - M) / (N M), else 1/M,
    with M = B - 1; each row sums to 1. (The reference code's strided assignment fills columns
    0 and 1 instead of the diagonal, rtqichen/beta-tcvae PR #1; this is the paper's estimator.)
    """
    if batch_size < 2:
        raise ValueError("minibatch stratified sampling needs batch_size >= 2")
    n = float(dataset_size)
    m = batch_size - 1
    w = torch.full((batch_size, batch_size), 1.0 / m)
    idx = torch.arange(batch_size)
    w[idx, idx] = 1.0 / n
    w[idx, (idx + 1) % batch_size] = (n - m) / (n * m)
    return torch.log(w)


def tc_decomposition(
    z: torch.Tensor, mean: torch.Tensor, logvar: torch.Tensor, *, dataset_size,
    sampling: str = "mws",
) -> dict[str, torch.Tensor]:
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
        log_w = -math.log(float(dataset_size) * b)
        log_qz = torch.logsumexp(mat.sum(dim=-1), dim=1) + log_w
        log_prod = (torch.logsumexp(mat, dim=1) + log_w).sum(dim=-1)
    elif sampling == "mss":
        log_w = log_importance_weight_matrix(b, dataset_size).to(z)  # (B, B), z's dtype and device
        log_qz = torch.logsumexp(log_w + mat.sum(dim=-1), dim=1)
        log_prod = torch.logsumexp(log_w[:, :, None] + mat, dim=1).sum(dim=-1)
    else:
        raise ValueError(f"sampling must be 'mws' or 'mss', got {sampling!r}")
    zeros = torch.zeros((), dtype=z.dtype, device=z.device)
    return {
        "log_qz_x": log_normal_pdf(z, mean, logvar).sum(dim=-1),
        "log_qz": log_qz,
        "log_prod_qzi": log_prod,
        "log_pz": log_normal_pdf(z, zeros, zeros).sum(dim=-1),
    }


@torch.no_grad()
def posterior_diagnostics(z: torch.Tensor, mean: torch.Tensor, logvar: torch.Tensor, *,
                          dataset_size, mi_tc: bool = True) -> dict[str, torch.Tensor]:
    """Posterior-collapse diagnostics of one batch (not differentiated; every VAE run tracks them).

    kl_per_dim: (D,) batch mean of KL(q(z_d|x) || N(0, 1)); mean_sum, mean_sq: (D,) sums of the
    posterior means and their squares over the batch (an epoch's Var_x E_q[z_d] follows, hence
    the active units of Burda et al.); mutual_info: the minibatch estimate of I(x; z) =
    E[log q(z|x) - log q(z)] and total_correlation: E[log q(z) - log prod_d q(z_d)], both with
    `tc_decomposition`'s stratified (mss) estimator, which gives 0 for identical posteriors
    (a collapsed encoder). dataset_size: N of the training set. mi_tc: whether to compute
    mutual_info and total_correlation; when False both are 0 (the trainer computes them on
    `vaecommon.lifecycle.sampled_step` steps only).
    """
    z, mean, logvar = z.detach(), mean.detach(), logvar.detach()
    if mi_tc:
        d = tc_decomposition(z, mean, logvar, dataset_size=dataset_size, sampling="mss")
        mi, tc = (d["log_qz_x"] - d["log_qz"]).mean(), (d["log_qz"] - d["log_prod_qzi"]).mean()
    else:
        mi = tc = z.new_zeros(())
    return {"kl_per_dim": kl_normal_per_dim(mean, logvar).mean(0),
            "mean_sum": mean.sum(0), "mean_sq": mean.square().sum(0),
            "mutual_info": mi, "total_correlation": tc}


def dip_penalties(cov: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """DIP-VAE penalties of a (D, D) covariance: (sum_{i!=j} C_ij^2, sum_i (C_ii - 1)^2)."""
    diag = torch.diagonal(cov)
    # Square the off-diagonal entries themselves: sum(C^2) - sum(diag^2) would cancel.
    offdiag = (cov - torch.diag(diag)).square().sum()
    return offdiag, (diag - 1.0).square().sum()


def _batch_cov(v: torch.Tensor) -> torch.Tensor:
    """(B, D) -> (D, D) covariance over the batch, 1/B normalised (batch-duplication invariant).

    Broadcast products rather than a matmul: exact float32 on any backend, TF32 or not.
    """
    c = v - v.mean(dim=0)
    return (c[:, :, None] * c[:, None, :]).mean(dim=0)


def mmd(
    z: torch.Tensor, prior_z: torch.Tensor, *, kernel: str = "rbf", kernel_scale=None
) -> torch.Tensor:
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
        d2 = (a[:, None, :] - b[None, :, :]).square().sum(dim=-1)
        if kernel == "rbf":
            return torch.exp(-d2 / c)
        if kernel == "imq":
            return c / (c + d2)
        raise ValueError(f"kernel must be 'rbf' or 'imq', got {kernel!r}")

    return k(z, z).mean() + k(prior_z, prior_z).mean() - 2.0 * k(z, prior_z).mean()


# ---------------------------------------------------------------------------------------------
# Objectives: loss, terms = fn(x, out, *, likelihood, step, reduction, decode, eps, **params).
# Leftover keyword params go to the reconstruction term (sigma, log_sigma, ...).


def _finish(per_example: dict[str, torch.Tensor], reduction: str, **scalars):
    """Reduce every per-example (B,) value with `reduce_batch`; add hyperparameter scalars."""
    terms = {name: reduce_batch(v, reduction) for name, v in per_example.items()}
    terms.update({name: torch.as_tensor(v, dtype=torch.float32) for name, v in scalars.items()})
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
    penalty = gamma * (t["kl"].mean() - c).abs()
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
    floored = kl_d.mean(dim=0).clamp(min=lam).sum()  # ()
    floored = floored.expand(recon.shape)
    return _finish({"loss": recon + floored, "recon": recon, "kl": kl_d.sum(dim=-1),
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
    ones = torch.ones_like(t["kl"])
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
    cov = _batch_cov(out.mean) + torch.diag(torch.exp(out.logvar).mean(dim=0))
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
    m = mmd(out.z, eps.to(out.z.dtype), kernel=kernel, kernel_scale=kernel_scale)
    loss = t["recon"] + (1.0 - alpha) * t["kl"] + (alpha + lam - 1.0) * m
    return _finish({"loss": loss, "recon": t["recon"], "kl": t["kl"],
                    "mmd": m * torch.ones_like(t["kl"])}, reduction)


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
        x, out.mean, out.logvar, eps.to(out.mean.dtype), decode, likelihood,
        log_prior=log_prior, **recon_params
    )
    lw = log_px_z + log_pz - log_qz_x  # (k, B)
    bound = torch.logsumexp(lw, dim=0) - math.log(lw.shape[0])
    return _finish({"loss": -bound, "recon": -log_px_z.mean(dim=0),
                    "kl": kl_normal(out.mean, out.logvar), "iwae_bound": bound,
                    "elbo": lw.mean(dim=0)}, reduction)


KL_ESTIMATES = ("analytic", "single_sample")
"""How elbo/beta_vae/kl_warmup estimate KL(q || p): closed form (standard prior only), or
log q(z|x) - log p(z) at the reparameterized sample."""

OBJECTIVES: dict[str, Callable[..., tuple[torch.Tensor, dict[str, torch.Tensor]]]] = {
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
