"""Tests of `vaecommon.config`: the resume check (which config changes a checkpoint accepts) and
`validate` (every field's range, the objective's parameters), framework-free."""

from __future__ import annotations

import dataclasses
import math
import re

import pytest

from vaecommon import config as config_lib
from vaecommon import datasets, presets
from vaecommon.config import (RESUME_FREE, ConfigError, TrainConfig, check_resumable, resolve,
                              validate)

CFG = resolve(TrainConfig(model="pytorch_examples", epochs=10))


def test_bookkeeping_fields_may_change():
    saved = dataclasses.asdict(CFG)
    changed = CFG.replace(eval_every=0, eval_batch_size=7, nll_samples=3, final_nll_samples=0,
                          nll_limit=10, checkpoint_every=5, keep_checkpoints=1, figures_every=2)
    assert {f for f in RESUME_FREE} == {"eval_every", "eval_batch_size", "nll_samples",
                                        "final_nll_samples", "nll_limit", "checkpoint_every",
                                        "keep_checkpoints", "figures_every", "batch_log_every"}
    check_resumable(saved, changed, "run/checkpoints")  # no error
    check_resumable(None, changed, "run/checkpoints")  # a checkpoint without a stored config


@pytest.mark.parametrize("change, text", [
    ({"lr": 0.5}, "lr: 0.001 -> 0.5"),
    ({"schedule": "cosine"}, "schedule: 'constant' -> 'cosine'"),
    ({"seed": 3}, "seed: 0 -> 3"),
    ({"objective_params": {"beta": 2.0}}, "objective_params: {} -> {'beta': 2.0}"),
])
def test_training_fields_are_refused_by_name(change, text):
    with pytest.raises(ValueError) as e:
        check_resumable(dataclasses.asdict(CFG), CFG.replace(**change), "run/checkpoints")
    msg = str(e.value)
    assert msg.startswith("run/checkpoints: the checkpoint was written with a different config")
    assert text in msg and "new run folder" in msg


def test_more_epochs_continue_a_constant_schedule_and_are_refused_for_cosine():
    check_resumable(dataclasses.asdict(CFG), CFG.replace(epochs=20), "run/checkpoints")  # constant lr
    cosine = CFG.replace(schedule="cosine")
    with pytest.raises(ValueError, match=r"epochs: 10 -> 20\).*cosine schedule's shape depends"):
        check_resumable(dataclasses.asdict(cosine), cosine.replace(epochs=20), "run/checkpoints")


def test_every_difference_is_listed_and_unknown_saved_fields_count():
    saved = {**dataclasses.asdict(CFG), "removed_field": 1}
    with pytest.raises(ValueError) as e:
        check_resumable(saved, CFG.replace(lr=0.5, seed=3), "w")
    msg = str(e.value)
    assert "lr: 0.001 -> 0.5" in msg and "seed: 0 -> 3" in msg and "removed_field: 1 -> '<missing>'" in msg


# ---- validate: one ConfigError per invalid field, one line naming field, value and range ----------

BAD_FIELDS = [
    # (field, value, the valid range the message states); each reproduced bug has its own row
    ("grad_clip", -1.0, "> 0 and finite, or None (no clipping)"),  # -1 trained by gradient ascent
    ("grad_clip", 0.0, "> 0 and finite, or None (no clipping)"),
    ("grad_clip", math.inf, "> 0 and finite, or None (no clipping)"),
    ("grad_clip", math.nan, "> 0 and finite, or None (no clipping)"),
    ("lr", math.nan, "> 0 and finite, or None (the preset's)"),
    ("lr", math.inf, "> 0 and finite, or None (the preset's)"),
    ("lr", 0.0, "> 0 and finite, or None (the preset's)"),
    ("lr", -1e-3, "> 0 and finite, or None (the preset's)"),
    ("lr", "0.1", "> 0 and finite, or None (the preset's)"),
    ("momentum", 1.0, "in [0, 1) and finite"),
    ("momentum", -0.1, "in [0, 1) and finite"),
    ("weight_decay", -1e-5, ">= 0 and finite, or None (the preset's)"),
    ("weight_decay", math.inf, ">= 0 and finite, or None (the preset's)"),
    ("weight_decay", math.nan, ">= 0 and finite, or None (the preset's)"),
    ("final_nll_samples", -1, "an integer >= 0"),
    ("nll_samples", -5, "an integer >= 0"),
    ("epochs", 0, "an integer >= 1, or None (the preset's)"),
    ("epochs", -3, "an integer >= 1, or None (the preset's)"),
    ("batch_size", 0, "an integer >= 1, or None (the preset's)"),  # once reported as "128 is larger"
    ("batch_size", 2.5, "an integer >= 1, or None (the preset's)"),
    ("eval_batch_size", 0, "an integer >= 1"),
    ("seed", 2**64, "an integer in [0, 4294967295]"),  # overflowed in JAX, trained in torch
    ("seed", 2**32, "an integer in [0, 4294967295]"),
    ("seed", -1, "an integer in [0, 4294967295]"),
    ("seed", True, "an integer in [0, 4294967295]"),
    ("warmup_steps", -1, "an integer >= 0"),
    ("eval_every", -1, "an integer >= 0"),
    ("checkpoint_every", -1, "an integer >= 0"),
    ("keep_checkpoints", 0, "an integer >= 1"),
    ("figures_every", -2, "an integer >= 0"),
    ("nll_limit", 0, "an integer >= 1, or None (all test examples)"),
    ("logvar_clamp", 0.0, "> 0 and finite, or None (off)"),
    ("limit_train", 0, "an integer >= 1, or None (all)"),
    ("limit_test", -1, "an integer >= 1, or None (all)"),
    ("image_size", 0, "an integer >= 1, or None (the preset's)"),
    ("data_dir", "", "a non-empty path, or None (the documented default)"),
    ("objective", "elbow", "one of reconstruction, elbo, beta_vae, kl_warmup, cyclical, capacity, "
                           "free_bits, beta_tcvae, dip_vae_i, dip_vae_ii, info_vae, iwae, "
                           "or None (the preset's)"),
    ("likelihood", "bernouli", "one of bernoulli, bce_probs, mse_sum, mse_mean, gaussian, "
                               "gaussian_learned, gaussian_calibrated, continuous_bernoulli, "
                               "or None (the preset's)"),
    ("optimizer", "adamm", "one of adam, adamw, sgd, adam_norm_grad, or None (the preset's)"),
    ("eval_binarization", "dynamic", "one of none, static"),
    ("schedule", "linear", "one of constant, cosine"),
    ("dataset", "cifar10", "one of mnist, fashion_mnist, mnist5k, image_folder, shapes, shapes_small"),
    ("data_source", "web", "one of auto, idx, library, embedded, image_folder, generated, array_record"),
    ("binarization", "otsu", "one of none, static, dynamic, or None (the preset's)"),
    ("precision", "float16", "one of float32, bfloat16"),
    ("reduction", "avg", "one of mean, sum"),
    ("init", "xavier", "one of default, torch"),
]
BAD_FIELDS += [
    ("validation", -1, "an integer >= 0"),
    ("early_stopping", 2.5, "an integer >= 0"),
    ("batch_log_every", 0, "an integer >= 1"),
    ("kl_warmup_epochs", -3, "an integer >= 0, or None (the preset's)"),
]


@pytest.mark.parametrize("field, value, valid", BAD_FIELDS,
                         ids=[f"{f}={v!r}" for f, v, _ in BAD_FIELDS])
def test_each_invalid_field_is_one_config_error_naming_field_value_and_range(field, value, valid):
    cfg = TrainConfig(**{field: value})
    with pytest.raises(ConfigError) as e:
        validate(cfg)
    assert str(e.value) == f"TrainConfig.{field} must be {valid}, got {value!r}"
    with pytest.raises(ConfigError, match=re.escape(f"TrainConfig.{field} must be")):
        resolve(cfg)  # resolve validates first: nothing is derived from an invalid config


def test_every_field_is_validated():
    """A new TrainConfig field must get a check (a range in _FIELDS or a choice list)."""
    checked = set(config_lib._FIELDS) | set(config_lib._CHOICES) | {
        "model", "model_overrides", "objective", "objective_params", "likelihood", "data_dir"}
    assert checked == {f.name for f in dataclasses.fields(TrainConfig)}


def test_choices_match_the_data_layer():
    assert config_lib._CHOICES["dataset"] == datasets.DATASETS
    assert config_lib._CHOICES["data_source"] == datasets.SOURCES
    assert config_lib._CHOICES["binarization"] == (None, *datasets.BINARIZATIONS)


def test_batch_size_zero_is_refused_not_replaced_by_the_preset_default():
    """`--batch-size 0` used to resolve to the preset's 128 (`cfg.batch_size or spec.batch_size`)."""
    with pytest.raises(ConfigError, match=r"^TrainConfig\.batch_size must be an integer >= 1.*got 0$"):
        resolve(TrainConfig(batch_size=0))


def test_unknown_preset_and_bad_overrides_are_config_errors():
    with pytest.raises(ConfigError, match=r"^TrainConfig\.model: unknown model preset 'nope'; "
                                          r"valid presets: pytorch_examples, flax_examples"):
        validate(TrainConfig(model="nope"))
    with pytest.raises(ConfigError, match=r"^TrainConfig\.model_overrides=\{'latent': 2\}: unknown "
                                          r"override\(s\) \['latent'\].*valid overrides: latent_dim"):
        validate(TrainConfig(model_overrides={"latent": 2}))
    with pytest.raises(ConfigError, match=r"^TrainConfig\.model_overrides=.*latent_dim must be >= 1"):
        validate(TrainConfig(model_overrides={"latent_dim": 0}))


def test_config_error_is_a_value_error():
    """Callers that catch ValueError (vaecommon.runinfo.train_config) keep working."""
    assert issubclass(ConfigError, ValueError)


def test_bfloat16_is_refused_for_torch_only():
    cfg = TrainConfig(precision="bfloat16")
    validate(cfg)
    validate(cfg, framework="jax")
    resolve(cfg, framework="jax")
    msg = ("TrainConfig.precision must be one of float32 for torch (its trainer has no other "
           "compute path), got 'bfloat16'")
    for call in (lambda: validate(cfg, framework="torch"), lambda: resolve(cfg, framework="torch")):
        with pytest.raises(ConfigError) as e:
            call()
        assert str(e.value) == msg
    with pytest.raises(ValueError, match="framework must be one of jax, torch or None, got 'tf'"):
        validate(cfg, framework="tf")


def test_autoencoder_presets_take_only_the_reconstruction_objective():
    validate(TrainConfig(model="simple_ae"))  # the preset's own objective
    with pytest.raises(ConfigError, match=r"^TrainConfig\.objective must be 'reconstruction' for the "
                                          r"autoencoder preset 'simple_ae' .*got 'elbo'$"):
        validate(TrainConfig(model="simple_ae", objective="elbo"))


@pytest.mark.parametrize("model", presets.list_models())
@pytest.mark.parametrize("framework", [None, "jax", "torch"])
def test_every_preset_default_is_valid_and_resolving_is_idempotent(model, framework):
    out = resolve(TrainConfig(model=model), framework=framework)
    validate(out, framework=framework)
    assert resolve(out, framework=framework) == out


# ---- objective parameters, checked against vaecommon.objectives before anything compiles -------

VALID_PARAMS = [  # the parameters the trainers' tests and the soak test train with
    ("beta_vae", {"beta": 4.0}), ("beta_vae", {"beta": 0}), ("kl_warmup", {"warmup_steps": 10}),
    ("kl_warmup", {"warmup_steps": 1e4}),  # the CLI parses 1e4 as a float
    ("cyclical", {"cycle_steps": 10}), ("cyclical", {"total_steps": 100, "n_cycles": 2, "ratio": 1}),
    ("capacity", {"c_steps": 8, "gamma": 10.0}), ("free_bits", {"lam": 0.5}),
    ("beta_tcvae", {"dataset_size": 256}), ("beta_tcvae", {"dataset_size": 127, "sampling": "mss"}),
    ("dip_vae_i", {}), ("dip_vae_ii", {"lambda_od": 1, "lambda_d": 1}),
    ("info_vae", {"prior_samples": 16, "kernel": "imq", "alpha": -1.0}), ("iwae", {"k": 3}),
    ("elbo", {}), ("reconstruction", {}),
]


@pytest.mark.parametrize("objective, params", VALID_PARAMS)
def test_valid_objective_params_pass(objective, params):
    model = "simple_ae" if objective == "reconstruction" else "pytorch_examples"
    validate(TrainConfig(model=model, objective=objective, objective_params=params))


@pytest.mark.parametrize("cfg, message", [
    (dict(objective="beta_vae", objective_params={"betta": 4}),
     "TrainConfig.objective_params: objective 'beta_vae' has no parameter 'betta'; valid: beta, kl_estimate"),
    (dict(objective="kl_warmup", objective_params={"warmup": 4}),
     "TrainConfig.objective_params: objective 'kl_warmup' has no parameter 'warmup'; "
     "valid: warmup_steps, epoch_steps, kl_estimate"),
    (dict(objective_params={"beta": 4}),  # the preset's objective (elbo) takes none
     "TrainConfig.objective_params: objective 'elbo' has no parameter 'beta'; valid: kl_estimate"),
    (dict(objective_params={"step": 4}),  # the trainer's arguments are not parameters
     "TrainConfig.objective_params: objective 'elbo' has no parameter 'step'; valid: kl_estimate"),
    (dict(likelihood="gaussian", objective="beta_vae", objective_params={"sigmaa": 0.5}),
     "TrainConfig.objective_params: objective 'beta_vae' with likelihood 'gaussian' has no "
     "parameter 'sigmaa'; valid: beta, kl_estimate, sigma"),
    (dict(likelihood="gaussian_learned", objective_params={"log_sigma": 0.0}),
     "TrainConfig.objective_params: objective 'elbo' has no parameter 'log_sigma' ('log_sigma' is "
     "trained with the model, not set); valid: kl_estimate"),
    (dict(objective="beta_vae", objective_params={"beta": -1}),
     "TrainConfig.objective_params['beta'] (objective 'beta_vae') must be >= 0 and finite, got -1"),
    (dict(objective="beta_vae", objective_params={"beta": math.nan}),
     "TrainConfig.objective_params['beta'] (objective 'beta_vae') must be >= 0 and finite, got nan"),
    (dict(objective="beta_vae", objective_params={"beta": "4"}),
     "TrainConfig.objective_params['beta'] (objective 'beta_vae') must be >= 0 and finite, got '4'"),
    (dict(objective="iwae", objective_params={"k": 0}),
     "TrainConfig.objective_params['k'] (objective 'iwae') must be an integer >= 1, or None (5), "
     "got 0"),
    (dict(objective="iwae", objective_params={"k": 2.5}),
     "TrainConfig.objective_params['k'] (objective 'iwae') must be an integer >= 1, or None (5), "
     "got 2.5"),
    (dict(objective="cyclical", objective_params={"cycle_steps": 10, "ratio": 0}),
     "TrainConfig.objective_params['ratio'] (objective 'cyclical') must be in (0, 1] and finite, "
     "got 0"),
    (dict(objective="beta_tcvae", objective_params={"dataset_size": 256, "sampling": "mwss"}),
     "TrainConfig.objective_params['sampling'] (objective 'beta_tcvae') must be one of mws, mss, "
     "got 'mwss'"),
    (dict(likelihood="gaussian", objective_params={"sigma": 0}),
     "TrainConfig.objective_params['sigma'] (objective 'elbo' with likelihood 'gaussian') must be "
     "> 0 and finite, got 0"),
    (dict(objective="beta_tcvae"),
     "TrainConfig.objective_params: objective 'beta_tcvae' needs parameter 'dataset_size' "
     "(an integer >= 1)"),
    (dict(objective="cyclical"),
     "TrainConfig.objective_params: objective 'cyclical' needs one of cycle_steps, total_steps"),
    (dict(objective="beta_tcvae", objective_params={"dataset_size": 10, "sampling": "mss"}),
     "TrainConfig.objective_params['dataset_size'] (objective 'beta_tcvae', sampling 'mss') must be "
     ">= batch_size - 1 = 127, got 10"),
    (dict(objective_params=[("beta", 4)]),
     "TrainConfig.objective_params must be a dict of keyword parameters, got [('beta', 4)]"),
], ids=lambda v: v if isinstance(v, str) and len(v) < 40 else None)
def test_objective_params_are_refused_by_name_before_anything_compiles(cfg, message):
    with pytest.raises(ConfigError) as e:
        resolve(TrainConfig(**cfg))
    assert str(e.value) == message


def test_an_nll_is_called_a_likelihood_only_on_binary_pixels():
    from vaecommon.objectives import nll_meaning, nll_meaning_of

    assert nll_meaning("bernoulli", "fashion_mnist", "dynamic", "static")[0]  # the VampPrior protocol
    assert nll_meaning("bernoulli", "mnist5k", "static")[0]
    assert nll_meaning("bce_probs", "shapes_small", "none")[0]  # binary by construction
    grey = nll_meaning("bce_probs", "fashion_mnist", "none")  # pytorch/examples' VAE
    assert grey == (False, "not a normalised likelihood (grey pixels under a Bernoulli decoder)")
    assert not nll_meaning("bernoulli", "fashion_mnist", "dynamic", "none")[0]  # grey test images
    assert nll_meaning("gaussian", "mnist5k", "none") == (
        False, "continuous density (not comparable with a binary-pixel NLL)")
    assert not nll_meaning("mse_sum", "mnist5k", "static")[0]
    assert nll_meaning_of({"likelihood": "bernoulli", "dataset": "mnist5k",
                           "binarization": "static", "eval_binarization": "none"})[0]
