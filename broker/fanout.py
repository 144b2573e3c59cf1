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
from typing import Any

import aiohttp

from federation import safejson
from federation.canonical import JsonObject
from federation.http import read_capped
from federation.protocol import AnswerClaims, Contact, Disclosed, MessageError, Status
from trust import envelope, tls
from trust.errors import TrustError
from trust.trustlist import Member, TrustList

log = logging.getLogger("signpost.broker")

ANSWER_LIMITS = safejson.JsonLimits(max_bytes=256 * 1024, max_depth=16)
"""Bounds on one node's answer body (a signed answer is a few kilobytes)."""


@dataclass(frozen=True)
class NodeResult:
    """What the broker concluded about one authority."""

    authority: str
    name: str
    status: Status
    involvements: tuple[Disclosed, ...] = ()
    contact: Contact | None = None
    assessment: Contact | None = None
    reason: str | None = None
    integrity_failure: bool = False
    answer_hash: str | None = None
    seconds: float = 0.0

    def to_wire(self) -> JsonObject:
        out: JsonObject = {
            "authority": {"id": self.authority, "name": self.name},
            "status": self.status.value,
        }
        if self.status is Status.MATCH:
            out["involvements"] = [i.to_wire() for i in self.involvements]
            out["assessment"] = self.assessment.to_wire() if self.assessment else None
        if self.contact is not None:
            out["contact"] = self.contact.to_wire()
        if self.reason is not None:
            out["reason"] = self.reason
        return out


def _unavailable(node: Member, reason: str, started: float, *, integrity: bool = False) -> NodeResult:
    return NodeResult(node.id, node.name, Status.UNAVAILABLE, reason=reason,
                      integrity_failure=integrity, seconds=time.monotonic() - started)


def judge(
    node: Member, body: Any, query_token: str, query_jti: str, trust: TrustList, broker_id: str,
    started: float,
) -> NodeResult:
    """Verify one node's answer: signed by that node, for this broker, bound to this query."""
    if not isinstance(body, dict) or not isinstance(body.get("answer"), str):
        return _unavailable(node, "answer is not a signed envelope", started, integrity=True)
    token = body["answer"]
    try:
        claims, signer = envelope.verify(
            token, trust, role="node", typ=envelope.ANSWER_TYPE, now=datetime.now(UTC),
            audience=broker_id,
        )
    except TrustError as exc:
        log.warning("answer from %s dropped: %s", node.id, exc)
        return _unavailable(node, "answer failed signature verification", started, integrity=True)
    if signer.id != node.id:
        return _unavailable(node, "answer signed by a different member", started, integrity=True)
    bound = (claims.get("query_jti") == query_jti
             and claims.get("query_hash") == envelope.envelope_hash(query_token))
    if not bound:
        return _unavailable(node, "answer is not bound to this query", started, integrity=True)
    try:
        answer = AnswerClaims.from_wire(claims)
    except MessageError as exc:
        log.warning("answer from %s dropped: %s", node.id, exc.field)
        return _unavailable(node, "answer is malformed", started, integrity=True)
    return NodeResult(
        authority=node.id,
        name=node.name,
        status=answer.status,
        involvements=answer.involvements,
        contact=answer.contact,
        assessment=answer.assessment,
        answer_hash=envelope.envelope_hash(token),
        seconds=time.monotonic() - started,
    )


async def ask(
    session: aiohttp.ClientSession, node: Member, query_token: str, query_jti: str,
    trust: TrustList, broker_id: str, deadline: float,
) -> NodeResult:
    """Ask one node, within its own deadline."""
    started = time.monotonic()
    if not node.endpoint:
        return _unavailable(node, "no endpoint in the trust list", started)
    url = node.endpoint.rstrip("/") + "/v1/query"
    try:
        async with asyncio.timeout(deadline):
            # Over TLS the node is addressed by its member id (SNI and certificate name); the
            # handshake checks the chain and the trust-list binding (see trust.tls.client_context).
            server_hostname = node.id if url.startswith("https:") else None
            async with session.post(url, json={"v": 1, "query": query_token},
                                    server_hostname=server_hostname) as response:
                der = tls.response_certificate(response) if server_hostname else None
                if der is not None:
                    # Checked again per request when the connection is still at hand: a pooled
                    # connection outlives a change of the node's pin in the trust list.
                    try:
                        tls.peer_member(trust, der, "node", expected=node.id)
                    except tls.CertificateError as exc:
                        log.warning("node %s: %s", node.id, exc)
                        return _unavailable(node, "node certificate is not bound to it in the trust list",
                                            started, integrity=True)
                if response.status != 200:
                    log.warning("node %s answered HTTP %d", node.id, response.status)
                    return _unavailable(
                        node, f"node refused the query (HTTP {response.status})", started)
                raw = await read_capped(response.content, ANSWER_LIMITS.max_bytes)
    except TimeoutError:
        return _unavailable(node, f"no answer within {deadline:g} s", started)
    except aiohttp.ClientConnectorCertificateError as exc:
        log.warning("node %s: certificate refused: %s", node.id, exc.certificate_error)
        return _unavailable(node, "node certificate refused (CA or trust-list binding)", started,
                            integrity=True)
    except (aiohttp.ClientError, OSError, ValueError) as exc:
        return _unavailable(node, f"not reachable ({exc.__class__.__name__})", started)
    try:
        body = safejson.parse(raw, "answer", ANSWER_LIMITS)  # the one door for a node's answer body
    except safejson.JsonError as exc:
        log.warning("node %s answered garbage: %s", node.id, exc.message)
        return _unavailable(node, "answer is not a signed envelope", started, integrity=True)
    return judge(node, body, query_token, query_jti, trust, broker_id, started)


async def fan_out(
    session: aiohttp.ClientSession, nodes: list[Member], query_token: str, query_jti: str,
    trust: TrustList, broker_id: str, deadline: float,
) -> list[NodeResult]:
    """Ask every node concurrently; each gets its own deadline; results in node order."""
    return list(await asyncio.gather(*(
        ask(session, n, query_token, query_jti, trust, broker_id, deadline) for n in nodes
    )))
