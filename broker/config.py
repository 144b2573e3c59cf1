"""The broker's settings: one frozen dataclass, loaded from a JSON file."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path


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
    trust_refresh_seconds: int = 60
    redis_url: str | None = None
    audit_log: Path | None = None

    def __post_init__(self) -> None:
        for name in ("key", "trust_list", "trust_root", "audit_log"):
            value = getattr(self, name)
            if isinstance(value, str):
                object.__setattr__(self, name, Path(value))
        if not self.id:
            raise ValueError("id: expected the broker's member id in the trust list")
        if not 0 < self.node_deadline_seconds <= 30:
            raise ValueError("node_deadline_seconds: expected more than 0 and at most 30")
        if not 10 <= self.query_lifetime_seconds <= 300:
            raise ValueError("query_lifetime_seconds: expected 10-300")
