"""Sweeps: N members trained in ONE compiled program with `jax.vmap` (JAX only).

Members differ by seed (init, data order, eps), by learning rate, and/or by float objective
parameters (beta, capacity, ...). Each member gets its own run folder `<workdir>/member_<i>`
(config.json, metrics.jsonl, checkpoints, summary) exactly as a single run would, so every
command that reads a run folder works on a member; `<workdir>/sweep.md` and
`<workdir>/figures/sweep_*.png` compare them.

A member of a sweep computes what the same config trained alone computes (same data order and
keys): `jax.vmap` only batches the arithmetic. `sweep_test.py` checks this.
"""

from __future__ import annotations

import dataclasses
import sys
import time
from pathlib import Path
from typing import Any, Callable

import jax
import jax.numpy as jnp
import numpy as np

from jaxvae import checkpoint as ckpt_lib
from jaxvae import train as train_lib
from vaecommon import runs
from vaecommon.config import TrainConfig, check_resumable, resolve
from vaecommon.presets import get_spec
from vaecommon.schedule import epoch_batches

__all__ = ["member_configs", "train_sweep"]

SWEEPABLE_CONFIG = ("seed", "lr")


def member_configs(cfg: TrainConfig, sweep: dict[str, list]) -> tuple[list[TrainConfig], list[str]]:
    """Per-member configs of a sweep (value lists are zipped) and the swept objective params.

    Raises:
      ValueError: empty or unequal value lists, or a parameter that cannot be swept.
    """
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
                f"inside one compiled program (got values {sweep[k]})"
            )
    n = next(iter(lengths.values()))
    out = []
    for i in range(n):
        changes: dict[str, Any] = {}
        params = dict(cfg.objective_params)
        for k, vals in sweep.items():
            if k == "seed":
                changes["seed"] = int(vals[i])
            elif k == "lr":
                changes["lr"] = float(vals[i])
            else:
                params[k] = float(vals[i])
        out.append(resolve(cfg.replace(objective_params=params, **changes)))
    return out, obj_keys


def _stack(trees):
    return jax.tree.map(lambda *xs: jnp.stack(xs), *trees)


def _member(tree, i):
    return jax.tree.map(lambda x: x[i], tree)


def train_sweep(cfg: TrainConfig, workdir: str | Path, sweep: dict[str, list], *,
                resume: bool = True, progress: bool = True,
                on_epoch: Callable | None = None) -> dict[str, Any]:
    """Train all members of `sweep` together; returns {"members": [final test metrics, ...]}.

    Like `train.train_and_evaluate` for each member: rerunning resumes from the members' latest
    checkpoints (refused if a member's training config changed), SIGINT/SIGTERM finishes the epoch
    and checkpoints every member, and `on_epoch(epoch, stacked_state)` runs after each epoch.
    """
    from jaxvae import figures as jfig
    from vaecommon import plots

    cfgs, obj_keys = member_configs(cfg, sweep)
    base = cfgs[0]
    root_dir = runs.RunFolder(workdir).create()
    train_ds, test_ds = train_lib.load_data(base)
    spec = get_spec(base.model, **base.model_overrides)
    train_lib.check_data(base, spec, train_ds, test_ds)
    n = train_ds.images.shape[0]
    trainer = train_lib.Trainer.create(base, n, sweep_keys=obj_keys)
    roots = [jax.random.key(c.seed) for c in cfgs]
    folders = [runs.RunFolder(Path(workdir) / f"member_{i}").create() for i in range(len(cfgs))]
    managers = [ckpt_lib.CheckpointManager(f.checkpoints, keep=c.keep_checkpoints)
                for f, c in zip(folders, cfgs)]

    states = [trainer.init_state(r) for r in roots]
    start_epoch = 0
    if resume and all(m.latest_step() is not None for m in managers):
        restored = [m.restore(s) for m, s in zip(managers, states)]
        epochs = {int(meta["epoch"]) for _, meta in restored}
        if len(epochs) != 1:
            raise ValueError(f"sweep members in {workdir} were checkpointed at different epochs {epochs}")
        for f, c, (_, meta) in zip(folders, cfgs, restored):
            check_resumable(meta.get("config"), c, str(f.checkpoints))
        states = [s for s, _ in restored]
        start_epoch = epochs.pop()
        for f, s in zip(folders, states):
            f.truncate_metrics(int(s.step))
        print(f"[jaxvae] resumed sweep {workdir} at epoch {start_epoch}", file=sys.stderr)
    for f, c in zip(folders, cfgs):
        f.write_config(train_lib._run_record(
            c, spec, train_ds, test_ds, sweep={k: [str(v) for v in vals] for k, vals in sweep.items()}))
        if start_epoch == 0 and f.metrics_path.exists():
            f.metrics_path.unlink()  # a fresh start must not mix with an old run's records

    state = _stack(states)
    hyper = {"lr": jnp.asarray([c.lr for c in cfgs], jnp.float32)}
    for k in obj_keys:
        hyper[k] = jnp.asarray([c.objective_params[k] for c in cfgs], jnp.float32)
    keys = jnp.stack(roots)
    images = jnp.asarray(train_ds.images)

    @jax.jit
    def epoch_fn(state, idx, keys, hyper):
        run_one = lambda s, i, k, h: trainer.train_epoch(s, images, i, k, h)  # noqa: E731
        return jax.vmap(run_one)(state, idx, keys, hyper)

    from tqdm.auto import tqdm

    bar = tqdm(total=base.epochs, initial=start_epoch, unit="epoch", desc=f"sweep x{len(cfgs)}",
               disable=not progress)
    # each member's own config (and lr) for its evaluation and figures
    member_trainers = [dataclasses.replace(trainer, cfg=c, hyper={**trainer.hyper, "lr": c.lr})
                       for c in cfgs]
    results: list[dict[str, Any]] = [{} for _ in cfgs]
    t_start = time.time()
    with train_lib._Interrupt() as interrupt:
        for epoch in range(start_epoch, base.epochs):
            t0 = time.time()
            idx = jnp.asarray(np.stack([epoch_batches(c.seed, epoch, n, c.batch_size) for c in cfgs]))
            state, terms = epoch_fn(state, idx, keys, hyper)
            terms = jax.device_get(terms)
            dt = time.time() - t0
            final = epoch + 1 == base.epochs
            member_records = [
                train_lib._epoch_records({k: v[i] for k, v in terms.items()}, step=int(state.step[i]),
                                        epoch=epoch, batch_size=c.batch_size, seconds=dt,
                                        checkpoints=f.checkpoints)
                for i, (c, f) in enumerate(zip(cfgs, folders))
            ]  # every member is checked before any record is written
            for i, (c, f, mt, (recs, tr)) in enumerate(zip(cfgs, folders, member_trainers, member_records)):
                s_i = _member(state, i)
                if (c.eval_every and (epoch + 1) % c.eval_every == 0) or final:
                    te = {"type": "test", "epoch": epoch + 1, "step": tr["step"],
                          **train_lib.evaluate(mt, s_i.params, s_i.rest, test_ds.images, roots[i],
                                               nll_samples=c.final_nll_samples if final else c.nll_samples,
                                               epoch=epoch + 1)}
                    recs.append(te)
                    results[i] = te
                f.append_metrics(recs)
                if (c.checkpoint_every and (epoch + 1) % c.checkpoint_every == 0) or final \
                        or interrupt.requested:
                    managers[i].save(s_i, epoch=epoch + 1, root_key=roots[i], config=dataclasses.asdict(c))
                if final:
                    jfig.write_run_figures(f, mt, s_i, test_ds, roots[i])
            bar.update(1)
            bar.set_postfix(loss=" ".join(f"{tr['loss']:.2f}" for _, tr in member_records))
            if on_epoch is not None:
                on_epoch(epoch + 1, state)
            if interrupt.requested:
                print(f"[jaxvae] sweep stopped after epoch {epoch + 1}; resume with the same command",
                      file=sys.stderr)
                break
    bar.close()
    wall = time.time() - t_start
    member_runs = {f"member_{i} " + _label(c, sweep): f.metrics() for i, (c, f) in enumerate(zip(cfgs, folders))}
    plots.plot_sweep_curves(member_runs, root_dir.figures / "sweep_curves.png")
    table = plots.sweep_table(member_runs)
    root_dir.write_summary(f"# Sweep of `{base.model}` ({len(cfgs)} members, one vmapped program)\n\n"
                           f"wall time {wall:.1f} s\n\n{table}\n")
    print(f"[jaxvae] sweep of {len(cfgs)} members done in {wall:.1f} s -> {workdir}", file=sys.stderr)
    return {"members": results, "wall_s": wall}


def _label(c: TrainConfig, sweep: dict) -> str:
    parts = []
    for k in sweep:
        v = getattr(c, k) if k in SWEEPABLE_CONFIG else c.objective_params[k]
        parts.append(f"{k}={v}")
    return ",".join(parts)
