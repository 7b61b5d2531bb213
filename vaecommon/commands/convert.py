"""Convert weights between PyTorch and JAX; the direction follows from the input.

    python scripts/convert.py notebook_vae.pt --model pytorch_examples          # -> .safetensors
    python scripts/convert.py notebook_vae.pt --model pytorch_examples --to-run-folder runs/nb
    python scripts/convert.py vae.safetensors --out vae.pt                      # -> torch
    python scripts/convert.py runs/pe                                           # JAX run -> .pt
    python scripts/convert.py runs/pe-torch --to-run-folder runs/pe-as-jax      # torch run -> JAX run
    python scripts/convert.py variables.msgpack --model flax_examples            # Linen -> .safetensors
    python scripts/convert.py linen_ckpt/ --model flax_examples --to-run-folder runs/fx  # Orbax Linen

Inputs: a torch `.pt`/`.pth` state_dict (also a training checkpoint holding one under "model" or
"state_dict"; always read with torch.load(weights_only=True), never unpickled code), a canonical
weights file `.safetensors`/`.npz`, or a run folder of either framework (its latest checkpoint, or
--step; a `<run>/checkpoints/<step>` folder works too), or a Flax Linen params tree of a preset
with a Linen layout (flax_examples: google/flax examples/vae's `encoder`/`decoder` tree): a
`flax.serialization` msgpack file `.msgpack` (`to_bytes(params)` or of `{'params': params}`) or
an Orbax checkpoint folder (StandardCheckpointer / PyTreeCheckpointer save of either tree), read
by `jaxvae.convert.load_linen_file`, which names any missing, unexpected or mis-shaped leaf.

Formats: the JAX side of a conversion is the canonical safetensors file: PyTorch names and layout,
readable without either framework, with the preset and overrides in its metadata (so later
conversions need no --model); `jaxvae.convert` maps it onto the Flax model. For the other
commands, --to-run-folder writes a complete run folder instead (config.json + one checkpoint:
Orbax for JAX, torch.save for torch; no metrics), which evaluate, sample, reconstruct, interpolate,
latent_map and figures read like a trained run.

Direction: .pt and Linen -> JAX (a .safetensors file, or a JAX run folder); .safetensors/.npz -> torch
(a .pt state_dict, or a torch run folder); a run folder -> the other framework. --framework picks
the run folder's framework explicitly. Every conversion loads the weights into the target
framework's model first, so names and shapes are checked (errors name the tensors), and the round
trip .pt -> .safetensors -> .pt (or through a run folder) returns the same bits.
"""

from __future__ import annotations

import json
import sys
from pathlib import Path

from vaecommon.commands import _common as C


def build_parser():
    p = C.parser(__doc__, "convert")
    p.add_argument("input", help="a .pt/.pth state_dict, a .safetensors/.npz canonical weights "
                                 "file, a run folder (JAX or torch), or a Flax Linen params tree "
                                 "(a .msgpack file or an Orbax checkpoint folder)")
    p.add_argument("--out", default=None,
                   help="weights file to write; its suffix picks the format: .pt/.pth (torch "
                        "state_dict) or .safetensors/.npz (canonical). Default: the input's name "
                        "with the target's suffix (for a run folder: <run>/<model>_step<S>.<suffix>)"
                        ", unless --to-run-folder is given")
    p.add_argument("--to-run-folder", metavar="DIR", default=None,
                   help="write a run folder (config.json + one checkpoint) that the other "
                        "commands can use; DIR must not hold a run yet")
    p.add_argument("--framework", choices=("jax", "torch"), default=None,
                   help="framework of the --to-run-folder run (default: the conversion's target: "
                        "jax for a .pt or Linen input, torch for a canonical file, the other one "
                        "for a run)")
    p.add_argument("--model", default=None,
                   help="preset the weights belong to (required for a .pt file and a Linen "
                        "tree; a canonical file written here names it in its metadata; not "
                        "allowed with a run folder)")
    p.add_argument("--override", action="append", metavar="KEY=VALUE", default=None,
                   help="preset override, as for training (repeatable), e.g. --override latent_dim=2")
    p.add_argument("--step", type=int, default=None,
                   help="for a run folder input: the checkpoint step (default: the latest)")
    p.add_argument("--force", action="store_true", help="overwrite an existing --out file")
    return p


def main(argv=None) -> int:
    p = build_parser()
    args = p.parse_args(argv)
    with C.user_errors(p):
        from vaecommon.commands import twins as _twins
        from vaecommon import runinfo
        from vaecommon.cli import parse_kv

        kind = runinfo.input_kind(args.input)
        if args.out and Path(args.out).suffix not in runinfo.TORCH_SUFFIXES + runinfo.WEIGHT_SUFFIXES:
            raise ValueError(f"--out {args.out}: unknown suffix; use .pt/.pth (torch state_dict) "
                             "or .safetensors/.npz (canonical weights)")
        if args.out and Path(args.out).exists() and not args.force:
            raise FileExistsError(f"{args.out} exists; pass --force to overwrite it")
        overrides = parse_kv(args.override, "--override")
        src = Path(args.input)
        if kind == "run":
            if args.model or overrides:
                raise ValueError("--model/--override do not apply to a run folder: its config.json "
                                 "names the model")
            run_dir, step = runinfo.run_of_step_dir(src) or (src, args.step)
            source = _twins.twin_of(run_dir)
            r = source.restore(run_dir, step)
            weights = source.canonical_weights(r.model)
            cfg, target = r.cfg, "torch" if source.FRAMEWORK == "jax" else "jax"
            default_out = Path(run_dir) / f"{cfg.model}_step{r.step}"
        elif kind == "linen":  # a Flax Linen params tree: the preset's Linen layout maps it
            cfg = runinfo.config_for_weights({}, args.model, overrides)
            weights = _twins.twin("jax").load_linen_file(src, cfg)
            target = "jax"
            default_out = src.with_suffix("")
        else:
            weights, meta = _twins.read_weights_file(src)
            target = "jax" if kind == "torch" else "torch"
            cfg = runinfo.config_for_weights(meta, args.model, overrides)
            default_out = src.with_suffix("")
        # Load into the target framework's model: checks every name and shape, and the written
        # weights are that model's (exact maps, so the same bits).
        tw = _twins.twin(target)
        weights = tw.canonical_weights(tw.model_from_weights(cfg, weights))
        result = {"input": str(src), "input_kind": kind, "model": cfg.model,
                  "model_overrides": cfg.model_overrides, "tensors": len(weights),
                  "values": int(sum(w.size for w in weights.values()))}
        if args.to_run_folder:
            fw = args.framework or target
            folder = _twins.twin(fw).write_run_folder(args.to_run_folder, cfg, weights,
                                                        converted_from=str(src))
            result.update(run_folder=str(folder), framework=fw)
        if args.out or not args.to_run_folder:
            out = Path(args.out) if args.out else default_out.with_name(
                default_out.name + (".safetensors" if target == "jax" else ".pt"))
            if out.resolve() == src.resolve():
                raise ValueError(f"--out {out} is the input file")
            if out.exists() and not args.force:
                raise FileExistsError(f"{out} exists; pass --force to overwrite it")
            _twins.write_weights_file(out, weights,
                                        runinfo.meta_for_weights(cfg, converted_from=str(src)))
            result["out"] = str(out)
    print(json.dumps(result, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
