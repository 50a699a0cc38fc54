"""Tests of utils.checks.ch5: every check fails a wrong answer, passes another right one, and reports a placeholder."""

from __future__ import annotations

import keras
import numpy as np
import pytest
from conftest import placeholder
from scipy import linalg

from utils import exercises, gan
from utils.checks import ch5


def _line(capsys) -> str:
    return capsys.readouterr().out.strip().splitlines()[-1]


# --------------------------------------------------------------------------- 5.1


def shares_ref(d):
    d = np.asarray(d, dtype=float)
    return float(np.mean(d <= 0)), float(np.mean(d >= 1))


def shares_alt(d):  # counts with np.count_nonzero and the logarithms' own verdicts
    d = np.ravel(d).astype(np.float64)
    with np.errstate(divide="ignore", invalid="ignore"):
        bad_log_d = ~np.isfinite(np.log(d))
        bad_log_1m = ~np.isfinite(np.log1p(-d))
    return np.count_nonzero(bad_log_d) / d.size, np.count_nonzero(bad_log_1m) / d.size


def bce_ref(p):
    return float(-np.log(np.clip(p, 1e-7, 1 - 1e-7)))


def bce_alt(p):  # Keras itself
    return float(keras.losses.BinaryCrossentropy(from_logits=False)(np.ones((1, 1)), np.full((1, 1), p)))


D_OUT = [np.tanh(np.random.default_rng(0).normal(0, 2, 300))]


def test_5_1_right_answers_pass(capsys):
    assert ch5.ex_5_1(shares_ref, bce_ref, D_OUT)
    assert ch5.ex_5_1(shares_alt, bce_alt, D_OUT)
    assert _line(capsys) == "Exercise 5.1 passed."


@pytest.mark.parametrize(
    "shares, bce",
    [
        (lambda d: (float(np.mean(np.asarray(d) < 0)), float(np.mean(np.asarray(d) > 1))), bce_ref),  # misses 0 and 1
        (lambda d: shares_ref(d)[::-1], bce_ref),  # order swapped
        (lambda d: (float(np.mean(np.asarray(d) <= 0)), 0.0), bce_ref),  # "tanh never reaches 1" (float32 does)
        (shares_ref, lambda p: float(-np.log(p)) if p > 0 else float("nan")),  # no clipping
        (shares_ref, lambda p: float(-np.log(np.clip(p, 1e-15, 1 - 1e-15)))),  # wrong epsilon
    ],
)
def test_5_1_wrong_answers_fail(capsys, shares, bce):
    assert not ch5.ex_5_1(shares, bce, D_OUT)
    assert _line(capsys).startswith("Exercise 5.1: not yet")


def test_5_1_placeholder_and_strict_mode(capsys, monkeypatch):
    assert not ch5.ex_5_1(placeholder, bce_ref)
    assert "not attempted" in _line(capsys)
    assert not ch5.ex_5_1(exercises.NOT_ATTEMPTED, exercises.NOT_ATTEMPTED)
    assert "not attempted" in _line(capsys)
    monkeypatch.setenv(exercises.STRICT_ENV, "1")
    with pytest.raises(exercises.ExerciseFailed):
        ch5.ex_5_1(shares_ref, lambda p: 0.0)


def test_5_1_reports_an_exception_in_the_students_code(capsys):
    assert not ch5.ex_5_1(lambda d: 1 / 0, bce_ref)
    assert "ZeroDivisionError" in _line(capsys)


# --------------------------------------------------------------------------- 5.2


def ns_ref(l):
    t = keras.ops.convert_to_tensor(l, dtype="float32")
    return float(keras.ops.mean(keras.ops.softplus(-t)))


def ns_alt(l):  # NumPy, written differently
    return float(np.mean(np.logaddexp(0.0, -np.asarray(l, dtype=np.float64))))


def test_5_2_right_and_wrong_answers(capsys):
    assert ch5.ex_5_2(ns_ref) and ch5.ex_5_2(ns_alt)
    naive = lambda l: float(-np.mean(np.log(1 / (1 + np.exp(-np.asarray(l, "float32"))))))  # noqa: E731
    with np.errstate(over="ignore", divide="ignore"):
        assert not ch5.ex_5_2(naive)  # log(sigmoid) underflows to -inf at l = -200
    assert not ch5.ex_5_2(
        lambda l: float(np.mean(np.logaddexp(0.0, np.asarray(l, float))))
    )  # softplus(+l): minimax sign
    assert not ch5.ex_5_2(lambda l: float(np.sum(np.logaddexp(0.0, -np.asarray(l, float)))))  # sum, not mean
    capsys.readouterr()
    assert not ch5.ex_5_2(placeholder)
    assert "not attempted" in _line(capsys)


# --------------------------------------------------------------------------- 5.3


def mp_ref(f):
    f = np.asarray(f, dtype=float)
    d = np.sqrt(np.maximum(((f[:, None, :] - f[None, :, :]) ** 2).sum(-1), 0.0))
    return d.sum() / (len(f) * (len(f) - 1))


def mp_alt(f):  # scipy's condensed distances: each unordered pair once, the same mean
    from scipy.spatial.distance import pdist

    return float(pdist(np.asarray(f, dtype=float)).mean())


def collapsed_ref(s, r, ratio=0.5):
    return bool(mp_ref(s) < ratio * mp_ref(r))


def collapsed_alt(sample_features, real_features, ratio=0.5):
    return mp_alt(sample_features) / mp_alt(real_features) < ratio


rng = np.random.default_rng(3)
_REAL = rng.normal(size=(60, 6))
CASES = [(_REAL[:30], _REAL), (_REAL[:1].repeat(20, 0) + rng.normal(0, 0.01, (20, 6)), _REAL)]


def test_5_3_right_answers_pass(capsys):
    assert ch5.ex_5_3(mp_ref, collapsed_ref, CASES)
    assert ch5.ex_5_3(mp_alt, lambda s, r, ratio=0.5: bool(collapsed_alt(s, r, ratio)), CASES)
    assert _line(capsys) == "Exercise 5.3 passed."


def test_5_3_wrong_answers_fail():
    n2 = lambda f: float(np.sqrt(((np.asarray(f)[:, None] - np.asarray(f)[None]) ** 2).sum(-1)).mean())  # noqa: E731
    assert not ch5.ex_5_3(n2, lambda s, r, ratio=0.5: bool(n2(s) < ratio * n2(r)), CASES)  # divides by n², not n(n-1)
    assert not ch5.ex_5_3(mp_ref, lambda s, r, ratio=0.5: bool(mp_ref(s) < 0.5 * mp_ref(r)), CASES)  # ignores ratio
    assert not ch5.ex_5_3(mp_ref, lambda s, r, ratio=0.5: bool(mp_ref(s) > ratio * mp_ref(r)), CASES)  # inverted

    # right numbers but a comparison on squared distances: agrees on clear cases, not at the threshold
    def sq(f):
        return float((((np.asarray(f)[:, None] - np.asarray(f)[None]) ** 2).sum(-1)).sum() / (len(f) * (len(f) - 1)))

    assert not ch5.ex_5_3(mp_ref, lambda s, r, ratio=0.5: bool(sq(s) < ratio * sq(r)), CASES)
    # returns a number, not True/False
    assert not ch5.ex_5_3(mp_ref, lambda s, r, ratio=0.5: mp_ref(s) / mp_ref(r), CASES)


def test_5_3_placeholder(capsys):
    assert not ch5.ex_5_3(placeholder, collapsed_ref, CASES)
    assert "not attempted" in _line(capsys)
    assert not ch5.ex_5_3(mp_ref, placeholder, CASES)
    assert "not attempted" in _line(capsys)


# --------------------------------------------------------------------------- 5.4


def fd_ref(a, b):
    mu_a, mu_b = a.mean(0), b.mean(0)
    ca, cb = np.cov(a, rowvar=False), np.cov(b, rowvar=False)
    covmean = linalg.sqrtm(ca @ cb)
    return float(((mu_a - mu_b) ** 2).sum() + np.trace(ca + cb - 2 * np.real(covmean)))


def fd_eig(a, b):  # tr sqrt(Σa Σb) = sum of the square roots of its eigenvalues
    ca, cb = np.cov(a.T), np.cov(b.T)
    lam = np.linalg.eigvals(ca @ cb).real.clip(0)
    return float(np.sum((a.mean(0) - b.mean(0)) ** 2) + np.trace(ca) + np.trace(cb) - 2 * np.sqrt(lam).sum())


FA = np.random.default_rng(8).normal(size=(200, 4))
FB = np.random.default_rng(9).normal(size=(150, 4)) * 1.5 + 0.2


def test_5_4_right_answers_pass(capsys):
    assert ch5.ex_5_4(fd_ref, FA, FB)
    assert ch5.ex_5_4(fd_eig, FA, FB)
    assert ch5.ex_5_4(fd_ref)  # without the notebook's features, only the built-in cases
    assert _line(capsys) == "Exercise 5.4 passed."
    assert fd_ref(FA, FB) == pytest.approx(gan.frechet_distance(FA, FB), rel=1e-8)


def test_5_4_wrong_answers_fail():
    def no_two(a, b):
        ca, cb = np.cov(a, rowvar=False), np.cov(b, rowvar=False)
        return float(((a.mean(0) - b.mean(0)) ** 2).sum() + np.trace(ca + cb - np.real(linalg.sqrtm(ca @ cb))))

    def elementwise(a, b):
        ca, cb = np.cov(a, rowvar=False), np.cov(b, rowvar=False)
        with np.errstate(invalid="ignore"):
            return float(((a.mean(0) - b.mean(0)) ** 2).sum() + np.trace(ca + cb - 2 * np.sqrt(ca * cb)))

    def product_of_roots(a, b):  # sqrtm(Σa) sqrtm(Σb): right only when the covariances commute
        ca, cb = np.cov(a, rowvar=False), np.cov(b, rowvar=False)
        root = np.real(linalg.sqrtm(ca) @ linalg.sqrtm(cb))
        return float(((a.mean(0) - b.mean(0)) ** 2).sum() + np.trace(ca + cb - 2 * root))

    means_only = lambda a, b: float(((a.mean(0) - b.mean(0)) ** 2).sum())  # noqa: E731
    for wrong in (no_two, elementwise, product_of_roots, means_only):
        assert not ch5.ex_5_4(wrong, FA, FB), wrong.__name__ if hasattr(wrong, "__name__") else wrong


def test_5_4_placeholder(capsys):
    assert not ch5.ex_5_4(placeholder, FA, FB)
    assert "not attempted" in _line(capsys)
