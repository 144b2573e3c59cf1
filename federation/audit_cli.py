"""``signpost audit``: verify the federation's audit logs, reconcile them, report one child's accesses.

The I/O around ``trust.logverify`` (one log against its signed checkpoint and the last checkpoint
this auditor accepted) and ``trust.auditor`` (broker against nodes; one child's accesses). A log
is read either over HTTP from the service (``/v1/log/*`` with an auditor token) or straight from
its folder on disk (``--log ID=PATH``; the service must be stopped, or give a copy).

The auditor keeps, per service, the last checkpoint it accepted and the leaf hash of every entry
it has verified, in ``--state`` (default ``./audit-state``). The next run checks that the log only
grew since (a smaller size is a rollback, a different history a fork) and names any entry that
changed since it was last seen.
"""

from __future__ import annotations

import argparse
import asyncio
import csv
import html
import io
import json
import os
import ssl
from collections.abc import Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import aiohttp
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PublicKey

from federation.errors import SignpostError
from trust import auditor
from trust.checkpoint import Checkpoint, CheckpointError, parse_checkpoint, verify_checkpoint
from trust.logverify import LogReport, Problem, ProblemKind, verify_log
from trust.merkle import HASH_SIZE, leaf_hash
from trust.tlog import AuditLog, CorruptLogError, LogError, LogInUseError
from trust.trustlist import Member, TrustList

PAGE = 1000


class AuditCommandError(SignpostError):
    """The audit cannot be run as asked (no token, unknown service, unreadable log...)."""


# --- reading logs ---------------------------------------------------------------------------


@dataclass
class Fetched:
    """One service's log as read: its checkpoint note and entries (``None`` if unreadable)."""

    service: str
    note: str | None
    entries: list[bytes]
    report: LogReport | None = None
    error: str | None = None
    extra: list[Problem] = field(default_factory=list)

    @property
    def ok(self) -> bool:
        return self.error is None and self.report is not None and self.report.ok


class HttpLog:
    """A service's ``/v1/log/*`` routes."""

    def __init__(self, session: aiohttp.ClientSession, base: str, token: str, server_hostname: str | None
                 ) -> None:
        self.session, self.base, self.hostname = session, base.rstrip("/"), server_hostname
        self.headers = {"Authorization": f"Bearer {token}"}

    async def _get(self, path: str, params: dict[str, int] | None = None) -> aiohttp.ClientResponse:
        response = await self.session.get(self.base + path, params=params, headers=self.headers,
                                          server_hostname=self.hostname)
        if response.status != 200:
            detail = (await response.text())[:300]
            response.release()
            raise AuditCommandError(f"{self.base}{path}: HTTP {response.status}: {detail}")
        return response

    async def checkpoint(self) -> str:
        async with await self._get("/v1/log/checkpoint") as response:
            return await response.text()

    async def entries(self, start: int, end: int) -> list[bytes]:
        out: list[bytes] = []
        while start + len(out) < end:
            first = start + len(out)
            async with await self._get("/v1/log/entries", {"start": first, "end": min(end, first + PAGE)}
                                       ) as response:
                body = await response.json()
            page = body.get("entries") if isinstance(body, dict) else None
            if not isinstance(page, list) or not page or not all(isinstance(e, str) for e in page):
                raise AuditCommandError(f"{self.base}/v1/log/entries: expected a list of entries at {first}")
            out.extend(e.encode("utf-8") for e in page)
        return out[: end - start]

    async def consistency(self, first: int, second: int) -> list[bytes]:
        import base64

        async with await self._get("/v1/log/proof/consistency", {"from": first, "to": second}) as response:
            body = await response.json()
        return [base64.b64decode(p) for p in body.get("proof", [])]


class StateFolder:
    """What this auditor accepted before, per service."""

    def __init__(self, folder: Path) -> None:
        self.folder = folder

    def _dir(self, service: str) -> Path:
        return self.folder / service

    def previous(self, service: str) -> tuple[str, Checkpoint] | None:
        path = self._dir(service) / "checkpoint"
        if not path.exists():
            return None
        note = path.read_text(encoding="utf-8")
        return note, parse_checkpoint(note)

    def leaves(self, service: str) -> list[bytes]:
        path = self._dir(service) / "leaves"
        data = path.read_bytes() if path.exists() else b""
        return [data[i: i + HASH_SIZE] for i in range(0, len(data) - len(data) % HASH_SIZE, HASH_SIZE)]

    def accept(self, service: str, note: str, leaves: Sequence[bytes]) -> None:
        folder = self._dir(service)
        folder.mkdir(parents=True, exist_ok=True)
        for name, data in (("leaves", b"".join(leaves)), ("checkpoint", note.encode("utf-8"))):
            temporary = folder / f"{name}.tmp"
            temporary.write_bytes(data)
            os.replace(temporary, folder / name)


def member_keys(member: Member, now: datetime) -> list[Ed25519PublicKey]:
    """The member's keys valid now first, then its other keys (older checkpoints on disk)."""
    current = [k.public_key for k in member.key(None, now) if isinstance(k.public_key, Ed25519PublicKey)]
    others = [k.public_key for k in member.keys
              if isinstance(k.public_key, Ed25519PublicKey) and k.public_key not in current]
    return current + others


def pick_key(note: str, member: Member, now: datetime) -> Ed25519PublicKey:
    """The member key that signed ``note``, else its first key (the report then says why)."""
    keys = member_keys(member, now)
    if not keys:
        raise AuditCommandError(f"{member.id}: the trust list gives it no key")
    for key in keys:
        try:
            verify_checkpoint(note, member.id, key)
            return key
        except CheckpointError:
            continue
    return keys[0]


def _check(fetched: Fetched, member: Member, state: StateFolder, now: datetime,
           proof: list[bytes] | None, recorded: list[bytes] | None) -> None:
    """Verify ``fetched`` (entries already read) against its note and the state; keep it if good."""
    assert fetched.note is not None
    previous = state.previous(member.id)
    key = pick_key(fetched.note, member, now)
    leaves = [leaf_hash(e) for e in fetched.entries]
    known = state.leaves(member.id) if recorded is None else recorded
    reference = known[: len(leaves)] + leaves[len(known):]
    report = verify_log(fetched.entries, fetched.note, member.id, key,
                        previous=previous[1] if previous else None, leaf_hashes=reference,
                        consistency_proof=proof)
    fetched.report = report.with_problems(fetched.extra)
    if fetched.report.ok:
        state.accept(member.id, fetched.note, leaves)


async def fetch_http(session: aiohttp.ClientSession, member: Member, base: str, token: str,
                     state: StateFolder, now: datetime, tls: bool) -> Fetched:
    source = HttpLog(session, base, token, member.id if tls and base.startswith("https:") else None)
    try:
        note = await source.checkpoint()
        size = parse_checkpoint(note).size
        entries = await source.entries(0, size)
        previous = state.previous(member.id)
        proof = None
        if previous is not None and 0 < previous[1].size < size:
            proof = await source.consistency(previous[1].size, size)
    except (aiohttp.ClientError, OSError, TimeoutError, ValueError, CheckpointError) as exc:
        return Fetched(member.id, None, [], error=f"{base}: {exc.__class__.__name__}: {exc}")
    except AuditCommandError as exc:
        return Fetched(member.id, None, [], error=str(exc))
    fetched = Fetched(member.id, note, entries)
    _check(fetched, member, state, now, proof, None)
    return fetched


def read_disk(member: Member, path: Path, state: StateFolder, now: datetime) -> Fetched:
    """Read a stopped service's log folder; damaged records are named by index."""
    try:
        log = AuditLog.open(path)
    except LogInUseError as exc:
        return Fetched(member.id, None, [], error=f"{exc} (stop the service or audit a copy of the folder)")
    except CorruptLogError as exc:
        return Fetched(member.id, None, [], error=f"{path}: {exc}"
                       + ("" if exc.index is None else f" (entry {exc.index})"))
    except (LogError, OSError) as exc:
        return Fetched(member.id, None, [], error=f"{path}: {exc}")
    with log:
        note = log.latest_checkpoint
        if note is None:
            return Fetched(member.id, None, [], error=f"{path}: the log has never signed a checkpoint")
        try:
            size = min(parse_checkpoint(note).size, log.size)
        except CheckpointError as exc:
            return Fetched(member.id, note, [], error=f"{path}: checkpoint: {exc}")
        previous = state.previous(member.id)
        key = pick_key(note, member, now)
        # Every record is checked on its own and against the log's leaf index, so each damaged
        # entry is named; the leaf index itself is checked against what this auditor saw before.
        report = log.audit(note, member.id, key, previous=previous[1] if previous else None)
        stored = log.leaf_hashes(0, size)
        known = state.leaves(member.id)
        changed = [Problem(ProblemKind.ENTRY_MISMATCH, f"entry {i} has leaf hash {new.hex()}, this "
                           f"auditor recorded {old.hex()}", i)
                   for i, (old, new) in enumerate(zip(known, stored, strict=False)) if old != new]
        report = report.with_problems(changed)
        entries = list(log.iter_entries(0, size)) if report.ok else []
    fetched = Fetched(member.id, note, entries, report=report)
    if report.ok:
        state.accept(member.id, note, stored)
    return fetched


# --- commands -------------------------------------------------------------------------------


def _trust(args: argparse.Namespace, now: datetime) -> TrustList:
    from trust.store import read_json
    from trust.trustlist import GovernanceRoot, verify

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


async def _read_all(args: argparse.Namespace, trust: TrustList, services: Sequence[Member],
                    now: datetime) -> list[Fetched]:
    """Read and verify each service's log, in the order given."""
    state = StateFolder(Path(args.state))
    disk = {k: Path(v) for k, v in _pairs(args.log, "--log").items()}
    urls = _pairs(args.url, "--url")
    token = args.token or os.environ.get("SIGNPOST_TOKEN")
    context = _ssl(args)
    out: list[Fetched] = []
    timeout = aiohttp.ClientTimeout(total=args.timeout)
    async with aiohttp.ClientSession(timeout=timeout,
                                     connector=aiohttp.TCPConnector(ssl=context) if context else None
                                     ) as session:
        for member in services:
            if member.id in disk:
                out.append(await asyncio.to_thread(read_disk, member, disk[member.id], state, now))
                continue
            base = urls.get(member.id) or member.endpoint
            if not base:
                out.append(Fetched(member.id, None, [],
                                   error="no endpoint in the trust list; give --url or --log"))
                continue
            if not token:
                raise AuditCommandError("give --token or set SIGNPOST_TOKEN (an auditor token), "
                                        "or --log ID=PATH")
            out.append(await fetch_http(session, member, base, token, state, now, context is not None))
    return out


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
        return [f"{fetched.service}: ok, {size} entries, checkpoint verified and consistent with the "
                "last one seen"]
    lines = [f"{fetched.service}: FAILED ({len(fetched.report.problems)} problem(s)), checkpoint size {size}"]
    lines += [f"  {p}" for p in fetched.report.problems]
    return lines


def cmd_verify(args: argparse.Namespace) -> int:
    now = datetime.now(UTC)
    trust = _trust(args, now)
    results = asyncio.run(_read_all(args, trust, _services(trust, args.service), now))
    if args.json:
        print(json.dumps([_fetched_json(f) for f in results], indent=2))
    else:
        for fetched in results:
            print("\n".join(_describe(fetched)))
    return 0 if all(f.ok for f in results) else 1


def _fetched_json(fetched: Fetched) -> dict[str, Any]:
    report = fetched.report
    return {
        "service": fetched.service,
        "ok": fetched.ok,
        "error": fetched.error,
        "size": report.checkpoint.size if report and report.checkpoint else None,
        "problems": [{"kind": str(p.kind), "index": p.index, "message": p.message}
                     for p in (report.problems if report else ())],
    }


def reconcile_fetched(results: Sequence[Fetched], broker_id: str) -> auditor.ReconcileReport:
    """Reconcile the broker's verified entries with every verified node's."""
    problems: list[auditor.Discrepancy] = []
    broker_entries: list[tuple[int, Any]] = []
    nodes: dict[str, list[tuple[int, Any]]] = {}
    for fetched in results:
        if fetched.report is None:
            continue
        node = None if fetched.service == broker_id else fetched.service
        parsed, bad = auditor.parse_entries(enumerate(fetched.entries), node=node)
        problems += bad
        if node is None:
            broker_entries = parsed
        else:
            nodes[node] = parsed
    report = auditor.reconcile(broker_entries, nodes)
    return auditor.ReconcileReport(report.searches, report.node_queries,
                                   (*problems, *report.discrepancies), report.refused)


def cmd_reconcile(args: argparse.Namespace) -> int:
    now = datetime.now(UTC)
    trust = _trust(args, now)
    brokers = trust.with_role("broker")
    broker = trust.member(args.broker, "broker") if args.broker else (brokers[0] if brokers else None)
    if broker is None:
        raise AuditCommandError("the trust list names no broker")
    nodes = [trust.member(i, "node") for i in args.node] if args.node else sorted(
        trust.with_role("node"), key=lambda m: m.id)
    # Nodes first, then the broker: the broker logs a search before any node can see it, so
    # every node entry read has its search in the broker log read after it.
    results = asyncio.run(_read_all(args, trust, [*nodes, broker], now))
    report = reconcile_fetched([f for f in results if f.ok], broker.id)
    # A search made between reading a node's log and the broker's can show an answer the node's
    # copy does not hold yet: read those nodes once more before reporting.
    behind = {d.node for d in report.discrepancies
              if d.kind is auditor.DiscrepancyKind.ANSWER_WITHOUT_NODE_ENTRY}
    if behind:
        again = asyncio.run(_read_all(args, trust, [m for m in nodes if m.id in behind], now))
        fresh = {f.service: f for f in again}
        results = [fresh.get(f.service, f) for f in results]
        report = reconcile_fetched([f for f in results if f.ok], broker.id)
    unverified = [f for f in results if not f.ok]
    if args.json:
        print(json.dumps({"logs": [_fetched_json(f) for f in results], "searches": report.searches,
                          "node_queries": dict(report.node_queries), "refused": dict(report.refused),
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


def access_csv(rows: Sequence[dict[str, str]]) -> str:
    buffer = io.StringIO()
    writer = csv.DictWriter(buffer, fieldnames=auditor.ACCESS_COLUMNS, lineterminator="\n")
    writer.writeheader()
    writer.writerows(rows)
    return buffer.getvalue()


HEADINGS = {"time": "When", "query_id": "Query id", "log_index": "Log entry", "practitioner": "Who",
            "practitioner_id": "User id", "organisation": "Organisation", "role": "Role",
            "identity_provider": "Signed in with", "purpose": "Purpose", "on_behalf_of": "On behalf of",
            "outcome": "Answer", "how_matched": "Record"}


def access_html(rows: Sequence[dict[str, str]], *, node: str, node_name: str, record_id: str,
                checkpoint: Checkpoint | None, generated: datetime) -> str:
    """A page an authority can print or attach to its reply to a subject access request."""
    e = html.escape
    head = "".join(f"<th scope=col>{e(HEADINGS[c])}</th>" for c in auditor.ACCESS_COLUMNS)
    body = "".join("<tr>" + "".join(f"<td>{e(row[c])}</td>" for c in auditor.ACCESS_COLUMNS) + "</tr>"
                   for row in rows)
    if not rows:
        body = f"<tr><td colspan={len(auditor.ACCESS_COLUMNS)}>No searches reached this record.</td></tr>"
    basis = (f"verified audit log of {e(node)}: {checkpoint.size} entries, root "
             f"{e(checkpoint.root.hex())}" if checkpoint else "audit log")
    return (
        "<!doctype html>\n<html lang=en><head><meta charset=utf-8>"
        f"<title>Searches for record {e(record_id)} at {e(node_name)}</title>"
        "<style>body{font-family:sans-serif;margin:2em}table{border-collapse:collapse}"
        "th,td{border:1px solid #999;padding:.3em .5em;text-align:left;vertical-align:top}"
        "th{background:#eee}</style></head><body>"
        f"<h1>Searches that reached record {e(record_id)}</h1>"
        f"<p>{e(node_name)} ({e(node)}). {len(rows)} search(es), from the {basis}. "
        f"Generated {e(generated.isoformat(timespec='seconds'))}.</p>"
        "<p>Each row is one search through the federation's broker that matched this record "
        "(or listed it as one of several possible matches): who searched, when, from which "
        "organisation, in which role and for which purpose.</p>"
        f"<table><thead><tr>{head}</tr></thead><tbody>{body}</tbody></table></body></html>\n"
    )


def cmd_access_report(args: argparse.Namespace) -> int:
    from federation import config as configfile
    from node.config import NodeConfig
    from node.store import Store

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
    fetched = asyncio.run(_read_all(args, trust, [member], now))[0]
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

