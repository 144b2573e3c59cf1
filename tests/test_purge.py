"""Retention: records are archived at 18 (never returned) and deleted at the retention age by a
purge that runs in the node and as ``signpost node purge``, leaving a record of what it did."""

from __future__ import annotations

import subprocess
import sys
from datetime import UTC, date, datetime
from pathlib import Path

import pytest

from federation import config as configfile
from node.outbox import Outbox
from node.purge import history, purge
from node.store import Store
from tests.conftest import TODAY, Federation, build_federation, child_row, involvement_row

REPO = Path(__file__).resolve().parent.parent
NOW = datetime.now(UTC)


def born(years: int, days_after: int = 0) -> str:
    """A birth date ``years`` ago today, moved ``days_after`` days later (younger)."""
    from datetime import timedelta

    base = date(TODAY.year - years, TODAY.month, 28 if TODAY.month == 2 and TODAY.day == 29 else TODAY.day)
    return (base + timedelta(days=days_after)).isoformat()


def records() -> dict[str, tuple[list[dict[str, str]], list[dict[str, str]]]]:
    kids = [
        child_row("K-7", "Amara", "Okafor", born(7), sex="F"),
        child_row("K-18", "Eighteen", "Today", born(18), sex="F"),
        child_row("K-23", "Almost", "Gone", born(24, days_after=1), sex="M"),
        child_row("K-24", "Twenty", "Four", born(24), sex="M"),
        child_row("K-30", "Long", "Gone", born(30), sex="F"),
    ]
    invs = [involvement_row(f"I-{k['record_id']}", k["record_id"]) for k in kids]
    return {"alpha": (kids, invs)}


@pytest.fixture
def fed(tmp_path: Path) -> Federation:
    return build_federation(tmp_path / "federation", records())


def remaining(fed: Federation) -> list[str]:
    store = Store(fed.node_configs["alpha"].database)
    try:
        return sorted(c.record_id for c in store.children())
    finally:
        store.close()


RETENTION = {
    "default 24th birthday": (24, ["K-18", "K-23", "K-7"], 2),
    "configured 19th birthday": (19, ["K-18", "K-7"], 3),
}


@pytest.mark.parametrize("name", RETENTION)
def test_purge_deletes_records_past_the_retention_age(fed: Federation, name: str) -> None:
    """Everyone at or past the retention age (on their birthday) is deleted with involvements and
    pending notifications; younger records stay; the purge is recorded with counts only."""
    age, kept, deleted = RETENTION[name]
    store = Store(fed.node_configs["alpha"].database)
    Outbox(store).enqueue([{"child_record_id": "K-30", "url": "http://127.0.0.1:9/x", "type": "access"}],
                          NOW.timestamp())
    before = store.generation()
    summary = purge(store, today=TODAY, now=NOW, retention_age=age)
    after = (store.generation(), store.counts(), Outbox(store).items(), history(store))
    store.close()
    assert (deleted, deleted, 1) == (summary.children, summary.involvements, summary.notifications)
    assert kept == remaining(fed)
    generation, counts, outbox, log = after
    assert (before + 1, {"children": len(kept), "involvements": len(kept)}, []) == (
        generation, counts, outbox)
    assert [(age, deleted, deleted, 1)] == [
        (r["retention_age"], r["children"], r["involvements"], r["notifications"]) for r in log]


def test_dry_run_deletes_nothing(fed: Federation) -> None:
    """A dry run counts what would go and leaves everything (and no purge record)."""
    store = Store(fed.node_configs["alpha"].database)
    summary = purge(store, today=TODAY, now=NOW, retention_age=24, dry_run=True)
    log = history(store)
    store.close()
    assert (2, []) == (summary.children, log)
    assert ["K-18", "K-23", "K-24", "K-30", "K-7"] == remaining(fed)


def test_retention_below_the_archive_age_is_refused(fed: Federation) -> None:
    """A retention age under 18 would delete children still searchable: refused."""
    store = Store(fed.node_configs["alpha"].database)
    try:
        with pytest.raises(ValueError, match="retention_age"):
            purge(store, today=TODAY, now=NOW, retention_age=16)
    finally:
        store.close()


def test_signpost_node_purge_command(fed: Federation, tmp_path: Path) -> None:
    """`signpost node purge --config` deletes past-retention records and reports counts."""
    config_path = tmp_path / "node.json"
    configfile.dump(fed.node_configs["alpha"], config_path)
    result = subprocess.run(
        [sys.executable, "-m", "federation.commands.main", "node", "purge", "--config", str(config_path)],
        cwd=REPO, capture_output=True, text=True, timeout=60, check=False)
    assert 0 == result.returncode, result.stderr
    assert "deleted: 2 children, 2 involvements, 0 pending notifications" in result.stdout
    assert ["K-18", "K-23", "K-7"] == remaining(fed)


async def test_running_node_purges_at_start_and_never_returns_adults(fed: Federation) -> None:
    """A started node purges by itself; an 18-year-old (archived) is never returned by a search."""
    await fed.start_node("alpha")
    await fed.start_broker()
    try:
        import asyncio

        for _ in range(100):
            if remaining(fed) == ["K-18", "K-23", "K-7"]:
                break
            await asyncio.sleep(0.05)
        status, answer = await fed.search({"identity": {"given_name": "Eighteen", "family_name": "Today",
                                                        "date_of_birth": born(18), "sex": "F"},
                                           "purpose": "early_help"})
    finally:
        await fed.close()
    assert ["K-18", "K-23", "K-7"] == remaining(fed)
    assert (200, "no_match") == (status, answer["results"][0]["status"])
