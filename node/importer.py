"""Importing an authority's records from two CSV files: children and involvements.

Valid rows are committed in one transaction; every invalid row goes to a rejects file with its
line number, field and reason; re-importing the same files changes nothing (rows are upserted by
the authority's own record id); a full import also removes records absent from the files.
The columns are documented in ``docs/import-format.md``.
"""

from __future__ import annotations

import csv
import json
import os
import secrets
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from datetime import date
from pathlib import Path
from typing import Any

from federation import identity
from federation.canonical import JsonObject
from federation.errors import FieldError, SignpostError
from node.store import CHILD_COLUMNS, INVOLVEMENT_COLUMNS, Store


class ImportFileError(SignpostError):
    """A file cannot be imported at all (missing, unreadable, wrong header)."""


CHILD_REQUIRED = ("record_id", "given_name", "family_name", "date_of_birth")
INVOLVEMENT_REQUIRED = (
    "record_id", "child_record_id", "organisation", "service_category",
    "practitioner_name", "practitioner_role",
)
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

    @property
    def rejected(self) -> int:
        return len(self.rejects)

    def to_json(self) -> JsonObject:
        return {
            "children": {"added": self.children_added, "updated": self.children_updated,
                         "unchanged": self.children_unchanged, "removed": self.children_removed},
            "involvements": {"added": self.involvements_added,
                             "updated": self.involvements_updated,
                             "unchanged": self.involvements_unchanged,
                             "removed": self.involvements_removed},
            "rejected": self.rejected,
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
    }


def _parse_involvement(row: dict[str, str]) -> dict[str, Any]:
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
        raise FieldError("notify_url", f"expected an http(s) URL, got {url!r}")
    if out["notify_on_access"] and url is None:
        raise FieldError("notify_url", "is required when notify_on_access is true")
    out["notify_url"] = url
    return out


def _rows(path: Path, required: tuple[str, ...]) -> Iterator[tuple[int, dict[str, str]]]:
    try:
        fh = open(path, newline="", encoding="utf-8-sig")  # noqa: SIM115 - closed by the with below
    except OSError as exc:
        raise ImportFileError(f"{path}: cannot open: {exc}") from exc
    with fh:
        reader = csv.DictReader(fh)
        header = reader.fieldnames or []
        missing = [c for c in required if c not in header]
        if missing:
            raise ImportFileError(f"{path}: missing column(s) {', '.join(missing)}")
        for row in reader:
            if None in row:
                row.pop(None)
                yield reader.line_num, {"__extra__": "1", **row}
            else:
                yield reader.line_num, {k: v or "" for k, v in row.items()}


def _upsert(
    conn: Any, table: str, columns: tuple[str, ...], values: dict[str, Any]
) -> str:
    """Insert or update one row; say whether it was ``added``, ``updated`` or ``unchanged``."""
    current = conn.execute(
        f"SELECT {', '.join(columns)} FROM {table} WHERE record_id=?",  # noqa: S608
        (values["record_id"],),
    ).fetchone()
    row = tuple(values[c] for c in columns)
    if current is None:
        extra_cols = ", pseudonym" if table == "children" else ""
        extra_vals = (secrets.token_hex(16),) if table == "children" else ()
        marks = ", ".join("?" * (len(columns) + len(extra_vals)))
        conn.execute(
            f"INSERT INTO {table} ({', '.join(columns)}{extra_cols}) VALUES ({marks})",  # noqa: S608
            row + extra_vals,
        )
        return "added"
    if tuple(current) == row:
        return "unchanged"
    sets = ", ".join(f"{c}=?" for c in columns[1:])
    conn.execute(
        f"UPDATE {table} SET {sets} WHERE record_id=?",  # noqa: S608
        (*row[1:], values["record_id"]),
    )
    return "updated"


def _import_table(
    conn: Any,
    path: Path,
    required: tuple[str, ...],
    table: str,
    columns: tuple[str, ...],
    parse: Callable[[dict[str, str]], dict[str, Any]],
    summary: ImportSummary,
    tick: Callable[[], None],
) -> set[str]:
    """Upsert every valid row of one file into ``table``; reject the rest into ``summary``.

    Returns the record ids accepted from the file.
    """
    seen: set[str] = set()
    for line, row in _rows(path, required):
        tick()
        record_id = row.get("record_id", "").strip()
        try:
            if "__extra__" in row:
                raise FieldError("row", "has more fields than the header")
            if record_id in seen:
                raise FieldError("record_id", f"duplicate of an earlier row ({record_id!r})")
            values = parse(row)
        except FieldError as exc:
            summary.rejects.append(Reject(path.name, line, record_id, exc.field, exc.message))
            continue
        seen.add(record_id)
        counter = f"{table}_{_upsert(conn, table, columns, values)}"
        setattr(summary, counter, getattr(summary, counter) + 1)
    return seen


def import_files(
    store: Store,
    children_csv: Path,
    involvements_csv: Path,
    *,
    full: bool = False,
    rejects_path: Path | None = None,
    progress: Callable[[int, int], None] | None = None,
) -> ImportSummary:
    """Import both files in one transaction and return what happened.

    ``progress(done, total)`` is called now and then with the number of rows handled.
    """
    started = time.monotonic()
    summary = ImportSummary()
    total = sum(1 for _ in _rows(children_csv, CHILD_REQUIRED)) + sum(
        1 for _ in _rows(involvements_csv, INVOLVEMENT_REQUIRED))
    done = 0

    def tick() -> None:
        nonlocal done
        done += 1
        if progress is not None and (done % 1000 == 0 or done == total):
            progress(done, total)

    with store.transaction() as conn:
        seen_children = _import_table(
            conn, children_csv, CHILD_REQUIRED, "children", CHILD_COLUMNS, _parse_child, summary, tick)

        def parse_involvement(row: dict[str, str]) -> dict[str, Any]:
            values = _parse_involvement(row)
            child_id = values["child_record_id"]
            known = child_id in seen_children or (not full and conn.execute(
                "SELECT 1 FROM children WHERE record_id=?", (child_id,)).fetchone())
            if not known:
                raise FieldError("child_record_id", f"no accepted child with record_id {child_id!r}")
            return values

        seen_involvements = _import_table(
            conn, involvements_csv, INVOLVEMENT_REQUIRED, "involvements", INVOLVEMENT_COLUMNS,
            parse_involvement, summary, tick)

        if full:
            rejected_children = {r.record_id for r in summary.rejects if r.file == children_csv.name}
            rejected_involvements = {
                r.record_id for r in summary.rejects if r.file == involvements_csv.name}
            # A rejected row keeps what was accepted before: it is neither updated nor removed.
            keep_children = seen_children | rejected_children
            keep_involvements = seen_involvements | rejected_involvements
            conn.execute("CREATE TEMP TABLE IF NOT EXISTS keep_ids (record_id TEXT PRIMARY KEY)")
            conn.execute("DELETE FROM keep_ids")
            conn.executemany("INSERT OR IGNORE INTO keep_ids VALUES (?)",
                             ((r,) for r in keep_involvements))
            summary.involvements_removed = conn.execute(
                "DELETE FROM involvements WHERE record_id NOT IN (SELECT record_id FROM keep_ids)"
            ).rowcount
            conn.execute("DELETE FROM keep_ids")
            conn.executemany("INSERT OR IGNORE INTO keep_ids VALUES (?)",
                             ((r,) for r in keep_children))
            cascade = conn.execute(
                "SELECT count(*) FROM involvements WHERE child_record_id NOT IN "
                "(SELECT record_id FROM keep_ids)").fetchone()[0]
            summary.involvements_removed += cascade
            summary.children_removed = conn.execute(
                "DELETE FROM children WHERE record_id NOT IN (SELECT record_id FROM keep_ids)"
            ).rowcount
            conn.execute("DROP TABLE keep_ids")

        changed = (summary.children_added + summary.children_updated + summary.children_removed
                   + summary.involvements_added + summary.involvements_updated
                   + summary.involvements_removed)
        if changed:
            store.bump_generation(conn)

    if rejects_path is not None:
        write_rejects(summary.rejects, rejects_path)
    summary.seconds = time.monotonic() - started
    return summary


def write_rejects(rejects: list[Reject], path: Path) -> None:
    """Write every rejected row (file, line, record id, field, reason); owner-readable only."""
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "w", newline="") as fh:
        writer = csv.writer(fh)
        writer.writerow(["file", "line", "record_id", "field", "reason"])
        for r in rejects:
            writer.writerow([r.file, r.line, r.record_id, r.field, r.reason])
