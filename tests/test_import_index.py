"""``signpost node import`` builds the match index for the node's next start and saves it beside
the store when the node would otherwise build it (none saved yet, or many children changed), so
a node started after its first import reads it instead of building; a small import leaves the
saved index for the node to patch; ``--no-index`` builds nothing."""

from __future__ import annotations

import sqlite3
from pathlib import Path

import pytest

from federation.commands import node as node_commands
from federation.commands.main import main
from node import indexing
from node import snapshot as snapshots
from node.store import Store
from tests.conftest import CHILD_HEADER, INVOLVEMENT_HEADER, write_rows
from tests.test_node_snapshot import assert_answers_as_a_rebuild, rows, started


def _import(tmp_path: Path, children: list[dict[str, str]], capsys: pytest.CaptureFixture[str],
            *extra: str) -> str:
    database = tmp_path / "node.sqlite3"
    code = main(["node", "import", "--database", str(database), "--nice", "0",
                 "--children", str(write_rows(tmp_path / "c.csv", CHILD_HEADER, children)),
                 "--involvements", str(write_rows(tmp_path / "i.csv", INVOLVEMENT_HEADER, [])), *extra])
    assert code == 0
    return capsys.readouterr().out


def test_the_first_import_saves_the_index_and_the_node_starts_from_it(
        tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    children = rows(300)
    out = _import(tmp_path, children, capsys)
    database = tmp_path / "node.sqlite3"
    assert "match index: 300 children" in out
    assert snapshots.path_for(database).exists()
    keeper, holder = started(database)
    assert ("snapshot", 0) == (holder.source, keeper.builds)
    with Store(database) as store:
        assert holder.generation == store.generation()
    assert_answers_as_a_rebuild(database, holder.index, children[:20])


def test_an_import_replaces_an_index_saved_by_a_release_with_other_keys(
        tmp_path: Path, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch) -> None:
    """An index saved under other name tables (another key check) would be ignored at the next
    start, so even a small import builds and saves a fresh one; the node then starts from it."""
    children = rows(300)
    monkeypatch.setattr(snapshots, "KEY_CHECK", snapshots.KEY_CHECK ^ 1)  # saved by another release
    _import(tmp_path, children, capsys)
    database = tmp_path / "node.sqlite3"
    monkeypatch.undo()
    assert not snapshots.made_here(snapshots.path_for(database))
    moved = [dict(r, postcode="N17 6AB") if i < 10 else r for i, r in enumerate(children)]
    out = _import(tmp_path, moved, capsys)
    assert "match index: 300 children" in out
    assert snapshots.made_here(snapshots.path_for(database))
    keeper, holder = started(database)
    assert ("snapshot", 0) == (holder.source, keeper.builds)


def test_a_small_import_leaves_the_saved_index_to_be_patched(
        tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    children = rows(300)
    _import(tmp_path, children, capsys)
    database = tmp_path / "node.sqlite3"
    saved = snapshots.path_for(database).read_bytes()
    moved = [dict(r, postcode="N17 6AB") if i < 10 else r for i, r in enumerate(children)]
    out = _import(tmp_path, moved, capsys)
    assert "match index" not in out
    assert saved == snapshots.path_for(database).read_bytes()
    keeper, holder = started(database)
    assert ("snapshot", 10, 0) == (holder.source, holder.patched, keeper.builds)
    assert_answers_as_a_rebuild(database, holder.index, moved[:20])


def test_an_import_changing_more_than_a_patch_takes_saves_a_new_index(
        tmp_path: Path, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(indexing, "PATCH_LIMIT", 50)
    children = rows(300)
    _import(tmp_path, children, capsys)
    moved = [dict(r, postcode="N17 6AB") if i < 100 else r for i, r in enumerate(children)]
    assert "match index: 300 children" in _import(tmp_path, moved, capsys)
    database = tmp_path / "node.sqlite3"
    keeper, holder = started(database)
    assert ("snapshot", 0, 0) == (holder.source, holder.patched, keeper.builds)
    assert_answers_as_a_rebuild(database, holder.index, moved[:20] + moved[150:160])


def test_no_index_builds_nothing(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    out = _import(tmp_path, rows(30), capsys, "--no-index")
    assert "match index" not in out
    assert not snapshots.path_for(tmp_path / "node.sqlite3").exists()


def test_an_index_that_cannot_be_saved_leaves_the_import_standing(
        tmp_path: Path, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch) -> None:
    def locked(*_: object, **__: object) -> None:
        raise sqlite3.OperationalError("database is locked")

    monkeypatch.setattr(node_commands, "save_for_next_start", locked)
    database = tmp_path / "node.sqlite3"
    code = main(["node", "import", "--database", str(database), "--nice", "0",
                 "--children", str(write_rows(tmp_path / "c.csv", CHILD_HEADER, rows(30))),
                 "--involvements", str(write_rows(tmp_path / "i.csv", INVOLVEMENT_HEADER, []))])
    captured = capsys.readouterr()
    assert code == 0
    assert "match index not saved (OperationalError: database is locked)" in captured.err
    with Store(database) as store:
        assert 30 == store.counts()["children"]
