"""utils.quality: label flipping, imbalance helpers, operating points and dataset audits."""

from __future__ import annotations

import numpy as np
import pytest

from utils import quality


def test_flip_labels_flips_exactly_the_fraction_deterministically():
    y = np.repeat([0, 1], [700, 300])
    for frac in (0.0, 0.1, 0.2, 0.4, 1.0):
        noisy, idx = quality.flip_labels(y, frac, seed=3)
        assert len(idx) == round(frac * len(y)) == int((noisy != y).sum())
        np.testing.assert_array_equal(np.flatnonzero(noisy != y), idx)
        np.testing.assert_array_equal(noisy[idx], 1 - y[idx])
    a, ia = quality.flip_labels(y, 0.2, seed=5)
    b, ib = quality.flip_labels(y, 0.2, seed=5)
    c, ic = quality.flip_labels(y, 0.2, seed=6)
    np.testing.assert_array_equal(a, b)
    assert not np.array_equal(ia, ic)


def test_flip_labels_multiclass_moves_to_another_class_and_checks_input():
    y = np.arange(1000) % 5
    noisy, idx = quality.flip_labels(y, 0.3, n_classes=5, seed=0)
    assert len(idx) == 300 and np.all(noisy[idx] != y[idx]) and noisy.max() < 5
    assert len(np.unique(noisy[idx] - y[idx])) > 1  # not a fixed permutation
    with pytest.raises(ValueError, match="fraction"):
        quality.flip_labels(y, 1.5)
    with pytest.raises(ValueError, match="labels must lie"):
        quality.flip_labels(y, 0.1, n_classes=3)


def test_class_weights_match_sklearn():
    from sklearn.utils.class_weight import compute_class_weight

    y = np.repeat([0, 1, 2], [500, 120, 30])
    w = quality.class_weights(y)
    ref = compute_class_weight("balanced", classes=np.array([0, 1, 2]), y=y)
    np.testing.assert_allclose([w[0], w[1], w[2]], ref)
    assert w[0] * 500 == pytest.approx(w[2] * 30) == pytest.approx(650 / 3)  # N / K per class


def test_oversample_indices_balances_and_keeps_every_case():
    y = np.repeat([0, 1], [90, 10])
    idx = quality.oversample_indices(y, seed=0)
    np.testing.assert_array_equal(np.bincount(y[idx]), [90, 90])
    assert set(idx) == set(range(100))
    np.testing.assert_array_equal(idx, quality.oversample_indices(y, seed=0))


def test_generalized_cross_entropy_limits():
    import keras

    y = np.eye(3, dtype="float32")[[0, 2, 1, 1]]
    p = np.array([[0.7, 0.2, 0.1], [0.1, 0.1, 0.8], [0.3, 0.4, 0.3], [0.05, 0.9, 0.05]], dtype="float32")
    ce = float(keras.losses.CategoricalCrossentropy()(y, p))
    small_q = float(quality.GeneralizedCrossEntropy(q=1e-4)(y, p))
    assert small_q == pytest.approx(ce, rel=1e-3)
    mae_like = float(quality.GeneralizedCrossEntropy(q=1.0)(y, p))
    assert mae_like == pytest.approx(np.mean(1 - (y * p).sum(1)), rel=1e-5)
    with pytest.raises(ValueError, match="q must be"):
        quality.GeneralizedCrossEntropy(q=0.0)


def _distinct_images(n, seed=0):
    rng = np.random.default_rng(seed)
    # smooth random images, all clearly different from each other
    base = rng.normal(size=(n, 7, 7))
    return np.clip(128 + 40 * np.kron(base, np.ones((4, 4))), 0, 255).astype(np.uint8)


def test_duplicate_finders_find_planted_duplicates_and_no_false_ones():
    train = _distinct_images(300, seed=1)
    test = _distinct_images(100, seed=2)
    test[10] = train[42]  # exact copy across splits
    noisy = train[7].astype(float) * 1.05 + np.random.default_rng(3).normal(0, 2, train[7].shape)
    test[20] = np.clip(noisy, 0, 255).astype(np.uint8)  # brighter, noisy copy
    train[100] = train[5]  # exact copy within a split
    splits = {"train": train, "test": test}
    assert quality.exact_duplicates(splits) == [("train", 5, "train", 100), ("train", 42, "test", 10)]
    near = {(a, i, b, j) for a, i, b, j, _, _ in quality.near_duplicates(splits)}
    assert near == {("train", 5, "train", 100), ("train", 42, "test", 10), ("train", 7, "test", 20)}


def test_perceptual_hash_is_stable_under_small_changes():
    x = _distinct_images(50, seed=4)
    h = quality.perceptual_hash(x)
    h2 = quality.perceptual_hash(np.clip(x.astype(int) + 3, 0, 255).astype(np.uint8))
    assert np.all(quality.hamming(h, h2) <= 10) and quality.hamming(h, h2).mean() < 3
    d = quality.hamming(h[:, None], h[None, :])[np.triu_indices(50, 1)]
    assert d.mean() > 20  # different images differ in many bits


def test_outlier_scores_flag_a_blank_image_and_label_table():
    x = _distinct_images(200, seed=5)
    x[17] = 0
    s = quality.outlier_scores(x)
    assert s.argmax() == 17 and s[17] > 5 and np.sum(s > 5) == 1
    header, rows = quality.label_table({"train": np.array([0, 0, 1]), "test": np.array([1])}, {0: "a", 1: "b"})
    assert header == ["split", "n", "a", "b"]
    assert rows[0][:3] == ["train", 3, "2 (66.7%)"] and rows[1][2] == "0 (0.0%)"


def test_label_fit_counts_memorised_flips_and_fitted_clean_labels():
    y = np.array([0, 1, 0, 1, 0, 1])
    noisy, flipped = quality.flip_labels(y, 1 / 3, seed=0)  # two cases flipped
    # a model that predicts the true labels has memorised no flip and fits every clean case
    truth = np.eye(2)[y]
    assert quality.label_fit(truth, noisy, flipped) == (0.0, 1.0)
    # one that reproduces the noisy labels has memorised both flips
    assert quality.label_fit(np.eye(2)[noisy], noisy, flipped) == (1.0, 1.0)
    # one that always says class 0: half the flips happen to be fitted or not, by their noisy label
    const = np.tile([0.9, 0.1], (6, 1))
    f, c = quality.label_fit(const, noisy, flipped)
    assert f == np.mean(noisy[flipped] == 0)
    assert c == np.mean(np.delete(noisy, flipped) == 0)
    assert np.isnan(quality.label_fit(truth, y, np.array([], int))[0])
    with pytest.raises(ValueError, match="probabilities must be"):
        quality.label_fit(truth[:3], noisy, flipped)
