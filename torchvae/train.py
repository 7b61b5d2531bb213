"""The one PyTorch training loop: a plain, readable reference, one step at a time.

Twin: `jaxvae/train.py` (same `TrainConfig`, functions in the same order, metric keys, run-folder
layout and batch order). What is not framework-specific (members, ownership, records, cadence,
signals, progress, summaries) is `vaecommon.lifecycle`, shared by both.

The design (one step at a time, batches sliced from one resident tensor, members one after the
other) is in torchvae/README.md.

- Randomness (`torchvae.streams`): init, eps and dynamic binarization each come from their own
  `torch.Generator` seeded from (seed, stream); no global RNG is touched. A resumed run draws
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
import math
import time
from pathlib import Path
from typing import Any, Callable

import numpy as np
import torch

from . import checkpoint as ckpt_lib
from . import convert
from . import data as data_lib
from . import figure_data as figures_lib
from . import losses
from . import models
from . import multiprocess
from . import optim
from torchvae.streams import stream_generator
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
]

FRAMEWORK, PACKAGE = "torch", "torchvae"
AS_ARRAY = torch.from_numpy  # the array type of this twin's datasets
VERSIONS = ("torch", "torchvision", "numpy")

# Importance samples per decoder block of the test NLL (x 100 examples = rows per matmul). Eager
# torch makes one pass over the block per elementwise op, so a block small enough to stay in cache
# (800 x 784 floats) halves them: k = 1000 on 100 images took 0.55 s at 8 against 1.02 s at 32
# (pytorch_examples, 2 threads; 4 and 16 were slower than 8; the JAX twin, whose fusions read
# each block once, keeps 32).
NLL_CHUNK = 8


# --------------------------------------------------------------------------------------------
# Optimizer


def learning_rate_factor(cfg: TrainConfig, total_steps: int) -> Callable[[int], float]:
    """Schedule shape in [0, 1] (`vaecommon.schedule.lr_factor`).

    A Python float per step, for `torch.optim.lr_scheduler.LambdaLR`.
    """
    return lambda step: float(lr_factor(step, warmup_steps=int(cfg.warmup_steps),
                                        schedule=cfg.schedule, total_steps=int(total_steps)))


def make_optimizer(cfg: TrainConfig, params, total_steps: int):
    """(optimizer, scheduler): torch.optim with the schedule shape of `learning_rate_factor`."""
    wd = float(cfg.weight_decay or 0.0)
    if cfg.optimizer == "adam":
        opt = torch.optim.Adam(params, lr=cfg.lr, weight_decay=wd)
    elif cfg.optimizer == "adamw":
        opt = torch.optim.AdamW(params, lr=cfg.lr, weight_decay=wd)
    elif cfg.optimizer == "sgd":
        opt = torch.optim.SGD(params, lr=cfg.lr, momentum=cfg.momentum, weight_decay=wd)
    elif cfg.optimizer == "adam_norm_grad":  # the VampPrior code's optimizer (torchvae.optim)
        opt = optim.AdamNormGrad(params, lr=cfg.lr, weight_decay=wd)
    else:  # resolve() validated the name; keep the error for direct callers
        raise ValueError(f"unknown optimizer {cfg.optimizer!r}; valid: adam, adamw, sgd, "
                         "adam_norm_grad")
    return opt, torch.optim.lr_scheduler.LambdaLR(opt, learning_rate_factor(cfg, total_steps))


def forward(model, x, eps, logvar_clamp: float | None = None):
    """model(x, eps=eps), with the encoder's logvar clamped to [-c, c] BEFORE the
    reparameterization when `logvar_clamp` is set (a guard against exp(logvar/2) overflow)."""
    if logvar_clamp is None:
        return model(x, eps=eps)
    mean, logvar = model.encode(x)
    if logvar is None:  # autoencoder
        return models.ModelOutput(model.decode_logits(mean), mean, None, mean)
    logvar = logvar.clamp(-logvar_clamp, logvar_clamp)
    z = model.reparameterize(mean, logvar, eps)
    return models.ModelOutput(model.decode_logits(z), mean, logvar, z)


def attach_likelihood_params(model, cfg: TrainConfig):
    """Add the likelihood's own trainable parameters to the model (in place; returns it).

    `gaussian_learned` gets one global `log_sigma` (an nn.Parameter, initialised to 0: sigma = 1),
    trained with the model by the same optimizer and saved in its state_dict.
    """
    if cfg.likelihood == "gaussian_learned":
        model.log_sigma = torch.nn.Parameter(torch.zeros(()))
    return model


def likelihood_params(model) -> dict:
    """The keyword arguments the reconstruction term needs from the model (see above)."""
    return {"log_sigma": model.log_sigma} if hasattr(model, "log_sigma") else {}


def prior_params(model) -> dict:
    """The objective's `log_prior` when the model's prior is not N(0, I) (the VampPrior)."""
    return {"log_prior": model.log_prior} if model.spec.prior != "standard" else {}


# --------------------------------------------------------------------------------------------
# The trainer


@dataclasses.dataclass
class Trainer:
    """Model, optimizer and the one update of a resolved config.

    Build with `Trainer.create(cfg, n_train)`; `init_state(seed)` gives the random streams.
    """

    cfg: TrainConfig
    model: torch.nn.Module
    optimizer: torch.optim.Optimizer
    scheduler: Any
    steps_per_epoch: int
    step: int = 0
    objective: str = "elbo"
    objective_params: dict = dataclasses.field(default_factory=dict)
    rows: slice | None = None
    """Multi-process (`torchvae.multiprocess`): this process's rows of each global batch."""

    @classmethod
    def create(cls, cfg: TrainConfig, n_train: int) -> "Trainer":
        cfg = resolve(cfg, framework=FRAMEWORK)
        if cfg.objective not in losses.OBJECTIVES:
            raise KeyError(
                f"unknown objective {cfg.objective!r}; valid: {', '.join(sorted(losses.OBJECTIVES))}"
            )
        if cfg.likelihood not in losses.RECONSTRUCTION:
            raise KeyError(
                f"unknown likelihood {cfg.likelihood!r}; valid: {', '.join(sorted(losses.RECONSTRUCTION))}"
            )
        model = models.build_model(cfg.model, generator=stream_generator(cfg.seed, "init"),
                                   init=cfg.init, **cfg.model_overrides)
        if cfg.noise == "shared":  # the JAX twin starts from the same NumPy draw
            convert.load_canonical_into(model, shared_torch_init(convert.to_canonical(model), cfg.seed))
        attach_likelihood_params(model, cfg)
        spe = steps_per_epoch(n_train, cfg.batch_size)
        opt, sched = make_optimizer(cfg, model.parameters(), spe * cfg.epochs)
        objective, params = lifecycle.objective_of(cfg, spe)
        return cls(cfg, model, opt, sched, spe, 0, objective, params)

    def init_state(self, seed: int, step: int = 0) -> dict[str, torch.Generator]:
        """The generators of the eps and binarization streams (the model was built in `create`),
        as a run of this config holds them after `step` optimizer steps.

        The state after `step` steps is reached by replaying each step's draws (the JAX twin
        folds the step into its keys instead): what a JAX state converted to torch continues
        with. Stand-in batches suffice: how many values a draw consumes depends on its shape
        alone. With TrainConfig.noise "shared" the generators are never drawn from.
        """
        gens = {s: stream_generator(seed, s) for s in ("eps", "binarize")}
        if self.cfg.noise == "shared" or step == 0:
            return gens
        batch = self.cfg.batch_size
        half = torch.full((batch, *self.model.spec.input_shape), 0.5)
        for _ in range(int(step)):  # train_epoch's draws, in its order
            if self.cfg.binarization == "dynamic":
                data_lib.binarize(half, gens["binarize"])
            self.draw_noise(gens["eps"], batch)
        return gens

    @property
    def latent_dim(self) -> int:
        return self.model.spec.latent_dim

    def draw_noise(self, generator: torch.Generator, batch: int):
        """(eps (B, D) for the reparameterization, extra noise the objective needs or None).

        The extra noise (IWAE's (k, B, D) samples, InfoVAE's prior samples) has the shape
        `losses.extra_noise_shape` gives; it is drawn from the same generator.
        """
        eps = torch.randn((batch, self.latent_dim), generator=generator)
        shape = losses.extra_noise_shape(self.cfg.objective, batch, self.latent_dim,
                                         **self.cfg.objective_params)
        extra = None if shape is None else torch.randn(shape, generator=generator)
        return eps, extra

    def loss_fn(self, x: torch.Tensor, eps: torch.Tensor, extra: torch.Tensor | None = None):
        """(loss, terms) of one batch in train mode."""
        cfg = self.cfg
        self.model.train()
        out = forward(self.model, x, eps, cfg.logvar_clamp)
        loss, terms = losses.OBJECTIVES[self.objective](
            x, out, likelihood=cfg.likelihood, step=self.step, reduction=cfg.reduction,
            decode=self.model.decode_logits, eps=extra,
            **self.objective_params, **likelihood_params(self.model), **prior_params(self.model),
        )
        posterior = None if out.logvar is None else (out.z, out.mean, out.logvar)
        if self.rows is not None:  # multi-process: the logged values are the global batch's
            terms = multiprocess.global_terms(terms, cfg.reduction)
            posterior = posterior and multiprocess.gather_rows(*posterior)
        if posterior is not None:  # posterior-collapse diagnostics, tracked in every VAE run
            terms = {**terms, **losses.posterior_diagnostics(
                *posterior, dataset_size=self.steps_per_epoch * cfg.batch_size,
                mi_tc=lifecycle.sampled_step(self.step))}
        return loss, terms

    def apply_update(self, x: torch.Tensor, eps: torch.Tensor,
                     extra: torch.Tensor | None = None) -> dict[str, float]:
        """One optimizer step on batch `x` with noise `eps`, in place on model and optimizer.

        Args:
          x: (B, C, H, W) float32 batch.
          eps: (B, D) standard normal noise for z = mean + exp(logvar/2) * eps.
          extra: the objective's extra noise (see `draw_noise`), or None.
        Returns:
          terms: the objective's scalar terms plus "grad_norm".
        """
        loss, terms = self.loss_fn(x, eps, extra)
        self.optimizer.zero_grad(set_to_none=True)
        loss.backward()
        if self.rows is not None:  # multi-process: the global batch's gradient on every process
            multiprocess.average_gradients(self.model.parameters(), self.cfg.reduction)
        grads = [p.grad for p in self.model.parameters() if p.grad is not None]
        grad_norm = torch.linalg.vector_norm(torch.stack([torch.linalg.vector_norm(g) for g in grads]))
        if self.cfg.grad_clip:
            torch.nn.utils.clip_grad_norm_(self.model.parameters(), self.cfg.grad_clip)
        self.optimizer.step()
        self.scheduler.step()
        self.step += 1
        out = {k: float(v.detach()) if v.ndim == 0 else v.detach().numpy() for k, v in terms.items()}
        # the value actually optimized (the NaN guard watches it; multi-process: the global one)
        out["loss"] = float((loss if self.rows is None else terms["loss"]).detach())
        out["grad_norm"] = float(grad_norm)
        return out

    # ---- one epoch -------------------------------------------------------------------------

    def batch_indices(self, epoch: int, n: int) -> np.ndarray:
        """(steps_per_epoch, B) example indices of `epoch`: the order both frameworks share."""
        return epoch_batches(self.cfg.seed, epoch, n, self.cfg.batch_size)

    def shared_noise(self, seed: int, epoch: int) -> dict[str, np.ndarray]:
        """The epoch's framework-neutral noise (`vaecommon.schedule.shared_epoch_noise`); the
        binarization uniforms are drawn in the (H, W, C) layout both frameworks share."""
        cfg, batch = self.cfg, self.cfg.batch_size
        c, h, w = self.model.spec.input_shape
        return shared_epoch_noise(
            seed, epoch, self.steps_per_epoch, batch, self.latent_dim,
            extra_shape=losses.extra_noise_shape(cfg.objective, batch, self.latent_dim,
                                                 **cfg.objective_params),
            image_shape=(h, w, c) if cfg.binarization == "dynamic" else None)

    def train_epoch(self, images: torch.Tensor, idx: np.ndarray, generators: dict,
                    progress: Callable | None = None, shared: dict | None = None
                    ) -> dict[str, np.ndarray]:
        """`apply_update` over one epoch, one step at a time.

        Args:
          images: (N, C, H, W) the resident training set.
          idx: (steps, B) int32 example indices (`batch_indices`).
          generators: the run's eps and binarization streams (`init_state`).
          shared: with TrainConfig.noise "shared", the epoch's `shared_noise` arrays, used
            instead of the generators.
        Returns:
          terms: stacked per step, each (steps,).
        """
        steps = []
        for i, ids in enumerate(torch.from_numpy(idx.astype(np.int64))):
            x = images[ids]
            if self.cfg.binarization == "dynamic" and shared is not None:
                u = torch.from_numpy(shared["uniform"][i]).permute(0, 3, 1, 2)  # NHWC -> NCHW
                x = (u < x).to(x.dtype)
            elif self.cfg.binarization == "dynamic":
                x = data_lib.binarize(x, generators["binarize"])
            if shared is not None:
                extra = shared.get("extra")
                noise = (torch.from_numpy(shared["eps"][i]),
                         None if extra is None else torch.from_numpy(extra[i]))
            else:
                noise = self.draw_noise(generators["eps"], x.shape[0])
            if self.rows is not None:  # multi-process: drawn for the global batch, then sliced
                x, *noise = multiprocess.local_batch(x, *noise, self.rows)
            steps.append(self.apply_update(x, *noise))
            if not math.isfinite(steps[-1]["loss"]):
                break  # the epoch's records stop here and name this step (lifecycle.epoch_records)
            if progress is not None and self.step % max(1, self.steps_per_epoch // 20) == 0:
                progress(self.step, steps[-1]["loss"])
        return {k: np.asarray([t[k] for t in steps]) for k in steps[0]}

    # ---- evaluation ------------------------------------------------------------------------

    @property
    def kl_estimate(self) -> str:
        """How evaluation estimates the KL: the objective's `kl_estimate` (analytic by default)."""
        return self.objective_params.get("kl_estimate", "analytic")

    def eval_batch(self, x: torch.Tensor, eps: torch.Tensor):
        """Per-example {"loss","recon","kl"} (B,), the posterior mean (B, D), the KL per
        dimension (B, D) and the forward pass (its z and logvar feed the collapse diagnostics)."""
        model = self.model
        out = forward(model, x, eps, self.cfg.logvar_clamp)
        terms = losses.elbo_terms(x, out, self.cfg.likelihood, **likelihood_params(model),
                                  **prior_params(model), kl_estimate=self.kl_estimate)
        if out.logvar is not None:
            kl_dim = losses.kl_normal_per_dim(out.mean, out.logvar)
        else:
            kl_dim = torch.zeros_like(out.mean)
        return terms, out.mean, kl_dim, out


@torch.no_grad()
def evaluate(trainer: Trainer, images: torch.Tensor, *, seed: int, nll_samples: int = 0,
             epoch: int = 0, timings: lifecycle.Timings | None = None) -> dict[str, Any]:
    """Test-set metrics, every example counted exactly once (padding masked).

    Returns a dict: loss (-ELBO, nats/example), recon, kl, bits_per_dim, kl_per_dim (list),
    active_units (Burda et al.: Var_x E_q[z_d] > 0.01), and nll/nll_samples when requested.
    `timings` gets the seconds of the evaluation and of the NLL.
    """
    timings = timings or lifecycle.Timings()
    with timings("evaluation"):
        res = _test_elbo(trainer, images, seed=seed, epoch=epoch)
    if nll_samples and get_spec(trainer.cfg.model, **trainer.cfg.model_overrides).is_vae:
        with timings("nll"):
            res.update(_test_nll_record(trainer, images, seed=seed, nll_samples=nll_samples, epoch=epoch))
    return res


def _test_elbo(trainer: Trainer, images: torch.Tensor, *, seed: int, epoch: int) -> dict[str, Any]:
    """The -ELBO part of `evaluate` (eager batches; the padding is sliced off again)."""
    cfg, model = trainer.cfg, trainer.model
    model.eval()
    n = images.shape[0]
    bs = min(cfg.eval_batch_size, n)
    xs, masks = lifecycle.pad_batches(images.numpy(), bs)
    d = trainer.latent_dim
    gen = stream_generator(seed, "eval", epoch)
    shared = shared_eval_noise(seed, epoch, n, d) if cfg.noise == "shared" else None
    start = 0
    sums: dict[str, Any] = {k: torch.zeros((), dtype=torch.float64) for k in ("loss", "recon", "kl")}
    sums.update({k: torch.zeros((d,), dtype=torch.float64) for k in ("kl_per_dim", "mean_sum", "mean_sq")})
    if get_spec(cfg.model, **cfg.model_overrides).is_vae:  # the collapse diagnostics' sums
        sums.update({k: torch.zeros((), dtype=torch.float64)
                     for k in ("full_batches", "mutual_info", "total_correlation")})
    for x, m in zip(torch.from_numpy(xs), torch.from_numpy(masks).double()):
        x = x[: int(m.sum())]  # eager torch needs no padding: same numbers, less work
        if shared is not None:  # the JAX twin's eps for the same examples
            eps = torch.from_numpy(shared[start: start + x.shape[0]])
        else:
            eps = torch.randn((x.shape[0], d), generator=gen)
        start += x.shape[0]
        terms, mean, kl_dim, out = trainer.eval_batch(x, eps)
        batch = {k: v.double().sum() for k, v in terms.items()}
        batch["kl_per_dim"] = kl_dim.double().sum(0)
        batch["mean_sum"] = mean.double().sum(0)
        batch["mean_sq"] = (mean.double() ** 2).sum(0)
        if out.logvar is not None:  # minibatch I(x;z) and TC of the whole batches only
            diag = losses.posterior_diagnostics(out.z, out.mean, out.logvar, dataset_size=n)
            full = float(x.shape[0] == bs)
            batch.update(full_batches=torch.tensor(full, dtype=torch.float64),
                         mutual_info=diag["mutual_info"].double() * full,
                         total_correlation=diag["total_correlation"].double() * full)
        sums = {k: sums[k] + batch[k] for k in sums}
    input_dim = int(np.prod(images.shape[1:]))
    res = lifecycle.test_metrics({k: np.asarray(v) for k, v in sums.items()}, n)
    res["bits_per_dim"] = losses.bits_per_dim(res["loss"], input_dim)
    return res


def _test_nll_record(trainer: Trainer, images: torch.Tensor, *, seed: int, nll_samples: int,
                     epoch: int) -> dict[str, Any]:
    """The NLL keys of a test record (on the first `nll_limit` test examples)."""
    cfg = trainer.cfg
    sub = images[: cfg.nll_limit] if cfg.nll_limit else images
    nll, stderr = test_nll_stats(trainer, sub, seed=seed, k=nll_samples, epoch=epoch)
    return {"nll": nll, "nll_stderr": stderr, "nll_samples": int(nll_samples), "nll_examples": int(sub.shape[0]),
            "nll_bits_per_dim": losses.bits_per_dim(nll, int(np.prod(sub.shape[1:])))}


def test_nll(trainer: Trainer, images: torch.Tensor, *, seed: int, k: int, epoch: int = 0,
             chunk: int = NLL_CHUNK, batch: int = 100) -> float:
    """Mean over test examples of -log p(x) with k importance samples (`test_nll_stats`)."""
    return test_nll_stats(trainer, images, seed=seed, k=k, epoch=epoch, chunk=chunk, batch=batch)[0]


def nll_prior(model) -> dict:
    """`prior_params` for the NLL: the VampPrior's components are encoded once per batch of test
    examples, not once per chunk of samples."""
    if model.spec.prior == "vampprior":
        means, logvars = model.prior_components()
        return {"log_prior": lambda z: losses.log_mixture(z, means, logvars)}
    return prior_params(model)


@torch.inference_mode()
def test_nll_stats(trainer: Trainer, images: torch.Tensor, *, seed: int, k: int, epoch: int = 0,
                   chunk: int = NLL_CHUNK, batch: int = 100) -> tuple[float, float]:
    """Mean over test examples of -log p(x), estimated with k importance samples (Burda et al.;
    `losses.importance_sampled_nll` is the per-example estimator).

    Per batch of `batch` test examples: one encoder pass, eps (k, batch, K) drawn at once, and
    the decoder run on (chunk * batch, K) blocks combined with a running log-sum-exp (`chunk`
    samples at a time bound the memory for k = 5000). Returns (mean, standard error of the mean
    over the test examples).
    """
    images = images.numpy()
    xs, masks = lifecycle.pad_batches(images, batch)
    model, cfg = trainer.model, trainer.cfg
    model.eval()
    d = trainer.latent_dim
    gen = stream_generator(seed, "nll", epoch)

    def one_batch(x):
        mean, logvar = model.encode(x)  # once per batch, not per chunk
        if cfg.logvar_clamp is not None:
            logvar = logvar.clamp(-cfg.logvar_clamp, cfg.logvar_clamp)
        eps = torch.randn((k, x.shape[0], d), generator=gen)
        return losses.importance_sampled_nll(x, mean, logvar, eps, model.decode_logits,
                                             cfg.likelihood, chunk=chunk,
                                             **likelihood_params(model), **nll_prior(model))

    per_example = [one_batch(torch.from_numpy(xs[i][: int(masks[i].sum())])).double().numpy()
                   for i in range(xs.shape[0])]  # eager torch needs no padding
    return lifecycle.mean_and_stderr(np.concatenate(per_example))


# --------------------------------------------------------------------------------------------
# Data


def load_datasets(cfg: TrainConfig):
    """(train, test) datasets of a resolved config (dynamic binarization evaluates on grey
    values; the training batches are binarized inside the step)."""
    kw = runinfo.data_kwargs(cfg)
    train = data_lib.load_dataset(cfg.dataset, "train", limit=cfg.limit_train, **kw)
    test = data_lib.load_dataset(cfg.dataset, "test", limit=cfg.limit_test, **kw)
    return train, test


def check_data(cfg: TrainConfig, spec, *datasets) -> None:
    """Shape, dtype, NaN and value-range checks of the datasets (`vaecommon.validate`)."""
    for ds in datasets:
        # NCHW here; jaxvae checks NHWC
        check_training_images(ds.images.numpy(), likelihood=cfg.likelihood, expected=spec.input_shape,
                              layout="NCHW", where=f"{ds.info.path} ({ds.info.split})",
                              preset=spec.name)


# --------------------------------------------------------------------------------------------
# Members (a plain run is one member; a sweep is a list of N, trained one after the other)


def data_parallel(num_devices: int | None, batch_size: int, members: int):
    """None: the torch trainer runs on one device (torch's own engine for more is DDP).

    Raises:
      ValueError: more than one device requested.
    """
    if (num_devices or 1) == 1:
        return None
    raise ValueError(f"--devices {num_devices}: the torch trainer runs on one device; "
                     "multi-device training is a JAX feature (jax.sharding)")


def _all_finite(model: torch.nn.Module) -> bool:
    return all(bool(torch.isfinite(p).all()) for p in model.state_dict().values()
               if p.is_floating_point())


def set_threads() -> int:
    """Set torch's intra-op threads to the cores available to this process
    (`vaecommon.runinfo.available_cores`: OMP_NUM_THREADS, else the affinity mask) and return
    the count. torch's own default counts the machine's cores, which oversubscribes a process
    confined to fewer (a container, taskset) or sharing them with other busy processes."""
    n = runinfo.available_cores()
    torch.set_num_threads(n)
    return n


def _epoch_program(trainers: list[Trainer], images, generators: list[dict],
                   bar: lifecycle.Progress) -> Callable:
    """The epoch of all members: (idx, shared noise or None per member) -> (terms, all
    parameters finite), one member after the other."""
    callback = bar.step if bar.bar is not None else None

    def run(idx, shared):
        terms = [t.train_epoch(images, i, g, progress=callback, shared=sh)
                 for t, i, g, sh in zip(trainers, idx, generators, shared)]
        return terms, all(_all_finite(t.model) for t in trainers)
    return run


def _save_checkpoint(manager, trainer: Trainer, generators, *, epoch: int, cfg: TrainConfig) -> None:
    manager.save(trainer, epoch=epoch, generators=generators, config=dataclasses.asdict(cfg))


# --------------------------------------------------------------------------------------------
# train_and_evaluate


def train_and_evaluate(cfg: TrainConfig, workdir: str | Path, *, resume: bool = True,
                       sweep: dict[str, list] | None = None, num_devices: int | None = 1,
                       progress: bool = True, on_epoch: Callable | None = None) -> dict[str, Any]:
    """Train `cfg` into the run folder `workdir`; resume from its latest checkpoint if present.

    `sweep` ({"seed": [0, 1], "beta": [1.0, 4.0]}) trains one member per zipped value, each into
    `workdir/member_<i>`. `resume=False` moves an existing run aside (`lifecycle.set_aside`) and
    starts over. `on_epoch(epoch, trainers)` runs after each epoch.

    Returns the final test metrics ("train": last epoch's train metrics; "members" for a sweep;
    "interrupted": the signal number when a signal stopped the run).
    """
    cfgs, swept = lifecycle.member_configs(cfg, sweep, framework=FRAMEWORK)
    base, n = cfgs[0], len(cfgs)
    folders = lifecycle.member_folders(workdir, n)
    for f, c in zip(folders, cfgs):
        lifecycle.check_owner(f, c, FRAMEWORK)
    train_ds, test_ds = load_datasets(base)
    spec = get_spec(base.model, **base.model_overrides)
    check_data(base, spec, train_ds, test_ds)
    val_ds = None
    if base.validation:
        train_ds, val_ds = hold_out(train_ds, base.validation)
    if base.eval_binarization == "static":  # the VampPrior protocol: evaluated on fixed bits
        val_ds = val_ds and binarized_view(val_ds, AS_ARRAY)
        test_ds = binarized_view(test_ds, AS_ARRAY)
    data_parallel(num_devices, base.batch_size, n)
    trainers = [Trainer.create(c, train_ds.images.shape[0]) for c in cfgs]
    # multi-process (`torchvae.multiprocess`): process 0 alone owns and writes the run folder and
    # its checkpoints; every process trains on its rows of each global batch, restores from
    # process 0's checkpoints and evaluates (on the whole test set)
    multi, lead = multiprocess.count() > 1, multiprocess.is_lead()
    if multi:
        multiprocess.check_supported(base, trainers[0].model, n)
        trainers[0].rows = multiprocess.local_rows(base.batch_size)
    with contextlib.ExitStack() as stack:
        folders, failed = lifecycle.open_run(stack, workdir, folders, resume=resume, lead=lead,
                                             package=PACKAGE)
        if multiprocess.any_process(failed is not None):  # every process stops, not only 0
            raise failed or lifecycle.RunOwnershipError(
                f"process 0 could not start the run in {workdir}: its error line says why")
        managers = [ckpt_lib.CheckpointManager(f.checkpoints, keep=c.keep_checkpoints,
                                               read_only=not lead)
                    for f, c in zip(folders, cfgs)]
        bests = [ckpt_lib.CheckpointManager(f.checkpoints / "best", keep=1, read_only=not lead)
                 if val_ds else None for f in folders]  # the best-validation state
        generators = [t.init_state(c.seed) for t, c in zip(trainers, cfgs)]
        start_epoch = 0
        if any(m.latest_step() is not None for m in managers):
            restored = []
            for turn in (True, False) if multi else (True,):  # process 0 first: it sets damaged
                multiprocess.sync("torchvae: restore")        # checkpoints aside, alone
                if lead == turn:
                    restored = [m.restore_latest_intact(t, g)
                                for m, t, g in zip(managers, trainers, generators)]
            lifecycle.warn_skipped([line for _, skipped in restored for line in skipped])
            epochs = {int(meta["epoch"]) for meta, _ in restored}
            if len(epochs) != 1:
                raise ValueError(f"the members in {workdir} were checkpointed at different epochs {epochs}")
            for f, c, (meta, _) in zip(folders, cfgs, restored):
                check_resumable(meta.get("config"), c, str(f.checkpoints))
            start_epoch = epochs.pop()
            for f, t in zip(folders, trainers) if lead else ():
                f.truncate_metrics(t.step)
            if lead:
                print(f"[{PACKAGE}] resumed {workdir} at epoch {start_epoch} (step "
                      f"{trainers[0].step})", flush=True)
        else:
            for f in folders if lead else ():
                f.metrics_path.unlink(missing_ok=True)  # records without a checkpoint: a killed start
        multiprocess.sync("torchvae: records truncated")  # all read the same records from here on
        devices = [f"cpu ({set_threads()} threads)"] * multiprocess.count()
        stoppers = [lifecycle.EarlyStopping.from_records(lifecycle.records(f), c.early_stopping,
                                                         c.kl_warmup_epochs) for f, c in zip(folders, cfgs)]
        # a rerun of a finished (or early-stopped) run rewrites nothing
        finished = start_epoch >= base.epochs or (val_ds is not None and all(s.stopped for s in stoppers))
        boards = [stack.enter_context(contextlib.closing(Board(f.root, purge_step=step + 1,
                                                               enabled=lead and not finished)))
                  for f, step in zip(folders, [t.step for t in trainers])]
        for f, c in zip(folders, cfgs) if lead and not finished else ():
            f.write_config(lifecycle.run_record(c, spec, train_ds, test_ds, framework=FRAMEWORK,
                                                devices=devices, versions=lifecycle.versions(*VERSIONS),
                                                sweep=sweep))

        images = train_ds.images
        bar = stack.enter_context(contextlib.closing(lifecycle.Progress(
            progress and lead, total=trainers[0].steps_per_epoch * base.epochs, initial=trainers[0].step)))
        epoch_fn = _epoch_program(trainers, images, generators, bar)
        trains: list[dict] = [lifecycle.last_record(f, "train") for f in folders]
        tests: list[dict] = [lifecycle.last_record(f, "test") for f in folders]
        t_start, timings = time.time(), lifecycle.Timings()
        interrupt = stack.enter_context(lifecycle.Interrupt(PACKAGE))
        stop = False  # a signal on any process: all stop after the same epoch
        for epoch in range(start_epoch, base.epochs if not finished else start_epoch):
            t0 = time.time()
            idx = [epoch_batches(c.seed, epoch, images.shape[0], c.batch_size) for c in cfgs]
            shared = [t.shared_noise(c.seed, epoch) if c.noise == "shared" else None
                      for t, c in zip(trainers, cfgs)]
            with timings("train"):
                terms, finite = epoch_fn(idx, shared)
            seconds = time.time() - t0
            final = epoch + 1 == base.epochs
            records = []
            for i, (f, c) in enumerate(zip(folders, cfgs)):  # every member is checked before any write
                recs, trains[i] = lifecycle.epoch_records(
                    terms[i], step=trainers[i].step, epoch=epoch,
                    batch_size=c.batch_size, seconds=seconds,
                    last_checkpoint=lifecycle.newest_checkpoint([managers[i]]),
                    every=c.batch_log_every)
                lifecycle.check_finite(bool(np.all(finite)), "parameters", epoch, trains[i]["step"],
                                       lifecycle.newest_checkpoint(managers))
                records.append(recs)
            for i, (f, c) in enumerate(zip(folders, cfgs)):
                t_i = trainers[i]
                stopped_before = stoppers[i].stopped
                if val_ds is not None and not stopped_before:
                    record = {"type": "validation", "epoch": epoch + 1, "step": trains[i]["step"],
                              **evaluate(t_i, val_ds.images, seed=c.seed,
                                         epoch=epoch + 1, timings=timings)}
                    lifecycle.check_finite(not record.get("nonfinite"), "validation metrics", epoch,
                                           trains[i]["step"], lifecycle.newest_checkpoint(managers))
                    records[i].append(record)
                    if stoppers[i].update(epoch + 1, record["loss"]) and lead:
                        with timings("checkpoints"):
                            _save_checkpoint(bests[i], t_i, generators[i], epoch=epoch + 1, cfg=c)
                if lifecycle.due(c.eval_every, epoch, final) and not (final and val_ds is not None):
                    lifecycle.announce_nll(bar, c.final_nll_samples if final else c.nll_samples,
                                           len(test_ds.images), c.nll_limit, final)
                    tests[i] = {"type": "test", "epoch": epoch + 1, "step": trains[i]["step"],
                                **evaluate(t_i, test_ds.images, seed=c.seed,
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
                if lead and (lifecycle.due(c.checkpoint_every, epoch, final) or stop
                             or stoppers[i].stopped != stopped_before):
                    with timings("checkpoints"):
                        _save_checkpoint(managers[i], t_i, generators[i], epoch=epoch + 1, cfg=c)
                if lead and lifecycle.due(c.figures_every, epoch, final) and not (final and val_ds is not None):
                    with timings("figures"):
                        figures_lib.write_run_figures(f, t_i, test_ds, seed=c.seed,
                                                      board=boards[i], step=trains[i]["step"])
            bar.epoch_done(epoch + 1, trains, tests)
            multiprocess.sync("torchvae: epoch saved")  # a resume finds process 0's checkpoint
            if on_epoch is not None:
                on_epoch(epoch + 1, trainers[0] if n == 1 else trainers)
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
                multiprocess.sync("torchvae: best saved")
                meta, _ = bests[i].restore_latest_intact(trainers[i], generators[i])
                lifecycle.announce_nll(bar, c.final_nll_samples, len(test_ds.images), c.nll_limit, True)
                tests[i] = {"type": "test", "epoch": int(meta["epoch"]), "step": trainers[i].step,
                            "best_epoch": int(meta["epoch"]), "epochs_trained": trained,
                            **evaluate(trainers[i], test_ds.images, seed=c.seed,
                                       nll_samples=c.final_nll_samples, epoch=int(meta["epoch"]),
                                       timings=timings)}
                if lead:
                    f.append_metrics([tests[i]])
                    boards[i].records([tests[i]])
                    with timings("figures"):
                        figures_lib.write_run_figures(f, trainers[i], test_ds, seed=c.seed,
                                                      board=boards[i], step=tests[i]["step"])
        wall = time.time() - t_start
        if not stop and lead:
            for i, (f, c) in enumerate(zip(folders, cfgs)):
                lifecycle.finish(f, c, spec, train_ds.info, trains[i], tests[i], wall,
                                 trained=not finished, framework=FRAMEWORK,
                                 versions=lifecycle.versions(*VERSIONS), seconds=timings.seconds,
                                 figures=lambda f=f, c=c, i=i: figures_lib.write_run_figures(
                                     f, trainers[i], test_ds, seed=c.seed))
            if n > 1 and not finished:
                lifecycle.write_sweep_summary(workdir, cfgs, folders, sweep, wall, framework=FRAMEWORK)
    signum = (multiprocess.max_process(interrupt.signum or 0) or None) if multi and stop else interrupt.signum
    return lifecycle.result(trains, tests, wall, signum, timings.seconds)
