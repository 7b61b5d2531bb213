"""Tests of torchvae.convert (torch only). Twin: jaxvae/convert_test.py."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from torchvae import convert, models
from vaecommon.weights import WeightsFileError, WeightsMismatchError


def _model(name="resnet_vae", seed=0, **kw):
    return models.build_model(name, generator=torch.Generator().manual_seed(seed), **kw)


def test_to_canonical_is_the_state_dict_as_copies():
    m = _model()
    w = convert.to_canonical(m)
    assert list(w) == list(m.state_dict())
    assert w["encoder.2.bn1.num_batches_tracked"].dtype == np.int64
    assert w["encoder.2.bn1.num_batches_tracked"].shape == ()
    x = torch.rand(4, 1, 28, 28)
    with torch.no_grad():
        m(x, eps=torch.zeros(4, 16))  # train mode: running stats change in place
    assert int(w["encoder.2.bn1.num_batches_tracked"]) == 0
    assert not np.array_equal(w["encoder.2.bn1.running_mean"], m.encoder[2].bn1.running_mean.numpy())


@pytest.mark.parametrize("name", ["conv_vae", "resnet_vae", "manning_ae"])
def test_round_trip_exact(name):
    w = convert.to_canonical(_model(name, seed=1))
    m = convert.from_canonical(name, w)
    back = convert.to_canonical(m)
    assert list(back) == list(w)
    for k in w:
        assert back[k].dtype == w[k].dtype
        np.testing.assert_array_equal(back[k], w[k], err_msg=k)
    other = convert.load_canonical_into(_model(name, seed=2), w)
    for k, v in convert.to_canonical(other).items():
        np.testing.assert_array_equal(v, w[k], err_msg=k)


def test_mismatches_name_the_tensor():
    w = convert.to_canonical(_model("conv_vae"))
    missing = {k: v for k, v in w.items() if k != "fc_mean.bias"}
    with pytest.raises(WeightsMismatchError, match=r"missing tensors: \['fc_mean.bias'\]"):
        convert.from_canonical("conv_vae", missing)
    with pytest.raises(WeightsMismatchError, match=r"unexpected tensors: \['x'\]"):
        convert.from_canonical("conv_vae", dict(w, x=np.zeros(1, np.float32)))
    bad = dict(w, **{"decoder.0.weight": np.zeros((32, 64, 4, 4), np.float32)})
    with pytest.raises(WeightsMismatchError, match=r"decoder.0.weight: model needs \(64, 32, 4, 4\)"):
        convert.from_canonical("conv_vae", bad)
    with pytest.raises(WeightsMismatchError, match="fc_mean.bias"):
        convert.from_canonical("conv_vae", dict(w, **{"fc_mean.bias": np.zeros(16, np.int64)}))
    with pytest.raises(TypeError, match="overrides"):
        convert.from_canonical(_model("conv_vae"), w, latent_dim=3)


def test_load_torch_file_variants(tmp_path):
    m = _model("conv_vae")
    sd = m.state_dict()
    for obj in (sd, {"model": sd, "epoch": 3}, {"state_dict": sd, "optimizer": {"lr": 1.0}}):
        path = tmp_path / "ckpt.pt"
        torch.save(obj, path)
        w = convert.load_torch_file(path)
        assert list(w) == list(sd)
        for k, v in sd.items():
            np.testing.assert_array_equal(w[k], v.numpy())
    loaded = convert.from_canonical("conv_vae", convert.load_torch_file(path))
    assert torch.equal(loaded.fc_mean.weight, m.fc_mean.weight)


def test_load_torch_file_refusals(tmp_path):
    with pytest.raises(FileNotFoundError):
        convert.load_torch_file(tmp_path / "nope.pt")
    path = tmp_path / "module.pt"
    torch.save(_model("simple_ae"), path)  # a whole pickled module: needs unsafe unpickling
    with pytest.raises(WeightsFileError, match=r"weights_only=True.*torch.save\(model.state_dict"):
        convert.load_torch_file(path)
    path = tmp_path / "other.pt"
    torch.save({"epoch": 3, "lr": 0.1}, path)
    with pytest.raises(WeightsFileError, match="not a state_dict"):
        convert.load_torch_file(path)
    path = tmp_path / "list.pt"
    torch.save([torch.zeros(2)], path)
    with pytest.raises(WeightsFileError, match="holds list"):
        convert.load_torch_file(path)
    path = tmp_path / "garbage.pt"
    path.write_bytes(b"not a torch file at all")
    with pytest.raises(WeightsFileError, match="is not a torch.save file"):
        convert.load_torch_file(path)
    path = tmp_path / "truncated.pt"
    torch.save(_model("simple_ae").state_dict(), path)
    path.write_bytes(path.read_bytes()[:200])  # a zip header, then nothing
    with pytest.raises(WeightsFileError, match="cannot be read"):
        convert.load_torch_file(path)


def test_load_torch_file_names_a_non_torch_file(tmp_path):
    junk = tmp_path / "notes.pt"
    junk.write_text("junk\n")
    with pytest.raises(WeightsFileError, match=r"notes.pt is not a torch.save file .*b'junk'"):
        convert.load_torch_file(junk)
