"""Rows of docs/fault-matrix.md that had no test: a node answering garbage or another query's
answer, Redis frozen (not down), and clock skew of five minutes between parties."""

from __future__ import annotations

import asyncio
import dataclasses
import json
import os
import signal
import time
import uuid
from collections.abc import AsyncIterator, Callable
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import aiohttp
import pytest
from aiohttp import web

from broker.admission import ADMISSION
from broker.api import BROKER
from federation.errors import ConfigError
from federation.http import runner as app_runner
from node.api import NODE
from node.api import create_app as create_node
from tests.conftest import (
    AMARA,
    TEST_GRACE,
    Federation,
    build_federation,
    child_row,
    involvement_row,
    years_ago,
)
from tests.conftest_redis import RedisServer, redis_server  # noqa: F401  (fixture)
from trust import envelope
from trust import keys as keyfiles
from trust.errors import ExpiredError, SignatureError, TrustError

PURPOSE = "child_protection_enquiry"


def alpha_answer(fed: Federation, query_jti: str, query_hash: str) -> str:
    """An answer genuinely signed with alpha's key, bound to the query named."""
    key = keyfiles.load_private(fed.folder / "keys" / "alpha.pem")
    iat = int(datetime.now(UTC).timestamp())
    return envelope.sign({"v": 1, "iss": "alpha", "aud": "broker", "iat": iat, "exp": iat + 60,
                          "jti": str(uuid.uuid4()), "query_jti": query_jti, "query_hash": query_hash,
                          "authority": {"id": "alpha", "name": "Alpha"}, "status": "no_match"},
                         key, envelope.ANSWER_TYPE)


def hostile_answers(fed: Federation) -> dict[str, Callable[[dict[str, Any]], web.Response]]:
    return {
        "garbage": lambda _: web.Response(body=b"\x00not json at all", content_type="application/json"),
        "JSON nested 20,000 deep": lambda _: web.Response(body=b"[" * 20_000 + b"]" * 20_000),
        "a 5,000-digit number": lambda _: web.Response(body=b'{"answer": ' + b"7" * 5000 + b"}"),
        "an answer to another query": lambda _: web.json_response(
            {"answer": alpha_answer(fed, str(uuid.uuid4()), "0" * 64)}),
        "an answer signed with alpha's key but for the right query id only": lambda body: web.json_response(
            {"answer": alpha_answer(fed, json.loads(envelope_claims(body["query"]))["jti"], "0" * 64)}),
    }


def envelope_claims(token: str) -> str:
    return keyfiles.b64url_decode(token.split(".")[1]).decode()


@pytest.fixture
async def hostile_alpha(federation: Federation) -> AsyncIterator[dict[str, Any]]:
    """Alpha replaced, on its own port, by a server whose answer the test chooses."""
    await federation.stop("alpha")
    chosen: dict[str, Any] = {}

    async def handler(request: web.Request) -> web.Response:
        response: web.Response = chosen["answer"](await request.json())
        return response

    app = web.Application()
    app.router.add_post("/v1/query", handler)
    runner = app_runner(app, grace=TEST_GRACE)
    await runner.setup()
    await web.TCPSite(runner, "127.0.0.1", federation.node_configs["alpha"].port).start()
    try:
        yield chosen
    finally:
        await runner.cleanup()


@pytest.mark.parametrize("case", ["garbage", "JSON nested 20,000 deep", "a 5,000-digit number",
                                  "an answer to another query",
                                  "an answer signed with alpha's key but for the right query id only"])
async def test_a_node_answering_garbage_or_another_query_is_unavailable(
        federation: Federation, hostile_alpha: dict[str, Any], case: str) -> None:
    """Proves a node that answers garbage, or a genuinely signed answer bound to another query, is
    reported unavailable (an integrity failure in the broker's log) while the others answer."""
    hostile_alpha["answer"] = hostile_answers(federation)[case]
    status, body = await federation.search({"identity": AMARA, "purpose": PURPOSE})
    statuses = {r["authority"]["id"]: r["status"] for r in body["results"]}
    assert (200, "unavailable", "match") == (status, statuses["alpha"], statuses["beta"])
    assert body["complete"] is False


async def test_redis_frozen_fails_closed_within_its_timeout(
        federation: Federation, redis_server: RedisServer) -> None:  # noqa: F811
    """Proves a Redis that accepts connections but never answers (SIGSTOP) stops searches with 503
    at the configured timeout (the search comes back while Redis is still frozen, refused for
    its time-out), shows as degraded on /healthz, and searching resumes after."""
    await federation.stop("broker")
    federation.broker_config = dataclasses.replace(federation.broker_config, redis_url=redis_server.url,
                                                   redis_timeout_seconds=0.3)
    await federation.start_broker()
    assert 200 == (await federation.search({"identity": AMARA, "purpose": PURPOSE}))[0]
    assert redis_server.process is not None
    os.kill(redis_server.process.pid, signal.SIGSTOP)
    try:
        status, body = await federation.search({"identity": AMARA, "purpose": PURPOSE})
        async with aiohttp.ClientSession() as session, session.get(federation.broker_url + "/healthz") as r:
            health = (r.status, [x["code"] for x in (await r.json()).get("reasons", [])])
    finally:
        os.kill(redis_server.process.pid, signal.SIGCONT)
    assert (503, True) == (status, body["type"].endswith("rate-limit-unavailable"))
    assert "did not answer (TimeoutError)" in body["detail"]
    assert (503, True) == (health[0], "redis-unreachable" in health[1])
    assert 200 == (await federation.search({"identity": AMARA, "purpose": PURPOSE}))[0]


SKEWS = {"node 5 minutes ahead": timedelta(minutes=5), "node 5 minutes behind": timedelta(minutes=-5),
         "node 30 s ahead (within leeway)": timedelta(seconds=30)}


@pytest.mark.parametrize("case", SKEWS)
def test_clock_skew_beyond_the_leeway_refuses_the_query(federation: Federation, case: str) -> None:
    """Proves a query judged by a clock 5 minutes off is refused (expired, or issued in the future)
    rather than answered, and skew within the 60 s leeway is accepted."""
    key = keyfiles.load_private(federation.folder / "keys" / "broker.pem")
    now = datetime.now(UTC)
    iat = int(now.timestamp())
    token = envelope.sign({"v": 1, "iss": "broker", "aud": "test-federation", "iat": iat, "exp": iat + 60,
                           "jti": str(uuid.uuid4())}, key, envelope.QUERY_TYPE)
    current = federation.runners["broker"].app[BROKER].trust.current  # the federation as it runs
    skew = SKEWS[case]
    judge = now + skew
    if abs(skew) <= timedelta(seconds=envelope.LEEWAY_SECONDS):
        claims, _ = envelope.verify(token, current, role="broker", typ=envelope.QUERY_TYPE, now=judge)
        assert iat == claims["iat"]
        return
    expected: type[TrustError] = ExpiredError if skew > timedelta(0) else SignatureError
    with pytest.raises(expected):
        envelope.verify(token, current, role="broker", typ=envelope.QUERY_TYPE, now=judge)


def test_a_node_whose_records_name_a_plain_http_webhook_refuses_to_start(tmp_path: Path) -> None:
    """Proves a node holding an involvement that asks for notifications at an http:// URL refuses
    to start, naming unsafe_http_webhooks, and starts once that setting is given."""
    records = {"alpha": ([child_row("A-1", "Amara", "Okafor", years_ago(7), sex="F")],
                         [involvement_row("A-I1", "A-1", lead="true", notify_on_access="true",
                                          notify_url="http://127.0.0.1:9/hook")])}
    fed = build_federation(tmp_path / "federation", records)
    with pytest.raises(ConfigError, match="unsafe_http_webhooks: 1 involvement"):
        create_node(fed.node_configs["alpha"])
    create_node(dataclasses.replace(fed.node_configs["alpha"], unsafe_http_webhooks=True))[NODE].close()


async def test_a_redis_timeout_while_the_brokers_loop_is_late_names_the_broker(
        federation: Federation, redis_server: RedisServer) -> None:  # noqa: F811
    """Proves the Redis case of the saturated-broker row: a search admitted while the broker's loop
    was on time, whose Redis call then times out while the loop is held late (a task blocking it
    in turns, as a saturated broker would), is refused as `broker-overloaded` -- the broker's own
    fault -- not as `rate-limit-unavailable`; with the loop on time, the same frozen Redis gives
    `rate-limit-unavailable`."""
    await federation.stop("broker")
    federation.broker_config = dataclasses.replace(
        federation.broker_config, redis_url=redis_server.url, redis_timeout_seconds=1.5,
        max_loop_lag_seconds=0.1)
    await federation.start_broker()
    assert 200 == (await federation.search({"identity": AMARA, "purpose": PURPOSE}))[0]
    admission = federation.runners["broker"].app[ADMISSION]
    assert redis_server.process is not None
    kinds = {}
    os.kill(redis_server.process.pid, signal.SIGSTOP)
    try:
        for held in (False, True):
            search = asyncio.create_task(federation.search({"identity": AMARA, "purpose": PURPOSE}))
            while admission.in_flight == 0:  # admitted: now waiting on the frozen Redis
                await asyncio.sleep(0.005)
            while held and not search.done():  # hold the loop late until the answer is back
                # Blocking the loop is the point: each turn makes the loop's next tick 0.35 s late,
                # so its average lateness passes 0.1 s within two turns, long before Redis's 1.5 s.
                time.sleep(0.4)
                await asyncio.sleep(0)
            status, body = await search
            kinds[held] = (status, body["type"].rsplit("/", 1)[-1])
    finally:
        os.kill(redis_server.process.pid, signal.SIGCONT)
    assert {False: (503, "rate-limit-unavailable"), True: (503, "broker-overloaded")} == kinds
