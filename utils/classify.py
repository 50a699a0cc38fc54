"""Models, training helpers and Grad-CAM for chapter 2 (CNN image classification).

Everything here is Keras 3 code (``keras.layers`` and ``keras.ops``), so it runs
on the TensorFlow, JAX and PyTorch backends.  The one backend-specific piece is
the gradient inside :func:`grad_cam`, which dispatches on
``keras.backend.backend()``.

* :func:`source_cnn` is the source text's CIFAR-10 model exactly as written;
  :func:`cifar_variant` is the same topology with batch normalisation,
  augmentation and regularisation switched on one at a time (the ablation).
* :func:`medmnist_cnn` is the small VGG-style network the chapter trains on
  MedMNIST (batch normalisation, global average pooling, dropout, and
  modality-aware augmentation from :data:`AUGMENTATION`); :func:`binary_cnn`
  is the same network with one sigmoid output (focal loss, chapter 6) and
  :func:`small_cnn` a smaller one without batch normalisation (per-example
  gradients for DP-SGD and weight averaging for federated learning, chapter 6).
  Every small classifier of the course is built here; the segmentation,
  detection and GAN networks live with the chapters that teach them.
* :func:`compile_classifier` (AdamW with a warm-up + cosine learning-rate
  schedule), :class:`KeepBest` (checkpoint selection on a validation score),
  :func:`fit_timed` (wall time and images seen, for the run report) and
  :func:`predict_proba` (test-time flips) are the training loop's parts.
* :func:`grad_cam` computes Grad-CAM heatmaps (Selvaraju et al., 2017).
"""

from __future__ import annotations

import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field

import keras
import numpy as np

from . import course

#: Augmentation per imaging modality (arguments of :func:`augmentation_layers`).
#: Chest radiographs are not mirrored: the heart is on the patient's left, and
#: a mirrored film is a different (rare) anatomy, not the same finding.
#: Breast ultrasound may be mirrored left-right (the probe can face either way)
#: but not up-down (depth runs from the skin at the top).  Fundus photographs
#: are mirrored in both directions and rotated freely (left and right eyes are
#: mirror images and the camera's roll is arbitrary).
AUGMENTATION = {
    "chest_xray": dict(flip=None, translate=0.08, rotate=0.03),
    "ultrasound": dict(flip="horizontal", translate=0.08),
    "fundus": dict(flip="horizontal_and_vertical", rotate=0.5),
}

#: Which modality each MedMNIST flag of the chapter is.
MODALITY = {"pneumoniamnist": "chest_xray", "breastmnist": "ultrasound", "retinamnist": "fundus"}

#: Test-time flips that are consistent with :data:`AUGMENTATION` (axis 2 = left-right, 1 = up-down).
TTA_FLIPS = {"chest_xray": (), "ultrasound": (2,), "fundus": (2, 1)}


def as_float_images(x: np.ndarray) -> np.ndarray:
    """uint8 images ``(N, H, W)`` or ``(N, H, W, C)`` as float32 in [0, 1] with a channel axis."""
    x = np.asarray(x)
    if x.ndim == 3:
        x = x[..., None]
    if x.ndim != 4:
        raise ValueError(f"expected images (N, H, W) or (N, H, W, C), got shape {x.shape}")
    scale = 255.0 if x.dtype == np.uint8 else 1.0
    return (x.astype("float32") / scale).astype("float32")


def stratified_split(y: np.ndarray, n_val: int, seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    """Indices of a stratified (train, validation) split with ``n_val`` validation cases, both sorted."""
    from sklearn.model_selection import train_test_split

    y = np.asarray(y).reshape(-1)
    idx = np.arange(len(y))
    tr, va = train_test_split(idx, test_size=n_val, stratify=y, random_state=seed)
    return np.sort(tr), np.sort(va)


def stratified_subset(y: np.ndarray, n: int, seed: int = 0) -> np.ndarray:
    """Sorted indices of a stratified random subset of ``n`` cases (all cases if ``n`` is None or too big)."""
    y = np.asarray(y).reshape(-1)
    if n is None or n >= len(y):
        return np.arange(len(y))
    return stratified_split(y, n, seed)[1]


# ---------------------------------------------------------------------------
# models
# ---------------------------------------------------------------------------


def source_cnn(input_shape: Sequence[int] = (32, 32, 3), n_classes: int = 10):
    """The source text's CIFAR-10 CNN, layer for layer.

    Conv2D(32, 3×3, same, ReLU) → MaxPool(2) → Conv2D(64, 3×3, same, ReLU) →
    MaxPool(2) → Flatten → Dense(512, ReLU) → Dense(n_classes, softmax).
    Compile it with Adam and categorical cross-entropy, as the source does.
    """
    from keras import layers

    return keras.Sequential(
        [
            keras.Input(tuple(input_shape)),
            layers.Conv2D(32, (3, 3), padding="same", activation="relu"),
            layers.MaxPooling2D(pool_size=(2, 2)),
            layers.Conv2D(64, (3, 3), padding="same", activation="relu"),
            layers.MaxPooling2D(pool_size=(2, 2)),
            layers.Flatten(),
            layers.Dense(512, activation="relu"),
            layers.Dense(n_classes, activation="softmax"),
        ],
        name="source_cnn",
    )


def cifar_variant(
    *,
    batchnorm: bool = False,
    augment: bool = False,
    dropout: float = 0.0,
    l2: float = 0.0,
    input_shape: Sequence[int] = (32, 32, 3),
    n_classes: int = 10,
    name: str | None = None,
):
    """The source topology with one or more of the three classic additions switched on.

    ``batchnorm`` puts BatchNormalization between each convolution / hidden
    dense layer and its ReLU (momentum 0.9, so that its moving statistics
    settle within a short run); ``augment`` adds random left-right flips and
    shifts of up to 10 % (active only while training); ``dropout`` is the rate
    of a Dropout layer before each dense layer; ``l2`` is an L2 weight penalty on
    every kernel.  With everything off the network equals :func:`source_cnn`.
    """
    from keras import layers

    reg = keras.regularizers.L2(l2) if l2 else None
    inp = keras.Input(tuple(input_shape))
    x = inp
    if augment:
        x = layers.RandomFlip("horizontal")(x)
        x = RandomAffine(translate=0.1, fill_mode="reflect")(x)

    def block(x, make):
        if batchnorm:
            x = make(None)(x)
            x = layers.BatchNormalization(momentum=0.9)(x)
            return layers.ReLU()(x)
        return make("relu")(x)

    x = block(x, lambda act: layers.Conv2D(32, 3, padding="same", activation=act, kernel_regularizer=reg))
    x = layers.MaxPooling2D(2)(x)
    x = block(x, lambda act: layers.Conv2D(64, 3, padding="same", activation=act, kernel_regularizer=reg))
    x = layers.MaxPooling2D(2)(x)
    x = layers.Flatten()(x)
    if dropout:
        x = layers.Dropout(dropout)(x)
    x = block(x, lambda act: layers.Dense(512, activation=act, kernel_regularizer=reg))
    if dropout:
        x = layers.Dropout(dropout)(x)
    out = layers.Dense(n_classes, activation="softmax", kernel_regularizer=reg)(x)
    return keras.Model(inp, out, name=name or "cifar_variant")


def affine_resample(x, theta, shift_y, shift_x, scale=None, *, fill_mode: str = "constant"):
    """Rotate, shift and scale each image of a batch ``(B, H, W, C)`` with bilinear interpolation.

    Output pixel ``p`` (row, column, measured from the image centre ``c``) takes the value at
    ``R(θ) (p − c − t) · s + c`` of the input: a shift by ``t = (shift_y, shift_x)`` pixels, then a rotation
    by ``θ`` radians about the centre, then a zoom by ``1/s`` (``s > 1`` shows more of the image).  ``theta``,
    ``shift_y``, ``shift_x`` and ``scale`` hold one value per image.  Points that fall outside the input
    read zero (``fill_mode="constant"``) or the mirror image across the border (``"reflect"``,
    d c b a | a b c d | d c b a).  The interpolation is four ``keras.ops.take`` gathers on the flattened
    batch, so it is one fused computation on every backend; Keras' ``RandomTranslation`` /
    ``RandomRotation`` go through ``map_coordinates``, which JAX runs about five times slower on a CPU
    (measured in the decisions log of chapter 2).  Tested against
    ``scipy.ndimage.affine_transform`` (order 1).
    """
    from keras import ops

    if fill_mode not in ("constant", "reflect"):
        raise ValueError(f"fill_mode must be 'constant' or 'reflect', got {fill_mode!r}")
    shape = ops.shape(x)
    b, h, w, c = shape[0], shape[1], shape[2], shape[3]
    cy, cx = (h - 1) / 2.0, (w - 1) / 2.0
    rows = ops.cast(ops.arange(h), "float32")[None, :, None] - cy
    cols = ops.cast(ops.arange(w), "float32")[None, None, :] - cx
    cos, sin = ops.cos(theta)[:, None, None], ops.sin(theta)[:, None, None]
    dy, dx = rows - shift_y[:, None, None], cols - shift_x[:, None, None]
    sy, sx = cos * dy - sin * dx, sin * dy + cos * dx
    if scale is not None:
        sy, sx = sy * scale[:, None, None], sx * scale[:, None, None]
    sy, sx = sy + cy, sx + cx
    y0, x0 = ops.floor(sy), ops.floor(sx)
    wy, wx = sy - y0, sx - x0
    y0, x0 = ops.cast(y0, "int32"), ops.cast(x0, "int32")
    flat = ops.reshape(x, (-1, c))
    base = ops.arange(b, dtype="int32")[:, None, None] * (h * w)
    out = None
    for oy, ox, weight in ((0, 0, (1 - wy) * (1 - wx)), (0, 1, (1 - wy) * wx), (1, 0, wy * (1 - wx)), (1, 1, wy * wx)):
        iy, ix = y0 + oy, x0 + ox
        if fill_mode == "reflect":
            iy, ix = _reflect_index(iy, h), _reflect_index(ix, w)
        else:
            inside = (iy >= 0) & (iy < h) & (ix >= 0) & (ix < w)
            weight = weight * ops.cast(inside, "float32")
            iy, ix = ops.clip(iy, 0, h - 1), ops.clip(ix, 0, w - 1)
        values = ops.reshape(ops.take(flat, ops.reshape(base + iy * w + ix, (-1,)), axis=0), shape)
        term = values * ops.cast(weight, x.dtype)[..., None]
        out = term if out is None else out + term
    return out


def _reflect_index(i, n: int):
    """Integer indices folded into [0, n) by mirroring across the borders (period 2n)."""
    m = keras.ops.mod(i, 2 * n)
    return keras.ops.where(m >= n, 2 * n - 1 - m, m)


@keras.saving.register_keras_serializable(package="medimg")
class RandomAffine(keras.layers.Layer):
    """Random shift, rotation and zoom of every training image in one resampling (identity at inference).

    ``translate`` is the largest shift as a fraction of the image's height and width (Keras'
    ``RandomTranslation`` convention), ``rotate`` the largest angle as a fraction of a full turn
    (``RandomRotation``'s: 0.03 ≈ ±11°), ``zoom`` the largest relative change of scale (``RandomZoom``'s).
    Each image draws its own values, uniformly, from a seeded ``keras.random.SeedGenerator``.  The work
    is :func:`affine_resample`: one bilinear resampling instead of one per Keras layer, in ``keras.ops``
    gathers that are about as fast on JAX and PyTorch as on TensorFlow (taught in chapter 2, section 4).
    """

    def __init__(
        self,
        translate: float = 0.0,
        rotate: float = 0.0,
        zoom: float = 0.0,
        *,
        fill_mode: str = "constant",
        seed: int | None = None,
        **kwargs,
    ):
        super().__init__(**kwargs)
        for label, value in (("translate", translate), ("rotate", rotate), ("zoom", zoom)):
            if not 0 <= value < 1:
                raise ValueError(f"RandomAffine: {label} must be in [0, 1), got {value!r}")
        if fill_mode not in ("constant", "reflect"):
            raise ValueError(f"RandomAffine: fill_mode must be 'constant' or 'reflect', got {fill_mode!r}")
        self.translate, self.rotate, self.zoom = float(translate), float(rotate), float(zoom)
        self.fill_mode, self.seed = fill_mode, seed
        self.generator = keras.random.SeedGenerator(seed)

    def compute_output_shape(self, input_shape):
        return input_shape

    def call(self, x, training=None):
        if not training or not (self.translate or self.rotate or self.zoom):
            return x
        from keras import ops

        shape = ops.shape(x)
        b, h, w = shape[0], shape[1], shape[2]

        def draw(bound):
            return keras.random.uniform((b,), -bound, bound, seed=self.generator)

        theta = draw(self.rotate * 2 * np.pi)
        shift_y, shift_x = draw(self.translate * h), draw(self.translate * w)
        scale = 1.0 + draw(self.zoom) if self.zoom else None
        return affine_resample(x, theta, shift_y, shift_x, scale, fill_mode=self.fill_mode)

    def get_config(self):
        return {
            **super().get_config(),
            "translate": self.translate,
            "rotate": self.rotate,
            "zoom": self.zoom,
            "fill_mode": self.fill_mode,
            "seed": self.seed,
        }


def augmentation_layers(
    flip: str | None = None, translate: float = 0.0, rotate: float = 0.0, zoom: float = 0.0, seed: int | None = None
) -> list:
    """Random-augmentation layers (identity at inference): flips, then shifts, rotations and zoom.

    ``translate`` and ``zoom`` are fractions of the image size, ``rotate`` a
    fraction of a full turn (0.03 ≈ ±11°); borders are filled with zeros.  Flips are Keras'
    ``RandomFlip``; shift, rotation and zoom are one :class:`RandomAffine` (one resampling).
    """
    from keras import layers

    out = []
    if flip:
        out.append(layers.RandomFlip(flip, seed=seed))
    if translate or rotate or zoom:
        out.append(RandomAffine(translate, rotate, zoom, fill_mode="constant", seed=seed))
    return out


def medmnist_cnn(
    input_shape: Sequence[int],
    n_classes: int,
    *,
    width: int = 16,
    blocks: int = 2,
    dropout: float = 0.3,
    augment: dict | None = None,
    mean: Sequence[float] | float = 0.0,
    std: Sequence[float] | float = 1.0,
    bn_momentum: float = 0.9,
    name: str = "medmnist_cnn",
):
    """A small VGG-style CNN for 28×28 MedMNIST images.

    Three stages of ``blocks`` × (3×3 convolution → batch norm → ReLU) with
    ``width``, 2·``width`` and 4·``width`` channels, 2×2 max pooling between the
    stages (28 → 14 → 7), global average pooling, dropout, and a dense layer
    named ``logits`` followed by a softmax named ``probs``.  The last feature
    map (7×7×4·width) is the layer ``last_conv``, which :func:`grad_cam` uses.
    ``augment`` (keyword arguments of :func:`augmentation_layers`) adds random
    augmentation that is active only in training; ``mean``/``std`` standardise
    the [0, 1] input inside the model.  ``bn_momentum`` 0.9 (Keras' default is
    0.99) lets the moving statistics of batch normalisation follow the weights
    within about ten steps, which matters for small training sets, where an
    epoch has only a few steps and each epoch's weights are scored.
    """
    from keras import layers

    inp = keras.Input(tuple(input_shape), name="image")
    x = inp
    for layer in augmentation_layers(**(augment or {})):
        x = layer(x)
    mean = np.broadcast_to(np.asarray(mean, "float32"), (input_shape[-1],))
    std = np.broadcast_to(np.asarray(std, "float32"), (input_shape[-1],))
    x = layers.Normalization(mean=mean, variance=np.maximum(std, 1e-3) ** 2, name="standardise")(x)
    n_stages = 3
    for stage in range(n_stages):
        for b in range(blocks):
            x = layers.Conv2D(width * 2**stage, 3, padding="same", use_bias=False, kernel_initializer="he_normal")(x)
            x = layers.BatchNormalization(momentum=bn_momentum)(x)
            last = stage == n_stages - 1 and b == blocks - 1
            x = layers.ReLU(name="last_conv" if last else None)(x)
        if stage < n_stages - 1:
            x = layers.MaxPooling2D(2)(x)
    x = layers.GlobalAveragePooling2D()(x)
    x = layers.Dropout(dropout)(x)
    z = layers.Dense(n_classes, name="logits")(x)
    out = layers.Activation("softmax", name="probs")(z)
    return keras.Model(inp, out, name=name)


def binary_cnn(input_shape: Sequence[int], **kwargs):
    """The chapter-2 CNN (:func:`medmnist_cnn`) with one sigmoid output ``P(positive)``.

    The trunk, pooling and dropout are those of ``medmnist_cnn(**kwargs)``; the
    two-class softmax head is replaced by ``Dense(1)`` (layer ``logit``) and a
    sigmoid (layer ``prob``), the form that ``keras.losses.BinaryCrossentropy``
    and ``BinaryFocalCrossentropy`` expect.
    """
    base = medmnist_cnn(input_shape, 2, **kwargs)
    features = base.get_layer("logits").input
    z = keras.layers.Dense(1, name="logit")(features)
    out = keras.layers.Activation("sigmoid", name="prob")(z)
    return keras.Model(base.inputs, out, name=base.name + "_binary")


def small_cnn(
    input_shape: Sequence[int] = (28, 28, 1),
    n_classes: int = 2,
    *,
    width: int = 8,
    batch_norm: bool = False,
    name: str = "small_cnn",
):
    """A very small CNN, by default without batch normalisation (so that per-example gradients are clean).

    ``Rescaling`` ([0, 1] → [-2, 2]) → Conv 3×3 (``width``, ReLU) → MaxPool 2 →
    Conv 3×3 (2·``width``, ReLU) → MaxPool 2 → Conv 3×3 (4·``width``, ReLU) →
    global average pooling → Dense(``n_classes``) **logits** (no softmax: use a
    loss with ``from_logits=True`` and :func:`keras.ops.softmax` for
    probabilities).  Batch normalisation is left out by default: it mixes the
    examples of a batch (so an example's gradient depends on the others, which
    breaks DP-SGD's per-example clipping) and has running statistics that are
    not trained weights.  ``batch_norm=True`` puts it between every convolution
    (then without bias) and its ReLU, for federated learning with FedBN, where
    each site keeps its own normalisation; its momentum is 0.9 (Keras' default
    0.99), so that the running statistics of a small site, which takes few
    steps per round, follow its data.

    Taught in chapter 6, part 2, sections 2 and 3.
    """
    from keras import layers

    stack = [keras.Input(tuple(input_shape)), layers.Rescaling(4.0, offset=-2.0)]
    for k, filters in enumerate((width, 2 * width, 4 * width)):
        if k:
            stack.append(layers.MaxPooling2D(2))
        if batch_norm:
            stack += [
                layers.Conv2D(filters, 3, padding="same", use_bias=False),
                layers.BatchNormalization(momentum=0.9),
            ]
            stack.append(layers.ReLU())
        else:
            stack.append(layers.Conv2D(filters, 3, padding="same", activation="relu"))
    stack += [layers.GlobalAveragePooling2D(), layers.Dense(n_classes, name="logits")]
    return keras.Sequential(stack, name=name)


# ---------------------------------------------------------------------------
# training
# ---------------------------------------------------------------------------


def lr_schedule(peak: float, total_steps: int, warmup_steps: int = 0):
    """Linear warm-up from 0 to ``peak`` over ``warmup_steps``, then cosine decay to 0 at ``total_steps``."""

    warmup_steps = int(min(max(warmup_steps, 0), max(total_steps - 1, 0)))
    if warmup_steps == 0:
        return keras.optimizers.schedules.CosineDecay(peak, max(total_steps, 1))
    return keras.optimizers.schedules.CosineDecay(
        0.0, max(total_steps - warmup_steps, 1), warmup_target=peak, warmup_steps=warmup_steps
    )


def compile_classifier(
    model,
    *,
    lr: float,
    weight_decay: float,
    epochs: int,
    steps_per_epoch: int,
    warmup_epochs: int = 1,
    label_smoothing: float = 0.0,
):
    """Compile with AdamW, a warm-up + cosine learning-rate schedule and (smoothed) categorical cross-entropy."""

    sched = lr_schedule(lr, epochs * steps_per_epoch, warmup_epochs * steps_per_epoch)
    model.compile(
        optimizer=keras.optimizers.AdamW(sched, weight_decay=weight_decay),
        loss=keras.losses.CategoricalCrossentropy(label_smoothing=label_smoothing),
        metrics=["accuracy"],
    )
    return model


def predict_proba(model, x: np.ndarray, *, flips: Sequence[int] = (), batch_size: int = 512) -> np.ndarray:
    """Class probabilities, averaged over the identity and each flip axis in ``flips`` (test-time augmentation).

    Axis 2 flips left-right and axis 1 up-down for images ``(N, H, W, C)``.
    """
    p = model.predict(x, batch_size=batch_size, verbose=0)
    for axis in flips:
        p = p + model.predict(np.flip(x, axis=axis), batch_size=batch_size, verbose=0)
    return np.asarray(p / (1 + len(flips)), dtype="float64")


class KeepBest(keras.callbacks.Callback):
    """Keras callback: score the validation set after every epoch, keep the best weights, restore them at the end.

    ``score(y_val, probabilities)`` is higher-is-better (default: the MedMNIST
    AUC).  ``history`` holds one score per epoch and ``best_epoch`` the
    (0-based) epoch whose weights the model ends with.  The test set plays
    no part in this selection.

    ``subsets`` (name → indices into the validation set) adds selections on
    parts of it, from the same per-epoch predictions: for each name,
    ``subset_history[name]``, ``subset_best_epoch[name]`` and
    ``subset_weights[name]`` (the weights of its own best epoch).  They never
    change what the model ends with, so a run with subsets trains and selects
    exactly as one without.  Chapter 2, section 4.5, uses one half of the
    validation split for selection and the other half for the recalibration
    and the threshold.
    """

    def __init__(
        self,
        x_val: np.ndarray,
        y_val: np.ndarray,
        score: Callable | None = None,
        flips: Sequence[int] = (),
        subsets: Mapping[str, np.ndarray] | None = None,
    ):
        super().__init__()
        from .metrics import medmnist_auc

        self.x_val, self.y_val = x_val, np.asarray(y_val).reshape(-1)
        self.score = score or medmnist_auc
        self.flips = tuple(flips)
        self.history: list[float] = []
        self.best_score = -np.inf
        self.best_epoch = -1
        self._best_weights = None
        self.subsets = {}
        for name, idx in (subsets or {}).items():
            idx = np.asarray(idx)
            if (
                idx.ndim != 1
                or idx.dtype.kind not in "iu"
                or len(idx) == 0
                or idx.min() < 0
                or idx.max() >= len(self.y_val)
            ):
                raise ValueError(
                    f"KeepBest: subset {name!r} must be a non-empty 1-D array of indices into the "
                    f"{len(self.y_val)} validation cases"
                )
            self.subsets[name] = idx
        self.subset_history: dict[str, list[float]] = {n: [] for n in self.subsets}
        self.subset_best_score = {n: -np.inf for n in self.subsets}
        self.subset_best_epoch = {n: -1 for n in self.subsets}
        self.subset_weights: dict[str, list] = {}

    def on_epoch_end(self, epoch, logs=None):
        p = predict_proba(self.model, self.x_val, flips=self.flips)
        s = float(self.score(self.y_val, p))
        self.history.append(s)
        if logs is not None:
            logs["val_score"] = s
        weights = None
        if s > self.best_score:
            weights = [np.array(w) for w in self.model.get_weights()]
            self.best_score, self.best_epoch, self._best_weights = s, epoch, weights
        for name, idx in self.subsets.items():
            s_n = float(self.score(self.y_val[idx], p[idx]))
            self.subset_history[name].append(s_n)
            if s_n > self.subset_best_score[name]:
                weights = weights or [np.array(w) for w in self.model.get_weights()]
                self.subset_best_score[name], self.subset_best_epoch[name] = s_n, epoch
                self.subset_weights[name] = weights

    def on_train_end(self, logs=None):
        if self._best_weights is not None:
            self.model.set_weights(self._best_weights)


def fit_timed(model, x: np.ndarray, y: np.ndarray, *, epochs: int, batch_size: int, **fit_kwargs):
    """``model.fit`` that also returns the wall time and the number of training images seen.

    Returns ``(history_dict, seconds, images_seen)`` with ``images_seen = epochs × len(x)``
    (for the run report's throughput).
    """
    t0 = time.perf_counter()
    fit_kwargs.setdefault("verbose", course.fit_verbose())
    hist = model.fit(x, y, epochs=epochs, batch_size=batch_size, **fit_kwargs)
    seconds = time.perf_counter() - t0
    return dict(hist.history), seconds, int(epochs) * len(x)


@dataclass
class Ensemble:
    """Models trained with different seeds, with what the run report needs.

    ``alternatives[name]`` holds, per member, the weights selected on the
    validation subset ``name`` (see :class:`KeepBest`), and
    ``alternative_epochs[name]`` their epochs; ``predict(x, selection=name)``
    predicts with them instead of the members' own weights.
    """

    models: list
    seconds: float
    images_seen: int
    histories: list = field(default_factory=list)
    best_epochs: list = field(default_factory=list)
    val_scores: list = field(default_factory=list)
    flips: tuple = ()
    alternatives: dict = field(default_factory=dict)
    alternative_epochs: dict = field(default_factory=dict)

    def predict(self, x: np.ndarray, selection: str | None = None) -> np.ndarray:
        """Mean class probabilities of the members (each with its test-time flips).

        With ``selection``, each member predicts with the weights it kept for
        that validation subset; its own weights are restored afterwards.
        """
        if selection is None:
            return np.mean([predict_proba(m, x, flips=self.flips) for m in self.models], axis=0)
        if selection not in self.alternatives:
            known = ", ".join(map(repr, self.alternatives)) or "none (train_ensemble(..., select_on=...) makes them)"
            raise KeyError(f"Ensemble.predict: no selection {selection!r}; known: {known}")
        out = []
        for model, weights in zip(self.models, self.alternatives[selection]):
            own = model.get_weights()
            model.set_weights(weights)
            try:
                out.append(predict_proba(model, x, flips=self.flips))
            finally:
                model.set_weights(own)
        return np.mean(out, axis=0)


def train_ensemble(
    build: Callable[[], object],
    x_train: np.ndarray,
    y_train: np.ndarray,
    x_val: np.ndarray,
    y_val: np.ndarray,
    *,
    seeds: Sequence[int],
    epochs: int,
    batch_size: int,
    lr: float,
    weight_decay: float,
    n_classes: int,
    warmup_epochs: int = 1,
    label_smoothing: float = 0.0,
    class_weight: dict | None = None,
    flips: Sequence[int] = (),
    score: Callable | None = None,
    select_on: Mapping[str, np.ndarray] | None = None,
) -> Ensemble:
    """Train one model per seed (``build()`` after seeding), each selected on the validation score.

    Every member is compiled with :func:`compile_classifier`, trained with
    :func:`fit_timed` and ends with the weights of its best validation epoch
    (:class:`KeepBest`).  Seeds make the run repeatable.  ``select_on``
    (name → indices into the validation set) also keeps, per member, the
    weights of the best epoch on each subset (``Ensemble.alternatives``),
    without changing the members' own selection.
    """

    y_onehot = keras.utils.to_categorical(np.asarray(y_train).reshape(-1), n_classes)
    steps = int(np.ceil(len(x_train) / batch_size))
    out = Ensemble(models=[], seconds=0.0, images_seen=0, flips=tuple(flips))
    for seed in seeds:
        keras.utils.set_random_seed(int(seed))
        model = compile_classifier(
            build(),
            lr=lr,
            weight_decay=weight_decay,
            epochs=epochs,
            steps_per_epoch=steps,
            warmup_epochs=warmup_epochs,
            label_smoothing=label_smoothing,
        )
        keep = KeepBest(x_val, y_val, score=score, flips=flips, subsets=select_on)
        hist, secs, seen = fit_timed(
            model,
            x_train,
            y_onehot,
            epochs=epochs,
            batch_size=batch_size,
            callbacks=[keep],
            class_weight=class_weight,
            shuffle=True,
        )
        out.models.append(model)
        out.seconds += secs
        out.images_seen += seen
        out.histories.append(dict(hist, val_score=keep.history))
        out.best_epochs.append(keep.best_epoch)
        out.val_scores.append(keep.best_score)
        for name in keep.subsets:
            out.alternatives.setdefault(name, []).append(keep.subset_weights[name])
            out.alternative_epochs.setdefault(name, []).append(keep.subset_best_epoch[name])
    return out


# ---------------------------------------------------------------------------
# Grad-CAM
# ---------------------------------------------------------------------------


def _feature_layer_name(model) -> str:
    """The last layer whose output is a 4-D feature map (N, H, W, C)."""
    for layer in reversed(model.layers):
        shape = getattr(layer, "output", None)
        shape = getattr(shape, "shape", None)
        if shape is not None and len(shape) == 4 and not layer.name.startswith("image"):
            return layer.name
    raise ValueError("the model has no layer with a 4-D (N, H, W, C) output to compute Grad-CAM on")


def _head_gradients(head, feats, onehot):
    """d(sum of onehot · head(feats))/d feats, with the active backend's automatic differentiation."""

    backend = keras.backend.backend()
    if backend == "tensorflow":
        import tensorflow as tf

        a = tf.convert_to_tensor(feats)
        with tf.GradientTape() as tape:
            tape.watch(a)
            score = tf.reduce_sum(head(a, training=False) * onehot)
        grads = tape.gradient(score, a)
    elif backend == "jax":
        import jax
        import jax.numpy as jnp

        def score(a):
            return jnp.sum(head(a, training=False) * onehot)

        grads = jax.grad(score)(jnp.asarray(feats))
    elif backend == "torch":
        import torch

        a = keras.ops.convert_to_tensor(feats).detach().requires_grad_(True)
        score = (head(a, training=False) * keras.ops.convert_to_tensor(onehot)).sum()
        (grads,) = torch.autograd.grad(score, a)
    else:
        raise NotImplementedError(f"grad_cam supports the tensorflow, jax and torch backends, not {backend!r}")
    return keras.ops.convert_to_numpy(grads)


def grad_cam(
    model,
    images: np.ndarray,
    class_index: int | Sequence[int] | None = None,
    *,
    layer: str | None = None,
    output: str | None = "logits",
    upsample: bool = True,
) -> np.ndarray:
    """Grad-CAM heatmaps (Selvaraju et al., 2017), one per image, scaled to [0, 1].

    For class ``c`` with score ``y_c`` (the pre-softmax logit of layer
    ``output``; the model's own output if no such layer exists) and feature
    maps ``A_k`` of ``layer`` (default ``last_conv`` if present, else the last
    4-D layer), the weights are ``α_k = mean_ij ∂y_c/∂A_k[i, j]`` and the map
    is ``ReLU(Σ_k α_k A_k)``, bilinearly resized to the input size (when
    ``upsample``) and divided by its maximum (a map that is zero everywhere
    stays zero).  ``class_index`` is one class for all images, one per image,
    or ``None`` for each image's predicted class.  Returns ``(N, H, W)``.

    The gradient uses ``tf.GradientTape`` (TensorFlow), ``jax.grad`` (JAX) or
    ``torch.autograd`` (PyTorch).  The model is split at ``layer`` into a
    feature extractor and a head, so the scores must depend on the input only
    through that layer (true for a plain convolutional trunk + classifier).
    """

    x = np.asarray(images, dtype="float32")
    if x.ndim == 3:
        x = x[None]
    names = {l.name for l in model.layers}
    layer = layer or ("last_conv" if "last_conv" in names else _feature_layer_name(model))
    feat_tensor = model.get_layer(layer).output
    out_tensor = model.get_layer(output).output if output and output in names else model.outputs[0]
    inputs = model.inputs[0] if len(model.inputs) == 1 else model.inputs
    features = keras.Model(inputs, feat_tensor)
    head = keras.Model(feat_tensor, out_tensor)
    feats = keras.ops.convert_to_numpy(features(x, training=False)).astype("float32")
    scores = keras.ops.convert_to_numpy(head(feats, training=False))
    n, n_classes = scores.shape
    if class_index is None:
        probs = keras.ops.convert_to_numpy(model(x, training=False))
        cls = probs.argmax(axis=1)
    else:
        cls = np.broadcast_to(np.asarray(class_index, dtype=int), (n,))
    onehot = np.eye(n_classes, dtype="float32")[cls]
    grads = _head_gradients(head, feats, onehot)
    alpha = grads.mean(axis=(1, 2), keepdims=True)  # (N, 1, 1, C)
    cam = np.maximum((alpha * feats).sum(axis=-1), 0.0)  # (N, h, w)
    if upsample and cam.shape[1:] != x.shape[1:3]:
        cam = keras.ops.convert_to_numpy(
            keras.ops.image.resize(cam[..., None], x.shape[1:3], interpolation="bilinear")
        )[..., 0]
        cam = np.maximum(cam, 0.0)
    peak = cam.max(axis=(1, 2), keepdims=True)
    return np.where(peak > 0, cam / np.where(peak > 0, peak, 1.0), 0.0).astype("float32")


def mass_inside(cam: np.ndarray, mask: np.ndarray) -> np.ndarray:
    """Fraction of each heatmap's total mass that falls inside ``mask`` (same shape, boolean)."""
    cam = np.asarray(cam, dtype="float64")
    mask = np.broadcast_to(np.asarray(mask, dtype=bool), cam.shape)
    total = cam.reshape(len(cam), -1).sum(axis=1)
    inside = np.where(mask, cam, 0.0).reshape(len(cam), -1).sum(axis=1)
    return np.where(total > 0, inside / np.where(total > 0, total, 1.0), np.nan)


def map_correlation(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """Pearson correlation between two stacks of maps, one value per pair (NaN if a map is constant)."""
    a = np.asarray(a, dtype="float64").reshape(len(a), -1)
    b = np.asarray(b, dtype="float64").reshape(len(b), -1)
    a = a - a.mean(axis=1, keepdims=True)
    b = b - b.mean(axis=1, keepdims=True)
    den = np.sqrt((a**2).sum(axis=1) * (b**2).sum(axis=1))
    with np.errstate(invalid="ignore", divide="ignore"):
        return np.where(den > 0, (a * b).sum(axis=1) / den, np.nan)


# ---------------------------------------------------------------------------
# figures
# ---------------------------------------------------------------------------


def image_grid(
    images: np.ndarray,
    titles: Sequence[str] | None = None,
    *,
    ncols: int = 8,
    size: float = 1.3,
    cmap: str = "gray",
    overlay: np.ndarray | None = None,
    suptitle: str | None = None,
):
    """A matplotlib figure with ``images`` in a grid (optional titles and a heatmap ``overlay``)."""
    import matplotlib.pyplot as plt

    images = np.asarray(images)
    n = len(images)
    nrows = int(np.ceil(n / ncols))
    fig, axes = plt.subplots(
        nrows, ncols, figsize=(ncols * size, nrows * size * (1.25 if titles is not None else 1)), squeeze=False
    )
    for i, ax in enumerate(axes.ravel()):
        ax.axis("off")
        if i >= n:
            continue
        img = images[i]
        if img.ndim == 3 and img.shape[-1] == 1:
            img = img[..., 0]
        ax.imshow(img, cmap=cmap if img.ndim == 2 else None, vmin=0, vmax=255 if img.dtype == np.uint8 else 1)
        if overlay is not None:
            ax.imshow(overlay[i], cmap="jet", alpha=0.4, vmin=0, vmax=1)
        if titles is not None:
            ax.set_title(titles[i], fontsize=7)
    if suptitle:
        fig.suptitle(suptitle, fontsize=10)
    fig.tight_layout()
    return fig


def plot_history(histories: dict[str, dict], keys: Sequence[str] = ("loss", "accuracy"), *, title: str = ""):
    """Learning curves: one panel per key, one line per run (``val_<key>`` dashed when present)."""
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(1, len(keys), figsize=(4.2 * len(keys), 3.2), squeeze=False)
    for ax, key in zip(axes[0], keys):
        for i, (name, h) in enumerate(histories.items()):
            color = f"C{i}"
            if key in h:
                ax.plot(np.arange(1, len(h[key]) + 1), h[key], color=color, label=f"{name} train")
            if f"val_{key}" in h:
                ax.plot(
                    np.arange(1, len(h[f"val_{key}"]) + 1),
                    h[f"val_{key}"],
                    "--",
                    color=color,
                    label=f"{name} validation",
                )
        ax.set_xlabel("epoch")
        ax.set_ylabel(key)
        ax.grid(alpha=0.3)
    axes[0][0].legend(fontsize=7)
    if title:
        fig.suptitle(title)
    fig.tight_layout()
    return fig
