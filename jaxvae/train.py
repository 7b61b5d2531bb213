"""The one JAX training loop: whole epochs compiled with `jax.lax.scan`, data resident on device.

Twin: `torchvae/train.py` (same `TrainConfig`, functions in the same order, metric keys, run-folder
layout and batch order). What is not framework-specific (members, ownership, records, cadence,
signals, progress, summaries) is `vaecommon.lifecycle`, shared by both.

The design (pure `apply_update`, the scanned epoch, the member axis) is in jaxvae/README.md.

- Randomness (`jaxvae.streams`): eps and dynamic binarization keys are folded from the
  optimizer step, evaluation keys from the epoch; no global RNG exists. A resumed run draws
  exactly what an uninterrupted run would.
- The last partial batch of each epoch is dropped; the permutation changes every epoch, so
  every example is used, and every reported training average is an average over the examples
  of equal-sized batches (mean of batch means == per-example mean).
- Evaluation pads the test set to whole batches and masks the padding, so every test example
  counts exactly once.
"""

from __future__ import annotations

import contextlib
import dataclasses
import time
from functools import partial
from pathlib import Path
from typing import Any, Callable, NamedTuple

import jax
import jax.numpy as jnp
import numpy as np
import optax
from flax import nnx
from jax.sharding import NamedSharding, PartitionSpec as P

from . import checkpoint as ckpt_lib
from . import convert
from . import data as data_lib
from . import figure_data as figures_lib
from . import losses
from . import models
from . import multiprocess
from . import optim
from . import stream_data
from . import xla_options
from jaxvae.streams import stream_key
from vaecommon import lifecycle, runinfo
from vaecommon.config import TrainConfig, check_resumable, resolve
from vaecommon.datasets import binarized_view, hold_out
from vaecommon.lifecycle import NonFiniteLossError
from vaecommon.presets import get_spec
from vaecommon.tensorboard import Board
from vaecommon.schedule import (epoch_batches, lr_factor, shared_epoch_noise, shared_eval_noise,
                                steps_per_epoch)
from vaecommon.validate import check_training_images
from vaecommon.weights import shared_torch_init

__all__ = [
    "Trainer", "make_optimizer", "learning_rate_factor", "train_and_evaluate",
    "evaluate", "test_nll", "load_datasets", "NonFiniteLossError",
    "TrainState",
]

FRAMEWORK, PACKAGE = "jax", "jaxvae"
AS_ARRAY = np.asarray  # the array type of this twin's datasets
VERSIONS = ("jax", "jaxlib", "flax", "optax", "orbax-checkpoint", "numpy")

# Up to this many bytes of an epoch's reparameterization noise are drawn before its scan.
_PREDRAW_BYTES = 256 * 2**20

# Importance samples per decoder block of the test NLL: 32 x 100 examples = 3,200 rows, whose
# logits stay in cache where XLA:CPU fuses the decoder matmuls with the per-pixel likelihood.
NLL_CHUNK = 32


class TrainState(NamedTuple):
    """Everything a training step reads and writes (a pytree)."""

    params: Any  # nnx.State of nnx.Param
    rest: Any  # nnx.State of everything else (BatchNorm running stats)
    opt_state: Any
    step: jax.Array  # int32 scalar: optimizer steps taken


# --------------------------------------------------------------------------------------------
# Optimizer


def learning_rate_factor(cfg: TrainConfig, total_steps: int) -> Callable[[jax.Array], jax.Array]:
    """Schedule shape in [0, 1] (`vaecommon.schedule.lr_factor`).

    In jax.numpy. The peak learning rate is applied separately (`hyper["lr"]`) so that a sweep can vmap over it.
    """
    return partial(lr_factor, warmup_steps=int(cfg.warmup_steps), schedule=cfg.schedule,
                   total_steps=int(total_steps), xp=jnp)


def make_optimizer(cfg: TrainConfig, total_steps: int) -> optax.GradientTransformation:
    """Optax transformation without the learning rate (see `learning_rate_factor`).

    Matches torch.optim exactly: Adam/SGD `weight_decay` adds wd*p to the gradient (L2), AdamW
    decays decoupled (p -= lr*wd*p); gradient clipping acts on the raw gradient first.
    """
    parts = []
    if cfg.grad_clip:
        parts.append(optax.clip_by_global_norm(cfg.grad_clip))
    wd = float(cfg.weight_decay or 0.0)
    if cfg.optimizer in ("adam", "sgd") and wd:
        parts.append(optax.add_decayed_weights(wd))
    if cfg.optimizer == "adam_norm_grad":  # the VampPrior code's optimizer (jaxvae.optim)
        parts.append(optim.scale_by_adam_norm_grad(weight_decay=wd))
    elif cfg.optimizer in ("adam", "adamw"):
        parts.append(optax.scale_by_adam(b1=0.9, b2=0.999, eps=1e-8))
        if cfg.optimizer == "adamw" and wd:
            parts.append(optax.add_decayed_weights(wd))
    elif cfg.optimizer == "sgd":
        if cfg.momentum:
            parts.append(optax.trace(decay=cfg.momentum, nesterov=False))
    else:  # resolve() validated the name; keep the error for direct callers
        raise ValueError(f"unknown optimizer {cfg.optimizer!r}; valid: adam, adamw, sgd, "
                         "adam_norm_grad")
    parts.append(optax.scale_by_schedule(learning_rate_factor(cfg, total_steps)))
    return optax.chain(*parts)


def forward(model, x, eps, logvar_clamp: float | None = None):
    """model(x, eps=eps), with the encoder's logvar clamped to [-c, c] BEFORE the
    reparameterization when `logvar_clamp` is set (a guard against exp(logvar/2) overflow)."""
    if logvar_clamp is None:
        return model(x, eps=eps)
    mean, logvar = model.encode(x)
    if logvar is None:  # autoencoder
        return models.ModelOutput(model.decode_logits(mean), mean, None, mean)
    logvar = jnp.clip(logvar, -logvar_clamp, logvar_clamp)
    z = model.reparameterize(mean, logvar, eps)
    return models.ModelOutput(model.decode_logits(z), mean, logvar, z)


def attach_likelihood_params(model, cfg: TrainConfig):
    """Add the likelihood's own trainable parameters to the model (in place; returns it).

    `gaussian_learned` gets one global `log_sigma` (an nnx.Param, initialised to 0: sigma = 1),
    trained with the model by the same optimizer and saved in its checkpoints.
    """
    if cfg.likelihood == "gaussian_learned":
        model.log_sigma = nnx.Param(jnp.zeros((), jnp.float32))
    return model


def likelihood_params(model) -> dict:
    """The keyword arguments the reconstruction term needs from the model (see above)."""
    return {"log_sigma": model.log_sigma[...]} if hasattr(model, "log_sigma") else {}


def prior_params(model) -> dict:
    """The objective's `log_prior` when the model's prior is not N(0, I) (the VampPrior)."""
    return {"log_prior": model.log_prior} if model.spec.prior != "standard" else {}


# --------------------------------------------------------------------------------------------
# The trainer


@dataclasses.dataclass
class Trainer:
    """Compiled training and evaluation functions for one resolved config.

    Build with `Trainer.create(cfg, image_shape, n_train)`; `init_state(key)` gives a fresh state.
    """

    cfg: TrainConfig
    graphdef: Any
    tx: optax.GradientTransformation
    steps_per_epoch: int
    latent_dim: int
    hyper: dict[str, float]
    mesh: Any = None
    objective: str = "elbo"
    objective_params: dict = dataclasses.field(default_factory=dict)
    compiled: dict = dataclasses.field(default_factory=dict, repr=False)
    """jitted evaluation / NLL functions, built once per Trainer (see `_compiled`)."""

    @classmethod
    def create(cls, cfg: TrainConfig, n_train: int, *, mesh=None, sweep_keys=()) -> "Trainer":
        cfg = resolve(cfg, framework=FRAMEWORK)
        if cfg.objective not in losses.OBJECTIVES:
            raise KeyError(
                f"unknown objective {cfg.objective!r}; valid: {', '.join(sorted(losses.OBJECTIVES))}"
            )
        if cfg.likelihood not in losses.RECONSTRUCTION:
            raise KeyError(
                f"unknown likelihood {cfg.likelihood!r}; valid: {', '.join(sorted(losses.RECONSTRUCTION))}"
            )
        # only the structure is needed here (init_state draws the weights): trace the build
        # abstractly instead of initialising a second full set of parameters
        model = nnx.eval_shape(lambda: attach_likelihood_params(
            models.build_model(cfg.model, key=jax.random.key(0), init=cfg.init,
                               **cfg.model_overrides), cfg))
        graphdef, _, _ = nnx.split(model, nnx.Param, ...)
        spe = steps_per_epoch(n_train, cfg.batch_size)
        tx = make_optimizer(cfg, spe * cfg.epochs)
        hyper = {"lr": float(cfg.lr)}
        for k in sweep_keys:
            hyper[k] = float(cfg.objective_params[k])
        objective, params = lifecycle.objective_of(cfg, spe)
        return cls(cfg, graphdef, tx, spe, model.spec.latent_dim, hyper, mesh, objective, params)

    # ---- state ---------------------------------------------------------------------------

    def init_state(self, root_key: jax.Array, seed: int | None = None) -> TrainState:
        """A fresh state; with TrainConfig.noise "shared" (which needs the run's `seed`) its
        weights are `vaecommon.weights.shared_torch_init`'s, the torch twin's too."""
        model = models.build_model(
            self.cfg.model, key=stream_key(root_key, "init", 0), init=self.cfg.init,
            **self.cfg.model_overrides,
        )
        if self.cfg.noise == "shared" and seed is not None:
            convert.load_canonical_into(model, shared_torch_init(convert.to_canonical(model), seed))
        attach_likelihood_params(model, self.cfg)
        model.train()
        _, params, rest = nnx.split(model, nnx.Param, ...)
        return TrainState(params, rest, self.tx.init(params), jnp.zeros((), jnp.int32))

    def model_from(self, params, rest, *, train: bool = False) -> nnx.Module:
        model = nnx.merge(self.graphdef, params, rest, copy=True)
        model.train() if train else model.eval()
        return model

    # ---- noise -----------------------------------------------------------------------------

    def draw_noise(self, key, batch: int) -> tuple[jax.Array, jax.Array | None]:
        """(eps (B, D) for the reparameterization, extra noise the objective needs or None).

        The extra noise (IWAE's (k, B, D) samples, InfoVAE's prior samples) has the shape
        `losses.extra_noise_shape` gives; it is drawn from its own subkey.
        """
        k_eps, k_extra = jax.random.split(key)
        eps = jax.random.normal(k_eps, (batch, self.latent_dim), jnp.float32)
        shape = losses.extra_noise_shape(self.cfg.objective, batch, self.latent_dim,
                                         **self.cfg.objective_params)
        extra = None if shape is None else jax.random.normal(k_extra, shape, jnp.float32)
        return eps, extra

    # ---- the one update -------------------------------------------------------------------

    def loss_fn(self, params, rest, x, eps, extra, step, hyper, mi_tc=None):
        """Scalar loss, (terms, updated rest) for one batch. `mi_tc`: whether this step computes
        the sampled diagnostics (None: `lifecycle.sampled_step(step)`)."""
        cfg = self.cfg
        if cfg.precision == "bfloat16":
            params = jax.tree.map(lambda p: p.astype(jnp.bfloat16), params)
            x_in = x.astype(jnp.bfloat16)
        else:
            x_in = x
        model = nnx.merge(self.graphdef, params, rest, copy=True)
        model.train()
        out = forward(model, x_in, eps.astype(x_in.dtype), cfg.logvar_clamp)
        out = jax.tree.map(lambda a: a.astype(jnp.float32), out)
        params_obj = dict(self.objective_params)
        params_obj.update({k: v for k, v in hyper.items() if k != "lr"})
        params_obj.update(likelihood_params(model), **prior_params(model))
        loss, terms = losses.OBJECTIVES[self.objective](
            x, out, likelihood=cfg.likelihood, step=step, reduction=cfg.reduction,
            decode=lambda z: model.decode_logits(z.astype(x_in.dtype)).astype(jnp.float32),
            eps=extra, **params_obj,
        )
        if out.logvar is not None:  # posterior-collapse diagnostics, tracked in every VAE run
            terms = {**terms, **losses.posterior_diagnostics(
                out.z, out.mean, out.logvar, dataset_size=self.steps_per_epoch * cfg.batch_size,
                mi_tc=lifecycle.sampled_step(step) if mi_tc is None else mi_tc)}
        new_rest = nnx.state(model, nnx.Not(nnx.Param))
        return loss.astype(jnp.float32), (terms, new_rest)

    def apply_update(self, state: TrainState, x, eps, extra=None, hyper=None, mi_tc=None
                     ) -> tuple[TrainState, dict]:
        """One optimizer step on batch `x` with noise `eps`. Pure; jit/scan/vmap friendly.

        Args:
          state: TrainState.
          x: (B, H, W, C) float32 batch.
          eps: (B, D) standard normal noise for z = mean + exp(logvar/2) * eps.
          extra: the objective's extra noise (see `draw_noise`), or None.
          hyper: dict of traced hyperparameters ({"lr": ..., swept objective params}).
          mi_tc: whether this step computes the sampled collapse diagnostics; None:
            `lifecycle.sampled_step(state.step)`.
        Returns:
          (new state, terms): terms are the objective's scalar terms plus "grad_norm".
        """
        hyper = self.hyper if hyper is None else hyper
        (loss, (terms, new_rest)), grads = jax.value_and_grad(self.loss_fn, has_aux=True)(
            state.params, state.rest, x, eps, extra, state.step, hyper, mi_tc
        )
        updates, opt_state = self.tx.update(grads, state.opt_state, state.params)
        lr = jnp.asarray(hyper["lr"], jnp.float32)
        params = jax.tree.map(lambda p, u: p - lr * u.astype(p.dtype), state.params, updates)
        terms = dict(terms)
        terms["loss"] = loss  # the value actually optimized (the NaN guard watches it)
        terms["grad_norm"] = optax.tree.norm(grads)
        return TrainState(params, new_rest, opt_state, state.step + 1), terms

    # ---- one epoch -------------------------------------------------------------------------

    def batch_indices(self, epoch: int, n: int) -> np.ndarray:
        """(steps_per_epoch, B) example indices of `epoch`: the order both frameworks share."""
        return epoch_batches(self.cfg.seed, epoch, n, self.cfg.batch_size)

    def train_epoch(self, state: TrainState, images: jax.Array | None, idx: jax.Array, root_key: jax.Array,
                    hyper=None, progress: Callable | None = None, shared: dict | None = None,
                    start_step: jax.Array | None = None):
        """Scan `apply_update` over one epoch.

        Args:
          state: TrainState.
          images: (N, H, W, C) the device-resident training set; None when `idx` holds the
            batches themselves.
          idx: (steps, B) int32 example indices (`batch_indices`), or (steps, B, H, W, C) the
            gathered batches (multi-process: each process supplies its rows,
            `jaxvae.multiprocess.global_batches`).
          root_key: the run's root key (eps and binarization keys are folded from the step).
          shared: with TrainConfig.noise "shared", the epoch's `shared_epoch_noise` arrays
            (eps, extra, uniform), used instead of the keys' streams.
          start_step: `state.step` at the start of the epoch, given unbatched by a vmapped sweep
            (its members are always at the same step): the epoch's step numbers then decide
            unbatched which steps compute the sampled collapse diagnostics, a `lax.cond`; from
            the batched `state.step` it would become a select that computes them on every step.
            None: `state.step`.
        Returns:
          (state, terms): terms stacked per step, each (steps,).
        """
        dynamic = self.cfg.binarization == "dynamic"
        steps, batch = idx.shape[:2]
        # The epoch's noise is drawn before the scan, one vectorized RNG call instead of one small
        # one per step (on CPU, a per-step threefry loop over 128 x 20 values cost ~6% of an
        # MLP epoch). vmap over the step keys gives the same values as drawing inside each step.
        one_step = jax.eval_shape(lambda: self.step_noise(root_key, state.step, batch))
        predraw = shared is None and steps * sum(
            a.size * a.dtype.itemsize for a in jax.tree.leaves(one_step)) <= _PREDRAW_BYTES

        def body(state, xs):
            ids, noise, sh, mi_tc = xs
            x = images[ids] if images is not None else ids  # (B, H, W, C), gathered on device
            if self.mesh is not None:
                x = jax.lax.with_sharding_constraint(x, NamedSharding(self.mesh, P("data")))
            if dynamic and sh is not None:
                x = (sh["uniform"] < x).astype(x.dtype)  # the framework-neutral draw
            elif dynamic:
                x = data_lib.binarize(x, stream_key(root_key, "binarize", state.step))
            if sh is not None:
                eps, extra = sh["eps"], sh.get("extra")
            else:
                eps, extra = noise if predraw else self.step_noise(root_key, state.step, batch)
            if self.mesh is not None:
                eps = jax.lax.with_sharding_constraint(eps, NamedSharding(self.mesh, P("data")))
            state, terms = self.apply_update(state, x, eps, extra, hyper, mi_tc)
            if progress is not None:
                every = max(1, self.steps_per_epoch // 20)
                jax.lax.cond(
                    (state.step % every == 0),
                    lambda: jax.debug.callback(progress, state.step, terms["loss"]),
                    lambda: None,
                )
            return state, terms

        first = state.step if start_step is None else start_step
        step_ids = first + jnp.arange(steps, dtype=jnp.asarray(state.step).dtype)  # the epoch's steps
        noise = jax.vmap(lambda s: self.step_noise(root_key, s, batch))(step_ids) if predraw else None
        return jax.lax.scan(body, state, (idx, noise, shared, lifecycle.sampled_step(step_ids)))

    def shared_noise(self, seed: int, epoch: int, image_shape) -> dict[str, jax.Array]:
        """The epoch's framework-neutral noise (`vaecommon.schedule.shared_epoch_noise`), on the
        device: image_shape is (H, W, C)."""
        cfg, batch = self.cfg, self.cfg.batch_size
        noise = shared_epoch_noise(
            seed, epoch, self.steps_per_epoch, batch, self.latent_dim,
            extra_shape=losses.extra_noise_shape(cfg.objective, batch, self.latent_dim,
                                                 **cfg.objective_params),
            image_shape=tuple(image_shape) if cfg.binarization == "dynamic" else None)
        return {k: jnp.asarray(v) for k, v in noise.items()}

    def step_noise(self, root_key: jax.Array, step, batch: int) -> tuple[jax.Array, jax.Array | None]:
        """The (eps, extra) noise of optimizer step `step` (see `draw_noise`)."""
        return self.draw_noise(stream_key(root_key, "eps", step), batch)

    # ---- evaluation ------------------------------------------------------------------------

    def _compiled(self, name: str, build: Callable[[], Callable]) -> Callable:
        """`build()` jitted once per Trainer and cached (evaluating every epoch recompiles
        nothing: the test batches keep their shapes, keys are arguments)."""
        if name not in self.compiled:
            self.compiled[name] = xla_options.jit(build())
        return self.compiled[name]

    @property
    def kl_estimate(self) -> str:
        """How evaluation estimates the KL: the objective's `kl_estimate` (analytic by default)."""
        return self.objective_params.get("kl_estimate", "analytic")

    def eval_batch(self, params, rest, x, eps):
        """Per-example {"loss","recon","kl"} (B,), the posterior mean (B, D), the KL per
        dimension (B, D) and the forward pass (its z and logvar feed the collapse diagnostics)."""
        model = self.model_from(params, rest, train=False)
        out = forward(model, x, eps, self.cfg.logvar_clamp)
        terms = losses.elbo_terms(x, out, self.cfg.likelihood, **likelihood_params(model),
                                  **prior_params(model), kl_estimate=self.kl_estimate)
        if out.logvar is not None:
            kl_dim = losses.kl_normal_per_dim(out.mean, out.logvar)
        else:
            kl_dim = jnp.zeros_like(out.mean)
        return terms, out.mean, kl_dim, out


def evaluate(trainer: Trainer, params, rest, images, root_key, *, nll_samples: int = 0,
             epoch: int = 0, nll_chunk: int = NLL_CHUNK, timings: lifecycle.Timings | None = None,
             seed: int | None = None) -> dict[str, Any]:
    """Test-set metrics, every example counted exactly once (padding masked). `seed`: the
    run's, for TrainConfig.noise "shared" (the -ELBO's eps are then the torch twin's too).

    Returns a dict: loss (-ELBO, nats/example), recon, kl, bits_per_dim, kl_per_dim (list),
    active_units (Burda et al.: Var_x E_q[z_d] > 0.01), and nll/nll_samples when requested.
    `timings` gets the seconds of the evaluation and of the NLL.
    """
    timings = timings or lifecycle.Timings()
    with timings("evaluation"):
        res = _test_elbo(trainer, params, rest, images, root_key, epoch=epoch, seed=seed)
    if nll_samples and get_spec(trainer.cfg.model, **trainer.cfg.model_overrides).is_vae:
        with timings("nll"):
            res.update(_test_nll_record(trainer, params, rest, images, root_key,
                                        nll_samples=nll_samples, epoch=epoch, chunk=nll_chunk))
    return res


def _test_elbo(trainer: Trainer, params, rest, images, root_key, *, epoch: int,
               seed: int | None = None) -> dict[str, Any]:
    """The -ELBO part of `evaluate` (one compiled scan over the padded test batches); with
    TrainConfig.noise "shared" and the run's `seed`, the eps are `shared_eval_noise`'s."""
    cfg = trainer.cfg
    images = np.asarray(images)
    n = images.shape[0]
    bs = min(cfg.eval_batch_size, n)
    xs, masks = lifecycle.pad_batches(images, bs)
    d = trainer.latent_dim
    shared = None
    if cfg.noise == "shared" and seed is not None:
        shared, _ = lifecycle.pad_batches(shared_eval_noise(seed, epoch, n, d), bs)
    vae = get_spec(cfg.model, **cfg.model_overrides).is_vae

    def build():
        def run(params, rest, xs, masks, key, shared):
            def body(carry, inp):
                i, x, m, sh = inp
                eps = sh if sh is not None else jax.random.normal(jax.random.fold_in(key, i),
                                                                   (x.shape[0], d))
                terms, mean, kl_dim, out = trainer.eval_batch(params, rest, x, eps)
                sums = {k: jnp.sum(v * m) for k, v in terms.items()}
                sums["kl_per_dim"] = jnp.sum(kl_dim * m[:, None], axis=0)
                sums["mean_sum"] = jnp.sum(mean * m[:, None], axis=0)
                sums["mean_sq"] = jnp.sum(mean**2 * m[:, None], axis=0)
                if out.logvar is not None:  # minibatch I(x;z) and TC of the whole batches only
                    diag = losses.posterior_diagnostics(out.z, out.mean, out.logvar, dataset_size=n)
                    full = (jnp.sum(m) == m.shape[0]).astype(jnp.float32)
                    sums.update(full_batches=full, mutual_info=diag["mutual_info"] * full,
                                total_correlation=diag["total_correlation"] * full)
                return jax.tree.map(jnp.add, carry, sums), None

            zero = {k: jnp.float32(0) for k in ("loss", "recon", "kl")}
            if vae:
                zero.update({k: jnp.float32(0) for k in
                             ("full_batches", "mutual_info", "total_correlation")})
            zero.update({k: jnp.zeros((d,), jnp.float32) for k in ("kl_per_dim", "mean_sum", "mean_sq")})
            return jax.lax.scan(body, zero, (jnp.arange(xs.shape[0]), xs, masks, shared))[0]
        return run

    sums = jax.device_get(trainer._compiled("evaluate", build)(
        params, rest, jnp.asarray(xs), jnp.asarray(masks), stream_key(root_key, "eval", epoch),
        None if shared is None else jnp.asarray(shared)))
    input_dim = int(np.prod(images.shape[1:]))
    res = lifecycle.test_metrics(sums, n)
    res["bits_per_dim"] = losses.bits_per_dim(res["loss"], input_dim)
    return res


def _test_nll_record(trainer: Trainer, params, rest, images, root_key, *, nll_samples: int,
                     epoch: int, chunk: int) -> dict[str, Any]:
    """The NLL keys of a test record (on the first `nll_limit` test examples)."""
    cfg = trainer.cfg
    sub = images[: cfg.nll_limit] if cfg.nll_limit else images
    nll, stderr = test_nll_stats(trainer, params, rest, sub, root_key, k=nll_samples, epoch=epoch,
                                 chunk=chunk)
    return {"nll": nll, "nll_stderr": stderr, "nll_samples": int(nll_samples), "nll_examples": int(sub.shape[0]),
            "nll_bits_per_dim": losses.bits_per_dim(nll, int(np.prod(sub.shape[1:])))}


def test_nll(trainer: Trainer, params, rest, images, root_key, *, k: int, epoch: int = 0,
             chunk: int = NLL_CHUNK, batch: int = 100) -> float:
    """Mean over test examples of -log p(x) with k importance samples (`test_nll_stats`)."""
    return test_nll_stats(trainer, params, rest, images, root_key, k=k, epoch=epoch, chunk=chunk,
                          batch=batch)[0]


def nll_prior(model) -> dict:
    """`prior_params` for the NLL: the VampPrior's components are encoded once per batch of test
    examples, not once per chunk of samples."""
    if model.spec.prior == "vampprior":
        means, logvars = model.prior_components()
        return {"log_prior": lambda z: losses.log_mixture(z, means, logvars)}
    return prior_params(model)


def test_nll_stats(trainer: Trainer, params, rest, images, root_key, *, k: int, epoch: int = 0,
                   chunk: int = NLL_CHUNK, batch: int = 100) -> tuple[float, float]:
    """Mean over test examples of -log p(x), estimated with k importance samples (Burda et al.;
    `losses.importance_sampled_nll` is the per-example estimator).

    Per batch of `batch` test examples: one encoder pass, eps (k, batch, K) drawn at once, and
    the decoder run on (chunk * batch, K) blocks combined with a running log-sum-exp (`chunk`
    samples at a time: ~3,200 rows keep each block's logits in cache, where XLA:CPU fuses the
    decoder matmuls with the per-pixel likelihood). Returns (mean, standard error of the mean
    over the test examples).
    """
    images = np.asarray(images)
    xs, masks = lifecycle.pad_batches(images, batch)
    cfg = trainer.cfg
    d = trainer.latent_dim
    key = stream_key(root_key, "nll", epoch)

    def build():
        def one_batch(params, rest, x, bkey):
            model = trainer.model_from(params, rest, train=False)
            mean, logvar = model.encode(x)  # once per batch, not per chunk
            if cfg.logvar_clamp is not None:
                logvar = jnp.clip(logvar, -cfg.logvar_clamp, cfg.logvar_clamp)
            eps = jax.random.normal(bkey, (k, x.shape[0], d), mean.dtype)
            return losses.importance_sampled_nll(x, mean, logvar, eps, model.decode_logits,
                                                 cfg.likelihood, chunk=chunk,
                                                 **likelihood_params(model), **nll_prior(model))
        return one_batch

    one_batch = trainer._compiled(f"test_nll/{k}/{chunk}/{batch}", build)
    per_example = []
    for i in range(xs.shape[0]):
        nll = np.asarray(one_batch(params, rest, jnp.asarray(xs[i]), jax.random.fold_in(key, i)))
        per_example.append(nll[masks[i] > 0])
    return lifecycle.mean_and_stderr(np.concatenate(per_example))


# --------------------------------------------------------------------------------------------
# Data


def load_datasets(cfg: TrainConfig, *, train: bool = True):
    """(train, test) datasets of a resolved config (dynamic binarization evaluates on grey
    values; the training batches are binarized inside the step). train=False: (None, test)."""
    kw = runinfo.data_kwargs(cfg)
    train = data_lib.load_dataset(cfg.dataset, "train", limit=cfg.limit_train, **kw) if train else None
    test = data_lib.load_dataset(cfg.dataset, "test", limit=cfg.limit_test, **kw)
    return train, test


def check_data(cfg: TrainConfig, spec, *datasets) -> None:
    """Shape, dtype, NaN and value-range checks of the datasets (`vaecommon.validate`)."""
    c, h, w = spec.input_shape
    for ds in datasets:
        # NHWC here; torchvae checks NCHW
        check_training_images(np.asarray(ds.images), likelihood=cfg.likelihood, expected=(h, w, c),
                              layout="NHWC", where=f"{ds.info.path} ({ds.info.split})",
                              preset=spec.name)


# --------------------------------------------------------------------------------------------
# Members (a plain run is one member; a sweep stacks N along a leading axis)


def data_parallel(num_devices: int | None, batch_size: int, members: int):
    """A 1-D data-parallel mesh over the first `num_devices` devices, or None for one device.

    Raises:
      ValueError: more devices than this host has, a batch that does not split evenly, or a sweep
        (its members share one device).
    """
    available = jax.devices()
    if multiprocess.count() > 1:  # the mesh spans every process's devices
        if num_devices not in (None, 1, len(available)) or batch_size % len(available) or members > 1:
            raise ValueError(f"{multiprocess.count()} processes: the mesh spans all "
                             f"{len(available)} devices (--devices {num_devices} does not), the "
                             f"batch ({batch_size}) must split evenly over them, and a sweep runs "
                             "in one process")
        return jax.sharding.Mesh(np.array(available), ("data",))
    if (num_devices or 1) == 1:
        return None
    if num_devices > len(available) or batch_size % num_devices or members > 1:
        raise ValueError(f"--devices {num_devices}: this host has {len(available)} "
                         f"{available[0].platform} device(s); the batch ({batch_size}) must split "
                         "evenly over them, and a sweep runs on one device")
    return jax.sharding.Mesh(np.array(available[:num_devices]), ("data",))


def _stack(trees: list) -> Any:
    return trees[0] if len(trees) == 1 else jax.tree.map(lambda *xs: jnp.stack(xs), *trees)


def _member(tree: Any, i: int, n: int) -> Any:
    return tree if n == 1 else jax.tree.map(lambda x: x[i], tree)


def _all_finite(tree) -> jax.Array:
    return jnp.all(jnp.stack([jnp.all(jnp.isfinite(x)) for x in jax.tree.leaves(tree)
                              if jnp.issubdtype(x.dtype, jnp.inexact)]))


def _epoch_program(trainer: Trainer, images, n: int, bar: lifecycle.Progress,
                   progress: bool = False) -> Callable:
    """The epoch of all members: (state, idx, keys, hyper, shared noise or None) -> (state,
    terms, all parameters finite), in one compiled program. `progress`: the program calls back
    even without a bar (multi-process: every process compiles the same program, process 0 alone
    shows the bar)."""
    callback = bar.step if bar.bar is not None else (lambda *_: None) if progress else None

    def one(state, idx, key, hyper, shared, start_step=None):
        state, terms = trainer.train_epoch(state, images, idx, key, hyper, progress=callback,
                                           shared=shared, start_step=start_step)
        out = state, terms, _all_finite(state.params)
        if trainer.mesh is not None:  # replicated: every process reads them whole
            out = jax.lax.with_sharding_constraint(out, NamedSharding(trainer.mesh, P()))
        return out

    if n > 1:
        members = jax.vmap(one, in_axes=(0, 0, 0, 0, 0, None))

        def one(state, idx, key, hyper, shared):
            # the members train in lockstep: member 0's step, unbatched, is every member's
            return members(state, idx, key, hyper, shared, state.step[0])
    return xla_options.jit(one, donate_argnums=(0,))


def _save_checkpoint(manager, state, *, epoch: int, root_key, cfg: TrainConfig) -> None:
    manager.save(state, epoch=epoch, root_key=root_key, config=dataclasses.asdict(cfg))


# --------------------------------------------------------------------------------------------
# train_and_evaluate


def train_and_evaluate(cfg: TrainConfig, workdir: str | Path, *, resume: bool = True,
                       sweep: dict[str, list] | None = None, num_devices: int | None = 1,
                       progress: bool = True, on_epoch: Callable | None = None,
                       input: str = "auto", workers: int | None = None) -> dict[str, Any]:
    """Train `cfg` into the run folder `workdir`; resume from its latest checkpoint if present.

    `sweep` ({"seed": [0, 1], "beta": [1.0, 4.0]}) trains one member per zipped value in one
    vmapped program, each into `workdir/member_<i>`. `resume=False` moves an existing run aside
    (`lifecycle.set_aside`) and starts over. `on_epoch(epoch, state)` runs after each epoch.

    Returns the final test metrics ("train": last epoch's train metrics; "members" for a sweep;
    "interrupted": the signal number when a signal stopped the run).

    `input`: "resident" (the training set on the device), "stream" (batches decoded by `workers`
    Grain processes and prefetched, `jaxvae.stream_data`) or "auto" (streams an image folder or
    array_record folder above `stream_data.STREAM_ABOVE_BYTES` as float32). Same batches, same
    order, same numbers.
    """
    cfgs, swept = lifecycle.member_configs(cfg, sweep, framework=FRAMEWORK)
    base, n = cfgs[0], len(cfgs)
    folders = lifecycle.member_folders(workdir, n)
    for f, c in zip(folders, cfgs):
        lifecycle.check_owner(f, c, FRAMEWORK)
    # --- streamed input (jaxvae.stream_data): the training split is read batch by batch ----
    stream_source = stream_data.choose_input(base, input, members=n,
                                             processes=multiprocess.count())  # None: resident
    train_ds, test_ds = load_datasets(base) if stream_source is None else load_datasets(base, train=False)
    spec = get_spec(base.model, **base.model_overrides)
    if stream_source is not None:  # checked on its first examples; shape-only from here on
        train_ds = stream_data.shape_only(stream_source)
    # --- end streamed input ------------------------------------------------------------------
    check_data(base, spec, stream_data.sample(stream_source) if stream_source else train_ds, test_ds)
    val_ds = None
    if base.validation:
        train_ds, val_ds = hold_out(train_ds, base.validation)
    if base.eval_binarization == "static":  # the VampPrior protocol: evaluated on fixed bits
        val_ds = val_ds and binarized_view(val_ds, AS_ARRAY)
        test_ds = binarized_view(test_ds, AS_ARRAY)
    mesh = data_parallel(num_devices, base.batch_size, n)
    trainer = Trainer.create(base, train_ds.images.shape[0], mesh=mesh, sweep_keys=swept)
    roots = [jax.random.key(c.seed) for c in cfgs]
    # multi-process (`jaxvae.multiprocess`): process 0 alone owns and writes the run folder; all
    # processes train, checkpoint (Orbax, collectively) and evaluate (each on its own device)
    multi, lead = multiprocess.count() > 1, multiprocess.is_lead()
    rep = partial(multiprocess.replicate, mesh=mesh) if multi else (lambda t: t)
    loc = multiprocess.local_copy if multi else (lambda t: t)
    with contextlib.ExitStack() as stack:
        folders, failed = lifecycle.open_run(stack, workdir, folders, resume=resume, lead=lead,
                                             package=PACKAGE)
        if multiprocess.any_process(failed is not None):  # every process stops, not only 0
            raise failed or lifecycle.RunOwnershipError(
                f"process 0 could not start the run in {workdir}: its error line says why")
        managers = [ckpt_lib.CheckpointManager(f.checkpoints, keep=c.keep_checkpoints)
                    for f, c in zip(folders, cfgs)]
        bests = [ckpt_lib.CheckpointManager(f.checkpoints / "best", keep=1) if val_ds else None
                 for f in folders]  # the best-validation state
        states = [rep(trainer.init_state(r, c.seed)) for r, c in zip(roots, cfgs)]
        start_epoch = 0
        if any(m.latest_step() is not None for m in managers):
            restored = [m.restore_latest_intact(s) for m, s in zip(managers, states)]
            lifecycle.warn_skipped([line for *_, skipped in restored for line in skipped])
            epochs = {int(meta["epoch"]) for _, meta, _ in restored}
            if len(epochs) != 1:
                raise ValueError(f"the members in {workdir} were checkpointed at different epochs {epochs}")
            for f, c, (_, meta, _) in zip(folders, cfgs, restored):
                check_resumable(meta.get("config"), c, str(f.checkpoints))
            states = [s for s, _, _ in restored]
            start_epoch = epochs.pop()
            for f, s in zip(folders, states) if lead else ():
                f.truncate_metrics(int(s.step))
            if lead:
                print(f"[{PACKAGE}] resumed {workdir} at epoch {start_epoch} (step "
                      f"{int(states[0].step)})", flush=True)
        else:
            for f in folders if lead else ():
                f.metrics_path.unlink(missing_ok=True)  # records without a checkpoint: a killed start
        multiprocess.sync("jaxvae: records truncated")  # all read the same records from here on
        devices = [str(d) for d in jax.devices()][: (mesh.size if mesh is not None else 1)]
        stoppers = [lifecycle.EarlyStopping.from_records(lifecycle.records(f), c.early_stopping,
                                                         c.kl_warmup_epochs) for f, c in zip(folders, cfgs)]
        # a rerun of a finished (or early-stopped) run rewrites nothing
        finished = start_epoch >= base.epochs or (val_ds is not None and all(s.stopped for s in stoppers))
        boards = [stack.enter_context(contextlib.closing(Board(f.root, purge_step=step + 1,
                                                               enabled=lead and not finished)))
                  for f, step in zip(folders, [int(s.step) for s in states])]
        for f, c in zip(folders, cfgs) if lead and not finished else ():
            f.write_config(lifecycle.run_record(c, spec, train_ds, test_ds, framework=FRAMEWORK,
                                                devices=devices, versions=lifecycle.versions(*VERSIONS),
                                                sweep=sweep))

        state = _stack(states)
        hyper = {"lr": jnp.asarray([c.lr for c in cfgs], jnp.float32)}
        hyper.update({k: jnp.asarray([c.objective_params[k] for c in cfgs], jnp.float32) for k in swept})
        hyper = jax.tree.map(lambda v: v[0], hyper) if n == 1 else hyper
        keys = _stack(roots)
        hyper, keys = rep(hyper), rep(keys)
        # multi-process: no resident copy on the devices; each process sends its rows of each
        # epoch's batches (`multiprocess.global_batches`); streamed: the loader feeds them
        images = None if multi or stream_source is not None else jnp.asarray(train_ds.images)
        if mesh is not None and not multi:
            images = jax.device_put(images, NamedSharding(mesh, P()))
            state = jax.device_put(state, NamedSharding(mesh, P()))
        bar = stack.enter_context(contextlib.closing(lifecycle.Progress(
            progress and lead, total=trainer.steps_per_epoch * base.epochs,
            initial=int(states[0].step))))
        epoch_fn = _epoch_program(trainer, images, n, bar, progress=progress and multi)
        streamed = None if stream_source is None else stack.enter_context(contextlib.closing(
            stream_data.StreamedEpochs(
                trainer, stream_source, epochs=base.epochs, workers=workers,
                sharding=NamedSharding(mesh, P()) if mesh is not None else None,
                progress=bar.step if bar.bar is not None else None, all_finite=_all_finite)))
        trains: list[dict] = [lifecycle.last_record(f, "train") for f in folders]
        tests: list[dict] = [lifecycle.last_record(f, "test") for f in folders]
        t_start, timings = time.time(), lifecycle.Timings()
        interrupt = stack.enter_context(lifecycle.Interrupt(PACKAGE))
        pending: list[tuple | None] = [None] * n  # (best state, epoch) not yet on disk
        stop = False  # a signal on any process: all stop after the same epoch

        def flush_best(i: int, c: TrainConfig) -> None:
            if pending[i] is not None:
                best_state, best_epoch = pending[i]
                _save_checkpoint(bests[i], best_state, epoch=best_epoch, root_key=roots[i], cfg=c)
                pending[i] = None

        for epoch in range(start_epoch, base.epochs if not finished else start_epoch):
            t0 = time.time()
            idx = _stack([jnp.asarray(epoch_batches(c.seed, epoch, train_ds.images.shape[0],
                                                    c.batch_size)) for c in cfgs])
            if multi:  # this process's rows of every global batch, in the global order
                idx = multiprocess.global_batches(mesh, train_ds.images, np.asarray(idx))
            shared = None if base.noise != "shared" else rep(_stack(
                [trainer.shared_noise(c.seed, epoch, train_ds.images.shape[1:]) for c in cfgs]))
            if streamed is not None:  # streamed input: the same epoch body over loaded chunks
                with timings("train"):
                    state, terms, finite = streamed.run_epoch(state, epoch, keys, hyper, shared,
                                                              timings)
                    terms, finite = jax.device_get((terms, finite))
                timings.seconds["train"] -= streamed.compile_seconds
                t0 += streamed.compile_seconds
            else:
                if epoch == start_epoch:  # compile ahead of time, so the time is its own
                    with timings("compile"):
                        epoch_fn = epoch_fn.lower(state, idx, keys, hyper, shared).compile()
                    t0 = time.time()
                with timings("train"):
                    state, terms, finite = epoch_fn(state, idx, keys, hyper, shared)
                    terms, finite = jax.device_get((terms, finite))
            seconds = time.time() - t0
            final = epoch + 1 == base.epochs
            records = []
            for i, (f, c) in enumerate(zip(folders, cfgs)):  # every member is checked before any write
                recs, trains[i] = lifecycle.epoch_records(
                    _member(terms, i, n), step=int(_member(state.step, i, n)), epoch=epoch,
                    batch_size=c.batch_size, seconds=seconds,
                    last_checkpoint=lifecycle.newest_checkpoint([managers[i]]),
                    every=c.batch_log_every)
                lifecycle.check_finite(bool(np.all(finite)), "parameters", epoch, trains[i]["step"],
                                       lifecycle.newest_checkpoint(managers))
                records.append(recs)
            for i, (f, c) in enumerate(zip(folders, cfgs)):
                s_i = _member(state, i, n)
                stopped_before = stoppers[i].stopped
                if val_ds is not None and not stopped_before:
                    record = {"type": "validation", "epoch": epoch + 1, "step": trains[i]["step"],
                              **evaluate(trainer, loc(s_i.params), loc(s_i.rest), val_ds.images, roots[i], seed=c.seed,
                                         epoch=epoch + 1, timings=timings)}
                    lifecycle.check_finite(not record.get("nonfinite"), "validation metrics", epoch,
                                           trains[i]["step"], lifecycle.newest_checkpoint(managers))
                    records[i].append(record)
                    if stoppers[i].update(epoch + 1, record["loss"]):
                        # kept on the device and written with the next regular checkpoint: on a GPU
                        # one Orbax save costs more than an epoch, and validation improves often.
                        # A resume truncates the records to that checkpoint, so the best on disk
                        # always matches the records' best.
                        pending[i] = (jax.tree.map(jnp.copy, s_i) if n == 1 else s_i, epoch + 1)
                if lifecycle.due(c.eval_every, epoch, final) and not (final and val_ds is not None):
                    lifecycle.announce_nll(bar, c.final_nll_samples if final else c.nll_samples,
                                           len(test_ds.images), c.nll_limit, final)
                    tests[i] = {"type": "test", "epoch": epoch + 1, "step": trains[i]["step"],
                                **evaluate(trainer, loc(s_i.params), loc(s_i.rest), test_ds.images, roots[i], seed=c.seed,
                                           nll_samples=c.final_nll_samples if final else c.nll_samples,
                                           epoch=epoch + 1, timings=timings)}
                    lifecycle.check_finite(not tests[i].get("nonfinite"), "test metrics", epoch,
                                           trains[i]["step"], lifecycle.newest_checkpoint(managers))
                    records[i].append(tests[i])
                if lead:
                    f.append_metrics(records[i])
                    boards[i].records(records[i])
                stop = (multiprocess.max_process(interrupt.signum or 0) > 0 if multi
                        else interrupt.requested)
                if (lifecycle.due(c.checkpoint_every, epoch, final) or stop
                        or stoppers[i].stopped != stopped_before):
                    with timings("checkpoints"):
                        flush_best(i, c)
                        _save_checkpoint(managers[i], s_i, epoch=epoch + 1, root_key=roots[i], cfg=c)
                if lead and lifecycle.due(c.figures_every, epoch, final) and not (final and val_ds is not None):
                    with timings("figures"):
                        figures_lib.write_run_figures(f, trainer, loc(s_i), test_ds, roots[i], cfg=c,
                                                      board=boards[i], step=trains[i]["step"])
            bar.epoch_done(epoch + 1, trains, tests)
            if on_epoch is not None:
                on_epoch(epoch + 1, state)
            if stop:
                bar.note(f"[{PACKAGE}] stopped after epoch {epoch + 1}; resume with the same command")
                break
            if val_ds is not None and all(s.stopped for s in stoppers):
                bar.note(f"[{PACKAGE}] early stop after epoch {epoch + 1}: the validation -ELBO "
                         f"last improved at epoch {max(s.best_epoch for s in stoppers)}")
                break
        stop = stop or (interrupt.requested and not multi)
        if val_ds is not None and not stop:  # the final test is the best state's
            for i, (f, c) in enumerate(zip(folders, cfgs)):
                trained = stoppers[i].epochs_trained(trains[i])
                if tests[i].get("best_epoch") and tests[i].get("epochs_trained") == trained:
                    continue  # done before a kill (a run extended by --epochs is tested again)
                with timings("checkpoints"):
                    flush_best(i, c)
                best, meta, _ = bests[i].restore_latest_intact(rep(trainer.init_state(roots[i])))
                best = loc(best)
                lifecycle.announce_nll(bar, c.final_nll_samples, len(test_ds.images), c.nll_limit, True)
                tests[i] = {"type": "test", "epoch": int(meta["epoch"]), "step": int(best.step),
                            "best_epoch": int(meta["epoch"]), "epochs_trained": trained,
                            **evaluate(trainer, best.params, best.rest, test_ds.images, roots[i], seed=c.seed,
                                       nll_samples=c.final_nll_samples, epoch=int(meta["epoch"]),
                                       timings=timings)}
                if lead:
                    f.append_metrics([tests[i]])
                    boards[i].records([tests[i]])
                    with timings("figures"):
                        figures_lib.write_run_figures(f, trainer, best, test_ds, roots[i], cfg=c,
                                                      board=boards[i], step=tests[i]["step"])
        wall = time.time() - t_start
        if not stop and lead:
            for i, (f, c) in enumerate(zip(folders, cfgs)):
                lifecycle.finish(f, c, spec, train_ds.info, trains[i], tests[i], wall,
                                 trained=not finished, framework=FRAMEWORK,
                                 versions=lifecycle.versions(*VERSIONS), seconds=timings.seconds,
                                 figures=lambda f=f, c=c, i=i: figures_lib.write_run_figures(
                                     f, trainer, loc(_member(state, i, n)), test_ds, roots[i], cfg=c))
            if n > 1 and not finished:
                lifecycle.write_sweep_summary(workdir, cfgs, folders, sweep, wall, framework=FRAMEWORK)
    signum = (multiprocess.max_process(interrupt.signum or 0) or None) if multi and stop else interrupt.signum
    return lifecycle.result(trains, tests, wall, signum, timings.seconds)
