"""Classification metrics as the medical imaging field reports them, checked against scikit-learn.

* :func:`rank_auc` is the binary ROC AUC in rank form (scikit-learn's value, fast enough for bootstraps).
* :func:`medmnist_auc` / :func:`medmnist_acc` follow the MedMNIST v2 evaluator
  (Yang et al. 2023), so numbers are comparable with its benchmark table:
  binary tasks use the positive-class score (ACC at threshold 0.5);
  multi-class and ordinal tasks average the one-vs-rest AUC over classes
  (ACC by arg-max).
* :func:`binary_report` gives sensitivity, specificity, balanced accuracy,
  PPV/NPV at a threshold (counts equal to :func:`sklearn.metrics.confusion_matrix`, a test checks).
* :func:`bootstrap_ci` gives percentile confidence intervals by resampling
  test cases (the unit a clinician cares about) with a fixed seed.
* :func:`expected_calibration_error` and :func:`reliability_curve` measure
  calibration (Guo et al. 2017).
* :func:`threshold_for_sensitivity`, :func:`threshold_for_specificity` and
  :func:`sensitivity_at_specificity` pick operating points on the ROC curve.
* :func:`fit_recalibration` fits Platt or temperature scaling on the validation split.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import numpy as np
from scipy.stats import rankdata

from . import course


def _scores_2d(y_score: np.ndarray) -> np.ndarray:
    s = np.asarray(y_score, dtype=float)
    if s.ndim == 1:  # a single positive-class probability per case
        s = np.stack([1.0 - s, s], axis=1)
    if s.ndim != 2:
        raise ValueError(f"y_score must be (N,) or (N, n_classes), got shape {s.shape}")
    return s


def _labels_1d(y_true: np.ndarray, n: int) -> np.ndarray:
    y = np.asarray(y_true).reshape(-1)
    if len(y) != n:
        raise ValueError(f"y_true has {len(y)} labels but y_score has {n} rows")
    return y.astype(int)


def rank_auc(y_true: np.ndarray, score: np.ndarray) -> float:
    """Binary ROC AUC in its rank (Mann–Whitney) form: ``sklearn.metrics.roc_auc_score``'s value, ~30× faster.

    AUC = (sum of the positives' ranks − n₁(n₁+1)/2) / (n₁ n₀), with tied scores given their average rank
    (which is the trapezoid rule's half credit for ties).  The bootstraps call the AUC thousands of times, where
    scikit-learn's input validation (~2.5 ms a call for 600 cases) dominated; a test checks both agree, ties
    included.  Chapter 2, section 4.3 (exercise 2.2) derives it.  ``y_true`` holds 0/1 (or booleans); raises
    ``ValueError`` when only one class is present (the AUC is undefined), as scikit-learn does.
    """
    y = np.asarray(y_true).reshape(-1)
    s = np.asarray(score, dtype=float).reshape(-1)
    if len(y) != len(s):
        raise ValueError(f"y_true has {len(y)} labels but score has {len(s)} values")
    if not np.isin(y, (0, 1)).all():
        raise ValueError(f"y_true must hold 0/1 labels, got values {np.unique(y)[:5]}")
    pos = y == 1
    n1 = int(pos.sum())
    n0 = len(y) - n1
    if n1 == 0 or n0 == 0:
        raise ValueError(f"only one class present in y_true ({n1} positive, {n0} negative): the AUC is not defined")
    return float((rankdata(s)[pos].sum() - n1 * (n1 + 1) / 2) / (n1 * n0))


def medmnist_auc(y_true: np.ndarray, y_score: np.ndarray) -> float:
    """AUC as in the MedMNIST evaluator: positive-class AUC (binary) or mean one-vs-rest AUC."""
    s = _scores_2d(y_score)
    y = _labels_1d(y_true, len(s))
    if s.shape[1] == 2:
        return rank_auc(y, s[:, 1])
    aucs = [rank_auc((y == k).astype(int), s[:, k]) for k in range(s.shape[1]) if 0 < (y == k).sum() < len(y)]
    return float(np.mean(aucs))


def medmnist_acc(y_true: np.ndarray, y_score: np.ndarray, threshold: float = 0.5) -> float:
    """Accuracy as in the MedMNIST evaluator: threshold 0.5 (binary) or arg-max (multi-class)."""
    s = _scores_2d(y_score)
    y = _labels_1d(y_true, len(s))
    pred = (s[:, 1] > threshold).astype(int) if s.shape[1] == 2 else s.argmax(axis=1)
    return float(np.mean(y == pred))


@dataclass(frozen=True)
class BinaryReport:
    """Operating-point metrics of a binary classifier at ``threshold``."""

    threshold: float
    tp: int
    fp: int
    tn: int
    fn: int
    sensitivity: float  # recall of the positive class, TP / (TP + FN)
    specificity: float  # TN / (TN + FP)
    balanced_accuracy: float
    ppv: float  # precision, TP / (TP + FP)
    npv: float  # TN / (TN + FN)
    accuracy: float


def _ratio(a: int, b: int) -> float:
    return float(a / b) if b else float("nan")


def binary_report(y_true: np.ndarray, p_positive: np.ndarray, threshold: float = 0.5) -> BinaryReport:
    """Confusion-matrix metrics at a threshold on the positive-class probability (> threshold = positive)."""
    p = np.asarray(p_positive, dtype=float).reshape(-1)
    y = _labels_1d(y_true, len(p))
    if not np.isin(y, (0, 1)).all():
        raise ValueError(f"y_true must hold 0/1 labels for a binary report, got values {np.unique(y)[:5]}")
    pred = (p > threshold).astype(int)
    pos, called = y == 1, pred == 1  # counted directly: sklearn's confusion_matrix costs ~1 ms a call in bootstraps
    tp, fn = int((pos & called).sum()), int((pos & ~called).sum())
    tn, fp = int((~pos & ~called).sum()), int((~pos & called).sum())
    sens, spec = _ratio(tp, tp + fn), _ratio(tn, tn + fp)
    return BinaryReport(
        threshold=float(threshold),
        tp=tp,
        fp=fp,
        tn=tn,
        fn=fn,
        sensitivity=sens,
        specificity=spec,
        balanced_accuracy=(sens + spec) / 2,
        ppv=_ratio(tp, tp + fp),
        npv=_ratio(tn, tn + fn),
        accuracy=_ratio(tp + tn, len(y)),
    )


def threshold_for_sensitivity(y_true: np.ndarray, p_positive: np.ndarray, target: float) -> float:
    """The highest threshold whose sensitivity (with ``p > t`` positive) is at least ``target``."""
    if not 0 < target <= 1:
        raise ValueError(f"target sensitivity must be in (0, 1], got {target}")
    p = np.asarray(p_positive, dtype=float).reshape(-1)
    y = _labels_1d(y_true, len(p))
    pos = np.sort(p[y == 1])[::-1]
    if len(pos) == 0:
        raise ValueError("y_true has no positive case")
    k = int(np.ceil(target * len(pos) - 1e-9))  # need at least k positives strictly above t
    return float(np.nextafter(pos[k - 1], -np.inf))


def threshold_for_specificity(y_true: np.ndarray, p_positive: np.ndarray, target: float) -> float:
    """The lowest threshold ``t`` whose specificity (cases with ``p > t`` called positive) is at least ``target``.

    Lower thresholds call more cases positive, so this is the most sensitive
    operating point that keeps the specificity target.
    """
    if not 0.0 < float(target) <= 1.0:
        raise ValueError(f"target specificity must be in (0, 1], got {target}")
    y = np.asarray(y_true).reshape(-1).astype(int)
    p = np.asarray(p_positive, dtype=float).reshape(-1)
    if len(y) != len(p):
        raise ValueError(f"{len(y)} labels but {len(p)} scores")
    neg = np.sort(p[y == 0])
    if len(neg) == 0:
        raise ValueError("y_true has no negative case")
    k = int(np.ceil(float(target) * len(neg) - 1e-9))  # at least k negatives must satisfy p <= t
    return float(neg[k - 1])


def sensitivity_at_specificity(y_true: np.ndarray, p_positive: np.ndarray, target: float) -> float:
    """Sensitivity at the threshold from :func:`threshold_for_specificity` (on the same cases; chapter 6, section 2)."""
    y = np.asarray(y_true).reshape(-1).astype(int)
    p = np.asarray(p_positive, dtype=float).reshape(-1)
    t = threshold_for_specificity(y, p, target)
    pos = p[y == 1]
    if len(pos) == 0:
        raise ValueError("y_true has no positive case")
    return float(np.mean(pos > t))


def bootstrap_ci(
    metric: Callable[[np.ndarray, np.ndarray], float],
    y_true: np.ndarray,
    y_score: np.ndarray,
    *,
    n_boot: int = 1000,
    alpha: float = 0.05,
    seed: int = 0,
    stratified: bool = True,
) -> tuple[float, float, float]:
    """Point estimate and percentile (1 - alpha) confidence interval by resampling cases.

    Stratified resampling keeps the class counts of each replicate equal to the
    original ones, so every replicate has both classes (AUC stays defined).
    """
    y = np.asarray(y_true).reshape(-1)
    s = np.asarray(y_score)
    if len(s) != len(y):
        raise ValueError(f"y_true has {len(y)} labels but y_score has {len(s)} rows")
    rng = np.random.default_rng(seed)
    point = float(metric(y, s))
    groups = [np.flatnonzero(y == c) for c in np.unique(y)] if stratified else [np.arange(len(y))]
    stats = np.empty(n_boot)
    for b in course.progress(range(n_boot), desc="bootstrap"):
        idx = np.concatenate([rng.choice(g, size=len(g), replace=True) for g in groups])
        stats[b] = metric(y[idx], s[idx])
    lo, hi = np.nanpercentile(stats, [100 * alpha / 2, 100 * (1 - alpha / 2)])
    return point, float(lo), float(hi)


def paired_difference(
    metric: Callable[[np.ndarray, np.ndarray], float],
    y_true: np.ndarray,
    score_a: np.ndarray,
    score_b: np.ndarray,
    *,
    metric_b: Callable[[np.ndarray, np.ndarray], float] | None = None,
    **bootstrap_kwargs,
) -> tuple[float, float, float]:
    """``metric(y, a) − metric_b(y, b)`` on the same cases, with a paired bootstrap interval.

    ``metric_b`` defaults to ``metric`` (the same metric for two models' scores); a different one compares,
    e.g., a sensitivity at another threshold.  Each replicate resamples the cases once and scores both
    models on them (:func:`bootstrap_ci`, whose keyword arguments pass through), so what the two models
    share cancels.  Taught in chapter 6, sections 1 and 2.
    """
    metric_b = metric if metric_b is None else metric_b
    both = np.column_stack([np.asarray(score_a), np.asarray(score_b)])  # one score per case and model
    return bootstrap_ci(lambda y, s: metric(y, s[:, 0]) - metric_b(y, s[:, 1]), y_true, both, **bootstrap_kwargs)


def mean_ci(values, *, n_boot: int = 2000, alpha: float = 0.05, seed: int = 0) -> tuple[float, float, float]:
    """Mean of per-case values and its percentile bootstrap ``(1 - alpha)`` CI, resampling cases."""
    v = np.asarray(values, float).reshape(-1)
    return bootstrap_ci(
        lambda _y, s: float(np.mean(s)), np.zeros(len(v)), v, n_boot=n_boot, alpha=alpha, seed=seed, stratified=False
    )


def paired_difference_ci(values_a, values_b, **kwargs) -> tuple[float, float, float]:
    """Mean of the per-case differences ``a - b`` (same test cases) with its bootstrap CI."""
    a, b = np.asarray(values_a, float), np.asarray(values_b, float)
    if a.shape != b.shape:
        raise ValueError(f"paired values must have one shape, got {a.shape} and {b.shape}")
    return mean_ci(a - b, **kwargs)


def compare_over_seeds(
    scores_by_seed, model_a: str, model_b: str, *, n_boot: int = 2000, alpha: float = 0.05, seed: int = 0
) -> dict:
    """Summarise a paired comparison of two models repeated over several training seeds on one test set.

    ``scores_by_seed[s][name]`` holds the per-case scores (e.g. Dice) of model
    ``name`` trained with seed ``s``, on the same test cases in the same order
    for every seed and model.  A confidence interval from one training run
    resamples test cases only; it says nothing about how the ranking changes
    with the seed.  This summary shows both sources of variation:

    * per seed: the mean score of each model and the mean paired difference
      ``a - b`` (``"per_seed"``: rows ``(seed, mean_a, mean_b, mean_diff)``);
    * between seeds: the standard deviation of the per-seed differences
      (``"diff_sd"``, ``nan`` for one seed) and the number of seeds in which
      ``a`` scored at least as high as ``b`` (``"a_at_least_b"``);
    * the seed-averaged comparison: each case's score is averaged over the
      seeds (the expected score of one training run on that case), and the
      paired bootstrap over cases gives ``"diff"`` = ``(mean, low, high)``.
      Its mean equals the mean of the per-seed differences.

    Raises ``ValueError`` naming the seed and model whose scores are missing
    or have a different number of cases.
    """
    seeds = list(scores_by_seed)
    if not seeds:
        raise ValueError("scores_by_seed is empty: train at least one seed")
    rows = {model_a: [], model_b: []}
    for s in seeds:
        for name, kept in rows.items():
            if name not in scores_by_seed[s]:
                raise ValueError(f"seed {s}: no scores for model {name!r} (have {sorted(scores_by_seed[s])})")
            v = np.asarray(scores_by_seed[s][name], float).reshape(-1)
            n_cases = len(rows[model_a][0]) if rows[model_a] else len(v)
            if len(v) != n_cases:
                raise ValueError(
                    f"seed {s}, model {name!r}: {len(v)} cases, expected {n_cases} "
                    "(every seed and model must be scored on the same test cases)"
                )
            kept.append(v)
    a, b = np.stack(rows[model_a]), np.stack(rows[model_b])  # (n_seeds, n_cases)
    per_seed_diff = (a - b).mean(axis=1)
    return {
        "seeds": seeds,
        "per_seed": [
            (s, float(ma), float(mb), float(d))
            for s, ma, mb, d in zip(seeds, a.mean(axis=1), b.mean(axis=1), per_seed_diff)
        ],
        "mean_a": float(a.mean()),
        "mean_b": float(b.mean()),
        "diff": paired_difference_ci(a.mean(axis=0), b.mean(axis=0), n_boot=n_boot, alpha=alpha, seed=seed),
        "diff_sd": float(per_seed_diff.std(ddof=1)) if len(seeds) > 1 else float("nan"),
        "a_at_least_b": int((per_seed_diff >= 0).sum()),
    }


# ---------------------------------------------------------------------------
# training helpers
# ---------------------------------------------------------------------------


def reliability_curve(
    y_true: np.ndarray, y_score: np.ndarray, n_bins: int = 10
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Per confidence bin: mean confidence, accuracy, and count (top-label calibration).

    For binary scores given as (N,) the confidence is that of the predicted label.
    Empty bins are returned with NaN confidence/accuracy and count 0.
    """
    s = _scores_2d(y_score)
    y = _labels_1d(y_true, len(s))
    conf = s.max(axis=1)
    correct = (s.argmax(axis=1) == y).astype(float)
    edges = np.linspace(0.0, 1.0, n_bins + 1)
    which = np.clip(np.digitize(conf, edges[1:-1], right=True), 0, n_bins - 1)
    count = np.bincount(which, minlength=n_bins)
    with np.errstate(invalid="ignore", divide="ignore"):
        mean_conf = np.bincount(which, weights=conf, minlength=n_bins) / count
        acc = np.bincount(which, weights=correct, minlength=n_bins) / count
    return mean_conf, acc, count


def expected_calibration_error(y_true: np.ndarray, y_score: np.ndarray, n_bins: int = 10) -> float:
    """ECE = sum over bins of (n_b / N) * |accuracy_b - confidence_b| (equal-width bins)."""
    conf, acc, count = reliability_curve(y_true, y_score, n_bins)
    keep = count > 0
    return float(np.sum(count[keep] / count.sum() * np.abs(acc[keep] - conf[keep])))


@dataclass(frozen=True)
class Recalibration:
    """A post-hoc recalibration fitted on validation predictions (see :func:`fit_recalibration`).

    ``method`` is ``"platt"`` (binary: ``sigmoid(a * logit + b)``) or
    ``"temperature"`` (multi-class: ``softmax(log p / T)``); ``params`` holds
    ``(a, b)`` or ``(T,)``.  Calling it maps ``(N, K)`` probabilities to
    recalibrated ``(N, K)`` probabilities.
    """

    method: str
    params: tuple[float, ...]

    def __call__(self, y_score: np.ndarray) -> np.ndarray:
        s = np.clip(_scores_2d(y_score), 1e-7, 1.0)
        if self.method == "platt":
            a, b = self.params
            z = a * (np.log(s[:, 1]) - np.log(s[:, 0])) + b
            p1 = 1.0 / (1.0 + np.exp(-z))
            return np.stack([1.0 - p1, p1], axis=1)
        (t,) = self.params
        z = np.log(s) / t
        z -= z.max(axis=1, keepdims=True)
        e = np.exp(z)
        return e / e.sum(axis=1, keepdims=True)


def fit_recalibration(y_val: np.ndarray, p_val: np.ndarray) -> Recalibration:
    """Fit a post-hoc recalibration of a classifier's probabilities on the *validation* split.

    Binary tasks: Platt scaling (Platt 1999), a logistic regression of the
    label on the model's logit ``log(p1 / p0)`` with scikit-learn (unpenalised).
    Its intercept moves the 0.5 decision threshold, so it changes ACC,
    sensitivity and specificity, but not the AUC (a monotone map).
    Multi-class tasks: temperature scaling (Guo et al. 2017), one ``T > 0``
    minimising the validation negative log-likelihood; it changes confidences
    (ECE), never the arg-max.  Never fit it on the test set.
    """
    from scipy.optimize import minimize_scalar
    from sklearn.linear_model import LogisticRegression

    s = np.clip(_scores_2d(p_val), 1e-7, 1.0)
    y = _labels_1d(y_val, len(s))
    if s.shape[1] == 2:
        if len(np.unique(y)) != 2:
            raise ValueError("fit_recalibration needs both classes in the validation labels")
        logit = (np.log(s[:, 1]) - np.log(s[:, 0]))[:, None]
        lr = LogisticRegression(C=np.inf).fit(logit, y)  # no penalty
        return Recalibration("platt", (float(lr.coef_[0, 0]), float(lr.intercept_[0])))
    logs = np.log(s)

    def nll(log_t: float) -> float:
        z = logs / np.exp(log_t)
        z = z - z.max(axis=1, keepdims=True)
        return float(-(z[np.arange(len(y)), y] - np.log(np.exp(z).sum(axis=1))).mean())

    res = minimize_scalar(nll, bounds=(-3.0, 3.0), method="bounded")
    return Recalibration("temperature", (float(np.exp(res.x)),))
