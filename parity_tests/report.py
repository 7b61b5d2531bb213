"""The parity report: run the cross-framework checks programmatically and tabulate them.

The checks are the plain functions the parity tests call (`check_*` in checks_gradients,
checks_training, checks_properties, checks_mirror, checks_slow_training); each returns
`Measurement`s, so the table shows exactly the numbers the tests assert on. No pytest involved:
this module and the check modules import neither pytest nor hypothesis (scripts/parity_test.py
checks it), so the report runs from an install without the test dependencies.

    python scripts/parity.py                                  # every default check
    python scripts/parity.py --presets conv_vae,simple_ae --checks gradients,param_counts
    python scripts/parity.py --json parity.json --markdown parity.md
    python scripts/parity.py --checks full_epoch,seed_statistics   # the slow ones (minutes)

One table row per (check, preset, tolerance row): the number of comparisons, the max abs and
max rel difference over them (rel over elements whose reference exceeds atol, as
`assert_close`), the tolerance, the largest fraction of it used (max |a - d| / (atol + rtol |d|):
under 100% passes; far under 100% says the row could be tighter), and whether all passed. Pass/fail properties (mirror, import
isolation, ...) show "-" for the differences. The exit status is 1 when anything failed
(a check that raises counts as failed, with its traceback in the failures list), else 0.
Precision is pinned as in conftest.py, so the same command runs on CPU and GPU.
"""

from __future__ import annotations

import dataclasses
import json
import math
import platform
import sys
import tempfile
import time
import traceback
from functools import partial
from pathlib import Path
from typing import Any, Callable, Sequence, TextIO

from parity_tests import checks_gradients as gradients
from parity_tests import checks_mirror as mirror
from parity_tests import checks_properties as properties
from parity_tests import checks_slow_training as slow
from parity_tests import checks_training as training
from parity_tests.twins import Measurement, flag, pin_precision  # sets CUBLAS_WORKSPACE_CONFIG
from vaecommon import presets as presets_lib

__all__ = ["Item", "all_items", "select", "run_items", "rows", "format_table", "format_markdown",
           "environment", "list_checks", "main", "publish", "document", "SLOW_CHECKS"]

SLOW_CHECKS = ("full_epoch", "seed_statistics")


@dataclasses.dataclass(frozen=True)
class Item:
    """One runnable unit of the report.

    Attributes:
      check: the check family (what `--checks` selects).
      preset: the preset it concerns ("-": none; always kept by `--presets`).
      label: readable description.
      run: returns the measurements.
    """

    check: str
    preset: str
    label: str
    run: Callable[[], list[Measurement]]

    @property
    def slow(self) -> bool:
        return self.check in SLOW_CHECKS


def all_items(workdir: Path) -> list[Item]:
    """Every check of the suite, in table order (workdir: scratch space for run folders)."""
    names = presets_lib.list_models()
    items = [Item("gradients", n, "gradients", partial(gradients.check_gradients, n)) for n in names]
    items += [Item("gradients_fd", n, "float64 FD", partial(gradients.check_gradients_fd, n))
              for n in gradients.FD_PRESETS]
    items += [Item("objective_gradients", gradients.OBJECTIVE_PRESET, f"objective {o}",
                   partial(gradients.check_objective_gradients, o)) for o in gradients.OBJECTIVES]
    items += [Item("optimizer_steps", training.STEP_PRESET, f"{training.K_STEPS} steps {c}",
                   partial(training.check_optimizer_steps, c)) for c in training.OPTIMIZER_CASES]
    items += [Item("batchnorm_train", training.BN_PRESET, "BatchNorm train/eval",
                   training.check_batchnorm_training),
              Item("batch_order", training.AE_PRESET, "epoch batch order",
                   partial(training.check_batch_order, workdir / "batch_order")),
              Item("fresh_eps", training.FRESH_PRESET, "fresh eps per step",
                   partial(training.check_fresh_eps, workdir / "fresh_eps"))]
    items += [Item("properties", c["preset"], "forward/KL/recon",
                   partial(properties.check_forward_kl_recon, **c)) for c in properties.report_cases()]
    items += [Item("param_counts", n, "parameter count", partial(mirror.check_param_counts, n))
              for n in names]
    items += [Item("mirror", "-", "presets, __all__, registries, TrainConfig",
                   lambda: mirror.check_presets() + mirror.check_registries()
                   + mirror.check_train_config()
                   + [x for mod in mirror.MIRRORED for x in mirror.check_public_names(mod)])]
    items += [Item("import_isolation", "-", f"import {pkg}.*",
                   partial(mirror.check_import_isolation, pkg)) for pkg in mirror.ISOLATION]
    items += [Item("full_epoch", slow.PRESET, "full Fashion-MNIST epoch", slow.check_full_epoch),
              Item("seed_statistics", slow.PRESET, f"{len(slow.SEEDS)} seeds x {slow.EPOCHS} epochs",
                   partial(slow.check_seed_statistics, workdir / "seeds"))]
    return items


def select(items: Sequence[Item], *, presets: Sequence[str] | None = None,
           checks: Sequence[str] | None = None) -> list[Item]:
    """Filter by preset (items about no preset are kept) and by check family.

    Without `checks`, every check except the slow ones (SLOW_CHECKS run only when named).
    A preset-specific item whose preset is not in `presets` is dropped.

    Raises:
      ValueError: an unknown preset or check name (the message lists the valid ones).
    """
    known_checks = list(dict.fromkeys(i.check for i in items))
    for name in presets or ():
        if name not in presets_lib.PRESETS:
            raise ValueError(f"unknown preset {name!r}; valid: {', '.join(presets_lib.PRESETS)}")
    for name in checks or ():
        if name not in known_checks:
            raise ValueError(f"unknown check {name!r}; valid: {', '.join(known_checks)}")
    out = []
    for i in items:
        if checks is None and i.slow:
            continue
        if checks is not None and i.check not in checks:
            continue
        if presets is not None and i.preset != "-" and i.preset not in presets:
            continue
        out.append(i)
    return out


def run_items(items: Sequence[Item], *, log: TextIO | None = None) -> tuple[list[Measurement], list[dict]]:
    """Run each item; an exception becomes one failed measurement carrying the traceback."""
    measurements: list[Measurement] = []
    timings = []
    for n, item in enumerate(items, 1):
        t0 = time.time()
        try:
            ms = list(item.run())
            if not ms:
                ms = [flag(False, check=item.check, preset=item.preset, name=item.label,
                           message="the check returned no measurements")]
        except Exception as e:  # noqa: BLE001 - reported, not hidden: the run exits non-zero
            ms = [flag(False, check=item.check, preset=item.preset, name=f"{item.label}: raised "
                       f"{type(e).__name__}", message=traceback.format_exc(limit=8))]
        dt = time.time() - t0
        ok = all(m.passed for m in ms)
        timings.append({"check": item.check, "preset": item.preset, "label": item.label,
                        "seconds": round(dt, 3), "measurements": len(ms), "passed": ok})
        measurements += ms
        if log is not None:
            print(f"[{n:3d}/{len(items)}] {item.check:>19} {item.preset:>22} {item.label:<34} "
                  f"{dt:6.1f} s {'ok' if ok else 'FAIL'}", file=log, flush=True)
    return measurements, timings


def _finite_max(values) -> float | None:
    vals = [v for v in values if isinstance(v, float) and math.isfinite(v)]
    return max(vals) if vals else None


def rows(measurements: Sequence[Measurement]) -> list[dict[str, Any]]:
    """One row per (check, preset, tolerance row), in first-seen order."""
    groups: dict[tuple[str, str, str], list[Measurement]] = {}
    for m in measurements:
        groups.setdefault((m.check, m.preset, m.tol), []).append(m)
    out = []
    for (check, preset, tol), ms in groups.items():
        out.append({
            "check": check, "preset": preset, "tol": tol or "property", "n": len(ms),
            "max_abs": _finite_max(m.max_abs for m in ms),
            "max_rel": _finite_max(m.max_rel for m in ms),
            "tol_used": _finite_max(m.used for m in ms),
            "worst": max(ms, key=lambda m: m.max_abs if math.isfinite(m.max_abs) else -1.0).name,
            "rtol": ms[0].rtol if tol else None, "atol": ms[0].atol if tol else None,
            "passed": all(m.passed for m in ms),
        })
    return out


def _num(v: float | None) -> str:
    return "-" if v is None else f"{v:.2e}"


def _pct(v: float | None) -> str:
    return "-" if v is None else ("inf" if math.isinf(v) else f"{100 * v:.0f}%")


def _tol(r: dict) -> str:
    if r["rtol"] is None:
        return "-"
    return f"{r['rtol']:g}/{r['atol']:g}"


def format_table(table: Sequence[dict]) -> str:
    header = ("preset", "check", "compared (TOL row)", "n", "max abs", "max rel", "rtol/atol",
              "tol used", "pass")
    lines = [(r["preset"], r["check"], r["tol"], str(r["n"]), _num(r["max_abs"]), _num(r["max_rel"]),
              _tol(r), _pct(r["tol_used"]), "ok" if r["passed"] else "FAIL") for r in table]
    widths = [max(len(h), *(len(line[i]) for line in lines)) if lines else len(h)
              for i, h in enumerate(header)]
    fmt = "  ".join(f"{{:<{w}}}" for w in widths)
    out = [fmt.format(*header), fmt.format(*("-" * w for w in widths))]
    out += [fmt.format(*line) for line in lines]
    return "\n".join(out)


def format_markdown(table: Sequence[dict]) -> str:
    out = ["| preset | check | compared (TOL row) | n | max abs diff | max rel diff | rtol / atol "
           "| tol used | pass |",
           "|---|---|---|---:|---:|---:|---|---:|---|"]
    for r in table:
        out.append(f"| {r['preset']} | {r['check']} | {r['tol']} | {r['n']} | {_num(r['max_abs'])} | "
                   f"{_num(r['max_rel'])} | {_tol(r)} | {_pct(r['tol_used'])} | "
                   f"{'ok' if r['passed'] else '**FAIL**'} |")
    return "\n".join(out)


def environment() -> dict[str, Any]:
    import jax
    import numpy as np
    import torch

    return {
        "python": platform.python_version(), "platform": platform.platform(),
        "jax": jax.__version__, "jax_backend": jax.default_backend(),
        "jax_devices": [str(d) for d in jax.devices()],
        "jax_default_matmul_precision": str(jax.config.jax_default_matmul_precision),
        "torch": torch.__version__, "torch_cuda": bool(torch.cuda.is_available()),
        "torch_tf32": bool(torch.backends.cuda.matmul.allow_tf32), "numpy": np.__version__,
    }


def _jsonable(v):
    if isinstance(v, float) and not math.isfinite(v):
        return None
    if isinstance(v, dict):
        return {k: _jsonable(x) for k, x in v.items()}
    if isinstance(v, (list, tuple)):
        return [_jsonable(x) for x in v]
    return v


def main(*, presets: Sequence[str] | None = None, checks: Sequence[str] | None = None,
         json_path: str | Path | None = None, markdown_path: str | Path | None = None,
         workdir: str | Path | None = None, out: TextIO | None = None) -> int:
    """Run the selected checks, print the table, write JSON/Markdown; 0 if all passed, else 1.

    Args:
      presets: keep only items about these presets (None: all).
      checks: check families to run (None: all but SLOW_CHECKS).
      json_path: write {"ok", "environment", "rows", "failures", "items", "measurements"} there.
      markdown_path: write the table as a Markdown table there.
      workdir: scratch folder for the run folders some checks write (None: a temporary one).
      out: where to print (None: stdout).
    Raises:
      ValueError: unknown preset or check names.
    """
    out = out or sys.stdout
    pin_precision()
    t0 = time.time()
    with tempfile.TemporaryDirectory(prefix="parity_") as tmp:
        wd = Path(workdir) if workdir is not None else Path(tmp)
        items = select(all_items(wd), presets=presets, checks=checks)
        if not items:
            raise ValueError("the selection is empty (no check concerns these presets)")
        measurements, timings = run_items(items, log=out)
    return 0 if publish(measurements, timings, time.time() - t0, out=out, json_path=json_path,
                        markdown_path=markdown_path) else 1


def publish(measurements: Sequence[Measurement], timings: Sequence[dict], wall: float, *,
            out: TextIO | None = None, json_path: str | Path | None = None,
            markdown_path: str | Path | None = None) -> bool:
    """Print the table, its summary line and the failures; write the JSON and Markdown files.

    The one output format of the report, shared by `main` and `parity_tests.pairs` (a user's own
    model pair). Returns whether every measurement passed.
    """
    table = rows(measurements)
    failures = [m.message for m in measurements if not m.passed]
    ok = not failures
    if out is not None:
        print("\n" + format_table(table), file=out)
        print(f"\n{len(table)} rows, {len(measurements)} comparisons, {len(failures)} failed, "
              f"{wall:.0f} s", file=out)
        for msg in failures:
            print(f"\nFAILED {msg}", file=out)
    if json_path is not None:
        Path(json_path).parent.mkdir(parents=True, exist_ok=True)
        Path(json_path).write_text(json.dumps(document(measurements, timings, wall), indent=1,
                                              allow_nan=False))
    if markdown_path is not None:
        Path(markdown_path).parent.mkdir(parents=True, exist_ok=True)
        Path(markdown_path).write_text(format_markdown(table) + "\n")
    return ok


def document(measurements: Sequence[Measurement], timings: Sequence[dict], wall: float) -> dict:
    """The JSON document: {"ok", "wall_s", "environment", "rows", "failures", "items",
    "measurements"} (non-finite numbers as null)."""
    failures = [m.message for m in measurements if not m.passed]
    return _jsonable({"ok": not failures, "wall_s": round(wall, 1), "environment": environment(),
                      "rows": rows(measurements), "failures": failures, "items": list(timings),
                      "measurements": [dataclasses.asdict(m) for m in measurements]})


def list_checks() -> list[tuple[str, str, str]]:
    """(check, preset, label) of every item, slow ones included."""
    with tempfile.TemporaryDirectory() as tmp:
        return [(i.check, i.preset, i.label) for i in all_items(Path(tmp))]


if __name__ == "__main__":  # python -m parity_tests.report (no options: the default checks)
    sys.exit(main())
