"""Paired models for the parity tests: a torch model and its Flax twin holding the same weights.

`make_pair(name, seed=...)` builds the torch model from a seeded `torch.Generator` (torch's own
init), optionally gives every BatchNorm non-trivial affine parameters and running statistics
(from the same seed: identity BatchNorms would hide a swapped weight/bias or mean/var), and
converts the result into the JAX model through the canonical format, the path users take.
"""

from __future__ import annotations

from typing import NamedTuple

import jax.numpy as jnp
import numpy as np
import torch

from jaxvae import convert as jconvert
from jaxvae import models as jmodels
from torchvae import convert as tconvert
from torchvae import models as tmodels
from vaecommon import presets

PRESETS = presets.list_models()
# The glasses VAE is compared at 64 px (same layers, 31x31 -> 7x7 feature maps); its 256 px
# parameter count and shapes are pinned in jaxvae/models_test.py and torchvae/models_test.py.
SMALL = {"manning_glasses_vae": {"image_size": 64}}
CONV_PRESETS = [p for p in PRESETS
                if presets.PRESETS[p].family in ("glasses_vae", "conv_vae", "resnet_vae")]
BN_PRESETS = ["manning_glasses_vae", "resnet_vae"]


class Pair(NamedTuple):
    torch: torch.nn.Module
    jax: jmodels.VAEBase


def overrides(name: str) -> dict:
    return dict(SMALL.get(name, {}))


def perturb_batchnorm_(model: torch.nn.Module, generator: torch.Generator) -> None:
    """Random BatchNorm weight/bias/running stats/counter, in place (torch side)."""
    with torch.no_grad():
        for m in model.modules():
            if isinstance(m, torch.nn.BatchNorm2d):
                c = m.num_features
                m.weight.copy_(1 + 0.3 * torch.randn(c, generator=generator))
                m.bias.copy_(0.3 * torch.randn(c, generator=generator))
                m.running_mean.copy_(0.2 * torch.randn(c, generator=generator))
                m.running_var.copy_(0.5 + torch.rand(c, generator=generator))
                m.num_batches_tracked.fill_(int(torch.randint(0, 100, (), generator=generator)))


def make_pair(name: str, *, seed: int = 0, perturb_batchnorm: bool = True, **over) -> Pair:
    """(torch model, JAX model) with identical weights, both in train mode."""
    over = {**overrides(name), **over}
    tmodel = tmodels.build_model(name, generator=torch.Generator().manual_seed(seed), **over)
    if perturb_batchnorm:
        perturb_batchnorm_(tmodel, torch.Generator().manual_seed(seed + 1))
    jmodel = jconvert.from_canonical(name, tconvert.to_canonical(tmodel), **over)
    return Pair(tmodel, jmodel)


def batch(spec, n: int, rng: np.random.Generator) -> tuple[np.ndarray, np.ndarray]:
    """(x, eps): x (n, C, H, W) float32 in [0, 1] (torch layout), eps (n, D) float32 N(0, 1)."""
    c, h, w = spec.input_shape
    x = rng.random((n, c, h, w), dtype=np.float32)
    eps = rng.standard_normal((n, spec.latent_dim)).astype(np.float32)
    return x, eps


def to_jax_images(x: np.ndarray) -> jnp.ndarray:
    """NCHW NumPy -> NHWC JAX."""
    return jnp.asarray(np.ascontiguousarray(x.transpose(0, 2, 3, 1)))


def jax_to_torch_layout(a) -> np.ndarray:
    """A JAX output as NumPy in torch's layout (NHWC images -> NCHW; others unchanged)."""
    a = np.asarray(a)
    return a.transpose(0, 3, 1, 2) if a.ndim == 4 else a


def t(a: np.ndarray) -> torch.Tensor:
    return torch.from_numpy(np.ascontiguousarray(a))
