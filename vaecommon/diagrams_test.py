"""Tests of vaecommon.diagrams: the teaching diagrams drawn from a preset."""

from __future__ import annotations

import pytest

from vaecommon import diagrams
from vaecommon.plot_style_test import _assert_png, _texts, captured  # noqa: F401 (a fixture)
from vaecommon.presets import get_spec


@pytest.mark.parametrize("reparam", ["logvar", "std", "logvar_as_scale"])
def test_reparameterization_trick(reparam, tmp_path, captured):
    out = diagrams.plot_reparameterization_trick(tmp_path / "r.png", latent_dim=20, reparam=reparam)
    _assert_png(out, (12.0, 6.5))
    text = _texts(captured[-1])
    assert "(B, 20)" in text and "(B, 784)" in text
    assert ("quirk" in text) == (reparam == "logvar_as_scale")


def test_loss_composition(tmp_path, captured):
    _assert_png(diagrams.plot_loss_composition(tmp_path / "l.png", likelihood="bernoulli",
                                        latent_dim=20), (12.0, 5.2))
    text = _texts(captured[-1])
    assert "bernoulli" in text and "ELBO" in text and "{20}" in text
    diagrams.plot_loss_composition(tmp_path / "b.png", likelihood="mse_mean", beta=4.0,
                                   kl_form="std")
    assert "not the ELBO" in _texts(captured[-1])
    diagrams.plot_loss_composition(tmp_path / "ae.png", likelihood="mse_sum", kl_form="none")
    assert "No KL term" in _texts(captured[-1])
    diagrams.plot_loss_composition(tmp_path / "g.png", likelihood="something_new")  # generic form
    with pytest.raises(ValueError, match="kl_form"):
        diagrams.plot_loss_composition(tmp_path / "x.png", likelihood="bernoulli", kl_form="sigma")
    with pytest.raises(ValueError, match="beta"):
        diagrams.plot_loss_composition(tmp_path / "x.png", likelihood="bernoulli", beta=-1.0)


def test_reparameterization_bad_args(tmp_path):
    with pytest.raises(ValueError, match="reparam"):
        diagrams.plot_reparameterization_trick(tmp_path / "r.png", latent_dim=2, reparam="var")
    with pytest.raises(ValueError, match="latent_dim"):
        diagrams.plot_reparameterization_trick(tmp_path / "r.png", latent_dim=0)


def test_architecture(tmp_path, captured):
    layers = [("input", 784), ("fc1", 400), ("mean/logvar", 20), ("fc3", 400), ("output", 784)]
    _assert_png(diagrams.plot_architecture(layers, tmp_path / "a.png", title="pytorch_examples"),
                (1.5 + 1.3 * 5, 5.0))
    ax = captured[-1].axes[0]
    boxes = [p for p in ax.patches if type(p).__name__ == "FancyBboxPatch"]
    heights = [b.get_height() for b in boxes]
    assert len(boxes) == 5 and heights[0] > heights[1] > heights[2]  # log-scaled by size
    assert heights[0] == pytest.approx(heights[4])
    spec = get_spec("manning_glasses_vae")
    _assert_png(diagrams.plot_architecture(spec, tmp_path / "g.png"), (1.5 + 1.3 * 11, 5.0))
    assert "manning_glasses_vae" in captured[-1].axes[0].get_title()
    with pytest.raises(ValueError, match="at least 2"):
        diagrams.plot_architecture([("input", 784)], tmp_path / "x.png")
    with pytest.raises(ValueError, match="role"):
        diagrams.plot_architecture([("a", 1, "middle"), ("b", 2)], tmp_path / "x.png")
