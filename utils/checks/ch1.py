"""Exercise checks of chapter 1 (medical image data), one function per exercise.

Each check calls the student's function on the notebook's real files and on synthetic inputs that
are built here (with a fixed seed) to expose the usual mistakes, and compares the result with a
reference computed here from the same inputs (pydicom where pydicom implements the operation).  The
references are private: the student edition shows only the call.  ``tests/test_checks_ch1.py``
tests every check with wrong answers, which must fail, and alternative right answers, which must pass.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Sequence
from typing import Any

import numpy as np

from .. import exercises


def _placeholder(value: Any) -> bool:
    return value is None or value is Ellipsis or value is exercises.NOT_ATTEMPTED


def _run(
    exercise: str, fn: Callable, cases: Iterable[tuple[Sequence, Any]], compare: Callable[[Any, Any], bool], hint: str
) -> exercises.CheckResult:
    """Call ``fn(*args)`` on every case and report whether ``compare(result, expected)`` holds for all.

    A placeholder (``NotAttempted`` raised, or a placeholder returned) is reported as not attempted; any
    other exception is reported by type and message, without the expected values.
    """
    try:
        results = [(fn(*args), expected) for args, expected in cases]
    except NotImplementedError:  # exercises.NotAttempted is a NotImplementedError
        return exercises.check_true(exercise, exercises.NOT_ATTEMPTED, hint=hint)
    except Exception as exc:  # the student's code raised: say what, not the answer
        return exercises.check_true(exercise, False, hint=f"your function raised {type(exc).__name__}: {exc}. {hint}")
    if any(_placeholder(r) for r, _ in results):
        return exercises.check_true(exercise, exercises.NOT_ATTEMPTED, hint=hint)
    try:
        ok = all(bool(compare(r, e)) for r, e in results)
    except (TypeError, ValueError):
        ok = False
    return exercises.check_true(exercise, ok, hint=hint)


def _allclose(result: Any, expected: Any, *, rtol: float = 1e-9, atol: float = 0.0) -> bool:
    try:
        a, b = np.asarray(result, dtype=np.float64), np.asarray(expected, dtype=np.float64)
    except (TypeError, ValueError):
        return False
    return a.shape == b.shape and bool(np.allclose(a, b, rtol=rtol, atol=atol))


# ---------------------------------------------------------------------------
# 1.1 stored values to Hounsfield units (section "From stored values to Hounsfield units")
# ---------------------------------------------------------------------------


def _modality_lut(stored, slope, intercept) -> np.ndarray:
    """pydicom's modality LUT with this slope and intercept (float64)."""
    import pydicom
    from pydicom.pixels import apply_modality_lut

    tmp = pydicom.Dataset()
    tmp.RescaleSlope, tmp.RescaleIntercept = slope, intercept
    return np.asarray(apply_modality_lut(np.asarray(stored), tmp), dtype=np.float64)


def cases_1_1(ds_head=None) -> list[tuple[tuple, np.ndarray]]:
    """The cases of exercise 1.1: ``((stored, slope, intercept), expected HU)``.

    Besides the real head CT (when given) and float slopes on signed and unsigned arrays, the cases
    give *Python integers* as slope and intercept with integer arrays: integer arithmetic then keeps
    an integer dtype (``int16``), wraps around (``int16`` values times 2, ``uint8`` values times 4) or
    refuses a negative intercept for an unsigned array, so only an answer that converts to float64
    first passes.  The expected values are computed in float64 from the exact integers.
    """
    rng = np.random.default_rng(11)
    cases = []
    if ds_head is not None:
        cases.append((ds_head.pixel_array, float(ds_head.RescaleSlope), float(ds_head.RescaleIntercept)))
    cases += [
        (rng.integers(0, 4096, (7, 5)).astype(np.uint16), 0.5, -1000.0),
        (rng.integers(-2048, 2048, (3, 4, 2)).astype(np.int16), 2.0, 0.0),
        (rng.integers(-1000, 3000, (6, 6)).astype(np.int16), 1, -1024),  # integer result dtype if not converted
        (np.array([[20000, 32767], [-32768, 100]], dtype=np.int16), 2, -1024),  # int16 wraps around
        (rng.integers(0, 4096, (5, 4)).astype(np.uint16), 1, -1024),  # negative intercept on unsigned
        (np.array([0, 100, 200, 255], dtype=np.uint8), 4, -512),  # uint8 wraps around
    ]
    out = []
    for stored, slope, intercept in cases:
        if isinstance(slope, float) and isinstance(intercept, float):
            expected = _modality_lut(stored, slope, intercept)
        else:  # exact integers: float64 arithmetic of the exact values
            expected = np.asarray(stored, dtype=np.float64) * float(slope) + float(intercept)
        out.append(((stored, slope, intercept), expected))
    return out


def ex_1_1(stored_to_hu: Callable, ds_head=None) -> exercises.CheckResult:
    """Exercise 1.1: ``stored_to_hu(stored, slope, intercept)`` returns the modality LUT as a float64 array.

    Compared with :func:`pydicom.pixels.apply_modality_lut` on the real head CT ``ds_head`` and on
    synthetic inputs; integer-typed inputs (Python-int slope and intercept, ``int16``, ``uint16``,
    ``uint8`` arrays) make an answer that keeps an integer dtype or overflows fail.  The result must be
    a NumPy array of dtype float64 and of the input's shape.
    """
    hint = (
        "convert the stored values to float64 first (the check also gives integer slopes and "
        "intercepts, where integer arithmetic overflows or stays integer), then apply m·SV + b"
    )

    def compare(result, expected):
        return isinstance(result, np.ndarray) and result.dtype == np.float64 and _allclose(result, expected, rtol=1e-12)

    return _run("1.1", stored_to_hu, cases_1_1(ds_head), compare, hint)


# ---------------------------------------------------------------------------
# 1.2 a window function (section "CT windowing")
# ---------------------------------------------------------------------------


def _dicom_linear_exact(values, center: float, width: float) -> np.ndarray:
    """DICOM's LINEAR_EXACT VOI window (PS3.3 C.11.2.1.3.2) by pydicom, rescaled to [0, 1]."""
    import pydicom
    from pydicom.pixels import apply_windowing

    voi = pydicom.Dataset()
    voi.PhotometricInterpretation = "MONOCHROME2"
    voi.BitsStored, voi.PixelRepresentation = 16, 1  # output range [-32768, 32767]
    voi.WindowCenter, voi.WindowWidth, voi.VOILUTFunction = center, width, "LINEAR_EXACT"
    y_min, y_max = -32768.0, 32767.0
    return (np.asarray(apply_windowing(np.asarray(values, dtype=np.float64), voi)) - y_min) / (y_max - y_min)


def cases_1_2(hu=None) -> list[tuple[tuple, np.ndarray]]:
    """``((hu, level, width), expected)``: the four presets on ``hu`` (if given) and values at the edges."""
    from .. import imaging

    edges = np.array([-1200.0, -1000.0, 0.0, 20.0, 40.0, 60.0, 400.0, 3000.0])
    cases = []
    if hu is not None:
        cases += [(np.asarray(hu, dtype=np.float64), float(L), float(W)) for L, W in imaging.WINDOWS.values()]
    cases += [(edges, 40.0, 40.0), (edges, -600.0, 1500.0), (np.arange(-5.0, 6.0), 0.0, 4.0)]
    return [((x, L, W), _dicom_linear_exact(x, L, W)) for x, L, W in cases]


def ex_1_2(my_window: Callable, hu=None) -> exercises.CheckResult:
    """Exercise 1.2: ``my_window(hu, level, width)`` equals DICOM's LINEAR_EXACT window scaled to [0, 1].

    The reference is pydicom's ``apply_windowing`` with *VOI LUT Function* ``LINEAR_EXACT``, on the
    head CT's HU ``hu`` under the four presets of ``imaging.WINDOWS`` and on values at and beyond the
    window's edges.  The default ``LINEAR`` variant (``level - 0.5``, ``width - 1``) and an unclipped
    line fail.
    """
    hint = "check that level - width/2 gives 0, level gives 0.5 and level + width/2 gives 1, and clip"
    return _run("1.2", my_window, cases_1_2(hu), lambda r, e: _allclose(r, e, rtol=0.0, atol=1e-9), hint)


# ---------------------------------------------------------------------------
# 1.3 field of view (section "DICOM: pixels plus a header")
# ---------------------------------------------------------------------------


def _anisotropic_dataset():
    import pydicom

    ds = pydicom.Dataset()
    ds.Rows, ds.Columns, ds.PixelSpacing = 300, 200, [0.5, 2.0]
    return ds


def cases_1_3(datasets: Iterable = ()) -> list[tuple[tuple, tuple[float, float]]]:
    """``((ds,), (height, width))`` for the given datasets and a non-square matrix with unequal spacings."""
    out = []
    for ds in list(datasets) + [_anisotropic_dataset()]:
        d_row, d_col = (float(v) for v in ds.PixelSpacing)
        out.append(((ds,), (int(ds.Rows) * d_row, int(ds.Columns) * d_col)))
    return out


def ex_1_3(fov_mm: Callable, datasets: Iterable = ()) -> exercises.CheckResult:
    """Exercise 1.3: ``fov_mm(ds)`` is ``(Rows × spacing between rows, Columns × spacing between columns)``.

    Run on ``datasets`` (the notebook's images with a usable *Pixel Spacing*) and on a 300 × 200
    image with spacing ``[0.5, 2.0]``, where swapping the two spacings gives a different answer.
    """
    hint = "PixelSpacing is [spacing between rows, spacing between columns]; rows stack vertically"
    return _run("1.3", fov_mm, cases_1_3(datasets), lambda r, e: _allclose(r, e, rtol=1e-9), hint)


# ---------------------------------------------------------------------------
# 1.4 storage of a study (section "How big is big data here?")
# ---------------------------------------------------------------------------


def _object_bytes(ds) -> int:
    return (
        int(ds.Rows)
        * int(ds.Columns)
        * int(ds.BitsAllocated)
        // 8
        * int(ds.get("SamplesPerPixel", 1) or 1)
        * int(ds.get("NumberOfFrames", 1) or 1)
    )


def cases_1_4(studies: Iterable[tuple[Any, int]]) -> list[tuple[tuple, float]]:
    """``((ds, n_images), GiB)`` for each ``(dataset, number of images)`` in ``studies``."""
    return [((ds, n), _object_bytes(ds) * n / 2**30) for ds, n in studies]


def ex_1_4(study_gib: Callable, studies: Iterable[tuple[Any, int]]) -> exercises.CheckResult:
    """Exercise 1.4: ``study_gib(ds, n_images)`` is the uncompressed size of ``n_images`` such objects in GiB.

    ``studies`` lists ``(dataset, n_images)`` pairs; the notebook passes a 12-bit CT (Bits Allocated is
    not Bits Stored), an RGB frame (Samples per Pixel 3), a two-frame object (Number of Frames) and a
    radiograph.  The expected sizes are recomputed here from the same headers.
    """
    hint = "use Bits Allocated (not Bits Stored), Samples per Pixel and Number of Frames"
    return _run("1.4", study_gib, cases_1_4(studies), lambda r, e: _allclose(r, e, rtol=1e-9), hint)


# ---------------------------------------------------------------------------
# 1.5 identifying attributes (section "Patient data in the header")
# ---------------------------------------------------------------------------


def _present(ds, keywords: Sequence[str]) -> list[str]:
    """The keywords whose attribute is at the top level of ``ds`` with a non-empty value, in order."""
    out = []
    for kw in keywords:
        if kw not in ds:
            continue
        value = ds[kw].value
        if value is None or (hasattr(value, "__len__") and len(value) == 0) or str(value) == "":
            continue
        out.append(kw)
    return out


def _cleaned_dataset():
    import pydicom

    ds = pydicom.Dataset()
    ds.PatientName, ds.PatientID, ds.Modality = "", "", "CT"
    ds.StudyDate = "20260101"  # one identifier left: an all-empty answer must not pass either
    return ds


def cases_1_5(datasets: Iterable, keywords: Sequence[str]) -> list[tuple[tuple, list[str]]]:
    """``((ds, keywords), present keywords)`` for each dataset and for a partly cleaned dataset."""
    return [((ds, list(keywords)), _present(ds, keywords)) for ds in list(datasets) + [_cleaned_dataset()]]


def ex_1_5(present_identifiers: Callable, datasets: Iterable, keywords: Sequence[str]) -> exercises.CheckResult:
    """Exercise 1.5: ``present_identifiers(ds, keywords)`` lists the keywords present with a non-empty value.

    Run on ``datasets`` (the notebook's samples) and on a dataset whose name and ID were emptied but
    whose study date was kept.  The answer must be a list of keywords in the order of ``keywords``.
    """
    hint = "an attribute counts only if it is in the dataset and its value is not empty; keep the given order"

    def compare(result, expected):
        return isinstance(result, (list, tuple)) and [str(k) for k in result] == expected

    return _run("1.5", present_identifiers, cases_1_5(datasets, keywords), compare, hint)


# ---------------------------------------------------------------------------
# 1.6 ordering the slices of a series (section "Ordering the slices of a series")
# ---------------------------------------------------------------------------


def _distance_along_normal(positions, orientation) -> np.ndarray:
    iop = np.asarray(orientation, dtype=np.float64).reshape(2, 3)
    normal = np.cross(iop[0], iop[1])
    return np.asarray(positions, dtype=np.float64).reshape(-1, 3) @ normal


def synthetic_series(
    orientation, first_position, spacing_mm: float, n_slices: int, *, in_plane_shift_mm: float = 0.0, seed: int = 0
) -> np.ndarray:
    """Image Position (Patient) of ``n_slices`` parallel slices ``spacing_mm`` apart along ``r × c``, shuffled.

    Each slice is also moved within its own plane by up to ``in_plane_shift_mm`` (a field of view
    that follows the anatomy), which changes the distance between positions but not the distance along
    the normal.  The rows come in a shuffled order (as files come off a disk).
    """
    rng = np.random.default_rng(seed)
    iop = np.asarray(orientation, dtype=np.float64).reshape(2, 3)
    normal = np.cross(iop[0], iop[1])
    k = np.arange(n_slices, dtype=np.float64)
    shift = rng.uniform(-in_plane_shift_mm, in_plane_shift_mm, (n_slices, 2))
    positions = (
        np.asarray(first_position, dtype=np.float64)
        + k[:, None] * spacing_mm * normal
        + shift[:, :1] * iop[0]
        + shift[:, 1:] * iop[1]
    )
    return positions[rng.permutation(n_slices)]


def cases_1_6(series: Iterable[tuple[Any, Any]] = ()) -> list[tuple[tuple, tuple[np.ndarray, np.ndarray]]]:
    """``((positions, orientation), (order, gaps))`` for the given series and three synthetic ones.

    The synthetic series are an oblique one (the orientation of the shoulder MR) with in-plane shifts,
    an axial one whose *row* direction points to the patient's right so that ``r × c`` points to the
    feet, and an axial one with overlapping slices (spacing smaller than a usual thickness).
    """
    oblique = [-0.1121, 0.9937, 0.0, -0.7962, -0.0899, -0.5983]
    oblique = np.asarray(oblique) / np.repeat(np.linalg.norm(np.reshape(oblique, (2, 3)), axis=1), 3)
    made = [
        (synthetic_series(oblique, [-180.0, -97.1, 112.8], 6.6, 9, in_plane_shift_mm=20.0, seed=1), oblique),
        (synthetic_series([-1, 0, 0, 0, 1, 0], [99.5, -301.5, -159.0], 10.0, 6, seed=2), [-1, 0, 0, 0, 1, 0]),
        (
            synthetic_series([1, 0, 0, 0, 1, 0], [-122.5, -112.4, 47.0], 2.5, 12, in_plane_shift_mm=5.0, seed=3),
            [1, 0, 0, 0, 1, 0],
        ),
    ]
    out = []
    for positions, orientation in list(series) + made:
        d = _distance_along_normal(positions, orientation)
        order = np.argsort(d, kind="stable")
        out.append(
            (
                (np.asarray(positions, dtype=np.float64), np.asarray(orientation, dtype=np.float64)),
                (order, np.diff(d[order])),
            )
        )
    return out


def ex_1_6(order_slices: Callable, series: Iterable[tuple[Any, Any]] = ()) -> exercises.CheckResult:
    """Exercise 1.6: ``order_slices(positions, orientation)`` returns ``(order, gaps_mm)``.

    ``positions`` is an ``(N, 3)`` array of *Image Position (Patient)*, ``orientation`` the six values of
    *Image Orientation (Patient)* shared by the slices.  ``order`` must be the indices that sort the
    slices by increasing distance along the normal ``n = r × c`` and ``gaps_mm`` the ``N - 1``
    distances between consecutive sorted slices along ``n``.  Run on ``series`` (the notebook's real
    ones) and on three synthetic series; sorting by *z*, by the distance between positions, or along
    ``c × r`` fails.
    """
    hint = (
        "project each Image Position (Patient) on the normal n = r × c (np.cross of the two direction "
        "cosines), sort by that distance, and take differences of the sorted distances"
    )

    def compare(result, expected):
        if not isinstance(result, (tuple, list)) or len(result) != 2:
            return False
        order, gaps = result
        order = np.asarray(order)
        if order.shape != expected[0].shape or not np.issubdtype(order.dtype, np.integer):
            return False
        return bool(np.array_equal(order, expected[0])) and _allclose(gaps, expected[1], rtol=1e-9, atol=1e-9)

    return _run("1.6", order_slices, cases_1_6(series), compare, hint)


__all__ = [
    "ex_1_1",
    "ex_1_2",
    "ex_1_3",
    "ex_1_4",
    "ex_1_5",
    "ex_1_6",
    "cases_1_1",
    "cases_1_2",
    "cases_1_3",
    "cases_1_4",
    "cases_1_5",
    "cases_1_6",
    "synthetic_series",
]
