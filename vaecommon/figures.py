"""Figures for runs of either framework, and the latent helpers both frameworks' commands share.

Framework-free: every function takes NumPy arrays or metric records (see `vaecommon.runs`),
writes one PNG and returns its path. Never imports jax or torch; callers convert first. Images
are float arrays in [0, 1], shape (N, H, W) or (N, H, W, C) with C in (1, 3):
  JAX (NHWC):  np.asarray(images)
  torch (NCHW): images.permute(0, 2, 3, 1).cpu().numpy()
  MLP decoders (flat (N, 784)): x.reshape(-1, 28, 28)

Figures are built on `matplotlib.figure.Figure` with its own Agg canvas, so no pyplot state is
created and nothing needs closing; the style is applied with `matplotlib.rc_context` around each
figure only.

| figure                        | function                         |
|-------------------------------|----------------------------------|
| loss, recon and KL per epoch  | `plot_loss_curves`               |
| originals over reconstructions| `plot_reconstructions`           |
| samples from the prior        | `plot_samples`                   |
| latent interpolation strip    | `plot_interpolation` (+ `lerp`, `slerp`) |
| test latents by label         | `plot_latent_scatter` (+ `pca_2d`) |
| decoded 2-D latent grid       | `plot_latent_manifold` (+ `manifold_grid`) |
| KL per latent dimension       | `plot_kl_per_dim`                |
| reparameterization trick      | `plot_reparameterization_trick`  |
| loss composition              | `plot_loss_composition`          |
| architecture boxes            | `plot_architecture` (+ `describe_spec`) |
| sweep members overlaid        | `plot_sweep_curves`, `sweep_table` |
| runs side by side             | `plot_compare_runs`              |
"""

from __future__ import annotations

import functools
import math
import os
import statistics
from pathlib import Path
from typing import Any, Callable, Iterable, Mapping, Sequence

import matplotlib
import numpy as np
from matplotlib.backends.backend_agg import FigureCanvasAgg
from matplotlib.figure import Figure
from matplotlib.lines import Line2D
from matplotlib.patches import FancyArrowPatch, FancyBboxPatch, Patch, Rectangle
from matplotlib.ticker import MaxNLocator

from vaecommon.architecture import describe_spec, layer_units
from vaecommon.presets import ModelSpec
from vaecommon.runs import read_metrics

__all__ = [
    "DPI",
    "lerp",
    "slerp",
    "manifold_grid",
    "pca_2d",
    "image_grid",
    "describe_spec",
    "layer_units",
    "plot_loss_curves",
    "plot_reconstructions",
    "plot_samples",
    "plot_interpolation",
    "plot_latent_scatter",
    "plot_latent_manifold",
    "plot_kl_per_dim",
    "plot_reparameterization_trick",
    "plot_loss_composition",
    "plot_architecture",
    "plot_sweep_curves",
    "sweep_table",
    "plot_compare_runs",
]

DPI = 110
"""Resolution of every figure; a figure of W x H inches is round(W * DPI) x round(H * DPI) px."""

# Inches per image cell in image grids (a 28 px digit shows about 3x magnified at DPI 110).
_CELL_IN = 0.8
_PAD_PX = 2
_PAD_VALUE = 0.5  # grey separators: a black digit background would merge neighbouring cells

_STYLE = {
    "font.size": 10,
    "axes.titlesize": 11,
    "axes.labelsize": 10,
    "legend.fontsize": 9,
    "xtick.labelsize": 9,
    "ytick.labelsize": 9,
    "figure.titlesize": 12,
    "axes.grid": True,
    "grid.alpha": 0.3,
    "axes.spines.top": False,
    "axes.spines.right": False,
    "figure.facecolor": "white",
    "savefig.facecolor": "white",
}
_TRAIN, _TEST = "C0", "C1"

PathLike = str | os.PathLike
Records = Iterable[Mapping[str, Any]] | PathLike


# ----------------------------------------------------------------------------------------------
# Latent helpers (NumPy; used by both frameworks' interpolation and latent-map commands).


def _pair(z0: Any, z1: Any, steps: int) -> tuple[np.ndarray, np.ndarray, np.dtype]:
    a, b = np.asarray(z0), np.asarray(z1)
    if a.shape != b.shape:
        raise ValueError(f"endpoints must have the same shape, got {a.shape} and {b.shape}")
    if int(steps) != steps or steps < 2:
        raise ValueError(f"steps must be an integer >= 2 (both endpoints), got {steps!r}")
    dtype = np.result_type(a.dtype, b.dtype, np.float32)
    return a.astype(np.float64), b.astype(np.float64), dtype


def lerp(z0: Any, z1: Any, steps: int) -> np.ndarray:
    """Linear interpolation `(1 - t) z0 + t z1` for `t = linspace(0, 1, steps)`.

    Args:
      z0, z1: endpoints of the same shape S, e.g. (D,) latent means.
      steps: number of points, >= 2, endpoints included.

    Returns:
      (steps, *S) array in the endpoints' float dtype (float32 stays float32); row 0 is exactly
      z0 and row -1 exactly z1.
    """
    a, b, dtype = _pair(z0, z1, steps)
    t = np.linspace(0.0, 1.0, int(steps)).reshape((-1,) + (1,) * a.ndim)
    out = (1.0 - t) * a + t * b
    out[0], out[-1] = a, b  # exact endpoints, whatever the rounding of (1 - t) * a + t * b
    return out.astype(dtype)


def slerp(z0: Any, z1: Any, steps: int, *, dot_threshold: float = 0.9995) -> np.ndarray:
    """Spherical interpolation along the great circle from z0 to z1 (White 2016, "Sampling
    Generative Networks"): `sin((1-t) w)/sin(w) z0 + sin(t w)/sin(w) z1`, w the angle between them.

    Under a N(0, I) prior most mass lies near the sphere of radius sqrt(D), and a straight line
    between two typical points cuts through the low-norm interior; slerp stays at their norm
    (exactly, when both norms are equal). Each endpoint is treated as one vector (all axes).

    Args:
      z0, z1: endpoints of the same shape S.
      steps: number of points, >= 2, endpoints included.
      dot_threshold: when |cos w| exceeds it (nearly parallel or antiparallel vectors, where the
        great circle is ill-defined or numerically unstable) or an endpoint is zero, fall back
        to `lerp`.

    Returns:
      (steps, *S) array in the endpoints' float dtype; exact endpoints.
    """
    a, b, dtype = _pair(z0, z1, steps)
    na, nb = np.linalg.norm(a), np.linalg.norm(b)
    if na == 0.0 or nb == 0.0:
        return lerp(z0, z1, steps)
    cos = float(np.clip(np.vdot(a, b) / (na * nb), -1.0, 1.0))
    if abs(cos) > dot_threshold:
        return lerp(z0, z1, steps)
    omega = math.acos(cos)
    t = np.linspace(0.0, 1.0, int(steps)).reshape((-1,) + (1,) * a.ndim)
    out = (np.sin((1.0 - t) * omega) * a + np.sin(t * omega) * b) / math.sin(omega)
    out[0], out[-1] = a, b
    return out.astype(dtype)


def manifold_grid(
    n: int = 20, *, latent_dim: int = 2, lo: float = 0.05, hi: float = 0.95,
    dtype: Any = np.float32,
) -> np.ndarray:
    """Latent points of the 2-D manifold figure: the N(0, 1) quantiles of linspace(lo, hi, n).

    Using quantiles (inverse normal CDF) rather than an even grid spaces the points by prior
    mass, so the figure shows the region the decoder was trained on (Kingma & Welling 2014, fig. 4).

    Args:
      n: points per axis.
      latent_dim: the model's latent size; anything but 2 raises (pass `spec.latent_dim`).
      lo, hi: the probability range, 0 < lo < hi < 1.

    Returns:
      (n * n, 2) array. Point `k = i * n + j` is image row i (top to bottom), column j:
      `z[k] = (g[j], g[n - 1 - i])` with `g = inv_cdf(linspace(lo, hi, n))`, so z_1 grows to the
      right and z_2 upwards, as on a plot. Decode it and pass the images, in this order, to
      `plot_latent_manifold`.

    Raises:
      ValueError: latent_dim != 2 (use `plot_latent_scatter`, which projects with PCA), or bad
        n / lo / hi.
    """
    _require_2d_latent(latent_dim)
    if int(n) != n or n < 2:
        raise ValueError(f"n must be an integer >= 2, got {n!r}")
    if not 0.0 < lo < hi < 1.0:
        raise ValueError(f"need 0 < lo < hi < 1 for the normal quantiles, got lo={lo}, hi={hi}")
    n = int(n)
    g = _normal_quantiles(np.linspace(lo, hi, n))
    cols, rows = np.meshgrid(g, g[::-1])  # rows: z_2 descending from top; cols: z_1 ascending
    return np.stack([cols.ravel(), rows.ravel()], axis=1).astype(dtype)


def _normal_quantiles(p: np.ndarray) -> np.ndarray:
    inv = statistics.NormalDist().inv_cdf
    return np.array([inv(float(v)) for v in p])


def _require_2d_latent(latent_dim: int) -> None:
    if latent_dim != 2:
        raise ValueError(
            f"the latent manifold grid needs a 2-D latent, this model has latent_dim={latent_dim}; "
            "use plot_latent_scatter instead (it projects a >2-D latent onto its first two "
            "principal components with PCA), or train with latent_dim=2"
        )


def pca_2d(z: Any) -> tuple[np.ndarray, np.ndarray]:
    """Project (N, D) points onto their first two principal components (NumPy SVD).

    Returns:
      (N, 2) projections of the centred points and the (2,) fractions of the total variance the
      two components explain. Component signs are fixed (largest loading positive) so the same
      latents always give the same picture.

    Raises:
      ValueError: z not (N, D) with N >= 2 and D >= 2.
    """
    z = np.asarray(z, dtype=np.float64)
    if z.ndim != 2 or z.shape[0] < 2 or z.shape[1] < 2:
        raise ValueError(f"pca_2d needs (N, D) points with N >= 2 and D >= 2, got shape {z.shape}")
    zc = z - z.mean(axis=0)
    _, s, vt = np.linalg.svd(zc, full_matrices=False)
    comps = vt[:2]
    signs = np.sign(comps[np.arange(2), np.abs(comps).argmax(axis=1)])
    comps = comps * signs[:, None]
    var = s**2
    total = var.sum()
    ratio = var[:2] / total if total > 0 else np.zeros(2)
    return zc @ comps.T, ratio


# ----------------------------------------------------------------------------------------------
# Plumbing.


def _styled(fn: Callable[..., Path]) -> Callable[..., Path]:
    @functools.wraps(fn)
    def wrapper(*args: Any, **kwargs: Any) -> Path:
        with matplotlib.rc_context(_STYLE):
            return fn(*args, **kwargs)

    return wrapper


def _suptitle(fig: Figure, text: str, **kw: Any) -> None:
    """fig.suptitle wrapped to the figure's width, so narrow figures do not clip their title."""
    import textwrap

    size = float(kw.get("fontsize", matplotlib.rcParams["figure.titlesize"]
                        if not isinstance(matplotlib.rcParams["figure.titlesize"], str) else 12))
    chars = max(12, int(fig.get_figwidth() * 72 / (0.6 * size)))
    fig.suptitle("\n".join(textwrap.fill(line, chars) for line in text.split("\n")), **kw)


def _figure(width: float, height: float) -> Figure:
    fig = Figure(figsize=(width, height), dpi=DPI, layout="constrained")
    FigureCanvasAgg(fig)
    return fig


def _save(fig: Figure, path: PathLike) -> Path:
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    # No bbox_inches="tight": the pixel size stays exactly figsize * DPI (tests rely on it);
    # constrained layout already keeps labels inside the canvas.
    fig.savefig(path, dpi=DPI)
    return path


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


def _num(value: Any) -> float:
    """A metric value as float: JSON strings "nan"/"inf" (see runs._clean) and None -> float."""
    if value is None:
        return math.nan
    if isinstance(value, str):
        try:
            return float(value)
        except ValueError:
            raise ValueError(f"metric value {value!r} is not a number") from None
    return float(value)


def _as_records(records: Records) -> list[Mapping[str, Any]]:
    if isinstance(records, (str, os.PathLike)):
        return read_metrics(records)
    out = list(records)
    for i, r in enumerate(out):
        if not isinstance(r, Mapping) or "type" not in r:
            raise ValueError(f"record {i} is not a metrics record with a 'type' key: {r!r:.80}")
    return out


def _series(records: Sequence[Mapping[str, Any]], kind: str, key: str
            ) -> tuple[np.ndarray, np.ndarray]:
    """x = epoch and y = record[key] of the records of one type; missing/non-finite y -> NaN."""
    rows = [r for r in records if r.get("type") == kind]
    if not rows:
        return np.zeros(0), np.zeros(0)
    missing = [i for i, r in enumerate(rows) if "epoch" not in r]
    if missing:
        bad = rows[missing[0]]
        raise ValueError(f"{kind} record {missing[0]} has no 'epoch' (the x axis): {bad!r:.120}")
    x = np.array([_num(r["epoch"]) for r in rows])
    y = np.array([_num(r.get(key)) for r in rows])
    order = np.argsort(x, kind="stable")
    return x[order], y[order]


def _finite(*arrays: np.ndarray) -> np.ndarray:
    v = np.concatenate([np.ravel(a) for a in arrays]) if arrays else np.zeros(0)
    return v[np.isfinite(v)]


def _robust_ylim(ax: Any, epoch_vals: np.ndarray, batch_vals: np.ndarray) -> float | None:
    """Y limits that keep the per-epoch points and most batches in view.

    The first batches of a VAE run sit several times above the rest (about 540 nats at init vs
    about 100 later); autoscaling to them flattens everything that matters. Returns the largest
    batch value left off-scale, or None.
    """
    ev, bv = _finite(epoch_vals), _finite(batch_vals)
    allv = np.concatenate([ev, bv])
    if allv.size == 0:
        return None
    top = max([*ev.tolist(), float(np.quantile(bv, 0.97))] if bv.size else ev.tolist())
    bottom = float(allv.min())
    if not top > bottom:
        return None
    margin = 0.06 * (top - bottom)
    ax.set_ylim(bottom - margin, top + margin)
    clipped = float(bv.max()) if bv.size and bv.max() > top + margin else None
    return clipped


def _epochs_axis(ax: Any, xmax: float) -> None:
    ax.set_xlabel("epoch")
    ax.set_xlim(0.0, max(1.0, xmax) * 1.03)
    if xmax >= 3:  # whole epochs; a 1-2 epoch run keeps fractional ticks for its batch curve
        ax.xaxis.set_major_locator(MaxNLocator(integer=True))


def _is_zero_kl(records: Sequence[Mapping[str, Any]]) -> bool:
    kinds = ("batch", "train", "test")
    vals = _finite(np.array([_num(r.get("kl")) for r in records if r.get("type") in kinds]))
    return vals.size == 0 or bool(np.all(vals == 0.0))


def _count_nonfinite(records: Sequence[Mapping[str, Any]], keys: Sequence[str]
                     ) -> tuple[int, float | None]:
    """How many values of `keys` are NaN/inf, and the first epoch where one occurs."""
    n, first = 0, None
    for r in records:
        for k in keys:
            if k in r and not math.isfinite(_num(r[k])):
                n += 1
                if "epoch" in r:
                    e = _num(r["epoch"])
                    first = e if first is None else min(first, e)
    return n, first


# ----------------------------------------------------------------------------------------------
# Training curves.


def _metric_panel(ax: Any, records: Sequence[Mapping[str, Any]], key: str, label: str,
                  ylabel: str) -> None:
    bx, by = _series(records, "batch", key)
    tx, ty = _series(records, "train", key)
    sx, sy = _series(records, "test", key)
    if bx.size and np.isfinite(by).any():
        ax.plot(bx, by, lw=0.8, alpha=0.35, color=_TRAIN, label="train, per batch")
    if tx.size and np.isfinite(ty).any():
        ax.plot(tx, ty, "o-", ms=5, lw=1.5, color=_TRAIN, label="train, epoch mean of batches")
    if sx.size and np.isfinite(sy).any():
        ax.plot(sx, sy, "s--", ms=5, lw=1.5, color=_TEST, label="test")
    ax.set_title(label)
    ax.set_ylabel(ylabel)
    _epochs_axis(ax, float(max([0.0, *bx, *tx, *sx])))
    clipped = _robust_ylim(ax, np.concatenate([ty, sy]), by)
    if clipped is not None:
        ax.text(0.98, 0.98, f"first batches off-scale (up to {clipped:.4g})",
                transform=ax.transAxes, ha="right", va="top", fontsize=8, color="0.35")
    if not ax.lines:
        ax.text(0.5, 0.5, f"no finite {key} values", transform=ax.transAxes, ha="center",
                va="center", color="0.4")


@_styled
def plot_loss_curves(records: Records, path: PathLike, *, title: str | None = None,
                     ylabel: str = "nats per example") -> Path:
    """Loss, reconstruction and KL per example against epochs, train and test.

    Panels: loss | reconstruction | KL. Each shows the per-batch train values (thin line, x = the
    fractional epoch), the per-epoch train values (markers at the epoch number; the mean of
    the per-batch losses over that epoch, the quantity the comparison notes found was tracked
    wrongly in the source notebook) and the test values (dashed). An AE's KL panel says there is
    no KL term. NaN/inf values (a diverged run) are left out, counted in the title, and the
    first epoch where one appears is marked.

    Args:
      records: metrics records (dicts with "type" batch/train/test as in the run-folder
        contract), or a metrics.jsonl path / run folder.
      path: where to write the PNG.
      title: figure title (default "Training curves").
      ylabel: unit of the values (the default is right for log-likelihood terms; MSE terms are
        squared intensity, not nats).

    Returns:
      path, as a Path. 13 x 4.6 inches.

    Raises:
      ValueError: no batch/train/test records, or a record without "epoch".
    """
    recs = _as_records(records)
    if not any(r.get("type") in ("batch", "train", "test") for r in recs):
        raise ValueError("no batch/train/test metric records to plot (empty metrics.jsonl?)")
    fig = _figure(13.0, 4.6)
    axes = fig.subplots(1, 3)
    _metric_panel(axes[0], recs, "loss", "loss", ylabel)
    _metric_panel(axes[1], recs, "recon", "reconstruction term", ylabel)
    if _is_zero_kl(recs):
        axes[2].set_title("KL divergence")
        axes[2].text(0.5, 0.5, "no KL term\n(autoencoder: kl = 0)", transform=axes[2].transAxes,
                     ha="center", va="center", fontsize=11, color="0.35")
        axes[2].axis("off")
    else:
        _metric_panel(axes[2], recs, "kl", "KL divergence to N(0, I)", ylabel)
    n_bad, first_bad = _count_nonfinite(recs, ("loss", "recon", "kl"))
    if first_bad is not None:
        for ax in axes:
            if ax.lines:
                ax.axvline(first_bad, color="red", ls=":", lw=1.2, label="first NaN/inf")
    # One legend for the three panels, below them, so it never hides a curve or a note.
    seen: dict[str, Any] = {}
    for ax in axes:
        for h, lab in zip(*ax.get_legend_handles_labels()):
            seen.setdefault(lab, h)
    if seen:
        fig.legend(list(seen.values()), list(seen), loc="outside lower center", ncol=len(seen),
                   frameon=False)
    head = title or "Training curves"
    if n_bad:
        head += f"  ({n_bad} NaN/inf values not drawn)"
    _suptitle(fig, head)
    return _save(fig, path)


# ----------------------------------------------------------------------------------------------
# Image grids.


def _row_label(ax: Any, text: str) -> None:
    ax.set_ylabel(text, rotation=0, ha="right", va="center", fontsize=11, labelpad=8)


@_styled
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
    fig = _figure(1.6 + k * _cell_width(a) * 1.05, 2.6)
    top, bottom = fig.subplots(2, 1)
    _show(top, image_grid(a[:k], k))
    _show(bottom, image_grid(b[:k], k))
    _row_label(top, "original")
    _row_label(bottom, "reconstruction")
    _suptitle(fig, title or "Reconstructions")
    return _save(fig, path)


@_styled
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
    fig = _figure(0.4 + ncol * _cell_width(a), 0.75 + rows * _CELL_IN)
    ax = fig.subplots()
    _show(ax, image_grid(a, ncol))
    _suptitle(fig, title or "Samples from the prior, z ~ N(0, I)")
    return _save(fig, path)


@_styled
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
    fig = _figure(1.0 + steps * _cell_width(a), _CELL_IN + 1.0)
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
    _suptitle(fig, title or f"Latent interpolation {labels[0]} \u2192 {labels[1]} ({method})")
    return _save(fig, path)


# ----------------------------------------------------------------------------------------------
# Latent space.


@_styled
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
    fig = _figure(7.5, 6.0)
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
    return _save(fig, path)


@_styled
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
    fig = _figure(max(6.0, 1.2 + n * cell * w / h), max(6.0, 1.0 + n * cell))
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
    return _save(fig, path)


@_styled
def plot_kl_per_dim(kl_per_dim: Any, path: PathLike, *, threshold: float = 0.01,
                    active_units: Any = None, log: bool = True, title: str | None = None
                    ) -> Path:
    """Bar chart of the mean KL per latent dimension, active units highlighted and counted.

    Args:
      kl_per_dim: (D,) mean KL of each latent dimension in nats (a test record's "kl_per_dim";
        "nan" strings allowed), or (N, D) per-example values, averaged here.
      threshold: a dimension is active when its mean KL exceeds this (nats).
      active_units: optional covariance-based activity (Burda et al. 2016: Cov_x(E_q[z_d]) > 0.01):
        a (D,) boolean mask (highlights exactly those dimensions) or the count from a test record
        (reported in the title beside the KL-threshold count).
      log: log-scale y axis (default), so inactive units (KL ~ 1e-4) stay visible.
      title: figure title (default reports the counts).

    Returns:
      path. max(7, 2.5 + 0.25 D) x 4.6 inches (at most 16 wide).

    Raises:
      ValueError: wrong ndim, empty, or a mask of the wrong length.
    """
    try:
        kl = np.vectorize(_num, otypes=[np.float64])(np.asarray(kl_per_dim, dtype=object))
    except (TypeError, ValueError) as e:
        raise ValueError(f"kl_per_dim must be numbers of shape (D,) or (N, D): {e}") from None
    if kl.ndim == 2:
        kl = kl.mean(axis=0)
    if kl.ndim != 1 or kl.size == 0:
        raise ValueError(f"kl_per_dim must have shape (D,) or (N, D), got {np.shape(kl_per_dim)}")
    if log and not threshold > 0:
        raise ValueError(f"threshold must be > 0 on a log scale, got {threshold}")
    d = kl.size
    finite = np.isfinite(kl)
    by_kl = finite & (kl > threshold)
    mask, note = by_kl, f"KL > {threshold:g} nats"
    if active_units is not None and np.ndim(active_units) == 1:
        mask = np.asarray(active_units, dtype=bool)
        if mask.shape != (d,):
            raise ValueError(f"active_units mask must have shape ({d},), got {mask.shape}")
        note = "Cov$_x$(E$_q$[z]) > 0.01, Burda et al."
        head = (f"{int(mask.sum())} of {d} active units ({note}; "
                f"{int(by_kl.sum())} with KL > {threshold:g})")
    elif active_units is not None:
        head = (f"{int(by_kl.sum())} of {d} dims with {note}; "
                f"{int(active_units)} active by covariance (Burda et al.)")
    else:
        head = f"{int(mask.sum())} of {d} active units ({note})"
    if not finite.all():
        head += f"; {int((~finite).sum())} NaN/inf"
    fig = _figure(min(16.0, max(7.0, 2.5 + 0.25 * d)), 4.6)
    ax = fig.subplots()
    x = np.arange(d)
    pos = kl[finite & (kl > 0)]
    if log:
        # Inactive units sit orders of magnitude below active ones (1e-4 vs 1 nat): on a linear
        # axis they are invisible, which hides exactly what this figure is for.
        floor = 0.3 * min([threshold, *pos.tolist()]) if threshold > 0 or pos.size else 1e-4
        heights = np.where(finite, np.maximum(kl, floor), floor)
        ax.set_yscale("log")
        ax.bar(x, heights - floor, bottom=floor, color=np.where(mask, "C0", "0.65"),
               edgecolor="none", width=0.8)
        ax.set_ylim(floor, max([threshold, *pos.tolist()]) * 2.0)
        bad_y = floor
    else:
        ax.bar(x, np.where(finite, kl, 0.0), color=np.where(mask, "C0", "0.65"),
               edgecolor="none", width=0.8)
        bad_y = 0.0
    if not finite.all():
        ax.plot(x[~finite], np.full((~finite).sum(), bad_y), "x", color="red", ms=9,
                clip_on=False, label="NaN/inf")
    ax.axhline(threshold, color="0.3", ls="--", lw=1)
    handles = [Patch(color="C0", label="active"), Patch(color="0.65", label="inactive"),
               Line2D([], [], color="0.3", ls="--", label=f"KL = {threshold:g} nats")]
    if not finite.all():
        handles.append(Line2D([], [], color="red", marker="x", ls="", label="NaN/inf"))
    fig.legend(handles=handles, loc="outside lower center", ncol=len(handles), frameon=False)
    ax.set_xlabel("latent dimension")
    ax.set_ylabel("mean KL (nats per example)" + (", log scale" if log else ""))
    ax.set_xlim(-0.7, d - 0.3)
    if d <= 32:
        ax.set_xticks(x)
    else:
        ax.xaxis.set_major_locator(MaxNLocator(integer=True, nbins=25))
    ax.grid(axis="x", visible=False)
    _suptitle(fig, title or f"KL per latent dimension\n{head}", fontsize=11)
    return _save(fig, path)


# ----------------------------------------------------------------------------------------------
# Teaching diagrams (drawn from the preset actually trained).


def _box(ax: Any, x: float, y: float, w: float, h: float, text: str, color: str, *,
         fontsize: float = 11, weight: str = "normal") -> tuple[float, float, float, float]:
    ax.add_patch(FancyBboxPatch((x, y), w, h, boxstyle="round,pad=0.008,rounding_size=0.015",
                                facecolor=color, edgecolor="0.2", alpha=0.9, lw=1.2))
    ax.text(x + w / 2, y + h / 2, text, ha="center", va="center", fontsize=fontsize,
            weight=weight)
    return x, y, w, h


def _arrow(ax: Any, start: tuple[float, float], end: tuple[float, float], *, color: str = "0.1",
           ls: str = "-", lw: float = 1.6, rad: float = 0.0) -> None:
    ax.add_patch(FancyArrowPatch(start, end, arrowstyle="-|>", mutation_scale=14, color=color,
                                 ls=ls, lw=lw, connectionstyle=f"arc3,rad={rad}",
                                 shrinkA=2, shrinkB=2))


def _canvas(fig: Figure) -> Any:
    ax = fig.subplots()
    ax.set_xlim(0, 1)
    ax.set_ylim(0, 1)
    ax.axis("off")
    return ax


@_styled
def plot_reparameterization_trick(path: PathLike, *, latent_dim: int, input_dim: int = 784,
                                  reparam: str = "logvar", title: str | None = None) -> Path:
    """Diagram of the reparameterization trick with the model's shapes.

    The randomness enters as eps ~ N(0, I), outside the network, so z = mean + sigma * eps is a
    differentiable function of the encoder outputs (dz/dmean = 1, dz/dsigma = eps).

    Args:
      latent_dim: D, the size of mean, log-variance, eps and z.
      input_dim: flattened input size (784 for MNIST; C*H*W in general).
      reparam: "logvar" (sigma = exp(logvar / 2)), "std" (the encoder predicts log sigma, the
        glasses VAE) or "logvar_as_scale" (the leaky_vae notebook's quirk z = mean + logvar * eps,
        drawn with a warning).
      title: figure title.

    Returns:
      path. 12 x 6.5 inches.
    """
    forms = {
        "logvar": ("log \u03c3\u00b2", "\u03c3 = exp(\u00bd log \u03c3\u00b2)",
                   "z = \u03bc + \u03c3 \u2299 \u03b5"),
        "std": ("log \u03c3", "\u03c3 = exp(log \u03c3)", "z = \u03bc + \u03c3 \u2299 \u03b5"),
        "logvar_as_scale": ("log \u03c3\u00b2", "scale = log \u03c3\u00b2 (quirk)",
                            "z = \u03bc + log \u03c3\u00b2 \u2299 \u03b5"),
    }
    if reparam not in forms:
        raise ValueError(f"reparam must be one of {tuple(forms)}, got {reparam!r}")
    if latent_dim < 1 or input_dim < 1:
        raise ValueError(f"latent_dim and input_dim must be >= 1, got {latent_dim}, {input_dim}")
    scale_name, sigma_text, z_text = forms[reparam]
    shp = f"(B, {latent_dim})"
    fig = _figure(12.0, 6.5)
    ax = _canvas(fig)
    x_in = _box(ax, 0.01, 0.50, 0.09, 0.14, f"x\n(B, {input_dim})", "skyblue")
    enc = _box(ax, 0.14, 0.45, 0.14, 0.24, "Encoder\nq\u03c6(z | x)\nparameters \u03c6",
               "lightgreen")
    mu = _box(ax, 0.33, 0.63, 0.11, 0.12, f"\u03bc\n{shp}", "coral")
    lv = _box(ax, 0.33, 0.38, 0.11, 0.12, f"{scale_name}\n{shp}", "coral")
    sg = _box(ax, 0.49, 0.38, 0.14, 0.12, sigma_text, "mistyrose", fontsize=10)
    eps = _box(ax, 0.655, 0.13, 0.15, 0.14, f"\u03b5 ~ N(0, I)\n{shp}\nsampled, no gradient",
               "gold", fontsize=10)
    z = _box(ax, 0.67, 0.50, 0.12, 0.14, f"{z_text}\n{shp}", "lightskyblue", fontsize=10)
    dec = _box(ax, 0.83, 0.45, 0.14, 0.24, "Decoder\np\u03b8(x | z)\n\u2192 logits "
               f"(B, {input_dim})", "lightgreen", fontsize=10)

    def right(b): return (b[0] + b[2], b[1] + b[3] / 2)
    def left(b): return (b[0], b[1] + b[3] / 2)
    def top(b): return (b[0] + b[2] / 2, b[1] + b[3])

    _arrow(ax, right(x_in), left(enc))
    _arrow(ax, right(enc), left(mu))
    _arrow(ax, right(enc), left(lv))
    _arrow(ax, right(lv), left(sg))
    _arrow(ax, right(mu), left(z))
    _arrow(ax, right(sg), left(z))
    _arrow(ax, top(eps), (z[0] + z[2] / 2, z[1]), color="darkgoldenrod", ls="--")
    _arrow(ax, right(z), left(dec))
    # Backward pass: gradients reach mean and sigma through z; eps is a constant input.
    _arrow(ax, (z[0] + 0.03, z[1] + z[3]), (mu[0] + mu[2] * 0.6, mu[1] + mu[3]), color="firebrick",
           ls=(0, (4, 3)), lw=1.4, rad=0.35)
    ax.text(0.56, 0.84, "\u2202z/\u2202\u03bc = 1", color="firebrick", ha="center", fontsize=10)
    grad_sigma = "\u2202z/\u2202\u03c3 = \u03b5" if reparam != "logvar_as_scale" else \
        "\u2202z/\u2202 log \u03c3\u00b2 = \u03b5"
    _arrow(ax, (z[0] + 0.015, z[1]), (sg[0] + sg[2] * 0.7, sg[1]), color="firebrick",
           ls=(0, (4, 3)), lw=1.4, rad=-0.45)
    ax.text(0.60, 0.31, grad_sigma, color="firebrick", ha="center", fontsize=10)
    ax.legend(handles=[Line2D([], [], color="0.1", lw=1.6, label="forward, differentiable"),
                       Line2D([], [], color="darkgoldenrod", ls="--", lw=1.6,
                              label="random input (no gradient)"),
                       Line2D([], [], color="firebrick", ls=(0, (4, 3)), lw=1.4,
                              label="gradient path")],
              loc="upper right", bbox_to_anchor=(1.0, 0.97), frameon=False, fontsize=9)
    notes = [
        "Sampling z ~ N(\u03bc, \u03c3\u00b2) directly has no gradient with respect to \u03bc "
        "and \u03c3.",
        "Writing z = \u03bc + \u03c3 \u2299 \u03b5 moves the randomness into \u03b5, drawn "
        "outside the network:",
        "z becomes a differentiable function of the encoder outputs, so backpropagation reaches "
        "the encoder.",
    ]
    if reparam == "logvar_as_scale":
        notes = ["Reproduced quirk (leaky_vae notebook): the log-variance is used as the scale.",
                 "It can be negative and is not \u03c3 = exp(\u00bd log \u03c3\u00b2); the KL term "
                 "still assumes log \u03c3\u00b2.",
                 "Kept only for faithful reproduction; reparam='logvar' is the correct form."]
    ax.text(0.02, 0.03, "\n".join(notes), ha="left", va="bottom", fontsize=10,
            bbox=dict(facecolor="white", edgecolor="0.6", boxstyle="round,pad=0.5"))
    ax.set_title(title or f"The reparameterization trick (latent_dim D = {latent_dim}, "
                 f"batch B)", fontsize=14, weight="bold")
    return _save(fig, path)


_RECON = {
    "bernoulli": (
        r"$-\sum_{i=1}^{%(n)d}\left[x_i \log \sigma(\ell_i)"
        r" + (1 - x_i)\log(1 - \sigma(\ell_i))\right]$",
        "Bernoulli log-likelihood (binary cross-entropy) on the decoder's logits \u2113,\n"
        "computed stably from \u2113 "
        "(max(\u2113, 0) \u2212 \u2113x + log(1 + exp(\u2212|\u2113|)))",
    ),
    "continuous_bernoulli": (
        r"$\mathrm{BCE}(x, \ell) - \sum_{i=1}^{%(n)d} \log C(\sigma(\ell_i))$",
        "continuous Bernoulli (Loaiza-Ganem & Cunningham 2019): the BCE plus\n"
        "the log-normaliser C(\u03bb) that makes it a density on [0, 1]",
    ),
    "bce_probs": (
        r"$-\sum_{i=1}^{%(n)d}\left[x_i \log p_i + (1 - x_i)\log(1 - p_i)\right]$",
        "binary cross-entropy on probabilities p = sigmoid output\n"
        "(the source's form, as F.binary_cross_entropy; logs clamped at \u2212100)",
    ),
    "mse_sum": (
        r"$\sum_{i=1}^{%(n)d} (x_i - \hat{x}_i)^2$",
        "squared error summed over pixels\n(not a normalised log-likelihood: squared intensity, "
        "not nats)",
    ),
    "mse_mean": (
        r"$\frac{1}{%(n)d}\sum_{i=1}^{%(n)d} (x_i - \hat{x}_i)^2$",
        "squared error averaged over pixels (nn.MSELoss default):\n1/%(n)d of mse_sum, "
        "so tiny next to any summed term",
    ),
    "gaussian": (
        r"$\frac{1}{2}\sum_{i=1}^{%(n)d}"
        r"\left[\frac{(x_i - \hat{x}_i)^2}{s^2} + \log 2\pi s^2\right]$",
        "Gaussian negative log-likelihood with scale s",
    ),
}
_KL = {
    "logvar": (
        r"$-\frac{1}{2}\sum_{j=1}^{%(d)s}\left(1 + \log\sigma_j^2 - \mu_j^2 - \sigma_j^2\right)$",
        "KL(N(\u03bc, \u03c3\u00b2) \u2016 N(0, I)) from the encoder's log-variance\n"
        "pulls \u03bc towards 0 and \u03c3 towards 1; regularises the latent space",
    ),
    "std": (
        r"$\sum_{j=1}^{%(d)s}"
        r"\left(\frac{\sigma_j^2 + \mu_j^2}{2} - \log\sigma_j - \frac{1}{2}\right)$",
        "KL(N(\u03bc, \u03c3\u00b2) \u2016 N(0, I)) from the encoder's standard deviation\n"
        "(the same quantity as the log-variance form, log \u03c3\u00b2 = 2 log \u03c3)",
    ),
}


@_styled
def plot_loss_composition(path: PathLike, *, likelihood: str, beta: float = 1.0,
                          kl_form: str = "logvar", input_dim: int = 784,
                          latent_dim: int | None = None, title: str | None = None) -> Path:
    """Diagram of the objective actually trained: reconstruction term + beta * KL.

    Args:
      likelihood: reconstruction term name (`losses.RECONSTRUCTION`: bernoulli,
        continuous_bernoulli, bce_probs, mse_sum, mse_mean, gaussian*); other names are drawn
        as a generic -log p(x|z).
      beta: KL weight (1 gives the negative ELBO when the reconstruction term is a NLL).
      kl_form: "logvar", "std" (encoder predicts sigma) or "none" (autoencoder: no KL term).
      input_dim: pixels summed over (784 for MNIST).
      latent_dim: D, shown in the KL sum (None: "D").
      title: figure title.

    Returns:
      path. 12 x 5.2 inches.
    """
    if kl_form not in ("logvar", "std", "none"):
        raise ValueError(f"kl_form must be 'logvar', 'std' or 'none', got {kl_form!r}")
    if not math.isfinite(beta) or beta < 0:
        raise ValueError(f"beta must be a finite number >= 0, got {beta!r}")
    key = "gaussian" if likelihood.startswith("gaussian") else likelihood
    formula, what = _RECON.get(key, (r"$-\log p_\theta(x \mid z)$",
                                     f"reconstruction term {likelihood!r}"))
    formula, what = formula % {"n": input_dim}, what % {"n": input_dim}
    fig = _figure(12.0, 5.2)
    ax = _canvas(fig)
    ax.set_ylim(0.09, 0.91)
    ax.add_patch(Rectangle((0.02, 0.52), 0.56, 0.36, facecolor="lightblue", alpha=0.35, ec="0.5"))
    ax.text(0.30, 0.83, f"Reconstruction term  ({likelihood})", ha="center", fontsize=13,
            weight="bold")
    ax.text(0.30, 0.71, formula, ha="center", va="center", fontsize=14)
    ax.text(0.30, 0.58, what, ha="center", va="center", fontsize=10)
    if kl_form == "none":
        ax.add_patch(Rectangle((0.02, 0.12), 0.56, 0.36, facecolor="0.92", ec="0.6"))
        ax.text(0.30, 0.43, "No KL term", ha="center", fontsize=13, weight="bold")
        ax.text(0.30, 0.28, "an autoencoder has a deterministic code:\nno posterior, no prior, "
                "nothing to sample from", ha="center", va="center", fontsize=10)
        total = r"$\mathcal{L} = \mathrm{recon}$"
        sub = "autoencoder: the reconstruction\nterm alone"
    else:
        d = "D" if latent_dim is None else str(int(latent_dim))
        kf, kwhat = _KL[kl_form]
        ax.add_patch(Rectangle((0.02, 0.12), 0.56, 0.36, facecolor="lightgreen", alpha=0.35,
                               ec="0.5"))
        ax.text(0.30, 0.43, "KL divergence to the prior N(0, I)", ha="center", fontsize=13,
                weight="bold")
        ax.text(0.30, 0.31, kf % {"d": d}, ha="center", va="center", fontsize=14)
        ax.text(0.30, 0.18, kwhat, ha="center", va="center", fontsize=10)
        total = r"$\mathcal{L} = \mathrm{recon} + \beta \cdot \mathrm{KL}$"
        sub = f"\u03b2 = {beta:g}" + ("\n= \u2212ELBO (nats per example)\nwhen recon is a "
                                      "negative log-likelihood" if beta == 1.0 else
                                      "\n(\u03b2 \u2260 1: a weighted objective,\nnot the ELBO)")
    ax.add_patch(Rectangle((0.64, 0.12), 0.34, 0.76, facecolor="lightsalmon", alpha=0.35, ec="0.5"))
    ax.text(0.81, 0.83, "Total loss", ha="center", fontsize=13, weight="bold")
    ax.text(0.81, 0.66, total, ha="center", va="center", fontsize=16)
    ax.text(0.81, 0.48, sub, ha="center", va="center", fontsize=11)
    ax.text(0.81, 0.24, "each term is a per-example value\n(the sums above), averaged\n"
            "over the batch", ha="center", va="center", fontsize=10, color="0.3")
    _arrow(ax, (0.58, 0.70), (0.64, 0.62))
    if kl_form != "none":
        _arrow(ax, (0.58, 0.30), (0.64, 0.38))
    ax.set_title(title or "Loss composition", fontsize=14, weight="bold")
    return _save(fig, path)


def _role(label: str, i: int, n: int) -> str:
    low = label.lower()
    if i == 0:
        return "input"
    if i == n - 1:
        return "output"
    if any(k in low for k in ("mean", "logvar", "latent", "code", "std")) or low == "z":
        return "latent"
    return "hidden"


_ROLE_COLOR = {"input": "skyblue", "hidden": "lightgreen", "latent": "coral",
               "output": "lightsalmon"}


@_styled
def plot_architecture(layers: Sequence[tuple] | ModelSpec, path: PathLike, *,
                      title: str | None = None) -> Path:
    """Boxes for each stage of a model, heights on a log scale of the stage's size.

    Args:
      layers: `(label, size)` or `(label, size, role)` per stage, input first (e.g. from
        `describe_spec(spec)`); size is an int or a "CxHxW" string; role is input / hidden /
        latent / output (default: first, last, labels naming mean/logvar/code, else hidden).
        A `ModelSpec` is accepted and described with `describe_spec`.
      title: figure title (default names the spec when one is given).

    Returns:
      path. max(7, 1.5 + 1.3 * stages) x 5 inches.

    Raises:
      ValueError: fewer than 2 stages or a bad size.
    """
    if isinstance(layers, ModelSpec):
        spec = layers
        layers = describe_spec(spec)
        title = title or (f"{spec.name} ({spec.family}, {spec.kind.upper()}): "
                          f"latent_dim = {spec.latent_dim}")
    stages = [tuple(s) for s in layers]
    if len(stages) < 2:
        raise ValueError(f"an architecture needs at least 2 stages, got {len(stages)}")
    for s in stages:
        if len(s) not in (2, 3):
            raise ValueError(f"each stage must be (label, size) or (label, size, role), got {s!r}")
    n = len(stages)
    units = [layer_units(s[1]) for s in stages]
    roles = [s[2] if len(s) == 3 else _role(str(s[0]), i, n) for i, s in enumerate(stages)]
    bad = [r for r in roles if r not in _ROLE_COLOR]
    if bad:
        raise ValueError(f"unknown role {bad[0]!r}; use one of {tuple(_ROLE_COLOR)}")
    top = math.log10(max(units) + 1)
    heights = [0.6 + 3.4 * math.log10(u + 1) / top for u in units]
    fig = _figure(max(7.0, 1.5 + 1.3 * n), 5.0)
    ax = fig.subplots()
    ax.axis("off")
    gap, width = 1.0, 0.46
    for i, ((label, size, *_), h, role) in enumerate(zip(stages, heights, roles)):
        x = i * gap
        ax.add_patch(FancyBboxPatch((x - width / 2, -h / 2), width, h,
                                    boxstyle="round,pad=0.02,rounding_size=0.05",
                                    facecolor=_ROLE_COLOR[role], edgecolor="0.25", lw=1.1))
        ax.text(x, h / 2 + 0.15, str(label), ha="center", va="bottom", fontsize=10,
                weight="bold")
        size_text = str(size).replace("x", "\u00d7") if isinstance(size, str) else f"{size}"
        if isinstance(size, str) and "x" in size:
            size_text += f"\n= {units[i]:,}"
        ax.text(x, -h / 2 - 0.15, size_text, ha="center", va="top", fontsize=9)
        if i:
            ax.add_patch(FancyArrowPatch(((i - 1) * gap + width / 2 + 0.03, 0),
                                         (x - width / 2 - 0.03, 0), arrowstyle="-|>",
                                         mutation_scale=12, color="0.2", lw=1.2))
    lat = [i for i, r in enumerate(roles) if r == "latent"]
    if lat:
        y = -max(heights) / 2 - 0.95
        for a, b, name in ((0, lat[0], "encoder"), (lat[-1], n - 1, "decoder")):
            if b > a:
                ax.plot([a * gap, a * gap, b * gap, b * gap], [y + 0.12, y, y, y + 0.12],
                        color="0.45", lw=1.1)
                ax.text((a + b) * gap / 2, y - 0.1, name, ha="center", va="top", fontsize=10,
                        color="0.3", style="italic")
    ax.set_xlim(-0.7, (n - 1) * gap + 0.7)
    ax.set_ylim(-max(heights) / 2 - 1.45, max(heights) / 2 + 0.6)
    fig.legend(handles=[Patch(facecolor=c, edgecolor="0.25", label=r) for r, c in
                        _ROLE_COLOR.items()], loc="outside lower center", ncol=4, frameon=False,
               fontsize=9)
    ax.set_title(title or "Architecture", fontsize=12, weight="bold")
    return _save(fig, path)


# ----------------------------------------------------------------------------------------------
# Several runs.


def _runs(runs: Mapping[str, Records]) -> dict[str, list[Mapping[str, Any]]]:
    if not runs:
        raise ValueError("no runs given")
    return {str(k): _as_records(v) for k, v in runs.items()}


@_styled
def plot_sweep_curves(runs: Mapping[str, Records], path: PathLike, *, metric: str = "loss",
                      title: str | None = None, ylabel: str = "nats per example") -> Path:
    """Sweep members' per-epoch curves of one metric overlaid (train solid, test dashed).

    Args:
      runs: {label: metrics records or run folder}, in legend order.
      metric: record key to plot (loss, recon, kl, nll, bits_per_dim, ...).
      title, ylabel: figure title and y-axis label.

    Returns:
      path. 10 x 5 inches.

    Raises:
      ValueError: no runs, or no run has a finite value of `metric`.
    """
    recs = _runs(runs)
    fig = _figure(10.0, 5.0)
    ax = fig.subplots()
    cmap = matplotlib.colormaps["tab10" if len(recs) <= 10 else "tab20"]
    xmax = 0.0
    for i, (label, rs) in enumerate(recs.items()):
        color = cmap(i % cmap.N)
        tx, ty = _series(rs, "train", metric)
        sx, sy = _series(rs, "test", metric)
        if tx.size and np.isfinite(ty).any():
            ax.plot(tx, ty, "o-", ms=3.5, lw=1.4, color=color, label=f"{label}")
        if sx.size and np.isfinite(sy).any():
            ax.plot(sx, sy, "s--", ms=3.5, lw=1.4, color=color,
                    label=None if tx.size and np.isfinite(ty).any() else f"{label}")
        xmax = max([xmax, *tx, *sx])
    if not ax.lines:
        keys = sorted({k for rs in recs.values() for r in rs if r.get("type") in ("train", "test")
                       for k in r})
        raise ValueError(f"no run has a finite {metric!r} per epoch; keys present: {keys}")
    _epochs_axis(ax, xmax)
    ax.set_ylabel(f"{metric} ({ylabel})")
    style = [Line2D([], [], color="0.3", marker="o", ms=3.5, label="train (epoch mean)"),
             Line2D([], [], color="0.3", ls="--", marker="s", ms=3.5, label="test")]
    leg = ax.legend(loc="upper left", bbox_to_anchor=(1.01, 1.0), frameon=False, title="run")
    ax.add_artist(leg)
    ax.legend(handles=style, loc="lower left", bbox_to_anchor=(1.01, 0.0), frameon=False)
    ax.set_title(title or f"Sweep: {metric} per epoch ({len(recs)} runs)")
    return _save(fig, path)


def _last(rs: Sequence[Mapping[str, Any]], kind: str) -> Mapping[str, Any] | None:
    rows = [r for r in rs if r.get("type") == kind]
    return rows[-1] if rows else None


def _fmt(value: Any, digits: int = 2) -> str:
    if value is None:
        return "\u2014"
    v = _num(value)
    if not math.isfinite(v):
        return str(v)
    return f"{v:.{digits}f}"


def sweep_table(runs: Mapping[str, Records]) -> str:
    """Markdown table of the final numbers of each run (last train and last test record).

    Columns: run, epochs, train loss, test loss, test recon, test KL, test NLL (when estimated,
    with its sample count), active units. Missing values show as an em dash, NaN as "nan".
    """
    recs = _runs(runs)
    head = ("| run | epochs | train loss | test loss | test recon | test KL | test NLL | "
            "active units |")
    lines = [head, "|---|---:|---:|---:|---:|---:|---:|---:|"]
    for label, rs in recs.items():
        tr, te = _last(rs, "train"), _last(rs, "test")
        epochs = max([int(_num(r["epoch"])) for r in rs
                      if r.get("type") in ("train", "test") and "epoch" in r] or [0])
        nll = "\u2014"
        if te is not None and te.get("nll") is not None:
            nll = _fmt(te["nll"])
            if te.get("nll_samples"):
                nll += f" (k={int(te['nll_samples'])})"
        au = "\u2014"
        if te is not None and te.get("active_units") is not None:
            au = str(int(te["active_units"]))
        name = label.replace("|", "\\|")
        lines.append(
            f"| {name} | {epochs} | {_fmt(tr and tr.get('loss'))} | {_fmt(te and te.get('loss'))} "
            f"| {_fmt(te and te.get('recon'))} | {_fmt(te and te.get('kl'))} | {nll} | {au} |"
        )
    return "\n".join(lines) + "\n"


@_styled
def plot_compare_runs(runs: Mapping[str, Records], path: PathLike, *, title: str | None = None,
                      ylabel: str = "nats per example") -> Path:
    """Several runs (e.g. a torch run and a JAX run of one preset) on shared axes.

    Panels: loss | reconstruction | KL, per epoch; one colour per run, train solid with circles,
    test dashed with squares.

    Args:
      runs: {label: metrics records or run folder}.
      title, ylabel: figure title and y-axis unit.

    Returns:
      path. 14 x 4.6 inches.
    """
    recs = _runs(runs)
    fig = _figure(14.0, 4.6)
    axes = fig.subplots(1, 3, sharex=True)
    cmap = matplotlib.colormaps["tab10" if len(recs) <= 10 else "tab20"]
    xmax = 0.0
    for ax, key, name in zip(axes, ("loss", "recon", "kl"),
                             ("loss", "reconstruction term", "KL divergence")):
        for i, (label, rs) in enumerate(recs.items()):
            color = cmap(i % cmap.N)
            for kind, style in (("train", "o-"), ("test", "s--")):
                x, y = _series(rs, kind, key)
                if x.size and np.isfinite(y).any():
                    ax.plot(x, y, style, ms=3.5, lw=1.4, color=color, alpha=0.9)
                    xmax = max([xmax, *x])
        ax.set_title(name)
        ax.set_ylabel(ylabel)
        if not ax.lines:
            ax.text(0.5, 0.5, f"no finite {key} values", transform=ax.transAxes, ha="center",
                    va="center", color="0.4")
    for ax in axes:
        _epochs_axis(ax, xmax)
    handles = [Line2D([], [], color=cmap(i % cmap.N), lw=2.5, label=label)
               for i, label in enumerate(recs)]
    handles += [Line2D([], [], color="0.3", marker="o", ms=3.5, label="train (epoch mean)"),
                Line2D([], [], color="0.3", ls="--", marker="s", ms=3.5, label="test")]
    fig.legend(handles=handles, loc="outside lower center", ncol=len(handles), frameon=False)
    _suptitle(fig, title or "Runs compared: " + ", ".join(recs))
    return _save(fig, path)
