"""vaecommon.records: random-access sources, array_record conversion and the epoch order, each
checked against the resident readers (`load_dataset_arrays`) and `epoch_batches`."""

from __future__ import annotations

import json

import numpy as np
import pytest

from vaecommon import datasets, records
from vaecommon.schedule import epoch_batches


@pytest.fixture(scope="module")
def folder(tmp_path_factory):
    """26 distinct 12x12 RGB PNGs (lossless) in 2 classes of 13, held-out split (every 5th image
    of a class is test): 22 train / 4 test."""
    return records.synthetic_image_folder(tmp_path_factory.mktemp("imgs"), 26, size=12, fmt="png")


def _uint8(ds):
    return np.rint(ds.images * 255).astype(np.uint8)


@pytest.mark.parametrize("image_size,limit", [(None, None), (8, 7)])
def test_image_folder_source_is_the_resident_split(folder, image_size, limit):
    for split in ("train", "test"):
        ds = datasets.load_dataset_arrays("image_folder", split, data_dir=folder,
                                          image_size=image_size, limit=limit)
        src = records.ImageFolderSource(folder, split, image_size, limit)
        assert len(src) == len(ds.labels) and src.info == ds.info
        got = np.stack([src[i][0] for i in range(len(src))])
        np.testing.assert_array_equal(got, _uint8(ds))
        np.testing.assert_array_equal([src[i][1] for i in range(len(src))], ds.labels)
        # the float conversion of the streamed path is the resident one, bit for bit
        np.testing.assert_array_equal(got.astype(np.float32) / 255, ds.images)


def test_array_record_round_trip_of_an_image_folder(folder, tmp_path):
    meta = records.write_array_record("image_folder", tmp_path / "ar", data_dir=folder)
    assert meta["image_shape"] == [12, 12, 3]
    assert {s: m["n"] for s, m in meta["splits"].items()} == {"train": 22, "test": 4}
    assert json.loads((tmp_path / "ar" / "dataset.json").read_text()) == meta
    for split in ("train", "test"):
        want = datasets.load_dataset_arrays("image_folder", split, data_dir=folder)
        got = datasets.load_dataset_arrays("image_folder", split, source="array_record",
                                           data_dir=tmp_path / "ar")
        np.testing.assert_array_equal(got.images, want.images)  # resident reader: bit-identical
        np.testing.assert_array_equal(got.labels, want.labels)
        assert got.info.source == "array_record" and want.info.path in got.info.note
        src = records.RecordSource(tmp_path / "ar", "image_folder", split, image_size=8, limit=4)
        small = datasets.load_dataset_arrays("image_folder", split, data_dir=folder,
                                             image_size=8, limit=4)
        np.testing.assert_array_equal(np.stack([src[i][0] for i in range(4)]), _uint8(small))


def test_array_record_of_a_resident_dataset(tmp_path):
    records.write_array_record("mnist5k", tmp_path / "m", limit=50, splits=("train",))
    want = datasets.load_dataset_arrays("mnist5k", "train", limit=50, binarization="static")
    got = datasets.load_dataset_arrays("mnist5k", "train", source="array_record",
                                       data_dir=tmp_path / "m", binarization="static")
    np.testing.assert_array_equal(got.images, want.images)
    np.testing.assert_array_equal(got.labels, want.labels)


@pytest.mark.parametrize("call,words", [
    (lambda ar: datasets.load_dataset_arrays("mnist", "train", source="array_record",
                                             data_dir=ar), ["holds dataset 'image_folder'",
                                                            "not 'mnist'"]),
    (lambda ar: datasets.load_dataset_arrays("image_folder", "test", source="array_record",
                                             data_dir=ar), ["has no 'test' split"]),
    (lambda ar: datasets.load_dataset_arrays("image_folder", "train", source="array_record"),
     ["source 'array_record' needs data_dir"]),
    (lambda ar: records.write_array_record("image_folder", ar, data_dir=ar),
     ["already holds a converted dataset"]),
    (lambda ar: records.open_source("mnist5k", "train"), ["cannot be streamed",
                                                          "jaxvae-to-records"]),
])
def test_errors_name_the_problem(folder, tmp_path, call, words):
    ar = tmp_path / "ar"
    records.write_array_record("image_folder", ar, data_dir=folder, splits=("train",))
    with pytest.raises(datasets.DataError) as e:
        call(ar)
    assert all(w in str(e.value) for w in words), str(e.value)


def test_truncated_array_record_is_refused(folder, tmp_path):
    ar = tmp_path / "ar"
    records.write_array_record("image_folder", ar, data_dir=folder, splits=("train",))
    meta = json.loads((ar / "dataset.json").read_text())
    meta["splits"]["train"]["n"] = 23
    (ar / "dataset.json").write_text(json.dumps(meta))
    with pytest.raises(datasets.DataError, match="holds 22 records, dataset.json says 23"):
        records.RecordSource(ar, "image_folder", "train")


def test_epoch_order_is_epoch_batches_and_restarts_anywhere(folder):
    src = records.ImageFolderSource(folder, "train")  # 22 examples, batch 3: 7 steps/epoch
    images = np.stack([src[i][0] for i in range(len(src))])
    order = records.EpochOrderSource(src, seed=7, batch_size=3, epochs=3)
    assert len(order) == 21
    for k in range(21):
        epoch, s = divmod(k, 7)
        want = epoch_batches(7, epoch, 22, 3)[s]
        np.testing.assert_array_equal(order.indices(k), want)
        x, y = order[k]
        np.testing.assert_array_equal(x, images[want])
        np.testing.assert_array_equal(y, src.labels[want])
    later = records.EpochOrderSource(src, seed=7, batch_size=3, epochs=3, start_epoch=1,
                                     start_step=4)  # a resume mid-epoch 1
    assert len(later) == 10
    for k in range(10):
        np.testing.assert_array_equal(later.indices(k), order.indices(11 + k))
    with pytest.raises(ValueError, match="start_step 7 is outside 0..6"):
        records.EpochOrderSource(src, seed=7, batch_size=3, epochs=3, start_step=7)
