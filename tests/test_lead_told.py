"""Both sides told on a match: when a search discloses a match, the lead practitioner of the
child's current, disclosed involvements hears who asked (through the node's outbox, signed, at a
real webhook receiver on loopback), and the searcher is told the lead was informed."""

from __future__ import annotations

import asyncio
import base64
import dataclasses
import json
import re
from collections.abc import AsyncIterator
from datetime import UTC, datetime
from pathlib import Path

import pytest

from federation.tools.ports import free_port
from node.api import NODE
from node.outbox import NOTIFICATION_TYPE
from tests.checkfed import CONTACT, LEO, PURPOSE, api, ask, build_check_federation, possible_match
from tests.conftest import AMARA, AMARA_NHS, LEO_NHS, Federation, build_federation
from tests.test_audit import broker_signed_query, entries, post_query, run_cli
from tests.test_checks import decide, wait_for_state
from tests.test_notifications import Receiver
from tests.webfed import Browser, web_records
from trust import envelope
from trust import keys as keyfiles

BY_NHS = {"nhs_number": LEO_NHS, "date_of_birth": LEO["date_of_birth"]}
NAMED = {"name": "Dr Ada Jones", "organisation": "Hillside Surgery", "role": "GP", "phone": "0113 496 0123"}


async def started(tmp_path: Path, *, notify: bool) -> tuple[Federation, Receiver]:
    receiver = Receiver(free_port())
    await receiver.start()
    fed = build_check_federation(tmp_path / "federation", receiver.url)
    fed.node_configs = {k: dataclasses.replace(c, notify_lead_on_match=notify)
                        for k, c in fed.node_configs.items()}
    await fed.start()
    return fed, receiver


@pytest.fixture
async def told(tmp_path: Path) -> AsyncIterator[tuple[Federation, Receiver]]:
    fed, receiver = await started(tmp_path, notify=True)
    try:
        yield fed, receiver
    finally:
        await fed.close()
        await receiver.stop()


def alpha(answer: dict[str, object]) -> dict[str, object]:
    results = answer["results"]
    assert isinstance(results, list)
    found = next(r for r in results if r["authority"]["id"] == "alpha")
    assert isinstance(found, dict)
    return found


async def test_a_match_tells_the_lead_who_asked_and_the_searcher_that_the_lead_knows(
        told: tuple[Federation, Receiver]) -> None:
    """Proves a matcher `match` sends the lead practitioner (and only the lead) one message signed
    by the node naming the searcher, organisation, contact and purpose; the answer says
    `lead_informed`; the node's query entry counts the message and its delivery is logged."""
    fed, receiver = told
    status, answer = await fed.search({"identity": BY_NHS, "purpose": PURPOSE, "contact": CONTACT})
    assert 200 == status, answer
    assert ("match", True) == (alpha(answer)["status"], alpha(answer)["lead_informed"])
    assert all("lead_informed" not in r for r in answer["results"] if r["status"] != "match")
    await receiver.wait_for(1)
    trust = fed.runners["alpha"].app[NODE].trust.current
    claims, signer = envelope.verify(receiver.bodies[0], trust, role="node", typ=NOTIFICATION_TYPE,
                                     now=datetime.now(UTC))
    assert ("alpha", "match-disclosure", "Sam Patel", "alpha children's services", CONTACT, PURPOSE,
            answer["query_id"], None) == (
        signer.id, claims["type"], claims["searcher"]["name"], claims["searcher"]["organisation"],
        claims["contact"], claims["purpose"], claims["query_id"], claims["on_behalf_of"])
    assert 1 == len(receiver.bodies)  # Sue Brown is not the lead; the ended involvement is not told
    logged = [e for e in await entries(fed, "alpha") if e.get("query_id") == answer["query_id"]]
    assert {"lead": 1, "access": 0} == next(e for e in logged if e["type"] == "query")["notifications"]
    for _ in range(200):
        delivered = [e for e in await entries(fed, "alpha") if e["type"] == "notification"]
        if delivered:
            break
        await asyncio.sleep(0.05)
    assert [("match-disclosure", answer["query_id"], "delivered")] == [
        (e["kind"], e["query_id"], e["outcome"]) for e in delivered]


async def test_a_mediators_match_names_the_professional_to_the_lead(
        told: tuple[Federation, Receiver]) -> None:
    """Proves a mediator's search carries the named professional to the lead practitioner."""
    fed, receiver = told
    body = {"identity": BY_NHS, "purpose": PURPOSE, "on_behalf_of": NAMED}
    status, answer = await fed.search(body, fed.token("mediator"))
    assert 200 == status, answer
    assert alpha(answer)["lead_informed"] is True
    await receiver.wait_for(1)
    trust = fed.runners["alpha"].app[NODE].trust.current
    claims, _ = envelope.verify(receiver.bodies[0], trust, role="node", typ=NOTIFICATION_TYPE,
                                now=datetime.now(UTC))
    assert (NAMED, None) == (claims["on_behalf_of"], claims["contact"])


async def test_a_possible_match_tells_nobody(told: tuple[Federation, Receiver]) -> None:
    """Proves nothing disclosed, nobody told: a `possible_match` carries no `lead_informed` and
    queues no message for the lead."""
    fed, receiver = told
    status, answer = await fed.search({"identity": LEO, "purpose": PURPOSE, "contact": CONTACT})
    assert ("possible_match", None) == (alpha(answer)["status"], alpha(answer).get("lead_informed"))
    items = await fed.runners["alpha"].app[NODE].worker.run(
        lambda store: store.db.execute("SELECT count(*) FROM outbox").fetchone()[0])
    assert (200, 0, []) == (status, items, receiver.bodies)


async def test_an_authority_can_turn_telling_the_lead_off(tmp_path: Path) -> None:
    """Proves `notify_lead_on_match: false` keeps the match but tells no lead, and the searcher is
    not told the lead knows."""
    fed, receiver = await started(tmp_path, notify=False)
    try:
        status, answer = await fed.search({"identity": BY_NHS, "purpose": PURPOSE, "contact": CONTACT})
        items = await fed.runners["alpha"].app[NODE].worker.run(
            lambda store: store.db.execute("SELECT count(*) FROM outbox").fetchone()[0])
    finally:
        await fed.close()
        await receiver.stop()
    assert (200, "match", False, 0) == (
        status, alpha(answer)["status"], alpha(answer)["lead_informed"], items)


BAD_CONTACTS = [
    ({"email": "not an address"}, "contact.email"),
    ({"phone": "call me"}, "contact.phone"),
    ({}, "contact"),
    ("sam@example.gov.uk", "contact"),
]


async def test_a_bad_contact_is_refused_naming_the_field(told: tuple[Federation, Receiver]) -> None:
    """Proves the searcher's contact is checked at the broker and the error names the field
    (a table of cases on one federation)."""
    fed, _ = told
    refused = []
    for contact, _field in BAD_CONTACTS:
        status, problem = await fed.search({"identity": BY_NHS, "purpose": PURPOSE, "contact": contact})
        refused.append((status, [e["field"] for e in problem["errors"]]))
    assert [(400, [field]) for _, field in BAD_CONTACTS] == refused


async def test_the_results_page_says_the_lead_was_told_and_checks_the_contact(tmp_path: Path) -> None:
    """Proves the practitioner's page: a search with a contact shows, on the authority whose lead
    was told, that the lead practitioner knows and how to reach the searcher; the lead receives
    the contact typed on the form; a malformed contact is an error linked to its field."""
    receiver = Receiver(free_port())
    await receiver.start()
    records = web_records()
    children, involvements = records["rochdale"]
    records["rochdale"] = (children, [{**involvements[0], "notify_url": receiver.url}])
    fed = build_federation(tmp_path / "federation", records)
    fed.broker_config = dataclasses.replace(fed.broker_config,
                                            unsafe_demo_identity_provider=fed.folder / "keys")
    fed.node_configs = {k: dataclasses.replace(c, unsafe_http_webhooks=True)
                        for k, c in fed.node_configs.items()}
    await fed.start()
    browser = Browser(fed.broker_url)
    try:
        csrf = await browser.sign_in()
        year, month, day = AMARA["date_of_birth"].split("-")
        form = {"csrf_token": csrf, "nhs_number": AMARA_NHS, "dob-day": day, "dob-month": month,
                "dob-year": year, "purpose": "early_help", "contact-email": "not an address"}
        status, page, _ = await browser.post("/search", form)
        assert (400, ["#contact-email"]) == (status, re.findall(r'href="(#contact-[a-z]+)"', page))
        form["contact-email"] = "sam.patel@example.gov.uk"
        status, page, _ = await browser.post("/search", form)
        await receiver.wait_for(1)
    finally:
        await browser.close()
        await fed.close()
        await receiver.stop()
    panels = re.findall(r'<section class="panel" aria-labelledby="a-(\w+)">(.*?)</section>', page, re.S)
    told = [(authority, re.findall(r"lead practitioner has been told[^<]*", body))
            for authority, body in panels]
    assert 200 == status
    assert [("leeds", []), ("rochdale", ["lead practitioner has been told that you searched, from which "
                                         "organisation and why, and how to reach you."])] == told
    claims = json.loads(base64.urlsafe_b64decode(receiver.bodies[0].split(".")[1] + "=="))
    assert ("match-disclosure", {"email": "sam.patel@example.gov.uk"}, "Sam Patel") == (
        claims["type"], claims["contact"], claims["searcher"]["name"])


async def test_a_node_refuses_a_signed_query_with_a_malformed_contact(
        told: tuple[Federation, Receiver]) -> None:
    """Proves the node judges the contact itself (a trusted broker is no excuse): a signed query
    whose contact is malformed is refused naming the field, before anything is matched or told."""
    fed, receiver = told
    key = keyfiles.load_private(fed.folder / "keys" / "broker.pem")
    cases = [({"email": "not an address"}, "contact.email"), ("sam@example.gov.uk", "contact")]
    refused = []
    for contact, _field in cases:
        payload = broker_signed_query(fed, BY_NHS).split(".")[1]
        claims = json.loads(base64.urlsafe_b64decode(payload + "=" * (-len(payload) % 4)))
        claims["contact"] = contact
        status, problem = await post_query(fed, "alpha", envelope.sign(claims, key, envelope.QUERY_TYPE))
        refused.append((status, [e["field"] for e in problem.get("errors", [])]))
    assert ([(400, [field]) for _, field in cases], []) == (refused, receiver.bodies)


async def test_the_command_line_carries_the_contact_and_says_the_lead_was_told(
        told: tuple[Federation, Receiver], capsys: pytest.CaptureFixture[str]) -> None:
    """Proves `signpost search --contact-email` carries the contact to the lead, and the printed
    answer says the lead practitioner has been told."""
    fed, receiver = told
    code, out = await run_cli(["search", "--broker", fed.broker_url, "--token", fed.token(),
                               "--nhs-number", LEO_NHS, "--date-of-birth", LEO["date_of_birth"],
                               "--purpose", PURPOSE, "--contact-email", CONTACT["email"]], capsys)
    await receiver.wait_for(1)
    payload = receiver.bodies[0].split(".")[1]
    claims = json.loads(base64.urlsafe_b64decode(payload + "=" * (-len(payload) % 4)))
    assert (0, True) == (code, "the lead practitioner has been told that you searched" in out), out
    assert {"email": CONTACT["email"]} == claims["contact"]


async def test_an_authority_can_turn_telling_the_lead_of_a_confirmed_check_off(tmp_path: Path) -> None:
    """Proves `notify_lead_on_check: false`: an officer's confirmation discloses the match but
    queues no message for the lead, and the practitioner is not told the lead knows."""
    receiver = Receiver(free_port())
    await receiver.start()
    fed = build_check_federation(tmp_path / "federation", receiver.url)
    fed.node_configs = {k: dataclasses.replace(c, notify_lead_on_check=False)
                        for k, c in fed.node_configs.items()}
    await fed.start()
    try:
        search_id = await possible_match(fed, LEO)
        _, body = await ask(fed, search_id, LEO)
        check_id = body["check"]["check_id"]
        await decide(fed, check_id, "same:L-2")
        await wait_for_state(fed, check_id, "same_child")
        _, body = await api(fed, "GET", f"/v1/checks/{check_id}")
        items = await fed.runners["alpha"].app[NODE].worker.run(
            lambda store: store.db.execute("SELECT count(*) FROM outbox").fetchone()[0])
    finally:
        await fed.close()
        await receiver.stop()
    assert ("match", False, 0) == (
        body["check"]["disclosure"]["status"], body["check"]["lead_informed"], items)
