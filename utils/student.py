"""Generate the student edition of every notebook: solutions removed, checks kept.

``python -m utils.student [--out student]`` writes one notebook per chapter:

* inside code cells, every region between ``### BEGIN SOLUTION`` and
  ``### END SOLUTION`` becomes ``raise NotImplementedError(...)`` at the same
  indentation (the check call after it stays, so students get the automatic
  feedback once they fill the gap);
* markdown or code cells tagged ``solution`` are dropped;
* the ``hide-input`` tag that hides solutions in the book is removed, since
  the cell now holds the student's own work;
* outputs and execution counts are cleared.
"""

from __future__ import annotations

import argparse
import copy
import re
import sys
from pathlib import Path

import nbformat

from .exercises import BEGIN, END

REPO_ROOT = Path(__file__).resolve().parent.parent
PLACEHOLDER = 'raise NotImplementedError("Exercise: write your code here")'


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


def strip_solution_source(source: str, where: str = "cell") -> str:
    """Replace each marked solution region of ``source`` by a placeholder line.

    The placeholder keeps the indentation of the ``### BEGIN SOLUTION`` line.
    Raises :class:`SolutionMarkerError` for nested, unclosed, unopened or
    malformed markers.
    """
    out: list[str] = []
    inside = False
    for line in source.splitlines():
        stripped = line.strip()
        _check_marker(line, where)
        if stripped == BEGIN:
            if inside:
                raise SolutionMarkerError(f"{where}: nested {BEGIN!r}")
            inside = True
            indent = line[: len(line) - len(line.lstrip())]
            out.append(f"{indent}# YOUR CODE HERE")
            out.append(f"{indent}{PLACEHOLDER}")
        elif stripped == END:
            if not inside:
                raise SolutionMarkerError(f"{where}: {END!r} without {BEGIN!r}")
            inside = False
        elif not inside:
            out.append(line)
    if inside:
        raise SolutionMarkerError(f"{where}: {BEGIN!r} is never closed by {END!r}")
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
            if _MARKER_LIKE.search(cell.source):
                cell.source = strip_solution_source(cell.source, f"{name} cell {i}")
                tags = [t for t in tags if t not in {"hide-input", "hide-cell"}]
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
