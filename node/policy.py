"""The node's disclosure policy: exactly what a requester may learn about a matched child.

Pure functions, no I/O. The node is the final word on its own data: whatever the broker
checked, these rules run again here. What may leave the node is ``federation.protocol.Disclosed``
and nothing else: no addresses, case notes, reasons or history.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from datetime import date
from typing import Any

from federation.identity import age_on
from federation.protocol import Contact, Disclosed, Status
from node.store import Child, Involvement

ARCHIVE_AGE = 18
SEARCHING_ROLES = frozenset({"practitioner", "mediator", "signposting_officer"})


@dataclass(frozen=True)
class Requester:
    """Who is asking, as the broker signed it into the query."""

    sub: str
    org: str
    role: str
    authority: str | None

    @classmethod
    def from_claims(cls, claims: Mapping[str, Any]) -> Requester:
        return cls(
            sub=str(claims.get("sub", "")),
            org=str(claims.get("org", "")),
            role=str(claims.get("role", "")),
            authority=claims.get("authority"),
        )


@dataclass(frozen=True)
class Disclosure:
    """The body of a node's answer before it is signed."""

    status: Status
    involvements: tuple[Disclosed, ...] = ()
    contact: Contact | None = None
    assessment: Contact | None = None

    def to_wire(self) -> dict[str, Any]:
        out: dict[str, Any] = {"status": self.status.value}
        if self.status is Status.MATCH:
            out["involvements"] = [i.to_wire() for i in self.involvements]
            out["assessment"] = self.assessment.to_wire() if self.assessment else None
        if self.contact is not None:
            out["contact"] = self.contact.to_wire()
        return out


def is_archived(child: Child, today: date) -> bool:
    """Records of people aged 18 or over are archived: never returned by a search."""
    return age_on(child.date_of_birth, today) >= ARCHIVE_AGE


def is_past_retention(child: Child, today: date, retention_age: int) -> bool:
    """Records past the retention age (the 24th birthday by default) must be deleted."""
    return age_on(child.date_of_birth, today) >= retention_age


def _visible(inv: Involvement, today: date, sensitive_categories: frozenset[str]) -> bool:
    if inv.end_date is not None and inv.end_date < today:
        return False
    if inv.start_date is not None and inv.start_date > today:
        return False
    sensitive = inv.sensitive or inv.service_category in sensitive_categories
    return not sensitive or inv.consent


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
) -> Disclosure:
    """Apply the disclosure rules to the matcher's decision.

    - A role that may not search gets ``no_match`` and nothing else (the broker refuses it first).
    - An archived child is never disclosed (``no_match``).
    - A shielded child is ``shielded`` with the signposting contact, except to this authority's
      own signposting officers.
    - Sensitive involvements are left out unless consent or need is recorded on them, and
      nothing hints that they exist.
    """
    if requester.role not in SEARCHING_ROLES:
        return Disclosure(Status.NO_MATCH)
    if status is not Status.MATCH or child is None:
        if status is Status.POSSIBLE_MATCH:
            return Disclosure(Status.POSSIBLE_MATCH, contact=signposting_contact)
        return Disclosure(Status.NO_MATCH)
    if is_archived(child, today):
        return Disclosure(Status.NO_MATCH)
    own_officer = (requester.role == "signposting_officer" and requester.authority == authority_id)
    if child.shielded and not own_officer:
        return Disclosure(Status.SHIELDED, contact=signposting_contact)
    shown = [i for i in involvements if _visible(i, today, sensitive_categories)]
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
