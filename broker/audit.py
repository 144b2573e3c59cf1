"""What the broker writes to its audit log: a ``search`` entry before fan-out, an ``outcome`` after.

The broker never logs the identity searched for. It logs a commitment to it::

    HMAC-SHA256(commitment key, salt || canonical JSON of the normalised identity)

with a fresh 16-byte ``salt`` per entry (kept in the entry) and a 32-byte secret key that only
the broker holds (``audit_commitment_key``; created on first start, mode 0600). Why both:

- the key stops a reader of the log (an auditor, or whoever copies it) from testing guesses --
  NHS numbers have about 10^9 valid values and dates of birth far fewer, so an unkeyed hash of an
  identity is a dictionary lookup away from the identity;
- the salt stops that reader linking two searches for the same child by equal commitments.

With the key, the broker's operator can answer "was this identity searched in entry N?" for an
investigation by recomputing the HMAC with the entry's salt; nobody else can.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import os
import secrets
from collections.abc import Iterable, Mapping
from datetime import datetime
from pathlib import Path
from typing import Any

from federation.canonical import JsonObject, canonical_json
from federation.errors import SignpostError

ENTRY_VERSION = 1
COMMITMENT_ALGORITHM = "HMAC-SHA256"
KEY_BYTES = 32
SALT_BYTES = 16


class CommitmentKeyError(SignpostError):
    """The identity-commitment key file is unreadable or has the wrong size."""


def default_key_path(audit_log: Path) -> Path:
    """Where the key goes when the configuration does not say: beside the log's folder."""
    return audit_log.parent / "audit-commitment.key"


def load_or_create_key(path: Path) -> bytes:
    """Read the 32-byte key at ``path``, creating it (0600) if there is none yet."""
    if not path.exists():
        path.parent.mkdir(parents=True, exist_ok=True)
        try:
            descriptor: int | None = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
        except FileExistsError:
            descriptor = None  # another broker process created it first: read that one below
        if descriptor is not None:
            with open(descriptor, "wb") as handle:
                handle.write(secrets.token_bytes(KEY_BYTES))
                handle.flush()
                os.fsync(handle.fileno())
    key = path.read_bytes()
    if len(key) != KEY_BYTES:
        raise CommitmentKeyError(f"audit_commitment_key {path}: expected {KEY_BYTES} bytes, got {len(key)}")
    return key


def key_id(key: bytes) -> str:
    """A short public name for the key (so a rotated key can be told apart in old entries)."""
    return hashlib.sha256(b"signpost-audit-commitment\n" + key).hexdigest()[:16]


def commit(key: bytes, identity_wire: Mapping[str, Any], salt: bytes | None = None) -> dict[str, str]:
    """The commitment to one identity (``Identity.to_wire()``), with its salt."""
    salt = secrets.token_bytes(SALT_BYTES) if salt is None else salt
    value = hmac.new(key, salt + canonical_json(dict(identity_wire)), hashlib.sha256).hexdigest()
    return {"alg": COMMITMENT_ALGORITHM, "key_id": key_id(key),
            "salt": base64.b64encode(salt).decode("ascii"), "value": value}


def opens(key: bytes, commitment: Mapping[str, Any], identity_wire: Mapping[str, Any]) -> bool:
    """Whether ``commitment`` (from a log entry) is a commitment to ``identity_wire`` under ``key``."""
    salt = base64.b64decode(str(commitment.get("salt", "")))
    expected = commit(key, identity_wire, salt)["value"]
    return hmac.compare_digest(expected, str(commitment.get("value", "")))


def _time(now: datetime) -> str:
    return now.isoformat(timespec="milliseconds")


def search_entry(*, broker_id: str, now: datetime, query_id: str, query_hash: str,
                 practitioner: Mapping[str, Any], purpose: str, on_behalf_of: Mapping[str, str] | None,
                 commitment: Mapping[str, str], nodes: Iterable[str]) -> JsonObject:
    """Logged before the query leaves: who asked, why, a commitment to whom, and which nodes."""
    return {
        "v": ENTRY_VERSION,
        "type": "search",
        "broker": broker_id,
        "time": _time(now),
        "query_id": query_id,
        "query_hash": query_hash,
        "practitioner": {k: v for k, v in practitioner.items() if isinstance(v, str)},
        "purpose": purpose,
        "on_behalf_of": dict(on_behalf_of) if on_behalf_of is not None else None,
        "identity_commitment": dict(commitment),
        "nodes": sorted(nodes),
    }


def outcome_entry(*, broker_id: str, now: datetime, query_id: str,
                  results: Mapping[str, Mapping[str, Any]]) -> JsonObject:
    """Logged after fan-out: per node, its status and answer hash, or ``unanswered`` and why."""
    return {
        "v": ENTRY_VERSION,
        "type": "outcome",
        "broker": broker_id,
        "time": _time(now),
        "query_id": query_id,
        "results": {k: dict(v) for k, v in sorted(results.items())},
    }


def node_result(status: str, answer_hash: str | None, reason: str | None,
                integrity_failure: bool, abandoned: bool = False) -> JsonObject:
    """One node's part of an outcome entry.

    A node that sent a signed answer is logged with its status and the answer's hash (even if
    the broker then rejected the answer: ``integrity_failure`` says so); a node that sent
    nothing usable is ``unanswered`` with the reason, and ``abandoned`` when the query had been
    sent and the broker stopped waiting for the answer (its deadline passed, or the channel
    closed): the node may then have logged an answer nobody received, which the auditor counts
    as a late answer rather than a discrepancy.
    """
    if answer_hash is not None:
        result: JsonObject = {"status": status, "answer_hash": answer_hash}
        if integrity_failure:
            result["integrity_failure"] = True
            result["reason"] = reason
        return result
    unanswered: JsonObject = {"status": "unanswered", "reason": reason or status}
    if abandoned:
        unanswered["abandoned"] = True
    return unanswered
