"""Crash-safe, append-only storage for one party's audit log, with group commit and proofs.

The files, their format and their repair after a crash are ``trust.logfiles``. Here: a batch of
appends is written to ``entries`` and made durable (one fdatasync), then added to the indexes,
and only then acknowledged; the indexes are synced before they would hold more than
``MAX_UNSYNCED_INDEX`` unsynced records. Nothing that was acknowledged is lost at a crash.

In memory the log keeps the right edge of the tree and every node at level ``MEMORY_LEVEL`` and
above (2 bytes per entry); lower nodes are hashed from at most ``2**MEMORY_LEVEL`` leaves read
from ``leaves``. So size, roots, inclusion and consistency proofs and range reads never read the
whole log. Opening reads ``leaves`` once (32 bytes per entry) to rebuild those nodes.

The log never signs a checkpoint that is inconsistent with the last one it signed, and refuses
to open when its entries no longer lead to that checkpoint's root.
"""

from __future__ import annotations

import asyncio
import hashlib
import os
import threading
from collections.abc import Callable, Iterator, Mapping, Sequence
from pathlib import Path
from types import TracebackType
from typing import Any

from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey, Ed25519PublicKey

from federation.canonical import canonical_json
from federation.files import write_atomic
from trust import merkle
from trust.checkpoint import Checkpoint, CheckpointError, parse_checkpoint, sign_checkpoint
from trust.logfiles import (
    CHECKPOINT,
    END_SIZE,
    ENTRIES,
    LEAF_CHUNK,
    MAGIC,
    MAX_BATCH,
    MAX_ENTRY_BYTES,
    MAX_UNSYNCED_INDEX,
    CorruptLogError,
    LogFiles,
    LogInUseError,
    frame_records,
    pread,
    pwrite,
)
from trust.logfiles import datasync as _datasync  # a module global, so tests can count syncs
from trust.logverify import LogReport, Problem, ProblemKind, verify_log
from trust.logwriter import WriterThread
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

MEMORY_LEVEL = 5
"""Lowest tree level whose nodes are kept in memory; lower ones are hashed from ``leaves``."""


class LogClosedError(LogError):
    """The log was used after ``close``."""


class EntryError(LogError):
    """An entry cannot be logged: wrong type, not canonical JSON, or too large."""


class LogWriteError(LogError):
    """Writing or syncing failed; the appends in that batch were not acknowledged."""


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


class AuditLog:
    """One append-only Merkle log on disk (``trust.logfiles`` describes the format).

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
        self._writer: WriterThread | None = None
        self._writer_lock = threading.Lock()
        self._submitted = 0  # entries handed to ``submit`` whose outcome is not yet reported
        self._closed = False
        self._broken: str | None = None
        self._size = 0
        self._end = len(MAGIC)
        self._frontier: list[bytes] = []
        self._levels: list[bytearray] = []
        self._signed: Checkpoint | None = None
        self._signed_note: str | None = None
        self._unsynced_index = 0

        self._files = LogFiles(self._path)
        try:
            self._recover()
            self._load_signed()
        except BaseException:
            self._files.close()
            raise

    @classmethod
    def open(cls, path: str | os.PathLike[str], *, max_batch: int = MAX_BATCH) -> AuditLog:
        """Open the log in directory ``path``, creating it if needed and recovering from a crash."""
        return cls(path, max_batch=max_batch)

    def __repr__(self) -> str:
        return f"AuditLog({str(self._path)!r}, size={self._size})"

    # ------------------------------------------------------------------ recovery

    def _recover(self, *, trust_indexes: bool = True) -> None:
        """Repair the files (see ``LogFiles.recover``) and rebuild the in-memory tree from them."""
        total, end = self._files.recover(trust_indexes=trust_indexes)
        self._end = end
        self._size = 0
        self._frontier = []
        self._levels = []
        for leaves in self._files.leaf_chunks(total):
            self._add_leaves(leaves)

    def _load_signed(self) -> None:
        path = self._path / CHECKPOINT
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
        data = pread(self._files.leaves_fd, count * HASH_SIZE, (index << level) * HASH_SIZE)
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
        data = pread(self._files.leaves_fd, (end - start) * HASH_SIZE, start * HASH_SIZE)
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
                raise CorruptLogError(f"{self._path / ENTRIES}: {damage}", index)
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
        yield from self._files.records(start, end)

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
            records, ends, leaves, position = frame_records(payloads, begin)
            files = self._files
            try:
                pwrite(files.entries_fd, records, begin)
                _datasync(files.entries_fd)
                if self._unsynced_index + len(payloads) > MAX_UNSYNCED_INDEX:
                    self._sync_index()
                pwrite(files.leaves_fd, b"".join(leaves), first * HASH_SIZE)
                pwrite(files.offsets_fd, ends, first * END_SIZE)
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
        _datasync(self._files.leaves_fd)
        _datasync(self._files.offsets_fd)
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

    def submit(self, entry: bytes | Mapping[str, Any], done: Callable[[int | BaseException], None]) -> None:
        """Append one entry from any thread without waiting for it: ``done`` gets its index once
        it is durable, or the exception that kept it from being written.

        Entries submitted while the writer thread is busy are written together (one write and
        one fsync for all of them), as concurrent ``append`` calls are. ``done`` runs on the
        writer thread, so it must be quick; anything it raises is discarded. A log that does not
        take entries (closed, or broken by a failed write) raises here, and ``done`` is not called.
        """
        payload = canonical_entry(entry)
        self._check_writable()
        writer = self._writer_thread()
        with self._state_lock:
            self._submitted += 1
        writer.submit(payload, done)

    def _written(self, payloads: Sequence[bytes]) -> int:
        """``_write_batch`` for the writer thread's batches of submitted entries."""
        try:
            return self._write_batch(payloads)
        finally:
            with self._state_lock:
                self._submitted -= len(payloads)

    def _writer_thread(self) -> WriterThread:
        with self._writer_lock:
            if self._writer is None:
                self._writer = WriterThread("audit-log", self._written, self._max_batch)
            return self._writer

    async def _flush(self) -> None:
        loop = asyncio.get_running_loop()
        writer = self._writer_thread()
        while self._pending:
            batch = self._pending[: self._max_batch]
            del self._pending[: len(batch)]
            try:
                first = await writer.run(loop, self._write_batch, [payload for payload, _ in batch])
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
                write_atomic(self._path / CHECKPOINT, note)
            self._signed, self._signed_note = current, note
            return note

    @property
    def signed_size(self) -> int | None:
        """The size of the last checkpoint this log signed (kept across restarts), if any."""
        return self._signed.size if self._signed is not None else None

    @property
    def broken(self) -> str | None:
        """Why the log stopped accepting entries (a failed write), or None while it accepts them."""
        if self._closed:
            return "closed"
        return self._broken

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
        for first in range(0, count, LEAF_CHUNK):
            yield from self.leaf_hashes(first, min(count, first + LEAF_CHUNK))

    # ------------------------------------------------------------------ closing

    def close(self) -> None:
        """Close the files. Appends still in flight must be awaited first (see ``aclose``)."""
        if self._closed:
            return
        if self._pending or self._submitted or (self._flusher is not None and not self._flusher.done()):
            raise LogError(f"audit log {self._path}: appends in flight; use 'await log.aclose()'")
        with self._write_lock:
            self._closed = True
            if self._writer is not None:
                self._writer.stop()
            try:
                if self._unsynced_index and self._broken is None:
                    self._sync_index()
            finally:
                self._files.close()

    async def aclose(self) -> None:
        """Wait for appends in flight, then close."""
        while self._flusher is not None and not self._flusher.done():
            await asyncio.shield(self._flusher)
        while self._submitted:  # written on the writer thread; their outcome is a moment away
            await asyncio.sleep(0.001)
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
