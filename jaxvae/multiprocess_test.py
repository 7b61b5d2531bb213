"""Multi-process data parallel (`jaxvae.multiprocess`) on one machine: 2 CPU processes with one
device each, talking through JAX's coordinator on a localhost port and gloo CPU collectives,
against 1 process with the same global batch; then a stop and two kills across processes.

Every run goes through the real command (`scripts/train.py`'s `main`) in its own interpreters.
Figures are switched off in the workers (they are process 0's business and cost seconds here).
"""

from __future__ import annotations

import json
import os
import signal
import sys
import textwrap
import time
from pathlib import Path

import jax
import numpy as np

from jaxvae import checkpoint as ckpt_lib
from jaxvae import train
from vaecommon import launch, runs
from vaecommon.config import TrainConfig, resolve

REPO = Path(__file__).resolve().parents[1]
STEPS_PER_EPOCH, EPOCHS = 8, 4  # 256 examples / batch 32; 32 optimizer steps in all
ARGS = ["--model", "pytorch_examples", "--dataset", "mnist5k", "--limit-train", "256",
        "--limit-test", "64", "--batch-size", "32", "--epochs", str(EPOCHS), "--optimizer", "sgd",
        "--lr", "0.01", "--eval-every", "0", "--final-nll-samples", "0", "--eval-batch-size", "64",
        "--no-progress"]
CFG = resolve(TrainConfig(model="pytorch_examples", dataset="mnist5k", limit_train=256,
                          batch_size=32, epochs=EPOCHS, optimizer="sgd", lr=0.01))
PHASE_SECONDS = 420  # each phase's bound; a loaded 2-core machine compiles a run in ~40 s

# The worker: the train command, with an on_epoch hook that follows MP_TEST_PLAN
# ("term1=1": process 1 sends itself SIGTERM after epoch 1; "hold=3": after epoch 3 (its
# checkpoint is on disk) each process writes its PID to MARKERS/<process> and waits to be killed).
WORKER = textwrap.dedent("""
    import os, signal, sys, time
    from pathlib import Path
    import jax
    import jaxvae.figure_data as figures
    import jaxvae.train as train
    figures.write_run_figures = lambda *a, **k: None
    plan = dict(p.split("=", 1) for p in os.environ.get("MP_TEST_PLAN", "").split(",") if p)
    def on_epoch(epoch, state):
        me = jax.process_index()
        if plan.get(f"term{me}") == str(epoch):
            os.kill(os.getpid(), signal.SIGTERM)
        if plan.get("hold") == str(epoch):
            Path(plan["markers"], str(me)).write_text(str(os.getpid()))
            time.sleep(600)
    run = train.train_and_evaluate
    train.train_and_evaluate = lambda *a, **k: run(*a, **{**k, "on_epoch": on_epoch})
    from vaecommon.commands.train import main
    sys.exit(main(sys.argv[1:]))
""")


class _Runs(launch.ProcessGroups):
    """The test's worker processes, each ended by its PID when the test ends."""

    def start(self, name: str, workdir: Path, processes: int, plan: str = "") -> list:
        env = dict(os.environ, PYTHONPATH=str(REPO), JAX_PLATFORMS="cpu", MP_TEST_PLAN=plan,
                   XLA_FLAGS="--xla_force_host_platform_device_count=1")
        port = launch.free_port()

        def argv(i: int) -> list[str]:
            dist = ([] if processes == 1 else ["--coordinator-address", f"localhost:{port}",
                                               "--num-processes", str(processes),
                                               "--process-id", str(i)])
            return [sys.executable, "-c", WORKER, *ARGS, "--workdir", str(workdir), *dist]

        return self.spawn(name, processes, argv, env, cwd=REPO)


def _collectives_failed(runs_: _Runs, name: str, codes: list[int]) -> str:
    return (f"{name} exited {codes}: a 2-process CPU run needs jax.distributed on a localhost "
            "port and the gloo CPU collectives (jax_cpu_collectives_implementation='gloo'); "
            "the processes' output ends with:\n" + runs_.log(name))


def _state(workdir: Path, step: int | None = None):
    tr = train.Trainer.create(CFG, 256)
    mgr = ckpt_lib.CheckpointManager(workdir / "checkpoints", read_only=True)
    state, _ = mgr.restore(tr.init_state(jax.random.key(CFG.seed)), step)
    return [np.asarray(x) for x in jax.tree.leaves((state.params, state.opt_state, state.step))]


def _batch_losses(workdir: Path) -> tuple[list[int], np.ndarray]:
    recs = [r for r in runs.read_metrics(workdir) if r["type"] == "batch"]
    return [r["step"] for r in recs], np.array([r["loss"] for r in recs])


def test_two_processes_match_one_and_resume_exactly_after_stop_and_kill(tmp_path):
    """Per-step losses and parameters of 2 processes (1 CPU device each) match 1 process on the
    same global batches; a SIGTERM to process 1 stops both after the same epoch with a
    checkpoint; SIGKILLs of both after a later checkpoint; the resumed run then ends
    bit-identical to an uninterrupted 2-process run."""
    runs_ = _Runs(tmp_path / "logs")
    one, two, stopped = tmp_path / "one", tmp_path / "two", tmp_path / "stopped"
    markers = tmp_path / "markers"
    markers.mkdir()
    try:
        # phase 1, concurrently: the 1-process reference, the straight 2-process run, and a
        # 2-process run whose process 1 alone gets SIGTERM after epoch 1
        ref = runs_.start("one", one, 1)
        straight = runs_.start("two", two, 2)
        term = runs_.start("stopped", stopped, 2, plan="term1=1")
        deadline = time.time() + PHASE_SECONDS
        codes = runs_.wait("two", straight, deadline)
        assert codes == [0, 0], _collectives_failed(runs_, "two", codes)
        assert runs_.wait("one", ref, deadline) == [0], runs_.log("one", 0)
        codes = runs_.wait("stopped", term, deadline)
        # both stop after epoch 2 (the next agreement), both with SIGTERM's exit status
        assert codes == [128 + signal.SIGTERM] * 2, (codes, runs_.log("stopped"))
        assert ckpt_lib.checkpoint_steps(stopped / "checkpoints")[-1] == 2 * STEPS_PER_EPOCH

        # the same global batches: the losses differ only by the reduction order of the batch
        # mean (two all-reduced half-batch sums instead of one sum): 1.0e-7 relative at step 1
        # (same parameters), at most 7.5e-7 over the 32 steps (measured; 0 to ~6 float32 ulps
        # of losses ~200-600), hence 2e-6
        steps1, loss1 = _batch_losses(one)
        steps2, loss2 = _batch_losses(two)
        assert steps1 == steps2 == list(range(1, EPOCHS * STEPS_PER_EPOCH + 1))
        np.testing.assert_allclose(loss2, loss1, rtol=2e-6, atol=0)
        # SGD: parameters move by lr * g, so the reduction-order noise stays at float32 rounding
        # (measured: at most 1.8e-7 absolute); Adam's first steps, ~lr * sign(g), would amplify
        # it where g ~ 0 (measured 1.6e-4 absolute after 24 Adam steps)
        for u, v in zip(_state(one), _state(two)):
            np.testing.assert_allclose(v, u, rtol=1e-5, atol=1e-7)
        record = json.loads((two / "config.json").read_text())
        assert len(record["devices"]) == 2, record["devices"]

        # phase 2: resume the stopped run and SIGKILL both processes (by PID) once epoch 3's
        # checkpoint is written; then phase 3: resume to the end
        held = runs_.start("held", stopped, 2, plan=f"hold=3,markers={markers}")
        deadline = time.time() + PHASE_SECONDS
        while len(list(markers.iterdir())) < 2 and time.time() < deadline:
            assert all(p.poll() is None for p in held), runs_.log("held", 0)
            time.sleep(0.2)
        assert len(list(markers.iterdir())) == 2, "the resumed run never reached epoch 3"
        runs_.kill(held)
        assert [p.returncode for p in held] == [-signal.SIGKILL] * 2
        assert ckpt_lib.checkpoint_steps(stopped / "checkpoints")[-1] == 3 * STEPS_PER_EPOCH
        last = runs_.start("resumed", stopped, 2)
        codes = runs_.wait("resumed", last, time.time() + PHASE_SECONDS)
        assert codes == [0, 0], (codes, runs_.log("resumed"))
        assert "resumed" in runs_.log("resumed", 0)
    finally:
        runs_.kill(runs_.procs)

    steps3, loss3 = _batch_losses(stopped)
    assert steps3 == steps2, "the metrics must hold each step exactly once"
    assert np.array_equal(loss3, loss2), "the resumed losses must equal the straight run's"
    for u, v in zip(_state(two), _state(stopped)):
        assert np.array_equal(u, v), "after a stop and a kill, resume must be bit-identical"
    assert (stopped / "summary.md").exists()


def test_multi_process_flags_are_checked(monkeypatch, capsys):
    """One error line, exit 2, before anything starts (no JAX runtime, no run folder)."""
    from vaecommon.commands.train import main

    monkeypatch.setenv("JAXVAE_NUM_PROCESSES", "2")
    cases = [(["--process-id", "2"], "--num-processes 2 --process-id 2: the id must be in 0..N-1")]
    for argv, message in cases:
        try:
            main(argv + ["--workdir", "never-created"])
        except SystemExit as e:
            assert e.code == 2
        err = capsys.readouterr().err.strip()
        assert err.count("\n") == 0 and message in err, err
    monkeypatch.setenv("JAXVAE_NUM_PROCESSES", "two")
    try:
        main([])
    except SystemExit as e:
        assert e.code == 2
    assert "JAXVAE_NUM_PROCESSES='two': expected an integer" in capsys.readouterr().err
    assert not Path("never-created").exists()
