"""Checks of training inputs that both trainers run before the first step. Framework-free.

Each failure raises `vaecommon.datasets.DataError` with a message that names the data, the
problem (shape, value range, NaN count) and what to do about it.
"""

from __future__ import annotations

import numpy as np

from vaecommon.datasets import DataError

__all__ = ["UNIT_INTERVAL_LIKELIHOODS", "check_training_images"]

# Likelihoods whose targets must lie in [0, 1] (Bernoulli-type).
UNIT_INTERVAL_LIKELIHOODS = ("bernoulli", "bce_probs", "continuous_bernoulli")


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
    x = np.asarray(images)
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
            f"(first at index {int(bad[0])}); clean the data before training"
        )
    if likelihood in UNIT_INTERVAL_LIKELIHOODS:
        lo, hi = float(x.min()), float(x.max())
        if lo < 0.0 or hi > 1.0:
            raise DataError(
                f"{where}: pixel values span [{lo:g}, {hi:g}] but the {likelihood!r} likelihood "
                "needs values in [0, 1] (divide 8-bit images by 255, or use a Gaussian/MSE likelihood)"
            )
