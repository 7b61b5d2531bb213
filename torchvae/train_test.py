"""Tests of the PyTorch reference trainer. Twin: `jaxvae/train_test.py`."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch

from torchvae import checkpoint as ckpt_lib
from torchvae import train
from vaecommon import lifecycle, runs
from vaecommon.config import ConfigError, TrainConfig, resolve

SMALL = TrainConfig(model="pytorch_examples", dataset="mnist5k", limit_train=256, limit_test=100,
                    batch_size=32, epochs=2, final_nll_samples=8, eval_batch_size=64)


def _batch(n=32, seed=0):
    rng = np.random.default_rng(seed)
    return torch.from_numpy(rng.uniform(0, 1, (n, 1, 28, 28)).astype(np.float32))


def _params(trainer):
    return [p.detach().clone() for p in trainer.model.parameters()]


def test_apply_update_contract():
    tr = train.Trainer.create(SMALL, 256)
    before = _params(tr)
    eps, extra = tr.draw_noise(torch.Generator().manual_seed(1), 32)
    terms = tr.apply_update(_batch(), eps, extra)
    assert set(terms) >= {"loss", "recon", "kl", "grad_norm"}
    vectors = set(lifecycle.DIAGNOSTIC_VECTORS)  # the collapse diagnostics, (D,) per step
    assert vectors <= set(terms) and {"mutual_info", "total_correlation"} <= set(terms)
    assert all(isinstance(v, float) and math.isfinite(v) for k, v in terms.items() if k not in vectors)
    assert all(terms[k].shape == (20,) and np.isfinite(terms[k]).all() for k in vectors)
    assert tr.step == 1
    after = _params(tr)
    assert len(after) == 10
    for b, a in zip(before, after):
        assert torch.isfinite(a).all()
        assert not torch.equal(a, b), "every parameter must move after one Adam step"
    assert terms["loss"] == pytest.approx(terms["recon"] + terms["kl"], rel=1e-6)
    # mutual_info / total_correlation: computed at step 0 (lifecycle.sampled_step), 0 at step 1
    assert terms["mutual_info"] > 0 and terms["total_correlation"] != 0  # TC: any sign (MSS)
    later = tr.apply_update(_batch(), eps, extra)
    assert later["mutual_info"] == 0 and later["total_correlation"] == 0 and later["kl"] > 0


def test_apply_update_deterministic_and_eps_dependent():
    def run(eps_seed):
        tr = train.Trainer.create(SMALL, 256)
        eps, _ = tr.draw_noise(torch.Generator().manual_seed(eps_seed), 32)
        return tr.apply_update(_batch(), eps), _params(tr)

    (ta, pa), (tb, pb), (tc, _) = run(1), run(1), run(2)
    assert ta["loss"] == tb["loss"]
    assert all(torch.equal(a, b) for a, b in zip(pa, pb)), "same seed must be bit-identical"
    assert ta["loss"] != tc["loss"]


def test_overfits_a_fixed_batch():
    cfg = SMALL.replace(lr=3e-3, batch_size=16)
    tr = train.Trainer.create(cfg, 256)
    rng = np.random.default_rng(0)
    x = torch.from_numpy((rng.uniform(0, 1, (16, 1, 28, 28)) > 0.8).astype(np.float32))
    g = torch.Generator().manual_seed(0)
    recon = [tr.apply_update(x, *tr.draw_noise(g, 16))["recon"] for _ in range(150)]
    assert np.mean(recon[-5:]) < 0.5 * np.mean(recon[:5])


def test_train_and_evaluate_writes_run_folder(tmp_path):
    result = train.train_and_evaluate(SMALL, tmp_path, progress=False)
    run = runs.RunFolder(tmp_path)
    recs = run.metrics()
    spe = 256 // 32
    assert [r["step"] for r in recs if r["type"] == "batch"] == list(range(1, 2 * spe + 1))
    epochs = [r for r in recs if r["type"] == "train"]
    b1 = [r["loss"] for r in recs if r["type"] == "batch" and r["step"] <= spe]
    assert epochs[0]["loss"] == pytest.approx(np.mean(b1), rel=1e-9)
    tests = [r for r in recs if r["type"] == "test"]
    assert [r["epoch"] for r in tests] == [1, 2]
    assert len(tests[-1]["kl_per_dim"]) == 20 and "nll" in tests[-1]
    assert result["loss"] == pytest.approx(tests[-1]["loss"])
    assert run.read_config()["framework"] == "torch"
    assert {"loss_curves.png", "samples.png"} <= {p.name for p in run.figures.glob("*.png")}
    assert ckpt_lib.CheckpointManager(run.checkpoints).all_steps() == [spe, 2 * spe]


def test_resume_is_bit_identical(tmp_path):
    cfg = SMALL.replace(epochs=3, final_nll_samples=0, eval_every=0, binarization="dynamic")
    train.train_and_evaluate(cfg, tmp_path / "straight", progress=False)

    class Stop(Exception):
        pass

    def stop_after_two(epoch, trainer):
        if epoch == 2:
            raise Stop

    with pytest.raises(Stop):
        train.train_and_evaluate(cfg, tmp_path / "resumed", progress=False, on_epoch=stop_after_two)
    # bookkeeping fields (vaecommon.config.RESUME_FREE) may change on resume
    train.train_and_evaluate(cfg.replace(checkpoint_every=2, keep_checkpoints=1), tmp_path / "resumed",
                             progress=False)

    def final(path):
        return torch.load(sorted((path / "checkpoints").glob("step_*.pt"))[-1], weights_only=True)

    a, b = final(tmp_path / "straight"), final(tmp_path / "resumed")
    assert a["step"] == b["step"] == 24
    for k in a["model"]:
        assert torch.equal(a["model"][k], b["model"][k]), k
    ra = [r["loss"] for r in runs.read_metrics(tmp_path / "straight") if r["type"] == "batch"]
    rb = [r["loss"] for r in runs.read_metrics(tmp_path / "resumed") if r["type"] == "batch"]
    assert ra == rb


def test_resume_refuses_a_different_config(tmp_path):
    train.train_and_evaluate(SMALL.replace(epochs=1, final_nll_samples=0), tmp_path, progress=False)
    with pytest.raises(ValueError, match=r"different config \(lr: 0.001 -> 0.5\)"):
        train.train_and_evaluate(SMALL.replace(epochs=1, lr=0.5, final_nll_samples=0), tmp_path,
                                 progress=False)
    assert [r["epoch"] for r in runs.read_metrics(tmp_path) if r["type"] == "train"] == [1]


def test_same_batch_order_as_the_shared_schedule(tmp_path, monkeypatch):
    """The reference loop visits exactly `epoch_batches(seed, epoch, n, B)` (shared with JAX)."""
    from vaecommon.schedule import epoch_batches

    seen = []
    real = train.Trainer.apply_update

    def spy(self, x, eps, extra=None):
        seen.append(x.clone())
        return real(self, x, eps, extra)

    monkeypatch.setattr(train.Trainer, "apply_update", spy)
    cfg = SMALL.replace(epochs=1, final_nll_samples=0)
    train.train_and_evaluate(cfg, tmp_path, progress=False)
    ds, _ = train.load_datasets(resolve(cfg))
    idx = epoch_batches(cfg.seed, 0, 256, 32)
    assert len(seen) == len(idx)
    for x, ids in zip(seen, idx):
        assert torch.equal(x, ds.images[torch.from_numpy(ids.astype(np.int64))])


def test_optimizer_and_schedule_follow_the_config():
    cfg = resolve(SMALL.replace(optimizer="sgd", lr=0.1, momentum=0.9, weight_decay=0.01,
                                schedule="cosine", warmup_steps=10))
    p = torch.nn.Parameter(torch.ones(2))
    opt, sched = train.make_optimizer(cfg, [p], 110)
    lrs = []
    for _ in range(111):
        lrs.append(opt.param_groups[0]["lr"])
        p.grad = torch.zeros(2)
        opt.step()
        sched.step()
    np.testing.assert_allclose([lrs[0], lrs[9], lrs[10], lrs[60], lrs[110]],
                               [0.01, 0.1, 0.1, 0.05, 0.0], atol=1e-7)
    assert opt.param_groups[0]["momentum"] == 0.9 and opt.param_groups[0]["weight_decay"] == 0.01


def test_unknown_names_list_the_valid_ones():
    # one ConfigError (a ValueError) listing the valid names, before anything is built
    with pytest.raises(ConfigError, match="must be one of .*beta_vae.*got 'betavae'"):
        train.Trainer.create(SMALL.replace(objective="betavae"), 256)
    with pytest.raises(ValueError, match="larger than the training set"):
        train.Trainer.create(SMALL.replace(batch_size=512), 256)


OBJECTIVE_PARAMS = {"beta_tcvae": {"dataset_size": 256}, "iwae": {"k": 3},
                    "info_vae": {"prior_samples": 16}, "kl_warmup": {"warmup_steps": 10},
                    "cyclical": {"cycle_steps": 10}, "capacity": {"c_steps": 10}}


@pytest.mark.parametrize("objective", sorted(__import__("torchvae.losses").losses.OBJECTIVES))
def test_every_objective_trains(objective):
    cfg = SMALL.replace(objective=objective, objective_params=OBJECTIVE_PARAMS.get(objective, {}))
    tr = train.Trainer.create(cfg, 256)
    before = _params(tr)
    terms = tr.apply_update(_batch(), *tr.draw_noise(torch.Generator().manual_seed(1), 32))
    assert {"loss", "recon", "kl"} <= set(terms)
    assert all(np.isfinite(v).all() for v in terms.values()), terms
    assert not torch.equal(_params(tr)[0], before[0])


def test_gaussian_learned_trains_its_sigma(tmp_path):
    cfg = SMALL.replace(likelihood="gaussian_learned", epochs=1, final_nll_samples=4)
    tr = train.Trainer.create(cfg, 256)
    assert float(tr.model.log_sigma) == 0.0
    tr.apply_update(_batch(), *tr.draw_noise(torch.Generator().manual_seed(1), 32))
    assert float(tr.model.log_sigma) != 0.0
    res = train.train_and_evaluate(cfg, tmp_path, progress=False)
    assert math.isfinite(res["loss"]) and math.isfinite(res["nll"])


@pytest.mark.parametrize("objective", ["elbo", "iwae"])  # iwae: extra noise from the same stream
def test_init_state_at_a_step_holds_the_generators_of_a_run_at_that_step(objective):
    """What a JAX state converted to torch continues with: the eps and binarization generators
    replayed to step k equal those of k real training steps (on other data: a draw's count
    depends on its shape alone)."""
    cfg = TrainConfig(model="pytorch_examples", batch_size=8, epochs=1, binarization="dynamic",
                      objective=objective, seed=3)
    tr = train.Trainer.create(cfg, 32)
    gens = tr.init_state(cfg.seed)
    idx = np.arange(24, dtype=np.int32).reshape(3, 8)
    tr.train_epoch(_batch(24, seed=5), idx, gens)
    replayed = tr.init_state(cfg.seed, step=3)
    for k in ("eps", "binarize"):
        assert torch.equal(replayed[k].get_state(), gens[k].get_state()), k
        assert not torch.equal(replayed[k].get_state(), tr.init_state(cfg.seed)[k].get_state()), k
    shared = train.Trainer.create(cfg.replace(noise="shared", init="torch"), 32)
    assert all(torch.equal(g.get_state(), f.get_state()) for g, f in zip(
        shared.init_state(cfg.seed, step=3).values(), shared.init_state(cfg.seed).values()))


def test_nll_blocks_do_not_change_the_estimate_with_the_vampprior():
    """eps is drawn per batch of test images, so the chunk size only regroups the same log-weights
    (17 samples: 4 + 4 + 4 + 4 + 1 against one block), with the VampPrior's components encoded
    once per batch (`nll_prior`; its density is oracle-tested in parity_tests/test_priors.py)."""
    tr = train.Trainer.create(SMALL.replace(model_overrides={"prior": "vampprior", "pseudo_inputs": 3}), 256)
    images = _batch(7)
    a = train.test_nll_stats(tr, images, seed=1, k=17, chunk=4, batch=5)
    b = train.test_nll_stats(tr, images, seed=1, k=17, chunk=17, batch=5)
    np.testing.assert_allclose(a, b, rtol=1e-5)
