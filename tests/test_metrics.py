"""Behaviour of utils.metrics against hand-computed values and scikit-learn."""

import numpy as np
import pytest
from sklearn.metrics import roc_auc_score

from utils import metrics


def test_binary_report_counts_and_rates():
    y = np.array([1, 1, 1, 0, 0, 0, 0, 1])
    p = np.array([0.9, 0.6, 0.4, 0.2, 0.7, 0.1, 0.3, 0.8])
    r = metrics.binary_report(y, p, threshold=0.5)
    assert (r.tp, r.fn, r.tn, r.fp) == (3, 1, 3, 1)
    assert r.sensitivity == 0.75 and r.specificity == 0.75
    assert r.balanced_accuracy == 0.75 and r.ppv == 0.75 and r.npv == 0.75 and r.accuracy == 0.75


def test_binary_report_agrees_with_scikit_learn_and_refuses_other_labels():
    from sklearn.metrics import accuracy_score, confusion_matrix

    rng = np.random.default_rng(2)
    y, p = rng.integers(0, 2, 500), rng.random(500)
    r = metrics.binary_report(y, p, threshold=0.3)
    assert (r.tn, r.fp, r.fn, r.tp) == tuple(int(v) for v in confusion_matrix(y, p > 0.3).ravel())
    assert metrics.medmnist_acc(y, p) == accuracy_score(y, p > 0.5)
    with pytest.raises(ValueError, match="0/1 labels"):
        metrics.binary_report([0, 1, 2], [0.1, 0.2, 0.3])


def test_threshold_is_strict():
    r = metrics.binary_report([1, 0], [0.5, 0.5], threshold=0.5)
    assert r.tp == 0 and r.tn == 1  # p == threshold counts as negative, as in the MedMNIST evaluator


def test_medmnist_auc_binary_and_multiclass():
    rng = np.random.default_rng(0)
    y = rng.integers(0, 2, 200)
    p = np.clip(y * 0.3 + rng.uniform(size=200) * 0.7, 0, 1)
    assert metrics.medmnist_auc(y, p) == pytest.approx(roc_auc_score(y, p))
    assert metrics.medmnist_auc(y, np.stack([1 - p, p], 1)) == pytest.approx(roc_auc_score(y, p))
    y3 = rng.integers(0, 3, 300)
    s3 = rng.dirichlet(np.ones(3), 300) + np.eye(3)[y3] * 0.5
    s3 /= s3.sum(1, keepdims=True)
    expected = np.mean([roc_auc_score(y3 == k, s3[:, k]) for k in range(3)])
    assert metrics.medmnist_auc(y3, s3) == pytest.approx(expected)
    assert metrics.medmnist_auc(y3, s3) == pytest.approx(roc_auc_score(y3, s3, multi_class="ovr", average="macro"))


def test_rank_auc_equals_scikit_learn_with_and_without_ties():
    rng = np.random.default_rng(1)
    for n, levels in ((50, None), (624, None), (300, 5), (40, 2)):
        y = rng.integers(0, 2, n)
        s = rng.normal(size=n) + y if levels is None else rng.integers(0, levels, n) + 0.5 * y  # many ties
        assert metrics.rank_auc(y, s) == pytest.approx(roc_auc_score(y, s), abs=1e-12)
        assert metrics.rank_auc(y.astype(bool), s) == pytest.approx(roc_auc_score(y, s), abs=1e-12)
    assert metrics.rank_auc([0, 1], [0.3, 0.3]) == 0.5  # a tie earns half credit
    assert metrics.rank_auc([1, 0], [0.9, 0.1]) == 1.0 and metrics.rank_auc([0, 1], [0.9, 0.1]) == 0.0


def test_rank_auc_refuses_what_has_no_auc():
    with pytest.raises(ValueError, match="only one class"):
        metrics.rank_auc([1, 1, 1], [0.1, 0.2, 0.3])
    with pytest.raises(ValueError, match="0/1 labels"):
        metrics.rank_auc([1, 2, 2], [0.1, 0.2, 0.3])
    with pytest.raises(ValueError, match="3 labels but score has 2"):
        metrics.rank_auc([0, 1, 1], [0.1, 0.2])


def test_medmnist_acc():
    assert metrics.medmnist_acc([0, 1, 1], [0.2, 0.7, 0.4]) == pytest.approx(2 / 3)
    assert metrics.medmnist_acc([2, 0], [[0.1, 0.2, 0.7], [0.5, 0.4, 0.1]]) == 1.0


def test_shape_mismatch_is_an_error():
    with pytest.raises(ValueError, match="labels"):
        metrics.medmnist_auc([0, 1, 0], [0.1, 0.9])


def test_threshold_for_sensitivity_reaches_the_target_and_is_the_highest():
    rng = np.random.default_rng(1)
    y = rng.integers(0, 2, 500)
    p = np.clip(0.35 * y + rng.uniform(size=500) * 0.65, 0, 1)
    for target in (0.8, 0.9, 0.95, 1.0):
        t = metrics.threshold_for_sensitivity(y, p, target)
        assert metrics.binary_report(y, p, t).sensitivity >= target
        higher = np.nextafter(np.sort(p[y == 1])[::-1][int(np.ceil(target * (y == 1).sum())) - 1], np.inf)
        assert metrics.binary_report(y, p, higher).sensitivity < target
    with pytest.raises(ValueError, match="target"):
        metrics.threshold_for_sensitivity(y, p, 0)


def test_bootstrap_ci_contains_point_and_narrows_with_more_data():
    rng = np.random.default_rng(2)

    def make(n):
        y = rng.integers(0, 2, n)
        return y, np.clip(0.3 * y + rng.uniform(size=n) * 0.7, 0, 1)

    y, p = make(100)
    point, lo, hi = metrics.bootstrap_ci(metrics.medmnist_auc, y, p, n_boot=300, seed=0)
    assert lo <= point <= hi
    assert metrics.bootstrap_ci(metrics.medmnist_auc, y, p, n_boot=300, seed=0) == (point, lo, hi)  # seeded
    y2, p2 = make(2000)
    _, lo2, hi2 = metrics.bootstrap_ci(metrics.medmnist_auc, y2, p2, n_boot=300, seed=0)
    assert hi2 - lo2 < hi - lo


def test_paired_difference_is_the_difference_and_narrower_than_unpaired():
    from sklearn.metrics import roc_auc_score

    rng = np.random.default_rng(4)
    y = rng.integers(0, 2, 300)
    hard = rng.normal(size=300)  # what both models find hard: shared noise
    a = y + hard + 0.3 * rng.normal(size=300)
    b = y + hard + 0.3 * rng.normal(size=300) - 0.2 * y  # b separates the classes a little worse
    d = metrics.paired_difference(roc_auc_score, y, a, b, n_boot=400, seed=0)
    assert d[0] == pytest.approx(roc_auc_score(y, a) - roc_auc_score(y, b))
    assert d[1] <= d[0] <= d[2]
    ca = metrics.bootstrap_ci(roc_auc_score, y, a, n_boot=400, seed=0)
    cb = metrics.bootstrap_ci(roc_auc_score, y, b, n_boot=400, seed=1)
    assert d[2] - d[1] < (ca[2] - ca[1]) + (cb[2] - cb[1])  # pairing cancels the shared noise
    same = metrics.paired_difference(roc_auc_score, y, a, a, n_boot=50, seed=0)
    assert same == (0.0, 0.0, 0.0)
    # a different metric for the second score: the sensitivity at two thresholds
    sens = lambda t: lambda yy, s: float(np.mean(s[yy == 1] > t))  # noqa: E731
    d2 = metrics.paired_difference(sens(0.0), y, a, a, metric_b=sens(1.0), n_boot=50, seed=0)
    assert d2[0] == pytest.approx(sens(0.0)(y, a) - sens(1.0)(y, a)) and d2[0] > 0


def test_ece_zero_for_perfect_calibration_and_positive_for_overconfidence():
    # in each bin the accuracy equals the confidence exactly
    conf = np.repeat([0.55, 0.75, 0.95], 20)
    correct = np.concatenate([np.arange(20) < 11, np.arange(20) < 15, np.arange(20) < 19])
    y = np.where(correct, 1, 0)
    p = conf  # predicts class 1 with confidence conf
    assert metrics.expected_calibration_error(y, p) == pytest.approx(0.0, abs=1e-12)
    assert metrics.expected_calibration_error(np.zeros(10, int), np.full(10, 0.99)) == pytest.approx(0.99)


def test_reliability_curve_counts_cover_all_cases():
    rng = np.random.default_rng(3)
    s = rng.dirichlet(np.ones(4), 250)
    conf, acc, count = metrics.reliability_curve(rng.integers(0, 4, 250), s, n_bins=10)
    assert count.sum() == 250 and len(conf) == 10
    assert np.all(np.isnan(conf[count == 0]))


def test_platt_recalibration_moves_a_shifted_threshold_back_and_keeps_the_auc():
    rng = np.random.default_rng(0)
    y = rng.integers(0, 2, 4000)
    logit_true = rng.normal(0, 1, 4000) + 2.0 * (y - 0.5)  # well-separated classes
    p1_true = 1 / (1 + np.exp(-logit_true))
    y = (rng.random(4000) < p1_true).astype(int)  # labels drawn from the true probabilities
    p1_biased = 1 / (1 + np.exp(-(logit_true + 1.5)))  # a model that over-calls class 1
    scores = np.stack([1 - p1_biased, p1_biased], axis=1)
    cal = metrics.fit_recalibration(y[:2000], scores[:2000])
    assert cal.method == "platt"
    a, b = cal.params
    assert a == pytest.approx(1.0, abs=0.15) and b == pytest.approx(-1.5, abs=0.2)
    fixed = cal(scores[2000:])
    assert np.allclose(fixed.sum(axis=1), 1.0)
    assert metrics.medmnist_auc(y[2000:], fixed) == pytest.approx(metrics.medmnist_auc(y[2000:], scores[2000:]))
    assert metrics.medmnist_acc(y[2000:], fixed) > metrics.medmnist_acc(y[2000:], scores[2000:])
    assert metrics.expected_calibration_error(y[2000:], fixed) < metrics.expected_calibration_error(
        y[2000:], scores[2000:]
    )


def test_temperature_recalibration_softens_overconfidence_and_keeps_the_argmax():
    rng = np.random.default_rng(1)
    n, k = 3000, 4
    logits = rng.normal(0, 1.5, (n, k))
    p_true = np.exp(logits) / np.exp(logits).sum(axis=1, keepdims=True)
    y = np.array([rng.choice(k, p=p) for p in p_true])
    over = np.exp(3 * logits) / np.exp(3 * logits).sum(axis=1, keepdims=True)  # temperature 1/3
    cal = metrics.fit_recalibration(y, over)
    assert cal.method == "temperature" and cal.params[0] == pytest.approx(3.0, rel=0.15)
    fixed = cal(over)
    assert (fixed.argmax(1) == over.argmax(1)).all()
    assert metrics.expected_calibration_error(y, fixed) < metrics.expected_calibration_error(y, over) / 2


def test_recalibration_needs_both_classes():
    with pytest.raises(ValueError, match="both classes"):
        metrics.fit_recalibration(np.ones(5, int), np.full((5, 2), 0.5))


def test_operating_point_at_fixed_specificity():
    y = np.array([0] * 10 + [1] * 4)
    p = np.array([0.0, 0.1, 0.2, 0.3, 0.4, 0.5, 0.6, 0.7, 0.8, 0.9, 0.65, 0.85, 0.95, 0.05])
    t = metrics.threshold_for_specificity(y, p, 0.8)
    assert t == pytest.approx(0.7)  # 8 of 10 negatives at or below 0.7
    assert np.mean(p[y == 0] <= t) >= 0.8 and np.mean(p[y == 0] <= 0.6) < 0.8
    assert metrics.sensitivity_at_specificity(y, p, 0.8) == pytest.approx(2 / 4)  # 0.85 and 0.95
    # agrees with the ROC curve of scikit-learn at the same specificity
    from sklearn.metrics import roc_curve

    fpr, tpr, _ = roc_curve(y, p)
    assert metrics.sensitivity_at_specificity(y, p, 0.8) == pytest.approx(tpr[fpr <= 0.2 + 1e-12].max())
    with pytest.raises(ValueError, match="specificity"):
        metrics.threshold_for_specificity(y, p, 0.0)


def test_mean_ci_and_paired_difference_ci():
    m, lo, hi = metrics.mean_ci([0.2, 0.4, 0.6, 0.8], n_boot=500)
    assert m == pytest.approx(0.5) and lo < m < hi and 0.2 <= lo and hi <= 0.8
    d, lo, hi = metrics.paired_difference_ci([0.9, 0.8, 0.7], [0.8, 0.7, 0.6], n_boot=200)
    assert d == pytest.approx(0.1) and lo == pytest.approx(0.1) and hi == pytest.approx(0.1)


def test_compare_over_seeds_separates_seed_and_case_variation():
    rng = np.random.default_rng(0)
    base = rng.uniform(0.6, 0.9, 20)
    # model A is 0.02 better in seed 0, 0.01 worse in seed 1, 0.02 better in seed 2
    shifts = {0: 0.02, 1: -0.01, 2: 0.02}
    scores = {s: {"A": base + d + rng.normal(0, 0.005, 20), "B": base} for s, d in shifts.items()}
    out = metrics.compare_over_seeds(scores, "A", "B", n_boot=500)
    assert out["seeds"] == [0, 1, 2] and [r[0] for r in out["per_seed"]] == [0, 1, 2]
    per_seed = np.array([r[3] for r in out["per_seed"]])
    assert per_seed == pytest.approx([0.02, -0.01, 0.02], abs=0.004)
    mean, lo, hi = out["diff"]
    assert mean == pytest.approx(per_seed.mean()) and lo < mean < hi
    assert out["diff_sd"] == pytest.approx(np.std(per_seed, ddof=1))
    assert out["a_at_least_b"] == 2
    assert out["mean_a"] - out["mean_b"] == pytest.approx(mean)
    one = metrics.compare_over_seeds({3: scores[0]}, "A", "B", n_boot=200)
    assert np.isnan(one["diff_sd"]) and one["a_at_least_b"] == 1


def test_compare_over_seeds_rejects_mismatched_cases():
    with pytest.raises(ValueError, match="seed 1, model 'B': 3 cases, expected 4"):
        metrics.compare_over_seeds(
            {0: {"A": [1, 1, 1, 1], "B": [1, 1, 1, 1]}, 1: {"A": [1, 1, 1, 1], "B": [1, 1, 1]}}, "A", "B"
        )
    with pytest.raises(ValueError, match="seed 0: no scores for model 'B'"):
        metrics.compare_over_seeds({0: {"A": [1.0]}}, "A", "B")
    with pytest.raises(ValueError, match="empty"):
        metrics.compare_over_seeds({}, "A", "B")


# ---------------------------------------------------------------------------
# losses
# ---------------------------------------------------------------------------
