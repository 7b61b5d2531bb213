"""Tests of `vaecommon.lifecycle` pieces that need no framework: early stopping, cadence,
records, timings, members; and the validation split / fixed binarization of vaecommon.datasets."""

from __future__ import annotations

import warnings

import numpy as np
import pytest

from vaecommon import lifecycle
from vaecommon.config import TrainConfig
from vaecommon.datasets import DataError, DataInfo, Dataset, binarize_fixed, binarized_view, hold_out


def test_early_stopping_is_the_reference_rule():
    """best updates reset the count; a count above the patience stops; within the warm-up the
    count is reset (epoch < warmup)."""
    s = lifecycle.EarlyStopping(patience=2, warmup_epochs=3)
    assert s.update(1, 10.0) and s.best_epoch == 1
    assert not s.update(2, 11.0) and s.bad == 0  # epoch 2 < 3: reset
    assert not s.update(3, 11.0) and s.bad == 1
    assert not s.update(4, 12.0) and s.bad == 2 and not s.stopped
    assert not s.update(5, 10.5) and s.stopped  # 3 > 2
    assert (s.best, s.best_epoch, s.stop_epoch) == (10.0, 1, 5)
    # a stopped sweep member trained 5 epochs, whatever the shared program ran on to
    assert s.epochs_trained({"epoch": 9}) == 5
    assert lifecycle.EarlyStopping(patience=2).epochs_trained({"epoch": 9}) == 9
    never = lifecycle.EarlyStopping(patience=0)
    for e in range(1, 50):
        never.update(e, 1.0 + e)
    assert not never.stopped


def test_mean_and_stderr_by_hand():
    """values 1, 2, 3, 4: mean 2.5, sample variance 5/3, standard error sqrt(5/3)/2."""
    mean, se = lifecycle.mean_and_stderr([1.0, 2.0, 3.0, 4.0])
    assert mean == 2.5 and se == pytest.approx((5 / 3) ** 0.5 / 2, rel=1e-12)
    assert lifecycle.mean_and_stderr([7.0]) == (7.0, 0.0)


def test_early_stopping_rebuilds_from_records():
    losses = [5.0, 4.0, 4.5, 4.6, 3.9, 4.0, 4.1]
    recs = [{"type": "validation", "epoch": e, "loss": v} for e, v in enumerate(losses, 1)]
    recs.insert(2, {"type": "train", "epoch": 2, "loss": 0.0})  # other records are ignored
    live = lifecycle.EarlyStopping(patience=1)
    for e, v in enumerate(losses, 1):
        live.update(e, v)
    again = lifecycle.EarlyStopping.from_records(recs, patience=1)
    assert vars(again) == vars(live) and live.stopped and live.best_epoch == 5


def test_due_and_epoch_records_thinning():
    assert [lifecycle.due(3, e, False) for e in range(6)] == [False, False, True, False, False, True]
    assert lifecycle.due(0, 0, True) and not lifecycle.due(0, 4, False)
    terms = {"loss": np.arange(1.0, 11.0), "kl": np.ones(10)}
    recs, train = lifecycle.epoch_records(terms, step=20, epoch=1, batch_size=4, seconds=2.0,
                                          last_checkpoint="x", every=5)
    assert [r["step"] for r in recs if r["type"] == "batch"] == [15, 20]
    assert train["loss"] == pytest.approx(5.5) and train["examples_per_s"] == pytest.approx(20.0)
    with pytest.raises(lifecycle.NonFiniteLossError, match="epoch 2, step 13; x"):
        lifecycle.epoch_records({"loss": np.array([1.0, 2.0, np.inf])}, step=13, epoch=1,
                                batch_size=4, seconds=1.0, last_checkpoint="x")


def test_member_configs():
    cfgs, swept = lifecycle.member_configs(TrainConfig(objective="beta_vae"), None)
    assert len(cfgs) == 1 and swept == []
    cfgs, swept = lifecycle.member_configs(TrainConfig(objective="beta_vae"),
                                           {"seed": [1, 2], "beta": [2, 8]})
    assert [c.seed for c in cfgs] == [1, 2] and swept == ["beta"]
    assert lifecycle.member_label(cfgs[1], {"seed": [1, 2], "beta": [2, 8]}) == "seed=2,beta=8.0"


def test_timings_accumulate_per_phase():
    t = lifecycle.Timings()
    with t("nll"):
        pass
    with t("nll"):
        pass
    assert set(t.seconds) >= set(lifecycle.Timings.PHASES) and t.seconds["nll"] >= 0.0


def _ds(n=10):
    images = np.linspace(0, 1, n * 4, dtype=np.float32).reshape(n, 2, 2, 1)
    return Dataset(images, np.arange(n), DataInfo("fashion_mnist", "idx", "p", "train", n))


def test_hold_out_takes_the_last_examples_in_file_order():
    train, val = hold_out(_ds(10), 3)
    assert train.images.shape[0] == 7 and val.images.shape[0] == 3
    assert list(val.labels) == [7, 8, 9] and val.info.split == "validation" and train.info.n == 7
    for bad in (0, 10, 11):
        with pytest.raises(DataError, match="validation split must leave"):
            hold_out(_ds(10), bad)


def test_fixed_binarization_is_deterministic_per_split_and_layout_free():
    x = np.random.default_rng(0).uniform(size=(50, 28, 28, 1)).astype(np.float32)
    a, b = binarize_fixed(x, "test"), binarize_fixed(x, "test")
    assert np.array_equal(a, b) and set(np.unique(a)) <= {0.0, 1.0}
    assert not np.array_equal(a, binarize_fixed(x, "validation"))
    # NCHW with one channel has the same C order: the same bits
    assert np.array_equal(binarize_fixed(x.transpose(0, 3, 1, 2), "test"), a.transpose(0, 3, 1, 2))
    assert abs(a.mean() - x.mean()) < 0.01  # P(1) = the pixel value
    assert binarize_fixed(np.zeros((2, 3)), "test").sum() == 0
    assert binarize_fixed(np.ones((2, 3)), "test").sum() == 6
    view = binarized_view(Dataset(x, np.zeros(50), DataInfo("d", "s", "p", "test", 50)))
    assert np.array_equal(view.images, a) and "fixed seed" in view.info.note


def test_test_metrics_of_a_diverged_run_are_flagged_without_a_numpy_warning():
    # the divergence guard then ends the run with one error line: no RuntimeWarning before it
    inf = np.full(3, np.inf)
    sums = {"loss": np.inf, "recon": np.inf, "kl": 1.0, "kl_per_dim": inf, "mean_sum": inf,
            "mean_sq": inf}
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        res = lifecycle.test_metrics(sums, 4)
    assert res["nonfinite"] and res["active_units"] == 0


def test_open_run_locks_creates_and_sets_aside(tmp_path, capsys):
    import contextlib

    work = tmp_path / "run"
    folders = lifecycle.member_folders(work, 1)
    with contextlib.ExitStack() as stack:  # a fresh run: the folder is created and locked
        made, failed = lifecycle.open_run(stack, work, folders, resume=True, lead=True, package="t")
        assert failed is None and made[0].root.is_dir() and (work / ".lock").exists()
        (made[0].root / "metrics.jsonl").write_text("{}\n")
        # a second trainer on the same folder gets the lock's error back, not raised
        with contextlib.ExitStack() as other:
            _, err = lifecycle.open_run(other, work, folders, resume=True, lead=True, package="t")
        assert isinstance(err, lifecycle.RunOwnershipError) and "another process" in str(err)
    # --no-resume moves the old run aside (kept on disk), then starts an empty one
    with contextlib.ExitStack() as stack:
        made, failed = lifecycle.open_run(stack, work, folders, resume=False, lead=True, package="t")
    assert failed is None and not (work / "metrics.jsonl").exists()
    aside = [p for p in tmp_path.iterdir() if p.name.startswith("run.replaced-")]
    assert len(aside) == 1 and (aside[0] / "metrics.jsonl").read_text() == "{}\n"
    assert "--no-resume: the old run was moved to" in capsys.readouterr().out


def test_open_run_on_a_follower_touches_nothing(tmp_path):
    import contextlib

    work = tmp_path / "run"
    folders = lifecycle.member_folders(work, 2)
    with contextlib.ExitStack() as stack:
        made, failed = lifecycle.open_run(stack, work, folders, resume=False, lead=False, package="t")
    assert failed is None and made == folders and not work.exists()


def test_open_run_returns_an_unwritable_folder_as_its_error(tmp_path):
    import contextlib

    blocker = tmp_path / "file"
    blocker.write_text("x")  # a file where the run folder's parent should be
    work = blocker / "run"
    with contextlib.ExitStack() as stack:
        _, failed = lifecycle.open_run(stack, work, lifecycle.member_folders(work, 1), resume=True,
                                       lead=True, package="t")
    assert isinstance(failed, OSError)


def test_sampled_diagnostics_count_only_on_their_steps():
    e = lifecycle.SAMPLED_EVERY
    n = 2 * e + 3  # an epoch of steps e+1 .. 3e+3 (1-based): 0-based indices e .. 3e+2
    first = e + 1
    mi = np.arange(n, dtype=np.float64) + 1.0
    sampled = [(first + i - 1) % e == 0 for i in range(n)]
    mi[~np.array(sampled)] = 0.0  # what the trainers return on the other steps
    terms = {"loss": np.ones(n), "mutual_info": mi, "total_correlation": 2 * mi}
    records, train = lifecycle.epoch_records(terms, step=first + n - 1, epoch=1, batch_size=4,
                                             seconds=1.0, last_checkpoint="none")
    batches = [r for r in records if r["type"] == "batch"]
    assert [("mutual_info" in r) for r in batches] == sampled and sum(sampled) == 3
    assert [r["step"] for r in batches if "mutual_info" in r] == [e + 1, 2 * e + 1, 3 * e + 1]
    by_hand = (1.0 + (e + 1.0) + (2 * e + 1.0)) / 3  # the values at i = 0, e, 2e
    assert train["mutual_info"] == by_hand and train["total_correlation"] == 2 * by_hand
    assert train["loss"] == 1.0
    # an epoch without a sampled step (steps 2 .. e) has no estimate rather than a 0
    terms = {"loss": np.ones(e - 1), "mutual_info": np.zeros(e - 1)}
    _, train = lifecycle.epoch_records(terms, step=e, epoch=0, batch_size=4, seconds=1.0,
                                       last_checkpoint="none")
    assert "mutual_info" not in train and train["loss"] == 1.0
    assert lifecycle.sampled_step(0) and lifecycle.sampled_step(e) and not lifecycle.sampled_step(1)
