"""Training data that does not fit in memory: random-access sources, array_record files and the
resident path's order over them. Framework-free (NumPy, PIL, array_record; no Grain, which
imports JAX).

`jaxvae.stream_data` feeds these batches to the device; the resident path (`load_dataset_arrays`)
reads the same array_record files through the "array_record" source of `vaecommon.datasets`.

- Sources (`ImageFolderSource`, `RecordSource`): `source[i]` is example i of a split, uint8
  (H, W, C) and an int64 label, decoded on demand; example i is the i-th example of
  `load_dataset_arrays` for the same split and `limit`, so both paths see the same data.
- `EpochOrderSource`: position g of a run (epoch, step, row) -> example index, read from
  `vaecommon.schedule.epoch_batches(seed, epoch, n, batch)`: the streamed order IS the resident
  order, a pure function of (seed, epoch, step), so a resume restarts at (epoch, step) with no
  iterator file (Grain's own iterator state also restores it: tested).
- The Grain loader over those positions (deterministic, index-based, checkpointable, decoding
  in worker processes) is `jaxvae.stream_data.loader`: Grain imports JAX, so it is not here.
- `write_array_record`: the conversion (`jaxvae-to-records`): each split of a dataset to
  `<out>/<split>.array_record` with a `dataset.json` beside them.

The record format is `vaecommon.datasets.ARRAY_RECORD_FORMAT` (raw uint8 pixels: reading a
record is a copy; a JPEG folder is decoded once, at conversion); the resident reader of the same
files is `datasets.load_array_record`.

What bounds the streamed path's memory: `jaxvae.stream_data`'s docstring.
"""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any, Iterator

import numpy as np

from vaecommon import datasets, schedule
from vaecommon.datasets import DataError, DataInfo

__all__ = ["READ_AHEAD", "ImageFolderSource", "RecordSource", "EpochOrderSource",
           "open_source", "can_stream", "write_array_record", "synthetic_image_folder"]

READ_AHEAD = 2
"""Batches of records each Grain worker reads ahead (its `ReadOptions.prefetch_buffer_size` is
READ_AHEAD x batch size: Grain's default, 500 records, would hold 100 MB of 256x256 images per
worker)."""


# ------------------------------------------------------------------------------------ sources

class ImageFolderSource:
    """Split `split` of an image folder (`datasets.load_image_folder`'s layout, split rule and
    order), decoded one image at a time.

    Attributes:
      shape: (H, W, 3) of every example (image_size x image_size, or the first image's size).
      info: `DataInfo` as the resident reader would give it.
    """

    def __init__(self, root: str | os.PathLike, split: str, image_size: int | None = None,
                 limit: int | None = None):
        root, files, labels, note = datasets.image_folder_split(root, split, limit)
        self.files = [str(f) for f in files]
        self.labels = labels
        self.image_size = image_size
        first = datasets.read_image(Path(self.files[0]), image_size)
        self.shape = tuple(first.shape)
        self.info = DataInfo("image_folder", "image_folder", str(root), split, len(self.files),
                             note)

    def __len__(self) -> int:
        return len(self.files)

    def __getitem__(self, i: int) -> tuple[np.ndarray, np.int64]:
        img = datasets.read_image(Path(self.files[i]), self.image_size)
        if img.shape != self.shape:
            raise DataError(f"{self.files[i]}: size {img.shape[1]}x{img.shape[0]} differs from "
                            f"{self.files[0]} ({self.shape[1]}x{self.shape[0]}); pass "
                            "image_size to resize")
        return img, self.labels[i]


class RecordSource:
    """Split `split` of a folder written by `write_array_record`, read one record at a time.

    Attributes:
      shape: (H, W, C) of the examples as returned (image_size x image_size when given).
      info: `DataInfo` (source "array_record"; the note names the dataset it was converted from).
    """

    def __init__(self, root: str | os.PathLike, name: str, split: str,
                 image_size: int | None = None, limit: int | None = None):
        meta, entry, path = datasets.array_record_split(root, name, split)
        self.path, self.total = path, int(entry["n"])
        self.stored_shape = tuple(meta["image_shape"])
        self.image_size = image_size
        self.shape = (self.stored_shape if not image_size
                      else (image_size, image_size, self.stored_shape[2]))
        self.n = self.total if limit is None else min(int(limit), self.total)
        self.info = DataInfo(name, "array_record", str(path), split, self.n,
                             datasets.array_record_note(meta, entry))
        self._reader = datasets.open_array_record(path, self.total)  # checks the count

    def __getstate__(self):  # Grain pickles the source into its workers; each opens its own
        return {**self.__dict__, "_reader": None}

    def __len__(self) -> int:
        return self.n

    def __getitem__(self, i: int) -> tuple[np.ndarray, np.int64]:
        if self._reader is None:
            self._reader = datasets.open_array_record(self.path, self.total)
        img, label = datasets.decode_record(self._reader.read([int(i)])[0], self.stored_shape,
                                            self.path)
        if self.image_size and img.shape[:2] != (self.image_size, self.image_size):
            img = datasets._resize_all(img[None], self.image_size)[0]
        return img, label


def open_source(name: str, split: str, *, source: str = "auto", data_dir=None,
                image_size: int | None = None, limit: int | None = None):
    """The random-access source of a dataset split, or raise `DataError` saying why it cannot
    be streamed (only image folders and array_record folders are read one example at a time)."""
    if source == "array_record":
        if data_dir is None:
            raise DataError("source 'array_record' needs data_dir (a folder written by "
                            "jaxvae-to-records)")
        return RecordSource(data_dir, name, split, image_size, limit)
    if name == "image_folder" and source in ("auto", "image_folder"):
        if data_dir is None:
            raise DataError("dataset 'image_folder' needs data_dir (<root>/<class>/<image>)")
        return ImageFolderSource(data_dir, split, image_size, limit)
    raise DataError(f"dataset {name!r} from source {source!r} cannot be streamed: the streamed "
                    "input reads image folders and array_record folders; convert it first "
                    "(jaxvae-to-records --dataset NAME --out DIR, then --data-source array_record "
                    "--data-dir DIR)")


def can_stream(name: str, source: str) -> bool:
    """Whether `open_source` can stream this dataset/source pair."""
    return source == "array_record" or (name == "image_folder" and source in ("auto", "image_folder"))


# ------------------------------------------------------------------------------ conversion

def write_array_record(name: str, out: str | os.PathLike, *, source: str = "auto", data_dir=None,
                       image_size: int | None = None, limit: int | None = None,
                       splits=("train", "test"), progress=None) -> dict[str, Any]:
    """Write splits of a dataset to `<out>/<split>.array_record` + `<out>/dataset.json`.

    An image folder is converted one image at a time (memory stays bounded); other datasets are
    loaded whole (they fit: they are what the resident path reads) and written as uint8.
    Returns the `dataset.json` contents. `progress(split, i, n)` is called every 1000 records.

    Raises:
      DataError: bad arguments or data (as `load_dataset_arrays`), or an `out` that already holds
        a dataset (nothing is overwritten).
    """
    module = datasets.array_record_module()
    out = Path(out)
    if (out / "dataset.json").exists():
        raise DataError(f"{out}: already holds a converted dataset; choose a new folder")
    meta: dict[str, Any] = {"format": datasets.ARRAY_RECORD_FORMAT, "dataset": name, "splits": {},
                            "record": "int64 label (little endian) + uint8 pixels (H, W, C)"}
    plans = []  # every split opened (validated) before anything is written
    for split in splits:
        if can_stream(name, source):
            src = open_source(name, split, source=source, data_dir=data_dir,
                              image_size=image_size, limit=limit)
            plans.append((split, len(src), src.shape, src.info,
                          lambda src=src: (src[i] for i in range(len(src)))))
        else:
            ds = datasets.load_dataset_arrays(name, split, source=source, data_dir=data_dir,
                                              image_size=image_size, limit=limit)
            # float32 k/255 -> k exactly (|error| < 0.5 before rounding)
            pixels = np.rint(ds.images * 255).astype(np.uint8)
            plans.append((split, len(pixels), pixels.shape[1:], ds.info,
                          lambda p=pixels, y=ds.labels: zip(p, y)))
    shapes = {tuple(p[2]) for p in plans}
    if len(shapes) > 1:
        raise DataError(f"{plans[0][3].path} and {plans[-1][3].path}: the splits' images have "
                        f"different sizes {sorted(shapes)}; pass image_size")
    out.mkdir(parents=True, exist_ok=True)
    for split, n, shape, info, items in plans:
        path = out / f"{split}.array_record.partial"
        writer = module.ArrayRecordWriter(str(path), "group_size:1")  # random access: 1 per chunk
        try:
            for i, (img, label) in enumerate(items()):
                writer.write(datasets.encode_record(img, label))
                if progress is not None and (i + 1) % 1000 == 0:
                    progress(split, i + 1, n)
        finally:
            writer.close()
        path.rename(out / f"{split}.array_record")
        meta["image_shape"] = list(shape)
        meta["source"], meta["path"] = info.source, info.path
        meta["splits"][split] = {"n": int(n), "note": info.note}
    (out / "dataset.json").write_text(json.dumps(meta, indent=1) + "\n")
    return meta


# ------------------------------------------------------------------------------- the order

class EpochOrderSource:
    """Training step k of a run -> that step's batch, in the resident path's order.

    Steps count from (start_epoch, start_step): step k is global step `first + k`, i.e. epoch
    e = (first + k) // steps_per_epoch, step s within it, and its examples are
    `epoch_batches(seed, e, len(base), batch)[s]`. Each record is a whole batch, so Grain's
    workers (which take records round robin) hand back batches in order. An epoch's permutation
    is drawn once per worker.

    `source[k]` is (uint8 (B, H, W, C), int64 labels (B,)).
    """

    def __init__(self, base, *, seed: int, batch_size: int, epochs: int, start_epoch: int = 0,
                 start_step: int = 0):
        self.base, self.seed, self.batch = base, int(seed), int(batch_size)
        self.n = len(base)
        self.spe = schedule.steps_per_epoch(self.n, self.batch)
        if not 0 <= start_step < self.spe:
            raise ValueError(f"start_step {start_step} is outside 0..{self.spe - 1}")
        self.first = int(start_epoch) * self.spe + int(start_step)  # global step of record 0
        self.steps = max(0, int(epochs) * self.spe - self.first)
        self._orders: dict[int, np.ndarray] = {}

    def __len__(self) -> int:
        return self.steps

    def __repr__(self) -> str:  # Grain checks a restored iterator state against it
        return (f"EpochOrderSource({self.base.info.path!r}, n={self.n}, seed={self.seed}, "
                f"batch={self.batch}, first={self.first}, steps={self.steps})")

    def indices(self, k: int) -> np.ndarray:
        """(B,) example indices of record k."""
        epoch, s = divmod(self.first + int(k), self.spe)
        if epoch not in self._orders:
            self._orders = {epoch: schedule.epoch_batches(self.seed, epoch, self.n, self.batch)}
        return self._orders[epoch][s]

    def __getitem__(self, k: int) -> tuple[np.ndarray, np.ndarray]:
        examples = [self.base[int(i)] for i in self.indices(k)]
        return (np.stack([img for img, _ in examples]),
                np.asarray([label for _, label in examples], np.int64))


# ------------------------------------------------------------------------- synthetic folders

def synthetic_image_folder(root: str | os.PathLike, n: int, *, size: int = 256, classes: int = 2,
                           seed: int = 0, fmt: str = "jpeg") -> Path:
    """Write `n` photo-like RGB images (smooth random colour fields plus pixel noise), `size` x
    `size`, into `root/class_<c>/<i>.jpg` (classes round robin): the benchmark's stand-in for
    the glasses VAE's 20,000 photos, and test data whose every image differs.

    Returns `root`. Deterministic in (n, size, classes, seed).
    """
    from PIL import Image

    root = Path(root)
    rng = np.random.default_rng(seed)
    ext = {"jpeg": "jpg", "png": "png"}[fmt]
    for c in range(classes):
        (root / f"class_{c}").mkdir(parents=True, exist_ok=True)
    for i in range(n):
        coarse = rng.integers(0, 256, (4, 4, 3), dtype=np.uint8)
        img = np.asarray(Image.fromarray(coarse).resize((size, size), Image.Resampling.BILINEAR))
        noise = rng.integers(-12, 13, img.shape)
        img = np.clip(img.astype(np.int16) + noise, 0, 255).astype(np.uint8)
        Image.fromarray(img).save(root / f"class_{i % classes}" / f"{i:06d}.{ext}",
                                  **({"quality": 90} if fmt == "jpeg" else {}))
    return root
