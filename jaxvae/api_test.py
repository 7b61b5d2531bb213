"""Input checks of `jaxvae.api`, the library API: bad images raise `DataError` with one line
naming the call, before anything is computed. Twin: `torchvae/restore_test.py` (the same cases and
messages; `parity_tests/test_data.py` compares the two twins' messages)."""

from __future__ import annotations

import numpy as np
import pytest

from jaxvae import api as restore
from jaxvae import models
from vaecommon.config import TrainConfig, resolve
from vaecommon.datasets import DataInfo, Dataset
from vaecommon.validate import DataError

CFG = resolve(TrainConfig(model="pytorch_examples", eval_batch_size=8, final_nll_samples=0))
INFO = DataInfo("mnist5k", "embedded", "test", "test", 8)


@pytest.fixture(scope="module")
def restored(tmp_path_factory):
    """A run folder written from a freshly initialised model (no training), restored."""
    model = models.build_model(CFG.model, key=0)
    run = restore.write_run_folder(tmp_path_factory.mktemp("run") / "r", CFG,
                                   restore.canonical_weights(model), converted_from="a test")
    return restore.restore(run)


def _data(images) -> Dataset:
    return Dataset(images, np.zeros(len(images), np.int64), INFO)


GOOD = np.random.default_rng(0).uniform(size=(8, 28, 28, 1)).astype(np.float32)  # NHWC in [0, 1]


def test_evaluate_run_refuses_8bit_pixels(restored):
    """Pixels x 255 used to give a silent -ELBO of ~1e33 in JAX and a RuntimeError from
    F.binary_cross_entropy in torch; both twins now refuse them the same way."""
    assert np.isfinite(restore.evaluate_run(restored, _data(GOOD))["loss"])
    with pytest.raises(DataError) as e:
        restore.evaluate_run(restored, _data(np.round(GOOD * 255)))
    assert str(e.value).startswith("evaluate_run: data.images: pixel values span [0, 255] but the "
                                   "model takes images in [0, 1] (divide 8-bit images by 255)")
    assert "\n" not in str(e.value)


def _bad(kind: str) -> np.ndarray:
    x = GOOD.copy()
    if kind == "nan":
        x[3, 5, 5, 0] = np.nan
    elif kind == "inf":
        x[1, 0, 0, 0] = np.inf
    elif kind == "negative":
        x[0, 0, 0, 0] = -0.5
    elif kind == "uint8":
        x = np.round(x * 255).astype(np.uint8)
    elif kind == "half_size":
        x = x[:, ::2, ::2]
    elif kind == "flat":
        x = x.reshape(len(x), -1)
    elif kind == "nchw":
        x = x.transpose(0, 3, 1, 2)
    elif kind == "empty":
        x = x[:0]
    return x


BAD = [
    ("nan", r"1 NaN/inf pixel values in 1 images \(first at index 3\)"),
    ("inf", r"1 NaN/inf pixel values in 1 images \(first at index 1\)"),
    ("negative", r"pixel values span \[-0\.5, .*\] but the model takes images in \[0, 1\]"),
    ("uint8", r"images have dtype uint8; expected float32 in \[0, 1\]"),
    ("half_size", r"examples have shape \(14, 14, 1\) \(HWC\) but preset 'pytorch_examples' "
                  r"expects \(28, 28, 1\)"),
    ("flat", r"examples have shape \(784,\) \(HWC\) but preset 'pytorch_examples' expects"),
    ("nchw", r"examples have shape \(1, 28, 28\) \(HWC\) but preset 'pytorch_examples' expects "
             r"\(28, 28, 1\)"),
    ("empty", r"the dataset is empty"),
]

CALLS = {
    "evaluate_run": lambda r, x: restore.evaluate_run(r, _data(x)),
    "run_figure_arrays": lambda r, x: restore.run_figure_arrays(r, _data(x)),
    "encode_means": lambda r, x: restore.encode_means(r.model, x),
    "reconstruct": lambda r, x: restore.reconstruct(r.model, x),
}
WHERE = {"evaluate_run": "data.images", "run_figure_arrays": "data.images", "encode_means": "images",
         "reconstruct": "images"}


@pytest.mark.parametrize("call", list(CALLS))
@pytest.mark.parametrize("kind, message", BAD, ids=[k for k, _ in BAD])
def test_bad_images_raise_data_error_naming_the_call(restored, call, kind, message):
    with pytest.raises(DataError, match=rf"^{call}: {WHERE[call]}: {message}"):
        CALLS[call](restored, _bad(kind))


@pytest.mark.parametrize("kind, message", [b for b in BAD if b[0] in ("nan", "uint8", "half_size")],
                         ids=["nan", "uint8", "half_size"])
def test_interpolate_checks_each_endpoint(restored, kind, message):
    bad = _bad(kind)[3 if kind == "nan" else 0]
    with pytest.raises(DataError, match=rf"^interpolate: x1: {message.replace('index 3', 'index 0')}"):
        restore.interpolate(restored.model, GOOD[0], bad)
