"""Checking and normalising import rows by column position, one compiled parser per file header.

A parser is made once per file from its header (``child_parser``, ``involvement_parser``): it
knows where each column is, so a row is checked straight from the CSV reader's list of fields,
without a dictionary per row, and gives the stored columns as a tuple in ``CHILD_COLUMNS`` or
``INVOLVEMENT_COLUMNS`` order. Values that repeat from row to row (names, dates, postcodes,
organisations) are remembered (``memo``); NHS numbers and UPNs, which do not repeat, are checked
by a fast path for the usual form, and anything else goes through ``federation.identity``, so
every fault is reported with the same field and reason as there.

The checks and their order are those of ``docs/import-format.md``: the first fault of a row is
raised as ``FieldError`` naming the field.
"""

from __future__ import annotations

import json
import operator
import re
from collections.abc import Callable, Sequence
from typing import Any, TypeVar

from federation import identity
from federation.errors import FieldError

T = TypeVar("T")
Parser = Callable[[Sequence[str]], tuple[Any, ...]]
"""A row's fields to its stored columns; raises ``FieldError``. The fields are padded to the
header's width and followed by one empty field (``ABSENT``, where a column not in the header is
read from)."""
ABSENT = -1

CHILD_REQUIRED = ("record_id", "given_name", "family_name", "date_of_birth")
INVOLVEMENT_REQUIRED = (
    "record_id", "child_record_id", "organisation", "service_category",
    "practitioner_name", "practitioner_role",
)
_TRUE = {"1", "true", "yes", "y"}
_FALSE = {"", "0", "false", "no", "n"}
FLAGS = {**dict.fromkeys(_TRUE, 1), **dict.fromkeys(_FALSE, 0)}
_PHONE = re.compile(r"[0-9 +()-]*")
_MEMO_LIMIT = 200_000
"""Most distinct values each memo keeps (then it starts again): bounded memory."""
_MISSING: Any = object()


def flag(value: str, name: str) -> int:
    """A true/false column as 1 or 0."""
    found = FLAGS.get(value)
    if found is None:
        found = FLAGS.get(value.strip().casefold())
    if found is None:
        raise FieldError(name, f"expected true/false (or 1/0, yes/no), got {value!r}")
    return found


def memo(function: Callable[[str], T]) -> Callable[[str], T]:
    """``function`` (pure, of one string) remembering its results: names, dates and postcodes
    repeat from row to row, so most rows of a large file cost a dictionary look-up each. Errors
    are not remembered (they are raised again, with the same message)."""
    seen: dict[str, T] = {}

    def remembered(value: str) -> T:
        found = seen.get(value, _MISSING)
        if found is _MISSING:
            if len(seen) >= _MEMO_LIMIT:
                seen.clear()
            found = seen[value] = function(value)
        return found  # type: ignore[no-any-return]

    return remembered


def _iso_date(field_name: str) -> Callable[[str], str]:
    """A memo of a date field's check, giving ``YYYY-MM-DD`` (which also orders dates)."""
    def checked(value: str) -> str:
        return identity.parse_date(value, field_name).isoformat()
    return memo(checked)


name = memo(identity.normalise_name)
child_date = _iso_date("date_of_birth")
start_date = _iso_date("start_date")
end_date = _iso_date("end_date")
postcode = memo(identity.normalise_postcode)
sex = memo(identity.normalise_sex)


def nhs_number(value: str) -> str:
    """``identity.validate_nhs_number``, with a fast path for ten plain digits (0.6 against 4.0 µs
    a row; ``tests/test_importrows.py`` holds the two to the same outcome for any text)."""
    if len(value) == 10 and value.isdigit() and value.isascii():
        b = value.encode()
        total = (10 * b[0] + 9 * b[1] + 8 * b[2] + 7 * b[3] + 6 * b[4] + 5 * b[5] + 4 * b[6]
                 + 3 * b[7] + 2 * b[8] - 48 * 54)
        check = 11 - total % 11
        if check == 11:
            check = 0
        if check == b[9] - 48 and value != value[0] * 10:
            return value
    return identity.validate_nhs_number(value)


_UPN_VALUES = {**{str(d): d for d in range(10)}, **{c: i for i, c in enumerate(identity.UPN_LETTERS)}}
_UPN = re.compile(rf"[{identity.UPN_LETTERS}][0-9]{{11}}[0-9{identity.UPN_LETTERS}]")


def upn(value: str) -> str:
    """``identity.validate_upn``, with a fast path for an upper-case UPN without spaces (1.0
    against 2.8 µs a row; held to the same outcome as it by ``tests/test_importrows.py``)."""
    if _UPN.fullmatch(value):
        v = _UPN_VALUES
        total = (2 * v[value[1]] + 3 * v[value[2]] + 4 * v[value[3]] + 5 * v[value[4]] + 6 * v[value[5]]
                 + 7 * v[value[6]] + 8 * v[value[7]] + 9 * v[value[8]] + 10 * v[value[9]]
                 + 11 * v[value[10]] + 12 * v[value[11]] + 13 * v[value[12]])
        if value[0] == identity.UPN_LETTERS[total % 23]:
            return value
    return identity.validate_upn(value)


def child_parser(header: Sequence[str]) -> Parser:
    """The parser of children.csv rows under ``header`` (which holds every required column)."""
    at = {c: header.index(c) if c in header else ABSENT for c in (
        *CHILD_REQUIRED, "middle_names", "other_names", "nhs_number", "upn", "sex", "postcode", "shielded")}
    record_at, given_at, family_at, dob_at = (at[c] for c in CHILD_REQUIRED)
    middle_at, others_at, nhs_at, upn_at, sex_at, postcode_at, shielded_at = (at[c] for c in (
        "middle_names", "other_names", "nhs_number", "upn", "sex", "postcode", "shielded"))
    required = tuple(zip(CHILD_REQUIRED, (record_at, given_at, family_at, dob_at), strict=True))
    flags = FLAGS

    def parse(fields: Sequence[str]) -> tuple[Any, ...]:
        for column, place in required:
            if not fields[place] or fields[place].isspace():
                raise FieldError(column, "is required")
        given_raw, family_raw = fields[given_at], fields[family_at]
        given, family = name(given_raw), name(family_raw)
        if not given:
            raise FieldError("given_name", f"expected letters, got {given_raw!r}")
        if not family:
            raise FieldError("family_name", f"expected letters, got {family_raw!r}")
        middle = ""
        if middle_raw := fields[middle_at]:
            middle = name(middle_raw)
            if not middle and middle_raw.strip():
                raise FieldError("middle_names", f"expected letters, got {middle_raw!r}")
        other_names = "[]"
        if others_raw := fields[others_at]:
            others = [n for n in (name(alias) for alias in others_raw.split(";") if alias) if n]
            if others:
                other_names = json.dumps(others)
        nhs, pupil = fields[nhs_at].strip(), fields[upn_at].strip()
        nhs_checked = nhs_number(nhs) if nhs else None
        upn_checked = upn(pupil) if pupil else None
        dob = child_date(fields[dob_at])
        sex_raw, postcode_raw = fields[sex_at].strip(), fields[postcode_at].strip()
        sex_checked = sex(sex_raw) if sex_raw else None
        postcode_checked = postcode(postcode_raw) if postcode_raw else None
        shielded_raw = fields[shielded_at]
        shielded = flags.get(shielded_raw, -1)
        if shielded < 0:
            shielded = flag(shielded_raw, "shielded")
        return (fields[record_at].strip(), nhs_checked, upn_checked, given, family, other_names, dob,
                sex_checked, postcode_checked, shielded, middle)

    return parse


_INVOLVEMENT_FLAGS = ("lead", "sensitive", "consent", "notify_on_access", "assessment")


def _remember(seen: dict[Any, T], key: Any, value: T) -> T:
    if len(seen) >= _MEMO_LIMIT:
        seen.clear()
    seen[key] = value
    return value


def involvement_parser(header: Sequence[str], *, unsafe_http_webhooks: bool = False) -> Parser:
    """The parser of involvements.csv rows under ``header`` (which holds every required column).

    A ``notify_url`` must be https:// unless ``unsafe_http_webhooks`` allows http://.

    The columns that describe the practitioner (organisation to role), the two dates and
    the five flags repeat from row to row, so each group is checked once per distinct value and
    remembered (a fault is raised again, never remembered)."""
    at = {c: header.index(c) if c in header else ABSENT for c in (
        *INVOLVEMENT_REQUIRED, "phone", "secure_email", "start_date", "end_date", *_INVOLVEMENT_FLAGS,
        "notify_url")}
    ids = operator.itemgetter(at["record_id"], at["child_record_id"])
    practitioner = operator.itemgetter(*(at[c] for c in INVOLVEMENT_REQUIRED[2:]))
    phone_at, email_at = at["phone"], at["secure_email"]
    dates = operator.itemgetter(at["start_date"], at["end_date"])
    flag_values = operator.itemgetter(*(at[c] for c in _INVOLVEMENT_FLAGS))
    url_at = at["notify_url"]
    practitioners: dict[tuple[str, ...], tuple[Any, ...]] = {}
    periods: dict[tuple[str, ...], tuple[str | None, str | None]] = {}
    flag_sets: dict[tuple[str, ...], tuple[int, ...]] = {}

    def parse(fields: Sequence[str]) -> tuple[Any, ...]:
        record_id, child_id = ids(fields)
        if not record_id or record_id.isspace():
            raise FieldError("record_id", "is required")
        if not child_id or child_id.isspace():
            raise FieldError("child_record_id", "is required")
        raw = practitioner(fields)
        who = practitioners.get(raw)
        if who is None:
            who = _remember(practitioners, raw, _practitioner(raw))
        phone, email = _phone(fields[phone_at]), _email(fields[email_at])
        raw = dates(fields)
        period = periods.get(raw)
        if period is None:
            period = _remember(periods, raw, _period(raw))
        raw = flag_values(fields)
        flagged = flag_sets.get(raw)
        if flagged is None:
            flagged = _remember(flag_sets, raw, _flags(raw))
        url = fields[url_at].strip() or None
        if url is not None:
            if not url.startswith(("https://", "http://")):
                raise FieldError("notify_url", f"expected an https:// URL, got {url!r}")
            if url.startswith("http://") and not unsafe_http_webhooks:
                # Closed by default: a message about a child never travels in clear text.
                raise FieldError("notify_url", "expected an https:// URL (http:// only with the node's "
                                 "unsafe_http_webhooks, development only)")
        elif flagged[3]:
            raise FieldError("notify_url", "is required when notify_on_access is true")
        return (record_id.strip(), child_id.strip(), *who, phone, email, *period, *flagged, url)

    return parse


def _practitioner(raw: tuple[str, ...]) -> tuple[str, ...]:
    """Organisation, service category, practitioner's name and role (all required), checked and
    normalised."""
    for column, value in zip(INVOLVEMENT_REQUIRED[2:], raw, strict=True):
        if not value.strip():
            raise FieldError(column, "is required")
    organisation, service, practitioner, role = raw
    return (organisation.strip(), service.strip().casefold().replace(" ", "_"), practitioner.strip(),
            role.strip())


def _phone(value: str) -> str | None:
    phone = value.strip() or None
    if phone is not None and not (_PHONE.fullmatch(phone) and phone.isascii()):
        raise FieldError("phone", f"expected a telephone number, got {phone!r}")
    return phone


@memo
def _email(value: str) -> str | None:
    email = value.strip() or None
    if email is not None and (email.count("@") != 1 or " " in email):
        raise FieldError("secure_email", f"expected an email address, got {email!r}")
    return email


def _period(raw: tuple[str, ...]) -> tuple[str | None, str | None]:
    """Start and end dates (optional; the end not before the start)."""
    start, end = raw[0].strip(), raw[1].strip()
    started = start_date(start) if start else None
    ended = end_date(end) if end else None
    if started and ended and ended < started:
        raise FieldError("end_date", "must not be before start_date")
    return started, ended


def _flags(raw: tuple[str, ...]) -> tuple[int, ...]:
    return tuple(flag(value, column) for column, value in zip(_INVOLVEMENT_FLAGS, raw, strict=True))
