"""Tests of utils.student: solutions removed, checks kept, nothing leaks."""

from __future__ import annotations

import ast

import nbformat
import pytest
from conftest import leaked_lines
from nbformat.v4 import new_code_cell, new_markdown_cell, new_notebook, new_output

from utils import exercises, student
from utils.exercises import BEGIN, END

FUNCTION_CELL = f"""\
import numpy as np

def hounsfield(pixels, slope, intercept):
    \"\"\"Stored values to HU.\"\"\"
    {BEGIN}
    scaled = np.asarray(pixels) * slope
    return scaled + intercept
    {END}

check_function("1.1", hounsfield, [((1, 2, -1024), -1022)])"""


def test_strip_keeps_indentation_and_the_check():
    out = student.strip_solution_source(FUNCTION_CELL)
    assert out.splitlines() == [
        "import numpy as np",
        "",
        "def hounsfield(pixels, slope, intercept):",
        '    """Stored values to HU."""',
        "    # YOUR CODE HERE",
        f"    {student.PLACEHOLDER}",
        "",
        'check_function("1.1", hounsfield, [((1, 2, -1024), -1022)])',
    ]
    namespace = {"check_function": lambda *a: None, "exercises": exercises}
    exec(compile(out, "student", "exec"), namespace)  # valid Python ...
    with pytest.raises(NotImplementedError, match="write your code here"):  # ... that asks for the code
        namespace["hounsfield"](1, 2, 3)


def test_strip_several_regions_and_top_level():
    source = (
        f"{BEGIN}\nanswer = 42\n{END}\nprint(answer)\nfor i in range(2):\n        {BEGIN}\n"
        f"        total = i\n        {END}\n"
    )
    out = student.strip_solution_source(source)
    lines = out.splitlines()
    assert lines[:2] == ["# YOUR CODE HERE", "answer = exercises.NOT_ATTEMPTED  # replace with your answer"]
    assert lines[2].startswith("with exercises.attempt('?'):")
    assert lines[3:] == [
        "    print(answer)",
        "    for i in range(2):",
        "            # YOUR CODE HERE",
        f"            {student.PLACEHOLDER}",
    ]
    ast.parse(out)
    assert "42" not in out and "total" not in out


TOP_LEVEL_CELL = f"""\
{BEGIN}
dice_a = [0.6, 0.6]
dice_b, extra = [1.0, 0.18], 1
{END}
_iou = lambda d: [x / (2 - x) for x in d]
exercises.check_true("3.2", len(dice_a) == len(dice_b) and sum(_iou(dice_a)) < sum(_iou(dice_b)), hint="h")"""


def test_an_unanswered_top_level_exercise_reports_not_attempted_and_goes_on(capsys, monkeypatch):
    monkeypatch.delenv(exercises.STRICT_ENV, raising=False)
    out = student.strip_solution_source(TOP_LEVEL_CELL)
    assert "dice_a = exercises.NOT_ATTEMPTED" in out and "dice_b = exercises.NOT_ATTEMPTED" in out
    assert "extra" not in out  # a name the check does not use gets no placeholder (no hint at the steps)
    assert "with exercises.attempt('3.2'):" in out and "0.18" not in out
    exec(compile(out, "student", "exec"), {"exercises": exercises})  # does not raise
    assert capsys.readouterr().out.strip() == (
        "Exercise 3.2: not attempted yet — replace the placeholder with your code."
    )
    # the student answers: the same cell, placeholders replaced, now checks for real
    answered = out.replace("dice_a = exercises.NOT_ATTEMPTED", "dice_a = [0.6, 0.6]").replace(
        "dice_b = exercises.NOT_ATTEMPTED", "dice_b = [1.0, 0.18]"
    )
    exec(compile(answered, "student", "exec"), {"exercises": exercises})
    assert "passed" in capsys.readouterr().out
    wrong = answered.replace("dice_b = [1.0, 0.18]", "dice_b = [0.5, 0.5]")
    exec(compile(wrong, "student", "exec"), {"exercises": exercises})
    assert "not yet" in capsys.readouterr().out


def test_an_unanswered_function_exercise_reports_not_attempted(capsys, monkeypatch):
    monkeypatch.delenv(exercises.STRICT_ENV, raising=False)
    out = student.strip_solution_source(FUNCTION_CELL.replace('check_function("1.1"', 'exercises.check_function("1.1"'))
    exec(compile(out, "student", "exec"), {"exercises": exercises})
    assert "Exercise 1.1: not attempted" in capsys.readouterr().out


def test_a_cell_that_checks_several_parts_reports_each(capsys, monkeypatch):
    monkeypatch.delenv(exercises.STRICT_ENV, raising=False)
    cell = TOP_LEVEL_CELL + '\nexercises.check_true("3.2b", len(dice_b) == 2, hint="h")'
    out = student.strip_solution_source(cell)
    assert "with exercises.attempt('3.2', '3.2b'):" in out
    exec(compile(out, "student", "exec"), {"exercises": exercises})
    printed = capsys.readouterr().out
    assert "Exercise 3.2: not attempted" in printed and "Exercise 3.2b: not attempted" in printed


def test_strict_mode_still_fails_an_unanswered_exercise(monkeypatch):
    monkeypatch.setenv(exercises.STRICT_ENV, "1")
    out = student.strip_solution_source(TOP_LEVEL_CELL)
    with pytest.raises(exercises.ExerciseFailed, match="not attempted"):
        exec(compile(out, "student", "exec"), {"exercises": exercises})


def test_strip_without_markers_is_unchanged():
    assert student.strip_solution_source("a = 1\n  b = 2") == "a = 1\n  b = 2"


@pytest.mark.parametrize(
    "source, message",
    [
        (f"{BEGIN}\nx = 1\n", "is never closed"),
        (f"x = 1\n{END}\n", "without"),
        (f"{BEGIN}\n{BEGIN}\nx = 1\n{END}\n{END}", "nested"),
        (f"{BEGIN}\nx = 1\n{END}\n{END}", "without"),
        ("#### BEGIN SOLUTION (part a)\nx = 1\n### END SOLUTION", "malformed solution marker"),
        (f"{BEGIN}\nx = 1\n# end solution", "malformed solution marker"),
    ],
)
def test_unbalanced_or_malformed_markers_raise(source, message):
    with pytest.raises(student.SolutionMarkerError, match=message) as info:
        student.strip_solution_source(source, where="nb.ipynb cell 4")
    assert str(info.value).startswith("nb.ipynb cell 4: ")
    assert isinstance(info.value, ValueError)


def make_notebook():
    nb = new_notebook()
    nb.metadata["kernelspec"] = {"name": "python3", "display_name": "Python 3", "language": "python"}
    params = new_code_cell('PROFILE = "full"\nSEED = 0', metadata={"tags": ["parameters"]}, execution_count=1)
    exercise = new_markdown_cell("```{exercise} Hounsfield units\n:label: ex-hu\nWrite `hounsfield`.\n```")
    answer = new_code_cell(
        FUNCTION_CELL,
        metadata={"tags": ["hide-input", "thebe-init"]},
        execution_count=2,
        outputs=[new_output("stream", name="stdout", text="Exercise 1.1 passed.\n")],
    )
    explanation = new_markdown_cell(
        "```{solution} ex-hu\n:class: dropdown\n\nMultiply by the rescale slope first, then add the intercept.\n```",
        metadata={"tags": ["solution"]},
    )
    solution_code = new_code_cell("plt.imshow(secret_reference_image)", metadata={"tags": ["solution"]})
    shown = new_code_cell(
        "print('shown')",
        metadata={"tags": ["hide-input"]},
        execution_count=3,
        outputs=[new_output("stream", name="stdout", text="shown\n")],
    )
    nb.cells = [new_markdown_cell("# Title"), params, exercise, answer, explanation, solution_code, shown]
    return nb


def test_student_notebook():
    nb = make_notebook()
    before = nbformat.writes(nb)
    out = student.student_notebook(nb, "ch.ipynb")
    assert nbformat.writes(nb) == before  # the input is not modified
    nbformat.validate(out)
    assert [c.source.splitlines()[0] for c in out.cells] == [
        "# Title",
        'PROFILE = "fast"',
        "```{exercise} Hounsfield units",
        "import numpy as np",
        "print('shown')",
    ]
    answer = out.cells[3]
    assert student.PLACEHOLDER in answer.source and "scaled" not in answer.source
    assert answer.source.rstrip().endswith('check_function("1.1", hounsfield, [((1, 2, -1024), -1022)])')
    assert answer.metadata["tags"] == ["thebe-init"]  # hide-input removed, other tags kept
    assert out.cells[4].metadata["tags"] == ["hide-input"]  # not an exercise cell: unchanged
    assert out.cells[1].metadata["tags"] == ["parameters"]
    for cell in out.cells:
        if cell.cell_type == "code":
            assert cell.outputs == [] and cell.execution_count is None
    assert not any("solution" in c.metadata.get("tags", []) for c in out.cells)


def test_tags_key_is_dropped_when_empty():
    nb = new_notebook(
        cells=[new_code_cell(f"{BEGIN}\nx = 1\n{END}\ncheck_true('1', x)", metadata={"tags": ["hide-input"]})]
    )
    assert "tags" not in student.student_notebook(nb).cells[0].metadata


def test_stray_end_marker_in_a_notebook_raises():
    nb = new_notebook(cells=[new_code_cell(f"x = 1\n{END}")])
    with pytest.raises(student.SolutionMarkerError, match=r"nb cell 0: .*without"):
        student.student_notebook(nb, "nb")


def test_solution_texts():
    texts = student.solution_texts(make_notebook())
    assert "scaled = np.asarray(pixels) * slope" in texts and "return scaled + intercept" in texts
    assert "plt.imshow(secret_reference_image)" in texts
    assert ":class: dropdown" in texts and "```" in texts
    assert BEGIN not in texts and END not in texts and "import numpy as np" not in texts


def test_no_solution_line_leaks_into_the_student_edition():
    nb = make_notebook()
    assert leaked_lines(nb, student.student_notebook(nb)) == []


def test_leak_helper_detects_a_leak():
    """The leak check must be able to fail: the instructor notebook itself leaks everything."""
    nb = make_notebook()
    leaks = leaked_lines(nb, nb)
    assert "return scaled + intercept" in leaks and "plt.imshow(secret_reference_image)" in leaks
    assert "```" not in leaks  # a fence also used by the public exercise cell is not a leak


def test_main_writes_student_notebooks(tmp_path, monkeypatch, capsys):
    src = tmp_path / "notebooks" / "01_x.ipynb"
    src.parent.mkdir()
    nbformat.write(make_notebook(), src)
    monkeypatch.setattr(student, "notebooks", lambda root=None: [src])
    assert student.main(["--out", str(tmp_path / "student")]) == 0
    written = nbformat.read(tmp_path / "student" / "01_x.ipynb", as_version=4)
    assert len(written.cells) == 5 and leaked_lines(make_notebook(), written) == []
    assert "wrote" in capsys.readouterr().out


def test_notebooks_lists_numbered_chapters(tmp_path):
    (tmp_path / "notebooks").mkdir()
    for name in ("02_b.ipynb", "01_a.ipynb", "scratch.ipynb", "1_x.ipynb"):
        (tmp_path / "notebooks" / name).write_text("{}")
    assert [p.name for p in student.notebooks(tmp_path)] == ["01_a.ipynb", "02_b.ipynb"]


def test_a_cell_that_only_checks_is_read_only_in_the_student_edition():
    from nbformat.v4 import new_code_cell, new_notebook

    nb = new_notebook(
        cells=[
            new_code_cell(f"{BEGIN}\nanswer = 1\n{END}"),
            new_code_cell("checks.ch9.ex_9_1(answer)"),
            new_code_cell("x = 1"),
        ]
    )
    out = student.student_notebook(nb)
    assert out.cells[1].metadata["editable"] is False and out.cells[1].metadata["deletable"] is False
    assert "editable" not in out.cells[0].metadata and "editable" not in out.cells[2].metadata


@pytest.mark.parametrize("path", student.notebooks(), ids=lambda p: p.stem)
def test_the_student_edition_imports_what_its_placeholders_use(path):
    """A placeholder calls ``exercises.…``; a chapter that does not import ``exercises`` itself (its teacher
    edition may not need it) would stop every exercise with a NameError in the student's copy."""
    edition = student.student_notebook(nbformat.read(path, as_version=4), path.name)
    code = [c.source for c in edition.cells if c.cell_type == "code"]
    if not any("exercises." in s for s in code):
        return
    bound = set()
    for source in code:
        for node in ast.walk(ast.parse(source)):
            if isinstance(node, ast.ImportFrom) and node.module == "utils":
                bound |= {a.asname or a.name for a in node.names}
    assert "exercises" in bound, f"{path.name}: add `exercises` to the set-up cell's `from utils import ...`"
