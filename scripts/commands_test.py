"""End-to-end tests of the commands (evaluate, sample, reconstruct, interpolate, latent_map,
convert, compare, figures) on real run folders of both frameworks.

Two tiny runs are trained once per module on the embedded mnist5k data (256 training and 100
test images, batch 32, one epoch, k = 8 for the final NLL): a JAX run with the preset's 20-D
latent (the PCA path) and a torch run of the same preset with latent_dim=2 (the manifold path).
Every command then runs in-process (`main([...])`) on both folders. Truths used: the trainer's
own test record (evaluate reuses the trainer's evaluation streams), the documented figure sizes
of `vaecommon.image_plots` and `vaecommon.plots`, and bit-exact weight round trips.

This file imports both frameworks (through the commands), like parity_tests: the commands are
the one user-facing layer that reads either kind of run folder.
"""

from __future__ import annotations

import importlib
import json
import math
import os
import shutil
import subprocess
import sys
import tomllib
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from vaecommon import plot_style
from vaecommon.config import TrainConfig
from vaecommon.run_figures import FIGURE_FILES
from vaecommon.runs import read_metrics

REPO = Path(__file__).resolve().parents[1]
COMMANDS = ("evaluate", "sample", "reconstruct", "interpolate", "latent_map", "convert",
            "compare", "figures", "study", "to_records")
FRAMEWORKS = ("jax", "torch")
TINY = TrainConfig(model="pytorch_examples", limit_train=256, limit_test=100, batch_size=32,
                   epochs=1, final_nll_samples=8)
LATENT = {"jax": 20, "torch": 2}


def command(name: str):
    return importlib.import_module(f"vaecommon.commands.{name}")


def run_main(name: str, *args) -> int:
    return command(name).main([str(a) for a in args])


def px(width_in: float, height_in: float) -> tuple[int, int]:
    """Pixel size of a figure of the given inches (vaecommon.plot_style saves at DPI, no tight bbox)."""
    return round(width_in * plot_style.DPI), round(height_in * plot_style.DPI)


def check_png(path: Path, size_in: tuple[float, float]) -> np.ndarray:
    """The PNG exists, has the documented size (+-1 px of rounding) and is not blank."""
    assert path.is_file(), path
    img = Image.open(path)
    want = px(*size_in)
    assert abs(img.size[0] - want[0]) <= 1 and abs(img.size[1] - want[1]) <= 1, (img.size, want)
    a = np.asarray(img.convert("L"), np.float64)
    assert a.std() > 0, f"{path} is blank"
    return a


def pixels(path: Path) -> np.ndarray:
    return np.asarray(Image.open(path).convert("RGB"))


def final_test(run: Path) -> dict:
    return [r for r in read_metrics(run) if r["type"] == "test"][-1]


# ------------------------------------------------------------------------------------- fixtures

@pytest.fixture(scope="module")
def runs(tmp_path_factory) -> dict[str, Path]:
    from jaxvae import train as jtrain
    from torchvae import train as ttrain

    base = tmp_path_factory.mktemp("runs")
    out = {"jax": base / "pe-jax", "torch": base / "pe2-torch"}
    jtrain.train_and_evaluate(TINY, out["jax"], resume=False, progress=False)
    ttrain.train_and_evaluate(TINY.replace(model_overrides={"latent_dim": 2}), out["torch"],
                              resume=False, progress=False)
    # what the trainer drew, before any command rewrites a figure
    snap = base / "trainer_figures"
    for fw, run in out.items():
        shutil.copytree(run / "figures", snap / fw)
    out["trainer_figures"] = snap
    return out


@pytest.fixture(params=FRAMEWORKS)
def fw(request) -> str:
    return request.param


# ---------------------------------------------------------------------------------------- help

@pytest.mark.parametrize("name", COMMANDS)
def test_help_exits_0_and_documents_every_option(name, capsys):
    with pytest.raises(SystemExit) as e:
        run_main(name, "--help")
    assert e.value.code == 0
    text = capsys.readouterr().out
    parser = command(name).build_parser()
    for action in parser._actions:
        names = action.option_strings or [action.dest]
        for opt in names:
            assert opt in text, f"{name} --help does not mention {opt}"
        if action.dest != "help":
            assert action.help, f"{name}: {names} has no help text"


def test_scripts_run_as_files_and_help_needs_no_framework():
    """`python scripts/<name>.py --help` works from the repo root, and building the parsers
    imports neither jax nor torch (the twin is imported when a command runs)."""
    for name in COMMANDS:
        r = subprocess.run([sys.executable, f"scripts/{name}.py", "--help"], cwd=REPO,
                           capture_output=True, text=True, timeout=60)
        assert r.returncode == 0, (name, r.stderr)
        assert "usage:" in r.stdout
    code = ("import sys, importlib\n"
            f"for n in {COMMANDS!r}: importlib.import_module('vaecommon.commands.' + n).build_parser()\n"
            "bad = [m for m in ('jax', 'torch') if m in sys.modules]\n"
            "assert not bad, bad\n")
    r = subprocess.run([sys.executable, "-c", code], cwd=REPO, capture_output=True, text=True,
                       timeout=60)
    assert r.returncode == 0, r.stderr


def test_console_entry_points_resolve():
    """Each [project.scripts] entry of ours names an existing `vaecommon.commands.<name>:main` (or `parity_tests.cli:main`)."""
    entries = tomllib.loads((REPO / "pyproject.toml").read_text())["project"]["scripts"]
    ours = {k: v for k, v in entries.items() if v.split(":")[0].split(".")[-1] in COMMANDS}
    assert len(ours) >= 7, entries  # figures.py is run as a file until an entry point is added
    for target in ours.values():
        module, func = target.split(":")
        assert callable(getattr(importlib.import_module(module), func)), target


# ------------------------------------------------------------------------------------ evaluate

def test_evaluate_reproduces_the_final_test_record(runs, fw, tmp_path, capsys):
    run = runs[fw]
    out = tmp_path / "eval.json"
    assert run_main("evaluate", run, "--nll-samples", 8, "--json", out) == 0
    printed = json.loads(capsys.readouterr().out)
    assert json.loads(out.read_text()) == printed
    rec = final_test(run)
    assert printed["framework"] == fw and printed["step"] == rec["step"]
    for k in ("loss", "recon", "kl", "bits_per_dim", "nll", "nll_bits_per_dim"):
        assert math.isfinite(printed[k]), k
    # Same eval/NLL random streams (keyed by seed and epoch), same batches, same weights: the
    # numbers are the trainer's. Bit-equal in practice; 1e-6 relative leaves room for a
    # different summation order of a recompiled program.
    for k in ("loss", "recon", "kl", "nll"):
        assert printed[k] == pytest.approx(rec[k], rel=1e-6), k
    assert printed["neg_elbo"] == printed["loss"]
    np.testing.assert_allclose(printed["kl_per_dim"], rec["kl_per_dim"], rtol=1e-6, atol=1e-9)
    assert printed["active_units"] == rec["active_units"]
    assert len(printed["kl_per_dim"]) == LATENT[fw]
    assert printed["nll"] <= printed["loss"] + 1e-3  # the k-sample bound is tighter than the ELBO


def test_evaluate_other_data_and_nll_limit(runs, fw, capsys):
    assert run_main("evaluate", runs[fw], "--nll-samples", 4, "--nll-limit", 10, "--dataset",
                    "mnist5k", "--limit", 40) == 0
    res = json.loads(capsys.readouterr().out)
    assert res["data"]["n"] == 40 and res["nll_examples"] == 10 and res["nll_samples"] == 4
    assert math.isfinite(res["loss"]) and res["loss"] > 0 and math.isfinite(res["nll"])


# ------------------------------------------------------------------------- images of the model

def test_sample(runs, fw, tmp_path):
    run = runs[fw]
    assert run_main("sample", run, "--n", 16, "--seed", 1, "--out", tmp_path / "a.png") == 0
    check_png(tmp_path / "a.png", (0.4 + 4 * 0.8, 0.75 + 4 * 0.8))  # ceil(sqrt(16)) per row
    run_main("sample", run, "--n", 16, "--seed", 1, "--nrow", 4, "--out", tmp_path / "b.png")
    np.testing.assert_array_equal(pixels(tmp_path / "a.png"), pixels(tmp_path / "b.png"))
    assert run_main("sample", run, "--n", 16, "--seed", 2) == 0  # default path
    other = run / "figures" / "samples_seed2.png"
    check_png(other, (0.4 + 4 * 0.8, 0.75 + 4 * 0.8))
    assert not np.array_equal(pixels(other), pixels(tmp_path / "a.png"))


def test_reconstruct(runs, fw, tmp_path):
    run = runs[fw]
    assert run_main("reconstruct", run) == 0
    check_png(run / "figures" / "reconstruct.png", (1.6 + 10 * 0.8 * 1.05, 2.6))
    assert run_main("reconstruct", run, "--indices", "0,3,7", "--out", tmp_path / "r.png") == 0
    check_png(tmp_path / "r.png", (1.6 + 3 * 0.8 * 1.05, 2.6))


def test_interpolate(runs, fw, tmp_path):
    run = runs[fw]
    assert run_main("interpolate", run) == 0  # first 3 -> first 8, linear, 10 steps
    check_png(run / "figures" / "interpolate_class3_class8_linear.png", (1.0 + 10 * 0.8, 1.8))
    assert run_main("interpolate", run, "--from-index", 0, "--to-index", 5, "--method", "slerp",
                    "--steps", 6, "--out", tmp_path / "i.png") == 0
    check_png(tmp_path / "i.png", (1.0 + 6 * 0.8, 1.8))


def test_latent_map(runs, fw, capsys):
    run = runs[fw]
    assert run_main("latent_map", run, "--manifold", "--grid", 8) == 0
    out, err = capsys.readouterr()
    check_png(run / "figures" / "latent_map.png", (7.5, 6.0))
    manifold = run / "figures" / "latent_map_manifold.png"
    if LATENT[fw] == 2:
        assert manifold.name in out
        check_png(manifold, (1.2 + 8 * 0.8, 1.0 + 8 * 0.8))  # 8 x 8 cells of 0.8 inches
    else:
        assert "latent_dim is 20" in err and "PCA" in err and not manifold.exists()


def test_figures_regenerates_the_trainers_figures(runs, fw, capsys):
    assert command("figures").FIGURES == tuple(FIGURE_FILES)
    run = runs[fw]
    before = runs["trainer_figures"] / fw
    assert run_main("figures", run) == 0
    written = {Path(p).name for p in capsys.readouterr().out.split()}
    expected = set(FIGURE_FILES.values())
    if LATENT[fw] != 2:
        expected.discard(FIGURE_FILES["latent_manifold"])
    assert written == expected
    assert {p.name for p in before.iterdir()} == expected
    # the model figures use the trainer's streams and weights restored bit for bit
    for key in ("samples", "reconstructions", "interpolation", "latent_scatter"):
        name = FIGURE_FILES[key]
        np.testing.assert_array_equal(pixels(run / "figures" / name), pixels(before / name), name)
    assert run_main("figures", run, "--only", "architecture") == 0


def test_compare(runs, tmp_path, capsys):
    out, table = tmp_path / "cmp.png", tmp_path / "cmp.md"
    assert run_main("compare", runs["jax"], runs["torch"], "--labels", "jax run,torch run",
                    "--out", out, "--table", table) == 0
    printed = capsys.readouterr().out
    check_png(out, (14.0, 4.6))
    assert table.read_text() == printed
    rows = [line for line in printed.splitlines() if line.startswith("| jax run") or
            line.startswith("| torch run")]
    assert len(rows) == 2
    for row, fw in zip(rows, FRAMEWORKS):
        assert f"| {final_test(runs[fw])['loss']:.2f} |" in row


# -------------------------------------------------------------------------------------- convert

def test_convert_round_trips_are_bit_exact(runs, tmp_path, capsys):
    import torch

    from jaxvae import api as jrestore
    from torchvae import api as trestore

    # torch run -> .safetensors (through the JAX model) -> .pt (through the torch model)
    ckpt = sorted((runs["torch"] / "checkpoints").glob("step_*.pt"))[-1]
    original = torch.load(ckpt, weights_only=True)["model"]
    st, pt = tmp_path / "w.safetensors", tmp_path / "w.pt"
    assert run_main("convert", runs["torch"], "--out", st) == 0
    assert run_main("convert", st, "--out", pt) == 0  # model and overrides from the metadata
    back = torch.load(pt, weights_only=True)
    assert list(back) == list(original)
    for k in original:
        assert back[k].dtype == original[k].dtype and torch.equal(back[k], original[k]), k

    # JAX run -> .pt -> JAX run folder (Orbax) -> the same canonical weights
    jpt = tmp_path / "j.pt"
    assert run_main("convert", runs["jax"], "--out", jpt) == 0
    assert run_main("convert", jpt, "--model", "pytorch_examples", "--to-run-folder",
                    tmp_path / "again") == 0
    a = jrestore.canonical_weights(jrestore.load_run(runs["jax"])[0])
    b = jrestore.canonical_weights(jrestore.load_run(tmp_path / "again")[0])
    assert a.keys() == b.keys()
    for k in a:
        assert a[k].dtype == b[k].dtype and np.array_equal(a[k], b[k]), k

    # the torch checkpoint file itself (state_dict under "model") converts too
    assert run_main("convert", ckpt, "--model", "pytorch_examples", "--override", "latent_dim=2",
                    "--to-run-folder", tmp_path / "from_ckpt") == 0
    c = trestore.canonical_weights(trestore.load_run(runs["torch"])[0])
    d = jrestore.canonical_weights(jrestore.load_run(tmp_path / "from_ckpt")[0])
    assert all(np.array_equal(c[k], d[k]) for k in c) and c.keys() == d.keys()
    capsys.readouterr()


def test_convert_round_trip_of_a_conv_preset_with_batchnorm(tmp_path, capsys):
    """resnet_vae: conv kernels, the flatten-order boundary Linears and BatchNorm statistics
    (int64 num_batches_tracked) survive .pth -> .safetensors -> .pt and .pth -> JAX run -> .pt."""
    import torch

    from torchvae.models import build_model

    model = build_model("resnet_vae", generator=torch.Generator().manual_seed(0))
    model.train()
    with torch.no_grad():  # non-trivial running statistics
        model(torch.rand(4, 1, 28, 28), eps=torch.zeros(4, 16))
    original = model.state_dict()
    src = tmp_path / "nb.pth"
    torch.save({"model": original, "epoch": 3}, src)  # a notebook-style training checkpoint
    assert run_main("convert", src, "--model", "resnet_vae", "--to-run-folder", tmp_path / "run",
                    "--out", tmp_path / "w.safetensors") == 0
    assert run_main("convert", tmp_path / "w.safetensors", "--out", tmp_path / "a.pt") == 0
    assert run_main("convert", tmp_path / "run", "--out", tmp_path / "b.pt") == 0
    for name in ("a.pt", "b.pt"):
        back = torch.load(tmp_path / name, weights_only=True)
        assert list(back) == list(original), name
        for k in original:
            assert back[k].dtype == original[k].dtype and torch.equal(back[k], original[k]), k
    capsys.readouterr()


def test_converted_run_folders_work_with_the_commands(runs, tmp_path, capsys):
    """A JAX run folder made from the torch run (2-D latent) evaluates and draws the manifold."""
    folder = tmp_path / "as-jax"
    assert run_main("convert", runs["torch"], "--to-run-folder", folder, "--weights-only") == 0
    summary = json.loads(capsys.readouterr().out)
    assert summary["framework"] == "jax" and summary["run_folder"] == str(folder)
    assert json.loads((folder / "config.json").read_text())["framework"] == "jax"
    assert run_main("evaluate", folder, "--nll-samples", 0) == 0
    res = json.loads(capsys.readouterr().out)
    assert res["step"] == 0 and res["epoch"] == 0 and math.isfinite(res["loss"])
    assert "nll" not in res
    assert run_main("latent_map", folder, "--grid", 5) == 0
    check_png(folder / "figures" / "latent_map_manifold.png", (6.0, 6.0))  # 5 x 5: the minimum
    assert run_main("figures", folder, "--only", "loss_curves", "--only", "latent_manifold") == 0
    err = capsys.readouterr().err
    assert "skipped loss_curves: no metrics.jsonl" in err
    assert (folder / "figures" / FIGURE_FILES["latent_manifold"]).exists()
    # ... and back to torch as a run folder
    assert run_main("convert", folder, "--to-run-folder", tmp_path / "as-torch") == 0
    assert json.loads((tmp_path / "as-torch" / "config.json").read_text())["framework"] == "torch"


def test_an_autoencoder_run(tmp_path, capsys):
    """An AE (no prior, no KL): evaluate reports KL 0 and no NLL, sample refuses clearly,
    latent_map explains why there is no manifold."""
    import torch

    from torchvae.models import build_model

    pt = tmp_path / "ae.pt"
    torch.save(build_model("simple_ae", generator=torch.Generator().manual_seed(0)).state_dict(), pt)
    folder = tmp_path / "ae"
    assert run_main("convert", pt, "--model", "simple_ae", "--framework", "torch",
                    "--to-run-folder", folder) == 0
    capsys.readouterr()
    assert run_main("evaluate", folder, "--nll-samples", 4, "--limit", 20) == 0
    res = json.loads(capsys.readouterr().out)
    assert res["framework"] == "torch" and res["kl"] == 0 and "nll" not in res
    assert "is an autoencoder: it has no prior" in expect_error(capsys, "sample", folder)
    assert run_main("latent_map", folder, "--manifold", "--limit", 50) == 0
    assert "an autoencoder has no prior" in capsys.readouterr().err


# ---------------------------------------------------------------------------------------- errors

def expect_error(capsys, name: str, *args) -> str:
    with pytest.raises(SystemExit) as e:
        run_main(name, *args)
    assert e.value.code == 2
    err = capsys.readouterr().err
    assert f"{name}: error:" in err
    return err


def test_errors_are_clear(runs, tmp_path, capsys):
    os.environ.pop("JAXVAE_TRACEBACK", None)
    empty = tmp_path / "empty"
    empty.mkdir()
    assert "not a run folder: no config.json" in expect_error(capsys, "evaluate", empty)
    assert "does not exist" in expect_error(capsys, "sample", tmp_path / "nope")
    pt = tmp_path / "w.pt"
    assert run_main("convert", runs["torch"], "--out", pt) == 0
    capsys.readouterr()
    err = expect_error(capsys, "reconstruct", pt)
    assert "is a file, not a run folder" in err and "--to-run-folder" in err

    no_ckpt = tmp_path / "no_ckpt"
    no_ckpt.mkdir()
    shutil.copy(runs["jax"] / "config.json", no_ckpt)
    assert "no jax checkpoint in" in expect_error(capsys, "evaluate", no_ckpt)

    corrupt = tmp_path / "corrupt"
    shutil.copytree(runs["jax"], corrupt)
    (corrupt / "config.json").write_text('{"config": ')
    assert "corrupt config JSON" in expect_error(capsys, "latent_map", corrupt)
    (corrupt / "config.json").write_text('{"config": {"model": "pytorch_examples"}}')
    assert "missing key(s) ['framework']" in expect_error(capsys, "latent_map", corrupt)
    (corrupt / "config.json").write_text(json.dumps({"config": {"modle": "x"}, "framework": "jax"}))
    assert "unknown TrainConfig field(s) ['modle']" in expect_error(capsys, "sample", corrupt)

    mixed = tmp_path / "mixed"
    shutil.copytree(runs["jax"], mixed)
    record = json.loads((mixed / "config.json").read_text())
    (mixed / "config.json").write_text(json.dumps({**record, "framework": "torch"}))
    err = expect_error(capsys, "evaluate", mixed)
    assert "no torch checkpoint in" in err and "found only ['8']" in err

    assert "available steps: [8]" in expect_error(capsys, "evaluate", runs["torch"], "--step", 3)
    err = expect_error(capsys, "convert", pt, "--model", "no_such_preset")
    assert "unknown model preset 'no_such_preset'; valid presets: pytorch_examples" in err
    assert "pass --model PRESET (valid presets:" in expect_error(capsys, "convert", pt)
    err = expect_error(capsys, "convert", pt, "--model", "conv_vae")
    assert "weights do not fit preset 'conv_vae'" in err and "missing tensors" in err
    assert "no test image with label 42" in expect_error(capsys, "interpolate", runs["jax"],
                                                         "--from-class", 42)
    assert "out of range" in expect_error(capsys, "reconstruct", runs["jax"], "--indices", "5,500")
    assert "no metrics.jsonl" in expect_error(capsys, "compare", runs["jax"], no_ckpt)


def test_to_records_converts_and_errors_are_one_line(tmp_path, capsys):
    """The conversion command writes what the resident reader reads back bit for bit; bad input
    is one `to-records: error:` line with exit status 2 (also train's --input for torch)."""
    from vaecommon import datasets

    out = tmp_path / "m"
    assert run_main("to_records", "--dataset", "mnist5k", "--limit", "30", "--split", "test",
                    "--out", out) == 0
    meta = json.loads(capsys.readouterr().out)
    assert meta["splits"] == {"test": {"n": 30, "note": meta["splits"]["test"]["note"]}}
    got = datasets.load_dataset_arrays("mnist5k", "test", source="array_record", data_dir=out)
    want = datasets.load_dataset_arrays("mnist5k", "test", limit=30)
    assert np.array_equal(got.images, want.images) and np.array_equal(got.labels, want.labels)
    for name, args, words in [
            ("to_records", ["--dataset", "mnist5k", "--out", out], "already holds a converted dataset"),
            ("to_records", ["--dataset", "image_folder", "--out", tmp_path / "x"],
             "dataset 'image_folder' needs data_dir"),
            ("train", ["--framework", "torch", "--input", "stream", "--workdir", tmp_path / "r"],
             "--input stream is JAX only")]:
        with pytest.raises(SystemExit) as e:
            run_main(name, *args)
        err = capsys.readouterr().err
        assert e.value.code == 2 and words in err and len(err.strip().splitlines()) == 1, err
    assert not (tmp_path / "x").exists()  # validated before anything is created


def test_twin_selection_errors():
    from vaecommon.commands import twins as _twins
    from vaecommon.runinfo import RunFolderError

    with pytest.raises(RunFolderError, match="unknown framework 'tf'"):
        _twins.twin("tf")


def _train_output(arg: str) -> str:
    """stdout of `train.main([arg])` in a subprocess that checks no framework was imported."""
    r = subprocess.run([sys.executable, "-c", "import sys\nfrom vaecommon.commands import train\n"
                        "try:\n    code = train.main([%r])\nexcept SystemExit as e:\n"
                        "    code = e.code\n"
                        "assert not [m for m in ('jax', 'torch') if m in sys.modules]\n"
                        "sys.exit(code)" % arg], cwd=REPO, capture_output=True, text=True,
                       timeout=120)
    assert r.returncode == 0 and not r.stderr, r.stderr
    return r.stdout


def _entry(text: str, name: str) -> str:
    """The line of `text` that lists `name`."""
    return next(line for line in text.splitlines() if line.startswith(f"  {name} "))


@pytest.mark.parametrize("arg", ["--list", "--help"])
def test_train_list_and_help_describe_every_choice_without_importing_a_framework(arg):
    """`train.py --list` and `--help` (its epilog): every preset with its parameter count and
    source, every objective, likelihood and dataset with its one-line summary from its table;
    --list adds each objective's parameters. Neither imports jax or torch."""
    from vaecommon import objectives, presets
    from vaecommon.datasets import DATASET_SUMMARIES

    out = _train_output(arg)
    for name, spec in presets.PRESETS.items():
        assert f"{spec.params:,}" in _entry(out, name) and spec.source in _entry(out, name)
    for table in (objectives.OBJECTIVES, objectives.LIKELIHOODS):
        for name, spec in table.items():
            assert spec.summary and spec.summary in _entry(out, name), name
    for name, summary in DATASET_SUMMARIES.items():
        assert summary in _entry(out, name)
    assert "--param sigma=1.0" in _entry(out, "gaussian")
    assert ("--param beta=4.0" in out) == (arg == "--list")
