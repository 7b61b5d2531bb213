"""Canonical weights <-> PyTorch models. Twin: `jaxvae/convert.py`.

Canonical weights are a flat `dict[str, np.ndarray]` in PyTorch `state_dict` naming and layout,
so on this side the conversion is the identity (NumPy <-> torch, copies both ways). Every rename
and transpose towards Flax lives in `jaxvae.convert`. `load_torch_file` reads a notebook's
`torch.save` checkpoint safely (`weights_only=True`).
"""

from __future__ import annotations

import dataclasses
from pathlib import Path
from typing import Any, Mapping

import numpy as np
import torch
from torch import nn

from torchvae import models
from vaecommon import presets
from vaecommon.weights import (TrainingState, WeightsFileError, WeightsMismatchError,
                               check_training_state, check_weights, counts_steps, optimizer_slots)

__all__ = ["canonical_shapes", "to_canonical", "load_canonical_into", "from_canonical",
           "training_state_to_canonical", "training_state_from_canonical", "load_torch_file"]


def canonical_shapes(model: nn.Module) -> dict[str, tuple[int, ...]]:
    """canonical name -> shape that `model` needs (its state_dict's)."""
    return {k: tuple(v.shape) for k, v in model.state_dict().items()}


def to_canonical(model: nn.Module) -> dict[str, np.ndarray]:
    """The model's `state_dict` as NumPy arrays (copies: later training does not change them).

    Returns:
      dict name -> np.ndarray (float32 weights, int64 `num_batches_tracked`).
    """
    return {k: v.detach().cpu().numpy().copy() for k, v in model.state_dict().items()}


def load_canonical_into(model: nn.Module, weights: Mapping[str, np.ndarray]) -> nn.Module:
    """Overwrite every parameter and buffer of `model` (in place) from canonical weights.

    Args:
      model: the torch model to fill.
      weights: canonical name -> array; float arrays are cast to the model's dtype,
        `num_batches_tracked` stays int64.
    Returns:
      `model`.
    Raises:
      WeightsMismatchError: missing or unexpected tensors or a shape mismatch (all named).
    """
    spec = getattr(model, "spec", None)
    what = f"preset {spec.name!r} (torch)" if spec is not None else type(model).__name__
    target = model.state_dict()
    check_weights({k: tuple(v.shape) for k, v in target.items()}, weights, what=what)
    tensors = {}
    for k, t in target.items():
        a = np.asarray(weights[k])
        if t.dtype.is_floating_point != np.issubdtype(a.dtype, np.floating):
            raise WeightsMismatchError(f"{k}: model holds {t.dtype}, weights hold {a.dtype}")
        tensors[k] = torch.from_numpy(np.array(a, order="C")).to(t.dtype)
    model.load_state_dict(tensors, strict=True)
    return model


def from_canonical(model_or_name: nn.Module | str, weights: Mapping[str, np.ndarray],
                   **overrides: Any) -> nn.Module:
    """A model holding `weights`.

    Args:
      model_or_name: a model to fill in place, or a preset name to build (with `overrides`, e.g.
        `image_size=64`; no init is computed: every value comes from `weights`).
      weights: canonical weights.
    Returns:
      The filled model (train mode, as built; call `.eval()` for inference with BatchNorm).
    """
    if isinstance(model_or_name, str):
        spec = presets.get_spec(model_or_name, **overrides)
        with torch.device("meta"):  # shapes only; load_state_dict fills every tensor below
            model = models.FAMILIES[spec.family](spec)
        return load_canonical_into(model.to_empty(device="cpu"), weights)
    if overrides:
        raise TypeError("overrides apply only when building from a preset name")
    return load_canonical_into(model_or_name, weights)


# ---- whole training states ------------------------------------------------------------------------
# torch.optim keeps its state per parameter under the canonical slot names already; the state is
# created lazily at the first step, so a state without steps is all zeros in canonical form.


def training_state_to_canonical(trainer, *, epoch: int) -> TrainingState:
    """A torch training state in canonical form (`vaecommon.weights.TrainingState`).

    Args:
      trainer: a `torchvae.train.Trainer` (its model, optimizer, scheduler and step).
      epoch: completed epochs (the checkpoint's).
    Raises:
      ValueError: a parameter without optimizer state after the first step, or per-parameter
        step counts that differ (not a state torchvae.train wrote).
    """
    cfg = trainer.cfg
    weights = to_canonical(trainer.model)
    slots = optimizer_slots(cfg.optimizer, cfg.momentum)
    moments: dict[str, dict[str, np.ndarray]] = {s: {} for s in slots}
    counts = set()
    for name, p in trainer.model.named_parameters():
        state = trainer.optimizer.state.get(p, {})
        for slot in slots:
            if slot in state:
                moments[slot][name] = state[slot].detach().cpu().numpy().copy()
            elif trainer.step == 0:
                moments[slot][name] = np.zeros_like(weights[name])
            else:
                raise ValueError(f"parameter {name} has no optimizer state {slot!r} after "
                                 f"{trainer.step} steps (did it get no gradient?)")
        if "step" in state:
            counts.add(int(state["step"]))
    if len(counts) > 1:
        raise ValueError(f"the parameters' optimizer step counts differ: {sorted(counts)}")
    opt_step = (counts.pop() if counts else 0) if counts_steps(cfg.optimizer) else None
    return TrainingState(weights, moments, opt_step, int(trainer.step), int(epoch),
                         dataclasses.asdict(cfg))


def training_state_from_canonical(trainer, ts: TrainingState):
    """Load a canonical training state into `trainer` (built from the state's config), in place:
    weights, optimizer state, the scheduler's position and learning rate, the step. Returns it.

    Raises:
      WeightsMismatchError: missing, unexpected or mis-shaped weights or optimizer arrays, each
        named; an optimizer state that is not the config's optimizer's.
    """
    names = [k for k, _ in trainer.model.named_parameters()]
    check_training_state(ts, names, what=f"preset {trainer.cfg.model!r} (torch)")
    load_canonical_into(trainer.model, ts.weights)
    slots = optimizer_slots(trainer.cfg.optimizer, trainer.cfg.momentum)
    taken = ts.optimizer_step if ts.optimizer_step is not None else ts.step
    state: dict[int, dict[str, torch.Tensor]] = {}
    if slots and taken > 0:  # torch creates the state at the first step
        for i, name in enumerate(names):
            entry = {} if ts.optimizer_step is None else {
                "step": torch.tensor(float(ts.optimizer_step), dtype=torch.float32)}
            for slot in slots:
                entry[slot] = torch.from_numpy(np.array(ts.moments[slot][name], np.float32, order="C"))
            state[i] = entry
    sched = trainer.scheduler
    # LambdaLR's own arithmetic at position `step`: lr = base_lr * factor(step)
    lrs = [base * fn(ts.step) for base, fn in zip(sched.base_lrs, sched.lr_lambdas)]
    opt_sd = trainer.optimizer.state_dict()
    opt_sd["state"] = state
    for group, lr in zip(opt_sd["param_groups"], lrs):
        group["lr"] = lr
    trainer.optimizer.load_state_dict(opt_sd)
    sched_sd = sched.state_dict()
    sched_sd.update(last_epoch=ts.step, _step_count=ts.step + 1, _last_lr=list(lrs))
    sched.load_state_dict(sched_sd)
    trainer.step = int(ts.step)
    return trainer


def load_torch_file(path: str | Path) -> dict[str, np.ndarray]:
    """Canonical weights from a `torch.save` file (a notebook's checkpoint).

    Always `torch.load(path, weights_only=True, map_location="cpu")`: a file that needs arbitrary
    unpickling (a whole pickled nn.Module) is refused rather than executed. Accepts a bare
    state_dict, or a dict holding one under "model" or "state_dict" (common training checkpoints).

    Returns:
      dict name -> np.ndarray.
    Raises:
      FileNotFoundError: no such file.
      WeightsFileError: not a torch file, a pickled module, or no state_dict inside.
    """
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"no torch checkpoint at {path}")
    with open(path, "rb") as f:
        head = f.read(4)
    # torch.save writes a zip archive (PK\x03\x04); the legacy format starts with a pickle
    # protocol byte (0x80). Anything else would only give torch's cryptic unpickler error.
    if not (head.startswith(b"PK\x03\x04") or head[:1] == b"\x80"):
        raise WeightsFileError(
            f"{path} is not a torch.save file (it starts with {head!r}, not a zip or pickle header)"
        )
    try:
        obj = torch.load(path, weights_only=True, map_location="cpu")
    except Exception as e:  # UnpicklingError for pickled modules; RuntimeError for corrupt files
        first = str(e).strip().splitlines()[0] if str(e).strip() else type(e).__name__
        raise WeightsFileError(
            f"{path} cannot be read as a state_dict with torch.load(weights_only=True) "
            f"({type(e).__name__}: {first}). If it holds a whole pickled model, re-save it from a "
            "trusted session with torch.save(model.state_dict(), path)."
        ) from e
    if isinstance(obj, dict) and not _is_state_dict(obj):
        for key in ("model", "state_dict"):
            if key in obj and isinstance(obj[key], dict) and _is_state_dict(obj[key]):
                obj = obj[key]
                break
    if not isinstance(obj, dict) or not _is_state_dict(obj):
        keys = list(obj)[:10] if isinstance(obj, dict) else None
        raise WeightsFileError(
            f"{path} holds {type(obj).__name__}"
            + (f" with keys {keys}" if keys is not None else "")
            + ", not a state_dict (str -> tensor), nor a dict with one under 'model' or 'state_dict'"
        )
    return {k: v.detach().cpu().numpy().copy() for k, v in obj.items()}


def _is_state_dict(d: dict) -> bool:
    return len(d) > 0 and all(isinstance(k, str) and isinstance(v, torch.Tensor) for k, v in d.items())
