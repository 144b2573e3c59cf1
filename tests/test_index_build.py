"""A large index built on two cores (``node.indexbuild``) is the index one process builds: the
same packed keys in the same order and the same statistics, whether the helper process's part is
used, or the helper read another generation, or failed."""

from __future__ import annotations

import logging
import random
import subprocess
import sys
from collections import Counter
from collections.abc import Iterator
from datetime import date
from pathlib import Path

import pytest

from federation.identity import normalise_name
from federation.names import name_tokens
from federation.tools import synthetic
from node import indexbuild
from node.candidates import CandidateIndex
from node.comparison import split_given
from node.importer import import_files
from node.indexing import IndexKeeper
from node.matching import MatchIndex, Statistics
from node.policy import is_archived
from node.store import Child, Store
from tests.conftest import CHILD_HEADER, INVOLVEMENT_HEADER, TODAY, child_row, write_rows, years_ago

NAMES = ("Amara", "Leo", "Zoë", "Siobhan", "Kit", "Mohammed", "Olivia", "Jean-Luc")
FAMILIES = ("Okafor", "Smith", "O'Neill", "Nowak", "Smith-Jones", "Nguyen", "Patel")


def _children(count: int) -> list[dict[str, str]]:
    """Varied children: aliases, hyphens, missing postcodes and identifiers, some aged 18 or over."""
    out = []
    for i in range(count):
        extra = {"postcode": "LS6 1AA" if i % 3 else "", "other_names": "Kitty Smith" if i % 7 == 0 else "",
                 "upn": "", "nhs_number": ""}
        out.append(child_row(f"K-{i}", NAMES[i % len(NAMES)], FAMILIES[i % len(FAMILIES)],
                             years_ago(2 + i % 19, 1 + i % 12, 1 + i % 28), **extra))
    return out


@pytest.fixture
def database(tmp_path: Path) -> Path:
    path = tmp_path / "node.sqlite3"
    with Store(path) as store:
        import_files(store, write_rows(tmp_path / "c.csv", CHILD_HEADER, _children(400)),
                     write_rows(tmp_path / "i.csv", INVOLVEMENT_HEADER, []))
    return path


@pytest.fixture(autouse=True)
def small_parallel(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(indexbuild, "PARALLEL_FROM", 10)
    monkeypatch.setattr(indexbuild, "_a_core_is_free", lambda: True)


def _built(database: Path, generation: int | None = None) -> MatchIndex:
    with Store(database) as store, store.snapshot():
        live = (c for c in store.children() if not is_archived(c, TODAY))
        return indexbuild.build(store, live, today=TODAY,
                                generation=store.generation() if generation is None else generation)


def _one_process(database: Path) -> MatchIndex:
    with Store(database) as store:
        return MatchIndex(c for c in store.children() if not is_archived(c, TODAY))


def _same(a: MatchIndex, b: MatchIndex) -> None:
    form_a, form_b = a.saved_form, b.saved_form
    assert form_a is not None and form_b is not None
    assert form_a[0] == form_b[0]  # the records, in the same order
    assert form_a[1].packed.tobytes() == form_b[1].packed.tobytes()
    assert form_a[2].to_json() == form_b[2].to_json()


@pytest.fixture
def parts(monkeypatch: pytest.MonkeyPatch) -> Iterator[list[object]]:
    """What ``_their_part`` gave each build (``None``: the helper's part was not used)."""
    seen: list[object] = []
    original = indexbuild._their_part

    def recorded(*args: object, **kwargs: object) -> object:
        got = original(*args, **kwargs)  # type: ignore[arg-type]
        seen.append(got)
        return got

    monkeypatch.setattr(indexbuild, "_their_part", recorded)
    yield seen


def test_the_helper_derives_part_of_the_keys_and_the_index_is_the_same(database: Path,
                                                                       parts: list[object]) -> None:
    index = _built(database)
    assert len(parts) == 1 and parts[0] is not None and len(parts[0]) > 0  # type: ignore[arg-type]
    _same(index, _one_process(database))
    assert len(index) < 400  # the archived were left out, on both sides


def test_a_helper_that_read_another_generation_is_not_used(database: Path, parts: list[object],
                                                           caplog: pytest.LogCaptureFixture) -> None:
    with Store(database) as store:
        generation = store.generation()
    with caplog.at_level(logging.INFO, logger="signpost.node.index"):
        index = _built(database, generation=generation + 1)  # as if the store changed in between
    assert parts == [None]
    assert "changed between the two reads" in caplog.text
    _same(index, _one_process(database))


def test_a_failed_helper_is_not_used(database: Path, parts: list[object], monkeypatch: pytest.MonkeyPatch,
                                     caplog: pytest.LogCaptureFixture) -> None:
    def failing(*_: object) -> subprocess.Popen[bytes]:
        garbage = "import sys; sys.stdout.write('garbage'); sys.exit(3)"
        return subprocess.Popen([sys.executable, "-c", garbage],
                                stdout=subprocess.PIPE, stderr=subprocess.PIPE)

    monkeypatch.setattr(indexbuild, "_helper", failing)
    index = _built(database)
    assert parts == [None]
    assert "helper process failed" in caplog.text
    _same(index, _one_process(database))


def test_parts_of_the_packed_keys_sort_into_the_whole(database: Path) -> None:
    with Store(database) as store:
        records = list(store.children())
    whole = CandidateIndex(records).packed
    joined = CandidateIndex.packed_keys(records[:123], 0) + CandidateIndex.packed_keys(records[123:], 123)
    assert sorted(joined) == whole.tolist()


def test_the_index_keeper_builds_on_two_cores(database: Path, parts: list[object]) -> None:
    keeper = IndexKeeper(database, busy_timeout_seconds=1, today=lambda: TODAY)
    try:
        holder = keeper.refresh()
    finally:
        keeper.close()
    assert len(parts) == 1 and parts[0] is not None
    _same(holder.index, _one_process(database))


def test_a_busy_machine_builds_in_one_process(database: Path, parts: list[object],
                                              monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(indexbuild, "_a_core_is_free", lambda: False)
    index = _built(database)
    assert parts == []  # no helper was started
    _same(index, _one_process(database))


def _counted_one_by_one(records: list[Child]) -> Statistics:
    """The statistics as a loop over the records counts them (what ``Statistics.count`` gave
    before it counted raw values first): the reference for the faster count."""
    given: Counter[str] = Counter()
    first: Counter[str] = Counter()
    first_sex: Counter[tuple[str, str]] = Counter()
    first_family: set[str] = set()
    family: Counter[str] = Counter()
    dob: Counter[date] = Counter()
    postcode: Counter[str] = Counter()
    middle_counts: Counter[str] = Counter()
    for child in records:
        first_name, middle = split_given(child.given_name, child.middle_names)
        given["".join(name_tokens(first_name))] += 1
        if middle:
            middle_counts["".join(sorted(name_tokens(middle)))] += 1
        first_token = next(iter(name_tokens(child.given_name)), "")
        first[first_token] += 1
        family_name = "".join(name_tokens(child.family_name))
        first_family.add(f"{first_token}|{family_name}")
        if child.sex in ("F", "M"):
            first_sex[(first_token, child.sex)] += 1
        family[family_name] += 1
        if child.date_of_birth is not None:
            dob[child.date_of_birth] += 1
        if child.postcode:
            postcode[child.postcode] += 1
    return Statistics(given, first, first_sex, first_family, family, dob, postcode, middle_counts)


def test_the_statistics_are_those_of_counting_record_by_record() -> None:
    rng = random.Random(5)
    kids = [synthetic.child(rng, f"S-{i}", "leeds", TODAY) for i in range(3000)]
    records = [Child(k.record_id, f"p{i}", None, None, normalise_name(k.given_name),
                     normalise_name(k.family_name), (), k.date_of_birth, k.sex, k.postcode or None, False,
                     "")
               for i, k in enumerate(kids)]
    odd = [("", "Smith", None, None, ""), ("Lily Rose", "Okafor", "F", "LS6 1AA", "Grace"),
           ("Lily Rose", "Okafor", "F", "", ""), ("Jean-Luc", "O'Neill", "U", None, ""),
           ("Zoë", "Smith-Jones", "M", "LS6 1AA", "Ann Marie"), ("Kit", "Nowak", None, "", "")]
    records += [Child(f"O-{i}", f"o{i}", None, None, normalise_name(g) if g else "", normalise_name(f), (),
                      date(2015, 1, 1 + i), sex, pc, False, normalise_name(m) if m else "")
                for i, (g, f, sex, pc, m) in enumerate(odd * 3)]
    counted = Statistics.count(records)
    assert counted == _counted_one_by_one(records)
    assert Statistics.count(iter(records)) == counted  # any iterable, read once
