"""The two trainers take the same steps (`Trainer.apply_update`, BatchNorm in train mode, the
real epoch loops' batch order and fresh eps): the checks, and what they compare how tightly,
are in `checks_training`."""

from __future__ import annotations

import pytest

from parity_tests.checks_training import (OPTIMIZER_CASES, check_batch_order,
                                          check_batchnorm_training, check_fresh_eps,
                                          check_optimizer_steps)
from parity_tests.twins import assert_all


@pytest.mark.parametrize("case", list(OPTIMIZER_CASES))
def test_optimizer_steps_match(case):
    assert_all(check_optimizer_steps(case))


def test_cases_cover_weight_decay_clipping_and_schedule():
    used = {k for c in OPTIMIZER_CASES.values() for k in c}
    assert {"weight_decay", "grad_clip", "warmup_steps", "schedule", "momentum"} <= used
    assert {c["optimizer"] for c in OPTIMIZER_CASES.values()} == {"sgd", "adam", "adamw"}


def test_batchnorm_training_matches():
    assert_all(check_batchnorm_training())


@pytest.mark.integration  # each framework's whole train_and_evaluate
def test_both_trainers_consume_epoch_batches(tmp_path):
    assert_all(check_batch_order(tmp_path))


@pytest.mark.integration  # each framework's whole train_and_evaluate
def test_each_step_draws_fresh_eps_in_both_trainers(tmp_path):
    assert_all(check_fresh_eps(tmp_path))
