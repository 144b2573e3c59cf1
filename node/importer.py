"""Importing an authority's records from two CSV files: children and involvements.

Valid rows land in one transaction; every invalid row goes to a rejects file with its line
number, field and reason; re-importing the same files changes nothing (rows are upserted by
the authority's own record id); a full import also removes records absent from the files.
The columns are documented in ``docs/import-format.md``.

The files are read as a stream, a batch of rows at a time, so memory stays flat however large
they are. Each row's content hash (of the raw fields, the header and ``HASH_VERSION``) is
compared with the stored one in one set-based look-up per batch: an unchanged row is counted
and nothing more, a new or changed row is checked and parsed and written to a private staging
database. The node's tables are touched only at the end, in one short write transaction of
set-based statements (upsert from staging, removals for ``--full``, the itemised change log),
so a running node reading the store sees all of the old records or all of the new.
"""

from __future__ import annotations

import csv
import functools
import hashlib
import json
import os
import secrets
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from datetime import UTC, date, datetime
from pathlib import Path
from typing import Any

from federation import identity
from federation.canonical import JsonObject
from federation.errors import FieldError, SignpostError
from federation.rules import ARCHIVE_AGE
from node.policy import retention_cutoff
from node.store import CHILD_COLUMNS, INVOLVEMENT_COLUMNS, Store


class ImportFileError(SignpostError):
    """A file cannot be imported at all (missing, unreadable, wrong header)."""


CHILD_REQUIRED = ("record_id", "given_name", "family_name", "date_of_birth")
INVOLVEMENT_REQUIRED = (
    "record_id", "child_record_id", "organisation", "service_category",
    "practitioner_name", "practitioner_role",
)
DEFAULT_RETENTION_AGE = 24
"""The retention age the import summary counts against when the caller names none."""
_TRUE = {"1", "true", "yes", "y"}
_FALSE = {"", "0", "false", "no", "n"}


@dataclass(frozen=True)
class Reject:
    file: str
    line: int
    record_id: str
    field: str
    reason: str


@dataclass
class ImportSummary:
    """What an import did; also written to the node's audit log."""

    children_added: int = 0
    children_updated: int = 0
    children_unchanged: int = 0
    children_removed: int = 0
    involvements_added: int = 0
    involvements_updated: int = 0
    involvements_unchanged: int = 0
    involvements_removed: int = 0
    rejects: list[Reject] = field(default_factory=list)
    seconds: float = 0.0
    retention_age: int = 24
    children_archived: int = 0  # imported children aged 18 or over: kept, never returned
    children_past_retention: int = 0  # imported children at or past the retention age: purged next

    @property
    def rejected(self) -> int:
        return len(self.rejects)

    @property
    def changed(self) -> int:
        return (self.children_added + self.children_updated + self.children_removed
                + self.involvements_added + self.involvements_updated + self.involvements_removed)

    def to_json(self) -> JsonObject:
        return {
            "children": {"added": self.children_added, "updated": self.children_updated,
                         "unchanged": self.children_unchanged, "removed": self.children_removed},
            "involvements": {"added": self.involvements_added,
                             "updated": self.involvements_updated,
                             "unchanged": self.involvements_unchanged,
                             "removed": self.involvements_removed},
            "rejected": self.rejected,
            "retention": {"archived": self.children_archived,
                          "past_retention_age": self.children_past_retention,
                          "retention_age": self.retention_age},
        }


def _flag(value: str, name: str) -> int:
    v = value.strip().casefold()
    if v in _TRUE:
        return 1
    if v in _FALSE:
        return 0
    raise FieldError(name, f"expected true/false (or 1/0, yes/no), got {value!r}")


def _optional(value: str) -> str | None:
    v = value.strip()
    return v or None


def _parse_child(row: dict[str, str]) -> dict[str, Any]:
    """Validate and normalise one children.csv row; raises ``FieldError`` on the first fault."""
    for name in CHILD_REQUIRED:
        if not row.get(name, "").strip():
            raise FieldError(name, "is required")
    record_id = row["record_id"].strip()
    given = identity.normalise_name(row["given_name"])
    family = identity.normalise_name(row["family_name"])
    if not given:
        raise FieldError("given_name", f"expected letters, got {row['given_name']!r}")
    if not family:
        raise FieldError("family_name", f"expected letters, got {row['family_name']!r}")
    middle = identity.normalise_name(row.get("middle_names") or "")
    if (row.get("middle_names") or "").strip() and not middle:
        raise FieldError("middle_names", f"expected letters, got {row['middle_names']!r}")
    others = []
    for alias in (row.get("other_names") or "").split(";"):
        normalised = identity.normalise_name(alias)
        if normalised:
            others.append(normalised)
    nhs = _optional(row.get("nhs_number", ""))
    upn = _optional(row.get("upn", ""))
    sex = _optional(row.get("sex", ""))
    postcode = _optional(row.get("postcode", ""))
    return {
        "record_id": record_id,
        "nhs_number": identity.validate_nhs_number(nhs) if nhs else None,
        "upn": identity.validate_upn(upn) if upn else None,
        "given_name": given,
        "family_name": family,
        "other_names": json.dumps(others),
        "date_of_birth": identity.parse_date(row["date_of_birth"], "date_of_birth").isoformat(),
        "sex": identity.normalise_sex(sex) if sex else None,
        "postcode": identity.normalise_postcode(postcode) if postcode else None,
        "shielded": _flag(row.get("shielded", ""), "shielded"),
        "middle_names": middle,
    }


def _parse_involvement(row: dict[str, str], *, unsafe_http_webhooks: bool = False) -> dict[str, Any]:
    for name in INVOLVEMENT_REQUIRED:
        if not row.get(name, "").strip():
            raise FieldError(name, "is required")
    out: JsonObject = {name: row[name].strip() for name in INVOLVEMENT_REQUIRED}
    out["service_category"] = out["service_category"].casefold().replace(" ", "_")
    phone = _optional(row.get("phone", ""))
    if phone is not None and not all(c.isdigit() or c in " +()-" for c in phone):
        raise FieldError("phone", f"expected a telephone number, got {phone!r}")
    out["phone"] = phone
    email = _optional(row.get("secure_email", ""))
    if email is not None and (email.count("@") != 1 or " " in email):
        raise FieldError("secure_email", f"expected an email address, got {email!r}")
    out["secure_email"] = email
    dates: dict[str, date | None] = {}
    for name in ("start_date", "end_date"):
        value = _optional(row.get(name, ""))
        dates[name] = identity.parse_date(value, name) if value else None
        out[name] = dates[name].isoformat() if dates[name] else None  # type: ignore[union-attr]
    if dates["start_date"] and dates["end_date"] and dates["end_date"] < dates["start_date"]:
        raise FieldError("end_date", "must not be before start_date")
    for name in ("lead", "sensitive", "consent", "notify_on_access", "assessment"):
        out[name] = _flag(row.get(name, ""), name)
    url = _optional(row.get("notify_url", ""))
    if url is not None and not url.startswith(("https://", "http://")):
        raise FieldError("notify_url", f"expected an https:// URL, got {url!r}")
    if url is not None and url.startswith("http://") and not unsafe_http_webhooks:
        # Closed by default: a message about a child never travels in clear text.
        raise FieldError("notify_url", "expected an https:// URL (http:// only with the node's "
                         "unsafe_http_webhooks, development only)")
    if out["notify_on_access"] and url is None:
        raise FieldError("notify_url", "is required when notify_on_access is true")
    out["notify_url"] = url
    return out


BATCH_ROWS = 5000
"""Rows read, looked up and staged together."""
HASH_VERSION = b"signpost-import-1"
"""Part of every row hash: change it when parsing changes, so every row is parsed again."""


@dataclass(frozen=True)
class _Table:
    """One file's table: its stored columns, required columns and row parser."""

    name: str
    columns: tuple[str, ...]
    required: tuple[str, ...]
    parse: Callable[[dict[str, str]], dict[str, Any]]


def _count_rows(path: Path) -> int:
    """Lines after the header (the progress bar's total; quoted line breaks make it an estimate)."""
    try:
        with open(path, "rb") as fh:
            lines = sum(block.count(b"\n") for block in iter(lambda: fh.read(1 << 20), b""))
    except OSError as exc:
        raise ImportFileError(f"{path}: cannot open: {exc}") from exc
    return max(lines - 1, 0)


Rows = Iterator[tuple[int, list[str]]]


def _rows(path: Path, required: tuple[str, ...]) -> Iterator[tuple[list[str], Rows]]:
    """Yield once: the header and an iterator of (line number, fields) over the rest."""
    try:
        fh = open(path, newline="", encoding="utf-8-sig")  # noqa: SIM115 - closed by the with below
    except OSError as exc:
        raise ImportFileError(f"{path}: cannot open: {exc}") from exc
    with fh:
        reader = csv.reader(fh)
        header = next(reader, [])
        missing = [c for c in required if c not in header]
        if missing:
            raise ImportFileError(f"{path}: missing column(s) {', '.join(missing)}")

        def rows() -> Rows:
            for fields in reader:
                if fields:
                    yield reader.line_num, fields

        yield header, rows()


class _Staging:
    """The import's private staging database, attached to the store's connection as ``stage``."""

    def __init__(self, conn: Any, tables: tuple[_Table, ...]) -> None:
        self.conn = conn
        conn.execute("ATTACH DATABASE '' AS stage")  # private, temporary, deleted on detach
        conn.execute("PRAGMA stage.journal_mode=OFF")
        conn.execute("PRAGMA stage.synchronous=OFF")
        conn.execute("CREATE TABLE stage.batch (pos INTEGER PRIMARY KEY, record_id TEXT, row_hash INTEGER, "
                     "child_record_id TEXT)")
        for table in tables:
            extra = ", pseudonym TEXT" if table.name == "children" else ""
            conn.execute(f"CREATE TABLE stage.{table.name} ({', '.join(table.columns)}{extra}, "
                         "row_hash INTEGER, PRIMARY KEY (record_id)) WITHOUT ROWID")
            conn.execute(f"CREATE TABLE stage.ok_{table.name} (record_id TEXT PRIMARY KEY) WITHOUT ROWID")

    def close(self) -> None:
        self.conn.execute("DETACH DATABASE stage")


def _stage_file(
    conn: Any, path: Path, table: _Table, summary: ImportSummary, tick: Callable[[int], None], *, full: bool,
) -> None:
    """Read one file a batch at a time; stage its new and changed rows, count the unchanged."""
    for header, rows in _rows(path, table.required):
        shape = _Shape(header, header.index("record_id"),
                       header.index("child_record_id") if "child_record_id" in header else None,
                       hashlib.blake2b(HASH_VERSION + b"\x1f" + "\x1f".join(header).encode(),
                                       digest_size=32).digest())
        batch: list[tuple[int, list[str]]] = []
        for item in rows:
            batch.append(item)
            if len(batch) >= BATCH_ROWS:
                _stage_batch(conn, path, table, summary, batch, shape, full=full)
                tick(len(batch))
                batch = []
        if batch:
            _stage_batch(conn, path, table, summary, batch, shape, full=full)
            tick(len(batch))


@dataclass(frozen=True)
class _Shape:
    """A file's header: where the ids are, and the key its row hashes are made with."""

    header: list[str]
    id_at: int
    child_at: int | None
    key: bytes


def _stage_batch(
    conn: Any, path: Path, table: _Table, summary: ImportSummary, batch: list[tuple[int, list[str]]],
    shape: _Shape, *, full: bool,
) -> None:
    name = table.name
    header, id_at, child_at, key = shape.header, shape.id_at, shape.child_at, shape.key
    width = len(header)
    keyed = []
    for pos, (_, fields) in enumerate(batch):
        record_id = fields[id_at].strip() if id_at < len(fields) else ""
        digest = hashlib.blake2b("\x1f".join(fields).encode(), digest_size=8, key=key).digest()
        child = fields[child_at].strip() if child_at is not None and child_at < len(fields) else None
        keyed.append((pos, record_id, int.from_bytes(digest, "big", signed=True), child))
    conn.executemany("INSERT INTO stage.batch VALUES (?, ?, ?, ?)", keyed)
    known_child = "NULL"
    if child_at is not None:
        staged_child = "EXISTS (SELECT 1 FROM stage.ok_children k WHERE k.record_id = b.child_record_id)"
        held_child = "EXISTS (SELECT 1 FROM main.children c WHERE c.record_id = b.child_record_id)"
        known_child = f"({staged_child})" if full else f"({staged_child} OR {held_child})"
    cursor = conn.cursor()
    cursor.row_factory = None  # plain tuples: this runs once per row of the file
    looked_up = cursor.execute(
        f"SELECT m.record_id IS NOT NULL, m.row_hash, o.record_id IS NOT NULL, {known_child} "  # noqa: S608
        f"FROM stage.batch b LEFT JOIN main.{name} m ON m.record_id = b.record_id "
        f"LEFT JOIN stage.ok_{name} o ON o.record_id = b.record_id ORDER BY b.pos").fetchall()
    conn.execute("DELETE FROM stage.batch")
    accepted: list[tuple[str]] = []
    staged: list[tuple[Any, ...]] = []
    in_batch: set[str] = set()
    unchanged = added = 0
    for (line, fields), (_, record_id, row_hash, _child), (exists, stored_hash, seen, child_known) in zip(
            batch, keyed, looked_up, strict=True):
        try:
            if len(fields) > width:
                raise FieldError("row", "has more fields than the header")
            if seen or record_id in in_batch:
                raise FieldError("record_id", f"duplicate of an earlier row ({record_id!r})")
            if exists and stored_hash == row_hash:
                unchanged += 1
                in_batch.add(record_id)
                accepted.append((record_id,))
                continue
            row = dict(zip(header, fields, strict=False))
            for column in header[len(fields):]:
                row[column] = ""
            values = table.parse(row)
            if child_at is not None and not child_known:
                child_id = values["child_record_id"]
                raise FieldError("child_record_id", f"no accepted child with record_id {child_id!r}")
        except FieldError as exc:
            summary.rejects.append(Reject(path.name, line, record_id, exc.field, exc.message))
            continue
        in_batch.add(record_id)
        accepted.append((record_id,))
        extra = (secrets.token_hex(16),) if name == "children" else ()
        staged.append((*(values[c] for c in table.columns), *extra, row_hash))
        added += not exists
    setattr(summary, f"{name}_unchanged", getattr(summary, f"{name}_unchanged") + unchanged)
    setattr(summary, f"{name}_added", getattr(summary, f"{name}_added") + added)
    if staged:
        marks = ", ".join("?" * len(staged[0]))
        conn.executemany(f"INSERT INTO stage.{name} VALUES ({marks})", staged)  # noqa: S608
    conn.executemany(f"INSERT INTO stage.ok_{name} VALUES (?)", accepted)  # noqa: S608


def _merge(conn: Any, table: _Table, summary: ImportSummary) -> list[str]:
    """Upsert the staged rows into the node's table; return the record ids whose values changed.

    A staged row that exists with the same values (its raw text changed, not what it says) only
    gets its new hash, and counts as unchanged.
    """
    name = table.name
    cols = table.columns[1:]
    ours = ", ".join(f"m.{c}" for c in cols)
    theirs = ", ".join(f"s.{c}" for c in cols)
    rows = conn.execute(
        f"SELECT s.record_id, m.record_id IS NULL FROM stage.{name} s "  # noqa: S608
        f"LEFT JOIN main.{name} m ON m.record_id = s.record_id "
        f"WHERE m.record_id IS NULL OR ({ours}) IS NOT ({theirs})").fetchall()
    changed = [r[0] for r in rows]
    updated = sum(1 for r in rows if not r[1])
    staged = conn.execute(
        f"SELECT count(*) FROM stage.{name}").fetchone()[0]  # noqa: S608
    added = getattr(summary, f"{name}_added")
    setattr(summary, f"{name}_updated", updated)
    setattr(summary, f"{name}_unchanged", getattr(summary, f"{name}_unchanged") + staged - added - updated)
    extra = ", pseudonym" if name == "children" else ""
    all_cols = ", ".join(table.columns)
    sets = ", ".join(f"{c} = excluded.{c}" for c in (*cols, "row_hash"))
    conn.execute(
        f"INSERT INTO main.{name} ({all_cols}{extra}, row_hash) "  # noqa: S608
        f"SELECT {all_cols}{extra}, row_hash FROM stage.{name} WHERE true "
        f"ON CONFLICT (record_id) DO UPDATE SET {sets}")
    return changed


def import_files(
    store: Store,
    children_csv: Path,
    involvements_csv: Path,
    *,
    full: bool = False,
    rejects_path: Path | None = None,
    progress: Callable[[int, int], None] | None = None,
    retention_age: int = DEFAULT_RETENTION_AGE,
    today: date | None = None,
    unsafe_http_webhooks: bool = False,
) -> ImportSummary:
    """Import both files (one transaction as readers see it) and return what happened.

    A ``notify_url`` must be https:// unless ``unsafe_http_webhooks`` (the node's setting of that
    name) allows http://; a row naming another is rejected.

    ``progress(done, total)`` is called now and then with the number of rows handled. The
    summary also counts the imported children already archived (18 or over: kept, never
    returned) and those at or past ``retention_age`` (deleted by the node's next purge).
    """
    started = time.monotonic()
    today = today or datetime.now(UTC).date()
    summary = ImportSummary(retention_age=retention_age)
    tables = (_Table("children", CHILD_COLUMNS, CHILD_REQUIRED, _parse_child),
              _Table("involvements", INVOLVEMENT_COLUMNS, INVOLVEMENT_REQUIRED,
                     functools.partial(_parse_involvement, unsafe_http_webhooks=unsafe_http_webhooks)))
    for path, table in ((children_csv, tables[0]), (involvements_csv, tables[1])):
        for _ in _rows(path, table.required):
            pass  # both headers are checked before anything is read or written
    total = _count_rows(children_csv) + _count_rows(involvements_csv)
    done = 0

    def tick(rows: int) -> None:
        nonlocal done
        done += rows
        if progress is not None:
            progress(min(done, total), total)

    conn = store.db
    staging = _Staging(conn, tables)
    try:
        _stage_file(conn, children_csv, tables[0], summary, tick, full=full)
        _stage_file(conn, involvements_csv, tables[1], summary, tick, full=full)
        with store.transaction():
            changed = _merge(conn, tables[0], summary)
            _merge(conn, tables[1], summary)
            if full:
                changed += _remove_absent(conn, summary, children_csv.name, involvements_csv.name)
            if summary.changed:
                store.bump_generation(conn, changed)
            archived, past = conn.execute(
                "SELECT coalesce(sum(date_of_birth <= ?), 0), coalesce(sum(date_of_birth <= ?), 0) "
                "FROM main.children WHERE record_id IN (SELECT record_id FROM stage.ok_children)",
                (retention_cutoff(today, ARCHIVE_AGE), retention_cutoff(today, retention_age))).fetchone()
            summary.children_archived, summary.children_past_retention = archived, past
    finally:
        staging.close()
    if progress is not None:
        progress(total, total)
    if rejects_path is not None:
        write_rejects(summary.rejects, rejects_path)
    summary.seconds = time.monotonic() - started
    return summary


def _remove_absent(conn: Any, summary: ImportSummary, children_file: str,
                   involvements_file: str) -> list[str]:
    """For ``--full``: remove what the files do not hold; a rejected row keeps its record."""
    for table, file in (("children", children_file), ("involvements", involvements_file)):
        conn.executemany(f"INSERT OR IGNORE INTO stage.ok_{table} VALUES (?)",  # noqa: S608
                         ((r.record_id,) for r in summary.rejects if r.file == file))
    summary.involvements_removed = conn.execute(
        "DELETE FROM main.involvements WHERE record_id NOT IN (SELECT record_id FROM stage.ok_involvements)"
    ).rowcount
    summary.involvements_removed += conn.execute(
        "SELECT count(*) FROM main.involvements WHERE child_record_id NOT IN "
        "(SELECT record_id FROM stage.ok_children)").fetchone()[0]
    absent = "FROM main.children WHERE record_id NOT IN (SELECT record_id FROM stage.ok_children)"
    removed = [r[0] for r in conn.execute(f"SELECT record_id {absent}")]
    summary.children_removed = conn.execute(f"DELETE {absent}").rowcount
    return removed


def write_rejects(rejects: list[Reject], path: Path) -> None:
    """Write every rejected row (file, line, record id, field, reason); owner-readable only."""
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "w", newline="") as fh:
        writer = csv.writer(fh)
        writer.writerow(["file", "line", "record_id", "field", "reason"])
        for r in rejects:
            writer.writerow([r.file, r.line, r.record_id, r.field, r.reason])
