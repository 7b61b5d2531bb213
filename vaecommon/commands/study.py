"""Train several objectives x seeds on one dataset and write one comparison table with figures.

    python scripts/study.py --objectives beta_vae:beta=1 beta_vae:beta=4 beta_tcvae dip_vae_i \\
        --seeds 0 1 2 --dataset shapes_small --model burgess_vae --epochs 10 --out runs/study

An objective is NAME or NAME:KEY=VALUE,KEY=VALUE (the parameters `train.py --list` shows);
beta_tcvae's dataset_size is the training-set size unless given. Each objective's seeds train as
one sweep (JAX: one vmapped program; torch: one member after the other) into <out>/<label>/
(label e.g. beta_vae-beta=4; with several seeds, member_<i>/ is seed i of --seeds). Rerunning
the same command reuses finished sweeps, resumes interrupted ones and trains nothing twice.

Then, for each member: test -ELBO, importance-sampled NLL with its standard error, KL, active
units, and I(x; z) and total correlation when the run records them; on a dataset with known
factors (shapes, shapes_small) also the disentanglement metrics of `vaecommon.disentanglement`
(beta-VAE, FactorVAE, MIG, SAP, DCI) on the posterior means of the final model. Written:

    <out>/study.md      one row per objective, mean ± std over seeds, and the command
    <out>/study.json    every number per seed (evaluations are reused on a rerun)
    <out>/figures/traversal_<label>.png   latent traversals of the first seed, units by KL
    <out>/figures/factors_<label>.png     per seed: each unit's KL and I(unit; factor) / H(factor)

The metric sample sizes are smaller than disentanglement_lib's (10,000 training and 5,000
evaluation points) so that a CPU study stays short: --metric-points 2000 training points (codes,
pairs or votes, per metric) and half as many evaluation points. Every distinct image of the
factor grid is encoded once and its code reused, so the sizes cost classifier time, not encoder
time; --metric-points 10000 gives disentanglement_lib's sizes.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import math
import shlex
import statistics
import sys
from pathlib import Path
from typing import Any, Callable, NamedTuple, Sequence

import numpy as np

from vaecommon import lifecycle, objectives, presets, runs
from vaecommon.cli import parse_value
from vaecommon.commands import _common as C
from vaecommon.config import RESUME_FREE, TrainConfig
from vaecommon.datasets import DATASETS
from vaecommon.objectives import nll_meaning_of

__all__ = ["Entry", "parse_objective", "label_of", "plan", "finished", "build_parser", "main",
           "EncodedGrid", "Restorer", "METRIC_COLUMNS", "TRAVERSAL_VALUES"]

DEFAULT_OBJECTIVES = ("beta_vae:beta=1", "beta_vae:beta=4", "beta_tcvae", "dip_vae_i")
"""The issue's comparison: beta-VAE (beta 1 and 4), beta-TCVAE and DIP-VAE-I at their defaults."""

TRAVERSAL_VALUES = tuple(np.linspace(-2.5, 2.5, 9).round(3).tolist())
"""The values one unit takes in a traversal row (the other units stay at the posterior mean of
the first test image): +-2.5 prior standard deviations, as in Higgins et al. 2017's figures."""

# (column header, metric, key): the disentanglement columns of the table
METRIC_COLUMNS = (("beta-VAE", "beta_vae", "eval_accuracy"),
                  ("FactorVAE", "factor_vae", "eval_accuracy"),
                  ("MIG", "mig", "discrete_mig"),
                  ("SAP", "sap", "SAP_score"),
                  ("DCI-D", "dci", "disentanglement"),
                  ("DCI-C", "dci", "completeness"),
                  ("DCI-I", "dci", "informativeness_test"))

# (column header, test-record key): the per-run columns; mutual_info and total_correlation are
# read with .get (runs written before they were recorded show a dash)
RUN_COLUMNS = (("test -ELBO", "loss"), ("NLL", "nll"), ("NLL s.e.", "nll_stderr"),
               ("KL", "kl"), ("active units", "active_units"), ("I(x;z)", "mutual_info"),
               ("TC", "total_correlation"))

DASH = "\u2014"

METRIC_NAMES = ("beta_vae", "factor_vae", "mig", "sap", "dci")
"""`vaecommon.disentanglement.METRICS`' names (not imported here: it needs scikit-learn only
when a metric runs)."""


class Entry(NamedTuple):
    """One objective of the study.

    Attributes:
      spec: the text given on the command line (`beta_vae:beta=4`).
      label: its folder name under --out (`beta_vae-beta=4`).
      objective: the objective name.
      params: the parameters given (dataset_size filled in for beta_tcvae).
      cfgs: the resolved config of each member (seed), in --seeds order.
    """

    spec: str
    label: str
    objective: str
    params: dict[str, Any]
    cfgs: list[TrainConfig]


def parse_objective(text: str) -> tuple[str, dict[str, Any]]:
    """'beta_vae:beta=4,kl_estimate=analytic' -> ('beta_vae', {'beta': 4, ...}).

    Raises:
      ValueError: an unknown objective, a malformed or repeated parameter (one line).
    """
    name, _, rest = text.partition(":")
    name = name.strip()
    if name not in objectives.OBJECTIVES:
        raise ValueError(f"--objectives {text!r}: unknown objective {name!r}; valid: "
                         f"{', '.join(objectives.OBJECTIVES)} (train.py --list shows their "
                         "parameters)")
    params: dict[str, Any] = {}
    for item in (i for i in rest.split(",") if i.strip()) if rest else ():
        key, eq, value = item.partition("=")
        key = key.strip().replace("-", "_")
        if not eq or not key:
            raise ValueError(f"--objectives {text!r}: expected NAME:KEY=VALUE,KEY=VALUE, "
                             f"got {item!r}")
        if key in params:
            raise ValueError(f"--objectives {text!r}: parameter {key!r} given twice")
        params[key] = parse_value(value)
    return name, params


def label_of(objective: str, params: dict[str, Any]) -> str:
    """The folder name of an objective: 'beta_vae-beta=4' (parameters in the order given)."""
    return "-".join([objective, *(f"{k}={v}" for k, v in params.items())])


def train_size(cfg: TrainConfig) -> int:
    """How many examples a run of `cfg` trains on (limit_train, minus the validation split).

    The shapes grids are counted from their split indices (the full grid is never drawn);
    other datasets are read once (framework-free)."""
    from vaecommon import runinfo, shapes
    from vaecommon.datasets import load_dataset_arrays

    if cfg.dataset in shapes.GRIDS:
        n = len(shapes.split_indices(cfg.dataset, "train")[: cfg.limit_train])
    else:
        kw = runinfo.data_kwargs(cfg)
        kw.pop("binarization")
        n = len(load_dataset_arrays(cfg.dataset, "train", limit=cfg.limit_train, **kw).labels)
    return n - cfg.validation


def base_config(args: argparse.Namespace) -> TrainConfig:
    """The study's TrainConfig before the objective and seed are set."""
    return TrainConfig(model=args.model, dataset=args.dataset, data_dir=args.data_dir,
                       epochs=args.epochs, batch_size=args.batch_size, lr=args.lr,
                       limit_train=args.limit_train, limit_test=args.limit_test,
                       final_nll_samples=args.nll_samples, nll_limit=args.nll_limit,
                       eval_every=0, checkpoint_every=args.checkpoint_every,
                       keep_checkpoints=1, batch_log_every=50)


def plan(args: argparse.Namespace) -> list[Entry]:
    """Every objective's member configs, validated before anything is created.

    Raises:
      ValueError: a bad objective spec or parameter, a repeated seed or label (one line each).
    """
    if len(set(args.seeds)) != len(args.seeds):
        raise ValueError(f"--seeds {args.seeds}: a seed is repeated")
    base = base_config(args)
    entries: list[Entry] = []
    n_train = None
    for spec in args.objectives:
        name, params = parse_objective(spec)
        label = label_of(name, params)
        if any(e.label == label for e in entries):
            raise ValueError(f"--objectives: {spec!r} is given twice")
        full = dict(params)
        if name == "beta_tcvae" and "dataset_size" not in full:
            n_train = train_size(base) if n_train is None else n_train
            full["dataset_size"] = n_train
        cfg = base.replace(objective=name, objective_params=full)
        try:
            cfgs, _ = lifecycle.member_configs(cfg, {"seed": list(args.seeds)},
                                               framework=args.framework)
        except ValueError as e:
            raise ValueError(f"--objectives {spec!r}: {e}") from None
        entries.append(Entry(spec, label, name, full, cfgs))
    return entries


def _comparable(cfg: dict[str, Any]) -> dict[str, Any]:
    """A config dict without the fields that never change training (JSON-normalised)."""
    return {k: v for k, v in json.loads(json.dumps(cfg)).items() if k not in RESUME_FREE}


def finished(entry: Entry, workdir: Path, framework: str) -> list[runs.RunFolder] | None:
    """The member folders when every member trained all its epochs in `framework` with the
    entry's config (then nothing is trained again), else None (then the trainer resumes, or
    refuses a folder of another framework or preset)."""
    folders = lifecycle.member_folders(workdir, len(entry.cfgs))
    for folder, cfg in zip(folders, entry.cfgs):
        if not folder.config_path.exists():
            return None
        record = folder.read_config()
        test = lifecycle.last_record(folder, "test")
        if (record.get("framework") != framework
                or _comparable(record.get("config", {})) != _comparable(dataclasses.asdict(cfg))
                or test.get("epoch") != cfg.epochs):
            return None
    return folders


# ------------------------------------------------------------------------------ evaluation

class EncodedGrid:
    """A factor grid whose observations are flat grid indices and whose representation looks
    their codes up, so every distinct image is encoded once however often a metric draws it.

    A `vaecommon.disentanglement.GroundTruthData`; `representation` is its `Representation`.
    Exact, because the grid's images are a deterministic function of the factors.

    Args:
      grid: a `vaecommon.shapes.Shapes`.
      encode: NHWC float32 images (N, 64, 64, 1) -> codes (N, D).
      batch: images encoded at once.
    """

    def __init__(self, grid, encode: Callable[[np.ndarray], np.ndarray], *, batch: int = 512):
        self.grid, self.encode, self.batch = grid, encode, batch
        self.num_factors = grid.num_factors
        self.factors_num_values = grid.factors_num_values
        self._codes: np.ndarray | None = None
        self._known = np.zeros(len(grid), bool)

    def sample_factors(self, num: int, random_state) -> np.ndarray:
        return self.grid.sample_factors(num, random_state)

    def sample_observations_from_factors(self, factors, random_state=None) -> np.ndarray:
        return self.grid.factors_to_index(factors)

    def representation(self, index: np.ndarray) -> np.ndarray:
        index = np.asarray(index, np.int64)
        missing = np.unique(index[~self._known[index]])
        for start in range(0, len(missing), self.batch):
            chunk = missing[start:start + self.batch]
            # padded to a multiple of 64 images: a jitted encoder compiles a few shapes only
            padded = np.pad(chunk, (0, -len(chunk) % 64), mode="edge")
            images = self.grid.sample_observations_from_factors(self.grid.index_to_factors(padded))
            codes = np.asarray(self.encode(images), np.float64)[: len(chunk)]
            if self._codes is None:
                self._codes = np.zeros((len(self.grid), codes.shape[1]))
            self._codes[chunk] = codes
            self._known[chunk] = True
        return self._codes[index]

    @property
    def num_encoded(self) -> int:
        """How many distinct images have been encoded so far."""
        return int(self._known.sum())

    def encode_all(self) -> None:
        """Encode the whole grid now (in `batch`-sized calls; worth it for small grids)."""
        self.representation(np.arange(len(self.grid)))


def metric_options(args: argparse.Namespace) -> dict[str, dict[str, int]]:
    """Per-metric sample sizes from --metric-points (training) and half as many to evaluate."""
    n, m = args.metric_points, max(1, args.metric_points // 2)
    return {"beta_vae": {"num_train": n, "num_eval": m},
            "factor_vae": {"num_train": n, "num_eval": m, "num_variance_estimate": n},
            "mig": {"num_train": n}, "sap": {"num_train": n, "num_test": m},
            "dci": {"num_train": n, "num_test": m}}


def disentanglement(data: EncodedGrid, args: argparse.Namespace) -> dict[str, Any]:
    """The metrics, and the (D, F) matrix I(z_d; factor_f) / H(factor_f) of the heatmap."""
    from vaecommon import disentanglement as dis

    rs = np.random.RandomState(args.metric_seed)
    options = {k: v for k, v in metric_options(args).items() if k in args.metrics}
    scores = dis.evaluate(data, data.representation, rs, metrics=tuple(args.metrics), **options)
    codes, factors = dis.sample_codes(data, data.representation, args.metric_points, rs,
                                      batch_size=256)
    mi = dis.discrete_mutual_info(dis.histogram_discretize(codes), factors)
    matrix = mi / np.maximum(dis.discrete_entropy(factors), 1e-12)[None, :]
    return {"metrics": scores, "unit_factor_mi": matrix.round(6).tolist()}


def _test_numbers(test: dict[str, Any]) -> dict[str, Any]:
    keys = ("epoch", "step", "loss", "recon", "kl", "kl_per_dim", "active_units", "nll",
            "nll_stderr", "nll_samples", "nll_examples", "mutual_info", "total_correlation")
    return {k: test[k] for k in keys if k in test}


def evaluate_entry(entry: Entry, folders: Sequence[runs.RunFolder], args, cache: dict,
                   has_factors: bool, restore: "Restorer") -> tuple[list[dict], list[int]]:
    """(per-member numbers, indices of the members evaluated now) of one objective.

    A member whose cached numbers were computed from the same checkpoint step with the same
    metric options is not evaluated again (nor is its model restored).
    """
    options = {"metrics": list(args.metrics), "metric_points": args.metric_points,
               "metric_seed": args.metric_seed}
    out, fresh = [], []
    for i, (folder, cfg) in enumerate(zip(folders, entry.cfgs)):
        test = lifecycle.last_record(folder, "test")
        member = {"seed": cfg.seed, "folder": str(folder.root), "test": _test_numbers(test)}
        old = cache.get((entry.label, cfg.seed))
        if old is not None and old.get("test", {}).get("step") == test.get("step") \
                and (not has_factors or old.get("metric_options") == options):
            out.append(old)
            continue
        if has_factors:
            member["metric_options"] = options
            member.update(_member_disentanglement(folder, cfg, args, restore))
        out.append(member)
        fresh.append(i)
    return out, fresh


class Restorer:
    """(twin command API, Restored) of a member folder, restored once per study command."""

    def __init__(self):
        self._done: dict[str, tuple[Any, Any]] = {}

    def __call__(self, folder: runs.RunFolder) -> tuple[Any, Any]:
        from vaecommon.commands import twins

        key = str(folder.root)
        if key not in self._done:
            twin = twins.twin_of(folder.root)
            self._done[key] = (twin, twin.restore(folder.root))
        return self._done[key]


def _member_disentanglement(folder: runs.RunFolder, cfg: TrainConfig, args,
                            restore: Restorer) -> dict[str, Any]:
    from vaecommon import shapes

    twin, restored = restore(folder)
    data = EncodedGrid(shapes.Shapes(cfg.dataset),
                       lambda x: twin.encode_means(restored.model, x, batch=256))
    if cfg.dataset == "shapes_small":
        data.encode_all()  # 4,608 images: one pass, then every metric only looks codes up
    C.say(f"[study] disentanglement metrics of {folder.root}")
    return disentanglement(data, args)


# --------------------------------------------------------------------------------- figures

def traversal_figure(entry: Entry, folder: runs.RunFolder, kl_per_dim, path: Path,
                     restore: Restorer) -> Path:
    """Latent traversals of one member, units by KL (largest first)."""
    from vaecommon import image_plots

    twin, restored = restore(folder)
    x = twin.load_run_dataset(restored.cfg, "test").images[:1]  # (1, H, W, C)
    z = twin.encode_means(restored.model, x)[0]  # (D,)
    kl = np.asarray([_float(v) for v in kl_per_dim or [0.0] * z.size])  # an AE has no KL
    order = np.argsort(-np.nan_to_num(kl, nan=-np.inf), kind="stable")
    values = np.asarray(TRAVERSAL_VALUES)
    grid = np.repeat(z[None, None, :], len(order), 0).repeat(len(values), 1)  # (D, S, D)
    for row, unit in enumerate(order):
        grid[row, :, unit] = values
    images = twin.decode(restored.model, grid.reshape(-1, z.size))
    images = images.reshape(len(order), len(values), *images.shape[1:])
    return image_plots.plot_latent_traversal(
        images, values, path, row_labels=[f"z{u} KL {kl[u]:.2f}" for u in order],
        title=f"{entry.label}, seed {restored.cfg.seed}: one unit varied per row")


def factors_figure(entry: Entry, members: Sequence[dict], factor_names, path: Path) -> Path:
    from vaecommon import plots

    panels = {f"seed {m['seed']}": (m["test"]["kl_per_dim"], m["unit_factor_mi"])
              for m in members}
    return plots.plot_unit_factor_matrix(panels, factor_names, path,
                                         title=f"{entry.label}: units by KL against the factors")


# ----------------------------------------------------------------------------------- table

def _float(v: Any) -> float:
    try:
        return float(v)
    except (TypeError, ValueError):
        return math.nan


def _ms(values: Sequence[Any], digits: int = 2) -> str:
    v = [_float(x) for x in values if x is not None]
    if not v:
        return DASH
    if len(v) == 1:
        return f"{v[0]:.{digits}f}"
    return f"{statistics.mean(v):.{digits}f} ± {statistics.stdev(v):.{digits}f}"


def table(study: dict[str, Any]) -> str:
    """The Markdown of study.md from study.json's content."""
    first = study["objectives"][0]["members"][0]
    record = runs.RunFolder(first["folder"]).read_config()
    is_likelihood, meaning = nll_meaning_of(record["config"])
    has_factors = "metrics" in first
    t = first["test"]
    nll = (f"IS-NLL with k={t.get('nll_samples')} on {t.get('nll_examples')} test images"
           if "nll" in t else "no NLL (--nll-samples 0)")
    heads = [h for h, _ in RUN_COLUMNS] + ([h for h, *_ in METRIC_COLUMNS] if has_factors else [])
    lines = [f"# Study: {study['model']} on {study['dataset']} ({study['framework']})", "",
             f"Seeds {study['seeds']}, epochs {study['epochs']}; mean ± std over seeds. Test "
             f"metrics in nats per example; {nll} ({meaning}); NLL s.e. is the mean over seeds "
             "of each estimate's standard error. KL per example; active units: Cov_x(E_q[z]) > "
             "0.01.", "",
             "| objective | " + " | ".join(heads) + " |", "|---" * (len(heads) + 1) + "|"]
    for obj in study["objectives"]:
        ms = obj["members"]
        cells = [_ms([m["test"].get(key) for m in ms], 1 if key == "active_units" else 2)
                 for _, key in RUN_COLUMNS]
        if has_factors:
            cells += [_ms([m["metrics"].get(metric, {}).get(key) for m in ms], 3)
                      for _, metric, key in METRIC_COLUMNS]
        lines.append(f"| {obj['label']} | " + " | ".join(cells) + " |")
    lines += [""]
    if not is_likelihood:
        lines += [f"The NLL column is {meaning}: not comparable with a binary-data NLL.", ""]
    if has_factors:
        lines += [f"Disentanglement metrics (`vaecommon.disentanglement`) on the posterior means "
                  f"of the final model, {study['metric_points']} training points per metric "
                  f"(half as many to evaluate), metric seed {study['metric_seed']}: beta-VAE and "
                  "FactorVAE are evaluation accuracies, DCI-I the trees' test accuracy.", ""]
    lines += ["Figures: `figures/traversal_<objective>.png` (first seed), "
              "`figures/factors_<objective>.png` (every seed).", "",
              "Regenerate:", "", f"    {study['command']}", ""]
    return "\n".join(lines)


def command_for(args: argparse.Namespace) -> str:
    """The study.py command line that regenerates this study (non-default options only)."""
    p = build_parser()
    defaults = vars(p.parse_args([]))
    parts = ["python scripts/study.py", "--objectives " + " ".join(map(shlex.quote, args.objectives)),
             "--seeds " + " ".join(map(str, args.seeds))]
    for action in p._actions:  # every other option, in the parser's order, when not default
        dest = action.dest
        if dest in ("help", "objectives", "seeds", "no_progress") or not action.option_strings:
            continue
        value = getattr(args, dest)
        if value == defaults[dest] and dest not in ("dataset", "model", "framework", "out"):
            continue
        flag = action.option_strings[-1]
        if value is True:
            parts.append(flag)
        elif isinstance(value, list):
            parts.append(" ".join([flag, *map(shlex.quote, map(str, value))]))
        else:
            parts.append(f"{flag} {shlex.quote(str(value))}")
    return " ".join(parts)


def _write_if_changed(path: Path, text: str) -> bool:
    if path.exists() and path.read_text() == text:
        return False
    runs.atomic_write_text(path, text)
    return True


# ------------------------------------------------------------------------------------- cli

def build_parser() -> argparse.ArgumentParser:
    p = C.parser(__doc__, "study.py")
    p.add_argument("--objectives", nargs="+", default=list(DEFAULT_OBJECTIVES), metavar="SPEC",
                   help="NAME or NAME:KEY=VALUE,... (default: %(default)s)")
    p.add_argument("--seeds", nargs="+", type=C.non_negative, default=[0, 1, 2],
                   help="one sweep member per seed (default: 0 1 2)")
    p.add_argument("--dataset", choices=DATASETS, default="shapes_small",
                   help="the disentanglement metrics need factors: shapes or shapes_small "
                        "(default: %(default)s)")
    p.add_argument("--model", choices=tuple(presets.PRESETS), default="burgess_vae",
                   help="model preset (default: %(default)s, the 64x64 conv VAE)")
    p.add_argument("--framework", choices=("jax", "torch"), default="jax",
                   help="which twin trains (default: %(default)s)")
    p.add_argument("--out", default="runs/study", help="study folder (default: %(default)s)")
    g = p.add_argument_group("training (default: the preset's)")
    g.add_argument("--epochs", type=C.positive, default=None, help="epochs of every run")
    g.add_argument("--batch-size", type=C.positive, default=None, help="training batch size")
    g.add_argument("--lr", type=float, default=None, help="learning rate")
    g.add_argument("--data-dir", default=None, help="IDX / image folder for mnist-like datasets")
    g.add_argument("--limit-train", type=C.positive, default=None,
                   help="first N training examples only (smoke runs)")
    g.add_argument("--limit-test", type=C.positive, default=None,
                   help="first N test examples only (smoke runs)")
    g.add_argument("--checkpoint-every", type=C.non_negative, default=5,
                   help="epochs between checkpoints; Ctrl-C also saves one (default: 5)")
    g = p.add_argument_group("evaluation")
    g.add_argument("--nll-samples", type=C.non_negative, default=100,
                   help="importance samples k of the final test NLL (0: none; default: 100, "
                        "CPU-sized: the table of scripts/README.md uses 5000 on MNIST)")
    g.add_argument("--nll-limit", type=C.positive, default=500,
                   help="estimate the NLL on the first N test images (default: 500)")
    g.add_argument("--metric-points", type=C.positive, default=2000,
                   help="training points of each disentanglement metric, half as many to "
                        "evaluate (default: 2000; disentanglement_lib: 10000)")
    g.add_argument("--metrics", nargs="+", choices=METRIC_NAMES, default=list(METRIC_NAMES),
                   help="disentanglement metrics to compute on a dataset with factors "
                        "(default: all; DCI's boosted trees are the slowest)")
    g.add_argument("--metric-seed", type=C.non_negative, default=0,
                   help="seed of the metrics' sampling, the same for every run (default: 0)")
    p.add_argument("--no-progress", action="store_true", help="no progress bars")
    return p


def main(argv=None) -> int:
    p = build_parser()
    args = p.parse_args(argv)
    out = Path(args.out)
    with C.user_errors(p):
        entries = plan(args)  # every objective and parameter checked before anything is created
        from vaecommon import shapes

        has_factors = args.dataset in shapes.GRIDS
        old = _read_cache(out / "study.json")
        study: dict[str, Any] = {
            "command": command_for(args), "framework": args.framework, "model": args.model,
            "dataset": args.dataset, "seeds": list(args.seeds),
            "epochs": entries[0].cfgs[0].epochs, "metric_points": args.metric_points,
            "metric_seed": args.metric_seed, "objectives": []}
        for entry in entries:
            workdir = out / entry.label
            folders = finished(entry, workdir, args.framework)
            if folders is None:
                from vaecommon.commands import twins

                C.say(f"[study] {entry.label}: seeds {list(args.seeds)} -> {workdir}")
                result = twins.module(args.framework, "train").train_and_evaluate(
                    entry.cfgs[0], workdir,
                    sweep={"seed": list(args.seeds)}, progress=not args.no_progress)
                if result.get("interrupted"):
                    C.say(f"[study] {workdir} stopped; run the same command again to resume it")
                    return 128 + int(result["interrupted"])
                folders = finished(entry, workdir, args.framework)
                if folders is None:
                    raise ValueError(f"{workdir} did not finish its {entry.cfgs[0].epochs} "
                                     "epochs; run the same command again to resume it")
            restore = Restorer()  # this objective's members, each restored at most once
            members, fresh = evaluate_entry(entry, folders, args, old, has_factors, restore)
            study["objectives"].append({"label": entry.label, "objective": entry.objective,
                                        "params": entry.params, "members": members})
            figures = out / "figures"
            trav = figures / f"traversal_{entry.label}.png"
            if 0 in fresh or not trav.exists():
                traversal_figure(entry, folders[0], members[0]["test"].get("kl_per_dim"), trav,
                                 restore)
            fac = figures / f"factors_{entry.label}.png"
            if has_factors and (fresh or not fac.exists()):
                factors_figure(entry, members, shapes.FACTOR_NAMES, fac)
        _write_if_changed(out / "study.json", json.dumps(study, indent=1, default=str) + "\n")
        md = table(study)
        _write_if_changed(out / "study.md", md)
    print(md)
    return 0


def _read_cache(path: Path) -> dict[tuple[str, int], dict]:
    """{(label, seed): member numbers} of an earlier study.json ({} if none or unreadable)."""
    try:
        study = json.loads(path.read_text())
        return {(o["label"], m["seed"]): m for o in study["objectives"] for m in o["members"]}
    except (OSError, ValueError, KeyError, TypeError):
        return {}


if __name__ == "__main__":
    sys.exit(main())
