"""Sending one signed query to every node at once and judging each answer.

Two different failures are kept apart: a node that did not answer in time (or at all) is
``unavailable``; a node that answered with something that fails verification is also reported
``unavailable`` to the practitioner, but flagged as an integrity failure for operators.
"""

from __future__ import annotations

import asyncio
import logging
import time
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any, NamedTuple

import aiohttp

from federation import frames, safejson
from federation.canonical import JsonObject, sha256_hex
from federation.http import read_capped
from federation.protocol import AnswerClaims, Contact, Disclosed, MessageError, Status, disclosure_wire
from trust import envelope, tls
from trust.errors import TrustError
from trust.trustlist import Member, TrustList

log = logging.getLogger("signpost.broker")

ANSWER_LIMITS = safejson.JsonLimits(max_bytes=256 * 1024, max_depth=16)
"""Bounds on one node's answer body (a signed answer is a few kilobytes)."""


class NodeResult(NamedTuple):
    """What the broker concluded about one authority (a named tuple: the broker makes one per
    authority per search, 152 of them, and a frozen dataclass cost three times as much)."""

    authority: str
    name: str
    status: Status
    involvements: tuple[Disclosed, ...] = ()
    contact: Contact | None = None
    assessment: Contact | None = None
    reason: str | None = None
    integrity_failure: bool = False
    abandoned: bool = False  # the query was sent, but the broker stopped waiting for its answer
    answer_hash: str | None = None
    seconds: float = 0.0
    lead_informed: bool = False  # a match: the node told the child's lead practitioner who searched

    def to_wire(self) -> JsonObject:
        if self.status is Status.NO_MATCH and self.contact is None and self.reason is None:
            # most of a search's results: what ``disclosure_wire`` gives for them, made directly
            return {"authority": {"id": self.authority, "name": self.name}, "status": "no_match"}
        out: JsonObject = {"authority": {"id": self.authority, "name": self.name},
                           **disclosure_wire(self.status, self.involvements, self.contact, self.assessment)}
        if self.status is Status.MATCH:
            out["lead_informed"] = self.lead_informed
        if self.reason is not None:
            out["reason"] = self.reason
        return out


def unavailable(node: Member, reason: str, started: float, *, integrity: bool = False,
                 abandoned: bool = False) -> NodeResult:
    return NodeResult(node.id, node.name, Status.UNAVAILABLE, reason=reason,
                      integrity_failure=integrity, abandoned=abandoned, seconds=time.monotonic() - started)


@dataclass(frozen=True)
class Query:
    """One signed query as the fan-out sends it: the envelope, its id and its hash (computed once)."""

    token: str
    jti: str
    hash: str

    @classmethod
    def of(cls, token: str, jti: str) -> Query:
        return cls(token, jti, envelope.envelope_hash(token))


def judge(node: Member, token: Any, query: Query, trust: TrustList, broker_id: str,
          started: float) -> NodeResult:
    """Verify one node's answer envelope: signed by that node, for this broker, bound to this query.

    One parse and one signature check (``envelope.verify``); the query's hash was computed once
    for every node.
    """
    if not isinstance(token, str):
        return unavailable(node, "answer is not a signed envelope", started, integrity=True)
    try:
        claims, signer = envelope.verify(
            token, trust, role="node", typ=envelope.ANSWER_TYPE, now=datetime.now(UTC),
            audience=broker_id,
        )
    except TrustError as exc:
        log.warning("answer from %s dropped: %s", node.id, exc)
        return unavailable(node, "answer failed signature verification", started, integrity=True)
    if signer.id != node.id:
        return unavailable(node, "answer signed by a different member", started, integrity=True)
    bound = claims.get("query_jti") == query.jti and claims.get("query_hash") == query.hash
    if not bound:
        return unavailable(node, "answer is not bound to this query", started, integrity=True)
    try:
        answer = AnswerClaims.from_wire(claims)
    except MessageError as exc:
        log.warning("answer from %s dropped: %s", node.id, exc.field)
        return unavailable(node, "answer is malformed", started, integrity=True)
    return NodeResult(
        authority=node.id,
        name=node.name,
        status=answer.status,
        involvements=answer.involvements,
        contact=answer.contact,
        assessment=answer.assessment,
        answer_hash=envelope.envelope_hash(token),
        seconds=time.monotonic() - started,
        lead_informed=answer.lead_informed,
    )


def judge_no_match(node: Member, frame: frames.NoMatchFrame, text: str, query: Query, broker_id: str,
                   started: float) -> NodeResult:
    """An unsigned ``no_match`` frame, read on ``node``'s mutually authenticated ``signpost.v2``
    channel: it must name that node, this broker and this exact query. Logged by the hash of the
    frame's exact text, as the node logged it (decision 6)."""
    if frame.iss != node.id:
        return unavailable(node, "answer names a different member", started, integrity=True)
    if frame.aud != broker_id:
        return unavailable(node, "answer is for a different broker", started, integrity=True)
    if frame.id != query.jti or frame.query_hash != query.hash:
        return unavailable(node, "answer is not bound to this query", started, integrity=True)
    return NodeResult(authority=node.id, name=node.name, status=Status.NO_MATCH,
                      answer_hash=sha256_hex(text.encode("utf-8")), seconds=time.monotonic() - started)


async def ask_http(
    session: aiohttp.ClientSession, node: Member, query: Query, trust: TrustList, broker_id: str,
    deadline: float,
) -> NodeResult:
    """Ask one node with ``POST /v1/query`` (a node without the channel), within its deadline."""
    started = time.monotonic()
    if not node.endpoint:
        return unavailable(node, "no endpoint in the trust list", started)
    url = node.endpoint.rstrip("/") + "/v1/query"
    sent = False
    try:
        async with asyncio.timeout(deadline):
            # Over TLS the node is addressed by its member id (SNI and certificate name); the
            # handshake checks the chain and the trust-list binding (see trust.tls.client_context).
            server_hostname = node.id if url.startswith("https:") else None
            sent = True
            async with session.post(url, json={"v": 1, "query": query.token},
                                    server_hostname=server_hostname) as response:
                der = tls.response_certificate(response) if server_hostname else None
                if der is not None:
                    # Checked again per request when the connection is still at hand: a pooled
                    # connection outlives a change of the node's pin in the trust list.
                    try:
                        tls.peer_member(trust, der, "node", expected=node.id)
                    except tls.CertificateError as exc:
                        log.warning("node %s: %s", node.id, exc)
                        return unavailable(node, "node certificate is not bound to it in the trust list",
                                            started, integrity=True)
                if response.status == 503 and response.headers.get("Retry-After") is not None:
                    # Not ready (index building) or busy: unavailable now, not after the deadline.
                    log.warning("node %s not ready or busy (HTTP 503)", node.id)
                    return unavailable(node, "node not ready or busy (HTTP 503)", started)
                if response.status != 200:
                    log.warning("node %s answered HTTP %d", node.id, response.status)
                    return unavailable(
                        node, f"node refused the query (HTTP {response.status})", started)
                raw = await read_capped(response.content, ANSWER_LIMITS.max_bytes)
    except TimeoutError:
        return unavailable(node, f"no answer within {deadline:g} s", started, abandoned=sent)
    except aiohttp.ClientConnectorCertificateError as exc:
        log.warning("node %s: certificate refused: %s", node.id, exc.certificate_error)
        return unavailable(node, "node certificate refused (CA or trust-list binding)", started,
                            integrity=True)
    except (aiohttp.ClientError, OSError, ValueError) as exc:
        return unavailable(node, f"not reachable ({exc.__class__.__name__})", started)
    try:
        body = safejson.parse(raw, "answer", ANSWER_LIMITS)  # the one door for a node's answer body
    except safejson.JsonError as exc:
        log.warning("node %s answered garbage: %s", node.id, exc.message)
        return unavailable(node, "answer is not a signed envelope", started, integrity=True)
    if not isinstance(body, dict):
        return unavailable(node, "answer is not a signed envelope", started, integrity=True)
    return judge(node, body.get("answer"), query, trust, broker_id, started)


async def fan_out_http(
    session: aiohttp.ClientSession, nodes: list[Member], query: Query, trust: TrustList, broker_id: str,
    deadline: float,
) -> list[NodeResult]:
    """Ask every node at once over ``POST /v1/query``, each within its deadline; results in node order."""
    return list(await asyncio.gather(*(
        ask_http(session, n, query, trust, broker_id, deadline) for n in nodes
    )))
