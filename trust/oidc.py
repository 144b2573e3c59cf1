"""OpenID Connect sign-in for the web pages (authorization code flow with PKCE).

A practitioner signs in to the broker's pages, and a signposting officer to their node's staff
pages, with their own organisation's identity provider (Microsoft Entra ID, NHS CIS2, …). The
trust list says which providers count and how their claims read (the ``oidc`` entry of a token
issuer, ``trust.oidc_mapping``); each service's config holds its own client id (and secret) with
each provider. Nothing here knows which service uses it: the caller keeps the pending sign-in
and decides what the mapped person may do. The protocol pieces are Authlib's: the authorization
request (``prepare_grant_uri``), the PKCE S256 challenge (RFC 7636), the token request
(``prepare_token_request``) and the ID-token claim rules (``CodeIDToken``: issuer, audience,
expiry, issued-at, nonce, ``azp`` and ``at_hash``); the signature is checked by joserfc against
the provider's published JWKS, with only the algorithms the trust list names.

The flow:

1. ``start``: a fresh ``state``, ``nonce`` and PKCE ``code_verifier``; the caller keeps them
   server-side (``broker.sessions``, the node's staff sessions) and sends the browser to the
   provider.
2. ``finish``: the callback's ``code`` is exchanged (with the verifier and the service's client
   credentials), the ID token verified, and its claims mapped to a ``Practitioner``, refusing a
   sign-in without multi-factor authentication as the mapping requires.

Errors keep "the provider did not answer" (``ProviderUnavailable``) apart from "it answered and
the answer is wrong" (``SignInRefused``). Nothing here logs a code, a token or a claim.
"""

from __future__ import annotations

import base64
import hmac
import json
import secrets
import time
import uuid
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any
from urllib.parse import quote

import aiohttp
from authlib.common.security import generate_token
from authlib.common.urls import add_params_to_uri
from authlib.oauth2.rfc6749.parameters import prepare_grant_uri, prepare_token_request
from authlib.oauth2.rfc7636 import create_s256_code_challenge
from authlib.oidc.core import CodeIDToken
from joserfc import jwt
from joserfc.errors import JoseError
from joserfc.jwk import KeySet
from joserfc.jws import JWSRegistry

from federation.errors import SignpostError
from trust.oidc_mapping import MFA_AMR, OidcMapping
from trust.tokens import Practitioner
from trust.trustlist import Member

CALLBACK_PATH = "/sign-in/oidc/callback"
SCOPES = ("openid", "profile", "email")
LEEWAY_SECONDS = 60
METADATA_SECONDS = 3600
MAX_DOCUMENT_BYTES = 256 * 1024
PENDING_SECONDS = 600


class OidcError(SignpostError):
    """Base class: an OpenID Connect sign-in did not complete."""


class ProviderUnavailable(OidcError):
    """The provider did not answer (network, timeout, server error)."""


class SignInRefused(OidcError):
    """The provider answered, and the answer cannot be accepted (bad token, wrong claims)."""


class MfaRequired(SignInRefused):
    """The provider did not assert multi-factor authentication as the trust list requires."""


@dataclass(frozen=True)
class OidcClient:
    """The broker's registration with one provider: its client id, and its secret if confidential."""

    client_id: str
    client_secret: str | None = None

    def __post_init__(self) -> None:
        if not self.client_id:
            raise ValueError("oidc client_id: expected a non-empty string")


@dataclass(frozen=True)
class ProviderMetadata:
    """The parts of a provider's discovery document the broker uses."""

    issuer: str
    authorization_endpoint: str
    token_endpoint: str
    jwks_uri: str
    end_session_endpoint: str | None


@dataclass(frozen=True)
class PendingSignIn:
    """What the broker keeps between sending the browser away and the callback."""

    issuer_member: str
    state: str
    nonce: str
    code_verifier: str

    def to_record(self) -> dict[str, str]:
        return {"issuer_member": self.issuer_member, "state": self.state, "nonce": self.nonce,
                "code_verifier": self.code_verifier}

    @classmethod
    def from_record(cls, record: Mapping[str, str]) -> PendingSignIn:
        return cls(record["issuer_member"], record["state"], record["nonce"], record["code_verifier"])


def _mapping(member: Member) -> OidcMapping:
    if member.oidc is None or "token_issuer" not in member.roles:
        raise SignInRefused(f"{member.id}: the trust list names no OpenID provider for this issuer")
    return member.oidc


def _url(value: Any, name: str, issuer: str) -> str:
    if not isinstance(value, str) or not value.startswith(("https://", "http://")):
        raise SignInRefused(f"{issuer}: discovery {name}: expected a URL, got {value!r}")
    if value.startswith("http://") and not issuer.startswith("http://"):
        raise SignInRefused(f"{issuer}: discovery {name}: expected https, got {value!r}")
    return value


class OpenIdSignIn:
    """Sign-in with the providers the trust list names, as the client the broker's config says."""

    def __init__(self, clients: Mapping[str, OidcClient], redirect_uri: str, *,
                 timeout_seconds: float = 5.0, session_seconds: int = 8 * 3600) -> None:
        self.clients = dict(clients)
        self.redirect_uri = redirect_uri
        self.session_seconds = session_seconds
        self._timeout = aiohttp.ClientTimeout(total=timeout_seconds)
        self._http: aiohttp.ClientSession | None = None
        self._metadata: dict[str, tuple[float, ProviderMetadata]] = {}
        self._jwks: dict[str, KeySet] = {}

    # --- lifecycle --------------------------------------------------------------------------

    async def open(self) -> None:
        self._http = aiohttp.ClientSession(timeout=self._timeout)

    async def close(self) -> None:
        if self._http is not None:
            await self._http.close()
            self._http = None

    def client(self, member: Member) -> OidcClient:
        found = self.clients.get(member.id)
        if found is None:
            raise SignInRefused(f"{member.id}: this broker has no client registration with its provider")
        return found

    # --- fetching ---------------------------------------------------------------------------

    async def _fetch(self, method: str, url: str, **kwargs: Any) -> tuple[int, Any]:
        if self._http is None:
            raise ProviderUnavailable("OpenID sign-in is not running")
        try:
            async with self._http.request(method, url, allow_redirects=False, **kwargs) as response:
                raw = await response.content.read(MAX_DOCUMENT_BYTES + 1)
                status = response.status
        except (aiohttp.ClientError, OSError, TimeoutError) as exc:
            raise ProviderUnavailable(f"{url}: no answer ({exc.__class__.__name__})") from exc
        if status >= 500:
            raise ProviderUnavailable(f"{url}: answered HTTP {status}")
        if len(raw) > MAX_DOCUMENT_BYTES:
            raise SignInRefused(f"{url}: answer larger than {MAX_DOCUMENT_BYTES} bytes")
        try:
            return status, json.loads(raw)
        except (UnicodeDecodeError, json.JSONDecodeError) as exc:
            raise SignInRefused(f"{url}: expected JSON, got HTTP {status} with something else") from exc

    async def metadata(self, mapping: OidcMapping) -> ProviderMetadata:
        """The provider's discovery document (cached for an hour); its ``issuer`` must be the listed one."""
        cached = self._metadata.get(mapping.issuer)
        if cached is not None and cached[0] > time.monotonic():
            return cached[1]
        status, doc = await self._fetch("GET", mapping.issuer + "/.well-known/openid-configuration")
        if status != 200 or not isinstance(doc, dict):
            raise SignInRefused(f"{mapping.issuer}: discovery answered HTTP {status}")
        if doc.get("issuer") != mapping.issuer:
            raise SignInRefused(f"{mapping.issuer}: discovery names issuer {doc.get('issuer')!r}, "
                                f"expected {mapping.issuer!r}")
        end_session = doc.get("end_session_endpoint")
        found = ProviderMetadata(
            issuer=mapping.issuer,
            authorization_endpoint=_url(doc.get("authorization_endpoint"), "authorization_endpoint",
                                        mapping.issuer),
            token_endpoint=_url(doc.get("token_endpoint"), "token_endpoint", mapping.issuer),
            jwks_uri=_url(doc.get("jwks_uri"), "jwks_uri", mapping.issuer),
            end_session_endpoint=_url(end_session, "end_session_endpoint", mapping.issuer)
            if end_session is not None else None,
        )
        self._metadata[mapping.issuer] = (time.monotonic() + METADATA_SECONDS, found)
        return found

    async def _key_set(self, metadata: ProviderMetadata, *, refresh: bool) -> KeySet:
        if not refresh and metadata.issuer in self._jwks:
            return self._jwks[metadata.issuer]
        status, doc = await self._fetch("GET", metadata.jwks_uri)
        if status != 200 or not isinstance(doc, dict):
            raise SignInRefused(f"{metadata.issuer}: JWKS answered HTTP {status}")
        try:
            keys = KeySet.import_key_set(doc)  # type: ignore[arg-type]
        except (JoseError, ValueError, TypeError, KeyError) as exc:
            raise SignInRefused(f"{metadata.issuer}: JWKS unreadable ({exc.__class__.__name__})") from exc
        self._jwks[metadata.issuer] = keys
        return keys

    # --- the flow ---------------------------------------------------------------------------

    async def start(self, member: Member) -> tuple[str, PendingSignIn]:
        """The provider URL to send the browser to, and what to keep until the callback."""
        mapping = _mapping(member)
        client = self.client(member)
        metadata = await self.metadata(mapping)
        pending = PendingSignIn(member.id, generate_token(43), generate_token(43), generate_token(64))
        url = prepare_grant_uri(
            metadata.authorization_endpoint, client.client_id, "code", redirect_uri=self.redirect_uri,
            scope=list(SCOPES), state=pending.state, nonce=pending.nonce,
            code_challenge=create_s256_code_challenge(pending.code_verifier), code_challenge_method="S256",
        )
        return str(url), pending

    async def finish(self, member: Member, pending: PendingSignIn, state: str, code: str,
                     now: float) -> Practitioner:
        """Exchange ``code``, verify the ID token and map its claims; raises an ``OidcError``."""
        if not hmac.compare_digest(pending.state.encode(), state.encode()):
            raise SignInRefused("state: does not match the sign-in this browser started")
        if pending.issuer_member != member.id:
            raise SignInRefused("state: the sign-in was started with another provider")
        mapping = _mapping(member)
        client = self.client(member)
        metadata = await self.metadata(mapping)
        body = prepare_token_request("authorization_code", redirect_uri=self.redirect_uri, code=code,
                                     code_verifier=pending.code_verifier,
                                     client_id=None if client.client_secret else client.client_id)
        headers = {"Content-Type": "application/x-www-form-urlencoded", "Accept": "application/json"}
        if client.client_secret is not None:  # client_secret_basic (RFC 6749 section 2.3.1)
            pair = f"{quote(client.client_id, safe='')}:{quote(client.client_secret, safe='')}"
            headers["Authorization"] = "Basic " + base64.b64encode(pair.encode()).decode()
        status, answer = await self._fetch("POST", metadata.token_endpoint, data=body, headers=headers)
        if status != 200 or not isinstance(answer, dict):
            error = answer.get("error") if isinstance(answer, dict) else None
            raise SignInRefused(f"{mapping.issuer}: token endpoint refused the code "
                                f"(HTTP {status}, {error or 'no error code'})")
        id_token = answer.get("id_token")
        if not isinstance(id_token, str):
            raise SignInRefused(f"{mapping.issuer}: token endpoint sent no ID token")
        claims = await self.verify_id_token(member, id_token, pending.nonce, answer.get("access_token"), now)
        return practitioner(member, mapping, claims, now, self.session_seconds)

    async def verify_id_token(self, member: Member, id_token: str, nonce: str, access_token: Any,
                              now: float) -> dict[str, Any]:
        """The ID token's claims once its signature (provider's JWKS) and claim rules hold."""
        mapping = _mapping(member)
        client = self.client(member)
        metadata = await self.metadata(mapping)
        registry = JWSRegistry(algorithms=list(mapping.algorithms))
        try:
            try:
                token = jwt.decode(id_token, await self._key_set(metadata, refresh=False),
                                   algorithms=list(mapping.algorithms), registry=registry)
            except JoseError:  # perhaps a rotated key: fetch the JWKS once more, then decide
                token = jwt.decode(id_token, await self._key_set(metadata, refresh=True),
                                   algorithms=list(mapping.algorithms), registry=registry)
        except (JoseError, ValueError) as exc:
            raise SignInRefused(f"{mapping.issuer}: ID token signature does not verify "
                                f"({exc.__class__.__name__})") from exc
        params: dict[str, Any] = {"nonce": nonce, "client_id": client.client_id}
        if isinstance(access_token, str):
            params["access_token"] = access_token
        options: dict[str, Any] = {"iss": {"essential": True, "value": mapping.issuer},
                                   "aud": {"essential": True, "value": client.client_id},
                                   "exp": {"essential": True}, "iat": {"essential": True},
                                   "nonce": {"essential": True}}
        claims = CodeIDToken(token.claims, token.header, options, params)
        try:
            claims.validate(now=int(now), leeway=LEEWAY_SECONDS)
        except JoseError as exc:
            raise SignInRefused(f"{mapping.issuer}: ID token refused "
                                f"({exc.error}: {exc.description})") from exc
        if not isinstance(claims.get("exp"), int) or not isinstance(claims.get("iat"), int):
            raise SignInRefused(f"{mapping.issuer}: ID token exp and iat must be integers")
        return dict(claims)

    async def sign_out_url(self, member: Member, return_to: str) -> str | None:
        """The provider's end-session URL (RP-initiated logout) when it publishes one; else ``None``."""
        try:
            metadata = await self.metadata(_mapping(member))
        except OidcError:
            return None
        if metadata.end_session_endpoint is None:
            return None
        return str(add_params_to_uri(metadata.end_session_endpoint, [
            ("client_id", self.client(member).client_id), ("post_logout_redirect_uri", return_to)]))


def practitioner(member: Member, mapping: OidcMapping, claims: Mapping[str, Any], now: float,
                 session_seconds: int) -> Practitioner:
    """Verified ID-token claims as a practitioner, as the trust list's mapping reads them."""
    if not mapping.has_mfa(claims):
        raise MfaRequired(f"{member.id}: the provider did not assert multi-factor sign-in "
                          "(amr/acr as the trust list requires)")
    sub = claims.get("sub")
    if not isinstance(sub, str) or not sub:
        raise SignInRefused(f"{member.id}: ID token has no subject")
    role = mapping.role(claims)
    if role is None:
        raise SignInRefused(f"{member.id}: no Signpost role maps from the provider's claims")
    org = mapping.organisation(claims)
    if org is None:
        raise SignInRefused(f"{member.id}: no organisation in the provider's claims")
    name = claims.get(mapping.name_claim)
    raw_amr = claims.get("amr")
    amr = [a for a in raw_amr if isinstance(a, str)] if isinstance(raw_amr, list) else []
    if MFA_AMR not in amr:
        amr.append(MFA_AMR)  # the mapping recognised multi-factor sign-in (amr or acr)
    return Practitioner(
        issuer=member.id, sub=sub, name=name.strip() if isinstance(name, str) and name.strip() else sub,
        org=org, role=role, amr=tuple(amr), authority=member.authority, jti=str(uuid.uuid4()),
        expires=int(now) + session_seconds,
    )


def new_transaction_id() -> str:
    """The random name of one sign-in in progress (kept in a short-lived cookie)."""
    return secrets.token_urlsafe(32)


__all__ = ["CALLBACK_PATH", "PENDING_SECONDS", "MfaRequired", "OidcClient", "OidcError", "OpenIdSignIn",
           "PendingSignIn", "ProviderUnavailable", "SignInRefused", "new_transaction_id", "practitioner"]
