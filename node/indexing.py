"""Keeping the node's match index current without ever making a query wait for it.

The index is built once before the node says it is ready. After that a background task watches
the store's generation (bumped by every import or purge that changed something, even one run by
another process) and the date: a new generation with few changed children is applied to a copy
of the index (``MatchIndex.updated``), anything larger -- and every new day, when children turn
18 -- is rebuilt from the store. Either way the new index is made on a worker thread, through a
connection of its own, while queries keep using the old one; then one assignment swaps it in.

Readers of ``current`` see a whole index or the one before it, never one half made.

Every full build is saved beside the store (``node.snapshot``). At start the saved index is
read back instead of building one when it fits the store: the same store (its key), a
generation no later than the store's, every record it holds still held (or itemised as changed
since), and no live record missing from it. What changed since it was saved, and children who
turned 18 since the day it was built, are patched over it as after a small import; one from an
earlier day is rebuilt in the background once the node is ready. Anything else, and the index
is built from the store as if there were no snapshot.
"""

from __future__ import annotations

import asyncio
import dataclasses
import logging
import time
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from datetime import date
from pathlib import Path

from federation.http import HealthReason
from federation.tasks import on_thread
from node import indexbuild
from node import snapshot as snapshots
from node.candidates import CandidateIndex
from node.matching import MatchIndex, Statistics
from node.policy import archived_from, is_archived
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
    source: str = "built"  # "built", "patched" or "snapshot" (read back from the saved index)
    stale: bool = False  # its statistics are from an earlier day's build: rebuild in the background


def _removed(record_id: str, day: date) -> Child:
    """A stand-in at the position of a saved record the store no longer holds (always patched
    out, never a candidate)."""
    return Child(record_id=record_id, pseudonym="", nhs_number=None, upn=None, given_name="", family_name="",
                 other_names=(), date_of_birth=day, sex=None, postcode=None, shielded=False)


class IndexKeeper:
    """The current index of one store, and the work that keeps it current."""

    def __init__(self, path: Path, *, busy_timeout_seconds: float, today: Callable[[], date],
                 build: Callable[[Iterable[Child]], MatchIndex] | None = None,
                 snapshot: Path | None = None) -> None:
        self.path = path
        self.build = build
        self.snapshot = snapshot
        self.snapshot_read: str | None = None  # what became of the saved index at start, for /healthz
        self.snapshot_saved: str | None = None  # and of the last save
        self.busy_timeout_seconds = busy_timeout_seconds
        self.today = today
        self.current: IndexHolder | None = None
        self.builds = 0
        self.patches = 0
        self.error: str | None = None
        self.full_build_seconds: float | None = None
        self.ready = asyncio.Event()
        self._store: Store | None = None
        self._unsaved: tuple[IndexHolder, bytes] | None = None

    def refresh(self, *, save: bool = True) -> IndexHolder:
        """Bring the index up to the store's generation and today's date (on a worker thread).

        A full build is saved beside the store (``snapshot``), at once with ``save``, else by the
        next ``save_pending``.

        Reads through a connection of its own, in one read transaction, so the generation and
        the records read belong together however the store changes meanwhile.
        """
        today = self.today()
        if self._store is None:
            self._store = Store(self.path, busy_timeout_seconds=self.busy_timeout_seconds)
        store = self._store
        key = store.index_key() if self.snapshot is not None else None  # (a write, the first time)
        with store.snapshot():
            generation = store.generation()
            holder = self.current
            if holder is None and key is not None:
                loaded = self._load(store, key, generation, today)
                if loaded is not None:
                    self.current = loaded
                    return loaded
            if holder is not None and holder.generation == generation and holder.built_on == today \
                    and not holder.stale:
                return holder
            started = time.monotonic()
            changed = None
            if holder is not None and holder.built_on == today and generation > holder.generation \
                    and not holder.stale:
                # (a generation going backwards means another file was put in place: rebuild)
                changed = store.changed_since(holder.generation, PATCH_LIMIT - holder.patched)
            if holder is not None and changed is not None:
                records = store.children_by_id(changed)
                live = [c for c in records if not is_archived(c, today)]
                index = holder.index.updated(live, removed=changed)
                holder = IndexHolder(index, generation, today, holder.patched + len(changed),
                                     time.monotonic() - started, "patched")
                self.patches += 1
                log.info("index patched: %d changed children, generation %d, %.2f s",
                         len(changed), generation, holder.seconds)
            else:
                adult = archived_from(today)
                held = (c for c in store.children() if c.date_of_birth > adult)  # not archived
                if self.build is None:  # on two cores for a large store
                    index = indexbuild.build(store, held, today=today, generation=generation)
                else:
                    index = self.build(held)
                holder = IndexHolder(index, generation, today, 0, time.monotonic() - started)
                self.full_build_seconds = holder.seconds
                self.builds += 1
                log.info("index built: %d children, generation %d, %.2f s",
                         len(index), generation, holder.seconds)
        self.current = holder  # the swap: one assignment
        if key is not None and holder.source == "built":
            self._unsaved = (holder, key)
            if save:
                self.save_pending()
        return holder

    def save_pending(self) -> None:
        """Save the last full build beside the store, if not saved yet (on a worker thread)."""
        unsaved, self._unsaved = self._unsaved, None
        if unsaved is not None:
            self._save(*unsaved)

    def _load(self, store: Store, key: bytes, generation: int, today: date) -> IndexHolder | None:
        """The saved index, checked against the store and brought up to date; ``None`` if unusable.

        Inside the caller's read transaction, so the generation and the records belong together.
        """
        if self.snapshot is None:
            return None
        started = time.monotonic()
        try:
            saved = snapshots.read(self.snapshot, key)
            if saved is None:
                self.snapshot_read = "none saved"
                return None
            holder = self._fit(store, saved, generation, today)
        except snapshots.SnapshotError as exc:
            self.snapshot_read = f"ignored: {exc}"
            log.warning("saved index %s ignored, building the index: %s", self.snapshot, exc)
            return None
        holder = dataclasses.replace(holder, seconds=time.monotonic() - started)
        self.snapshot_read = f"read (generation {saved.generation}, built {saved.built_on.isoformat()})"
        log.info("index read from %s: %d children, generation %d, %d patched, %.2f s",
                 self.snapshot, len(holder.index), generation, holder.patched, holder.seconds)
        return holder

    @staticmethod
    def _fit(store: Store, saved: snapshots.Snapshot, generation: int, today: date) -> IndexHolder:
        """The index a saved one gives for the store as it is now, or ``SnapshotError`` saying why
        it does not fit."""
        changed: set[str] = set()
        if saved.generation > generation:
            raise snapshots.SnapshotError(f"it is of generation {saved.generation}, "
                                          f"the store only of {generation}")
        if saved.generation < generation:
            since = store.changed_since(saved.generation, PATCH_LIMIT)
            if since is None:
                raise snapshots.SnapshotError(
                    f"the store changed too much since generation {saved.generation}")
            changed = set(since)
        children = list(store.children())
        # The usual restart: nothing changed, and the store lists the children in the order the
        # index was built in (the records it left out all archived on the snapshot's day).
        # (``archived_from``: whether a child is archived is one comparison of dates)
        then, now = archived_from(saved.built_on), archived_from(today)
        records = [c for c in children if c.date_of_birth > then] if not changed else []
        held: dict[str, Child] = {}
        if not changed and [c.record_id for c in records] == saved.record_ids:
            gone = {c.record_id for c in records if c.date_of_birth <= now}  # turned 18 since
        else:
            records, gone, held = IndexKeeper._in_saved_order(children, saved, changed, today)
        try:
            index = MatchIndex(records, candidates=CandidateIndex.from_packed(saved.packed),
                               statistics=Statistics.from_json(saved.statistics))
        except ValueError as exc:
            raise snapshots.SnapshotError(str(exc)) from exc
        if gone:
            fresh = [held[r] for r in changed if r in held and held[r].date_of_birth > now]
            index = index.updated(fresh, removed=gone)
        return IndexHolder(index, generation, today, len(gone), 0.0, "snapshot",
                           stale=saved.built_on != today)

    @staticmethod
    def _in_saved_order(children: list[Child], saved: snapshots.Snapshot, changed: set[str],
                        today: date) -> tuple[list[Child], set[str], dict[str, Child]]:
        """The store's children in the saved index's order (a stand-in for each one since removed),
        the ids to take out of it, and the children by id; ``SnapshotError`` if they disagree."""
        held = {c.record_id: c for c in children}
        adult = archived_from(today)
        records: list[Child] = []
        gone = set(changed)
        for record_id in saved.record_ids:
            child = held.get(record_id)
            if child is None:
                if record_id not in changed:
                    raise snapshots.SnapshotError("it holds a record the store does not")
                child = _removed(record_id, saved.built_on)
            elif child.date_of_birth <= adult:
                gone.add(record_id)  # turned 18 since the snapshot's day
            records.append(child)
        unsaved = held.keys() - set(saved.record_ids) - changed  # set operations, not a loop per child
        if any(held[r].date_of_birth > adult for r in unsaved):
            raise snapshots.SnapshotError("the store holds records it does not")
        return records, gone, held

    def _save(self, holder: IndexHolder, key: bytes) -> None:
        """Save a fully built index beside the store (a failure only costs the next start a build)."""
        form = holder.index.saved_form
        if form is None or self.snapshot is None:
            return
        record_ids, candidates, statistics = form
        try:
            snapshots.write(self.snapshot, snapshots.Snapshot(holder.generation, holder.built_on, record_ids,
                                                              candidates.packed, statistics.to_json()),
                            key, like=self.path)
        except OSError as exc:
            self.snapshot_saved = f"not saved: {exc.strerror}"
            log.warning("index not saved to %s: %s", self.snapshot, exc)
            return
        self.snapshot_saved = f"generation {holder.generation}"

    async def keep_current(self, poll_seconds: float) -> None:
        """Build the first index (then set ``ready``), and keep it current until cancelled.

        Cancelled while a refresh or a save runs on its thread, it returns only once that work
        has finished: a thread cannot be stopped, and ``close`` must not close the connection it
        reads through (a node stopping during its first build, say because its port was taken,
        otherwise closed SQLite under the build and crashed)."""
        while True:
            try:
                await on_thread(lambda: self.refresh(save=False))
                self.error = None
                self.ready.set()
                if self._unsaved is not None:  # set by the refresh just awaited: no thread hop for nothing
                    await on_thread(self.save_pending)  # after ready: saving is for the next start
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
        built = self.full_build_seconds
        return {"children": len(holder.index), "generation": holder.generation,
                "built_on": holder.built_on.isoformat(), "builds": self.builds, "patches": self.patches,
                "full_build_seconds": None if built is None else round(built, 3), "source": holder.source,
                "seconds": round(holder.seconds, 3),
                "snapshot": {"read": self.snapshot_read, "saved": self.snapshot_saved}}

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


def save_for_next_start(database: Path, changed_children: int, *, busy_timeout_seconds: float,
                        today: date) -> IndexHolder | None:
    """After an import: build the index and save it beside the store when a node would otherwise
    have to build it at its next start or refresh (none saved yet, or more children changed than
    a patch applies, or the one saved was made by a release with other keys), so that it is ready
    as soon as it has read it. ``None`` when not needed."""
    saved = snapshots.path_for(database)
    if saved.exists() and changed_children <= PATCH_LIMIT and snapshots.made_here(saved):
        return None
    keeper = IndexKeeper(database, busy_timeout_seconds=busy_timeout_seconds, today=lambda: today,
                         snapshot=saved)
    try:
        holder = keeper.refresh(save=True)
    finally:
        keeper.close()
    return holder if keeper.snapshot_saved is not None else None

