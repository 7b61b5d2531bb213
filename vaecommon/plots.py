"""Metric figures and tables of training runs: what every run and sweep draws from its records.

Framework-free: every function takes metric records (the dicts of a run folder's
`metrics.jsonl`, see `vaecommon.runs`, or the path of one or of its run folder) or plain arrays,
writes one PNG (see `vaecommon.plot_style`) and returns its path; `sweep_table` returns Markdown.

| figure                        | function                           |
|-------------------------------|------------------------------------|
| loss, recon and KL per epoch  | `plot_loss_curves`                 |
| KL per latent dimension       | `plot_kl_per_dim`                  |
| sweep members overlaid        | `plot_sweep_curves`, `sweep_table` |
| runs side by side             | `plot_compare_runs`                |
| latent units against factors  | `plot_unit_factor_matrix`          |

Image figures are in `vaecommon.image_plots`, teaching diagrams in `vaecommon.diagrams`.
"""

from __future__ import annotations

import math
import os
from pathlib import Path
from typing import Any, Iterable, Mapping, Sequence

import matplotlib
import numpy as np
from matplotlib.lines import Line2D
from matplotlib.patches import Patch
from matplotlib.ticker import MaxNLocator

from vaecommon import plot_style
from vaecommon.plot_style import PathLike
from vaecommon.runs import read_metrics

__all__ = [
    "plot_loss_curves",
    "plot_kl_per_dim",
    "plot_sweep_curves",
    "sweep_table",
    "plot_compare_runs",
    "plot_unit_factor_matrix",
]

_TRAIN, _TEST = "C0", "C1"

Records = Iterable[Mapping[str, Any]] | PathLike
"""Metric records: a sequence of dicts, or a metrics.jsonl path or run folder (see `runs`)."""


# ----------------------------------------------------------------------------------------------
# Reading metric records.


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


@plot_style.styled
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
    fig = plot_style.figure(13.0, 4.6)
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
    plot_style.suptitle(fig, head)
    return plot_style.save(fig, path)


# ----------------------------------------------------------------------------------------------
# KL per latent dimension.


@plot_style.styled
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
    fig = plot_style.figure(min(16.0, max(7.0, 2.5 + 0.25 * d)), 4.6)
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
    plot_style.suptitle(fig, title or f"KL per latent dimension\n{head}", fontsize=11)
    return plot_style.save(fig, path)



# ----------------------------------------------------------------------------------------------
# Several runs.


def _runs(runs: Mapping[str, Records]) -> dict[str, list[Mapping[str, Any]]]:
    if not runs:
        raise ValueError("no runs given")
    return {str(k): _as_records(v) for k, v in runs.items()}


@plot_style.styled
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
    fig = plot_style.figure(10.0, 5.0)
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
    return plot_style.save(fig, path)


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
            if te.get("nll_stderr") is not None:
                nll += f" \u00b1 {te['nll_stderr']:.2f}"
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


@plot_style.styled
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
    fig = plot_style.figure(14.0, 4.6)
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
    plot_style.suptitle(fig, title or "Runs compared: " + ", ".join(recs))
    return plot_style.save(fig, path)


@plot_style.styled
def plot_unit_factor_matrix(panels: Mapping[str, tuple[Any, Any]], factor_names: Sequence[str],
                            path: PathLike, *, title: str | None = None) -> Path:
    """Per latent unit: its KL and its normalised mutual information with each factor, one
    heatmap per panel (e.g. one per seed: units are not aligned across seeds).

    Rows are the units sorted by KL, largest first, each labelled with its KL; a cell is
    I(z_d; factor_f) / H(factor_f) in [0, 1] (1: the unit determines the factor).

    Args:
      panels: {panel title: (kl_per_dim (D,), matrix (D, F))}.
      factor_names: the F column labels.
      title: figure title (default "Latent units against the factors").

    Returns:
      path. Width 0.6 + panels * (1.4 + 0.55 F) inches, height 1.4 + 0.3 D inches.

    Raises:
      ValueError: no panels, or shapes that do not match.
    """
    if not panels:
        raise ValueError("no panels given")
    items = []
    for name, (kl, matrix) in panels.items():
        kl = np.vectorize(_num, otypes=[np.float64])(np.asarray(kl, dtype=object))
        m = np.asarray(matrix, np.float64)
        if m.ndim != 2 or kl.shape != (m.shape[0],) or m.shape[1] != len(factor_names):
            raise ValueError(f"panel {name!r}: kl_per_dim {kl.shape} and matrix {m.shape} do not "
                             f"fit {len(factor_names)} factors")
        items.append((name, kl, m))
    d = max(m.shape[0] for _, _, m in items)
    f = len(factor_names)
    fig = plot_style.figure(0.6 + len(items) * (1.4 + 0.55 * f), 1.4 + 0.3 * d)
    axes = np.atleast_1d(fig.subplots(1, len(items)))
    image = None
    for ax, (name, kl, m) in zip(axes, items):
        order = np.argsort(-np.nan_to_num(kl, nan=-np.inf), kind="stable")
        image = ax.imshow(m[order], vmin=0.0, vmax=1.0, cmap="viridis", aspect="auto",
                          interpolation="nearest")
        ax.set_xticks(range(f))
        ax.set_xticklabels(factor_names, rotation=45, ha="right", fontsize=8)
        ax.set_yticks(range(len(order)))
        ax.set_yticklabels([f"z{i} KL {kl[i]:.2f}" for i in order], fontsize=8)
        ax.grid(False)
        ax.set_title(name, fontsize=10)
    fig.colorbar(image, ax=list(axes), shrink=0.8, label="I(z; factor) / H(factor)")
    plot_style.suptitle(fig, title or "Latent units against the factors")
    return plot_style.save(fig, path)
