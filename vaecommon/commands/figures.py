"""Regenerate every figure of a run folder (JAX or torch) into <run>/figures/.

    python scripts/figures.py runs/pe
    python scripts/figures.py runs/pe --only samples --only architecture
    python scripts/figures.py runs/pe --step 1880 --from-class 4 --to-class 9

Figures (file names as the trainer writes them): loss curves, reconstructions, samples,
interpolation, latent scatter (PCA for a latent of more than 2 dimensions), latent manifold
(2-D latents only), KL per dimension, and the teaching diagrams drawn from the run's actual preset
and objective: the reparameterization trick, the loss composition and the architecture. The
model figures use the trainer's random streams, so a finished run's figures come out the same
as the ones training wrote. Loss curves and KL per dimension need metrics.jsonl (a converted run
folder has none; they are skipped with a note).
"""

from __future__ import annotations

import dataclasses
import sys

from vaecommon.commands import _common as C

FIGURES = ("loss_curves", "reconstructions", "samples", "interpolation", "latent_scatter",
           "latent_manifold", "kl_per_dim", "reparameterization", "loss_composition",
           "architecture")  # keys of vaecommon.run_figures.FIGURE_FILES


def build_parser():
    p = C.parser(__doc__, "figures")
    C.add_run(p)
    p.add_argument("--only", action="append", choices=FIGURES, default=None, metavar="NAME",
                   help="regenerate only this figure (repeatable); one of: " + ", ".join(FIGURES))
    p.add_argument("--from-class", type=int, default=3,
                   help="interpolation start: the first test image of this label (default: 3)")
    p.add_argument("--to-class", type=int, default=8,
                   help="interpolation end: the first test image of this label (default: 8)")
    p.add_argument("--samples", type=C.positive, default=64,
                   help="number of prior samples in samples.png (default: 64)")
    return p


def main(argv=None) -> int:
    p = build_parser()
    args = p.parse_args(argv)
    with C.user_errors(p):
        from vaecommon.commands import twins as _twins
        from vaecommon import runinfo
        from vaecommon.run_figures import FIGURE_FILES, write_run_figures
        from vaecommon.runs import RunFolder

        twin = _twins.twin_of(args.run)
        r = twin.restore(args.run, args.step)
        data = twin.load_run_dataset(r.cfg, "test")
        arrays = twin.run_figure_arrays(r, data, n_samples=args.samples,
                                        pair=(args.from_class, args.to_class))
        which = tuple(args.only or FIGURE_FILES)
        run = RunFolder(args.run)
        written = write_run_figures(run, r.spec, dataclasses.asdict(r.cfg), arrays, which=which)
        done = {k for k, v in FIGURE_FILES.items() if run.figures / v in set(written)}
        why = {"loss_curves": "no metrics.jsonl", "kl_per_dim": "no KL per dimension recorded",
               "samples": "an autoencoder has no prior", "reparameterization": "an autoencoder",
               "latent_manifold": f"the latent is {r.spec.latent_dim}-D, not 2-D",
               "interpolation": f"no test image of class {args.from_class} or {args.to_class}"}
        for k in sorted(set(which) - done):
            C.say(f"skipped {k}: {why.get(k, 'not applicable')}")
    print("\n".join(str(w) for w in written))
    return 0


if __name__ == "__main__":
    sys.exit(main())
