"""What a run folder or weights file says about itself, framework-free: its config, preset,
data and checkpoints, read and validated with one clear error per problem.

Which twin then restores the run is the command layer's choice (`scripts/_twins.py`); each twin
lists its own checkpoints (`checkpoint.checkpoint_steps`), and this module picks among the steps.

Every problem with the input raises `RunFolderError` (a ValueError) whose message says what was
expected and how to get it: not a directory, no or corrupt config.json, an unknown framework, no
checkpoint, or a checkpoint step that does not exist.
"""

from __future__ import annotations

import dataclasses
import json
import math
import os
from pathlib import Path
from typing import Any

from vaecommon import config as config_lib
from vaecommon import presets
from vaecommon.config import TrainConfig
from vaecommon.runs import RunFolder

__all__ = [
    "RunFolderError", "FRAMEWORKS", "TORCH_SUFFIXES", "WEIGHT_SUFFIXES", "LINEN_SUFFIXES",
    "ORBAX_MARKERS",
    # run folders
    "read_run_config", "train_config", "spec_of", "framework_of", "n_train", "data_kwargs",
    "data_config", "check_input_shape", "pick_step", "run_label",
    # converted weights
    "input_kind", "run_of_step_dir", "config_record", "converted_summary", "meta_for_weights",
    "check_new_run_folder", "state_record", "state_summary", "write_state_folder",
    "config_for_weights", "read_canonical_weights", "write_canonical_weights",
    # output
    "finite_or_str", "dumps",
]

FRAMEWORKS = ("jax", "torch")
"""The values of config.json's "framework"."""

TORCH_SUFFIXES = (".pt", ".pth")
"""torch.save files (a state_dict, read with weights_only=True)."""
WEIGHT_SUFFIXES = (".safetensors", ".npz")
"""Canonical weights files (`vaecommon.weights`): PyTorch naming and layout, NumPy only."""
LINEN_SUFFIXES = (".msgpack",)
"""`flax.serialization` msgpack files of a Flax Linen params tree (read by `jaxvae.convert`)."""
ORBAX_MARKERS = ("_METADATA", "_CHECKPOINT_METADATA", "manifest.ocdbt")
"""Files that make a folder (outside a run folder) an Orbax checkpoint of a Linen params tree."""


class RunFolderError(ValueError):
    """The input is not a usable run folder / checkpoint; the message says why and what to do."""


def available_cores() -> int:
    """The CPU threads a process should use: OMP_NUM_THREADS when set, else the cores this
    process may run on (its affinity mask), else os.cpu_count()."""
    env = os.environ.get("OMP_NUM_THREADS", "")
    if env.isdigit() and int(env) > 0:
        return int(env)
    try:
        return len(os.sched_getaffinity(0))
    except (AttributeError, OSError):  # not on Linux
        return os.cpu_count() or 1


def read_run_config(run_dir: str | Path) -> dict[str, Any]:
    """The validated config.json record of a run folder.

    Returns:
      The record: {"config": dict, "spec": dict, "framework": "jax"|"torch", "data": ..., ...}.
    Raises:
      RunFolderError: not a directory, no config.json, corrupt JSON, missing keys, an unknown
        framework or a config that no longer parses into a `TrainConfig`.
    """
    root = Path(run_dir)
    if not root.exists():
        raise RunFolderError(f"{root} does not exist; pass a run folder written by scripts/train.py")
    if not root.is_dir():
        hint = ""
        if root.suffix in TORCH_SUFFIXES + WEIGHT_SUFFIXES + LINEN_SUFFIXES:
            hint = (f"; to use a weights file, make a run folder from it first: "
                    f"python scripts/convert.py {root} --model PRESET --to-run-folder DIR")
        raise RunFolderError(f"{root} is a file, not a run folder (config.json + checkpoints/)"
                             + hint)
    run = RunFolder(root)
    try:
        record = run.read_config()
    except FileNotFoundError as e:
        raise RunFolderError(str(e)) from None
    except ValueError as e:  # corrupt JSON
        raise RunFolderError(f"{e}; the run folder's config.json is damaged") from None
    if not isinstance(record, dict):
        raise RunFolderError(f"{run.config_path}: corrupt config: expected a JSON object, got "
                             f"{type(record).__name__}")
    missing = [k for k in ("config", "framework") if k not in record]
    if missing:
        raise RunFolderError(f"{run.config_path}: corrupt config: missing key(s) {missing} "
                             "(a run folder's config.json has config, spec, framework, data)")
    fw = record["framework"]
    if fw not in FRAMEWORKS:
        raise RunFolderError(f"{run.config_path}: unknown framework {fw!r}; expected one of "
                             f"{sorted(FRAMEWORKS)}")
    train_config(record, where=run.config_path)  # fail here, with the file named, not later
    return record


def train_config(record: dict[str, Any], *, where: Any = "config.json") -> TrainConfig:
    """The resolved `TrainConfig` of a config.json record (RunFolderError if it does not parse)."""
    try:
        cfg = config_lib.from_dict(record["config"])
        return config_lib.resolve(cfg)
    except (TypeError, ValueError, KeyError) as e:
        msg = e.args[0] if isinstance(e, KeyError) and e.args else str(e)
        raise RunFolderError(f"{where}: corrupt or outdated config: {msg}") from None


def spec_of(model: str, overrides: dict[str, Any] | None = None) -> presets.ModelSpec:
    """`presets.get_spec` with every bad input raised as RunFolderError (the message lists the
    valid presets or override keys)."""
    try:
        return presets.get_spec(model, **(overrides or {}))
    except (KeyError, TypeError, ValueError) as e:
        raise RunFolderError(e.args[0] if e.args else str(e)) from None


def framework_of(run_dir: str | Path) -> str:
    """"jax" or "torch": the framework that wrote the run folder."""
    return read_run_config(run_dir)["framework"]


def n_train(record: dict[str, Any], cfg: TrainConfig) -> int:
    """Training-set size the run was built with (it sizes the optimizer's schedule only)."""
    info = (record.get("data") or {}).get("train") or {}
    n = info.get("n")
    return int(n) if isinstance(n, int) and n > 0 else int(cfg.batch_size)


def data_kwargs(cfg: TrainConfig) -> dict[str, Any]:
    """`load_dataset` keyword arguments that reproduce a run's data treatment (as both
    trainers' `load_data` do: dynamic binarization evaluates on grey values)."""
    kw: dict[str, Any] = dict(
        source=cfg.data_source, data_dir=cfg.data_dir,
        binarization="none" if cfg.binarization == "dynamic" else cfg.binarization)
    if cfg.dataset == "image_folder":
        kw["image_size"] = cfg.image_size
    return kw


def data_config(cfg: TrainConfig, dataset: str | None = None, data_source: str | None = None,
                data_dir: str | None = None) -> TrainConfig:
    """`cfg` with the data fields replaced (a new dataset reads with source "auto" and its own
    default folder unless data_source / data_dir are given)."""
    changes: dict[str, Any] = {}
    if dataset is not None and dataset != cfg.dataset:
        changes.update(dataset=dataset, data_source="auto", data_dir=None)
    if data_source is not None:
        changes["data_source"] = data_source
    if data_dir is not None:
        changes["data_dir"] = data_dir
    return cfg.replace(**changes) if changes else cfg


def check_input_shape(cfg: TrainConfig, chw: tuple[int, int, int], info: Any) -> None:
    """RunFolderError unless examples of shape (C, H, W) fit the run's model."""
    want = tuple(spec_of(cfg.model, cfg.model_overrides).input_shape)
    if tuple(chw) != want:
        raise RunFolderError(
            f"data from {getattr(info, 'path', '?')} has examples of shape {tuple(chw)} (C, H, W) "
            f"but the run's model {cfg.model!r} expects {want}; pick a dataset of that shape")


def pick_step(run_dir: str | Path, steps: list[int], framework: str, step: int | None) -> int:
    """`step` if it is among the run's complete checkpoint `steps` (as the twin's
    `checkpoint.checkpoint_steps` lists them), else the latest.

    Raises:
      RunFolderError: no checkpoint at all (naming what is in the folder), or no such step.
    """
    d = RunFolder(run_dir).checkpoints
    if not steps:
        found = sorted(p.name for p in d.iterdir())[:5] if d.is_dir() else []
        raise RunFolderError(
            f"no {framework} checkpoint in {d}"
            + (f" (found only {found})" if found else " (the folder is missing or empty)")
            + "; train it (scripts/train.py --workdir ...) or make one with scripts/convert.py "
            "--to-run-folder")
    if step is None:
        return steps[-1]
    if step not in steps:
        raise RunFolderError(f"no checkpoint for step {step} in {d}; available steps: {steps}")
    return int(step)


def run_label(run_dir: str | Path) -> str:
    """A short legend label: '<folder name> (<model>, <framework>)'."""
    try:
        rec = read_run_config(run_dir)
        return f"{Path(run_dir).resolve().name} ({rec['config'].get('model')}, {rec['framework']})"
    except RunFolderError:
        return Path(run_dir).resolve().name


def input_kind(path: str | Path) -> str:
    """What `scripts/convert.py` was given: "run" (a run folder, or an Orbax step folder inside
    one), "torch" (.pt/.pth), "canonical" (.safetensors/.npz) or "linen" (a Flax Linen params
    tree: a .msgpack file, or an Orbax checkpoint folder outside a run folder).

    Raises:
      RunFolderError: nothing there, or a kind of file no converter reads.
    """
    p = Path(path)
    if not p.exists():
        raise RunFolderError(f"{p} does not exist")
    if p.is_dir():
        if (p / "config.json").exists() or run_of_step_dir(p) is not None:
            return "run"
        if (run_step := run_of_step_dir(p.parent)) is not None:
            run, step = run_step
            raise RunFolderError(f"{p} is one item of a run's checkpoint; pass the run folder "
                                 f"{run} (with --step {step}) or {p.parent}")
        if any((p / m).exists() for m in ORBAX_MARKERS) or any(
                (c / "_METADATA").exists() for c in p.iterdir() if c.is_dir()):
            return "linen"
        raise RunFolderError(f"{p} is a directory without config.json: not a run folder (nor a "
                             "checkpoints/<step> folder of one), nor an Orbax checkpoint "
                             f"(no {'/'.join(ORBAX_MARKERS)})")
    if p.suffix in TORCH_SUFFIXES:
        return "torch"
    if p.suffix in WEIGHT_SUFFIXES:
        return "canonical"
    if p.suffix in LINEN_SUFFIXES:
        return "linen"
    raise RunFolderError(f"{p}: unknown weights file type {p.suffix!r}; expected a torch state_dict "
                         f"{TORCH_SUFFIXES}, canonical weights {WEIGHT_SUFFIXES}, a Flax Linen "
                         f"params msgpack {LINEN_SUFFIXES}, a run folder or an Orbax checkpoint "
                         "folder")


def run_of_step_dir(path: str | Path) -> tuple[Path, int] | None:
    """(run folder, step) when `path` is `<run>/checkpoints/<step>`, else None."""
    p = Path(path)
    if p.name.isdigit() and p.parent.name == "checkpoints" and (p.parent.parent / "config.json").exists():
        return p.parent.parent, int(p.name)
    return None


def config_record(cfg: TrainConfig, *, framework: str, converted_from: str, versions: dict
                  ) -> dict[str, Any]:
    """config.json of a run folder made from converted weights (no training data recorded)."""
    spec = spec_of(cfg.model, cfg.model_overrides)
    return {"config": dataclasses.asdict(cfg), "spec": dataclasses.asdict(spec),
            "framework": framework, "data": {"train": None, "test": None},
            "converted_from": converted_from, "versions": versions}


def converted_summary(cfg: TrainConfig, *, framework: str, converted_from: str) -> str:
    """summary.md of a run folder made from converted weights."""
    return (f"# Converted weights: `{cfg.model}` ({framework})\n\n"
            f"- converted from: `{converted_from}`\n"
            f"- model overrides: {cfg.model_overrides or 'none'}\n"
            "- no training happened in this folder: it has one checkpoint (step 0, epoch 0) and "
            "no metrics.jsonl, so loss curves and KL-per-dimension figures are not available; "
            "`scripts/evaluate.py` computes the test numbers.\n")


def check_new_run_folder(path: str | Path) -> None:
    """RunFolderError unless `path` can become a new run folder: it must not hold a run
    (config.json or checkpoints) nor be a file."""
    run = RunFolder(path)
    if run.root.exists() and not run.root.is_dir():
        raise RunFolderError(f"{run.root} is a file; choose a new folder for the run")
    if run.config_path.exists() or (run.checkpoints.is_dir() and any(run.checkpoints.iterdir())):
        raise RunFolderError(f"{run.root} already holds a run; choose a new folder")


def state_record(record: dict[str, Any], *, framework: str, converted_from: str,
                 versions: dict) -> dict[str, Any]:
    """config.json of a run folder holding a training state converted from another framework's
    run: the source's record (config, spec, data) with the new framework, and where it came from."""
    out = {k: v for k, v in record.items() if k not in ("devices", "versions")}
    return {**out, "framework": framework, "converted_from": converted_from, "versions": versions}


def state_summary(cfg: TrainConfig, *, framework: str, converted_from: str, step: int,
                  epoch: int) -> str:
    """summary.md of a run folder holding a converted training state (training rewrites it)."""
    return (f"# Converted training state: `{cfg.model}` ({framework})\n\n"
            f"- converted from: `{converted_from}`\n"
            f"- step {step}, epoch {epoch} of {cfg.epochs}: weights, optimizer state, schedule "
            "position and data position carried over\n"
            f"- continue it with `scripts/train.py --framework {framework} --workdir <this folder>` "
            "and the run's settings\n")


def write_state_folder(workdir: str | Path, ts, record: dict[str, Any], *, best, converted_from: str,
                       framework: str, versions: dict, saver) -> Path:
    """The framework-free steps of `convert --to-run-folder`: a new run folder continuing the
    canonical training state `ts` (`vaecommon.weights.TrainingState`; `best` is the
    best-validation state or None), with config.json (`state_record`), summary.md
    (`state_summary`) and one checkpoint of each state, written by the framework's `saver`.

    `saver(cfg, n_train)` returns `prepare(state)`, which fits one canonical state to the
    framework (raising `WeightsMismatchError` when it does not) and returns `save(directory,
    keep)`. Every state is prepared before anything is written, so a state that does not fit
    leaves no half-made folder behind.

    Raises:
      RunFolderError: `workdir` holds a run; WeightsMismatchError: a state does not fit.
    """
    check_new_run_folder(workdir)
    cfg = config_lib.resolve(config_lib.from_dict(ts.config), framework=framework)
    run = RunFolder(workdir)
    prepare = saver(cfg, n_train(record, cfg))
    saves = [(directory, prepare(s), keep)
             for directory, s, keep in ((run.checkpoints / "best", best, 1),
                                        (run.checkpoints, ts, cfg.keep_checkpoints)) if s is not None]
    run.create()
    for directory, save, keep in saves:
        save(directory, keep)
    run.write_config(state_record(record, framework=framework, converted_from=converted_from,
                                  versions=versions))
    run.write_summary(state_summary(cfg, framework=framework, converted_from=converted_from,
                                    step=ts.step, epoch=ts.epoch))
    return run.root


def meta_for_weights(cfg: TrainConfig, *, converted_from: str) -> dict[str, Any]:
    """Metadata stored with a canonical weights file: enough to rebuild the model."""
    return {"model": cfg.model, "model_overrides": dict(cfg.model_overrides),
            "config": dataclasses.asdict(cfg), "converted_from": converted_from}


def config_for_weights(meta: dict[str, Any], model: str | None, overrides: dict[str, Any]
                       ) -> TrainConfig:
    """The resolved TrainConfig for weights: --model/--override win over the file's metadata.

    Raises:
      RunFolderError: no preset known (the message lists the valid ones), or bad overrides.
    """
    base: dict[str, Any] = {}
    if isinstance(meta.get("config"), dict):
        base = dict(meta["config"])
    elif meta.get("model"):
        base = {"model": meta["model"], "model_overrides": meta.get("model_overrides") or {}}
    if model is not None and model != base.get("model"):
        base = {"model": model, "model_overrides": {}}  # another preset: the old config is moot
    if "model" not in base:
        raise RunFolderError(
            "which preset are these weights for? pass --model PRESET (valid presets: "
            + ", ".join(presets.list_models()) + ")")
    base["model_overrides"] = {**(base.get("model_overrides") or {}), **overrides}
    spec_of(base["model"], base["model_overrides"])  # clear message for a bad preset/override
    try:
        return config_lib.resolve(config_lib.from_dict(base))
    except (TypeError, ValueError) as e:
        raise RunFolderError(f"bad configuration in the weights' metadata: {e}") from None


def read_canonical_weights(path: str | Path) -> tuple[dict[str, Any], dict[str, Any]]:
    """(canonical weights, metadata) of a .safetensors/.npz canonical weights file.

    Raises:
      RunFolderError: corrupt metadata; WeightsFileError: unreadable file.
    """
    from vaecommon import weights as wlib

    weights, md = wlib.load_weights(path)
    try:
        meta = json.loads(md.get("meta") or "{}")
    except json.JSONDecodeError as e:
        raise RunFolderError(f"{path}: corrupt 'meta' metadata ({e})") from None
    return weights, meta if isinstance(meta, dict) else {}


def write_canonical_weights(path: str | Path, weights: dict[str, Any], meta: dict[str, Any]) -> Path:
    """Canonical weights with `meta` as JSON metadata (what `read_canonical_weights` reads)."""
    from vaecommon import weights as wlib

    return wlib.save_weights(Path(path), weights, metadata={"meta": json.dumps(meta)})


def finite_or_str(value: Any) -> Any:
    """JSON-safe numbers: non-finite floats become "nan"/"inf" strings (as metrics.jsonl does)."""
    if isinstance(value, float) and not math.isfinite(value):
        return repr(value)
    if isinstance(value, dict):
        return {k: finite_or_str(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [finite_or_str(v) for v in value]
    return value


def dumps(record: dict[str, Any]) -> str:
    """Pretty JSON of a result record (non-finite numbers as strings; lists of numbers such as
    kl_per_dim stay on one line)."""
    rec = finite_or_str(record)
    flat = {k: json.dumps(v) for k, v in rec.items()
            if isinstance(v, list) and all(not isinstance(x, (list, dict)) for x in v)}
    text = json.dumps({k: (f"@@{k}@@" if k in flat else v) for k, v in rec.items()}, indent=2)
    for k, v in flat.items():
        text = text.replace(json.dumps(f"@@{k}@@"), v)
    return text
