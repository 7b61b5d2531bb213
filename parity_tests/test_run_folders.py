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


def _flip_a_byte(path: Path) -> None:
    """Flip the bits of one byte in the middle of the file (array data in both formats)."""
    data = bytearray(path.read_bytes())
    data[len(data) // 2] ^= 0xFF
    path.write_bytes(bytes(data))


def _newest_checkpoint_file(run: Path, fw: str) -> Path:
    ck = run / "checkpoints"
    if fw == "torch":
        return sorted(ck.glob("step_*.pt"))[-1]
    newest = max((p for p in ck.iterdir() if p.name.isdigit()), key=lambda p: int(p.name))
    return max((p for p in (newest / "state").rglob("*") if p.is_file()), key=lambda p: p.stat().st_size)


@FWS
def test_a_damaged_checkpoint_is_detected_and_the_resume_falls_back(tmp_path, fw, capsys):
    """Bits flipped in the newest checkpoint: the resume names it, resumes from the older intact
    one, and still ends exactly where an uninterrupted run ends."""
    cfg = CFG.replace(epochs=3, keep_checkpoints=3)
    straight = TRAIN[fw].train_and_evaluate(cfg, tmp_path / "straight", progress=False)
    TRAIN[fw].train_and_evaluate(cfg.replace(epochs=2), tmp_path / "damaged", progress=False)
    _flip_a_byte(_newest_checkpoint_file(tmp_path / "damaged", fw))
    capsys.readouterr()
    resumed = TRAIN[fw].train_and_evaluate(cfg, tmp_path / "damaged", progress=False)
    err = capsys.readouterr().err
    assert "warning:" in err and "checkpoint" in err and ("damaged" in err or "cannot" in err), err
    assert "resuming from the newest intact checkpoint" in err
    assert resumed["loss"] == straight["loss"] and resumed["train"]["loss"] == straight["train"]["loss"]


@FWS
def test_a_full_disk_ends_with_the_path_and_leaves_no_temporary_file(tmp_path, fw, monkeypatch):
    import errno

    if fw == "torch":
        import torch

        def full(obj, f, *a, **k):
            f.write(b"partial")
            raise OSError(errno.ENOSPC, "No space left on device")

        monkeypatch.setattr(torch, "save", full)
    else:
        import orbax.checkpoint as ocp

        def full(self, *a, **k):
            raise OSError(errno.ENOSPC, "No space left on device")

        monkeypatch.setattr(ocp.CheckpointManager, "save", full)
    with pytest.raises(OSError, match=r"cannot write checkpoint .*checkpoints.*No space left"):
        TRAIN[fw].train_and_evaluate(CFG.replace(epochs=1), tmp_path, progress=False)
    leftovers = [p.name for p in (tmp_path / "checkpoints").iterdir()]
    assert leftovers == [], leftovers


@FWS
def test_validation_early_stopping_and_the_best_state_are_what_the_test_record_reports(tmp_path, fw):
    """The VampPrior protocol's trainer options: a validation record per epoch, the test record
    of the best-validation state (its epoch named), early stopping by the reference rule (rebuilt
    from the records), fixed binarization of validation and test, and a rerun that changes
    nothing."""
    cfg = CFG.replace(model="exemplar_vae", epochs=5, batch_size=50, limit_train=400, limit_test=100,
                      validation=100, early_stopping=1, kl_warmup_epochs=2, eval_every=0,
                      eval_binarization="static", lr=3e-3, final_nll_samples=4,
                      objective_params={"kl_estimate": "single_sample"},
                      model_overrides={"prior": "vampprior", "pseudo_inputs": 20})
    out = TRAIN[fw].train_and_evaluate(cfg, tmp_path, progress=False)
    recs = runs.read_metrics(tmp_path)
    val = [r for r in recs if r["type"] == "validation"]
    (test,) = [r for r in recs if r["type"] == "test"]
    assert [r["epoch"] for r in val] == list(range(1, len(val) + 1))
    best = min(val, key=lambda r: r["loss"])
    assert test["best_epoch"] == best["epoch"] == out["best_epoch"]
    stopper = lifecycle.EarlyStopping.from_records(recs, patience=1, warmup_epochs=2)
    assert stopper.stopped == (len(val) < 5) and test["epochs_trained"] == len(val)
    steps = sorted(int(p.name) for p in (tmp_path / "checkpoints" / "best").iterdir()
                   if p.name.isdigit()) if fw == "jax" else \
        [int(p.stem.split("_")[1]) for p in (tmp_path / "checkpoints" / "best").glob("step_*.pt")]
    assert steps == [best["step"]] == [test["step"]]
    assert out["nll"] <= out["loss"] + 1.0  # the k-sample bound is the tighter one
    assert 0 < test["nll_stderr"] < 50  # the error bar of the test mean over 100 images
    before = _files(tmp_path)
    TRAIN[fw].train_and_evaluate(cfg, tmp_path, progress=False)
    assert _files(tmp_path) == before


@FWS
def test_a_run_extended_by_epochs_tests_its_new_best_state(tmp_path, fw):
    """A finished validation run extended with a larger --epochs trains on, and its final test
    record is the new best state's (not the first run's, which stays in the history); the best
    checkpoint on disk is the best validation epoch's, even though it is written lazily."""
    cfg = CFG.replace(model="exemplar_vae", epochs=2, batch_size=50, limit_train=400, limit_test=100,
                      validation=100, early_stopping=50, eval_every=0, eval_binarization="static",
                      lr=3e-3, final_nll_samples=2, checkpoint_every=10,
                      objective_params={"kl_estimate": "single_sample"})
    TRAIN[fw].train_and_evaluate(cfg, tmp_path, progress=False)
    out = TRAIN[fw].train_and_evaluate(cfg.replace(epochs=4), tmp_path, progress=False)
    recs = runs.read_metrics(tmp_path)
    tests = [r for r in recs if r["type"] == "test"]
    val = [r for r in recs if r["type"] == "validation"]
    best = min(val, key=lambda r: r["loss"])
    assert [t["epochs_trained"] for t in tests] == [2, 4]
    assert tests[-1]["best_epoch"] == best["epoch"] == out["best_epoch"]
    assert tests[-1]["step"] == best["step"]


@FWS
def test_posterior_collapse_is_flagged_and_a_healthy_run_is_not(tmp_path, fw, capsys):
    """The collapse diagnostics tracked inside every epoch: beta-VAE with beta = 500 collapses
    every unit within two epochs, and both the progress output and summary.md say so; the same
    run with the plain ELBO keeps its units and is not flagged."""
    base = CFG.replace(epochs=3, limit_train=256, lr=3e-3)
    TRAIN[fw].train_and_evaluate(base.replace(objective="beta_vae", objective_params={"beta": 500.0}),
                                 tmp_path / "collapsed", progress=False)
    err = capsys.readouterr().err
    train = [r for r in runs.read_metrics(tmp_path / "collapsed") if r["type"] == "train"][-1]
    assert train["active_units"] == 0 and len(train["inactive_units"]) == 20
    assert abs(train["mutual_info"]) < 0.05 and len(train["kl_per_dim"]) == 20
    assert "posterior collapse: none of the 20 latent units is active" in err
    assert "posterior collapse" in (tmp_path / "collapsed" / "summary.md").read_text()
    test = [r for r in runs.read_metrics(tmp_path / "collapsed") if r["type"] == "test"][-1]
    assert test["active_units"] == 0 and abs(test["mutual_info"]) < 0.05
    TRAIN[fw].train_and_evaluate(base, tmp_path / "healthy", progress=False)
    train = [r for r in runs.read_metrics(tmp_path / "healthy") if r["type"] == "train"][-1]
    assert train["active_units"] >= 15 and train["mutual_info"] > 0.2
    test = [r for r in runs.read_metrics(tmp_path / "healthy") if r["type"] == "test"][-1]
    assert test["mutual_info"] > 0.2 and "total_correlation" in test
    assert "posterior collapse" not in capsys.readouterr().err
    assert "posterior collapse" not in (tmp_path / "healthy" / "summary.md").read_text()


@FWS
def test_an_explicit_dataset_that_is_not_found_is_one_error_line_and_no_folder(tmp_path, fw):
    """`--dataset mnist` without full MNIST: exit 2, one `error:` line listing where it looked and
    naming --dataset mnist5k, no run folder, nothing else on stderr (no absl or library noise:
    tfds warns about the empty version folder made here). Offline, so no library downloads."""
    data = tmp_path / "data"
    (data / "mnist" / "3.0.1").mkdir(parents=True)
    work = tmp_path / "run"
    code = ("import sys\nfrom vaecommon import datasets\n"
            "datasets.can_reach = lambda url, timeout=3.0: False\n"
            f"datasets.DEFAULT_DATA_DIRS = ({str(tmp_path / 'nowhere')!r},)\n"
            "from vaecommon.commands import train\n"
            f"sys.exit(train.main(['--framework', {fw!r}, '--dataset', 'mnist', '--epochs', '1', "
            f"'--data-dir', {str(data)!r}, '--workdir', {str(work)!r}, '--no-progress']))\n")
    r = subprocess.run([sys.executable, "-c", code], cwd=REPO, capture_output=True, text=True,
                       timeout=300, env=dict(os.environ, PYTHONPATH=str(REPO)))
    assert r.returncode == 2 and not r.stdout, r.stderr[-2000:]
    assert r.stderr.count("\n") == 1, r.stderr
    assert r.stderr.startswith("-c: error: mnist train not found; tried idx: "  # prog: -c
                               f"no train-images-idx3-ubyte[.gz] in {data}, {data}/MNIST/raw, "
                               f"{data}/mnist; library: ")
    assert r.stderr.rstrip().endswith("--dataset mnist5k")
    assert not work.exists()


@FWS
def test_a_checkpoint_that_does_not_fit_the_config_is_one_error_line(tmp_path, fw):
    """config.json edited to another latent size after training: `evaluate` exits 2 with one
    line naming the checkpoint and the shapes, and nothing after it (no library tracebacks from
    the failed read at exit)."""
    TRAIN[fw].train_and_evaluate(CFG.replace(epochs=1), tmp_path, progress=False)
    record = json.loads((tmp_path / "config.json").read_text())
    record["config"]["model_overrides"] = {"latent_dim": 2}
    (tmp_path / "config.json").write_text(json.dumps(record))
    r = subprocess.run([sys.executable, "scripts/evaluate.py", str(tmp_path), "--nll-samples", "0"],
                       cwd=REPO, capture_output=True, text=True, timeout=300,
                       env=dict(os.environ, PYTHONPATH=str(REPO)))
    assert r.returncode == 2 and r.stderr.count("\n") == 1, r.stderr[-3000:]
    assert r.stderr.startswith("evaluate: error: ") and "checkpoint" in r.stderr
    assert "2" in r.stderr and "20" in r.stderr and "shape" in r.stderr  # the two shapes
