"""``signpost federation ...`` (create a federation, manage its trust list) and ``signpost status``."""

from __future__ import annotations

import argparse
import asyncio
import json
import ssl
import sys
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from federation.errors import SignpostError
from federation.tools import provision, status
from trust import keys as keyfiles
from trust import tls
from trust.store import read_json
from trust.trustlist import GovernanceRoot, verify


def cmd_federation_create(args: argparse.Namespace) -> int:
    provision.create(Path(args.dir), args.name, governance=args.governance_keys,
                     threshold=args.threshold, valid_days=args.valid_days)
    print(f"Created federation {args.name!r} in {args.dir} "
          f"({args.governance_keys} governance key(s), threshold {args.threshold}).")
    return 0


def cmd_federation_add(args: argparse.Namespace) -> int:
    key = keyfiles.generate()
    contact = None
    if args.contact_name:
        contact = {k: v for k, v in (("name", args.contact_name), ("phone", args.contact_phone),
                                     ("secure_email", args.contact_email)) if v}
    entry = provision.member_entry(args.id, args.name or args.id, args.role, key,
                                   endpoint=args.endpoint, authority=args.authority, contact=contact)
    document = provision.add_members(Path(args.dir), [(entry, key)], valid_days=args.valid_days,
                                     draft=args.draft)
    print(f"Added {args.id} ({', '.join(args.role)}); {_published(args, document)}. "
          f"Private key: {Path(args.dir) / 'keys' / (args.id + '.pem')}")
    return 0


def _published(args: argparse.Namespace, document: dict[str, Any]) -> str:
    version = document["signed"]["version"]
    if getattr(args, "draft", False):
        return (f"draft version {version} written to {Path(args.dir) / 'trustlist.draft.json'}; "
                "governance key holders sign it with 'signpost federation sign', then "
                "'signpost federation publish'")
    return f"trust list is now version {version}"


def cmd_federation_remove(args: argparse.Namespace) -> int:
    document = provision.remove_member(Path(args.dir), args.id, valid_days=args.valid_days,
                                       draft=args.draft)
    print(f"Removed {args.id}; {_published(args, document)}.")
    return 0


def cmd_federation_sign(args: argparse.Namespace) -> int:
    folder = Path(args.dir)
    key = keyfiles.load_private(Path(args.key))
    document = provision.sign_draft(folder, key)
    root = GovernanceRoot.from_json(json.loads((folder / "root.json").read_text()))
    kid = keyfiles.key_id(key.public_key())
    known = "a key of the pinned root" if kid in root.keys else "NOT a key of the pinned root"
    print(f"Signed draft version {document['signed']['version']} with {kid} ({known}); "
          f"{len(document['signatures'])} signature(s), threshold {root.threshold}.")
    return 0


def cmd_federation_publish(args: argparse.Namespace) -> int:
    accepted = provision.publish_draft(Path(args.dir))
    print(f"Published trust list version {accepted.version} (expires "
          f"{accepted.expires:%Y-%m-%d %H:%M}Z).")
    return 0


def cmd_federation_verify(args: argparse.Namespace) -> int:
    folder = Path(args.dir)
    path = Path(args.file) if args.file else folder / "trustlist.json"
    trust = provision.verify_file(path, Path(args.root) if args.root else folder / "root.json")
    print(f"OK: {path} is trust list version {trust.version} of {trust.federation!r}, signed by a "
          f"threshold of the governance keys trusted from the pinned root (through any published "
          f"root rotations), expires {trust.expires:%Y-%m-%d %H:%M}Z.")
    return 0


def cmd_federation_rotate_key(args: argparse.Namespace) -> int:
    kid, document = provision.rotate_member_key(Path(args.dir), args.id, overlap_hours=args.overlap_hours,
                                                valid_days=args.valid_days, draft=args.draft)
    print(f"New key {kid} for {args.id}; old key(s) stay valid for {args.overlap_hours:g} h; "
          f"{_published(args, document)}.")
    return 0


def cmd_federation_revoke_key(args: argparse.Namespace) -> int:
    document = provision.revoke_key(Path(args.dir), args.id, args.kid, valid_days=args.valid_days,
                                    draft=args.draft)
    print(f"Revoked key {args.kid} of {args.id}; {_published(args, document)}. Parties refuse it "
          "from their next trust-list refresh.")
    return 0


def cmd_federation_rotate_governance(args: argparse.Namespace) -> int:
    document = provision.rotate_governance(Path(args.dir), keys=args.governance_keys,
                                           threshold=args.threshold, valid_days=args.valid_days)
    folder = Path(args.dir)
    print(f"Governance keys rotated ({args.governance_keys} key(s), threshold {args.threshold}); "
          f"trust list version {document['signed']['version']} is signed by the old and new keys. "
          f"The new root is published as {folder / 'roots' / f'{provision.published_roots(folder)}.json'}: "
          "publish the roots/ folder beside the trust list.")
    return 0


def cmd_federation_tls(args: argparse.Namespace) -> int:
    folder = Path(args.dir)
    ca_cert, ca_key = folder / "tls" / "ca.pem", folder / "tls" / "ca.key"
    if not ca_cert.exists():
        tls.create_ca(ca_cert, ca_key, args.federation_name or folder.name)
        print(f"Created the federation CA: {ca_cert}")
    if not args.id:
        return 0
    digest = tls.issue_certificate(ca_cert, ca_key, args.id, folder / "tls" / f"{args.id}.pem",
                                   folder / "tls" / f"{args.id}.key", hosts=args.host or tls.DEFAULT_HOSTS)
    print(f"Issued {folder / 'tls' / (args.id + '.pem')} ({digest})")
    if args.bind:
        document = provision.bind_certificate(folder, args.id, digest, valid_days=args.valid_days,
                                              draft=args.draft)
        print(f"Bound it to {args.id}; {_published(args, document)}.")
    return 0


def cmd_federation_set_oidc(args: argparse.Namespace) -> int:
    entry = None if args.remove else read_json(Path(args.file))
    if entry is not None and not isinstance(entry, dict):
        raise SignpostError(f"--file: {args.file}: expected a JSON object")
    document = provision.set_oidc(Path(args.dir), args.id, entry, valid_days=args.valid_days,
                                  draft=args.draft)
    done = "Removed the OpenID provider of" if args.remove else "Set the OpenID provider of"
    print(f"{done} {args.id}; {_published(args, document)}.")
    return 0


def cmd_federation_show(args: argparse.Namespace) -> int:
    folder = Path(args.dir)
    root = GovernanceRoot.from_json(read_json(Path(args.root) if args.root else folder / "root.json"))
    trust = verify(read_json(folder / "trustlist.json"), root, datetime.now(UTC), unsafe_allow_expired=True)
    expired = " (EXPIRED)" if trust.expires < datetime.now(UTC) else ""
    print(f"federation {trust.federation}  version {trust.version}  expires "
          f"{trust.expires:%Y-%m-%d %H:%M}Z{expired}")
    print(f"governance: {trust.governance.threshold} of {len(trust.governance.keys)} keys")
    for m in sorted(trust.members.values(), key=lambda m: m.id):
        print(f"  {m.id:<20} {','.join(sorted(m.roles)):<14} {m.endpoint or '':<28} {m.name}")
        if m.oidc is not None:
            print(f"      openid provider {m.oidc.issuer}")
        if args.keys:
            for k in m.keys:
                window = (f"{k.not_before:%Y-%m-%d %H:%M}Z" if k.not_before else "…") + " to " + \
                    (f"{k.not_after:%Y-%m-%d %H:%M}Z" if k.not_after else "…")
                print(f"      key {k.kid} {k.alg:<6} valid {window}")
            if m.tls_fingerprint:
                print(f"      tls {m.tls_fingerprint}")
    print("purposes: " + ", ".join(p.code for p in trust.policy.purposes))
    return 0


def _status_tls(args: argparse.Namespace, folder: Path) -> tuple[ssl.SSLContext | None, str | None]:
    """TLS for probing HTTPS members: the given files, else the federation folder's CA and
    auditor certificate, else the system's defaults; and a note when the client certificate is
    missing (nodes that require mutual TLS then close the connection)."""

    tls_dir = folder / "tls"
    ca = Path(args.tls_ca) if args.tls_ca else tls_dir / "ca.pem"
    if not ca.exists():
        if args.tls_ca:
            raise SignpostError(f"--tls-ca: {ca} does not exist")
        return None, None
    cert = Path(args.tls_cert) if args.tls_cert else tls_dir / "auditor.pem"
    key = Path(args.tls_key) if args.tls_key else cert.with_suffix(".key")
    if cert.exists() and key.exists():
        return tls.client_context(tls.TlsFiles(cert, key, ca)), None
    if args.tls_cert:
        raise SignpostError(f"--tls-cert/--tls-key: expected both files, {cert} or {key} is missing")
    note = (f"no client certificate ({cert} is missing), so nodes that require mutual TLS close the "
            f"connection; create it with: signpost federation tls {folder} --id auditor")
    return tls.plain_client_context(ca), note


def cmd_status(args: argparse.Namespace) -> int:
    folder = Path(args.federation)
    trust_path = Path(args.trust_list) if args.trust_list else folder / "trustlist.json"
    root_path = Path(args.root) if args.root else folder / "root.json"
    now = datetime.now(UTC)
    trust = verify(read_json(trust_path), GovernanceRoot.from_json(read_json(root_path)), now,
                   unsafe_allow_expired=True)
    context, note = _status_tls(args, folder)
    statuses = asyncio.run(status.collect(trust, timeout=args.timeout, now=now, ssl=context))
    if args.json:
        print(json.dumps([s.__dict__ for s in statuses], indent=2))
    else:
        print(status.render(trust, statuses, now))
    if note is not None and any(s.reachable is False for s in statuses):
        print(f"signpost status: {note}", file=sys.stderr)
    return 0 if all(s.reachable is not False for s in statuses) else 1
