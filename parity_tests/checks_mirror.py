"""The twins mirror each other: presets, public names, registries, config, parameter counts, and
import isolation (jaxvae never loads torch, torchvae never loads jax, vaecommon loads neither).

Every check is a function returning `Measurement`s (pass/fail properties; parameter counts as
numbers), called by test_mirror.py and by `parity_tests.report` (no pytest here).

Public names: `jaxvae.X.__all__` and `torchvae.X.__all__` are the same list in the same order
(STYLE §1: `diff` of the twins is meaningful) for X in models, losses, data, train, convert,
figure_data, streams, optim, checkpoint, api, multiprocess, except the framework-only names in `FRAMEWORK_ONLY`, each with its reason; the
allowlist must stay exact (a stale entry fails). losses and data are also asserted by
test_losses / test_data; test_mirror covers the other four (the report shows all six).
"""

from __future__ import annotations

import importlib
import pkgutil
import subprocess
import sys
import textwrap
from pathlib import Path

import torch
from flax import nnx

import jaxvae
import torchvae
from jaxvae import losses as jlosses
from jaxvae import models as jmodels
from jaxvae import streams as jstreams
from jaxvae import train as jtrain
from parity_tests.twins import Measurement, flag, measure
from torchvae import losses as tlosses
from torchvae import models as tmodels
from torchvae import streams as tstreams
from torchvae import train as ttrain
from vaecommon import config as config_lib
from vaecommon import presets

REPO = Path(__file__).resolve().parents[1]
MIRRORED = ("models", "losses", "data", "train", "convert", "figure_data", "streams", "optim",
            "checkpoint", "api", "multiprocess")

# (module, framework) -> {public name only that twin has: why}.
FRAMEWORK_ONLY: dict[tuple[str, str], dict[str, str]] = {
    ("train", "jax"): {
        "TrainState": "the JAX trainer's state is a pure pytree passed through jit/scan; the torch "
                      "Trainer holds its model and optimizer as attributes",
    },
    ("convert", "torch"): {
        "load_torch_file": "reads a notebook's torch.save checkpoint (a torch-only file format)",
    },
    ("convert", "jax"): {
        "linen_to_canonical": "maps a Flax Linen params tree (a JAX-only model format) onto "
                              "canonical weights",
        "load_linen_file": "reads a Linen params tree from flax.serialization msgpack or Orbax "
                           "(JAX-only file formats)",
    },
    ("api", "jax"): {
        "load_linen_file": "the command API's reader of Flax Linen params trees (JAX-only formats)",
    },
    ("api", "torch"): {
        "load_torch_file": "the command API's reader of torch.save files (a torch-only format)",
        "save_torch_file": "writes a torch state_dict file (a torch-only format); the JAX side's "
                           "weights file is the framework-free canonical one",
    },
    ("streams", "jax"): {"stream_key": "a stream is a folded PRNG key in JAX"},
    ("streams", "torch"): {"stream_generator": "a stream is a seeded torch.Generator in torch"},
    ("optim", "jax"): {
        "AdamNormGradState": "optax keeps an optimizer's state in an explicit pytree",
        "scale_by_adam_norm_grad": "an optax transformation (the learning rate applied outside, "
                                   "so a sweep can vmap it)",
    },
    ("optim", "torch"): {"AdamNormGrad": "a torch.optim.Optimizer holds its own state"},
    ("multiprocess", "jax"): {
        "global_batches": "builds the sharded global array from each process's rows "
                          "(jax.make_array_from_process_local_data); torch keeps local tensors",
        "replicate": "puts a pytree on every device of the multi-process mesh; torch replicas "
                     "are plain modules, kept equal by the gradient all-reduce",
        "local_copy": "a replicated jax.Array's local shard for single-process work; torch "
                      "tensors are always local",
    },
    ("multiprocess", "torch"): {
        "local_batch": "slices this process's rows of the global batch and its noise; JAX's "
                       "global_batches and the sharded step do this",
        "average_gradients": "the explicit gradient all-reduce; in JAX the sharded step's "
                             "compiled program all-reduces",
        "global_terms": "all-reduces the logged loss terms; JAX computes them on the global batch",
        "gather_rows": "gathers the posterior of the global batch for the diagnostics; JAX "
                       "computes them on the global batch",
        "check_supported": "refuses batch-statistic objectives and BatchNorm, which the torch "
                           "split cannot reproduce; JAX computes on the global batch",
        "PER_EXAMPLE_OBJECTIVES": "the objectives check_supported accepts (JAX takes all)",
    },
}


def _mod(pkg: str, name: str):
    return importlib.import_module(f"{pkg}.{name}")


# ---- presets, public names, registries, config ---------------------------------------------------


def check_presets() -> list[Measurement]:
    want = list(presets.PRESETS)
    return [flag(jmodels.list_models() == want, check="mirror", preset="-",
                 name="jaxvae list_models() == PRESETS", message=f"{jmodels.list_models()} vs {want}"),
            flag(tmodels.list_models() == want, check="mirror", preset="-",
                 name="torchvae list_models() == PRESETS", message=f"{tmodels.list_models()} vs {want}")]


def check_public_names(module: str) -> list[Measurement]:
    """Same __all__ in the same order (minus FRAMEWORK_ONLY), every name defined, docstrings
    naming the twin."""
    j, t = _mod("jaxvae", module), _mod("torchvae", module)
    out = []
    only = {fw: FRAMEWORK_ONLY.get((module, fw), {}) for fw in ("jax", "torch")}
    for fw, m in (("jax", j), ("torch", t)):
        names = list(getattr(m, "__all__", []))
        missing = [n for n in names if not hasattr(m, n)]
        stale = [n for n in only[fw] if n not in names]
        out.append(flag(bool(names) and not missing, check="mirror", preset="-",
                        name=f"{fw} {module}.__all__ defined", message=f"undefined: {missing}"))
        out.append(flag(not stale, check="mirror", preset="-",
                        name=f"{fw} {module}: FRAMEWORK_ONLY entries still exist",
                        message=f"stale allowlist entries {stale}: remove them from FRAMEWORK_ONLY"))
    jn = [n for n in j.__all__ if n not in only["jax"]]
    tn = [n for n in t.__all__ if n not in only["torch"]]
    out.append(flag(jn == tn, check="mirror", preset="-",
                    name=f"{module}.__all__ same names, same order",
                    message=f"jax-only {[n for n in jn if n not in tn]}, torch-only "
                            f"{[n for n in tn if n not in jn]}, order jax {jn} vs torch {tn}"))
    for fw, m, twin in (("jax", j, "torchvae"), ("torch", t, "jaxvae")):
        doc = m.__doc__ or ""
        out.append(flag(f"{twin}/{module}.py" in doc or f"{twin}.{module}" in doc, check="mirror",
                        preset="-", name=f"{fw} {module} docstring names its twin",
                        message=f"no mention of {twin}/{module}.py in the module docstring"))
    return out


def check_registries() -> list[Measurement]:
    """Objective and reconstruction registries: same keys in the same order, same input kinds,
    same extra-noise shapes for every objective."""
    out = [
        flag(list(jlosses.OBJECTIVES) == list(tlosses.OBJECTIVES), check="mirror", preset="-",
             name="OBJECTIVES keys and order",
             message=f"{list(jlosses.OBJECTIVES)} vs {list(tlosses.OBJECTIVES)}"),
        flag(list(jlosses.RECONSTRUCTION) == list(tlosses.RECONSTRUCTION), check="mirror", preset="-",
             name="RECONSTRUCTION keys and order",
             message=f"{list(jlosses.RECONSTRUCTION)} vs {list(tlosses.RECONSTRUCTION)}"),
        flag(all(jlosses.RECONSTRUCTION[k][1] == tlosses.RECONSTRUCTION[k][1]
                 for k in jlosses.RECONSTRUCTION if k in tlosses.RECONSTRUCTION),
             check="mirror", preset="-", name="RECONSTRUCTION input kinds"),
    ]
    params = {"k": 7, "prior_samples": 9}
    shapes = {o: (jlosses.extra_noise_shape(o, 4, 3, **params), tlosses.extra_noise_shape(o, 4, 3, **params))
              for o in jlosses.OBJECTIVES}
    bad = {o: s for o, s in shapes.items() if s[0] != s[1]}
    out.append(flag(not bad, check="mirror", preset="-", name="extra_noise_shape per objective",
                    message=f"differ: {bad}"))
    out.append(flag(all(s[0] is None or s[0][-1] == 3 for s in shapes.values()), check="mirror",
                    preset="-", name="extra noise ends in the latent dim"))
    return out


def check_train_config() -> list[Measurement]:
    """One TrainConfig class, resolved identically by both trainers; the same stream table."""
    cfg = config_lib.TrainConfig(model="simple_ae", batch_size=8, epochs=1)
    jt, tt = jtrain.Trainer.create(cfg, 16), ttrain.Trainer.create(cfg, 16)
    return [
        flag(jtrain.TrainConfig is ttrain.TrainConfig is config_lib.TrainConfig, check="mirror",
             preset="-", name="both trainers import vaecommon.config.TrainConfig"),
        flag(jt.cfg == tt.cfg == config_lib.resolve(cfg), check="mirror", preset="-",
             name="Trainer.create resolves the config identically",
             message=f"jax {jt.cfg} vs torch {tt.cfg}"),
        flag(jt.steps_per_epoch == tt.steps_per_epoch == 2, check="mirror", preset="-",
             name="steps_per_epoch"),
        flag(jstreams.STREAMS is tstreams.STREAMS, check="mirror", preset="-", name="STREAMS",
             message="both twins' streams use vaecommon.schedule.STREAMS"),
        flag(all(hasattr(jtrain.Trainer, a) and hasattr(ttrain.Trainer, a)
                 for a in ("create", "apply_update", "loss_fn", "draw_noise")),
             check="mirror", preset="-", name="Trainer methods create/apply_update/loss_fn/draw_noise"),
    ]


def check_param_counts(preset: str) -> list[Measurement]:
    """Trainable parameters of the default build: jax == torch == the preset table's count.

    Shapes only (JAX `nnx.eval_shape`, torch's meta device), so the 63M-parameter glasses VAE
    costs nothing; BatchNorm running statistics are buffers and not counted.
    """
    spec = presets.get_spec(preset)
    jm = nnx.eval_shape(lambda: jmodels.build_model(preset, key=0))
    with torch.device("meta"):
        tm = tmodels.FAMILIES[spec.family](spec)
    j, t = jmodels.num_params(jm), tmodels.num_params(tm)
    named_j = {k for k, _ in nnx.to_flat_state(nnx.state(jm, nnx.Param))}
    return [measure(j, t, check="param_counts", preset=preset, name="jax vs torch", tol="weight_roundtrip"),
            measure(t, spec.params, check="param_counts", preset=preset, name="torch vs PRESETS table",
                    tol="weight_roundtrip"),
            flag(len(named_j) == len(list(tm.parameters())), check="param_counts", preset=preset,
                 name="same number of parameter tensors",
                 message=f"jax {len(named_j)} vs torch {len(list(tm.parameters()))}")]


# ---- import isolation --------------------------------------------------------------------------------


def _submodules(pkg) -> list[str]:
    """Every non-test module of a package (imported by name in the subprocess); conftest.py
    files (pytest's tier marks) are test code."""
    return [f"{pkg.__name__}.{m.name}" for m in pkgutil.iter_modules(pkg.__path__)
            if not m.name.endswith("_test") and not m.name.startswith("test_")
            and m.name != "conftest"]


def _vaecommon_modules() -> list[str]:
    import vaecommon

    return ["vaecommon"] + _submodules(vaecommon)


ISOLATION = {
    # package -> (modules to import, frameworks that must stay out of sys.modules)
    "jaxvae": (lambda: ["jaxvae"] + _submodules(jaxvae), ("torch", "torchvae")),
    "torchvae": (lambda: ["torchvae"] + _submodules(torchvae), ("jax", "jaxlib", "flax", "jaxvae")),
    "vaecommon": (_vaecommon_modules, ("jax", "jaxlib", "flax", "torch", "jaxvae", "torchvae")),
}


def check_import_isolation(package: str) -> list[Measurement]:
    """Import every module of `package` in a fresh interpreter; the other framework must not load."""
    modules, forbidden = ISOLATION[package]
    modules = modules()
    code = textwrap.dedent(f"""
        import importlib, sys
        for m in {modules!r}:
            importlib.import_module(m)
        print(sorted(k for k in sys.modules if k.split('.')[0] in {forbidden!r}))
    """)
    proc = subprocess.run([sys.executable, "-c", code], cwd=REPO, capture_output=True, text=True,
                          timeout=300)
    if proc.returncode != 0:
        return [flag(False, check="import_isolation", preset="-", name=f"import {package}.*",
                     message=proc.stderr[-2000:])]
    loaded = proc.stdout.strip().splitlines()[-1]
    return [flag(loaded == "[]", check="import_isolation", preset="-",
                 name=f"{package}.* ({len(modules)} modules) loads none of {', '.join(forbidden)}",
                 message=f"loaded {loaded}")]
