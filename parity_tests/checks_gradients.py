"""Gradients of the loss w.r.t. every parameter: torch autograd vs `jax.grad`, and float64 FD.

The checks of test_gradients.py and of the parity report (`scripts/parity.py`); no pytest here,
so the report runs from an install without the test dependencies.

* `check_gradients(preset)`: every preset with its default objective and likelihood, the same
  canonical weights (torch init -> `torchvae.convert` -> `jaxvae.convert`), the same NumPy batch
  and eps; gradients mapped to canonical (torch) names and layouts by `jaxvae.convert`.
* `check_objective_gradients(objective)`: every objective of `losses.OBJECTIVES` on one small
  preset, with the extra noise `losses.extra_noise_shape` asks for (IWAE samples, InfoVAE prior
  samples) injected into both.
* `check_gradients_fd(preset)`: the JAX gradient against central finite differences in float64
  on a few random coordinates. Soundness: for the MLP presets the FD truth is the float64 NumPy
  forward pass (written here from the canonical weights, torch layout) + the float64 oracle loss,
  and the JAX gradient is taken in float64 (`jax.enable_x64`) through the real `jaxvae.models` /
  `jaxvae.losses` code: both sides are float64, so the comparison measures the FD error
  (worst seen 9e-8), not float32 rounding, and is independent of torch. For conv_vae the FD is of the
  JAX float64 forward itself (its forward is checked against torch by the forward tests), so
  that case checks the autodiff rules (conv, transposed conv with `transpose_kernel=True`, the
  flatten permutation) only.

Tolerances: `TOL["gradients"]` (STYLE §6), except `TOL["gradients_amplified"]` for the presets
with train-mode BatchNorm and the objectives in `AMPLIFIED_OBJECTIVES` (float32 rounding
amplified in both frameworks alike: see there); `TOL["model_loss_terms"]` for the loss terms
after a model forward; `TOL["gradients_fd"]` for the float64 FD check. Biases feeding a
train-mode BatchNorm have a true gradient of exactly 0 (the batch mean removes them): each
framework is checked against 0 there.
"""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np
from flax import nnx
from jax.flatten_util import ravel_pytree

from jaxvae import losses as jlosses
from parity_tests import oracle
from parity_tests.twins import (BATCH, OBJECTIVE_PARAMS, STEP, Measurement, compare_dicts,
                                draw_inputs, flag, jax_loss_and_grads, make_pair, measure,
                                parity_overrides, preset_label, seed_for, to_nhwc,
                                torch_loss_and_grads, torch_param_names)
from vaecommon import presets

PRESETS = presets.list_models()
BATCHNORM_FAMILIES = ("manning_glasses_vae", "resnet_vae")
# Biases followed by a train-mode BatchNorm: d loss / d bias = 0 exactly (BN subtracts the batch
# mean, which absorbs any per-channel constant).
BIAS_BEFORE_BATCHNORM = {
    "manning_glasses_vae": ("encoder.conv2.bias", "decoder.decoder_conv.0.bias",
                            "decoder.decoder_conv.3.bias"),
}

# The small preset the objective registry runs on: pytorch_examples' architecture, narrower.
OBJECTIVE_PRESET = "pytorch_examples"
OBJECTIVE_OVERRIDES = {"hidden": (64,), "latent_dim": 8}
OBJECTIVES = sorted(jlosses.OBJECTIVES)

FD_PRESETS = ("pytorch_examples", "leaky_vae_256", "conv_vae")
FD_COORDS_PER_TENSOR = 2


# Objectives whose float32 gradients carry amplified rounding error in BOTH frameworks (each
# measured against a float64 run of itself: errors of the same size, so no twin discrepancy):
# a penalty weight of 100-1000 multiplies a difference of O(1) terms, or IWAE's importance
# weights softmax(log w) turn the ~1e-4 rounding of log w (about -550 nats) into relative error.
AMPLIFIED_OBJECTIVES = {
    "capacity": "gamma=100 times |KL - C|",
    "dip_vae_i": "lambda_d=100 times the covariance penalty",
    "info_vae": "lam=1000 times the MMD",
    "iwae": "softmax of log weights of about -550 nats",
}


def grad_tol(spec: presets.ModelSpec) -> str:
    """Train-mode BatchNorm over a batch of 4 amplifies float32 rounding (1/sigma of the batch
    statistics): each framework's error vs float64 is up to ~3e-5 on O(10) gradients."""
    return "gradients_amplified" if spec.family in BATCHNORM_FAMILIES else "gradients"


# ---- twin gradients per preset ---------------------------------------------------------------------


def check_gradients(preset: str) -> list[Measurement]:
    """Loss terms and d loss / d every parameter, JAX vs torch, for the preset's default objective."""
    check = "gradients"
    ov = parity_overrides(preset)
    pair = make_pair(preset, seed=seed_for(check, preset), **ov)
    label = preset_label(preset)
    spec = pair.spec
    rng = np.random.default_rng(seed_for(check, preset, "data"))
    x, eps, extra = draw_inputs(spec, BATCH, rng)
    kw = dict(objective=spec.objective, likelihood=spec.likelihood)
    t_terms, t_grads = torch_loss_and_grads(pair.torch_model, x, eps, extra, **kw)
    names = torch_param_names(pair.torch_model)
    j_terms, j_grads = jax_loss_and_grads(pair.jax_model, x, eps, extra, names=names, **kw)
    out = compare_dicts(j_terms, t_terms, check=check, preset=label, tol="model_loss_terms",
                        prefix="terms.")
    out.append(flag(sorted(j_grads) == sorted(t_grads) and len(names) > 0, check=check,
                    preset=label, name="parameter names",
                    message=f"jax {sorted(j_grads)} vs torch {sorted(t_grads)}"))
    tol = grad_tol(spec)
    zero = set(BIAS_BEFORE_BATCHNORM.get(preset, ()))
    for k in names:
        if k in zero:  # truth is 0: each framework against 0, not against the other
            for fw, g in (("jax", j_grads[k]), ("torch", t_grads[k])):
                out.append(measure(g, np.zeros_like(g), check=check, preset=label,
                                   name=f"d/d{k} ({fw} vs exact 0)", tol=tol))
            continue
        out.append(measure(j_grads[k], t_grads[k], check=check, preset=label, name=f"d/d{k}",
                           tol=tol))
    return out


# ---- every objective of the registry ------------------------------------------------------------------


def check_objective_gradients(objective: str) -> list[Measurement]:
    """Objective terms and gradients, JAX vs torch, on the small preset (likelihood: the preset's)."""
    check = f"objective:{objective}"
    pair = make_pair(OBJECTIVE_PRESET, seed=seed_for(check), **OBJECTIVE_OVERRIDES)
    spec = pair.spec
    params = OBJECTIVE_PARAMS.get(objective, {})
    rng = np.random.default_rng(seed_for(check, "data"))
    x, eps, extra = draw_inputs(spec, BATCH, rng, objective=objective, objective_params=params)
    kw = dict(objective=objective, likelihood=spec.likelihood, step=STEP, params=params)
    t_terms, t_grads = torch_loss_and_grads(pair.torch_model, x, eps, extra, **kw)
    names = torch_param_names(pair.torch_model)
    j_terms, j_grads = jax_loss_and_grads(pair.jax_model, x, eps, extra, names=names, **kw)
    preset = f"{OBJECTIVE_PRESET}(small)"
    out = compare_dicts(j_terms, t_terms, check=check, preset=preset, tol="model_loss_terms",
                        prefix="terms.")
    tol = "gradients_amplified" if objective in AMPLIFIED_OBJECTIVES else "gradients"
    out += compare_dicts(j_grads, t_grads, check=check, preset=preset, tol=tol, prefix="d/d")
    return out


# ---- float64 finite differences ---------------------------------------------------------------------


class _Out:
    """The fields the oracle objectives read (a ModelOutput stand-in)."""

    def __init__(self, logits, mean, logvar, z):
        self.logits, self.mean, self.logvar, self.z = logits, mean, logvar, z


def _linear(h, w, name):
    return h @ w[f"{name}.weight"].T + w[f"{name}.bias"]


def _leaky(h, slope):
    return np.where(h > 0, h, slope * h)


def numpy_forward(spec: presets.ModelSpec, w: dict[str, np.ndarray], x: np.ndarray,
                  eps: np.ndarray) -> _Out:
    """float64 NumPy forward of the MLP presets from canonical (torch-layout) weights.

    Written from the source architectures (pytorch/examples VAE; the leaky notebooks), not from
    either framework's code. x: (B, 784); returns pre-sigmoid logits (B, 784).
    """
    h = x.reshape(x.shape[0], -1)
    if spec.family == "pytorch_examples":
        h1 = np.maximum(_linear(h, w, "fc1"), 0.0)
        mean, logvar = _linear(h1, w, "fc21"), _linear(h1, w, "fc22")
        z = mean + np.exp(0.5 * logvar) * eps
        logits = _linear(np.maximum(_linear(z, w, "fc3"), 0.0), w, "fc4")
    elif spec.family in ("leaky_vae", "leaky_vae_256"):
        s = spec.negative_slope
        h = _leaky(_linear(_leaky(_linear(h, w, "encoder.0"), s), w, "encoder.2"), s)
        mean, logvar = _linear(h, w, "mean_layer"), _linear(h, w, "logvar_layer")
        scale = logvar if spec.reparam == "logvar_as_scale" else np.exp(0.5 * logvar)
        z = mean + scale * eps
        d = _leaky(_linear(z, w, "decoder.0"), s)
        logits = _linear(_leaky(_linear(d, w, "decoder.2"), s), w, "decoder.4")
    else:
        raise NotImplementedError(spec.family)
    return _Out(logits, mean, logvar, z)


def _fd(f, v: float, h_rel: float = 1e-6) -> float:
    h = h_rel * max(1.0, abs(v))
    return (f(v + h) - f(v - h)) / (2.0 * h)


def check_gradients_fd(preset: str) -> list[Measurement]:
    """JAX float64 gradient vs float64 central FD on FD_COORDS_PER_TENSOR coordinates per tensor."""
    check = "gradients_fd"
    pair = make_pair(preset, seed=seed_for(check, preset))
    spec = pair.spec
    rng = np.random.default_rng(seed_for(check, preset, "data"))
    x, eps, _ = draw_inputs(spec, BATCH, rng)
    if spec.family == "conv_vae":
        return [measure(g, want, check=check, preset=preset, name=name, tol="gradients_fd")
                for name, g, want in _jax_self_fd(pair.jax_model, x, eps, spec, rng)]
    names = torch_param_names(pair.torch_model)
    with jax.enable_x64(True):
        _, g64 = jax_loss_and_grads(pair.jax_model, x, eps, None, names=names, dtype=jnp.float64,
                                    objective=spec.objective, likelihood=spec.likelihood)
    w64 = {k: v.astype(np.float64) for k, v in pair.weights.items()}
    x64, eps64 = x.astype(np.float64), eps.astype(np.float64)

    def oracle_loss(k, ix, v):
        w = dict(w64)
        w[k] = w64[k].copy()
        w[k][ix] = v
        o = numpy_forward(spec, w, x64, eps64)
        return oracle.OBJECTIVES[spec.objective](x64, o, likelihood=spec.likelihood)[0]

    out: list[Measurement] = []
    for k in names:
        for j in rng.choice(w64[k].size, size=min(FD_COORDS_PER_TENSOR, w64[k].size), replace=False):
            ix = tuple(int(i) for i in np.unravel_index(j, w64[k].shape))
            want = _fd(lambda v: oracle_loss(k, ix, v), w64[k][ix])
            out.append(measure(g64[k][ix], want, check=check, preset=preset,
                               name=f"d/d{k}{list(ix)}", tol="gradients_fd"))
    return out


def _jax_self_fd(model, x, eps, spec, rng) -> list[tuple[str, float, float]]:
    """(name, jax.grad, FD) on random coordinates of the flattened float64 JAX params.

    Both sides are the JAX float64 loss, so this checks the autodiff rules only (the forward is
    checked against torch elsewhere). Names are JAX paths (kernels in JAX layout).
    """
    with jax.enable_x64(True):
        graphdef, params, rest = nnx.split(model, nnx.Param, ...)
        cast = (lambda a: a.astype(jnp.float64) if jnp.issubdtype(a.dtype, jnp.floating) else a)
        params, rest = jax.tree.map(cast, params), jax.tree.map(cast, rest)
        flat, unravel = ravel_pytree(params)
        xj, ej = jnp.asarray(to_nhwc(x), jnp.float64), jnp.asarray(eps, jnp.float64)

        def loss(v):
            m = nnx.merge(graphdef, unravel(v), rest, copy=True)
            return jlosses.OBJECTIVES[spec.objective](xj, m(xj, eps=ej),
                                                       likelihood=spec.likelihood)[0]

        grad = np.asarray(jax.jit(jax.grad(loss))(flat))
        loss_j = jax.jit(loss)
        base = np.asarray(flat)
        # leaf boundaries -> readable names
        leaves = [(".".join(map(str, p)), int(np.size(v)))
                  for p, v in nnx.to_flat_state(params)]
        starts = np.cumsum([0] + [n for _, n in leaves])
        out = []
        for li, (path, n) in enumerate(leaves):
            for j in rng.choice(n, size=min(FD_COORDS_PER_TENSOR, n), replace=False):
                i = int(starts[li] + j)

                def f(v, i=i):
                    w = base.copy()
                    w[i] = v
                    return float(loss_j(jnp.asarray(w)))

                out.append((f"d/d{path}[{int(j)}] (jax layout)", float(grad[i]), _fd(f, base[i])))
    return out
