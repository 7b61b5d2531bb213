"""Several runs on shared axes (e.g. a torch run and a JAX run of one preset) and a Markdown table
of their final numbers.

    python scripts/compare.py runs/pe-jax runs/pe-torch
    python scripts/compare.py runs/a runs/b runs/c --labels "lr 1e-3,lr 3e-4,lr 1e-4" \
        --out compare.png --table compare.md

The figure has three panels (loss, reconstruction term, KL per example against epochs; train
solid, test dashed; one colour per run); the table lists each run's last train and test record:
epochs, train loss, test -ELBO, recon, KL, NLL (with its k) and active units. The table is
printed and, with --table, written. Runs need metrics.jsonl (a converted run folder has none).
"""

from __future__ import annotations

import sys
from pathlib import Path

from vaecommon.commands import _common as C


def build_parser():
    p = C.parser(__doc__, "compare")
    p.add_argument("runs", nargs="+", help="run folders (JAX or torch), in legend order")
    p.add_argument("--labels", default=None, metavar="A,B,...",
                   help="comma-separated legend labels, one per run (default: '<folder> "
                        "(<model>, <framework>)')")
    p.add_argument("--out", default="compare.png", help="PNG to write (default: compare.png)")
    p.add_argument("--table", metavar="PATH", default=None,
                   help="also write the Markdown table to PATH")
    p.add_argument("--title", default=None, help="figure title (default: names the runs)")
    return p


def main(argv=None) -> int:
    p = build_parser()
    args = p.parse_args(argv)
    labels = args.labels.split(",") if args.labels else None
    if labels is not None and len(labels) != len(args.runs):
        p.error(f"--labels has {len(labels)} entries for {len(args.runs)} runs")
    with C.user_errors(p):
        from vaecommon.commands import twins as _twins
        from vaecommon import runinfo
        from vaecommon import plots
        from vaecommon.runs import read_metrics

        runs = {}
        for i, run in enumerate(args.runs):
            runinfo.read_run_config(run)  # a clear error for a non-run folder
            if not (Path(run) / "metrics.jsonl").exists():
                raise runinfo.RunFolderError(
                    f"{run} has no metrics.jsonl (a run folder made by convert has no training "
                    "record); compare needs trained runs")
            label = labels[i] if labels else runinfo.run_label(run)
            if label in runs:
                label = f"{label} [{i + 1}]"
            runs[label] = read_metrics(run)
        out = plots.plot_compare_runs(runs, args.out, title=args.title)
        table = plots.sweep_table(runs)
        if args.table:
            Path(args.table).parent.mkdir(parents=True, exist_ok=True)
            Path(args.table).write_text(table)
    print(table, end="")
    C.say(f"wrote {out}" + (f" and {args.table}" if args.table else ""))
    return 0


if __name__ == "__main__":
    sys.exit(main())
