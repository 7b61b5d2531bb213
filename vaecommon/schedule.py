"""Schedules both trainers share: the data order and the learning-rate shape. Framework-free.

The data order is drawn with NumPy from (seed, epoch), so the JAX and the PyTorch trainer
see the same batches in the same order for the same seed, and a resumed run continues with
exactly the order an uninterrupted run would have used.
"""

from __future__ import annotations

import numpy as np

__all__ = ["STREAMS", "epoch_batches", "steps_per_epoch", "lr_factor"]

STREAMS = {"init": 0, "perm": 1, "eps": 2, "binarize": 3, "eval": 4, "nll": 5, "figures": 6}
"""The run's independent random streams. Both twins derive each stream from (seed, STREAMS[name],
counter): `jaxvae.streams.stream_key` by `fold_in`, `torchvae.streams.stream_generator` by a
NumPy SeedSequence; "perm" is the data order, drawn here with NumPy for both."""


def steps_per_epoch(n: int, batch_size: int) -> int:
    """Full batches per epoch (the last partial batch is dropped: every reported training average is then a mean over equal-sized batches)."""
    if batch_size > n:
        raise ValueError(f"batch_size {batch_size} is larger than the training set ({n} examples)")
    return n // batch_size


def epoch_batches(seed: int, epoch: int, n: int, batch_size: int) -> np.ndarray:
    """(steps_per_epoch, batch_size) int32 example indices of `epoch` (0-based).

    A fresh permutation of range(n) per epoch from NumPy's PCG64 seeded by (seed, epoch).
    """
    nb = steps_per_epoch(n, batch_size)
    rng = np.random.default_rng([int(seed), STREAMS["perm"], int(epoch)])
    perm = rng.permutation(n)
    return perm[: nb * batch_size].reshape(nb, batch_size).astype(np.int32)


def lr_factor(step, *, warmup_steps: int, schedule: str, total_steps: int, xp=np):
    """Learning-rate multiplier in [0, 1] at optimizer step `step` (0-based).

    Linear warm-up over `warmup_steps` ((step+1)/warmup), then "constant" (1) or "cosine"
    (0.5 * (1 + cos(pi * t)), t from 0 at the end of warm-up to 1 at `total_steps`).
    `xp` is the array module (numpy, jax.numpy): the same formula serves both trainers.
    """
    step = xp.asarray(step, dtype=xp.float32)
    one = xp.asarray(1.0, dtype=xp.float32)
    w = xp.minimum(one, (step + 1.0) / warmup_steps) if warmup_steps > 0 else one
    if schedule == "cosine":
        decay = max(int(total_steps) - int(warmup_steps), 1)
        t = xp.clip((step - warmup_steps) / decay, 0.0, 1.0)
        return w * 0.5 * (1.0 + xp.cos(np.pi * t))
    if schedule != "constant":
        raise ValueError(f"unknown schedule {schedule!r}; valid: constant, cosine")
    return w
