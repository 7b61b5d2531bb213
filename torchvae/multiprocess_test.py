"""Multi-process data parallel in torch (`torchvae.multiprocess`) on one machine: 2 CPU processes
talking through torch.distributed's gloo backend on a localhost port, against 1 process with the
same global batch; then a stop and two kills across processes. Twin: `jaxvae/multiprocess_test.py`.

Every run goes through the real command (`scripts/train.py`'s `main`) in its own interpreters:
one 2-process run is started with the command's flags, the others with the environment torchrun
sets (RANK, WORLD_SIZE, MASTER_ADDR, MASTER_PORT). Figures are switched off in the workers.
"""

from __future__ import annotations

import os
import signal
import sys
import textwrap
import time
from pathlib import Path

import numpy as np
import pytest
import torch

from torchvae import checkpoint as ckpt_lib
from vaecommon import launch, runs

REPO = Path(__file__).resolve().parents[1]
STEPS_PER_EPOCH, EPOCHS = 8, 4  # 256 examples / batch 32; 32 optimizer steps in all
ARGS = ["--framework", "torch", "--model", "pytorch_examples", "--dataset", "mnist5k",
        "--limit-train", "256", "--limit-test", "64", "--batch-size", "32", "--epochs",
        str(EPOCHS), "--optimizer", "sgd", "--lr", "0.01", "--eval-every", "0",
        "--final-nll-samples", "0", "--eval-batch-size", "64", "--no-progress"]
PHASE_SECONDS = 300  # each phase's bound; a loaded 2-core machine takes ~20 s per run

# The worker: the train command, with an on_epoch hook that follows MP_TEST_PLAN
# ("term1=1": process 1 sends itself SIGTERM after epoch 1; "hold=3": after epoch 3 (its
# checkpoint is on disk) each process writes its PID to MARKERS/<process> and waits to be
# killed; "dump=DIR": after the last epoch each process saves its parameters to DIR/<process>.pt).
WORKER = textwrap.dedent("""
    import os, signal, sys, time
    from pathlib import Path
    import torch
    import torch.distributed as dist
    import torchvae.figure_data as figures
    import torchvae.train as train
    figures.write_run_figures = lambda *a, **k: None
    plan = dict(p.split("=", 1) for p in os.environ.get("MP_TEST_PLAN", "").split(",") if p)
    def on_epoch(epoch, trainer):
        me = dist.get_rank() if dist.is_initialized() else 0
        if plan.get(f"term{me}") == str(epoch):
            os.kill(os.getpid(), signal.SIGTERM)
        if plan.get("hold") == str(epoch):
            Path(plan["markers"], str(me)).write_text(str(os.getpid()))
            time.sleep(600)
        if "dump" in plan and epoch == trainer.cfg.epochs:
            torch.save(trainer.model.state_dict(), Path(plan["dump"], f"{me}.pt"))
    run = train.train_and_evaluate
    train.train_and_evaluate = lambda *a, **k: run(*a, **{**k, "on_epoch": on_epoch})
    from vaecommon.commands.train import main
    code = main(sys.argv[1:])
    if dist.is_initialized():  # left to exit, gloo sometimes aborted the process (SIGABRT)
        sys.exit("the command left the process group open")
    sys.exit(code)
""")


class _Runs(launch.ProcessGroups):
    """The test's worker processes, each ended by its PID when the test ends."""

    def start(self, name: str, workdir: Path, processes: int, plan: str = "",
              torchrun_env: bool = True) -> list:
        env = dict(os.environ, PYTHONPATH=str(REPO), MP_TEST_PLAN=plan, OMP_NUM_THREADS="1")
        port = launch.free_port()

        def argv(i: int) -> list[str]:
            dist = (["--coordinator-address", f"localhost:{port}", "--num-processes",
                     str(processes), "--process-id", str(i)]
                    if processes > 1 and not torchrun_env else [])
            return [sys.executable, "-c", WORKER, *ARGS, "--workdir", str(workdir), *dist]

        def env_for(i: int) -> dict[str, str]:  # what torchrun sets for each process
            return (dict(RANK=str(i), LOCAL_RANK=str(i), WORLD_SIZE=str(processes),
                         MASTER_ADDR="localhost", MASTER_PORT=str(port))
                    if processes > 1 and torchrun_env else {})

        return self.spawn(name, processes, argv, env, env_for, cwd=REPO)


def _collectives_failed(runs_: _Runs, name: str, codes: list[int]) -> str:
    return (f"{name} exited {codes}: a 2-process CPU run needs torch.distributed with the gloo "
            "backend on a localhost port; the processes' output ends with:\n" + runs_.log(name))


def _params(path: Path) -> dict[str, np.ndarray]:
    state = torch.load(path, weights_only=True, map_location="cpu")
    return {k: v.numpy() for k, v in state.get("model", state).items()}


def _state(workdir: Path) -> dict[str, np.ndarray]:
    step = ckpt_lib.checkpoint_steps(workdir / "checkpoints")[-1]
    return _params(workdir / "checkpoints" / f"step_{step:09d}.pt")


def _batch_losses(workdir: Path) -> tuple[list[int], np.ndarray]:
    recs = [r for r in runs.read_metrics(workdir) if r["type"] == "batch"]
    return [r["step"] for r in recs], np.array([r["loss"] for r in recs])


def test_two_processes_match_one_and_resume_exactly_after_stop_and_kill(tmp_path):
    """Per-step losses and parameters of 2 processes match 1 process on the same global batches;
    both processes hold identical parameters; a SIGTERM to process 1 stops both after the same
    epoch with a checkpoint; SIGKILLs of both after a later checkpoint; the resumed run then
    ends bit-identical to an uninterrupted 2-process run."""
    if not (torch.distributed.is_available() and torch.distributed.is_gloo_available()):
        pytest.fail("this torch build lacks torch.distributed's gloo backend, which "
                    "multi-process CPU training needs")
    runs_ = _Runs(tmp_path / "logs")
    one, two, stopped = tmp_path / "one", tmp_path / "two", tmp_path / "stopped"
    markers, dumps = tmp_path / "markers", tmp_path / "dumps"
    markers.mkdir()
    dumps.mkdir()
    try:
        # phase 1, concurrently: the 1-process reference, the straight 2-process run (the
        # command's flags), and a 2-process run (torchrun's environment) whose process 1 alone
        # gets SIGTERM after epoch 1
        ref = runs_.start("one", one, 1)
        straight = runs_.start("two", two, 2, plan=f"dump={dumps}", torchrun_env=False)
        term = runs_.start("stopped", stopped, 2, plan="term1=1")
        deadline = time.time() + PHASE_SECONDS
        codes = runs_.wait("two", straight, deadline)
        assert codes == [0, 0], _collectives_failed(runs_, "two", codes)
        assert runs_.wait("one", ref, deadline) == [0], runs_.log("one", 0)
        codes = runs_.wait("stopped", term, deadline)
        # both stop after epoch 2 (the next agreement), both with SIGTERM's exit status
        assert codes == [128 + signal.SIGTERM] * 2, (codes, runs_.log("stopped"))
        assert ckpt_lib.checkpoint_steps(stopped / "checkpoints")[-1] == 2 * STEPS_PER_EPOCH

        # the same global batches and noise: the losses differ only by the reduction order of
        # the batch mean (two all-reduced half-batch means instead of one mean of 64) and of
        # the gradients' batch sums (two half-batch matmuls, all-reduced): 1.1e-7 relative at
        # step 1 (same parameters), at most 1.4e-7 over the 32 steps, 15 of them bit-equal
        # (measured; ~2 float32 ulps of losses ~210-550), hence 1e-6
        steps1, loss1 = _batch_losses(one)
        steps2, loss2 = _batch_losses(two)
        assert steps1 == steps2 == list(range(1, EPOCHS * STEPS_PER_EPOCH + 1))
        np.testing.assert_allclose(loss2, loss1, rtol=1e-6, atol=0)
        # SGD: parameters move by lr * g, so the reduction-order noise stays at float32 rounding
        # (measured: at most 6.0e-8 absolute after 32 steps)
        p1, p2 = _state(one), _state(two)
        assert p1.keys() == p2.keys()
        for k in p1:
            np.testing.assert_allclose(p2[k], p1[k], rtol=1e-5, atol=1e-7, err_msg=k)
        # the all-reduce gives every process the same gradient: the replicas never drift
        r0, r1 = _params(dumps / "0.pt"), _params(dumps / "1.pt")
        assert all(np.array_equal(r0[k], r1[k]) and np.array_equal(r0[k], p2[k]) for k in r0)

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
    p3 = _state(stopped)
    for k in p2:
        assert np.array_equal(p2[k], p3[k]), f"{k}: after a stop and a kill, resume must be bit-identical"
    assert (stopped / "summary.md").exists()


def test_multi_process_settings_are_checked(monkeypatch, capsys):
    """One error line, exit 2, before anything starts (no process group, no run folder)."""
    from vaecommon.commands.train import main

    for k in launch.LAUNCHER_ENV:
        monkeypatch.delenv(k, raising=False)
    monkeypatch.setenv("JAXVAE_NUM_PROCESSES", "2")
    cases = [(["--process-id", "0"], "needs --coordinator-address (or MASTER_ADDR/MASTER_PORT)"),
             (["--process-id", "0", "--coordinator-address", "nohostport"],
              "--coordinator-address 'nohostport': expected HOST:PORT"),
             (["--process-id", "2"], "--num-processes 2 --process-id 2: the id must be in 0..N-1")]
    for argv, message in cases:
        with pytest.raises(SystemExit) as e:
            main(["--framework", "torch", *argv, "--workdir", "never-created"])
        assert e.value.code == 2
        err = capsys.readouterr().err.strip()
        assert err.count("\n") == 0 and message in err, err
    assert not Path("never-created").exists()
