"""Creating a federation and changing its membership on disk.

A federation folder holds the governance keys (``governance/``), the pinned root
(``root.json``), the current signed trust list (``trustlist.json``) and, for members created
here, their private keys (``keys/<member>.pem``). In production each member keeps its own key
and governance keys live apart; this layout is for the demo, tests and small pilots.

Two ways to publish a change. For the demo and small pilots every change is signed at once with
every key under ``governance/``. For a real federation a change is written as a *draft*
(``trustlist.draft.json``, version already bumped, no signatures); each governance key holder
adds a signature with ``sign_draft`` on their own machine; ``publish_draft`` installs the draft
only when it verifies against the pinned root, with the threshold met (and, for a governance
root rotation, the new root's threshold met too).

Every governance root is published as ``roots/<n>.json`` (n = 1, 2, …): the trust-list version
that brought root ``n`` into force, signed by a threshold of the previous root and of the new
one. A party pinned to an old root walks these in order to catch up across several rotations
(``trust.rootchain``); publish the ``roots/`` folder wherever the trust list is published.
"""

from __future__ import annotations

import json
import tempfile
from collections.abc import Iterable, Mapping
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

from federation.errors import ConfigError
from federation.rules import DEFAULT_RATE_LIMITS, DEFAULT_RETENTION_AGE, PRACTITIONER_ROLES
from trust import keys as keyfiles
from trust import oidc_mapping, rootchain, trustlist
from trust.errors import SignatureError, TrustError
from trust.store import TrustStore, read_json
from trust.trustlist import DOCUMENT_TYPE, GovernanceRoot, TrustList, format_time, parse_time

DRAFT = "trustlist.draft.json"

DEFAULT_PURPOSES = (
    ("child_protection_enquiry", "Child protection enquiry (section 47)"),
    ("child_in_need_assessment", "Child in need assessment (section 17)"),
    ("early_help", "Early help assessment or support"),
    ("health_assessment", "Health assessment"),
    ("education_welfare", "Education welfare"),
    ("youth_justice", "Youth justice"),
)
DEFAULT_SENSITIVE = ("sexual_health", "substance_misuse")


def _write_json(path: Path, data: Any) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(path.name + ".tmp")
    tmp.write_text(json.dumps(data, indent=2, ensure_ascii=False) + "\n")
    tmp.replace(path)


def published_roots(folder: Path) -> int:
    """How many roots are published under ``roots/`` (1, 2, … without a gap)."""
    count = 0
    while (folder / rootchain.root_file(count + 1)).exists():
        count += 1
    return count


def _start_root_history(folder: Path) -> None:
    """A federation created before root history was kept starts it with the list in force."""
    if published_roots(folder) == 0 and (folder / "trustlist.json").exists():
        _write_json(folder / rootchain.root_file(1), read_json(folder / "trustlist.json"))


def _publish_root(folder: Path, document: Mapping[str, Any]) -> int:
    """Publish ``document`` (a list that names a new root) as the next ``roots/<n>.json``."""
    index = published_roots(folder) + 1
    _write_json(folder / rootchain.root_file(index), dict(document))
    return index


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
            "rate_limits": dict(DEFAULT_RATE_LIMITS),
            "retention_age": DEFAULT_RETENTION_AGE,
        },
    }
    document = trustlist.sign(signed, private)
    _write_json(folder / "trustlist.json", document)
    _publish_root(folder, document)
    return document


def load_signed(folder: Path) -> dict[str, Any]:
    data = json.loads((folder / "trustlist.json").read_text())
    return dict(data["signed"])


def lifetime(signed: Mapping[str, Any]) -> timedelta:
    """How long a list lasts from issue to expiry (what the next version keeps unless told)."""
    return parse_time(signed["expires"], "expires") - parse_time(signed["issued"], "issued")


def publish(
    folder: Path, signed: Mapping[str, Any], *, valid_days: float | None = None, now: datetime | None = None,
    signers: Iterable[Ed25519PrivateKey] | None = None, draft: bool = False,
) -> dict[str, Any]:
    """Publish the next version: bump the version, renew the dates, sign, write.

    The new version lasts ``valid_days`` from now, or, when not given, as long as the current
    version did from its issue (a list change never shortens or stretches the lifetime silently).

    With ``draft`` the next version is written unsigned to ``trustlist.draft.json`` for the
    governance key holders to sign in turn (``sign_draft``, then ``publish_draft``).
    """
    moment = now or datetime.now(UTC)
    updated = dict(signed)
    updated["version"] = int(signed["version"]) + 1
    updated["issued"] = format_time(moment)
    span = timedelta(days=valid_days) if valid_days is not None else lifetime(signed)
    updated["expires"] = format_time(moment + span)
    if draft:
        if (folder / DRAFT).exists():
            raise ConfigError(f"{folder / DRAFT}: a draft is already waiting for signatures; "
                              "publish or delete it first")
        document = {"signed": updated, "signatures": []}
        _write_json(folder / DRAFT, document)
        return document
    document = trustlist.sign(updated, list(signers) if signers is not None else governance_keys(folder))
    _write_json(folder / "trustlist.json", document)
    return document


def _draft(folder: Path) -> dict[str, Any]:
    if not (folder / DRAFT).exists():
        raise ConfigError(f"{folder / DRAFT}: no draft waiting for signatures")
    data = read_json(folder / DRAFT)
    if not isinstance(data, dict) or not isinstance(data.get("signed"), dict):
        raise ConfigError(f"{folder / DRAFT}: expected a trust-list document")
    return data


def sign_draft(folder: Path, key: Ed25519PrivateKey) -> dict[str, Any]:
    """Add one governance signature to the waiting draft."""
    document = trustlist.add_signatures(_draft(folder), [key])
    _write_json(folder / DRAFT, document)
    return document


def verify_file(path: Path, root_path: Path, *, now: datetime | None = None,
                unsafe_allow_expired: bool = False) -> TrustList:
    """Verify a trust-list file against a pinned root file (raises ``TrustError``).

    When the list names another root, the published roots beside it (``roots/<n>.json``) are
    walked from the pinned root first, as a party would, without changing any party's state.
    """
    moment = now or datetime.now(UTC)
    document = read_json(path)
    with tempfile.TemporaryDirectory() as scratch:
        walker = TrustStore(root_path, path, Path(scratch) / "state.json")
        reached = walker.catch_up(document, moment)
        try:
            return trustlist.verify(document, reached.root, moment, unsafe_allow_expired=unsafe_allow_expired)
        except SignatureError as exc:
            named = rootchain.offered_root(document)
            if named is None or rootchain.same_root(named, reached.root) or reached.index is None:
                raise
            raise rootchain.unreachable(document["signed"].get("version"), reached,
                                        walker.roots_location()) from exc


def publish_draft(folder: Path, *, now: datetime | None = None) -> TrustList:
    """Install the draft as the trust list, only if it verifies against the pinned root.

    Refuses (``TrustError``) a draft below the threshold, a root rotation not signed by both the
    old and the new governance keys, or a version not above the published one. On a root
    rotation ``root.json`` (what new members pin at enrolment) becomes the new root.
    """
    moment = now or datetime.now(UTC)
    document = _draft(folder)
    published = int(load_signed(folder)["version"])
    accepted = trustlist.verify(document, GovernanceRoot.from_json(read_json(folder / "root.json")),
                                moment, min_version=published + 1)
    rotates = accepted.governance.to_json() != read_json(folder / "root.json")
    if rotates:
        _start_root_history(folder)
    _write_json(folder / "trustlist.json", document)
    if rotates:
        _publish_root(folder, document)
        _write_json(folder / "root.json", accepted.governance.to_json())
    (folder / DRAFT).unlink()
    return accepted


def member_entry(
    member_id: str,
    name: str,
    roles: Iterable[str],
    key: Ed25519PrivateKey,
    *,
    endpoint: str | None = None,
    authority: str | None = None,
    contact: Mapping[str, str] | None = None,
    tls_fingerprint: str | None = None,
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
    if tls_fingerprint:
        entry["tls_fingerprint"] = tls_fingerprint
    return entry


def add_members(folder: Path, entries: Iterable[tuple[dict[str, Any], Ed25519PrivateKey]],
                *, valid_days: int | None = None, draft: bool = False) -> dict[str, Any]:
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
    return publish(folder, signed, valid_days=valid_days, draft=draft)


def remove_member(folder: Path, member_id: str, *, valid_days: int | None = None,
                  draft: bool = False) -> dict[str, Any]:
    signed = load_signed(folder)
    members = [m for m in signed.get("members", []) if m["id"] != member_id]
    if len(members) == len(signed.get("members", [])):
        raise ConfigError(f"member {member_id!r} is not in the trust list")
    signed["members"] = members
    return publish(folder, signed, valid_days=valid_days, draft=draft)


def _find(signed: Mapping[str, Any], member_id: str) -> dict[str, Any]:
    for member in signed.get("members", []):
        if member["id"] == member_id:
            return dict(member)
    raise ConfigError(f"member {member_id!r} is not in the trust list")


def _replace(signed: dict[str, Any], entry: dict[str, Any]) -> None:
    signed["members"] = [entry if m["id"] == entry["id"] else m for m in signed.get("members", [])]


def rotate_member_key(
    folder: Path, member_id: str, *, overlap_hours: float = 24, valid_days: int | None = None,
    now: datetime | None = None, draft: bool = False,
) -> tuple[str, dict[str, Any]]:
    """Give a member a new key, keeping its current keys valid for ``overlap_hours`` more.

    Signatures made with an old key still verify until its ``not_after``, so messages in flight
    and parties that have not yet switched keep working; after that only the new key verifies.
    The new private key replaces ``keys/<member>.pem``; the old one is kept beside it as
    ``keys/<member>.<kid>.pem``. For a draft the new key waits as ``keys/<member>.<kid>.pem``
    until the draft is published (a member must not sign with a key no list names yet).
    Returns the new key id and the document.
    """
    moment = now or datetime.now(UTC)
    signed = load_signed(folder)
    entry = _find(signed, member_id)
    retire = format_time(moment + timedelta(hours=overlap_hours))
    old_keys = []
    for k in entry.get("keys", []):
        k = dict(k)
        if not k.get("not_after") or k["not_after"] > retire:
            k["not_after"] = retire
        old_keys.append(k)
    new = keyfiles.generate()
    kid = keyfiles.key_id(new.public_key())
    old_keys.append({"kid": kid, "public_key": keyfiles.public_b64(new.public_key()),
                     "not_before": format_time(moment)})
    entry["keys"] = old_keys
    _replace(signed, entry)
    document = publish(folder, signed, valid_days=valid_days, now=moment, draft=draft)
    current = folder / "keys" / f"{member_id}.pem"
    if draft:
        keyfiles.save_private(new, current.with_name(f"{member_id}.{kid}.pem"))
        return kid, document
    if current.exists():
        old_kid = keyfiles.key_id(keyfiles.load_private(current).public_key())
        current.replace(current.with_name(f"{member_id}.{old_kid}.pem"))
    keyfiles.save_private(new, current)
    return kid, document


def revoke_key(folder: Path, member_id: str, kid: str, *, valid_days: int | None = None,
               draft: bool = False) -> dict[str, Any]:
    """Remove one key of a member at once (a lost or stolen key): no overlap."""
    signed = load_signed(folder)
    entry = _find(signed, member_id)
    keys = [k for k in entry.get("keys", []) if k.get("kid") != kid]
    if len(keys) == len(entry.get("keys", [])):
        raise ConfigError(f"member {member_id!r} has no key {kid!r}")
    entry["keys"] = keys
    _replace(signed, entry)
    return publish(folder, signed, valid_days=valid_days, draft=draft)


def bind_certificate(folder: Path, member_id: str, tls_fingerprint: str | None, *,
                     valid_days: int | None = None, draft: bool = False) -> dict[str, Any]:
    """Pin (or, with None, unpin) a member's TLS certificate fingerprint in the next version."""
    signed = load_signed(folder)
    entry = _find(signed, member_id)
    if tls_fingerprint:
        entry["tls_fingerprint"] = tls_fingerprint
    else:
        entry.pop("tls_fingerprint", None)
    _replace(signed, entry)
    return publish(folder, signed, valid_days=valid_days, draft=draft)


def set_oidc(folder: Path, member_id: str, oidc: Mapping[str, Any] | None, *,
             valid_days: int | None = None, draft: bool = False) -> dict[str, Any]:
    """Name (or, with None, remove) a token issuer's OpenID provider and claim mapping in the next version."""
    signed = load_signed(folder)
    entry = _find(signed, member_id)
    if "token_issuer" not in entry.get("roles", []):
        raise ConfigError(f"member {member_id!r} is not a token_issuer")
    if oidc is None:
        entry.pop("oidc", None)
    else:
        try:
            oidc_mapping.parse(oidc, "oidc", PRACTITIONER_ROLES)
        except TrustError as exc:
            raise ConfigError(str(exc)) from exc
        entry["oidc"] = dict(oidc)
    _replace(signed, entry)
    return publish(folder, signed, valid_days=valid_days, draft=draft)


def rotate_governance(
    folder: Path, *, keys: int, threshold: int, valid_days: int | None = None, now: datetime | None = None,
) -> dict[str, Any]:
    """Replace the governance keys: the next version names the new root and is signed by the
    old keys and the new ones (The Update Framework's rule), so every party can follow it.

    The new private keys replace ``governance/*.pem``; the old ones move to ``governance/retired/``
    (named with the time and the published root they belonged to, so none is overwritten).
    ``root.json`` becomes the new root for members enrolling from now on. The new version is also
    published as the next ``roots/<n>.json``, so a party that misses this rotation and the next
    one can still walk from its pinned root to the newest.
    """
    moment = now or datetime.now(UTC)
    old = governance_keys(folder)
    new = [keyfiles.generate() for _ in range(keys)]
    root = GovernanceRoot(threshold, {keyfiles.key_id(k.public_key()): k.public_key() for k in new})
    _start_root_history(folder)
    signed = load_signed(folder)
    signed["governance"] = root.to_json()
    document = publish(folder, signed, valid_days=valid_days, now=moment, signers=[*old, *new])
    index = _publish_root(folder, document)
    retired = folder / "governance" / "retired"
    retired.mkdir(parents=True, exist_ok=True)
    for path in sorted((folder / "governance").glob("*.pem")):  # keys of root index - 1
        path.replace(retired / f"{moment:%Y%m%dT%H%M%S}-root{index - 1}-{path.name}")
    for i, key in enumerate(new, start=1):
        keyfiles.save_private(key, folder / "governance" / f"governance-{i}.pem")
    _write_json(folder / "root.json", root.to_json())
    return document


__all__ = ["DRAFT", "TrustError", "add_members", "bind_certificate", "create", "publish",
           "publish_draft", "published_roots", "remove_member", "revoke_key", "rotate_governance",
           "rotate_member_key", "set_oidc", "sign_draft", "verify_file"]
