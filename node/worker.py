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
import concurrent.futures
import contextlib
import queue
import sqlite3
import threading
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any, TypeVar

from federation.errors import SignpostError
from node.store import Store

T = TypeVar("T")


class StoreBusy(SignpostError):
    """The store could not be used in time (a lock held elsewhere, or a long queue)."""


class StoreWorker:
    """A single thread with the node's connection; ``run`` hands it a job and awaits the result.

    Jobs travel on a ``queue.SimpleQueue`` and results come back through the event loop's
    ``call_soon_threadsafe``: one queue operation and one wake-up per job, which is all a job on
    the query path should cost in hand-offs.
    """

    def __init__(self, path: Path, *, busy_timeout_seconds: float) -> None:
        self.busy_timeout_seconds = busy_timeout_seconds
        self._jobs: queue.SimpleQueue[Callable[[], None] | None] = queue.SimpleQueue()
        opened: concurrent.futures.Future[Store] = concurrent.futures.Future()
        self._thread = threading.Thread(target=self._serve, args=(path, opened), name="signpost-store",
                                        daemon=True)
        self._thread.start()
        self.store = opened.result()
        self.queued = 0

    def _serve(self, path: Path, opened: concurrent.futures.Future[Store]) -> None:
        try:
            store = Store(path, busy_timeout_seconds=self.busy_timeout_seconds)
        except BaseException as exc:
            opened.set_exception(exc)
            return
        opened.set_result(store)
        while (job := self._jobs.get()) is not None:
            job()
        store.close()

    def call(self, job: Callable[[Store], T], queued_at: float) -> T:
        """Run ``job(store)`` here, on the store's thread (from inside a job given to ``submit``),
        as ``run`` does: ``StoreBusy`` if the job waited too long since ``queued_at`` or the
        store stayed locked."""
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

    async def run(self, job: Callable[[Store], T]) -> T:
        """Run ``job(store)`` on the store's thread; ``StoreBusy`` if the store is not to be had."""
        if not self._thread.is_alive():
            raise StoreBusy("the store's thread has stopped")
        loop = asyncio.get_running_loop()
        future: asyncio.Future[T] = loop.create_future()
        queued_at = time.monotonic()

        def work() -> None:
            try:
                result = self.call(job, queued_at)
            except BaseException as exc:  # handed to the awaiting coroutine, raised there
                _settle(loop, _fail, future, exc)
            else:
                _settle(loop, _succeed, future, result)

        self.queued += 1
        try:
            self._jobs.put(work)
            return await future
        finally:
            self.queued -= 1

    def submit(self, job: Callable[[], None]) -> bool:
        """Queue ``job`` for the store's thread and return at once (``False`` if the thread has
        stopped). The job reports its own outcome; the query path uses this so that a query
        costs one hand-off to this thread and one back to the event loop (``node.answering``)."""
        if not self._thread.is_alive():
            return False
        self._jobs.put(job)
        return True

    def close(self) -> None:
        """Finish queued jobs, then close the connection on its own thread."""
        if self._thread.is_alive():
            self._jobs.put(None)
            self._thread.join()


def _settle(loop: asyncio.AbstractEventLoop, how: Callable[[asyncio.Future[T], Any], None],
            future: asyncio.Future[T], value: Any) -> None:
    """Hand a job's outcome to its loop; a loop already closed has nobody waiting for it."""
    with contextlib.suppress(RuntimeError):
        loop.call_soon_threadsafe(how, future, value)


def _succeed(future: asyncio.Future[T], result: T) -> None:
    if not future.cancelled():
        future.set_result(result)


def _fail(future: asyncio.Future[T], exc: BaseException) -> None:
    if not future.cancelled():
        future.set_exception(exc)
