"""Background jobs that a service runs on a fixed interval for as long as it serves."""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import AsyncIterator, Awaitable, Callable
from typing import TypeVar

T = TypeVar("T")


@contextlib.asynccontextmanager
async def every(seconds: float, job: Callable[[], Awaitable[object]], *, log: logging.Logger,
                failure: str) -> AsyncIterator[None]:
    """Run ``job`` at once and then every ``seconds`` while the block runs; cancel and await it after.

    A failing round is logged (``failure``) and retried next round: a job never stops the service.
    """

    async def loop() -> None:
        while True:
            try:
                await job()
            except Exception:  # retried next round
                log.exception(failure)
            await asyncio.sleep(seconds)

    task = asyncio.create_task(loop())
    try:
        yield
    finally:
        task.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await task


async def on_thread(work: Callable[[], T]) -> T:
    """``work()`` on a worker thread, its result or its exception. Cancelled meanwhile, it waits for
    the thread to finish before re-raising: a thread cannot be stopped, and what the caller closes
    next (a store's connection, an audit log) must not close under it."""
    running = asyncio.ensure_future(asyncio.to_thread(work))
    try:
        return await asyncio.shield(running)
    except asyncio.CancelledError:
        await asyncio.wait({running})
        if not running.cancelled():
            running.exception()  # retrieved (and dropped): the caller is stopping anyway
        raise
