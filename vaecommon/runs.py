"""Run folders: the layout both trainers write and every command reads. Framework-free.

```
<workdir>/config.json    resolved TrainConfig, ModelSpec, framework, data info, versions
<workdir>/metrics.jsonl  one JSON record per line ("type": batch | train | test)
<workdir>/checkpoints/   framework-specific checkpoints
<workdir>/figures/       PNG figures
<workdir>/summary.md     data source used, final numbers, wall time, versions
```
Writes are atomic (write to a temporary file in the same directory, then `os.replace`), so a
crash never leaves a half-written config or summary; metrics are appended line by line and a
torn last line (from a kill mid-write) is ignored on read with a warning.
"""

from __future__ import annotations

import json
import math
import os
import platform
import tempfile
import warnings
from pathlib import Path
from typing import Any, Iterable

__all__ = [
    "RunFolder", "atomic_write_text", "read_metrics", "versions", "RECORD_TYPES",
]

RECORD_TYPES = ("batch", "train", "validation", "test")


def atomic_write_text(path: str | os.PathLike, text: str) -> None:
    """Write `text` to `path` atomically (temp file + fsync + rename)."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    umask = os.umask(0)
    os.umask(umask)
    os.chmod(tmp, 0o666 & ~umask)  # mkstemp makes 0600; give the usual permissions
    try:
        with os.fdopen(fd, "w") as f:
            f.write(text)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def _clean(value: Any) -> Any:
    """JSON-safe floats: NaN/inf become strings so a diverged run still parses."""
    if isinstance(value, float) and not math.isfinite(value):
        return repr(value)
    if isinstance(value, (list, tuple)):
        return [_clean(v) for v in value]
    if isinstance(value, dict):
        return {k: _clean(v) for k, v in value.items()}
    if hasattr(value, "item") and getattr(value, "ndim", 1) == 0:  # numpy / jax / torch scalars
        return _clean(value.item())
    if hasattr(value, "tolist"):
        return _clean(value.tolist())
    return value


def read_metrics(path: str | os.PathLike) -> list[dict[str, Any]]:
    """All records of a metrics.jsonl file (or of a run folder).

    Raises:
      FileNotFoundError: no metrics file there.
      ValueError: a line that is not UTF-8, not JSON (other than a torn last line) or not a
        record; the message starts with `<file>:<line>:`.
    """
    path = Path(path)
    if path.is_dir():
        path = path / "metrics.jsonl"
    if not path.exists():
        raise FileNotFoundError(f"no metrics file at {path}")
    # Bytes split on b"\n" only: the writer's lines are ASCII JSON (json.dumps escapes the rest),
    # so decoding per line can name the line of a bad byte, and no other line separator applies.
    lines = path.read_bytes().split(b"\n")
    while lines and not lines[-1].strip():
        lines.pop()
    out = []
    for i, raw in enumerate(lines, 1):
        try:
            line = raw.decode("utf-8")
        except UnicodeDecodeError as e:
            # a torn write truncates ASCII text, it cannot make a byte invalid: corruption
            raise ValueError(f"{path}:{i}: not UTF-8 text (byte 0x{raw[e.start]:02x} at column "
                             f"{e.start + 1}); the metrics file is corrupt") from None
        if not line.strip():
            continue
        try:
            rec = json.loads(line)
        except json.JSONDecodeError as e:
            if i == len(lines):
                warnings.warn(f"{path}:{i}: ignoring a torn last line (interrupted write)")
                continue
            raise ValueError(f"{path}:{i}: malformed metrics line: {e}") from None
        if not isinstance(rec, dict):
            raise ValueError(f"{path}:{i}: expected a JSON object, got {type(rec).__name__}")
        if rec.get("type") not in RECORD_TYPES:
            raise ValueError(f"{path}:{i}: record type {rec.get('type')!r} not in {RECORD_TYPES}")
        out.append(rec)
    return out


def versions(*modules: str) -> dict[str, str]:
    """Versions of python and of the named modules that are importable."""
    import importlib.metadata as md

    out = {"python": platform.python_version()}
    for name in modules:
        try:
            out[name] = md.version(name)
        except md.PackageNotFoundError:
            pass
    return out


class RunFolder:
    """Paths and I/O of one run folder."""

    def __init__(self, root: str | os.PathLike):
        self.root = Path(root)

    @property
    def config_path(self) -> Path:
        return self.root / "config.json"

    @property
    def metrics_path(self) -> Path:
        return self.root / "metrics.jsonl"

    @property
    def checkpoints(self) -> Path:
        return self.root / "checkpoints"

    @property
    def figures(self) -> Path:
        return self.root / "figures"

    @property
    def summary_path(self) -> Path:
        return self.root / "summary.md"

    def create(self) -> "RunFolder":
        for d in (self.root, self.checkpoints, self.figures):
            d.mkdir(parents=True, exist_ok=True)
        return self

    def write_config(self, record: dict[str, Any]) -> None:
        atomic_write_text(self.config_path, json.dumps(_clean(record), indent=2, sort_keys=True))

    def read_config(self) -> dict[str, Any]:
        if not self.config_path.exists():
            raise FileNotFoundError(
                f"{self.root} is not a run folder: no config.json (train writes one)"
            )
        try:
            return json.loads(self.config_path.read_text())
        except json.JSONDecodeError as e:
            raise ValueError(f"{self.config_path}: corrupt config JSON: {e}") from None

    def append_metrics(self, records: Iterable[dict[str, Any]]) -> None:
        """Append records, one JSON line each, flushed and fsynced."""
        text = "".join(json.dumps(_clean(r)) + "\n" for r in records)
        if not text:
            return
        with open(self.metrics_path, "a") as f:
            f.write(text)
            f.flush()
            os.fsync(f.fileno())

    def truncate_metrics(self, after_step: int) -> None:
        """Drop records past `after_step` (used when resuming from an older checkpoint)."""
        if not self.metrics_path.exists():
            return
        recs = read_metrics(self.metrics_path)
        keep = [r for r in recs if r.get("step", 0) <= after_step]
        if len(keep) == len(recs):
            return  # nothing to drop: leave the file (and its time stamp) alone
        atomic_write_text(self.metrics_path, "".join(json.dumps(r) + "\n" for r in keep))

    def metrics(self) -> list[dict[str, Any]]:
        return read_metrics(self.metrics_path)

    def write_summary(self, text: str) -> None:
        atomic_write_text(self.summary_path, text)
