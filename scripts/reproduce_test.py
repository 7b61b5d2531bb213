"""scripts/reproduce.py end to end on the embedded data (one short run per framework)."""

from __future__ import annotations

import shlex

from vaecommon.commands import reproduce


def test_reproduce_writes_the_table_and_reuses_finished_runs(tmp_path, capsys):
    argv = ["--dataset", "mnist5k", "--presets", "pytorch_examples", "--seeds", "0",
            "--epochs", "1", "--nll-samples", "4", "--nll-limit", "20", "--out", str(tmp_path),
            "--no-progress"]
    assert reproduce.main(argv) == 0
    table = (tmp_path / "mnist5k" / "results.md").read_text()
    assert "| pytorch_examples | 1 | jax |" in table and "| pytorch_examples | 1 | torch |" in table
    assert "k=4 on the first 20 test examples" in table
    run = tmp_path / "mnist5k" / "pytorch_examples-jax-defaultinit-s0"
    mtime = (run / "metrics.jsonl").stat().st_mtime
    assert reproduce.main(argv) == 0  # the finished run is reused, not retrained
    assert (run / "metrics.jsonl").stat().st_mtime == mtime
    assert capsys.readouterr().out.count("pytorch_examples") >= 4

    # --collect: one table of every finished run, each row with the command that regenerates it
    assert reproduce.main(["--collect", "--out", str(tmp_path)]) == 0
    rows = [line for line in capsys.readouterr().out.splitlines() if line.startswith("| mnist5k")]
    assert len(rows) == 2 and "| jax (default) | 1 |" in rows[0] and "| torch (default) | 1 |" in rows[1]
    command = rows[0].split("`")[1]
    words = shlex.split(command)
    assert words[:2] == ["python", "scripts/reproduce.py"]
    again = reproduce.build_parser().parse_args(words[2:])
    assert (again.dataset, again.presets, again.frameworks, again.seeds, again.epochs,
            again.nll_samples, again.nll_limit, again.init) == \
        ("mnist5k", ["pytorch_examples"], ["jax"], [0], 1, 4, 20, "default")


def test_collect_without_finished_runs_says_so(tmp_path):
    import pytest

    (tmp_path / "mnist5k" / "pytorch_examples-jax-defaultinit-s0").mkdir(parents=True)  # no metrics
    with pytest.raises(SystemExit, match="no finished runs under"):
        reproduce.main(["--collect", "--out", str(tmp_path)])


def test_a_run_stopped_by_a_signal_stops_the_reproduction(tmp_path, monkeypatch):
    """train_and_evaluate returns early (no final NLL) after SIGINT/SIGTERM: reproduce must stop
    there and say how to resume, not start the next seed."""
    import pytest

    from jaxvae import train

    calls = []

    def stopped(cfg, workdir, *, resume, progress):
        calls.append((cfg.seed, resume))
        return {"train": {}, "wall_s": 1.0}

    monkeypatch.setattr(train, "train_and_evaluate", stopped)
    argv = ["--dataset", "mnist5k", "--presets", "pytorch_examples", "--frameworks", "jax",
            "--seeds", "0", "1", "--out", str(tmp_path), "--no-progress"]
    with pytest.raises(SystemExit, match="stopped before its last epoch.*again to resume"):
        reproduce.main(argv)
    assert calls == [(0, True)]  # resumes an interrupted run; seed 1 never started


def test_the_same_command_runs_on_full_mnist_from_an_idx_folder(tmp_path):
    """`--dataset mnist --data-dir DIR` (where full MNIST is reachable) trains both frameworks from
    the IDX files in DIR; here a 300/50-example MNIST-format folder stands in for the real one."""
    import json

    import numpy as np

    from vaecommon.datasets_test import write_idx

    rng = np.random.default_rng(0)
    idx = tmp_path / "mnist"
    idx.mkdir()
    for prefix, n in (("train", 300), ("t10k", 50)):
        write_idx(idx / f"{prefix}-images-idx3-ubyte.gz", rng.integers(0, 256, (n, 28, 28)), gz=True)
        write_idx(idx / f"{prefix}-labels-idx1-ubyte.gz", rng.integers(0, 10, (n,)), gz=True)
    argv = ["--dataset", "mnist", "--data-dir", str(idx), "--presets", "pytorch_examples",
            "--seeds", "0", "--epochs", "1", "--nll-samples", "4", "--nll-limit", "10",
            "--out", str(tmp_path / "out"), "--no-progress"]
    assert reproduce.main(argv) == 0
    table = (tmp_path / "out" / "mnist" / "results.md").read_text()
    assert "| pytorch_examples | 1 | jax |" in table and "| pytorch_examples | 1 | torch |" in table
    for fw in ("jax", "torch"):
        record = json.loads((tmp_path / "out" / "mnist" / f"pytorch_examples-{fw}-defaultinit-s0"
                             / "config.json").read_text())
        assert record["data"]["train"]["n"] == 300 and record["data"]["test"]["n"] == 50
        assert record["data"]["train"]["source"] == "idx"
        assert record["data"]["train"]["path"] == str(idx / "train-images-idx3-ubyte.gz")
    collected = reproduce.collect(tmp_path / "out")
    assert "--dataset mnist --presets pytorch_examples --frameworks torch --seeds 0 --epochs 1" in collected
    assert "--data-dir DIR" in collected
    # BCE on grey pixels: the NLL column says it is no likelihood
    assert "\u2020 (k=4, 10)" in collected and \
        "\u2020 not a normalised likelihood (grey pixels under a Bernoulli decoder)" in collected
