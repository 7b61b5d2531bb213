"""Tests of vaecommon.plot_style, and the figure-test helpers the other figure tests import.

Figures are checked by reading the PNG back: pixel size (figsize * DPI), not blank, and for
image grids that the pixels follow the input (all-zeros vs all-ones input). Titles and counts
are checked on the matplotlib Figure itself, captured just before it is saved (`captured`,
which wraps `plot_style.save`, the one function every figure module writes through).
Used by plots_test, image_plots_test and diagrams_test.
"""

from __future__ import annotations

import subprocess
import sys

import numpy as np
import pytest
from PIL import Image

from vaecommon import plot_style


def _png(path):
    """(width, height) and the RGB pixels in [0, 1] of a written PNG."""
    with Image.open(path) as im:
        size = im.size
        rgb = np.asarray(im.convert("RGB"), dtype=np.float64) / 255.0
    return size, rgb


def _assert_png(path, inches):
    assert path.exists() and path.suffix == ".png"
    (w, h), rgb = _png(path)
    # Matplotlib rounds figsize * DPI to whole pixels.
    dpi = plot_style.DPI
    assert abs(w - inches[0] * dpi) <= 1 and abs(h - inches[1] * dpi) <= 1, (w, h, inches)
    assert rgb.std() > 0.01, "blank figure"
    return rgb


@pytest.fixture
def captured(monkeypatch):
    """The Figure objects the figure functions build, captured as they are saved."""
    figs = []
    save = plot_style.save

    def spy(fig, path):
        figs.append(fig)
        return save(fig, path)

    monkeypatch.setattr(plot_style, "save", spy)  # every figure module saves through it
    return figs


def _texts(fig):
    """All title and suptitle strings of a figure, joined."""
    out = [fig.get_suptitle()] if fig.get_suptitle() else []
    for ax in fig.axes:
        out += [ax.get_title(loc) for loc in ("left", "center", "right")]
        out += [ax.get_xlabel(), ax.get_ylabel()]
        out += [t.get_text() for t in ax.texts]
    return "\n".join(out)


# ----------------------------------------------------------------------------------------------


def test_no_framework_imports():
    code = ("import sys, vaecommon.latent, vaecommon.plot_style, vaecommon.plots, "
            "vaecommon.image_plots, vaecommon.diagrams, vaecommon.architecture; "
            "bad = [m for m in ('jax', 'torch', 'matplotlib.pyplot') if m in sys.modules]; "
            "assert not bad, bad")
    subprocess.run([sys.executable, "-c", code], check=True)
