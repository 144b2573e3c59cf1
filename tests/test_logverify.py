"""The auditor's verification of one log: tampering, forks, rollbacks and bad checkpoints are named."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

from trust.checkpoint import Checkpoint, sign_checkpoint
from trust.logverify import LogReport, Problem, ProblemKind, check_consistency, verify_log
from trust.merkle import EMPTY_ROOT, MemoryTree, leaf_hash, tree_root
from trust.tlog import AuditLog

ORIGIN = "test.example/node"
KEY = Ed25519PrivateKey.generate()
PUBLIC = KEY.public_key()


def entries(count: int, tag: str = "a") -> list[bytes]:
    return [
        json.dumps({"query": f"{tag}-{i}", "purpose": "s47"}, separators=(",", ":")).encode()
        for i in range(count)
    ]


def signed(items: list[bytes], key: Ed25519PrivateKey = KEY) -> str:
    checkpoint = Checkpoint(origin=ORIGIN, size=len(items), root=tree_root(items))
    return sign_checkpoint(checkpoint, ORIGIN, key)


def checkpoint_of(items: list[bytes]) -> Checkpoint:
    return Checkpoint(origin=ORIGIN, size=len(items), root=tree_root(items))


def kinds(report: LogReport) -> list[ProblemKind]:
    return [problem.kind for problem in report.problems]


def test_intact_log_verifies() -> None:
    """Untouched entries with a valid checkpoint and a consistent predecessor give an ok report."""
    items = entries(100)
    leaves = [leaf_hash(e) for e in items]
    proof = MemoryTree(leaves).consistency_proof(60, 100)
    report = verify_log(
        items,
        signed(items),
        ORIGIN,
        PUBLIC,
        previous=checkpoint_of(items[:60]),
        leaf_hashes=leaves,
        consistency_proof=proof,
    )
    assert (True, (), 100, tree_root(items)) == (report.ok, report.problems, report.entries, report.root)


def test_empty_log_verifies() -> None:
    """A log with no entries verifies against a size-0 checkpoint."""
    report = verify_log([], signed([]), ORIGIN, PUBLIC)
    expected = (True, EMPTY_ROOT)
    assert expected == (report.ok, report.root)


@pytest.mark.parametrize("index", [0, 1, 31, 32, 63])
def test_changed_entry_is_named(index: int) -> None:
    """With recorded leaf hashes, a changed entry is named by index and the root mismatch reported."""
    items = entries(64)
    leaves = [leaf_hash(e) for e in items]
    changed = list(items)
    changed[index] = changed[index].replace(b"s47", b"s17")
    report = verify_log(changed, signed(items), ORIGIN, PUBLIC, leaf_hashes=leaves)
    expected = [ProblemKind.ENTRY_MISMATCH, ProblemKind.ROOT_MISMATCH]
    assert expected == kinds(report)
    assert (False, index) == (report.ok, report.first_bad_index)


def test_changed_entry_without_reference_still_fails() -> None:
    """Without recorded leaf hashes the change is still caught, as a root mismatch."""
    items = entries(10)
    changed = [*items[:4], b"forged", *items[5:]]
    report = verify_log(changed, signed(items), ORIGIN, PUBLIC)
    expected = ([ProblemKind.ROOT_MISMATCH], None)
    assert expected == (kinds(report), report.first_bad_index)


def test_many_changed_entries_are_summarised() -> None:
    """Past a limit, further mismatches are counted rather than listed one by one."""
    items = entries(100)
    leaves = [leaf_hash(e) for e in items]
    report = verify_log(entries(100, tag="b"), signed(items), ORIGIN, PUBLIC, leaf_hashes=leaves)
    mismatches = [p for p in report.problems if p.kind == ProblemKind.ENTRY_MISMATCH]
    expected = 21
    assert expected == len(mismatches)
    assert "80 more entries" in mismatches[-1].message
    expected = 0
    assert expected == report.first_bad_index


def test_missing_and_extra_entries() -> None:
    """Fewer entries than the checkpoint covers, or more, are reported with the first index concerned."""
    items = entries(10)
    short = verify_log(items[:7], signed(items), ORIGIN, PUBLIC)
    long = verify_log(items, signed(items[:8]), ORIGIN, PUBLIC)
    expected = ([ProblemKind.MISSING_ENTRIES], 7)
    assert expected == (kinds(short), short.first_bad_index)
    expected = ([ProblemKind.EXTRA_ENTRIES], 8)
    assert expected == (kinds(long), long.first_bad_index)


def test_checkpoint_signed_by_another_key() -> None:
    """A checkpoint not signed by the service's key is reported even if the entries match it."""
    items = entries(5)
    report = verify_log(items, signed(items, Ed25519PrivateKey.generate()), ORIGIN, PUBLIC)
    expected = ([ProblemKind.BAD_SIGNATURE], 5)
    assert expected == (kinds(report), report.checkpoint.size if report.checkpoint else None)


def test_malformed_checkpoint() -> None:
    """A note that is not a checkpoint is reported; the entries are still read and counted."""
    report = verify_log(entries(3), "not a checkpoint\n", ORIGIN, PUBLIC)
    expected = ([ProblemKind.MALFORMED_CHECKPOINT], 3, None)
    assert expected == (kinds(report), report.entries, report.root)


CONSISTENCY_CASES = {
    "fork: same size, different root": (
        checkpoint_of(entries(10)),
        checkpoint_of(entries(10, tag="b")),
        ProblemKind.FORK,
    ),
    "rollback: smaller size than seen before": (
        checkpoint_of(entries(10)),
        checkpoint_of(entries(8)),
        ProblemKind.ROLLBACK,
    ),
    "fork: the new tree does not extend the old": (
        checkpoint_of(entries(10)),
        checkpoint_of(entries(20, tag="b")),
        ProblemKind.FORK,
    ),
    "origin changed": (
        Checkpoint(origin="other.example/log", size=10, root=tree_root(entries(10))),
        checkpoint_of(entries(10)),
        ProblemKind.ORIGIN_CHANGED,
    ),
    "empty tree seen before with a non-empty root": (
        Checkpoint(origin=ORIGIN, size=0, root=tree_root(entries(1))),
        checkpoint_of(entries(3)),
        ProblemKind.FORK,
    ),
}


@pytest.mark.parametrize("case", CONSISTENCY_CASES)
def test_consistency_with_previous_checkpoint(case: str) -> None:
    """Each way a checkpoint can contradict the last one seen is reported as its own kind."""
    previous, current, expected = CONSISTENCY_CASES[case]
    proof = None
    if case.startswith("fork: the new tree"):  # the service's own proof for its (forked) tree
        proof = MemoryTree(leaf_hash(e) for e in entries(20, tag="b")).consistency_proof(10, 20)
    actual = [p.kind for p in check_consistency(previous, current, proof=proof)]
    assert [expected] == actual


def test_fork_with_same_size_is_reported_by_verify_log() -> None:
    """Two checkpoints of the same size with different roots: the auditor reports a fork."""
    items, other = entries(12), entries(12, tag="b")
    report = verify_log(other, signed(other), ORIGIN, PUBLIC, previous=checkpoint_of(items))
    expected = [ProblemKind.FORK]
    assert expected == kinds(report)
    assert "two checkpoints of size 12" in report.problems[0].message


def test_rewritten_history_is_a_fork() -> None:
    """A log that grew but whose first entries changed since the last checkpoint is a fork."""
    seen = entries(10)
    rewritten = [*seen[:3], b"rewritten", *seen[4:], *entries(5, tag="new")]
    report = verify_log(rewritten, signed(rewritten), ORIGIN, PUBLIC, previous=checkpoint_of(seen))
    expected = [ProblemKind.FORK]
    assert expected == kinds(report)


def test_rollback_is_reported_by_verify_log() -> None:
    """A checkpoint smaller than one seen before is a rollback, even if it is validly signed."""
    items = entries(10)
    report = verify_log(items[:6], signed(items[:6]), ORIGIN, PUBLIC, previous=checkpoint_of(items))
    expected = [ProblemKind.ROLLBACK]
    assert expected == kinds(report)


def test_problem_text_names_the_entry() -> None:
    """A problem prints its kind, its entry and its message."""
    expected = "entry-mismatch (entry 4): changed"
    actual = str(Problem(ProblemKind.ENTRY_MISMATCH, "changed", 4))
    assert expected == actual


@pytest.fixture(scope="module")
def stored_log(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, str, list[int]]:
    """A small log on disk, closed, with the checkpoint it signed and its record end offsets."""
    path = tmp_path_factory.mktemp("stored") / "log"
    with AuditLog.open(path) as log:
        for item in entries(12):
            log.append_sync(item)
        note = log.checkpoint(ORIGIN, ORIGIN, KEY)
    offsets = (path / "offsets").read_bytes()
    ends = [int.from_bytes(offsets[i : i + 8], "big") for i in range(0, len(offsets), 8)]
    return path, note, ends


def test_stored_log_audits_clean(stored_log: tuple[Path, str, list[int]]) -> None:
    """The untouched stored log passes its audit."""
    path, note, _ = stored_log
    with AuditLog.open(path) as log:
        assert log.audit(note, ORIGIN, PUBLIC).ok


def test_flipping_any_byte_of_any_stored_entry_is_named(
    stored_log: tuple[Path, str, list[int]], tmp_path: Path
) -> None:
    """Flip each byte of each record (header and payload) in turn: the audit fails and names that entry."""
    source, note, ends = stored_log
    path = tmp_path / "log"
    shutil.copytree(source, path)
    data = (path / "entries").read_bytes()
    start = len(b"SPALOG1\n")
    for index, end in enumerate(ends):
        for position in range(start, end):
            damaged = bytearray(data)
            damaged[position] ^= 0x40
            (path / "entries").write_bytes(bytes(damaged))
            with AuditLog.open(path) as log:
                report = log.audit(note, ORIGIN, PUBLIC)
            assert (False, index) == (report.ok, report.first_bad_index), f"byte {position}"
            expected = 12
            assert expected == report.entries
        start = end
    (path / "entries").write_bytes(data)
