"""The broker's check ledger survives a restart; mediators ask for checks as they search; the
practitioner's notice reaches a real webhook receiver; notice URLs are https:// unless an
``unsafe_`` setting says otherwise."""

from __future__ import annotations

import asyncio
import dataclasses
from collections.abc import AsyncIterator
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import aiohttp
import pytest

from broker.api import BROKER
from broker.app import create_app as create_broker
from broker.checks import NOTICE_TYPE
from broker.config import BrokerConfig
from federation.tools.ports import free_port
from tests.checkfed import (
    CONTACT,
    LEO,
    StaffClient,
    api,
    ask,
    build_check_federation,
    officer_token,
    possible_match,
    staff_url,
)
from tests.conftest import Federation
from tests.conftest_redis import RedisServer, redis_server
from tests.test_audit import entries
from tests.test_checks import decide, wait_for_state
from tests.test_notifications import Receiver
from trust import envelope

__all__ = ["redis_server"]

NAMED = {"name": "Dr Ada Jones", "organisation": "Hillside Surgery", "role": "GP", "phone": "0113 496 0123"}


@pytest.fixture
async def with_notices(tmp_path: Path) -> AsyncIterator[tuple[Federation, Receiver]]:
    """The check federation, the broker telling practitioners at a loopback receiver."""
    receiver = Receiver(free_port())
    await receiver.start()
    fed = build_check_federation(tmp_path / "federation", "http://127.0.0.1:9/unused")
    fed.broker_config = dataclasses.replace(fed.broker_config, check_webhook_url=receiver.url,
                                            unsafe_http_webhooks=True)
    await fed.start()
    try:
        yield fed, receiver
    finally:
        await fed.close()
        await receiver.stop()


async def test_a_broker_restart_loses_no_search_and_no_check(
        with_notices: tuple[Federation, Receiver]) -> None:
    """Proves the ledger is kept on disk: a check asked before a restart is still listed after it
    and followed to its answer, and a search made before the restart can still be checked."""
    fed, _ = with_notices
    first = await possible_match(fed, LEO)
    status, body = await ask(fed, first, LEO)
    assert 201 == status, body
    check_id = body["check"]["check_id"]
    second = await possible_match(fed, LEO)

    await fed.stop("broker")
    await fed.start_broker()

    status, listed = await api(fed, "GET", "/v1/checks")
    assert (200, [check_id]) == (status, [c["check_id"] for c in listed["checks"]])
    assert 0o600 == fed.broker_config.check_ledger_path.stat().st_mode & 0o777  # type: ignore[union-attr]
    status, body = await ask(fed, second, LEO)
    assert 201 == status, body
    assert (303, "") == await decide(fed, check_id, "not_this_child")
    found = await wait_for_state(fed, check_id, "not_this_child")
    assert "alpha" == found["authority"]["id"]  # type: ignore[index]


async def test_a_check_of_a_search_made_by_someone_else_stays_refused_after_a_restart(
        with_notices: tuple[Federation, Receiver]) -> None:
    """Proves the persisted ledger still binds a search to the one who made it."""
    fed, _ = with_notices
    search_id = await possible_match(fed, LEO)
    await fed.stop("broker")
    await fed.start_broker()
    other = fed.token(org="Another org", authority="beta")
    status, body = await ask(fed, search_id, LEO, other)
    assert (403, "https://signpost.example/problems/not-your-search") == (status, body["type"])


async def test_a_mediator_asks_for_a_check_for_the_professional_named(
        with_notices: tuple[Federation, Receiver]) -> None:
    """Proves a mediator may ask for a check of a search they made on behalf of a professional:
    the check carries the named professional to the node, whose officer sees them, and both
    logs name them."""
    fed, _ = with_notices
    mediator = fed.token("mediator")
    status, answer = await fed.search({"identity": LEO, "purpose": "child_protection_enquiry",
                                       "on_behalf_of": NAMED}, mediator)
    assert 200 == status, answer
    status, body = await ask(fed, str(answer["query_id"]), LEO, mediator)
    assert 201 == status, body
    check_id = body["check"]["check_id"]
    officer = StaffClient(staff_url(fed, "alpha"))
    try:
        assert 303 == await officer.sign_in(officer_token(fed, "alpha"))
        status, page = await officer.get(f"/checks/{check_id}")
    finally:
        await officer.close()
    assert 200 == status and "On behalf of" in page and "Dr Ada Jones, GP, Hillside Surgery" in page
    node = [e for e in await entries(fed, "alpha") if e["type"] == "check-request"]
    broker = [e for e in await entries(fed, "broker") if e["type"] == "check-request"]
    assert NAMED == broker[-1]["on_behalf_of"]
    assert (check_id, NAMED) == (node[-1]["check_id"], node[-1]["on_behalf_of"])


async def test_the_practitioner_is_told_at_the_check_webhook(
        with_notices: tuple[Federation, Receiver]) -> None:
    """Proves a decided check sends the practitioner's notice, signed by the broker, naming their
    email and the check and nothing about the child, and logs that it was sent."""
    fed, receiver = with_notices
    search_id = await possible_match(fed, LEO)
    _, body = await ask(fed, search_id, LEO)
    check_id = body["check"]["check_id"]
    await decide(fed, check_id, "not_this_child")
    await receiver.wait_for(1)
    trust = fed.runners["broker"].app[BROKER].trust.current
    claims, signer = envelope.verify(receiver.bodies[0], trust, role="broker", typ=NOTICE_TYPE,
                                     now=datetime.now(UTC))
    assert ("broker", "check-answered", CONTACT["email"], check_id) == (
        signer.id, claims["type"], claims["to"], claims["check_id"])
    assert {"iss", "iat", "exp", "jti", "type", "to", "check_id", "authority"} == set(claims)
    for _ in range(100):  # the entry follows the receiver's answer
        logged = [e for e in await entries(fed, "broker") if e["type"] == "check-notice"]
        if logged:
            break
        await asyncio.sleep(0.05)
    assert [check_id] == [e["check_id"] for e in logged]


def broker_config(tmp_path: Path, **settings: Any) -> BrokerConfig:
    return BrokerConfig(id="broker", key=tmp_path / "k", trust_list=tmp_path / "t",
                        trust_root=tmp_path / "r", audit_log=tmp_path / "log", unsafe_plain_http=True,
                        **settings)


@pytest.mark.parametrize(("settings", "refused"), [
    ({"check_webhook_url": "https://notify.example.gov.uk/hook"}, None),
    ({"check_webhook_url": "http://notify.example.gov.uk/hook"}, "unsafe_http_webhooks"),
    ({"check_webhook_url": "http://127.0.0.1:9/hook", "unsafe_http_webhooks": True}, None),
    ({"check_webhook_url": "ftp://notify.example.gov.uk/hook", "unsafe_http_webhooks": True},
     "expected an https:// URL"),
])
def test_the_check_webhook_is_https_unless_an_unsafe_setting_allows_http(
        tmp_path: Path, settings: dict[str, Any], refused: str | None) -> None:
    """Proves closed by default: a plain http:// notice URL is refused naming the setting that
    would allow it."""
    if refused is None:
        assert settings["check_webhook_url"] == broker_config(tmp_path, **settings).check_webhook_url
        return
    with pytest.raises(ValueError, match="check_webhook_url") as raised:
        broker_config(tmp_path, **settings)
    assert refused in str(raised.value)


def test_the_ledger_sits_beside_the_audit_log_unless_named(tmp_path: Path) -> None:
    """Proves where checks are kept: beside the audit log by default, or where configured."""
    assert tmp_path / "broker-checks.sqlite" == broker_config(tmp_path).check_ledger_path
    named = broker_config(tmp_path, check_ledger=tmp_path / "c.sqlite")
    assert tmp_path / "c.sqlite" == named.check_ledger_path


async def test_a_notice_the_receiver_refused_is_sent_again(tmp_path: Path) -> None:
    """Proves a practitioner's notice is not lost when the receiver fails once: it stays due and
    the next follow-up round delivers it (one `check-notice` entry, after the delivery)."""
    receiver = Receiver(free_port(), fail_first=1)
    await receiver.start()
    fed = build_check_federation(tmp_path / "federation", "http://127.0.0.1:9/unused")
    fed.broker_config = dataclasses.replace(fed.broker_config, check_webhook_url=receiver.url,
                                            unsafe_http_webhooks=True)
    await fed.start()
    try:
        search_id = await possible_match(fed, LEO)
        _, body = await ask(fed, search_id, LEO)
        check_id = body["check"]["check_id"]
        await decide(fed, check_id, "not_this_child")
        await receiver.wait_for(1)
        for _ in range(100):  # the entry follows the receiver's answer
            logged = [e["check_id"] for e in await entries(fed, "broker") if e["type"] == "check-notice"]
            if logged:
                break
            await asyncio.sleep(0.05)
    finally:
        await fed.close()
        await receiver.stop()
    assert (2, [check_id]) == (receiver.attempts, logged)


@pytest.fixture
async def two_replicas(tmp_path: Path, redis_server: RedisServer) -> AsyncIterator[tuple[Federation, str]]:
    """The check federation with two broker replicas (in process) sharing one Redis."""
    fed = build_check_federation(tmp_path / "federation", "http://127.0.0.1:9/unused")
    fed.broker_config = dataclasses.replace(fed.broker_config, redis_url=redis_server.url)
    await fed.start()
    other = dataclasses.replace(fed.broker_config, port=free_port(),
                                audit_log=fed.folder / "broker" / "audit-b.log")
    await fed._serve("broker-b", create_broker(other), other.port)
    try:
        yield fed, f"http://127.0.0.1:{other.port}"
    finally:
        await fed.close()


async def call(base: str, fed: Federation, method: str, path: str, body: Any = None) -> tuple[int, Any]:
    async with aiohttp.ClientSession() as session, session.request(
            method, base + path, json=body, headers={"Authorization": f"Bearer {fed.token()}"}) as response:
        return response.status, await response.json(content_type=None)


async def test_replicas_sharing_redis_share_searches_and_checks(
        two_replicas: tuple[Federation, str], redis_server: RedisServer) -> None:
    """Proves that with a Redis URL the ledger is Redis: a search made through one replica is
    checked through the other, each replica lists the check, one of them follows it to its
    answer, a replica started afresh still lists it, and without Redis the checks answer 503
    (never an empty list)."""
    fed, other = two_replicas
    search_id = await possible_match(fed, LEO)
    status, body = await call(other, fed, "POST", "/v1/checks", {
        "search_id": search_id, "authority": "alpha", "identity": LEO,
        "purpose": "child_protection_enquiry", "contact": CONTACT})
    assert 201 == status, body
    check_id = body["check"]["check_id"]
    for base in (fed.broker_url, other):
        status, listed = await call(base, fed, "GET", "/v1/checks")
        assert (200, [check_id]) == (status, [c["check_id"] for c in listed["checks"]])
    assert (303, "") == await decide(fed, check_id, "not_this_child")
    await wait_for_state(fed, check_id, "not_this_child")

    await fed.stop("broker")
    await fed.start_broker()
    status, listed = await api(fed, "GET", "/v1/checks")
    assert (200, ["not_this_child"]) == (status, [c["state"] for c in listed["checks"]])

    redis_server.stop()
    status, problem = await call(other, fed, "GET", "/v1/checks")
    assert (503, "https://signpost.example/problems/ledger-unavailable") == (status, problem["type"])
