"""Decode a path through latent space between two test images of a run folder's model (JAX or
torch) -> PNG strip.

    python scripts/interpolate.py runs/pe                           # first 3 -> first 8
    python scripts/interpolate.py runs/pe --from-class 1 --to-class 7 --method slerp --steps 12
    python scripts/interpolate.py runs/pe --from-index 0 --to-index 42

The endpoints are the posterior means of the two images; the path is linear, or spherical
(slerp: stays near the shell where N(0, I) puts its mass). An index wins over a class for its
endpoint. The default output is <run>/figures/interpolate_<from>_<to>_<method>.png.
"""

from __future__ import annotations

import sys

from vaecommon.commands import _common as C


def build_parser():
    p = C.parser(__doc__, "interpolate")
    C.add_run(p)
    p.add_argument("--from-class", type=int, default=3,
                   help="start at the first test image of this label (default: 3)")
    p.add_argument("--to-class", type=int, default=8,
                   help="end at the first test image of this label (default: 8)")
    p.add_argument("--from-index", type=int, default=None,
                   help="start at this test-set index instead of --from-class")
    p.add_argument("--to-index", type=int, default=None,
                   help="end at this test-set index instead of --to-class")
    p.add_argument("--method", choices=("linear", "slerp"), default="linear",
                   help="linear or spherical interpolation of the latent means (default: linear)")
    p.add_argument("--steps", type=int, default=10,
                   help="images in the strip, both endpoints included, >= 2 (default: 10)")
    p.add_argument("--out", default=None,
                   help="PNG to write (default: <run>/figures/interpolate_<from>_<to>_<method>.png)")
    C.add_data(p, limit_help="read only the first N test examples (default: the run's limit_test)")
    return p


def main(argv=None) -> int:
    p = build_parser()
    args = p.parse_args(argv)
    if args.steps < 2:
        p.error(f"--steps must be >= 2 (both endpoints), got {args.steps}")
    with C.user_errors(p):
        from vaecommon.commands import twins as _twins
        from vaecommon import runinfo
        from vaecommon import image_plots
        from vaecommon.run_figures import pick_pair

        twin = _twins.twin_of(args.run)
        model, cfg, spec = twin.load_run(args.run, args.step)
        data = twin.load_run_dataset(cfg, "test", dataset=args.dataset, data_source=args.data_source,
                               data_dir=args.data_dir, limit=args.limit)
        a, b = pick_pair(data.labels, args.from_class, args.to_class, args.from_index, args.to_index)
        strip = twin.interpolate(model, data.images[a], data.images[b], steps=args.steps,
                                 method=args.method)
        names = [f"class{data.labels[i]}" if idx is None else f"index{i}"
                 for i, idx in ((a, args.from_index), (b, args.to_index))]
        labels = (f"{data.labels[a]} (#{a})", f"{data.labels[b]} (#{b})")
        out = image_plots.plot_interpolation(
            strip, C.out_path(args.out, args.run, f"interpolate_{names[0]}_{names[1]}_{args.method}.png"),
            labels=labels, method=args.method,
            title=f"{cfg.model} ({twin.FRAMEWORK}): latent interpolation {labels[0]} \u2192 "
                  f"{labels[1]} ({args.method})")
    print(out)
    return 0


if __name__ == "__main__":
    sys.exit(main())
