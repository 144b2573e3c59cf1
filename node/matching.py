"""Finding the child a query describes among the node's records, and nobody else.

Everything the node does with identity goes through ``MatchIndex.match``. It returns at most one
record (``match``), says the query is plausible but not certain (``possible_match``), or that
nothing fits (``no_match``). It works in two steps:

1. **Candidates** come from indexes built once over the node's records: identifiers exactly; the
   date of birth exactly with a phonetic key of any one name (or with the postcode); the year of
   birth (exactly, or with one digit wrong) with phonetic keys of both names, which catches a
   day/month swap or a wrong day or month; the postcode with a phonetic key of a name; and,
   for rare name pairs only, both names' keys alone. Given and family name keys are also looked
   up swapped, and every alias or former name on a record is indexed like its main name.
2. **Scoring** compares each candidate field by field and adds up evidence weights in bits,
   ``log2(m / u)`` in the Fellegi-Sunter manner: ``m`` is how often the field agrees at that
   level for the same child (fixed, documented below), ``u`` how often it agrees by chance for a
   different child (estimated from the node's own records: how common that name is, how spread
   the dates of birth are). The sum, less the prior odds of picking one child out of the node,
   is the candidate's score.

Two rules sit above the arithmetic, because a wrong match discloses another child's contacts:

- **Conflicting NHS numbers** (two different numbers that both pass the modulus 11 check) never
  ``match``: a typing error cannot turn one valid number into another.
- **Twins**: when family name and date of birth agree but the given names are different names
  (not a typo, nickname, listed variant or part of a longer name), the candidate cannot be a
  ``match`` unless an identifier agrees. A node may hold one twin and be asked about the other.

See ``docs/matching.md`` for the weights, thresholds and measured results.
"""

from __future__ import annotations

import math
from array import array
from bisect import bisect_left
from collections import Counter
from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from datetime import date
from enum import IntEnum
from typing import Any

from federation.identity import Identity, nhs_check_digit
from federation.names import (
    is_variant,
    jaro_winkler,
    known_given_names,
    name_tokens,
    nickname_ambiguous,
    nickname_related,
    osa_distance,
    phonetic_key,
    typo_cost,
    within_one_edit,
)
from federation.protocol import Status
from node.store import Child

# --- thresholds (bits of posterior evidence; see docs/matching.md) ----------------------------

MATCH_THRESHOLD = 10.0
"""A candidate must score at least this (odds of about 4,000 to 1) to be a ``match``."""
MATCH_MARGIN = 6.0
"""...and beat the next candidate by at least this many bits (odds of 256 to 1)."""
POSSIBLE_THRESHOLD = 0.0
"""At or above this (even odds) and not a match: ``possible_match``."""
MIN_PRIOR_POPULATION = 1000
"""The prior is one in the node's size, but never more generous than one in this many."""


def bits(m: float, u: float) -> float:
    """The Fellegi-Sunter weight of an agreement pattern: ``log2(m / u)``."""
    return math.log2(m / u)


# --- comparison levels and their weights ------------------------------------------------------


class NameLevel(IntEnum):
    """How two names compare, best first."""

    EXACT = 0  # same letters (spaces and punctuation aside, any order of tokens)
    VARIANT = 1  # listed spellings of one name (Mohammed / Muhammad, Aidan / Aiden)
    PARTIAL = 2  # one is part of the other (Mary / Mary Jane, Smith / Smith-Jones)
    NICKNAME = 3  # short form (Bill / William)
    NICKNAME_AMBIGUOUS = 4  # short form of several names (Sam: Samuel or Samantha)
    TYPO = 5  # one or two keystrokes apart, or Jaro-Winkler >= 0.93
    SIMILAR_NAME = 6  # close in spelling but two different real names (Jack / Jake)
    SIMILAR = 7  # Jaro-Winkler >= 0.85
    DIFFERENT = 8
    MISSING = 9


# Levels at which a name counts as positive evidence that it is the same child.
AGREEING = frozenset({NameLevel.EXACT, NameLevel.VARIANT, NameLevel.PARTIAL, NameLevel.NICKNAME,
                      NameLevel.NICKNAME_AMBIGUOUS, NameLevel.TYPO})
_STRONG = frozenset({NameLevel.EXACT, NameLevel.VARIANT})


class DateLevel(IntEnum):
    EXACT = 0
    SWAPPED = 1  # day and month swapped
    DIGIT = 2  # one digit wrong, or two adjacent digits swapped
    DIFFERENT = 3
    MISSING = 4


class PostcodeLevel(IntEnum):
    EXACT = 0
    NEAR = 1  # one keystroke apart, or the same sector (LS1 4xx)
    DISTRICT = 2  # the same outward code (LS1)
    DIFFERENT = 3
    MISSING = 4


class IdLevel(IntEnum):
    AGREE = 0
    NEAR = 1  # one keystroke apart: impossible for two valid NHS numbers, so a typing error
    DIFFERENT = 2  # differ, but at least one carries no valid check digit
    CONFLICT = 3  # two different valid NHS numbers
    MISSING = 4


@dataclass(frozen=True)
class Weights:
    """The fixed ``m`` probabilities, and weights derived from them, documented in matching.md."""

    # Names: m for exact agreement; u comes from how common the name is in the node.
    name_exact_m: float = 0.88
    name_weight_min: float = 2.0
    name_weight_max: float = 14.0
    variant_penalty: float = 1.0
    partial_penalty: float = 3.0
    nickname: float = bits(0.03, 0.001)  # 4.9
    nickname_ambiguous: float = bits(0.02, 0.002)  # 3.3
    typo: float = bits(0.05, 0.002)  # 4.6
    similar_name: float = 0.0
    similar: float = bits(0.01, 0.03)  # -1.6
    different: float = bits(0.02, 0.97)  # -5.6
    swap_penalty: float = 1.5
    alias_penalty: float = 0.5
    # Date of birth: u is the chance two of the node's children share a birthday.
    dob_exact_m: float = 0.92
    dob_swapped_m: float = 0.015
    dob_digit_m: float = 0.03
    dob_digit_neighbours: float = 30.0  # valid dates one digit away from a date, roughly
    dob_different: float = bits(0.03, 1.0)  # -5.1
    # Postcode: children move, so disagreement is weak evidence.
    postcode_exact_m: float = 0.85
    postcode_weight_max: float = 10.0
    postcode_near: float = 3.0
    postcode_district: float = 0.0
    postcode_different: float = bits(0.12, 1.0)  # -3.1
    sex_agree: float = bits(0.97, 0.5)  # 1.0
    sex_disagree: float = bits(0.02, 0.5)  # -4.6
    nhs_agree: float = 20.0
    upn_agree: float = 18.0
    id_near: float = 6.0
    id_different: float = bits(0.04, 1.0)  # -4.6: an unchecked identifier may be mistyped
    nhs_conflict: float = -20.0
    upn_conflict: float = -8.0


WEIGHTS = Weights()

_FIXED_NAME_WEIGHTS = {
    NameLevel.NICKNAME: WEIGHTS.nickname,
    NameLevel.NICKNAME_AMBIGUOUS: WEIGHTS.nickname_ambiguous,
    NameLevel.TYPO: WEIGHTS.typo,
    NameLevel.SIMILAR_NAME: WEIGHTS.similar_name,
    NameLevel.SIMILAR: WEIGHTS.similar,
    NameLevel.DIFFERENT: WEIGHTS.different,
    NameLevel.MISSING: 0.0,
}
_POSTCODE_WEIGHTS = {
    PostcodeLevel.NEAR: WEIGHTS.postcode_near,
    PostcodeLevel.DISTRICT: WEIGHTS.postcode_district,
    PostcodeLevel.DIFFERENT: WEIGHTS.postcode_different,
    PostcodeLevel.MISSING: 0.0,
}
_NHS_WEIGHTS = {IdLevel.AGREE: WEIGHTS.nhs_agree, IdLevel.NEAR: WEIGHTS.id_near,
                IdLevel.DIFFERENT: WEIGHTS.id_different, IdLevel.CONFLICT: WEIGHTS.nhs_conflict,
                IdLevel.MISSING: 0.0}
_UPN_WEIGHTS = {IdLevel.AGREE: WEIGHTS.upn_agree, IdLevel.NEAR: WEIGHTS.id_near,
                IdLevel.DIFFERENT: WEIGHTS.id_different, IdLevel.CONFLICT: WEIGHTS.upn_conflict,
                IdLevel.MISSING: 0.0}

# Smoothing of the node's own statistics towards these defaults (UK children).
_PSEUDO_PAIRS = 100_000.0
_PSEUDO_RECORDS = 100.0
_DEFAULT_U = {"given": 0.01, "family": 0.003, "dob": 1 / 6570, "postcode": 1 / 2000}


# --- the matcher's answer ---------------------------------------------------------------------


@dataclass(frozen=True)
class MatchResult:
    """The matcher's decision. ``record_id`` is set only when ``status`` is ``match``.

    ``candidates`` counts the records that scored at least ``possible_match``; ``score`` is the
    best candidate's score in bits (``None`` when no record was a candidate at all).
    """

    status: Status
    record_id: str | None = None
    candidates: int = 0
    score: float | None = None
    # The records a ``possible_match`` was undecided between (the node keeps shielded records
    # out of ``possible_match`` answers, see node/policy.py); empty otherwise.
    candidate_ids: tuple[str, ...] = ()


@dataclass(frozen=True)
class Comparison:
    """One candidate compared with a query: the levels, the score and the rules that applied."""

    record_id: str
    given: NameLevel
    family: NameLevel
    swapped: bool
    alias: bool
    dob: DateLevel
    postcode: PostcodeLevel
    nhs: IdLevel
    upn: IdLevel
    score: float
    twin_guard: bool  # could be the twin of the child searched for
    other_child: bool  # identifier agrees, given name and date of birth do not
    nhs_conflict: bool  # two different valid NHS numbers

    @property
    def may_match(self) -> bool:
        """Whether no guard forbids answering ``match`` with this record."""
        return not (self.twin_guard or self.other_child or self.nhs_conflict)


# (score, given level, family level, swapped, alias, query given, record given)
_Alignment = tuple[float, "NameLevel", "NameLevel", bool, bool, str, str]


# --- field comparisons (pure functions) -------------------------------------------------------


def compare_names(query: str, record: str, known: frozenset[str] | None = None) -> NameLevel:
    """Compare two normalised names. ``known`` (given names only) marks real names, so that
    two different real names close in spelling are ``SIMILAR_NAME``, not a ``TYPO``."""
    if not query or not record:
        return NameLevel.MISSING
    if query == record or query.replace(" ", "") == record.replace(" ", ""):
        return NameLevel.EXACT
    if sorted(query.split()) == sorted(record.split()):
        return NameLevel.EXACT
    tq, tr = name_tokens(query), name_tokens(record)
    jq, jr = "".join(tq), "".join(tr)
    if tq == tr or jq == jr or sorted(tq) == sorted(tr):
        return NameLevel.VARIANT
    sq, sr = set(tq), set(tr)
    if sq <= sr or sr <= sq:
        return NameLevel.PARTIAL
    if known is not None:
        for a in tq:
            for b in tr:
                if a != b and nickname_related(a, b) and (sq - {a} <= sr - {b} or sr - {b} <= sq - {a}):
                    if nickname_ambiguous(a, b):
                        return NameLevel.NICKNAME_AMBIGUOUS
                    return NameLevel.NICKNAME
    rq, rr = query.replace(" ", ""), record.replace(" ", "")
    if len(set(rq) ^ set(rr)) > 6 and len(set(jq) ^ set(jr)) > 6:
        # Each keystroke changes at most two letters of the letter sets: 4+ keystrokes apart.
        return NameLevel.DIFFERENT
    d_raw = osa_distance(rq, rr, 3)
    d_canonical = d_raw if (jq, jr) == (rq, rr) else osa_distance(jq, jr, 3)
    if (_typo(d_raw, rq, rr) or _typo(d_canonical, jq, jr)
            or ((len(tq) > 1 or len(tr) > 1) and _token_typo(tq, tr))):
        if known is not None and _different_real_names(tq, tr, known):
            return NameLevel.SIMILAR_NAME
        return NameLevel.TYPO
    if min(d_raw, d_canonical) <= 3 and max(jaro_winkler(jq, jr), jaro_winkler(rq, rr)) >= 0.85:
        if known is not None and _different_real_names(tq, tr, known):
            return NameLevel.SIMILAR_NAME
        return NameLevel.SIMILAR
    return NameLevel.DIFFERENT


def _typo(distance: int, a: str, b: str) -> bool:
    """One keystroke apart (names of three letters or more), or two for five letters or more."""
    shortest = min(len(a), len(b))
    return shortest >= 3 and (distance <= 1 or (distance == 2 and shortest >= 5))


def _token_typo(tq: tuple[str, ...], tr: tuple[str, ...]) -> bool:
    """One token of a multi-part name is a typo of a token of the other, the rest agreeing."""
    if len(tq) == 1 and len(tr) == 1:
        return False
    sq, sr = set(tq), set(tr)
    for a in tq:
        for b in tr:
            if a != b and len(a) >= 4 and len(b) >= 4 and osa_distance(a, b, 1) <= 1:
                rest_q, rest_r = sq - {a}, sr - {b}
                if rest_q <= rest_r or rest_r <= rest_q:
                    return True
    return False


def _different_real_names(tq: tuple[str, ...], tr: tuple[str, ...], known: frozenset[str]) -> bool:
    only_q = [t for t in tq if t not in tr]
    only_r = [t for t in tr if t not in tq]
    return bool(only_q) and bool(only_r) and all(t in known for t in only_q + only_r)


def compare_dates(query: date | None, record: date | None) -> DateLevel:
    if query is None or record is None:
        return DateLevel.MISSING
    if query == record:
        return DateLevel.EXACT
    if query.year == record.year and query.day == record.month and query.month == record.day:
        return DateLevel.SWAPPED
    if _one_digit_apart(query, record):
        return DateLevel.DIGIT
    return DateLevel.DIFFERENT


def _one_digit_apart(a: date, b: date) -> bool:
    """YYYYMMDD forms differ in one digit, or by two adjacent digits swapped."""
    x, y = f"{a.year:04d}{a.month:02d}{a.day:02d}", f"{b.year:04d}{b.month:02d}{b.day:02d}"
    diff = [i for i in range(8) if x[i] != y[i]]
    if len(diff) == 1:
        return True
    return (len(diff) == 2 and diff[1] == diff[0] + 1
            and x[diff[0]] == y[diff[1]] and x[diff[1]] == y[diff[0]])


def compare_postcodes(query: str | None, record: str | None) -> PostcodeLevel:
    if not query or not record:
        return PostcodeLevel.MISSING
    if query == record:
        return PostcodeLevel.EXACT
    q_out, _, q_in = query.partition(" ")
    r_out, _, r_in = record.partition(" ")
    if q_in and r_in and q_out == r_out:
        return PostcodeLevel.NEAR if q_in[0] == r_in[0] else PostcodeLevel.DISTRICT
    if within_one_edit(query, record):
        return PostcodeLevel.NEAR
    return PostcodeLevel.DIFFERENT


def _valid_nhs(number: str) -> bool:
    if len(number) != 10 or not number.isdigit():
        return False
    check = nhs_check_digit(number[:9])
    return check is not None and check == int(number[9])


def compare_nhs(query: str | None, record: str | None) -> IdLevel:
    if not query or not record:
        return IdLevel.MISSING
    if query == record:
        return IdLevel.AGREE
    if _valid_nhs(query) and _valid_nhs(record):
        return IdLevel.CONFLICT
    return IdLevel.NEAR if within_one_edit(query, record) else IdLevel.DIFFERENT


def compare_upn(query: str | None, record: str | None) -> IdLevel:
    if not query or not record:
        return IdLevel.MISSING
    if query == record:
        return IdLevel.AGREE
    if within_one_edit(query, record):
        return IdLevel.NEAR
    return IdLevel.CONFLICT


# --- the index --------------------------------------------------------------------------------

_IDX_BITS = 23  # up to 8 million records
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


def _split_alias(alias: str) -> list[tuple[str, str]]:
    parts = alias.split()
    if len(parts) < 2:
        return [("", alias)] if parts else []
    splits = [(" ".join(parts[:-1]), parts[-1])]
    if len(parts) > 2:
        splits.append((parts[0], " ".join(parts[1:])))
    return splits


def _name_variants(child: Child) -> list[tuple[str, str]]:
    variants = [(child.given_name, child.family_name)]
    for alias in child.other_names:
        variants.extend(_split_alias(alias))
    return variants


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


class MatchIndex:
    """In-memory indexes over the children a node may return, and the matcher that uses them."""

    def __init__(self, children: Iterable[Child]) -> None:
        self.children: dict[str, Child] = {}
        self._records: list[Child] = []
        packed: list[int] = []
        given_counts: Counter[str] = Counter()
        family_counts: Counter[str] = Counter()
        dob_counts: Counter[date] = Counter()
        postcode_counts: Counter[str] = Counter()
        for child in children:
            if child.record_id in self.children:
                raise ValueError(f"record_id: {child.record_id!r} appears twice")
            idx = len(self._records)
            if idx >= 1 << _IDX_BITS:
                raise ValueError(f"a node may hold at most {1 << _IDX_BITS} children")
            self.children[child.record_id] = child
            self._records.append(child)
            given_counts["".join(name_tokens(child.given_name))] += 1
            family_counts["".join(name_tokens(child.family_name))] += 1
            dob: date | None = child.date_of_birth
            if dob is not None:
                dob_counts[dob] += 1
            if child.postcode:
                postcode_counts[child.postcode] += 1
            packed.extend((key << _IDX_BITS) | idx for key in set(self._keys_of(child)))
        self._packed = array("q", sorted(packed))
        del packed
        n = len(self._records)
        self._n = n
        self._given_counts = given_counts
        self._family_counts = family_counts
        self._postcode_counts = postcode_counts
        self._u_given = _pair_rate(given_counts, n, _DEFAULT_U["given"])
        self._u_family = _pair_rate(family_counts, n, _DEFAULT_U["family"])
        self._u_postcode = _pair_rate(postcode_counts, n, _DEFAULT_U["postcode"])
        self._u_dob = _pair_rate(dob_counts, n, _DEFAULT_U["dob"])
        self._prior = -math.log2(max(n, MIN_PRIOR_POPULATION))
        names_seen_twice = {name for name, count in given_counts.items() if count >= 2}
        self._known = known_given_names() | frozenset(names_seen_twice)
        self._name_cache: dict[tuple[str, str, bool], NameLevel] = {}
        self._name_weights: dict[tuple[NameLevel, str, bool], float] = {}
        self._postcode_weights: dict[str, float] = {}
        w = WEIGHTS
        self._dob_weights = {
            DateLevel.EXACT: bits(w.dob_exact_m, self._u_dob),
            DateLevel.SWAPPED: bits(w.dob_swapped_m, self._u_dob),
            DateLevel.DIGIT: bits(w.dob_digit_m, self._u_dob * w.dob_digit_neighbours),
            DateLevel.DIFFERENT: w.dob_different,
            DateLevel.MISSING: 0.0,
        }
        self._deletions: dict[str, set[str]] = {}
        for name in self._known:
            for variant in _deletions(name):
                self._deletions.setdefault(variant, set()).add(name)
        self._today_year = date.today().year

    def __len__(self) -> int:
        return len(self.children)

    # --- keys ---------------------------------------------------------------------------------

    @staticmethod
    def _key(*parts: object) -> int:
        return hash(parts) & _KEY_MASK

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
        for given, family in _name_variants(child):
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

    def _candidates(self, query: Identity) -> set[int]:
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

    # --- scoring ------------------------------------------------------------------------------

    def _name_level(self, query: str, record: str, given: bool) -> NameLevel:
        cache_key = (query, record, given)
        level = self._name_cache.get(cache_key)
        if level is None:
            level = compare_names(query, record, self._known if given else None)
            if len(self._name_cache) > 200_000:
                self._name_cache.clear()
            self._name_cache[cache_key] = level
        return level

    def _tf_weight(self, counts: Counter[str], value: str, pair_rate: float, m: float,
                   cap: float) -> float:
        """Weight of exact agreement on ``value``: rarer values are stronger evidence."""
        others = max(counts.get(value, 0) - 1, 0)
        u = (others + _PSEUDO_RECORDS * pair_rate) / (max(self._n - 1, 0) + _PSEUDO_RECORDS)
        return min(max(bits(m, u), WEIGHTS.name_weight_min), cap)

    def _postcode_weight(self, postcode: str) -> float:
        """Weight of exact agreement on a postcode: how many of the node's children live there."""
        weight = self._postcode_weights.get(postcode)
        if weight is None:
            others = max(self._postcode_counts.get(postcode, 0) - 1, 0)
            u = (others + _PSEUDO_RECORDS * self._u_postcode) / (max(self._n - 1, 0) + _PSEUDO_RECORDS)
            weight = min(bits(WEIGHTS.postcode_exact_m, u), WEIGHTS.postcode_weight_max)
            self._postcode_weights[postcode] = weight
        return weight

    def _name_weight(self, level: NameLevel, value: str, given: bool) -> float:
        fixed = _FIXED_NAME_WEIGHTS.get(level)
        if fixed is not None:
            return fixed
        cache_key = (level, value, given)
        weight = self._name_weights.get(cache_key)
        if weight is None:
            weight = self._tf_name_weight(level, value, given)
            if len(self._name_weights) > 200_000:
                self._name_weights.clear()
            self._name_weights[cache_key] = weight
        return weight

    def _tf_name_weight(self, level: NameLevel, value: str, given: bool) -> float:
        w = WEIGHTS
        if level is NameLevel.MISSING:
            return 0.0
        if level in (NameLevel.EXACT, NameLevel.VARIANT, NameLevel.PARTIAL):
            joined = "".join(name_tokens(value))
            if given:
                exact = self._tf_weight(self._given_counts, joined, self._u_given, w.name_exact_m,
                                        w.name_weight_max)
            else:
                exact = self._tf_weight(self._family_counts, joined, self._u_family,
                                        w.name_exact_m, w.name_weight_max)
            if level is NameLevel.VARIANT:
                return exact - w.variant_penalty
            if level is NameLevel.PARTIAL:
                return max(exact - w.partial_penalty, w.typo)
            return exact
        return _FIXED_NAME_WEIGHTS[level]

    def _names(self, qg: str, qf: str, child: Child) -> _Alignment:
        """The best alignment of the query's names with the record's names and aliases."""
        level, weight = self._name_level, self._name_weight
        rg, rf = child.given_name, child.family_name
        gl, fl = level(qg, rg, True), level(qf, rf, False)
        best: _Alignment = (weight(gl, rg, True) + weight(fl, rf, False), gl, fl, False, False, qg, rg)
        if gl in _STRONG and fl in _STRONG and not child.other_names:
            return best  # nothing else can do better
        for n, (rg, rf) in enumerate(_name_variants(child)):
            alias = n > 0
            penalty = WEIGHTS.alias_penalty if alias else 0.0
            if alias:
                gl, fl = level(qg, rg, True), level(qf, rf, False)
                score = weight(gl, rg, True) + weight(fl, rf, False) - penalty
                if score > best[0]:
                    best = (score, gl, fl, False, True, qg, rg)
            if qg and qf and rg and rf:
                sg = level(qg, rf, False)
                if sg not in AGREEING:
                    continue
                sf = level(qf, rg, False)
                if sf in AGREEING:
                    swapped = (weight(sg, rf, False) + weight(sf, rg, True)
                               - WEIGHTS.swap_penalty - penalty)
                    if swapped > best[0]:
                        best = (swapped, sf, sg, True, alias, qf, rg)
        return best

    def compare(self, query: Identity, record_id: str) -> Comparison:
        """Compare the query with one of the node's records (for tests and explanations)."""
        return self._compare(query, self.children[record_id])

    def _compare(self, query: Identity, child: Child) -> Comparison:
        w = WEIGHTS
        score = self._prior
        name_score, given, family, swapped, alias, q_given, r_given = self._names(
            query.given_name or "", query.family_name or "", child)
        score += name_score

        dob_level = compare_dates(query.date_of_birth, child.date_of_birth)
        score += self._dob_weights[dob_level]

        pc_level = compare_postcodes(query.postcode, child.postcode)
        if pc_level is PostcodeLevel.EXACT:
            assert child.postcode is not None
            score += self._postcode_weight(child.postcode)
        else:
            score += _POSTCODE_WEIGHTS[pc_level]

        sex_agrees = False
        if query.sex in ("F", "M") and child.sex in ("F", "M"):
            sex_agrees = query.sex == child.sex
            score += w.sex_agree if sex_agrees else w.sex_disagree

        nhs = upn = IdLevel.MISSING
        if query.nhs_number and child.nhs_number:
            nhs = compare_nhs(query.nhs_number, child.nhs_number)
            score += _NHS_WEIGHTS[nhs]
        if query.upn and child.upn:
            upn = compare_upn(query.upn, child.upn)
            score += _UPN_WEIGHTS[upn]

        # Twins share family name and date of birth; only the given name tells them apart.
        twin_like = (
            given is not NameLevel.MISSING
            and family in (NameLevel.EXACT, NameLevel.VARIANT, NameLevel.PARTIAL, NameLevel.TYPO)
            and dob_level in (DateLevel.EXACT, DateLevel.SWAPPED, DateLevel.DIGIT)
            and not self._given_tells_apart(given, q_given, r_given, sex_agrees)
        )
        id_agrees = nhs in (IdLevel.AGREE, IdLevel.NEAR) or upn in (IdLevel.AGREE, IdLevel.NEAR)
        # A sibling's identifier typed by mistake: the identifier agrees, the child does not.
        other_child = (given in (NameLevel.DIFFERENT, NameLevel.SIMILAR_NAME)
                       and dob_level is DateLevel.DIFFERENT)
        return Comparison(
            record_id=child.record_id, given=given, family=family, swapped=swapped, alias=alias,
            dob=dob_level, postcode=pc_level, nhs=nhs, upn=upn, score=score,
            twin_guard=twin_like and not id_agrees, other_child=other_child,
            nhs_conflict=nhs is IdLevel.CONFLICT,
        )

    def _given_tells_apart(self, level: NameLevel, query: str, record: str, sex_agrees: bool) -> bool:
        """Whether the given names agree well enough to tell this child from a twin."""
        if level in (NameLevel.EXACT, NameLevel.VARIANT, NameLevel.PARTIAL, NameLevel.NICKNAME):
            return True
        if level is NameLevel.NICKNAME_AMBIGUOUS:
            return sex_agrees  # Sam for Samuel or Samantha: only if the sex says which
        if level is NameLevel.TYPO:
            return not self._ambiguous_typo(query, record)
        return False

    def _ambiguous_typo(self, query: str, record: str) -> bool:
        """The query's given name is as close to another real name as to the record's (Jakc:
        Jack or Jake?), so it cannot tell one twin from the other.

        Closeness is ``typo_cost``: an edit touching the first letter counts two, so ``rily``
        (a letter dropped from Riley) is not taken for ``lily`` (the first letter changed)."""
        record_tokens = name_tokens(record)
        for token in set(name_tokens(query)) - set(record_tokens):
            own = min((typo_cost(token, r) for r in record_tokens), default=0)
            for near in self._near_known(token):
                if near in record_tokens:
                    continue
                if any(nickname_related(near, r) or is_variant(near, r) for r in record_tokens):
                    continue
                if typo_cost(token, near) <= own:
                    return True
        return False

    def _near_known(self, token: str) -> set[str]:
        """Real given names at most one keystroke from ``token`` (a deletion-neighbourhood index)."""
        found: set[str] = set()
        for variant in _deletions(token):
            found.update(self._deletions.get(variant, ()))
        return {name for name in found if osa_distance(name, token, 1) <= 1}

    # --- the decision -------------------------------------------------------------------------

    def ranked(self, query: Identity) -> list[Comparison]:
        """Every candidate for the query, compared and ranked best first."""
        records = self._records
        compared = [self._compare(query, records[i]) for i in self._candidates(query)]
        compared.sort(key=lambda c: (-c.score, c.record_id))
        return compared

    def match(self, query: Identity) -> MatchResult:
        ranked = self.ranked(query)
        if not ranked:
            return MatchResult(Status.NO_MATCH)
        best = ranked[0]
        plausible = sum(1 for c in ranked if c.score >= POSSIBLE_THRESHOLD)
        if best.score < POSSIBLE_THRESHOLD:
            return MatchResult(Status.NO_MATCH, None, 0, best.score)
        runner_up = ranked[1].score if len(ranked) > 1 else -math.inf
        if (best.may_match and best.score >= MATCH_THRESHOLD
                and best.score - runner_up >= MATCH_MARGIN):
            return MatchResult(Status.MATCH, best.record_id, plausible, best.score)
        return MatchResult(Status.POSSIBLE_MATCH, None, plausible, best.score,
                           tuple(c.record_id for c in ranked if c.score >= POSSIBLE_THRESHOLD))


def _deletions(word: str) -> set[str]:
    """The word and every string one deletion away from it."""
    return {word} | {word[:i] + word[i + 1:] for i in range(len(word))}


def _pair_rate(counts: Counter[Any], n: int, default: float) -> float:
    """The chance two different records agree on a field, smoothed towards ``default``."""
    pairs = n * (n - 1) / 2
    agreeing = sum(c * (c - 1) / 2 for c in counts.values())
    return (agreeing + _PSEUDO_PAIRS * default) / (pairs + _PSEUDO_PAIRS)
