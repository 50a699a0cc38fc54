"""Chapter 3: segmentation with U-Net and Attention U-Net, its losses, metrics and data splits.

What the field uses (and what this module builds)
-------------------------------------------------
* **U-Net** (Ronneberger, Fischer & Brox, MICCAI 2015): an encoder of convolution
  blocks and poolings, a decoder of up-samplings, and *skip connections* that
  concatenate encoder features to the decoder at each resolution
  (:func:`build_unet`).
* **Attention gates** (Attention U-Net, Oktay et al. 2018): before a skip
  connection is concatenated, it is multiplied by coefficients
  ``alpha in [0, 1]`` computed from the skip features ``x`` and the coarser
  decoder features ``g`` (the *gating signal*)::

      q     = relu(W_x * x  +  W_g * g  +  b)        (W_x: 2x2 conv, stride 2; W_g: 1x1 conv)
      alpha = sigmoid(psi * q + b_psi)               (psi: 1x1 conv to one channel)
      x_hat = x * upsample(alpha)                    (bilinear, back to x's resolution)

  (:func:`attention_gate`, ``build_unet(..., attention_gates=True)``;
  :func:`attention_maps` returns the ``alpha`` maps of a trained model).
* **Self-attention** (Vaswani et al. 2017), ``softmax(Q K^T / sqrt(d_k)) V``,
  applied to the bottleneck's feature vectors as tokens, with a residual
  connection (:func:`self_attention_block`, ``build_unet(..., self_attention=True)``),
  built on :class:`keras.layers.MultiHeadAttention`.

Losses (``keras.ops`` only): :func:`soft_dice_loss` (plain sums; ``squared=True`` for V-Net's
squared denominator) and :func:`dice_bce_loss`.
Metrics on NumPy masks: :func:`dice`, :func:`iou`, :func:`hd95` (by default the larger of the
two directed 95th percentiles, as MONAI computes it; ``convention="pooled"`` gives MedPy's
pooled version), :func:`average_surface_distance`, :func:`segmentation_scores`; paired comparisons with
bootstrap intervals and over several training seeds are
:func:`utils.metrics.paired_difference_ci` and :func:`utils.metrics.compare_over_seeds`.
Data: the nuclei image is :func:`utils.data.load_nuclei` (the 2018 Data Science Bowl
image that ships in the stardist wheel); here are :func:`phantom_set` (synthetic lesions with exact masks),
:func:`region_split` / :func:`extract_tiles` (tiles split by region, never
overlapping; :func:`overlap_pixels` proves it).

Conventions for empty masks (documented and tested)
----------------------------------------------------
* ``dice`` and ``iou``: both masks empty -> ``1.0`` (a correct "nothing here");
  exactly one empty -> ``0.0``.
* ``hd95`` / ``hausdorff`` / ``average_surface_distance``: both empty -> ``0.0``;
  exactly one empty -> the image diagonal (the largest distance possible in
  the image, in the units of ``spacing``), so that the miss is penalised and
  stays finite in means and confidence intervals (pass ``empty=np.nan`` to
  exclude such cases instead, and say so when reporting).
* Surfaces are the mask's boundary pixels: foreground pixels with at least
  one 4-connected background neighbour (the image border counts as
  background).  Distances are Euclidean between pixel centres
  (:func:`scipy.ndimage.distance_transform_edt`).
"""

from __future__ import annotations

import time

import numpy as np
from scipy import ndimage

from . import course

__all__ = [
    "normalize_percentile",
    "phantom_set",
    "tile_boxes",
    "region_split",
    "extract_tiles",
    "overlap_pixels",
    "split_by_image",
    "conv_block",
    "attention_gate",
    "self_attention_block",
    "build_unet",
    "attention_maps",
    "soft_dice_loss",
    "dice_bce_loss",
    "dice",
    "iou",
    "HD_CONVENTIONS",
    "hausdorff",
    "hd95",
    "average_surface_distance",
    "segmentation_scores",
    "mean_inside_outside",
    "augment_d4",
    "train_segmenter",
    "predict_masks",
]


# ---------------------------------------------------------------------------
# data
# ---------------------------------------------------------------------------


def normalize_percentile(image, low: float = 1.0, high: float = 99.8) -> np.ndarray:
    """Scale ``image`` so that its ``low``/``high`` percentiles map to 0/1 (float32, not clipped)."""
    x = np.asarray(image, dtype=np.float32)
    lo, hi = np.percentile(x, [low, high])
    return ((x - lo) / max(float(hi - lo), 1e-6)).astype(np.float32)


def phantom_set(n: int, size: int = 64, seed: int = 0, **kwargs) -> tuple[np.ndarray, np.ndarray]:
    """Images ``(n, size, size, 1)`` float32 and masks ``(n, size, size, 1)`` float32 of lesion phantoms.

    A thin wrapper of :func:`utils.phantoms.make_lesion_phantoms` (same
    determinism: the first ``m`` of ``n`` images equal a batch of ``m``);
    defaults suited to 64x64 images: 1-2 lesions of radius 3-6 pixels.
    Extra keyword arguments go to ``make_lesion_phantoms``.
    """
    from .phantoms import make_lesion_phantoms

    params = dict(n_lesions=(1, 2), radius=(3, 6), contrast=(0.15, 0.4))
    params.update(kwargs)
    batch = make_lesion_phantoms(n, size=size, seed=seed, **params)
    return batch.images[..., None].astype(np.float32), batch.masks[..., None].astype(np.float32)


# ---------------------------------------------------------------------------
# splits that cannot leak
# ---------------------------------------------------------------------------


def tile_boxes(shape, tile: int) -> np.ndarray:
    """Non-overlapping ``tile x tile`` boxes ``(r0, c0, r1, c1)`` (half-open) covering ``shape``.

    Rows/columns that do not fill a whole tile at the bottom/right are left out.
    """
    h, w = int(shape[0]), int(shape[1])
    if tile < 1 or tile > min(h, w):
        raise ValueError(f"tile must be in [1, {min(h, w)}] for an image of shape {(h, w)}, got {tile}")
    return np.array(
        [(r, c, r + tile, c + tile) for r in range(0, h - tile + 1, tile) for c in range(0, w - tile + 1, tile)],
        dtype=np.int64,
    )


def region_split(shape, tile: int, test_region) -> tuple[np.ndarray, np.ndarray]:
    """Split the tiles of one image into train and test **by region**.

    ``test_region = (r0, c0, r1, c1)`` (half-open, pixels) is held out: a tile
    goes to the test set if it lies inside it, to the training set if it lies
    wholly outside it; tiles that straddle its edge are dropped (so that no
    pixel of a test tile is ever seen in training).  Returns ``(train_boxes,
    test_boxes)``; :func:`overlap_pixels` of the two is 0 by construction.
    """
    r0, c0, r1, c1 = (int(v) for v in test_region)
    boxes = tile_boxes(shape, tile)
    inside = (boxes[:, 0] >= r0) & (boxes[:, 1] >= c0) & (boxes[:, 2] <= r1) & (boxes[:, 3] <= c1)
    outside = (boxes[:, 2] <= r0) | (boxes[:, 0] >= r1) | (boxes[:, 3] <= c0) | (boxes[:, 1] >= c1)
    if not inside.any():
        raise ValueError(f"no {tile}x{tile} tile fits inside the test region {test_region}")
    return boxes[outside], boxes[inside]


def extract_tiles(image: np.ndarray, boxes: np.ndarray) -> np.ndarray:
    """Stack the crops ``image[r0:r1, c0:c1]`` of ``boxes`` (all of one size) along a new first axis."""
    return np.stack([image[r0:r1, c0:c1] for r0, c0, r1, c1 in np.asarray(boxes)])


def overlap_pixels(shape, boxes_a: np.ndarray, boxes_b: np.ndarray) -> int:
    """Number of pixels covered by at least one box of ``boxes_a`` **and** one of ``boxes_b``."""
    a = np.zeros(tuple(shape[:2]), bool)
    b = np.zeros(tuple(shape[:2]), bool)
    for r0, c0, r1, c1 in np.asarray(boxes_a):
        a[r0:r1, c0:c1] = True
    for r0, c0, r1, c1 in np.asarray(boxes_b):
        b[r0:r1, c0:c1] = True
    return int((a & b).sum())


def split_by_image(n: int, n_test: int, seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    """Disjoint, sorted index arrays ``(train, test)`` of ``n`` images (or patients), ``n_test`` held out."""
    if not 0 < n_test < n:
        raise ValueError(f"n_test must be in (0, {n}), got {n_test}")
    perm = np.random.default_rng(seed).permutation(n)
    return np.sort(perm[n_test:]), np.sort(perm[:n_test])


# ---------------------------------------------------------------------------
# models (Keras 3: keras.layers and keras.ops only)
# ---------------------------------------------------------------------------


def conv_block(x, filters: int, name: str, batch_norm: bool = False):
    """Two 3x3 convolutions with ReLU (the U-Net's unit), optionally with batch normalisation.

    With ``batch_norm=True`` each convolution is followed by batch
    normalisation with momentum 0.9 (not Keras' 0.99), so that its moving
    statistics settle within a few dozen steps; with the default 0.99 and a
    short training budget they lag behind the weights, and a model that fits its
    training batches can predict nothing in inference mode.
    """
    from keras import layers

    for i in (1, 2):
        x = layers.Conv2D(
            filters, 3, padding="same", use_bias=not batch_norm, kernel_initializer="he_normal", name=f"{name}_conv{i}"
        )(x)
        if batch_norm:
            x = layers.BatchNormalization(momentum=0.9, name=f"{name}_bn{i}")(x)
        x = layers.Activation("relu", name=f"{name}_relu{i}")(x)
    return x


def attention_gate(x, g, inter_channels: int, name: str, *, open_bias: float = 0.0):
    """Additive attention gate (Oktay et al. 2018): return ``(x * alpha, alpha)``.

    ``x``: skip features (H, W, C_x); ``g``: gating features at half the
    resolution (H/2, W/2, C_g).  ``alpha`` (H, W, 1), in [0, 1], is the output
    of the layer named ``f"{name}_alpha"`` (used by :func:`attention_maps`).

    ``open_bias`` initialises the bias of the 1x1 convolution ``psi``: with the
    default 0 every gate starts near ``sigmoid(0) = 0.5`` and halves the skip
    features; a positive value (e.g. 3, ``alpha`` about 0.95) starts the gates
    open, so that the network starts as a plain U-Net and learns to suppress.
    """
    from keras import initializers, layers

    theta_x = layers.Conv2D(inter_channels, 2, strides=2, padding="same", use_bias=False, name=f"{name}_theta_x")(x)
    phi_g = layers.Conv2D(inter_channels, 1, name=f"{name}_phi_g")(g)
    q = layers.Activation("relu", name=f"{name}_relu")(layers.Add(name=f"{name}_add")([theta_x, phi_g]))
    psi = layers.Conv2D(
        1, 1, activation="sigmoid", bias_initializer=initializers.Constant(float(open_bias)), name=f"{name}_psi"
    )(q)
    alpha = layers.UpSampling2D(2, interpolation="bilinear", name=f"{name}_alpha")(psi)
    return layers.Multiply(name=f"{name}_gated")([x, alpha]), alpha


def self_attention_block(x, num_heads: int = 2, name: str = "bottleneck_mhsa"):
    """Multi-head self-attention over the pixels of a feature map, with a residual connection.

    The ``H*W`` feature vectors are the tokens: ``y = x + MHA(LN(x), LN(x))``.
    The feature map needs static height and width (``build_unet`` with a fixed
    input size).  The attention weights are available from the layer named
    ``f"{name}_mha"`` (``return_attention_scores=True``).
    """
    from keras import layers

    h, w, c = x.shape[1], x.shape[2], x.shape[3]
    if h is None or w is None:
        raise ValueError("self_attention_block needs a fixed input size, e.g. build_unet((64, 64, 1), ...)")
    tokens = layers.Reshape((h * w, c), name=f"{name}_tokens")(x)
    normed = layers.LayerNormalization(name=f"{name}_ln")(tokens)
    att = layers.MultiHeadAttention(num_heads=num_heads, key_dim=max(c // num_heads, 1), name=f"{name}_mha")(
        normed, normed
    )
    y = layers.Add(name=f"{name}_residual")([tokens, att])
    return layers.Reshape((h, w, c), name=f"{name}_map")(y)


def build_unet(
    input_shape=(None, None, 1),
    base_filters: int = 16,
    depth: int = 3,
    *,
    attention_gates: bool = False,
    self_attention: bool = False,
    batch_norm: bool = False,
    gate_open_bias: float = 0.0,
    name: str | None = None,
):
    """A 2-D U-Net (Ronneberger et al. 2015) with optional attention gates and bottleneck self-attention.

    ``depth`` poolings (so height and width must be multiples of ``2**depth``);
    filters ``base_filters * 2**level``; a sigmoid 1x1 convolution gives the
    foreground probability ``(H, W, 1)``.  ``attention_gates=True`` gates every
    skip connection with :func:`attention_gate` (the gating signal is the
    decoder feature map *before* it is up-sampled), which is the Attention
    U-Net of Oktay et al. (2018).  ``self_attention=True`` inserts
    :func:`self_attention_block` at the bottleneck (fixed input size needed).
    ``gate_open_bias`` is passed to every gate as ``open_bias``.
    """
    import keras
    from keras import layers

    if depth < 1:
        raise ValueError(f"depth must be >= 1, got {depth}")
    inputs = keras.Input(shape=input_shape, name="image")
    x, skips = inputs, []
    for level in range(depth):
        x = conv_block(x, base_filters * 2**level, f"enc{level}", batch_norm)
        skips.append(x)
        x = layers.MaxPooling2D(2, name=f"pool{level}")(x)
    x = conv_block(x, base_filters * 2**depth, "bottleneck", batch_norm)
    if self_attention:
        x = self_attention_block(x)
    for level in reversed(range(depth)):
        filters = base_filters * 2**level
        skip = skips[level]
        if attention_gates:
            skip, _ = attention_gate(skip, x, max(filters // 2, 1), name=f"att{level}", open_bias=gate_open_bias)
        x = layers.Conv2DTranspose(filters, 2, strides=2, padding="same", name=f"up{level}")(x)
        x = layers.Concatenate(name=f"concat{level}")([x, skip])
        x = conv_block(x, filters, f"dec{level}", batch_norm)
    outputs = layers.Conv2D(1, 1, activation="sigmoid", name="probability")(x)
    default = "attention_unet" if attention_gates else "unet"
    return keras.Model(inputs, outputs, name=name or (default + ("_mhsa" if self_attention else "")))


def attention_maps(model, images, batch_size: int = 8) -> dict[str, np.ndarray]:
    """The attention-gate coefficients ``alpha`` of ``model`` on ``images``: ``{layer name: (N, H, W)}``.

    Each map has the resolution of the skip connection it gates (``att0`` is
    full resolution).  Raises ``ValueError`` for a model without gates.
    """
    import keras

    names = sorted(layer.name for layer in model.layers if layer.name.endswith("_alpha"))
    if not names:
        raise ValueError(f"model {model.name!r} has no attention gates (build it with attention_gates=True)")
    probe = keras.Model(model.inputs, [model.get_layer(n).output for n in names])
    outs = probe.predict(np.asarray(images, np.float32), batch_size=batch_size, verbose=0)
    outs = outs if isinstance(outs, (list, tuple)) else [outs]
    return {n.removesuffix("_alpha"): np.asarray(o)[..., 0] for n, o in zip(names, outs)}


# ---------------------------------------------------------------------------
# losses (keras.ops only, so they run on every backend)
# ---------------------------------------------------------------------------


def soft_dice_loss(y_true, y_pred, smooth: float = 1.0, *, squared: bool = False):
    """Soft Dice loss, averaged over the images of the batch.

    ``1 - (2 sum(y p) + s) / (sum(y) + sum(p) + s)`` per image (sums over
    height, width and channels), with probabilities ``p`` in place of the
    binary prediction; ``s`` (``smooth``) keeps empty images defined (loss 0
    when both are empty).  This plain-sum form is the one of nnU-Net
    (Isensee et al. 2021) and the one-class case of the generalised Dice loss
    (Sudre et al. 2017); with ``smooth=0`` it equals
    ``keras.losses.Dice(axis=(1, 2, 3))`` (which adds ``epsilon`` instead).

    ``squared=True`` gives V-Net's form (Milletari, Navab & Ahmadi 2016), which squares
    the terms of the denominator: ``1 - (2 sum(y p) + s) / (sum(y^2) + sum(p^2) + s)``
    (``y^2 = y`` for binary masks, so only the predictions' term changes).
    """
    from keras import ops

    y_pred = ops.convert_to_tensor(y_pred)
    y_true = ops.cast(y_true, y_pred.dtype)
    axes = tuple(range(1, len(y_pred.shape)))
    inter = ops.sum(y_true * y_pred, axis=axes)
    if squared:
        denom = ops.sum(y_true * y_true, axis=axes) + ops.sum(y_pred * y_pred, axis=axes)
    else:
        denom = ops.sum(y_true, axis=axes) + ops.sum(y_pred, axis=axes)
    if smooth == 0:
        denom = denom + 1e-7
    return 1.0 - ops.mean((2.0 * inter + smooth) / (denom + smooth))


def dice_bce_loss(y_true, y_pred, smooth: float = 1.0, bce_weight: float = 1.0):
    """Soft Dice loss plus ``bce_weight`` times the mean binary cross-entropy (nnU-Net's default pairing)."""
    from keras import ops

    y_pred = ops.convert_to_tensor(y_pred)
    y_true = ops.cast(y_true, y_pred.dtype)
    p = ops.clip(y_pred, 1e-7, 1.0 - 1e-7)
    bce = -ops.mean(y_true * ops.log(p) + (1.0 - y_true) * ops.log(1.0 - p))
    return soft_dice_loss(y_true, y_pred, smooth) + bce_weight * bce


# ---------------------------------------------------------------------------
# metrics on binary NumPy masks
# ---------------------------------------------------------------------------


def _pair(a, b) -> tuple[np.ndarray, np.ndarray]:
    a, b = np.asarray(a).astype(bool), np.asarray(b).astype(bool)
    if a.shape != b.shape:
        raise ValueError(f"masks must have one shape, got {a.shape} and {b.shape}")
    return a, b


def dice(a, b) -> float:
    """Dice coefficient ``2|A∩B| / (|A| + |B|)`` of two binary masks; 1.0 when both are empty."""
    a, b = _pair(a, b)
    total = int(a.sum()) + int(b.sum())
    return 1.0 if total == 0 else 2.0 * int((a & b).sum()) / total


def iou(a, b) -> float:
    """Intersection over union (Jaccard) ``|A∩B| / |A∪B|``; 1.0 when both masks are empty."""
    a, b = _pair(a, b)
    union = int((a | b).sum())
    return 1.0 if union == 0 else int((a & b).sum()) / union


def _surface(m: np.ndarray) -> np.ndarray:
    """Boundary pixels: foreground with a 4-connected background neighbour (the border counts as background)."""
    structure = ndimage.generate_binary_structure(m.ndim, 1)
    inner = ndimage.binary_erosion(m, structure=structure, border_value=0)
    return m & ~inner


def _surface_distances(a, b, spacing) -> tuple[np.ndarray, np.ndarray] | None:
    """Distances from each surface pixel of ``a`` to ``b``'s surface and back (None if a mask is empty)."""
    sa, sb = _surface(a), _surface(b)
    if not sa.any() or not sb.any():
        return None
    dist_to_b = ndimage.distance_transform_edt(~sb, sampling=spacing)
    dist_to_a = ndimage.distance_transform_edt(~sa, sampling=spacing)
    return dist_to_b[sa], dist_to_a[sb]


def _empty_value(a: np.ndarray, b: np.ndarray, spacing, empty) -> float | None:
    if not a.any() and not b.any():
        return 0.0
    if not a.any() or not b.any():
        if empty is not None:
            return float(empty)
        sp = np.broadcast_to(np.asarray(spacing if spacing is not None else 1.0, float), (a.ndim,))
        return float(np.sqrt(np.sum((np.asarray(a.shape) * sp) ** 2)))
    return None


HD_CONVENTIONS = ("max", "pooled")


def hausdorff(a, b, spacing=None, *, percentile: float = 100.0, empty=None, convention: str = "max") -> float:
    """Symmetric Hausdorff distance between the surfaces of two masks (``percentile`` < 100: robust HD).

    Two conventions are in use for the percentile version, and they give different numbers when the two
    masks have different numbers of surface pixels or their errors are lopsided:

    * ``convention="max"`` (the default, and what chapter 3 reports): ``max(P_q(d(A→B)), P_q(d(B→A)))``,
      the larger of the two *directed* ``q``-th percentiles.  This is what MONAI's
      ``compute_hausdorff_distance(..., percentile=q)`` computes.
    * ``convention="pooled"``: ``P_q(d(A→B) ∪ d(B→A))``, the ``q``-th percentile of both sets of
      directed distances pooled into one.  This is what MedPy's ``hd95`` computes.

    ``P_q`` is :func:`numpy.percentile` with its default linear interpolation (both libraries use it).
    With ``percentile=100`` the two conventions agree (the classical Hausdorff distance).  See the module
    docstring for surfaces, distances and empty masks.
    """
    if convention not in HD_CONVENTIONS:
        raise ValueError(f"convention must be one of {HD_CONVENTIONS}, got {convention!r}")
    a, b = _pair(a, b)
    special = _empty_value(a, b, spacing, empty)
    if special is not None:
        return special
    d_ab, d_ba = _surface_distances(a, b, spacing)
    if convention == "pooled":
        return float(np.percentile(np.concatenate([d_ab, d_ba]), percentile))
    return float(max(np.percentile(d_ab, percentile), np.percentile(d_ba, percentile)))


def hd95(a, b, spacing=None, *, empty=None, convention: str = "max") -> float:
    """95th-percentile Hausdorff distance (HD95); by default the larger of the two directed 95th percentiles.

    ``convention="max"`` (default, used throughout chapter 3) is MONAI's definition;
    ``convention="pooled"`` (the 95th percentile of both directed distance sets pooled) is MedPy's.
    The two differ in general; see :func:`hausdorff`.
    """
    return hausdorff(a, b, spacing, percentile=95.0, empty=empty, convention=convention)


def average_surface_distance(a, b, spacing=None, *, empty=None) -> float:
    """Average symmetric surface distance (ASSD): the mean of all distances from each surface to the other."""
    a, b = _pair(a, b)
    special = _empty_value(a, b, spacing, empty)
    if special is not None:
        return special
    d_ab, d_ba = _surface_distances(a, b, spacing)
    return float((d_ab.sum() + d_ba.sum()) / (len(d_ab) + len(d_ba)))


def segmentation_scores(truth, pred, spacing=None, metrics=("dice", "iou", "hd95", "assd")) -> dict[str, np.ndarray]:
    """Per-case ``dice``, ``iou``, ``hd95`` and ``assd`` of two stacks of masks ``(N, H, W[, 1])``.

    ``metrics`` selects which (the distances cost the most; training's validation uses Dice only).
    HD95 is :func:`hd95` with its default convention (the larger of the two directed 95th percentiles).
    """
    t = np.asarray(truth).astype(bool)
    p = np.asarray(pred).astype(bool)
    if t.shape != p.shape:
        raise ValueError(f"truth and pred must have one shape, got {t.shape} and {p.shape}")
    if t.ndim == 4:
        t, p = t[..., 0], p[..., 0]
    funcs = {
        "dice": dice,
        "iou": iou,
        "hd95": lambda a, b: hd95(a, b, spacing),
        "assd": lambda a, b: average_surface_distance(a, b, spacing),
    }
    unknown = set(metrics) - set(funcs)
    if unknown:
        raise ValueError(f"unknown metrics {sorted(unknown)}; choose from {sorted(funcs)}")
    out = {k: [] for k in metrics}
    for a, b in zip(t, p):
        for k in metrics:
            out[k].append(funcs[k](a, b))
    return {k: np.asarray(v, float) for k, v in out.items()}


def mean_inside_outside(values, mask) -> tuple[float, float]:
    """Mean of ``values`` where ``mask`` is true and where it is false (e.g. attention coefficients on lesions)."""
    v = np.asarray(values, float)
    m = np.asarray(mask).astype(bool)
    if v.shape != m.shape:
        raise ValueError(f"values and mask must have one shape, got {v.shape} and {m.shape}")
    if m.all() or not m.any():
        raise ValueError("the mask must mark some pixels and leave some unmarked")
    return float(v[m].mean()), float(v[~m].mean())


def augment_d4(x: np.ndarray, y: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """The 8 flips/rotations by 90° of every image and mask (``(N, H, W, C)`` -> ``(8N, H, W, C)``, square tiles)."""
    xs, ys = [], []
    for k in range(4):
        for flip in (False, True):
            xa, ya = np.rot90(x, k, axes=(1, 2)), np.rot90(y, k, axes=(1, 2))
            if flip:
                xa, ya = xa[:, :, ::-1], ya[:, :, ::-1]
            xs.append(xa)
            ys.append(ya)
    return np.ascontiguousarray(np.concatenate(xs)), np.ascontiguousarray(np.concatenate(ys))


def train_segmenter(
    model,
    x,
    y,
    *,
    epochs: int,
    batch_size: int = 16,
    learning_rate: float = 2e-3,
    loss=None,
    seed: int = 0,
    verbose: int | None = None,
    validation=None,
    threshold: float = 0.5,
) -> dict:
    """Compile ``model`` with Adam and ``loss`` (default :func:`dice_bce_loss`), fit it, time it.

    ``seed`` seeds the shuffling and dropout of training; the initial weights were drawn when the model
    was built, so call ``keras.utils.set_random_seed`` before :func:`build_unet` for a repeatable run.

    ``validation = (x_val, y_val)``: after every epoch the mean per-image Dice of the masks
    ``probability > threshold`` on the validation images is computed, and at the end of training the
    model gets back the weights of the epoch with the highest validation Dice (the earliest, on a tie).
    The epoch (and so the checkpoint) is chosen on the validation set, never on a test set.

    Returns ``{"history": dict, "seconds": float, "images_per_second": float,
    "n_images_seen": int}`` (images seen = epochs x training images); with ``validation`` also
    ``"val_dice"`` (one value per epoch), ``"best_epoch"`` (1-based) and ``"best_val_dice"``.
    ``seconds`` includes the validation passes.
    """
    import keras

    keras.utils.set_random_seed(seed)
    model.compile(optimizer=keras.optimizers.Adam(learning_rate), loss=loss or dice_bce_loss)
    callbacks, tracker = [], None
    if validation is not None:
        x_val = np.asarray(validation[0], np.float32)
        y_val = np.asarray(validation[1])

        class _BestOnValidation(keras.callbacks.Callback):
            def __init__(self):
                super().__init__()
                self.scores, self.best, self.best_epoch, self.best_weights = [], -np.inf, 0, None

            def on_epoch_end(self, epoch, logs=None):
                prob = np.asarray(self.model.predict(x_val, batch_size=max(batch_size, 32), verbose=0))
                score = float(segmentation_scores(y_val, prob > threshold, metrics=("dice",))["dice"].mean())
                self.scores.append(score)
                if score > self.best:
                    self.best, self.best_epoch, self.best_weights = score, epoch + 1, self.model.get_weights()

            def on_train_end(self, logs=None):
                if self.best_weights is not None:
                    self.model.set_weights(self.best_weights)

        tracker = _BestOnValidation()
        callbacks.append(tracker)
    t0 = time.perf_counter()
    hist = model.fit(
        np.asarray(x, np.float32),
        np.asarray(y, np.float32),
        epochs=epochs,
        batch_size=batch_size,
        shuffle=True,
        callbacks=callbacks,
        verbose=course.fit_verbose() if verbose is None else verbose,
    )
    seconds = time.perf_counter() - t0
    seen = int(epochs * len(x))
    out = {
        "history": hist.history,
        "seconds": seconds,
        "n_images_seen": seen,
        "images_per_second": seen / seconds if seconds > 0 else float("nan"),
    }
    if tracker is not None:
        out.update(val_dice=tracker.scores, best_epoch=tracker.best_epoch, best_val_dice=tracker.best)
    return out


def predict_masks(model, x, threshold: float = 0.5, batch_size: int = 16) -> tuple[np.ndarray, np.ndarray]:
    """``(probabilities, binary masks)`` of ``model`` on ``x``, masks = ``probability > threshold`` (uint8)."""
    prob = np.asarray(model.predict(np.asarray(x, np.float32), batch_size=batch_size, verbose=0))
    return prob, (prob > threshold).astype(np.uint8)
