"""Canonical JSON (`federation.canonical`): sorted keys, compact, UTF-8, and never a float."""

from __future__ import annotations

import json
from typing import Any

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
