"""Tests of vaecommon.disentanglement: disentanglement_lib's own known-answer cases, ported with
their expected values and bounds, then known answers on the generated sprites (true factors,
random codes, two factors mixed by a rotation, a duplicated factor).

The ported cases use `FactorsAsObservations`, the counterpart of disentanglement_lib's
`dummy_data.IdentityObservationsData`: 10 factors with values 1..10, observation = factors.
"""

from __future__ import annotations

import math

import numpy as np
import pytest

from vaecommon import disentanglement as dis
from vaecommon.shapes import Shapes

pytest.importorskip("sklearn", reason="the disentanglement metrics need the research extra (scikit-learn)")


class FactorsAsObservations:
    """Independent uniform factors with values 1..num_values, observed as they are. The default
    (10 factors of 10 values) is the test data set of disentanglement_lib's metric tests,
    `dummy_data.IdentityObservationsData`."""

    def __init__(self, num_factors: int = 10, num_values: int = 10):
        self.num_factors = num_factors
        self.factors_num_values = (num_values,) * num_factors

    def sample_factors(self, num, random_state):
        return random_state.randint(1, self.factors_num_values[0] + 1,
                                    size=(num, self.num_factors))

    def sample_observations_from_factors(self, factors, random_state):
        return factors


IDENTITY = FactorsAsObservations()
SMALL_IDENTITY = FactorsAsObservations(num_factors=4, num_values=4)


def as_float(x):
    return np.array(x, dtype=np.float64)


def zeros(x):
    return np.zeros_like(x, dtype=np.float64)


def duplicated(x):
    x = np.array(x, dtype=np.float64)
    return np.hstack([x, x])


# ------------------------------------------ disentanglement_lib's cases (evaluation/metrics/*_test.py)

def test_utils_cases():
    # utils_test.py: histogram discretizer, entropy, mutual information
    target = np.array([[0.1, 0.2, 0.3, 0.4, 0.5, 0.6], [0.6, .5, .4, .3, .2, .1]])
    np.testing.assert_array_equal(dis.histogram_discretize(target.T, num_bins=3).T,
                                  [[1, 1, 2, 2, 3, 3], [3, 3, 2, 2, 1, 1]])
    np.testing.assert_allclose(dis.discrete_entropy(np.array([[1, 1, 2, 2, 3, 3],
                                                              [3, 3, 2, 2, 1, 1]]).T),
                               [np.log(3), np.log(3)])
    xs = np.array([[1, 2, 1, 2], [1, 1, 2, 2]])
    ys = np.array([[1, 2, 1, 2], [2, 2, 1, 1]])
    np.testing.assert_allclose(dis.discrete_mutual_info(xs.T, ys.T),
                               [[np.log(2), 0.], [0., np.log(2)]], atol=1e-15)


def test_beta_vae_case():
    # beta_vae_test.py: batch 5, 2000 train, 2000 eval points -> both accuracies in [0.9, 1]
    scores = dis.beta_vae_score(IDENTITY, lambda x: x, np.random.RandomState(0), batch_size=5,
                                num_train=2000, num_eval=2000)
    assert 0.9 <= scores["train_accuracy"] <= 1.0 and 0.9 <= scores["eval_accuracy"] <= 1.0


@pytest.mark.parametrize("representation, low, high", [(lambda x: x, 0.9, 1.0),
                                                       (np.zeros_like, 0.0, 0.2)],
                         ids=["identity", "zeros"])
def test_factor_vae_cases(representation, low, high):
    # factor_vae_test.py: batch 5, 3000 train, 2000 eval, 2500 for the variances, and the
    # function's own prune threshold 0 (so all-zero codes keep every dimension: 0/0 votes)
    scores = dis.factor_vae_score(IDENTITY, representation, np.random.RandomState(0),
                                  batch_size=5, num_train=3000, num_eval=2000,
                                  num_variance_estimate=2500, prune_threshold=0.0)
    assert low <= scores["train_accuracy"] <= high and low <= scores["eval_accuracy"] <= high


@pytest.mark.parametrize("representation, low, high", [(lambda x: x, 0.9, 1.0),
                                                       (np.zeros_like, 0.0, 0.2),
                                                       (duplicated, 0.0, 0.1)],
                         ids=["identity", "zeros", "duplicated"])
def test_mig_cases(representation, low, high):
    # mig_test.py: identity discretizer (num_bins=None), 3000 points
    scores = dis.mig(IDENTITY, representation, np.random.RandomState(0), num_train=3000,
                     num_bins=None)
    assert low <= scores["discrete_mig"] <= high


@pytest.mark.parametrize("representation, low, high", [(as_float, 0.9, 1.0), (zeros, 0.0, 0.2),
                                                       (duplicated, 0.0, 0.2)],
                         ids=["identity", "zeros", "duplicated"])
def test_sap_cases(representation, low, high):
    # sap_score_test.py: 3000 train, 3000 test, continuous factors
    scores = dis.sap_score(IDENTITY, representation, np.random.RandomState(0), num_train=3000,
                           num_test=3000, continuous_factors=True)
    assert low <= scores["SAP_score"] <= high


DIAG = np.diag(5. * np.ones(5))


@pytest.mark.parametrize("importance, disentanglement, completeness", [
    (DIAG, 1.0, 1.0),
    (np.array([[1., 0.], [0., 1.], [0., 0.]]), 1.0, 1.0),  # an empty code
    (np.zeros((10, 10)), 0.0, 0.0),
    (np.vstack([DIAG, DIAG]), 1.0, 1.0 - np.log(2) / np.log(10)),  # redundant codes
    (DIAG[:2, :], 1.0, 1.0),  # missed factors
    (np.hstack([DIAG, DIAG]), 1.0 - np.log(2) / np.log(10), 1.0),  # one code, two factors
], ids=["diagonal", "diagonal_empty_codes", "zero", "redundant_codes", "missed_factors",
        "one_code_two_factors"])
def test_dci_importance_cases(importance, disentanglement, completeness):
    # dci_test.py: DisentanglementTest and CompletenessTest, exact values
    np.testing.assert_allclose(dis.dci_disentanglement(importance), disentanglement, atol=1e-7)
    np.testing.assert_allclose(dis.dci_completeness(importance), completeness, atol=1e-7)


def _permuted(seed):
    rep_rng = np.random.RandomState(seed)

    def permuted(x):  # each observation's factors shuffled: every code matters for every factor
        code = np.array(x, dtype=np.float64)
        for i in range(code.shape[0]):
            code[i, :] = rep_rng.permutation(code[i, :])
        return code

    return permuted


def _check_dci(data, num):
    """dci_test.py DCITest's three cases and bounds on `data`, `num` train and test points."""
    f = data.num_factors
    scores = dis.dci(data, as_float, np.random.RandomState(0), num_train=num, num_test=num)
    assert 0.9 <= scores["disentanglement"] <= 1.0 and 0.9 <= scores["completeness"] <= 1.0
    assert scores["informativeness_test"] == 1.0  # the factors themselves predict perfectly
    scores = dis.dci(data, _permuted(0), np.random.RandomState(0), num_train=num, num_test=num)
    assert 0.0 <= scores["disentanglement"] <= 0.2 and 0.0 <= scores["completeness"] <= 0.2
    scores = dis.dci(data, duplicated, np.random.RandomState(0), num_train=num, num_test=num)
    assert 0.9 <= scores["disentanglement"] <= 1.0
    # disentanglement_lib's target is 1 - log 2 / log 10 +- 0.1 for 10 factors; the importance
    # of each factor splits over its two copies among 2F codes: 1 - log 2 / log(2F) (0.77 there)
    target = 1. - np.log(2) / np.log(2 * f)
    assert target - .1 <= scores["completeness"] <= target + .1
    if f == 10:
        target = 1. - np.log(2) / np.log(10)
        assert target - .1 <= scores["completeness"] <= target + .1


@pytest.mark.slow
def test_dci_cases():
    # dci_test.py DCITest as it is: 10 factors, 1000 train, 1000 test (~100 s: 100 trees per
    # class and factor)
    _check_dci(IDENTITY, 1000)


def test_dci_cases_small():
    # the same three cases on 4 factors of 4 values, 400 points (a few seconds)
    _check_dci(SMALL_IDENTITY, 400)


# ------------------------------------------------------------------- on the generated sprites

SPRITES = Shapes("shapes_small")
SIZES = dict(beta_vae=dict(batch_size=16, num_train=300, num_eval=300),
             factor_vae=dict(batch_size=32, num_train=300, num_eval=300,
                             num_variance_estimate=1000),
             mig=dict(num_train=2000), sap=dict(num_train=1000, num_test=500),
             dci=dict(num_train=500, num_test=500))


@pytest.fixture(scope="module")
def truth():
    """Codes = the true factor indices, read back from the image (an image of several factor
    tuples, a square a quarter turn apart say, gets the first in index order)."""
    factors = SPRITES.index_to_factors(np.arange(len(SPRITES)))
    packed = np.packbits(SPRITES.images(factors).reshape(len(factors), -1), axis=1)
    table: dict[bytes, np.ndarray] = {}
    for f, row in zip(factors, packed):
        table.setdefault(row.tobytes(), f)

    def representation(observations):  # float32 (B, 64, 64, 1) -> (B, 5)
        rows = np.packbits(observations[..., 0].reshape(len(observations), -1) > 0.5, axis=1)
        return np.array([table[r.tobytes()] for r in rows], np.float64)

    return representation


def run(representation, metrics=tuple(dis.METRICS)):
    """The metrics with the sizes above, each from RandomState(0): every representation sees the
    same factor draws, so differences between representations are theirs alone."""
    return {m: dis.METRICS[m](SPRITES, representation, np.random.RandomState(0), **SIZES[m])
            for m in metrics}


@pytest.fixture(scope="module")
def truth_scores(truth):
    return run(truth)


def test_true_factors_score_high(truth_scores):
    s = truth_scores
    assert s["beta_vae"]["eval_accuracy"] >= 0.95
    assert s["factor_vae"]["eval_accuracy"] >= 0.85 and s["factor_vae"]["num_active_dims"] == 5
    # Not 1: a square's orientation is only known modulo a quarter turn and an ellipse's modulo a
    # half turn, so the orientation code is partly about the shape and short of H(orientation).
    assert 0.8 <= s["mig"]["discrete_mig"] < 0.9
    # discrete SAP fits a linear classifier on one code: 8 ordered classes are not linearly
    # separable in 1-D, which caps the score far below 1 even for the true factors
    assert 0.3 <= s["sap"]["SAP_score"] <= 0.45
    assert s["dci"]["disentanglement"] >= 0.8 and s["dci"]["completeness"] >= 0.8
    assert s["dci"]["informativeness_test"] >= 0.85


def test_random_codes_score_chance():
    rng = np.random.default_rng(1)
    s = run(lambda obs: rng.normal(size=(len(obs), 5)), ("beta_vae", "factor_vae", "mig", "sap"))
    assert s["beta_vae"]["eval_accuracy"] <= 0.3  # chance: 1 / 5 factors
    assert s["factor_vae"]["eval_accuracy"] <= 0.3
    assert s["mig"]["discrete_mig"] <= 0.02 and s["sap"]["SAP_score"] <= 0.03
    s = dis.dci(SPRITES, lambda obs: rng.normal(size=(len(obs), 5)), np.random.RandomState(0),
                num_train=200, num_test=200)
    assert s["disentanglement"] <= 0.05 and s["completeness"] <= 0.05


def test_rotation_mixing_two_factors_lowers_mig(truth, truth_scores):
    def rotated(obs):  # position_x, position_y -> (x + y, x - y) / sqrt(2)
        z = truth(obs)
        x, y = z[:, 3].copy(), z[:, 4].copy()
        z[:, 3], z[:, 4] = (x + y) / math.sqrt(2), (x - y) / math.sqrt(2)
        return z

    s = run(rotated, ("mig", "dci"))
    # positions were perfectly identified (gap 1 each); mixed, both codes carry the same
    # information about each: two of the five gaps close
    assert truth_scores["mig"]["discrete_mig"] - s["mig"]["discrete_mig"] == pytest.approx(
        2 / 5, abs=0.05)
    assert s["dci"]["disentanglement"] < truth_scores["dci"]["disentanglement"] - 0.1
    assert s["dci"]["completeness"] < truth_scores["dci"]["completeness"] - 0.1


def test_duplicated_factor(truth, truth_scores):
    s = run(lambda obs: np.hstack([truth(obs), truth(obs)[:, 3:4]]), ("mig", "dci"))
    # position_x now has two equally informative codes: its gap closes, the others stay
    assert truth_scores["mig"]["discrete_mig"] - s["mig"]["discrete_mig"] == pytest.approx(
        1 / 5, abs=0.03)
    # each code still describes one factor; position_x is spread over two codes
    assert s["dci"]["disentanglement"] == pytest.approx(truth_scores["dci"]["disentanglement"],
                                                        abs=0.02)
    assert s["dci"]["completeness"] < truth_scores["dci"]["completeness"] - 0.03


def test_generator_random_state_and_evaluate(truth):
    a = dis.evaluate(SPRITES, truth, np.random.default_rng(0), ("mig", "sap"),
                     mig={"num_train": 500}, sap={"num_train": 300, "num_test": 300})
    b = dis.evaluate(SPRITES, truth, np.random.default_rng(0), ("mig", "sap"),
                     mig={"num_train": 500}, sap={"num_train": 300, "num_test": 300})
    assert a == b and set(a) == {"mig", "sap"} and a["mig"]["discrete_mig"] > 0.7
    with pytest.raises(ValueError, match=r"unknown metric\(s\) \['irs'\]"):
        dis.evaluate(SPRITES, truth, np.random.default_rng(0), ("irs",))
    with pytest.raises(ValueError, match=r"must map 16 observations to \(16, D\) codes"):
        dis.mig(SPRITES, lambda obs: obs[:, 0, 0, 0], np.random.default_rng(0), num_train=16)
