"""Tests of jaxvae.data: jnp arrays in NHWC, int32 labels, the tfds source (offline: real tfds
with nothing prepared, and `tfds.testing.mock_data`), dynamic binarization from a key."""

from __future__ import annotations

import subprocess
import sys

import jax
import jax.numpy as jnp
import numpy as np
import pytest
import tensorflow_datasets as tfds

from jaxvae import data
from vaecommon import datasets, shapes
from vaecommon.datasets_test import (DEBIAN_FASHION, fixture_arrays, make_idx_dir,
                                     needs_debian_fashion)


@pytest.fixture(autouse=True)
def offline(monkeypatch):
    """Tests never touch the network: every download probe answers "unreachable"."""
    probes = []
    monkeypatch.setattr(datasets, "can_reach", lambda url, timeout=3.0: probes.append(url) or False)
    return probes


@pytest.fixture
def no_defaults(monkeypatch, tmp_path):
    monkeypatch.setattr(datasets, "DEFAULT_DATA_DIRS", (str(tmp_path / "nowhere"),))


def fixture_source(builder, split, **kwargs):
    """`as_data_source` stand-in serving `fixture_arrays` the way tfds decodes MNIST examples."""
    images, labels = fixture_arrays(split)
    return [{"image": im[..., None], "label": np.int64(lab)} for im, lab in zip(images, labels)]


def test_idx_source_gives_nhwc_jax_arrays(tmp_path, no_defaults):
    make_idx_dir(tmp_path)
    ds = data.load_dataset("mnist", "train", data_dir=tmp_path)
    images, labels = fixture_arrays()
    assert isinstance(ds.images, jax.Array) and ds.images.shape == (12, 28, 28, 1)
    assert ds.images.dtype == jnp.float32 and ds.labels.dtype == jnp.int32
    np.testing.assert_array_equal(np.asarray(ds.images)[..., 0], images / np.float32(255))
    np.testing.assert_array_equal(ds.labels, labels)
    assert ds.info.source == "idx" and ds.info.n == 12
    flat = data.load_dataset("mnist", "train", data_dir=tmp_path, flatten=True, limit=4)
    assert flat.images.shape == (4, 784)
    np.testing.assert_array_equal(flat.images, ds.images[:4].reshape(4, -1))


@needs_debian_fashion
def test_real_debian_fashion_mnist_test_split():
    ds = data.load_dataset("fashion_mnist", "test")
    assert ds.info.path == str(DEBIAN_FASHION / "t10k-images-idx3-ubyte.gz")
    assert ds.images.shape == (10000, 28, 28, 1) and ds.labels.dtype == jnp.int32
    assert float(ds.images.min()) == 0.0 and float(ds.images.max()) == 1.0
    np.testing.assert_array_equal(np.bincount(np.asarray(ds.labels)), [1000] * 10)


def test_mnist5k_static_binarized():
    ds = data.load_dataset("mnist5k", "test", binarization="static", flatten=True)
    assert ds.images.shape == (1000, 784) and ds.info.source == "embedded"
    assert set(np.unique(np.asarray(ds.images))) == {0.0, 1.0}
    np.testing.assert_array_equal(np.bincount(np.asarray(ds.labels)), [100] * 10)


# --------------------------------------------------------------------------------- tfds

def test_tfds_offline_not_prepared(tmp_path, no_defaults, offline):
    # real tfds, nothing prepared in tmp_path, no network: a clear error, no download attempt
    with pytest.raises(datasets.SourceUnavailable) as err:
        data.load_dataset("mnist", "train", source="library", data_dir=tmp_path)
    assert str(err.value) == (f"tfds 'mnist' in {tmp_path}/mnist/3.0.1 is not prepared and "
                              "storage.googleapis.com is unreachable (offline)")
    assert offline == ["https://storage.googleapis.com/cvdf-datasets/mnist/"]
    # auto then says, in one line, what it tried (no substitute data)
    with pytest.raises(data.DataError, match="library: tfds 'mnist' in .* is not prepared .*--dataset mnist5k$"):
        data.load_dataset("mnist", "train", data_dir=tmp_path)
    with pytest.raises(data.DataError, match="library: tfds 'fashion_mnist' in .* unreachable"):
        data.load_dataset("fashion_mnist", "test", data_dir=tmp_path)


def test_tfds_download_path_with_mock_data(tmp_path, no_defaults, monkeypatch):
    # "online": mock_data turns download_and_prepare into a no-op and serves our examples
    monkeypatch.setattr(datasets, "can_reach", lambda url, timeout=3.0: True)
    with tfds.testing.mock_data(as_data_source_fn=fixture_source):
        for split in data.SPLITS:
            ds = data.load_dataset("mnist", split, data_dir=tmp_path)  # no IDX: auto -> tfds
            images, labels = fixture_arrays(split)
            assert ds.info.source == "library" and ds.info.note == "tfds mnist 3.0.1"
            assert ds.images.shape == (len(labels), 28, 28, 1) and ds.labels.dtype == jnp.int32
            np.testing.assert_array_equal(np.asarray(ds.images)[..., 0], images / np.float32(255))
            np.testing.assert_array_equal(ds.labels, labels)


def test_tfds_prepared_locally_needs_no_network(tmp_path, no_defaults, monkeypatch):
    monkeypatch.setattr(tfds.core.DatasetBuilder, "is_prepared", lambda self: True)
    monkeypatch.setattr(datasets, "can_reach", lambda *a, **k: pytest.fail("probed the network"))
    with tfds.testing.mock_data(num_examples=7):  # tfds's own random examples
        ds = data.load_dataset("fashion_mnist", "train", source="library", limit=5)
    assert ds.images.shape == (5, 28, 28, 1) and ds.info.n == 5
    assert 0.0 <= float(ds.images.min()) and float(ds.images.max()) <= 1.0
    assert set(np.asarray(ds.labels)) <= set(range(10))


def test_tfds_output_is_validated(tmp_path, no_defaults, monkeypatch):
    monkeypatch.setattr(datasets, "can_reach", lambda url, timeout=3.0: True)

    def bad(builder, split, **kwargs):  # colour images where tfds MNIST has one channel
        return [{"image": np.zeros((28, 28, 3), np.uint8), "label": 0}]

    with tfds.testing.mock_data(as_data_source_fn=bad):
        with pytest.raises(data.DataError, match=r"gave mnist images uint8 \(1, 28, 28, 3\)"):
            data.load_dataset("mnist", "train", source="library", data_dir=tmp_path)


# ------------------------------------------------------------------------------ binarize

def test_generated_shapes_nhwc_with_factors():
    ds = data.load_dataset("shapes_small", "test", limit=30)
    assert ds.images.shape == (30, 64, 64, 1) and ds.images.dtype == jnp.float32  # NHWC
    assert ds.labels.dtype == jnp.int32 and ds.info.source == "generated"
    factors = data.load_factors("shapes_small", "test", limit=30)  # NumPy (N, 5), shared
    assert factors.shape == (30, 5) and factors.dtype == np.int64
    np.testing.assert_array_equal(ds.labels, factors[:, 0])
    images = shapes.Shapes("shapes_small").images(factors)
    np.testing.assert_array_equal(np.asarray(ds.images)[..., 0], images)
    flat = data.load_dataset("shapes_small", "test", limit=30, flatten=True)
    np.testing.assert_array_equal(flat.images, ds.images.reshape(30, -1))


def test_binarize_dynamic():
    p = jnp.full((200, 28, 28, 1), 0.3, jnp.float32)
    b = data.binarize(p, jax.random.key(0))
    assert b.shape == p.shape and b.dtype == jnp.float32
    assert set(np.unique(np.asarray(b))) == {0.0, 1.0}
    assert abs(float(b.mean()) - 0.3) < 4 * np.sqrt(0.21 / p.size)  # 4 standard errors
    np.testing.assert_array_equal(data.binarize(p, jax.random.key(0)), b)  # same key, same draw
    assert not np.array_equal(data.binarize(p, jax.random.key(1)), b)
    np.testing.assert_array_equal(jax.jit(data.binarize)(p, jax.random.key(0)), b)
    edges = jnp.array([0.0, 1.0] * 50)
    np.testing.assert_array_equal(data.binarize(edges, jax.random.key(2)), edges)


def test_import_does_not_pull_torch_or_tfds():
    code = ("import sys, jaxvae.data; "
            "bad = [m for m in ('torch', 'torchvae', 'tensorflow_datasets') if m in sys.modules]; "
            "assert not bad, bad")
    subprocess.run([sys.executable, "-c", code], check=True)
