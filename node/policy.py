"""The node's disclosure policy: exactly what a requester may learn about a matched child.

Pure functions, no I/O. The node is the final word on its own data: whatever the broker
checked, these rules run again here. What may leave the node is ``federation.protocol.Disclosed``
and nothing else: no addresses, case notes, reasons or history.

The rules, in the order ``decide`` applies them:

1. Only ``practitioner``, ``mediator`` and ``signposting_officer`` may search (``check_query``
   refuses the others before anything is matched).
2. Archived records (the person is 18 or over) are never returned: ``no_match``.
3. A shielded child is answered ``shielded`` with the authority's signposting contact only,
   except to this authority's own signposting officers, who see the full answer.
4. An ambiguous query (``possible_match``) whose candidates include a shielded record is
   answered exactly as a shielded match would be (``shielded``, signposting contact only). A
   ``possible_match`` is therefore only ever said about records that are not shielded, so nobody
   can refine identifiers against a shielded record and learn which details (say, a new
   postcode) it holds; the signposting team, who can see everything, resolves the ambiguity.
5. Sensitive involvements (flagged, or in a category the trust-list policy names) are left out
   unless consent or need is recorded on that involvement; nothing hints that they exist. When
   nothing at all remains to show, the answer is ``no_match`` rather than an empty match, so an
   empty list cannot betray a hidden service.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from datetime import date, datetime
from typing import Any

from federation.canonical import JsonObject
from federation.errors import SignpostError
from federation.identity import age_on
from federation.protocol import Contact, Disclosed, QueryClaims, Status, disclosure_wire
from federation.rules import ARCHIVE_AGE, SEARCHING_ROLES, check_mediation, check_role
from node.store import Child, Involvement
from trust.tokens import MFA_METHODS


class PolicyRefusal(SignpostError):
    """A signed query breaks a federation rule the node enforces itself; ``rule`` names it."""

    def __init__(self, rule: str, message: str) -> None:
        super().__init__(message)
        self.rule = rule


@dataclass(frozen=True)
class Requester:
    """Who is asking, as the broker signed it into the query."""

    sub: str
    org: str
    role: str
    authority: str | None
    name: str = ""
    issuer: str = ""

    @classmethod
    def from_claims(cls, claims: Mapping[str, Any]) -> Requester:
        authority = claims.get("authority")
        return cls(
            sub=str(claims.get("sub", "")),
            org=str(claims.get("org", "")),
            role=str(claims.get("role", "")),
            authority=authority if isinstance(authority, str) else None,
            name=str(claims.get("name", "")),
            issuer=str(claims.get("iss", "")),
        )


@dataclass(frozen=True)
class QueryContext:
    """The parts of a verified query the policy and the notifications need."""

    requester: Requester
    purpose: str
    on_behalf_of: Mapping[str, str] | None


def check_query(claims: QueryClaims, purposes: Iterable[str]) -> QueryContext:
    """Refuse a signed query that breaks a rule, even though a trusted broker signed it.

    Checks the role, the purpose (one of the trust list's codes) and, for a mediator, the named
    professional (name, organisation, role, phone). Raises ``PolicyRefusal`` naming the rule.
    """
    practitioner = claims.practitioner
    if practitioner is None:
        raise PolicyRefusal("practitioner", "practitioner: expected an object in the signed query")
    requester = Requester.from_claims(practitioner)
    role_error = check_role(requester.role)
    if role_error is not None:
        raise PolicyRefusal("role", str(role_error))
    if not requester.sub or not requester.org:
        raise PolicyRefusal("practitioner", "practitioner: sub and org are required")
    amr = practitioner.get("amr")
    if not isinstance(amr, list) or not MFA_METHODS & {a for a in amr if isinstance(a, str)}:
        raise PolicyRefusal("mfa", "practitioner.amr: searching needs multi-factor authentication")
    known = sorted(set(purposes))
    purpose = claims.purpose
    if not isinstance(purpose, str) or purpose not in known:
        raise PolicyRefusal("purpose", f"purpose: expected one of {', '.join(known) or '(none published)'}, "
                            f"got {purpose!r}")
    on_behalf_of, mediation_errors = check_mediation(requester.role, claims.on_behalf_of)
    if mediation_errors:
        raise PolicyRefusal("mediation", str(mediation_errors[0]))
    return QueryContext(requester, purpose, on_behalf_of)


@dataclass(frozen=True)
class Disclosure:
    """The body of a node's answer before it is signed."""

    status: Status
    involvements: tuple[Disclosed, ...] = ()
    contact: Contact | None = None
    assessment: Contact | None = None

    def to_wire(self) -> JsonObject:
        return disclosure_wire(self.status, self.involvements, self.contact, self.assessment)


def is_archived(child: Child, today: date) -> bool:
    """Records of people aged 18 or over are archived: never returned by a search."""
    return age_on(child.date_of_birth, today) >= ARCHIVE_AGE


def archived_from(today: date) -> date:
    """The latest date of birth archived on ``today``: ``is_archived(child, today)`` is
    ``child.date_of_birth <= archived_from(today)``, one comparison for a loop over every child
    (born on 29 February: 18 on 1 March in a year without one)."""
    year = today.year - ARCHIVE_AGE
    try:
        return today.replace(year=year)
    except ValueError:  # 29 February, and the year 18 years back has none
        return date(year, 2, 28)


def retention_cutoff(today: date, retention_age: int) -> str:
    """The ISO date string such that a birth date ``<=`` it is at or past ``retention_age``.

    Compared as text (ISO dates sort as text); the string need not be a real date (29 February).
    """
    if retention_age < ARCHIVE_AGE:
        raise ValueError(f"retention_age: expected at least {ARCHIVE_AGE}, got {retention_age}")
    return f"{today.year - retention_age:04d}-{today.month:02d}-{today.day:02d}"


def is_current(inv: Involvement, today: date) -> bool:
    """The involvement has started and not ended."""
    if inv.end_date is not None and inv.end_date < today:
        return False
    return inv.start_date is None or inv.start_date <= today


def is_sensitive(inv: Involvement, sensitive_categories: frozenset[str]) -> bool:
    return inv.sensitive or inv.service_category in sensitive_categories


def _visible(inv: Involvement, today: date, sensitive_categories: frozenset[str]) -> bool:
    if not is_current(inv, today):
        return False
    return not is_sensitive(inv, sensitive_categories) or inv.consent


def _disclosed(inv: Involvement) -> Disclosed:
    return Disclosed(
        organisation=inv.organisation,
        service_category=inv.service_category,
        practitioner_name=inv.practitioner_name,
        practitioner_role=inv.practitioner_role,
        phone=inv.phone,
        secure_email=inv.secure_email,
        since=inv.start_date.isoformat() if inv.start_date else None,
        lead=inv.lead,
    )


def is_own_officer(requester: Requester, authority_id: str) -> bool:
    """This authority's own signposting team: the only requesters who see shielded children."""
    return requester.role == "signposting_officer" and requester.authority == authority_id


def decide(
    *,
    status: Status,
    child: Child | None,
    involvements: Iterable[Involvement],
    requester: Requester,
    authority_id: str,
    signposting_contact: Contact,
    sensitive_categories: frozenset[str],
    today: date,
    candidates: Iterable[Child] = (),
) -> Disclosure:
    """Apply the disclosure rules (see the module docstring) to the matcher's decision.

    ``candidates`` are the records a ``possible_match`` was undecided between, when the matcher
    can name them; they are used only to keep shielded records out of ``possible_match``.
    """
    if requester.role not in SEARCHING_ROLES:
        return Disclosure(Status.NO_MATCH)
    own_officer = is_own_officer(requester, authority_id)
    if status is Status.POSSIBLE_MATCH:
        live = [c for c in candidates if not is_archived(c, today)]
        if not own_officer and any(c.shielded for c in live):
            return Disclosure(Status.SHIELDED, contact=signposting_contact)
        return Disclosure(Status.POSSIBLE_MATCH, contact=signposting_contact)
    if status is not Status.MATCH or child is None:
        return Disclosure(Status.NO_MATCH)
    if is_archived(child, today):
        return Disclosure(Status.NO_MATCH)
    if child.shielded and not own_officer:
        return Disclosure(Status.SHIELDED, contact=signposting_contact)
    shown = [i for i in involvements if _visible(i, today, sensitive_categories)]
    if not shown:
        return Disclosure(Status.NO_MATCH)
    assessment = next(
        (Contact(name=i.practitioner_name, phone=i.phone, secure_email=i.secure_email,
                 organisation=i.organisation) for i in shown if i.assessment),
        None,
    )
    shown.sort(key=lambda i: (not i.lead, i.organisation, i.practitioner_name))
    return Disclosure(
        Status.MATCH,
        involvements=tuple(_disclosed(i) for i in shown),
        assessment=assessment,
    )


# --- Notify on access -----------------------------------------------------------------------


def _same_organisation(a: str, b: str) -> bool:
    return " ".join(a.casefold().split()) == " ".join(b.casefold().split())


def notifications(
    *,
    child: Child,
    involvements: Iterable[Involvement],
    query: QueryContext,
    query_jti: str,
    authority_id: str,
    searched_at: datetime,
    today: date,
) -> list[JsonObject]:
    """What to tell each notify-on-access practitioner that someone searched for this child.

    One message per current involvement marked notify-on-access, unless the searcher is from
    that involvement's own organisation. A message says who searched (name, organisation, role,
    and for a mediator the professional named), the purpose and when; never what any answer
    contained. Sent whatever the requester was shown (a shielded child's lead is told too).
    """
    who = query.requester
    out: list[JsonObject] = []
    for inv in involvements:
        if not inv.notify_on_access or not inv.notify_url or not is_current(inv, today):
            continue
        if _same_organisation(who.org, inv.organisation):
            continue
        out.append({
            "type": "access",
            "authority": authority_id,
            "child_record_id": child.record_id,
            "involvement_record_id": inv.record_id,
            "url": inv.notify_url,
            "searcher": {"name": who.name or who.sub, "organisation": who.org, "role": who.role},
            "on_behalf_of": dict(query.on_behalf_of) if query.on_behalf_of else None,
            "purpose": query.purpose,
            "searched_at": searched_at.isoformat(timespec="seconds"),
            "query_id": query_jti,
        })
    return out


# --- Both sides told ------------------------------------------------------------------------


def lead_notices(
    *,
    kind: str,
    child: Child,
    involvements: Iterable[Involvement],
    requester: Requester,
    on_behalf_of: Mapping[str, str] | None,
    contact: Mapping[str, str] | None,
    purpose: str,
    authority_id: str,
    disclosed_at: datetime,
    today: date,
    sensitive_categories: frozenset[str],
    reference: Mapping[str, str],
) -> list[JsonObject]:
    """Tell each lead practitioner that a match on this child was disclosed: who was given it,
    from which organisation, how to reach them (and, for a mediator, the professional named) and
    why. ``kind`` is ``match-disclosure`` (the matcher decided) or ``check-disclosure`` (an
    officer confirmed a check); ``reference`` names the search or check.

    Only leads of involvements the disclosure showed (current, and not a hidden sensitive
    service) are told, so nobody learns of a service the searcher could not see, and the
    searcher is told only about leads that really are informed. For a search, a searcher from
    the lead's own organisation tells nobody (as for notify-on-access).
    """
    out: list[JsonObject] = []
    for inv in involvements:
        if not inv.lead or not inv.notify_url or not _visible(inv, today, sensitive_categories):
            continue
        if kind == "match-disclosure" and _same_organisation(requester.org, inv.organisation):
            continue  # a search from the lead's own organisation tells nobody, as for notify-on-access
        out.append({
            "type": kind,
            "authority": authority_id,
            "child_record_id": child.record_id,
            "involvement_record_id": inv.record_id,
            "url": inv.notify_url,
            "searcher": {"name": requester.name or requester.sub, "organisation": requester.org,
                         "role": requester.role},
            "on_behalf_of": dict(on_behalf_of) if on_behalf_of else None,
            "contact": dict(contact) if contact else None,
            "purpose": purpose,
            "disclosed_at": disclosed_at.isoformat(timespec="seconds"),
            **reference,
        })
    return out
