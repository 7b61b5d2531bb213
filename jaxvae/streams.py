"""The run's random streams as JAX keys. Twin: `torchvae/streams.py`.

Every stream (eps, dynamic binarization, evaluation, NLL, figures, init) is
`fold_in(fold_in(root_key, STREAMS[name]), counter)` of the root key made from the seed, so a
resumed run draws exactly what an uninterrupted run would. The data order ("perm") is drawn with
NumPy by `vaecommon.schedule.epoch_batches`, the same in both twins.
"""

from __future__ import annotations

import jax

from vaecommon.schedule import STREAMS

__all__ = ["STREAMS", "stream_key"]


def stream_key(root: jax.Array, stream: str, counter) -> jax.Array:
    """The key of `stream` at `counter` (a step or an epoch)."""
    return jax.random.fold_in(jax.random.fold_in(root, STREAMS[stream]), counter)
