"""What the broker keeps for checks, so that a restart (or another replica) loses nobody's checks.

Two kinds of record:

searches
    Per search id: who searched (issuer and subject), which authorities answered
    ``possible_match``, the professional a mediator named, and a keyed digest of the identity
    searched for (HMAC-SHA-256 with a random key the ledger keeps), so a check is about the child
    that was searched and nothing readable is kept. No answer and no identity. A search is kept
    ``ttl_seconds`` (a check is asked soon after the search, or the practitioner searches again).
checks
    Per check: who asked, which authority, how to reach the practitioner, the state the node
    last reported, when it expires, and whether the practitioner has news they have not seen
    or a notice still to be sent. Never the identity and never a disclosure.

Two ledgers with the same behaviour, chosen as the broker's other shared state is:
``RedisLedger`` when the broker has a Redis URL (every replica behind a load balancer sees every
check; one replica at a time follows them up, ``lease``), otherwise ``SqliteLedger``, a SQLite
file beside the audit log (``check_ledger`` names another place; without an audit log,
development only, it is kept in memory). Both survive a broker restart; the Redis one as long as
Redis persists its data. If the ledger cannot be asked, ``LedgerUnavailable`` is raised and the
check routes answer 503 (see ``docs/decisions/0013``).
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
from typing import Any, Protocol, TypeVar

from redis.asyncio import Redis
from redis.asyncio.retry import Retry
from redis.backoff import NoBackoff
from redis.exceptions import RedisError

from federation.canonical import canonical_json
from federation.errors import SignpostError

MAX_SEARCHES = 100_000
DEFAULT_TTL_SECONDS = 24 * 3600
T = TypeVar("T")


class LedgerUnavailable(SignpostError):
    """The ledger could not be asked (Redis did not answer, the file cannot be written)."""


@dataclass(frozen=True)
class SearchRecord:
    """One search, as much as a later check needs."""

    issuer: str
    sub: str
    possible: frozenset[str]
    identity_digest: str
    expires: float
    on_behalf_of: Mapping[str, str] | None = None

    def to_json(self) -> str:
        return json.dumps({"issuer": self.issuer, "sub": self.sub, "possible": sorted(self.possible),
                           "identity_digest": self.identity_digest, "expires": self.expires,
                           "on_behalf_of": dict(self.on_behalf_of) if self.on_behalf_of else None},
                          sort_keys=True)

    @classmethod
    def from_json(cls, text: str | bytes) -> SearchRecord:
        data = json.loads(text)
        return cls(data["issuer"], data["sub"], frozenset(data["possible"]), data["identity_digest"],
                   float(data["expires"]), data.get("on_behalf_of"))


class Ledger(Protocol):
    """What the check service needs of a ledger."""

    ttl_seconds: float

    async def digest(self, identity_wire: Mapping[str, Any]) -> str: ...

    async def remember(self, search_id: str, issuer: str, sub: str, possible: Iterable[str],
                       identity_wire: Mapping[str, Any], now: float,
                       on_behalf_of: Mapping[str, str] | None = None) -> None: ...

    async def search(self, search_id: str, now: float) -> SearchRecord | None: ...

    async def save_check(self, check_id: str, issuer: str, sub: str, created: float,
                         body: Mapping[str, Any]) -> None: ...

    async def delete_check(self, check_id: str) -> None: ...

    async def check(self, check_id: str) -> dict[str, Any] | None: ...

    async def checks_of(self, issuer: str, sub: str) -> list[dict[str, Any]]: ...

    async def all_checks(self) -> list[dict[str, Any]]: ...

    async def lease(self, name: str, seconds: float) -> bool: ...

    async def close(self) -> None: ...


def _digest(key: bytes, identity_wire: Mapping[str, Any]) -> str:
    return hmac.new(key, canonical_json(dict(identity_wire)), hashlib.sha256).hexdigest()


def _record(issuer: str, sub: str, possible: Iterable[str], digest: str, now: float,
            ttl: float, on_behalf_of: Mapping[str, str] | None) -> SearchRecord:
    return SearchRecord(issuer, sub, frozenset(possible), digest, now + ttl,
                        dict(on_behalf_of) if on_behalf_of else None)


# --- SQLite -----------------------------------------------------------------------------------

SCHEMA = """
CREATE TABLE IF NOT EXISTS meta (key TEXT PRIMARY KEY, value TEXT NOT NULL);
CREATE TABLE IF NOT EXISTS searches (
    search_id TEXT PRIMARY KEY, record TEXT NOT NULL, expires REAL NOT NULL);
CREATE INDEX IF NOT EXISTS searches_expires ON searches (expires);
CREATE TABLE IF NOT EXISTS checks (
    id TEXT PRIMARY KEY, issuer TEXT NOT NULL, sub TEXT NOT NULL, created REAL NOT NULL, body TEXT NOT NULL);
CREATE INDEX IF NOT EXISTS checks_owner ON checks (issuer, sub);
"""


class SqliteLedger:
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
        try:
            return await asyncio.get_running_loop().run_in_executor(self._executor,
                                                                    lambda: work(self._conn()))
        except sqlite3.Error as exc:
            raise LedgerUnavailable(f"check ledger: {exc.__class__.__name__}") from exc

    async def close(self) -> None:
        def shut() -> None:
            if self._db is not None:
                self._db.close()
                self._db = None

        await asyncio.get_running_loop().run_in_executor(self._executor, shut)
        self._executor.shutdown(wait=True)

    async def digest(self, identity_wire: Mapping[str, Any]) -> str:
        return _digest(self._key, identity_wire)

    async def remember(self, search_id: str, issuer: str, sub: str, possible: Iterable[str],
                       identity_wire: Mapping[str, Any], now: float,
                       on_behalf_of: Mapping[str, str] | None = None) -> None:
        record = _record(issuer, sub, possible, await self.digest(identity_wire), now,
                         self.ttl_seconds, on_behalf_of)

        def write(db: sqlite3.Connection) -> None:
            with db:
                db.execute("DELETE FROM searches WHERE expires < ?", (now,))
                db.execute("INSERT OR REPLACE INTO searches VALUES (?, ?, ?)",
                           (search_id, record.to_json(), record.expires))
                over = db.execute("SELECT count(*) FROM searches").fetchone()[0] - self.max_searches
                if over > 0:
                    db.execute("DELETE FROM searches WHERE search_id IN (SELECT search_id FROM searches "
                               "ORDER BY expires LIMIT ?)", (over,))

        await self.run(write)

    async def search(self, search_id: str, now: float) -> SearchRecord | None:
        row = await self.run(lambda db: db.execute(
            "SELECT record FROM searches WHERE search_id=? AND expires >= ?", (search_id, now)).fetchone())
        return SearchRecord.from_json(row["record"]) if row is not None else None

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

    async def check(self, check_id: str) -> dict[str, Any] | None:
        row = await self.run(lambda db: db.execute("SELECT body FROM checks WHERE id=?",
                                                   (check_id,)).fetchone())
        return json.loads(row["body"]) if row is not None else None

    async def checks_of(self, issuer: str, sub: str) -> list[dict[str, Any]]:
        rows = await self.run(lambda db: db.execute(
            "SELECT body FROM checks WHERE issuer=? AND sub=? ORDER BY created", (issuer, sub)).fetchall())
        return [json.loads(r["body"]) for r in rows]

    async def all_checks(self) -> list[dict[str, Any]]:
        rows = await self.run(lambda db: db.execute("SELECT body FROM checks ORDER BY created").fetchall())
        return [json.loads(r["body"]) for r in rows]

    async def lease(self, name: str, seconds: float) -> bool:
        """One broker owns its file: it always holds the lease."""
        return True


# --- Redis ------------------------------------------------------------------------------------


def _owner(issuer: str, sub: str) -> str:
    return hashlib.sha256(f"{issuer}\x00{sub}".encode()).hexdigest()


class RedisLedger:
    """Searches and checks in Redis, shared by every broker replica.

    Keys under ``prefix``: ``digest-key`` (set once, by the first replica), ``search:<id>`` (with
    an expiry), ``check:<id>``, the set ``checks`` of every check id and ``owner:<hash>`` of each
    practitioner's (named by a hash of issuer and subject), and ``lease:<name>``.
    """

    def __init__(self, url: str, *, prefix: str, ttl_seconds: float = DEFAULT_TTL_SECONDS,
                 timeout_seconds: float = 0.5) -> None:
        self.prefix = prefix
        self.ttl_seconds = ttl_seconds
        self._timeout = timeout_seconds
        self._key: bytes | None = None
        self.redis = Redis.from_url(url, socket_timeout=timeout_seconds,
                                    socket_connect_timeout=timeout_seconds, retry=Retry(NoBackoff(), 0),
                                    health_check_interval=0)

    async def _call(self, method: str, *args: Any, **kwargs: Any) -> Any:
        try:
            async with asyncio.timeout(self._timeout * 2):
                return await getattr(self.redis, method)(*args, **kwargs)
        except (RedisError, OSError, TimeoutError) as exc:
            raise LedgerUnavailable(f"check ledger: Redis did not answer ({exc.__class__.__name__})") from exc

    async def digest(self, identity_wire: Mapping[str, Any]) -> str:
        if self._key is None:
            name = f"{self.prefix}:digest-key"
            await self._call("set", name, secrets.token_bytes(32).hex(), nx=True)
            stored = await self._call("get", name)
            if stored is None:
                raise LedgerUnavailable("check ledger: the digest key is missing from Redis")
            self._key = bytes.fromhex(stored.decode() if isinstance(stored, bytes) else str(stored))
        return _digest(self._key, identity_wire)

    async def remember(self, search_id: str, issuer: str, sub: str, possible: Iterable[str],
                       identity_wire: Mapping[str, Any], now: float,
                       on_behalf_of: Mapping[str, str] | None = None) -> None:
        record = _record(issuer, sub, possible, await self.digest(identity_wire), now,
                         self.ttl_seconds, on_behalf_of)
        await self._call("set", f"{self.prefix}:search:{search_id}", record.to_json(),
                         ex=max(1, int(self.ttl_seconds)))

    async def search(self, search_id: str, now: float) -> SearchRecord | None:
        text = await self._call("get", f"{self.prefix}:search:{search_id}")
        if text is None:
            return None
        record = SearchRecord.from_json(text)
        return record if record.expires >= now else None

    async def save_check(self, check_id: str, issuer: str, sub: str, created: float,
                         body: Mapping[str, Any]) -> None:
        async def write() -> None:
            async with self.redis.pipeline(transaction=True) as pipe:
                pipe.set(f"{self.prefix}:check:{check_id}", json.dumps(dict(body), sort_keys=True))
                pipe.sadd(f"{self.prefix}:checks", check_id)
                pipe.sadd(f"{self.prefix}:owner:{_owner(issuer, sub)}", check_id)
                await pipe.execute()

        await self._call_work(write)

    async def _call_work(self, work: Callable[[], Any]) -> Any:
        try:
            async with asyncio.timeout(self._timeout * 2):
                return await work()
        except (RedisError, OSError, TimeoutError) as exc:
            raise LedgerUnavailable(f"check ledger: Redis did not answer ({exc.__class__.__name__})") from exc

    async def delete_check(self, check_id: str) -> None:
        body = await self.check(check_id)

        async def delete() -> None:
            async with self.redis.pipeline(transaction=True) as pipe:
                pipe.delete(f"{self.prefix}:check:{check_id}")
                pipe.srem(f"{self.prefix}:checks", check_id)
                if body is not None:
                    pipe.srem(f"{self.prefix}:owner:{_owner(body['issuer'], body['sub'])}", check_id)
                await pipe.execute()

        await self._call_work(delete)

    async def check(self, check_id: str) -> dict[str, Any] | None:
        text = await self._call("get", f"{self.prefix}:check:{check_id}")
        return json.loads(text) if text is not None else None

    async def _bodies(self, ids: Iterable[Any]) -> list[dict[str, Any]]:
        names = [f"{self.prefix}:check:{i.decode() if isinstance(i, bytes) else i}" for i in ids]
        if not names:
            return []
        texts = await self._call("mget", names)
        found = [json.loads(t) for t in texts if t is not None]
        return sorted(found, key=lambda b: float(b.get("created", 0)))

    async def checks_of(self, issuer: str, sub: str) -> list[dict[str, Any]]:
        return await self._bodies(await self._call("smembers", f"{self.prefix}:owner:{_owner(issuer, sub)}"))

    async def all_checks(self) -> list[dict[str, Any]]:
        return await self._bodies(await self._call("smembers", f"{self.prefix}:checks"))

    async def lease(self, name: str, seconds: float) -> bool:
        """Whether this replica may do ``name`` now: the first to ask in ``seconds`` may."""
        return bool(await self._call("set", f"{self.prefix}:lease:{name}", "1", nx=True,
                                     px=max(50, int(seconds * 1000))))

    async def close(self) -> None:
        await self.redis.aclose()


def create_ledger(path: Path | None, redis_url: str | None, *, prefix: str,
                  timeout_seconds: float = 0.5) -> Ledger:
    """A Redis ledger when a URL is configured, otherwise the SQLite one at ``path``."""
    if redis_url:
        return RedisLedger(redis_url, prefix=prefix, timeout_seconds=timeout_seconds)
    return SqliteLedger(path)
