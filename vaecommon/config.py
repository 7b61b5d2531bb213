"""`TrainConfig`: the one training configuration, shared by `jaxvae.train` and `torchvae.train`.

Both trainers read the same fields with the same meaning, so the same config (and seed) gives
comparable runs side by side. Derived values (the preset's defaults for fields left as None) are
resolved by `resolve`, never written back by the trainers. Framework-free.
"""

from __future__ import annotations

import dataclasses
import json
from dataclasses import dataclass, field
from typing import Any

from vaecommon import presets
from vaecommon.datasets import DATASETS, SOURCES

__all__ = ["TrainConfig", "resolve", "to_json", "from_json", "from_dict", "RESUME_FREE", "check_resumable"]


@dataclass(frozen=True)
class TrainConfig:
    """One training run. Fields left as None take the model preset's default (see `resolve`)."""

    model: str = "pytorch_examples"
    """Model preset name (see `list_models()`)."""
    model_overrides: dict[str, Any] = field(default_factory=dict)
    """Overrides passed to `build_model` (latent_dim, hidden, reparam, image_size, ...)."""
    init: str = "default"
    """Parameter init: "default" (each framework's own) or "torch" (PyTorch's init in both)."""
    objective: str | None = None
    """Objective name in `losses.OBJECTIVES` (elbo, beta_vae, ...); None: the preset's."""
    objective_params: dict[str, Any] = field(default_factory=dict)
    """Keyword parameters of the objective (beta, warmup_steps, capacity, ...)."""
    likelihood: str | None = None
    """Reconstruction term name in `losses.RECONSTRUCTION`; None: the preset's."""
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
    """Compute dtype: float32, or bfloat16 (matmuls in bf16, params and loss in float32; JAX)."""
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

    def replace(self, **changes: Any) -> "TrainConfig":
        return dataclasses.replace(self, **changes)


_CHOICES = {
    "optimizer": (None, "adam", "adamw", "sgd", "adam_norm_grad"),
    "eval_binarization": ("none", "static"),
    "schedule": ("constant", "cosine"),
    "reduction": ("mean", "sum"),
    "precision": ("float32", "bfloat16"),
    "init": ("default", "torch"),
    "binarization": (None, "none", "static", "dynamic"),
    "dataset": (*DATASETS,),
    "data_source": (*SOURCES,),
}


def resolve(cfg: TrainConfig) -> TrainConfig:
    """Fill the fields left as None from the model preset and validate every choice.

    Raises:
      KeyError / TypeError / ValueError naming the field and the valid values.
    """
    for name, valid in _CHOICES.items():
        value = getattr(cfg, name)
        if value not in valid:
            raise ValueError(f"TrainConfig.{name}={value!r} is not valid; choose from {valid}")
    spec = presets.get_spec(cfg.model, **cfg.model_overrides)
    out = cfg.replace(
        objective=cfg.objective or spec.objective,
        likelihood=cfg.likelihood or spec.likelihood,
        binarization=cfg.binarization or spec.binarization,
        lr=spec.lr if cfg.lr is None else cfg.lr,
        weight_decay=spec.weight_decay if cfg.weight_decay is None else cfg.weight_decay,
        batch_size=cfg.batch_size or spec.batch_size,
        epochs=spec.epochs if cfg.epochs is None else cfg.epochs,
        optimizer=cfg.optimizer or spec.optimizer,
        kl_warmup_epochs=spec.kl_warmup_epochs if cfg.kl_warmup_epochs is None else cfg.kl_warmup_epochs,
        image_size=cfg.image_size or spec.input_shape[1],
    )
    for name in ("batch_size", "eval_batch_size"):
        if getattr(out, name) < 1:
            raise ValueError(f"TrainConfig.{name} must be >= 1, got {getattr(out, name)}")
    if out.epochs < 0:
        raise ValueError(f"TrainConfig.epochs must be >= 0, got {out.epochs}")
    if out.lr <= 0:
        raise ValueError(f"TrainConfig.lr must be > 0, got {out.lr}")
    if out.batch_log_every < 1:
        raise ValueError(f"TrainConfig.batch_log_every must be >= 1, got {out.batch_log_every}")
    for name in ("validation", "early_stopping", "kl_warmup_epochs"):
        if getattr(out, name) < 0:
            raise ValueError(f"TrainConfig.{name} must be >= 0, got {getattr(out, name)}")
    if out.early_stopping and not out.validation:
        raise ValueError("TrainConfig.early_stopping needs a validation split (--validation N)")
    if out.kl_warmup_epochs and out.objective not in ("elbo", "kl_warmup"):
        raise ValueError(f"TrainConfig.kl_warmup_epochs weights the KL of objective elbo or "
                         f"kl_warmup, not {out.objective!r}")
    if out.eval_binarization != "none" and out.binarization != "dynamic":
        raise ValueError("TrainConfig.eval_binarization applies to dynamic binarization only "
                         f"(binarization is {out.binarization!r})")
    return out


def to_json(cfg: TrainConfig) -> str:
    return json.dumps(dataclasses.asdict(cfg), indent=2, sort_keys=True)


def from_dict(d: dict[str, Any]) -> TrainConfig:
    """Build a TrainConfig from a dict (e.g. a run folder's config.json), refusing unknown keys."""
    names = {f.name for f in dataclasses.fields(TrainConfig)}
    unknown = sorted(set(d) - names)
    if unknown:
        raise ValueError(f"unknown TrainConfig field(s) {unknown}; valid fields: {sorted(names)}")
    d = dict(d)
    return TrainConfig(**d)


def from_json(text: str) -> TrainConfig:
    return from_dict(json.loads(text))


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
