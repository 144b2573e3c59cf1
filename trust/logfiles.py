"""The files of one audit log on disk: their format, reading them, and their repair after a crash.

A log is a directory of four files::

    entries     b"SPALOG1\\n", then one record per entry:
                u32 big-endian payload length | first 4 bytes of the leaf hash | payload
    leaves      the 32-byte RFC 9162 leaf hash of each entry, in order
    offsets     the u64 big-endian end offset (in ``entries``) of each record, in order
    checkpoint  the last checkpoint this log signed (a C2SP signed note), if any

``entries`` is the log. ``leaves`` and ``offsets`` are indexes that are rebuilt from it when
missing or short. ``trust.tlog`` writes a batch of records to ``entries`` and makes it durable
(one fdatasync) before adding it to the indexes, and syncs the indexes before they would hold more
than ``MAX_UNSYNCED_INDEX`` unsynced records, so their writes never get ahead of ``entries`` and
can lag it only by a bounded amount. At a crash only the last batch can be half-written: on open
(``LogFiles.recover``), records that are incomplete or fail their check at the end of ``entries``
are cut, index entries past the end of ``entries`` are dropped, the last ``MAX_UNSYNCED_INDEX``
index entries are checked against their records, and complete records the indexes do not know yet
are indexed. Nothing that was acknowledged is lost, and a damaged record that may have been
acknowledged is never cut.
"""

from __future__ import annotations

import fcntl
import hashlib
import os
import struct
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path

from federation.files import fsync_directory
from trust import merkle
from trust.merkle import HASH_SIZE, LogError

MAGIC = b"SPALOG1\n"
"""First bytes of every ``entries`` file (format version 1)."""

MAX_ENTRY_BYTES = 16 * 1024 * 1024
"""Largest entry accepted, in bytes."""

MAX_BATCH = 4096
"""Most entries written (and fsynced) together."""

MAX_UNSYNCED_INDEX = 4096
"""Most index records written but not yet synced; also how far back ``open`` checks the indexes."""

_RECORD_HEADER = struct.Struct(">I4s")
_HEADER_SIZE = _RECORD_HEADER.size
_CHECK_SIZE = 4
END_SIZE = 8
"""Bytes per record in ``offsets``."""
_READ_CHUNK = 4 * 1024 * 1024
LEAF_CHUNK = 1 << 16
"""Leaf hashes read at a time when the whole ``leaves`` file is walked."""
ENTRIES, LEAVES, OFFSETS, CHECKPOINT = "entries", "leaves", "offsets", "checkpoint"


class LogInUseError(LogError):
    """Another process (or another ``AuditLog`` in this one) has the log open."""


class CorruptLogError(LogError):
    """Stored data is damaged or no longer matches what the log signed."""

    def __init__(self, message: str, index: int | None = None) -> None:
        super().__init__(message)
        self.index = index


datasync = os.fdatasync if hasattr(os, "fdatasync") else os.fsync  # data and size, not mtime


def pread(fd: int, size: int, offset: int) -> bytes:
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


def pwrite(fd: int, data: bytes | bytearray, offset: int) -> None:
    view = memoryview(data)
    while view:
        written = os.pwrite(fd, view, offset)
        view = view[written:]
        offset += written




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


def frame_records(payloads: Sequence[bytes], begin: int) -> tuple[bytearray, bytearray, list[bytes], int]:
    """The records of ``payloads`` written at offset ``begin`` of ``entries``: (their bytes, their
    ends as ``offsets`` bytes, their leaf hashes, the offset after the last)."""
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
    return records, ends, leaves, position


class LogFiles:
    """The ``entries``, ``leaves`` and ``offsets`` files of one log directory, open and locked.

    Creates the directory and files if needed; raises ``LogInUseError`` if another ``LogFiles``
    (in any process) has them open. ``recover`` must run before anything is read or written.
    """

    def __init__(self, path: Path) -> None:
        self.path = path
        self._fds: list[int] = []
        created = not path.exists()
        path.mkdir(parents=True, exist_ok=True)
        try:
            self.entries_fd = self._open_file(ENTRIES)
            try:
                fcntl.flock(self.entries_fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
            except BlockingIOError as exc:
                raise LogInUseError(f"audit log {path} is already open elsewhere") from exc
            self.leaves_fd = self._open_file(LEAVES)
            self.offsets_fd = self._open_file(OFFSETS)
            if created:
                fsync_directory(path)
                fsync_directory(path.parent)
        except BaseException:
            self.close()
            raise

    def _open_file(self, name: str) -> int:
        fd = os.open(self.path / name, os.O_RDWR | os.O_CREAT, 0o600)
        self._fds.append(fd)
        return fd

    def close(self) -> None:
        for fd in reversed(self._fds):
            os.close(fd)
        self._fds.clear()

    # ------------------------------------------------------------------ repair at open

    def recover(self, *, trust_indexes: bool = True) -> tuple[int, int]:
        """Cut a torn tail off ``entries`` and bring the indexes in line with it.

        Returns how many records the log holds and where the last one ends. With
        ``trust_indexes=False`` the indexes are rebuilt from the records alone.
        """
        entries_size = self._check_magic()
        known = indexed = 0
        if trust_indexes:
            known = min(
                os.fstat(self.leaves_fd).st_size // HASH_SIZE,
                os.fstat(self.offsets_fd).st_size // END_SIZE,
            )
            indexed = known = self._indexed_within(known, entries_size)
            known = self._check_index_tail(known, entries_size)
        end = self.record_end(known - 1) if known else len(MAGIC)
        leaves, ends, end = self._scan_records(end, entries_size)
        if end < entries_size:
            # Only the last batch can be unindexed after a crash, and it was never acknowledged:
            # its torn tail is cut. A damaged record that was indexed, or one found after more
            # than a batch of unindexed records (the indexes were lost), may have been
            # acknowledged, and it is not ours to cut.
            index = known + len(leaves)
            if not trust_indexes or index < indexed or len(leaves) > MAX_BATCH + MAX_UNSYNCED_INDEX:
                raise CorruptLogError(
                    f"{self.path / ENTRIES}: record {index} at byte {end} is damaged and may "
                    f"have been acknowledged; restore the file, or cut it at byte {end} by hand",
                    index,
                )
            os.ftruncate(self.entries_fd, end)
            datasync(self.entries_fd)
        for fd, width, data in [
            (self.leaves_fd, HASH_SIZE, b"".join(leaves)),
            (self.offsets_fd, END_SIZE, b"".join(e.to_bytes(END_SIZE, "big") for e in ends)),
        ]:
            if os.fstat(fd).st_size != known * width or data:
                os.ftruncate(fd, known * width)
                pwrite(fd, data, known * width)
                datasync(fd)
        return known + len(leaves), end

    def leaf_chunks(self, count: int) -> Iterator[list[bytes]]:
        """The first ``count`` leaf hashes, ``LEAF_CHUNK`` at a time (to rebuild the tree)."""
        for first in range(0, count, LEAF_CHUNK):
            size = min(LEAF_CHUNK, count - first)
            data = pread(self.leaves_fd, size * HASH_SIZE, first * HASH_SIZE)
            if len(data) != size * HASH_SIZE:
                raise CorruptLogError(f"{self.path / LEAVES}: shorter than it was just written")
            yield [data[i : i + HASH_SIZE] for i in range(0, len(data), HASH_SIZE)]

    def _check_magic(self) -> int:
        size = os.fstat(self.entries_fd).st_size
        head = pread(self.entries_fd, min(size, len(MAGIC)), 0)
        if head != MAGIC[: len(head)]:
            raise CorruptLogError(
                f"{self.path / ENTRIES}: expected a Signpost audit log starting with "
                f"{MAGIC!r}, got {head!r}"
            )
        if size < len(MAGIC):  # created, but the header never reached the disk
            pwrite(self.entries_fd, MAGIC, 0)
            datasync(self.entries_fd)
            size = len(MAGIC)
        return size

    def read_ends(self, first: int, count: int) -> tuple[int, ...]:
        data = pread(self.offsets_fd, count * END_SIZE, first * END_SIZE)
        if len(data) != count * END_SIZE:
            raise CorruptLogError(f"{self.path / OFFSETS}: index is shorter than the log")
        return struct.unpack(f">{count}Q", data)

    def record_end(self, index: int) -> int:
        return self.read_ends(index, 1)[0]

    def record_start(self, index: int) -> int:
        return self.record_end(index - 1) if index else len(MAGIC)

    def _indexed_within(self, known: int, entries_size: int) -> int:
        """How many indexed records end within ``entries`` (the rest were cut off)."""
        low, high = 0, known
        while low < high:
            middle = (low + high + 1) // 2
            if self.record_end(middle - 1) <= entries_size:
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
        start = self.record_start(first)
        ends = self.read_ends(first, known - first)
        stored = pread(self.leaves_fd, (known - first) * HASH_SIZE, first * HASH_SIZE)
        repaired = False
        for offset, end in enumerate(ends):
            index = first + offset
            if end - start < _HEADER_SIZE or end > entries_size:
                return index
            _, leaf, damage = _check_record(index, pread(self.entries_fd, end - start, start))
            if damage is not None:
                own_leaves, _, _ = self._scan_records(start, entries_size, limit=1)
                if own_leaves:  # the record is intact by its own header: the index is wrong
                    return index
            elif leaf != stored[offset * HASH_SIZE : (offset + 1) * HASH_SIZE]:
                pwrite(self.leaves_fd, leaf, index * HASH_SIZE)
                repaired = True
            start = end
        if repaired:
            datasync(self.leaves_fd)
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
                buffer, buffer_at = pread(self.entries_fd, chunk, position), position
            length, check = _RECORD_HEADER.unpack_from(buffer, position - buffer_at)
            end = position + _HEADER_SIZE + length
            if length > MAX_ENTRY_BYTES or end > entries_size:
                break
            if end > buffer_at + len(buffer):
                buffer = pread(self.entries_fd, max(chunk, end - position), position)
                buffer_at = position
            payload = buffer[position - buffer_at + _HEADER_SIZE : end - buffer_at]
            leaf = merkle.leaf_hash(payload)
            if leaf[:_CHECK_SIZE] != check:
                break
            leaves.append(leaf)
            ends.append(end)
            position = end
        return leaves, ends, position

    # ------------------------------------------------------------------ reading

    def records(self, start: int, end: int) -> Iterator[tuple[int, bytes, bytes, str | None]]:
        """(index, payload, leaf hash, damage) for indexed records ``[start, end)``, read
        ``MAX_BATCH`` at a time, never raising on damage."""
        for first in range(start, end, MAX_BATCH):
            last = min(end, first + MAX_BATCH)
            ends = self.read_ends(first, last - first)
            begin = self.record_start(first)
            data = pread(self.entries_fd, ends[-1] - begin, begin)
            if len(data) != ends[-1] - begin:
                raise CorruptLogError(f"{self.path / ENTRIES}: shorter than its index", first)
            position = begin
            for offset, record_end in enumerate(ends):
                record = data[position - begin : record_end - begin]
                payload, leaf, damage = _check_record(first + offset, record)
                yield first + offset, payload, leaf, damage
                position = record_end


# --- evidence: reading a log folder without changing it -------------------------------------


@dataclass(frozen=True)
class Evidence:
    """A log folder exactly as found. Nothing here repairs: an auditor's copy stays byte for byte.

    ``records`` are (payload, damage or None) for every record its own framing delimits;
    ``torn_tail`` describes bytes after the last whole record (a write cut short), if any;
    ``leaves`` is the stored leaf index, ``note`` the stored checkpoint (None if absent).
    """

    records: tuple[tuple[bytes, str | None], ...]
    torn_tail: str | None
    leaves: tuple[bytes, ...]
    note: str | None


def read_evidence(path: Path) -> Evidence:
    """Read the log folder ``path`` read-only (opened ``O_RDONLY``, shared lock, no writes).

    Raises ``LogInUseError`` while a service holds the log, ``CorruptLogError`` when ``entries``
    is not a Signpost log, ``OSError`` when a file cannot be read.
    """
    fd = os.open(path / ENTRIES, os.O_RDONLY)
    try:
        try:
            fcntl.flock(fd, fcntl.LOCK_SH | fcntl.LOCK_NB)
        except BlockingIOError as exc:
            raise LogInUseError(f"audit log {path} is open in a running service") from exc
        size = os.fstat(fd).st_size
        data = pread(fd, size, 0)
    finally:
        os.close(fd)
    if data[: len(MAGIC)] != MAGIC:
        raise CorruptLogError(f"{path / ENTRIES}: expected a Signpost audit log starting with {MAGIC!r}")
    records: list[tuple[bytes, str | None]] = []
    torn: str | None = None
    position = len(MAGIC)
    while position < len(data):
        index = len(records)
        if len(data) - position < _HEADER_SIZE:
            torn = (f"{len(data) - position} byte(s) at byte {position} (after entry {index - 1}) are "
                    "not a whole record header: a write was cut short")
            break
        length, _ = _RECORD_HEADER.unpack_from(data, position)
        end = position + _HEADER_SIZE + length
        if length > MAX_ENTRY_BYTES or end > len(data):
            torn = (f"record {index} at byte {position} says {length} bytes, the file holds "
                    f"{len(data) - position - _HEADER_SIZE}: a write was cut short")
            break
        payload, _, damage = _check_record(index, data[position:end])
        records.append((payload, damage))
        position = end
    leaves_path, note_path = path / LEAVES, path / CHECKPOINT
    stored = leaves_path.read_bytes() if leaves_path.exists() else b""
    whole = len(stored) - len(stored) % HASH_SIZE
    leaves = tuple(stored[i : i + HASH_SIZE] for i in range(0, whole, HASH_SIZE))
    note = note_path.read_text(encoding="utf-8", errors="replace") if note_path.exists() else None
    return Evidence(tuple(records), torn, leaves, note)
