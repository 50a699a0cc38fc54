"""What a notebook reports to the run report: metrics, timings, datasets, environment.

Notebooks call :func:`metric` and :func:`timing`, and insert measured numbers and verdicts
into their prose with :func:`glue`, :func:`glue_interval` and :func:`glue_verdict` (MyST-NB's
``glue``: the markdown says ``{glue:text}`key```, the book shows the value of the run that
produced the page, and the value is also kept in the run report); the data layer calls
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
import re
import time
from pathlib import Path
from typing import Any

import numpy as np

from . import files

RECORD_ENV = "MEDIMG_RUN_RECORD"

_record: dict[str, Any] = {"metrics": {}, "timings": {}, "datasets": [], "environment": {}, "glued": {}}


def _flush() -> None:
    target = os.environ.get(RECORD_ENV)
    if not target:
        return
    path = Path(target)
    path.parent.mkdir(parents=True, exist_ok=True)
    text = json.dumps(_record, indent=1, sort_keys=True)  # fails here, before any file is touched
    files.write_text(path, text)


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
    raise TypeError(
        f"cannot record {value!r} ({type(value).__name__}) in the run report; "
        f"pass a number, a string, or a list/array of them"
    )


def metric(
    name: str, value: Any, *, unit: str | None = None, target: str | None = None, split: str | None = None
) -> Any:
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


class timer:
    """``with report.timer("training", n_items=len(x)):`` records the block's wall time (see :func:`timing`).

    The entry is recorded only when the block finishes without an exception; ``.seconds`` holds the
    time afterwards, for a notebook that also prints or glues it.
    """

    def __init__(self, name: str, *, n_items: int | None = None, item: str = "images"):
        if not name or not isinstance(name, str):
            raise ValueError(f"timing name must be a non-empty string, got {name!r}")
        self.name, self.n_items, self.item = name, n_items, item
        self.seconds: float | None = None

    def __enter__(self) -> timer:
        self._t0 = time.perf_counter()
        return self

    def __exit__(self, exc_type, exc, tb) -> bool:
        self.seconds = time.perf_counter() - self._t0
        if exc_type is None:
            timing(self.name, self.seconds, n_items=self.n_items, item=self.item)
        return False


def _glue_to_notebook(name: str, text: str) -> None:
    """Hand ``text`` to MyST-NB's glue (a hidden output the book reads); nothing outside a kernel."""
    try:
        from IPython import get_ipython
    except ImportError:  # pragma: no cover - IPython ships with the course
        return
    if get_ipython() is None:  # plain Python (tests, scripts): nothing to glue into
        return
    try:
        from myst_nb import glue as myst_glue
    except ImportError:  # e.g. on Colab without the book's tools: the value is still returned and recorded
        return

    myst_glue(name, text, display=False)


_KEY = re.compile(r"^[A-Za-z][A-Za-z0-9_]*$")


class Glued(str):
    """The text that :func:`glue` inserted: a plain string that a notebook does not echo.

    A glue call as the last line of a cell would otherwise show its return value under the
    cell; the page is about the lesson, not the plumbing.
    """

    def _ipython_display_(self) -> None:
        pass


def glue(
    name: str,
    value: Any,
    fmt: str | None = None,
    *,
    digits: int | None = None,
    signed: bool = False,
    percent: bool = False,
) -> str:
    """Insert a measured value into the chapter's prose; return the text inserted.

    The markdown refers to it as ``{glue:text}`name```. ``value`` is a string (inserted as it
    is), or a number formatted with ``fmt`` (a format spec such as ``",d"``) or with ``digits``
    decimals through :func:`utils.stats.fmt_number` (real minus sign; ``signed`` adds a ``+``;
    ``percent`` multiplies by 100 and appends ``%``). The text is recorded under ``glued`` in
    the run report, so that the report and the page can be compared.
    """
    from . import stats

    if not isinstance(name, str) or not _KEY.match(name):
        raise ValueError(f"glue name must be a letter followed by letters, digits or _, got {name!r}")
    if isinstance(value, str):
        text = value
    elif fmt is not None:
        text = format(value, fmt).replace("-", stats.MINUS)
    elif isinstance(value, (bool, np.bool_)):
        raise TypeError(f"glue {name!r}: pass a boolean as the words it stands for, not {value!r}")
    elif isinstance(value, (int, np.integer)) and digits is None and not percent:
        text = format(int(value), ",d") if abs(int(value)) >= 10_000 else str(int(value))
        text = text.replace("-", stats.MINUS)
    else:
        text = stats.fmt_number(value, 3 if digits is None else digits, signed=signed, percent=percent)
    _record["glued"][name] = text
    _flush()
    _glue_to_notebook(name, text)
    return Glued(text)


def glue_interval(
    name: str,
    estimate: Any,
    low: Any = None,
    high: Any = None,
    *,
    digits: int = 3,
    signed: bool = False,
    percent: bool = False,
) -> str:
    """Glue ``"estimate [low, high]"`` under ``name`` (and the three parts as ``name_est``, ``name_lo``, ``name_hi``).

    ``estimate`` may be an ``(estimate, low, high)`` triple instead of three arguments.
    """
    from . import stats

    if low is None and high is None:
        estimate, low, high = estimate
    parts = {"est": estimate, "lo": low, "hi": high}
    for suffix, v in parts.items():
        glue(f"{name}_{suffix}", v, digits=digits, signed=signed, percent=percent)
    return glue(name, stats.fmt_interval(estimate, low, high, digits, signed=signed, percent=percent))


def glue_verdict(
    name: str,
    estimate: Any,
    low: Any = None,
    high: Any = None,
    *,
    reference: float = 0.0,
    above: str | None = None,
    none: str | None = None,
    below: str | None = None,
) -> str:
    """Glue the verdict of :func:`utils.stats.verdict` (or the wording chosen for it); return the verdict.

    Without wordings the glued text is the verdict itself (``"above"``, ``"no detectable
    difference"``, ``"below"``). With all three wordings (e.g. ``above="higher than"``) the
    glued text is the one that matches. The return value is always the bare verdict, so that
    the notebook can branch on it.
    """
    from . import stats

    if low is None and high is None:
        estimate, low, high = estimate
    result = stats.verdict(estimate, low, high, reference=reference)
    wordings = (above, none, below)
    if any(w is not None for w in wordings):
        if not all(isinstance(w, str) for w in wordings):
            raise ValueError(f"glue_verdict {name!r}: give all three wordings (above, none, below) or none")
        glue(name, stats.phrase(result, above=above, none=none, below=below))
    else:
        glue(name, result)
    return Glued(result)


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
    for key in ("metrics", "timings", "environment", "glued"):
        _record[key] = {}
    _record["datasets"] = []
