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
import secrets
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
    text = json.dumps(_record, indent=1, sort_keys=True)  # fails here, before any file is touched
    tmp = path.parent / f".{path.name}.{secrets.token_hex(6)}.part"
    try:
        with open(tmp, "x", encoding="utf-8") as fh:  # unlike mkstemp's 0600, the umask decides the mode
            fh.write(text)
        os.replace(tmp, path)
    finally:
        tmp.unlink(missing_ok=True)


def _plain(value: Any) -> Any:
    """Convert numpy (or Keras backend) scalars / arrays to JSON-friendly Python values.

    Works through lists, tuples and dicts; non-finite floats become the strings
    ``"nan"``, ``"inf"``, ``"-inf"`` (JSON has no such numbers).  Raises
    :class:`TypeError` for a value that has no JSON form.
    """
    if hasattr(value, "numpy") and callable(value.numpy) and not hasattr(value, "tolist"):
        value = value.numpy()  # a TensorFlow tensor
    if hasattr(value, "tolist"):
        value = value.tolist()
    if isinstance(value, dict):
        return {str(k): _plain(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_plain(v) for v in value]
    if isinstance(value, float) and not math.isfinite(value):
        return str(value)
    if value is None or isinstance(value, (str, bool, int, float)):
        return value
    raise TypeError(f"cannot record {value!r} ({type(value).__name__}) in the run report; "
                    f"pass a number, a string, or a list/array of them")


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
            entry[key] = _plain(val)
    _record["metrics"][name] = entry
    _flush()
    return value


def timing(name: str, seconds: float, *, n_items: int | None = None, item: str = "images") -> dict:
    """Record a training/evaluation time and, with ``n_items``, its throughput (items/s)."""
    if not name or not isinstance(name, str):
        raise ValueError(f"timing name must be a non-empty string, got {name!r}")
    if not math.isfinite(seconds) or seconds < 0:
        raise ValueError(f"timing {name!r}: seconds must be a finite number >= 0, got {seconds}")
    if n_items is not None and n_items < 0:
        raise ValueError(f"timing {name!r}: n_items must be >= 0, got {n_items}")
    entry: dict[str, Any] = {"seconds": round(float(seconds), 3)}
    if n_items is not None:
        entry["n_items"] = int(n_items)
        entry["item"] = item
        entry["per_second"] = round(float(n_items / seconds), 1) if seconds > 0 else None
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
