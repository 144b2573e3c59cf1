"""Refusing early when the broker itself is saturated, so that no admitted search suffers for it.

A search admitted into a broker that is behind would wait in its own event loop while each
node's deadline runs, and come back incomplete; or its rate-limit check would time out and
blame Redis. Two signals say the broker is saturated: more searches in flight than
``max_searches_in_flight``, or an event loop running more than ``max_loop_lag_seconds`` late
(a moving average of how late a ticker that asks to wake every ``TICK_SECONDS`` wakes). Either
way the search is refused before anything is counted or logged: 503, ``Retry-After``, problem
type ``broker-overloaded``.
"""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections.abc import AsyncIterator, Iterator

from aiohttp import web

from federation.http import problem

TICK_SECONDS = 0.05
LAG_WEIGHT = 0.2  # the weight of the newest tick in the moving average of lateness
RETRY_AFTER_SECONDS = 1


class Admission:
    """How many searches are in flight, and how late the event loop is running."""

    def __init__(self, max_in_flight: int, max_lag_seconds: float) -> None:
        self.max_in_flight = max_in_flight
        self.max_lag_seconds = max_lag_seconds
        self.in_flight = 0
        self.lag_seconds = 0.0

    def behind(self) -> bool:
        """True while the event loop runs later than the limit (the broker, not its peers, is slow)."""
        return self.lag_seconds > self.max_lag_seconds

    def refusal(self) -> web.Response | None:
        """The 503 to send when a new search would not be served in time; else None."""
        if self.in_flight >= self.max_in_flight:
            why = f"{self.in_flight} searches already in flight (limit {self.max_in_flight})"
        elif self.behind():
            why = f"its event loop is {1000 * self.lag_seconds:.0f} ms behind"
        else:
            return None
        return overloaded(why)

    @contextlib.contextmanager
    def holding(self) -> Iterator[None]:
        """Count one admitted search while it runs."""
        self.in_flight += 1
        try:
            yield
        finally:
            self.in_flight -= 1

    async def watch(self) -> None:
        """Measure the event loop's lateness for ever (a ticker that should wake every tick)."""
        while True:
            started = time.monotonic()
            await asyncio.sleep(TICK_SECONDS)
            late = max(0.0, time.monotonic() - started - TICK_SECONDS)
            # A moving average: one long stall (a trust-list refresh, a garbage collection) does not
            # refuse searches; a loop that stays late does.
            self.lag_seconds += LAG_WEIGHT * (late - self.lag_seconds)


def overloaded(why: str) -> web.Response:
    """503 naming the broker as the party that is overloaded, with ``Retry-After``."""
    return problem(503, "Broker busy", f"the broker is overloaded ({why}); the search was not started, "
                   "try again shortly", kind="broker-overloaded",
                   headers={"Retry-After": str(RETRY_AFTER_SECONDS)})


ADMISSION = web.AppKey("admission", Admission)


def install(app: web.Application, max_in_flight: int, max_lag_seconds: float) -> None:
    """Keep an ``Admission`` in the app and its loop-lag ticker running while the app runs."""
    admission = Admission(max_in_flight, max_lag_seconds)
    app[ADMISSION] = admission

    async def ticker(_: web.Application) -> AsyncIterator[None]:
        task = asyncio.create_task(admission.watch())
        yield
        task.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await task

    app.cleanup_ctx.append(ticker)
