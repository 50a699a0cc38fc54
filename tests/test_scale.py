"""utils.scale: sharded TFRecords, streaming pipelines, memory measurement and data parallelism."""

from __future__ import annotations

import numpy as np
import pytest
from conftest import ORIGINAL_DATA_DIR

from utils import scale

tf = pytest.importorskip("tensorflow")


def _images(n, seed=0):
    rng = np.random.default_rng(seed)
    return rng.integers(0, 256, size=(n, 28, 28), dtype=np.uint8), rng.integers(0, 2, size=n)


def test_sharded_round_trip_preserves_images_and_labels(tmp_path):
    x, y = _images(103)
    sh = scale.write_shards(x, y, tmp_path, n_shards=4)
    assert len(sh.paths) == 4 and sh.n_examples == 103 and sh.image_shape == (28, 28, 1)
    assert sh.n_bytes >= x.nbytes
    xr, yr = scale.read_all(sh.pattern, sh.image_shape)
    # records are dealt round-robin: shard k holds cases k, k + 4, ...
    order = np.concatenate([np.arange(k, 103, 4) for k in range(4)])
    np.testing.assert_array_equal(xr[..., 0], x[order])
    np.testing.assert_array_equal(yr, y[order])


@pytest.mark.parametrize("mode", ["naive", "tuned"])
def test_streaming_pipelines_yield_every_image_once(tmp_path, mode):
    x, y = _images(50, seed=1)
    sh = scale.write_shards(x, y, tmp_path, n_shards=3)
    ds = scale.make_dataset(sh.pattern, sh.image_shape, batch_size=8, mode=mode)
    xs, ys = zip(*[(a.numpy(), b.numpy()) for a, b in ds])
    got = np.concatenate(xs)
    assert got.shape == (50, 28, 28, 1) and got.dtype == np.float32 and got.max() <= 1.0

    def key(arr):
        return sorted(map(bytes, np.round(arr.reshape(len(arr), -1) * 255).astype(np.uint8)))

    assert key(got) == key(x.astype(np.float32) / 255)
    assert sorted(np.concatenate(ys)) == sorted(y)
    with pytest.raises(ValueError, match="mode"):
        scale.make_dataset(sh.pattern, sh.image_shape, mode="fast")
    with pytest.raises(FileNotFoundError, match="write_shards"):
        scale.make_dataset(str(tmp_path / "none-*.tfrecord"), sh.image_shape)


def test_the_tuned_pipeline_shuffles_the_order_of_the_shards_every_epoch(tmp_path):
    x, y = _images(64, seed=2)
    sh = scale.write_shards(x, y, tmp_path, n_shards=8)
    x_shard = np.arange(64) % 8  # the shard each image was dealt into

    def first_shards(ds, epochs):
        out = []
        for _ in range(epochs):  # a batch of 1 and a buffer of 1: the stream in shard order
            imgs = np.concatenate([a.numpy() for a, _ in ds])
            idx = [int(np.flatnonzero((x == np.round(im[..., 0] * 255)).all(axis=(1, 2)))[0]) for im in imgs[:8]]
            out.append(tuple(x_shard[idx]))
        return out

    plain = scale.make_dataset(sh.pattern, sh.image_shape, batch_size=1, mode="tuned")
    shuffled = scale.make_dataset(sh.pattern, sh.image_shape, batch_size=1, mode="tuned", shuffle_buffer=1, seed=3)
    assert first_shards(plain, 2) == [(0, 1, 2, 3, 0, 1, 2, 3)] * 2  # interleave of 4 shards, fixed order
    e1, e2 = first_shards(shuffled, 2)
    assert e1 != e2 and (e1[:4] != (0, 1, 2, 3) or e2[:4] != (0, 1, 2, 3))
    again = scale.make_dataset(sh.pattern, sh.image_shape, batch_size=1, mode="tuned", shuffle_buffer=1, seed=3)
    assert first_shards(again, 2) == [e1, e2]  # seeded: the same run twice gives the same order


def test_augmented_copies_grow_the_dataset_and_keep_the_original():
    x, _ = _images(10, seed=2)
    big = scale.augment_copies(x, 3, seed=0)
    assert big.shape == (30, 28, 28) and big.dtype == np.uint8
    np.testing.assert_array_equal(big[:10], x)
    assert not np.array_equal(big[10:20], x)
    with pytest.raises(ValueError, match="copies"):
        scale.augment_copies(x, 0)


def test_streaming_peak_memory_does_not_grow_with_dataset_size(tmp_path):
    x, y = _images(2000, seed=3)
    small = scale.write_shards(x, y, tmp_path / "small", n_shards=4, copies=2)  # 4,000 images
    large = scale.write_shards(x, y, tmp_path / "large", n_shards=4, copies=40)  # 80,000 images, 63 MB
    m_small = scale.measure_streaming_memory(small.pattern, small.image_shape, load_all=False)
    m_large = scale.measure_streaming_memory(large.pattern, large.image_shape, load_all=True)
    assert m_small["n_images"] == 4000 and m_large["n_images"] == 80000
    grow_stream = m_large["stream_peak_rss"] - m_small["stream_peak_rss"]
    in_memory = m_large["in_memory_array_bytes"]  # 80,000 float32 images = 251 MB
    assert in_memory == 80000 * 28 * 28 * 4
    assert grow_stream < 0.25 * in_memory, (grow_stream, in_memory)
    assert m_large["in_memory_peak_rss"] - m_large["baseline_rss"] > 0.8 * in_memory


def test_throughput_helpers_count_images():
    batches = [(np.zeros((4, 2)), None)] * 12
    assert scale.images_per_second(batches, n_batches=10, warmup=2) > 0
    with pytest.raises(StopIteration):
        scale.images_per_second(batches, n_batches=20, warmup=2)


def test_a_tf_data_pipeline_feeds_the_model_on_the_active_backend(tmp_path):
    """The JAX and PyTorch passes of make test run this too: tf.data batches must reach their models."""
    import keras

    x, y = _images(64)
    sh = scale.write_shards(x, y, tmp_path, n_shards=2)
    ds = scale.make_dataset(sh.pattern, sh.image_shape, batch_size=16, mode="tuned", repeat=True, seed=0)
    inp = keras.Input(sh.image_shape)
    model = keras.Model(inp, keras.layers.Dense(2)(keras.layers.Flatten()(inp)))
    model.compile("sgd", keras.losses.SparseCategoricalCrossentropy(from_logits=True))
    before = [w.copy() for w in model.get_weights()]
    assert scale.fit_images_per_second(model, ds, steps=3, warmup=1) > 0
    assert any(not np.allclose(a, b) for a, b in zip(before, model.get_weights()))  # it trained


@pytest.mark.skipif(not ORIGINAL_DATA_DIR, reason="needs the data mirror (MEDIMG_DATA_DIR)")
def test_mirrored_strategy_matches_single_device(monkeypatch):
    monkeypatch.setenv("MEDIMG_DATA_DIR", ORIGINAL_DATA_DIR)
    sync, per_replica = scale.mirrored_vs_single(steps=3, global_batch=32, width=4, variants=(True, False))
    assert sync["replicas"] == 2 and len(sync["devices"]) == 2
    assert sync["init_diff"] == 0.0 and sync["max_weight_change"] > 1e-3
    assert sync["max_abs_weight_diff"] < 1e-4
    assert abs(sync["loss_single"] - sync["loss_mirrored"]) < 1e-5
    assert per_replica["max_abs_weight_diff"] > 10 * sync["max_abs_weight_diff"]
    with pytest.raises(ValueError, match="n_devices"):
        scale.mirrored_vs_single(n_devices=1)


@pytest.mark.slow
@pytest.mark.skipif(not ORIGINAL_DATA_DIR, reason="needs the data mirror (MEDIMG_DATA_DIR)")
def test_two_worker_processes_match_one(monkeypatch):
    monkeypatch.setenv("MEDIMG_DATA_DIR", ORIGINAL_DATA_DIR)
    out = scale.multiworker_vs_single(n_workers=2, n_images=128, global_batch=32, epochs=2, width=4)
    assert [w["replicas"] for w in out["workers"]] == [2, 2]
    assert len(out["single"]["loss"]) == 2 and out["single"]["loss"][1] < out["single"]["loss"][0]
    assert out["max_abs_loss_diff"] < 1e-5 and out["max_abs_weight_diff"] < 1e-4
    assert out["workers_agree"] == 0.0  # all-reduce leaves every worker with the same weights
    with pytest.raises(ValueError, match="multiple of global_batch"):
        scale.multiworker_vs_single(n_images=100, global_batch=32)
    with pytest.raises(ValueError, match="n_workers"):
        scale.multiworker_vs_single(n_workers=1)


@pytest.mark.slow
@pytest.mark.skipif(not ORIGINAL_DATA_DIR, reason="needs the data mirror (MEDIMG_DATA_DIR)")
def test_jax_data_parallel_matches_one_device(monkeypatch):
    pytest.importorskip("jax")
    monkeypatch.setenv("MEDIMG_DATA_DIR", ORIGINAL_DATA_DIR)
    out = scale.jax_data_parallel_vs_single(n_devices=2, n_images=128, global_batch=32, epochs=2, width=4)
    assert len(out["devices"]) == 2
    assert out["max_abs_loss_diff"] < 1e-5 and out["max_abs_weight_diff"] < 1e-4
    with pytest.raises(ValueError, match="n_devices"):
        scale.jax_data_parallel_vs_single(n_devices=1)


def test_augmentation_shifts_each_image_by_at_most_two_pixels_in_both_modes(tmp_path):
    x = np.zeros((40, 28, 28), np.uint8)
    x[:, 13, 13] = 255  # one bright pixel per image
    sh = scale.write_shards(x, np.zeros(40, int), tmp_path, n_shards=2)
    for mode in ("naive", "tuned"):
        got = np.concatenate(
            [
                a.numpy()
                for a, _ in scale.make_dataset(
                    sh.pattern, sh.image_shape, batch_size=8, mode=mode, augment=True, seed=1
                )
            ]
        )
        pos = np.array([np.unravel_index(g[..., 0].argmax(), (28, 28)) for g in got])
        assert np.all(got.reshape(40, -1).sum(1) == 1.0)  # the pixel is moved, never lost or duplicated
        assert np.all(np.abs(pos - 13) <= 2) and len({tuple(p) for p in pos}) > 3  # shifts differ per image


def test_throughput_leaves_out_the_first_epoch():
    assert scale._throughput(100, [10.0, 1.0, 1.0]) == 100.0
    assert scale._throughput(100, [4.0]) == 25.0
