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
from collections.abc import Iterator, Sequence
from datetime import date
from hashlib import blake2b

from federation.identity import Identity
from federation.names import name_tokens, phonetic_key
from node.comparison import name_variants
from node.store import Child

_IDX_BITS = 23  # up to 8 million records
MAX_RECORDS = 1 << _IDX_BITS
"""Most records one index can hold (a record's position takes ``_IDX_BITS`` bits of a key)."""
_KEY_MASK = (1 << 40) - 1
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


def _phonetic(codes: set[str]) -> set[str]:
    return {c for c in codes if c.startswith("k:")}


def _pairs(given: set[str], family: set[str]) -> set[tuple[str, str]]:
    """Unordered pairs of a given-name key and a family-name key."""
    return {(g, f) if g <= f else (f, g) for g in given for f in family}


def _mixed_pairs(given: set[str], family: set[str]) -> set[tuple[str, str]]:
    """Unordered pairs of one name's phonetic key with the other's first letters."""
    return {p for p in _pairs(given, family) if p[0][:2] != p[1][:2]}


def _day_month(d: date) -> tuple[int, int]:
    return (d.day, d.month) if d.day <= d.month else (d.month, d.day)


def _year_variants(year: int, today_year: int) -> set[int]:
    """The year, and years one of the last two digits away from it, from 1900 to next year."""
    text = f"{year:04d}"
    out = {year}
    for i in (2, 3):
        for digit in "0123456789":
            y = int(text[:i] + digit + text[i + 1:])
            if 1900 <= y <= today_year + 1:
                out.add(y)
    return out


class CandidateIndex:
    """The packed keys of the node's records; ``candidates`` gives positions in ``records``."""

    def __init__(self, records: Sequence[Child]) -> None:
        packed: list[int] = []
        for idx, child in enumerate(records):
            packed.extend((key << _IDX_BITS) | idx for key in set(self._keys_of(child)))
        self._packed = array("q", sorted(packed))
        del packed
        self._today_year = date.today().year

    @classmethod
    def from_packed(cls, packed: array) -> CandidateIndex:  # type: ignore[type-arg]
        """An index over records whose keys were packed before (``packed``, from a saved index of
        records in the same order): nothing is derived again."""
        index = cls.__new__(cls)
        index._packed = packed
        index._today_year = date.today().year
        return index

    @property
    def packed(self) -> array:  # type: ignore[type-arg]
        """The sorted packed keys (key and record position), for saving the index."""
        return self._packed

    @staticmethod
    def _key(*parts: object) -> int:
        # A stable digest, not ``hash()``: Python salts string hashes per process, so keys (and
        # which blocks collide) would differ from one run to the next.
        digest = blake2b(repr(parts).encode(), digest_size=5).digest()
        return int.from_bytes(digest, "big") & _KEY_MASK

    def _keys_of(self, child: Child) -> Iterator[int]:
        key = self._key
        if child.nhs_number:
            yield key(_K_NHS, child.nhs_number)
        if child.upn:
            yield key(_K_UPN, child.upn)
        dob: date | None = child.date_of_birth
        pc = child.postcode
        if dob is not None and pc:
            yield key(_K_DOB_POSTCODE, dob.toordinal(), pc)
        for given, family in name_variants(child):
            g_codes = _codes(name_tokens(given)[:1])
            f_codes = _codes(name_tokens(family))
            for c in g_codes | f_codes:
                if dob is not None:
                    yield key(_K_DOB_NAME, dob.toordinal(), c)
                if pc and c.startswith("k:"):
                    yield key(_K_POSTCODE_NAME, pc, c)
            # Pairs are unordered, so that one look-up also finds given and family swapped.
            for pair in _pairs(_phonetic(g_codes), _phonetic(f_codes)):
                if dob is not None:
                    # day and month unordered: a day/month swap finds the same key
                    yield key(_K_DATE_NAMES, dob.year, _day_month(dob), pair)
                    yield key(_K_YEAR_MONTH_NAMES, dob.year, dob.month, pair)
                    yield key(_K_YEAR_DAY_NAMES, dob.year, dob.day, pair)
                    yield key(_K_YEAR_NAMES, dob.year, pair)
                yield key(_K_NAMES, pair)
            for pair in _mixed_pairs(g_codes, f_codes):
                yield key(_K_NAMES_PREFIX, pair)

    def _block(self, key: int, cap: int | None = None) -> range:
        """Positions in the packed index holding ``key`` (empty when larger than ``cap``)."""
        lo = bisect_left(self._packed, key << _IDX_BITS)
        hi = bisect_left(self._packed, (key + 1) << _IDX_BITS, lo)
        if cap is not None and hi - lo > cap:
            return range(0)
        return range(lo, hi)

    def candidates(self, query: Identity) -> set[int]:
        """Positions of the records that share a key with the query (blocks within their caps)."""
        key = self._key
        positions: list[range] = []
        if query.nhs_number:
            positions.append(self._block(key(_K_NHS, query.nhs_number)))
        if query.upn:
            positions.append(self._block(key(_K_UPN, query.upn)))
        g_codes = _codes(name_tokens(query.given_name or "")[:1])
        f_codes = _codes(name_tokens(query.family_name or ""))
        all_codes = g_codes | f_codes
        pairs = _pairs(_phonetic(g_codes), _phonetic(f_codes))
        mixed = _mixed_pairs(g_codes, f_codes)
        dob = query.date_of_birth
        pc = query.postcode
        if dob is not None:
            ordinal = dob.toordinal()
            for c in all_codes:
                positions.append(self._block(key(_K_DOB_NAME, ordinal, c), _CAP_DOB_NAME))
            if pc:
                positions.append(self._block(key(_K_DOB_POSTCODE, ordinal, pc)))
            # The date with one digit wrong: a wrong day keeps year and month, a wrong month
            # keeps year and day, a wrong year digit (or a day/month swap) keeps day and month.
            day_month = _day_month(dob)
            for pair in pairs:
                positions.append(self._block(key(_K_YEAR_MONTH_NAMES, dob.year, dob.month, pair),
                                             _CAP_DATE_NAMES))
                positions.append(self._block(key(_K_YEAR_DAY_NAMES, dob.year, dob.day, pair),
                                             _CAP_DATE_NAMES))
                positions.append(self._block(key(_K_YEAR_NAMES, dob.year, pair), _CAP_YEAR_NAMES))
                for year in _year_variants(dob.year, self._today_year):
                    positions.append(self._block(key(_K_DATE_NAMES, year, day_month, pair),
                                                 _CAP_DATE_NAMES))
        if pc:
            for c in _phonetic(all_codes):
                positions.append(self._block(key(_K_POSTCODE_NAME, pc, c), _CAP_POSTCODE_NAME))
        for pair in pairs:
            positions.append(self._block(key(_K_NAMES, pair), _CAP_NAMES))
        for pair in mixed:
            positions.append(self._block(key(_K_NAMES_PREFIX, pair), _CAP_NAMES_PREFIX))
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
