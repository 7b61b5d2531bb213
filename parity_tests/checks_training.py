"""The two trainers take the same steps: `Trainer.apply_update` of jaxvae vs torchvae.

The checks of test_training.py and of the parity report (no pytest here), plus the twin-trainer
helpers checks_slow_training builds on.

Both trainers are built from one `TrainConfig` (`Trainer.create`); the torch trainer's initial
weights are converted into the JAX state's params (`torchvae.convert` -> `jaxvae.convert`), and
both `apply_update`s are driven from one loop with the same NumPy batches and eps. Compared after
every step: the metric dicts (loss terms, grad_norm) and the learning rate; after k steps: every
parameter, the optimizer state (Adam mu/nu vs torch exp_avg/exp_avg_sq, the SGD momentum trace
vs momentum_buffer, the step counts), all mapped to canonical names/layouts by `jaxvae.convert`.

* `check_optimizer_steps(case)`: SGD + momentum + L2 weight decay + grad clipping, Adam + L2
  weight decay + warm-up/cosine schedule, AdamW (decoupled decay) + grad clipping.
* `check_batchnorm_training()`: the glasses VAE (32 px) in train mode for k steps: batch
  statistics (through the loss), running mean/var (incl. torch's unbiased running variance, also
  checked against its formula) and num_batches_tracked; then the eval-mode forward.
* `check_batch_order()`: each framework's real `train_and_evaluate` on a tiny dataset with the
  same weights and lr ~ 0: the per-batch reconstruction terms in metrics.jsonl equal the float64
  oracle's for the batches `vaecommon.schedule.epoch_batches` prescribes (an autoencoder: no eps).
* `check_fresh_eps()`: the cross-framework regression for eps frozen at trace time: one tiny
  epoch of one repeated batch, lr ~ 0, in each framework's real loop: every step's loss differs.

Tolerances (asserts.TOL): "sgd_steps" / "adam_steps" for parameters (STYLE §6; Adam on absolute
error, since its first update is about lr * sign(g)), "gradients" for moments and grad_norm,
"model_loss_terms" for the per-step loss terms, "forward" for the eval-mode forward.
"""

from __future__ import annotations

import contextlib
import dataclasses
from pathlib import Path
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np
import optax
import torch
from flax import nnx

from jaxvae import convert as jconvert
from jaxvae import models as jmodels
from jaxvae import train as jtrain
from parity_tests import oracle
from parity_tests.asserts import TOL
from parity_tests.twins import (Measurement, compare_dicts, flag, measure, seed_for, to_nchw,
                                to_nhwc, torch_param_names)
from torchvae import convert as tconvert
from torchvae import models as tmodels
from torchvae import train as ttrain
from vaecommon import datasets, runs, schedule
from vaecommon.config import TrainConfig

K_STEPS = 5
STEP_BATCH = 8
STEP_PRESET = "pytorch_examples"

# case -> TrainConfig changes. Every case runs K_STEPS steps over K_STEPS * STEP_BATCH examples
# in one epoch, so the cosine schedule decays to 0 at the last step.
# Three cases keep the default run short; together they cover SGD (momentum), Adam, AdamW,
# both weight-decay forms (L2 for sgd/adam, decoupled for adamw), global-norm clipping (active:
# the gradient norm is ~80) and the warm-up + cosine schedule.
OPTIMIZER_CASES: dict[str, dict[str, Any]] = {
    "sgd_momentum_wd_clip": dict(optimizer="sgd", lr=1e-3, momentum=0.9, weight_decay=1e-2,
                                 grad_clip=20.0),
    "adam_wd_warmup_cosine": dict(optimizer="adam", lr=1e-3, weight_decay=1e-3, warmup_steps=2,
                                  schedule="cosine"),
    "adamw_clip": dict(optimizer="adamw", lr=1e-3, weight_decay=1e-2, grad_clip=5.0),
}


# ---- building twin trainers ----------------------------------------------------------------------


class Patches:
    """Minimal monkeypatching without pytest (the report uses these checks too)."""

    def __init__(self):
        self._undo: list[tuple[Any, str, Any]] = []

    def setattr(self, obj, name, value):
        self._undo.append((obj, name, getattr(obj, name)))
        setattr(obj, name, value)

    def undo(self):
        for obj, name, value in reversed(self._undo):
            setattr(obj, name, value)
        self._undo.clear()


@contextlib.contextmanager
def jax_models_from(weights: dict[str, np.ndarray]):
    """Within the block, `jaxvae.models.build_model` returns a model holding `weights`
    (abstract build, then `jaxvae.convert.load_canonical_into`); the JAX trainer calls it."""
    original = jmodels.build_model

    def build(name, *, rngs=None, key=None, init="default", **overrides):
        model = nnx.eval_shape(lambda: original(name, key=0, init=init, **overrides))
        return jconvert.load_canonical_into(model, weights)

    p = Patches()
    p.setattr(jmodels, "build_model", build)
    try:
        yield
    finally:
        p.undo()


@dataclasses.dataclass
class TwinTrainers:
    """Both trainers built from one config, the JAX state holding the torch trainer's init."""

    cfg: TrainConfig
    jax: jtrain.Trainer
    torch: ttrain.Trainer
    state: jtrain.TrainState
    names: list[str]
    step_fn: Any


def twin_trainers(cfg: TrainConfig, n_train: int) -> TwinTrainers:
    """Both `Trainer.create(cfg, n_train)`; the JAX state holds the torch trainer's initial weights.

    The JAX model is built abstractly (`nnx.eval_shape`) and filled from the canonical weights,
    so no JAX initialiser runs (and nothing but `apply_update` is compiled).
    """
    tt = ttrain.Trainer.create(cfg, n_train)
    weights = tconvert.to_canonical(tt.model)
    with jax_models_from(weights):
        jt = jtrain.Trainer.create(cfg, n_train)
        state = jt.init_state(jax.random.key(cfg.seed))
    assert jt.cfg == tt.cfg, "the trainers resolved the same TrainConfig differently"
    return TwinTrainers(jt.cfg, jt, tt, state, torch_param_names(tt.model), jax.jit(jt.apply_update))


def jax_canonical(tw: TwinTrainers, tree=None) -> dict[str, np.ndarray]:
    """Canonical arrays of the JAX state (params and buffers), or of a params-shaped `tree`."""
    model = nnx.merge(tw.jax.graphdef, tw.state.params if tree is None else tree, tw.state.rest,
                      copy=True)
    return jconvert.to_canonical(model)


def step_both(tw: TwinTrainers, x: np.ndarray, eps: np.ndarray, extra=None
              ) -> tuple[dict[str, np.ndarray], dict[str, float]]:
    """One `apply_update` in each framework on the same NCHW batch and noise."""
    tw.state, jterms = tw.step_fn(tw.state, jnp.asarray(to_nhwc(x)), jnp.asarray(eps),
                                  None if extra is None else jnp.asarray(extra))
    tterms = tw.torch.apply_update(torch.from_numpy(x), torch.from_numpy(eps),
                                   None if extra is None else torch.from_numpy(extra))
    return {k: np.asarray(v) for k, v in jterms.items()}, tterms


def optimizer_state_measurements(tw: TwinTrainers, *, check: str, preset: str, steps: int,
                                 tol: str = "gradients") -> list[Measurement]:
    """Adam mu and sqrt(nu) (or the SGD momentum trace) and the step counts, by canonical name.

    nu is compared as sqrt(nu), in gradient units: nu itself (~1e-3 g^2) sits below any useful
    atol. Both are moving averages of gradients, hence `tol` (default: the gradient row).
    """
    out: list[Measurement] = []
    by_id = {id(p): k for k, p in tw.torch.model.named_parameters()}
    tstate = {by_id[id(p)]: s for p, s in tw.torch.optimizer.state.items()}
    leaves = jax.tree.leaves(
        tw.state.opt_state, is_leaf=lambda s: isinstance(s, (optax.ScaleByAdamState, optax.TraceState)))
    adam = [s for s in leaves if isinstance(s, optax.ScaleByAdamState)]
    trace = [s for s in leaves if isinstance(s, optax.TraceState)]
    opt = tw.cfg.optimizer
    if opt in ("adam", "adamw"):
        out.append(flag(len(adam) == 1, check=check, preset=preset, name="optax has one Adam state",
                        message=f"found {len(adam)}"))
        if adam:
            mu = jax_canonical(tw, adam[0].mu)
            nu = jax_canonical(tw, adam[0].nu)
            for k in tw.names:
                out.append(measure(mu[k], tstate[k]["exp_avg"], check=check, preset=preset,
                                   name=f"adam mu {k}", tol=tol))
                out.append(measure(np.sqrt(nu[k]), np.sqrt(tstate[k]["exp_avg_sq"].numpy()),
                                   check=check, preset=preset, name=f"adam sqrt(nu) {k}", tol=tol))
            counts = {int(adam[0].count)} | {int(tstate[k]["step"]) for k in tw.names}
            out.append(flag(counts == {steps}, check=check, preset=preset, name="adam step counts",
                            message=f"optax count / torch step = {counts}, expected {steps}"))
    elif opt == "sgd" and tw.cfg.momentum:
        out.append(flag(len(trace) == 1, check=check, preset=preset, name="optax has one trace",
                        message=f"found {len(trace)}"))
        if trace:
            tr = jax_canonical(tw, trace[0].trace)
            for k in tw.names:
                out.append(measure(tr[k], tstate[k]["momentum_buffer"], check=check, preset=preset,
                                   name=f"momentum {k}", tol=tol))
    out.append(flag(int(tw.state.step) == tw.torch.step == steps, check=check, preset=preset,
                    name="trainer step counters",
                    message=f"jax {int(tw.state.step)}, torch {tw.torch.step}, expected {steps}"))
    return out


def lr_measurement(tw: TwinTrainers, torch_lr: float, step: int, total: int, *, check: str,
                   preset: str) -> Measurement:
    """The learning rate of step `step`: lr * the optax schedule factor at count `step` vs the lr
    torch's optimizer held when the step was taken (LambdaLR)."""
    j = float(tw.cfg.lr) * float(jtrain.learning_rate_factor(tw.cfg, total)(step))
    return measure(j, torch_lr, check=check, preset=preset, name=f"lr at step {step}", tol="sgd_steps")


# ---- optimizer steps -----------------------------------------------------------------------------


# Adam's first update is g / (|g| + eps): its slope in g is eps / (|g| + eps)^2, ~1/eps where
# |g| is near eps = 1e-8. Float32 noise in such a gradient element (measured ~1e-9 between the
# twins) then moves that parameter by a sizeable fraction of lr (seen: 2.4e-5 and 4e-4 at
# lr = 1e-3 for |g| = 1e-8 and 4e-9), while every other element agrees to ~1e-7. Elements outside
# TOL["adam_steps"] whose optimizer input (the clipped gradient, plus wd * p for Adam's L2) was
# nonzero but below ADAM_EPS_REGIME at that step are compared with Adam's per-step move bound
# 2 * lr instead (at most MAX_EPS_REGIME_OUTLIERS per tensor and step); all others with the row. For |g| >= 1e-7 a noise of 1e-8 moves the update
# by < 1e-2 * lr, inside the row's atol at lr = 1e-3. Exact zeros (dead ReLU units) are exact in
# both frameworks and stay in the row. Each such outlier is reported (seen: 0 to 3 in 650k).
ADAM_EPS_REGIME = 1e-7  # 10 * Adam's eps
MAX_EPS_REGIME_OUTLIERS = 5  # per tensor and step


def _adam_param_measurements(jw, tw_, g_in, *, lr, check, preset, step, names) -> list[Measurement]:
    """TOL["adam_steps"] per tensor, except at most MAX_EPS_REGIME_OUTLIERS elements per tensor
    that are in Adam's eps regime (see ADAM_EPS_REGIME), which must stay within 2 * lr."""
    out = []
    row = TOL["adam_steps"]
    for k in names:
        diff = np.abs(jw[k].astype(np.float64) - tw_[k])
        off = diff > row["atol"] + row["rtol"] * np.abs(tw_[k].astype(np.float64))
        sensitive = (g_in[k] != 0) & (np.abs(g_in[k]) < ADAM_EPS_REGIME)
        outliers = off & sensitive
        out.append(measure(np.where(outliers, tw_[k], jw[k]), tw_[k], check=check, preset=preset,
                           name=f"step {step} param {k}", tol="adam_steps"))
        if outliers.any():
            d = float(diff[outliers].max())
            n = int(outliers.sum())
            out.append(dataclasses.replace(
                flag(d <= 2 * lr and n <= MAX_EPS_REGIME_OUTLIERS, check=check, preset=preset,
                     name=f"step {step} param {k}: {n} eps-regime element(s) within 2*lr",
                     message=f"{n} elements (max {MAX_EPS_REGIME_OUTLIERS}) with 0 < |g| < "
                             f"{ADAM_EPS_REGIME:g} off by up to {d:.3e} (bound 2*lr = {2 * lr:.1e})"),
                max_abs=d))
    return out


def check_optimizer_steps(case: str) -> list[Measurement]:
    """K_STEPS updates of both trainers for OPTIMIZER_CASES[case]; see the module docstring.

    SGD: one free trajectory (no re-synchronisation), params against TOL["sgd_steps"].
    Adam/AdamW: after each step the parameters are compared (see ADAM_EPS_REGIME) and the JAX
    params are then re-synchronised to torch's, so the next step starts from identical weights
    and the rare eps-regime elements cannot spread through the loss into the next gradients.
    The optimizer states (moments, counts) and the schedule are never re-synchronised: the
    moments after K_STEPS steps are compared at the end, as for SGD's momentum trace.
    """
    check = f"steps:{case}"
    changes = OPTIMIZER_CASES[case]
    adam_like = changes["optimizer"] in ("adam", "adamw")
    cfg = TrainConfig(model=STEP_PRESET, batch_size=STEP_BATCH, epochs=1, seed=seed_for(check) % 1000,
                      **changes)
    n = K_STEPS * STEP_BATCH
    tw = twin_trainers(cfg, n)
    rng = np.random.default_rng(seed_for(check, "data"))
    spec = tw.torch.model.spec
    l2 = float(tw.cfg.weight_decay or 0.0) if tw.cfg.optimizer == "adam" else 0.0
    out: list[Measurement] = []
    for i in range(K_STEPS):
        x = rng.uniform(size=(STEP_BATCH,) + spec.input_shape).astype(np.float32)
        eps = rng.normal(size=(STEP_BATCH, spec.latent_dim)).astype(np.float32)
        torch_lr = tw.torch.optimizer.param_groups[0]["lr"]
        before = tconvert.to_canonical(tw.torch.model)
        jterms, tterms = step_both(tw, x, eps)
        grad_norm = (jterms.pop("grad_norm"), tterms.pop("grad_norm"))
        out += compare_dicts(jterms, tterms, check=check, preset=STEP_PRESET,
                             tol="model_loss_terms", prefix=f"step {i} terms.")
        out.append(measure(grad_norm[0], grad_norm[1], check=check, preset=STEP_PRESET,
                           name=f"step {i} grad_norm", tol="gradients"))
        out.append(lr_measurement(tw, torch_lr, i, n // STEP_BATCH, check=check, preset=STEP_PRESET))
        if adam_like:
            tw_ = tconvert.to_canonical(tw.torch.model)
            # torch's p.grad is the clipped gradient (clip_grad_norm_ works in place)
            g_in = {k: p.grad.numpy() + l2 * before[k] for k, p in tw.torch.model.named_parameters()}
            out += _adam_param_measurements(jax_canonical(tw), tw_, g_in, lr=torch_lr, check=check,
                                             preset=STEP_PRESET, step=i, names=tw.names)
            resync_params(tw, tw_)
    if not adam_like:
        jw, tw_ = jax_canonical(tw), tconvert.to_canonical(tw.torch.model)
        for k in tw.names:
            out.append(measure(jw[k], tw_[k], check=check, preset=STEP_PRESET,
                               name=f"param {k} after {K_STEPS} steps", tol="sgd_steps"))
    out += optimizer_state_measurements(tw, check=check, preset=STEP_PRESET, steps=K_STEPS)
    return out


def resync_params(tw: TwinTrainers, weights: dict[str, np.ndarray]) -> None:
    """Set the JAX state's params (not its optimizer state or step) from canonical weights."""
    model = nnx.merge(tw.jax.graphdef, tw.state.params, tw.state.rest, copy=True)
    jconvert.load_canonical_into(model, weights)
    _, params, _ = nnx.split(model, nnx.Param, ...)
    tw.state = tw.state._replace(params=params)


# ---- BatchNorm in train mode ---------------------------------------------------------------------

BN_PRESET = "manning_glasses_vae"
BN_OVERRIDES = {"image_size": 32}
BN_STEPS = 3
BN_BATCH = 4
BN_MOMENTUM = 0.1  # torch's default (jaxvae.models.BatchNorm uses torch's convention)
# SGD with momentum (and the preset's weight decay), not the preset's Adam: the biases feeding a
# BatchNorm have a true gradient of exactly 0, so their float32 gradients are pure rounding
# noise (~5e-6), which Adam would normalise into +-lr moves that differ between the twins
# (measured: 5.6e-4 after 3 steps at lr 1e-4) and which leak into the running means. SGD keeps
# that noise at lr * 5e-6 and the check about BatchNorm; Adam itself is covered above.
BN_OPTIMIZER = dict(optimizer="sgd", lr=1e-3, momentum=0.9)


def check_batchnorm_training() -> list[Measurement]:
    """BN_STEPS SGD steps of the glasses VAE (32 px) in train mode, then eval-mode forwards."""
    check = "batchnorm_train"
    preset = f"{BN_PRESET}(32px)"
    cfg = TrainConfig(model=BN_PRESET, model_overrides=BN_OVERRIDES, batch_size=BN_BATCH, epochs=1,
                      seed=seed_for(check) % 1000, **BN_OPTIMIZER)
    tw = twin_trainers(cfg, BN_STEPS * BN_BATCH)
    spec = tw.torch.model.spec
    rng = np.random.default_rng(seed_for(check, "data"))
    # torch's input to encoder.batch2 at the first step: the truth for the running-stat formula
    seen: list[np.ndarray] = []
    hook = tw.torch.model.encoder.batch2.register_forward_hook(
        lambda mod, inp, outp: seen.append(inp[0].detach().double().numpy().copy()))
    out: list[Measurement] = []
    bn_names = [k for k in tconvert.to_canonical(tw.torch.model)
                if k.endswith(("running_mean", "running_var", "num_batches_tracked"))]
    try:
        for i in range(BN_STEPS):
            x = rng.uniform(size=(BN_BATCH,) + spec.input_shape).astype(np.float32)
            eps = rng.normal(size=(BN_BATCH, spec.latent_dim)).astype(np.float32)
            jterms, tterms = step_both(tw, x, eps)
            grad_norm = (jterms.pop("grad_norm"), tterms.pop("grad_norm"))
            out += compare_dicts(jterms, tterms, check=check, preset=preset,
                                 tol="model_loss_terms", prefix=f"step {i} terms.")
            out.append(measure(grad_norm[0], grad_norm[1], check=check, preset=preset,
                               name=f"step {i} grad_norm", tol="gradients"))
            jb, tb = jax_canonical(tw), tconvert.to_canonical(tw.torch.model)
            for k in bn_names:
                out.append(measure(jb[k], tb[k], check=check, preset=preset,
                                   name=f"step {i} {k}", tol="forward"))
            if i == 0:
                # running = (1 - m) * init + m * batch stat, with the UNBIASED batch variance
                a = seen[0]  # (B, C, H, W)
                n = a.shape[0] * a.shape[2] * a.shape[3]
                mean = a.mean(axis=(0, 2, 3))
                var_unbiased = a.var(axis=(0, 2, 3)) * n / (n - 1)
                want_mean = BN_MOMENTUM * mean
                want_var = (1 - BN_MOMENTUM) * 1.0 + BN_MOMENTUM * var_unbiased
                for fw, w in (("jax", jb), ("torch", tb)):
                    out.append(measure(w["encoder.batch2.running_mean"], want_mean, check=check,
                                       preset=preset, name=f"{fw} running_mean vs formula",
                                       tol="forward"))
                    out.append(measure(w["encoder.batch2.running_var"], want_var, check=check,
                                       preset=preset, name=f"{fw} running_var vs unbiased formula",
                                       tol="forward"))
    finally:
        hook.remove()
    jw, tw_ = jax_canonical(tw), tconvert.to_canonical(tw.torch.model)
    for k in tw.names:
        out.append(measure(jw[k], tw_[k], check=check, preset=preset,
                           name=f"param {k} after {BN_STEPS} steps", tol="sgd_steps"))
    counts = {int(jw[k]) for k in bn_names if k.endswith("num_batches_tracked")} | \
             {int(tw_[k]) for k in bn_names if k.endswith("num_batches_tracked")}
    out.append(flag(counts == {BN_STEPS}, check=check, preset=preset, name="num_batches_tracked",
                    message=f"values {counts}, expected {BN_STEPS}"))
    out += optimizer_state_measurements(tw, check=check, preset=preset, steps=BN_STEPS,
                                        tol="gradients_amplified")
    # eval mode: running statistics instead of batch statistics
    x = rng.uniform(size=(BN_BATCH,) + spec.input_shape).astype(np.float32)
    eps = rng.normal(size=(BN_BATCH, spec.latent_dim)).astype(np.float32)
    tw.torch.model.eval()
    with torch.no_grad():
        t_out = tw.torch.model(torch.from_numpy(x), eps=torch.from_numpy(eps))
    # (a) the JAX model holding torch's final weights AND running stats: eval-mode forward alone
    jm = jconvert.from_canonical(BN_PRESET, tw_, **BN_OVERRIDES)
    jm.eval()
    j_out = jm(jnp.asarray(to_nhwc(x)), eps=jnp.asarray(eps))
    # (b) the JAX trainer's own state after its BN_STEPS steps
    j_own = tw.jax.model_from(tw.state.params, tw.state.rest, train=False)(
        jnp.asarray(to_nhwc(x)), eps=jnp.asarray(eps))
    for field in ("logits", "mean", "logvar"):
        t_val = getattr(t_out, field).numpy()
        out.append(measure(to_nchw(getattr(j_out, field)), t_val, check=check, preset=preset,
                           name=f"eval forward {field} (same weights+stats)", tol="forward"))
        out.append(measure(to_nchw(getattr(j_own, field)), t_val, check=check, preset=preset,
                           name=f"eval forward {field} (each trainer's own state)", tol="forward"))
    return out


# ---- real epoch loops: batch order and fresh eps --------------------------------------------------

LOOP_CFG = dict(dataset="mnist5k", epochs=1, batch_size=16, limit_train=80, limit_test=16,
                eval_batch_size=16, final_nll_samples=0, checkpoint_every=0, lr=1e-30)


def no_figures(*args, **kwargs):
    return None


def run_both_loops(cfg: TrainConfig, workdir: Path, *, weights: dict[str, np.ndarray],
                   data: tuple[np.ndarray, np.ndarray] | None = None) -> dict[str, list[dict]]:
    """Each framework's `train_and_evaluate` into workdir/{jax,torch}; returns the batch records.

    Args:
      weights: canonical weights both models start from (their builders are patched).
      data: (train, test) NHWC float32 arrays replacing the configured dataset (None: as configured).
    Figures are skipped (patched out): they are not what these checks are about, and cost seconds.
    """
    from jaxvae import figure_data as jfig
    from torchvae import figure_data as tfig

    p = Patches()
    try:
        p.setattr(jfig, "write_run_figures", no_figures)
        p.setattr(tfig, "write_run_figures", no_figures)
        p.setattr(tmodels, "build_model", lambda name, *, generator=None, init="default", **ov:
                  tconvert.from_canonical(name, weights, **ov))
        if data is not None:
            p.setattr(jtrain, "load_datasets", _injected_data("jax", data))
            p.setattr(ttrain, "load_datasets", _injected_data("torch", data))
        with jax_models_from(weights):
            jtrain.train_and_evaluate(cfg, workdir / "jax", resume=False, progress=False)
        ttrain.train_and_evaluate(cfg, workdir / "torch", resume=False, progress=False)
    finally:
        p.undo()
    return {fw: [r for r in runs.read_metrics(workdir / fw) if r["type"] == "batch"]
            for fw in ("jax", "torch")}


def _injected_data(fw: str, data: tuple[np.ndarray, np.ndarray]):
    """A `load_datasets(cfg)` replacement returning the given NHWC arrays in fw's layout."""
    def load(cfg):
        out = []
        for split, arr in zip(("train", "test"), data):
            info = datasets.DataInfo("injected", "test", "<parity_tests>", split, len(arr))
            labels = np.zeros(len(arr), np.int64)
            if fw == "jax":
                out.append(datasets.Dataset(jnp.asarray(arr), jnp.asarray(labels, jnp.int32), info))
            else:  # NCHW (JAX: NHWC)
                out.append(datasets.Dataset(torch.from_numpy(arr.transpose(0, 3, 1, 2).copy()),
                                            torch.from_numpy(labels), info))
        return tuple(out)

    return load


AE_PRESET = "manning_ae"


def _manning_ae_recon(w: dict[str, np.ndarray], x: np.ndarray) -> np.ndarray:
    """float64 NumPy manning_ae forward + the oracle's mse_sum: (N,) per-example recon."""
    w = {k: v.astype(np.float64) for k, v in w.items()}
    h = x.reshape(len(x), -1).astype(np.float64)

    def lin(a, name):
        return a @ w[f"{name}.weight"].T + w[f"{name}.bias"]

    code = lin(np.maximum(lin(h, "common"), 0.0), "encoded")
    logits = lin(np.maximum(lin(code, "l1"), 0.0), "decode")
    return oracle.reconstruction_nll(h, logits, "mse_sum")


def check_batch_order(workdir: Path) -> list[Measurement]:
    """Per-batch recon of both real epoch loops == the oracle's on epoch_batches' order."""
    check = "batch_order"
    cfg = TrainConfig(model=AE_PRESET, seed=seed_for(check) % 1000, **LOOP_CFG)
    g = torch.Generator().manual_seed(seed_for(check))
    weights = tconvert.to_canonical(tmodels.build_model(AE_PRESET, generator=g))
    train = datasets.load_dataset_arrays("mnist5k", "train", limit=cfg.limit_train).images  # NHWC
    recs = run_both_loops(cfg, workdir, weights=weights)
    per_example = _manning_ae_recon(weights, train)
    order = schedule.epoch_batches(cfg.seed, 0, len(train), cfg.batch_size)
    want = per_example[order].mean(axis=1)  # (steps,)
    other = per_example[schedule.epoch_batches(cfg.seed, 1, len(train), cfg.batch_size)].mean(axis=1)
    out = [flag(np.min(np.abs(want - other)) > 1e-3 * np.max(np.abs(want)), check=check, preset=AE_PRESET,
                name="another order would be detected",
                message=f"batch means of epochs 0 and 1 too close: {want} vs {other}")]
    for fw, rs in recs.items():
        out.append(flag([r["step"] for r in rs] == list(range(1, len(want) + 1)), check=check,
                        preset=AE_PRESET, name=f"{fw} batch records",
                        message=f"steps {[r['step'] for r in rs]}"))
        got = np.array([r["recon"] for r in rs][: len(want)])
        if got.shape == want.shape:
            out.append(measure(got, want, check=check, preset=AE_PRESET,
                               name=f"{fw} per-batch recon vs oracle on epoch_batches",
                               tol="model_loss_terms"))
    return out


FRESH_PRESET = "pytorch_examples"


def check_fresh_eps(workdir: Path) -> list[Measurement]:
    """One epoch of one repeated image, lr ~ 0: each step's loss must differ (fresh eps)."""
    check = "fresh_eps"
    cfg = TrainConfig(model=FRESH_PRESET, model_overrides={"hidden": (32,), "latent_dim": 4},
                      seed=seed_for(check) % 1000, **LOOP_CFG)
    img = datasets.load_dataset_arrays("mnist5k", "train", limit=1).images  # (1, 28, 28, 1)
    train = np.repeat(img, cfg.limit_train, axis=0)
    g = torch.Generator().manual_seed(seed_for(check))
    weights = tconvert.to_canonical(tmodels.build_model(FRESH_PRESET, generator=g, **cfg.model_overrides))
    recs = run_both_loops(cfg, workdir, weights=weights, data=(train, train[: cfg.limit_test]))
    steps = cfg.limit_train // cfg.batch_size
    out = []
    for fw, rs in recs.items():
        losses = [r["loss"] for r in rs]
        out.append(flag(len(rs) == steps and len(set(losses)) == steps, check=check,
                        preset=FRESH_PRESET, name=f"{fw}: {steps} distinct step losses",
                        message=f"eps repeated across steps: losses {losses}"))
    return out
