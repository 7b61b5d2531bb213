"""`TrainConfig`: the one training configuration, shared by `jaxvae.train` and `torchvae.train`.

Both trainers read the same fields with the same meaning, so the same config (and seed) gives
comparable runs side by side. Derived values (the preset's defaults for fields left as None) are
resolved by `resolve`, never written back by the trainers. Framework-free.

`validate` checks every field (type, range, choices, and the objective's parameters against
`vaecommon.objectives`) and raises one `ConfigError` whose single line names the field, the value
and what is valid; `resolve` calls it first, so nothing is built from an invalid config.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field
from typing import Any

from vaecommon import objectives, presets
from vaecommon.datasets import DATASETS, SOURCES
from vaecommon.objectives import Param

__all__ = ["TrainConfig", "ConfigError", "PRECISIONS", "validate", "resolve", "to_json", "from_json",
           "from_dict", "RESUME_FREE", "check_resumable"]


@dataclass(frozen=True)
class TrainConfig:
    """One training run. Fields left as None take the model preset's default (see `resolve`)."""

    model: str = "pytorch_examples"
    """Model preset name (`train.py --list` names every preset with its source)."""
    model_overrides: dict[str, Any] = field(default_factory=dict)
    """Overrides passed to `build_model` (latent_dim, hidden, reparam, image_size, ...)."""
    init: str = "default"
    """Parameter init: "default" (each framework's own) or "torch" (PyTorch's init in both)."""
    objective: str | None = None
    """Objective (elbo, beta_vae, kl_warmup, iwae, ...: `train.py --list` names them all with their
    parameters); None: the preset's."""
    objective_params: dict[str, Any] = field(default_factory=dict)
    """Keyword parameters of the objective (e.g. beta for beta_vae, warmup_steps for kl_warmup),
    checked by name and range before training (`train.py --list` shows each objective's)."""
    likelihood: str | None = None
    """Reconstruction term (bernoulli, bce_probs, gaussian, ...: `train.py --list`); None: the
    preset's."""
    reduction: str = "mean"
    """Batch reduction of the objective: "mean" (per-example loss averaged) or "sum" (notebooks)."""
    dataset: str = "mnist5k"
    """Dataset: mnist, fashion_mnist, mnist5k, image_folder, shapes, shapes_small."""
    data_source: str = "auto"
    """Where to read it: auto, idx, library (tfds / torchvision), embedded, image_folder, generated."""
    data_dir: str | None = None
    """Directory for the idx / image_folder sources (None: the documented defaults)."""
    binarization: str | None = None
    """none | static | dynamic; None: the preset's."""
    image_size: int | None = None
    """Resize for the image_folder source (None: the preset's input size)."""
    optimizer: str | None = None
    """adam | adamw | sgd | adam_norm_grad (the VampPrior code's Adam on per-tensor normalised
    gradients); None: the preset's (adam for all but exemplar_vae)."""
    lr: float | None = None
    """Peak learning rate; None: the preset's."""
    weight_decay: float | None = None
    """Weight decay (L2 added to the gradient for adam/sgd, decoupled for adamw); None: preset's."""
    momentum: float = 0.0
    """SGD momentum."""
    schedule: str = "constant"
    """Learning-rate schedule after warm-up: constant | cosine."""
    warmup_steps: int = 0
    """Linear learning-rate warm-up steps."""
    grad_clip: float | None = None
    """Clip the global gradient norm to this value (None: off)."""
    batch_size: int | None = None
    """Training batch size; None: the preset's. The last partial batch of an epoch is dropped
    (the permutation changes every epoch, so every example is used)."""
    epochs: int | None = None
    """Number of epochs; None: the preset's."""
    seed: int = 0
    """Root seed: parameter init, data order, eps and binarization all derive from it."""
    eval_every: int = 1
    """Evaluate on the test split every N epochs (0: only at the end)."""
    eval_batch_size: int = 500
    """Batch size for evaluation (does not change the numbers)."""
    nll_samples: int = 0
    """Importance samples for the test NLL at each evaluation (0: skip)."""
    final_nll_samples: int = 5000
    """Importance samples for the final test NLL (0: skip)."""
    nll_limit: int | None = None
    """Estimate the NLL on only the first N test examples (None: all; k=5000 costs k forward
    passes per example)."""
    checkpoint_every: int = 1
    """Save a checkpoint every N epochs (0: only at the end)."""
    keep_checkpoints: int = 3
    """Keep the last N checkpoints."""
    figures_every: int = 0
    """Write figures every N epochs (0: only at the end)."""
    precision: str = "float32"
    """Compute dtype: float32, or bfloat16 (matmuls in bf16, params and loss in float32; JAX
    only: `validate(cfg, framework="torch")` refuses it)."""
    logvar_clamp: float | None = None
    """Clamp the encoder's logvar to [-c, c] (a guard against exp overflow; None: off)."""
    limit_train: int | None = None
    """Use only the first N training examples (smoke runs)."""
    limit_test: int | None = None
    """Use only the first N test examples (smoke runs)."""
    batch_log_every: int = 1
    """Write a "batch" record (metrics.jsonl, TensorBoard) every N optimizer steps; the epoch's
    "train" means still average every step (long runs: 50 keeps the files small)."""
    validation: int = 0
    """Hold out the last N training examples (in file order) as a validation split, evaluated
    (-ELBO) after every epoch; the best-validation state is kept in checkpoints/best and is the
    one the final test evaluation uses (0: no validation split)."""
    early_stopping: int = 0
    """Stop when the validation -ELBO has not improved for more than N epochs (needs
    validation; epochs within the KL warm-up do not count, as in the VampPrior code; 0: off)."""
    kl_warmup_epochs: int | None = None
    """Linear KL warm-up by epochs: the KL weight is min(1, e / N) in 1-based epoch e, constant
    within an epoch (objective elbo or kl_warmup; 0: none; None: the preset's)."""
    eval_binarization: str = "none"
    """With dynamic binarization of training batches: how validation and test images are
    evaluated. none: grey values; static: binarized once, with a fixed seed per split (the
    VampPrior / Exemplar VAE protocol)."""

    noise: str = "native"
    """Where the training noise (the reparameterization eps, the objective's extra samples, the
    dynamic binarization) comes from. native: each framework's own random streams (fast, on the
    device); shared: one NumPy stream both frameworks read (`vaecommon.schedule.
    shared_epoch_noise`), so a JAX run and a torch run of one config follow the same trajectory
    (costs a host draw and a host-to-device copy of the epoch's noise)."""

    def replace(self, **changes: Any) -> "TrainConfig":
        return dataclasses.replace(self, **changes)


_CHOICES = {
    "optimizer": (None, "adam", "adamw", "sgd", "adam_norm_grad"),
    "eval_binarization": ("none", "static"),
    "noise": ("native", "shared"),
    "schedule": ("constant", "cosine"),
    "reduction": ("mean", "sum"),
    "precision": ("float32", "bfloat16"),
    "init": ("default", "torch"),
    "binarization": (None, "none", "static", "dynamic"),
    "dataset": (*DATASETS,),
    "data_source": (*SOURCES,),
}

# The precisions each framework computes in: the torch trainer has no bfloat16 path, so a torch
# run with precision="bfloat16" is refused instead of silently training in float32.
PRECISIONS = {"jax": ("float32", "bfloat16"), "torch": ("float32",)}

SEED_MAX = 2**32 - 1  # jax.random.key takes a uint32-range seed; torch would take 2**64 - 1


class ConfigError(ValueError):
    """An invalid TrainConfig field; the one-line message names the field, the value and what
    is valid (`TrainConfig.<field> must be <valid>, got <value>`)."""


_PRESET = "the preset's"
# Every field's type and range (choice fields are in _CHOICES; model, model_overrides,
# objective, likelihood and objective_params are checked against presets / objectives).
_FIELDS: dict[str, Param] = {p.name: p for p in [
    Param("image_size", None, "int", low=1, optional=True, none_means=_PRESET),
    Param("lr", None, "float", low=0.0, low_open=True, optional=True, none_means=_PRESET),
    Param("weight_decay", None, "float", low=0.0, optional=True, none_means=_PRESET),
    Param("momentum", 0.0, "float", low=0.0, high=1.0, high_open=True),
    Param("warmup_steps", 0, "int", low=0),
    Param("grad_clip", None, "float", low=0.0, low_open=True, optional=True, none_means="no clipping"),
    Param("batch_size", None, "int", low=1, optional=True, none_means=_PRESET),
    Param("epochs", None, "int", low=1, optional=True, none_means=_PRESET),
    Param("seed", 0, "int", low=0, high=SEED_MAX),
    Param("eval_every", 1, "int", low=0),
    Param("eval_batch_size", 500, "int", low=1),
    Param("nll_samples", 0, "int", low=0),
    Param("final_nll_samples", 5000, "int", low=0),
    Param("nll_limit", None, "int", low=1, optional=True, none_means="all test examples"),
    Param("checkpoint_every", 1, "int", low=0),
    Param("keep_checkpoints", 3, "int", low=1),
    Param("figures_every", 0, "int", low=0),
    Param("logvar_clamp", None, "float", low=0.0, low_open=True, optional=True, none_means="off"),
    Param("limit_train", None, "int", low=1, optional=True, none_means="all"),
    Param("limit_test", None, "int", low=1, optional=True, none_means="all"),
    Param("batch_log_every", 1, "int", low=1),
    Param("validation", 0, "int", low=0),
    Param("early_stopping", 0, "int", low=0),
    Param("kl_warmup_epochs", None, "int", low=0, optional=True, none_means=_PRESET),
]}


def _fail(name: str, valid: str, value: Any) -> ConfigError:
    return ConfigError(f"TrainConfig.{name} must be {valid}, got {value!r}")


def _check(name: str, p: Param, value: Any) -> None:
    if not p.is_valid(value):
        raise _fail(name, p.describe(), value)


def _check_choice(name: str, value: Any, valid: tuple) -> None:
    if value not in valid:
        text = "one of " + ", ".join(v for v in valid if v is not None)
        raise _fail(name, text + (", or None (the preset's)" if None in valid else ""), value)


def validate(cfg: TrainConfig, *, framework: str | None = None) -> None:
    """Check every field of `cfg` (resolved or not) before anything is built or compiled.

    Fields left as None take the preset's default, so None is valid where `resolve` fills it.
    The objective's parameters are checked against `vaecommon.objectives` (names, required ones,
    ranges) for the objective and likelihood the run will use (the preset's where None).

    Args:
      cfg: the config.
      framework: "jax" or "torch" to also check what only one framework supports (precision,
        see `PRECISIONS`); None: the checks common to both.
    Raises:
      ConfigError: the first invalid field, in one line: `TrainConfig.<field> must be <valid>,
        got <value>` (objective parameters: `TrainConfig.objective_params: objective 'beta_vae'
        has no parameter 'betta'; valid: beta`).
    """
    if not isinstance(cfg, TrainConfig):
        raise ConfigError(f"expected a TrainConfig, got {type(cfg).__name__}")
    if framework is not None and framework not in PRECISIONS:
        raise ValueError(f"framework must be one of {', '.join(PRECISIONS)} or None, got {framework!r}")
    # model and model_overrides: the preset table owns their checks (and its messages)
    if not isinstance(cfg.model_overrides, dict):
        raise _fail("model_overrides", "a dict of overrides", cfg.model_overrides)
    if not isinstance(cfg.model, str) or cfg.model not in presets.PRESETS:
        raise ConfigError(f"TrainConfig.model: unknown model preset {cfg.model!r}; "
                          f"valid presets: {', '.join(presets.PRESETS)}")
    try:
        spec = presets.get_spec(cfg.model, **cfg.model_overrides)
    except (KeyError, TypeError, ValueError) as e:
        raise ConfigError(f"TrainConfig.model_overrides={cfg.model_overrides!r}: "
                          f"{e.args[0] if e.args else e}") from None
    for name, valid in _CHOICES.items():
        _check_choice(name, getattr(cfg, name), valid)
    if framework is not None and cfg.precision not in PRECISIONS[framework]:
        raise _fail("precision", f"one of {', '.join(PRECISIONS[framework])} for {framework} "
                    "(its trainer has no other compute path)", cfg.precision)
    _check_choice("objective", cfg.objective, (None, *objectives.OBJECTIVES))
    _check_choice("likelihood", cfg.likelihood, (None, *objectives.LIKELIHOODS))
    if cfg.data_dir is not None and not (isinstance(cfg.data_dir, str) and cfg.data_dir):
        raise _fail("data_dir", "a non-empty path, or None (the documented default)", cfg.data_dir)
    for name, p in _FIELDS.items():
        _check(name, p, getattr(cfg, name))
    if cfg.noise == "shared" and cfg.init != "torch":
        raise _fail("init", "'torch' with noise 'shared' (both frameworks then start from one "
                    "NumPy draw of PyTorch's default init; pass --init torch)", cfg.init)
    objective = cfg.objective or spec.objective
    if objectives.OBJECTIVES[objective].needs_vae and not spec.is_vae:
        raise _fail("objective", f"'reconstruction' for the autoencoder preset {spec.name!r} "
                    "(the others need a VAE's mean and log-variance)", objective)
    _check_objective_params(cfg, objective, cfg.likelihood or spec.likelihood,
                            spec.batch_size if cfg.batch_size is None else cfg.batch_size)


def _check_objective_params(cfg: TrainConfig, objective: str, likelihood: str,
                            batch_size: int) -> None:
    params = cfg.objective_params
    if not isinstance(params, dict):
        raise _fail("objective_params", "a dict of keyword parameters", params)
    valid = objectives.settable_params(objective, likelihood)
    own = [p.name for p in objectives.OBJECTIVES[objective].params]
    who = f"objective {objective!r}"
    if any(p.name not in own for p in valid.values()):
        who += f" with likelihood {likelihood!r}"
    for name, value in params.items():
        if name not in valid:
            hint = ""
            trained = [p for p in objectives.LIKELIHOODS[likelihood].params if p.name == name]
            if trained:
                hint = f" ({name!r} is trained with the model, not set)"
            raise ConfigError(f"TrainConfig.objective_params: {who} has no parameter {name!r}{hint}; "
                              f"valid: {', '.join(valid) or '(none)'}")
        if not valid[name].is_valid(value):
            raise ConfigError(f"TrainConfig.objective_params[{name!r}] ({who}) must be "
                              f"{valid[name].describe()}, got {value!r}")
    for name, p in valid.items():
        if p.default is objectives.REQUIRED and name not in params:
            raise ConfigError(f"TrainConfig.objective_params: {who} needs parameter {name!r} "
                              f"({p.describe()})")
    one_of = objectives.OBJECTIVES[objective].one_of
    if one_of and all(params.get(n) is None for n in one_of):
        raise ConfigError(f"TrainConfig.objective_params: {who} needs one of "
                          f"{', '.join(one_of)}")
    if objective == "beta_tcvae" and params.get("sampling") == "mss" \
            and params["dataset_size"] < batch_size - 1:
        # stratified sampling weighs (N - M) / (N M) with M = B - 1: negative (log: NaN) if N < M
        raise ConfigError(f"TrainConfig.objective_params['dataset_size'] ({who}, sampling 'mss') "
                          f"must be >= batch_size - 1 = {batch_size - 1}, got {params['dataset_size']!r}")


def resolve(cfg: TrainConfig, *, framework: str | None = None) -> TrainConfig:
    """Validate `cfg` (`validate`), then fill the fields left as None from the model preset.

    Args:
      cfg: the config.
      framework: passed to `validate` ("jax", "torch" or None).
    Raises:
      ConfigError: an invalid field, named in one line.
    """
    validate(cfg, framework=framework)
    spec = presets.get_spec(cfg.model, **cfg.model_overrides)
    # `is None`, never `or`: a 0 is refused by validate, not silently replaced by the default
    out = cfg.replace(
        objective=spec.objective if cfg.objective is None else cfg.objective,
        likelihood=spec.likelihood if cfg.likelihood is None else cfg.likelihood,
        binarization=spec.binarization if cfg.binarization is None else cfg.binarization,
        lr=spec.lr if cfg.lr is None else cfg.lr,
        weight_decay=spec.weight_decay if cfg.weight_decay is None else cfg.weight_decay,
        batch_size=spec.batch_size if cfg.batch_size is None else cfg.batch_size,
        epochs=spec.epochs if cfg.epochs is None else cfg.epochs,
        image_size=spec.input_shape[1] if cfg.image_size is None else cfg.image_size,
        optimizer=spec.optimizer if cfg.optimizer is None else cfg.optimizer,
        kl_warmup_epochs=spec.kl_warmup_epochs if cfg.kl_warmup_epochs is None else cfg.kl_warmup_epochs,
    )
    # the options of the VampPrior protocol that only make sense together
    if out.early_stopping and not out.validation:
        raise ConfigError("TrainConfig.early_stopping needs a validation split (--validation N)")
    if out.kl_warmup_epochs and out.objective not in ("elbo", "kl_warmup"):
        raise ConfigError(f"TrainConfig.kl_warmup_epochs weights the KL of objective elbo or "
                          f"kl_warmup, not {out.objective!r}")
    if out.eval_binarization != "none" and out.binarization != "dynamic":
        raise ConfigError("TrainConfig.eval_binarization applies to dynamic binarization only "
                          f"(binarization is {out.binarization!r})")
    return out



def from_dict(d: dict[str, Any]) -> TrainConfig:
    """Build a TrainConfig from a dict (e.g. a run folder's config.json), refusing unknown keys."""
    names = {f.name for f in dataclasses.fields(TrainConfig)}
    unknown = sorted(set(d) - names)
    if unknown:
        raise ValueError(f"unknown TrainConfig field(s) {unknown}; valid fields: {sorted(names)}")
    d = dict(d)
    return TrainConfig(**d)



# Fields that change only what is logged, evaluated or saved, never the training trajectory: a run
# may be resumed with other values (e.g. a checkpoint every 5 epochs instead of at the end).
RESUME_FREE = ("eval_every", "eval_batch_size", "nll_samples", "final_nll_samples", "nll_limit",
               "checkpoint_every", "keep_checkpoints", "figures_every", "batch_log_every")


def check_resumable(saved: dict[str, Any] | None, cfg: TrainConfig, where: str) -> None:
    """Raise if the checkpoint at `where` was written with a config that trains differently.

    `saved` is the config dict stored with the checkpoint (None: an old checkpoint without one,
    accepted). Fields in `RESUME_FREE` may differ.

    Raises:
      ValueError: naming each differing field with its saved and requested value.
    """
    if saved is None:
        return
    now = dataclasses.asdict(cfg)
    # a constant learning rate does not depend on the total step count: more (or fewer) epochs
    # continue the same trajectory; a cosine schedule would change shape, so it is refused
    free = RESUME_FREE + (("epochs",) if now.get("schedule") == saved.get("schedule") == "constant"
                          else ())
    # a field added after the checkpoint was written counts as its default there
    added = {f.name: f.default for f in dataclasses.fields(TrainConfig)
             if f.default is not dataclasses.MISSING}
    saved = {**{k: v for k, v in added.items() if k not in saved}, **saved}
    diff = [f"{k}: {saved.get(k, '<missing>')!r} -> {now.get(k, '<missing>')!r}"
            for k in sorted(set(saved) | set(now))
            if k not in free and saved.get(k, "<missing>") != now.get(k, "<missing>")]
    if diff:
        why = (" (the cosine schedule's shape depends on the total number of epochs)"
               if any(d.startswith("epochs:") for d in diff) else "")
        raise ValueError(f"{where}: the checkpoint was written with a different config ("
                         + "; ".join(diff) + f"){why}; use a new run folder or the same settings")
