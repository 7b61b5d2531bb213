"""Image figures: grids of images and pictures of the latent space.

Framework-free: every function takes NumPy arrays, writes one PNG (see `vaecommon.plot_style`)
and returns its path. Never imports jax or torch; callers convert first. Images are float
arrays in [0, 1], shape (N, H, W) or (N, H, W, C) with C in (1, 3):
  JAX (NHWC):  np.asarray(images)
  torch (NCHW): images.permute(0, 2, 3, 1).cpu().numpy()
  MLP decoders (flat (N, 784)): x.reshape(-1, 28, 28)

| figure                        | function                                                 |
|-------------------------------|----------------------------------------------------------|
| images tiled into one array   | `image_grid`                                             |
| originals over reconstructions| `plot_reconstructions`                                   |
| samples from the prior        | `plot_samples`                                           |
| latent interpolation strip    | `plot_interpolation` (+ `latent.lerp`, `latent.slerp`)   |
| test latents by label         | `plot_latent_scatter` (+ `latent.pca_2d`)                |
| decoded 2-D latent grid       | `plot_latent_manifold` (+ `latent.manifold_grid`)        |
| one unit varied per row       | `plot_latent_traversal` (scripts/study.py)               |
"""

from __future__ import annotations

import math
from pathlib import Path
from typing import Any, Sequence

import matplotlib
import numpy as np
from matplotlib.patches import Rectangle

from vaecommon import plot_style
from vaecommon.latent import _normal_quantiles, _require_2d_latent, pca_2d
from vaecommon.plot_style import PathLike

__all__ = [
    "image_grid",
    "plot_reconstructions",
    "plot_samples",
    "plot_interpolation",
    "plot_latent_scatter",
    "plot_latent_manifold",
    "plot_latent_traversal",
]

# Inches per image cell in image grids (a 28 px digit shows about 3x magnified at DPI 110).
_CELL_IN = 0.8
_PAD_PX = 2
_PAD_VALUE = 0.5  # grey separators: a black digit background would merge neighbouring cells


# ----------------------------------------------------------------------------------------------
# Images in, one mosaic out.


def _as_images(images: Any, name: str = "images") -> np.ndarray:
    """Validated (N, H, W) or (N, H, W, 3) float64 copy in [0, 1]."""
    a = np.asarray(images)
    if not (np.issubdtype(a.dtype, np.floating) or np.issubdtype(a.dtype, np.integer)
            or a.dtype == bool):
        raise TypeError(f"{name} must be a numeric array, got dtype {a.dtype}")
    a = a.astype(np.float64)
    if a.ndim == 4:
        if a.shape[-1] not in (1, 3):
            hint = (" (this looks like NCHW: convert torch images with x.permute(0, 2, 3, 1))"
                    if a.shape[1] in (1, 3) else "")
            raise ValueError(
                f"{name} must have shape (N, H, W) or (N, H, W, C) with C in (1, 3), "
                f"got {a.shape}{hint}"
            )
        if a.shape[-1] == 1:
            a = a[..., 0]
    elif a.ndim == 2:
        raise ValueError(
            f"{name} must have shape (N, H, W) or (N, H, W, C), got flat {a.shape}; reshape flat "
            "decoder outputs first, e.g. x.reshape(-1, 28, 28)"
        )
    elif a.ndim != 3:
        raise ValueError(f"{name} must have shape (N, H, W) or (N, H, W, C), got {a.shape}")
    if a.shape[0] == 0 or a.shape[1] == 0 or a.shape[2] == 0:
        raise ValueError(f"{name} is empty: shape {a.shape}")
    if not np.all(np.isfinite(a)):
        raise ValueError(f"{name} contains NaN or inf")
    lo, hi = float(a.min()), float(a.max())
    if lo < -1e-6 or hi > 1.0 + 1e-6:
        raise ValueError(
            f"{name} values must lie in [0, 1], got min {lo:.4g} and max {hi:.4g}; apply the "
            "sigmoid to logits (model.generate does), or divide 0-255 pixels by 255"
        )
    return np.clip(a, 0.0, 1.0)


def image_grid(images: Any, ncol: int, *, pad: int = _PAD_PX, pad_value: float = _PAD_VALUE
               ) -> np.ndarray:
    """Tile images into one mosaic, `ncol` per row, separated by `pad` pixels of `pad_value`.

    Args:
      images: (N, H, W) or (N, H, W, C) in [0, 1], C in (1, 3).
      ncol: images per row.

    Returns:
      (rows * (H + pad) + pad, ncol * (W + pad) + pad[, 3]) float array; unused cells of the
      last row are `pad_value`.
    """
    a = _as_images(images)
    ncol = max(1, min(int(ncol), a.shape[0]))
    n, h, w = a.shape[:3]
    nrows = math.ceil(n / ncol)
    out = np.full((nrows * (h + pad) + pad, ncol * (w + pad) + pad) + a.shape[3:], pad_value)
    for k in range(n):
        r, c = divmod(k, ncol)
        y, x = pad + r * (h + pad), pad + c * (w + pad)
        out[y:y + h, x:x + w] = a[k]
    return out


def _show(ax: Any, grid: np.ndarray) -> None:
    if grid.ndim == 2:
        ax.imshow(grid, cmap="gray", vmin=0.0, vmax=1.0, interpolation="nearest")
    else:
        ax.imshow(grid, interpolation="nearest")
    ax.set_xticks([])
    ax.set_yticks([])
    ax.grid(False)
    for s in ax.spines.values():
        s.set_visible(False)


def _cell_width(images: np.ndarray) -> float:
    return _CELL_IN * images.shape[2] / images.shape[1]


# ----------------------------------------------------------------------------------------------
# Image grids.


def _row_label(ax: Any, text: str) -> None:
    ax.set_ylabel(text, rotation=0, ha="right", va="center", fontsize=11, labelpad=8)


@plot_style.styled
def plot_reconstructions(originals: Any, reconstructions: Any, path: PathLike, *, n: int = 10,
                         title: str | None = None) -> Path:
    """Originals (top row) above their reconstructions (bottom row), first `n` pairs.

    Args:
      originals, reconstructions: (N, H, W[, C]) in [0, 1], same shape.
      n: pairs shown (at most N).
      title: figure title (default "Reconstructions").

    Returns:
      path. Width 1.6 + n * 0.8 * W/H inches (plus padding), height 2.6 inches.

    Raises:
      ValueError: shapes differ, wrong ndim, values outside [0, 1].
    """
    a = _as_images(originals, "originals")
    b = _as_images(reconstructions, "reconstructions")
    if a.shape != b.shape:
        raise ValueError(
            f"originals {a.shape} and reconstructions {b.shape} must have the same shape "
            "(reshape flat decoder outputs to the image shape first)"
        )
    if n < 1:
        raise ValueError(f"n must be >= 1, got {n}")
    k = min(int(n), a.shape[0])
    fig = plot_style.figure(1.6 + k * _cell_width(a) * 1.05, 2.6)
    top, bottom = fig.subplots(2, 1)
    _show(top, image_grid(a[:k], k))
    _show(bottom, image_grid(b[:k], k))
    _row_label(top, "original")
    _row_label(bottom, "reconstruction")
    plot_style.suptitle(fig, title or "Reconstructions")
    return plot_style.save(fig, path)


@plot_style.styled
def plot_samples(images: Any, path: PathLike, *, nrow: int | None = None,
                 title: str | None = None) -> Path:
    """A grid of images decoded from z ~ N(0, I).

    Args:
      images: (N, H, W[, C]) in [0, 1].
      nrow: images per row, as torchvision's `make_grid` (default ceil(sqrt(N))).
      title: figure title (default "Samples from the prior, z ~ N(0, I)").

    Returns:
      path. Width 0.4 + nrow * 0.8 * W/H inches, height 0.75 + rows * 0.8 inches.
    """
    a = _as_images(images)
    ncol = int(nrow) if nrow else math.ceil(math.sqrt(a.shape[0]))
    if ncol < 1:
        raise ValueError(f"nrow must be >= 1, got {nrow}")
    ncol = min(ncol, a.shape[0])
    rows = math.ceil(a.shape[0] / ncol)
    fig = plot_style.figure(0.4 + ncol * _cell_width(a), 0.75 + rows * _CELL_IN)
    ax = fig.subplots()
    _show(ax, image_grid(a, ncol))
    plot_style.suptitle(fig, title or "Samples from the prior, z ~ N(0, I)")
    return plot_style.save(fig, path)


@plot_style.styled
def plot_interpolation(images: Any, path: PathLike, *, labels: Sequence[str] = ("3", "8"),
                       method: str = "linear", title: str | None = None) -> Path:
    """Decoded latent interpolation as one strip, endpoints framed and labelled.

    Args:
      images: (steps, H, W[, C]) in [0, 1], decoded from `lerp`/`slerp` of the two endpoints'
        latent means; steps >= 2.
      labels: names of the start and end examples (e.g. their digit classes).
      method: "linear" or "slerp" (shown in the title).
      title: figure title (default "Latent interpolation 3 -> 8 (linear)").

    Returns:
      path. Width 1.0 + steps * 0.8 * W/H inches, height 1.8 inches.
    """
    if method not in ("linear", "slerp"):
        raise ValueError(f"method must be 'linear' or 'slerp', got {method!r}")
    if len(labels) != 2:
        raise ValueError(f"labels must name the two endpoints, got {labels!r}")
    a = _as_images(images)
    steps, h, w = a.shape[:3]
    if steps < 2:
        raise ValueError(f"an interpolation needs >= 2 images (both endpoints), got {steps}")
    fig = plot_style.figure(1.0 + steps * _cell_width(a), _CELL_IN + 1.0)
    ax = fig.subplots()
    _show(ax, image_grid(a, steps))
    for k, color in ((0, "C0"), (steps - 1, "C3")):  # frame the two encoded endpoints
        x0 = _PAD_PX + k * (w + _PAD_PX) - 0.5  # left pixel edge of cell k
        ax.add_patch(Rectangle((x0 - 1, _PAD_PX - 1.5), w + 2, h + 2, fill=False, ec=color,
                               lw=2.5))
    centers = [_PAD_PX + k * (w + _PAD_PX) + (w - 1) / 2 for k in range(steps)]
    ax.set_xticks(centers)
    ticks = [f"{t:.2f}" for t in np.linspace(0, 1, steps)]
    ticks[0], ticks[-1] = f"{labels[0]}\n(t=0)", f"{labels[1]}\n(t=1)"
    ax.set_xticklabels(ticks, fontsize=8)
    ax.tick_params(axis="x", length=0)
    plot_style.suptitle(fig, title or f"Latent interpolation {labels[0]} \u2192 {labels[1]} "
                        f"({method})")
    return plot_style.save(fig, path)


# ----------------------------------------------------------------------------------------------
# Latent space.


@plot_style.styled
def plot_latent_scatter(z: Any, labels: Any, path: PathLike, *, title: str | None = None
                        ) -> Path:
    """Test-set latents (e.g. encoder means) coloured by label.

    2-D latents are drawn as they are; a D > 2 latent is projected onto its first two principal
    components (`pca_2d`), which the title says together with the variance they explain; a 1-D
    latent is drawn against its label, jittered vertically.

    Args:
      z: (N, D) latents, or (N,) for D = 1.
      labels: (N,) integer labels (a legend for up to 20 classes, else a colorbar), or None.
      title: figure title (default describes the projection).

    Returns:
      path. 7.5 x 6 inches.

    Raises:
      ValueError: z not 1-D/2-D, NaN/inf in z, or len(labels) != len(z).
    """
    z = np.asarray(z, dtype=np.float64)
    if z.ndim == 1:
        z = z[:, None]
    if z.ndim != 2 or z.shape[0] == 0 or z.shape[1] == 0:
        raise ValueError(f"z must have shape (N, D) (or (N,) for a 1-D latent), got {z.shape}")
    if not np.all(np.isfinite(z)):
        raise ValueError("z contains NaN or inf (a diverged model?); nothing meaningful to plot")
    n, d = z.shape
    if labels is not None:
        labels = np.asarray(labels)
        if labels.ndim != 1 or labels.shape[0] != n:
            raise ValueError(
                f"labels must have shape ({n},) to match z {z.shape}, got {labels.shape}"
            )
    fig = plot_style.figure(7.5, 6.0)
    ax = fig.subplots()
    if d == 1:
        if labels is None:
            y = np.zeros(n)
        else:
            y = labels.astype(np.float64)
        jitter = np.random.default_rng(0).uniform(-0.3, 0.3, n)  # fixed seed: same picture
        xy = np.stack([z[:, 0], y + jitter], axis=1)
        xlabel, ylabel = "z", "label (jittered)"
        head = "1-D latent by label"
    elif d == 2:
        xy = z
        xlabel, ylabel = "z$_1$", "z$_2$"
        head = "2-D latent space"
    else:
        xy, ratio = pca_2d(z)
        xlabel = f"PC1 ({100 * ratio[0]:.0f}% of variance)"
        ylabel = f"PC2 ({100 * ratio[1]:.0f}% of variance)"
        head = (f"{d}-D latent, PCA projection (PC1+PC2 explain "
                f"{100 * (ratio[0] + ratio[1]):.0f}% of variance)")
    size = 6 if n <= 2000 else 3
    if labels is None:
        ax.scatter(xy[:, 0], xy[:, 1], s=size, alpha=0.6, color="C0", linewidths=0)
    else:
        uniq = np.unique(labels)
        discrete = np.issubdtype(labels.dtype, np.integer) or np.all(uniq == np.round(uniq))
        if discrete and uniq.size <= 20:
            cmap = matplotlib.colormaps["tab10" if uniq.size <= 10 else "tab20"]
            for i, u in enumerate(uniq):
                m = labels == u
                ax.scatter(xy[m, 0], xy[m, 1], s=size, alpha=0.7, color=cmap(i), linewidths=0,
                           label=str(int(u) if discrete else u))
            ax.legend(title="label", markerscale=3, loc="center left", bbox_to_anchor=(1.01, 0.5),
                      frameon=False)
        else:
            sc = ax.scatter(xy[:, 0], xy[:, 1], s=size, alpha=0.7, c=labels, cmap="viridis",
                            linewidths=0)
            fig.colorbar(sc, ax=ax, label="label")
        if d == 1 and discrete and uniq.size <= 20:
            ax.set_yticks(uniq)  # one tick per class row
    if d == 2:
        ax.set_aspect("equal", adjustable="datalim")
    ax.set_xlabel(xlabel)
    ax.set_ylabel(ylabel)
    ax.set_title(title or f"{head}, {n} points")
    return plot_style.save(fig, path)


@plot_style.styled
def plot_latent_manifold(images: Any, path: PathLike, *, latent_dim: int = 2, lo: float = 0.05,
                         hi: float = 0.95, title: str | None = None) -> Path:
    """Images decoded on the `manifold_grid` of a 2-D latent, tiled with z values on the axes.

    Args:
      images: (n * n, H, W[, C]) in [0, 1], decoded from `manifold_grid(n, lo=lo, hi=hi)` in
        its order (row-major, z_2 decreasing down the rows).
      latent_dim: the model's latent size; anything but 2 raises (the grid is 2-D).
      lo, hi: the probability range used for the grid (for the axis values).
      title: figure title.

    Returns:
      path. Size 1.2 + n * 0.5 * W/H by 1.0 + n * 0.5 inches, at least 6 x 6.

    Raises:
      ValueError: latent_dim != 2 (use `plot_latent_scatter`), or N not a perfect square.
    """
    _require_2d_latent(latent_dim)
    a = _as_images(images)
    n = math.isqrt(a.shape[0])
    if n * n != a.shape[0] or n < 2:
        raise ValueError(
            f"expected n * n images decoded from manifold_grid(n), got {a.shape[0]} images"
        )
    h, w = a.shape[1:3]
    cell = 0.5 if n > 12 else 0.8
    fig = plot_style.figure(max(6.0, 1.2 + n * cell * w / h), max(6.0, 1.0 + n * cell))
    ax = fig.subplots()
    _show(ax, image_grid(a, n))
    g = _normal_quantiles(np.linspace(lo, hi, n))
    step = max(1, n // 8)
    idx = np.arange(0, n, step)
    ax.set_xticks([_PAD_PX + j * (w + _PAD_PX) + (w - 1) / 2 for j in idx])
    ax.set_xticklabels([f"{g[j]:.2f}" for j in idx])
    ax.set_yticks([_PAD_PX + i * (h + _PAD_PX) + (h - 1) / 2 for i in idx])
    ax.set_yticklabels([f"{g[n - 1 - i]:.2f}" for i in idx])
    ax.set_xlabel("z$_1$ (normal quantiles)")
    ax.set_ylabel("z$_2$ (normal quantiles)")
    ax.set_title(title or f"Decoded 2-D latent grid ({n} x {n}, quantiles {lo:g} to {hi:g} "
                 "of N(0, 1))")
    return plot_style.save(fig, path)


@plot_style.styled
def plot_latent_traversal(images: Any, values: Sequence[float], path: PathLike, *,
                          row_labels: Sequence[str] | None = None,
                          title: str | None = None) -> Path:
    """Latent traversals: row r decodes one latent unit set to each of `values`, the other
    units held at one image's posterior mean.

    Args:
      images: (R, S, H, W[, C]) in [0, 1]: R units (rows) by S values (columns).
      values: the S values the unit takes (the column ticks).
      row_labels: R labels (default "z0", "z1", ...).
      title: figure title (default "Latent traversals").

    Returns:
      path. Width 1.6 + S * 0.8 * W/H inches, height 0.9 + R * 0.8 inches.

    Raises:
      ValueError: wrong ndim, values outside [0, 1], or values/labels of the wrong length.
    """
    a = np.asarray(images)
    if a.ndim not in (4, 5):
        raise ValueError(f"images must be (R, S, H, W[, C]), got shape {a.shape}")
    r, s = a.shape[:2]
    if len(values) != s:
        raise ValueError(f"{s} columns but {len(values)} values")
    labels = list(row_labels) if row_labels is not None else [f"z{i}" for i in range(r)]
    if len(labels) != r:
        raise ValueError(f"{r} rows but {len(labels)} row labels")
    flat = _as_images(a.reshape((r * s,) + a.shape[2:]))
    h, w = flat.shape[1:3]
    fig = plot_style.figure(1.6 + s * _cell_width(flat), 0.9 + r * _CELL_IN)
    ax = fig.subplots()
    _show(ax, image_grid(flat, s))
    ax.set_xticks([_PAD_PX + k * (w + _PAD_PX) + (w - 1) / 2 for k in range(s)])
    ax.set_xticklabels([f"{v:+.1f}" for v in values], fontsize=8)
    ax.set_yticks([_PAD_PX + k * (h + _PAD_PX) + (h - 1) / 2 for k in range(r)])
    ax.set_yticklabels(labels, fontsize=8)
    ax.tick_params(length=0)
    plot_style.suptitle(fig, title or "Latent traversals")
    return plot_style.save(fig, path)
