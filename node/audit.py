"""What a node writes to its audit log: every query (answered or refused), purge and import.

Entries are JSON objects (logged as canonical JSON). They name the query by its id and the hash
of the exact signed envelope, the practitioner and purpose the broker vouched for, the outcome,
and -- when a record matched -- the node-internal ``pseudonym`` of that record (never its
``record_id`` or any identity field), so the authority can later answer a subject access
request from its own log. The node never logs the identity searched for.

The builders are pure; ``record`` is the helper the import and purge commands and the demo use,
and ``drain_pending`` what the running node uses to pick up what they queued.
"""

from __future__ import annotations

import base64
import contextlib
import functools
import json
import logging
from collections.abc import AsyncIterator, Awaitable, Callable, Iterable, Mapping
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path
from typing import Any

from federation.canonical import JsonObject, canonical_json
from federation.protocol import QueryClaims, QueryId
from federation.tasks import every
from node.store import Store
from node.worker import StoreWorker
from trust.envelope import envelope_hash
from trust.logapi import LogService
from trust.tlog import AuditLog, LogInUseError

log = logging.getLogger("signpost.node.audit")

ENTRY_VERSION = 1


def _time(now: datetime) -> str:
    return now.isoformat(timespec="milliseconds")


def token_hash(token: str) -> str | None:
    """The envelope hash of ``token``, or None if it is not even ASCII."""
    try:
        return envelope_hash(token)
    except UnicodeEncodeError:
        return None


def claimed_query_id(token: str) -> str | None:
    """The ``jti`` a token claims, read without verifying it (for refusals only)."""
    parts = token.split(".")
    if len(parts) != 3 or len(parts[1]) > 64 * 1024:
        return None
    try:
        payload = json.loads(base64.urlsafe_b64decode(parts[1] + "=" * (-len(parts[1]) % 4)))
    except (ValueError, UnicodeDecodeError):
        return None
    jti = payload.get("jti") if isinstance(payload, dict) else None
    return jti[:200] if isinstance(jti, str) else None


PRACTITIONER_FIELDS = ("iss", "sub", "name", "org", "role", "authority")


@dataclass(frozen=True)
class QueryContext:
    """The part of a query entry known once the envelope is verified: which query, from whom, why."""

    query_id: QueryId
    query_hash: str
    broker: str
    practitioner: Mapping[str, str]
    purpose: str | None
    on_behalf_of: Mapping[str, str] | None

    def to_wire(self) -> dict[str, object]:
        return {"query_id": self.query_id, "query_hash": self.query_hash, "broker": self.broker,
                "practitioner": dict(self.practitioner), "purpose": self.purpose,
                "on_behalf_of": dict(self.on_behalf_of) if self.on_behalf_of is not None else None}


def query_context(claims: QueryClaims, token: str) -> QueryContext:
    """Who searched and why, as the broker vouched for it in the signed query."""
    who = claims.practitioner or {}
    return QueryContext(
        query_id=claims.query_id,
        query_hash=envelope_hash(token),
        broker=claims.iss,
        practitioner={k: v for k in PRACTITIONER_FIELDS if isinstance(v := who.get(k), str)},
        purpose=claims.purpose,
        on_behalf_of=claims.on_behalf_of,
    )


def query_entry(node_id: str, now: datetime, context: QueryContext, *, outcome: str,
                pseudonym: str | None = None, candidates: Iterable[str] = (),
                answer_hash: str | None = None, reason: str | None = None,
                notifications: Mapping[str, int] | None = None) -> JsonObject:
    """A verified query: answered (``answer_hash`` set) or refused after verification (``reason``).

    ``notifications`` counts the messages the answer put in the outbox, by kind (``access``:
    notify-on-access; ``lead``: the lead practitioner told of a disclosed match); each message's
    delivery is an entry of its own (``notification``)."""
    entry: JsonObject = {
        "v": ENTRY_VERSION,
        "type": "query",
        "node": node_id,
        "time": _time(now),
        **context.to_wire(),
        "outcome": outcome,
        "pseudonym": pseudonym,
        "candidate_pseudonyms": sorted(set(candidates)),
        "answer_hash": answer_hash,
    }
    if reason is not None:
        entry["reason"] = reason
    if notifications:
        entry["notifications"] = dict(notifications)
    return entry


def refused_entry(node_id: str, now: datetime, token: str, kind: str, reason: str) -> JsonObject:
    """A query that failed verification: its claimed id (unverified) and hash, and why."""
    return {
        "v": ENTRY_VERSION,
        "type": "refused",
        "node": node_id,
        "time": _time(now),
        "claimed_query_id": claimed_query_id(token),
        "query_hash": token_hash(token),
        "kind": kind,
        "reason": reason[:500],
    }


def import_entry(node_id: str, now: datetime, summary: Mapping[str, Any], *, full: bool,
                 children_file: str, involvements_file: str) -> JsonObject:
    """An import: counts only (``ImportSummary.to_json``), and the file names."""
    return {
        "v": ENTRY_VERSION,
        "type": "import",
        "node": node_id,
        "time": _time(now),
        "full": full,
        "children_file": children_file,
        "involvements_file": involvements_file,
        **dict(summary),
    }


def record(store: Store, log_path: Path | None, entry: Mapping[str, Any]) -> str:
    """Log ``entry`` from outside the running node (import command, command-line purge, demo).

    Appends straight to the log when it is free and has signed a checkpoint; otherwise (the
    node runs and holds the log's lock, or the log has never been signed) the entry waits in the
    store's ``audit_pending`` table and the node logs it at start and then within
    ``PENDING_INTERVAL_SECONDS``. Returns where it went, for the command's output.
    """
    if log_path is None:
        return "not logged (no audit_log configured)"
    with contextlib.suppress(LogInUseError), AuditLog.open(log_path) as audit:
        # A log that has never signed a checkpoint takes entries only from the node itself, so
        # that a non-empty log without a checkpoint always means its checkpoint was removed.
        if audit.latest_checkpoint is not None:
            return f"audit log entry {audit.append_sync(entry)}"
    with store.transaction() as conn:
        conn.execute("INSERT INTO audit_pending (entry) VALUES (?)",
                     (canonical_json(dict(entry)).decode("utf-8"),))
    return "queued for the node's audit log (logged when the node runs)"


PENDING_INTERVAL_SECONDS = 2.0
"""How often a running node moves entries from ``audit_pending`` into its log."""


def _delete_pending(store: Store, *, entry_id: int) -> None:
    store.db.execute("DELETE FROM audit_pending WHERE id = ?", (entry_id,))


async def drain_pending(worker: StoreWorker,
                        append: Callable[[Mapping[str, Any]], Awaitable[int]]) -> int:
    """Append every waiting entry in order, deleting each once it is durable; return how many.

    The store is read and written on its own thread (``worker``), one short statement at a time.
    """
    rows = await worker.run(lambda store: store.db.execute(
        "SELECT id, entry FROM audit_pending ORDER BY id LIMIT 1000").fetchall())
    for row in rows:
        await append(json.loads(row["entry"]))
        await worker.run(functools.partial(_delete_pending, entry_id=row["id"]))
    return len(rows)


def pending_worker(worker: StoreWorker, service: LogService) -> Callable[[Any], AsyncIterator[None]]:
    """A ``cleanup_ctx`` that logs queued entries at start and every ``PENDING_INTERVAL_SECONDS``."""

    async def context(_: Any) -> AsyncIterator[None]:
        # A failed round is retried next round; the rows stay queued.
        async with every(PENDING_INTERVAL_SECONDS, lambda: drain_pending(worker, service.append), log=log,
                         failure="queued audit entries not logged yet"):
            yield

    return context
