"""A node that is always ready: a busy store refuses quickly (and logs it), the index is built
before the node says it is ready, imports swap in a new index behind live queries, small imports
patch the index instead of rebuilding it, and the import summary counts rows past retention."""

from __future__ import annotations

import asyncio
import dataclasses
import json
import sqlite3
import threading
from collections.abc import AsyncIterator, Iterable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import aiohttp
import pytest

from federation import identity
from node.api import NODE
from node.api import create_app as create_node
from node.importer import import_files
from node.indexing import IndexKeeper
from node.matching import MatchIndex
from node.policy import is_archived
from node.store import Child, Store
from tests.conftest import (
    AMARA,
    CHILD_HEADER,
    INVOLVEMENT_HEADER,
    TODAY,
    Federation,
    build_federation,
    child_row,
    default_records,
    involvement_row,
    write_rows,
    years_ago,
)
from tests.test_audit import broker_signed_query, entries, post_query
from trust import keys as keyfiles


@pytest.fixture
async def fed(tmp_path: Path) -> AsyncIterator[Federation]:
    """The test federation, not started: each test starts what it needs."""
    federation = build_federation(tmp_path / "federation", default_records())
    federation.node_configs["alpha"] = dataclasses.replace(
        federation.node_configs["alpha"], busy_timeout_seconds=0.2, index_poll_seconds=0.05)
    try:
        yield federation
    finally:
        await federation.close()


@contextmanager
def write_lock(database: Path) -> Iterator[None]:
    """Hold the store's write lock from another connection, as an import in another process would."""
    other = sqlite3.connect(database, isolation_level=None)
    other.execute("BEGIN IMMEDIATE")
    try:
        yield
    finally:
        other.execute("ROLLBACK")
        other.close()


async def health(federation: Federation, node_id: str) -> tuple[int, dict[str, Any]]:
    async with aiohttp.ClientSession() as session, session.get(
            federation.node_url(node_id) + "/healthz") as response:
        return response.status, await response.json()


LONG_LIVED = 3600
"""A query lifetime past what the node keeps in memory (``node.replay``): its id goes to the
store's table, so answering it needs the store's write lock."""


async def test_a_store_locked_past_the_busy_timeout_gives_node_busy_and_a_logged_refusal(
        fed: Federation) -> None:
    """While another connection holds the write lock longer than the busy timeout, a query that
    needs a write gets 503 node-busy with Retry-After (never a 500), the refusal is in the audit
    log, /healthz keeps answering, and the same query is answered once the lock is gone (it was
    not remembered)."""
    await fed.start_node("alpha")
    token = broker_signed_query(fed, {**AMARA}, lifetime=LONG_LIVED)
    with write_lock(fed.node_configs["alpha"].database):
        (status, problem), (health_status, _) = await asyncio.gather(
            post_query(fed, "alpha", token), health(fed, "alpha"))
    assert (503, "node-busy") == (status, problem["type"].rsplit("/", 1)[-1])
    assert 200 == health_status
    assert 200 == (await post_query(fed, "alpha", token))[0]
    logged = [(e["type"], e.get("outcome"), e.get("reason")) for e in await entries(fed, "alpha")
              if e["type"] in ("query", "refused")]  # verified before the store was asked for
    assert [("query", "refused", "node-busy"), ("query", "match", None)] == logged


async def test_a_query_needing_no_write_is_answered_while_the_store_is_locked(fed: Federation) -> None:
    """A query within the usual lifetime writes nothing to the store (its id is kept in memory and
    in the audit log), so another connection's write lock does not hold it up; it is logged, and
    the same query again is still refused as a replay."""
    await fed.start_node("alpha")
    token = broker_signed_query(fed, {**AMARA})
    with write_lock(fed.node_configs["alpha"].database):
        assert 200 == (await post_query(fed, "alpha", token))[0]
        assert 409 == (await post_query(fed, "alpha", token))[0]
    logged = [(e["type"], e.get("outcome"), e.get("reason")) for e in await entries(fed, "alpha")
              if e["type"] == "query"]
    assert [("query", "match", None), ("query", "refused", "replayed-query")] == logged


async def test_node_busy_carries_retry_after(fed: Federation) -> None:
    """The busy refusal tells the broker when to try again."""
    await fed.start_node("alpha")
    token = broker_signed_query(fed, {**AMARA}, lifetime=LONG_LIVED)
    with write_lock(fed.node_configs["alpha"].database):
        async with aiohttp.ClientSession() as session, session.post(
            fed.node_url("alpha") + "/v1/query", json={"v": 1, "query": token}
        ) as response:
            assert (503, "1") == (response.status, response.headers.get("Retry-After"))


async def test_a_restarted_node_is_not_ready_until_its_index_is_and_then_without_a_query(
        fed: Federation) -> None:
    """While the index cannot be built the node is live but not ready (503, with the reason), a
    query is refused at once as node-not-ready and logged, and the broker reports that node
    unavailable; once the index is built the node is ready with no query having been asked."""
    for node_id in ("beta", "gamma"):
        await fed.start_node(node_id)
    await fed.start_broker()
    app = create_node(fed.node_configs["alpha"])
    gate = threading.Event()

    def held_build(children: Iterable[Child]) -> MatchIndex:
        gate.wait()  # the test decides when the build may finish
        return MatchIndex(children)

    app[NODE].indexes = IndexKeeper(fed.node_configs["alpha"].database, busy_timeout_seconds=1,
                                    today=lambda: TODAY, build=held_build)
    try:
        await fed.start_node("alpha", ready=False, app=app)
        status, body = await health(fed, "alpha")
        assert (503, "degraded") == (status, body["status"])
        assert ["index-building"] == [r["code"] for r in body["reasons"]]
        refused, problem = await post_query(fed, "alpha", broker_signed_query(fed, {**AMARA}))
        assert (503, "node-not-ready") == (refused, problem["type"].rsplit("/", 1)[-1])
        searched, answer = await fed.search({"identity": {**AMARA}, "purpose": "child_protection_enquiry"})
        assert 200 == searched
        by_node = {r["authority"]["id"]: r["status"] for r in answer["results"]}
        assert "unavailable" == by_node["alpha"]
    finally:
        gate.set()
    await app[NODE].indexes.ready.wait()
    status, body = await health(fed, "alpha")
    assert (200, "ok", None) == (status, body["status"], body.get("reasons"))
    logged = [(e["type"], e.get("kind")) for e in await entries(fed, "alpha")
              if e["type"] in ("query", "refused")]
    assert [("refused", "node-not-ready")] * 2 == logged  # the direct query and the broker's


async def test_a_query_during_an_import_gets_the_old_or_the_new_answer(
        fed: Federation, tmp_path: Path) -> None:
    """Queries asked while an import runs and the new index is swapped in are all answered, each
    with the old answer or the new one, never an error; afterwards the new one."""
    await fed.start_node("alpha")
    node = fed.runners["alpha"].app[NODE]
    children, involvements = default_records()["alpha"]
    filler = [child_row(f"F-{i}", "Filler", f"Child{i:05d}", years_ago(8)) for i in range(3000)]
    new_involvement = involvement_row("A-I9", "A-1", "youth_justice", practitioner_name="Jo Park",
                                      practitioner_role="Case Worker")
    files = (write_rows(tmp_path / "c.csv", CHILD_HEADER, children + filler),
             write_rows(tmp_path / "i.csv", INVOLVEMENT_HEADER, [*involvements, new_involvement]))

    def run_import() -> None:
        with Store(fed.node_configs["alpha"].database) as store:
            import_files(store, *files)

    old = {"Pat Jones", "Sue Brown"}
    new = old | {"Jo Park"}
    seen: list[frozenset[str]] = []

    async def ask() -> None:
        status, body = await post_query(fed, "alpha", broker_signed_query(fed, {**AMARA}))
        assert 200 == status, body
        seen.append(practitioners(body))

    importing = asyncio.ensure_future(asyncio.to_thread(run_import))
    while not importing.done():
        await ask()
    await importing
    generation = await asyncio.to_thread(lambda: Store(fed.node_configs["alpha"].database).generation())
    while node.indexes.current is None or node.indexes.current.generation != generation:
        await ask()
    await ask()
    assert set(seen) <= {frozenset(old), frozenset(new)}
    assert frozenset(new) == seen[-1]


def practitioners(body: dict[str, Any]) -> frozenset[str]:
    """The practitioner names in a signed answer (read without verifying: the node is ours)."""
    payload = json.loads(keyfiles.b64url_decode(body["answer"].split(".")[1]))
    return frozenset(i["practitioner_name"] for i in payload["involvements"])


def rows(count: int, *, postcode: str = "LS6 1AA", start: int = 0) -> list[dict[str, str]]:
    return [child_row(f"K-{i}", "Kit", f"Surname{i:05d}", years_ago(5 + i % 10, 1 + i % 12, 1 + i % 28),
                      postcode=postcode, sex="F") for i in range(start, start + count)]


def test_an_import_that_changes_100_children_patches_the_index(tmp_path: Path) -> None:
    """After an import that changes 100 of 1,000 children (and removes 5) the index is patched,
    not rebuilt, and it answers as a full rebuild would: the moved children are found at their
    new postcode, the removed ones not at all."""
    database = tmp_path / "node.sqlite3"
    before = rows(1000)
    with Store(database) as store:
        import_files(store, write_rows(tmp_path / "c.csv", CHILD_HEADER, before),
                     write_rows(tmp_path / "i.csv", INVOLVEMENT_HEADER, []))
    keeper = IndexKeeper(database, busy_timeout_seconds=1, today=lambda: TODAY)
    keeper.refresh()
    after = [dict(r, postcode="N17 6AB") if i < 100 else r for i, r in enumerate(before)][:-5]
    with Store(database) as store:
        summary = import_files(store, write_rows(tmp_path / "c.csv", CHILD_HEADER, after),
                               write_rows(tmp_path / "i.csv", INVOLVEMENT_HEADER, []), full=True)
    assert (100, 5) == (summary.children_updated, summary.children_removed)
    holder = keeper.refresh()
    keeper.close()
    assert (1, 1, 105) == (keeper.builds, keeper.patches, holder.patched)
    with Store(database) as store:
        rebuilt = MatchIndex(c for c in store.children() if not is_archived(c, TODAY))
    assert len(rebuilt) == len(holder.index) == 995
    for row in (after[0], after[99], after[100], before[-1]):
        query = identity.parse_identity({"given_name": row["given_name"], "family_name": row["family_name"],
                                         "date_of_birth": row["date_of_birth"], "postcode": row["postcode"]})
        expected = rebuilt.match(query)
        assert (expected.status, expected.record_id) == (holder.index.match(query).status,
                                                         holder.index.match(query).record_id)
    moved = identity.parse_identity({"given_name": "Kit", "family_name": "Surname00000",
                                     "date_of_birth": before[0]["date_of_birth"], "postcode": "N17 6AB"})
    assert "K-0" == holder.index.ranked(moved)[0].record_id


def test_a_large_import_rebuilds_the_index(tmp_path: Path) -> None:
    """Changes past the patch limit (or not itemised) rebuild the index from the store."""
    database = tmp_path / "node.sqlite3"
    with Store(database) as store:
        import_files(store, write_rows(tmp_path / "c.csv", CHILD_HEADER, rows(50)),
                     write_rows(tmp_path / "i.csv", INVOLVEMENT_HEADER, []))
    keeper = IndexKeeper(database, busy_timeout_seconds=1, today=lambda: TODAY)
    keeper.refresh()
    with Store(database) as store, store.transaction() as conn:
        store.bump_generation(conn, None)  # a change the store could not itemise
    keeper.refresh()
    keeper.close()
    assert (2, 0) == (keeper.builds, keeper.patches)


def test_the_import_summary_counts_rows_archived_and_past_retention(tmp_path: Path) -> None:
    """Imported children aged 18 or over are counted as archived, and those at or past the
    retention age as to be purged, so no record disappears silently at the node's next start."""
    children = [child_row("Y-1", "Ann", "Young", years_ago(7)),
                child_row("Y-2", "Ben", "Adult", years_ago(19)),
                child_row("Y-3", "Cal", "Older", years_ago(30))]
    with Store(tmp_path / "node.sqlite3") as store:
        summary = import_files(store, write_rows(tmp_path / "c.csv", CHILD_HEADER, children),
                               write_rows(tmp_path / "i.csv", INVOLVEMENT_HEADER, []),
                               retention_age=24, today=TODAY)
    assert (2, 1) == (summary.children_archived, summary.children_past_retention)
    assert {"archived": 2, "past_retention_age": 1, "retention_age": 24} == summary.to_json()["retention"]


def test_an_unchanged_reimport_parses_nothing_and_a_changed_byte_is_noticed(tmp_path: Path) -> None:
    """Re-importing identical files leaves every row unchanged and the generation alone, without
    reading the rows again (their content hashes match: a value changed behind the importer's
    back stays changed); a row whose text changes but whose meaning does not (case, spacing) is
    parsed, and still unchanged."""
    children = [child_row("C-1", "Amara", "Okafor", years_ago(6), postcode="LS8 2QR"),
                child_row("C-2", "Leo", "Smith", years_ago(9))]
    database = tmp_path / "node.sqlite3"
    with Store(database) as store:
        files = (write_rows(tmp_path / "c.csv", CHILD_HEADER, children),
                 write_rows(tmp_path / "i.csv", INVOLVEMENT_HEADER, [involvement_row("I-1", "C-1")]))
        import_files(store, *files)
        generation = store.generation()
        store.db.execute("UPDATE children SET sex = 'X' WHERE record_id = 'C-2'")
        again = import_files(store, *files)
        assert (0, 0, 2, generation) == (again.children_added, again.children_updated,
                                         again.children_unchanged, store.generation())
        assert "X" == store.child("C-2").sex  # type: ignore[union-attr]
        recased = [dict(children[0], postcode="ls8 2qr"), children[1]]
        summary = import_files(store, write_rows(tmp_path / "c.csv", CHILD_HEADER, recased), files[1])
        assert (0, 0, 2, generation) == (summary.children_added, summary.children_updated,
                                         summary.children_unchanged, store.generation())


def test_a_reader_sees_all_of_an_import_or_none(tmp_path: Path) -> None:
    """Until the import commits, another connection reads the store as it was."""
    database = tmp_path / "node.sqlite3"
    with Store(database) as store:
        import_files(store, write_rows(tmp_path / "c.csv", CHILD_HEADER, rows(10)),
                     write_rows(tmp_path / "i.csv", INVOLVEMENT_HEADER, []))
    reader = Store(database)
    with reader.snapshot():
        before = reader.counts()
        with Store(database) as store:
            import_files(store, write_rows(tmp_path / "c.csv", CHILD_HEADER, rows(10, start=10)),
                         write_rows(tmp_path / "i.csv", INVOLVEMENT_HEADER, []))
        during = reader.counts()
    after = reader.counts()
    reader.close()
    assert ({"children": 10, "involvements": 0}, {"children": 20, "involvements": 0}) == (during, after)
    assert before == during


async def test_a_node_stopping_during_an_index_build_waits_for_it_before_the_store_closes(
        tmp_path: Path) -> None:
    """Regression: a node that stopped during its first build (its port taken, say) cancelled the
    keeper, then closed the connection the build thread was still reading through, and crashed
    (a segmentation fault in SQLite). Cancelling ``keep_current`` now returns only once the
    thread's work is done, so ``close`` comes after it."""
    database = tmp_path / "node.sqlite3"
    with Store(database) as store:
        import_files(store, write_rows(tmp_path / "c.csv", CHILD_HEADER, rows(50)),
                     write_rows(tmp_path / "i.csv", INVOLVEMENT_HEADER, []))
    started, release = threading.Event(), threading.Event()

    def slow_build(children: Iterable[Child]) -> MatchIndex:
        started.set()
        release.wait(10)
        return MatchIndex(children)

    keeper = IndexKeeper(database, busy_timeout_seconds=1, today=lambda: TODAY, build=slow_build)
    task = asyncio.create_task(keeper.keep_current(0.05))
    assert await asyncio.to_thread(started.wait, 10)
    task.cancel()
    await asyncio.sleep(0.2)
    waited = not task.done()
    release.set()
    with pytest.raises(asyncio.CancelledError):
        await task
    keeper.close()
    assert (True, 1) == (waited, keeper.builds)
