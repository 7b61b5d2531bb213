"""Canonical weights on disk: safetensors or .npz, framework free (NumPy only).

Canonical weights are a flat `dict[str, np.ndarray]` in PyTorch `state_dict` naming and layout
(see `jaxvae.convert` / `torchvae.convert`). Either framework writes and reads them here, so a
file written by one loads into the other. The format follows the file name: ".safetensors"
(default for anything else) or ".npz"; loading detects the format from the file's first bytes.

Also the one name/shape check both converters run before loading, so the two frameworks report
a mismatch with the same message.
"""

from __future__ import annotations

import json
import os
import struct
import zipfile
from pathlib import Path
from typing import Mapping

import numpy as np

__all__ = [
    "WeightsFileError", "WeightsMismatchError", "save_weights", "load_weights", "check_weights",
    "shared_torch_init",
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
