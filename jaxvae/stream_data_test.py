"""The streamed input (jaxvae.stream_data) against the resident path: the same batches in the same
order (also after a mid-epoch restart, from (epoch, step) and from Grain's iterator state), and
the same training numbers."""

from __future__ import annotations

import jax
import numpy as np
import pytest

from jaxvae import data as data_lib
from jaxvae import stream_data, train
from vaecommon import records, runs
from vaecommon.config import TrainConfig
from vaecommon.schedule import epoch_batches


@pytest.fixture(scope="module")
def folder(tmp_path_factory):
    """26 distinct 16x16 RGB PNGs, 2 classes; held-out split: 22 train / 4 test."""
    return records.synthetic_image_folder(tmp_path_factory.mktemp("imgs"), 26, size=16, fmt="png")


def _collect(it, k=None):
    out = []
    for b in it:
        out.append((np.array(b["image"]), np.array(b["label"])))
        if k is not None and len(out) == k:
            break
    return out


def _resident_batches(folder, seed, batch, epochs, start=0):
    ds = data_lib.load_dataset("image_folder", "train", data_dir=folder)
    images, labels = np.asarray(ds.images), np.asarray(ds.labels)
    idx = np.concatenate([epoch_batches(seed, e, len(labels), batch) for e in range(epochs)])
    return [(images[i], labels[i]) for i in idx[start:]]


def _assert_same(got, want):
    assert len(got) == len(want)
    for (x, y), (u, v) in zip(got, want):
        assert x.dtype == np.float32 and np.array_equal(x, u)  # bit-identical float32
        assert np.array_equal(y, v)


def test_streamed_batches_are_the_resident_batches_and_resume_mid_epoch(folder):
    src = records.ImageFolderSource(folder, "train")  # 22 examples, batch 4: 5 steps per epoch
    want = _resident_batches(folder, seed=3, batch=4, epochs=3)
    order = records.EpochOrderSource(src, seed=3, batch_size=4, epochs=3)
    it = iter(stream_data.loader(order))
    first = _collect(it, 7)  # into epoch 1, step 2
    state = it.get_state()
    rest = _collect(it)
    _assert_same(first + rest, want)
    # resumed from Grain's checkpointable iterator state
    again = iter(stream_data.loader(records.EpochOrderSource(src, seed=3, batch_size=4, epochs=3)))
    again.set_state(state)
    _assert_same(_collect(again), want[7:])
    # resumed from (epoch, step) alone: the order is a pure function of (seed, epoch, step)
    restart = records.EpochOrderSource(src, seed=3, batch_size=4, epochs=3, start_epoch=1,
                                       start_step=2)
    _assert_same(_collect(iter(stream_data.loader(restart))), want[7:])


def test_worker_processes_give_the_same_batches(folder):
    src = records.ImageFolderSource(folder, "train")
    order = records.EpochOrderSource(src, seed=5, batch_size=4, epochs=2)
    got = _collect(iter(stream_data.loader(order, workers=2)))
    _assert_same(got, _resident_batches(folder, seed=5, batch=4, epochs=2))


def test_device_prefetch_chunks_in_order():
    batches = ({"image": np.full((2, 1), i, np.float32)} for i in range(6))
    feed = stream_data.DevicePrefetch(batches, chunk=3, chunks=2, prefetch=1)
    a, b = next(feed), next(feed)
    assert a.shape == (3, 2, 1) and isinstance(a, jax.Array)
    assert np.asarray(a)[:, 0, 0].tolist() == [0, 1, 2] and np.asarray(b)[:, 0, 0].tolist() == [3, 4, 5]
    feed.close()
    broken = stream_data.DevicePrefetch(iter([]), chunk=1, chunks=1)
    with pytest.raises(StopIteration):  # a loader failure reaches the consumer
        next(broken)


def test_chunk_steps_divides_the_epoch_within_the_byte_limit():
    assert stream_data.chunk_steps(12, 10, limit=45) == 4
    assert stream_data.chunk_steps(7, 10, limit=45) == 1
    assert stream_data.chunk_steps(8, 10, limit=1000) == 8
    assert stream_data.chunk_steps(8, 10**9, limit=10) == 1


SMALL = TrainConfig(model="pytorch_examples", dataset="mnist5k", limit_train=256, limit_test=64,
                    batch_size=32, epochs=2, final_nll_samples=0, eval_every=0,
                    binarization="dynamic", eval_batch_size=64)


def test_choose_input(folder, monkeypatch):
    cfg = TrainConfig(model="manning_glasses_vae", model_overrides={"image_size": 16},
                      dataset="image_folder", data_dir=str(folder))
    from vaecommon.config import resolve

    cfg = resolve(cfg, framework="jax")
    assert stream_data.choose_input(cfg, "auto") is None  # 22 x 16 x 16 x 3 floats: resident
    assert stream_data.choose_input(cfg, "resident") is None
    assert len(stream_data.choose_input(cfg, "stream")) == 22
    monkeypatch.setattr(stream_data, "STREAM_ABOVE_BYTES", 22 * 16 * 16 * 3 * 4 - 1)
    assert stream_data.choose_input(cfg, "auto") is not None  # above the threshold: streamed
    assert stream_data.choose_input(resolve(SMALL, framework="jax"), "auto") is None
    for bad, words in [(dict(cfg=resolve(SMALL, framework="jax")), "dataset 'mnist5k' from source 'auto'"),
                       (dict(cfg=cfg, members=2), "a sweep"),
                       (dict(cfg=cfg, processes=2), "multi-process training"),
                       (dict(cfg=cfg.replace(validation=4)), "--validation")]:
        with pytest.raises(ValueError, match="--input stream cannot train") as e:
            stream_data.choose_input(bad["cfg"], "stream", members=bad.get("members", 1),
                                     processes=bad.get("processes", 1))
        assert words in str(e.value)
    with pytest.raises(ValueError, match="--input 'disk' is not valid"):
        stream_data.choose_input(cfg, "disk")


def _run(cfg, folder, **kw):
    res = train.train_and_evaluate(cfg, folder, progress=False, **kw)
    batches = [(r["step"], r["loss"]) for r in runs.read_metrics(folder) if r["type"] == "batch"]
    return res, batches


def test_training_streamed_equals_resident_and_resumes_exactly(tmp_path, monkeypatch):
    """mnist5k resident from its own source, against the same digits converted to array_record
    and streamed in chunks of 2 steps; then a streamed run stopped after epoch 1 and resumed."""
    records.write_array_record("mnist5k", tmp_path / "ar", limit=256)
    monkeypatch.setattr(stream_data, "CHUNK_BYTES", 2 * 32 * 784 * 4)  # 8 steps/epoch -> 4 chunks
    streamed = SMALL.replace(data_source="array_record", data_dir=str(tmp_path / "ar"))
    res_r, batches_r = _run(SMALL, tmp_path / "resident", input="resident")
    res_s, batches_s = _run(streamed, tmp_path / "streamed", input="stream", workers=0)
    assert len(batches_r) == 16 and batches_s == batches_r  # every step's loss, bit for bit
    assert res_s["loss"] == res_r["loss"]

    class Stop(Exception):
        pass

    def stop(epoch, state):
        if epoch == 1:
            raise Stop

    with pytest.raises(Stop):
        _run(streamed, tmp_path / "resumed", input="stream", workers=0, on_epoch=stop)
    res_2, batches_2 = _run(streamed, tmp_path / "resumed", input="stream", workers=0)
    assert batches_2 == batches_r and res_2["loss"] == res_r["loss"]


def test_image_folder_training_streamed_equals_resident(folder, tmp_path):
    cfg = TrainConfig(model="manning_glasses_vae", model_overrides={"image_size": 16},
                      dataset="image_folder", data_dir=str(folder), batch_size=4, epochs=1,
                      final_nll_samples=0, eval_every=0, eval_batch_size=4)
    res_r, batches_r = _run(cfg, tmp_path / "resident", input="resident")
    res_s, batches_s = _run(cfg, tmp_path / "streamed", input="stream", workers=0)
    assert len(batches_r) == 5 and batches_s == batches_r
    assert res_s["loss"] == res_r["loss"]


def test_workers_ignore_sigint_so_the_trainer_can_finish_its_epoch(folder):
    """What a Grain worker unpickles makes it ignore SIGINT (a Ctrl-C reaches the whole process
    group; the trainer stops after its epoch and needs the workers until then)."""
    import pickle
    import signal

    order = records.EpochOrderSource(records.ImageFolderSource(folder, "train"), seed=0,
                                     batch_size=4, epochs=1)
    before = signal.getsignal(signal.SIGINT)
    try:
        worker_copy = pickle.loads(pickle.dumps(stream_data._InWorkers(order)))
        assert signal.getsignal(signal.SIGINT) is signal.SIG_IGN
        assert repr(worker_copy) == repr(order)  # Grain's state check compares reprs
        np.testing.assert_array_equal(worker_copy[3][0], order[3][0])
    finally:
        signal.signal(signal.SIGINT, before)
