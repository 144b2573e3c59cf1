"""The federation trust list: who is a member, with which keys, roles and endpoints.

The trust list is a JSON document ``{"signed": {...}, "signatures": [...]}``. The signed part is
serialised canonically and signed with Ed25519 by governance keys; a list is accepted only when
a threshold of the pinned governance keys signed it. Verification here is pure: the caller
supplies the pinned root, the clock and the highest version it has accepted before.

Root rotation follows The Update Framework: a list whose ``governance`` section differs from the
pinned root must be signed by a threshold of the old keys *and* a threshold of the new keys.
"""

from __future__ import annotations

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
from federation.rules import DEFAULT_RETENTION_AGE
from trust.errors import (
    ExpiredError,
    RollbackError,
    SignatureError,
    TrustError,
    UnknownMemberError,
)
from trust.keys import b64url, b64url_decode, key_id, public_b64, public_from_b64

DOCUMENT_TYPE = "signpost-trust-list"
ROLES = frozenset({"node", "broker", "token_issuer", "auditor"})


def parse_time(value: Any, where: str) -> datetime:
    """Parse an RFC 3339 UTC timestamp such as ``2026-11-21T09:00:00Z``."""
    if not isinstance(value, str):
        raise TrustError(f"{where}: expected an RFC 3339 timestamp, got {value!r}")
    try:
        parsed = datetime.fromisoformat(value.replace("Z", "+00:00"))
    except ValueError:
        raise TrustError(f"{where}: expected an RFC 3339 timestamp, got {value!r}") from None
    if parsed.tzinfo is None:
        raise TrustError(f"{where}: timestamp must carry a time zone, got {value!r}")
    return parsed.astimezone(UTC)


def format_time(moment: datetime) -> str:
    """Format a timestamp the way trust lists carry it."""
    return moment.astimezone(UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


MEMBER_KEY_ALGORITHMS = ("EdDSA", "ES256")


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

    def __post_init__(self) -> None:
        unknown = self.roles - ROLES
        if unknown:
            raise TrustError(f"members[{self.id}].roles: unknown role(s) {sorted(unknown)}")

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
        if not isinstance(data, dict) or not isinstance(data.get("keys"), list):
            raise TrustError("governance: expected an object with threshold and keys")
        keys: dict[str, Ed25519PublicKey] = {}
        for i, item in enumerate(data["keys"]):
            public = public_from_b64(str(item.get("public_key", "")))
            kid = key_id(public)
            if item.get("kid") not in (None, kid):
                raise TrustError(f"governance.keys[{i}].kid: expected {kid}")
            keys[kid] = public
        threshold = data.get("threshold")
        if not isinstance(threshold, int):
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
        return sorted((m for m in self.members.values() if role in m.roles), key=lambda m: m.id)

    def check_current(self, moment: datetime) -> None:
        """Raise ``ExpiredError`` when the list has expired: every search must stop."""
        if moment > self.expires:
            raise ExpiredError(
                f"trust list version {self.version} expired at {format_time(self.expires)}; "
                "searches are stopped until a current list is installed"
            )


# --- Parsing --------------------------------------------------------------------------------


def _parse_member(data: Any, index: int) -> Member:
    where = f"members[{index}]"
    if not isinstance(data, dict):
        raise TrustError(f"{where}: expected an object")
    member_id = data.get("id")
    if not isinstance(member_id, str) or not member_id:
        raise TrustError(f"{where}.id: expected a non-empty string")
    keys = []
    for j, k in enumerate(data.get("keys", [])):
        alg = k.get("alg", "EdDSA")
        public: Ed25519PublicKey | ec.EllipticCurvePublicKey
        if alg == "ES256":
            public = _ec_public_from_b64(str(k.get("public_key", "")))
            kid = k.get("kid") or ec_key_id(public)
        elif alg == "EdDSA":
            public = public_from_b64(str(k.get("public_key", "")))
            kid = k.get("kid") or key_id(public)
        else:
            raise TrustError(f"{where}.keys[{j}].alg: expected one of {MEMBER_KEY_ALGORITHMS}, got {alg!r}")
        keys.append(MemberKey(
            alg=str(alg),
            kid=str(kid),
            public_key=public,
            not_before=parse_time(k["not_before"], f"{where}.keys[{j}].not_before")
            if k.get("not_before") else None,
            not_after=parse_time(k["not_after"], f"{where}.keys[{j}].not_after")
            if k.get("not_after") else None,
        ))
    return Member(
        id=member_id,
        name=str(data.get("name", member_id)),
        roles=frozenset(data.get("roles", [])),
        keys=tuple(keys),
        endpoint=data.get("endpoint"),
        authority=data.get("authority"),
        contact=data.get("contact"),
        tls_fingerprint=data.get("tls_fingerprint"),
    )


def _parse_policy(data: Any) -> Policy:
    if data is None:
        return Policy()
    if not isinstance(data, dict):
        raise TrustError("policy: expected an object")
    purposes = tuple(
        Purpose(code=str(p["code"]), label=str(p.get("label", p["code"])))
        for p in data.get("purposes", [])
    )
    return Policy(
        purposes=purposes,
        sensitive_categories=frozenset(data.get("sensitive_categories", [])),
        rate_limits=dict(data.get("rate_limits", {})),
        retention_age=int(data.get("retention_age", 24)),
        check_expiry_days=_check_expiry_days(data.get("check_expiry_days", DEFAULT_CHECK_EXPIRY_DAYS)),
    )


def _check_expiry_days(value: Any) -> int:
    if not isinstance(value, int) or isinstance(value, bool) or not 1 <= value <= 90:
        raise TrustError(f"policy.check_expiry_days: expected an integer 1-90, got {value!r}")
    return value


def _parse_signed(signed: Mapping[str, Any]) -> TrustList:
    if signed.get("type") != DOCUMENT_TYPE:
        raise TrustError(f"type: expected {DOCUMENT_TYPE!r}, got {signed.get('type')!r}")
    version = signed.get("version")
    if not isinstance(version, int) or version < 1:
        raise TrustError(f"version: expected a positive integer, got {version!r}")
    members: dict[str, Member] = {}
    for i, item in enumerate(signed.get("members", [])):
        member = _parse_member(item, i)
        if member.id in members:
            raise TrustError(f"members[{i}].id: duplicate member {member.id!r}")
        members[member.id] = member
    return TrustList(
        federation=str(signed.get("federation", "")),
        version=version,
        issued=parse_time(signed.get("issued"), "issued"),
        expires=parse_time(signed.get("expires"), "expires"),
        governance=GovernanceRoot.from_json(signed.get("governance")),
        members=members,
        policy=_parse_policy(signed.get("policy")),
        document=signed,
    )


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
    payload = canonical_json(document["signed"])
    trusted = _parse_signed(document["signed"])

    have = _count_valid(payload, signatures, root)
    if have < root.threshold:
        raise SignatureError(
            f"signatures: {have} valid governance signature(s), threshold is {root.threshold}"
        )
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
