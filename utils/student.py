"""Generate the student edition of every notebook: solutions removed, checks kept.

``python -m utils.student [--out student]`` writes one notebook per chapter:

* inside code cells, every region between ``### BEGIN SOLUTION`` and
  ``### END SOLUTION`` becomes a placeholder: inside a function,
  ``raise exercises.NotAttempted(...)``; at the top level, one line
  ``name = exercises.NOT_ATTEMPTED`` for each name the solution defines, and
  the rest of the cell (the check) runs inside ``with exercises.attempt("N.M"):``.
  An unanswered exercise so reports "not attempted" and *Run All* reaches the
  end of the notebook; the check stays, so students get the automatic feedback
  once they fill the gap;
* the parameters cell selects the fast profile (``PROFILE = "fast"``), which
  suits a laptop and a classroom;
* markdown or code cells tagged ``solution`` are dropped;
* the ``hide-input`` tag that hides solutions in the book is removed, since
  the cell now holds the student's own work;
* a cell that only checks an exercise is marked read-only (``editable`` and ``deletable`` false, which
  JupyterLab and Notebook honour); the class grader (:mod:`utils.grade`) compares every check with the
  teacher's copy anyway;
* outputs and execution counts are cleared.
"""

from __future__ import annotations

import argparse
import ast
import copy
import re
import sys
import textwrap
from pathlib import Path

import nbformat

from . import exercises
from .exercises import BEGIN, END

REPO_ROOT = Path(__file__).resolve().parent.parent
PLACEHOLDER = 'raise exercises.NotAttempted("Exercise: write your code here")'
TOP_LEVEL_PLACEHOLDER = "exercises.NOT_ATTEMPTED"


class SolutionMarkerError(ValueError):
    """A cell's solution markers are unbalanced."""


# anything that looks like a marker: "# begin solution", "#### END SOLUTION (a)", ...
_MARKER_LIKE = re.compile(r"^\s*#+\s*(BEGIN|END)\s+SOLUTION\b", re.IGNORECASE | re.MULTILINE)


def _check_marker(line: str, where: str) -> None:
    """A line that looks like a marker must be exactly the marker, or its region would leak."""
    if line.strip() not in (BEGIN, END) and _MARKER_LIKE.match(line):
        raise SolutionMarkerError(
            f"{where}: malformed solution marker {line.strip()!r}; write the line exactly "
            f"{BEGIN!r} or {END!r} (alone on its line)"
        )


def _defined_names(code: str) -> list[str]:
    """Names a top-level solution region binds (assignments, defs, imports, loop targets), in order."""
    try:
        tree = ast.parse(textwrap.dedent(code))
    except SyntaxError:
        return []
    names: list[str] = []

    def add(target: ast.AST) -> None:
        for node in ast.walk(target):
            if isinstance(node, ast.Name) and node.id not in names:
                names.append(node.id)

    for stmt in tree.body:
        if isinstance(stmt, (ast.Assign,)):
            for t in stmt.targets:
                add(t)
        elif isinstance(stmt, (ast.AnnAssign, ast.AugAssign, ast.For, ast.AsyncFor)):
            add(stmt.target)
        elif isinstance(stmt, (ast.FunctionDef, ast.AsyncFunctionDef, ast.ClassDef)):
            if stmt.name not in names:
                names.append(stmt.name)
        elif isinstance(stmt, (ast.Import, ast.ImportFrom)):
            for alias in stmt.names:
                name = (alias.asname or alias.name).split(".")[0]
                if name not in names:
                    names.append(name)
        elif isinstance(stmt, (ast.With, ast.AsyncWith)):
            for item in stmt.items:
                if item.optional_vars is not None:
                    add(item.optional_vars)
    return [n for n in names if not n.startswith("_")] or names


def strip_solution_source(source: str, where: str = "cell") -> str:
    """Replace each marked solution region of ``source`` by a placeholder (see the module docstring).

    An indented region (inside a function) becomes :data:`PLACEHOLDER` at its indentation; a
    top-level region becomes ``name = exercises.NOT_ATTEMPTED`` for each name it defines, and
    the code after the last top-level region runs inside ``with exercises.attempt(...)``.
    Raises :class:`SolutionMarkerError` for nested, unclosed, unopened or malformed markers.
    """
    out: list[str] = []
    inside = False
    region: list[str] = []
    indent = ""
    last_top_level = None  # index in ``out`` after the last top-level region
    for line in source.splitlines():
        stripped = line.strip()
        _check_marker(line, where)
        if stripped == BEGIN:
            if inside:
                raise SolutionMarkerError(f"{where}: nested {BEGIN!r}")
            inside, region = True, []
            indent = line[: len(line) - len(line.lstrip())]
        elif stripped == END:
            if not inside:
                raise SolutionMarkerError(f"{where}: {END!r} without {BEGIN!r}")
            inside = False
            out.append(f"{indent}# YOUR CODE HERE")
            names = _defined_names("\n".join(region)) if not indent else []
            if indent or not names:
                out.append(f"{indent}{PLACEHOLDER}")
            else:
                out += [f"{name} = {TOP_LEVEL_PLACEHOLDER}  # replace with your answer" for name in names]
                last_top_level = len(out)
        elif inside:
            region.append(line)
        else:
            out.append(line)
    if inside:
        raise SolutionMarkerError(f"{where}: {BEGIN!r} is never closed by {END!r}")
    if last_top_level is not None:
        rest = "\n".join(out[last_top_level:])
        # keep placeholders only for the names the check uses (the others would hint at the solution's steps)
        placeholders = [
            (i, line.split(" = ", 1)[0])
            for i, line in enumerate(out[:last_top_level])
            if line.endswith(f" = {TOP_LEVEL_PLACEHOLDER}  # replace with your answer")
        ]
        used = {i for i, name in placeholders if re.search(rf"\b{re.escape(name)}\b", rest)}
        if used:
            drop = {i for i, _ in placeholders} - used
            last_top_level -= len(drop)
            out = [line for i, line in enumerate(out) if i not in drop]
            rest = "\n".join(out[last_top_level:])
        if rest.strip():
            ids = exercises.labels_in(rest) or ["?"]
            label = ", ".join(repr(i) for i in ids)
            out = (
                out[:last_top_level]
                + [
                    f"with exercises.attempt({label}):  # reports 'not attempted' until "
                    f"you replace the placeholders above"
                ]
                + [textwrap.indent(rest, "    ", lambda ln: True)]
            )
    return "\n".join(out)


def solution_texts(nb: nbformat.NotebookNode) -> list[str]:
    """The solution lines of a notebook (marked regions and ``solution`` cells), for leak tests."""
    texts: list[str] = []
    for cell in nb.cells:
        if "solution" in cell.get("metadata", {}).get("tags", []):
            texts.extend(line.strip() for line in cell.source.splitlines() if line.strip())
            continue
        inside = False
        for line in cell.source.splitlines():
            s = line.strip()
            if s == BEGIN:
                inside = True
            elif s == END:
                inside = False
            elif inside and s and not s.startswith("#"):
                texts.append(s)
    return texts


def student_notebook(nb: nbformat.NotebookNode, name: str = "notebook") -> nbformat.NotebookNode:
    """Return a student copy of ``nb`` (the input is not modified)."""
    nb = copy.deepcopy(nb)
    cells = []
    for i, cell in enumerate(nb.cells):
        tags = list(cell.get("metadata", {}).get("tags", []))
        if "solution" in tags:
            continue
        if cell.cell_type == "code":
            if "parameters" in tags:
                cell.source = re.sub(r'^PROFILE\s*=\s*["\']full["\']', 'PROFILE = "fast"', cell.source, flags=re.M)
            if _MARKER_LIKE.search(cell.source):
                cell.source = strip_solution_source(cell.source, f"{name} cell {i}")
                tags = [t for t in tags if t not in {"hide-input", "hide-cell"}]
            elif exercises.labels_in(cell.source):  # a cell that only checks: JupyterLab keeps it read-only
                cell.metadata["editable"] = False
                cell.metadata["deletable"] = False
            cell.outputs = []
            cell.execution_count = None
        if tags:
            cell.metadata["tags"] = tags
        else:
            cell.metadata.pop("tags", None)
        cells.append(cell)
    nb.cells = cells
    return nb


def notebooks(root: Path = REPO_ROOT) -> list[Path]:
    return sorted((root / "notebooks").glob("[0-9][0-9]_*.ipynb"))


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m utils.student", description=__doc__.split("\n\n")[0])
    parser.add_argument("--out", type=Path, default=REPO_ROOT / "student", help="output folder (default: student/)")
    args = parser.parse_args(argv)
    args.out.mkdir(parents=True, exist_ok=True)
    for path in notebooks():
        nb = nbformat.read(path, as_version=4)
        nbformat.write(student_notebook(nb, path.name), args.out / path.name)
        print(f"wrote {args.out / path.name}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
