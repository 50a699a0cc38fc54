"""Exercise checks of chapter 2 (CNN classification), one function per exercise.

Each check recomputes what it needs from the student's own objects (their list, function,
threshold or trained model) and reports through :mod:`utils.exercises`; see
:mod:`utils.checks` for the convention and ``tests/test_checks_ch2.py`` for the wrong and the
alternative right answers every check is tested with.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import numpy as np

from .. import exercises

# Exercise 2.4: the spurious marker and the corner in which its Grad-CAM mass is measured.
MARKER = (slice(1, 5), slice(1, 5))  # rows and columns 1-4
CORNER = (slice(0, 8), slice(0, 8))  # the 8×8 top-left corner


def _not_attempted(exercise: str, hint: str) -> exercises.CheckResult:
    return exercises.check_true(exercise, exercises.NOT_ATTEMPTED, hint=hint)


def _placeholder(*values: Any) -> bool:
    return any(v is None or v is Ellipsis or v is exercises.NOT_ATTEMPTED for v in values)


# ---------------------------------------------------------------------------
# 2.1 output shapes and parameters by hand (section 2)
# ---------------------------------------------------------------------------


def expected_2_1() -> list[int]:
    """[parameters of the source CNN, Flatten length with 'valid' convolutions], both read off Keras models."""
    import keras
    from keras import layers

    from .. import classify

    n_params = int(classify.source_cnn().count_params())
    x = inp = keras.Input((32, 32, 3))
    for filters in (32, 64):
        x = layers.MaxPooling2D(2)(layers.Conv2D(filters, 3, padding="valid")(x))
    return [n_params, int(keras.Model(inp, layers.Flatten()(x)).output.shape[-1])]


def ex_2_1(answer: Any) -> exercises.CheckResult:
    """Exercise 2.1 (section 2): ``answer = [total parameters, Flatten length with 'valid' padding]``.

    The expected integers are recomputed from Keras models (``classify.source_cnn`` and the same
    trunk with ``padding="valid"``), not stored.
    """
    hint = "use k·k·C_in·C_out + C_out per layer, and H_out = floor((H − k)/s) + 1 for 'valid'"
    if _placeholder(answer):
        return _not_attempted("2.1", hint)
    try:
        values = np.asarray(answer, dtype=float).reshape(-1)
    except (TypeError, ValueError):
        return exercises.check_true("2.1", False, hint="`answer` must be a list of two integers. " + hint)
    return exercises.check_value("2.1", values, np.asarray(expected_2_1(), dtype=float), rtol=0.0, atol=0.0, hint=hint)


# ---------------------------------------------------------------------------
# 2.2 AUC as a probability (section 4.3)
# ---------------------------------------------------------------------------


def ex_2_2(
    auc_rank: Callable, y_test: np.ndarray | None = None, p_test: np.ndarray | None = None
) -> exercises.CheckResult:
    """Exercise 2.2 (section 4.3): ``auc_rank(y_true, score)`` equals ``sklearn.metrics.roc_auc_score``.

    Tested on random scores rounded so that there are ties, on an all-tied case, and on the
    notebook's PneumoniaMNIST test predictions when ``y_test``/``p_test`` are given.
    """
    from sklearn.metrics import roc_auc_score

    rng = np.random.default_rng(2)
    cases = []
    for n in (12, 57, 300):
        y = rng.integers(0, 2, n)
        y[:2] = [0, 1]  # both classes present
        s = np.round(rng.uniform(size=n) + 0.3 * y, 1)  # rounded, so there are ties
        cases.append(((y, s), roc_auc_score(y, s)))
    y = np.array([0, 1, 0, 1, 1])
    cases.append(((y, np.full(5, 0.3)), 0.5))  # every pair tied
    if y_test is not None and p_test is not None:
        cases.append(((np.asarray(y_test), np.asarray(p_test)), roc_auc_score(y_test, p_test)))
    return exercises.check_function(
        "2.2", auc_rank, cases, rtol=1e-9, hint="compare every positive with every negative; a tie counts one half"
    )


# ---------------------------------------------------------------------------
# 2.3 a threshold for a target sensitivity (section 4.4)
# ---------------------------------------------------------------------------


def ex_2_3(
    t95: Any,
    sens95: Any,
    spec95: Any,
    val: tuple[np.ndarray, np.ndarray],
    test: tuple[np.ndarray, np.ndarray],
    *,
    target: float = 0.95,
) -> exercises.CheckResult:
    """Exercise 2.3 (section 4.4): a threshold with validation sensitivity ≥ ``target`` and the best specificity.

    ``val`` and ``test`` are ``(labels with disease = 1, disease probability)``; a case is positive
    when its probability is strictly greater than the threshold. Every threshold whose
    validation sensitivity is at least ``target`` and whose validation specificity equals the
    best that any such threshold reaches passes (the highest one, a midpoint below it, ...).
    ``sens95``/``spec95`` must be that threshold's test sensitivity and specificity, recomputed
    here from ``t95``.
    """
    from .. import metrics

    hint = (
        f"keep at least {target:.0%} of the validation positives strictly above the threshold, with no "
        "validation specificity lost that a higher such threshold would keep; then evaluate it on the test split"
    )
    if _placeholder(t95, sens95, spec95):
        return _not_attempted("2.3", hint)
    try:
        t = float(t95)
        sens, spec = float(sens95), float(spec95)
    except (TypeError, ValueError):
        return exercises.check_true("2.3", False, hint="t95, sens95 and spec95 must be numbers. " + hint)
    yv, pv = val
    at_t = metrics.binary_report(yv, pv, t)
    best = metrics.binary_report(yv, pv, metrics.threshold_for_sensitivity(yv, pv, target))
    on_test = metrics.binary_report(*test, t)
    ok = (
        np.isfinite(t)
        and at_t.sensitivity >= target
        and at_t.tn == best.tn  # the best validation specificity
        and np.isclose(sens, on_test.sensitivity)
        and np.isclose(spec, on_test.specificity)
    )
    return exercises.check_true("2.3", bool(ok), hint=hint)


# ---------------------------------------------------------------------------
# 2.4 a shortcut that Grad-CAM hides (section 4.6)
# ---------------------------------------------------------------------------


def shortcut_evidence(
    model, stamp: Callable, x_test: np.ndarray, y_test: np.ndarray, *, n_boot: int = 200, seed: int = 0
) -> dict[str, Any]:
    """Recompute exercise 2.4's four numbers, and the paired intervals its check judges, from the model.

    ``stamp(images, labels)`` is the student's marker function; it is called on a copy of the
    test images. Returns the AUCs on stamped and clean test images, the mean Grad-CAM mass
    (class 1) in the 8×8 corner for stamped and clean pneumonia images, the corner's area
    share, whether ``stamp`` marked exactly the pneumonia images, and paired bootstrap
    intervals ``(estimate, low, high)`` of AUC stamped − clean and mass stamped − clean.
    """
    from .. import classify, metrics

    x = np.asarray(x_test)
    y = np.asarray(y_test).reshape(-1)
    x_marked = np.asarray(stamp(x.copy(), y.copy()))
    sick = y == 1
    corner = np.zeros(x.shape[1:3], bool)
    corner[CORNER] = True
    changed = (x_marked != x).reshape(len(x), -1).any(axis=1)
    in_marker = np.zeros(x.shape[1:3], bool)
    in_marker[MARKER] = True
    marker_ok = bool(
        x_marked.shape == x.shape
        and not changed[~sick].any()
        and changed[sick].all()
        and np.allclose(x_marked[sick][:, in_marker], 1.0)
        and np.array_equal(x_marked[:, ~in_marker], x[:, ~in_marker])
    )
    p_marked = classify.predict_proba(model, x_marked)[:, 1]
    p_clean = classify.predict_proba(model, x)[:, 1]
    auc = metrics.rank_auc  # the rank (Mann–Whitney) form of exercise 2.2: roc_auc_score's value, faster

    mass_marked = classify.mass_inside(classify.grad_cam(model, x_marked[sick], class_index=1), corner)
    mass_clean = classify.mass_inside(classify.grad_cam(model, x[sick], class_index=1), corner)
    d_auc = metrics.bootstrap_ci(
        lambda a, s: auc(a, s[:, 1]) - auc(a, s[:, 0]),
        y,
        np.stack([p_clean, p_marked], axis=1),
        n_boot=n_boot,
        seed=seed,
    )
    both = np.stack([np.nan_to_num(mass_clean), np.nan_to_num(mass_marked)], axis=1)  # a zero map has no mass inside
    d_mass = metrics.bootstrap_ci(
        lambda a, s: float(s[:, 1].mean() - s[:, 0].mean()),
        np.zeros(len(both)),
        both,
        n_boot=n_boot,
        seed=seed,
        stratified=False,
    )
    return dict(
        auc_marked=auc(y, p_marked),
        auc_clean=auc(y, p_clean),
        mass_marked=float(np.nanmean(mass_marked)),
        mass_clean=float(np.nanmean(mass_clean)),
        corner_share=float(corner.mean()),
        marker_ok=marker_ok,
        auc_diff=d_auc,
        mass_diff=d_mass,
    )


def ex_2_4(
    model,
    stamp: Callable,
    x_test: np.ndarray,
    y_test: np.ndarray,
    *,
    auc_marked: Any,
    auc_clean: Any,
    mass_marked: Any,
    mass_clean: Any,
    n_boot: int = 200,
    seed: int = 0,
) -> exercises.CheckResult:
    """Exercise 2.4 (section 4.6): the network trained on stamped images uses the marker, and Grad-CAM shows it.

    Everything is recomputed from the student's ``model`` and ``stamp`` on the test images
    (:func:`shortcut_evidence`). The check passes when

    * ``stamp`` sets the 4×4 marker to white on the pneumonia images and changes nothing else;
    * the four reported numbers are those of this model (AUC within 0.005, masses within 0.01);
    * the paired bootstrap interval of AUC(stamped) − AUC(clean) lies above zero: the marker
      raises the ranking of the very same test cases (:func:`utils.stats.verdict`);
    * the paired interval of the corner's Grad-CAM mass, stamped − clean, lies above zero, and
      the stamped maps put more than the corner's area share into it (a map spread evenly over the
      image would put exactly its share there).

    These bars come from the question (does the marker change the same cases' scores and maps?),
    not from the reference solution's numbers. With the chapter's fast-profile recipe the
    reference cleared them on TensorFlow and on JAX by wide margins (see book/decisions/02.md).
    """
    from .. import stats

    hint = (
        "stamp only the pneumonia images (rows and columns 1–4 set to 1.0), train on the stamped set, and "
        "report the AUCs and the corner's Grad-CAM mass of that model on stamped and clean test images"
    )
    if _placeholder(model, stamp, auc_marked, auc_clean, mass_marked, mass_clean):
        return _not_attempted("2.4", hint)
    try:
        ev = shortcut_evidence(model, stamp, x_test, y_test, n_boot=n_boot, seed=seed)
        reported = np.array([auc_marked, auc_clean, mass_marked, mass_clean], dtype=float)
    except exercises.NotAttempted:
        return _not_attempted("2.4", hint)
    except Exception as exc:  # the student's objects raised: say what, not the answer
        return exercises.check_true(
            "2.4", False, hint=f"recomputing from your model raised {type(exc).__name__}: {exc}. {hint}"
        )
    if not ev["marker_ok"]:
        return exercises.check_true(
            "2.4",
            False,
            hint="`stamp` must set rows and columns 1–4 to 1.0 in the pneumonia "
            "images only, and leave the normal images unchanged",
        )
    recomputed = np.array([ev["auc_marked"], ev["auc_clean"], ev["mass_marked"], ev["mass_clean"]])
    if not np.all(
        np.isclose(reported, recomputed, rtol=0.0, atol=np.array([0.005, 0.005, 0.01, 0.01]), equal_nan=True)
    ):
        return exercises.check_true(
            "2.4",
            False,
            hint="the numbers you report are not those of your model on the stamped and clean test images. " + hint,
        )
    ok = (
        stats.verdict(*ev["auc_diff"]) == stats.ABOVE
        and stats.verdict(*ev["mass_diff"]) == stats.ABOVE
        and ev["mass_marked"] > ev["corner_share"]
    )
    return exercises.check_true("2.4", bool(ok), hint="this model does not use the marker detectably: " + hint)
