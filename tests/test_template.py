"""Every chapter follows CONTRIBUTING's template, and notebooks stay thin (issue 17, items 2 and 3).

The template, in order: a title cell with a learning-objectives list; the guarded Colab install cell;
the ``parameters`` cell; exactly one set-up cell (``course.setup(PROFILE, SEED, ...)``, tagged
``hide-input``); the lesson's numbered sections; an Exercises section holding every exercise; a Summary
section after it.  Data are read only through ``utils.data`` (or the loaders built on it), never from a
hard-coded path and never by a download that bypasses the data layer.

The code budget is a ratchet: a chapter may hold at most ``CODE_LINES_BUDGET`` lines of code, except the
chapters listed in ``OVER_BUDGET`` with the count they had when the budget was set, which may only go
down.  Lower (or delete) an entry when a chapter is thinned; the test says so when an entry is stale.
"""

from __future__ import annotations

import ast
import json
import re
from pathlib import Path

import pytest
from conftest import REPO_ROOT

CHAPTERS = sorted((REPO_ROOT / "notebooks").glob("[0-9][0-9]_*.ipynb"))
IDS = [p.stem for p in CHAPTERS]

#: Lines of code (not blank, not comment-only) a chapter may hold.
CODE_LINES_BUDGET = 450
#: A chapter-local function or class longer than this (lines) belongs in ``utils``, unless it is the lesson.
HELPER_LINES_BUDGET = 25
#: Chapters over the budget on 2026-12-02 (counted after `ruff format`), with their counts then; these numbers
#: may only go down.
OVER_BUDGET = {
    "01_medical_imaging_data": 679,
    # 1023 on 2026-12-02; raised on 2026-12-04 by section 4.5 of issue 14 (the separated-validation check: a
    # second pipeline, four paired comparisons and the optimism of Youden's J; 63 lines, 2 saved elsewhere).
    "02_cnn_classification": 1086,
    "03_attention_segmentation": 681,
    "05_gan_synthesis": 818,
    # 1046 on 2026-12-02; raised on 2026-12-03 by the memorisation study of issue 15 (three seeds, per-epoch
    # fits; 108 lines), which is required content. Thinning this chapter is open work (issue 17, item 2).
    "06_challenges": 1155,
    # 765 on 2026-12-02; raised on 2026-12-03 by the acquisition-shift study of issue 15 (FedAvg, FedBN, local and
    # pooled training over seeds at three simulated scanners; 114 lines, 7 saved elsewhere).
    "06_privacy": 872,
}
#: Chapter-local helpers over ``HELPER_LINES_BUDGET`` on 2026-12-02 (chapter, name): length then.
LONG_HELPERS = {
    ("03_attention_segmentation", "train_pair"): 27,
    ("03_attention_segmentation", "evaluate"): 43,
    ("06_challenges", "train_imbalance"): 30,
}

#: Code that reads data around the data layer.
FORBIDDEN_IN_CODE = [
    (re.compile(r"keras\.datasets|tf\.keras\.datasets"), "keras.datasets downloads from another host"),
    (re.compile(r"\burllib\b|\brequests\.get\b|\bpooch\b"), "a download outside utils.data"),
    (re.compile(r"""["'](?:/work/|\.\./shared|~/|/home/|/tmp/)"""), "a hard-coded path"),
]


def cells(path: Path) -> list[dict]:
    return json.loads(path.read_text(encoding="utf-8"))["cells"]


def source(cell: dict) -> str:
    s = cell["source"]
    return "".join(s) if isinstance(s, list) else s


def tags(cell: dict) -> list[str]:
    return cell.get("metadata", {}).get("tags", [])


def headings(path: Path, level: int) -> list[tuple[int, str]]:
    """(cell index, heading text) of every markdown heading of exactly ``level``."""
    out = []
    prefix = "#" * level + " "
    for i, cell in enumerate(cells(path)):
        if cell["cell_type"] != "markdown":
            continue
        fence = False
        for line in source(cell).splitlines():
            if line.lstrip().startswith(("```", ":::")):
                fence = not fence
            if not fence and line.startswith(prefix):
                out.append((i, line[len(prefix) :].strip()))
    return out


def code_lines(path: Path) -> int:
    n = 0
    for cell in cells(path):
        if cell["cell_type"] == "code" and "colab-install" not in tags(cell):
            n += sum(1 for line in source(cell).splitlines() if line.strip() and not line.strip().startswith("#"))
    return n


def local_definitions(path: Path) -> list[tuple[str, int]]:
    out = []
    for cell in cells(path):
        if cell["cell_type"] != "code":
            continue
        try:
            tree = ast.parse(source(cell))
        except SyntaxError:  # IPython magics; test_notebooks_clean compiles every cell
            continue
        for node in tree.body:
            if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef, ast.ClassDef)):
                out.append((node.name, node.end_lineno - node.lineno + 1))
    return out


def test_the_template_finds_chapters():
    assert len(CHAPTERS) >= 6, CHAPTERS


@pytest.mark.parametrize("path", CHAPTERS, ids=IDS)
def test_title_and_learning_objectives_come_first(path):
    first = cells(path)[0]
    assert first["cell_type"] == "markdown", f"{path.name}: the first cell must be the title (markdown)"
    text = source(first)
    assert text.startswith("# "), f"{path.name}: the first cell must start with the chapter's '# ' title"
    assert [h for _, h in headings(path, 1)] == [text.splitlines()[0][2:].strip()], (
        f"{path.name}: only the title may be a level-1 heading (the book numbers chapters by it)"
    )
    after = text.split("**Learning objectives.**", 1)
    assert len(after) == 2, f"{path.name}: the title cell must hold a '**Learning objectives.**' paragraph"
    items = [line for line in after[1].splitlines() if re.match(r"\s*(\d+\.|[-*]) \S", line)]
    assert len(items) >= 3, f"{path.name}: list at least three learning objectives (found {len(items)})"


@pytest.mark.parametrize("path", CHAPTERS, ids=IDS)
def test_install_parameters_and_one_setup_cell_in_that_order(path):
    cs = cells(path)
    assert "colab-install" in tags(cs[1]), f"{path.name}: cell 2 must be the Colab install cell"
    assert "parameters" in tags(cs[2]), f"{path.name}: cell 3 must be the parameters cell"
    setup = [i for i, c in enumerate(cs) if c["cell_type"] == "code" and "course.setup(" in source(c)]
    assert setup == [3], (
        f"{path.name}: exactly one set-up cell, right after the parameters cell, calls "
        f"course.setup (found it in cells {setup}); a chapter that needs a second one is "
        f"two chapters"
    )
    assert re.search(r"course\.setup\(\s*PROFILE\s*,\s*SEED\b", source(cs[3])), (
        f"{path.name}: the set-up cell must call course.setup(PROFILE, SEED, fast=..., full=...)"
    )
    imports = [
        i
        for i, c in enumerate(cs)
        if c["cell_type"] == "code" and i > 3 and re.search(r"^from utils import|^import utils\b", source(c), re.M)
    ]
    assert not imports, f"{path.name}: utils is imported in the set-up cell only (again in cells {imports})"


@pytest.mark.parametrize("path", CHAPTERS, ids=IDS)
def test_exercises_then_summary_and_every_exercise_in_its_section(path):
    h2 = headings(path, 2)
    names = [h for _, h in h2]
    ex = [i for i, h in h2 if re.sub(r"^\d+\.\s*", "", h).startswith("Exercises")]
    summary = [i for i, h in h2 if re.sub(r"^\d+\.\s*", "", h).startswith("Summary")]
    assert len(ex) == 1, f"{path.name}: one '## Exercises' section (sections: {names})"
    assert len(summary) == 1, f"{path.name}: one '## Summary' section (sections: {names})"
    assert ex[0] < summary[0], f"{path.name}: Exercises come before the Summary"
    nxt = [i for i, _ in h2 if i > ex[0]]
    end = nxt[0] if nxt else len(cells(path))
    outside = [
        i
        for i, c in enumerate(cells(path))
        if c["cell_type"] == "markdown" and "{exercise}" in source(c) and not ex[0] <= i < end
    ]
    assert not outside, f"{path.name}: exercise statements outside the Exercises section, cells {outside}"


@pytest.mark.parametrize("path", CHAPTERS, ids=IDS)
def test_data_are_read_through_the_data_layer(path):
    bad = []
    for i, cell in enumerate(cells(path)):
        if cell["cell_type"] != "code" or "colab-install" in tags(cell):
            continue
        for pattern, why in FORBIDDEN_IN_CODE:
            if pattern.search(source(cell)):
                bad.append(f"cell {i}: {why}")
    assert not bad, f"{path.name}: " + "; ".join(bad)


@pytest.mark.parametrize("path", CHAPTERS, ids=IDS)
def test_code_budget_is_kept(path):
    n = code_lines(path)
    allowed = OVER_BUDGET.get(path.stem, CODE_LINES_BUDGET)
    assert n <= allowed, (
        f"{path.name} holds {n} lines of code, over its budget of {allowed}: move code that "
        f"is not the lesson to utils (CONTRIBUTING, 'Thin notebooks')"
    )


@pytest.mark.parametrize("path", CHAPTERS, ids=IDS)
def test_no_long_chapter_local_helper(path):
    long = [
        (name, n) for name, n in local_definitions(path) if n > LONG_HELPERS.get((path.stem, name), HELPER_LINES_BUDGET)
    ]
    assert not long, (
        f"{path.name}: chapter-local definitions longer than {HELPER_LINES_BUDGET} lines belong in "
        f"utils with a docstring naming the section that teaches them: {long}"
    )


def test_the_ratchet_has_no_stale_entries():
    stems = {p.stem for p in CHAPTERS}
    stale = [s for s in OVER_BUDGET if s not in stems]
    assert not stale, f"OVER_BUDGET names chapters that do not exist: {stale}"
    loose = {s: (code_lines(REPO_ROOT / "notebooks" / f"{s}.ipynb"), n) for s, n in OVER_BUDGET.items() if s in stems}
    loose = {s: v for s, v in loose.items() if v[0] <= CODE_LINES_BUDGET}
    assert not loose, f"these chapters are now within the budget; delete their OVER_BUDGET entries: {loose}"
