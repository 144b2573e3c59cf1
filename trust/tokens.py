"""Practitioner tokens: short-lived EdDSA (or ES256) JWTs from identity providers in the trust list.

The algorithm in the header must be EdDSA or ES256 and selects which of the issuer's listed keys
may verify it: an ES256 token verifies only against a key the trust list lists as ES256, so no
key is ever used with an algorithm it was not published for.

In production an authority's identity provider issues them (OpenID Connect); ``issue`` is the
development stand-in behind ``signpost token``. ``verify`` is what the broker runs on every
request; it fails closed on anything unexpected.
"""

from __future__ import annotations

import uuid
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime

import jwt
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

from federation.canonical import JsonObject
from federation.rules import PRACTITIONER_ROLES
from trust.errors import ExpiredError, TokenError, TrustError
from trust.jws import read_compact
from trust.keys import key_id
from trust.trustlist import TrustList, ec_key_id

ALGORITHMS = ("EdDSA", "ES256")
MAX_LIFETIME_SECONDS = 15 * 60
LEEWAY_SECONDS = 60
REQUIRED_CLAIMS = ("iss", "sub", "aud", "exp", "iat", "jti", "role", "org", "amr")
MFA_METHODS = frozenset({"mfa", "otp", "hwk", "swk", "sms", "fido", "totp"})


@dataclass(frozen=True)
class Practitioner:
    """The verified claims of a signed-in person."""

    issuer: str
    sub: str
    name: str
    org: str
    role: str
    amr: tuple[str, ...]
    authority: str | None
    jti: str
    expires: int

    @property
    def has_mfa(self) -> bool:
        return bool(MFA_METHODS & set(self.amr))

    def to_claims(self) -> JsonObject:
        """What the broker carries into a signed query (no token, no jti of the token)."""
        return {
            "iss": self.issuer, "sub": self.sub, "name": self.name, "org": self.org,
            "role": self.role, "authority": self.authority, "amr": list(self.amr),
        }


def issue(
    *,
    issuer: str,
    key: Ed25519PrivateKey | ec.EllipticCurvePrivateKey,
    audience: str,
    sub: str,
    name: str,
    org: str,
    role: str,
    amr: Sequence[str] = ("pwd", "otp"),
    now: datetime,
    lifetime_seconds: int = 600,
) -> str:
    """Issue a development token (the stand-in for an authority's identity provider)."""
    iat = int(now.timestamp())
    claims = {
        "iss": issuer, "sub": sub, "aud": audience, "iat": iat, "exp": iat + lifetime_seconds,
        "jti": str(uuid.uuid4()), "name": name, "org": org, "role": role, "amr": list(amr),
    }
    if isinstance(key, ec.EllipticCurvePrivateKey):
        return jwt.encode(claims, key, algorithm="ES256", headers={"kid": ec_key_id(key.public_key())})
    return jwt.encode(claims, key, algorithm="EdDSA", headers={"kid": key_id(key.public_key())})


def verify(token: str, trust_list: TrustList, *, audience: str, now: datetime) -> Practitioner:
    """Verify a bearer token. Raises ``TokenError``/``ExpiredError``/``TrustError`` subclasses."""
    header, unverified = read_compact(token, "token", TokenError)  # the one unverified read
    if header.get("alg") not in ALGORITHMS:
        raise TokenError(f"token: algorithm {header.get('alg')!r} is not allowed")
    if not isinstance(header.get("kid", ""), str):
        raise TokenError("token: the kid header must be a string")
    issuer = unverified.get("iss")
    if not isinstance(issuer, str):
        raise TokenError("token: iss is missing")
    member = trust_list.member(issuer, "token_issuer")
    algorithm = str(header["alg"])
    keys = member.key(header.get("kid"), now, alg=algorithm)
    if not keys:
        raise TrustError(f"token: issuer {issuer!r} has no {algorithm} key valid now")
    claims: JsonObject | None = None
    for candidate in keys:
        try:
            claims = jwt.decode(
                token,
                candidate.public_key,
                algorithms=[algorithm],
                audience=audience,
                issuer=issuer,
                leeway=LEEWAY_SECONDS,
                # Times are checked below against the caller's clock, not the wall clock.
                options={"require": list(REQUIRED_CLAIMS), "strict_aud": True,
                         "verify_exp": False, "verify_iat": False, "verify_nbf": False},
            )
            break
        except jwt.InvalidSignatureError:
            continue
        except jwt.ExpiredSignatureError as exc:
            raise ExpiredError("token: expired") from exc
        except jwt.PyJWTError as exc:
            raise TokenError(f"token: {exc}") from exc
    if claims is None:
        raise TokenError(f"token: signature does not verify with any key of {issuer!r}")
    if not isinstance(claims["iat"], int) or not isinstance(claims["exp"], int):
        raise TokenError("token: iat and exp must be integers")
    if claims["iat"] > now.timestamp() + LEEWAY_SECONDS:
        raise TokenError("token: iat is in the future")
    if claims["exp"] < now.timestamp() - LEEWAY_SECONDS:
        raise ExpiredError("token: expired")
    if isinstance(claims.get("nbf"), int) and claims["nbf"] > now.timestamp() + LEEWAY_SECONDS:
        raise TokenError("token: not valid yet (nbf)")
    if claims["exp"] - claims["iat"] > MAX_LIFETIME_SECONDS:
        raise TokenError(f"token: lifetime exceeds {MAX_LIFETIME_SECONDS} seconds")
    if claims["role"] not in PRACTITIONER_ROLES:
        raise TokenError(f"token: role {claims['role']!r} is not one of {sorted(PRACTITIONER_ROLES)}")
    amr = claims["amr"]
    if not isinstance(amr, list) or not all(isinstance(a, str) for a in amr):
        raise TokenError("token: amr must be a list of strings")
    for name in ("sub", "org", "jti"):
        if not isinstance(claims[name], str) or not claims[name]:
            raise TokenError(f"token: {name} must be a non-empty string")
    return Practitioner(
        issuer=issuer,
        sub=claims["sub"],
        name=str(claims.get("name", claims["sub"])),
        org=claims["org"],
        role=claims["role"],
        amr=tuple(amr),
        authority=member.authority,
        jti=claims["jti"],
        expires=claims["exp"],
    )


__all__ = ["ALGORITHMS", "LEEWAY_SECONDS", "MAX_LIFETIME_SECONDS", "PRACTITIONER_ROLES", "REQUIRED_CLAIMS",
           "ExpiredError", "Practitioner", "TokenError", "issue", "verify"]
