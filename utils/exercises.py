"""Automatic checks for exercises: a clear pass/fail message, never the answer.

Conventions (shared with :mod:`utils.student`):

* the solution inside an exercise code cell sits between the lines
  ``### BEGIN SOLUTION`` and ``### END SOLUTION``; the student edition
  replaces that region with a placeholder: inside a function,
  ``raise exercises.NotAttempted(...)``; at the top level of a cell, each name
  the solution defines is set to :data:`NOT_ATTEMPTED`, and the rest of the
  cell runs inside ``with exercises.attempt("N.M"):``, so that an unanswered
  exercise reports "not attempted" and *Run All* goes on to the end;
* markdown cells that explain a solution carry the cell tag ``solution`` and
  are dropped from the student edition.

The check functions print one line in plain words that every font has (``Exercise 1.2 passed`` or
``Exercise 1.2: not yet — <hint>``) and return ``True``/``False``.  When
``MEDIMG_STRICT_EXERCISES=1`` (the runner sets it) a failure raises
:class:`ExerciseFailed`, so a broken reference solution fails CI.

Answers can be compared against a value computed in the notebook
(:func:`check_value`, :func:`check_function`) or against a SHA-256 digest of
the rounded answer (:func:`check_digest`), which keeps a short numeric or
text answer out of the student's view.
"""

from __future__ import annotations

import hashlib
import os
import re
from collections.abc import Callable, Iterable, Sequence
from typing import Any

import numpy as np

STRICT_ENV = "MEDIMG_STRICT_EXERCISES"
BEGIN = "### BEGIN SOLUTION"
END = "### END SOLUTION"


# The exercises a cell checks: a label passed to a helper of this module (``check_value("2.1", ...)``,
# ``attempt("6.1a", "6.1b")``) or the name of a chapter's check (``checks.ch6.ex_6_1a(...)`` is 6.1a).
_LABEL_ARG = re.compile(r"\bcheck_\w+\(\s*[\"']([0-9]+\.[0-9A-Za-z.]+)[\"']")
_ATTEMPT = re.compile(r"\battempt\(([^)]*)\)")
_QUOTED_LABEL = re.compile(r"[\"']([0-9]+\.[0-9A-Za-z.]+)[\"']")
_CHECK_NAME = re.compile(r"\bex_([0-9]+)_([0-9A-Za-z]+)\s*\(")


def labels_in(source: str) -> list[str]:
    """The exercise labels a code cell checks, in order of appearance, each once.

    >>> labels_in('checks.ch6.ex_6_1a(x)\\nexercises.check_value("6.2", y, 1)')
    ['6.1a', '6.2']
    """
    found = [(m.start(), m.group(1)) for m in _LABEL_ARG.finditer(source)]
    found += [(m.start(), f"{m.group(1)}.{m.group(2)}") for m in _CHECK_NAME.finditer(source)]
    found += [
        (m.start() + k.start(), k.group(1))
        for m in _ATTEMPT.finditer(source)
        for k in _QUOTED_LABEL.finditer(m.group(1))
    ]
    return list(dict.fromkeys(label for _, label in sorted(found)))


class ExerciseFailed(AssertionError):
    """Raised in strict mode when an exercise check fails."""


class NotAttempted(NotImplementedError):
    """Raised by a placeholder of the student edition that the student has not replaced yet."""


class _Placeholder:
    """The value of an answer not written yet: any use of it raises :class:`NotAttempted`.

    Checks recognise it and report "not attempted"; code that uses it (``len(answer)``,
    ``f"{answer:.3f}"``, ``answer + 1``) raises :class:`NotAttempted`, which
    :func:`attempt` turns into the same report.
    """

    _instance = None

    def __new__(cls):
        if cls._instance is None:
            cls._instance = super().__new__(cls)
        return cls._instance

    def __repr__(self) -> str:
        return "NOT_ATTEMPTED"

    def _refuse(self, *args, **kwargs):
        raise NotAttempted("this answer is still the placeholder NOT_ATTEMPTED: replace it with your code")


for _name in (
    "__getattr__",
    "__getitem__",
    "__call__",
    "__len__",
    "__iter__",
    "__bool__",
    "__format__",
    "__float__",
    "__int__",
    "__index__",
    "__array__",
    "__lt__",
    "__le__",
    "__gt__",
    "__ge__",
    "__add__",
    "__radd__",
    "__sub__",
    "__rsub__",
    "__mul__",
    "__rmul__",
    "__truediv__",
    "__rtruediv__",
    "__pow__",
    "__neg__",
    "__abs__",
    "__contains__",
    "__matmul__",
    "__rmatmul__",
):
    setattr(_Placeholder, _name, _Placeholder._refuse)

NOT_ATTEMPTED = _Placeholder()


class attempt:
    """``with exercises.attempt("3.2"):`` around the check part of a student's exercise cell.

    A cell that checks several parts names them all (``attempt("6.1a", "6.1b")``): each is reported.

    If the student has not replaced a placeholder yet (:class:`NotAttempted` is raised inside
    the block), the exercise is reported as not attempted and the notebook goes on; any other
    exception propagates as usual.
    """

    def __init__(self, *exercises: str):
        if not exercises:
            raise ValueError("attempt() needs the label of at least one exercise, e.g. attempt('3.2')")
        self.exercises = exercises

    def __enter__(self) -> attempt:
        return self

    def __exit__(self, exc_type, exc, tb) -> bool:
        if exc_type is not None and issubclass(exc_type, NotAttempted):
            for exercise in self.exercises:  # a cell may check several parts ("6.1a", "6.1b")
                _report(exercise, False, "", attempted=False)
            return True
        return False


class CheckResult(int):
    """True or False, as a check's result; the notebook does not echo it under the check's own line."""

    def __new__(cls, ok: bool) -> CheckResult:
        return super().__new__(cls, bool(ok))

    def __repr__(self) -> str:
        return repr(bool(self))

    def _ipython_display_(self) -> None:
        pass


def _report(exercise: str, ok: bool, hint: str, attempted: bool = True) -> CheckResult:
    if ok:
        print(f"Exercise {exercise} passed.")
        return CheckResult(True)
    if not attempted:
        message = f"Exercise {exercise}: not attempted yet — replace the placeholder with your code."
    else:
        message = f"Exercise {exercise}: not yet — {hint}"
    print(message)
    if os.environ.get(STRICT_ENV) == "1":
        raise ExerciseFailed(message)
    return CheckResult(False)


def _is_placeholder(value: Any) -> bool:
    return value is None or value is Ellipsis or value is NOT_ATTEMPTED


def _close(a: Any, b: Any, rtol: float, atol: float) -> bool:
    if isinstance(b, str) or isinstance(a, str):
        return str(a).strip().lower() == str(b).strip().lower()
    try:
        a_arr, b_arr = np.asarray(a, dtype=float), np.asarray(b, dtype=float)
    except (TypeError, ValueError):
        try:
            return bool(a == b)
        except (TypeError, ValueError):  # e.g. an elementwise comparison with no single truth value
            return False
    return a_arr.shape == b_arr.shape and bool(np.allclose(a_arr, b_arr, rtol=rtol, atol=atol, equal_nan=True))


def check_value(
    exercise: str,
    answer: Any,
    expected: Any,
    *,
    rtol: float = 1e-6,
    atol: float = 0.0,
    hint: str = "compare your steps with the text above",
) -> bool:
    """Compare a value (number, array, tuple or text) with the expected one."""
    if _is_placeholder(answer):
        return _report(exercise, False, hint, attempted=False)
    return _report(exercise, _close(answer, expected, rtol, atol), hint)


def check_true(exercise: str, condition: Any, *, hint: str) -> bool:
    """Pass when ``condition`` is truthy (for answers with many valid forms)."""
    if _is_placeholder(condition):
        return _report(exercise, False, hint, attempted=False)
    try:
        ok = bool(condition)
    except (TypeError, ValueError):  # an array with several elements has no single truth value
        return _report(
            exercise, False, f"the condition must be a single True/False, got {type(condition).__name__}. {hint}"
        )
    return _report(exercise, ok, hint)


def check_function(
    exercise: str,
    fn: Callable,
    cases: Iterable[tuple[Sequence, Any]],
    *,
    rtol: float = 1e-6,
    atol: float = 0.0,
    hint: str = "test your function on a small input",
) -> bool:
    """Call ``fn(*args)`` for each ``(args, expected)`` case and compare the results."""
    try:
        results = [(fn(*args), expected) for args, expected in cases]
    except NotImplementedError:
        return _report(exercise, False, hint, attempted=False)
    except Exception as exc:  # the student's code raised: say what, not the answer
        return _report(exercise, False, f"your function raised {type(exc).__name__}: {exc}. {hint}")
    if any(_is_placeholder(r) for r, _ in results):
        return _report(exercise, False, hint, attempted=False)
    return _report(exercise, all(_close(r, e, rtol, atol) for r, e in results), hint)


def answer_digest(value: Any, decimals: int | None = None) -> str:
    """SHA-256 of a canonical text form of ``value`` (rounded to ``decimals`` if numeric)."""
    if isinstance(value, str):
        text = value.strip().lower()
    else:
        arr = np.asarray(value, dtype=float)
        if decimals is not None:
            arr = np.round(arr, decimals)
        arr = arr + 0.0  # + 0.0 turns -0.0 into 0.0, with or without rounding
        text = ",".join(repr(float(v)) for v in arr.ravel())
    return hashlib.sha256(text.encode()).hexdigest()


def check_digest(
    exercise: str,
    answer: Any,
    digest: str,
    *,
    decimals: int | None = None,
    hint: str = "compare your steps with the text above",
) -> bool:
    """Compare the digest of ``answer`` (rounded to ``decimals``) with a stored digest."""
    if _is_placeholder(answer):
        return _report(exercise, False, hint, attempted=False)
    try:
        ok = answer_digest(answer, decimals) == digest
    except (TypeError, ValueError):
        ok = False
    return _report(exercise, ok, hint)
