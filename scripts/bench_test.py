"""Tests of scripts/bench.py's table: ratios are computed pairwise from the run's own numbers."""

from __future__ import annotations

from vaecommon.commands import bench


def _row(epoch_s, **kw):
    return {"epoch_s": epoch_s, "examples_per_s": 1000 / epoch_s, "peak_rss_mib": 100.0, **kw}


def test_markdown_ratios_and_flop_bound():
    res = {
        "machine": "test box", "quick": False, "batch": 100, "peak_gflops": 100.0,
        "stream_gbps": 28.0, "adam_bytes_per_param": 28,
        "rows": [{"preset": "pytorch_examples",
                  "jax": _row(2.0, compile_s=1.5, steps=10, matmul_flops_per_example=1e8,
                              params=1e8),
                  "torch": _row(5.0), "torch_minimal": _row(4.0),
                  "torch_dataloader": {"error": "killed after the 10 s limit"}}],
        "sweep": [{"members": 1, "epoch_s": 2.0, "compile_s": 1.0},
                  {"members": 8, "epoch_s": 6.0, "compile_s": 2.0}],
        "devices": [{"devices": 1, "epoch_s": 2.0}, {"devices": 2, "epoch_s": 3.0}],
        "profile": {"preset": "pytorch_examples", "data": "d", "epoch_s": 2.0, "op_s": 1.6,
                    "categories": {"matmul (forward + backward)": 1.2, "batch gather": 0.4,
                                   "RNG (noise, binarization)": 0.0},
                    "top": [("dot.1", "matmul (forward + backward)", 0.6, 10, "linear.py:Linear.__call__")]},
    }
    md = bench.markdown(res)
    # FLOP bound: 1e8 FLOP/example * 10 steps * 100 examples / 100 GFLOP/s = 1.0 s
    # Adam floor: 1e8 params * 28 bytes * 10 steps / 28 GB/s = 1.0 s; both bounds: 2.0 s
    assert "| pytorch_examples | jaxvae (scan epoch) | 2.00 | 500 | 1.00x | 1.5 | 100 | 1.00 | 2.00 | 1.00 | 1.00 |" in md
    assert "| pytorch_examples | torchvae reference (pre-loaded tensor) | 5.00 | 200 | 2.50x | - | 100 | 1.00 | 5.00 | 1.00 | 2.50 |" in md
    assert "elementwise memory rate 28.0 GB/s" in md
    assert "| pytorch_examples | bare notebook loop (pre-loaded tensor) | 4.00 | 250 | 2.00x |" in md
    assert "killed after the 10 s limit" in md
    assert "| 8 | 6.00 | 3.00 | 2.0 |" in md  # sweep: x one member
    assert "| 2 | 3.00 | 1.50 |" in md  # devices
    assert "| matmul (forward + backward) | 1.200 | 75% |" in md
    assert "| batch gather | 0.400 | 25% |" in md
    assert "RNG" not in md.split("where the time goes")[1].split("top instructions")[0]  # 0 s rows dropped
    assert "| dot.1 | matmul (forward + backward) | 0.600 | 10 | linear.py:Linear.__call__ |" in md


def test_markdown_without_a_measured_memory_rate_leaves_the_adam_columns_empty():
    """bench.json files written before the Adam floor existed still render."""
    res = {"machine": "m", "quick": True, "batch": 100, "peak_gflops": 100.0,
           "rows": [{"preset": "conv_vae", "jax": _row(2.0, compile_s=1.0, steps=10, xla_flops_per_step=1e10)}],
           "sweep": [], "devices": [], "profile": None}
    md = bench.markdown(res)
    assert "| conv_vae | jaxvae (scan epoch) | 2.00 | 500 | 1.00x | 1.0 | 100 | 1.00 | 2.00 | - | - |" in md
    assert "QUICK run" in md and "memory rate" not in md


def test_markdown_nll_rows_against_the_flop_bound():
    """Both frameworks' NLL rows share the FLOPs the JAX worker counted: 2e11 / 100 GFLOP/s = 2 s."""
    res = {"machine": "m", "quick": False, "batch": 100, "peak_gflops": 100.0,
           "rows": [], "sweep": [], "devices": [], "profile": None,
           "nll": {"jax_nll": {"preset": "pytorch_examples", "data": "mnist5k test (1000 examples)",
                               "k": 5000, "nll_s": 3.0, "compile_s": 1.25, "matmul_flops": 2e11,
                               "chunk": 32},
                   "torch_nll": {"nll_s": 6.0, "threads": 2, "chunk": 32}}}
    md = bench.markdown(res)
    assert "pytorch_examples on mnist5k test (1000 examples), k = 5000" in md
    assert "0.20 TFLOP" in md
    assert "| jaxvae (jitted) | 3.00 | 1.2 | 1.00x | 2.00 | 1.50 | - | 32 |" in md
    assert "| torchvae (eager) | 6.00 | - | 2.00x | 2.00 | 3.00 | 2 | 32 |" in md
    res["nll"]["torch_nll"] = {"error": "killed after the 900 s limit"}
    assert "| torchvae (eager) | killed after the 900 s limit |" in bench.markdown(res)


def test_gpu_report_runs_every_piece_and_writes_its_files(tmp_path, monkeypatch):
    """--gpu orchestration with the workers stubbed (CI has no GPU): float32 and bfloat16 rows per
    preset, the 1/8/32 sweep, the NLL row, then the parity report; gpu.md names the device."""
    import json
    import subprocess
    import sys

    tasks = []

    def fake_worker(task, env_extra=None, timeout=None):
        tasks.append(task)
        if task["kind"] == "device":
            return {"platform": "gpu", "device_kind": "NVIDIA H200", "count": 1, "jax": "x"}
        if task["kind"] == "peak":
            return {"gflops": 1e5, "gbps": 4e3, "adam_bytes_per_param": 28}
        if task["kind"] == "jax_sweep":
            return {"members": task["members"], "epoch_s": 0.5 * (1 + task["members"] / 8),
                    "compile_s": 3.0}
        if task["kind"] == "jax_nll":
            return {"nll_s": 2.0}
        return {"epoch_s": 0.25, "steps_per_s": 1876.0, "examples_per_s": 240000.0, "compile_s": 4.0}

    runs = []
    monkeypatch.setattr(bench, "run_worker", fake_worker)
    monkeypatch.setattr(subprocess, "run", lambda cmd, **kw: runs.append(cmd) or
                        subprocess.CompletedProcess(cmd, 0, "ok", ""))
    out = tmp_path / "gpu"
    assert bench.main(["--gpu", "--out", str(out), "--presets", "pytorch_examples"]) == 0
    rows = [(t["preset"], t["precision"]) for t in tasks if t["kind"] == "jax"]
    assert rows == [("pytorch_examples", "float32"), ("pytorch_examples", "bfloat16")]
    assert [t["members"] for t in tasks if t["kind"] == "jax_sweep"] == [1, 8, 32]
    assert [t["nll_samples"] for t in tasks if t["kind"] == "jax_nll"] == [5000]
    assert [c[:3] for c in runs if "parity_tests.cli" in c] == [[sys.executable, "-m", "parity_tests.cli"]]
    md = (out / "gpu.md").read_text()
    assert "1 x NVIDIA H200 (gpu)" in md
    assert "| pytorch_examples | bfloat16 | 0.250 | 1876 | 240000 | 4.0 |" in md
    assert "| 32 | 2.500 | 4.44 | 12.8 |" in md  # 0.5 * (1 + 4) s; 2.5 / (0.5 * 1.125); 32 / 2.5
    assert json.loads((out / "gpu.json").read_text())["parity"]["exit_code"] == 0
    assert not (out / "gpu.partial.json").exists()


def test_gpu_report_refuses_a_cpu_backend_in_one_line(tmp_path, monkeypatch, capsys):
    import pytest

    monkeypatch.setattr(bench, "run_worker", lambda task, *a, **k: {"platform": "cpu"})
    with pytest.raises(SystemExit) as e:
        bench.main(["--gpu", "--out", str(tmp_path)])
    err = capsys.readouterr().err.strip().splitlines()
    assert e.value.code == 2 and len(err) == 1 and "sees no GPU or TPU" in err[0]


def test_markdown_scaling_rows_that_failed_say_why():
    res = {"machine": "m", "quick": False, "batch": 128, "peak_gflops": 100.0, "rows": [],
           "sweep": [{"members": 1, "error": "exit 1: boom"}, {"members": 2, "epoch_s": 4.0,
                                                                 "compile_s": 1.0}],
           "devices": [{"devices": 1, "epoch_s": 2.0}, {"devices": 2, "error": "exit 1: bad mesh"}]}
    md = bench.markdown(res)
    assert "| 1 | failed: exit 1: boom | | |" in md
    assert "| 2 | 4.00 | - | 1.0 |" in md  # no one-member time to divide by
    assert "| 2 | failed: exit 1: bad mesh | |" in md and "| 1 | 2.00 | 1.00 |" in md


def test_rounds_alternate_the_trainers_and_keep_each_ones_median(monkeypatch, tmp_path):
    calls = []
    times = {"jax": [3.0, 1.0, 2.0], "torch": [5.0, 9.0, 4.0], "torch_minimal": [6.0, 6.0, 6.0]}

    def fake_worker(task, env_extra=None, timeout=None):
        if task["kind"] == "peak":
            return {"gflops": 100.0, "gbps": 10.0, "adam_bytes_per_param": 28}
        calls.append(task["kind"])
        n = sum(c == task["kind"] for c in calls) - 1
        if task["kind"] == "torch" and n == 1:
            return {"error": "killed"}
        t = times[task["kind"]][n]
        return {"epoch_s": t, "examples_per_s": 1000 / t, "peak_rss_mib": 1.0, "round": n}

    monkeypatch.setattr(bench, "run_worker", fake_worker)
    args = bench.build_parser().parse_args(["--presets", "pytorch_examples", "--rounds", "3",
                                            "--no-dataloader", "--no-nll", "--no-scaling",
                                            "--out", str(tmp_path)])
    res = bench.run_all(args)
    assert calls == ["jax", "torch", "torch_minimal"] * 3  # alternating, round by round
    row = res["rows"][0]
    assert row["jax"]["epoch_s"] == 2.0 and row["jax"]["rounds_epoch_s"] == [3.0, 1.0, 2.0]
    assert row["torch"]["epoch_s"] == 4.0 and row["torch"]["rounds_epoch_s"] == [5.0, 4.0]  # lower median
    assert "3 alternating rounds" in bench.markdown({**res, "quick": False})
    assert bench.median_run([{"error": "a"}, {"error": "b"}]) == {"error": "b"}
