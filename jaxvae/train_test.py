"""Tests of the JAX training engine (STYLE §7). Twin: `torchvae/train_test.py`."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import textwrap
from pathlib import Path

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from jaxvae import checkpoint as ckpt_lib
from jaxvae import train
from vaecommon import lifecycle, runs
from vaecommon.config import ConfigError, TrainConfig, resolve

REPO = Path(__file__).resolve().parents[1]

SMALL = TrainConfig(model="pytorch_examples", dataset="mnist5k", limit_train=256, limit_test=100,
                    batch_size=32, epochs=2, final_nll_samples=8, eval_batch_size=64)


def _batch(n=32, seed=0):
    rng = np.random.default_rng(seed)
    return jnp.asarray(rng.uniform(0, 1, (n, 28, 28, 1)).astype(np.float32))


def _trainer(cfg=SMALL, n=256):
    return train.Trainer.create(cfg, n)


def _leaves(tree):
    return [np.asarray(x) for x in jax.tree.leaves(tree)]


def test_apply_update_contract():
    tr = _trainer()
    state = tr.init_state(jax.random.key(0))
    x = _batch()
    eps, extra = tr.draw_noise(jax.random.key(1), 32)
    new, terms = jax.jit(tr.apply_update)(state, x, eps, extra)
    assert set(terms) >= {"loss", "recon", "kl", "grad_norm"}
    vectors = set(lifecycle.DIAGNOSTIC_VECTORS)  # the collapse diagnostics, (D,) per step
    assert vectors <= set(terms) and {"mutual_info", "total_correlation"} <= set(terms)
    for k, v in terms.items():
        assert v.shape == ((20,) if k in vectors else ()) and v.dtype == jnp.float32, k
        assert np.all(np.isfinite(v)), k
    assert int(new.step) == 1
    before, after = _leaves(state.params), _leaves(new.params)
    assert len(before) == 10  # fc1, fc21, fc22, fc3, fc4 kernels and biases
    for b, a in zip(before, after):
        assert np.all(np.isfinite(a))
        assert not np.array_equal(a, b), "every parameter must move after one Adam step"
    # loss is recon + kl for the ELBO, per example, batch mean
    np.testing.assert_allclose(terms["loss"], terms["recon"] + terms["kl"], rtol=1e-6)
    # mutual_info / total_correlation: computed at step 0 (lifecycle.sampled_step), 0 at step 1
    assert terms["mutual_info"] > 0 and terms["total_correlation"] != 0  # TC: any sign (MSS)
    _, later = jax.jit(tr.apply_update)(new, x, eps, extra)
    assert later["mutual_info"] == 0 and later["total_correlation"] == 0 and later["kl"] > 0


def test_apply_update_deterministic_and_key_dependent():
    tr = _trainer()
    state = tr.init_state(jax.random.key(0))
    x = _batch()
    step = jax.jit(tr.apply_update)
    e1, _ = tr.draw_noise(jax.random.key(1), 32)
    e2, _ = tr.draw_noise(jax.random.key(2), 32)
    a, ta = step(state, x, e1, None)
    b, tb = step(state, x, e1, None)
    c, tc = step(state, x, e2, None)
    for u, v in zip(_leaves(a.params), _leaves(b.params)):
        assert np.array_equal(u, v), "same inputs must give bit-identical results"
    assert float(ta["loss"]) == float(tb["loss"])
    assert float(ta["loss"]) != float(tc["loss"]), "a different eps must change the loss"


def test_apply_update_compiles_once():
    tr = _trainer()
    traces = []

    def f(state, x, eps):
        traces.append(1)
        return tr.apply_update(state, x, eps)

    step = jax.jit(f)
    state = tr.init_state(jax.random.key(0))
    for i in range(3):
        eps, _ = tr.draw_noise(jax.random.key(i), 32)
        state, _ = step(state, _batch(seed=i), eps)
    assert len(traces) == 1, "apply_update must not retrace for new values of the same shapes"
    assert int(state.step) == 3


def test_each_step_draws_fresh_eps():
    """Regression for the eps-frozen-at-trace-time bug: with lr=0 and one repeated batch, the
    loss of consecutive scanned steps differs only through eps, so it must differ."""
    cfg = SMALL.replace(lr=1e-30)
    tr = _trainer(cfg)
    state = tr.init_state(jax.random.key(0))
    images = _batch(32)
    idx = jnp.zeros((4, 32), jnp.int32) + jnp.arange(32)[None]  # the same 32 images 4 times
    _, terms = jax.jit(lambda s, i: tr.train_epoch(s, images, i, jax.random.key(3)))(state, idx)
    losses = np.asarray(terms["loss"])
    assert len(set(losses.tolist())) == 4, f"eps repeated across steps: {losses}"


def test_overfits_a_fixed_batch():
    cfg = SMALL.replace(lr=3e-3)
    tr = _trainer(cfg)
    state = tr.init_state(jax.random.key(0))
    rng = np.random.default_rng(0)
    # 16 binary-ish images with structure: random strokes
    x = jnp.asarray((rng.uniform(0, 1, (16, 28, 28, 1)) > 0.8).astype(np.float32))
    idx = jnp.tile(jnp.arange(16)[None], (150, 1))
    tr16 = train.Trainer.create(cfg.replace(batch_size=16), 256)
    state, terms = jax.jit(lambda s: tr16.train_epoch(s, x, idx, jax.random.key(1)))(state)
    first, last = float(np.mean(terms["recon"][:5])), float(np.mean(terms["recon"][-5:]))
    # 784 * ln 2 = 543 nats at logit 0; memorising 16 images must cut the reconstruction term
    assert last < 0.5 * first, (first, last)


def test_evaluate_counts_every_example_once():
    """Eval batch size must not change the numbers (padding is masked)."""
    tr = _trainer()
    state = tr.init_state(jax.random.key(0))
    images = np.asarray(_batch(70))
    a = train.evaluate(tr, state.params, state.rest, images, jax.random.key(0))
    tr2 = train.Trainer.create(SMALL.replace(eval_batch_size=32), 256)  # 70 = 2*32 + 6 padded
    b = train.evaluate(tr2, state.params, state.rest, images, jax.random.key(0))
    # same eps per example only if the batching is the same, so compare a deterministic part:
    # KL does not depend on eps
    np.testing.assert_allclose(a["kl"], b["kl"], rtol=1e-5)
    np.testing.assert_allclose(a["kl_per_dim"], b["kl_per_dim"], rtol=1e-5)
    assert a["active_units"] == b["active_units"]
    np.testing.assert_allclose(a["bits_per_dim"], a["loss"] / (784 * np.log(2)), rtol=1e-6)


def test_importance_sampled_nll_bounds_elbo():
    tr = _trainer()
    state = tr.init_state(jax.random.key(0))
    images = np.asarray(_batch(20))
    ev = train.evaluate(tr, state.params, state.rest, images, jax.random.key(0), nll_samples=64)
    # the k-sample bound is tighter than the ELBO on average (loose margin: 20 examples)
    assert ev["nll"] <= ev["loss"] + 1.0
    assert ev["nll_samples"] == 64


def test_train_and_evaluate_writes_run_folder(tmp_path):
    result = train.train_and_evaluate(SMALL, tmp_path, progress=False)
    run = runs.RunFolder(tmp_path)
    recs = run.metrics()
    spe = 256 // 32
    assert [r["step"] for r in recs if r["type"] == "batch"] == list(range(1, 2 * spe + 1))
    epochs = [r for r in recs if r["type"] == "train"]
    assert [r["epoch"] for r in epochs] == [1, 2]
    # the epoch value is the mean of its batches (the notes' plotting fix)
    b1 = [r["loss"] for r in recs if r["type"] == "batch" and r["step"] <= spe]
    assert epochs[0]["loss"] == pytest.approx(np.mean(b1), rel=1e-6)
    tests = [r for r in recs if r["type"] == "test"]
    assert [r["epoch"] for r in tests] == [1, 2]
    assert len(tests[-1]["kl_per_dim"]) == 20 and "nll" in tests[-1]
    assert result["loss"] == pytest.approx(tests[-1]["loss"])
    cfg = run.read_config()
    assert cfg["framework"] == "jax" and cfg["config"]["likelihood"] == "bce_probs"
    assert cfg["data"]["train"]["source"] == "embedded"
    assert "embedded" in run.summary_path.read_text()
    pngs = sorted(p.name for p in run.figures.glob("*.png"))
    assert {"loss_curves.png", "samples.png", "reconstructions.png"} <= set(pngs)
    assert ckpt_lib.CheckpointManager(run.checkpoints).all_steps() == [spe, 2 * spe]


def _final_params(workdir, cfg):
    tr = train.Trainer.create(cfg, 256)
    template = tr.init_state(jax.random.key(cfg.seed))
    state, meta = ckpt_lib.CheckpointManager(Path(workdir) / "checkpoints").restore(template)
    return state, meta


def test_resume_is_bit_identical(tmp_path):
    cfg = SMALL.replace(epochs=3, final_nll_samples=0, eval_every=0, binarization="dynamic")
    train.train_and_evaluate(cfg, tmp_path / "straight", progress=False)

    class Stop(Exception):
        pass

    def stop_after_two(epoch, state):
        if epoch == 2:
            raise Stop

    with pytest.raises(Stop):
        train.train_and_evaluate(cfg, tmp_path / "resumed", progress=False, on_epoch=stop_after_two)
    # bookkeeping fields (vaecommon.config.RESUME_FREE) may change on resume
    train.train_and_evaluate(cfg.replace(checkpoint_every=2, keep_checkpoints=1), tmp_path / "resumed",
                             progress=False)
    a, meta_a = _final_params(tmp_path / "straight", resolve(cfg))
    b, meta_b = _final_params(tmp_path / "resumed", resolve(cfg))
    assert int(a.step) == int(b.step) == 3 * 8
    for u, v in zip(_leaves((a.params, a.opt_state)), _leaves((b.params, b.opt_state))):
        assert np.array_equal(u, v), "resumed run must end bit-identical on CPU"
    ra = [r for r in runs.read_metrics(tmp_path / "straight") if r["type"] == "batch"]
    rb = [r for r in runs.read_metrics(tmp_path / "resumed") if r["type"] == "batch"]
    assert [r["step"] for r in rb] == [r["step"] for r in ra]
    assert [r["loss"] for r in rb] == [r["loss"] for r in ra]


def test_resume_refuses_a_different_config(tmp_path):
    train.train_and_evaluate(SMALL.replace(epochs=1, final_nll_samples=0), tmp_path, progress=False)
    with pytest.raises(ValueError, match=r"different config \(lr: 0.001 -> 0.5\)"):
        train.train_and_evaluate(SMALL.replace(epochs=1, lr=0.5, final_nll_samples=0), tmp_path,
                                 progress=False)
    assert [r["epoch"] for r in runs.read_metrics(tmp_path) if r["type"] == "train"] == [1]


def test_unknown_names_list_the_valid_ones():
    # one ConfigError (a ValueError) listing the valid names, before anything is built
    with pytest.raises(ConfigError, match="must be one of .*beta_vae.*got 'betavae'"):
        train.Trainer.create(SMALL.replace(objective="betavae"), 256)
    with pytest.raises(ConfigError, match="valid presets"):
        train.Trainer.create(SMALL.replace(model="vae"), 256)
    with pytest.raises(ValueError, match="larger than the training set"):
        train.Trainer.create(SMALL.replace(batch_size=512), 256)


def test_optimizers_match_their_definitions():
    """One step of each optimizer against the hand-written torch.optim update rule."""
    g = {"w": jnp.asarray([0.5, -2.0])}
    p = {"w": jnp.asarray([1.0, 1.0])}
    lr, wd = 0.1, 0.01
    for opt in ("sgd", "adam", "adamw"):
        cfg = resolve(SMALL.replace(optimizer=opt, lr=lr, weight_decay=wd, momentum=0.9))
        tx = train.make_optimizer(cfg, 100)
        st = tx.init(p)
        u, st = tx.update(g, st, p)
        got = np.asarray(p["w"] - lr * u["w"])
        gw, pw = np.asarray(g["w"]), np.asarray(p["w"])
        if opt == "sgd":
            want = pw - lr * (gw + wd * pw)  # first momentum step: buf = grad
        elif opt == "adam":
            gg = gw + wd * pw
            want = pw - lr * (0.1 * gg / 0.1) / (np.sqrt(0.001 * gg**2 / 0.001) + 1e-8)
        else:
            want = pw - lr * wd * pw - lr * gw / (np.abs(gw) + 1e-8)
        np.testing.assert_allclose(got, want, rtol=1e-6, err_msg=opt)


def test_cosine_warmup_schedule():
    cfg = resolve(SMALL.replace(schedule="cosine", warmup_steps=10))
    f = train.learning_rate_factor(cfg, 110)
    np.testing.assert_allclose([float(f(0)), float(f(9)), float(f(10)), float(f(60)), float(f(110))],
                               [0.1, 1.0, 1.0, 0.5, 0.0], atol=1e-6)


SUBPROCESS_MULTI = textwrap.dedent("""
    import os, sys, json
    os.environ["XLA_FLAGS"] = "--xla_force_host_platform_device_count=4"
    import jax, numpy as np
    from jaxvae import train
    from vaecommon.config import TrainConfig
    assert len(jax.devices()) == 4, jax.devices()
    # SGD: Adam's first steps are ~lr*sign(g) and amplify reduction-order noise where g ~ 0, which
    # would hide a real sharding bug behind a loose tolerance
    cfg = TrainConfig(model="pytorch_examples", limit_train=256, limit_test=64, batch_size=32,
                      epochs=2, final_nll_samples=0, eval_batch_size=64, optimizer="sgd", lr=1e-3)
    out = {}
    for n in (1, 4):
        r = train.train_and_evaluate(cfg, sys.argv[1] + f"/d{n}", num_devices=n, progress=False)
        out[n] = r["loss"]
    print(json.dumps(out))
""")


def test_multi_device_matches_single_device(tmp_path):
    env = dict(os.environ, PYTHONPATH=str(REPO))
    r = subprocess.run([sys.executable, "-c", SUBPROCESS_MULTI, str(tmp_path)], env=env,
                       capture_output=True, text=True, timeout=300)
    assert r.returncode == 0, r.stderr[-3000:]
    out = json.loads(r.stdout.strip().splitlines()[-1])
    np.testing.assert_allclose(out["4"], out["1"], rtol=1e-4)
    sgd = resolve(SMALL.replace(optimizer="sgd", lr=1e-3, limit_test=64, eval_batch_size=64))
    a, _ = _final_params(tmp_path / "d1", sgd)
    b, _ = _final_params(tmp_path / "d4", sgd)
    for u, v in zip(_leaves(a.params), _leaves(b.params)):
        np.testing.assert_allclose(v, u, rtol=1e-5, atol=1e-6)


OBJECTIVE_PARAMS = {"beta_tcvae": {"dataset_size": 256}, "iwae": {"k": 3},
                    "info_vae": {"prior_samples": 16}, "kl_warmup": {"warmup_steps": 10},
                    "cyclical": {"cycle_steps": 10}, "capacity": {"c_steps": 10}}


@pytest.mark.parametrize("objective", sorted(__import__("jaxvae.losses").losses.OBJECTIVES))
def test_every_objective_trains(objective):
    """Each registered objective runs in the real update: finite terms, parameters move."""
    cfg = SMALL.replace(objective=objective, objective_params=OBJECTIVE_PARAMS.get(objective, {}))
    tr = _trainer(cfg)
    state = tr.init_state(jax.random.key(0))
    eps, extra = tr.draw_noise(jax.random.key(1), 32)
    if objective in ("iwae", "info_vae"):
        assert extra is not None and extra.shape[-1] == 20
    new, terms = jax.jit(tr.apply_update)(state, _batch(), eps, extra)
    assert {"loss", "recon", "kl"} <= set(terms)
    assert all(np.isfinite(v).all() for v in terms.values()), terms
    assert not np.array_equal(_leaves(new.params)[0], _leaves(state.params)[0])


def test_gaussian_learned_trains_its_sigma(tmp_path):
    cfg = SMALL.replace(likelihood="gaussian_learned", epochs=1, final_nll_samples=4)
    tr = _trainer(cfg)
    state = tr.init_state(jax.random.key(0))
    assert float(state.params["log_sigma"][...]) == 0.0
    eps, _ = tr.draw_noise(jax.random.key(1), 32)
    new, terms = jax.jit(tr.apply_update)(state, _batch(), eps)
    assert float(new.params["log_sigma"][...]) != 0.0, "log_sigma must be trained"
    res = train.train_and_evaluate(cfg, tmp_path, progress=False)
    assert np.isfinite(res["loss"]) and np.isfinite(res["nll"])


@pytest.mark.parametrize("objective", ["elbo", "iwae"])
def test_epoch_noise_drawn_up_front_equals_drawing_it_each_step(objective, monkeypatch):
    """train_epoch draws the epoch's noise before its scan (one vectorized RNG call): the noise
    is bit-identical to each step's own draw, and the epoch matches the per-step path (to float32
    rounding: the two programs are fused differently, and Adam amplifies rounding of tiny
    gradients to ~1e-5 in a few weights)."""
    cfg = TrainConfig(model="pytorch_examples", batch_size=16, epochs=1, objective=objective,
                      objective_params={"k": 3} if objective == "iwae" else {})
    images = np.random.default_rng(0).uniform(size=(64, 28, 28, 1)).astype(np.float32)
    tr = train.Trainer.create(cfg, 64)
    root = jax.random.key(3)
    steps = jnp.arange(4, dtype=jnp.int32) + 7
    batched = jax.vmap(lambda s: tr.step_noise(root, s, 16))(steps)
    for i, s in enumerate(steps):
        one = tr.step_noise(root, s, 16)
        for a, b in zip(jax.tree.leaves(one), jax.tree.leaves(batched)):
            np.testing.assert_array_equal(np.asarray(a), np.asarray(b)[i])
    idx = jnp.asarray(tr.batch_indices(0, 64))
    run = jax.jit(lambda s: tr.train_epoch(s, jnp.asarray(images), idx, root))
    state_a, terms_a = run(tr.init_state(root))
    monkeypatch.setattr(train, "_PREDRAW_BYTES", -1)  # force the per-step path
    run = jax.jit(lambda s: tr.train_epoch(s, jnp.asarray(images), idx, root))
    state_b, terms_b = run(tr.init_state(root))
    # a step out of order would change the losses at 1e-2 and the parameters by ~lr = 1e-3
    np.testing.assert_allclose(terms_a["loss"], terms_b["loss"], rtol=1e-5)
    for a, b in zip(jax.tree.leaves(state_a.params), jax.tree.leaves(state_b.params)):
        np.testing.assert_allclose(np.asarray(a), np.asarray(b), atol=5e-5)


_COMPILE_RUN = """
import sys
from vaecommon.config import TrainConfig
from jaxvae import train
cfg = TrainConfig(model="pytorch_examples", batch_size=32, epochs=int(sys.argv[2]), limit_train=128,
                  limit_test=64, eval_every=1, nll_samples=4, final_nll_samples=4, checkpoint_every=1)
train.train_and_evaluate(cfg, sys.argv[1], progress=False)
"""


def _compilations(workdir, epochs: int) -> list[str]:
    env = dict(os.environ, JAX_LOG_COMPILES="1", JAX_PLATFORMS="cpu")
    out = subprocess.run([sys.executable, "-c", _COMPILE_RUN, str(workdir), str(epochs)],
                         capture_output=True, text=True, env=env, timeout=600)
    assert out.returncode == 0, out.stderr[-2000:]
    return [line for line in out.stderr.splitlines() if "Compiling " in line]


def test_a_run_compiles_once_whatever_its_length(tmp_path):
    """Evaluation (every epoch, with an NLL) and the epoch are compiled once per run: 4 epochs
    compile exactly what 2 epochs compile (counted with JAX_LOG_COMPILES)."""
    two, four = _compilations(tmp_path / "two", 2), _compilations(tmp_path / "four", 4)
    assert len(two) > 0, "JAX_LOG_COMPILES printed nothing: the count would prove nothing"
    assert len(four) == len(two), "\n".join(four)


def test_nll_blocks_do_not_change_the_estimate_with_the_vampprior():
    """eps is drawn per batch of test images, so the chunk size only regroups the same log-weights
    (17 samples: 4 + 4 + 4 + 4 + 1 against one block), with the VampPrior's components encoded
    once per batch (`nll_prior`; its density is oracle-tested in parity_tests/test_priors.py)."""
    tr = _trainer(SMALL.replace(model_overrides={"prior": "vampprior", "pseudo_inputs": 3}))
    state = tr.init_state(jax.random.key(0))
    images = np.asarray(_batch(7))
    a = train.test_nll_stats(tr, state.params, state.rest, images, jax.random.key(1), k=17, chunk=4, batch=5)
    b = train.test_nll_stats(tr, state.params, state.rest, images, jax.random.key(1), k=17, chunk=17, batch=5)
    np.testing.assert_allclose(a, b, rtol=1e-5)
