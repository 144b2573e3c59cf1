"""Building a large match index on two cores.

Most of a full build is deriving and sorting every child's candidate keys (``node.candidates``).
For a large store, when another core is idle, a helper process (a fresh interpreter, not forked
from the node's threads) reads the children through a connection of its own, in one read
transaction, and derives the keys of the later part of them, while this process reads the
children, counts the matcher's statistics and derives the keys of the first part; the two sorted
parts are then merged. On a busy machine the build stays in one process: the helper reads every
child again, so there it would only add work. The keys and their order are exactly those of a
build in one process (``tests/test_index_build.py``).

The helper reads the same store at the same generation: it says which generation it read and
how many children, and a digest of the record ids it derived keys for. If any of these differs
from what this process read (the store changed between the two reads), or the helper fails, its
part is derived here instead, so a build never uses keys of records it does not hold.
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
import subprocess
import sys
from array import array
from collections.abc import Iterable, Sequence
from datetime import date
from pathlib import Path

from node.candidates import MAX_RECORDS, CandidateIndex
from node.matching import MatchIndex, Statistics
from node.policy import archived_from
from node.store import Child, Store

log = logging.getLogger("signpost.node.index")

PARALLEL_FROM = 40_000
"""Children from which a build uses a helper process (below, starting it costs more than it saves)."""
HELPER_TIMEOUT_SECONDS = 600.0
"""How long the build waits for the helper's keys at most (then derives them itself)."""
SHARE_HERE = 0.4
"""The part of the children whose keys this process derives (it also reads every child and counts
the statistics; the helper reads every child too, and derives the rest)."""


Part = tuple[int, int, bytes, bytes]
"""What the helper gives: the generation it read, the number of children, the digest of the
record ids it derived keys for, and their packed keys, sorted, as bytes."""


def _digest(records: Iterable[Child]) -> bytes:
    digest = hashlib.blake2b(digest_size=16)
    for child in records:
        digest.update(child.record_id.encode() + b"\x1f")
    return digest.digest()


def _split(count: int) -> int:
    """The first position whose keys the helper derives, of ``count`` children."""
    return int(count * SHARE_HERE)


def derive_part(database: str, today: str, generation: int, start: int) -> Part:
    """In the helper: the packed keys, sorted, of the children from position ``start`` on (of
    those not archived on ``today``, in the store's order), with the generation read, the number
    of children and the digest of the record ids it derived keys for."""
    day = date.fromisoformat(today)
    store = Store(Path(database))
    try:
        with store.snapshot():
            read = store.generation()
            if read != generation:
                return read, 0, b"", b""
            adult = archived_from(day)
            live = (c for c in store.children() if c.date_of_birth > adult)  # not archived
            mine: list[Child] = []
            count = 0
            for count, child in enumerate(live, start=1):
                if count > start:
                    mine.append(child)
            packed = CandidateIndex.packed_keys(mine, start)
    finally:
        store.close()
    packed.sort()
    return read, count, _digest(mine), array("q", packed).tobytes()


def _helper(database: Path, today: date, generation: int, start: int) -> subprocess.Popen[bytes]:
    """Start the helper: ``python -m node.indexbuild`` (a fresh interpreter; it writes a line of
    JSON, then the keys, to its standard output)."""
    return subprocess.Popen(
        [sys.executable, "-m", "node.indexbuild", str(database), today.isoformat(), str(generation),
         str(start)],
        stdin=subprocess.DEVNULL, stdout=subprocess.PIPE, stderr=subprocess.PIPE)


def _a_core_is_free() -> bool:
    """Whether another core is idle (by the load average over the last minute, which counts this
    process too): the helper reads every child again, so on a busy machine it only adds work."""
    cores = os.cpu_count() or 1
    return cores >= 2 and os.getloadavg()[0] < cores - 0.5


def build(store: Store, children: Iterable[Child], *, today: date, generation: int) -> MatchIndex:
    """The match index over ``children`` (the store's live children in its order, read inside the
    caller's read transaction at ``generation``), on two cores when the store is large."""
    expected = int(store.db.execute("SELECT count(*) FROM children").fetchone()[0])
    if expected < PARALLEL_FROM or not _a_core_is_free():
        return MatchIndex(children)
    start = _split(expected)
    helper = _helper(store.path, today, generation, start)
    try:
        records = list(children)
        if len(records) > MAX_RECORDS:
            return MatchIndex(records)  # (which says why not)
        statistics = Statistics.count(records)
        packed = CandidateIndex.packed_keys(records[:start], 0)
        packed.sort()
        theirs = _their_part(helper, records, generation, start)
    finally:
        if helper.poll() is None:
            helper.kill()
        helper.wait()
    if theirs is None:
        packed.extend(CandidateIndex.packed_keys(records[start:], start))
    else:
        packed.extend(theirs)  # two sorted runs: the sort below merges them
    packed.sort()
    return MatchIndex(records, candidates=CandidateIndex.from_packed(array("q", packed)),
                      statistics=statistics)


def _their_part(helper: subprocess.Popen[bytes], records: Sequence[Child], generation: int,
                start: int) -> array | None:  # type: ignore[type-arg]
    """The helper's keys if it read what this process read, else ``None`` (logged)."""
    try:
        out, errors = helper.communicate(timeout=HELPER_TIMEOUT_SECONDS)
        head, _, data = out.partition(b"\n")
        said = json.loads(head) if helper.returncode == 0 else None
        if not isinstance(said, dict):
            raise ValueError(errors.decode(errors="replace").strip().splitlines()[-1:] or "no output")
        read, count, digest = said["generation"], said["children"], bytes.fromhex(said["digest"])
    except (subprocess.TimeoutExpired, ValueError, KeyError, TypeError) as exc:
        log.warning("index build: the helper process failed (%s); deriving its keys here",
                    exc.__class__.__name__)
        return None
    if read != generation or count != len(records) or digest != _digest(records[start:]):
        log.info("index build: the store changed between the two reads; deriving every key here")
        return None
    keys = array("q")
    keys.frombytes(data)
    return keys


def main(argv: Sequence[str]) -> int:
    """The helper: ``python -m node.indexbuild DATABASE TODAY GENERATION START``."""
    database, today, generation, start = argv
    read, count, digest, data = derive_part(database, today, int(generation), int(start))
    out = sys.stdout.buffer
    out.write(json.dumps({"generation": read, "children": count, "digest": digest.hex()}).encode() + b"\n")
    out.write(data)
    out.flush()
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
