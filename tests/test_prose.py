"""The book's prose quotes only what its run measured: the checks of utils.prose, tested, then applied.

Each check is first shown to catch a wrong text and to pass an alternative right one; then every
chapter and authored page is held to it.
"""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from utils import prose

ROOT = Path(__file__).resolve().parent.parent
NOTEBOOKS = sorted((ROOT / "notebooks").glob("[0-9][0-9]_*.ipynb"))
PAGES = [ROOT / p for p in prose.BOOK_PAGES]


def numbers(markdown, allowed=None):
    return [f.what.split("'")[1] for f in prose.hand_typed_numbers(markdown, allowed)]


# ----------------------------------------------------------------- the rule, on wrong and right texts
def test_hand_typed_results_are_caught():
    text = (
        "The U-Net reached a Dice of 0.939 [0.928, 0.949] on the nuclei, 18 % above the floor; "
        "training took 492 s and 2.0 GiB."
    )
    assert numbers(text) == ["0.939", "0.928", "0.949", "18 %", "492 s", "2.0 GiB"]


def test_a_table_typed_in_markdown_is_caught():
    text = "| data | Dice |\n|---|---|\n| phantoms | 0.987 |\n| nuclei | 0.939 |"
    assert numbers(text) == ["0.987", "0.939"]


def test_glued_values_math_code_and_references_pass():
    text = (
        "The U-Net reached {glue:text}`unet_dice` ({glue:text}`unet_dice:.3f`) in section 7.1 "
        "and exercises 3.1 and 3.4, with $p = 0.5$ and `lr = 2e-3`, on Python 3.11; see "
        "[the log](decisions.md#v1.2).\n\n```python\nx = 0.25\n```\n\n$$\nD = 0.5\n$$\n"
    )
    assert numbers(text) == []


def test_cited_literature_values_pass_and_uncited_ones_do_not():
    assert numbers("ResNet-18 (28) reaches an AUC of 0.944 {cite}`yang2023medmnist`.") == []
    assert numbers("ResNet-18 (28) reaches an AUC of 0.944.") == ["0.944"]
    # the citation covers its own sentence only
    assert numbers("The benchmark is 0.944 {cite}`yang2023medmnist`. We reach 0.973.") == ["0.973"]


def test_a_citation_in_one_bullet_does_not_cover_the_next():
    text = "* Focal loss {cite}`lin2017focal` with gamma 2.0\n* our AUC was 0.80\n1. and 0.91 here"
    assert numbers(text) == ["0.80", "0.91"]


def test_the_allow_list_admits_only_what_it_names():
    text = "The threshold is 0.5 and the AUC 0.973."
    assert numbers(text, {"0.5": "design"}) == ["0.973"]
    assert numbers("Every interval is a 95 % interval.") == []  # the global confidence level


def test_directive_bodies_are_prose_but_code_fences_are_not():
    text = (
        "```{admonition} Result\nThe run gave 0.91.\n```\n\n```\nprinted 0.77\n```\n\n"
        "````{exercise} x\n```python\ny = 0.3\n```\nIt scored 0.66.\n````"
    )
    assert numbers(text) == ["0.91", "0.66"]


def test_section_headings_are_not_numbers():
    assert numbers("### 7.1 Several training runs\n\nText.") == []


def test_control_characters():
    corrupted = "$$\n\tilde p = \\sigma\bigl(a\\bigr)\n$$"  # a TAB and a BACKSPACE where \t and \b were meant
    found = prose.control_characters(corrupted, "x")
    assert [f.what for f in found] == ["control character '\\t'", "control character '\\x08'"]
    assert prose.control_characters("$$\n\\tilde p = \\sigma\\bigl(a\\bigr)\n$$") == []


def test_comparison_words():
    assert prose.comparison_words("The CenterNet beats blob_log on AP.")
    assert prose.comparison_words("FedAvg closed the gap to pooled training.")
    assert not prose.comparison_words("FedAvg is {glue:text}`fedavg_verdict` pooled training.")


def test_glue_references_and_glued_keys():
    md = "A {glue:text}`a` and {glue:text}`b:.2f`, {glue}`c`, {glue:text}`other.ipynb::d`.\n\n```{glue:md} e\n```"
    assert prose.glue_references(md) == {"a", "b", "c", "e"}
    executed = {
        "cells": [
            {
                "cell_type": "code",
                "outputs": [
                    {"output_type": "display_data", "metadata": {"scrapbook": {"name": "a"}}, "data": {}},
                    {"output_type": "stream", "text": "x"},
                ],
            }
        ]
    }
    assert prose.glued_keys(executed) == {"a"}


def test_check_notebook_reports_missing_glue(tmp_path):
    nb = {
        "cells": [{"cell_type": "markdown", "source": "Dice {glue:text}`dice`.", "metadata": {}}],
        "metadata": {},
        "nbformat": 4,
        "nbformat_minor": 5,
    }
    src = tmp_path / "99_x.ipynb"
    src.write_text(json.dumps(nb))
    executed = tmp_path / "done.ipynb"
    executed.write_text(json.dumps({"cells": [{"cell_type": "code", "outputs": []}]}))
    found = prose.check_notebook(src, executed)
    assert len(found) == 1 and "dice" in found[0].context


def test_allowlist_entries_need_a_reason(tmp_path):
    (tmp_path / "page.toml").write_text('[numbers]\n"0.5" = ""\n')
    with pytest.raises(ValueError, match="reason"):
        prose.load_allowlist("page.md", tmp_path)


# ------------------------------------------------------------------------- applied to the course
@pytest.mark.parametrize("path", NOTEBOOKS + PAGES, ids=lambda p: p.name)
def test_no_control_characters(path):
    if path.suffix == ".ipynb":
        nb = json.loads(path.read_text(encoding="utf-8"))
        found = [
            f
            for i, c in enumerate(nb["cells"])
            if c["cell_type"] == "markdown"
            for f in prose.control_characters("".join(c["source"]), f"cell {i}")
        ]
    else:
        found = prose.control_characters(path.read_text(encoding="utf-8"), path.name)
    assert not found, "\n".join(map(str, found))


@pytest.mark.parametrize("path", NOTEBOOKS + PAGES, ids=lambda p: p.name)
def test_no_hand_typed_measured_numbers_or_verdicts(path):
    found = prose.check_notebook(path) if path.suffix == ".ipynb" else prose.check_page(path)
    assert not found, (
        "glue these from the run (utils.report.glue) or justify them in "
        f"tests/prose_allowlist/{path.stem}.toml:\n" + "\n".join(map(str, found))
    )


@pytest.mark.parametrize("path", sorted(prose.ALLOWLIST_DIR.glob("*.toml")), ids=lambda p: p.name)
def test_every_allowlist_belongs_to_a_page(path):
    pages = {p.stem for p in NOTEBOOKS + PAGES}
    assert path.stem in pages, f"{path.name} allows numbers for a page that does not exist"
    prose.load_allowlist(path.stem)
