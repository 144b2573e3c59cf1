"""Notify-on-access, end to end: a real node writes to its SQLite outbox and a worker delivers a
signed webhook to a real HTTP receiver on loopback, retrying with back-off, across a restart."""

from __future__ import annotations

import asyncio
import dataclasses
import time
from collections.abc import AsyncIterator, Callable
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pytest
from aiohttp import web

from federation.http import runner as app_runner
from federation.tools.ports import free_port
from node.outbox import NOTIFICATION_TYPE, Outbox
from node.store import Store
from tests.conftest import AMARA, TEST_GRACE, Federation, build_federation, child_row, involvement_row
from trust import envelope

PURPOSE = "child_in_need_assessment"


class Receiver:
    """A webhook receiver: answers ``fail_first`` requests with 500, then 204; keeps the bodies."""

    def __init__(self, port: int, fail_first: int = 0) -> None:
        self.port = port
        self.fail_first = fail_first
        self.bodies: list[str] = []
        self.attempts = 0
        self.runner: web.AppRunner | None = None

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}/hook"

    async def handle(self, request: web.Request) -> web.Response:
        self.attempts += 1
        if self.attempts <= self.fail_first:
            return web.Response(status=500)
        assert "application/jose" == request.content_type
        self.bodies.append(await request.text())
        return web.Response(status=204)

    async def start(self) -> None:
        app = web.Application()
        app.router.add_post("/hook", self.handle)
        self.runner = app_runner(app, grace=TEST_GRACE)
        await self.runner.setup()
        await web.TCPSite(self.runner, "127.0.0.1", self.port).start()

    async def stop(self) -> None:
        if self.runner is not None:
            await self.runner.cleanup()
            self.runner = None

    async def wait_for(self, count: int, seconds: float = 10.0) -> None:
        deadline = asyncio.get_running_loop().time() + seconds
        while len(self.bodies) < count:
            if asyncio.get_running_loop().time() > deadline:
                raise AssertionError(f"expected {count} notification(s), got {len(self.bodies)}")
            await asyncio.sleep(0.02)


def records(hook: str) -> dict[str, Any]:
    amara = child_row("A-1", "Amara", "Okafor", AMARA["date_of_birth"], sex="F")
    return {
        "alpha": ([amara], [
            involvement_row("A-I1", "A-1", lead="true", notify_on_access="true", notify_url=hook),
            involvement_row("A-I2", "A-1", "health_visiting", organisation="Leeds Community Health",
                            practitioner_name="Sue Brown", practitioner_role="Health Visitor"),
        ]),
        "beta": ([], []),
    }


@pytest.fixture
async def receiver() -> AsyncIterator[Receiver]:
    r = Receiver(free_port())
    try:
        yield r
    finally:
        await r.stop()


async def start(tmp_path: Path, receiver: Receiver, *, lead_on_match: bool = False) -> Federation:
    """A federation whose alpha lead asked to hear of every search. Telling the lead of a
    disclosed match (``notify_lead_on_match``, tested in ``test_lead_told``) is off unless asked
    for, so these tests see the notify-on-access message alone."""
    fed = build_federation(tmp_path / "federation", records(receiver.url))
    for node_id, config in fed.node_configs.items():
        fed.node_configs[node_id] = dataclasses.replace(
            config, notify_retry_base_seconds=0.05, notify_retry_cap_seconds=0.2, unsafe_http_webhooks=True,
            notify_lead_on_match=lead_on_match)
        await fed.start_node(node_id)
    await fed.start_broker()
    return fed


async def outbox_when(fed: Federation, ready: Callable[[list[Any]], bool], timeout: float = 10) -> list[Any]:
    """alpha's outbox items once ``ready`` holds for them (checked every 20 ms, at most ``timeout`` s)."""
    deadline = time.monotonic() + timeout
    while True:
        store = Store(fed.node_configs["alpha"].database)
        items = Outbox(store).items()
        store.close()
        if (items and ready(items)) or time.monotonic() > deadline:
            return items
        await asyncio.sleep(0.02)


def verify(fed: Federation, body: str, receiver: Receiver) -> dict[str, Any]:
    from trust.store import TrustStore

    trust = TrustStore(fed.node_configs["alpha"].trust_root, fed.node_configs["alpha"].trust_list)
    trust.load()
    claims, signer = envelope.verify(body, trust.current, role="node", typ=NOTIFICATION_TYPE,
                                     now=datetime.now(UTC), audience=receiver.url)
    assert "alpha" == signer.id
    return claims


async def test_lead_is_told_who_searched_and_nothing_else(tmp_path: Path, receiver: Receiver) -> None:
    """A search from another organisation sends one signed notification: who, organisation, role,
    purpose, when and the query id; never the answer or the other involvements."""
    await receiver.start()
    fed = await start(tmp_path, receiver)
    try:
        status, answer = await fed.search({"identity": AMARA, "purpose": PURPOSE},
                                          fed.token(org="Oakfield Primary School"))
        assert 200 == status
        await receiver.wait_for(1)
        claims = verify(fed, receiver.bodies[0], receiver)
    finally:
        await fed.close()
    assert {"name": "Sam Patel", "organisation": "Oakfield Primary School", "role": "practitioner"} == \
        claims["searcher"]
    assert (PURPOSE, answer["query_id"], "A-1", "A-I1") == (
        claims["purpose"], claims["query_id"], claims["child_record_id"], claims["involvement_record_id"])
    assert {"type", "authority", "child_record_id", "involvement_record_id", "searcher", "on_behalf_of",
            "purpose", "searched_at", "query_id", "v", "iss", "aud", "iat", "exp", "jti"} == set(claims)


async def test_a_lead_who_asked_to_hear_of_searches_gets_one_fuller_message_on_a_match(
        tmp_path: Path, receiver: Receiver) -> None:
    """A lead marked notify-on-access whose child is disclosed by a match gets one message, the
    lead's (``match-disclosure``, with the searcher's contact), not two."""
    await receiver.start()
    fed = await start(tmp_path, receiver, lead_on_match=True)
    try:
        status, answer = await fed.search({"identity": AMARA, "purpose": PURPOSE,
                                           "contact": {"email": "sam@oakfield.example.sch.uk"}},
                                          fed.token(org="Oakfield Primary School"))
        items = await outbox_when(fed, lambda items: True)
        await receiver.wait_for(1)
        claims = verify(fed, receiver.bodies[0], receiver)
    finally:
        await fed.close()
    assert (200, 1, 1) == (status, len(items), len(receiver.bodies))
    assert ("match-disclosure", {"email": "sam@oakfield.example.sch.uk"}, answer["query_id"]) == (
        claims["type"], claims["contact"], claims["query_id"])


@pytest.mark.parametrize("lead_on_match", [False, True])
async def test_search_from_the_same_organisation_is_not_notified(tmp_path: Path, receiver: Receiver,
                                                                 lead_on_match: bool) -> None:
    """The lead's own organisation searching does not create a notification (of either kind)."""
    await receiver.start()
    fed = await start(tmp_path, receiver, lead_on_match=lead_on_match)
    try:
        status, _ = await fed.search({"identity": AMARA, "purpose": PURPOSE},
                                     fed.token(org="Children's Social Care"))
        # Messages are enqueued before the answer leaves the node: the outbox is final already.
        store = Store(fed.node_configs["alpha"].database)
        pending = Outbox(store).items()
        store.close()
    finally:
        await fed.close()
    assert (200, [], []) == (status, receiver.bodies, pending)


async def test_failed_deliveries_are_retried_with_back_off(tmp_path: Path) -> None:
    """A receiver answering 500 twice gets the message on the third attempt, same id each time."""
    receiver = Receiver(free_port(), fail_first=2)
    await receiver.start()
    fed = await start(tmp_path, receiver)
    try:
        await fed.search({"identity": AMARA, "purpose": PURPOSE}, fed.token(org="Oak Surgery"))
        await receiver.wait_for(1)
        [item] = await outbox_when(fed, lambda items: items[0].delivered is not None)
    finally:
        await fed.close()
        await receiver.stop()
    assert (3, 3, True, None) == (
        receiver.attempts, item.attempts, item.delivered is not None, item.last_error)
    assert item.id == verify(fed, receiver.bodies[0], receiver)["jti"]


async def test_undelivered_notifications_survive_a_node_restart(tmp_path: Path, receiver: Receiver) -> None:
    """With the receiver down the message waits in the outbox; after the node restarts (and the
    receiver is back) it is delivered: nothing is lost."""
    fed = await start(tmp_path, receiver)
    try:
        status, _ = await fed.search({"identity": AMARA, "purpose": PURPOSE}, fed.token(org="Oak Surgery"))
        assert 200 == status
        await outbox_when(fed, lambda items: items[0].attempts >= 1)  # the first attempt failed
        await fed.stop("alpha")
        store = Store(fed.node_configs["alpha"].database)
        [waiting] = Outbox(store).items()
        store.close()
        assert (None, True) == (waiting.delivered, waiting.attempts >= 1)
        await receiver.start()
        await fed.start_node("alpha")
        await receiver.wait_for(1)
        assert waiting.id == verify(fed, receiver.bodies[0], receiver)["jti"]
    finally:
        await fed.close()
