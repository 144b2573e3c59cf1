"""One query from envelope to reply: answered or refused, logged, then handed back.

``process_query`` (on the event loop) hands the envelope to the store's thread and awaits one
``Reply``. On the store's thread ``run_query`` does all the rest: the early refusals (wrong
client, not ready), verification, the replay check, match, policy and signing
(``Node.respond``), the audit entry for whatever came of it, and the entry's hand-off to the
audit log's writer thread. The writer makes the entry durable (with any others waiting: group
commit) and only then passes the reply back to the event loop. So a query costs one hand-off to
the store's thread, one to the writer and one back, and the reply leaves only after its entry is
durable; if the entry cannot be written the node answers 503 ``audit-unavailable`` and the
signed answer is thrown away.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import re
import time
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any, Protocol

from aiohttp import web

from federation.canonical import JsonObject
from federation.errors import FieldError, SignpostError, ValidationError
from federation.http import problem, problem_document
from federation.protocol import PROTOCOL_VERSION, AnswerClaims
from node import audit as audits
from node import channel
from node.config import NodeConfig
from node.indexing import IndexKeeper
from node.matching import MatchIndex
from node.metrics import NodeMetrics
from node.outbox import DeliveryWorker
from node.policy import PolicyRefusal
from node.store import Store
from node.worker import StoreBusy, StoreWorker
from trust import envelope
from trust.errors import ExpiredError, TrustError
from trust.logapi import LogService
from trust.merkle import LogError
from trust.store import TrustStore

log = logging.getLogger("signpost.node")

RETRY_AFTER_SECONDS = 1
"""What a refusal for a busy or not yet ready node asks the broker to wait before trying again."""


class ReplayedQuery(SignpostError):
    """A query id arrived a second time within its lifetime."""


@dataclass(frozen=True)
class Refusal:
    """Why a query that was read was not answered: the problem type's name and its detail."""

    kind: str
    detail: str


@dataclass(frozen=True)
class Reply:
    """What goes back for one query: a signed (or sealed) answer, or a problem document.

    Made on the store's thread; ``POST /v1/query`` turns it into the HTTP response, a channel into
    an ``answer``, ``no_match`` or ``refused`` frame (no HTTP response made and read back).
    """

    status: int
    text: str | None = None  # the answer as sent: a signed envelope, or a channel's sealed frame
    title: str = ""
    detail: str = ""
    kind: str = "about:blank"
    errors: tuple[FieldError, ...] = ()
    retry_after: int | None = None
    notified: bool = False  # the answer put messages in the outbox: wake its worker

    def response(self) -> web.Response:
        """The HTTP response: the answer body (``answer_body``), or the problem document."""
        if self.text is not None:
            return web.Response(body=answer_body(self.text), headers=_ANSWER_HEADERS)
        headers = {"Retry-After": str(self.retry_after)} if self.retry_after is not None else None
        return problem(self.status, self.title, self.detail, kind=self.kind, errors=self.errors,
                       headers=headers)

    def problem_document(self) -> JsonObject:
        """The problem document of a refusal, as the HTTP response carries it."""
        return problem_document(self.status, self.title, self.detail, kind=self.kind, errors=self.errors)


_ANSWER_HEADERS = {"Content-Type": "application/json; charset=utf-8",
                   "Cache-Control": "no-store"}  # answers concern children
_COMPACT_JWS = re.compile(r"[A-Za-z0-9_-]+\.[A-Za-z0-9_-]+\.[A-Za-z0-9_-]+")
_ANSWER_START = f'{{"v": {PROTOCOL_VERSION}, "answer": "'.encode("ascii")


def answer_body(answer: str) -> bytes:
    """``{"v": 1, "answer": "..."}``, as ``json.dumps`` writes it; a compact JWS (base64url
    and dots) needs no escaping, so it is copied in as it is."""
    if _COMPACT_JWS.fullmatch(answer):
        return _ANSWER_START + answer.encode("ascii") + b'"}'
    return json.dumps({"v": PROTOCOL_VERSION, "answer": answer}).encode("utf-8")


@dataclass
class QueryOutcome:
    """What one query did, gathered as it goes, for its audit entry.

    ``context`` is set once the envelope's signature verified; ``answer_hash`` and ``status``
    once an answer was signed; ``refusal`` when the query was refused.
    """

    token: str
    context: audits.QueryContext | None = None
    pseudonym: str | None = None
    candidates: tuple[str, ...] = ()
    status: str | None = None
    answer_hash: str | None = None
    refusal: Refusal | None = None
    notified: bool = False
    lead_informed: bool = False
    notifications: dict[str, int] | None = None  # messages kept in the outbox, by kind

    def refuse(self, status: int, title: str, detail: str, *, kind: str,
               errors: Iterable[FieldError] = (), retry_after: int | None = None) -> Reply:
        """The reply for a refused query, remembering why for the audit entry."""
        self.refusal = Refusal(kind, detail)
        return Reply(status, title=title, detail=detail, kind=kind, errors=tuple(errors),
                     retry_after=retry_after)


class Node(Protocol):
    """What answering a query needs of the node (``node.api.Node``, which wires this module in)."""

    @property
    def config(self) -> NodeConfig: ...

    @property
    def trust(self) -> TrustStore: ...

    @property
    def audit(self) -> LogService: ...

    @property
    def worker(self) -> StoreWorker: ...

    @property
    def indexes(self) -> IndexKeeper: ...

    @property
    def metrics(self) -> NodeMetrics: ...

    @property
    def notifier(self) -> DeliveryWorker: ...

    def not_ready(self) -> list[str]: ...

    def respond(self, store: Store, query_token: str, now: datetime, index: MatchIndex,
                outcome: QueryOutcome, seal: channel.Seal | None = None) -> tuple[AnswerClaims, str]: ...


async def process_query(node: Node, token: str, peer: str | None,
                        seal: channel.Seal | None = None) -> Reply:
    """Answer one query envelope, logged (answered or refused) before the reply is returned.

    Every transport that carries queries calls this, so each query is verified, answered and
    logged the same way. ``peer`` is the broker that mutual TLS authenticated, if any; ``seal``
    (a channel's) may give the unsigned text of an answer that discloses nothing.
    """
    loop = asyncio.get_running_loop()
    future: asyncio.Future[Reply] = loop.create_future()

    def deliver(reply: Reply) -> None:  # on the writer's (or the store's) thread
        with contextlib.suppress(RuntimeError):  # a closed loop has nobody waiting any more
            loop.call_soon_threadsafe(_settle, future, reply)

    queued_at = time.monotonic()
    if node.worker.submit(lambda: run_query(node, token, peer, seal, queued_at, deliver)):
        reply = await future
    else:  # the store's thread has stopped: refuse, and log the refusal from here
        outcome = QueryOutcome(token=token)
        reply = outcome.refuse(503, "Node busy", "the store's thread has stopped", kind="node-busy",
                               retry_after=RETRY_AFTER_SECONDS)
        try:
            await node.audit.append(entry_for(node, outcome, reply))
        except Exception as exc:
            reply = _unavailable(exc)
    if reply.notified:
        node.notifier.wake()
    return reply


def _settle(future: asyncio.Future[Reply], reply: Reply) -> None:
    if not future.cancelled():
        future.set_result(reply)


def run_query(node: Node, token: str, peer: str | None, seal: channel.Seal | None,
              queued_at: float, deliver: Callable[[Reply], None]) -> None:
    """On the store's thread: answer or refuse, make the audit entry, hand it to the log's writer,
    which calls ``deliver`` once it is durable (or with 503 if it cannot be written)."""
    outcome = QueryOutcome(token=token)
    try:
        reply = _answer(node, token, peer, outcome, seal, queued_at)
    except Exception:  # a fault, not a refusal: logged as a refusal like any other, then 500
        log.exception("query failed")
        reply = outcome.refuse(500, "Internal error", "the node could not answer this query",
                               kind="internal-error")
    entry = entry_for(node, outcome, reply)
    if node.audit.path is None:  # development only: nothing is logged (said at start)
        deliver(reply)
        return
    audit_log = node.audit.log
    if audit_log is None:
        deliver(_unavailable("audit log is not open"))
        return

    def done(result: int | BaseException) -> None:  # on the writer's thread, once durable
        if isinstance(result, BaseException):
            log.error("audit log append failed: %s", result)
            deliver(_unavailable(f"audit log: {result}"))
        else:
            deliver(reply)

    try:
        audit_log.submit(entry, done)
    except (LogError, OSError) as exc:
        log.error("audit log append failed: %s", exc)
        deliver(_unavailable(f"audit log: {exc}"))


def _unavailable(reason: object) -> Reply:
    return Reply(503, title="Audit log unavailable", kind="audit-unavailable",
                 detail=f"the node cannot log this query, so it does not answer: {reason}")


def entry_for(node: Node, outcome: QueryOutcome, reply: Reply) -> Mapping[str, Any]:
    """The audit entry for one query: answered, refused after verification, or refused before."""
    now = datetime.now(UTC)
    node_id = node.config.id
    if outcome.answer_hash is not None and outcome.context is not None and outcome.status is not None:
        return audits.query_entry(node_id, now, outcome.context, outcome=outcome.status,
                                  pseudonym=outcome.pseudonym, candidates=outcome.candidates,
                                  answer_hash=outcome.answer_hash, notifications=outcome.notifications)
    refusal = outcome.refusal or Refusal(f"http-{reply.status}", "")
    if outcome.context is not None:
        return audits.query_entry(node_id, now, outcome.context, outcome="refused", reason=refusal.kind)
    return audits.refused_entry(node_id, now, outcome.token, refusal.kind, refusal.detail)


def _answer(node: Node, token: str, peer: str | None, outcome: QueryOutcome,
            seal: channel.Seal | None, queued_at: float) -> Reply:
    if peer is not None and envelope.unverified_issuer(token) != peer:
        # Only a further restriction: the signature is still verified against the trust list.
        return outcome.refuse(403, "Client certificate refused", f"TLS: the query's issuer is not {peer!r}, "
                              "the broker whose certificate sent it", kind="client-certificate")
    now = datetime.now(UTC)
    holder = node.indexes.current
    if holder is None:
        return outcome.refuse(503, "Node not ready", f"the node is not ready to answer: "
                              f"{', '.join(node.not_ready())}", kind="node-not-ready",
                              retry_after=RETRY_AFTER_SECONDS)
    index = holder.index
    try:
        node.trust.current.check_current(now)
        claims, signed = node.worker.call(
            lambda store: node.respond(store, token, now, index, outcome, seal), queued_at)
    except StoreBusy as exc:
        log.warning("query refused: store busy")
        return outcome.refuse(503, "Node busy", str(exc), kind="node-busy", retry_after=RETRY_AFTER_SECONDS)
    except ExpiredError as exc:
        return outcome.refuse(401, "Expired", str(exc), kind="expired")
    except TrustError as exc:
        log.warning("query refused: %s", exc.__class__.__name__)
        return outcome.refuse(401, "Query not trusted", str(exc), kind="untrusted-query")
    except ReplayedQuery as exc:
        return outcome.refuse(409, "Replayed query", str(exc), kind="replayed-query")
    except PolicyRefusal as exc:
        log.warning("query refused by policy: %s", exc.rule)
        return outcome.refuse(403, "Query refused", str(exc), kind=f"policy-{exc.rule}")
    except ValidationError as exc:
        return outcome.refuse(400, "Invalid query", str(exc), errors=exc.errors, kind="invalid-query")
    except FieldError as exc:
        return outcome.refuse(400, "Invalid query", str(exc), errors=[exc], kind="invalid-query")
    log.debug("query %s answered", claims.query_jti)  # the outcome goes to the audit log only
    node.metrics.answers.inc(claims.status.value)
    outcome.status, outcome.answer_hash = claims.status.value, envelope.envelope_hash(signed)
    return Reply(200, text=signed, notified=outcome.notified)
