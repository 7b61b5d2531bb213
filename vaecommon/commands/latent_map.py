"""Where a run folder's model (JAX or torch) puts the test set: a 2-D scatter of the latent means
coloured by label (the first two principal components when the latent has more than 2
dimensions) and, for a 2-D latent, the decoded manifold grid.

    python scripts/latent_map.py runs/pmv                  # 2-D latent: scatter + manifold
    python scripts/latent_map.py runs/pe --limit 2000      # 20-D latent: PCA scatter
    python scripts/latent_map.py runs/pmv --no-manifold --out scatter.png

The manifold decodes a grid of N(0, 1) quantiles of (z1, z2), so it exists only for a 2-D latent;
asking for it with a larger latent prints a note and draws the PCA scatter only. Default outputs:
<run>/figures/latent_map.png and <run>/figures/latent_map_manifold.png.
"""

from __future__ import annotations

import argparse
import sys

from vaecommon.commands import _common as C


def build_parser():
    p = C.parser(__doc__, "latent_map")
    C.add_run(p)
    p.add_argument("--manifold", action=argparse.BooleanOptionalAction, default=None,
                   help="draw the decoded 2-D manifold grid (default: yes for a 2-D latent VAE; "
                        "for a larger latent a note explains why only the PCA scatter is drawn)")
    p.add_argument("--grid", type=int, default=20,
                   help="manifold images per axis, >= 2 (default: 20)")
    p.add_argument("--out", default=None,
                   help="scatter PNG (default: <run>/figures/latent_map.png)")
    p.add_argument("--manifold-out", default=None,
                   help="manifold PNG (default: <run>/figures/latent_map_manifold.png)")
    C.add_data(p, limit_help="plot only the first N test examples (default: the run's "
                             "limit_test, i.e. the whole test split)")
    return p


def main(argv=None) -> int:
    p = build_parser()
    args = p.parse_args(argv)
    if args.grid < 2:
        p.error(f"--grid must be >= 2, got {args.grid}")
    with C.user_errors(p):
        from vaecommon.commands import twins as _twins
        from vaecommon import runinfo
        from vaecommon import image_plots, latent

        twin = _twins.twin_of(args.run)
        model, cfg, spec = twin.load_run(args.run, args.step)
        data = twin.load_run_dataset(cfg, "test", dataset=args.dataset, data_source=args.data_source,
                               data_dir=args.data_dir, limit=args.limit)
        z = twin.encode_means(model, data.images)  # (N, D)
        what = "codes" if not spec.is_vae else "posterior means"
        outs = [image_plots.plot_latent_scatter(z, data.labels, C.out_path(args.out, args.run, "latent_map.png"),
                                      title=_title(cfg.model, twin.FRAMEWORK, spec.latent_dim,
                                                   len(z), what))]
        can = spec.latent_dim == 2 and spec.is_vae
        if args.manifold and not can:
            why = (f"latent_dim is {spec.latent_dim}, and the manifold grid decodes a 2-D latent"
                   if spec.is_vae else "an autoencoder has no prior whose quantiles the grid uses")
            C.say(f"note: no manifold for {cfg.model}: {why}; drawing the "
                  f"{'PCA ' if spec.latent_dim > 2 else ''}latent scatter instead "
                  "(train with --override latent_dim=2 for a manifold)")
        if can and args.manifold is not False:
            grid = latent.manifold_grid(args.grid)
            outs.append(image_plots.plot_latent_manifold(
                twin.decode(model, grid),
                C.out_path(args.manifold_out, args.run, "latent_map_manifold.png"),
                title=f"{cfg.model} ({twin.FRAMEWORK}): decoded 2-D latent grid "
                      f"({args.grid} x {args.grid} quantiles of N(0, 1))"))
    print("\n".join(str(o) for o in outs))
    return 0


def _title(model: str, fw: str, d: int, n: int, what: str) -> str:
    if d > 2:
        return f"{model} ({fw}): {n} test {what}, {d}-D latent projected with PCA"
    return f"{model} ({fw}): {n} test {what}, {d}-D latent"


if __name__ == "__main__":
    sys.exit(main())
