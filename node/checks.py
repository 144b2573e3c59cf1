"""The node's check desk: checks a practitioner asked this authority to make by hand.

A ``possible_match`` discloses nothing. The practitioner may ask the authority to check; the
broker then sends this node alone a signed ``CheckRequest`` (``federation.checks``). The node
verifies it like a query (broker signature from the trust list, expiry, a new ``jti``, the
federation rules on role, multi-factor and purpose, and that it is addressed to this node), logs
it, keeps it in the ``checks`` table and answers with a signed receipt. The authority's
signposting officers decide on their own pages (``node.staff``): *same child* (naming the
record), *not this child*, or *need more information* (with a message; the practitioner may
answer once). When the broker asks for the outcome of a confirmed check, the node builds the
answer with ``node.policy.decide`` exactly as for a ``match``: shielding, sensitive services and
consent, ended involvements and archiving all apply. A check lives for the trust-list policy's
``check_expiry_days`` (default 14) and is then deleted, the typed identity with it.

Every step is an audit entry in the node's own log (``check-request``, ``check-information``,
``check-outcome``, ``check-decision``, ``check-view``, ``check-expired``), with the record's
pseudonym where a record is concerned and never the identity.

SQLite work runs on one worker thread that owns a connection of its own: the event loop never
waits on the disk.
"""

from __future__ import annotations

import asyncio
import json
import logging
import uuid
from collections.abc import AsyncIterator, Awaitable, Callable, Mapping
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from datetime import UTC, date, datetime, timedelta
from typing import Any, TypeVar

from aiohttp import web
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

from federation.canonical import JsonObject
from federation.checks import (
    CHECK_ANSWER_TYPE,
    CHECK_INFORMATION_TYPE,
    CHECK_LIFETIME_SECONDS,
    CHECK_POLL_TYPE,
    CHECK_REQUEST_TYPE,
    CHECK_VERSION,
    CheckDisclosure,
    CheckInformation,
    CheckOutcome,
    CheckPoll,
    CheckRequest,
    CheckState,
    Decision,
    merge_identity,
)
from federation.errors import FieldError, SignpostError, ValidationError
from federation.http import json_response, problem, read_json_object
from federation.identity import Identity, check_searchable, parse_identity
from federation.protocol import Contact, MemberId, QueryClaims, Status
from federation.tasks import every
from node import outbox as outboxes
from node.config import NodeConfig
from node.matching import MatchIndex
from node.policy import PolicyRefusal, Requester, check_query, decide, lead_notices
from node.store import Child, Store
from trust import envelope, logapi, tls
from trust.errors import ExpiredError, TrustError
from trust.store import TrustStore
from trust.tokens import Practitioner

log = logging.getLogger("signpost.node.checks")

ENTRY_VERSION = 1
CANDIDATE_LIMIT = 5
T = TypeVar("T")


class CheckError(SignpostError):
    """A check message or decision that cannot be accepted; ``status`` and ``kind`` say how to answer."""

    def __init__(self, status: int, kind: str, message: str) -> None:
        super().__init__(message)
        self.status = status
        self.kind = kind


@dataclass(frozen=True)
class Check:
    """One row of the ``checks`` table."""

    id: str
    search_id: str
    broker: str
    received: int
    expires: int
    state: CheckState
    request: CheckRequest
    information: Identity | None
    message: str | None
    decided_by: Mapping[str, str] | None
    decided_at: int | None
    record_id: str | None
    lead_informed: bool

    @property
    def identity(self) -> Identity:
        """The identity as typed, with any identifiers added later."""
        if self.information is None:
            return self.request.identity
        return merge_identity(self.request.identity, self.information)

    @property
    def requester(self) -> Requester:
        return Requester.from_claims(self.request.practitioner)

    def outcome(self, disclosure: CheckDisclosure | None = None) -> CheckOutcome:
        expires = datetime.fromtimestamp(self.expires, UTC).isoformat(timespec="seconds")
        return CheckOutcome(self.id, self.state, expires,
                            self.message if self.state is CheckState.MORE_INFORMATION else None,
                            disclosure, self.lead_informed, self.information is not None)


def _row(row: Any) -> Check:
    return Check(
        id=row["id"], search_id=row["search_id"], broker=row["broker"], received=row["received"],
        expires=row["expires"], state=CheckState(row["state"]),
        request=CheckRequest.from_wire(json.loads(row["request"])),
        information=parse_identity(json.loads(row["information"])) if row["information"] else None,
        message=row["message"],
        decided_by=json.loads(row["decided_by"]) if row["decided_by"] else None,
        decided_at=row["decided_at"], record_id=row["record_id"], lead_informed=bool(row["lead_informed"]),
    )


def officer(who: Practitioner) -> dict[str, str]:
    """An officer as the audit log and the check row name them."""
    return {"iss": who.issuer, "sub": who.sub, "name": who.name, "org": who.org, "role": who.role}


# --- audit entries (pure) -------------------------------------------------------------------


def _time(now: datetime) -> str:
    return now.isoformat(timespec="milliseconds")


def entry(kind: str, node_id: str, now: datetime, check_id: str, **fields: Any) -> JsonObject:
    """One check step in the node's log: ``check-<kind>``, the check id, and what the step needs."""
    return {"v": ENTRY_VERSION, "type": f"check-{kind}", "node": node_id, "time": _time(now),
            "check_id": check_id, **fields}


def practitioner_fields(practitioner: Mapping[str, Any]) -> dict[str, str]:
    return {k: str(practitioner[k]) for k in ("iss", "sub", "name", "org", "role", "authority")
            if isinstance(practitioner.get(k), str)}


# --- the desk -------------------------------------------------------------------------------


class CheckDesk:
    """The node's checks: the broker-facing API and what the staff pages call."""

    def __init__(self, config: NodeConfig, trust: TrustStore, key: Ed25519PrivateKey, contact: Contact,
                 audit: logapi.LogService, index: Callable[[date], Awaitable[MatchIndex]],
                 wake_notifier: Callable[[], None]) -> None:
        self.config = config
        self.trust = trust
        self.key = key
        self.contact = contact
        self.audit = audit
        self.index = index
        self.wake_notifier = wake_notifier
        self._executor = ThreadPoolExecutor(1, thread_name_prefix="checks")
        self._store: Store | None = None

    # The worker thread owns the connection: it opens it on first use and closes it at the end.

    def _db(self) -> Store:
        if self._store is None:
            self._store = Store(self.config.database)
        return self._store

    async def run(self, work: Callable[[Store], T]) -> T:
        return await asyncio.get_running_loop().run_in_executor(self._executor, lambda: work(self._db()))

    async def close(self) -> None:
        def shut(store: Store) -> None:
            store.close()
            self._store = None

        if self._store is not None:
            await self.run(shut)
        self._executor.shutdown(wait=True)

    @property
    def expiry_days(self) -> int:
        return self.trust.current.policy.check_expiry_days

    # --- reading (staff pages) --------------------------------------------------------------

    async def get(self, check_id: str) -> Check | None:
        def read(store: Store) -> Check | None:
            row = store.db.execute("SELECT * FROM checks WHERE id=?", (check_id,)).fetchone()
            return _row(row) if row else None

        return await self.run(read)

    async def queue(self) -> list[Check]:
        """Every live check, those waiting for an officer first, oldest first."""
        def read(store: Store) -> list[Check]:
            rows = store.db.execute(
                "SELECT * FROM checks ORDER BY state != 'pending', received").fetchall()
            return [_row(r) for r in rows]

        return await self.run(read)

    async def child(self, record_id: str) -> Child | None:
        return await self.run(lambda store: store.child(record_id))

    async def candidates(self, check: Check, today: date) -> list[Child]:
        """The node's own records worth comparing with the check's identity, best first."""
        index = await self.index(today)
        ranked = index.ranked(check.identity)
        return [index.children[c.record_id] for c in ranked[:CANDIDATE_LIMIT]
                if c.record_id in index.children]

    # --- broker messages --------------------------------------------------------------------

    def verify(self, token: str, typ: str, now: datetime) -> tuple[JsonObject, str]:
        """Verify a broker's check envelope; return its claims and the broker's id."""
        claims, broker = envelope.verify(token, self.trust.current, role="broker", typ=typ, now=now,
                                         audience=self.trust.current.federation)
        if not isinstance(claims.get("jti"), str) or not claims["jti"]:
            raise CheckError(400, "invalid-check", "jti: expected a string")
        if claims.get("exp", 0) - claims.get("iat", 0) > 5 * CHECK_LIFETIME_SECONDS:
            raise CheckError(400, "invalid-check", "exp: a check message may live at most "
                             f"{5 * CHECK_LIFETIME_SECONDS} seconds")
        return claims, broker.id

    def _remember(self, store: Store, claims: Mapping[str, Any], now: datetime) -> None:
        if not store.remember_query(str(claims["jti"]), int(claims["exp"]) + 120, int(now.timestamp())):
            raise CheckError(409, "replayed-check", f"check message {claims['jti']} was already received")

    def sign(self, outcome: CheckOutcome, broker_id: str, request_token: str, request_jti: str,
             now: datetime) -> str:
        iat = int(now.timestamp())
        return envelope.sign({
            "v": CHECK_VERSION, "iss": self.config.id, "aud": broker_id, "iat": iat,
            "exp": iat + CHECK_LIFETIME_SECONDS, "jti": str(uuid.uuid4()), "request_jti": request_jti,
            "request_hash": envelope.envelope_hash(request_token), "check": outcome.to_wire(),
        }, self.key, CHECK_ANSWER_TYPE)

    async def receive(self, token: str, now: datetime) -> str:
        """A new check: verify, keep, log, and return the signed receipt."""
        claims, broker_id = self.verify(token, CHECK_REQUEST_TYPE, now)
        request = CheckRequest.from_wire(claims.get("check"))
        if request.authority != self.config.id:
            raise CheckError(403, "wrong-authority", f"authority: this is {self.config.id}, "
                             f"the check is for {request.authority}")
        # The same federation rules as a query (role, multi-factor, purpose), read from the check.
        check_query(QueryClaims(iss=MemberId(broker_id), aud=str(claims.get("aud")), iat=int(claims["iat"]),
                                exp=int(claims["exp"]), jti=str(claims["jti"]),
                                practitioner=request.practitioner, purpose=request.purpose,
                                on_behalf_of=request.on_behalf_of,
                                identity=request.identity.to_wire()),
                    (p.code for p in self.trust.current.policy.purposes))
        check_searchable(request.identity, now.date())
        candidates = await self.candidates_for(request.identity, now.date())
        expires = int((now + timedelta(days=self.expiry_days)).timestamp())

        def keep(store: Store) -> Check:
            self._remember(store, claims, now)
            with store.transaction() as conn:
                if conn.execute("SELECT 1 FROM checks WHERE id=?", (request.check_id,)).fetchone():
                    raise CheckError(409, "duplicate-check", f"check_id: {request.check_id} exists already")
                conn.execute(
                    "INSERT INTO checks (id, search_id, broker, received, expires, state, request) "
                    "VALUES (?, ?, ?, ?, ?, ?, ?)",
                    (request.check_id, request.search_id, broker_id, int(now.timestamp()), expires,
                     CheckState.PENDING.value, json.dumps(request.to_wire(), sort_keys=True)))
            row = store.db.execute("SELECT * FROM checks WHERE id=?", (request.check_id,)).fetchone()
            return _row(row)

        check = await self.run(keep)
        answer = self.sign(check.outcome(), broker_id, token, str(claims["jti"]), now)
        await self._log(check, now, entry(
            "request", self.config.id, now, check.id, search_id=check.search_id, broker=broker_id,
            request_hash=envelope.envelope_hash(token), answer_hash=envelope.envelope_hash(answer),
            practitioner=practitioner_fields(request.practitioner), purpose=request.purpose,
            on_behalf_of=dict(request.on_behalf_of) if request.on_behalf_of else None,
            candidate_pseudonyms=sorted(c.pseudonym for c in candidates), state=check.state.value,
            expires=check.outcome().expires))
        log.info("check %s received", check.id)
        return answer

    async def candidates_for(self, identity: Identity, today: date) -> list[Child]:
        index = await self.index(today)
        return [index.children[c.record_id] for c in index.ranked(identity)[:CANDIDATE_LIMIT]
                if c.record_id in index.children]

    async def _log(self, check: Check | None, now: datetime, item: Mapping[str, Any]) -> None:
        """Log a step; when the log cannot take it, undo nothing but refuse to answer (503)."""
        try:
            await self.audit.append(item)
        except logapi.AuditUnavailable as exc:
            raise CheckError(503, "audit-unavailable", f"the node cannot log this check step, so it "
                             f"does not answer: {exc}") from exc

    async def add_information(self, check_id: str, token: str, now: datetime) -> str:
        """More identifiers, accepted once, and only when an officer asked for them."""
        claims, broker_id = self.verify(token, CHECK_INFORMATION_TYPE, now)
        more = CheckInformation.from_wire(claims.get("check"))
        if more.check_id != check_id:
            raise CheckError(400, "invalid-check", f"check_id: the envelope is for {more.check_id}, "
                             f"the path for {check_id}")

        def store_it(store: Store) -> Check:
            self._remember(store, claims, now)
            with store.transaction() as conn:
                row = conn.execute("SELECT * FROM checks WHERE id=? AND broker=?",
                                   (check_id, broker_id)).fetchone()
                if row is None:
                    raise CheckError(404, "unknown-check", f"check_id: no check {check_id} at this node")
                if row["state"] != CheckState.MORE_INFORMATION.value or row["information"] is not None:
                    raise CheckError(409, "information-not-wanted", "identity: more information can be "
                                     "given once, after the authority asks for it")
                conn.execute("UPDATE checks SET information=?, state=? WHERE id=?",
                             (json.dumps(more.identity.to_wire(), sort_keys=True),
                              CheckState.PENDING.value, check_id))
                return _row(conn.execute("SELECT * FROM checks WHERE id=?", (check_id,)).fetchone())

        check = await self.run(store_it)
        answer = self.sign(check.outcome(), broker_id, token, str(claims["jti"]), now)
        await self._log(check, now, entry(
            "information", self.config.id, now, check.id, broker=broker_id,
            request_hash=envelope.envelope_hash(token), answer_hash=envelope.envelope_hash(answer),
            fields=sorted(more.identity.present()), state=check.state.value))
        return answer

    async def outcome(self, check_id: str, token: str, now: datetime) -> tuple[str, CheckOutcome]:
        """Where a check stands; for a confirmed check asked with ``disclose``, what a match discloses.

        Answers that change nothing (still ``pending``, nothing disclosed) are not logged; every
        other answer is, before it leaves.
        """
        claims, broker_id = self.verify(token, CHECK_POLL_TYPE, now)
        poll = CheckPoll.from_wire(claims.get("check"))
        if poll.check_id != check_id:
            raise CheckError(400, "invalid-check", f"check_id: the envelope is for {poll.check_id}, "
                             f"the path for {check_id}")

        def read(store: Store) -> tuple[Check, Child | None, list[Any]]:
            self._remember(store, claims, now)
            row = store.db.execute("SELECT * FROM checks WHERE id=? AND broker=?",
                                   (check_id, broker_id)).fetchone()
            if row is None or row["expires"] < now.timestamp():
                raise CheckError(404, "unknown-check", f"check_id: no live check {check_id} at this node "
                                 "(never made, or expired and deleted)")
            check = _row(row)
            if check.state is not CheckState.SAME_CHILD or not poll.disclose or check.record_id is None:
                return check, None, []
            return check, store.child(check.record_id), store.involvements(check.record_id)

        check, child, involvements = await self.run(read)
        disclosure = None
        if check.state is CheckState.SAME_CHILD and poll.disclose:
            disclosure = self.disclose(check, child, involvements, now.date())
        outcome = check.outcome(disclosure)
        answer = self.sign(outcome, broker_id, token, str(claims["jti"]), now)
        if check.state is not CheckState.PENDING or disclosure is not None:
            await self._log(check, now, entry(
                "outcome", self.config.id, now, check.id, broker=broker_id,
                request_hash=envelope.envelope_hash(token), answer_hash=envelope.envelope_hash(answer),
                state=check.state.value, disclosed=disclosure.status.value if disclosure else None,
                pseudonym=child.pseudonym if child is not None else None,
                practitioner=practitioner_fields(check.request.practitioner), purpose=check.request.purpose))
        return answer, outcome

    def disclose(self, check: Check, child: Child | None, involvements: list[Any],
                 today: date) -> CheckDisclosure:
        """What a ``match`` on this record would disclose to this requester: ``node.policy.decide``."""
        decided = decide(
            status=Status.MATCH, child=child, involvements=involvements, requester=check.requester,
            authority_id=self.config.id, signposting_contact=self.contact,
            sensitive_categories=self.trust.current.policy.sensitive_categories, today=today)
        return CheckDisclosure(decided.status, decided.involvements, decided.contact, decided.assessment)

    # --- officers ---------------------------------------------------------------------------

    async def viewed(self, check: Check, who: Practitioner, candidates: list[Child], now: datetime) -> None:
        """An officer opened a check: the candidates they saw are logged by pseudonym."""
        await self._log(check, now, entry("view", self.config.id, now, check.id, officer=officer(who),
                                          candidate_pseudonyms=sorted(c.pseudonym for c in candidates)))

    async def decide(self, check_id: str, who: Practitioner, decision: Decision, now: datetime, *,
                     record_id: str | None = None, message: str | None = None) -> Check:
        """Record an officer's decision (checked here, whatever the page sent)."""
        if decision is Decision.SAME_CHILD and not record_id:
            raise CheckError(400, "invalid-decision", "record_id: name the record that is the same child")
        if decision is Decision.MORE_INFORMATION and not (message and message.strip()):
            raise CheckError(400, "invalid-decision", "message: say what more information is needed")
        today = now.date()
        allowed = {c.record_id for c in await self._candidates_of(check_id, today)}
        if decision is Decision.SAME_CHILD and record_id not in allowed:
            raise CheckError(400, "invalid-decision", f"record_id: {record_id!r} is not one of this check's "
                             "candidate records")
        sensitive = self.trust.current.policy.sensitive_categories
        notify = self.config.notify_lead_on_check

        def record(store: Store) -> tuple[Check, Child | None, int]:
            with store.transaction() as conn:
                row = conn.execute("SELECT * FROM checks WHERE id=?", (check_id,)).fetchone()
                if row is None or row["expires"] < now.timestamp():
                    raise CheckError(404, "unknown-check", f"no live check {check_id}")
                if row["state"] not in (CheckState.PENDING.value,):
                    raise CheckError(409, "already-decided", "this check is not waiting for a decision")
                if decision is Decision.MORE_INFORMATION and row["information"] is not None:
                    raise CheckError(409, "information-used", "the practitioner has already given more "
                                     "information once: decide same child or not this child")
                conn.execute(
                    "UPDATE checks SET state=?, message=?, decided_by=?, decided_at=?, record_id=? "
                    "WHERE id=?",
                    (decision.value, message.strip() if message else None,
                     json.dumps(officer(who), sort_keys=True), int(now.timestamp()),
                     record_id if decision is Decision.SAME_CHILD else None, check_id))
            check = _row(store.db.execute("SELECT * FROM checks WHERE id=?", (check_id,)).fetchone())
            child = store.child(record_id) if record_id and decision is Decision.SAME_CHILD else None
            informed = 0
            if child is not None and notify:
                disclosure = self.disclose(check, child, store.involvements(child.record_id), today)
                if disclosure.status is Status.MATCH:
                    messages = lead_messages(check, child, store.involvements(child.record_id),
                                             self.config.id, now, today, sensitive)
                    if messages:
                        outboxes.Outbox(store).enqueue(messages, now.timestamp())
                        store.db.execute("UPDATE checks SET lead_informed=1 WHERE id=?", (check_id,))
                        informed = len(messages)
            if informed:
                check = _row(store.db.execute("SELECT * FROM checks WHERE id=?", (check_id,)).fetchone())
            return check, child, informed

        check, child, informed = await self.run(record)
        if informed:
            self.wake_notifier()
        await self._log(check, now, entry(
            "decision", self.config.id, now, check.id, officer=officer(who), decision=decision.value,
            pseudonym=child.pseudonym if child is not None else None, lead_notifications=informed))
        log.info("check %s decided", check.id)
        return check

    async def _candidates_of(self, check_id: str, today: date) -> list[Child]:
        check = await self.get(check_id)
        return [] if check is None else await self.candidates(check, today)

    # --- expiry -----------------------------------------------------------------------------

    async def sweep(self, now: datetime) -> list[str]:
        """Delete every check past its expiry (the typed identity goes with it), each once its
        ``check-expired`` entry is durable (a check whose entry cannot be logged waits)."""
        def expired(store: Store) -> list[tuple[str, str]]:
            rows = store.db.execute("SELECT id, state FROM checks WHERE expires < ?",
                                    (int(now.timestamp()),)).fetchall()
            return [(r["id"], r["state"]) for r in rows]

        def delete(check_id: str) -> Callable[[Store], object]:
            return lambda store: store.db.execute("DELETE FROM checks WHERE id=?", (check_id,))

        gone = []
        for check_id, state in await self.run(expired):
            await self.audit.append(entry("expired", self.config.id, now, check_id, state=state))
            await self.run(delete(check_id))
            gone.append(check_id)
        return gone


def lead_messages(check: Check, child: Child, involvements: list[Any], authority_id: str, now: datetime,
                  today: date, sensitive_categories: frozenset[str]) -> list[JsonObject]:
    """Tell each lead practitioner of a confirmed match who was given it (``node.policy.lead_notices``)."""
    return lead_notices(
        kind="check-disclosure", child=child, involvements=involvements, requester=check.requester,
        on_behalf_of=check.request.on_behalf_of, contact=check.request.contact.to_wire(),
        purpose=check.request.purpose, authority_id=authority_id, disclosed_at=now, today=today,
        sensitive_categories=sensitive_categories,
        reference={"check_id": check.id, "search_id": check.search_id})


# --- HTTP (broker-facing, on the node's main listener) --------------------------------------

DESK = web.AppKey("check_desk", CheckDesk)


def _refused(desk: CheckDesk, request: web.Request, now: datetime) -> web.Response | None:
    try:
        desk.trust.current.check_current(now)
    except ExpiredError as exc:
        return problem(503, "Federation trust list expired", str(exc), kind="trust-list-expired")
    if desk.config.tls is not None:
        try:
            tls.peer_member(desk.trust.current, tls.peer_certificate(request.transport), "broker")
        except tls.CertificateError as exc:
            return problem(403, "Client certificate refused", str(exc), kind="client-certificate")
    return None


async def _handle(request: web.Request,
                  work: Callable[[CheckDesk, str, datetime], Awaitable[str]]) -> web.Response:
    desk = request.app[DESK]
    now = datetime.now(UTC)
    refused = _refused(desk, request, now)
    if refused is not None:
        return refused
    try:
        body = await read_json_object(request, desk.config.body_limit)
        token = body.get("check")
        if not isinstance(token, str):
            raise FieldError("check", "expected a compact JWS string")
        answer = await work(desk, token, now)
    except FieldError as exc:
        return problem(400, "Invalid check", str(exc), errors=[exc], kind="invalid-check")
    except ValidationError as exc:
        return problem(400, "Invalid check", str(exc), errors=exc.errors, kind="invalid-check")
    except ExpiredError as exc:
        return problem(401, "Expired", str(exc), kind="expired")
    except TrustError as exc:
        log.warning("check refused: %s", exc.__class__.__name__)
        return problem(401, "Check not trusted", str(exc), kind="untrusted-check")
    except PolicyRefusal as exc:
        return problem(403, "Check refused", str(exc), kind=f"policy-{exc.rule}")
    except CheckError as exc:
        return problem(exc.status, "Check refused", str(exc), kind=exc.kind)
    return json_response({"v": CHECK_VERSION, "answer": answer})


async def handle_request(request: web.Request) -> web.Response:
    return await _handle(request, lambda desk, token, now: desk.receive(token, now))


async def handle_information(request: web.Request) -> web.Response:
    check_id = request.match_info["check_id"]
    return await _handle(request, lambda desk, token, now: desk.add_information(check_id, token, now))


async def handle_outcome(request: web.Request) -> web.Response:
    check_id = request.match_info["check_id"]

    async def work(desk: CheckDesk, token: str, now: datetime) -> str:
        answer, _ = await desk.outcome(check_id, token, now)
        return answer

    return await _handle(request, work)


def install(app: web.Application, desk: CheckDesk) -> None:
    """Register the broker-facing check routes and the expiry job on the node's app."""
    app[DESK] = desk
    app.router.add_post("/v1/checks", handle_request)
    app.router.add_post("/v1/checks/{check_id}/information", handle_information)
    app.router.add_post("/v1/checks/{check_id}/outcome", handle_outcome)

    async def sweeping(_: web.Application) -> AsyncIterator[None]:
        # A failed sweep is retried next round; an expired check waits until then.
        async with every(desk.config.check_sweep_seconds, lambda: desk.sweep(datetime.now(UTC)), log=log,
                         failure="check expiry failed"):
            yield
        await desk.close()

    app.cleanup_ctx.append(sweeping)
