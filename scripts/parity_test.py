"""scripts/parity.py: the CLI runs in-process, writes JSON/Markdown, and its exit status follows
the checks (a perturbed weight or an impossible tolerance makes it exit 1); the report, its check
modules and the script import without pytest or hypothesis (an install without the dev extras)."""

from __future__ import annotations

import json
import math
import os
import subprocess
import sys
import textwrap
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
    from parity_tests import checks_mirror

    def boom(preset):
        raise RuntimeError("deliberate")

    monkeypatch.setattr(checks_mirror, "check_param_counts", boom)
    rc, doc, _ = _run(tmp_path)
    assert rc == 1
    assert any("RuntimeError: deliberate" in f for f in doc["failures"])


@pytest.mark.parametrize("argv", [["--presets", "no_such_preset"], ["--checks", "no_such_check"]])
def test_unknown_names_are_usage_errors(argv, capsys):
    assert parity.main(argv) == 2
    assert "valid:" in capsys.readouterr().err


# Prepended to the child's `-c` code: every import of pytest, _pytest or hypothesis raises
# ImportError, as in an install without the dev extras (a meta path finder catches imports by
# any module, however deep, before the installed packages are searched).
NO_TEST_DEPS = textwrap.dedent("""
    import importlib.abc, sys
    BLOCKED = ("pytest", "_pytest", "hypothesis")
    class _NoTestDeps(importlib.abc.MetaPathFinder):
        def find_spec(self, name, path=None, target=None):
            if name.split(".")[0] in BLOCKED:
                raise ImportError(f"{name} is blocked: an install without the test dependencies")
            return None
    sys.meta_path.insert(0, _NoTestDeps())
""")
LOADED_TEST_DEPS = "print(sorted(m for m in sys.modules if m.split('.')[0] in BLOCKED))"


def _run_without_test_deps(code: str, cwd: Path) -> subprocess.CompletedProcess:
    """`python -c NO_TEST_DEPS + code` in cwd, the repository's packages importable through
    PYTHONPATH only (standing in for the installed ones: no sys.path entry for the repo root)."""
    env = {**os.environ, "PYTHONPATH": str(REPO)}
    return subprocess.run([sys.executable, "-c", NO_TEST_DEPS + textwrap.dedent(code)], cwd=cwd,
                          env=env, capture_output=True, text=True, timeout=300)


def check_modules() -> list[str]:
    """Every parity_tests.checks_* module (a new one is covered without editing this test), and
    `parity_tests.pairs` (the API for users' own model pairs)."""
    return sorted(f"parity_tests.{p.stem}" for p in (REPO / "parity_tests").glob("checks_*.py")) + [
        "parity_tests.pairs"]


def test_the_blocker_blocks_pytest(tmp_path):
    proc = _run_without_test_deps("import pytest", tmp_path)
    assert proc.returncode != 0 and "pytest is blocked" in proc.stderr, proc.stderr[-2000:]


@pytest.mark.integration  # imports jax and torch in a fresh interpreter (subprocess)
def test_report_and_check_modules_import_without_pytest(tmp_path):
    mods = check_modules()
    assert {f"parity_tests.checks_{m}" for m in
            ("gradients", "mirror", "properties", "training", "slow_training")} <= set(mods)
    proc = _run_without_test_deps(f"""
        import parity_tests.report, {", ".join(mods)}
        parity_tests.report.list_checks()  # builds every item: the checks resolve
        {LOADED_TEST_DEPS}
    """, tmp_path)
    assert proc.returncode == 0, proc.stderr[-2000:]
    assert proc.stdout.strip().splitlines()[-1] == "[]"


@pytest.mark.integration  # runs the script in a fresh interpreter (subprocess)
def test_list_runs_as_a_script_without_pytest(tmp_path):
    """`python scripts/parity.py --list` (sys.path[0] = scripts/, as Python sets it for a script;
    the repository root is not on sys.path), with pytest and hypothesis unimportable."""
    script = REPO / "scripts" / "parity.py"
    proc = _run_without_test_deps(f"""
        import runpy
        sys.argv = [{str(script)!r}, "--list"]
        sys.path[0] = {str(script.parent)!r}
        try:
            runpy.run_path(sys.argv[0], run_name="__main__")
        except SystemExit as e:
            assert e.code in (0, None), e.code
        {LOADED_TEST_DEPS}
    """, tmp_path)
    assert proc.returncode == 0, proc.stderr[-2000:]
    lines = proc.stdout.splitlines()
    assert lines[-1] == "[]"
    assert any(line.startswith("gradients ") and "conv_vae" in line for line in lines)
    assert any(line.startswith("full_epoch") and "slow" in line for line in lines)
