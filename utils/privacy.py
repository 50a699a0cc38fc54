"""Privacy tools of chapter 6: DICOM de-identification, federated averaging, DP-SGD with its ε.

Three ways of protecting patients, each with what it does *not* protect against:

* **De-identification of DICOM headers** following the Basic Application
  Level Confidentiality Profile of DICOM PS3.15 Annex E: :data:`BASIC_PROFILE`
  is all of Table E.1-1 of :data:`PROFILE_EDITION`, loaded at import time from
  the pinned ``dicom-anonymizer`` library; :func:`deidentify` returns a new
  dataset, an audit log (one row per attribute touched, with its action code),
  warnings and a pixel-review flag; :func:`surviving_identifiers` is a checker
  that does not read the table: it flags every remaining private tag, person
  name, date/time, free text and unremapped UID that is not on the reviewed
  allow-list :data:`KEEP_ALLOWED` (and, given the original, any original
  identifying value found anywhere in the result).  Text burned into the
  pixels is *not* found by header cleaning: :func:`clean_pixels` blanks the
  regions listed for a device in :data:`BURNED_IN_REGIONS`, and only then (or
  when *Burned In Annotation* is NO) does :func:`deidentify` write *Patient
  Identity Removed* = YES.  :func:`compare_with_library` compares the result
  with ``dicom-anonymizer``'s, attribute by attribute.
* **Federated learning**: :func:`split_by_label_mix` makes non-IID "hospital"
  splits of a labelled set, :func:`fedavg` is the weighted average of client
  models of McMahan et al. (2017) written on Keras' ``get_weights`` /
  ``set_weights`` (backend-agnostic), and :func:`federated_averaging` runs the
  rounds (FedAvg, or FedBN with ``local_layers``); :func:`acquisition_shift` simulates sites whose
  scanners differ (a :class:`Scanner` per site).
* **Differential privacy**: :func:`clip_and_noise` is the DP-SGD aggregation of
  Abadi et al. (2016) (clip every example's gradient to L2 norm C, sum, add
  Gaussian noise N(0, σ²C²), divide by the expected batch size) in
  ``keras.ops``; :func:`per_example_gradients` computes the per-example
  gradients on any backend (``tf.vectorized_map`` over a ``tf.GradientTape``,
  ``jax.vmap(jax.grad(...))`` or ``torch.func.vmap(torch.func.grad(...))`` over
  ``stateless_call``, or micro-batches of one); :func:`train_dp_sgd` trains with Poisson-sampled
  batches (seeded for lessons, or ``secure=True``: sampling and noise seeds from
  the operating system's entropy, for a real release), and :func:`dp_epsilon` reports ε with Google's ``dp_accounting``
  library (RDP or PLD accountant).
"""

from __future__ import annotations

import copy
import hashlib
import hmac
import os
import re
import secrets
import time
import uuid
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass
from typing import Any, NamedTuple

import numpy as np

from . import course
from .imaging import PHIAttribute, value_text

__all__ = [
    "BASIC_PROFILE",
    "PROFILE_EDITION",
    "PROFILE_SOURCE",
    "KEEP_ALLOWED",
    "CHECKED_VRS",
    "BURNED_IN_REGIONS",
    "AuditEntry",
    "Deidentified",
    "profile_table",
    "profile_code",
    "applied_action",
    "remap_uid",
    "pseudonym",
    "deidentify",
    "clean_pixels",
    "surviving_identifiers",
    "compare_with_library",
    "split_by_label_mix",
    "fedavg",
    "Scanner",
    "acquisition_shift",
    "TrainingStart",
    "FederatedRun",
    "federated_averaging",
    "per_example_gradients",
    "clip_and_noise",
    "train_dp_sgd",
    "secure_uniform",
    "dp_epsilon",
    "noise_for_epsilon",
]

# ---------------------------------------------------------------------------
# the Basic Application Level Confidentiality Profile (PS3.15 Table E.1-1)
# ---------------------------------------------------------------------------

#: The library whose copy of Table E.1-1 is the profile, its pinned version, and the module of the edition used.
PROFILE_SOURCE = ("dicom-anonymizer", "dicomfields_2026c")

#: Edition of DICOM PS3.15 whose Table E.1-1 the action codes below follow
#: (https://dicom.nema.org/medical/dicom/2026c/output/chtml/part15/chapter_E.html).
PROFILE_EDITION = "DICOM PS3.15 2026c, Annex E, Table E.1-1"
_EDITION = "2026c"

_CATEGORY_CODES = {
    "D_TAGS": "D",
    "Z_TAGS": "Z",
    "X_TAGS": "X",
    "U_TAGS": "U",
    "Z_D_TAGS": "Z/D",
    "X_Z_TAGS": "X/Z",
    "X_D_TAGS": "X/D",
    "X_Z_D_TAGS": "X/Z/D",
    "X_Z_U_STAR_TAGS": "X/Z/U*",
}
#: The repeating-group rows of Table E.1-1 (curve data, overlay data and comments), as the library writes them
#: ``(group, element, group mask, element mask)``; :func:`_is_overlay_or_curve` implements exactly these.
_MASKED_ROWS = {
    (0x5000, 0x0000, 0xFF00, 0x0000): "(50xx,xxxx)",
    (0x6000, 0x3000, 0xFF00, 0xFFFF): "(60xx,3000)",
    (0x6000, 0x4000, 0xFF00, 0xFFFF): "(60xx,4000)",
}


def _load_profile() -> dict[str, str]:
    """Table E.1-1 as kept by the pinned ``dicom-anonymizer`` (parsed there from the standard's own HTML).

    Keys are pydicom keywords, or ``"(gggg,eeee)"`` for the few attributes newer
    than pydicom's data dictionary and for the repeating groups (``"(60xx,3000)"``).
    """
    from dicomanonymizer.dicomfields_selector import dicom_anonymization_database_selector
    from pydicom.datadict import keyword_for_tag

    table = dicom_anonymization_database_selector(PROFILE_SOURCE[1])
    out: dict[str, str] = {}
    for category, code in _CATEGORY_CODES.items():
        for row in table[category]:
            if len(row) == 4:
                if tuple(row) not in _MASKED_ROWS:  # pragma: no cover - a new kind of row in a new library version
                    raise RuntimeError(f"unknown repeating-group row {row} in {PROFILE_SOURCE}")
                key = _MASKED_ROWS[tuple(row)]
            else:
                tag = (row[0] << 16) | row[1]
                key = keyword_for_tag(tag) or f"({row[0]:04X},{row[1]:04X})"
            if out.get(key, code) != code:  # pragma: no cover - checked by the tests
                raise RuntimeError(f"{key} has two action codes in {PROFILE_SOURCE}: {out[key]} and {code}")
            out[key] = code
    return out


#: Attribute keyword (or ``"(gggg,eeee)"``) → action code of the Basic Profile, for **every** row of Table E.1-1
#: of :data:`PROFILE_EDITION`, loaded at import time from the pinned ``dicom-anonymizer`` (its
#: ``dicomfields_2026c`` module).  ``D`` replace with a dummy value of the same VR, ``Z`` replace with a
#: zero-length (or dummy) value, ``X`` remove, ``U`` replace a UID by a consistent new UID; ``X/Z``, ``X/D``,
#: ``Z/D``, ``X/Z/D`` leave the choice to the IOD's attribute type, and ``X/Z/U*`` (reference sequences) keeps
#: the sequence and replaces the UIDs in its items.  Beyond the table, :func:`deidentify` removes all private
#: tags, empties any other person name and any other free text, date or time that is not on
#: :data:`KEEP_ALLOWED`, and remaps any other UID that is not a well-known UID of the standard.
BASIC_PROFILE: dict[str, str] = _load_profile()

#: The reviewed allow-list: attributes of a checked VR (person name, date/time, free text, UID, AE title)
#: that :func:`deidentify` keeps and :func:`surviving_identifiers` accepts, each with the reason.  UIDs of the
#: standard itself (SOP classes, transfer syntaxes, coding schemes: pydicom's ``UID_dictionary``) are accepted
#: wherever they occur.
KEEP_ALLOWED: dict[str, str] = {
    "SOPClassUID": "the kind of object (a UID of the standard), the same for every file of that kind",
    "MediaStorageSOPClassUID": "file meta copy of SOPClassUID",
    "ReferencedSOPClassUID": "the kind of the referenced object (a UID of the standard)",
    "TransferSyntaxUID": "the encoding of the file (a UID of the standard)",
    "ImplementationClassUID": "the software that wrote the file (file meta), shared by every file it writes",
    "ImplementationVersionName": "the version of that software (file meta)",
    "Manufacturer": "device maker; Table E.1-1 keeps it (needed for harmonisation); serial numbers and station "
    "names, which identify one device, are removed",
    "ManufacturerModelName": "device model, as for Manufacturer",
    "SoftwareVersions": "device software version, as for Manufacturer",
    "CodeValue": "a code of a controlled terminology (DCM, SNOMED, UCUM); the sequences whose codes could "
    "identify (institution, physician, patient) are removed by the profile",
    "CodingSchemeDesignator": "the terminology of a code (DCM, SRT, UCUM)",
    "CodingSchemeVersion": "the version of that terminology",
    "CodeMeaning": "the terminology's fixed meaning of the code",
    "RescaleType": "units of the rescaled pixel values (HU, US)",
    "DeidentificationMethod": "written by deidentify: names the profile and options applied",
}

#: Value representations that :func:`surviving_identifiers` inspects: person names, dates and times, free
#: text, UIDs, application entity titles, URIs and ages.  Coded strings (CS) and numbers (DS, IS, US...) are
#: not inspected; Table E.1-1 handles those that identify (e.g. PatientSex, PatientWeight).
CHECKED_VRS = frozenset({"PN", "DA", "DT", "TM", "LO", "SH", "ST", "LT", "UT", "UC", "UI", "AE", "UR", "AS"})

#: Values written by action ``D``, per value representation (a fixed, meaningless dummy).
DUMMY_VALUES: dict[str, Any] = {
    "DA": "19000101",
    "TM": "000000",
    "DT": "19000101000000",
    "PN": "ANONYMIZED",
    "LO": "ANONYMIZED",
    "SH": "ANONYMIZED",
    "CS": "ANONYMIZED",
    "LT": "ANONYMIZED",
    "ST": "ANONYMIZED",
    "UT": "ANONYMIZED",
    "AE": "ANONYMIZED",
    "AS": "000Y",
    "DS": "0",
    "IS": "0",
}

PSEUDONYM_PATTERN = re.compile(r"^ANON-[0-9A-F]{16}$")


def _key_of(tag) -> str:
    """The :data:`BASIC_PROFILE` key of a tag: its keyword, ``"(gggg,eeee)"``, or a repeating-group key."""
    from pydicom.datadict import keyword_for_tag
    from pydicom.tag import Tag

    tag = Tag(tag)
    if 0x5000 <= tag.group <= 0x501E and tag.group % 2 == 0:
        return "(50xx,xxxx)"
    if 0x6000 <= tag.group <= 0x601E and tag.group % 2 == 0 and tag.element in (0x3000, 0x4000):
        return f"(60xx,{tag.element:04X})"
    return keyword_for_tag(tag) or _tag_text(tag)


def _tag_of_key(key: str) -> str:
    from pydicom.datadict import tag_for_keyword

    if key.startswith("("):
        return key
    tag = tag_for_keyword(key)
    if tag is None:
        raise ValueError(f"{key!r} is not a DICOM keyword")
    return f"({tag >> 16:04X},{tag & 0xFFFF:04X})"


def profile_code(tag) -> str | None:
    """The action code of Table E.1-1 for ``tag`` (an int, a pydicom ``Tag`` or a keyword), or ``None``."""
    from pydicom.datadict import tag_for_keyword

    if isinstance(tag, str):
        if tag in BASIC_PROFILE:
            return BASIC_PROFILE[tag]
        tag = tag_for_keyword(tag)
        if tag is None:
            return None
    return BASIC_PROFILE.get(_key_of(tag))


def profile_table() -> list[tuple[str, str, str, str]]:
    """Rows ``(tag, keyword, action code of the standard, action applied here)``, sorted by tag."""
    return sorted((_tag_of_key(k), k, code, applied_action(code)) for k, code in BASIC_PROFILE.items())


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


# ---------------------------------------------------------------------------
# de-identification
# ---------------------------------------------------------------------------


@dataclass(frozen=True)
class AuditEntry:
    """One attribute changed by :func:`deidentify`."""

    path: str  #: where, e.g. ``"ReferencedSeriesSequence[0].SeriesInstanceUID"``
    tag: str  #: ``"(gggg,eeee)"``
    keyword: str  #: DICOM keyword, or ``"(private)"``
    code: str  #: the standard's action code, or the rule used (``"private"``, ``"PN"``, ``"UID"``, ``"text"``...)
    action: str  #: ``"X"`` removed, ``"Z"`` emptied, ``"D"`` dummy, ``"U"`` new UID, ``"added"``, ``"withheld"``
    old: str  #: the old value (shortened)
    new: str  #: the new value (shortened; empty for X)


class Deidentified(NamedTuple):
    """Result of :func:`deidentify`.

    ``dataset`` the new dataset, ``audit`` the changes, ``warnings`` (e.g. burned-in text), and
    ``pixel_review``: ``True`` when the pixels may hold burned-in text (*Burned In Annotation* is not ``NO``
    and the caller did not clean them), in which case *Patient Identity Removed* is **not** set to YES.
    """

    dataset: Any
    audit: list[AuditEntry]
    warnings: list[str]
    pixel_review: bool = False


def _check_salt(salt: Any) -> str:
    if not isinstance(salt, str) or len(salt) < 8:
        raise ValueError(
            "salt must be a secret string of at least 8 characters, kept by the data owner "
            "(e.g. secrets.token_hex(16)); the same salt gives the same pseudonyms and UIDs "
            "across files and runs"
        )
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
    """:func:`utils.imaging.value_text` for the audit log, where an absent value prints as empty."""
    return value_text("" if value is None else value, limit)


def _tag_text(tag) -> str:
    return f"({tag.group:04X},{tag.element:04X})"


def _is_overlay_or_curve(tag) -> bool:
    group = tag.group
    return (0x6000 <= group <= 0x601E and group % 2 == 0 and tag.element in (0x3000, 0x4000)) or (
        0x5000 <= group <= 0x501E and group % 2 == 0
    )


def _uid_values(elem) -> list[str]:
    values = elem.value if isinstance(elem.value, (list, tuple)) or elem.VM > 1 else [elem.value]
    return [str(v).strip() for v in values if v is not None and str(v).strip()]


def _is_instance_uid(elem) -> bool:
    """A UID that is neither on :data:`KEEP_ALLOWED` nor a well-known UID of the standard."""
    from pydicom.uid import UID_dictionary

    if elem.VR != "UI" or elem.keyword in KEEP_ALLOWED or elem.tag.is_private:
        return False
    return any(v not in UID_dictionary for v in _uid_values(elem))


def _must_go(elem) -> bool:
    """True for a non-empty value of a :data:`CHECKED_VRS` VR that is not allow-listed (the rule beyond the table)."""
    return elem.VR in CHECKED_VRS and elem.VR != "UI" and elem.keyword not in KEEP_ALLOWED and bool(_texts(elem))


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
        code = profile_code(tag)
        if code is None:  # not in the table: the course's rules for names, free text, dates and UIDs
            if elem.VR == "PN" and elem.value:
                code = "PN"
            elif _is_instance_uid(elem):
                code = "UID"
            elif _must_go(elem):
                code = f"{elem.VR} not allow-listed"
        if code is None:
            continue
        action = "U" if code == "UID" else "Z" if code not in _CODES else applied_action(code)
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


_CODES = set(_CATEGORY_CODES.values())
_METHOD_KEYWORDS = ("PatientIdentityRemoved", "DeidentificationMethod", "DeidentificationMethodCodeSequence")


def deidentify(ds, *, salt: str, uid_map: dict[str, str] | None = None, pixels_cleaned: bool = False) -> Deidentified:
    """De-identify a DICOM dataset with the Basic Application Level Confidentiality Profile.

    Returns a **new** dataset (``ds`` is not modified), the audit log, warnings
    and the pixel-review flag.  Rules, in order: private tags are removed (X);
    each attribute of :data:`BASIC_PROFILE` (all of Table E.1-1, including
    overlay and curve data) gets :func:`applied_action` of its code (X remove,
    Z empty, D dummy — a keyed :func:`pseudonym` for *Patient ID*, so that the
    images of one patient stay linked — U remap with :func:`remap_uid`);
    beyond the table, any other person name and any other non-empty free text,
    date, time, AE title, URI or age (:data:`CHECKED_VRS`) not on
    :data:`KEEP_ALLOWED` is emptied, and any other UID that is not a
    well-known UID of the standard is remapped; the same rules apply inside
    every sequence item.  In the file meta, *Media Storage SOP Instance UID*
    becomes the new *SOP Instance UID* and every other checked, non-allow-listed
    element (e.g. *Source Application Entity Title*) is removed.

    Pixel data are not changed.  *Patient Identity Removed* (0012,0062) =
    ``YES``, *De-identification Method* (0012,0063) and its code sequence
    (0012,0064) (DCM 113100 "Basic Application Confidentiality Profile", plus
    DCM 113101 "Clean Pixel Data Option" when ``pixels_cleaned``) are written
    **only** when *Burned In Annotation* (0028,0301) is ``NO`` or the caller
    says the pixels were cleaned (``pixels_cleaned=True``, e.g. after
    :func:`clean_pixels` and a human look; *Burned In Annotation* is then set to
    ``NO``).  Otherwise the result has ``pixel_review=True``, a warning, and
    no such attributes (copies from the original are removed): text burned into
    the image (names, dates, typical of ultrasound and secondary captures)
    survives header de-identification.  *Longitudinal Temporal Information
    Modified* (0028,0303) = ``REMOVED`` is written in both cases.  Pass the same
    ``salt`` (and, optionally, the same ``uid_map`` dict) for all files of a
    collection: equal original UIDs then get equal new UIDs across files.
    """
    from pydicom import Dataset
    from pydicom.sequence import Sequence

    salt = _check_salt(salt)
    if not isinstance(ds, Dataset):
        raise TypeError(f"ds must be a pydicom Dataset (from pydicom.dcmread), got {type(ds).__name__}")
    uid_map = {} if uid_map is None else uid_map
    out = copy.deepcopy(ds)
    audit: list[AuditEntry] = []
    for kw in _METHOD_KEYWORDS:  # a claim copied from the original is not ours to repeat
        if kw in out:
            audit.append(AuditEntry(kw, _tag_text(out[kw].tag), kw, "method", "X", _short(out[kw].value), ""))
            del out[kw]
    _clean(out, "", salt, uid_map, audit)
    meta = getattr(out, "file_meta", None)
    if meta is not None:
        for elem in list(meta):
            if elem.keyword == "MediaStorageSOPInstanceUID":
                old = elem.value
                meta.MediaStorageSOPInstanceUID = remap_uid(old, salt, uid_map)
                audit.append(
                    AuditEntry(
                        "file_meta.MediaStorageSOPInstanceUID",
                        "(0002,0003)",
                        "MediaStorageSOPInstanceUID",
                        "U",
                        "U",
                        _short(old),
                        _short(meta.MediaStorageSOPInstanceUID),
                    )
                )
            elif _must_go(elem) or _is_instance_uid(elem) or (elem.VR == "PN" and _texts(elem)):
                audit.append(
                    AuditEntry(
                        f"file_meta.{elem.keyword}",
                        _tag_text(elem.tag),
                        elem.keyword,
                        f"{elem.VR} not allow-listed",
                        "X",
                        _short(elem.value),
                        "",
                    )
                )
                del meta[elem.tag]
    burned = str(ds.get("BurnedInAnnotation", "") or "").upper()
    pixel_review = not (burned == "NO" or pixels_cleaned)
    out.LongitudinalTemporalInformationModified = "REMOVED"
    added = [("LongitudinalTemporalInformationModified", "REMOVED")]
    warnings = []
    if pixel_review:
        state = "says YES" if burned == "YES" else "is absent"
        warnings.append(
            f"Burned In Annotation (0028,0301) {state}: text in the pixels (names, dates, IDs) is not "
            f"removed by header de-identification; flagged for pixel review, and Patient Identity "
            f"Removed is not set; clean the pixels (clean_pixels) and look, then pass pixels_cleaned=True"
        )
        audit.append(
            AuditEntry(
                "PatientIdentityRemoved",
                "(0012,0062)",
                "PatientIdentityRemoved",
                "method",
                "withheld",
                "",
                "pixel review needed",
            )
        )
    else:
        codes = [("113100", "Basic Application Confidentiality Profile")]
        if pixels_cleaned:
            codes.append(("113101", "Clean Pixel Data Option"))
            if burned != "NO":
                audit.append(
                    AuditEntry(
                        "BurnedInAnnotation",
                        "(0028,0301)",
                        "BurnedInAnnotation",
                        "pixels cleaned",
                        "D",
                        _short(ds.get("BurnedInAnnotation", "")),
                        "NO",
                    )
                )
            out.BurnedInAnnotation = "NO"
        items = []
        for value, meaning in codes:
            item = Dataset()
            item.CodeValue, item.CodingSchemeDesignator, item.CodeMeaning = value, "DCM", meaning
            items.append(item)
        out.PatientIdentityRemoved = "YES"
        out.DeidentificationMethod = (
            f"PS3.15 E.1-1 Basic Profile ({_EDITION})"
            + (" + Clean Pixel" if pixels_cleaned else "")
            + "; utils.privacy"
        )
        out.DeidentificationMethodCodeSequence = Sequence(items)
        added += [
            ("PatientIdentityRemoved", "YES"),
            ("DeidentificationMethod", out.DeidentificationMethod),
            ("DeidentificationMethodCodeSequence", " + ".join(f"DCM {v}" for v, _ in codes)),
        ]
    for kw, value in added:
        audit.append(AuditEntry(kw, _tag_text(out[kw].tag), kw, "method", "added", "", _short(value)))
    return Deidentified(out, audit, warnings, pixel_review)


#: Rectangles ``(row0, row1, col0, col1)`` (half-open, in pixels) where a device is known to burn text into the
#: image, keyed by ``(Modality, Manufacturer, ManufacturerModelName)``.  A region is measured on a sample of the
#: device and holds only for its display layout: every new device, software version or layout needs a human
#: look before its files count as clean.
BURNED_IN_REGIONS: dict[tuple[str, str, str], tuple[tuple[int, int, int, int], ...]] = {
    # GE LOGIQ 700 ultrasound (pydicom-data's US1_UNCR.dcm): hospital name, patient ID fields, time and settings
    # in the top band above the image (rows 0-107 of a 480 × 640 frame)
    ("US", "G.E. Medical Systems", "LOGIQ 700"): ((0, 108, 0, 640),),
}


def clean_pixels(ds, regions: Sequence[tuple[int, int, int, int]] | None = None, *, value: int = 0):
    """A copy of ``ds`` with the pixels of ``regions`` set to ``value`` in every frame and channel.

    ``regions`` defaults to :data:`BURNED_IN_REGIONS` of the file's modality,
    manufacturer and model (``KeyError`` if the device is not listed: then a
    human must find the text).  Works for uncompressed and compressed pixel
    data (the result is written uncompressed, Explicit VR Little Endian, and
    colour data interleaved).  Blanking a known region is not a proof that no
    text remains elsewhere in the image: a human still has to look.
    """
    from pydicom.uid import ExplicitVRLittleEndian

    if regions is None:
        key = (str(ds.get("Modality", "")), str(ds.get("Manufacturer", "")), str(ds.get("ManufacturerModelName", "")))
        if key not in BURNED_IN_REGIONS:
            raise KeyError(f"no known burned-in text regions for {key}; inspect the image and pass regions=")
        regions = BURNED_IN_REGIONS[key]
    out = copy.deepcopy(ds)
    arr = np.array(ds.pixel_array)  # frames first if several; colour last
    frames = int(ds.get("NumberOfFrames", 1) or 1)
    view = arr if frames > 1 else arr[None]
    for r0, r1, c0, c1 in regions:
        if not (0 <= r0 < r1 <= ds.Rows and 0 <= c0 < c1 <= ds.Columns):
            raise ValueError(f"region {(r0, r1, c0, c1)} is outside the {ds.Rows} × {ds.Columns} image")
        view[:, r0:r1, c0:c1] = value
    out.PixelData = arr.tobytes()
    if "PlanarConfiguration" in out:
        out.PlanarConfiguration = 0
    if (
        getattr(out, "file_meta", None) is not None
        and out.file_meta.get("TransferSyntaxUID")
        and out.file_meta.TransferSyntaxUID.is_compressed
    ):
        out.file_meta.TransferSyntaxUID = ExplicitVRLittleEndian
        if str(out.get("PhotometricInterpretation", "")).startswith("YBR"):
            out.PhotometricInterpretation = "RGB"
    return out


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


def _elements(ds) -> list[tuple[str, Any]]:
    elements = list(_walk(ds))
    meta = getattr(ds, "file_meta", None)
    if meta is not None:
        elements += list(_walk(meta, "file_meta."))
    return elements


def _identifying_values(original) -> set[str]:
    """Text values of the original of a checked VR (not allow-listed) or of a private tag; UIDs not of the standard."""
    from pydicom.uid import UID_dictionary

    values: set[str] = set()
    for _, elem in _elements(original):
        if elem.keyword in KEEP_ALLOWED or elem.keyword == "PixelData":
            continue
        if not (elem.tag.is_private or elem.VR in CHECKED_VRS):
            continue
        for text in _texts(elem):
            # short codes ("M", "YES") and plain numbers ("5.000000" in a private tag) are not identifying on
            # their own and would match unrelated attributes; dates, IDs, names and UIDs are
            if elem.VR == "UI":
                if text not in UID_dictionary:
                    values.add(text)
            elif (len(text) >= 4 and not _is_number(text)) or (
                elem.VR in ("DA", "TM", "DT", "LO", "SH", "PN") and len(text) >= 6
            ):
                values.add(text)
    # a value the original also carries in a coded or allow-listed attribute (ImageType "RCBF" and LUTLabel
    # "RCBF") is not an identifier on its own
    ordinary = {
        t
        for _, e in _elements(original)
        if not e.tag.is_private and (e.keyword in KEEP_ALLOWED or e.VR not in CHECKED_VRS)
        for t in _texts(e)
    }
    return values - set(DUMMY_VALUES.values()) - ordinary


def surviving_identifiers(ds, original=None) -> list[PHIAttribute]:
    """What possibly identifying content is still in ``ds``; an empty list means none was found.

    Independent of :data:`BASIC_PROFILE`: it flags, anywhere in ``ds``, its
    sequences and its file meta, every private tag, every overlay/curve
    element, and every non-empty value of a :data:`CHECKED_VRS` VR (person
    name, date, time, free text, AE title, URI, age) that is neither on
    :data:`KEEP_ALLOWED`, nor a dummy of :data:`DUMMY_VALUES`, nor a keyed
    pseudonym; and every UID that is neither allow-listed, nor a well-known UID
    of the standard, nor of the ``2.25.`` form of :func:`remap_uid`.  With
    ``original`` (the dataset before de-identification), also every element
    whose text equals an identifying value of the original (reason
    ``"original value"``: this catches an original UID that was itself of the
    ``2.25.`` form).  Not checked: coded strings (CS) and numbers (DS, IS, ...),
    and pixel data (burned-in text needs OCR or a human look).
    """
    from pydicom.uid import UID_dictionary

    found: list[PHIAttribute] = []
    elements = _elements(ds)
    dummies = set(DUMMY_VALUES.values())
    for path, elem in elements:
        tag = elem.tag
        if elem.keyword == "PixelData":
            continue
        reason = None
        if tag.is_private:
            reason = "private tag"
        elif _is_overlay_or_curve(tag):
            reason = "overlay/curve data"
        elif elem.VR in CHECKED_VRS and elem.keyword not in KEEP_ALLOWED:
            texts = _texts(elem)
            if elem.VR == "UI":
                if any(t not in UID_dictionary and not t.startswith("2.25.") for t in texts):
                    reason = "UID not remapped"
            elif any(t not in dummies and not PSEUDONYM_PATTERN.match(t) for t in texts):
                reason = f"{elem.VR} value"
        if reason is not None:
            found.append(
                PHIAttribute(elem.keyword or "(private)", _tag_text(tag), _short(elem.value), f"{reason} at {path}")
            )
    if original is not None:
        leaked = _identifying_values(original)
        for path, elem in elements:
            if elem.keyword == "PixelData":
                continue
            hits = [t for t in _texts(elem) if t in leaked]
            if hits:
                found.append(
                    PHIAttribute(
                        elem.keyword or "(private)", _tag_text(elem.tag), _short(hits[0]), f"original value at {path}"
                    )
                )
    return found


def _action_of(before, after) -> str:
    """``"kept"``, ``"removed"``, ``"emptied"`` or ``"replaced"``: what happened to one element."""
    if after is None:
        return "removed"
    if after.VR == "SQ":
        if len(after.value or []) == 0 and len(before.value or []) > 0:
            return "emptied"
        return "kept"
    if not _texts(before):
        return "was empty" if not _texts(after) else "replaced"
    if before.value == after.value:
        return "kept"
    return "emptied" if not _texts(after) and after.value in (None, "", b"") else "replaced"


def compare_with_library(datasets: dict[str, Any], *, salt: str) -> list[tuple[str, str, str, str, int, str]]:
    """Run :func:`deidentify` and the pinned ``dicom-anonymizer`` (same edition) on each dataset; compare.

    For every top-level attribute and file-meta element of the originals (and any
    attribute either tool added), the action each tool took (``kept``,
    ``removed``, ``emptied``, ``replaced``, ``added``) is compared; rows
    ``(tag, keyword, course, library, number of files, files)`` list the
    combinations where the two differ, aggregated over files.  Replacements
    by different values (both replaced a UID, by different new UIDs) count as
    agreement.
    """
    from dicomanonymizer.simpledicomanonymizer import anonymize_dataset, initialize_actions

    diffs: dict[tuple[str, str, str, str], list[str]] = {}
    for name, ds in datasets.items():
        ours = deidentify(ds, salt=salt).dataset
        theirs = copy.deepcopy(ds)
        anonymize_dataset(
            theirs, delete_private_tags=True, base_rules_gen=lambda: initialize_actions(PROFILE_SOURCE[1])
        )
        levels = [(ds, ours, theirs, "")]
        if getattr(ds, "file_meta", None) is not None:
            levels.append((ds.file_meta, ours.file_meta, getattr(theirs, "file_meta", ds.file_meta), "file_meta."))
        for before_ds, ours_ds, theirs_ds, prefix in levels:
            tags = sorted(set(before_ds.keys()) | set(ours_ds.keys()) | set(theirs_ds.keys()))
            for tag in tags:
                before = before_ds.get(tag)
                actions = []
                for result in (ours_ds, theirs_ds):
                    after = result.get(tag)
                    if before is None:
                        actions.append("added" if after is not None else "absent")
                    else:
                        actions.append(_action_of(before, after))
                if actions[0] != actions[1]:
                    elem = before if before is not None else (ours_ds.get(tag) or theirs_ds.get(tag))
                    keyword = "(private)" if elem.tag.is_private else (elem.keyword or _tag_text(elem.tag))
                    key = (_tag_text(elem.tag), prefix + keyword, actions[0], actions[1])
                    diffs.setdefault(key, []).append(name)
    rows = [(tag, kw, a, b, len(files), ", ".join(files)) for (tag, kw, a, b), files in diffs.items()]
    return sorted(rows, key=lambda r: (r[1].startswith("(private)"), r[0]))


# ---------------------------------------------------------------------------
# federated learning
# ---------------------------------------------------------------------------


def split_by_label_mix(
    y: np.ndarray, sizes: Sequence[int], mixes: Sequence[Sequence[float]], *, seed: int = 0
) -> list[np.ndarray]:
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
        raise ValueError(
            f"each mix needs {n_classes} class fractions (labels 0..{n_classes - 1}), got shape {mixes.shape}"
        )
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
                raise ValueError(
                    f"client {k} needs {n} cases of class {c} but only {len(pools[c])} are left; "
                    f"lower sizes[{k}] or change mixes[{k}]"
                )
            idx += pools[c][:n]
            pools[c] = pools[c][n:]
        out.append(np.sort(np.asarray(idx, dtype=int)))
    return out


def fedavg(client_weights: Sequence[Sequence[np.ndarray]], sizes: Sequence[int]) -> list[np.ndarray]:
    """Federated averaging (McMahan et al. 2017): ``w = Σ_k (n_k / n) · w_k`` for every weight array.

    ``client_weights[k]`` is ``model.get_weights()`` of client ``k`` after its
    local training, ``sizes[k]`` its number of training cases.  The result can
    be passed to ``model.set_weights`` (works on every Keras backend).
    """
    if len(client_weights) == 0 or len(client_weights) != len(sizes):
        raise ValueError(
            f"need one weight list per client and one size per client, got "
            f"{len(client_weights)} weight lists and {len(sizes)} sizes"
        )
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


class Scanner(NamedTuple):
    """How one simulated site acquires its images (see :func:`acquisition_shift`)."""

    gamma: float = 1.0  # intensity transfer x -> x ** gamma (detector response, processing LUT)
    contrast: float = 1.0  # scaling around mid-grey, 0.5 + contrast * (x - 0.5)
    resolution: int = 1  # detector pixels per image pixel, per side (2: a 14x14 detector for 28x28 images)
    noise: float = 0.0  # standard deviation of additive Gaussian noise (quantum and electronic noise)


def acquisition_shift(x: np.ndarray, scanner: Scanner, *, seed: int = 0) -> np.ndarray:
    """Images ``x`` in [0, 1] as a site with ``scanner`` would acquire them: a simulated acquisition shift.

    In this order: block-average ``resolution`` × ``resolution`` pixels and repeat them (a coarser
    detector, same array size), apply the intensity transfer ``x ** gamma``, scale the contrast around 0.5,
    add Gaussian noise of standard deviation ``noise`` (seeded) and clip to [0, 1].  ``Scanner()`` is the
    identity.  Shape and dtype are kept; ``x`` is ``(N, H, W)`` or ``(N, H, W, C)`` with ``H`` and ``W``
    divisible by ``resolution``.

    This is a stand-in for what differs between real sites (vendor, detector, exposure, post-processing), which
    moves the distribution of the *images* while the labels mean the same: a "feature shift", the case that
    FedBN addresses (Li et al., ICLR 2021).

    Taught in chapter 6, part 2, section 2.2 ("Sites that differ as real sites do").
    """
    x = np.asarray(x)
    if x.ndim not in (3, 4):
        raise ValueError(f"images must be (N, H, W) or (N, H, W, C), got shape {x.shape}")
    f = int(scanner.resolution)
    if f < 1 or x.shape[1] % f or x.shape[2] % f:
        raise ValueError(f"resolution must be a positive divisor of the image size {x.shape[1:3]}, got {f}")
    if scanner.gamma <= 0 or scanner.noise < 0:
        raise ValueError(f"gamma must be > 0 and noise >= 0, got {scanner}")
    out = x.astype(np.float64)
    if f > 1:
        n, h, w = out.shape[:3]
        blocks = out.reshape(n, h // f, f, w // f, f, *out.shape[3:]).mean(axis=(2, 4))
        out = np.repeat(np.repeat(blocks, f, axis=1), f, axis=2)
    out = np.clip(out, 0.0, 1.0) ** scanner.gamma
    out = 0.5 + scanner.contrast * (out - 0.5)
    if scanner.noise:
        out = out + np.random.default_rng(seed).normal(0.0, scanner.noise, out.shape)
    return np.clip(out, 0.0, 1.0).astype(x.dtype if np.issubdtype(x.dtype, np.floating) else np.float32)


class TrainingStart:
    """The weights and optimizer state of a compiled model, to start several trainings from the same point.

    ``start = TrainingStart(model)`` records them; ``start.restore(model)`` puts them back (the model keeps its
    compiled training function, so a second training is not traced again).  Used by
    :func:`federated_averaging` (every client restarts its optimizer each round) and by chapters that train
    several models from one initialisation.
    """

    def __init__(self, model):
        if getattr(model, "optimizer", None) is None:
            raise ValueError("compile the model first (e.g. model.compile(optimizer=keras.optimizers.SGD(0.05), ...))")
        model.optimizer.build(model.trainable_variables)
        self.weights = model.get_weights()
        self.optimizer_state = [np.array(v) for v in model.optimizer.variables]

    def restore(self, model, weights: Sequence[np.ndarray] | None = None) -> None:
        """Put back the recorded optimizer state and the recorded weights (or ``weights``, if given)."""
        model.set_weights(self.weights if weights is None else weights)
        for var, value in zip(model.optimizer.variables, self.optimizer_state):
            var.assign(value)


class FederatedRun(NamedTuple):
    """What :func:`federated_averaging` returns."""

    history: list  # on_round's value after every round
    client_weights: list  # per client, the weights it deploys: the global model, with its own local layers


def _local_indices(model, local_layers) -> list[int]:
    """Positions in ``model.get_weights()`` of the variables of the layers of type ``local_layers``."""
    if not local_layers:
        return []
    paths = {v.path for layer in model.layers if isinstance(layer, local_layers) for v in layer.weights}
    if not paths:
        raise ValueError(f"the model has no layer of type {local_layers} to keep local")
    return [i for i, v in enumerate(model.weights) if v.path in paths]


def federated_averaging(
    model,
    clients: Sequence[tuple[np.ndarray, np.ndarray]],
    *,
    rounds: int,
    local_epochs: int,
    batch_size: int,
    local_layers: type | tuple[type, ...] = (),
    on_round: Callable[[int, Any], Any] | None = None,
) -> FederatedRun:
    """Train ``model`` (compiled) with FedAvg, or FedBN: each round every client trains locally, the server averages.

    In each round the global weights are sent to every client, the client runs
    ``local_epochs`` epochs of ``model.fit`` on its own ``(x, y)`` starting from
    the optimizer state the model had when this function was called, and the server replaces the global
    weights by :func:`fedavg` of the clients' weights (weighted by client size).  Only
    weights leave a client, never images.

    ``local_layers`` (e.g. ``keras.layers.BatchNormalization``): the weights of these layers (for batch
    normalisation: scale, offset and the running statistics) are never averaged; each client keeps its own
    from round to round.  With batch normalisation this is **FedBN** (Li et al., ICLR 2021): every site
    normalises features with its own statistics, which absorbs a shift in how its images look.  The layers
    must be direct members of ``model.layers``.

    ``on_round(round_index, model)`` is called after each round, with the global weights in the model (for
    FedBN, the averaged weights and the size-weighted average of the local layers); its return values are
    ``history``.  At the end the model holds those weights; ``client_weights[k]`` is what client ``k`` deploys
    (the global weights with its own local layers; for FedAvg the same for every client).

    Taught in chapter 6, part 2, section 2 ("Federated learning").
    """
    if rounds < 1 or local_epochs < 1:
        raise ValueError(f"rounds and local_epochs must be >= 1, got {rounds} and {local_epochs}")
    if not clients:
        raise ValueError("clients is empty: give a list of (x, y) pairs, one per client")
    start = TrainingStart(model)
    local_idx = _local_indices(model, local_layers)
    sizes = [len(x) for x, _ in clients]
    kept = [[start.weights[i] for i in local_idx] for _ in clients]  # each client's local layers
    history = []
    for r in course.progress(range(rounds), desc="federated rounds"):
        global_weights = model.get_weights()
        local = []
        for k, (x, y) in enumerate(clients):
            sent = list(global_weights)
            for i, value in zip(local_idx, kept[k]):
                sent[i] = value
            start.restore(model, sent)
            model.fit(x, y, epochs=local_epochs, batch_size=batch_size, shuffle=True, verbose=0)  # a round is short
            local.append(model.get_weights())
            kept[k] = [local[-1][i] for i in local_idx]
        model.set_weights(fedavg(local, sizes))
        if on_round is not None:
            history.append(on_round(r, model))
    final = model.get_weights()
    deployed = []
    for k in range(len(clients)):
        w = list(final)
        for i, value in zip(local_idx, kept[k]):
            w[i] = value
        deployed.append(w)
    return FederatedRun(history, deployed)


# ---------------------------------------------------------------------------
# differential privacy: DP-SGD
# ---------------------------------------------------------------------------


def _backend() -> str:
    import keras

    return keras.backend.backend()


def loss_gradients(model, loss_fn: Callable, x, y) -> list:
    """Gradients of the batch loss ``loss_fn(y, model(x, training=True))`` w.r.t. ``model.trainable_variables``.

    Any backend: ``tf.GradientTape`` on TensorFlow, ``jax.grad`` over ``model.stateless_call`` on JAX,
    ``torch.autograd.grad`` on PyTorch.  Returns backend tensors, one per trainable variable.
    """
    import keras

    name = _backend()
    variables = model.trainable_variables
    if name == "tensorflow":
        import tensorflow as tf

        with tf.GradientTape() as tape:
            loss = loss_fn(y, model(x, training=True))
        return tape.gradient(loss, variables)
    if name == "jax":
        import jax

        nt = [v.value for v in model.non_trainable_variables]

        def f(tv):
            out, _ = model.stateless_call(tv, nt, x, training=True)
            return loss_fn(y, out)

        return jax.grad(f)([v.value for v in variables])
    if name == "torch":
        import torch

        x, y = keras.ops.convert_to_tensor(x), keras.ops.convert_to_tensor(y)
        loss = loss_fn(y, model(x, training=True))
        return list(torch.autograd.grad(loss, [v.value for v in variables]))
    raise NotImplementedError(f"loss_gradients supports the tensorflow, jax and torch backends, not {name!r}")


def per_example_gradients(model, loss_fn: Callable, x, y, *, method: str = "vectorized") -> list:
    """Gradients of ``loss_fn(y_i, model(x_i))`` for every example ``i`` separately (leading axis = example).

    ``method="vectorized"`` maps the one-example gradient over the batch with the backend's
    vectorising map: ``tf.vectorized_map`` over a ``tf.GradientTape`` (TensorFlow),
    ``jax.vmap(jax.grad(...))`` over ``model.stateless_call`` (JAX), ``torch.func.vmap(torch.func.grad(...))``
    over ``model.stateless_call`` (PyTorch).  ``method="loop"`` takes the examples one at a time
    (micro-batches of one, :func:`loss_gradients`) and stacks the results: slower, the same numbers.
    The model's non-trainable state (batch-norm statistics, seeds) is read but not updated: DP-SGD's
    models should not mix examples (no batch normalisation, see :func:`utils.classify.small_cnn`).
    """
    from keras import ops

    if method not in ("vectorized", "loop"):
        raise ValueError(f"method must be 'vectorized' or 'loop', got {method!r}")
    name = _backend()
    if method == "loop":
        x, y = ops.convert_to_tensor(x), ops.convert_to_tensor(y)
        per = [loss_gradients(model, loss_fn, x[i : i + 1], y[i : i + 1]) for i in range(int(ops.shape(x)[0]))]
        return [ops.stack([ops.convert_to_tensor(p[k]) for p in per]) for k in range(len(model.trainable_variables))]
    if name == "tensorflow":
        import tensorflow as tf

        variables = model.trainable_variables

        def one(args):
            xi, yi = args
            with tf.GradientTape() as tape:
                loss = loss_fn(yi[None], model(xi[None], training=True))
            return tape.gradient(loss, variables)

        return tf.vectorized_map(one, (x, y))
    tv = [v.value for v in model.trainable_variables]
    nt = [v.value for v in model.non_trainable_variables]
    if name == "jax":
        return _jax_per_example(model, loss_fn)(tv, nt, ops.convert_to_tensor(x), ops.convert_to_tensor(y))
    if name == "torch":
        try:
            return _torch_per_example(
                model,
                loss_fn,
                [t.detach() for t in tv],
                [t.detach() for t in nt],
                ops.convert_to_tensor(x),
                ops.convert_to_tensor(y),
            )
        except RuntimeError:
            # torch.func.vmap does not batch every layer: Keras' Conv2D clones a channels-last tensor, which vmap
            # does not support (PyTorch 2.13); micro-batches of one give the same gradients
            return per_example_gradients(model, loss_fn, x, y, method="loop")
    raise NotImplementedError(f"per_example_gradients supports the tensorflow, jax and torch backends, not {name!r}")


def _jax_per_example(model, loss_fn):
    """``f(trainable, non_trainable, x, y)`` → per-example gradients, with ``jax.vmap(jax.grad)`` (pure; jittable)."""
    import jax

    def loss_one(tv, nt, xi, yi):
        out, _ = model.stateless_call(tv, nt, xi[None], training=True)
        return loss_fn(yi[None], out)

    return jax.vmap(jax.grad(loss_one), in_axes=(None, None, 0, 0))


def _torch_per_example(model, loss_fn, tv, nt, x, y):
    from torch.func import grad, vmap

    def loss_one(tv, xi, yi):
        out, _ = model.stateless_call(tv, nt, xi[None], training=True)
        return loss_fn(yi[None], out)

    return list(vmap(grad(loss_one), in_dims=(None, 0, 0))(tv, x, y))


def clip_and_noise(
    per_example_grads: Sequence, *, l2_norm_clip: float, noise_multiplier: float, expected_batch_size: float, seed=None
) -> tuple[list, Any]:
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
    # the trailing size is spelled out: PyTorch cannot infer -1 for an empty (noise-only) batch
    sq = [ops.sum(ops.reshape(ops.square(g), (ops.shape(g)[0], int(np.prod(g.shape[1:])))), axis=1) for g in grads]
    norms = ops.sqrt(sum(sq[1:], sq[0]))
    factor = ops.minimum(1.0, l2_norm_clip / ops.maximum(norms, 1e-12))
    out = []
    for g in grads:
        f = ops.reshape(factor, (-1,) + (1,) * (len(g.shape) - 1))
        total = ops.sum(ops.cast(f, g.dtype) * g, axis=0)
        if noise_multiplier > 0:
            total = total + keras.random.normal(
                ops.shape(total), stddev=noise_multiplier * l2_norm_clip, dtype=g.dtype, seed=seed
            )
        out.append(total / expected_batch_size)
    return out, norms


def train_dp_sgd(
    model,
    x: np.ndarray,
    y: np.ndarray,
    *,
    epochs: float,
    expected_batch_size: int,
    learning_rate: float,
    l2_norm_clip: float,
    noise_multiplier: float,
    momentum: float = 0.0,
    seed: int | None = 0,
    secure: bool = False,
) -> dict:
    """Train ``model`` (logits output) with DP-SGD on ``(x, y)``, on the TensorFlow, JAX or PyTorch backend.

    Batches are drawn by **Poisson sampling** (every example independently with
    probability ``q = B / N`` at every step), which is the sampling the privacy
    accountant assumes; ``round(epochs / q)`` steps are taken.  Each step:
    :func:`per_example_gradients`, :func:`clip_and_noise`, an SGD update.
    ``noise_multiplier = 0`` gives clipped but non-private SGD.  Returns a dict
    with ``steps``, ``sampling_probability``, ``seconds``, ``examples_seen``
    and ``mean_norm`` (the mean per-example gradient norm of each step).
    Pass ``steps`` and ``sampling_probability`` to :func:`dp_epsilon`.

    **Seeded or secure randomness.** With ``secure=False`` (the default, for lessons and tests) the
    Poisson sampling comes from ``np.random.default_rng(seed)`` and the noise from
    ``keras.random.SeedGenerator(seed)``: the run is reproducible, and for that very reason it is **not
    private** against anyone who knows the seed (a published notebook publishes it): they can regenerate
    every noise vector and subtract it.  With ``secure=True`` (``seed`` must then be ``None``) nothing is
    seeded: each step's Poisson sample is drawn from the operating system's cryptographically secure
    generator (:func:`os.urandom`, the source of :mod:`secrets`), and each step's noise from a fresh
    ``SeedGenerator`` state of 124 bits of OS entropy (:func:`secrets.randbits`).  That is the strongest
    honest option with Keras: its random ops (Philox / ThreeFry counter-based generators behind
    ``tf.random.stateless_normal`` or ``jax.random``) are statistically good but not vetted CSPRNGs, and
    the floating-point Gaussian sampler has known weaknesses (the "floating-point attacks" on DP noise).
    A production library goes further: Opacus' ``secure_mode`` draws noise and sampling from
    ``torchcsprng`` (AES-128 in counter mode, keyed from the OS) and sums several Gaussian draws per
    coordinate to blunt the floating-point attack.  ``dict["secure"]`` records which mode ran.
    """
    import keras

    if secure and seed is not None:
        raise ValueError(
            "secure=True draws its randomness from the operating system: pass seed=None "
            "(a seed would make the run reproducible, and so not private, for whoever knows it)"
        )
    if not secure and seed is None:
        raise ValueError("seed=None needs secure=True; give an integer seed for a reproducible (lesson) run")

    n = len(x)
    if not 0 < expected_batch_size <= n:
        raise ValueError(f"expected_batch_size must be in (0, len(x)={n}], got {expected_batch_size}")
    q = expected_batch_size / n
    steps = max(1, int(round(epochs / q)))
    loss_fn = keras.losses.SparseCategoricalCrossentropy(from_logits=True)
    optimizer = keras.optimizers.SGD(learning_rate, momentum=momentum)
    optimizer.build(model.trainable_variables)
    # in secure mode each step overwrites the state with OS entropy, as many bits as the backend's state dtype
    # holds (uint32 on JAX, int64 elsewhere)
    noise_seed = keras.random.SeedGenerator(secrets.randbits(31) if secure else seed)
    seed_info = np.iinfo(keras.backend.standardize_dtype(noise_seed.state.dtype))  # int32 on PyTorch
    seed_bits = min(62, seed_info.bits - (seed_info.min < 0))
    agg = dict(
        l2_norm_clip=l2_norm_clip, noise_multiplier=noise_multiplier, expected_batch_size=float(expected_batch_size)
    )
    x = np.asarray(x, dtype="float32")
    y = np.asarray(y).reshape(-1).astype("int64")
    step, noise_only_step, finish = _dp_steps(
        model, loss_fn, optimizer, noise_seed, agg, x.shape[1:], int(expected_batch_size)
    )

    rng = None if secure else np.random.default_rng(seed)
    mean_norms, seen = [], 0
    t0 = time.perf_counter()
    try:
        for _ in range(steps):
            if secure:
                idx = np.flatnonzero(secure_uniform(n) < q)
                # a fresh noise seed from OS entropy every step (Keras' generators cannot take a CSPRNG stream)
                noise_seed.state.assign(
                    np.array([secrets.randbits(seed_bits), secrets.randbits(seed_bits)], dtype=noise_seed.state.dtype)
                )
            else:
                idx = np.flatnonzero(rng.random(n) < q)
            if len(idx):
                mean_norms.append(float(step(x[idx], y[idx])))
            else:
                noise_only_step()
                mean_norms.append(float("nan"))
            seen += len(idx)
    finally:
        finish()
    return dict(
        steps=steps,
        sampling_probability=q,
        seconds=time.perf_counter() - t0,
        examples_seen=seen,
        mean_norm=np.asarray(mean_norms),
        secure=bool(secure),
    )


def _dp_steps(model, loss_fn, optimizer, noise_seed, agg: dict, example_shape, expected_batch_size: int):
    """``(step(xb, yb) -> mean norm, noise_only_step(), finish())`` of DP-SGD for the active backend.

    TensorFlow: two ``tf.function``s (a batch of any size without retracing).  JAX: one jitted pure function
    of the weights, the optimizer state and the noise seed; a Poisson batch is padded with masked examples
    (zero gradient) to a multiple of ``max(8, B // 4)`` so that only a few batch sizes are compiled, and an
    empty batch is an all-masked one (the update is the noise alone).  PyTorch: eager, under ``torch.no_grad``
    for the update.  ``finish()`` writes the JAX state back into the Keras variables.
    """
    import keras
    from keras import ops

    name = _backend()
    variables = model.trainable_variables
    if name == "tensorflow":
        import tensorflow as tf

        spec = (tf.TensorSpec((None,) + tuple(example_shape), tf.float32), tf.TensorSpec((None,), tf.int64))

        @tf.function(input_signature=spec)
        def step(xb, yb):
            pe = per_example_gradients(model, loss_fn, xb, yb)
            grads, norms = clip_and_noise(pe, seed=noise_seed, **agg)
            optimizer.apply_gradients(zip(grads, variables))
            return tf.reduce_mean(norms)

        @tf.function
        def noise_only_step():
            # an empty Poisson batch: the update is the noise alone (skipping it would change the privacy analysis)
            empty = [tf.zeros((0,) + tuple(v.shape), v.dtype) for v in variables]
            grads, _ = clip_and_noise(empty, seed=noise_seed, **agg)
            optimizer.apply_gradients(zip(grads, variables))

        return step, noise_only_step, lambda: None
    if name == "torch":
        import torch

        def step(xb, yb):
            pe = per_example_gradients(model, loss_fn, xb, yb)
            with torch.no_grad():
                grads, norms = clip_and_noise(pe, seed=noise_seed, **agg)
                optimizer.apply(grads, variables)
            return ops.convert_to_numpy(ops.mean(norms))

        def noise_only_step():
            empty = [ops.zeros((0,) + tuple(v.shape), v.dtype) for v in variables]
            with torch.no_grad():
                grads, _ = clip_and_noise(empty, seed=noise_seed, **agg)
                optimizer.apply(grads, variables)

        return step, noise_only_step, lambda: None
    if name != "jax":
        raise NotImplementedError(f"train_dp_sgd supports the tensorflow, jax and torch backends, not {name!r}")
    import jax

    per_example = _jax_per_example(model, loss_fn)

    def pure(tv, nt, opt, seed_state, xb, yb, mask):
        pe = per_example(tv, nt, xb, yb)
        pe = [g * ops.reshape(mask, (-1,) + (1,) * (len(g.shape) - 1)) for g in pe]  # padding: zero gradient
        with keras.StatelessScope(state_mapping=[(noise_seed.state, seed_state)]) as scope:
            grads, norms = clip_and_noise(pe, seed=noise_seed, **agg)
        seed_state = scope.get_current_value(noise_seed.state)
        tv, opt = optimizer.stateless_apply(opt, grads, tv)
        return tv, opt, seed_state, ops.sum(norms * mask) / ops.maximum(ops.sum(mask), 1.0)

    jitted = jax.jit(pure)
    state = {"tv": [v.value for v in variables], "opt": [v.value for v in optimizer.variables]}
    nt = [v.value for v in model.non_trainable_variables]
    bucket = max(8, expected_batch_size // 4)

    def run(xb, yb, k):
        size = max(bucket, -(-k // bucket) * bucket)
        xp = np.zeros((size,) + tuple(example_shape), "float32")
        yp = np.zeros((size,), "int32")
        xp[:k], yp[:k] = xb[:k], yb[:k]
        mask = (np.arange(size) < k).astype("float32")
        state["tv"], state["opt"], seed_state, mean = jitted(
            state["tv"], nt, state["opt"], noise_seed.state.value, xp, yp, mask
        )
        noise_seed.state.assign(seed_state)
        return mean

    def finish():
        for v, value in zip(variables, state["tv"]):
            v.assign(value)
        for v, value in zip(optimizer.variables, state["opt"]):
            v.assign(value)

    def noise_only_step():
        run(np.zeros((0,) + tuple(example_shape), "float32"), np.zeros((0,), "int32"), 0)

    return (lambda xb, yb: run(xb, yb, len(xb))), noise_only_step, finish


def secure_uniform(n: int) -> np.ndarray:
    """``n`` uniform numbers in [0, 1) from the operating system's CSPRNG (:func:`os.urandom`).

    Each number is the top 53 bits of 8 random bytes times 2**-53, so every double of the grid
    ``k / 2**53`` is equally likely.  Nothing is seeded: two calls never repeat.  Used for DP-SGD's
    Poisson sampling in :func:`train_dp_sgd` with ``secure=True``.
    """
    n = int(n)
    if n < 0:
        raise ValueError(f"n must be >= 0, got {n}")
    words = np.frombuffer(os.urandom(8 * n), dtype=np.uint64)
    return (words >> np.uint64(11)).astype(np.float64) * 2.0**-53


def dp_epsilon(
    noise_multiplier: float, sampling_probability: float, steps: int, delta: float, *, accountant: str = "rdp"
) -> float:
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
        dp_event.PoissonSampledDpEvent(sampling_probability, dp_event.GaussianDpEvent(noise_multiplier)), int(steps)
    )
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


def noise_for_epsilon(
    target_epsilon: float,
    sampling_probability: float,
    steps: int,
    delta: float,
    *,
    accountant: str = "rdp",
    tol: float = 1e-3,
) -> float:
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
