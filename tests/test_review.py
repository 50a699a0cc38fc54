"""Notebooks are reviewed as text through a git diff driver (CONTRIBUTING, 'Reviewing notebooks').

The driver is jupytext's MyST conversion.  These tests check that ``.gitattributes`` routes notebooks
through it, that the Makefile configures it, and that the text view of every chapter is faithful: it holds
every cell, and reading it back gives the same cells (so a reviewer who reads the text diff has read the
whole change, outputs apart, which the notebooks do not carry).
"""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import jupytext
import nbformat
import pytest
from conftest import REPO_ROOT

CHAPTERS = sorted((REPO_ROOT / "notebooks").glob("[0-9][0-9]_*.ipynb"))


def test_gitattributes_routes_notebooks_through_the_text_driver():
    lines = (REPO_ROOT / ".gitattributes").read_text(encoding="utf-8").splitlines()
    assert "*.ipynb diff=jupytext" in [line.strip() for line in lines]
    makefile = (REPO_ROOT / "Makefile").read_text(encoding="utf-8")
    assert "diff.jupytext.textconv" in makefile and "--to myst" in makefile, "make dev must configure the driver"


@pytest.mark.parametrize("path", CHAPTERS, ids=[p.stem for p in CHAPTERS])
def test_the_text_view_holds_every_cell_and_reads_back(path: Path):
    nb = nbformat.read(path, as_version=4)
    text = jupytext.writes(nb, fmt="myst")
    back = jupytext.reads(text, fmt="myst")
    # a trailing newline at the end of a cell carries nothing, and MyST cannot hold it
    kinds = [(c.cell_type, c.source.rstrip("\n")) for c in nb.cells]
    assert [(c.cell_type, c.source.rstrip("\n")) for c in back.cells] == kinds, (
        f"{path.name}: the MyST view loses or changes cells"
    )
    assert [c.metadata.get("tags", []) for c in back.cells] == [c.metadata.get("tags", []) for c in nb.cells], (
        f"{path.name}: the MyST view loses cell tags"
    )


def test_the_driver_command_prints_the_text_view():
    path = CHAPTERS[0]
    out = subprocess.run(
        [str(Path(sys.executable).with_name("jupytext")), "--to", "myst", "-o", "-", str(path)],
        capture_output=True,
        text=True,
        check=True,
    ).stdout
    title = nbformat.read(path, as_version=4).cells[0].source.splitlines()[0]
    assert title in out and "```{code-cell}" in out
