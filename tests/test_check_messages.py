"""The check messages: one door per message, every bad field named, unknown fields kept; and the
node refusing check envelopes that are replayed, misaddressed or of the wrong type."""

from __future__ import annotations

import contextlib
import uuid
from datetime import UTC, datetime
from typing import Any

import aiohttp
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from federation.checks import (
    CHECK_POLL_TYPE,
    CHECK_REQUEST_TYPE,
    CheckInformation,
    CheckOutcome,
    CheckPoll,
    CheckRequest,
    CheckState,
)
from federation.errors import ValidationError
from tests.checkfed import LEO, PURPOSE, check_federation
from tests.conftest import Federation
from trust import envelope
from trust import keys as keyfiles

__all__ = ["check_federation"]

PRACTITIONER = {"iss": "alpha-idp", "sub": "sam@alpha", "name": "Sam Patel", "org": "alpha team",
                "role": "practitioner", "authority": "alpha", "amr": ["pwd", "otp"]}


def request_wire(**changes: Any) -> dict[str, Any]:
    wire = {"v": 1, "check_id": str(uuid.uuid4()), "search_id": str(uuid.uuid4()), "authority": "alpha",
            "identity": LEO, "purpose": PURPOSE, "practitioner": PRACTITIONER,
            "contact": {"email": "sam@example.gov.uk"}}
    wire.update(changes)
    return {k: v for k, v in wire.items() if v is not None}


@pytest.mark.parametrize(("changes", "fields"), [
    ({"check_id": "x"}, ["check_id"]),
    ({"search_id": None}, ["search_id"]),
    ({"identity": {**LEO, "date_of_birth": "31/02/2015"}}, ["identity.date_of_birth"]),
    ({"contact": {}}, ["contact"]),
    ({"contact": {"email": "nope"}}, ["contact.email"]),
    ({"practitioner": {"sub": "x"}}, ["practitioner.iss", "practitioner.org", "practitioner.role"]),
    ({"purpose": 7, "authority": None}, ["authority", "purpose"]),
])
def test_a_bad_check_request_names_every_field_at_fault(changes: dict[str, Any], fields: list[str]) -> None:
    """Proves CheckRequest.from_wire raises one ValidationError naming each wrong field."""
    with pytest.raises(ValidationError) as caught:
        CheckRequest.from_wire(request_wire(**changes))
    assert sorted(fields) == sorted(e.field for e in caught.value.errors)


def test_messages_round_trip_and_keep_unknown_fields() -> None:
    """Proves to_wire/from_wire round-trip, and a newer broker's extra field survives."""
    wire = request_wire(newer_field={"a": 1})
    request = CheckRequest.from_wire(wire)
    assert request == CheckRequest.from_wire(request.to_wire())
    assert {"a": 1} == request.to_wire()["newer_field"]
    outcome = CheckOutcome(request.check_id, CheckState.MORE_INFORMATION, "2030-01-01T00:00:00+00:00",
                           "Which school?")
    assert outcome == CheckOutcome.from_wire(outcome.to_wire())
    with pytest.raises(ValidationError):
        CheckOutcome.from_wire({**outcome.to_wire(), "state": "maybe"})
    with pytest.raises(ValidationError):
        CheckPoll.from_wire({"check_id": request.check_id, "disclose": "yes"})


def broker_signed(fed: Federation, typ: str, check: dict[str, Any]) -> str:
    key = keyfiles.load_private(fed.folder / "keys" / "broker.pem")
    now = int(datetime.now(UTC).timestamp())
    return envelope.sign({"v": 1, "iss": "broker", "aud": "test-federation", "iat": now, "exp": now + 60,
                          "jti": str(uuid.uuid4()), "check": check}, key, typ)


async def post(fed: Federation, path: str, token: str) -> tuple[int, dict[str, Any]]:
    async with aiohttp.ClientSession() as session, session.post(
            fed.node_url("alpha") + path, json={"v": 1, "check": token}) as response:
        return response.status, await response.json(content_type=None)


async def test_the_node_refuses_bad_check_envelopes(check_federation: Federation) -> None:
    """Proves the node refuses a check for another authority, a replayed envelope, a query
    envelope posted as a check, a poll for a check it never had, and a practitioner without
    multi-factor; and accepts a good one."""
    fed = check_federation
    good = broker_signed(fed, CHECK_REQUEST_TYPE, request_wire())
    cases = {
        "wrong-authority": broker_signed(fed, CHECK_REQUEST_TYPE, request_wire(authority="beta")),
        "untrusted-check": broker_signed(fed, envelope.QUERY_TYPE, request_wire()),
        "policy-mfa": broker_signed(fed, CHECK_REQUEST_TYPE,
                                    request_wire(practitioner={**PRACTITIONER, "amr": ["pwd"]})),
    }
    found = {}
    for kind, token in cases.items():
        status, body = await post(fed, "/v1/checks", token)
        found[kind] = (status, body["type"].rsplit("/", 1)[-1])
    assert {"wrong-authority": (403, "wrong-authority"), "untrusted-check": (401, "untrusted-check"),
            "policy-mfa": (403, "policy-mfa")} == found
    assert 200 == (await post(fed, "/v1/checks", good))[0]
    status, body = await post(fed, "/v1/checks", good)
    assert (409, "replayed-check") == (status, body["type"].rsplit("/", 1)[-1])
    unknown = str(uuid.uuid4())
    poll = broker_signed(fed, CHECK_POLL_TYPE, {"check_id": unknown, "disclose": True})
    status, body = await post(fed, f"/v1/checks/{unknown}/outcome", poll)
    assert (404, "unknown-check") == (status, body["type"].rsplit("/", 1)[-1])


JSON = st.recursive(st.none() | st.booleans() | st.integers() | st.text(max_size=12),
                    lambda inner: st.lists(inner, max_size=3) | st.dictionaries(st.text(max_size=8), inner,
                                                                               max_size=4),
                    max_leaves=12)
FIELDS = st.fixed_dictionaries({}, optional={k: JSON for k in (
    "check_id", "search_id", "authority", "identity", "purpose", "practitioner", "contact", "state",
    "expires", "message", "disclosure", "disclose")})


@settings(max_examples=300, deadline=None)
@given(FIELDS | JSON)
def test_any_json_is_a_message_or_one_validation_error(data: Any) -> None:
    """Proves every from_wire door turns any JSON value into a message or a ValidationError,
    never another exception (the node and the broker catch only that one)."""
    for door in (CheckRequest.from_wire, CheckInformation.from_wire, CheckPoll.from_wire,
                 CheckOutcome.from_wire):
        with contextlib.suppress(ValidationError):
            door(data)


@pytest.mark.parametrize("disclosure", [
    {"status": "match", "involvements": [1]}, {"status": "match", "involvements": {"a": 1}},
    {"status": "possible_match"}, {"status": "shielded", "involvements": [{"organisation": "x"}]},
    {"status": "match", "involvements": None, "contact": 5}, "match",
])
def test_a_malformed_disclosure_is_one_validation_error(disclosure: Any) -> None:
    """Proves a malformed disclosure from a node is refused as one ValidationError naming the
    disclosure, or read safely (involvements of a non-match are dropped), never a crash."""
    wire = {"check_id": str(uuid.uuid4()), "state": "same_child", "expires": "2030-01-01",
            "disclosure": disclosure}
    try:
        CheckOutcome.from_wire(wire)
    except ValidationError as exc:
        assert all(e.field.startswith("disclosure") for e in exc.errors)
