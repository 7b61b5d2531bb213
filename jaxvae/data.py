"""Datasets as JAX arrays: NHWC images, int32 labels. Twin: `torchvae.data`.

The readers, validation, splits and static binarization live in `vaecommon.datasets`, so both
twins return the same numbers; this module adds the tfds library source, the conversion to
`jax.Array` and the dynamic binarization from an explicit key. Never imports torch.
"""

from __future__ import annotations

import contextlib
import logging
import os
import urllib.parse

import jax
import jax.numpy as jnp
import numpy as np

from vaecommon import datasets
from vaecommon.datasets import (BINARIZATIONS, DATASETS, SOURCES, SPLITS, DataError, DataInfo,
                                Dataset, load_factors)

__all__ = ["DATASETS", "SOURCES", "BINARIZATIONS", "SPLITS", "DataError", "DataInfo", "Dataset",
           "load_dataset", "binarize", "load_factors"]

_LIBRARY_NAMES = {"mnist": "mnist", "fashion_mnist": "fashion_mnist"}  # tfds builder names


def load_dataset(name: str, split: str = "train", *, source: str = "auto",
                 data_dir: str | os.PathLike | None = None, binarization: str = "none",
                 flatten: bool = False, image_size: int | None = None,
                 limit: int | None = None) -> Dataset:
    """Loads one split of a dataset (sources and their order: `vaecommon.datasets`).

    Args:
      name: "mnist", "fashion_mnist", "mnist5k", "image_folder", "shapes" or "shapes_small"
        (generated sprites; their factor indices: `load_factors`, a NumPy array).
      split: "train" or "test".
      source: "auto", "idx", "library" (tfds), "embedded", "image_folder" or "generated".
      data_dir: folder of IDX files or images, also tfds's data_dir; None: the defaults.
      binarization: "none" | "static" (fixed 0/1 draw, same as torchvae) | "dynamic" (grey
        values returned; the trainer calls `binarize` each epoch).
      flatten: return images as (N, H*W*C) in NHWC order.
      image_size: resize + centre-crop to image_size x image_size; None: native size.
      limit: keep only the first `limit` examples.

    Returns:
      Dataset(images float32 (N, H, W, C) in [0, 1], labels int32 (N,), DataInfo).

    Raises:
      DataError: bad arguments, or missing / bad data (the message names the file).
    """
    images, labels, info = datasets.load_dataset_arrays(
        name, split, source=source, data_dir=data_dir, binarization=binarization,
        image_size=image_size, limit=limit, library=_library)
    # NHWC as read (torchvae transposes to NCHW here); flattening NHWC keeps (H, W, C) order.
    images = jnp.asarray(images.reshape(len(images), -1) if flatten else images)
    return Dataset(images, jnp.asarray(labels, jnp.int32), info)


def binarize(images: jax.Array, key: jax.Array) -> jax.Array:
    """Dynamic binarization: each pixel becomes 1 with probability equal to its value.

    Args:
      images: float in [0, 1], any shape (e.g. a (B, H, W, C) batch).
      key: a PRNG key; the trainer derives a fresh one per step.

    Returns:
      0/1 values of the same shape and dtype.
    """
    return jax.random.bernoulli(key, images).astype(images.dtype)


def _library(name: str, split: str, data_dir, limit):
    """tfds source (TF-free, via `as_data_source`): reads a locally prepared dataset; downloads
    only when the server is reachable. `datasets.Library` gives the contract."""
    try:
        import tensorflow_datasets as tfds
    except ImportError as e:
        raise datasets.SourceUnavailable(f"tensorflow-datasets is not installed ({e})") from e
    tfds_name = _LIBRARY_NAMES[name]
    with _quiet_absl():
        builder = tfds.builder(tfds_name, data_dir=None if data_dir is None else os.fspath(data_dir))
        prepared = builder.is_prepared()
    where = f"tfds {tfds_name!r} in {builder.data_dir}"
    if not prepared:
        url = getattr(builder, "URL", "https://storage.googleapis.com/")
        if not datasets.can_reach(url):
            raise datasets.SourceUnavailable(
                f"{where} is not prepared and {urllib.parse.urlsplit(url).hostname} is "
                "unreachable (offline)")
        try:
            builder.download_and_prepare(file_format="array_record")
        except Exception as e:  # tfds raises many types; preparing MNIST needs TensorFlow
            raise datasets.SourceUnavailable(f"{where}: download_and_prepare failed ({e!r})") from e
    try:
        source = builder.as_data_source(split=split)
    except (NotImplementedError, ValueError) as e:  # e.g. prepared as TFRecord: needs TF
        raise datasets.SourceUnavailable(f"{where} cannot be read without TensorFlow ({e})") from e
    n = len(source) if limit is None else min(limit, len(source))
    examples = [source[i] for i in range(n)]
    images = np.stack([np.asarray(ex["image"], np.uint8) for ex in examples])  # (N, 28, 28, 1)
    labels = np.asarray([ex["label"] for ex in examples], np.int64)
    return images, labels, str(builder.data_dir), f"tfds {tfds_name} {builder.version}"


@contextlib.contextmanager
def _quiet_absl():
    """Looking for a dataset that is not there makes tfds log absl warnings ("Variant folder ...
    has no dataset_info.json"); the one-line `SourceUnavailable` already says what is missing."""
    logger = logging.getLogger("absl")
    level = logger.level
    logger.setLevel(logging.ERROR)
    try:
        yield
    finally:
        logger.setLevel(level)
