"""Tests of utils.exercises: pass/fail lines, no answer in the output, placeholders, strict mode."""

from __future__ import annotations

import numpy as np
import pytest

from utils import exercises
from utils import exercises as ex

EXPECTED = 123.456789  # a distinctive answer that must never be printed


def out_of(capsys) -> str:
    return capsys.readouterr().out


def test_pass_prints_one_line(capsys):
    assert bool(ex.check_value("1.1", EXPECTED, EXPECTED)) is True
    assert out_of(capsys) == "Exercise 1.1 passed.\n"


def test_fail_prints_the_hint_not_the_answer(capsys):
    assert bool(ex.check_value("1.2", 1.0, EXPECTED, hint="divide by the pixel spacing")) is False
    out = out_of(capsys)
    assert out == "Exercise 1.2: not yet — divide by the pixel spacing\n"
    assert "123.4" not in out


@pytest.mark.parametrize(
    "call",
    [
        lambda: ex.check_value("2", [1.0, 2.0], [EXPECTED, 2.0]),
        lambda: ex.check_value("2", np.zeros((2, 2)), np.full((2, 2), EXPECTED)),
        lambda: ex.check_value("2", "benign", "malignant-123.456789"),
        lambda: ex.check_function("2", lambda x: x, [((1.0,), EXPECTED), ((2.0,), 2 * EXPECTED)]),
        lambda: ex.check_digest("2", 5.0, ex.answer_digest(EXPECTED, 3), decimals=3),
        lambda: ex.check_true("2", EXPECTED < 0, hint="look at the sign"),
    ],
)
def test_no_check_prints_the_expected_value(capsys, call):
    assert bool(call()) is False
    out = out_of(capsys)
    assert out.startswith("Exercise 2: not yet — ")
    for leaked in ("123.45", "malignant", "246.9"):
        assert leaked not in out


@pytest.mark.parametrize("placeholder", [None, Ellipsis])
def test_placeholders_are_not_attempted(capsys, placeholder):
    for call in (
        lambda: ex.check_value("3", placeholder, 1.0),
        lambda: ex.check_true("3", placeholder, hint="h"),
        lambda: ex.check_digest("3", placeholder, "0" * 64),
        lambda: ex.check_function("3", lambda x: placeholder, [((1,), 1)]),
    ):
        assert bool(call()) is False
        assert out_of(capsys) == ("Exercise 3: not attempted yet — replace the placeholder with your code.\n")


def test_not_implemented_is_not_attempted(capsys):
    def student(x):
        raise NotImplementedError("Exercise: write your code here")

    assert bool(ex.check_function("4", student, [((1,), 2)])) is False
    assert "not attempted yet" in out_of(capsys)


def test_check_function_catches_student_exceptions(capsys):
    def student(x):
        return 1 / x

    assert bool(ex.check_function("5", student, [((2,), 0.5), ((0,), EXPECTED)], hint="mind x = 0")) is False
    out = out_of(capsys)
    assert out == "Exercise 5: not yet — your function raised ZeroDivisionError: division by zero. mind x = 0\n"


def test_check_function_compares_every_case(capsys):
    def square(x):
        return x * x

    assert bool(ex.check_function("6", square, [((2,), 4), ((np.array([1.0, 3.0]),), [1.0, 9.0])])) is True
    assert bool(ex.check_function("6", square, [((2,), 4), ((3,), 10)])) is False
    assert bool(ex.check_function("6", lambda a, b: a + b, [((1, 2), 3), ((0.1, 0.2), 0.3)])) is True  # rtol


def test_strict_mode_raises(monkeypatch, capsys):
    monkeypatch.setenv(ex.STRICT_ENV, "1")
    assert bool(ex.check_value("7", 2.0, 2.0)) is True  # a pass never raises
    with pytest.raises(ex.ExerciseFailed, match=r"Exercise 7: not yet — h") as info:
        ex.check_value("7", 1.0, 2.0, hint="h")
    assert isinstance(info.value, AssertionError)
    with pytest.raises(ex.ExerciseFailed, match="not attempted"):
        ex.check_value("7", None, 2.0)
    with pytest.raises(ex.ExerciseFailed, match="raised KeyError"):
        ex.check_function("7", lambda: {}["k"], [((), 1)])
    assert "Exercise 7" in out_of(capsys)  # the line is printed before raising


@pytest.mark.parametrize("value", ["0", "", "true", "yes"])
def test_only_1_turns_strict_mode_on(monkeypatch, value):
    monkeypatch.setenv(ex.STRICT_ENV, value)
    assert bool(ex.check_value("8", 1.0, 2.0)) is False


@pytest.mark.parametrize(
    "answer, expected, ok",
    [
        (1.0 + 1e-9, 1.0, True),
        (1.001, 1.0, False),
        ((1, 2, 3), [1.0, 2.0, 3.0], True),
        ([1, 2, 3], [[1, 2, 3]], False),  # shapes must agree
        ([1, 2], [1, 2, 3], False),
        ("  Benign ", "benign", True),
        ("benign", "malignant", False),
        (float("nan"), float("nan"), True),
        (True, 1, True),
        ({"a": 1}, {"a": 1}, True),
        ({"a": 1}, {"a": 2}, False),
        ([[1, 2], [3]], [[1, 2], [3]], True),  # ragged: compared with ==
    ],
)
def test_check_value_comparisons(capsys, answer, expected, ok):
    assert bool(ex.check_value("9", answer, expected)) is ok


def test_check_value_tolerances():
    assert bool(ex.check_value("9", 1.05, 1.0, rtol=0.1)) is True
    assert bool(ex.check_value("9", 0.0, 1e-9, atol=1e-8)) is True
    assert bool(ex.check_value("9", 0.0, 1e-9)) is False


def test_uncomparable_answer_fails_without_crashing(capsys):
    class Weird:
        def __eq__(self, other):
            raise ValueError("no truth value")

    assert bool(ex.check_value("10", Weird(), Weird())) is False


def test_check_true(capsys):
    assert bool(ex.check_true("11", 3 > 2, hint="h")) is True
    assert bool(ex.check_true("11", [], hint="h")) is False
    assert bool(ex.check_true("11", np.array([True, False]), hint="use .all()")) is False
    assert "single True/False" in out_of(capsys)


def test_answer_digest_rounding_and_negative_zero():
    d = ex.answer_digest
    assert len(d(1.0)) == 64 and all(c in "0123456789abcdef" for c in d(1.0))
    assert d(0.1231, 3) == d(0.1234, 3) == d(0.123, 3)
    assert d(0.1236, 3) != d(0.1231, 3)
    assert d(-0.0) == d(0.0)  # with or without rounding
    assert d(-0.0001, 2) == d(0.0, 2) == d(0.0001, 2)
    assert d(2) == d(2.0) == d(np.float32(2.0))
    assert d([1, 2, 3]) == d(np.array([1.0, 2.0, 3.0])) != d([1, 2, 4])
    assert d(" Benign ") == d("benign") != d("malignant")
    assert d(0.1 + 0.2) != d(0.3)  # without rounding, exact floats count
    assert d(0.1 + 0.2, 10) == d(0.3, 10)


def test_check_digest(capsys):
    digest = ex.answer_digest(3.14159, 2)
    assert bool(ex.check_digest("12", 3.1416, digest, decimals=2)) is True
    assert bool(ex.check_digest("12", 3.2, digest, decimals=2)) is False
    assert bool(ex.check_digest("12", object(), digest, decimals=2)) is False  # no crash on a weird answer
    assert bool(ex.check_digest("12", "PNEUMONIA", ex.answer_digest("pneumonia"))) is True


def test_the_placeholder_is_reported_as_not_attempted(capsys, monkeypatch):
    monkeypatch.delenv(exercises.STRICT_ENV, raising=False)
    placeholder = exercises.NOT_ATTEMPTED
    assert not exercises.check_value("9.1", placeholder, 1.0)
    assert not exercises.check_true("9.2", placeholder, hint="h")
    assert not exercises.check_digest("9.3", placeholder, "0" * 64)
    assert not exercises.check_function("9.4", placeholder, [((1,), 1)])
    out = capsys.readouterr().out
    assert out.count("not attempted") == 4 and "passed" not in out
    for use in (
        lambda: len(placeholder),
        lambda: f"{placeholder:.3f}",
        lambda: placeholder + 1,
        lambda: placeholder < 1,
        lambda: bool(placeholder),
        lambda: placeholder.shape,
    ):
        with pytest.raises(exercises.NotAttempted):
            use()
    with exercises.attempt("9.5"):
        _ = placeholder * 2
        raise AssertionError("not reached")
    assert "Exercise 9.5: not attempted" in capsys.readouterr().out
    with pytest.raises(ZeroDivisionError):  # other errors are the student's to see
        with exercises.attempt("9.6"):
            1 / 0


def test_a_check_result_is_a_boolean_that_the_notebook_does_not_echo(capsys):
    result = ex.check_value("8.1", 1.0, 1.0)
    assert result == True and bool(result) is True and repr(result) == "True"  # noqa: E712
    assert hasattr(result, "_ipython_display_") and result._ipython_display_() is None


@pytest.mark.parametrize(
    "source, labels",
    [
        ('exercises.check_value("2.1", x, 1)', ["2.1"]),
        (
            "checks.ch6.ex_6_1a(model)\nchecks.ch6.ex_6_1b(x); exercises.check_true('6.2', ok, hint='h')",
            ["6.1a", "6.1b", "6.2"],
        ),
        ("with exercises.attempt('3.2', '3.3'):\n    checks.ch3.ex_3_2(d)", ["3.2", "3.3"]),
        ("checks.ch6.ex_6_p1(uids)", ["6.p1"]),
        ('check_function(\n    "4.1", f, cases)', ["4.1"]),
        ("index_1 = 2\nmy_ex_1_1 = 3\nprint('1.5 mm')", []),  # no call of a check: no label
    ],
)
def test_labels_in_finds_the_exercises_a_cell_checks(source, labels):
    assert exercises.labels_in(source) == labels
