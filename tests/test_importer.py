"""Importing an authority's CSV files into a real SQLite store."""

from __future__ import annotations

import csv
import os
import sqlite3
import sys
import threading
from collections.abc import Callable
from pathlib import Path

import pytest

from federation.commands import node as node_cli
from node.importer import import_files
from node.store import MIGRATIONS, Store
from tests.conftest import (
    AMARA_NHS,
    CHILD_HEADER,
    INVOLVEMENT_HEADER,
    child_row,
    involvement_row,
    write_rows,
    years_ago,
)

Rows = list[dict[str, str]]


def files(tmp_path: Path, children: Rows, involvements: Rows) -> tuple[Path, Path]:
    return (write_rows(tmp_path / "children.csv", CHILD_HEADER, children),
            write_rows(tmp_path / "involvements.csv", INVOLVEMENT_HEADER, involvements))


GOOD_CHILDREN = [
    child_row("C-1", "Zoë", "O'Neill", years_ago(6), nhs_number=AMARA_NHS, sex="female", postcode="ls1 4ab"),
    child_row("C-2", "Leo", "Smith-Jones", years_ago(9), other_names="Leo Jones;Leon Smith"),
]
BAD_CHILDREN = [
    child_row("C-3", "Ava", "Khan", "31/02/2015"),                                  # line 4
    child_row("C-4", "Ava", "Khan", years_ago(3), nhs_number="9434765918"),         # line 5
    child_row("", "Ava", "Khan", years_ago(3)),                                     # line 6
    child_row("C-5", "Ava", "Khan", years_ago(3), postcode="NOT A POSTCODE"),       # line 7
    child_row("C-6", "Ava", "Khan", years_ago(3), shielded="maybe"),                # line 8
]
GOOD_INVOLVEMENTS = [involvement_row("I-1", "C-1", lead="true"), involvement_row("I-2", "C-2")]
BAD_INVOLVEMENTS = [
    involvement_row("I-3", "C-99"),                                                 # line 4
    involvement_row("I-4", "C-1", secure_email="not-an-email"),                     # line 5
    involvement_row("I-5", "C-1", notify_on_access="true"),                         # line 6
]


def test_bad_rows_are_rejected_and_good_rows_imported(tmp_path: Path) -> None:
    """Good rows land; each bad row is reported with its file, line, field and reason."""
    store = Store(tmp_path / "node.sqlite3")
    children, involvements = files(
        tmp_path, GOOD_CHILDREN + BAD_CHILDREN, GOOD_INVOLVEMENTS + BAD_INVOLVEMENTS)
    summary = import_files(store, children, involvements, rejects_path=tmp_path / "rejects.csv")
    assert {"children": 2, "involvements": 2} == store.counts()
    assert 2 == summary.children_added
    expected = [
        ("children.csv", 4, "C-3", "date_of_birth"),
        ("children.csv", 5, "C-4", "nhs_number"),
        ("children.csv", 6, "", "record_id"),
        ("children.csv", 7, "C-5", "postcode"),
        ("children.csv", 8, "C-6", "shielded"),
        ("involvements.csv", 4, "I-3", "child_record_id"),
        ("involvements.csv", 5, "I-4", "secure_email"),
        ("involvements.csv", 6, "I-5", "notify_url"),
    ]
    assert expected == [(r.file, r.line, r.record_id, r.field) for r in summary.rejects]
    with open(tmp_path / "rejects.csv", newline="") as fh:
        written = list(csv.DictReader(fh))
    assert 8 == len(written)
    assert "expected YYYY-MM-DD, got '31/02/2015'" == written[0]["reason"]
    child = store.child("C-1")
    assert child is not None
    stored = (child.given_name, child.family_name, child.postcode, child.sex)
    assert ("zoe", "oneill", "LS1 4AB", "F") == stored
    store.close()


def test_importing_the_same_files_twice_changes_nothing(tmp_path: Path) -> None:
    """A second import of identical files adds and updates nothing and keeps the pseudonyms."""
    store = Store(tmp_path / "node.sqlite3")
    children, involvements = files(tmp_path, GOOD_CHILDREN, GOOD_INVOLVEMENTS)
    import_files(store, children, involvements)
    generation = store.generation()
    pseudonym = store.child("C-1").pseudonym  # type: ignore[union-attr]
    again = import_files(store, children, involvements)
    assert (0, 0, 2) == (again.children_added, again.children_updated, again.children_unchanged)
    assert (0, 0, 2) == (again.involvements_added, again.involvements_updated, again.involvements_unchanged)
    assert generation == store.generation()
    assert pseudonym == store.child("C-1").pseudonym  # type: ignore[union-attr]
    store.close()


def test_changed_rows_are_updated_in_place(tmp_path: Path) -> None:
    """A row whose record id exists is updated, not duplicated."""
    store = Store(tmp_path / "node.sqlite3")
    children, involvements = files(tmp_path, GOOD_CHILDREN, GOOD_INVOLVEMENTS)
    import_files(store, children, involvements)
    moved = [{**GOOD_CHILDREN[0], "postcode": "LS8 2QR"}, GOOD_CHILDREN[1]]
    children, involvements = files(tmp_path, moved, GOOD_INVOLVEMENTS)
    summary = import_files(store, children, involvements)
    assert (0, 1, 1) == (summary.children_added, summary.children_updated, summary.children_unchanged)
    assert "LS8 2QR" == store.child("C-1").postcode  # type: ignore[union-attr]
    assert {"children": 2, "involvements": 2} == store.counts()
    store.close()


def test_full_import_removes_absent_records(tmp_path: Path) -> None:
    """`--full` removes children and involvements absent from the files; a plain import keeps them."""
    store = Store(tmp_path / "node.sqlite3")
    children, involvements = files(tmp_path, GOOD_CHILDREN, GOOD_INVOLVEMENTS)
    import_files(store, children, involvements)
    children, involvements = files(tmp_path, GOOD_CHILDREN[:1], GOOD_INVOLVEMENTS[:1])
    partial = import_files(store, children, involvements)
    assert {"children": 2, "involvements": 2} == store.counts()
    assert 0 == partial.children_removed
    full = import_files(store, children, involvements, full=True)
    assert (1, 1) == (full.children_removed, full.involvements_removed)
    assert {"children": 1, "involvements": 1} == store.counts()
    store.close()


def test_a_rejected_row_keeps_what_was_accepted_before(tmp_path: Path) -> None:
    """A bad version of an existing row is rejected; the stored row stays, even in a full import."""
    store = Store(tmp_path / "node.sqlite3")
    children, involvements = files(tmp_path, GOOD_CHILDREN, GOOD_INVOLVEMENTS)
    import_files(store, children, involvements)
    broken = [{**GOOD_CHILDREN[0], "date_of_birth": "not a date"}, GOOD_CHILDREN[1]]
    children, involvements = files(tmp_path, broken, GOOD_INVOLVEMENTS[1:])
    summary = import_files(store, children, involvements, full=True)
    assert ["date_of_birth"] == [r.field for r in summary.rejects]
    assert store.child("C-1") is not None
    assert 0 == summary.children_removed
    store.close()


def test_missing_column_refuses_the_whole_file(tmp_path: Path) -> None:
    """A file without a required column is refused before anything is written."""
    from node.importer import ImportFileError

    store = Store(tmp_path / "node.sqlite3")
    (tmp_path / "children.csv").write_text("record_id,given_name\nC-1,Amara\n")
    _, involvements = files(tmp_path, [], [])
    (tmp_path / "children.csv").write_text("record_id,given_name\nC-1,Amara\n")
    try:
        import_files(store, tmp_path / "children.csv", involvements)
    except ImportFileError as exc:
        assert "missing column(s) family_name, date_of_birth" in str(exc)
    else:
        raise AssertionError("expected ImportFileError")
    assert {"children": 0, "involvements": 0} == store.counts()
    store.close()


def test_middle_names_column_is_optional_and_normalised(tmp_path: Path) -> None:
    """``middle_names`` is an optional column: normalised like any name and kept apart from the
    first name; without it (or left empty) the child's middle names stay inside ``given_name``;
    a value with no letters is rejected naming the column."""
    header = [*CHILD_HEADER, "middle_names"]
    rows = [
        {**child_row("C-1", "Oscar", "Pemberton", years_ago(6)), "middle_names": "Jean-Luc"},
        {**child_row("C-2", "Mary Jane", "Smith", years_ago(7)), "middle_names": ""},
        {**child_row("C-3", "Ava", "Khan", years_ago(3)), "middle_names": "--"},
    ]
    store = Store(tmp_path / "node.sqlite3")
    summary = import_files(store, write_rows(tmp_path / "children.csv", header, rows),
                           write_rows(tmp_path / "involvements.csv", INVOLVEMENT_HEADER, []))
    held = {c.record_id: (c.given_name, c.middle_names) for c in store.children()}
    expected = ({"C-1": ("oscar", "jean luc"), "C-2": ("mary jane", "")},
                [("C-3", "middle_names")])
    actual = (held, [(r.record_id, r.field) for r in summary.rejects])
    assert expected == actual


def test_a_store_from_before_middle_names_gains_the_column(tmp_path: Path) -> None:
    """A node file written before middle names existed (schema 4) is migrated: its children
    keep their given names and have no middle names."""
    path = tmp_path / "node.sqlite3"
    db = sqlite3.connect(path)
    for script in MIGRATIONS[:4]:
        db.executescript(script)
    db.execute("PRAGMA user_version=4")
    db.execute("INSERT INTO children (record_id, pseudonym, given_name, family_name, date_of_birth)"
               " VALUES ('C-1', 'p1', 'mary jane', 'smith', '2015-01-02')")
    db.commit()
    db.close()
    store = Store(path)
    expected = [("mary jane", "")]
    actual = [(c.given_name, c.middle_names) for c in store.children()]
    assert expected == actual


def test_a_value_repeated_from_row_to_row_is_judged_the_same_every_time(tmp_path: Path) -> None:
    """Names, dates and postcodes are remembered across rows for speed; a bad value seen again is
    rejected again, naming the field it is in, and a good one is normalised the same way."""
    store = Store(tmp_path / "node.sqlite3")
    children = [child_row(f"R-{i}", "Zoë", "O'Neill", "2015-02-31" if i < 2 else years_ago(6),
                          postcode="ls1 4ab" if i % 2 else "NOT A POSTCODE") for i in range(4)]
    involvements = [involvement_row("V-1", "R-3", start_date="2020-13-01"),
                    involvement_row("V-2", "R-3", end_date="2020-13-01"),
                    involvement_row("V-3", "R-3", phone="0113 ２４６"),
                    involvement_row("V-4", "R-3", lead=" ")]
    summary = import_files(store, *files(tmp_path, children, involvements))
    assert [(2, "date_of_birth"), (3, "date_of_birth"), (4, "postcode")] == [
        (r.line, r.field) for r in summary.rejects if r.file == "children.csv"]
    assert [(2, "start_date"), (3, "end_date"), (4, "phone")] == [
        (r.line, r.field) for r in summary.rejects if r.file == "involvements.csv"]
    held = store.child("R-3")
    assert held is not None
    assert ("zoe", "oneill", "LS1 4AB") == (held.given_name, held.family_name, held.postcode)


def test_files_unchanged_since_the_last_import_are_not_read_again_but_summed_up_alike(
        tmp_path: Path) -> None:
    """Importing byte-identical files into a store nothing has changed since reports what the
    row-by-row import reported (every row unchanged, the same archived and past-retention counts)
    without reading the rows: a value changed behind the importer's back stays changed."""
    children = [child_row("C-1", "Amara", "Okafor", years_ago(6)),
                child_row("C-2", "Old", "Er", years_ago(19)),
                child_row("C-3", "Older", "Still", years_ago(30))]
    store = Store(tmp_path / "node.sqlite3")
    paths = files(tmp_path, children, [involvement_row("I-1", "C-1")])
    first = import_files(store, *paths, full=True)
    store.db.execute("UPDATE children SET sex = 'X' WHERE record_id = 'C-1'")
    again = import_files(store, *paths, full=True)
    assert ((3, 1, 2, 1), "X") == ((again.children_unchanged, again.involvements_unchanged,
                                    again.children_archived, again.children_past_retention),
                                   store.child("C-1").sex)  # type: ignore[union-attr]
    assert (first.children_archived, first.children_past_retention) == (2, 1)


def test_unchanged_files_are_read_again_when_the_last_import_rejected_rows(tmp_path: Path) -> None:
    """Rejected rows are reported by every import of a file, so a file with rejects is read again."""
    store = Store(tmp_path / "node.sqlite3")
    paths = files(tmp_path, GOOD_CHILDREN + BAD_CHILDREN[:1], GOOD_INVOLVEMENTS)
    assert [1, 1] == [import_files(store, *paths).rejected for _ in range(2)]


def test_unchanged_files_are_read_again_when_the_store_changed_since(tmp_path: Path) -> None:
    """After anything changed the store (another import, a purge), the same files are read row
    by row again: here a full import puts back what another import added and removes it."""
    store = Store(tmp_path / "node.sqlite3")
    paths = files(tmp_path, GOOD_CHILDREN, GOOD_INVOLVEMENTS)
    import_files(store, *paths, full=True)
    other = tmp_path / "other"
    other.mkdir()
    import_files(store, *files(other, [child_row("X-1", "Extra", "Child", years_ago(4))], []))
    again = import_files(store, *paths, full=True)
    assert (1, 2) == (again.children_removed, again.children_unchanged)
    assert {"children": 2, "involvements": 2} == store.counts()


def test_a_full_import_after_a_partial_one_of_the_same_files_reads_them(tmp_path: Path) -> None:
    """--full after an import without it must look for records outside the files, so it reads them."""
    store = Store(tmp_path / "node.sqlite3")
    (tmp_path / "other").mkdir()
    import_files(store, *files(tmp_path / "other", [child_row("X-1", "Extra", "Child", years_ago(4))], []))
    paths = files(tmp_path, GOOD_CHILDREN, GOOD_INVOLVEMENTS)
    import_files(store, *paths)
    assert 1 == import_files(store, *paths, full=True).children_removed


def test_a_plain_http_notify_url_is_rejected_unless_the_node_allows_it(tmp_path: Path) -> None:
    """Proves closed by default at import: a notification URL must be https://; http:// is taken
    only with the node's `unsafe_http_webhooks`, and the rejection names the field and setting."""
    rows = [involvement_row("I-1", "C-1", lead="true", notify_url="https://hooks.example.gov.uk/lead"),
            involvement_row("I-2", "C-2", lead="true", notify_url="http://hooks.example.gov.uk/lead")]
    children, involvements = files(tmp_path, GOOD_CHILDREN, rows)
    with Store(tmp_path / "closed.sqlite3") as store:
        closed = import_files(store, children, involvements)
    with Store(tmp_path / "open.sqlite3") as store:
        opened = import_files(store, children, involvements, unsafe_http_webhooks=True)
    assert [("I-2", "notify_url")] == [(r.record_id, r.field) for r in closed.rejects]
    assert "unsafe_http_webhooks" in closed.rejects[0].reason
    assert ([], 2) == (opened.rejects, opened.involvements_added)


def test_the_same_files_are_checked_again_when_the_node_no_longer_allows_plain_http(tmp_path: Path) -> None:
    """A row taken under unsafe_http_webhooks is not 'unchanged' once the setting is off: the same
    files are read again and the http:// notification URL rejected, naming the field."""
    rows = [involvement_row("I-1", "C-1", lead="true", notify_url="http://hooks.example.gov.uk/lead")]
    paths = files(tmp_path, GOOD_CHILDREN, rows)
    with Store(tmp_path / "node.sqlite3") as store:
        assert 0 == import_files(store, *paths, unsafe_http_webhooks=True).rejected
        again = import_files(store, *paths)
    assert [("I-1", "notify_url")] == [(r.record_id, r.field) for r in again.rejects]


def test_only_the_reading_runs_in_stage_and_the_merge_after_it(tmp_path: Path) -> None:
    """The command line runs ``stage`` at a lower CPU priority; the write transaction that a live
    node's queries wait on must not be inside it: when the staging is done nothing is merged yet."""
    store = Store(tmp_path / "node.sqlite3")
    seen: list[dict[str, int]] = []

    def stage(work: Callable[[], None]) -> None:
        work()
        with Store(tmp_path / "node.sqlite3") as other:
            seen.append(other.counts())

    import_files(store, *files(tmp_path, GOOD_CHILDREN, GOOD_INVOLVEMENTS), stage=stage)
    assert [{"children": 0, "involvements": 0}] == seen
    assert {"children": 2, "involvements": 2} == store.counts()


@pytest.mark.skipif(sys.platform != "linux", reason="per-thread CPU priority is Linux's")
def test_the_import_thread_alone_runs_at_lower_priority() -> None:
    """``signpost node import --nice N`` lowers the priority of the thread that reads the files,
    never the caller's (which then commits the import at its own priority)."""
    def niceness() -> int:
        return os.getpriority(os.PRIO_PROCESS, threading.get_native_id())

    before = niceness()
    inside = node_cli._yielding(5, niceness)
    assert (min(19, before + 5), before) == (inside, niceness())
