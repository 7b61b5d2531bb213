"""The matplotlib plumbing every figure shares: style, size, canvas, saving.

Figures are built on `matplotlib.figure.Figure` with its own Agg canvas, so no pyplot state is
created and nothing needs closing; the style is applied with `matplotlib.rc_context` around each
figure only (the `styled` decorator). Every figure is written at `DPI` without a tight bounding
box, so a W x H inch figure is exactly round(W * DPI) x round(H * DPI) pixels.

The figures themselves live in `vaecommon.plots` (metric curves and tables),
`vaecommon.image_plots` (image grids and the latent space) and `vaecommon.diagrams` (teaching
diagrams). They call these helpers through the module (`plot_style.save(fig, path)`), so a test
can wrap `save` once to see every Figure before it is written.
"""

from __future__ import annotations

import functools
import os
import textwrap
from pathlib import Path
from typing import Any, Callable

import matplotlib
from matplotlib.backends.backend_agg import FigureCanvasAgg
from matplotlib.figure import Figure

__all__ = ["DPI", "PathLike", "styled", "figure", "save", "suptitle"]

DPI = 110
"""Resolution of every figure; a figure of W x H inches is round(W * DPI) x round(H * DPI) px."""

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

PathLike = str | os.PathLike


def styled(fn: Callable[..., Path]) -> Callable[..., Path]:
    """Decorator: run a figure function inside the shared matplotlib style (rc_context)."""
    @functools.wraps(fn)
    def wrapper(*args: Any, **kwargs: Any) -> Path:
        with matplotlib.rc_context(_STYLE):
            return fn(*args, **kwargs)

    return wrapper


def suptitle(fig: Figure, text: str, **kw: Any) -> None:
    """fig.suptitle wrapped to the figure's width, so narrow figures do not clip their title."""
    size = float(kw.get("fontsize", matplotlib.rcParams["figure.titlesize"]
                        if not isinstance(matplotlib.rcParams["figure.titlesize"], str) else 12))
    chars = max(12, int(fig.get_figwidth() * 72 / (0.6 * size)))
    fig.suptitle("\n".join(textwrap.fill(line, chars) for line in text.split("\n")), **kw)


def figure(width: float, height: float) -> Figure:
    """A constrained-layout Figure of width x height inches at DPI, on its own Agg canvas."""
    fig = Figure(figsize=(width, height), dpi=DPI, layout="constrained")
    FigureCanvasAgg(fig)
    return fig


def save(fig: Figure, path: PathLike) -> Path:
    """Write fig as a PNG at DPI (parent folders created); returns path as a Path."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    # No bbox_inches="tight": the pixel size stays exactly figsize * DPI (tests rely on it);
    # constrained layout already keeps labels inside the canvas.
    fig.savefig(path, dpi=DPI)
    return path
