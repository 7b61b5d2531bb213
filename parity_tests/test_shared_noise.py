"""Shared-noise runs (TrainConfig.noise "shared"): a JAX run and a torch run of one config draw
their initial weights, reparameterization noise and dynamic binarization from one NumPy stream
(`vaecommon.schedule.shared_epoch_noise`, `vaecommon.weights.shared_torch_init`), so their
training curves agree step by step up to float arithmetic; the default streams are unchanged."""

from __future__ import annotations

import numpy as np
import pytest

from jaxvae import train as jtrain
from torchvae import train as ttrain
from vaecommon import runs
from vaecommon.config import ConfigError, TrainConfig

TRAIN = {"jax": jtrain, "torch": ttrain}
BASE = TrainConfig(batch_size=32, epochs=2, limit_train=256, limit_test=64, final_nll_samples=0,
                   noise="shared", init="torch")
CASES = {  # one MLP, one with dynamic binarization and AdamNormGrad, one convolutional
    "pytorch_examples": BASE.replace(model="pytorch_examples"),
    "exemplar_vae": BASE.replace(model="exemplar_vae", lr=1e-3,
                                 objective_params={"kl_estimate": "single_sample"}),
    "conv_vae": BASE.replace(model="conv_vae"),
}


def _curve(path):
    return np.array([r["loss"] for r in runs.read_metrics(path) if r["type"] == "batch"])


@pytest.mark.parametrize("model", sorted(CASES))
def test_jax_and_torch_follow_one_trajectory(tmp_path, model):
    for fw, train in TRAIN.items():
        train.train_and_evaluate(CASES[model], tmp_path / fw, progress=False)
    jax_curve, torch_curve = _curve(tmp_path / "jax"), _curve(tmp_path / "torch")
    assert len(jax_curve) == len(torch_curve) == 16
    # independent streams would differ by percents from the first step (different weights)
    np.testing.assert_allclose(jax_curve, torch_curve, rtol=1e-4)
    # the test -ELBO shares its Monte Carlo eps too (vaecommon.schedule.shared_eval_noise)
    tests = [[r["loss"] for r in runs.read_metrics(tmp_path / fw) if r["type"] == "test"]
             for fw in TRAIN]
    np.testing.assert_allclose(tests[0], tests[1], rtol=1e-4)
    jt, tt = ([r for r in runs.read_metrics(tmp_path / fw) if r["type"] == "test"][-1]
              for fw in TRAIN)
    for k in ("mutual_info", "total_correlation"):  # the test set's collapse diagnostics
        assert abs(jt[k] - tt[k]) <= 1e-3 * max(1.0, abs(tt[k])), (k, jt[k], tt[k])


def test_native_streams_differ_and_shared_needs_the_torch_init(tmp_path):
    native = BASE.replace(model="pytorch_examples", noise="native", epochs=1)
    for fw, train in TRAIN.items():
        train.train_and_evaluate(native, tmp_path / fw, progress=False)
    assert abs(_curve(tmp_path / "jax")[0] / _curve(tmp_path / "torch")[0] - 1) > 1e-3
    with pytest.raises(ConfigError, match=r"TrainConfig.init.*'torch' with noise 'shared'"):
        jtrain.train_and_evaluate(BASE.replace(model="pytorch_examples", init="default"),
                                  tmp_path / "bad", progress=False)
    assert not (tmp_path / "bad").exists()


def test_a_resumed_shared_noise_run_continues_exactly(tmp_path):
    cfg = CASES["exemplar_vae"]
    jtrain.train_and_evaluate(cfg, tmp_path / "straight", progress=False)
    jtrain.train_and_evaluate(cfg.replace(epochs=1), tmp_path / "split", progress=False)
    jtrain.train_and_evaluate(cfg, tmp_path / "split", progress=False)
    np.testing.assert_array_equal(_curve(tmp_path / "straight"), _curve(tmp_path / "split"))
