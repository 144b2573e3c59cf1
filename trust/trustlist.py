"""The federation trust list: who is a member, with which keys, roles and endpoints.

The trust list is a JSON document ``{"signed": {...}, "signatures": [...]}``. The signed part is
serialised canonically and signed with Ed25519 by governance keys; a list is accepted only when
a threshold of the pinned governance keys signed it. Verification here is pure: the caller
supplies the pinned root, the clock and the highest version it has accepted before.

Root rotation follows The Update Framework: a list whose ``governance`` section differs from the
pinned root must be signed by a threshold of the old keys *and* a threshold of the new keys.
"""

from __future__ import annotations

import functools
import hashlib
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey, Ed25519PublicKey

from federation.canonical import JsonObject, canonical_json
from federation.checks import DEFAULT_EXPIRY_DAYS as DEFAULT_CHECK_EXPIRY_DAYS
from federation.errors import FieldError
from federation.identity import MINIMUM_SETS, MinimumSets, parse_minimum_sets
from federation.rules import DEFAULT_RETENTION_AGE, PRACTITIONER_ROLES
from federation.safejson import JsonError, JsonLimits, parse_object
from trust import oidc_mapping
from trust.errors import (
    ExpiredError,
    RollbackError,
    SignatureError,
    TrustError,
    UnknownMemberError,
)
from trust.keys import b64url, b64url_decode, key_id, public_b64, public_from_b64
from trust.oidc_mapping import OidcMapping

DOCUMENT_TYPE = "signpost-trust-list"
ROLES = frozenset({"node", "broker", "token_issuer", "auditor"})


def parse_time(value: Any, where: str) -> datetime:
    """Parse an RFC 3339 UTC timestamp such as ``2026-11-21T09:00:00Z``."""
    if not isinstance(value, str) or len(value) > 40:
        raise TrustError(f"{where}: expected an RFC 3339 timestamp, got {type(value).__name__}")
    try:
        parsed = datetime.fromisoformat(value.replace("Z", "+00:00"))
        if parsed.tzinfo is None:
            raise TrustError(f"{where}: timestamp must carry a time zone, got {value!r}")
        return parsed.astimezone(UTC)
    except (ValueError, OverflowError):
        raise TrustError(f"{where}: expected an RFC 3339 timestamp, got {value!r}") from None


def format_time(moment: datetime) -> str:
    """Format a timestamp the way trust lists carry it."""
    return moment.astimezone(UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


MEMBER_KEY_ALGORITHMS = ("EdDSA", "ES256")
DOCUMENT_LIMITS = JsonLimits(max_bytes=4 * 1024 * 1024, max_depth=16)


def ec_public_b64(key: ec.EllipticCurvePublicKey) -> str:
    """A P-256 public key as a trust list carries it: base64url of the uncompressed point."""
    return b64url(key.public_bytes(serialization.Encoding.X962, serialization.PublicFormat.UncompressedPoint))


def ec_key_id(key: ec.EllipticCurvePublicKey) -> str:
    """Key id of a P-256 key: the first 16 hex digits of SHA-256 of the uncompressed point."""
    raw = key.public_bytes(serialization.Encoding.X962, serialization.PublicFormat.UncompressedPoint)
    return hashlib.sha256(raw).hexdigest()[:16]


def _ec_public_from_b64(text: str) -> ec.EllipticCurvePublicKey:
    try:
        return ec.EllipticCurvePublicKey.from_encoded_point(ec.SECP256R1(), b64url_decode(text))
    except ValueError as exc:
        raise TrustError(f"public_key: expected base64url P-256 point for ES256, {exc}") from exc


@dataclass(frozen=True)
class MemberKey:
    """One key of a member, with an optional validity window.

    Keys are Ed25519 (``alg`` EdDSA) unless the trust list says ``"alg": "ES256"`` (a P-256 key,
    accepted for practitioner tokens only, for identity providers that cannot sign with Ed25519).
    """

    kid: str
    public_key: Ed25519PublicKey | ec.EllipticCurvePublicKey
    not_before: datetime | None = None
    not_after: datetime | None = None
    alg: str = "EdDSA"

    def __post_init__(self) -> None:
        if self.alg not in MEMBER_KEY_ALGORITHMS:
            raise TrustError(f"keys[{self.kid}].alg: expected one of {MEMBER_KEY_ALGORITHMS}, "
                             f"got {self.alg!r}")
        if self.alg == "EdDSA":
            fits = isinstance(self.public_key, Ed25519PublicKey)
        else:
            fits = isinstance(self.public_key, ec.EllipticCurvePublicKey) and \
                self.public_key.curve.name == "secp256r1"
        if not fits:
            raise TrustError(f"keys[{self.kid}].public_key: not a key for {self.alg}")

    def valid_at(self, moment: datetime) -> bool:
        if self.not_before is not None and moment < self.not_before:
            return False
        return self.not_after is None or moment <= self.not_after


@dataclass(frozen=True)
class Member:
    """A party of the federation."""

    id: str
    name: str
    roles: frozenset[str]
    keys: tuple[MemberKey, ...]
    endpoint: str | None = None
    authority: str | None = None
    contact: Mapping[str, str] | None = None
    tls_fingerprint: str | None = None
    oidc: OidcMapping | None = None  # token issuers only: their OpenID Connect provider's claims

    def __post_init__(self) -> None:
        unknown = self.roles - ROLES
        if unknown:
            raise TrustError(f"members[{self.id}].roles: unknown role(s) {sorted(unknown)}")
        if self.oidc is not None and "token_issuer" not in self.roles:
            raise TrustError(f"members[{self.id}].oidc: only a token_issuer may name an OpenID provider")

    def key(self, kid: str | None, moment: datetime, alg: str = "EdDSA") -> list[MemberKey]:
        """Keys of this member for ``alg`` valid at ``moment``; the ``kid`` hint, if given, goes first.

        A ``kid`` is only a hint: keys are always looked up within this member, so a key
        belonging to someone else can never verify this member's signature. Only keys listed
        for ``alg`` are returned, so an EdDSA verifier never sees an ES256 key or the reverse.
        """
        valid = [k for k in self.keys if k.alg == alg and k.valid_at(moment)]
        if kid is not None:
            hinted = [k for k in valid if k.kid == kid]
            if hinted:
                return hinted
        return valid


@dataclass(frozen=True)
class Purpose:
    code: str
    label: str


@dataclass(frozen=True)
class Policy:
    """Federation-wide policy that every party reads from the trust list."""

    purposes: tuple[Purpose, ...] = ()
    sensitive_categories: frozenset[str] = frozenset()
    rate_limits: Mapping[str, int] = field(default_factory=dict)
    retention_age: int = DEFAULT_RETENTION_AGE
    # Identity sets a search must include one of (broker and node both check); default today's.
    minimum_identity_sets: MinimumSets = MINIMUM_SETS
    check_expiry_days: int = DEFAULT_CHECK_EXPIRY_DAYS  # a check not decided by then is deleted

    def purpose(self, code: str) -> Purpose | None:
        return next((p for p in self.purposes if p.code == code), None)


@dataclass(frozen=True)
class GovernanceRoot:
    """The governance keys and how many of them must sign."""

    threshold: int
    keys: Mapping[str, Ed25519PublicKey]

    def __post_init__(self) -> None:
        if self.threshold < 1:
            raise TrustError("governance.threshold: expected at least 1")
        if self.threshold > len(self.keys):
            raise TrustError(
                f"governance.threshold: {self.threshold} exceeds the {len(self.keys)} key(s)"
            )

    def to_json(self) -> JsonObject:
        return {
            "threshold": self.threshold,
            "keys": [{"kid": kid, "public_key": public_b64(k)} for kid, k in sorted(self.keys.items())],
        }

    @classmethod
    def from_json(cls, data: Any) -> GovernanceRoot:
        """Parse a governance section; raises only ``TrustError`` naming the field at fault."""
        if not isinstance(data, dict) or not isinstance(data.get("keys"), list):
            raise TrustError("governance: expected an object with threshold and keys")
        keys: dict[str, Ed25519PublicKey] = {}
        for i, item in enumerate(data["keys"]):
            where = f"governance.keys[{i}]"
            item = _object(item, where)
            public = _ed25519(_text(item.get("public_key"), f"{where}.public_key"), f"{where}.public_key")
            kid = key_id(public)
            if item.get("kid") not in (None, kid):
                raise TrustError(f"{where}.kid: expected {kid}")
            keys[kid] = public
        threshold = data.get("threshold")
        if isinstance(threshold, bool) or not isinstance(threshold, int):
            raise TrustError("governance.threshold: expected an integer")
        return cls(threshold=threshold, keys=keys)


@dataclass(frozen=True)
class TrustList:
    """A verified trust list. Only ``verify`` creates one from untrusted input."""

    federation: str
    version: int
    issued: datetime
    expires: datetime
    governance: GovernanceRoot
    members: Mapping[str, Member]
    policy: Policy
    document: Mapping[str, Any]

    def member(self, member_id: str, role: str | None = None) -> Member:
        found = self.members.get(member_id)
        if found is None:
            raise UnknownMemberError(f"{member_id!r} is not a member of the federation")
        if role is not None and role not in found.roles:
            raise UnknownMemberError(f"{member_id!r} is not a {role} of the federation")
        return found

    def with_role(self, role: str) -> list[Member]:
        """Members with ``role``, by id (sorted once per trust-list version, not per call)."""
        return list(self._by_role.get(role, ()))

    @functools.cached_property
    def _by_role(self) -> Mapping[str, tuple[Member, ...]]:
        ordered = sorted(self.members.values(), key=lambda m: m.id)
        return {role: tuple(m for m in ordered if role in m.roles) for role in ROLES}

    def check_current(self, moment: datetime) -> None:
        """Raise ``ExpiredError`` when the list has expired: every search must stop."""
        if moment > self.expires:
            raise ExpiredError(
                f"trust list version {self.version} expired at {format_time(self.expires)}; "
                "searches are stopped until a current list is installed"
            )


# --- Parsing --------------------------------------------------------------------------------


# Every helper raises ``TrustError`` naming the field; nothing below lets a Python error out.

MAX_TEXT = 2048  # the longest string a trust list field may hold (a PEM fingerprint, a URL)


def _object(value: Any, where: str) -> JsonObject:
    if not isinstance(value, dict):
        raise TrustError(f"{where}: expected an object, got {type(value).__name__}")
    return value


def _list(value: Any, where: str) -> list[Any]:
    if value is None:
        return []
    if not isinstance(value, list):
        raise TrustError(f"{where}: expected a list, got {type(value).__name__}")
    return value


def _text(value: Any, where: str, *, optional: bool = False) -> str:
    if value is None and optional:
        return ""
    if not isinstance(value, str) or not value or len(value) > MAX_TEXT:
        raise TrustError(f"{where}: expected a non-empty string of at most {MAX_TEXT} characters, "
                         f"got {type(value).__name__}")
    return value


def _optional_text(value: Any, where: str) -> str | None:
    return _text(value, where) if value is not None else None


def _ed25519(text: str, where: str) -> Ed25519PublicKey:
    try:
        return public_from_b64(text)
    except (TrustError, ValueError, TypeError) as exc:
        raise TrustError(f"{where}: expected a base64url Ed25519 public key ({exc})") from None


def _positive_int(value: Any, where: str) -> int:
    if isinstance(value, bool) or not isinstance(value, int) or value < 0:
        raise TrustError(f"{where}: expected a non-negative integer, got {type(value).__name__}")
    return value


def _parse_key(k: Any, where: str) -> MemberKey:
    k = _object(k, where)
    alg = k.get("alg", "EdDSA")
    public: Ed25519PublicKey | ec.EllipticCurvePublicKey
    if alg == "ES256":
        public = _ec_public_from_b64(_text(k.get("public_key"), f"{where}.public_key"))
        kid = _optional_text(k.get("kid"), f"{where}.kid") or ec_key_id(public)
    elif alg == "EdDSA":
        public = _ed25519(_text(k.get("public_key"), f"{where}.public_key"), f"{where}.public_key")
        kid = _optional_text(k.get("kid"), f"{where}.kid") or key_id(public)
    else:
        raise TrustError(f"{where}.alg: expected one of {MEMBER_KEY_ALGORITHMS}, got {str(alg)[:40]!r}")
    return MemberKey(
        alg=alg, kid=kid, public_key=public,
        not_before=parse_time(k["not_before"], f"{where}.not_before") if k.get("not_before") else None,
        not_after=parse_time(k["not_after"], f"{where}.not_after") if k.get("not_after") else None,
    )


def _parse_member(data: Any, index: int) -> Member:
    where = f"members[{index}]"
    data = _object(data, where)
    member_id = _text(data.get("id"), f"{where}.id")
    keys = tuple(_parse_key(k, f"{where}.keys[{j}]")
                 for j, k in enumerate(_list(data.get("keys"), f"{where}.keys")))
    roles = _list(data.get("roles"), f"{where}.roles")
    if not all(isinstance(r, str) for r in roles):
        raise TrustError(f"{where}.roles: expected a list of strings")
    contact = data.get("contact")
    if contact is not None and not (isinstance(contact, dict)
                                    and all(isinstance(v, str) for v in contact.values())):
        raise TrustError(f"{where}.contact: expected an object of strings")
    return Member(
        id=member_id,
        name=_text(data.get("name", member_id), f"{where}.name"),
        roles=frozenset(roles),
        keys=keys,
        endpoint=_optional_text(data.get("endpoint"), f"{where}.endpoint"),
        authority=_optional_text(data.get("authority"), f"{where}.authority"),
        contact=contact,
        tls_fingerprint=_optional_text(data.get("tls_fingerprint"), f"{where}.tls_fingerprint"),
        oidc=oidc_mapping.parse(data.get("oidc"), f"{where}.oidc", PRACTITIONER_ROLES),
    )


def _parse_policy(data: Any) -> Policy:
    if data is None:
        return Policy()
    data = _object(data, "policy")
    purposes = []
    for i, p in enumerate(_list(data.get("purposes"), "policy.purposes")):
        p = _object(p, f"policy.purposes[{i}]")
        code = _text(p.get("code"), f"policy.purposes[{i}].code")
        purposes.append(Purpose(code=code, label=_text(p.get("label", code), f"policy.purposes[{i}].label")))
    sensitive = _list(data.get("sensitive_categories"), "policy.sensitive_categories")
    if not all(isinstance(c, str) for c in sensitive):
        raise TrustError("policy.sensitive_categories: expected a list of strings")
    limits = _object(data.get("rate_limits", {}), "policy.rate_limits")
    return Policy(
        purposes=tuple(purposes),
        sensitive_categories=frozenset(sensitive),
        rate_limits={str(k): _positive_int(v, f"policy.rate_limits.{str(k)[:40]}")
                     for k, v in limits.items()},
        retention_age=_positive_int(data.get("retention_age", DEFAULT_RETENTION_AGE), "policy.retention_age"),
        minimum_identity_sets=_parse_minimum_sets(data),
        check_expiry_days=_check_expiry_days(data.get("check_expiry_days", DEFAULT_CHECK_EXPIRY_DAYS)),
    )


def _parse_minimum_sets(data: Mapping[str, Any]) -> MinimumSets:
    if "minimum_identity_sets" not in data:
        return MINIMUM_SETS
    try:
        return parse_minimum_sets(data["minimum_identity_sets"], "policy.minimum_identity_sets")
    except FieldError as exc:
        raise TrustError(str(exc)) from exc


def _check_expiry_days(value: Any) -> int:
    if not isinstance(value, int) or isinstance(value, bool) or not 1 <= value <= 90:
        raise TrustError(f"policy.check_expiry_days: expected an integer 1-90, got {value!r}")
    return value


def _parse_signed(signed: Mapping[str, Any]) -> TrustList:
    if signed.get("type") != DOCUMENT_TYPE:
        raise TrustError(f"type: expected {DOCUMENT_TYPE!r}, got {str(signed.get('type'))[:40]!r}")
    version = signed.get("version")
    if isinstance(version, bool) or not isinstance(version, int) or version < 1:
        raise TrustError(f"version: expected a positive integer, got {type(version).__name__}")
    members: dict[str, Member] = {}
    for i, item in enumerate(_list(signed.get("members"), "members")):
        member = _parse_member(item, i)
        if member.id in members:
            raise TrustError(f"members[{i}].id: duplicate member {member.id!r}")
        members[member.id] = member
    return TrustList(
        federation=_text(signed.get("federation", "-"), "federation"),
        version=version,
        issued=parse_time(signed.get("issued"), "issued"),
        expires=parse_time(signed.get("expires"), "expires"),
        governance=GovernanceRoot.from_json(signed.get("governance")),
        members=members,
        policy=_parse_policy(signed.get("policy")),
        document=signed,
    )


def parse_document(raw: bytes | str) -> JsonObject:
    """The door for trust-list and root bytes: a bounded JSON object, or ``TrustError``."""
    try:
        return parse_object(raw, "trust list", DOCUMENT_LIMITS)
    except JsonError as exc:
        raise TrustError(str(exc)) from None


# --- Signing and verifying ------------------------------------------------------------------


def sign(signed: Mapping[str, Any], keys: Iterable[Ed25519PrivateKey]) -> JsonObject:
    """Sign the ``signed`` part with each governance key and return the whole document."""
    payload = canonical_json(dict(signed))
    signatures = [
        {"kid": key_id(k.public_key()), "sig": b64url(k.sign(payload))} for k in keys
    ]
    return {"signed": dict(signed), "signatures": signatures}


def add_signatures(document: Mapping[str, Any], keys: Iterable[Ed25519PrivateKey]) -> JsonObject:
    """Add signatures to an already (partly) signed document, as governance members sign in turn."""
    payload = canonical_json(dict(document["signed"]))
    existing = list(document.get("signatures", []))
    have = {s.get("kid") for s in existing}
    for k in keys:
        kid = key_id(k.public_key())
        if kid not in have:
            existing.append({"kid": kid, "sig": b64url(k.sign(payload))})
            have.add(kid)
    return {"signed": dict(document["signed"]), "signatures": existing}


def _count_valid(payload: bytes, signatures: list[Any], root: GovernanceRoot) -> int:
    valid: set[str] = set()
    for sig in signatures:
        if not isinstance(sig, dict):
            continue
        kid = sig.get("kid")
        public = root.keys.get(kid) if isinstance(kid, str) else None
        if public is None or kid in valid:
            continue
        try:
            public.verify(b64url_decode(str(sig.get("sig", ""))), payload)
        except (InvalidSignature, ValueError):
            continue
        valid.add(str(kid))
    return len(valid)


def verify(
    document: Any,
    root: GovernanceRoot,
    now: datetime,
    *,
    min_version: int = 0,
    unsafe_allow_expired: bool = False,
) -> TrustList:
    """Verify a trust list against the pinned governance root and return it parsed.

    Refuses: a threshold not met (of the pinned root and, when the list rotates the root, of the
    new root too), a version below ``min_version`` (rollback), and an expired list unless
    ``unsafe_allow_expired`` (for display only, never for serving).
    """
    if not isinstance(document, dict) or not isinstance(document.get("signed"), dict):
        raise TrustError("trust list: expected an object with 'signed' and 'signatures'")
    signatures = document.get("signatures")
    if not isinstance(signatures, list):
        raise SignatureError("signatures: expected a list")
    try:
        payload = canonical_json(document["signed"])
    except (TypeError, ValueError, RecursionError) as exc:
        raise TrustError(f"signed: cannot be serialised canonically ({exc.__class__.__name__})") from None
    # Signatures first: nothing of an unsigned document is parsed beyond its canonical bytes.
    have = _count_valid(payload, signatures, root)
    if have < root.threshold:
        raise SignatureError(
            f"signatures: {have} valid governance signature(s), threshold is {root.threshold}"
        )
    trusted = _parse_signed(document["signed"])
    if trusted.governance.to_json() != root.to_json():
        have_new = _count_valid(payload, signatures, trusted.governance)
        if have_new < trusted.governance.threshold:
            raise SignatureError(
                f"signatures: governance root rotation needs {trusted.governance.threshold} "
                f"signature(s) of the new keys, got {have_new}"
            )
    if trusted.version < min_version:
        raise RollbackError(
            f"version: {trusted.version} is older than version {min_version} already accepted"
        )
    if not unsafe_allow_expired:
        trusted.check_current(now)
    return trusted
