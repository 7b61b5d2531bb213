"""Property tests (hypothesis): forward, KL and reconstruction parity of the MLP presets over
random latent sizes, batch sizes, input values and eps. The check (what it compares, how tightly)
is `checks_properties.check_forward_kl_recon`; hypothesis draws its arguments here.
"""

from __future__ import annotations

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from parity_tests.checks_properties import (INPUT_KINDS, MLP_PRESETS, check_forward_kl_recon,
                                            report_cases)
from parity_tests.twins import assert_all


@settings(max_examples=12, deadline=None, derandomize=True,
          suppress_health_check=[HealthCheck.too_slow])
@given(preset=st.sampled_from(MLP_PRESETS), latent_dim=st.integers(1, 16), batch=st.integers(1, 9),
       kind=st.sampled_from(INPUT_KINDS), eps_scale=st.sampled_from([0.0, 0.5, 1.0, 3.0]),
       seed=st.integers(0, 2**16))
def test_forward_kl_recon_parity(preset, latent_dim, batch, kind, eps_scale, seed):
    assert_all(check_forward_kl_recon(preset, latent_dim=latent_dim, batch=batch, kind=kind,
                                      eps_scale=eps_scale, seed=seed))


def test_report_cases_cover_every_mlp_preset():
    assert sorted(c["preset"] for c in report_cases()) == sorted(MLP_PRESETS)
    assert len(MLP_PRESETS) == 8
