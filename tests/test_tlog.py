"""The audit log on disk: appends, group commit, proofs, reopening, and recovery from crashes."""

from __future__ import annotations

import asyncio
import json
import os
import shutil
import threading
from collections.abc import Callable
from pathlib import Path

import pytest
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

from federation.tools import logbench
from trust import merkle, tlog
from trust.checkpoint import parse_checkpoint, verify_checkpoint
from trust.merkle import MemoryTree, TreeRangeError, leaf_hash, verify_consistency, verify_inclusion
from trust.tlog import (
    MAGIC,
    AuditLog,
    CorruptLogError,
    EntryError,
    LogClosedError,
    LogInUseError,
)

ORIGIN = "test.example/log"
KEY = Ed25519PrivateKey.generate()


def entry(i: int) -> bytes:
    return json.dumps({"query": f"q-{i}", "n": i}, separators=(",", ":")).encode()


def fill(path: Path, count: int, start: int = 0) -> AuditLog:
    log = AuditLog.open(path)
    log.append_many_sync([entry(i) for i in range(start, start + count)])
    return log


def record_ends(path: Path) -> list[int]:
    data = (path / "offsets").read_bytes()
    return [int.from_bytes(data[i : i + 8], "big") for i in range(0, len(data), 8)]


def test_append_and_read_back(tmp_path: Path) -> None:
    """Entries come back as written, dicts as canonical JSON, with consecutive indexes."""
    with AuditLog.open(tmp_path / "log") as log:
        first = log.append_sync(b"raw bytes")
        second = log.append_sync({"b": 1, "a": "é"})
        expected: tuple[object, ...] = (0, 1, [b"raw bytes", '{"a":"é","b":1}'.encode()], b"raw bytes", [], 2)
        actual = (first, second, log.entries(0, 2), log.entry(0), log.entries(1, 1), log.size)
        assert expected == actual


def test_empty_log(tmp_path: Path) -> None:
    """A new log has size 0 and the empty tree's root, and signs a size-0 checkpoint."""
    with AuditLog.open(tmp_path / "log") as log:
        expected = (0, merkle.EMPTY_ROOT)
        assert expected == (log.size, log.root())
        checkpoint = verify_checkpoint(log.checkpoint(ORIGIN, ORIGIN, KEY), ORIGIN, KEY.public_key())
        assert expected == (checkpoint.size, checkpoint.root)


@pytest.mark.parametrize(
    "bad",
    [
        "text",
        42,
        {"x": 1.5},
        {"x": float("nan")},
        b"x" * (tlog.MAX_ENTRY_BYTES + 1),
    ],
    ids=["str", "int", "float", "nan", "too large"],
)
def test_unloggable_entries_are_refused(tmp_path: Path, bad: object) -> None:
    """Entries that are not bytes or canonical JSON, or are too large, raise EntryError."""
    with AuditLog.open(tmp_path / "log") as log:
        with pytest.raises(EntryError):
            log.append_sync(bad)  # type: ignore[arg-type]
        expected = 0
        assert expected == log.size


def test_roots_and_proofs_match_an_in_memory_tree(tmp_path: Path) -> None:
    """Roots, inclusion and consistency proofs from disk equal the in-memory tree's at every size."""
    count = 70  # crosses the in-memory level (32 leaves) twice
    with fill(tmp_path / "log", count) as log:
        tree = MemoryTree(leaf_hash(entry(i)) for i in range(count))
        for size in range(count + 1):
            assert tree.root(size) == log.root(size)
        for size in range(1, count + 1):
            root = log.root(size)
            for index in range(size):
                proof = log.inclusion_proof(index, size)
                assert tree.inclusion_proof(index, size) == proof
                verify_inclusion(leaf_hash(entry(index)), index, size, proof, root)
            for size1 in range(1, size + 1):
                proof = log.consistency_proof(size1, size)
                assert tree.consistency_proof(size1, size) == proof
                verify_consistency(size1, size, proof, log.root(size1), root)
        assert [leaf_hash(entry(i)) for i in range(count)] == log.leaf_hashes(0, count)


def test_out_of_range_requests_are_refused(tmp_path: Path) -> None:
    """Indexes and sizes beyond the log raise TreeRangeError rather than inventing data."""
    with fill(tmp_path / "log", 5) as log:
        calls: list[Callable[[], object]] = [
            lambda: log.entry(5),
            lambda: log.entry(-1),
            lambda: log.entries(3, 6),
            lambda: log.entries(4, 3),
            lambda: log.root(6),
            lambda: log.inclusion_proof(5, 5),
            lambda: log.inclusion_proof(0, 6),
            lambda: log.consistency_proof(0, 5),
            lambda: log.consistency_proof(3, 6),
        ]
        for call in calls:
            with pytest.raises(TreeRangeError):
                call()


def test_reopen_keeps_everything(tmp_path: Path) -> None:
    """After closing and reopening, size, root, entries and the last checkpoint are unchanged."""
    path = tmp_path / "log"
    with fill(path, 100) as log:
        root = log.root()
        note = log.checkpoint(ORIGIN, ORIGIN, KEY)
    with AuditLog.open(path) as log:
        assert (100, root, note) == (log.size, log.root(), log.latest_checkpoint)
        assert [entry(i) for i in range(100)] == log.entries(0, 100)
        expected = 100
        assert expected == log.append_sync(entry(100))


def test_large_log_reopens_with_same_roots(tmp_path: Path) -> None:
    """Several batches and a few thousand entries: roots at many sizes survive a reopen."""
    path = tmp_path / "log"
    sizes = [1, 31, 32, 33, 1000, 4096, 4097, 9999]
    with fill(path, 9999) as log:
        roots = [log.root(size) for size in sizes]
    with AuditLog.open(path) as log:
        assert roots == [log.root(size) for size in sizes]
        assert merkle.tree_root(entry(i) for i in range(9999)) == log.root()
        assert [entry(i) for i in range(4090, 4100)] == log.entries(4090, 4100)


def test_second_open_is_refused(tmp_path: Path) -> None:
    """Two AuditLog objects never write the same files."""
    with AuditLog.open(tmp_path / "log"), pytest.raises(LogInUseError):
        AuditLog.open(tmp_path / "log")


def test_closed_log_refuses_use(tmp_path: Path) -> None:
    """A closed log raises LogClosedError for appends and reads."""
    log = fill(tmp_path / "log", 2)
    log.close()
    calls: list[Callable[[], object]] = [
        lambda: log.append_sync(b"x"),
        lambda: log.root(),
        lambda: log.entries(0, 1),
    ]
    for call in calls:
        with pytest.raises(LogClosedError):
            call()


def test_not_a_log_is_refused(tmp_path: Path) -> None:
    """A directory whose entries file has another format is not opened (nor overwritten)."""
    (tmp_path / "log").mkdir()
    (tmp_path / "log" / "entries").write_bytes(b"SQLite format 3\x00")
    with pytest.raises(CorruptLogError):
        AuditLog.open(tmp_path / "log")
    expected = b"SQLite format 3\x00"
    assert expected == (tmp_path / "log" / "entries").read_bytes()


@pytest.mark.asyncio
async def test_concurrent_appends_are_group_committed(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Many concurrent appenders get distinct indexes, and share far fewer syncs than appends."""
    syncs = []
    real_sync = tlog._datasync

    def counting_sync(fd: int) -> None:
        syncs.append(fd)
        real_sync(fd)

    monkeypatch.setattr(tlog, "_datasync", counting_sync)
    log = AuditLog.open(tmp_path / "log")
    syncs.clear()
    count = 2000
    indexes = await asyncio.gather(*(log.append({"n": i}) for i in range(count)))
    assert list(range(count)) == sorted(indexes)
    for n, index in enumerate(indexes):
        assert json.dumps({"n": n}).replace(" ", "").encode() == log.entry(index)
    assert len(syncs) <= count // 10, f"{len(syncs)} syncs for {count} appends"
    await log.aclose()


@pytest.mark.asyncio
async def test_async_and_sync_appends_mix(tmp_path: Path) -> None:
    """Appends from a thread (sync API) and from coroutines interleave without losing any."""
    log = AuditLog.open(tmp_path / "log")
    thread_indexes: list[int] = []

    def from_thread() -> None:
        for i in range(200):
            thread_indexes.append(log.append_sync({"thread": i}))

    worker = threading.Thread(target=from_thread)
    worker.start()
    async_indexes = await asyncio.gather(*(log.append({"task": i}) for i in range(500)))
    await asyncio.to_thread(worker.join)
    assert list(range(700)) == sorted(thread_indexes + list(async_indexes))
    assert merkle.tree_root(log.entries(0, 700)) == log.root()
    await log.aclose()


@pytest.mark.asyncio
async def test_append_returns_only_durable_indexes(tmp_path: Path) -> None:
    """When append returns, its entry is on disk: another process reopening would see it."""
    log = AuditLog.open(tmp_path / "log")
    index = await log.append({"n": 1})
    data = (tmp_path / "log" / "entries").read_bytes()
    assert data.endswith(b'{"n":1}')
    assert log.size == index + 1
    await log.aclose()


def copy_log(source: Path, target: Path) -> Path:
    if target.exists():
        shutil.rmtree(target)
    shutil.copytree(source, target)
    return target


@pytest.mark.parametrize("indexes_written", [True, False], ids=["indexed", "crash-before-index"])
def test_truncation_at_every_byte_of_the_last_records(tmp_path: Path, indexes_written: bool) -> None:
    """Cutting the entries file at any byte of its last records reopens to a verifiable prefix.

    Models a crash while the last batch was being written: every entry acknowledged before it
    survives, the torn record is cut, the log still verifies against the checkpoint signed
    before, and appending continues at the right index.
    """
    acknowledged, pending = 20, 4
    original = tmp_path / "original"
    with fill(original, acknowledged) as log:
        note = log.checkpoint(ORIGIN, ORIGIN, KEY)
        log.append_many_sync([entry(i) for i in range(acknowledged, acknowledged + pending)])
        roots = [log.root(size) for size in range(acknowledged + pending + 1)]
    ends = record_ends(original)
    boundary, total = ends[acknowledged - 1], ends[-1]
    assert total == (original / "entries").stat().st_size
    for cut in range(boundary, total + 1):
        path = copy_log(original, tmp_path / "cut")
        os.truncate(path / "entries", cut)
        if not indexes_written:  # the crash came before the indexes were written
            os.truncate(path / "leaves", acknowledged * 32)
            os.truncate(path / "offsets", acknowledged * 8)
        expected_size = sum(1 for end in ends if end <= cut)
        with AuditLog.open(path) as log:
            assert expected_size == log.size, f"cut at byte {cut}"
            assert roots[expected_size] == log.root()
            assert [entry(i) for i in range(expected_size)] == log.entries(0, expected_size)
            assert log.audit(note, ORIGIN, KEY.public_key()).ok
            if cut % 8 and cut != total:  # appending again is checked on a sample (it syncs)
                continue
            assert expected_size == log.append_sync(b"after the crash")
        with AuditLog.open(path) as log:
            assert expected_size + 1 == log.size


def test_garbage_after_the_last_record_is_cut(tmp_path: Path) -> None:
    """Zeros or random bytes after the last record (a torn write) are removed on open."""
    path = tmp_path / "log"
    fill(path, 10).close()
    size = (path / "entries").stat().st_size
    for tail in [b"\x00" * 100, b"\x00\x00\x00\x05abcd", b"\xff" * 3]:
        with open(path / "entries", "ab") as handle:
            handle.write(tail)
        with AuditLog.open(path) as log:
            expected = 10
            assert expected == log.size
        assert size == (path / "entries").stat().st_size


def test_header_torn_at_creation(tmp_path: Path) -> None:
    """A log whose header was only partly written before a crash opens as an empty log."""
    path = tmp_path / "log"
    AuditLog.open(path).close()
    os.truncate(path / "entries", 3)
    with AuditLog.open(path) as log:
        expected = 0
        assert expected == log.size
        log.append_sync(b"x")
    assert (path / "entries").read_bytes().startswith(MAGIC)


def test_missing_indexes_are_rebuilt(tmp_path: Path) -> None:
    """Deleting the leaves and offsets files loses nothing: they are rebuilt from the entries."""
    path = tmp_path / "log"
    with fill(path, 300) as log:
        root = log.root()
    (path / "leaves").unlink()
    (path / "offsets").unlink()
    with AuditLog.open(path) as log:
        assert (300, root) == (log.size, log.root())
        assert entry(299) == log.entry(299)


def test_damaged_index_is_repaired_from_the_entries(tmp_path: Path) -> None:
    """A flipped byte in the leaves or offsets index is repaired on open, not reported as tampering."""
    path = tmp_path / "log"
    with fill(path, 50) as log:
        root = log.root()
        note = log.checkpoint(ORIGIN, ORIGIN, KEY)
    for name, position in [("leaves", 32 * 7 + 3), ("offsets", 8 * 45 + 7), ("leaves", 32 * 49)]:
        damaged = copy_log(path, tmp_path / "damaged")
        data = bytearray((damaged / name).read_bytes())
        data[position] ^= 0x01
        (damaged / name).write_bytes(bytes(data))
        with AuditLog.open(damaged) as log:
            assert root == log.root(), name
            assert log.audit(note, ORIGIN, KEY.public_key()).ok, name


def test_damaged_acknowledged_record_is_never_cut(tmp_path: Path) -> None:
    """A damaged record that was acknowledged stays on disk (for the audit to name), even the last."""
    path = tmp_path / "log"
    fill(path, 10).close()
    ends = record_ends(path)
    data = bytearray((path / "entries").read_bytes())
    data[ends[-1] - 1] ^= 0x01
    (path / "entries").write_bytes(bytes(data))
    with AuditLog.open(path) as log:
        expected = 10
        assert expected == log.size
        with pytest.raises(CorruptLogError) as raised:
            log.entry(9)
        expected = 9
        assert expected == raised.value.index
    assert bytes(data) == (path / "entries").read_bytes()


def test_lost_indexes_and_damage_refuse_to_open(tmp_path: Path) -> None:
    """With the indexes gone, a damaged record deep in the log is reported, not cut away."""
    path = tmp_path / "log"
    damaged = tlog.MAX_BATCH + tlog.MAX_UNSYNCED_INDEX + 11  # more than a crash can leave unindexed
    fill(path, damaged + 100).close()
    ends = record_ends(path)
    data = bytearray((path / "entries").read_bytes())
    data[ends[damaged - 1] + 9] ^= 0x01  # a payload byte of record ``damaged``
    (path / "entries").write_bytes(bytes(data))
    (path / "leaves").unlink()
    (path / "offsets").unlink()
    with pytest.raises(CorruptLogError) as raised:
        AuditLog.open(path)
    assert damaged == raised.value.index
    assert bytes(data) == (path / "entries").read_bytes()


def test_log_shorter_than_its_signed_checkpoint_refuses_to_open(tmp_path: Path) -> None:
    """If entries the log signed for are gone, opening fails instead of signing a fork later."""
    path = tmp_path / "log"
    with fill(path, 10) as log:
        log.checkpoint(ORIGIN, ORIGIN, KEY)
    os.truncate(path / "entries", record_ends(path)[7])
    with pytest.raises(CorruptLogError):
        AuditLog.open(path)


def test_checkpoint_signs_the_current_tree(tmp_path: Path) -> None:
    """The checkpoint note carries the log's size and root and verifies with its key."""
    with fill(tmp_path / "log", 33) as log:
        note = log.checkpoint(ORIGIN, ORIGIN, KEY)
        checkpoint = verify_checkpoint(note, ORIGIN, KEY.public_key())
        assert (ORIGIN, 33, log.root()) == (checkpoint.origin, checkpoint.size, checkpoint.root)
        assert checkpoint == parse_checkpoint(log.latest_checkpoint or "")


def test_damaged_old_leaf_is_rebuilt_against_the_signed_checkpoint(tmp_path: Path) -> None:
    """A damaged leaf hash older than the last batch is found through the signed root and rebuilt."""
    path = tmp_path / "log"
    with fill(path, tlog.MAX_BATCH + 50) as log:
        root = log.root()
        note = log.checkpoint(ORIGIN, ORIGIN, KEY)
    data = bytearray((path / "leaves").read_bytes())
    data[32 * 3] ^= 0x01
    (path / "leaves").write_bytes(bytes(data))
    with AuditLog.open(path) as log:
        assert root == log.root()
        assert log.audit(note, ORIGIN, KEY.public_key()).ok


def test_benchmark_runs_and_reports(tmp_path: Path) -> None:
    """The benchmark runs end to end on a small log and reports every measurement."""
    lines: list[str] = []
    results = logbench.run(
        200, appends=400, appenders=20, proofs=20, directory=str(tmp_path), out=lines.append
    )
    expected = {
        "append_per_second",
        "append_p50_ms",
        "append_p99_ms",
        "load_per_second",
        "open_seconds",
        "verify_seconds",
        "inclusion_mean_ms",
        "inclusion_p99_ms",
        "inclusion_verify_mean_ms",
        "consistency_mean_ms",
        "consistency_p99_ms",
    }
    assert expected == set(results)
    left_behind: list[Path] = []
    assert (7, left_behind) == (len(lines), list(tmp_path.iterdir()))


def test_entries_submitted_from_a_thread_are_durable_before_they_are_reported_and_share_syncs(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """``submit`` reports each entry's index only after the sync that made it durable, and entries
    submitted while the writer is busy are written together (far fewer syncs than entries)."""
    log = AuditLog.open(tmp_path / "log")
    first_sync = threading.Event()
    release = threading.Event()
    synced: list[int] = []
    real_sync = tlog._datasync

    def slow_sync(fd: int) -> None:
        first_sync.set()
        release.wait(10)  # the writer is busy while the others are submitted
        real_sync(fd)
        synced.append(log._size)  # how many entries the log held when this sync finished

    monkeypatch.setattr(tlog, "_datasync", slow_sync)
    reported: dict[int, int | BaseException] = {}
    done = threading.Event()
    count = 50

    def report(n: int) -> Callable[[int | BaseException], None]:
        def tell(outcome: int | BaseException) -> None:
            assert synced, "reported before any sync finished"
            reported[n] = outcome
            if len(reported) == count:
                done.set()
        return tell

    log.submit({"n": 0}, report(0))
    assert first_sync.wait(10)
    for n in range(1, count):
        log.submit({"n": n}, report(n))
    release.set()
    assert done.wait(10)
    assert list(range(count)) == [reported[n] for n in range(count)]  # in order of submission
    assert [json.dumps({"n": n}).replace(" ", "").encode() for n in range(count)] == log.entries(0, count)
    assert len(synced) <= 3, f"{len(synced)} syncs for {count} entries"
    log.close()


def test_submit_reports_a_failed_write_and_refuses_on_a_closed_log(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """A write that fails is reported to every entry of its batch (and the log stops taking
    entries); a closed log refuses at once and reports nothing."""
    log = AuditLog.open(tmp_path / "log")

    def failing_sync(fd: int) -> None:
        raise OSError(5, "Input/output error")

    monkeypatch.setattr(tlog, "_datasync", failing_sync)
    outcome: list[int | BaseException] = []
    told = threading.Event()

    def tell(result: int | BaseException) -> None:
        outcome.append(result)
        told.set()

    log.submit({"n": 1}, tell)
    assert told.wait(10)
    assert isinstance(outcome[0], tlog.LogWriteError)
    with pytest.raises(tlog.LogWriteError):
        log.submit({"n": 2}, tell)
    log.close()
    with pytest.raises(LogClosedError):
        log.submit({"n": 3}, tell)
    assert 1 == len(outcome)


@pytest.mark.asyncio
async def test_aclose_waits_for_submitted_entries(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """Closing while a submitted entry is being written waits for it instead of failing."""
    log = AuditLog.open(tmp_path / "log")
    release = threading.Event()
    real_sync = tlog._datasync

    def slow_sync(fd: int) -> None:
        release.wait(10)
        real_sync(fd)

    monkeypatch.setattr(tlog, "_datasync", slow_sync)
    outcome: list[int | BaseException] = []
    log.submit({"n": 1}, outcome.append)
    with pytest.raises(tlog.LogError, match="in flight"):
        log.close()
    closing = asyncio.create_task(log.aclose())
    await asyncio.sleep(0.05)
    assert not closing.done()
    release.set()
    await asyncio.wait_for(closing, 10)
    assert [0] == outcome
