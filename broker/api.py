"""The broker's HTTP API: ``POST /v1/search`` for practitioners.

For each search: verify the bearer token against the trust list, check role, purpose and the
minimum identity set, sign one query envelope, send it to every node at once, verify every
answer, and return per authority what it said, plus whether the picture is complete. The
broker keeps no copy of any answer.
"""

from __future__ import annotations

import logging
import uuid
from dataclasses import dataclass
from datetime import UTC, datetime

import aiohttp
from aiohttp import web

from broker import audit as audits
from broker import ratelimit
from broker.admission import ADMISSION
from broker.channel import Channels
from broker.config import BrokerConfig
from broker.fanout import NodeResult, Query, fan_out_http
from broker.ledger import Ledger, LedgerUnavailable, create_ledger
from broker.metrics import BrokerMetrics
from federation import identity, rules
from federation.canonical import JsonObject
from federation.checks import RequesterContact
from federation.errors import FieldError, ValidationError
from federation.http import health, json_response, problem, read_json_object
from federation.protocol import MemberId, QueryClaims, QueryId, Status
from trust import envelope, logapi, tokens
from trust.errors import ExpiredError, TrustError
from trust.keys import load_private
from trust.store import TrustStore
from trust.tokens import Practitioner

log = logging.getLogger("signpost.broker")



@dataclass(frozen=True)
class SearchResponse:
    """What the practitioner gets back: each authority's result, and whether every one answered."""

    query_id: QueryId
    results: tuple[NodeResult, ...]

    @property
    def unavailable(self) -> tuple[NodeResult, ...]:
        return tuple(r for r in self.results if r.status is Status.UNAVAILABLE)

    @property
    def complete(self) -> bool:
        return not self.unavailable

    def to_wire(self) -> JsonObject:
        unavailable = self.unavailable
        return {"query_id": self.query_id, "complete": not unavailable,
                "results": [r.to_wire() for r in self.results],
                "unavailable": [{"id": r.authority, "name": r.name} for r in unavailable]}


@dataclass(frozen=True)
class SearchRequest:
    """A validated search: an acceptable identity, a known purpose, mediation if required."""

    identity: identity.Identity
    purpose: str
    on_behalf_of: dict[str, str] | None
    contact: RequesterContact | None = None  # told to the lead practitioner of a matched child


class Broker:
    """A running broker's state (one per app)."""

    def __init__(self, config: BrokerConfig) -> None:
        self.config = config
        self.trust = TrustStore(config.trust_root, config.trust_list, url=config.trust_list_url)
        self.trust.load()
        self.trust.current.member(config.id, "broker")
        self.key = load_private(config.key)
        self.session: aiohttp.ClientSession | None = None
        self.channels: Channels | None = None  # None: every node is asked over POST /v1/query
        self.metrics = BrokerMetrics()
        self.trust.report_metrics(self.metrics)
        self.audit = logapi.LogService(
            config.audit_log, config.id, self.key, lambda: self.trust.current, config.audience,
            checkpoint_interval=config.checkpoint_interval_seconds,
            accept_reset=config.unsafe_accept_audit_log_reset)
        # Per search: who searched, who said possible_match; and the checks (broker/ledger.py).
        self.ledger: Ledger = create_ledger(
            config.check_ledger_path, config.redis_url,
            prefix=f"signpost:checks:{self.trust.current.federation}",
            timeout_seconds=config.redis_timeout_seconds)
        self.commitment_key = b""
        if config.audit_log is not None:
            self.commitment_key = audits.load_or_create_key(
                config.audit_commitment_key or audits.default_key_path(config.audit_log))

    def authenticate(self, request: web.Request, now: datetime) -> Practitioner:
        header = request.headers.get("Authorization", "")
        scheme, _, token = header.partition(" ")
        if scheme.lower() != "bearer" or not token.strip():
            raise tokens.TokenError("Authorization: expected 'Bearer <token>'")
        return tokens.verify(token.strip(), self.trust.current, audience=self.config.audience, now=now)

    def validate(self, body: JsonObject, who: Practitioner, now: datetime) -> SearchRequest:
        """Check a search body; raise ``ValidationError`` naming every field at fault."""
        errors: list[FieldError] = []
        found: identity.Identity | None = None
        try:
            found = identity.parse_identity(body.get("identity"), strict=True)
            identity.check_searchable(found, now.date(),
                                      minimum_sets=self.trust.current.policy.minimum_identity_sets)
        except ValidationError as exc:
            errors.extend(exc.errors)
        purpose = body.get("purpose")
        policy = self.trust.current.policy
        if not isinstance(purpose, str) or not purpose:
            errors.append(FieldError("purpose", "is required: one of "
                                     + ", ".join(p.code for p in policy.purposes)))
        elif policy.purpose(purpose) is None:
            errors.append(FieldError("purpose", f"expected one of "
                                     f"{', '.join(p.code for p in policy.purposes)}, got {purpose!r}"))
        on_behalf_of, mediation_errors = rules.check_mediation(who.role, body.get("on_behalf_of"))
        errors.extend(mediation_errors)
        contact: RequesterContact | None = None
        if body.get("contact") is not None:
            try:
                contact = RequesterContact.from_wire(body["contact"])
            except ValidationError as exc:
                errors.extend(exc.errors)
        unknown = set(body) - {"identity", "purpose", "on_behalf_of", "contact"}
        if unknown:
            errors.append(FieldError(sorted(unknown)[0], "is not a search field"))
        if errors:
            raise ValidationError(errors)
        assert found is not None and isinstance(purpose, str)
        return SearchRequest(found, purpose, on_behalf_of, contact)

    def sign_query(self, search: SearchRequest, who: Practitioner, now: datetime) -> tuple[QueryId, str]:
        """A new query id and the signed query envelope for ``search``."""
        iat = int(now.timestamp())
        claims = QueryClaims(
            iss=MemberId(self.config.id), aud=self.trust.current.federation, iat=iat,
            exp=iat + self.config.query_lifetime_seconds, jti=str(uuid.uuid4()),
            practitioner=who.to_claims(), purpose=search.purpose, on_behalf_of=search.on_behalf_of,
            identity=search.identity.to_wire(), extra={},
            contact=search.contact.to_wire() if search.contact is not None else None,
        )
        return claims.query_id, envelope.sign(claims.to_wire(), self.key, envelope.QUERY_TYPE)

    async def search(self, search: SearchRequest, who: Practitioner, now: datetime) -> SearchResponse:
        """Log the search, ask every node, log what each said, return the results.

        Raises ``logapi.AuditUnavailable`` (nothing searched, or nothing returned) when either
        entry cannot be made durable.
        """
        trust = self.trust.current
        jti, token = self.sign_query(search, who, now)
        assert self.session is not None
        nodes = trust.with_role("node")
        await self.audit.append(audits.search_entry(
            broker_id=self.config.id, now=now, query_id=jti, query_hash=envelope.envelope_hash(token),
            practitioner=who.to_claims(), purpose=search.purpose, on_behalf_of=search.on_behalf_of,
            commitment=audits.commit(self.commitment_key, search.identity.to_wire()),
            nodes=[n.id for n in nodes]))
        query = Query.of(token, jti)
        deadline = self.config.node_deadline_seconds
        if self.channels is not None:
            results = await self.channels.fan_out(nodes, query, trust, deadline)
        else:
            results = await fan_out_http(self.session, nodes, query, trust, self.config.id, deadline)
        await self.audit.append(audits.outcome_entry(
            broker_id=self.config.id, now=datetime.now(UTC), query_id=jti,
            results={r.authority: audits.node_result(r.status.value, r.answer_hash, r.reason,
                                                     r.integrity_failure, r.abandoned)
                     for r in results}))
        self.metrics.record_search(results)
        unavailable = [r for r in results if r.status is Status.UNAVAILABLE]
        for r in results:
            if r.integrity_failure:
                log.error("query %s: integrity failure from %s: %s", jti, r.authority, r.reason)
        # Which authorities know the child is part of the answer: it goes to the audit log only.
        log.info("query %s: %d node(s) asked, %d unavailable", jti, len(results), len(unavailable))
        possible = [r.authority for r in results if r.status is Status.POSSIBLE_MATCH]
        if possible:  # only a possible_match can be followed by a check: nothing else is kept
            try:
                await self.ledger.remember(jti, who.issuer, who.sub, possible, search.identity.to_wire(),
                                           now.timestamp(), search.on_behalf_of)
            except LedgerUnavailable as exc:  # the answer stands; only a later check of it is refused
                log.error("query %s: not remembered for checks: %s", jti, exc)
        return SearchResponse(jti, tuple(results))


BROKER = web.AppKey("broker", Broker)


def _unauthorised(detail: str) -> web.Response:
    return problem(401, "Unauthorised", detail, kind="unauthorised",
                   headers={"WWW-Authenticate": 'Bearer realm="signpost"'})


async def handle_search(request: web.Request) -> web.Response:
    broker = request.app[BROKER]
    now = datetime.now(UTC)
    try:
        broker.trust.current.check_current(now)
    except ExpiredError as exc:
        return problem(503, "Federation trust list expired", str(exc), kind="trust-list-expired")
    try:
        who = broker.authenticate(request, now)
    except TrustError as exc:
        return _unauthorised(str(exc))
    role_error = rules.check_role(who.role)
    if role_error is not None:
        return problem(403, "Forbidden", str(role_error), kind="forbidden-role")
    if not who.has_mfa:
        return problem(403, "Forbidden", "amr: searching needs multi-factor authentication",
                       kind="mfa-required")
    admission = request.app[ADMISSION]
    busy = admission.refusal()
    if busy is not None:
        broker.metrics.refused.inc("broker-overloaded")
        return busy
    with admission.holding():
        return await _admitted_search(request, broker, who, now)


async def _admitted_search(request: web.Request, broker: Broker, who: Practitioner,
                           now: datetime) -> web.Response:
    over = await ratelimit.admit(request.app, who.issuer, who.sub, who.org)
    if over is not None:
        return over
    try:
        body = await read_json_object(request, broker.config.body_limit)
        search = broker.validate(body, who, now)
    except FieldError as exc:
        return problem(400, "Invalid search", str(exc), errors=[exc], kind="invalid-search")
    except ValidationError as exc:
        return problem(400, "Invalid search", str(exc), errors=exc.errors, kind="invalid-search")
    try:
        result = await broker.search(search, who, now)
    except logapi.AuditUnavailable as exc:
        return problem(503, "Audit log unavailable", f"the broker cannot log searches, so it does not "
                       f"search: {exc}", kind="audit-unavailable")
    return json_response(result.to_wire())


async def handle_health(request: web.Request) -> web.Response:
    broker = request.app[BROKER]
    trust = broker.trust.current
    reasons = [*broker.trust.health_reasons(), *broker.audit.health_reasons(),
               *await ratelimit.health_reasons(request.app)]
    return health(broker.config.id, "broker", trust, reasons,
                  nodes=[m.id for m in trust.with_role("node")], trust_refresh=broker.trust.status.to_wire(),
                  **broker.audit.health())
