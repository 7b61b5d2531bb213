"""Optimizers beyond torch.optim's own. Twin: `jaxvae/optim.py`.

`AdamNormGrad`: the VampPrior / Exemplar VAE code's optimizer (utils/optimizer.py in
jmtomczak/vae_vampprior and sajadn/Exemplar-VAE), with the same arithmetic written for current
torch. Each parameter tensor's gradient is divided by its own L2 norm before Adam:

    g' = g / (||g||_2 + 1e-7)             per tensor
    g' = g' + weight_decay * p            (L2, after the normalisation, as the reference does)
    m = b1 m + (1 - b1) g'                v = b2 v + (1 - b2) g'^2
    p -= lr * sqrt(1 - b2^t) / (1 - b1^t) * m / (sqrt(v) + eps)

The denominator is the reference's: eps is added to sqrt(v), not to sqrt(v / (1 - b2^t)) as in
torch.optim.Adam.
"""

from __future__ import annotations

import math

import torch

__all__ = ["NORM_EPS", "AdamNormGrad"]

NORM_EPS = 1e-7
"""Added to each tensor's gradient norm (the reference's constant)."""


class AdamNormGrad(torch.optim.Optimizer):
    """Adam on per-tensor normalised gradients (see the module docstring)."""

    def __init__(self, params, lr: float = 1e-3, betas: tuple[float, float] = (0.9, 0.999),
                 eps: float = 1e-8, weight_decay: float = 0.0):
        super().__init__(params, dict(lr=lr, betas=betas, eps=eps, weight_decay=weight_decay))

    @torch.no_grad()
    def step(self, closure=None):
        loss = None
        if closure is not None:
            with torch.enable_grad():
                loss = closure()
        for group in self.param_groups:
            b1, b2 = group["betas"]
            for p in group["params"]:
                if p.grad is None:
                    continue
                g = p.grad / (torch.linalg.vector_norm(p.grad) + NORM_EPS)
                if group["weight_decay"]:
                    g = g + group["weight_decay"] * p
                state = self.state[p]
                if not state:
                    state["step"] = torch.zeros((), dtype=torch.float32)
                    state["exp_avg"] = torch.zeros_like(p)
                    state["exp_avg_sq"] = torch.zeros_like(p)
                state["step"] += 1
                t = float(state["step"])
                state["exp_avg"].mul_(b1).add_(g, alpha=1.0 - b1)
                state["exp_avg_sq"].mul_(b2).addcmul_(g, g, value=1.0 - b2)
                step = group["lr"] * math.sqrt(1.0 - b2**t) / (1.0 - b1**t)
                p.addcdiv_(state["exp_avg"], state["exp_avg_sq"].sqrt().add_(group["eps"]),
                           value=-step)
        return loss
