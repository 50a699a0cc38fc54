"""Tests of utils.stats: the verdicts, wordings and target judgements the book's prose comes from."""

from __future__ import annotations

import math

import numpy as np
import pytest

from utils import stats
from utils.stats import ABOVE, BELOW, MET, NO_DIFFERENCE, NOT_JUDGED, NOT_MET, NOT_SHOWN


@pytest.mark.parametrize(
    "est, lo, hi, ref, expected",
    [
        (0.02, 0.01, 0.03, 0.0, ABOVE),
        (-0.02, -0.03, -0.01, 0.0, BELOW),
        (0.002, -0.002, 0.005, 0.0, NO_DIFFERENCE),
        (0.973, 0.961, 0.983, 0.944, ABOVE),  # a benchmark value below the whole interval
        (0.922, 0.872, 0.963, 0.901, NO_DIFFERENCE),  # the benchmark inside the interval
        (0.864, 0.841, 0.886, 0.878, NO_DIFFERENCE),
        (0.50, 0.45, 0.55, 0.60, BELOW),
        (0.0, 0.0, 0.1, 0.0, NO_DIFFERENCE),  # touching the reference is not "above"
        (0.0, -0.1, 0.0, 0.0, NO_DIFFERENCE),
    ],
)
def test_verdict(est, lo, hi, ref, expected):
    assert stats.verdict(est, lo, hi, reference=ref) == expected


def test_the_two_runs_of_the_issue_get_different_verdicts():
    # chapter 3's seed-averaged phantom difference on two machines: the prose must follow the run
    assert stats.verdict(0.002, -0.002, 0.005) == NO_DIFFERENCE
    assert stats.verdict(-0.008, -0.016, -0.002) == BELOW


@pytest.mark.parametrize(
    "args, error",
    [
        ((0.1, 0.2, 0.1), ValueError),  # low above high
        ((math.nan, 0.0, 0.1), ValueError),
        ((0.1, 0.0, math.inf), ValueError),
        (("x", 0.0, 0.1), TypeError),
    ],
)
def test_verdict_rejects_bad_input(args, error):
    with pytest.raises(error):
        stats.verdict(*args)


def test_phrase_picks_the_matching_wording_and_refuses_a_typo():
    words = dict(above="higher than", none="not detectably different from", below="lower than")
    assert stats.phrase(ABOVE, **words) == "higher than"
    assert stats.phrase(NO_DIFFERENCE, **words) == "not detectably different from"
    assert stats.phrase(BELOW, **words) == "lower than"
    with pytest.raises(ValueError, match="not a verdict"):
        stats.phrase("higher", **words)


def test_seed_verdicts_agree_and_disagree():
    same = stats.seed_verdicts([(0.01, 0.005, 0.02), (0.02, 0.01, 0.03)])
    assert same.consistent and not same.sign_changes
    assert same.summary() == "the same verdict (above) in both training runs"
    assert stats.seed_verdicts([(0.01, 0.005, 0.02)] * 3).summary() == "the same verdict (above) in all 3 training runs"
    mixed = stats.seed_verdicts([(-0.004, -0.012, 0.003), (-0.006, -0.014, -0.001), (0.007, 0.001, 0.013)])
    assert mixed.per_seed == (NO_DIFFERENCE, BELOW, ABOVE)
    assert not mixed.consistent and mixed.sign_changes
    text = mixed.summary()
    assert "changes between training runs" in text and "both sides of the reference" in text
    assert mixed.summary(reference="zero").endswith("both sides of zero")
    assert "above: 1 of 3" in text and "below: 1 of 3" in text
    with pytest.raises(ValueError):
        stats.seed_verdicts([])
    with pytest.raises(ValueError):
        stats.seed_verdicts([(0.1, 0.2)])


def test_number_formatting():
    assert stats.fmt_number(-0.0084) == "\u22120.008"
    assert stats.fmt_number(0.002, signed=True) == "+0.002"
    assert stats.fmt_number(-0.0001, signed=True) == "+0.000"  # no "−0.000"
    assert stats.fmt_number(-0.0001) == "0.000"
    assert stats.fmt_number(0.1234, 1, percent=True) == "12.3 %"
    assert stats.fmt_interval(0.987, 0.980, 0.992) == "0.987 [0.980, 0.992]"
    assert stats.fmt_interval(-0.008, -0.016, -0.002, signed=True) == "\u22120.008 [\u22120.016, \u22120.002]"
    assert stats.fmt_interval(0.5, 0.4, 0.6, 1, percent=True) == "50.0 % [40.0 %, 60.0 %]"


@pytest.mark.parametrize(
    "text, op, ref, upper",
    [
        (">= 0.944 (ResNet-18 28)", ">=", 0.944, None),
        ("\u2265 0.90", ">=", 0.90, None),
        ("< 1e-9", "<", 1e-9, None),
        ("> 700", ">", 700, None),
        ("20 to 45", "range", 20, 45),
        ("-120 to -60 (thin layer: partial volume)", "range", -120, -60),
        ("-1000", "==", -1000, None),
        ("0", "==", 0, None),
    ],
)
def test_parse_target(text, op, ref, upper):
    t = stats.parse_target(text)
    assert (t.op, t.reference, t.upper) == (op, ref, upper)


@pytest.mark.parametrize("text", ["all 7", "CenterNet > blob_log (full profile)", "about 0.70", "", None])
def test_targets_without_a_number_are_not_judged(text):
    assert stats.parse_target(text) is None
    assert stats.judge(0.5, text)[0] == NOT_JUDGED


@pytest.mark.parametrize(
    "value, target, status",
    [
        ([0.973, 0.961, 0.983], ">= 0.944", MET),
        ([0.922, 0.872, 0.963], ">= 0.901", NOT_SHOWN),
        ([0.80, 0.75, 0.85], ">= 0.90", NOT_MET),
        (0.95, ">= 0.90", MET),
        (0.85, ">= 0.90", NOT_MET),
        (3e-10, "< 1e-9", MET),
        ([0.01, 0.005, 0.02], "< 0.05", MET),
        (30, "20 to 45", MET),
        (50, "20 to 45", NOT_MET),
        ([30, 25, 40], "20 to 45", MET),
        ([30, 15, 40], "20 to 45", NOT_SHOWN),
        (-1000, "-1000", MET),
        (-999, "-1000", NOT_MET),
        (-999.7, "-1000", MET),  # a measured mean that rounds to the target as written
        (0.04, "0", MET),
        (0.6, "0", NOT_MET),
        (2.04, "2.0", MET),
        (2.06, "2.0", NOT_MET),
        ("text", ">= 0.5", NOT_JUDGED),
        (True, ">= 0.5", NOT_JUDGED),
    ],
)
def test_judge(value, target, status):
    assert stats.judge(value, target)[0] == status


def test_percentile_interval_reads_the_percentiles_of_the_replicates():
    reps = [0.1, 0.2, 0.3, 0.4, 0.5, 0.6, 0.7, 0.8, 0.9]
    assert stats.percentile_interval(0.5, reps, alpha=0.5) == (0.5, 0.3, 0.7)
    rng = np.random.default_rng(0)
    r = rng.normal(size=1000)
    est, lo, hi = stats.percentile_interval(0.25, r)
    assert est == 0.25  # the point is returned as given, not the replicates' mean
    assert (lo, hi) == tuple(float(v) for v in np.percentile(r, [2.5, 97.5]))
    assert all(isinstance(v, float) for v in (est, lo, hi))


def test_percentile_interval_ignores_nan_replicates_as_the_bootstraps_do():
    reps = np.array([np.nan, 1.0, 2.0, 3.0, np.nan])
    assert stats.percentile_interval(2.0, reps, alpha=0.5)[1:] == (1.5, 2.5)


def test_percentile_interval_of_paired_replicates_is_narrower_than_the_separate_ones():
    # two methods scored on the same resamples share the resample-to-resample variation
    rng = np.random.default_rng(1)
    common = rng.normal(size=500)
    a, b = 0.6 + 0.1 * common + 0.01 * rng.normal(size=500), 0.5 + 0.1 * common
    diff = stats.percentile_interval(0.1, a - b)
    assert stats.verdict(*diff) == ABOVE
    sa, sb = stats.percentile_interval(0.6, a), stats.percentile_interval(0.5, b)
    assert sa[1] <= sb[2]  # the separate intervals overlap


@pytest.mark.parametrize("reps, alpha", [([np.nan, np.nan], 0.05), ([], 0.05), ([1.0, 2.0], 0.0), ([1.0], 1.5)])
def test_percentile_interval_rejects_bad_input(reps, alpha):
    with pytest.raises(ValueError):
        stats.percentile_interval(0.0, reps, alpha=alpha)


def test_join_words():
    assert stats.join_words(["ε = 8"]) == "ε = 8"
    assert stats.join_words(["a", "b"]) == "a and b"
    assert stats.join_words(("a", "b", "c")) == "a, b and c"
    with pytest.raises(ValueError, match="at least one"):
        stats.join_words([])
