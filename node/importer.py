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

from federation.canonical import JsonObject
from federation.errors import FieldError, SignpostError
from federation.rules import ARCHIVE_AGE
from node import importrows
from node.importrows import CHILD_REQUIRED, INVOLVEMENT_REQUIRED
from node.policy import retention_cutoff
from node.store import CHILD_COLUMNS, INVOLVEMENT_COLUMNS, Store


class ImportFileError(SignpostError):
    """A file cannot be imported at all (missing, unreadable, wrong header)."""


DEFAULT_RETENTION_AGE = 24
"""The retention age the import summary counts against when the caller names none."""


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


BATCH_ROWS = 5000
"""Rows read, looked up and staged together."""
HASH_VERSION = b"signpost-import-1"
"""Part of every row hash: change it when parsing changes, so every row is parsed again."""


@dataclass(frozen=True)
class _Table:
    """One file's table: its stored columns, required columns and row parser, and what its row
    hashes and file digest are made with (``HASH_VERSION`` and any setting the parser obeys, so
    that changing the setting has every row checked again)."""

    name: str
    columns: tuple[str, ...]
    required: tuple[str, ...]
    parser: Callable[[list[str]], importrows.Parser]  # the header's row parser (``node.importrows``)
    version: bytes = HASH_VERSION


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
        for table in tables:
            # No key: rows are appended (ok_* below keeps record ids unique), read once by the merge.
            extra = ", pseudonym TEXT" if table.name == "children" else ""
            conn.execute(f"CREATE TABLE stage.{table.name} ({', '.join(table.columns)}{extra}, "
                         "row_hash INTEGER)")
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
                       hashlib.blake2b(table.version + b"\x1f" + "\x1f".join(header).encode(),
                                       digest_size=32).digest(), table.parser(header))
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
    parse: importrows.Parser


_MISSING: Any = object()
_IN_BATCH = "IN (SELECT value FROM json_each(?))"
"""A batch's record ids go to SQLite as one JSON array parameter, not a row each."""


def _stage_batch(
    conn: Any, path: Path, table: _Table, summary: ImportSummary, batch: list[tuple[int, list[str]]],
    shape: _Shape, *, full: bool,
) -> None:
    """Stage one batch: three set-based look-ups (stored hashes, ids already accepted, known
    children), then each row is counted unchanged, rejected or parsed and staged."""
    name = table.name
    header, id_at, child_at, key = shape.header, shape.id_at, shape.child_at, shape.key
    width = len(header)
    blake2b = hashlib.blake2b
    ids = [fields[id_at].strip() if id_at < len(fields) else "" for _, fields in batch]
    hashes = [int.from_bytes(blake2b("\x1f".join(fields).encode(), digest_size=8, key=key).digest(), "big",
                             signed=True) for _, fields in batch]
    cursor = conn.cursor()
    cursor.row_factory = None  # plain tuples
    batch_ids = json.dumps(ids)
    stored = dict(cursor.execute(
        f"SELECT record_id, row_hash FROM main.{name} WHERE record_id {_IN_BATCH}", (batch_ids,)))  # noqa: S608
    seen = {r for (r,) in cursor.execute(
        f"SELECT record_id FROM stage.ok_{name} WHERE record_id {_IN_BATCH}", (batch_ids,))}  # noqa: S608
    known_children: set[str] = set()
    if child_at is not None:
        wanted = json.dumps(sorted({f[child_at].strip() for _, f in batch if child_at < len(f)}))
        sources = ("stage.ok_children",) if full else ("stage.ok_children", "main.children")
        for source in sources:
            known_children.update(r for (r,) in cursor.execute(
                f"SELECT record_id FROM {source} WHERE record_id {_IN_BATCH}", (wanted,)))  # noqa: S608
    accepted: list[tuple[str]] = []
    staged: list[tuple[Any, ...]] = []
    in_batch: set[str] = set()
    unchanged = added = 0
    parse = shape.parse
    padding = [""] * (width + 1)
    children = name == "children"
    pseudonyms = secrets.token_bytes(16 * len(batch)).hex() if children else ""  # 32 hex digits each
    for at, ((line, fields), record_id, row_hash) in enumerate(zip(batch, ids, hashes, strict=True)):
        try:
            if len(fields) > width:
                raise FieldError("row", "has more fields than the header")
            fields += padding[len(fields):]  # (``importrows.ABSENT``; the hash is of the row as read)
            if record_id in seen or record_id in in_batch:
                raise FieldError("record_id", f"duplicate of an earlier row ({record_id!r})")
            stored_hash = stored.get(record_id, _MISSING)
            if stored_hash == row_hash:
                unchanged += 1
                in_batch.add(record_id)
                accepted.append((record_id,))
                continue
            values = parse(fields)
            if child_at is not None and values[1] not in known_children:
                raise FieldError("child_record_id", f"no accepted child with record_id {values[1]!r}")
        except FieldError as exc:
            summary.rejects.append(Reject(path.name, line, record_id, exc.field, exc.message))
            continue
        in_batch.add(record_id)
        accepted.append((record_id,))
        if children:
            staged.append((*values, pseudonyms[32 * at:32 * at + 32], row_hash))
        else:
            staged.append((*values, row_hash))
        added += stored_hash is _MISSING
    setattr(summary, f"{name}_unchanged", getattr(summary, f"{name}_unchanged") + unchanged)
    setattr(summary, f"{name}_added", getattr(summary, f"{name}_added") + added)
    if staged:
        marks = ", ".join("?" * len(staged[0]))
        conn.executemany(f"INSERT INTO stage.{name} VALUES ({marks})", staged)  # noqa: S608
    conn.executemany(f"INSERT INTO stage.ok_{name} VALUES (?)", accepted)  # noqa: S608


def _merge(conn: Any, table: _Table, summary: ImportSummary, *, itemise: bool = True) -> list[str]:
    """Upsert the staged rows into the node's table; return the record ids whose values changed
    (with ``itemise``; else only count them).

    A staged row that exists with the same values (its raw text changed, not what it says) only
    gets its new hash, and counts as unchanged.
    """
    name = table.name
    cols = table.columns[1:]
    ours = ", ".join(f"m.{c}" for c in cols)
    theirs = ", ".join(f"s.{c}" for c in cols)
    differing = (f"FROM stage.{name} s LEFT JOIN main.{name} m ON m.record_id = s.record_id "
                 f"WHERE m.record_id IS NULL OR ({ours}) IS NOT ({theirs})")
    changed: list[str] = []
    if itemise:
        rows = conn.execute(f"SELECT s.record_id, m.record_id IS NULL {differing}").fetchall()
        changed = [r[0] for r in rows]
        updated = sum(1 for r in rows if not r[1])
    else:
        updated = conn.execute(
            f"SELECT coalesce(sum(m.record_id IS NOT NULL), 0) {differing}").fetchone()[0]
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
    stage: Callable[[Callable[[], None]], None] = lambda work: work(),
    unsafe_http_webhooks: bool = False,
) -> ImportSummary:
    """Import both files (one transaction as readers see it) and return what happened.

    A ``notify_url`` must be https:// unless ``unsafe_http_webhooks`` (the node's setting of that
    name) allows http://; a row naming another is rejected.

    ``progress(done, total)`` is called now and then with the number of rows handled. The
    summary also counts the imported children already archived (18 or over: kept, never
    returned) and those at or past ``retention_age`` (deleted by the node's next purge).
    ``stage(work)`` runs the reading and staging of the rows (all but the short final write
    transaction): the command line runs it on a thread of lower CPU priority, and keeps the
    write transaction, which a running node's queries wait on, at normal priority.
    """
    started = time.monotonic()
    today = today or datetime.now(UTC).date()
    summary = ImportSummary(retention_age=retention_age)
    tables = (_Table("children", CHILD_COLUMNS, CHILD_REQUIRED, importrows.child_parser),
              _Table("involvements", INVOLVEMENT_COLUMNS, INVOLVEMENT_REQUIRED,
                     functools.partial(importrows.involvement_parser,
                                       unsafe_http_webhooks=unsafe_http_webhooks),
                     HASH_VERSION + (b"+unsafe_http_webhooks" if unsafe_http_webhooks else b"")))
    for path, table in ((children_csv, tables[0]), (involvements_csv, tables[1])):
        for _ in _rows(path, table.required):
            pass  # both headers are checked before anything is read or written
    paths = (children_csv, involvements_csv)
    stats = [_file_stat(children_csv), _file_stat(involvements_csv)]  # before the digests are made
    digests = [_file_digest(path, table.version) for path, table in zip(paths, tables, strict=True)]
    cutoffs = (retention_cutoff(today, ARCHIVE_AGE), retention_cutoff(today, retention_age))
    if _same_as_last_time(store, digests, full=full):
        _count_unchanged(store, children_csv, summary, cutoffs)
    else:
        _import_rows(store, paths, tables, summary, cutoffs, (stats, digests),
                     full=full, progress=progress, stage=stage)
    if rejects_path is not None:
        write_rejects(summary.rejects, rejects_path)
    summary.seconds = time.monotonic() - started
    return summary


def _import_rows(store: Store, paths: tuple[Path, Path], tables: tuple[_Table, _Table],
                 summary: ImportSummary, cutoffs: tuple[str, str],
                 files: tuple[list[tuple[int, int, int, int]], list[str]], *, full: bool,
                 progress: Callable[[int, int], None] | None,
                 stage: Callable[[Callable[[], None]], None]) -> None:
    """The import proper: every row looked up by its content hash, new and changed rows staged,
    then one short write transaction merges them (and records the files, ``_LAST_IMPORT``).

    ``files``: the files' ``_file_stat`` taken before their digests were made, and the digests.
    """
    children_csv, involvements_csv = paths
    stats, digests = files
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
        def staging_work() -> None:
            _stage_file(conn, children_csv, tables[0], summary, tick, full=full)
            _stage_file(conn, involvements_csv, tables[1], summary, tick, full=full)

        stage(staging_work)
        with store.transaction():
            changed = _merge(conn, tables[0], summary)
            _merge(conn, tables[1], summary, itemise=False)
            if full:
                changed += _remove_absent(conn, summary, children_csv.name, involvements_csv.name)
            generation = store.bump_generation(conn, changed) if summary.changed else store.generation()
            # Remembered only when the files did not change while they were read.
            unchanged_since = stats == [_file_stat(children_csv), _file_stat(involvements_csv)]
            last = {"digests": digests, "generation": generation, "full": full, "rejected": summary.rejected,
                    "children": (summary.children_added + summary.children_updated
                                 + summary.children_unchanged),
                    "involvements": (summary.involvements_added + summary.involvements_updated
                                     + summary.involvements_unchanged)}
            conn.execute("INSERT OR REPLACE INTO meta VALUES (?, ?)",
                         (_LAST_IMPORT, json.dumps(last) if unchanged_since else "{}"))
        # Counted after the commit, outside the write lock (a running node's queries need it).
        archived, past = conn.execute(
            "SELECT coalesce(sum(date_of_birth <= ?), 0), coalesce(sum(date_of_birth <= ?), 0) "
            "FROM main.children WHERE record_id IN (SELECT record_id FROM stage.ok_children)",
            cutoffs).fetchone()
        summary.children_archived, summary.children_past_retention = archived, past
    finally:
        staging.close()
    if progress is not None:
        progress(total, total)


_LAST_IMPORT = "last_import"
"""The ``meta`` row describing the last import: its files' digests, the generation it left, and
its counts. Files with the same digests, into a store still at that generation, are unchanged
row for row (``_same_as_last_time``)."""


def _file_digest(path: Path, version: bytes) -> str:
    """BLAKE2b of a file's bytes (and its table's ``version``): the same digest, the same rows."""
    digest = hashlib.blake2b(version, digest_size=32)
    try:
        with open(path, "rb") as fh:
            while block := fh.read(1 << 20):
                digest.update(block)
    except OSError as exc:
        raise ImportFileError(f"{path}: cannot read: {exc}") from exc
    return digest.hexdigest()


def _file_stat(path: Path) -> tuple[int, int, int, int]:
    """What changes when a file is written or replaced: device, inode, size, modification time."""
    st = path.stat()
    return st.st_dev, st.st_ino, st.st_size, st.st_mtime_ns


def _same_as_last_time(store: Store, digests: list[str], *, full: bool) -> bool:
    """Whether every row of these files is known to be unchanged without reading them: the files
    are byte for byte those of the last import, which rejected no row, nothing has changed the
    store since (its generation is the one that import left), and a ``--full`` import follows a
    ``--full`` one (else records outside the files could be held, and must be removed)."""
    row = store.db.execute("SELECT value FROM meta WHERE key = ?", (_LAST_IMPORT,)).fetchone()
    if row is None:
        return False
    try:
        last = json.loads(row[0])
    except ValueError:
        return False
    return (isinstance(last, dict) and last.get("digests") == digests and last.get("rejected") == 0
            and last.get("generation") == store.generation() and (last.get("full") or not full))


def _count_unchanged(store: Store, children_csv: Path, summary: ImportSummary,
                     cutoffs: tuple[str, str]) -> None:
    """The summary of an import of unchanged files: every row unchanged, and the imported
    children past the archive and retention ages counted as a full import would."""
    last = json.loads(store.db.execute("SELECT value FROM meta WHERE key = ?", (_LAST_IMPORT,)).fetchone()[0])
    summary.children_unchanged, summary.involvements_unchanged = last["children"], last["involvements"]
    query = ("SELECT coalesce(sum(date_of_birth <= ?), 0), coalesce(sum(date_of_birth <= ?), 0) "  # noqa: S608
             f"FROM children WHERE record_id {_IN_BATCH}")

    def count(batch: list[str]) -> None:
        archived, past = store.db.execute(query, (*cutoffs, json.dumps(batch))).fetchone()
        summary.children_archived += archived
        summary.children_past_retention += past

    for header, rows in _rows(children_csv, CHILD_REQUIRED):
        at = header.index("record_id")
        batch: list[str] = []
        for _, fields in rows:
            batch.append(fields[at].strip() if at < len(fields) else "")
            if len(batch) >= BATCH_ROWS:
                count(batch)
                batch = []
        if batch:
            count(batch)


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
