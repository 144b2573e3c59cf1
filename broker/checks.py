"""Checks, the broker's side: ask one authority to check a ``possible_match``, and follow it up.

``POST /v1/checks`` (and the "Ask this authority to check" button) is refused unless the
practitioner made the search named (``broker.ledger``) and that authority answered it
``possible_match``, and the identity is the one searched for. The broker then logs a
``check-request`` entry, sends a signed ``CheckRequest`` (``federation.checks``) to that node
alone, verifies the signed receipt, and logs a ``check-answer`` entry.

The broker keeps, per check, who asked, which authority, its state and when it expires; never
the identity and never a disclosure. A background task asks the node about each pending check
every ``check_poll_seconds``; when the state changes the practitioner is told through the
webhook the configuration names (``check_webhook_url``: a signed notice with the practitioner's
contact email and the check's reference, nothing about the child) and on their next page load.
What a confirmed check discloses is fetched from the node each time the practitioner looks
(``GET /v1/checks/{id}``), signed by the node and bound to the request, and passed on without
being kept. Checks are held in this process's memory, like web sessions.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
import uuid
from collections.abc import AsyncIterator, Mapping
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

import aiohttp
from aiohttp import web

from broker import audit as audits
from broker import ratelimit
from broker.api import BROKER, Broker
from federation import rules
from federation.canonical import JsonObject
from federation.checks import (
    CHECK_ANSWER_TYPE,
    CHECK_INFORMATION_TYPE,
    CHECK_LIFETIME_SECONDS,
    CHECK_POLL_TYPE,
    CHECK_REQUEST_TYPE,
    CHECK_VERSION,
    CheckInformation,
    CheckOutcome,
    CheckPoll,
    CheckRequest,
    CheckState,
    RequesterContact,
    check_id,
)
from federation.errors import FieldError, SignpostError, ValidationError
from federation.http import json_response, problem, read_json_object
from federation.identity import Identity, check_searchable, parse_identity
from federation.tasks import every
from trust import envelope, logapi, tls
from trust.errors import TrustError
from trust.tokens import Practitioner
from trust.trustlist import Member

log = logging.getLogger("signpost.broker.checks")

NOTICE_TYPE = "signpost-check-notice+jwt"
KEEP_AFTER_EXPIRY_SECONDS = 86400
CHECK_FIELDS = frozenset({"search_id", "authority", "identity", "purpose", "contact"})


class CheckRefused(SignpostError):
    """A practitioner's check request that cannot go ahead; ``status`` and ``kind`` for the problem."""

    def __init__(self, status: int, kind: str, message: str, errors: tuple[FieldError, ...] = ()) -> None:
        super().__init__(message)
        self.status = status
        self.kind = kind
        self.errors = errors


@dataclass
class BrokerCheck:
    """What the broker holds about one check (mutable: its state follows the node's)."""

    id: str
    search_id: str
    authority: str
    authority_name: str
    issuer: str
    sub: str
    contact: RequesterContact
    purpose: str
    created: float
    expires: str = ""
    state: CheckState = CheckState.PENDING
    message: str | None = None
    information_used: bool = False
    lead_informed: bool = False
    unseen: bool = False
    expires_at: float = field(default=0.0)

    def to_wire(self, outcome: CheckOutcome | None = None, *, unavailable: bool = False) -> JsonObject:
        out: JsonObject = {
            "check_id": self.id, "search_id": self.search_id,
            "authority": {"id": self.authority, "name": self.authority_name},
            "state": self.state.value, "expires": self.expires, "lead_informed": self.lead_informed,
            "can_add_information": self.state is CheckState.MORE_INFORMATION and not self.information_used,
        }
        if self.message is not None and self.state is CheckState.MORE_INFORMATION:
            out["message"] = self.message
        if outcome is not None and outcome.disclosure is not None:
            out["disclosure"] = outcome.disclosure.to_wire()
        if unavailable:
            out["authority_unavailable"] = True  # the state shown is the last one the broker heard
        return out


@dataclass(frozen=True)
class Exchange:
    """One signed message to a node and what came back."""

    token: str
    outcome: CheckOutcome | None
    answer_hash: str | None
    reason: str | None
    status: int


def _time(now: datetime) -> str:
    return now.isoformat(timespec="milliseconds")


def _entry(kind: str, broker_id: str, now: datetime, check: BrokerCheck, **fields: Any) -> JsonObject:
    return {"v": audits.ENTRY_VERSION, "type": f"check-{kind}", "broker": broker_id, "time": _time(now),
            "check_id": check.id, "authority": check.authority, **fields}


class CheckService:
    """The broker's checks and the calls it makes to nodes about them."""

    def __init__(self, broker: Broker) -> None:
        self.broker = broker
        self.checks: dict[str, BrokerCheck] = {}
        self.wake = asyncio.Event()

    # --- the node channel -------------------------------------------------------------------

    def _sign(self, typ: str, wire: Mapping[str, Any], now: datetime) -> tuple[str, str]:
        iat = int(now.timestamp())
        jti = str(uuid.uuid4())
        claims = {"v": CHECK_VERSION, "iss": self.broker.config.id,
                  "aud": self.broker.trust.current.federation, "iat": iat,
                  "exp": iat + CHECK_LIFETIME_SECONDS, "jti": jti, "check": dict(wire)}
        return jti, envelope.sign(claims, self.broker.key, typ)

    async def exchange(self, node: Member, path: str, typ: str, wire: Mapping[str, Any],
                       now: datetime) -> Exchange:
        """Sign one check message, send it to ``node`` and verify the signed answer."""
        jti, token = self._sign(typ, wire, now)
        return await self.send(node, path, token, jti, wire)

    async def send(self, node: Member, path: str, token: str, jti: str, wire: Mapping[str, Any]) -> Exchange:
        """Send a signed check message to ``node`` and verify the signed answer."""
        session = self.broker.session
        if session is None or not node.endpoint:
            return Exchange(token, None, None, "node not reachable", 0)
        url = node.endpoint.rstrip("/") + path
        server_hostname = node.id if url.startswith("https:") else None
        try:
            async with asyncio.timeout(self.broker.config.node_deadline_seconds), session.post(
                    url, json={"v": CHECK_VERSION, "check": token},
                    server_hostname=server_hostname) as response:
                der = tls.response_certificate(response) if server_hostname else None
                if der is not None:
                    tls.peer_member(self.broker.trust.current, der, "node", expected=node.id)
                if response.status != 200:
                    return Exchange(token, None, None, f"node refused (HTTP {response.status})",
                                    response.status)
                body = await response.json(content_type=None)
        except TimeoutError:
            return Exchange(token, None, None, "no answer in time", 0)
        except (aiohttp.ClientError, OSError, ValueError, tls.CertificateError) as exc:
            return Exchange(token, None, None, f"not reachable ({exc.__class__.__name__})", 0)
        answer = body.get("answer") if isinstance(body, dict) else None
        if not isinstance(answer, str):
            return Exchange(token, None, None, "answer is not a signed envelope", 200)
        try:
            claims, signer = envelope.verify(answer, self.broker.trust.current, role="node",
                                             typ=CHECK_ANSWER_TYPE, now=datetime.now(UTC),
                                             audience=self.broker.config.id)
            if signer.id != node.id:
                raise TrustError("answer signed by a different member")
            bound = claims.get("request_hash") == envelope.envelope_hash(token)
            if claims.get("request_jti") != jti or not bound:
                raise TrustError("answer is not bound to this request")
            outcome = CheckOutcome.from_wire(claims.get("check"))
            if outcome.check_id != wire.get("check_id"):
                raise TrustError("answer is about another check")
        except (TrustError, ValidationError) as exc:
            log.error("check answer from %s refused: %s", node.id, exc.__class__.__name__)
            return Exchange(token, None, envelope.envelope_hash(answer), "answer failed verification", 200)
        return Exchange(token, outcome, envelope.envelope_hash(answer), None, 200)

    async def _log(self, item: Mapping[str, Any]) -> None:
        await self.broker.audit.append(item)

    async def _answered(self, check: BrokerCheck, kind: str, sent: Exchange, now: datetime) -> None:
        result: JsonObject = {"request": kind, "request_hash": envelope.envelope_hash(sent.token)}
        if sent.outcome is not None:
            result.update(answer_hash=sent.answer_hash, state=sent.outcome.state.value,
                          disclosed=sent.outcome.disclosure.status.value if sent.outcome.disclosure else None)
        else:
            result.update(status="unanswered", reason=sent.reason, answer_hash=sent.answer_hash)
        await self._log(_entry("answer", self.broker.config.id, now, check, **result))

    def _follow(self, check: BrokerCheck, outcome: CheckOutcome) -> bool:
        """Take the node's word on the state; ``True`` if it changed."""
        changed = outcome.state is not check.state
        check.state = outcome.state
        check.message = outcome.message
        check.information_used = outcome.information_used
        check.lead_informed = outcome.lead_informed
        check.expires = outcome.expires
        with contextlib.suppress(ValueError):
            check.expires_at = datetime.fromisoformat(outcome.expires).timestamp()
        return changed

    # --- what practitioners do --------------------------------------------------------------

    def _node(self, authority: str) -> Member:
        try:
            return self.broker.trust.current.member(authority, "node")
        except TrustError:
            raise CheckRefused(403, "not-possible-match", "authority: did not answer possible_match to "
                               "that search") from None

    async def ask(self, who: Practitioner, body: Mapping[str, Any], now: datetime) -> BrokerCheck:
        """Validate, check the search, send the request to that one node, return the check."""
        refusal = rules.check_role(who.role)
        if refusal is not None:
            raise CheckRefused(403, "forbidden-role", str(refusal))
        if not who.has_mfa:
            raise CheckRefused(403, "mfa-required",
                               "amr: asking for a check needs multi-factor authentication")
        if who.role == rules.MEDIATOR_ROLE:
            raise CheckRefused(403, "forbidden-role", "role: a mediator's search names another professional; "
                               "that professional asks for the check")
        errors: list[FieldError] = []
        unknown = sorted(set(body) - CHECK_FIELDS)
        if unknown:
            errors.append(FieldError(unknown[0], "is not a check field"))
        search_id = authority = purpose = ""
        for name in ("search_id", "authority"):
            try:
                value = check_id(body.get(name), name) if name == "search_id" else body.get(name)
                if not isinstance(value, str) or not value:
                    raise FieldError(name, "is required")
                search_id, authority = (value, authority) if name == "search_id" else (search_id, value)
            except FieldError as exc:
                errors.append(exc)
        found: Identity | None = None
        try:
            found = parse_identity(body.get("identity"))
            check_searchable(found, now.date())
        except ValidationError as exc:
            errors.extend(exc.errors)
        raw_purpose = body.get("purpose")
        if not isinstance(raw_purpose, str) or self.broker.trust.current.policy.purpose(raw_purpose) is None:
            codes = ", ".join(p.code for p in self.broker.trust.current.policy.purposes)
            errors.append(FieldError("purpose", f"expected one of {codes}, got {raw_purpose!r}"))
        else:
            purpose = raw_purpose
        contact: RequesterContact | None = None
        try:
            contact = RequesterContact.from_wire(body.get("contact"))
        except ValidationError as exc:
            errors.extend(exc.errors)
        if errors:
            raise CheckRefused(400, "invalid-check", "; ".join(str(e) for e in errors), tuple(errors))
        assert found is not None and contact is not None
        record = self.broker.ledger.get(search_id, now.timestamp())
        if record is None or (record.issuer, record.sub) != (who.issuer, who.sub):
            raise CheckRefused(403, "not-your-search", "search_id: not a search you made that an authority "
                               "answered possible_match (or it is more than a day old: search again)")
        if authority not in record.possible:
            raise CheckRefused(403, "not-possible-match", "authority: did not answer possible_match to that "
                               "search")
        if self.broker.ledger.digest(found.to_wire()) != record.identity_digest:
            raise CheckRefused(403, "not-searched-identity", "identity: not the identity searched for under "
                               "that search_id")
        node = self._node(authority)
        check = BrokerCheck(str(uuid.uuid4()), search_id, authority, node.name, who.issuer, who.sub, contact,
                            purpose, now.timestamp())
        request = CheckRequest(check.id, search_id, authority, found, purpose, who.to_claims(), contact)
        sent_first = await self._send_request(check, request, who, now)
        if sent_first.outcome is None:
            raise CheckRefused(502, "authority-unavailable", f"authority: {node.name} did not take the check "
                               f"({sent_first.reason}); try again later")
        self._follow(check, sent_first.outcome)
        self.checks[check.id] = check
        log.info("check %s asked of %s", check.id, authority)
        return check

    async def _send_request(self, check: BrokerCheck, request: CheckRequest, who: Practitioner,
                            now: datetime) -> Exchange:
        node = self._node(check.authority)
        jti, token = self._sign(CHECK_REQUEST_TYPE, request.to_wire(), now)
        # Logged before it leaves, with a commitment to the identity (never the identity).
        await self._log(_entry(
            "request", self.broker.config.id, now, check, search_id=check.search_id,
            request_hash=envelope.envelope_hash(token), practitioner=who.to_claims(), purpose=check.purpose,
            identity_commitment=audits.commit(self.broker.commitment_key, request.identity.to_wire())))
        sent = await self.send(node, "/v1/checks", token, jti, request.to_wire())
        await self._answered(check, "request", sent, now)
        return sent

    def mine(self, who: Practitioner, check_ref: str) -> BrokerCheck:
        check = self.checks.get(check_ref)
        if check is None or (check.issuer, check.sub) != (who.issuer, who.sub):
            raise CheckRefused(404, "unknown-check", f"check_id: no check {check_ref!r} of yours")
        return check

    def list_mine(self, who: Practitioner) -> list[BrokerCheck]:
        return sorted((c for c in self.checks.values() if (c.issuer, c.sub) == (who.issuer, who.sub)),
                      key=lambda c: -c.created)

    def unseen(self, who: Practitioner) -> int:
        return sum(1 for c in self.list_mine(who) if c.unseen)

    async def look(self, who: Practitioner, check_ref: str,
                   now: datetime) -> tuple[BrokerCheck, CheckOutcome | None]:
        """The check as it stands, with the disclosure when confirmed (fetched fresh, never kept)."""
        check = self.mine(who, check_ref)
        check.unseen = False
        if check.state is CheckState.EXPIRED:
            return check, None
        outcome = await self.poll(check, now, disclose=True)
        return check, outcome

    async def add_information(self, who: Practitioner, check_ref: str, body: Mapping[str, Any],
                              now: datetime) -> BrokerCheck:
        check = self.mine(who, check_ref)
        if check.state is not CheckState.MORE_INFORMATION or check.information_used:
            raise CheckRefused(409, "information-not-wanted", "identity: more information can be given once, "
                               "after the authority asks for it")
        unknown = sorted(set(body) - {"identity"})
        if unknown:
            raise CheckRefused(400, "invalid-check", f"{unknown[0]}: is not a field here",
                               (FieldError(unknown[0], "is not a field here"),))
        try:
            more = CheckInformation(check.id, parse_identity(body.get("identity")))
        except ValidationError as exc:
            raise CheckRefused(400, "invalid-check", str(exc), exc.errors) from None
        node = self._node(check.authority)
        jti, token = self._sign(CHECK_INFORMATION_TYPE, more.to_wire(), now)
        await self._log(_entry("information", self.broker.config.id, now, check,
                               request_hash=envelope.envelope_hash(token),
                               fields=sorted(more.identity.present()),
                               identity_commitment=audits.commit(self.broker.commitment_key,
                                                                 more.identity.to_wire())))
        sent = await self.send(node, f"/v1/checks/{check.id}/information", token, jti, more.to_wire())
        await self._answered(check, "information", sent, now)
        if sent.outcome is None:
            raise CheckRefused(502 if sent.status != 409 else 409, "authority-unavailable",
                               f"authority: the information was not taken ({sent.reason})")
        self._follow(check, sent.outcome)
        return check

    async def poll(self, check: BrokerCheck, now: datetime, *, disclose: bool) -> CheckOutcome | None:
        """Ask the node where ``check`` stands; log the answer unless it changes nothing."""
        node = self._node(check.authority)
        poll = CheckPoll(check.id, disclose)
        sent = await self.exchange(node, f"/v1/checks/{check.id}/outcome", CHECK_POLL_TYPE,
                                   poll.to_wire(), now)
        if sent.outcome is None:
            if sent.status == 404:
                await self.expire(check, now)
            return None
        if sent.outcome.state is not CheckState.PENDING or sent.outcome.disclosure is not None:
            await self._answered(check, "poll", sent, now)
        self._follow(check, sent.outcome)
        return sent.outcome

    async def expire(self, check: BrokerCheck, now: datetime) -> None:
        if check.state is CheckState.EXPIRED:
            return
        check.state = CheckState.EXPIRED
        check.unseen = True
        await self._log(_entry("expired", self.broker.config.id, now, check))
        await self.notify(check)

    async def poll_pending(self, now: datetime) -> int:
        """Ask about every pending check; tell practitioners about the ones that changed."""
        changed = 0
        for check in list(self.checks.values()):
            if check.state is CheckState.EXPIRED:
                if now.timestamp() > check.expires_at + KEEP_AFTER_EXPIRY_SECONDS:
                    del self.checks[check.id]
                continue
            if check.expires_at and now.timestamp() > check.expires_at:
                await self.expire(check, now)
                changed += 1
                continue
            if check.state is not CheckState.PENDING:
                continue
            before = check.state
            try:
                await self.poll(check, now, disclose=False)
            except logapi.AuditUnavailable:
                log.error("check %s: answer not logged; asked again next round", check.id)
                continue
            if check.state is not before:
                changed += 1
                check.unseen = True
                await self.notify(check)
        return changed

    async def notify(self, check: BrokerCheck) -> None:
        """Tell the practitioner (webhook, signed by the broker) that their check has news."""
        url = self.broker.config.check_webhook_url
        session = self.broker.session
        if url is None or session is None or check.contact.email is None:
            return
        iat = int(time.time())
        notice = envelope.sign({"iss": self.broker.config.id, "iat": iat, "exp": iat + 300,
                                "jti": str(uuid.uuid4()), "type": "check-answered", "to": check.contact.email,
                                "check_id": check.id, "authority": check.authority_name},
                               self.broker.key, NOTICE_TYPE)
        try:
            async with asyncio.timeout(10), session.post(
                    url, data=notice, headers={"Content-Type": "application/jose"}) as response:
                if response.status >= 300:
                    log.warning("check %s: notice refused (HTTP %d)", check.id, response.status)
        except (TimeoutError, aiohttp.ClientError, OSError) as exc:
            log.warning("check %s: notice not delivered (%s)", check.id, exc.__class__.__name__)


CHECKS = web.AppKey("checks", CheckService)


# --- API ------------------------------------------------------------------------------------


def _problem(exc: CheckRefused) -> web.Response:
    return problem(exc.status, "Check refused" if exc.status != 400 else "Invalid check", str(exc),
                   kind=exc.kind, errors=exc.errors)


async def _who(request: web.Request, now: datetime) -> Practitioner | web.Response:
    broker = request.app[BROKER]
    try:
        return broker.authenticate(request, now)
    except TrustError as exc:
        return problem(401, "Unauthorised", str(exc), kind="unauthorised",
                       headers={"WWW-Authenticate": 'Bearer realm="signpost"'})


async def handle_ask(request: web.Request) -> web.Response:
    now = datetime.now(UTC)
    who = await _who(request, now)
    if isinstance(who, web.Response):
        return who
    service = request.app[CHECKS]
    over = await ratelimit.admit(request.app, who.issuer, who.sub, who.org)  # a check counts as a search
    if over is not None:
        return over
    try:
        body = await read_json_object(request, service.broker.config.body_limit)
        check = await service.ask(who, body, now)
    except FieldError as exc:
        return problem(400, "Invalid check", str(exc), errors=[exc], kind="invalid-check")
    except CheckRefused as exc:
        return _problem(exc)
    except logapi.AuditUnavailable as exc:
        return problem(503, "Audit log unavailable", "the broker cannot log checks, so it does not send "
                       f"them: {exc}", kind="audit-unavailable")
    return json_response({"check": check.to_wire()}, status=201,
                         headers={"Location": f"/v1/checks/{check.id}"})


async def handle_get(request: web.Request) -> web.Response:
    now = datetime.now(UTC)
    who = await _who(request, now)
    if isinstance(who, web.Response):
        return who
    try:
        check, outcome = await request.app[CHECKS].look(who, request.match_info["check_id"], now)
    except CheckRefused as exc:
        return _problem(exc)
    except logapi.AuditUnavailable as exc:
        return problem(503, "Audit log unavailable", str(exc), kind="audit-unavailable")
    unavailable = outcome is None and check.state is not CheckState.EXPIRED
    return json_response({"check": check.to_wire(outcome, unavailable=unavailable)})


async def handle_list(request: web.Request) -> web.Response:
    now = datetime.now(UTC)
    who = await _who(request, now)
    if isinstance(who, web.Response):
        return who
    return json_response({"checks": [c.to_wire() for c in request.app[CHECKS].list_mine(who)]})


async def handle_information(request: web.Request) -> web.Response:
    now = datetime.now(UTC)
    who = await _who(request, now)
    if isinstance(who, web.Response):
        return who
    service = request.app[CHECKS]
    try:
        body = await read_json_object(request, service.broker.config.body_limit)
        check = await service.add_information(who, request.match_info["check_id"], body, now)
    except FieldError as exc:
        return problem(400, "Invalid check", str(exc), errors=[exc], kind="invalid-check")
    except CheckRefused as exc:
        return _problem(exc)
    except logapi.AuditUnavailable as exc:
        return problem(503, "Audit log unavailable", str(exc), kind="audit-unavailable")
    return json_response({"check": check.to_wire()})


def install(app: web.Application) -> None:
    """Register ``/v1/checks`` and start the follow-up task (after the broker's HTTP client)."""
    service = CheckService(app[BROKER])
    app[CHECKS] = service
    app.router.add_post("/v1/checks", handle_ask)
    app.router.add_get("/v1/checks", handle_list)
    app.router.add_get("/v1/checks/{check_id}", handle_get)
    app.router.add_post("/v1/checks/{check_id}/information", handle_information)

    async def following(_: web.Application) -> AsyncIterator[None]:
        async with every(service.broker.config.check_poll_seconds,
                         lambda: service.poll_pending(datetime.now(UTC)), log=log,
                         failure="check follow-up failed"):
            yield

    app.cleanup_ctx.append(following)


__all__ = ["CHECKS", "BrokerCheck", "CheckRefused", "CheckService", "install"]
