"""Finding the few records worth comparing with a query, without comparing every record.

Keys built once over the node's records, packed with each record's position into one sorted
array of 64-bit integers (8 bytes per key and record): identifiers exactly; the date of birth
exactly with a phonetic key of any one name (or with the postcode); the year of birth (exactly,
or with one digit wrong) with phonetic keys of both names, which catches a day/month swap or a
wrong day or month; the postcode with a phonetic key of a name; and, for rare name pairs only,
both names' keys alone. Name pairs are unordered, so given and family names are also found
swapped, and every alias or former name on a record is keyed like its main name.

A key shared by too many records says too little to be worth scoring them all: its block is
skipped, and the child is found through a stronger key, if at all.
"""

from __future__ import annotations

from array import array
from bisect import bisect_left
from collections.abc import Sequence
from datetime import date
from functools import lru_cache

from federation.identity import Identity
from federation.names import name_tokens, phonetic_key, tables_digest
from node.comparison import name_variants
from node.store import Child

_IDX_BITS = 23  # up to 8 million records
MAX_RECORDS = 1 << _IDX_BITS
"""Most records one index can hold (a record's position takes ``_IDX_BITS`` bits of a key)."""
_KEY_MASK = (1 << 40) - 1
_PACKED_BITS = 40 + _IDX_BITS  # a packed key's bits (it is never negative)
_MAX_DIRECTORY_BITS = 16  # at most 65,537 starts: built in about 70 ms at 5.6 million keys
# Blocks larger than these are skipped: a key shared by that many children says too little to
# be worth scoring them all (the child is then found through a stronger key, if at all).
_CAP_DOB_NAME = 64
_CAP_DATE_NAMES = 32
_CAP_YEAR_NAMES = 8
_CAP_POSTCODE_NAME = 32
_CAP_NAMES = 16
_CAP_NAMES_PREFIX = 8

(_K_NHS, _K_UPN, _K_DOB_NAME, _K_DOB_POSTCODE, _K_DATE_NAMES, _K_YEAR_MONTH_NAMES,
 _K_YEAR_DAY_NAMES, _K_YEAR_NAMES, _K_POSTCODE_NAME, _K_NAMES, _K_NAMES_PREFIX) = range(11)


def _codes(tokens: tuple[str, ...]) -> set[str]:
    """Name keys of a name (the first given name; every part of a family name): the phonetic key
    of each part and of the whole (``k:``), and the first two letters of the whole (``p:``), so
    that one typo rarely changes every key."""
    codes = {"k:" + phonetic_key(t) for t in tokens if t}
    joined = "".join(tokens)
    if len(tokens) > 1:
        codes.add("k:" + phonetic_key(joined))
    if len(joined) >= 2:
        codes.add("p:" + joined[:2])
    return codes


def _number(text: str) -> int:
    """A stable number for a string: its UTF-8 bytes read as one integer (the same in every
    process, unlike ``hash`` of a string, which Python salts per process)."""
    return int.from_bytes(text.encode(), "big")


@lru_cache(maxsize=1 << 17)
def _name_codes(tokens: tuple[str, ...]) -> tuple[tuple[int, ...], tuple[int, ...]]:
    """A name's keys as numbers: (phonetic keys, first letters), each sorted."""
    codes = _codes(tokens)
    return (tuple(sorted(_number(c) for c in codes if c.startswith("k:"))),
            tuple(sorted(_number(c) for c in codes if c.startswith("p:"))))


def _pairs(given: tuple[int, ...], family: tuple[int, ...]) -> set[tuple[int, int]]:
    """Unordered pairs of a given-name key and a family-name key."""
    return {(g, f) if g <= f else (f, g) for g in given for f in family}


def _mixed_pairs(given: tuple[tuple[int, ...], tuple[int, ...]],
                 family: tuple[tuple[int, ...], tuple[int, ...]]) -> set[tuple[int, int]]:
    """Unordered pairs of one name's phonetic key with the other's first letters."""
    return _pairs(given[0], family[1]) | _pairs(given[1], family[0])


def _key(*parts: int) -> int:
    """A candidate key: Python's hash of a tuple of integers, which (unlike the hash of a
    string) is not salted, so the same parts give the same key in every process on the same
    interpreter (``KEY_CHECK`` lets a saved index tell)."""
    return hash(parts) & _KEY_MASK


def key_check(tables: int) -> int:
    """The key of fixed parts and of the name tables' digest (``names.tables_digest``)."""
    return _key(_K_NAMES, _number("k:J520"), _number("k:S530"), tables)


KEY_CHECK = key_check(tables_digest())
"""A saved index made where this differs has other keys (another interpreter's hashing, or other
name tables: a spelling listed as a variant since changes a name's keys), and is unusable."""


def _day_month(d: date) -> tuple[int, int]:
    return (d.day, d.month) if d.day <= d.month else (d.month, d.day)


@lru_cache(maxsize=512)
def _year_variants(year: int, today_year: int) -> tuple[int, ...]:
    """The year, and years one of the last two digits away from it, from 1900 to next year
    (remembered: a query's year is one of a few dozen, and working them out takes 6 us)."""
    text = f"{year:04d}"
    out = {year}
    for i in (2, 3):
        for digit in "0123456789":
            y = int(text[:i] + digit + text[i + 1:])
            if 1900 <= y <= today_year + 1:
                out.add(y)
    return tuple(sorted(out))


class CandidateIndex:
    """The packed keys of the node's records; ``candidates`` gives positions in ``records``."""

    def __init__(self, records: Sequence[Child]) -> None:
        packed = self.packed_keys(records, 0)
        packed.sort()
        self._set_packed(array("q", packed))
        del packed
        self._today_year = date.today().year

    def _set_packed(self, packed: array) -> None:  # type: ignore[type-arg]
        """Keep the sorted packed keys, and a directory into them: ``_starts[b]`` is the first
        position whose packed key, shifted right by ``_dir_shift``, is at least ``b``. A look-up
        then bisects one small bucket (64 to 128 keys on average; 85 at 5.6 million keys)
        instead of them all: 5.0 -> 1.4 us a block at 5.6 million keys, for ~70 ms more when
        the index is made or read."""
        self._packed = packed
        bits = min(_MAX_DIRECTORY_BITS, max(0, len(packed).bit_length() - 7))
        shift = self._dir_shift = _PACKED_BITS - bits
        # One more start past the end: the key after the largest (``_block``'s ``key + 1``).
        self._starts = array("q", (bisect_left(packed, b << shift) for b in range((1 << bits) + 1)))
        self._starts.append(len(packed))

    @classmethod
    def packed_keys(cls, records: Sequence[Child], offset: int) -> list[int]:
        """The packed keys (unsorted) of ``records`` at positions ``offset`` on: a part of an
        index built in parts (``node.indexbuild``); sorted together, the parts of consecutive
        records make the same array as one build over them all."""
        packed: list[int] = []
        extend = packed.extend
        keys_of = cls._keys_of
        for idx, child in enumerate(records, start=offset):
            extend([(key << _IDX_BITS) | idx for key in keys_of(child)])
        return packed

    @classmethod
    def from_packed(cls, packed: array) -> CandidateIndex:  # type: ignore[type-arg]
        """An index over records whose keys were packed before (``packed``, from a saved index of
        records in the same order): nothing is derived again."""
        index = cls.__new__(cls)
        index._set_packed(packed)
        index._today_year = date.today().year
        return index

    @property
    def packed(self) -> array:  # type: ignore[type-arg]
        """The sorted packed keys (key and record position), for saving the index."""
        return self._packed

    @staticmethod
    def _keys_of(child: Child) -> set[int]:
        # ``_key`` written out (a call per key is a third of the build)
        mask = _KEY_MASK
        keys: set[int] = set()
        add = keys.add
        if child.nhs_number:
            add(hash((_K_NHS, _number(child.nhs_number))) & mask)
        if child.upn:
            add(hash((_K_UPN, _number(child.upn))) & mask)
        dob: date | None = child.date_of_birth
        pc = _number(child.postcode) if child.postcode else 0
        if dob is not None:
            ordinal = dob.toordinal()
            year, month, day = dob.year, dob.month, dob.day
            low, high = (day, month) if day <= month else (month, day)
            if pc:
                add(hash((_K_DOB_POSTCODE, ordinal, pc)) & mask)
        for given, family in name_variants(child):
            g_codes = _name_codes(name_tokens(given)[:1])
            f_codes = _name_codes(name_tokens(family))
            phonetic = g_codes[0] + f_codes[0]
            if dob is not None:
                for c in phonetic + g_codes[1] + f_codes[1]:
                    add(hash((_K_DOB_NAME, ordinal, c)) & mask)
            if pc:
                for c in phonetic:
                    add(hash((_K_POSTCODE_NAME, pc, c)) & mask)
            # Pairs are unordered, so that one look-up also finds given and family swapped.
            for a, b in _pairs(g_codes[0], f_codes[0]):
                if dob is not None:
                    # day and month unordered: a day/month swap finds the same key
                    add(hash((_K_DATE_NAMES, year, low, high, a, b)) & mask)
                    add(hash((_K_YEAR_MONTH_NAMES, year, month, a, b)) & mask)
                    add(hash((_K_YEAR_DAY_NAMES, year, day, a, b)) & mask)
                    add(hash((_K_YEAR_NAMES, year, a, b)) & mask)
                add(hash((_K_NAMES, a, b)) & mask)
            for a, b in _mixed_pairs(g_codes, f_codes):
                add(hash((_K_NAMES_PREFIX, a, b)) & mask)
        return keys

    def _block(self, key: int, cap: int | None = None) -> range:
        """Positions in the packed index holding ``key`` (empty when larger than ``cap``)."""
        packed, starts, shift = self._packed, self._starts, self._dir_shift
        first = key << _IDX_BITS
        lo = bisect_left(packed, first, starts[first >> shift], starts[(first >> shift) + 1])
        after = first + (1 << _IDX_BITS)
        hi = bisect_left(packed, after, lo, starts[(after >> shift) + 1])
        if cap is not None and hi - lo > cap:
            return range(0)
        return range(lo, hi)

    def candidates(self, query: Identity) -> set[int]:
        """Positions of the records that share a key with the query (blocks within their caps)."""
        key = _key
        positions: list[range] = []
        if query.nhs_number:
            positions.append(self._block(key(_K_NHS, _number(query.nhs_number))))
        if query.upn:
            positions.append(self._block(key(_K_UPN, _number(query.upn))))
        g_codes = _name_codes(name_tokens(query.given_name or "")[:1])
        f_codes = _name_codes(name_tokens(query.family_name or ""))
        phonetic = g_codes[0] + f_codes[0]
        pairs = _pairs(g_codes[0], f_codes[0])
        mixed = _mixed_pairs(g_codes, f_codes)
        dob = query.date_of_birth
        pc = _number(query.postcode) if query.postcode else 0
        if dob is not None:
            ordinal = dob.toordinal()
            for c in set(phonetic + g_codes[1] + f_codes[1]):
                positions.append(self._block(key(_K_DOB_NAME, ordinal, c), _CAP_DOB_NAME))
            if pc:
                positions.append(self._block(key(_K_DOB_POSTCODE, ordinal, pc)))
            # The date with one digit wrong: a wrong day keeps year and month, a wrong month
            # keeps year and day, a wrong year digit (or a day/month swap) keeps day and month.
            low, high = _day_month(dob)
            for a, b in pairs:
                positions.append(self._block(key(_K_YEAR_MONTH_NAMES, dob.year, dob.month, a, b),
                                             _CAP_DATE_NAMES))
                positions.append(self._block(key(_K_YEAR_DAY_NAMES, dob.year, dob.day, a, b),
                                             _CAP_DATE_NAMES))
                positions.append(self._block(key(_K_YEAR_NAMES, dob.year, a, b), _CAP_YEAR_NAMES))
                for year in _year_variants(dob.year, self._today_year):
                    positions.append(self._block(key(_K_DATE_NAMES, year, low, high, a, b),
                                                 _CAP_DATE_NAMES))
        if pc:
            for c in set(phonetic):
                positions.append(self._block(key(_K_POSTCODE_NAME, pc, c), _CAP_POSTCODE_NAME))
        for a, b in pairs:
            positions.append(self._block(key(_K_NAMES, a, b), _CAP_NAMES))
        for a, b in mixed:
            positions.append(self._block(key(_K_NAMES_PREFIX, a, b), _CAP_NAMES_PREFIX))
        mask = (1 << _IDX_BITS) - 1
        packed = self._packed
        return {packed[i] & mask for block in positions for i in block}


class CandidateOverlay:
    """Candidates from a base index, less the positions ``hidden``, plus those of a small index
    over records appended after ``offset`` (see ``MatchIndex.updated``).

    Caps apply to each part on its own, so a block the base skips stays skipped."""

    def __init__(self, base: CandidateIndex | CandidateOverlay, hidden: set[int],
                 extra: CandidateIndex, offset: int) -> None:
        self._base = base
        self._hidden = hidden
        self._extra = extra
        self._offset = offset

    def candidates(self, query: Identity) -> set[int]:
        found = self._base.candidates(query) - self._hidden
        found.update(self._offset + i for i in self._extra.candidates(query))
        return found
