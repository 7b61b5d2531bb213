"""The arrays behind a run's figures, computed with a PyTorch model. Twin: `jaxvae/figure_data.py`.

The drawing is framework-free (`vaecommon.run_figures`, `vaecommon.latent`); this module only
runs the model. Images are converted from NCHW to the NHWC NumPy arrays the figures take.
"""

from __future__ import annotations

import dataclasses
from typing import Any

import numpy as np
import torch

from torchvae.streams import stream_generator
from vaecommon import latent
from vaecommon.run_figures import FigureArrays, as_nhwc, pick_by_class, pick_pair
from vaecommon.run_figures import write_run_figures as _write

__all__ = ["encode_means", "reconstruct", "interpolate", "figure_arrays", "write_run_figures"]


def _nhwc(t: torch.Tensor, spec) -> np.ndarray:
    # NCHW (conv decoders) -> NHWC; flat MLP outputs reshape directly (C=1: same order).
    t = t.detach().cpu()
    if t.dim() == 4:
        t = t.permute(0, 2, 3, 1)
    return as_nhwc(t.numpy(), spec)


@torch.no_grad()
def encode_means(model, images, *, batch: int = 500) -> np.ndarray:
    """(N, D) posterior means (AE: codes) of `images` (N, C, H, W), in batches."""
    model.eval()
    return np.concatenate([model.encode(images[i:i + batch])[0].cpu().numpy()
                           for i in range(0, len(images), batch)])


@torch.no_grad()
def reconstruct(model, images) -> np.ndarray:
    """NHWC reconstructions in [0, 1] from the posterior mean (no sampling noise)."""
    model.eval()
    mean, _ = model.encode(images)
    return _nhwc(model.generate(mean), model.spec)


@torch.no_grad()
def interpolate(model, x0, x1, *, steps: int = 10, method: str = "linear") -> np.ndarray:
    """NHWC images decoded along the lerp/slerp path between the means of x0 and x1 (C, H, W)."""
    model.eval()
    mean, _ = model.encode(torch.stack([x0, x1]))
    mean = mean.cpu().numpy()
    path = (latent.slerp if method == "slerp" else latent.lerp)(mean[0], mean[1], steps)
    return _nhwc(model.generate(torch.as_tensor(path, dtype=torch.float32)), model.spec)


@torch.no_grad()
def figure_arrays(model, images, labels, generator: torch.Generator, *, n_samples: int = 64,
                  pair: tuple[int, int] = (3, 8), steps: int = 10, max_latents: int = 5000,
                  manifold_n: int = 20) -> FigureArrays:
    """Everything `vaecommon.run_figures.write_run_figures` draws, for a torch model."""
    model.eval()
    labels = np.asarray(labels)
    idx = pick_by_class(labels)
    originals = images[torch.as_tensor(idx)]
    try:
        a, b = pick_pair(labels, *pair)
        inter = interpolate(model, images[a], images[b], steps=steps)
        inter_labels = (str(labels[a]), str(labels[b]))
    except ValueError:
        inter, inter_labels = None, ("", "")
    manifold = None
    if model.spec.latent_dim == 2:
        manifold = _nhwc(model.generate(torch.as_tensor(latent.manifold_grid(manifold_n))), model.spec)
    return FigureArrays(
        originals=_nhwc(originals, model.spec),
        reconstructions=reconstruct(model, originals),
        samples=_nhwc(model.sample(n_samples, generator=generator), model.spec),
        interpolation=inter, interpolation_labels=inter_labels,
        latents=encode_means(model, images[:max_latents]), latent_labels=labels[:max_latents],
        manifold=manifold,
    )


def write_run_figures(run, trainer, test_ds, *, seed: int, board=None, step: int = 0, **kw: Any):
    """Figures of a torch run at its current state into run.figures (`board`: also log the
    images to TensorBoard at `step`)."""
    arrays = figure_arrays(trainer.model, test_ds.images, test_ds.labels,
                           stream_generator(seed, "figures"), **kw)
    return _write(run, trainer.model.spec, dataclasses.asdict(trainer.cfg), arrays, board=board,
                  step=step)
