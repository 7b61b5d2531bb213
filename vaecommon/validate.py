"""Checks of image arrays: the trainers' inputs before the first step, and the images passed to
the library API (`jaxvae.restore` / `torchvae.restore`: evaluate_run, encode_means, ...).
Framework-free.

Each failure raises `DataError` (defined in `vaecommon.datasets`, re-exported here) with a
one-line message that names the data, the problem (shape, dtype, value range, NaN count) and
what to do about it, the same in both frameworks.
"""

from __future__ import annotations

import numpy as np

from vaecommon.datasets import DataError
from vaecommon.objectives import LIKELIHOODS

__all__ = ["DataError", "UNIT_INTERVAL_LIKELIHOODS", "check_images", "check_training_images",
           "check_api_images"]

# Likelihoods whose targets must lie in [0, 1] (Bernoulli-type).
UNIT_INTERVAL_LIKELIHOODS = tuple(name for name, s in LIKELIHOODS.items() if s.unit_interval)


def check_images(images, *, expected: tuple[int, ...], layout: str, where: str, preset: str,
                 likelihood: str | None = None) -> None:
    """Validate an image array: examples of the preset's shape, float, finite, in range.

    Args:
      images: (N, ...) array (NumPy, or anything np.asarray accepts).
      expected: the per-example shape the preset needs, in `layout` order.
      layout: "NHWC" or "NCHW" (named in the message).
      where: the data's origin (file, folder or API argument), for the message.
      preset: the model preset name, for the message.
      likelihood: the reconstruction term the values feed: Bernoulli-type terms need values in
        [0, 1], the others any finite values; None: [0, 1] always (the library API's documented
        input range).
    Raises:
      DataError: naming `where` and the first problem found.
    """
    x = np.asarray(images)
    if x.ndim == 0:
        raise DataError(f"{where}: expected an array of images ({layout}), got a scalar")
    if x.shape[0] == 0:
        raise DataError(f"{where}: the dataset is empty (0 examples); check the split, limit and data_dir")
    if tuple(x.shape[1:]) != tuple(expected):
        raise DataError(
            f"{where}: examples have shape {tuple(x.shape[1:])} ({layout[1:]}) but preset {preset!r} "
            f"expects {tuple(expected)}; pick a dataset of that size, or --image-size for image folders"
        )
    if not np.issubdtype(x.dtype, np.floating):
        raise DataError(f"{where}: images have dtype {x.dtype}; expected float32 in [0, 1]")
    finite = np.isfinite(x)
    if not finite.all():
        bad = np.flatnonzero(~finite.reshape(len(x), -1).all(axis=1))
        raise DataError(
            f"{where}: {int((~finite).sum())} NaN/inf pixel values in {len(bad)} images "
            f"(first at index {int(bad[0])}); clean the data first"
        )
    if likelihood is None or likelihood in UNIT_INTERVAL_LIKELIHOODS:
        lo, hi = float(x.min()), float(x.max())
        if lo < 0.0 or hi > 1.0:
            needs = (f"the {likelihood!r} likelihood needs values in [0, 1] (divide 8-bit images "
                     "by 255, or use a Gaussian/MSE likelihood)" if likelihood else
                     "the model takes images in [0, 1] (divide 8-bit images by 255)")
            raise DataError(f"{where}: pixel values span [{lo:g}, {hi:g}] but {needs}")


def check_training_images(images, *, likelihood: str, expected: tuple[int, ...], layout: str,
                          where: str, preset: str) -> None:
    """Validate a training/test image array before training.

    Args:
      images: (N, ...) array (NumPy, or anything np.asarray accepts).
      likelihood: the reconstruction term; Bernoulli-type terms need values in [0, 1].
      expected: the per-example shape the preset needs, in `layout` order.
      layout: "NHWC" or "NCHW" (named in the message).
      where: the data's origin (file or folder), for the message.
      preset: the model preset name, for the message.
    """
    check_images(images, expected=expected, layout=layout, where=where, preset=preset,
                 likelihood=likelihood)


def check_api_images(images, spec, *, where: str) -> None:
    """Validate the images given to the library API (`jaxvae.restore` / `torchvae.restore`).

    Both twins take NHWC NumPy images in [0, 1] at that boundary, so both run this one check
    before converting anything: the same DataError for the same bad input in either framework
    (instead of a silent -ELBO of 1e33 in one and a RuntimeError mid-evaluation in the other).

    Args:
      images: (N, H, W, C) images.
      spec: the model's `ModelSpec` (its input_shape (C, H, W) and name).
      where: the API call and argument, for the message (e.g. "evaluate_run: data.images").
    Raises:
      DataError: wrong shape or dtype, NaN/inf, or values outside [0, 1].
    """
    c, h, w = spec.input_shape
    check_images(images, expected=(h, w, c), layout="NHWC", where=where, preset=spec.name)
