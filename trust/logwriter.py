"""The thread that writes and syncs an audit log's batches (``trust.tlog.AuditLog``).

Coroutines hand it whole batches (``run``) and await them; other threads hand it single
entries (``submit``) with a callback, and it writes every such entry already waiting in its
queue together, so a thread that answers queries gets group commit without a coroutine.
"""

from __future__ import annotations

import asyncio
import contextlib
import queue
import threading
from collections.abc import Callable, Sequence
from typing import Any


class WriterThread:
    """The one thread that writes and syncs a log's batches.

    A batch from the coroutines (``run``) goes over a ``queue.SimpleQueue`` and its outcome comes
    back through the event loop's ``call_soon_threadsafe``: one queue operation and one wake-up
    per batch, instead of an executor's work item, concurrent future and the callbacks chaining
    it to an asyncio one. Entries from other threads (``submit``) travel on the same queue, and
    every submitted entry already waiting there when the thread gets to one is written with it
    (group commit without a coroutine in between).
    """

    def __init__(self, name: str, write: Callable[[Sequence[bytes]], int], max_batch: int) -> None:
        self._write = write
        self._max_batch = max_batch
        self._jobs: queue.SimpleQueue[_Job] = queue.SimpleQueue()
        self._thread = threading.Thread(target=self._serve, name=name, daemon=True)
        self._thread.start()

    def _serve(self) -> None:
        jobs = self._jobs
        job: _Job = jobs.get()
        while job is not None:
            if not isinstance(job, _Submitted):
                job()
                job = jobs.get()
                continue
            batch = [job]
            job = _NOTHING
            while len(batch) < self._max_batch:
                try:
                    following = jobs.get_nowait()
                except queue.Empty:
                    break
                if isinstance(following, _Submitted):
                    batch.append(following)
                else:
                    job = following
                    break
            self._write_submitted(batch)
            if job is _NOTHING:
                job = jobs.get()

    def _write_submitted(self, batch: list[_Submitted]) -> None:
        try:
            first = self._write([item.payload for item in batch])
        except BaseException as exc:  # every entry of the batch is told
            for item in batch:
                _tell(item.done, exc)
            return
        for offset, item in enumerate(batch):
            _tell(item.done, first + offset)

    def submit(self, payload: bytes, done: Callable[[int | BaseException], None]) -> None:
        self._jobs.put(_Submitted(payload, done))

    def run(self, loop: asyncio.AbstractEventLoop, write: Callable[[Sequence[bytes]], int],
            payloads: Sequence[bytes]) -> asyncio.Future[int]:
        """``write(payloads)`` on this thread; the future gets its result or its exception."""
        future: asyncio.Future[int] = loop.create_future()

        def job() -> None:
            try:
                outcome: int | BaseException = write(payloads)
            except BaseException as exc:  # handed to the awaiting coroutine, raised there
                outcome = exc
            with contextlib.suppress(RuntimeError):  # a closed loop has nobody waiting any more
                loop.call_soon_threadsafe(settle, future, outcome)

        self._jobs.put(job)
        return future

    def stop(self) -> None:
        """Finish the batches handed over, then end the thread."""
        self._jobs.put(None)
        if self._thread is not threading.current_thread():
            self._thread.join()


class _Submitted:
    """One entry handed to ``AuditLog.submit``: its bytes, and whom to tell the outcome."""

    __slots__ = ("done", "payload")

    def __init__(self, payload: bytes, done: Callable[[int | BaseException], None]) -> None:
        self.payload = payload
        self.done = done


_Job = Callable[[], None] | _Submitted | None
_NOTHING: Any = object()  # no job taken from the queue yet


def _tell(done: Callable[[int | BaseException], None], outcome: int | BaseException) -> None:
    with contextlib.suppress(Exception):  # a caller's callback never stops the writer
        done(outcome)


def settle(future: asyncio.Future[int], outcome: int | BaseException) -> None:
    if future.cancelled():
        return
    if isinstance(outcome, BaseException):
        future.set_exception(outcome)
    else:
        future.set_result(outcome)
