"""Fault injection for the PyTorch trainer: bad data, NaN losses, corrupt checkpoints, SIGKILL.

Twin: `jaxvae/robustness_test.py`.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import numpy as np
import pytest
import torch

from torchvae import checkpoint as ckpt_lib
from torchvae import losses, train
from vaecommon import runs
from vaecommon.config import TrainConfig
from vaecommon.datasets import DataError

REPO = Path(__file__).resolve().parents[1]
SMALL = TrainConfig(model="pytorch_examples", limit_train=256, limit_test=64, batch_size=32,
                    epochs=2, final_nll_samples=0, eval_batch_size=64)


@pytest.mark.parametrize("fault, message", [
    ("nan", "NaN/inf pixel values in 1 images"),
    ("range", r"pixel values span \[0, 255\].*divide 8-bit images by 255"),
    ("shape", r"shape \(1, 14, 14\).*expects \(1, 28, 28\)"),
    ("empty", "the dataset is empty"),
])
def test_bad_training_data_is_refused_with_a_named_problem(tmp_path, monkeypatch, fault, message):
    real = train.load_datasets

    def faulty(cfg):
        tr, te = real(cfg)
        x = tr.images.clone()
        if fault == "nan":
            x[3, 0, 5, 5] = float("nan")
        elif fault == "range":
            x = torch.round(x * 255)
        elif fault == "shape":
            x = x[:, :, ::2, ::2]
        elif fault == "empty":
            x = x[:0]
        return tr._replace(images=x), te

    monkeypatch.setattr(train, "load_datasets", faulty)
    with pytest.raises(DataError, match=message):
        train.train_and_evaluate(SMALL, tmp_path, progress=False)
    assert not (tmp_path / "checkpoints").exists(), "bad data is refused before anything is created"


def test_nonfinite_loss_stops_naming_epoch_and_step_and_keeps_checkpoint(tmp_path, monkeypatch):
    elbo = losses.OBJECTIVES["elbo"]

    def elbo_nan_from_step_11(x, out, *, step, **kw):
        loss, terms = elbo(x, out, step=step, **kw)
        return (loss * float("nan") if step >= 10 else loss), terms

    monkeypatch.setitem(losses.OBJECTIVES, "elbo", elbo_nan_from_step_11)
    with pytest.raises(train.NonFiniteLossError,
                       match=r"epoch 2, step 11;.*checkpoint.*intact.*--lr.*--logvar-clamp.*--grad-clip"):
        train.train_and_evaluate(SMALL, tmp_path, progress=False)
    mgr = ckpt_lib.CheckpointManager(tmp_path / "checkpoints")
    assert mgr.all_steps() == [8]
    payload = torch.load(tmp_path / "checkpoints" / "step_000000008.pt", weights_only=True)
    assert all(torch.isfinite(v).all() for v in payload["model"].values() if v.is_floating_point())


def test_logvar_clamp_bounds_the_posterior_variance():
    tr = train.Trainer.create(SMALL.replace(logvar_clamp=0.5), 256)
    with torch.no_grad():
        tr.model.fc22.bias += 1e3  # exp(logvar/2) would overflow without the clamp
    x = torch.full((4, 1, 28, 28), 0.5)
    loss, terms = tr.loss_fn(x, torch.ones(4, 20))
    assert torch.isfinite(loss)
    assert float(terms["kl"].detach()) >= 20 * 0.5 * (np.exp(0.5) - 0.5 - 1) - 1e-3


def test_corrupt_and_foreign_checkpoints_give_clear_errors(tmp_path):
    train.train_and_evaluate(SMALL.replace(epochs=1), tmp_path, progress=False)
    path = tmp_path / "checkpoints" / "step_000000008.pt"
    mgr = ckpt_lib.CheckpointManager(tmp_path / "checkpoints")
    # wrong preset
    other = train.Trainer.create(SMALL.replace(model="simple_vae"), 256)
    with pytest.raises(RuntimeError, match="Missing key|Unexpected key"):
        mgr.restore(other, {})
    # truncated file
    data = path.read_bytes()
    path.write_bytes(data[: len(data) // 2])
    tr = train.Trainer.create(SMALL, 256)
    with pytest.raises(ValueError, match=f"cannot load checkpoint {path}"):
        mgr.restore(tr, {})
    # a foreign (non-torchvae) file: a bare state_dict
    torch.save({"fc1.weight": torch.zeros(1)}, path)
    with pytest.raises(ValueError, match="not a torchvae training checkpoint"):
        mgr.restore(tr, {})


def test_checkpoints_refuse_pickled_code(tmp_path):
    """weights_only=True: a checkpoint that smuggles an arbitrary object is refused."""
    path = tmp_path / "checkpoints" / "step_000000001.pt"
    path.parent.mkdir(parents=True)

    class Evil:
        def __reduce__(self):
            return (os.system, ("echo pwned > " + str(tmp_path / "pwned"),))

    torch.save({"framework": "torch", "model": Evil()}, path)
    with pytest.raises(ValueError, match="cannot load checkpoint"):
        ckpt_lib.CheckpointManager(path.parent).restore(train.Trainer.create(SMALL, 256), {})
    assert not (tmp_path / "pwned").exists()


def test_same_config_twice_is_bit_identical(tmp_path):
    cfg = SMALL.replace(binarization="dynamic")
    train.train_and_evaluate(cfg, tmp_path / "a", progress=False)
    train.train_and_evaluate(cfg, tmp_path / "b", progress=False)
    pa = torch.load(tmp_path / "a" / "checkpoints" / "step_000000016.pt", weights_only=True)
    pb = torch.load(tmp_path / "b" / "checkpoints" / "step_000000016.pt", weights_only=True)
    for k in pa["model"]:
        assert torch.equal(pa["model"][k], pb["model"][k]), k
    ma = [r for r in runs.read_metrics(tmp_path / "a") if r["type"] != "train"]
    mb = [r for r in runs.read_metrics(tmp_path / "b") if r["type"] != "train"]
    assert ma == mb


KILL_WORKER = textwrap.dedent("""
    import sys
    from torchvae import train
    from vaecommon.config import TrainConfig
    cfg = TrainConfig(model="pytorch_examples", limit_train=256, limit_test=64, batch_size=32,
                      epochs=16, final_nll_samples=0, eval_every=0, keep_checkpoints=2)
    train.train_and_evaluate(cfg, sys.argv[1], progress=False)
""")


def test_sigkill_at_random_moments_never_corrupts_and_resume_is_exact(tmp_path):
    work = tmp_path / "killed"
    env = dict(os.environ, PYTHONPATH=str(REPO))
    rng = np.random.default_rng(1)
    kills = 0
    for attempt in range(3):
        proc = subprocess.Popen([sys.executable, "-c", KILL_WORKER, str(work)], env=env,
                                stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
        ckdir = work / "checkpoints"
        before = set(p.name for p in ckdir.glob("step_*.pt")) if ckdir.exists() else set()
        deadline = time.time() + 120
        delay = rng.uniform(0.0, 0.3)
        while time.time() < deadline and proc.poll() is None:
            if attempt == 1 and ckdir.exists() and any(ckdir.glob(".*.tmp")):
                break  # mid-write
            now = set(p.name for p in ckdir.glob("step_*.pt")) if ckdir.exists() else set()
            if attempt != 1 and len(now - before) >= 1:
                time.sleep(delay)
                break
            time.sleep(0.001)
        if proc.poll() is None:
            proc.send_signal(signal.SIGKILL)
            kills += 1
        proc.wait()
        mgr = ckpt_lib.CheckpointManager(ckdir)
        if mgr.latest_step() is not None:  # what is there must load
            tr = train.Trainer.create(TrainConfig(model="pytorch_examples", limit_train=256,
                                                  batch_size=32, epochs=16), 256)
            mgr.restore(tr, {"eps": torch.Generator(), "binarize": torch.Generator()})
    assert kills >= 2
    r = subprocess.run([sys.executable, "-c", KILL_WORKER, str(work)], env=env,
                       capture_output=True, text=True, timeout=300)
    assert r.returncode == 0, r.stderr[-2000:]
    straight = TrainConfig(model="pytorch_examples", limit_train=256, limit_test=64, batch_size=32,
                           epochs=16, final_nll_samples=0, eval_every=0, keep_checkpoints=2)
    train.train_and_evaluate(straight, tmp_path / "straight", progress=False)
    final = "step_000000128.pt"
    a = torch.load(tmp_path / "straight" / "checkpoints" / final, weights_only=True)
    b = torch.load(work / "checkpoints" / final, weights_only=True)
    for k in a["model"]:
        assert torch.equal(a["model"][k], b["model"][k]), k
    steps = [r["step"] for r in runs.read_metrics(work) if r["type"] == "batch"]
    assert steps == list(range(1, 16 * 8 + 1))
