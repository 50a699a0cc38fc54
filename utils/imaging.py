"""DICOM and NIfTI helpers of chapter 1: Hounsfield units, windowing, geometry, header audit.

Library first: files are read with :mod:`pydicom` and :mod:`nibabel`, the
modality LUT is pydicom's :func:`pydicom.pixels.apply_modality_lut`; this
module only adds the checks and the small pieces of arithmetic the course
explains (window, field of view, bytes per image) and clear errors for the
mistakes students make with real files (a file that is not DICOM, a missing or
zero *Pixel Spacing*, a "CT" whose values are not Hounsfield units).

Conventions
-----------
* Pixel spacing is returned as ``(row_spacing, column_spacing)`` in mm, in
  the order DICOM stores it: the distance between the centres of adjacent
  *rows*, then of adjacent *columns* (PS3.3 10.7.1.3).
* :func:`window` maps values to ``[0, 1]``; ``0`` is displayed black.
* Enhanced (multi-frame) objects keep geometry and rescale in functional
  group sequences; :func:`header_value` looks there when the top level has no
  value.
"""

from __future__ import annotations

import math
from pathlib import Path
from typing import Any, NamedTuple

import numpy as np

__all__ = [
    "WINDOWS",
    "PS315_BASIC_PROFILE",  # noqa: F822 (from the module-level __getattr__)
    "PHIAttribute",
    "read_dicom",
    "header_value",
    "header_summary",
    "rescaled",
    "to_hounsfield",
    "padding_mask",
    "window",
    "display_array",
    "pixel_spacing_mm",
    "field_of_view_mm",
    "extent_mm",
    "image_bytes",
    "phi_attributes",
    "value_text",
    "nifti_summary",
    "real_world_units",
    "frame_geometry",
]

# Common CT display windows, (center, width) in HU.  These are conventions, not
# standards: departments tune them.  Values as listed in radiology teaching
# references, e.g. Radiopaedia "Windowing (CT)" (brain W80 L40, mediastinum /
# soft tissue W350-400 L40-50, lung W1500 L-600, bone W1800 L400), and as used
# by the CQ500 head-CT study's readers for brain and bone.
WINDOWS: dict[str, tuple[float, float]] = {
    "brain": (40.0, 80.0),
    "soft tissue": (50.0, 400.0),
    "lung": (-600.0, 1500.0),
    "bone": (400.0, 1800.0),
}

# The attributes of DICOM PS3.15 Annex E, Table E.1-1 (Basic Application Level Confidentiality Profile) are
# ``PS315_BASIC_PROFILE``: the keywords of ``utils.privacy.BASIC_PROFILE``, the course's one profile table (all
# of the table, from the pinned dicom-anonymizer), resolved lazily by the module ``__getattr__`` below because
# utils.privacy imports this module.


def __getattr__(name: str):
    if name == "PS315_BASIC_PROFILE":
        from . import privacy

        return tuple(privacy.BASIC_PROFILE)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


class PHIAttribute(NamedTuple):
    """One potentially identifying attribute found in a dataset."""

    keyword: str  #: DICOM keyword, or ``"(private)"`` for a private tag
    tag: str  #: ``"(gggg,eeee)"``
    value: str  #: the value as text (shortened)
    reason: str  #: ``"PS3.15 basic profile"``, ``"private tag"`` or ``"person name (PN)"``


# ---------------------------------------------------------------------------
# reading
# ---------------------------------------------------------------------------


def _name(ds) -> str:
    """A short name of the dataset for error messages (its file name if known)."""
    filename = getattr(ds, "filename", None)
    return Path(filename).name if isinstance(filename, (str, Path)) and filename else "dataset"


def read_dicom(path: str | Path, *, stop_before_pixels: bool = False):
    """Read a DICOM file with :func:`pydicom.dcmread`, with an error that names the file and the fix.

    Files without the 128-byte preamble and ``DICM`` prefix are refused
    (``force=False``): reading a JPEG or NIfTI "as DICOM" would otherwise give
    a meaningless dataset.
    """
    import pydicom
    from pydicom.errors import InvalidDicomError

    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"{path}: no such file; get course files with utils.data.sample(name, file)")
    try:
        return pydicom.dcmread(path, stop_before_pixels=stop_before_pixels)
    except InvalidDicomError as exc:
        raise ValueError(
            f"{path.name} is not a DICOM file (no 'DICM' marker after the 128-byte preamble). "
            f"Read NIfTI (.nii/.nii.gz) with nibabel.load and ordinary images with skimage.io.imread; "
            f"only a file you know to be DICOM without a preamble should be read with "
            f"pydicom.dcmread(path, force=True)"
        ) from exc


_GROUP_SEQUENCES = (
    "PixelMeasuresSequence",
    "PixelValueTransformationSequence",
    "PlaneOrientationSequence",
    "PlanePositionSequence",
    "FrameVOILUTSequence",
)


def header_value(ds, keyword: str, frame: int = 0, default: Any = None) -> Any:
    """The value of ``keyword``: at the top level, else in the enhanced functional groups of ``frame``.

    Enhanced multi-frame objects (e.g. *Enhanced CT Image Storage*) store
    *Pixel Spacing*, *Rescale Slope* etc. inside
    ``SharedFunctionalGroupsSequence`` or ``PerFrameFunctionalGroupsSequence``
    (PS3.3 C.7.6.16).  Empty values count as missing.
    """
    from pydicom.datadict import tag_for_keyword

    if tag_for_keyword(keyword) is None:
        raise ValueError(f"{keyword!r} is not a DICOM keyword (see pydicom.datadict.dictionary_keyword)")
    if keyword in ds and ds[keyword].value not in (None, "", []):
        return ds[keyword].value
    for group_seq in ("PerFrameFunctionalGroupsSequence", "SharedFunctionalGroupsSequence"):
        groups = ds.get(group_seq)
        if not groups:
            continue
        item = groups[frame] if group_seq.startswith("PerFrame") and frame < len(groups) else groups[0]
        for seq in _GROUP_SEQUENCES:
            inner = item.get(seq)
            if inner and keyword in inner[0] and inner[0][keyword].value not in (None, "", []):
                return inner[0][keyword].value
    return default


def header_summary(ds) -> dict[str, Any]:
    """The header fields chapter 1 discusses, as a dict (``None`` where absent)."""
    keys = (
        "Modality",
        "Rows",
        "Columns",
        "NumberOfFrames",
        "SamplesPerPixel",
        "PhotometricInterpretation",
        "BitsAllocated",
        "BitsStored",
        "PixelRepresentation",
        "PixelSpacing",
        "SliceThickness",
        "ImageOrientationPatient",
        "ImagePositionPatient",
        "RescaleSlope",
        "RescaleIntercept",
        "RescaleType",
        "WindowCenter",
        "WindowWidth",
    )
    out = {}
    for key in keys:
        value = header_value(ds, key)
        if hasattr(value, "__iter__") and not isinstance(value, str):
            value = [float(v) for v in value]
        elif value is not None and key not in ("Modality", "PhotometricInterpretation", "RescaleType"):
            value = float(value) if not float(value).is_integer() else int(float(value))
        out[key] = value
    return out


# ---------------------------------------------------------------------------
# pixel values
# ---------------------------------------------------------------------------


def _frames(ds, arr: np.ndarray | None) -> np.ndarray:
    return ds.pixel_array if arr is None else np.asarray(arr)


def rescaled(ds, arr: np.ndarray | None = None, frame: int = 0) -> np.ndarray:
    """Stored values → modality values (``slope * stored + intercept``), as float64.

    Uses :func:`pydicom.pixels.apply_modality_lut`; for enhanced objects the
    slope and intercept of ``frame`` are taken from the functional groups.
    ``arr`` defaults to ``ds.pixel_array``.
    """
    from pydicom import Dataset
    from pydicom.pixels import apply_modality_lut

    arr = _frames(ds, arr)
    if "RescaleSlope" in ds or "ModalityLUTSequence" in ds:
        return np.asarray(apply_modality_lut(arr, ds), dtype=np.float64)
    slope = header_value(ds, "RescaleSlope", frame)
    intercept = header_value(ds, "RescaleIntercept", frame)
    if slope is None or intercept is None:
        return arr.astype(np.float64)
    tmp = Dataset()
    tmp.RescaleSlope, tmp.RescaleIntercept = slope, intercept
    return np.asarray(apply_modality_lut(arr, tmp), dtype=np.float64)


def to_hounsfield(ds, arr: np.ndarray | None = None, frame: int = 0) -> np.ndarray:
    """Hounsfield units (HU, 亨氏单位) of a CT image: the modality LUT, after checking the values are HU.

    Refuses a non-CT dataset and a CT whose *Rescale Type* says the values are
    something else (e.g. ``US`` = unspecified, as in derived perfusion maps).
    """
    modality = ds.get("Modality", "")
    if modality != "CT":
        raise ValueError(
            f"{_name(ds)}: Modality is {modality!r}, not 'CT'; Hounsfield units exist only for CT. "
            f"Use rescaled(ds) for the modality values of other images"
        )
    rescale_type = header_value(ds, "RescaleType", frame)
    if rescale_type not in (None, "HU"):
        raise ValueError(
            f"{_name(ds)}: RescaleType is {rescale_type!r}, so the rescaled values are not HU "
            f"(this is a derived image); use rescaled(ds) and the units its header states"
        )
    if header_value(ds, "RescaleSlope", frame) is None and "ModalityLUTSequence" not in ds:
        raise ValueError(
            f"{_name(ds)}: no RescaleSlope/RescaleIntercept and no Modality LUT; "
            f"the stored values cannot be converted to HU"
        )
    return rescaled(ds, arr, frame)


def padding_mask(ds, arr: np.ndarray | None = None) -> np.ndarray:
    """Boolean mask of pixels equal to *Pixel Padding Value* (outside the reconstructed field), else all False."""
    arr = _frames(ds, arr)
    pad = ds.get("PixelPaddingValue")
    if pad is None:
        return np.zeros(arr.shape, dtype=bool)
    return arr == pad


def window(image, center: float, width: float) -> np.ndarray:
    """Map values to display intensities in ``[0, 1]`` with a linear window.

    ``out = clip((x - (center - width/2)) / width, 0, 1)``: values at or below
    ``center - width/2`` are black (0), at or above ``center + width/2`` white (1).
    This equals DICOM's ``LINEAR_EXACT`` VOI function (PS3.3 C.11.2.1.3.2)
    scaled to ``[0, 1]``; DICOM's default ``LINEAR`` function
    (C.11.2.1.2.1) uses ``center - 0.5`` and ``width - 1`` instead, which
    differs by less than ``1 / (width - 1)``.
    """
    if not np.isfinite(width) or width <= 0:
        raise ValueError(f"window width must be a positive number, got {width!r}")
    x = np.asarray(image, dtype=np.float64)
    return np.clip((x - (center - width / 2.0)) / width, 0.0, 1.0)


def display_array(
    ds, frame: int = 0, window_cw: tuple[float, float] | None = None, percentiles: tuple[float, float] = (0.5, 99.5)
) -> np.ndarray:
    """An array ready for ``plt.imshow``: float in ``[0, 1]`` (grey) or uint8 ``(H, W, 3)`` (colour).

    Grey images: modality LUT, then the window ``window_cw`` (center, width),
    else the header's first *Window Center/Width*, else the ``percentiles`` of
    the values; then *MONOCHROME1* images are inverted (``1 - v``) because
    their smallest value is meant to be displayed white (PS3.3 C.7.6.3.1.2).
    Colour images (``SamplesPerPixel == 3``) are returned as RGB, one frame.
    """
    arr = ds.pixel_array
    n_frames = int(ds.get("NumberOfFrames", 1) or 1)
    if n_frames > 1:
        arr = arr[frame]
    photometric = ds.get("PhotometricInterpretation", "MONOCHROME2")
    if int(ds.get("SamplesPerPixel", 1)) == 3:
        return np.asarray(arr, dtype=np.uint8)
    if photometric not in ("MONOCHROME1", "MONOCHROME2"):
        raise ValueError(
            f"{_name(ds)}: PhotometricInterpretation {photometric!r} is not handled here "
            f"(palette colour needs pydicom.pixels.apply_color_lut)"
        )
    values = rescaled(ds, arr, frame)
    if window_cw is None:
        wc, ww = header_value(ds, "WindowCenter", frame), header_value(ds, "WindowWidth", frame)
        if wc is not None and ww is not None:
            first = lambda v: float(v[0]) if hasattr(v, "__len__") and not isinstance(v, str) else float(v)  # noqa: E731
            window_cw = (first(wc), first(ww))
        else:
            lo, hi = np.percentile(values, percentiles)
            window_cw = ((lo + hi) / 2.0, max(hi - lo, 1e-6))
    out = window(values, *window_cw)
    return 1.0 - out if photometric == "MONOCHROME1" else out


def real_world_units(ds, frame: int = 0) -> list[dict[str, Any]]:
    """The *Real World Value Mapping* items of ``ds`` (PS3.3 C.7.6.16.2.11): what the values mean, in which unit.

    Each item of *Real World Value Mapping Sequence* (0040,9096), at the top level or in the enhanced
    functional groups of ``frame``, becomes a dict with ``label`` (*LUT Label*), ``explanation``
    (*LUT Explanation*), ``units`` (the *Code Value* of *Measurement Units Code Sequence*, a UCUM
    unit such as ``ml/100ml/s``), ``scheme`` (its coding scheme, e.g. ``UCUM``), ``slope`` and
    ``intercept`` (value = slope × stored + intercept) and ``first``/``last`` (the stored values the
    mapping covers).  An empty list means the file declares no real-world unit for its values.
    """
    sequences = []
    if ds.get("RealWorldValueMappingSequence"):
        sequences.append(ds.RealWorldValueMappingSequence)
    for group_seq in ("PerFrameFunctionalGroupsSequence", "SharedFunctionalGroupsSequence"):
        groups = ds.get(group_seq)
        if not groups:
            continue
        item = groups[frame] if group_seq.startswith("PerFrame") and frame < len(groups) else groups[0]
        if item.get("RealWorldValueMappingSequence"):
            sequences.append(item.RealWorldValueMappingSequence)

    def to_float(value):
        return None if value is None else float(value)

    out = []
    for seq in sequences:
        for item in seq:
            unit = item.get("MeasurementUnitsCodeSequence")
            unit = unit[0] if unit else None
            out.append(
                {
                    "label": str(item.get("LUTLabel", "")),
                    "explanation": str(item.get("LUTExplanation", "")),
                    "units": None if unit is None else str(unit.get("CodeValue", "")),
                    "scheme": None if unit is None else str(unit.get("CodingSchemeDesignator", "")),
                    "slope": to_float(item.get("RealWorldValueSlope")),
                    "intercept": to_float(item.get("RealWorldValueIntercept")),
                    "first": item.get("RealWorldValueFirstValueMapped"),
                    "last": item.get("RealWorldValueLastValueMapped"),
                }
            )
    return out


# ---------------------------------------------------------------------------
# geometry and size
# ---------------------------------------------------------------------------


def pixel_spacing_mm(ds, frame: int = 0) -> tuple[float, float]:
    """``(row_spacing, column_spacing)`` in mm from *Pixel Spacing* (0028,0030).

    Looks in the enhanced functional groups too.  Raises ``ValueError`` if the
    attribute is missing or not positive: then the image has no trustworthy
    physical scale, and nothing should be measured in mm.
    """
    spacing = header_value(ds, "PixelSpacing", frame)
    if spacing is None:
        hint = (
            " It has ImagerPixelSpacing (0018,1164), which is the spacing at the detector, not in the patient;"
            " divide by the magnification factor if you must"
            if "ImagerPixelSpacing" in ds
            else ""
        )
        raise ValueError(
            f"{_name(ds)}: no PixelSpacing (0028,0030).{hint} Without it the image has no "
            f"physical scale; do not report sizes in mm"
        )
    values = [float(v) for v in spacing]
    if len(values) != 2 or not all(math.isfinite(v) and v > 0 for v in values):
        raise ValueError(
            f"{_name(ds)}: PixelSpacing is {values}, not two positive numbers; the header is "
            f"incomplete (common in anonymised or converted files), so sizes in mm are unknown"
        )
    return values[0], values[1]


def field_of_view_mm(ds, frame: int = 0) -> tuple[float, float]:
    """Physical size ``(height, width)`` in mm of the image: ``Rows * row_spacing, Columns * column_spacing``."""
    row_spacing, col_spacing = pixel_spacing_mm(ds, frame)
    return int(ds.Rows) * row_spacing, int(ds.Columns) * col_spacing


def extent_mm(ds, frame: int = 0) -> tuple[float, float, float, float]:
    """``extent`` for ``plt.imshow`` in mm from the image's top-left corner: ``(0, width, height, 0)``."""
    height, width = field_of_view_mm(ds, frame)
    return 0.0, width, height, 0.0


def image_bytes(ds) -> int:
    """Uncompressed size of the pixel data from the header.

    ``Rows * Columns * BitsAllocated / 8 * SamplesPerPixel * NumberOfFrames``
    (rounded up to whole bytes for 1-bit images).  Compression in the file
    (e.g. JPEG 2000) does not change this: it is what the pixels occupy in
    memory once decoded.
    """
    missing = [k for k in ("Rows", "Columns", "BitsAllocated") if k not in ds]
    if missing:
        raise ValueError(f"{_name(ds)}: header lacks {missing}; this is not an image (or the header was stripped)")
    bits = int(ds.Rows) * int(ds.Columns) * int(ds.BitsAllocated) * int(ds.get("SamplesPerPixel", 1) or 1)
    bits *= int(ds.get("NumberOfFrames", 1) or 1)
    return -(-bits // 8)


def frame_geometry(ds) -> tuple[np.ndarray, np.ndarray]:
    """``(positions, orientation)``: *Image Position (Patient)* of every frame, ``(n_frames, 3)``, and the
    six values of *Image Orientation (Patient)* of the first frame.

    Works for a single-frame image (one row) and for an enhanced multi-frame object, whose per-frame
    positions sit in *Plane Position Sequence* (see :func:`header_value`).  Raises ``ValueError`` if
    a position or the orientation is missing, or if the frames are not all in the same orientation.
    """
    n_frames = int(ds.get("NumberOfFrames", 1) or 1)
    positions, orientations = [], []
    for k in range(n_frames):
        ipp, iop = header_value(ds, "ImagePositionPatient", k), header_value(ds, "ImageOrientationPatient", k)
        if ipp is None or iop is None:
            raise ValueError(
                f"{_name(ds)}: frame {k} has no Image Position/Orientation (Patient); its place "
                f"in the patient is unknown"
            )
        positions.append([float(v) for v in ipp])
        orientations.append([float(v) for v in iop])
    orientations = np.asarray(orientations)
    if not np.allclose(orientations, orientations[0], atol=1e-4):
        raise ValueError(
            f"{_name(ds)}: the frames have different orientations; they are not one stack of parallel slices"
        )
    return np.asarray(positions), orientations[0]


# ---------------------------------------------------------------------------
# privacy
# ---------------------------------------------------------------------------


def value_text(value: Any, limit: int = 60) -> str:
    """A DICOM element's value as one line of at most ``limit`` characters, for tables and audit logs.

    Bytes print as ``<N bytes>``, a sequence as ``<sequence of N item(s)>``, anything else as ``str(value)``;
    a longer text is cut and ends in ``…``.  Used by :func:`phi_attributes` and by the de-identification
    audit of :mod:`utils.privacy`.

    Taught in chapter 1, section "Patient data in the header", and in chapter 6, part 2, section 1.
    """
    from pydicom.sequence import Sequence

    if isinstance(value, (bytes, bytearray)):
        text = f"<{len(value)} bytes>"
    elif isinstance(value, Sequence):
        text = f"<sequence of {len(value)} item(s)>"
    else:
        text = str(value)
    return text if len(text) <= limit else text[: limit - 1] + "…"


def _is_empty(value: Any) -> bool:
    return value is None or (hasattr(value, "__len__") and len(value) == 0)


def phi_attributes(ds, *, include_empty: bool = False) -> list[PHIAttribute]:
    """Potentially identifying attributes present in ``ds`` (including nested sequences).

    Reports (1) every attribute of Table E.1-1 (:data:`utils.privacy.BASIC_PROFILE`), (2) every
    private tag (the Basic Profile removes them unless they are known to be
    safe), and (3) any other person-name (PN) attribute.  Empty values are
    skipped unless ``include_empty``.  The file meta header (group 0002) is
    not inspected.  Pixel data are not inspected either: text *burned into*
    the image must be checked separately (see *Burned In Annotation*).
    """
    from . import privacy

    found: list[PHIAttribute] = []
    for elem in ds.iterall():
        tag = elem.tag
        if elem.keyword == "PixelData":
            continue
        if privacy.profile_code(tag) is not None:
            reason, keyword = "PS3.15 basic profile", privacy._key_of(tag)
        elif tag.is_private:
            reason, keyword = "private tag", "(private)"
        elif elem.VR == "PN":
            reason, keyword = "person name (PN)", elem.keyword
        else:
            continue
        if not include_empty and _is_empty(elem.value):
            continue
        found.append(PHIAttribute(keyword, f"({tag.group:04X},{tag.element:04X})", value_text(elem.value), reason))
    return found


# ---------------------------------------------------------------------------
# NIfTI
# ---------------------------------------------------------------------------


def nifti_summary(img) -> dict[str, Any]:
    """Shape, data type, voxel sizes, orientation and field of view of a NIfTI image (path or nibabel image).

    ``axcodes`` (:func:`nibabel.aff2axcodes`) names, for each array axis,
    the direction in which the index increases in NIfTI's RAS+ world
    (e.g. ``('L', 'A', 'S')``).  ``zooms`` are in the header's units
    (``units``), usually mm and seconds.
    """
    import nibabel as nib

    if isinstance(img, (str, Path)):
        path = Path(img)
        try:
            img = nib.load(path)
        except Exception as exc:  # nibabel raises ImageFileError and others
            raise ValueError(
                f"{path.name}: nibabel cannot read it as NIfTI/Analyze ({exc}); DICOM files are read with read_dicom"
            ) from exc
    header = img.header
    zooms = tuple(float(z) for z in header.get_zooms())
    spatial = img.shape[:3]
    space_unit, time_unit = header.get_xyzt_units() if hasattr(header, "get_xyzt_units") else ("unknown", "unknown")
    return {
        "shape": tuple(int(s) for s in img.shape),
        "dtype": str(img.get_data_dtype()),
        "zooms": zooms,
        "units": (space_unit, time_unit),
        "axcodes": tuple(nib.aff2axcodes(img.affine)),
        "voxel_volume_mm3": float(np.prod(zooms[:3])),
        "fov_mm": tuple(float(n * z) for n, z in zip(spatial, zooms[:3])),
        "affine": np.asarray(img.affine, dtype=float),
    }
