"""Assemble and build the Jupyter Book from the authored pages and the executed notebooks.

``python -m utils.book`` copies ``_config.yml``, ``_toc.yml`` and ``book/``
into ``build/book/`` beside the executed notebooks that ``python -m utils.run``
wrote there, checks that every chapter in the table of contents has been
executed, and runs ``jupyter-book build`` with warnings as errors.  The HTML
lands in ``build/book/_build/html``.  Sphinx rebuilds only the pages whose
sources changed since the last build (the copies keep their modification
times); ``--all`` rebuilds every page.
"""

from __future__ import annotations

import argparse
import shutil
import subprocess
import sys
from pathlib import Path

import yaml

from .run import REPORT_MD, STAGE

REPO_ROOT = Path(__file__).resolve().parent.parent


def toc_files(toc_path: Path = REPO_ROOT / "_toc.yml") -> list[str]:
    """Every file named in the table of contents (root first)."""
    toc = yaml.safe_load(toc_path.read_text())
    found = [toc["root"]]

    def walk(node):
        if isinstance(node, dict):
            if "file" in node:
                found.append(node["file"])
            for value in node.values():
                walk(value)
        elif isinstance(node, list):
            for item in node:
                walk(item)

    walk({k: v for k, v in toc.items() if k != "root"})
    return found


def stage(root: Path = REPO_ROOT, dest: Path = STAGE) -> list[str]:
    """Copy the authored sources into ``dest``; return the problems found (missing pages)."""
    dest.mkdir(parents=True, exist_ok=True)
    for name in ("_config.yml", "_toc.yml"):
        shutil.copy2(root / name, dest / name)
    shutil.copytree(root / "book", dest / "book", dirs_exist_ok=True)
    problems = []
    for entry in toc_files(root / "_toc.yml"):
        candidates = [dest / f"{entry}{ext}" for ext in ("", ".md", ".ipynb")]
        if not any(c.is_file() for c in candidates):
            if entry.startswith("notebooks/"):
                problems.append(f"{entry}.ipynb has not been executed: run `python -m utils.run` first")
            else:
                problems.append(f"{entry} is in _toc.yml but not in book/")
    if not REPORT_MD.is_file():
        problems.append(f"{REPORT_MD.relative_to(root)} is missing: run `python -m utils.run` first")
    return problems


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m utils.book", description=__doc__.split("\n\n")[0])
    parser.add_argument("--no-strict", action="store_true", help="do not turn warnings into errors")
    parser.add_argument(
        "--all",
        action="store_true",
        help="rebuild every page (default: only pages whose sources changed since the last build)",
    )
    args = parser.parse_args(argv)
    problems = stage()
    if problems:
        for p in problems:
            print(f"error: {p}", file=sys.stderr)
        return 2
    cmd = ["jupyter-book", "build", str(STAGE), "--keep-going"] + (["--all"] if args.all else [])
    if not args.no_strict:
        cmd += ["-W", "-n"]
    exe = Path(sys.executable).parent / "jupyter-book"
    cmd[0] = str(exe) if exe.exists() else cmd[0]
    print(" ".join(cmd), flush=True)
    rc = subprocess.call(cmd)
    if rc == 0:
        print(f"book: {STAGE / '_build' / 'html' / 'index.html'}")
    return rc


if __name__ == "__main__":
    sys.exit(main())
