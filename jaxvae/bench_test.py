"""Tests of jaxvae.bench's profile: the categorized trace of one compiled epoch."""

from __future__ import annotations

import numpy as np
import pytest

from jaxvae import bench
from vaecommon.config import TrainConfig


@pytest.fixture(scope="module")
def profile():
    images = np.random.default_rng(0).uniform(size=(512, 28, 28, 1)).astype(np.float32)
    # top=10_000: every instruction, so the checks below do not depend on the ranking, which
    # a busy machine (pytest -n 2) reshuffles
    return bench.profile_epoch(TrainConfig(model="pytorch_examples", batch_size=128, epochs=1),
                               images, top=10_000)


def test_profile_accounts_for_the_epoch(profile):
    cats = profile["categories"]
    assert set(cats) == set(bench.CATEGORIES)
    # every traced instruction lands in exactly one category
    assert sum(cats.values()) == pytest.approx(profile["op_s"], rel=1e-9)
    assert profile["op_s"] > 0 and profile["epoch_s"] > 0


def test_profile_attributes_matmuls_and_the_optimizer(profile):
    cats = profile["categories"]
    # which category is largest is a timing (the benchmark's business, not a unit test's): here,
    # only that the time is attributed, and every dot instruction to the matmul category
    assert cats["matmul (forward + backward)"] > 0
    assert cats["optimizer (Adam moments + update, grad norm)"] > 0
    assert cats["loss terms (BCE, KL)"] > 0
    top = profile["top"]
    # 4 steps per epoch (512 / 128): each matmul of the step body runs once per step; the five
    # weight-sized ones (2 forward, 1 input gradient, 2 weight gradients) at least
    matmuls = [t for t in top if t[1] == "matmul (forward + backward)"]
    assert len(matmuls) >= 5 and all(count == 4 for _, _, _, count, _ in matmuls), matmuls
    dots = [t for t in top if t[0].startswith("dot")]
    assert dots and all(t[1] == "matmul (forward + backward)" for t in dots), dots
    assert any("Linear.__call__" in origin for *_, origin in top), top


def test_hlo_index_reads_stack_frames():
    hlo = """HloModule m

FileNames
1 "/x/jaxvae/losses.py"
2 "/x/site-packages/optax/_src/transform.py"

FunctionNames
1 "bce"
2 "update_moment"

FileLocations
1 {file_name_id=1 function_name_id=1 line=3 end_line=3 column=1 end_column=2}
2 {file_name_id=2 function_name_id=2 line=9 end_line=9 column=1 end_column=2}

StackFrames
1 {file_location_id=1 parent_frame_id=1}
2 {file_location_id=2 parent_frame_id=2}

%fused_dot (p0: f32[2,2], p1: f32[2,2]) -> f32[2,2] {
  ROOT %d = f32[2,2]{1,0} dot(%p0, %p1), lhs_contracting_dims={1}, rhs_contracting_dims={0}
}

ENTRY %main (a: f32[2,2]) -> f32[2,2] {
  %loss_fusion = f32[2,2]{1,0} fusion(%a), kind=kLoop, calls=%x, metadata={op_name="m" stack_frame_id=1}
  %adam_fusion = f32[2,2]{1,0} fusion(%a), kind=kLoop, calls=%y, metadata={op_name="m" stack_frame_id=2}
  %split_reduce = f32[2]{0} reduce-window(%adam_fusion), window={size=2}
  ROOT %mm = f32[2,2]{1,0} fusion(%a, %a), kind=kCustom, calls=%fused_dot
}
"""
    index = bench._hlo_index(hlo)
    assert index["loss_fusion"][0] == "loss terms (BCE, KL)"
    assert index["loss_fusion"][1] == [("/x/jaxvae/losses.py", "bce")]
    assert index["adam_fusion"][0] == "optimizer (Adam moments + update, grad norm)"
    assert index["mm"][0] == "matmul (forward + backward)"
    # no Python origin of its own: takes its operand's
    assert index["split_reduce"][0] == "optimizer (Adam moments + update, grad norm)"


def test_stream_gbps_counts_three_arrays_per_call(monkeypatch):
    """With a clock that advances 1 ms per reading, each timed block of 10 calls takes 1 ms, so
    one call of `a + b` over 1 MiB arrays moves 3 MiB in 0.1 ms: 31.46 GB/s."""
    ticks = iter(np.arange(0, 1000, 1e-3))
    monkeypatch.setattr(bench.time, "perf_counter", lambda: float(next(ticks)))
    assert bench.stream_gbps(mib=1.0, reps=3) == pytest.approx(3 * 2**20 / 1e-4 / 1e9, rel=1e-6)
    assert bench.ADAM_BYTES_PER_PARAM == 28  # p, g, m, v read; p, m, v written; float32


def test_matmul_flops_counts_dots_and_convolutions_in_nested_jaxprs():
    import jax
    import jax.numpy as jnp

    from jaxvae import bench

    a, b = jnp.ones((3, 5)), jnp.ones((5, 7))
    assert bench.matmul_flops(lambda a, b: jnp.tanh(a @ b), a, b) == 2 * 3 * 5 * 7
    # a matmul inside a scan of length 4 is one equation of the body: counted once (per call)
    body = lambda c, _: (c @ jnp.ones((5, 5)), None)  # noqa: E731
    assert bench.matmul_flops(lambda a: jax.lax.scan(body, a, None, length=4)[0], a) == 2 * 3 * 5 * 5
    # NHWC 6x6x2 input, 3x3x2x4 kernel, VALID: 4x4x4 outputs of 3*3*2 multiply-adds each
    x, w = jnp.ones((1, 6, 6, 2)), jnp.ones((3, 3, 2, 4))
    conv = lambda x, w: jax.lax.conv_general_dilated(x, w, (1, 1), "VALID",  # noqa: E731
                                                     dimension_numbers=("NHWC", "HWIO", "NHWC"))
    assert bench.matmul_flops(conv, x, w) == 2 * (4 * 4 * 4) * (3 * 3 * 2)


def test_forced_host_devices_row_runs_data_parallel():
    """The bench's "forced host devices" row: the real worker in a subprocess with 2 host devices
    (a data-parallel mesh over them); it trains and reports an epoch time."""
    from vaecommon.commands import bench as cmd

    r = cmd.run_worker({"kind": "jax", "quick": True, "devices": 2, "preset": "pytorch_examples",
                        "batch": 128}, {"XLA_FLAGS": "--xla_force_host_platform_device_count=2"},
                       timeout=600)
    assert "error" not in r, r
    assert r["epoch_s"] > 0 and r["steps"] == 4000 // 128 and np.isfinite(r["final_loss"])
