"""Tests of utils.data: registry, resolution order, checksums, atomic downloads, loaders, CLI."""

from __future__ import annotations

import dataclasses
import functools
import hashlib
import io
import os
import pickle
import re
import shutil
import socket
import stat
import subprocess
import sys
import tarfile
import urllib.error
import urllib.request
import zipfile
from pathlib import Path

import numpy as np
import pytest
from conftest import BASE_META, REPO_ROOT, digests

from utils import data, report

REAL = data.load_registry()


def parts_in(folder: Path) -> list[Path]:
    """Temporary download files (``*.part``) anywhere under ``folder``."""
    return [p for p in folder.rglob("*") if p.name.endswith(".part")] if folder.exists() else []


def sha256(path: Path) -> str:
    return hashlib.sha256(Path(path).read_bytes()).hexdigest()


def corrupt(payload: bytes) -> bytes:
    """Same length, different bytes (so that only the checksum can tell)."""
    return bytes([payload[0] ^ 0xFF]) + payload[1:]


@pytest.fixture(autouse=True)
def sleeps(monkeypatch) -> list[float]:
    """Fast retries: the download back-off is recorded here instead of slept."""
    calls: list[float] = []
    monkeypatch.setattr(data, "RETRY_BASE_S", 0.01)
    monkeypatch.setattr(data, "_sleep", calls.append)
    return calls


@pytest.fixture
def user_cache(monkeypatch, tmp_path) -> Path:
    """``MEDIMG_CACHE_DIR`` unset, ``XDG_CACHE_HOME`` and ``HOME`` in ``tmp_path``: the default cache,
    never the real one; returns the folder it resolves to."""
    monkeypatch.delenv(data.CACHE_DIR_ENV)
    monkeypatch.setenv("HOME", str(tmp_path / "home"))
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "xdg"))
    monkeypatch.setattr(data, "LEGACY_CACHE_DIR", tmp_path / "clone" / "data" / "cache")  # not this clone's
    return tmp_path / "xdg" / "medimg-course"


# ---------------------------------------------------------------------------
# registry loading and validation
# ---------------------------------------------------------------------------

GOOD_FILE = {"path": "x/a.bin", "sha256": "a" * 64, "size": 3}


def test_load_registry_parses_entries(write_registry):
    reg = write_registry(
        {
            "alpha": {
                **BASE_META,
                "bibkey": "key2020",
                "task": "multi-class",
                "n_samples": {"train": 2},
                "files": [GOOD_FILE, {"path": "x/b.bin", "md5": "b" * 32, "size": 4}],
            },
            "beta": {
                **BASE_META,
                "pypi": "somepkg==1.0",
                "files": [{"path": "y/c.bin", "md5": "c" * 32, "member": "somepkg/data/c.bin"}],
            },
        },
        install=False,
    ).datasets
    assert sorted(reg) == ["alpha", "beta"]
    alpha = reg["alpha"]
    assert alpha.licence == "CC0" and alpha.homepage == "https://example.org/tiny" and alpha.bibkey == "key2020"
    assert alpha.extra == {"task": "multi-class", "n_samples": {"train": 2}}
    assert [f.path for f in alpha.files] == ["x/a.bin", "x/b.bin"]
    assert alpha.size == 7
    assert alpha.files[1].checksums() == {"md5": "b" * 32}
    assert reg["beta"].pypi == "somepkg==1.0" and reg["beta"].files[0].member == "somepkg/data/c.bin"
    assert reg["beta"].size is None  # a file of unknown size makes the total unknown


@pytest.mark.parametrize("key", ["title", "kind", "description", "licence", "citation", "homepage", "files"])
def test_registry_entry_missing_key(write_registry, key):
    entry = {**BASE_META, "files": [GOOD_FILE]}
    del entry[key]
    with pytest.raises(data.DataError, match=rf"'broken' lacks \['{key}'\]"):
        write_registry({"broken": entry})


def test_registry_file_without_checksum(write_registry):
    with pytest.raises(data.DataError, match=r"'x/a.bin' has no sha256 or md5"):
        write_registry({"nosum": {**BASE_META, "files": [{"path": "x/a.bin", "size": 3}]}})


@pytest.mark.parametrize(
    "algo, value", [("sha256", "a" * 63), ("sha256", "g" * 64), ("md5", "b" * 64), ("md5", "b" * 31)]
)
def test_registry_malformed_checksum(write_registry, algo, value):
    with pytest.raises(data.DataError, match=rf"malformed {algo}"):
        write_registry({"bad": {**BASE_META, "files": [{"path": "x/a.bin", algo: value}]}})


def test_registry_member_without_pypi(write_registry):
    with pytest.raises(data.DataError, match=r"'nopypi' has a 'member' but no 'pypi'"):
        write_registry({"nopypi": {**BASE_META, "files": [{**GOOD_FILE, "member": "pkg/data/a.bin"}]}})


@pytest.mark.parametrize(
    "files, message",
    [
        ([{**GOOD_FILE, "checksum": "abc"}], r"unknown file keys \['checksum'\]"),
        ([{"sha256": "a" * 64}], r"a file has no 'path'"),
        ([], r"at least one"),
        ([{**GOOD_FILE, "path": "../outside.bin"}], r"must be relative"),
        ([{**GOOD_FILE, "size": -1}], r"invalid size"),
    ],
)
def test_registry_bad_file_entries_raise_data_error(write_registry, files, message):
    with pytest.raises(data.DataError, match=message):
        write_registry({"bad": {**BASE_META, "files": files}})


def test_registry_entry_must_be_a_table(tmp_path):
    path = tmp_path / "r.toml"
    path.write_text('stray = "value"\n')
    with pytest.raises(data.DataError, match="must be a table"):
        data.load_registry(path)


def test_dataset_file_selection(write_registry):
    ds = write_registry(
        {
            "multi": {
                **BASE_META,
                "files": [
                    {"path": "a/same.bin", "sha256": "1" * 64},
                    {"path": "b/same.bin", "sha256": "2" * 64},
                    {"path": "b/other.bin", "sha256": "3" * 64},
                ],
            }
        }
    ).datasets["multi"]
    with pytest.raises(data.DataError, match=r"has 3 files; name one of"):
        ds.file()
    assert ds.file("other.bin").path == "b/other.bin"
    assert ds.file("b/same.bin").sha256 == "2" * 64  # the exact path wins over the shared file name
    assert ds.file("same.bin").path == "a/same.bin"
    with pytest.raises(data.DataError, match=r"has no file 'nope.bin'; its files are"):
        ds.file("nope.bin")


def test_unknown_dataset_error(tiny):
    with pytest.raises(data.UnknownDatasetError) as info:
        data.dataset("tinny")
    err = info.value
    assert isinstance(err, KeyError) and isinstance(err, data.DataError)
    text = str(err)
    assert text.startswith("unknown dataset 'tinny'")  # not the repr KeyError would print
    assert "known datasets: other, tiny" in text and "python -m utils.data list" in text


@pytest.mark.parametrize("typed", ["PneumoniaMNIST", "pneumonia-mnist", "pnuemoniamnist", " pneumoniamnist"])
def test_misspelt_dataset_name_suggests_the_registry_name(typed):
    with pytest.raises(data.UnknownDatasetError) as info:
        data.dataset(typed)
    text = str(info.value)
    assert text.startswith(f"unknown dataset {typed!r} (did you mean 'pneumoniamnist'")
    assert "known datasets: " in text


def test_suggest_prefers_the_case_insensitive_match():
    assert data.suggest("CIFAR10", REAL)[0] == "cifar10"
    assert data.suggest("cifar10jpeg", REAL)[0] == "cifar10-jpeg"
    assert data.suggest("PneumoniaMNIST", REAL) == ["pneumoniamnist"]
    assert data.suggest("xyzzy", REAL) == []


def test_unknown_dataset_without_a_close_name_has_no_suggestion(tiny):
    text = str(pytest.raises(data.UnknownDatasetError, data.dataset, "zzzzzz").value)
    assert "did you mean" not in text and text.startswith("unknown dataset 'zzzzzz'; known datasets: other, tiny")


def test_cli_fetch_suggests_a_misspelt_name(capsys, isolated_environment):
    assert data.main(["fetch", "PneumoniaMNIST"]) == 1
    err = capsys.readouterr().err
    assert "ERR PneumoniaMNIST: unknown dataset 'PneumoniaMNIST' (did you mean 'pneumoniamnist'?)" in err
    assert list(isolated_environment.iterdir()) == []


def test_registry_is_parsed_once(monkeypatch):
    monkeypatch.setattr(data, "_REGISTRY", None)
    first = data.registry()
    assert data.registry() is first
    assert set(first) == set(REAL)


# ---------------------------------------------------------------------------
# the real registry
# ---------------------------------------------------------------------------


@pytest.mark.parametrize("name", sorted(REAL))
def test_real_registry_entry_is_complete(name):
    ds = REAL[name]
    for key in ("title", "description", "licence", "citation", "homepage"):
        assert isinstance(getattr(ds, key), str) and getattr(ds, key).strip(), f"{name}: empty {key}"
    assert ds.homepage.startswith("https://"), ds.homepage
    assert ds.files
    for f in ds.files:
        assert f.checksums(), f"{name}/{f.path} has no checksum"
        if f.sha256 is not None:
            assert re.fullmatch(r"[0-9a-f]{64}", f.sha256), f"{name}/{f.path}: sha256 {f.sha256!r}"
        if f.md5 is not None:
            assert re.fullmatch(r"[0-9a-f]{32}", f.md5), f"{name}/{f.path}: md5 {f.md5!r}"
        assert not Path(f.path).is_absolute() and ".." not in Path(f.path).parts
        assert f.url or f.member or "mirror" in ds.title.lower(), f"{name}/{f.path} has no source"
        if f.url:
            assert f.url.startswith("https://"), f.url
        if f.member:
            assert re.fullmatch(r"[A-Za-z0-9_.-]+==[0-9][A-Za-z0-9.]*", ds.pypi or ""), ds.pypi


def test_real_registry_paths_are_unique():
    paths = [f.path for ds in REAL.values() for f in ds.files]
    assert len(paths) == len(set(paths))


def test_real_registry_bibkeys_are_in_references():
    bib = (REPO_ROOT / "book" / "references.bib").read_text(encoding="utf-8")
    keys = set(re.findall(r"^@\w+\{([^,\s]+),", bib, flags=re.MULTILINE))
    missing = {ds.name: ds.bibkey for ds in REAL.values() if ds.bibkey and ds.bibkey not in keys}
    assert not missing, f"bibkeys not in book/references.bib: {missing}"


def test_real_registry_used_by_names_notebooks():
    notebooks = {p.stem for p in (REPO_ROOT / "notebooks").glob("[0-9][0-9]_*.ipynb")}
    for ds in REAL.values():
        for nb in ds.extra.get("used_by", []):
            assert nb in notebooks, f"{ds.name}: used_by {nb!r} is not a notebook in notebooks/"


@pytest.mark.parametrize("name", sorted(n for n, d in REAL.items() if d.kind == "medmnist"))
def test_real_registry_medmnist_metadata(name):
    extra = REAL[name].extra
    assert set(extra["n_samples"]) == {"train", "val", "test"}
    assert all(isinstance(v, int) and v > 0 for v in extra["n_samples"].values())
    assert sorted(int(k) for k in extra["labels"]) == list(range(len(extra["labels"])))
    assert extra["n_channels"] in (1, 3)
    assert extra["task"] in {"multi-class", "binary-class", "ordinal-regression", "multi-label, binary-class"}


# ---------------------------------------------------------------------------
# resolution order
# ---------------------------------------------------------------------------


def put(root: Path, rel: str, payload: bytes) -> Path:
    path = root / rel
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(payload)
    return path


def test_data_dir_comes_first(tiny, tmp_path, monkeypatch, isolated_environment):
    mirror = tmp_path / "mirror"
    in_mirror = put(mirror, tiny.rel_path, tiny.payload)
    put(isolated_environment, tiny.rel_path, tiny.payload)
    monkeypatch.setenv(data.DATA_DIR_ENV, str(mirror))
    assert data.locate("tiny") == in_mirror.resolve()
    assert tiny.server.hits == []
    assert report.current()["datasets"] == [
        {
            "dataset": "tiny",
            "file": tiny.rel_path,
            "sha256": hashlib.sha256(tiny.payload).hexdigest(),
            "source": "data_dir",
        }
    ]


def test_cache_is_used_when_data_dir_lacks_the_file(tiny, tmp_path, monkeypatch, isolated_environment):
    (tmp_path / "mirror").mkdir()
    monkeypatch.setenv(data.DATA_DIR_ENV, str(tmp_path / "mirror"))
    cached = put(isolated_environment, tiny.rel_path, tiny.payload)
    assert data.locate("tiny") == cached
    assert tiny.server.hits == []
    assert report.current()["datasets"][0]["source"] == "cache"


def test_download_when_nowhere_local_then_cache(tiny, isolated_environment):
    path = data.locate("tiny")
    assert path == isolated_environment / tiny.rel_path
    assert path.read_bytes() == tiny.payload
    assert tiny.server.hits == ["/files/tiny.bin"]
    assert parts_in(isolated_environment) == []
    data._VERIFIED.clear()
    assert data.locate("tiny") == path  # second time: from the cache, no new request
    assert tiny.server.hits == ["/files/tiny.bin"]
    assert [d["source"] for d in report.current()["datasets"]] == ["download", "cache"]


def test_old_in_clone_cache_is_still_read_never_written(tiny, user_cache, tmp_path, monkeypatch):
    legacy = put(data.LEGACY_CACHE_DIR, tiny.rel_path, tiny.payload)
    assert data.locate("tiny") == legacy  # what an existing clone downloaded before is not fetched again
    assert tiny.server.hits == [] and report.current()["datasets"][0]["source"] == "cache"
    legacy.write_bytes(corrupt(tiny.payload))
    data._VERIFIED.clear()
    assert data.locate("tiny") == user_cache / tiny.rel_path  # a bad old copy is passed over, not deleted
    assert legacy.read_bytes() == corrupt(tiny.payload) and tiny.server.hits == ["/files/tiny.bin"]
    monkeypatch.setenv(data.CACHE_DIR_ENV, str(tmp_path / "explicit"))
    legacy.write_bytes(tiny.payload)
    assert data._legacy_cache() is None  # an explicit MEDIMG_CACHE_DIR is the only cache
    assert data.locate("tiny") == (tmp_path / "explicit" / tiny.rel_path).resolve()


def test_data_dir_that_is_not_a_directory(tiny, tmp_path, monkeypatch):
    monkeypatch.setenv(data.DATA_DIR_ENV, str(tmp_path / "nowhere"))
    with pytest.raises(data.DataError, match=r"MEDIMG_DATA_DIR=.*nowhere.* is not a directory"):
        data.locate("tiny")


def test_cache_dir_default_and_env(monkeypatch, tmp_path, user_cache):
    assert data.cache_dir() == data.default_cache_dir() == user_cache == tmp_path / "xdg" / "medimg-course"
    monkeypatch.setenv("XDG_CACHE_HOME", "relative/cache")  # the XDG rule: a relative value is ignored
    assert data.cache_dir() == tmp_path / "home" / ".cache" / "medimg-course"
    monkeypatch.delenv("XDG_CACHE_HOME")
    assert data.cache_dir() == tmp_path / "home" / ".cache" / "medimg-course"
    assert REPO_ROOT not in data.cache_dir().parents  # not inside the clone
    monkeypatch.setenv(data.CACHE_DIR_ENV, str(tmp_path / "mine"))  # MEDIMG_CACHE_DIR still overrides
    assert data.cache_dir() == (tmp_path / "mine").resolve()


def test_default_cache_is_shared_by_clones(tiny, user_cache, tmp_path, monkeypatch):
    path = data.locate("tiny")
    assert path == user_cache / tiny.rel_path and path.read_bytes() == tiny.payload
    assert tiny.server.hits == ["/files/tiny.bin"]
    data._VERIFIED.clear()
    monkeypatch.setattr(data, "REPO_ROOT", tmp_path / "another-clone")  # the cache does not depend on the clone
    assert data.locate("tiny") == path
    assert tiny.server.hits == ["/files/tiny.bin"]  # the second clone did not download it again


def test_default_cache_is_shared_by_clones_subprocess(user_cache, tmp_path):
    """A second clone (a copy of utils/ and the registry elsewhere) finds what this one cached."""
    ds = REAL["pydicom-samples"]
    data.fetch_from_pypi(ds, ds.files, data.cache_dir())  # from the installed pydicom: no network
    clone = tmp_path / "clone"
    shutil.copytree(REPO_ROOT / "utils", clone / "utils", ignore=shutil.ignore_patterns("__pycache__"))
    (clone / "data").mkdir()
    shutil.copy(REPO_ROOT / "data" / "registry.toml", clone / "data" / "registry.toml")
    env = {k: v for k, v in os.environ.items() if k not in (data.CACHE_DIR_ENV, data.DATA_DIR_ENV)}
    proc = subprocess.run(
        [sys.executable, "-m", "utils.data", "verify", "pydicom-samples"],
        cwd=clone,
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert f"ok      pydicom-samples: {user_cache / ds.files[0].path}" in proc.stdout
    assert not (clone / "data" / "cache").exists()


def test_corrupt_file_in_data_dir_raises_naming_it(tiny, tmp_path, monkeypatch, isolated_environment):
    mirror = tmp_path / "mirror"
    bad = put(mirror, tiny.rel_path, corrupt(tiny.payload))
    put(isolated_environment, tiny.rel_path, tiny.payload)  # a good cached copy does not hide it
    monkeypatch.setenv(data.DATA_DIR_ENV, str(mirror))
    with pytest.raises(data.ChecksumError) as info:
        data.locate("tiny")
    message = str(info.value)
    assert str(bad.resolve()) in message
    assert f"sha256 is {sha256(bad)}" in message and tiny.df.sha256 in message
    assert bad.read_bytes() == corrupt(tiny.payload), "the read-only mirror must not be touched"
    assert tiny.server.hits == []
    with pytest.raises(data.ChecksumError):  # is_available does not hide it either
        data.is_available("tiny")


def test_truncated_file_in_data_dir_names_size(tiny, tmp_path, monkeypatch):
    put(tmp_path / "mirror", tiny.rel_path, tiny.payload[:-10])
    monkeypatch.setenv(data.DATA_DIR_ENV, str(tmp_path / "mirror"))
    with pytest.raises(
        data.ChecksumError,
        match=rf"size is {len(tiny.payload) - 10} bytes, the registry pins "
        rf"{len(tiny.payload)}",
    ):
        data.locate("tiny")


def test_corrupt_cache_is_replaced_by_a_fresh_download(tiny, isolated_environment):
    cached = put(isolated_environment, tiny.rel_path, corrupt(tiny.payload))
    assert data.locate("tiny") == cached
    assert cached.read_bytes() == tiny.payload
    assert tiny.server.hits == ["/files/tiny.bin"]
    assert report.current()["datasets"][0]["source"] == "download"


def test_corrupt_cache_offline_is_deleted_and_reported(tiny, isolated_environment):
    cached = put(isolated_environment, tiny.rel_path, corrupt(tiny.payload))
    with pytest.raises(data.DatasetNotFoundError, match="cached copy was corrupt and has been deleted"):
        data.locate("tiny", download_ok=False)
    assert not cached.exists()
    assert tiny.server.hits == []


def test_download_ok_false_error_message(tiny, tmp_path, monkeypatch, isolated_environment):
    (tmp_path / "mirror").mkdir()
    monkeypatch.setenv(data.DATA_DIR_ENV, str(tmp_path / "mirror"))
    with pytest.raises(data.DatasetNotFoundError) as info:
        data.locate("tiny", download_ok=False)
    message = str(info.value)
    assert message.startswith("tiny/tiny/tiny.bin is not available offline")
    assert f"download {tiny.url}" in message
    assert str(isolated_environment / tiny.rel_path) in message
    assert str(tmp_path / "mirror" / tiny.rel_path) in message
    assert f"sha256 {tiny.df.sha256}" in message and f"md5 {tiny.df.md5}" in message
    assert tiny.server.hits == [] and not (isolated_environment / tiny.rel_path).exists()
    assert data.is_available("tiny") is False


def test_file_without_any_source_says_where_to_get_it(tiny):
    with pytest.raises(
        data.DatasetNotFoundError,
        match=r"other/other.bin is not available: get it from "
        r"https://example.org/tiny",
    ):
        data.locate("other")


def test_verify_file_memo_respects_the_pinned_values(tmp_path):
    path = put(tmp_path, "f.bin", b"abc")
    good = data.DataFile(path="f.bin", sha256=hashlib.sha256(b"abc").hexdigest())
    other = data.DataFile(path="f.bin", sha256=hashlib.sha256(b"abd").hexdigest())
    assert data.verify_file(path, good) == good.sha256
    with pytest.raises(data.ChecksumError):  # the memo of the first check must not answer for another pin
        data.verify_file(path, other)
    md5_only = data.DataFile(path="f.bin", md5=hashlib.md5(b"abc").hexdigest(), size=3)
    assert data.verify_file(path, md5_only) == good.sha256  # always returns the sha256


def test_file_digests_chunked(tmp_path, monkeypatch):
    monkeypatch.setattr(data, "CHUNK", 7)
    payload = os.urandom(100)
    path = put(tmp_path, "r.bin", payload)
    assert data.file_digests(path, ("sha256", "md5")) == {
        "sha256": hashlib.sha256(payload).hexdigest(),
        "md5": hashlib.md5(payload).hexdigest(),
    }


# ---------------------------------------------------------------------------
# atomic downloads against a local server
# ---------------------------------------------------------------------------


def test_download_success(tiny, tmp_path):
    old = os.umask(0o022)
    try:
        dest = data.download(tiny.url, tmp_path / "d" / "tiny.bin", tiny.df, progress=True)
    finally:
        os.umask(old)
    assert dest.read_bytes() == tiny.payload
    assert stat.S_IMODE(dest.stat().st_mode) == 0o644  # not mkstemp's 0600
    assert sorted(p.name for p in dest.parent.iterdir()) == ["tiny.bin"]


def test_download_checksum_mismatch_leaves_nothing(tiny, tmp_path):
    url = tiny.server.serve("files/bad.bin", corrupt(tiny.payload))
    dest = tmp_path / "d" / "tiny.bin"
    with pytest.raises(data.ChecksumError) as info:
        data.download(url, dest, tiny.df, progress=False)
    assert url in str(info.value) and str(dest) in str(info.value) and "sha256 is" in str(info.value)
    assert not dest.exists()
    assert list(dest.parent.iterdir()) == []


def test_failed_download_keeps_the_previous_file(tiny, tmp_path):
    dest = put(tmp_path, "d/tiny.bin", b"previous copy")
    url = tiny.server.serve("files/bad.bin", corrupt(tiny.payload))
    with pytest.raises(data.ChecksumError):
        data.download(url, dest, tiny.df, progress=False)
    assert dest.read_bytes() == b"previous copy"
    assert parts_in(tmp_path) == []


def test_download_cut_off_with_content_length(tiny, tmp_path):
    url = tiny.server.serve("files/cut.bin", tiny.payload, cut_after=1000)
    dest = tmp_path / "d" / "tiny.bin"
    with pytest.raises(data.DatasetNotFoundError, match=rf"closed after 1000 of {len(tiny.payload)} bytes"):
        data.download(url, dest, tiny.df, progress=False)
    assert not dest.exists() and list(dest.parent.iterdir()) == []


def test_download_cut_off_without_content_length(tiny, tmp_path):
    url = tiny.server.serve("files/cut.bin", tiny.payload, cut_after=1000, send_length=False)
    dest = tmp_path / "d" / "tiny.bin"
    with pytest.raises(data.ChecksumError, match=rf"size is 1000 bytes, the registry pins {len(tiny.payload)}"):
        data.download(url, dest, tiny.df, progress=False)
    assert not dest.exists() and list(dest.parent.iterdir()) == []


def test_download_404(tiny, tmp_path):
    url = tiny.server.url("files/missing.bin")
    dest = tmp_path / "d" / "tiny.bin"
    with pytest.raises(data.DatasetNotFoundError) as info:
        data.download(url, dest, tiny.df, progress=False)
    message = str(info.value)
    assert f"could not download {url}" in message and "404" in message
    assert f"put it at {dest}" in message and f"$MEDIMG_DATA_DIR/{tiny.rel_path}" in message
    assert not dest.exists() and parts_in(tmp_path) == []


def test_download_404_through_locate(tiny, write_registry, isolated_environment):
    url = tiny.server.url("files/gone.bin")
    write_registry({"gone": {**BASE_META, "files": [{"path": "g/gone.bin", "url": url, **digests(b"x")}]}})
    with pytest.raises(data.DatasetNotFoundError, match=re.escape(url)):
        data.locate("gone")
    assert not (isolated_environment / "g" / "gone.bin").exists() and parts_in(isolated_environment) == []
    assert report.current()["datasets"] == []


def test_download_connection_refused(tiny, tmp_path):
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    url = f"http://127.0.0.1:{port}/tiny.bin"
    with pytest.raises(data.DatasetNotFoundError, match=re.escape(url)):
        data.download(url, tmp_path / "d" / "tiny.bin", tiny.df, progress=False)
    assert list((tmp_path / "d").iterdir()) == []


def test_download_timeout(tiny, tmp_path):
    url = tiny.server.serve("files/slow.bin", tiny.payload, delay=1.0)
    with pytest.raises(data.DatasetNotFoundError, match=re.escape(url)):
        data.download(url, tmp_path / "d" / "tiny.bin", tiny.df, timeout=0.2, progress=False)
    assert list((tmp_path / "d").iterdir()) == []


# ---------------------------------------------------------------------------
# retries with exponential back-off
# ---------------------------------------------------------------------------


@pytest.mark.parametrize("failures", [[503, 503], ["reset", 500], ["cut", "cut"], [429, 502]])
def test_download_retries_transient_failures_then_succeeds(tiny, tmp_path, sleeps, capsys, failures):
    url = tiny.server.serve("files/flaky.bin", tiny.payload, fail_first=list(failures))
    dest = data.download(url, tmp_path / "d" / "tiny.bin", tiny.df, progress=False)
    assert dest.read_bytes() == tiny.payload
    assert tiny.server.hits == ["/files/flaky.bin"] * 3  # failed twice, then succeeded
    assert sleeps == [0.01, 0.02]  # exponential back-off from RETRY_BASE_S
    assert sorted(p.name for p in dest.parent.iterdir()) == ["tiny.bin"]
    err = capsys.readouterr().err
    assert "retrying in 0.01 s (try 2 of 4)" in err and "retrying in 0.02 s (try 3 of 4)" in err


def test_download_404_is_not_retried(tiny, tmp_path, sleeps):
    url = tiny.server.url("files/missing.bin")
    with pytest.raises(data.DatasetNotFoundError, match=r"HTTP Error 404") as info:
        data.download(url, tmp_path / "d" / "tiny.bin", tiny.df, progress=False)
    assert "gave up after" not in str(info.value)
    assert tiny.server.hits == ["/files/missing.bin"] and sleeps == []
    assert list((tmp_path / "d").iterdir()) == []


def test_download_checksum_mismatch_is_not_retried(tiny, tmp_path, sleeps):
    url = tiny.server.serve("files/bad.bin", corrupt(tiny.payload))
    with pytest.raises(data.ChecksumError):
        data.download(url, tmp_path / "d" / "tiny.bin", tiny.df, progress=False)
    assert tiny.server.hits == ["/files/bad.bin"] and sleeps == []
    assert list((tmp_path / "d").iterdir()) == []


def test_download_gives_up_after_the_last_try(tiny, tmp_path, sleeps):
    url = tiny.server.serve("files/down.bin", tiny.payload, fail_first=[500] * 10)
    dest = put(tmp_path, "d/tiny.bin", b"previous copy")
    with pytest.raises(data.DatasetNotFoundError, match=r"HTTP Error 500.*; gave up after 3 tries"):
        data.download(url, dest, tiny.df, progress=False, attempts=3)
    assert tiny.server.hits == ["/files/down.bin"] * 3 and sleeps == [0.01, 0.02]
    assert dest.read_bytes() == b"previous copy" and parts_in(tmp_path) == []


def test_download_unresolvable_host_is_not_retried(tiny, tmp_path, monkeypatch, sleeps):
    calls = []

    def no_dns(req, timeout):
        calls.append(req.full_url)
        raise urllib.error.URLError(socket.gaierror(-2, "Name or service not known"))

    monkeypatch.setattr(urllib.request, "urlopen", no_dns)
    with pytest.raises(data.DatasetNotFoundError, match=r"cannot resolve the host name .* is this machine online"):
        data.download("https://example.invalid/tiny.bin", tmp_path / "d" / "tiny.bin", tiny.df, progress=False)
    assert calls == ["https://example.invalid/tiny.bin"] and sleeps == []


def test_download_interrupted_during_the_back_off_leaves_nothing(tiny, tmp_path, monkeypatch):
    url = tiny.server.serve("files/flaky.bin", tiny.payload, fail_first=["cut"])

    def interrupt(seconds):
        raise KeyboardInterrupt

    monkeypatch.setattr(data, "_sleep", interrupt)
    with pytest.raises(KeyboardInterrupt):
        data.download(url, tmp_path / "d" / "tiny.bin", tiny.df, progress=False)
    assert list((tmp_path / "d").iterdir()) == []  # neither the file nor the half-written .part


def test_backoff_schedule(monkeypatch):
    monkeypatch.setattr(data, "RETRY_BASE_S", 1.5)
    monkeypatch.setattr(data, "RETRY_MAX_S", 10.0)
    assert [data._backoff(k) for k in (1, 2, 3, 4)] == [1.5, 3.0, 6.0, 10.0]
    assert data._backoff(1, retry_after=4) == 4.0  # a server's Retry-After wins when longer
    assert data._backoff(1, retry_after=3600) == 10.0  # but never past RETRY_MAX_S


@pytest.mark.parametrize(
    "exc, transient",
    [
        (ConnectionResetError(104, "Connection reset by peer"), True),
        (TimeoutError("timed out"), True),
        (urllib.error.URLError(TimeoutError("timed out")), True),
        (urllib.error.URLError(ConnectionRefusedError(111, "Connection refused")), True),
        (urllib.error.URLError(socket.gaierror(-3, "Temporary failure in name resolution")), False),
        (urllib.error.HTTPError("u", 503, "Service Unavailable", {}, None), True),
        (urllib.error.HTTPError("u", 429, "Too Many Requests", {"Retry-After": "7"}, None), True),
        (urllib.error.HTTPError("u", 404, "Not Found", {}, None), False),
        (urllib.error.HTTPError("u", 403, "Forbidden", {}, None), False),
        (OSError(28, "No space left on device"), False),
    ],
)
def test_transient_errors_are_told_apart(exc, transient):
    failure = data._classify(exc)
    assert failure.transient is transient
    if isinstance(exc, urllib.error.HTTPError) and exc.code == 429:
        assert failure.retry_after == 7.0


def test_locate_retries_and_records_the_download(tiny, write_registry, isolated_environment, sleeps):
    url = tiny.server.serve("files/flaky.bin", tiny.payload, fail_first=[503, "reset"])
    write_registry({"flaky": {**BASE_META, "files": [{"path": "f/tiny.bin", "url": url, **digests(tiny.payload)}]}})
    path = data.locate("flaky")
    assert path == isolated_environment / "f" / "tiny.bin" and path.read_bytes() == tiny.payload
    assert len(tiny.server.hits) == 3 and len(sleeps) == 2
    assert report.current()["datasets"][0]["source"] == "download"


# ---------------------------------------------------------------------------
# files inside PyPI distributions
# ---------------------------------------------------------------------------


def no_pip(*args, **kwargs):
    raise AssertionError("pip must not be called when the distribution is installed")


def test_fetch_from_pypi_uses_the_installed_distribution(tmp_path, monkeypatch):
    monkeypatch.setattr(data, "_pip_download", no_pip)
    ds = REAL["pydicom-samples"]
    data.fetch_from_pypi(ds, ds.files, tmp_path)
    for f in ds.files:
        path = tmp_path / f.path
        assert sha256(path) == f.sha256 and path.stat().st_size == f.size
    assert parts_in(tmp_path) == []


def test_fetch_from_pypi_checksum_mismatch(tmp_path, monkeypatch):
    monkeypatch.setattr(data, "_pip_download", no_pip)
    ds = REAL["pydicom-samples"]
    wrong = data.DataFile(path="pydicom/CT_small.dcm", member=ds.files[0].member, sha256="0" * 64)
    with pytest.raises(data.ChecksumError, match=r"CT_small.dcm from the installed pydicom==3.0.2"):
        data.fetch_from_pypi(ds, [wrong], tmp_path)
    assert not (tmp_path / wrong.path).exists() and parts_in(tmp_path) == []


def test_locate_through_pypi(write_registry, monkeypatch, isolated_environment):
    monkeypatch.setattr(data, "_pip_download", no_pip)
    ct = REAL["pydicom-samples"].file("CT_small.dcm")
    write_registry(
        {
            "dicom": {
                **BASE_META,
                "pypi": "pydicom==3.0.2",
                "files": [{"path": "p/CT.dcm", "member": ct.member, "sha256": ct.sha256, "size": ct.size}],
            }
        }
    )
    path = data.locate("dicom")
    assert path == isolated_environment / "p" / "CT.dcm" and sha256(path) == ct.sha256
    assert report.current()["datasets"][0]["source"] == "pypi"
    assert data.sample("dicom", "CT.dcm") == path


def make_wheel(folder: Path, members: dict[str, bytes]) -> Path:
    wheel = folder / "fakepkg-9.9-py3-none-any.whl"
    with zipfile.ZipFile(wheel, "w") as zf:
        for name, payload in members.items():
            zf.writestr(name, payload)
    return wheel


def make_sdist(folder: Path, members: dict[str, bytes]) -> Path:
    sdist = folder / "fakepkg-9.9.tar.gz"
    with tarfile.open(sdist, "w:gz") as tf:
        for name, payload in members.items():
            info = tarfile.TarInfo(f"fakepkg-9.9/{name}")
            info.size = len(payload)
            tf.addfile(info, io.BytesIO(payload))
    return sdist


@pytest.mark.parametrize("maker", [make_wheel, make_sdist])
def test_fetch_from_pypi_reads_a_downloaded_archive(tmp_path, monkeypatch, write_registry, maker):
    payload = b"a sample file inside a distribution"
    calls = []

    def fake_pip_download(spec, workdir):
        calls.append(spec)
        return maker(workdir, {"fakepkg/data/s.bin": payload, "fakepkg/__init__.py": b""})

    monkeypatch.setattr(data, "_pip_download", fake_pip_download)
    ds = write_registry(
        {
            "fake": {
                **BASE_META,
                "pypi": "fakepkg==9.9",
                "files": [{"path": "fake/s.bin", "member": "fakepkg/data/s.bin", **digests(payload)}],
            }
        }
    ).datasets["fake"]
    data.fetch_from_pypi(ds, ds.files, tmp_path / "out")
    assert (tmp_path / "out" / "fake" / "s.bin").read_bytes() == payload
    assert calls == ["fakepkg==9.9"]


def test_fetch_from_pypi_missing_member(tmp_path, monkeypatch, write_registry):
    monkeypatch.setattr(data, "_pip_download", lambda spec, workdir: make_wheel(workdir, {"other": b""}))
    ds = write_registry(
        {
            "fake": {
                **BASE_META,
                "pypi": "fakepkg==9.9",
                "files": [{"path": "fake/s.bin", "member": "fakepkg/data/s.bin", **digests(b"x")}],
            }
        }
    ).datasets["fake"]
    with pytest.raises(data.DatasetNotFoundError, match=r"has no member 'fakepkg/data/s.bin'"):
        data.fetch_from_pypi(ds, ds.files, tmp_path / "out")
    assert not (tmp_path / "out" / "fake" / "s.bin").exists()


def test_installed_member_checks_the_version():
    member = REAL["pydicom-samples"].files[0].member
    assert data._installed_member("pydicom==3.0.2", member).is_file()
    assert data._installed_member("pydicom", member).is_file()
    assert data._installed_member("pydicom==0.0.1", member) is None
    assert data._installed_member("no-such-distribution-xyz==1.0", member) is None
    assert data._installed_member("pydicom==3.0.2", "pydicom/no/such/file.dcm") is None


# ---------------------------------------------------------------------------
# MedMNIST
# ---------------------------------------------------------------------------


def medmnist_entry(n, path="medmnist/fakemnist.npz", payload=b"", task="multi-class", labels=3):
    return {
        **BASE_META,
        "kind": "medmnist",
        "task": task,
        "n_channels": 1,
        "n_samples": dict(zip(("train", "val", "test"), n)),
        "labels": {str(i): f"class {i}" for i in range(labels)},
        "files": [{"path": path, **digests(payload)}],
    }


def fake_medmnist(tmp_path, n=(6, 2, 3), drop=None) -> bytes:
    rng = np.random.default_rng(0)
    arrays = {}
    for split, k in zip(("train", "val", "test"), n):
        arrays[f"{split}_images"] = rng.integers(0, 256, (k, 28, 28), dtype=np.uint8)
        arrays[f"{split}_labels"] = (np.arange(k) % 3).astype(np.uint8).reshape(-1, 1)
    arrays.pop(drop, None)
    buf = io.BytesIO()
    np.savez(buf, **arrays)
    return buf.getvalue()


def test_load_medmnist_on_a_fake_file(tmp_path, monkeypatch, write_registry):
    payload = fake_medmnist(tmp_path)
    put(tmp_path / "mirror", "medmnist/fakemnist.npz", payload)
    monkeypatch.setenv(data.DATA_DIR_ENV, str(tmp_path / "mirror"))
    write_registry({"fakemnist": medmnist_entry((6, 2, 3), payload=payload)})
    mm = data.load_medmnist("fakemnist")
    assert mm.n_classes == 3 and mm.task == "multi-class" and mm.labels[2] == "class 2"
    assert {s: mm.x[s].shape for s in data.MEDMNIST_SPLITS} == {
        "train": (6, 28, 28),
        "val": (2, 28, 28),
        "test": (3, 28, 28),
    }
    assert mm.y["train"].dtype == np.int64 and mm.y["train"].tolist() == [0, 1, 2, 0, 1, 2]


def test_load_medmnist_keeps_multilabel_shape(tmp_path, monkeypatch, write_registry):
    payload = fake_medmnist(tmp_path)
    put(tmp_path / "mirror", "medmnist/fakemnist.npz", payload)
    monkeypatch.setenv(data.DATA_DIR_ENV, str(tmp_path / "mirror"))
    write_registry({"fakemnist": medmnist_entry((6, 2, 3), payload=payload, task="multi-label, binary-class")})
    assert data.load_medmnist("fakemnist").y["val"].shape == (2, 1)


def test_load_medmnist_errors(tmp_path, monkeypatch, write_registry):
    short = fake_medmnist(tmp_path, drop="val_labels")
    wrong_count = fake_medmnist(tmp_path, n=(5, 2, 3))
    put(tmp_path / "mirror", "medmnist/short.npz", short)
    put(tmp_path / "mirror", "medmnist/count.npz", wrong_count)
    monkeypatch.setenv(data.DATA_DIR_ENV, str(tmp_path / "mirror"))
    write_registry(
        {
            "short": medmnist_entry((6, 2, 3), "medmnist/short.npz", short),
            "count": medmnist_entry((6, 2, 3), "medmnist/count.npz", wrong_count),
            "notmnist": {**BASE_META, "files": [{"path": "n.bin", "sha256": "0" * 64}]},
        }
    )
    with pytest.raises(data.DataError, match=r"lacks arrays \['val_labels'\]"):
        data.load_medmnist("short")
    with pytest.raises(data.DataError, match=r"split train has 5 images, the registry says 6"):
        data.load_medmnist("count")
    with pytest.raises(data.DataError, match=r"'notmnist' is not a MedMNIST flag"):
        data.load_medmnist("notmnist")


MIRROR_FLAGS = ["breastmnist", "pneumoniamnist", "retinamnist"]


@pytest.mark.parametrize("flag", MIRROR_FLAGS)
def test_real_medmnist_on_the_mirror(flag, mirror_dir, monkeypatch):
    if not (mirror_dir / REAL[flag].files[0].path).is_file():
        pytest.skip(f"{flag} is not in the mirror {mirror_dir}")
    monkeypatch.setenv(data.DATA_DIR_ENV, str(mirror_dir))
    mm = data.load_medmnist(flag)
    extra = REAL[flag].extra
    assert mm.path == mirror_dir / REAL[flag].files[0].path
    image_shape = (28, 28) if extra["n_channels"] == 1 else (28, 28, 3)
    for split in data.MEDMNIST_SPLITS:
        n = extra["n_samples"][split]
        assert mm.x[split].shape == (n, *image_shape) and mm.x[split].dtype == np.uint8
        assert mm.y[split].shape == (n,) and mm.y[split].dtype == np.int64
        assert mm.y[split].min() >= 0 and mm.y[split].max() < mm.n_classes
    assert set(np.unique(mm.y["train"])) == set(range(mm.n_classes))  # every class occurs in training
    assert 0 < mm.x["train"].mean() < 255
    assert report.current()["datasets"][0]["source"] == "data_dir"


# ---------------------------------------------------------------------------
# CIFAR-10
# ---------------------------------------------------------------------------


def cifar_batch(n: int, first_label: int) -> dict:
    rows = np.zeros((n, 3072), dtype=np.uint8)
    for i in range(n):
        rows[i, :1024], rows[i, 1024:2048], rows[i, 2048:] = 10 + i, 100 + i, 200 + i  # R, G, B planes
    rows[:, 1] = 77  # red value of pixel (row 0, column 1)
    rows[:, 1024 + 32] = 55  # green value of pixel (row 1, column 0)
    return {b"batch_label": b"x", b"labels": [(first_label + i) % 10 for i in range(n)], b"data": rows}


def make_cifar_archive(path: Path, train_batches=((3, 0), (2, 5)), test=(4, 1)) -> Path:
    with tarfile.open(path, "w:gz") as tf:

        def add(name, obj):
            payload = pickle.dumps(obj) if not isinstance(obj, bytes) else obj
            info = tarfile.TarInfo(f"cifar-10-batches-py/{name}")
            info.size = len(payload)
            tf.addfile(info, io.BytesIO(payload))

        add("readme.html", b"<html></html>")
        add("batches.meta", {b"label_names": [c.encode() for c in data.CIFAR10_CLASSES]})
        # added out of order on purpose: the loader sorts by name
        for i, (n, first) in reversed(list(enumerate(train_batches, 1))):
            add(f"data_batch_{i}", cifar_batch(n, first))
        if test:
            add("test_batch", cifar_batch(*test))
    return path


def test_cifar10_from_archive(tmp_path):
    x_train, y_train, x_test, y_test = data._cifar10_from_archive(make_cifar_archive(tmp_path / "c.tar.gz"))
    assert x_train.shape == (5, 32, 32, 3) and x_test.shape == (4, 32, 32, 3)
    assert x_train.dtype == np.uint8 and y_train.dtype == np.int64
    assert y_train.tolist() == [0, 1, 2, 5, 6]  # data_batch_1 then data_batch_2
    assert y_test.tolist() == [1, 2, 3, 4]
    assert x_train[1, 5, 5].tolist() == [11, 101, 201]  # channels last
    assert x_train[0, 0, 1, 0] == 77 and x_train[0, 1, 0, 1] == 55  # row-major within each plane


def test_cifar10_archive_without_batches(tmp_path):
    with pytest.raises(data.DataError, match=r"has no test batches"):
        data._cifar10_from_archive(make_cifar_archive(tmp_path / "c.tar.gz", test=None))


def make_jpeg_zip(path: Path, per_class=(2, 1), classes=data.CIFAR10_CLASSES, extra=None) -> Path:
    from PIL import Image

    with zipfile.ZipFile(path, "w") as zf:
        zf.writestr("cifar10-jpeg/README.md", "not an image")
        for split, n in zip(("train", "test"), per_class):
            for c, cls in enumerate(classes):
                for k in range(n):
                    buf = io.BytesIO()
                    Image.new("RGB", (32, 32), (20 * c, 100 + 50 * k, 250 - 20 * c)).save(buf, "JPEG", quality=95)
                    zf.writestr(f"cifar10-jpeg/{split}/{cls}/{k:04d}.jpg", buf.getvalue())
        for name in extra or []:
            zf.writestr(name, b"")
    return path


def test_cifar10_from_jpeg_zip(tmp_path, isolated_environment):
    path = make_jpeg_zip(tmp_path / "cifar10-jpeg.zip")
    x_train, y_train, x_test, y_test = data._cifar10_from_jpeg_zip(path, "f" * 64)
    assert x_train.shape == (20, 32, 32, 3) and x_test.shape == (10, 32, 32, 3)
    assert x_train.dtype == np.uint8 and y_train.dtype == np.int64
    assert np.bincount(y_train).tolist() == [2] * 10 and y_test.tolist() == list(range(10))
    for img, label in zip(x_train, y_train):  # the class folder gives the label
        assert abs(int(img[16, 16, 0]) - 20 * label) <= 4 and abs(int(img[16, 16, 2]) - (250 - 20 * label)) <= 4
    derived = isolated_environment / "derived" / f"cifar10-jpeg-{'f' * 16}.npz"
    assert derived.is_file() and parts_in(isolated_environment) == []
    path.unlink()  # the second call reads the decoded arrays from the cache
    again = data._cifar10_from_jpeg_zip(path, "f" * 64)
    for a, b in zip(again, (x_train, y_train, x_test, y_test)):
        np.testing.assert_array_equal(a, b)


def test_cifar10_jpeg_zip_with_unexpected_member(tmp_path):
    path = make_jpeg_zip(tmp_path / "z.zip", per_class=(1, 1), extra=["cifar10-jpeg/train/unicorn/0000.jpg"])
    with pytest.raises(data.DataError, match=r"unexpected member 'cifar10-jpeg/train/unicorn/0000.jpg'"):
        data._cifar10_from_jpeg_zip(path, "e" * 64)


def test_cifar10_count_check(tmp_path):
    arrays = (
        np.zeros((5, 32, 32, 3), np.uint8),
        np.zeros(5, np.int64),
        np.zeros((2, 32, 32, 3), np.uint8),
        np.zeros(2, np.int64),
    )
    with pytest.raises(data.DataError, match=r"expected 50000/10000 images and as many labels, found 5/2"):
        data._cifar10_checked(arrays, tmp_path / "c", "official archive")
    out = data._cifar10_checked(arrays, tmp_path / "c", "JPEG mirror", expected=(5, 2))
    assert isinstance(out, data.CIFAR10) and out.copy == "JPEG mirror" and out.classes == data.CIFAR10_CLASSES
    with pytest.raises(data.DataError, match=r"4/2 labels"):
        data._cifar10_checked((arrays[0], arrays[1][:4], *arrays[2:]), tmp_path / "c", "x", expected=(5, 2))


def cifar_registry(write_registry, archive: bytes, jpeg: bytes, url=None):
    arch = {"path": "cifar10/cifar-10-python.tar.gz", **digests(archive)}
    if url:
        arch["url"] = url
    write_registry(
        {
            "cifar10": {**BASE_META, "kind": "cifar10", "files": [arch]},
            "cifar10-jpeg": {
                **BASE_META,
                "kind": "cifar10",
                "stands_in_for": "cifar10",
                "files": [{"path": "cifar10/cifar10-jpeg.zip", **digests(jpeg)}],
            },
        }
    )


def test_load_cifar10_prefers_the_official_archive(tmp_path, monkeypatch, write_registry, isolated_environment):
    archive = make_cifar_archive(tmp_path / "a.tar.gz").read_bytes()
    jpeg = make_jpeg_zip(tmp_path / "j.zip", per_class=(1, 1)).read_bytes()
    cifar_registry(write_registry, archive, jpeg)
    put(tmp_path / "mirror", "cifar10/cifar10-jpeg.zip", jpeg)
    put(isolated_environment, "cifar10/cifar-10-python.tar.gz", archive)
    monkeypatch.setenv(data.DATA_DIR_ENV, str(tmp_path / "mirror"))
    monkeypatch.setattr(data, "_cifar10_checked", functools.partial(data._cifar10_checked, expected=(5, 4)))
    out = data.load_cifar10()
    assert out.copy == "official archive" and out.x_train.shape == (5, 32, 32, 3)
    assert out.path == isolated_environment / "cifar10/cifar-10-python.tar.gz"


def test_load_cifar10_falls_back_to_the_jpeg_mirror(tmp_path, monkeypatch, write_registry, http_server):
    archive = make_cifar_archive(tmp_path / "a.tar.gz").read_bytes()
    jpeg = make_jpeg_zip(tmp_path / "j.zip", per_class=(1, 1)).read_bytes()
    cifar_registry(write_registry, archive, jpeg, url=http_server.serve("cifar.tar.gz", archive))
    put(tmp_path / "mirror", "cifar10/cifar10-jpeg.zip", jpeg)
    monkeypatch.setenv(data.DATA_DIR_ENV, str(tmp_path / "mirror"))
    monkeypatch.setattr(data, "_cifar10_checked", functools.partial(data._cifar10_checked, expected=(10, 10)))
    out = data.load_cifar10()
    assert out.copy == "JPEG mirror" and out.x_test.shape == (10, 32, 32, 3)
    assert http_server.hits == []  # the mirror is used; the official archive is not downloaded
    monkeypatch.setattr(data, "_cifar10_checked", original_checked)
    with pytest.raises(data.DataError, match="expected 50000/10000"):  # the real count check is in force
        data.load_cifar10()


original_checked = data._cifar10_checked


def test_load_cifar10_downloads_the_official_archive(tmp_path, monkeypatch, write_registry, http_server):
    archive = make_cifar_archive(tmp_path / "a.tar.gz").read_bytes()
    cifar_registry(write_registry, archive, b"no jpeg", url=http_server.serve("cifar.tar.gz", archive))
    monkeypatch.setattr(data, "_cifar10_checked", functools.partial(data._cifar10_checked, expected=(5, 4)))
    assert data.load_cifar10().copy == "official archive"
    assert http_server.hits == ["/cifar.tar.gz"]


OFFICIAL_LAYOUT = dict(train_batches=((2, 0), (2, 2), (2, 4), (2, 6), (2, 8)), test=(3, 1))  # data_batch_1..5


def real_cifar_entries_served_locally(monkeypatch, tmp_path, http_server, fail_first=()):
    """The real registry's two CIFAR-10 entries as the course's registry, with one test-only override:
    the official archive's URL, size and checksums point at a tiny archive in the official python
    layout (``cifar-10-batches-py/data_batch_1..5``, ``test_batch``) served on 127.0.0.1.
    The JPEG copy keeps its real entry: mirror-only, standing in for ``cifar10``."""
    archive = make_cifar_archive(tmp_path / "cifar-10-python.tar.gz", **OFFICIAL_LAYOUT).read_bytes()
    with tarfile.open(tmp_path / "cifar-10-python.tar.gz") as tf:
        assert sorted(Path(n).name for n in tf.getnames()) == [
            "batches.meta",
            *(f"data_batch_{i}" for i in range(1, 6)),
            "readme.html",
            "test_batch",
        ]
    url = http_server.serve("~kriz/cifar-10-python.tar.gz", archive, fail_first=list(fail_first))
    official = REAL["cifar10"]
    assert official.files[0].url.endswith("/cifar-10-python.tar.gz")
    pinned = digests(archive)
    served = dataclasses.replace(
        official.files[0], url=url, size=pinned["size"], sha256=pinned["sha256"], md5=pinned["md5"]
    )
    monkeypatch.setattr(
        data,
        "_REGISTRY",
        {"cifar10": dataclasses.replace(official, files=(served,)), "cifar10-jpeg": REAL["cifar10-jpeg"]},
    )
    monkeypatch.setattr(data, "_cifar10_checked", functools.partial(data._cifar10_checked, expected=(10, 3)))
    return url


@pytest.mark.parametrize("with_empty_mirror", [False, True])
def test_make_data_without_a_mirror_fetches_the_official_cifar10(
    tmp_path, monkeypatch, http_server, capsys, isolated_environment, sleeps, with_empty_mirror
):
    """The newcomer's path: `make data` (fetch --used) with no mirror, then chapter 2's load_cifar10."""
    real_cifar_entries_served_locally(monkeypatch, tmp_path, http_server, fail_first=[503])
    if with_empty_mirror:  # a data directory that lacks the JPEG copy behaves the same
        (tmp_path / "mirror").mkdir()
        monkeypatch.setenv(data.DATA_DIR_ENV, str(tmp_path / "mirror"))
    todo, skipped = data.fetch_plan(["cifar10", "cifar10-jpeg"])
    assert todo == ["cifar10"] and list(skipped) == ["cifar10-jpeg"]

    assert data.main(["fetch", "--used"]) == 0
    out = capsys.readouterr().out
    skip_lines = [line for line in out.splitlines() if line.startswith("skip ")]
    assert len(skip_lines) == 1 and skip_lines[0].startswith("skip cifar10-jpeg: mirror-only copy")
    assert "the official 'cifar10' is used instead" in skip_lines[0]
    cached = isolated_environment / "cifar10" / "cifar-10-python.tar.gz"
    assert f"ok  cifar10: {cached}" in out
    assert "1 of 2 datasets fetched, 1 skipped" in out
    assert http_server.hits == ["/~kriz/cifar-10-python.tar.gz"] * 2 and sleeps == [0.01]  # one 503, retried
    assert parts_in(isolated_environment) == []

    data._VERIFIED.clear()
    report.reset()
    cifar = data.load_cifar10()  # chapter 2: reads the fetched official archive, no new download
    assert cifar.copy == "official archive" and cifar.path == cached
    assert cifar.x_train.shape == (10, 32, 32, 3) and cifar.x_test.shape == (3, 32, 32, 3)
    assert cifar.y_train.tolist() == list(range(10)) and cifar.y_test.tolist() == [1, 2, 3]
    assert len(http_server.hits) == 2
    assert report.current()["datasets"] == [
        {"dataset": "cifar10", "file": "cifar10/cifar-10-python.tar.gz", "sha256": sha256(cached), "source": "cache"}
    ]


def test_load_cifar10_without_a_mirror_downloads_the_official_archive(
    tmp_path, monkeypatch, http_server, isolated_environment
):
    """Chapter 2 run without `make data` first: the loader itself downloads and verifies the archive."""
    real_cifar_entries_served_locally(monkeypatch, tmp_path, http_server)
    cifar = data.load_cifar10()
    assert cifar.copy == "official archive" and cifar.path == isolated_environment / "cifar10/cifar-10-python.tar.gz"
    assert http_server.hits == ["/~kriz/cifar-10-python.tar.gz"]
    assert report.current()["datasets"][0]["source"] == "download"


def test_load_cifar10_rejects_a_served_archive_that_is_not_the_pinned_one(
    tmp_path, monkeypatch, http_server, isolated_environment
):
    url = real_cifar_entries_served_locally(monkeypatch, tmp_path, http_server)
    other = make_cifar_archive(tmp_path / "other.tar.gz", train_batches=((2, 1),) * 5, test=(3, 0))
    http_server.serve("~kriz/cifar-10-python.tar.gz", other.read_bytes())
    with pytest.raises(data.ChecksumError, match=re.escape(url)):
        data.load_cifar10()
    assert not (isolated_environment / "cifar10" / "cifar-10-python.tar.gz").exists()
    assert parts_in(isolated_environment) == [] and len(http_server.hits) == 1  # not retried


def test_fetch_used_with_the_jpeg_mirror_skips_the_official_archive(
    tmp_path, monkeypatch, write_registry, http_server, capsys
):
    archive = make_cifar_archive(tmp_path / "a.tar.gz").read_bytes()
    jpeg = make_jpeg_zip(tmp_path / "j.zip", per_class=(1, 1)).read_bytes()
    url = http_server.serve("cifar.tar.gz", archive)
    write_registry(
        {
            "cifar10": {
                **BASE_META,
                "kind": "cifar10",
                "used_by": ["02_cnn_classification"],
                "files": [{"path": "cifar10/cifar-10-python.tar.gz", "url": url, **digests(archive)}],
            },
            "cifar10-jpeg": {
                **BASE_META,
                "kind": "cifar10",
                "used_by": ["02_cnn_classification"],
                "stands_in_for": "cifar10",
                "files": [{"path": "cifar10/cifar10-jpeg.zip", **digests(jpeg)}],
            },
            "unused": {**BASE_META, "files": [{"path": "u/u.bin", "sha256": "0" * 64}]},
        }
    )
    in_mirror = put(tmp_path / "mirror", "cifar10/cifar10-jpeg.zip", jpeg)
    monkeypatch.setenv(data.DATA_DIR_ENV, str(tmp_path / "mirror"))
    assert data.main(["fetch", "--used"]) == 0
    out = capsys.readouterr().out
    assert "skip cifar10: the local 'cifar10-jpeg' stands in for it" in out
    assert f"ok  cifar10-jpeg: {in_mirror.resolve()}" in out and "unused" not in out
    assert http_server.hits == []  # what the chapter reads is the mirror's copy: nothing to download
    monkeypatch.setattr(data, "_cifar10_checked", functools.partial(data._cifar10_checked, expected=(10, 10)))
    assert data.load_cifar10().copy == "JPEG mirror"
    assert data.main(["fetch", "cifar10"]) == 0  # named explicitly, the official archive is fetched anyway
    assert http_server.hits == ["/cifar.tar.gz"]


@pytest.mark.slow
def test_real_cifar10_jpeg_mirror(mirror_dir, monkeypatch):
    if not (mirror_dir / "cifar10" / "cifar10-jpeg.zip").is_file():
        pytest.skip(f"the mirror {mirror_dir} has no cifar10/cifar10-jpeg.zip")
    monkeypatch.setenv(data.DATA_DIR_ENV, str(mirror_dir))
    out = data.load_cifar10()
    assert out.copy == "JPEG mirror"
    assert out.x_train.shape == (50000, 32, 32, 3) and out.x_test.shape == (10000, 32, 32, 3)
    assert out.x_train.dtype == np.uint8 and out.y_train.dtype == np.int64
    assert np.bincount(out.y_train, minlength=10).tolist() == [5000] * 10
    assert np.bincount(out.y_test, minlength=10).tolist() == [1000] * 10
    means = out.x_train.reshape(-1, 3).mean(axis=0) / 255  # published CIFAR-10 channel means
    np.testing.assert_allclose(means, [0.4914, 0.4822, 0.4465], atol=0.01)


# ---------------------------------------------------------------------------
# command line
# ---------------------------------------------------------------------------


def test_cli_list(tiny, capsys, isolated_environment):
    put(isolated_environment, tiny.rel_path, tiny.payload)
    assert data.main(["list", "-v"]) == 0
    out = capsys.readouterr().out
    assert re.search(r"^tiny\s+0\.0 MB\s+available\s+Tiny test dataset$", out, re.MULTILINE), out
    assert re.search(r"^other\s+unknown\s+missing\s+Mirror-only file$", out, re.MULTILINE), out
    assert "licence: CC0" in out and "cite: The test suite" in out
    assert tiny.server.hits == []


def test_cli_list_shows_a_corrupt_copy(tiny, tmp_path, monkeypatch, capsys):
    put(tmp_path / "mirror", tiny.rel_path, corrupt(tiny.payload))
    monkeypatch.setenv(data.DATA_DIR_ENV, str(tmp_path / "mirror"))
    assert data.main(["list"]) == 0
    assert re.search(r"^tiny\s.*CORRUPT", capsys.readouterr().out, re.MULTILINE)


def test_cli_verify_ok_missing_and_corrupt(tiny, tmp_path, monkeypatch, capsys, isolated_environment):
    put(isolated_environment, tiny.rel_path, tiny.payload)
    assert data.main(["verify", "tiny"]) == 0
    assert capsys.readouterr().out.startswith(f"ok      tiny: {isolated_environment / tiny.rel_path}")

    assert data.main(["verify", "tiny", "other"]) == 1  # a named dataset that is missing fails
    assert "missing other: other/other.bin" in capsys.readouterr().out
    assert data.main(["verify", "--all"]) == 0  # with --all, missing files are only listed
    assert "missing other" in capsys.readouterr().out

    put(tmp_path / "mirror", tiny.rel_path, corrupt(tiny.payload))
    monkeypatch.setenv(data.DATA_DIR_ENV, str(tmp_path / "mirror"))
    assert data.main(["verify", "--all"]) == 1  # a corrupt file always fails
    err = capsys.readouterr().err
    assert f"BAD     tiny: {tmp_path / 'mirror' / tiny.rel_path}" in err
    assert tiny.server.hits == []  # verify never downloads


def test_cli_verify_unknown_dataset(tiny, capsys):
    assert data.main(["verify", "nosuch"]) == 2
    assert "error: unknown dataset 'nosuch'" in capsys.readouterr().err


def test_cli_fetch(tiny, capsys, isolated_environment):
    assert data.main(["fetch", "tiny"]) == 0
    assert f"ok  tiny: {isolated_environment / tiny.rel_path}" in capsys.readouterr().out
    assert data.main(["fetch", "nosuch", "tiny"]) == 1
    captured = capsys.readouterr()
    assert "ERR nosuch: unknown dataset 'nosuch'; known datasets: other, tiny" in captured.err
    assert "ok  tiny" in captured.out  # the other names are still fetched
    with pytest.raises(SystemExit, match="name one or more datasets"):
        data.main(["fetch"])


def test_cli_fetch_named_mirror_only_dataset_fails_clearly(tiny, capsys):
    assert data.main(["fetch", "other"]) == 1
    err = capsys.readouterr().err
    assert "ERR other: other/other/other.bin is not available: get it from https://example.org/tiny" in err
    assert "read only from a data mirror, $MEDIMG_DATA_DIR/other/other.bin" in err


def test_cli_fetch_all_skips_a_mirror_only_dataset_no_mirror_has(
    tiny, tmp_path, monkeypatch, capsys, isolated_environment
):
    assert data.main(["fetch", "--all"]) == 0
    out = capsys.readouterr().out
    assert re.search(
        r"^skip other: mirror-only copy \(no public download\) and \$MEDIMG_DATA_DIR is not set; "
        r"put it under \$MEDIMG_DATA_DIR",
        out,
        re.MULTILINE,
    ), out
    assert f"ok  tiny: {isolated_environment / tiny.rel_path}" in out and "1 of 2 datasets fetched, 1 skipped" in out
    put(tmp_path / "mirror", "other/other.bin", b"other file")  # a mirror that has it: then it is "fetched"
    monkeypatch.setenv(data.DATA_DIR_ENV, str(tmp_path / "mirror"))
    assert data.main(["fetch", "--all"]) == 0
    out = capsys.readouterr().out
    assert not re.search(r"^skip", out, re.MULTILINE)
    assert f"ok  other: {(tmp_path / 'mirror' / 'other/other.bin').resolve()}" in out


def test_cli_fetch_used_reports_failures_and_exits_non_zero(tiny, write_registry, capsys):
    write_registry(
        {
            "tiny": {
                **BASE_META,
                "used_by": ["01_x"],
                "files": [{"path": tiny.rel_path, "url": tiny.url, **digests(tiny.payload)}],
            },
            "gone": {
                **BASE_META,
                "used_by": ["01_x"],
                "files": [{"path": "g/g.bin", "url": tiny.server.url("g"), **digests(b"x")}],
            },
            "mirror": {**BASE_META, "used_by": ["01_x"], "files": [{"path": "m/m.bin", "sha256": "0" * 64}]},
        }
    )
    assert data.main(["fetch", "--used"]) == 1
    captured = capsys.readouterr()
    assert "ok  tiny" in captured.out and "skip mirror: mirror-only" in captured.out
    assert "ERR gone: could not download" in captured.err and "HTTP Error 404" in captured.err
    assert "1 of 3 datasets fetched, 1 skipped, 1 failed: gone" in captured.err


def test_cli_fetch_dry_run_downloads_nothing(tiny, tmp_path, monkeypatch, capsys, isolated_environment):
    assert data.main(["fetch", "--all", "--dry-run"]) == 0
    out = capsys.readouterr().out
    assert f"get  tiny: {tiny.rel_path} from {tiny.url} (0.0 MB)" in out
    assert "skip other: mirror-only" in out
    assert "1 of 2 datasets could be fetched, 1 skipped" in out
    assert tiny.server.hits == [] and list(isolated_environment.iterdir()) == []
    cached = put(isolated_environment, tiny.rel_path, tiny.payload)
    assert data.main(["fetch", "tiny", "--dry-run"]) == 0
    assert f"have tiny: {cached}" in capsys.readouterr().out
    cached.write_bytes(corrupt(tiny.payload))
    assert data.main(["fetch", "tiny", "-n"]) == 0
    assert "(the cached copy is corrupt and would be replaced)" in capsys.readouterr().out
    assert cached.read_bytes() == corrupt(tiny.payload)  # a dry run deletes nothing
    put(tmp_path / "mirror", tiny.rel_path, corrupt(tiny.payload))
    monkeypatch.setenv(data.DATA_DIR_ENV, str(tmp_path / "mirror"))
    assert data.main(["fetch", "tiny", "-n"]) == 1  # a corrupt mirror copy cannot be fetched around
    assert "BAD  tiny:" in capsys.readouterr().err
    assert data.main(["fetch", "other", "-n"]) == 1
    assert "ERR  other: other/other.bin is not available" in capsys.readouterr().err
    assert tiny.server.hits == []


def run_cli(*args, env_extra=None):
    env = {**os.environ, **(env_extra or {})}
    env.pop(data.DATA_DIR_ENV, None)
    return subprocess.run(
        [sys.executable, "-m", "utils.data", *args], cwd=REPO_ROOT, env=env, capture_output=True, text=True, timeout=120
    )


def test_cli_subprocess_list_and_unknown_fetch(isolated_environment):
    proc = run_cli("list", env_extra={data.CACHE_DIR_ENV: str(isolated_environment)})
    assert proc.returncode == 0, proc.stderr
    names = [line.split()[0] for line in proc.stdout.splitlines() if line.strip()]
    assert names == list(REAL)
    assert "missing" in proc.stdout  # an empty cache and no data directory
    proc = run_cli("fetch", "no-such-dataset", env_extra={data.CACHE_DIR_ENV: str(isolated_environment)})
    assert proc.returncode == 1
    assert "ERR no-such-dataset: unknown dataset 'no-such-dataset'" in proc.stderr
    assert list(isolated_environment.iterdir()) == []


def test_cli_subprocess_make_data_plan_without_a_mirror(isolated_environment):
    """`python -m utils.data fetch --used --dry-run` on the real registry, no mirror, no network needed:
    the mirror-only JPEG copy is skipped with one note and the official CIFAR-10 archive is planned."""
    proc = run_cli("fetch", "--used", "--dry-run", env_extra={data.CACHE_DIR_ENV: str(isolated_environment)})
    assert proc.returncode == 0, proc.stdout + proc.stderr
    lines = proc.stdout.splitlines()
    assert [line.split(":")[0] for line in lines if line.startswith("skip")] == ["skip cifar10-jpeg"]
    assert f"get  cifar10: cifar10/cifar-10-python.tar.gz from {REAL['cifar10'].files[0].url} (170.5 MB)" in lines
    used = [n for n, d in REAL.items() if d.extra.get("used_by")]
    assert f"{len(used) - 1} of {len(used)} datasets could be fetched, 1 skipped" in proc.stdout
    assert list(isolated_environment.iterdir()) == []


def test_cli_help_names_the_default_cache():
    proc = run_cli("fetch", "--help")
    assert proc.returncode == 0
    text = " ".join(proc.stdout.split())
    assert "~/.cache/medimg-course" in text and "$XDG_CACHE_HOME/medimg-course" in text and "--dry-run" in text


def test_locate_downloads_a_distribution_once_for_all_its_files(monkeypatch, write_registry, isolated_environment):
    payloads = {"fakepkg/data/a.bin": b"first file", "fakepkg/data/b.bin": b"second file"}
    calls = []

    def fake_pip_download(spec, workdir):
        calls.append(spec)
        return make_wheel(workdir, payloads)

    monkeypatch.setattr(data, "_pip_download", fake_pip_download)
    write_registry(
        {
            "fake": {
                **BASE_META,
                "pypi": "fakepkg==9.9",
                "files": [{"path": f"fake/{Path(m).name}", "member": m, **digests(p)} for m, p in payloads.items()],
            }
        }
    )
    assert data.locate("fake", "a.bin").read_bytes() == b"first file"
    assert data.locate("fake", "b.bin").read_bytes() == b"second file"
    assert calls == ["fakepkg==9.9"]


# ---------------------------------------------------------------------------
# datasets shipped only in a source distribution (pypi_sdist = true)
# ---------------------------------------------------------------------------


def test_pip_download_command_asks_for_the_sdist_only_when_told(tmp_path):
    wheel_cmd = data.pip_download_command("pkg==1.0", tmp_path)
    sdist_cmd = data.pip_download_command("pkg==1.0", tmp_path, sdist=True)
    assert "--no-binary" not in wheel_cmd and wheel_cmd[-1] == "pkg==1.0" and "--no-deps" in wheel_cmd
    i = sdist_cmd.index("--no-binary")
    assert sdist_cmd[i + 1] == ":all:" and "--no-build-isolation" in sdist_cmd and sdist_cmd[-1] == "pkg==1.0"


def test_sdist_dataset_is_read_from_the_downloaded_sdist_not_the_installed_package(
    tmp_path, monkeypatch, write_registry
):
    payload = b"a scan that only the sdist ships"
    calls = []

    def fake_pip_download(spec, workdir, *, sdist=False):
        calls.append((spec, sdist))
        return make_sdist(workdir, {"data/scan.nrrd": payload})

    monkeypatch.setattr(data, "_pip_download", fake_pip_download)
    monkeypatch.setattr(data, "_installed_member", lambda *a: pytest.fail("must not look at installed packages"))
    ds = write_registry(
        {
            "scans": {
                **BASE_META,
                "pypi": "fakepkg==9.9",
                "pypi_sdist": True,
                "files": [{"path": "scans/scan.nrrd", "member": "data/scan.nrrd", **digests(payload)}],
            }
        }
    ).datasets["scans"]
    data.fetch_from_pypi(ds, ds.files, tmp_path / "out")
    assert (tmp_path / "out" / "scans" / "scan.nrrd").read_bytes() == payload
    assert calls == [("fakepkg==9.9", True)]


@pytest.mark.parametrize(
    "entry, message",
    [
        ({"pypi": "p==1", "pypi_sdist": "yes"}, "'pypi_sdist' must be true or false"),
        ({"pypi_sdist": True}, "next to a 'pypi' distribution"),
    ],
)
def test_registry_rejects_a_bad_pypi_sdist_flag(write_registry, entry, message):
    with pytest.raises(data.DataError, match=message):
        write_registry({"bad": {**BASE_META, **entry, "files": [GOOD_FILE]}}, install=False)


@pytest.mark.parametrize(
    "target, message",
    [
        ("nosuch", r"'stands_in_for' must name another dataset"),
        ("copy", r"'stands_in_for' must name another dataset"),
        ("other", r"'copy' \(kind 'files'\) cannot stand in for 'other' \(kind 'medmnist'\)"),
    ],
)
def test_registry_rejects_a_bad_stand_in(write_registry, target, message):
    with pytest.raises(data.DataError, match=message):
        write_registry(
            {
                "copy": {**BASE_META, "stands_in_for": target, "files": [GOOD_FILE]},
                "other": {**BASE_META, "kind": "medmnist", "files": [{**GOOD_FILE, "path": "x/o.bin"}]},
            },
            install=False,
        )


def test_real_registry_mirror_only_datasets_have_a_fetchable_original():
    """`make data` on a machine without the mirror gets every chapter a copy it can read."""
    mirror_only = {n for n, d in REAL.items() if d.mirror_only}
    assert "cifar10-jpeg" in mirror_only and "cifar10" not in mirror_only
    assert REAL["cifar10-jpeg"].stands_in_for == "cifar10" and data.stand_ins("cifar10") == ["cifar10-jpeg"]
    for name in mirror_only:
        ds = REAL[name]
        if not ds.extra.get("used_by"):
            continue
        assert ds.stands_in_for, f"{name} is mirror-only and read by {ds.extra['used_by']}: name an original"
        original = REAL[ds.stands_in_for]
        assert not original.mirror_only and all(f.url or f.member for f in original.files)
        assert set(ds.extra["used_by"]) <= set(original.extra.get("used_by", []))


def test_real_registry_pins_the_pyradiomics_sdist_scans():
    ds = REAL["pyradiomics-samples"]
    assert ds.pypi == "pyradiomics==3.0.1" and ds.extra["pypi_sdist"] is True
    names = sorted(Path(f.path).name for f in ds.files)
    assert names == sorted(
        f"{c}_{k}.nrrd" for c in ("brain1", "brain2", "breast1", "lung1", "lung2") for k in ("image", "label")
    )
    assert all(f.member == f"data/{Path(f.path).name}" and f.sha256 and f.size for f in ds.files)
