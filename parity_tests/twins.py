"""Shared machinery of the cross-framework checks: paired models, injected noise, measurements.

Every cross-framework check of `checks_gradients`, `checks_training`, `checks_properties`,
`checks_mirror` and `checks_slow_training` is a plain function returning a list of
`Measurement`s (one per compared tensor or property). The pytest tests (test_<same name>.py)
call it and `assert_all(...)`; `parity_tests.report` calls the same functions and tabulates the
measurements. So the numbers in the parity report are exactly
the ones the tests assert on.

Conventions:
  * Weights travel through the canonical format: the torch model is built (torch init from a
    seeded `torch.Generator`), exported with `torchvae.convert.to_canonical` and loaded into the
    JAX model with `jaxvae.convert.from_canonical`. JAX arrays (gradients, Adam moments) are
    mapped back to canonical names/layouts with `jaxvae.convert.to_canonical`, so every
    comparison is keyed by the torch parameter name.
  * Noise is injected: one NumPy array of eps (and of the objective's extra noise) is fed to both.
  * Inputs are NCHW NumPy float32 in [0, 1]; `to_nhwc` gives the JAX layout.
  * Tolerances are rows of `parity_tests.asserts.TOL`; `measure` applies `assert_close`'s rule.
"""

from __future__ import annotations

import dataclasses
import os
import zlib
from typing import Any, Iterable, Mapping, NamedTuple

# Deterministic cuBLAS needs this before CUDA initialises (as conftest.py does; harmless on CPU).
os.environ.setdefault("CUBLAS_WORKSPACE_CONFIG", ":4096:8")

import jax  # noqa: E402
import jax.numpy as jnp  # noqa: E402
import numpy as np  # noqa: E402
import torch  # noqa: E402
from flax import nnx  # noqa: E402

from jaxvae import convert as jconvert  # noqa: E402
from jaxvae import losses as jlosses  # noqa: E402
from parity_tests.asserts import TOL, assert_close  # noqa: E402
from torchvae import convert as tconvert  # noqa: E402
from torchvae import losses as tlosses  # noqa: E402
from torchvae import models as tmodels  # noqa: E402
from vaecommon import presets  # noqa: E402

# Overrides that keep every preset small enough for the default run on 2 CPU cores:
# the glasses VAE at 32 px has the book's layers with a 3x3x32 feature map (was 31x31x32).
PARITY_OVERRIDES: dict[str, dict[str, Any]] = {"manning_glasses_vae": {"image_size": 32}}
BATCH = 4  # > 1 so BatchNorm has a batch; small so a float32 ReLU-kink straddle stays unlikely

# Objective parameters for the objective-registry checks (default: none). Steps put the
# schedules mid-ramp (see STEP), capacity's C far from the KL, so |KL - C| is differentiable.
STEP = 30
OBJECTIVE_PARAMS: dict[str, dict[str, Any]] = {
    "kl_warmup": {"warmup_steps": 100},
    "cyclical": {"cycle_steps": 100, "ratio": 0.5},
    "capacity": {"gamma": 100.0, "c_max": 50.0, "c_steps": 100},
    "beta_tcvae": {"dataset_size": 1000},
    "iwae": {"k": 3},
    "info_vae": {"prior_samples": 6},
}


def pin_precision() -> None:
    """The precision pins of `parity_tests/conftest.py` (idempotent): the same tolerances then
    hold on CPU and GPU. JAX matmuls/convs at "highest", torch TF32 off, deterministic kernels."""
    jax.config.update("jax_default_matmul_precision", "highest")
    torch.backends.cuda.matmul.allow_tf32 = False
    torch.backends.cudnn.allow_tf32 = False
    torch.use_deterministic_algorithms(True)


def seed_for(*parts: Any) -> int:
    """A reproducible 31-bit seed from readable parts (e.g. the check and preset names)."""
    return zlib.crc32("/".join(map(str, parts)).encode()) & 0x7FFFFFFF


# ---- measurements -------------------------------------------------------------------------------


@dataclasses.dataclass(frozen=True)
class Measurement:
    """One compared quantity of one check.

    Attributes:
      check: check name (e.g. "gradients", "adam_steps").
      preset: model preset (or "-" for preset-free checks).
      name: what was compared (canonical parameter name, metric key, property).
      max_abs: max |actual - desired| (NaN for pass/fail properties).
      max_rel: max |actual - desired| / |desired| over elements with |desired| > atol.
      tol: the `TOL` row used ("" for properties); rtol, atol: its values.
      passed: whether `assert_close` (or the property) held.
      message: the failure message ("" when passed).
      used: max over elements of |actual - desired| / (atol + rtol * |desired|), the fraction of
        the tolerance used (> 1 fails; NaN for properties): how far a row could be tightened.
    """

    check: str
    preset: str
    name: str
    max_abs: float
    max_rel: float
    tol: str
    rtol: float
    atol: float
    passed: bool
    message: str = ""
    used: float = float("nan")


def _as_f64(a) -> np.ndarray:
    if isinstance(a, torch.Tensor):
        a = a.detach().cpu().numpy()
    return np.asarray(a, dtype=np.float64)


def measure(actual, desired, *, check: str, preset: str, name: str, tol: str) -> Measurement:
    """Compare with `assert_close` under row `TOL[tol]`; record the max abs/rel diffs.

    The diffs use assert_close's definitions (max rel over elements whose reference exceeds atol).
    """
    row = TOL[tol]
    a, d = _as_f64(actual), _as_f64(desired)
    max_abs = max_rel = used = float("nan")
    if a.shape == d.shape:
        fin = np.isfinite(a) & np.isfinite(d)
        diff = np.abs(a[fin] - d[fin])
        big = np.abs(d[fin]) > max(row["atol"], np.finfo(np.float64).tiny)
        max_abs = float(diff.max()) if diff.size else 0.0
        max_rel = float((diff[big] / np.abs(d[fin][big])).max()) if big.any() else 0.0
        bound = row["atol"] + row["rtol"] * np.abs(d[fin])
        with np.errstate(divide="ignore", invalid="ignore"):
            ratio = np.where(diff == 0, 0.0, diff / bound)
        used = float(ratio.max()) if ratio.size else 0.0
    try:
        assert_close(a, d, name=f"{check}[{preset}] {name}", **row)
    except AssertionError as e:
        return Measurement(check, preset, name, max_abs, max_rel, tol, row["rtol"], row["atol"],
                           False, str(e), used)
    return Measurement(check, preset, name, max_abs, max_rel, tol, row["rtol"], row["atol"], True,
                       "", used)


def flag(ok: bool, *, check: str, preset: str, name: str, message: str = "") -> Measurement:
    """A pass/fail property (no numeric diff)."""
    return Measurement(check, preset, name, float("nan"), float("nan"), "", float("nan"),
                       float("nan"), bool(ok), "" if ok else f"{check}[{preset}] {name}: {message}")


def assert_all(ms: Iterable[Measurement]) -> list[Measurement]:
    """Raise one AssertionError listing every failed measurement; return the list otherwise."""
    ms = list(ms)
    assert ms, "a check returned no measurements"
    bad = [m for m in ms if not m.passed]
    if bad:
        raise AssertionError(f"{len(bad)}/{len(ms)} comparisons failed:\n"
                             + "\n".join(m.message for m in bad))
    return ms


def compare_dicts(actual: Mapping[str, Any], desired: Mapping[str, Any], *, check: str,
                  preset: str, tol: str, prefix: str = "") -> list[Measurement]:
    """`measure` per key; a key present on one side only is a failed measurement."""
    out = []
    if sorted(actual) != sorted(desired):
        out.append(flag(False, check=check, preset=preset, name=f"{prefix}keys",
                        message=f"jax has {sorted(actual)}, torch has {sorted(desired)}"))
    for k in desired:
        if k in actual:
            out.append(measure(actual[k], desired[k], check=check, preset=preset,
                               name=f"{prefix}{k}", tol=tol))
    return out


# ---- paired models --------------------------------------------------------------------------------


class Pair(NamedTuple):
    """A JAX and a torch model holding the same canonical weights."""

    jax_model: Any
    torch_model: torch.nn.Module
    weights: dict[str, np.ndarray]
    spec: presets.ModelSpec


PRESETS = presets.list_models()
CONV_PRESETS = [p for p in PRESETS
                if presets.PRESETS[p].family in ("manning_glasses_vae", "conv_vae", "resnet_vae",
                                                 "burgess_vae")]
BN_PRESETS = ["manning_glasses_vae", "resnet_vae"]


def perturb_batchnorm_(model: torch.nn.Module, generator: torch.Generator) -> None:
    """Random BatchNorm weight/bias/running stats/counter, in place (torch side): identity
    BatchNorms would hide a swapped weight/bias or mean/var."""
    with torch.no_grad():
        for m in model.modules():
            if isinstance(m, torch.nn.BatchNorm2d):
                c = m.num_features
                m.weight.copy_(1 + 0.3 * torch.randn(c, generator=generator))
                m.bias.copy_(0.3 * torch.randn(c, generator=generator))
                m.running_mean.copy_(0.2 * torch.randn(c, generator=generator))
                m.running_var.copy_(0.5 + torch.rand(c, generator=generator))
                m.num_batches_tracked.fill_(int(torch.randint(0, 100, (), generator=generator)))


def make_pair(preset: str, *, seed: int, perturb_batchnorm: bool = False, **overrides: Any) -> Pair:
    """torch model with torch's init from `torch.Generator().manual_seed(seed)` (BatchNorms
    perturbed from seed + 1 if asked); JAX model loaded from its canonical weights (both in train
    mode, as built)."""
    tmodel = tmodels.build_model(preset, generator=torch.Generator().manual_seed(seed), **overrides)
    if perturb_batchnorm:
        perturb_batchnorm_(tmodel, torch.Generator().manual_seed(seed + 1))
    weights = tconvert.to_canonical(tmodel)
    jmodel = jconvert.from_canonical(preset, weights, **overrides)
    return Pair(jmodel, tmodel, weights, tmodel.spec)


def parity_overrides(preset: str) -> dict[str, Any]:
    return dict(PARITY_OVERRIDES.get(preset, {}))


def preset_label(preset: str) -> str:
    """The preset's name as the report shows it, with the parity overrides (e.g. "(32px)")."""
    ov = PARITY_OVERRIDES.get(preset, {})
    return f"{preset}({ov['image_size']}px)" if "image_size" in ov else preset


def to_nhwc(x: np.ndarray) -> np.ndarray:
    """NCHW (torch) -> NHWC (JAX); other ranks unchanged (flat MLP rows are the same for C=1)."""
    return np.ascontiguousarray(x.transpose(0, 2, 3, 1)) if x.ndim == 4 else x


def to_nchw(a) -> np.ndarray:
    """A JAX output as NumPy in torch's layout: NHWC images -> NCHW; other ranks unchanged."""
    return np.ascontiguousarray(np.asarray(a).transpose(0, 3, 1, 2)) if np.ndim(a) == 4 else np.asarray(a)


def to_torch(a: np.ndarray) -> torch.Tensor:
    return torch.from_numpy(np.ascontiguousarray(a))


def draw_inputs(spec: presets.ModelSpec, batch: int, rng: np.random.Generator, *,
                objective: str | None = None, objective_params: Mapping[str, Any] | None = None
                ) -> tuple[np.ndarray, np.ndarray, np.ndarray | None]:
    """(x NCHW float32 in [0, 1], eps (B, D) float32, extra noise float32 or None)."""
    c, h, w = spec.input_shape
    x = rng.uniform(size=(batch, c, h, w)).astype(np.float32)
    eps = rng.normal(size=(batch, spec.latent_dim)).astype(np.float32)
    shape = jlosses.extra_noise_shape(objective or spec.objective, batch, spec.latent_dim,
                                      **dict(objective_params or {}))
    extra = None if shape is None else rng.normal(size=shape).astype(np.float32)
    return x, eps, extra


def torch_param_names(model: torch.nn.Module) -> list[str]:
    return [k for k, _ in model.named_parameters()]


def jax_tree_to_canonical(graphdef, tree, rest, names: Iterable[str]) -> dict[str, np.ndarray]:
    """A pytree shaped like the params (grads, Adam mu/nu, SGD trace) -> canonical name -> array.

    The tree is loaded into the model's structure and exported with `jaxvae.convert`, so every
    transpose / flatten permutation is the one the weights use (all maps are linear, hence valid
    for gradients and moments alike). Only `names` (the torch parameters) are returned.
    """
    model = nnx.merge(graphdef, tree, rest, copy=True)
    canon = jconvert.to_canonical(model)
    return {k: canon[k] for k in names}


# ---- one loss + gradient in each framework ----------------------------------------------------------


def torch_loss_and_grads(model: torch.nn.Module, x: np.ndarray, eps: np.ndarray,
                         extra: np.ndarray | None, *, objective: str, likelihood: str,
                         step: int = 0, params: Mapping[str, Any] | None = None
                         ) -> tuple[dict[str, np.ndarray], dict[str, np.ndarray]]:
    """(terms, grads by canonical name) of `objective` in torch autograd (model in train mode)."""
    model.train()
    model.zero_grad(set_to_none=True)
    xt = torch.from_numpy(x)
    out = model(xt, eps=torch.from_numpy(eps))
    loss, terms = tlosses.OBJECTIVES[objective](
        xt, out, likelihood=likelihood, step=step, decode=model.decode_logits,
        eps=None if extra is None else torch.from_numpy(extra), **dict(params or {}))
    loss.backward()
    grads = {k: (p.grad if p.grad is not None else torch.zeros_like(p)).detach().numpy().copy()
             for k, p in model.named_parameters()}
    return {k: v.detach().numpy().copy() for k, v in terms.items()}, grads


def jax_loss_and_grads(model, x: np.ndarray, eps: np.ndarray, extra: np.ndarray | None, *,
                       objective: str, likelihood: str, names: Iterable[str], step: int = 0,
                       params: Mapping[str, Any] | None = None, dtype=jnp.float32
                       ) -> tuple[dict[str, np.ndarray], dict[str, np.ndarray]]:
    """(terms, grads by canonical name) of `objective` by `jax.grad` (model in train mode).

    `x` is NCHW (transposed here). With dtype=float64 (inside `jax.enable_x64(True)`) the
    params, BatchNorm statistics and inputs are cast to float64 first.
    """
    graphdef, p, rest = nnx.split(model, nnx.Param, ...)
    cast = (lambda a: a.astype(dtype) if jnp.issubdtype(a.dtype, jnp.floating) else a)
    p, rest = jax.tree.map(cast, p), jax.tree.map(cast, rest)
    kw = dict(params or {})

    def loss_fn(p, rest, x, eps, extra):
        # copy=True: fresh Variables inside this trace, so train-mode BatchNorm may update its
        # running statistics under jax.grad (merging the caller's Variables would refuse that).
        m = nnx.merge(graphdef, p, rest, copy=True)
        m.train()
        out = m(x, eps=eps)
        loss, terms = jlosses.OBJECTIVES[objective](x, out, likelihood=likelihood, step=step,
                                                     decode=m.decode_logits, eps=extra, **kw)
        return loss, terms

    args = (jnp.asarray(to_nhwc(x), dtype), jnp.asarray(eps, dtype),
            None if extra is None else jnp.asarray(extra, dtype))
    (_, terms), grads = jax.jit(jax.value_and_grad(loss_fn, has_aux=True))(p, rest, *args)
    return ({k: np.asarray(v) for k, v in terms.items()},
            jax_tree_to_canonical(graphdef, grads, rest, names))

