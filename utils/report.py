"""What a notebook reports to the run report: metrics, timings, datasets, environment.

Notebooks call :func:`metric` and :func:`timing`; the data layer calls
:func:`record_dataset`; :func:`utils.course.setup` calls :func:`environment`.
When the runner (``python -m utils.run``) executes a notebook it sets
``MEDIMG_RUN_RECORD`` to a JSON path, and every call rewrites that file
atomically, so even a notebook that fails half-way leaves what it reported.
Run interactively (no variable set), the record is kept in memory only and
:func:`current` shows it.
"""

from __future__ import annotations

import json
import math
import os
import tempfile
from pathlib import Path
from typing import Any

RECORD_ENV = "MEDIMG_RUN_RECORD"

_record: dict[str, Any] = {"metrics": {}, "timings": {}, "datasets": [], "environment": {}}


def _flush() -> None:
    target = os.environ.get(RECORD_ENV)
    if not target:
        return
    path = Path(target)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".part")
    with os.fdopen(fd, "w") as fh:
        json.dump(_record, fh, indent=1, sort_keys=True)
    os.replace(tmp, path)


def _plain(value: Any) -> Any:
    """Convert numpy scalars / arrays to JSON-friendly Python values."""
    if hasattr(value, "tolist"):
        value = value.tolist()
    if isinstance(value, float) and not math.isfinite(value):
        return str(value)
    return value


def metric(name: str, value: Any, *, unit: str | None = None, target: str | None = None,
           split: str | None = None) -> Any:
    """Record a key result of the chapter (shown in the reproducibility report) and return it.

    ``target`` is a human-readable goal, e.g. ``">= 0.944 (ResNet-18 28)"``.
    """
    if not name or not isinstance(name, str):
        raise ValueError(f"metric name must be a non-empty string, got {name!r}")
    entry = {"value": _plain(value)}
    for key, val in (("unit", unit), ("target", target), ("split", split)):
        if val is not None:
            entry[key] = val
    _record["metrics"][name] = entry
    _flush()
    return value


def timing(name: str, seconds: float, *, n_items: int | None = None, item: str = "images") -> dict:
    """Record a training/evaluation time and, with ``n_items``, its throughput (items/s)."""
    if seconds < 0:
        raise ValueError(f"timing {name!r}: seconds must be >= 0, got {seconds}")
    entry: dict[str, Any] = {"seconds": round(float(seconds), 3)}
    if n_items is not None:
        entry["n_items"] = int(n_items)
        entry["item"] = item
        entry["per_second"] = round(n_items / seconds, 1) if seconds > 0 else None
    _record["timings"][name] = entry
    _flush()
    return entry


def record_dataset(name: str, path: str, sha256: str, source: str) -> None:
    """Note that the notebook read ``path`` of dataset ``name`` (called by :mod:`utils.data`)."""
    entry = {"dataset": name, "file": path, "sha256": sha256, "source": source}
    if entry not in _record["datasets"]:
        _record["datasets"].append(entry)
        _flush()


def environment(**facts: Any) -> None:
    """Record facts about the kernel (backend, devices, versions)."""
    _record["environment"].update({k: _plain(v) for k, v in facts.items()})
    _flush()


def current() -> dict[str, Any]:
    """A copy of everything recorded so far in this process."""
    return json.loads(json.dumps(_record))


def reset() -> None:
    """Forget everything recorded (used by tests)."""
    for key in ("metrics", "timings", "environment"):
        _record[key] = {}
    _record["datasets"] = []
