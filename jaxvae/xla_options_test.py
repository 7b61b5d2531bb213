"""jaxvae.xla_options: the CPU compile options (convolutions off YNNPACK), the cases that keep
jaxlib's defaults, and that the trainer's conv epoch compiles with them and computes the same."""
from __future__ import annotations

import re

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from jaxvae import train, xla_options
from vaecommon.config import TrainConfig, resolve
from vaecommon.schedule import epoch_batches

CONV = "LIBRARY_FUSION_TYPE_INDIVIDUAL_CONVOLUTION"


@pytest.fixture(autouse=True)
def _clean_env(monkeypatch):
    monkeypatch.delenv("JAXVAE_XLA_DEFAULTS", raising=False)
    monkeypatch.delenv("XLA_FLAGS", raising=False)


def test_cpu_options_drop_only_the_convolutions():
    default = xla_options._default_ynn_fusion()
    if not default or CONV not in default:
        pytest.skip(f"this jaxlib's YNNPACK fusion list {default} has no {CONV}: nothing to drop")
    opts = xla_options.compiler_options("cpu")
    assert set(opts) == {xla_options.YNN_FUSION}
    kept = opts[xla_options.YNN_FUSION].split(",")
    assert set(kept) == set(default) - {CONV} and CONV not in kept


def test_defaults_are_kept_where_they_should_be(monkeypatch):
    assert xla_options.compiler_options("gpu") is None and xla_options.compiler_options("tpu") is None
    monkeypatch.setenv("JAXVAE_XLA_DEFAULTS", "1")
    assert xla_options.compiler_options("cpu") is None
    monkeypatch.delenv("JAXVAE_XLA_DEFAULTS")
    monkeypatch.setenv("XLA_FLAGS", "--xla_cpu_experimental_ynn_fusion_type=+eltwise")
    assert xla_options.compiler_options("cpu") is None  # the user's own setting wins
    monkeypatch.setattr(xla_options, "_default_ynn_fusion", lambda: None)  # an unknown jaxlib
    monkeypatch.delenv("XLA_FLAGS")
    assert xla_options.compiler_options("cpu") is None


def _ynn_convolutions(hlo: str) -> int:
    """Convolutions inside a YNNPACK fusion of compiled HLO text."""
    called = set(re.findall(r"calls=(%[\w.-]+)[^\n]*__ynn", hlo))
    comps = re.split(r"\n(?=\S)", hlo)
    return sum(c.count("convolution(") for c in comps if c.split(" ", 1)[0] in called)


@pytest.mark.skipif(jax.default_backend() != "cpu", reason="the options are CPU's")
def test_conv_epoch_compiles_off_ynnpack_and_trains_the_same():
    if not xla_options.compiler_options():
        pytest.skip("this jaxlib keeps its defaults (see test_cpu_options_drop_only_the_convolutions)")
    cfg = resolve(TrainConfig(model="conv_vae", batch_size=16, epochs=1))
    images = np.random.default_rng(0).uniform(0, 1, (64, 28, 28, 1)).astype(np.float32)
    x = jnp.asarray(images)
    idx = jnp.asarray(epoch_batches(cfg.seed, 0, 64, cfg.batch_size))
    results, hlos = [], []
    for jit in (xla_options.jit, jax.jit):  # the trainer's options, then jaxlib's defaults
        trainer = train.Trainer.create(cfg, 64)
        root = jax.random.key(cfg.seed)
        fn = jit(lambda s, i: trainer.train_epoch(s, x, i, root))
        compiled = fn.lower(trainer.init_state(root), idx).compile()
        hlos.append(compiled.as_text())
        state, terms = compiled(trainer.init_state(root), idx)
        results.append((np.asarray(terms["loss"]), [np.asarray(p) for p in jax.tree.leaves(state.params)]))
    assert _ynn_convolutions(hlos[0]) == 0 and hlos[0].count("convolution(") >= 10
    assert _ynn_convolutions(hlos[1]) > 0  # the check sees YNNPACK convolutions where they are
    (loss_a, params_a), (loss_b, params_b) = results
    np.testing.assert_allclose(loss_a, loss_b, rtol=1e-5)  # the same maths, other kernels
    for a, b in zip(params_a, params_b):
        np.testing.assert_allclose(a, b, rtol=1e-4, atol=1e-6)
