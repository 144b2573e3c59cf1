"""Notify-on-access messages: a durable outbox in the node's SQLite file and the worker that sends it.

When someone from another organisation searches for a child, each involvement marked
notify-on-access gets a message (see ``node.policy.notifications``). The node writes it to the
``outbox`` table before it answers the query, so a message exists as soon as the search does
and survives a restart. A background worker delivers due messages as HTTP POSTs whose body is a
compact JWS (EdDSA, ``typ`` ``signpost-notification+jwt``) signed with the node's key from the
trust list; the receiver verifies it against the node's published key. Delivery is
at-least-once: a message is marked delivered only after a 2xx answer, and its ``jti`` stays the
same on every attempt so the receiver can drop duplicates. Failed attempts are retried with
exponential back-off until the message is older than ``max_age_seconds``, then marked failed.
"""

from __future__ import annotations

import asyncio
import contextlib
import functools
import json
import logging
import uuid
from collections.abc import AsyncIterator, Awaitable, Callable, Iterable, Mapping
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

import aiohttp
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

from federation.canonical import JsonObject
from node.store import Store
from node.worker import StoreBusy, StoreWorker
from trust import envelope

log = logging.getLogger("signpost.node.outbox")

NOTIFICATION_TYPE = "signpost-notification+jwt"
CONTENT_TYPE = "application/jose"
SIGNATURE_LIFETIME_SECONDS = 300


@dataclass(frozen=True)
class RetryPolicy:
    """Exponential back-off: ``base * 2**(attempts-1)`` seconds, at most ``cap``."""

    base_seconds: float = 5.0
    cap_seconds: float = 3600.0
    max_age_seconds: float = 3 * 86400.0
    timeout_seconds: float = 10.0

    def delay(self, attempts: int) -> float:
        return float(min(self.cap_seconds, self.base_seconds * 2 ** max(0, attempts - 1)))


@dataclass(frozen=True)
class OutboxItem:
    """One message waiting (or no longer waiting) to be sent."""

    id: str
    child_record_id: str
    url: str
    payload: Mapping[str, Any]
    created: float
    attempts: int
    next_attempt: float
    delivered: float | None
    failed: float | None
    last_error: str | None


def _ms(seconds: float) -> int:
    return int(seconds * 1000)


def _item(row: Any) -> OutboxItem:
    return OutboxItem(
        id=row["id"], child_record_id=row["child_record_id"], url=row["url"],
        payload=json.loads(row["payload"]), created=row["created"] / 1000,
        attempts=row["attempts"], next_attempt=row["next_attempt"] / 1000,
        delivered=row["delivered"] / 1000 if row["delivered"] is not None else None,
        failed=row["failed"] / 1000 if row["failed"] is not None else None,
        last_error=row["last_error"],
    )


class Outbox:
    """The ``outbox`` table of one node's store. Times are Unix seconds (stored as milliseconds)."""

    def __init__(self, store: Store) -> None:
        self.store = store

    def enqueue(self, messages: Iterable[Mapping[str, Any]], now: float) -> list[str]:
        """Write messages (as made by ``node.policy.notifications``) in one transaction."""
        ids = []
        with self.store.transaction() as conn:
            for message in messages:
                item_id = str(uuid.uuid4())
                body = {k: v for k, v in message.items() if k != "url"}
                conn.execute(
                    "INSERT INTO outbox (id, child_record_id, url, payload, created, next_attempt) "
                    "VALUES (?, ?, ?, ?, ?, ?)",
                    (item_id, str(message["child_record_id"]), str(message["url"]),
                     json.dumps(body, sort_keys=True), _ms(now), _ms(now)),
                )
                ids.append(item_id)
        return ids

    def due(self, now: float, limit: int = 50) -> list[OutboxItem]:
        rows = self.store.db.execute(
            "SELECT * FROM outbox WHERE delivered IS NULL AND failed IS NULL AND next_attempt <= ? "
            "ORDER BY next_attempt LIMIT ?", (_ms(now), limit))
        return [_item(r) for r in rows]

    def next_due(self) -> float | None:
        row = self.store.db.execute(
            "SELECT min(next_attempt) FROM outbox WHERE delivered IS NULL AND failed IS NULL").fetchone()
        return row[0] / 1000 if row[0] is not None else None

    def get(self, item_id: str) -> OutboxItem | None:
        row = self.store.db.execute("SELECT * FROM outbox WHERE id=?", (item_id,)).fetchone()
        return _item(row) if row else None

    def items(self) -> list[OutboxItem]:
        return [_item(r) for r in self.store.db.execute("SELECT * FROM outbox ORDER BY created, id")]

    def pending(self) -> int:
        return int(self.store.db.execute(
            "SELECT count(*) FROM outbox WHERE delivered IS NULL AND failed IS NULL").fetchone()[0])

    def mark_delivered(self, item_id: str, now: float) -> None:
        with self.store.transaction() as conn:
            conn.execute("UPDATE outbox SET delivered=?, attempts=attempts+1, last_error=NULL WHERE id=?",
                         (_ms(now), item_id))

    def mark_attempt_failed(self, item: OutboxItem, now: float, error: str, retry: RetryPolicy) -> bool:
        """Record a failed attempt: schedule the next one, or give up when the message is too old
        (``True``)."""
        attempts = item.attempts + 1
        next_attempt = now + retry.delay(attempts)
        give_up = next_attempt - item.created > retry.max_age_seconds
        with self.store.transaction() as conn:
            conn.execute(
                "UPDATE outbox SET attempts=?, next_attempt=?, last_error=?, failed=? WHERE id=?",
                (attempts, _ms(next_attempt), error[:200], _ms(now) if give_up else None, item.id))
        if give_up:
            log.error("notification %s given up after %d attempts: %s", item.id, attempts, error)
        return give_up

    def prune_delivered(self, before: float) -> int:
        """Delete messages delivered (or given up) before ``before``; they hold who searched."""
        with self.store.transaction() as conn:
            cur = conn.execute("DELETE FROM outbox WHERE coalesce(delivered, failed) < ?", (_ms(before),))
        return int(cur.rowcount)


def sign_notification(item: OutboxItem, key: Ed25519PrivateKey, node_id: str, now: float) -> str:
    """The body of one delivery attempt: the message as a JWS signed now, ``jti`` = the message id."""
    iat = int(now)
    claims = {
        **item.payload,
        "v": 1,
        "iss": node_id,
        "aud": item.url,
        "iat": iat,
        "exp": iat + SIGNATURE_LIFETIME_SECONDS,
        "jti": item.id,
    }
    return envelope.sign(claims, key, NOTIFICATION_TYPE)


def delivery_entry(node_id: str, item: OutboxItem, outcome: str, now: float) -> JsonObject:
    """The audit entry for one message's fate (``delivered``, or ``failed`` once given up): its
    id (the ``jti`` the receiver saw), its kind and what it was about; never who searched again."""
    refs = {k: item.payload[k] for k in ("query_id", "check_id") if isinstance(item.payload.get(k), str)}
    return {"v": 1, "type": "notification", "node": node_id,
            "time": datetime.fromtimestamp(now, UTC).isoformat(timespec="milliseconds"),
            "notification_id": item.id, "kind": str(item.payload.get("type")), **refs,
            "attempts": item.attempts + 1, "outcome": outcome}


class DeliveryWorker:
    """Sends due outbox messages until cancelled; woken at once by ``wake`` after an enqueue.

    With ``audit``, each message delivered or given up is an entry in the node's log
    (``delivery_entry``); an entry that cannot be logged is reported, the message's state stands.
    """

    def __init__(self, outbox: Outbox, key: Ed25519PrivateKey, node_id: str, retry: RetryPolicy,
                 *, clock: Callable[[], float], worker: StoreWorker, poll_seconds: float = 30.0,
                 ssl: Any = None, unsafe_http: bool = False,
                 audit: Callable[[Mapping[str, Any]], Awaitable[object]] | None = None) -> None:
        self.outbox = outbox
        self.worker = worker
        self.key = key
        self.node_id = node_id
        self.retry = retry
        self.clock = clock
        self.poll_seconds = poll_seconds
        self.ssl = ssl
        self.unsafe_http = unsafe_http
        self.audit = audit
        self._wake = asyncio.Event()

    async def _record(self, item: OutboxItem, outcome: str, now: float) -> None:
        if self.audit is None:
            return
        try:
            await self.audit(delivery_entry(self.node_id, item, outcome, now))
        except Exception:  # the delivery happened (or was given up) whether or not it is logged
            log.exception("notification %s: %s, but its audit entry was not logged", item.id, outcome)

    def wake(self) -> None:
        self._wake.set()

    async def deliver(self, session: aiohttp.ClientSession, item: OutboxItem) -> bool:
        """One attempt at one message; records the outcome; ``True`` when delivered."""
        if not item.url.startswith("https://") and not self.unsafe_http:
            # Closed by default: a signed message about a child never travels in clear text.
            now = self.clock()
            gave_up = await self.worker.run(lambda _: self.outbox.mark_attempt_failed(
                item, now, "refused: not an https:// URL (unsafe_http_webhooks is off)", self.retry))
            log.error("notification %s refused: not an https:// URL (unsafe_http_webhooks is off)", item.id)
            if gave_up:
                await self._record(item, "failed", now)
            return False
        body = sign_notification(item, self.key, self.node_id, self.clock())
        try:
            async with asyncio.timeout(self.retry.timeout_seconds), session.post(
                item.url, data=body.encode("ascii"), ssl=self.ssl,
                headers={"Content-Type": CONTENT_TYPE, "Signpost-Notification-Id": item.id},
            ) as response:
                await response.read()
                if 200 <= response.status < 300:
                    now = self.clock()
                    await self.worker.run(lambda _: self.outbox.mark_delivered(item.id, now))
                    log.info("notification %s delivered (query %s)", item.id, item.payload.get("query_id"))
                    await self._record(item, "delivered", now)
                    return True
                error = f"HTTP {response.status}"
        except TimeoutError:
            error = "timed out"
        except (aiohttp.ClientError, OSError, ValueError) as exc:
            error = exc.__class__.__name__
        now = self.clock()
        gave_up = await self.worker.run(
            lambda _: self.outbox.mark_attempt_failed(item, now, error, self.retry))
        log.warning("notification %s not delivered (%s); attempt %d", item.id, error, item.attempts + 1)
        if gave_up:
            await self._record(item, "failed", now)
        return False

    def _due(self, _: Store, *, now: float) -> list[OutboxItem]:
        return self.outbox.due(now)

    async def run_once(self, session: aiohttp.ClientSession) -> int:
        """Attempt every message due now; return how many were delivered."""
        delivered = 0
        while True:
            now = self.clock()
            due = await self.worker.run(functools.partial(self._due, now=now))
            if not due:
                return delivered
            results = await asyncio.gather(*(self.deliver(session, item) for item in due))
            delivered += sum(results)
            if len(due) < 50:
                return delivered

    async def run(self) -> None:
        async with aiohttp.ClientSession() as session:
            while True:
                self._wake.clear()
                try:
                    await self.run_once(session)
                except Exception:  # keep the worker alive; the message stays in the outbox
                    log.exception("notification worker: delivery round failed")
                try:
                    next_due = await self.worker.run(lambda _: self.outbox.next_due())
                except StoreBusy:
                    next_due = None
                wait = self.poll_seconds
                if next_due is not None:
                    wait = min(wait, max(0.0, next_due - self.clock()))
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(self._wake.wait(), timeout=max(wait, 0.01))


async def run_worker(worker: DeliveryWorker) -> AsyncIterator[None]:
    """For ``app.cleanup_ctx``: start the worker, cancel it on shutdown (the outbox keeps the rest)."""
    task = asyncio.create_task(worker.run())
    yield
    task.cancel()
    with contextlib.suppress(asyncio.CancelledError):
        await task
