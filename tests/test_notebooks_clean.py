"""The committed chapters follow the template (CONTRIBUTING.md) and their student editions leak nothing."""

from __future__ import annotations

import ast

import nbformat
import pytest
from conftest import REPO_ROOT, leaked_lines

from utils import exercises, student
from utils.exercises import BEGIN, END

NOTEBOOKS = sorted((REPO_ROOT / "notebooks").glob("[0-9][0-9]_*.ipynb"))
VOLATILE_NOTEBOOK_KEYS = {"widgets", "papermill", "execution"}
VOLATILE_CELL_KEYS = {"execution", "papermill", "ExecuteTime", "collapsed", "scrolled"}


def test_there_are_chapters():
    assert NOTEBOOKS, "no notebooks/NN_*.ipynb found"


@pytest.fixture(params=NOTEBOOKS, ids=[p.name for p in NOTEBOOKS])
def chapter(request):
    """``(file name, notebook)`` of one committed chapter."""
    return request.param.name, nbformat.read(request.param, as_version=4)


def code_cells(nb):
    return [(i, c) for i, c in enumerate(nb.cells) if c.cell_type == "code"]


def test_valid_nbformat(chapter):
    nbformat.validate(chapter[1])


def test_no_outputs_and_no_execution_counts(chapter):
    name, nb = chapter
    dirty = [i for i, c in code_cells(nb) if c.get("outputs") or c.get("execution_count") is not None]
    assert not dirty, f"{name}: cells {dirty} have outputs or execution counts; clear them before committing"


def test_parameters_cell(chapter):
    name, nb = chapter
    tagged = [(i, c) for i, c in enumerate(nb.cells) if "parameters" in c.get("metadata", {}).get("tags", [])]
    assert len(tagged) == 1, f"{name}: {len(tagged)} cells are tagged 'parameters'; exactly one is required"
    index, cell = tagged[0]
    assert cell.cell_type == "code"
    assigned = {}
    for stmt in ast.parse(cell.source).body:
        assert isinstance(stmt, ast.Assign) and len(stmt.targets) == 1 and isinstance(stmt.targets[0], ast.Name), (
            f"{name}: the parameters cell may only assign PROFILE and SEED, found {ast.unparse(stmt)!r}"
        )
        assigned[stmt.targets[0].id] = ast.literal_eval(stmt.value)
    assert set(assigned) == {"PROFILE", "SEED"}, f"{name}: the parameters cell assigns {sorted(assigned)}"
    assert assigned["PROFILE"] == "full"
    assert type(assigned["SEED"]) is int and assigned["SEED"] >= 0
    first_code, second_code = code_cells(nb)[0][0], code_cells(nb)[1][0]
    assert "colab-install" in nb.cells[first_code].metadata.get("tags", []), (
        f"{name}: the first code cell must be the Colab install cell (python -m utils.launch)"
    )
    assert index == second_code, f"{name}: the parameters cell must follow the install cell"


def test_kernelspec(chapter):
    name, nb = chapter
    ks = nb.metadata.get("kernelspec", {})
    assert ks.get("name") == "python3" and ks.get("language") == "python", ks


def test_no_volatile_metadata(chapter):
    name, nb = chapter
    found = sorted(VOLATILE_NOTEBOOK_KEYS & set(nb.metadata))
    assert not found, f"{name}: notebook metadata has {found}"
    for i, cell in enumerate(nb.cells):
        found = sorted(VOLATILE_CELL_KEYS & set(cell.get("metadata", {})))
        assert not found, f"{name} cell {i}: metadata has {found}"


def test_student_edition_leaks_no_solution(chapter):
    name, nb = chapter
    leaks = leaked_lines(nb, student.student_notebook(nb, name))
    assert not leaks, f"{name}: solution lines in the student edition: {leaks}"


def test_exercise_cells_end_with_a_check(chapter):
    name, nb = chapter
    for i, cell in code_cells(nb):
        lines = [line.strip() for line in cell.source.splitlines()]
        if BEGIN not in lines:
            continue
        after = "\n".join(cell.source.splitlines()[max(j for j, s in enumerate(lines) if s == END) + 1 :])
        assert exercises.labels_in(after), (
            f"{name} cell {i}: a solution must be followed by a check: "
            f"checks.chN.ex_N_M(...) or a check_* helper of utils.exercises"
        )
        assert "hide-input" in cell.metadata.get("tags", []), f"{name} cell {i}: tag it hide-input"


def test_setup_cell_is_collapsed(chapter):
    """The set-up cell (imports, course.setup) right after the parameters is plumbing: hide its input."""
    name, nb = chapter
    cells = code_cells(nb)
    setup_index, setup = cells[2]  # after the install cell and the parameters
    assert "course.setup(" in setup.source, f"{name}: the cell after the parameters must call course.setup"
    assert "hide-input" in setup.metadata.get("tags", []), f"{name} cell {setup_index}: tag the set-up cell hide-input"


def test_every_written_solution_is_tagged_solution(chapter):
    """A ``{solution}`` directive in an untagged cell would reach the student edition."""
    name, nb = chapter
    for i, cell in enumerate(nb.cells):
        if cell.cell_type == "markdown" and "{solution}" in cell.source:
            assert "solution" in cell.metadata.get("tags", []), f"{name} cell {i}: tag the {{solution}} cell 'solution'"


def test_every_code_cell_compiles(chapter):
    """A syntax error would only show minutes into a run; catch it here (IPython magics aside)."""
    name, nb = chapter
    for i, cell in code_cells(nb):
        source = "\n".join(line for line in cell.source.splitlines() if not line.lstrip().startswith(("%", "!")))
        try:
            compile(source, f"{name} cell {i}", "exec")
        except SyntaxError as exc:
            pytest.fail(f"{name} cell {i}: {exc}")
