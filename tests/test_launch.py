"""The launch buttons work: every chapter starts with the guarded Colab install cell, built from one setting."""

from __future__ import annotations

import importlib.util
import subprocess
import sys
import types
from pathlib import Path

import nbformat
import pytest

from utils import launch

ROOT = Path(__file__).resolve().parent.parent
NOTEBOOKS = sorted((ROOT / "notebooks").glob("[0-9][0-9]_*.ipynb"))


def test_the_repository_is_named_once_and_is_a_real_address():
    url, branch = launch.repository()
    assert url.startswith("https://github.com/") and branch


@pytest.mark.parametrize("path", NOTEBOOKS, ids=lambda p: p.name)
def test_every_chapter_starts_with_the_current_install_cell(path):
    nb = nbformat.read(path, as_version=4)
    first = next(c for c in nb.cells if c.cell_type == "code")
    assert launch.TAG in first.metadata.get("tags", []), f"{path.name}: run `python -m utils.launch`"
    assert "remove-cell" in first.metadata.get("tags", [])
    assert first.source == launch.colab_cell_source(*launch.repository()), (
        f"{path.name}: the install cell differs from _config.yml's repository; run `python -m utils.launch`"
    )


def run_cell(monkeypatch, *, installed: bool, colab: bool):
    calls = []
    monkeypatch.setattr(subprocess, "run", lambda cmd, **kw: calls.append(cmd))
    if colab:
        monkeypatch.setitem(sys.modules, "google.colab", types.ModuleType("google.colab"))
    else:
        monkeypatch.delitem(sys.modules, "google.colab", raising=False)
    if not installed:
        real = importlib.util.find_spec
        monkeypatch.setattr(
            importlib.util, "find_spec", lambda name, *a: None if name.split(".")[0] == "utils" else real(name, *a)
        )
    exec(compile(launch.colab_cell_source("https://github.com/o/r", "main"), "cell", "exec"), {})
    return calls


def test_the_install_cell_does_nothing_where_the_course_is_installed(monkeypatch):
    assert run_cell(monkeypatch, installed=True, colab=True) == []
    assert run_cell(monkeypatch, installed=True, colab=False) == []


def test_the_install_cell_installs_on_colab(monkeypatch):
    calls = run_cell(monkeypatch, installed=False, colab=True)
    assert len(calls) == 1 and calls[0][-1] == "medimg-dl-course @ git+https://github.com/o/r@main"
    assert calls[0][1:4] == ["-m", "pip", "install"]


def test_the_install_cell_explains_elsewhere(monkeypatch):
    with pytest.raises(SystemExit, match="make env"):
        run_cell(monkeypatch, installed=False, colab=False)


def test_sync_is_idempotent(tmp_path):
    nb = nbformat.v4.new_notebook(cells=[nbformat.v4.new_markdown_cell("# T"), nbformat.v4.new_code_cell("x = 1")])
    path = tmp_path / "01_t.ipynb"
    nbformat.write(nb, path)
    assert launch.sync(path) is True
    assert launch.sync(path) is False
    cells = nbformat.read(path, as_version=4).cells
    assert [c.cell_type for c in cells] == ["markdown", "code", "code"] and launch.TAG in cells[1].metadata["tags"]


def test_binder_installs_the_package():
    post = ROOT / "postBuild"
    assert post.is_file() and "pip install --no-deps -e ." in post.read_text()
    assert post.stat().st_mode & 0o111, "postBuild must be executable"
    assert (ROOT / "environment.yml").is_file()


def test_the_install_cell_is_already_formatted(tmp_path):
    """`make format` must leave the generated cell as utils.launch writes it (else the sync test fails)."""
    import shutil

    ruff = shutil.which("ruff", path=str(Path(sys.executable).parent))
    if ruff is None:
        pytest.skip("ruff is not installed in this environment (make env installs it)")
    path = tmp_path / "cell.py"
    path.write_text(launch.colab_cell_source(*launch.repository()) + "\n", encoding="utf-8")
    out = subprocess.run(
        [ruff, "format", "--diff", "--config", str(Path(launch.REPO_ROOT) / "pyproject.toml"), str(path)],
        capture_output=True,
        text=True,
    )
    assert out.returncode == 0, f"ruff would reformat the install cell:\n{out.stdout}"
