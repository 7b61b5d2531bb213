"""Test tiers of jaxvae's tests: which ones are integration tests, and why.

Tiers (markers registered in pyproject.toml): unit is everything unmarked (the default dev loop,
`pytest -q -n 2 -m "not slow and not integration"`); integration is a whole training run, a
sweep, another Python process (a kill, a forced multi-device run, an import check in a fresh
interpreter); slow is the statistical runs. The default `pytest -q -n 2` runs unit + integration.

The marks live here, in one table, rather than in the test modules: a test's tier is a property
of what it runs, listed with the reason, and a stale name fails `parity_tests/test_tiers.py`.
"""

from __future__ import annotations

from pathlib import Path

import pytest

HERE = Path(__file__).parent

# test module -> {test function (every parametrization of it): why it is an integration test}
INTEGRATION: dict[str, dict[str, str]] = {
    "bench_test.py": {
        "test_forced_host_devices_row_runs_data_parallel": "a bench worker subprocess with 2 "
                                                            "forced host devices",
    },
    "train_test.py": {
        "test_train_and_evaluate_writes_run_folder": "a whole train_and_evaluate run (2 epochs, "
                                                     "evaluation, figures, checkpoints)",
        "test_resume_is_bit_identical": "three training runs: straight, interrupted, resumed",
        "test_resume_refuses_a_different_config": "a training run, then a refused second one",
        "test_gaussian_learned_trains_its_sigma": "ends with a whole train_and_evaluate run",
        "test_multi_device_matches_single_device": "a subprocess with 4 forced host devices",
        "test_a_run_compiles_once_whatever_its_length": "two training runs in subprocesses",
    },
    "sweep_test.py": {
        "test_each_member_computes_its_solo_run": "a sweep and each member's solo run",
        "test_sweep_resume_is_bit_identical_and_refuses_a_changed_member": "sweeps run, "
                                                                           "interrupted, resumed",
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
            "training runs on a localhost coordinator, a SIGTERM, SIGKILLs and resumes",
    },
    "stream_data_test.py": {
        "test_worker_processes_give_the_same_batches": "Grain worker processes (each imports JAX)",
        "test_training_streamed_equals_resident_and_resumes_exactly": "four training runs: "
                                                                      "resident, streamed, "
                                                                      "stopped, resumed",
        "test_image_folder_training_streamed_equals_resident": "two training runs",
    },
    "models_test.py": {
        "test_jaxvae_models_does_not_import_torch": "imports in a fresh interpreter (subprocess)",
    },
    "data_test.py": {
        "test_import_does_not_pull_torch_or_tfds": "imports in a fresh interpreter (subprocess)",
    },
}


@pytest.hookimpl(tryfirst=True)  # before -m deselects
def pytest_collection_modifyitems(config, items):
    for item in items:
        if item.path.parent == HERE and item.originalname in INTEGRATION.get(item.path.name, {}):
            item.add_marker(pytest.mark.integration)
