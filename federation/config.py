"""Loading a service's frozen config dataclass from a JSON file and the environment.

Every setting can come from the file or from an environment variable ``SIGNPOST_<SETTING>``
(upper case: ``SIGNPOST_PORT``, ``SIGNPOST_REDIS_URL``); the environment wins, so a container
can keep one file and change what differs per deployment. Each value is checked against the
setting's declared type (integers, numbers, strings, true/false, paths, and maps or lists of
those) and every mistake is a ``ConfigError`` naming where it came from and the setting.
Relative paths resolve against the file's folder (from the environment: the working folder).
Files may carry whole-line ``//`` comments (``signpost node init`` writes them).
"""

from __future__ import annotations

import dataclasses
import json
import os
import types
import typing
from collections.abc import Mapping
from pathlib import Path
from typing import Any, TypeVar, Union

from federation.errors import ConfigError

T = TypeVar("T")
ENV_PREFIX = "SIGNPOST_"

RENAMED = {"demo_identity_provider": "unsafe_demo_identity_provider"}
"""Settings renamed to say they are unsafe: a file using the old name is refused, not ignored."""


def env_name(setting: str) -> str:
    """The environment variable that sets ``setting``."""
    return ENV_PREFIX + setting.upper()


def load(cls: type[T], path: Path, environ: Mapping[str, str] | None = None) -> T:
    """Build ``cls`` (a dataclass) from a JSON file, then ``SIGNPOST_…`` variables over it."""
    try:
        data = json.loads(strip_comments(path.read_text()))
    except (OSError, json.JSONDecodeError) as exc:
        raise ConfigError(f"{path}: cannot read config: {exc}") from exc
    if not isinstance(data, dict):
        raise ConfigError(f"{path}: expected a JSON object")
    fields = {f.name: f for f in dataclasses.fields(cls)}  # type: ignore[arg-type]
    hints = typing.get_type_hints(cls)
    unknown = set(data) - set(fields)
    for old, new in RENAMED.items():
        if old in unknown:
            raise ConfigError(f"{path}: {old}: renamed {new} (it is unsafe outside a demo)")
    if unknown:
        raise ConfigError(f"{path}: unknown setting(s) {sorted(unknown)}")
    values: dict[str, Any] = {}
    for name, value in data.items():
        values[name] = _checked(f"{path}: {name}", hints[name], value, path.parent)
    env = os.environ if environ is None else environ
    for name in fields:
        raw = env.get(env_name(name))
        if raw is not None:
            where = f"{path}: {name} (from {env_name(name)})"
            values[name] = _checked(where, hints[name], _from_text(where, hints[name], raw), Path.cwd())
    try:
        return cls(**values)
    except (TypeError, ValueError) as exc:
        raise ConfigError(f"{path}: {exc}") from exc


def strip_comments(text: str) -> str:
    """JSON with whole-line ``//`` comments as plain JSON (line numbers kept for error messages)."""
    return "\n".join("" if line.lstrip().startswith("//") else line for line in text.splitlines())


def _optional(declared: Any) -> tuple[Any, bool]:
    """``X | None`` as (X, True); anything else as (it, False)."""
    if typing.get_origin(declared) in (Union, types.UnionType):
        args = [a for a in typing.get_args(declared) if a is not type(None)]
        if len(args) == 1 and len(typing.get_args(declared)) == 2:
            return args[0], True
    return declared, False


def _from_text(where: str, declared: Any, raw: str) -> Any:
    """An environment variable's text as the JSON value the setting's type expects."""
    base, optional = _optional(declared)
    if optional and raw == "":
        return None
    if base in (str, Path):
        return raw
    if base is bool:
        lowered = raw.strip().lower()
        if lowered in ("true", "1", "yes"):
            return True
        if lowered in ("false", "0", "no"):
            return False
        raise ConfigError(f"{where}: expected true or false, got {raw!r}")
    try:
        return json.loads(raw)
    except json.JSONDecodeError:
        raise ConfigError(f"{where}: expected {_wanted(base)}, got {raw!r}") from None


def _wanted(declared: Any) -> str:
    base, _ = _optional(declared)
    simple = {int: "an integer", float: "a number", str: "a string", bool: "true or false",
              Path: "a file path"}
    if base in simple:
        return simple[base]
    origin = typing.get_origin(base)
    if origin is dict:
        return f"an object of {_wanted(typing.get_args(base)[1]).removeprefix('an ').removeprefix('a ')}s"
    if origin in (list, tuple):
        return "a list"
    return str(base)


def _checked(where: str, declared: Any, value: Any, base_dir: Path) -> Any:
    """``value`` if it fits ``declared`` (paths resolved against ``base_dir``); else ``ConfigError``."""
    base, optional = _optional(declared)
    if value is None:
        if not optional:
            raise ConfigError(f"{where}: expected a value, got null")
        return None
    wrong = ConfigError(f"{where}: expected {_wanted(base)}, got {json.dumps(value)}")
    if base is bool:
        if not isinstance(value, bool):
            raise wrong
        return value
    if base is int:
        if not isinstance(value, int) or isinstance(value, bool):
            raise wrong
        return value
    if base is float:
        if not isinstance(value, int | float) or isinstance(value, bool):
            raise wrong
        return value
    if base is str:
        if not isinstance(value, str):
            raise wrong
        return value
    if base is Path:
        if not isinstance(value, str) or not value:
            raise wrong
        return (base_dir / value).resolve()
    origin = typing.get_origin(base)
    if origin is dict:
        if not isinstance(value, dict):
            raise wrong
        key_type, item_type = typing.get_args(base)
        return {k: _checked(f"{where}.{k}", item_type, v, base_dir) for k, v in value.items()
                if _checked(f"{where} key", key_type, k, base_dir) is not None}
    if origin in (list, tuple):
        if not isinstance(value, list):
            raise wrong
        item_type = typing.get_args(base)[0]
        items = [_checked(f"{where}[{i}]", item_type, v, base_dir) for i, v in enumerate(value)]
        return tuple(items) if origin is tuple else items
    return value


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
    """One line per setting with its default, for ``--help`` (each also ``SIGNPOST_<SETTING>``)."""
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
