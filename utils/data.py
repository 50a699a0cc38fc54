"""The course's data layer: one registry, checksummed files, atomic downloads.

Every dataset the notebooks read is described in ``data/registry.toml``
(source, licence, citation, size, checksum).  A file is resolved in this
order:

1. the data directory named by the environment variable ``MEDIMG_DATA_DIR``
   (a read-only mirror, for example ``../shared/data`` in CI);
2. the cache, ``MEDIMG_CACHE_DIR``; by default a per-user folder shared by
   every clone of the course, ``$XDG_CACHE_HOME/medimg-course`` or, without
   ``XDG_CACHE_HOME``, ``~/.cache/medimg-course``.  While ``MEDIMG_CACHE_DIR``
   is unset, a clone's ``data/cache/`` (the default of earlier versions) is
   still read, never written;
3. the official source: a URL, or a file inside a package on PyPI.  A
   download that fails on a transient error (connection reset or refused,
   timeout, a cut-off body, HTTP 5xx, 408 or 429) is retried with
   exponential back-off; a 404 or a checksum mismatch is not.  The download is
   verified against the registry checksum and written atomically (temporary
   file + ``os.replace``), so an interrupted or corrupted download never
   leaves a file that looks valid;
4. otherwise :class:`DatasetNotFoundError`, which says what to fetch and where
   to put it.

A dataset with no public source (no URL, no PyPI member) is *mirror-only*: it
is read when a data directory (or the cache) holds it, and ``fetch --used``
skips it otherwise.  Such a copy can stand in for another dataset
(``stands_in_for`` in the registry, e.g. the CIFAR-10 JPEG mirror for the
official archive): the loaders and ``fetch --used`` take the stand-in only
when it is local and the original is not (:func:`preferred_copy`).

Every resolved file is recorded in the notebook's run record
(:mod:`utils.report`), so the reproducibility report lists the exact dataset
versions each chapter read.

Command line::

    python -m utils.data list
    python -m utils.data fetch pneumoniamnist pydicom-samples
    python -m utils.data fetch --used            # what the chapters read (make data)
    python -m utils.data fetch --used --dry-run  # what that would download, from where
    python -m utils.data verify --all
"""

from __future__ import annotations

import argparse
import difflib
import hashlib
import http.client
import importlib.metadata
import io
import os
import shutil
import socket
import subprocess
import sys
import tempfile
import textwrap
import time
import tomllib
import urllib.error
import urllib.request
import zipfile
from collections.abc import Iterable
from dataclasses import dataclass, field
from pathlib import Path
from typing import NamedTuple

import numpy as np

from . import report
from .files import atomic_target

REPO_ROOT = Path(__file__).resolve().parent.parent
REGISTRY_PATH = REPO_ROOT / "data" / "registry.toml"
DATA_DIR_ENV = "MEDIMG_DATA_DIR"
CACHE_DIR_ENV = "MEDIMG_CACHE_DIR"
CACHE_SUBDIR = "medimg-course"
CHUNK = 1 << 20

# Downloads: tries per file (the first included) and the back-off between them,
# RETRY_BASE_S, 2 × RETRY_BASE_S, 4 × ... (at most RETRY_MAX_S; a numeric
# Retry-After header of a 429/503 answer is honoured up to the same bound).
RETRY_ATTEMPTS = 4
RETRY_BASE_S = 1.0
RETRY_MAX_S = 60.0
RETRY_HTTP_STATUS = frozenset({408, 425, 429})  # retried besides every 5xx
_sleep = time.sleep  # the back-off's clock (tests record the delays instead of waiting)


class DataError(RuntimeError):
    """Base class of the data layer's errors."""


class DatasetNotFoundError(DataError):
    """A file is in no data directory, not cached, and cannot be downloaded."""


class ChecksumError(DataError):
    """A file exists but its bytes are not the ones the registry pins."""


class UnknownDatasetError(DataError, KeyError):
    """The name is not in ``data/registry.toml``."""

    def __str__(self) -> str:  # KeyError would print the repr of the message
        return str(self.args[0])


@dataclass(frozen=True)
class DataFile:
    """One file of a dataset, as pinned by the registry."""

    path: str
    sha256: str | None = None
    md5: str | None = None
    size: int | None = None
    url: str | None = None
    member: str | None = None

    def checksums(self) -> dict[str, str]:
        return {k: v for k, v in (("sha256", self.sha256), ("md5", self.md5)) if v}

    @property
    def has_source(self) -> bool:
        """Whether the registry pins a public source for this file (a URL or a PyPI member)."""
        return bool(self.url or self.member)


@dataclass(frozen=True)
class Dataset:
    """A registry entry: metadata plus the files it consists of."""

    name: str
    title: str
    kind: str
    description: str
    licence: str
    citation: str
    homepage: str
    files: tuple[DataFile, ...]
    bibkey: str | None = None
    pypi: str | None = None
    extra: dict = field(default_factory=dict)

    def file(self, name: str | None = None) -> DataFile:
        """The file whose path ends with ``name`` (the only file if ``None``)."""
        if name is None:
            if len(self.files) != 1:
                raise DataError(
                    f"dataset {self.name!r} has {len(self.files)} files; name one of "
                    f"{[Path(f.path).name for f in self.files]}"
                )
            return self.files[0]
        for f in self.files:  # an exact path wins over a file name shared by two folders
            if f.path == name:
                return f
        for f in self.files:
            if Path(f.path).name == name:
                return f
        raise DataError(
            f"dataset {self.name!r} has no file {name!r}; its files are {[Path(f.path).name for f in self.files]}"
        )

    @property
    def size(self) -> int | None:
        sizes = [f.size for f in self.files]
        return None if any(s is None for s in sizes) else sum(sizes)

    @property
    def mirror_only(self) -> bool:
        """No public source for some file: only a data directory (or a copy put in the cache) provides it."""
        return not all(f.has_source for f in self.files)

    @property
    def stands_in_for(self) -> str | None:
        """The dataset this copy replaces when it is local and that one is not (registry ``stands_in_for``)."""
        return self.extra.get("stands_in_for")


_META_KEYS = {"title", "kind", "description", "licence", "citation", "homepage", "bibkey", "pypi", "files"}
_REQUIRED_KEYS = {"title", "kind", "description", "licence", "citation", "homepage", "files"}
_FILE_KEYS = {"path", "sha256", "md5", "size", "url", "member"}
_DIGEST_LENGTHS = {"sha256": 64, "md5": 32}


def _check_file_entry(where: str, f: object) -> DataFile:
    """Validate one ``[[name.files]]`` table of the registry."""
    if not isinstance(f, dict):
        raise DataError(f"{where}: each entry of 'files' must be a table, got {f!r}")
    unknown = set(f) - _FILE_KEYS
    if unknown:
        raise DataError(f"{where}: unknown file keys {sorted(unknown)} (allowed: {sorted(_FILE_KEYS)})")
    if not isinstance(f.get("path"), str) or not f["path"]:
        raise DataError(f"{where}: a file has no 'path'")
    df = DataFile(**f)
    if Path(df.path).is_absolute() or ".." in Path(df.path).parts:
        raise DataError(f"{where}: file path {df.path!r} must be relative, inside the data directory")
    if not df.checksums():
        raise DataError(f"{where}: file {df.path!r} has no sha256 or md5")
    for algo, value in df.checksums().items():
        if (
            not isinstance(value, str)
            or len(value) != _DIGEST_LENGTHS[algo]
            or any(c not in "0123456789abcdefABCDEF" for c in value)
        ):
            raise DataError(
                f"{where}: file {df.path!r} has a malformed {algo} {value!r} "
                f"({_DIGEST_LENGTHS[algo]} hex digits expected)"
            )
    if df.size is not None and (not isinstance(df.size, int) or df.size < 0):
        raise DataError(f"{where}: file {df.path!r} has an invalid size {df.size!r}")
    return df


def load_registry(path: Path | str = REGISTRY_PATH) -> dict[str, Dataset]:
    """Parse the registry TOML into :class:`Dataset` objects, validating each entry.

    Raises :class:`DataError` for a missing metadata key, a file without a
    well-formed checksum, unknown file keys, or a ``member`` (a file inside a
    PyPI distribution) in a dataset that names no ``pypi`` distribution.
    """
    path = Path(path)
    with path.open("rb") as fh:
        raw = tomllib.load(fh)
    out: dict[str, Dataset] = {}
    for name, entry in raw.items():
        if not isinstance(entry, dict):
            raise DataError(f'{path}: {name!r} must be a table (["{name}"]), got {entry!r}')
        missing = _REQUIRED_KEYS - set(entry)
        if missing:
            raise DataError(f"{path}: dataset {name!r} lacks {sorted(missing)}")
        if not isinstance(entry["files"], list) or not entry["files"]:
            raise DataError(f'{path}: dataset {name!r} must list at least one [["{name}".files]] entry')
        files = []
        for f in entry["files"]:
            df = _check_file_entry(f"{path}: dataset {name!r}", f)
            if df.member and not entry.get("pypi"):
                raise DataError(f"{path}: {name!r} has a 'member' but no 'pypi' distribution")
            files.append(df)
        if "pypi_sdist" in entry and (not isinstance(entry["pypi_sdist"], bool) or not entry.get("pypi")):
            raise DataError(f"{path}: {name!r}: 'pypi_sdist' must be true or false, next to a 'pypi' distribution")
        out[name] = Dataset(
            name=name,
            files=tuple(files),
            extra={k: v for k, v in entry.items() if k not in _META_KEYS},
            **{k: entry.get(k) for k in _META_KEYS - {"files"}},
        )
    for ds in out.values():
        target = ds.stands_in_for
        if target is None:
            continue
        if not isinstance(target, str) or target not in out or target == ds.name:
            raise DataError(
                f"{path}: {ds.name!r}: 'stands_in_for' must name another dataset of the registry, got {target!r}"
            )
        if out[target].kind != ds.kind:
            raise DataError(
                f"{path}: {ds.name!r} (kind {ds.kind!r}) cannot stand in for {target!r} (kind {out[target].kind!r})"
            )
    return out


_REGISTRY: dict[str, Dataset] | None = None


def registry() -> dict[str, Dataset]:
    """The course registry (parsed once per process)."""
    global _REGISTRY
    if _REGISTRY is None:
        _REGISTRY = load_registry()
    return _REGISTRY


def suggest(name: str, names: Iterable[str]) -> list[str]:
    """Registry names close to a misspelt ``name``, best first: the name that matches apart
    from case (and surrounding blanks) if there is one, else up to three
    :func:`difflib.get_close_matches` (compared case-insensitively)."""
    by_lower: dict[str, list[str]] = {}
    for n in sorted(names):
        by_lower.setdefault(n.lower(), []).append(n)
    key = name.strip().lower()
    if key in by_lower:
        return list(by_lower[key])
    return [n for close in difflib.get_close_matches(key, list(by_lower), n=3, cutoff=0.6) for n in by_lower[close]]


def dataset(name: str) -> Dataset:
    """Look a dataset up by name, with a helpful error for typos ("did you mean ...?")."""
    reg = registry()
    if name not in reg:
        close = suggest(name, reg)
        hint = f" (did you mean {' or '.join(repr(c) for c in close)}?)" if close else ""
        raise UnknownDatasetError(
            f"unknown dataset {name!r}{hint}; known datasets: {', '.join(sorted(reg))} "
            f"(see data/registry.toml or run `python -m utils.data list`)"
        )
    return reg[name]


def data_dir() -> Path | None:
    """The read-only data directory from ``MEDIMG_DATA_DIR``, if set."""
    value = os.environ.get(DATA_DIR_ENV)
    if not value:
        return None
    p = Path(value).expanduser()
    if not p.is_dir():
        raise DataError(
            f"{DATA_DIR_ENV}={value!r} is not a directory; point it at a folder laid out "
            f"like data/registry.toml's paths, or unset it to use the cache and downloads"
        )
    return p.resolve()


def default_cache_dir() -> Path:
    """The per-user cache that every clone of the course shares.

    ``$XDG_CACHE_HOME/medimg-course`` when ``XDG_CACHE_HOME`` is an absolute
    path (the XDG rule: a relative value is ignored), else
    ``~/.cache/medimg-course``.  Read from the environment at each call.
    """
    xdg = os.environ.get("XDG_CACHE_HOME")
    base = Path(xdg) if xdg and Path(xdg).is_absolute() else Path.home() / ".cache"
    return base / CACHE_SUBDIR


DEFAULT_CACHE_DIR = default_cache_dir()  # the default when this module was imported; cache_dir() re-reads it
LEGACY_CACHE_DIR = REPO_ROOT / "data" / "cache"  # the default before the per-user cache: still read, never written


def _legacy_cache() -> Path | None:
    """A clone's old ``data/cache/``, read (never written) while ``MEDIMG_CACHE_DIR`` is unset."""
    if os.environ.get(CACHE_DIR_ENV) or not LEGACY_CACHE_DIR.is_dir():
        return None
    return None if LEGACY_CACHE_DIR.resolve() == cache_dir().resolve() else LEGACY_CACHE_DIR


def cache_dir() -> Path:
    """The writable cache directory: ``MEDIMG_CACHE_DIR`` if set, else :func:`default_cache_dir`."""
    value = os.environ.get(CACHE_DIR_ENV)
    return Path(value).expanduser().resolve() if value else default_cache_dir()


# ---------------------------------------------------------------------------
# checksums
# ---------------------------------------------------------------------------


def file_digests(path: Path | str, algorithms: Iterable[str] = ("sha256",)) -> dict[str, str]:
    """Hex digests of a file, read in 1 MiB chunks."""
    hashers = {a: hashlib.new(a) for a in algorithms}
    with open(path, "rb") as fh:
        for block in iter(lambda: fh.read(CHUNK), b""):
            for h in hashers.values():
                h.update(block)
    return {a: h.hexdigest() for a, h in hashers.items()}


_VERIFIED: dict[tuple, str] = {}


def _mismatch(path: Path, df: DataFile) -> tuple[str | None, str | None]:
    """``(problem, sha256)``: what is wrong with ``path`` against ``df`` (``None`` if nothing)."""
    size = path.stat().st_size
    if df.size is not None and size != df.size:
        return f"size is {size} bytes, the registry pins {df.size} for {df.path!r}", None
    digests = file_digests(path, {"sha256", *df.checksums()})
    for algo, expected in df.checksums().items():
        if digests[algo] != expected.lower():
            return f"{algo} is {digests[algo]}, the registry pins {expected} for {df.path!r}", None
    return None, digests["sha256"]


def verify_file(path: Path | str, df: DataFile) -> str:
    """Check size and every pinned checksum of ``path``; return its sha256.

    Raises :class:`ChecksumError` naming the file, the expected and the
    actual values.  Results are memoised per (file, size, mtime, pinned values).
    """
    path = Path(path)
    st = path.stat()
    key = (
        str(path),
        st.st_ino,
        st.st_size,
        st.st_mtime_ns,
        st.st_ctime_ns,
        df.size,
        tuple(sorted(df.checksums().items())),
    )
    if key in _VERIFIED:
        return _VERIFIED[key]
    problem, sha256 = _mismatch(path, df)
    if problem:
        raise ChecksumError(
            f"{path}: {problem}. The file is truncated, corrupted or a different version; "
            f"delete it and fetch again (`python -m utils.data fetch`)"
        )
    _VERIFIED[key] = sha256
    return sha256


# ---------------------------------------------------------------------------
# fetching
# ---------------------------------------------------------------------------


class _FailedTry(Exception):
    """One download try that failed: why, whether another try may help, and a server-asked delay."""

    def __init__(self, reason: str, transient: bool, retry_after: float | None = None):
        super().__init__(reason)
        self.reason, self.transient, self.retry_after = reason, transient, retry_after


def _classify(exc: BaseException) -> _FailedTry:
    """Turn a network exception into a :class:`_FailedTry` (transient or not)."""
    if isinstance(exc, urllib.error.HTTPError):
        retry_after = None
        value = exc.headers.get("Retry-After") if exc.headers is not None else None
        if value and value.strip().isdigit():
            retry_after = float(value.strip())
        transient = exc.code >= 500 or exc.code in RETRY_HTTP_STATUS
        return _FailedTry(f"HTTP Error {exc.code}: {exc.reason}", transient, retry_after)
    if isinstance(exc, urllib.error.URLError):
        reason = exc.reason
        if isinstance(reason, socket.gaierror):  # no DNS: offline, or a wrong host name; retrying will not help
            return _FailedTry(f"cannot resolve the host name ({reason}); is this machine online?", False)
        return _FailedTry(str(exc), isinstance(reason, (TimeoutError, ConnectionError)))
    text = str(exc) or type(exc).__name__
    if isinstance(exc, (TimeoutError, ConnectionError, http.client.IncompleteRead, http.client.BadStatusLine)):
        return _FailedTry(text, True)  # timeout, reset, refused, the server hung up without answering
    return _FailedTry(text, False)  # e.g. a full disk: the same next time


def _backoff(attempt: int, retry_after: float | None = None) -> float:
    """Seconds to wait after failed try number ``attempt`` (1-based): ``RETRY_BASE_S * 2**(attempt-1)``,
    at least the server's ``Retry-After``, at most ``RETRY_MAX_S``."""
    delay = RETRY_BASE_S * 2 ** (attempt - 1)
    if retry_after is not None:
        delay = max(delay, retry_after)
    return min(delay, RETRY_MAX_S)


def _download_once(url: str, tmp: Path, dest: Path, df: DataFile, timeout: float, progress: bool) -> None:
    """One try: stream ``url`` into ``tmp`` (truncated first); raise :class:`_FailedTry` on failure."""
    req = urllib.request.Request(url, headers={"User-Agent": "medimg-course-data/1.0"})
    try:
        with urllib.request.urlopen(req, timeout=timeout) as resp, open(tmp, "wb") as out:
            length = resp.headers.get("Content-Length")
            length = int(length) if length and length.isdigit() else None
            total = length or df.size
            done, last = 0, -1
            for block in iter(lambda: resp.read(CHUNK), b""):
                out.write(block)
                done += len(block)
                if progress and total:
                    pct = int(100 * done / total)
                    if pct // 10 != last:
                        last = pct // 10
                        print(f"  {dest.name}: {done / 1e6:.1f}/{total / 1e6:.1f} MB", file=sys.stderr)
    except (urllib.error.URLError, http.client.HTTPException, OSError) as exc:
        raise _classify(exc) from exc
    # http.client returns a short body without an error when the server closes early
    if length is not None and done != length:
        raise _FailedTry(f"the connection closed after {done} of {length} bytes", True)


def download(
    url: str, dest: Path, df: DataFile, *, timeout: float = 60.0, progress: bool = True, attempts: int | None = None
) -> Path:
    """Download ``url`` to ``dest``, verifying ``df``'s checksums before the file appears.

    The bytes go to a temporary file in the same directory; only a complete
    file with the pinned checksums is renamed to ``dest``.  Any failure
    (network, interruption, checksum) removes the temporary file.

    A transient failure (connection reset or refused, timeout, a body cut
    short, HTTP 5xx, 408, 425 or 429) is retried, up to ``attempts`` tries in
    all (default :data:`RETRY_ATTEMPTS`), after :data:`RETRY_BASE_S`,
    2 × :data:`RETRY_BASE_S`, ... seconds.  A 404 (or any other 4xx), an
    unresolvable host name and a checksum mismatch fail at once.
    """
    attempts = RETRY_ATTEMPTS if attempts is None else max(1, int(attempts))

    def not_found(reason: str) -> DatasetNotFoundError:
        return DatasetNotFoundError(
            f"could not download {url} ({reason}). Fetch it by hand and put it at {dest} "
            f"or under ${DATA_DIR_ENV}/{df.path}"
        )

    with atomic_target(dest) as tmp:
        for attempt in range(1, attempts + 1):
            try:
                _download_once(url, tmp, dest, df, timeout, progress)
                break
            except _FailedTry as failure:
                if not failure.transient or attempt == attempts:
                    tries = f"; gave up after {attempt} tries" if attempt > 1 else ""
                    raise not_found(failure.reason + tries) from (failure.__cause__ or failure)
                delay = _backoff(attempt, failure.retry_after)
                print(
                    f"  {dest.name}: {failure.reason}; retrying in {delay:g} s (try {attempt + 1} of {attempts})",
                    file=sys.stderr,
                )
                _sleep(delay)
        problem, _ = _mismatch(tmp, df)
        if problem:
            raise ChecksumError(
                f"the file downloaded from {url} is not the one the registry pins ({problem}); "
                f"nothing was written to {dest}. The source may have changed: check "
                f"data/registry.toml against it"
            )
    return dest


def _installed_member(dist_spec: str, member: str) -> Path | None:
    """The path of ``member`` in the installed distribution, if that exact version is installed."""
    name, _, version = dist_spec.partition("==")
    try:
        dist = importlib.metadata.distribution(name)
    except importlib.metadata.PackageNotFoundError:
        return None
    if version and dist.version != version:
        return None
    path = Path(str(dist.locate_file(member)))
    return path if path.is_file() else None


def pip_download_command(dist_spec: str, workdir: Path, *, sdist: bool = False) -> list[str]:
    """The ``pip download`` command line for one distribution, without its dependencies.

    ``sdist=True`` asks for the source distribution (some packages ship their
    sample data only there).  pip still prepares the sdist's metadata, and with
    ``--no-build-isolation`` it does so in this environment (which has
    setuptools, wheel and numpy) instead of downloading a build environment.
    """
    cmd = [sys.executable, "-m", "pip", "download", "--no-deps", "--quiet", "-d", str(workdir)]
    if sdist:
        cmd += ["--no-binary", ":all:", "--no-build-isolation"]
    return cmd + [dist_spec]


def _pip_download(dist_spec: str, workdir: Path, *, sdist: bool = False) -> Path:
    """Download the distribution file of ``dist_spec`` from the package index with pip."""
    cmd = pip_download_command(dist_spec, workdir, sdist=sdist)
    proc = subprocess.run(cmd, capture_output=True, text=True)
    files = [p for p in workdir.iterdir() if p.suffix in {".whl", ".zip"} or p.name.endswith(".tar.gz")]
    if proc.returncode != 0 or not files:
        shown = " ".join(cmd[cmd.index("download") :])
        raise DatasetNotFoundError(
            f"`pip {shown}` failed ({proc.stderr.strip()[-400:]}); "
            f"install {dist_spec} or put the files in ${DATA_DIR_ENV}"
        )
    return files[0]


def _archive_member_bytes(archive: Path, member: str) -> bytes:
    if archive.suffix in {".whl", ".zip"}:
        with zipfile.ZipFile(archive) as zf:
            return zf.read(member)
    import tarfile

    with tarfile.open(archive) as tf:
        for info in tf.getmembers():  # sdists prefix members with "name-version/"
            if info.name == member or info.name.split("/", 1)[-1] == member:
                fh = tf.extractfile(info)
                if fh is not None:
                    return fh.read()
    raise KeyError(member)


def fetch_from_pypi(ds: Dataset, files: Iterable[DataFile], dest_root: Path) -> None:
    """Copy ``files`` of a PyPI-shipped dataset into ``dest_root``.

    Uses the installed distribution when its version matches the registry,
    otherwise downloads the distribution once with pip and reads the members
    from the archive.  Every file is checksum-verified and written atomically.
    """

    def check(tmp: Path, df: DataFile, origin: str) -> None:
        problem, _ = _mismatch(tmp, df)
        if problem:
            raise ChecksumError(
                f"{df.member} from {origin} is not the file the registry pins ({problem}); "
                f"nothing was written to {dest_root / df.path}"
            )

    pending = []
    for df in files:
        # an installed package has no sdist-only data: those members always come from the archive
        src = None if ds.extra.get("pypi_sdist") else _installed_member(ds.pypi, df.member)
        if src is not None:
            with atomic_target(dest_root / df.path) as tmp:
                shutil.copyfile(src, tmp)
                check(tmp, df, f"the installed {ds.pypi} ({src})")
        else:
            pending.append(df)
    if not pending:
        return
    with tempfile.TemporaryDirectory() as work:
        if ds.extra.get("pypi_sdist"):
            archive = _pip_download(ds.pypi, Path(work), sdist=True)
        else:
            archive = _pip_download(ds.pypi, Path(work))
        for df in pending:
            try:
                payload = _archive_member_bytes(archive, df.member)
            except KeyError as exc:
                raise DatasetNotFoundError(f"{archive.name} has no member {df.member!r}") from exc
            with atomic_target(dest_root / df.path) as tmp:
                tmp.write_bytes(payload)
                check(tmp, df, archive.name)


def _how_to_get(ds: Dataset, df: DataFile) -> str:
    where = f"{cache_dir() / df.path}"
    if os.environ.get(DATA_DIR_ENV):
        where += f" or {Path(os.environ[DATA_DIR_ENV]) / df.path}"
    if df.url:
        src = f"download {df.url}"
    elif ds.pypi:
        src = f"take {df.member} from the {ds.pypi} distribution on PyPI"
    else:
        src = (
            f"get it from {ds.homepage} (no public download is pinned for this copy: it is read "
            f"only from a data mirror, ${DATA_DIR_ENV}/{df.path}, or from the cache)"
        )
    sums = ", ".join(f"{k} {v}" for k, v in df.checksums().items())
    return f"{src} and put it at {where} ({sums})"


def locate(name: str, file: str | None = None, *, download_ok: bool = True) -> Path:
    """Resolve one file of dataset ``name`` to a verified local path.

    ``file`` picks a file of a multi-file dataset by its name.  With
    ``download_ok=False`` only the data directory and the cache are searched.
    """
    ds = dataset(name)
    df = ds.file(file)
    root = data_dir()
    candidates = [("data_dir", root / df.path)] if root else []
    candidates.append(("cache", cache_dir() / df.path))
    if (legacy := _legacy_cache()) is not None:
        candidates.append(("legacy", legacy / df.path))
    dropped = ""
    for source, path in candidates:
        if path.is_file():
            try:
                sha = verify_file(path, df)
            except ChecksumError as exc:
                if source == "cache":  # our own cache: a bad copy is replaced below
                    path.unlink()
                    dropped = f" (the cached copy was corrupt and has been deleted: {exc})"
                    continue
                if source == "legacy":  # the old in-clone cache is only read: a bad copy is passed over
                    continue
                raise
            report.record_dataset(ds.name, df.path, sha, "cache" if source == "legacy" else source)
            return path
    if not download_ok:
        raise DatasetNotFoundError(f"{ds.name}/{df.path} is not available offline: {_how_to_get(ds, df)}{dropped}")
    dest = cache_dir() / df.path
    if df.url:
        print(f"Downloading {ds.name} ({df.path}) from {df.url}", file=sys.stderr)
        download(df.url, dest, df)
        source = "download"
    elif ds.pypi and df.member:
        # one distribution download serves every file of the dataset still missing from the cache
        siblings = [f for f in ds.files if f is not df and f.member and not (cache_dir() / f.path).is_file()]
        fetch_from_pypi(ds, [df, *siblings], cache_dir())
        source = "pypi"
    else:
        raise DatasetNotFoundError(f"{ds.name}/{df.path} is not available: {_how_to_get(ds, df)}")
    report.record_dataset(ds.name, df.path, verify_file(dest, df), source)
    return dest


def is_available(name: str, file: str | None = None) -> bool:
    """Whether the file is already in the data directory or the cache (no download)."""
    try:
        locate(name, file, download_ok=False)
    except DatasetNotFoundError:
        return False
    return True


def fetch(name: str) -> list[Path]:
    """Resolve every file of a dataset (downloading what is missing)."""
    ds = dataset(name)
    return [locate(name, f.path) for f in ds.files]


def stand_ins(name: str) -> list[str]:
    """The datasets whose registry entry says ``stands_in_for = name`` (in registry order)."""
    dataset(name)
    return [ds.name for ds in registry().values() if ds.stands_in_for == name]


def preferred_copy(name: str) -> str:
    """Which dataset a loader reads for ``name``: ``name`` itself when it is local (data
    directory or cache), else a stand-in that is local (e.g. a mirror-only re-encoding),
    else ``name`` again, to be downloaded from its official source.

    A corrupt local copy counts as local, so that its :class:`ChecksumError` is raised
    instead of being hidden by another copy.
    """
    if _is_local(name):
        return name
    return next((alt for alt in stand_ins(name) if _is_local(alt)), name)


def _is_local(name: str) -> bool:
    """Every file of ``name`` is in the data directory or the cache (no download).

    A corrupt copy counts as local, so that using or fetching it reports the error.
    """
    try:
        return all(is_available(name, f.path) for f in dataset(name).files)
    except ChecksumError:
        return True


# ---------------------------------------------------------------------------
# loaders
# ---------------------------------------------------------------------------

MEDMNIST_SPLITS = ("train", "val", "test")


@dataclass
class MedMNIST:
    """One MedMNIST flag: images ``(N, 28, 28[, 3])`` uint8 and labels ``(N,)`` per split."""

    flag: str
    task: str
    labels: dict[int, str]
    x: dict[str, np.ndarray]
    y: dict[str, np.ndarray]
    path: Path

    @property
    def n_classes(self) -> int:
        return len(self.labels)


def load_medmnist(flag: str) -> MedMNIST:
    """Load a MedMNIST v2 2D flag (28×28) with its official train/val/test split."""
    ds = dataset(flag)
    if ds.kind != "medmnist":
        raise DataError(f"{flag!r} is not a MedMNIST flag (its kind is {ds.kind!r})")
    path = locate(flag)
    with np.load(path) as npz:
        missing = [f"{s}_{k}" for s in MEDMNIST_SPLITS for k in ("images", "labels") if f"{s}_{k}" not in npz]
        if missing:
            raise DataError(f"{path} lacks arrays {missing}; it is not a MedMNIST .npz")
        x = {s: npz[f"{s}_images"] for s in MEDMNIST_SPLITS}
        y = {s: npz[f"{s}_labels"] for s in MEDMNIST_SPLITS}
    if not ds.extra["task"].startswith("multi-label"):
        y = {s: v.reshape(-1).astype(np.int64) for s, v in y.items()}
    for s in MEDMNIST_SPLITS:
        expected = ds.extra["n_samples"][s]
        if len(x[s]) != expected or len(y[s]) != expected:
            raise DataError(f"{path}: split {s} has {len(x[s])} images, the registry says {expected}")
    labels = {int(k): v for k, v in ds.extra["labels"].items()}
    return MedMNIST(flag=flag, task=ds.extra["task"], labels=labels, x=x, y=y, path=path)


CIFAR10_CLASSES = ("airplane", "automobile", "bird", "cat", "deer", "dog", "frog", "horse", "ship", "truck")


@dataclass
class CIFAR10:
    """CIFAR-10 as uint8 arrays ``(N, 32, 32, 3)`` and integer labels, with the copy used."""

    x_train: np.ndarray
    y_train: np.ndarray
    x_test: np.ndarray
    y_test: np.ndarray
    copy: str  # "official archive" or "JPEG mirror"
    path: Path
    classes: tuple[str, ...] = CIFAR10_CLASSES


def _cifar10_from_archive(path: Path) -> tuple[np.ndarray, ...]:
    import pickle
    import tarfile

    xs, ys = {"train": [], "test": []}, {"train": [], "test": []}
    with tarfile.open(path, "r:gz") as tf:
        for info in sorted(tf.getmembers(), key=lambda m: m.name):
            base = Path(info.name).name
            split = "train" if base.startswith("data_batch_") else "test" if base == "test_batch" else None
            if split is None:
                continue
            batch = pickle.load(tf.extractfile(info), encoding="bytes")  # noqa: S301 (checksum-verified file)
            rows = np.asarray(batch[b"data"], dtype=np.uint8)  # N × 3072: the R, G and B planes, row-major
            xs[split].append(rows.reshape(-1, 3, 32, 32).transpose(0, 2, 3, 1))
            ys[split].append(np.asarray(batch[b"labels"], dtype=np.int64))
    empty = [s for s in ("train", "test") if not xs[s]]
    if empty:
        raise DataError(f"{path} has no {' or '.join(empty)} batches; it is not the CIFAR-10 python archive")
    return (
        np.concatenate(xs["train"]),
        np.concatenate(ys["train"]),
        np.concatenate(xs["test"]),
        np.concatenate(ys["test"]),
    )


def _cifar10_from_jpeg_zip(path: Path, sha256: str) -> tuple[np.ndarray, ...]:
    """Decode the JPEG mirror once and keep the arrays in the cache (keyed by checksum)."""
    from PIL import Image

    derived = cache_dir() / "derived" / f"cifar10-jpeg-{sha256[:16]}.npz"
    legacy = _legacy_cache()
    for cached in (derived, *([legacy / derived.relative_to(cache_dir())] if legacy else [])):
        if cached.is_file():
            with np.load(cached) as npz:
                return tuple(npz[k] for k in ("x_train", "y_train", "x_test", "y_test"))
    index = {c: i for i, c in enumerate(CIFAR10_CLASSES)}
    xs, ys = {"train": [], "test": []}, {"train": [], "test": []}
    with zipfile.ZipFile(path) as zf:
        for name in sorted(n for n in zf.namelist() if n.endswith(".jpg")):
            parts = Path(name).parts  # cifar10-jpeg/<split>/<class>/NNNN.jpg
            split, cls = (parts[-3], parts[-2]) if len(parts) >= 3 else ("", "")
            if split not in xs or cls not in index:
                raise DataError(
                    f"{path}: unexpected member {name!r}; expected <split>/<class>/NNNN.jpg with split "
                    f"train or test and class one of {CIFAR10_CLASSES}"
                )
            with Image.open(io.BytesIO(zf.read(name))) as im:
                xs[split].append(np.asarray(im.convert("RGB"), dtype=np.uint8))
            ys[split].append(index[cls])
    empty = [s for s in ("train", "test") if not xs[s]]
    if empty:
        raise DataError(f"{path} has no {' or '.join(empty)} images")
    arrays = (
        np.stack(xs["train"]),
        np.asarray(ys["train"], np.int64),
        np.stack(xs["test"]),
        np.asarray(ys["test"], np.int64),
    )
    with atomic_target(derived) as tmp:
        with open(tmp, "wb") as fh:
            np.savez(fh, x_train=arrays[0], y_train=arrays[1], x_test=arrays[2], y_test=arrays[3])
    return arrays


def load_cifar10() -> CIFAR10:
    """Load CIFAR-10: the official archive if present, else the JPEG mirror, else download the official one.

    The JPEG mirror (``cifar10-jpeg``, mirror-only) is read only when a data
    directory or the cache holds it and no official archive is local
    (:func:`preferred_copy`); without a mirror the official archive is
    downloaded and checksum-verified.  The returned object says which copy
    was used (``copy``); results on the JPEG mirror can differ slightly from
    the official pixels.
    """
    name = preferred_copy("cifar10")
    if name == "cifar10":
        path = locate("cifar10")  # downloads the official archive when no copy is local
        arrays, copy = _cifar10_from_archive(path), "official archive"
    else:  # the JPEG mirror, the registry's only stand-in for cifar10
        path = locate(name)
        sha = verify_file(path, dataset(name).file())
        arrays, copy = _cifar10_from_jpeg_zip(path, sha), "JPEG mirror"
    return _cifar10_checked(arrays, path, copy)


def _cifar10_checked(
    arrays: tuple[np.ndarray, ...], path: Path, copy: str, expected: tuple[int, int] = (50000, 10000)
) -> CIFAR10:
    """Wrap decoded arrays in :class:`CIFAR10` after checking the split sizes."""
    x_train, y_train, x_test, y_test = arrays
    if (len(x_train), len(x_test)) != expected or (len(y_train), len(y_test)) != (len(x_train), len(x_test)):
        raise DataError(
            f"{path}: expected {expected[0]}/{expected[1]} images and as many labels, found "
            f"{len(x_train)}/{len(x_test)} images and {len(y_train)}/{len(y_test)} labels"
        )
    return CIFAR10(x_train, y_train, x_test, y_test, copy=copy, path=path)


def sample(name: str, file: str) -> Path:
    """Path of one sample file of a PyPI-shipped dataset, e.g. ``sample("pydicom-samples", "CT_small.dcm")``."""
    return locate(name, file)


# ---------------------------------------------------------------------------
# loaders: the nuclei image of the stardist wheel
# ---------------------------------------------------------------------------

NUCLEI_DATASET = "stardist-nuclei"


@dataclass
class Nuclei:
    """The 2018 Data Science Bowl fluorescence image shipped with stardist.

    Attributes
    ----------
    image : uint16 (512, 512), the raw nuclear stain
    instances : int32 (512, 512), 0 = background, 1..k one label per nucleus
    mask : uint8 (512, 512), 1 on nucleus pixels (``instances > 0``)
    paths : the two verified files read (image, mask)
    """

    image: np.ndarray
    instances: np.ndarray
    mask: np.ndarray
    paths: tuple

    @property
    def n_nuclei(self) -> int:
        """Number of annotated nuclei (distinct non-zero labels)."""
        return int(len(np.unique(self.instances)) - (0 in self.instances))


def _read_tiff(path: Path) -> np.ndarray:
    import tifffile  # a dependency of scikit-image

    return np.asarray(tifffile.imread(str(path)))


def load_nuclei() -> Nuclei:
    """Load the nuclei image and its instance mask through the data layer .

    The files are ``stardist/data/images/img2d.tif`` and ``mask2d.tif`` of the
    stardist 0.9.2 wheel on PyPI (2018 Data Science Bowl, Caicedo et al.,
    Nature Methods 2019); they are fetched, checksum-verified and cached like
    any other dataset, and stardist itself is never installed.

    Taught in chapter 3, section 1 ("The data, shown before it is modelled"); chapter 4 reads it too.
    """
    img_path = locate(NUCLEI_DATASET, "img2d.tif")
    mask_path = locate(NUCLEI_DATASET, "mask2d.tif")
    image, inst = _read_tiff(img_path), _read_tiff(mask_path)
    if image.shape != inst.shape or image.ndim != 2:
        raise DataError(
            f"{img_path} and {mask_path} must be two 2-D arrays of one shape, got {image.shape} and {inst.shape}"
        )
    inst = inst.astype(np.int32)
    return Nuclei(image=image, instances=inst, mask=(inst > 0).astype(np.uint8), paths=(img_path, mask_path))


# ---------------------------------------------------------------------------
# loaders: the pyradiomics lesion scans (NRRD volumes)
# ---------------------------------------------------------------------------

RADIOMICS_CASES = ("brain1", "brain2", "breast1", "lung1", "lung2")


class Volume(NamedTuple):
    """A 3-D image in array order ``(z, y, x)`` with its geometry in mm."""

    array: np.ndarray
    spacing_mm: tuple[float, float, float]  # (z, y, x)
    origin_mm: tuple[float, float, float]  # world position of voxel (0, 0, 0), in the file's `space`
    space: str


def read_nrrd(path: str | Path) -> Volume:
    """Read a 3-D NRRD file with :mod:`nrrd` (pynrrd) into a :class:`Volume`.

    NRRD stores the fastest-varying axis first (x, y, z); the array is returned
    in C order ``(z, y, x)``, so ``array[k]`` is axial slice ``k``.  Spacing is
    the length of each axis' *space direction* vector; oblique directions are
    kept out of scope (an error says so).  An axis whose direction points
    against its world axis is flipped (and the origin moved to the new first
    voxel), so that indices always increase along +x, +y, +z of ``space``:
    in LPS space row 0 is then anterior and column 0 the patient's right, the
    radiological display convention.
    """
    import nrrd

    path = Path(path)
    try:
        array, header = nrrd.read(str(path), index_order="C")
    except Exception as exc:  # pynrrd raises NRRDError and OSError
        raise ValueError(f"{path.name}: pynrrd cannot read it as NRRD ({exc})") from exc
    if array.ndim != 3:
        raise ValueError(f"{path.name}: expected a 3-D volume, got shape {array.shape}")
    directions = header.get("space directions")
    if directions is None:
        raise ValueError(f"{path.name}: the header has no 'space directions', so the voxel size is unknown")
    directions = np.asarray(directions, dtype=float)  # rows: x, y, z axis vectors
    if np.count_nonzero(np.abs(directions) > 1e-6 * np.abs(directions).max()) != 3:
        raise ValueError(f"{path.name}: oblique space directions {directions.tolist()} are not supported here")
    spacing_xyz = np.linalg.norm(directions, axis=1)
    origin = np.asarray(header.get("space origin", (0.0, 0.0, 0.0)), dtype=float)
    for i in range(3):  # file axis i (x, y, z) is array axis 2 - i
        j = int(np.argmax(np.abs(directions[i])))  # the world axis it runs along
        if directions[i, j] < 0:
            origin = origin + (array.shape[2 - i] - 1) * directions[i]
            array = np.flip(array, axis=2 - i)
    array = np.ascontiguousarray(array)
    return Volume(
        array,
        tuple(float(s) for s in spacing_xyz[::-1]),
        tuple(float(o) for o in origin),
        str(header.get("space", "unknown")),
    )


def load_radiomics_case(case: str) -> tuple[Volume, Volume]:
    """Image and lesion mask of one pyradiomics test case (``RADIOMICS_CASES``), via the data layer.

    Checks that the two files share shape, spacing and origin, so that the
    mask voxels are the image voxels, and returns the mask as ``uint8`` 0/1.

    Taught in chapter 4, section 2.4 ("Real lesions with real masks: the pyradiomics scans").
    """
    if case not in RADIOMICS_CASES:
        raise ValueError(f"case={case!r} is not a pyradiomics test case; choose one of {RADIOMICS_CASES}")
    image = read_nrrd(sample("pyradiomics-samples", f"{case}_image.nrrd"))
    mask = read_nrrd(sample("pyradiomics-samples", f"{case}_label.nrrd"))
    if (
        image.array.shape != mask.array.shape
        or not np.allclose(image.spacing_mm, mask.spacing_mm)
        or not np.allclose(image.origin_mm, mask.origin_mm)
    ):
        raise ValueError(
            f"{case}: image and label geometry differ (shape {image.array.shape} vs "
            f"{mask.array.shape}, spacing {image.spacing_mm} vs {mask.spacing_mm})"
        )
    return image, mask._replace(array=(mask.array > 0).astype(np.uint8))


# ---------------------------------------------------------------------------
# command line
# ---------------------------------------------------------------------------


def _fmt_size(n: int | None) -> str:
    return "unknown" if n is None else f"{n / 1e6:.1f} MB"


def _status(ds: Dataset) -> str:
    try:
        return "available" if all(is_available(ds.name, f.path) for f in ds.files) else "missing"
    except ChecksumError:
        return "CORRUPT"


def _cmd_list(args) -> int:
    for ds in registry().values():
        status = _status(ds)
        print(f"{ds.name:22s} {_fmt_size(ds.size):>10s}  {status:9s}  {ds.title}")
        if args.verbose:
            print(f"{'':22s} licence: {ds.licence}\n{'':22s} cite: {ds.citation}")
    return 0


def _names(args) -> list[str]:
    if args.all:
        return list(registry())
    if args.used:
        return [ds.name for ds in registry().values() if ds.extra.get("used_by")]
    if not args.names:
        raise SystemExit("name one or more datasets, or pass --used / --all (see `python -m utils.data list`)")
    return args.names


def fetch_plan(names: Iterable[str], *, substitute: bool = True) -> tuple[list[str], dict[str, str]]:
    """Split ``names`` into the datasets to fetch and those to skip, with the reason for each skip.

    * A mirror-only dataset (no public source) is skipped unless a data
      directory or the cache already holds it: nothing could download it.
    * With ``substitute`` (``fetch --used``), a dataset for which a local
      stand-in exists and no local copy is skipped, because the loaders read the
      stand-in (:func:`preferred_copy`); without a local stand-in the dataset
      itself, e.g. the official CIFAR-10 archive, is fetched.
    """
    names = list(names)
    root = data_dir()
    where = f"not in the data directory {root}" if root else f"${DATA_DIR_ENV} is not set"
    todo, skipped = [], {}
    for name in names:
        ds = dataset(name)
        if ds.mirror_only and not _is_local(name):
            if ds.stands_in_for:
                then = f"the official {ds.stands_in_for!r} is used instead"
            else:
                then = f"put it under ${DATA_DIR_ENV} to use it ({ds.homepage})"
            skipped[name] = f"mirror-only copy (no public download) and {where}; {then}"
        elif substitute and (alt := preferred_copy(name)) != name:
            skipped[name] = (
                f"the local {alt!r} stands in for it (the loaders read that copy); `fetch {name}` downloads it anyway"
            )
        else:
            todo.append(name)
    return todo, skipped


def _dry_run(name: str) -> bool:
    """Print what fetching ``name`` would do, touching nothing; ``False`` if a file cannot be had."""
    ds = dataset(name)
    ok = True
    root = data_dir()
    for f in ds.files:
        local, note = None, ""
        for source, folder in (("data_dir", root), ("cache", cache_dir()), ("legacy", _legacy_cache())):
            if folder is None or not (folder / f.path).is_file():
                continue
            problem, _ = _mismatch(folder / f.path, f)
            if problem is None:
                local = folder / f.path
                break
            if source == "data_dir":
                print(f"BAD  {name}: {folder / f.path}: {problem}", file=sys.stderr)
                ok, local = False, "bad"
                break
            if source == "cache":
                note = " (the cached copy is corrupt and would be replaced)"
        if local == "bad":
            continue
        if local is not None:
            print(f"have {name}: {local}")
        elif f.url:
            print(f"get  {name}: {f.path} from {f.url} ({_fmt_size(f.size)}){note}")
        elif ds.pypi and f.member:
            installed = not ds.extra.get("pypi_sdist") and _installed_member(ds.pypi, f.member) is not None
            origin = f"the installed {ds.pypi}" if installed else f"{ds.pypi} on PyPI"
            print(f"get  {name}: {f.path} from {origin} ({f.member}){note}")
        else:
            print(f"ERR  {name}: {f.path} is not available: {_how_to_get(ds, f)}", file=sys.stderr)
            ok = False
    return ok


def _cmd_fetch(args) -> int:
    if args.used or args.all:
        names, skipped = fetch_plan(_names(args), substitute=not args.all)
    else:
        names, skipped = _names(args), {}
    for name, why in skipped.items():
        print(f"skip {name}: {why}")
    failed, done = [], []
    for name in names:
        try:
            if args.dry_run:
                (done if _dry_run(name) else failed).append(name)
                continue
            for p in fetch(name):
                print(f"ok  {name}: {p}")
            done.append(name)
        except DataError as exc:
            failed.append(name)
            print(f"ERR {name}: {exc}", file=sys.stderr)
    if args.used or args.all or len(names) > 1:
        verb = "could be fetched" if args.dry_run else "fetched"
        print(
            f"{len(done)} of {len(names) + len(skipped)} datasets {verb}, {len(skipped)} skipped"
            + (f", {len(failed)} failed: {', '.join(failed)} (see the ERR lines)" if failed else ""),
            file=sys.stderr if failed else sys.stdout,
        )
    return 1 if failed else 0


def _cmd_verify(args) -> int:
    failed = 0
    for name in _names(args):
        for f in dataset(name).files:
            try:
                p = locate(name, f.path, download_ok=False)
                print(f"ok      {name}: {p}")
            except DatasetNotFoundError:
                print(f"missing {name}: {f.path}")
                failed += int(not (args.all or args.used))
            except ChecksumError as exc:
                print(f"BAD     {name}: {exc}", file=sys.stderr)
                failed += 1
    return 1 if failed else 0


def main(argv: list[str] | None = None) -> int:
    epilog = (
        f"where files are looked for: ${DATA_DIR_ENV} (a read-only mirror laid out like the registry's "
        f"paths; now {os.environ.get(DATA_DIR_ENV) or 'not set'}), then the cache ${CACHE_DIR_ENV} "
        f"(now {cache_dir()}; by default $XDG_CACHE_HOME/{CACHE_SUBDIR} or ~/.cache/{CACHE_SUBDIR}, "
        f"shared by every clone), then the official source (downloads are retried "
        f"{RETRY_ATTEMPTS - 1} times on transient errors, verified and written atomically). "
        f"Mirror-only datasets are skipped by `fetch --used` when no mirror has them."
    )
    epilog = textwrap.fill(epilog, width=78, break_on_hyphens=False, break_long_words=False)
    parser = argparse.ArgumentParser(
        prog="python -m utils.data",
        description=__doc__.split("\n\n")[0],
        epilog=epilog,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    sub = parser.add_subparsers(dest="cmd", required=True)
    p = sub.add_parser("list", help="list the registry and what is available locally")
    p.add_argument("-v", "--verbose", action="store_true", help="also print licence and citation")
    p.set_defaults(func=_cmd_list)
    for cmd, func, text in (
        ("fetch", _cmd_fetch, "resolve (download if needed) datasets"),
        ("verify", _cmd_verify, "check checksums of local copies without downloading"),
    ):
        p = sub.add_parser(
            cmd, help=text, description=text, epilog=epilog, formatter_class=argparse.RawDescriptionHelpFormatter
        )
        p.add_argument("names", nargs="*", help="dataset names (see `list`)")
        p.add_argument("--all", action="store_true", help="every dataset in the registry")
        p.add_argument(
            "--used",
            action="store_true",
            help="the datasets a chapter reads (their used_by); for fetch, mirror-only copies "
            "that no mirror holds are skipped, and the official source is fetched instead",
        )
        if cmd == "fetch":
            p.add_argument(
                "-n",
                "--dry-run",
                action="store_true",
                help="only say what is local and what would be downloaded from where",
            )
        p.set_defaults(func=func)
    args = parser.parse_args(argv)
    try:
        return args.func(args)
    except DataError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())
