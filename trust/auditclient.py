"""The auditor's client: reading each service's log, verifying it, reconciling them, access reports.

The I/O around ``trust.logverify`` (one log against its signed checkpoint and the last checkpoint
this auditor accepted) and ``trust.auditor`` (broker against nodes; one child's accesses). A log
is read either over HTTP from the service (``/v1/log/*`` with an auditor token) or straight from
its folder on disk (the service must be stopped, or give a copy).

The auditor keeps, per service, the last checkpoint it accepted and the leaf hash of every entry
it has verified, in a state folder. The next run checks that the log only grew since (a smaller
size is a rollback, a different history a fork) and names any entry that changed since it was
last seen.
"""

from __future__ import annotations

import asyncio
import base64
import csv
import io
import ssl
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path
from typing import Any

import aiohttp
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PublicKey
from jinja2 import Environment, PackageLoader, StrictUndefined

from federation import safejson
from federation.errors import SignpostError
from federation.files import write_atomic
from trust import auditor
from trust.checkpoint import Checkpoint, CheckpointError, parse_checkpoint, verify_checkpoint
from trust.logfiles import read_evidence
from trust.logverify import LogReport, Problem, ProblemKind, verify_log
from trust.merkle import HASH_SIZE, leaf_hash
from trust.tlog import CorruptLogError, LogError, LogInUseError
from trust.trustlist import Member

PAGE = 1000
PAGE_LIMITS = safejson.JsonLimits(max_bytes=64 * 1024 * 1024, max_depth=8)
"""Bounds on one page of entries or one proof as served by an audited service."""


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
    unchecked: int = 0
    """Entries after the last signed checkpoint: present, but nothing signed vouches for them."""
    torn_tail: str | None = None
    """A write cut short after the last whole record (reported, never repaired)."""

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
                body = safejson.parse(await response.read(), "entries", PAGE_LIMITS)
            page = body.get("entries") if isinstance(body, dict) else None
            if not isinstance(page, list) or not page or not all(isinstance(e, str) for e in page):
                raise AuditCommandError(f"{self.base}/v1/log/entries: expected a list of entries at {first}")
            out.extend(e.encode("utf-8") for e in page)
        return out[: end - start]

    async def consistency(self, first: int, second: int) -> list[bytes]:
        async with await self._get("/v1/log/proof/consistency", {"from": first, "to": second}) as response:
            body = safejson.parse(await response.read(), "proof", PAGE_LIMITS)
        proof = body.get("proof") if isinstance(body, dict) else None
        if not isinstance(proof, list) or not all(isinstance(p, str) for p in proof):
            raise AuditCommandError(f"{self.base}/v1/log/proof/consistency: expected a list of base64 hashes")
        return [base64.b64decode(p) for p in proof]


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
            write_atomic(folder / name, data)


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
    except (aiohttp.ClientError, OSError, TimeoutError, ValueError, CheckpointError,
            safejson.JsonError) as exc:
        return Fetched(member.id, None, [], error=f"{base}: {exc.__class__.__name__}: {exc}")
    except AuditCommandError as exc:
        return Fetched(member.id, None, [], error=str(exc))
    fetched = Fetched(member.id, note, entries)
    _check(fetched, member, state, now, proof, None)
    return fetched


def read_disk(member: Member, path: Path, state: StateFolder, now: datetime) -> Fetched:
    """Verify a log folder (a stopped service's, or a copy) without changing a byte of it.

    Each entry is compared with the leaf hash this auditor recorded before (else with the log's
    own leaf index), so an edited entry is named by index before the tree is checked against the
    signed checkpoint. Entries after the last signed checkpoint are counted as unchecked, and a
    write cut short at the end is reported as a torn tail; neither is repaired.
    """
    try:
        evidence = read_evidence(path)
    except LogInUseError as exc:
        return Fetched(member.id, None, [], error=f"{exc} (stop the service or audit a copy of the folder)")
    except CorruptLogError as exc:
        return Fetched(member.id, None, [], error=f"{path}: {exc}")
    except (LogError, OSError) as exc:
        return Fetched(member.id, None, [], error=f"{path}: {exc}")
    note = evidence.note
    if note is None:
        return Fetched(member.id, None, [], error=f"{path}: the log has no signed checkpoint "
                       f"({len(evidence.records)} entries): nothing can be verified")
    try:
        size = parse_checkpoint(note).size
    except CheckpointError as exc:
        return Fetched(member.id, note, [], error=f"{path}: checkpoint: {exc}")
    covered = evidence.records[:size]
    entries = [payload for payload, _ in covered]
    damaged = [Problem(ProblemKind.DAMAGED_RECORD, damage, i)
               for i, (_, damage) in enumerate(covered) if damage is not None]
    known = state.leaves(member.id)[:size]
    reference = [*known, *evidence.leaves[len(known):size]]
    previous = state.previous(member.id)
    key = pick_key(note, member, now)
    report = verify_log(entries, note, member.id, key, previous=previous[1] if previous else None,
                        leaf_hashes=reference).with_problems(damaged)
    fetched = Fetched(member.id, note, entries if report.ok else [], report=report,
                      unchecked=max(0, len(evidence.records) - size), torn_tail=evidence.torn_tail)
    if report.ok:
        state.accept(member.id, note, [leaf_hash(e) for e in entries])
    return fetched


@dataclass(frozen=True)
class LogSources:
    """Where to read each service's log from, and the auditor's own state folder."""

    state: Path
    disk: Mapping[str, Path] = field(default_factory=dict)
    """Service id -> log folder on disk (read-only copies or stopped services)."""
    urls: Mapping[str, str] = field(default_factory=dict)
    """Service id -> base URL, overriding the trust list's endpoint."""
    token: str | None = None
    ssl_context: ssl.SSLContext | None = None
    timeout_seconds: float = 30.0


async def read_all(sources: LogSources, services: Sequence[Member], now: datetime) -> list[Fetched]:
    """Read and verify each service's log, in the order given."""
    state = StateFolder(sources.state)
    out: list[Fetched] = []
    timeout = aiohttp.ClientTimeout(total=sources.timeout_seconds)
    context = sources.ssl_context
    async with aiohttp.ClientSession(timeout=timeout,
                                     connector=aiohttp.TCPConnector(ssl=context) if context else None
                                     ) as session:
        for member in services:
            if member.id in sources.disk:
                out.append(await asyncio.to_thread(read_disk, member, sources.disk[member.id], state, now))
                continue
            base = sources.urls.get(member.id) or member.endpoint
            if not base:
                out.append(Fetched(member.id, None, [],
                                   error="no endpoint in the trust list; give --url or --log"))
                continue
            if not sources.token:
                raise AuditCommandError("give --token or set SIGNPOST_TOKEN (an auditor token), "
                                        "or --log ID=PATH")
            out.append(await fetch_http(session, member, base, sources.token, state, now,
                                        context is not None))
    return out


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
                                   (*problems, *report.discrepancies), report.refused, report.late_answers)


def reconcile_federation(sources: LogSources, broker: Member, nodes: Sequence[Member],
                         now: datetime) -> tuple[list[Fetched], auditor.ReconcileReport]:
    """Read every log (nodes first, then the broker) and reconcile them."""
    # Nodes first, then the broker: the broker logs a search before any node can see it, so
    # every node entry read has its search in the broker log read after it.
    results = asyncio.run(read_all(sources, [*nodes, broker], now))
    report = reconcile_fetched([f for f in results if f.ok], broker.id)
    # A search made between reading a node's log and the broker's can show an answer the node's
    # copy does not hold yet: read those nodes once more before reporting.
    behind = {d.node for d in report.discrepancies
              if d.kind is auditor.DiscrepancyKind.ANSWER_WITHOUT_NODE_ENTRY}
    if behind:
        again = asyncio.run(read_all(sources, [m for m in nodes if m.id in behind], now))
        fresh = {f.service: f for f in again}
        results = [fresh.get(f.service, f) for f in results]
        report = reconcile_fetched([f for f in results if f.ok], broker.id)
    return results, report


# --- access report --------------------------------------------------------------------------


def access_csv(rows: Sequence[dict[str, str]]) -> str:
    buffer = io.StringIO()
    writer = csv.DictWriter(buffer, fieldnames=auditor.ACCESS_COLUMNS, lineterminator="\n")
    writer.writeheader()
    writer.writerows(rows)
    return buffer.getvalue()


# The access report is HTML: autoescape on, so no value from a log entry is ever markup.
_TEMPLATES = Environment(loader=PackageLoader("trust", "templates"), autoescape=True,
                         undefined=StrictUndefined, trim_blocks=True, lstrip_blocks=True)

HEADINGS = {"time": "When", "query_id": "Query id", "log_index": "Log entry", "practitioner": "Who",
            "practitioner_id": "User id", "organisation": "Organisation", "role": "Role",
            "identity_provider": "Signed in with", "purpose": "Purpose", "on_behalf_of": "On behalf of",
            "outcome": "Answer", "how_matched": "Record"}


def access_html(rows: Sequence[dict[str, str]], *, node: str, node_name: str, record_id: str,
                checkpoint: Checkpoint | None, generated: datetime) -> str:
    """A page an authority can print or attach to its reply to a subject access request."""
    return _TEMPLATES.get_template("access-report.html").render(
        rows=rows, node=node, node_name=node_name, record_id=record_id, checkpoint=checkpoint,
        generated=generated, columns=auditor.ACCESS_COLUMNS, headings=HEADINGS)
