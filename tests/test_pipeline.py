"""End to end: every chapter through the runner (fast profile), the report, the student edition, the book.

These are the slow tests (minutes); `pytest -m "not slow"` skips them.
"""

from __future__ import annotations

import html
import json
import os
import re
import shutil
import subprocess
import sys
from pathlib import Path

import nbformat
import pytest
from conftest import leaked_lines

from utils import data, run, student

ROOT = Path(__file__).resolve().parent.parent
HTML = run.STAGE / "_build" / "html"
pytestmark = pytest.mark.slow

# Log lines that TensorFlow and friends write to stderr; none may reach a rendered page.
NOISE = (
    "oneDNN",
    "TF_ENABLE_ONEDNN_OPTS",
    "cuda_",
    "cpu_feature_guard",
    "absl::InitializeLog",
    "Kernel is running over TCP",
    "computation placer",
)


#: chapters run at a time, here and by the class grader (make test sets JOBS; each chapter's numbers do not depend on it)
JOBS = os.environ.get(run.JOBS_ENV) or str(min(2, os.cpu_count() or 1))


def _python(*args: str, timeout: int) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, *args], cwd=ROOT, capture_output=True, text=True, timeout=timeout)


@pytest.fixture(scope="module")
def fast_run():
    proc = _python("-m", "utils.run", "--profile", "fast", "--force", "--jobs", JOBS, timeout=40 * 60)
    assert proc.returncode == 0, f"runner failed:\n{proc.stdout[-3000:]}\n{proc.stderr[-3000:]}"
    return json.loads(run.REPORT_JSON.read_text())


@pytest.fixture(scope="module")
def built_book(fast_run):
    proc = _python("-m", "utils.book", "--all", timeout=20 * 60)
    assert proc.returncode == 0, f"book build failed:\n{proc.stdout[-4000:]}\n{proc.stderr[-4000:]}"
    return HTML


def test_every_notebook_ran_ok_under_the_fast_profile(fast_run):
    names = [p.name for p in run.discover()]
    assert [e["notebook"] for e in fast_run["notebooks"]] == names
    for entry in fast_run["notebooks"]:
        assert entry["status"] == "ok", entry
        assert entry["profile"] == "fast"
        assert entry["wall_s"] > 0 and entry["peak_rss_mb"] > 50
        assert entry["metrics"], f"{entry['notebook']} reported no metrics"
        assert entry["environment"]["profile"] == "fast"
        executed = nbformat.read(run.STAGE / "notebooks" / entry["notebook"], as_version=4)
        assert any(c.get("outputs") for c in executed.cells if c.cell_type == "code")


def test_report_lists_verified_datasets_declared_in_the_registry(fast_run):
    reg = data.registry()
    for entry in fast_run["notebooks"]:
        stem = Path(entry["notebook"]).stem
        assert entry["datasets"], f"{stem} read no dataset through the data layer"
        for d in entry["datasets"]:
            assert re.fullmatch(r"[0-9a-f]{64}", d["sha256"])
            assert d["source"] in {"data_dir", "cache", "download", "pypi"}
            assert stem in reg[d["dataset"]].extra.get("used_by", []), (
                f"{stem} reads {d['dataset']} but data/registry.toml does not list it in used_by"
            )
    env = fast_run["environment"]
    assert env["packages"]["keras"].startswith("3.")
    assert env["cpu_count"] >= 1


def test_committed_notebooks_stay_clean_after_a_run(fast_run):
    for path in run.discover():
        nb = nbformat.read(path, as_version=4)
        assert not any(c.get("outputs") for c in nb.cells if c.cell_type == "code"), path


def test_student_edition_cli_removes_every_solution(tmp_path):
    proc = _python("-m", "utils.student", "--out", str(tmp_path), timeout=120)
    assert proc.returncode == 0, proc.stderr
    for path in run.discover():
        original = nbformat.read(path, as_version=4)
        edition = nbformat.read(tmp_path / path.name, as_version=4)
        text = "\n".join(c.source for c in edition.cells)
        leaked = leaked_lines(original, edition)
        assert not leaked, f"{path.name}: solution lines in the student edition: {leaked[:3]}"
        if any(student.BEGIN in c.source for c in original.cells):
            assert student.PLACEHOLDER in text or student.TOP_LEVEL_PLACEHOLDER in text


def test_book_renders_every_chapter_with_figures_and_no_log_noise(built_book):
    for path in run.discover():
        page = built_book / "notebooks" / f"{path.stem}.html"
        html = page.read_text()
        assert "<img" in html, f"{page} has no figure"
        for noise in NOISE:
            assert noise not in html, f"{page} shows log noise {noise!r}"
        assert "Traceback" not in html
    report = (built_book / "book" / "reproducibility.html").read_text()
    for path in run.discover():
        assert path.name in report
    assert "peak memory" in report


def test_book_has_the_front_and_back_matter(built_book):
    for page in ("book/index", "book/preface", "book/how_to_run", "book/glossary", "book/references"):
        assert (built_book / f"{page}.html").is_file(), page


# ------------------------------------------------------------------------- formulas, offline
def _chromium() -> str | None:
    for name in ("chromium", "chromium-browser", "google-chrome"):
        if shutil.which(name):
            return shutil.which(name)
    return None


def _no_network_prefix() -> list[str]:
    """``unshare -n`` (a network namespace with no interface but loopback) where it works here."""
    if shutil.which("unshare"):
        probe = subprocess.run(["unshare", "-n", "true"], capture_output=True)
        if probe.returncode == 0:
            return ["unshare", "-n"]
    return []


def _visible_text(dom: str) -> str:
    """The text a reader sees: no scripts, styles, code blocks or MathJax's own markup."""
    for tag in ("script", "style", "pre", "code", "mjx-container", "mjx-assistive-mml"):
        dom = re.sub(rf"<{tag}\b.*?</{tag}>", " ", dom, flags=re.S | re.I)
    return html.unescape(re.sub(r"<[^>]+>", " ", dom))


def test_every_chapter_typesets_its_formulas_with_the_network_cut(built_book, tmp_path):
    browser = _chromium()
    if browser is None:
        pytest.skip("Chromium is not installed: `apt-get install chromium` (Debian) to run this test")
    offline = _no_network_prefix()
    # without a network namespace, the browser's own switches keep it off the network
    flags = [
        "--headless",
        "--no-sandbox",
        "--disable-gpu",
        "--no-first-run",
        "--disable-background-networking",
        "--disable-component-update",
        "--disable-sync",
        "--virtual-time-budget=20000",
    ]
    if not offline:
        flags += ["--proxy-server=http://127.0.0.1:9", "--proxy-bypass-list=<-loopback>"]
    assert (built_book / "_static" / "mathjax" / "tex-chtml.js").is_file(), "MathJax is not served by the book"
    for path in run.discover():
        page = built_book / "notebooks" / f"{path.stem}.html"
        assert "cdn.jsdelivr.net/npm/mathjax" not in page.read_text(), f"{page.name} loads MathJax from a CDN"
        proc = subprocess.run(
            [*offline, browser, *flags, f"--user-data-dir={tmp_path / path.stem}", "--dump-dom", page.as_uri()],
            capture_output=True,
            text=True,
            timeout=120,
        )
        assert proc.returncode == 0, proc.stderr[-2000:]
        dom = proc.stdout
        assert "<mjx-container" in dom, f"{page.name}: no formula was typeset (offline)"
        text = _visible_text(dom)
        for raw in ("\\[", "\\(", "$$"):
            assert raw not in text, (
                f"{page.name}: raw {raw!r} left in the text: "
                f"{text[max(0, text.find(raw) - 80) : text.find(raw) + 80]!r}"
            )


def test_pages_hide_papermill_plumbing_and_state_their_run(built_book):
    for path in run.discover():
        page = (built_book / "notebooks" / f"{path.stem}.html").read_text()
        assert "injected-parameters" not in page, f"{path.stem}: papermill's injected cell is on the page"
        assert "profile of" in page and "every number in its text comes from that run" in page


# ------------------------------------------------------------------------- the student edition
def test_the_student_edition_runs_top_to_bottom_and_reports_every_exercise_not_attempted(tmp_path, monkeypatch):
    """A student who presses Run All on an untouched copy reaches the end; no check passes on a placeholder.

    The copies are run by the class grader (``utils.grade``), as a teacher would run them: this tests the
    student edition and the grader on every real chapter at once.
    """
    import csv

    from conftest import ORIGINAL_CACHE_DIR, ORIGINAL_DATA_DIR

    from utils import grade

    out = tmp_path / "student"
    proc = _python("-m", "utils.student", "--out", str(out), timeout=120)
    assert proc.returncode == 0, proc.stderr
    # the data a student's machine would have: the session's mirror and cache, not the test's empty ones
    if ORIGINAL_DATA_DIR:
        monkeypatch.setenv(data.DATA_DIR_ENV, ORIGINAL_DATA_DIR)
    if ORIGINAL_CACHE_DIR:
        monkeypatch.setenv(data.CACHE_DIR_ENV, ORIGINAL_CACHE_DIR)
    else:
        monkeypatch.delenv(data.CACHE_DIR_ENV, raising=False)
    monkeypatch.delenv("MEDIMG_STRICT_EXERCISES", raising=False)
    monkeypatch.setenv("MEDIMG_RUN_RECORD", str(tmp_path / "record.json"))
    submitted = tmp_path / "submitted" / "untouched"
    submitted.mkdir(parents=True)
    for path in run.discover():
        edition = nbformat.read(out / path.name, as_version=4)
        params = next(c for c in edition.cells if "parameters" in c.metadata.get("tags", []))
        assert 'PROFILE = "fast"' in params.source, f"{path.name}: the student copy must default to fast"
        nbformat.write(edition, submitted / path.name)
    reference = tmp_path / "submitted" / "reference"  # the teacher's chapter 1 as a submission: full marks
    reference.mkdir()
    first = run.discover()[0]
    shutil.copy(first, reference / first.name)
    grades = tmp_path / "grades"
    assert (
        grade.main(
            [
                str(tmp_path / "submitted"),
                "--out",
                str(grades),
                "--cell-timeout",
                "1800",
                "--timeout",
                "3600",
                "--jobs",
                JOBS,
            ]
        )
        == 0
    )
    with open(grades / "grades.csv", encoding="utf-8") as fh:
        rows = list(csv.DictReader(fh))
    with open(grades / "totals.csv", encoding="utf-8") as fh:
        totals = list(csv.DictReader(fh))
    totals = {t["student"]: t for t in totals}
    assert totals["untouched"]["problems"] == "" and totals["reference"]["problems"] == "", totals
    assert float(totals["reference"]["points"]) == float(totals["reference"]["max_points"]) >= 4, totals
    rows = [r for r in rows if r["student"] == "untouched"]
    for path in run.discover():
        teacher = nbformat.read(path, as_version=4)
        expected = [label for g in grade.graded_cells(teacher) for label in g.labels]
        assert expected, f"{path.name}: no exercise checks found"
        assert len(expected) >= 4, f"{path.name}: fewer than four exercises ({expected})"
        got = {r["exercise"]: r["status"] for r in rows if r["notebook"] == path.name}
        assert got == {label: "not attempted" for label in expected}, f"{path.name}: {got}"
        done = nbformat.read(grades / "executed" / "untouched" / path.name, as_version=4)
        code = [c for c in done.cells if c.cell_type == "code"]
        assert code[-1].get("execution_count") is not None, f"{path.name}: the last cell did not run"
        text = "\n".join(
            o.get("text", "") for c in code for o in c.get("outputs", []) if o.get("output_type") == "stream"
        )
        passed = re.findall(r"Exercise [\w.]+ passed\.", text)
        assert not passed, f"{path.name}: checks passed on a placeholder: {passed}"
