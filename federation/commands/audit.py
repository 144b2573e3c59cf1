"""``signpost audit``: verify the federation's audit logs, reconcile them, report one child's accesses.

Argument parsing and printing around ``trust.auditclient``. A log is read either over HTTP from
the service (``/v1/log/*`` with an auditor token) or straight from its folder on disk
(``--log ID=PATH``; the service must be stopped, or give a copy).

The auditor keeps, per service, the last checkpoint it accepted and the leaf hash of every entry
it has verified, in ``--state`` (default ``./audit-state``). The next run checks that the log only
grew since (a smaller size is a rollback, a different history a fork) and names any entry that
changed since it was last seen.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import ssl
from collections.abc import Sequence
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from federation import config as configfile
from node.config import NodeConfig
from node.store import Store
from trust import auditor
from trust.auditclient import (
    AuditCommandError,
    Fetched,
    LogSources,
    access_csv,
    access_html,
    read_all,
    reconcile_federation,
)
from trust.store import read_json
from trust.trustlist import GovernanceRoot, Member, TrustList, verify

# --- commands -------------------------------------------------------------------------------


def _trust(args: argparse.Namespace, now: datetime) -> TrustList:
    folder = Path(args.federation)
    trust_path = Path(args.trust_list) if args.trust_list else folder / "trustlist.json"
    root_path = Path(args.root) if args.root else folder / "root.json"
    return verify(read_json(trust_path), GovernanceRoot.from_json(read_json(root_path)), now,
                  unsafe_allow_expired=True)


def _pairs(values: Sequence[str] | None, what: str) -> dict[str, str]:
    out = {}
    for value in values or ():
        name, sep, rest = value.partition("=")
        if not sep or not name or not rest:
            raise AuditCommandError(f"{what}: expected ID=VALUE, got {value!r}")
        out[name] = rest
    return out


def _ssl(args: argparse.Namespace) -> ssl.SSLContext | None:
    if not args.tls_ca:
        return None
    context = ssl.create_default_context(ssl.Purpose.SERVER_AUTH, cafile=args.tls_ca)
    if args.tls_cert:
        context.load_cert_chain(args.tls_cert, args.tls_key)
    return context


def _sources(args: argparse.Namespace) -> LogSources:
    return LogSources(Path(args.state), {k: Path(v) for k, v in _pairs(args.log, "--log").items()},
                      _pairs(args.url, "--url"), args.token or os.environ.get("SIGNPOST_TOKEN"),
                      _ssl(args), args.timeout)


def _services(trust: TrustList, ids: Sequence[str] | None) -> list[Member]:
    if ids:
        return [trust.member(i) for i in ids]
    nodes = sorted(trust.with_role("node"), key=lambda m: m.id)
    return nodes + sorted(trust.with_role("broker"), key=lambda m: m.id)


def _describe(fetched: Fetched) -> list[str]:
    if fetched.error is not None:
        return [f"{fetched.service}: NOT VERIFIED: {fetched.error}"]
    assert fetched.report is not None
    checkpoint = fetched.report.checkpoint
    size = checkpoint.size if checkpoint else "?"
    if fetched.report.ok:
        lines = [f"{fetched.service}: ok, {size} entries, checkpoint verified and consistent with the "
                 "last one seen"]
    else:
        lines = [f"{fetched.service}: FAILED ({len(fetched.report.problems)} problem(s)), "
                 f"checkpoint size {size}"]
        lines += [f"  {p}" for p in fetched.report.problems]
    if fetched.unchecked:
        lines.append(f"  UNCHECKED: {fetched.unchecked} entries after the last signed checkpoint "
                     f"(size {size}) are not covered by any signature")
    if fetched.torn_tail:
        lines.append(f"  TORN TAIL: {fetched.torn_tail} (not repaired: evidence is read-only)")
    return lines


def _clean(fetched: Fetched, strict: bool) -> bool:
    """Verified; with ``strict`` also nothing unchecked and no torn tail."""
    return fetched.ok and not (strict and (fetched.unchecked or fetched.torn_tail))


def cmd_verify(args: argparse.Namespace) -> int:
    now = datetime.now(UTC)
    trust = _trust(args, now)
    results = asyncio.run(read_all(_sources(args), _services(trust, args.service), now))
    if args.json:
        print(json.dumps([_fetched_json(f) for f in results], indent=2))
    else:
        for fetched in results:
            print("\n".join(_describe(fetched)))
    return 0 if all(_clean(f, args.strict) for f in results) else 1


def _fetched_json(fetched: Fetched) -> dict[str, Any]:
    report = fetched.report
    return {
        "service": fetched.service,
        "ok": fetched.ok,
        "error": fetched.error,
        "size": report.checkpoint.size if report and report.checkpoint else None,
        "unchecked": fetched.unchecked,
        "torn_tail": fetched.torn_tail,
        "problems": [{"kind": str(p.kind), "index": p.index, "message": p.message}
                     for p in (report.problems if report else ())],
    }


def cmd_reconcile(args: argparse.Namespace) -> int:
    now = datetime.now(UTC)
    trust = _trust(args, now)
    brokers = trust.with_role("broker")
    broker = trust.member(args.broker, "broker") if args.broker else (brokers[0] if brokers else None)
    if broker is None:
        raise AuditCommandError("the trust list names no broker")
    nodes = [trust.member(i, "node") for i in args.node] if args.node else sorted(
        trust.with_role("node"), key=lambda m: m.id)
    results, report = reconcile_federation(_sources(args), broker, nodes, now)
    unverified = [f for f in results if not f.ok]
    if args.json:
        print(json.dumps({"logs": [_fetched_json(f) for f in results], "searches": report.searches,
                          "node_queries": dict(report.node_queries), "refused": dict(report.refused),
                          "late_answers": dict(report.late_answers),
                          "discrepancies": [d.to_json() for d in report.discrepancies]}, indent=2))
    else:
        for fetched in results:
            print("\n".join(_describe(fetched)))
        queries = ", ".join(f"{k} {v}" for k, v in sorted(report.node_queries.items()))
        print(f"\nreconciled {report.searches} broker searches with node queries ({queries})")
        refused = {k: v for k, v in report.refused.items() if v}
        if refused:
            print("refused before verification (not reconciled): "
                  + ", ".join(f"{k} {v}" for k, v in sorted(refused.items())))
        late = {k: v for k, v in report.late_answers.items() if v}
        if late:
            print("answers after the broker stopped waiting (the broker logged them abandoned; "
                  "nothing reached the practitioner): "
                  + ", ".join(f"{k} {v}" for k, v in sorted(late.items())))
        if unverified:
            print(f"NOT reconciled (log did not verify): {', '.join(f.service for f in unverified)}")
        if report.ok:
            print("no discrepancies")
        else:
            print(f"{len(report.discrepancies)} discrepancy(ies):")
            for d in report.discrepancies:
                print(f"  {d}")
    return 0 if report.ok and not unverified else 1


# --- access report --------------------------------------------------------------------------


def cmd_access_report(args: argparse.Namespace) -> int:
    now = datetime.now(UTC)
    trust = _trust(args, now)
    member = trust.member(args.node, "node")
    database = Path(args.database) if args.database else None
    if args.config:
        node_config = configfile.load(NodeConfig, Path(args.config))
        database = database or node_config.database
    if database is None:
        raise AuditCommandError("give --database (the node's SQLite file) or --config (node.json)")
    store = Store(database)
    try:
        child = store.child(args.record_id)
    finally:
        store.close()
    if child is None:
        raise AuditCommandError(f"--record-id: no record {args.record_id!r} in {database}")
    fetched = asyncio.run(read_all(_sources(args), [member], now))[0]
    if not fetched.ok:
        print("\n".join(_describe(fetched)))
        print("no report: the log did not verify")
        return 1
    parsed, _ = auditor.parse_entries(enumerate(fetched.entries), node=member.id)
    rows = auditor.access_rows(parsed, child.pseudonym)
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    stem = f"access-{member.id}-{_safe(args.record_id)}"
    (out / f"{stem}.csv").write_text(access_csv(rows), encoding="utf-8")
    checkpoint = fetched.report.checkpoint if fetched.report else None
    (out / f"{stem}.html").write_text(access_html(rows, node=member.id, node_name=member.name,
                                                  record_id=args.record_id, checkpoint=checkpoint,
                                                  generated=now), encoding="utf-8")
    print(f"{len(rows)} search(es) reached record {args.record_id} at {member.id}")
    print(f"wrote {out / (stem + '.csv')} and {out / (stem + '.html')}")
    return 0


def _safe(text: str) -> str:
    return "".join(c if c.isalnum() or c in "-_" else "_" for c in text)[:80]


# --- parser ---------------------------------------------------------------------------------


def _common(p: argparse.ArgumentParser) -> None:
    p.add_argument("--federation", default=".", help="federation folder (trustlist.json, root.json)")
    p.add_argument("--trust-list", help="trust list file (default: FEDERATION/trustlist.json)")
    p.add_argument("--root", help="pinned root.json (default: FEDERATION/root.json)")
    p.add_argument("--token", help="auditor token (or SIGNPOST_TOKEN)")
    p.add_argument("--state", default="audit-state",
                   help="folder of the checkpoints and leaf hashes this auditor accepted "
                   "(default ./audit-state)")
    p.add_argument("--log", action="append", metavar="ID=PATH",
                   help="read member ID's log from its folder instead of over HTTP (repeatable)")
    p.add_argument("--url", action="append", metavar="ID=URL", help="override member ID's endpoint")
    p.add_argument("--tls-ca", help="CA file for HTTPS endpoints (the federation CA)")
    p.add_argument("--tls-cert", help="client certificate, where the services ask for one")
    p.add_argument("--tls-key", help="client certificate key")
    p.add_argument("--timeout", type=float, default=60.0, help="seconds per log (default 60)")
    p.add_argument("--json", action="store_true", help="print JSON")


def add_parsers(sub: Any) -> None:
    """Register ``signpost audit verify|reconcile|access-report``."""
    audit = sub.add_parser("audit", help="verify, reconcile and report from the federation's audit logs")
    asub = audit.add_subparsers(dest="action", required=True, metavar="ACTION")
    p = asub.add_parser("verify", help="verify logs: entries against the signed checkpoint, and against "
                        "the last checkpoint seen (rollback, fork); exit 1 on any problem")
    _common(p)
    p.add_argument("--service", action="append", help="member id to verify (repeatable; default: all)")
    p.add_argument("--strict", action="store_true", help="exit 1 also when entries follow the last signed "
                   "checkpoint (unchecked) or the log ends in a torn tail")
    p.set_defaults(func=cmd_verify)
    p = asub.add_parser("reconcile", help="check the broker's log against every node's; exit 1 on any "
                        "discrepancy")
    _common(p)
    p.add_argument("--broker", help="broker member id (default: the trust list's broker)")
    p.add_argument("--node", action="append", help="node to reconcile (repeatable; default: all)")
    p.set_defaults(func=cmd_reconcile)
    p = asub.add_parser("access-report", help="one child's accesses at one node, as CSV and HTML "
                        "(for a subject access request)")
    _common(p)
    p.add_argument("--node", required=True, help="the node's member id")
    p.add_argument("--record-id", required=True, help="the child's record id in that node")
    p.add_argument("--database", help="the node's SQLite file (to find the record's pseudonym)")
    p.add_argument("--config", help="the node's node.json (instead of --database)")
    p.add_argument("--out", default=".", help="folder for the CSV and HTML files (default .)")
    p.set_defaults(func=cmd_access_report)

