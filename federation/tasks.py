"""Background jobs that a service runs on a fixed interval for as long as it serves."""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import AsyncIterator, Awaitable, Callable


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
