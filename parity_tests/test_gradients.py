"""Gradients of the loss w.r.t. every parameter, JAX vs torch and JAX vs float64 finite
differences: the checks (and what they compare, how tightly) are in `checks_gradients`."""

from __future__ import annotations

import pytest

from jaxvae import losses as jlosses
from parity_tests.checks_gradients import (FD_PRESETS, OBJECTIVES, PRESETS, check_gradients,
                                           check_gradients_fd, check_objective_gradients)
from parity_tests.twins import BATCH, OBJECTIVE_PARAMS, assert_all


@pytest.mark.parametrize("preset", PRESETS)
def test_gradients_match(preset):
    assert_all(check_gradients(preset))


@pytest.mark.parametrize("objective", OBJECTIVES)
def test_objective_gradients_match(objective):
    assert_all(check_objective_gradients(objective))


def test_every_objective_needing_noise_gets_it():
    """The objectives whose extra noise shape is not None are exactly the ones fed extra noise."""
    noisy = {o for o in OBJECTIVES
             if jlosses.extra_noise_shape(o, BATCH, 8, **OBJECTIVE_PARAMS.get(o, {})) is not None}
    assert noisy == {"iwae", "info_vae"}


@pytest.mark.parametrize("preset", FD_PRESETS)
def test_jax_gradient_matches_float64_finite_differences(preset):
    assert_all(check_gradients_fd(preset))
