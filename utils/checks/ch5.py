"""Exercise checks of chapter 5 (GANs that synthesise chest X-rays).

Each check calls the student's functions on cases it builds itself (and on arrays the notebook
passes in), compares the results with a reference computed here, and prints one line through
:mod:`utils.exercises`.  None of them compares a number the student typed.

* :func:`ex_5_1` — where the objective of a tanh discriminator is undefined, and what Keras'
  clipped binary cross-entropy does to a negative "probability" (section 2.3);
* :func:`ex_5_2` — the non-saturating generator loss from logits, stably (section 2.1);
* :func:`ex_5_3` — mean pairwise distance and a detector of a collapsed generator (section 7);
* :func:`ex_5_4` — the Fréchet distance from features with ``scipy.linalg.sqrtm`` (section 4).
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Any

import numpy as np

from .. import exercises


class _NotYet(Exception):
    """A case could not be evaluated: not attempted (placeholder) or the student's code raised."""

    def __init__(self, attempted: bool, hint: str = ""):
        super().__init__(hint)
        self.attempted, self.hint = attempted, hint


def _is_placeholder(value: Any) -> bool:
    return value is None or value is Ellipsis or value is exercises.NOT_ATTEMPTED


def _call(fn: Callable, *args, **kwargs) -> Any:
    """``fn(*args, **kwargs)``; a placeholder (function or result) becomes :class:`_NotYet`."""
    if _is_placeholder(fn):
        raise _NotYet(False)
    try:
        out = fn(*args, **kwargs)
    except NotImplementedError:  # exercises.NotAttempted, or the student's own "not done yet"
        raise _NotYet(False) from None
    except Exception as exc:  # the student's code raised: say what, not the answer
        raise _NotYet(True, f"your function raised {type(exc).__name__}: {exc}. ") from None
    if _is_placeholder(out) or (isinstance(out, tuple) and any(_is_placeholder(o) for o in out)):
        raise _NotYet(False)
    return out


def _close(a: Any, b: Any, *, rtol: float, atol: float) -> bool:
    try:
        a_arr, b_arr = np.asarray(a, dtype=float), np.asarray(b, dtype=float)
    except (TypeError, ValueError):
        return False
    return a_arr.shape == b_arr.shape and bool(np.allclose(a_arr, b_arr, rtol=rtol, atol=atol))


def _verdict(exercise: str, evaluate: Callable[[], bool], hint: str) -> exercises.CheckResult:
    """Run ``evaluate`` (True when every case matches) and report one line for ``exercise``."""
    try:
        ok = bool(evaluate())
    except _NotYet as stop:
        if not stop.attempted:
            return exercises.check_true(exercise, exercises.NOT_ATTEMPTED, hint=hint)
        return exercises.check_true(exercise, False, hint=stop.hint + hint)
    return exercises.check_true(exercise, ok, hint=hint)


# ---------------------------------------------------------------------------------------------
# 5.1 the tanh discriminator
# ---------------------------------------------------------------------------------------------


def _undefined_shares_reference(d) -> tuple[float, float]:
    d = np.asarray(d, dtype=np.float64).reshape(-1)
    return float(np.mean(d <= 0)), float(np.mean(d >= 1))


def ex_5_1(undefined_shares: Callable, clipped_bce: Callable, d_outputs: Sequence = ()) -> exercises.CheckResult:
    """Exercise 5.1 (section 2.3): where log D and log(1 − D) are undefined; Keras' clipping.

    ``undefined_shares(d)`` must return ``(share of d with log d undefined, share with log(1 − d)
    undefined)``, i.e. the shares of ``d <= 0`` and of ``d >= 1`` (zero counts: log 0 is −∞).
    It is called on edge cases built here (exact 0 and 1, float32 tanh outputs that round to
    1) and on each array of discriminator outputs in ``d_outputs``.  ``clipped_bce(p)`` must
    reproduce ``keras.losses.BinaryCrossentropy(from_logits=False)`` for label 1 and "probability"
    ``p`` in NumPy; it is compared with Keras itself on negative, tiny, ordinary and too-large ``p``.
    """
    import keras

    rng = np.random.default_rng(51)
    arrays = [
        np.array([-0.5, 0.0, 0.2, 1.0, 0.999]),
        np.array([0.1, 0.5, 0.9]),
        np.tanh(rng.normal(0.0, 6.0, 500).astype("float32")),  # float32: tanh(x) rounds to ±1 for large x
        np.tanh(rng.normal(0.5, 1.0, (40, 1))),
    ]
    arrays += [np.asarray(d) for d in d_outputs]
    ps = [-0.9, -0.5, 0.0, 1e-9, 0.3, 0.8, 1.0, 1.5]
    bce = keras.losses.BinaryCrossentropy(from_logits=False)
    keras_values = [float(bce(np.ones((1, 1)), np.full((1, 1), p, "float32"))) for p in ps]

    def evaluate() -> bool:
        shares = [_call(undefined_shares, d) for d in arrays]
        ok_shares = all(
            _close(s, _undefined_shares_reference(d), rtol=1e-9, atol=1e-12) for s, d in zip(shares, arrays)
        )
        values = [_call(clipped_bce, p) for p in ps]
        ok_bce = all(_close(v, k, rtol=1e-4, atol=1e-6) for v, k in zip(values, keras_values))
        return ok_shares and ok_bce

    return _verdict(
        "5.1",
        evaluate,
        "log D is undefined where D <= 0, log(1 - D) where D >= 1 (return both shares, in that order); "
        "Keras clips a probability to [1e-7, 1 - 1e-7] before the logarithm",
    )


# ---------------------------------------------------------------------------------------------
# 5.2 the non-saturating generator loss
# ---------------------------------------------------------------------------------------------


def ex_5_2(ns_generator_loss: Callable) -> exercises.CheckResult:
    """Exercise 5.2 (section 2.1): ``ns_generator_loss(fake_logits)`` = mean of −log σ(ℓ), stably.

    Compared with ``keras.losses.BinaryCrossentropy(from_logits=True)`` against label 1 on logits
    that include ±200 (where σ underflows in float32) and ordinary values.
    """
    import keras

    bce = keras.losses.BinaryCrossentropy(from_logits=True)
    rng = np.random.default_rng(52)
    cases = [
        np.array([[-200.0], [0.0], [200.0]], "float32"),
        rng.normal(0, 3, (64, 1)).astype("float32"),
        np.array([[-30.0], [-25.0]], "float32"),
        np.array([[-90.0], [-120.0], [5.0]], "float32"),
    ]
    expected = [float(bce(np.ones_like(c), c)) for c in cases]

    def evaluate() -> bool:
        return all(_close(_call(ns_generator_loss, c), e, rtol=1e-4, atol=1e-6) for c, e in zip(cases, expected))

    return _verdict("5.2", evaluate, "the batch mean of softplus(-l); never compute log(sigmoid(l)) directly")


# ---------------------------------------------------------------------------------------------
# 5.3 a detector of mode collapse
# ---------------------------------------------------------------------------------------------


def _mean_pairwise_reference(f) -> float:
    from .. import gan

    return gan.mean_pairwise_distance(np.asarray(f, dtype=float))


def ex_5_3(mean_pairwise: Callable, is_collapsed: Callable, cases: Sequence = ()) -> exercises.CheckResult:
    """Exercise 5.3 (section 7): ``mean_pairwise(f)`` and ``is_collapsed(sample_f, real_f, ratio=0.5)``.

    ``mean_pairwise`` must return the mean Euclidean distance over the n(n − 1) ordered pairs of
    distinct rows; it is compared with :func:`utils.gan.mean_pairwise_distance` on random arrays of
    several sizes and on the notebook's feature arrays.  ``is_collapsed`` must return True or False:
    True when the samples' mean pairwise distance is below ``ratio`` times that of the real
    features.  It is called on the notebook's ``cases`` (pairs ``(sample_features,
    real_features)``) and on pairs built here just below and just above the threshold, for the
    default ``ratio`` 0.5 and for other ratios.
    """
    rng = np.random.default_rng(53)
    arrays = [rng.normal(size=(2, 3)), rng.normal(size=(7, 5)), rng.normal(size=(30, 4)) * 3.0]
    arrays += [np.asarray(a) for pair in cases for a in pair][:6]
    collapse_cases = []  # (args, kwargs, expected)
    for s, r in cases:
        collapse_cases.append(((s, r), {}, bool(_mean_pairwise_reference(s) < 0.5 * _mean_pairwise_reference(r))))
    real = rng.normal(size=(40, 8))
    small = rng.normal(size=(6, 8))  # few samples: the n(n - 1) divisor matters
    q = _mean_pairwise_reference(small) / _mean_pairwise_reference(real)
    for ratio in (0.5, 0.3, 0.8):
        kwargs = {} if ratio == 0.5 else {"ratio": ratio}
        for factor, expected in ((0.97, True), (1.03, False)):
            collapse_cases.append(((small * (ratio / q * factor), real), kwargs, expected))

    def evaluate() -> bool:
        ok_mp = all(_close(_call(mean_pairwise, a), _mean_pairwise_reference(a), rtol=1e-6, atol=1e-9) for a in arrays)
        answers = [_call(is_collapsed, *args, **kwargs) for args, kwargs, _ in collapse_cases]
        ok_flags = all(
            isinstance(a, (bool, np.bool_)) and bool(a) == e for a, (_, _, e) in zip(answers, collapse_cases)
        )
        return ok_mp and ok_flags

    return _verdict(
        "5.3",
        evaluate,
        "average the distances over the n(n - 1) ordered pairs i != j (the diagonal is zero); "
        "is_collapsed returns True or False and honours its ratio argument",
    )


# ---------------------------------------------------------------------------------------------
# 5.4 the Fréchet distance by hand
# ---------------------------------------------------------------------------------------------


def ex_5_4(frechet: Callable, feats_a=None, feats_b=None) -> exercises.CheckResult:
    """Exercise 5.4 (section 4): ``frechet(feats_a, feats_b)`` with ``scipy.linalg.sqrtm``.

    Compared with :func:`utils.gan.frechet_distance` on the notebook's two feature sets (if given)
    and on Gaussian samples built here: correlated features, different sample sizes, and a pure
    shift of the mean (where FD = ||Δμ||²).  Covariances as ``np.cov(..., rowvar=False)``.
    """
    from .. import gan

    rng = np.random.default_rng(54)
    mix = rng.normal(size=(5, 5))
    base = rng.normal(size=(400, 5)) @ mix
    pairs = [
        (base, rng.normal(size=(300, 5)) @ (mix * 0.7) + 0.4),
        (base, base + np.array([1.0, -2.0, 0.5, 0.0, 3.0])),
        (rng.normal(size=(120, 3)), 2.0 * rng.normal(size=(200, 3))),
    ]
    if feats_a is not None and feats_b is not None:
        pairs.insert(0, (np.asarray(feats_a, dtype=float), np.asarray(feats_b, dtype=float)))
    expected = [gan.frechet_distance(a, b) for a, b in pairs]

    def evaluate() -> bool:
        return all(_close(_call(frechet, a, b), e, rtol=1e-4, atol=1e-6) for (a, b), e in zip(pairs, expected))

    return _verdict(
        "5.4",
        evaluate,
        "FD = |mu_a - mu_b|^2 + tr(S_a + S_b - 2 sqrtm(S_a @ S_b)), with np.cov(..., rowvar=False) and "
        "the real part of scipy.linalg.sqrtm",
    )
