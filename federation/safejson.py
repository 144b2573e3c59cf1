"""The one door for untrusted JSON: bytes in, a bounded JSON value or one ``JsonError`` out.

Python's ``json.loads`` is not total on hostile input: a document nested thousands deep raises
``RecursionError``, a 5,000-digit integer raises ``ValueError`` (the integer-length limit), a
lone surrogate escape gives a string that cannot be encoded again, and a repeated key silently
keeps the last value. ``parse`` refuses all of these before or while decoding, so every caller
(request bodies, signed claims, trust lists, checkpoints, log entries) sees one typed error
naming what was wrong, never a Python error and never a value it would mis-read.
"""

from __future__ import annotations

import json
import math
import re
import threading
from array import array
from dataclasses import dataclass
from itertools import accumulate
from typing import Any

from federation.canonical import JsonObject
from federation.errors import FieldError


class JsonError(FieldError):
    """An untrusted JSON document is malformed or breaks a limit."""


@dataclass(frozen=True)
class JsonLimits:
    """Bounds on an untrusted document. The defaults suit every message Signpost exchanges."""

    max_bytes: int = 1024 * 1024
    max_depth: int = 32
    max_number_chars: int = 32  # an int64 has 19 digits; a timestamp in ms has 13

    def __post_init__(self) -> None:
        if self.max_bytes < 2 or self.max_depth < 1 or self.max_number_chars < 1:
            raise ValueError("JsonLimits: every limit must be positive")


DEFAULT_LIMITS = JsonLimits()

# Strings (closed or not) are removed before brackets are counted, so a "[" inside a string does
# not count; the optional closing quote keeps the scan linear on an unterminated string.
_STRING = re.compile(rb'"[^"\\]*(?:\\.[^"\\]*)*"?', re.DOTALL)
_DEPTH_STEP = bytes.maketrans(b"[{]}", b"\x01\x01\xff\xff")
_NOT_BRACKETS = bytes(set(range(256)) - set(b"[]{}"))


def _check_depth(raw: bytes, field: str, max_depth: int) -> None:
    if raw.count(b"[") + raw.count(b"{") <= max_depth:
        return  # every opening bracket (even in a string) counted: it cannot nest deeper
    brackets = _STRING.sub(b"", raw).translate(None, _NOT_BRACKETS)
    steps = array("b", brackets.translate(_DEPTH_STEP))
    if steps and max(accumulate(steps)) > max_depth:
        raise JsonError(field, f"expected JSON nested at most {max_depth} deep")


def _refuse_duplicates(field: str) -> Any:
    def hook(pairs: list[tuple[str, Any]]) -> dict[str, Any]:
        out: JsonObject = {}
        for key, value in pairs:
            if key in out:
                raise JsonError(field, f"duplicate key {key[:40]!r}")
            out[key] = value
        return out
    return hook


def _number(field: str, limit: int, kind: type) -> Any:
    def parse(text: str) -> Any:
        if len(text) > limit:
            raise JsonError(field, f"expected a number of at most {limit} characters, got {len(text)}")
        value = kind(text)
        if isinstance(value, float) and not math.isfinite(value):
            raise JsonError(field, f"expected a finite number, got {text[:40]!r}")
        return value
    return parse


def _constant(field: str) -> Any:
    def parse(text: str) -> Any:
        raise JsonError(field, f"expected a JSON value, got {text!r} (not JSON)")
    return parse


_DECODERS = threading.local()  # one decoder per thread, field and limits (a decoder is not shared)


def _decoder(field: str, limits: JsonLimits) -> json.JSONDecoder:
    """The decoder for ``field`` within ``limits`` (made once: making one costs more than a small parse)."""
    cache: dict[tuple[str, JsonLimits], json.JSONDecoder] | None = getattr(_DECODERS, "cache", None)
    if cache is None:
        cache = _DECODERS.cache = {}
    found = cache.get((field, limits))
    if found is None:
        if len(cache) > 256:  # fields are a handful of literals; never grow without bound
            cache.clear()
        found = cache[(field, limits)] = json.JSONDecoder(
            object_pairs_hook=_refuse_duplicates(field),
            parse_int=_number(field, limits.max_number_chars, int),
            parse_float=_number(field, limits.max_number_chars, float),
            parse_constant=_constant(field),
        )
    return found


def parse(raw: bytes | str, field: str = "body", limits: JsonLimits = DEFAULT_LIMITS) -> Any:
    """Decode ``raw`` (UTF-8 JSON) within ``limits``; raise ``JsonError`` naming ``field`` otherwise."""
    data = raw.encode("utf-8", "surrogatepass") if isinstance(raw, str) else raw
    if len(data) > limits.max_bytes:
        raise JsonError(field, f"expected at most {limits.max_bytes} bytes, got {len(data)}")
    _check_depth(data, field, limits.max_depth)
    try:
        text = data.decode("utf-8")
        value = _decoder(field, limits).decode(text)
        if b"\\u" in data:
            # A lone surrogate escape (\ud800) decodes to a string no UTF-8 writer can encode (a
            # surrogate written raw already failed to decode above).
            json.dumps(value, ensure_ascii=False).encode("utf-8")
    except JsonError:
        raise
    except UnicodeError:
        raise JsonError(field, "expected UTF-8 text without lone surrogates") from None
    except json.JSONDecodeError as exc:
        raise JsonError(field, f"expected JSON, got an error at line {exc.lineno} column {exc.colno}: "
                        f"{exc.msg}") from None
    except (ValueError, RecursionError, TypeError) as exc:  # belt and braces: never a Python error
        raise JsonError(field, f"expected JSON ({exc.__class__.__name__})") from None
    return value


def parse_object(raw: bytes | str, field: str = "body",
                 limits: JsonLimits = DEFAULT_LIMITS) -> JsonObject:
    """``parse``, and the value must be a JSON object."""
    value = parse(raw, field, limits)
    if not isinstance(value, dict):
        raise JsonError(field, f"expected a JSON object, got {type(value).__name__}")
    return value
