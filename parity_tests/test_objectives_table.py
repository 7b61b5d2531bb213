"""`vaecommon.objectives` (the framework-free table `vaecommon.config.validate` checks
`--param` against) matches both twins' `losses.OBJECTIVES` and `losses.RECONSTRUCTION`: the same
names, and each function's keyword parameters, order and defaults (`inspect.signature`), so a
parameter added, renamed or re-defaulted in the code fails here until the table follows."""

from __future__ import annotations

import inspect

import pytest

from jaxvae import losses as jl
from torchvae import losses as tl
from vaecommon import objectives
from vaecommon.objectives import LIKELIHOODS, OBJECTIVE_ARGS, OBJECTIVES, REQUIRED

LIB = {"jax": jl, "torch": tl}


def _keywords(fn, skip: int) -> list[tuple[str, object]]:
    """[(name, default or REQUIRED)] of fn's parameters after the first `skip`, without **kwargs."""
    params = list(inspect.signature(fn).parameters.values())[skip:]
    return [(p.name, REQUIRED if p.default is inspect.Parameter.empty else p.default)
            for p in params if p.kind is not inspect.Parameter.VAR_KEYWORD]


@pytest.mark.parametrize("fw", LIB)
def test_objective_names_match(fw):
    assert list(LIB[fw].OBJECTIVES) == list(OBJECTIVES)


@pytest.mark.parametrize("fw", LIB)
@pytest.mark.parametrize("name", list(OBJECTIVES))
def test_objective_signature_matches_the_table(fw, name):
    fn = LIB[fw].OBJECTIVES[name]
    sig = inspect.signature(fn)
    params = list(sig.parameters.values())
    # the trainer's arguments first (x, out positional; the rest keyword-only), then the table's
    assert [p.name for p in params[:len(OBJECTIVE_ARGS)]] == list(OBJECTIVE_ARGS)
    assert [p.kind for p in params[:2]] == [inspect.Parameter.POSITIONAL_OR_KEYWORD] * 2
    assert all(p.kind is inspect.Parameter.KEYWORD_ONLY for p in params[2:len(OBJECTIVE_ARGS)])
    # every objective forwards unknown keywords to the reconstruction term
    assert params[-1].kind is inspect.Parameter.VAR_KEYWORD, f"{fw}:{name} lacks **recon_params"
    want = [(p.name, p.default) for p in OBJECTIVES[name].params]
    assert _keywords(fn, len(OBJECTIVE_ARGS)) == want, f"{fw}:{name}"


@pytest.mark.parametrize("fw", LIB)
def test_likelihood_names_and_input_kinds_match(fw):
    reg = LIB[fw].RECONSTRUCTION
    assert list(reg) == list(LIKELIHOODS)
    assert {n: kind for n, (_, kind) in reg.items()} == {n: s.input_kind for n, s in LIKELIHOODS.items()}


@pytest.mark.parametrize("fw", LIB)
@pytest.mark.parametrize("name", list(LIKELIHOODS))
def test_likelihood_signature_matches_the_table(fw, name):
    fn, _ = LIB[fw].RECONSTRUCTION[name]
    params = list(inspect.signature(fn).parameters.values())
    assert [p.kind for p in params[:2]] == [inspect.Parameter.POSITIONAL_OR_KEYWORD] * 2
    assert all(p.kind is inspect.Parameter.KEYWORD_ONLY for p in params[2:]), f"{fw}:{name}"
    want = [(p.name, p.default) for p in LIKELIHOODS[name].params]
    assert _keywords(fn, 2) == want, f"{fw}:{name}"


def test_objective_and_likelihood_parameters_do_not_collide():
    """An objective forwards the keywords it does not name to the likelihood, so one name must
    not mean both (settable_params would hide one of them)."""
    for o in OBJECTIVES.values():
        for lk in LIKELIHOODS.values():
            shared = {p.name for p in o.params} & {p.name for p in lk.params}
            assert not shared, (o.name, lk.name, shared)
            assert set(objectives.settable_params(o.name, lk.name)) <= (
                {p.name for p in o.params} | {p.name for p in lk.params})


def test_defaults_are_valid_values():
    """A default the table calls invalid would make validate refuse the function's own default."""
    for spec in [*OBJECTIVES.values(), *LIKELIHOODS.values()]:
        for p in spec.params:
            if p.default is not REQUIRED:
                assert p.is_valid(p.default), (spec.name, p.name, p.default, p.describe())
