"""Checks of the book's prose: no hand-typed measured numbers, no control characters, no missing glue.

The course is a reproducible report: a number that a run measured reaches the text only
through :func:`utils.report.glue` and a ``{glue:text}`key``` reference. This module states
the rule that the tests enforce (``tests/test_prose.py``) and that an author can run alone::

    python -m utils.prose                       # every chapter and authored page
    python -m utils.prose notebooks/03_attention_segmentation.ipynb --executed build/book/notebooks

**The rule for hand-typed numbers.** After removing what is not prose — fenced code blocks,
inline code, math (``$…$``, ``$$…$$``, ``\\(…\\)``, ``\\[…\\]``), roles and their targets
(``{glue:text}`…```, ``{cite}`…```, ``{ref}`…```), link targets, directive options and HTML
comments — a *measured-looking number* is

* a decimal number (``0.987``, ``55.8``) that is not a section, exercise, table or version
  number (``section 7.1``, ``exercise 3.4``, ``Python 3.11``);
* a percentage (``18 %``, ``2.5%``);
* a number followed by a unit of time or memory (``492 s``, ``2.0 GiB``, ``40 images/s``).

Such a number is allowed only

* in a sentence (or table row) that carries a citation ``{cite}`…``` — a literature value
  with its source; or
* when it is on the page's reviewed allow-list, ``tests/prose_allowlist/<page>.toml``, with the
  reason (a standard's constant, a design choice of the chapter, a literature value whose
  citation is in the surrounding paragraph).

Everything else must be glued from the run. Integers without a unit ("three levels", "64×64")
are not checked: they are design, not measurement.
"""

from __future__ import annotations

import argparse
import json
import re
import sys
import tomllib
from dataclasses import dataclass
from pathlib import Path

REPO_ROOT = Path(__file__).resolve().parent.parent
ALLOWLIST_DIR = REPO_ROOT / "tests" / "prose_allowlist"
# authored pages held to the rule (the decisions log and the errata quote history, by design)
BOOK_PAGES = ("book/index.md", "book/preface.md", "book/how_to_run.md", "book/faq.md", "book/reproducibility.md")

# words that state a comparison as a fact; they may appear only through glue (a computed verdict)
COMPARISON_WORDS = (
    "beats",
    "outperforms",
    "outperformed",
    "closes the gap",
    "closed the gap",
    "significantly better",
    "significantly worse",
    "clearly better",
    "clearly worse",
)

_FENCE = re.compile(r"^(```+|~~~+)(.*)$")
_ROLE = re.compile(r"\{[\w:.-]+\}`[^`]*`")
_INLINE_CODE = re.compile(r"``.+?``|`[^`\n]*`")
_MATH_BLOCK = re.compile(r"\$\$.*?\$\$|\\\[.*?\\\]", re.S)
_MATH_INLINE = re.compile(r"(?<![\\$])\$(?!\s)[^$\n]+?(?<!\s)\$|\\\(.*?\\\)")
_LINK_TARGET = re.compile(r"\]\([^)]*\)")
_HTML_COMMENT = re.compile(r"<!--.*?-->", re.S)
_URL = re.compile(r"https?://\S+")
_OPTION = re.compile(r"^\s*:[\w-]+:.*$", re.M)
_HEADING_NUMBER = re.compile(r"^(#+\s+)[\d.]+\s", re.M)  # "### 7.1 Several training runs"

# allowed on every page: the confidence level of every interval in the book
GLOBAL_ALLOWED = {"95 %": "the confidence level of every interval in the book"}

_UNITS = r"(?:s|ms|min|h|MiB|GiB|MB|GB|KiB|kB|images/s|img/s|samples/s|steps/s)"
_NUM = r"\d[\d,]*(?:\.\d+)?"
_MEASURED = re.compile(rf"(?<![\w.\-/])(?P<num>{_NUM})(?:\s?(?P<pct>%)|\s(?P<unit>{_UNITS})(?![\w/])|(?P<dec>))", re.U)
_REF_WORD = (
    r"(?:section|sections|§|exercise|exercises|ex\.|chapter|chapters|table|tables|figure|figures|fig\.|"
    r"step|steps|eq\.|equation|version|versions|python|keras|tensorflow|jax|pytorch|torch|numpy|"
    r"release|part|objective|objectives|v)"
)
# the text before a number ends with a reference word, possibly followed by a list ("exercises 3.1 and")
_REFERENCE_BEFORE = re.compile(rf"\b{_REF_WORD}\s+(?:[\d.]+\s*(?:,|and|or|to|–|-)\s*)*$", re.I)


@dataclass(frozen=True)
class Finding:
    """One problem in one cell or page: where, what, and the sentence it is in."""

    where: str
    what: str
    context: str

    def __str__(self) -> str:
        return f"{self.where}: {self.what} in: {self.context!r}"


def prose_only(markdown: str) -> str:
    """The markdown with everything that is not running prose removed (see the module docstring).

    Fenced code blocks go; the bodies of MyST directives (```` ```{exercise} ````, admonitions)
    stay, since they are prose.
    """
    out: list[str] = []
    stack: list[tuple[str, str]] = []  # open fences: (kind, marker)
    for line in markdown.splitlines():
        m = _FENCE.match(line.strip())
        if m:
            marker, info = m.group(1), m.group(2).strip()
            if not info and stack and marker[0] == stack[-1][1][0] and len(marker) >= len(stack[-1][1]):
                stack.pop()  # closes the innermost open fence
                continue
            if not (stack and stack[-1][0] == "code"):
                stack.append(("directive" if info.startswith("{") else "code", marker))
                continue
        if not any(kind == "code" for kind, _ in stack):
            out.append(line)
    text = "\n".join(out)
    text = _HEADING_NUMBER.sub(r"\1", text)
    for pattern in (_HTML_COMMENT, _MATH_BLOCK, _ROLE, _INLINE_CODE, _MATH_INLINE, _LINK_TARGET, _URL, _OPTION):
        text = pattern.sub(" ", text)
    return text


def sentences(text: str) -> list[str]:
    """Split prose into sentences; every table row and every list item is a sentence of its own."""
    parts = []
    # a list item starts a new paragraph: a citation in one bullet does not cover the next
    text = re.sub(r"\n(?=\s*(?:[-*+]|\d+[.)])\s)", "\n\n", text)
    for para in re.split(r"\n\s*\n", text):
        rows = [line for line in para.splitlines() if line.strip().startswith("|")]
        rest = "\n".join(line for line in para.splitlines() if not line.strip().startswith("|"))
        parts += rows
        parts += re.split(r"(?<=[.!?])\s+(?=[A-Z*(\[\"“])", rest)
    return [" ".join(p.split()) for p in parts if p.strip()]


def measured_numbers(sentence: str) -> list[str]:
    """The measured-looking numbers of one sentence (already stripped of non-prose)."""
    found = []
    for m in _MEASURED.finditer(sentence):
        num = m.group("num")
        if m.group("pct") or m.group("unit"):
            found.append(num + (" %" if m.group("pct") else f" {m.group('unit')}"))
            continue
        if "." not in num:
            continue  # a plain integer: design, not measurement
        if _REFERENCE_BEFORE.search(sentence[: m.start()]):
            continue  # "section 7.1", "exercises 3.1 and 3.4", "Python 3.11"
        found.append(num)
    return found


def load_allowlist(page: str, directory: Path = ALLOWLIST_DIR) -> dict[str, str]:
    """The reviewed allow-list of ``page`` (a notebook or book page name): number → reason."""
    path = directory / f"{Path(page).stem}.toml"
    if not path.is_file():
        return {}
    table = tomllib.loads(path.read_text(encoding="utf-8")).get("numbers", {})
    bad = [k for k, v in table.items() if not isinstance(v, str) or not v.strip()]
    if bad:
        raise ValueError(f"{path}: every allowed number needs a reason (a non-empty string): {bad}")
    return table


def _normal(number: str) -> str:
    return number.replace(",", "").replace(" ", "")


_CITE_MARK = "CITEMARK"


def _with_citations_kept(markdown: str) -> str:
    """``prose_only`` removes roles; put a plain marker where each citation was, so cited sentences are recognised."""
    return re.sub(r"\{cite(?::\w+)?\}`[^`]*`", _CITE_MARK, markdown)


def hand_typed_numbers(markdown: str, allowed: dict[str, str] | None = None, where: str = "") -> list[Finding]:
    """Measured-looking numbers that are neither in a cited sentence nor on the allow-list."""
    allowed_set = {_normal(k) for k in {**GLOBAL_ALLOWED, **(allowed or {})}}
    findings = []
    cleaned = prose_only(_with_citations_kept(markdown))
    for sentence in sentences(cleaned):
        if _CITE_MARK in sentence:
            continue
        for number in measured_numbers(sentence):
            if _normal(number) not in allowed_set:
                findings.append(Finding(where, f"hand-typed number {number!r}", sentence[:160]))
    return findings


def control_characters(text: str, where: str = "") -> list[Finding]:
    """Every control character (TAB included; newline excluded) with its position."""
    findings = []
    for m in re.finditer(r"[\x00-\x09\x0b-\x1f\x7f]", text):
        line = text.count("\n", 0, m.start()) + 1
        start = text.rfind("\n", 0, m.start()) + 1
        end = text.find("\n", m.start())
        findings.append(
            Finding(
                f"{where} line {line}",
                f"control character {m.group()!r}",
                text[start : end if end >= 0 else None][:160],
            )
        )
    return findings


def comparison_words(markdown: str, where: str = "") -> list[Finding]:
    """Words that state a comparison as fact (``"beats"``, ``"closed the gap"``) in the prose."""
    findings = []
    for sentence in sentences(prose_only(markdown)):
        low = sentence.lower()
        for word in COMPARISON_WORDS:
            if re.search(rf"\b{re.escape(word)}\b", low):
                findings.append(Finding(where, f"comparison stated by hand ({word!r}); glue a verdict", sentence[:160]))
    return findings


_GLUE_REF = re.compile(r"\{glue(?::\w+)?\}`([^`]+)`|```\{glue(?::\w+)?\}\s+(\S+)")


def glue_references(markdown: str) -> set[str]:
    """Keys that the markdown pastes (``{glue:text}`key```, ``{glue:text}`key:.3f```, ``{glue:md}`` blocks)."""
    keys = set()
    for m in _GLUE_REF.finditer(markdown):
        ref = (m.group(1) or m.group(2)).strip()
        if "::" in ref:
            continue  # pasted from another document; checked by the book build
        keys.add(ref.split(":", 1)[0].strip())
    return keys


def glued_keys(executed: dict) -> set[str]:
    """Keys glued by the outputs of an executed notebook (MyST-NB's ``scrapbook`` metadata)."""
    keys = set()
    for cell in executed.get("cells", []):
        for output in cell.get("outputs", []) if cell.get("cell_type") == "code" else []:
            name = output.get("metadata", {}).get("scrapbook", {}).get("name")
            if name:
                keys.add(name)
    return keys


def _markdown_cells(nb: dict) -> list[tuple[int, str]]:
    return [
        (i, "".join(c["source"]) if isinstance(c["source"], list) else c["source"])
        for i, c in enumerate(nb["cells"])
        if c["cell_type"] == "markdown"
    ]


def check_notebook(path: Path, executed: Path | None = None) -> list[Finding]:
    """Every prose problem of one chapter notebook (and, given its executed copy, missing glue keys)."""
    nb = json.loads(path.read_text(encoding="utf-8"))
    allowed = load_allowlist(path.name)
    findings: list[Finding] = []
    referenced: set[str] = set()
    for i, text in _markdown_cells(nb):
        where = f"{path.name} cell {i}"
        findings += control_characters(text, where)
        findings += hand_typed_numbers(text, allowed, where)
        findings += comparison_words(text, where)
        referenced |= glue_references(text)
    if executed is not None:
        done = json.loads(executed.read_text(encoding="utf-8"))
        missing = sorted(referenced - glued_keys(done))
        if missing:
            findings.append(
                Finding(path.name, f"glue keys referenced but not glued by the run {executed}", ", ".join(missing))
            )
    return findings


def check_page(path: Path) -> list[Finding]:
    """Every prose problem of one authored Markdown page of the book."""
    text = path.read_text(encoding="utf-8")
    allowed = load_allowlist(path.name)
    return (
        control_characters(text, path.name)
        + hand_typed_numbers(text, allowed, path.name)
        + comparison_words(text, path.name)
    )


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m utils.prose", description=__doc__.split("\n\n")[0])
    parser.add_argument("paths", nargs="*", type=Path, help="notebooks or pages (default: every chapter and page)")
    parser.add_argument("--executed", type=Path, help="folder of executed notebooks, to check glue keys too")
    args = parser.parse_args(argv)
    paths = args.paths or (
        sorted((REPO_ROOT / "notebooks").glob("[0-9][0-9]_*.ipynb")) + [REPO_ROOT / p for p in BOOK_PAGES]
    )
    findings: list[Finding] = []
    for path in paths:
        if path.suffix == ".ipynb":
            executed = args.executed / path.name if args.executed else None
            findings += check_notebook(path, executed if executed and executed.is_file() else None)
        else:
            findings += check_page(path)
    for f in findings:
        print(f)
    print(f"{len(findings)} problem(s) in {len(paths)} file(s)")
    return 1 if findings else 0


if __name__ == "__main__":
    sys.exit(main())
