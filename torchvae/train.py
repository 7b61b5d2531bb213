"""The PyTorch reference trainer: a plain, readable loop. Twin: `jaxvae/train.py`.

It reads the same `TrainConfig`, writes the same metric keys and run-folder layout, and visits
the training set in the same batch order (`vaecommon.schedule.epoch_batches`), so curves from
the two frameworks can be laid over each other. It runs in the fastest *plain* form: batches are
sliced from one pre-loaded tensor, with no per-image transforms (the torchvision DataLoader path
the notebooks use is measured separately by `scripts/bench.py`).

Randomness: parameter init, eps and dynamic binarization each come from their own
`torch.Generator` seeded from (seed, stream); no global RNG is touched. The generators' states
are checkpointed, so a resumed run continues exactly.
"""

from __future__ import annotations

import dataclasses
import math
import signal
import sys
import time
from pathlib import Path
from typing import Any, Callable

import numpy as np
import torch

from torchvae import data as data_lib
from torchvae.checkpoint import CheckpointManager
from torchvae import losses
from torchvae import models
from vaecommon import runs
from vaecommon.config import TrainConfig, check_resumable, resolve
from vaecommon.presets import get_spec
from vaecommon.schedule import epoch_batches, lr_factor, steps_per_epoch
from vaecommon.validate import check_training_images

__all__ = [
    "Trainer", "make_optimizer", "train_and_evaluate", "evaluate", "STREAMS",
    "NonFiniteLossError",
]

STREAMS = {"init": 0, "perm": 1, "eps": 2, "binarize": 3, "eval": 4, "nll": 5, "figures": 6}


class NonFiniteLossError(FloatingPointError):
    """Training produced a NaN/inf loss; the message names the epoch and step."""


def stream_generator(seed: int, stream: str, counter: int = 0) -> torch.Generator:
    """A torch.Generator for one random stream of the run (seeded from seed, stream, counter)."""
    mixed = np.random.SeedSequence([int(seed), STREAMS[stream], int(counter)]).generate_state(1)[0]
    return torch.Generator().manual_seed(int(mixed))


def make_optimizer(cfg: TrainConfig, params, total_steps: int):
    """(optimizer, scheduler) with the schedule shape of `vaecommon.schedule.lr_factor`."""
    wd = float(cfg.weight_decay or 0.0)
    if cfg.optimizer == "adam":
        opt = torch.optim.Adam(params, lr=cfg.lr, weight_decay=wd)
    elif cfg.optimizer == "adamw":
        opt = torch.optim.AdamW(params, lr=cfg.lr, weight_decay=wd)
    elif cfg.optimizer == "sgd":
        opt = torch.optim.SGD(params, lr=cfg.lr, momentum=cfg.momentum, weight_decay=wd)
    else:
        raise ValueError(f"unknown optimizer {cfg.optimizer!r}; valid: adam, adamw, sgd")
    sched = torch.optim.lr_scheduler.LambdaLR(
        opt,
        lambda step: float(lr_factor(step, warmup_steps=cfg.warmup_steps, schedule=cfg.schedule,
                                     total_steps=total_steps)),
    )
    return opt, sched


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


@dataclasses.dataclass
class Trainer:
    """Model, optimizer and the one update of a resolved config."""

    cfg: TrainConfig
    model: torch.nn.Module
    optimizer: torch.optim.Optimizer
    scheduler: Any
    steps_per_epoch: int
    step: int = 0

    @classmethod
    def create(cls, cfg: TrainConfig, n_train: int) -> "Trainer":
        cfg = resolve(cfg)
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
        attach_likelihood_params(model, cfg)
        spe = steps_per_epoch(n_train, cfg.batch_size)
        opt, sched = make_optimizer(cfg, model.parameters(), spe * cfg.epochs)
        return cls(cfg, model, opt, sched, spe)

    @property
    def latent_dim(self) -> int:
        return self.model.spec.latent_dim

    def draw_noise(self, generator: torch.Generator, batch: int):
        """(eps (B, D) for the reparameterization, the objective's extra noise or None)."""
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
        return losses.OBJECTIVES[cfg.objective](
            x, out, likelihood=cfg.likelihood, step=self.step, reduction=cfg.reduction,
            decode=self.model.decode_logits, eps=extra,
            **cfg.objective_params, **likelihood_params(self.model),
        )

    def apply_update(self, x: torch.Tensor, eps: torch.Tensor,
                     extra: torch.Tensor | None = None) -> dict[str, float]:
        """One optimizer step on batch `x` (B, C, H, W) with noise `eps` (B, D). Returns terms."""
        loss, terms = self.loss_fn(x, eps, extra)
        self.optimizer.zero_grad(set_to_none=True)
        loss.backward()
        grads = [p.grad for p in self.model.parameters() if p.grad is not None]
        grad_norm = torch.linalg.vector_norm(torch.stack([torch.linalg.vector_norm(g) for g in grads]))
        if self.cfg.grad_clip:
            torch.nn.utils.clip_grad_norm_(self.model.parameters(), self.cfg.grad_clip)
        self.optimizer.step()
        self.scheduler.step()
        self.step += 1
        out = {k: float(v.detach()) for k, v in terms.items()}
        out["loss"] = float(loss.detach())  # the value actually optimized (the NaN guard watches it)
        out["grad_norm"] = float(grad_norm)
        return out


@torch.no_grad()
def evaluate(trainer: Trainer, images: torch.Tensor, *, seed: int, nll_samples: int = 0,
             epoch: int = 0) -> dict[str, Any]:
    """Test-set metrics with the same keys and definitions as `jaxvae.train.evaluate`."""
    cfg, model = trainer.cfg, trainer.model
    model.eval()
    n = images.shape[0]
    d = trainer.latent_dim
    gen = stream_generator(seed, "eval", epoch)
    sums = {"loss": 0.0, "recon": 0.0, "kl": 0.0}
    kl_dim = torch.zeros(d, dtype=torch.float64)
    mean_sum = torch.zeros(d, dtype=torch.float64)
    mean_sq = torch.zeros(d, dtype=torch.float64)
    for i in range(0, n, cfg.eval_batch_size):
        x = images[i:i + cfg.eval_batch_size]
        eps = torch.randn((x.shape[0], d), generator=gen)
        out = forward(model, x, eps, cfg.logvar_clamp)
        terms = losses.elbo_terms(x, out, cfg.likelihood, **likelihood_params(model))
        for k in sums:
            sums[k] += float(terms[k].double().sum())
        if out.logvar is not None:
            kl_dim += losses.kl_normal_per_dim(out.mean, out.logvar).double().sum(0)
        mean_sum += out.mean.double().sum(0)
        mean_sq += (out.mean.double() ** 2).sum(0)
    input_dim = int(np.prod(images.shape[1:]))
    res: dict[str, Any] = {k: v / n for k, v in sums.items()}
    res["bits_per_dim"] = res["loss"] / (input_dim * math.log(2.0))
    res["kl_per_dim"] = [float(v) for v in kl_dim / n]
    var = mean_sq / n - (mean_sum / n) ** 2
    res["active_units"] = int((var > 0.01).sum())
    if nll_samples and model.spec.is_vae:
        sub = images[: cfg.nll_limit] if cfg.nll_limit else images
        res["nll"] = importance_sampled_nll(trainer, sub, seed=seed, k=nll_samples, epoch=epoch)
        res["nll_samples"] = int(nll_samples)
        res["nll_examples"] = int(sub.shape[0])
        res["nll_bits_per_dim"] = res["nll"] / (input_dim * math.log(2.0))
    return res


@torch.no_grad()
def importance_sampled_nll(trainer: Trainer, images: torch.Tensor, *, seed: int, k: int,
                           epoch: int = 0, chunk: int = 256, batch: int = 100) -> float:
    """Mean -log p(x) from k importance samples, chunked like the JAX twin."""
    model, cfg = trainer.model, trainer.cfg
    model.eval()
    gen = stream_generator(seed, "nll", epoch)
    total = 0.0
    for i in range(0, images.shape[0], batch):
        x = images[i:i + batch]
        mean, logvar = model.encode(x)
        if cfg.logvar_clamp is not None:
            logvar = logvar.clamp(-cfg.logvar_clamp, cfg.logvar_clamp)
        acc = torch.full((x.shape[0],), -math.inf)
        for c in range(0, k, chunk):
            kk = min(chunk, k - c)
            eps = torch.randn((kk, x.shape[0], trainer.latent_dim), generator=gen)
            lw = losses.log_importance_weights(x, mean, logvar, eps, model.decode_logits,
                                               cfg.likelihood, **likelihood_params(model))  # (kk, B)
            acc = torch.logaddexp(acc, torch.logsumexp(lw, dim=0))
        total += float((-(acc - math.log(k))).double().sum())
    return total / images.shape[0]


def check_data(cfg: TrainConfig, spec, *datasets) -> None:
    """Shape, dtype, NaN and value-range checks of the datasets (`vaecommon.validate`)."""
    for ds in datasets:
        # NCHW here; jaxvae checks NHWC
        check_training_images(ds.images.numpy(), likelihood=cfg.likelihood, expected=spec.input_shape,
                              layout="NCHW", where=f"{ds.info.path} ({ds.info.split})",
                              preset=spec.name)


def load_data(cfg: TrainConfig):
    """(train, test) datasets for a resolved config."""
    kw = dict(source=cfg.data_source, data_dir=cfg.data_dir,
              binarization=cfg.binarization if cfg.binarization != "dynamic" else "none")
    if cfg.dataset == "image_folder":
        kw["image_size"] = cfg.image_size
    train = data_lib.load_dataset(cfg.dataset, "train", limit=cfg.limit_train, **kw)
    test = data_lib.load_dataset(cfg.dataset, "test", limit=cfg.limit_test, **kw)
    return train, test


def train_and_evaluate(cfg: TrainConfig, workdir: str | Path, *, resume: bool = True,
                       progress: bool = True, on_epoch: Callable | None = None) -> dict[str, Any]:
    """Train `cfg` into the run folder `workdir` (resuming from its latest checkpoint)."""
    from tqdm.auto import tqdm

    from torchvae import figures as tfig

    cfg = resolve(cfg)
    run = runs.RunFolder(workdir).create()
    train_ds, test_ds = load_data(cfg)
    spec = get_spec(cfg.model, **cfg.model_overrides)
    check_data(cfg, spec, train_ds, test_ds)
    images = train_ds.images
    n = images.shape[0]
    trainer = Trainer.create(cfg, n)
    gens = {"eps": stream_generator(cfg.seed, "eps"), "binarize": stream_generator(cfg.seed, "binarize")}
    manager = CheckpointManager(run.checkpoints, keep=cfg.keep_checkpoints)
    start_epoch = 0
    if resume and manager.latest_step() is not None:
        payload = manager.restore(trainer, gens)
        check_resumable(payload.get("config"), cfg, str(run.checkpoints))
        start_epoch = int(payload["epoch"])
        run.truncate_metrics(trainer.step)
        print(f"[torchvae] resumed {run.root} at epoch {start_epoch} (step {trainer.step})",
              file=sys.stderr)
    elif run.metrics_path.exists():
        run.metrics_path.unlink()
    run.write_config({
        "config": dataclasses.asdict(cfg), "spec": dataclasses.asdict(spec), "framework": "torch",
        "data": {"train": train_ds.info._asdict(), "test": test_ds.info._asdict()},
        "devices": ["cpu"],
        "versions": runs.versions("torch", "torchvision", "numpy"),
    })

    stop = {"requested": False}

    def handler(signum, frame):
        if stop["requested"]:
            raise KeyboardInterrupt
        stop["requested"] = True
        print(f"\n[torchvae] signal {signum}: finishing the epoch, saving, then exiting", file=sys.stderr)

    old = {s: signal.signal(s, handler) for s in (signal.SIGINT, signal.SIGTERM)}
    bar = tqdm(total=trainer.steps_per_epoch * cfg.epochs, initial=trainer.step, unit="step",
               dynamic_ncols=True, mininterval=1.0, desc="train", disable=not progress)
    last_train: dict[str, Any] = {}
    test_metrics: dict[str, Any] = {}
    t_start = time.time()
    try:
        for epoch in range(start_epoch, cfg.epochs):
            t0 = time.time()
            records = []
            idx = torch.from_numpy(epoch_batches(cfg.seed, epoch, n, cfg.batch_size).astype(np.int64))
            sums: dict[str, float] = {}
            for i, ids in enumerate(idx):
                x = images[ids]
                if cfg.binarization == "dynamic":
                    x = data_lib.binarize(x, gens["binarize"])
                terms = trainer.apply_update(x, *trainer.draw_noise(gens["eps"], x.shape[0]))
                if not math.isfinite(terms["loss"]):
                    raise NonFiniteLossError(
                        f"non-finite loss at epoch {epoch + 1}, step {trainer.step}; the last good "
                        f"checkpoint in {run.checkpoints} is intact. Try a lower --lr, "
                        "--logvar-clamp 10, or --grad-clip 1.0"
                    )
                records.append({"type": "batch", "step": trainer.step,
                                "epoch": epoch + (i + 1) / trainer.steps_per_epoch, **terms})
                for k, v in terms.items():
                    sums[k] = sums.get(k, 0.0) + v
                bar.update(1)
                if i % 20 == 0:
                    bar.set_postfix(loss=f"{terms['loss']:.3f}", refresh=False)
            dt = time.time() - t0
            last_train = {"type": "train", "epoch": epoch + 1, "step": trainer.step,
                          **{k: v / len(idx) for k, v in sums.items()}, "time_s": dt,
                          "examples_per_s": len(idx) * cfg.batch_size / dt}
            records.append(last_train)
            final = epoch + 1 == cfg.epochs
            if (cfg.eval_every and (epoch + 1) % cfg.eval_every == 0) or final:
                k = cfg.final_nll_samples if final else cfg.nll_samples
                test_metrics = {"type": "test", "epoch": epoch + 1, "step": trainer.step,
                                **evaluate(trainer, test_ds.images, seed=cfg.seed, nll_samples=k,
                                           epoch=epoch + 1)}
                records.append(test_metrics)
            run.append_metrics(records)
            post = {"epoch": epoch + 1, "loss": f"{last_train['loss']:.3f}",
                    "ex/s": f"{last_train['examples_per_s']:.0f}"}
            if test_metrics.get("epoch") == epoch + 1:
                post["test"] = f"{test_metrics['loss']:.3f}"
            bar.set_postfix(post)
            if (cfg.checkpoint_every and (epoch + 1) % cfg.checkpoint_every == 0) or final \
                    or stop["requested"]:
                manager.save(trainer, epoch=epoch + 1, generators=gens, config=dataclasses.asdict(cfg))
            if (cfg.figures_every and (epoch + 1) % cfg.figures_every == 0) or final:
                tfig.write_run_figures(run, trainer, test_ds, seed=cfg.seed)
            if on_epoch is not None:
                on_epoch(epoch + 1, trainer)
            if stop["requested"]:
                print(f"[torchvae] stopped after epoch {epoch + 1}; resume with the same command",
                      file=sys.stderr)
                break
    finally:
        bar.close()
        for s, h in old.items():
            signal.signal(s, h)
    wall = time.time() - t_start
    from vaecommon.summary import render_summary

    run.write_summary(render_summary(
        framework="torch", cfg=dataclasses.asdict(cfg), spec=dataclasses.asdict(spec),
        data=train_ds.info._asdict(), train=last_train, test=test_metrics, wall_s=wall,
        versions=runs.versions("torch", "torchvision", "numpy"),
    ))
    return {"train": last_train, **test_metrics, "wall_s": wall}
