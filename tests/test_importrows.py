"""The import's row parsers (``node.importrows``) check exactly what ``federation.identity`` does:
the fast paths for NHS numbers and UPNs give the same value or the same fault for any text, and
a row's first fault is the one ``docs/import-format.md`` lists first, named by its field."""

from __future__ import annotations

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from federation import identity
from federation.errors import FieldError
from node import importrows
from tests.conftest import CHILD_HEADER, INVOLVEMENT_HEADER, child_row, involvement_row, years_ago


def _outcome(check: object, value: str) -> tuple[str, str]:
    try:
        return "ok", check(value)  # type: ignore[operator]
    except FieldError as exc:
        return exc.field, exc.message


DIGITS = st.text(alphabet="0123456789 -", min_size=8, max_size=12)
UPN_TEXT = st.text(alphabet="0123456789ABCDEFGHIJKLMNOPQRSTUVWXYZabc ", min_size=11, max_size=15)
UPN_DIGITS = st.from_regex(r"[0-9]{11}[0-9ABCDEFGHJKLMNPQRTUVWXYZ]", fullmatch=True)


@settings(max_examples=400)
@given(st.one_of(DIGITS, st.text(max_size=12)))
def test_nhs_numbers_as_identity_checks_them(value: str) -> None:
    value = value.strip()
    assert _outcome(importrows.nhs_number, value) == _outcome(identity.validate_nhs_number, value)


@pytest.mark.parametrize("value", ["9434765919", "9434765870", "943 476 5919", "1111111111", "9434765918",
                                   "943476591", "94347659190", "٩٤٣٤٧٦٥٩١٩"])
def test_nhs_number_cases(value: str) -> None:
    assert _outcome(importrows.nhs_number, value) == _outcome(identity.validate_nhs_number, value)


def _valid_upn(digits: str) -> str:
    return identity.upn_check_letter(digits) + digits


@settings(max_examples=400)
@given(st.one_of(UPN_TEXT, UPN_DIGITS.map(_valid_upn)))
def test_upns_as_identity_checks_them(value: str) -> None:
    value = value.strip()
    assert _outcome(importrows.upn, value) == _outcome(identity.validate_upn, value)


def _fields(header: list[str], row: dict[str, str]) -> list[str]:
    return [row[c] for c in header] + [""]


def test_a_child_row_by_position() -> None:
    parse = importrows.child_parser(CHILD_HEADER)
    row = child_row("C-1", " Zoë ", "O'Neill-Smith", years_ago(6), nhs_number="943 476 5919", sex="female",
                    postcode="ls8 2qr", shielded="Yes", other_names="Zoe Smith;;Jones")
    assert parse(_fields(CHILD_HEADER, row)) == (
        "C-1", "9434765919", None, "zoe", "oneill smith", '["zoe smith", "jones"]', years_ago(6), "F",
        "LS8 2QR", 1, "")


@pytest.mark.parametrize(("change", "field"), [
    ({"given_name": " "}, "given_name"),
    ({"given_name": "!!", "nhs_number": "1"}, "given_name"),
    ({"nhs_number": "1", "upn": "x"}, "nhs_number"),
    ({"upn": "x", "date_of_birth": "2020-13-01"}, "upn"),
    ({"date_of_birth": "2020-13-01", "sex": "q"}, "date_of_birth"),
    ({"sex": "q", "postcode": "nowhere"}, "sex"),
    ({"postcode": "nowhere", "shielded": "perhaps"}, "postcode"),
    ({"shielded": "perhaps"}, "shielded"),
])
def test_a_child_row_s_first_fault(change: dict[str, str], field: str) -> None:
    parse = importrows.child_parser(CHILD_HEADER)
    with pytest.raises(FieldError) as raised:
        parse(_fields(CHILD_HEADER, child_row("C-1", "Amara", "Okafor", years_ago(6), **change)))
    assert raised.value.field == field


def test_columns_not_in_the_header_are_empty() -> None:
    header = ["record_id", "given_name", "family_name", "date_of_birth"]
    parse = importrows.child_parser(header)
    assert parse(["C-1", "Amara", "Okafor", years_ago(6), ""]) == (
        "C-1", None, None, "amara", "okafor", "[]", years_ago(6), None, None, 0, "")
    short = ["I-1", "C-1", "Org", "Social Care", "Pat", "Worker", ""]
    assert importrows.involvement_parser(INVOLVEMENT_HEADER[:6])(short) == (
        "I-1", "C-1", "Org", "social_care", "Pat", "Worker", None, None, None, None, 0, 0, 0, 0, 0, None)


@pytest.mark.parametrize(("change", "field"), [
    ({"child_record_id": ""}, "child_record_id"),
    ({"practitioner_role": " ", "phone": "call me"}, "practitioner_role"),
    ({"phone": "call me", "secure_email": "nobody"}, "phone"),
    ({"secure_email": "a@b@c", "start_date": "soon"}, "secure_email"),
    ({"start_date": "soon"}, "start_date"),
    ({"start_date": years_ago(1), "end_date": years_ago(2), "lead": "maybe"}, "end_date"),
    ({"lead": "maybe", "notify_url": "ftp://x"}, "lead"),
    ({"notify_url": "ftp://x"}, "notify_url"),
    ({"notify_url": "http://example.org/hook"}, "notify_url"),
    ({"notify_on_access": "true"}, "notify_url"),
])
def test_an_involvement_row_s_first_fault(change: dict[str, str], field: str) -> None:
    parse = importrows.involvement_parser(INVOLVEMENT_HEADER)
    for _ in range(2):  # the second time from what was remembered: faults are not
        with pytest.raises(FieldError) as raised:
            parse(_fields(INVOLVEMENT_HEADER, involvement_row("I-1", "C-1", **change)))
        assert raised.value.field == field


def test_an_involvement_row_by_position() -> None:
    parse = importrows.involvement_parser(INVOLVEMENT_HEADER, unsafe_http_webhooks=True)
    row = involvement_row("I-1", "C-1", "Early Help", lead="Y", consent="1", notify_on_access="yes",
                          notify_url="http://example.org/hook", end_date=years_ago(0))
    for _ in range(2):
        assert parse(_fields(INVOLVEMENT_HEADER, row)) == (
            "I-1", "C-1", "Children's Social Care", "early_help", "Pat Jones", "Social Worker",
            "0113 496 0000", "pat.jones@example.gov.uk", years_ago(1), years_ago(0), 1, 0, 1, 1, 0,
            "http://example.org/hook")
