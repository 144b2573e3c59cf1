"""``signpost node init`` and ``signpost broker init``: a complete, commented config for a new member.

The file is JSON with whole-line ``//`` comments (the config loader skips them): every setting
the service has, each with what it means and its default, so an operator edits rather than
pieces a config together from ``--help``. Given the governance folder (``--federation``), the
paths point at the member's key, the trust list and its TLS files there, and the governance root
is copied beside the config (each service keeps its own copy: a state file is written beside it).
"""

from __future__ import annotations

import dataclasses
import json
import os
import shutil
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from broker.config import BrokerConfig
from federation.errors import ConfigError
from federation.rules import DEFAULT_RATE_LIMITS
from node.config import NodeConfig

_LIMITS = ", ".join(f"{k} {v}" for k, v in DEFAULT_RATE_LIMITS.items())

COMMON: dict[str, str] = {
    "id": "This member's id in the trust list.",
    "key": "The member's Ed25519 private key (PEM) as governance issued it; readable by this service only.",
    "trust_list": "The trust-list file. With trust_list_url set, the cache of the last accepted download.",
    "trust_root": "The governance root pinned when joining; a copy per service (a .state.json file is "
                  "written beside it). Never replace it by hand: root rotations are followed automatically.",
    "host": "Address to listen on.",
    "port": "Port to listen on.",
    "body_limit": "Largest request body accepted, in bytes.",
    "trust_refresh_seconds": "How often the trust list is re-read (or re-fetched); a revocation is in "
                             "force everywhere within this interval.",
    "trust_list_url": "The federation's publication point (https://…/trustlist.json), fetched every "
                      "trust_refresh_seconds; null reads trust_list only.",
    "tls_cert": "This member's TLS certificate from the federation CA (signpost federation tls DIR --id ID).",
    "tls_key": "Its private key.",
    "tls_ca": "The federation CA certificate. tls_cert, tls_key and tls_ca: all three (mutual TLS) or none "
              "(plain HTTP: development only).",
    "audit_log": "The append-only audit log (Merkle tree, signed checkpoints). Every query is logged here "
                 "before it is answered.",
    "checkpoint_interval_seconds": "How often a signed checkpoint of the audit log is written when it grew.",
    "unsafe_no_audit_log": "Development only: run with nothing logged. Leave false.",
    "unsafe_plain_http": "Development only: no mutual TLS between broker and nodes. Leave false.",
    "unsafe_accept_audit_log_reset": "Start on a non-empty audit log whose checkpoint is gone (after a "
                                     "restore you have investigated). Leave false.",
}

NODE: dict[str, str] = {
    **COMMON,
    "database": "The node's SQLite database (created on first import).",
    "signposting_contact": "Who practitioners contact about a shielded child: name, phone, secure_email. "
                           "Each overrides the trust list's contact for this member; {} uses the list's.",
    "audit_audience": "Audience of auditor tokens for /v1/log/* (the broker's audience).",
    "retention_age": "Age at which records are deleted; null follows the trust-list policy (24).",
    "purge_interval_seconds": "How often records past retention are purged.",
    "notify_retry_base_seconds": "First retry delay of a failed notify-on-access message.",
    "notify_retry_cap_seconds": "Longest delay between retries.",
    "notify_max_age_seconds": "A notification still undelivered after this long is given up (and logged).",
    "notify_timeout_seconds": "Deadline of one notification delivery.",
    "unsafe_http_webhooks": "Development only: deliver notifications to http:// URLs. Leave false.",
    "staff_host": "Address of the signposting officers' pages (a listener of their own).",
    "staff_port": "Port of the signposting officers' pages; null does not serve them.",
    "staff_idle_seconds": "An officer's session ends after this long without a request (60-3600).",
    "staff_audience": "Audience of pasted officer tokens (development sign-in); null: this node's id.",
    "staff_oidc_issuer": "The token issuer (trust-list member id, of this authority, with an oidc entry) "
                         "whose OpenID Connect provider signs signposting officers in. Required with "
                         "staff_port unless unsafe_staff_token_sign_in.",
    "staff_oidc_client_id": "This node's client id with that provider.",
    "staff_oidc_client_secret_env": "The environment variable holding the client secret.",
    "staff_public_url": "How officers reach the staff pages (https://…); the provider redirects back to "
                        "<staff_public_url>/sign-in/oidc/callback.",
    "staff_session_max_seconds": "The longest an officer's OpenID sign-in lasts (900-43200).",
    "unsafe_staff_token_sign_in": "Development only: officers paste a token instead of signing in "
                                  "through the provider. Leave false.",
    "notify_lead_on_match": "Tell the lead practitioner of a child when a search discloses a match: who "
                            "searched, their organisation, contact and purpose. false turns it off.",
    "notify_lead_on_check": "The same when an officer confirms a check. false turns it off.",
    "check_sweep_seconds": "How often checks past their expiry are deleted.",
}

BROKER: dict[str, str] = {
    **COMMON,
    "audience": "The audience practitioner tokens must name (aud).",
    "node_deadline_seconds": "Each node's deadline for one search; a node that misses it is reported "
                             "unavailable (0-30).",
    "query_lifetime_seconds": "Lifetime of a signed query (10-300).",
    "serve_tls": "true: serve practitioners over HTTPS with tls_cert; false: plain HTTP (loopback, or "
                 "behind your TLS proxy). Nodes are always reached over mutual TLS when the TLS files "
                 "are set.",
    "redis_url": "Redis for rate limits and web sessions shared by every broker replica "
                 "(redis://host:6379/0); null keeps both in this process (one broker only).",
    "redis_timeout_seconds": "Deadline of one Redis call; a Redis that does not answer stops searches (503).",
    "rate_limits": f"Overrides of the trust list's search budgets. The federation's defaults: {_LIMITS}. "
                   "Empty follows the trust list.",
    "audit_commitment_key": "Key of the salted identity commitments in the audit log; null keeps "
                            "audit-commitment.key beside audit_log.",
    "session_idle_seconds": "A web session ends after this long without a request (60-3600).",
    "session_max_seconds": "The longest an OpenID Connect sign-in lasts (900-43200).",
    "public_url": "How practitioners reach the broker (https://…); OpenID providers redirect back to "
                  "<public_url>/sign-in/oidc/callback. Required with oidc_clients.",
    "oidc_clients": "This broker's registration with each authority's OpenID provider: "
                    '{"<token issuer id>": {"client_id": "…", "client_secret_env": "SIGNPOST_OIDC_<NAME>"}}; '
                    "the secret is read from that environment variable.",
    "check_webhook_url": "Where the broker tells a practitioner that a check has news (a signed notice "
                         "with their email and the check's reference, nothing about the child); "
                         "https:// only; null sends none.",
    "check_poll_seconds": "How often the broker asks nodes about pending checks.",
    "check_ledger": "The SQLite file keeping checks and the searches a check may follow; null keeps "
                    "broker-checks.sqlite beside the audit log's folder. With redis_url they are kept "
                    "in Redis instead (shared by every replica).",
    "unsafe_http_webhooks": "Development only: allow an http:// check_webhook_url. Leave false.",
    "unsafe_demo_identity_provider": "Demo only: a folder of <authority>-idp.pem keys enabling the public "
                                     "demo sign-in. Never set it in production.",
}


def _relative(target: Path, folder: Path) -> str:
    return os.path.relpath(target.resolve(), folder.resolve())


def _commented(title: str, values: Mapping[str, Any], comments: Mapping[str, str]) -> str:
    lines = [f"// {line}" for line in title.splitlines()]
    lines.append("{")
    items = list(values.items())
    for i, (name, value) in enumerate(items):
        for part in _wrap(comments.get(name, "")):
            lines.append(f"  // {part}")
        comma = "," if i < len(items) - 1 else ""
        lines.append(f"  {json.dumps(name)}: {json.dumps(value, ensure_ascii=False)}{comma}")
    lines.append("}")
    return "\n".join(lines) + "\n"


def _wrap(text: str, width: int = 96) -> list[str]:
    words, lines, line = text.split(), [], ""
    for word in words:
        if line and len(line) + 1 + len(word) > width:
            lines.append(line)
            line = word
        else:
            line = f"{line} {word}".strip()
    return [*lines, line] if line else lines


def _defaults(cls: type[Any]) -> dict[str, Any]:
    values: dict[str, Any] = {}
    for f in dataclasses.fields(cls):
        if f.default is not dataclasses.MISSING:
            values[f.name] = f.default
        elif f.default_factory is not dataclasses.MISSING:
            values[f.name] = f.default_factory()
    return values


def _from_federation(folder: Path, member_id: str, federation: Path | None) -> dict[str, Any]:
    """Paths to the member's files in the governance folder; the root copied beside the config."""
    if federation is None:
        return {"key": f"{member_id}.pem", "trust_list": "trustlist.json", "trust_root": "root.json",
                "tls_cert": None, "tls_key": None, "tls_ca": None}
    for needed in ("root.json", "trustlist.json", f"keys/{member_id}.pem"):
        if not (federation / needed).exists():
            raise ConfigError(f"--federation: {federation / needed} does not exist")
    shutil.copyfile(federation / "root.json", folder / "root.json")
    tls_dir = federation / "tls"
    tls_files = [tls_dir / f"{member_id}.pem", tls_dir / f"{member_id}.key", tls_dir / "ca.pem"]
    with_tls = all(p.exists() for p in tls_files)
    return {"key": _relative(federation / "keys" / f"{member_id}.pem", folder),
            "trust_list": _relative(federation / "trustlist.json", folder), "trust_root": "root.json",
            **dict(zip(("tls_cert", "tls_key", "tls_ca"),
                       [_relative(p, folder) if with_tls else None for p in tls_files], strict=True))}


def _write(path: Path, text: str, force: bool) -> Path:
    if path.exists() and not force:
        raise ConfigError(f"{path} already exists; remove it or give --force")
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(text)
    return path


def node_config(folder: Path, member_id: str, *, federation: Path | None = None, port: int = 8701,
                host: str = "127.0.0.1", trust_list_url: str | None = None, force: bool = False) -> Path:
    """Write ``folder/node.json``: every node setting, commented; return its path."""
    folder.mkdir(parents=True, exist_ok=True)
    values = _defaults(NodeConfig)
    values.update(id=member_id, database="node.sqlite3", host=host, port=port, trust_list_url=trust_list_url,
                  audit_log="audit.log", signposting_contact={})
    values.update(_from_federation(folder, member_id, federation))
    ordered = {f.name: values[f.name] for f in dataclasses.fields(NodeConfig)}
    title = (f"Signpost node configuration for {member_id!r} (signpost node init).\n"
             "JSON with whole-line // comments. Paths are relative to this file. Every setting can also\n"
             "be set by an environment variable SIGNPOST_<SETTING> (e.g. SIGNPOST_PORT), which wins.")
    return _write(folder / "node.json", _commented(title, ordered, NODE), force)


def broker_config(folder: Path, member_id: str, *, federation: Path | None = None, port: int = 8700,
                  host: str = "127.0.0.1", trust_list_url: str | None = None, redis_url: str | None = None,
                  public_url: str | None = None, force: bool = False) -> Path:
    """Write ``folder/broker.json``: every broker setting, commented; return its path."""
    folder.mkdir(parents=True, exist_ok=True)
    values = _defaults(BrokerConfig)
    values.update(id=member_id, host=host, port=port, trust_list_url=trust_list_url, audit_log="audit.log",
                  redis_url=redis_url, public_url=public_url, serve_tls=False)
    values.update(_from_federation(folder, member_id, federation))
    ordered = {f.name: values[f.name] for f in dataclasses.fields(BrokerConfig)}
    title = (f"Signpost broker configuration for {member_id!r} (signpost broker init).\n"
             "JSON with whole-line // comments. Paths are relative to this file. Every setting can also\n"
             "be set by an environment variable SIGNPOST_<SETTING> (e.g. SIGNPOST_REDIS_URL), which wins.")
    return _write(folder / "broker.json", _commented(title, ordered, BROKER), force)


__all__ = ["broker_config", "node_config"]
