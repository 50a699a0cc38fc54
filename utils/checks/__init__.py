"""The exercise checks of each chapter, one module per chapter (``utils.checks.ch1`` … ``ch6``).

A check cell in a notebook calls one function here, for example ``checks.ch1.ex_1_1(stored_to_hu)``.
Keeping the checks out of the notebook does three things:

* every check is unit-tested (``tests/test_checks_chN.py``) with at least one wrong answer, which must
  fail, and one alternative right answer, which must pass; a check that cannot fail is a defect;
* the student edition shows the call, not the reference solution or the expected values the check
  computes, and a student who edits the check cell changes only the call;
* a check recomputes what it needs from the student's own objects (their function, model or arrays)
  instead of comparing numbers the student reports.

Each function takes the student's answer (and whatever data the notebook already holds), prints one
line through :mod:`utils.exercises` and returns its :class:`~utils.exercises.CheckResult`.  Its
docstring names the exercise and the chapter section that teaches it.  A placeholder answer
(:data:`utils.exercises.NOT_ATTEMPTED`, or a function that raises
:class:`~utils.exercises.NotAttempted`) is reported as "not attempted" by the helpers of
:mod:`utils.exercises`, which every check here uses.
"""
