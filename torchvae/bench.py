"""Timing of the PyTorch trainers for `scripts/bench.py`. Twin: `jaxvae/bench.py`.

Three ways to train the same model for one epoch, each timed per epoch (median of repetitions):
- `epoch_timing` ("plain"): the reference `Trainer.apply_update` over batches sliced from one
  pre-loaded, pre-shuffled tensor (the fastest plain PyTorch form: no per-image transforms);
- `epoch_timing_minimal`: the same data path with the notebooks' bare loop (forward, loss,
  backward, step, `loss.item()`), without the trainer's per-step metric bookkeeping;
- `epoch_timing_dataloader`: the notebooks' path, `torchvision.datasets` + `ToTensor()` per image
  + `DataLoader(shuffle=True)`.
`nll_timing` times the final importance-sampled test NLL (`train.test_nll_stats`).
"""

from __future__ import annotations

import statistics
import time
from pathlib import Path
from typing import Any

import numpy as np
import torch

from torchvae import losses
from torchvae import streams, train
from vaecommon.config import TrainConfig, resolve
from vaecommon.schedule import epoch_batches

__all__ = ["epoch_timing", "epoch_timing_minimal", "epoch_timing_dataloader", "nll_timing"]


def _median_epochs(run_epoch, reps: int) -> dict[str, Any]:
    run_epoch(0)  # warm-up (allocator, thread pool), not counted
    times = []
    for e in range(1, reps + 1):
        t = time.perf_counter()
        run_epoch(e)
        times.append(time.perf_counter() - t)
    return {"epoch_s": statistics.median(times), "epoch_s_all": times}


def epoch_timing(cfg: TrainConfig, images: torch.Tensor, *, reps: int = 3) -> dict[str, Any]:
    """The reference trainer's update over pre-shuffled batches of a pre-loaded tensor."""
    cfg = resolve(cfg)
    train.set_threads()
    n = images.shape[0]
    trainer = train.Trainer.create(cfg, n)
    gen = streams.stream_generator(cfg.seed, "eps")

    def run_epoch(e):
        for ids in torch.from_numpy(epoch_batches(cfg.seed, e, n, cfg.batch_size).astype(np.int64)):
            trainer.apply_update(images[ids], *trainer.draw_noise(gen, len(ids)))

    out = _median_epochs(run_epoch, reps)
    steps = n // cfg.batch_size
    out.update(examples_per_s=steps * cfg.batch_size / out["epoch_s"], steps=steps,
               threads=torch.get_num_threads())
    return out


def epoch_timing_minimal(cfg: TrainConfig, images: torch.Tensor, *, reps: int = 3) -> dict[str, Any]:
    """The bare notebook loop (no metric bookkeeping) over the same pre-loaded batches."""
    cfg = resolve(cfg)
    train.set_threads()
    n = images.shape[0]
    trainer = train.Trainer.create(cfg, n)
    model, opt = trainer.model, trainer.optimizer
    gen = streams.stream_generator(cfg.seed, "eps")
    objective = losses.OBJECTIVES[cfg.objective]
    model.train()

    def run_epoch(e):
        for ids in torch.from_numpy(epoch_batches(cfg.seed, e, n, cfg.batch_size).astype(np.int64)):
            x = images[ids]
            eps = torch.randn((len(ids), model.spec.latent_dim), generator=gen)
            loss, _ = objective(x, model(x, eps=eps), likelihood=cfg.likelihood, reduction=cfg.reduction)
            opt.zero_grad(set_to_none=True)
            loss.backward()
            opt.step()
            loss.item()

    out = _median_epochs(run_epoch, reps)
    steps = n // cfg.batch_size
    out.update(examples_per_s=steps * cfg.batch_size / out["epoch_s"], steps=steps)
    return out


def epoch_timing_dataloader(cfg: TrainConfig, root: str | Path, *, dataset: str = "fashion_mnist",
                            reps: int = 2, num_workers: int = 0) -> dict[str, Any]:
    """The notebooks' torchvision path: per-image ToTensor() in a shuffling DataLoader.

    `root` must hold torchvision's layout (<root>/FashionMNIST/raw/*-ubyte[.gz]); nothing is
    downloaded.
    """
    import torchvision
    from torchvision import transforms

    cfg = resolve(cfg)
    cls = {"fashion_mnist": torchvision.datasets.FashionMNIST,
           "mnist": torchvision.datasets.MNIST}[dataset]
    ds = cls(str(root), train=True, download=False, transform=transforms.ToTensor())
    loader = torch.utils.data.DataLoader(ds, batch_size=cfg.batch_size, shuffle=True,
                                         drop_last=True, num_workers=num_workers,
                                         generator=torch.Generator().manual_seed(cfg.seed))
    trainer = train.Trainer.create(cfg, len(ds))
    gen = streams.stream_generator(cfg.seed, "eps")

    def run_epoch(e):
        for x, _ in loader:
            trainer.apply_update(x, *trainer.draw_noise(gen, len(x)))

    out = _median_epochs(run_epoch, reps)
    steps = len(ds) // cfg.batch_size
    out.update(examples_per_s=steps * cfg.batch_size / out["epoch_s"], steps=steps)
    return out


def nll_timing(cfg: TrainConfig, images: torch.Tensor, *, k: int) -> dict[str, Any]:
    """Seconds of `train.test_nll_stats` (the final test NLL of a run) with k importance samples
    on `images` (N, C, H, W), for freshly initialised weights (the cost does not depend on them).
    The twin of `jaxvae.bench.nll_timing` (which also counts the FLOPs of this computation)."""
    cfg = resolve(cfg)
    threads = train.set_threads()
    n = images.shape[0]
    trainer = train.Trainer.create(cfg, max(n, cfg.batch_size))  # no training
    t = time.perf_counter()
    nll, _ = train.test_nll_stats(trainer, images, seed=cfg.seed, k=k)
    return {"nll_s": time.perf_counter() - t, "k": k, "examples": n, "nll": nll,
            "threads": threads, "chunk": train.NLL_CHUNK}
