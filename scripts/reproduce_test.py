"""scripts/reproduce.py end to end on the embedded data (one short run per framework)."""

from __future__ import annotations

from scripts import reproduce


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
