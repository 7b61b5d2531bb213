"""Tests of the member axis of `jaxvae.train.train_and_evaluate` (sweeps): members of one vmapped program compute what their configs compute
alone, write complete run folders, and resume like a single run."""

from __future__ import annotations

import json
from pathlib import Path

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from jaxvae import bench, train
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


def _conds(jaxpr) -> int:
    """The number of `cond` equations in a jaxpr, nested jaxprs (scan, pjit, ...) included."""
    return sum(eqn.primitive.name == "cond" for eqn in bench.equations(jaxpr))


def test_a_sweep_keeps_the_sampled_diagnostics_a_cond(monkeypatch):
    """The 1-in-8 MI/TC estimates (`lifecycle.sampled_step`) are a `lax.cond` on the step. In a
    vmapped sweep every member's step is batched, and a batched predicate turns the cond into a
    select that computes both branches on every step; the sweep's program decides from member
    0's step, unbatched (the members train in lockstep), so the cond stays."""
    cfg = resolve(SMALL)
    trainer = train.Trainer.create(cfg, N_TRAIN)
    states = [trainer.init_state(jax.random.key(s)) for s in (0, 1)]
    state = jax.tree.map(lambda *xs: jnp.stack(xs), *states)
    images = jnp.zeros((N_TRAIN, 28, 28, 1), jnp.float32)
    idx = jnp.stack([jnp.asarray(trainer.batch_indices(0, N_TRAIN))] * 2)
    keys = jnp.stack([jax.random.key(0), jax.random.key(1)])
    hyper = {"lr": jnp.full((2,), cfg.lr, jnp.float32)}
    bar = lifecycle.Progress(False, total=1, initial=0)
    program = train._epoch_program(trainer, images, 2, bar)
    assert _conds(program.trace(state, idx, keys, hyper, None).jaxpr.jaxpr) == 1
    # the same vmap deciding from the batched step has none left: what the test guards against
    batched = jax.vmap(lambda s, i, k, h: trainer.train_epoch(s, images, i, k, h))
    assert _conds(jax.make_jaxpr(batched)(state, idx, keys, hyper).jaxpr) == 0


def test_sweep_members_sample_the_diagnostics_on_their_solo_runs_steps(tmp_path, monkeypatch):
    """5 steps per epoch (160 examples, batch 32), 2 epochs: MI/TC are computed on 0-based steps
    0 and 8, the second in the middle of epoch 2. Each member's batch records carry them on the
    same steps as its solo run, with the same values (a wrong step would read 0 there)."""
    cfg = SMALL.replace(limit_train=160, batch_log_every=1)
    values = {"seed": [0, 1]}
    _no_figures(monkeypatch)
    train.train_and_evaluate(cfg, tmp_path / "sweep", sweep=values, progress=False)
    for i, c in enumerate(lifecycle.member_configs(cfg, values)[0]):
        train.train_and_evaluate(c, tmp_path / f"solo{i}", progress=False)
        got, want = ({r["step"]: r["mutual_info"] for r in runs.read_metrics(folder)
                      if r["type"] == "batch" and "mutual_info" in r}
                     for folder in (tmp_path / "sweep" / f"member_{i}", tmp_path / f"solo{i}"))
        assert sorted(got) == sorted(want) == [1, 9]  # 1-based record steps
        np.testing.assert_allclose([got[s] for s in (1, 9)], [want[s] for s in (1, 9)], rtol=1e-4)
        assert all(got[s] != 0 for s in (1, 9))
