"""Data quality and class imbalance helpers for chapter 6: label noise, imbalance methods, dataset audits.

The Keras part (:class:`GeneralizedCrossEntropy`) uses
``keras.ops`` only, so they run on the TensorFlow, JAX and PyTorch backends.
The rest is NumPy / SciPy / scikit-learn.

Label noise
    :func:`flip_labels` flips exactly ``round(fraction · N)`` labels, chosen
    deterministically from a seed; :class:`GeneralizedCrossEntropy` is the
    noise-robust loss of Zhang & Sabuncu (2018); :func:`label_fit` measures how
    much of the noise a model has memorised.
Imbalance
    :func:`class_weights` (the "balanced" weights of scikit-learn),
    :func:`oversample_indices` (random over-sampling of the minority classes);
    the network with one sigmoid output that focal loss needs is
    :func:`utils.classify.binary_cnn`; the operating points on the ROC curve
    are :func:`utils.metrics.threshold_for_specificity` and :func:`utils.metrics.sensitivity_at_specificity`.
Audits
    :func:`exact_duplicates` (SHA-1 of the pixel bytes),
    :func:`perceptual_hash` (DCT hash) and :func:`near_duplicates` (hash
    Hamming distance, confirmed by pixel correlation), :func:`outlier_scores`
    (robust z-scores of simple image statistics) and :func:`label_table`.
"""

from __future__ import annotations

import hashlib
from collections.abc import Mapping

import numpy as np

# ---------------------------------------------------------------------------
# label noise
# ---------------------------------------------------------------------------


def flip_labels(
    y: np.ndarray, fraction: float, *, n_classes: int | None = None, seed: int = 0
) -> tuple[np.ndarray, np.ndarray]:
    """Corrupt exactly ``round(fraction · N)`` labels (symmetric noise); return ``(noisy, flipped_indices)``.

    The cases to corrupt are drawn without replacement with
    ``numpy.random.default_rng(seed)``, so the same seed flips the same cases.
    A binary label ``c`` becomes ``1 - c``; with more classes it becomes one of
    the *other* classes, uniformly.  ``flipped_indices`` is sorted.
    """
    y = np.asarray(y).reshape(-1).astype(np.int64)
    if not 0.0 <= float(fraction) <= 1.0:
        raise ValueError(f"fraction must be in [0, 1], got {fraction}")
    k = int(n_classes if n_classes is not None else (y.max() + 1 if len(y) else 2))
    if k < 2:
        raise ValueError(f"n_classes must be >= 2 to flip labels, got {k}")
    if len(y) and (y.min() < 0 or y.max() >= k):
        raise ValueError(f"labels must lie in [0, {k}); got values from {y.min()} to {y.max()}")
    rng = np.random.default_rng(seed)
    n_flip = int(round(float(fraction) * len(y)))
    idx = np.sort(rng.choice(len(y), size=n_flip, replace=False))
    noisy = y.copy()
    if k == 2:
        noisy[idx] = 1 - y[idx]
    else:
        noisy[idx] = (y[idx] + rng.integers(1, k, size=n_flip)) % k
    return noisy, idx


def label_fit(probabilities: np.ndarray, given: np.ndarray, flipped: np.ndarray) -> tuple[float, float]:
    """Share of the flipped and of the clean training cases whose predicted class is their *given* label.

    ``probabilities`` ``(N, K)`` are a model's predictions on the training images, ``given`` ``(N,)`` the
    labels it was trained on (with the noise), ``flipped`` the indices :func:`flip_labels` corrupted.
    Returns ``(flipped_fit, clean_fit)``: a flipped case "fits" when the model predicts its wrong label,
    i.e. it has memorised the noise; a clean case when it predicts its true label.  Recorded after every
    epoch, the two curves show the memorisation phase of Arpit et al. (2017): clean cases are fitted
    first, flipped ones later.  ``flipped_fit`` is NaN when nothing was flipped, ``clean_fit`` when
    everything was.

    Taught in chapter 6, section 1.2 ("Label noise").
    """
    p = np.asarray(probabilities, float)
    given = np.asarray(given).reshape(-1)
    if p.ndim != 2 or len(p) != len(given):
        raise ValueError(f"probabilities must be (N, K) with N = len(given) = {len(given)}, got shape {p.shape}")
    hit = p.argmax(axis=1) == given
    is_flipped = np.zeros(len(given), bool)
    is_flipped[np.asarray(flipped, dtype=int)] = True
    flipped_fit = float(hit[is_flipped].mean()) if is_flipped.any() else float("nan")
    clean_fit = float(hit[~is_flipped].mean()) if (~is_flipped).any() else float("nan")
    return flipped_fit, clean_fit


class GeneralizedCrossEntropy:
    """Generalized cross-entropy ``L_q(p, y) = (1 - p_y^q) / q`` (Zhang & Sabuncu, 2018), as a Keras loss.

    ``p_y`` is the predicted probability of the labelled class (one-hot
    ``y_true``, probabilities ``y_pred``).  As ``q → 0`` it tends to the
    cross-entropy ``-log p_y``; at ``q = 1`` it is ``1 - p_y``, the mean
    absolute error up to a factor, which is robust to label noise but slow to
    train.  Its gradient is ``p_y^q`` times that of the cross-entropy: cases
    the model finds implausible (small ``p_y``, often the mislabelled ones)
    get less weight.  Built on ``keras.losses.Loss`` lazily so that importing
    this module does not import Keras.
    """

    def __new__(cls, q: float = 0.7, name: str = "generalized_cross_entropy"):
        import keras
        from keras import ops

        if not 0.0 < float(q) <= 1.0:
            raise ValueError(f"q must be in (0, 1], got {q}")

        class _GCE(keras.losses.Loss):
            def __init__(self, q, name):
                super().__init__(name=name)
                self.q = float(q)

            def call(self, y_true, y_pred):
                y_true = ops.cast(y_true, y_pred.dtype)
                p_y = ops.sum(y_true * ops.clip(y_pred, 1e-7, 1.0), axis=-1)
                return (1.0 - ops.power(p_y, self.q)) / self.q

            def get_config(self):
                return {"q": self.q, "name": self.name}

        return _GCE(q, name)


# ---------------------------------------------------------------------------
# imbalance
# ---------------------------------------------------------------------------


def class_weights(y: np.ndarray) -> dict[int, float]:
    """ "Balanced" class weights ``N / (K · N_k)``, from scikit-learn's ``compute_class_weight``.

    Every class present in ``y`` then contributes the same total weight to the loss. Pass the result
    to ``model.fit(..., class_weight=...)``. Used by chapter 2 (section 4, the training recipe) and
    chapter 6 (section 2, imbalance).
    """
    from sklearn.utils.class_weight import compute_class_weight

    y = np.asarray(y).reshape(-1).astype(int)
    if len(y) == 0:
        raise ValueError("y is empty")
    classes = np.unique(y)
    weights = compute_class_weight("balanced", classes=classes, y=y)
    return {int(c): float(w) for c, w in zip(classes, weights)}


def oversample_indices(y: np.ndarray, *, seed: int = 0) -> np.ndarray:
    """Indices that resample every class up to the size of the largest one (random over-sampling).

    All original cases are kept once; the minority classes are topped up by
    drawing their cases again with replacement.  The result is shuffled.
    """
    y = np.asarray(y).reshape(-1).astype(int)
    rng = np.random.default_rng(seed)
    classes, counts = np.unique(y, return_counts=True)
    target = counts.max()
    parts = []
    for c, n in zip(classes, counts):
        idx = np.flatnonzero(y == c)
        parts.append(idx)
        if n < target:
            parts.append(rng.choice(idx, size=target - n, replace=True))
    out = np.concatenate(parts)
    rng.shuffle(out)
    return out


# ---------------------------------------------------------------------------
# audits
# ---------------------------------------------------------------------------


def _as_stack(images: np.ndarray) -> np.ndarray:
    x = np.asarray(images)
    if x.ndim == 4 and x.shape[-1] == 1:
        x = x[..., 0]
    if x.ndim not in (3, 4):
        raise ValueError(f"images must be (N, H, W) or (N, H, W, C), got shape {x.shape}")
    return x


def exact_duplicates(splits: Mapping[str, np.ndarray]) -> list[tuple[str, int, str, int]]:
    """Pairs of byte-identical images, within and across splits: ``(split_a, i, split_b, j)``.

    Each image is hashed with SHA-1 of its dtype, shape and bytes; every pair of
    images with the same hash is reported once (``(a, i)`` before ``(b, j)`` in
    the order of ``splits`` and index).
    """
    groups: dict[str, list[tuple[str, int]]] = {}
    for name, images in splits.items():
        x = np.ascontiguousarray(images)
        for i in range(len(x)):
            h = hashlib.sha1(str((x.dtype.str, x.shape[1:])).encode() + x[i].tobytes()).hexdigest()
            groups.setdefault(h, []).append((name, i))
    pairs = []
    for members in groups.values():
        for a in range(len(members)):
            for b in range(a + 1, len(members)):
                pairs.append(members[a] + members[b])
    return sorted(pairs, key=lambda t: (list(splits).index(t[0]), t[1], list(splits).index(t[2]), t[3]))


def perceptual_hash(images: np.ndarray, hash_size: int = 8) -> np.ndarray:
    """64-bit DCT perceptual hashes (pHash), one ``uint64`` per image.

    The image (colour averaged to grey) is transformed with a 2-D DCT-II, the
    ``hash_size × hash_size`` lowest frequencies are kept, and each bit says
    whether that coefficient is above their median (the DC term excluded from
    the median).  Small shifts in brightness, contrast, noise or compression
    change few bits; a different image changes about half of them.
    """
    from scipy.fft import dctn

    x = _as_stack(images).astype(np.float64)
    if x.ndim == 4:
        x = x.mean(axis=-1)
    if hash_size * hash_size > 64 or min(x.shape[1:]) < hash_size:
        raise ValueError(f"hash_size must be <= 8 and <= the image size, got {hash_size} for {x.shape[1:]}")
    coef = dctn(x, axes=(1, 2), norm="ortho")[:, :hash_size, :hash_size].reshape(len(x), -1)
    med = np.median(coef[:, 1:], axis=1, keepdims=True)
    bits = (coef > med).astype(np.uint64)
    weights = np.uint64(1) << np.arange(bits.shape[1], dtype=np.uint64)
    return (bits * weights).sum(axis=1).astype(np.uint64)


def hamming(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """Bitwise Hamming distance between ``uint64`` hashes (broadcasting)."""
    return np.bitwise_count(np.bitwise_xor(np.asarray(a, np.uint64), np.asarray(b, np.uint64))).astype(int)


def _correlation(a: np.ndarray, b: np.ndarray) -> float:
    a = np.asarray(a, float).ravel()
    b = np.asarray(b, float).ravel()
    a, b = a - a.mean(), b - b.mean()
    den = np.sqrt((a * a).sum() * (b * b).sum())
    return float((a * b).sum() / den) if den > 0 else float(np.array_equal(a, b))


def near_duplicates(
    splits: Mapping[str, np.ndarray],
    *,
    max_hamming: int = 10,
    min_correlation: float = 0.95,
    center: bool = True,
    chunk: int = 2048,
) -> list[tuple[str, int, str, int, int, float]]:
    """Pairs of near-identical images within and across splits.

    With ``center`` (the default) the mean image of all splits together is
    subtracted first: in a collection where every image shares a template (the
    round fundus disk, the dark band of an ultrasound) raw images all
    correlate highly, while their *deviations* from the template do so only
    when they show the same thing.  Candidates are pairs whose
    :func:`perceptual_hash` (of the centred images) differ in at most
    ``max_hamming`` of 64 bits; a candidate is kept when the Pearson
    correlation of the two centred images is at least ``min_correlation``
    (the hash finds candidates fast, the pixel check removes hash collisions).
    Returns ``(split_a, i, split_b, j, hamming, correlation)``, exact
    duplicates included (Hamming 0, correlation 1).
    """
    names, images, index = [], [], []
    for name, x in splits.items():
        x = _as_stack(x)
        images.append(x.astype(np.float64))
        names += [name] * len(x)
        index += list(range(len(x)))
    if len({x.shape[1:] for x in images}) != 1:
        raise ValueError("all splits must hold images of the same shape")
    allx = np.concatenate(images)
    if center:
        allx = allx - allx.mean(axis=0)
    h = perceptual_hash(allx)
    out = []
    for s in range(0, len(h), chunk):
        d = hamming(h[s : s + chunk, None], h[None, :])
        ii, jj = np.nonzero(d <= max_hamming)
        for i, j in zip(ii + s, jj):
            if j <= i:
                continue
            c = _correlation(allx[i], allx[j])
            if c >= min_correlation:
                out.append((names[i], index[i], names[j], index[j], int(d[i - s, j]), c))
    return out


def image_statistics(images: np.ndarray) -> dict[str, np.ndarray]:
    """Per-image mean, standard deviation, fraction of black (0) and of saturated (255) pixels."""
    x = _as_stack(images)
    flat = x.reshape(len(x), -1).astype(np.float64)
    return {
        "mean": flat.mean(axis=1),
        "std": flat.std(axis=1),
        "black": (flat == 0).mean(axis=1),
        "saturated": (flat == 255).mean(axis=1),
    }


def robust_z(values: np.ndarray) -> np.ndarray:
    """``(v - median) / (1.4826 · MAD)``: a z-score that a few outliers cannot inflate (0 if MAD is 0)."""
    v = np.asarray(values, float)
    med = np.median(v)
    mad = 1.4826 * np.median(np.abs(v - med))
    return (v - med) / mad if mad > 0 else np.zeros_like(v)


def outlier_scores(images: np.ndarray) -> np.ndarray:
    """Largest absolute robust z-score over the statistics of :func:`image_statistics` (mean and std).

    Values above about 4–5 mark images far from the bulk of the set (too dark,
    too bright, blank, or low contrast) that deserve a look before training.
    """
    stats = image_statistics(images)
    return np.max(np.abs(np.stack([robust_z(stats["mean"]), robust_z(stats["std"])])), axis=0)


def label_table(
    labels: Mapping[str, np.ndarray], names: Mapping[int, str] | None = None
) -> tuple[list[str], list[list]]:
    """Header and rows for a table of class counts and fractions per split (for ``tables.show_table``)."""
    classes = sorted({int(c) for y in labels.values() for c in np.unique(np.asarray(y).reshape(-1))})
    header = ["split", "n"] + [f"{names[c] if names else c}" for c in classes]
    rows = []
    for split, y in labels.items():
        y = np.asarray(y).reshape(-1)
        rows.append([split, len(y)] + [f"{int((y == c).sum())} ({(y == c).mean():.1%})" for c in classes])
    return header, rows
