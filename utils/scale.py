"""Scale ("big data") helpers for chapter 6: sharded TFRecords, streaming, memory, throughput, data parallelism.

TensorFlow-specific by nature: ``tf.data`` and ``tf.distribute`` are TensorFlow
APIs, so :func:`write_shards`, :func:`make_dataset`, :func:`read_all`,
:func:`measure_streaming_memory` and :func:`mirrored_vs_single` need
TensorFlow installed (they work whatever Keras backend is active, because the
pipeline only yields NumPy-convertible batches; the data-parallel comparison
runs in a subprocess on the TensorFlow backend).

* :func:`write_shards` writes real images (optionally replicated with
  augmentation to grow the dataset) into ``n_shards`` TFRecord files of
  ``tf.train.Example`` records (raw uint8 bytes + label).
* :func:`make_dataset` streams them back: ``mode="naive"`` (what a first
  attempt looks like: sequential reads, per-record parsing, no prefetch) or
  ``mode="tuned"`` (parallel interleave over shards, parallel map, prefetch).
* :func:`read_all` reads every record into memory (for round-trip checks).
* :func:`measure_streaming_memory` runs one streaming pass (and optionally an
  in-memory load) in a fresh Python subprocess and returns its peak resident
  memory, so the measurement is not polluted by the notebook's own arrays.
* :func:`images_per_second` times an iterable of batches;
  :func:`model_images_per_second` times training steps of a Keras model.
* :func:`mirrored_vs_single` trains the same model for a few steps on one
  device and under ``tf.distribute.MirroredStrategy`` over two logical CPU
  devices (in a subprocess, because logical devices must be configured before
  TensorFlow initialises) and returns both sets of weights and losses.
* :func:`multiworker_vs_single` trains it in two worker *processes* under
  ``tf.distribute.MultiWorkerMirroredStrategy`` (``TF_CONFIG`` with 127.0.0.1
  ports, gradients all-reduced over gRPC as between machines) and in one process;
  :func:`jax_data_parallel_vs_single` does the same with
  ``keras.distribution.DataParallel`` on JAX over virtual CPU devices
  (``XLA_FLAGS=--xla_force_host_platform_device_count``).
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from . import memory

#: Feature names inside each ``tf.train.Example``.
IMAGE_KEY, LABEL_KEY = "image", "label"


# ---------------------------------------------------------------------------
# writing and reading shards
# ---------------------------------------------------------------------------


@dataclass
class Shards:
    """What :func:`write_shards` wrote: the files, number of records, bytes on disk and image shape."""

    paths: list
    n_examples: int
    n_bytes: int
    image_shape: tuple

    @property
    def pattern(self) -> str:
        """A glob pattern matching the shard files."""
        return str(Path(self.paths[0]).parent / "shard-*.tfrecord")


def augment_copies(
    images: np.ndarray, copies: int, *, seed: int = 0, max_shift: int = 2, max_gain: float = 0.1
) -> np.ndarray:
    """``copies`` versions of every image: copy 0 is the original, the others are shifted and re-scaled.

    Each extra copy is shifted by up to ``max_shift`` pixels in each direction
    (zeros enter at the border; no mirroring, which would change anatomy) and
    multiplied by a gain in ``[1 - max_gain, 1 + max_gain]``, clipped to uint8.
    The result has ``copies * len(images)`` images, ordered copy by copy.
    """
    images = np.asarray(images)
    if images.dtype != np.uint8:
        raise ValueError(f"images must be uint8, got {images.dtype}")
    if int(copies) < 1:
        raise ValueError(f"copies must be >= 1, got {copies}")
    rng = np.random.default_rng(seed)
    out = [images]
    h, w = images.shape[1:3]
    for _ in range(int(copies) - 1):
        dy, dx = rng.integers(-max_shift, max_shift + 1, size=2)
        gain = rng.uniform(1 - max_gain, 1 + max_gain)
        shifted = np.zeros_like(images)
        ys, yd = (slice(0, h - dy), slice(dy, h)) if dy >= 0 else (slice(-dy, h), slice(0, h + dy))
        xs, xd = (slice(0, w - dx), slice(dx, w)) if dx >= 0 else (slice(-dx, w), slice(0, w + dx))
        shifted[:, yd, xd] = images[:, ys, xs]
        out.append(np.clip(shifted.astype(np.float32) * gain, 0, 255).astype(np.uint8))
    return np.concatenate(out)


def write_shards(
    images: np.ndarray,
    labels: np.ndarray,
    out_dir: str | os.PathLike,
    *,
    n_shards: int = 8,
    copies: int = 1,
    seed: int = 0,
) -> Shards:
    """Write ``images`` (uint8, ``(N, H, W)`` or ``(N, H, W, C)``) and integer ``labels`` as TFRecord shards.

    With ``copies > 1`` the dataset is grown by :func:`augment_copies` (for the
    scale experiments).  Records are dealt round-robin into ``n_shards`` files
    ``shard-00000-of-000NN.tfrecord``; each record is a ``tf.train.Example``
    with the raw image bytes under ``"image"`` and the label under ``"label"``.
    Existing shard files in ``out_dir`` are removed first.
    """
    import tensorflow as tf

    images = np.asarray(images)
    labels = np.asarray(labels).reshape(-1).astype(np.int64)
    if images.dtype != np.uint8 or images.ndim not in (3, 4):
        raise ValueError(f"images must be uint8 (N, H, W[, C]), got {images.dtype} {images.shape}")
    if len(images) != len(labels):
        raise ValueError(f"{len(images)} images but {len(labels)} labels")
    if int(n_shards) < 1:
        raise ValueError(f"n_shards must be >= 1, got {n_shards}")
    if images.ndim == 3:
        images = images[..., None]
    if copies > 1:
        images = augment_copies(images, copies, seed=seed)
        labels = np.tile(labels, int(copies))
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    for old in out.glob("shard-*.tfrecord"):
        old.unlink()
    paths = [out / f"shard-{i:05d}-of-{n_shards:05d}.tfrecord" for i in range(n_shards)]
    writers = [tf.io.TFRecordWriter(str(p)) for p in paths]
    try:
        for i in range(len(images)):
            ex = tf.train.Example(
                features=tf.train.Features(
                    feature={
                        IMAGE_KEY: tf.train.Feature(bytes_list=tf.train.BytesList(value=[images[i].tobytes()])),
                        LABEL_KEY: tf.train.Feature(int64_list=tf.train.Int64List(value=[int(labels[i])])),
                    }
                )
            )
            writers[i % n_shards].write(ex.SerializeToString())
    finally:
        for w in writers:
            w.close()
    return Shards(
        paths=[str(p) for p in paths],
        n_examples=len(images),
        n_bytes=int(sum(p.stat().st_size for p in paths)),
        image_shape=tuple(images.shape[1:]),
    )


def _features():
    import tensorflow as tf

    return {IMAGE_KEY: tf.io.FixedLenFeature([], tf.string), LABEL_KEY: tf.io.FixedLenFeature([], tf.int64)}


def make_dataset(
    pattern: str,
    image_shape: Sequence[int],
    *,
    batch_size: int = 64,
    mode: str = "tuned",
    shuffle_buffer: int = 0,
    augment: bool = False,
    repeat: bool = False,
    seed: int = 0,
):
    """A ``tf.data.Dataset`` of ``(images float32 in [0, 1], labels int64)`` batches streamed from shards.

    ``mode="naive"``: read the shards one after the other, parse and decode one
    record at a time in a single thread, no prefetching.  ``mode="tuned"``:
    read 4 shards at once (``interleave`` with parallel calls), batch *before*
    parsing so that ``tf.io.parse_example``, ``decode_raw`` and the augmentation
    work on whole batches, run the map with ``num_parallel_calls=AUTOTUNE``, and
    ``prefetch`` so that the next batch is prepared while the model trains.
    With ``shuffle_buffer`` the tuned mode also shuffles the order of the shards
    every epoch (before interleaving) and then records within the buffer; the
    naive mode shuffles records within the buffer only.  Both yield the same images; only the order differs when shuffling or
    interleaving.  ``augment`` adds a random shift of up to 2 pixels (pad and
    crop), the same in both modes.  Memory stays bounded by the buffers
    (shuffle buffer, prefetch depth, parallel calls), not by the dataset size.
    """
    import tensorflow as tf

    if mode not in ("naive", "tuned"):
        raise ValueError(f"mode must be 'naive' or 'tuned', got {mode!r}")
    files = sorted(tf.io.gfile.glob(pattern))
    if not files:
        raise FileNotFoundError(f"no shard matches {pattern!r}; write them with scale.write_shards first")
    shape = [int(s) for s in image_shape]
    feats = _features()
    autotune = tf.data.AUTOTUNE

    def shift(img):
        pad = tf.pad(img, [[2, 2], [2, 2], [0, 0]])
        return tf.image.random_crop(pad, shape, seed=seed)

    if mode == "naive":

        def parse_one(rec):
            ex = tf.io.parse_single_example(rec, feats)
            img = tf.reshape(tf.io.decode_raw(ex[IMAGE_KEY], tf.uint8), shape)
            img = tf.cast(img, tf.float32) / 255.0
            if augment:
                img = shift(img)
            return img, ex[LABEL_KEY]

        ds = tf.data.TFRecordDataset(files)
        if shuffle_buffer:
            ds = ds.shuffle(shuffle_buffer, seed=seed)
        ds = ds.map(parse_one).batch(batch_size)
        return ds.repeat() if repeat else ds

    def shift_batch(img):
        # the same random shift as `shift`, drawn per image but applied to the whole batch with two gathers
        n = tf.shape(img)[0]
        pad = tf.pad(img, [[0, 0], [2, 2], [2, 2], [0, 0]])
        offsets = tf.random.uniform([n, 2], 0, 5, dtype=tf.int32, seed=seed)
        rows = offsets[:, :1] + tf.range(shape[0])[None, :]
        cols = offsets[:, 1:] + tf.range(shape[1])[None, :]
        out = tf.gather(pad, rows, axis=1, batch_dims=1)
        return tf.gather(out, cols, axis=2, batch_dims=1)

    def parse_batch(recs):
        ex = tf.io.parse_example(recs, feats)
        img = tf.reshape(tf.io.decode_raw(ex[IMAGE_KEY], tf.uint8), [-1] + shape)
        img = tf.cast(img, tf.float32) / 255.0
        if augment:
            img = shift_batch(img)
        return img, ex[LABEL_KEY]

    ds = tf.data.Dataset.from_tensor_slices(files)
    if shuffle_buffer:  # the order of the shards changes every epoch; the buffer then mixes records locally
        ds = ds.shuffle(len(files), seed=seed, reshuffle_each_iteration=True)
    ds = ds.interleave(tf.data.TFRecordDataset, cycle_length=min(4, len(files)), num_parallel_calls=autotune)
    if shuffle_buffer:
        ds = ds.shuffle(shuffle_buffer, seed=seed)
    ds = ds.batch(batch_size).map(parse_batch, num_parallel_calls=autotune)
    if repeat:
        ds = ds.repeat()
    return ds.prefetch(autotune)


def read_all(pattern: str, image_shape: Sequence[int]) -> tuple[np.ndarray, np.ndarray]:
    """Every record of the shards as uint8 images ``(N, *image_shape)`` and int64 labels, in file order."""
    import tensorflow as tf

    files = sorted(tf.io.gfile.glob(pattern))
    if not files:
        raise FileNotFoundError(f"no shard matches {pattern!r}")
    feats = _features()
    xs, ys = [], []
    for rec in tf.data.TFRecordDataset(files).batch(4096):
        ex = tf.io.parse_example(rec, feats)
        xs.append(tf.reshape(tf.io.decode_raw(ex[IMAGE_KEY], tf.uint8), [-1, *image_shape]).numpy())
        ys.append(ex[LABEL_KEY].numpy())
    return np.concatenate(xs), np.concatenate(ys)


# ---------------------------------------------------------------------------
# memory
# ---------------------------------------------------------------------------


def _stream_worker(
    pattern: str, image_shape: Sequence[int], batch_size: int, shuffle_buffer: int, load_all: bool
) -> dict:
    """Body of the memory-measurement subprocess (see :func:`measure_streaming_memory`)."""
    import resource

    import tensorflow as tf

    tf.constant(0.0).numpy()  # initialise the runtime before the baseline is taken
    ds = make_dataset(pattern, image_shape, batch_size=batch_size, mode="tuned", shuffle_buffer=shuffle_buffer)
    next(iter(ds.take(1)))  # build the graph functions once, so the baseline includes them
    import psutil

    baseline = psutil.Process().memory_info().rss
    n, total = 0, 0.0
    t0 = time.perf_counter()
    with memory.PeakMemory(0.01) as stream:
        for x, _y in ds:
            n += int(x.shape[0])
            total += float(tf.reduce_sum(x))  # touch the data
    seconds = time.perf_counter() - t0
    out = dict(n_images=n, baseline_rss=baseline, stream_peak_rss=stream.peak, stream_seconds=seconds, pixel_sum=total)
    if load_all:
        with memory.PeakMemory(0.01) as mem:
            x_all, y_all = read_all(pattern, image_shape)
            x_all = x_all.astype(np.float32) / 255.0  # what a model.fit(x_all, ...) call would hold
        out.update(in_memory_peak_rss=mem.peak, in_memory_array_bytes=int(x_all.nbytes))
        del x_all, y_all
    out["ru_maxrss"] = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024
    return out


def measure_streaming_memory(
    pattern: str,
    image_shape: Sequence[int],
    *,
    batch_size: int = 256,
    shuffle_buffer: int = 1024,
    load_all: bool = True,
    timeout: float = 600,
) -> dict:
    """Stream every record once in a fresh subprocess; return its memory figures (bytes) and timing.

    Keys: ``n_images``, ``baseline_rss`` (after TensorFlow and the pipeline are
    initialised), ``stream_peak_rss`` (highest resident memory during the
    streaming pass), ``stream_seconds``, and with ``load_all`` also
    ``in_memory_peak_rss`` (highest resident memory while the whole dataset is
    read into one float32 array, as ``model.fit(x, y)`` on arrays needs) and
    ``in_memory_array_bytes``.  The subprocess keeps the measurement clean of
    whatever the calling process already holds.
    """
    args = json.dumps(
        dict(
            pattern=str(pattern),
            image_shape=[int(s) for s in image_shape],
            batch_size=int(batch_size),
            shuffle_buffer=int(shuffle_buffer),
            load_all=bool(load_all),
        )
    )
    return _run_module("stream", args, timeout)


def _run_module(command: str, args: str, timeout: float) -> dict:
    env = dict(os.environ, TF_CPP_MIN_LOG_LEVEL="3", KERAS_BACKEND="tensorflow")
    env.pop("MEDIMG_RUN_RECORD", None)  # the child must not write into the notebook's run report
    root = Path(__file__).resolve().parent.parent
    proc = subprocess.run(
        [sys.executable, "-m", "utils.scale", command, args],
        capture_output=True,
        text=True,
        timeout=timeout,
        cwd=root,
        env=env,
    )
    if proc.returncode != 0:
        raise RuntimeError(f"utils.scale {command} subprocess failed (exit {proc.returncode}):\n{proc.stderr[-3000:]}")
    return json.loads(proc.stdout.strip().splitlines()[-1])


# ---------------------------------------------------------------------------
# throughput
# ---------------------------------------------------------------------------


def images_per_second(batches: Iterable, *, n_batches: int, warmup: int = 2) -> float:
    """Images per second of iterating ``batches`` (``(x, y)`` pairs or arrays), after ``warmup`` batches."""
    it = iter(batches)
    for _ in range(warmup):
        next(it)
    n = 0
    t0 = time.perf_counter()
    for _ in range(n_batches):
        b = next(it)
        x = b[0] if isinstance(b, (tuple, list)) else b
        n += int(x.shape[0])
    return n / (time.perf_counter() - t0)


def model_images_per_second(model, x: np.ndarray, y: np.ndarray, *, steps: int, warmup: int = 2) -> float:
    """Training images per second of a compiled Keras model on one in-memory batch ``(x, y)`` repeated.

    The input costs nothing here, so this is the model's own speed (forward,
    backward and optimizer update) — an upper bound for the whole pipeline.
    """
    for _ in range(warmup):
        model.train_on_batch(x, y)
    t0 = time.perf_counter()
    for _ in range(steps):
        model.train_on_batch(x, y)
    return steps * len(x) / (time.perf_counter() - t0)


def fit_images_per_second(model, dataset, *, steps: int, warmup: int = 2) -> float:
    """Training images per second of ``train_on_batch`` fed by a (repeating) ``tf.data`` dataset of batches.

    On TensorFlow the batches go in as ``tf.Tensor``; on JAX and PyTorch, which cannot take them, each
    batch is converted to NumPy first (as Keras' own ``tf.data`` adapter does for those backends), and the
    conversion is part of the time measured.
    """
    import keras

    as_input = (lambda t: t) if keras.backend.backend() == "tensorflow" else (lambda t: t.numpy())
    it = iter(dataset)
    for _ in range(warmup):
        x, y = next(it)
        model.train_on_batch(as_input(x), as_input(y))
    n = 0
    t0 = time.perf_counter()
    for _ in range(steps):
        x, y = next(it)
        model.train_on_batch(as_input(x), as_input(y))
        n += int(x.shape[0])
    return n / (time.perf_counter() - t0)


# ---------------------------------------------------------------------------
# data parallelism
# ---------------------------------------------------------------------------


def _small_training_set(n_images: int):
    """The first ``n_images`` PneumoniaMNIST training images as floats, labels one-hot (float32)."""
    import keras

    from . import classify, data

    ds = data.load_medmnist("pneumoniamnist")
    x = classify.as_float_images(ds.x["train"][:n_images])
    y = keras.utils.to_categorical(ds.y["train"][:n_images], 2).astype("float32")
    return x, y


def _small_cnn(input_shape, seed: int, width: int, synchronized: bool = True):
    """The chapter-2 CNN without dropout or augmentation, SGD with momentum.

    ``synchronized``: batch normalisation over the global batch (``True``) or over each replica's part.
    """
    import keras

    from . import classify

    keras.utils.set_random_seed(seed)
    model = classify.medmnist_cnn(input_shape, 2, width=width, blocks=1, dropout=0.0, augment=None, mean=0.5, std=0.25)
    for layer in model.layers:  # on TensorFlow, BN over the global batch needs synchronized=True; on JAX a
        # sharded batch is one global array, so BN already sees the whole batch (and refuses the flag)
        if isinstance(layer, keras.layers.BatchNormalization) and keras.backend.backend() == "tensorflow":
            layer.synchronized = synchronized
    model.compile(optimizer=keras.optimizers.SGD(0.05, momentum=0.9), loss="categorical_crossentropy")
    return model


def _mirrored_worker(steps: int, global_batch: int, seed: int, width: int, variants: list, n_devices: int) -> list:
    """Body of the data-parallel subprocess (see :func:`mirrored_vs_single`)."""
    import tensorflow as tf

    cpu = tf.config.list_physical_devices("CPU")[0]
    tf.config.set_logical_device_configuration(cpu, [tf.config.LogicalDeviceConfiguration()] * n_devices)
    tf.config.experimental.enable_op_determinism()
    x, y = _small_training_set(steps * global_batch)

    def run(strategy, synchronized):
        with strategy.scope():
            model = _small_cnn(x.shape[1:], seed, width, synchronized)
        init = [w.copy() for w in model.get_weights()]
        t0 = time.perf_counter()
        hist = model.fit(x, y, batch_size=global_batch, epochs=1, shuffle=False, verbose=0)
        secs = time.perf_counter() - t0
        return model, init, hist.history["loss"][-1], secs

    logical = [d.name for d in tf.config.list_logical_devices("CPU")]
    mirrored = tf.distribute.MirroredStrategy(logical[:n_devices])
    results = []
    for synchronized in variants:
        single, init_s, loss_s, t_s = run(tf.distribute.OneDeviceStrategy(logical[0]), bool(synchronized))
        multi, init_m, loss_m, t_m = run(mirrored, bool(synchronized))
        same_init = max(float(np.max(np.abs(a - b))) for a, b in zip(init_s, init_m))
        ws, wm = single.trainable_weights, multi.trainable_weights
        ws, wm = [np.asarray(w) for w in ws], [np.asarray(w) for w in wm]
        diff = max(float(np.max(np.abs(a - b))) for a, b in zip(ws, wm))
        scale = max(float(np.max(np.abs(a))) for a in ws)
        moved = max(
            float(np.max(np.abs(a - b))) for a, b in zip(ws, [np.asarray(w) for w in _trainable_init(single, init_s)])
        )
        results.append(
            dict(
                devices=logical,
                replicas=int(mirrored.num_replicas_in_sync),
                steps=int(steps),
                global_batch=int(global_batch),
                synchronized_bn=bool(synchronized),
                loss_single=float(loss_s),
                loss_mirrored=float(loss_m),
                max_abs_weight_diff=diff,
                max_abs_weight=scale,
                max_weight_change=moved,
                init_diff=same_init,
                seconds_single=t_s,
                seconds_mirrored=t_m,
            )
        )
    return results


def _trainable_init(model, init_weights: list) -> list:
    """The entries of ``init_weights`` (as from ``get_weights``) that belong to trainable variables."""
    ids = {id(v) for v in model.trainable_weights}
    by_var = dict(zip([id(v) for v in model.weights], init_weights))
    return [by_var[id(v)] for v in model.weights if id(v) in ids]


def mirrored_vs_single(
    *,
    steps: int = 5,
    global_batch: int = 64,
    seed: int = 0,
    width: int = 8,
    variants: Sequence[bool] = (True, False),
    n_devices: int = 2,
    timeout: float = 600,
) -> list:
    """Train the chapter-2 CNN for ``steps`` SGD steps on one device and with MirroredStrategy; compare.

    Runs in a subprocess that first splits the CPU into ``n_devices`` logical
    devices (``tf.config.set_logical_device_configuration`` must run before
    TensorFlow initialises its devices).  Both runs start from the same weights
    (same seed), see the same PneumoniaMNIST training images in the same order
    with the same *global* batch size, and use a model without dropout or
    augmentation (so nothing random differs between the runs).  One comparison
    per entry of ``variants``: with ``True`` batch normalisation computes its statistics over the
    global batch (``BatchNormalization(synchronized=True)``), as a single device
    does; with ``False`` each replica normalises with its own half-batch, and
    the results differ.  Returns one dictionary per variant: final training
    losses, the largest absolute difference between the trainable weights of
    the two runs (``max_abs_weight_diff``), how far training moved them
    (``max_weight_change``), timings and the device names.
    """
    if int(n_devices) < 2:
        raise ValueError(f"n_devices must be >= 2 for data parallelism, got {n_devices}")
    args = json.dumps(
        dict(
            steps=int(steps),
            global_batch=int(global_batch),
            seed=int(seed),
            width=int(width),
            variants=[bool(v) for v in variants],
            n_devices=int(n_devices),
        )
    )
    return _run_module("mirrored", args, timeout)


# ---------------------------------------------------------------------------
# several processes: MultiWorkerMirroredStrategy (TensorFlow) and DataParallel (JAX)
# ---------------------------------------------------------------------------


def _throughput(n_images: int, epoch_seconds: list[float]) -> float:
    """Images per second after the first epoch (which also traces and compiles), or over it if it is alone."""
    timed = epoch_seconds[1:] or epoch_seconds
    return n_images * len(timed) / sum(timed)


def _fit_and_save(model, x, y, *, global_batch: int, epochs: int, out: str | None) -> dict:
    import keras

    epoch_seconds: list[float] = []

    class EpochTimer(keras.callbacks.Callback):
        def on_epoch_begin(self, epoch, logs=None):
            self.t0 = time.perf_counter()

        def on_epoch_end(self, epoch, logs=None):
            epoch_seconds.append(time.perf_counter() - self.t0)

    hist = model.fit(x, y, batch_size=global_batch, epochs=epochs, shuffle=False, verbose=0, callbacks=[EpochTimer()])
    if out:
        np.savez(out, *[np.asarray(w) for w in model.trainable_weights])
    return dict(
        loss=[float(v) for v in hist.history["loss"]],
        epoch_seconds=epoch_seconds,
        images_per_second=_throughput(len(x), epoch_seconds),
    )


def _custom_loop(strategy, model, x, y, *, global_batch: int, epochs: int) -> dict:
    """Train ``model`` with a ``tf.distribute`` custom training loop; per-epoch mean losses and timing.

    Keras 3's ``model.fit`` does not run under ``MultiWorkerMirroredStrategy`` (keras-team/keras#20585,
    open), so both runs of :func:`multiworker_vs_single` use the loop that TensorFlow's distributed-
    training guide teaches: each replica computes its share of the loss, scaled by the *global* batch
    (``tf.nn.compute_average_loss``), and the Keras optimizer all-reduces the gradients.
    """
    import keras
    import tensorflow as tf

    options = tf.data.Options()  # in-memory data has no files to shard: each worker takes its share of a batch
    options.experimental_distribute.auto_shard_policy = tf.data.experimental.AutoShardPolicy.DATA
    dataset = tf.data.Dataset.from_tensor_slices((x, y)).batch(global_batch).with_options(options)
    batches = strategy.experimental_distribute_dataset(dataset)
    optimizer = model.optimizer

    @tf.function
    def train_step(xb, yb):
        def step(xr, yr):
            with tf.GradientTape() as tape:
                per_example = keras.losses.categorical_crossentropy(yr, model(xr, training=True))
                loss = tf.nn.compute_average_loss(per_example, global_batch_size=global_batch)
            grads = tape.gradient(loss, model.trainable_variables)
            optimizer.apply_gradients(zip(grads, model.trainable_variables))
            return loss

        return strategy.reduce("SUM", strategy.run(step, args=(xb, yb)), axis=None)

    losses, epoch_seconds = [], []
    for _ in range(epochs):
        t0 = time.perf_counter()
        step_losses = [float(train_step(xb, yb)) for xb, yb in batches]
        epoch_seconds.append(time.perf_counter() - t0)
        losses.append(float(np.mean(step_losses)))
    return dict(loss=losses, epoch_seconds=epoch_seconds, images_per_second=_throughput(len(x), epoch_seconds))


def _multiworker_worker(
    index: int, ports: list, n_images: int, global_batch: int, epochs: int, seed: int, width: int, out: str
) -> dict:
    """Body of one worker process of :func:`multiworker_vs_single` (``index`` < 0: the single process)."""
    if index >= 0:  # TF_CONFIG must be set before TensorFlow starts
        os.environ["TF_CONFIG"] = json.dumps(
            {"cluster": {"worker": [f"127.0.0.1:{p}" for p in ports]}, "task": {"type": "worker", "index": index}}
        )
    import tensorflow as tf

    tf.config.experimental.enable_op_determinism()
    strategy = tf.distribute.MultiWorkerMirroredStrategy() if index >= 0 else tf.distribute.get_strategy()
    x, y = _small_training_set(n_images)
    with strategy.scope():
        model = _small_cnn(x.shape[1:], seed, width)
        model.optimizer.build(model.trainable_variables)
    result = _custom_loop(strategy, model, x, y, global_batch=global_batch, epochs=epochs)
    np.savez(out, *[np.asarray(w) for w in model.trainable_weights])
    result.update(replicas=int(strategy.num_replicas_in_sync), index=index)
    return result


def _free_ports(n: int) -> list[int]:
    import socket

    socks = [socket.socket() for _ in range(n)]
    try:
        for s in socks:
            s.bind(("127.0.0.1", 0))
        return [s.getsockname()[1] for s in socks]
    finally:
        for s in socks:
            s.close()


def _child_env(**extra: str) -> dict:
    env = dict(os.environ, TF_CPP_MIN_LOG_LEVEL="3", **extra)
    env.pop("MEDIMG_RUN_RECORD", None)  # a child must not write into the notebook's run report
    env.pop("TF_CONFIG", None)
    return env


def _compare_weights(a_path: str, b_path: str) -> float:
    with np.load(a_path) as a, np.load(b_path) as b:
        return max(float(np.max(np.abs(a[k] - b[k]))) for k in a.files)


def multiworker_vs_single(
    *,
    n_workers: int = 2,
    n_images: int = 512,
    global_batch: int = 64,
    epochs: int = 3,
    seed: int = 0,
    width: int = 8,
    timeout: float = 900,
) -> dict:
    """Train the same model with ``tf.distribute.MultiWorkerMirroredStrategy`` in ``n_workers`` processes.

    Each worker is a separate Python process on this machine. ``TF_CONFIG`` lists the workers at
    127.0.0.1 ports, and worker 0 is the chief. Gradients are all-reduced over gRPC, exactly as
    between machines. Every worker takes its share of each global batch (auto-sharding by data).

    The same model is also trained in one process on the same global batches, so the two loss
    curves can be compared. Both runs start from the same weights, with no dropout or augmentation,
    and batch normalisation runs over the global batch.

    Returns a dictionary with:
    - ``single`` and ``workers``: per-epoch losses and seconds of each run, and its images per second
      after the first epoch (which also traces the step function);
    - ``max_abs_loss_diff``: the largest difference between the chief's and the single run's losses;
    - ``max_abs_weight_diff``: the largest difference between their final weights, and
      ``workers_agree``: the same difference between the workers.
    """
    if int(n_workers) < 2:
        raise ValueError(f"n_workers must be >= 2, got {n_workers}")
    if int(n_images) % int(global_batch):
        raise ValueError(
            f"n_images ({n_images}) must be a multiple of global_batch ({global_batch}), "
            "so that both runs see the same batches"
        )
    root = Path(__file__).resolve().parent.parent
    with tempfile.TemporaryDirectory(prefix="multiworker-") as tmp:
        common = dict(
            n_images=int(n_images), global_batch=int(global_batch), epochs=int(epochs), seed=int(seed), width=int(width)
        )
        env = _child_env(KERAS_BACKEND="tensorflow")

        def launch(index: int, ports: list) -> subprocess.Popen:
            args = json.dumps(dict(common, index=index, ports=ports, out=str(Path(tmp) / f"w{index}.npz")))
            return subprocess.Popen(
                [sys.executable, "-m", "utils.scale", "multiworker", args],
                cwd=root,
                env=env,
                stdout=subprocess.PIPE,
                stderr=subprocess.PIPE,
                text=True,
            )

        def collect(proc: subprocess.Popen, what: str) -> dict:
            try:
                out, err = proc.communicate(timeout=timeout)
            except subprocess.TimeoutExpired:
                proc.kill()
                raise RuntimeError(f"{what} ran past {timeout} s and was stopped") from None
            if proc.returncode != 0:
                raise RuntimeError(f"{what} failed (exit {proc.returncode}):\n{err[-3000:]}")
            return json.loads(out.strip().splitlines()[-1])

        single = collect(launch(-1, []), "the single-process run")
        ports = _free_ports(int(n_workers))
        procs = [launch(i, ports) for i in range(int(n_workers))]
        workers = [collect(p, f"worker {i}") for i, p in enumerate(procs)]
        chief = workers[0]
        return dict(
            n_workers=int(n_workers),
            **common,
            single=single,
            workers=workers,
            max_abs_loss_diff=max(abs(a - b) for a, b in zip(chief["loss"], single["loss"])),
            max_abs_weight_diff=_compare_weights(str(Path(tmp) / "w0.npz"), str(Path(tmp) / "w-1.npz")),
            workers_agree=max(
                _compare_weights(str(Path(tmp) / "w0.npz"), str(Path(tmp) / f"w{i}.npz"))
                for i in range(1, int(n_workers))
            ),
        )


def _jax_worker(n_devices: int, n_images: int, global_batch: int, epochs: int, seed: int, width: int) -> dict:
    """Body of :func:`jax_data_parallel_vs_single` (runs with ``n_devices`` virtual CPU devices)."""
    import jax
    import keras

    x, y = _small_training_set(n_images)
    devices = jax.devices()
    with tempfile.TemporaryDirectory() as tmp:
        single = _fit_and_save(
            _small_cnn(x.shape[1:], seed, width),
            x,
            y,
            global_batch=global_batch,
            epochs=epochs,
            out=str(Path(tmp) / "single.npz"),
        )
        keras.distribution.set_distribution(keras.distribution.DataParallel(devices=devices))
        parallel = _fit_and_save(
            _small_cnn(x.shape[1:], seed, width),
            x,
            y,
            global_batch=global_batch,
            epochs=epochs,
            out=str(Path(tmp) / "parallel.npz"),
        )
        keras.distribution.set_distribution(None)
        diff = _compare_weights(str(Path(tmp) / "single.npz"), str(Path(tmp) / "parallel.npz"))
    return dict(
        devices=[str(d) for d in devices],
        single=single,
        parallel=parallel,
        max_abs_weight_diff=diff,
        max_abs_loss_diff=max(abs(a - b) for a, b in zip(single["loss"], parallel["loss"])),
    )


def jax_data_parallel_vs_single(
    *,
    n_devices: int = 2,
    n_images: int = 512,
    global_batch: int = 64,
    epochs: int = 3,
    seed: int = 0,
    width: int = 8,
    timeout: float = 900,
) -> dict:
    """Train the same model on one device and under ``keras.distribution.DataParallel`` on JAX; compare.

    Runs in a subprocess on the JAX backend. ``XLA_FLAGS=--xla_force_host_platform_device_count=N``
    splits the CPU into ``n_devices`` virtual devices, and must be set before JAX starts. Keras then
    shards each global batch across the devices and keeps the weights replicated. On a GPU machine
    ``jax.devices()`` lists the GPUs instead, and the same code runs unchanged.

    Returns the per-epoch losses and timings of both runs, and the largest differences between their
    losses and between their final weights.
    """
    if int(n_devices) < 2:
        raise ValueError(f"n_devices must be >= 2, got {n_devices}")
    args = json.dumps(
        dict(
            n_devices=int(n_devices),
            n_images=int(n_images),
            global_batch=int(global_batch),
            epochs=int(epochs),
            seed=int(seed),
            width=int(width),
        )
    )
    env = _child_env(
        KERAS_BACKEND="jax", XLA_FLAGS=f"--xla_force_host_platform_device_count={int(n_devices)}", JAX_PLATFORMS="cpu"
    )
    proc = subprocess.run(
        [sys.executable, "-m", "utils.scale", "jax", args],
        capture_output=True,
        text=True,
        timeout=timeout,
        cwd=Path(__file__).resolve().parent.parent,
        env=env,
    )
    if proc.returncode != 0:
        raise RuntimeError(f"the JAX data-parallel subprocess failed (exit {proc.returncode}):\n{proc.stderr[-3000:]}")
    return json.loads(proc.stdout.strip().splitlines()[-1])


_COMMANDS = {
    "stream": lambda kw: _stream_worker(**kw),
    "mirrored": lambda kw: _mirrored_worker(**kw),
    "multiworker": lambda kw: _multiworker_worker(**kw),
    "jax": lambda kw: _jax_worker(**kw),
}


def _main(argv: list[str]) -> int:
    if len(argv) != 2 or argv[0] not in _COMMANDS:
        print(f"usage: python -m utils.scale {{{'|'.join(_COMMANDS)}}} '<json arguments>'", file=sys.stderr)
        return 2
    print(json.dumps(_COMMANDS[argv[0]](json.loads(argv[1]))))
    return 0


if __name__ == "__main__":
    raise SystemExit(_main(sys.argv[1:]))
