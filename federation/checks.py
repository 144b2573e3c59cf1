"""The check protocol: a practitioner asks one authority to check a ``possible_match`` by hand.

Four signed messages travel between the broker and the one node asked (compact JWS, EdDSA, see
``trust.envelope``), each with its own ``typ`` so that no message can be replayed as another:

``signpost-check+jwt`` (broker to node)
    ``CheckRequest``: the search's reference, the identity as the practitioner typed it, the
    purpose, who is asking and how to reach them.
``signpost-check-information+jwt`` (broker to node)
    ``CheckInformation``: more identifiers, once, after the officer asked for them.
``signpost-check-poll+jwt`` (broker to node)
    ``CheckPoll``: what is the outcome now; with ``disclose`` the node includes what a ``match``
    would have disclosed, if an officer confirmed the child.
``signpost-check-answer+jwt`` (node to broker)
    ``CheckOutcome``: the check's state, bound to the envelope it answers (``request_jti`` and
    ``request_hash``).

Every message is a frozen dataclass with ``to_wire`` and ``from_wire``; ``from_wire`` is the one
door for untrusted input and raises ``ValidationError`` naming every field at fault.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from dataclasses import dataclass, field
from enum import StrEnum
from typing import Any

from federation.canonical import JsonObject
from federation.errors import FieldError, ValidationError
from federation.identity import Identity, parse_identity
from federation.protocol import NODE_STATUSES, Contact, Disclosed, Status, disclosure_wire

CHECK_VERSION = 1
CHECK_REQUEST_TYPE = "signpost-check+jwt"
CHECK_INFORMATION_TYPE = "signpost-check-information+jwt"
CHECK_POLL_TYPE = "signpost-check-poll+jwt"
CHECK_ANSWER_TYPE = "signpost-check-answer+jwt"
CHECK_LIFETIME_SECONDS = 60
"""How long one signed check message is valid (the check itself lasts days: see the policy)."""

DEFAULT_EXPIRY_DAYS = 14
MESSAGE_LIMIT = 1000
TEXT_LIMIT = 200
_ID = re.compile(r"^[A-Za-z0-9-]{8,64}$")
_EMAIL = re.compile(r"^[^@\s<>\"']+@[^@\s<>\"']+\.[^@\s<>\"']+$")
_PHONE = re.compile(r"^[0-9+() -]{6,25}$")
PRACTITIONER_FIELDS = ("iss", "sub", "name", "org", "role", "authority")


class CheckState(StrEnum):
    """Where a check stands."""

    PENDING = "pending"
    SAME_CHILD = "same_child"
    NOT_THIS_CHILD = "not_this_child"
    MORE_INFORMATION = "more_information"
    EXPIRED = "expired"


class Decision(StrEnum):
    """What a signposting officer may decide."""

    SAME_CHILD = "same_child"
    NOT_THIS_CHILD = "not_this_child"
    MORE_INFORMATION = "more_information"


def _object(data: Any, where: str) -> Mapping[str, Any]:
    if not isinstance(data, Mapping):
        raise ValidationError([FieldError(where, f"expected an object, got {type(data).__name__}")])
    return data


def check_id(value: Any, where: str = "check_id") -> str:
    """A check or search reference: 8-64 letters, digits or hyphens (a UUID in practice)."""
    if not isinstance(value, str) or not _ID.match(value):
        raise FieldError(where, f"expected a reference of 8-64 letters, digits or hyphens, got {value!r}")
    return value


def _text(data: Mapping[str, Any], name: str, where: str, errors: list[FieldError], *,
          limit: int = TEXT_LIMIT, required: bool = True) -> str | None:
    value = data.get(name)
    if value is None or value == "":
        if required:
            errors.append(FieldError(f"{where}{name}", "is required"))
        return None
    if not isinstance(value, str):
        errors.append(FieldError(f"{where}{name}", f"expected a string, got {type(value).__name__}"))
        return None
    if len(value) > limit:
        errors.append(FieldError(f"{where}{name}", f"expected at most {limit} characters, got {len(value)}"))
        return None
    return value.strip()


@dataclass(frozen=True)
class RequesterContact:
    """How the officer (and the lead practitioner) can reach the practitioner: email, phone, or both."""

    email: str | None = None
    phone: str | None = None

    def __post_init__(self) -> None:
        if self.email is None and self.phone is None:
            raise ValidationError([FieldError("contact", "expected an email, a phone number, or both")])
        if self.email is not None and not _EMAIL.match(self.email):
            raise ValidationError([FieldError("contact.email",
                                              f"expected an email address, got {self.email!r}")])
        if self.phone is not None and not _PHONE.match(self.phone):
            raise ValidationError([FieldError("contact.phone",
                                              f"expected a phone number, got {self.phone!r}")])

    def to_wire(self) -> dict[str, str]:
        return {k: v for k, v in (("email", self.email), ("phone", self.phone)) if v is not None}

    @classmethod
    def from_wire(cls, data: Any, where: str = "contact") -> RequesterContact:
        body = _object(data, where)
        errors: list[FieldError] = []
        email = _text(body, "email", f"{where}.", errors, required=False)
        phone = _text(body, "phone", f"{where}.", errors, required=False)
        if errors:
            raise ValidationError(errors)
        return cls(email=email, phone=phone)


def _practitioner(data: Any) -> JsonObject:
    body = _object(data, "practitioner")
    out: JsonObject = {k: body[k] for k in PRACTITIONER_FIELDS if isinstance(body.get(k), str)}
    missing = [k for k in ("iss", "sub", "org", "role") if not out.get(k)]
    if missing:
        raise ValidationError([FieldError(f"practitioner.{m}", "is required") for m in missing])
    amr = body.get("amr")
    if isinstance(amr, list):
        out["amr"] = [a for a in amr if isinstance(a, str)]
    return out


@dataclass(frozen=True)
class CheckRequest:
    """The broker asks one authority to check a ``possible_match`` by hand."""

    check_id: str
    search_id: str
    authority: str
    identity: Identity
    purpose: str
    practitioner: Mapping[str, Any]
    contact: RequesterContact
    extra: Mapping[str, Any] = field(default_factory=dict, compare=False)
    on_behalf_of: Mapping[str, str] | None = None
    """A mediator's check: the professional named in the search (the node checks it as for a query)."""

    def __post_init__(self) -> None:
        check_id(self.check_id)
        check_id(self.search_id, "search_id")
        if not self.authority or not self.purpose:
            missing = "authority" if not self.authority else "purpose"
            raise ValidationError([FieldError(missing, "is required")])

    def to_wire(self) -> JsonObject:
        return {
            **dict(self.extra),
            "v": CHECK_VERSION,
            "check_id": self.check_id,
            "search_id": self.search_id,
            "authority": self.authority,
            "identity": self.identity.to_wire(),
            "purpose": self.purpose,
            "practitioner": dict(self.practitioner),
            "contact": self.contact.to_wire(),
            **({"on_behalf_of": dict(self.on_behalf_of)} if self.on_behalf_of is not None else {}),
        }

    @classmethod
    def from_wire(cls, data: Any) -> CheckRequest:
        body = _object(data, "check")
        errors: list[FieldError] = []
        values: dict[str, Any] = {}
        for name in ("check_id", "search_id"):
            try:
                values[name] = check_id(body.get(name), name)
            except FieldError as exc:
                errors.append(exc)
        for name in ("authority", "purpose"):
            values[name] = _text(body, name, "", errors)
        for name, parse_part in (("identity", parse_identity), ("practitioner", _practitioner),
                                 ("contact", RequesterContact.from_wire)):
            try:
                values[name] = parse_part(body.get(name))
            except ValidationError as exc:
                errors.extend(exc.errors)
        named = body.get("on_behalf_of")
        if named is not None:
            if not isinstance(named, Mapping) or not all(isinstance(v, str) for v in named.values()):
                errors.append(FieldError("on_behalf_of", "expected an object of strings"))
            else:
                values["on_behalf_of"] = {str(k): v[:TEXT_LIMIT] for k, v in named.items()}
        if errors:
            raise ValidationError(errors)
        known = {"v", "check_id", "search_id", "authority", "identity", "purpose", "practitioner", "contact",
                 "on_behalf_of"}
        return cls(**values, extra={k: v for k, v in body.items() if k not in known})


@dataclass(frozen=True)
class CheckInformation:
    """More identifiers for a check whose officer asked for them (accepted once)."""

    check_id: str
    identity: Identity

    def __post_init__(self) -> None:
        check_id(self.check_id)
        if not self.identity.present():
            raise ValidationError([FieldError("identity", "expected at least one identifier")])

    def to_wire(self) -> JsonObject:
        return {"v": CHECK_VERSION, "check_id": self.check_id, "identity": self.identity.to_wire()}

    @classmethod
    def from_wire(cls, data: Any) -> CheckInformation:
        body = _object(data, "check")
        errors: list[FieldError] = []
        found_id: str | None = None
        found: Identity | None = None
        try:
            found_id = check_id(body.get("check_id"))
        except FieldError as exc:
            errors.append(exc)
        try:
            found = parse_identity(body.get("identity"))
        except ValidationError as exc:
            errors.extend(exc.errors)
        if errors:
            raise ValidationError(errors)
        assert found_id is not None and found is not None
        return cls(found_id, found)


@dataclass(frozen=True)
class CheckPoll:
    """The broker asks where a check stands; ``disclose`` asks for the disclosure too."""

    check_id: str
    disclose: bool = False

    def __post_init__(self) -> None:
        check_id(self.check_id)

    def to_wire(self) -> JsonObject:
        return {"v": CHECK_VERSION, "check_id": self.check_id, "disclose": self.disclose}

    @classmethod
    def from_wire(cls, data: Any) -> CheckPoll:
        body = _object(data, "check")
        disclose = body.get("disclose", False)
        if not isinstance(disclose, bool):
            raise ValidationError([FieldError("disclose", f"expected true or false, got {disclose!r}")])
        try:
            return cls(check_id(body.get("check_id")), disclose)
        except FieldError as exc:
            raise ValidationError([exc]) from None


@dataclass(frozen=True)
class CheckDisclosure:
    """What a ``match`` would have disclosed, as the node's disclosure policy decided it."""

    status: Status
    involvements: tuple[Disclosed, ...] = ()
    contact: Contact | None = None
    assessment: Contact | None = None

    def __post_init__(self) -> None:
        if self.status not in NODE_STATUSES or self.status is Status.POSSIBLE_MATCH:
            raise ValidationError([FieldError("disclosure.status", f"expected match, no_match or shielded, "
                                              f"got {self.status.value!r}")])
        if self.status is not Status.MATCH and self.involvements:
            raise ValidationError([FieldError("disclosure.involvements", "only a match lists involvements")])

    def to_wire(self) -> JsonObject:
        return disclosure_wire(self.status, self.involvements, self.contact, self.assessment)

    @classmethod
    def from_wire(cls, data: Any) -> CheckDisclosure:
        body = _object(data, "disclosure")
        try:
            status = Status(str(body.get("status")))
            involvements = tuple(Disclosed.from_wire(i) for i in body.get("involvements") or [])
        except (ValueError, KeyError, TypeError, AttributeError) as exc:
            raise ValidationError([FieldError("disclosure",
                                              f"malformed ({exc.__class__.__name__})")]) from None
        return cls(status, involvements if status is Status.MATCH else (),
                   Contact.from_wire(body.get("contact")), Contact.from_wire(body.get("assessment")))


@dataclass(frozen=True)
class CheckOutcome:
    """The node's word on a check: its state and, when asked and confirmed, the disclosure."""

    check_id: str
    state: CheckState
    expires: str
    message: str | None = None
    disclosure: CheckDisclosure | None = None
    lead_informed: bool = False
    information_used: bool = False

    def __post_init__(self) -> None:
        check_id(self.check_id)
        if self.disclosure is not None and self.state is not CheckState.SAME_CHILD:
            raise ValidationError([FieldError("disclosure", "only a confirmed check carries a disclosure")])
        if self.message is not None and len(self.message) > MESSAGE_LIMIT:
            raise ValidationError([FieldError("message", f"expected at most {MESSAGE_LIMIT} characters")])

    def to_wire(self) -> JsonObject:
        out: JsonObject = {"v": CHECK_VERSION, "check_id": self.check_id, "state": self.state.value,
                               "expires": self.expires, "lead_informed": self.lead_informed,
                               "information_used": self.information_used}
        if self.message is not None:
            out["message"] = self.message
        if self.disclosure is not None:
            out["disclosure"] = self.disclosure.to_wire()
        return out

    @classmethod
    def from_wire(cls, data: Any) -> CheckOutcome:
        body = _object(data, "check")
        errors: list[FieldError] = []
        try:
            state = CheckState(str(body.get("state")))
        except ValueError:
            errors.append(FieldError("state", f"expected one of {', '.join(CheckState)}, "
                                     f"got {body.get('state')!r}"))
        expires = _text(body, "expires", "", errors)
        message = _text(body, "message", "", errors, limit=MESSAGE_LIMIT, required=False)
        disclosure = None
        if body.get("disclosure") is not None:
            try:
                disclosure = CheckDisclosure.from_wire(body["disclosure"])
            except ValidationError as exc:
                errors.extend(exc.errors)
        try:
            found_id = check_id(body.get("check_id"))
        except FieldError as exc:
            errors.append(exc)
        if errors:
            raise ValidationError(errors)
        return cls(found_id, state, str(expires), message, disclosure, body.get("lead_informed") is True,
                   body.get("information_used") is True)


def merge_identity(typed: Identity, more: Identity) -> Identity:
    """The identity typed first with the extra identifiers given later (later values win)."""
    wire = {**typed.to_wire(), **more.to_wire()}
    return parse_identity(wire)
