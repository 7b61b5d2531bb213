"""Convert weights between PyTorch and JAX; the direction follows from the input.

    python scripts/convert.py notebook_vae.pt --model pytorch_examples          # -> .safetensors
    python scripts/convert.py notebook_vae.pt --model pytorch_examples --to-run-folder runs/nb
    python scripts/convert.py vae.safetensors --out vae.pt                      # -> torch
    python scripts/convert.py runs/pe                                           # JAX run -> .pt
    python scripts/convert.py runs/pe-torch --to-run-folder runs/pe-as-jax      # torch run -> JAX run
    python scripts/convert.py variables.msgpack --model flax_examples            # Linen -> .safetensors
    python scripts/convert.py linen_ckpt/ --model flax_examples --to-run-folder runs/fx  # Orbax Linen
    python scripts/train.py --framework jax --workdir runs/pe-as-jax ...        # ... continued in JAX

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

A run folder converted --to-run-folder carries its whole training state (parameters, BatchNorm
statistics, optimizer moments and counts, schedule position, step, epoch, config, metrics.jsonl),
so `scripts/train.py --framework <target> --workdir DIR` with the run's settings continues it
with the same batch order; --weights-only writes the weights at step 0 with a fresh optimizer.

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
    p.add_argument("--weights-only", action="store_true",
                   help="for a run folder input with --to-run-folder: carry the weights only (step "
                        "0, fresh optimizer) instead of the whole training state")
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
        carried: dict = {}  # the whole training state's run folder, once written
        if kind == "run":
            if args.model or overrides:
                raise ValueError("--model/--override do not apply to a run folder: its config.json "
                                 "names the model")
            run_dir, step = runinfo.run_of_step_dir(src) or (src, args.step)
            source = _twins.twin_of(run_dir)
            target = "torch" if source.FRAMEWORK == "jax" else "jax"
            if args.to_run_folder and not args.weights_only:
                runinfo.check_new_run_folder(args.to_run_folder)  # before anything is read
                state = source.read_training_state(run_dir, step)
                carried = _write_state(args.to_run_folder, src, run_dir, state,
                                       args.framework or target)
                if not args.out:
                    print(json.dumps(carried, indent=2))
                    return 0
            r = source.restore(run_dir, step)
            weights = source.canonical_weights(r.model)
            cfg = r.cfg
            default_out = Path(run_dir) / f"{cfg.model}_step{r.step}"
        elif kind == "linen":  # a Flax Linen params tree: the preset's Linen layout maps it
            cfg = runinfo.config_for_weights({}, args.model, overrides)
            weights = _twins.twin("jax").load_linen_file(src, cfg)
            target = "jax"
            default_out = src.with_suffix("")
        else:
            if args.weights_only:
                raise ValueError("--weights-only applies to a run folder input: a weights file "
                                 "has no training state")
            weights, meta = _twins.read_weights_file(src)
            target = "jax" if kind == "torch" else "torch"
            cfg = runinfo.config_for_weights(meta, args.model, overrides)
            default_out = src.with_suffix("")
        # Load into the target framework's model: checks every name and shape, and the written
        # weights are that model's (exact maps, so the same bits).
        tw = _twins.twin(target)
        weights = tw.canonical_weights(tw.model_from_weights(cfg, weights))
        result = {**carried, "input": str(src), "input_kind": kind, "model": cfg.model,
                  "model_overrides": cfg.model_overrides, "tensors": len(weights),
                  "values": int(sum(w.size for w in weights.values()))}
        if args.to_run_folder and not carried:
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


def _write_state(to: str, src: Path, run_dir: Path, state, framework: str) -> dict:
    """The whole training state `state` of `run_dir` as a `framework` run folder `to`, with
    the source's metrics.jsonl up to the state's step; returns the command's result."""
    import shutil

    from vaecommon import runinfo, runs
    from vaecommon.commands import twins as _twins

    record = runinfo.read_run_config(run_dir)
    source = runs.RunFolder(run_dir)
    best = None
    if (source.checkpoints / "best").is_dir() and any((source.checkpoints / "best").iterdir()):
        # a run with a validation split: its best-validation state goes along (the final test
        # evaluates it); only one at or before the converted step belongs to this state
        best = _twins.twin_of(run_dir).read_training_state(run_dir, best=True)
        best = best if best.step <= state.step else None
    folder = _twins.twin(framework).write_training_state(to, state, record, best=best,
                                                         converted_from=str(src))
    dest = runs.RunFolder(folder)
    if source.metrics_path.exists():  # the records a resume continues (early stopping, summary)
        shutil.copyfile(source.metrics_path, dest.metrics_path)
        dest.truncate_metrics(state.step)
    arrays = state.arrays()
    return {"input": str(src), "input_kind": "run", "model": state.config["model"],
            "run_folder": str(folder), "framework": framework, "training_state": True,
            "step": state.step, "epoch": state.epoch, "best_step": best and best.step,
            "tensors": len(arrays),
            "values": int(sum(a.size for a in arrays.values()))}


if __name__ == "__main__":
    sys.exit(main())
