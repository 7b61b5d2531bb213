"""Multi-process data parallel in PyTorch: `torch.distributed` with the gloo backend (CPU), one
process per host or per core, all running the same `torchvae.train.train_and_evaluate`; started
by `torchrun` or by the command's `--coordinator-address/--num-processes/--process-id`.
Twin: `jaxvae/multiprocess.py` (the same public names where the engines agree).

- `initialize` calls `torch.distributed.init_process_group("gloo")` from the flags, else from
  torchrun's environment (RANK, WORLD_SIZE, MASTER_ADDR, MASTER_PORT).
- Each process takes its rows (`local_rows`) of every global batch, in the global order of
  `vaecommon.schedule.epoch_batches`. The noise (eps, dynamic binarization) is drawn for the
  whole global batch on every process and sliced (`local_batch`), so every process's
  generators advance as a 1-process run's do and its examples get a 1-process run's noise.
- `average_gradients` all-reduces the gradients after each backward pass (one flat buffer, like
  DDP's reducer): the sum of the processes' gradients of their local batch reductions, divided
  by the process count for a mean reduction, is the gradient of the global batch's loss.
  `DistributedDataParallel` itself is not used: it syncs only through its wrapper's forward,
  and the trainer's clamped forward and IWAE's extra decodes call the model's parts directly.
- `global_terms` all-reduces the logged terms (the global batch's loss); `gather_rows` gathers
  the posterior's (z, mean, logvar) of the global batch for the collapse diagnostics.
- `shutdown` destroys the process group when the run ends (left to interpreter exit, gloo
  sometimes aborted a process).
- Decisions that must agree (stop on a signal, an error on process 0) go through `any_process`
  and `max_process`.

Only objectives whose loss is a reduction of per-example values split over processes
(`PER_EXAMPLE_OBJECTIVES`); the others use batch statistics (MMD, covariance, minibatch TC,
the batch mean KL) and are refused, as are BatchNorm models (their statistics are per batch).
With one process every function here is a no-op or the identity.
"""

from __future__ import annotations

import contextlib
import datetime
import os

import torch
import torch.distributed as dist

__all__ = ["initialize", "shutdown", "is_lead", "count", "any_process", "max_process", "sync",
           "local_rows", "local_batch", "average_gradients", "global_terms", "gather_rows",
           "check_supported", "PER_EXAMPLE_OBJECTIVES"]

PER_EXAMPLE_OBJECTIVES = ("reconstruction", "elbo", "beta_vae", "kl_warmup", "cyclical", "iwae")
"""Objectives whose loss is `reduce_batch` of per-example values (the others couple a batch)."""

# objective terms that are hyperparameters (the same on every process), not batch reductions
_HYPER_TERMS = ("beta",)

# how long a process waits for the others (a dead peer ends the run after this)
TIMEOUT = datetime.timedelta(minutes=5)


def initialize(coordinator_address: str | None = None, num_processes: int | None = None,
               process_id: int | None = None) -> None:
    """`torch.distributed.init_process_group("gloo")`; each argument left None comes from
    torchrun's environment (MASTER_ADDR:MASTER_PORT, WORLD_SIZE, RANK).

    Raises:
      ValueError: a setting neither given nor in the environment, or gloo missing (one line).
    """
    if not (dist.is_available() and dist.is_gloo_available()):
        raise ValueError("multi-process torch training needs torch.distributed with the gloo "
                         "backend, which this torch build lacks")
    env = os.environ
    if coordinator_address is None and env.get("MASTER_ADDR") and env.get("MASTER_PORT"):
        coordinator_address = f"{env['MASTER_ADDR']}:{env['MASTER_PORT']}"
    if num_processes is None and env.get("WORLD_SIZE"):
        num_processes = int(env["WORLD_SIZE"])
    if process_id is None and env.get("RANK"):
        process_id = int(env["RANK"])
    missing = [name for name, v in (("--coordinator-address (or MASTER_ADDR/MASTER_PORT)",
                                     coordinator_address),
                                    ("--num-processes (or WORLD_SIZE)", num_processes),
                                    ("--process-id (or RANK)", process_id)) if v is None]
    if missing:
        raise ValueError(f"multi-process torch training needs {', '.join(missing)}; start it "
                         "with torchrun or give all three flags")
    host, _, port = coordinator_address.rpartition(":")
    if not host or not port.isdigit():
        raise ValueError(f"--coordinator-address {coordinator_address!r}: expected HOST:PORT")
    dist.init_process_group("gloo", init_method=f"tcp://{host}:{port}",
                            world_size=int(num_processes), rank=int(process_id), timeout=TIMEOUT)


def shutdown(finished: bool) -> None:
    """Destroy the process group (no-op without one); the command calls it when the run ends.

    Left to interpreter exit, gloo's threads are torn down during static destruction, and a
    process sometimes aborted after a successful run ("terminate called without an active
    exception", SIGABRT; measured: 5 of 55 two-process runs, 0 of 40 with this call).
    `finished`: every process reached the end of the run, so they first meet at a barrier (no
    process closes its connections while another still reads from them). After an error a peer
    may be gone: no barrier, and a failure to destroy is ignored (the run's error is the news).
    """
    if not (dist.is_available() and dist.is_initialized()):
        return
    if finished:
        sync("torchvae: shutdown")
        dist.destroy_process_group()
        return
    with contextlib.suppress(Exception):
        dist.destroy_process_group()


@contextlib.contextmanager
def _collective(name: str):
    """A failed collective (a peer died or hung) as one ConnectionError line, not a traceback."""
    try:
        yield
    except RuntimeError as e:  # gloo's errors (DistBackendError is a RuntimeError)
        first = str(e).strip().splitlines()[0] if str(e).strip() else type(e).__name__
        raise ConnectionError(f"process {dist.get_rank()}: {name} across processes failed "
                              f"({first}); another process probably died: rerun all of them "
                              "to resume") from None


def count() -> int:
    """The number of processes (1 without `initialize`)."""
    return dist.get_world_size() if dist.is_available() and dist.is_initialized() else 1


def is_lead() -> bool:
    """Process 0: the one that writes the run folder's metrics, figures, config, summary and
    checkpoints (the other processes load them on resume)."""
    return count() == 1 or dist.get_rank() == 0


def max_process(value: int) -> int:
    """The largest `value` over the processes, on every process (a collective)."""
    if count() == 1:
        return int(value)
    t = torch.tensor([int(value)], dtype=torch.int64)
    with _collective("max_process"):
        dist.all_reduce(t, op=dist.ReduceOp.MAX)
    return int(t)


def any_process(flag: bool) -> bool:
    """True on every process when `flag` is True on any (a collective: all must call it)."""
    return max_process(int(bool(flag))) > 0


def sync(name: str) -> None:
    """A barrier of all processes (no-op with one); `name` says which, for a reader."""
    if count() > 1:
        with _collective(f"the barrier {name!r}"):
            dist.barrier()


def local_rows(batch: int) -> slice:
    """This process's rows of a global batch of `batch` examples: the r-th of `count()` equal
    contiguous blocks (the batch must split evenly)."""
    n = count()
    if batch % n:
        raise ValueError(f"{n} processes: the batch ({batch}) must split evenly over them")
    r = 0 if n == 1 else dist.get_rank()
    return slice(r * batch // n, (r + 1) * batch // n)


def local_batch(x: torch.Tensor, eps: torch.Tensor, extra: torch.Tensor | None, rows: slice):
    """(x, eps, extra) of the global batch -> this process's rows. `extra` is IWAE's (k, B, D)
    noise (batch axis 1); the objectives with other extra noise are refused by
    `check_supported`."""
    return x[rows], eps[rows], None if extra is None else extra[:, rows]


def average_gradients(params, reduction: str) -> None:
    """All-reduce the gradients of `params` in place (one flat buffer): their sum over the
    processes, divided by the process count for reduction "mean" (each process's loss is then
    the mean of its B / n rows, and the global mean is their average)."""
    n = count()
    if n == 1:
        return
    grads = [p.grad for p in params if p.grad is not None]
    flat = torch.cat([g.reshape(-1) for g in grads])
    with _collective("the gradient all-reduce"):
        dist.all_reduce(flat, op=dist.ReduceOp.SUM)
    if reduction == "mean":
        flat /= n
    offset = 0
    for g in grads:
        g.copy_(flat[offset: offset + g.numel()].view_as(g))
        offset += g.numel()


def global_terms(terms: dict[str, torch.Tensor], reduction: str) -> dict[str, torch.Tensor]:
    """The scalar objective terms of the global batch from each process's (detached; the
    hyperparameter terms, equal everywhere, pass through)."""
    n = count()
    if n == 1:
        return terms
    names = [k for k in terms if k not in _HYPER_TERMS]
    flat = torch.stack([terms[k].detach().reshape(()).float() for k in names])
    with _collective("the loss all-reduce"):
        dist.all_reduce(flat, op=dist.ReduceOp.SUM)
    if reduction == "mean":
        flat /= n
    return {**terms, **dict(zip(names, flat.unbind()))}


def gather_rows(*tensors: torch.Tensor) -> tuple[torch.Tensor, ...]:
    """Each (B / n, ...) tensor -> the global batch's (B, ...) in process order (detached)."""
    if count() == 1:
        return tuple(t.detach() for t in tensors)
    out = []
    for t in tensors:
        parts = [torch.empty_like(t) for _ in range(count())]
        with _collective("the posterior all-gather"):
            dist.all_gather(parts, t.detach().contiguous())
        out.append(torch.cat(parts))
    return tuple(out)


def check_supported(cfg, model, members: int) -> None:
    """Raise ValueError (one line) for a multi-process run this module cannot split exactly."""
    n = count()
    if n == 1:
        return
    if members > 1:
        raise ValueError(f"{n} processes: a sweep runs in one process")
    if cfg.objective not in PER_EXAMPLE_OBJECTIVES:
        raise ValueError(f"{n} processes: objective {cfg.objective!r} uses batch statistics, "
                         "which do not split over processes; multi-process torch training "
                         f"takes {', '.join(PER_EXAMPLE_OBJECTIVES)} (JAX takes all)")
    if any(isinstance(m, torch.nn.modules.batchnorm._BatchNorm) for m in model.modules()):
        raise ValueError(f"{n} processes: model {cfg.model!r} has BatchNorm, whose batch "
                         "statistics do not split over processes (JAX takes it)")
    local_rows(cfg.batch_size)
