"""Argument groups and error reporting the commands share (nothing framework specific).

Every command takes a run folder of either framework; `vaecommon.commands.twins` reads its
config.json and imports the matching twin's command API (`<twin>.api`) only when the command
runs, so `--help` is instant and needs neither framework.

Bad input (not a run folder, no checkpoint, corrupt config, unknown preset, missing data, weights
that do not fit) ends with one `error:` line and exit status 2, like argparse's own errors. Set
JAXVAE_TRACEBACK=1 to see the full traceback instead.
"""

from __future__ import annotations

import argparse
import contextlib
import logging
import os
import sys
from pathlib import Path
from typing import Iterator

from vaecommon.datasets import DATASETS, SOURCES

RUN_HELP = ("run folder written by scripts/train.py (or scripts/convert.py --to-run-folder); "
            "JAX and torch runs alike: config.json says which framework restores it")


def parser(doc: str | None, prog: str) -> argparse.ArgumentParser:
    """An ArgumentParser whose description is the command's module docstring."""
    return argparse.ArgumentParser(prog=prog, description=doc,
                                   formatter_class=argparse.RawDescriptionHelpFormatter)


def add_run(p: argparse.ArgumentParser) -> None:
    """The positional run folder and --step."""
    p.add_argument("run", help=RUN_HELP)
    p.add_argument("--step", type=int, default=None,
                   help="checkpoint to restore, as an optimizer step (the names in "
                        "<run>/checkpoints/); default: the latest")


def add_data(p: argparse.ArgumentParser, *, limit_help: str | None = None) -> None:
    """--dataset / --data-source / --data-dir / --limit: other test data than the run's."""
    g = p.add_argument_group("test data (default: the run's own test split, as it was trained)")
    g.add_argument("--dataset", choices=DATASETS, default=None,
                   help="evaluate on this dataset instead of the run's (it must have the "
                        "model's image shape)")
    g.add_argument("--data-source", choices=SOURCES, default=None,
                   help="where to read it (default: the run's source, or auto for a new dataset)")
    g.add_argument("--data-dir", default=None,
                   help="folder of the IDX files / image folder (default: the run's, or the "
                        "documented defaults for a new dataset)")
    g.add_argument("--limit", type=int, default=None,
                   help=limit_help or "use only the first N test examples (default: the run's "
                                      "limit_test, i.e. all unless the run was a smoke run)")


def out_path(out: str | None, run: str | Path, name: str) -> Path:
    """--out, or <run>/figures/<name>."""
    return Path(out) if out else Path(run) / "figures" / name


def positive(text: str) -> int:
    """argparse type: an integer >= 1."""
    try:
        v = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected an integer, got {text!r}") from None
    if v < 1:
        raise argparse.ArgumentTypeError(f"must be >= 1, got {v}")
    return v


def non_negative(text: str) -> int:
    """argparse type: an integer >= 0."""
    try:
        v = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected an integer, got {text!r}") from None
    if v < 0:
        raise argparse.ArgumentTypeError(f"must be >= 0, got {v}")
    return v


def int_list(text: str) -> list[int]:
    """argparse type: '0,5,7' -> [0, 5, 7]."""
    try:
        return [int(t) for t in text.replace(" ", "").split(",") if t]
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected comma-separated integers, got {text!r}") from None


@contextlib.contextmanager
def user_errors(p: argparse.ArgumentParser) -> Iterator[None]:
    """Turn the library's input errors into `prog: error: message` and exit status 2.

    The library raises ValueError subclasses (RunFolderError, DataError, WeightsFileError,
    WeightsMismatchError, CheckpointError), KeyError (unknown names) and OSError (files) for bad
    input, each with a message that says what to do; a traceback would only bury it.
    """
    try:
        yield
    except (ValueError, KeyError, OSError, FloatingPointError) as e:
        if os.environ.get("JAXVAE_TRACEBACK"):
            raise
        msg = e.args[0] if isinstance(e, KeyError) and e.args else str(e)
        msg = " ".join(str(msg).split()) if len(str(msg)) < 2000 else str(msg)[:2000]
        print(f"{p.prog}: error: {msg}", file=sys.stderr)  # one line: no usage for a bad value
        # A failed Orbax restore leaves read tasks and coroutines that would print "Task
        # exception was never retrieved" / "Exception ignored" tracebacks when they are collected
        # as the interpreter exits; the error line above already says it all.
        sys.unraisablehook = lambda unraisable: None
        logging.getLogger("asyncio").setLevel(logging.CRITICAL + 1)
        sys.exit(2)


def say(text: str) -> None:
    """A progress / result line on stderr (stdout stays machine-readable)."""
    print(text, file=sys.stderr)


def wrap(text: str, width_in: float) -> str:
    """`text` wrapped to a figure `width_in` inches wide (about 11 characters per inch at the
    figures' title size), so a title over a narrow grid is not clipped."""
    import textwrap

    chars = max(12, int(width_in * 11))
    return "\n".join(textwrap.fill(line, chars) for line in text.splitlines())
