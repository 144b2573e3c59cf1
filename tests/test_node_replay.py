"""Replay protection without a write per query: ids kept in memory, read back from the audit log."""

from __future__ import annotations

import base64
import dataclasses
import json
import sqlite3
from collections.abc import AsyncIterator
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest

from node.replay import MEMORY_SECONDS, RECOVERY_MARGIN_SECONDS, SWEEP_SECONDS, SeenQueries
from tests.conftest import AMARA, Federation, build_federation, default_records
from tests.test_audit import broker_signed_query, entries, post_query
from trust.tlog import AuditLog

NOW = datetime(2026, 12, 7, 12, 0, tzinfo=UTC)
MOMENT = int(NOW.timestamp())


def query_entry(jti: str, at: datetime, **extra: object) -> dict[str, object]:
    return {"v": 1, "type": "query", "node": "alpha", "time": at.isoformat(timespec="milliseconds"),
            "query_id": jti, "outcome": "no_match", **extra}


def test_an_id_is_refused_until_it_expires_and_expired_ids_are_swept() -> None:
    seen = SeenQueries()
    assert seen.remember("q-1", MOMENT + 180, MOMENT)
    assert not seen.remember("q-1", MOMENT + 180, MOMENT + 10)
    assert seen.remember("q-1", MOMENT + 500, MOMENT + 181)  # expired: a new query may reuse it
    assert seen.remember("q-2", MOMENT + 10, MOMENT + 181)
    assert 2 == len(seen)
    seen.remember("q-3", MOMENT + 900, MOMENT + 181 + SWEEP_SECONDS)  # the sweep drops q-2
    assert 2 == len(seen)
    seen.forget("q-3")
    assert seen.remember("q-3", MOMENT + 900, MOMENT + 200 + SWEEP_SECONDS)


def test_only_ids_needed_for_at_most_the_memory_window_are_kept_in_memory() -> None:
    assert SeenQueries.fits(MOMENT + MEMORY_SECONDS, MOMENT)
    assert not SeenQueries.fits(MOMENT + MEMORY_SECONDS + 1, MOMENT)


def test_recovery_reads_recent_query_ids_back_and_stops_at_older_entries(tmp_path: Path) -> None:
    """Query entries (answered or refused after verification) of the recent past come back;
    refusals before verification do not name a verified id; the scan stops at the first entry
    older than the window, so what lies before it is never read; an id nested in a broker's
    claims is not mistaken for the entry's own."""
    window = timedelta(seconds=MEMORY_SECONDS + RECOVERY_MARGIN_SECONDS)
    log = AuditLog.open(tmp_path / "log")
    log.append_many_sync([
        query_entry("before-the-gap", NOW - timedelta(seconds=30)),  # behind an old entry: not read
        query_entry("too-old", NOW - window - timedelta(seconds=1)),
        query_entry("recent", NOW - timedelta(seconds=MEMORY_SECONDS - 5), outcome="refused",
                    reason="policy-purpose"),
        {"v": 1, "type": "refused", "node": "alpha", "time": NOW.isoformat(), "claimed_query_id": "forged",
         "kind": "untrusted-query"},
        query_entry("latest", NOW, on_behalf_of={"query_id": "nested", "type": "query"}),
        {"v": 1, "type": "notification", "node": "alpha", "time": "not a time"},
    ])
    seen = SeenQueries()
    assert 2 == seen.recover(log, NOW)
    log.close()
    assert not seen.remember("latest", MOMENT + 60, MOMENT)
    assert not seen.remember("recent", MOMENT + 60, MOMENT)
    for fresh in ("before-the-gap", "too-old", "forged", "nested"):
        assert seen.remember(fresh, MOMENT + 60, MOMENT), fresh


@pytest.fixture
async def fed(tmp_path: Path) -> AsyncIterator[Federation]:
    federation = build_federation(tmp_path / "federation", default_records())
    try:
        yield federation
    finally:
        await federation.close()


async def test_a_query_answered_before_a_restart_is_refused_after_it(fed: Federation) -> None:
    """The id is not in the store (no write per query), yet the restarted node refuses the
    replay: it read the id back from its audit log before its first query."""
    await fed.start_node("alpha")
    token = broker_signed_query(fed, {**AMARA})
    assert 200 == (await post_query(fed, "alpha", token))[0]
    await fed.stop("alpha")
    with sqlite3.connect(fed.node_configs["alpha"].database) as db:
        assert 0 == db.execute("SELECT count(*) FROM seen_queries").fetchone()[0]
    await fed.start_node("alpha")
    status, problem = await post_query(fed, "alpha", token)
    assert (409, "replayed-query") == (status, problem["type"].rsplit("/", 1)[-1])
    assert 200 == (await post_query(fed, "alpha", broker_signed_query(fed, {**AMARA})))[0]


async def test_a_long_lived_query_is_remembered_in_the_store(fed: Federation) -> None:
    """A query valid for longer than the memory window keeps its id in the store's table, as
    before, and is refused a second time."""
    await fed.start_node("alpha")
    token = broker_signed_query(fed, {**AMARA}, lifetime=MEMORY_SECONDS + 60)
    assert 200 == (await post_query(fed, "alpha", token))[0]
    assert 409 == (await post_query(fed, "alpha", token))[0]
    with sqlite3.connect(fed.node_configs["alpha"].database) as db:
        assert 1 == db.execute("SELECT count(*) FROM seen_queries").fetchone()[0]


async def test_without_an_audit_log_query_ids_go_to_the_store(fed: Federation) -> None:
    """A node with no audit log (development only) cannot read ids back, so it keeps them in
    the store and still refuses a replay after a restart."""
    fed.node_configs["alpha"] = dataclasses.replace(fed.node_configs["alpha"], audit_log=None,
                                                   unsafe_no_audit_log=True)
    await fed.start_node("alpha")
    token = broker_signed_query(fed, {**AMARA})
    assert 200 == (await post_query(fed, "alpha", token))[0]
    await fed.stop("alpha")
    await fed.start_node("alpha")
    assert 409 == (await post_query(fed, "alpha", token))[0]


async def test_every_answer_is_logged_with_the_id_it_answered(fed: Federation) -> None:
    """The audit log, which replay protection now relies on, names every answered query's id."""
    await fed.start_node("alpha")
    tokens = [broker_signed_query(fed, {**AMARA}) for _ in range(5)]
    for token in tokens:
        assert 200 == (await post_query(fed, "alpha", token))[0]
    ids = [e["query_id"] for e in await entries(fed, "alpha") if e["type"] == "query"]
    claimed = [json.loads(_payload(t))["jti"] for t in tokens]
    assert claimed == ids


def _payload(token: str) -> bytes:
    part = token.split(".")[1]
    return base64.urlsafe_b64decode(part + "=" * (-len(part) % 4))
