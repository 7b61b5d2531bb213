"""Which twin handles a run folder or a weights file: the command layer's choice.

The twins register themselves as entry points of the group `jaxvae.frameworks` (pyproject.toml:
`jax = "jaxvae"`, `torch = "torchvae"`), so this framework-free layer finds a twin by the
framework name a run folder's config.json records, without naming either package. A command
imports only the framework of its input, when it runs: `--help` is instant and needs neither.
Each twin's `api` module (the command API) has the same public names.
"""

from __future__ import annotations

import importlib
from importlib import metadata
from pathlib import Path
from types import ModuleType
from typing import Any

from vaecommon import runinfo
from vaecommon.runinfo import RunFolderError

__all__ = ["GROUP", "frameworks", "module", "twin", "twin_of", "load_run", "read_weights_file",
           "write_weights_file"]

GROUP = "jaxvae.frameworks"
"""The entry-point group the twins register in: framework name -> top-level package."""


def frameworks() -> dict[str, str]:
    """{framework: package} of the installed twins."""
    return {ep.name: ep.value for ep in metadata.entry_points(group=GROUP)}


def module(framework: str, name: str) -> ModuleType:
    """The twin's module `name` (api, train, bench, models, ...), imported now.

    Raises:
      RunFolderError: unknown framework, or a framework that is not installed.
    """
    known = frameworks()
    if framework not in known:
        raise RunFolderError(f"unknown framework {framework!r}; expected one of {sorted(known)} "
                             "(installed twins register as 'jaxvae.frameworks' entry points: "
                             "pip install -e .)")
    try:
        return importlib.import_module(f"{known[framework]}.{name}")
    except ImportError as e:
        raise RunFolderError(
            f"this needs the {framework} framework, which cannot be imported ({e}); install it "
            f"with pip install 'jaxvae[{framework}]'") from None


def twin(framework: str) -> ModuleType:
    """The command API (`<twin>.api`) of `framework`."""
    return module(framework, "api")


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
    if kind == "linen":
        raise RunFolderError(f"{path} is a Flax Linen params tree: read it with the jax twin's "
                             "load_linen_file, which needs the preset")
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
