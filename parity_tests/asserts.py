"""The one closeness assertion of the parity tests and the one tolerance table.

`assert_close(actual, desired, *, name, rtol, atol)` passes where |a - d| <= atol + rtol * |d|
elementwise (NumPy's rule), requires identical shapes and identical NaN/inf positions, and
on failure names the tensor and reports the max abs and max rel diff (the latter over elements
whose reference exceeds atol) and the worst element.
Use it with a row of `TOL`: `assert_close(a, d, name="kl", **TOL["per_example_loss"])`.
"""

from __future__ import annotations

from collections import defaultdict

import numpy as np

# Check kind -> tolerances (float32 frameworks vs the float64 oracle or each other, precision
# pinned in conftest.py). Rows start from STYLE.md section 6; the loss rows are tightened from
# measurements (CPU, jax 0.10 / torch 2.15; no GPU was available to measure on):
TOL: dict[str, dict[str, float]] = {
    # STYLE.md section 6 starting points (other modules' checks).
    "weight_roundtrip": {"rtol": 0.0, "atol": 0.0},
    "forward": {"rtol": 1e-5, "atol": 1e-6},
    "gradients": {"rtol": 1e-4, "atol": 1e-6},  # model gradients (matmul accumulation)
    "sgd_steps": {"rtol": 1e-5, "atol": 1e-6},
    "adam_steps": {"rtol": 1e-4, "atol": 1e-5},
    # Per-example reconstruction / KL / objective terms vs the oracle. STYLE starts at
    # (1e-5, 1e-4); every loss check passes at (1e-6, 1e-7), worst rel seen 1.4e-6 (a TC term,
    # itself a difference of log densities). ~4x margin for other backends' exp/log.
    "per_example_loss": {"rtol": 5e-6, "atol": 1e-6},
    # jax.grad / torch autograd of the losses vs finite differences of the oracle. All pass at
    # (1e-5, 1e-6); the atol carries small components of O(1) gradients (e.g. 0.004 next to
    # 1.0: float32 error scales with the tensor, not the element), and exp(lv) - 1 in the KL
    # gradient (rel 1.2e-4 at |g| = 3e-4, abs 3e-8). 3x margin.
    "loss_gradients": {"rtol": 3e-5, "atol": 1e-6},
    # ---- rows added by the cross-framework suite (checks_gradients, checks_training,
    # checks_properties, checks_slow_training); measured worst cases in parity_tests/README.md.
    # Loss terms after a model forward, JAX vs torch: STYLE's per-example recon/KL row as
    # written (the forward's float32 accumulation differs between the twins; worst rel 2.5e-6,
    # resnet_vae's recon of ~700 nats).
    "model_loss_terms": {"rtol": 1e-5, "atol": 1e-4},
    # Twin gradients where float32 rounding is amplified in BOTH frameworks alike (each measured
    # against a float64 run of itself shows errors of the same size): train-mode BatchNorm over a
    # batch of 4 (resnet_vae: up to 2.7e-5 on O(10) gradients), penalty weights of 100-1000
    # (capacity, dip_vae_i, info_vae: up to 1.5e-5) and IWAE's importance weights (3.4e-5).
    "gradients_amplified": {"rtol": 1e-4, "atol": 1e-4},
    # float64 jax.grad vs float64 central differences (h = 1e-6 relative): FD rounding is a few
    # ulps of a ~550-nat loss over 2h, ~3e-7 (worst seen 3.5e-7, conv_vae).
    "gradients_fd": {"rtol": 1e-5, "atol": 1e-6},
    # Per-epoch mean training loss after a full Fashion-MNIST epoch with identical init, batch
    # order and eps (test_slow_training; Adam trajectories drift apart through eps-regime
    # elements, see checks_training.ADAM_EPS_REGIME).
    "epoch_loss": {"rtol": 1e-3, "atol": 0.0},
}


# name -> [worst max_abs, worst max_rel, rtol, atol]: filled by every assert_close call, printed
# by conftest.py when JAXVAE_REPORT_TOL=1 (or =all, per name): how the loss rows were set.
_MEASURED: dict[str, list[float]] = {}


def _to_numpy(a) -> np.ndarray:
    if hasattr(a, "detach"):  # torch.Tensor, without importing torch here
        a = a.detach().cpu().numpy()
    return np.asarray(a, dtype=np.float64)


def assert_close(actual, desired, *, name: str, rtol: float, atol: float) -> None:
    """Assert |actual - desired| <= atol + rtol * |desired| elementwise.

    Args:
      actual: array-like (NumPy, JAX, torch or scalar): the value under test.
      desired: array-like: the reference (usually the float64 oracle).
      name: what is compared (appears in the failure message).
      rtol, atol: relative and absolute tolerance (take them from TOL).
    Raises:
      AssertionError: with name, shapes, max abs diff, max rel diff and the worst element.
    """
    a, d = _to_numpy(actual), _to_numpy(desired)
    if a.shape != d.shape:
        raise AssertionError(f"{name}: shape {a.shape} != expected {d.shape}")
    for label, is_special in (("NaN", np.isnan), ("+inf", np.isposinf), ("-inf", np.isneginf)):
        sa, sd = is_special(a), is_special(d)
        if np.any(sa != sd):
            raise AssertionError(
                f"{name}: {label} positions differ ({int(sa.sum())} in actual, {int(sd.sum())} "
                f"expected); first mismatch at {np.argwhere(sa != sd)[:1].tolist()}"
            )
    fin = np.isfinite(d)
    a_f, d_f = a[fin], d[fin]
    abs_diff = np.abs(a_f - d_f)
    # Relative diff where it means something: elements whose reference exceeds atol (below
    # that, atol decides and a 1e-30 reference would report a meaningless huge ratio).
    big = np.abs(d_f) > max(atol, np.finfo(np.float64).tiny)
    rel_diff = abs_diff[big] / np.abs(d_f[big])
    max_abs = float(abs_diff.max()) if abs_diff.size else 0.0
    max_rel = float(rel_diff.max()) if rel_diff.size else 0.0
    prev = _MEASURED.get(name)
    _MEASURED[name] = [max(max_abs, prev[0]) if prev else max_abs,
                       max(max_rel, prev[1]) if prev else max_rel, rtol, atol]
    ok = abs_diff <= atol + rtol * np.abs(d_f)
    if not np.all(ok):
        i = int(np.argmax(abs_diff - (atol + rtol * np.abs(d_f))))
        where = np.argwhere(fin)[i].tolist() if a.ndim else []
        raise AssertionError(
            f"{name}: not close (rtol={rtol:g}, atol={atol:g}); {int((~ok).sum())}/{ok.size} "
            f"elements off; max abs diff {max_abs:.3e}, max rel diff {max_rel:.3e}; worst at "
            f"{where}: actual {a_f[i]!r}, desired {d_f[i]!r}; shape {a.shape}"
        )


def measured_summary() -> list[str]:
    """Worst max-abs / max-rel diff seen so far, grouped by (rtol, atol) row of TOL."""
    kind_of = {(v["rtol"], v["atol"]): k for k, v in TOL.items()}
    groups: dict[str, list[tuple[str, float, float]]] = defaultdict(list)
    for name, (ab, rel, rtol, atol) in _MEASURED.items():
        groups[kind_of.get((rtol, atol), f"rtol={rtol:g},atol={atol:g}")].append((name, ab, rel))
    lines = []
    for kind, rows in sorted(groups.items()):
        worst_abs = max(rows, key=lambda r: r[1])
        worst_rel = max(rows, key=lambda r: r[2])
        lines.append(
            f"{kind:>22}: {len(rows):4d} names; max abs {worst_abs[1]:.2e} ({worst_abs[0]}); "
            f"max rel {worst_rel[2]:.2e} ({worst_rel[0]})"
        )
    return lines
