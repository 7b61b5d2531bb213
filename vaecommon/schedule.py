"""Schedules both trainers share: the data order and the learning-rate shape. Framework-free.

The data order is drawn with NumPy from (seed, epoch), so the JAX and the PyTorch trainer
see the same batches in the same order for the same seed, and a resumed run continues with
exactly the order an uninterrupted run would have used.
"""

from __future__ import annotations

import numpy as np

__all__ = ["STREAMS", "epoch_batches", "steps_per_epoch", "lr_factor", "shared_epoch_noise",
           "shared_eval_noise"]

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


def shared_epoch_noise(seed: int, epoch: int, steps: int, batch: int, latent_dim: int, *,
                       extra_shape: tuple[int, ...] | None = None,
                       image_shape: tuple[int, ...] | None = None) -> dict[str, np.ndarray]:
    """One epoch's training noise from NumPy, the same in both frameworks (TrainConfig.noise
    "shared"): a JAX run and a torch run of one config then see the same eps and the same
    binarized batches, so their curves differ only by float arithmetic.

    Drawn with PCG64 from (seed, STREAMS[stream], epoch), a function of the epoch alone, so a
    resumed run continues exactly. Returns float32 arrays: "eps" (steps, B, D) standard normal;
    "extra" (steps, *extra_shape) standard normal when the objective needs more noise (IWAE's
    samples, InfoVAE's prior draws); "uniform" (steps, B, *image_shape) in [0, 1) for dynamic
    binarization (a pixel p becomes 1 where uniform < p; image_shape is (H, W, C): torch
    transposes it to its (C, H, W) layout).
    """
    rng = np.random.default_rng([int(seed), STREAMS["eps"], int(epoch)])
    out = {"eps": rng.standard_normal((steps, batch, latent_dim), dtype=np.float32)}
    if extra_shape is not None:
        out["extra"] = rng.standard_normal((steps, *extra_shape), dtype=np.float32)
    if image_shape is not None:
        bits = np.random.default_rng([int(seed), STREAMS["binarize"], int(epoch)])
        out["uniform"] = bits.random((steps, batch, *image_shape), dtype=np.float32)
    return out


def shared_eval_noise(seed: int, epoch: int, n: int, latent_dim: int) -> np.ndarray:
    """(n, D) float32 standard normal eps of an evaluation at `epoch` with TrainConfig.noise
    "shared": one eps per evaluated example in both frameworks, so their -ELBO estimates share
    the Monte Carlo draw (PCG64 from (seed, STREAMS["eval"], epoch))."""
    rng = np.random.default_rng([int(seed), STREAMS["eval"], int(epoch)])
    return rng.standard_normal((n, latent_dim), dtype=np.float32)


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
