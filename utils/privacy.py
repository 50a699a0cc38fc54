"""Privacy tools of chapter 6: DICOM de-identification, federated averaging, DP-SGD with its ε.

Three ways of protecting patients, each with what it does *not* protect against:

* **De-identification of DICOM headers** following the Basic Application
  Level Confidentiality Profile of DICOM PS3.15 Annex E (Table E.1-1):
  :func:`deidentify` returns a new dataset and an audit log (one row per
  attribute touched, with its action code), :func:`surviving_identifiers`
  lists whatever identifying content is still there (and, given the original,
  any original identifying value found anywhere in the result), and
  :data:`BASIC_PROFILE` is the table of attributes handled, with the
  standard's action codes.  Text burned into the pixels is *not* touched:
  header cleaning cannot find it.
* **Federated learning**: :func:`split_by_label_mix` makes non-IID "hospital"
  splits of a labelled set, :func:`fedavg` is the weighted average of client
  models of McMahan et al. (2017) written on Keras' ``get_weights`` /
  ``set_weights`` (backend-agnostic), and :func:`federated_averaging` runs the
  rounds.
* **Differential privacy**: :func:`clip_and_noise` is the DP-SGD aggregation of
  Abadi et al. (2016) (clip every example's gradient to L2 norm C, sum, add
  Gaussian noise N(0, σ²C²), divide by the expected batch size) in
  ``keras.ops``; :func:`per_example_gradients` computes the per-example
  gradients and is **TensorFlow-backend only** (``tf.vectorized_map`` over a
  ``tf.GradientTape``); :func:`train_dp_sgd` trains with Poisson-sampled
  batches, and :func:`dp_epsilon` reports ε with Google's ``dp_accounting``
  library (RDP or PLD accountant).
"""

from __future__ import annotations

import copy
import hashlib
import hmac
import re
import time
import uuid
from dataclasses import dataclass
from typing import Any, Callable, Iterator, NamedTuple, Sequence

import numpy as np

from . import course
from .imaging import PS315_BASIC_PROFILE, PHIAttribute
from .imaging import _short as _short_text

__all__ = [
    "BASIC_PROFILE", "PROFILE_EDITION", "AuditEntry", "Deidentified", "profile_table", "applied_action",
    "remap_uid", "pseudonym", "deidentify", "surviving_identifiers",
    "split_by_label_mix", "small_cnn", "fedavg", "federated_averaging",
    "per_example_gradients", "clip_and_noise", "train_dp_sgd", "dp_epsilon", "noise_for_epsilon",
]

# ---------------------------------------------------------------------------
# the Basic Application Level Confidentiality Profile (PS3.15 Table E.1-1)
# ---------------------------------------------------------------------------

#: Edition of DICOM PS3.15 whose Table E.1-1 the action codes below follow
#: (https://dicom.nema.org/medical/dicom/current/output/chtml/part15/chapter_E.html).
PROFILE_EDITION = "DICOM PS3.15 2024b, Annex E, Table E.1-1"

#: Attribute keyword → action code of the Basic Profile.  ``D`` replace with a
#: dummy value of the same VR, ``Z`` replace with a zero-length (or dummy)
#: value, ``X`` remove, ``U`` replace a UID by a consistent new UID; ``X/Z``,
#: ``X/D``, ``Z/D``, ``X/Z/D`` leave the choice to the IOD's attribute type, and
#: ``X/Z/U*`` (reference sequences) keeps the sequence and replaces the UIDs in
#: its items.  Every attribute of :data:`utils.imaging.PS315_BASIC_PROFILE`
#: (chapter 1's audit list) is here, plus the other identifying attributes the
#: course's real DICOM samples carry and a few common ones.  The standard's
#: table has several hundred rows; attributes not listed are kept, except that
#: :func:`deidentify` also removes all private tags and overlays, empties any
#: other person name and remaps any other instance UID.
BASIC_PROFILE: dict[str, str] = {
    # patient
    "PatientName": "Z", "PatientID": "Z/D", "IssuerOfPatientID": "X", "OtherPatientIDs": "X",
    "OtherPatientIDsSequence": "X", "OtherPatientNames": "X", "PatientBirthName": "X",
    "PatientMotherBirthName": "X", "PatientBirthDate": "Z", "PatientBirthTime": "X", "PatientSex": "Z",
    "PatientAge": "X", "PatientSize": "X", "PatientWeight": "X", "PatientAddress": "X",
    "PatientTelephoneNumbers": "X", "PatientTelecomInformation": "X", "MedicalRecordLocator": "X",
    "EthnicGroup": "X", "Occupation": "X", "AdditionalPatientHistory": "X", "PatientComments": "X",
    "MilitaryRank": "X", "BranchOfService": "X", "CountryOfResidence": "X", "RegionOfResidence": "X",
    "PregnancyStatus": "X", "PatientReligiousPreference": "X", "PatientState": "X", "Allergies": "X",
    "MedicalAlerts": "X", "SmokingStatus": "X", "LastMenstrualDate": "X", "ResponsiblePerson": "X",
    "ResponsibleOrganization": "X", "PatientInsurancePlanCodeSequence": "X", "ReferencedPatientSequence": "X",
    # visit, order, accession, study
    "AccessionNumber": "Z", "AdmissionID": "X", "IssuerOfAdmissionID": "X", "AdmittingDiagnosesDescription": "X",
    "RequestedProcedureID": "X", "RequestedProcedureDescription": "X/Z", "RequestAttributesSequence": "X",
    "RequestingPhysician": "X", "RequestingService": "X", "ReasonForStudy": "X",
    "PerformedProcedureStepID": "X", "PerformedProcedureStepDescription": "X",
    "PerformedProcedureStepStartDate": "X", "PerformedProcedureStepStartTime": "X",
    "ScheduledProcedureStepDescription": "X", "ScheduledProcedureStepID": "X", "StudyID": "Z",
    "StudyDescription": "X", "SeriesDescription": "X", "ProtocolName": "X/D", "ImageComments": "X",
    "StudyComments": "X", "FrameComments": "X", "AcquisitionComments": "X", "DerivationDescription": "X",
    "CurrentPatientLocation": "X", "PatientInstitutionResidence": "X", "SpecialNeeds": "X", "VisitComments": "X",
    "ServiceEpisodeID": "X", "StudyIDIssuer": "X", "AcquisitionContextSequence": "X/Z",
    "ContrastBolusAgent": "Z/D", "ReferencedStudySequence": "X/Z",
    "ReferencedPerformedProcedureStepSequence": "X/Z/D", "ContentSequence": "X",
    # dates and times
    "StudyDate": "Z", "SeriesDate": "X/D", "AcquisitionDate": "X/Z", "ContentDate": "Z/D",
    "AcquisitionDateTime": "X/Z/D", "InstanceCreationDate": "X/D", "StudyTime": "Z", "SeriesTime": "X/D",
    "AcquisitionTime": "X/Z", "ContentTime": "Z/D", "InstanceCreationTime": "X/Z/D",
    "DateOfLastCalibration": "X", "TimeOfLastCalibration": "X", "DateTimeOfLastCalibration": "X",
    "TimezoneOffsetFromUTC": "X", "FrameAcquisitionDateTime": "D",
    # people, places, devices
    "InstitutionName": "X/Z/D", "InstitutionAddress": "X", "InstitutionalDepartmentName": "X",
    "InstitutionCodeSequence": "X/Z/D", "ReferringPhysicianName": "Z", "ReferringPhysicianAddress": "X",
    "ReferringPhysicianTelephoneNumbers": "X", "ReferringPhysicianIdentificationSequence": "X",
    "ConsultingPhysicianName": "Z", "PhysiciansOfRecord": "X", "PhysiciansOfRecordIdentificationSequence": "X",
    "PerformingPhysicianName": "X", "PerformingPhysicianIdentificationSequence": "X",
    "NameOfPhysiciansReadingStudy": "X", "PhysiciansReadingStudyIdentificationSequence": "X",
    "OperatorsName": "X/Z/D", "OperatorIdentificationSequence": "X/D", "ContentCreatorName": "Z/D",
    "PersonName": "D", "VerifyingObserverName": "D", "OrderEnteredBy": "X", "StationName": "X/Z/D",
    "StationAETitle": "X", "RetrieveAETitle": "X", "DeviceSerialNumber": "X/Z/D", "DetectorID": "X/D",
    "PlateID": "X", "CassetteID": "X", "GantryID": "X", "GeneratorID": "X",
    # unique identifiers
    "StudyInstanceUID": "U", "SeriesInstanceUID": "U", "SOPInstanceUID": "U", "MediaStorageSOPInstanceUID": "U",
    "FrameOfReferenceUID": "U", "SynchronizationFrameOfReferenceUID": "U", "InstanceCreatorUID": "U",
    "IrradiationEventUID": "U", "ReferencedSOPInstanceUID": "U", "StorageMediaFileSetUID": "U",
    "ConcatenationUID": "U", "DimensionOrganizationUID": "U", "UID": "U", "DeviceUID": "U", "SpecimenUID": "U",
    "ReferencedFrameOfReferenceUID": "U", "RelatedFrameOfReferenceUID": "U",
    "ReferencedImageSequence": "X/Z/U*", "SourceImageSequence": "X/Z/U*",
    # containers that may hold copies of the above, and pictures of the patient
    "OriginalAttributesSequence": "X", "DigitalSignaturesSequence": "X", "IconImageSequence": "X",
}

#: Values written by action ``D``, per value representation (a fixed, meaningless dummy).
DUMMY_VALUES: dict[str, Any] = {
    "DA": "19000101", "TM": "000000", "DT": "19000101000000", "PN": "ANONYMIZED", "LO": "ANONYMIZED",
    "SH": "ANONYMIZED", "CS": "ANONYMIZED", "LT": "ANONYMIZED", "ST": "ANONYMIZED", "UT": "ANONYMIZED",
    "AE": "ANONYMIZED", "AS": "000Y", "DS": "0", "IS": "0",
}

PSEUDONYM_PATTERN = re.compile(r"^ANON-[0-9A-F]{16}$")
_NOT_INSTANCE_UIDS = {"SOPClassUID", "ReferencedSOPClassUID", "MediaStorageSOPClassUID", "TransferSyntaxUID",
                      "ImplementationClassUID", "CodingSchemeUID", "ContextGroupExtensionCreatorUID",
                      "MappingResourceUID", "ReferencedTransferSyntaxUIDInFile", "ReferencedSOPClassUIDInFile"}


def _tag_of(keyword: str):
    from pydicom.datadict import tag_for_keyword

    tag = tag_for_keyword(keyword)
    if tag is None:
        raise ValueError(f"{keyword!r} is not a DICOM keyword")
    return tag


def profile_table() -> list[tuple[str, str, str, str]]:
    """Rows ``(tag, keyword, action code of the standard, action applied here)``, sorted by tag."""
    rows = []
    for keyword, code in BASIC_PROFILE.items():
        tag = _tag_of(keyword)
        rows.append((f"({tag >> 16:04X},{tag & 0xFFFF:04X})", keyword, code, applied_action(code)))
    return sorted(rows)


def applied_action(code: str) -> str:
    """The single action :func:`deidentify` takes for a (possibly compound) action code.

    Without knowing the attribute's type in the IOD at hand, the choice that is
    always conformant is taken: a compound code containing ``D`` becomes ``D``
    (a dummy satisfies a Type 1 attribute), ``X/Z`` becomes ``Z`` (an empty value
    satisfies Type 2), ``X/Z/U*`` becomes ``U*`` (keep the reference sequence,
    replace the UIDs inside it).  Single letters are taken as they are.
    """
    parts = code.split("/")
    if not parts or any(p not in {"D", "Z", "X", "U", "U*"} for p in parts):
        raise ValueError(f"unknown action code {code!r}; expected letters D, Z, X, U separated by '/'")
    if len(parts) == 1:
        return parts[0]
    if "U*" in parts:
        return "U*"
    if "D" in parts:
        return "D"
    return "Z"


# every attribute of chapter 1's audit list has an action here (checked at import time)
_missing = sorted(set(PS315_BASIC_PROFILE) - set(BASIC_PROFILE))
if _missing:  # pragma: no cover - a programming error caught by the tests
    raise RuntimeError(f"BASIC_PROFILE lacks attributes of imaging.PS315_BASIC_PROFILE: {_missing}")


# ---------------------------------------------------------------------------
# de-identification
# ---------------------------------------------------------------------------

@dataclass(frozen=True)
class AuditEntry:
    """One attribute changed by :func:`deidentify`."""

    path: str  #: where, e.g. ``"ReferencedSeriesSequence[0].SeriesInstanceUID"``
    tag: str  #: ``"(gggg,eeee)"``
    keyword: str  #: DICOM keyword, or ``"(private)"``
    code: str  #: the standard's action code, or the rule used (``"private"``, ``"PN"``, ``"UID"``, ``"overlay"``)
    action: str  #: ``"X"`` removed, ``"Z"`` emptied, ``"D"`` dummy, ``"U"`` new UID, ``"added"``
    old: str  #: the old value (shortened)
    new: str  #: the new value (shortened; empty for X)


class Deidentified(NamedTuple):
    """Result of :func:`deidentify`: the new dataset, the audit log and warnings (e.g. burned-in text)."""

    dataset: Any
    audit: list[AuditEntry]
    warnings: list[str]


def _check_salt(salt: Any) -> str:
    if not isinstance(salt, str) or len(salt) < 8:
        raise ValueError("salt must be a secret string of at least 8 characters, kept by the data owner "
                         "(e.g. secrets.token_hex(16)); the same salt gives the same pseudonyms and UIDs "
                         "across files and runs")
    return salt


def remap_uid(uid: str, salt: str, uid_map: dict[str, str] | None = None) -> str:
    """A new, valid UID for ``uid``: the same ``(uid, salt)`` always gives the same result.

    ``"2.25." + `` the decimal integer of a name-based UUID (RFC 4122 version 5)
    of ``salt`` and ``uid`` (ISO/IEC 9834-8, DICOM PS3.5 B.2).  Without the salt
    the original cannot be recovered or confirmed.  Note that pydicom's
    ``generate_uid(prefix=None, entropy_srcs=...)`` is *random* (the entropy
    sources are ignored when ``prefix`` is ``None``), so it cannot keep UIDs
    consistent across files.  ``uid_map``, if given, records the mapping.
    """
    _check_salt(salt)
    uid = str(uid).strip()
    if uid_map is not None and uid in uid_map:
        return uid_map[uid]
    new = f"2.25.{uuid.uuid5(uuid.NAMESPACE_OID, salt + '|' + uid).int}"
    if uid_map is not None:
        uid_map[uid] = new
    return new


def pseudonym(value: str, salt: str) -> str:
    """A keyed pseudonym ``ANON-<16 hex digits>`` (HMAC-SHA-256 of ``value`` with key ``salt``)."""
    digest = hmac.new(_check_salt(salt).encode(), str(value).strip().encode(), hashlib.sha256).hexdigest()
    return f"ANON-{digest[:16].upper()}"


def _short(value: Any, limit: int = 48) -> str:
    """:func:`utils.imaging._short` for the audit log, where an absent value prints as empty."""
    return _short_text("" if value is None else value, limit)


def _tag_text(tag) -> str:
    return f"({tag.group:04X},{tag.element:04X})"


def _is_overlay_or_curve(tag) -> bool:
    group = tag.group
    return (0x6000 <= group <= 0x601E and group % 2 == 0 and tag.element in (0x3000, 0x4000)) or \
        (0x5000 <= group <= 0x501E and group % 2 == 0)


def _is_instance_uid(elem) -> bool:
    from pydicom.uid import UID_dictionary

    if elem.VR != "UI" or elem.keyword in _NOT_INSTANCE_UIDS or elem.tag.is_private:
        return False
    values = elem.value if isinstance(elem.value, (list, tuple)) or elem.VM > 1 else [elem.value]
    return any(v and str(v) not in UID_dictionary for v in values)


_PROFILE_TAGS = {int(_tag_of(k)): k for k in BASIC_PROFILE}


def _dummy(elem, salt: str):
    if elem.keyword == "PatientID":
        return pseudonym(elem.value or "", salt)
    if elem.VR == "SQ":
        return []
    return DUMMY_VALUES.get(elem.VR, "")


def _clean(ds, path: str, salt: str, uid_map: dict[str, str], audit: list[AuditEntry]) -> None:
    """Apply the profile to one dataset level (in place), then recurse into the sequences that remain."""
    for elem in list(ds):
        tag, keyword = elem.tag, elem.keyword
        where = f"{path}{keyword or _tag_text(tag)}"
        if keyword == "PixelData":
            continue
        if tag.is_private:
            audit.append(AuditEntry(where, _tag_text(tag), "(private)", "private", "X", _short(elem.value), ""))
            del ds[tag]
            continue
        if _is_overlay_or_curve(tag):
            audit.append(AuditEntry(where, _tag_text(tag), keyword, "overlay", "X", _short(elem.value), ""))
            del ds[tag]
            continue
        code = BASIC_PROFILE.get(_PROFILE_TAGS.get(int(tag), ""), None)
        if code is None:  # not in the table: extra rules for person names and instance UIDs
            if elem.VR == "PN" and elem.value:
                code = "PN"
            elif _is_instance_uid(elem):
                code = "UID"
        if code is None:
            continue
        action = {"PN": "Z", "UID": "U"}.get(code) or applied_action(code)
        old = _short(elem.value)
        if action == "X":
            del ds[tag]
            audit.append(AuditEntry(where, _tag_text(tag), keyword, code, "X", old, ""))
        elif action == "U*":
            pass  # keep the reference sequence; its UIDs are replaced when we recurse into it below
        elif action == "U":
            if elem.value:
                if elem.VM > 1:
                    elem.value = [remap_uid(v, salt, uid_map) for v in elem.value]
                else:
                    elem.value = remap_uid(elem.value, salt, uid_map)
                audit.append(AuditEntry(where, _tag_text(tag), keyword, code, "U", old, _short(elem.value)))
        elif action == "Z":
            if not (elem.value is None or elem.value == "" or (elem.VR == "SQ" and len(elem.value) == 0)):
                elem.value = [] if elem.VR == "SQ" else ("" if elem.VR not in ("US", "SS", "UL", "SL") else None)
                audit.append(AuditEntry(where, _tag_text(tag), keyword, code, "Z", old, ""))
        elif action == "D":
            elem.value = _dummy(elem, salt)
            audit.append(AuditEntry(where, _tag_text(tag), keyword, code, "D", old, _short(elem.value)))
    for elem in ds:
        if elem.VR == "SQ" and elem.value:
            for i, item in enumerate(elem.value):
                _clean(item, f"{path}{elem.keyword or _tag_text(elem.tag)}[{i}].", salt, uid_map, audit)


def deidentify(ds, *, salt: str, uid_map: dict[str, str] | None = None) -> Deidentified:
    """De-identify a DICOM dataset with the Basic Application Level Confidentiality Profile.

    Returns a **new** dataset (``ds`` is not modified), the audit log and
    warnings.  Rules, in order: private tags are removed (X); overlay and curve
    data (groups 60xx/50xx) are removed; each attribute of
    :data:`BASIC_PROFILE` gets :func:`applied_action` of its code (X remove,
    Z empty, D dummy — a keyed :func:`pseudonym` for *Patient ID*, so that the
    images of one patient stay linked — U remap with :func:`remap_uid`); other
    person names (VR PN) are emptied and other instance UIDs are remapped; the
    same rules apply inside every sequence item.  The file meta's *Media Storage
    SOP Instance UID* is set to the new *SOP Instance UID*.  Finally the
    de-identification is recorded as the standard requires: *Patient Identity
    Removed* (0012,0062) = ``YES``, *De-identification Method* (0012,0063) and
    its code sequence (0012,0064) = DCM 113100 "Basic Application
    Confidentiality Profile", and *Longitudinal Temporal Information Modified*
    (0028,0303) = ``REMOVED``.

    Pixel data are not changed.  A warning is returned unless *Burned In
    Annotation* (0028,0301) is ``NO``: text burned into the image (names,
    dates, typical of ultrasound and secondary captures) survives header
    de-identification and must be checked and masked separately.  Pass the
    same ``salt`` (and, optionally, the same ``uid_map`` dict) for all files of
    a collection: equal original UIDs then get equal new UIDs across files.
    """
    from pydicom import Dataset
    from pydicom.sequence import Sequence

    salt = _check_salt(salt)
    if not isinstance(ds, Dataset):
        raise TypeError(f"ds must be a pydicom Dataset (from pydicom.dcmread), got {type(ds).__name__}")
    uid_map = {} if uid_map is None else uid_map
    out = copy.deepcopy(ds)
    audit: list[AuditEntry] = []
    _clean(out, "", salt, uid_map, audit)
    meta = getattr(out, "file_meta", None)
    if meta is not None and "MediaStorageSOPInstanceUID" in meta:
        old = meta.MediaStorageSOPInstanceUID
        meta.MediaStorageSOPInstanceUID = remap_uid(old, salt, uid_map)
        audit.append(AuditEntry("file_meta.MediaStorageSOPInstanceUID", "(0002,0003)", "MediaStorageSOPInstanceUID",
                                "U", "U", _short(old), _short(meta.MediaStorageSOPInstanceUID)))
    code = Dataset()
    code.CodeValue, code.CodingSchemeDesignator = "113100", "DCM"
    code.CodeMeaning = "Basic Application Confidentiality Profile"
    out.PatientIdentityRemoved = "YES"
    out.DeidentificationMethod = "PS3.15 E.1-1 Basic Profile (2024b); utils.privacy"
    out.DeidentificationMethodCodeSequence = Sequence([code])
    out.LongitudinalTemporalInformationModified = "REMOVED"
    for kw, value in (("PatientIdentityRemoved", "YES"), ("DeidentificationMethod", out.DeidentificationMethod),
                      ("DeidentificationMethodCodeSequence", "DCM 113100"),
                      ("LongitudinalTemporalInformationModified", "REMOVED")):
        audit.append(AuditEntry(kw, _tag_text(out[kw].tag), kw, "method", "added", "", _short(value)))
    warnings = []
    burned = str(ds.get("BurnedInAnnotation", "") or "").upper()
    if burned != "NO":
        state = "says YES" if burned == "YES" else "is absent"
        warnings.append(f"Burned In Annotation (0028,0301) {state}: text in the pixels (names, dates, IDs) is not "
                        f"removed by header de-identification; inspect the image and mask it if needed")
    return Deidentified(out, audit, warnings)


def _walk(ds, path: str = "") -> Iterator[tuple[str, Any]]:
    for elem in ds:
        yield f"{path}{elem.keyword or _tag_text(elem.tag)}", elem
        if elem.VR == "SQ" and elem.value:
            for i, item in enumerate(elem.value):
                yield from _walk(item, f"{path}{elem.keyword or _tag_text(elem.tag)}[{i}].")


def _texts(elem) -> list[str]:
    value = elem.value
    if value is None or elem.VR in ("SQ", "OB", "OW", "OF", "OD", "OL", "OV", "UN") or isinstance(value, bytes):
        return []
    values = list(value) if elem.VM > 1 and not isinstance(value, str) else [value]
    return [str(v).strip() for v in values if str(v).strip()]


def _is_number(text: str) -> bool:
    try:
        float(text)
    except ValueError:
        return False
    return True


def _identifying_values(original) -> set[str]:
    """Text values of the original that identify: profile attributes, private tags, person names, instance UIDs."""
    values: set[str] = set()
    elements = list(_walk(original))
    meta = getattr(original, "file_meta", None)
    if meta is not None:
        elements += list(_walk(meta, "file_meta."))
    for _, elem in elements:
        code = BASIC_PROFILE.get(_PROFILE_TAGS.get(int(elem.tag), ""), None)
        if code is None and not (elem.tag.is_private or elem.VR == "PN" or _is_instance_uid(elem)):
            continue
        for text in _texts(elem):
            # short codes ("M", "YES") and plain numbers ("5.000000" in a private tag) are not identifying on
            # their own and would match unrelated attributes; dates, IDs, names and UIDs are
            if elem.VR == "UI" or (len(text) >= 4 and not _is_number(text)) or \
                    (code is not None and elem.VR in ("DA", "TM", "DT", "LO", "SH") and len(text) >= 6):
                values.add(text)
    return values - set(DUMMY_VALUES.values())


def surviving_identifiers(ds, original=None) -> list[PHIAttribute]:
    """What identifying content is still in ``ds``; an empty list means none was found.

    Structural checks (no original needed): private tags; overlay/curve data;
    profile attributes with code X still present; other profile attributes
    with a value that is neither empty, nor a dummy of :data:`DUMMY_VALUES`,
    nor a pseudonym, nor a UID of the ``2.25`` form; person names that are not
    empty or dummies.  With ``original`` (the dataset before
    de-identification), also every element anywhere in ``ds`` or its file meta
    whose text equals an identifying value of the original (reason
    ``"original value"``).  Pixel data cannot be checked this way: burned-in
    text needs OCR or a human look.
    """
    found: list[PHIAttribute] = []
    elements = list(_walk(ds))
    meta = getattr(ds, "file_meta", None)
    if meta is not None:
        elements += list(_walk(meta, "file_meta."))
    for path, elem in elements:
        tag = elem.tag
        if elem.keyword == "PixelData":
            continue
        texts = _texts(elem)
        code = BASIC_PROFILE.get(_PROFILE_TAGS.get(int(tag), ""), None)
        reason = None
        if tag.is_private:
            reason = "private tag"
        elif _is_overlay_or_curve(tag):
            reason = "overlay/curve data"
        elif code is not None:
            action = applied_action(code)
            if action == "X":
                reason = f"profile {code}: should be removed"
            elif action == "U" and any(not t.startswith("2.25.") for t in texts):
                reason = f"profile {code}: UID not replaced"
            elif action in ("Z", "D") and elem.VR != "SQ" and any(
                    t not in DUMMY_VALUES.values() and not PSEUDONYM_PATTERN.match(t) for t in texts):
                reason = f"profile {code}: value not emptied or replaced"
            elif action in ("Z",) and elem.VR == "SQ" and elem.value:
                reason = f"profile {code}: sequence not emptied"
        elif elem.VR == "PN" and any(t not in DUMMY_VALUES.values() for t in texts):
            reason = "person name (PN)"
        if reason is not None:
            found.append(PHIAttribute(elem.keyword or "(private)", _tag_text(tag), _short(elem.value),
                                      f"{reason} at {path}"))
    if original is not None:
        leaked = _identifying_values(original)
        for path, elem in elements:
            if elem.keyword == "PixelData":
                continue
            hits = [t for t in _texts(elem) if t in leaked]
            if hits:
                found.append(PHIAttribute(elem.keyword or "(private)", _tag_text(elem.tag), _short(hits[0]),
                                          f"original value at {path}"))
    return found


# ---------------------------------------------------------------------------
# federated learning
# ---------------------------------------------------------------------------

def split_by_label_mix(y: np.ndarray, sizes: Sequence[int], mixes: Sequence[Sequence[float]], *,
                       seed: int = 0) -> list[np.ndarray]:
    """Disjoint index sets of ``sizes[k]`` cases with class fractions ``mixes[k]`` (a non-IID client split).

    ``mixes[k][c]`` is the fraction of class ``c`` at client ``k`` (each row
    sums to 1).  Cases are drawn without replacement, so no case is at two
    clients.  Raises ``ValueError`` when a class has too few cases.
    """
    y = np.asarray(y).reshape(-1).astype(int)
    classes = np.unique(y)
    n_classes = int(classes.max()) + 1 if len(classes) else 0
    sizes = [int(s) for s in sizes]
    mixes = np.asarray(mixes, dtype=float)
    if len(sizes) != len(mixes):
        raise ValueError(f"sizes has {len(sizes)} clients but mixes has {len(mixes)} rows; give one mix per client")
    if mixes.ndim != 2 or mixes.shape[1] != n_classes:
        raise ValueError(f"each mix needs {n_classes} class fractions (labels 0..{n_classes - 1}), "
                         f"got shape {mixes.shape}")
    if np.any(mixes < 0) or not np.allclose(mixes.sum(axis=1), 1.0):
        raise ValueError(f"mixes must be non-negative fractions that sum to 1 per client, got {mixes.tolist()}")
    if any(s <= 0 for s in sizes):
        raise ValueError(f"sizes must be positive, got {sizes}")
    rng = np.random.default_rng(seed)
    pools = {c: list(rng.permutation(np.flatnonzero(y == c))) for c in range(n_classes)}
    out = []
    for k, (size, mix) in enumerate(zip(sizes, mixes)):
        counts = np.floor(mix * size).astype(int)
        counts[np.argmax(mix)] += size - counts.sum()  # rounding remainder to the largest class
        idx = []
        for c, n in enumerate(counts):
            if n > len(pools[c]):
                raise ValueError(f"client {k} needs {n} cases of class {c} but only {len(pools[c])} are left; "
                                 f"lower sizes[{k}] or change mixes[{k}]")
            idx += pools[c][:n]
            pools[c] = pools[c][n:]
        out.append(np.sort(np.asarray(idx, dtype=int)))
    return out


def small_cnn(input_shape: Sequence[int] = (28, 28, 1), n_classes: int = 2, *, width: int = 8,
              name: str = "small_cnn"):
    """A very small CNN without batch normalisation (so that per-example gradients and weight averages are clean).

    ``Rescaling`` ([0, 1] → [-2, 2]) → Conv 3×3 (``width``, ReLU) → MaxPool 2 →
    Conv 3×3 (2·``width``, ReLU) → MaxPool 2 → Conv 3×3 (4·``width``, ReLU) →
    global average pooling → Dense(``n_classes``) **logits** (no softmax: use a
    loss with ``from_logits=True`` and :func:`keras.ops.softmax` for
    probabilities).  Batch normalisation is avoided on purpose: it mixes the
    examples of a batch (so an example's gradient depends on the others, which
    breaks DP-SGD's per-example clipping) and has running statistics that are
    not trained weights.
    """
    import keras
    from keras import layers

    return keras.Sequential([
        keras.Input(tuple(input_shape)),
        layers.Rescaling(4.0, offset=-2.0),
        layers.Conv2D(width, 3, padding="same", activation="relu"),
        layers.MaxPooling2D(2),
        layers.Conv2D(2 * width, 3, padding="same", activation="relu"),
        layers.MaxPooling2D(2),
        layers.Conv2D(4 * width, 3, padding="same", activation="relu"),
        layers.GlobalAveragePooling2D(),
        layers.Dense(n_classes, name="logits"),
    ], name=name)


def fedavg(client_weights: Sequence[Sequence[np.ndarray]], sizes: Sequence[int]) -> list[np.ndarray]:
    """Federated averaging (McMahan et al. 2017): ``w = Σ_k (n_k / n) · w_k`` for every weight array.

    ``client_weights[k]`` is ``model.get_weights()`` of client ``k`` after its
    local training, ``sizes[k]`` its number of training cases.  The result can
    be passed to ``model.set_weights`` (works on every Keras backend).
    """
    if len(client_weights) == 0 or len(client_weights) != len(sizes):
        raise ValueError(f"need one weight list per client and one size per client, got "
                         f"{len(client_weights)} weight lists and {len(sizes)} sizes")
    sizes_arr = np.asarray(sizes, dtype=np.float64)
    if np.any(sizes_arr <= 0):
        raise ValueError(f"client sizes must be positive, got {list(sizes)}")
    n_arrays = {len(w) for w in client_weights}
    if len(n_arrays) != 1:
        raise ValueError(f"clients have different numbers of weight arrays {sorted(n_arrays)}: not the same model")
    fractions = sizes_arr / sizes_arr.sum()
    out = []
    for i in range(len(client_weights[0])):
        arrays = [np.asarray(w[i], dtype=np.float64) for w in client_weights]
        if len({a.shape for a in arrays}) != 1:
            raise ValueError(f"weight array {i} has different shapes across clients: {[a.shape for a in arrays]}")
        avg = sum(f * a for f, a in zip(fractions, arrays))
        out.append(avg.astype(np.asarray(client_weights[0][i]).dtype))
    return out


def federated_averaging(model, clients: Sequence[tuple[np.ndarray, np.ndarray]], *, rounds: int, local_epochs: int,
                        batch_size: int, on_round: Callable[[int, Any], Any] | None = None) -> list:
    """Train ``model`` (compiled) with FedAvg: each round every client trains locally, the server averages.

    In each round the global weights are sent to every client, the client runs
    ``local_epochs`` epochs of ``model.fit`` on its own ``(x, y)`` starting from
    fresh optimizer state, and the server replaces the global weights by
    :func:`fedavg` of the clients' weights (weighted by client size).  Only
    weights leave a client, never images.  ``on_round(round_index, model)`` is
    called after each round; its return values are returned as a list.
    """
    if rounds < 1 or local_epochs < 1:
        raise ValueError(f"rounds and local_epochs must be >= 1, got {rounds} and {local_epochs}")
    if not clients:
        raise ValueError("clients is empty: give a list of (x, y) pairs, one per client")
    if getattr(model, "optimizer", None) is None:
        raise ValueError("compile the model first (e.g. model.compile(optimizer=keras.optimizers.SGD(0.05), ...))")
    model.optimizer.build(model.trainable_variables)
    opt_state = [np.array(v) for v in model.optimizer.variables]
    sizes = [len(x) for x, _ in clients]
    history = []
    for r in course.progress(range(rounds), desc="federated rounds"):
        global_weights = model.get_weights()
        local = []
        for x, y in clients:
            model.set_weights(global_weights)
            for var, value in zip(model.optimizer.variables, opt_state):
                var.assign(value)
            model.fit(x, y, epochs=local_epochs, batch_size=batch_size, shuffle=True, verbose=0)  # a round is short
            local.append(model.get_weights())
        model.set_weights(fedavg(local, sizes))
        if on_round is not None:
            history.append(on_round(r, model))
    return history


# ---------------------------------------------------------------------------
# differential privacy: DP-SGD
# ---------------------------------------------------------------------------

def per_example_gradients(model, loss_fn: Callable, x, y) -> list:
    """Gradients of ``loss_fn(y_i, model(x_i))`` for every example ``i`` separately (leading axis = example).

    **TensorFlow backend only**: ``tf.vectorized_map`` over a function that
    takes one example's gradient inside a ``tf.GradientTape``.  (On JAX the same
    is ``jax.vmap(jax.grad(...))`` over ``model.stateless_call``; on PyTorch
    ``torch.func.vmap(torch.func.grad(...))``; not implemented here.)
    """
    import keras

    if keras.backend.backend() != "tensorflow":
        raise NotImplementedError(f"per_example_gradients needs the TensorFlow backend (KERAS_BACKEND=tensorflow); "
                                  f"the active backend is {keras.backend.backend()!r}")
    import tensorflow as tf

    variables = model.trainable_variables

    def one(args):
        xi, yi = args
        with tf.GradientTape() as tape:
            loss = loss_fn(yi[None], model(xi[None], training=True))
        return tape.gradient(loss, variables)

    return tf.vectorized_map(one, (x, y))


def clip_and_noise(per_example_grads: Sequence, *, l2_norm_clip: float, noise_multiplier: float,
                   expected_batch_size: float, seed=None) -> tuple[list, Any]:
    """The DP-SGD aggregation (Abadi et al. 2016), in ``keras.ops`` (any backend).

    For per-example gradients ``g_i`` (each variable with a leading example
    axis): clip each example's whole gradient to L2 norm at most ``C``,
    ``ḡ_i = g_i · min(1, C / ||g_i||)``, sum, add Gaussian noise
    ``N(0, σ² C² I)`` with ``σ = noise_multiplier``, and divide by the
    expected batch size ``B``:  ``g̃ = (Σ_i ḡ_i + N(0, σ²C²I)) / B``.  Each
    example therefore moves ``g̃`` by at most ``C / B``, and the noise has
    standard deviation ``σC / B`` per coordinate.  ``seed``: an int or a
    ``keras.random.SeedGenerator``.  Returns ``(noisy_gradients, norms)`` with
    the per-example norms before clipping.
    """
    import keras
    from keras import ops

    if not l2_norm_clip > 0 or not np.isfinite(l2_norm_clip):
        raise ValueError(f"l2_norm_clip must be a positive finite number, got {l2_norm_clip}")
    if noise_multiplier < 0:
        raise ValueError(f"noise_multiplier must be >= 0, got {noise_multiplier}")
    if not expected_batch_size > 0:
        raise ValueError(f"expected_batch_size must be > 0, got {expected_batch_size}")
    grads = [ops.convert_to_tensor(g) for g in per_example_grads]
    sq = [ops.sum(ops.reshape(ops.square(g), (ops.shape(g)[0], -1)), axis=1) for g in grads]
    norms = ops.sqrt(sum(sq[1:], sq[0]))
    factor = ops.minimum(1.0, l2_norm_clip / ops.maximum(norms, 1e-12))
    out = []
    for g in grads:
        f = ops.reshape(factor, (-1,) + (1,) * (len(g.shape) - 1))
        total = ops.sum(ops.cast(f, g.dtype) * g, axis=0)
        if noise_multiplier > 0:
            total = total + keras.random.normal(ops.shape(total), stddev=noise_multiplier * l2_norm_clip,
                                                dtype=g.dtype, seed=seed)
        out.append(total / expected_batch_size)
    return out, norms


def train_dp_sgd(model, x: np.ndarray, y: np.ndarray, *, epochs: float, expected_batch_size: int,
                 learning_rate: float, l2_norm_clip: float, noise_multiplier: float, momentum: float = 0.0,
                 seed: int = 0) -> dict:
    """Train ``model`` (logits output) with DP-SGD on ``(x, y)``; **TensorFlow backend only**.

    Batches are drawn by **Poisson sampling** (every example independently with
    probability ``q = B / N`` at every step), which is the sampling the privacy
    accountant assumes; ``round(epochs / q)`` steps are taken.  Each step:
    :func:`per_example_gradients`, :func:`clip_and_noise`, an SGD update.
    ``noise_multiplier = 0`` gives clipped but non-private SGD.  Returns a dict
    with ``steps``, ``sampling_probability``, ``seconds``, ``examples_seen``
    and ``mean_norm`` (the mean per-example gradient norm of each step).
    Pass ``steps`` and ``sampling_probability`` to :func:`dp_epsilon`.
    """
    import keras
    import tensorflow as tf

    n = len(x)
    if not 0 < expected_batch_size <= n:
        raise ValueError(f"expected_batch_size must be in (0, len(x)={n}], got {expected_batch_size}")
    q = expected_batch_size / n
    steps = max(1, int(round(epochs / q)))
    loss_fn = keras.losses.SparseCategoricalCrossentropy(from_logits=True)
    optimizer = keras.optimizers.SGD(learning_rate, momentum=momentum)
    optimizer.build(model.trainable_variables)
    noise_seed = keras.random.SeedGenerator(seed)
    spec = (tf.TensorSpec((None,) + tuple(x.shape[1:]), tf.float32), tf.TensorSpec((None,), tf.int64))

    @tf.function(input_signature=spec)
    def step(xb, yb):
        pe = per_example_gradients(model, loss_fn, xb, yb)
        grads, norms = clip_and_noise(pe, l2_norm_clip=l2_norm_clip, noise_multiplier=noise_multiplier,
                                      expected_batch_size=float(expected_batch_size), seed=noise_seed)
        optimizer.apply_gradients(zip(grads, model.trainable_variables))
        return tf.reduce_mean(norms)

    @tf.function
    def noise_only_step():
        # an empty Poisson batch: the update is the noise alone (skipping it would change the privacy analysis)
        empty = [tf.zeros((0,) + tuple(v.shape), v.dtype) for v in model.trainable_variables]
        grads, _ = clip_and_noise(empty, l2_norm_clip=l2_norm_clip, noise_multiplier=noise_multiplier,
                                  expected_batch_size=float(expected_batch_size), seed=noise_seed)
        optimizer.apply_gradients(zip(grads, model.trainable_variables))

    rng = np.random.default_rng(seed)
    x = np.asarray(x, dtype="float32")
    y = np.asarray(y).reshape(-1).astype("int64")
    mean_norms, seen = [], 0
    t0 = time.perf_counter()
    for _ in range(steps):
        idx = np.flatnonzero(rng.random(n) < q)
        if len(idx):
            mean_norms.append(float(step(x[idx], y[idx])))
        else:
            noise_only_step()
            mean_norms.append(float("nan"))
        seen += len(idx)
    return dict(steps=steps, sampling_probability=q, seconds=time.perf_counter() - t0, examples_seen=seen,
                mean_norm=np.asarray(mean_norms))


def dp_epsilon(noise_multiplier: float, sampling_probability: float, steps: int, delta: float, *,
               accountant: str = "rdp") -> float:
    """ε of DP-SGD: ``steps`` compositions of the Poisson-subsampled Gaussian mechanism, at ``delta``.

    Uses Google's ``dp_accounting`` library: ``accountant="rdp"``
    (:class:`dp_accounting.rdp.RdpAccountant`, Rényi DP, Mironov 2017) or
    ``"pld"`` (:class:`dp_accounting.pld.PLDAccountant`, privacy loss
    distributions, tighter).  ``noise_multiplier = 0`` gives ``inf``.
    """
    from dp_accounting import dp_event, pld, rdp

    if not 0 < sampling_probability <= 1:
        raise ValueError(f"sampling_probability must be in (0, 1], got {sampling_probability}")
    if steps < 1 or not 0 < delta < 1:
        raise ValueError(f"steps must be >= 1 and delta in (0, 1), got steps={steps}, delta={delta}")
    if noise_multiplier <= 0:
        return float("inf")
    event = dp_event.SelfComposedDpEvent(
        dp_event.PoissonSampledDpEvent(sampling_probability, dp_event.GaussianDpEvent(noise_multiplier)), int(steps))
    if accountant == "rdp":
        acc = rdp.RdpAccountant()
    elif accountant == "pld":
        acc = pld.PLDAccountant()
    else:
        raise ValueError(f"accountant must be 'rdp' or 'pld', got {accountant!r}")
    # The RDP accountant logs an absl WARNING for every low Rényi order whose series does not converge at small
    # sigma; it then leaves that order out, which only makes the bound looser (still valid). Keep those out of
    # the notebook's output.
    import logging

    absl_logger = logging.getLogger("absl")
    level = absl_logger.level
    absl_logger.setLevel(logging.ERROR)
    try:
        acc.compose(event)
        return float(acc.get_epsilon(delta))
    finally:
        absl_logger.setLevel(level)


def noise_for_epsilon(target_epsilon: float, sampling_probability: float, steps: int, delta: float, *,
                      accountant: str = "rdp", tol: float = 1e-3) -> float:
    """The smallest noise multiplier σ whose ε (:func:`dp_epsilon`) is at most ``target_epsilon`` (bisection)."""
    if not target_epsilon > 0:
        raise ValueError(f"target_epsilon must be > 0, got {target_epsilon}")
    lo, hi = 0.05, 1.0
    while dp_epsilon(hi, sampling_probability, steps, delta, accountant=accountant) > target_epsilon:
        hi *= 2
        if hi > 1e4:
            raise ValueError(f"ε = {target_epsilon} is out of reach with q={sampling_probability}, steps={steps}")
    while hi - lo > tol:
        mid = (lo + hi) / 2
        if dp_epsilon(mid, sampling_probability, steps, delta, accountant=accountant) > target_epsilon:
            lo = mid
        else:
            hi = mid
    return hi
