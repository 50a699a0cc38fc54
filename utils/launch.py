"""Launch buttons that work: the guarded install cell for Colab, kept in sync with one setting.

The public repository is named once, in ``_config.yml`` (``repository.url`` and ``.branch``); the
book's launch buttons read it there. Every chapter starts with a code cell tagged ``colab-install``
(and ``remove-cell``, so the book does not show it) whose source :func:`colab_cell_source` writes
from that setting: on Colab, where the course is not installed, it installs it with pip from the
repository; anywhere the course is installed (a venv made by ``make env``, Binder, a conda
environment) it does nothing. ``python -m utils.launch`` rewrites the cells after the setting
changes; ``tests/test_launch.py`` fails when a notebook's cell and the setting disagree.

Binder reads ``environment.yml`` and runs ``postBuild`` (``pip install --no-deps -e .``).
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

import nbformat
import yaml

REPO_ROOT = Path(__file__).resolve().parent.parent
TAG = "colab-install"


def repository(config: Path = REPO_ROOT / "_config.yml") -> tuple[str, str]:
    """``(url, branch)`` of the public repository, from ``_config.yml``."""
    repo = (yaml.safe_load(config.read_text(encoding="utf-8")) or {}).get("repository", {})
    url, branch = repo.get("url"), repo.get("branch", "main")
    if not url or not str(url).startswith("https://"):
        raise ValueError(f"{config}: set repository.url to the https address of the course's public repository")
    return str(url).rstrip("/"), str(branch)


def colab_cell_source(url: str, branch: str) -> str:
    """The guarded first cell of every chapter (installs the course on Colab only)."""
    spec = f"medimg-dl-course @ git+{url}@{branch}"
    return (
        "# Colab only: install the course's package (utils) and the libraries it needs. Where the course is\n"
        "# installed (make env, Binder, conda), this cell does nothing.\n"
        "import importlib.util\n"
        "import subprocess\n"
        "import sys\n"
        "\n"
        'if importlib.util.find_spec("utils") is None or importlib.util.find_spec("utils.course") is None:\n'
        '    if "google.colab" in sys.modules:\n'
        f'        course = "{spec}"\n'
        '        subprocess.run([sys.executable, "-m", "pip", "install", "-q", course], check=True)\n'
        "    else:\n"
        "        raise SystemExit(\n"
        '            "the course is not installed: run `make env` (or `pip install -e .`) in the repository, "\n'
        '            "then start JupyterLab from it (`make lab`)"\n'
        "        )"
    )


def colab_cell() -> nbformat.NotebookNode:
    url, branch = repository()
    cell = nbformat.v4.new_code_cell(colab_cell_source(url, branch))
    cell.metadata["tags"] = [TAG, "remove-cell"]
    return cell


def sync(path: Path) -> bool:
    """Put the current install cell first in the notebook at ``path``; True when the file changed."""
    nb = nbformat.read(path, as_version=4)
    wanted = colab_cell()
    cells = [c for c in nb.cells if TAG not in c.get("metadata", {}).get("tags", [])]
    existing = [c for c in nb.cells if TAG in c.get("metadata", {}).get("tags", [])]
    first_code = next((i for i, c in enumerate(cells) if c.cell_type == "code"), len(cells))
    if len(existing) == 1 and existing[0].source == wanted.source and nb.cells.index(existing[0]) == first_code:
        return False
    if existing:
        wanted["id"] = existing[0].get("id", wanted.get("id"))
    cells.insert(first_code, wanted)
    nb.cells = cells
    nbformat.write(nb, path)
    return True


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m utils.launch", description=__doc__.split("\n\n")[0])
    parser.add_argument("notebooks", nargs="*", type=Path)
    args = parser.parse_args(argv)
    paths = args.notebooks or sorted((REPO_ROOT / "notebooks").glob("[0-9][0-9]_*.ipynb"))
    for path in paths:
        print(f"{path.name}: {'updated' if sync(path) else 'up to date'}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
