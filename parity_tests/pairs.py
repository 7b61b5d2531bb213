"""Parity checks for your own model pair: a torch `nn.Module` and a Flax NNX module.

    from parity_tests.pairs import check_pair, assert_pair_agrees

    report = check_pair(torch_vae, nnx_vae, (x, eps), name="my_vae",
                        loss=(torch_loss, jax_loss),             # loss(model, *inputs) -> scalar
                        optimizer=(lambda ps: torch.optim.Adam(ps, lr=1e-3), optax.adam(1e-3)),
                        steps=3)
    print(report.table())           # the table of scripts/parity.py; report.ok, report.failures
    report.write(json_path="pair.json", markdown_path="pair.md")   # its JSON and Markdown
    assert_pair_agrees(torch_vae, nnx_vae, (x, eps), ...)           # in a test: AssertionError

The torch weights (parameters and buffers: BatchNorm statistics) are copied into the NNX module
(in place) through a name and layout mapping, then both are run on the same inputs. Every
comparison is keyed by the torch `state_dict` name and uses a row of the project's tolerance
table (`parity_tests.asserts.TOL`); the output is the table and JSON of `scripts/parity.py`
(`parity_tests.report.publish`), with the pair's `name` in the preset column. Checks, in order:

  weights          every torch tensor has an NNX variable of the mapped shape and back
                   (missing, extra and mis-shaped tensors are named), and torch -> NNX -> torch
                   is exact (`weight_roundtrip`). When this fails, nothing else runs.
  forward          eval mode: every output leaf (`forward`).
  forward_train    train mode: every output leaf, then every buffer (BatchNorm running
                   statistics and counters) after the pass (`forward`).
  layers(_train)   only when a forward disagrees: each mapped torch layer's input from that pass
                   is fed to the NNX layer alone (same mode), so the layer (and its tensors) that
                   differs is named (`forward`). A diagnostic: a layer whose mapping folds in a layout
                   change (e.g. an NHWC flatten) differs alone even in an agreeing pair.
  loss, gradients  with `loss`: the loss (`model_loss_terms`) and the gradient of every
                   parameter (`gradients`, or `gradients_amplified` via `tols`), train mode.
  optimizer_steps  with `optimizer`: the loss at each of `steps` optimizer steps and every
                   parameter and buffer after them (`sgd_steps` for torch.optim.SGD, else
                   `adam_steps`).

The default mapping is the canonical converter's (`jaxvae.convert`): torch `a.b.3.weight` is NNX
`a.b.layers.3.kernel` (an `nnx.Sequential` keeps its children under `layers`), Linear weights
transposed, Conv OIHW <-> HWIO, BatchNorm weight/bias/running_mean/running_var/
num_batches_tracked <-> scale/bias/mean/var/num_batches_tracked of `jaxvae.models.BatchNorm`
(torch's momentum convention and unbiased running variance). Other layers (e.g. `nnx.BatchNorm`)
need an explicit mapping: torch name -> `(nnx_path, rule)` with a rule of `RULES` ("same",
"linear", "conv") or a `Rule(to_jax, to_torch)`, or -> None for a torch tensor that has no NNX
counterpart (not copied, not compared).

Inputs are in torch layout; with `layout="nchw"` (the default) every rank-4 input is transposed
to NHWC for the NNX module and every rank-4 NNX output back to NCHW; `layout="same"` passes
arrays unchanged. Neither model given is trained: every run works on copies. Randomness inside
the models (dropout, sampling) must be off or passed in as an input, as `eps` above: the two
frameworks draw from different streams. Like scripts/parity.py, `check_pair` pins precision for
the whole process (`parity_tests.twins.pin_precision`: JAX matmuls at "highest", torch TF32 off,
deterministic algorithms), so the same tolerances hold on CPU and GPU.
"""

from __future__ import annotations

import copy
import dataclasses
import time
from typing import Any, Callable, Mapping, NamedTuple, Sequence, TextIO

import jax
import numpy as np
import optax
import torch
from flax import nnx

from jaxvae import convert as jconvert
from parity_tests import report
from parity_tests.asserts import TOL
from parity_tests.twins import Measurement, compare_dicts, flag, measure, pin_precision
from vaecommon.weights import WeightsMismatchError

__all__ = ["Rule", "RULES", "PairReport", "check_pair", "assert_pair_agrees"]


class Rule(NamedTuple):
    """A layout map between a torch tensor and its NNX variable (both directions, exact)."""

    to_jax: Callable[[np.ndarray], np.ndarray]
    to_torch: Callable[[np.ndarray], np.ndarray]


# The layouts of jaxvae.convert's table, for explicit mappings.
RULES: dict[str, Rule] = {
    "same": Rule(lambda a: a, lambda a: a),
    "linear": Rule(lambda w: w.T, lambda k: k.T),                      # (out, in) <-> (in, out)
    "conv": Rule(lambda w: w.transpose(2, 3, 1, 0),                    # (O, I, kH, kW) <->
                 lambda k: k.transpose(3, 2, 0, 1)),                   # (kH, kW, I, O)
}

TorchLoss = Callable[..., torch.Tensor]
JaxLoss = Callable[..., jax.Array]


# ---- the mapping ----------------------------------------------------------------------------------

def _walk(obj: Any, path: Sequence[Any]) -> Any:
    for p in path:
        obj = obj[p] if isinstance(p, int) else getattr(obj, p)
    return obj


def _split_path(path: str) -> tuple[Any, ...]:
    return tuple(int(p) if p.isdigit() else p for p in path.split("."))


class _Mapping:
    """torch state_dict name <-> NNX variable: the canonical converter or an explicit table."""

    def __init__(self, mapping: Mapping[str, Any] | None):
        self.table: dict[str, tuple[tuple[Any, ...], Rule]] | None = None
        self.ignored: set[str] = set()
        if mapping is None:
            return
        self.table = {}
        for name, target in mapping.items():
            if target is None:
                self.ignored.add(name)
                continue
            if isinstance(target, str):
                target = (target, "same")
            if not (isinstance(target, (tuple, list)) and len(target) == 2
                    and isinstance(target[0], str)):
                raise ValueError(f"mapping[{name!r}]: expected an NNX path, (NNX path, rule) or "
                                 f"None, got {target!r}")
            path, rule = target
            if isinstance(rule, str):
                if rule not in RULES:
                    raise ValueError(f"mapping[{name!r}]: unknown rule {rule!r}; valid: "
                                     f"{', '.join(RULES)} or a Rule(to_jax, to_torch)")
                rule = RULES[rule]
            elif not (isinstance(rule, tuple) and len(rule) == 2 and all(map(callable, rule))):
                raise ValueError(f"mapping[{name!r}]: a rule is one of {', '.join(RULES)} or "
                                 f"Rule(to_jax, to_torch), got {rule!r}")
            self.table[name] = (_split_path(path), Rule(*rule))
        seen: dict[tuple, str] = {}
        for name, (path, _) in self.table.items():
            if path in seen:
                raise ValueError(f"mapping: {seen[path]!r} and {name!r} both map to "
                                 f"{'.'.join(map(str, path))}")
            seen[path] = name

    def shapes(self, model: nnx.Module) -> dict[str, tuple[int, ...]]:
        """torch name -> torch-layout shape of the NNX side (raises ValueError naming a bad path)."""
        if self.table is None:
            try:
                return jconvert.canonical_shapes(model)
            except TypeError as e:  # a layer type without a canonical rule
                raise ValueError(f"{e}, or pass an explicit mapping") from None
        out = {}
        for name, (path, rule) in self.table.items():
            try:
                var = _walk(model, path)
            except (AttributeError, IndexError, KeyError, TypeError):
                var = None
            if not isinstance(var, nnx.Variable):
                raise ValueError(f"mapping[{name!r}]: the NNX module has no variable at "
                                 f"{'.'.join(map(str, path))}")
            out[name] = tuple(np.shape(rule.to_torch(np.zeros(var.shape, np.float32))))
        return out

    def unmapped_variables(self, model: nnx.Module) -> list[str]:
        """NNX variables no torch tensor maps to (the canonical converter checks its own)."""
        if self.table is None:
            return []
        targets = {path for path, _ in self.table.values()}
        return [".".join(map(str, p)) for p, _ in nnx.to_flat_state(nnx.state(model))
                if tuple(p) not in targets]

    def load(self, model: nnx.Module, weights: Mapping[str, np.ndarray]) -> None:
        if self.table is None:
            jconvert.load_canonical_into(model, weights)
            return
        for name, (path, rule) in self.table.items():
            var = _walk(model, path)
            var.set_value(jax.numpy.asarray(np.array(rule.to_jax(np.asarray(weights[name])),
                                                     dtype=var.dtype, order="C")))

    def export(self, model: nnx.Module) -> dict[str, np.ndarray]:
        """The NNX variables in torch names and layouts (also for a grads tree merged into the
        model's structure: every map is linear)."""
        if self.table is None:
            return jconvert.to_canonical(model)
        return {name: np.array(rule.to_torch(np.asarray(_walk(model, path).get_value())))
                for name, (path, rule) in self.table.items()}

    def layer(self, model: nnx.Module, torch_module: str) -> nnx.Module | None:
        """The NNX layer holding torch module `torch_module`'s tensors (None: not found)."""
        if self.table is not None:
            paths = [p for n, (p, _) in self.table.items() if n.rsplit(".", 1)[0] == torch_module]
            return _walk(model, paths[0][:-1]) if paths else None
        obj = model
        for part in torch_module.split(".") if torch_module else ():
            if part.isdigit():
                seq = getattr(obj, "layers", obj)
                try:
                    obj = seq[int(part)]
                except (IndexError, KeyError, TypeError):
                    return None
            else:
                obj = getattr(obj, part, None)
            if obj is None:
                return None
        return obj


# ---- inputs and outputs -------------------------------------------------------------------------------

def _numpy(a) -> np.ndarray:
    if isinstance(a, torch.Tensor):
        return a.detach().cpu().numpy()
    return np.asarray(a)


def _to_jax_layout(a: np.ndarray, layout: str) -> np.ndarray:
    return np.ascontiguousarray(a.transpose(0, 2, 3, 1)) if layout == "nchw" and a.ndim == 4 else a


def _from_jax_layout(a: np.ndarray, layout: str) -> np.ndarray:
    return np.ascontiguousarray(a.transpose(0, 3, 1, 2)) if layout == "nchw" and a.ndim == 4 else a


def _leaves(out: Any, prefix: str = "output") -> dict[str, np.ndarray]:
    """Array leaves of a model output (array, tuple, list, NamedTuple, dict) by readable name."""
    if isinstance(out, dict):
        return {k: v for key, x in out.items() for k, v in _leaves(x, f"{prefix}[{key!r}]").items()}
    if isinstance(out, tuple) and hasattr(out, "_fields"):
        return {k: v for f in out._fields for k, v in _leaves(getattr(out, f), f"{prefix}.{f}").items()}
    if isinstance(out, (tuple, list)):
        return {k: v for i, x in enumerate(out) for k, v in _leaves(x, f"{prefix}[{i}]").items()}
    return {prefix: _numpy(out)}


class _Inputs(NamedTuple):
    torch: tuple[torch.Tensor, ...]
    jax: tuple[jax.Array, ...]


def _inputs(inputs: Any, layout: str) -> _Inputs:
    arrays = [_numpy(a) for a in (inputs if isinstance(inputs, (tuple, list)) else (inputs,))]
    return _Inputs(tuple(torch.from_numpy(np.array(a)) for a in arrays),
                   tuple(jax.numpy.asarray(_to_jax_layout(a, layout)) for a in arrays))


# ---- the report ---------------------------------------------------------------------------------------

@dataclasses.dataclass
class PairReport:
    """What `check_pair` measured, in the parity report's format.

    Attributes:
      measurements: one per compared tensor or property (`parity_tests.twins.Measurement`).
      timings: one entry per check run (the JSON's "items").
      wall_s: seconds the checks took.
    """

    measurements: list[Measurement]
    timings: list[dict]
    wall_s: float

    @property
    def ok(self) -> bool:
        return all(m.passed for m in self.measurements)

    @property
    def failures(self) -> list[str]:
        return [m.message for m in self.measurements if not m.passed]

    @property
    def failed_names(self) -> list[tuple[str, str]]:
        """(check, compared name) of every failed measurement."""
        return [(m.check, m.name) for m in self.measurements if not m.passed]

    def rows(self) -> list[dict]:
        return report.rows(self.measurements)

    def table(self) -> str:
        return report.format_table(self.rows())

    def markdown(self) -> str:
        return report.format_markdown(self.rows())

    def to_json(self) -> dict:
        """The document `scripts/parity.py --json` writes."""
        return report.document(self.measurements, self.timings, self.wall_s)

    def write(self, *, out: TextIO | None = None, json_path=None, markdown_path=None) -> bool:
        """Print the table and failures to `out` and write JSON / Markdown as scripts/parity.py."""
        return report.publish(self.measurements, self.timings, self.wall_s, out=out,
                              json_path=json_path, markdown_path=markdown_path)


# ---- the checks ----------------------------------------------------------------------------------------

class _Pair:
    """State shared by the checks of one `check_pair` call."""

    def __init__(self, torch_model, nnx_model, mapping: _Mapping, inputs: _Inputs, layout: str,
                 name: str, tols: Mapping[str, str]):
        self.torch_model, self.nnx_model, self.map = torch_model, nnx_model, mapping
        self.inputs, self.layout, self.name, self.tols = inputs, layout, name, tols
        self.weights = {k: v.detach().cpu().numpy().copy()
                        for k, v in torch_model.state_dict().items() if k not in mapping.ignored}

    def m(self, actual, desired, *, check: str, name: str, tol: str) -> Measurement:
        return measure(actual, desired, check=check, preset=self.name, name=name,
                       tol=self.tols.get(tol, tol))

    def flag(self, ok: bool, *, check: str, name: str, message: str = "") -> Measurement:
        return flag(ok, check=check, preset=self.name, name=name, message=message)

    def compare(self, jax_leaves: Mapping[str, np.ndarray], torch_leaves: Mapping[str, np.ndarray],
                *, check: str, tol: str, prefix: str = "") -> list[Measurement]:
        return compare_dicts(jax_leaves, torch_leaves, check=check, preset=self.name,
                             tol=self.tols.get(tol, tol), prefix=prefix)

    def torch_copy(self, train: bool) -> torch.nn.Module:
        model = copy.deepcopy(self.torch_model)
        return model.train(train)

    def nnx_copy(self, train: bool) -> nnx.Module:
        model = nnx.clone(self.nnx_model)
        model.train() if train else model.eval()
        return model

    def torch_buffers(self, model: torch.nn.Module) -> dict[str, np.ndarray]:
        params = {k for k, _ in model.named_parameters()}
        return {k: v.detach().cpu().numpy() for k, v in model.state_dict().items()
                if k not in params and k not in self.map.ignored}

    # -- weights --
    def check_weights(self) -> list[Measurement]:
        c = "weights"
        try:
            shapes = self.map.shapes(self.nnx_model)
        except ValueError as e:
            return [self.flag(False, check=c, name="mapping", message=str(e))]
        out = []
        for k, a in self.weights.items():
            if k not in shapes:
                out.append(self.flag(False, check=c, name=k, message=f"torch tensor {k} "
                                     f"{tuple(a.shape)} has no NNX variable"))
            elif tuple(a.shape) != shapes[k]:
                out.append(self.flag(False, check=c, name=k, message=f"torch {k} has shape "
                                     f"{tuple(a.shape)}, the NNX variable maps to {shapes[k]}"))
        for k in shapes:
            if k not in self.weights:
                out.append(self.flag(False, check=c, name=k, message=f"the NNX variable mapped "
                                     f"to {k} {shapes[k]} has no torch tensor"))
        for path in self.map.unmapped_variables(self.nnx_model):
            out.append(self.flag(False, check=c, name=path, message=f"NNX variable {path} has "
                                 f"no torch tensor (map one to it, or map a torch tensor to None)"))
        if out:
            return out
        try:
            self.map.load(self.nnx_model, self.weights)
        except WeightsMismatchError as e:  # e.g. a float tensor mapped to an integer variable
            return [self.flag(False, check=c, name="load", message=str(e))]
        back = self.map.export(self.nnx_model)
        return [self.m(back[k], a, check=c, name=k, tol="weight_roundtrip")
                for k, a in self.weights.items()]

    # -- forward --
    def run_forward(self, train: bool):
        tm, jm = self.torch_copy(train), self.nnx_copy(train)
        t_in = {}
        hooks = []
        for mod_name in sorted({k.rsplit(".", 1)[0] for k in self.weights if "." in k}):
            def hook(module, args, output, mod_name=mod_name):
                if isinstance(output, torch.Tensor) and all(isinstance(a, torch.Tensor) for a in args):
                    t_in.setdefault(mod_name, (tuple(_numpy(a).copy() for a in args),
                                               _numpy(output).copy()))
            hooks.append(tm.get_submodule(mod_name).register_forward_hook(hook))
        try:
            with torch.no_grad():
                t_out = tm(*self.inputs.torch)
        finally:
            for h in hooks:
                h.remove()
        j_out = jm(*self.inputs.jax)
        jl = {k: _from_jax_layout(v, self.layout) for k, v in _leaves(j_out).items()}
        return tm, jm, jl, _leaves(t_out), t_in

    def check_forward(self, train: bool) -> list[Measurement]:
        c = "forward_train" if train else "forward"
        tm, jm, jl, tl, layer_io = self.run_forward(train)
        out = self.compare(jl, tl, check=c, tol="forward")
        if train:
            out += self.compare({k: v for k, v in self.map.export(jm).items()
                                 if k in self.torch_buffers(tm)},
                                self.torch_buffers(tm), check=c, tol="forward")
        if not all(m.passed for m in out):
            out += self.localize(layer_io, train)
        return out

    def localize(self, layer_io, train: bool) -> list[Measurement]:
        """Each mapped layer alone on the torch layer's input from the failing pass."""
        out, check = [], "layers_train" if train else "layers"
        jm = self.nnx_copy(train)
        for mod_name, (args, t_out) in layer_io.items():
            tensors = ", ".join(k for k in self.weights if k.rsplit(".", 1)[0] == mod_name)
            label = f"layer {mod_name} ({tensors})"
            layer = self.map.layer(jm, mod_name)
            if layer is None or not callable(layer):
                out.append(self.flag(False, check=check, name=label,
                                     message="no NNX layer found to run alone"))
                continue
            try:
                j_out = layer(*(jax.numpy.asarray(_to_jax_layout(a, self.layout)) for a in args))
            except Exception as e:  # noqa: BLE001 - reported as the layer's failure
                out.append(self.flag(False, check=check, name=label,
                                     message=f"the NNX layer raised {type(e).__name__}: {e}"))
                continue
            out.append(self.m(_from_jax_layout(np.asarray(j_out), self.layout), t_out,
                              check=check, name=label, tol="forward"))
        return out

    # -- loss and gradients --
    def jax_value_and_grad(self, jax_loss: JaxLoss):
        graphdef, _, _ = nnx.split(self.nnx_copy(True), nnx.Param, ...)

        def loss_fn(p, rest, args):
            # copy=True: fresh Variables inside the trace, so a train-mode BatchNorm may update.
            m = nnx.merge(graphdef, p, rest, copy=True)
            return jax_loss(m, *args), nnx.split(m, nnx.Param, ...)[2]

        return graphdef, jax.value_and_grad(loss_fn, has_aux=True)

    def check_gradients(self, loss: tuple[TorchLoss, JaxLoss]) -> list[Measurement]:
        torch_loss, jax_loss = loss
        tm = self.torch_copy(True)
        tm.zero_grad(set_to_none=True)
        t_loss = torch_loss(tm, *self.inputs.torch)
        t_loss.backward()
        t_grads = {k: (p.grad if p.grad is not None else torch.zeros_like(p)).detach().cpu().numpy()
                   for k, p in tm.named_parameters() if k not in self.map.ignored}
        graphdef, vg = self.jax_value_and_grad(jax_loss)
        _, p, rest = nnx.split(self.nnx_copy(True), nnx.Param, ...)
        (j_loss, _), grads = jax.jit(vg)(p, rest, self.inputs.jax)
        j_grads = self.map.export(nnx.merge(graphdef, grads, rest, copy=True))
        return ([self.m(j_loss, _numpy(t_loss), check="loss", name="loss", tol="model_loss_terms")]
                + self.compare({k: j_grads[k] for k in t_grads if k in j_grads}, t_grads,
                               check="gradients", tol="gradients"))

    # -- k optimizer steps --
    def check_steps(self, loss: tuple[TorchLoss, JaxLoss], optimizer, steps: int) -> list[Measurement]:
        torch_loss, jax_loss = loss
        make_torch_opt, tx = optimizer
        tm = self.torch_copy(True)
        opt = make_torch_opt(tm.parameters())
        tol = "sgd_steps" if isinstance(opt, torch.optim.SGD) else "adam_steps"
        graphdef, vg = self.jax_value_and_grad(jax_loss)
        _, p, rest = nnx.split(self.nnx_copy(True), nnx.Param, ...)

        @jax.jit
        def step(p, rest, opt_state, args):
            (l, rest), g = vg(p, rest, args)
            updates, opt_state = tx.update(g, opt_state, p)
            return optax.apply_updates(p, updates), rest, opt_state, l

        opt_state = tx.init(p)
        out = []
        for i in range(steps):
            opt.zero_grad(set_to_none=True)
            t_loss = torch_loss(tm, *self.inputs.torch)
            t_loss.backward()
            opt.step()
            p, rest, opt_state, j_loss = step(p, rest, opt_state, self.inputs.jax)
            out.append(self.m(j_loss, _numpy(t_loss), check="optimizer_steps",
                              name=f"loss at step {i}", tol="model_loss_terms"))
        j_state = self.map.export(nnx.merge(graphdef, p, rest, copy=True))
        t_state = {k: v.detach().cpu().numpy() for k, v in tm.state_dict().items()
                   if k not in self.map.ignored}
        return out + self.compare({k: j_state[k] for k in t_state if k in j_state}, t_state,
                                  check="optimizer_steps", tol=tol, prefix=f"after {steps} steps: ")


def check_pair(torch_model: torch.nn.Module, nnx_model: nnx.Module, inputs: Any, *,
               mapping: Mapping[str, Any] | None = None,
               loss: tuple[TorchLoss, JaxLoss] | None = None,
               optimizer: tuple[Callable[..., torch.optim.Optimizer],
                                optax.GradientTransformation] | None = None,
               steps: int = 3, name: str = "pair", layout: str = "nchw",
               tols: Mapping[str, str] | None = None, log: TextIO | None = None) -> PairReport:
    """Copy the torch weights into the NNX module and compare the two on the same inputs.

    Args:
      torch_model: the torch model; `torch_model(*inputs)` is its forward pass.
      nnx_model: the Flax NNX model, same structure; receives the torch weights IN PLACE.
      inputs: one array or a tuple of arrays (NumPy or torch; torch layout), the forward's
        positional arguments (e.g. `(x, eps)` for a VAE with injected noise).
      mapping: torch state_dict name -> `(nnx_path, rule)`, `nnx_path` (rule "same") or None
        (ignored); None: the canonical converter's rules (see the module docstring).
      loss: `(torch_loss, jax_loss)`, each `loss(model, *inputs) -> scalar`, called in train mode
        (the JAX one under `jax.jit` and `jax.grad`).
      optimizer: `(make_torch_optimizer, optax_transform)`, e.g.
        `(lambda ps: torch.optim.Adam(ps, lr=1e-3), optax.adam(1e-3))`; needs `loss`.
      steps: optimizer steps to run and compare.
      name: the pair's name (the report's preset column).
      layout: "nchw" (rank-4 arrays are NCHW in torch, NHWC in NNX) or "same".
      tols: replace TOL rows by name, e.g. `{"gradients": "gradients_amplified"}`.
      log: where to print one progress line per check (None: nowhere).
    Returns:
      A `PairReport` (`.ok`, `.table()`, `.failures`, `.to_json()`, `.write(...)`).
    Raises:
      ValueError: bad arguments (unknown layout, rule or TOL row, optimizer without loss).
    """
    if layout not in ("nchw", "same"):
        raise ValueError(f"layout must be 'nchw' or 'same', got {layout!r}")
    if optimizer is not None and loss is None:
        raise ValueError("an optimizer pair needs a loss pair (loss=(torch_loss, jax_loss))")
    if steps < 1:
        raise ValueError(f"steps must be >= 1, got {steps}")
    for row in (tols or {}).values():
        if row not in TOL:
            raise ValueError(f"tols: unknown TOL row {row!r}; valid: {', '.join(TOL)}")
    pin_precision()
    t0 = time.time()
    pair = _Pair(torch_model, nnx_model, _Mapping(mapping), _inputs(inputs, layout), layout,
                 name, dict(tols or {}))
    measurements, timings = report.run_items(
        [report.Item("weights", name, "torch -> NNX weights", pair.check_weights)], log=log)
    if all(m.passed for m in measurements):
        items = [report.Item("forward", name, "eval mode", lambda: pair.check_forward(False)),
                 report.Item("forward_train", name, "train mode + buffers",
                             lambda: pair.check_forward(True))]
        if loss is not None:
            items.append(report.Item("gradients", name, "loss and gradients",
                                     lambda: pair.check_gradients(loss)))
        if optimizer is not None:
            items.append(report.Item("optimizer_steps", name, f"{steps} optimizer steps",
                                     lambda: pair.check_steps(loss, optimizer, steps)))
        ms, ts = report.run_items(items, log=log)
        measurements, timings = measurements + ms, timings + ts
    return PairReport(measurements, timings, time.time() - t0)


def assert_pair_agrees(torch_model: torch.nn.Module, nnx_model: nnx.Module, inputs: Any,
                       **kwargs: Any) -> PairReport:
    """`check_pair` for tests: returns the report, or raises AssertionError with its table and
    every failure (each naming the tensor)."""
    r = check_pair(torch_model, nnx_model, inputs, **kwargs)
    if not r.ok:
        raise AssertionError(f"the pair {kwargs.get('name', 'pair')!r} disagrees in "
                             f"{len(r.failures)} comparisons:\n{r.table()}\n\n"
                             + "\n".join(r.failures))
    return r

