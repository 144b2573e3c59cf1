"""The broker-node channel (one WebSocket per node): answers bound to their queries, hostile frames
refused, breaks and restarts survived, a lying node caught by reconcile, and overload refused early."""

from __future__ import annotations

import asyncio
import dataclasses
import json
import socket
import threading
import uuid
from collections.abc import AsyncIterator, Awaitable, Callable
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import aiohttp
import pytest
from aiohttp import web

from broker.api import BROKER
from federation import frames
from federation.commands.main import main
from federation.http import runner as app_runner
from federation.protocol import AnswerClaims, AuthorityRef, MemberId, QueryId, Status
from node import answering, channel
from node.api import NODE, TLS_PEER, Node, process_query, refuse_early
from tests.conftest import AMARA, TEST_GRACE, Federation, build_federation, default_records
from trust import envelope, logapi
from trust import keys as keyfiles

PURPOSE = "child_protection_enquiry"


async def running(folder: Path, **broker: Any) -> AsyncIterator[Federation]:
    fed = build_federation(folder, default_records())
    fed.broker_config = dataclasses.replace(fed.broker_config, **broker)
    await fed.start()
    try:
        yield fed
    finally:
        await fed.close()


@pytest.fixture
async def patient(tmp_path: Path) -> AsyncIterator[Federation]:
    """The test federation with a node deadline long enough that only what a test does to a node
    (not a busy machine) can make it late."""
    async for fed in running(tmp_path / "federation", node_deadline_seconds=20):
        yield fed


@pytest.fixture
async def one_at_a_time(tmp_path: Path) -> AsyncIterator[Federation]:
    """The patient test federation with a broker that takes one search at a time."""
    async for fed in running(tmp_path / "federation", node_deadline_seconds=20, max_searches_in_flight=1):
        yield fed


def statuses(answer: dict[str, Any]) -> dict[str, str]:
    return {r["authority"]["id"]: r["status"] for r in answer["results"]}


def broker_query(federation: Federation) -> tuple[str, str]:
    """A query signed with the broker's real key, as the broker sends it: (jti, envelope)."""
    key = keyfiles.load_private(federation.folder / "keys" / "broker.pem")
    now = int(datetime.now(UTC).timestamp())
    jti = str(uuid.uuid4())
    claims = {"v": 1, "iss": "broker", "aud": "test-federation", "iat": now, "exp": now + 60, "jti": jti,
              "purpose": PURPOSE, "identity": AMARA, "on_behalf_of": None,
              "practitioner": {"iss": "alpha-idp", "sub": "sam@alpha", "name": "Sam", "org": "alpha",
                               "role": "practitioner", "authority": "alpha", "amr": ["pwd", "otp"]}}
    return jti, envelope.sign(claims, key, envelope.QUERY_TYPE)


def signed_answer(federation: Federation, signer: str, query_jti: str, query_token: str,
                  status: Status = Status.NO_MATCH, authority: str = "gamma") -> str:
    """An answer envelope signed with ``signer``'s real key."""
    now = int(datetime.now(UTC).timestamp())
    claims = AnswerClaims(
        iss=MemberId(signer), aud="broker", iat=now, exp=now + 60, jti=str(uuid.uuid4()),
        query_jti=QueryId(query_jti), query_hash=envelope.envelope_hash(query_token),
        authority=AuthorityRef(MemberId(authority), authority.title()), status=status)
    key = keyfiles.load_private(federation.folder / "keys" / f"{signer}.pem")
    return envelope.sign(claims.to_wire(), key, envelope.ANSWER_TYPE)


async def channel_exchange(url: str, sent: list[str]) -> list[frames.Frame]:
    """Open a node's channel as the broker would, send frames, read one frame per frame sent."""
    async with aiohttp.ClientSession() as session, session.ws_connect(
            url + frames.CHANNEL_PATH, protocols=(frames.SUBPROTOCOL,)) as ws:
        replies = []
        for text in sent:
            await ws.send_str(text)
            replies.append(frames.parse((await ws.receive()).data))
        return replies


async def serve(federation: Federation, name: str, app: web.Application) -> web.AppRunner:
    runner = app_runner(app, grace=TEST_GRACE)
    await runner.setup()
    await web.TCPSite(runner, "127.0.0.1", federation.node_configs[name].port).start()
    return runner


Reply = Callable[[str, str], Awaitable[str | None]]


def hostile_node(reply: Reply, protocols: tuple[str, ...] = (frames.SUBPROTOCOL,)) -> web.Application:
    """A node endpoint that speaks the channel but answers each query with ``reply(jti, envelope)``."""

    sockets: set[web.WebSocketResponse] = set()

    async def handle(request: web.Request) -> web.StreamResponse:
        ws = web.WebSocketResponse(protocols=protocols)
        await ws.prepare(request)
        sockets.add(ws)
        async for message in ws:
            frame = frames.parse(message.data)
            assert isinstance(frame, frames.QueryFrame)
            text = await reply(frame.id, frame.query)
            if text is not None and not ws.closed:
                await ws.send_str(text)
        return ws

    async def close(_: web.Application) -> None:
        for ws in sockets:
            await ws.close()

    app = web.Application()
    app.router.add_get(frames.CHANNEL_PATH, handle)
    app.on_shutdown.append(close)
    return app


async def broker_metric(federation: Federation, name: str) -> float:
    async with aiohttp.ClientSession() as session, session.get(federation.broker_url + "/metrics") as r:
        text = await r.text()
    return sum(float(line.rsplit(" ", 1)[1]) for line in text.splitlines() if line.startswith(name))


async def test_an_answer_on_the_channel_is_bound_to_its_query(patient: Federation) -> None:
    """Proves a node's answer frame carries the query's id and a signed answer bound to that query's
    jti and exact hash, and that searches through the broker travel over the channels."""
    federation = patient
    jti, token = broker_query(federation)
    [reply] = await channel_exchange(federation.node_url("alpha"),
                                     [frames.QueryFrame(QueryId(jti), token).to_text()])
    assert isinstance(reply, frames.AnswerFrame)
    assert jti == reply.id
    trust = federation.runners["broker"].app[BROKER].trust.current
    claims, signer = envelope.verify(reply.answer, trust, role="node", typ=envelope.ANSWER_TYPE,
                                     now=datetime.now(UTC), audience="broker")
    assert ("alpha", jti, envelope.envelope_hash(token), "match") == (
        signer.id, claims["query_jti"], claims["query_hash"], claims["status"])
    status, answer = await federation.search({"identity": AMARA, "purpose": PURPOSE})
    assert (200, True) == (status, answer["complete"])
    assert 3 == await broker_metric(federation, "signpost_broker_channels_opened_total")


async def test_a_node_refuses_forged_and_replayed_query_frames(federation: Federation) -> None:
    """Proves a node answers a query frame signed with a key outside the trust list, and a query
    frame seen before, with a `refused` frame for that id (401 and 409), never an answer."""
    jti, token = broker_query(federation)
    now = int(datetime.now(UTC).timestamp())
    forged = envelope.sign({"v": 1, "iss": "broker", "aud": "test-federation", "iat": now, "exp": now + 60,
                            "jti": "forged-1", "identity": AMARA, "purpose": PURPOSE},
                           keyfiles.generate(), envelope.QUERY_TYPE)
    replies = await channel_exchange(federation.node_url("beta"), [
        frames.QueryFrame(QueryId("forged-1"), forged).to_text(),
        frames.QueryFrame(QueryId(jti), token).to_text(),
        frames.QueryFrame(QueryId(jti), token).to_text(),
    ])
    assert [("forged-1", "refused", 401), (jti, "answer", None), (jti, "refused", 409)] == [
        (r.id, "answer" if isinstance(r, frames.AnswerFrame) else "refused",
         r.status if isinstance(r, frames.RefusedFrame) else None) for r in replies]


@pytest.mark.parametrize("case", ["forged", "replayed", "misrouted", "late", "unsigned without mutual TLS"])
async def test_the_broker_refuses_hostile_answer_frames(federation: Federation, case: str) -> None:
    """Proves an answer frame the broker must not believe makes that authority `unavailable` (an
    integrity failure, logged as unanswered) while the others answer: signed with a key outside
    the trust list (forged), a genuine answer to an earlier query sent again (replayed), an answer
    signed by another node (misrouted), an answer after the deadline (late, counted as dropped),
    or an unsigned `no_match` frame on a channel without mutual TLS, even one that agreed
    `signpost.v2`."""
    earlier: dict[str, str] = {}
    returned = asyncio.Event()  # the search came back: the broker no longer waits for this answer

    async def reply(jti: str, query: str) -> str | None:
        if case.startswith("unsigned"):
            return frames.NoMatchFrame(QueryId(jti), "gamma", "broker", envelope.envelope_hash(query),
                                       int(datetime.now(UTC).timestamp())).to_text()
        if case == "forged":
            now = int(datetime.now(UTC).timestamp())
            claims = {"v": 1, "iss": "gamma", "aud": "broker", "iat": now, "exp": now + 60, "jti": "a",
                      "query_jti": jti, "query_hash": envelope.envelope_hash(query), "status": "no_match",
                      "authority": {"id": "gamma", "name": "Gamma"}}
            answer = envelope.sign(claims, keyfiles.generate(), envelope.ANSWER_TYPE)
        elif case == "replayed":
            if not earlier:
                earlier["answer"] = signed_answer(federation, "gamma", jti, query)
            answer = earlier["answer"]
        elif case == "misrouted":
            answer = signed_answer(federation, "alpha", jti, query, authority="alpha")
        else:
            await returned.wait()  # late for certain: sent only once the broker has given up
            answer = signed_answer(federation, "gamma", jti, query)
        return frames.AnswerFrame(QueryId(jti), answer).to_text()

    await federation.stop("gamma")
    runner = await serve(federation, "gamma", hostile_node(
        reply, frames.SUBPROTOCOLS if case.startswith("unsigned") else (frames.SUBPROTOCOL,)))
    try:
        if case == "replayed":
            status, answer = await federation.search({"identity": AMARA, "purpose": PURPOSE})
            assert "no_match" == statuses(answer)["gamma"]  # the first time, a genuine answer
        status, answer = await federation.search({"identity": AMARA, "purpose": PURPOSE})
        returned.set()
        if case == "late":
            for _ in range(100):  # the late frame arrives after the search returned
                if await broker_metric(federation, "signpost_broker_answers_dropped_total"):
                    break
                await asyncio.sleep(0.1)
            assert 1 == await broker_metric(federation, "signpost_broker_answers_dropped_total")
    finally:
        await runner.cleanup()
    assert 200 == status
    assert {"alpha": "match", "beta": "match", "gamma": "unavailable"} == statuses(answer)
    integrity = await broker_metric(federation, "signpost_broker_integrity_failures_total")
    assert (0 if case == "late" else 1) == integrity


async def test_a_connection_broken_mid_search_is_unavailable_then_reopened(patient: Federation) -> None:
    """Proves that when the channel to a node breaks (its TCP connection shut down) while a search
    waits on it, that node is `unavailable` for that search, and the next search finds the
    channel open again and complete."""
    federation = patient
    node = federation.runners["gamma"].app[NODE]
    entered = asyncio.Event()
    original = node.respond
    loop = asyncio.get_running_loop()

    released = threading.Event()

    def stalled(*args: Any) -> Any:  # runs on the node's store thread
        loop.call_soon_threadsafe(entered.set)
        released.wait(60)  # answers only once the connection is broken and the search is back
        return original(*args)

    node.respond = stalled  # type: ignore[method-assign]
    broker = federation.runners["broker"].app[BROKER]
    assert broker.channels is not None
    search = asyncio.create_task(federation.search({"identity": AMARA, "purpose": PURPOSE}))
    await entered.wait()
    conn = broker.channels.channel(broker.trust.current.member("gamma")).conn
    assert conn is not None
    conn.sock.shutdown(socket.SHUT_RDWR)
    try:
        status, answer = await search
    finally:
        released.set()
    node.respond = original  # type: ignore[method-assign]
    assert (200, "unavailable") == (status, statuses(answer)["gamma"])
    status, answer = await federation.search({"identity": AMARA, "purpose": PURPOSE})
    assert (200, True) == (status, answer["complete"])


async def test_a_node_that_restarts_is_reconnected_without_a_failed_search(patient: Federation) -> None:
    """Proves a node process that stops and starts again (closing its channel) is asked over a new
    channel by the next search, which is complete."""
    federation = patient
    status, answer = await federation.search({"identity": AMARA, "purpose": PURPOSE})
    assert (200, True) == (status, answer["complete"])
    await federation.stop("gamma")
    await federation.start_node("gamma")
    for _ in range(3):
        status, answer = await federation.search({"identity": AMARA, "purpose": PURPOSE})
        assert (200, True) == (status, answer["complete"])
    assert 4 == await broker_metric(federation, "signpost_broker_channels_opened_total")


def lying_node(node: Node) -> web.Application:
    """A node that answers and logs each query truly, then sends the broker a different answer."""

    async def lie(host: Node, token: str, peer: str | None,
                  seal: channel.Seal | None = None) -> answering.Reply:
        reply = await process_query(host, token, peer)  # logs the true answer's hash
        assert reply.text is not None
        claims = dict(envelope.verify(reply.text, host.trust.current, role="node", typ=envelope.ANSWER_TYPE,
                                      now=datetime.now(UTC))[0])
        claims["status"] = "no_match"
        claims.pop("involvements", None)
        claims.pop("assessment", None)
        return answering.Reply(200, text=envelope.sign(claims, host.key, envelope.ANSWER_TYPE))

    app = web.Application()
    app[NODE] = node
    channel.add_route(app, node, process=lie, refuse_early=refuse_early, tls_peer=TLS_PEER)
    logapi.install(app, node.audit)
    return app


async def test_reconcile_catches_a_node_that_logs_one_answer_and_sends_another(
        patient: Federation, tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    """Proves `signpost audit reconcile` reports a node whose log holds the hash of one answer while
    the broker received (and logged the hash of) another over the channel."""
    federation = patient
    await federation.stop("alpha")
    node = Node(federation.node_configs["alpha"])
    await asyncio.to_thread(node.indexes.refresh)  # built before it serves, as a running node's would be
    runner = await serve(federation, "alpha", lying_node(node))
    try:
        status, answer = await federation.search({"identity": AMARA, "purpose": PURPOSE})
        assert (200, "no_match") == (status, statuses(answer)["alpha"])
        argv = ["audit", "reconcile", "--json", "--federation", str(federation.folder),
                "--state", str(tmp_path / "state"), "--token", federation.token(role="auditor")]
        capsys.readouterr()
        code = await asyncio.to_thread(main, argv)
        out = capsys.readouterr().out
    finally:
        await runner.cleanup()
        node.close()
    assert 1 == code
    assert ["alpha"] == [d["node"] for d in json.loads(out)["discrepancies"]]


async def test_an_overloaded_broker_refuses_early_naming_itself(one_at_a_time: Federation) -> None:
    """Proves a search beyond the broker's capacity is refused at once with 503, `Retry-After` and
    the problem type `broker-overloaded` (not the rate-limit store), and the search in flight
    completes."""
    federation = one_at_a_time
    node = federation.runners["gamma"].app[NODE]
    entered, release = asyncio.Event(), threading.Event()
    original = node.respond
    loop = asyncio.get_running_loop()

    def held(*args: Any) -> Any:  # runs on the node's store thread
        loop.call_soon_threadsafe(entered.set)
        release.wait()
        return original(*args)

    node.respond = held  # type: ignore[method-assign]
    first = asyncio.create_task(federation.search({"identity": AMARA, "purpose": PURPOSE}))
    await entered.wait()
    async with aiohttp.ClientSession() as session, session.post(
            federation.broker_url + "/v1/search", json={"identity": AMARA, "purpose": PURPOSE},
            headers={"Authorization": f"Bearer {federation.token()}"}) as response:
        refused = (response.status, response.headers.get("Retry-After"),
                   (await response.json(content_type=None))["type"].rsplit("/", 1)[1])
    release.set()
    status, answer = await first
    node.respond = original  # type: ignore[method-assign]
    assert (503, "1", "broker-overloaded") == refused
    assert (200, True) == (status, answer["complete"])



async def test_a_channel_opened_while_the_node_shuts_down_is_closed_at_once(federation: Federation) -> None:
    """Proves regression for a node that took about 30 s to stop: a channel the broker opened just
    as the node began shutting down (after its open channels were closed) was served on, and held
    the shutdown until the broker's heartbeat gave up. Such a channel is now closed at once with
    1001 (going away)."""
    await federation.runners["gamma"].app.shutdown()  # the node's on_shutdown: it is going away
    async with aiohttp.ClientSession() as session, session.ws_connect(
            federation.node_url("gamma") + frames.CHANNEL_PATH, protocols=(frames.SUBPROTOCOL,)) as ws:
        message = await ws.receive(timeout=30)
    assert (aiohttp.WSMsgType.CLOSE, 1001) == (message.type, message.data)
