"""Test tiers of torchvae's tests: which ones are integration tests, and why.

Twin of `jaxvae/conftest.py` (the tiers are explained there): the same kinds of test are
integration tests in both frameworks, even where the torch one is quicker.
"""

from __future__ import annotations

from pathlib import Path

import pytest

HERE = Path(__file__).parent

# test module -> {test function (every parametrization of it): why it is an integration test}
INTEGRATION: dict[str, dict[str, str]] = {
    "train_test.py": {
        "test_train_and_evaluate_writes_run_folder": "a whole train_and_evaluate run (2 epochs, "
                                                     "evaluation, figures, checkpoints)",
        "test_resume_is_bit_identical": "three training runs: straight, interrupted, resumed",
        "test_resume_refuses_a_different_config": "a training run, then a refused second one",
        "test_same_batch_order_as_the_shared_schedule": "a whole train_and_evaluate run (spied)",
        "test_gaussian_learned_trains_its_sigma": "ends with a whole train_and_evaluate run",
    },
    "robustness_test.py": {
        "test_nonfinite_loss_stops_naming_epoch_and_step_and_keeps_checkpoint": "a training run "
                                                                                "up to the NaN",
        "test_corrupt_and_foreign_checkpoints_give_clear_errors": "a training run whose "
                                                                  "checkpoints it corrupts",
        "test_same_config_twice_is_bit_identical": "two training runs",
        "test_sigkill_at_random_moments_never_corrupts_and_resume_is_exact": "SIGKILLs real "
                                                                             "training processes",
    },
    "multiprocess_test.py": {
        "test_two_processes_match_one_and_resume_exactly_after_stop_and_kill": "2-process "
            "training runs on a localhost gloo port, a SIGTERM, SIGKILLs and resumes",
    },
    "models_test.py": {
        "test_torchvae_models_does_not_import_jax": "imports in a fresh interpreter (subprocess)",
    },
    "data_test.py": {
        "test_import_does_not_pull_jax": "imports in a fresh interpreter (subprocess)",
    },
}


@pytest.hookimpl(tryfirst=True)  # before -m deselects
def pytest_collection_modifyitems(config, items):
    for item in items:
        if item.path.parent == HERE and item.originalname in INTEGRATION.get(item.path.name, {}):
            item.add_marker(pytest.mark.integration)
