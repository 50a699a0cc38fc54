"""Grade a class: ``python -m utils.grade SUBMISSION...`` (or ``make grade SUBMISSIONS=...``).

A submission is a student's notebook, or a folder of them. A folder given on the command line either
holds one folder per student (nbgrader's ``submitted/<student>/<assignment>/`` layout works) or is one
student's folder. The student's name is the first folder below the argument, or the folder that holds
the file. Each notebook is matched to the teacher's chapter by its file name (see :func:`match_chapter`)
in ``--source`` (default ``notebooks/``).

For each notebook the grader does the following.

1. **Reads first, runs on a copy.** It reads every submission, every teacher notebook and the course's
   own code (``utils/``, ``data/*.toml``) before any code runs. Each notebook then runs against a fresh
   copy of that code in its own temporary folder. A submission that deletes or edits files therefore
   cannot change another student's grade, nor the course. One that changes its copy of the course code
   scores 0 and is reported as ``changed course code``.
2. **Protects the checks** (nbgrader's rule for locked cells). A graded cell is a cell of the teacher's
   notebook that calls an exercise check (:func:`utils.exercises.labels_in`); it is matched by cell id.
   - *Pure check cell.* If it was edited or deleted, the teacher's version is put back and the
     exercise is reported as ``check restored``.
   - *Answer and check in one cell.* Every line outside the solution region must still be there, in
     order. If not, the cell's exercises score 0, reported as ``check edited``.
3. **Guards the machinery.** Each graded cell starts with a short guard. The guard looks at the check
   functions (in ``utils.exercises`` and ``utils.checks``), ``print`` and ``sys.stdout``. If one of
   them was replaced by code written in the notebook, the cell's exercises score 0, reported as
   ``checks replaced``.
4. **Runs apart.** The notebook runs in a fresh kernel, in its own temporary folder, with a time limit
   per cell and per notebook. At the limit the process group is killed. Strict mode is off.
5. **Reads the results.** The graded cell's own output gives each exercise's status: ``passed``,
   ``failed`` or ``not attempted``. A cell that raised gives ``error``. A cell never reached gives
   ``not run`` (after a timeout, or a crash before it).

**Points.** Each exercise is worth 1 point. A graded cell's ``nbgrader.points`` metadata overrides this
and is shared among the cell's exercises.

**Output** (``--out``, default ``grades/``):
- ``grades.csv``: one row per student, notebook and exercise;
- ``totals.csv``: one row per student;
- ``index.html``: the summary;
- ``executed/<student>/<notebook>.ipynb``: what ran, for review.

**What it does not do.** A submission's code runs with your permissions, like any notebook you open. The
guards above catch edited checks, replaced check functions and changed course files. They cannot stop a
determined attacker who reads the grader's source. Grade untrusted work inside a container, for example:
``docker run --rm --network none -v "$PWD":/course -w /course <image> python -m utils.grade submitted/``.
"""

from __future__ import annotations

import argparse
import csv
import html
import json
import os
import re
import signal
import subprocess
import sys
import tempfile
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path

import nbformat

from . import exercises
from .exercises import BEGIN, END, STRICT_ENV

REPO_ROOT = Path(__file__).resolve().parent.parent
GUARD_MARK = "[grader]"
_RESULT_LINE = re.compile(r"^Exercise (\S+?)(?: passed\.|: (not attempted yet)|: not yet\b)")


# The guard that opens every graded cell. It is plain code in the cell (so an answer cell cannot
# replace it through a module): it reports any check function, print or stdout.write whose code was
# written outside the course's files and the installed packages.
GUARD = f'''def _grader_guard():
    import builtins, sys, types
    import utils
    allowed = tuple(p for p in {{sys.prefix, sys.base_prefix, utils.__path__[0]}} if p)
    bad = []
    if type(builtins.print) is not types.BuiltinFunctionType:
        bad.append("print")
    write = getattr(sys.stdout.write, "__func__", sys.stdout.write)
    if type(write) is types.FunctionType and not write.__code__.co_filename.startswith(allowed):
        bad.append("sys.stdout.write")
    for name, mod in list(sys.modules.items()):
        if mod is None or not (name == "utils.exercises" or name.startswith("utils.checks")):
            continue
        for attr, value in list(vars(mod).items()):
            if type(value) is types.MethodType:
                value = value.__func__
            if type(value) is types.FunctionType and not value.__code__.co_filename.startswith(allowed):
                bad.append(name + "." + attr)
    print("{GUARD_MARK} " + ("checks replaced: " + ", ".join(bad) if bad else "checks intact"))
_grader_guard()
del _grader_guard
'''


@dataclass
class Graded:
    """One graded cell of a teacher's notebook."""

    cell_id: str
    labels: list[str]
    points: float
    pure: bool  # no solution region: the whole cell is the teacher's
    source: str  # the teacher's source
    protected: list[str]  # for a cell with a solution region: the lines outside it, in order


@dataclass
class Result:
    student: str
    notebook: str
    exercise: str
    status: str
    points: float
    max_points: float
    note: str = ""


@dataclass
class Submission:
    student: str
    path: Path
    data: bytes
    chapter: Path | None = None
    results: list[Result] = field(default_factory=list)
    problems: list[str] = field(default_factory=list)


def graded_cells(nb: nbformat.NotebookNode) -> list[Graded]:
    """The cells of a teacher's notebook that call an exercise check, with their points."""
    out = []
    for cell in nb.cells:
        if cell.cell_type != "code":
            continue
        labels = exercises.labels_in(cell.source)
        if not labels:
            continue
        pure = BEGIN not in cell.source
        protected: list[str] = []
        inside = False
        for line in cell.source.splitlines():
            if line.strip() == BEGIN:
                inside = True
            elif line.strip() == END:
                inside = False
            elif not inside and line.strip():
                protected.append(line.strip())
        meta = cell.get("metadata", {}).get("nbgrader", {})
        points = float(meta.get("points", len(labels)))
        out.append(Graded(cell.get("id", ""), labels, points, pure, cell.source, protected))
    return out


def _subsequence(needles: list[str], haystack: list[str]) -> bool:
    it = iter(haystack)
    return all(any(n == h for h in it) for n in needles)


def protect(
    source_nb: nbformat.NotebookNode, sub_nb: nbformat.NotebookNode
) -> tuple[nbformat.NotebookNode, dict[str, str]]:
    """Restore edited pure check cells, mark edited mixed cells, and put the guard on every graded cell.

    Returns the notebook to run and ``{cell_id: "check restored" | "check edited"}``.
    """
    flags: dict[str, str] = {}
    by_id = {c.get("id"): c for c in sub_nb.cells}
    for g in graded_cells(source_nb):
        cell = by_id.get(g.cell_id)
        if g.pure:
            if cell is None or cell.cell_type != "code" or cell.source.strip() != g.source.strip():
                flags[g.cell_id] = "check restored"
                if cell is None:  # deleted: put it back after the cell that preceded it in the teacher's copy
                    cell = nbformat.v4.new_code_cell(g.source)
                    cell["id"] = g.cell_id
                    ids = [c.get("id") for c in source_nb.cells]
                    before = ids[: ids.index(g.cell_id)]
                    pos = max((i for i, c in enumerate(sub_nb.cells) if c.get("id") in before), default=-1)
                    sub_nb.cells.insert(pos + 1, cell)
                    by_id[g.cell_id] = cell
                cell.cell_type = "code"
                cell.source = g.source
        elif cell is None or not _subsequence(g.protected, [ln.strip() for ln in cell.source.splitlines()]):
            flags[g.cell_id] = "check edited"
            continue
        cell.source = GUARD + cell.source
    return sub_nb, flags


def _cell_text(cell) -> tuple[str, str | None]:
    text, error = [], None
    for out in cell.get("outputs", []):
        if out.get("output_type") == "stream":
            text.append(out.get("text", ""))
        elif out.get("output_type") == "error":
            error = f"{out.get('ename', 'Error')}: {out.get('evalue', '')}"[:200]
    return "".join(text), error


def read_results(
    source_nb, executed_nb, flags: dict[str, str], student: str, name: str, timed_out_cell: str | None = None
) -> list[Result]:
    """Each exercise's status and points from the outputs of the graded cells of ``executed_nb``."""
    by_id = {c.get("id"): c for c in executed_nb.cells}
    results = []
    for g in graded_cells(source_nb):
        share = g.points / len(g.labels)
        cell = by_id.get(g.cell_id)
        text, error = _cell_text(cell) if cell is not None else ("", None)
        status: dict[str, str] = {}
        for line in text.splitlines():
            m = _RESULT_LINE.match(line)
            if m and m.group(1) in g.labels:
                status[m.group(1)] = (
                    "passed" if line.endswith("passed.") else "not attempted" if m.group(2) else "failed"
                )
        guard = next((ln for ln in text.splitlines() if ln.startswith(GUARD_MARK)), "")
        flag = flags.get(g.cell_id)
        for label in g.labels:
            note = ""
            if flag == "check edited":
                st, note = "check edited", "the lines of the check were changed; 0 points"
            elif guard.startswith(f"{GUARD_MARK} checks replaced"):
                st, note = "checks replaced", guard[len(GUARD_MARK) + 1 :]
            elif label in status:
                st = status[label]
                if flag == "check restored":
                    note = f"the check cell had been edited or deleted and was restored; result: {st}"
                    st = "check restored" if st != "passed" else st
            elif timed_out_cell is not None and g.cell_id == timed_out_cell:
                st, note = "timeout", "the cell ran past the time limit"
            elif error:
                st, note = "error", error
            elif cell is None or cell.get("execution_count") is None:
                st, note = "not run", "the notebook stopped before this cell"
            else:
                st, note = "failed", "the check printed no result"
            pts = share if st == "passed" else 0.0
            results.append(Result(student, name, label, st, pts, share, note))
    return results


COURSE_FILES = ("utils/**/*.py", "data/*.toml", "_config.yml", "requirements.txt", "pyproject.toml")


def snapshot(root: Path = REPO_ROOT) -> dict[str, bytes]:
    """The course's own code and settings, read once: every submission runs against a copy of these."""
    files = {p for pattern in COURSE_FILES for p in root.glob(pattern) if "__pycache__" not in p.parts}
    return {p.relative_to(root).as_posix(): p.read_bytes() for p in sorted(files)}


def write_copy(files: dict[str, bytes], root: Path) -> None:
    for rel, data in files.items():
        (root / rel).parent.mkdir(parents=True, exist_ok=True)
        (root / rel).write_bytes(data)


def changed_files(files: dict[str, bytes], root: Path) -> list[str]:
    """The course files that differ in ``root`` from ``files`` (edited, deleted or added code)."""
    now = snapshot(root)
    return sorted(rel for rel in set(files) | set(now) if files.get(rel) != now.get(rel))


def _run_one(in_path: Path, out_path: Path, cell_timeout: int) -> int:
    """Child process: execute one notebook in a fresh kernel; write it, with what ran, to out_path."""
    from nbclient import NotebookClient
    from nbclient.exceptions import CellTimeoutError, DeadKernelError

    nb = nbformat.read(in_path, as_version=4)
    client = NotebookClient(
        nb,
        timeout=cell_timeout,
        allow_errors=True,
        kernel_name="python3",
        resources={"metadata": {"path": str(in_path.parent)}},
    )
    current: dict[str, str | None] = {"id": None}
    client.on_cell_start = lambda cell, cell_index: current.update(id=cell.get("id"))
    state: dict[str, str | None] = {"status": "ok"}
    try:
        client.execute()
    except CellTimeoutError:
        state = {"status": "timeout", "cell": current["id"]}
    except DeadKernelError as err:
        state = {"status": "kernel died", "error": str(err)[:200]}
    nbformat.write(nb, out_path)
    out_path.with_suffix(".state.json").write_text(json.dumps(state))
    return 0


def _kill_tree(proc: subprocess.Popen) -> None:
    """Kill the grading process and everything it started (the kernel runs in a session of its own)."""
    import psutil

    try:
        family = psutil.Process(proc.pid).children(recursive=True)
    except psutil.NoSuchProcess:
        family = []
    for p in family:
        try:
            p.kill()
        except psutil.NoSuchProcess:
            pass
    try:
        os.killpg(proc.pid, signal.SIGKILL)
    except ProcessLookupError:
        pass


def _execute(sub: Submission, source_nb, course: dict[str, bytes], out: Path, cell_timeout: int, timeout: int) -> None:
    name = sub.chapter.name if sub.chapter else sub.path.name
    try:
        nb = nbformat.reads(sub.data.decode("utf-8"), as_version=4)
    except Exception as err:  # not a notebook at all: report it, grade nothing
        sub.problems.append(f"unreadable notebook ({type(err).__name__}: {str(err)[:120]})")
        sub.results = read_results(source_nb, nbformat.v4.new_notebook(), {}, sub.student, name)
        for r in sub.results:
            r.status, r.note = "error", "the submission is not a readable notebook"
        return
    nb, flags = protect(source_nb, nb)
    executed_dir = out / "executed" / sub.student
    executed_dir.mkdir(parents=True, exist_ok=True)
    executed_path = executed_dir / name
    with tempfile.TemporaryDirectory(prefix="grade-") as tmp:
        course_root = Path(tmp) / "course"
        write_copy(course, course_root)
        work = Path(tmp) / "work"
        work.mkdir()
        in_path = work / name
        nbformat.write(nb, in_path)
        env = {k: v for k, v in os.environ.items() if k != STRICT_ENV}
        env["PYTHONPATH"] = os.pathsep.join([str(course_root)] + ([env["PYTHONPATH"]] if env.get("PYTHONPATH") else []))
        env.setdefault("MPLBACKEND", "Agg")
        cmd = [
            sys.executable,
            "-m",
            "utils.grade",
            "--run-one",
            str(in_path),
            str(executed_path),
            "--cell-timeout",
            str(cell_timeout),
        ]
        proc = subprocess.Popen(
            cmd, cwd=work, env=env, start_new_session=True, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE
        )
        try:
            _, err = proc.communicate(timeout=timeout)
        except subprocess.TimeoutExpired:
            _kill_tree(proc)
            proc.communicate()
            sub.problems.append(f"ran past the notebook time limit ({timeout} s) and was stopped")
            err = b""
        changed = changed_files(course, course_root)
    state = {}
    state_path = executed_path.with_suffix(".state.json")
    if state_path.is_file():
        state = json.loads(state_path.read_text())
        state_path.unlink()
    if state.get("status") == "timeout":
        sub.problems.append(f"a cell ran past the cell time limit ({cell_timeout} s)")
    elif state.get("status") == "kernel died":
        sub.problems.append(f"the kernel died ({state.get('error', '')})")
    elif not state and not sub.problems:
        sub.problems.append(f"the grader could not execute it: {err.decode(errors='replace')[-300:]}")
    executed = nbformat.read(executed_path, as_version=4) if executed_path.is_file() else nbformat.v4.new_notebook()
    sub.results = read_results(source_nb, executed, flags, sub.student, name, state.get("cell"))
    if any(r.status == "not run" for r in sub.results) and any("time limit" in p for p in sub.problems):
        for r in sub.results:
            if r.status == "not run":
                r.status, r.note = "timeout", "the notebook was stopped at the time limit before this cell"
    if changed:
        sub.problems.append(f"changed course code: {', '.join(changed)}")
        for r in sub.results:
            r.status, r.points, r.note = "changed course code", 0.0, f"changed {', '.join(changed)}"


def collect(args_paths: list[Path]) -> list[Submission]:
    """Every notebook under the given paths, with its student's name, read into memory."""
    subs = []
    for arg in args_paths:
        if arg.is_file():
            subs.append(Submission(arg.resolve().parent.name, arg, arg.read_bytes()))
            continue
        if not arg.is_dir():
            raise SystemExit(f"grade: {arg} is neither a notebook nor a folder of submissions")
        files = sorted(p for p in arg.rglob("*.ipynb") if ".ipynb_checkpoints" not in p.parts)
        nested = any(len(p.relative_to(arg).parts) > 1 for p in files)
        for p in files:
            student = p.relative_to(arg).parts[0] if nested else arg.resolve().name
            subs.append(Submission(student, p, p.read_bytes()))
    return subs


def match_chapter(path: Path, chapters: list[Path]) -> Path | None:
    """The teacher's chapter that a submitted notebook answers, or ``None``.

    By file name first (``06_privacy.ipynb``), then by the longest chapter name that the submission's name
    starts with (``06_privacy-alice.ipynb``), then by the two-digit prefix (``06_mine.ipynb``) when exactly one
    chapter has it: chapter 6 has two notebooks, so ``06_`` alone names neither.
    """
    for c in chapters:
        if c.name == path.name:
            return c
    prefixed = [c for c in chapters if path.stem.startswith(c.stem)]
    if prefixed:
        return max(prefixed, key=lambda c: len(c.stem))
    m = re.match(r"(\d\d)_", path.name)
    if not m:
        return None
    same = [c for c in chapters if c.name.startswith(m.group(1) + "_")]
    return same[0] if len(same) == 1 else None


def write_outputs(subs: list[Submission], out: Path) -> None:
    rows = [r for s in subs for r in s.results]
    with open(out / "grades.csv", "w", newline="", encoding="utf-8") as fh:
        w = csv.writer(fh)
        w.writerow(["student", "notebook", "exercise", "status", "points", "max_points", "note"])
        for r in rows:
            w.writerow([r.student, r.notebook, r.exercise, r.status, f"{r.points:g}", f"{r.max_points:g}", r.note])
    students = sorted({s.student for s in subs})
    totals = {
        st: (sum(r.points for r in rows if r.student == st), sum(r.max_points for r in rows if r.student == st))
        for st in students
    }
    problems = {st: [f"{s.path.name}: {p}" for s in subs if s.student == st for p in s.problems] for st in students}
    with open(out / "totals.csv", "w", newline="", encoding="utf-8") as fh:
        w = csv.writer(fh)
        w.writerow(["student", "points", "max_points", "problems"])
        for st in students:
            w.writerow([st, f"{totals[st][0]:g}", f"{totals[st][1]:g}", "; ".join(problems[st])])
    labels = list(dict.fromkeys((r.notebook, r.exercise) for r in rows))
    esc = html.escape
    head = "".join(f"<th>{esc(e)}</th>" for _, e in labels)
    body = []
    for st in students:
        cells = []
        for nbname, label in labels:
            r = next((r for r in rows if r.student == st and r.notebook == nbname and r.exercise == label), None)
            cells.append(
                f'<td class="{esc(r.status.replace(" ", "-"))}" title="{esc(r.note)}">{esc(r.status)}</td>'
                if r
                else "<td>–</td>"
            )
        body.append(
            f"<tr><th>{esc(st)}</th><td>{totals[st][0]:g} / {totals[st][1]:g}</td>{''.join(cells)}"
            f"<td>{esc('; '.join(problems[st]))}</td></tr>"
        )
    rate = "".join(
        f"<td>{sum(r.status == 'passed' for r in rows if (r.notebook, r.exercise) == key)} / "
        f"{sum(1 for r in rows if (r.notebook, r.exercise) == key)}</td>"
        for key in labels
    )
    page = f"""<!doctype html><html><head><meta charset="utf-8"><title>Grades</title><style>
body{{font-family:sans-serif}} td,th{{border:1px solid #ccc;padding:2px 6px}} table{{border-collapse:collapse}}
.passed{{background:#d8f0d8}} .failed,.error,.timeout,.check-edited,.checks-replaced,.changed-course-code{{background:#f6d5d5}}
.not-attempted,.not-run,.check-restored{{background:#eee}}</style></head><body>
<h1>Grades</h1><p>{len(students)} students, {len(subs)} notebooks; details in grades.csv, what ran in executed/.</p>
<table><tr><th>student</th><th>points</th>{head}<th>problems</th></tr>{"".join(body)}
<tr><th>passed</th><td></td>{rate}<td></td></tr></table></body></html>"""
    (out / "index.html").write_text(page, encoding="utf-8")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m utils.grade", description=__doc__.split("\n\n")[0])
    parser.add_argument("submissions", nargs="*", type=Path, help="notebooks or folders of submissions")
    parser.add_argument("--source", type=Path, default=REPO_ROOT / "notebooks", help="the teacher's notebooks")
    parser.add_argument("--out", type=Path, default=Path("grades"), help="output folder (default grades/)")
    parser.add_argument("--cell-timeout", type=int, default=600, help="seconds one cell may run (default 600)")
    parser.add_argument("--timeout", type=int, default=3600, help="seconds one notebook may run (default 3600)")
    parser.add_argument("--jobs", type=int, default=1, help="notebooks graded at once (default 1)")
    parser.add_argument("--run-one", nargs=2, type=Path, help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.run_one:
        return _run_one(*args.run_one, args.cell_timeout)
    if not args.submissions:
        parser.error("name at least one submitted notebook or folder")
    chapters = sorted(args.source.glob("[0-9][0-9]_*.ipynb"))
    if not chapters:
        raise SystemExit(f"grade: no chapter notebooks (NN_*.ipynb) in --source {args.source}")
    sources = {c: nbformat.reads(c.read_text(encoding="utf-8"), as_version=4) for c in chapters}
    subs = collect(args.submissions)
    if not subs:
        raise SystemExit("grade: no .ipynb files in the given submissions")
    course = snapshot(REPO_ROOT)
    args.out.mkdir(parents=True, exist_ok=True)
    todo = []
    for sub in subs:
        sub.chapter = match_chapter(sub.path, chapters)
        if sub.chapter is None:
            sub.problems.append(
                "no chapter matches its name (expected a chapter's file name, such as 01_medical_imaging_data.ipynb); not graded"
            )
        else:
            todo.append(sub)

    def grade(sub: Submission) -> None:
        print(f"grading {sub.student} / {sub.path.name} ...", flush=True)
        _execute(sub, sources[sub.chapter], course, args.out, args.cell_timeout, args.timeout)

    with ThreadPoolExecutor(max(1, args.jobs)) as pool:  # each notebook has its own copy of the course
        list(pool.map(grade, todo))
    write_outputs(subs, args.out)
    n_problem = sum(bool(s.problems) for s in subs)
    print(
        f"graded {len(todo)} of {len(subs)} notebooks from {len({s.student for s in subs})} students; "
        f"{n_problem} with problems; results in {args.out / 'index.html'} and {args.out / 'grades.csv'}"
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
