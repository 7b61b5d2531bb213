"""Train any preset with any objective, in JAX (default) or PyTorch, into a run folder.

    python scripts/train.py --model pytorch_examples --epochs 10 --workdir runs/pe
    python scripts/train.py --framework torch --model simple_vae --objective beta_vae --param beta=4
    python scripts/train.py --model pytorch_examples --sweep seed=0,1,2,3   # one vmapped program (JAX)

A run folder gets config.json, metrics.jsonl, checkpoints/, figures/ and summary.md; running the
same command again resumes from the latest checkpoint (--no-resume starts over).
"""

from __future__ import annotations

import argparse
import json
import sys

from vaecommon.cli import add_config_arguments, config_from_args, parse_value


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--framework", choices=("jax", "torch"), default="jax", help="which twin trains")
    p.add_argument("--workdir", default=None, help="run folder (default: runs/<model>-<framework>-s<seed>)")
    p.add_argument("--no-resume", action="store_true", help="start over even if checkpoints exist")
    p.add_argument("--devices", type=int, default=1,
                   help="JAX: data-parallel over this many devices (batch sharded, params replicated)")
    p.add_argument("--sweep", action="append", metavar="NAME=V1,V2,...",
                   help="JAX: train one member per value in one vmapped program; NAME is seed, lr "
                        "or a float objective parameter (e.g. beta). Repeat to combine (zip).")
    p.add_argument("--no-progress", action="store_true", help="no progress bar")
    add_config_arguments(p)
    return p


def parse_sweep(items):
    out = {}
    for item in items or []:
        if "=" not in item:
            raise SystemExit(f"error: --sweep expects NAME=V1,V2,..., got {item!r}")
        k, v = item.split("=", 1)
        out[k.strip()] = [parse_value(s) for s in v.split(",") if s.strip()]
    return out


def main(argv=None) -> int:
    args = build_parser().parse_args(argv)
    cfg = config_from_args(args)
    workdir = args.workdir or f"runs/{cfg.model}-{args.framework}-s{cfg.seed}"
    sweep = parse_sweep(args.sweep)
    if args.framework == "jax":
        from jaxvae import train
        if sweep:
            from jaxvae import sweep as sweep_lib
            result = sweep_lib.train_sweep(cfg, workdir, sweep, resume=not args.no_resume,
                                           progress=not args.no_progress)
        else:
            result = train.train_and_evaluate(cfg, workdir, resume=not args.no_resume,
                                              num_devices=args.devices, progress=not args.no_progress)
    else:
        if sweep or args.devices != 1:
            raise SystemExit("error: --sweep and --devices are JAX features; run torch members one by one")
        from torchvae import train
        result = train.train_and_evaluate(cfg, workdir, resume=not args.no_resume,
                                          progress=not args.no_progress)
    brief = {k: v for k, v in result.items() if k not in ("kl_per_dim", "train")}
    print(json.dumps({"workdir": workdir, **brief}, default=str, indent=1))
    return 0


if __name__ == "__main__":
    sys.exit(main())
