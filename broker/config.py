"""The broker's settings: one frozen dataclass, loaded from a JSON file."""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

from federation.config import check_common, coerce_paths
from trust.tls import TlsFiles


@dataclass(frozen=True)
class BrokerConfig:
    """Everything a broker needs to run. Paths in the file are relative to the file."""

    id: str
    key: Path
    trust_list: Path
    trust_root: Path
    audience: str = "signpost-broker"
    host: str = "127.0.0.1"
    port: int = 8700
    node_deadline_seconds: float = 3.0
    query_lifetime_seconds: int = 60
    body_limit: int = 16 * 1024
    trust_refresh_seconds: float = 60
    trust_list_url: str | None = None
    tls_cert: Path | None = None
    tls_key: Path | None = None
    tls_ca: Path | None = None
    serve_tls: bool = True
    redis_url: str | None = None
    redis_timeout_seconds: float = 0.5
    rate_limits: dict[str, int] = field(default_factory=dict)  # overrides the trust-list policy
    audit_log: Path | None = None
    audit_commitment_key: Path | None = None  # default: audit-commitment.key beside audit_log
    session_idle_seconds: int = 900
    session_max_seconds: int = 8 * 3600  # a sign-in through an OpenID provider lasts at most this
    public_url: str | None = None  # how practitioners reach the broker; OpenID redirects come back here
    # token issuer id -> {"client_id": ..., "client_secret_env": NAME of the variable with its secret}
    oidc_clients: dict[str, dict[str, str]] = field(default_factory=dict)
    demo_identity_provider: Path | None = None  # demo only: folder of <authority>-idp.pem keys

    def __post_init__(self) -> None:
        coerce_paths(self, ("key", "trust_list", "trust_root", "audit_log", "tls_cert", "tls_key",
                            "tls_ca", "demo_identity_provider", "audit_commitment_key"))
        check_common(self, "broker")
        if not 0 < self.node_deadline_seconds <= 30:
            raise ValueError("node_deadline_seconds: expected more than 0 and at most 30")
        if not 10 <= self.query_lifetime_seconds <= 300:
            raise ValueError("query_lifetime_seconds: expected 10-300")
        if not 60 <= self.session_idle_seconds <= 3600:
            raise ValueError(f"session_idle_seconds: expected 60-3600, got {self.session_idle_seconds}")
        if not 900 <= self.session_max_seconds <= 12 * 3600:
            raise ValueError(f"session_max_seconds: expected 900-43200, got {self.session_max_seconds}")
        if self.oidc_clients and not self.public_url:
            raise ValueError("public_url: expected the broker's address (https://…) when oidc_clients is set")
        if self.public_url is not None and not self.public_url.startswith(("https://", "http://127.0.0.1",
                                                                              "http://localhost")):
            raise ValueError("public_url: expected an https URL (http on loopback only), "
                             f"got {self.public_url!r}")
        for issuer, client in self.oidc_clients.items():
            if not isinstance(client, dict) or not isinstance(client.get("client_id"), str):
                raise ValueError(f"oidc_clients.{issuer}.client_id: expected a string")
            unknown = set(client) - {"client_id", "client_secret_env"}
            if unknown:
                raise ValueError(f"oidc_clients.{issuer}: unknown setting(s) {sorted(unknown)}")

    @property
    def tls(self) -> TlsFiles | None:
        """The mutual-TLS files, or None when this broker talks plain HTTP (development only).

        With them the broker reaches nodes over mutual TLS and, unless ``serve_tls`` is false
        (loopback demo, or behind the authority's TLS proxy), serves practitioners over HTTPS.
        """
        if self.tls_cert is None or self.tls_key is None or self.tls_ca is None:
            return None
        return TlsFiles(cert=self.tls_cert, key=self.tls_key, ca=self.tls_ca)
