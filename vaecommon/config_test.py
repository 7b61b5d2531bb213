"""Tests of `vaecommon.config`: the resume check (which config changes a checkpoint accepts)."""

from __future__ import annotations

import dataclasses

import pytest

from vaecommon.config import RESUME_FREE, TrainConfig, check_resumable, resolve

CFG = resolve(TrainConfig(model="pytorch_examples", epochs=10))


def test_bookkeeping_fields_may_change():
    saved = dataclasses.asdict(CFG)
    changed = CFG.replace(eval_every=0, eval_batch_size=7, nll_samples=3, final_nll_samples=0,
                          nll_limit=10, checkpoint_every=5, keep_checkpoints=1, figures_every=2)
    assert {f for f in RESUME_FREE} == {"eval_every", "eval_batch_size", "nll_samples",
                                        "final_nll_samples", "nll_limit", "checkpoint_every",
                                        "keep_checkpoints", "figures_every"}
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
