"""Which figures a run folder gets, from arrays either framework computes. Framework-free.

`jaxvae.figure_data.figure_arrays` and `torchvae.figure_data.figure_arrays` compute the same
`FigureArrays` (NumPy, NHWC images in [0, 1]) from a model and the test set; `write_run_figures`
turns them, the metrics and the spec into the PNGs of `<run>/figures/`.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from vaecommon import diagrams, image_plots, plots
from vaecommon.presets import ModelSpec
from vaecommon.runs import RunFolder

__all__ = ["FigureArrays", "pick_by_class", "pick_pair", "write_run_figures", "FIGURE_FILES"]

FIGURE_FILES = {
    "loss_curves": "loss_curves.png",
    "reconstructions": "reconstructions.png",
    "samples": "samples.png",
    "interpolation": "interpolation.png",
    "latent_scatter": "latent_scatter.png",
    "latent_manifold": "latent_manifold.png",
    "kl_per_dim": "kl_per_dim.png",
    "reparameterization": "reparameterization_trick.png",
    "loss_composition": "loss_composition.png",
    "architecture": "architecture.png",
}


@dataclass
class FigureArrays:
    """What the figures of one run show (NumPy; images NHWC in [0, 1])."""

    originals: np.ndarray  # (n, H, W, C) test images, one per class where labels allow
    reconstructions: np.ndarray  # (n, H, W, C) decoded posterior means
    samples: np.ndarray  # (m, H, W, C) decoded z ~ N(0, I)
    interpolation: np.ndarray | None  # (steps, H, W, C) between two test images
    interpolation_labels: tuple[str, str]
    latents: np.ndarray  # (N, D) encoder means of test images
    latent_labels: np.ndarray  # (N,)
    manifold: np.ndarray | None  # (n*n, H, W, C) for 2-D latents, else None


def pick_by_class(labels: np.ndarray, n: int = 10) -> np.ndarray:
    """Indices of the first example of each class 0..n-1 (first n indices if classes are missing)."""
    labels = np.asarray(labels)
    out = []
    for c in range(n):
        hits = np.flatnonzero(labels == c)
        if hits.size:
            out.append(int(hits[0]))
    if len(out) < min(n, len(labels)):
        out = list(range(min(n, len(labels))))
    return np.asarray(out, np.int64)


def pick_pair(labels: np.ndarray, a: int | None, b: int | None, index_a: int | None = None,
              index_b: int | None = None) -> tuple[int, int]:
    """Test indices of the interpolation endpoints: by index, else the first of class a and b.

    Raises:
      ValueError: an index out of range, or no test image of the requested class.
    """
    labels = np.asarray(labels)
    n = len(labels)
    out = []
    for idx, cls in ((index_a, a), (index_b, b)):
        if idx is not None:
            if not 0 <= idx < n:
                raise ValueError(f"index {idx} is out of range for a test set of {n} images")
            out.append(int(idx))
        else:
            hits = np.flatnonzero(labels == cls)
            if not hits.size:
                raise ValueError(f"no test image with label {cls}; labels present: "
                                 f"{sorted(set(labels.tolist()))}")
            out.append(int(hits[0]))
    return out[0], out[1]


def as_nhwc(images: np.ndarray, spec: ModelSpec) -> np.ndarray:
    """Decoder outputs (flat (N, C*H*W) or NHWC) as NHWC images."""
    c, h, w = spec.input_shape
    images = np.asarray(images, np.float32)
    return images.reshape(len(images), h, w, c)


def write_run_figures(run: RunFolder, spec: ModelSpec, cfg: dict[str, Any],
                      arrays: FigureArrays, *, which: tuple[str, ...] | None = None,
                      board: Any = None, step: int = 0) -> list[Path]:
    """Write the run's figures into run.figures; returns the written paths.

    `board` (a `vaecommon.tensorboard.Board`): also log the reconstructions (originals over
    reconstructions) and the samples as TensorBoard images at `step`.
    """
    if board is not None:
        board.images("reconstructions", np.concatenate([arrays.originals, arrays.reconstructions]),
                     step)
        if spec.is_vae:
            board.images("samples", arrays.samples, step)
    figs = run.figures
    figs.mkdir(parents=True, exist_ok=True)
    todo = set(which or FIGURE_FILES)
    out: list[Path] = []
    title = f"{spec.name} ({cfg.get('objective', '')})"
    records = run.metrics() if run.metrics_path.exists() else []
    if "loss_curves" in todo and records:
        out.append(plots.plot_loss_curves(records, figs / FIGURE_FILES["loss_curves"], title=title))
    if "reconstructions" in todo:
        out.append(image_plots.plot_reconstructions(
            arrays.originals, arrays.reconstructions, figs / FIGURE_FILES["reconstructions"],
            n=len(arrays.originals), title=f"{spec.name}: reconstructions"))
    if "samples" in todo and spec.is_vae:
        out.append(image_plots.plot_samples(arrays.samples, figs / FIGURE_FILES["samples"],
                                            title=f"{spec.name}: samples from the prior"))
    if "interpolation" in todo and arrays.interpolation is not None:
        out.append(image_plots.plot_interpolation(
            arrays.interpolation, figs / FIGURE_FILES["interpolation"],
            labels=arrays.interpolation_labels))
    if "latent_scatter" in todo:
        out.append(image_plots.plot_latent_scatter(
            arrays.latents, arrays.latent_labels, figs / FIGURE_FILES["latent_scatter"],
            title=f"{spec.name}: test latents (encoder means)"))
    if "latent_manifold" in todo and arrays.manifold is not None:
        out.append(image_plots.plot_latent_manifold(arrays.manifold,
                                                    figs / FIGURE_FILES["latent_manifold"]))
    tests = [r for r in records if r.get("type") == "test" and r.get("kl_per_dim")]
    if "kl_per_dim" in todo and tests and spec.is_vae:
        out.append(plots.plot_kl_per_dim(tests[-1]["kl_per_dim"], figs / FIGURE_FILES["kl_per_dim"],
                                         active_units=tests[-1].get("active_units")))
    if "reparameterization" in todo and spec.is_vae:
        out.append(diagrams.plot_reparameterization_trick(
            figs / FIGURE_FILES["reparameterization"], latent_dim=spec.latent_dim,
            input_dim=spec.input_dim,
            reparam="std" if spec.family == "manning_glasses_vae" else spec.reparam))
    if "loss_composition" in todo:
        beta = float((cfg.get("objective_params") or {}).get("beta", 1.0))
        out.append(diagrams.plot_loss_composition(
            figs / FIGURE_FILES["loss_composition"], likelihood=cfg.get("likelihood") or spec.likelihood,
            beta=beta if spec.is_vae else 0.0,
            kl_form=("none" if not spec.is_vae else "std" if spec.family == "manning_glasses_vae" else "logvar"),
            input_dim=spec.input_dim, latent_dim=spec.latent_dim))
    if "architecture" in todo:
        out.append(diagrams.plot_architecture(spec, figs / FIGURE_FILES["architecture"],
                                              title=f"{spec.name} architecture"))
    return out
