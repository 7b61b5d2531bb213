"""Unit tests of `vaecommon.runinfo` on hand-made run folders (no framework is imported)."""

from __future__ import annotations

import dataclasses
import json
import math
import subprocess
import sys

import pytest

from vaecommon import runinfo
from vaecommon.config import TrainConfig, resolve
from vaecommon.runinfo import RunFolderError


def make_run(root, framework="jax", **cfg_changes):
    root.mkdir(parents=True, exist_ok=True)
    cfg = resolve(TrainConfig(**cfg_changes))
    record = {"config": dataclasses.asdict(cfg), "spec": {}, "framework": framework,
              "data": {"train": {"n": 256}, "test": {"n": 100}}}
    (root / "config.json").write_text(json.dumps(record))
    return root


def test_import_needs_no_framework():
    code = ("import sys, vaecommon.runinfo\n"
            "assert not [m for m in ('jax', 'torch', 'jaxvae', 'torchvae') if m in sys.modules]")
    r = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=60)
    assert r.returncode == 0, r.stderr


def test_read_run_config_accepts_a_run_and_names_every_problem(tmp_path):
    rec = runinfo.read_run_config(make_run(tmp_path / "ok", "torch"))
    assert rec["framework"] == "torch"
    assert runinfo.train_config(rec).model == "pytorch_examples"
    assert runinfo.n_train(rec, runinfo.train_config(rec)) == 256

    with pytest.raises(RunFolderError, match="does not exist"):
        runinfo.read_run_config(tmp_path / "missing")
    (tmp_path / "w.pt").write_bytes(b"x")
    with pytest.raises(RunFolderError, match="is a file, not a run folder.*--to-run-folder"):
        runinfo.read_run_config(tmp_path / "w.pt")
    (tmp_path / "empty").mkdir()
    with pytest.raises(RunFolderError, match="not a run folder: no config.json"):
        runinfo.read_run_config(tmp_path / "empty")
    bad = tmp_path / "bad"
    bad.mkdir()
    for text, msg in [('{"config": ', "corrupt config JSON"),
                      ("[1, 2]", "expected a JSON object"),
                      ('{"config": {}}', r"missing key\(s\) \['framework'\]"),
                      ('{"config": {}, "framework": "tf"}', "unknown framework 'tf'"),
                      ('{"config": {"lr": -1}, "framework": "jax"}', "lr must be > 0"),
                      ('{"config": {"model": "nope"}, "framework": "jax"}',
                       "unknown model preset 'nope'; valid presets: pytorch_examples")]:
        (bad / "config.json").write_text(text)
        with pytest.raises(RunFolderError, match=msg):
            runinfo.read_run_config(bad)


def test_pick_step(tmp_path):
    run = make_run(tmp_path / "r", "jax")
    with pytest.raises(RunFolderError, match="no jax checkpoint in .*missing or empty"):
        runinfo.pick_step(run, [], "jax", None)
    (run / "checkpoints").mkdir()
    (run / "checkpoints" / "step_000000003.pt").write_bytes(b"")
    with pytest.raises(RunFolderError, match=r"no jax checkpoint in .*found only \['step_000000003.pt'\]"):
        runinfo.pick_step(run, [], "jax", None)
    assert runinfo.pick_step(run, [8, 16], "jax", None) == 16
    assert runinfo.pick_step(run, [8, 16], "jax", 8) == 8
    with pytest.raises(RunFolderError, match=r"available steps: \[8, 16\]"):
        runinfo.pick_step(run, [8, 16], "jax", 9)


def test_input_kind(tmp_path):
    run = make_run(tmp_path / "r")
    (run / "checkpoints" / "8").mkdir(parents=True)
    assert runinfo.input_kind(run) == "run"
    assert runinfo.input_kind(run / "checkpoints" / "8") == "run"
    assert runinfo.run_of_step_dir(run / "checkpoints" / "8") == (run, 8)
    for name, kind in [("a.pt", "torch"), ("a.pth", "torch"), ("a.safetensors", "canonical"),
                       ("a.npz", "canonical"), ("a.msgpack", "linen")]:
        (tmp_path / name).write_bytes(b"x")
        assert runinfo.input_kind(tmp_path / name) == kind
    (tmp_path / "a.bin").write_bytes(b"x")
    with pytest.raises(RunFolderError, match="unknown weights file type '.bin'"):
        runinfo.input_kind(tmp_path / "a.bin")
    (tmp_path / "plain").mkdir()
    with pytest.raises(RunFolderError, match="without config.json"):
        runinfo.input_kind(tmp_path / "plain")
    # Orbax checkpoints of a Linen tree: a saved folder, or a manager step with one item
    for marker in ("orbax/_METADATA", "step/default/_METADATA"):
        (tmp_path / marker).parent.mkdir(parents=True)
        (tmp_path / marker).write_text("{}")
    assert runinfo.input_kind(tmp_path / "orbax") == "linen"
    assert runinfo.input_kind(tmp_path / "step") == "linen"
    # an item of a run's own checkpoint points at the run
    (run / "checkpoints" / "8" / "state").mkdir()
    (run / "checkpoints" / "8" / "state" / "_METADATA").write_text("{}")
    with pytest.raises(RunFolderError, match=r"one item of a run's checkpoint; pass the run folder "
                                             r".* \(with --step 8\)"):
        runinfo.input_kind(run / "checkpoints" / "8" / "state")


def test_config_for_weights():
    with pytest.raises(RunFolderError, match="pass --model PRESET .*valid presets: pytorch_examples"):
        runinfo.config_for_weights({}, None, {})
    cfg = runinfo.config_for_weights({}, "conv_vae", {"latent_dim": 2})
    assert cfg.model == "conv_vae" and cfg.model_overrides == {"latent_dim": 2}
    assert cfg.lr == 1e-3  # resolved from the preset
    meta = runinfo.meta_for_weights(resolve(TrainConfig(model="leaky_vae", seed=7,
                                                         model_overrides={"latent_dim": 3})),
                                     converted_from="x.pt")
    meta = json.loads(json.dumps(meta))  # as stored in the file
    again = runinfo.config_for_weights(meta, None, {})
    assert (again.model, again.seed, again.model_overrides) == ("leaky_vae", 7, {"latent_dim": 3})
    assert runinfo.config_for_weights(meta, None, {"latent_dim": 4}).model_overrides == {
        "latent_dim": 4}
    assert runinfo.config_for_weights(meta, "simple_vae", {}).model_overrides == {}
    with pytest.raises(RunFolderError, match="unknown override"):
        runinfo.config_for_weights({}, "conv_vae", {"latnet_dim": 2})
    with pytest.raises(RunFolderError, match="unknown model preset 'nope'"):
        runinfo.config_for_weights({}, "nope", {})


def test_data_config_and_shape_check():
    cfg = resolve(TrainConfig(data_source="embedded", data_dir="/x"))
    assert runinfo.data_config(cfg) is cfg
    new = runinfo.data_config(cfg, "fashion_mnist")
    assert (new.dataset, new.data_source, new.data_dir) == ("fashion_mnist", "auto", None)
    assert runinfo.data_config(cfg, data_dir="/y").data_dir == "/y"
    assert runinfo.data_kwargs(resolve(TrainConfig(binarization="dynamic")))["binarization"] == "none"
    runinfo.check_input_shape(cfg, (1, 28, 28), None)
    with pytest.raises(RunFolderError, match=r"shape \(3, 64, 64\) \(C, H, W\) but .* \(1, 28, 28\)"):
        runinfo.check_input_shape(cfg, (3, 64, 64), None)


def test_dumps():
    text = runinfo.dumps({"loss": float("nan"), "kl_per_dim": [0.5, float("inf")], "n": 3,
                           "data": {"a": [1, 2]}})
    assert '"kl_per_dim": [0.5, "inf"]' in text
    back = json.loads(text)
    assert back["loss"] == "nan" and back["data"] == {"a": [1, 2]} and back["n"] == 3
    assert math.isnan(float(back["loss"]))


def test_write_state_folder_prepares_every_state_before_writing(tmp_path):
    from vaecommon.weights import TrainingState, WeightsMismatchError

    cfg = resolve(TrainConfig(model="pytorch_examples", epochs=3))
    record = {"config": dataclasses.asdict(cfg), "data": {"train": {"n": 1000}}, "devices": ["x"],
              "versions": {"old": 1}, "framework": "torch"}
    ts = TrainingState({}, {}, None, 20, 2, dataclasses.asdict(cfg))
    best = ts._replace(step=10, epoch=1)
    saved = []

    def saver(c, n):
        assert c == cfg and n == 1000

        def prepare(s):
            if s.step == 20 and fail:
                raise WeightsMismatchError("state does not fit")
            return lambda directory, keep: saved.append((directory.name, s.epoch, keep))
        return prepare

    fail = True  # the second state does not fit: nothing may be written, not even the first
    with pytest.raises(WeightsMismatchError):
        runinfo.write_state_folder(tmp_path / "a", ts, record, best=best, converted_from="src",
                                   framework="jax", versions={"new": 2}, saver=saver)
    assert saved == [] and not (tmp_path / "a").exists()
    fail = False
    root = runinfo.write_state_folder(tmp_path / "b", ts, record, best=best, converted_from="src",
                                      framework="jax", versions={"new": 2}, saver=saver)
    assert saved == [("best", 1, 1), ("checkpoints", 2, cfg.keep_checkpoints)]
    written = json.loads((root / "config.json").read_text())
    assert written["framework"] == "jax" and written["converted_from"] == "src"
    assert written["versions"] == {"new": 2} and "devices" not in written
    assert "step 20, epoch 2 of 3" in (root / "summary.md").read_text()
    with pytest.raises(RunFolderError):  # a folder that holds a run is never written over
        runinfo.write_state_folder(root, ts, record, best=None, converted_from="src",
                                   framework="jax", versions={}, saver=saver)
