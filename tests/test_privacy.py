"""Tests of utils.privacy: DICOM de-identification on every real sample, FedAvg, DP-SGD and its accountant."""

from __future__ import annotations

import io
from pathlib import Path

import numpy as np
import pydicom
import pytest
from conftest import resolve_real_sample
from pydicom.datadict import tag_for_keyword
from pydicom.dataset import Dataset, FileMetaDataset
from pydicom.sequence import Sequence
from pydicom.uid import UID, ExplicitVRLittleEndian, generate_uid

from utils import classify, data, imaging, privacy

DICOM_DATASETS = ("pydicom-samples", "pydicom-data-samples")
SALT = "test-salt-0123456789"


# ---------------------------------------------------------------------------
# the profile table
# ---------------------------------------------------------------------------


def test_profile_table_is_all_of_table_e11_from_the_pinned_library():
    from dicomanonymizer.dicomfields_selector import dicom_anonymization_database_selector

    table = dicom_anonymization_database_selector(privacy.PROFILE_SOURCE[1])
    n_rows = sum(len(table[c]) for c in privacy._CATEGORY_CODES)
    assert len(privacy.BASIC_PROFILE) == n_rows > 600  # every row, none typed by hand
    assert "2026c" in privacy.PROFILE_EDITION
    assert set(imaging.PS315_BASIC_PROFILE) == set(privacy.BASIC_PROFILE)  # one table: chapter 1's is derived
    for key, code in privacy.BASIC_PROFILE.items():
        assert key.startswith("(") or tag_for_keyword(key) is not None, key
        assert privacy.applied_action(code) in {"X", "Z", "D", "U", "U*"}
    rows = privacy.profile_table()
    assert len(rows) == len(privacy.BASIC_PROFILE)
    by_kw = {r[1]: r for r in rows}
    assert by_kw["PatientName"][0] == "(0010,0010)" and by_kw["PatientName"][2] == "Z"
    assert by_kw["StudyInstanceUID"][2] == "U" and by_kw["PatientAge"][2] == "X"
    assert by_kw["InstitutionName"][2:] == ("X/Z/D", "D")
    assert {"(50xx,xxxx)", "(60xx,3000)", "(60xx,4000)"} <= set(privacy.BASIC_PROFILE)
    assert privacy.profile_code(0x60023000) == "X" and privacy.profile_code("SOPClassUID") is None


@pytest.mark.parametrize(
    "keyword, code",
    [  # a cross-check of the library's table against the standard's rows
        ("PatientID", "Z/D"),
        ("PatientBirthDate", "Z"),
        ("AccessionNumber", "Z"),
        ("StudyDate", "Z"),
        ("ReferringPhysicianName", "Z"),
        ("StationName", "X/Z/D"),
        ("DeviceSerialNumber", "X/Z/D"),
        ("SOPInstanceUID", "U"),
        ("FrameOfReferenceUID", "U"),
        ("ReferencedImageSequence", "X/Z/U*"),
        ("PatientAddress", "X"),
        ("OtherPatientIDsSequence", "X"),
        ("ScheduledPerformingPhysicianName", "X"),
    ],
)
def test_profile_codes_of_well_known_rows(keyword, code):
    assert privacy.BASIC_PROFILE[keyword] == code


@pytest.mark.parametrize(
    "code, action",
    [
        ("X", "X"),
        ("Z", "Z"),
        ("D", "D"),
        ("U", "U"),
        ("X/Z", "Z"),
        ("X/D", "D"),
        ("Z/D", "D"),
        ("X/Z/D", "D"),
        ("X/Z/U*", "U*"),
    ],
)
def test_applied_action(code, action):
    assert privacy.applied_action(code) == action


def test_applied_action_rejects_unknown_codes():
    with pytest.raises(ValueError, match="unknown action code"):
        privacy.applied_action("K")


# ---------------------------------------------------------------------------
# UIDs and pseudonyms
# ---------------------------------------------------------------------------


def test_remap_uid_is_deterministic_valid_and_keyed():
    uid = "1.3.6.1.4.1.5962.1.2.9.20040826185059.5457"
    new = privacy.remap_uid(uid, SALT)
    assert new == privacy.remap_uid(uid, SALT)
    assert new.startswith("2.25.") and len(new) <= 64 and UID(new).is_valid
    assert new != privacy.remap_uid(uid, SALT + "x")
    assert new != privacy.remap_uid(uid + "1", SALT)
    mapping = {}
    assert privacy.remap_uid(uid, SALT, mapping) == new and mapping == {uid: new}


def test_pydicom_generate_uid_without_prefix_ignores_entropy():
    # the reason remap_uid does not use generate_uid(prefix=None, entropy_srcs=...)
    assert generate_uid(prefix=None, entropy_srcs=[SALT, "1.2.3"]) != generate_uid(
        prefix=None, entropy_srcs=[SALT, "1.2.3"]
    )


def test_salt_must_be_given():
    for bad in (None, "", "short"):
        with pytest.raises(ValueError, match="salt must be a secret string"):
            privacy.remap_uid("1.2.3", bad)


def test_pseudonym_is_keyed_and_stable():
    p = privacy.pseudonym("12345", SALT)
    assert privacy.PSEUDONYM_PATTERN.match(p) and p == privacy.pseudonym("12345 ", SALT)
    assert p != privacy.pseudonym("12346", SALT) and p != privacy.pseudonym("12345", SALT + "x")


# ---------------------------------------------------------------------------
# de-identification of a made-up dataset
# ---------------------------------------------------------------------------


def made_up_dataset() -> Dataset:
    ds = Dataset()
    ds.PatientName, ds.PatientID, ds.PatientBirthDate, ds.PatientAge = "Doe^Jane", "PID-4711", "19400305", "084Y"
    ds.StudyDate, ds.SeriesDate, ds.StudyTime = "20200101", "20200101", "101010"
    ds.InstitutionName, ds.OperatorsName = "Springfield General", "Smith^Tom"
    ds.ContentCreatorName = "Lee^Ann"  # PN in the table (Z/D)
    ds.VerifyingObserverName = "Ng^Bo"  # PN in the table (D)
    ds.SOPClassUID = "1.2.840.10008.5.1.4.1.1.2"
    ds.SOPInstanceUID, ds.StudyInstanceUID, ds.SeriesInstanceUID = "1.2.3.4.1", "1.2.3.4.2", "1.2.3.4.3"
    ds.Modality, ds.Manufacturer = "CT", "ACME"
    ds.add_new(0x00181200, "DA", "20190101")  # Date of Last Calibration: X
    ds.add_new(0x00324000, "LT", "ward 7")  # Study Comments: X
    ds.add_new(0x00400006, "PN", "Who^Dr")  # Scheduled Performing Physician's Name: PN outside the table
    ref = Dataset()
    ref.ReferencedSOPClassUID = "1.2.840.10008.5.1.4.1.1.2"
    ref.ReferencedSOPInstanceUID = "1.2.3.4.1"
    ds.ReferencedImageSequence = Sequence([ref])
    other = Dataset()
    other.PatientID = "OTHER-99"
    ds.OtherPatientIDsSequence = Sequence([other])
    block = ds.private_block(0x0009, "ACME 1.0", create=True)
    block.add_new(0x01, "LO", "Doe Jane private copy")
    ds.add_new(0x60003000, "OW", b"\x00\x01" * 8)  # overlay data
    ds.Rows, ds.Columns, ds.BitsAllocated, ds.BitsStored, ds.HighBit = 2, 2, 16, 16, 15
    ds.SamplesPerPixel, ds.PhotometricInterpretation, ds.PixelRepresentation = 1, "MONOCHROME2", 0
    ds.PixelData = np.arange(4, dtype=np.uint16).tobytes()
    ds.file_meta = FileMetaDataset()
    ds.file_meta.MediaStorageSOPClassUID = ds.SOPClassUID
    ds.file_meta.MediaStorageSOPInstanceUID = ds.SOPInstanceUID
    ds.file_meta.TransferSyntaxUID = ExplicitVRLittleEndian
    return ds


def test_deidentify_made_up_dataset():
    ds = made_up_dataset()
    before = pydicom.dcmread(io.BytesIO(_bytes(ds)))  # a copy, to prove ds is not modified
    result = privacy.deidentify(ds, salt=SALT)
    new, audit = result.dataset, result.audit
    assert _bytes(ds) == _bytes(before)  # the input is untouched
    assert new.PatientName == "" and new.PatientBirthDate == "" and new.StudyDate == ""
    assert privacy.PSEUDONYM_PATTERN.match(new.PatientID) and new.PatientID == privacy.pseudonym("PID-4711", SALT)
    assert "PatientAge" not in new and "OtherPatientIDsSequence" not in new and "StudyComments" not in new
    assert "DateOfLastCalibration" not in new and (0x6000, 0x3000) not in new
    assert new.SeriesDate == "19000101" and new.InstitutionName == "ANONYMIZED" and new.OperatorsName == "ANONYMIZED"
    assert not any(e.tag.is_private for e in new.iterall())
    assert new.SOPClassUID == ds.SOPClassUID and new.Modality == "CT" and new.Manufacturer == "ACME"
    assert "ScheduledPerformingPhysicianName" not in new  # Table E.1-1: X
    # UIDs: remapped, and the reference inside the sequence follows the instance it points to
    assert new.SOPInstanceUID == privacy.remap_uid("1.2.3.4.1", SALT)
    assert new.ReferencedImageSequence[0].ReferencedSOPInstanceUID == new.SOPInstanceUID
    assert new.ReferencedImageSequence[0].ReferencedSOPClassUID == ds.SOPClassUID
    assert new.file_meta.MediaStorageSOPInstanceUID == new.SOPInstanceUID
    # Burned In Annotation is absent: flagged for pixel review, and the identity is not declared removed
    assert result.pixel_review and "PatientIdentityRemoved" not in new and "DeidentificationMethod" not in new
    assert new.LongitudinalTemporalInformationModified == "REMOVED"
    assert new.PixelData == ds.PixelData
    # the audit log names every action
    actions = {(e.keyword, e.action) for e in audit}
    assert {
        ("PatientName", "Z"),
        ("PatientAge", "X"),
        ("SeriesDate", "D"),
        ("SOPInstanceUID", "U"),
        ("(private)", "X"),
        ("ReferencedSOPInstanceUID", "U"),
        ("PatientIdentityRemoved", "withheld"),
    } <= actions
    assert any(e.path == "ReferencedImageSequence[0].ReferencedSOPInstanceUID" for e in audit)
    assert result.warnings and "Burned In Annotation" in result.warnings[0]
    assert privacy.surviving_identifiers(new, original=ds) == []


def test_no_burned_in_warning_when_the_header_says_no():
    ds = made_up_dataset()
    ds.BurnedInAnnotation = "NO"
    result = privacy.deidentify(ds, salt=SALT)
    assert result.warnings == [] and not result.pixel_review
    new = result.dataset
    assert new.PatientIdentityRemoved == "YES" and new.LongitudinalTemporalInformationModified == "REMOVED"
    assert [c.CodeValue for c in new.DeidentificationMethodCodeSequence] == ["113100"]
    assert len(new.DeidentificationMethod) <= 64


def test_a_stale_identity_removed_claim_is_not_copied():
    ds = made_up_dataset()
    ds.PatientIdentityRemoved = "YES"  # said by an earlier tool; the pixels were never looked at
    result = privacy.deidentify(ds, salt=SALT)
    assert result.pixel_review and "PatientIdentityRemoved" not in result.dataset


def test_pixels_cleaned_allows_the_claim_and_records_the_option():
    result = privacy.deidentify(made_up_dataset(), salt=SALT, pixels_cleaned=True)
    new = result.dataset
    assert not result.pixel_review and new.PatientIdentityRemoved == "YES" and new.BurnedInAnnotation == "NO"
    assert [c.CodeValue for c in new.DeidentificationMethodCodeSequence] == ["113100", "113101"]
    assert len(new.DeidentificationMethod) <= 64


def test_checker_finds_what_survives():
    ds = made_up_dataset()
    new = privacy.deidentify(ds, salt=SALT).dataset
    leaky = pydicom.dcmread(io.BytesIO(_bytes(new)))
    leaky.PatientName = "Doe^Jane"  # Z attribute with its old value
    leaky.PatientAge = "084Y"  # X attribute put back
    leaky.Manufacturer = "Springfield General"  # an original value copied into an unlisted attribute
    leaky.StudyInstanceUID = "1.2.3.4.2"  # a UID not replaced
    leaky.private_block(0x0011, "OTHER", create=True).add_new(0x01, "LO", "x")
    found = privacy.surviving_identifiers(leaky, original=ds)
    reasons = {(a.keyword, a.reason.split(" at ")[0]) for a in found}
    assert ("PatientName", "PN value") in reasons
    assert ("PatientAge", "AS value") in reasons
    assert ("StudyInstanceUID", "UID not remapped") in reasons
    assert ("Manufacturer", "original value") in reasons
    assert any(r == "private tag" for _, r in reasons)
    # without the original, the copied value in an unlisted attribute cannot be recognised
    assert "Manufacturer" not in {a.keyword for a in privacy.surviving_identifiers(leaky)}


def test_deidentify_needs_a_dataset():
    with pytest.raises(TypeError, match="pydicom Dataset"):
        privacy.deidentify({"PatientName": "x"}, salt=SALT)


def _bytes(ds) -> bytes:
    buffer = io.BytesIO()
    ds.save_as(buffer, enforce_file_format=True)
    return buffer.getvalue()


# ---------------------------------------------------------------------------
# every real DICOM sample of the data layer
# ---------------------------------------------------------------------------


def _real_files() -> list[tuple[str, str]]:
    return [(name, Path(f.path).name) for name in DICOM_DATASETS for f in data.dataset(name).files]


@pytest.fixture(scope="module")
def real_samples(tmp_path_factory):
    """``{file name: dataset}`` of every file of the two DICOM datasets (mirror/cache first, else fetched)."""
    fetched = tmp_path_factory.mktemp("privacy-samples")
    out = {}
    for name, file in _real_files():
        out[file] = imaging.read_dicom(resolve_real_sample(name, file, fetched))
    return out


def test_the_real_samples_are_all_there(real_samples):
    assert len(real_samples) == len(_real_files()) == 7


def test_every_real_sample_is_deidentified(real_samples):
    uid_map: dict[str, str] = {}
    results = {name: privacy.deidentify(ds, salt=SALT, uid_map=uid_map) for name, ds in real_samples.items()}
    for name, ds in real_samples.items():
        new = results[name].dataset
        assert privacy.surviving_identifiers(new, original=ds) == [], name
        assert [a for a in imaging.phi_attributes(new) if a.reason != "PS3.15 basic profile"] == [], name
        # every identifying attribute the sample carried was removed, emptied or replaced
        for elem in ds.iterall():
            code = privacy.profile_code(elem.tag)
            if code is None or not elem.value or elem.VR == "SQ":
                continue
            after = [e.value for e in new.iterall() if e.tag == elem.tag]
            assert all(v != elem.value for v in after), (name, elem.keyword)
        # image data unchanged, file still valid
        assert new.PixelData == ds.PixelData, name
        back = pydicom.dcmread(io.BytesIO(_bytes(new)))
        assert np.array_equal(back.pixel_array, ds.pixel_array), name
        if results[name].pixel_review:
            assert "PatientIdentityRemoved" not in back and ds.get("BurnedInAnnotation") != "NO", name
        else:
            assert back.PatientIdentityRemoved == "YES", name
            assert back.DeidentificationMethodCodeSequence[0].CodeValue == "113100"
        assert back.file_meta.MediaStorageSOPInstanceUID == back.SOPInstanceUID
        for e in back.iterall():
            if e.VR == "UI" and e.value:
                assert UID(str(e.value)).is_valid, (name, e.keyword, e.value)
    # consistency across files: the same original UID became the same new UID in every file
    seen: dict[str, set[str]] = {}
    for name, ds in real_samples.items():
        originals = [(e.tag, str(e.value)) for e in ds.iterall() if e.VR == "UI" and str(e.value) in uid_map]
        news = {e.tag: str(e.value) for e in results[name].dataset.iterall() if e.VR == "UI"}
        for tag, old in originals:
            assert news[tag] == uid_map[old]
            seen.setdefault(old, set()).add(name)
    assert any(len(files) > 1 for files in seen.values())  # e.g. the Instance Creator UID of several samples
    assert len(set(uid_map.values())) == len(uid_map)


# ---------------------------------------------------------------------------
# planted attributes: the checker does not read the table, and nothing planted survives
# ---------------------------------------------------------------------------

#: Attributes of Table E.1-1 (2026c) that the course's earlier hand-typed table (141 rows) did not list, so that
#: they survived de-identification unseen; each planted with a value that must not survive.
PLANTED_TOP = [
    ("ScheduledPerformingPhysicianName", "PN", "Planted^Physician"),  # E.1-1 X
    ("PerformedLocation", "SH", "PLANTED WARD 7"),  # X
    ("AdmittingDate", "DA", "20210304"),  # X
    ("AdmittingTime", "TM", "093017"),  # X
    ("DischargeDiagnosisDescription", "LO", "PLANTED DIAGNOSIS"),  # X
    ("PersonAddress", "ST", "12 Planted Street"),  # X
    ("ClinicalTrialSubjectID", "LO", "PLANTED-SUBJ-42"),  # D
    ("ScheduledProcedureStepStartDate", "DA", "20210305"),  # X
    ("PerformedStationAETitle", "AE", "PLANTEDAE"),  # X
]
#: Planted inside an item of a sequence that the profile keeps (Referenced Series Sequence is not in Table E.1-1):
#: two E.1-1 attributes the old table missed, two attributes outside Table E.1-1 (a UT text, a PN) and a UID.
PLANTED_NESTED = [
    ("PersonTelephoneNumbers", "LO", "555-0199-PLANTED"),  # E.1-1 X
    ("AdmittingDate", "DA", "20210306"),  # X
    ("TextValue", "UT", "seen by Dr Planted on ward 7"),  # not in Table E.1-1: caught by the VR rule
    ("EvaluatorName", "PN", "Nested^Evaluator"),  # not in Table E.1-1
    ("SeriesInstanceUID", "UI", "1.2.826.0.1.3680043.99.1.2.3"),  # U
]
PLANTED_PRIVATE = "PLANTED PRIVATE 4711"


def _plant(ds) -> Dataset:
    from pydicom.datadict import dictionary_VR

    out = pydicom.dcmread(io.BytesIO(_bytes(ds)))  # a deep, independent copy
    for keyword, vr, value in PLANTED_TOP:
        assert privacy.profile_code(keyword) is not None and dictionary_VR(keyword) == vr, keyword
        setattr(out, keyword, value)
    item = Dataset()
    for keyword, vr, value in PLANTED_NESTED:
        assert dictionary_VR(keyword) == vr, keyword
        setattr(item, keyword, value)
    item.private_block(0x0013, "PLANTED CREATOR", create=True).add_new(0x10, "LO", PLANTED_PRIVATE)
    out.ReferencedSeriesSequence = Sequence([item])
    out.private_block(0x0011, "PLANTED CREATOR", create=True).add_new(0x10, "LO", PLANTED_PRIVATE)
    return out


def _planted_values() -> list[str]:
    return [v for _, _, v in PLANTED_TOP + PLANTED_NESTED] + [PLANTED_PRIVATE]


def test_checker_catches_every_planted_attribute_when_deidentification_is_skipped(real_samples):
    for name, ds in real_samples.items():
        planted = _plant(ds)
        found = privacy.surviving_identifiers(planted)
        paths = {a.reason.split(" at ")[1] for a in found}
        for keyword, _, _ in PLANTED_TOP:
            assert keyword in paths, (name, keyword)
        for keyword, _, _ in PLANTED_NESTED:
            assert f"ReferencedSeriesSequence[0].{keyword}" in paths, (name, keyword)
        assert "(0011,1010)" in paths and "ReferencedSeriesSequence[0].(0013,1010)" in paths, name
        # and the real sample itself, not de-identified, is flagged too (names, dates, UIDs)
        assert privacy.surviving_identifiers(ds), name


def test_nothing_planted_survives_deidentification(real_samples):
    uid_map: dict[str, str] = {}
    for name, ds in real_samples.items():
        planted = _plant(ds)
        new = privacy.deidentify(planted, salt=SALT, uid_map=uid_map).dataset
        assert privacy.surviving_identifiers(new, original=planted) == [], name
        texts = [str(e.value) for e in new.iterall() if e.VR not in ("OB", "OW", "SQ", "UN")]
        texts += [str(e.value) for e in new.file_meta]
        for value in _planted_values():
            assert not any(value in t for t in texts), (name, value)


def test_checker_ignores_the_allow_list_and_standard_uids():
    ds = Dataset()
    ds.SOPClassUID, ds.Manufacturer, ds.Modality = "1.2.840.10008.5.1.4.1.1.2", "ACME", "CT"
    ds.ConvolutionKernel = "STANDARD"  # free text outside the allow-list: flagged
    found = privacy.surviving_identifiers(ds)
    assert [a.keyword for a in found] == ["ConvolutionKernel"]
    assert all(reason for reason in privacy.KEEP_ALLOWED.values())


# ---------------------------------------------------------------------------
# burned-in text: pixel cleaning on the ultrasound sample
# ---------------------------------------------------------------------------


def test_clean_pixels_blanks_the_known_band_of_the_ultrasound(real_samples):
    us = real_samples["US1_UNCR.dcm"]
    first = privacy.deidentify(us, salt=SALT)
    assert first.pixel_review and "PatientIdentityRemoved" not in first.dataset
    cleaned = privacy.clean_pixels(us)
    before, after = us.pixel_array, pydicom.dcmread(io.BytesIO(_bytes(cleaned))).pixel_array
    ((r0, r1, c0, c1),) = privacy.BURNED_IN_REGIONS[("US", "G.E. Medical Systems", "LOGIQ 700")]
    assert before[r0:r1, c0:c1].max() > 0 and after[r0:r1, c0:c1].max() == 0
    assert np.array_equal(before[r1:], after[r1:])  # the image below the band is untouched
    second = privacy.deidentify(cleaned, salt=SALT, pixels_cleaned=True)
    assert not second.pixel_review and second.dataset.PatientIdentityRemoved == "YES"
    assert "113101" in {c.CodeValue for c in second.dataset.DeidentificationMethodCodeSequence}
    with pytest.raises(KeyError, match="no known burned-in"):
        privacy.clean_pixels(real_samples["CT_small.dcm"])


def test_compare_with_library_reports_differences(real_samples):
    rows = privacy.compare_with_library(real_samples, salt=SALT)
    assert rows and all(r[2] != r[3] and r[4] >= 1 for r in rows)
    # both tools remove every private tag and remap the instance UIDs: no disagreement there
    assert not any(r[1] in ("(private)", "SOPInstanceUID", "StudyInstanceUID", "PatientName") for r in rows)


# ---------------------------------------------------------------------------
# federated learning
# ---------------------------------------------------------------------------


def test_split_by_label_mix():
    y = np.array([0] * 100 + [1] * 60)
    parts = privacy.split_by_label_mix(y, [50, 40, 30], [[0.9, 0.1], [0.5, 0.5], [0.2, 0.8]], seed=1)
    assert [len(p) for p in parts] == [50, 40, 30]
    assert [int(y[p].sum()) for p in parts] == [5, 20, 24]
    assert len(set(np.concatenate(parts))) == 120  # disjoint
    again = privacy.split_by_label_mix(y, [50, 40, 30], [[0.9, 0.1], [0.5, 0.5], [0.2, 0.8]], seed=1)
    assert all(np.array_equal(a, b) for a, b in zip(parts, again))


def test_split_by_label_mix_errors():
    y = np.array([0] * 10 + [1] * 10)
    with pytest.raises(ValueError, match="only 10 are left"):
        privacy.split_by_label_mix(y, [15], [[1.0, 0.0]])
    with pytest.raises(ValueError, match="sum to 1"):
        privacy.split_by_label_mix(y, [5], [[0.5, 0.6]])
    with pytest.raises(ValueError, match="one mix per client"):
        privacy.split_by_label_mix(y, [5, 5], [[0.5, 0.5]])


def test_fedavg_is_the_size_weighted_mean():
    rng = np.random.default_rng(0)
    clients = [[rng.normal(size=(3, 2)), rng.normal(size=4)] for _ in range(3)]
    sizes = [10, 30, 60]
    avg = privacy.fedavg(clients, sizes)
    for i in range(2):
        expected = sum(n * w[i] for n, w in zip(sizes, clients)) / 100
        np.testing.assert_allclose(avg[i], expected, rtol=1e-12)
    same = privacy.fedavg([clients[0]] * 3, sizes)
    assert all(np.allclose(a, b) for a, b in zip(same, clients[0]))


def test_fedavg_errors():
    w = [np.zeros(2)]
    with pytest.raises(ValueError, match="one weight list per client"):
        privacy.fedavg([w, w], [1])
    with pytest.raises(ValueError, match="positive"):
        privacy.fedavg([w, w], [1, 0])
    with pytest.raises(ValueError, match="different shapes"):
        privacy.fedavg([w, [np.zeros(3)]], [1, 1])


def test_federated_averaging_with_keras():
    import keras

    keras.utils.set_random_seed(0)
    model = classify.small_cnn((8, 8, 1), 2, width=2)
    model.compile(
        optimizer=keras.optimizers.SGD(0.1), loss=keras.losses.SparseCategoricalCrossentropy(from_logits=True)
    )
    rng = np.random.default_rng(0)
    clients = [(rng.random((12, 8, 8, 1), dtype=np.float32), rng.integers(0, 2, 12)) for _ in range(2)]
    start = model.get_weights()
    run = privacy.federated_averaging(model, clients, rounds=2, local_epochs=1, batch_size=4, on_round=lambda r, m: r)
    assert run.history == [0, 1]
    assert any(not np.allclose(a, b) for a, b in zip(start, model.get_weights()))
    # plain FedAvg: every client deploys the global model
    for w in run.client_weights:
        assert all(np.array_equal(a, b) for a, b in zip(w, model.get_weights()))
    with pytest.raises(ValueError, match="rounds and local_epochs"):
        privacy.federated_averaging(model, clients, rounds=0, local_epochs=1, batch_size=4)
    with pytest.raises(ValueError, match="no layer of type"):
        privacy.federated_averaging(
            model, clients, rounds=1, local_epochs=1, batch_size=4, local_layers=keras.layers.BatchNormalization
        )


def _bn_model():
    import keras

    keras.utils.set_random_seed(0)
    model = classify.small_cnn((8, 8, 1), 2, width=2, batch_norm=True)
    model.compile(
        optimizer=keras.optimizers.Adam(0.01), loss=keras.losses.SparseCategoricalCrossentropy(from_logits=True)
    )
    return model


def test_fedbn_keeps_each_clients_batch_norm_and_averages_the_rest():
    import keras

    model = _bn_model()
    rng = np.random.default_rng(1)
    # two sites whose images differ in brightness: their batch-norm statistics must differ
    clients = [(rng.random((16, 8, 8, 1), dtype=np.float32) * 0.3 + off, rng.integers(0, 2, 16)) for off in (0.0, 0.6)]
    run = privacy.federated_averaging(
        model, clients, rounds=2, local_epochs=1, batch_size=8, local_layers=keras.layers.BatchNormalization
    )
    bn = {v.path for layer in model.layers if isinstance(layer, keras.layers.BatchNormalization) for v in layer.weights}
    is_bn = [v.path in bn for v in model.weights]
    assert sum(is_bn) == 12  # three layers x (gamma, beta, moving mean, moving variance)
    a, b = run.client_weights
    final = model.get_weights()
    for i, local in enumerate(is_bn):
        if local:
            assert not np.allclose(a[i], b[i]) or "gamma" in model.weights[i].path or "beta" in model.weights[i].path
        else:  # shared weights: the averaged model's, at both sites
            assert np.array_equal(a[i], final[i]) and np.array_equal(b[i], final[i])
    moving_means = [i for i, v in enumerate(model.weights) if v.path.endswith("moving_mean")]
    assert not np.allclose(a[moving_means[0]], b[moving_means[0]])  # the first layer sees the brightness shift


def test_training_start_restores_weights_and_optimizer_state():
    model = _bn_model()
    start = privacy.TrainingStart(model)
    x, y = np.random.default_rng(0).random((8, 8, 8, 1), dtype=np.float32), np.array([0, 1] * 4)
    model.fit(x, y, epochs=1, batch_size=4, verbose=0)
    assert int(model.optimizer.iterations.numpy()) == 2
    start.restore(model)
    assert int(model.optimizer.iterations.numpy()) == 0
    assert all(np.array_equal(a, b) for a, b in zip(start.weights, model.get_weights()))


def test_small_cnn_batch_norm_is_optional():
    import keras

    plain, bn = classify.small_cnn((8, 8, 1), width=2), classify.small_cnn((8, 8, 1), width=2, batch_norm=True)
    assert not any(isinstance(layer, keras.layers.BatchNormalization) for layer in plain.layers)
    assert sum(isinstance(layer, keras.layers.BatchNormalization) for layer in bn.layers) == 3


def test_acquisition_shift_simulates_a_scanner():
    x = np.random.default_rng(0).random((5, 8, 8, 1)).astype(np.float32)
    assert np.array_equal(privacy.acquisition_shift(x, privacy.Scanner()), x)  # the identity
    coarse = privacy.acquisition_shift(x, privacy.Scanner(resolution=2))
    assert coarse.shape == x.shape and coarse.dtype == np.float32
    assert np.allclose(coarse[:, ::2, ::2], coarse[:, 1::2, 1::2])  # 2x2 blocks are constant
    assert np.allclose(coarse.mean(), x.mean(), atol=1e-6)  # block averages keep the mean
    assert np.allclose(privacy.acquisition_shift(x, privacy.Scanner(gamma=2.0)), x**2, atol=1e-6)
    assert np.allclose(privacy.acquisition_shift(x, privacy.Scanner(contrast=0.0)), 0.5)
    grey = np.full((200, 8, 8), 0.5, np.float32)
    noisy = privacy.acquisition_shift(grey, privacy.Scanner(noise=0.05), seed=3)
    assert abs(float(noisy.std()) - 0.05) < 0.003
    assert np.array_equal(noisy, privacy.acquisition_shift(grey, privacy.Scanner(noise=0.05), seed=3))
    assert not np.array_equal(noisy, privacy.acquisition_shift(grey, privacy.Scanner(noise=0.05), seed=4))
    with pytest.raises(ValueError, match="resolution must be a positive divisor"):
        privacy.acquisition_shift(x, privacy.Scanner(resolution=3))
    with pytest.raises(ValueError, match="gamma must be"):
        privacy.acquisition_shift(x, privacy.Scanner(gamma=0.0))


# ---------------------------------------------------------------------------
# DP-SGD
# ---------------------------------------------------------------------------


@pytest.fixture(scope="module")
def batch():
    """A tiny model, a loss, a batch and its per-example gradients (on the active backend, as NumPy)."""
    import keras

    keras.utils.set_random_seed(0)
    model = classify.small_cnn((8, 8, 1), 2, width=2)
    loss = keras.losses.SparseCategoricalCrossentropy(from_logits=True)
    rng = np.random.default_rng(1)
    x = rng.random((6, 8, 8, 1), dtype=np.float32)
    y = rng.integers(0, 2, 6).astype("int64")
    xt, yt = keras.ops.convert_to_tensor(x), keras.ops.convert_to_tensor(y)
    pe = [keras.ops.convert_to_numpy(g) for g in privacy.per_example_gradients(model, loss, xt, yt)]
    return model, loss, x, y, pe


def _numpy(tensors):
    import keras

    return [keras.ops.convert_to_numpy(t) for t in tensors]


def test_per_example_gradients_match_one_at_a_time(batch):
    model, loss, x, y, pe = batch
    for i in (0, 5):
        one = _numpy(privacy.loss_gradients(model, loss, x[i : i + 1], y[i : i + 1]))
        for g_all, g_one in zip(pe, one):
            np.testing.assert_allclose(g_all[i], g_one, rtol=1e-4, atol=1e-6)


def test_without_noise_and_clipping_it_is_the_mean_gradient(batch):
    model, loss, x, y, pe = batch
    mean_grad = _numpy(privacy.loss_gradients(model, loss, x, y))
    out, _ = privacy.clip_and_noise(pe, l2_norm_clip=1e9, noise_multiplier=0.0, expected_batch_size=len(x))
    for a, b in zip(out, mean_grad):
        np.testing.assert_allclose(np.asarray(a), b, rtol=1e-4, atol=1e-6)


def test_clipping_bounds_each_example(batch):
    *_, pe = batch
    scaled = [g * 100.0 for g in pe]  # make every example's norm large
    norms = np.sqrt(sum(np.sum(g.reshape(len(g), -1) ** 2, axis=1) for g in scaled))
    assert np.all(norms > 1.0)
    for i in range(len(scaled[0])):
        one = [g[i : i + 1] for g in scaled]
        out, _ = privacy.clip_and_noise(one, l2_norm_clip=0.3, noise_multiplier=0.0, expected_batch_size=1)
        norm = np.sqrt(sum(np.sum(np.asarray(a) ** 2) for a in out))
        assert norm == pytest.approx(0.3, rel=1e-5)
    # replacing one example changes the (noise-free) sum by at most 2C
    out_a, _ = privacy.clip_and_noise(scaled, l2_norm_clip=0.3, noise_multiplier=0.0, expected_batch_size=1)
    changed = [g.copy() for g in scaled]
    for g in changed:
        g[0] *= -50
    out_b, _ = privacy.clip_and_noise(changed, l2_norm_clip=0.3, noise_multiplier=0.0, expected_batch_size=1)
    diff = np.sqrt(sum(np.sum((np.asarray(a) - np.asarray(b)) ** 2) for a, b in zip(out_a, out_b)))
    assert diff <= 2 * 0.3 + 1e-6


def test_noise_std_is_sigma_c_over_b():
    zeros = [np.zeros((16, 100, 50), np.float32), np.zeros((16, 7), np.float32)]
    out, _ = privacy.clip_and_noise(zeros, l2_norm_clip=2.0, noise_multiplier=1.5, expected_batch_size=16, seed=3)
    flat = np.concatenate([np.ravel(np.asarray(a)) for a in out])
    assert flat.std() == pytest.approx(1.5 * 2.0 / 16, rel=0.03)
    assert abs(flat.mean()) < 4 * 1.5 * 2.0 / 16 / np.sqrt(flat.size)


def test_clip_and_noise_errors():
    g = [np.zeros((2, 3), np.float32)]
    with pytest.raises(ValueError, match="l2_norm_clip"):
        privacy.clip_and_noise(g, l2_norm_clip=0.0, noise_multiplier=1.0, expected_batch_size=2)
    with pytest.raises(ValueError, match="noise_multiplier"):
        privacy.clip_and_noise(g, l2_norm_clip=1.0, noise_multiplier=-1.0, expected_batch_size=2)


def test_train_dp_sgd_runs_and_counts_steps(batch):
    import keras

    keras.utils.set_random_seed(0)
    model = classify.small_cnn((8, 8, 1), 2, width=2)
    rng = np.random.default_rng(0)
    x = rng.random((40, 8, 8, 1), dtype=np.float32)
    y = rng.integers(0, 2, 40)
    start = model.get_weights()
    run = privacy.train_dp_sgd(
        model, x, y, epochs=1, expected_batch_size=10, learning_rate=0.1, l2_norm_clip=1.0, noise_multiplier=1.0, seed=0
    )
    assert run["steps"] == 4 and run["sampling_probability"] == pytest.approx(0.25)
    assert any(not np.allclose(a, b) for a, b in zip(start, model.get_weights()))
    with pytest.raises(ValueError, match="expected_batch_size"):
        privacy.train_dp_sgd(
            model, x, y, epochs=1, expected_batch_size=100, learning_rate=0.1, l2_norm_clip=1.0, noise_multiplier=1.0
        )


def test_an_empty_poisson_batch_still_adds_noise(batch):
    import keras

    seed = next(s for s in range(100) if not np.any(np.random.default_rng(s).random(4) < 0.25))
    keras.utils.set_random_seed(0)
    model = classify.small_cnn((8, 8, 1), 2, width=2)
    start = model.get_weights()
    x = np.zeros((4, 8, 8, 1), np.float32)
    run = privacy.train_dp_sgd(
        model,
        x,
        np.array([0, 1, 0, 1]),
        epochs=0.25,
        expected_batch_size=1,
        learning_rate=0.1,
        l2_norm_clip=1.0,
        noise_multiplier=1.0,
        seed=seed,
    )
    assert run["steps"] == 1 and run["examples_seen"] == 0 and np.isnan(run["mean_norm"][0])
    assert any(not np.allclose(a, b) for a, b in zip(start, model.get_weights()))


def test_epsilon_from_dp_accounting():
    q, steps, delta = 0.01, 1000, 1e-5
    eps = privacy.dp_epsilon(1.1, q, steps, delta)
    assert 0 < eps < 10
    assert privacy.dp_epsilon(2.0, q, steps, delta) < eps  # more noise, less epsilon
    assert privacy.dp_epsilon(1.1, q, 2 * steps, delta) > eps  # more steps, more epsilon
    assert privacy.dp_epsilon(1.1, q, steps, delta, accountant="pld") <= eps * 1.01  # PLD is tighter
    assert privacy.dp_epsilon(0.0, q, steps, delta) == float("inf")
    sigma = privacy.noise_for_epsilon(2.0, q, steps, delta)
    assert privacy.dp_epsilon(sigma, q, steps, delta) <= 2.0
    assert privacy.dp_epsilon(sigma - 0.01, q, steps, delta) > 2.0
    with pytest.raises(ValueError, match="accountant"):
        privacy.dp_epsilon(1.0, q, steps, delta, accountant="moments")


def _dp_run(secure, seed, epochs=1.0):
    """Weights after a short DP-SGD run from fixed initial weights (only the sampling and noise vary)."""
    import keras

    keras.utils.set_random_seed(0)
    model = classify.small_cnn((8, 8, 1), 2, width=2)
    rng = np.random.default_rng(0)
    x = rng.random((40, 8, 8, 1), dtype=np.float32)
    y = rng.integers(0, 2, 40)
    run = privacy.train_dp_sgd(
        model,
        x,
        y,
        epochs=epochs,
        expected_batch_size=10,
        learning_rate=0.1,
        l2_norm_clip=1.0,
        noise_multiplier=1.0,
        seed=seed,
        secure=secure,
    )
    return run, np.concatenate([np.ravel(w) for w in model.get_weights()])


def test_seeded_dp_sgd_reproduces(batch):
    run_a, w_a = _dp_run(False, 3)
    run_b, w_b = _dp_run(False, 3)
    _, w_c = _dp_run(False, 4)
    assert not run_a["secure"]
    assert run_a["examples_seen"] == run_b["examples_seen"]
    np.testing.assert_array_equal(w_a, w_b)  # same seed: same sampling, same noise, same model
    assert not np.allclose(w_a, w_c)


def test_secure_dp_sgd_draws_differently_each_time(batch):
    run_a, w_a = _dp_run(True, None, epochs=2.0)
    run_b, w_b = _dp_run(True, None, epochs=2.0)
    assert run_a["secure"] and run_b["secure"] and run_a["steps"] == run_b["steps"] == 8
    assert not np.allclose(w_a, w_b)  # nothing seeded: another run is another draw
    with pytest.raises(ValueError, match="seed=None"):
        _dp_run(True, 0)  # a seed with secure=True would make it reproducible again
    with pytest.raises(ValueError, match="secure=True"):
        _dp_run(False, None)


def test_secure_noise_seeds_change_every_step(batch, monkeypatch):
    # the Poisson sample and the noise seed are redrawn from OS entropy at every step
    calls = []
    real = privacy.secure_uniform
    monkeypatch.setattr(privacy, "secure_uniform", lambda n: calls.append(n) or real(n))
    run, _ = _dp_run(True, None)
    assert calls == [40] * run["steps"]


def test_secure_uniform_is_uniform_and_unseeded():
    a, b = privacy.secure_uniform(20_000), privacy.secure_uniform(20_000)
    assert a.shape == (20_000,) and a.min() >= 0 and a.max() < 1
    assert abs(a.mean() - 0.5) < 0.01 and abs(a.std() - np.sqrt(1 / 12)) < 0.01
    assert not np.array_equal(a, b)
    assert len(privacy.secure_uniform(0)) == 0
    with pytest.raises(ValueError):
        privacy.secure_uniform(-1)
