"""Creating a federation and changing its membership on disk.

A federation folder holds the governance keys (``governance/``), the pinned root
(``root.json``), the current signed trust list (``trustlist.json``) and, for members created
here, their private keys (``keys/<member>.pem``). In production each member keeps its own key
and governance keys live apart; this layout is for the demo, tests and small pilots.
"""

from __future__ import annotations

import json
from collections.abc import Iterable, Mapping
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

from federation.errors import ConfigError
from trust import keys as keyfiles
from trust import trustlist
from trust.trustlist import DOCUMENT_TYPE, GovernanceRoot, format_time

DEFAULT_PURPOSES = (
    ("child_protection_enquiry", "Child protection enquiry (section 47)"),
    ("child_in_need_assessment", "Child in need assessment (section 17)"),
    ("early_help", "Early help assessment or support"),
    ("health_assessment", "Health assessment"),
    ("education_welfare", "Education welfare"),
    ("youth_justice", "Youth justice"),
)
DEFAULT_SENSITIVE = ("sexual_health", "substance_misuse")
DEFAULT_RATE_LIMITS = {
    "practitioner_per_minute": 30,
    "practitioner_per_day": 300,
    "organisation_per_minute": 600,
    "organisation_per_day": 20000,
}


def _write_json(path: Path, data: Any) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(path.name + ".tmp")
    tmp.write_text(json.dumps(data, indent=2, ensure_ascii=False) + "\n")
    tmp.replace(path)


def governance_keys(folder: Path) -> list[Ed25519PrivateKey]:
    return [keyfiles.load_private(p) for p in sorted((folder / "governance").glob("*.pem"))]


def create(
    folder: Path,
    name: str,
    *,
    governance: int = 1,
    threshold: int = 1,
    valid_days: int = 30,
    now: datetime | None = None,
) -> dict[str, Any]:
    """Create a federation folder with fresh governance keys and an empty, signed trust list."""
    if (folder / "trustlist.json").exists():
        raise ConfigError(f"{folder}: a federation already exists here")
    moment = now or datetime.now(UTC)
    private = [keyfiles.generate() for _ in range(governance)]
    for i, key in enumerate(private, start=1):
        keyfiles.save_private(key, folder / "governance" / f"governance-{i}.pem")
    root = GovernanceRoot(threshold, {keyfiles.key_id(k.public_key()): k.public_key() for k in private})
    _write_json(folder / "root.json", root.to_json())
    signed = {
        "type": DOCUMENT_TYPE,
        "federation": name,
        "version": 1,
        "issued": format_time(moment),
        "expires": format_time(moment + timedelta(days=valid_days)),
        "governance": root.to_json(),
        "members": [],
        "policy": {
            "purposes": [{"code": c, "label": label} for c, label in DEFAULT_PURPOSES],
            "sensitive_categories": list(DEFAULT_SENSITIVE),
            "rate_limits": DEFAULT_RATE_LIMITS,
            "retention_age": 24,
        },
    }
    document = trustlist.sign(signed, private)
    _write_json(folder / "trustlist.json", document)
    return document


def load_signed(folder: Path) -> dict[str, Any]:
    data = json.loads((folder / "trustlist.json").read_text())
    return dict(data["signed"])


def publish(
    folder: Path, signed: Mapping[str, Any], *, valid_days: int = 30, now: datetime | None = None,
    signers: Iterable[Ed25519PrivateKey] | None = None,
) -> dict[str, Any]:
    """Publish the next version: bump the version, renew the dates, sign, write."""
    moment = now or datetime.now(UTC)
    updated = dict(signed)
    updated["version"] = int(signed["version"]) + 1
    updated["issued"] = format_time(moment)
    updated["expires"] = format_time(moment + timedelta(days=valid_days))
    document = trustlist.sign(updated, list(signers) if signers is not None else governance_keys(folder))
    _write_json(folder / "trustlist.json", document)
    return document


def member_entry(
    member_id: str,
    name: str,
    roles: Iterable[str],
    key: Ed25519PrivateKey,
    *,
    endpoint: str | None = None,
    authority: str | None = None,
    contact: Mapping[str, str] | None = None,
) -> dict[str, Any]:
    public = key.public_key()
    entry: dict[str, Any] = {
        "id": member_id,
        "name": name,
        "roles": sorted(roles),
        "keys": [{"kid": keyfiles.key_id(public), "public_key": keyfiles.public_b64(public)}],
    }
    if endpoint:
        entry["endpoint"] = endpoint
    if authority:
        entry["authority"] = authority
    if contact:
        entry["contact"] = dict(contact)
    return entry


def add_members(folder: Path, entries: Iterable[tuple[dict[str, Any], Ed25519PrivateKey]],
                *, valid_days: int = 30) -> dict[str, Any]:
    """Add members (entry, private key) in one new version; keys saved under ``keys/``."""
    signed = load_signed(folder)
    members = list(signed.get("members", []))
    existing = {m["id"] for m in members}
    for entry, key in entries:
        if entry["id"] in existing:
            raise ConfigError(f"member {entry['id']!r} already exists")
        keyfiles.save_private(key, folder / "keys" / f"{entry['id']}.pem")
        members.append(entry)
        existing.add(entry["id"])
    signed["members"] = members
    return publish(folder, signed, valid_days=valid_days)


def remove_member(folder: Path, member_id: str, *, valid_days: int = 30) -> dict[str, Any]:
    signed = load_signed(folder)
    members = [m for m in signed.get("members", []) if m["id"] != member_id]
    if len(members) == len(signed.get("members", [])):
        raise ConfigError(f"member {member_id!r} is not in the trust list")
    signed["members"] = members
    return publish(folder, signed, valid_days=valid_days)
