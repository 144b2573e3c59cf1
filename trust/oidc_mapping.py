"""How the federation reads an OpenID Connect provider's ID token: the ``oidc`` entry of a token issuer.

A token issuer in the trust list may carry an optional, versioned ``oidc`` object saying how the
claims of its OpenID Connect provider map to a practitioner::

    "oidc": {
      "version": 1,
      "issuer": "https://login.microsoftonline.com/<tenant>/v2.0",
      "algorithms": ["RS256"],
      "mfa": {"amr": ["mfa"], "acr": ["possessionorinherence"]},
      "organisation": {"claim": "org"},                      # or {"value": "Leeds City Council"}
      "role": {"claim": "roles", "values": {"Signpost.Practitioner": "practitioner"}},
      "name_claim": "name"
    }

The federation's governance decides this (it is signed with the rest of the list); a broker's
own client id and secret with that provider stay in the broker's config. An entry whose version
is newer than this software understands is ignored (``parse`` returns ``None``), so sign-in with
that issuer is refused while every other party keeps working.

``practitioner`` turns verified ID-token claims into a ``Practitioner``; it refuses (fails
closed) when the provider did not assert multi-factor authentication as the mapping requires,
when no role maps, or when the organisation is missing.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any
from urllib.parse import urlsplit

from trust.errors import TokenError, TrustError

SUPPORTED_VERSION = 1
ALGORITHMS = ("RS256", "PS256", "ES256", "EdDSA")
MFA_AMR = "mfa"
LOOPBACK_HOSTS = frozenset({"127.0.0.1", "localhost", "::1"})


class MfaNotAsserted(TokenError):
    """The provider did not assert multi-factor authentication as the mapping requires."""


@dataclass(frozen=True)
class OidcMapping:
    """A token issuer's OpenID Connect provider and how its claims map (version 1)."""

    issuer: str
    algorithms: tuple[str, ...] = ("RS256",)
    mfa_amr: frozenset[str] = frozenset()
    mfa_acr: frozenset[str] = frozenset()
    organisation_claim: str | None = None
    organisation_value: str | None = None
    role_claim: str | None = None
    role_values: Mapping[str, str] = field(default_factory=dict)
    role_value: str | None = None
    name_claim: str = "name"
    version: int = SUPPORTED_VERSION

    def __post_init__(self) -> None:
        url = urlsplit(self.issuer)
        loopback = url.scheme == "http" and url.hostname in LOOPBACK_HOSTS
        if not (url.scheme == "https" or loopback) or not url.hostname:
            raise TrustError("oidc.issuer: expected an https URL (http on loopback only), "
                             f"got {self.issuer!r}")
        unknown = set(self.algorithms) - set(ALGORITHMS)
        if not self.algorithms or unknown:
            raise TrustError(f"oidc.algorithms: expected some of {list(ALGORITHMS)}, "
                             f"got {list(self.algorithms)}")
        if not self.mfa_amr and not self.mfa_acr:
            raise TrustError("oidc.mfa: expected amr or acr values that show multi-factor sign-in")
        if (self.organisation_claim is None) == (self.organisation_value is None):
            raise TrustError("oidc.organisation: expected exactly one of claim or value")
        if (self.role_claim is None) == (self.role_value is None):
            raise TrustError("oidc.role: expected exactly one of claim (with values) or value")
        if self.role_claim is not None and not self.role_values:
            raise TrustError("oidc.role.values: expected a map from the provider's roles to Signpost roles")

    def has_mfa(self, claims: Mapping[str, Any]) -> bool:
        """Whether the claims assert multi-factor sign-in as this mapping requires (amr or acr)."""
        amr = claims.get("amr")
        amr_values = set(amr) if isinstance(amr, list) and all(isinstance(a, str) for a in amr) else set()
        acr = claims.get("acr")
        return bool(self.mfa_amr & amr_values) or (isinstance(acr, str) and acr in self.mfa_acr)

    def role(self, claims: Mapping[str, Any]) -> str | None:
        """The Signpost role the claims map to; ``None`` when none (or more than one) maps."""
        if self.role_value is not None:
            return self.role_value
        raw = claims.get(self.role_claim or "")
        presented = [raw] if isinstance(raw, str) else raw if isinstance(raw, list) else []
        mapped = {self.role_values[r] for r in presented if isinstance(r, str) and r in self.role_values}
        return mapped.pop() if len(mapped) == 1 else None

    def organisation(self, claims: Mapping[str, Any]) -> str | None:
        if self.organisation_value is not None:
            return self.organisation_value
        value = claims.get(self.organisation_claim or "")
        return value.strip() if isinstance(value, str) and value.strip() else None


def _strings(data: Any, where: str) -> tuple[str, ...]:
    if not isinstance(data, list) or not all(isinstance(v, str) and v for v in data):
        raise TrustError(f"{where}: expected a list of strings, got {data!r}")
    return tuple(data)


def _choice(data: Any, where: str) -> tuple[str | None, str | None, Any]:
    if not isinstance(data, dict):
        raise TrustError(f"{where}: expected an object with claim or value, got {data!r}")
    claim, value = data.get("claim"), data.get("value")
    for name, item in (("claim", claim), ("value", value)):
        if item is not None and (not isinstance(item, str) or not item):
            raise TrustError(f"{where}.{name}: expected a non-empty string, got {item!r}")
    return claim, value, data.get("values")


def parse(data: Any, where: str, roles: frozenset[str]) -> OidcMapping | None:
    """The ``oidc`` entry of a member (``None`` if absent or of a newer version); ``TrustError`` if wrong.

    ``roles`` are the Signpost roles a mapping may produce.
    """
    if data is None:
        return None
    if not isinstance(data, dict):
        raise TrustError(f"{where}: expected an object")
    version = data.get("version")
    if not isinstance(version, int) or isinstance(version, bool) or version < 1:
        raise TrustError(f"{where}.version: expected a positive integer, got {version!r}")
    if version > SUPPORTED_VERSION:
        return None
    issuer = data.get("issuer")
    if not isinstance(issuer, str):
        raise TrustError(f"{where}.issuer: expected the provider's issuer URL, got {issuer!r}")
    mfa = data.get("mfa")
    if not isinstance(mfa, dict):
        raise TrustError(f"{where}.mfa: expected an object with amr and/or acr lists")
    org_claim, org_value, _ = _choice(data.get("organisation"), f"{where}.organisation")
    role_claim, role_value, role_values = _choice(data.get("role"), f"{where}.role")
    mapped: dict[str, str] = {}
    if role_values is not None:
        if not isinstance(role_values, dict) or not all(
                isinstance(k, str) and isinstance(v, str) for k, v in role_values.items()):
            raise TrustError(f"{where}.role.values: expected an object of strings")
        mapped = dict(role_values)
    for role in [*mapped.values(), *([role_value] if role_value else [])]:
        if role not in roles:
            raise TrustError(f"{where}.role: {role!r} is not one of {sorted(roles)}")
    name_claim = data.get("name_claim", "name")
    if not isinstance(name_claim, str) or not name_claim:
        raise TrustError(f"{where}.name_claim: expected a claim name, got {name_claim!r}")
    try:
        return OidcMapping(
            issuer=issuer.rstrip("/"),
            algorithms=_strings(data.get("algorithms", ["RS256"]), f"{where}.algorithms"),
            mfa_amr=frozenset(_strings(mfa.get("amr", []), f"{where}.mfa.amr")),
            mfa_acr=frozenset(_strings(mfa.get("acr", []), f"{where}.mfa.acr")),
            organisation_claim=org_claim, organisation_value=org_value,
            role_claim=role_claim, role_values=mapped, role_value=role_value,
            name_claim=name_claim, version=version,
        )
    except TrustError as exc:
        raise TrustError(f"{where}: {exc}") from exc


__all__ = ["ALGORITHMS", "MFA_AMR", "SUPPORTED_VERSION", "MfaNotAsserted", "OidcMapping", "parse"]
