"""Verdicts, interval formatting and target judgements: the one place the book's words come from.

The book never types "higher", "no difference" or "met" by hand.  A chapter turns an estimate
with its confidence interval and a reference (a benchmark value, or zero for a paired
difference) into a verdict with :func:`verdict`, and inserts it into its prose through
:func:`utils.report.glue_verdict`.  The reproducibility report judges every metric that has a
target with :func:`judge`, which uses the same rule.

The rule (taught in chapter 2, section "Reading an interval", and used in every chapter):

* ``"above"``: the whole interval lies above the reference (its lower end is greater);
* ``"below"``: the whole interval lies below it;
* ``"no detectable difference"``: the interval contains the reference (touching counts as
  containing).  This is *not* evidence of equality: it says the run cannot tell.
"""

from __future__ import annotations

import math
import re
from collections.abc import Iterable, Sequence
from dataclasses import dataclass

import numpy as np

ABOVE = "above"
NO_DIFFERENCE = "no detectable difference"
BELOW = "below"
VERDICTS = (ABOVE, NO_DIFFERENCE, BELOW)

MINUS = "\u2212"  # the typographic minus sign the book uses in numbers


def _finite(name: str, value) -> float:
    try:
        value = float(value)
    except (TypeError, ValueError):
        raise TypeError(f"{name} must be a number, got {value!r}") from None
    if not math.isfinite(value):
        raise ValueError(f"{name} must be finite, got {value}")
    return value


def verdict(estimate: float, low: float, high: float, reference: float = 0.0) -> str:
    """``"above"``, ``"below"`` or ``"no detectable difference"`` for an interval and a reference.

    ``estimate`` is checked only for being finite (a percentile bootstrap interval need not
    contain its point estimate); ``low <= high`` is required.

    >>> verdict(0.02, 0.01, 0.03)
    'above'
    >>> verdict(0.97, 0.96, 0.98, reference=0.944)
    'above'
    >>> verdict(0.002, -0.002, 0.005)
    'no detectable difference'
    """
    _finite("estimate", estimate)
    low, high, reference = _finite("low", low), _finite("high", high), _finite("reference", reference)
    if low > high:
        raise ValueError(f"the interval's lower end {low} is above its upper end {high}; pass (estimate, low, high)")
    if low > reference:
        return ABOVE
    if high < reference:
        return BELOW
    return NO_DIFFERENCE


def phrase(result: str, *, above: str, none: str, below: str) -> str:
    """The wording a sentence needs for a verdict, e.g. ``above="higher than"``.

    Raises :class:`ValueError` for anything that is not one of :data:`VERDICTS`, so that a
    typo cannot silently pick a wording.
    """
    words = {ABOVE: above, NO_DIFFERENCE: none, BELOW: below}
    if result not in words:
        raise ValueError(f"{result!r} is not a verdict; expected one of {VERDICTS}")
    return words[result]


@dataclass(frozen=True)
class SeedVerdicts:
    """Verdicts of several training runs (seeds) against one reference."""

    per_seed: tuple[str, ...]
    signs: tuple[int, ...]  # sign of each point estimate minus the reference: -1, 0, +1

    @property
    def consistent(self) -> bool:
        """True when every seed reached the same verdict."""
        return len(set(self.per_seed)) == 1

    @property
    def sign_changes(self) -> bool:
        """True when the point estimates fall on both sides of the reference."""
        return 1 in self.signs and -1 in self.signs

    def summary(self, reference: str = "the reference") -> str:
        """One clause for the prose, e.g. ``"the same verdict (above) in all 3 training runs"``.

        ``reference`` names what the estimates are compared with (``"zero"`` for a paired
        difference, ``"the benchmark"``...).
        """
        n = len(self.per_seed)
        runs = "both training runs" if n == 2 else f"all {n} training runs" if n > 2 else "the one training run"
        if self.consistent:
            text = f"the same verdict ({self.per_seed[0]}) in {runs}"
        else:
            counts = {v: self.per_seed.count(v) for v in VERDICTS if v in self.per_seed}
            text = (
                "the verdict changes between training runs ("
                + ", ".join(f"{v}: {c} of {n}" for v, c in counts.items())
                + ")"
            )
        if self.sign_changes:
            text += f"; the point estimates fall on both sides of {reference}"
        return text


def seed_verdicts(intervals: Iterable[Sequence[float]], reference: float = 0.0) -> SeedVerdicts:
    """:func:`verdict` for each ``(estimate, low, high)`` of several seeds, and whether they agree."""
    rows = [tuple(r) for r in intervals]
    if not rows:
        raise ValueError("seed_verdicts needs at least one (estimate, low, high)")
    per_seed, signs = [], []
    for row in rows:
        if len(row) != 3:
            raise ValueError(f"each seed needs (estimate, low, high), got {row!r}")
        per_seed.append(verdict(*row, reference=reference))
        diff = float(row[0]) - float(reference)
        signs.append(0 if diff == 0 else (1 if diff > 0 else -1))
    return SeedVerdicts(tuple(per_seed), tuple(signs))


def percentile_interval(point: float, replicates, alpha: float = 0.05) -> tuple[float, float, float]:
    """``(point, low, high)``: a point estimate with the percentile ``(1 - alpha)`` interval of its replicates.

    ``replicates`` are the statistic recomputed on bootstrap resamples (drawn by the caller, e.g. the
    same resamples for two methods, whose per-replicate differences then give a paired interval); NaN
    replicates (a resample on which the statistic is undefined) are ignored, as in
    :func:`utils.metrics.bootstrap_ci` and :func:`utils.detect.bootstrap_detection_ci`, which compute
    their intervals the same way.  ``point`` is returned as it is: a percentile interval need not
    contain it.

    Raises
    ------
    ValueError
        If ``alpha`` is not in (0, 1) or no replicate is finite.

    >>> percentile_interval(0.5, [0.1, 0.2, 0.3, 0.4, 0.5, 0.6, 0.7, 0.8, 0.9], alpha=0.5)
    (0.5, 0.3, 0.7)

    Taught in chapter 4, section 4.2 ("COCO average precision": intervals over resampled images), and its
    paired use in section 5.5 ("The FROC curves, and the headline numbers").
    """
    if not 0 < alpha < 1:
        raise ValueError(f"alpha must be in (0, 1), got {alpha}")
    reps = np.asarray(replicates, float).reshape(-1)
    if not np.isfinite(reps).any():
        raise ValueError(f"percentile_interval needs at least one finite replicate, got {len(reps)} without one")
    lo, hi = np.nanpercentile(reps, [100 * alpha / 2, 100 * (1 - alpha / 2)])
    return float(point), float(lo), float(hi)


def fmt_number(value: float, digits: int = 3, *, signed: bool = False, percent: bool = False) -> str:
    """A number as the book prints it: fixed decimals, a real minus sign, optional sign or %.

    >>> fmt_number(-0.0084, 3)
    '−0.008'
    >>> fmt_number(0.002, 3, signed=True)
    '+0.002'
    >>> fmt_number(0.1234, 1, percent=True)
    '12.3 %'
    """
    value = _finite("value", value)
    if percent:
        value *= 100
    text = format(value, f"{'+' if signed else ''}.{digits}f")
    if text.lstrip("+-").strip("0.") == "":  # "-0.000" and "+0.000" are plain zero
        text = ("+" if signed else "") + text.lstrip("+-")
    text = text.replace("-", MINUS)
    return text + (" %" if percent else "")


def fmt_interval(
    estimate: float, low: float, high: float, digits: int = 3, *, signed: bool = False, percent: bool = False
) -> str:
    """``"0.987 [0.980, 0.992]"`` (estimate and its interval), with :func:`fmt_number`'s options."""
    est, low, high = (fmt_number(v, digits, signed=signed, percent=percent) for v in (estimate, low, high))
    return f"{est} [{low}, {high}]"


# ------------------------------------------------------------------ targets of the run report
_NUMBER = r"[-+\u2212]?(?:\d+\.?\d*|\.\d+)(?:e[-+]?\d+)?"
_OPS = {">=": ">=", "\u2265": ">=", "<=": "<=", "\u2264": "<=", ">": ">", "<": "<"}

MET, NOT_MET, NOT_SHOWN, NOT_JUDGED = "met", "not met", "not shown", "not judged"


@dataclass(frozen=True)
class Target:
    """A machine-readable target: ``op`` one of ``>= > <= < range ==``, reference(s), free text."""

    op: str
    reference: float
    upper: float | None = None  # for "range"
    text: str = ""
    decimals: int = 0  # for "==": a target written "-1000" is met by a value that rounds to it


def _num(text: str) -> float:
    return float(text.replace(MINUS, "-"))


def parse_target(text: str) -> Target | None:
    """Read a target written as ``">= 0.944 (ResNet-18)"``, ``"< 1e-9"``, ``"20 to 45"`` or ``"0"``.

    Returns ``None`` when the text states no number to compare with (then the report shows the
    text and says it was not judged automatically).
    """
    if not isinstance(text, str):
        return None
    s = text.strip()
    m = re.match(rf"^(>=|<=|\u2265|\u2264|>|<)\s*({_NUMBER})(?![\w.])", s, re.I)
    if m:
        return Target(_OPS[m.group(1)], _num(m.group(2)), text=text)
    m = re.match(rf"^({_NUMBER})\s*(?:to|\u2013|\.\.)\s*({_NUMBER})(?![\w.])", s, re.I)
    if m:
        a, b = sorted((_num(m.group(1)), _num(m.group(2))))
        return Target("range", a, b, text=text)
    m = re.match(rf"^({_NUMBER})(?:\s*\(.*\))?$", s, re.I)
    if m:
        number = m.group(1)
        decimals = len(number.split(".", 1)[1]) if "." in number and "e" not in number.lower() else 0
        return Target("==", _num(number), text=text, decimals=decimals)
    return None


def _interval(value) -> tuple[float, float, float] | None:
    """(estimate, low, high) from a reported value [estimate, low, high], or None for a scalar."""
    if isinstance(value, (list, tuple)) and len(value) == 3 and all(isinstance(v, (int, float)) for v in value):
        est, low, high = (float(v) for v in value)
        if low <= high:
            return est, low, high
    return None


def judge(value, target: Target | str | None) -> tuple[str, str]:
    """Whether a reported value meets its target: ``(status, why)``.

    ``value`` is a number, or ``[estimate, low, high]`` for a result with its interval. With an
    interval the verdict decides: a ``>=`` target is *met* only when the interval lies above
    the reference, *not met* when it lies below, and *not shown* when it contains it (the run
    cannot tell). A plain number is compared as it is (and the reason says so).
    """
    if isinstance(target, str) or target is None:
        target = parse_target(target) if target else None
    if target is None:
        return NOT_JUDGED, "the target states no number to compare with"
    ci = _interval(value)
    if isinstance(value, bool) or (ci is None and not isinstance(value, (int, float))):
        return NOT_JUDGED, "the value is not a number or an (estimate, low, high) interval"
    if target.op == "range":
        lo, hi = target.reference, target.upper
        if ci is None:
            inside = lo <= float(value) <= hi
            return (MET if inside else NOT_MET), "point value compared with the range"
        est, low, high = ci
        if lo <= low and high <= hi:
            return MET, "the whole interval lies in the range"
        if high < lo or low > hi:
            return NOT_MET, "the whole interval lies outside the range"
        return NOT_SHOWN, "the interval straddles an end of the range"
    if target.op == "==":
        if ci is None:
            ok = round(float(value), target.decimals) == round(target.reference, target.decimals)
            return (
                MET if ok else NOT_MET
            ), f"point value, rounded as the target is written ({target.decimals} decimals)"
        v = verdict(*ci, reference=target.reference)
        return (MET if v == NO_DIFFERENCE else NOT_MET), f"interval {v} the reference"
    if ci is None:
        x, ref = float(value), target.reference
        ok = {">=": x >= ref, ">": x > ref, "<=": x <= ref, "<": x < ref}[target.op]
        return (MET if ok else NOT_MET), "point value, no interval"
    v = verdict(*ci, reference=target.reference)
    wanted = ABOVE if target.op in (">=", ">") else BELOW
    if v == wanted:
        return MET, f"the whole interval is {wanted} the reference"
    if v == NO_DIFFERENCE:
        return NOT_SHOWN, "the interval contains the reference"
    return NOT_MET, f"the whole interval is {v} the reference"


def join_words(items) -> str:
    """``"a"``, ``"a and b"``, ``"a, b and c"``: a list of names as the prose says it.

    Used by chapter 6 (both parts) to name the settings that share a computed verdict.
    """
    items = [str(i) for i in items]
    if not items:
        raise ValueError("join_words needs at least one item")
    return items[0] if len(items) == 1 else ", ".join(items[:-1]) + " and " + items[-1]
