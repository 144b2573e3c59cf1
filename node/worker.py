"""The one thread that owns the node's SQLite connection.

Everything the running node does with its store -- a query's replay check, match, policy and
outbox write; the notification worker's reads and updates; moving queued audit entries into the
log -- runs as a job on this thread, one job at a time, so the event loop never waits on disk or
on a lock. A job that cannot get the store (another process holds the write lock for longer
than the busy timeout, or the job waited that long in the queue behind others) raises
``StoreBusy``, which the API turns into 503 ``node-busy`` with ``Retry-After``.

Bulk work that would hold the thread for long (imports, purges, index builds) uses connections
of its own with short transactions instead (``Store.separate``).
"""

from __future__ import annotations

import asyncio
import sqlite3
import time
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import TypeVar

from federation.errors import SignpostError
from node.store import Store

T = TypeVar("T")


class StoreBusy(SignpostError):
    """The store could not be used in time (a lock held elsewhere, or a long queue)."""


class StoreWorker:
    """A single thread with the node's connection; ``run`` hands it a job and awaits the result."""

    def __init__(self, path: Path, *, busy_timeout_seconds: float) -> None:
        self.busy_timeout_seconds = busy_timeout_seconds
        self._executor = ThreadPoolExecutor(max_workers=1, thread_name_prefix="signpost-store")
        self.store = self._executor.submit(
            Store, path, busy_timeout_seconds=busy_timeout_seconds).result()
        self.queued = 0

    async def run(self, job: Callable[[Store], T]) -> T:
        """Run ``job(store)`` on the store's thread; ``StoreBusy`` if the store is not to be had."""
        queued_at = time.monotonic()

        def call() -> T:
            if time.monotonic() - queued_at > self.busy_timeout_seconds:
                # Waited behind jobs that were waiting on a lock: the store is busy for this one too.
                raise StoreBusy(f"waited more than {self.busy_timeout_seconds:g} s for the store")
            try:
                return job(self.store)
            except sqlite3.OperationalError as exc:
                if self.store.db.in_transaction:
                    self.store.db.execute("ROLLBACK")
                if exc.sqlite_errorcode & 0xFF in (sqlite3.SQLITE_BUSY, sqlite3.SQLITE_LOCKED):
                    raise StoreBusy(f"store: {exc}") from exc
                raise

        self.queued += 1
        try:
            return await asyncio.get_running_loop().run_in_executor(self._executor, call)
        finally:
            self.queued -= 1

    def close(self) -> None:
        """Finish queued jobs, then close the connection on its own thread."""
        self._executor.submit(self.store.close).result()
        self._executor.shutdown(wait=True)
