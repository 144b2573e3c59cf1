"""Practitioner token rules as a table of named attacks and mistakes, each refused.

Tokens are built with PyJWT directly (so a case can break any rule) and verified with the same
function the broker runs on every request, against a real signed trust list.
"""

from __future__ import annotations

import base64
import json
from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any

import jwt
import pytest
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

from trust import keys as keyfiles
from trust import tokens, trustlist
from trust.errors import ExpiredError, TokenError, TrustError, UnknownMemberError
from trust.trustlist import DOCUMENT_TYPE, GovernanceRoot, TrustList, ec_key_id, ec_public_b64, format_time

NOW = datetime(2026, 11, 21, 12, 0, tzinfo=UTC)
T = int(NOW.timestamp())
AUDIENCE = "signpost-broker"
GOV = keyfiles.generate()
IDP = keyfiles.generate()
OTHER_IDP = keyfiles.generate()
NODE = keyfiles.generate()
STRANGER = keyfiles.generate()
EC_IDP = ec.generate_private_key(ec.SECP256R1())


def entry(member_id: str, role: str, key: Ed25519PrivateKey) -> dict[str, Any]:
    return {"id": member_id, "roles": [role], "authority": "alpha",
            "keys": [{"kid": keyfiles.key_id(key.public_key()),
                      "public_key": keyfiles.public_b64(key.public_key())}]}


def trust_with(members: list[dict[str, Any]]) -> TrustList:
    root = GovernanceRoot(1, {keyfiles.key_id(GOV.public_key()): GOV.public_key()})
    signed = {"type": DOCUMENT_TYPE, "federation": "test", "version": 1, "issued": format_time(NOW),
              "expires": format_time(NOW + timedelta(days=1)), "governance": root.to_json(),
              "members": members}
    return trustlist.verify(trustlist.sign(signed, [GOV]), root, NOW)


def ec_entry(member_id: str, key: ec.EllipticCurvePrivateKey) -> dict[str, Any]:
    return {"id": member_id, "roles": ["token_issuer"], "authority": "alpha",
            "keys": [{"alg": "ES256", "kid": ec_key_id(key.public_key()),
                      "public_key": ec_public_b64(key.public_key())}]}


TRUST = trust_with([entry("alpha-idp", "token_issuer", IDP), entry("beta-idp", "token_issuer", OTHER_IDP),
                    entry("alpha", "node", NODE), ec_entry("gamma-idp", EC_IDP)])
WITHOUT_ALPHA_IDP = trust_with([entry("beta-idp", "token_issuer", OTHER_IDP), entry("alpha", "node", NODE)])


def claims(**changes: Any) -> dict[str, Any]:
    base: dict[str, Any] = {
        "iss": "alpha-idp", "sub": "sam.patel", "aud": AUDIENCE, "iat": T, "exp": T + 600, "jti": "t-1",
        "name": "Sam Patel", "org": "Alpha Children's Services", "role": "practitioner",
        "amr": ["pwd", "otp"],
    }
    base.update(changes)
    return {k: v for k, v in base.items() if v is not None}


def eddsa(payload: dict[str, Any], key: Ed25519PrivateKey = IDP, kid: str | None = None) -> str:
    return jwt.encode(payload, key, algorithm="EdDSA",
                      headers={"kid": kid or keyfiles.key_id(key.public_key())})


def respliced(*, header_json: bytes | None = None, claims_json: bytes | None = None) -> str:
    """A good token with its header or its claims replaced by the raw JSON given."""
    parts = eddsa(claims()).split(".")
    if header_json is not None:
        parts[0] = keyfiles.b64url(header_json)
    if claims_json is not None:
        parts[1] = keyfiles.b64url(claims_json)
    return ".".join(parts)


def es256(payload: dict[str, Any], key: ec.EllipticCurvePrivateKey = EC_IDP) -> str:
    return jwt.encode(payload, key, algorithm="ES256", headers={"kid": ec_key_id(key.public_key())})


def b64(data: dict[str, Any]) -> str:
    return base64.urlsafe_b64encode(json.dumps(data).encode()).rstrip(b"=").decode()


def alg_none() -> str:
    return f"{b64({'alg': 'none', 'typ': 'JWT'})}.{b64(claims())}."


def hs256_with_public_key() -> str:
    """The classic confusion attack: HMAC keyed with the issuer's *public* key."""
    import hashlib
    import hmac

    header = b64({"alg": "HS256", "typ": "JWT", "kid": keyfiles.key_id(IDP.public_key())})
    body = b64(claims())
    secret = keyfiles.public_b64(IDP.public_key()).encode()
    mac = hmac.new(secret, f"{header}.{body}".encode(), hashlib.sha256).digest()
    return f"{header}.{body}.{base64.urlsafe_b64encode(mac).rstrip(b'=').decode()}"


@dataclass(frozen=True)
class Case:
    name: str
    make: Callable[[], str]
    expected: type[Exception] | None
    trust: TrustList = TRUST


CASES = [
    Case("a good token", lambda: eddsa(claims()), None),
    Case("alg none", alg_none, TokenError),
    Case("HS256 signed with the public key as secret", hs256_with_public_key, TokenError),
    Case("wrong audience", lambda: eddsa(claims(aud="another-service")), TokenError),
    Case("an audience list containing ours", lambda: eddsa(claims(aud=[AUDIENCE, "other"])), TokenError),
    Case("missing exp", lambda: eddsa(claims(exp=None)), TokenError),
    Case("missing iat", lambda: eddsa(claims(iat=None)), TokenError),
    Case("missing jti", lambda: eddsa(claims(jti=None)), TokenError),
    Case("missing role", lambda: eddsa(claims(role=None)), TokenError),
    Case("missing org", lambda: eddsa(claims(org=None)), TokenError),
    Case("missing amr", lambda: eddsa(claims(amr=None)), TokenError),
    Case("missing sub", lambda: eddsa(claims(sub=None)), TokenError),
    Case("iat in the future (beyond 60 s leeway)", lambda: eddsa(claims(iat=T + 120, exp=T + 600)),
         TokenError),
    Case("iat 30 s ahead is within leeway", lambda: eddsa(claims(iat=T + 30, exp=T + 600)), None),
    Case("lifetime over 15 minutes", lambda: eddsa(claims(exp=T + 15 * 60 + 1)), TokenError),
    Case("lifetime of exactly 15 minutes", lambda: eddsa(claims(exp=T + 15 * 60)), None),
    Case("expired beyond leeway", lambda: eddsa(claims(iat=T - 800, exp=T - 61)), ExpiredError),
    Case("expired within leeway", lambda: eddsa(claims(iat=T - 700, exp=T - 30)), None),
    Case("unknown issuer", lambda: eddsa(claims(iss="stranger-idp"), STRANGER), UnknownMemberError),
    Case("a node is not a token issuer", lambda: eddsa(claims(iss="alpha"), NODE), UnknownMemberError),
    Case("issuer removed from the trust list", lambda: eddsa(claims()), UnknownMemberError,
         WITHOUT_ALPHA_IDP),
    Case("another issuer's key under our issuer's name", lambda: eddsa(claims(), OTHER_IDP), TokenError),
    Case("another issuer's key with our kid",
         lambda: eddsa(claims(), OTHER_IDP, keyfiles.key_id(IDP.public_key())), TokenError),
    Case("unknown role", lambda: eddsa(claims(role="admin")), TokenError),
    Case("amr not a list", lambda: eddsa(claims(amr="otp")), TokenError),
    Case("not a JWT at all", lambda: "hello", TokenError),
    Case("a kid that is not a string", lambda: respliced(header_json=b'{"alg":"EdDSA","kid":7}'), TokenError),
    Case("claims that are not a JSON object", lambda: respliced(claims_json=b"[1]"), TokenError),
    Case("ES256 from an issuer with an ES256 key", lambda: es256(claims(iss="gamma-idp")), None),
    Case("ES256 from an issuer with only Ed25519 keys", lambda: es256(claims()), TrustError),
    Case("EdDSA claiming an ES256 issuer", lambda: eddsa(claims(iss="gamma-idp")), TrustError),
    Case("ES256 with a key the issuer does not list",
         lambda: es256(claims(iss="gamma-idp"), ec.generate_private_key(ec.SECP256R1())), TokenError),
    Case("ES384 is not allowed",
         lambda: jwt.encode(claims(iss="gamma-idp"), ec.generate_private_key(ec.SECP384R1()),
                            algorithm="ES384"),
         TokenError),
]


@pytest.mark.parametrize("case", CASES, ids=[c.name for c in CASES])
def test_token_rules(case: Case) -> None:
    """Only EdDSA tokens from a listed issuer with every required claim and a short life pass."""
    token = case.make()
    if case.expected is None:
        who = tokens.verify(token, case.trust, audience=AUDIENCE, now=NOW)
        assert ("sam.patel", "alpha") == (who.sub, who.authority)
    else:
        with pytest.raises(case.expected):
            tokens.verify(token, case.trust, audience=AUDIENCE, now=NOW)


def test_every_refusal_is_a_trust_error() -> None:
    """The broker catches ``TrustError`` to answer 401: every refusal above must be one."""
    for case in CASES:
        if case.expected is not None:
            assert issubclass(case.expected, TrustError), case.name


def test_issue_signs_es256_with_an_ec_key() -> None:
    """The development issuer signs ES256 with a P-256 key, and the broker's verify accepts it."""
    token = tokens.issue(issuer="gamma-idp", key=EC_IDP, audience=AUDIENCE, sub="s", name="S", org="O",
                         role="practitioner", now=NOW)
    assert ("ES256", "gamma-idp") == (jwt.get_unverified_header(token)["alg"],
                                      tokens.verify(token, TRUST, audience=AUDIENCE, now=NOW).issuer)


def test_envelopes_never_use_es256_keys() -> None:
    """An ES256 key listed for an identity provider cannot sign broker or node envelopes."""
    from trust import envelope

    member = TRUST.member("gamma-idp")
    assert [] == member.key(None, NOW)
    token = jwt.encode({"iss": "gamma-idp", "iat": T, "exp": T + 60, "jti": "q"}, EC_IDP, algorithm="ES256",
                       headers={"typ": envelope.QUERY_TYPE})
    with pytest.raises(TrustError):
        envelope.verify(token, TRUST, role="token_issuer", typ=envelope.QUERY_TYPE, now=NOW)
