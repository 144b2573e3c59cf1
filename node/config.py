"""The node's settings: one frozen dataclass, loaded from a JSON file."""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path


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
    trust_refresh_seconds: int = 60
    signposting_contact: dict[str, str] = field(default_factory=dict)
    audit_log: Path | None = None

    def __post_init__(self) -> None:
        for name in ("database", "key", "trust_list", "trust_root", "audit_log"):
            value = getattr(self, name)
            if isinstance(value, str):
                object.__setattr__(self, name, Path(value))
        if not self.id:
            raise ValueError("id: expected the node's member id in the trust list")
        if not 0 <= self.port < 65536:
            raise ValueError(f"port: expected 0-65535, got {self.port}")
