"""The candidate index's directory (``CandidateIndex._starts``) finds exactly the block a bisection
of the whole packed array finds, for every size of index and every key, the smallest and the
largest included."""

from __future__ import annotations

from array import array
from bisect import bisect_left

from hypothesis import given, settings
from hypothesis import strategies as st

from node.candidates import _IDX_BITS, _KEY_MASK, CandidateIndex

KEYS = st.one_of(st.integers(0, 40), st.integers(_KEY_MASK - 40, _KEY_MASK), st.integers(0, _KEY_MASK))


def _whole_bisection(packed: array, key: int) -> range:  # type: ignore[type-arg]
    lo = bisect_left(packed, key << _IDX_BITS)
    return range(lo, bisect_left(packed, (key + 1) << _IDX_BITS, lo))


@settings(max_examples=300, deadline=None)
@given(keys=st.lists(st.tuples(KEYS, st.integers(0, (1 << _IDX_BITS) - 1)), max_size=3000),
       asked=st.lists(KEYS, max_size=50))
def test_a_block_is_what_bisecting_the_whole_array_gives(keys: list[tuple[int, int]],
                                                          asked: list[int]) -> None:
    packed = array("q", sorted((key << _IDX_BITS) | idx for key, idx in keys))
    index = CandidateIndex.from_packed(packed)
    for key in [*asked, *(k for k, _ in keys[:50]), *(k + 1 for k, _ in keys[:50] if k < _KEY_MASK),
                0, _KEY_MASK]:
        assert index._block(key) == _whole_bisection(packed, key)


def test_a_large_index_uses_a_directory_of_small_buckets() -> None:
    step = (1 << 40) // 400_000
    packed = array("q", [((i * step) << _IDX_BITS) | (i % 7) for i in range(400_000)])
    index = CandidateIndex.from_packed(packed)
    assert len(index._starts) == (1 << 12) + 2  # 400,000 keys: 4,096 buckets of about 98
    assert max(b - a for a, b in zip(index._starts, index._starts[1:], strict=False)) <= 100
    for i in (0, 1, 123_456, 399_999):
        assert index._block(i * step) == range(i, i + 1)
        assert index._block(i * step + 1) == range(i + 1, i + 1)
