"""Keeping the node's match index current without ever making a query wait for it.

The index is built once before the node says it is ready. After that a background task watches
the store's generation (bumped by every import or purge that changed something, even one run by
another process) and the date: a new generation with few changed children is applied to a copy
of the index (``MatchIndex.updated``), anything larger -- and every new day, when children turn
18 -- is rebuilt from the store. Either way the new index is made on a worker thread, through a
connection of its own, while queries keep using the old one; then one assignment swaps it in.

Readers of ``current`` see a whole index or the one before it, never one half made.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from datetime import date
from pathlib import Path

from federation.http import HealthReason
from node.matching import MatchIndex
from node.policy import is_archived
from node.store import Child, Store

log = logging.getLogger("signpost.node.index")

PATCH_LIMIT = 20_000
"""At most this many changed children since the last full build are applied as a patch; more,
and the index is rebuilt (a patch keeps the statistics of the last build, see ``updated``)."""


@dataclass(frozen=True)
class IndexHolder:
    """An index and what it was made from."""

    index: MatchIndex
    generation: int
    built_on: date
    patched: int = 0  # children changed by patches since the last full build
    seconds: float = 0.0


class IndexKeeper:
    """The current index of one store, and the work that keeps it current."""

    def __init__(self, path: Path, *, busy_timeout_seconds: float, today: Callable[[], date],
                 build: Callable[[Iterable[Child]], MatchIndex] = MatchIndex) -> None:
        self.path = path
        self.build = build
        self.busy_timeout_seconds = busy_timeout_seconds
        self.today = today
        self.current: IndexHolder | None = None
        self.builds = 0
        self.patches = 0
        self.error: str | None = None
        self.full_build_seconds: float | None = None
        self.ready = asyncio.Event()
        self._store: Store | None = None

    def refresh(self) -> IndexHolder:
        """Bring the index up to the store's generation and today's date (on a worker thread).

        Reads through a connection of its own, in one read transaction, so the generation and
        the records read belong together however the store changes meanwhile.
        """
        today = self.today()
        if self._store is None:
            self._store = Store(self.path, busy_timeout_seconds=self.busy_timeout_seconds)
        store = self._store
        with store.snapshot():
            generation = store.generation()
            holder = self.current
            if holder is not None and holder.generation == generation and holder.built_on == today:
                return holder
            started = time.monotonic()
            changed = None
            if holder is not None and holder.built_on == today and generation > holder.generation:
                # (a generation going backwards means another file was put in place: rebuild)
                changed = store.changed_since(holder.generation, PATCH_LIMIT - holder.patched)
            if holder is not None and changed is not None:
                records = store.children_by_id(changed)
                live = [c for c in records if not is_archived(c, today)]
                index = holder.index.updated(live, removed=changed)
                holder = IndexHolder(index, generation, today, holder.patched + len(changed),
                                     time.monotonic() - started)
                self.patches += 1
                log.info("index patched: %d changed children, generation %d, %.2f s",
                         len(changed), generation, holder.seconds)
            else:
                index = self.build(c for c in store.children() if not is_archived(c, today))
                holder = IndexHolder(index, generation, today, 0, time.monotonic() - started)
                self.full_build_seconds = holder.seconds
                self.builds += 1
                log.info("index built: %d children, generation %d, %.2f s",
                         len(index), generation, holder.seconds)
        self.current = holder  # the swap: one assignment
        return holder

    async def keep_current(self, poll_seconds: float) -> None:
        """Build the first index (then set ``ready``), and keep it current until cancelled."""
        while True:
            try:
                await asyncio.to_thread(self.refresh)
                self.error = None
                self.ready.set()
            except Exception as exc:  # retried next round; the old index keeps answering
                self.error = exc.__class__.__name__
                log.exception("index not refreshed")
            await asyncio.sleep(poll_seconds)

    def close(self) -> None:
        if self._store is not None:
            self._store.close()
            self._store = None

    def describe(self) -> dict[str, object] | None:
        """What ``/healthz`` says about the index: its size, generation and how it was made."""
        holder = self.current
        if holder is None:
            return None
        return {"children": len(holder.index), "generation": holder.generation,
                "built_on": holder.built_on.isoformat(), "builds": self.builds, "patches": self.patches,
                "full_build_seconds": round(self.full_build_seconds or 0.0, 3)}

    def health_reasons(self) -> list[HealthReason]:
        """``/healthz`` reasons while the node cannot answer for want of an index."""
        if self.current is not None:
            return []
        if self.error is not None:
            return [HealthReason("index-build-failed", f"the match index could not be built ({self.error}); "
                                 "retried every index_poll_seconds")]
        return [HealthReason("index-building", "the match index is being built; queries get 503 "
                             "node-not-ready until it is")]

    def not_ready(self) -> list[str]:
        """Why the node cannot answer yet, as far as the index goes (empty when it can)."""
        if self.current is not None:
            return []
        if self.error is not None:
            return [f"index build failed ({self.error})"]
        return ["index building"]
