"""Tests of utils.imaging on the real sample files (through utils.data) and on synthetic datasets."""

from __future__ import annotations

import numpy as np
import pydicom
import pytest
from conftest import resolve_real_sample
from pydicom import Dataset
from pydicom.datadict import tag_for_keyword
from pydicom.dataset import FileMetaDataset
from pydicom.pixels import apply_modality_lut, apply_windowing
from pydicom.sequence import Sequence
from pydicom.uid import ExplicitVRLittleEndian

from utils import imaging

# ---------------------------------------------------------------------------
# real files: resolved once per module through the data layer
# ---------------------------------------------------------------------------


@pytest.fixture(scope="module")
def sample(tmp_path_factory):
    """``sample(dataset, file)``: the path of a registry sample file.

    Looks in the session's data mirror and the developer's cache first (no
    download), else fetches into a module-wide temporary cache (the pydicom-data
    wheel is downloaded once), else skips with the reason.
    """
    fetched = tmp_path_factory.mktemp("imaging-samples")
    memo: dict[tuple[str, str], object] = {}

    def get(name: str, file: str):
        if (name, file) not in memo:
            memo[name, file] = resolve_real_sample(name, file, fetched)
        return memo[name, file]

    return get


@pytest.fixture(scope="module")
def head_ct(sample):
    return imaging.read_dicom(sample("pydicom-data-samples", "693_UNCR.dcm"))


@pytest.fixture(scope="module")
def chest_cr(sample):
    return imaging.read_dicom(sample("pydicom-data-samples", "RG1_UNCR.dcm"))


@pytest.fixture(scope="module")
def ultrasound(sample):
    return imaging.read_dicom(sample("pydicom-data-samples", "US1_UNCR.dcm"))


@pytest.fixture(scope="module")
def perfusion(sample):
    return imaging.read_dicom(sample("pydicom-data-samples", "eCT_Supplemental.dcm"))


@pytest.fixture(scope="module")
def ct_small(sample):
    return imaging.read_dicom(sample("pydicom-samples", "CT_small.dcm"))


# ---------------------------------------------------------------------------
# synthetic datasets
# ---------------------------------------------------------------------------


def image_ds(pixels, photometric="MONOCHROME2", bits_stored=16, **attrs) -> Dataset:
    """A minimal single-frame image dataset holding ``pixels``."""
    ds = Dataset()
    ds.set_pixel_data(np.asarray(pixels), photometric, bits_stored)
    for key, value in attrs.items():
        setattr(ds, key, value)
    return ds


def header_ds(**attrs) -> Dataset:
    """A dataset with attributes only (no pixels)."""
    ds = Dataset()
    ds.file_meta = FileMetaDataset()
    ds.file_meta.TransferSyntaxUID = ExplicitVRLittleEndian
    for key, value in attrs.items():
        setattr(ds, key, value)
    return ds


# ---------------------------------------------------------------------------
# reading
# ---------------------------------------------------------------------------


def test_read_dicom_reads_the_head_ct(head_ct):
    assert head_ct.Modality == "CT" and (head_ct.Rows, head_ct.Columns) == (512, 512)
    assert head_ct.pixel_array.shape == (512, 512)


def test_read_dicom_refuses_a_jpeg_with_a_useful_message(sample):
    path = sample("skimage-samples", "retina.jpg")
    with pytest.raises(ValueError, match=r"retina\.jpg is not a DICOM file.*skimage\.io\.imread"):
        imaging.read_dicom(path)


def test_read_dicom_missing_file(tmp_path):
    with pytest.raises(FileNotFoundError, match="no such file"):
        imaging.read_dicom(tmp_path / "nothing.dcm")


# ---------------------------------------------------------------------------
# Hounsfield units
# ---------------------------------------------------------------------------


def test_to_hounsfield_is_slope_times_stored_plus_intercept(head_ct):
    hu = imaging.to_hounsfield(head_ct)
    raw = head_ct.pixel_array.astype(np.float64)
    assert hu.dtype == np.float64
    np.testing.assert_array_equal(hu, raw * float(head_ct.RescaleSlope) + float(head_ct.RescaleIntercept))
    np.testing.assert_array_equal(hu, apply_modality_lut(head_ct.pixel_array, head_ct))


def test_air_outside_the_head_is_minus_1000_hu(head_ct):
    air = imaging.to_hounsfield(head_ct)[20:41, 246:267]
    assert abs(air.mean() + 1000) < 10


def test_to_hounsfield_of_known_values():
    stored = np.array([[0, 1024], [2048, 24]], dtype=np.int16)
    ds = image_ds(stored, Modality="CT", RescaleSlope=2, RescaleIntercept=-1000)
    np.testing.assert_array_equal(imaging.to_hounsfield(ds), [[-1000, 1048], [3096, -952]])


def test_to_hounsfield_refuses_non_ct_and_non_hu(perfusion):
    mr = image_ds(np.zeros((2, 2), np.int16), Modality="MR", RescaleSlope=1, RescaleIntercept=0)
    with pytest.raises(ValueError, match="Modality is 'MR'"):
        imaging.to_hounsfield(mr)
    with pytest.raises(ValueError, match=r"eCT_Supplemental\.dcm: RescaleType is 'US'"):
        imaging.to_hounsfield(perfusion)
    no_rescale = image_ds(np.zeros((2, 2), np.int16), Modality="CT")
    with pytest.raises(ValueError, match="no RescaleSlope"):
        imaging.to_hounsfield(no_rescale)


def test_rescaled_reads_enhanced_functional_groups(perfusion):
    values = imaging.rescaled(perfusion, frame=0)  # slope 1, intercept -1024 in the functional groups
    np.testing.assert_array_equal(values, perfusion.pixel_array.astype(np.float64) - 1024)
    assert imaging.header_value(perfusion, "WindowCenter") == 49
    assert imaging.header_value(perfusion, "PixelPaddingValue", default="x") == "x"
    with pytest.raises(ValueError, match="not a DICOM keyword"):
        imaging.header_value(perfusion, "NoSuchKeyword")


def test_padding_mask(head_ct):
    mask = imaging.padding_mask(head_ct)
    np.testing.assert_array_equal(mask, head_ct.pixel_array == -2000)
    assert 0.15 < mask.mean() < 0.3 and not mask[256, 256]
    assert not imaging.padding_mask(image_ds(np.zeros((2, 2), np.uint16))).any()


# ---------------------------------------------------------------------------
# windowing and display
# ---------------------------------------------------------------------------


def test_window_endpoints_and_centre():
    out = imaging.window([-1000, 0, 20, 40, 60, 80, 3000], 40, 40)
    np.testing.assert_allclose(out, [0, 0, 0, 0.5, 1, 1, 1])
    assert out.dtype == np.float64


@pytest.mark.parametrize("width", [0, -10, np.nan])
def test_window_rejects_bad_width(width):
    with pytest.raises(ValueError, match="window width"):
        imaging.window([1, 2], 0, width)


def test_window_equals_dicom_linear_exact_and_is_close_to_linear():
    rng = np.random.default_rng(0)
    values = rng.integers(-1500, 2500, 5000).astype(np.float64)
    y_min, y_max = -(2**15), 2**15 - 1  # signed 16-bit range, slope 1, intercept 0
    for center, width in imaging.WINDOWS.values():
        voi = Dataset()
        voi.PhotometricInterpretation, voi.BitsStored, voi.PixelRepresentation = "MONOCHROME2", 16, 1
        voi.WindowCenter, voi.WindowWidth, voi.VOILUTFunction = center, width, "LINEAR_EXACT"
        exact = (apply_windowing(values.copy(), voi) - y_min) / (y_max - y_min)
        np.testing.assert_allclose(imaging.window(values, center, width), exact, atol=1e-12)
        voi.VOILUTFunction = "LINEAR"
        linear = (apply_windowing(values.copy(), voi) - y_min) / (y_max - y_min)
        assert np.abs(imaging.window(values, center, width) - linear).max() <= 1 / (width - 1) + 1e-12


def test_window_presets_are_sensible():
    assert imaging.WINDOWS["brain"] == (40.0, 80.0)
    assert all(width > 0 for _, width in imaging.WINDOWS.values())
    assert imaging.WINDOWS["lung"][0] < imaging.WINDOWS["soft tissue"][0] < imaging.WINDOWS["bone"][0]


def test_display_array_inverts_monochrome1():
    stored = np.array([[0, 100], [200, 400]], dtype=np.uint16)
    mono2 = imaging.display_array(image_ds(stored, "MONOCHROME2"), window_cw=(200, 400))
    mono1 = imaging.display_array(image_ds(stored, "MONOCHROME1"), window_cw=(200, 400))
    np.testing.assert_allclose(mono2, [[0, 0.25], [0.5, 1]])
    np.testing.assert_allclose(mono1, 1 - mono2)


def test_display_array_uses_the_header_window_else_percentiles():
    stored = np.arange(100, dtype=np.uint16).reshape(10, 10)
    with_window = image_ds(stored, WindowCenter=50, WindowWidth=20)
    np.testing.assert_allclose(imaging.display_array(with_window), imaging.window(stored, 50, 20))
    auto = imaging.display_array(image_ds(stored), percentiles=(0, 100))
    assert auto.min() == 0 and auto.max() == 1


def test_display_array_of_the_real_monochrome1_radiograph(chest_cr):
    assert chest_cr.PhotometricInterpretation == "MONOCHROME1"
    shown = imaging.display_array(chest_cr)
    np.testing.assert_allclose(shown, 1 - imaging.window(chest_cr.pixel_array, 15000, 30000))


def test_display_array_rgb_and_unsupported(ultrasound):
    rgb = imaging.display_array(ultrasound)
    assert rgb.shape == (480, 640, 3) and rgb.dtype == np.uint8
    palette = image_ds(np.zeros((2, 2), np.uint8), "PALETTE COLOR", 8)
    with pytest.raises(ValueError, match="PALETTE COLOR"):
        imaging.display_array(palette)


# ---------------------------------------------------------------------------
# geometry and size
# ---------------------------------------------------------------------------


def test_pixel_spacing_and_field_of_view_of_the_head_ct(head_ct):
    assert imaging.pixel_spacing_mm(head_ct) == (0.478516, 0.478516)
    height, width = imaging.field_of_view_mm(head_ct)
    assert height == pytest.approx(245.0, abs=0.01) and width == pytest.approx(245.0, abs=0.01)
    assert imaging.extent_mm(head_ct) == (0.0, width, height, 0.0)


def test_field_of_view_keeps_the_row_column_order():
    ds = header_ds(Rows=300, Columns=200, PixelSpacing=[0.5, 2.0])
    assert imaging.pixel_spacing_mm(ds) == (0.5, 2.0)
    assert imaging.field_of_view_mm(ds) == (150.0, 400.0)


def test_pixel_spacing_errors_name_the_file_and_attribute(chest_cr, ultrasound):
    with pytest.raises(ValueError, match=r"RG1_UNCR\.dcm: PixelSpacing is \[0\.0, 0\.0\]"):
        imaging.pixel_spacing_mm(chest_cr)
    with pytest.raises(ValueError, match=r"US1_UNCR\.dcm: no PixelSpacing"):
        imaging.field_of_view_mm(ultrasound)
    with pytest.raises(ValueError, match="ImagerPixelSpacing"):
        imaging.pixel_spacing_mm(header_ds(Rows=2, Columns=2, ImagerPixelSpacing=[0.1, 0.1]))


def test_pixel_spacing_of_an_enhanced_object(perfusion):
    assert imaging.pixel_spacing_mm(perfusion) == (0.388672, 0.388672)


@pytest.mark.parametrize(
    "attrs, expected",
    [
        (dict(Rows=512, Columns=512, BitsAllocated=16), 524288),
        (dict(Rows=480, Columns=640, BitsAllocated=8, SamplesPerPixel=3), 921600),
        (dict(Rows=512, Columns=512, BitsAllocated=16, NumberOfFrames=2), 1048576),
        (dict(Rows=3, Columns=3, BitsAllocated=1), 2),  # 9 bits round up to 2 bytes
    ],
)
def test_image_bytes_formula(attrs, expected):
    assert imaging.image_bytes(header_ds(**attrs)) == expected


def test_image_bytes_matches_the_pixel_data_of_real_files(sample):
    for name, file in [
        ("pydicom-data-samples", f)
        for f in ("693_UNCR.dcm", "RG1_UNCR.dcm", "US1_UNCR.dcm", "MR2_UNCR.dcm", "eCT_Supplemental.dcm")
    ] + [("pydicom-samples", "CT_small.dcm"), ("pydicom-samples", "MR_small.dcm")]:
        ds = imaging.read_dicom(sample(name, file))
        assert imaging.image_bytes(ds) == len(ds.PixelData), file


def test_image_bytes_needs_an_image_header():
    with pytest.raises(ValueError, match=r"lacks \['BitsAllocated'\]"):
        imaging.image_bytes(header_ds(Rows=2, Columns=2))


def test_header_summary(head_ct):
    h = imaging.header_summary(head_ct)
    assert h["Modality"] == "CT" and h["Rows"] == 512 and h["RescaleIntercept"] == -1024
    assert h["PixelSpacing"] == [0.478516, 0.478516] and h["NumberOfFrames"] is None


# ---------------------------------------------------------------------------
# privacy
# ---------------------------------------------------------------------------


def test_profile_keywords_are_real_dicom_keywords():
    assert all(k.startswith("(") or tag_for_keyword(k) is not None for k in imaging.PS315_BASIC_PROFILE)
    assert len(set(imaging.PS315_BASIC_PROFILE)) == len(imaging.PS315_BASIC_PROFILE)


def test_phi_finds_names_private_tags_and_nested_identifiers():
    ds = header_ds(PatientName="Doe^Jane", PatientID="123", Modality="CT", Rows=2, OperatorsName="Smith^Tom")
    block = ds.private_block(0x0009, "ACME_PRIVATE", create=True)
    block.add_new(0x01, "LO", "secret id 987")
    ds.ContentCreatorName = "Lee^Ann"  # a PN attribute of the profile (Table E.1-1: Z/D)
    ds.EvaluatorName = "Ng^Bo"  # a PN attribute not in Table E.1-1
    item = Dataset()
    item.PatientID = "other-456"
    ds.OtherPatientIDsSequence = Sequence([item])
    found = imaging.phi_attributes(ds)
    keywords = [a.keyword for a in found]
    assert {"PatientName", "PatientID", "OperatorsName", "ContentCreatorName", "OtherPatientIDsSequence"} <= set(
        keywords
    )
    assert keywords.count("PatientID") == 2  # the nested one too
    private = [a for a in found if a.reason == "private tag"]
    assert {a.tag for a in private} == {"(0009,0010)", "(0009,1001)"}
    assert any(a.value == "secret id 987" for a in private)
    by_kw = {a.keyword: a for a in found}
    assert by_kw["PatientName"].tag == "(0010,0010)" and by_kw["PatientName"].value == "Doe^Jane"
    assert by_kw["ContentCreatorName"].reason == "PS3.15 basic profile"
    assert by_kw["EvaluatorName"].reason == "person name (PN)"
    assert "Modality" not in keywords and "Rows" not in keywords


def test_phi_of_a_cleaned_dataset_is_empty():
    ds = header_ds(PatientName="", PatientID="", Modality="CT", Rows=2, Columns=2, BitsAllocated=16)
    assert imaging.phi_attributes(ds) == []
    assert [a.keyword for a in imaging.phi_attributes(ds, include_empty=True)] == ["PatientName", "PatientID"]


def test_phi_of_the_real_samples(ct_small, chest_cr):
    small = imaging.phi_attributes(ct_small)
    assert sum(a.reason == "private tag" for a in small) == 172
    assert "PatientName" in {a.keyword for a in small}
    cr = {a.keyword: a.value for a in imaging.phi_attributes(chest_cr)}
    assert cr["PatientBirthDate"] == "19400305" and cr["ReferringPhysicianName"] == "ward"
    assert "InstitutionName" in cr and "StudyInstanceUID" in cr


# ---------------------------------------------------------------------------
# NIfTI
# ---------------------------------------------------------------------------


def test_nifti_summary_of_the_4d_example(sample):
    s = imaging.nifti_summary(sample("nibabel-samples", "example4d.nii.gz"))
    assert s["shape"] == (128, 96, 24, 2)
    assert s["axcodes"] == ("L", "A", "S")
    np.testing.assert_allclose(s["zooms"][:3], (2.0, 2.0, 2.2), rtol=1e-5)
    np.testing.assert_allclose(s["fov_mm"], (256.0, 192.0, 52.8), rtol=1e-5)
    np.testing.assert_allclose(np.sqrt((s["affine"][:3, :3] ** 2).sum(axis=0)), s["zooms"][:3], rtol=1e-5)


def test_nifti_summary_accepts_an_image_and_rejects_dicom(sample):
    import nibabel as nib

    s = imaging.nifti_summary(nib.load(sample("nibabel-samples", "anatomical.nii")))
    assert s["shape"] == (33, 41, 25) and s["voxel_volume_mm3"] == pytest.approx(8.0)
    with pytest.raises(ValueError, match=r"CT_small\.dcm: nibabel cannot read it"):
        imaging.nifti_summary(sample("pydicom-samples", "CT_small.dcm"))


def test_pydicom_module_is_the_reader(head_ct):
    assert isinstance(head_ct, pydicom.FileDataset)


# ---------------------------------------------------------------------------
# real-world units and frame geometry
# ---------------------------------------------------------------------------


def test_real_world_units_of_the_perfusion_map(perfusion, head_ct):
    (units,) = imaging.real_world_units(perfusion)
    assert units["units"] == "ml/100ml/s" and units["scheme"] == "UCUM"
    assert units["label"] == "RCBF" and "Blood Flow" in units["explanation"]
    assert (units["slope"], units["intercept"], units["first"], units["last"]) == (1.0, -1024.0, 0, 4095)
    assert imaging.real_world_units(head_ct) == []  # a plain CT declares its unit through Rescale Type only


def test_real_world_units_at_the_top_level():
    item = Dataset()
    item.LUTLabel, item.RealWorldValueSlope, item.RealWorldValueIntercept = "ADC", 1e-6, 0.0
    unit = Dataset()
    unit.CodeValue, unit.CodingSchemeDesignator = "mm2/s", "UCUM"
    item.MeasurementUnitsCodeSequence = Sequence([unit])
    ds = Dataset()
    ds.RealWorldValueMappingSequence = Sequence([item])
    (found,) = imaging.real_world_units(ds)
    assert found["units"] == "mm2/s" and found["slope"] == 1e-6 and found["explanation"] == ""


def test_frame_geometry_of_single_and_multi_frame_objects(perfusion, head_ct):
    positions, orientation = imaging.frame_geometry(perfusion)
    assert positions.shape == (2, 3) and np.allclose(positions[:, 2], [-159.0, -149.0])
    assert np.allclose(orientation, [-1, 0, 0, 0, 1, 0])
    positions, orientation = imaging.frame_geometry(head_ct)
    assert positions.shape == (1, 3) and np.allclose(orientation, [1, 0, 0, 0, 1, 0])


def test_frame_geometry_refuses_missing_or_mixed_orientations():
    ds = Dataset()
    ds.ImagePositionPatient = [0, 0, 0]
    with pytest.raises(ValueError, match="no Image Position/Orientation"):
        imaging.frame_geometry(ds)
    frames = []
    for iop in ([1, 0, 0, 0, 1, 0], [1, 0, 0, 0, 0, -1]):
        plane, pos, item = Dataset(), Dataset(), Dataset()
        plane.ImageOrientationPatient, pos.ImagePositionPatient = iop, [0, 0, 0]
        item.PlaneOrientationSequence, item.PlanePositionSequence = Sequence([plane]), Sequence([pos])
        frames.append(item)
    mixed = Dataset()
    mixed.NumberOfFrames, mixed.PerFrameFunctionalGroupsSequence = 2, Sequence(frames)
    with pytest.raises(ValueError, match="different orientations"):
        imaging.frame_geometry(mixed)
