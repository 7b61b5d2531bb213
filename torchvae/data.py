"""Datasets as torch tensors: NCHW images, int64 labels. Twin: `jaxvae.data`.

The readers, validation, splits and static binarization live in `vaecommon.datasets`, so both
twins return the same numbers; this module adds the torchvision.datasets library source, the
conversion to `torch.Tensor` and the dynamic binarization from a `torch.Generator`. Never
imports jax.
"""

from __future__ import annotations

import os
import urllib.parse
from pathlib import Path

import numpy as np
import torch

from vaecommon import datasets
from vaecommon.datasets import (BINARIZATIONS, DATASETS, SOURCES, SPLITS, DataError, DataInfo,
                                Dataset, load_factors)

__all__ = ["DATASETS", "SOURCES", "BINARIZATIONS", "SPLITS", "DataError", "DataInfo", "Dataset",
           "load_dataset", "binarize", "load_factors"]

_LIBRARY_NAMES = {"mnist": "MNIST", "fashion_mnist": "FashionMNIST"}  # torchvision classes


def load_dataset(name: str, split: str = "train", *, source: str = "auto",
                 data_dir: str | os.PathLike | None = None, binarization: str = "none",
                 flatten: bool = False, image_size: int | None = None,
                 limit: int | None = None) -> Dataset:
    """Loads one split of a dataset (sources and their order: `vaecommon.datasets`).

    Args:
      name: "mnist", "fashion_mnist", "mnist5k", "image_folder", "shapes" or "shapes_small"
        (generated sprites; their factor indices: `load_factors`, a NumPy array).
      split: "train" or "test".
      source: "auto", "idx", "library" (torchvision), "embedded", "image_folder" or "generated".
      data_dir: folder of IDX files or images, also torchvision's root; None: the defaults
        (torchvision: `./data`, the source notebooks' root).
      binarization: "none" | "static" (fixed 0/1 draw, same as jaxvae) | "dynamic" (grey
        values returned; the trainer calls `binarize` each epoch).
      flatten: return images as (N, C*H*W) in NCHW order.
      image_size: resize + centre-crop to image_size x image_size; None: native size.
      limit: keep only the first `limit` examples.

    Returns:
      Dataset(images float32 (N, C, H, W) in [0, 1], labels int64 (N,), DataInfo).

    Raises:
      DataError: bad arguments, or missing / bad data (the message names the file).
    """
    images, labels, info = datasets.load_dataset_arrays(
        name, split, source=source, data_dir=data_dir, binarization=binarization,
        image_size=image_size, limit=limit, library=_library)
    # NHWC as read -> NCHW (jaxvae keeps NHWC); flattening NCHW gives (C, H, W) order.
    images = torch.from_numpy(np.ascontiguousarray(images.transpose(0, 3, 1, 2)))
    if flatten:
        images = images.reshape(len(images), -1)
    return Dataset(images, torch.from_numpy(labels), info)


def binarize(images: torch.Tensor, generator: torch.Generator) -> torch.Tensor:
    """Dynamic binarization: each pixel becomes 1 with probability equal to its value.

    Args:
      images: float in [0, 1], any shape (e.g. a (B, C, H, W) batch).
      generator: the trainer's binarization stream (on the images' device).

    Returns:
      0/1 values of the same shape and dtype.
    """
    return torch.bernoulli(images, generator=generator)


def _library(name: str, split: str, data_dir, limit):
    """torchvision.datasets source: reads `<root>/<Class>/raw`; downloads only when the mirror
    is reachable. `datasets.Library` gives the contract."""
    try:
        import torchvision.datasets as tvd
    except ImportError as e:
        raise datasets.SourceUnavailable(f"torchvision is not installed ({e})") from e
    cls = getattr(tvd, _LIBRARY_NAMES[name])
    root = Path("data" if data_dir is None else data_dir).expanduser()
    raw = root / cls.__name__ / "raw"
    where = f"torchvision {cls.__name__} in {raw}"
    # torchvision needs all four uncompressed files; check here to tell "absent" from "bad".
    present = all((raw / Path(f).stem).is_file() for f, _ in cls.resources)
    if not present:
        url = cls.mirrors[0]
        if not datasets.can_reach(url):
            raise datasets.SourceUnavailable(
                f"{where} not found and {urllib.parse.urlsplit(url).hostname} is unreachable "
                "(offline)")
    try:
        ds = cls(os.fspath(root), train=split == "train", download=not present)
    except Exception as e:  # torchvision raises RuntimeError, AssertionError, URLError, ...
        kind = datasets.DataError if present else datasets.SourceUnavailable
        raise kind(f"{where}: {e!r}") from e
    images = ds.data[:limit].numpy()[..., None]  # (N, 28, 28, 1): the shared readers are NHWC
    labels = ds.targets[:limit].numpy().astype(np.int64)
    return images, labels, str(raw), f"torchvision {cls.__name__}"
