"""The match index saved beside the store, so that a restarted node is ready without a rebuild.

Building the index means deriving every key of every child (most of a full build's time); the
keys are the same in every process (``node.candidates``), so the packed key array and the order
of the records it points into can be saved and read back. A snapshot says which store generation and
day it was built from and is authenticated with HMAC-SHA-256 under a key kept in the store
itself (``meta.index_key``), so a file from another store, a damaged file or one changed by
hand is refused, and the node builds the index instead. The caller decides whether a snapshot
that passes these checks still fits the store (``node.indexing``): it is never trusted blindly.

The file holds record ids and keys derived from identities (an NHS number's key can be found by
trying every valid number), so it is written with the store's own file permissions, beside it,
and counts as part of the store (``docs/threat-model.md``).

Layout: ``MAGIC``, a 4-byte big-endian length and that many bytes of JSON (format, generation,
day, byte order, counts, the key check), the record ids as a JSON array and the matcher's
statistics as JSON (each length-prefixed the same way), the packed keys as native 64-bit
integers, then the 32-byte HMAC of everything before it.
"""

from __future__ import annotations

import hashlib
import hmac
import json
import secrets
import sys
from array import array
from dataclasses import dataclass
from datetime import date
from pathlib import Path

from federation.errors import SignpostError
from federation.files import replacing
from node.candidates import KEY_CHECK

MAGIC = b"signpost-index\n"
FORMAT = 2
_MAC_SIZE = 32
_LENGTH_SIZE = 4


class SnapshotError(SignpostError):
    """A saved index cannot be used: unreadable, damaged, from another store or another format."""


@dataclass(frozen=True)
class Snapshot:
    """A saved index: the records in position order and the packed keys that point into them."""

    generation: int
    built_on: date
    record_ids: list[str]
    packed: array  # type: ignore[type-arg]  # array("q"), as CandidateIndex keeps it
    statistics: object  # what the matcher counted over the records, as JSON (``Statistics.to_json``)


def path_for(database: Path) -> Path:
    """Where the snapshot of the store at ``database`` lives: beside it."""
    return database.with_name(database.name + ".index")


def new_key() -> str:
    """A fresh snapshot key (hex), kept in the store's ``meta`` table."""
    return secrets.token_hex(32)


def _framed(data: bytes) -> bytes:
    return len(data).to_bytes(_LENGTH_SIZE, "big") + data


def _parts(snapshot: Snapshot) -> list[bytes | memoryview]:
    """The file's parts before its authentication code (the keys as a view, not a copy)."""
    header = json.dumps({"format": FORMAT, "generation": snapshot.generation,
                         "built_on": snapshot.built_on.isoformat(), "byteorder": sys.byteorder,
                         "records": len(snapshot.record_ids), "keys": len(snapshot.packed),
                         "key_check": KEY_CHECK},
                        sort_keys=True, separators=(",", ":")).encode("ascii")
    ids = json.dumps(snapshot.record_ids, separators=(",", ":")).encode("utf-8")
    statistics = json.dumps(snapshot.statistics, separators=(",", ":")).encode("utf-8")
    return [MAGIC, _framed(header), _framed(ids), _framed(statistics),
            memoryview(snapshot.packed).cast("B")]


def decode(data: bytes, key: bytes) -> Snapshot:
    """Check and read a snapshot's bytes; ``SnapshotError`` says why one cannot be used."""
    if len(data) < len(MAGIC) + 2 * _LENGTH_SIZE + _MAC_SIZE or not data.startswith(MAGIC):
        raise SnapshotError("not an index snapshot")
    view = memoryview(data)
    body, mac = view[:-_MAC_SIZE], bytes(view[-_MAC_SIZE:])
    if not hmac.compare_digest(mac, hmac.digest(key, body, hashlib.sha256)):
        raise SnapshotError("its authentication code does not match this store's key "
                            "(damaged, changed, or from another store)")
    at = len(MAGIC)
    try:
        length = int.from_bytes(body[at:at + _LENGTH_SIZE], "big")
        header = json.loads(bytes(body[at + _LENGTH_SIZE:at + _LENGTH_SIZE + length]))
        at += _LENGTH_SIZE + length
        length = int.from_bytes(body[at:at + _LENGTH_SIZE], "big")
        record_ids = json.loads(bytes(body[at + _LENGTH_SIZE:at + _LENGTH_SIZE + length]))
        at += _LENGTH_SIZE + length
        if not isinstance(header, dict) or header.get("format") != FORMAT:
            raise SnapshotError(f"expected format {FORMAT}, got {header.get('format')!r}")
        if header.get("byteorder") != sys.byteorder:
            raise SnapshotError(f"written on a {header.get('byteorder')}-endian machine")
        if header.get("key_check") != KEY_CHECK:
            raise SnapshotError("its keys were made by another interpreter or under other name tables "
                                "(the key check differs)")
        generation, built_on = header["generation"], date.fromisoformat(header["built_on"])
        if not isinstance(generation, int) or not isinstance(record_ids, list) \
                or len(record_ids) != header["records"] or not all(isinstance(r, str) for r in record_ids):
            raise SnapshotError("its header does not describe its contents")
        length = int.from_bytes(body[at:at + _LENGTH_SIZE], "big")
        statistics = json.loads(bytes(body[at + _LENGTH_SIZE:at + _LENGTH_SIZE + length]))
        at += _LENGTH_SIZE + length
        packed = array("q")
        packed.frombytes(body[at:])
        if len(packed) != header["keys"]:
            raise SnapshotError(f"expected {header['keys']} keys, found {len(packed)}")
    except (KeyError, TypeError, ValueError) as exc:
        raise SnapshotError(f"malformed ({exc.__class__.__name__})") from exc
    return Snapshot(generation, built_on, record_ids, packed, statistics)


def made_here(path: Path) -> bool:
    """Whether the snapshot at ``path`` says it was made with this release's keys (format and key
    check, read from its header alone, unauthenticated): one that was not is worth replacing.
    Reading it (``read``) still checks everything."""
    try:
        with open(path, "rb") as handle:
            head = handle.read(len(MAGIC) + _LENGTH_SIZE + 4096)
        length = int.from_bytes(head[len(MAGIC):len(MAGIC) + _LENGTH_SIZE], "big")
        header = json.loads(head[len(MAGIC) + _LENGTH_SIZE:len(MAGIC) + _LENGTH_SIZE + length])
    except (OSError, ValueError):
        return False
    return (head.startswith(MAGIC) and isinstance(header, dict) and header.get("format") == FORMAT
            and header.get("key_check") == KEY_CHECK)


def read(path: Path, key: bytes) -> Snapshot | None:
    """The snapshot at ``path``, or ``None`` when there is none; ``SnapshotError`` when unusable."""
    try:
        data = path.read_bytes()
    except FileNotFoundError:
        return None
    except OSError as exc:
        raise SnapshotError(f"cannot be read ({exc.strerror})") from exc
    return decode(data, key)


def write(path: Path, snapshot: Snapshot, key: bytes, *, like: Path) -> None:
    """Replace the snapshot at ``path`` all at once, with the file permissions of ``like`` (the store).

    The temporary file is created readable by its owner only and given the store's permissions
    just before it is renamed into place, so it is never more open than the store.
    """
    parts = _parts(snapshot)
    mac = hmac.new(key, digestmod=hashlib.sha256)
    # A temporary name of its own (an import and a running node may both save at once).
    with replacing(path, final_mode=like.stat().st_mode & 0o777) as handle:
        for part in parts:  # written and authenticated part by part: no copy of the whole
            mac.update(part)
            handle.write(part)
        handle.write(mac.digest())
