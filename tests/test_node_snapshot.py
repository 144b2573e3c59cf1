"""The saved match index: a restarted node reads it back instead of building its index, patches
what changed since it was saved, and ignores (then rebuilds) one that does not fit its store."""

from __future__ import annotations

import dataclasses
import hashlib
import hmac
import os
import shutil
from collections.abc import AsyncIterator, Callable
from datetime import date, timedelta
from pathlib import Path

import pytest

from federation import identity, names
from node import candidates
from node import snapshot as snapshots
from node.api import NODE
from node.importer import import_files
from node.indexing import IndexHolder, IndexKeeper
from node.matching import MatchIndex
from node.policy import is_archived
from node.store import Store
from tests.conftest import (
    AMARA,
    CHILD_HEADER,
    INVOLVEMENT_HEADER,
    TODAY,
    Federation,
    build_federation,
    child_row,
    default_records,
    write_rows,
    years_ago,
)
from tests.test_audit import broker_signed_query, post_query


def rows(count: int, *, start: int = 0) -> list[dict[str, str]]:
    return [child_row(f"K-{i}", "Kit", f"Surname{i:05d}", years_ago(5 + i % 10, 1 + i % 12, 1 + i % 28),
                      postcode="LS6 1AA", sex="F") for i in range(start, start + count)]


def load(path: Path, children: list[dict[str, str]], *, full: bool = False) -> None:
    with Store(path) as store:
        import_files(store, write_rows(path.parent / "c.csv", CHILD_HEADER, children),
                     write_rows(path.parent / "i.csv", INVOLVEMENT_HEADER, []), full=full)


def keeper(database: Path, today: Callable[[], date] = lambda: TODAY) -> IndexKeeper:
    return IndexKeeper(database, busy_timeout_seconds=1, today=today, snapshot=snapshots.path_for(database))


def started(database: Path, today: Callable[[], date] = lambda: TODAY) -> tuple[IndexKeeper, IndexHolder]:
    """A keeper as a node's start makes it: its first refresh."""
    made = keeper(database, today)
    holder = made.refresh()
    made.close()
    return made, holder


def assert_answers_as_a_rebuild(database: Path, index: MatchIndex, queries: list[dict[str, str]],
                                today: date = TODAY) -> None:
    with Store(database) as store:
        rebuilt = MatchIndex(c for c in store.children() if not is_archived(c, today))
    assert sorted(rebuilt.children) == sorted(index.children)
    for row in queries:
        query = identity.parse_identity({"given_name": row["given_name"], "family_name": row["family_name"],
                                         "date_of_birth": row["date_of_birth"], "postcode": row["postcode"]})
        expected, got = rebuilt.match(query), index.match(query)
        assert (expected.status, expected.record_id) == (got.status, got.record_id)


def test_a_restart_reads_the_saved_index_instead_of_building_it(tmp_path: Path) -> None:
    """The first start builds the index and saves it; the next start reads it back (no build),
    and it answers as a full build would."""
    database = tmp_path / "node.sqlite3"
    children = rows(500)
    load(database, children)
    first, _ = started(database)
    assert (1, "built", "none saved", "generation 1") == (
        first.builds, first.current.source, first.snapshot_read, first.snapshot_saved)  # type: ignore[union-attr]
    second, holder = started(database)
    assert (0, "snapshot", 0, False) == (second.builds, holder.source, holder.patched, holder.stale)
    assert_answers_as_a_rebuild(database, holder.index, [children[0], children[250], children[-1]])


def test_a_restart_with_archived_records_in_the_store_reads_the_saved_index(tmp_path: Path) -> None:
    """Records archived when the index was built (18 or over) stay in the store but not in the
    index: a restart still takes the store's children in the saved order, and answers as a
    rebuild would, never with an archived record."""
    database = tmp_path / "node.sqlite3"
    adults = [child_row(f"A-{i}", "Ada", f"Grown{i:03d}", years_ago(19 + i % 5), postcode="LS6 1AA")
              for i in range(20)]
    children = rows(200)
    load(database, [*children[:100], *adults, *children[100:]])
    started(database)
    restarted, holder = started(database)
    assert (0, "snapshot", 0) == (restarted.builds, holder.source, holder.patched)
    assert not any(record_id.startswith("A-") for record_id in holder.index.children)
    assert_answers_as_a_rebuild(database, holder.index, [children[0], children[150], adults[3]])


def test_what_changed_since_the_index_was_saved_is_patched_over_it(tmp_path: Path) -> None:
    """An import while the node was stopped (100 children changed, 5 removed) is patched over the
    saved index at the next start: no build, and the moved and removed children are answered as
    a full build would."""
    database = tmp_path / "node.sqlite3"
    before = rows(1000)
    load(database, before)
    started(database)
    after = [dict(r, postcode="N17 6AB") if i < 100 else r for i, r in enumerate(before)][:-5]
    load(database, after, full=True)
    restarted, holder = started(database)
    assert (0, "snapshot", 105) == (restarted.builds, holder.source, holder.patched)
    assert_answers_as_a_rebuild(database, holder.index, [after[0], after[99], after[100], before[-1]])


def test_a_restart_keeps_the_statistics_of_the_saved_build(tmp_path: Path) -> None:
    """The matcher's name, date and postcode counts are read back with the saved index, not
    counted again: after 100 children moved while the node was stopped, the restarted index has
    the statistics of the build that was saved, as the running node patched over it would."""
    database = tmp_path / "node.sqlite3"
    before = rows(300)
    load(database, before)
    first, _ = started(database)
    built = first.current.index.statistics  # type: ignore[union-attr]
    load(database, [dict(r, postcode="N17 6AB") if i < 100 else r for i, r in enumerate(before)], full=True)
    restarted, holder = started(database)
    assert (0, "snapshot") == (restarted.builds, holder.source)
    expected, actual = built, holder.index.statistics
    assert expected == actual
    assert 0 == actual.postcode["N17 6AB"]


def test_a_saved_index_from_an_earlier_day_drops_who_turned_18_and_is_rebuilt_behind(tmp_path: Path) -> None:
    """A child who turned 18 since the index was saved is not in the index read back, and the
    keeper rebuilds the index from the store at its next round (the node answers meanwhile)."""
    database = tmp_path / "node.sqlite3"
    turning = child_row("T-1", "Tia", "Eighteen", (TODAY - timedelta(days=1)).replace(
        year=TODAY.year - 18).isoformat(), postcode="LS6 1AA")
    load(database, [*rows(50), turning])
    started(database, lambda: TODAY - timedelta(days=2))
    restarted = keeper(database)
    holder = restarted.refresh()
    assert ("snapshot", True, False) == (holder.source, holder.stale, "T-1" in holder.index.children)
    assert (0, "built") == (restarted.builds, restarted.refresh().source)
    restarted.close()
    assert 1 == restarted.builds


def _flip_a_byte(path: Path, database: Path) -> None:
    data = bytearray(path.read_bytes())
    data[len(data) // 2] ^= 1
    path.write_bytes(bytes(data))


def _cut_short(path: Path, database: Path) -> None:
    path.write_bytes(path.read_bytes()[:100])


def _from_another_store(path: Path, database: Path) -> None:
    other = database.with_name("other.sqlite3")
    shutil.copy(database, other)
    with Store(other) as store:
        store.db.execute("UPDATE meta SET value = ? WHERE key = 'index_key'", (snapshots.new_key(),))
    started(other)
    shutil.copy(snapshots.path_for(other), path)


def _store_rolled_back(path: Path, database: Path) -> None:
    with Store(database) as store:  # a generation older than the snapshot's
        store.db.execute("UPDATE meta SET value = '0' WHERE key = 'generation'")


def _changes_not_itemised(path: Path, database: Path) -> None:
    with Store(database) as store, store.transaction() as conn:
        store.bump_generation(conn, None)


def _record_deleted_behind_its_back(path: Path, database: Path) -> None:
    with Store(database) as store:  # no generation bump: the store no longer says what changed
        store.db.execute("DELETE FROM children WHERE record_id = 'K-7'")


def _record_added_behind_its_back(path: Path, database: Path) -> None:
    with Store(database) as store:
        store.db.execute("INSERT INTO children (record_id, pseudonym, given_name, family_name, "
                         "date_of_birth) VALUES ('K-X', 'p-x', 'KIT', 'EXTRA', ?)", (years_ago(6),))


def _older_format(path: Path, database: Path) -> None:
    with Store(database) as store:  # authenticated, but written by an older version
        key = store.index_key()
    body = path.read_bytes()[:-32].replace(b'"format":%d' % snapshots.FORMAT, b'"format":1', 1)
    path.write_bytes(body + hmac.digest(key, body, hashlib.sha256))


def _other_name_tables(path: Path, database: Path) -> None:
    with Store(database) as store:  # authenticated, but made when the name tables said otherwise
        key = store.index_key()
    # another digest's key check, written with as many digits (the header's length is framed)
    other = candidates.KEY_CHECK + (1 if candidates.KEY_CHECK % 10 < 9 else -1)
    body = path.read_bytes()[:-32].replace(b'"key_check":%d' % candidates.KEY_CHECK,
                                           b'"key_check":%d' % other, 1)
    path.write_bytes(body + hmac.digest(key, body, hashlib.sha256))


UNFIT = {
    "from an older format": (_older_format, "expected format"),
    "made under other name tables": (_other_name_tables, "other name tables"),
    "a byte changed": (_flip_a_byte, "authentication code"),
    "cut short": (_cut_short, "authentication code"),
    "from another store": (_from_another_store, "authentication code"),
    "the store is of an older generation": (_store_rolled_back, "generation"),
    "changes since it was saved not itemised": (_changes_not_itemised, "changed too much"),
    "a record deleted without a new generation": (_record_deleted_behind_its_back, "the store does not"),
    "a record added without a new generation": (_record_added_behind_its_back, "it does not"),
}


@pytest.mark.parametrize("case", sorted(UNFIT))
def test_a_saved_index_that_does_not_fit_the_store_is_ignored_and_the_index_built(
        tmp_path: Path, case: str) -> None:
    """A saved index is never trusted blindly: damaged, from another store, or not describing the
    records the store holds, it is ignored (with the reason on /healthz) and the index is built."""
    database = tmp_path / "node.sqlite3"
    children = rows(60)
    load(database, children)
    started(database)
    spoil, reason = UNFIT[case]
    spoil(snapshots.path_for(database), database)
    restarted, holder = started(database)
    assert (1, "built") == (restarted.builds, holder.source)
    assert (restarted.snapshot_read or "").startswith("ignored: ")
    assert reason in (restarted.snapshot_read or "")
    assert_answers_as_a_rebuild(database, holder.index, [children[0], children[-1]])


@pytest.mark.parametrize("mode", [0o600, 0o640])
def test_the_saved_index_has_the_store_file_permissions(tmp_path: Path, mode: int) -> None:
    """The saved index holds record ids and keys derived from identities: it is exactly as open
    as the store beside it, never more."""
    database = tmp_path / "node.sqlite3"
    load(database, rows(5))
    os.chmod(database, mode)
    started(database)
    assert mode == snapshots.path_for(database).stat().st_mode & 0o777


@pytest.fixture
async def fed(tmp_path: Path) -> AsyncIterator[Federation]:
    federation = build_federation(tmp_path / "federation", default_records())
    federation.node_configs["alpha"] = dataclasses.replace(federation.node_configs["alpha"],
                                                           index_poll_seconds=0.05)
    try:
        yield federation
    finally:
        await federation.close()


async def test_a_restarted_node_is_ready_from_its_saved_index_and_answers(fed: Federation) -> None:
    """Through the real node: the first run saves its index; after a restart the node is ready
    with the index read back (no build) and answers a query."""
    await fed.start_node("alpha")
    assert 1 == fed.runners["alpha"].app[NODE].indexes.builds
    await fed.stop("alpha")
    await fed.start_node("alpha")
    indexes = fed.runners["alpha"].app[NODE].indexes
    assert (0, "snapshot") == (indexes.builds, indexes.current.source)  # type: ignore[union-attr]
    status, body = await post_query(fed, "alpha", broker_signed_query(fed, {**AMARA}))
    assert 200 == status, body


def test_the_name_tables_digest_changes_with_any_table(tmp_path: Path) -> None:
    """A canonical spelling listed since (Md for Muhammad) changes a name's keys, so an index saved
    under other tables must not be read back: the digest in the key check covers every table."""
    tables = tmp_path / "data"
    shutil.copytree(Path(names.__file__).parent / "data", tables)
    before = names.tables_digest(tables)
    variants = tables / "name_variants.csv"
    variants.write_text(variants.read_text() + "zzz,zzy\n")
    after = names.tables_digest(tables)
    assert before == names.tables_digest(Path(names.__file__).parent / "data")
    assert before != after
    assert candidates.key_check(before) != candidates.key_check(after)
