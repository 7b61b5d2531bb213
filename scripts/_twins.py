"""Which twin handles a run folder or a weights file: the command layer's choice.

A run folder names its framework in config.json; `twin_of(run)` imports the matching command API
(`jaxvae.api` or `torchvae.api`, which have the same public names) only when a command runs, so
`--help` is instant and a command needs only the framework of its input. The framework-free layer
(`vaecommon`) never names a twin; each twin lists its own checkpoints.
"""

from __future__ import annotations

import importlib
from pathlib import Path
from types import ModuleType
from typing import Any

from vaecommon import runinfo
from vaecommon.runinfo import RunFolderError

__all__ = ["API", "twin", "twin_of", "load_run", "read_weights_file", "write_weights_file"]

API = {"jax": "jaxvae.api", "torch": "torchvae.api"}
"""config.json "framework" -> the twin's command API."""


def twin(framework: str) -> ModuleType:
    """`jaxvae.api` or `torchvae.api`, imported now (RunFolderError if not installed)."""
    if framework not in API:
        raise RunFolderError(f"unknown framework {framework!r}; expected one of {sorted(API)}")
    try:
        return importlib.import_module(API[framework])
    except ImportError as e:
        raise RunFolderError(
            f"this needs the {framework} framework, which cannot be imported ({e}); install it "
            f"with pip install 'jaxvae[{framework}]'") from None


def twin_of(run_dir: str | Path) -> ModuleType:
    """The command API of the framework that wrote `run_dir`."""
    return twin(runinfo.framework_of(run_dir))


def load_run(run_dir: str | Path, step: int | None = None):
    """(model, resolved TrainConfig, ModelSpec) of a run folder of either framework, from its
    latest checkpoint (or `step`). The model is in eval mode."""
    return twin_of(run_dir).load_run(run_dir, step)


def read_weights_file(path: str | Path) -> tuple[dict[str, Any], dict[str, Any]]:
    """(canonical weights, metadata) of a torch state_dict (.pt/.pth: read by the torch twin,
    weights_only) or of a canonical weights file (.safetensors/.npz).

    Raises:
      RunFolderError: not a weights file (or torch missing); WeightsFileError: unreadable file.
    """
    kind = runinfo.input_kind(path)
    if kind == "torch":
        return twin("torch").load_torch_file(path), {}
    if kind != "canonical":
        raise RunFolderError(f"{path} is a run folder, not a weights file")
    return runinfo.read_canonical_weights(path)


def write_weights_file(path: str | Path, weights: dict[str, Any], meta: dict[str, Any]) -> Path:
    """Write weights in the format the suffix names: .pt/.pth a torch state_dict (needs torch),
    .safetensors/.npz canonical weights with `meta` (what `read_weights_file` reads)."""
    p = Path(path)
    if p.suffix in runinfo.TORCH_SUFFIXES:
        return twin("torch").save_torch_file(p, weights)
    if p.suffix in runinfo.WEIGHT_SUFFIXES:
        return runinfo.write_canonical_weights(p, weights, meta)
    raise RunFolderError(f"{p}: unknown weights suffix {p.suffix!r}; use {runinfo.TORCH_SUFFIXES} "
                         f"(torch state_dict) or {runinfo.WEIGHT_SUFFIXES} (canonical weights)")
