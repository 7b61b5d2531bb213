"""The command API of torchvae: rebuild a PyTorch model from a run folder, and the model
operations the commands run.

Twin: `jaxvae/api.py` (same names and signatures; `scripts/_twins.py` picks the twin
from the run folder's config.json).

Everything here takes and returns NumPy: images NHWC `(N, H, W, C)` float32 in [0, 1]
(converted to and from this framework's NCHW tensors at the boundary, so the commands are
framework-free), latents `(N, D)`. Evaluation and figures use the trainer's own random streams
(`torchvae.streams.stream_generator` of the run's seed at the checkpoint's epoch), so
`evaluate_run` on a finished run reproduces the test record the trainer wrote, and
`run_figure_arrays` the trainer's figures.
"""

from __future__ import annotations

import dataclasses
import os
from pathlib import Path
from typing import Any, Mapping, NamedTuple

import numpy as np
import torch

from torchvae import convert
from torchvae import data as data_lib
from torchvae import figure_data as tfig
from torchvae import checkpoint as ckpt_lib
from torchvae import train as train_lib
from torchvae.streams import stream_generator
from torchvae.convert import load_torch_file  # re-exported: the reader of save_torch_file's files
from vaecommon import runinfo, runs
from vaecommon.config import TrainConfig, resolve
from vaecommon.datasets import Dataset
from vaecommon.presets import ModelSpec
from vaecommon.run_figures import FigureArrays, as_nhwc
from vaecommon.validate import check_api_images
from vaecommon.weights import TrainingState

__all__ = [
    "FRAMEWORK", "Restored", "restore", "load_run", "load_run_dataset", "evaluate_run", "encode_means",
    "reconstruct", "sample", "interpolate", "decode", "run_figure_arrays", "canonical_weights",
    "model_from_weights", "write_run_folder", "read_training_state", "write_training_state", "load_torch_file", "save_torch_file",
]

FRAMEWORK = "torch"


class Restored(NamedTuple):
    """A run folder's model at one checkpoint, and what evaluating it needs.

    Attributes:
      model: the model in eval mode.
      cfg: the run's resolved TrainConfig.
      spec: its ModelSpec.
      step, epoch: the checkpoint's optimizer step and completed epochs.
      record: the run's config.json.
      trainer: the `torchvae.train.Trainer` (holding the model).
      state: None (the JAX twin's restored TrainState; here the trainer holds everything).
    """

    model: Any
    cfg: TrainConfig
    spec: ModelSpec
    step: int
    epoch: int
    record: dict
    trainer: Any
    state: Any


def restore(run_dir: str | Path, step: int | None = None, *, best: bool = False) -> Restored:
    """Restore a torch run folder's latest checkpoint (or `step`; `best`: of checkpoints/best, the
    best-validation state of a run with a validation split).

    Raises:
      RunFolderError: not a run folder, a JAX run, corrupt config, no (such) checkpoint, or a
        checkpoint that does not fit the config's model.
    """
    record = runinfo.read_run_config(run_dir)
    if record["framework"] != FRAMEWORK:
        raise runinfo.RunFolderError(f"{run_dir} is a {record['framework']} run; use "
                                      f"vaecommon.runinfo.load_run, which picks the twin")
    cfg = runinfo.train_config(record, where=Path(run_dir) / "config.json")
    checkpoints = runs.RunFolder(run_dir).checkpoints
    checkpoints = checkpoints / "best" if best else checkpoints
    step = runinfo.pick_step(run_dir, ckpt_lib.checkpoint_steps(checkpoints), FRAMEWORK, step)
    spec = runinfo.spec_of(cfg.model, cfg.model_overrides)
    trainer = train_lib.Trainer.create(cfg, runinfo.n_train(record, cfg))
    manager = ckpt_lib.CheckpointManager(checkpoints,
                                          keep=cfg.keep_checkpoints, read_only=True)
    try:
        payload = manager.restore(trainer, {}, step)  # {}: the RNG streams are not needed here
    except (ValueError, RuntimeError, KeyError) as e:  # load_state_dict raises RuntimeError
        lines = [line.strip() for line in str(e).splitlines() if line.strip()]
        first = next((line for line in lines[1:] if "mismatch" in line or "key" in line.lower()),
                     lines[0] if lines else type(e).__name__)  # torch lists every mismatch
        raise runinfo.RunFolderError(
            f"cannot restore checkpoint step {step} from {manager.directory}: {first[:300]} (is "
            "it from a different preset, framework or a truncated write?)") from None
    trainer.model.eval()
    return Restored(trainer.model, cfg, spec, int(trainer.step), int(payload.get("epoch", 0)),
                    record, trainer, None)


def load_run(run_dir: str | Path, step: int | None = None) -> tuple[Any, TrainConfig, ModelSpec]:
    """(model in eval mode, resolved TrainConfig, ModelSpec) of a run folder's checkpoint."""
    r = restore(run_dir, step)
    return r.model, r.cfg, r.spec


def load_run_dataset(cfg: TrainConfig, split: str = "test", *, dataset: str | None = None,
               data_source: str | None = None, data_dir: str | None = None,
               limit: int | None = None) -> Dataset:
    """One split as the run saw it (same source, binarization and limit), or another dataset.

    Args:
      cfg: the run's resolved config.
      split: "train" or "test".
      dataset, data_source, data_dir: evaluate on other data (None: the run's; a new dataset
        reads with source "auto" unless data_source is given).
      limit: first N examples (None: the run's limit_test / limit_train).
    Returns:
      Dataset(images float32 (N, H, W, C), labels int64 (N,), info), NumPy.
    Raises:
      DataError: missing data; RunFolderError: images of another shape than the model's input.
    """
    cfg2 = runinfo.data_config(cfg, dataset, data_source, data_dir)
    if limit is None:
        limit = cfg.limit_test if split == "test" else cfg.limit_train
    ds = data_lib.load_dataset(cfg2.dataset, split, limit=limit, **runinfo.data_kwargs(cfg2))
    runinfo.check_input_shape(cfg, tuple(ds.images.shape[1:]), ds.info)  # NCHW here
    images = ds.images.permute(0, 2, 3, 1).numpy()  # -> NHWC NumPy (the JAX twin: as loaded)
    return Dataset(np.ascontiguousarray(images), ds.labels.numpy().astype(np.int64), ds.info)


def evaluate_run(restored: Restored, data: Dataset, *, nll_samples: int = 0,
                 nll_limit: int | None = None) -> dict[str, Any]:
    """Test metrics of the restored model: the trainer's `evaluate` with its eval/NLL streams at
    the checkpoint's epoch, so on the run's own test set -ELBO, recon, KL, KL per dimension and
    active units equal the final test record (and the NLL too, for the same sample count).

    Args:
      restored: from `restore`.
      data: the test data (`load_run_dataset`).
      nll_samples: importance samples k (0: no NLL).
      nll_limit: estimate the NLL on the first N examples only (None: the run's `nll_limit`;
        0: all examples).
    Returns:
      {"loss" (-ELBO, nats/example), "recon", "kl", "bits_per_dim", "kl_per_dim", "active_units",
       "nll", "nll_samples", "nll_examples", "nll_bits_per_dim" (VAEs, when nll_samples > 0)}.
    Raises:
      DataError: images of another shape than the model's, not float, NaN/inf or outside [0, 1].
    """
    r = restored
    check_api_images(data.images, r.spec, where="evaluate_run: data.images")
    trainer = r.trainer
    if nll_limit is not None:
        trainer = dataclasses.replace(trainer, cfg=r.cfg.replace(nll_limit=nll_limit or None))
    return train_lib.evaluate(trainer, _nchw(data.images), seed=r.cfg.seed,
                              nll_samples=int(nll_samples), epoch=r.epoch)


def encode_means(model, images: np.ndarray, *, batch: int = 500) -> np.ndarray:
    """(N, D) posterior means (AE: codes) of NHWC images (DataError: see `evaluate_run`)."""
    check_api_images(images, model.spec, where="encode_means: images")
    return np.asarray(tfig.encode_means(model, _nchw(images), batch=batch))


def reconstruct(model, images: np.ndarray) -> np.ndarray:
    """NHWC reconstructions in [0, 1], decoded from the posterior mean (no sampling noise)."""
    check_api_images(images, model.spec, where="reconstruct: images")
    return tfig.reconstruct(model, _nchw(images))


def sample(model, n: int, seed: int) -> np.ndarray:
    """(n, H, W, C) images decoded from z ~ N(0, I) drawn with `torch.Generator().manual_seed(seed)`.

    The same seed gives different images in the JAX twin (different generators).
    """
    model.eval()
    with torch.no_grad():
        x = model.sample(int(n), generator=torch.Generator().manual_seed(int(seed)))
    return _nhwc(x, model.spec)


def interpolate(model, x0: np.ndarray, x1: np.ndarray, *, steps: int = 10,
                method: str = "linear") -> np.ndarray:
    """(steps, H, W, C) decoded along lerp/slerp between the posterior means of x0 and x1 (H, W, C)."""
    for name, x in (("x0", x0), ("x1", x1)):
        check_api_images(np.asarray(x)[None], model.spec, where=f"interpolate: {name}")
    a, b = _nchw(np.stack([x0, x1]))
    return tfig.interpolate(model, a, b, steps=steps, method=method)


def decode(model, z: np.ndarray) -> np.ndarray:
    """(N, H, W, C) images in [0, 1] (`model.generate`) of latents z (N, D)."""
    model.eval()
    with torch.no_grad():
        x = model.generate(torch.as_tensor(np.asarray(z, np.float32)))
    return _nhwc(x, model.spec)


def run_figure_arrays(restored: Restored, data: Dataset, **kw: Any) -> FigureArrays:
    """What `vaecommon.run_figures.write_run_figures` draws, with the trainer's figures stream
    (the same samples as the figures written at the end of training)."""
    check_api_images(data.images, restored.spec, where="run_figure_arrays: data.images")
    gen = stream_generator(restored.cfg.seed, "figures")
    return tfig.figure_arrays(restored.model, _nchw(data.images), data.labels, gen, **kw)


def canonical_weights(model) -> dict[str, np.ndarray]:
    """The model's weights in canonical (PyTorch) naming and layout (`torchvae.convert`)."""
    return convert.to_canonical(model)


def model_from_weights(cfg: TrainConfig, weights: Mapping[str, np.ndarray]):
    """The preset of `cfg` holding canonical `weights` (eval mode).

    Raises:
      WeightsMismatchError: missing/unexpected tensors or shapes (all named).
    """
    model = convert.from_canonical(cfg.model, weights, **cfg.model_overrides)
    model.eval()
    return model


def write_run_folder(workdir: str | Path, cfg: TrainConfig, weights: Mapping[str, np.ndarray],
                     *, converted_from: str) -> Path:
    """A torch run folder holding `weights`: config.json, one checkpoint (step 0, epoch 0,
    fresh optimizer state) and summary.md, readable by every command; `train` with the
    same settings continues from it.

    Raises:
      RunFolderError: `workdir` already holds a run; WeightsMismatchError: weights do not fit.
    """
    cfg = resolve(cfg)
    run = runs.RunFolder(workdir)
    if run.config_path.exists() or (run.checkpoints.is_dir() and any(run.checkpoints.iterdir())):
        raise runinfo.RunFolderError(f"{run.root} already holds a run; choose a new folder")
    trainer = train_lib.Trainer.create(cfg, cfg.batch_size)
    convert.load_canonical_into(trainer.model, weights)
    run.create()
    # The training streams are saved fresh, so `train` can resume (fine-tune) from this folder.
    gens = {s: stream_generator(cfg.seed, s) for s in ("eps", "binarize")}
    ckpt_lib.CheckpointManager(run.checkpoints, keep=cfg.keep_checkpoints).save(
        trainer, epoch=0, generators=gens, config=dataclasses.asdict(cfg))
    run.write_config(runinfo.config_record(
        cfg, framework=FRAMEWORK, converted_from=converted_from,
        versions=runs.versions("torch", "torchvision", "numpy")))
    run.write_summary(runinfo.converted_summary(cfg, framework=FRAMEWORK,
                                                 converted_from=converted_from))
    return run.root


def read_training_state(run_dir: str | Path, step: int | None = None, *,
                        best: bool = False) -> TrainingState:
    """The whole training state of a run folder's latest checkpoint (or `step`; `best`: its
    best-validation checkpoint) in canonical form (`vaecommon.weights.TrainingState`): weights,
    optimizer state, step, epoch, config.

    Raises:
      RunFolderError: see `restore`.
    """
    r = restore(run_dir, step, best=best)
    return convert.training_state_to_canonical(r.trainer, epoch=r.epoch)


def write_training_state(workdir: str | Path, ts: TrainingState, record: dict[str, Any], *,
                         best: TrainingState | None = None, converted_from: str) -> Path:
    """A torch run folder continuing the canonical training state `ts`: config.json (the source
    run's `record` with this framework), one checkpoint of the whole state at its step and epoch
    (and `best`, the best-validation state, in checkpoints/best) and summary.md; `train` with the
    run's settings resumes it (the eps and binarization generators are replayed to the step:
    `Trainer.init_state`).

    Raises:
      RunFolderError: `workdir` holds a run; WeightsMismatchError: the state does not fit.
    """
    def saver(cfg: TrainConfig, n_train: int):
        trainer = train_lib.Trainer.create(cfg, n_train)

        def prepare(s: TrainingState):
            convert.training_state_from_canonical(trainer, s)  # it fits (the trainer is reloaded
                                                               # from s when it is saved)
            def save(directory, keep):
                convert.training_state_from_canonical(trainer, s)
                # the eps and binarization streams as a torch run holds them after s.step steps
                gens = trainer.init_state(cfg.seed, s.step)
                ckpt_lib.CheckpointManager(directory, keep=keep).save(
                    trainer, epoch=s.epoch, generators=gens, config=dataclasses.asdict(cfg))
            return save
        return prepare

    return runinfo.write_state_folder(workdir, ts, record, best=best, converted_from=converted_from,
                                      framework=FRAMEWORK, versions=runs.versions(*train_lib.VERSIONS),
                                      saver=saver)


def save_torch_file(path: str | Path, weights: Mapping[str, np.ndarray]) -> Path:
    """Write canonical weights as a torch `state_dict` file (`torch.save`, tensors only), the
    counterpart of `torchvae.convert.load_torch_file`; written atomically.

    Torch only, like `load_torch_file` (no JAX twin): the JAX side's weights file is the
    canonical safetensors file (`vaecommon.weights`).
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    state = {k: torch.from_numpy(np.array(v, order="C")) for k, v in weights.items()}
    tmp = path.with_name(f".{path.name}.tmp")
    with open(tmp, "wb") as f:
        torch.save(state, f)
        f.flush()
        os.fsync(f.fileno())
    os.replace(tmp, path)
    return path


def _nchw(images: np.ndarray) -> torch.Tensor:
    # NHWC NumPy (the commands' layout) -> NCHW tensor (this framework's); the JAX twin keeps NHWC
    return torch.from_numpy(np.ascontiguousarray(np.asarray(images, np.float32).transpose(0, 3, 1, 2)))


def _nhwc(x: torch.Tensor, spec: ModelSpec) -> np.ndarray:
    # NCHW images (conv decoders) -> NHWC; flat MLP outputs reshape directly (C=1: same order)
    x = x.detach().cpu()
    if x.dim() == 4:
        x = x.permute(0, 2, 3, 1)
    return as_nhwc(x.numpy(), spec)
