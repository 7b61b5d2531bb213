"""Soak test (slow): many short runs with random valid configs, in both trainers.

Hypothesis draws a preset, objective, likelihood, optimizer, learning rate, batch size and
binarization; each run trains one short epoch on embedded data and must finish with finite
metrics, or stop with the trainer's own NonFiniteLossError (a named, handled outcome) — never
crash. Run with `pytest -m slow parity_tests/test_soak.py` (SOAK_EXAMPLES=N for more or fewer).
"""

from __future__ import annotations

import math
import os

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from jaxvae import train as jtrain
from torchvae import train as ttrain
from vaecommon import runs
from vaecommon.config import TrainConfig

MLP_VAES = ["pytorch_examples", "flax_examples", "pytorch_mnist_vae", "leaky_vae", "leaky_vae_256",
            "simple_vae"]
OBJECTIVES = {
    "elbo": {}, "beta_vae": {"beta": 4.0}, "kl_warmup": {"warmup_steps": 5},
    "cyclical": {"cycle_steps": 4}, "capacity": {"c_steps": 8, "gamma": 10.0},
    "free_bits": {"lam": 0.5}, "beta_tcvae": {"dataset_size": 128}, "dip_vae_i": {},
    "dip_vae_ii": {}, "info_vae": {"prior_samples": 16}, "iwae": {"k": 3},
}
LIKELIHOODS = ["bernoulli", "bce_probs", "continuous_bernoulli", "mse_sum", "gaussian",
               "gaussian_learned", "gaussian_calibrated"]

configs = st.builds(
    lambda model, objective, likelihood, optimizer, lr, batch, binarization, clamp, seed: TrainConfig(
        model=model, objective=objective, objective_params=OBJECTIVES[objective],
        likelihood=likelihood, optimizer=optimizer, lr=lr, batch_size=batch,
        binarization=binarization, logvar_clamp=clamp, seed=seed, epochs=1, limit_train=128,
        limit_test=32, eval_batch_size=32, final_nll_samples=4, checkpoint_every=0,
        keep_checkpoints=1),
    model=st.sampled_from(MLP_VAES), objective=st.sampled_from(sorted(OBJECTIVES)),
    likelihood=st.sampled_from(LIKELIHOODS), optimizer=st.sampled_from(["adam", "adamw", "sgd"]),
    lr=st.sampled_from([1e-4, 1e-3, 1e-2]), batch=st.sampled_from([16, 32, 64]),
    binarization=st.sampled_from(["none", "static", "dynamic"]),
    clamp=st.sampled_from([None, 10.0]), seed=st.integers(0, 2**16),
)


def _check(result, workdir):
    recs = runs.read_metrics(workdir)
    assert recs, "metrics must be written"
    assert math.isfinite(result["loss"]), result


@pytest.mark.slow
@settings(max_examples=int(os.environ.get("SOAK_EXAMPLES", 25)), deadline=None, suppress_health_check=list(HealthCheck))
@given(cfg=configs)
def test_random_configs_finish_without_crash(tmp_path_factory, cfg):
    for name, trainer in (("jax", jtrain), ("torch", ttrain)):
        workdir = tmp_path_factory.mktemp(name)
        try:
            result = trainer.train_and_evaluate(cfg, workdir, progress=False)
        except trainer.NonFiniteLossError as e:  # a handled, named stop (e.g. lr 1e-2 with sgd)
            assert "non-finite loss at epoch 1" in str(e)
            continue
        _check(result, workdir)
