"""The arrays behind a run's figures, computed with a JAX model. Twin: `torchvae/figure_data.py`.

The drawing is framework-free (`vaecommon.run_figures`, `vaecommon.latent`); this module only
runs the model: reconstructions of one test image per class, samples from the prior, an
interpolation between two test images, the test latents, and the 2-D manifold.
"""

from __future__ import annotations

import dataclasses
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np

from jaxvae.streams import stream_key
from vaecommon import latent
from vaecommon.run_figures import FigureArrays, as_nhwc, pick_by_class, pick_pair
from vaecommon.run_figures import write_run_figures as _write

__all__ = ["encode_means", "reconstruct", "interpolate", "figure_arrays", "write_run_figures"]


def encode_means(model, images, *, batch: int = 500) -> np.ndarray:
    """(N, D) posterior means (AE: codes) of `images` (N, H, W, C), in batches."""
    model.eval()
    enc = jax.jit(lambda x: model.encode(x)[0])
    return np.concatenate([np.asarray(enc(jnp.asarray(images[i:i + batch])))
                           for i in range(0, len(images), batch)])


def reconstruct(model, images) -> np.ndarray:
    """NHWC reconstructions in [0, 1] from the posterior mean (no sampling noise)."""
    model.eval()
    mean, _ = model.encode(jnp.asarray(images))
    return as_nhwc(np.asarray(model.generate(mean)), model.spec)


def interpolate(model, x0, x1, *, steps: int = 10, method: str = "linear") -> np.ndarray:
    """NHWC images decoded along the lerp/slerp path between the means of x0 and x1 (H, W, C)."""
    model.eval()
    mean, _ = model.encode(jnp.stack([jnp.asarray(x0), jnp.asarray(x1)]))
    mean = np.asarray(mean)
    path = (latent.slerp if method == "slerp" else latent.lerp)(mean[0], mean[1], steps)
    return as_nhwc(np.asarray(model.generate(jnp.asarray(path, jnp.float32))), model.spec)


def figure_arrays(model, images, labels, key: jax.Array, *, n_samples: int = 64,
                  pair: tuple[int, int] = (3, 8), steps: int = 10, max_latents: int = 5000,
                  manifold_n: int = 20) -> FigureArrays:
    """Everything `vaecommon.run_figures.write_run_figures` draws, for a JAX model."""
    images = np.asarray(images)
    labels = np.asarray(labels)
    model.eval()
    idx = pick_by_class(labels)
    originals = images[idx]
    try:
        a, b = pick_pair(labels, *pair)
        inter = interpolate(model, images[a], images[b], steps=steps)
        inter_labels = (str(labels[a]), str(labels[b]))
    except ValueError:
        inter, inter_labels = None, ("", "")
    manifold = None
    if model.spec.latent_dim == 2:
        grid = jnp.asarray(latent.manifold_grid(manifold_n))
        manifold = as_nhwc(np.asarray(model.generate(grid)), model.spec)
    return FigureArrays(
        originals=originals,
        reconstructions=reconstruct(model, originals),
        samples=as_nhwc(np.asarray(model.sample(n_samples, key)), model.spec),
        interpolation=inter, interpolation_labels=inter_labels,
        latents=encode_means(model, images[:max_latents]), latent_labels=labels[:max_latents],
        manifold=manifold,
    )


def write_run_figures(run, trainer, state, test_ds, root_key, *, cfg=None, board=None, step: int = 0,
                      **kw: Any):
    """Figures of a JAX run at its current state into run.figures (`cfg`: the member's config,
    default the trainer's; `board`: also log the images to TensorBoard at `step`)."""
    model = trainer.model_from(state.params, state.rest, train=False)
    arrays = figure_arrays(model, test_ds.images, test_ds.labels,
                           stream_key(root_key, "figures", 0), **kw)
    return _write(run, model.spec, dataclasses.asdict(cfg or trainer.cfg), arrays, board=board,
                  step=step)
