"""The node's settings: one frozen dataclass, loaded from a JSON file."""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

from federation.config import check_closed, check_common, coerce_paths
from trust.tls import TlsFiles


@dataclass(frozen=True)
class NodeConfig:
    """Everything a node needs to run. Paths in the file are relative to the file."""

    id: str
    database: Path
    key: Path
    trust_list: Path
    trust_root: Path
    host: str = "127.0.0.1"
    port: int = 8701
    body_limit: int = 64 * 1024
    trust_refresh_seconds: float = 60
    trust_list_url: str | None = None
    tls_cert: Path | None = None
    tls_key: Path | None = None
    tls_ca: Path | None = None
    signposting_contact: dict[str, str] = field(default_factory=dict)
    audit_log: Path | None = None
    audit_audience: str = "signpost-broker"  # auditor tokens for /v1/log/* (the broker's audience)
    retention_age: int | None = None  # default: the trust-list policy's
    purge_interval_seconds: float = 3600
    notify_retry_base_seconds: float = 5
    notify_retry_cap_seconds: float = 3600
    notify_max_age_seconds: float = 3 * 86400
    notify_timeout_seconds: float = 10
    busy_timeout_seconds: float = 2.0  # a store locked longer than this: 503 node-busy
    index_poll_seconds: float = 1.0  # how often the node looks for a new import (or a new day)
    checkpoint_interval_seconds: float = 10  # sign a checkpoint this often when the log grew
    # Closed by default: each of these opens a door and says so in its name.
    unsafe_no_audit_log: bool = False  # answer with nothing logged (development only)
    unsafe_plain_http: bool = False  # serve without mutual TLS (development only)
    unsafe_http_webhooks: bool = False  # deliver notifications to http:// URLs (development only)
    unsafe_accept_audit_log_reset: bool = False  # start on a non-empty log whose checkpoint is gone
    staff_host: str = "127.0.0.1"
    staff_port: int | None = None  # the signposting officers' pages (node/staff.py); None: not served
    staff_audience: str | None = None  # officers' token audience; default: this node's id
    staff_idle_seconds: int = 900
    # Officers sign in through their council's OpenID Connect provider: the token issuer in the
    # trust list whose ``oidc`` entry names it (its ``authority`` must be this node), this node's
    # client registration with it, and the address officers use (the provider redirects back to
    # <staff_public_url>/sign-in/oidc/callback).
    staff_oidc_issuer: str | None = None
    staff_oidc_client_id: str | None = None
    staff_oidc_client_secret_env: str | None = None  # the variable holding the client secret
    staff_public_url: str | None = None
    staff_session_max_seconds: int = 8 * 3600  # an officer's OpenID sign-in lasts at most this
    unsafe_staff_token_sign_in: bool = False  # officers paste a token (development and tests only)
    notify_lead_on_check: bool = True  # tell the lead practitioner when a check discloses a match
    notify_lead_on_match: bool = True  # tell the lead practitioner when a search discloses a match
    check_sweep_seconds: float = 300  # how often expired checks are deleted

    def __post_init__(self) -> None:
        coerce_paths(self, ("database", "key", "trust_list", "trust_root", "audit_log",
                            "tls_cert", "tls_key", "tls_ca"))
        check_common(self, "node")
        check_closed(self, "node")
        if not 0.05 <= self.checkpoint_interval_seconds <= 3600:
            raise ValueError("checkpoint_interval_seconds: expected 0.05-3600, "
                             f"got {self.checkpoint_interval_seconds}")
        if self.retention_age is not None and not 18 <= self.retention_age <= 120:
            raise ValueError(f"retention_age: expected 18-120, got {self.retention_age}")
        if not 0.05 <= self.purge_interval_seconds <= 86400:
            raise ValueError(
                f"purge_interval_seconds: expected 0.05-86400, got {self.purge_interval_seconds}")
        if not 0 < self.notify_retry_base_seconds <= self.notify_retry_cap_seconds:
            raise ValueError("notify_retry_base_seconds: expected more than 0 and at most "
                             f"notify_retry_cap_seconds, got {self.notify_retry_base_seconds}")
        if not 0.01 <= self.busy_timeout_seconds <= 60:
            raise ValueError(f"busy_timeout_seconds: expected 0.01-60, got {self.busy_timeout_seconds}")
        if not 0.01 <= self.index_poll_seconds <= 3600:
            raise ValueError(f"index_poll_seconds: expected 0.01-3600, got {self.index_poll_seconds}")
        if self.staff_port is not None and not 0 <= self.staff_port < 65536:
            raise ValueError(f"staff_port: expected 0-65535, got {self.staff_port}")
        if not 60 <= self.staff_idle_seconds <= 3600:
            raise ValueError(f"staff_idle_seconds: expected 60-3600, got {self.staff_idle_seconds}")
        self._check_staff_sign_in()
        if not 0.05 <= self.check_sweep_seconds <= 86400:
            raise ValueError(f"check_sweep_seconds: expected 0.05-86400, got {self.check_sweep_seconds}")
        if not 0 <= self.port < 65536:
            raise ValueError(f"port: expected 0-65535, got {self.port}")

    def _check_staff_sign_in(self) -> None:
        if self.staff_oidc_issuer is not None:
            if not self.staff_oidc_client_id:
                raise ValueError("staff_oidc_client_id: expected this node's client id with the officers' "
                                 "OpenID provider (staff_oidc_issuer is set)")
            if not self.staff_public_url:
                raise ValueError("staff_public_url: expected the staff pages' address (https://…) when "
                                 "staff_oidc_issuer is set")
        if self.staff_public_url is not None and not self.staff_public_url.startswith(
                ("https://", "http://127.0.0.1", "http://localhost")):
            raise ValueError("staff_public_url: expected an https URL (http on loopback only), "
                             f"got {self.staff_public_url!r}")
        if not 900 <= self.staff_session_max_seconds <= 12 * 3600:
            raise ValueError("staff_session_max_seconds: expected 900-43200, "
                             f"got {self.staff_session_max_seconds}")
        no_sign_in = self.staff_oidc_issuer is None and not self.unsafe_staff_token_sign_in
        if self.staff_port is not None and no_sign_in:
            raise ValueError("staff_oidc_issuer: expected the officers' OpenID Connect provider (a token "
                             "issuer in the trust list) when staff_port is set; set "
                             "unsafe_staff_token_sign_in to let officers paste a token (development only)")

    @property
    def tls(self) -> TlsFiles | None:
        """The mutual-TLS files, or None when this node serves plain HTTP (development only)."""
        if self.tls_cert is None or self.tls_key is None or self.tls_ca is None:
            return None
        return TlsFiles(cert=self.tls_cert, key=self.tls_key, ca=self.tls_ca)
