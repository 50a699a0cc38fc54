"""Writing files so that a reader never sees half of one: the course's one atomic writer.

Used by the data layer (downloads, extracted archives, derived files), the run report and the
runner's cache. A file is written under a temporary name beside its destination and moved into
place with ``os.replace`` only when it is complete, so an interrupted or failed write leaves the old
file (or nothing) and never a file that looks valid. Temporary files get the mode ``open()`` would
give them (the umask applies), unlike ``tempfile.mkstemp``'s 0600, which would leave a shared cache
unreadable to other users.
"""

from __future__ import annotations

import contextlib
import os
import secrets
from collections.abc import Iterator
from pathlib import Path


def new_temp_file(folder: Path, prefix: str, suffix: str) -> Path:
    """Create an empty, uniquely named file in ``folder`` and return its path."""
    for _ in range(100):
        path = Path(folder) / f"{prefix}{secrets.token_hex(6)}{suffix}"
        try:
            os.close(os.open(path, os.O_CREAT | os.O_EXCL | os.O_WRONLY, 0o666))  # the umask applies
        except FileExistsError:
            continue
        return path
    raise FileExistsError(f"could not create a temporary file in {folder}")


@contextlib.contextmanager
def atomic_target(dest: Path) -> Iterator[Path]:
    """Yield a temporary path beside ``dest``; move it onto ``dest`` only if the block succeeds."""
    dest = Path(dest)
    dest.parent.mkdir(parents=True, exist_ok=True)
    tmp_path = new_temp_file(dest.parent, f".{dest.name}.", ".part")
    try:
        yield tmp_path
        os.replace(tmp_path, dest)
    finally:
        tmp_path.unlink(missing_ok=True)


def write_text(dest: Path, text: str, encoding: str = "utf-8") -> None:
    """Write ``text`` to ``dest`` atomically (see the module docstring)."""
    with atomic_target(dest) as tmp:
        tmp.write_text(text, encoding=encoding)
