"""The one canonical serialisation that feeds every signature, hash and log leaf.

Sorted keys, no insignificant whitespace, UTF-8. Floats are refused: every number Signpost
signs is an integer, and float formatting is the classic way two parties disagree about bytes.
"""

from __future__ import annotations

import hashlib
import json
from typing import Any, TypeAlias

JsonObject: TypeAlias = dict[str, Any]
"""A JSON object at the edge of the program: a message's wire form, a log entry, a problem body.

Values of this type exist only where typed objects are turned into JSON or read back from it
(``to_wire`` / ``from_wire`` / ``to_json``, entry builders, the HTTP body reader); everything
between those edges works with typed objects.
"""


def _reject_floats(value: Any) -> None:
    """Raise ``TypeError`` if a float is anywhere in ``value`` (walked without recursion: a broker's
    outcome entry holds one object per authority, and most values are strings)."""
    pending = [value]
    while pending:
        item = pending.pop()
        kind = type(item)
        if kind is str or kind is int or kind is bool or item is None:
            continue
        if isinstance(item, float):
            raise TypeError("canonical JSON does not allow floats")
        if isinstance(item, dict):
            pending.extend(item.values())
        elif isinstance(item, list | tuple):
            pending.extend(item)


def canonical_json(value: Any) -> bytes:
    """Serialise ``value`` canonically: sorted keys, compact separators, UTF-8."""
    _reject_floats(value)
    return json.dumps(
        value, sort_keys=True, separators=(",", ":"), ensure_ascii=False, allow_nan=False
    ).encode("utf-8")


def sha256_hex(data: bytes) -> str:
    """Hex SHA-256 of ``data``."""
    return hashlib.sha256(data).hexdigest()
