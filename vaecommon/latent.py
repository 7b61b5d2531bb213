"""Latent-space maths the figures and both frameworks' commands share. NumPy only.

No matplotlib (and no jax or torch): the interpolation, latent-map and figure code of either
framework imports this without loading a plotting library.

| what                                   | function        |
|----------------------------------------|-----------------|
| straight path between two latents      | `lerp`          |
| great-circle path between two latents  | `slerp`         |
| 2-D latent grid at N(0, 1) quantiles   | `manifold_grid` |
| first two principal components         | `pca_2d`        |

`vaecommon.image_plots` draws what these produce (`plot_interpolation`, `plot_latent_manifold`,
`plot_latent_scatter`).
"""

from __future__ import annotations

import math
import statistics
from typing import Any

import numpy as np

__all__ = ["lerp", "slerp", "manifold_grid", "pca_2d"]


def _pair(z0: Any, z1: Any, steps: int) -> tuple[np.ndarray, np.ndarray, np.dtype]:
    a, b = np.asarray(z0), np.asarray(z1)
    if a.shape != b.shape:
        raise ValueError(f"endpoints must have the same shape, got {a.shape} and {b.shape}")
    if int(steps) != steps or steps < 2:
        raise ValueError(f"steps must be an integer >= 2 (both endpoints), got {steps!r}")
    dtype = np.result_type(a.dtype, b.dtype, np.float32)
    return a.astype(np.float64), b.astype(np.float64), dtype


def lerp(z0: Any, z1: Any, steps: int) -> np.ndarray:
    """Linear interpolation `(1 - t) z0 + t z1` for `t = linspace(0, 1, steps)`.

    Args:
      z0, z1: endpoints of the same shape S, e.g. (D,) latent means.
      steps: number of points, >= 2, endpoints included.

    Returns:
      (steps, *S) array in the endpoints' float dtype (float32 stays float32); row 0 is exactly
      z0 and row -1 exactly z1.
    """
    a, b, dtype = _pair(z0, z1, steps)
    t = np.linspace(0.0, 1.0, int(steps)).reshape((-1,) + (1,) * a.ndim)
    out = (1.0 - t) * a + t * b
    out[0], out[-1] = a, b  # exact endpoints, whatever the rounding of (1 - t) * a + t * b
    return out.astype(dtype)


def slerp(z0: Any, z1: Any, steps: int, *, dot_threshold: float = 0.9995) -> np.ndarray:
    """Spherical interpolation along the great circle from z0 to z1 (White 2016, "Sampling
    Generative Networks"): `sin((1-t) w)/sin(w) z0 + sin(t w)/sin(w) z1`, w the angle between them.

    Under a N(0, I) prior most mass lies near the sphere of radius sqrt(D), and a straight line
    between two typical points cuts through the low-norm interior; slerp stays at their norm
    (exactly, when both norms are equal). Each endpoint is treated as one vector (all axes).

    Args:
      z0, z1: endpoints of the same shape S.
      steps: number of points, >= 2, endpoints included.
      dot_threshold: when |cos w| exceeds it (nearly parallel or antiparallel vectors, where the
        great circle is ill-defined or numerically unstable) or an endpoint is zero, fall back
        to `lerp`.

    Returns:
      (steps, *S) array in the endpoints' float dtype; exact endpoints.
    """
    a, b, dtype = _pair(z0, z1, steps)
    na, nb = np.linalg.norm(a), np.linalg.norm(b)
    if na == 0.0 or nb == 0.0:
        return lerp(z0, z1, steps)
    cos = float(np.clip(np.vdot(a, b) / (na * nb), -1.0, 1.0))
    if abs(cos) > dot_threshold:
        return lerp(z0, z1, steps)
    omega = math.acos(cos)
    t = np.linspace(0.0, 1.0, int(steps)).reshape((-1,) + (1,) * a.ndim)
    out = (np.sin((1.0 - t) * omega) * a + np.sin(t * omega) * b) / math.sin(omega)
    out[0], out[-1] = a, b
    return out.astype(dtype)


def manifold_grid(
    n: int = 20, *, latent_dim: int = 2, lo: float = 0.05, hi: float = 0.95,
    dtype: Any = np.float32,
) -> np.ndarray:
    """Latent points of the 2-D manifold figure: the N(0, 1) quantiles of linspace(lo, hi, n).

    Using quantiles (inverse normal CDF) rather than an even grid spaces the points by prior
    mass, so the figure shows the region the decoder was trained on (Kingma & Welling 2014, fig. 4).

    Args:
      n: points per axis.
      latent_dim: the model's latent size; anything but 2 raises (pass `spec.latent_dim`).
      lo, hi: the probability range, 0 < lo < hi < 1.

    Returns:
      (n * n, 2) array. Point `k = i * n + j` is image row i (top to bottom), column j:
      `z[k] = (g[j], g[n - 1 - i])` with `g = inv_cdf(linspace(lo, hi, n))`, so z_1 grows to the
      right and z_2 upwards, as on a plot. Decode it and pass the images, in this order, to
      `plot_latent_manifold`.

    Raises:
      ValueError: latent_dim != 2 (use `plot_latent_scatter`, which projects with PCA), or bad
        n / lo / hi.
    """
    _require_2d_latent(latent_dim)
    if int(n) != n or n < 2:
        raise ValueError(f"n must be an integer >= 2, got {n!r}")
    if not 0.0 < lo < hi < 1.0:
        raise ValueError(f"need 0 < lo < hi < 1 for the normal quantiles, got lo={lo}, hi={hi}")
    n = int(n)
    g = _normal_quantiles(np.linspace(lo, hi, n))
    cols, rows = np.meshgrid(g, g[::-1])  # rows: z_2 descending from top; cols: z_1 ascending
    return np.stack([cols.ravel(), rows.ravel()], axis=1).astype(dtype)


def _normal_quantiles(p: np.ndarray) -> np.ndarray:
    inv = statistics.NormalDist().inv_cdf
    return np.array([inv(float(v)) for v in p])


def _require_2d_latent(latent_dim: int) -> None:
    if latent_dim != 2:
        raise ValueError(
            f"the latent manifold grid needs a 2-D latent, this model has latent_dim={latent_dim}; "
            "use plot_latent_scatter instead (it projects a >2-D latent onto its first two "
            "principal components with PCA), or train with latent_dim=2"
        )


def pca_2d(z: Any) -> tuple[np.ndarray, np.ndarray]:
    """Project (N, D) points onto their first two principal components (NumPy SVD).

    Returns:
      (N, 2) projections of the centred points and the (2,) fractions of the total variance the
      two components explain. Component signs are fixed (largest loading positive) so the same
      latents always give the same picture.

    Raises:
      ValueError: z not (N, D) with N >= 2 and D >= 2.
    """
    z = np.asarray(z, dtype=np.float64)
    if z.ndim != 2 or z.shape[0] < 2 or z.shape[1] < 2:
        raise ValueError(f"pca_2d needs (N, D) points with N >= 2 and D >= 2, got shape {z.shape}")
    zc = z - z.mean(axis=0)
    _, s, vt = np.linalg.svd(zc, full_matrices=False)
    comps = vt[:2]
    signs = np.sign(comps[np.arange(2), np.abs(comps).argmax(axis=1)])
    comps = comps * signs[:, None]
    var = s**2
    total = var.sum()
    ratio = var[:2] / total if total > 0 else np.zeros(2)
    return zc @ comps.T, ratio
