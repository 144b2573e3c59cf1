"""Checks end to end over real HTTP: a practitioner asks, an officer decides, the broker discloses.

Real broker, real nodes with their staff listeners, real SQLite files and audit logs on loopback.
"""

from __future__ import annotations

import asyncio
from datetime import UTC, datetime, timedelta

from node.checks import DESK
from tests.checkfed import (
    LEO,
    MAYA,
    NOOR,
    PURPOSE,
    StaffClient,
    api,
    ask,
    check_federation,
    officer_token,
    possible_match,
    staff_url,
)
from tests.conftest import LEO_NHS, Federation
from tests.test_audit import entries

__all__ = ["check_federation"]


async def decide(fed: Federation, check_id: str, decision: str, message: str = "",
                 authority: str = "alpha") -> tuple[int, str]:
    officer = StaffClient(staff_url(fed, authority))
    try:
        assert 303 == await officer.sign_in(officer_token(fed, authority))
        status, page = await officer.get(f"/checks/{check_id}")
        assert 200 == status, page
        status, page, _ = await officer.post(f"/checks/{check_id}/decision",
                                             {"decision": decision, "message": message})
        return status, page
    finally:
        await officer.close()


async def wait_for_state(fed: Federation, check_id: str, state: str) -> dict[str, object]:
    for _ in range(100):
        status, body = await api(fed, "GET", "/v1/checks")
        assert 200 == status
        found = next(c for c in body["checks"] if c["check_id"] == check_id)
        if found["state"] == state:
            return found
        await asyncio.sleep(0.05)
    raise AssertionError(f"check {check_id} never reached {state}")


async def test_a_confirmed_check_discloses_exactly_what_a_match_would(check_federation: Federation) -> None:
    """Proves the loop: possible_match, a check asked of alpha alone, the officer sees the typed
    identity beside both candidate records and confirms one; the practitioner then gets exactly
    the disclosure a direct match on that record gives (ended involvement left out)."""
    fed = check_federation
    search_id = await possible_match(fed, LEO)
    status, body = await ask(fed, search_id, LEO)
    assert 201 == status, body
    check_id = body["check"]["check_id"]
    assert "pending" == body["check"]["state"]

    officer = StaffClient(staff_url(fed, "alpha"))
    try:
        assert 303 == await officer.sign_in(officer_token(fed, "alpha"))
        status, queue = await officer.get("/checks")
        assert 200 == status and f"/checks/{check_id}" in queue
        status, page = await officer.get(f"/checks/{check_id}")
        assert 200 == status
        assert "Record L-2" in page and "Record L-3" in page and "Sam Patel" in page
        status, _, location = await officer.post(f"/checks/{check_id}/decision", {"decision": "same:L-2"})
        assert (303, f"/checks/{check_id}") == (status, location)
    finally:
        await officer.close()

    await wait_for_state(fed, check_id, "same_child")
    status, body = await api(fed, "GET", f"/v1/checks/{check_id}")
    assert 200 == status
    by_nhs = {"nhs_number": LEO_NHS, "date_of_birth": LEO["date_of_birth"]}
    status, direct = await fed.search({"identity": by_nhs, "purpose": PURPOSE})
    alpha = next(r for r in direct["results"] if r["authority"]["id"] == "alpha")
    assert "match" == alpha["status"]
    expected = {k: alpha[k] for k in ("status", "involvements", "assessment")}
    assert expected == body["check"]["disclosure"]
    shown = body["check"]["disclosure"]["involvements"]
    assert ["Pat Jones", "Sue Brown"] == [i["practitioner_name"] for i in shown]


async def test_not_this_child_tells_the_practitioner_and_discloses_nothing(
        check_federation: Federation) -> None:
    """Proves a declined check reaches the practitioner as not_this_child, with no disclosure."""
    fed = check_federation
    search_id = await possible_match(fed, LEO)
    _, body = await ask(fed, search_id, LEO)
    check_id = body["check"]["check_id"]
    status, _ = await decide(fed, check_id, "not_this_child")
    assert 303 == status
    await wait_for_state(fed, check_id, "not_this_child")
    status, body = await api(fed, "GET", f"/v1/checks/{check_id}")
    assert (200, "not_this_child", None) == (status, body["check"]["state"], body["check"].get("disclosure"))


async def test_more_information_once_then_confirmed(check_federation: Federation) -> None:
    """Proves an officer can ask for more information with a message, the practitioner answers
    once (a second answer is refused), the officer sees it and confirms."""
    fed = check_federation
    search_id = await possible_match(fed, LEO)
    _, body = await ask(fed, search_id, LEO)
    check_id = body["check"]["check_id"]
    await decide(fed, check_id, "more_information", "Which school does he attend?")
    found = await wait_for_state(fed, check_id, "more_information")
    assert ("Which school does he attend?", True) == (found["message"], found["can_add_information"])
    status, body = await api(fed, "POST", f"/v1/checks/{check_id}/information",
                             {"identity": {"postcode": "LS6 1AA"}})
    assert (200, "pending") == (status, body["check"]["state"]), body
    status, body = await api(fed, "POST", f"/v1/checks/{check_id}/information",
                             {"identity": {"postcode": "LS6 1AA"}})
    assert 409 == status
    officer = StaffClient(staff_url(fed, "alpha"))
    try:
        await officer.sign_in(officer_token(fed, "alpha"))
        _, page = await officer.get(f"/checks/{check_id}")
        assert "LS6 1AA" in page and "Need more information" not in page
        status, _, _ = await officer.post(f"/checks/{check_id}/decision", {"decision": "same:L-2"})
        assert 303 == status
    finally:
        await officer.close()
    await wait_for_state(fed, check_id, "same_child")
    _, body = await api(fed, "GET", f"/v1/checks/{check_id}")
    assert "match" == body["check"]["disclosure"]["status"]


async def test_a_check_expires_and_is_deleted(check_federation: Federation) -> None:
    """Proves a check past the policy's expiry (14 days by default) is deleted at the node, logged,
    and shown to the practitioner as expired."""
    fed = check_federation
    search_id = await possible_match(fed, LEO)
    _, body = await ask(fed, search_id, LEO)
    check_id = body["check"]["check_id"]
    expires = datetime.fromisoformat(body["check"]["expires"])
    assert 14 == round((expires - datetime.now(UTC)) / timedelta(days=1))
    desk = fed.runners["alpha"].app[DESK]
    assert [check_id] == await desk.sweep(datetime.now(UTC) + timedelta(days=15))
    assert await desk.get(check_id) is None
    await wait_for_state(fed, check_id, "expired")
    node_steps = [(e["type"], e.get("state")) for e in await entries(fed, "alpha")
                  if e.get("check_id") == check_id]
    broker_steps = [e["type"] for e in await entries(fed, "broker") if e.get("check_id") == check_id]
    assert ("check-expired", "pending") == node_steps[-1]
    assert "check-expired" in broker_steps


async def test_a_shielded_child_confirmed_shows_only_the_signposting_contact(
        check_federation: Federation) -> None:
    """Proves confirming a shielded record gives the practitioner what a match would: shielded,
    with alpha's signposting contact and no involvement. (The search is possible_match between two
    unshielded twins; the officer knows the child is the shielded record born the same year.)"""
    fed = check_federation
    _, answer = await fed.search({"identity": MAYA, "purpose": PURPOSE})
    alpha = next(r for r in answer["results"] if r["authority"]["id"] == "alpha")
    assert "possible_match" == alpha["status"], alpha
    search_id = answer["query_id"]
    _, body = await ask(fed, search_id, MAYA)
    check_id = body["check"]["check_id"]
    await decide(fed, check_id, "same:M-1")
    await wait_for_state(fed, check_id, "same_child")
    _, body = await api(fed, "GET", f"/v1/checks/{check_id}")
    assert {"status": "shielded", "contact": {"name": "alpha signposting team", "phone": "0300 555 0100",
                                              "secure_email": "signposting@alpha.example.gov.uk",
                                              "organisation": "Alpha"}} == body["check"]["disclosure"]


async def test_a_sensitive_only_child_stays_hidden_after_confirmation(check_federation: Federation) -> None:
    """Proves a confirmed record whose only involvement is a sensitive service without consent
    discloses nothing: no_match, as a match would, with no hint of the service."""
    fed = check_federation
    search_id = await possible_match(fed, NOOR)
    _, body = await ask(fed, search_id, NOOR)
    check_id = body["check"]["check_id"]
    await decide(fed, check_id, "same:N-1")
    await wait_for_state(fed, check_id, "same_child")
    _, body = await api(fed, "GET", f"/v1/checks/{check_id}")
    assert {"status": "no_match"} == body["check"]["disclosure"]
    assert body["check"]["lead_informed"] is False





async def test_an_officer_of_another_authority_cannot_see_or_decide(check_federation: Federation) -> None:
    """Proves beta's signposting officer cannot sign in to alpha's staff pages (nor can a
    practitioner of alpha, nor a token meant for beta's pages), and that without a session neither
    the queue, a check nor a decision is reachable."""
    fed = check_federation
    search_id = await possible_match(fed, LEO)
    _, body = await ask(fed, search_id, LEO)
    check_id = body["check"]["check_id"]
    for token in (officer_token(fed, "beta", audience="alpha"),
                  officer_token(fed, "alpha", role="practitioner"),
                  officer_token(fed, "alpha", audience="beta"), officer_token(fed, "alpha", amr=("pwd",))):
        client = StaffClient(staff_url(fed, "alpha"))
        try:
            assert await client.sign_in(token) in (400, 403)
            pages = [(await client.get(path))[0] for path in ("/checks", f"/checks/{check_id}")]
            assert [303, 303] == pages
            status, _, _ = await client.post(f"/checks/{check_id}/decision", {"decision": "same:L-2"})
            assert 403 == status
        finally:
            await client.close()
    beta = StaffClient(staff_url(fed, "beta"))
    try:
        assert 303 == await beta.sign_in(officer_token(fed, "beta"))
        status, queue = await beta.get("/checks")
        assert 200 == status and check_id not in queue
        assert 404 == (await beta.get(f"/checks/{check_id}"))[0]
    finally:
        await beta.close()
    desk = fed.runners["alpha"].app[DESK]
    check = await desk.get(check_id)
    assert check is not None and "pending" == check.state.value


async def test_a_check_for_a_search_not_made_is_refused(check_federation: Federation) -> None:
    """Proves the broker refuses a check naming another practitioner's search, an authority that
    did not answer possible_match, or an identity other than the one searched; and names the
    field of a bad request."""
    fed = check_federation
    search_id = await possible_match(fed, LEO)
    other = fed.token(org="another team", authority="beta")
    status, body = await ask(fed, search_id, LEO, token=other)
    assert (403, "https://signpost.example/problems/not-your-search") == (status, body["type"])
    status, body = await ask(fed, search_id, LEO, authority="beta")
    assert (403, "https://signpost.example/problems/not-possible-match") == (status, body["type"])
    status, body = await ask(fed, search_id, {**LEO, "given_name": "Leon"})
    assert (403, "https://signpost.example/problems/not-searched-identity") == (status, body["type"])
    status, body = await api(fed, "POST", "/v1/checks", {"search_id": search_id, "authority": "alpha",
                                                          "identity": LEO, "purpose": PURPOSE,
                                                          "contact": {"email": "not an email"}})
    assert (400, ["contact.email"]) == (status, [e["field"] for e in body["errors"]])
    desk = fed.runners["alpha"].app[DESK]
    assert [] == await desk.queue()
