"""Timing of the JAX trainer for `scripts/bench.py`. Twin: `torchvae/bench.py`.

Each function times the real training code (`Trainer.train_epoch`, the same compiled program
`train_and_evaluate` runs) on a device-resident training set, and reports seconds per epoch
(median over repetitions, after a separately timed compile), examples/s and XLA's FLOP count.
"""

from __future__ import annotations

import statistics
import time
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np

from jaxvae import train
from vaecommon.config import TrainConfig, resolve
from vaecommon.schedule import epoch_batches

__all__ = ["peak_matmul_gflops", "epoch_timing", "sweep_timing"]


def peak_matmul_gflops(n: int = 2048, reps: int = 5) -> float:
    """Measured float32 matmul rate (GFLOP/s) of this machine: best of `reps` n x n x n products."""
    a = jax.random.normal(jax.random.key(0), (n, n), jnp.float32)
    b = jax.random.normal(jax.random.key(1), (n, n), jnp.float32)
    f = jax.jit(lambda a, b: a @ b)
    f(a, b).block_until_ready()
    best = float("inf")
    for _ in range(reps):
        t = time.perf_counter()
        f(a, b).block_until_ready()
        best = min(best, time.perf_counter() - t)
    return 2 * n**3 / best / 1e9


def _block(tree):
    return jax.tree.map(lambda x: x.block_until_ready(), tree)


def epoch_timing(cfg: TrainConfig, images: np.ndarray, *, reps: int = 3,
                 num_devices: int = 1) -> dict[str, Any]:
    """Compile time and steady-state epoch time of `cfg` on `images` (N, H, W, C)."""
    cfg = resolve(cfg)
    n = images.shape[0]
    mesh = train.make_mesh(num_devices) if num_devices > 1 else None
    trainer = train.Trainer.create(cfg, n, mesh=mesh)
    root = jax.random.key(cfg.seed)
    state = trainer.init_state(root)
    x = jnp.asarray(images)
    if mesh is not None:
        from jax.sharding import NamedSharding, PartitionSpec as P

        x = jax.device_put(x, NamedSharding(mesh, P()))
        state = jax.device_put(state, NamedSharding(mesh, P()))

    def epoch(state, images, idx):
        return trainer.train_epoch(state, images, idx, root)

    fn = jax.jit(epoch, donate_argnums=(0,))
    idx0 = jnp.asarray(epoch_batches(cfg.seed, 0, n, cfg.batch_size))
    t = time.perf_counter()
    compiled = fn.lower(state, x, idx0).compile()
    compile_s = time.perf_counter() - t
    flops = _flops(compiled)
    times = []
    for e in range(reps + 1):  # the first run warms caches and is not counted
        idx = jnp.asarray(epoch_batches(cfg.seed, e, n, cfg.batch_size))
        t = time.perf_counter()
        state, terms = compiled(state, x, idx)
        _block((state, terms))
        if e:
            times.append(time.perf_counter() - t)
    med = statistics.median(times)
    steps = trainer.steps_per_epoch
    return {"compile_s": compile_s, "epoch_s": med, "epoch_s_all": times,
            "examples_per_s": steps * cfg.batch_size / med, "steps_per_s": steps / med,
            "steps": steps, "xla_flops_per_step": flops,  # XLA counts the scan body once
            "final_loss": float(np.mean(np.asarray(terms["loss"])[-10:]))}


def _flops(compiled) -> float | None:
    try:
        ca = compiled.cost_analysis()
        if isinstance(ca, list):
            ca = ca[0]
        return float(ca.get("flops")) if ca and ca.get("flops") else None
    except Exception:  # noqa: BLE001 - cost analysis is optional on some backends
        return None


def sweep_timing(cfg: TrainConfig, images: np.ndarray, members: int, *, reps: int = 3
                 ) -> dict[str, Any]:
    """Epoch time of `members` seeds trained together with jax.vmap (one compiled program)."""
    cfg = resolve(cfg)
    n = images.shape[0]
    trainer = train.Trainer.create(cfg, n)
    roots = [jax.random.key(cfg.seed + m) for m in range(members)]
    state = jax.tree.map(lambda *xs: jnp.stack(xs), *[trainer.init_state(r) for r in roots])
    keys = jnp.stack(roots)
    hyper = {"lr": jnp.full((members,), cfg.lr, jnp.float32)}
    x = jnp.asarray(images)

    def epoch(state, idx, keys, hyper):
        return jax.vmap(lambda s, i, k, h: trainer.train_epoch(s, x, i, k, h))(state, idx, keys, hyper)

    def idx_for(e):
        return jnp.asarray(np.stack([epoch_batches(cfg.seed + m, e, n, cfg.batch_size)
                                     for m in range(members)]))

    fn = jax.jit(epoch, donate_argnums=(0,))
    t = time.perf_counter()
    compiled = fn.lower(state, idx_for(0), keys, hyper).compile()
    compile_s = time.perf_counter() - t
    times = []
    for e in range(reps + 1):
        idx = idx_for(e)
        t = time.perf_counter()
        state, terms = compiled(state, idx, keys, hyper)
        _block((state, terms))
        if e:
            times.append(time.perf_counter() - t)
    return {"members": members, "compile_s": compile_s, "epoch_s": statistics.median(times),
            "epoch_s_all": times}
