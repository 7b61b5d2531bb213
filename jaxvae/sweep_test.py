"""Tests of the member axis of `jaxvae.train.train_and_evaluate` (sweeps): members of one vmapped program compute what their configs compute
alone, write complete run folders, and resume like a single run."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

from jaxvae import train
from vaecommon import lifecycle
from jaxvae.train_test import _final_params, _leaves  # a member's checkpoint reads like a run's
from vaecommon import runs
from vaecommon.config import TrainConfig, resolve

SMALL = TrainConfig(model="pytorch_examples", dataset="mnist5k", limit_train=256, limit_test=100,
                    batch_size=32, epochs=2, final_nll_samples=0, eval_batch_size=100)
N_TRAIN = 256


def _batch_losses(folder: Path) -> list[float]:
    return [r["loss"] for r in runs.read_metrics(folder) if r["type"] == "batch"]


def test_member_configs_zip_the_value_lists():
    cfg = SMALL.replace(objective="beta_vae", objective_params={"beta": 1.0})
    cfgs, keys = lifecycle.member_configs(cfg, {"seed": [3, 4], "lr": [1e-3, 2e-3], "beta": [2, 8]})
    assert keys == ["beta"]
    assert [(c.seed, c.lr, c.objective_params["beta"]) for c in cfgs] == [(3, 1e-3, 2.0), (4, 2e-3, 8.0)]
    assert all(c == resolve(c) for c in cfgs), "members are resolved configs"


@pytest.mark.parametrize("values, message", [
    ({}, "at least one NAME=V1,V2"),
    ({"seed": [0, 1], "lr": [1e-3]}, "equal length.*'seed': 2, 'lr': 1"),
    ({"seed": []}, "non-empty"),
    ({"beta": ["a", "b"]}, "cannot sweep 'beta'.*float objective parameters"),
    ({"beta": [True, False]}, "cannot sweep 'beta'"),
])
def test_member_configs_reject_bad_sweeps(values, message):
    with pytest.raises(ValueError, match=message):
        lifecycle.member_configs(SMALL.replace(objective="beta_vae"), values)


def _no_figures(monkeypatch):
    """Skip the PNGs (~4 s per run folder) where a test is not about them."""
    from jaxvae import figure_data as jfig
    from vaecommon import plots

    monkeypatch.setattr(jfig, "write_run_figures", lambda *a, **k: None)
    monkeypatch.setattr(plots, "plot_sweep_curves", lambda *a, **k: None)


def test_each_member_computes_its_solo_run(tmp_path, monkeypatch):
    """A 2-member sweep over seed, lr and beta together: each member's batch losses, final
    parameters and optimizer state match `train_and_evaluate` of its config alone (vmap batches the
    arithmetic only), and the members differ from each other (so the comparison can fail)."""
    cfg = SMALL.replace(objective="beta_vae", objective_params={"beta": 1.0}, epochs=1)
    values = {"seed": [0, 1], "lr": [1e-3, 3e-3], "beta": [1.0, 4.0]}
    out = train.train_and_evaluate(cfg, tmp_path / "sweep", sweep=values, progress=False)
    cfgs, _ = lifecycle.member_configs(cfg, values)
    member_losses = []
    _no_figures(monkeypatch)  # the solo runs' figures are not compared
    for i, c in enumerate(cfgs):
        solo = train.train_and_evaluate(c, tmp_path / f"solo{i}", progress=False)
        folder = tmp_path / "sweep" / f"member_{i}"
        got, want = _batch_losses(folder), _batch_losses(tmp_path / f"solo{i}")
        assert len(got) == len(want) == N_TRAIN // 32
        np.testing.assert_allclose(got, want, rtol=2e-5)
        member_losses.append(got)
        a, meta = _final_params(folder, c)
        b, _ = _final_params(tmp_path / f"solo{i}", c)
        assert int(a.step) == int(b.step) == 8 and meta["epoch"] == 1
        for u, v in zip(_leaves((a.params, a.opt_state)), _leaves((b.params, b.opt_state))):
            np.testing.assert_allclose(u, v, rtol=1e-4, atol=1e-6)
        assert out["members"][i]["loss"] == pytest.approx(solo["loss"], rel=1e-4)
        # the member's folder is a complete run folder
        record = json.loads((folder / "config.json").read_text())
        assert record["framework"] == "jax" and record["config"]["seed"] == c.seed
        assert record["sweep"] == {"seed": ["0", "1"], "lr": ["0.001", "0.003"], "beta": ["1.0", "4.0"]}
        assert [r["epoch"] for r in runs.read_metrics(folder) if r["type"] == "test"] == [1]
        assert {"loss_curves.png", "samples.png"} <= {p.name for p in (folder / "figures").glob("*.png")}
    assert abs(member_losses[0][-1] - member_losses[1][-1]) > 1.0, member_losses
    assert (tmp_path / "sweep" / "figures" / "sweep_curves.png").stat().st_size > 0
    summary = runs.RunFolder(tmp_path / "sweep").summary_path.read_text()
    assert "2 members" in summary and "member_1 seed=1,lr=0.003,beta=4.0" in summary


def test_sweep_resume_is_bit_identical_and_refuses_a_changed_member(tmp_path, monkeypatch):
    _no_figures(monkeypatch)
    cfg = SMALL.replace(epochs=2, eval_every=0, binarization="dynamic")
    values = {"seed": [0, 1]}
    train.train_and_evaluate(cfg, tmp_path / "straight", sweep=values, progress=False)

    class Stop(Exception):
        pass

    def stop_after_one(epoch, state):
        if epoch == 1:
            raise Stop

    with pytest.raises(Stop):
        train.train_and_evaluate(cfg, tmp_path / "resumed", sweep=values, progress=False, on_epoch=stop_after_one)
    # bookkeeping fields may change on resume, as for a single run
    train.train_and_evaluate(cfg.replace(checkpoint_every=2), tmp_path / "resumed", sweep=values, progress=False)
    cfgs, _ = lifecycle.member_configs(cfg, values)
    for i, c in enumerate(cfgs):
        a, _ = _final_params(tmp_path / "straight" / f"member_{i}", c)
        b, _ = _final_params(tmp_path / "resumed" / f"member_{i}", c)
        assert int(a.step) == int(b.step) == 16
        for u, v in zip(_leaves((a.params, a.opt_state)), _leaves((b.params, b.opt_state))):
            assert np.array_equal(u, v), "a resumed sweep must end bit-identical on CPU"
        steps = [r["step"] for r in runs.read_metrics(tmp_path / "resumed" / f"member_{i}")
                 if r["type"] == "batch"]
        assert steps == list(range(1, 17)), "records of the interrupted epoch 2 are not duplicated"
        assert _batch_losses(tmp_path / "resumed" / f"member_{i}") == \
            _batch_losses(tmp_path / "straight" / f"member_{i}")

    # a config that trains differently is refused, and nothing saved is touched
    before = (tmp_path / "straight" / "member_0" / "metrics.jsonl").read_text()
    with pytest.raises(ValueError, match=r"member_0.*different config \(lr: 0.001 -> 0.5\)"):
        train.train_and_evaluate(cfg.replace(lr=0.5), tmp_path / "straight", sweep=values, progress=False)
    assert (tmp_path / "straight" / "member_0" / "metrics.jsonl").read_text() == before
