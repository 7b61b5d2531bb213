"""Tests of vaecommon.image_plots: image grids, the latent scatter and the latent manifold."""

from __future__ import annotations

import numpy as np
import pytest

from vaecommon import image_plots
from vaecommon.latent import lerp, manifold_grid
from vaecommon.plot_style_test import _assert_png, _png, captured  # noqa: F401 (a fixture)


# ----------------------------------------------------------------------------------------------
# Image grids.


def _digits(n, h=28, w=28, c=None, seed=0):
    rng = np.random.default_rng(seed)
    shape = (n, h, w) if c is None else (n, h, w, c)
    return rng.uniform(0, 1, shape)


def _grid_mean(fn, value, *args, **kwargs):
    """Mean intensity of the PNG when every image is `value`."""
    _, rgb = _png(fn(value, *args, **kwargs))
    return rgb.mean()


def test_reconstructions(tmp_path, captured):
    x = _digits(12)
    out = image_plots.plot_reconstructions(x, x[::-1], tmp_path / "r.png", n=10)
    _assert_png(out, (1.6 + 10 * 0.8 * 1.05, 2.6))
    labels = [ax.get_ylabel() for ax in captured[-1].axes]
    assert labels == ["original", "reconstruction"]
    both = lambda v, p: image_plots.plot_reconstructions(v, v, p)  # noqa: E731
    dark = _grid_mean(both, np.zeros((10, 28, 28)), tmp_path / "z.png")
    light = _grid_mean(both, np.ones((10, 28, 28)), tmp_path / "o.png")
    assert light > dark + 0.2


def test_reconstructions_bad_inputs(tmp_path):
    x = _digits(4)
    with pytest.raises(ValueError, match=r"reconstructions .*flat.*reshape"):
        # a flat decoder output
        image_plots.plot_reconstructions(x, x.reshape(4, 784), tmp_path / "r.png")
    with pytest.raises(ValueError, match="same shape"):
        image_plots.plot_reconstructions(x, _digits(4, 32, 32), tmp_path / "r.png")
    with pytest.raises(ValueError, match="same shape"):
        image_plots.plot_reconstructions(x, x[:3], tmp_path / "r.png")
    with pytest.raises(ValueError, match="flat"):
        image_plots.plot_reconstructions(x.reshape(4, 784), x.reshape(4, 784), tmp_path / "r.png")


@pytest.mark.parametrize("images, match", [
    (np.zeros((4, 784)), "flat"),
    (np.zeros(28), r"\(N, H, W\)"),
    (np.zeros((2, 2, 28, 28, 1)), r"\(N, H, W\)"),
    (np.zeros((4, 1, 28, 28)), "NCHW"),
    (np.full((4, 28, 28), 1.5), r"\[0, 1\]"),
    (np.full((4, 28, 28), -0.1), r"\[0, 1\]"),
    (np.full((4, 28, 28), 255.0), "divide 0-255"),
    (np.full((4, 28, 28), np.nan), "NaN"),
    (np.zeros((0, 28, 28)), "empty"),
], ids=["flat", "1d", "5d", "nchw", "above1", "below0", "bytes", "nan", "empty"])
def test_image_grids_reject_bad_inputs(images, match, tmp_path):
    with pytest.raises(ValueError, match=match):
        image_plots.plot_samples(images, tmp_path / "s.png")


def test_samples(tmp_path):
    _assert_png(image_plots.plot_samples(_digits(64), tmp_path / "s.png"),
                (0.4 + 8 * 0.8, 0.75 + 8 * 0.8))
    _assert_png(image_plots.plot_samples(_digits(10), tmp_path / "s2.png", nrow=5),
                (4.4, 0.75 + 1.6))
    dark = _grid_mean(image_plots.plot_samples, np.zeros((16, 28, 28)), tmp_path / "z.png")
    light = _grid_mean(image_plots.plot_samples, np.ones((16, 28, 28, 1)), tmp_path / "o.png")
    assert light > dark + 0.3


def test_samples_rgb_and_non_square(tmp_path):
    rgb = _assert_png(image_plots.plot_samples(_digits(6, 32, 64, 3), tmp_path / "c.png", nrow=3),
                      (0.4 + 3 * 0.8 * 2, 0.75 + 2 * 0.8))
    assert np.abs(rgb[..., 0] - rgb[..., 1]).max() > 0.1  # colour kept, not turned grey


def test_interpolation(tmp_path, captured):
    z = lerp(np.zeros((28, 28)), np.ones((28, 28)), 10)  # a fade, as decoded images
    out = image_plots.plot_interpolation(z, tmp_path / "i.png", labels=("3", "8"), method="slerp")
    _assert_png(out, (1.0 + 10 * 0.8, 1.8))
    ax = captured[-1].axes[0]
    ticks = [t.get_text() for t in ax.get_xticklabels()]
    assert ticks[0].startswith("3") and ticks[-1].startswith("8") and len(ticks) == 10
    assert "slerp" in captured[-1].get_suptitle()
    assert len(ax.patches) == 2  # both endpoints framed
    dark = _grid_mean(image_plots.plot_interpolation, np.zeros((5, 28, 28)), tmp_path / "z.png")
    light = _grid_mean(image_plots.plot_interpolation, np.ones((5, 28, 28)), tmp_path / "o.png")
    assert light > dark + 0.2


def test_interpolation_bad_inputs(tmp_path):
    with pytest.raises(ValueError, match="method"):
        image_plots.plot_interpolation(_digits(4), tmp_path / "i.png", method="cubic")
    with pytest.raises(ValueError, match=">= 2"):
        image_plots.plot_interpolation(_digits(1), tmp_path / "i.png")


def test_latent_manifold(tmp_path, captured):
    n = 6
    assert manifold_grid(n).shape[0] == n * n
    out = image_plots.plot_latent_manifold(_digits(n * n), tmp_path / "m.png")
    _assert_png(out, (6.0, 6.0))
    ax = captured[-1].axes[0]
    assert ax.get_yticklabels()[0].get_text() == "1.64"  # top row: the largest z_2
    assert ax.get_xticklabels()[0].get_text() == "-1.64"
    dark = _grid_mean(image_plots.plot_latent_manifold, np.zeros((9, 28, 28)), tmp_path / "z.png")
    light = _grid_mean(image_plots.plot_latent_manifold, np.ones((9, 28, 28)), tmp_path / "o.png")
    assert light > dark + 0.2
    with pytest.raises(ValueError, match="n \\* n"):
        image_plots.plot_latent_manifold(_digits(10), tmp_path / "m.png")


@pytest.mark.parametrize("d", [1, 3, 20])
def test_latent_manifold_needs_a_2d_latent(d, tmp_path):
    with pytest.raises(ValueError, match="use plot_latent_scatter"):
        image_plots.plot_latent_manifold(np.zeros((4, 28, 28)), tmp_path / "m.png", latent_dim=d)


# ----------------------------------------------------------------------------------------------
# Latent scatter.


@pytest.mark.parametrize("d, phrase", [(1, "1-D latent"), (2, "2-D latent"), (20, "PCA")])
def test_latent_scatter(d, phrase, tmp_path, captured):
    rng = np.random.default_rng(0)
    labels = rng.integers(0, 10, 300)
    z = rng.normal(size=(300, d)) + labels[:, None]
    _assert_png(image_plots.plot_latent_scatter(z, labels, tmp_path / "s.png"), (7.5, 6.0))
    title = captured[-1].axes[0].get_title()
    assert phrase in title and "300 points" in title
    if d > 2:
        assert "% of variance" in captured[-1].axes[0].get_xlabel()


def test_latent_scatter_continuous_labels_and_none(tmp_path):
    z = np.random.default_rng(1).normal(size=(50, 2))
    _assert_png(image_plots.plot_latent_scatter(z, np.linspace(0, 1, 50), tmp_path / "c.png"),
                (7.5, 6.0))
    _assert_png(image_plots.plot_latent_scatter(z[:, 0], None, tmp_path / "n.png"), (7.5, 6.0))


def test_latent_scatter_bad_inputs(tmp_path):
    z = np.zeros((10, 2))
    with pytest.raises(ValueError, match=r"labels must have shape \(10,\)"):
        image_plots.plot_latent_scatter(z, np.zeros(9), tmp_path / "s.png")
    with pytest.raises(ValueError, match=r"\(N, D\)"):
        image_plots.plot_latent_scatter(np.zeros((2, 3, 4)), np.zeros(2), tmp_path / "s.png")
    with pytest.raises(ValueError, match="NaN"):
        image_plots.plot_latent_scatter(np.full((3, 2), np.nan), np.zeros(3), tmp_path / "s.png")


def test_latent_traversal(tmp_path, captured):
    rows = np.stack([lerp(np.zeros((28, 28)), np.ones((28, 28)), 5) for _ in range(3)])  # (3, 5, ..)
    values = [-2, -1, 0, 1, 2]
    out = image_plots.plot_latent_traversal(rows, values, tmp_path / "t.png",
                                            row_labels=["z4", "z0", "z1"])
    _assert_png(out, (1.6 + 5 * 0.8, 0.9 + 3 * 0.8))
    ax = captured[-1].axes[0]
    assert [t.get_text() for t in ax.get_yticklabels()] == ["z4", "z0", "z1"]
    assert [t.get_text() for t in ax.get_xticklabels()] == ["-2.0", "-1.0", "+0.0", "+1.0", "+2.0"]
    with pytest.raises(ValueError, match="5 columns but 2 values"):
        image_plots.plot_latent_traversal(rows, [0, 1], tmp_path / "t.png")
    with pytest.raises(ValueError, match="3 rows but 1 row labels"):
        image_plots.plot_latent_traversal(rows, values, tmp_path / "t.png", row_labels=["z0"])
