"""Checkpoints of a JAX training run (Orbax). Twin: `torchvae/checkpoint.py`.

A checkpoint holds the model parameters, the other model state (BatchNorm running stats), the
optimizer state, the step, the epoch (the data order is a function of the root key and the
epoch, so this is the whole data-order state), the root key, and the resolved config.

Orbax writes each step into a temporary directory and renames it when complete, so a process
killed mid-write (even by SIGKILL) leaves the previous checkpoints intact; incomplete temporary
directories are cleaned up the next time a manager opens the folder.
"""

from __future__ import annotations

import contextlib
import json
import logging
import shutil
import sys
from pathlib import Path
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np
import orbax.checkpoint as ocp
from flax import nnx

from vaecommon.checksum import leaves_checksum

__all__ = ["CheckpointManager", "CheckpointError", "checkpoint_steps"]


def _checksum(tree) -> str:
    """`vaecommon.checksum` of every array of a state pytree (paths from jax.tree_util)."""
    leaves, _ = jax.tree_util.tree_flatten_with_path(jax.device_get(tree))
    return leaves_checksum((jax.tree_util.keystr(p), x) for p, x in leaves)


class CheckpointError(ValueError):
    """A checkpoint is missing, corrupt, or from a different model/framework."""


def checkpoint_steps(directory: str | Path) -> list[int]:
    """Steps of the complete checkpoints in `directory`, ascending, read from the folder names
    only (Orbax step directories holding commit_success.txt or _CHECKPOINT_METADATA), so nothing
    is created or cleaned up. This layout is this module's alone."""
    d = Path(directory)
    if not d.is_dir():
        return []
    return sorted(int(p.name) for p in d.iterdir()
                  if p.is_dir() and p.name.isdigit()
                  and ((p / "_CHECKPOINT_METADATA").exists() or (p / "commit_success.txt").exists()))


def _pure(tree):
    """nnx.State -> nested dicts of arrays (what Orbax stores)."""
    return nnx.to_pure_dict(tree)


class _DropReadOnlyNotice(logging.Filter):
    def filter(self, record: logging.LogRecord) -> bool:
        return "read only" not in record.getMessage() and "read_only=True" not in record.getMessage()


@contextlib.contextmanager
def _quiet_orbax():
    """Orbax logs that a read-only manager is read-only through absl: noise on every command."""
    logger, f = logging.getLogger("absl"), _DropReadOnlyNotice()
    logger.addFilter(f)
    try:
        yield
    finally:
        logger.removeFilter(f)


def _collect_abandoned_reads() -> None:
    """Collect the read tasks a failed Orbax restore leaves behind, quietly: each would log
    "Task exception was never retrieved" with a traceback when collected later, burying the
    one-line CheckpointError raised instead."""
    import gc

    log, hook = logging.getLogger("asyncio"), sys.unraisablehook
    level = log.level
    log.setLevel(logging.CRITICAL + 1)
    sys.unraisablehook = lambda unraisable: None
    try:
        gc.collect()
    finally:
        log.setLevel(level)
        sys.unraisablehook = hook


class CheckpointManager:
    """Keep-last-N checkpoints of a `TrainState` in `directory` (one subfolder per step).

    `read_only=True` (commands that only load) never deletes anything, not even the temporary
    directory of a save another process may have in progress; the training process cleans up
    debris of killed writes when it opens the folder.
    """

    def __init__(self, directory: str | Path, *, keep: int = 3, read_only: bool = False):
        self.directory = Path(directory).absolute()
        if not read_only:
            self.directory.mkdir(parents=True, exist_ok=True)
        elif not self.directory.is_dir():
            raise CheckpointError(f"no checkpoint folder at {self.directory}")
        options = ocp.CheckpointManagerOptions(
            max_to_keep=None if read_only else max(1, int(keep)),
            save_interval_steps=0 if read_only else 1,
            create=not read_only,
            enable_async_checkpointing=False,  # a returned save() is on disk
            cleanup_tmp_directories=not read_only,
            read_only=read_only,
        )
        with _quiet_orbax():  # read-only managers announce what a reader expects anyway
            self._mgr = ocp.CheckpointManager(
                self.directory, options=options, item_names=("state", "meta")
            )

    def latest_step(self) -> int | None:
        steps = self.all_steps()
        return steps[-1] if steps else None

    def all_steps(self) -> list[int]:
        """The complete checkpoints, as the commands list them (`checkpoint_steps`)."""
        return checkpoint_steps(self.directory)

    def save(self, state, *, epoch: int, root_key: jax.Array, config: dict[str, Any]) -> int:
        """Save `state` (a TrainState) under its step number; returns the step."""
        step = int(jax.device_get(state.step))
        tree = {
            "params": _pure(state.params),
            "rest": _pure(state.rest),
            "opt_state": state.opt_state,
            "step": state.step,
        }
        meta = {
            "epoch": int(epoch),
            "root_key": np.asarray(jax.random.key_data(root_key)).tolist(),
            "config": config,
            "framework": "jax",
            "checksum": _checksum(tree),
        }
        try:
            self._mgr.save(
                step,
                args=ocp.args.Composite(
                    state=ocp.args.StandardSave(tree), meta=ocp.args.JsonSave(meta)
                ),
                force=True,
            )
            self._mgr.wait_until_finished()
        except OSError as e:  # disk full, permissions: no half-written step is left behind
            for tmp in self.directory.glob(f"{step}.orbax-checkpoint-tmp*"):
                shutil.rmtree(tmp, ignore_errors=True)
            raise OSError(e.errno, f"cannot write checkpoint {self.directory / str(step)}: "
                                   f"{e.strerror or e}") from None
        return step

    def restore(self, template, step: int | None = None):
        """Restore into the structure of `template` (a fresh TrainState). Returns (state, meta)."""
        step = self.latest_step() if step is None else step
        if step is None:
            raise CheckpointError(f"no checkpoint in {self.directory}")
        target = {
            "params": _pure(template.params),
            "rest": _pure(template.rest),
            "opt_state": template.opt_state,
            "step": template.step,
        }
        abstract = jax.tree.map(ocp.utils.to_shape_dtype_struct, target)
        self._check_shapes(step, abstract)
        try:
            restored = self._mgr.restore(
                step,
                args=ocp.args.Composite(
                    state=ocp.args.StandardRestore(abstract), meta=ocp.args.JsonRestore()
                ),
            )
        except Exception as e:  # noqa: BLE001 - re-raised with the path and the likely cause
            _collect_abandoned_reads()
            raise CheckpointError(
                f"cannot restore checkpoint step {step} from {self.directory}: {type(e).__name__}: "
                f"{str(e).split('. ')[0][:300]} (is it from a different preset, framework or a "
                "truncated write?)"
            ) from e
        tree, meta = restored["state"], restored["meta"]
        if meta.get("framework") != "jax":
            raise CheckpointError(f"{self.directory}/{step} is not a jaxvae checkpoint")
        if "checksum" in meta and _checksum(tree) != meta["checksum"]:
            raise CheckpointError(f"{self.directory}/{step} is damaged: its arrays do not match the "
                                  "checksum written with them")
        params = template.params
        nnx.replace_by_pure_dict(params, tree["params"])
        rest = template.rest
        nnx.replace_by_pure_dict(rest, tree["rest"])
        state = type(template)(params, rest, tree["opt_state"], jnp.asarray(tree["step"]))
        return state, meta

    def _check_shapes(self, step: int, abstract) -> None:
        """Compare the stored array shapes (Orbax's `write_shape` in state/_METADATA) with the
        model's before reading anything: a mismatch is one CheckpointError naming the leaf, and
        Orbax never starts the reads that would fail (and print tracebacks as they are
        collected). A checkpoint without that metadata is left to the restore itself."""
        try:
            stored = json.loads((self.directory / str(step) / "state" / "_METADATA").read_text())
            stored = stored["tree_metadata"]
        except (OSError, ValueError, KeyError, TypeError):
            return

        def name(entry) -> str:
            for attr in ("key", "idx", "name"):
                if hasattr(entry, attr):
                    return str(getattr(entry, attr))
            return str(entry)

        leaves = [(tuple(name(e) for e in path), leaf)
                  for path, leaf in jax.tree_util.tree_flatten_with_path(abstract)[0]]
        for keys, leaf in sorted(leaves, key=lambda kl: (kl[0][:1] != ("params",), kl[0])):
            meta = stored.get(str(keys), {}).get("value_metadata", {})
            shape = meta.get("write_shape")
            # write_shape is the chunk one process wrote: the global shape, or a divisor of it
            # when the array was written in shards (a multi-device run)
            if shape is not None and (len(shape) != len(leaf.shape) or any(
                    w == 0 and g != 0 or w and (w > g or g % w) for w, g in zip(shape, leaf.shape))):
                raise CheckpointError(
                    f"cannot restore checkpoint step {step} from {self.directory}: "
                    f"{'/'.join(keys)} is stored with shape {tuple(shape)}, the model of the run's "
                    f"config has {tuple(leaf.shape)} (is it from a different preset, framework or "
                    "a truncated write?)")

    def restore_latest_intact(self, template) -> tuple[Any, dict, list[str]]:
        """`restore` of the newest checkpoint that restores intact, trying older ones when the
        newest is damaged. Returns (state, meta, [a line per damaged checkpoint skipped]).

        Raises:
          CheckpointError: no checkpoint restores (each damaged one named).
        """
        skipped: list[str] = []
        for step in reversed(self.all_steps()):
            try:
                state, meta = self.restore(template, step)
                return state, meta, skipped
            except CheckpointError as e:
                # kept for inspection, out of the way of the steps the resumed run saves again
                aside = self.directory / f"{step}.damaged"
                if jax.process_index() == 0:  # multi-process: one process moves, all wait
                    (self.directory / str(step)).rename(aside)
                if jax.process_count() > 1:
                    from jax.experimental import multihost_utils

                    multihost_utils.sync_global_devices(f"jaxvae: {aside.name}")
                self._mgr.reload()  # Orbax lists its steps once; it must forget the moved one
                skipped.append(f"{e} (moved to {aside})")
        raise CheckpointError("no intact checkpoint in " + str(self.directory) + ": "
                              + "; ".join(skipped))
