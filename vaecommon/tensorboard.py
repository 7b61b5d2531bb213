"""TensorBoard event files of a run, written by both trainers with the same tags. Framework-free.

Each run folder gets `<run>/tensorboard/`, so `tensorboard --logdir runs/` shows a JAX run and a
torch run of one preset on the same axes (x: the optimizer step). The tags:

- `batch/<term>`: every logged term of every step (loss, recon, kl, grad_norm, the objective's own);
- `train/<term>`: the epoch means, plus `train/examples_per_s`;
- `test/<metric>`: -ELBO (`test/loss`), recon, kl, bits_per_dim, active_units, nll when computed;
- `test/kl_per_dim`: a histogram over latent dimensions, and `test/kl_dim/<i>` one scalar per
  dimension (up to 64 dimensions);
- `images/reconstructions`, `images/samples`: the figures' arrays, whenever figures are written.

`metrics.jsonl` stays the run's own record; the event files are a view of it. The writer is
tensorboardX (`pip install 'jaxvae[tensorboard]'`, no TensorFlow needed); without it, runs write
no event files and say so once. `read_scalars` reads the files back with the protocol buffers
tensorboardX ships (no TensorBoard install needed either).
"""

from __future__ import annotations

import struct
import sys
from pathlib import Path
from typing import Any, Iterable

import numpy as np

__all__ = ["Board", "available", "read_events", "read_scalars", "SUBDIR"]

SUBDIR = "tensorboard"
_MAX_DIM_SCALARS = 64
_warned = False


def available() -> bool:
    """Whether tensorboardX can be imported."""
    try:
        import tensorboardX  # noqa: F401
    except ImportError:
        return False
    return True


class Board:
    """The event writer of one run folder (a no-op without tensorboardX).

    Args:
      root: the run folder.
      purge_step: on resume, the first step after the checkpoint: TensorBoard hides events of a
        killed run's later steps (which the resumed run writes again).
      enabled: False gives a writer that writes nothing (a finished run that is rerun).
    """

    def __init__(self, root: str | Path, *, purge_step: int | None = None, enabled: bool = True):
        global _warned
        self.writer = None
        if not enabled:
            return
        if not available():
            if not _warned:
                print("[vaecommon] tensorboardX is not installed: no TensorBoard files (pip install "
                      "'jaxvae[tensorboard]'); metrics.jsonl has every number", file=sys.stderr)
                _warned = True
            return
        from tensorboardX import SummaryWriter

        self.writer = SummaryWriter(str(Path(root) / SUBDIR), purge_step=purge_step,
                                    flush_secs=30)

    def records(self, records: Iterable[dict[str, Any]]) -> None:
        """Write metrics records (the dicts appended to metrics.jsonl)."""
        if self.writer is None:
            return
        for r in records:
            kind, step = r.get("type"), int(r.get("step", 0))
            for k, v in r.items():
                if k in ("type", "step", "epoch") or isinstance(v, (list, dict, str, bool)) or v is None:
                    continue
                self.writer.add_scalar(f"{kind}/{k}", float(v), step)
            kl = r.get("kl_per_dim")
            if kind == "test" and isinstance(kl, list) and kl:
                arr = np.asarray(kl, np.float64)
                # a histogram over dimensions: each dimension once, weighted by its KL
                self.writer.add_histogram("test/kl_per_dim", arr, step)
                for i, v in enumerate(arr[:_MAX_DIM_SCALARS]):
                    self.writer.add_scalar(f"test/kl_dim/{i}", float(v), step)

    def images(self, tag: str, images: np.ndarray, step: int) -> None:
        """NHWC images in [0, 1] as one grid (`images/<tag>`)."""
        if self.writer is None or images is None or len(images) == 0:
            return
        self.writer.add_images(f"images/{tag}", np.clip(np.asarray(images, np.float32), 0, 1),
                               step, dataformats="NHWC")

    def close(self) -> None:
        if self.writer is not None:
            self.writer.close()
            self.writer = None


def read_events(folder: str | Path) -> list[Any]:
    """Every `Event` protocol buffer in the event files under `folder` (a run folder or its
    tensorboard/ subfolder), in file order. Reads the TFRecord framing directly."""
    from tensorboardX.proto import event_pb2

    folder = Path(folder)
    if (folder / SUBDIR).is_dir():
        folder = folder / SUBDIR
    out = []
    for path in sorted(folder.glob("events.out.tfevents.*")):
        data = path.read_bytes()
        i = 0
        while i + 12 <= len(data):
            (n,) = struct.unpack("<Q", data[i:i + 8])
            out.append(event_pb2.Event.FromString(data[i + 12:i + 12 + n]))
            i += 12 + n + 4  # length, its crc, the record, its crc
    return out


def read_scalars(folder: str | Path) -> dict[str, list[tuple[int, float]]]:
    """{tag: [(step, value), ...]} of the scalar summaries under `folder`."""
    out: dict[str, list[tuple[int, float]]] = {}
    for ev in read_events(folder):
        for v in ev.summary.value:
            if v.HasField("simple_value"):
                out.setdefault(v.tag, []).append((int(ev.step), float(v.simple_value)))
    return out
