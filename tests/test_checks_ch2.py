"""utils.checks.ch2: every check fails a wrong answer, passes a differently written right one, and reports
the placeholder as not attempted."""

from __future__ import annotations

import keras
import numpy as np
import pytest
from conftest import placeholder, reported_not_attempted
from scipy.stats import rankdata
from sklearn.metrics import roc_auc_score

from utils import classify, exercises, metrics
from utils.checks import ch2

# ---------------------------------------------------------------------------
# 2.1 parameters and shapes
# ---------------------------------------------------------------------------


def test_ex_2_1_expected_values_come_from_keras():
    assert ch2.expected_2_1() == [2_122_186, 2_304]


def test_ex_2_1_passes_right_answers():
    assert ch2.ex_2_1([2122186, 2304])
    assert ch2.ex_2_1((np.int64(896 + 18496 + 4096 * 512 + 512 + 5130), 6 * 6 * 64))  # written differently
    assert ch2.ex_2_1(np.array([2122186.0, 2304.0]))


@pytest.mark.parametrize(
    "wrong",
    [
        [2122186, 4096],  # 'same' padding's Flatten length
        [2304, 2122186],  # swapped
        [2122186 - 5130, 2304],  # output layer forgotten
        [2122186],
        "2122186, 2304",
    ],
)
def test_ex_2_1_fails_wrong_answers(wrong):
    assert not ch2.ex_2_1(wrong)


def test_ex_2_1_placeholder(capsys):
    assert reported_not_attempted(ch2.ex_2_1(exercises.NOT_ATTEMPTED), capsys, "2.1")


# ---------------------------------------------------------------------------
# 2.2 AUC as a probability
# ---------------------------------------------------------------------------


def auc_pairs(y_true, score):  # the notebook's solution
    y = np.asarray(y_true).reshape(-1).astype(bool)
    s = np.asarray(score, dtype=float).reshape(-1)
    pos, neg = s[y], s[~y]
    return float(
        ((pos[:, None] > neg[None, :]).sum() + 0.5 * (pos[:, None] == neg[None, :]).sum()) / (len(pos) * len(neg))
    )


def auc_mann_whitney(y_true, score):  # another right answer: midranks
    y = np.asarray(y_true).astype(bool)
    r = rankdata(score)
    n1, n0 = y.sum(), (~y).sum()
    return float((r[y].sum() - n1 * (n1 + 1) / 2) / (n1 * n0))


def auc_ties_ignored(y_true, score):
    y = np.asarray(y_true).astype(bool)
    s = np.asarray(score, dtype=float)
    return float((s[y][:, None] > s[~y][None, :]).mean())


def test_ex_2_2_passes_right_answers():
    rng = np.random.default_rng(0)
    y = rng.integers(0, 2, 80)
    p = np.round(rng.uniform(size=80), 2)
    assert ch2.ex_2_2(auc_pairs, y, p)
    assert ch2.ex_2_2(auc_mann_whitney, y, p)
    assert ch2.ex_2_2(auc_mann_whitney)


@pytest.mark.parametrize(
    "wrong",
    [
        auc_ties_ignored,
        lambda y, s: 1 - roc_auc_score(y, s),
        lambda y, s: float(np.mean((np.asarray(s) > 0.5) == np.asarray(y))),
    ],
)
def test_ex_2_2_fails_wrong_answers(wrong):
    assert not ch2.ex_2_2(wrong)


def test_ex_2_2_placeholder(capsys):
    assert reported_not_attempted(ch2.ex_2_2(placeholder), capsys, "2.2")


# ---------------------------------------------------------------------------
# 2.3 a threshold for a target sensitivity
# ---------------------------------------------------------------------------


def _split(seed, n=300):
    rng = np.random.default_rng(seed)
    y = (rng.uniform(size=n) < 0.4).astype(int)
    return y, np.clip(rng.normal(0.35 + 0.3 * y, 0.15), 0, 1)


VAL, TEST = _split(1), _split(2)


def _answer(t):
    r = metrics.binary_report(*TEST, t)
    return t, r.sensitivity, r.specificity


def highest_threshold():  # the notebook's solution
    yv, pv = VAL
    pos = np.sort(pv[yv == 1])[::-1]
    k = int(np.ceil(0.95 * len(pos)))
    return float(np.nextafter(pos[k - 1], -np.inf))


def midpoint_threshold():  # another right answer: halfway to the next lower validation score
    yv, pv = VAL
    pos = np.sort(pv[yv == 1])[::-1]
    k = int(np.ceil(0.95 * len(pos)))
    below = pv[pv < pos[k - 1]]
    return float((pos[k - 1] + below.max()) / 2)


def test_ex_2_3_passes_right_answers():
    assert highest_threshold() != midpoint_threshold()
    assert ch2.ex_2_3(*_answer(highest_threshold()), VAL, TEST)
    assert ch2.ex_2_3(*_answer(midpoint_threshold()), VAL, TEST)


def test_ex_2_3_fails_wrong_answers():
    yv, pv = VAL
    lowest = float(np.nextafter(pv[yv == 1].min(), -np.inf))  # sensitivity 1, specificity given away
    assert (
        metrics.binary_report(yv, pv, lowest).specificity
        < metrics.binary_report(yv, pv, highest_threshold()).specificity
    )
    assert not ch2.ex_2_3(*_answer(lowest), VAL, TEST)
    pos = np.sort(pv[yv == 1])[::-1]
    too_high = float(pos[int(np.ceil(0.95 * len(pos))) - 1])  # the k-th positive is no longer above it
    assert not ch2.ex_2_3(*_answer(too_high), VAL, TEST)
    assert not ch2.ex_2_3(*_answer(0.5), VAL, TEST)
    t = highest_threshold()
    on_val = metrics.binary_report(*VAL, t)
    assert not ch2.ex_2_3(t, on_val.sensitivity, on_val.specificity, VAL, TEST)  # validation numbers reported


def test_ex_2_3_placeholder(capsys):
    assert reported_not_attempted(
        ch2.ex_2_3(exercises.NOT_ATTEMPTED, exercises.NOT_ATTEMPTED, exercises.NOT_ATTEMPTED, VAL, TEST), capsys, "2.3"
    )


# ---------------------------------------------------------------------------
# 2.4 a shortcut that Grad-CAM hides: hand-weighted networks stand in for trained ones
# ---------------------------------------------------------------------------


def _images(seed=0, n=120):
    rng = np.random.default_rng(seed)
    y = np.repeat([0, 1], n // 2)
    x = np.clip(rng.uniform(0, 0.6, (n, 28, 28, 1)) + 0.03 * y[:, None, None, None], 0, 1).astype("float32")
    return x, y


def stamp(images, labels):  # the notebook's solution
    stamped = images.copy()
    stamped[labels == 1, 1:5, 1:5, :] = 1.0
    return stamped


def stamp_where(images, labels):  # written differently
    square = np.zeros(images.shape[1:], bool)
    square[1:5, 1:5] = True
    return np.where(square[None] & (np.asarray(labels) == 1)[:, None, None, None], np.float32(1.0), images)


def _network(ignore_corner=False):
    """A marker detector (channel 0) and a brightness detector (channel 1), weights set by hand."""
    from keras import layers

    inp = keras.Input((28, 28, 1))
    x = inp
    if ignore_corner:  # a network that cannot see the corner: no shortcut to find
        keep = np.ones((1, 28, 28, 1), "float32")
        keep[:, :8, :8] = 0
        x = layers.Lambda(lambda t: t * keep)(x)
    conv = layers.Conv2D(2, 4, padding="same", name="conv")
    x = layers.ReLU(name="last_conv")(conv(x))
    x = layers.GlobalMaxPooling2D()(x)
    dense = layers.Dense(2, name="logits")
    out = layers.Activation("softmax")(dense(x))
    model = keras.Model(inp, out)
    kernel = np.full((4, 4, 1, 2), 1 / 16, "float32")
    conv.set_weights([kernel, np.array([-0.9, 0.0], "float32")])  # channel 0 fires only on a white square
    dense.set_weights([np.array([[-20.0, 20.0], [-3.0, 3.0]], "float32"), np.array([0.0, 0.0], "float32")])
    return model


def _evidence(model, stamp_fn, x, y):
    ev = ch2.shortcut_evidence(model, stamp_fn, x, y, n_boot=50)
    return {k: ev[k] for k in ("auc_marked", "auc_clean", "mass_marked", "mass_clean")}


def test_ex_2_4_passes_right_answers():
    x, y = _images()
    model = _network()
    assert ch2.ex_2_4(model, stamp, x, y, n_boot=50, **_evidence(model, stamp, x, y))
    # the same numbers computed another way: scikit-learn's AUC, masses by hand
    marked = stamp_where(x, y)
    corner = np.zeros((28, 28), bool)
    corner[:8, :8] = True

    def mass(images):
        cam = classify.grad_cam(model, images[y == 1], class_index=1)
        return float(np.nanmean([c[corner].sum() / c.sum() if c.sum() > 0 else np.nan for c in cam]))

    answers = dict(
        auc_marked=roc_auc_score(y, model.predict(marked, verbose=0)[:, 1]),
        auc_clean=roc_auc_score(y, model.predict(x, verbose=0)[:, 1]),
        mass_marked=mass(marked),
        mass_clean=mass(x),
    )
    assert ch2.ex_2_4(model, stamp_where, x, y, n_boot=50, **answers)


def test_ex_2_4_fails_wrong_answers():
    x, y = _images()
    model = _network()
    right = _evidence(model, stamp, x, y)
    # a network without the shortcut
    blind = _network(ignore_corner=True)
    assert not ch2.ex_2_4(blind, stamp, x, y, n_boot=50, **_evidence(blind, stamp, x, y))
    # the marker on every image, or in the wrong place
    every = lambda images, labels: stamp(images, np.ones_like(labels))  # noqa: E731
    assert not ch2.ex_2_4(model, every, x, y, n_boot=50, **_evidence(model, every, x, y))
    shifted = lambda images, labels: np.roll(stamp(images, labels), 10, axis=2)  # noqa: E731
    assert not ch2.ex_2_4(model, shifted, x, y, n_boot=50, **right)
    # numbers that are not this model's
    assert not ch2.ex_2_4(model, stamp, x, y, n_boot=50, **{**right, "auc_marked": right["auc_marked"] - 0.05})
    assert not ch2.ex_2_4(model, stamp, x, y, n_boot=50, **{**right, "mass_marked": 0.9 * right["mass_marked"] - 0.02})


def test_ex_2_4_placeholder(capsys):
    x, y = _images()
    na = exercises.NOT_ATTEMPTED
    assert reported_not_attempted(
        ch2.ex_2_4(na, na, x, y, auc_marked=na, auc_clean=na, mass_marked=na, mass_clean=na), capsys, "2.4"
    )
    assert reported_not_attempted(
        ch2.ex_2_4(_network(), placeholder, x, y, auc_marked=0.9, auc_clean=0.8, mass_marked=0.5, mass_clean=0.1),
        capsys,
        "2.4",
    )
