"""The broker's settings: one frozen dataclass, loaded from a JSON file."""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

from federation.config import check_closed, check_common, coerce_paths
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
    node_channel: bool = True  # one WebSocket per node (GET /v1/channel); false: POST /v1/query only
    max_searches_in_flight: int = 32  # beyond this a search is refused at once (503, broker-overloaded)
    max_loop_lag_seconds: float = 1.0  # ... and while the event loop runs this late (moving average)
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
    check_webhook_url: str | None = None  # told (signed, no child details) when a check has an answer
    check_poll_seconds: float = 30  # how often the broker asks nodes about pending checks
    check_ledger: Path | None = None  # searches and checks (SQLite); default: beside audit_log
    checkpoint_interval_seconds: float = 10  # sign a checkpoint this often when the log grew
    # Closed by default: each of these opens a door and says so in its name.
    unsafe_demo_identity_provider: Path | None = None  # demo sign-in: folder of <authority>-idp.pem keys
    unsafe_no_audit_log: bool = False  # search with nothing logged (development only)
    unsafe_plain_http: bool = False  # reach nodes without mutual TLS (development only)
    unsafe_http_webhooks: bool = False  # allow an http:// check_webhook_url (development only)
    unsafe_accept_audit_log_reset: bool = False  # start on a non-empty log whose checkpoint is gone

    def __post_init__(self) -> None:
        coerce_paths(self, ("key", "trust_list", "trust_root", "audit_log", "tls_cert", "tls_key",
                            "tls_ca", "unsafe_demo_identity_provider", "audit_commitment_key",
                            "check_ledger"))
        check_common(self, "broker")
        check_closed(self, "broker")
        if not 0.05 <= self.checkpoint_interval_seconds <= 3600:
            raise ValueError("checkpoint_interval_seconds: expected 0.05-3600, "
                             f"got {self.checkpoint_interval_seconds}")
        if not 0 < self.node_deadline_seconds <= 30:
            raise ValueError("node_deadline_seconds: expected more than 0 and at most 30")
        if self.max_searches_in_flight < 1:
            raise ValueError("max_searches_in_flight: expected at least 1")
        if not 0 < self.max_loop_lag_seconds <= 10:
            raise ValueError("max_loop_lag_seconds: expected more than 0 and at most 10")
        if not 10 <= self.query_lifetime_seconds <= 300:
            raise ValueError("query_lifetime_seconds: expected 10-300")
        if not 0.05 <= self.check_poll_seconds <= 3600:
            raise ValueError(f"check_poll_seconds: expected 0.05-3600, got {self.check_poll_seconds}")
        hook = self.check_webhook_url
        if hook is not None:
            plain = hook.startswith("http://")
            if not hook.startswith("https://") and not plain:
                raise ValueError(f"check_webhook_url: expected an https:// URL, got {hook!r}")
            if plain and not self.unsafe_http_webhooks:
                raise ValueError("check_webhook_url: expected an https:// URL (a notice names a "
                                 "practitioner's email); set unsafe_http_webhooks to allow http:// "
                                 "(development only)")
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
    def check_ledger_path(self) -> Path | None:
        """Where checks are kept: ``check_ledger``, else beside the audit log; ``None`` keeps them in
        memory (only without an audit log, which is development only)."""
        if self.check_ledger is not None:
            return self.check_ledger
        return self.audit_log.parent / "broker-checks.sqlite" if self.audit_log is not None else None

    @property
    def tls(self) -> TlsFiles | None:
        """The mutual-TLS files, or None when this broker talks plain HTTP (development only).

        With them the broker reaches nodes over mutual TLS and, unless ``serve_tls`` is false
        (loopback demo, or behind the authority's TLS proxy), serves practitioners over HTTPS.
        """
        if self.tls_cert is None or self.tls_key is None or self.tls_ca is None:
            return None
        return TlsFiles(cert=self.tls_cert, key=self.tls_key, ca=self.tls_ca)
