"""Tests of vaecommon.plots: loss curves, KL per dimension, sweeps and run comparisons."""

from __future__ import annotations

import json
import math

import numpy as np
import pytest

from vaecommon import plots
from vaecommon.plot_style_test import _assert_png, _texts, captured  # noqa: F401 (a fixture)
from vaecommon.runs import RunFolder


# ----------------------------------------------------------------------------------------------
# Metric records, built by hand following the run-folder contract.


def make_records(epochs=3, steps=5, *, ae=False, test=True, nan_from_step=None):
    """batch/train/test records as train.py writes them, JSON round-tripped (NaN -> "nan")."""
    recs, step = [], 0
    for e in range(1, epochs + 1):
        losses = []
        for _ in range(steps):
            step += 1
            recon = 200.0 / (1 + step)
            kl = 0.0 if ae else 5.0 + 0.1 * step
            if nan_from_step is not None and step >= nan_from_step:
                recon = float("nan")
            losses.append(recon + kl)
            recs.append({"type": "batch", "step": step, "epoch": step / steps,
                         "loss": recon + kl, "recon": recon, "kl": kl})
        recs.append({"type": "train", "epoch": e, "step": step, "loss": float(np.mean(losses)),
                     "recon": float(np.mean(losses)) - (0.0 if ae else 5.0),
                     "kl": 0.0 if ae else 5.0, "time_s": 1.0, "examples_per_s": 100.0})
        if test:
            recs.append({"type": "test", "epoch": e, "step": step, "loss": 100.0 - e,
                         "recon": 90.0 - e, "kl": 0.0 if ae else 10.0, "bits_per_dim": 0.18,
                         "active_units": 0 if ae else 3, "kl_per_dim": [3.0, 4.0, 3.0, 0.001]})
    return json.loads(json.dumps(
        [{k: (repr(v) if isinstance(v, float) and not math.isfinite(v) else v)
          for k, v in r.items()} for r in recs]))


# ----------------------------------------------------------------------------------------------
# Loss curves.


def test_loss_curves_size_and_content(tmp_path, captured):
    out = plots.plot_loss_curves(make_records(), tmp_path / "sub" / "loss.png", title="my run")
    assert out == tmp_path / "sub" / "loss.png"
    _assert_png(out, (13.0, 4.6))
    fig = captured[-1]
    assert fig.get_suptitle() == "my run"
    loss_ax = fig.axes[0]
    assert loss_ax.get_ylabel() == "nats per example" and loss_ax.get_xlabel() == "epoch"
    assert len(loss_ax.lines) == 3  # per batch, per epoch, test


def test_loss_curves_nan_records(tmp_path, captured):
    recs = make_records(epochs=3, steps=5, nan_from_step=8)
    assert any(r.get("recon") == "nan" for r in recs)  # as read back from metrics.jsonl
    _assert_png(plots.plot_loss_curves(recs, tmp_path / "nan.png"), (13.0, 4.6))
    assert "NaN/inf values not drawn" in captured[-1].get_suptitle()
    marks = [ln for ln in captured[-1].axes[0].lines if ln.get_label() == "first NaN/inf"]
    assert marks and marks[0].get_xdata()[0] == pytest.approx(8 / 5)


def test_loss_curves_all_nan(tmp_path):
    recs = [{"type": "batch", "step": 1, "epoch": 1.0, "loss": "nan", "recon": "nan", "kl": "inf"}]
    _assert_png(plots.plot_loss_curves(recs, tmp_path / "allnan.png"), (13.0, 4.6))


def test_loss_curves_no_test_ae_one_epoch(tmp_path, captured):
    recs = make_records(epochs=1, ae=True, test=False)
    _assert_png(plots.plot_loss_curves(recs, tmp_path / "ae.png"), (13.0, 4.6))
    assert "autoencoder" in _texts(captured[-1])
    assert len(captured[-1].axes[0].lines) == 2  # no test line


def test_loss_curves_from_run_folder(tmp_path):
    run = RunFolder(tmp_path / "run").create()
    run.append_metrics(make_records(epochs=2))
    _assert_png(plots.plot_loss_curves(run.root, run.figures / "loss.png"), (13.0, 4.6))


def test_loss_curves_bad_records(tmp_path):
    with pytest.raises(ValueError, match="no batch/train/test"):
        plots.plot_loss_curves([], tmp_path / "x.png")
    with pytest.raises(ValueError, match="'type'"):
        plots.plot_loss_curves([{"loss": 1.0}], tmp_path / "x.png")
    with pytest.raises(ValueError, match="epoch"):
        plots.plot_loss_curves([{"type": "train", "loss": 1.0}], tmp_path / "x.png")


# ----------------------------------------------------------------------------------------------
# KL per dimension.


def test_kl_per_dim(tmp_path, captured):
    kl = [2.0, 0.001, 1.5, "nan", 0.0, 0.3]  # as in a test record after a partial divergence
    out = plots.plot_kl_per_dim(kl, tmp_path / "k.png")
    _assert_png(out, (7.0, 4.6))
    title = captured[-1].get_suptitle()
    assert "3 of 6 active units (KL > 0.01 nats)" in title and "1 NaN/inf" in title
    # (N, D) per-example values are averaged; a covariance mask decides the highlight.
    per_example = np.array([[1.0, 0.0, 0.2], [3.0, 0.0, 0.0]])
    plots.plot_kl_per_dim(per_example, tmp_path / "k2.png", active_units=[True, False, False],
                      log=False)
    assert "1 of 3 active units" in captured[-1].get_suptitle()
    plots.plot_kl_per_dim([1.0, 1.0, 0.0], tmp_path / "k3.png", active_units=1)
    assert "1 active by covariance" in captured[-1].get_suptitle()


def test_kl_per_dim_bad_inputs(tmp_path):
    with pytest.raises(ValueError, match=r"\(D,\) or \(N, D\)"):
        plots.plot_kl_per_dim(np.zeros((2, 2, 2)), tmp_path / "k.png")
    with pytest.raises(ValueError, match="mask must have shape"):
        plots.plot_kl_per_dim([1.0, 2.0], tmp_path / "k.png", active_units=[True])
    with pytest.raises(ValueError, match="not a number"):
        plots.plot_kl_per_dim(["abc"], tmp_path / "k.png")


# ----------------------------------------------------------------------------------------------
# Several runs.


def test_sweep_curves_and_table(tmp_path, captured):
    runs = {"beta=1": make_records(), "beta=4": make_records(epochs=2, test=False)}
    _assert_png(plots.plot_sweep_curves(runs, tmp_path / "s.png"), (10.0, 5.0))
    plots.plot_sweep_curves(runs, tmp_path / "kl.png", metric="kl")
    with pytest.raises(ValueError, match="no run has a finite 'nll'"):
        plots.plot_sweep_curves(runs, tmp_path / "x.png", metric="nll")
    with pytest.raises(ValueError, match="no runs"):
        plots.plot_sweep_curves({}, tmp_path / "x.png")

    bad = make_records(epochs=1)
    bad[-1] = {**bad[-1], "loss": "nan", "nll": 95.123, "nll_samples": 5000}
    table = plots.sweep_table({**runs, "a|b": bad})
    lines = table.strip().splitlines()
    assert lines[0].startswith("| run | epochs | train loss | test loss")
    assert len(lines) == 5
    assert lines[2].startswith("| beta=1 | 3 |") and "| 97.00 |" in lines[2] and "| 3 |" in lines[2]
    assert lines[3].startswith("| beta=4 | 2 |") and lines[3].count("\u2014") == 5  # no test
    assert "a\\|b" in lines[4] and "nan" in lines[4] and "95.12 (k=5000)" in lines[4]


def test_compare_runs(tmp_path, captured):
    runs = {"torch": make_records(), "jax": make_records(epochs=3, ae=False),
            "ae": make_records(ae=True, test=False)}
    _assert_png(plots.plot_compare_runs(runs, tmp_path / "c.png"), (14.0, 4.6))
    fig = captured[-1]
    assert "torch" in fig.get_suptitle() and "jax" in fig.get_suptitle()
    assert [ax.get_title() for ax in fig.axes] == ["loss", "reconstruction term", "KL divergence"]


def test_unit_factor_matrix(tmp_path, captured):
    kl = [0.1, 3.0, "nan", 1.0]
    m = np.linspace(0, 1, 4 * 5).reshape(4, 5)
    names = ["shape", "scale", "orientation", "x", "y"]
    out = plots.plot_unit_factor_matrix({"seed 0": (kl, m), "seed 1": (kl, m)}, names,
                                        tmp_path / "f.png")
    _assert_png(out, (0.6 + 2 * (1.4 + 0.55 * 5), 1.4 + 0.3 * 4))
    ax = captured[-1].axes[0]
    # units by KL, largest first; a NaN KL goes last
    assert [t.get_text() for t in ax.get_yticklabels()] == \
        ["z1 KL 3.00", "z3 KL 1.00", "z0 KL 0.10", "z2 KL nan"]
    assert [t.get_text() for t in ax.get_xticklabels()] == names
    np.testing.assert_array_equal(ax.images[0].get_array(), m[[1, 3, 0, 2]])
    with pytest.raises(ValueError, match="do not fit 5 factors"):
        plots.plot_unit_factor_matrix({"s": (kl[:3], m)}, names, tmp_path / "f.png")
