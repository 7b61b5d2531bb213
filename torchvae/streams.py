"""The run's random streams as torch Generators. Twin: `jaxvae/streams.py`.

Each stream (init, eps, dynamic binarization, evaluation, NLL, figures) is its own
`torch.Generator` seeded from (seed, STREAMS[name], counter); no global RNG is touched. The data
order ("perm") is drawn with NumPy by `vaecommon.schedule.epoch_batches`, the same in both twins.
"""

from __future__ import annotations

import numpy as np
import torch

from vaecommon.schedule import STREAMS

__all__ = ["STREAMS", "stream_generator"]


def stream_generator(seed: int, stream: str, counter: int = 0) -> torch.Generator:
    """A torch.Generator for one random stream of the run (seeded from seed, stream, counter)."""
    mixed = np.random.SeedSequence([int(seed), STREAMS[stream], int(counter)]).generate_state(1)[0]
    return torch.Generator().manual_seed(int(mixed))
