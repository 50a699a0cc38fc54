"""Tests of the exercise checks of chapter 1 (utils.checks.ch1): every check fails wrong answers, passes
the reference and a differently written right answer, and reports a placeholder as not attempted."""

from __future__ import annotations

import numpy as np
import pydicom
import pytest
from conftest import placeholder, reported_not_attempted, resolve_real_sample

from utils import exercises, imaging
from utils.checks import ch1


@pytest.fixture(scope="module")
def sample(tmp_path_factory):
    fetched = tmp_path_factory.mktemp("ch1-check-samples")
    memo: dict = {}

    def get(name: str, file: str):
        if (name, file) not in memo:
            memo[name, file] = imaging.read_dicom(resolve_real_sample(name, file, fetched))
        return memo[name, file]

    return get


@pytest.fixture(scope="module")
def head_ct(sample):
    return sample("pydicom-data-samples", "693_UNCR.dcm")


def passes(result, capsys) -> bool:
    out = capsys.readouterr().out
    assert out.count("\n") == 1, out  # one line per check
    return bool(result) and "passed" in out


def fails(result, capsys) -> bool:
    out = capsys.readouterr().out
    return not bool(result) and "not yet" in out


# ---------------------------------------------------------------------------
# 1.1
# ---------------------------------------------------------------------------


def hu_reference(stored, slope, intercept):
    return np.asarray(stored, dtype=np.float64) * slope + intercept


def hu_alternative(stored, slope, intercept):
    return np.multiply(stored, float(slope), dtype=np.float64) + float(intercept)


def hu_naive(stored, slope, intercept):  # integer arithmetic for integer inputs
    return stored * slope + intercept


def hu_float32(stored, slope, intercept):
    return np.asarray(stored, dtype=np.float32) * slope + intercept


def hu_wrong_order(stored, slope, intercept):
    return (np.asarray(stored, dtype=np.float64) + intercept) * slope


def hu_keeps_dtype(stored, slope, intercept):  # converts to float, then back to the input's dtype
    return (np.asarray(stored, dtype=np.float64) * slope + intercept).astype(np.asarray(stored).dtype)


def test_1_1_cases_include_integer_inputs_that_break_integer_arithmetic():
    cases = ch1.cases_1_1()
    int_cases = [args for args, _ in cases if isinstance(args[1], int) and isinstance(args[2], int)]
    assert len(int_cases) >= 3
    assert any(
        np.asarray(hu_naive(*args)).dtype.kind in "iu" for args in int_cases if np.asarray(args[0]).dtype == np.int16
    )  # naive arithmetic keeps an integer dtype
    with np.errstate(over="ignore"):
        wrapped = [args for args in int_cases if np.asarray(args[0]).dtype in (np.int16, np.uint8)]
        assert any(not np.allclose(np.asarray(hu_naive(*a), dtype=float), hu_reference(*a)) for a in wrapped)


@pytest.mark.parametrize("fn", [hu_reference, hu_alternative])
def test_1_1_right_answers_pass(fn, head_ct, capsys):
    assert passes(ch1.ex_1_1(fn, head_ct), capsys)


def test_1_1_right_answer_passes_without_real_data(capsys):
    assert passes(ch1.ex_1_1(hu_reference), capsys)


@pytest.mark.parametrize("fn", [hu_naive, hu_float32, hu_wrong_order, hu_keeps_dtype])
def test_1_1_wrong_answers_fail(fn, head_ct, capsys):
    with np.errstate(over="ignore"):
        assert fails(ch1.ex_1_1(fn, head_ct), capsys)


def test_1_1_placeholder_is_not_attempted(capsys):
    assert reported_not_attempted(ch1.ex_1_1(placeholder), capsys)
    assert reported_not_attempted(ch1.ex_1_1(lambda *a: exercises.NOT_ATTEMPTED), capsys)


def test_1_1_strict_mode_raises_on_a_wrong_answer(monkeypatch):
    monkeypatch.setenv(exercises.STRICT_ENV, "1")
    with pytest.raises(exercises.ExerciseFailed):
        ch1.ex_1_1(hu_naive)


# ---------------------------------------------------------------------------
# 1.2
# ---------------------------------------------------------------------------


def window_reference(hu, level, width):
    return np.clip((np.asarray(hu, dtype=np.float64) - (level - width / 2.0)) / width, 0.0, 1.0)


def window_interp(hu, level, width):
    return np.interp(np.asarray(hu, dtype=np.float64), [level - width / 2, level + width / 2], [0.0, 1.0])


def window_linear(hu, level, width):  # DICOM's default LINEAR variant
    return np.clip((np.asarray(hu, dtype=np.float64) - (level - 0.5)) / (width - 1) + 0.5, 0.0, 1.0)


def window_unclipped(hu, level, width):
    return (np.asarray(hu, dtype=np.float64) - (level - width / 2.0)) / width


def window_centred_at_zero(hu, level, width):
    return np.clip(np.asarray(hu, dtype=np.float64) / width + 0.5, 0.0, 1.0)


@pytest.mark.parametrize("fn", [window_reference, window_interp, imaging.window])
def test_1_2_right_answers_pass(fn, head_ct, capsys):
    assert passes(ch1.ex_1_2(fn, imaging.to_hounsfield(head_ct)), capsys)


@pytest.mark.parametrize("fn", [window_linear, window_unclipped, window_centred_at_zero])
def test_1_2_wrong_answers_fail(fn, capsys):
    assert fails(ch1.ex_1_2(fn), capsys)


def test_1_2_placeholder_is_not_attempted(capsys):
    assert reported_not_attempted(ch1.ex_1_2(placeholder), capsys)


# ---------------------------------------------------------------------------
# 1.3
# ---------------------------------------------------------------------------


def fov_reference(ds):
    d_row, d_col = (float(v) for v in ds.PixelSpacing)
    return ds.Rows * d_row, ds.Columns * d_col


def fov_library(ds):
    return imaging.field_of_view_mm(ds)


def fov_swapped(ds):
    d_row, d_col = (float(v) for v in ds.PixelSpacing)
    return ds.Rows * d_col, ds.Columns * d_row


def fov_width_first(ds):
    d_row, d_col = (float(v) for v in ds.PixelSpacing)
    return ds.Columns * d_col, ds.Rows * d_row


@pytest.mark.parametrize("fn", [fov_reference, fov_library, lambda ds: list(fov_reference(ds))])
def test_1_3_right_answers_pass(fn, head_ct, capsys):
    assert passes(ch1.ex_1_3(fn, [head_ct]), capsys)


@pytest.mark.parametrize("fn", [fov_swapped, fov_width_first])
def test_1_3_wrong_answers_fail(fn, capsys):
    assert fails(ch1.ex_1_3(fn), capsys)  # the synthetic 300 × 200 image alone catches them


def test_1_3_placeholder_is_not_attempted(capsys):
    assert reported_not_attempted(ch1.ex_1_3(placeholder), capsys)


# ---------------------------------------------------------------------------
# 1.4
# ---------------------------------------------------------------------------


def header(rows, cols, bits_allocated, bits_stored, samples=1, frames=None):
    ds = pydicom.Dataset()
    ds.Rows, ds.Columns, ds.BitsAllocated, ds.BitsStored, ds.SamplesPerPixel = (
        rows,
        cols,
        bits_allocated,
        bits_stored,
        samples,
    )
    if frames is not None:
        ds.NumberOfFrames = frames
    return ds


STUDIES = [
    (header(512, 512, 16, 12), 800),
    (header(480, 640, 8, 8, samples=3), 40),
    (header(512, 512, 16, 16, frames=2), 30),
    (header(2000, 1800, 16, 12), 2),
]


def gib_reference(ds, n_images):
    frames = int(ds.get("NumberOfFrames", 1) or 1)
    return n_images * ds.Rows * ds.Columns * (ds.BitsAllocated // 8) * ds.SamplesPerPixel * frames / 2**30


def gib_library(ds, n_images):
    return imaging.image_bytes(ds) * n_images / 1024**3


def gib_bits_stored(ds, n_images):
    frames = int(ds.get("NumberOfFrames", 1) or 1)
    return n_images * ds.Rows * ds.Columns * ds.BitsStored / 8 * ds.SamplesPerPixel * frames / 2**30


def gib_no_samples(ds, n_images):
    frames = int(ds.get("NumberOfFrames", 1) or 1)
    return n_images * ds.Rows * ds.Columns * (ds.BitsAllocated // 8) * frames / 2**30


def gib_no_frames(ds, n_images):
    return n_images * ds.Rows * ds.Columns * (ds.BitsAllocated // 8) * ds.SamplesPerPixel / 2**30


def gib_decimal(ds, n_images):  # GB instead of GiB
    return gib_reference(ds, n_images) * 2**30 / 1e9


@pytest.mark.parametrize("fn", [gib_reference, gib_library])
def test_1_4_right_answers_pass(fn, capsys):
    assert passes(ch1.ex_1_4(fn, STUDIES), capsys)


def test_1_4_on_the_real_headers(sample, capsys):
    studies = [
        (sample("pydicom-data-samples", f), n)
        for f, n in [("693_UNCR.dcm", 800), ("US1_UNCR.dcm", 40), ("eCT_Supplemental.dcm", 30), ("RG1_UNCR.dcm", 2)]
    ]
    assert passes(ch1.ex_1_4(gib_reference, studies), capsys)
    assert fails(ch1.ex_1_4(gib_no_frames, studies), capsys)


@pytest.mark.parametrize("fn", [gib_bits_stored, gib_no_samples, gib_no_frames, gib_decimal])
def test_1_4_wrong_answers_fail(fn, capsys):
    assert fails(ch1.ex_1_4(fn, STUDIES), capsys)


def test_1_4_placeholder_is_not_attempted(capsys):
    assert reported_not_attempted(ch1.ex_1_4(placeholder, STUDIES), capsys)


# ---------------------------------------------------------------------------
# 1.5
# ---------------------------------------------------------------------------

KEYWORDS = [
    "PatientName",
    "PatientID",
    "PatientBirthDate",
    "StudyDate",
    "InstitutionName",
    "ReferringPhysicianName",
    "OperatorsName",
    "StudyInstanceUID",
]


def identified():
    ds = pydicom.Dataset()
    ds.PatientName, ds.PatientID, ds.ReferringPhysicianName = "Doe^Jane", "123", ""
    ds.StudyInstanceUID = "1.2.3.4"
    return ds


def present_reference(ds, keywords):
    return [kw for kw in keywords if kw in ds and ds.data_element(kw).value not in (None, "", [])]


def present_alternative(ds, keywords):
    found = []
    for kw in keywords:
        value = ds.get(kw)
        if value is not None and str(value) != "":
            found.append(kw)
    return tuple(found)


def present_ignores_emptiness(ds, keywords):
    return [kw for kw in keywords if kw in ds]


def present_sorted(ds, keywords):
    return sorted(present_reference(ds, keywords))


def present_nothing(ds, keywords):
    return []


@pytest.mark.parametrize("fn", [present_reference, present_alternative])
def test_1_5_right_answers_pass(fn, sample, capsys):
    datasets = [sample("pydicom-samples", "CT_small.dcm"), sample("pydicom-data-samples", "RG1_UNCR.dcm"), identified()]
    assert passes(ch1.ex_1_5(fn, datasets, KEYWORDS), capsys)


@pytest.mark.parametrize("fn", [present_ignores_emptiness, present_sorted, present_nothing])
def test_1_5_wrong_answers_fail(fn, capsys):
    assert fails(ch1.ex_1_5(fn, [identified()], KEYWORDS), capsys)


def test_1_5_placeholder_is_not_attempted(capsys):
    assert reported_not_attempted(ch1.ex_1_5(placeholder, [identified()], KEYWORDS), capsys)


# ---------------------------------------------------------------------------
# 1.6
# ---------------------------------------------------------------------------


def order_reference(positions, orientation):
    r, c = np.asarray(orientation, dtype=float)[:3], np.asarray(orientation, dtype=float)[3:]
    d = np.asarray(positions, dtype=float) @ np.cross(r, c)
    order = np.argsort(d)
    return order, np.diff(d[order])


def order_alternative(positions, orientation):  # loops, nibabel's indicator with its sign flipped
    import warnings

    with warnings.catch_warnings():
        warnings.simplefilter("ignore", UserWarning)  # nibabel calls its DICOM reader experimental
        from nibabel.nicom.dicomwrappers import Wrapper

    d = []
    for p in positions:
        ds = pydicom.Dataset()
        ds.ImagePositionPatient, ds.ImageOrientationPatient = [float(v) for v in p], [float(v) for v in orientation]
        ds.PixelSpacing = [1.0, 1.0]
        d.append(-Wrapper(ds).slice_indicator)  # nibabel's normal is c × r
    order = sorted(range(len(d)), key=lambda k: d[k])
    return order, [d[b] - d[a] for a, b in zip(order[:-1], order[1:])]


def order_by_z(positions, orientation):
    z = np.asarray(positions, dtype=float)[:, 2]
    order = np.argsort(z)
    return order, np.diff(z[order])


def order_by_distance_between_positions(positions, orientation):
    _, d = order_reference(positions, orientation)
    order, _ = order_reference(positions, orientation)
    p = np.asarray(positions, dtype=float)[order]
    return order, np.linalg.norm(np.diff(p, axis=0), axis=1)


def order_along_c_cross_r(positions, orientation):
    r, c = np.asarray(orientation, dtype=float)[:3], np.asarray(orientation, dtype=float)[3:]
    d = np.asarray(positions, dtype=float) @ np.cross(c, r)
    order = np.argsort(d)
    return order, np.diff(d[order])


def order_absolute_gaps_unsorted(positions, orientation):
    order, _ = order_reference(positions, orientation)
    r, c = np.asarray(orientation, dtype=float)[:3], np.asarray(orientation, dtype=float)[3:]
    d = np.asarray(positions, dtype=float) @ np.cross(r, c)
    return order, np.abs(np.diff(d))  # gaps in file order, not in sorted order


def test_synthetic_series_is_parallel_and_shuffled():
    orientation = [1, 0, 0, 0, 1, 0]
    positions = ch1.synthetic_series(orientation, [0, 0, 10], 2.5, 8, in_plane_shift_mm=5.0, seed=3)
    assert positions.shape == (8, 3)
    assert sorted(np.round(positions[:, 2], 6)) == [10 + 2.5 * k for k in range(8)]
    assert not np.all(np.diff(positions[:, 2]) > 0)  # shuffled


@pytest.mark.parametrize("fn", [order_reference, order_alternative])
def test_1_6_right_answers_pass(fn, sample, capsys):
    series = [imaging.frame_geometry(sample("pydicom-data-samples", "eCT_Supplemental.dcm"))]
    assert passes(ch1.ex_1_6(fn, series), capsys)


def test_1_6_real_frames_are_ordered_as_their_in_stack_positions(sample):
    perfusion = sample("pydicom-data-samples", "eCT_Supplemental.dcm")
    ((args, (order, gaps)),) = ch1.cases_1_6([imaging.frame_geometry(perfusion)])[:1]
    stack = [int(f.FrameContentSequence[0].InStackPositionNumber) for f in perfusion.PerFrameFunctionalGroupsSequence]
    assert [stack[k] for k in order] == sorted(stack)
    assert np.allclose(gaps, 10.0)


@pytest.mark.parametrize(
    "fn",
    [
        order_by_z,
        order_by_distance_between_positions,
        order_along_c_cross_r,
        order_absolute_gaps_unsorted,
        lambda p, o: np.argsort(p[:, 2]),
    ],
)
def test_1_6_wrong_answers_fail(fn, capsys):
    assert fails(ch1.ex_1_6(fn), capsys)


def test_1_6_placeholder_is_not_attempted(capsys):
    assert reported_not_attempted(ch1.ex_1_6(placeholder), capsys)
    assert reported_not_attempted(ch1.ex_1_6(lambda p, o: exercises.NOT_ATTEMPTED), capsys)
