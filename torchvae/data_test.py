"""Tests of torchvae.data: tensors in NCHW, int64 labels, the torchvision source (offline: real
IDX files in torchvision's <root>/MNIST/raw layout), agreement with torchvision's own MNIST and
ImageFolder pipelines, dynamic binarization from a generator."""

from __future__ import annotations

import gzip
import subprocess
import sys

import numpy as np
import pytest
import torch
import torchvision
import torchvision.transforms as T
from PIL import Image

from torchvae import data
from vaecommon import datasets, shapes
from vaecommon.datasets_test import (DEBIAN_FASHION, fixture_arrays, make_idx_dir,
                                     make_image_folder, needs_debian_fashion)


@pytest.fixture(autouse=True)
def offline(monkeypatch):
    """Tests never touch the network: every download probe answers "unreachable"."""
    probes = []
    monkeypatch.setattr(datasets, "can_reach", lambda url, timeout=3.0: probes.append(url) or False)
    return probes


@pytest.fixture
def no_defaults(monkeypatch, tmp_path):
    monkeypatch.setattr(datasets, "DEFAULT_DATA_DIRS", (str(tmp_path / "nowhere"),))


def test_idx_source_gives_nchw_tensors(tmp_path, no_defaults):
    make_idx_dir(tmp_path)
    ds = data.load_dataset("mnist", "train", data_dir=tmp_path)
    images, labels = fixture_arrays()
    assert isinstance(ds.images, torch.Tensor) and ds.images.shape == (12, 1, 28, 28)
    assert ds.images.dtype == torch.float32 and ds.labels.dtype == torch.int64
    np.testing.assert_array_equal(ds.images[:, 0].numpy(), images / np.float32(255))
    np.testing.assert_array_equal(ds.labels.numpy(), labels)
    flat = data.load_dataset("mnist", "train", data_dir=tmp_path, flatten=True, limit=4)
    assert flat.images.shape == (4, 784)
    assert torch.equal(flat.images, ds.images[:4].reshape(4, -1))


@needs_debian_fashion
def test_real_debian_fashion_mnist_matches_torchvision(tmp_path):
    ds = data.load_dataset("fashion_mnist", "test")
    assert ds.info.path == str(DEBIAN_FASHION / "t10k-images-idx3-ubyte.gz")
    assert ds.images.shape == (10000, 1, 28, 28) and ds.labels.dtype == torch.int64
    np.testing.assert_array_equal(np.bincount(ds.labels.numpy()), [1000] * 10)
    # torchvision's own reader on the same bytes, with the notebooks' ToTensor scaling
    raw = tmp_path / "FashionMNIST" / "raw"
    raw.mkdir(parents=True)
    for f in DEBIAN_FASHION.glob("*.gz"):
        (raw / f.stem).write_bytes(gzip.decompress(f.read_bytes()))
    tv = torchvision.datasets.FashionMNIST(tmp_path, train=False, download=False)
    assert torch.equal(ds.images, tv.data[:, None].float().div(255))
    assert torch.equal(ds.labels, tv.targets)


# ------------------------------------------------------------------------- torchvision

@pytest.mark.parametrize("name, cls", [("mnist", "MNIST"), ("fashion_mnist", "FashionMNIST")])
def test_torchvision_source_reads_raw_layout(tmp_path, name, cls):
    raw = make_idx_dir(tmp_path / cls / "raw", gz=False)  # torchvision needs all four, uncompressed
    for split in data.SPLITS:
        ds = data.load_dataset(name, split, source="library", data_dir=tmp_path, limit=10)
        images, labels = fixture_arrays(split)
        n = min(10, len(labels))
        assert ds.info == data.DataInfo(name, "library", str(raw), split, n, f"torchvision {cls}")
        np.testing.assert_array_equal(ds.images[:, 0].numpy(), images[:n] / np.float32(255))
        np.testing.assert_array_equal(ds.labels.numpy(), labels[:n])


def test_torchvision_offline_not_found(tmp_path, no_defaults, offline):
    with pytest.raises(datasets.SourceUnavailable) as err:
        data.load_dataset("mnist", "train", source="library", data_dir=tmp_path)
    assert str(err.value) == (f"torchvision MNIST in {tmp_path}/MNIST/raw not found and "
                              "ossci-datasets.s3.amazonaws.com is unreachable (offline)")
    assert offline == ["https://ossci-datasets.s3.amazonaws.com/mnist/"]
    with pytest.raises(data.DataError, match="library: torchvision MNIST in .* not found .*--dataset mnist5k$"):
        data.load_dataset("mnist", "test", data_dir=tmp_path)
    with pytest.raises(data.DataError, match="library: torchvision FashionMNIST in .* unreachable"):
        data.load_dataset("fashion_mnist", "test", data_dir=tmp_path)


def test_torchvision_bad_files_are_errors_not_fallbacks(tmp_path):
    raw = make_idx_dir(tmp_path / "MNIST" / "raw", gz=False)
    (raw / "train-images-idx3-ubyte").write_bytes(b"\0\0\x08\x03garbage")
    with pytest.raises(data.DataError) as err:
        data.load_dataset("mnist", "train", source="library", data_dir=tmp_path)
    assert not isinstance(err.value, datasets.SourceUnavailable)
    assert str(err.value).startswith(f"torchvision MNIST in {raw}: ")


# ------------------------------------------------------------------------- image folders

def test_image_folder_matches_torchvision_imagefolder(tmp_path):
    # the book's pipeline: ImageFolder + Resize + ToTensor (CenterCrop squares non-square images)
    sizes = [(40, 24), (24, 40), (33, 33), (16, 16)]
    root = make_image_folder(tmp_path / "glasses" / "train", sizes=sizes)
    make_image_folder(tmp_path / "glasses" / "test", sizes=[(20, 20)])
    pattern = np.random.default_rng(0).integers(0, 256, (37, 29, 3), dtype=np.uint8)
    Image.fromarray(pattern).save(root / "dog" / "noise.png")
    Image.fromarray(pattern[..., 0]).save(root / "cat" / "noise_grey.png")
    ds = data.load_dataset("image_folder", "train", data_dir=tmp_path / "glasses", image_size=12)
    tv = torchvision.datasets.ImageFolder(
        root, transform=T.Compose([T.Resize(12), T.CenterCrop(12), T.ToTensor()]))
    want = torch.stack([x for x, _ in tv])
    assert ds.images.shape == (10, 3, 12, 12) == want.shape
    assert torch.equal(ds.images, want)
    assert ds.labels.tolist() == tv.targets


# ------------------------------------------------------------------------------ binarize

def test_generated_shapes_nchw_with_factors():
    ds = data.load_dataset("shapes_small", "test", limit=30)
    assert ds.images.shape == (30, 1, 64, 64) and ds.images.dtype == torch.float32  # NCHW
    assert ds.labels.dtype == torch.int64 and ds.info.source == "generated"
    factors = data.load_factors("shapes_small", "test", limit=30)  # NumPy (N, 5), shared
    assert factors.shape == (30, 5) and factors.dtype == np.int64
    np.testing.assert_array_equal(ds.labels.numpy(), factors[:, 0])
    images = shapes.Shapes("shapes_small").images(factors)
    np.testing.assert_array_equal(ds.images[:, 0].numpy(), images)
    flat = data.load_dataset("shapes_small", "test", limit=30, flatten=True)
    assert torch.equal(flat.images, ds.images.reshape(30, -1))


def test_binarize_dynamic():
    p = torch.full((200, 1, 28, 28), 0.3)
    b = data.binarize(p, torch.Generator().manual_seed(0))
    assert b.shape == p.shape and b.dtype == torch.float32
    assert set(b.unique().tolist()) == {0.0, 1.0}
    assert abs(b.mean().item() - 0.3) < 4 * np.sqrt(0.21 / p.numel())  # 4 standard errors
    assert torch.equal(data.binarize(p, torch.Generator().manual_seed(0)), b)
    assert not torch.equal(data.binarize(p, torch.Generator().manual_seed(1)), b)
    edges = torch.tensor([0.0, 1.0] * 50)
    assert torch.equal(data.binarize(edges, torch.Generator().manual_seed(2)), edges)


def test_import_does_not_pull_jax():
    code = ("import sys, torchvae.data; "
            "bad = [m for m in ('jax', 'jaxvae', 'tensorflow_datasets') if m in sys.modules]; "
            "assert not bad, bad")
    subprocess.run([sys.executable, "-c", code], check=True)
