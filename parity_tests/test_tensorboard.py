"""TensorBoard event files: both trainers write the same tags, and the values are the run's own
metrics.jsonl numbers (read back from the event files' protocol buffers)."""

from __future__ import annotations

import numpy as np
import pytest

from jaxvae import train as jtrain
from torchvae import train as ttrain
from vaecommon import runs
from vaecommon import tensorboard as tb
from vaecommon.config import TrainConfig

pytest.importorskip("tensorboardX", reason="TensorBoard output needs the tensorboard extra")
pytestmark = pytest.mark.integration  # two training runs (tiers: jaxvae/conftest.py)

CFG = TrainConfig(model="pytorch_examples", batch_size=32, epochs=2, limit_train=128, limit_test=64,
                  final_nll_samples=4, init="torch")


@pytest.fixture(scope="module")
def two_runs(tmp_path_factory):
    root = tmp_path_factory.mktemp("tb")
    jtrain.train_and_evaluate(CFG, root / "jax", progress=False)
    ttrain.train_and_evaluate(CFG, root / "torch", progress=False)
    return root / "jax", root / "torch"


@pytest.mark.parametrize("fw", [0, 1], ids=["jax", "torch"])
def test_events_hold_the_metrics(two_runs, fw):
    run = two_runs[fw]
    scalars = tb.read_scalars(run)
    recs = runs.read_metrics(run)
    batch = [(r["step"], r["loss"]) for r in recs if r["type"] == "batch"]
    assert [s for s, _ in scalars["batch/loss"]] == [s for s, _ in batch] == list(range(1, 9))
    np.testing.assert_allclose([v for _, v in scalars["batch/loss"]], [v for _, v in batch], rtol=1e-6)
    tests = [r for r in recs if r["type"] == "test"]
    np.testing.assert_allclose([v for _, v in scalars["test/loss"]], [r["loss"] for r in tests], rtol=1e-6)
    assert [s for s, _ in scalars["test/loss"]] == [4, 8]
    np.testing.assert_allclose(scalars["test/kl_dim/19"][-1][1], tests[-1]["kl_per_dim"][19], rtol=1e-6)
    assert scalars["test/nll"][-1][1] == pytest.approx(tests[-1]["nll"], rel=1e-6)
    kinds = {v.tag: v.WhichOneof("value") for ev in tb.read_events(run) for v in ev.summary.value}
    assert kinds["test/kl_per_dim"] == "histo"
    assert kinds["images/reconstructions"] == kinds["images/samples"] == "image"


def test_both_frameworks_write_the_same_tags(two_runs):
    jtags, ttags = (set(tb.read_scalars(r)) for r in two_runs)
    assert jtags == ttags
    assert {"batch/loss", "batch/grad_norm", "train/loss", "train/examples_per_s", "test/loss",
            "test/bits_per_dim", "test/active_units"} <= jtags
