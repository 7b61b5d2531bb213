"""Multi-process data parallel (JAX's multi-controller runtime): one Python process per host (or
per accelerator), all running the same `jaxvae.train.train_and_evaluate`. Twin:
`torchvae/multiprocess.py` (torch.distributed with gloo, started by torchrun or the same flags).

- `initialize` calls `jax.distributed.initialize` (before any JAX computation) and selects
  the gloo CPU collectives, so that CPU processes can all-reduce (on GPU/TPU XLA uses NCCL/ICI).
- The training mesh spans every process's devices (`jax.devices()`); parameters and optimizer
  state are replicated over it, the batch is sharded over it.
- Each process gathers only its rows of every global batch (`local_rows`), in the global order of
  `vaecommon.schedule.epoch_batches`, and `global_batches` assembles the global array with
  `jax.make_array_from_process_local_data`: the training step sees the same global batch as a
  1-process run.
- Decisions that must agree (stop on a signal, a lock taken by process 0 only) go through
  `any_process`: a stop requested on one process stops all of them after the same epoch.

With one process every function here is a no-op or the identity.
"""

from __future__ import annotations

import os
from typing import Any

import jax
import numpy as np
from jax.sharding import NamedSharding, PartitionSpec as P

__all__ = ["initialize", "shutdown", "is_lead", "count", "any_process", "max_process", "sync",
           "local_rows", "global_batches", "replicate", "local_copy"]

def initialize(coordinator_address: str | None = None, num_processes: int | None = None,
               process_id: int | None = None) -> None:
    """`jax.distributed.initialize` with gloo CPU collectives; call it before any JAX work.

    Arguments left None are left to JAX's cluster auto-detection (SLURM, Open MPI, TPU, ...).
    """
    if not os.environ.get("JAX_CPU_COLLECTIVES_IMPLEMENTATION"):
        # without it a CPU process cannot all-reduce with another ("gloo" ships with jaxlib)
        jax.config.update("jax_cpu_collectives_implementation", "gloo")
    jax.distributed.initialize(coordinator_address=coordinator_address,
                               num_processes=num_processes, process_id=process_id)


def shutdown(finished: bool) -> None:
    """Nothing to do: JAX ends its own distributed runtime at interpreter exit (an `atexit` hook
    that clears the backends, then calls `jax.distributed.shutdown`). The name matches the torch
    twin's, whose gloo process group must be destroyed by hand; `finished` is unused here."""
    del finished


def count() -> int:
    """The number of processes (1 without `initialize`)."""
    return jax.process_count()


def is_lead() -> bool:
    """Process 0: the one that writes the run folder's metrics, figures, config and summary."""
    return jax.process_index() == 0


def _gather(value: int) -> np.ndarray:
    from jax.experimental import multihost_utils

    return np.asarray(multihost_utils.process_allgather(np.asarray(value, np.int32)))


def any_process(flag: bool) -> bool:
    """True on every process when `flag` is True on any (a collective: all must call it)."""
    return bool(flag) if count() == 1 else bool(np.any(_gather(int(bool(flag)))))


def max_process(value: int) -> int:
    """The largest `value` over the processes, on every process (a collective)."""
    return int(value) if count() == 1 else int(np.max(_gather(int(value))))


def sync(name: str) -> None:
    """A barrier of all processes (no-op with one)."""
    if count() > 1:
        from jax.experimental import multihost_utils

        multihost_utils.sync_global_devices(name)


def local_rows(mesh, batch: int) -> slice:
    """The rows of a (.., batch, ..) array sharded along "data" that this process's devices hold
    (contiguous, since the mesh lists the devices process by process)."""
    sharding = NamedSharding(mesh, P("data"))
    index = sharding.addressable_devices_indices_map((batch,))
    spans = sorted((s[0].start or 0, batch if s[0].stop is None else s[0].stop)
                   for s in index.values())
    start, stop = spans[0][0], spans[-1][1]
    if sum(b - a for a, b in {sp for sp in spans}) != stop - start:
        raise ValueError(f"this process's devices hold rows {spans} of the batch, not one block")
    return slice(start, stop)


def global_batches(mesh, images: np.ndarray, idx: np.ndarray) -> jax.Array:
    """The epoch's batches (steps, B, H, W, C), batch axis sharded over the mesh: this process
    gathers (on the host) and transfers only its rows of each global batch `idx` (steps, B)."""
    rows = local_rows(mesh, idx.shape[1])
    local = np.asarray(images)[idx[:, rows]]  # (steps, B / processes, H, W, C)
    return jax.make_array_from_process_local_data(
        NamedSharding(mesh, P(None, "data")), local, (*idx.shape, *images.shape[1:]))


def replicate(tree: Any, mesh) -> Any:
    """Every array of `tree` replicated over the mesh (identical values on every process)."""
    if mesh is None:
        return tree
    sharding = NamedSharding(mesh, P())

    def one(x):
        if isinstance(x, jax.Array) and jax.dtypes.issubdtype(x.dtype, jax.dtypes.prng_key):
            # device_put refuses typed keys for devices of other processes: move the key data
            return jax.random.wrap_key_data(jax.device_put(jax.random.key_data(x), sharding),
                                            impl=jax.random.key_impl(x))
        return jax.device_put(x, sharding)

    return jax.tree.map(one, tree)


def local_copy(tree: Any) -> Any:
    """A replicated tree as arrays on this process's first device: what a computation that runs
    on one process alone (evaluation, figures) takes."""
    def one(x):
        if isinstance(x, jax.Array) and not x.is_fully_addressable:
            return x.addressable_data(0)
        return x

    return jax.tree.map(one, tree)
