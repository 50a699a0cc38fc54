"""Exercise checks of chapter 6 (challenges: data quality, imbalance, privacy), one function per exercise.

Each check recomputes what it needs from the student's own objects (their function, labels, images or
predictions) and reports through :mod:`utils.exercises`; see :mod:`utils.checks` for the convention and
``tests/test_checks_ch6.py`` for the wrong and the alternative right answers every check is tested with.
"""

from __future__ import annotations

import os
import subprocess
import sys
import uuid
from collections.abc import Callable, Sequence
from typing import Any

import numpy as np

from .. import exercises


def _not_attempted(exercise: str, hint: str) -> exercises.CheckResult:
    return exercises.check_true(exercise, exercises.NOT_ATTEMPTED, hint=hint)


def _placeholder(*values: Any) -> bool:
    return any(v is None or v is Ellipsis or v is exercises.NOT_ATTEMPTED for v in values)


def _fail(exercise: str, hint: str) -> exercises.CheckResult:
    return exercises.check_true(exercise, False, hint=hint)


def _call(exercise: str, fn: Callable, args: Sequence, hint: str):
    """``(True, fn(*args))``, or ``(False, CheckResult)`` when the function is a placeholder or raises."""
    try:
        return True, fn(*args)
    except NotImplementedError:
        return False, _not_attempted(exercise, hint)
    except Exception as exc:  # the student's code raised: say what, not the answer
        return False, _fail(exercise, f"your function raised {type(exc).__name__}: {exc}. {hint}")


def _flat(arrays) -> np.ndarray:
    return np.concatenate([np.ravel(np.asarray(a, dtype=np.float64)) for a in arrays])


# ---------------------------------------------------------------------------
# 6.p1 consistent UIDs (part 2, section 1)
# ---------------------------------------------------------------------------


def _is_uuid4_uid(value: Any) -> bool:
    """A ``2.25.<integer>`` UID whose integer is a random (version 4) UUID, as ``generate_uid(prefix=None)`` makes."""
    from pydicom.uid import UID

    if not isinstance(value, str) or not value.startswith("2.25.") or not UID(value).is_valid:
        return False
    try:
        return uuid.UUID(int=int(value[5:])).version == 4
    except ValueError:
        return False


_CHILD = r"""
import pickle, sys
fn, args = pickle.loads(sys.stdin.buffer.read())
sys.stdout.buffer.write(pickle.dumps([fn(*a) for a in args]))
"""


def _in_other_process(fn: Callable, args: list[tuple]) -> list | None:
    """``[fn(*a) for a in args]`` in a fresh Python process with another string-hash salt (``PYTHONHASHSEED``).

    Python's ``hash()`` of a string changes from process to process, so a UID built on it is not
    reproducible. The function travels by value (``cloudpickle``); returns ``None`` if it cannot.
    """
    import pickle

    try:
        import cloudpickle

        payload = cloudpickle.dumps((fn, args))
    except Exception:
        return None
    env = dict(
        os.environ,
        PYTHONHASHSEED=str(int.from_bytes(os.urandom(4), "little") % 4_000_000_000 + 1),
        PYTHONPATH=os.pathsep.join(p for p in sys.path if p),
    )
    try:
        done = subprocess.run(
            [sys.executable, "-c", _CHILD], input=payload, capture_output=True, env=env, timeout=120, check=True
        )
        return pickle.loads(done.stdout)
    except Exception:
        return None


def _with_other_hash_salt(fn: Callable, args: list[tuple]) -> list:
    """``[fn(*a) for a in args]`` with ``builtins.hash`` of strings and bytes salted differently (a fallback)."""
    import builtins

    real = builtins.hash

    def other(value):
        return real(("another process", value)) if isinstance(value, (str, bytes)) else real(value)

    builtins.hash = other
    try:
        return [fn(*a) for a in args]
    finally:
        builtins.hash = real


def ex_6_p1(
    uid_first: Any, uid_second: Any, same_twice: Any, my_uid: Callable, uids: Sequence[str], salt: str
) -> exercises.CheckResult:
    """Exercise 6.p1 (part 2, section 1): pydicom's ``generate_uid(prefix=None, ...)`` pitfall, and a keyed UID map.

    (a) ``uid_first`` and ``uid_second`` must be two results of ``generate_uid(prefix=None,
    entropy_srcs=[...])`` (valid ``2.25.`` UIDs of random UUIDs), and ``same_twice`` a ``bool`` equal
    to ``uid_first == uid_second``; the check also calls ``generate_uid`` twice itself and requires
    the same verdict. A typed ``False`` without the two UIDs does not pass.
    (b) ``my_uid(uid, salt)`` is called on every original ``uid`` of ``uids``: each result must be a
    valid ``2.25.<integer>`` UID of at most 64 characters; equal inputs give equal outputs **also in
    another Python process** (a UID built on ``hash()``, whose string salt changes per process, fails);
    different UIDs give different results, and so does another salt.
    """
    from pydicom.uid import UID, generate_uid

    hint = (
        "call generate_uid twice, keep both results and compare them; then hash salt and UID into a "
        "name-based UUID (uuid.uuid5) and write '2.25.' + its integer"
    )
    if _placeholder(uid_first, uid_second, same_twice, my_uid):
        return _not_attempted("6.p1", hint)
    uids = [str(u) for u in uids]
    if not uids:
        raise ValueError("ex_6_p1 needs at least one original UID")
    # (a)
    truth = generate_uid(prefix=None, entropy_srcs=[salt, uids[0]]) == generate_uid(
        prefix=None, entropy_srcs=[salt, uids[0]]
    )
    if not (_is_uuid4_uid(uid_first) and _is_uuid4_uid(uid_second)):
        return _fail(
            "6.p1",
            "(a) uid_first and uid_second must be the two UIDs that generate_uid(prefix=None, "
            "entropy_srcs=[...]) returned. " + hint,
        )
    if (
        not isinstance(same_twice, (bool, np.bool_))
        or bool(same_twice) != (uid_first == uid_second)
        or bool(same_twice) != truth
    ):
        return _fail("6.p1", "(a) same_twice must be the comparison uid_first == uid_second. " + hint)
    # (b)
    args = [(u, salt) for u in uids] + [(uids[0], salt + "x")]
    ok, here = _call("6.p1", lambda: [my_uid(*a) for a in args], (), hint)
    if not ok:
        return here
    if any(_placeholder(r) for r in here):
        return _not_attempted("6.p1", hint)
    if not all(
        isinstance(n, str) and n.startswith("2.25.") and len(n) <= 64 and n[5:].isdigit() and UID(n).is_valid
        for n in here
    ):
        return _fail(
            "6.p1", "(b) every result must be a valid UID '2.25.<decimal integer>' of at most 64 characters. " + hint
        )
    new = here[:-1]
    if [my_uid(*a) for a in args] != here:
        return _fail("6.p1", "(b) the same inputs gave different UIDs in two calls. " + hint)
    if len(set(new)) != len(set(uids)) or {u: n for u, n in zip(uids, new)} != dict(zip(uids, new)):
        return _fail("6.p1", "(b) different original UIDs must get different new UIDs, equal ones equal UIDs. " + hint)
    if here[-1] == new[0]:
        return _fail("6.p1", "(b) another salt must give another UID, or anyone could recompute the map. " + hint)
    there = _in_other_process(my_uid, args)
    if there is None:
        try:
            there = _with_other_hash_salt(my_uid, args)
        except Exception as exc:
            return _fail("6.p1", f"your function raised {type(exc).__name__}: {exc}. {hint}")
    if there != here:
        return _fail(
            "6.p1",
            "(b) your UIDs change from one Python process to the next (Python's hash() of a "
            "string is salted per process): use a fixed hash such as uuid.uuid5 or hashlib. " + hint,
        )
    return exercises.check_true("6.p1", True, hint=hint)


# ---------------------------------------------------------------------------
# 6.p2 FedAvg by hand (part 2, section 2)
# ---------------------------------------------------------------------------


def ex_6_p2(
    my_fedavg: Callable, real_weights: Sequence[Sequence[np.ndarray]], sizes: Sequence[int], *, seed: int = 0
) -> exercises.CheckResult:
    """Exercise 6.p2 (part 2, section 2): ``my_fedavg(weight_lists, sizes)`` against :func:`utils.privacy.fedavg`.

    Compared on the given real weight lists (one per client) with the given sizes, and on random
    arrays of two layers with sizes 1, 2, 3 and 10 (a plain, unweighted mean fails there).
    """
    from .. import privacy

    hint = "weights n_k / n, one weighted sum per layer (zip the clients' lists layer by layer)"
    rng = np.random.default_rng(seed)
    rand = [[rng.normal(size=(3, 4)), rng.normal(size=(5,))] for _ in range(4)]
    cases = [(list(real_weights), list(sizes)), (rand, [1, 2, 3, 10])]
    return exercises.check_function(
        "6.p2",
        lambda w, s: _flat(my_fedavg(w, s)),
        [((w, s), _flat(privacy.fedavg(w, s))) for w, s in cases],
        rtol=1e-5,
        atol=1e-7,
        hint=hint,
    )


# ---------------------------------------------------------------------------
# 6.p3 clipping by hand (part 2, section 3)
# ---------------------------------------------------------------------------


def ex_6_p3(my_clipped_mean: Callable, per_example: Sequence) -> exercises.CheckResult:
    """Exercise 6.p3 (part 2, section 3): ``my_clipped_mean(per_example, C)`` against :func:`utils.privacy.clip_and_noise`.

    On the given per-example gradients (a list of arrays, first axis = example) with σ = 0 and B = the
    number of examples, for C = 0.05, 0.5 and 10⁶ (strong clipping, some clipping, none). Clipping each
    layer separately, or averaging the norms, fails.
    """
    from .. import privacy

    hint = "one norm per example over ALL arrays (not per layer); scale by min(1, C / norm); then average"
    pe = [np.asarray(g) for g in per_example]
    cases = [
        (
            (pe, c),
            _flat(privacy.clip_and_noise(pe, l2_norm_clip=c, noise_multiplier=0.0, expected_batch_size=len(pe[0]))[0]),
        )
        for c in (0.05, 0.5, 1e6)
    ]
    return exercises.check_function(
        "6.p3", lambda g, c: _flat(my_clipped_mean(g, c)), cases, rtol=1e-4, atol=1e-7, hint=hint
    )


# ---------------------------------------------------------------------------
# 6.1 what a flipped label costs (section 1.2)
# ---------------------------------------------------------------------------


def ex_6_1a(n_flipped: Any, noisy_prevalence_measured: Any, y_train: np.ndarray, *, seed: int) -> exercises.CheckResult:
    """Exercise 6.1 part 1: the count of flipped labels and the noisy prevalence, recomputed with ``flip_labels``."""
    from .. import quality

    hint = "flip_labels returns (noisy labels, flipped indices); the prevalence is a mean"
    if _placeholder(n_flipped, noisy_prevalence_measured):
        return _not_attempted("6.1a", hint)
    noisy, flipped = quality.flip_labels(y_train, 0.2, seed=seed)
    return exercises.check_value(
        "6.1a", (n_flipped, noisy_prevalence_measured), (len(flipped), float(noisy.mean())), hint=hint
    )


def ex_6_1b(noisy_prevalence: Callable, *, seed: int = 0) -> exercises.CheckResult:
    """Exercise 6.1 part 2: ``noisy_prevalence(pi, rho)`` = π(1 − ρ) + (1 − π)ρ on fixed and random cases."""
    hint = "positives that keep their label plus negatives that become positive"
    rng = np.random.default_rng(seed)
    pairs = [(0.742, 0.2), (0.5, 0.3), (1.0, 0.1), (0.1, 0.0)] + [tuple(v) for v in rng.random((5, 2))]
    return exercises.check_function(
        "6.1b",
        noisy_prevalence,
        [((pi, rho), pi * (1 - rho) + (1 - pi) * rho) for pi, rho in pairs],
        rtol=1e-9,
        atol=1e-12,
        hint=hint,
    )


def ex_6_1c(apparent_accuracy: Any, y_train: np.ndarray, *, seed: int) -> exercises.CheckResult:
    """Exercise 6.1 part 3: a perfect classifier's accuracy against the noisy labels, recomputed."""
    from .. import quality

    hint = "against the noisy labels, a perfect classifier is wrong exactly on the flipped cases"
    if _placeholder(apparent_accuracy):
        return _not_attempted("6.1c", hint)
    y = np.asarray(y_train).reshape(-1)
    noisy, _ = quality.flip_labels(y, 0.2, seed=seed)
    return exercises.check_value("6.1c", apparent_accuracy, float(np.mean(noisy == y)), rtol=1e-9, hint=hint)


# ---------------------------------------------------------------------------
# 6.2 leaked duplicates (section 1.1)
# ---------------------------------------------------------------------------


def ex_6_2(
    leaks: Any, labels_agree: Any, x_train: np.ndarray, x_test: np.ndarray, y_train: np.ndarray, y_test: np.ndarray
) -> exercises.CheckResult:
    """Exercise 6.2: every byte-identical (train i, test j) pair, sorted, and whether each pair's labels agree.

    Recomputed with :func:`utils.quality.exact_duplicates` on the given images and labels.
    """
    from .. import quality

    hint = "hash every training image once, then look every test image up in that dictionary"
    if _placeholder(leaks, labels_agree):
        return _not_attempted("6.2", hint)
    ref = sorted(
        (i, j)
        for a, i, b, j in quality.exact_duplicates({"train": x_train, "test": x_test})
        if (a, b) == ("train", "test")
    )
    yt, ys = np.asarray(y_train).reshape(-1), np.asarray(y_test).reshape(-1)
    agree = [bool(yt[i] == ys[j]) for i, j in ref]
    try:
        got = [tuple(int(v) for v in pair) for pair in leaks]
        got_agree = [bool(v) for v in labels_agree]
    except (TypeError, ValueError):
        return _fail("6.2", "`leaks` must be a list of (i, j) pairs and `labels_agree` a list of booleans. " + hint)
    return exercises.check_true("6.2", got == ref and got_agree == agree, hint=hint)


# ---------------------------------------------------------------------------
# 6.3 sensitivity at a fixed specificity (section 2)
# ---------------------------------------------------------------------------


def ex_6_3(sens_at_spec: Callable, y: np.ndarray, predictions: Sequence[np.ndarray]) -> exercises.CheckResult:
    """Exercise 6.3: ``sens_at_spec(y, p, target)`` against :func:`utils.metrics.sensitivity_at_specificity`.

    On the labels ``y`` with every prediction vector of ``predictions`` at specificities 0.8, 0.9 and
    0.95, and on a small case with tied scores where "lowest threshold" matters.
    """
    from .. import metrics

    hint = "sort the negatives' scores; the threshold is one of them"
    cases = [((y, p, s), metrics.sensitivity_at_specificity(y, p, s)) for p in predictions for s in (0.8, 0.9, 0.95)]
    cases.append(((np.array([0, 0, 0, 0, 1, 1]), np.array([0.1, 0.2, 0.3, 0.9, 0.25, 0.95]), 0.75), 0.5))
    cases.append(((np.array([0, 0, 0, 0, 1, 1, 1]), np.array([0.1, 0.4, 0.4, 0.8, 0.4, 0.5, 0.9]), 0.5), 2 / 3))
    return exercises.check_function("6.3", sens_at_spec, cases, hint=hint)


def ex_6_3b(sens90: Any, y_test: np.ndarray, p_test: np.ndarray) -> exercises.CheckResult:
    """Exercise 6.3, second part: the baseline model's test sensitivity at specificity 0.9, recomputed."""
    from .. import metrics

    hint = "call your sens_at_spec on the baseline model's test predictions with target 0.9"
    if _placeholder(sens90):
        return _not_attempted("6.3b", hint)
    return exercises.check_value("6.3b", sens90, metrics.sensitivity_at_specificity(y_test, p_test, 0.9), hint=hint)


# ---------------------------------------------------------------------------
# 6.4 class weights by hand (part 1, section 2)
# ---------------------------------------------------------------------------


def ex_6_4(my_class_weights: Callable, y_train: np.ndarray, *, seed: int = 0) -> exercises.CheckResult:
    """Exercise 6.4 (part 1, section 2): ``my_class_weights(y)`` against :func:`utils.quality.class_weights`.

    The "balanced" weights N / (K · N_k) as a dict {class: weight}, compared on the chapter's training labels,
    on a random three-class imbalanced label vector, and on labels whose classes are not 0…K−1 (3 and 7), where
    indexing by position instead of by class fails. Inverse frequency without the factor 1 / K fails too.
    """
    from .. import quality

    hint = "count each class with np.unique(y, return_counts=True); weight = N / (K * N_k), keyed by the class"
    rng = np.random.default_rng(seed)
    cases_y = [np.asarray(y_train).reshape(-1), rng.choice(3, size=200, p=[0.7, 0.2, 0.1]), np.array([3, 3, 3, 7])]

    def as_vector(y):
        w = my_class_weights(y)
        if not isinstance(w, dict):
            raise TypeError(f"return a dict {{class: weight}}, not {type(w).__name__}")
        return [float(w.get(int(k), np.nan)) for k in np.unique(y)]

    expected = [[quality.class_weights(y)[int(k)] for k in np.unique(y)] for y in cases_y]
    return exercises.check_function("6.4", as_vector, [((y,), e) for y, e in zip(cases_y, expected)], hint=hint)


# ---------------------------------------------------------------------------
# 6.p4 the loss-threshold attack by hand (part 2, section 3)
# ---------------------------------------------------------------------------


def ex_6_p4(
    attack_auc: Callable, member_losses: np.ndarray, nonmember_losses: np.ndarray, *, seed: int = 0
) -> exercises.CheckResult:
    """Exercise 6.p4 (part 2, section 3): ``attack_auc(member_losses, nonmember_losses)``.

    The ROC AUC of the attack that calls "member" when the loss is low, i.e. the probability that a random member
    has a lower loss than a random non-member, ties counting one half; recomputed with scikit-learn's
    ``roc_auc_score`` on the scores −loss. Compared on the chapter's real losses, on random losses, and on losses
    with many ties (a strict comparison without the half fails there); the reversed direction (high loss =
    member) fails everywhere.
    """
    from sklearn.metrics import roc_auc_score

    hint = "score = -loss (a low loss means member); members are the positives; ties count one half"
    rng = np.random.default_rng(seed)
    cases = [
        (np.asarray(member_losses, float), np.asarray(nonmember_losses, float)),
        (rng.gamma(2.0, 0.3, 300), rng.gamma(2.0, 0.4, 250)),
        (np.round(rng.uniform(0, 1, 200), 1), np.round(rng.uniform(0.1, 1.1, 150), 1)),
    ]

    def reference(m, n):
        y = np.r_[np.ones(len(m)), np.zeros(len(n))]
        return float(roc_auc_score(y, -np.r_[m, n]))

    return exercises.check_function(
        "6.p4",
        lambda m, n: float(attack_auc(m, n)),
        [((m, n), reference(m, n)) for m, n in cases],
        rtol=1e-9,
        hint=hint,
    )
