"""Tests of vaecommon.architecture: the stages `describe_spec` derives from every preset."""

from __future__ import annotations

import pytest

from vaecommon.architecture import describe_spec, layer_units
from vaecommon.presets import PRESETS, get_spec


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

    for name in ("conv_vae", "resnet_vae", "manning_glasses_vae"):
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
