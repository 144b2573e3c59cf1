"""Canonical JSON (`federation.canonical`): sorted keys, compact, UTF-8, and never a float."""

from __future__ import annotations

import datetime
import enum
import json
import uuid
from typing import Any, NamedTuple

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from federation.canonical import canonical_json

LEAVES = st.one_of(st.none(), st.booleans(), st.integers(), st.text(max_size=8),
                   st.floats(allow_nan=False, allow_infinity=False))
VALUES = st.recursive(LEAVES, lambda inner: st.one_of(
    st.lists(inner, max_size=4), st.tuples(inner, inner),
    st.dictionaries(st.text(max_size=4), inner, max_size=4)), max_leaves=30)


def holds_a_float(value: Any) -> bool:
    if isinstance(value, float):
        return True
    if isinstance(value, dict):
        return any(holds_a_float(v) for v in value.values())
    if isinstance(value, list | tuple):
        return any(holds_a_float(v) for v in value)
    return False


@settings(max_examples=300, deadline=None)
@given(VALUES)
def test_a_value_with_a_float_anywhere_is_refused_and_any_other_written_canonically(value: Any) -> None:
    """Proves a float at any depth (in an object, a list or a tuple) is refused, and every other
    value is written with sorted keys, no spaces and UTF-8, exactly as ``json.dumps`` would."""
    if holds_a_float(value):
        with pytest.raises(TypeError, match="floats"):
            canonical_json(value)
    else:
        expected = json.dumps(value, sort_keys=True, separators=(",", ":"), ensure_ascii=False).encode()
        assert expected == canonical_json(value)


def test_a_float_deep_in_an_outcome_entry_is_refused() -> None:
    entry = {"type": "outcome", "results": {f"node-{i}": {"status": "no_match"} for i in range(200)}}
    entry["results"]["node-150"]["seconds"] = 0.25  # type: ignore[index]
    with pytest.raises(TypeError):
        canonical_json(entry)


def reference(value: Any) -> bytes:
    """What ``canonical_json`` promises: the bytes of ``json.dumps`` with these settings."""
    return json.dumps(value, sort_keys=True, separators=(",", ":"), ensure_ascii=False,
                      allow_nan=False).encode("utf-8")


ANY_TEXT = st.text(st.characters(codec="utf-8"), max_size=12)  # control characters, U+2028, emoji ...
WIDE = st.recursive(
    st.one_of(st.none(), st.booleans(), st.integers(min_value=-(2**70), max_value=2**70), ANY_TEXT),
    lambda inner: st.one_of(
        st.lists(inner, max_size=4), st.tuples(inner, inner),
        st.dictionaries(st.one_of(ANY_TEXT, st.integers(), st.booleans(), st.none()), inner, max_size=5)),
    max_leaves=40)


@settings(max_examples=500, deadline=None)
@given(WIDE)
def test_the_bytes_are_exactly_json_dumps_for_any_text_integer_and_key(value: Any) -> None:
    """Proves the fast path (orjson) and ``json.dumps`` agree byte for byte on every character
    (escapes, code-point key order), on integers past 64 bits and on keys that are not strings,
    and fail alike where ``json.dumps`` fails (keys of mixed types cannot be sorted)."""
    assert outcome(canonical_json, value) == outcome(reference, value)


def outcome(serialise: Any, value: Any) -> bytes | type[BaseException]:
    try:
        return serialise(value)  # type: ignore[no-any-return]
    except (TypeError, ValueError) as exc:
        return type(exc)


def nested(depth: int) -> list[Any]:
    """A list inside a list, ``depth`` deep."""
    value: list[Any] = []
    for _ in range(depth):
        value = [value]
    return value


class Kind(enum.StrEnum):
    A = "a"


class Level(enum.IntEnum):
    HIGH = 3


class Plain(enum.Enum):
    Z = "z"


class Pair(NamedTuple):
    left: str
    right: int


@pytest.mark.parametrize("value", [
    {"kind": Kind.A, Kind.A: Level.HIGH}, [Level.HIGH, True], Pair("x", 1), {"pair": Pair("y", 2)},
    {"deep": nested(300)},  # past orjson's depth
])
def test_subclasses_named_tuples_and_deep_nesting_are_written_as_json_dumps_writes_them(value: Any) -> None:
    assert canonical_json(value) == reference(value)


@pytest.mark.parametrize("value", [
    Plain.Z, {"a": Plain.Z}, uuid.UUID(int=1), [datetime.date(2026, 1, 1)], {"x": b"bytes"}, {"a": {1, 2}},
])
def test_what_json_dumps_refuses_is_refused_even_where_orjson_could_write_it(value: Any) -> None:
    with pytest.raises(TypeError):
        reference(value)
    with pytest.raises(TypeError):
        canonical_json(value)


def test_a_lone_surrogate_fails_as_json_dumps_fails() -> None:
    with pytest.raises(UnicodeEncodeError):
        canonical_json({"name": "\ud800"})
