"""Identity of a child as Signpost exchanges it: validation and normalisation.

Everything here is pure: no I/O, no clock except where a caller passes ``today``. The broker
uses it to check a practitioner's request, the node uses it to normalise imported records, and
both must agree byte for byte, which is why it lives in ``federation``.
"""

from __future__ import annotations

import re
import unicodedata
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from datetime import date
from typing import Any

from federation.canonical import JsonObject
from federation.errors import FieldError, ValidationError

# --- NHS number -----------------------------------------------------------------------------

_NHS_WEIGHTS = (10, 9, 8, 7, 6, 5, 4, 3, 2)


def nhs_check_digit(first_nine: str) -> int | None:
    """The modulus 11 check digit for nine digits, or ``None`` when no digit can be valid."""
    total = sum(int(d) * w for d, w in zip(first_nine, _NHS_WEIGHTS, strict=True))
    check = 11 - total % 11
    if check == 11:
        return 0
    if check == 10:
        return None
    return check


def validate_nhs_number(raw: str, field_name: str = "nhs_number") -> str:
    """Return the NHS number as ten digits, or raise ``FieldError`` saying why it is not one."""
    digits = re.sub(r"[\s-]", "", raw)
    if not re.fullmatch(r"[0-9]{10}", digits):
        raise FieldError(field_name, f"expected 10 digits, got {len(digits)} characters")
    if len(set(digits)) == 1:
        raise FieldError(field_name, "expected an issued NHS number, got a repeated digit")
    check = nhs_check_digit(digits[:9])
    if check is None or check != int(digits[9]):
        raise FieldError(field_name, "check digit does not match (modulus 11)")
    return digits


# --- Unique Pupil Number --------------------------------------------------------------------

UPN_LETTERS = "ABCDEFGHJKLMNPQRTUVWXYZ"  # 23 letters: no I, O or S


def upn_check_letter(last_twelve: str) -> str:
    """The DfE check letter for the twelve characters after it (weights 2..13, modulus 23)."""
    total = 0
    for weight, char in enumerate(last_twelve, start=2):
        value = int(char) if char.isdigit() else UPN_LETTERS.index(char)
        total += value * weight
    return UPN_LETTERS[total % 23]


def validate_upn(raw: str, field_name: str = "upn") -> str:
    """Return the UPN upper-cased, or raise ``FieldError`` saying why it is not one.

    A UPN is a check letter, eleven digits, and a final digit (permanent) or letter (temporary).
    """
    upn = raw.strip().upper().replace(" ", "")
    if not re.fullmatch(rf"[{UPN_LETTERS}][0-9]{{11}}[0-9{UPN_LETTERS}]", upn):
        raise FieldError(
            field_name,
            "expected a check letter, 11 digits and a digit or letter (13 characters)",
        )
    expected = upn_check_letter(upn[1:])
    if upn[0] != expected:
        raise FieldError(field_name, f"check letter does not match (expected {expected})")
    return upn


# --- Dates ----------------------------------------------------------------------------------


def parse_date(raw: str, field_name: str) -> date:
    """Parse an ISO date ``YYYY-MM-DD`` (the only form on the wire and in imports)."""
    text = raw.strip()
    if not re.fullmatch(r"[0-9]{4}-[0-9]{2}-[0-9]{2}", text):
        raise FieldError(field_name, f"expected YYYY-MM-DD, got {text!r}")
    try:
        return date.fromisoformat(text)
    except ValueError:
        raise FieldError(field_name, f"expected a real calendar date, got {text!r}") from None


def age_on(date_of_birth: date, today: date) -> int:
    """Completed years of age on ``today``."""
    years = today.year - date_of_birth.year
    if (today.month, today.day) < (date_of_birth.month, date_of_birth.day):
        years -= 1
    return years


# --- Names ----------------------------------------------------------------------------------

_APOSTROPHES = "'’‘`´ʼ"
_NAME_ALLOWED = re.compile(r"^[a-z ]+$")


def fold_accents(text: str) -> str:
    """Remove diacritics: Zoë → Zoe, Siân → Sian, Climbié → Climbie."""
    decomposed = unicodedata.normalize("NFKD", text)
    stripped = "".join(c for c in decomposed if not unicodedata.combining(c))
    return stripped.replace("ß", "ss").replace("æ", "ae").replace("ø", "o").replace("ł", "l")


def normalise_name(raw: str) -> str:
    """Normalise a name for comparison: lower case, no accents, no apostrophes, single spaces.

    Hyphens become spaces so that Smith-Jones and Smith Jones agree; apostrophes vanish so that
    O'Neill and ONeill agree. Never raises; characters that are not letters become spaces.
    """
    text = fold_accents(raw).casefold()
    for mark in _APOSTROPHES:
        text = text.replace(mark, "")
    text = re.sub(r"[^a-z]+", " ", text)
    return " ".join(text.split())


def validate_name(raw: str, field_name: str) -> str:
    """A name as a practitioner may search for it: at least 2 letters, no wildcards."""
    if any(c in raw for c in "*?%_"):
        raise FieldError(field_name, "wildcards are not allowed; give the full name")
    name = normalise_name(raw)
    if len(name.replace(" ", "")) < 2:
        raise FieldError(field_name, f"expected a name of at least 2 letters, got {raw!r}")
    return name


# --- Postcodes ------------------------------------------------------------------------------

_POSTCODE = re.compile(r"^([A-Z]{1,2}\d[A-Z\d]?)(\d[A-Z]{2})$")


def normalise_postcode(raw: str, field_name: str = "postcode") -> str:
    """Return a UK postcode as ``OUTWARD INWARD`` in capitals, or raise ``FieldError``."""
    compact = re.sub(r"\s+", "", raw).upper()
    m = _POSTCODE.match(compact)
    if not m:
        raise FieldError(field_name, f"expected a UK postcode such as LS1 4AB, got {raw!r}")
    return f"{m.group(1)} {m.group(2)}"


# --- Sex ------------------------------------------------------------------------------------

_SEX = {"f": "F", "female": "F", "m": "M", "male": "M", "x": "X", "other": "X", "u": "U",
        "unknown": "U", "not known": "U"}


def normalise_sex(raw: str, field_name: str = "sex") -> str:
    """``F``, ``M``, ``X`` (other) or ``U`` (not known)."""
    value = _SEX.get(raw.strip().casefold())
    if value is None:
        raise FieldError(field_name, f"expected one of F, M, X, U, got {raw!r}")
    return value


# --- The identity a search carries ----------------------------------------------------------

IDENTITY_FIELDS = (
    "nhs_number", "upn", "given_name", "middle_names", "family_name", "date_of_birth", "sex",
    "postcode",
)
MIDDLE_NAME_ALIASES = ("middle_names", "middle_name")
"""Both spellings are accepted in a search identity; the normalised identity says ``middle_names``."""


@dataclass(frozen=True)
class Identity:
    """A normalised identity: every present field has passed validation."""

    nhs_number: str | None = None
    upn: str | None = None
    given_name: str | None = None
    middle_names: str | None = None  # never without a given name
    family_name: str | None = None
    date_of_birth: date | None = None
    sex: str | None = None
    postcode: str | None = None
    extra: Mapping[str, Any] = field(default_factory=dict, compare=False)

    def to_wire(self) -> JsonObject:
        """The identity as it travels: only present fields, dates as ISO strings."""
        out: JsonObject = {}
        for name in IDENTITY_FIELDS:
            value = getattr(self, name)
            if value is not None:
                out[name] = value.isoformat() if isinstance(value, date) else value
        return out

    def present(self) -> frozenset[str]:
        """Names of the fields that are present."""
        return frozenset(n for n in IDENTITY_FIELDS if getattr(self, n) is not None)


MAX_FIELD_CHARS = 100  # the longest identity value accepted (names included)


def _unprintable(text: str) -> str | None:
    """The first control character, surrogate, or line or paragraph separator in ``text``."""
    for char in text:
        if unicodedata.category(char) in ("Cc", "Cs", "Zl", "Zp"):
            return char
    return None


def parse_identity(data: Any, prefix: str = "identity", *, strict: bool = False) -> Identity:
    """Validate and normalise an identity object, collecting every field error.

    Every value must be a string of at most ``MAX_FIELD_CHARS`` characters without control
    characters (NUL included). Unknown fields are refused when ``strict`` (what a practitioner
    sends the broker); otherwise they are kept aside (``extra``), so that a newer broker's query
    still reaches an older node. A middle name may be sent as ``middle_names`` or
    ``middle_name`` (one of them, and only with a given name); it is kept as ``middle_names``.
    """
    if not isinstance(data, dict):
        raise ValidationError([FieldError(prefix, "expected an object")])
    errors: list[FieldError] = []
    values: dict[str, Any] = {}
    if strict:
        errors.extend(FieldError(f"{prefix}.{str(name)[:40]}", "is not an identity field")
                      for name in sorted(map(str, data))
                      if name not in IDENTITY_FIELDS and name not in MIDDLE_NAME_ALIASES)

    def take(name: str) -> str | None:
        raw = data.get(name)
        if raw is None or raw == "":
            return None
        if not isinstance(raw, str):
            errors.append(FieldError(f"{prefix}.{name}", f"expected a string, got {type(raw).__name__}"))
            return None
        if len(raw) > MAX_FIELD_CHARS:
            errors.append(FieldError(f"{prefix}.{name}",
                                     f"expected at most {MAX_FIELD_CHARS} characters, got {len(raw)}"))
            return None
        bad = _unprintable(raw)
        if bad is not None:
            errors.append(FieldError(f"{prefix}.{name}",
                                     f"expected printable text, got control character U+{ord(bad):04X}"))
            return None
        return raw

    checks: dict[str, Callable[[str, str], Any]] = {
        "nhs_number": lambda r, f: validate_nhs_number(r, f),
        "upn": lambda r, f: validate_upn(r, f),
        "given_name": lambda r, f: validate_name(r, f),
        "family_name": lambda r, f: validate_name(r, f),
        "date_of_birth": lambda r, f: parse_date(r, f),
        "sex": lambda r, f: normalise_sex(r, f),
        "postcode": lambda r, f: normalise_postcode(r, f),
    }
    for name, check in checks.items():
        raw = take(name)
        if raw is None:
            continue
        try:
            values[name] = check(raw, f"{prefix}.{name}")
        except FieldError as exc:
            errors.append(exc)
    middle = {name: raw for name in MIDDLE_NAME_ALIASES if (raw := take(name)) is not None}
    if len(middle) > 1:
        errors.append(FieldError(f"{prefix}.middle_name",
                                 "expected middle_name or middle_names, got both"))
    for name, raw in middle.items():
        field_name = f"{prefix}.{name}"
        if data.get("given_name") in (None, ""):
            errors.append(FieldError(field_name, "expected only together with given_name"))
            continue
        try:
            values["middle_names"] = validate_name(raw, field_name)
        except FieldError as exc:
            errors.append(exc)
    if errors:
        raise ValidationError(errors)
    known = set(IDENTITY_FIELDS) | set(MIDDLE_NAME_ALIASES)
    extra = {k: v for k, v in data.items() if k not in known}
    return Identity(**values, extra=extra)


# --- Minimum identity sets (no browsing) ----------------------------------------------------

MinimumSets = tuple[tuple[str, frozenset[str]], ...]
"""Accepted minimum identity sets: (label, the fields that must all be present)."""

MINIMUM_SETS: MinimumSets = (
    ("NHS number and date of birth", frozenset({"nhs_number", "date_of_birth"})),
    ("UPN and date of birth", frozenset({"upn", "date_of_birth"})),
    ("given name, family name and date of birth",
     frozenset({"given_name", "family_name", "date_of_birth"})),
)
"""The default sets; a trust list's policy may replace them. Both names and the date of birth
suffice without sex or postcode: a node answers such a search ``match`` only when the names are
rare enough that no child of those names born that day elsewhere in England is likely
(``node.matching.NATIONAL_POPULATION``), else ``possible_match`` (docs/policy.md)."""

# Fields that single out one child on their own terms: every set needs one of these groups, so
# that no set allows browsing by date of birth, sex or postcode alone.
_SINGLING_OUT = (frozenset({"nhs_number"}), frozenset({"upn"}),
                 frozenset({"given_name", "family_name"}))


def parse_minimum_sets(data: Any, prefix: str = "minimum_identity_sets") -> MinimumSets:
    """Minimum identity sets as a trust list's policy states them: a non-empty list of
    ``{"label": ..., "fields": [...]}``. Every set names known identity fields, includes the date
    of birth, and includes an identifier or both names. Raises ``FieldError`` naming the fault."""
    if not isinstance(data, list) or not data:
        raise FieldError(prefix, "expected a non-empty list of sets")
    sets: list[tuple[str, frozenset[str]]] = []
    for i, item in enumerate(data):
        where = f"{prefix}[{i}]"
        if not isinstance(item, dict):
            raise FieldError(where, "expected an object with label and fields")
        fields = item.get("fields")
        if not isinstance(fields, list) or not fields or not all(isinstance(f, str) for f in fields):
            raise FieldError(f"{where}.fields", "expected a non-empty list of field names")
        unknown = sorted(set(fields) - set(IDENTITY_FIELDS))
        if unknown:
            raise FieldError(f"{where}.fields",
                             f"expected fields from {', '.join(IDENTITY_FIELDS)}, got {unknown[0]!r}")
        required = frozenset(fields)
        if "date_of_birth" not in required:
            raise FieldError(f"{where}.fields", "expected date_of_birth in every set")
        if not any(group <= required for group in _SINGLING_OUT):
            raise FieldError(f"{where}.fields",
                             "expected nhs_number, upn, or both given_name and family_name")
        label = item.get("label", " + ".join(sorted(required)))
        if not isinstance(label, str) or not label.strip():
            raise FieldError(f"{where}.label", "expected a non-empty string")
        sets.append((label, required))
    return tuple(sets)


def minimum_sets_to_json(sets: MinimumSets) -> list[JsonObject]:
    """The form ``parse_minimum_sets`` reads."""
    return [{"label": label, "fields": sorted(fields)} for label, fields in sets]


MAX_AGE_YEARS = 25


def check_searchable(identity: Identity, today: date, prefix: str = "identity",
                     minimum_sets: MinimumSets = MINIMUM_SETS) -> None:
    """Refuse identities that would allow browsing: no minimum set, or an implausible birth date.

    ``minimum_sets`` are the trust list's (``Policy.minimum_identity_sets``); every accepted set
    includes the date of birth. Raises ``ValidationError`` naming the rule that was broken.
    """
    present = identity.present()
    if not any(required <= present for _, required in minimum_sets):
        sets = "; ".join(label for label, _ in minimum_sets)
        raise ValidationError([FieldError(prefix, f"expected one of these sets: {sets}")])
    dob = identity.date_of_birth
    if dob is None:  # every set parse_minimum_sets accepts includes it; fail closed regardless
        raise ValidationError([FieldError(f"{prefix}.date_of_birth", "is required")])
    if dob > today:
        raise ValidationError([FieldError(f"{prefix}.date_of_birth", "must not be in the future")])
    if age_on(dob, today) >= MAX_AGE_YEARS:
        raise ValidationError([FieldError(
            f"{prefix}.date_of_birth", f"must be less than {MAX_AGE_YEARS} years ago")])
