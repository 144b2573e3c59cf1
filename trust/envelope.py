"""Signed envelopes between broker and nodes: compact JWS, EdDSA, keys from the trust list.

A query is signed by the broker and verified by every node; an answer is signed by a node and
verified by the broker. The verifier never trusts the ``kid`` or ``iss`` it reads before the
signature is checked: ``iss`` selects a member of the trust list, ``kid`` only orders that
member's own keys, and the algorithm is fixed to EdDSA.
"""

from __future__ import annotations

from collections.abc import Mapping
from datetime import datetime
from typing import Any

import jwt
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

from federation.canonical import JsonObject, sha256_hex
from trust.errors import ExpiredError, SignatureError, UnknownMemberError
from trust.keys import key_id
from trust.trustlist import Member, TrustList

ALGORITHM = "EdDSA"
QUERY_TYPE = "signpost-query+jwt"
ANSWER_TYPE = "signpost-answer+jwt"
LEEWAY_SECONDS = 60


def sign(claims: Mapping[str, Any], key: Ed25519PrivateKey, typ: str) -> str:
    """Sign ``claims`` as a compact JWS with EdDSA."""
    headers = {"kid": key_id(key.public_key()), "typ": typ}
    return jwt.encode(dict(claims), key, algorithm=ALGORITHM, headers=headers)


def unverified_issuer(token: str) -> str | None:
    """The ``iss`` an envelope *claims*, before any verification: only for narrowing, never trust."""
    try:
        claims = jwt.decode(token, options={"verify_signature": False})
    except jwt.PyJWTError:
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

    Raises ``SignatureError`` (bad or foreign signature, wrong type or algorithm),
    ``UnknownMemberError`` (issuer not a member with that role) or ``ExpiredError``.
    """
    try:
        header = jwt.get_unverified_header(token)
        unverified = jwt.decode(token, options={"verify_signature": False})
    except jwt.PyJWTError as exc:
        raise SignatureError(f"envelope: not a compact JWS ({exc})") from exc
    if header.get("alg") != ALGORITHM:
        raise SignatureError(f"envelope: expected alg {ALGORITHM}, got {header.get('alg')!r}")
    if header.get("typ") != typ:
        raise SignatureError(f"envelope: expected typ {typ}, got {header.get('typ')!r}")
    issuer = unverified.get("iss")
    if not isinstance(issuer, str):
        raise SignatureError("envelope: iss is missing")
    member = trust_list.member(issuer, role)
    candidates = member.key(header.get("kid"), now)
    if not candidates:
        raise UnknownMemberError(f"envelope: {issuer!r} has no key valid now")
    required = ["iss", "iat", "exp", "jti"] if typ == QUERY_TYPE else ["iss", "iat", "exp"]
    last: Exception | None = None
    for candidate in candidates:
        try:
            claims: JsonObject = jwt.decode(
                token,
                candidate.public_key,
                algorithms=[ALGORITHM],
                issuer=issuer,
                audience=audience,
                leeway=LEEWAY_SECONDS,
                # Times are checked below against the caller's clock, not the wall clock.
                options={"require": required, "verify_aud": audience is not None,
                         "verify_exp": False, "verify_iat": False, "verify_nbf": False},
            )
        except jwt.ExpiredSignatureError as exc:
            raise ExpiredError(f"envelope: expired ({exc})") from exc
        except jwt.InvalidSignatureError as exc:
            last = exc
            continue
        except jwt.PyJWTError as exc:
            raise SignatureError(f"envelope: {exc}") from exc
        check_times(claims, now, "envelope")
        return claims, member
    raise SignatureError(f"envelope: signature does not verify with any key of {issuer!r}") from last
