"""The life of a training run, written once for both trainers. Framework-free.

`jaxvae.train.train_and_evaluate` and `torchvae.train.train_and_evaluate` each keep what only
their framework can do (the step, the epoch, evaluation); everything around the epochs lives
here and is called by both at the same places:

- members: a run is a list of members (one for a plain run, N for a sweep), each with its own
  resolved config and run folder (`member_configs`, `member_folders`);
- ownership: one trainer per folder (`RunLock`, an OS-level lock), and a folder written by the
  other framework or for another preset is refused before anything in it is touched
  (`check_owner`); `--no-resume` moves an old run aside instead of mixing with it (`set_aside`);
- the records of an epoch (`epoch_records`), which raises `NonFiniteLossError` before anything
  non-finite is written or saved;
- the cadence of evaluation, checkpoints and figures (`due`);
- the post-processing of evaluation sums into test metrics (`test_metrics`);
- signals (`Interrupt`), progress (`Progress`), config.json (`run_record`) and summary.md
  (`write_summary`).
"""

from __future__ import annotations

import contextlib
import dataclasses
import errno
import math
import os
import signal
import sys
import time
from pathlib import Path
from typing import Any, Callable, Sequence

import numpy as np

from vaecommon.summary import ACTIVE_THRESHOLD, collapse_note

import numpy as np

from vaecommon import objectives, presets, runs
from vaecommon.config import TrainConfig, resolve

__all__ = [
    "NonFiniteLossError", "RunOwnershipError", "SWEEPABLE_CONFIG", "member_configs", "member_label", "objective_of", "newest_checkpoint",
    "member_folders", "RunLock", "check_owner", "warn_skipped", "set_aside", "run_record", "due",
    "epoch_records",
    "pad_batches", "test_metrics", "EarlyStopping", "Timings", "announce_nll", "check_finite", "records", "last_record", "versions", "Interrupt", "Progress", "finish",
    "write_sweep_summary", "result",
]

versions = runs.versions

SWEEPABLE_CONFIG = ("seed", "lr")
"""TrainConfig fields a sweep may vary (besides float objective parameters)."""


class NonFiniteLossError(FloatingPointError):
    """Training produced a non-finite loss or state; the message names the epoch and step and
    the newest checkpoint that is intact. Both frameworks raise this one type."""


class RunOwnershipError(ValueError):
    """The run folder belongs to another run: locked by a live trainer, or written by another
    framework or for another preset."""


# --------------------------------------------------------------------------------------------
# Members


def member_configs(cfg: TrainConfig, sweep: dict[str, list] | None = None, *,
                   framework: str | None = None) -> tuple[list[TrainConfig], list[str]]:
    """The resolved config of each member and the names of the swept objective parameters.

    A plain run (`sweep` None) is one member. Value lists of a sweep are zipped. Every member is
    validated (`vaecommon.config.validate`, with what `framework` supports) before anything else.

    Raises:
      ValueError: empty or unequal value lists, or a parameter that cannot be swept.
    """
    if sweep is None:
        return [resolve(cfg, framework=framework)], []
    if not sweep:
        raise ValueError("a sweep needs at least one NAME=V1,V2,... entry")
    lengths = {k: len(v) for k, v in sweep.items()}
    if len(set(lengths.values())) != 1 or 0 in lengths.values():
        raise ValueError(f"sweep value lists must be non-empty and of equal length, got {lengths}")
    obj_keys = [k for k in sweep if k not in SWEEPABLE_CONFIG]
    for k in obj_keys:
        if not all(isinstance(v, (int, float)) and not isinstance(v, bool) for v in sweep[k]):
            raise ValueError(
                f"cannot sweep {k!r}: only seed, lr and float objective parameters can be swept "
                f"inside one compiled program (got values {sweep[k]})")
    out = []
    for i in range(next(iter(lengths.values()))):
        changes: dict[str, Any] = {}
        params = dict(cfg.objective_params)
        for k, vals in sweep.items():
            if k == "seed":
                changes["seed"] = int(vals[i])
            elif k == "lr":
                changes["lr"] = float(vals[i])
            else:
                params[k] = float(vals[i])
        out.append(resolve(cfg.replace(objective_params=params, **changes), framework=framework))
    return out, obj_keys


def member_label(cfg: TrainConfig, sweep: dict[str, list]) -> str:
    """'seed=1,beta=4.0': what distinguishes a member in tables and legends."""
    return ",".join(f"{k}={getattr(cfg, k) if k in SWEEPABLE_CONFIG else cfg.objective_params[k]}"
                    for k in sweep)


def member_folders(workdir: str | Path, n: int) -> list[runs.RunFolder]:
    """The run folder of each member: `workdir` itself for one member, `workdir/member_<i>` for
    a sweep (every command that reads a run folder works on a member)."""
    if n == 1:
        return [runs.RunFolder(workdir)]
    return [runs.RunFolder(Path(workdir) / f"member_{i}") for i in range(n)]


# --------------------------------------------------------------------------------------------
# Ownership


class RunLock:
    """An exclusive OS-level lock (`fcntl.flock`) on `<folder>/.lock` while a trainer writes.

    The lock dies with its process (even after SIGKILL), so a stale lock never blocks a resume.
    Read-only commands do not take it.
    """

    def __init__(self, folder: str | Path):
        self.path = Path(folder) / ".lock"
        self._fd: int | None = None

    def __enter__(self) -> "RunLock":
        import fcntl

        self.path.parent.mkdir(parents=True, exist_ok=True)
        fd = os.open(self.path, os.O_RDWR | os.O_CREAT, 0o644)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except OSError as e:
            if e.errno not in (errno.EAGAIN, errno.EACCES):
                os.close(fd)
                raise
            holder = os.pread(fd, 64, 0).decode(errors="replace").strip() or "?"
            os.close(fd)
            raise RunOwnershipError(
                f"{self.path.parent} is being trained by another process (PID {holder}); wait "
                "for it, stop it, or use another --workdir") from None
        os.ftruncate(fd, 0)
        os.pwrite(fd, str(os.getpid()).encode(), 0)
        self._fd = fd
        return self

    def __exit__(self, *exc) -> None:
        if self._fd is not None:
            os.close(self._fd)  # closing releases the flock
            self._fd = None


def check_owner(folder: runs.RunFolder, cfg: TrainConfig, framework: str) -> None:
    """Refuse a folder that holds a run of another framework or preset (nothing is touched).

    Raises:
      RunOwnershipError: naming the folder's framework/preset and what to do.
    """
    if not folder.config_path.exists():
        return
    try:
        record = folder.read_config()
    except ValueError as e:
        raise RunOwnershipError(f"{e}; refusing to train into a folder whose config.json cannot "
                                "be read (move it away or use another --workdir)") from None
    fw = record.get("framework")
    model = (record.get("config") or {}).get("model")
    if fw != framework or model != cfg.model:
        raise RunOwnershipError(
            f"{folder.root} holds a {fw} run of preset {model!r}; this is a {framework} run of "
            f"{cfg.model!r}: use another --workdir (nothing in the folder was touched)")


def warn_skipped(lines: Sequence[str]) -> None:
    """One warning line per damaged checkpoint a resume skipped (it resumes from an older one)."""
    for line in lines:
        print(f"warning: {line}; resuming from the newest intact checkpoint instead", file=sys.stderr)


def set_aside(folder: runs.RunFolder) -> Path | None:
    """Move an existing run folder to `<name>.replaced-<YYYYmmdd-HHMMSS>` beside it (what
    `--no-resume` does: the old run stays on disk, invisible to the commands). Returns the new
    path, or None when there was nothing to move."""
    root = folder.root
    if not root.exists() or not any(root.iterdir()):
        return None
    stamp = time.strftime("%Y%m%d-%H%M%S")
    dest = root.with_name(f"{root.name}.replaced-{stamp}")
    i = 1
    while dest.exists():
        dest = root.with_name(f"{root.name}.replaced-{stamp}-{i}")
        i += 1
    os.replace(root, dest)
    return dest


def open_run(stack, workdir: str | Path, folders: Sequence[runs.RunFolder], *, resume: bool,
             lead: bool, package: str) -> tuple[list[runs.RunFolder], Exception | None]:
    """Start writing a run folder: on `--no-resume` move the old run aside (`set_aside`), take
    the `RunLock` (held until `stack` closes) and create the members' folders.

    Only the lead process (process 0) touches the disk; the others get `folders` back as given.
    An ordinary failure (the folder is locked, unwritable, ...) is returned, not raised, so a
    multi-process trainer can first tell every process to stop (`any_process(failed is not None)`)
    and then raise it.
    """
    folders = list(folders)
    if not lead:
        return folders, None
    try:
        if not resume:
            moved = set_aside(member_folders(workdir, 1)[0])
            if moved:
                print(f"[{package}] --no-resume: the old run was moved to {moved}", flush=True)
        stack.enter_context(RunLock(workdir))
        return [f.create() for f in folders], None
    except (ValueError, OSError) as e:
        return folders, e


# --------------------------------------------------------------------------------------------
# What a run trains


def objective_of(cfg: TrainConfig, steps_per_epoch: int) -> tuple[str, dict[str, Any]]:
    """(objective name, its parameters) a run trains with: the config's, with
    `kl_warmup_epochs` > 0 turned into kl_warmup's step parameters (derived, never written back).

    Raises:
      ValueError: a non-standard prior with an objective that assumes N(0, I) in closed form.
    """
    name, params = cfg.objective, dict(cfg.objective_params)
    if cfg.kl_warmup_epochs:
        name = "kl_warmup"
        params.update(warmup_steps=cfg.kl_warmup_epochs * steps_per_epoch,
                      epoch_steps=steps_per_epoch)
    prior = presets.get_spec(cfg.model, **cfg.model_overrides).prior
    if prior != "standard" and name not in objectives.PRIOR_OBJECTIVES:
        raise ValueError(f"objective {name!r} assumes the standard normal prior; with prior "
                         f"{prior!r} use one of {', '.join(objectives.PRIOR_OBJECTIVES)}")
    return name, params


# --------------------------------------------------------------------------------------------
# Records


def run_record(cfg: TrainConfig, spec, train_ds, test_ds, *, framework: str, devices: Sequence[str],
               versions: dict[str, str], sweep: dict[str, list] | None = None) -> dict[str, Any]:
    """The config.json record of a run folder (sweep members add their "sweep")."""
    record = {"config": dataclasses.asdict(cfg), "spec": dataclasses.asdict(spec),
              "framework": framework, "devices": list(devices),
              "data": {"train": train_ds.info._asdict(), "test": test_ds.info._asdict()},
              "versions": versions}
    if sweep:
        record["sweep"] = {k: [str(v) for v in vals] for k, vals in sweep.items()}
    return record


def due(every: int, epoch: int, final: bool) -> bool:
    """Whether a cadence of `every` epochs (0: only at the end) fires after 0-based `epoch`."""
    return final or bool(every and (epoch + 1) % every == 0)


def epoch_records(terms: dict[str, np.ndarray], *, step: int, epoch: int, batch_size: int,
                  seconds: float, last_checkpoint: str, every: int = 1
                  ) -> tuple[list[dict[str, Any]], dict[str, Any]]:
    """One finished epoch's metrics records: a "batch" record per step, then the "train" record
    (each term's mean over the epoch's batches, time, examples/s). Returns (records, train record).

    `terms` holds each logged term per step of the epoch (host arrays), `step` the step count at its
    end, `epoch` its 0-based index, `last_checkpoint` the newest finite checkpoint (for the error);
    a batch record is kept for the steps that are multiples of `every`. `SAMPLED_DIAGNOSTICS`
    appear only in the records of the steps `sampled_step` picks, and the train record averages
    them over those steps (and leaves them out when the epoch had none).

    Raises:
      NonFiniteLossError: naming the first non-finite step; nothing of the epoch is written.
    """
    terms = dict(terms)
    vectors = {k: np.asarray(terms.pop(k), np.float64) for k in DIAGNOSTIC_VECTORS if k in terms}
    loss = np.asarray(terms["loss"], np.float64)
    n = len(loss)
    first = step - n + 1
    if not np.all(np.isfinite(loss)):
        bad = int(np.argmax(~np.isfinite(loss)))
        raise NonFiniteLossError(
            f"non-finite loss at epoch {epoch + 1}, step {first + bad}; {last_checkpoint}. Try a "
            "lower --lr, --logvar-clamp 10, or --grad-clip 1.0")
    # a record's step counts the update it follows (1-based): step s + 1 ran at 0-based index s
    sampled = np.array([sampled_step(first + i - 1) for i in range(n)], bool)
    records = [{"type": "batch", "step": first + i, "epoch": epoch + (i + 1) / n,
                **{k: float(v[i]) for k, v in terms.items()
                   if k not in SAMPLED_DIAGNOSTICS or sampled[i]}} for i in range(n)
               if (first + i) % every == 0 or every == 1]
    train_record = {"type": "train", "epoch": epoch + 1, "step": step,
                    **{k: float(np.mean(v if k not in SAMPLED_DIAGNOSTICS else np.asarray(v)[sampled]))
                       for k, v in terms.items() if k not in SAMPLED_DIAGNOSTICS or sampled.any()},
                    "time_s": seconds, "examples_per_s": n * batch_size / max(seconds, 1e-9)}
    if vectors:
        train_record.update(units_summary(vectors, n * batch_size))
    return records + [train_record], train_record


DIAGNOSTIC_VECTORS = ("kl_per_dim", "mean_sum", "mean_sq")
"""Per-step (D,) terms of `losses.posterior_diagnostics`: summarised per epoch, not per batch."""

SAMPLED_DIAGNOSTICS = ("mutual_info", "total_correlation")
"""Per-step terms of `losses.posterior_diagnostics` that training computes only on the steps
`sampled_step` picks: their minibatch estimators cost B x B x D log-densities, which took 15% of
an MLP epoch when computed on every step (scripts/README.md, Benchmarks). On other steps the
trainers return 0 for them, and `epoch_records` leaves those steps out."""

SAMPLED_EVERY = 8
"""`SAMPLED_DIAGNOSTICS` are computed on the optimizer steps whose 0-based index (the step count
before the update) is a multiple of this: 1 in 8 of an epoch's batches."""


def sampled_step(step) -> bool:
    """Whether the training step with 0-based index `step` computes `SAMPLED_DIAGNOSTICS`
    (works on ints and on traced/array steps)."""
    return step % SAMPLED_EVERY == 0


def units_summary(vectors: dict[str, np.ndarray], n_examples: int) -> dict[str, Any]:
    """An epoch's latent units from its per-step diagnostics ((steps, D) each): the mean KL per
    dimension, Var_x E_q[z_d] over the epoch's examples, the active count and the inactive ones."""
    mean = vectors["mean_sum"].sum(0) / n_examples
    var = np.maximum(vectors["mean_sq"].sum(0) / n_examples - mean**2, 0.0)
    active = var > ACTIVE_THRESHOLD
    return {"kl_per_dim": [float(v) for v in vectors["kl_per_dim"].mean(0)],
            "active_units": int(active.sum()),
            "inactive_units": [int(i) for i in np.flatnonzero(~active)]}


def pad_batches(images: np.ndarray, batch: int) -> tuple[np.ndarray, np.ndarray]:
    """(xs (nb, batch, ...), masks (nb, batch)): `images` padded with zeros to whole batches and
    the mask that is 1 for real examples, so every example counts exactly once."""
    images = np.asarray(images)
    n = images.shape[0]
    nb = -(-n // batch)
    mask = np.zeros((nb * batch,), np.float32)
    mask[:n] = 1.0
    if nb * batch > n:
        images = np.concatenate([images, np.zeros((nb * batch - n,) + images.shape[1:], images.dtype)])
    return images.reshape((nb, batch) + images.shape[1:]), mask.reshape(nb, batch)


def test_metrics(sums: dict[str, Any], n: int) -> dict[str, Any]:
    """Test metrics from evaluation sums over `n` examples.

    `sums` holds "loss", "recon", "kl" (sums over examples), and (D,) sums "kl_per_dim",
    "mean_sum" and "mean_sq" of the per-dimension KL and of the posterior mean and its square.
    Returns loss (-ELBO, nats/example), recon, kl, kl_per_dim (list) and active_units (Burda et
    al.: Var_x E_q[z_d] > 0.01); with "full_batches" (the count of whole evaluation batches) and
    the sums of their "mutual_info" and "total_correlation" estimates, their means.
    """
    res: dict[str, Any] = {k: float(sums[k]) / n for k in ("loss", "recon", "kl")}
    res["kl_per_dim"] = [float(v) for v in np.asarray(sums["kl_per_dim"], np.float64) / n]
    mean = np.asarray(sums["mean_sum"], np.float64) / n
    with np.errstate(invalid="ignore", over="ignore"):  # a diverged run: inf - inf is reported
        var = np.asarray(sums["mean_sq"], np.float64) / n - mean**2  # below, not warned about
    res["active_units"] = int(np.sum(var > 0.01))
    if float(sums.get("full_batches", 0)) > 0:  # the minibatch I(x;z) / TC of the whole batches
        for k in ("mutual_info", "total_correlation"):
            res[k] = float(sums[k]) / float(sums["full_batches"])
    if not all(np.isfinite(res[k]) for k in ("loss", "recon", "kl")):
        res["nonfinite"] = True
    return res


def newest_checkpoint(managers) -> str:
    """The newest intact checkpoint of each member's manager, for the divergence messages
    (nothing non-finite is ever saved, so the newest one is finite)."""
    steps = [(m.latest_step(), m.directory) for m in managers if m.latest_step() is not None]
    if not steps:
        return "no checkpoint was saved before it (nothing non-finite is ever saved)"
    return "the last good checkpoint is intact: " + ", ".join(f"{d}/{s}" for s, d in steps)


def check_finite(ok: bool, what: str, epoch: int, step: int, newest_checkpoint: str) -> None:
    """The divergence guard beyond the loss: raise unless `what` (the parameters after an epoch,
    the test metrics) is finite, before anything of the epoch is saved.

    Raises:
      NonFiniteLossError: naming what, the epoch, the step and the newest intact checkpoint.
    """
    if not ok:
        raise NonFiniteLossError(
            f"non-finite {what} at epoch {epoch + 1}, step {step}; {newest_checkpoint}. Try a "
            "lower --lr, --logvar-clamp 10, or --grad-clip 1.0")


def records(folder: runs.RunFolder) -> list[dict[str, Any]]:
    """The folder's metrics records ([] before the first epoch)."""
    return folder.metrics() if folder.metrics_path.exists() else []


def last_record(folder: runs.RunFolder, kind: str) -> dict[str, Any]:
    """The last record of type `kind` in the folder's metrics.jsonl ({} if none)."""
    if not folder.metrics_path.exists():
        return {}
    recs = [r for r in folder.metrics() if r.get("type") == kind]
    return recs[-1] if recs else {}


def mean_and_stderr(values) -> tuple[float, float]:
    """(mean, standard error of the mean) of per-example values, in float64: the error bar of a
    test-set average such as the IS-NLL (sample standard deviation / sqrt(n); 0 for n = 1)."""
    v = np.asarray(values, np.float64).ravel()
    se = float(v.std(ddof=1) / math.sqrt(v.size)) if v.size > 1 else 0.0
    return float(v.mean()), se


class EarlyStopping:
    """Early stopping on the validation -ELBO, the VampPrior / Exemplar VAE code's rule.

    After each 1-based epoch e: a lower validation loss is the new best (its state is kept) and
    resets the count of bad epochs; otherwise the count grows, except that it is reset while
    e < `warmup_epochs`; training stops once the count exceeds `patience` (0: never).
    The state is a function of the validation records, so a resumed run rebuilds it exactly
    (`from_records`).
    """

    def __init__(self, patience: int, warmup_epochs: int = 0):
        self.patience, self.warmup_epochs = int(patience), int(warmup_epochs)
        self.best, self.best_epoch, self.bad, self.stopped = float("inf"), 0, 0, False
        self.stop_epoch = 0  # the epoch after which training stopped (0: not stopped)

    def update(self, epoch: int, loss: float) -> bool:
        """Record 1-based `epoch`'s validation loss; True when it is the new best."""
        if loss < self.best:
            self.best, self.best_epoch, self.bad = float(loss), int(epoch), 0
            return True
        self.bad += 1
        if epoch < self.warmup_epochs:
            self.bad = 0
        if self.patience and self.bad > self.patience:
            self.stopped, self.stop_epoch = True, int(epoch)
        return False

    def epochs_trained(self, last_train: dict) -> int | None:
        """Epochs this member trained: its stop epoch, or the run's last (a sweep's stopped
        members run on inside the shared program, but their results are not kept)."""
        return self.stop_epoch or last_train.get("epoch")

    @classmethod
    def from_records(cls, records: Sequence[dict], patience: int, warmup_epochs: int = 0
                     ) -> "EarlyStopping":
        stopper = cls(patience, warmup_epochs)
        for r in records:
            if r.get("type") == "validation":
                stopper.update(int(r["epoch"]), float(r["loss"]))
        return stopper


class Timings:
    """Seconds spent per phase of a run (compile, train, evaluation, nll, checkpoints, figures):
    `with timings("nll"): ...`. Shown in summary.md and the train command's final output."""

    PHASES = ("compile", "train", "evaluation", "nll", "checkpoints", "figures")

    def __init__(self):
        self.seconds = {k: 0.0 for k in self.PHASES}

    @contextlib.contextmanager
    def __call__(self, phase: str):
        t0 = time.perf_counter()
        try:
            yield
        finally:
            self.seconds[phase] = self.seconds.get(phase, 0.0) + time.perf_counter() - t0

    def excluding(self, outer: str, inner: str) -> None:
        """Report `inner` (measured inside `outer`) apart from it."""
        self.seconds[outer] -= self.seconds.get(inner, 0.0)


def announce_nll(bar: "Progress", k: int, n_test: int, nll_limit: int | None, final: bool) -> None:
    """Say that an importance-sampled NLL starts (the final one is often most of a short run)."""
    if k:
        n = min(n_test, nll_limit) if nll_limit else n_test
        bar.note(f"{'final ' if final else ''}test NLL: k={k} importance samples x {n} test images "
                 "(--final-nll-samples 0 skips it, --nll-limit N shrinks it)")


# --------------------------------------------------------------------------------------------
# Signals and progress


class Interrupt:
    """SIGINT/SIGTERM: finish the current epoch, checkpoint, exit (a second signal: at once).

    Installs its handlers only on the main thread (elsewhere a run cannot be signalled and the
    handlers are left alone). `signum` is the first signal received, for the exit status.
    """

    def __init__(self, label: str):
        self.label = label
        self.requested = False
        self.signum: int | None = None
        self._old: dict[int, Any] = {}

    def __enter__(self) -> "Interrupt":
        for sig in (signal.SIGINT, signal.SIGTERM):
            try:
                self._old[sig] = signal.signal(sig, self._handle)
            except ValueError:  # not the main thread
                pass
        return self

    def _handle(self, signum, frame) -> None:
        if self.requested:
            raise KeyboardInterrupt
        self.requested, self.signum = True, signum
        print(f"\n[{self.label}] signal {signum}: finishing the epoch, saving a checkpoint, then "
              "exiting (send again to stop at once)", file=sys.stderr)

    def __exit__(self, *exc) -> None:
        for sig, old in self._old.items():
            signal.signal(sig, old)


class Progress:
    """A tqdm bar over optimizer steps (disabled: every method is a no-op)."""

    def __init__(self, enabled: bool, *, total: int, initial: int):
        self.bar = None
        self.last = initial
        self._inactive: dict[int, int] = {}  # member -> inactive latent units last noted
        if enabled:
            from tqdm.auto import tqdm

            self.bar = tqdm(total=total, initial=initial, unit="step", dynamic_ncols=True,
                            mininterval=1.0, desc="train")

    def step(self, step, loss) -> None:
        """Advance to optimizer step `step` (arrays: a sweep's members share the step)."""
        if self.bar is None:
            return
        step = int(np.max(step))
        if step > self.last:
            self.bar.update(step - self.last)
            self.last = step
        self.bar.set_postfix(loss=f"{float(np.mean(loss)):.3f}", refresh=False)

    def epoch_done(self, epoch: int, trains: Sequence[dict], tests: Sequence[dict]) -> None:
        for i, t in enumerate(trains):  # a line when units collapse (or more of them do)
            inactive = len(t.get("kl_per_dim") or ()) - t.get("active_units", 0)
            if inactive > self._inactive.get(i, 0) and (note := collapse_note(t)):
                who = f"member {i}: " if len(trains) > 1 else ""
                self.note(f"epoch {epoch}: {who}{note}")
            self._inactive[i] = inactive
        if self.bar is None:
            return
        self.step(max(t["step"] for t in trains), [t["loss"] for t in trains])
        post = {"epoch": epoch, "loss": " ".join(f"{t['loss']:.3f}" for t in trains),
                "ex/s": f"{sum(t['examples_per_s'] for t in trains) / len(trains):.0f}"}
        if tests and all(t.get("epoch") == epoch for t in tests):
            post["test"] = " ".join(f"{t['loss']:.3f}" for t in tests)
        self.bar.set_postfix(post)

    def note(self, text: str) -> None:
        """A line above the bar (or on stderr without one)."""
        if self.bar is None:
            print(text, file=sys.stderr)
        else:
            self.bar.write(text, file=sys.stderr)

    def close(self) -> None:
        if self.bar is not None:
            self.bar.close()


# --------------------------------------------------------------------------------------------
# Summaries


def finish(folder: runs.RunFolder, cfg: TrainConfig, spec, data_info, train: dict, test: dict,
           wall_s: float, *, trained: bool, framework: str, versions: dict[str, str],
           figures: Callable[[], Any], seconds: dict[str, float] | None = None) -> None:
    """Complete a run folder whose last epoch is done; idempotent.

    After training (`trained`), writes summary.md (the figures of the final epoch are already
    written). A rerun of a finished run changes nothing, unless the run was killed after its last
    checkpoint and before its summary: then the figures and the summary are written now (the wall
    time is the sum of the recorded epoch times).
    """
    from vaecommon.summary import render_summary

    if not trained:
        if folder.summary_path.exists():
            return
        figures()
        wall_s = sum(r.get("time_s", 0.0) for r in folder.metrics() if r.get("type") == "train")
    folder.write_summary(render_summary(
        framework=framework, cfg=dataclasses.asdict(cfg), spec=dataclasses.asdict(spec),
        data=data_info._asdict(), train=train, test=test, wall_s=wall_s, versions=versions,
        seconds=seconds if trained else None))


def result(trains: Sequence[dict], tests: Sequence[dict], wall_s: float,
           signum: int | None, seconds: dict[str, float] | None = None) -> dict[str, Any]:
    """What `train_and_evaluate` returns: the (first) member's final test metrics with "train",
    "wall_s", "members" (a sweep) and "interrupted" (the signal that stopped the run)."""
    out = {"train": trains[0], **{k: v for k, v in tests[0].items() if k != "type"},
           "wall_s": wall_s}
    if seconds:
        out["seconds"] = {k: round(v, 2) for k, v in seconds.items()}
    if len(trains) > 1:
        out["members"] = [{"train": t, **te} for t, te in zip(trains, tests)]
    if signum is not None:
        out["interrupted"] = int(signum)
    return out


def write_sweep_summary(workdir: str | Path, cfgs: Sequence[TrainConfig], folders, sweep: dict,
                        wall_s: float, *, framework: str) -> None:
    """`<workdir>/summary.md` and `figures/sweep_curves.png` comparing a sweep's members."""
    from vaecommon import plots

    root = runs.RunFolder(workdir)
    member_runs = {f"member_{i} " + member_label(c, sweep): f.metrics()
                   for i, (c, f) in enumerate(zip(cfgs, folders))}
    plots.plot_sweep_curves(member_runs, root.figures / "sweep_curves.png")
    root.write_summary(f"# Sweep of `{cfgs[0].model}` ({len(cfgs)} members, {framework})\n\n"
                       f"wall time {wall_s:.1f} s\n\n{plots.sweep_table(member_runs)}\n")
