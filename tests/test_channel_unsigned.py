"""Unsigned `no_match` answers on the channel (decision 6): only on a `signpost.v2` channel over
mutual TLS, bound to the node, the broker and the exact query, logged by the same hash at both
ends, and a node that logs one answer and sends another is still caught by reconcile."""

from __future__ import annotations

import asyncio
import json
from collections.abc import AsyncIterator
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import aiohttp
import pytest
from aiohttp import web

from broker.api import BROKER
from federation import frames
from federation.canonical import sha256_hex
from federation.commands.main import main
from federation.protocol import AnswerClaims, QueryId
from node import answering, channel
from node.api import NODE, TLS_PEER, Node, process_query, refuse_early
from tests.conftest import AMARA, JORDAN, Federation, build_federation, default_records
from tests.test_channel import broker_metric, broker_query, hostile_node, statuses
from tests.test_mtls import TlsFederation, enable_tls, serve_tls_node
from trust import envelope, logapi, tls

PURPOSE = "child_protection_enquiry"


@pytest.fixture
async def mtls(tmp_path: Path) -> AsyncIterator[TlsFederation]:
    """Three nodes serving mutual TLS, and a broker whose channels to them agree `signpost.v2`."""
    fed = build_federation(tmp_path / "federation", default_records())
    tls_dir = enable_tls(fed)
    for node_id in fed.node_configs:
        await serve_tls_node(fed, node_id)
    await fed.start_broker()
    try:
        yield TlsFederation(fed, tls_dir)
    finally:
        await fed.close()


def log_entries(federation: Federation, service: str) -> list[dict[str, Any]]:
    """Every entry a running service has logged so far (read from its open log)."""
    app = federation.runners[service].app
    audit = (app[BROKER] if service == "broker" else app[NODE]).audit
    assert audit.log is not None
    return [json.loads(e) for e in audit.log.iter_entries()]


def answer_hashes(federation: Federation, query_id: str) -> dict[str, tuple[str, str]]:
    """Per node: (status, answer hash) as the broker logged them for ``query_id``."""
    [outcome] = [e for e in log_entries(federation, "broker")
                 if e["type"] == "outcome" and e["query_id"] == query_id]
    return {node: (r["status"], r["answer_hash"]) for node, r in outcome["results"].items()}


def node_answer_hash(federation: Federation, node: str, query_id: str) -> tuple[str, str]:
    [entry] = [e for e in log_entries(federation, node) if e["type"] == "query" and e["query_id"] == query_id]
    return entry["outcome"], entry["answer_hash"]


async def exchange(fed: TlsFederation, node: str, protocols: tuple[str, ...],
                   sent: list[str]) -> tuple[str | None, list[str]]:
    """Open ``node``'s channel with the broker's certificate, offering ``protocols``; send frames
    and read one reply each. Returns the agreed subprotocol and the replies' exact texts."""
    context = tls.client_context(fed.files("broker"))
    async with aiohttp.ClientSession(connector=aiohttp.TCPConnector(ssl=context)) as session, \
            session.ws_connect(fed.node_url(node) + frames.CHANNEL_PATH, protocols=protocols,
                               server_hostname=node) as ws:
        replies = []
        for text in sent:
            await ws.send_str(text)
            replies.append((await ws.receive()).data)
        return ws.protocol, replies


async def test_a_no_match_over_mutual_tls_is_unsigned_and_logged_by_one_hash_at_both_ends(
        mtls: TlsFederation) -> None:
    """Proves that over a `signpost.v2` channel with mutual TLS a node that does not hold the child
    answers with an unsigned `no_match` frame bound to the broker and the query's hash, that the
    node logs the SHA-256 of that frame's exact text, that a search through the broker logs the
    same hash for that node as the node did, and that answers that disclose (match) stay signed."""
    fed = mtls.fed
    jti, token = broker_query(fed)
    agreed, [reply] = await exchange(mtls, "gamma", frames.SUBPROTOCOLS,
                                     [frames.QueryFrame(QueryId(jti), token).to_text()])
    frame = frames.parse(reply)
    assert (frames.SUBPROTOCOL_V2, frames.NoMatchFrame) == (agreed, type(frame))
    assert isinstance(frame, frames.NoMatchFrame)
    assert ("gamma", "broker", envelope.envelope_hash(token)) == (frame.iss, frame.aud, frame.query_hash)
    assert ("no_match", sha256_hex(reply.encode())) == node_answer_hash(fed, "gamma", jti)

    status, answer = await fed.search({"identity": AMARA, "purpose": PURPOSE})
    assert (200, {"alpha": "match", "beta": "match", "gamma": "no_match"}) == (status, statuses(answer))
    broker_logged = answer_hashes(fed, answer["query_id"])
    nodes_logged = {n: node_answer_hash(fed, n, answer["query_id"]) for n in ("alpha", "beta", "gamma")}
    assert nodes_logged == broker_logged
    assert 0 == await broker_metric(fed, "signpost_broker_integrity_failures_total")

    jti, token = broker_query(fed)
    _, [reply] = await exchange(mtls, "alpha", frames.SUBPROTOCOLS,
                                [frames.QueryFrame(QueryId(jti), token).to_text()])
    signed = frames.parse(reply)
    assert isinstance(signed, frames.AnswerFrame)
    trust = fed.runners["broker"].app[BROKER].trust.current
    claims, signer = envelope.verify(signed.answer, trust, role="node", typ=envelope.ANSWER_TYPE,
                                     now=datetime.now(UTC), audience="broker")
    assert ("alpha", "match") == (signer.id, claims["status"])


async def test_a_v1_channel_gets_only_signed_answers(mtls: TlsFederation) -> None:
    """Proves a broker that offers only `signpost.v1` gets a signed answer for a `no_match`, as before."""
    fed = mtls.fed
    jti, token = broker_query(fed)
    agreed, [reply] = await exchange(mtls, "gamma", (frames.SUBPROTOCOL,),
                                     [frames.QueryFrame(QueryId(jti), token).to_text()])
    frame = frames.parse(reply)
    assert (frames.SUBPROTOCOL, frames.AnswerFrame) == (agreed, type(frame))
    assert isinstance(frame, frames.AnswerFrame)
    assert ("no_match", envelope.envelope_hash(frame.answer)) == node_answer_hash(fed, "gamma", jti)


async def serve_tls(fed: Federation, node_id: str, app: web.Application) -> web.AppRunner:
    config = fed.node_configs[node_id]
    assert config.tls is not None
    runner = web.AppRunner(app)
    await runner.setup()
    await web.TCPSite(runner, "127.0.0.1", config.port, ssl_context=tls.server_context(config.tls)).start()
    return runner


MISBOUND = {
    "names another node": {"iss": "alpha"},
    "for another broker": {"aud": "broker-b"},
    "bound to another query": {"query_hash": "0" * 64},
}


async def test_the_broker_refuses_unsigned_no_match_frames_bound_to_anything_else(
        mtls: TlsFederation) -> None:
    """Proves an unsigned `no_match` frame on gamma's own mutual-TLS channel makes gamma
    `unavailable` (an integrity failure) when it names another node, another broker or another
    query's hash, and is believed when it names gamma, this broker and this query."""
    fed = mtls.fed
    cases = [*MISBOUND.values(), {}]
    now = int(datetime.now(UTC).timestamp())

    async def reply(jti: str, query: str) -> str:
        fields = {"iss": "gamma", "aud": "broker", "query_hash": envelope.envelope_hash(query),
                  **cases.pop(0)}
        return frames.NoMatchFrame(QueryId(jti), fields["iss"], fields["aud"], fields["query_hash"],
                                   now).to_text()

    await fed.stop("gamma")
    runner = await serve_tls(fed, "gamma", hostile_node(reply, protocols=frames.SUBPROTOCOLS))
    seen = []
    try:
        for _ in range(len(MISBOUND) + 1):
            status, answer = await fed.search({"identity": JORDAN, "purpose": PURPOSE})
            assert 200 == status
            seen.append(statuses(answer)["gamma"])
    finally:
        await runner.cleanup()
    assert ["unavailable"] * len(MISBOUND) + ["no_match"] == seen
    assert len(MISBOUND) == await broker_metric(fed, "signpost_broker_integrity_failures_total")


def lying_node(node: Node) -> web.Application:
    """A node that answers and logs each query truly, then sends the broker an unsigned no_match."""

    async def lie(host: Node, token: str, peer: str | None,
                  seal: channel.Seal | None = None) -> answering.Reply:
        reply = await process_query(host, token, peer)  # signs and logs the true answer's hash
        assert reply.text is not None and seal is not None
        claims = dict(envelope.verify(reply.text, host.trust.current, role="node", typ=envelope.ANSWER_TYPE,
                                      now=datetime.now(UTC))[0])
        for disclosed in ("involvements", "assessment", "contact"):
            claims.pop(disclosed, None)
        return answering.Reply(200, text=seal(AnswerClaims.from_wire({**claims, "status": "no_match"})))

    app = web.Application()
    app[NODE] = node
    channel.add_route(app, node, process=lie, refuse_early=refuse_early, tls_peer=TLS_PEER)
    logapi.install(app, node.audit)
    return app


async def test_reconcile_catches_a_node_that_logs_a_match_and_sends_an_unsigned_no_match(
        mtls: TlsFederation, tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    """Proves `signpost audit reconcile` reports a node that logged a (signed) match while it sent
    the broker an unsigned `no_match` frame: the broker logged the frame's hash, the node another."""
    fed = mtls.fed
    await fed.stop("alpha")
    node = Node(fed.node_configs["alpha"])
    await asyncio.to_thread(node.indexes.refresh)
    runner = await serve_tls(fed, "alpha", lying_node(node))
    try:
        status, answer = await fed.search({"identity": AMARA, "purpose": PURPOSE})
        assert (200, "no_match") == (status, statuses(answer)["alpha"])
        tls_dir = mtls.tls_dir
        argv = ["audit", "reconcile", "--json", "--federation", str(fed.folder),
                "--state", str(tmp_path / "state"), "--token", fed.token(role="auditor"),
                "--tls-ca", str(tls_dir / "ca.pem"), "--tls-cert", str(tls_dir / "broker.pem"),
                "--tls-key", str(tls_dir / "broker.key")]
        capsys.readouterr()
        code = await asyncio.to_thread(main, argv)
        out = capsys.readouterr().out
    finally:
        await runner.cleanup()
        node.close()
    assert 1 == code
    assert ["alpha"] == [d["node"] for d in json.loads(out)["discrepancies"]]


async def test_a_node_that_restarts_over_mutual_tls_is_reconnected_without_a_failed_search(
        mtls: TlsFederation) -> None:
    """Proves a node serving mutual TLS that stops and starts again closes its channel, so the next
    searches open a new one and are complete."""
    fed = mtls.fed
    status, answer = await fed.search({"identity": AMARA, "purpose": PURPOSE})
    assert (200, True) == (status, answer["complete"])
    await fed.stop("gamma")
    await serve_tls_node(fed, "gamma")
    for _ in range(3):
        status, answer = await fed.search({"identity": AMARA, "purpose": PURPOSE})
        assert (200, True) == (status, answer["complete"])
    assert 4 == await broker_metric(fed, "signpost_broker_channels_opened_total")
