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
being kept. Checks are kept in the broker's ledger (``broker.ledger``: Redis when the broker has
a Redis URL, else a SQLite file beside the audit log), so neither a restart nor another replica
loses any; one replica at a time follows them up; a notice that could not be delivered is tried
again every round.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
import uuid
from collections.abc import Mapping
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

import aiohttp
from aiohttp import web

from broker import audit as audits
from broker.api import Broker
from broker.ledger import LedgerUnavailable
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
from federation.identity import Identity, check_searchable, parse_identity
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
    on_behalf_of: dict[str, str] | None = None  # a mediator's check: the professional named
    notice_due: bool = False  # the practitioner's notice is still to be sent (retried each round)

    def to_row(self) -> JsonObject:
        """The check as the ledger keeps it (``broker.ledger``)."""
        return {"id": self.id, "search_id": self.search_id, "authority": self.authority,
                "authority_name": self.authority_name, "issuer": self.issuer, "sub": self.sub,
                "contact": self.contact.to_wire(), "purpose": self.purpose, "created": self.created,
                "expires": self.expires, "state": self.state.value, "message": self.message,
                "information_used": self.information_used, "lead_informed": self.lead_informed,
                "unseen": self.unseen, "expires_at": self.expires_at, "on_behalf_of": self.on_behalf_of,
                "notice_due": self.notice_due}

    @classmethod
    def from_row(cls, row: Mapping[str, Any]) -> BrokerCheck:
        return cls(
            id=row["id"], search_id=row["search_id"], authority=row["authority"],
            authority_name=row["authority_name"], issuer=row["issuer"], sub=row["sub"],
            contact=RequesterContact.from_wire(row["contact"]), purpose=row["purpose"],
            created=float(row["created"]), expires=row["expires"], state=CheckState(row["state"]),
            message=row.get("message"), information_used=bool(row.get("information_used")),
            lead_informed=bool(row.get("lead_informed")), unseen=bool(row.get("unseen")),
            expires_at=float(row.get("expires_at") or 0.0), on_behalf_of=row.get("on_behalf_of"),
            notice_due=bool(row.get("notice_due")))

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
        self.wake = asyncio.Event()

    # Every check is read from the ledger when it is needed and written back before anything is
    # answered, so any replica (or this one after a restart) sees the same checks.

    async def save(self, check: BrokerCheck) -> None:
        await self.broker.ledger.save_check(check.id, check.issuer, check.sub, check.created, check.to_row())

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
        record = await self.broker.ledger.search(search_id, now.timestamp())
        if record is None or (record.issuer, record.sub) != (who.issuer, who.sub):
            raise CheckRefused(403, "not-your-search", "search_id: not a search you made that an authority "
                               "answered possible_match (or it is more than a day old: search again)")
        if authority not in record.possible:
            raise CheckRefused(403, "not-possible-match", "authority: did not answer possible_match to that "
                               "search")
        if await self.broker.ledger.digest(found.to_wire()) != record.identity_digest:
            raise CheckRefused(403, "not-searched-identity", "identity: not the identity searched for under "
                               "that search_id")
        # A mediator's check is for the professional named in the search, as the search was
        # (the same rule: a mediator names one, nobody else may).
        on_behalf_of, mediation_errors = rules.check_mediation(who.role, record.on_behalf_of)
        if mediation_errors:
            raise CheckRefused(403, "mediation", str(mediation_errors[0]), tuple(mediation_errors))
        node = self._node(authority)
        check = BrokerCheck(str(uuid.uuid4()), search_id, authority, node.name, who.issuer, who.sub, contact,
                            purpose, now.timestamp(), on_behalf_of=on_behalf_of)
        request = CheckRequest(check.id, search_id, authority, found, purpose, who.to_claims(), contact,
                               on_behalf_of=on_behalf_of)
        sent_first = await self._send_request(check, request, who, now)
        if sent_first.outcome is None:
            raise CheckRefused(502, "authority-unavailable", f"authority: {node.name} did not take the check "
                               f"({sent_first.reason}); try again later")
        self._follow(check, sent_first.outcome)
        await self.save(check)
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
            on_behalf_of=check.on_behalf_of,
            identity_commitment=audits.commit(self.broker.commitment_key, request.identity.to_wire())))
        sent = await self.send(node, "/v1/checks", token, jti, request.to_wire())
        await self._answered(check, "request", sent, now)
        return sent

    async def mine(self, who: Practitioner, check_ref: str) -> BrokerCheck:
        row = await self.broker.ledger.check(check_ref) if len(check_ref) <= 64 else None
        check = BrokerCheck.from_row(row) if row is not None else None
        if check is None or (check.issuer, check.sub) != (who.issuer, who.sub):
            raise CheckRefused(404, "unknown-check", f"check_id: no check {check_ref!r} of yours")
        return check

    async def list_mine(self, who: Practitioner) -> list[BrokerCheck]:
        rows = await self.broker.ledger.checks_of(who.issuer, who.sub)
        return sorted(map(BrokerCheck.from_row, rows), key=lambda c: -c.created)

    async def unseen(self, who: Practitioner) -> int:
        """How many of ``who``'s checks have news; 0 when the ledger cannot say (a hint only)."""
        try:
            return sum(1 for c in await self.list_mine(who) if c.unseen)
        except LedgerUnavailable:
            return 0

    async def look(self, who: Practitioner, check_ref: str,
                   now: datetime) -> tuple[BrokerCheck, CheckOutcome | None]:
        """The check as it stands, with the disclosure when confirmed (fetched fresh, never kept)."""
        check = await self.mine(who, check_ref)
        if check.unseen:
            check.unseen = False
            await self.save(check)
        if check.state is CheckState.EXPIRED:
            return check, None
        outcome = await self.poll(check, now, disclose=True)
        return check, outcome

    async def add_information(self, who: Practitioner, check_ref: str, body: Mapping[str, Any],
                              now: datetime) -> BrokerCheck:
        check = await self.mine(who, check_ref)
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
        await self.save(check)
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
        if self._follow(check, sent.outcome) or sent.outcome.state is not CheckState.PENDING:
            await self.save(check)
        return sent.outcome

    async def expire(self, check: BrokerCheck, now: datetime) -> None:
        if check.state is CheckState.EXPIRED:
            return
        check.state = CheckState.EXPIRED
        check.unseen = True
        check.notice_due = True
        await self._log(_entry("expired", self.broker.config.id, now, check))
        await self.save(check)
        await self.send_notice(check)

    async def poll_pending(self, now: datetime) -> int:
        """Ask about every pending check; tell practitioners about the ones that changed."""
        changed = 0
        # One replica follows up at a time (a lease a little shorter than a round).
        if not await self.broker.ledger.lease("follow-up", self.broker.config.check_poll_seconds * 0.9):
            return 0
        for check in map(BrokerCheck.from_row, await self.broker.ledger.all_checks()):
            if check.notice_due:
                await self.send_notice(check)  # a notice not delivered last round
            if check.state is CheckState.EXPIRED:
                if now.timestamp() > check.expires_at + KEEP_AFTER_EXPIRY_SECONDS:
                    await self.broker.ledger.delete_check(check.id)
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
                check.notice_due = True
                await self.save(check)
                await self.send_notice(check)
        return changed

    async def send_notice(self, check: BrokerCheck) -> None:
        """Send a due notice; when it is delivered (or there is nowhere to send it) it is no longer
        due, otherwise the next round tries again, until the check is forgotten."""
        if await self.notify(check):
            check.notice_due = False
            await self.save(check)

    async def notify(self, check: BrokerCheck) -> bool:
        """Tell the practitioner (webhook, signed by the broker) that their check has news;
        ``True`` when delivered or when there is nowhere to send it."""
        url = self.broker.config.check_webhook_url
        session = self.broker.session
        if url is None or check.contact.email is None:
            return True
        if session is None:
            return False
        if not url.startswith("https://") and not self.broker.config.unsafe_http_webhooks:
            log.error("check %s: notice not sent: check_webhook_url is not https://", check.id)
            return True  # refused by the configuration check already; never in clear text
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
                    return False
        except (TimeoutError, aiohttp.ClientError, OSError) as exc:
            log.warning("check %s: notice not delivered (%s)", check.id, exc.__class__.__name__)
            return False
        await self._log(_entry("notice", self.broker.config.id, datetime.now(UTC), check,
                               state=check.state.value))
        return True


CHECKS = web.AppKey("checks", CheckService)


__all__ = ["CHECKS", "BrokerCheck", "CheckRefused", "CheckService"]
