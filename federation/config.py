"""Loading a service's frozen config dataclass from a JSON file."""

from __future__ import annotations

import dataclasses
import json
from pathlib import Path
from typing import Any, TypeVar

from federation.errors import ConfigError

T = TypeVar("T")

RENAMED = {"demo_identity_provider": "unsafe_demo_identity_provider"}
"""Settings renamed to say they are unsafe: a file using the old name is refused, not ignored."""


def load(cls: type[T], path: Path) -> T:
    """Build ``cls`` (a dataclass) from a JSON file; relative paths resolve against the file."""
    try:
        data = json.loads(path.read_text())
    except (OSError, json.JSONDecodeError) as exc:
        raise ConfigError(f"{path}: cannot read config: {exc}") from exc
    if not isinstance(data, dict):
        raise ConfigError(f"{path}: expected a JSON object")
    fields = {f.name: f for f in dataclasses.fields(cls)}  # type: ignore[arg-type]
    unknown = set(data) - set(fields)
    for old, new in RENAMED.items():
        if old in unknown:
            raise ConfigError(f"{path}: {old}: renamed {new} (it is unsafe outside a demo)")
    if unknown:
        raise ConfigError(f"{path}: unknown setting(s) {sorted(unknown)}")
    values: dict[str, Any] = {}
    for name, value in data.items():
        declared = str(fields[name].type)
        _check_type(path, name, declared, value)
        if declared in ("Path", "Path | None") and value is not None:
            value = (path.parent / value).resolve()
        values[name] = value
    try:
        return cls(**values)
    except (TypeError, ValueError) as exc:
        raise ConfigError(f"{path}: {exc}") from exc


# The JSON types a setting of each simple declared type accepts (other types are checked by the
# dataclass itself).
_JSON_TYPES: dict[str, tuple[tuple[type, ...], str]] = {
    "int": ((int,), "an integer"),
    "float": ((int, float), "a number"),
    "str": ((str,), "a string"),
    "bool": ((bool,), "true or false"),
    "Path": ((str,), "a file path"),
}


def _check_type(path: Path, name: str, declared: str, value: Any) -> None:
    optional = declared.endswith(" | None")
    base = declared.removesuffix(" | None")
    if value is None:
        if not optional:
            raise ConfigError(f"{path}: {name}: expected a value, got null")
        return
    if base not in _JSON_TYPES:
        return
    accepted, wanted = _JSON_TYPES[base]
    if not isinstance(value, accepted) or (base != "bool" and isinstance(value, bool)):
        raise ConfigError(f"{path}: {name}: expected {wanted}, got {json.dumps(value)}")


def coerce_paths(config: Any, names: tuple[str, ...]) -> None:
    """In a frozen dataclass's ``__post_init__``: turn string settings ``names`` into ``Path``."""
    for name in names:
        value = getattr(config, name)
        if isinstance(value, str):
            object.__setattr__(config, name, Path(value))


def check_common(config: Any, role: str) -> None:
    """Rules every service's config shares: its member id, all-or-none TLS files, refresh interval."""
    if not config.id:
        raise ValueError(f"id: expected the {role}'s member id in the trust list")
    tls = [config.tls_cert, config.tls_key, config.tls_ca]
    if any(v is not None for v in tls) and not all(v is not None for v in tls):
        raise ValueError("tls_cert, tls_key, tls_ca: expected all three (mutual TLS) or none")
    if not 0.05 <= config.trust_refresh_seconds <= 86400:
        raise ValueError(f"trust_refresh_seconds: expected 0.05-86400, got {config.trust_refresh_seconds}")


def check_closed(config: Any, role: str) -> None:
    """Closed by default: a service that cannot log, or talks without mutual TLS, refuses to start.

    Each refusal names the setting at fault and the ``unsafe_...`` setting that would allow it
    (development and loopback tests only).
    """
    if config.audit_log is None and not config.unsafe_no_audit_log:
        raise ValueError(f"audit_log: expected the {role}'s audit log folder (a {role} that cannot "
                         "log must not answer); set unsafe_no_audit_log to run without one "
                         "(development only)")
    tls = (config.tls_cert, config.tls_key, config.tls_ca)
    if any(v is None for v in tls) and not config.unsafe_plain_http:
        raise ValueError(f"tls_cert, tls_key, tls_ca: expected the {role}'s mutual TLS files; set "
                         "unsafe_plain_http to run without TLS (development only)")


def describe(cls: type[Any]) -> str:
    """One line per setting with its default, for ``--help``."""
    lines = []
    for f in dataclasses.fields(cls):
        if f.default is not dataclasses.MISSING:
            default = repr(f.default)
        elif f.default_factory is not dataclasses.MISSING:
            default = repr(f.default_factory())
        else:
            default = "(required)"
        lines.append(f"  {f.name:<24} {default}")
    return "\n".join(lines)


def dump(config: Any, path: Path) -> None:
    """Write a config dataclass as JSON (paths as strings)."""
    data = {
        k: str(v) if isinstance(v, Path) else v for k, v in dataclasses.asdict(config).items()
    }
    path.write_text(json.dumps(data, indent=2) + "\n")
