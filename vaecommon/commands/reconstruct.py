"""Originals above their reconstructions for a run folder's model (JAX or torch) -> PNG.

    python scripts/reconstruct.py runs/pe                      # one test digit per class
    python scripts/reconstruct.py runs/pe --n 16
    python scripts/reconstruct.py runs/pe --indices 0,7,42 --out recon.png

Reconstructions decode the posterior mean (no sampling noise), as the trainer's figure does.
Without --indices the first test example of each class comes first, then the following test
examples, up to --n. The default output is <run>/figures/reconstruct.png.
"""

from __future__ import annotations

import sys

import numpy as np

from vaecommon.commands import _common as C


def build_parser():
    p = C.parser(__doc__, "reconstruct")
    C.add_run(p)
    p.add_argument("--n", type=C.positive, default=10,
                   help="number of test images (default: 10; ignored with --indices)")
    p.add_argument("--indices", type=C.int_list, default=None, metavar="I,J,...",
                   help="comma-separated test-set indices to show instead")
    p.add_argument("--out", default=None, help="PNG to write (default: <run>/figures/reconstruct.png)")
    C.add_data(p, limit_help="read only the first N test examples (default: the run's limit_test)")
    return p


def pick(labels: np.ndarray, n: int) -> np.ndarray:
    """One index per class first (0, 1, ...), then the remaining indices in order, n in all."""
    from vaecommon.run_figures import pick_by_class

    first = [int(i) for i in pick_by_class(labels)][:n]
    rest = [i for i in range(len(labels)) if i not in set(first)]
    return np.asarray((first + rest)[:n], np.int64)


def main(argv=None) -> int:
    p = build_parser()
    args = p.parse_args(argv)
    with C.user_errors(p):
        from vaecommon.commands import twins as _twins
        from vaecommon import runinfo
        from vaecommon import image_plots

        twin = _twins.twin_of(args.run)
        model, cfg, spec = twin.load_run(args.run, args.step)
        data = twin.load_run_dataset(cfg, "test", dataset=args.dataset, data_source=args.data_source,
                               data_dir=args.data_dir, limit=args.limit)
        n = len(data.labels)
        idx = np.asarray(args.indices, np.int64) if args.indices else pick(data.labels, args.n)
        bad = [int(i) for i in idx if not 0 <= i < n]
        if bad or not idx.size:
            raise ValueError(f"--indices {bad or '(empty)'} out of range: the test set has {n} "
                             f"images (0..{n - 1})")
        originals = data.images[idx]
        out = image_plots.plot_reconstructions(
            originals, twin.reconstruct(model, originals),
            C.out_path(args.out, args.run, "reconstruct.png"), n=len(idx),
            title=C.wrap(f"{cfg.model} ({twin.FRAMEWORK}): test images and their reconstructions",
                         1.6 + len(idx) * 0.84 * originals.shape[2] / originals.shape[1]))
    print(out)
    return 0


if __name__ == "__main__":
    sys.exit(main())
