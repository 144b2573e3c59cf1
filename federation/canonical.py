"""The one canonical serialisation that feeds every signature, hash and log leaf.

Sorted keys, no insignificant whitespace, UTF-8. Floats are refused: every number Signpost
signs is an integer, and float formatting is the classic way two parties disagree about bytes.

The bytes are ``json.dumps``'s (sorted keys, compact separators, ``ensure_ascii=False``), made by
orjson where it can make the same bytes ten times faster (a broker's outcome entry lists every
authority, and is made for every search): plain ``str``, ``int``, ``bool``, ``None``, ``dict``,
``list`` and ``tuple``. Anything else orjson would write differently or not at all (a subclass
of those types, an integer beyond 64 bits, a lone surrogate, nesting deeper than orjson's limit)
goes to ``json.dumps`` itself, so the result, or the error, is always that of ``json.dumps``
(decision 20; ``tests/test_canonical.py`` compares the two on generated values).
"""

from __future__ import annotations

import hashlib
import json
from typing import Any, TypeAlias

import orjson

JsonObject: TypeAlias = dict[str, Any]
"""A JSON object at the edge of the program: a message's wire form, a log entry, a problem body.

Values of this type exist only where typed objects are turned into JSON or read back from it
(``to_wire`` / ``from_wire`` / ``to_json``, entry builders, the HTTP body reader); everything
between those edges works with typed objects.
"""


def _refuse_non_json(value: Any) -> None:
    """Raise ``TypeError`` if a float, or anything ``json.dumps`` cannot write, is anywhere in
    ``value`` (walked without recursion: a broker's outcome entry holds one object per authority,
    and most values are strings). Checked here so that orjson, which writes more types (a UUID, a
    plain enum), is never asked to."""
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
        elif not isinstance(item, str | int):
            raise TypeError(f"Object of type {kind.__name__} is not JSON serializable")


_ORJSON_CANONICAL = (orjson.OPT_SORT_KEYS | orjson.OPT_PASSTHROUGH_SUBCLASS
                     | orjson.OPT_PASSTHROUGH_DATACLASS | orjson.OPT_PASSTHROUGH_DATETIME)
"""Sorted keys; subclasses of the JSON types, dataclasses and dates are refused (no ``default``),
so that ``json.dumps`` decides what becomes of them."""


def canonical_json(value: Any) -> bytes:
    """Serialise ``value`` canonically: sorted keys, compact separators, UTF-8."""
    _refuse_non_json(value)
    try:
        return orjson.dumps(value, option=_ORJSON_CANONICAL)
    except orjson.JSONEncodeError:
        pass  # not plain JSON types: json.dumps gives its bytes, or its error
    return json.dumps(
        value, sort_keys=True, separators=(",", ":"), ensure_ascii=False, allow_nan=False
    ).encode("utf-8")


def sha256_hex(data: bytes) -> str:
    """Hex SHA-256 of ``data``."""
    return hashlib.sha256(data).hexdigest()
