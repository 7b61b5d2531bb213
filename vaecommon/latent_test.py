"""Tests of vaecommon.latent (NumPy only: no matplotlib, no jax, no torch)."""

from __future__ import annotations

import math
import statistics
import subprocess
import sys

import numpy as np
import pytest

from vaecommon import latent


def test_lerp_endpoints_exact_and_linear():
    z0 = np.array([0.1, -2.0, 3.3], np.float32)
    z1 = np.array([1.7, 0.3, -0.9], np.float32)
    path = latent.lerp(z0, z1, 7)
    assert path.shape == (7, 3) and path.dtype == np.float32
    np.testing.assert_array_equal(path[0], z0)
    np.testing.assert_array_equal(path[-1], z1)
    np.testing.assert_allclose(path[3], (z0 + z1) / 2, rtol=1e-6)  # t = 0.5
    np.testing.assert_allclose(np.diff(path, axis=0), np.tile((z1 - z0) / 6, (6, 1)), atol=1e-6)


def test_slerp_endpoints_exact_and_norm_kept():
    rng = np.random.default_rng(0)
    z0, z1 = rng.normal(size=20), rng.normal(size=20)
    z1 *= np.linalg.norm(z0) / np.linalg.norm(z1)  # equal norms
    path = latent.slerp(z0, z1, 11)
    np.testing.assert_array_equal(path[0], z0)
    np.testing.assert_array_equal(path[-1], z1)
    np.testing.assert_allclose(np.linalg.norm(path, axis=1), np.linalg.norm(z0), rtol=1e-12)
    # The midpoint lies on the bisector, at the endpoints' norm (not shrunk as lerp's is).
    mid = (z0 + z1) / np.linalg.norm(z0 + z1) * np.linalg.norm(z0)
    np.testing.assert_allclose(latent.slerp(z0, z1, 3)[1], mid, rtol=1e-12)
    assert np.linalg.norm(latent.lerp(z0, z1, 3)[1]) < np.linalg.norm(z0)


def test_slerp_quarter_circle_by_hand():
    path = latent.slerp(np.array([1.0, 0.0]), np.array([0.0, 1.0]), 3)
    s = math.sqrt(0.5)
    np.testing.assert_allclose(path, [[1, 0], [s, s], [0, 1]], atol=1e-15)


@pytest.mark.parametrize("z1", [[2.0, 4.0, 6.0], [-1.0, -2.0, -3.0], [0.0, 0.0, 0.0]],
                         ids=["parallel", "antiparallel", "zero"])
def test_slerp_falls_back_to_lerp(z1):
    z0 = np.array([1.0, 2.0, 3.0])
    np.testing.assert_array_equal(latent.slerp(z0, np.array(z1), 5),
                                  latent.lerp(z0, np.array(z1), 5))


def test_lerp_slerp_bad_inputs():
    with pytest.raises(ValueError, match="same shape"):
        latent.lerp(np.zeros(3), np.zeros(4), 5)
    with pytest.raises(ValueError, match="steps"):
        latent.slerp(np.ones(3), np.ones(3), 1)


def test_manifold_grid_is_inverse_normal_cdf():
    n = 5
    z = latent.manifold_grid(n)
    assert z.shape == (n * n, 2) and z.dtype == np.float32
    p = np.linspace(0.05, 0.95, n)
    # Independent check through the forward CDF: Phi(g) = (1 + erf(g / sqrt 2)) / 2 = p.
    g = np.sort(np.unique(z[:, 0]).astype(np.float64))
    np.testing.assert_allclose([(1 + math.erf(v / math.sqrt(2))) / 2 for v in g], p, atol=1e-6)
    assert math.isclose(g[-1], 1.6448536, rel_tol=1e-6)  # the 95% quantile
    assert abs(g[n // 2]) < 1e-12  # the median
    # Row-major: z_1 grows along a row, z_2 decreases down the rows (z_2 points up, as on a plot).
    grid = z.reshape(n, n, 2)
    np.testing.assert_allclose(grid[0, :, 0], g, atol=1e-6)
    np.testing.assert_allclose(grid[:, 0, 1], g[::-1], atol=1e-6)
    ref = statistics.NormalDist().inv_cdf(0.05)
    assert math.isclose(float(z[0, 0]), ref, rel_tol=1e-6)


@pytest.mark.parametrize("d", [1, 3, 20])
def test_manifold_needs_a_2d_latent(d):
    with pytest.raises(ValueError, match="plot_latent_scatter.*PCA"):
        latent.manifold_grid(10, latent_dim=d)


def test_manifold_grid_bad_ranges():
    with pytest.raises(ValueError, match="lo < hi"):
        latent.manifold_grid(5, lo=0.0, hi=0.9)
    with pytest.raises(ValueError, match="n must"):
        latent.manifold_grid(1)


def test_pca_2d_by_hand():
    # Points on the line y = 2x (plus a constant 3rd coordinate): all variance in PC1.
    t = np.linspace(-1, 1, 11)
    z = np.stack([t, 2 * t, np.full_like(t, 5.0)], axis=1)
    proj, ratio = latent.pca_2d(z)
    np.testing.assert_allclose(ratio, [1.0, 0.0], atol=1e-12)
    np.testing.assert_allclose(proj[:, 0], t * math.sqrt(5), atol=1e-12)  # sign fixed: + loading
    np.testing.assert_allclose(proj[:, 1], 0.0, atol=1e-12)
    with pytest.raises(ValueError, match=r"\(N, D\)"):
        latent.pca_2d(np.zeros(5))


def test_no_matplotlib_import():
    """The maths module loads no plotting library (nor a framework): commands that only need a
    latent path import it without paying for matplotlib."""
    code = ("import sys, vaecommon.latent; "
            "bad = [m for m in ('matplotlib', 'jax', 'torch') if m in sys.modules]; "
            "assert not bad, bad")
    subprocess.run([sys.executable, "-c", code], check=True)
