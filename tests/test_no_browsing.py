"""No browsing, end to end: every attempt to search without an accepted identity set, or without
the right to search, is refused by a real broker with a message naming the rule; the nodes refuse
rule-breaking queries even when a trusted broker signed them; a replayed query is refused."""

from __future__ import annotations

from datetime import UTC, date, datetime
from typing import Any

import aiohttp
import pytest

from tests.conftest import AMARA, AMARA_NHS, TODAY, Federation
from trust import envelope
from trust import keys as keyfiles

PURPOSE = "child_protection_enquiry"
DOB = AMARA["date_of_birth"]
MEDIATED = {"name": "Dr Ada Obi", "organisation": "Oak Surgery", "role": "GP", "phone": "0113 496 0001"}


def search(identity: dict[str, str], **extra: Any) -> dict[str, Any]:
    return {"identity": identity, "purpose": PURPOSE, **extra}


# name: (body, token role, expected status, the field the refusal names, words the message contains)
BROWSING = {
    "wildcard in the family name": (
        search({"given_name": "Amara", "family_name": "Ok*", "date_of_birth": DOB, "sex": "F"}),
        400, "identity.family_name", "wildcards are not allowed"),
    "percent wildcard in the given name": (
        search({"given_name": "A%", "family_name": "Okafor", "date_of_birth": DOB, "sex": "F"}),
        400, "identity.given_name", "wildcards are not allowed"),
    "one-letter given name": (
        search({"given_name": "A", "family_name": "Okafor", "date_of_birth": DOB, "sex": "F"}),
        400, "identity.given_name", "at least 2 letters"),
    "names without a date of birth": (
        search({"given_name": "Amara", "family_name": "Okafor", "sex": "F"}),
        400, "identity", "expected one of these sets"),
    "given name and date of birth only": (
        search({"given_name": "Amara", "date_of_birth": DOB, "sex": "F", "postcode": "LS1 4AB"}),
        400, "identity", "expected one of these sets"),
    "NHS number without date of birth": (
        search({"nhs_number": AMARA_NHS}), 400, "identity", "expected one of these sets"),
    "date of birth and sex only": (
        search({"date_of_birth": DOB, "sex": "F"}), 400, "identity", "expected one of these sets"),
    "date of birth in the future": (
        search({"nhs_number": AMARA_NHS, "date_of_birth": date(TODAY.year + 1, 1, 1).isoformat()}),
        400, "identity.date_of_birth", "must not be in the future"),
    "date of birth 25 years ago": (
        search({"nhs_number": AMARA_NHS, "date_of_birth": date(TODAY.year - 26, 1, 1).isoformat()}),
        400, "identity.date_of_birth", "must be less than 25 years ago"),
    "NHS number with a wrong check digit": (
        search({"nhs_number": "9434765918", "date_of_birth": DOB}),
        400, "identity.nhs_number", "check digit does not match"),
    "NHS number too short": (
        search({"nhs_number": "943476591", "date_of_birth": DOB}),
        400, "identity.nhs_number", "expected 10 digits"),
    "UPN with a wrong check letter": (
        search({"upn": "C383123456789", "date_of_birth": DOB}), 400, "identity.upn", "check letter"),
    "UPN of the wrong shape": (
        search({"upn": "12345", "date_of_birth": DOB}), 400, "identity.upn", "13 characters"),
    "unknown purpose": (
        {"identity": AMARA, "purpose": "curiosity"}, 400, "purpose", "expected one of"),
    "no purpose": ({"identity": AMARA}, 400, "purpose", "is required"),
    "practitioner on behalf of someone": (
        search(AMARA, on_behalf_of=MEDIATED), 400, "on_behalf_of", "only a mediator"),
}


@pytest.mark.parametrize("name", BROWSING)
async def test_browsing_attempt_is_refused_naming_the_rule(federation: Federation, name: str) -> None:
    """The broker refuses the search with a problem document naming the field and the rule."""
    body, expected_status, field, words = BROWSING[name]
    status, problem = await federation.search(body)
    assert expected_status == status
    assert field in [e["field"] for e in problem["errors"]]
    assert words in problem["detail"]


# name: (role, amr, extra body, expected status, words in the detail)
WHO_MAY_SEARCH = {
    "auditor": ("auditor", ("pwd", "otp"), {}, 403, "role: 'auditor' may not search"),
    "operator": ("operator", ("pwd", "otp"), {}, 403, "role: 'operator' may not search"),
    "no multi-factor": ("practitioner", ("pwd",), {}, 403, "amr: searching needs multi-factor"),
    "mediator without the professional": ("mediator", ("pwd", "otp"), {}, 400,
                                          "on_behalf_of: a mediator must name the professional"),
    "mediator with a professional missing a phone": (
        "mediator", ("pwd", "otp"), {"on_behalf_of": {**MEDIATED, "phone": ""}}, 400,
        "on_behalf_of.phone: is required"),
}


@pytest.mark.parametrize("name", WHO_MAY_SEARCH)
async def test_only_authorised_people_may_search(federation: Federation, name: str) -> None:
    """Roles, multi-factor and mediation are checked before any node is asked."""
    role, amr, extra, expected_status, words = WHO_MAY_SEARCH[name]
    status, problem = await federation.search(search(AMARA, **extra), federation.token(role, amr=amr))
    assert expected_status == status
    assert words in problem["detail"]


async def test_mediated_search_is_answered(federation: Federation) -> None:
    """A mediator naming the professional gets the same answer a practitioner would."""
    status, answer = await federation.search(search(AMARA, on_behalf_of=MEDIATED),
                                             federation.token("mediator"))
    assert 200 == status
    assert {"alpha": "match", "beta": "match", "gamma": "no_match"} == {
        r["authority"]["id"]: r["status"] for r in answer["results"]}


def signed_query(federation: Federation, practitioner: dict[str, Any], *, purpose: str = PURPOSE,
                 on_behalf_of: dict[str, str] | None = None, jti: str | None = None) -> str:
    key = keyfiles.load_private(federation.folder / "keys" / "broker.pem")
    now = int(datetime.now(UTC).timestamp())
    claims = {"v": 1, "iss": "broker", "aud": "test-federation", "iat": now, "exp": now + 60,
              "jti": jti or f"q-{now}-{id(practitioner)}-{purpose}", "practitioner": practitioner,
              "purpose": purpose, "on_behalf_of": on_behalf_of, "identity": AMARA}
    return envelope.sign(claims, key, envelope.QUERY_TYPE)


async def post_query(federation: Federation, node_id: str, token: str) -> tuple[int, dict[str, Any]]:
    async with aiohttp.ClientSession() as session, session.post(
        federation.node_url(node_id) + "/v1/query", json={"v": 1, "query": token}
    ) as response:
        return response.status, await response.json(content_type=None)


PERSON = {"iss": "alpha-idp", "sub": "s", "org": "o", "name": "Sam", "authority": "alpha",
          "amr": ["pwd", "otp"]}
NODE_REFUSALS = {
    "auditor": ({**PERSON, "role": "auditor"}, PURPOSE, None, "policy-role"),
    "operator": ({**PERSON, "role": "operator"}, PURPOSE, None, "policy-role"),
    "unknown purpose": ({**PERSON, "role": "practitioner"}, "curiosity", None, "policy-purpose"),
    "mediator without professional": ({**PERSON, "role": "mediator"}, PURPOSE, None, "policy-mediation"),
    "no multi-factor": ({**PERSON, "role": "practitioner", "amr": ["pwd"]}, PURPOSE, None, "policy-mfa"),
}


@pytest.mark.parametrize("name", NODE_REFUSALS)
async def test_node_refuses_a_signed_query_that_breaks_a_rule(federation: Federation, name: str) -> None:
    """The node is the final word: a genuine broker signature does not override the rules."""
    practitioner, purpose, on_behalf_of, kind = NODE_REFUSALS[name]
    status, problem = await post_query(
        federation, "alpha",
        signed_query(federation, practitioner, purpose=purpose, on_behalf_of=on_behalf_of))
    assert 403 == status
    assert problem["type"].endswith(kind)


async def test_replayed_query_is_refused_by_every_node(federation: Federation) -> None:
    """A query id already answered is refused (409) by each node within its lifetime."""
    token = signed_query(federation, {**PERSON, "role": "practitioner"}, jti="replay-me")
    for node_id in ("alpha", "gamma"):
        first, _ = await post_query(federation, node_id, token)
        again, problem = await post_query(federation, node_id, token)
        assert (200, 409) == (first, again)
        assert "query replay-me was already answered" == problem["detail"]
