"""Train any preset with any objective, in JAX (default) or PyTorch, into a run folder.

    python scripts/train.py --model pytorch_examples --epochs 10 --workdir runs/pe
    python scripts/train.py --framework torch --model simple_vae --objective beta_vae --param beta=4
    python scripts/train.py --model pytorch_examples --sweep seed=0,1,2,3   # one vmapped program (JAX)
    python scripts/train.py --coordinator-address host0:1234 --num-processes 2 --process-id 0  # on each host
    torchrun --nproc-per-node 2 scripts/train.py --framework torch --model pytorch_examples  # torch, gloo
    python scripts/train.py --model manning_glasses_vae --dataset image_folder --data-dir photos/ --input stream

A run folder gets config.json, metrics.jsonl, checkpoints/, figures/ and summary.md; running the
same command again resumes from the latest checkpoint (--no-resume starts over).
"""

from __future__ import annotations

import argparse
import json
import os
import sys

from vaecommon.commands import _common as C
from vaecommon.cli import add_config_arguments, config_from_args, parse_value
from vaecommon.config import TrainConfig


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(description=__doc__, epilog=choices_text(params=False),
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--framework", choices=("jax", "torch"), default="jax", help="which twin trains")
    p.add_argument("--workdir", default=None, help="run folder (default: runs/<model>-<framework>-s<seed>)")
    p.add_argument("--no-resume", action="store_true",
                   help="start over: an existing run in WORKDIR is moved aside to "
                        "WORKDIR.replaced-<date-time> (nothing is deleted)")
    p.add_argument("--devices", type=int, default=1,
                   help="JAX: data-parallel over this many devices (batch sharded, params replicated)")
    g = p.add_argument_group(
        "multi-process (scripts/README.md#multi-process-training)",
        "One process per host (or per accelerator), each started with the same arguments; the "
        "mesh spans all their devices. Each flag defaults to its JAXVAE_* environment variable; "
        "--distributed alone leaves everything to JAX's cluster detection (SLURM, Open MPI, TPU). "
        "--framework torch: torch.distributed with gloo; under torchrun (RANK, WORLD_SIZE, "
        "MASTER_ADDR, MASTER_PORT set) no flag is needed.")
    g.add_argument("--coordinator-address", metavar="HOST:PORT",
                   help=f"process 0's address, reachable by all (${DIST_ENV['coordinator_address']})")
    g.add_argument("--num-processes", type=int, metavar="N",
                   help=f"how many processes train together (${DIST_ENV['num_processes']})")
    g.add_argument("--process-id", type=int, metavar="I",
                   help=f"this process's index, 0..N-1; 0 writes the run folder "
                        f"(${DIST_ENV['process_id']})")
    g.add_argument("--distributed", action="store_true",
                   help="start JAX's multi-process runtime even without the three flags above")
    p.add_argument("--sweep", action="append", metavar="NAME=V1,V2,...",
                   help="train one member per value (JAX: one vmapped program; torch: one after "
                        "the other), each into WORKDIR/member_<i>; NAME is seed, lr or a float "
                        "objective parameter (e.g. beta). Repeat to combine (zip).")
    p.add_argument("--input", choices=("auto", "resident", "stream"), default="auto",
                   help="JAX: where training batches come from. resident: the whole training set "
                        "on the device (fast); stream: decoded batch by batch by Grain worker "
                        "processes and prefetched (image folders and array_record folders larger "
                        "than memory); auto: stream those above 4 GiB as float32")
    p.add_argument("--workers", type=int, default=None,
                   help="JAX --input stream: Grain worker processes decoding batches "
                        "(default: min(4, CPUs); 0 decodes in the training process)")
    p.add_argument("--no-progress", action="store_true", help="no progress bar")
    p.add_argument("--list", action="store_true",
                   help="list the presets (source, parameters, output), the objectives with "
                        "their parameters, the likelihoods and the datasets, then exit")
    add_config_arguments(p)
    return p


# the environment variables of the multi-process flags (a flag given wins)
DIST_ENV = {"coordinator_address": "JAXVAE_COORDINATOR_ADDRESS",
            "num_processes": "JAXVAE_NUM_PROCESSES", "process_id": "JAXVAE_PROCESS_ID"}


def _dist_settings(args) -> tuple[dict, list[str]]:
    """The multi-process settings given (each flag, else its JAXVAE_* environment variable) and
    where each came from."""
    given, names = {}, []
    for k, env in DIST_ENV.items():
        value = getattr(args, k)
        if value is not None:
            names.append("--" + k.replace("_", "-"))
        elif os.environ.get(env, "").strip():
            names.append(env)
            value = os.environ[env].strip()
            if k != "coordinator_address":
                try:
                    value = int(value)
                except ValueError:
                    raise ValueError(f"{env}={value!r}: expected an integer") from None
        if value is not None:
            given[k] = value
    return given, names


# the environment torchrun sets for each process (--framework torch starts torch.distributed)
TORCHRUN_ENV = ("RANK", "WORLD_SIZE", "MASTER_ADDR", "MASTER_PORT")


def start_processes(args):
    """Start the twin's multi-process runtime when asked (flags, JAXVAE_*, --distributed, or
    for torch torchrun's environment), before anything else touches JAX. Returns the twin's
    `multiprocess` module (whose `shutdown` ends the runtime), None for a 1-process run. Raises
    ValueError (one line) for bad values."""
    given, names = _dist_settings(args)
    torchrun = args.framework == "torch" and all(os.environ.get(k) for k in TORCHRUN_ENV)
    if not given and not args.distributed and not torchrun:
        return None
    n, i = given.get("num_processes"), given.get("process_id")
    if n is not None and n < 1 or i is not None and (i < 0 or n is not None and i >= n):
        raise ValueError(f"--num-processes {n} --process-id {i}: the id must be in 0..N-1")
    from vaecommon.commands import twins

    # jax: jax.distributed.initialize; torch: torch.distributed.init_process_group("gloo")
    processes = twins.module(args.framework, "multiprocess")
    processes.initialize(**given)
    return processes


def choices_text(params: bool = True) -> str:
    """Every preset, objective, likelihood and dataset a run can use, one line each, from their
    tables (`vaecommon.presets`, `vaecommon.objectives`, `vaecommon.datasets`): `--help` ends
    with it, and `--list` prints it with each objective's parameters (`params`) added."""
    from vaecommon import objectives, presets
    from vaecommon.datasets import DATASET_SUMMARIES

    lines = ["presets (--model; parameters, decoder output, source):"]
    for name, spec in presets.PRESETS.items():
        lines.append(f"  {name:<21} {spec.params:>10,}  {spec.output:<6} {spec.source}")
    lines.append("objectives (--objective; default: the preset's):")
    for name, obj in objectives.OBJECTIVES.items():
        lines.append(f"  {name:<21} {obj.summary}")
        settable = [f"{q.name}={q.default!r}" for q in obj.params if q.settable]
        if params and settable:
            lines.append(f"  {'':<21}   --param " + ", ".join(settable))
    lines.append("likelihoods (--likelihood; default: the preset's):")
    for name, lik in objectives.LIKELIHOODS.items():
        settable = ", ".join(f"{q.name}={q.default!r}" for q in lik.params if q.settable)
        lines.append(f"  {name:<21} {lik.summary}" + (f"; --param {settable}" if settable else ""))
    lines.append(f"datasets (--dataset; default: {TrainConfig.dataset}):")
    lines += [f"  {name:<21} {text}" for name, text in DATASET_SUMMARIES.items()]
    if not params:
        lines.append("--list prints these lists with each objective's parameters and defaults.")
    return "\n".join(lines)


def parse_sweep(items) -> dict[str, list] | None:
    """--sweep NAME=V1,V2,... (repeatable) -> {NAME: [values]}, None without --sweep."""
    out = {}
    for item in items or []:
        if "=" not in item:
            raise ValueError(f"--sweep expects NAME=V1,V2,..., got {item!r}")
        k, v = item.split("=", 1)
        out[k.strip()] = [parse_value(s) for s in v.split(",") if s.strip()]
    return out or None


def main(argv=None) -> int:
    p = build_parser()
    args = p.parse_args(argv)
    if args.list:
        print(choices_text())
        return 0
    with C.user_errors(p):
        streaming = {}
        if args.framework == "jax":
            streaming = {"input": args.input, "workers": args.workers}
        elif args.input == "stream":
            raise ValueError("--input stream is JAX only: the torch trainer reads resident data")
        if args.workers is not None and args.workers < 0:
            raise ValueError(f"--workers {args.workers}: must be 0 or more")
        processes = start_processes(args)
        finished = False
        try:
            cfg = config_from_args(args)
            workdir = args.workdir or f"runs/{cfg.model}-{args.framework}-s{cfg.seed}"
            sweep = parse_sweep(args.sweep)
            from vaecommon.commands import twins

            result = twins.module(args.framework, "train").train_and_evaluate(
                cfg, workdir, resume=not args.no_resume, sweep=sweep, num_devices=args.devices,
                progress=not args.no_progress, **streaming)
            finished = True
        finally:
            if processes is not None:
                processes.shutdown(finished)
    brief = {k: v for k, v in result.items() if k not in ("kl_per_dim", "train", "members")}
    print(json.dumps({"workdir": workdir, **brief}, default=str, indent=1))
    if result.get("interrupted"):
        return 128 + int(result["interrupted"])  # 130 after SIGINT: `train && evaluate` stops
    return 0


if __name__ == "__main__":
    sys.exit(main())
