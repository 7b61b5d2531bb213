"""Forward, KL and reconstruction parity of the MLP presets over random latent sizes, batch sizes,
input values and eps: the check test_properties.py drives with hypothesis and the parity report
calls with fixed draws (`report_cases`). No pytest or hypothesis here.

Each example builds a fresh torch model (narrow hidden layers so examples are cheap; latent_dim
drawn), loads its canonical weights into the JAX twin, and compares encode (mean, logvar),
reparameterize, decode_logits, the full forward, and the per-example reconstruction term and KL
(`losses.elbo_terms` with the preset's likelihood). Inputs cover uniform grey values, binary
images, all-zero and all-one images and sparse strokes; eps is drawn at a random scale.
"""

from __future__ import annotations

from typing import Any

import jax
import jax.numpy as jnp
import numpy as np
import torch
from flax import nnx

from jaxvae import losses as jlosses
from parity_tests.twins import Measurement, make_pair, measure, seed_for, to_nhwc
from torchvae import losses as tlosses
from vaecommon import presets

MLP_FAMILIES = ("pytorch_examples", "flax_examples", "pytorch_mnist_vae", "leaky_vae", "leaky_vae_256", "manning_ae",
                "simple_ae", "simple_vae")
MLP_PRESETS = [n for n in presets.list_models() if presets.PRESETS[n].family in MLP_FAMILIES]
INPUT_KINDS = ("uniform", "binary", "zeros", "ones", "sparse")


def small_overrides(preset: str, latent_dim: int) -> dict[str, Any]:
    """Narrow hidden layers of the preset's shape (leaky_vae_256 keeps its 2-wide bottleneck)."""
    spec = presets.PRESETS[preset]
    if spec.family == "leaky_vae_256":
        hidden = (48, spec.hidden[1])
    elif len(spec.hidden) == 2:
        hidden = (48, 24)
    else:
        hidden = (48,)
    return {"latent_dim": latent_dim, "hidden": hidden}


def make_inputs(kind: str, batch: int, rng: np.random.Generator) -> np.ndarray:
    """(B, 1, 28, 28) float32 in [0, 1] of the given kind."""
    shape = (batch, 1, 28, 28)
    if kind == "uniform":
        return rng.uniform(size=shape).astype(np.float32)
    if kind == "binary":
        return (rng.uniform(size=shape) < 0.3).astype(np.float32)
    if kind == "zeros":
        return np.zeros(shape, np.float32)
    if kind == "ones":
        return np.ones(shape, np.float32)
    x = np.zeros(shape, np.float32)  # sparse: a few bright strokes, like a digit
    for b in range(batch):
        r = rng.integers(4, 24)
        x[b, 0, r, 4:24] = rng.uniform(0.5, 1.0, size=20)
        x[b, 0, 4:24, r] = rng.uniform(0.5, 1.0, size=20)
    return x


def check_forward_kl_recon(preset: str, *, latent_dim: int, batch: int, kind: str, eps_scale: float,
                           seed: int) -> list[Measurement]:
    """encode / reparameterize / decode_logits / forward / recon and KL per example, JAX vs torch."""
    check = "properties"
    pair = make_pair(preset, seed=seed, **small_overrides(preset, latent_dim))
    spec = pair.spec
    rng = np.random.default_rng(seed)
    x = make_inputs(kind, batch, rng)
    eps = (rng.normal(size=(batch, latent_dim)) * eps_scale).astype(np.float32)
    tm, jm = pair.torch_model, pair.jax_model
    xt, xj = torch.from_numpy(x), jnp.asarray(to_nhwc(x))
    label = f"d={latent_dim} B={batch} {kind} eps*{eps_scale:.2g}: "
    out: list[Measurement] = []

    def cmp(name, j, t, tol="forward"):
        out.append(measure(np.asarray(j), t.detach().numpy() if isinstance(t, torch.Tensor) else t,
                           check=check, preset=preset, name=label + name, tol=tol))

    z_in = eps if spec.is_vae else None
    j = _jax_side(jm, xj, jnp.asarray(eps), spec.likelihood, spec.is_vae)  # one compiled program
    with torch.no_grad():
        t_mean, t_logvar = tm.encode(xt)
        cmp("encode mean", j["mean"], t_mean)
        if spec.is_vae:
            cmp("encode logvar", j["logvar"], t_logvar)
            cmp("reparameterize", j["z"], tm.reparameterize(t_mean, t_logvar, torch.from_numpy(eps)))
        z = torch.from_numpy(z_in) if spec.is_vae else t_mean
        cmp("decode_logits (same z)", j["decode_logits"], tm.decode_logits(z))
        t_out = tm(xt, eps=torch.from_numpy(eps))
        cmp("forward logits", j["logits"], t_out.logits)
        tt = tlosses.elbo_terms(xt, t_out, spec.likelihood)
        for k in ("recon", "kl"):
            cmp(f"per-example {k}", j[k], tt[k], tol="model_loss_terms")
    return out


def _jax_side(model, x, eps, likelihood: str, is_vae: bool) -> dict[str, np.ndarray]:
    """The JAX values compared, in one jitted call (eager dispatch would cost ~1 s per example).

    decode_logits is evaluated at z = eps for VAEs (the same z torch gets) and at the code for AEs.
    """
    graphdef, state = nnx.split(model)

    @jax.jit
    def run(state, x, eps):
        m = nnx.merge(graphdef, state)
        mean, logvar = m.encode(x)
        res = {"mean": mean}
        if is_vae:
            res["logvar"] = logvar
            res["z"] = m.reparameterize(mean, logvar, eps)
        res["decode_logits"] = m.decode_logits(eps if is_vae else mean)
        out = m(x, eps=eps)
        res["logits"] = out.logits
        res.update({k: v for k, v in jlosses.elbo_terms(x, out, likelihood).items() if k != "loss"})
        return res

    return {k: np.asarray(v) for k, v in run(state, x, eps).items()}


def report_cases() -> list[dict[str, Any]]:
    """Fixed draws for the report: every MLP preset once, input kinds and sizes rotating."""
    return [dict(preset=p, latent_dim=1 + (3 * i) % 16, batch=1 + (2 * i) % 9,
                 kind=INPUT_KINDS[i % len(INPUT_KINDS)], eps_scale=(0.5, 1.0, 3.0)[i % 3],
                 seed=seed_for("properties", p))
            for i, p in enumerate(MLP_PRESETS)]
