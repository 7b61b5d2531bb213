"""Fault injection for the JAX trainer: bad data, NaN losses, corrupt checkpoints, SIGKILL.

Twin: `torchvae/robustness_test.py`.
"""

from __future__ import annotations

import os
import shutil
import signal
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from jaxvae import checkpoint as ckpt_lib
from jaxvae import losses, train
from vaecommon import runs
from vaecommon.config import TrainConfig, resolve
from vaecommon.datasets import DataError

REPO = Path(__file__).resolve().parents[1]
SMALL = TrainConfig(model="pytorch_examples", limit_train=256, limit_test=64, batch_size=32,
                    epochs=2, final_nll_samples=0, eval_batch_size=64)


def _leaves(tree):
    return [np.asarray(x) for x in jax.tree.leaves(tree)]


def _restore(workdir, cfg, model_cfg=None):
    tr = train.Trainer.create(model_cfg or cfg, 256)
    return ckpt_lib.CheckpointManager(Path(workdir) / "checkpoints").restore(
        tr.init_state(jax.random.key(cfg.seed)))


@pytest.mark.parametrize("fault, message", [
    ("nan", "NaN/inf pixel values in 1 images"),
    ("range", r"pixel values span \[0, 255\].*divide 8-bit images by 255"),
    ("shape", r"shape \(14, 14, 1\).*expects \(28, 28, 1\)"),
    ("empty", "the dataset is empty"),
])
def test_bad_training_data_is_refused_with_a_named_problem(tmp_path, monkeypatch, fault, message):
    real = train.load_datasets

    def faulty(cfg):
        tr, te = real(cfg)
        x = np.array(tr.images)
        if fault == "nan":
            x[3, 5, 5, 0] = np.nan
        elif fault == "range":
            x = np.round(x * 255)
        elif fault == "shape":
            x = x[:, ::2, ::2]
        elif fault == "empty":
            x = x[:0]
        return tr._replace(images=jnp.asarray(x)), te

    monkeypatch.setattr(train, "load_datasets", faulty)
    with pytest.raises(DataError, match=message):
        train.train_and_evaluate(SMALL, tmp_path, progress=False)
    assert not (tmp_path / "checkpoints").exists(), "bad data is refused before anything is created"


def test_nonfinite_loss_stops_naming_epoch_and_step_and_keeps_checkpoint(tmp_path, monkeypatch):
    elbo = losses.OBJECTIVES["elbo"]

    def elbo_nan_from_step_11(x, out, *, step, **kw):
        loss, terms = elbo(x, out, step=step, **kw)
        return jnp.where(step >= 10, jnp.nan, loss), terms  # step is 0-based: 11th update

    monkeypatch.setitem(losses.OBJECTIVES, "elbo", elbo_nan_from_step_11)
    with pytest.raises(train.NonFiniteLossError,
                       match=r"epoch 2, step 11;.*checkpoint.*intact.*--lr.*--logvar-clamp.*--grad-clip"):
        train.train_and_evaluate(SMALL, tmp_path, progress=False)
    mgr = ckpt_lib.CheckpointManager(tmp_path / "checkpoints")
    assert mgr.all_steps() == [8], "only the last good epoch's checkpoint exists"
    state, meta = _restore(tmp_path, resolve(SMALL))
    assert int(state.step) == 8 and meta["epoch"] == 1
    assert all(np.all(np.isfinite(v)) for v in _leaves(state.params))
    assert max(r["step"] for r in runs.read_metrics(tmp_path)) == 8


def test_logvar_clamp_bounds_the_posterior_variance():
    tr = train.Trainer.create(SMALL.replace(logvar_clamp=0.5), 256)
    state = tr.init_state(jax.random.key(0))
    model = tr.model_from(state.params, state.rest)
    # blow up the logvar head so exp(logvar) would overflow without the clamp
    bias = state.params["fc22"]["bias"]
    bias[...] = bias[...] + 1e3
    x = jnp.ones((4, 28, 28, 1)) * 0.5
    eps = jnp.ones((4, 20))
    loss, (terms, _) = tr.loss_fn(state.params, state.rest, x, eps, None, 0, tr.hyper)
    assert np.isfinite(loss)
    kl_clamped = 0.5 * (np.exp(0.5) - 0.5 - 1)  # per dim at logvar = +0.5, before the mean term
    assert float(terms["kl"]) >= 20 * kl_clamped - 1e-3
    del model


def test_corrupt_and_foreign_checkpoints_give_clear_errors(tmp_path):
    train.train_and_evaluate(SMALL.replace(epochs=1), tmp_path / "run", progress=False)
    ckdir = tmp_path / "run" / "checkpoints"
    # wrong preset: restore a pytorch_examples checkpoint into simple_vae's structure
    with pytest.raises(ckpt_lib.CheckpointError, match="cannot restore checkpoint step 8"):
        _restore(tmp_path / "run", resolve(SMALL), resolve(SMALL.replace(model="simple_vae")))
    # truncated files: cut every data file of the checkpoint in half
    broken = tmp_path / "broken" / "checkpoints"
    shutil.copytree(ckdir, broken)
    files = [p for p in broken.rglob("*") if p.is_file() and p.stat().st_size > 64
             and "metadata" not in p.name.lower()]
    assert files
    for p in files:
        p.write_bytes(p.read_bytes()[: p.stat().st_size // 2])
    with pytest.raises(ckpt_lib.CheckpointError, match=str(broken)):
        _restore(tmp_path / "broken", resolve(SMALL))
    # a torch checkpoint folder is not a jaxvae checkpoint
    torch_dir = tmp_path / "torchrun" / "checkpoints"
    torch_dir.mkdir(parents=True)
    (torch_dir / "step_000000008.pt").write_bytes(b"PK\x03\x04 not a jax checkpoint")
    with pytest.raises(ckpt_lib.CheckpointError, match="no checkpoint"):
        _restore(tmp_path / "torchrun", resolve(SMALL))


def test_same_config_twice_is_bit_identical(tmp_path):
    cfg = SMALL.replace(binarization="dynamic")
    train.train_and_evaluate(cfg, tmp_path / "a", progress=False)
    train.train_and_evaluate(cfg, tmp_path / "b", progress=False)
    a, _ = _restore(tmp_path / "a", resolve(cfg))
    b, _ = _restore(tmp_path / "b", resolve(cfg))
    for u, v in zip(_leaves((a.params, a.opt_state)), _leaves((b.params, b.opt_state))):
        assert np.array_equal(u, v)
    ma = [r for r in runs.read_metrics(tmp_path / "a") if r["type"] != "train"]
    mb = [r for r in runs.read_metrics(tmp_path / "b") if r["type"] != "train"]
    assert ma == mb  # train records hold wall times; everything else must be equal


KILL_WORKER = textwrap.dedent("""
    import sys
    from jaxvae import train
    from vaecommon.config import TrainConfig
    cfg = TrainConfig(model="pytorch_examples", limit_train=256, limit_test=64, batch_size=32,
                      epochs=40, final_nll_samples=0, eval_every=0, keep_checkpoints=2)
    train.train_and_evaluate(cfg, sys.argv[1], progress=False)
""")


def _ckpt_entries(d: Path):
    return [p.name for p in d.iterdir()] if d.exists() else []


def test_sigkill_at_random_moments_never_corrupts_and_resume_is_exact(tmp_path):
    """SIGKILL a real training process three times (once while a checkpoint is being written),
    resume each time, and end bit-identical to an uninterrupted run."""
    work = tmp_path / "killed"
    env = dict(os.environ, PYTHONPATH=str(REPO))
    rng = np.random.default_rng(0)
    kills = 0
    mid_write = False
    for attempt in range(3):
        proc = subprocess.Popen([sys.executable, "-c", KILL_WORKER, str(work)], env=env,
                                stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
        ckdir = work / "checkpoints"
        start_steps = set(_ckpt_entries(ckdir))
        deadline = time.time() + 120
        target_tmp = attempt == 1  # the second kill aims at a checkpoint write in progress
        delay = rng.uniform(0.05, 0.6)
        while time.time() < deadline and proc.poll() is None:
            names = _ckpt_entries(ckdir)
            if target_tmp and any("tmp" in n for n in names):
                mid_write = True
                break
            if not target_tmp and len(set(names) - start_steps - {n for n in names if "tmp" in n}) >= 2:
                time.sleep(delay)
                break
            time.sleep(0.002)
        if proc.poll() is None:
            proc.send_signal(signal.SIGKILL)
            kills += 1
        proc.wait()
        # the previous checkpoints must still load after every kill
        mgr = ckpt_lib.CheckpointManager(ckdir)
        assert mgr.latest_step() is not None
    assert kills >= 2, "the training process finished before it could be killed"
    r = subprocess.run([sys.executable, "-c", KILL_WORKER, str(work)], env=env,
                       capture_output=True, text=True, timeout=300)
    assert r.returncode == 0, r.stderr[-2000:]
    straight = TrainConfig(model="pytorch_examples", limit_train=256, limit_test=64, batch_size=32,
                           epochs=40, final_nll_samples=0, eval_every=0, keep_checkpoints=2)
    train.train_and_evaluate(straight, tmp_path / "straight", progress=False)
    a, _ = _restore(tmp_path / "straight", resolve(straight))
    b, _ = _restore(work, resolve(straight))
    assert int(a.step) == int(b.step) == 40 * 8
    for u, v in zip(_leaves((a.params, a.opt_state)), _leaves((b.params, b.opt_state))):
        assert np.array_equal(u, v), "resume after SIGKILL must be bit-identical"
    steps = [r["step"] for r in runs.read_metrics(work) if r["type"] == "batch"]
    assert steps == list(range(1, 40 * 8 + 1)), "metrics must hold each step exactly once"
    print(f"kills={kills} mid_write={mid_write}")
