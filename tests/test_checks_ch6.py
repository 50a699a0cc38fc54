"""utils.checks.ch6: every check fails a wrong answer, passes a differently written right one, and reports
the placeholder as not attempted."""

from __future__ import annotations

import hashlib

import numpy as np
from conftest import placeholder, reported_not_attempted

from utils import exercises, privacy, quality
from utils.checks import ch6

NA = exercises.NOT_ATTEMPTED


# ---------------------------------------------------------------------------
# 6.p1 consistent UIDs
# ---------------------------------------------------------------------------

SALT = "test-salt"
UIDS = ["1.2.840.113619.2.1.1.1", "1.2.840.113619.2.1.1.2", "1.2.840.113619.2.1.1.1", "1.3.6.1.4.1.5962.1.2.3"]


def _two_uids():
    from pydicom.uid import generate_uid

    a = generate_uid(prefix=None, entropy_srcs=[SALT, UIDS[0]])
    b = generate_uid(prefix=None, entropy_srcs=[SALT, UIDS[0]])
    return a, b, a == b


def reference_uid(uid, salt):
    import uuid

    return f"2.25.{uuid.uuid5(uuid.NAMESPACE_OID, salt + '|' + str(uid)).int}"


def sha_uid(uid, salt):  # another right answer: the first 16 bytes of a keyed SHA-256
    import hashlib as h

    return "2.25." + str(int.from_bytes(h.sha256(f"{salt}/{uid}".encode()).digest()[:16], "big"))


def hash_uid(uid, salt):  # wrong: Python's hash() of a string changes from one process to the next
    return f"2.25.{abs(hash(salt + uid))}"


def unsalted_uid(uid, salt):  # wrong: ignores the salt
    import uuid

    return f"2.25.{uuid.uuid5(uuid.NAMESPACE_OID, str(uid)).int}"


def long_uid(uid, salt):  # wrong: longer than 64 characters
    return "2.25." + str(int(hashlib.sha512((salt + uid).encode()).hexdigest(), 16))


def test_ex_6_p1_passes_right_answers():
    a, b, same = _two_uids()
    assert ch6.ex_6_p1(a, b, same, reference_uid, UIDS, SALT)
    assert ch6.ex_6_p1(a, b, bool(np.bool_(a == b)), sha_uid, UIDS, SALT)


def test_ex_6_p1_fails_a_typed_boolean_and_hash_based_uids():
    a, b, same = _two_uids()
    assert not ch6.ex_6_p1("1.2.3", "1.2.3", False, reference_uid, UIDS, SALT)  # typed, not generate_uid's UIDs
    assert not ch6.ex_6_p1(a, a, False, reference_uid, UIDS, SALT)  # same_twice is not the comparison
    assert not ch6.ex_6_p1(a, b, "False", reference_uid, UIDS, SALT)  # not a boolean
    assert not ch6.ex_6_p1(a, b, True, reference_uid, UIDS, SALT)
    assert not ch6.ex_6_p1(a, b, same, hash_uid, UIDS, SALT)  # stable in this process, not in the next
    assert not ch6.ex_6_p1(a, b, same, unsalted_uid, UIDS, SALT)
    assert not ch6.ex_6_p1(a, b, same, long_uid, UIDS, SALT)
    assert not ch6.ex_6_p1(a, b, same, lambda u, s: "2.25.1", UIDS, SALT)  # collisions


def test_ex_6_p1_hash_fallback_catches_hash_based_uids(monkeypatch):
    monkeypatch.setattr(ch6, "_in_other_process", lambda fn, args: None)  # e.g. the function cannot be pickled
    a, b, same = _two_uids()
    assert not ch6.ex_6_p1(a, b, same, hash_uid, UIDS, SALT)
    assert ch6.ex_6_p1(a, b, same, reference_uid, UIDS, SALT)


def test_ex_6_p1_placeholder(capsys):
    a, b, same = _two_uids()
    assert reported_not_attempted(ch6.ex_6_p1(NA, NA, NA, NA, UIDS, SALT), capsys, "6.p1")
    assert reported_not_attempted(ch6.ex_6_p1(a, b, same, placeholder, UIDS, SALT), capsys, "6.p1")


# ---------------------------------------------------------------------------
# 6.p2 FedAvg by hand
# ---------------------------------------------------------------------------


def _weights(seed):
    rng = np.random.default_rng(seed)
    return [
        [rng.normal(size=(3, 3, 1, 2)).astype("float32"), rng.normal(size=(2,)).astype("float32")] for _ in range(3)
    ]


def fedavg_loop(weight_lists, sizes):
    frac = np.asarray(sizes, float) / np.sum(sizes)
    return [sum(f * np.asarray(w[i], float) for f, w in zip(frac, weight_lists)) for i in range(len(weight_lists[0]))]


def fedavg_np_average(weight_lists, sizes):  # written differently: np.average over a stacked axis
    return [np.average(np.stack(layer), axis=0, weights=sizes) for layer in zip(*weight_lists)]


def fedavg_unweighted(weight_lists, sizes):  # wrong: ignores the sizes
    return [np.mean(np.stack(layer), axis=0) for layer in zip(*weight_lists)]


def test_ex_6_p2():
    w = _weights(0)
    assert ch6.ex_6_p2(fedavg_loop, w, [500, 350, 250])
    assert ch6.ex_6_p2(fedavg_np_average, w, [500, 350, 250])
    assert not ch6.ex_6_p2(fedavg_unweighted, w, [500, 350, 250])
    assert not ch6.ex_6_p2(lambda wl, s: wl[0], w, [500, 350, 250])


def test_ex_6_p2_placeholder(capsys):
    assert reported_not_attempted(ch6.ex_6_p2(placeholder, _weights(0), [1, 2, 3]), capsys, "6.p2")


# ---------------------------------------------------------------------------
# 6.p3 clipping by hand
# ---------------------------------------------------------------------------


def _per_example():
    rng = np.random.default_rng(2)
    return [rng.normal(size=(6, 3, 3, 1, 2)).astype("float32"), rng.normal(size=(6, 2)).astype("float32")]


def clipped_mean_loop(per_example, C):
    arrays = [np.asarray(g, float) for g in per_example]
    n = arrays[0].shape[0]
    out = [np.zeros(a.shape[1:]) for a in arrays]
    for i in range(n):
        norm = np.sqrt(sum(np.sum(a[i] ** 2) for a in arrays))
        scale = min(1.0, C / norm) if norm > 0 else 1.0
        for k, a in enumerate(arrays):
            out[k] += a[i] * scale / n
    return out


def clipped_mean_flat(per_example, C):  # written differently: flatten, clip, split
    n = per_example[0].shape[0]
    flat = np.concatenate([np.reshape(g, (n, -1)) for g in per_example], axis=1)
    flat = flat * np.minimum(1, C / np.linalg.norm(flat, axis=1, keepdims=True))
    parts = np.split(flat.mean(0), np.cumsum([np.prod(g.shape[1:]) for g in per_example])[:-1])
    return [p.reshape(g.shape[1:]) for p, g in zip(parts, per_example)]


def clipped_mean_per_layer(per_example, C):  # wrong: clips each layer to C
    out = []
    for g in per_example:
        g = np.asarray(g, float)
        norms = np.linalg.norm(g.reshape(len(g), -1), axis=1)
        out.append(np.mean(g * np.minimum(1, C / norms).reshape((-1,) + (1,) * (g.ndim - 1)), axis=0))
    return out


def test_ex_6_p3():
    pe = _per_example()
    assert ch6.ex_6_p3(clipped_mean_loop, pe)
    assert ch6.ex_6_p3(clipped_mean_flat, pe)
    assert not ch6.ex_6_p3(clipped_mean_per_layer, pe)
    assert not ch6.ex_6_p3(lambda g, c: [np.mean(a, axis=0) for a in g], pe)  # no clipping


def test_ex_6_p3_placeholder(capsys):
    assert reported_not_attempted(ch6.ex_6_p3(placeholder, _per_example()), capsys, "6.p3")


# ---------------------------------------------------------------------------
# 6.1 a flipped label
# ---------------------------------------------------------------------------

Y = np.random.default_rng(5).integers(0, 2, 101)


def test_ex_6_1a():
    noisy, flipped = quality.flip_labels(Y, 0.2, seed=1)
    assert ch6.ex_6_1a(len(flipped), float(noisy.mean()), Y, seed=1)
    assert ch6.ex_6_1a(int(np.sum(noisy != Y)), np.count_nonzero(noisy) / len(noisy), Y, seed=1)
    assert not ch6.ex_6_1a(len(flipped), float(Y.mean()), Y, seed=1)  # the clean prevalence
    assert not ch6.ex_6_1a(len(flipped), float(noisy.mean()), Y, seed=2)  # another seed's flips differ


def test_ex_6_1b():
    assert ch6.ex_6_1b(lambda pi, rho: pi * (1 - rho) + (1 - pi) * rho)
    assert ch6.ex_6_1b(lambda pi, rho: pi + rho - 2 * pi * rho)
    assert not ch6.ex_6_1b(lambda pi, rho: pi * (1 - rho))  # forgets the negatives that become positive


def test_ex_6_1c():
    noisy, flipped = quality.flip_labels(Y, 0.2, seed=1)
    assert ch6.ex_6_1c(1 - len(flipped) / len(Y), Y, seed=1)
    assert ch6.ex_6_1c(float(np.mean(noisy == Y)), Y, seed=1)
    assert not ch6.ex_6_1c(0.8 + 0.01, Y, seed=1)
    assert not ch6.ex_6_1c(1.0, Y, seed=1)


def test_ex_6_1_placeholders(capsys):
    assert reported_not_attempted(ch6.ex_6_1a(NA, NA, Y, seed=1), capsys, "6.1a")
    assert reported_not_attempted(ch6.ex_6_1b(placeholder), capsys, "6.1b")
    assert reported_not_attempted(ch6.ex_6_1c(NA, Y, seed=1), capsys, "6.1c")


# ---------------------------------------------------------------------------
# 6.2 leaked duplicates
# ---------------------------------------------------------------------------


def _splits():
    rng = np.random.default_rng(3)
    xtr = rng.integers(0, 256, (20, 4, 4), dtype=np.uint8)
    xte = rng.integers(0, 256, (8, 4, 4), dtype=np.uint8)
    xte[2], xte[5] = xtr[7], xtr[3]
    xtr[11] = xtr[7]  # a duplicate within train: test image 2 leaks twice
    ytr, yte = rng.integers(0, 2, 20), rng.integers(0, 2, 8)
    ytr[7], ytr[11], yte[2], ytr[3], yte[5] = 1, 1, 1, 0, 1
    return xtr, xte, ytr, yte


def test_ex_6_2():
    xtr, xte, ytr, yte = _splits()
    right = [(3, 5), (7, 2), (11, 2)]
    assert ch6.ex_6_2(right, [False, True, True], xtr, xte, ytr, yte)
    by_bytes = {}
    for i, img in enumerate(xtr):
        by_bytes.setdefault(img.tobytes(), []).append(i)
    alt = sorted((np.int64(i), np.int64(j)) for j, img in enumerate(xte) for i in by_bytes.get(img.tobytes(), []))
    assert ch6.ex_6_2(alt, np.array([ytr[i] == yte[j] for i, j in alt]), xtr, xte, ytr, yte)
    assert not ch6.ex_6_2([(3, 5), (7, 2)], [False, True], xtr, xte, ytr, yte)  # misses a pair
    assert not ch6.ex_6_2(right, [True, True, True], xtr, xte, ytr, yte)
    assert not ch6.ex_6_2([(5, 3), (2, 7), (2, 11)], [False, True, True], xtr, xte, ytr, yte)  # (test, train)
    assert not ch6.ex_6_2(3, [False], xtr, xte, ytr, yte)


def test_ex_6_2_placeholder(capsys):
    xtr, xte, ytr, yte = _splits()
    assert reported_not_attempted(ch6.ex_6_2(NA, NA, xtr, xte, ytr, yte), capsys, "6.2")


# ---------------------------------------------------------------------------
# 6.3 sensitivity at a fixed specificity
# ---------------------------------------------------------------------------


def _preds():
    rng = np.random.default_rng(4)
    y = rng.integers(0, 2, 60)
    return y, [np.clip(0.3 * y + rng.random(60), 0, 1), np.round(rng.random(60), 1)]


def sens_sorted(y, p, target):
    y, p = np.asarray(y).astype(int), np.asarray(p, float)
    neg = np.sort(p[y == 0])
    t = neg[int(np.ceil(target * len(neg) - 1e-9)) - 1]
    return float(np.mean(p[y == 1] > t))


def sens_scan(y, p, target):  # written differently: scan the candidate thresholds upwards
    y, p = np.asarray(y), np.asarray(p, float)
    for t in np.unique(p[y == 0]):
        if np.mean(p[y == 0] <= t) >= target - 1e-12:
            return float(np.mean(p[y == 1] > t))
    return 0.0


def sens_highest(y, p, target):  # wrong: a threshold that is too high (the next negative score)
    y, p = np.asarray(y).astype(int), np.asarray(p, float)
    neg = np.sort(p[y == 0])
    t = neg[min(len(neg) - 1, int(np.ceil(target * len(neg))))]
    return float(np.mean(p[y == 1] > t))


def test_ex_6_3():
    y, preds = _preds()
    assert ch6.ex_6_3(sens_sorted, y, preds)
    assert ch6.ex_6_3(sens_scan, y, preds)
    assert not ch6.ex_6_3(sens_highest, y, preds)
    assert not ch6.ex_6_3(lambda y, p, s: float(np.mean(np.asarray(p)[np.asarray(y) == 1] >= 0.5)), y, preds)


def test_ex_6_3b():
    y, preds = _preds()
    assert ch6.ex_6_3b(sens_sorted(y, preds[0], 0.9), y, preds[0])
    assert ch6.ex_6_3b(sens_scan(y, preds[0], 0.9), y, preds[0])
    assert not ch6.ex_6_3b(sens_sorted(y, preds[0], 0.8), y, preds[0])


def test_ex_6_3_placeholders(capsys):
    y, preds = _preds()
    assert reported_not_attempted(ch6.ex_6_3(placeholder, y, preds), capsys, "6.3")
    assert reported_not_attempted(ch6.ex_6_3b(NA, y, preds[0]), capsys, "6.3b")


def test_privacy_reference_matches_the_check():
    assert len(privacy.remap_uid(UIDS[0], SALT)) <= 64


# ---------------------------------------------------------------------------
# 6.4 class weights by hand
# ---------------------------------------------------------------------------

Y_IMB = np.array([0] * 30 + [1] * 10)


def class_weights_unique(y):
    classes, counts = np.unique(y, return_counts=True)
    return {int(c): len(y) / (len(classes) * n) for c, n in zip(classes, counts)}


def class_weights_loop(y):  # written differently: a dict of counts, then the formula
    counts = {}
    for v in np.asarray(y).ravel():
        counts[int(v)] = counts.get(int(v), 0) + 1
    return {c: len(y) / len(counts) / n for c, n in counts.items()}


def test_ex_6_4():
    assert ch6.ex_6_4(class_weights_unique, Y_IMB)
    assert ch6.ex_6_4(class_weights_loop, Y_IMB)
    # inverse frequency without 1/K
    assert not ch6.ex_6_4(lambda y: {int(c): len(y) / n for c, n in zip(*np.unique(y, return_counts=True))}, Y_IMB)
    # keyed by position, not by class: right on 0/1 labels, wrong on classes 3 and 7
    assert not ch6.ex_6_4(lambda y: dict(enumerate(len(y) / (2 * np.bincount(y)[np.bincount(y) > 0]))), Y_IMB)
    # frequencies instead of their inverse
    assert not ch6.ex_6_4(lambda y: {int(c): n / len(y) for c, n in zip(*np.unique(y, return_counts=True))}, Y_IMB)
    # a list, not a dict
    assert not ch6.ex_6_4(lambda y: list(class_weights_unique(y).values()), Y_IMB)


def test_ex_6_4_placeholder(capsys):
    assert reported_not_attempted(ch6.ex_6_4(placeholder, Y_IMB), capsys, "6.4")


# ---------------------------------------------------------------------------
# 6.p4 the loss-threshold attack by hand
# ---------------------------------------------------------------------------


def _losses():
    rng = np.random.default_rng(5)
    return rng.gamma(2.0, 0.25, 120), rng.gamma(2.0, 0.35, 120)


def attack_auc_pairs(m, n):  # the probability that a member's loss is lower, ties one half
    m, n = np.asarray(m)[:, None], np.asarray(n)[None, :]
    return float(np.mean((m < n) + 0.5 * (m == n)))


def attack_auc_mannwhitney(m, n):
    from scipy.stats import mannwhitneyu

    return float(mannwhitneyu(n, m).statistic / (len(m) * len(n)))


def test_ex_6_p4():
    m, n = _losses()
    assert ch6.ex_6_p4(attack_auc_pairs, m, n)
    assert ch6.ex_6_p4(attack_auc_mannwhitney, m, n)
    # reversed direction: a high loss called member
    assert not ch6.ex_6_p4(lambda a, b: 1.0 - attack_auc_pairs(a, b), m, n)
    # ties not counted one half (strict comparison)
    assert not ch6.ex_6_p4(lambda a, b: float(np.mean(np.asarray(a)[:, None] < np.asarray(b)[None, :])), m, n)
    # an accuracy at one threshold, not the AUC
    assert not ch6.ex_6_p4(
        lambda a, b: float((np.mean(a < np.median(np.r_[a, b])) + np.mean(b >= np.median(np.r_[a, b]))) / 2), m, n
    )


def test_ex_6_p4_placeholder(capsys):
    m, n = _losses()
    assert reported_not_attempted(ch6.ex_6_p4(placeholder, m, n), capsys, "6.p4")
