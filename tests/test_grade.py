"""Tests of utils.grade on generated submissions: right, wrong, empty, tampered, endless, broken."""

from __future__ import annotations

import csv

import nbformat
import pytest
from nbformat.v4 import new_code_cell, new_markdown_cell, new_notebook

from utils import grade, student
from utils.exercises import BEGIN, END

SQUARE = f"""def square(x):
    {BEGIN}
    return x * x
    {END}


exercises.check_function("1.1", square, [((2,), 4), ((-3,), 9)], hint="multiply x by itself")"""
ANSWER = f"""{BEGIN}
answer = 42
{END}
exercises.check_value("1.2", answer, 42)"""
TOTAL = f"""{BEGIN}
total = sum(range(5))
{END}"""
CHECK_TOTAL = 'exercises.check_value("1.3", total, 10)'


def teacher_notebook() -> nbformat.NotebookNode:
    cells = [
        new_markdown_cell("# A demo chapter"),
        new_code_cell('PROFILE = "full"'),
        new_code_cell("from utils import exercises"),
        new_code_cell(SQUARE),
        new_code_cell(ANSWER),
        new_code_cell(TOTAL),
        new_code_cell(CHECK_TOTAL),
    ]
    cells[1].metadata["tags"] = ["parameters"]
    cells[6].metadata["nbgrader"] = {"points": 2}
    nb = new_notebook(cells=cells)
    nb.metadata["kernelspec"] = {"name": "python3", "display_name": "Python 3", "language": "python"}
    return nb


def _replace(nb, index: int, old: str, new: str) -> None:
    assert old in nb.cells[index].source, (old, nb.cells[index].source)
    nb.cells[index].source = nb.cells[index].source.replace(old, new)


def _answer(nb, square: str, answer: str, total: str) -> None:
    _replace(nb, 3, student.PLACEHOLDER, square)
    _replace(nb, 4, "answer = exercises.NOT_ATTEMPTED", answer)
    _replace(nb, 5, "total = exercises.NOT_ATTEMPTED", total)


@pytest.fixture(scope="module")
def graded(tmp_path_factory):
    root = tmp_path_factory.mktemp("class")
    source = root / "source"
    source.mkdir()
    teacher = teacher_notebook()
    nbformat.write(teacher, source / "01_demo.ipynb")
    base = student.student_notebook(teacher, "01_demo.ipynb")
    subs = root / "submitted"
    made = {}

    def submit(name, edit=None, filename="01_demo.ipynb", raw=None):
        folder = subs / name
        folder.mkdir(parents=True)
        if raw is not None:
            (folder / filename).write_text(raw)
            return
        nb = nbformat.reads(nbformat.writes(base), as_version=4)
        if edit:
            edit(nb)
        nbformat.write(nb, folder / filename)
        made[name] = nb

    submit("alice", lambda nb: _answer(nb, "return x ** 2", "answer = 6 * 7", "total = 10"))  # other right code
    submit("bob", lambda nb: _answer(nb, "return x + x", "answer = 41", "total = 11"))
    submit("carol")

    def tamper(nb):
        _answer(nb, "return x + x", "answer = 41", "total = 11")
        nb.cells[6].source = 'print("Exercise 1.3 passed.")'  # a pure check cell
        _replace(nb, 3, "[((2,), 4), ((-3,), 9)]", "[((2,), 4)]")  # a check beside the answer

    submit("dave", tamper)
    submit("erin", lambda nb: _answer(nb, "return x * x", "while True:\n    pass", "total = 10"))
    submit(
        "frank",
        lambda nb: (
            _replace(nb, 2, "from utils import exercises", "import no_such_module_xyz"),
            _answer(nb, "return x * x", "answer = 42", "total = 10"),
        ),
    )
    submit(
        "grace",
        lambda nb: _answer(
            nb,
            "return x * x",
            "answer = 42",
            "total = 0\nexercises.check_value = lambda *a, **k: print('Exercise 1.3 passed.')",
        ),
    )
    victim = subs / "alice" / "01_demo.ipynb"
    submit(
        "mallory",
        lambda nb: _answer(nb, "return x * x", "answer = 42", f"import os\nos.remove({str(victim)!r})\ntotal = 10"),
    )
    submit(
        "oscar",
        lambda nb: _answer(
            nb,
            "return x * x",
            "answer = 42",
            "import pathlib, utils\npathlib.Path(utils.__file__).write_text('')\ntotal = 10",
        ),
    )
    submit("ivan", raw="this is not a notebook")
    submit("judy", filename="notes.ipynb")
    out = root / "grades"
    rc = grade.main([str(subs), "--source", str(source), "--out", str(out), "--cell-timeout", "8", "--timeout", "120"])
    assert rc == 0
    with open(out / "grades.csv", encoding="utf-8") as fh:
        rows = list(csv.DictReader(fh))
    with open(out / "totals.csv", encoding="utf-8") as fh:
        totals = {r["student"]: r for r in csv.DictReader(fh)}
    status = {(r["student"], r["exercise"]): r["status"] for r in rows}
    return {"rows": rows, "status": status, "totals": totals, "out": out}


def _statuses(graded, who):
    return [graded["status"][(who, e)] for e in ("1.1", "1.2", "1.3")]


def test_a_correct_submission_written_differently_gets_full_points(graded):
    assert _statuses(graded, "alice") == ["passed"] * 3
    assert graded["totals"]["alice"]["points"] == "4" and graded["totals"]["alice"]["max_points"] == "4"


def test_wrong_and_empty_submissions(graded):
    assert _statuses(graded, "bob") == ["failed"] * 3
    assert graded["totals"]["bob"]["points"] == "0"
    assert _statuses(graded, "carol") == ["not attempted"] * 3


def test_edited_checks_are_restored_or_refused(graded):
    st = _statuses(graded, "dave")
    assert st[0] == "check edited"  # the weakened check beside the answer does not count
    assert st[1] == "failed"
    assert st[2] == "check restored"  # the typed-in "passed" line was replaced by the real check
    assert graded["totals"]["dave"]["points"] == "0"


def test_an_endless_cell_is_stopped_and_the_rest_reported(graded):
    assert _statuses(graded, "erin") == ["passed", "timeout", "timeout"]
    assert "time limit" in graded["totals"]["erin"]["problems"]


def test_an_exception_at_import_is_an_error_not_a_crash(graded):
    assert _statuses(graded, "frank") == ["error"] * 3
    note = next(r["note"] for r in graded["rows"] if r["student"] == "frank")
    assert "NameError" in note


def test_a_replaced_check_function_is_caught(graded):
    assert _statuses(graded, "grace")[:2] == ["passed", "passed"]
    assert graded["status"][("grace", "1.3")] == "checks replaced"


def test_a_submission_cannot_touch_another(graded):
    # mallory deleted alice's file while running; alice was read before anything ran
    assert _statuses(graded, "mallory") == ["passed"] * 3
    assert _statuses(graded, "alice") == ["passed"] * 3


def test_a_submission_that_edits_the_course_code_scores_nothing_and_harms_nobody(graded):
    assert _statuses(graded, "oscar") == ["changed course code"] * 3
    assert "utils/__init__.py" in graded["totals"]["oscar"]["problems"]
    assert (grade.REPO_ROOT / "utils" / "__init__.py").read_text().startswith('"""Shared, tested code')


def test_unreadable_and_unmatched_notebooks_are_reported(graded):
    assert _statuses(graded, "ivan") == ["error"] * 3
    assert "unreadable" in graded["totals"]["ivan"]["problems"]
    assert "no chapter matches" in graded["totals"]["judy"]["problems"]
    assert graded["totals"]["judy"]["max_points"] == "0"


def test_the_summary_page_and_the_executed_copies(graded):
    page = (graded["out"] / "index.html").read_text()
    assert "alice" in page and "4 / 4" in page and "check restored" in page
    assert (graded["out"] / "executed" / "alice" / "01_demo.ipynb").is_file()


def test_graded_cells_and_points():
    cells = grade.graded_cells(teacher_notebook())
    assert [(g.labels, g.points, g.pure) for g in cells] == [
        (["1.1"], 1.0, False),
        (["1.2"], 1.0, False),
        (["1.3"], 2.0, True),
    ]
    assert cells[0].protected[-1].startswith('exercises.check_function("1.1"')


def test_the_course_code_is_read_once_and_compared(tmp_path):
    (tmp_path / "utils" / "checks").mkdir(parents=True)
    (tmp_path / "data").mkdir()
    (tmp_path / "utils" / "checks" / "ch1.py").write_text("OK = 1\n")
    (tmp_path / "data" / "registry.toml").write_text("[x]\n")
    files = grade.snapshot(tmp_path)
    assert sorted(files) == ["data/registry.toml", "utils/checks/ch1.py"]
    copy = tmp_path / "copy"
    grade.write_copy(files, copy)
    assert grade.changed_files(files, copy) == []
    (copy / "utils" / "checks" / "ch1.py").write_text("OK = 0\n")
    (copy / "utils" / "planted.py").write_text("x = 1\n")
    (copy / "data" / "registry.toml").unlink()
    assert grade.changed_files(files, copy) == ["data/registry.toml", "utils/checks/ch1.py", "utils/planted.py"]


def test_a_submission_runs_against_the_copy_not_the_course(graded):
    # mallory's kernel imported utils from the grader's temporary copy, never from the repository
    out = graded["out"] / "executed" / "mallory" / "01_demo.ipynb"
    nb = nbformat.read(out, as_version=4)
    assert nb.cells[2].source == "from utils import exercises"


def test_the_notebook_time_limit_stops_the_kernel_too(tmp_path):
    import psutil

    source = tmp_path / "source"
    source.mkdir()
    teacher = teacher_notebook()
    nbformat.write(teacher, source / "01_demo.ipynb")
    nb = student.student_notebook(teacher, "01_demo.ipynb")
    _answer(nb, "return x * x", "import time\nwhile True:\n    time.sleep(0.1)", "total = 10")
    folder = tmp_path / "submitted" / "zoe"
    folder.mkdir(parents=True)
    nbformat.write(nb, folder / "01_demo.ipynb")
    before = {p.pid for p in psutil.process_iter()}
    # a cell limit longer than the notebook's: only the notebook limit can stop it
    assert (
        grade.main(
            [
                str(tmp_path / "submitted"),
                "--source",
                str(source),
                "--out",
                str(tmp_path / "g"),
                "--cell-timeout",
                "600",
                "--timeout",
                "25",
            ]
        )
        == 0
    )

    def grading_kernel(p):
        """A kernel the grader started: its PYTHONPATH holds the grader's temporary copy of the course
        (kernels of other jobs on the machine, a notebook run beside the tests, do not count)."""
        if p.pid in before or "ipykernel_launcher" not in " ".join(p.info["cmdline"] or []):
            return False
        try:
            return "grade-" in p.environ().get("PYTHONPATH", "")
        except (psutil.NoSuchProcess, psutil.AccessDenied):
            return False

    kernels = [p for p in psutil.process_iter(["cmdline"]) if grading_kernel(p)]
    assert not kernels, "the kernel of a stopped submission is still running"
    rows = list(csv.DictReader(open(tmp_path / "g" / "grades.csv", encoding="utf-8")))
    assert [r["status"] for r in rows] == ["timeout"] * 3  # killed before it could save what ran


def test_match_chapter_tells_two_notebooks_of_one_chapter_apart(tmp_path):
    chapters = [tmp_path / n for n in ("01_data.ipynb", "06_challenges.ipynb", "06_privacy.ipynb")]
    match = lambda name: grade.match_chapter(tmp_path / "alice" / name, chapters)  # noqa: E731
    assert match("06_privacy.ipynb") == chapters[2]
    assert match("06_challenges.ipynb") == chapters[1]
    assert match("06_privacy-alice.ipynb") == chapters[2]
    assert match("01_mine.ipynb") == chapters[0]  # a unique prefix still matches
    assert match("06_mine.ipynb") is None  # two chapters share it: neither is guessed
    assert match("notes.ipynb") is None
