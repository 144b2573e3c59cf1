"""The node's HTTP API: ``POST /v1/query`` takes a signed query and returns a signed answer.

Order of work for one query (on the thread that owns the store, see ``node.worker``; how it
gets there and back, logged, is ``node.answering``): verify the broker's signature against the
trust list (fixed algorithm, issuer must be a broker, ``kid`` only a hint), check expiry, refuse
a ``jti`` seen before (``node.replay``), match, apply the disclosure policy, sign an answer
bound to the query's ``jti`` and hash.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import sqlite3
import time
import uuid
from collections.abc import AsyncIterator
from datetime import UTC, date, datetime

from aiohttp import web

from federation import identity, metrics
from federation.checks import RequesterContact
from federation.errors import ConfigError, FieldError
from federation.http import health, problem, read_json_object
from federation.protocol import (
    ANSWER_LIFETIME_SECONDS,
    AnswerClaims,
    AuthorityRef,
    Contact,
    MemberId,
    QueryClaims,
    Status,
)
from federation.tasks import on_thread
from node import audit as audits
from node import channel, replay, staff
from node import checks as checking
from node import outbox as outboxes
from node import purge as purging
from node import snapshot as snapshots
from node.answering import RETRY_AFTER_SECONDS, QueryOutcome, ReplayedQuery, process_query
from node.config import NodeConfig
from node.indexing import IndexKeeper
from node.matching import MatchIndex
from node.metrics import NodeMetrics
from node.policy import check_query, decide, lead_notices, notifications
from node.store import Store
from node.worker import StoreWorker
from trust import envelope, logapi, tls
from trust.errors import ExpiredError
from trust.keys import load_private
from trust.store import TrustStore
from trust.trustlist import Member

log = logging.getLogger("signpost.node")


class Node:
    """A running node's state (one per app)."""

    def __init__(self, config: NodeConfig) -> None:
        self.config = config
        self.worker = StoreWorker(config.database, busy_timeout_seconds=config.busy_timeout_seconds)
        self.indexes = IndexKeeper(config.database, busy_timeout_seconds=config.busy_timeout_seconds,
                                   today=lambda: datetime.now(UTC).date(),
                                   snapshot=snapshots.path_for(config.database))
        self.trust = TrustStore(config.trust_root, config.trust_list, url=config.trust_list_url)
        self.trust.load()
        self.key = load_private(config.key)
        self.signer = envelope.Signer(self.key)
        self.metrics = NodeMetrics()
        self.seen = replay.SeenQueries()  # query ids, on the store's thread
        self.seen_recovered = False  # until then, query ids go to the store's table
        self.trust.report_metrics(self.metrics)
        me = self.trust.current.member(config.id, "node")
        self.name = me.name
        contact = dict(me.contact or {}) | dict(config.signposting_contact)
        self.contact = Contact(
            name=contact.get("name", f"{me.name} signposting team"),
            phone=contact.get("phone"),
            secure_email=contact.get("secure_email"),
            organisation=contact.get("organisation", me.name),
        )
        self.outbox = outboxes.Outbox(self.worker.store)
        self.notifier = outboxes.DeliveryWorker(
            self.outbox, self.key, config.id,
            outboxes.RetryPolicy(config.notify_retry_base_seconds, config.notify_retry_cap_seconds,
                                 config.notify_max_age_seconds, config.notify_timeout_seconds),
            clock=time.time, worker=self.worker, unsafe_http=config.unsafe_http_webhooks,
            audit=lambda item: self.audit.append(item),
        )
        plain = self.worker.store.plain_http_webhooks()  # before any job runs on the store's thread
        if plain and not config.unsafe_http_webhooks:
            self.worker.close()
            raise ConfigError(f"unsafe_http_webhooks: {plain} involvement(s) ask for notifications at a "
                              "plain http:// URL; re-import them with https:// URLs, or set "
                              "unsafe_http_webhooks (development only)")
        self.audit = logapi.LogService(
            config.audit_log, config.id, self.key, lambda: self.trust.current, config.audit_audience,
            checkpoint_interval=config.checkpoint_interval_seconds,
            accept_reset=config.unsafe_accept_audit_log_reset)

    @property
    def retention_age(self) -> int:
        """The node's own setting, else the federation policy's (the 24th birthday)."""
        return self.config.retention_age or self.trust.current.policy.retention_age

    def not_ready(self) -> list[str]:
        """Why the node does not answer queries yet (empty when it does)."""
        return self.indexes.not_ready()

    def purge(self, now: datetime) -> purging.PurgeSummary:
        """Delete records past the retention age; record it (``purge_log``, and the audit log).

        Runs on a worker thread, on a connection of its own, in one short transaction.
        """
        with Store(self.config.database, busy_timeout_seconds=self.config.busy_timeout_seconds) as store:
            summary = purging.purge(store, today=now.date(), now=now, retention_age=self.retention_age)
            self.audit.append_sync(summary.to_entry(self.config.id))
            outboxes.Outbox(store).prune_delivered(now.timestamp() - self.config.notify_max_age_seconds)
        return summary

    def respond(self, store: Store, query_token: str, now: datetime, index: MatchIndex,
                outcome: QueryOutcome, seal: channel.Seal | None = None) -> tuple[AnswerClaims, str]:
        """The whole of one query on the store's thread: verify, remember the query id, match,
        decide, keep any notification; then sign. Returns the claims and the signed answer
        (raises on a bad query). ``seal`` (a channel's) may give the unsigned text of an answer
        that discloses nothing instead (see ``node.channel``).

        The query id is remembered in memory (``node.replay``) when the audit log, which holds
        every answered id, can give it back after a restart; otherwise in the store's table, in
        one transaction with the rest.
        """
        verified, broker = envelope.verify(
            query_token, self.trust.current, role="broker", typ=envelope.QUERY_TYPE, now=now,
            audience=self.trust.current.federation,
        )
        claims = QueryClaims.from_wire(verified)
        outcome.context = audits.query_context(claims, query_token)
        moment, expires = int(now.timestamp()), claims.exp + replay.LEEWAY_SECONDS
        if self.seen_recovered and replay.SeenQueries.fits(expires, moment):
            if not self.seen.remember(claims.jti, expires, moment):
                raise ReplayedQuery(f"query {claims.jti} was already answered")
            try:
                answer = self.answer(store, claims, broker, query_token, now, index, outcome)
            except sqlite3.Error:
                self.seen.forget(claims.jti)  # nothing was answered: the query may come again
                raise
        else:
            with store.unit():
                if not store.remember_query(claims.jti, expires, moment):
                    raise ReplayedQuery(f"query {claims.jti} was already answered")
                answer = self.answer(store, claims, broker, query_token, now, index, outcome)
        unsigned = seal(answer) if seal is not None else None
        return answer, unsigned or self.signer.sign(answer.to_wire(), envelope.ANSWER_TYPE)

    def recover_seen(self) -> int:
        """Read the recent query ids back from the audit log (on the store's thread, at start)."""
        audit_log = self.audit.log
        if audit_log is None:
            return 0
        found = self.seen.recover(audit_log, datetime.now(UTC))
        self.seen_recovered = True
        return found

    def answer(self, store: Store, claims: QueryClaims, broker: Member, query_token: str, now: datetime,
               index: MatchIndex, outcome: QueryOutcome) -> AnswerClaims:
        """Match, decide; return the answer claims to a verified query (raises on a bad query).

        ``outcome`` collects what the audit entry needs as it becomes known: the matched
        records' pseudonyms, and the notifications kept.
        """
        context = check_query(claims, (p.code for p in self.trust.current.policy.purposes))
        query_identity = identity.parse_identity(claims.identity)
        today = now.date()
        identity.check_searchable(query_identity, today,
                                  minimum_sets=self.trust.current.policy.minimum_identity_sets)
        result = index.match(query_identity)
        child = index.children.get(result.record_id) if result.record_id else None
        involvements = store.involvements(child.record_id) if child else []
        candidates = [index.children[c] for c in getattr(result, "candidate_ids", ())
                      if c in index.children]
        outcome.pseudonym = child.pseudonym if child is not None else None
        outcome.candidates = tuple(c.pseudonym for c in candidates)
        disclosure = decide(
            status=result.status,
            child=child,
            involvements=involvements,
            requester=context.requester,
            authority_id=self.config.id,
            signposting_contact=self.contact,
            sensitive_categories=self.trust.current.policy.sensitive_categories,
            today=today,
            candidates=candidates,
        )
        contact = RequesterContact.from_wire(claims.contact).to_wire() if claims.contact is not None else None
        if child is not None:
            # Both sides told: the lead practitioner of every involvement the match disclosed
            # learns who was given it (unless this authority turned it off).
            leads = lead_notices(
                kind="match-disclosure", child=child, involvements=involvements, requester=context.requester,
                on_behalf_of=context.on_behalf_of, contact=contact, purpose=context.purpose,
                authority_id=self.config.id, disclosed_at=now, today=today,
                sensitive_categories=self.trust.current.policy.sensitive_categories,
                reference={"query_id": claims.query_id},
            ) if disclosure.status is Status.MATCH and self.config.notify_lead_on_match else []
            told = {str(m["involvement_record_id"]) for m in leads}
            # Notify-on-access: everyone else who asked to hear of searches (a lead told above
            # already has a fuller message).
            access = [m for m in notifications(child=child, involvements=involvements, query=context,
                                               query_jti=claims.query_id, authority_id=self.config.id,
                                               searched_at=now, today=today)
                      if str(m["involvement_record_id"]) not in told]
            # Written before the answer leaves: if the message cannot be kept, the query fails.
            if leads or access:
                outboxes.Outbox(store).enqueue([*leads, *access], now.timestamp())
                outcome.notified = True
                outcome.notifications = {"access": len(access), "lead": len(leads)}
            outcome.lead_informed = bool(leads)
        iat = int(now.timestamp())
        # The hash of this exact envelope, as its audit context has it (made once per query).
        query_hash = (outcome.context.query_hash if outcome.context is not None
                      else envelope.envelope_hash(query_token))
        return AnswerClaims(
            iss=MemberId(self.config.id), aud=broker.id, iat=iat, exp=iat + ANSWER_LIFETIME_SECONDS,
            jti=str(uuid.uuid4()), query_jti=claims.query_id, query_hash=query_hash,
            authority=AuthorityRef(MemberId(self.config.id), self.name), status=disclosure.status,
            involvements=disclosure.involvements if disclosure.status is Status.MATCH else (),
            contact=disclosure.contact,
            assessment=disclosure.assessment if disclosure.status is Status.MATCH else None,
            extra={},
            lead_informed=outcome.lead_informed,
        )

    async def current_index(self, _today: date) -> MatchIndex:
        """The index answering queries now, once the first is built (checks read candidates from it)."""
        await self.indexes.ready.wait()
        holder = self.indexes.current
        if holder is None:
            raise RuntimeError("index ready but not held")
        return holder.index

    def close(self) -> None:
        self.indexes.close()
        self.worker.close()


NODE = web.AppKey("node", Node)

TLS_PEER = web.RequestKey("tls_peer", str)


def refuse_early(node: Node, request: web.Request, now: datetime) -> web.Response | None:
    """Refuse before reading a body: an expired trust list stops every search (503), and under
    mutual TLS the client certificate must belong to a current broker of the list in force (403)."""
    trust = node.trust.current
    try:
        trust.check_current(now)
    except ExpiredError as exc:
        return problem(503, "Federation trust list expired", str(exc), kind="trust-list-expired")
    if node.config.tls is not None:
        try:
            request[TLS_PEER] = tls.peer_member(trust, tls.peer_certificate(request.transport), "broker").id
        except tls.CertificateError as exc:
            log.warning("client refused: %s", exc)
            return problem(403, "Client certificate refused", str(exc), kind="client-certificate")
    return None


async def handle_query(request: web.Request) -> web.Response:
    """``POST /v1/query``: refuse early what needs no body, read the envelope, then ``process_query``."""
    node = request.app[NODE]
    refused = refuse_early(node, request, datetime.now(UTC))
    if refused is not None:
        return refused  # no query to speak of (expired trust list, wrong client): nothing to log
    try:
        body = await read_json_object(request, node.config.body_limit)
        token = body.get("query")
        if not isinstance(token, str):
            raise FieldError("query", "expected a compact JWS string")
    except FieldError as exc:
        return problem(400, "Bad request", str(exc), errors=[exc])
    return (await process_query(node, token, request.get(TLS_PEER))).response()


async def handle_health(request: web.Request) -> web.Response:
    """Live whenever it answers; ready (200) once it can answer queries, else 503 with reasons."""
    node = request.app[NODE]
    reasons = [*node.trust.health_reasons(), *node.audit.health_reasons(),
               *node.indexes.health_reasons()]
    return health(node.config.id, "node", node.trust.current, reasons, index=node.indexes.describe(),
                  trust_refresh=node.trust.status.to_wire(), **node.audit.health())


async def _trust_refresh(app: web.Application) -> AsyncIterator[None]:
    node = app[NODE]

    async with node.trust.refreshing(node.config.trust_refresh_seconds):
        yield


async def _recover_seen(app: web.Application) -> AsyncIterator[None]:
    """Before the first query: the query ids of the last minutes, read back from the audit log."""
    node = app[NODE]
    found = await node.worker.run(lambda _store: node.recover_seen())
    log.info("replay protection: %d recent query id(s) read back from the audit log", found)
    yield


async def _index(app: web.Application) -> AsyncIterator[None]:
    """Build the match index (the node is ready once it exists), then keep it current."""
    node = app[NODE]
    task = asyncio.create_task(node.indexes.keep_current(node.config.index_poll_seconds))
    yield
    task.cancel()
    with contextlib.suppress(asyncio.CancelledError):
        await task


async def _notifications(app: web.Application) -> AsyncIterator[None]:
    """Deliver the notification outbox (including anything left from before a restart)."""
    async for _ in outboxes.run_worker(app[NODE].notifier):
        yield


async def _purge(app: web.Application) -> AsyncIterator[None]:
    """Delete records past the retention age at start and every ``purge_interval_seconds``."""
    node = app[NODE]

    async def loop() -> None:
        while True:
            try:
                # A purge under way finishes and logs itself before the audit log and the store
                # close behind it (``on_thread`` waits for the thread when cancelled).
                summary = await on_thread(lambda: node.purge(datetime.now(UTC)))
                if summary.children:  # counted at import too, so this comes as no surprise
                    log.warning("purge: %d record(s) past retention age %d deleted",
                                summary.children, summary.retention_age)
            except Exception:  # a failed purge is retried next interval, never stops the node
                log.exception("purge failed")
            await asyncio.sleep(node.config.purge_interval_seconds)

    task = asyncio.create_task(loop())
    yield
    task.cancel()
    with contextlib.suppress(asyncio.CancelledError):
        await task


def event_loop() -> asyncio.AbstractEventLoop:
    """The event loop ``signpost node serve`` runs on: uvloop's where it is installed (the same
    asyncio interface, with the loop itself, its sockets and its wake-ups from other threads in
    C: less CPU per query, decision 16), else asyncio's own."""
    try:
        import uvloop  # an optional speed-up: asyncio's own loop serves as well without it
    except ImportError:
        return asyncio.new_event_loop()
    return uvloop.new_event_loop()


def create_app(config: NodeConfig) -> web.Application:
    """The node's aiohttp application."""
    app = web.Application(client_max_size=config.body_limit)
    node = Node(config)
    app[NODE] = node
    app.router.add_post("/v1/query", handle_query)
    channel.add_route(app, node, process=process_query, refuse_early=refuse_early, tls_peer=TLS_PEER)
    app.router.add_get("/healthz", handle_health)
    metrics.install(app, node.metrics)
    logapi.install(app, node.audit)  # first: the purge job below logs into it
    app.cleanup_ctx.append(_recover_seen)  # the log is open by now
    app.cleanup_ctx.append(_index)
    app.cleanup_ctx.append(audits.pending_worker(node.worker, node.audit))
    app.cleanup_ctx.append(_trust_refresh)
    app.cleanup_ctx.append(_notifications)
    app.cleanup_ctx.append(_purge)
    desk = checking.CheckDesk(config, node.trust, node.key, node.contact, node.audit, node.current_index,
                              node.notifier.wake)
    checking.install(app, desk)  # POST /v1/checks...: checks asked of this authority (node/checks.py)
    staff.install(app, desk)  # the signposting officers' pages, on their own listener (node/staff.py)

    async def close(_: web.Application) -> None:
        node.close()

    app.on_cleanup.append(close)
    return app


__all__ = ["NODE", "RETRY_AFTER_SECONDS", "TLS_PEER", "Node", "ReplayedQuery", "Status", "create_app",
           "event_loop", "process_query", "refuse_early"]
