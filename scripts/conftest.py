"""Test tiers of the commands' tests: which ones are integration tests, and why (the tiers are
explained in `jaxvae/conftest.py`). scripts/parity_test.py marks its own (it is parity's)."""

from __future__ import annotations

from pathlib import Path

import pytest

HERE = Path(__file__).parent

# test module -> {test function (every parametrization of it): why it is an integration test}
INTEGRATION: dict[str, dict[str, str]] = {
    "commands_test.py": {
        "test_scripts_run_as_files_and_help_needs_no_framework": "every script in a subprocess",
        "test_an_autoencoder_run": "trains a run, then runs the commands on it",
    },
    "reproduce_test.py": {
        "test_reproduce_writes_the_table_and_reuses_finished_runs": "training runs of both "
                                                                    "frameworks",
        "test_the_same_command_runs_on_full_mnist_from_an_idx_folder": "training runs of both "
                                                                       "frameworks",
    },
    "study_test.py": {
        "test_a_study_writes_the_table_and_figures_and_a_rerun_changes_nothing": "two sweeps per "
            "framework, restored and encoded for the metrics",
    },
}
# fixture -> why every test requesting it is an integration test
INTEGRATION_FIXTURES: dict[str, str] = {
    "runs": "commands_test's run folders: one JAX and one torch training run per module",
}


@pytest.hookimpl(tryfirst=True)  # before -m deselects
def pytest_collection_modifyitems(config, items):
    for item in items:
        if item.path.parent != HERE:
            continue
        if (item.originalname in INTEGRATION.get(item.path.name, {})
                or set(INTEGRATION_FIXTURES) & set(getattr(item, "fixturenames", ()))):
            item.add_marker(pytest.mark.integration)
