"""scripts/parity.py: the CLI runs in-process, writes JSON/Markdown, and its exit status follows
the checks (a perturbed weight or an impossible tolerance makes it exit 1)."""

from __future__ import annotations

import json
import math
import subprocess
import sys
from pathlib import Path

import pytest

from jaxvae import convert as jconvert
from parity_tests import asserts
from scripts import parity

REPO = Path(__file__).resolve().parents[1]
FAST = ["--presets", "simple_ae,conv_vae", "--checks", "gradients,param_counts"]


def _run(tmp_path, extra=(), name="parity"):
    j, md = tmp_path / f"{name}.json", tmp_path / f"{name}.md"
    rc = parity.main([*FAST, *extra, "--json", str(j), "--markdown", str(md)])
    return rc, json.loads(j.read_text()), md.read_text()


def test_cli_passes_and_writes_json_and_markdown(tmp_path, capsys):
    rc, doc, md = _run(tmp_path)
    printed = capsys.readouterr().out
    assert rc == 0, printed
    assert doc["ok"] is True and doc["failures"] == []
    assert {"jax", "torch", "jax_default_matmul_precision"} <= set(doc["environment"])
    assert doc["environment"]["jax_default_matmul_precision"] == "highest"
    keys = {(r["preset"], r["check"]) for r in doc["rows"]}
    assert keys == {(p, c) for p in ("simple_ae", "conv_vae") for c in ("gradients", "param_counts")}
    for r in doc["rows"]:
        assert r["passed"] and r["n"] >= 1
        if r["tol"] != "property":
            assert r["rtol"] == asserts.TOL[r["tol"]]["rtol"] and r["atol"] == asserts.TOL[r["tol"]]["atol"]
            assert r["max_abs"] is not None and 0.0 <= r["max_abs"] <= r["atol"] + r["rtol"] * 1e9
    # every gradient of conv_vae was compared: its 14 parameter tensors (7 layers, weight + bias)
    grads = [m for m in doc["measurements"] if m["preset"] == "conv_vae" and m["name"].startswith("d/d")]
    assert len(grads) == 14 and all(m["passed"] and math.isfinite(m["max_abs"]) for m in grads)
    assert {i["check"] for i in doc["items"]} == {"gradients", "param_counts"}
    assert "conv_vae" in printed and "0 failed" in printed
    assert md.startswith("| preset | check |") and md.count("\n") == len(doc["rows"]) + 2


def test_a_perturbed_jax_weight_makes_it_fail(tmp_path, monkeypatch):
    original = jconvert.from_canonical

    def perturbed(model_or_name, weights, **overrides):
        w = dict(weights)
        k = next(k for k in w if k.endswith("weight"))
        w[k] = w[k] + 1e-3 * (abs(w[k]).max() + 1.0)
        return original(model_or_name, w, **overrides)

    monkeypatch.setattr(jconvert, "from_canonical", perturbed)
    rc, doc, md = _run(tmp_path)
    assert rc == 1 and doc["ok"] is False and doc["failures"]
    failed = {(r["preset"], r["check"]) for r in doc["rows"] if not r["passed"]}
    assert failed == {("simple_ae", "gradients"), ("conv_vae", "gradients")}
    assert "**FAIL**" in md


def test_an_impossible_tolerance_makes_it_fail(tmp_path, monkeypatch):
    monkeypatch.setitem(asserts.TOL, "gradients", {"rtol": 0.0, "atol": 0.0})
    rc, doc, _ = _run(tmp_path)
    assert rc == 1
    assert any("gradients" in f and "not close" in f for f in doc["failures"])


def test_a_raising_check_is_a_failure_not_a_crash(tmp_path, monkeypatch):
    from parity_tests import test_mirror

    def boom(preset):
        raise RuntimeError("deliberate")

    monkeypatch.setattr(test_mirror, "check_param_counts", boom)
    rc, doc, _ = _run(tmp_path)
    assert rc == 1
    assert any("RuntimeError: deliberate" in f for f in doc["failures"])


@pytest.mark.parametrize("argv", [["--presets", "no_such_preset"], ["--checks", "no_such_check"]])
def test_unknown_names_are_usage_errors(argv, capsys):
    assert parity.main(argv) == 2
    assert "valid:" in capsys.readouterr().err


def test_runs_as_a_script_from_the_repository_root():
    proc = subprocess.run([sys.executable, "scripts/parity.py", "--list"], cwd=REPO,
                          capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr[-2000:]
    lines = proc.stdout.splitlines()
    assert any(line.startswith("gradients ") and "conv_vae" in line for line in lines)
    assert any(line.startswith("full_epoch") and "slow" in line for line in lines)
