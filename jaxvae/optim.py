"""Optimizers beyond optax's own. Twin: `torchvae/optim.py`.

`adam_norm_grad`: the VampPrior / Exemplar VAE code's `AdamNormGrad` (utils/optimizer.py in
jmtomczak/vae_vampprior and sajadn/Exemplar-VAE), written as an optax transformation. Each
parameter tensor's gradient is divided by its own L2 norm before Adam:

    g' = g / (||g||_2 + 1e-7)             per tensor
    g' = g' + weight_decay * p            (L2, after the normalisation, as the reference does)
    m = b1 m + (1 - b1) g'                v = b2 v + (1 - b2) g'^2
    update = sqrt(1 - b2^t) / (1 - b1^t) * m / (sqrt(v) + eps)     (then p -= lr * update)

The denominator is the reference's: eps is added to sqrt(v), not to sqrt(v / (1 - b2^t)) as in
torch.optim.Adam / optax.adam, so the two differ slightly while v is small.
"""

from __future__ import annotations

from typing import Any, NamedTuple

import jax
import jax.numpy as jnp
import optax

__all__ = ["NORM_EPS", "AdamNormGradState", "scale_by_adam_norm_grad"]

NORM_EPS = 1e-7
"""Added to each tensor's gradient norm (the reference's constant)."""


class AdamNormGradState(NamedTuple):
    count: jax.Array  # int32 steps taken
    mu: Any  # first moments, like the params
    nu: Any  # second moments


def scale_by_adam_norm_grad(b1: float = 0.9, b2: float = 0.999, eps: float = 1e-8,
                            weight_decay: float = 0.0) -> optax.GradientTransformation:
    """The AdamNormGrad direction without the learning rate (see the module docstring).

    Args:
      b1, b2, eps: Adam's constants (the reference's defaults).
      weight_decay: L2 added to the normalised gradient (needs `params` in `update`).
    """

    def init_fn(params):
        zeros = jax.tree.map(jnp.zeros_like, params)
        return AdamNormGradState(jnp.zeros((), jnp.int32), zeros, jax.tree.map(jnp.zeros_like, params))

    def update_fn(updates, state, params=None):
        g = jax.tree.map(lambda u: u / (jnp.linalg.norm(u.reshape(-1)) + NORM_EPS), updates)
        if weight_decay:
            g = jax.tree.map(lambda u, p: u + weight_decay * p, g, params)
        mu = jax.tree.map(lambda m, u: b1 * m + (1.0 - b1) * u, state.mu, g)
        nu = jax.tree.map(lambda v, u: b2 * v + (1.0 - b2) * jnp.square(u), state.nu, g)
        count = state.count + 1
        t = count.astype(jnp.float32)
        step = jnp.sqrt(1.0 - b2**t) / (1.0 - b1**t)
        new = jax.tree.map(lambda m, v: step * m / (jnp.sqrt(v) + eps), mu, nu)
        return new, AdamNormGradState(count, mu, nu)

    return optax.GradientTransformation(init_fn, update_fn)
