"""Comparing a query with one record, field by field, and weighing the evidence in bits.

Each field compares at a level (``NameLevel``, ``DateLevel``, ``PostcodeLevel``, ``IdLevel``),
best first, and each level carries a Fellegi-Sunter weight ``log2(m / u)``: ``m`` is how often
the field agrees at that level for the same child (fixed here, in ``Weights``), ``u`` how often
it agrees by chance for a different child. Where ``u`` depends on the node's own records (how
common a name or postcode is, how spread the dates of birth are) this module gives the smoothing
(``pair_rate``, ``value_rate``); ``node.matching`` keeps the counts. Plain functions: no
records, no state.

See ``docs/matching.md`` for the weights and why.
"""

from __future__ import annotations

import math
from collections import Counter
from dataclasses import dataclass
from datetime import date
from enum import IntEnum
from typing import Any

from federation.identity import nhs_check_digit
from federation.names import (
    jaro_winkler,
    name_tokens,
    nickname_ambiguous,
    nickname_related,
    osa_distance,
    within_one_edit,
)
from node.store import Child


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
    MIDDLE = 10  # the first names differ; the names agree only through a middle name


# Levels at which a name counts as positive evidence that it is the same child.
AGREEING = frozenset({NameLevel.EXACT, NameLevel.VARIANT, NameLevel.PARTIAL, NameLevel.NICKNAME,
                      NameLevel.NICKNAME_AMBIGUOUS, NameLevel.TYPO})
STRONG = frozenset({NameLevel.EXACT, NameLevel.VARIANT})
# Levels at which a typed given name is compatible with the record's, so that an agreeing
# identifier may lift the twin guard (a missing given name is compatible too).
COMPATIBLE = frozenset({NameLevel.EXACT, NameLevel.VARIANT, NameLevel.PARTIAL, NameLevel.NICKNAME,
                        NameLevel.NICKNAME_AMBIGUOUS, NameLevel.TYPO, NameLevel.MISSING})


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
    # The query's first name is the record's middle name (or the other way round): a child may
    # be known by a middle name, but so is a sibling given the same name first.
    middle: float = bits(0.02, 0.005)  # 2.0
    # Both sides give middle names and they agree (first names agreeing too): m is how often a
    # child's middle names are typed as held; u how many children with middle names share them.
    middle_agree_m: float = 0.9
    middle_weight_max: float = 6.0
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

FIXED_NAME_WEIGHTS = {
    NameLevel.NICKNAME: WEIGHTS.nickname,
    NameLevel.NICKNAME_AMBIGUOUS: WEIGHTS.nickname_ambiguous,
    NameLevel.TYPO: WEIGHTS.typo,
    NameLevel.SIMILAR_NAME: WEIGHTS.similar_name,
    NameLevel.SIMILAR: WEIGHTS.similar,
    NameLevel.DIFFERENT: WEIGHTS.different,
    NameLevel.MISSING: 0.0,
    NameLevel.MIDDLE: WEIGHTS.middle,
}
POSTCODE_WEIGHTS = {
    PostcodeLevel.NEAR: WEIGHTS.postcode_near,
    PostcodeLevel.DISTRICT: WEIGHTS.postcode_district,
    PostcodeLevel.DIFFERENT: WEIGHTS.postcode_different,
    PostcodeLevel.MISSING: 0.0,
}
NHS_WEIGHTS = {IdLevel.AGREE: WEIGHTS.nhs_agree, IdLevel.NEAR: WEIGHTS.id_near,
               IdLevel.DIFFERENT: WEIGHTS.id_different, IdLevel.CONFLICT: WEIGHTS.nhs_conflict,
               IdLevel.MISSING: 0.0}
UPN_WEIGHTS = {IdLevel.AGREE: WEIGHTS.upn_agree, IdLevel.NEAR: WEIGHTS.id_near,
               IdLevel.DIFFERENT: WEIGHTS.id_different, IdLevel.CONFLICT: WEIGHTS.upn_conflict,
               IdLevel.MISSING: 0.0}

# Smoothing of the node's own statistics towards these defaults (UK children).
_PSEUDO_PAIRS = 100_000.0
_PSEUDO_RECORDS = 100.0
DEFAULT_U = {"given": 0.01, "family": 0.003, "dob": 1 / 6570, "postcode": 1 / 2000}


# --- one candidate compared -------------------------------------------------------------------


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
    # The score without the identifiers' weights: how well the typed demographics fit.
    demographic_score: float = 0.0
    # An agreeing identifier lifted the twin guard (allowed only if no other record fits the
    # typed demographics as well; ``MatchIndex.match`` checks that across candidates).
    identifier_lifted: bool = False
    # Another date of birth (not a typo of the record's), no agreeing identifier and not the same
    # home: a namesake born on another day looks exactly like this.
    namesake: bool = False
    # A wholly different given name, or another date of birth (not a typo of it), another home
    # typed (not the same nor next door), no agreeing identifier. A cousin or a namesake looks
    # exactly like this; it is not even a ``possible_match``.
    cousin: bool = False
    # Neither postcode nor sex typed, no identifier agrees, and the evidence would not reach
    # the match threshold against every child in England: a child of the same names born the
    # same day elsewhere could be the one searched for.
    unplaced: bool = False

    @property
    def may_match(self) -> bool:
        """Whether no guard forbids answering ``match`` with this record."""
        return not (self.twin_guard or self.other_child or self.nhs_conflict or self.namesake
                    or self.unplaced)


# --- field comparisons (pure functions) -------------------------------------------------------


def split_given(given: str, middle: str = "") -> tuple[str, str]:
    """(first name, middle names) of a normalised given name. With ``middle`` given, the whole
    of ``given`` is the first name (Lily Rose); without, its first token is and the rest are
    middle names."""
    if middle:
        return given, middle
    first, _, rest = given.partition(" ")
    return first, rest


def compare_given(q_first: str, q_middle: str, r_first: str, r_middle: str,
                  known: frozenset[str]) -> NameLevel:
    """Compare given names where the first name is what tells children apart.

    Agreement that rests on a middle name alone (the query's first name is the record's middle
    name, or the other way round) is ``MIDDLE``: weaker evidence, and never enough to tell a
    child from a sibling given that name first. Two records with the same first name and
    different middle names are ``PARTIAL``.
    """
    if not q_first or not r_first:
        return NameLevel.MISSING
    q_full = f"{q_first} {q_middle}" if q_middle else q_first
    r_full = f"{r_first} {r_middle}" if r_middle else r_first
    full = compare_names(q_full, r_full, known)
    if not q_middle and not r_middle:
        return full
    first = compare_names(q_first, r_first, known)
    if full in (NameLevel.EXACT, NameLevel.VARIANT):
        if first in AGREEING or q_full.replace(" ", "") == r_full.replace(" ", ""):
            return full  # the same names, spaces aside (Ja Xson / Jaxson)
        # The same names in another order, the first names differing (Leo Muhammad typed,
        # Muhammad Leo held): a brother given the same two names the other way round looks
        # like this, so the agreement rests on a middle name.
        return NameLevel.MIDDLE
    if first in (NameLevel.EXACT, NameLevel.VARIANT):
        return full if full in (NameLevel.EXACT, NameLevel.VARIANT, NameLevel.PARTIAL) else (
            NameLevel.PARTIAL)
    if first in AGREEING:
        # The first names decide: Evie for Evie Evelyn is a nickname, not part of the name.
        return max(full, first) if full in AGREEING else first
    joined = compare_names(q_full.replace(" ", ""), r_full.replace(" ", ""), known)
    if joined is NameLevel.TYPO:
        return joined  # one name with a space typed into it (Ja Xon / Jaxson)
    return NameLevel.MIDDLE if full in AGREEING else full



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


# --- names a record is known by, and the node's statistics -----------------------------------


def _split_alias(alias: str) -> list[tuple[str, str]]:
    parts = alias.split()
    if len(parts) < 2:
        return [("", alias)] if parts else []
    splits = [(" ".join(parts[:-1]), parts[-1])]
    if len(parts) > 2:
        splits.append((parts[0], " ".join(parts[1:])))
    return splits


def name_variants(child: Child) -> list[tuple[str, str]]:
    """(given, family) of the main name, then of each alias (split both ways when it has 3+ parts)."""
    variants = [(child.given_name, child.family_name)]
    for alias in child.other_names:
        variants.extend(_split_alias(alias))
    return variants


def pair_rate(counts: Counter[Any], n: int, default: float) -> float:
    """The chance two different records agree on a field, smoothed towards ``default``."""
    pairs = n * (n - 1) / 2
    agreeing = sum(c * (c - 1) / 2 for c in counts.values())
    return (agreeing + _PSEUDO_PAIRS * default) / (pairs + _PSEUDO_PAIRS)


def value_rate(count: int, n: int, rate: float) -> float:
    """The chance a different one of ``n`` records shares a value that ``count`` of them hold,
    smoothed towards ``rate`` (the field's ``pair_rate``): rarer values are stronger evidence."""
    others = max(count - 1, 0)
    return (others + _PSEUDO_RECORDS * rate) / (max(n - 1, 0) + _PSEUDO_RECORDS)
