"""The objectives and reconstruction terms by name, with their keyword parameters. Framework-free.

`jaxvae.losses` and `torchvae.losses` implement these names (`OBJECTIVES`, `RECONSTRUCTION`);
this table says which keyword parameters each one takes, their defaults and valid ranges, so
`vaecommon.config.validate` can refuse a misspelt or out-of-range `--param` before anything is
built or compiled. `parity_tests/test_objectives_table.py` compares every entry with both
twins' function signatures (`inspect.signature`), so the table cannot drift from the code.

An objective passes the keyword parameters it does not name to its reconstruction term, so the
parameters a config may set are the objective's plus the likelihood's (`settable_params`).
"""

from __future__ import annotations

import math
import numbers
from dataclasses import dataclass
from typing import Any

__all__ = [
    "REQUIRED", "Param", "ObjectiveSpec", "LikelihoodSpec", "OBJECTIVES", "LIKELIHOODS",
    "OBJECTIVE_ARGS", "settable_params", "nll_meaning", "nll_meaning_of", "BINARY_DATASETS",
    "BERNOULLI_LIKELIHOODS",
]


class _Required:
    """Marks a parameter without a default (the caller must pass it)."""

    def __repr__(self) -> str:
        return "REQUIRED"


REQUIRED = _Required()


@dataclass(frozen=True)
class Param:
    """One keyword parameter (or config field): its type and valid range.

    Attributes:
      name: the keyword (or field) name.
      default: the function's default, or REQUIRED.
      kind: "float" (a finite real; ints accepted), "int" (an integer; integral floats
        accepted, since `1e4` parses as a float) or "str".
      low, high: inclusive bounds (None: unbounded); `low_open`/`high_open` make them exclusive.
      choices: the valid values of a "str" parameter.
      optional: None is valid too (`none_means` says what it means).
      settable: False for a parameter the trainer supplies itself (gaussian_learned's trained
        `log_sigma`), which a config must not set.
    """

    name: str
    default: Any
    kind: str
    low: float | None = None
    high: float | None = None
    low_open: bool = False
    high_open: bool = False
    choices: tuple[str, ...] = ()
    optional: bool = False
    none_means: str = ""
    settable: bool = True

    def describe(self) -> str:
        """The valid values in words: '> 0 and finite', 'an integer in [0, 4294967295]', ..."""
        if self.kind == "str":
            text = "one of " + ", ".join(self.choices)
        else:
            lo = None if self.low is None else f"{_num(self.low)}"
            hi = None if self.high is None else f"{_num(self.high)}"
            if lo is not None and hi is not None:
                rng = f"in {'(' if self.low_open else '['}{lo}, {hi}{')' if self.high_open else ']'}"
            elif lo is not None:
                rng = f"{'>' if self.low_open else '>='} {lo}"
            elif hi is not None:
                rng = f"{'<' if self.high_open else '<='} {hi}"
            else:
                rng = ""
            if self.kind == "int":
                text = f"an integer {rng}".rstrip()
            else:
                text = f"{rng} and finite" if rng else "finite"
        if self.optional:
            text += f", or None ({self.none_means})" if self.none_means else ", or None"
        return text

    def is_valid(self, value: Any) -> bool:
        """Whether `value` has this parameter's type and lies in its range."""
        if value is None:
            return self.optional
        if self.kind == "str":
            return isinstance(value, str) and value in self.choices
        if isinstance(value, bool) or not isinstance(value, numbers.Real):
            return False
        if self.kind == "int" and not (isinstance(value, numbers.Integral)
                                       or (math.isfinite(value) and float(value).is_integer())):
            return False
        if not isinstance(value, numbers.Integral) and not math.isfinite(value):
            return False
        if self.low is not None and (value <= self.low if self.low_open else value < self.low):
            return False
        if self.high is not None and (value >= self.high if self.high_open else value > self.high):
            return False
        return True


def _num(v: float) -> str:
    return str(int(v)) if float(v).is_integer() else repr(v)


@dataclass(frozen=True)
class ObjectiveSpec:
    """An objective of `losses.OBJECTIVES`.

    Attributes:
      name: the registry name.
      summary: what it minimises, in one short line (`train.py --help` and `--list` print it).
      params: its own keyword parameters (after the arguments in `OBJECTIVE_ARGS`), in
        signature order.
      needs_vae: False only for "reconstruction" (the others need a VAE's mean and logvar).
      one_of: names of which at least one must be set (cyclical's period).
    """

    name: str
    summary: str
    params: tuple[Param, ...] = ()
    needs_vae: bool = True
    one_of: tuple[str, ...] = ()


@dataclass(frozen=True)
class LikelihoodSpec:
    """A reconstruction term of `losses.RECONSTRUCTION`.

    Attributes:
      name: the registry name.
      summary: the per-example negative log-likelihood, in one short line (`train.py --help`).
      input_kind: "logits" (gets the decoder's raw output) or "probs" (its sigmoid).
      params: keyword-only parameters (after `x` and the decoder output), in signature order.
      unit_interval: the targets must lie in [0, 1] (Bernoulli-type terms).
    """

    name: str
    summary: str
    input_kind: str
    params: tuple[Param, ...] = ()
    unit_interval: bool = False


# Arguments every objective takes before its own parameters: the trainer passes them, a config
# does not (`loss, terms = fn(x, out, *, likelihood, step, reduction, decode, eps, **params)`).
OBJECTIVE_ARGS = ("x", "out", "likelihood", "step", "reduction", "decode", "eps")


def _f(name, default, **kw) -> Param:
    return Param(name, default, "float", **kw)


def _i(name, default, **kw) -> Param:
    return Param(name, default, "int", **kw)


def _s(name, default, choices) -> Param:
    return Param(name, default, "str", choices=tuple(choices))


_WEIGHT = dict(low=0.0)  # a loss weight: >= 0 and finite
# the model's prior density, supplied by the trainer for a VampPrior model (never by a config)
_LOG_PRIOR = Param("log_prior", None, "float", optional=True, settable=False)
_KL_ESTIMATE = _s("kl_estimate", "analytic", ("analytic", "single_sample"))

OBJECTIVES: dict[str, ObjectiveSpec] = {s.name: s for s in [
    ObjectiveSpec("reconstruction", "recon only (autoencoders); KL reported, not trained",
                  needs_vae=False),
    ObjectiveSpec("elbo", "the negative ELBO: recon + KL", (_LOG_PRIOR, _KL_ESTIMATE)),
    ObjectiveSpec("beta_vae", "recon + beta KL (Higgins et al. 2017)",
                  (_f("beta", 4.0, **_WEIGHT), _LOG_PRIOR, _KL_ESTIMATE)),
    ObjectiveSpec("kl_warmup", "recon + beta(t) KL, beta rising linearly from 0 to 1",
                  (_i("warmup_steps", 10000, low=0), _i("epoch_steps", 0, low=0),
                   _LOG_PRIOR, _KL_ESTIMATE)),
    ObjectiveSpec("cyclical", "recon + beta(t) KL, beta ramped up each cycle (Fu et al. 2019)", (
        _i("cycle_steps", None, low=1, optional=True, none_means="total_steps / n_cycles"),
        _i("n_cycles", 4, low=1),
        _i("total_steps", None, low=1, optional=True, none_means="use cycle_steps"),
        _f("ratio", 0.5, low=0.0, low_open=True, high=1.0),
    ), one_of=("cycle_steps", "total_steps")),
    ObjectiveSpec("capacity", "recon + gamma |KL - C(t)|, C rising to c_max (Burgess et al. 2018)",
                  (_f("gamma", 1000.0, **_WEIGHT), _f("c_max", 25.0, low=0.0),
                   _i("c_steps", 100000, low=0))),
    ObjectiveSpec("free_bits", "recon + KL of at least lam nats per latent (Kingma et al. 2016)",
                  (_f("lam", 0.5, low=0.0),)),
    ObjectiveSpec("beta_tcvae", "recon + alpha MI + beta TC + gamma dwKL (Chen et al. 2018)", (
        _i("dataset_size", REQUIRED, low=1), _f("alpha", 1.0, **_WEIGHT),
        _f("beta", 6.0, **_WEIGHT), _f("gamma", 1.0, **_WEIGHT),
        _s("sampling", "mws", ("mws", "mss")),
    )),
    ObjectiveSpec("dip_vae_i", "recon + KL + covariance penalty on the means (Kumar et al. 2018)",
                  (_f("lambda_od", 10.0, **_WEIGHT), _f("lambda_d", 100.0, **_WEIGHT))),
    ObjectiveSpec("dip_vae_ii", "as dip_vae_i, on the covariance of q(z) (means and variances)",
                  (_f("lambda_od", 10.0, **_WEIGHT), _f("lambda_d", 10.0, **_WEIGHT))),
    ObjectiveSpec("info_vae", "recon + (1 - alpha) KL + weighted MMD (Zhao et al. 2019)", (
        _f("alpha", 1.0), _f("lam", 1000.0, low=0.0, low_open=True),
        _s("kernel", "rbf", ("rbf", "imq")),
        _f("kernel_scale", None, low=0.0, low_open=True, optional=True, none_means="2 * latent_dim"),
        _i("prior_samples", None, low=1, optional=True, none_means="the batch size"),
    )),
    ObjectiveSpec("iwae", "importance-weighted bound with k samples (Burda et al. 2016)",
                  (_i("k", None, low=1, optional=True, none_means="5"), _LOG_PRIOR)),
]}

PRIOR_OBJECTIVES = tuple(name for name, spec in OBJECTIVES.items()
                         if any(p.name == "log_prior" for p in spec.params))
"""Objectives that take the model's prior density (`log_prior`); the others assume N(0, I) in
closed form."""

LIKELIHOODS: dict[str, LikelihoodSpec] = {s.name: s for s in [
    LikelihoodSpec("bernoulli", "binary cross-entropy on logits; targets in [0, 1]", "logits",
                   unit_interval=True),
    LikelihoodSpec("bce_probs", "binary cross-entropy on probabilities, as the sources", "probs",
                   unit_interval=True),
    LikelihoodSpec("mse_sum", "squared error summed over pixels", "probs"),
    LikelihoodSpec("mse_mean", "squared error averaged over pixels (nn.MSELoss)", "probs"),
    LikelihoodSpec("gaussian", "Gaussian NLL with a fixed sigma", "probs",
                   (_f("sigma", 1.0, low=0.0, low_open=True),)),
    LikelihoodSpec("gaussian_learned", "Gaussian NLL with one trained sigma", "probs",
                   (Param("log_sigma", REQUIRED, "float", settable=False),)),
    LikelihoodSpec("gaussian_calibrated", "Gaussian NLL, optimal sigma (Rybkin et al. 2021)",
                   "probs", (_s("calibration", "batch", ("batch", "example")),
                             _f("min_log_sigma", -6.0))),
    LikelihoodSpec("continuous_bernoulli", "continuous Bernoulli on logits; targets in [0, 1]",
                   "logits", unit_interval=True),
]}


BINARY_DATASETS = ("shapes", "shapes_small")
"""Datasets whose pixels are 0/1 by construction."""

BERNOULLI_LIKELIHOODS = ("bernoulli", "bce_probs")
"""Likelihoods that are a normalised probability only on binary pixels."""


def nll_meaning(likelihood: str, dataset: str, binarization: str, eval_binarization: str = "none"
                ) -> tuple[bool, str]:
    """(is a likelihood, what the test NLL column means) for a run's decoder and test data.

    A Bernoulli decoder's -log p(x) is a normalised likelihood only on binary pixels: on grey
    values it is a cross-entropy, smaller than any discrete NLL and not comparable to published
    binarized-MNIST numbers. The test images are binary when the dataset is, when they are
    binarized once (`static`), or, for dynamically binarized training, when `eval_binarization`
    is `static`. Gaussian and continuous-Bernoulli decoders give densities on [0, 1] pixels (nats
    of a continuous density: comparable among themselves, not with a binary NLL); MSE is no
    likelihood. bits/dim is reported for every kind alike.
    """
    binary = (dataset in BINARY_DATASETS or binarization == "static"
              or (binarization == "dynamic" and eval_binarization == "static"))
    if likelihood in BERNOULLI_LIKELIHOODS:
        if binary:
            return True, "likelihood (binary pixels)"
        return False, "not a normalised likelihood (grey pixels under a Bernoulli decoder)"
    if likelihood.startswith("mse"):
        return False, "not a likelihood (squared error)"
    return False, "continuous density (not comparable with a binary-pixel NLL)"


def nll_meaning_of(config: dict) -> tuple[bool, str]:
    """`nll_meaning` of a run's resolved config (config.json's "config", or TrainConfig fields)."""
    return nll_meaning(config.get("likelihood") or "bernoulli", config.get("dataset") or "",
                       config.get("binarization") or "none",
                       config.get("eval_binarization") or "none")


def settable_params(objective: str, likelihood: str) -> dict[str, Param]:
    """{name: Param} a config's `objective_params` may set for this objective and likelihood
    (the objective's own parameters, then the likelihood's; trainer-supplied ones left out).

    Raises:
      KeyError: an unknown objective or likelihood.
    """
    params = OBJECTIVES[objective].params + LIKELIHOODS[likelihood].params
    return {p.name: p for p in params if p.settable}
