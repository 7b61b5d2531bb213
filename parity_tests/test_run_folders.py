"""Run folders you can trust, in both frameworks: one owner, clean stops, idempotent finishing.

Real processes where the behaviour is about processes (the lock, a kill after the last
checkpoint, SIGINT's exit status).
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from jaxvae import train as jtrain
from torchvae import train as ttrain
from vaecommon import lifecycle, runs
from vaecommon.config import TrainConfig

pytestmark = pytest.mark.integration  # training runs and real processes (tiers: jaxvae/conftest.py)

REPO = Path(__file__).resolve().parents[1]
TRAIN = {"jax": jtrain, "torch": ttrain}
CFG = TrainConfig(model="pytorch_examples", batch_size=32, epochs=2, limit_train=128, limit_test=64,
                  final_nll_samples=0)
FWS = pytest.mark.parametrize("fw", ["jax", "torch"])


def _files(root: Path) -> dict[str, float]:
    """Every file's modification time (the lock file, which each trainer takes, aside)."""
    return {str(p.relative_to(root)): p.stat().st_mtime_ns for p in sorted(root.rglob("*"))
            if p.is_file() and p.name != ".lock"}


def _script(args: list[str], **kw) -> subprocess.Popen:
    env = dict(os.environ, PYTHONPATH=str(REPO), OMP_NUM_THREADS="1")
    return subprocess.Popen([sys.executable, str(REPO / "scripts" / "train.py"), *args], env=env,
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, **kw)


@FWS
def test_rerunning_a_finished_run_changes_nothing(tmp_path, fw):
    first = TRAIN[fw].train_and_evaluate(CFG, tmp_path, progress=False)
    before = _files(tmp_path)
    again = TRAIN[fw].train_and_evaluate(CFG, tmp_path, progress=False)
    assert _files(tmp_path) == before, "a rerun must not rewrite summary, metrics or figures"
    assert again["loss"] == first["loss"] and again["train"]["loss"] == first["train"]["loss"]


@FWS
def test_a_run_killed_after_its_last_checkpoint_is_finished_by_the_rerun(tmp_path, fw):
    code = (f"import os, sys\nsys.path.insert(0, {str(REPO)!r})\n"
            "from vaecommon import lifecycle\n"
            "lifecycle.finish = lambda *a, **k: os._exit(9)  # die after the final checkpoint\n"
            f"from {'jaxvae' if fw == 'jax' else 'torchvae'} import train\n"
            "from vaecommon.config import TrainConfig\n"
            f"train.train_and_evaluate(TrainConfig(**{CFG.__dict__!r}), {str(tmp_path)!r}, "
            "progress=False)\n")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=600)
    assert out.returncode == 9, out.stderr[-2000:]
    run = runs.RunFolder(tmp_path)
    assert not run.summary_path.exists()
    for p in run.figures.glob("*.png"):
        p.unlink()  # as if the kill came before the figures too
    TRAIN[fw].train_and_evaluate(CFG, tmp_path, progress=False)
    assert "test -ELBO" in run.summary_path.read_text()
    assert (run.figures / "reconstructions.png").exists()
    assert max(r["step"] for r in run.metrics()) == 8


@FWS
def test_a_folder_of_the_other_framework_or_preset_is_refused_untouched(tmp_path, fw):
    other = "torch" if fw == "jax" else "jax"
    TRAIN[other].train_and_evaluate(CFG.replace(epochs=1), tmp_path, progress=False)
    before = _files(tmp_path)
    with pytest.raises(lifecycle.RunOwnershipError, match=f"holds a {other} run of preset 'pytorch_examples'"):
        TRAIN[fw].train_and_evaluate(CFG, tmp_path, progress=False)
    with pytest.raises(lifecycle.RunOwnershipError, match="'simple_vae': use another --workdir"):
        TRAIN[other].train_and_evaluate(CFG.replace(model="simple_vae"), tmp_path, progress=False)
    assert _files(tmp_path) == before


@FWS
def test_no_resume_moves_the_old_run_aside(tmp_path, fw):
    work = tmp_path / "run"
    TRAIN[fw].train_and_evaluate(CFG, work, progress=False)
    old = _files(work)
    TRAIN[fw].train_and_evaluate(CFG.replace(epochs=1, lr=0.01), work, resume=False, progress=False)
    (aside,) = tmp_path.glob("run.replaced-*")
    assert _files(aside) == old, "the old run is kept whole"
    recs = runs.read_metrics(work)
    assert max(r["step"] for r in recs) == 4, "nothing of the old run is visible"
    assert json.loads((work / "config.json").read_text())["config"]["lr"] == 0.01


def test_a_second_trainer_is_refused_naming_the_holder(tmp_path):
    args = ["--model", "pytorch_examples", "--epochs", "200", "--limit-train", "128", "--limit-test",
            "64", "--batch-size", "32", "--final-nll-samples", "0", "--no-progress", "--workdir",
            str(tmp_path)]
    first = _script(args)
    try:
        deadline = time.time() + 300
        while not (tmp_path / "metrics.jsonl").exists():
            assert first.poll() is None, first.stderr.read()[-2000:]
            assert time.time() < deadline
            time.sleep(0.5)
        second = _script(args)
        out, err = second.communicate(timeout=300)
        assert second.returncode == 2
        lines = [line for line in err.splitlines() if line.strip()]
        assert len(lines) == 1 and f"PID {first.pid}" in lines[0], err
        first.send_signal(signal.SIGINT)
        _, err = first.communicate(timeout=300)
        assert first.returncode == 130, err[-2000:]
        assert "stopped after epoch" in err
    finally:
        if first.poll() is None:
            first.kill()
