"""Importing an authority's CSV files into a real SQLite store."""

from __future__ import annotations

import csv
import sqlite3
from pathlib import Path

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
