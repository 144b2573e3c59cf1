"""The wire protocol between broker and nodes: what a query and an answer contain.

Both travel as compact JWS (see ``trust.envelope``); this module defines their claims, the
answer statuses and the only involvement fields that may ever be disclosed. Messages carry a
version ``v`` and readers ignore fields they do not know, so an older node accepts a newer
broker's query.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass
from enum import StrEnum
from typing import Any

PROTOCOL_VERSION = 1
QUERY_LIFETIME_SECONDS = 60
ANSWER_LIFETIME_SECONDS = 60


class Status(StrEnum):
    """What one authority says about the child searched for."""

    MATCH = "match"
    NO_MATCH = "no_match"
    POSSIBLE_MATCH = "possible_match"
    SHIELDED = "shielded"
    UNAVAILABLE = "unavailable"


# Statuses a node may sign. ``unavailable`` is only ever the broker's own verdict.
NODE_STATUSES = frozenset({Status.MATCH, Status.NO_MATCH, Status.POSSIBLE_MATCH, Status.SHIELDED})


@dataclass(frozen=True)
class Contact:
    """A way to reach a team: the signposting team of an authority, an assessment's lead."""

    name: str
    phone: str | None = None
    secure_email: str | None = None
    organisation: str | None = None

    def to_wire(self) -> dict[str, Any]:
        return {k: v for k, v in asdict(self).items() if v is not None}

    @classmethod
    def from_wire(cls, data: Any) -> Contact | None:
        if not isinstance(data, dict) or not isinstance(data.get("name"), str):
            return None
        return cls(
            name=data["name"],
            phone=data.get("phone"),
            secure_email=data.get("secure_email"),
            organisation=data.get("organisation"),
        )


@dataclass(frozen=True)
class Disclosed:
    """One involvement as it may be disclosed: who is involved and how to reach them. Nothing else."""

    organisation: str
    service_category: str
    practitioner_name: str
    practitioner_role: str
    phone: str | None
    secure_email: str | None
    since: str | None
    lead: bool

    def to_wire(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def from_wire(cls, data: dict[str, Any]) -> Disclosed:
        return cls(
            organisation=str(data["organisation"]),
            service_category=str(data["service_category"]),
            practitioner_name=str(data["practitioner_name"]),
            practitioner_role=str(data["practitioner_role"]),
            phone=data.get("phone"),
            secure_email=data.get("secure_email"),
            since=data.get("since"),
            lead=bool(data.get("lead", False)),
        )


DISCLOSED_FIELDS = frozenset(Disclosed.__dataclass_fields__)
