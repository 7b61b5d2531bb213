"""The twins mirror each other: presets, public names, registries, config, parameter counts and
import isolation. The checks (and the FRAMEWORK_ONLY allowlist) are in `checks_mirror`."""

from __future__ import annotations

import pytest

from parity_tests.checks_mirror import (FRAMEWORK_ONLY, ISOLATION, MIRRORED, check_import_isolation,
                                        check_param_counts, check_presets, check_public_names,
                                        check_registries, check_train_config)
from parity_tests.twins import assert_all
from vaecommon import presets


@pytest.mark.parametrize("module", ["models", "train", "convert", "figure_data", "streams", "optim",
                                    "api", "multiprocess"])
def test_public_names_mirror(module):
    assert_all(check_public_names(module))


def test_presets_registries_and_config_mirror():
    assert_all(check_presets() + check_registries() + check_train_config())


def test_framework_only_allowlist_is_exact():
    """Every allowlisted module is mirrored and every reason is written out."""
    for (module, fw), names in FRAMEWORK_ONLY.items():
        assert module in MIRRORED and fw in ("jax", "torch")
        assert all(len(reason) > 20 for reason in names.values())


@pytest.mark.parametrize("preset", presets.list_models())
def test_param_counts_match(preset):
    assert_all(check_param_counts(preset))


@pytest.mark.integration  # imports in a fresh interpreter (subprocess)
@pytest.mark.parametrize("package", list(ISOLATION))
def test_import_isolation(package):
    assert_all(check_import_isolation(package))
