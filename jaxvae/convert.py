"""Canonical weights <-> Flax NNX models. Twin: `torchvae/convert.py`.

Canonical weights are a flat `dict[str, np.ndarray]` in PyTorch `state_dict` naming and layout,
so a notebook's `state_dict` and a JAX model exchange weights through one format (saved by
`vaecommon.weights`). This module owns EVERY rename and transpose between the two, in the tables
below; the models only mirror the torch module tree.

Conventions (torch -> JAX):
  * names: `a.b.3.weight` -> path ('a', 'b', 'layers', 3, <leaf>) (`nnx.Sequential` keeps its
    children under `layers`), plus the renames in `_RENAMES`.
  * Linear: weight (out, in) -> kernel (in, out); bias unchanged.
  * Conv2d: weight (O, I, kH, kW) -> kernel (kH, kW, I, O).
  * ConvTranspose2d: weight (I, O, kH, kW) -> kernel (kH, kW, O, I), the same transpose as Conv:
    the JAX layer uses `transpose_kernel=True` (lax.conv_transpose flips the kernel spatially and
    swaps its channel axes, i.e. computes the gradient of a forward conv, which is what torch
    does), with explicit padding (k-1-p, k-1-p+output_padding) per spatial axis so its output size
    is torch's (i-1)*s - 2p + k + output_padding (see `jaxvae.models._conv_transpose`).
  * Flatten order: torch flattens (C, H, W), NHWC flattens (H, W, C). The first Linear after a
    conv stack gets its input columns permuted, and the Linear feeding an unflatten gets its
    output rows and bias permuted (`_FLATTEN_BOUNDARY`, shapes from
    `vaecommon.presets.feature_shape`), so the models need no runtime transpose.
  * BatchNorm: weight/bias -> scale/bias (Param); running_mean/running_var -> mean/var
    (BatchStat); num_batches_tracked (int64) <-> int32 BatchStat, kept so the exported dict loads
    into torch with strict=True. Momentum: torch 0.1 == Flax 0.9; `jaxvae.models.BatchNorm` uses
    torch's convention and torch's unbiased running-variance update.

All maps are exact (transposes, reshapes, renames): canonical -> JAX -> canonical returns the same
bits, and so does JAX -> canonical -> JAX. Missing or unexpected tensors and shape mismatches
raise `vaecommon.weights.WeightsMismatchError` naming the tensors.

Flax Linen params trees (JAX only, no torch twin): `linen_to_canonical` maps the params tree of
a Linen model onto canonical weights with the explicit table `_LINEN_LAYOUTS` (preset -> the
Linen `nn.Dense` paths, each kernel (in, out) -> `<path>.weight` (out, in), bias -> `<path>.bias`),
and `load_linen_file` reads that tree from a `flax.serialization` msgpack file or an Orbax
checkpoint folder. Every leaf is checked by path before anything is mapped.
"""

from __future__ import annotations

import dataclasses
from pathlib import Path
from typing import Any, Callable, Mapping, NamedTuple

import jax
import jax.numpy as jnp
import numpy as np
import optax
from flax import nnx

from jaxvae import models
from jaxvae import optim
from jaxvae.conv import ConvTranspose
from vaecommon import presets
from vaecommon.weights import (TrainingState, WeightsFileError, WeightsMismatchError,
                               check_training_state, check_weights)

__all__ = ["canonical_shapes", "to_canonical", "load_canonical_into", "from_canonical",
           "linen_to_canonical", "load_linen_file", "training_state_to_canonical",
           "training_state_from_canonical"]


# ---- the table ----------------------------------------------------------------------------------
# Array maps are written with array methods (.T, .transpose, .reshape) so they run on NumPy arrays
# and on jax.eval_shape's abstract values alike (expected shapes come from the same code).

def _same(a):
    return a


def _linear_to_torch(k):            # kernel (in, out) -> weight (out, in)
    return k.T


def _linear_to_jax(w):              # weight (out, in) -> kernel (in, out)
    return w.T


def _conv_to_torch(k):              # (kH, kW, I, O) -> (O, I, kH, kW); ConvT: (kH, kW, O, I) -> (I, O, kH, kW)
    return k.transpose(3, 2, 0, 1)


def _conv_to_jax(w):                # (O, I, kH, kW) -> (kH, kW, I, O); ConvT: (I, O, kH, kW) -> (kH, kW, O, I)
    return w.transpose(2, 3, 1, 0)


def _count_to_torch(c):             # int32 BatchStat -> torch's int64 buffer
    # (abstract values from jax.eval_shape only need the shape; JAX has no int64 by default)
    return c.astype(np.int64) if isinstance(c, np.ndarray) else c


def _count_to_jax(c):
    return c.astype(np.int32)


class _Rule(NamedTuple):
    torch_leaf: str                 # state_dict suffix
    jax_attr: str                   # attribute of the NNX layer
    to_torch: Callable              # JAX array -> canonical array
    to_jax: Callable                # canonical array -> JAX array


# JAX layer type -> what it holds, in torch naming.
_LAYER_TABLE: dict[type, tuple[_Rule, ...]] = {
    nnx.Linear: (
        _Rule("weight", "kernel", _linear_to_torch, _linear_to_jax),
        _Rule("bias", "bias", _same, _same),
    ),
    nnx.Conv: (
        _Rule("weight", "kernel", _conv_to_torch, _conv_to_jax),
        _Rule("bias", "bias", _same, _same),
    ),
    ConvTranspose: (
        _Rule("weight", "kernel", _conv_to_torch, _conv_to_jax),
        _Rule("bias", "bias", _same, _same),
    ),
    models.BatchNorm: (
        _Rule("weight", "scale", _same, _same),
        _Rule("bias", "bias", _same, _same),
        _Rule("running_mean", "mean", _same, _same),
        _Rule("running_var", "var", _same, _same),
        _Rule("num_batches_tracked", "num_batches_tracked", _count_to_torch, _count_to_jax),
    ),
}

# JAX attribute name -> torch attribute name, where they cannot be the same.
_RENAMES = {
    "decode_layer": "decode",  # ManningAE: an NNX attribute `decode` would shadow decode()
}

# family -> {torch Linear name: "in" (reads a flattened conv map) | "out" (feeds an unflatten)}
_FLATTEN_BOUNDARY: dict[str, dict[str, str]] = {
    "manning_glasses_vae": {"encoder.linear1": "in", "decoder.decoder_lin.2": "out"},
    "conv_vae": {"fc_mean": "in", "fc_logvar": "in", "decoder_fc": "out"},
    "resnet_vae": {"fc_mean": "in", "fc_logvar": "in", "decoder_fc": "out"},
    "burgess_vae": {"encoder_fc.0": "in", "decoder_fc.4": "out"},
}


def _boundary_rules(side: str, chw: tuple[int, int, int]) -> tuple[_Rule, _Rule]:
    """Linear rules with the (C, H, W) <-> (H, W, C) feature permutation folded in."""
    c, h, w = chw
    n = c * h * w
    if side == "in":
        # torch weight (out, C*H*W) <-> kernel (H*W*C, out): permute the input features
        def w_to_jax(wt):
            return wt.reshape(-1, c, h, w).transpose(2, 3, 1, 0).reshape(n, -1)

        def k_to_torch(k):
            return k.reshape(h, w, c, -1).transpose(3, 2, 0, 1).reshape(-1, n)

        return (_Rule("weight", "kernel", k_to_torch, w_to_jax), _Rule("bias", "bias", _same, _same))

    # side == "out": torch weight (C*H*W, in) <-> kernel (in, H*W*C); bias (C*H*W,) <-> (H*W*C,)
    def w_to_jax_out(wt):
        return wt.reshape(c, h, w, -1).transpose(3, 1, 2, 0).reshape(-1, n)

    def k_to_torch_out(k):
        return k.reshape(-1, h, w, c).transpose(3, 1, 2, 0).reshape(n, -1)

    def b_to_jax(b):
        return b.reshape(c, h, w).transpose(1, 2, 0).reshape(n)

    def b_to_torch(b):
        return b.reshape(h, w, c).transpose(2, 0, 1).reshape(n)

    return (_Rule("weight", "kernel", k_to_torch_out, w_to_jax_out),
            _Rule("bias", "bias", b_to_torch, b_to_jax))


# ---- walking a model ------------------------------------------------------------------------------

def _torch_prefix(path: tuple) -> str:
    """NNX module path -> torch module name: drop Sequential's `layers`, apply `_RENAMES`."""
    parts: list[str] = []
    for i, p in enumerate(path):
        if p == "layers" and i + 1 < len(path) and isinstance(path[i + 1], int):
            continue
        parts.append(str(_RENAMES.get(p, p)) if isinstance(p, str) else str(p))
    return ".".join(parts)


class _Entry(NamedTuple):
    var: nnx.Variable
    rule: _Rule


def _entries(model: nnx.Module) -> dict[str, _Entry]:
    """canonical name -> (the NNX variable, its rule) for every variable of `model`."""
    spec = getattr(model, "spec", None)
    boundary = _FLATTEN_BOUNDARY.get(spec.family, {}) if spec is not None else {}
    chw = presets.feature_shape(spec) if boundary else None
    out: dict[str, _Entry] = {}
    covered: set[tuple] = set()
    for path, module in nnx.iter_modules(model):
        rules = _LAYER_TABLE.get(type(module))
        if rules is None:
            continue
        prefix = _torch_prefix(path)
        if type(module) is nnx.Linear and prefix in boundary:
            rules = _boundary_rules(boundary[prefix], chw)
        for rule in rules:
            var = getattr(module, rule.jax_attr, None)
            if var is None:  # e.g. a Conv built with use_bias=False
                continue
            out[f"{prefix}.{rule.torch_leaf}"] = _Entry(var, rule)
            covered.add(tuple(path) + (rule.jax_attr,))
    # a layer type missing from _LAYER_TABLE must fail loudly, not be dropped from the export
    for path, var in nnx.to_flat_state(nnx.state(model)):
        if len(path) == 1 and isinstance(var, nnx.Param):
            # a bare parameter of the model itself (the trainer's learned likelihood `log_sigma`):
            # torch's state_dict names it the same, with no layout to change
            out[str(path[0])] = _Entry(getattr(model, str(path[0])),
                                       _Rule(str(path[0]), str(path[0]), _same, _same))
            continue
        if tuple(path) not in covered:
            raise TypeError(
                f"no conversion rule for variable {'.'.join(map(str, path))} "
                f"({type(var).__name__}); add its layer type to jaxvae.convert._LAYER_TABLE"
            )
    return out


def canonical_shapes(model: nnx.Module) -> dict[str, tuple[int, ...]]:
    """canonical name -> shape (PyTorch layout) that `model` needs."""
    return {
        name: tuple(jax.eval_shape(e.rule.to_torch, jax.ShapeDtypeStruct(e.var.shape, e.var.dtype)).shape)
        for name, e in _entries(model).items()
    }


# ---- public API -----------------------------------------------------------------------------------

def to_canonical(model: nnx.Module) -> dict[str, np.ndarray]:
    """The model's weights (params and BatchNorm stats) as canonical PyTorch-layout NumPy arrays.

    Args:
      model: a `jaxvae.models` model (any NNX module made of the table's layer types).
    Returns:
      dict name -> np.ndarray; float32 weights, int64 `num_batches_tracked` (torch's dtype), so
      `torch_model.load_state_dict({k: torch.from_numpy(v) ...}, strict=True)` works.
    """
    return {
        name: np.array(e.rule.to_torch(np.asarray(e.var.get_value())), order="C")
        for name, e in _entries(model).items()
    }


def load_canonical_into(model: nnx.Module, weights: Mapping[str, np.ndarray]) -> nnx.Module:
    """Overwrite every parameter and BatchNorm statistic of `model` (in place) from canonical weights.

    Args:
      model: the NNX model to fill.
      weights: canonical name -> array (PyTorch layout); float arrays are cast to the model's
        dtype (float32 in, float32 out is exact), `num_batches_tracked` to int32.
    Returns:
      `model`.
    Raises:
      WeightsMismatchError: missing or unexpected tensors or a shape mismatch (all named).
    """
    entries = _entries(model)
    spec = getattr(model, "spec", None)
    what = f"preset {spec.name!r} (jax)" if spec is not None else type(model).__name__
    check_weights(canonical_shapes(model), weights, what=what)
    for name, e in entries.items():
        a = np.asarray(weights[name])
        if np.issubdtype(e.var.dtype, np.integer):
            if not np.issubdtype(a.dtype, np.integer):
                raise WeightsMismatchError(f"{name}: expected an integer tensor, got {a.dtype}")
            if a.size and (a.max() > np.iinfo(np.int32).max or a.min() < 0):
                raise WeightsMismatchError(f"{name}: value {a} outside the int32 counter range")
        elif not np.issubdtype(a.dtype, np.floating):
            raise WeightsMismatchError(f"{name}: expected a floating tensor, got {a.dtype}")
        # np.array copies: jnp.asarray may alias a NumPy buffer on CPU, and the caller's arrays can
        # be views of live torch tensors (state_dict().numpy()) that torch later updates in place.
        e.var.set_value(jnp.asarray(np.array(e.rule.to_jax(a), dtype=e.var.dtype, order="C")))
    return model


def from_canonical(model_or_name: nnx.Module | str, weights: Mapping[str, np.ndarray],
                   **overrides: Any) -> nnx.Module:
    """A model holding `weights`.

    Args:
      model_or_name: a model to fill in place, or a preset name to build (with `overrides`, e.g.
        `image_size=64`; its init is skipped: every value comes from `weights`).
      weights: canonical weights.
    Returns:
      The filled model (train mode, as built; call `.eval()` for inference with BatchNorm).
    """
    if isinstance(model_or_name, str):
        # Abstract build (shapes only, no init compute), then every variable is set from weights;
        # check_weights guarantees no variable stays abstract.
        model = nnx.eval_shape(lambda: models.build_model(model_or_name, key=0, **overrides))
        return load_canonical_into(model, weights)
    if overrides:
        raise TypeError("overrides apply only when building from a preset name")
    return load_canonical_into(model_or_name, weights)


# ---- Flax Linen params trees (JAX only) -----------------------------------------------------------
# preset -> {Linen module path in the params tree: canonical (torch) module name}. Each entry is a
# Linen `nn.Dense`, whose `kernel` (in, out) and `bias` (out,) have the layouts of the NNX layer
# at that canonical name, so the layer's rule in `_LAYER_TABLE` maps them (kernel -> weight is the
# transpose).
#
# flax_examples: google/flax examples/vae/models.py. `VAE.setup` makes `encoder = Encoder(latents)`
# (Dense(500, name='fc1') -> relu -> Dense(latents, name='fc2_mean') and Dense(latents,
# name='fc2_logvar')) and `decoder = Decoder()` (Dense(500, name='fc1') -> relu -> Dense(784,
# name='fc2')), so `VAE(...).init(...)['params']` is {'encoder': {'fc1': {'kernel', 'bias'},
# 'fc2_mean': ..., 'fc2_logvar': ...}, 'decoder': {'fc1': ..., 'fc2': ...}}.
_LINEN_LAYOUTS: dict[str, dict[str, str]] = {
    "flax_examples": {
        "encoder/fc1": "encoder.fc1",
        "encoder/fc2_mean": "encoder.fc2_mean",
        "encoder/fc2_logvar": "encoder.fc2_logvar",
        "decoder/fc1": "decoder.fc1",
        "decoder/fc2": "decoder.fc2",
    },
}

_LIST_AT_MOST = 8  # leaves named in one error line before "... and N more"


def _linen_leaves(model_name: str, overrides: Mapping[str, Any]) -> dict[str, tuple[str, _Entry]]:
    """Linen leaf path ('encoder/fc1/kernel') -> (canonical name, the NNX entry) for a preset."""
    layout = _LINEN_LAYOUTS.get(model_name)
    if layout is None:
        raise WeightsMismatchError(
            f"no Linen layout for preset {model_name!r}: Linen params trees are read for "
            f"{', '.join(sorted(_LINEN_LAYOUTS))} (pass --model with one of them)")
    model = nnx.eval_shape(lambda: models.build_model(model_name, key=0, **overrides))
    entries = _entries(model)
    by_module = {v: k for k, v in layout.items()}
    out: dict[str, tuple[str, _Entry]] = {}
    for name, e in entries.items():
        module, _, _ = name.rpartition(".")
        if module not in by_module:  # the table must cover the whole model
            raise TypeError(f"_LINEN_LAYOUTS[{model_name!r}] has no Linen path for {name}")
        out[f"{by_module[module]}/{e.rule.jax_attr}"] = (name, e)
    return out


def _short(names: list[str]) -> str:
    more = len(names) - _LIST_AT_MOST
    return "[" + ", ".join(names[:_LIST_AT_MOST]) + (f", ... and {more} more" if more > 0 else "") + "]"


def _linen_flat(tree: Any, where: str) -> tuple[dict[str, Any], str]:
    """({'encoder/fc1/kernel': leaf, ...}, prefix): the leaves of a params tree by path; a
    {'params': tree} wrapper is unwrapped and its prefix "params/" returned for the messages."""
    if not isinstance(tree, Mapping):
        raise WeightsFileError(f"{where} does not hold a Linen params tree: its top level is a "
                               f"{type(tree).__name__}, not a dict")
    prefix = ""
    if set(tree) == {"params"} and isinstance(tree["params"], Mapping):
        tree, prefix = tree["params"], "params/"
    flat: dict[str, Any] = {}

    def walk(node: Mapping, path: str) -> None:
        for k, v in node.items():
            p = f"{path}{k}"
            if isinstance(v, Mapping):
                walk(v, p + "/")
            else:
                flat[p] = v

    walk(tree, "")
    return flat, prefix


def _check_linen(expected: Mapping[str, tuple[str, _Entry]], shapes: Mapping[str, tuple],
                 prefix: str, *, where: str, model_name: str) -> None:
    """One WeightsMismatchError naming every missing, unexpected or mis-shaped leaf."""
    missing = [prefix + k for k in expected if k not in shapes]
    unexpected = [prefix + k for k in shapes if k not in expected]
    bad = [f"{prefix}{k}: preset needs {tuple(e.var.shape)}, got {tuple(shapes[k])}"
           for k, (_, e) in expected.items()
           if k in shapes and tuple(shapes[k]) != tuple(e.var.shape)]
    if not (missing or unexpected or bad):
        return
    parts = []
    if missing:
        parts.append(f"missing leaves {_short(missing)}")
    if unexpected:
        hint = ""
        if not prefix and "params" in {k.split("/")[0] for k in shapes}:
            hint = (" (the tree holds more than the params: save state.params, or "
                    "{'params': state.params})")
        parts.append(f"unexpected leaves {_short(unexpected)}{hint}")
    if bad:
        parts.append("shape mismatches: " + "; ".join(bad[:_LIST_AT_MOST])
                     + (f"; ... and {len(bad) - _LIST_AT_MOST} more" if len(bad) > _LIST_AT_MOST else ""))
    raise WeightsMismatchError(f"{where}: the Linen params tree does not fit preset "
                               f"{model_name!r}: " + " | ".join(parts))


def linen_to_canonical(tree: Mapping[str, Any], model_name: str, *, where: str = "Linen params",
                       **overrides: Any) -> dict[str, np.ndarray]:
    """Canonical weights of a preset from a Flax Linen params tree (`_LINEN_LAYOUTS`).

    Args:
      tree: the Linen params, nested dicts of arrays: `variables['params']`, or the variables
        `{'params': ...}` themselves (e.g. google/flax examples/vae's
        `{'encoder': {'fc1': {'kernel': (784, 500), 'bias': (500,)}, ...}, 'decoder': ...}`).
      model_name: the preset (one with a Linen layout: flax_examples).
      where: how to call the tree in error messages (the file).
      **overrides: preset overrides (e.g. latent_dim=2), which set the expected shapes.
    Returns:
      dict name -> float32 np.ndarray in PyTorch naming and layout (kernel (in, out) -> weight
      (out, in)); floating leaves of other precisions are cast to float32, the model's dtype.
    Raises:
      WeightsMismatchError: a preset without a Linen layout; missing, unexpected or mis-shaped
        leaves (each named by its path in the tree), or a leaf that is not floating point.
      WeightsFileError: `tree` is not a dict.
    """
    expected = _linen_leaves(model_name, overrides)
    flat, prefix = _linen_flat(tree, where)
    _check_linen(expected, {k: np.shape(v) for k, v in flat.items()}, prefix, where=where,
                 model_name=model_name)
    out: dict[str, np.ndarray] = {}
    for leaf, (name, e) in expected.items():
        a = np.asarray(flat[leaf])
        if not jnp.issubdtype(a.dtype, jnp.floating):
            raise WeightsMismatchError(f"{where}: {prefix}{leaf} is {a.dtype}, expected a floating "
                                       "point array")
        out[name] = np.array(e.rule.to_torch(a.astype(np.float32)), order="C")
    return out


def _read_msgpack(path: Path) -> Any:
    from flax import serialization

    try:
        return serialization.msgpack_restore(path.read_bytes())
    except Exception as e:  # noqa: BLE001 - msgpack raises ValueError, ExtraData, TypeError...
        first = (str(e).strip().splitlines() or [type(e).__name__])[0]
        raise WeightsFileError(f"{path} is not a flax.serialization msgpack file "
                               f"({type(e).__name__}: {first[:200]})") from None


def _orbax_item(path: Path) -> Path:
    """The folder holding the tree's _METADATA: `path` itself (a StandardCheckpointer /
    PyTreeCheckpointer save) or its one item folder (a CheckpointManager step, e.g. <step>/default)."""
    if (path / "_METADATA").is_file():
        return path
    items = sorted(c for c in path.iterdir() if c.is_dir() and (c / "_METADATA").is_file())
    if len(items) == 1:
        return items[0]
    found = f"items {[c.name for c in items]}: pass one of them" if items else "no _METADATA"
    raise WeightsFileError(f"{path} is not an Orbax checkpoint of a params tree ({found})")


def _read_orbax(path: Path, check: Callable[[dict[str, tuple], str], None]) -> Any:
    """The tree of an Orbax checkpoint as NumPy arrays; `check(shapes by leaf path, prefix)` runs
    on the stored metadata first, so a tree that does not fit fails before any array is read."""
    import orbax.checkpoint as ocp

    item = _orbax_item(path)
    ckptr = ocp.PyTreeCheckpointer()
    try:
        meta = ckptr.metadata(item.absolute())
        meta = getattr(getattr(meta, "item_metadata", meta), "tree", meta)
    except Exception as e:  # noqa: BLE001 - corrupt or foreign metadata
        raise WeightsFileError(f"{item}: cannot read the Orbax checkpoint's metadata "
                               f"({type(e).__name__}: {str(e)[:200]})") from None
    if not isinstance(meta, Mapping):
        raise WeightsFileError(f"{item}: the Orbax checkpoint's metadata holds no tree of named "
                               "arrays (damaged, or not a params tree)")
    flat, prefix = _linen_flat(meta, str(path))
    check({k: tuple(getattr(v, "shape", ())) for k, v in flat.items()}, prefix)
    try:
        return ckptr.restore(item.absolute(), restore_args=jax.tree.map(
            lambda _: ocp.RestoreArgs(restore_type=np.ndarray), meta))
    except Exception as e:  # noqa: BLE001 - a truncated or damaged write
        from jaxvae.checkpoint import _collect_abandoned_reads

        _collect_abandoned_reads()
        raise WeightsFileError(f"{item}: cannot read the Orbax checkpoint ({type(e).__name__}: "
                               f"{str(e).split('. ')[0][:200]})") from None


def load_linen_file(path: str | Path, model_name: str, **overrides: Any) -> dict[str, np.ndarray]:
    """Canonical weights of a preset from a Flax Linen params tree on disk.

    Reads a `flax.serialization` msgpack file (`flax.serialization.to_bytes(params)` or of
    `{'params': params}`) or an Orbax checkpoint folder (`StandardCheckpointer` /
    `PyTreeCheckpointer().save(dir, params)`, with or without the 'params' wrapper; a
    CheckpointManager step with one item works too), then `linen_to_canonical`. An Orbax tree's
    leaf paths and shapes are checked from its metadata before any array is read.

    Returns:
      canonical weights (float32, PyTorch naming and layout).
    Raises:
      FileNotFoundError: nothing at `path`.
      WeightsFileError: not a msgpack file / not an Orbax checkpoint, or unreadable.
      WeightsMismatchError: the tree does not fit the preset (each leaf named).
    """
    p = Path(path)
    if p.is_dir():
        expected = _linen_leaves(model_name, overrides)
        tree = _read_orbax(p, lambda shapes, prefix: _check_linen(
            expected, shapes, prefix, where=str(p), model_name=model_name))
    elif p.is_file():
        tree = _read_msgpack(p)
    else:
        raise FileNotFoundError(f"no Linen checkpoint at {p}")
    return linen_to_canonical(tree, model_name, where=str(p), **overrides)
# ---- whole training states ------------------------------------------------------------------------
# The optimizer's moments have their parameter's shape, and every map above is a permutation of
# elements, so a moment tree converts exactly like the params: merge it into the model in their
# place and convert the model. Counts are scalars; int32 here, int64 in canonical form.

_MOMENT_STATES = (optax.ScaleByAdamState, optim.AdamNormGradState, optax.TraceState,
                  optax.ScaleByScheduleState)


def _opt_parts(opt_state) -> list:
    return jax.tree.leaves(opt_state, is_leaf=lambda s: isinstance(s, _MOMENT_STATES))


def _param_names(model: nnx.Module) -> list[str]:
    return [k for k, e in _entries(model).items() if isinstance(e.var, nnx.Param)]


def training_state_to_canonical(trainer, state, *, epoch: int) -> TrainingState:
    """A JAX training state in canonical form (`vaecommon.weights.TrainingState`).

    Args:
      trainer: the run's `jaxvae.train.Trainer` (its graphdef and config).
      state: a `jaxvae.train.TrainState` of that trainer (one member, not a stacked sweep).
      epoch: completed epochs (the checkpoint's).
    Returns:
      The TrainingState: weights, Adam mu/nu (or AdamNormGrad's, or the SGD momentum trace) as
      torch's exp_avg/exp_avg_sq (momentum_buffer), Adam's count, the step and the epoch.
    Raises:
      ValueError: a schedule count that differs from the step (not a state this trainer wrote).
    """
    cfg = trainer.cfg
    model = trainer.model_from(state.params, state.rest)
    weights = to_canonical(model)
    names = _param_names(model)
    moments: dict[str, dict[str, np.ndarray]] = {}
    opt_step = None
    for part in _opt_parts(state.opt_state):
        if isinstance(part, optax.ScaleByScheduleState):
            if int(part.count) != int(state.step):
                raise ValueError(f"the schedule count {int(part.count)} differs from the step "
                                 f"{int(state.step)}: not a state jaxvae.train wrote")
            continue
        trees = ({"momentum_buffer": part.trace} if isinstance(part, optax.TraceState)
                 else {"exp_avg": part.mu, "exp_avg_sq": part.nu})
        for slot, tree in trees.items():
            c = to_canonical(nnx.merge(trainer.graphdef, tree, state.rest, copy=True))
            moments[slot] = {k: c[k] for k in names}
        if not isinstance(part, optax.TraceState):
            opt_step = int(part.count)
    return TrainingState(weights, moments, opt_step, int(state.step), int(epoch),
                         dataclasses.asdict(cfg))


def training_state_from_canonical(trainer, ts: TrainingState):
    """The `jaxvae.train.TrainState` of a canonical training state, for `trainer` (built from
    the state's config).

    Raises:
      WeightsMismatchError: missing, unexpected or mis-shaped weights or optimizer arrays, each
        named; an optimizer state that is not the config's optimizer's.
    """
    template = trainer.init_state(jax.random.key(0))
    model = trainer.model_from(template.params, template.rest, train=True)
    what = f"preset {trainer.cfg.model!r} (jax)"
    check_training_state(ts, _param_names(model), what=what)
    load_canonical_into(model, ts.weights)
    _, params, rest = nnx.split(model, nnx.Param, ...)

    def tree(slot: str):
        m = trainer.model_from(params, rest)
        load_canonical_into(m, {**ts.weights, **ts.moments[slot]})
        return nnx.split(m, nnx.Param, ...)[1]

    def fill(part):
        if isinstance(part, optax.ScaleByScheduleState):
            return part._replace(count=jnp.asarray(ts.step, part.count.dtype))
        if isinstance(part, optax.TraceState):
            return part._replace(trace=tree("momentum_buffer"))
        if isinstance(part, (optax.ScaleByAdamState, optim.AdamNormGradState)):
            return part._replace(count=jnp.asarray(ts.optimizer_step, part.count.dtype),
                                 mu=tree("exp_avg"), nu=tree("exp_avg_sq"))
        return part

    opt_state = jax.tree.map(fill, trainer.tx.init(params),
                             is_leaf=lambda s: isinstance(s, _MOMENT_STATES))
    return type(template)(params, rest, opt_state, jnp.asarray(ts.step, template.step.dtype))
