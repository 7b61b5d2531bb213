"""Test numbers of a run folder's checkpoint (JAX or torch): -ELBO, importance-sampled NLL,
bits/dim, KL per latent dimension and active units, printed as JSON.

    python scripts/evaluate.py runs/pe                          # latest checkpoint, k = 5000
    python scripts/evaluate.py runs/pe --nll-samples 1000 --json runs/pe/eval.json
    python scripts/evaluate.py runs/pe --nll-limit 1000        # NLL on the first 1000 only
    python scripts/evaluate.py runs/pe --dataset fashion_mnist --data-dir /usr/share/datasets

"loss" is the -ELBO in nats per test example ("neg_elbo" repeats it), "nll" the
importance-weighted bound of Burda et al. with k samples (tighter for larger k; it is chunked and
batched, so memory stays bounded at k = 5000). The evaluation reuses the trainer's random streams
at the checkpoint's epoch: on the run's own test data the numbers equal the run's last test record
(the NLL too when --nll-samples matches the run's final_nll_samples).
"""

from __future__ import annotations

import sys
from pathlib import Path

from vaecommon.commands import _common as C


def build_parser():
    p = C.parser(__doc__, "evaluate")
    C.add_run(p)
    p.add_argument("--nll-samples", type=C.non_negative, default=5000,
                   help="importance samples k for the test NLL (0: skip the NLL; default: 5000)")
    p.add_argument("--nll-limit", type=C.non_negative, default=None, metavar="N",
                   help="estimate the NLL on the first N test examples only (default: the run's "
                        "nll_limit; 0: all of them). -ELBO and the rest always use all")
    p.add_argument("--json", metavar="PATH", default=None,
                   help="also write the JSON result to PATH")
    C.add_data(p)
    return p


def main(argv=None) -> int:
    p = build_parser()
    args = p.parse_args(argv)
    with C.user_errors(p):
        from vaecommon.commands import twins as _twins
        from vaecommon import runinfo

        twin = _twins.twin_of(args.run)
        r = twin.restore(args.run, args.step)
        data = twin.load_run_dataset(r.cfg, "test", dataset=args.dataset, data_source=args.data_source,
                               data_dir=args.data_dir, limit=args.limit)
        C.say(f"evaluating {args.run} ({twin.FRAMEWORK}, {r.cfg.model}) at step {r.step} on "
              f"{len(data.labels)} {data.info.dataset} test examples, k = {args.nll_samples}")
        metrics = twin.evaluate_run(r, data, nll_samples=args.nll_samples, nll_limit=args.nll_limit)
        result = {"run": str(args.run), "framework": twin.FRAMEWORK, "model": r.cfg.model,
                  "step": r.step, "epoch": r.epoch, "data": data.info._asdict(),
                  "neg_elbo": metrics["loss"], **metrics}
        text = runinfo.dumps(result)
        if args.json:
            Path(args.json).parent.mkdir(parents=True, exist_ok=True)
            Path(args.json).write_text(text + "\n")
    print(text)
    return 0


if __name__ == "__main__":
    sys.exit(main())
