"""The one JAX training loop: whole epochs compiled with `jax.lax.scan`, data resident on device.

Twin: `torchvae/train.py` (same `TrainConfig`, metric keys, run-folder layout and batch order).

Design (see README, "Training engine"):
- `apply_update(state, x, eps, hyper)` is the one pure update: forward, objective, gradient,
  optimizer. The scanned epoch and the tests call the same function.
- The model lives as a pure pytree (`nnx.split` into graphdef / params / rest) around `jax.jit`
  and `jax.lax.scan`, so nothing is traced twice and no Python graph traversal runs per step.
- Randomness is derived, never hidden: every stream (data order, eps, dynamic binarization,
  evaluation) is `fold_in(fold_in(root_key, STREAM), counter)` of the root key from `seed`,
  so a resumed run draws exactly what an uninterrupted run would.
- The last partial batch of each epoch is dropped; the permutation changes every epoch, so
  every example is used, and every reported training average is an average over the examples
  of equal-sized batches (mean of batch means == per-example mean).
- Evaluation pads the test set to whole batches and masks the padding, so every test example
  counts exactly once.
"""

from __future__ import annotations

import dataclasses
import math
import signal
import sys
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

from jaxvae import checkpoint as ckpt_lib
from jaxvae import data as data_lib
from jaxvae import losses
from jaxvae import models
from vaecommon import runs
from vaecommon.config import TrainConfig, check_resumable, resolve
from vaecommon.presets import get_spec
from vaecommon.schedule import epoch_batches, lr_factor, steps_per_epoch
from vaecommon.validate import check_training_images

__all__ = [
    "TrainState", "Trainer", "make_optimizer", "learning_rate_factor", "train_and_evaluate",
    "evaluate", "STREAMS", "NonFiniteLossError",
]

# Independent random streams, derived from the root key by fold_in (never by consuming a key).
STREAMS = {"init": 0, "perm": 1, "eps": 2, "binarize": 3, "eval": 4, "nll": 5, "figures": 6}

# Up to this many bytes of an epoch's reparameterization noise are drawn before its scan.
_PREDRAW_BYTES = 256 * 2**20


class NonFiniteLossError(FloatingPointError):
    """Training produced a NaN/inf loss; the message names the epoch and step."""


class TrainState(NamedTuple):
    """Everything a training step reads and writes (a pytree)."""

    params: Any  # nnx.State of nnx.Param
    rest: Any  # nnx.State of everything else (BatchNorm running stats)
    opt_state: Any
    step: jax.Array  # int32 scalar: optimizer steps taken


def stream_key(root: jax.Array, stream: str, counter) -> jax.Array:
    """The key of `stream` at `counter` (a step or an epoch)."""
    return jax.random.fold_in(jax.random.fold_in(root, STREAMS[stream]), counter)


# --------------------------------------------------------------------------------------------
# Optimizer


def learning_rate_factor(cfg: TrainConfig, total_steps: int) -> Callable[[jax.Array], jax.Array]:
    """Schedule shape in [0, 1] (`vaecommon.schedule.lr_factor` in jax.numpy).

    The peak learning rate is applied separately (`hyper["lr"]`) so that a sweep can vmap over it.
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
    if cfg.optimizer in ("adam", "adamw"):
        parts.append(optax.scale_by_adam(b1=0.9, b2=0.999, eps=1e-8))
        if cfg.optimizer == "adamw" and wd:
            parts.append(optax.add_decayed_weights(wd))
    elif cfg.optimizer == "sgd":
        if cfg.momentum:
            parts.append(optax.trace(decay=cfg.momentum, nesterov=False))
    else:  # resolve() validated the name; keep the error for direct callers
        raise ValueError(f"unknown optimizer {cfg.optimizer!r}; valid: adam, adamw, sgd")
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

    @classmethod
    def create(cls, cfg: TrainConfig, n_train: int, *, mesh=None, sweep_keys=()) -> "Trainer":
        cfg = resolve(cfg)
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
        return cls(cfg, graphdef, tx, spe, model.spec.latent_dim, hyper, mesh)

    # ---- state ---------------------------------------------------------------------------

    def init_state(self, root_key: jax.Array) -> TrainState:
        model = models.build_model(
            self.cfg.model, key=stream_key(root_key, "init", 0), init=self.cfg.init,
            **self.cfg.model_overrides,
        )
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

    def loss_fn(self, params, rest, x, eps, extra, step, hyper):
        """Scalar loss, (terms, updated rest) for one batch."""
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
        params_obj = dict(cfg.objective_params)
        params_obj.update({k: v for k, v in hyper.items() if k != "lr"})
        params_obj.update(likelihood_params(model))
        loss, terms = losses.OBJECTIVES[cfg.objective](
            x, out, likelihood=cfg.likelihood, step=step, reduction=cfg.reduction,
            decode=lambda z: model.decode_logits(z.astype(x_in.dtype)).astype(jnp.float32),
            eps=extra, **params_obj,
        )
        new_rest = nnx.state(model, nnx.Not(nnx.Param))
        return loss.astype(jnp.float32), (terms, new_rest)

    def apply_update(self, state: TrainState, x, eps, extra=None, hyper=None
                     ) -> tuple[TrainState, dict]:
        """One optimizer step on batch `x` with noise `eps`. Pure; jit/scan/vmap friendly.

        Args:
          state: TrainState.
          x: (B, H, W, C) float32 batch.
          eps: (B, D) standard normal noise for z = mean + exp(logvar/2) * eps.
          extra: the objective's extra noise (see `draw_noise`), or None.
          hyper: dict of traced hyperparameters ({"lr": ..., swept objective params}).
        Returns:
          (new state, terms): terms are the objective's scalar terms plus "grad_norm".
        """
        hyper = self.hyper if hyper is None else hyper
        (loss, (terms, new_rest)), grads = jax.value_and_grad(self.loss_fn, has_aux=True)(
            state.params, state.rest, x, eps, extra, state.step, hyper
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

    def train_epoch(self, state: TrainState, images: jax.Array, idx: jax.Array, root_key: jax.Array,
                    hyper=None, progress: Callable | None = None):
        """Scan `apply_update` over one epoch.

        Args:
          state: TrainState.
          images: (N, H, W, C) the device-resident training set.
          idx: (steps, B) int32 example indices (`batch_indices`).
          root_key: the run's root key (eps and binarization keys are folded from the step).
        Returns:
          (state, terms): terms stacked per step, each (steps,).
        """
        dynamic = self.cfg.binarization == "dynamic"
        steps, batch = idx.shape
        # The epoch's noise is drawn before the scan, one vectorized RNG call instead of one small
        # one per step (on CPU, a per-step threefry loop over 128 x 20 values cost ~6% of an
        # MLP epoch). vmap over the step keys gives the same values as drawing inside each step.
        one_step = jax.eval_shape(lambda: self.step_noise(root_key, state.step, batch))
        predraw = steps * sum(a.size * a.dtype.itemsize for a in jax.tree.leaves(one_step)) \
            <= _PREDRAW_BYTES

        def body(state, xs):
            ids, noise = xs
            x = images[ids]  # (B, H, W, C), gathered on device
            if self.mesh is not None:
                x = jax.lax.with_sharding_constraint(x, NamedSharding(self.mesh, P("data")))
            if dynamic:
                x = data_lib.binarize(x, stream_key(root_key, "binarize", state.step))
            eps, extra = noise if predraw else self.step_noise(root_key, state.step, batch)
            if self.mesh is not None:
                eps = jax.lax.with_sharding_constraint(eps, NamedSharding(self.mesh, P("data")))
            state, terms = self.apply_update(state, x, eps, extra, hyper)
            if progress is not None:
                every = max(1, self.steps_per_epoch // 20)
                jax.lax.cond(
                    (state.step % every == 0),
                    lambda: jax.debug.callback(progress, state.step, terms["loss"]),
                    lambda: None,
                )
            return state, terms

        noise = None
        if predraw:
            step_ids = state.step + jnp.arange(steps, dtype=jnp.asarray(state.step).dtype)
            noise = jax.vmap(lambda s: self.step_noise(root_key, s, batch))(step_ids)
        return jax.lax.scan(body, state, (idx, noise))

    def step_noise(self, root_key: jax.Array, step, batch: int) -> tuple[jax.Array, jax.Array | None]:
        """The (eps, extra) noise of optimizer step `step` (see `draw_noise`)."""
        return self.draw_noise(stream_key(root_key, "eps", step), batch)

    # ---- evaluation ------------------------------------------------------------------------

    def eval_batch(self, params, rest, x, eps):
        """Per-example {"loss","recon","kl"} (B,) and the posterior mean (B, D)."""
        model = self.model_from(params, rest, train=False)
        out = forward(model, x, eps, self.cfg.logvar_clamp)
        terms = losses.elbo_terms(x, out, self.cfg.likelihood, **likelihood_params(model))
        if out.logvar is not None:
            kl_dim = losses.kl_normal_per_dim(out.mean, out.logvar)
        else:
            kl_dim = jnp.zeros_like(out.mean)
        return terms, out.mean, kl_dim


def _pad_to(x: np.ndarray, multiple: int) -> tuple[np.ndarray, np.ndarray]:
    n = x.shape[0]
    m = -(-n // multiple) * multiple
    mask = np.zeros((m,), np.float32)
    mask[:n] = 1.0
    if m == n:
        return x, mask
    pad = np.zeros((m - n,) + x.shape[1:], x.dtype)
    return np.concatenate([x, pad]), mask


def evaluate(trainer: Trainer, params, rest, images, root_key, *, nll_samples: int = 0,
             epoch: int = 0, nll_chunk: int = 256) -> dict[str, Any]:
    """Test-set metrics, every example counted exactly once (padding masked).

    Returns a dict: loss (-ELBO, nats/example), recon, kl, bits_per_dim, kl_per_dim (list),
    active_units (Burda et al.: Var_x E_q[z_d] > 0.01), and nll/nll_samples when requested.
    """
    cfg = trainer.cfg
    images = np.asarray(images)
    n = images.shape[0]
    bs = min(cfg.eval_batch_size, n)
    xs, mask = _pad_to(images, bs)
    xs = xs.reshape((-1, bs) + images.shape[1:])
    masks = mask.reshape(-1, bs)
    d = trainer.latent_dim

    @jax.jit
    def run(params, rest, xs, masks, key):
        def body(carry, inp):
            i, x, m = inp
            eps = jax.random.normal(jax.random.fold_in(key, i), (x.shape[0], d))
            terms, mean, kl_dim = trainer.eval_batch(params, rest, x, eps)
            sums = {k: jnp.sum(v * m) for k, v in terms.items()}
            sums["kl_per_dim"] = jnp.sum(kl_dim * m[:, None], axis=0)
            sums["mean_sum"] = jnp.sum(mean * m[:, None], axis=0)
            sums["mean_sq"] = jnp.sum(mean**2 * m[:, None], axis=0)
            carry = jax.tree.map(jnp.add, carry, sums)
            return carry, None

        zero = {k: jnp.float32(0) for k in ("loss", "recon", "kl")}
        zero.update({k: jnp.zeros((d,), jnp.float32) for k in ("kl_per_dim", "mean_sum", "mean_sq")})
        out, _ = jax.lax.scan(body, zero, (jnp.arange(xs.shape[0]), xs, masks))
        return out

    s = jax.device_get(run(params, rest, jnp.asarray(xs), jnp.asarray(masks),
                           stream_key(root_key, "eval", epoch)))
    input_dim = int(np.prod(images.shape[1:]))
    res: dict[str, Any] = {k: float(s[k] / n) for k in ("loss", "recon", "kl")}
    res["bits_per_dim"] = res["loss"] / (input_dim * math.log(2.0))
    kl_dim = s["kl_per_dim"] / n
    res["kl_per_dim"] = [float(v) for v in kl_dim]
    var = s["mean_sq"] / n - (s["mean_sum"] / n) ** 2
    res["active_units"] = int(np.sum(var > 0.01))
    if nll_samples and get_spec(cfg.model, **cfg.model_overrides).is_vae:
        sub = images[: cfg.nll_limit] if cfg.nll_limit else images
        res["nll"] = importance_sampled_nll(trainer, params, rest, sub, root_key,
                                            k=nll_samples, epoch=epoch, chunk=nll_chunk)
        res["nll_samples"] = int(nll_samples)
        res["nll_examples"] = int(sub.shape[0])
        res["nll_bits_per_dim"] = res["nll"] / (input_dim * math.log(2.0))
    return res


def importance_sampled_nll(trainer: Trainer, params, rest, images, root_key, *, k: int,
                           epoch: int = 0, chunk: int = 256, batch: int = 100) -> float:
    """Mean over examples of -log p(x) estimated with k importance samples (Burda et al.).

    The k samples are processed in chunks of `chunk` and combined with a running log-sum-exp,
    and the test set in batches of `batch`, so memory stays bounded for k = 5000.
    """
    images = np.asarray(images)
    n = images.shape[0]
    xs, mask = _pad_to(images, batch)
    xs = xs.reshape((-1, batch) + images.shape[1:])
    chunk = min(chunk, k)
    n_chunks = -(-k // chunk)
    d = trainer.latent_dim
    key = stream_key(root_key, "nll", epoch)

    @jax.jit
    def one_batch(params, rest, x, bkey):
        def body(acc, c):
            eps = jax.random.normal(jax.random.fold_in(bkey, c), (chunk, x.shape[0], d))
            valid = (c * chunk + jnp.arange(chunk)) < k  # the last chunk may overrun k
            model = trainer.model_from(params, rest, train=False)
            mean, logvar = model.encode(x)
            if trainer.cfg.logvar_clamp is not None:
                cl = float(trainer.cfg.logvar_clamp)
                logvar = jnp.clip(logvar, -cl, cl)
            lw = losses.log_importance_weights(x, mean, logvar, eps, model.decode_logits,
                                               trainer.cfg.likelihood,
                                               **likelihood_params(model))  # (chunk, B)
            lw = jnp.where(valid[:, None], lw, -jnp.inf)
            return jnp.logaddexp(acc, jax.scipy.special.logsumexp(lw, axis=0)), None

        acc0 = jnp.full((x.shape[0],), -jnp.inf, jnp.float32)
        acc, _ = jax.lax.scan(body, acc0, jnp.arange(n_chunks))
        return -(acc - jnp.log(float(k)))

    total = 0.0
    for i in range(xs.shape[0]):
        nll = np.asarray(one_batch(params, rest, jnp.asarray(xs[i]), jax.random.fold_in(key, i)))
        total += float(np.sum(nll * mask[i * batch:(i + 1) * batch]))
    return total / n


# --------------------------------------------------------------------------------------------
# train_and_evaluate


class _Interrupt:
    """SIGINT/SIGTERM: finish the current epoch, checkpoint, exit cleanly (second signal: now)."""

    def __init__(self):
        self.requested = False
        self._old = {}

    def __enter__(self):
        for sig in (signal.SIGINT, signal.SIGTERM):
            try:
                self._old[sig] = signal.signal(sig, self._handle)
            except ValueError:  # not the main thread
                pass
        return self

    def _handle(self, signum, frame):
        if self.requested:
            raise KeyboardInterrupt
        self.requested = True
        print(f"\n[jaxvae] signal {signum}: finishing the epoch, saving a checkpoint, then exiting "
              "(send again to stop at once)", file=sys.stderr)

    def __exit__(self, *exc):
        for sig, old in self._old.items():
            signal.signal(sig, old)


def make_mesh(num_devices: int | None = None):
    """A 1-D data-parallel mesh over the first `num_devices` devices (None: all)."""
    devs = jax.devices()[: num_devices or len(jax.devices())]
    return jax.sharding.Mesh(np.array(devs), ("data",))


def load_data(cfg: TrainConfig):
    """(train, test) datasets for a resolved config."""
    kw = dict(source=cfg.data_source, data_dir=cfg.data_dir, binarization=cfg.binarization
              if cfg.binarization != "dynamic" else "none")
    if cfg.dataset == "image_folder":
        kw["image_size"] = cfg.image_size
    train = data_lib.load_dataset(cfg.dataset, "train", limit=cfg.limit_train, **kw)
    test = data_lib.load_dataset(cfg.dataset, "test", limit=cfg.limit_test, **kw)
    return train, test


def train_and_evaluate(cfg: TrainConfig, workdir: str | Path, *, resume: bool = True,
                       num_devices: int | None = 1, progress: bool = True,
                       on_epoch: Callable | None = None) -> dict[str, Any]:
    """Train `cfg` into the run folder `workdir`; resume from its latest checkpoint if present.

    Returns the final test metrics (and "train": last epoch's train metrics).
    """
    from jaxvae import figures as jfig  # figures need only the model; keep train importable fast

    cfg = resolve(cfg)
    run = runs.RunFolder(workdir).create()
    train_ds, test_ds = load_data(cfg)
    spec = get_spec(cfg.model, **cfg.model_overrides)
    check_data(cfg, spec, train_ds, test_ds)
    mesh = make_mesh(num_devices) if (num_devices or 0) > 1 else None
    if mesh is not None and cfg.batch_size % mesh.size:
        raise ValueError(f"batch_size {cfg.batch_size} must be divisible by the {mesh.size} devices")
    trainer = Trainer.create(cfg, train_ds.images.shape[0], mesh=mesh)
    root = jax.random.key(cfg.seed)
    manager = ckpt_lib.CheckpointManager(run.checkpoints, keep=cfg.keep_checkpoints)

    state = trainer.init_state(root)
    start_epoch = 0
    if resume and manager.latest_step() is not None:
        state, meta = manager.restore(state)
        start_epoch = int(meta["epoch"])
        check_resumable(meta.get("config"), cfg, str(run.checkpoints))
        run.truncate_metrics(int(state.step))
        print(f"[jaxvae] resumed {run.root} at epoch {start_epoch} (step {int(state.step)})",
              file=sys.stderr)
    elif run.metrics_path.exists():
        run.metrics_path.unlink()  # a fresh start must not mix with an old run's records

    run.write_config(_run_record(cfg, spec, train_ds, test_ds, devices=[
        str(d) for d in jax.devices()][: (mesh.size if mesh is not None else 1)]))

    images = jnp.asarray(train_ds.images)
    if mesh is not None:
        images = jax.device_put(images, NamedSharding(mesh, P()))
        state = jax.device_put(state, NamedSharding(mesh, P()))
    bar = _progress_bar(progress, total=trainer.steps_per_epoch * cfg.epochs,
                        initial=int(state.step))

    @partial(jax.jit, donate_argnums=(0,))
    def epoch_fn(state, images, idx):
        return trainer.train_epoch(state, images, idx, root, progress=bar.callback if bar else None)

    t_start = time.time()
    last_train: dict[str, Any] = {}
    test_metrics: dict[str, Any] = {}
    with _Interrupt() as interrupt:
        for epoch in range(start_epoch, cfg.epochs):
            t0 = time.time()
            idx = jnp.asarray(trainer.batch_indices(epoch, images.shape[0]))
            state, terms = epoch_fn(state, images, idx)
            terms = jax.device_get(terms)
            step = int(state.step)
            records, last_train = _epoch_records(terms, step=step, epoch=epoch, batch_size=cfg.batch_size,
                                                seconds=time.time() - t0, checkpoints=run.checkpoints)
            final = epoch + 1 == cfg.epochs
            if (cfg.eval_every and (epoch + 1) % cfg.eval_every == 0) or final:
                k = cfg.final_nll_samples if final else cfg.nll_samples
                test_metrics = {"type": "test", "epoch": epoch + 1, "step": step,
                                **evaluate(trainer, state.params, state.rest, test_ds.images,
                                           root, nll_samples=k, epoch=epoch + 1)}
                records.append(test_metrics)
            run.append_metrics(records)
            if bar:
                bar.epoch_done(epoch + 1, last_train, test_metrics)
            if (cfg.checkpoint_every and (epoch + 1) % cfg.checkpoint_every == 0) or final \
                    or interrupt.requested:
                manager.save(state, epoch=epoch + 1, root_key=root, config=dataclasses.asdict(cfg))
            if (cfg.figures_every and (epoch + 1) % cfg.figures_every == 0) or final:
                jfig.write_run_figures(run, trainer, state, test_ds, root)
            if on_epoch is not None:
                on_epoch(epoch + 1, state)
            if interrupt.requested:
                print(f"[jaxvae] stopped after epoch {epoch + 1}; resume with the same command",
                      file=sys.stderr)
                break
    if bar:
        bar.close()
    wall = time.time() - t_start
    _write_summary(run, cfg, spec, train_ds.info, last_train, test_metrics, wall, "jax")
    return {"train": last_train, **test_metrics, "wall_s": wall}


def check_data(cfg: TrainConfig, spec, *datasets) -> None:
    """Shape, dtype, NaN and value-range checks of the datasets (`vaecommon.validate`)."""
    c, h, w = spec.input_shape
    for ds in datasets:
        # NHWC here; torchvae checks NCHW
        check_training_images(np.asarray(ds.images), likelihood=cfg.likelihood, expected=(h, w, c),
                              layout="NHWC", where=f"{ds.info.path} ({ds.info.split})",
                              preset=spec.name)


def _run_record(cfg: TrainConfig, spec, train_ds, test_ds, **extra: Any) -> dict[str, Any]:
    """The run folder's config.json record of a JAX run (sweep members add their "sweep")."""
    return {"config": dataclasses.asdict(cfg), "spec": dataclasses.asdict(spec), "framework": "jax",
            "data": {"train": train_ds.info._asdict(), "test": test_ds.info._asdict()}, **extra,
            "versions": runs.versions("jax", "jaxlib", "flax", "optax", "orbax-checkpoint", "numpy")}


def _epoch_records(terms: dict[str, np.ndarray], *, step: int, epoch: int, batch_size: int,
                  seconds: float, checkpoints) -> tuple[list[dict[str, Any]], dict[str, Any]]:
    """One finished epoch's metrics records: a "batch" record per step, then the "train" record
    (each term's mean over the epoch's batches, time, examples/s). Returns (records, train record).

    `terms` holds each logged term per step of the epoch (host arrays), `step` the step count at its
    end, `epoch` its 0-based index.

    Raises:
      NonFiniteLossError: naming the first non-finite step and the intact `checkpoints` folder.
    """
    loss = terms["loss"]
    n = len(loss)
    first = step - n + 1
    if not np.all(np.isfinite(loss)):
        bad = int(np.argmax(~np.isfinite(loss)))
        raise NonFiniteLossError(
            f"non-finite loss at epoch {epoch + 1}, step {first + bad}; the last good checkpoint in "
            f"{checkpoints} is intact. Try a lower --lr, --logvar-clamp 10, or --grad-clip 1.0")
    records = [{"type": "batch", "step": first + i, "epoch": epoch + (i + 1) / n,
                **{k: float(v[i]) for k, v in terms.items()}} for i in range(n)]
    train_record = {"type": "train", "epoch": epoch + 1, "step": step,
                    **{k: float(np.mean(v)) for k, v in terms.items()},
                    "time_s": seconds, "examples_per_s": n * batch_size / seconds}
    return records + [train_record], train_record


class _Bar:
    def __init__(self, total, initial):
        from tqdm.auto import tqdm

        self.bar = tqdm(total=total, initial=initial, unit="step", dynamic_ncols=True,
                        mininterval=1.0, desc="train")
        self.last = initial
        self.t = time.time()

    def callback(self, step, loss):
        step = int(np.max(step))  # under a sweep (vmap) all members share the step
        if step > self.last:
            self.bar.update(step - self.last)
            self.last = step
        self.bar.set_postfix(loss=f"{float(np.mean(loss)):.3f}", refresh=False)

    def epoch_done(self, epoch, train, test):
        step = train["step"]
        if step > self.last:
            self.bar.update(step - self.last)
            self.last = step
        post = {"epoch": epoch, "loss": f"{train['loss']:.3f}",
                "ex/s": f"{train['examples_per_s']:.0f}"}
        if test and test.get("epoch") == epoch:
            post["test"] = f"{test['loss']:.3f}"
        self.bar.set_postfix(post)

    def close(self):
        self.bar.close()


def _progress_bar(enabled, *, total, initial):
    return _Bar(total, initial) if enabled else None


def _write_summary(run, cfg, spec, info, train, test, wall, framework) -> None:
    from vaecommon.summary import render_summary

    run.write_summary(render_summary(
        framework=framework, cfg=dataclasses.asdict(cfg), spec=dataclasses.asdict(spec),
        data=info._asdict(), train=train, test=test, wall_s=wall,
        versions=runs.versions("jax", "jaxlib", "flax", "optax", "torch"),
    ))
