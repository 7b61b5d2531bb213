"""Shared setup of the parity tests: precision pinning and fixtures.

Precision is pinned so the same tolerances hold on CPU, GPU and TPU: JAX matmuls/convolutions
at "highest" (no bf16 passes on TPU, no TF32 on Ampere+), PyTorch with TF32 off and
deterministic algorithms. Nothing else global is changed: no jax_enable_x64 (float64 lives only
in the NumPy oracle), no default-dtype change.
"""

from __future__ import annotations

import os
import zlib

# Must be set before CUDA initialises for deterministic cuBLAS (harmless on CPU).
os.environ.setdefault("CUBLAS_WORKSPACE_CONFIG", ":4096:8")

import jax  # noqa: E402
import numpy as np  # noqa: E402
import pytest  # noqa: E402
import torch  # noqa: E402

jax.config.update("jax_default_matmul_precision", "highest")
torch.backends.cuda.matmul.allow_tf32 = False
torch.backends.cudnn.allow_tf32 = False
torch.use_deterministic_algorithms(True)


@pytest.fixture
def rng(request) -> np.random.Generator:
    """A NumPy Generator seeded from the test's node id: reproducible and distinct per test."""
    return np.random.default_rng(zlib.crc32(request.node.nodeid.encode()))


def pytest_terminal_summary(terminalreporter):
    """With JAXVAE_REPORT_TOL=1, print the worst measured diff per tolerance kind."""
    if not os.environ.get("JAXVAE_REPORT_TOL"):
        return
    from parity_tests import asserts

    terminalreporter.write_sep("-", "assert_close: worst measured diffs per tolerance kind")
    for line in asserts.measured_summary():
        terminalreporter.write_line(line)
    if os.environ.get("JAXVAE_REPORT_TOL") == "all":
        for name, (ab, rel, rtol, atol) in sorted(asserts._MEASURED.items()):
            terminalreporter.write_line(
                f"{name:>60}: abs {ab:.2e} rel {rel:.2e} (rtol {rtol:g}, atol {atol:g})")
