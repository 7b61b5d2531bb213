"""Canonical weights on disk: safetensors or .npz, framework free (NumPy only).

Canonical weights are a flat `dict[str, np.ndarray]` in PyTorch `state_dict` naming and layout
(see `jaxvae.convert` / `torchvae.convert`). Either framework writes and reads them here, so a
file written by one loads into the other. The format follows the file name: ".safetensors"
(default for anything else) or ".npz"; loading detects the format from the file's first bytes.

Also the one name/shape check both converters run before loading, so the two frameworks report
a mismatch with the same message, and `TrainingState`: a whole training state (weights, optimizer
moments and counts, step, epoch, config) in the same names and layout, through which a run moves
between the frameworks (`jaxvae.convert` / `torchvae.convert`.training_state_*).
"""

from __future__ import annotations

import json
import os
import struct
import zipfile
from pathlib import Path
from typing import Any, Mapping, NamedTuple

import numpy as np

__all__ = [
    "WeightsFileError", "WeightsMismatchError", "save_weights", "load_weights", "check_weights",
    "shared_torch_init", "TrainingState", "optimizer_slots", "counts_steps", "check_training_state",
]

_META_KEY = "__metadata__"


def shared_torch_init(canonical: Mapping[str, np.ndarray], seed: int) -> dict[str, np.ndarray]:
    """PyTorch's default initialisation drawn with NumPy, for canonical weights (PyTorch's names
    and layouts): the same initial weights in both frameworks (TrainConfig.noise "shared").

    Every weight of two or more dimensions is U(-b, b) with b = 1 / sqrt(fan_in) and fan_in =
    shape[1] * prod(shape[2:]) (torch's `kaiming_uniform_(a=sqrt(5))` rule, also for
    ConvTranspose's (in, out, kH, kW) weights); the bias beside it uses the same bound;
    BatchNorm's affine parameters and running statistics, and parameters with no weight beside
    them, keep the values given (their init is deterministic). Drawn in sorted-name order from
    PCG64 seeded by (seed, STREAMS["init"]).
    """
    from vaecommon.schedule import STREAMS

    rng = np.random.default_rng([int(seed), STREAMS["init"], 1])
    out = {k: np.array(v, copy=True) for k, v in canonical.items()}
    for name in sorted(canonical):
        prefix, _, leaf = name.rpartition(".")
        if f"{prefix}.running_mean" in canonical:
            continue  # BatchNorm
        owner = canonical.get(f"{prefix}.weight") if leaf == "bias" else canonical[name]
        if leaf not in ("weight", "bias") or owner is None or np.ndim(owner) < 2:
            continue
        shape = np.shape(owner)
        bound = 1.0 / np.sqrt(shape[1] * int(np.prod(shape[2:], dtype=np.int64)))
        out[name] = rng.uniform(-bound, bound, np.shape(canonical[name])).astype(
            np.asarray(canonical[name]).dtype)
    return out


class WeightsFileError(ValueError):
    """A weights file is missing, truncated, corrupt, or not a canonical weights file."""


class WeightsMismatchError(ValueError):
    """Weights do not fit a model: missing or unexpected tensor names, or wrong shapes."""


def check_weights(expected: Mapping[str, tuple[int, ...]], weights: Mapping[str, np.ndarray], *,
                  what: str = "model") -> None:
    """Raise `WeightsMismatchError` naming every missing, unexpected or mis-shaped tensor.

    Args:
      expected: canonical name -> shape (PyTorch layout) the model needs.
      weights: canonical name -> array offered.
      what: how to call the model in the message (e.g. "preset 'conv_vae' (jax)").
    """
    missing = [k for k in expected if k not in weights]
    unexpected = [k for k in weights if k not in expected]
    shapes = [
        f"{k}: model needs {tuple(expected[k])}, got {tuple(np.shape(weights[k]))}"
        for k in expected
        if k in weights and tuple(np.shape(weights[k])) != tuple(expected[k])
    ]
    if missing or unexpected or shapes:
        parts = []
        if missing:
            parts.append(f"missing tensors: {missing}")
        if unexpected:
            parts.append(f"unexpected tensors: {unexpected}")
        if shapes:
            parts.append("shape mismatches: " + "; ".join(shapes))
        raise WeightsMismatchError(f"weights do not fit {what}: " + " | ".join(parts))


def _as_arrays(weights: Mapping[str, np.ndarray]) -> dict[str, np.ndarray]:
    out = {}
    for k, v in weights.items():
        if not isinstance(k, str) or not k or k == _META_KEY:
            raise ValueError(f"invalid tensor name {k!r}")
        a = np.array(v, order="C")  # (np.ascontiguousarray would turn 0-d counters into 1-d)
        if a.dtype.kind not in "biuf":
            raise ValueError(f"tensor {k!r} has non-numeric dtype {a.dtype}")
        out[k] = a
    return out


def save_weights(path: str | Path, weights: Mapping[str, np.ndarray], *,
                 metadata: Mapping[str, str] | None = None) -> Path:
    """Write canonical weights (+ optional string metadata) atomically.

    Args:
      path: destination; ".npz" writes a NumPy archive, anything else safetensors.
      weights: canonical name -> array (numeric dtypes).
      metadata: str -> str pairs stored in the file header.
    Returns:
      The path written.
    """
    path = Path(path)
    arrays = _as_arrays(weights)
    md = {str(k): str(v) for k, v in (metadata or {}).items()}
    tmp = path.with_name(path.name + ".tmp")
    path.parent.mkdir(parents=True, exist_ok=True)
    if path.suffix == ".npz":
        # written entry by entry (np.savez's keyword interface would reserve names like "file");
        # the result is an ordinary .npz that np.load reads without pickle.
        with zipfile.ZipFile(tmp, "w", compression=zipfile.ZIP_STORED) as zf:
            for k, a in arrays.items():
                with zf.open(k + ".npy", "w", force_zip64=True) as f:
                    np.lib.format.write_array(f, a, allow_pickle=False)
            with zf.open(_META_KEY + ".npy", "w") as f:
                np.lib.format.write_array(f, np.array(json.dumps(md)), allow_pickle=False)
    else:
        from safetensors.numpy import save_file

        save_file(arrays, str(tmp), metadata=md)
    os.replace(tmp, path)
    return path


def _foreign(path: Path, why: str) -> WeightsFileError:
    return WeightsFileError(
        f"{path} is not a canonical weights file ({why}); expected safetensors or .npz written by "
        "vaecommon.weights.save_weights. A torch.save() checkpoint loads with "
        "torchvae.convert.load_torch_file."
    )


def load_weights(path: str | Path) -> tuple[dict[str, np.ndarray], dict[str, str]]:
    """Read canonical weights written by `save_weights` (either format).

    Returns:
      (weights, metadata): canonical name -> array, and the str -> str metadata.
    Raises:
      FileNotFoundError: no such file.
      WeightsFileError: an empty, truncated, corrupt or foreign file (the message says which).
    """
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"no weights file at {path}")
    size = path.stat().st_size
    with open(path, "rb") as f:
        head = f.read(9)
    if size == 0:
        raise WeightsFileError(f"{path} is empty (truncated write?)")
    if head[:4] == b"PK\x03\x04":
        return _load_npz(path)
    if len(head) == 9 and head[8:9] == b"{":
        (n,) = struct.unpack("<Q", head[:8])
        if 8 + n > size:
            raise WeightsFileError(
                f"{path} is truncated: its safetensors header needs {8 + n} bytes, the file has {size}"
            )
        return _load_safetensors(path)
    if head[:1] == b"\x80":
        raise _foreign(path, "it looks like a Python pickle")
    raise _foreign(path, f"unrecognised leading bytes {head[:8]!r}")


def _load_safetensors(path: Path):
    from safetensors import safe_open

    try:
        with safe_open(str(path), framework="numpy") as f:
            md = dict(f.metadata() or {})
            weights = {k: f.get_tensor(k) for k in f.keys()}
    except Exception as e:  # safetensors raises its own SafetensorError for bad headers/sizes
        raise WeightsFileError(f"{path} is a corrupt or truncated safetensors file: {e}") from e
    return weights, md


def _load_npz(path: Path):
    try:
        with zipfile.ZipFile(path) as zf:
            names = zf.namelist()
            bad = [n for n in names if not n.endswith(".npy")]
            if bad:
                raise _foreign(path, f"a zip archive with non-.npy entries such as {bad[:3]}")
            weights, md = {}, {}
            for n in names:
                with zf.open(n) as f:
                    a = np.lib.format.read_array(f, allow_pickle=False)
                if n == _META_KEY + ".npy":
                    md = json.loads(str(a))
                else:
                    weights[n[: -len(".npy")]] = a
    except WeightsFileError:
        raise
    except (zipfile.BadZipFile, EOFError, ValueError, OSError) as e:
        raise WeightsFileError(f"{path} is a corrupt or truncated .npz file: {e}") from e
    return weights, md


# ---- whole training states ------------------------------------------------------------------------


def optimizer_slots(optimizer: str, momentum: float = 0.0) -> tuple[str, ...]:
    """The per-parameter optimizer arrays of a resolved config, in torch.optim's state names:
    Adam, AdamW and AdamNormGrad hold "exp_avg" and "exp_avg_sq" (optax's mu and nu); SGD holds
    "momentum_buffer" (optax.trace's trace) when momentum is on, nothing otherwise."""
    if optimizer in ("adam", "adamw", "adam_norm_grad"):
        return ("exp_avg", "exp_avg_sq")
    if optimizer == "sgd":
        return ("momentum_buffer",) if momentum else ()
    raise ValueError(f"unknown optimizer {optimizer!r}; valid: adam, adamw, sgd, adam_norm_grad")


def counts_steps(optimizer: str) -> bool:
    """Whether the optimizer keeps its own update count (Adam's t: optax's `count`, torch's
    per-parameter "step"), apart from the trainer's step."""
    return optimizer in ("adam", "adamw", "adam_norm_grad")


class TrainingState(NamedTuple):
    """A whole training state in canonical (PyTorch) names and layouts, NumPy only.

    Attributes:
      weights: the model's canonical weights (params and buffers: BatchNorm statistics with
        int64 `num_batches_tracked`, a learned likelihood's `log_sigma`).
      moments: slot (`optimizer_slots`) -> parameter name -> array of the parameter's shape and
        layout. Zeros before the first step (torch creates its state lazily; optax starts at 0).
      optimizer_step: the optimizer's own update count (`counts_steps`), else None.
      step: optimizer steps the trainer took: also the learning-rate schedule's position (optax's
        ScaleByScheduleState.count, LambdaLR's last_epoch) and what the JAX noise keys fold in.
      epoch: completed epochs; with the config's seed it fixes the data order to come
        (`vaecommon.schedule.epoch_batches(seed, epoch)`).
      config: the resolved TrainConfig as a dict.
    """

    weights: dict[str, np.ndarray]
    moments: dict[str, dict[str, np.ndarray]]
    optimizer_step: int | None
    step: int
    epoch: int
    config: dict[str, Any]

    def arrays(self) -> dict[str, np.ndarray]:
        """Every array of the state under one flat name: "model/<name>",
        "optimizer/<slot>/<name>", "optimizer/step", "trainer/step", "trainer/epoch"."""
        out = {f"model/{k}": v for k, v in self.weights.items()}
        for slot, arrays in self.moments.items():
            out.update({f"optimizer/{slot}/{k}": v for k, v in arrays.items()})
        if self.optimizer_step is not None:
            out["optimizer/step"] = np.array(self.optimizer_step, np.int64)
        out["trainer/step"] = np.array(self.step, np.int64)
        out["trainer/epoch"] = np.array(self.epoch, np.int64)
        return out


def check_training_state(state: TrainingState, param_names: list[str], *, what: str) -> None:
    """Raise `WeightsMismatchError` unless `state` holds exactly the optimizer arrays its
    config's optimizer keeps, one per parameter in `param_names` with that parameter's shape,
    and non-negative counts (the weights themselves are checked by the converters).

    Args:
      state: the canonical training state.
      param_names: canonical names of the trainable parameters of the target model.
      what: how to call the target in the message (e.g. "preset 'conv_vae' (jax)").
    """
    cfg = state.config
    slots = optimizer_slots(cfg["optimizer"], cfg.get("momentum") or 0.0)
    if sorted(state.moments) != sorted(slots):
        raise WeightsMismatchError(
            f"training state does not fit {what}: optimizer {cfg['optimizer']!r} keeps "
            f"{list(slots)}, the state holds {sorted(state.moments)}")
    for slot in slots:
        check_weights({k: np.shape(state.weights[k]) for k in param_names if k in state.weights},
                      state.moments[slot], what=f"{what}, optimizer state {slot!r}")
    if counts_steps(cfg["optimizer"]) != (state.optimizer_step is not None):
        raise WeightsMismatchError(f"training state does not fit {what}: optimizer "
                                   f"{cfg['optimizer']!r} with optimizer_step {state.optimizer_step}")
    for name, v in (("step", state.step), ("epoch", state.epoch),
                    ("optimizer_step", state.optimizer_step or 0)):
        if int(v) < 0:
            raise WeightsMismatchError(f"training state: {name} {v} is negative")
