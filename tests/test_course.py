"""Tests of utils.course: profiles, seeds, set-up (with a stand-in Keras, so that no backend is imported)."""

from __future__ import annotations

import json
import platform
import random
import sys
import types

import numpy as np
import pytest

from utils import course, report


class FakeKeras(types.ModuleType):
    """Stands in for ``keras``: records seeds; backend 'numpy' needs no framework."""

    def __init__(self):
        super().__init__("keras")
        self.__version__ = "9.9.9"
        self.seeds = []
        self.utils = types.SimpleNamespace(set_random_seed=self.seeds.append)
        self.backend = types.SimpleNamespace(backend=lambda: "numpy")


@pytest.fixture(autouse=True)
def restore_environment(monkeypatch):
    """setup() and seed_everything() set these variables; put them back after each test."""
    for name in ("PYTHONHASHSEED", "TF_CPP_MIN_LOG_LEVEL"):
        monkeypatch.setenv(name, "0")
        monkeypatch.delenv(name)


@pytest.fixture
def fake_keras(monkeypatch):
    fake = FakeKeras()
    monkeypatch.setitem(sys.modules, "keras", fake)
    return fake


def test_select_profile_returns_the_chosen_settings():
    fast, full = dict(epochs=2, n=100), dict(epochs=30, n=None)
    cfg = course.select_profile("fast", fast, full)
    assert (cfg.profile, cfg.epochs, cfg.n) == ("fast", 2, 100)
    cfg = course.select_profile("full", fast, full)
    assert (cfg.profile, cfg.epochs, cfg.n) == ("full", 30, None)


@pytest.mark.parametrize("profile", ["ful", "FAST", "", None])
def test_select_profile_bad_name(profile):
    with pytest.raises(ValueError) as info:
        course.select_profile(profile, {}, {})
    message = str(info.value)
    assert message.startswith("PROFILE must be one of ('fast', 'full')")
    assert repr(profile) in message and "parameters cell" in message


def test_select_profile_mismatched_keys():
    with pytest.raises(ValueError, match=r"different settings: \['batch', 'lr'\]"):
        course.select_profile("fast", dict(epochs=1, lr=0.1), dict(epochs=2, batch=32))


@pytest.mark.parametrize("key", ["profile", "seed"])
def test_select_profile_reserved_keys(key):
    with pytest.raises(ValueError, match=rf"\['{key}'\] are set by course.setup"):
        course.select_profile("fast", {key: 1}, {key: 2})


def draws():
    return np.random.rand(5).tolist(), random.random(), np.random.randint(0, 1000, 3).tolist()


def test_seed_everything_is_deterministic(monkeypatch):
    monkeypatch.setitem(sys.modules, "keras", None)  # as if Keras were not installed
    course.seed_everything(123)
    first = draws()
    course.seed_everything(123)
    assert draws() == first
    course.seed_everything(np.int64(124))
    assert draws() != first


def test_seed_everything_seeds_keras(fake_keras):
    course.seed_everything(np.int64(7))
    assert fake_keras.seeds == [7] and type(fake_keras.seeds[0]) is int
    course.seed_everything(8, with_keras=False)
    assert fake_keras.seeds == [7]


@pytest.mark.parametrize("seed", [-1, 1.5, "0", None, True, 2**32])
def test_seed_everything_rejects_bad_seeds(seed, fake_keras):
    with pytest.raises(ValueError, match="SEED must be an integer"):
        course.seed_everything(seed)
    assert fake_keras.seeds == []


def test_setup_without_keras(fake_keras, tmp_path, monkeypatch):
    record = tmp_path / "rec.json"
    monkeypatch.setenv(report.RECORD_ENV, str(record))
    cfg = course.setup("fast", 3, fast=dict(n=10), full=dict(n=1000), keras_needed=False)
    assert (cfg.profile, cfg.seed, cfg.n) == ("fast", 3, 10)
    assert fake_keras.seeds == []  # a chapter without Keras does not import it
    env = json.loads(record.read_text())["environment"]
    assert env == {
        "profile": "fast",
        "seed": 3,
        "python": platform.python_version(),
        "keras_backend": "not used",
        "machine": platform.machine(),
        "cpu_count": env["cpu_count"],
    }
    assert isinstance(env["cpu_count"], int) and env["cpu_count"] > 0


def test_setup_with_keras(fake_keras):
    cfg = course.setup("full", 5, fast=dict(n=1), full=dict(n=2))
    assert (cfg.profile, cfg.seed, cfg.n) == ("full", 5, 2)
    assert fake_keras.seeds == [5]
    env = report.current()["environment"]
    assert env["keras_backend"] == "numpy" and env["keras"] == "9.9.9" and env["devices"] == ["cpu"]
    assert env["profile"] == "full" and env["seed"] == 5


def test_setup_seeds_numpy(monkeypatch):
    monkeypatch.setitem(sys.modules, "keras", None)
    course.setup("fast", 11, keras_needed=False)
    first = draws()
    course.setup("fast", 11, keras_needed=False)
    assert draws() == first


@pytest.mark.parametrize(
    "kwargs, message",
    [
        (dict(profile="quick", seed=0), "PROFILE must be one of"),
        (dict(profile="fast", seed=-3), "SEED must be"),
        (dict(profile="fast", seed=0, fast=dict(a=1)), "different settings"),
    ],
)
def test_setup_errors_record_nothing(fake_keras, kwargs, message):
    with pytest.raises(ValueError, match=message):
        course.setup(**kwargs)
    assert report.current()["environment"] == {} and fake_keras.seeds == []


def test_devices_without_keras(monkeypatch):
    monkeypatch.setitem(sys.modules, "keras", None)
    assert course.devices() == ["cpu"]


def test_progress_is_silent_under_the_runner_and_in_scripts(monkeypatch):
    from utils import report

    monkeypatch.delenv("MEDIMG_PROGRESS", raising=False)
    monkeypatch.setenv(report.RECORD_ENV, "/tmp/record.json")
    assert not course.interactive() and course.fit_verbose() == 0
    items = [1, 2, 3]
    assert course.progress(items, desc="x") is items  # unchanged: nothing reaches the book
    monkeypatch.delenv(report.RECORD_ENV)
    assert not course.interactive()  # plain Python (pytest) has no interactive shell


def test_progress_can_be_forced(monkeypatch):
    monkeypatch.setenv("MEDIMG_PROGRESS", "1")
    assert course.interactive() and course.fit_verbose() == 1
    bar = course.progress(range(3), desc="bootstrap")
    assert list(bar) == [0, 1, 2] and bar is not None and not isinstance(bar, range)
    monkeypatch.setenv("MEDIMG_PROGRESS", "0")
    assert course.fit_verbose() == 0
