"""Supervised disentanglement metrics: beta-VAE, FactorVAE, MIG, SAP and DCI scores.

Framework-free (NumPy and scikit-learn, the `research` extra). Each metric takes

- `data`: a `GroundTruthData` (factors sampler + observation function, the interface of
  disentanglement_lib's `GroundTruthData`; `vaecommon.shapes.Shapes` implements it),
- `representation`: a function from a batch of observations (NumPy, e.g. float32 (B, 64, 64, 1))
  to codes (B, D) (a VAE's encoder mean, say; wrap a model in NumPy in and out),
- `random_state`: an explicit `np.random.RandomState` or `np.random.Generator`; nothing here
  touches a global RNG (scikit-learn estimators get an int seed drawn from it),

and returns a dict of floats. Definitions and defaults follow google-research/disentanglement_lib
(github.com/google-research/disentanglement_lib, `evaluation/metrics/{beta_vae, factor_vae, mig,
sap_score, dci, utils}.py`; the defaults are the values of its `config/unsupervised_study_v1/
metric_configs/*.gin`, the settings of Locatello et al. 2019, "Challenging Common Assumptions in
the Unsupervised Learning of Disentangled Representations"). The code is written anew; each
function's docstring names the file it follows and where it deliberately differs. Codes and
factors are (N, D) and (N, F) here (disentanglement_lib passes them transposed).

Known answers (`disentanglement_test.py`): codes equal to the factors score ~1 on every metric;
constant codes score ~0 (FactorVAE: chance); duplicating every code ([z, z]) sends MIG and SAP to
~0, keeps DCI disentanglement ~1 and brings DCI completeness to ~1 - log 2 / log(2F).
"""

from __future__ import annotations

import math
import warnings
from typing import Any, Callable, Protocol, Sequence

import numpy as np

__all__ = [
    "GroundTruthData", "Representation", "METRICS", "sample_codes", "histogram_discretize",
    "discrete_mutual_info", "discrete_entropy", "beta_vae_score", "factor_vae_score", "mig",
    "sap_score", "sap_score_matrix", "dci", "gbt_importance", "dci_disentanglement",
    "dci_completeness", "evaluate",
]

RandomState = Any  # np.random.RandomState | np.random.Generator
Representation = Callable[[np.ndarray], np.ndarray]
"""Observations (B, ...) -> codes (B, D); called on batches of `batch_size` observations."""


class GroundTruthData(Protocol):
    """A two-step generative model with known factors (disentanglement_lib's
    `data/ground_truth/ground_truth_data.py`): factors are integer indices, factor i taking
    values 0..factors_num_values[i] - 1."""

    num_factors: int
    factors_num_values: Sequence[int]

    def sample_factors(self, num: int, random_state: RandomState) -> np.ndarray:
        """(num, num_factors) integer factors."""

    def sample_observations_from_factors(self, factors: np.ndarray,
                                         random_state: RandomState) -> np.ndarray:
        """(N, num_factors) factors -> (N, ...) observations."""


# ------------------------------------------------------------------------------------ helpers

def _randint(random_state: RandomState, high: int) -> int:
    if isinstance(random_state, np.random.Generator):
        return int(random_state.integers(high))
    return int(random_state.randint(high))


def _seed(random_state: RandomState) -> int:
    """An int seed for a scikit-learn estimator, drawn from the caller's random state."""
    return _randint(random_state, 2**31 - 1)


def _codes(representation: Representation, observations: np.ndarray) -> np.ndarray:
    codes = np.asarray(representation(observations), np.float64)
    if codes.ndim != 2 or len(codes) != len(observations):
        raise ValueError(f"the representation must map {len(observations)} observations to "
                         f"({len(observations)}, D) codes, got shape {codes.shape}")
    return codes


def sample_codes(data: GroundTruthData, representation: Representation, num: int,
                 random_state: RandomState, *, batch_size: int = 16
                 ) -> tuple[np.ndarray, np.ndarray]:
    """Draws `num` factors and observations and encodes them, `batch_size` at a time.

    Follows disentanglement_lib `utils.generate_batch_factor_code` (which returns both
    transposed).

    Returns:
      (codes float64 (num, D), factors int64 (num, F)).
    """
    codes, factors = [], []
    for start in range(0, num, batch_size):
        f = np.asarray(data.sample_factors(min(batch_size, num - start), random_state))
        codes.append(_codes(representation, data.sample_observations_from_factors(f, random_state)))
        factors.append(f)
    return np.concatenate(codes), np.concatenate(factors).astype(np.int64)


def histogram_discretize(codes: np.ndarray, num_bins: int = 20) -> np.ndarray:
    """Each code dimension binned into `num_bins` equal-width bins over its own range.

    disentanglement_lib `utils._histogram_discretize`: `np.digitize` against the left bin edges
    of `np.histogram`, so bins are numbered 1..num_bins (the maximum falls in bin num_bins).

    Args:
      codes: (N, D).

    Returns:
      int64 (N, D) in 1..num_bins.
    """
    codes = np.asarray(codes)
    out = np.empty(codes.shape, np.int64)
    for d in range(codes.shape[1]):
        edges = np.histogram(codes[:, d], num_bins)[1][:-1]
        out[:, d] = np.digitize(codes[:, d], edges)
    return out


def discrete_mutual_info(codes: np.ndarray, factors: np.ndarray) -> np.ndarray:
    """I(code_d; factor_f) in nats between discrete codes (N, D) and factors (N, F) -> (D, F).

    disentanglement_lib `utils.discrete_mutual_info` (`sklearn.metrics.mutual_info_score`)."""
    from sklearn.metrics import mutual_info_score

    codes, factors = np.asarray(codes), np.asarray(factors)
    return np.array([[mutual_info_score(factors[:, f], codes[:, d])
                      for f in range(factors.shape[1])] for d in range(codes.shape[1])])


def discrete_entropy(factors: np.ndarray) -> np.ndarray:
    """H(factor_f) in nats of discrete factors (N, F) -> (F,) (`utils.discrete_entropy`)."""
    from sklearn.metrics import mutual_info_score

    factors = np.asarray(factors)
    return np.array([mutual_info_score(factors[:, f], factors[:, f])
                     for f in range(factors.shape[1])])


# ---------------------------------------------------------------------------- beta-VAE score

def _beta_vae_points(data, representation, batch_size, num_points, random_state):
    """(features (num_points, D): mean |z1 - z2| over a batch of pairs sharing one factor,
    labels (num_points,): that factor)."""
    features, labels = [], np.zeros(num_points, np.int64)
    for i in range(num_points):
        labels[i] = index = _randint(random_state, data.num_factors)
        factors1 = np.array(data.sample_factors(batch_size, random_state))
        factors2 = np.array(data.sample_factors(batch_size, random_state))
        factors2[:, index] = factors1[:, index]
        z1 = _codes(representation, data.sample_observations_from_factors(factors1, random_state))
        z2 = _codes(representation, data.sample_observations_from_factors(factors2, random_state))
        features.append(np.mean(np.abs(z1 - z2), axis=0))
    return np.stack(features), labels


def beta_vae_score(data: GroundTruthData, representation: Representation,
                   random_state: RandomState, *, batch_size: int = 64, num_train: int = 10_000,
                   num_eval: int = 5_000) -> dict[str, float]:
    """The beta-VAE disentanglement metric (Higgins et al. 2017, "beta-VAE: Learning Basic Visual
    Concepts with a Constrained Variational Framework").

    One point: pick a factor k uniformly, draw `batch_size` pairs of factor vectors that agree
    on k, encode both sides and average |z1 - z2| over the batch; a linear classifier predicts k
    from that (D,) vector. Score: its accuracy on `num_eval` fresh points.

    disentanglement_lib `evaluation/metrics/beta_vae.py` (`compute_beta_vae_sklearn`), defaults
    from `beta_vae_sklearn.gin` (batch_size 64, num_train 10000, num_eval 5000). The classifier
    is scikit-learn's `LogisticRegression()` with today's defaults (lbfgs, multinomial);
    disentanglement_lib ran scikit-learn < 0.22, whose default was liblinear one-vs-rest.

    Returns:
      {"train_accuracy", "eval_accuracy"} in [0, 1]; chance is 1 / num_factors.
    """
    from sklearn.linear_model import LogisticRegression

    x_train, y_train = _beta_vae_points(data, representation, batch_size, num_train, random_state)
    model = LogisticRegression(random_state=_seed(random_state))
    with warnings.catch_warnings():  # lbfgs at its default 100 iterations on raw |z1 - z2|: its
        warnings.simplefilter("ignore", _convergence_warning())  # ConvergenceWarning flooded
        model.fit(x_train, y_train)                              # study logs; accuracy is the score
    x_eval, y_eval = _beta_vae_points(data, representation, batch_size, num_eval, random_state)
    return {"train_accuracy": float(np.mean(model.predict(x_train) == y_train)),
            "eval_accuracy": float(np.mean(model.predict(x_eval) == y_eval))}


# --------------------------------------------------------------------------- FactorVAE score

def _factor_vae_votes(data, representation, batch_size, num_points, random_state,
                      scale, active):
    """votes (F, num_active): how often fixing factor f made active dim j the least varying."""
    votes = np.zeros((data.num_factors, int(active.sum())), np.int64)
    for _ in range(num_points):
        index = _randint(random_state, data.num_factors)
        factors = np.array(data.sample_factors(batch_size, random_state))
        factors[:, index] = factors[0, index]
        z = _codes(representation, data.sample_observations_from_factors(factors, random_state))
        local = np.var(z, axis=0, ddof=1)
        with np.errstate(divide="ignore", invalid="ignore"):  # 0/0 -> nan: argmin takes the first
            votes[index, np.argmin(local[active] / scale[active])] += 1
    return votes


def factor_vae_score(data: GroundTruthData, representation: Representation,
                     random_state: RandomState, *, batch_size: int = 64,
                     num_train: int = 10_000, num_eval: int = 5_000,
                     num_variance_estimate: int = 10_000,
                     prune_threshold: float = 0.05) -> dict[str, float]:
    """The FactorVAE disentanglement metric (Kim & Mnih 2018, "Disentangling by Factorising").

    Codes are divided by their global variances (from `num_variance_estimate` observations);
    dimensions whose global standard deviation is below `prune_threshold` (collapsed to the
    prior) are dropped. One point: fix a random factor k across a batch of `batch_size`,
    encode, and take the active dimension of least normalised variance. A majority-vote
    classifier maps each dimension to the factor that most often chose it. Score: its accuracy
    on `num_eval` fresh points.

    disentanglement_lib `evaluation/metrics/factor_vae.py` (`compute_factor_vae`), defaults
    from `factor_vae_metric.gin` (batch_size 64, num_train 10000, num_eval 5000,
    num_variance_estimate 10000, prune_dims.threshold 0.05; the function's own default
    threshold is 0). Differences: the global variances are estimated from codes drawn
    `batch_size` at a time (there, one call on all of them) and `num_active_dims` counts the
    active dimensions (there, the length of the boolean mask, i.e. all dimensions).

    Returns:
      {"train_accuracy", "eval_accuracy", "num_active_dims"}; all 0 when no dimension is active.
    """
    codes, _ = sample_codes(data, representation, num_variance_estimate, random_state,
                            batch_size=batch_size)
    scale = np.var(codes, axis=0, ddof=1)
    active = np.sqrt(scale) >= prune_threshold
    if not active.any():
        return {"train_accuracy": 0.0, "eval_accuracy": 0.0, "num_active_dims": 0}
    train = _factor_vae_votes(data, representation, batch_size, num_train, random_state,
                              scale, active)
    classifier = np.argmax(train, axis=0)  # (num_active,): the factor each dimension stands for
    columns = np.arange(train.shape[1])
    evaluate_ = _factor_vae_votes(data, representation, batch_size, num_eval, random_state,
                                  scale, active)
    return {"train_accuracy": float(train[classifier, columns].sum() / train.sum()),
            "eval_accuracy": float(evaluate_[classifier, columns].sum() / evaluate_.sum()),
            "num_active_dims": int(active.sum())}


# ----------------------------------------------------------------------------------------- MIG

def mig(data: GroundTruthData, representation: Representation, random_state: RandomState, *,
        num_train: int = 10_000, batch_size: int = 16,
        num_bins: int | None = 20) -> dict[str, float]:
    """The mutual information gap (Chen et al. 2018, "Isolating Sources of Disentanglement in
    Variational Autoencoders").

    Codes are discretised (`histogram_discretize`, `num_bins` per dimension; None: the codes
    are already discrete and used as they are); for each factor f, the gap between the largest
    and second-largest I(code_d; factor_f), divided by H(factor_f); averaged over factors.

    disentanglement_lib `evaluation/metrics/mig.py` (`compute_mig`), defaults from `mig.gin`
    (num_train 10000, histogram discretizer with 20 bins, batch_size 16).

    Returns:
      {"discrete_mig"} in [0, 1].
    """
    codes, factors = sample_codes(data, representation, num_train, random_state,
                                  batch_size=batch_size)
    discrete = codes if num_bins is None else histogram_discretize(codes, num_bins)
    m = discrete_mutual_info(discrete, factors)  # (D, F)
    top = np.sort(m, axis=0)[::-1]
    second = top[1] if len(top) > 1 else np.zeros_like(top[0])  # one code: the gap is I itself
    return {"discrete_mig": float(np.mean((top[0] - second) / discrete_entropy(factors)))}


# ----------------------------------------------------------------------------------------- SAP

def sap_score_matrix(codes: np.ndarray, factors: np.ndarray, codes_test: np.ndarray,
                     factors_test: np.ndarray, *, continuous_factors: bool,
                     random_state: RandomState | None = None) -> np.ndarray:
    """How well each single code predicts each factor, (D, F).

    Continuous factors: the squared correlation cov(z_d, y_f)^2 / (var z_d var y_f) on the
    training codes (0 where var z_d <= 1e-12). Discrete factors: the test accuracy of a
    `LinearSVC(C=0.01, class_weight="balanced")` fit on the one code (disentanglement_lib
    `sap_score._compute_score_matrix`; its SVMs get no seed, here one drawn from random_state).
    """
    from sklearn.svm import LinearSVC

    codes, factors = np.asarray(codes, np.float64), np.asarray(factors)
    out = np.zeros((codes.shape[1], factors.shape[1]))
    for d in range(codes.shape[1]):
        for f in range(factors.shape[1]):
            if continuous_factors:
                cov = np.cov(codes[:, d], factors[:, f], ddof=1)
                if cov[0, 0] > 1e-12:
                    out[d, f] = cov[0, 1] ** 2 / (cov[0, 0] * cov[1, 1])
            else:
                seed = None if random_state is None else _seed(random_state)
                svm = LinearSVC(C=0.01, class_weight="balanced", random_state=seed)
                with warnings.catch_warnings():  # C = 0.01 on one feature: liblinear may stop early
                    warnings.simplefilter("ignore", _convergence_warning())
                    svm.fit(codes[:, d:d + 1], factors[:, f])
                out[d, f] = np.mean(svm.predict(codes_test[:, d:d + 1]) == factors_test[:, f])
    return out


def sap_score(data: GroundTruthData, representation: Representation, random_state: RandomState,
              *, num_train: int = 10_000, num_test: int = 5_000, batch_size: int = 16,
              continuous_factors: bool = False) -> dict[str, float]:
    """The Separated Attribute Predictability score (Kumar et al. 2018, "Variational Inference of
    Disentangled Latent Concepts from Unlabeled Observations", Section 3).

    For each factor, the gap between the best and second-best single-code predictor in
    `sap_score_matrix`, averaged over factors.

    disentanglement_lib `evaluation/metrics/sap_score.py` (`compute_sap`), defaults from
    `sap_score.gin` (num_train 10000, num_test 5000, continuous_factors False, batch_size 16).

    Returns:
      {"SAP_score"} in [0, 1].
    """
    codes, factors = sample_codes(data, representation, num_train, random_state,
                                  batch_size=batch_size)
    codes_test, factors_test = sample_codes(data, representation, num_test, random_state,
                                            batch_size=batch_size)
    matrix = np.sort(sap_score_matrix(codes, factors, codes_test, factors_test,
                                      continuous_factors=continuous_factors,
                                      random_state=random_state), axis=0)
    second = matrix[-2] if len(matrix) > 1 else np.zeros_like(matrix[-1])
    return {"SAP_score": float(np.mean(matrix[-1] - second))}


# ----------------------------------------------------------------------------------------- DCI

def _convergence_warning():
    from sklearn.exceptions import ConvergenceWarning

    return ConvergenceWarning


def gbt_importance(codes: np.ndarray, factors: np.ndarray, codes_test: np.ndarray,
                   factors_test: np.ndarray, *, random_state: RandomState | None = None
                   ) -> tuple[np.ndarray, float, float]:
    """Importance of each code for each factor from gradient boosted trees.

    One `GradientBoostingClassifier()` (scikit-learn defaults: 100 depth-3 trees) per factor on
    all codes; importance = |feature_importances_| (disentanglement_lib
    `dci.compute_importance_gbt`; its trees get no seed, which leaves feature-order tie-breaks to
    NumPy's global RNG; here a seed drawn from random_state).

    Returns:
      (importance (D, F), mean train accuracy, mean test accuracy).
    """
    from sklearn.ensemble import GradientBoostingClassifier

    importance = np.zeros((codes.shape[1], factors.shape[1]))
    train_acc, test_acc = [], []
    for f in range(factors.shape[1]):
        seed = None if random_state is None else _seed(random_state)
        model = GradientBoostingClassifier(random_state=seed)
        model.fit(codes, factors[:, f])
        importance[:, f] = np.abs(model.feature_importances_)
        train_acc.append(np.mean(model.predict(codes) == factors[:, f]))
        test_acc.append(np.mean(model.predict(codes_test) == factors_test[:, f]))
    return importance, float(np.mean(train_acc)), float(np.mean(test_acc))


def _one_minus_entropy(p: np.ndarray) -> np.ndarray:
    """1 - H(column) / log(rows) for each column of a non-negative (K, M) matrix, after adding
    1e-11 and normalising each column (disentanglement_lib's `scipy.stats.entropy(p + 1e-11,
    base=K)`). K = 1: 1 (one outcome is fully concentrated)."""
    k = p.shape[0]
    if k == 1:
        return np.ones(p.shape[1])
    q = p + 1e-11
    q = q / q.sum(axis=0, keepdims=True)
    return 1.0 - (-(q * np.log(q)).sum(axis=0)) / math.log(k)


def dci_disentanglement(importance: np.ndarray) -> float:
    """DCI disentanglement of a (D, F) importance matrix: each code's 1 - H_F(its importance
    over factors), weighted by the code's share of the total importance (uniform when all are 0).
    disentanglement_lib `dci.disentanglement`."""
    importance = np.asarray(importance, np.float64)
    per_code = _one_minus_entropy(importance.T)
    weights = importance if importance.sum() != 0 else np.ones_like(importance)
    return float(np.sum(per_code * weights.sum(axis=1) / weights.sum()))


def dci_completeness(importance: np.ndarray) -> float:
    """DCI completeness of a (D, F) importance matrix: each factor's 1 - H_D(its importance over
    codes), weighted by the factor's share of the total importance. disentanglement_lib
    `dci.completeness`."""
    importance = np.asarray(importance, np.float64)
    per_factor = _one_minus_entropy(importance)
    weights = importance if importance.sum() != 0 else np.ones_like(importance)
    return float(np.sum(per_factor * weights.sum(axis=0) / weights.sum()))


def dci(data: GroundTruthData, representation: Representation, random_state: RandomState, *,
        num_train: int = 10_000, num_test: int = 5_000,
        batch_size: int = 16) -> dict[str, float]:
    """Disentanglement, completeness and informativeness (Eastwood & Williams 2018, "A Framework
    for the Quantitative Evaluation of Disentangled Representations").

    `gbt_importance` on `num_train` codes, then `dci_disentanglement` and `dci_completeness` of
    the importance matrix; informativeness is the trees' mean accuracy (train and test).

    disentanglement_lib `evaluation/metrics/dci.py` (`compute_dci`), defaults from `dci.gin`
    (num_train 10000, num_test 5000, batch_size 16).

    Returns:
      {"informativeness_train", "informativeness_test", "disentanglement", "completeness"}.
    """
    codes, factors = sample_codes(data, representation, num_train, random_state,
                                  batch_size=batch_size)
    codes_test, factors_test = sample_codes(data, representation, num_test, random_state,
                                            batch_size=batch_size)
    importance, train_acc, test_acc = gbt_importance(codes, factors, codes_test, factors_test,
                                                     random_state=random_state)
    return {"informativeness_train": train_acc, "informativeness_test": test_acc,
            "disentanglement": dci_disentanglement(importance),
            "completeness": dci_completeness(importance)}


# ------------------------------------------------------------------------------------- all

METRICS: dict[str, Callable[..., dict[str, float]]] = {
    "beta_vae": beta_vae_score,
    "factor_vae": factor_vae_score,
    "mig": mig,
    "sap": sap_score,
    "dci": dci,
}
"""The metrics by name, in the order `evaluate` runs them."""


def evaluate(data: GroundTruthData, representation: Representation, random_state: RandomState,
             metrics: Sequence[str] = tuple(METRICS),
             **options: dict[str, Any]) -> dict[str, dict[str, float]]:
    """Runs several metrics in turn on one random state.

    Args:
      metrics: names from `METRICS`.
      **options: per-metric keyword overrides, e.g. `mig={"num_train": 2000}`.

    Returns:
      {metric name: that metric's dict}.
    """
    unknown = [m for m in (*metrics, *options) if m not in METRICS]
    if unknown:
        raise ValueError(f"unknown metric(s) {unknown}; choose from {tuple(METRICS)}")
    return {m: METRICS[m](data, representation, random_state, **options.get(m, {}))
            for m in metrics}
