"""Crash-safe, append-only storage for one party's audit log, with group commit and proofs.

A log is a directory of four files::

    entries     b"SPALOG1\\n", then one record per entry:
                u32 big-endian payload length | first 4 bytes of the leaf hash | payload
    leaves      the 32-byte RFC 9162 leaf hash of each entry, in order
    offsets     the u64 big-endian end offset (in ``entries``) of each record, in order
    checkpoint  the last checkpoint this log signed (a C2SP signed note), if any

``entries`` is the log. ``leaves`` and ``offsets`` are indexes that are rebuilt from it when
missing or short. A batch of appends is written to ``entries`` and made durable (one
fdatasync), then added to the indexes, and only then acknowledged. The indexes are synced
before they would hold more than ``MAX_UNSYNCED_INDEX`` unsynced records, so their writes never
get ahead of ``entries`` and can lag it only by a bounded amount. At a crash only the last batch
can be half-written: on open, records that are incomplete or fail their check at the end of
``entries`` are cut, index entries past the end of ``entries`` are dropped, the last
``MAX_UNSYNCED_INDEX`` index entries are checked against their records, and complete records
the indexes do not know yet are indexed. Nothing that was acknowledged is lost, and a damaged
record that may have been acknowledged is never cut.

In memory the log keeps the right edge of the tree and every node at level ``MEMORY_LEVEL`` and
above (2 bytes per entry); lower nodes are hashed from at most ``2**MEMORY_LEVEL`` leaves read
from ``leaves``. So size, roots, inclusion and consistency proofs and range reads never read the
whole log. Opening reads ``leaves`` once (32 bytes per entry) to rebuild those nodes.

The log never signs a checkpoint that is inconsistent with the last one it signed, and refuses
to open when its entries no longer lead to that checkpoint's root.
"""

from __future__ import annotations

import asyncio
import fcntl
import hashlib
import os
import struct
import threading
from collections.abc import Iterator, Mapping, Sequence
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from types import TracebackType
from typing import Any

from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey, Ed25519PublicKey

from federation.canonical import canonical_json
from trust import merkle
from trust.checkpoint import Checkpoint, CheckpointError, parse_checkpoint, sign_checkpoint
from trust.logverify import LogReport, Problem, ProblemKind, verify_log
from trust.merkle import HASH_SIZE, LogError, TreeRangeError

__all__ = [
    "MAGIC",
    "MAX_BATCH",
    "MAX_ENTRY_BYTES",
    "MAX_UNSYNCED_INDEX",
    "MEMORY_LEVEL",
    "AuditLog",
    "CorruptLogError",
    "EntryError",
    "LogClosedError",
    "LogError",
    "LogInUseError",
    "LogWriteError",
    "canonical_entry",
]

MAGIC = b"SPALOG1\n"
"""First bytes of every ``entries`` file (format version 1)."""

MAX_ENTRY_BYTES = 16 * 1024 * 1024
"""Largest entry accepted, in bytes."""

MAX_BATCH = 4096
"""Most entries written (and fsynced) together."""

MAX_UNSYNCED_INDEX = 4096
"""Most index records written but not yet synced; also how far back ``open`` checks the indexes."""

MEMORY_LEVEL = 5
"""Lowest tree level whose nodes are kept in memory; lower ones are hashed from ``leaves``."""

_RECORD_HEADER = struct.Struct(">I4s")
_HEADER_SIZE = _RECORD_HEADER.size
_CHECK_SIZE = 4
_END_SIZE = 8
_READ_CHUNK = 4 * 1024 * 1024
_LEAF_CHUNK = 1 << 16
_ENTRIES, _LEAVES, _OFFSETS, _CHECKPOINT = "entries", "leaves", "offsets", "checkpoint"


class LogClosedError(LogError):
    """The log was used after ``close``."""


class LogInUseError(LogError):
    """Another process (or another ``AuditLog`` in this one) has the log open."""


class EntryError(LogError):
    """An entry cannot be logged: wrong type, not canonical JSON, or too large."""


class LogWriteError(LogError):
    """Writing or syncing failed; the appends in that batch were not acknowledged."""


class CorruptLogError(LogError):
    """Stored data is damaged or no longer matches what the log signed."""

    def __init__(self, message: str, index: int | None = None) -> None:
        super().__init__(message)
        self.index = index


_datasync = os.fdatasync if hasattr(os, "fdatasync") else os.fsync  # data and size, not mtime


def canonical_entry(entry: bytes | bytearray | memoryview | Mapping[str, Any]) -> bytes:
    """The bytes logged for ``entry``: bytes as given, a mapping as canonical JSON."""
    if isinstance(entry, bytes):
        data = entry
    elif isinstance(entry, bytearray | memoryview):
        data = bytes(entry)
    elif isinstance(entry, Mapping):
        try:
            data = canonical_json(dict(entry))
        except (TypeError, ValueError) as exc:
            raise EntryError(f"entry: expected JSON-serialisable values, {exc}") from exc
    else:
        raise EntryError(f"entry: expected bytes or a JSON object, got {type(entry).__name__}")
    if len(data) > MAX_ENTRY_BYTES:
        raise EntryError(f"entry: expected at most {MAX_ENTRY_BYTES} bytes, got {len(data)}")
    return data


def _pread(fd: int, size: int, offset: int) -> bytes:
    """Up to ``size`` bytes at ``offset`` (fewer only at end of file)."""
    parts: list[bytes] = []
    while size > 0:
        chunk = os.pread(fd, size, offset)
        if not chunk:
            break
        parts.append(chunk)
        size -= len(chunk)
        offset += len(chunk)
    return b"".join(parts)


def _pwrite(fd: int, data: bytes | bytearray, offset: int) -> None:
    view = memoryview(data)
    while view:
        written = os.pwrite(fd, view, offset)
        view = view[written:]
        offset += written


def _fsync_directory(path: Path) -> None:
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def _check_record(index: int, record: bytes) -> tuple[bytes, bytes, str | None]:
    """Split a stored record into (payload, leaf hash, damage description or None)."""
    if len(record) < _HEADER_SIZE:
        return (
            record,
            merkle.leaf_hash(record),
            (f"record {index}: {len(record)} bytes, shorter than its {_HEADER_SIZE}-byte header"),
        )
    length, check = _RECORD_HEADER.unpack_from(record)
    payload = record[_HEADER_SIZE:]
    leaf = merkle.leaf_hash(payload)
    if length != len(payload):
        return (
            payload,
            leaf,
            (f"record {index}: length field says {length} bytes, the record holds {len(payload)}"),
        )
    if leaf[:_CHECK_SIZE] != check:
        return (
            payload,
            leaf,
            (
                f"record {index}: check bytes {check.hex()} do not match the payload "
                f"(expected {leaf[:_CHECK_SIZE].hex()})"
            ),
        )
    return payload, leaf, None


class AuditLog:
    """One append-only Merkle log on disk. See the module docstring for the format.

    Appends from coroutines (``await log.append(entry)``) are batched: each batch is written
    and fsynced once, from a worker thread, and every append returns its index only after its
    batch is durable. ``append_sync`` does the same for one entry from ordinary code. Use one
    event loop per log. Reads, roots and proofs only see acknowledged entries.
    """

    def __init__(self, path: str | os.PathLike[str], *, max_batch: int = MAX_BATCH) -> None:
        if not 1 <= max_batch <= MAX_BATCH:
            raise ValueError(f"max_batch: expected 1..{MAX_BATCH}, got {max_batch}")
        self._path = Path(path)
        self._max_batch = max_batch
        self._write_lock = threading.Lock()
        self._state_lock = threading.Lock()
        self._pending: list[tuple[bytes, asyncio.Future[int]]] = []
        self._flusher: asyncio.Task[None] | None = None
        self._executor: ThreadPoolExecutor | None = None
        self._closed = False
        self._broken: str | None = None
        self._size = 0
        self._end = len(MAGIC)
        self._frontier: list[bytes] = []
        self._levels: list[bytearray] = []
        self._signed: Checkpoint | None = None
        self._signed_note: str | None = None
        self._fds: list[int] = []
        self._unsynced_index = 0

        created = not self._path.exists()
        self._path.mkdir(parents=True, exist_ok=True)
        try:
            self._entries_fd = self._open_file(_ENTRIES)
            try:
                fcntl.flock(self._entries_fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
            except BlockingIOError as exc:
                raise LogInUseError(f"audit log {self._path} is already open elsewhere") from exc
            self._leaves_fd = self._open_file(_LEAVES)
            self._offsets_fd = self._open_file(_OFFSETS)
            if created:
                _fsync_directory(self._path)
                _fsync_directory(self._path.parent)
            self._recover()
            self._load_signed()
        except BaseException:
            self._close_files()
            raise

    @classmethod
    def open(cls, path: str | os.PathLike[str], *, max_batch: int = MAX_BATCH) -> AuditLog:
        """Open the log in directory ``path``, creating it if needed and recovering from a crash."""
        return cls(path, max_batch=max_batch)

    def _open_file(self, name: str) -> int:
        fd = os.open(self._path / name, os.O_RDWR | os.O_CREAT, 0o600)
        self._fds.append(fd)
        return fd

    def _close_files(self) -> None:
        for fd in reversed(self._fds):
            os.close(fd)
        self._fds.clear()

    def __repr__(self) -> str:
        return f"AuditLog({str(self._path)!r}, size={self._size})"

    # ------------------------------------------------------------------ recovery

    def _recover(self, *, trust_indexes: bool = True) -> None:
        entries_size = self._check_magic()
        known = indexed = 0
        if trust_indexes:
            known = min(
                os.fstat(self._leaves_fd).st_size // HASH_SIZE,
                os.fstat(self._offsets_fd).st_size // _END_SIZE,
            )
            indexed = known = self._indexed_within(known, entries_size)
            known = self._check_index_tail(known, entries_size)
        end = self._record_end(known - 1) if known else len(MAGIC)
        leaves, ends, end = self._scan_records(end, entries_size)
        if end < entries_size:
            # Only the last batch can be unindexed after a crash, and it was never acknowledged:
            # its torn tail is cut. A damaged record that was indexed, or one found after more
            # than a batch of unindexed records (the indexes were lost), may have been
            # acknowledged, and it is not ours to cut.
            index = known + len(leaves)
            if not trust_indexes or index < indexed or len(leaves) > MAX_BATCH + MAX_UNSYNCED_INDEX:
                raise CorruptLogError(
                    f"{self._path / _ENTRIES}: record {index} at byte {end} is damaged and may "
                    f"have been acknowledged; restore the file, or cut it at byte {end} by hand",
                    index,
                )
            os.ftruncate(self._entries_fd, end)
            _datasync(self._entries_fd)
        for fd, width, data in [
            (self._leaves_fd, HASH_SIZE, b"".join(leaves)),
            (self._offsets_fd, _END_SIZE, b"".join(e.to_bytes(_END_SIZE, "big") for e in ends)),
        ]:
            if os.fstat(fd).st_size != known * width or data:
                os.ftruncate(fd, known * width)
                _pwrite(fd, data, known * width)
                _datasync(fd)
        self._end = end
        self._size = 0
        self._frontier = []
        self._levels = []
        total = known + len(leaves)
        for first in range(0, total, _LEAF_CHUNK):
            count = min(_LEAF_CHUNK, total - first)
            data = _pread(self._leaves_fd, count * HASH_SIZE, first * HASH_SIZE)
            if len(data) != count * HASH_SIZE:
                raise CorruptLogError(f"{self._path / _LEAVES}: shorter than it was just written")
            self._add_leaves([data[i : i + HASH_SIZE] for i in range(0, len(data), HASH_SIZE)])

    def _check_magic(self) -> int:
        size = os.fstat(self._entries_fd).st_size
        head = _pread(self._entries_fd, min(size, len(MAGIC)), 0)
        if head != MAGIC[: len(head)]:
            raise CorruptLogError(
                f"{self._path / _ENTRIES}: expected a Signpost audit log starting with "
                f"{MAGIC!r}, got {head!r}"
            )
        if size < len(MAGIC):  # created, but the header never reached the disk
            _pwrite(self._entries_fd, MAGIC, 0)
            _datasync(self._entries_fd)
            size = len(MAGIC)
        return size

    def _read_ends(self, first: int, count: int) -> tuple[int, ...]:
        data = _pread(self._offsets_fd, count * _END_SIZE, first * _END_SIZE)
        if len(data) != count * _END_SIZE:
            raise CorruptLogError(f"{self._path / _OFFSETS}: index is shorter than the log")
        return struct.unpack(f">{count}Q", data)

    def _record_end(self, index: int) -> int:
        return self._read_ends(index, 1)[0]

    def _record_start(self, index: int) -> int:
        return self._record_end(index - 1) if index else len(MAGIC)

    def _indexed_within(self, known: int, entries_size: int) -> int:
        """How many indexed records end within ``entries`` (the rest were cut off)."""
        low, high = 0, known
        while low < high:
            middle = (low + high + 1) // 2
            if self._record_end(middle - 1) <= entries_size:
                low = middle
            else:
                high = middle - 1
        return low

    def _check_index_tail(self, known: int, entries_size: int) -> int:
        """Check the index entries that may not have been synced before a crash.

        Returns how many index entries to keep: index entries that disagree with intact records
        are dropped (and rebuilt by the caller); a leaf hash that disagrees with its intact
        record is rewritten. A damaged record is left alone for reads and audits to report.
        """
        first = max(0, known - MAX_UNSYNCED_INDEX)
        if first == known:
            return known
        start = self._record_start(first)
        ends = self._read_ends(first, known - first)
        stored = _pread(self._leaves_fd, (known - first) * HASH_SIZE, first * HASH_SIZE)
        repaired = False
        for offset, end in enumerate(ends):
            index = first + offset
            if end - start < _HEADER_SIZE or end > entries_size:
                return index
            _, leaf, damage = _check_record(index, _pread(self._entries_fd, end - start, start))
            if damage is not None:
                own_leaves, _, _ = self._scan_records(start, entries_size, limit=1)
                if own_leaves:  # the record is intact by its own header: the index is wrong
                    return index
            elif leaf != stored[offset * HASH_SIZE : (offset + 1) * HASH_SIZE]:
                _pwrite(self._leaves_fd, leaf, index * HASH_SIZE)
                repaired = True
            start = end
        if repaired:
            _datasync(self._leaves_fd)
        return known

    def _scan_records(
        self, position: int, entries_size: int, *, limit: int | None = None
    ) -> tuple[list[bytes], list[int], int]:
        """Complete, intact records from ``position`` on: their leaf hashes, ends, and where they stop."""
        leaves: list[bytes] = []
        ends: list[int] = []
        chunk = _READ_CHUNK if limit is None else _HEADER_SIZE
        buffer, buffer_at = b"", position
        while entries_size - position >= _HEADER_SIZE and (limit is None or len(leaves) < limit):
            if position + _HEADER_SIZE > buffer_at + len(buffer):
                buffer, buffer_at = _pread(self._entries_fd, chunk, position), position
            length, check = _RECORD_HEADER.unpack_from(buffer, position - buffer_at)
            end = position + _HEADER_SIZE + length
            if length > MAX_ENTRY_BYTES or end > entries_size:
                break
            if end > buffer_at + len(buffer):
                buffer = _pread(self._entries_fd, max(chunk, end - position), position)
                buffer_at = position
            payload = buffer[position - buffer_at + _HEADER_SIZE : end - buffer_at]
            leaf = merkle.leaf_hash(payload)
            if leaf[:_CHECK_SIZE] != check:
                break
            leaves.append(leaf)
            ends.append(end)
            position = end
        return leaves, ends, position

    def _load_signed(self) -> None:
        path = self._path / _CHECKPOINT
        if not path.exists():
            return
        note = path.read_text(encoding="utf-8")
        try:
            signed = parse_checkpoint(note)
        except CheckpointError as exc:
            raise CorruptLogError(f"{path}: last signed checkpoint is unreadable: {exc}") from exc
        if self._matches(signed):
            self._signed, self._signed_note = signed, note
            return
        # The indexes may be damaged: rebuild them from the records and look again.
        self._recover(trust_indexes=False)
        if not self._matches(signed):
            raise CorruptLogError(
                f"{self._path}: the log holds {self._size} entries whose tree does not match "
                f"the checkpoint it signed at size {signed.size} (root {signed.root.hex()})"
            )
        self._signed, self._signed_note = signed, note

    def _matches(self, checkpoint: Checkpoint) -> bool:
        return checkpoint.size <= self._size and self.root(checkpoint.size) == checkpoint.root

    # ------------------------------------------------------------------ the tree

    def _add_leaves(self, leaves: Sequence[bytes]) -> None:
        """Extend the in-memory tree (call with ``_state_lock`` held, or before sharing)."""
        stack, levels, size = self._frontier, self._levels, self._size
        sha256 = hashlib.sha256
        for leaf in leaves:
            node, height, bits = leaf, 0, size
            while bits & 1:
                node = sha256(b"\x01" + stack.pop() + node).digest()
                height += 1
                bits >>= 1
                if height >= MEMORY_LEVEL:
                    slot = height - MEMORY_LEVEL
                    if slot == len(levels):
                        levels.append(bytearray())
                    levels[slot] += node
            stack.append(node)
            size += 1
        self._size = size

    def _node(self, level: int, index: int) -> bytes:
        """Hash of the complete subtree at ``(level, index)``; it must lie within the log."""
        if level >= MEMORY_LEVEL:
            slot = level - MEMORY_LEVEL
            if slot < len(self._levels):
                node = bytes(self._levels[slot][index * HASH_SIZE : (index + 1) * HASH_SIZE])
                if len(node) == HASH_SIZE:
                    return node
            raise TreeRangeError(f"no complete subtree at level {level}, index {index}")
        count = 1 << level
        data = _pread(self._leaves_fd, count * HASH_SIZE, (index << level) * HASH_SIZE)
        if len(data) != count * HASH_SIZE:
            raise TreeRangeError(f"no complete subtree at level {level}, index {index}")
        nodes = [data[i : i + HASH_SIZE] for i in range(0, len(data), HASH_SIZE)]
        while len(nodes) > 1:
            nodes = [merkle.node_hash(nodes[i], nodes[i + 1]) for i in range(0, len(nodes), 2)]
        return nodes[0]

    def _snapshot(self) -> tuple[int, list[bytes]]:
        with self._state_lock:
            return self._size, list(self._frontier)

    def _check_size(self, size: int | None, what: str = "tree size") -> int:
        current = self._size
        if size is None:
            return current
        if isinstance(size, bool) or not isinstance(size, int) or not 0 <= size <= current:
            raise TreeRangeError(f"{what}: expected 0..{current}, got {size!r}")
        return size

    # ------------------------------------------------------------------ reading

    @property
    def path(self) -> Path:
        """The log's directory."""
        return self._path

    @property
    def size(self) -> int:
        """Number of acknowledged entries."""
        return self._size

    def root(self, size: int | None = None) -> bytes:
        """Root hash of the first ``size`` entries (all acknowledged entries by default)."""
        self._check_open()
        current, frontier = self._snapshot()
        if size is None or size == current:
            if not frontier:
                return merkle.EMPTY_ROOT
            result = frontier[-1]
            for left in reversed(frontier[:-1]):
                result = merkle.node_hash(left, result)
            return result
        return merkle.tree_root_at(self._node, self._check_size(size))

    def inclusion_proof(self, index: int, size: int | None = None) -> list[bytes]:
        """RFC 9162 inclusion proof of entry ``index`` in the tree of the first ``size`` entries."""
        self._check_open()
        return merkle.inclusion_proof(index, self._check_size(size), self._node)

    def consistency_proof(self, size1: int, size2: int | None = None) -> list[bytes]:
        """RFC 9162 consistency proof from the first ``size1`` entries to the first ``size2``."""
        self._check_open()
        return merkle.consistency_proof(size1, self._check_size(size2, "size2"), self._node)

    def leaf_hashes(self, start: int, end: int) -> list[bytes]:
        """The stored leaf hashes of entries ``[start, end)``."""
        self._check_open()
        self._check_range(start, end)
        data = _pread(self._leaves_fd, (end - start) * HASH_SIZE, start * HASH_SIZE)
        return [data[i : i + HASH_SIZE] for i in range(0, len(data), HASH_SIZE)]

    def entry(self, index: int) -> bytes:
        """Entry ``index``; raises ``CorruptLogError`` naming it if its record is damaged."""
        if isinstance(index, bool) or not isinstance(index, int) or not 0 <= index < self._size:
            raise TreeRangeError(f"entry index: expected 0 <= index < {self._size}, got {index!r}")
        return self.entries(index, index + 1)[0]

    def entries(self, start: int, end: int) -> list[bytes]:
        """Entries ``[start, end)``, each checked against its record's check bytes."""
        result: list[bytes] = []
        for index, payload, _, damage in self._records(start, end):
            if damage is not None:
                raise CorruptLogError(f"{self._path / _ENTRIES}: {damage}", index)
            result.append(payload)
        return result

    def iter_entries(self, start: int = 0, end: int | None = None) -> Iterator[bytes]:
        """Entries ``[start, end)`` read a chunk at a time (for long ranges)."""
        end = self._size if end is None else end
        self._check_range(start, end)
        for first in range(start, end, MAX_BATCH):
            yield from self.entries(first, min(end, first + MAX_BATCH))

    def _check_range(self, start: int, end: int) -> None:
        size = self._size
        valid = all(isinstance(v, int) and not isinstance(v, bool) for v in (start, end))
        if not valid or not 0 <= start <= end <= size:
            raise TreeRangeError(f"entry range: expected 0 <= start <= end <= {size}, got [{start}, {end})")

    def _records(self, start: int, end: int) -> Iterator[tuple[int, bytes, bytes, str | None]]:
        """(index, payload, leaf hash, damage) for entries ``[start, end)``, never raising on damage."""
        self._check_open()
        self._check_range(start, end)
        for first in range(start, end, MAX_BATCH):
            last = min(end, first + MAX_BATCH)
            ends = self._read_ends(first, last - first)
            begin = self._record_start(first)
            data = _pread(self._entries_fd, ends[-1] - begin, begin)
            if len(data) != ends[-1] - begin:
                raise CorruptLogError(f"{self._path / _ENTRIES}: shorter than its index", first)
            position = begin
            for offset, record_end in enumerate(ends):
                record = data[position - begin : record_end - begin]
                payload, leaf, damage = _check_record(first + offset, record)
                yield first + offset, payload, leaf, damage
                position = record_end

    # ------------------------------------------------------------------ writing

    def _check_open(self) -> None:
        if self._closed:
            raise LogClosedError(f"audit log {self._path} is closed")

    def _check_writable(self) -> None:
        self._check_open()
        if self._broken is not None:
            raise LogWriteError(
                f"audit log {self._path} stopped accepting entries after a failed write "
                f"({self._broken}); reopen it to recover"
            )

    def _write_batch(self, payloads: Sequence[bytes]) -> int:
        """Write, sync and index ``payloads``; return the index of the first."""
        with self._write_lock:
            self._check_writable()
            first, begin = self._size, self._end
            records = bytearray()
            ends = bytearray()
            leaves: list[bytes] = []
            position = begin
            sha256 = hashlib.sha256
            pack = _RECORD_HEADER.pack
            for payload in payloads:
                leaf = sha256(b"\x00" + payload).digest()
                records += pack(len(payload), leaf[:_CHECK_SIZE])
                records += payload
                position += _HEADER_SIZE + len(payload)
                ends += position.to_bytes(8, "big")
                leaves.append(leaf)
            try:
                _pwrite(self._entries_fd, records, begin)
                _datasync(self._entries_fd)
                if self._unsynced_index + len(payloads) > MAX_UNSYNCED_INDEX:
                    self._sync_index()
                _pwrite(self._leaves_fd, b"".join(leaves), first * HASH_SIZE)
                _pwrite(self._offsets_fd, ends, first * _END_SIZE)
                self._unsynced_index += len(payloads)
            except OSError as exc:
                self._broken = f"{type(exc).__name__}: {exc}"
                raise LogWriteError(
                    f"audit log {self._path}: could not write {len(payloads)} entries: {exc}"
                ) from exc
            with self._state_lock:
                self._add_leaves(leaves)
                self._end = position
            return first

    def _sync_index(self) -> None:
        _datasync(self._leaves_fd)
        _datasync(self._offsets_fd)
        self._unsynced_index = 0

    def append_sync(self, entry: bytes | Mapping[str, Any]) -> int:
        """Append one entry, wait until it is durable, and return its index (blocks)."""
        return self._write_batch([canonical_entry(entry)])

    def append_many_sync(self, entries: Sequence[bytes | Mapping[str, Any]]) -> range:
        """Append entries in durable batches (blocks); return their indexes."""
        payloads = [canonical_entry(entry) for entry in entries]
        first = self._size
        for chunk in range(0, len(payloads), self._max_batch):
            written = self._write_batch(payloads[chunk : chunk + self._max_batch])
            if chunk == 0:
                first = written
        return range(first, first + len(payloads))

    async def append(self, entry: bytes | Mapping[str, Any]) -> int:
        """Append one entry and return its index once it is durable.

        Concurrent calls are written together, one write and one fsync per batch. If the caller
        is cancelled the entry may still be logged.
        """
        payload = canonical_entry(entry)
        self._check_writable()
        loop = asyncio.get_running_loop()
        future: asyncio.Future[int] = loop.create_future()
        self._pending.append((payload, future))
        if self._flusher is None or self._flusher.done():
            self._flusher = loop.create_task(self._flush())
        return await future

    async def _flush(self) -> None:
        loop = asyncio.get_running_loop()
        if self._executor is None:
            self._executor = ThreadPoolExecutor(max_workers=1, thread_name_prefix="audit-log")
        while self._pending:
            batch = self._pending[: self._max_batch]
            del self._pending[: len(batch)]
            try:
                first = await loop.run_in_executor(
                    self._executor, self._write_batch, [payload for payload, _ in batch]
                )
            except asyncio.CancelledError:
                for _, future in batch + self._pending:
                    if not future.done():
                        future.set_exception(LogWriteError("append interrupted: log writer stopped"))
                self._pending.clear()
                raise
            except Exception as exc:  # every failure goes back to the appenders
                for _, future in batch:
                    if not future.done():
                        error = exc if isinstance(exc, LogError) else LogWriteError(str(exc))
                        future.set_exception(error)
                continue
            for offset, (_, future) in enumerate(batch):
                if not future.done():
                    future.set_result(first + offset)

    # ------------------------------------------------------------------ checkpoints

    def checkpoint(self, origin: str, key_name: str, private_key: Ed25519PrivateKey) -> str:
        """Sign the current size and root as a C2SP checkpoint note, and remember it."""
        self._check_open()
        with self._write_lock:  # no appends between reading the tree and signing it
            size = self._size
            current = Checkpoint(origin=origin, size=size, root=self.root(size))
            last = self._signed
            if last is not None and not self._matches(last):
                raise CorruptLogError(
                    f"{self._path}: refusing to sign size {size}: the tree no longer matches the "
                    f"checkpoint signed at size {last.size}"
                )
            note = sign_checkpoint(current, key_name, private_key)
            if last is None or (last.size, last.root) != (current.size, current.root):
                temporary = self._path / f"{_CHECKPOINT}.tmp"
                descriptor = os.open(temporary, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
                with open(descriptor, "w", encoding="utf-8") as handle:
                    handle.write(note)
                    handle.flush()
                    os.fsync(handle.fileno())
                os.replace(temporary, self._path / _CHECKPOINT)
                _fsync_directory(self._path)
            self._signed, self._signed_note = current, note
            return note

    @property
    def latest_checkpoint(self) -> str | None:
        """The last checkpoint note this log signed (kept across restarts), if any."""
        return self._signed_note

    def audit(
        self,
        note: str,
        key_name: str,
        public_key: Ed25519PublicKey,
        *,
        previous: Checkpoint | None = None,
    ) -> LogReport:
        """Verify the stored log against a signed checkpoint, naming every damaged entry.

        Reads every entry up to the checkpoint's size: each record is checked on its own (its
        length and check bytes) and against the stored leaf hash, and the whole against the
        checkpoint (see ``trust.logverify.verify_log``).
        """
        self._check_open()
        try:
            count = min(parse_checkpoint(note).size, self._size)
        except CheckpointError:
            count = self._size
        storage: list[Problem] = []
        stored = self._stored_leaves(count)

        def payloads() -> Iterator[bytes]:
            for index, payload, _, damage in self._records(0, count):
                if damage is not None:
                    storage.append(Problem(ProblemKind.DAMAGED_RECORD, damage, index))
                yield payload

        report = verify_log(payloads(), note, key_name, public_key, previous=previous, leaf_hashes=stored)
        return report.with_problems(storage)

    def _stored_leaves(self, count: int) -> Iterator[bytes]:
        for first in range(0, count, _LEAF_CHUNK):
            yield from self.leaf_hashes(first, min(count, first + _LEAF_CHUNK))

    # ------------------------------------------------------------------ closing

    def close(self) -> None:
        """Close the files. Appends still in flight must be awaited first (see ``aclose``)."""
        if self._closed:
            return
        if self._pending or (self._flusher is not None and not self._flusher.done()):
            raise LogError(f"audit log {self._path}: appends in flight; use 'await log.aclose()'")
        with self._write_lock:
            self._closed = True
            if self._executor is not None:
                self._executor.shutdown(wait=True)
            try:
                if self._unsynced_index and self._broken is None:
                    self._sync_index()
            finally:
                self._close_files()

    async def aclose(self) -> None:
        """Wait for appends in flight, then close."""
        while self._flusher is not None and not self._flusher.done():
            await asyncio.shield(self._flusher)
        self.close()

    def __enter__(self) -> AuditLog:
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        traceback: TracebackType | None,
    ) -> None:
        self.close()

    async def __aenter__(self) -> AuditLog:
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        traceback: TracebackType | None,
    ) -> None:
        await self.aclose()
