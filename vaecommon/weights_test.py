"""Tests of vaecommon.weights (NumPy only)."""

from __future__ import annotations

import pickle
import zipfile

import numpy as np
import pytest

from vaecommon import weights as W


def _weights():
    rng = np.random.default_rng(0)
    return {
        "encoder.0.weight": rng.normal(size=(4, 3)).astype(np.float32),
        "encoder.0.bias": rng.normal(size=4).astype(np.float32),
        "bn.running_var": np.array([1e-30, 3.0, np.inf], np.float32),  # extremes survive too
        "bn.num_batches_tracked": np.array(7, np.int64),                 # 0-d int64, as torch
        "file": np.zeros((0, 2), np.float32),                            # np.savez's reserved name
    }


@pytest.mark.parametrize("suffix", [".safetensors", ".npz"])
def test_round_trip_exact_with_metadata(tmp_path, suffix):
    w = _weights()
    path = W.save_weights(tmp_path / f"m{suffix}", w, metadata={"preset": "conv_vae", "step": 3})
    got, md = W.load_weights(path)
    assert md == {"preset": "conv_vae", "step": "3"}
    assert set(got) == set(w)
    for k in w:
        assert got[k].dtype == w[k].dtype and got[k].shape == w[k].shape, k
        np.testing.assert_array_equal(got[k], w[k])
    assert not list(tmp_path.glob("*.tmp"))  # atomic write left nothing behind


def test_npz_is_a_plain_numpy_archive(tmp_path):
    path = W.save_weights(tmp_path / "m.npz", _weights())
    with np.load(path, allow_pickle=False) as z:
        np.testing.assert_array_equal(z["encoder.0.bias"], _weights()["encoder.0.bias"])


def test_missing_file(tmp_path):
    with pytest.raises(FileNotFoundError, match="no weights file"):
        W.load_weights(tmp_path / "nope.safetensors")


@pytest.mark.parametrize("suffix", [".safetensors", ".npz"])
def test_truncated_file(tmp_path, suffix):
    path = W.save_weights(tmp_path / f"m{suffix}", _weights())
    data = path.read_bytes()
    for cut in (len(data) // 2, len(data) - 3):
        path.write_bytes(data[:cut])
        with pytest.raises(W.WeightsFileError, match="truncated|corrupt"):
            W.load_weights(path)
    path.write_bytes(b"")
    with pytest.raises(W.WeightsFileError, match="empty"):
        W.load_weights(path)


def test_foreign_files(tmp_path):
    text = tmp_path / "notes.safetensors"
    text.write_text("hello, not weights")
    with pytest.raises(W.WeightsFileError, match="not a canonical weights file"):
        W.load_weights(text)
    pkl = tmp_path / "model.pt"
    pkl.write_bytes(pickle.dumps({"a": 1}))
    with pytest.raises(W.WeightsFileError, match="pickle.*load_torch_file"):
        W.load_weights(pkl)
    zf = tmp_path / "torch_style.pt"  # torch.save writes a zip with data.pkl inside
    with zipfile.ZipFile(zf, "w") as z:
        z.writestr("archive/data.pkl", b"\x80\x02}q\x00.")
    with pytest.raises(W.WeightsFileError, match="non-.npy entries.*load_torch_file"):
        W.load_weights(zf)


def test_save_refuses_bad_tensors(tmp_path):
    with pytest.raises(ValueError, match="non-numeric"):
        W.save_weights(tmp_path / "m.npz", {"a": np.array(["x"], dtype=object)})
    with pytest.raises(ValueError, match="invalid tensor name"):
        W.save_weights(tmp_path / "m.npz", {"__metadata__": np.zeros(1)})


def test_check_weights_names_every_problem():
    expected = {"a.weight": (2, 3), "a.bias": (2,), "b.weight": (1,)}
    W.check_weights(expected, {"a.weight": np.zeros((2, 3)), "a.bias": np.zeros(2), "b.weight": np.zeros(1)})
    with pytest.raises(W.WeightsMismatchError) as e:
        W.check_weights(expected, {"a.weight": np.zeros((3, 2)), "a.bias": np.zeros(2), "c": np.zeros(1)},
                        what="preset 'x'")
    msg = str(e.value)
    assert "preset 'x'" in msg and "missing tensors: ['b.weight']" in msg
    assert "unexpected tensors: ['c']" in msg and "a.weight: model needs (2, 3), got (3, 2)" in msg


def test_shared_torch_init_is_pytorchs_default_rule():
    """U(-1/sqrt(fan_in), 1/sqrt(fan_in)) with fan_in = shape[1] * prod(shape[2:]) for weights
    (Linear (out, in), Conv (out, in, k, k), ConvTranspose (in, out, k, k): torch's rule), the
    bias beside a weight with the same bound, BatchNorm and loose parameters untouched;
    deterministic in the seed."""
    import numpy as np

    from vaecommon.weights import shared_torch_init

    canonical = {"fc.weight": np.zeros((300, 784), np.float32), "fc.bias": np.zeros(300, np.float32),
                 "deconv.weight": np.zeros((64, 32, 4, 4), np.float32),
                 "deconv.bias": np.zeros(32, np.float32),
                 "bn.weight": np.ones(64, np.float32), "bn.bias": np.zeros(64, np.float32),
                 "bn.running_mean": np.zeros(64, np.float32),
                 "bn.running_var": np.ones(64, np.float32), "log_sigma": np.zeros(1, np.float32)}
    out = shared_torch_init(canonical, seed=3)
    for name, fan_in in (("fc", 784), ("deconv", 32 * 16)):
        for leaf in ("weight", "bias"):
            v = out[f"{name}.{leaf}"]
            assert v.dtype == np.float32 and np.abs(v).max() <= 1 / np.sqrt(fan_in)
            assert np.abs(v).max() > 0.9 / np.sqrt(fan_in)  # the whole range is used
    for name in ("bn.weight", "bn.bias", "bn.running_mean", "bn.running_var", "log_sigma"):
        np.testing.assert_array_equal(out[name], canonical[name])
    again = shared_torch_init(canonical, seed=3)
    assert all(np.array_equal(out[k], again[k]) for k in out)
    assert not np.array_equal(shared_torch_init(canonical, seed=4)["fc.weight"], out["fc.weight"])


def test_shared_epoch_noise_is_a_function_of_seed_and_epoch():
    import numpy as np

    from vaecommon.schedule import shared_epoch_noise

    a = shared_epoch_noise(1, 5, steps=3, batch=4, latent_dim=2, extra_shape=(7, 4, 2),
                           image_shape=(28, 28, 1))
    assert {k: v.shape for k, v in a.items()} == {"eps": (3, 4, 2), "extra": (3, 7, 4, 2),
                                                  "uniform": (3, 4, 28, 28, 1)}
    assert all(v.dtype == np.float32 for v in a.values())
    assert 0.0 <= a["uniform"].min() and a["uniform"].max() < 1.0
    b = shared_epoch_noise(1, 5, steps=3, batch=4, latent_dim=2, extra_shape=(7, 4, 2),
                           image_shape=(28, 28, 1))
    assert all(np.array_equal(a[k], b[k]) for k in a)
    c = shared_epoch_noise(1, 6, steps=3, batch=4, latent_dim=2)
    assert set(c) == {"eps"} and not np.array_equal(a["eps"], c["eps"])


def _state(**changes):
    w = {"fc.weight": np.ones((2, 3), np.float32), "fc.bias": np.zeros(2, np.float32),
         "bn.num_batches_tracked": np.array(4, np.int64)}
    moments = {s: {k: np.full_like(w[k], i + 1) for k in ("fc.weight", "fc.bias")}
               for i, s in enumerate(("exp_avg", "exp_avg_sq"))}
    fields = dict(weights=w, moments=moments, optimizer_step=4, step=4, epoch=2,
                  config={"optimizer": "adam", "momentum": 0.0})
    return W.TrainingState(**{**fields, **changes})


def test_optimizer_slots_name_torch_optim_state():
    assert W.optimizer_slots("adam") == W.optimizer_slots("adamw") == ("exp_avg", "exp_avg_sq")
    assert W.optimizer_slots("adam_norm_grad") == ("exp_avg", "exp_avg_sq")
    assert W.optimizer_slots("sgd", 0.9) == ("momentum_buffer",) and W.optimizer_slots("sgd") == ()
    assert W.counts_steps("adamw") and not W.counts_steps("sgd")
    with pytest.raises(ValueError, match="unknown optimizer 'lion'"):
        W.optimizer_slots("lion")


def test_training_state_arrays_and_checks():
    ts = _state()
    a = ts.arrays()
    assert sorted(a) == sorted(["model/fc.weight", "model/fc.bias", "model/bn.num_batches_tracked",
                                "optimizer/exp_avg/fc.weight", "optimizer/exp_avg/fc.bias",
                                "optimizer/exp_avg_sq/fc.weight", "optimizer/exp_avg_sq/fc.bias",
                                "optimizer/step", "trainer/step", "trainer/epoch"])
    assert a["trainer/epoch"].dtype == np.int64 and int(a["trainer/epoch"]) == 2
    names = ["fc.weight", "fc.bias"]
    W.check_training_state(ts, names, what="m")
    with pytest.raises(W.WeightsMismatchError, match=r"optimizer 'adam' keeps \['exp_avg', "
                                                     r"'exp_avg_sq'\], the state holds \['exp_avg'\]"):
        W.check_training_state(ts._replace(moments={"exp_avg": ts.moments["exp_avg"]}), names, what="m")
    bad = {**ts.moments, "exp_avg": {"fc.weight": np.ones((3, 2), np.float32),
                                     "fc.bias": np.ones(2, np.float32)}}
    with pytest.raises(W.WeightsMismatchError, match=r"m, optimizer state 'exp_avg'.*fc.weight: "
                                                     r"model needs \(2, 3\), got \(3, 2\)"):
        W.check_training_state(ts._replace(moments=bad), names, what="m")
    with pytest.raises(W.WeightsMismatchError, match="with optimizer_step None"):
        W.check_training_state(ts._replace(optimizer_step=None), names, what="m")
    with pytest.raises(W.WeightsMismatchError, match="step -1 is negative"):
        W.check_training_state(ts._replace(step=-1), names, what="m")
