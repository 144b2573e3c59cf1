"""Query ids seen recently, kept in memory and recovered from the audit log at start.

Every query the node verifies is logged, answered or refused, before anything is sent back
(``node.answering``), and its audit entry names the query's id. So the audit log already holds
every id that must not be answered again, durably and in order; the node keeps the ids of
queries still within their lifetime in a dictionary on the store's thread, and a query costs
no write transaction. At start, before the first query, the ids logged in the last
``MEMORY_SECONDS`` (and a margin for clock steps) are read back from the end of the log.

A query valid for longer than ``MEMORY_SECONDS`` (no broker sends one: their lifetime is at
most 300 s) and a node without an audit log (development only) use the store's
``seen_queries`` table instead, as before.
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from datetime import datetime
from typing import Any

from trust.tlog import AuditLog

LEEWAY_SECONDS = 120
"""How long after its ``exp`` a query id is kept (the verifier's clock leeway, and more)."""

MEMORY_SECONDS = 600
"""The longest time from now a query id may need keeping to be kept in memory only."""

RECOVERY_MARGIN_SECONDS = 300
"""How far past ``MEMORY_SECONDS`` the recovery reads back (clock steps, entries out of order)."""

SWEEP_SECONDS = 60
"""How often expired ids are dropped."""

_CHUNK = 1024


class SeenQueries:
    """Query ids and when each may be forgotten. Used from one thread only (the store's)."""

    def __init__(self) -> None:
        self._expires: dict[str, int] = {}
        self._swept = 0

    def __len__(self) -> int:
        return len(self._expires)

    @staticmethod
    def fits(expires: int, now: int) -> bool:
        """Whether an id to keep until ``expires`` is kept here (else in the store's table)."""
        return expires - now <= MEMORY_SECONDS

    def remember(self, jti: str, expires: int, now: int) -> bool:
        """Keep ``jti`` until ``expires``; ``False`` if it is kept already (a replay)."""
        if now - self._swept >= SWEEP_SECONDS:
            self._expires = {k: v for k, v in self._expires.items() if v >= now}
            self._swept = now
        known = self._expires.get(jti)
        if known is not None and known >= now:
            return False
        self._expires[jti] = expires
        return True

    def forget(self, jti: str) -> None:
        """Drop ``jti`` again (its query was not answered because the store failed)."""
        self._expires.pop(jti, None)

    def recover(self, log: AuditLog, now: datetime) -> int:
        """Keep every query id the log holds from the last ``MEMORY_SECONDS`` (and the margin),
        each until ``MEMORY_SECONDS`` after it was logged; return how many were read back.

        Reads the log backwards a chunk at a time and stops at the first entry logged before
        that, so a long log costs no more than its recent end.
        """
        moment = int(now.timestamp())
        oldest = moment - MEMORY_SECONDS - RECOVERY_MARGIN_SECONDS
        found = 0
        for payload in _backwards(log):
            entry = _object(payload)
            stamp = _time_of(entry.get("time"))
            if stamp is not None and stamp < oldest:
                break
            jti = entry.get("query_id")
            if entry.get("type") != "query" or not isinstance(jti, str) or stamp is None:
                continue
            expires = stamp + MEMORY_SECONDS
            if expires >= moment and self._expires.get(jti, -1) < expires:
                self._expires[jti] = expires
                found += 1
        return found


def _backwards(log: AuditLog) -> Iterator[bytes]:
    end = log.size
    while end > 0:
        start = max(0, end - _CHUNK)
        yield from reversed(log.entries(start, end))
        end = start


def _object(payload: bytes) -> dict[str, Any]:
    """The entry as a JSON object (the node's own canonical JSON), or an empty one."""
    try:
        value = json.loads(payload)
    except (ValueError, UnicodeDecodeError, RecursionError):
        return {}
    return value if isinstance(value, dict) else {}


def _time_of(value: Any) -> int | None:
    """An entry's ``time`` as a Unix time, or None if it has none that parses."""
    if not isinstance(value, str):
        return None
    try:
        moment = datetime.fromisoformat(value)
    except ValueError:
        return None
    return int(moment.timestamp()) if moment.tzinfo is not None else None
