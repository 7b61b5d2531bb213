"""Tests of vaecommon.figures and vaecommon.architecture (framework-free; no jax, no torch).

Figures are checked by reading the PNG back: pixel size (figsize * DPI), not blank, and for
image grids that the pixels follow the input (all-zeros vs all-ones input). Titles and counts
are checked on the matplotlib Figure itself, captured just before it is saved.
"""

from __future__ import annotations

import json
import math
import statistics
import subprocess
import sys

import numpy as np
import pytest
from PIL import Image

from vaecommon import figures as F
from vaecommon.architecture import describe_spec, layer_units
from vaecommon.presets import PRESETS, get_spec
from vaecommon.runs import RunFolder


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
    assert abs(w - inches[0] * F.DPI) <= 1 and abs(h - inches[1] * F.DPI) <= 1, (w, h, inches)
    assert rgb.std() > 0.01, "blank figure"
    return rgb


@pytest.fixture
def captured(monkeypatch):
    """The Figure objects the functions build, captured as they are saved."""
    figs = []
    save = F._save

    def spy(fig, path):
        figs.append(fig)
        return save(fig, path)

    monkeypatch.setattr(F, "_save", spy)
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
# Metric records, built by hand following the run-folder contract.


def make_records(epochs=3, steps=5, *, ae=False, test=True, nan_from_step=None):
    """batch/train/test records as train.py writes them, JSON round-tripped (NaN -> "nan")."""
    recs, step = [], 0
    for e in range(1, epochs + 1):
        losses = []
        for _ in range(steps):
            step += 1
            recon = 200.0 / (1 + step)
            kl = 0.0 if ae else 5.0 + 0.1 * step
            if nan_from_step is not None and step >= nan_from_step:
                recon = float("nan")
            losses.append(recon + kl)
            recs.append({"type": "batch", "step": step, "epoch": step / steps,
                         "loss": recon + kl, "recon": recon, "kl": kl})
        recs.append({"type": "train", "epoch": e, "step": step, "loss": float(np.mean(losses)),
                     "recon": float(np.mean(losses)) - (0.0 if ae else 5.0),
                     "kl": 0.0 if ae else 5.0, "time_s": 1.0, "examples_per_s": 100.0})
        if test:
            recs.append({"type": "test", "epoch": e, "step": step, "loss": 100.0 - e,
                         "recon": 90.0 - e, "kl": 0.0 if ae else 10.0, "bits_per_dim": 0.18,
                         "active_units": 0 if ae else 3, "kl_per_dim": [3.0, 4.0, 3.0, 0.001]})
    return json.loads(json.dumps(
        [{k: (repr(v) if isinstance(v, float) and not math.isfinite(v) else v)
          for k, v in r.items()} for r in recs]))


# ----------------------------------------------------------------------------------------------
# Latent helpers.


def test_lerp_endpoints_exact_and_linear():
    z0 = np.array([0.1, -2.0, 3.3], np.float32)
    z1 = np.array([1.7, 0.3, -0.9], np.float32)
    path = F.lerp(z0, z1, 7)
    assert path.shape == (7, 3) and path.dtype == np.float32
    np.testing.assert_array_equal(path[0], z0)
    np.testing.assert_array_equal(path[-1], z1)
    np.testing.assert_allclose(path[3], (z0 + z1) / 2, rtol=1e-6)  # t = 0.5
    np.testing.assert_allclose(np.diff(path, axis=0), np.tile((z1 - z0) / 6, (6, 1)), atol=1e-6)


def test_slerp_endpoints_exact_and_norm_kept():
    rng = np.random.default_rng(0)
    z0, z1 = rng.normal(size=20), rng.normal(size=20)
    z1 *= np.linalg.norm(z0) / np.linalg.norm(z1)  # equal norms
    path = F.slerp(z0, z1, 11)
    np.testing.assert_array_equal(path[0], z0)
    np.testing.assert_array_equal(path[-1], z1)
    np.testing.assert_allclose(np.linalg.norm(path, axis=1), np.linalg.norm(z0), rtol=1e-12)
    # The midpoint lies on the bisector, at the endpoints' norm (not shrunk as lerp's is).
    mid = (z0 + z1) / np.linalg.norm(z0 + z1) * np.linalg.norm(z0)
    np.testing.assert_allclose(F.slerp(z0, z1, 3)[1], mid, rtol=1e-12)
    assert np.linalg.norm(F.lerp(z0, z1, 3)[1]) < np.linalg.norm(z0)


def test_slerp_quarter_circle_by_hand():
    path = F.slerp(np.array([1.0, 0.0]), np.array([0.0, 1.0]), 3)
    s = math.sqrt(0.5)
    np.testing.assert_allclose(path, [[1, 0], [s, s], [0, 1]], atol=1e-15)


@pytest.mark.parametrize("z1", [[2.0, 4.0, 6.0], [-1.0, -2.0, -3.0], [0.0, 0.0, 0.0]],
                         ids=["parallel", "antiparallel", "zero"])
def test_slerp_falls_back_to_lerp(z1):
    z0 = np.array([1.0, 2.0, 3.0])
    np.testing.assert_array_equal(F.slerp(z0, np.array(z1), 5), F.lerp(z0, np.array(z1), 5))


def test_lerp_slerp_bad_inputs():
    with pytest.raises(ValueError, match="same shape"):
        F.lerp(np.zeros(3), np.zeros(4), 5)
    with pytest.raises(ValueError, match="steps"):
        F.slerp(np.ones(3), np.ones(3), 1)


def test_manifold_grid_is_inverse_normal_cdf():
    n = 5
    z = F.manifold_grid(n)
    assert z.shape == (n * n, 2) and z.dtype == np.float32
    p = np.linspace(0.05, 0.95, n)
    # Independent check through the forward CDF: Phi(g) = (1 + erf(g / sqrt 2)) / 2 = p.
    g = np.sort(np.unique(z[:, 0]).astype(np.float64))
    np.testing.assert_allclose([(1 + math.erf(v / math.sqrt(2))) / 2 for v in g], p, atol=1e-6)
    assert math.isclose(g[-1], 1.6448536, rel_tol=1e-6)  # the 95% quantile
    assert abs(g[n // 2]) < 1e-12  # the median
    # Row-major: z_1 grows along a row, z_2 decreases down the rows (z_2 points up, as on a plot).
    grid = z.reshape(n, n, 2)
    np.testing.assert_allclose(grid[0, :, 0], g, atol=1e-6)
    np.testing.assert_allclose(grid[:, 0, 1], g[::-1], atol=1e-6)
    ref = statistics.NormalDist().inv_cdf(0.05)
    assert math.isclose(float(z[0, 0]), ref, rel_tol=1e-6)


@pytest.mark.parametrize("d", [1, 3, 20])
def test_manifold_needs_a_2d_latent(d, tmp_path):
    with pytest.raises(ValueError, match="plot_latent_scatter.*PCA"):
        F.manifold_grid(10, latent_dim=d)
    with pytest.raises(ValueError, match="use plot_latent_scatter"):
        F.plot_latent_manifold(np.zeros((4, 28, 28)), tmp_path / "m.png", latent_dim=d)


def test_manifold_grid_bad_ranges():
    with pytest.raises(ValueError, match="lo < hi"):
        F.manifold_grid(5, lo=0.0, hi=0.9)
    with pytest.raises(ValueError, match="n must"):
        F.manifold_grid(1)


def test_pca_2d_by_hand():
    # Points on the line y = 2x (plus a constant 3rd coordinate): all variance in PC1.
    t = np.linspace(-1, 1, 11)
    z = np.stack([t, 2 * t, np.full_like(t, 5.0)], axis=1)
    proj, ratio = F.pca_2d(z)
    np.testing.assert_allclose(ratio, [1.0, 0.0], atol=1e-12)
    np.testing.assert_allclose(proj[:, 0], t * math.sqrt(5), atol=1e-12)  # sign fixed: + loading
    np.testing.assert_allclose(proj[:, 1], 0.0, atol=1e-12)
    with pytest.raises(ValueError, match=r"\(N, D\)"):
        F.pca_2d(np.zeros(5))


# ----------------------------------------------------------------------------------------------
# describe_spec.


@pytest.mark.parametrize("name", list(PRESETS))
def test_describe_spec_covers_every_preset(name):
    spec = PRESETS[name]
    layers = describe_spec(spec)
    assert len(layers) >= 3
    assert layers[0][0] == "input" and layers[-1][0] == "output"
    assert layer_units(layers[0][1]) == spec.input_dim
    assert layer_units(layers[-1][1]) == spec.input_dim
    latent = [size for label, size in layers if label in ("mean/logvar", "mean/std", "code")]
    assert latent == [spec.latent_dim]
    assert all(layer_units(size) >= 1 for _, size in layers)


def test_describe_spec_values():
    assert describe_spec(get_spec("pytorch_examples")) == [
        ("input", 784), ("enc1", 400), ("mean/logvar", 20), ("dec1", 400), ("output", 784)]
    assert describe_spec(get_spec("simple_ae")) == [
        ("input", 784), ("enc1", 128), ("code", 32), ("dec1", 128), ("output", 784)]
    glasses = dict(describe_spec(get_spec("manning_glasses_vae")))
    assert glasses["conv3"] == "32x31x31" and layer_units(glasses["conv3"]) == 30752  # the book's
    assert glasses["output"] == "3x256x256"
    conv = describe_spec(get_spec("conv_vae"))
    assert [s for _, s in conv] == ["1x28x28", "32x14x14", "64x7x7", 16, "64x7x7", "32x14x14",
                                    "1x28x28"]
    # The conv stages agree with the models' flatten boundary (presets.feature_shape).
    from vaecommon.presets import feature_shape

    burgess = describe_spec(get_spec("burgess_vae"))
    assert [s for _, s in burgess] == [
        "1x64x64", "32x32x32", "32x16x16", "32x8x8", "32x4x4", 256, 256, 10, 256, 256, "32x4x4",
        "32x8x8", "32x16x16", "32x32x32", "1x64x64"]
    for name in ("conv_vae", "resnet_vae", "manning_glasses_vae", "burgess_vae"):
        spec = get_spec(name)
        stages = [s for _, s in describe_spec(spec)]
        assert "x".join(map(str, feature_shape(spec))) in stages
    # Overrides flow through: nothing is hard-coded to the default preset.
    small = describe_spec(get_spec("manning_glasses_vae", image_size=64, latent_dim=8))
    assert small[0][1] == "3x64x64" and small[-1][1] == "3x64x64" and ("mean/std", 8) in small


def test_describe_spec_unknown_family():
    import dataclasses

    spec = dataclasses.replace(get_spec("pytorch_examples"), family="nope")
    with pytest.raises(ValueError, match="known families"):
        describe_spec(spec)


def test_layer_units():
    assert layer_units(784) == 784
    assert layer_units("32x14x14") == 6272
    assert layer_units((3, 4)) == 12
    with pytest.raises(ValueError):
        layer_units("32 by 14")
    with pytest.raises(ValueError):
        layer_units(0)


# ----------------------------------------------------------------------------------------------
# Loss curves.


def test_loss_curves_size_and_content(tmp_path, captured):
    out = F.plot_loss_curves(make_records(), tmp_path / "sub" / "loss.png", title="my run")
    assert out == tmp_path / "sub" / "loss.png"
    _assert_png(out, (13.0, 4.6))
    fig = captured[-1]
    assert fig.get_suptitle() == "my run"
    loss_ax = fig.axes[0]
    assert loss_ax.get_ylabel() == "nats per example" and loss_ax.get_xlabel() == "epoch"
    assert len(loss_ax.lines) == 3  # per batch, per epoch, test


def test_loss_curves_nan_records(tmp_path, captured):
    recs = make_records(epochs=3, steps=5, nan_from_step=8)
    assert any(r.get("recon") == "nan" for r in recs)  # as read back from metrics.jsonl
    _assert_png(F.plot_loss_curves(recs, tmp_path / "nan.png"), (13.0, 4.6))
    assert "NaN/inf values not drawn" in captured[-1].get_suptitle()
    marks = [ln for ln in captured[-1].axes[0].lines if ln.get_label() == "first NaN/inf"]
    assert marks and marks[0].get_xdata()[0] == pytest.approx(8 / 5)


def test_loss_curves_all_nan(tmp_path):
    recs = [{"type": "batch", "step": 1, "epoch": 1.0, "loss": "nan", "recon": "nan", "kl": "inf"}]
    _assert_png(F.plot_loss_curves(recs, tmp_path / "allnan.png"), (13.0, 4.6))


def test_loss_curves_no_test_ae_one_epoch(tmp_path, captured):
    recs = make_records(epochs=1, ae=True, test=False)
    _assert_png(F.plot_loss_curves(recs, tmp_path / "ae.png"), (13.0, 4.6))
    assert "autoencoder" in _texts(captured[-1])
    assert len(captured[-1].axes[0].lines) == 2  # no test line


def test_loss_curves_from_run_folder(tmp_path):
    run = RunFolder(tmp_path / "run").create()
    run.append_metrics(make_records(epochs=2))
    _assert_png(F.plot_loss_curves(run.root, run.figures / "loss.png"), (13.0, 4.6))


def test_loss_curves_bad_records(tmp_path):
    with pytest.raises(ValueError, match="no batch/train/test"):
        F.plot_loss_curves([], tmp_path / "x.png")
    with pytest.raises(ValueError, match="'type'"):
        F.plot_loss_curves([{"loss": 1.0}], tmp_path / "x.png")
    with pytest.raises(ValueError, match="epoch"):
        F.plot_loss_curves([{"type": "train", "loss": 1.0}], tmp_path / "x.png")


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
    out = F.plot_reconstructions(x, x[::-1], tmp_path / "r.png", n=10)
    _assert_png(out, (1.6 + 10 * 0.8 * 1.05, 2.6))
    labels = [ax.get_ylabel() for ax in captured[-1].axes]
    assert labels == ["original", "reconstruction"]
    dark = _grid_mean(lambda v, p: F.plot_reconstructions(v, v, p), np.zeros((10, 28, 28)),
                      tmp_path / "z.png")
    light = _grid_mean(lambda v, p: F.plot_reconstructions(v, v, p), np.ones((10, 28, 28)),
                       tmp_path / "o.png")
    assert light > dark + 0.2


def test_reconstructions_bad_inputs(tmp_path):
    x = _digits(4)
    with pytest.raises(ValueError, match=r"reconstructions .*flat.*reshape"):
        F.plot_reconstructions(x, x.reshape(4, 784), tmp_path / "r.png")  # flat decoder output
    with pytest.raises(ValueError, match="same shape"):
        F.plot_reconstructions(x, _digits(4, 32, 32), tmp_path / "r.png")
    with pytest.raises(ValueError, match="same shape"):
        F.plot_reconstructions(x, x[:3], tmp_path / "r.png")
    with pytest.raises(ValueError, match="flat"):
        F.plot_reconstructions(x.reshape(4, 784), x.reshape(4, 784), tmp_path / "r.png")


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
        F.plot_samples(images, tmp_path / "s.png")


def test_samples(tmp_path):
    _assert_png(F.plot_samples(_digits(64), tmp_path / "s.png"), (0.4 + 8 * 0.8, 0.75 + 8 * 0.8))
    _assert_png(F.plot_samples(_digits(10), tmp_path / "s2.png", nrow=5), (4.4, 0.75 + 1.6))
    dark = _grid_mean(F.plot_samples, np.zeros((16, 28, 28)), tmp_path / "z.png")
    light = _grid_mean(F.plot_samples, np.ones((16, 28, 28, 1)), tmp_path / "o.png")
    assert light > dark + 0.3


def test_samples_rgb_and_non_square(tmp_path):
    rgb = _assert_png(F.plot_samples(_digits(6, 32, 64, 3), tmp_path / "c.png", nrow=3),
                      (0.4 + 3 * 0.8 * 2, 0.75 + 2 * 0.8))
    assert np.abs(rgb[..., 0] - rgb[..., 1]).max() > 0.1  # colour kept, not turned grey


def test_interpolation(tmp_path, captured):
    z = F.lerp(np.zeros((28, 28)), np.ones((28, 28)), 10)  # a fade, as decoded images
    out = F.plot_interpolation(z, tmp_path / "i.png", labels=("3", "8"), method="slerp")
    _assert_png(out, (1.0 + 10 * 0.8, 1.8))
    ax = captured[-1].axes[0]
    ticks = [t.get_text() for t in ax.get_xticklabels()]
    assert ticks[0].startswith("3") and ticks[-1].startswith("8") and len(ticks) == 10
    assert "slerp" in captured[-1].get_suptitle()
    assert len(ax.patches) == 2  # both endpoints framed
    dark = _grid_mean(F.plot_interpolation, np.zeros((5, 28, 28)), tmp_path / "z.png")
    light = _grid_mean(F.plot_interpolation, np.ones((5, 28, 28)), tmp_path / "o.png")
    assert light > dark + 0.2


def test_interpolation_bad_inputs(tmp_path):
    with pytest.raises(ValueError, match="method"):
        F.plot_interpolation(_digits(4), tmp_path / "i.png", method="cubic")
    with pytest.raises(ValueError, match=">= 2"):
        F.plot_interpolation(_digits(1), tmp_path / "i.png")


def test_latent_manifold(tmp_path, captured):
    n = 6
    assert F.manifold_grid(n).shape[0] == n * n
    out = F.plot_latent_manifold(_digits(n * n), tmp_path / "m.png")
    _assert_png(out, (6.0, 6.0))
    ax = captured[-1].axes[0]
    assert ax.get_yticklabels()[0].get_text() == "1.64"  # top row: the largest z_2
    assert ax.get_xticklabels()[0].get_text() == "-1.64"
    dark = _grid_mean(F.plot_latent_manifold, np.zeros((9, 28, 28)), tmp_path / "z.png")
    light = _grid_mean(F.plot_latent_manifold, np.ones((9, 28, 28)), tmp_path / "o.png")
    assert light > dark + 0.2
    with pytest.raises(ValueError, match="n \\* n"):
        F.plot_latent_manifold(_digits(10), tmp_path / "m.png")


# ----------------------------------------------------------------------------------------------
# Latent scatter and KL per dimension.


@pytest.mark.parametrize("d, phrase", [(1, "1-D latent"), (2, "2-D latent"), (20, "PCA")])
def test_latent_scatter(d, phrase, tmp_path, captured):
    rng = np.random.default_rng(0)
    labels = rng.integers(0, 10, 300)
    z = rng.normal(size=(300, d)) + labels[:, None]
    _assert_png(F.plot_latent_scatter(z, labels, tmp_path / "s.png"), (7.5, 6.0))
    title = captured[-1].axes[0].get_title()
    assert phrase in title and "300 points" in title
    if d > 2:
        assert "% of variance" in captured[-1].axes[0].get_xlabel()


def test_latent_scatter_continuous_labels_and_none(tmp_path):
    z = np.random.default_rng(1).normal(size=(50, 2))
    _assert_png(F.plot_latent_scatter(z, np.linspace(0, 1, 50), tmp_path / "c.png"), (7.5, 6.0))
    _assert_png(F.plot_latent_scatter(z[:, 0], None, tmp_path / "n.png"), (7.5, 6.0))


def test_latent_scatter_bad_inputs(tmp_path):
    z = np.zeros((10, 2))
    with pytest.raises(ValueError, match=r"labels must have shape \(10,\)"):
        F.plot_latent_scatter(z, np.zeros(9), tmp_path / "s.png")
    with pytest.raises(ValueError, match=r"\(N, D\)"):
        F.plot_latent_scatter(np.zeros((2, 3, 4)), np.zeros(2), tmp_path / "s.png")
    with pytest.raises(ValueError, match="NaN"):
        F.plot_latent_scatter(np.full((3, 2), np.nan), np.zeros(3), tmp_path / "s.png")


def test_kl_per_dim(tmp_path, captured):
    kl = [2.0, 0.001, 1.5, "nan", 0.0, 0.3]  # as in a test record after a partial divergence
    out = F.plot_kl_per_dim(kl, tmp_path / "k.png")
    _assert_png(out, (7.0, 4.6))
    title = captured[-1].get_suptitle()
    assert "3 of 6 active units (KL > 0.01 nats)" in title and "1 NaN/inf" in title
    # (N, D) per-example values are averaged; a covariance mask decides the highlight.
    per_example = np.array([[1.0, 0.0, 0.2], [3.0, 0.0, 0.0]])
    F.plot_kl_per_dim(per_example, tmp_path / "k2.png", active_units=[True, False, False],
                      log=False)
    assert "1 of 3 active units" in captured[-1].get_suptitle()
    F.plot_kl_per_dim([1.0, 1.0, 0.0], tmp_path / "k3.png", active_units=1)
    assert "1 active by covariance" in captured[-1].get_suptitle()


def test_kl_per_dim_bad_inputs(tmp_path):
    with pytest.raises(ValueError, match=r"\(D,\) or \(N, D\)"):
        F.plot_kl_per_dim(np.zeros((2, 2, 2)), tmp_path / "k.png")
    with pytest.raises(ValueError, match="mask must have shape"):
        F.plot_kl_per_dim([1.0, 2.0], tmp_path / "k.png", active_units=[True])
    with pytest.raises(ValueError, match="not a number"):
        F.plot_kl_per_dim(["abc"], tmp_path / "k.png")


# ----------------------------------------------------------------------------------------------
# Teaching diagrams.


@pytest.mark.parametrize("reparam", ["logvar", "std", "logvar_as_scale"])
def test_reparameterization_trick(reparam, tmp_path, captured):
    out = F.plot_reparameterization_trick(tmp_path / "r.png", latent_dim=20, reparam=reparam)
    _assert_png(out, (12.0, 6.5))
    text = _texts(captured[-1])
    assert "(B, 20)" in text and "(B, 784)" in text
    assert ("quirk" in text) == (reparam == "logvar_as_scale")


def test_loss_composition(tmp_path, captured):
    _assert_png(F.plot_loss_composition(tmp_path / "l.png", likelihood="bernoulli",
                                        latent_dim=20), (12.0, 5.2))
    text = _texts(captured[-1])
    assert "bernoulli" in text and "ELBO" in text and "{20}" in text
    F.plot_loss_composition(tmp_path / "b.png", likelihood="mse_mean", beta=4.0, kl_form="std")
    assert "not the ELBO" in _texts(captured[-1])
    F.plot_loss_composition(tmp_path / "ae.png", likelihood="mse_sum", kl_form="none")
    assert "No KL term" in _texts(captured[-1])
    F.plot_loss_composition(tmp_path / "g.png", likelihood="something_new")  # generic form
    with pytest.raises(ValueError, match="kl_form"):
        F.plot_loss_composition(tmp_path / "x.png", likelihood="bernoulli", kl_form="sigma")
    with pytest.raises(ValueError, match="beta"):
        F.plot_loss_composition(tmp_path / "x.png", likelihood="bernoulli", beta=-1.0)


def test_reparameterization_bad_args(tmp_path):
    with pytest.raises(ValueError, match="reparam"):
        F.plot_reparameterization_trick(tmp_path / "r.png", latent_dim=2, reparam="var")
    with pytest.raises(ValueError, match="latent_dim"):
        F.plot_reparameterization_trick(tmp_path / "r.png", latent_dim=0)


def test_architecture(tmp_path, captured):
    layers = [("input", 784), ("fc1", 400), ("mean/logvar", 20), ("fc3", 400), ("output", 784)]
    _assert_png(F.plot_architecture(layers, tmp_path / "a.png", title="pytorch_examples"),
                (1.5 + 1.3 * 5, 5.0))
    ax = captured[-1].axes[0]
    boxes = [p for p in ax.patches if type(p).__name__ == "FancyBboxPatch"]
    heights = [b.get_height() for b in boxes]
    assert len(boxes) == 5 and heights[0] > heights[1] > heights[2]  # log-scaled by size
    assert heights[0] == pytest.approx(heights[4])
    spec = get_spec("manning_glasses_vae")
    _assert_png(F.plot_architecture(spec, tmp_path / "g.png"), (1.5 + 1.3 * 11, 5.0))
    assert "manning_glasses_vae" in captured[-1].axes[0].get_title()
    with pytest.raises(ValueError, match="at least 2"):
        F.plot_architecture([("input", 784)], tmp_path / "x.png")
    with pytest.raises(ValueError, match="role"):
        F.plot_architecture([("a", 1, "middle"), ("b", 2)], tmp_path / "x.png")


# ----------------------------------------------------------------------------------------------
# Several runs.


def test_sweep_curves_and_table(tmp_path, captured):
    runs = {"beta=1": make_records(), "beta=4": make_records(epochs=2, test=False)}
    _assert_png(F.plot_sweep_curves(runs, tmp_path / "s.png"), (10.0, 5.0))
    F.plot_sweep_curves(runs, tmp_path / "kl.png", metric="kl")
    with pytest.raises(ValueError, match="no run has a finite 'nll'"):
        F.plot_sweep_curves(runs, tmp_path / "x.png", metric="nll")
    with pytest.raises(ValueError, match="no runs"):
        F.plot_sweep_curves({}, tmp_path / "x.png")

    bad = make_records(epochs=1)
    bad[-1] = {**bad[-1], "loss": "nan", "nll": 95.123, "nll_samples": 5000}
    table = F.sweep_table({**runs, "a|b": bad})
    lines = table.strip().splitlines()
    assert lines[0].startswith("| run | epochs | train loss | test loss")
    assert len(lines) == 5
    assert lines[2].startswith("| beta=1 | 3 |") and "| 97.00 |" in lines[2] and "| 3 |" in lines[2]
    assert lines[3].startswith("| beta=4 | 2 |") and lines[3].count("\u2014") == 5  # no test
    assert "a\\|b" in lines[4] and "nan" in lines[4] and "95.12 (k=5000)" in lines[4]


def test_compare_runs(tmp_path, captured):
    runs = {"torch": make_records(), "jax": make_records(epochs=3, ae=False),
            "ae": make_records(ae=True, test=False)}
    _assert_png(F.plot_compare_runs(runs, tmp_path / "c.png"), (14.0, 4.6))
    fig = captured[-1]
    assert "torch" in fig.get_suptitle() and "jax" in fig.get_suptitle()
    assert [ax.get_title() for ax in fig.axes] == ["loss", "reconstruction term", "KL divergence"]


# ----------------------------------------------------------------------------------------------


def test_no_framework_imports():
    code = ("import sys, vaecommon.figures, vaecommon.architecture; "
            "bad = [m for m in ('jax', 'torch', 'matplotlib.pyplot') if m in sys.modules]; "
            "assert not bad, bad")
    subprocess.run([sys.executable, "-c", code], check=True)
