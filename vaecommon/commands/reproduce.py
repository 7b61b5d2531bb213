"""Reproduce the results table: test -ELBO and importance-sampled NLL per preset, framework, seed.

    python scripts/reproduce.py --dataset mnist5k --out runs/repro5k
    python scripts/reproduce.py --dataset fashion_mnist --presets pytorch_examples --seeds 0 1 2
    python scripts/reproduce.py --dataset mnist --data-dir ~/data     # wherever MNIST is reachable

Each (preset, framework, seed) trains for the source's epoch count (or --epochs) with the source's
settings into <out>/<dataset>/<preset>-<framework>-s<seed>, then the table (mean +- std over seeds)
is printed and written to <out>/<dataset>/results.md, beside the sources' own reported numbers.
Existing finished runs are reused (delete a run folder to redo it).

    python scripts/reproduce.py --collect --out runs/repro    # the results table of scripts/README.md

`--collect` trains nothing: it gathers every finished run under <out> (all datasets) into one
table, each row with the command that regenerates it.
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
from pathlib import Path

from vaecommon.objectives import nll_meaning_of
from vaecommon import runs
from vaecommon.config import TrainConfig

PRESETS = ("pytorch_examples", "flax_examples", "pytorch_mnist_vae", "simple_vae")

# What the sources report (nats per example on MNIST; not directly comparable to other data).
PEER = {
    "pytorch_examples": "106.66 at epoch 7, ~105.6 at epoch 10 (test loss, continuous MNIST)",
    "flax_examples": "~104 after 10 epochs (test loss, binarized MNIST)",
    "pytorch_mnist_vae": "138.40 at epoch 50 (test loss, 2-D latent)",
    "simple_vae": "not reported (teaching notebook)",
}
IWAE_PAPER = "IWAE paper (Burda et al. 2016): VAE NLL 86.76, one stochastic layer, k=5000"


def run_one(preset, framework, seed, args) -> dict:
    cfg = TrainConfig(model=preset, seed=seed, dataset=args.dataset, data_dir=args.data_dir, init=args.init,
                      epochs=args.epochs, final_nll_samples=args.nll_samples, nll_limit=args.nll_limit,
                      eval_every=0, checkpoint_every=5, keep_checkpoints=1)
    workdir = Path(args.out) / args.dataset / f"{preset}-{framework}-{args.init}init-s{seed}"
    finished = _finished(workdir)
    if finished is not None:
        return {**finished["test"], "wall_s": None}
    from vaecommon.commands import twins

    train_and_evaluate = twins.module(framework, "train").train_and_evaluate
    print(f"[reproduce] {preset} {framework} seed {seed} -> {workdir}", file=sys.stderr)
    # an interrupted run continues from its last checkpoint (every 5 epochs, and on SIGINT/SIGTERM)
    res = train_and_evaluate(cfg, workdir, resume=True, progress=not args.no_progress)
    if "nll" not in res:  # stopped by a signal before its last epoch: stop here, not at the next run
        raise SystemExit(f"[reproduce] {workdir} stopped before its last epoch; "
                         "run the same command again to resume it")
    return res


def _ms(values) -> str:
    if not values:
        return "-"
    if len(values) == 1:
        return f"{values[0]:.2f}"
    return f"{statistics.mean(values):.2f} ± {statistics.stdev(values):.2f}"


def table(results: dict, args) -> str:
    lines = [f"Dataset: `{args.dataset}`; init `{args.init}`; seeds {list(args.seeds)}; NLL with k={args.nll_samples}"
             + (f" on the first {args.nll_limit} test examples" if args.nll_limit else "")
             + "; nats per example (mean ± std over seeds).", "",
             "| preset | epochs | framework | test -ELBO | test NLL (IS) | sources report |",
             "|---|---|---|---|---|---|"]
    for (preset, fw), rs in results.items():
        lines.append(f"| {preset} | {rs[0]['epoch']} | {fw} | {_ms([r['loss'] for r in rs])} | "
                     f"{_ms([r['nll'] for r in rs if 'nll' in r])} | {PEER[preset]} |")
    lines += ["", f"Reference point for NLL: {IWAE_PAPER}.", ""]
    return "\n".join(lines)


def _finished(workdir: Path) -> dict | None:
    """(config record, final test record) of a run folder whose last epoch has its NLL, else None."""
    if not (workdir / "metrics.jsonl").exists() or not (workdir / "config.json").exists():
        return None
    tests = [r for r in runs.read_metrics(workdir / "metrics.jsonl") if r["type"] == "test"]
    record = json.loads((workdir / "config.json").read_text())
    if not tests or tests[-1]["epoch"] != record["config"]["epochs"] or "nll" not in tests[-1]:
        return None
    return {"record": record, "test": tests[-1]}


def command_for(record: dict, seeds: list[int]) -> str:
    """The reproduce.py command line that trains exactly this group of runs."""
    from vaecommon.config import resolve

    cfg = record["config"]
    parts = ["python scripts/reproduce.py", f"--dataset {cfg['dataset']}", f"--presets {cfg['model']}",
             f"--frameworks {record['framework']}"]
    if cfg["init"] != "default":
        parts.append(f"--init {cfg['init']}")
    parts.append("--seeds " + " ".join(map(str, seeds)))
    if cfg["epochs"] != resolve(TrainConfig(model=cfg["model"])).epochs:
        parts.append(f"--epochs {cfg['epochs']}")
    if cfg["final_nll_samples"] != 5000:
        parts.append(f"--nll-samples {cfg['final_nll_samples']}")
    if cfg["nll_limit"]:
        parts.append(f"--nll-limit {cfg['nll_limit']}")
    if cfg["data_dir"]:
        parts.append("--data-dir DIR")
    return " ".join(parts)


def collect(out: str | Path) -> str:
    """The Markdown results table of every finished run under `out`, grouped over seeds."""
    groups: dict[tuple, list[dict]] = {}
    for workdir in sorted(Path(out).glob("*/*-s*")):
        run = _finished(workdir)
        if run is None:
            continue
        cfg, t = run["record"]["config"], run["test"]
        key = (cfg["dataset"], cfg["model"], run["record"]["framework"], cfg["init"], cfg["epochs"],
               t.get("nll_samples"), t.get("nll_examples"))
        groups.setdefault(key, []).append(run)
    if not groups:
        raise SystemExit(f"error: no finished runs under {out} (run without --collect first)")
    lines = ["| data | preset | epochs | framework (init) | seeds | test -ELBO | test NLL (k, examples) "
             "| sources report (MNIST) | regenerate |", "|---|---|---|---|---|---|---|---|---|"]
    notes: dict[str, str] = {}
    for (ds, model, fw, init, epochs, k, n), rs in groups.items():
        seeds = sorted(r["record"]["config"]["seed"] for r in rs)
        is_likelihood, meaning = nll_meaning_of(rs[0]["record"]["config"])
        mark = "" if is_likelihood else notes.setdefault(meaning, "\u2020" * (len(notes) + 1))
        lines.append(
            f"| {ds} | {model} | {epochs} | {fw} ({init}) | {len(rs)} | "
            f"{_ms([r['test']['loss'] for r in rs])} | {_ms([r['test']['nll'] for r in rs])}{mark} "
            f"(k={k}, {n}) | {PEER[model]} | `{command_for(rs[0]['record'], seeds)}` |")
    footnotes = [f"{mark} {meaning}: not comparable with a published binarized-data NLL."
                 for meaning, mark in notes.items()]
    return "\n".join(lines + [""] + footnotes + ["", f"Reference point for NLL: {IWAE_PAPER}.", ""])


def build_parser():
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--dataset", default="mnist5k", choices=("mnist5k", "fashion_mnist", "mnist"))
    p.add_argument("--data-dir", default=None, help="IDX folder for mnist / fashion_mnist")
    p.add_argument("--presets", nargs="*", default=list(PRESETS), choices=PRESETS)
    p.add_argument("--frameworks", nargs="*", default=["jax", "torch"], choices=("jax", "torch"))
    p.add_argument("--seeds", nargs="*", type=int, default=[0, 1, 2])
    p.add_argument("--epochs", type=int, default=None, help="override the sources' epoch counts")
    p.add_argument("--nll-samples", type=int, default=5000, help="importance samples k")
    p.add_argument("--nll-limit", type=int, default=None, help="NLL on the first N test examples")
    p.add_argument("--init", default="default", choices=("default", "torch"),
                   help="parameter init of the JAX models (torch: PyTorch's, for like-for-like curves)")
    p.add_argument("--out", default="runs/repro")
    p.add_argument("--no-progress", action="store_true")
    p.add_argument("--collect", action="store_true",
                   help="train nothing: print the table of every finished run under --out")
    return p


def main(argv=None) -> int:
    args = build_parser().parse_args(argv)
    if args.collect:
        print(collect(args.out))
        return 0
    results: dict = {}
    for preset in args.presets:
        for fw in args.frameworks:
            results[(preset, fw)] = [run_one(preset, fw, s, args) for s in args.seeds]
    md = table(results, args)
    out = Path(args.out) / args.dataset
    out.mkdir(parents=True, exist_ok=True)
    (out / "results.md").write_text(md)
    print(md)
    return 0


if __name__ == "__main__":
    sys.exit(main())
