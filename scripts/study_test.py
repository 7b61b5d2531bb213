"""scripts/study.py: objectives x seeds as sweeps, the table, the figures, the rerun."""

from __future__ import annotations

import json
import shlex

import numpy as np
import pytest

from vaecommon.commands import study

# 2 objectives x 2 seeds, one epoch of 2 steps on 64 sprites; tiny NLL and metric samples
TINY = ["--objectives", "elbo", "beta_vae:beta=4", "--seeds", "0", "1", "--dataset",
        "shapes_small", "--epochs", "1", "--batch-size", "32", "--limit-train", "64",
        "--limit-test", "32", "--nll-samples", "4", "--nll-limit", "8", "--metric-points", "100",
        "--no-progress"]


def _files(root):
    return {p: p.stat().st_mtime_ns for p in sorted(root.rglob("*")) if p.is_file()}


# jax computes every metric; torch only MIG (the metrics are framework-free: its other columns
# show a dash, and the test stays short)
@pytest.mark.parametrize("fw, metrics", [("jax", None), ("torch", ["mig"])])
def test_a_study_writes_the_table_and_figures_and_a_rerun_changes_nothing(fw, metrics, tmp_path,
                                                                         capsys, monkeypatch):
    out = tmp_path / "study"
    argv = TINY + ["--framework", fw, "--out", str(out)] + (["--metrics", *metrics] if metrics
                                                            else [])
    assert study.main(argv) == 0
    md = (out / "study.md").read_text()
    assert capsys.readouterr().out.strip() == md.strip()
    head = next(line for line in md.splitlines() if line.startswith("| objective |"))
    columns = [c.strip() for c in head.strip("|").split("|")]
    assert columns == ["objective", "test -ELBO", "NLL", "NLL s.e.", "KL", "active units",
                       "I(x;z)", "TC", "beta-VAE", "FactorVAE", "MIG", "SAP", "DCI-D", "DCI-C",
                       "DCI-I"]
    rows = [line for line in md.splitlines() if line.startswith("| elbo |")
            or line.startswith("| beta_vae-beta=4 |")]
    assert len(rows) == 2
    for row in rows:
        cells = [c.strip() for c in row.strip("|").split("|")]
        assert len(cells) == len(columns)
        assert all(" ± " in c for c in cells[1:6]), row  # mean ± std over the 2 seeds
        # I(x;z) and TC (cells 6, 7) show a dash in runs that do not record them
        for head, c in zip(columns[8:], cells[8:]):
            assert (" ± " in c) if metrics is None or head == "MIG" else c == "\u2014", row
    assert "likelihood (binary pixels)" in md and "k=4 on 8 test images" in md

    # each objective is one sweep: member_<i> is seed i
    for label in ("elbo", "beta_vae-beta=4"):
        for i, seed in enumerate((0, 1)):
            record = json.loads((out / label / f"member_{i}" / "config.json").read_text())
            assert record["framework"] == fw and record["config"]["seed"] == seed
            assert record["sweep"] == {"seed": ["0", "1"]}
        assert (out / "figures" / f"traversal_{label}.png").stat().st_size > 0
        assert (out / "figures" / f"factors_{label}.png").stat().st_size > 0
    numbers = json.loads((out / "study.json").read_text())
    members = numbers["objectives"][1]["members"]
    assert [m["seed"] for m in members] == [0, 1]
    assert numbers["objectives"][1]["params"] == {"beta": 4}
    for m in members:
        assert {"loss", "nll", "nll_stderr", "kl", "active_units", "kl_per_dim"} <= set(m["test"])
        assert 0 <= m["metrics"]["mig"]["discrete_mig"] <= 1
        assert set(m["metrics"]) == set(metrics or study.METRIC_NAMES)
        assert np.asarray(m["unit_factor_mi"]).shape == (10, 5)

    # the command in study.md parses back to this study
    command = md.split("Regenerate:")[1].strip()
    words = shlex.split(command)
    assert words[:2] == ["python", "scripts/study.py"]
    again = study.build_parser().parse_args(words[2:])
    mine = study.build_parser().parse_args(argv)
    assert {k: v for k, v in vars(again).items() if k != "no_progress"} == \
        {k: v for k, v in vars(mine).items() if k != "no_progress"}

    # a rerun trains nothing, restores nothing and rewrites no file
    before = _files(out)
    from vaecommon.commands import twins

    def refuse(*a, **k):
        raise AssertionError("a rerun of a finished study must not load a framework")

    monkeypatch.setattr(twins, "module", refuse)
    assert study.main(argv) == 0
    assert _files(out) == before


@pytest.mark.parametrize("spec, match", [
    ("beta_vae:betta=4", "objective 'beta_vae' has no parameter 'betta'; valid: beta"),
    ("beta_vae:beta=-1", r"\['beta'\] .* must be >= 0 and finite, got -1"),
    ("elbow", "unknown objective 'elbow'"),
    ("beta_vae:beta", "expected NAME:KEY=VALUE,KEY=VALUE"),
])
def test_a_bad_objective_is_one_error_line_and_creates_nothing(spec, match, tmp_path, capsys):
    import re

    with pytest.raises(SystemExit) as e:
        study.main(["--objectives", "elbo", spec, "--out", str(tmp_path / "s")])
    assert e.value.code == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and err.startswith("study.py: error: --objectives")
    assert re.search(match, err), err
    assert not (tmp_path / "s").exists()


def test_objective_specs_labels_and_the_filled_in_dataset_size():
    assert study.parse_objective("beta_tcvae:beta=6,sampling=mss") == \
        ("beta_tcvae", {"beta": 6, "sampling": "mss"})
    assert study.label_of("beta_vae", {"beta": 4}) == "beta_vae-beta=4"
    args = study.build_parser().parse_args(["--objectives", "beta_tcvae", "dip_vae_i",
                                            "--limit-train", "100", "--seeds", "3"])
    tc, dip = study.plan(args)
    assert tc.params == {"dataset_size": 100} and tc.label == "beta_tcvae"
    assert tc.cfgs[0].objective_params["dataset_size"] == 100 and tc.cfgs[0].seed == 3
    assert dip.params == {} and dip.cfgs[0].model == "burgess_vae"
    given = study.plan(study.build_parser().parse_args(["--objectives",
                                                        "beta_tcvae:dataset_size=7"]))
    assert given[0].params == {"dataset_size": 7}
    full = study.plan(study.build_parser().parse_args(["--objectives", "beta_tcvae"]))
    assert full[0].params == {"dataset_size": 3687}  # shapes_small's training split


def test_the_encoded_grid_encodes_each_image_once_and_gives_its_code():
    from vaecommon import disentanglement, shapes

    grid = shapes.Shapes("shapes_small")
    encoded = []

    def encode(images):  # (N, 64, 64, 1) -> (N, 2): pixel count and row moment
        encoded.append(len(images))
        rows = np.arange(64)[None, :, None, None]
        return np.stack([images.sum((1, 2, 3)), (images * rows).sum((1, 2, 3))], axis=1)

    data = study.EncodedGrid(grid, encode, batch=100)
    rs = np.random.RandomState(0)
    codes, factors = disentanglement.sample_codes(data, data.representation, 3000, rs)
    drawn = np.unique(grid.factors_to_index(factors))
    assert data.num_encoded == len(drawn) < 3000  # a repeated draw is looked up, not encoded
    assert all(n % 64 == 0 for n in encoded) and sum(encoded) < len(drawn) + 64 * len(encoded)
    np.testing.assert_array_equal(codes, encode(grid.sample_observations_from_factors(factors)))
