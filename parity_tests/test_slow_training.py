"""Long cross-framework training checks on real data (Fashion-MNIST, 60k): run with `-m slow`.
The checks (one full epoch; seed statistics of the test -ELBO) are in `checks_slow_training`."""

from __future__ import annotations

import pytest

from parity_tests.checks_slow_training import (FASHION_DIR, check_full_epoch,
                                               check_seed_statistics, fashion_available)
from parity_tests.twins import assert_all

needs_fashion = pytest.mark.skipif(
    not fashion_available(),
    reason=f"Fashion-MNIST IDX files not in {FASHION_DIR} (apt install dataset-fashion-mnist)")


@pytest.mark.slow
@needs_fashion
def test_full_epoch_losses_agree():
    assert_all(check_full_epoch())


@pytest.mark.slow
@needs_fashion
def test_seeds_reach_the_same_test_elbo(tmp_path):
    assert_all(check_seed_statistics(tmp_path))
