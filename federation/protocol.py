"""The wire protocol between broker and nodes: what a query and an answer contain.

Both travel as compact JWS (see ``trust.envelope``); this module defines their claims, the
answer statuses and the only involvement fields that may ever be disclosed. Messages carry a
version ``v`` and readers ignore fields they do not know, so an older node accepts a newer
broker's query.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from enum import StrEnum
from typing import Any, NewType

from federation.canonical import JsonObject
from federation.errors import FieldError

PROTOCOL_VERSION = 1
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

    def to_wire(self) -> JsonObject:
        # Field by field, not ``asdict``: this runs for every answer a node signs.
        out: JsonObject = {"name": self.name}
        for name in ("phone", "secure_email", "organisation"):
            if (value := getattr(self, name)) is not None:
                out[name] = value
        return out

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

    def to_wire(self) -> JsonObject:
        return {"organisation": self.organisation, "service_category": self.service_category,
                "practitioner_name": self.practitioner_name, "practitioner_role": self.practitioner_role,
                "phone": self.phone, "secure_email": self.secure_email, "since": self.since,
                "lead": self.lead}

    @classmethod
    def from_wire(cls, data: Mapping[str, Any]) -> Disclosed:
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


def disclosure_wire(status: Status, involvements: tuple[Disclosed, ...], contact: Contact | None,
                    assessment: Contact | None) -> JsonObject:
    """What an answer discloses, as it travels: involvements and the assessment for a match only,
    the contact whenever there is one. Answers, checks and the broker's results all use this."""
    out: JsonObject = {"status": status.value}
    if status is Status.MATCH:
        out["involvements"] = [i.to_wire() for i in involvements]
        out["assessment"] = assessment.to_wire() if assessment else None
    if contact is not None:
        out["contact"] = contact.to_wire()
    return out


# --- messages ---------------------------------------------------------------------------------
#
# The claims inside the two signed envelopes, as typed values. ``to_wire`` gives the JSON object
# that is signed; ``from_wire`` takes the claims of a verified envelope and raises
# ``MessageError`` naming the first field at fault. Fields a reader does not know are kept in
# ``extra`` (never interpreted), so an older node still accepts a newer broker's query.

QueryId = NewType("QueryId", str)
"""The ``jti`` of a signed query: names the search in every log."""

MemberId = NewType("MemberId", str)
"""A member of the trust list (a node, a broker, a token issuer)."""


class MessageError(FieldError):
    """A signed message's claims are not what the protocol says (a field is missing or of the wrong type)."""


def _str(data: Mapping[str, Any], name: str, prefix: str) -> str:
    value = data.get(name)
    if not isinstance(value, str) or not value:
        raise MessageError(f"{prefix}{name}", f"expected a non-empty string, got {type(value).__name__}")
    return value


def _int(data: Mapping[str, Any], name: str, prefix: str) -> int:
    value = data.get(name)
    if isinstance(value, bool) or not isinstance(value, int):
        raise MessageError(f"{prefix}{name}", f"expected an integer, got {type(value).__name__}")
    return value


@dataclass(frozen=True)
class Envelope:
    """What every signed message carries: who signed it, for whom, when, and its id."""

    iss: MemberId
    aud: str
    iat: int
    exp: int
    jti: str

    def header_wire(self) -> JsonObject:
        return {"v": PROTOCOL_VERSION, "iss": self.iss, "aud": self.aud, "iat": self.iat, "exp": self.exp,
                "jti": self.jti}

    @staticmethod
    def header_from_wire(data: Mapping[str, Any]) -> tuple[MemberId, str, int, int, str]:
        return (MemberId(_str(data, "iss", "")), _str(data, "aud", ""), _int(data, "iat", ""),
                _int(data, "exp", ""), _str(data, "jti", ""))


HEADER_FIELDS = frozenset({"v", "iss", "aud", "iat", "exp", "jti"})
QUERY_FIELDS = frozenset({"practitioner", "purpose", "on_behalf_of", "identity", "contact"})
_QUERY_KNOWN = HEADER_FIELDS | QUERY_FIELDS  # made once: read for every claim of every query


@dataclass(frozen=True)
class QueryClaims(Envelope):
    """A broker's signed query to every node: who asks, why, and the child's identity.

    The practitioner, mediation and identity are carried as the broker signed them: the node
    judges them itself (``node.policy.check_query``, ``federation.identity.parse_identity``) after
    it has logged that the query arrived, so they stay JSON values here (``None`` when the
    practitioner is not an object, which the policy refuses).
    """

    practitioner: Mapping[str, Any] | None
    purpose: str | None
    on_behalf_of: Mapping[str, Any] | None
    identity: Any
    extra: Mapping[str, Any] = field(default_factory=dict)
    contact: Mapping[str, Any] | None = None
    """How the searcher can be reached (``email``, ``phone``), as they gave it: told to the lead
    practitioner of a matched child. Judged by the node (``federation.checks.RequesterContact``)."""

    @property
    def query_id(self) -> QueryId:
        return QueryId(self.jti)

    def to_wire(self) -> JsonObject:
        out: JsonObject = {**self.extra, **self.header_wire(),
                           "practitioner": dict(self.practitioner) if self.practitioner is not None else None,
                           "purpose": self.purpose,
                           "on_behalf_of": dict(self.on_behalf_of) if self.on_behalf_of is not None else None,
                           "identity": self.identity}
        if self.contact is not None:
            out["contact"] = dict(self.contact)
        return out

    @classmethod
    def from_wire(cls, data: Mapping[str, Any]) -> QueryClaims:
        iss, aud, iat, exp, jti = cls.header_from_wire(data)
        practitioner = data.get("practitioner")
        purpose = data.get("purpose")
        on_behalf_of = data.get("on_behalf_of")
        if on_behalf_of is not None and not isinstance(on_behalf_of, Mapping):
            raise MessageError("on_behalf_of", f"expected an object, got {type(on_behalf_of).__name__}")
        contact = data.get("contact")
        if contact is not None and not isinstance(contact, Mapping):
            raise MessageError("contact", f"expected an object, got {type(contact).__name__}")
        return cls(
            iss=iss, aud=aud, iat=iat, exp=exp, jti=jti,
            practitioner=practitioner if isinstance(practitioner, Mapping) else None,
            purpose=purpose if isinstance(purpose, str) else None,
            on_behalf_of=on_behalf_of,
            identity=data.get("identity"),
            extra={k: v for k, v in data.items() if k not in _QUERY_KNOWN},
            contact=contact,
        )


@dataclass(frozen=True)
class AuthorityRef:
    """An authority as named in an answer: its trust-list id and its name."""

    id: MemberId
    name: str

    def to_wire(self) -> dict[str, str]:
        return {"id": self.id, "name": self.name}


ANSWER_FIELDS = frozenset({"query_jti", "query_hash", "authority", "status", "involvements", "contact",
                           "assessment", "lead_informed"})
_ANSWER_KNOWN = HEADER_FIELDS | ANSWER_FIELDS


@dataclass(frozen=True)
class AnswerClaims(Envelope):
    """A node's signed answer, bound to one query by its id and the hash of its exact envelope."""

    query_jti: QueryId
    query_hash: str
    authority: AuthorityRef
    status: Status
    involvements: tuple[Disclosed, ...] = ()
    contact: Contact | None = None
    assessment: Contact | None = None
    extra: Mapping[str, Any] = field(default_factory=dict)
    lead_informed: bool = False
    """A match only: the node has told the lead practitioner who searched (``true`` on the wire)."""

    def __post_init__(self) -> None:
        if self.lead_informed and self.status is not Status.MATCH:
            raise MessageError("lead_informed", f"only a match informs the lead, not {self.status.value}")
        if self.status not in NODE_STATUSES:
            raise MessageError("status", f"expected one of {', '.join(sorted(NODE_STATUSES))}, "
                               f"got {self.status.value!r}")
        if self.involvements and self.status is not Status.MATCH:
            raise MessageError("involvements", f"only a match discloses involvements, "
                               f"not {self.status.value}")

    def to_wire(self) -> JsonObject:
        out: JsonObject = {**self.extra, **self.header_wire(), "query_jti": self.query_jti,
                           "query_hash": self.query_hash, "authority": self.authority.to_wire(),
                           **disclosure_wire(self.status, self.involvements, self.contact, self.assessment)}
        if self.lead_informed:
            out["lead_informed"] = True
        return out

    @classmethod
    def from_wire(cls, data: Mapping[str, Any]) -> AnswerClaims:
        iss, aud, iat, exp, jti = cls.header_from_wire(data)
        try:
            status = Status(_str(data, "status", ""))
        except ValueError as exc:
            raise MessageError("status", f"expected one of {', '.join(sorted(NODE_STATUSES))}") from exc
        authority = data.get("authority")
        if not isinstance(authority, Mapping):
            raise MessageError("authority", "expected an object with id and name")
        involvements = data.get("involvements") or []
        if not isinstance(involvements, list) or not all(isinstance(i, dict) for i in involvements):
            raise MessageError("involvements", "expected a list of objects")
        try:
            disclosed = tuple(Disclosed.from_wire(i) for i in involvements)
        except (KeyError, TypeError, ValueError) as exc:
            raise MessageError("involvements", f"an involvement is malformed ({exc})") from exc
        return cls(
            iss=iss, aud=aud, iat=iat, exp=exp, jti=jti,
            query_jti=QueryId(_str(data, "query_jti", "")), query_hash=_str(data, "query_hash", ""),
            authority=AuthorityRef(MemberId(_str(authority, "id", "authority.")),
                                   _str(authority, "name", "authority.")),
            status=status,
            involvements=disclosed if status is Status.MATCH else (),
            contact=Contact.from_wire(data.get("contact")),
            assessment=Contact.from_wire(data.get("assessment")),
            extra={k: v for k, v in data.items() if k not in _ANSWER_KNOWN},
            lead_informed=status is Status.MATCH and data.get("lead_informed") is True,
        )
