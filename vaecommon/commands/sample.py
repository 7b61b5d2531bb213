"""Samples from the prior of a run folder's VAE (JAX or torch): decode z ~ N(0, I) into a PNG grid.

    python scripts/sample.py runs/pe                       # 64 samples, seed 0
    python scripts/sample.py runs/pe --n 100 --nrow 10 --seed 3 --out samples.png

The default output is <run>/figures/samples_seed<SEED>.png (the trainer's own samples.png is left
alone). The same seed draws different latents in JAX (jax.random.key) and torch
(torch.Generator), so a JAX and a torch run give different grids for one seed.
"""

from __future__ import annotations

import math
import sys

from vaecommon.commands import _common as C


def build_parser():
    p = C.parser(__doc__, "sample")
    C.add_run(p)
    p.add_argument("--n", type=C.positive, default=64, help="number of samples (default: 64)")
    p.add_argument("--nrow", type=C.positive, default=None,
                   help="images per row (default: ceil(sqrt(n)))")
    p.add_argument("--seed", type=int, default=0, help="seed of the latent draw (default: 0)")
    p.add_argument("--out", default=None,
                   help="PNG to write (default: <run>/figures/samples_seed<SEED>.png)")
    return p


def main(argv=None) -> int:
    p = build_parser()
    args = p.parse_args(argv)
    with C.user_errors(p):
        from vaecommon.commands import twins as _twins
        from vaecommon import runinfo
        from vaecommon import image_plots

        twin = _twins.twin_of(args.run)
        model, cfg, spec = twin.load_run(args.run, args.step)
        if not spec.is_vae:
            raise runinfo.RunFolderError(
                f"{cfg.model} is an autoencoder: it has no prior to sample from (its codes are not "
                "trained towards N(0, I)); try scripts/reconstruct.py or scripts/latent_map.py")
        images = twin.sample(model, args.n, args.seed)
        ncol = min(args.nrow or math.ceil(math.sqrt(args.n)), args.n)
        width = 0.4 + ncol * 0.8 * images.shape[2] / images.shape[1]  # plot_samples' width
        title = f"{cfg.model} ({twin.FRAMEWORK})\nsamples from the prior, seed {args.seed}"
        out = image_plots.plot_samples(images, C.out_path(args.out, args.run, f"samples_seed{args.seed}.png"),
                             nrow=args.nrow, title=C.wrap(title, width))
    print(out)
    return 0


if __name__ == "__main__":
    sys.exit(main())
