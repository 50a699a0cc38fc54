"""requirements.txt and environment.yml pin the same environment, and the venv is that environment."""

from __future__ import annotations

import importlib.metadata
import sys

import pytest
import yaml
from conftest import REPO_ROOT
from packaging.requirements import Requirement
from packaging.utils import canonicalize_name


def normalised(line: str) -> tuple[str, str, str]:
    req = Requirement(line)
    return canonicalize_name(req.name), str(req.specifier), str(req.marker or "")


def requirements_txt() -> list[str]:
    lines = []
    for raw in (REPO_ROOT / "requirements.txt").read_text(encoding="utf-8").splitlines():
        line = raw.split(" #", 1)[0].strip() if not raw.lstrip().startswith("#") else ""
        if line:
            lines.append(line)
    return lines


def environment_yml() -> dict:
    return yaml.safe_load((REPO_ROOT / "environment.yml").read_text(encoding="utf-8"))


def pip_section(env: dict) -> list[str]:
    sections = [d["pip"] for d in env["dependencies"] if isinstance(d, dict) and "pip" in d]
    assert len(sections) == 1, "environment.yml must have exactly one pip section"
    return [str(x) for x in sections[0]]


def test_requirements_parse_and_are_pinned():
    reqs = [Requirement(line) for line in requirements_txt()]
    assert reqs, "requirements.txt lists nothing"
    for req in reqs:
        specs = list(req.specifier)
        assert len(specs) == 1 and specs[0].operator == "==", f"{req} is not pinned with =="


def test_requirements_and_environment_yml_agree():
    txt = [normalised(line) for line in requirements_txt()]
    yml = [normalised(line) for line in pip_section(environment_yml())]
    assert len(txt) == len(set(txt)), "duplicate lines in requirements.txt"
    assert len(yml) == len(set(yml)), "duplicate lines in environment.yml"
    only_txt = sorted(set(txt) - set(yml))
    only_yml = sorted(set(yml) - set(txt))
    assert not only_txt and not only_yml, f"only in requirements.txt: {only_txt}; only in environment.yml: {only_yml}"


def test_environment_yml_pins_python_311():
    env = environment_yml()
    deps = [d for d in env["dependencies"] if isinstance(d, str)]
    pythons = [d for d in deps if d.replace(" ", "").startswith("python=") or d.strip() == "python"]
    assert [p.replace(" ", "") for p in pythons] in (["python=3.11"], ["python=3.11.*"]), pythons
    assert "pip" in deps
    assert env.get("name")


def test_the_running_python_is_311():
    assert sys.version_info[:2] == (3, 11)


@pytest.mark.parametrize("line", requirements_txt())
def test_installed_versions_match_the_pins(line):
    req = Requirement(line)
    if req.marker is not None and not req.marker.evaluate():
        pytest.skip(f"{req.name} is not for this platform ({req.marker})")
    try:
        installed = importlib.metadata.version(req.name)
    except importlib.metadata.PackageNotFoundError:
        pytest.fail(f"{req.name} is pinned in requirements.txt but not installed (make env)")
    assert req.specifier.contains(installed, prereleases=True), f"{req.name} {installed} installed, pinned {req}"


def test_every_declared_dependency_is_pinned_in_the_lock_and_the_pin_satisfies_it():
    import tomllib

    project = tomllib.loads((REPO_ROOT / "pyproject.toml").read_text(encoding="utf-8"))["project"]
    declared = list(project.get("dependencies", []))
    for extra in project.get("optional-dependencies", {}).values():
        declared += extra
    assert declared, "pyproject.toml declares no dependencies"
    pins = {}
    for line in requirements_txt():
        req = Requirement(line)
        pins.setdefault(canonicalize_name(req.name), []).append(req)
    for line in declared:
        req = Requirement(line)
        name = canonicalize_name(req.name)
        candidates = pins.get(name) or (pins.get("tensorflow-cpu") if name == "tensorflow" else None)
        assert candidates, f"pyproject.toml declares {req} but requirements.txt does not pin it"
        for pin in candidates:
            version = next(iter(pin.specifier)).version
            assert req.specifier.contains(version, prereleases=True), f"the pin {pin} does not satisfy {req}"


def test_make_test_runs_every_test_and_the_student_edition_on_jax():
    """`make test` deselects the student-edition run in the TensorFlow pass only to run it on JAX: nothing is lost."""
    import shutil
    import subprocess

    if shutil.which("make") is None:
        pytest.skip("make is not installed")
    plan = subprocess.run(["make", "-n", "test"], cwd=REPO_ROOT, capture_output=True, text=True, check=True).stdout
    runs = [line for line in plan.splitlines() if "-m pytest" in line]
    assert len(runs) == 3, runs
    tensorflow, jax_units, student = runs
    node = "tests/test_pipeline.py::test_the_student_edition_runs_top_to_bottom"
    assert "KERAS_BACKEND" not in tensorflow and f"--deselect {node}" in tensorflow
    assert "not slow" not in tensorflow, "the TensorFlow pass runs the slow tests too"
    assert "KERAS_BACKEND=jax" in jax_units and "tests/test_checks_ch2.py" in jax_units
    assert "KERAS_BACKEND=jax" in student and node in student and "--deselect" not in student
