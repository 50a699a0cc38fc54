"""Chapter 4: lesion and target detection -- a CenterNet-style detector, its losses, FROC and COCO mAP.

What the field uses (and what this module builds)
-------------------------------------------------
* **One-stage detectors** predict boxes densely in one pass: RetinaNet (anchors plus the
  focal loss, Lin et al. 2017), YOLO (Redmon et al. 2016), and anchor-free **CenterNet**
  ("Objects as Points", Zhou et al. 2019), which predicts a heatmap of object centres plus
  the box size and a sub-cell offset at each centre.  :func:`build_centernet` is a small
  CenterNet for one class of small, roughly round targets (lesions, nodules, nuclei).
* **Two-stage detectors** (Faster R-CNN, Ren et al. 2015) first propose regions, then
  classify and refine them; medical variants such as Retina U-Net (Jaeger et al. 2020) and
  nnDetection (Baumgartner et al. 2021) add a segmentation loss or self-configuration.

Conventions (exact, and tested)
-------------------------------
Boxes
    ``(x0, y0, x1, y1)`` half-open pixel index ranges, as in :mod:`utils.phantoms`: the box
    covers the pixel centres ``x0 .. x1 - 1``; its width is ``x1 - x0`` and its centre is
    ``cx = (x0 + x1 - 1) / 2`` (pixel ``image[r, c]`` has its centre at ``(x, y) = (c, r)``).
    Predicted boxes are floats in the same convention.  For COCO (``[x, y, w, h]``) the box
    becomes ``[x0, y0, x1 - x0, y1 - y0]`` for ground truth and predictions alike.
Heatmap target (output stride ``R``)
    Cell ``(i, j)`` of the ``H/R x W/R`` output covers pixels ``jR .. jR + R - 1``; its
    centre is at pixel coordinate ``jR + (R - 1) / 2``.  A box centre ``cx`` maps to the
    continuous cell coordinate ``u = (cx - (R - 1)/2) / R``; the object's cell is
    ``j = floor(u + 0.5)`` and its offset ``u - j`` (in ``[-0.5, 0.5)``).  The heatmap is
    ``max_k exp(-((j - j_k)^2 + (i - i_k)^2) / (2 sigma_k^2))`` with
    ``sigma_k = max(min_sigma, sqrt(w_k h_k) / (6 R))`` (the object's diameter over 6, as in
    CenterNet), so it is exactly 1 at each object's cell and < 1 elsewhere.  Channels 1-2
    hold the size ``(w, h) / R`` and channels 3-4 the offset at the object's cell (0 elsewhere).
    Two objects in one cell cannot both be encoded: the larger one wins (documented limit).
Decoding
    Peaks are the cells equal to the 3x3 max-pooling of the heatmap (CenterNet's replacement
    for box non-maximum suppression), above ``score_min``, the ``top_k`` highest per image
    (:func:`decode`).  :func:`decode_nms` is the alternative that anchor and two-stage
    detectors use: every cell above ``score_min`` gives a box, and greedy box NMS
    (:func:`box_nms`, written in NumPy because the few lines are the lesson) removes the
    boxes that overlap a higher-scoring one.

Evaluation
----------
* :func:`froc` -- free-response ROC after LUNA16 (Setio et al. 2017): sensitivity at
  1/8, 1/4, 1/2, 1, 2, 4, 8 false positives per image and their mean (LUNA16's
  competition performance metric, "CPM").  LUNA16 counts false positives per 3-D CT
  scan; here an "image" is whatever the caller passes as one entry of the lists -- in
  chapter 4 a 64x64 tile (or a 64x64 cell of a larger image) -- so the same formula on
  different units: a CPM per 64x64 tile is not comparable with LUNA16's per-scan CPM.
  Hit criterion: a detection hits a lesion if its centre lies within
  ``hit_radius = (w + h) / 4`` (half the mean box side) of the lesion's centre; a detection
  that hits several lesions is assigned to the nearest one; detections that hit a lesion
  already hit by a higher-scoring detection are ignored (neither TP nor FP), as in LUNA16.
  The sensitivity at a rate ``f`` is the highest sensitivity of any threshold whose FP rate
  is ``<= f`` (a step curve; LUNA16 interpolates linearly, which differs slightly).
* :func:`coco_map` -- average precision at IoU 0.5 and at IoU 0.5:0.95 from pycocotools
  (its printing silenced).
* :func:`bootstrap_detection_ci` -- percentile CIs by resampling images;
  :func:`bootstrap_replicates` keeps every replicate and which images it drew, so that two
  detectors scored on the same resamples can be compared by their paired difference, and
  :func:`evaluate_detectors` does both for FROC and COCO AP of several detectors.

Baseline: :func:`blob_detect` (scale-normalised Laplacian of Gaussian via
``skimage.feature.blob_log``, with the LoG response as the score) and :func:`tune_blob`.
"""

from __future__ import annotations

import contextlib
import functools
import io
import itertools
import math
from collections.abc import Callable, Sequence
from dataclasses import dataclass

import numpy as np

from . import course, stats

FP_RATES = (0.125, 0.25, 0.5, 1.0, 2.0, 4.0, 8.0)

__all__ = [
    "FP_RATES",
    "box_centers",
    "box_iou",
    "box_nms",
    "heatmap_sigma",
    "encode_targets",
    "decode",
    "decode_numpy",
    "decode_nms",
    "build_centernet",
    "focal_loss",
    "centernet_focal_loss",
    "centernet_loss",
    "froc",
    "FROC",
    "froc_from_scores",
    "match_detections",
    "hit_index",
    "augment_d4",
    "threshold_at_fp_rate",
    "to_coco",
    "coco_map",
    "bootstrap_detection_ci",
    "blob_detect",
    "tune_blob",
    "boxes_of_instances",
    "assign_to_cells",
    "split_region",
    "METRICS",
    "detect_images",
    "keep_top",
    "blob_images",
    "froc_metrics",
    "point_metrics",
    "bootstrap_replicates",
    "evaluate_detectors",
    "results_table",
    "plot_froc",
    "detection_counts",
    "sensitivity_at",
    "plot_sensitivity_grid",
    "lesion_boxes",
    "outcome",
    "show_boxes",
    "draw_outcome",
]


# ---------------------------------------------------------------------------
# boxes
# ---------------------------------------------------------------------------


def _boxes(name: str, boxes) -> np.ndarray:
    b = np.asarray(boxes, dtype=np.float64)
    if b.size == 0:
        return np.zeros((0, 4))
    if b.ndim != 2 or b.shape[1] != 4:
        raise ValueError(f"{name} must be an (n, 4) array of (x0, y0, x1, y1) boxes, got shape {b.shape}")
    if not np.isfinite(b).all():
        raise ValueError(f"{name} must hold finite numbers")
    if (b[:, 2] < b[:, 0]).any() or (b[:, 3] < b[:, 1]).any():
        raise ValueError(f"{name} has boxes with x1 < x0 or y1 < y0: give them as (x0, y0, x1, y1)")
    return b


def box_centers(boxes) -> np.ndarray:
    """Centres ``(cx, cy) = ((x0 + x1 - 1) / 2, (y0 + y1 - 1) / 2)`` of half-open boxes, (n, 2)."""
    b = _boxes("boxes", boxes)
    return np.stack([(b[:, 0] + b[:, 2] - 1) / 2, (b[:, 1] + b[:, 3] - 1) / 2], axis=1)


def box_iou(boxes_a, boxes_b) -> np.ndarray:
    """Pairwise intersection over union of two sets of half-open boxes, ``(n_a, n_b)``.

    Area of ``(x0, y0, x1, y1)`` is ``(x1 - x0) * (y1 - y0)``, as in COCO's ``[x, y, w, h]``.
    """
    a, b = _boxes("boxes_a", boxes_a), _boxes("boxes_b", boxes_b)
    iw = np.clip(np.minimum(a[:, None, 2], b[None, :, 2]) - np.maximum(a[:, None, 0], b[None, :, 0]), 0, None)
    ih = np.clip(np.minimum(a[:, None, 3], b[None, :, 3]) - np.maximum(a[:, None, 1], b[None, :, 1]), 0, None)
    inter = iw * ih
    area_a = (a[:, 2] - a[:, 0]) * (a[:, 3] - a[:, 1])
    area_b = (b[:, 2] - b[:, 0]) * (b[:, 3] - b[:, 1])
    union = area_a[:, None] + area_b[None, :] - inter
    with np.errstate(invalid="ignore", divide="ignore"):
        return np.where(union > 0, inter / union, 0.0)


def box_nms(boxes, scores, iou_threshold: float = 0.5, max_keep: int | None = None) -> np.ndarray:
    """Greedy box non-maximum suppression: the indices of the boxes kept, highest score first.

    Take the highest-scoring box left, keep it, drop every remaining box whose IoU with it
    (:func:`box_iou`) is **above** ``iou_threshold``, repeat.  Ties in score keep the earlier
    box first (stable sort).  ``max_keep`` stops after that many boxes (the result is the same
    as the first ``max_keep`` of the full run).  Written in NumPy on purpose: these few lines are what
    ``torchvision.ops.nms`` or ``tf.image.non_max_suppression`` do, and chapter 4 teaches them.
    """
    b = _boxes("boxes", boxes)
    s = np.asarray(scores, float).reshape(-1)
    if len(s) != len(b):
        raise ValueError(f"boxes and scores differ in length: {len(b)} and {len(s)}")
    if not 0.0 <= float(iou_threshold) <= 1.0:
        raise ValueError(f"iou_threshold must be in [0, 1], got {iou_threshold}")
    order = np.argsort(-s, kind="stable")
    keep = []
    while len(order) and (max_keep is None or len(keep) < max_keep):
        best, rest = order[0], order[1:]
        keep.append(int(best))
        order = rest[box_iou(b[best : best + 1], b[rest])[0] <= iou_threshold]
    return np.asarray(keep, dtype=np.int64)


def boxes_of_instances(instances, min_area: int = 0) -> np.ndarray:
    """Half-open boxes ``(x0, y0, x1, y1)`` (int64) of the labelled objects of an instance map.

    Uses :func:`skimage.measure.regionprops` (labels need not be consecutive); objects with
    fewer than ``min_area`` pixels (e.g. slivers cut off by a crop) are left out.
    """
    from skimage.measure import regionprops

    inst = np.asarray(instances)
    if inst.ndim != 2 or not np.issubdtype(inst.dtype, np.integer):
        raise ValueError(f"instances must be a 2-D integer label map, got {inst.dtype} {inst.shape}")
    out = [(p.bbox[1], p.bbox[0], p.bbox[3], p.bbox[2]) for p in regionprops(inst) if p.area >= min_area]
    return np.asarray(out, dtype=np.int64).reshape(-1, 4)


def assign_to_cells(boxes, cells, scores=None):
    """Split boxes (and their scores) among cells ``(r0, c0, r1, c1)`` by the cell holding their centre.

    Returns a list with one ``(n_i, 4)`` array per cell (shifted into the cell's coordinates),
    or ``(boxes_list, scores_list)`` when ``scores`` is given.  Boxes whose centre lies in no
    cell are dropped.  Used to score one large image as many small "images" (for FP per image
    and for bootstrapping).
    """
    b = _boxes("boxes", boxes)
    c = box_centers(b)
    s = None if scores is None else np.asarray(scores, float).reshape(-1)
    out_b, out_s = [], []
    for r0, c0, r1, c1 in np.asarray(cells):
        inside = (c[:, 0] >= c0 - 0.5) & (c[:, 0] < c1 - 0.5) & (c[:, 1] >= r0 - 0.5) & (c[:, 1] < r1 - 0.5)
        out_b.append(b[inside] - np.array([c0, r0, c0, r0], float))
        if s is not None:
            out_s.append(s[inside])
    return out_b if s is None else (out_b, out_s)


def split_region(gt_boxes, det_boxes, det_scores, cells):
    """Score one large image as many small "images": split its lesions and detections among ``cells``.

    A lesion goes to the cell ``(r0, c0, r1, c1)`` that holds its centre.  A detection that hits
    a lesion (FROC criterion, :func:`hit_index`) goes to **that lesion's** cell, so that a lesion
    near a cell border and its detection are never split (which would count one miss and one
    false positive); any other detection goes to the cell that holds its own centre (dropped if
    none does).  Boxes are shifted into their cell's coordinates.  Returns
    ``(gt_list, det_list, score_list)``, one entry per cell, for :func:`froc` and :func:`coco_map`.
    """
    gt, det = _boxes("gt_boxes", gt_boxes), _boxes("det_boxes", det_boxes)
    s = np.asarray(det_scores, float).reshape(-1)
    if len(s) != len(det):
        raise ValueError(f"{len(det)} boxes but {len(s)} scores")
    cells = np.asarray(cells)

    def cell_of(centres):
        out = np.full(len(centres), -1)
        for k, (r0, c0, r1, c1) in enumerate(cells):
            inside = (
                (centres[:, 0] >= c0 - 0.5)
                & (centres[:, 0] < c1 - 0.5)
                & (centres[:, 1] >= r0 - 0.5)
                & (centres[:, 1] < r1 - 0.5)
            )
            out[inside & (out < 0)] = k
        return out

    gt_cell = cell_of(box_centers(gt)) if len(gt) else np.zeros(0, int)
    which = hit_index(gt, det)
    det_cell = cell_of(box_centers(det)) if len(det) else np.zeros(0, int)
    det_cell = np.where(which >= 0, gt_cell[np.maximum(which, 0)] if len(gt) else -1, det_cell)
    gts, dets, scores = [], [], []
    for k, (r0, c0, _r1, _c1) in enumerate(cells):
        shift = np.array([c0, r0, c0, r0], float)
        gts.append(gt[gt_cell == k] - shift)
        dets.append(det[det_cell == k] - shift)
        scores.append(s[det_cell == k])
    return gts, dets, scores


# ---------------------------------------------------------------------------
# heatmap targets
# ---------------------------------------------------------------------------


def _stride(stride) -> int:
    if isinstance(stride, bool) or not isinstance(stride, (int, np.integer)) or stride < 1:
        raise ValueError(f"stride must be a positive integer (the output stride R), got {stride!r}")
    return int(stride)


def heatmap_sigma(boxes, stride: int, min_sigma: float = 0.5) -> np.ndarray:
    """Gaussian width (in output cells) of each box's heatmap peak: ``max(min_sigma, sqrt(w h) / (6 R))``."""
    b = _boxes("boxes", boxes)
    r = _stride(stride)
    return np.maximum(min_sigma, np.sqrt((b[:, 2] - b[:, 0]) * (b[:, 3] - b[:, 1])) / (6.0 * r))


def encode_targets(boxes_per_image: Sequence, image_shape, stride: int = 2, min_sigma: float = 0.5) -> np.ndarray:
    """CenterNet training targets ``(N, H/R, W/R, 5)``: heatmap, size ``(w, h)/R``, offset ``(dx, dy)``.

    ``boxes_per_image`` is a list of ``(k_i, 4)`` half-open boxes (one array per image, possibly
    empty); ``image_shape`` is ``(H, W)``, both divisible by ``stride``.  See the module docstring
    for the exact encoding; :func:`decode` inverts it (``decode_numpy(encode_targets(...))``
    returns the boxes, with score 1, when no two objects share a cell).
    """
    r = _stride(stride)
    h, w = int(image_shape[0]), int(image_shape[1])
    if h % r or w % r:
        raise ValueError(f"image_shape {(h, w)} must be divisible by stride={r}; crop or pad the images")
    hh, ww = h // r, w // r
    out = np.zeros((len(boxes_per_image), hh, ww, 5), np.float32)
    ii, jj = np.mgrid[:hh, :ww]
    for n, boxes in enumerate(boxes_per_image):
        b = _boxes(f"boxes_per_image[{n}]", boxes)
        if not len(b):
            continue
        c = box_centers(b)
        u = (c - (r - 1) / 2.0) / r  # continuous cell coordinates (x, y)
        cell = np.floor(u + 0.5).astype(int)
        sig = heatmap_sigma(b, r, min_sigma)
        order = np.argsort((b[:, 2] - b[:, 0]) * (b[:, 3] - b[:, 1]), kind="stable")  # larger last = wins
        for k in order:
            j, i = cell[k]
            if not (0 <= i < hh and 0 <= j < ww):
                continue
            g = np.exp(-((jj - j) ** 2 + (ii - i) ** 2) / (2 * sig[k] ** 2))
            out[n, :, :, 0] = np.maximum(out[n, :, :, 0], g)
            out[n, i, j, 0] = 1.0
            out[n, i, j, 1:3] = ((b[k, 2] - b[k, 0]) / r, (b[k, 3] - b[k, 1]) / r)
            out[n, i, j, 3:5] = u[k] - cell[k]
    return out


def decode(outputs, stride: int = 2, top_k: int = 100, score_min: float = 0.05):
    """Boxes and scores from CenterNet outputs ``(N, H/R, W/R, 5)``, with ``keras.ops`` peak extraction.

    A cell is a detection if its heatmap value equals the 3x3 max-pooling around it (a
    local maximum -- this replaces box NMS, as in CenterNet) and is at least ``score_min``;
    at most ``top_k`` per image, highest first.  Returns ``(boxes_list, scores_list)`` of
    NumPy arrays (float boxes, half-open convention).  Runs on every Keras backend.
    """
    from keras import ops

    out = ops.convert_to_tensor(np.asarray(outputs, np.float32))
    heat = out[..., 0:1]
    pooled = ops.max_pool(heat, pool_size=3, strides=1, padding="same")
    peaks = ops.cast(ops.equal(heat, pooled), heat.dtype) * heat
    return decode_numpy(
        np.concatenate([np.asarray(ops.convert_to_numpy(peaks)), np.asarray(outputs)[..., 1:]], axis=-1),
        stride,
        top_k,
        score_min,
        peaks_done=True,
    )


def decode_numpy(outputs, stride: int = 2, top_k: int = 100, score_min: float = 0.05, *, peaks_done: bool = False):
    """NumPy twin of :func:`decode` (peaks with :func:`scipy.ndimage.maximum_filter`, 3x3)."""
    from scipy import ndimage

    r = _stride(stride)
    o = np.asarray(outputs, np.float32)
    if o.ndim != 4 or o.shape[-1] != 5:
        raise ValueError(f"outputs must have shape (N, H/R, W/R, 5), got {o.shape}")
    boxes_out, scores_out = [], []
    for x in o:
        heat = x[..., 0]
        if not peaks_done:
            heat = np.where(heat == ndimage.maximum_filter(heat, size=3, mode="constant", cval=-np.inf), heat, 0.0)
        ii, jj = np.nonzero(heat >= score_min)
        s = heat[ii, jj]
        keep = np.argsort(-s, kind="stable")[:top_k]
        ii, jj, s = ii[keep], jj[keep], s[keep]
        wr, hr, dx, dy = (x[ii, jj, k].astype(np.float64) for k in range(1, 5))
        cx = (jj + dx) * r + (r - 1) / 2.0
        cy = (ii + dy) * r + (r - 1) / 2.0
        wp, hp = np.maximum(wr * r, 1.0), np.maximum(hr * r, 1.0)
        boxes_out.append(
            np.stack([cx - (wp - 1) / 2, cy - (hp - 1) / 2, cx + (wp + 1) / 2, cy + (hp + 1) / 2], axis=1).reshape(
                -1, 4
            )
        )
        scores_out.append(s.astype(np.float64))
    return boxes_out, scores_out


def decode_nms(outputs, stride: int = 2, top_k: int = 100, score_min: float = 0.05, iou_threshold: float = 0.5):
    """Boxes and scores from CenterNet outputs with **box NMS** in place of peak extraction.

    Every cell whose heatmap value is at least ``score_min`` gives a box (size and offset read
    there, as in :func:`decode`); :func:`box_nms` at ``iou_threshold`` removes duplicates; the
    ``top_k`` highest kept boxes are returned.  Same output format as :func:`decode`.
    """
    o = np.asarray(outputs, np.float32)
    # peaks_done=True: every cell is a candidate; top_k covers all cells of an image
    boxes, scores = decode_numpy(
        o, stride, top_k=o.shape[1] * o.shape[2] if o.ndim == 4 else 1, score_min=score_min, peaks_done=True
    )
    out_b, out_s = [], []
    for b, s in zip(boxes, scores):
        keep = box_nms(b, s, iou_threshold, max_keep=top_k)
        out_b.append(b[keep].reshape(-1, 4))
        out_s.append(s[keep])
    return out_b, out_s


# ---------------------------------------------------------------------------
# model
# ---------------------------------------------------------------------------


def build_centernet(
    input_shape=(None, None, 1),
    base_filters: int = 16,
    depth: int = 3,
    stride: int = 2,
    prior: float = 0.05,
    name: str = "centernet",
):
    """A small CenterNet (Zhou et al. 2019) for one class: encoder-decoder, three heads, one output.

    The encoder has ``depth`` poolings (input sides must be multiples of ``2**depth``); the
    decoder up-samples with skip connections back to output stride ``stride`` (2 or 4 ...).
    Heads (3x3 conv + ReLU, then 1x1 conv): a sigmoid **heatmap** (bias initialised to
    ``-log((1 - prior) / prior)``, RetinaNet's prior trick, so training starts by predicting
    "background" everywhere), the box **size** ``(w, h)/R`` (linear; decoding clips it at 1 pixel) and the
    sub-cell **offset**.  The output is their concatenation, ``(H/R, W/R, 5)``, the layout of
    :func:`encode_targets`.
    """
    import keras
    from keras import layers

    r = _stride(stride)
    up_levels = int(round(math.log2(r)))
    if 2**up_levels != r or up_levels > depth:
        raise ValueError(f"stride must be a power of 2 no larger than 2**depth={2**depth}, got {stride}")
    if not 0 < prior < 1:
        raise ValueError(f"prior must be in (0, 1), got {prior}")

    def block(x, f, tag):
        for i in (1, 2):
            x = layers.Conv2D(f, 3, padding="same", kernel_initializer="he_normal", name=f"{tag}_conv{i}")(x)
            x = layers.Activation("relu", name=f"{tag}_relu{i}")(x)
        return x

    inputs = keras.Input(shape=input_shape, name="image")
    x, skips = inputs, []
    for level in range(depth):
        x = block(x, base_filters * 2**level, f"enc{level}")
        skips.append(x)
        x = layers.MaxPooling2D(2, name=f"pool{level}")(x)
    x = block(x, base_filters * 2**depth, "bottleneck")
    for level in reversed(range(up_levels, depth)):
        f = base_filters * 2**level
        x = layers.Conv2DTranspose(f, 2, strides=2, padding="same", name=f"up{level}")(x)
        x = layers.Concatenate(name=f"concat{level}")([x, skips[level]])
        x = block(x, f, f"dec{level}")
    bias = -math.log((1 - prior) / prior)

    def head(channels, activation, tag, bias_init="zeros"):
        h = layers.Conv2D(base_filters * 2, 3, padding="same", activation="relu", name=f"{tag}_conv")(x)
        return layers.Conv2D(channels, 1, activation=activation, bias_initializer=bias_init, name=tag)(h)

    heat = head(1, "sigmoid", "heatmap", keras.initializers.Constant(bias))
    size = head(2, None, "size")
    offset = head(2, None, "offset")
    outputs = layers.Concatenate(name="centernet_output")([heat, size, offset])
    return keras.Model(inputs, outputs, name=name)


# ---------------------------------------------------------------------------
# losses (keras.ops only)
# ---------------------------------------------------------------------------

_EPS = 1e-7


def focal_loss(y_true, y_pred, gamma: float = 2.0, alpha: float | None = None):
    """Binary focal loss (Lin et al. 2017), averaged over all elements.

    ``FL = -w_t (1 - p_t)^gamma log(p_t)`` with ``p_t = p`` where ``y = 1`` and ``1 - p`` where
    ``y = 0``, and ``w_t = alpha`` / ``1 - alpha`` (no weight when ``alpha`` is None).  With
    probabilities clipped to ``[1e-7, 1 - 1e-7]`` it equals
    ``keras.losses.BinaryFocalCrossentropy(gamma=gamma, alpha=alpha, apply_class_balancing=alpha is not None)``
    for binary ``y``; for soft ``y`` Keras uses ``(1 - p_t)`` with the soft ``p_t``.
    """
    from keras import ops

    p = ops.clip(ops.convert_to_tensor(y_pred), _EPS, 1.0 - _EPS)
    y = ops.cast(y_true, p.dtype)
    p_t = y * p + (1.0 - y) * (1.0 - p)
    bce = -(y * ops.log(p) + (1.0 - y) * ops.log(1.0 - p))
    loss = ops.power(1.0 - p_t, gamma) * bce
    if alpha is not None:
        loss = (y * alpha + (1.0 - y) * (1.0 - alpha)) * loss
    return ops.mean(loss)


def centernet_focal_loss(y_true, y_pred, alpha: float = 2.0, beta: float = 4.0):
    """CenterNet's penalty-reduced focal loss on a Gaussian heatmap (Law & Deng 2018; Zhou et al. 2019).

    ``L = -1/N sum { (1 - p)^alpha log p                  where y = 1 (object centres)``
    ``              (1 - y)^beta p^alpha log(1 - p)      elsewhere }``,
    ``N`` = number of centres in the batch (at least 1).  Near a centre (``y`` close to 1) the
    factor ``(1 - y)^beta`` reduces the penalty for a high score.  With ``beta = 0`` and binary
    ``y`` it is the focal loss with ``gamma = alpha``, summed and divided by ``N`` instead of
    averaged over all cells.
    """
    from keras import ops

    p = ops.clip(ops.convert_to_tensor(y_pred), _EPS, 1.0 - _EPS)
    y = ops.cast(y_true, p.dtype)
    pos = ops.cast(ops.greater_equal(y, 1.0), p.dtype)
    pos_loss = pos * ops.power(1.0 - p, alpha) * ops.log(p)
    neg_loss = (1.0 - pos) * ops.power(1.0 - y, beta) * ops.power(p, alpha) * ops.log(1.0 - p)
    n = ops.maximum(ops.sum(pos), 1.0)
    return -(ops.sum(pos_loss) + ops.sum(neg_loss)) / n


def centernet_loss(size_weight: float = 0.1, offset_weight: float = 1.0, alpha: float = 2.0, beta: float = 4.0):
    """The CenterNet training loss for :func:`build_centernet` outputs and :func:`encode_targets` targets.

    ``L = L_heatmap + size_weight * L_size + offset_weight * L_offset``, the L1 losses taken
    only at object centres (target heatmap == 1) and divided by their number, CenterNet's
    weights by default.  Returns a function ``loss(y_true, y_pred)`` for ``model.compile``.
    """
    from keras import ops

    def loss(y_true, y_pred):
        y_pred = ops.convert_to_tensor(y_pred)
        y_true = ops.cast(y_true, y_pred.dtype)
        heat = centernet_focal_loss(y_true[..., 0], y_pred[..., 0], alpha, beta)
        pos = ops.cast(ops.greater_equal(y_true[..., 0:1], 1.0), y_pred.dtype)
        n = ops.maximum(ops.sum(pos), 1.0)
        l_size = ops.sum(pos * ops.abs(y_true[..., 1:3] - y_pred[..., 1:3])) / n
        l_off = ops.sum(pos * ops.abs(y_true[..., 3:5] - y_pred[..., 3:5])) / n
        return heat + size_weight * l_size + offset_weight * l_off

    loss.__name__ = "centernet_loss"
    return loss


# ---------------------------------------------------------------------------
# FROC
# ---------------------------------------------------------------------------


def _lists(gt_boxes, det_boxes, det_scores):
    if not (len(gt_boxes) == len(det_boxes) == len(det_scores)):
        raise ValueError(
            f"gt_boxes, det_boxes and det_scores need one entry per image, got "
            f"{len(gt_boxes)}, {len(det_boxes)} and {len(det_scores)}"
        )
    gts = [_boxes(f"gt_boxes[{i}]", g) for i, g in enumerate(gt_boxes)]
    dets = [_boxes(f"det_boxes[{i}]", d) for i, d in enumerate(det_boxes)]
    scores = [np.asarray(s, float).reshape(-1) for s in det_scores]
    for i, (d, s) in enumerate(zip(dets, scores)):
        if len(d) != len(s):
            raise ValueError(f"image {i}: {len(d)} boxes but {len(s)} scores")
    return gts, dets, scores


def match_detections(gt, det, scores) -> tuple[np.ndarray, np.ndarray]:
    """LUNA16-style matching in one image: ``(gt_scores, fp_scores)``.

    ``gt_scores[j]`` is the highest score of a detection that hits lesion ``j`` (``-inf`` if
    none does); ``fp_scores`` are the scores of detections that hit no lesion.  A detection
    hits lesion ``j`` if its centre is within ``(w_j + h_j) / 4`` of the lesion's centre
    (nearest lesion if several).  Extra hits on a lesion are ignored.
    """
    gt = _boxes("gt", gt)
    s = np.asarray(scores, float).reshape(-1)
    which = hit_index(gt, det)
    if len(which) != len(s):
        raise ValueError(f"{len(which)} detections but {len(s)} scores")
    gt_scores = np.full(len(gt), -np.inf)
    for k in np.flatnonzero(which >= 0):
        gt_scores[which[k]] = max(gt_scores[which[k]], s[k])
    return gt_scores, s[which < 0]


def hit_index(gt, det) -> np.ndarray:
    """For each detection, the index of the lesion it hits (FROC hit criterion), or -1 for a false positive.

    A detection hits lesion ``j`` if its centre is within ``(w_j + h_j) / 4`` of the lesion's
    centre; if it is within reach of several lesions, the nearest one.
    """
    gt, det = _boxes("gt", gt), _boxes("det", det)
    if not len(det) or not len(gt):
        return np.full(len(det), -1, dtype=np.int64)
    d = np.linalg.norm(box_centers(det)[:, None, :] - box_centers(gt)[None, :, :], axis=2)
    radius = ((gt[:, 2] - gt[:, 0]) + (gt[:, 3] - gt[:, 1])) / 4.0
    within = d <= radius[None, :]
    nearest = np.argmin(np.where(within, d, np.inf), axis=1)
    return np.where(within.any(axis=1), nearest, -1).astype(np.int64)


def augment_d4(images, boxes_per_image):
    """The 8 flips and 90-degree rotations of square images ``(N, S, S, C)`` and of their boxes.

    Returns ``(images (8N, S, S, C), boxes list of 8N arrays)``, in the order of
    :func:`utils.segment.augment_d4` (rotation ``k`` = 0..3 by ``np.rot90``, then with and
    without a left-right flip), with the boxes transformed exactly (half-open convention).
    """
    x = np.asarray(images)
    if x.ndim != 4 or x.shape[1] != x.shape[2]:
        raise ValueError(f"images must be square, (N, S, S, C), got shape {x.shape}")
    if len(boxes_per_image) != len(x):
        raise ValueError(f"{len(x)} images but {len(boxes_per_image)} box arrays")
    size = x.shape[1]
    xs, bs = [], []
    for k in range(4):
        for flip in (False, True):
            xa = np.rot90(x, k, axes=(1, 2))
            if flip:
                xa = xa[:, :, ::-1]
            xs.append(xa)
            for b in boxes_per_image:
                b = _boxes("boxes", b)
                for _ in range(k):  # np.rot90 maps pixel (r, c) to (S - 1 - c, r)
                    b = np.stack([b[:, 1], size - b[:, 2], b[:, 3], size - b[:, 0]], axis=1).reshape(-1, 4)
                if flip:
                    b = np.stack([size - b[:, 2], b[:, 1], size - b[:, 0], b[:, 3]], axis=1).reshape(-1, 4)
                bs.append(b)
    return np.ascontiguousarray(np.concatenate(xs)), bs


@dataclass
class FROC:
    """A FROC analysis: the curve, the sensitivities at ``fp_rates`` and their mean (a CPM).

    "Per image" means per entry of the lists passed to :func:`froc` (in chapter 4 a 64x64 tile),
    not per 3-D scan as in LUNA16.
    """

    thresholds: np.ndarray  # decreasing score thresholds (a detection counts if score >= threshold)
    fp_per_image: np.ndarray  # false positives per image at each threshold
    sensitivity: np.ndarray  # fraction of lesions hit at each threshold
    fp_rates: tuple
    sens_at: np.ndarray  # sensitivity at each of fp_rates
    n_images: int
    n_lesions: int

    @property
    def mean_sensitivity(self) -> float:
        """Mean of ``sens_at``: LUNA16's competition performance metric (CPM) formula, per image as passed."""
        return float(np.mean(self.sens_at))


def froc_from_scores(gt_scores: Sequence, fp_scores: Sequence, fp_rates=FP_RATES) -> FROC:
    """A :class:`FROC` from per-image ``gt_scores`` and ``fp_scores`` (see :func:`match_detections`)."""
    n_images = len(gt_scores)
    if n_images == 0 or n_images != len(fp_scores):
        raise ValueError("need the same (non-zero) number of images in gt_scores and fp_scores")
    g = np.concatenate([np.asarray(x, float).reshape(-1) for x in gt_scores])
    f = np.concatenate([np.asarray(x, float).reshape(-1) for x in fp_scores])
    if len(g) == 0:
        raise ValueError("FROC needs at least one lesion in the ground truth")
    t = np.unique(np.concatenate([g[np.isfinite(g)], f]))[::-1]
    thresholds = np.concatenate([[np.inf], t])
    g_sorted, f_sorted = np.sort(g), np.sort(f)
    sens = (len(g) - np.searchsorted(g_sorted, thresholds, side="left")) / len(g)
    fps = (len(f) - np.searchsorted(f_sorted, thresholds, side="left")) / n_images
    sens_at = np.array([sens[fps <= rate].max() for rate in fp_rates])
    return FROC(
        thresholds=thresholds,
        fp_per_image=fps,
        sensitivity=sens,
        fp_rates=tuple(fp_rates),
        sens_at=sens_at,
        n_images=n_images,
        n_lesions=len(g),
    )


def froc(gt_boxes: Sequence, det_boxes: Sequence, det_scores: Sequence, fp_rates=FP_RATES) -> FROC:
    """FROC analysis of detections in a set of images (one list entry per image); see the module docstring."""
    gts, dets, scores = _lists(gt_boxes, det_boxes, det_scores)
    pairs = [match_detections(g, d, s) for g, d, s in zip(gts, dets, scores)]
    return froc_from_scores([p[0] for p in pairs], [p[1] for p in pairs], fp_rates)


def threshold_at_fp_rate(result: FROC, rate: float) -> float:
    """The lowest score threshold whose false-positive rate is ``<= rate`` per image (an operating point)."""
    ok = result.fp_per_image <= rate
    return float(result.thresholds[ok].min())


# ---------------------------------------------------------------------------
# COCO mAP (pycocotools)
# ---------------------------------------------------------------------------


def to_coco(gt_boxes: Sequence, det_boxes: Sequence, det_scores: Sequence, category: str = "lesion"):
    """COCO-format ``(ground_truth_dict, detections_list)`` of per-image half-open boxes.

    Image ``i`` gets id ``i + 1``; boxes become ``[x0, y0, x1 - x0, y1 - y0]``; every object is
    of category 1 (``category``), ``iscrowd = 0`` and ``area = w * h``.
    """
    gts, dets, scores = _lists(gt_boxes, det_boxes, det_scores)
    images = [{"id": i + 1, "width": 0, "height": 0} for i in range(len(gts))]
    anns, k = [], 1
    for i, g in enumerate(gts):
        for x0, y0, x1, y1 in g:
            anns.append(
                {
                    "id": k,
                    "image_id": i + 1,
                    "category_id": 1,
                    "iscrowd": 0,
                    "bbox": [float(x0), float(y0), float(x1 - x0), float(y1 - y0)],
                    "area": float((x1 - x0) * (y1 - y0)),
                }
            )
            k += 1
    results = [
        {
            "image_id": i + 1,
            "category_id": 1,
            "score": float(sc),
            "bbox": [float(x0), float(y0), float(x1 - x0), float(y1 - y0)],
        }
        for i, (d, s) in enumerate(zip(dets, scores))
        for (x0, y0, x1, y1), sc in zip(d, s)
    ]
    gt = {"images": images, "annotations": anns, "categories": [{"id": 1, "name": category}]}
    return gt, results


def coco_map(
    gt_boxes: Sequence, det_boxes: Sequence, det_scores: Sequence, max_dets: int = 100, all_areas: bool = False
) -> dict:
    """COCO average precision with pycocotools: ``{"ap50": AP@IoU 0.5, "ap": AP@IoU 0.5:0.95}``.

    ``COCOeval`` (``iouType="bbox"``) evaluates and accumulates; the two numbers are read from
    its precision array for the "all" area range and ``max_dets`` detections per image, as
    ``COCOeval.summarize()`` computes its first two lines (tested).  Only the "all" area range is
    evaluated unless ``all_areas=True``.  pycocotools' printing is silenced.  No detections at all
    gives 0.0; no ground truth gives NaN.
    """
    from pycocotools.coco import COCO
    from pycocotools.cocoeval import COCOeval

    gt, results = to_coco(gt_boxes, det_boxes, det_scores)
    if not gt["annotations"]:
        return {"ap50": float("nan"), "ap": float("nan")}
    if not results:
        return {"ap50": 0.0, "ap": 0.0}
    with contextlib.redirect_stdout(io.StringIO()):
        coco_gt = COCO()
        coco_gt.dataset = gt
        coco_gt.createIndex()
        coco_dt = coco_gt.loadRes(results)
        ev = COCOeval(coco_gt, coco_dt, iouType="bbox")
        ev.params.maxDets = [max_dets]
        if not all_areas:  # only the "all" area range: 4x faster, same AP as summarize()'s stats[0:2]
            ev.params.areaRng, ev.params.areaRngLbl = [ev.params.areaRng[0]], ["all"]
        ev.evaluate()
        ev.accumulate()
    # precision[T, R, K, A, M]: IoU thresholds x recall points x categories x area ranges x maxDets,
    # -1 where undefined; this is exactly what COCOeval.summarize() averages for AP and AP50
    precision = ev.eval["precision"][:, :, :, 0, -1]

    def valid(a):
        return float(np.mean(a[a > -1])) if (a > -1).any() else 0.0

    iou50 = int(np.argmin(np.abs(ev.params.iouThrs - 0.5)))
    return {"ap50": valid(precision[iou50]), "ap": valid(precision)}


def bootstrap_detection_ci(
    metric: Callable[[list, list, list], float],
    gt_boxes,
    det_boxes,
    det_scores,
    *,
    n_boot: int = 1000,
    alpha: float = 0.05,
    seed: int = 0,
) -> tuple[float, float, float]:
    """Point estimate and percentile ``(1 - alpha)`` CI of a detection metric, resampling images.

    ``metric(gt_list, det_list, score_list)`` is e.g. ``lambda g, d, s: froc(g, d, s).mean_sensitivity``.
    Replicates without any lesion are skipped (NaN, ignored by the percentiles).
    """
    gts, dets, scores = _lists(gt_boxes, det_boxes, det_scores)
    point = float(metric(gts, dets, scores))
    rng = np.random.default_rng(seed)
    n = len(gts)
    reps = np.empty(n_boot)
    for b in course.progress(range(n_boot), desc="bootstrap"):
        idx = rng.integers(0, n, n)
        g = [gts[i] for i in idx]
        if sum(len(x) for x in g) == 0:
            reps[b] = np.nan
            continue
        reps[b] = metric(g, [dets[i] for i in idx], [scores[i] for i in idx])
    return stats.percentile_interval(point, reps, alpha)


# ---------------------------------------------------------------------------
# classical baseline: Laplacian-of-Gaussian blobs
# ---------------------------------------------------------------------------


def blob_detect(
    image,
    min_sigma: float = 1.5,
    max_sigma: float = 6.0,
    num_sigma: int = 8,
    threshold: float = 0.02,
    box_scale: float = 1.0,
    overlap: float = 0.5,
):
    """Bright-blob detection with :func:`skimage.feature.blob_log`; boxes and scores.

    ``blob_log`` finds the local maxima of the scale-normalised negative Laplacian of Gaussian
    ``-sigma^2 * LoG_sigma * image`` over space and the ``num_sigma`` scales between
    ``min_sigma`` and ``max_sigma`` (above ``threshold``) and prunes overlapping blobs.  The
    score of a blob is that response at its position and scale; its box is a square of
    half-side ``box_scale * sqrt(2) * sigma`` (a disc of radius ``r`` gives the strongest
    response at ``sigma = r / sqrt(2)``) around the blob centre.  Returns ``(boxes, scores)``.
    """
    from scipy import ndimage
    from skimage.feature import blob_log

    img = np.asarray(image, np.float64)
    if img.ndim != 2:
        raise ValueError(f"image must be 2-D, got shape {img.shape}")
    if not 0 < min_sigma <= max_sigma:
        raise ValueError(f"need 0 < min_sigma <= max_sigma, got {min_sigma}, {max_sigma}")
    blobs = blob_log(
        img,
        min_sigma=min_sigma,
        max_sigma=max_sigma,
        num_sigma=num_sigma,
        threshold=threshold,
        overlap=overlap,
        exclude_border=False,
    )
    if not len(blobs):
        return np.zeros((0, 4)), np.zeros(0)
    scores = np.empty(len(blobs))
    cache: dict[float, np.ndarray] = {}
    for k, (r, c, s) in enumerate(blobs):
        if s not in cache:
            cache[s] = -(s**2) * ndimage.gaussian_laplace(img, s)
        scores[k] = cache[s][int(r), int(c)]
    half = box_scale * np.sqrt(2) * blobs[:, 2]
    cx, cy = blobs[:, 1], blobs[:, 0]
    boxes = np.stack([cx - half + 0.5, cy - half + 0.5, cx + half + 0.5, cy + half + 0.5], axis=1)
    return boxes, scores


def tune_blob(
    images, gt_boxes, grid: dict, objective: Callable[[FROC, dict], float] | None = None, threshold: float = 0.02
) -> tuple[dict, list]:
    """Grid search of :func:`blob_detect` parameters on training/validation images only.

    ``grid`` maps parameter names (``min_sigma``, ``max_sigma``, ``box_scale`` ...) to lists of
    values.  The default objective is FROC mean sensitivity plus COCO AP@0.5.  Returns
    ``(best_params, [(params, froc_mean, ap50), ...])``.
    """
    keys = sorted(grid)
    table = []
    best, best_val = None, -np.inf
    runs: dict[tuple, list] = {}  # blob_log runs, shared by all box scales (the box is rescaled afterwards)
    for values in itertools.product(*(grid[k] for k in keys)):
        params = dict(zip(keys, values))
        params.setdefault("threshold", threshold)
        if params.get("min_sigma", 1.5) > params.get("max_sigma", 6.0):
            continue
        scale = params.get("box_scale", 1.0)
        key = tuple(sorted((k, v) for k, v in params.items() if k != "box_scale"))
        if key not in runs:
            runs[key] = [blob_detect(im, **dict(key), box_scale=1.0) for im in images]
        dets = []
        for b, sc in runs[key]:
            c = (b[:, :2] + b[:, 2:]) / 2.0
            half = (b[:, 2:] - b[:, :2]) / 2.0 * scale
            dets.append((np.concatenate([c - half, c + half], axis=1).reshape(-1, 4), sc))
        f = froc(gt_boxes, [d[0] for d in dets], [d[1] for d in dets])
        m = coco_map(gt_boxes, [d[0] for d in dets], [d[1] for d in dets])
        val = objective(f, m) if objective else f.mean_sensitivity + m["ap50"]
        table.append((params, f.mean_sensitivity, m["ap50"]))
        if val > best_val:
            best, best_val = params, val
    return best, table


# ---------------------------------------------------------------------------
# evaluating detectors on one test set, with bootstrap replicates kept for pairing
# ---------------------------------------------------------------------------

#: The four numbers :func:`evaluate_detectors` reports per detector, with the names of the chapter's tables.
METRICS = {"cpm": "FROC mean", "sens1": "sens. at 1 FP/image", "ap50": "AP@0.5", "ap": "AP@[.5:.95]"}
_FP1 = FP_RATES.index(1.0)


def detect_images(model, images, stride: int = 2, top_k: int = 20, *, batch_size: int = 16, score_min: float = 0.01):
    """CenterNet detections ``(boxes per image, scores per image)`` of a stack of images ``(N, H, W, 1)``.

    The model's outputs (``model.predict`` in batches of ``batch_size``) are decoded by max-pool peak
    extraction (:func:`decode`), keeping at most ``top_k`` detections above ``score_min`` per image.

    Taught in chapter 4, section 5 ("Training and the classical baseline").
    """
    outputs = model.predict(np.asarray(images, np.float32), batch_size=batch_size, verbose=0)
    return decode(outputs, stride, top_k=top_k, score_min=score_min)


def keep_top(boxes, scores, k: int):
    """``(boxes, scores)`` of the ``k`` highest-scoring detections, best first (ties in their given order).

    Taught in chapter 4, section 5 ("Training and the classical baseline").
    """
    order = np.argsort(-np.asarray(scores), kind="stable")[:k]
    return boxes[order], scores[order]


def blob_images(images, params: dict, top_k: int = 20):
    """:func:`blob_detect` with ``params`` on each image of ``(N, H, W, 1)``: ``(boxes list, scores list)``.

    Each image keeps its ``top_k`` highest-scoring blobs (:func:`keep_top`), the same budget as the
    CenterNet's detections.

    Taught in chapter 4, section 5 ("Training and the classical baseline").
    """
    dets = [keep_top(*blob_detect(im[..., 0], **params), top_k) for im in images]
    return [d[0] for d in dets], [d[1] for d in dets]


def froc_metrics(gt_boxes, det_boxes, det_scores, cache: dict | None = None) -> dict:
    """``{"cpm": FROC mean sensitivity, "sens1": sensitivity at 1 FP per image}``, as :func:`froc` gives them.

    A bootstrap replicate repeats images, and matching is the slow part of a FROC: with a ``cache``
    (a dict kept across the calls of one bootstrap) each image is matched once.  Its key is the ids
    of the image's three arrays, and the arrays are stored with their matching so that the ids stay
    unique while the cache lives; the result is the same as without a cache (tested).

    Taught in chapter 4, section 4.1 ("Matching, FROC and the LUNA16 formula").
    """
    cache = {} if cache is None else cache
    pairs = []
    for arrays in zip(gt_boxes, det_boxes, det_scores):
        key = tuple(map(id, arrays))
        if key not in cache:
            cache[key] = (match_detections(*arrays), arrays)
        pairs.append(cache[key][0])
    f = froc_from_scores([p[0] for p in pairs], [p[1] for p in pairs])
    return {"cpm": f.mean_sensitivity, "sens1": float(f.sens_at[_FP1])}


def point_metrics(gt_boxes, dets: dict) -> dict:
    """Point estimates without intervals, per detector: ``{name: {"froc", "cpm", "sens1", "ap50", "ap"}}``.

    ``dets`` maps a detector's name to its ``(boxes per image, scores per image)`` on the images of
    ``gt_boxes``; ``"froc"`` is the :class:`FROC` (for operating points), the rest are numbers.  For
    checks and decisions on validation data, where intervals are not needed.

    Taught in chapter 4, section 5.4 ("The targets, checked on validation data").
    """
    out = {}
    for name, (boxes, scores) in dets.items():
        f = froc(gt_boxes, boxes, scores)
        out[name] = dict(
            froc=f, cpm=f.mean_sensitivity, sens1=float(f.sens_at[_FP1]), **coco_map(gt_boxes, boxes, scores)
        )
    return out


def bootstrap_replicates(
    metric: Callable[[list, list, list], dict], primary: str, gt_boxes, det_boxes, det_scores, *, n_boot, seed
):
    """:func:`bootstrap_detection_ci` of ``metric(...)[primary]``, keeping every replicate of every entry.

    ``metric(gt, det, scores)`` returns a dict of numbers (:func:`froc_metrics`, :func:`coco_map`).
    Returns ``(ci, point, replicates, drawn)``: the ``(estimate, low, high)`` of ``primary``; the
    metric's dict on the images themselves; ``{key: array of replicates}`` for every key of that dict
    (one per resample that holds a lesion: :func:`bootstrap_detection_ci` skips the others); and a
    fingerprint of the images each of those replicates drew.
    Two calls with the same ``seed`` on the same images draw the same resamples (equal ``drawn``), so
    the per-replicate differences of two detectors give a paired interval
    (:func:`utils.stats.percentile_interval`).

    Taught in chapter 4, section 4.2 ("COCO average precision"), and the pairing in section 5.5.
    """
    kept, drawn = [], []

    def recording(g, d, s):
        kept.append(metric(g, d, s))
        drawn.append(hash(tuple(b.tobytes() for b in g)))
        return kept[-1][primary]

    ci = bootstrap_detection_ci(recording, gt_boxes, det_boxes, det_scores, n_boot=n_boot, seed=seed)
    # kept[0] is the metric on the images themselves, kept[1:] the replicates
    return ci, kept[0], {k: np.array([m[k] for m in kept[1:]], float) for k in kept[0]}, drawn[1:]


def evaluate_detectors(gt_boxes, dets: dict, *, n_boot: int, seed: int) -> dict:
    """FROC and COCO AP of several detectors on the same images, with percentile bootstrap intervals.

    ``dets`` maps a detector's name to its ``(boxes per image, scores per image)``.  For each detector
    the result holds ``"froc"`` (the :class:`FROC`), ``"cpm"`` and ``"ap50"`` (``(estimate, low,
    high)`` from :func:`bootstrap_detection_ci`), ``"ap"`` (the point AP@[.5:.95]), ``"ci"`` (the
    interval of each of :data:`METRICS`), ``"reps"`` (their replicates) and ``"drawn"``
    (which images each replicate drew).  Every detector, and the FROC and COCO metrics, are scored on
    the same resamples (``seed``), so any two can be compared by the percentile interval of their
    per-replicate differences.

    Raises
    ------
    RuntimeError
        If the FROC and COCO bootstraps drew different images, or the cached matching changed a number.

    Taught in chapter 4, section 4.2 ("COCO average precision"), and the comparisons in section 5.5.
    """
    results, cache = {}, {}
    for name, (boxes, scores) in dets.items():
        f = froc(gt_boxes, boxes, scores)
        cpm, point_f, reps_f, drawn_f = bootstrap_replicates(
            functools.partial(froc_metrics, cache=cache), "cpm", gt_boxes, boxes, scores, n_boot=n_boot, seed=seed
        )
        ap50, point_c, reps_c, drawn_c = bootstrap_replicates(
            coco_map, "ap50", gt_boxes, boxes, scores, n_boot=n_boot, seed=seed
        )
        if drawn_f != drawn_c:
            raise RuntimeError(f"{name}: the FROC and COCO bootstraps drew different images")
        point, reps = {**point_f, **point_c}, {**reps_f, **reps_c}
        if point["cpm"] != f.mean_sensitivity or point["sens1"] != f.sens_at[_FP1]:
            raise RuntimeError(f"{name}: the cached matching changed the FROC")
        ci = {m: stats.percentile_interval(point[m], reps[m]) for m in METRICS}
        if not (np.allclose(ci["cpm"], cpm, rtol=0, atol=1e-12) and np.allclose(ci["ap50"], ap50, rtol=0, atol=1e-12)):
            raise RuntimeError(f"{name}: the kept replicates do not reproduce bootstrap_detection_ci's interval")
        results[name] = dict(froc=f, cpm=cpm, ap50=ap50, ap=point["ap"], ci=ci, reps=reps, drawn=drawn_f)
    return results


def results_table(results: dict) -> tuple[list, list]:
    """``(header, rows)`` of :func:`evaluate_detectors`' results: the FROC points, then the three intervals.

    Taught in chapter 4, section 5 ("Training and the classical baseline").
    """
    header = [
        "detector",
        *[f"{r:g}" for r in FP_RATES],
        "FROC mean [95 % CI]",
        "AP@0.5 [95 % CI]",
        "AP@[.5:.95] [95 % CI]",
    ]
    rows = []
    for name, r in results.items():
        cpm, ap50 = r["cpm"], r["ap50"]
        rows.append(
            [
                name,
                *[f"{v:.2f}" for v in r["froc"].sens_at],
                f"{cpm[0]:.3f} [{cpm[1]:.3f}, {cpm[2]:.3f}]",
                f"{ap50[0]:.3f} [{ap50[1]:.3f}, {ap50[2]:.3f}]",
                stats.fmt_interval(*r["ci"]["ap"]),
            ]
        )
    return header, rows


def plot_froc(ax, results: dict, title: str) -> None:
    """Draw the FROC step curve of each detector of :func:`evaluate_detectors`' results on ``ax``.

    The x axis is logarithmic (base 2) from 1/16 to 16 false positives per image, with the FP rates
    of the FROC mean marked; the legend gives each detector's FROC mean.

    Taught in chapter 4, section 5.5 ("The FROC curves, and the headline numbers").
    """
    for name, r in results.items():
        f = r["froc"]
        ax.step(np.maximum(f.fp_per_image, 1e-3), f.sensitivity, where="post", label=f"{name} (CPM {r['cpm'][0]:.2f})")
    for rate in FP_RATES:
        ax.axvline(rate, color="grey", lw=0.4, ls=":")
    ax.set_xscale("log", base=2)
    ax.set_xlim(1 / 16, 16)
    ax.set_ylim(0, 1.02)
    ax.set_xlabel("false positives per 64×64 tile")
    ax.set_ylabel("sensitivity")
    ax.set_title(title)
    ax.legend(loc="lower right", fontsize=8)


def detection_counts(gt_boxes, det_boxes, det_scores, threshold: float) -> tuple[float, float]:
    """``(detections per image, duplicates per image)`` at a score threshold, averaged over the images.

    A duplicate is a detection of a lesion that another detection already hits (FROC's hit criterion,
    :func:`hit_index`): FROC ignores it, AP counts it as a false positive.

    Taught in chapter 4, section 5.6 ("Box NMS against max-pool peak extraction").
    """
    n, dup = [], []
    for g, b, s in zip(gt_boxes, det_boxes, det_scores):
        which = hit_index(g, b[s >= threshold])
        hit = which[which >= 0]
        n.append(int(np.sum(s >= threshold)))
        dup.append(len(hit) - len(np.unique(hit)))
    return float(np.mean(n)), float(np.mean(dup))


def sensitivity_at(gt_boxes, det_boxes, det_scores, threshold: float) -> float:
    """The fraction of lesions hit by a detection scoring at least ``threshold`` (FROC's hit criterion).

    The same as matching only the detections above the threshold (:func:`match_detections`), since
    whether a detection hits a lesion does not depend on the other detections.

    Taught in chapter 4, section 7 ("Sensitivity versus lesion size and contrast").
    """
    best = [match_detections(g, b, s)[0] for g, b, s in zip(*_lists(gt_boxes, det_boxes, det_scores))]
    best = np.concatenate(best) if best else np.zeros(0)
    if not len(best):
        raise ValueError("sensitivity_at needs at least one lesion in gt_boxes")
    return float(np.mean(best >= threshold))


def plot_sensitivity_grid(ax, grid, radii, contrast_labels) -> None:
    """Draw a radius x contrast grid of sensitivities on ``ax``: one cell per (radius, contrast), annotated.

    ``grid[a, b]`` is the sensitivity (0..1) for lesions of radius ``radii[a]`` (pixels) and the
    contrast labelled ``contrast_labels[b]``; radius grows upwards, contrast to the right.

    Taught in chapter 4, section 7 ("Sensitivity versus lesion size and contrast").
    """
    grid = np.asarray(grid, float)
    if grid.shape != (len(radii), len(contrast_labels)):
        raise ValueError(f"grid has shape {grid.shape}, but {len(radii)} radii and {len(contrast_labels)} contrasts")
    im = ax.imshow(grid, cmap="viridis", vmin=0, vmax=1, origin="lower")
    ax.set_xticks(range(len(contrast_labels)), list(contrast_labels))
    ax.set_yticks(range(len(radii)), [f"{r:g}" for r in radii])
    for (a, b), v in np.ndenumerate(grid):
        ax.text(b, a, f"{v:.2f}", ha="center", va="center", color="w" if v < 0.6 else "k")
    ax.set_xlabel("lesion contrast")
    ax.set_ylabel("lesion radius (px)")
    ax.figure.colorbar(im, ax=ax, label="sensitivity")


def lesion_boxes(mask, spacing_mm) -> tuple[list, int, np.ndarray]:
    """The exact boxes of one lesion's 3-D mask ``(z, y, x)``: ``(size_mm, k, boxes_k)``.

    ``size_mm`` is the side of the lesion's 3-D bounding box along z, y and x in millimetres (with
    the voxel ``spacing_mm``); ``k`` the axial slice where the lesion's area is largest; ``boxes_k``
    the ``(x0, y0, x1, y1)`` half-open boxes of its connected parts on that slice.

    Taught in chapter 4, section 2.4 ("Real lesions with real masks: the pyradiomics scans").
    """
    from scipy import ndimage

    mask = np.asarray(mask)
    if mask.ndim != 3 or not mask.any():
        raise ValueError(f"mask must be a 3-D (z, y, x) array that marks a lesion, got shape {mask.shape}")
    zs, ys, xs = ndimage.find_objects((mask > 0).astype(np.int32))[0]  # the 3-D box of the whole lesion
    size_mm = [(s.stop - s.start) * d for s, d in zip((zs, ys, xs), spacing_mm)]
    k = int((mask > 0).sum(axis=(1, 2)).argmax())
    labels, n = ndimage.label(mask[k] > 0)
    boxes = [ndimage.find_objects(labels)[j] for j in range(n)]
    boxes_k = np.array([[c.start, r.start, c.stop, r.stop] for r, c in boxes], np.int64).reshape(-1, 4)
    return size_mm, k, boxes_k


def outcome(gt, boxes, scores, threshold: float):
    """In one image, at a score threshold: ``(hit lesions, missed lesions, false-positive boxes)``.

    Taught in chapter 4, section 6 ("Where each method fails").
    """
    kept = boxes[scores >= threshold]
    which = hit_index(gt, kept)
    found = np.isin(np.arange(len(gt)), which)
    return gt[found], gt[~found], kept[which < 0]


def show_boxes(ax, image, boxes, title: str | None = None, *, color="yellow", lw: float = 0.8, fontsize=None, **imshow):
    """Show ``image`` (grey) on ``ax`` with ``boxes`` drawn on the pixel edges, and no axes.

    Boxes are ``(x0, y0, x1, y1)`` half-open pixel ranges (the module's convention): the box covers
    the pixel centres ``x0 .. x1 - 1``, so its outline runs from ``x0 - 0.5`` to ``x1 - 0.5``.
    Further keywords go to ``ax.imshow`` (``vmin``, ``vmax``...).

    Taught in chapter 4, section 2 ("The data, shown before it is modelled").
    """
    from matplotlib.patches import Rectangle

    ax.imshow(image, **{"cmap": "gray", **imshow})
    for x0, y0, x1, y1 in _boxes("boxes", boxes):
        ax.add_patch(Rectangle((x0 - 0.5, y0 - 0.5), x1 - x0, y1 - y0, fill=False, ec=color, lw=lw))
    if title is not None:
        ax.set_title(title, fontsize=fontsize)
    ax.axis("off")


def draw_outcome(ax, image, gt, boxes, scores, threshold: float, title: str) -> None:
    """Show ``image`` on ``ax`` with its hits (green), misses (blue, dashed) and false positives (red).

    Boxes are half-open pixel ranges (the module's convention), drawn on the pixel edges.

    Taught in chapter 4, section 6 ("Where each method fails").
    """
    from matplotlib.patches import Rectangle

    hits, misses, fps = outcome(gt, boxes, scores, threshold)
    ax.imshow(image, cmap="gray")
    for bset, colour, ls in ((hits, "lime", "-"), (misses, "deepskyblue", "--"), (fps, "red", "-")):
        for x0, y0, x1, y1 in bset:
            ax.add_patch(Rectangle((x0 - 0.5, y0 - 0.5), x1 - x0, y1 - y0, fill=False, ec=colour, ls=ls, lw=1.2))
    ax.set_title(f"{title}\n{len(hits)} hit, {len(misses)} missed, {len(fps)} FP", fontsize=8)
    ax.axis("off")
