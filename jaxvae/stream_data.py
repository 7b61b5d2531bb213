"""The streamed input: training batches decoded on the host by Grain workers and prefetched to
the device, for training sets that do not fit in memory. No torch twin yet (the torch trainer
reads resident data only).

The resident path (the default, and the fast one: the training set sits on the device and one
`lax.scan` runs a whole epoch) stays what `train_and_evaluate` uses unless `input="stream"`,
or `input="auto"` and the float32 training set would exceed `STREAM_ABOVE_BYTES`.

The streamed path runs the same compiled epoch body (`Trainer.train_epoch`) over chunks of
`chunk` steps whose batches come from `vaecommon.records.EpochOrderSource`: the batches of
`epoch_batches(seed, epoch, n, batch)`, the resident order, decoded by a Grain `DataLoader`
(deterministic, index-based; `worker_count` processes). The order is a pure function of (seed,
epoch, step), so a resumed run (checkpoints are at epoch ends) restarts the loader at its epoch
and sees what an uninterrupted run would; Grain's own iterator state (`get_state` /
`set_state`) restores a mid-epoch position too (tested).

What bounds the host memory (none of it grows with the dataset), in float32 batch bytes
b = batch x H x W x C x 4 and uint8 record bytes r = b / 4:
- each of the `workers` Grain processes: `READ_AHEAD` records read ahead (r each) plus
  `worker_buffer` float32 batches in shared memory (b each), plus its own interpreter and JAX;
- this process: the chunk being assembled (its batches and their stack, 2 x `chunk` x b),
  `prefetch` chunks queued on the device and one waiting to be queued (on CPU the device is
  host memory), and the one being trained on.
So at most about (workers x (worker_buffer + READ_AHEAD/4) + chunk x (prefetch + 4)) x b, plus
the model, the test split (resident) and the interpreters. `scripts/bench.py --stream` measures
it.
"""

from __future__ import annotations

import contextlib
import gc
import math
import os
import queue
import signal
import threading
import time
from typing import Any, Callable

import jax
import jax.numpy as jnp
import numpy as np

from jaxvae import xla_options
from vaecommon import records
from vaecommon.config import TrainConfig
from vaecommon.datasets import DataError, Dataset

__all__ = ["INPUTS", "STREAM_ABOVE_BYTES", "CHUNK_BYTES", "default_workers", "train_source",
           "choose_input", "loader", "DevicePrefetch", "StreamedEpochs", "chunk_steps"]

INPUTS = ("auto", "resident", "stream")
STREAM_ABOVE_BYTES = 4 * 2**30
"""`input="auto"` streams a training split whose float32 images exceed 4 GiB (the glasses
VAE's 20,000 256x256 RGB photos are 15.7 GB) and keeps smaller ones resident (MNIST: 188 MB)."""
CHUNK_BYTES = 64 * 2**20
"""A streamed chunk (the steps one compiled call trains on) holds at most this many bytes of
float32 batches (at least one batch)."""


def default_workers() -> int:
    """Grain worker processes when none are asked for: min(4, CPUs)."""
    return max(1, min(4, os.cpu_count() or 1))


def train_source(cfg: TrainConfig):
    """The random-access source of a resolved config's training split
    (`vaecommon.records.open_source`; raises `DataError` when it cannot be streamed)."""
    return records.open_source(
        cfg.dataset, "train", source=cfg.data_source, data_dir=cfg.data_dir,
        image_size=cfg.image_size if cfg.dataset == "image_folder" else None,
        limit=cfg.limit_train)


def choose_input(cfg: TrainConfig, input: str, *, members: int = 1, processes: int = 1):
    """The training split's random-access source when `input` picks the streamed path, None for
    the resident path.

    "auto" streams only what can be streamed (an image folder or an array_record folder, one
    member, one process, no validation split, no static binarization) and is larger than
    `STREAM_ABOVE_BYTES` as float32; "stream" refuses the rest with one line saying why.
    """
    if input not in INPUTS:
        raise ValueError(f"--input {input!r} is not valid; choose from {INPUTS}")
    if input == "resident":
        return None
    why = []
    if members > 1:
        why.append("a sweep (its members would read different orders)")
    if processes > 1:
        why.append("multi-process training (each process reads its rows of the resident "
                   "batches; a streamed loader per process is not written yet)")
    if cfg.validation:
        why.append("--validation (the held-out split is the end of the training file order)")
    if cfg.binarization == "static":
        why.append("static binarization (one draw over the whole array)")
    if not records.can_stream(cfg.dataset, cfg.data_source):
        if input == "auto":
            return None
        why.append(f"dataset {cfg.dataset!r} from source {cfg.data_source!r} (the streamed input "
                   "reads image folders and array_record folders: convert it with "
                   "jaxvae-to-records, then --data-source array_record --data-dir DIR)")
    if why:
        if input == "auto":
            return None
        raise ValueError("--input stream cannot train " + "; ".join(why))
    source = train_source(cfg)
    if input == "auto" and len(source) * math.prod(source.shape) * 4 <= STREAM_ABOVE_BYTES:
        return None
    return source


def shape_only(source) -> Dataset:
    """A `Dataset` standing in for the streamed training split: its images are a zero-stride
    float32 view of the right shape (`np.broadcast_to`, no memory), for the code that only reads
    `images.shape` and `info`."""
    images = np.broadcast_to(np.float32(0), (len(source), *source.shape))
    return Dataset(images, np.zeros(0, np.int64), source.info)


def sample(source, k: int = 8) -> Dataset:
    """The first `k` training examples, decoded (the data checks look at them)."""
    imgs = [source[i] for i in range(min(k, len(source)))]
    x = np.stack([img for img, _ in imgs]).astype(np.float32) / 255
    return Dataset(x, np.asarray([lab for _, lab in imgs], np.int64),
                   source.info._replace(note=(source.info.note + "; " if source.info.note else "")
                                        + f"first {len(imgs)} examples, streamed"))


def _to_float(batch):
    """uint8 batch -> float32 in [0, 1] by the resident path's expression (float32 division:
    bit-identical to `load_dataset_arrays`)."""
    images, labels = batch
    return {"image": images.astype(np.float32) / 255, "label": labels}


def loader(order: records.EpochOrderSource, *, workers: int = 0, worker_buffer: int = 1):
    """A Grain `DataLoader` over `order`'s records (one record = one batch) in order, decoded in
    `workers` processes (0: in this process): {"image": float32 (B, H, W, C), "label": int64
    (B,)} per step. Its iterator checkpoints with `get_state` / `set_state`."""
    try:
        import grain
        from absl import flags
    except ImportError as e:
        raise DataError(f"the streamed input needs grain (pip install 'jaxvae[stream]'): {e}") from e
    if not flags.FLAGS.is_parsed():  # Grain reads absl flags; outside an absl app: defaults
        flags.FLAGS.mark_as_parsed()

    class ToFloat(grain.transforms.Map):  # pickled into the workers with cloudpickle
        def map(self, batch):
            return _to_float(batch)

    return grain.DataLoader(
        data_source=_InWorkers(order) if workers else order, sampler=grain.samplers.SequentialSampler(len(order)),
        operations=[ToFloat()], worker_count=int(workers), worker_buffer_size=int(worker_buffer),
        read_options=grain.ReadOptions(num_threads=1, prefetch_buffer_size=records.READ_AHEAD))


class _InWorkers:
    """`order` as Grain's worker processes get it: unpickling it in a worker makes that worker
    ignore SIGINT. A Ctrl-C reaches the whole process group; the trainer then finishes its epoch
    (`vaecommon.lifecycle.Interrupt`) with batches the workers must still decode, and closes
    them after (PyTorch's DataLoader workers ignore it likewise)."""

    def __init__(self, order):
        self.order = order

    def __len__(self) -> int:
        return len(self.order)

    def __getitem__(self, k):
        return self.order[k]

    def __repr__(self) -> str:  # Grain checks a restored state against the source's repr
        return repr(self.order)

    def __setstate__(self, state):
        self.__dict__.update(state)
        signal.signal(signal.SIGINT, signal.SIG_IGN)


def chunk_steps(steps_per_epoch: int, batch_bytes: int, limit: int = CHUNK_BYTES) -> int:
    """The largest divisor of `steps_per_epoch` whose chunk stays within `limit` bytes (every
    chunk then has one shape: one compilation)."""
    most = max(1, limit // max(1, batch_bytes))
    return max(d for d in range(1, steps_per_epoch + 1) if steps_per_epoch % d == 0 and d <= most)


class DevicePrefetch:
    """Chunks of `chunk` consecutive batches from a loader iterator, stacked to (chunk, B, H, W,
    C) float32 and put on the device by a background thread, up to `prefetch` ahead."""

    def __init__(self, it, *, chunk: int, chunks: int, prefetch: int = 2, sharding=None):
        self.queue: queue.Queue = queue.Queue(maxsize=max(1, prefetch))
        self.stopped = threading.Event()
        self.thread = threading.Thread(target=self._fill, args=(it, chunk, chunks, sharding),
                                       daemon=True)
        self.thread.start()

    def _put(self, item) -> bool:
        while not self.stopped.is_set():
            try:
                self.queue.put(item, timeout=0.1)
                return True
            except queue.Full:
                continue
        return False

    def _fill(self, it, chunk, chunks, sharding):
        try:
            for _ in range(chunks):
                xs = [np.asarray(next(it)["image"]) for _ in range(chunk)]  # own the memory
                x = jax.device_put(np.stack(xs), sharding)
                del xs
                if not self._put(x):
                    return
        except BaseException as e:  # handed to the consumer, raised there
            self._put(e)

    def __next__(self) -> jax.Array:
        item = self.queue.get()
        if isinstance(item, BaseException):
            raise item
        return item

    def close(self) -> None:
        self.stopped.set()
        self.thread.join(timeout=5)


class StreamedEpochs:
    """The streamed twin of `train_and_evaluate`'s resident epoch: `run_epoch(state, epoch, key,
    hyper, shared)` trains one epoch from the loader and returns what the resident epoch program
    returns, (state, per-step terms, all parameters finite).

    The loader starts at the first epoch asked for and runs to `epochs`; epochs must come in
    order. Close it (`close`) to stop the workers.
    """

    def __init__(self, trainer, source, *, epochs: int, workers: int | None = None,
                 prefetch: int = 2, chunk: int | None = None, sharding=None,
                 progress: Callable | None = None, all_finite: Callable):
        self.trainer, self.source, self.epochs = trainer, source, int(epochs)
        self.workers = default_workers() if workers is None else int(workers)
        self.prefetch, self.sharding = int(prefetch), sharding
        batch_bytes = trainer.cfg.batch_size * math.prod(source.shape) * 4
        self.chunk = chunk or chunk_steps(trainer.steps_per_epoch, batch_bytes)
        if trainer.steps_per_epoch % self.chunk:
            raise ValueError(f"chunk {self.chunk} does not divide the epoch's "
                             f"{trainer.steps_per_epoch} steps")
        self.next_epoch: int | None = None
        self.feed: DevicePrefetch | None = None
        self.it = None
        self.compile_seconds = 0.0  # of the last run_epoch (0 after the first)

        def one(state, x, key, hyper, shared):
            k, b = x.shape[:2]
            idx = jnp.arange(k * b, dtype=jnp.int32).reshape(k, b)
            state, terms = trainer.train_epoch(state, x.reshape(k * b, *x.shape[2:]), idx, key,
                                               hyper, progress=progress, shared=shared)
            return state, terms, all_finite(state.params)

        self.fn = xla_options.jit(one, donate_argnums=(0,))
        self.compiled = None

    def _start(self, epoch: int) -> None:
        order = records.EpochOrderSource(self.source, seed=self.trainer.cfg.seed,
                                         batch_size=self.trainer.cfg.batch_size,
                                         epochs=self.epochs, start_epoch=epoch)
        self.it = iter(loader(order, workers=self.workers))
        self.feed = DevicePrefetch(self.it, chunk=self.chunk, chunks=len(order) // self.chunk,
                                   prefetch=self.prefetch, sharding=self.sharding)
        self.next_epoch = epoch

    def run_epoch(self, state, epoch: int, key, hyper, shared=None, timings=None):
        if self.next_epoch is None:
            self._start(epoch)
        if epoch != self.next_epoch:
            raise ValueError(f"the streamed input is at epoch {self.next_epoch}, not {epoch}")
        self.compile_seconds = 0.0
        terms, finite = [], []
        for c in range(self.trainer.steps_per_epoch // self.chunk):
            x = next(self.feed)
            sh = None if shared is None else jax.tree.map(
                lambda a: a[c * self.chunk:(c + 1) * self.chunk], shared)
            if self.compiled is None:  # compiled ahead of the first call, timed on its own
                t = time.perf_counter()
                with timings("compile") if timings is not None else contextlib.nullcontext():
                    self.compiled = self.fn.lower(state, x, key, hyper, sh).compile()
                self.compile_seconds = time.perf_counter() - t
            state, t_c, f_c = self.compiled(state, x, key, hyper, sh)
            terms.append(t_c)
            finite.append(f_c)
        self.next_epoch = epoch + 1
        terms = jax.tree.map(lambda *a: jnp.concatenate(a), *terms)
        return state, terms, jnp.all(jnp.stack(finite))

    def close(self) -> None:
        if self.feed is not None:
            self.feed.close()
        self.feed, self.it = None, None
        _settle_shared_memory()


def _settle_shared_memory() -> None:
    """Free the shared memory of the batches already handed over before the interpreter exits:
    Grain unlinks it from a background thread, and segments still pending at exit make
    multiprocessing's resource tracker warn about "leaked shared_memory objects"."""
    gc.collect()  # the loader's iterator holds its last batches in reference cycles
    try:
        from grain._src.python.ipc.shared_memory_array import SharedMemoryArray
    except ImportError:  # another Grain layout: at worst the tracker's warning comes back
        return
    pool = getattr(SharedMemoryArray, "_del_thread_pool", None)
    if pool is not None:
        pool.apply(lambda: None)  # one thread, first in first out: every earlier unlink ran
