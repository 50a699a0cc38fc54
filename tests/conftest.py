"""Shared fixtures: an isolated environment per test, a local HTTP server, a tmp registry.

Every test runs with

* ``MEDIMG_CACHE_DIR`` pointing at a fresh temporary folder (nothing is written to
  the per-user cache ``~/.cache/medimg-course`` or to ``data/cache``; a test that unsets
  ``MEDIMG_CACHE_DIR`` points ``XDG_CACHE_HOME`` at a temporary folder first),
  ``MEDIMG_DATA_DIR`` unset (tests that want the real mirror read
  :data:`ORIGINAL_DATA_DIR`, the value the test session started with),
* ``MEDIMG_RUN_RECORD`` and ``MEDIMG_STRICT_EXERCISES`` unset,
* an empty run report and an empty checksum memo.
"""

from __future__ import annotations

import hashlib
import http.server
import os
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path

import pytest

from utils import data, exercises, report
from utils.exercises import BEGIN, END, STRICT_ENV

REPO_ROOT = Path(__file__).resolve().parent.parent
ORIGINAL_DATA_DIR = os.environ.get(data.DATA_DIR_ENV) or None
ORIGINAL_CACHE_DIR = os.environ.get(data.CACHE_DIR_ENV)  # read at import, before the per-test fixture


def resolve_real_sample(name: str, file: str, fetched: Path) -> Path:
    """Path of a real registry file for tests that read real data.

    Looks in the session's data mirror and the developer's cache first (no
    download), else fetches into ``fetched`` (a test-owned cache), else skips
    the test with the reason.  The per-test isolated environment is bypassed
    only inside this call.
    """
    with pytest.MonkeyPatch.context() as mp:
        if ORIGINAL_DATA_DIR:
            mp.setenv(data.DATA_DIR_ENV, ORIGINAL_DATA_DIR)
        else:
            mp.delenv(data.DATA_DIR_ENV, raising=False)
        mp.setenv(data.CACHE_DIR_ENV, ORIGINAL_CACHE_DIR or str(data.DEFAULT_CACHE_DIR))
        try:
            return data.locate(name, file, download_ok=False)
        except data.DatasetNotFoundError:
            mp.setenv(data.CACHE_DIR_ENV, str(fetched))
            try:
                return data.sample(name, file)
            except data.DataError as exc:
                pytest.skip(f"{name}/{file} is not available offline and cannot be fetched: {exc}")


@pytest.fixture(autouse=True)
def isolated_environment(monkeypatch, tmp_path_factory):
    cache = tmp_path_factory.mktemp("cache")
    monkeypatch.setenv(data.CACHE_DIR_ENV, str(cache))
    monkeypatch.delenv(data.DATA_DIR_ENV, raising=False)
    monkeypatch.delenv(report.RECORD_ENV, raising=False)
    monkeypatch.delenv(STRICT_ENV, raising=False)
    report.reset()
    data._VERIFIED.clear()
    yield cache
    report.reset()
    data._VERIFIED.clear()


@pytest.fixture
def mirror_dir() -> Path:
    """The real data mirror (``MEDIMG_DATA_DIR`` of the session); skips when it is not set."""
    if not ORIGINAL_DATA_DIR:
        pytest.skip(f"{data.DATA_DIR_ENV} is not set: these tests read the data mirror (CI sets it to ../shared/data)")
    path = Path(ORIGINAL_DATA_DIR).expanduser()
    if not path.is_dir():
        pytest.fail(f"{data.DATA_DIR_ENV}={ORIGINAL_DATA_DIR!r} is not a directory")
    return path.resolve()


# ---------------------------------------------------------------------------
# a local HTTP server on 127.0.0.1
# ---------------------------------------------------------------------------


@dataclass
class Route:
    """What the server answers for one path."""

    body: bytes = b""
    status: int = 200
    send_length: bool = True  # send a Content-Length header for the full body
    cut_after: int | None = None  # close the connection after this many body bytes
    delay: float = 0.0  # seconds to wait before answering
    # answers to the first requests, one per request, before the normal answer: an HTTP
    # status (e.g. 503), "reset" (hang up without answering) or "cut" (half the body)
    fail_first: list = field(default_factory=list)


@dataclass
class LocalServer:
    base_url: str
    routes: dict[str, Route] = field(default_factory=dict)
    hits: list[str] = field(default_factory=list)

    def url(self, path: str) -> str:
        return f"{self.base_url}/{path.lstrip('/')}"

    def serve(self, path: str, body: bytes = b"", **kwargs) -> str:
        """Answer ``GET /path`` with ``body`` (see :class:`Route`); return the URL."""
        self.routes["/" + path.lstrip("/")] = Route(body=body, **kwargs)
        return self.url(path)


SERVER_LIFETIME_S = 120  # the server shuts itself down after this, whatever happens


@pytest.fixture
def http_server():
    """A threaded HTTP server on 127.0.0.1 (a free port), bounded in time and stopped after the test."""
    state = LocalServer(base_url="")

    class Handler(http.server.BaseHTTPRequestHandler):
        def do_GET(self):  # noqa: N802 (http.server API)
            state.hits.append(self.path)
            route = state.routes.get(self.path)
            if route is None:
                self.send_error(404, "Not Found")
                return
            if route.delay:
                time.sleep(route.delay)
            failure = route.fail_first.pop(0) if route.fail_first else None
            if failure == "reset":
                self.close_connection = True
                return
            if isinstance(failure, int):
                self.send_error(failure)
                return
            cut = len(route.body) // 2 if failure == "cut" else route.cut_after
            body = route.body if cut is None else route.body[:cut]
            try:
                self.send_response(route.status)
                if route.send_length:
                    self.send_header("Content-Length", str(len(route.body)))
                self.send_header("Content-Type", "application/octet-stream")
                self.end_headers()
                self.wfile.write(body)
                self.wfile.flush()
            except OSError:  # the client gave up (timeout tests)
                pass
            self.close_connection = True

        def log_message(self, *args):  # keep the test output clean
            pass

    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    server.daemon_threads = True
    state.base_url = f"http://127.0.0.1:{server.server_address[1]}"
    thread = threading.Thread(target=server.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True)
    thread.start()
    watchdog = threading.Timer(SERVER_LIFETIME_S, server.shutdown)
    watchdog.daemon = True
    watchdog.start()
    try:
        yield state
    finally:
        watchdog.cancel()
        server.shutdown()
        server.server_close()
        thread.join(timeout=5)


# ---------------------------------------------------------------------------
# a registry in a temporary folder
# ---------------------------------------------------------------------------


def _toml_value(value) -> str:
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, (int, float)):
        return repr(value)
    if isinstance(value, str):
        return '"' + value.replace("\\", "\\\\").replace('"', '\\"') + '"'
    if isinstance(value, (list, tuple)):
        return "[" + ", ".join(_toml_value(v) for v in value) + "]"
    if isinstance(value, dict):
        return "{" + ", ".join(f"{_toml_value(str(k))} = {_toml_value(v)}" for k, v in value.items()) + "}"
    raise TypeError(value)


BASE_META = {
    "title": "Tiny test dataset",
    "kind": "files",
    "description": "Bytes made up by the tests.",
    "licence": "CC0",
    "citation": "The test suite",
    "homepage": "https://example.org/tiny",
}


def registry_toml(entries: dict[str, dict]) -> str:
    """TOML text of a registry: ``{name: {meta..., "files": [{path, sha256, ...}]}}``."""
    chunks = []
    for name, entry in entries.items():
        lines = [f'["{name}"]']
        lines += [f"{k} = {_toml_value(v)}" for k, v in entry.items() if k != "files" or not v]
        for f in entry.get("files", []):
            lines.append(f'[["{name}".files]]')
            lines += [f"{k} = {_toml_value(v)}" for k, v in f.items()]
        chunks.append("\n".join(lines))
    return "\n\n".join(chunks) + "\n"


def digests(payload: bytes) -> dict:
    return {
        "sha256": hashlib.sha256(payload).hexdigest(),
        "md5": hashlib.md5(payload).hexdigest(),
        "size": len(payload),
    }


@dataclass
class TmpRegistry:
    path: Path
    datasets: dict

    def install(self, monkeypatch) -> None:
        monkeypatch.setattr(data, "_REGISTRY", data.load_registry(self.path))


@pytest.fixture
def write_registry(tmp_path, monkeypatch):
    """``write_registry(entries, install=True)``: write a registry TOML, parse it, make it the course's."""
    counter = iter(range(1000))

    def write(entries: dict[str, dict], install: bool = True) -> TmpRegistry:
        path = tmp_path / f"registry{next(counter)}.toml"
        path.write_text(registry_toml(entries), encoding="utf-8")
        reg = TmpRegistry(path=path, datasets=data.load_registry(path))
        if install:
            reg.install(monkeypatch)
        return reg

    return write


TINY_PAYLOAD = bytes(range(256)) * 40 + b"medimg tiny dataset\n"


@dataclass
class Tiny:
    """The dataset ``tiny``: one file served by :func:`http_server`."""

    name: str
    rel_path: str
    payload: bytes
    url: str
    server: LocalServer
    registry: TmpRegistry

    @property
    def df(self) -> data.DataFile:
        return self.registry.datasets[self.name].files[0]


@pytest.fixture
def tiny(http_server, write_registry) -> Tiny:
    """A registry with one downloadable dataset ``tiny`` (and an unrelated ``other``), installed."""
    url = http_server.serve("files/tiny.bin", TINY_PAYLOAD)
    other = b"other file"
    reg = write_registry(
        {
            "tiny": {**BASE_META, "files": [{"path": "tiny/tiny.bin", "url": url, **digests(TINY_PAYLOAD)}]},
            "other": {
                **BASE_META,
                "title": "Mirror-only file",
                "files": [{"path": "other/other.bin", "sha256": digests(other)["sha256"]}],
            },
        }
    )
    return Tiny(name="tiny", rel_path="tiny/tiny.bin", payload=TINY_PAYLOAD, url=url, server=http_server, registry=reg)


# ---------------------------------------------------------------------------
# leak test helper (student edition)
# ---------------------------------------------------------------------------


def _public_lines(nb) -> set[str]:
    """Stripped lines of the instructor notebook that are *not* solution: outside marked
    regions and outside cells tagged ``solution`` (computed independently of utils.student)."""
    lines: set[str] = set()
    for cell in nb.cells:
        if "solution" in cell.get("metadata", {}).get("tags", []):
            continue
        inside = False
        for line in cell.source.splitlines():
            s = line.strip()
            if s == BEGIN:
                inside = True
            elif s == END:
                inside = False
            elif not inside and s:
                lines.add(s)
    return lines


def leaked_lines(nb, student_nb) -> list[str]:
    """Solution lines of ``nb`` (``utils.student.solution_texts``) found in ``student_nb``.

    A line that also appears in the public part of the notebook (a closing code fence,
    a line repeated outside the solution) is not a leak: the student sees it anyway.
    """
    from utils.student import solution_texts

    solution = set(solution_texts(nb))
    student_lines = {line.strip() for cell in student_nb.cells for line in cell.source.splitlines()}
    return sorted((solution & student_lines) - _public_lines(nb))


# ------------------------------------------------------------------ exercise checks (tests/test_checks_chN.py)
def placeholder(*args, **kwargs):
    """A student's function not written yet: what the student edition leaves in its body."""
    raise exercises.NotAttempted("Exercise: write your code here")


def reported_not_attempted(result, capsys, label: str | None = None) -> bool:
    """True if a check returned False and printed "not attempted" (for ``label``, when given)."""
    out = capsys.readouterr().out
    return not result and (f"Exercise {label}: not attempted" if label else "not attempted") in out
