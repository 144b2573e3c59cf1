"""Signed envelopes between broker and nodes: compact JWS, EdDSA, keys from the trust list.

A query is signed by the broker and verified by every node; an answer is signed by a node and
verified by the broker. The verifier never trusts the ``kid`` or ``iss`` it reads before the
signature is checked: ``iss`` selects a member of the trust list, ``kid`` only orders that
member's own keys, and the algorithm is fixed to EdDSA.
"""

from __future__ import annotations

import binascii
import json
from collections.abc import Mapping
from datetime import datetime
from typing import Any

from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey, Ed25519PublicKey

from federation.canonical import JsonObject, sha256_hex
from federation.safejson import JsonError, parse_object
from trust.errors import ExpiredError, SignatureError, UnknownMemberError
from trust.jws import CLAIMS_LIMITS, MAX_TOKEN_BYTES
from trust.keys import b64url, b64url_decode, key_id
from trust.trustlist import Member, TrustList

ALGORITHM = "EdDSA"
QUERY_TYPE = "signpost-query+jwt"
ANSWER_TYPE = "signpost-answer+jwt"
LEEWAY_SECONDS = 60


class Signer:
    """One private key's compact JWS signer (EdDSA), for a service that signs many envelopes.

    The key id and the encoded protected header of each type are made once; each envelope then
    costs one compact JSON encoding of its claims, two base64url encodings and one Ed25519
    signature. The output is the same kind of compact JWS ``jwt.encode`` writes, and
    ``verify`` (or any JOSE library) reads it.
    """

    def __init__(self, key: Ed25519PrivateKey) -> None:
        self.key = key
        self.kid = key_id(key.public_key())
        self._headers: dict[str, str] = {}

    def _header(self, typ: str) -> str:
        header = self._headers.get(typ)
        if header is None:
            raw = json.dumps({"alg": ALGORITHM, "kid": self.kid, "typ": typ}, separators=(",", ":"))
            header = self._headers[typ] = b64url(raw.encode("ascii"))
        return header

    def sign(self, claims: Mapping[str, Any], typ: str) -> str:
        """Sign ``claims`` (JSON values only; no NaN or infinity) as a compact JWS."""
        payload = json.dumps(claims, separators=(",", ":"), allow_nan=False)
        signing_input = f"{self._header(typ)}.{b64url(payload.encode('ascii'))}"
        return f"{signing_input}.{b64url(self.key.sign(signing_input.encode('ascii')))}"


def sign(claims: Mapping[str, Any], key: Ed25519PrivateKey, typ: str) -> str:
    """Sign ``claims`` as a compact JWS with EdDSA (``Signer`` for a key that signs often)."""
    return Signer(key).sign(claims, typ)


def unverified_issuer(token: str) -> str | None:
    """The ``iss`` an envelope *claims*, before any verification: only for narrowing, never trust.

    ``None`` unless the token is a compact JWS whose three parts decode, with a header and claims
    that are bounded JSON objects (``_read``, what ``verify`` does first, so this costs a fraction
    of a full decode: a node runs it on every query from a channel)."""
    try:
        _, _, claims, _ = _read(token)
    except SignatureError:
        return None
    issuer = claims.get("iss")
    return issuer if isinstance(issuer, str) else None


def check_times(claims: Mapping[str, Any], now: datetime, what: str) -> None:
    """``iat`` and ``exp`` are integers, ``iat`` not in the future and ``exp`` not passed (leeway)."""
    iat, exp = claims.get("iat"), claims.get("exp")
    if not isinstance(iat, int) or isinstance(iat, bool) or not isinstance(exp, int) or isinstance(exp, bool):
        raise SignatureError(f"{what}: iat and exp must be integers, got {iat!r} and {exp!r}")
    moment = now.timestamp()
    if iat > moment + LEEWAY_SECONDS:
        raise SignatureError(f"{what}: iat is in the future")
    if exp < moment - LEEWAY_SECONDS:
        raise ExpiredError(f"{what}: expired at {exp}, now {int(moment)}")


def envelope_hash(token: str) -> str:
    """The hash that binds an answer (and audit entries) to one exact envelope."""
    return sha256_hex(token.encode("ascii"))


def _b64decode(part: str, what: str) -> bytes:
    try:
        return b64url_decode(part)
    except (ValueError, binascii.Error) as exc:
        raise SignatureError(f"envelope: {what} is not base64url") from exc


def _json_object(raw: bytes, what: str) -> JsonObject:
    """The one parse of a header or claims: bounded, duplicate-free JSON (as ``trust.jws`` checks)."""
    try:
        return parse_object(raw, what, CLAIMS_LIMITS)
    except JsonError as exc:
        raise SignatureError(f"envelope: {exc}") from None


_HEADERS: dict[str, JsonObject] = {}
"""Protected headers already parsed, by their exact encoding: a broker sends the same few
(one per key and type) on every query. Never written to, so they can be shared."""
_HEADERS_KEPT = 64


def _header(part: str) -> JsonObject:
    """The parsed protected header ``part`` (parsed once per distinct encoding)."""
    found = _HEADERS.get(part)
    if found is None:
        found = _json_object(_b64decode(part, "header"), "header")
        if len(_HEADERS) >= _HEADERS_KEPT:  # many distinct headers: someone probing, not a broker
            _HEADERS.clear()
        _HEADERS[part] = found
    return found


def _read(token: str) -> tuple[list[str], JsonObject, JsonObject, bytes]:
    """A compact JWS split and decoded once: its three parts, the header, the claims and the
    signature (``SignatureError`` unless all of them are well formed; nothing verified yet)."""
    if len(token) > MAX_TOKEN_BYTES:
        raise SignatureError(f"envelope: expected at most {MAX_TOKEN_BYTES} characters, got {len(token)}")
    parts = token.split(".")
    if len(parts) != 3:
        raise SignatureError(f"envelope: not a compact JWS (expected 3 parts, got {len(parts)})")
    header = _header(parts[0])
    claims = _json_object(_b64decode(parts[1], "payload"), "payload")
    return parts, header, claims, _b64decode(parts[2], "signature")


def verify(
    token: str,
    trust_list: TrustList,
    *,
    role: str,
    typ: str,
    now: datetime,
    audience: str | None = None,
) -> tuple[JsonObject, Member]:
    """Verify an envelope signed by a member with ``role``; return its claims and the signer.

    The compact JWS is split and decoded once; the Ed25519 signature over its first two parts is
    checked with the key objects of the trust list in force (built once, when the list was
    loaded). Nothing read before the signature is checked is trusted: ``iss`` only selects a
    member, ``kid`` only orders that member's keys.

    Raises ``SignatureError`` (bad or foreign signature, wrong type or algorithm),
    ``UnknownMemberError`` (issuer not a member with that role) or ``ExpiredError``.
    """
    parts, header, claims, signature = _read(token)
    if header.get("alg") != ALGORITHM:
        raise SignatureError(f"envelope: expected alg {ALGORITHM}, got {header.get('alg')!r}")
    if header.get("typ") != typ:
        raise SignatureError(f"envelope: expected typ {typ}, got {header.get('typ')!r}")
    issuer = claims.get("iss")
    if not isinstance(issuer, str):
        raise SignatureError("envelope: iss is missing")
    member = trust_list.member(issuer, role)
    kid = header.get("kid")
    candidates = member.key(kid if isinstance(kid, str) else None, now)
    if not candidates:
        raise UnknownMemberError(f"envelope: {issuer!r} has no key valid now")
    signed = f"{parts[0]}.{parts[1]}".encode("ascii", "replace")
    if not any(isinstance(c.public_key, Ed25519PublicKey) and _verifies(c.public_key, signature, signed)
               for c in candidates):
        raise SignatureError(f"envelope: signature does not verify with any key of {issuer!r}")
    required = ("iss", "iat", "exp", "jti") if typ == QUERY_TYPE else ("iss", "iat", "exp")
    missing = [name for name in required if name not in claims]
    if missing:
        raise SignatureError(f"envelope: Token is missing the {missing[0]!r} claim")
    if audience is not None:
        aud = claims.get("aud")
        if not (aud == audience or (isinstance(aud, list) and audience in aud)):
            raise SignatureError(f"envelope: expected aud {audience!r}, got {aud!r}")
    check_times(claims, now, "envelope")
    return claims, member


def _verifies(key: Ed25519PublicKey, signature: bytes, signed: bytes) -> bool:
    try:
        key.verify(signature, signed)
    except InvalidSignature:
        return False
    return True
