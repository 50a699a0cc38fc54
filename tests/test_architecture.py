"""The module map of CONTRIBUTING holds: infrastructure never imports a science module.

The infrastructure modules (set-up, data layer, reports, runner, book, exercises, grading) serve every
chapter; a science module may use them, never the other way round.  Imports inside functions count too (they are where such a cycle would hide).
"""

from __future__ import annotations

import ast

import pytest
from conftest import REPO_ROOT

UTILS = REPO_ROOT / "utils"
INFRASTRUCTURE = {
    "course",
    "data",
    "files",
    "memory",
    "report",
    "stats",
    "tables",
    "run",
    "book",
    "launch",
    "exercises",
    "student",
    "grade",
    "prose",
}


def modules() -> set[str]:
    return {p.stem for p in UTILS.glob("*.py") if p.stem != "__init__"}


def utils_imports(path) -> set[str]:
    """Names of the utils modules that ``path`` imports (``from . import x``, ``from .x import y``,
    ``import utils.x``, ``from utils import x``), anywhere in the file."""
    found = set()
    for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
        if isinstance(node, ast.ImportFrom):
            if node.level == 1 and node.module is None or node.module == "utils" and node.level == 0:
                found |= {a.name for a in node.names}
            elif node.level == 1:
                found.add(node.module.split(".")[0])
            elif node.level == 0 and node.module and node.module.startswith("utils."):
                found.add(node.module.split(".")[1])
        elif isinstance(node, ast.Import):
            found |= {a.name.split(".")[1] for a in node.names if a.name.startswith("utils.")}
    return found


def test_every_module_is_in_the_map():
    science = modules() - INFRASTRUCTURE
    assert INFRASTRUCTURE <= modules(), f"INFRASTRUCTURE names modules that do not exist: {INFRASTRUCTURE - modules()}"
    text = (REPO_ROOT / "CONTRIBUTING.md").read_text(encoding="utf-8").split("## Architecture", 1)[1]
    missing = sorted(m for m in modules() if f"`{m}`" not in text)
    assert not missing, f"CONTRIBUTING's module map does not list {missing}; say which layer each belongs to"
    assert science, "no science modules found"


def test_the_map_names_only_modules_that_exist():
    """The other direction: a module the map names (second column of its table) is a file of ``utils``."""
    import re

    text = (REPO_ROOT / "CONTRIBUTING.md").read_text(encoding="utf-8").split("## Architecture", 1)[1]
    text = text.split("\n## ", 1)[0]
    rows = [line.split("|") for line in text.splitlines() if line.startswith("|") and not line.startswith("|---")]
    named = {m for row in rows[1:] for m in re.findall(r"`([a-z_]+)`", row[2])}
    assert named, "no module names found in CONTRIBUTING's module map"
    ghosts = sorted(named - modules())
    assert not ghosts, f"CONTRIBUTING's module map names {ghosts}, which are not modules of utils"


@pytest.mark.parametrize("name", sorted(INFRASTRUCTURE))
def test_infrastructure_imports_no_science_module(name):
    science = modules() - INFRASTRUCTURE
    wrong = sorted(utils_imports(UTILS / f"{name}.py") & science)
    assert not wrong, f"utils/{name}.py (infrastructure) imports the science module(s) {wrong}"


def test_the_import_reader_sees_every_form(tmp_path):
    src = tmp_path / "m.py"
    src.write_text(
        "from . import a, b\nfrom .c import d\nimport utils.e\nfrom utils import f\nfrom utils.g import h\n"
        "def later():\n    from . import i\n",
        encoding="utf-8",
    )
    assert utils_imports(src) == {"a", "b", "c", "e", "f", "g", "i"}
