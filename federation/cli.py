"""The ``signpost`` command line: demo, federation set-up, nodes, broker, tokens, searches."""

from __future__ import annotations

import argparse
import asyncio
import json
import logging
import os
import sys
import tempfile
from collections.abc import Callable, Sequence
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from federation import config as configfile
from federation.errors import SignpostError

Handler = Callable[[argparse.Namespace], int]


def _logging(verbose: bool) -> None:
    logging.basicConfig(
        level=logging.DEBUG if verbose else logging.INFO,
        format="%(asctime)s %(levelname)s %(name)s: %(message)s",
    )
    logging.getLogger("aiohttp.access").setLevel(logging.WARNING)


# --- demo -----------------------------------------------------------------------------------


def cmd_demo(args: argparse.Namespace) -> int:
    from federation import demo

    folder = Path(args.dir) if args.dir else Path(tempfile.mkdtemp(prefix="signpost-demo-"))
    return demo.run(folder, once=args.once, children=args.children)


# --- federation -----------------------------------------------------------------------------


def cmd_federation_create(args: argparse.Namespace) -> int:
    from federation import provision

    provision.create(Path(args.dir), args.name, governance=args.governance_keys,
                     threshold=args.threshold, valid_days=args.valid_days)
    print(f"Created federation {args.name!r} in {args.dir} "
          f"({args.governance_keys} governance key(s), threshold {args.threshold}).")
    return 0


def cmd_federation_add(args: argparse.Namespace) -> int:
    from federation import provision
    from trust import keys as keyfiles

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
    from federation import provision

    document = provision.remove_member(Path(args.dir), args.id, valid_days=args.valid_days,
                                       draft=args.draft)
    print(f"Removed {args.id}; {_published(args, document)}.")
    return 0


def cmd_federation_sign(args: argparse.Namespace) -> int:
    from federation import provision
    from trust import keys as keyfiles
    from trust.trustlist import GovernanceRoot

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
    from federation import provision

    accepted = provision.publish_draft(Path(args.dir))
    print(f"Published trust list version {accepted.version} (expires "
          f"{accepted.expires:%Y-%m-%d %H:%M}Z).")
    return 0


def cmd_federation_verify(args: argparse.Namespace) -> int:
    from federation import provision

    folder = Path(args.dir)
    path = Path(args.file) if args.file else folder / "trustlist.json"
    trust = provision.verify_file(path, Path(args.root) if args.root else folder / "root.json")
    print(f"OK: {path} is trust list version {trust.version} of {trust.federation!r}, signed by a "
          f"threshold of the pinned governance keys, expires {trust.expires:%Y-%m-%d %H:%M}Z.")
    return 0


def cmd_federation_rotate_key(args: argparse.Namespace) -> int:
    from federation import provision

    kid, document = provision.rotate_member_key(Path(args.dir), args.id, overlap_hours=args.overlap_hours,
                                                valid_days=args.valid_days, draft=args.draft)
    print(f"New key {kid} for {args.id}; old key(s) stay valid for {args.overlap_hours:g} h; "
          f"{_published(args, document)}.")
    return 0


def cmd_federation_revoke_key(args: argparse.Namespace) -> int:
    from federation import provision

    document = provision.revoke_key(Path(args.dir), args.id, args.kid, valid_days=args.valid_days,
                                    draft=args.draft)
    print(f"Revoked key {args.kid} of {args.id}; {_published(args, document)}. Parties refuse it "
          "from their next trust-list refresh.")
    return 0


def cmd_federation_rotate_governance(args: argparse.Namespace) -> int:
    from federation import provision

    document = provision.rotate_governance(Path(args.dir), keys=args.governance_keys,
                                           threshold=args.threshold, valid_days=args.valid_days)
    print(f"Governance keys rotated ({args.governance_keys} key(s), threshold {args.threshold}); "
          f"trust list version {document['signed']['version']} is signed by the old and new keys.")
    return 0


def cmd_federation_tls(args: argparse.Namespace) -> int:
    from federation import provision
    from trust import tls

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


def cmd_federation_show(args: argparse.Namespace) -> int:
    from trust.store import read_json
    from trust.trustlist import GovernanceRoot, verify

    folder = Path(args.dir)
    root = GovernanceRoot.from_json(read_json(Path(args.root) if args.root else folder / "root.json"))
    trust = verify(read_json(folder / "trustlist.json"), root, datetime.now(UTC), allow_expired=True)
    expired = " (EXPIRED)" if trust.expires < datetime.now(UTC) else ""
    print(f"federation {trust.federation}  version {trust.version}  expires "
          f"{trust.expires:%Y-%m-%d %H:%M}Z{expired}")
    print(f"governance: {trust.governance.threshold} of {len(trust.governance.keys)} keys")
    for m in sorted(trust.members.values(), key=lambda m: m.id):
        print(f"  {m.id:<20} {','.join(sorted(m.roles)):<14} {m.endpoint or '':<28} {m.name}")
        if args.keys:
            for k in m.keys:
                window = (f"{k.not_before:%Y-%m-%d %H:%M}Z" if k.not_before else "…") + " to " + \
                    (f"{k.not_after:%Y-%m-%d %H:%M}Z" if k.not_after else "…")
                print(f"      key {k.kid} {k.alg:<6} valid {window}")
            if m.tls_fingerprint:
                print(f"      tls {m.tls_fingerprint}")
    print("purposes: " + ", ".join(p.code for p in trust.policy.purposes))
    return 0


# --- tokens ---------------------------------------------------------------------------------


def cmd_token(args: argparse.Namespace) -> int:
    from trust import keys as keyfiles
    from trust import tokens

    key_path = Path(args.key) if args.key else Path(args.federation) / "keys" / f"{args.issuer}.pem"
    amr = ["pwd"] if args.no_mfa else ["pwd", "otp"]
    print(tokens.issue(issuer=args.issuer, key=keyfiles.load_private(key_path), audience=args.audience,
                       sub=args.sub, name=args.name or args.sub, org=args.org, role=args.role, amr=amr,
                       now=datetime.now(UTC), lifetime_seconds=args.minutes * 60))
    return 0


# --- node -----------------------------------------------------------------------------------


def cmd_node_serve(args: argparse.Namespace) -> int:
    from aiohttp import web

    from node.api import create_app
    from node.config import NodeConfig

    _logging(args.verbose)
    from trust import tls

    config = configfile.load(NodeConfig, Path(args.config))
    context = tls.server_context(config.tls) if config.tls else None
    web.run_app(create_app(config), host=config.host, port=config.port, print=None,
                access_log=None, ssl_context=context)
    return 0


def cmd_node_import(args: argparse.Namespace) -> int:
    from node.config import NodeConfig
    from node.importer import import_files
    from node.store import Store

    if args.config:
        database = configfile.load(NodeConfig, Path(args.config)).database
    elif args.database:
        database = Path(args.database)
    else:
        raise SignpostError("give --config or --database")
    rejects = Path(args.rejects) if args.rejects else Path(args.children).with_name("rejects.csv")
    node_config = configfile.load(NodeConfig, Path(args.config)) if args.config else None
    store = Store(database)

    from federation.progress import ProgressBar, table

    bar = ProgressBar("importing")
    try:
        summary = import_files(store, Path(args.children), Path(args.involvements), full=args.full,
                               rejects_path=rejects, progress=bar.update)
        logged = _audit_import(store, node_config, args, summary)
    finally:
        store.close()
        bar.finish()
    s = summary

    def rejected(name: str) -> int:
        return sum(1 for r in s.rejects if r.file == name)

    print(table(
        ("", "accepted", "added", "updated", "unchanged", "removed", "rejected"),
        [("children", s.children_added + s.children_updated + s.children_unchanged, s.children_added,
          s.children_updated, s.children_unchanged, s.children_removed, rejected(Path(args.children).name)),
         ("involvements", s.involvements_added + s.involvements_updated + s.involvements_unchanged,
          s.involvements_added, s.involvements_updated, s.involvements_unchanged, s.involvements_removed,
          rejected(Path(args.involvements).name))],
    ))
    where = f" (see {rejects})" if s.rejected else ""
    print(f"\nrejected rows: {s.rejected}{where}   time: {s.seconds:.2f} s")
    if logged:
        print(f"import summary: {logged}")
    return 0


def _audit_import(store: Any, config: Any, args: argparse.Namespace, summary: Any) -> str:
    """Write the import summary (counts only) to the node's audit log, or queue it for the node."""
    if config is None or config.audit_log is None:
        return ""
    from node import audit

    entry = audit.import_entry(config.id, datetime.now(UTC), summary.to_json(), full=args.full,
                               children_file=Path(args.children).name,
                               involvements_file=Path(args.involvements).name)
    return str(audit.record(store, config.audit_log, entry))


def cmd_status(args: argparse.Namespace) -> int:
    from federation import status
    from trust.store import read_json
    from trust.trustlist import GovernanceRoot, verify

    folder = Path(args.federation)
    trust_path = Path(args.trust_list) if args.trust_list else folder / "trustlist.json"
    root_path = Path(args.root) if args.root else folder / "root.json"
    now = datetime.now(UTC)
    trust = verify(read_json(trust_path), GovernanceRoot.from_json(read_json(root_path)), now,
                   allow_expired=True)
    statuses = asyncio.run(status.collect(trust, timeout=args.timeout, now=now))
    if args.json:
        print(json.dumps([s.__dict__ for s in statuses], indent=2))
    else:
        print(status.render(trust, statuses, now))
    return 0 if all(s.reachable is not False for s in statuses) else 1


def cmd_demo_code(args: argparse.Namespace) -> int:
    import time

    from broker.demo_idp import DEMO_TOTP_SECRET, TOTP_STEP_SECONDS, current_code

    now = time.time()
    left = TOTP_STEP_SECONDS - int(now) % TOTP_STEP_SECONDS
    print(f"{current_code(now)}  (demo one-time code, valid for {left} more s; secret {DEMO_TOTP_SECRET})")
    return 0


def cmd_node_purge(args: argparse.Namespace) -> int:
    from node.config import NodeConfig
    from node.purge import purge
    from node.store import Store
    from trust.store import read_json
    from trust.trustlist import GovernanceRoot, verify

    config = configfile.load(NodeConfig, Path(args.config))
    now = datetime.now(UTC)
    today = datetime.strptime(args.today, "%Y-%m-%d").date() if args.today else now.date()
    retention_age = args.retention_age or config.retention_age
    if retention_age is None:
        trust = verify(read_json(config.trust_list), GovernanceRoot.from_json(read_json(config.trust_root)),
                       now, allow_expired=True)
        retention_age = trust.policy.retention_age
    store = Store(config.database)
    try:
        summary = purge(store, today=today, now=now, retention_age=retention_age, dry_run=args.dry_run)
    finally:
        store.close()
    verb = "would delete" if args.dry_run else "deleted"
    print(f"retention age {summary.retention_age}: born on or before {summary.cutoff}")
    print(f"{verb}: {summary.children} children, {summary.involvements} involvements, "
          f"{summary.notifications} pending notifications")
    if not args.dry_run:
        print(f"recorded in {config.database} (purge_log){_audit_purge(config, summary)}")
    return 0


def _audit_purge(config: Any, summary: Any) -> str:
    """Also write the purge to the node's audit log (queued for the node while it runs)."""
    if config.audit_log is None:
        return ""
    from node import audit
    from node.store import Store

    store = Store(config.database)
    try:
        return f"; {audit.record(store, config.audit_log, summary.to_entry(config.id))}"
    finally:
        store.close()


def cmd_bench_matching(args: argparse.Namespace) -> int:
    from node.matchbench import bench_matching

    bench_matching(args.children, args.queries, seed=args.seed)
    return 0


def cmd_eval_matching(args: argparse.Namespace) -> int:
    from node.evaluation import eval_matching, list_datasets

    datasets = list_datasets() if args.dataset == "all" else (args.dataset,)
    for dataset in datasets:
        for with_identifier in ((False, True) if args.both else (args.with_identifier,)):
            for open_set in ((False, True) if args.both else (args.open_set,)):
                eval_matching(dataset, with_identifier=with_identifier, open_set=open_set,
                              sample=args.sample, seed=args.seed)
                print()
    return 0


def cmd_bench_search(args: argparse.Namespace) -> int:
    from federation import searchbench

    result = searchbench.run(children=args.children, searches=args.searches, concurrency=args.concurrency)
    return 1 if result["failures"] else 0


def cmd_bench_trust(args: argparse.Namespace) -> int:
    from trust import bench

    bench.main()
    return 0


def cmd_bench_audit(args: argparse.Namespace) -> int:
    from trust import logbench

    logbench.run(args.entries, appends=args.appends, appenders=args.appenders, proofs=args.proofs,
                 directory=args.dir)
    return 0


# --- broker ---------------------------------------------------------------------------------


def cmd_broker_serve(args: argparse.Namespace) -> int:
    from aiohttp import web

    from broker.api import create_app
    from broker.config import BrokerConfig

    _logging(args.verbose)
    from trust import tls

    config = configfile.load(BrokerConfig, Path(args.config))
    serve_tls = config.tls is not None and config.serve_tls
    context = tls.server_context(config.tls, require_client=False) if config.tls and serve_tls else None
    web.run_app(create_app(config), host=config.host, port=config.port, print=None,
                access_log=None, ssl_context=context)
    return 0


# --- search ---------------------------------------------------------------------------------


def cmd_search(args: argparse.Namespace) -> int:
    import aiohttp

    from federation.render import answer_text

    token = args.token or os.environ.get("SIGNPOST_TOKEN")
    if not token:
        raise SignpostError("give --token or set SIGNPOST_TOKEN")
    ident = {k: getattr(args, k) for k in ("nhs_number", "upn", "given_name", "family_name",
                                             "date_of_birth", "sex", "postcode") if getattr(args, k)}
    body: dict[str, Any] = {"identity": ident, "purpose": args.purpose}
    if args.on_behalf_of:
        name, org, role, phone = ([*args.on_behalf_of.split("|"), "", "", "", ""])[:4]
        body["on_behalf_of"] = {"name": name, "organisation": org, "role": role, "phone": phone}

    async def go() -> tuple[int, Any]:
        from trust import tls

        connector = aiohttp.TCPConnector(ssl=tls.plain_client_context(Path(args.ca))) if args.ca else None
        async with aiohttp.ClientSession(connector=connector) as session, session.post(
            args.broker.rstrip("/") + "/v1/search", json=body,
            headers={"Authorization": f"Bearer {token}"},
        ) as response:
            return response.status, await response.json(content_type=None)

    status, answer = asyncio.run(go())
    if args.json or status != 200:
        print(json.dumps(answer, indent=2))
        return 0 if status == 200 else 1
    print(answer_text(answer))
    return 0


# --- parser ---------------------------------------------------------------------------------


def build_parser() -> argparse.ArgumentParser:
    from broker.config import BrokerConfig
    from node.config import NodeConfig

    parser = argparse.ArgumentParser(
        prog="signpost",
        description="Signpost: who else is working with this child? A federated signposting index.",
    )
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")

    p = sub.add_parser("demo", help="run a local demo federation (nodes and broker on loopback)",
                       description="Create a temporary federation of 5 authorities with synthetic "
                       "children, start every node and the broker, run sample searches, keep serving.")
    p.add_argument("--once", action="store_true", help="exit after the sample searches (non-zero on failure)")
    p.add_argument("--dir", help="folder for the federation (default: a new temporary folder)")
    p.add_argument("--children", type=int, default=3000, help="children per authority (default 3000)")
    p.set_defaults(func=cmd_demo)

    fed = sub.add_parser("federation", help="create a federation and manage its trust list")
    fsub = fed.add_subparsers(dest="action", required=True, metavar="ACTION")
    p = fsub.add_parser("create", help="create governance keys and a signed, empty trust list")
    p.add_argument("dir")
    p.add_argument("--name", required=True, help="federation name (the query audience)")
    p.add_argument("--governance-keys", type=int, default=1)
    p.add_argument("--threshold", type=int, default=1)
    p.add_argument("--valid-days", type=int, default=30)
    p.set_defaults(func=cmd_federation_create)
    p = fsub.add_parser("add-member", help="add a member with a new key; publish the next version")
    p.add_argument("dir")
    p.add_argument("--id", required=True)
    p.add_argument("--name")
    p.add_argument("--role", action="append", required=True,
                   choices=["node", "broker", "token_issuer", "auditor"])
    p.add_argument("--endpoint", help="base URL (nodes and brokers)")
    p.add_argument("--authority", help="the authority a node or token issuer belongs to")
    p.add_argument("--contact-name")
    p.add_argument("--contact-phone")
    p.add_argument("--contact-email")
    p.add_argument("--valid-days", type=int, default=30)
    p.add_argument("--draft", action="store_true", help="write an unsigned draft for multi-party signing")
    p.set_defaults(func=cmd_federation_add)
    p = fsub.add_parser("remove-member", help="remove a member; publish the next version")
    p.add_argument("dir")
    p.add_argument("--id", required=True)
    p.add_argument("--valid-days", type=int, default=30)
    p.add_argument("--draft", action="store_true", help="write an unsigned draft for multi-party signing")
    p.set_defaults(func=cmd_federation_remove)
    p = fsub.add_parser("sign", help="add one governance signature to the waiting draft")
    p.add_argument("dir")
    p.add_argument("--key", required=True, help="a governance private key (PEM)")
    p.set_defaults(func=cmd_federation_sign)
    p = fsub.add_parser("publish", help="install the draft once a threshold of governance keys signed it")
    p.add_argument("dir")
    p.set_defaults(func=cmd_federation_publish)
    p = fsub.add_parser("verify", help="verify a trust list against the pinned root (exit 2 if not good)")
    p.add_argument("dir")
    p.add_argument("--file", help="trust list to verify (default: DIR/trustlist.json)")
    p.add_argument("--root", help="pinned root.json (default: DIR/root.json)")
    p.set_defaults(func=cmd_federation_verify)
    p = fsub.add_parser("rotate-key", help="give a member a new signing key, with overlapping validity")
    p.add_argument("dir")
    p.add_argument("--id", required=True)
    p.add_argument("--overlap-hours", type=float, default=24)
    p.add_argument("--valid-days", type=int, default=30)
    p.add_argument("--draft", action="store_true", help="write an unsigned draft for multi-party signing")
    p.set_defaults(func=cmd_federation_rotate_key)
    p = fsub.add_parser("revoke-key", help="remove a lost or stolen member key at once")
    p.add_argument("dir")
    p.add_argument("--id", required=True)
    p.add_argument("--kid", required=True)
    p.add_argument("--valid-days", type=int, default=30)
    p.add_argument("--draft", action="store_true", help="write an unsigned draft for multi-party signing")
    p.set_defaults(func=cmd_federation_revoke_key)
    p = fsub.add_parser("rotate-governance", help="replace the governance keys (signed by old and new)")
    p.add_argument("dir")
    p.add_argument("--governance-keys", type=int, required=True)
    p.add_argument("--threshold", type=int, required=True)
    p.add_argument("--valid-days", type=int, default=30)
    p.set_defaults(func=cmd_federation_rotate_governance)
    p = fsub.add_parser("tls", help="create the federation CA; issue (and bind) a member certificate")
    p.add_argument("dir")
    p.add_argument("--id", help="member to issue a certificate for (DIR/tls/ID.pem, ID.key)")
    p.add_argument("--host", action="append", help="host name or IP for the certificate (repeat; "
                   "default 127.0.0.1 and localhost)")
    p.add_argument("--bind", action="store_true", help="pin the certificate's fingerprint in the trust list")
    p.add_argument("--federation-name", help="name in the CA certificate (default: the folder name)")
    p.add_argument("--valid-days", type=int, default=30)
    p.add_argument("--draft", action="store_true", help="write an unsigned draft for multi-party signing")
    p.set_defaults(func=cmd_federation_tls)
    p = fsub.add_parser("show", help="verify and print the trust list")
    p.add_argument("dir")
    p.add_argument("--root", help="pinned root.json (default: DIR/root.json)")
    p.add_argument("--keys", action="store_true",
                   help="also list each member's key ids, validity and TLS pin")
    p.set_defaults(func=cmd_federation_show)

    p = sub.add_parser("token", help="issue a development practitioner token (demo identity provider)")
    p.add_argument("--federation", default=".", help="federation folder holding keys/<issuer>.pem")
    p.add_argument("--key", help="issuer private key (default: FEDERATION/keys/ISSUER.pem)")
    p.add_argument("--issuer", required=True)
    p.add_argument("--sub", required=True)
    p.add_argument("--name")
    p.add_argument("--org", required=True)
    p.add_argument("--role", required=True,
                   choices=["practitioner", "mediator", "signposting_officer", "auditor", "operator"])
    p.add_argument("--audience", default="signpost-broker")
    p.add_argument("--minutes", type=int, default=15)
    p.add_argument("--no-mfa", action="store_true", help="issue a token without multi-factor (refused)")
    p.set_defaults(func=cmd_token)

    node = sub.add_parser("node", help="run and feed an authority's node")
    nsub = node.add_subparsers(dest="action", required=True, metavar="ACTION")
    p = nsub.add_parser("serve", help="serve the node's HTTP API",
                        formatter_class=argparse.RawDescriptionHelpFormatter,
                        epilog="settings (JSON config file):\n" + configfile.describe(NodeConfig))
    p.add_argument("--config", required=True)
    p.add_argument("--verbose", action="store_true")
    p.set_defaults(func=cmd_node_serve)
    p = nsub.add_parser("import", help="import children and involvements CSV files")
    p.add_argument("--config", help="node config (for the database path)")
    p.add_argument("--database", help="SQLite file (instead of --config)")
    p.add_argument("--children", required=True)
    p.add_argument("--involvements", required=True)
    p.add_argument("--full", action="store_true", help="also remove records absent from the files")
    p.add_argument("--rejects", help="rejects CSV (default: rejects.csv beside the children file)")
    p.set_defaults(func=cmd_node_import)
    p = nsub.add_parser("purge", help="delete records past the retention age (default: 24th birthday)")
    p.add_argument("--config", required=True, help="node config")
    p.add_argument("--retention-age", type=int, help="override the configured retention age")
    p.add_argument("--today", help="YYYY-MM-DD (default: today)")
    p.add_argument("--dry-run", action="store_true", help="count, delete nothing")
    p.set_defaults(func=cmd_node_purge)

    brk = sub.add_parser("broker", help="run the broker")
    bsub = brk.add_subparsers(dest="action", required=True, metavar="ACTION")
    p = bsub.add_parser("serve", help="serve the broker's HTTP API",
                        formatter_class=argparse.RawDescriptionHelpFormatter,
                        epilog="settings (JSON config file):\n" + configfile.describe(BrokerConfig))
    p.add_argument("--config", required=True)
    p.add_argument("--verbose", action="store_true")
    p.set_defaults(func=cmd_broker_serve)

    p = sub.add_parser("status", help="show every member of the federation: reachable, trust list, audit log",
                       description="Probe /healthz (and the audit log checkpoint) of every member in the "
                       "verified trust list. Exit status 1 if any member with an endpoint is unreachable.")
    p.add_argument("--federation", default=".", help="federation folder (trustlist.json, root.json)")
    p.add_argument("--trust-list", help="trust list file (default: FEDERATION/trustlist.json)")
    p.add_argument("--root", help="pinned root.json (default: FEDERATION/root.json)")
    p.add_argument("--timeout", type=float, default=3.0, help="seconds per member (default 3)")
    p.add_argument("--json", action="store_true", help="print JSON instead of a table")
    p.set_defaults(func=cmd_status)

    from federation import audit_cli

    audit_cli.add_parsers(sub)

    bench = sub.add_parser("bench", help="run a benchmark and print its numbers")
    bench_sub = bench.add_subparsers(dest="which", required=True, metavar="BENCHMARK")
    p = bench_sub.add_parser("audit", help="audit log: durable appends/s, verify time, proof latency")
    p.add_argument("--entries", type=int, default=1_000_000,
                   help="size of the verified log (default 1,000,000)")
    p.add_argument("--appends", type=int, default=50_000, help="durable appends to time (default 50,000)")
    p.add_argument("--appenders", type=int, default=500, help="concurrent appenders (default 500)")
    p.add_argument("--proofs", type=int, default=5_000, help="proofs to time (default 5,000)")
    p.add_argument("--dir", help="where the temporary logs go (its disk decides the fsync cost)")
    p.set_defaults(func=cmd_bench_audit)
    p = bench_sub.add_parser("matching", help="matcher at scale: index build time, memory, query latency")
    p.add_argument("--children", type=int, default=350_000, help="children in the node (default 350,000)")
    p.add_argument("--queries", type=int, default=10_000, help="queries to time (default 10,000)")
    p.add_argument("--seed", type=int, default=0)
    p.set_defaults(func=cmd_bench_matching)
    p = bench_sub.add_parser("trust", help="trust list of 150 authorities: verify, refresh, token, envelope")
    p.set_defaults(func=cmd_bench_trust)
    p = bench_sub.add_parser("search", help="end to end: searches/s and latency through the demo federation")
    p.add_argument("--children", type=int, default=20_000, help="children per authority (default 20,000)")
    p.add_argument("--searches", type=int, default=1_000, help="searches to time (default 1,000)")
    p.add_argument("--concurrency", type=int, default=8, help="searches in flight (default 8)")
    p.set_defaults(func=cmd_bench_search)

    p = sub.add_parser(
        "eval-matching", help="measure the matcher on labelled data: precision, recall, false matches",
        description="Run every query of a labelled set through the real matcher and print precision, "
        "recall, false matches, misses, possible_match count and latency. FEBRL sets need the "
        "'eval' extra (pip install -e '.[eval]').")
    p.add_argument("dataset", choices=["febrl1", "febrl2", "febrl3", "febrl4", "synthetic", "all"])
    p.add_argument("--with-identifier", action="store_true",
                   help="also give the identifier (FEBRL soc_sec_id standing in for the NHS number)")
    p.add_argument("--open-set", action="store_true",
                   help="the node holds only half the records; queries for the rest must not match")
    p.add_argument("--both", action="store_true", help="run all four: closed/open x with/without identifier")
    p.add_argument("--sample", type=int, help="only this many queries")
    p.add_argument("--seed", type=int, default=0, help="synthetic set seed (default 0)")
    p.set_defaults(func=cmd_eval_matching)

    p = sub.add_parser("demo-code", help="print the demo identity provider's current one-time code")
    p.set_defaults(func=cmd_demo_code)

    p = sub.add_parser("search", help="search for a child through a broker")
    p.add_argument("--broker", required=True, help="broker base URL")
    p.add_argument("--token", help="bearer token (or SIGNPOST_TOKEN)")
    p.add_argument("--nhs-number")
    p.add_argument("--upn")
    p.add_argument("--given-name")
    p.add_argument("--family-name")
    p.add_argument("--date-of-birth", help="YYYY-MM-DD")
    p.add_argument("--sex", help="F, M, X or U")
    p.add_argument("--postcode")
    p.add_argument("--purpose", required=True)
    p.add_argument("--on-behalf-of", help="mediators: 'name|organisation|role|phone'")
    p.add_argument("--json", action="store_true", help="print the raw JSON answer")
    p.add_argument("--ca", help="CA certificate to trust for an https broker (e.g. the federation CA)")
    p.set_defaults(func=cmd_search)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    try:
        return int(args.func(args))
    except SignpostError as exc:
        print(f"signpost: {exc}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())
