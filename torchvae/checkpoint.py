"""Checkpoints of a PyTorch training run. Twin: `jaxvae/checkpoint.py`.

A checkpoint holds the model's state_dict, the optimizer's and the scheduler's, the step, the
epoch (the data order is a function of the seed and the epoch), the generator states of the
eps and binarization streams, and the resolved config; `torch.save` of tensors and plain
containers only, so it loads with `weights_only=True` (always used: a file smuggling pickled
code is refused, not executed).

Each file is written to a temporary name, fsynced, then renamed, so a process killed mid-write
(even by SIGKILL) leaves the previous checkpoints intact; the writer removes the debris of a
killed write when it opens the folder.
"""

from __future__ import annotations

import os
from pathlib import Path

import torch

from vaecommon.checksum import leaves_checksum, nested_leaves

__all__ = ["CheckpointManager", "CheckpointError", "checkpoint_steps"]


class CheckpointError(ValueError):
    """A checkpoint is missing, corrupt, or from a different model/framework."""


def checkpoint_steps(directory: str | Path) -> list[int]:
    """Steps of the checkpoint files `step_XXXXXXXXX.pt` in `directory`, ascending (complete by
    construction: a file appears only by the atomic rename of a finished write). This layout is
    this module's alone."""
    d = Path(directory)
    if not d.is_dir():
        return []
    out = []
    for p in d.glob("step_*.pt"):
        try:
            out.append(int(p.stem.split("_", 1)[1]))
        except ValueError:
            continue
    return sorted(out)


class CheckpointManager:
    """Keep-last-N `torch.save` checkpoints (state_dicts only), written atomically.

    Each file is written to a temporary name, fsynced, then renamed, so a kill mid-write leaves
    the previous checkpoints intact. Loading always uses `weights_only=True`.
    """

    def __init__(self, directory: str | Path, *, keep: int = 3, read_only: bool = False):
        self.directory = Path(directory)
        self.keep = max(1, int(keep))
        self.read_only = read_only
        if not read_only:
            self.directory.mkdir(parents=True, exist_ok=True)
            # debris of a killed write; only the writer cleans (a reader might race a live save)
            for tmp in self.directory.glob(".*.tmp"):
                tmp.unlink(missing_ok=True)

    def _path(self, step: int) -> Path:
        return self.directory / f"step_{step:09d}.pt"

    def all_steps(self) -> list[int]:
        return checkpoint_steps(self.directory)

    def latest_step(self) -> int | None:
        steps = self.all_steps()
        return steps[-1] if steps else None

    def save(self, trainer, *, epoch: int, generators: dict[str, torch.Generator],
             config: dict) -> int:
        if self.read_only:
            raise PermissionError(f"{self.directory} was opened read-only")
        payload = {
            "model": trainer.model.state_dict(),
            "optimizer": trainer.optimizer.state_dict(),
            "scheduler": trainer.scheduler.state_dict(),
            "step": trainer.step,
            "epoch": int(epoch),
            "generators": {k: g.get_state() for k, g in generators.items()},
            "config": config,
            "framework": "torch",
        }
        payload["checksum"] = leaves_checksum(nested_leaves(payload))
        path = self._path(trainer.step)
        tmp = self.directory / f".{path.name}.tmp"
        try:
            with open(tmp, "wb") as f:
                torch.save(payload, f)
                f.flush()
                os.fsync(f.fileno())
            os.replace(tmp, path)
        except OSError as e:  # disk full, permissions: no temporary file is left behind
            tmp.unlink(missing_ok=True)
            raise OSError(e.errno, f"cannot write checkpoint {path}: {e.strerror or e}") from None
        except RuntimeError as e:  # torch.save reports a full disk as a RuntimeError
            tmp.unlink(missing_ok=True)
            raise OSError(f"cannot write checkpoint {path}: {e}") from None
        for old in self.all_steps()[: -self.keep]:
            self._path(old).unlink(missing_ok=True)
        return trainer.step

    def restore(self, trainer, generators: dict[str, torch.Generator],
                step: int | None = None) -> dict:
        step = self.latest_step() if step is None else step
        if step is None:
            raise CheckpointError(f"no checkpoint in {self.directory}")
        path = self._path(step)
        if not path.exists():
            raise CheckpointError(f"no checkpoint for step {step} in {self.directory}; "
                                    f"available steps: {self.all_steps()}")
        try:
            payload = torch.load(path, weights_only=True, map_location="cpu")
        except Exception as e:  # noqa: BLE001 - re-raised with the file and the likely cause
            raise CheckpointError(f"cannot load checkpoint {path}: {type(e).__name__}: {e} "
                             "(truncated or not a torchvae checkpoint?)") from e
        if not isinstance(payload, dict) or payload.get("framework") != "torch":
            raise CheckpointError(f"{path} is not a torchvae training checkpoint")
        saved = payload.pop("checksum", None)
        if saved is not None and leaves_checksum(nested_leaves(payload)) != saved:
            raise CheckpointError(f"{path} is damaged: its tensors do not match the checksum "
                                  "written with them")
        trainer.model.load_state_dict(payload["model"], strict=True)
        trainer.optimizer.load_state_dict(payload["optimizer"])
        trainer.scheduler.load_state_dict(payload["scheduler"])
        trainer.step = int(payload["step"])
        for k, g in generators.items():
            g.set_state(payload["generators"][k])
        return payload

    def restore_latest_intact(self, trainer, generators: dict[str, torch.Generator]
                              ) -> tuple[dict, list[str]]:
        """`restore` of the newest checkpoint that restores intact, trying older ones when the
        newest is damaged. Returns (payload, [a line per damaged checkpoint skipped]).

        Raises:
          CheckpointError: no checkpoint restores (each damaged one named).
        """
        skipped: list[str] = []
        for step in reversed(self.all_steps()):
            try:
                return self.restore(trainer, generators, step), skipped
            except CheckpointError as e:
                # kept for inspection, out of the way of the steps the resumed run saves again
                aside = self._path(step).with_name(self._path(step).name + ".damaged")
                self._path(step).rename(aside)
                skipped.append(f"{e} (moved to {aside})")
        raise CheckpointError("no intact checkpoint in " + str(self.directory) + ": "
                              + "; ".join(skipped))
