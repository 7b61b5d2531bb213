"""The data twins agree: the same source gives bit-identical images (JAX NHWC == torch NCHW
transposed), equal labels (int32 vs int64) and the same DataInfo; same public API in both; the
restore API refuses the same bad images with the same message."""

from __future__ import annotations

import inspect

import numpy as np
import pytest
import tensorflow_datasets as tfds

from jaxvae import data as jdata
from jaxvae import api as jrestore
from torchvae import data as tdata
from torchvae import api as trestore
from vaecommon import datasets
from vaecommon.config import TrainConfig, resolve
from vaecommon.presets import get_spec
from vaecommon.datasets_test import (fixture_arrays, make_idx_dir, make_image_folder,
                                     needs_debian_fashion)


@pytest.fixture(autouse=True)
def offline(monkeypatch, tmp_path):
    """No network probes, no default IDX directories: only what a test creates is found."""
    monkeypatch.setattr(datasets, "can_reach", lambda url, timeout=3.0: False)
    monkeypatch.setattr(datasets, "DEFAULT_DATA_DIRS", (str(tmp_path / "nowhere"),))


def assert_twins_equal(jax_ds, torch_ds, *, same_info=True):
    """Bit-identical images after NCHW -> NHWC (or equal flat rows), equal labels and info."""
    j, t = np.asarray(jax_ds.images), torch_ds.images.numpy()
    if t.ndim == 4:
        t = t.transpose(0, 2, 3, 1)  # torch NCHW -> NHWC
    assert j.dtype == t.dtype == np.float32 and j.shape == t.shape
    assert j.tobytes() == t.tobytes()
    assert str(jax_ds.labels.dtype) == "int32" and str(torch_ds.labels.dtype) == "torch.int64"
    np.testing.assert_array_equal(np.asarray(jax_ds.labels), torch_ds.labels.numpy())
    if same_info:
        assert jax_ds.info == torch_ds.info


def test_same_public_api():
    assert jdata.__all__ == tdata.__all__
    for name in jdata.__all__:
        if name in ("load_dataset", "binarize"):
            jp = inspect.signature(getattr(jdata, name)).parameters
            tp = inspect.signature(getattr(tdata, name)).parameters
            if name == "binarize":  # the randomness argument is each framework's own
                assert list(jp) == ["images", "key"] and list(tp) == ["images", "generator"]
                continue
            assert [(p.name, p.kind, p.default) for p in jp.values()] == \
                   [(p.name, p.kind, p.default) for p in tp.values()]
        else:  # constants and types are shared from vaecommon
            assert getattr(jdata, name) is getattr(tdata, name)
    assert "Twin: `torchvae.data`" in jdata.__doc__ and "Twin: `jaxvae.data`" in tdata.__doc__


@pytest.mark.parametrize("split", ["train", "test"])
@pytest.mark.parametrize("binarization", ["none", "static"])
def test_idx_fixture(tmp_path, split, binarization):
    make_idx_dir(tmp_path)
    kw = dict(data_dir=tmp_path, binarization=binarization)
    assert_twins_equal(jdata.load_dataset("mnist", split, **kw),
                       tdata.load_dataset("mnist", split, **kw))
    # C = 1: the NHWC and NCHW flattenings are the same order
    assert_twins_equal(jdata.load_dataset("mnist", split, flatten=True, **kw),
                       tdata.load_dataset("mnist", split, flatten=True, **kw))


@pytest.mark.parametrize("binarization", ["none", "static"])
def test_mnist5k(binarization):
    j = jdata.load_dataset("mnist5k", "train", binarization=binarization)
    assert_twins_equal(j, tdata.load_dataset("mnist5k", "train", binarization=binarization))
    assert j.info.n == 4000


def test_mnist_not_found_is_the_same_error_in_both_twins(tmp_path, monkeypatch):
    monkeypatch.setattr(datasets, "DEFAULT_DATA_DIRS", (str(tmp_path / "nowhere"),))
    monkeypatch.setattr(datasets, "can_reach", lambda url, timeout=3.0: False)  # offline
    msgs = {}
    for name, twin in (("jax", jdata), ("torch", tdata)):
        with pytest.raises(datasets.DataError) as err:
            twin.load_dataset("mnist", "test", data_dir=tmp_path, limit=50)
        assert not isinstance(err.value, datasets.SourceUnavailable)
        msgs[name] = str(err.value)
    # one message from vaecommon: only the clause naming each framework's library differs
    head = f"mnist test not found; tried idx: no t10k-images-idx3-ubyte[.gz] in {tmp_path}, "
    tail = (" Put the IDX files in one of those folders or pass --data-dir, or train on the "
            "5,000 digits that ship with the install: --dataset mnist5k")
    for name, lib in (("jax", "tfds 'mnist'"), ("torch", "torchvision MNIST")):
        assert msgs[name].startswith(head) and msgs[name].endswith(tail), msgs[name]
        assert f"; library: {lib} in " in msgs[name] and "\n" not in msgs[name]


@needs_debian_fashion
def test_real_debian_fashion_mnist(monkeypatch):
    monkeypatch.setattr(datasets, "DEFAULT_DATA_DIRS", ("/usr/share/datasets",))
    assert_twins_equal(jdata.load_dataset("fashion_mnist", "test", binarization="static"),
                       tdata.load_dataset("fashion_mnist", "test", binarization="static"))


def test_image_folder_rgb(tmp_path):
    root = make_image_folder(tmp_path / "faces", sizes=[(30, 20), (20, 30), (25, 25)] * 2)
    for split in ("train", "test"):
        kw = dict(data_dir=root, image_size=16)
        j = jdata.load_dataset("image_folder", split, **kw)
        t = tdata.load_dataset("image_folder", split, **kw)
        assert j.images.shape[1:] == (16, 16, 3) and t.images.shape[1:] == (3, 16, 16)
        assert_twins_equal(j, t)
    # C = 3: flat rows differ in order, (H, W, C) vs (C, H, W)
    jf = np.asarray(jdata.load_dataset("image_folder", "train", flatten=True, **kw).images)
    tf = tdata.load_dataset("image_folder", "train", flatten=True, **kw).images.numpy()
    np.testing.assert_array_equal(jf.reshape(-1, 16, 16, 3),
                                  tf.reshape(-1, 3, 16, 16).transpose(0, 2, 3, 1))


@pytest.mark.parametrize("split", ["train", "test"])
def test_generated_shapes(split):
    kw = dict(limit=200)
    assert_twins_equal(jdata.load_dataset("shapes_small", split, **kw),
                       tdata.load_dataset("shapes_small", split, **kw))
    assert_twins_equal(jdata.load_dataset("shapes", split, flatten=True, **kw),
                       tdata.load_dataset("shapes", split, flatten=True, **kw))
    assert jdata.load_factors is tdata.load_factors  # NumPy factors, shared from vaecommon


def test_libraries_agree_on_the_same_digits(tmp_path, monkeypatch):
    # tfds (mock_data serving the fixture, "online" so its no-op download runs) and torchvision
    # (the same fixture as real files in <root>/MNIST/raw) give the same arrays
    make_idx_dir(tmp_path / "MNIST" / "raw", gz=False)

    def fixture_source(builder, split, **kwargs):
        images, labels = fixture_arrays(split)
        return [{"image": im[..., None], "label": np.int64(y)} for im, y in zip(images, labels)]

    monkeypatch.setattr(datasets, "can_reach", lambda url, timeout=3.0: True)
    for split in ("train", "test"):
        t = tdata.load_dataset("mnist", split, source="library", data_dir=tmp_path,
                               binarization="static")
        with tfds.testing.mock_data(as_data_source_fn=fixture_source):
            j = jdata.load_dataset("mnist", split, source="library", data_dir=tmp_path,
                                   binarization="static")
        assert_twins_equal(j, t, same_info=False)
        assert (j.info.note, t.info.note) == ("tfds mnist 3.0.1", "torchvision MNIST")


@pytest.mark.parametrize("kind", ["range_255", "nan", "uint8", "nchw", "flat"])
def test_restore_api_refuses_bad_images_with_the_same_message(kind):
    """`evaluate_run` of both twins raises the same one-line DataError for the same bad images
    (the check runs before the restored model is touched, so a bare Restored is enough)."""
    x = np.random.default_rng(0).uniform(size=(4, 28, 28, 1)).astype(np.float32)
    x = {"range_255": np.round(x * 255), "nan": np.where(x > 0.999, np.nan, x),
         "uint8": (x * 255).astype(np.uint8), "nchw": x.transpose(0, 3, 1, 2),
         "flat": x.reshape(4, -1)}[kind]
    data = datasets.Dataset(x, np.zeros(4, np.int64), datasets.DataInfo("mnist", "idx", "-", "test", 4))
    cfg = resolve(TrainConfig(model="pytorch_examples"))
    messages = []
    for twin in (jrestore, trestore):
        bare = twin.Restored(None, cfg, get_spec(cfg.model), 0, 0, {}, None, None)
        with pytest.raises(datasets.DataError) as e:
            twin.evaluate_run(bare, data)
        messages.append(str(e.value))
    assert messages[0] == messages[1] and messages[0].startswith("evaluate_run: data.images: ")
    assert "\n" not in messages[0]
