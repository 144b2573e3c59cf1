"""What the broker keeps for checks, in one SQLite file, so that a restart loses nobody's checks.

Two tables:

``searches``
    Per search id: who searched (issuer and subject), which authorities answered
    ``possible_match``, the professional a mediator named, and a keyed digest of the identity
    searched for (HMAC-SHA-256 with a random key kept in the file's ``meta`` table), so a check
    is about the child that was searched and nothing readable is kept. No answer and no
    identity. An entry lasts ``ttl_seconds`` (a check is asked soon after the search, or the
    practitioner searches again); at most ``max_searches`` are kept, the oldest dropped first.
``checks``
    Per check: who asked, which authority, how to reach the practitioner, the state the node
    last reported, when it expires, and whether the practitioner has news they have not seen
    or a notice still to be sent. Never the identity and never a disclosure.

The file sits beside the broker's audit log (``check_ledger`` names another place; without an
audit log, development only, it is kept in memory). One broker process owns it: several
replicas behind a load balancer each keep their own (see ``docs/decisions/0013``). Every call
runs on one thread that owns the connection, so the event loop never waits on the disk.
"""

from __future__ import annotations

import asyncio
import hashlib
import hmac
import json
import secrets
import sqlite3
from collections.abc import Callable, Iterable, Mapping
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import Any, TypeVar

from federation.canonical import canonical_json

MAX_SEARCHES = 100_000
DEFAULT_TTL_SECONDS = 24 * 3600
T = TypeVar("T")

SCHEMA = """
CREATE TABLE IF NOT EXISTS meta (key TEXT PRIMARY KEY, value TEXT NOT NULL);
CREATE TABLE IF NOT EXISTS searches (
    search_id TEXT PRIMARY KEY, issuer TEXT NOT NULL, sub TEXT NOT NULL, possible TEXT NOT NULL,
    identity_digest TEXT NOT NULL, on_behalf_of TEXT, expires REAL NOT NULL);
CREATE INDEX IF NOT EXISTS searches_expires ON searches (expires);
CREATE TABLE IF NOT EXISTS checks (
    id TEXT PRIMARY KEY, issuer TEXT NOT NULL, sub TEXT NOT NULL, created REAL NOT NULL, body TEXT NOT NULL);
"""


@dataclass(frozen=True)
class SearchRecord:
    """One search, as much as a later check needs."""

    issuer: str
    sub: str
    possible: frozenset[str]
    identity_digest: str
    expires: float
    on_behalf_of: Mapping[str, str] | None = None


class Ledger:
    """Searches and checks in SQLite (a file, or ``:memory:``), on a thread of its own."""

    def __init__(self, path: Path | None, ttl_seconds: float = DEFAULT_TTL_SECONDS,
                 max_searches: int = MAX_SEARCHES) -> None:
        self.path = path
        self.ttl_seconds = ttl_seconds
        self.max_searches = max_searches
        self._executor = ThreadPoolExecutor(1, thread_name_prefix="ledger")
        self._db: sqlite3.Connection | None = None
        self._key = self._executor.submit(self._open).result()

    # The worker thread owns the connection.

    def _open(self) -> bytes:
        if self.path is not None:
            self.path.parent.mkdir(parents=True, exist_ok=True)
            # It holds practitioners' contacts and the digest key: readable by this service only
            # (SQLite gives its journal files the same mode).
            self.path.touch(mode=0o600, exist_ok=True)
            self.path.chmod(0o600)
        db = sqlite3.connect(str(self.path) if self.path is not None else ":memory:", isolation_level=None)
        db.row_factory = sqlite3.Row
        if self.path is not None:
            db.execute("PRAGMA journal_mode=WAL")
            db.execute("PRAGMA synchronous=FULL")
        db.executescript(SCHEMA)
        row = db.execute("SELECT value FROM meta WHERE key='digest_key'").fetchone()
        if row is None:
            key = secrets.token_bytes(32)
            db.execute("INSERT INTO meta (key, value) VALUES ('digest_key', ?)", (key.hex(),))
        else:
            key = bytes.fromhex(row["value"])
        self._db = db
        return key

    def _conn(self) -> sqlite3.Connection:
        assert self._db is not None
        return self._db

    async def run(self, work: Callable[[sqlite3.Connection], T]) -> T:
        return await asyncio.get_running_loop().run_in_executor(self._executor, lambda: work(self._conn()))

    def run_sync(self, work: Callable[[sqlite3.Connection], T]) -> T:
        """For start-up, before the event loop serves anything."""
        return self._executor.submit(lambda: work(self._conn())).result()

    def close(self) -> None:
        def shut() -> None:
            if self._db is not None:
                self._db.close()
                self._db = None

        self._executor.submit(shut).result()
        self._executor.shutdown(wait=True)

    # --- searches ---------------------------------------------------------------------------

    def digest(self, identity_wire: Mapping[str, Any]) -> str:
        return hmac.new(self._key, canonical_json(dict(identity_wire)), hashlib.sha256).hexdigest()

    async def remember(self, search_id: str, issuer: str, sub: str, possible: Iterable[str],
                       identity_wire: Mapping[str, Any], now: float,
                       on_behalf_of: Mapping[str, str] | None = None) -> None:
        named = json.dumps(dict(on_behalf_of), sort_keys=True) if on_behalf_of else None
        row = (search_id, issuer, sub, json.dumps(sorted(possible)), self.digest(identity_wire), named,
               now + self.ttl_seconds)

        def write(db: sqlite3.Connection) -> None:
            with db:
                db.execute("DELETE FROM searches WHERE expires < ?", (now,))
                db.execute("INSERT OR REPLACE INTO searches VALUES (?, ?, ?, ?, ?, ?, ?)", row)
                over = db.execute("SELECT count(*) FROM searches").fetchone()[0] - self.max_searches
                if over > 0:
                    db.execute("DELETE FROM searches WHERE search_id IN (SELECT search_id FROM searches "
                               "ORDER BY expires LIMIT ?)", (over,))

        await self.run(write)

    async def search(self, search_id: str, now: float) -> SearchRecord | None:
        def read(db: sqlite3.Connection) -> SearchRecord | None:
            row = db.execute("SELECT * FROM searches WHERE search_id=? AND expires >= ?",
                             (search_id, now)).fetchone()
            if row is None:
                return None
            return SearchRecord(row["issuer"], row["sub"], frozenset(json.loads(row["possible"])),
                                row["identity_digest"], row["expires"],
                                json.loads(row["on_behalf_of"]) if row["on_behalf_of"] else None)

        return await self.run(read)

    # --- checks -----------------------------------------------------------------------------

    async def save_check(self, check_id: str, issuer: str, sub: str, created: float,
                         body: Mapping[str, Any]) -> None:
        text = json.dumps(dict(body), sort_keys=True)

        def write(db: sqlite3.Connection) -> None:
            with db:
                db.execute("INSERT OR REPLACE INTO checks VALUES (?, ?, ?, ?, ?)",
                           (check_id, issuer, sub, created, text))

        await self.run(write)

    async def delete_check(self, check_id: str) -> None:
        def delete(db: sqlite3.Connection) -> None:
            with db:
                db.execute("DELETE FROM checks WHERE id=?", (check_id,))

        await self.run(delete)

    def all_checks(self) -> list[dict[str, Any]]:
        """Every check kept, oldest first (read once at start)."""
        rows = self.run_sync(lambda db: db.execute("SELECT body FROM checks ORDER BY created").fetchall())
        return [json.loads(r["body"]) for r in rows]
