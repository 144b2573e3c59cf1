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

Rules sit above the arithmetic, because a wrong match discloses another child's contacts:

- **Conflicting NHS numbers** (two different numbers that both pass the modulus 11 check) never
  ``match``: a typing error cannot turn one valid number into another.
- **Twins**: when family name and date of birth agree but the given names are different names
  (not a typo, nickname, listed variant or the same first name), the candidate cannot be a
  ``match``. A name agreeing only through a middle name, or a short form registered as a name
  in its own right (Freddie), does not tell twins apart either. An agreeing identifier lifts
  this only when the typed given name fits the record and no other record fits the typed
  demographics as well. A node may hold one twin and be asked about the other. A name that
  only resembles the record's, typed with the other sex, is a boy-girl co-twin. Twins are often
  given one first name and told apart by the next (Joao Pedro, Joao Lucas; Muhammad Hassan,
  Muhammad Hussain): when both sides give a next name, or the first is a prefix such as
  Muhammad, the next name must agree.
  Two different romanised Chinese given names (Zihan, Zihao) are two names, not a typo. Kaur
  and Singh as family names are a Sikh girl and boy, whose given names may be the same.
- **Another held child's identifier**: a record with no NHS number (or UPN) to compare is not a
  ``match`` when the number typed is another held record's.
- **Namesakes and siblings**: another date of birth (not a typo of it) never matches without an
  agreeing identifier or the same home, and at the same home only with given names a brother or
  sister could not share (not Muhammad alone); a different given name and date of birth never
  match.
- **Cousins and namesakes elsewhere** are not even ``possible_match``: another given name or
  another date of birth, with another home typed and no agreeing identifier.
- **Names and date of birth alone** (neither postcode nor sex, no agreeing identifier) match only
  when the evidence would reach the threshold against every child in England
  (``NATIONAL_POPULATION``): common names born on one day are ``possible_match``.

Candidates come from ``node.candidates``; the field comparisons and their weights from
``node.comparison``. This module keeps the node's statistics, scores candidates with them and
decides. See ``docs/matching.md`` for the weights, thresholds and measured results.
"""

from __future__ import annotations

import copy
import math
import operator
from collections import Counter
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from datetime import date
from enum import Enum

from federation.identity import Identity
from federation.names import (
    chinese_family,
    chinese_syllables,
    is_variant,
    known_given_names,
    name_tokens,
    nickname_formals,
    nickname_related,
    osa_distance,
    registered_given_names,
    registered_sex,
    typo_cost,
)
from federation.protocol import Status
from node.candidates import MAX_RECORDS, CandidateIndex, CandidateOverlay
from node.comparison import (
    AGREEING,
    COMPATIBLE,
    DEFAULT_U,
    FIXED_NAME_WEIGHTS,
    NHS_WEIGHTS,
    POSTCODE_WEIGHTS,
    STRONG,
    UPN_WEIGHTS,
    WEIGHTS,
    Comparison,
    DateLevel,
    IdLevel,
    NameLevel,
    PostcodeLevel,
    bits,
    compare_dates,
    compare_given,
    compare_names,
    compare_nhs,
    compare_postcodes,
    compare_upn,
    name_variants,
    pair_rate,
    split_given,
    value_rate,
)
from node.store import Child

_FIELD = Child._fields.index
_GIVEN_AND_MIDDLE = operator.itemgetter(_FIELD("given_name"), _FIELD("middle_names"))
_GIVEN_AND_SEX = operator.itemgetter(_FIELD("given_name"), _FIELD("sex"))
_GIVEN_AND_FAMILY = operator.itemgetter(_FIELD("given_name"), _FIELD("family_name"))
_FAMILY = operator.itemgetter(_FIELD("family_name"))
_DATE_OF_BIRTH = operator.itemgetter(_FIELD("date_of_birth"))
_POSTCODE = operator.itemgetter(_FIELD("postcode"))

__all__ = [
    "MATCH_MARGIN",
    "MATCH_THRESHOLD",
    "MIN_PRIOR_POPULATION",
    "NATIONAL_POPULATION",
    "POSSIBLE_THRESHOLD",
    "Comparison",
    "MatchIndex",
    "MatchResult",
    "Statistics",
]

# --- thresholds (bits of posterior evidence; see docs/matching.md) ----------------------------

MATCH_THRESHOLD = 10.0
"""A candidate must score at least this (odds of about 4,000 to 1) to be a ``match``."""
MATCH_MARGIN = 6.0
"""...and beat the next candidate by at least this many bits (odds of 256 to 1)."""
POSSIBLE_THRESHOLD = 0.0
"""At or above this (even odds) and not a match: ``possible_match``."""
_TWIN_FAMILY = frozenset({NameLevel.EXACT, NameLevel.VARIANT, NameLevel.PARTIAL, NameLevel.TYPO})
# Given-name levels at which the first names agree (so middle names may add evidence).
_FIRST_AGREES = frozenset({NameLevel.EXACT, NameLevel.VARIANT, NameLevel.PARTIAL,
                           NameLevel.NICKNAME, NameLevel.NICKNAME_AMBIGUOUS, NameLevel.TYPO})
# Given-name levels at which the first names are one name (spelling and middle names aside).
_SAME_FIRST_NAME = frozenset({NameLevel.EXACT, NameLevel.VARIANT, NameLevel.PARTIAL, NameLevel.MISSING})
NAME_SEX_EVIDENCE = 3
"""An ambiguous typo's other name counts as a name of the other sex only when the node gives it
to at least this many children of that sex and to none of the query's (one or two records may
be a slip, or a rare name given to either sex)."""
MIN_PRIOR_POPULATION = 1000
"""The prior is one in the node's size, but never more generous than one in this many."""
NATIONAL_POPULATION = 12_000_000
"""Children aged 0-17 in England (ONS mid-year population estimates: about 12.0 million). A
search that gives neither postcode nor sex (nor an agreeing identifier) says nothing about
where or who beyond names and date of birth: its evidence must reach the match threshold
against this many children, not only the node's, so a child of the same names born the same
day elsewhere in England is unlikely."""


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
class Statistics:
    """What the matcher counts over the records of a full build: how common each name, date of
    birth and postcode is. Saved with the index (``node.snapshot``), so a restart does not count
    again."""

    given: Counter[str]
    first: Counter[str]
    first_sex: Counter[tuple[str, str]]
    first_family: set[str]
    family: Counter[str]
    dob: Counter[date]
    postcode: Counter[str]
    middle: Counter[str]

    @classmethod
    def count(cls, records: Iterable[Child]) -> Statistics:
        """Count the records' values. Each field's raw values are counted first (by
        ``Counter``, in C), and a name's keys worked out once per distinct name: 1.1 -> 0.6 s at
        350,000 children, against a loop that normalised every record's names."""
        records = records if isinstance(records, list) else list(records)
        raw_given = Counter(map(_GIVEN_AND_MIDDLE, records))
        raw_family = Counter(map(_FAMILY, records))
        first_of = {given_name: next(iter(name_tokens(given_name)), "")  # a given name: its first token
                    for given_name in {given_name for given_name, _ in raw_given}}
        family_key = {name: "".join(name_tokens(name)) for name in raw_family}
        given: Counter[str] = Counter()
        first: Counter[str] = Counter()
        middle_counts: Counter[str] = Counter()
        for (given_name, middle_names), n in raw_given.items():
            first_name, middle = split_given(given_name, middle_names)
            given["".join(name_tokens(first_name))] += n
            if middle:
                middle_counts["".join(sorted(name_tokens(middle)))] += n
            first[first_of[given_name]] += n
        family: Counter[str] = Counter()
        for name, n in raw_family.items():
            family[family_key[name]] += n
        first_sex: Counter[tuple[str, str]] = Counter()
        for (given_name, sex), n in Counter(map(_GIVEN_AND_SEX, records)).items():
            if sex in ("F", "M"):
                first_sex[(first_of[given_name], sex)] += n
        first_family = {f"{first_of[given_name]}|{family_key[family_name]}"
                        for given_name, family_name in set(map(_GIVEN_AND_FAMILY, records))}
        dob_counts: Counter[date] = Counter(filter(None, map(_DATE_OF_BIRTH, records)))
        postcode: Counter[str] = Counter(filter(None, map(_POSTCODE, records)))
        return cls(given, first, first_sex, first_family, family, dob_counts, postcode, middle_counts)

    def to_json(self) -> dict[str, object]:
        """A JSON-ready form (dates as ordinals), for the saved index."""
        return {"given": self.given, "first": self.first,
                "first_sex": [[name, sex, n] for (name, sex), n in self.first_sex.items()],
                "first_family": sorted(self.first_family), "family": self.family,
                "dob": [[d.toordinal(), n] for d, n in self.dob.items()], "postcode": self.postcode,
                "middle": self.middle}

    @classmethod
    def from_json(cls, data: object) -> Statistics:
        """The statistics ``to_json`` gave; ``ValueError`` for anything else."""
        def counter(value: object) -> Counter[str]:
            if not isinstance(value, dict) or not all(
                    isinstance(k, str) and type(v) is int for k, v in value.items()):
                raise ValueError("statistics: expected an object of counts")
            return Counter(value)

        def rows(value: object, width: int) -> list[list[object]]:
            if not isinstance(value, list) or not all(
                    isinstance(r, list) and len(r) == width for r in value):
                raise ValueError(f"statistics: expected rows of {width}")
            return value

        if not isinstance(data, dict):
            raise ValueError("statistics: expected an object")
        first_sex: Counter[tuple[str, str]] = Counter()
        for name, sex, n in rows(data.get("first_sex"), 3):
            if not isinstance(name, str) or not isinstance(sex, str) or type(n) is not int:
                raise ValueError("statistics: first_sex: expected [name, sex, count]")
            first_sex[(name, sex)] = n
        dob_counts: Counter[date] = Counter()
        for ordinal, n in rows(data.get("dob"), 2):
            if type(ordinal) is not int or type(n) is not int:
                raise ValueError("statistics: dob: expected [ordinal, count]")
            dob_counts[date.fromordinal(ordinal)] = n
        first_family = data.get("first_family")
        if not isinstance(first_family, list) or not all(isinstance(v, str) for v in first_family):
            raise ValueError("statistics: first_family: expected a list of names")
        return cls(counter(data.get("given")), counter(data.get("first")), first_sex, set(first_family),
                   counter(data.get("family")), dob_counts, counter(data.get("postcode")),
                   counter(data.get("middle")))


# (score, given level, family level, swapped, alias, query given, record given)
_Alignment = tuple[float, "NameLevel", "NameLevel", bool, bool, str, str]


class MatchIndex:
    """In-memory indexes over the children a node may return, and the matcher that uses them."""

    def __init__(self, children: Iterable[Child], *, candidates: CandidateIndex | None = None,
                 statistics: Statistics | None = None) -> None:
        """``candidates``: keys already packed for these children in this order, and
        ``statistics``: what was counted over them (both from a saved index)."""
        self._records: list[Child] = list(children)
        if len(self._records) > MAX_RECORDS:
            raise ValueError(f"a node may hold at most {MAX_RECORDS} children")
        self.children: dict[str, Child] = {c.record_id: c for c in self._records}
        if len(self.children) != len(self._records):
            counts = Counter(c.record_id for c in self._records)
            twice = next(record_id for record_id, n in counts.items() if n > 1)
            raise ValueError(f"record_id: {twice!r} appears twice")
        if statistics is None:
            statistics = Statistics.count(self._records)
        self.statistics = statistics
        given_counts = statistics.given
        first_counts = statistics.first
        first_sex_counts = statistics.first_sex
        first_family = statistics.first_family
        family_counts = statistics.family
        dob_counts = statistics.dob
        postcode_counts = statistics.postcode
        middle_counts = statistics.middle
        self._candidates: CandidateIndex | CandidateOverlay = (
            candidates if candidates is not None else CandidateIndex(self._records))
        self._position_map: dict[str, int] | None = None
        n = len(self._records)
        self._n = n
        self._given_counts = given_counts
        self._family_counts = family_counts
        self._postcode_counts = postcode_counts
        self._middle_counts = middle_counts
        self._with_middle = sum(middle_counts.values())
        self._u_middle = pair_rate(middle_counts, self._with_middle, DEFAULT_U["given"])
        self._middle_weights: dict[str, float] = {}
        self._u_given = pair_rate(given_counts, n, DEFAULT_U["given"])
        self._u_family = pair_rate(family_counts, n, DEFAULT_U["family"])
        self._u_postcode = pair_rate(postcode_counts, n, DEFAULT_U["postcode"])
        self._u_dob = pair_rate(dob_counts, n, DEFAULT_U["dob"])
        self._prior = -math.log2(max(n, MIN_PRIOR_POPULATION))
        self._national_prior = -math.log2(max(n, NATIONAL_POPULATION))
        names_seen_twice = {name for name, count in given_counts.items() if count >= 2}
        self._known = known_given_names() | frozenset(names_seen_twice)
        # Given names registered in their own right: England's list and first names held here.
        firsts_seen_twice = {name for name, count in first_counts.items() if count >= 2}
        self._registered = registered_given_names() | frozenset(firsts_seen_twice)
        self._first_sex_counts = first_sex_counts
        self._first_family = first_family
        self._name_cache: dict[tuple[str, str, bool], NameLevel] = {}
        self._given_cache: dict[tuple[str, str, str, str], NameLevel] = {}
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
        # Names a co-twin may be registered under, for the ambiguous-typo rule: England's list
        # and first names held here twice or more (short forms children are not registered
        # under, such as Ted or Kate, are not another child's name).
        self._deletions: dict[str, set[str]] = {}
        for name in self._registered:
            for variant in _deletions(name):
                self._deletions.setdefault(variant, set()).add(name)

    def __len__(self) -> int:
        return len(self.children)

    @property
    def saved_form(self) -> tuple[list[str], CandidateIndex, Statistics] | None:
        """The record ids in position order, their packed keys and statistics, for a full build
        (``None`` for a patched index, whose keys are in layers)."""
        if not isinstance(self._candidates, CandidateIndex):
            return None
        return [c.record_id for c in self._records], self._candidates, self.statistics

    def updated(self, changed: Iterable[Child], removed: Iterable[str] = ()) -> MatchIndex:
        """A new index with ``changed`` children added or replaced and ``removed`` ids taken out.

        For small imports: the keys of the changed children are built alone and laid over this
        index's (``CandidateOverlay``), and the name and date statistics are this index's, so
        the next full build (after a large import, and every day) brings them up to date. This
        index is left as it was: queries using it meanwhile are unaffected.
        """
        patched = copy.copy(self)
        patched.children = dict(self.children)
        fresh = list(changed)
        gone = set(removed) | {c.record_id for c in fresh}
        positions = self._positions()
        hidden = {positions[r] for r in gone if r in positions}
        for record_id in gone:
            patched.children.pop(record_id, None)
        for child in fresh:
            patched.children[child.record_id] = child
        offset = len(self._records)
        patched._records = self._records + fresh
        patched._candidates = CandidateOverlay(self._candidates, hidden, CandidateIndex(fresh), offset)
        patched._position_map = None
        return patched

    def _positions(self) -> dict[str, int]:
        """Where each live record sits in ``_records`` (made once per index, for ``updated``)."""
        found = self._position_map
        if found is None:
            live = self.children
            found = {c.record_id: i for i, c in enumerate(self._records) if live.get(c.record_id) is c}
            self._position_map = found
        return found

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

    def _tf_weight(self, counts: Counter[str], value: str, rate: float, m: float,
                   cap: float) -> float:
        """Weight of exact agreement on ``value``: rarer values are stronger evidence."""
        u = value_rate(counts.get(value, 0), self._n, rate)
        return min(max(bits(m, u), WEIGHTS.name_weight_min), cap)

    def _postcode_weight(self, postcode: str) -> float:
        """Weight of exact agreement on a postcode: how many of the node's children live there."""
        return _remembered_weight(self._postcode_weights, self._postcode_counts, postcode, self._n,
                                  self._u_postcode, WEIGHTS.postcode_exact_m, WEIGHTS.postcode_weight_max)

    def _name_weight(self, level: NameLevel, value: str, given: bool) -> float:
        fixed = FIXED_NAME_WEIGHTS.get(level)
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
                # A given name's weight is its first name's: middle names missing or differing
                # on one side cost as little as a spelling variant.
                return max(exact - (w.variant_penalty if given else w.partial_penalty), w.typo)
            return exact
        return FIXED_NAME_WEIGHTS[level]

    def _given_level(self, q_first: str, q_middle: str, record: str, r_middle: str) -> NameLevel:
        r_first, r_middle = split_given(record, r_middle)
        cache_key = (q_first, q_middle, r_first, r_middle)
        level = self._given_cache.get(cache_key)
        if level is None:
            level = compare_given(q_first, q_middle, r_first, r_middle, self._known)
            if len(self._given_cache) > 200_000:
                self._given_cache.clear()
            self._given_cache[cache_key] = level
        return level

    def _names(self, q_first: str, q_middle: str, qf: str, child: Child) -> _Alignment:
        """The best alignment of the query's names with the record's names and aliases.

        Given names are compared first name to first name (``compare_given``); the swapped
        alignment compares whole given names with family names."""
        level, weight, given_level = self._name_level, self._name_weight, self._given_level
        qg = f"{q_first} {q_middle}" if q_middle else q_first
        rg, rf = child.given_name, child.family_name
        gl, fl = given_level(q_first, q_middle, rg, child.middle_names), level(qf, rf, False)
        rg_full = f"{rg} {child.middle_names}" if child.middle_names else rg
        # Agreement weighs as much as the first name is rare (a middle name adds no rarity).
        best: _Alignment = (weight(gl, split_given(rg, child.middle_names)[0], True)
                            + weight(fl, rf, False), gl, fl, False, False, qg, rg_full)
        if gl in STRONG and fl in STRONG and not child.other_names:
            return best  # nothing else can do better
        for n, (rg, rf) in enumerate(name_variants(child)):
            alias = n > 0
            penalty = WEIGHTS.alias_penalty if alias else 0.0
            if alias:
                gl, fl = given_level(q_first, q_middle, rg, ""), level(qf, rf, False)
                score = weight(gl, split_given(rg)[0], True) + weight(fl, rf, False) - penalty
                if score > best[0]:
                    best = (score, gl, fl, False, True, qg, rg)
            if qg and qf and rg and rf:
                sg = level(qg, rf, False)
                if sg not in AGREEING:
                    continue
                # the query's family-name field read as given names, first name first
                sf = given_level(*split_given(qf), rg, "" if alias else child.middle_names)
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
        q_first, q_middle = split_given(query.given_name or "", query.middle_names or "")
        name_score, given, family, swapped, alias, q_given, r_given = self._names(
            q_first, q_middle, query.family_name or "", child)
        score += name_score

        if q_middle and not swapped and not alias and given in _FIRST_AGREES:
            score += self._middle_agreement(q_middle, child)

        dob_level = compare_dates(query.date_of_birth, child.date_of_birth)
        score += self._dob_weights[dob_level]

        pc_level = compare_postcodes(query.postcode, child.postcode)
        if pc_level is PostcodeLevel.EXACT:
            assert child.postcode is not None
            score += self._postcode_weight(child.postcode)
        else:
            score += POSTCODE_WEIGHTS[pc_level]

        sex_agrees = sex_disagrees = False
        if query.sex in ("F", "M") and child.sex in ("F", "M"):
            sex_agrees = query.sex == child.sex
            sex_disagrees = not sex_agrees
            score += w.sex_agree if sex_agrees else w.sex_disagree

        demographic_score = score
        nhs = upn = IdLevel.MISSING
        if query.nhs_number and child.nhs_number:
            nhs = compare_nhs(query.nhs_number, child.nhs_number)
            score += NHS_WEIGHTS[nhs]
        if query.upn and child.upn:
            upn = compare_upn(query.upn, child.upn)
            score += UPN_WEIGHTS[upn]

        # Twins share family name and date of birth; only the given name tells them apart.
        twin_like, compatible = False, given in COMPATIBLE
        if dob_level in (DateLevel.EXACT, DateLevel.SWAPPED, DateLevel.DIGIT):
            relaxed = self._relaxed_for(query, child, family, dob_level, pc_level, sex_agrees)
            # Only the record's first name tells it from a twin: a typo as close to its middle
            # name (Tyulia: Tulie, or a sister Yulia?) may be a child given that name first.
            r_first = (split_given(r_given)[0] if alias or swapped
                       else split_given(child.given_name, child.middle_names)[0])
            if given is not NameLevel.MISSING and family in _TWIN_FAMILY:
                twin_like = not self._given_tells_apart(given, q_given, r_first, sex_agrees, relaxed)
                if given is NameLevel.TYPO and self._typed_real_name(q_given, r_first):
                    compatible = False  # Maya typed, Raya held: another name, not a typo
            elif not swapped and query.given_name and query.family_name and self._name_level(
                    query.given_name, child.family_name, False) in _TWIN_FAMILY:
                # The names typed the other way round: the family name in the given-name field.
                s_first, s_middle = split_given(query.family_name)
                s_level = self._given_level(s_first, s_middle, child.given_name, child.middle_names)
                if s_level is not NameLevel.MISSING:
                    compatible = s_level in COMPATIBLE
                    twin_like = not self._given_tells_apart(
                        s_level, query.family_name, r_given, sex_agrees, None)
            if not twin_like and not swapped and not alias and given is not NameLevel.MISSING:
                alike, other_name = _twins_named_alike(q_first, q_middle, query.family_name or "", child,
                                                       given, family)
                # Another name by the custom of its tradition is not compatible either: an
                # identifier typed with it is another twin's number typed with that twin's name.
                twin_like, compatible = twin_like or alike, compatible and not other_name
            if sex_disagrees and given not in _SAME_FIRST_NAME and family in _TWIN_FAMILY:
                # A name that only resembles the record's, and the other sex: a boy-girl
                # co-twin (Zievan typed, Kieran held), not a typo.
                twin_like = True
        id_agrees = nhs in (IdLevel.AGREE, IdLevel.NEAR) or upn in (IdLevel.AGREE, IdLevel.NEAR)
        # An agreeing identifier lifts the twin guard only when the typed given name fits this
        # record (another twin's number typed with the other twin's name does not).
        lifted = twin_like and id_agrees and compatible
        # A sibling's identifier typed by mistake: the identifier agrees, the child does not.
        other_child = (given in (NameLevel.DIFFERENT, NameLevel.SIMILAR_NAME, NameLevel.MIDDLE)
                       and dob_level is DateLevel.DIFFERENT)
        return Comparison(
            record_id=child.record_id, given=given, family=family, swapped=swapped, alias=alias,
            dob=dob_level, postcode=pc_level, nhs=nhs, upn=upn, score=score,
            twin_guard=twin_like and not lifted, other_child=other_child,
            nhs_conflict=nhs is IdLevel.CONFLICT, demographic_score=demographic_score,
            identifier_lifted=lifted,
            namesake=(dob_level is DateLevel.DIFFERENT and not id_agrees
                      and (pc_level is not PostcodeLevel.EXACT
                           or not _names_tell_apart_at_home(q_first, q_middle, child))),
            unplaced=(not id_agrees and not query.postcode and query.sex not in ("F", "M")
                      and score - self._prior + self._national_prior < MATCH_THRESHOLD),
            cousin=((given is NameLevel.DIFFERENT or dob_level is DateLevel.DIFFERENT)
                    and not id_agrees
                    and pc_level in (PostcodeLevel.DIFFERENT, PostcodeLevel.DISTRICT)),
        )

    def _middle_agreement(self, q_middle: str, child: Child) -> float:
        """Weight of the query's middle names agreeing with the record's (the first names agree
        already): ``log2(m / u)``, u how many of the node's children with middle names share
        these, at most ``middle_weight_max``. Nothing when either side gives none or they
        differ (a middle name is often left out or recorded differently)."""
        r_middle = split_given(child.given_name, child.middle_names)[1]
        if not r_middle:
            return 0.0
        q_key = "".join(sorted(name_tokens(q_middle)))
        if q_key != "".join(sorted(name_tokens(r_middle))):
            return 0.0
        return _remembered_weight(self._middle_weights, self._middle_counts, q_key, self._with_middle,
                                  self._u_middle, WEIGHTS.middle_agree_m, WEIGHTS.middle_weight_max)

    def _relaxed_for(self, query: Identity, child: Child, family: NameLevel, dob: DateLevel,
                     postcode: PostcodeLevel, sex_agrees: bool) -> tuple[str, str] | None:
        """(sex, family name) when the sex is given and agrees with the record's, so that an
        ambiguous typo may be weighed against the node's own records
        (``_could_be_another_child``); otherwise ``None``. The date of birth and postcode need
        not agree exactly: a co-twin shares them, so they never told the two apart."""
        del dob, postcode  # see above: they say nothing about which twin was meant
        if sex_agrees and query.sex is not None and family in _TWIN_FAMILY:
            return query.sex, "".join(name_tokens(child.family_name))
        return None

    def _could_be_another_child(self, name: str, relaxed: tuple[str, str] | None) -> bool:
        """Whether another real given name close to a typo could be the child searched for.

        Always, unless the sex was given and agrees (``relaxed``). Then not when the node holds
        no child of that family with that name (no sibling or twin here it could be), and the
        node gives that name only to children of the other sex (at least ``NAME_SEX_EVIDENCE``
        of them, none of the query's sex): a co-twin so named would be of the other sex, and
        the query's sex says it is not. How rare the name is does not decide it: twins are
        often given look-alike names, so a co-twin's name is not drawn at random from the
        node's names (``trap_co_twin_typo`` in ``federation/tools/traps.py``)."""
        if relaxed is None:
            return True
        sex, family = relaxed
        if f"{name}|{family}" in self._first_family:
            return True
        other = "M" if sex == "F" else "F"
        same_sex = self._first_sex_counts.get((name, sex), 0)
        other_sex = self._first_sex_counts.get((name, other), 0)
        if same_sex > 0:
            return True  # given here to a child of the query's sex: a co-twin could be so named
        # England's registrations say the name is the other sex's (Jade, typed for a boy James)
        return other_sex < NAME_SEX_EVIDENCE and registered_sex(name) != other

    def _given_tells_apart(self, level: NameLevel, query: str, record: str, sex_agrees: bool,
                           relaxed: tuple[str, str] | None = None) -> bool:
        """Whether the given names agree well enough to tell this child from a twin."""
        if level in (NameLevel.EXACT, NameLevel.VARIANT, NameLevel.PARTIAL):
            return True
        if level in (NameLevel.NICKNAME, NameLevel.NICKNAME_AMBIGUOUS) and self._own_name_short_form(
                query, record):
            return False  # Freddie for Frederick: twins are often given look-alike names
        if level is NameLevel.NICKNAME:
            return True
        if level is NameLevel.NICKNAME_AMBIGUOUS:
            return sex_agrees  # Sam for Samuel or Samantha: only if the sex says which
        if level is NameLevel.TYPO:
            return not self._ambiguous_typo(query, record, relaxed)
        return False

    def _typed_real_name(self, query: str, record: str) -> bool:
        """What was typed as the first name is itself a real given name, and not the record's
        name in any form (spelling, short form)."""
        token = next(iter(name_tokens(query)), "")
        record_tokens = name_tokens(record)
        return token in self._known and not any(
            token == r or is_variant(token, r) or nickname_related(token, r) for r in record_tokens)

    def _own_name_short_form(self, query: str, record: str) -> bool:
        """The first names differ, and one of them is a short form that is also registered as a
        given name in its own right (Alfie, Freddie, Ellie), in England's lists or on this node:
        then the two may be two children's names, not one child's two forms."""
        q_first = next(iter(name_tokens(query)), "")
        r_first = next(iter(name_tokens(record)), "")
        return self._own_name_forms(q_first, r_first)

    def _own_name_forms(self, a: str, b: str) -> bool:
        """Two different tokens, one a short form registered as a given name in its own right."""
        return a != b and any(nickname_formals(t) and (t in self._registered) for t in (a, b))

    def _ambiguous_typo(self, query: str, record: str,
                        relaxed: tuple[str, str] | None = None) -> bool:
        """The query's given name is as close to another real name as to the record's (Jakc:
        Jack or Jake?), so it cannot tell one twin from the other (unless that other name could
        not be another child's here: ``_could_be_another_child``).

        Closeness is ``typo_cost``: an edit touching the first letter counts two, so ``rily``
        (a letter dropped from Riley) is not taken for ``lily`` (the first letter changed)."""
        record_tokens = name_tokens(record)
        # The held name as spelt and in canonical spelling: Reene is one keystroke from Reece,
        # whatever the canonical spelling of Reece (Rhys) is.
        spellings = set(record_tokens) | set(record.split())
        for token in set(name_tokens(query)) - set(record_tokens):
            own = min((typo_cost(token, r) for r in spellings), default=0)
            for near in self._near_known(token):
                if near in record_tokens:
                    continue
                if any(is_variant(near, r) or (nickname_related(near, r)
                                               and not self._own_name_forms(near, r))
                       for r in record_tokens):
                    continue  # another form of the held name (not one registered on its own)
                if near == token:
                    return True  # what was typed is itself a real name: another child's, maybe
                cost = typo_cost(token, near)
                if cost < own or (cost == own and self._could_be_another_child(near, relaxed)):
                    return True  # nearer another name, or as near and that name may be meant
        return False

    def _near_known(self, token: str) -> set[str]:
        """Registered given names at most one keystroke from ``token`` (a deletion-neighbourhood
        index over England's list and the first names held here twice or more)."""
        found: set[str] = set()
        for variant in _deletions(token):
            found.update(self._deletions.get(variant, ()))
        return {name for name in found if osa_distance(name, token, 1) <= 1}

    # --- the decision -------------------------------------------------------------------------

    def ranked(self, query: Identity) -> list[Comparison]:
        """Every candidate for the query, compared and ranked best first."""
        records = self._records
        compared = [self._compare(query, records[i]) for i in self._candidates.candidates(query)]
        compared.sort(key=lambda c: (-c.score, c.record_id))
        return compared

    def match(self, query: Identity) -> MatchResult:
        ranked = self.ranked(query)
        if not ranked:
            return MatchResult(Status.NO_MATCH)
        best = ranked[0]
        # A cousin or a namesake elsewhere (``Comparison.cousin``) is not plausible: another
        # given name or another date of birth, away from the child's home, is another child.
        plausible = sum(1 for c in ranked if c.score >= POSSIBLE_THRESHOLD and not c.cousin)
        if best.score < POSSIBLE_THRESHOLD or not plausible:
            return MatchResult(Status.NO_MATCH, None, 0, best.score)
        runner_up = ranked[1].score if len(ranked) > 1 else -math.inf
        # An identifier that lifted the twin guard decides only if no other record fits the
        # typed demographics as well or better (another twin's number, the other twin's name).
        contested = best.identifier_lifted and any(
            c.demographic_score >= best.demographic_score for c in ranked[1:])
        contested = contested or _identifier_elsewhere(query, best, ranked[1:])
        if (best.may_match and not contested and best.score >= MATCH_THRESHOLD
                and best.score - runner_up >= MATCH_MARGIN):
            return MatchResult(Status.MATCH, best.record_id, plausible, best.score)
        return MatchResult(Status.POSSIBLE_MATCH, None, plausible, best.score,
                           tuple(c.record_id for c in ranked
                                 if c.score >= POSSIBLE_THRESHOLD and not c.cousin))


_ID_AGREES = (IdLevel.AGREE, IdLevel.NEAR)

PREFIX_NAMES = frozenset({"muhammad", "syed", "syeda", "mosammat", "thi", "van"})
"""First names (in canonical spelling: Mohammed, Mohd, Md are Muhammad; Mst is Mosammat) that
many children of one family are given before the name they are called by (Muhammad Hassan and
Muhammad Hussain, twins; Md, Mst in Bengali naming; Syed, Syeda for a lineage; Thi and Van,
which mark a Vietnamese girl's and boy's name). With one of these first, the next name is the
one that tells the children apart. That name typed alone (Rahim, for a held Muhammad Rahim) is
still only a middle name's agreement: a brother may be called Rahim first."""


def _after_first(tokens: tuple[str, ...]) -> list[str]:
    """The names after the first (after a prefix first name, the further prefixes too: Muhammad
    Syed Ali is called Ali; Daniel Muhammad keeps Muhammad as his second name)."""
    if tokens and tokens[0] in PREFIX_NAMES:
        return [t for t in tokens[1:] if t not in PREFIX_NAMES]
    return list(tokens[1:])


def _twins_named_alike(q_first: str, q_middle: str, q_family: str, child: Child, given: NameLevel,
                       family: NameLevel) -> tuple[bool, bool]:
    """(alike, another name): whether the names, which tell the child apart by the general rules,
    could also be a co-twin's by the custom of a naming tradition, and whether the query gives
    another name rather than leaving one out:

    * the first names agree and the names after them do not (Joao Lucas typed, Joao Pedro held;
      Muhammad Hussain, Muhammad Hassan), or a prefix is typed alone (Muhammad): ``_called``;
    * the same given name, with Kaur typed for Singh held or the other way round (Harpreet Kaur
      and Harpreet Singh, a girl and a boy): ``_sikh_names_differ``;
    * two different romanised Chinese given names, however close (Zihao typed, Zihan held):
      ``_chinese_names_differ``.
    """
    if family in _TWIN_FAMILY and given in _FIRST_AGREES:
        called = _called(q_first, q_middle, _given_tokens(child))
        if called is not _Called.SAME:
            return True, called is _Called.OTHER
    if given in _SAME_FIRST_NAME and _sikh_names_differ(q_family, child.family_name):
        return True, True
    if family in _TWIN_FAMILY and _chinese_names_differ(q_first, q_middle, child):
        return True, True
    return False, False


def _names_tell_apart_at_home(q_first: str, q_middle: str, child: Child) -> bool:
    """Whether the given names typed could not also be a brother's or sister's in the same home:
    not when the names after the first differ or are left out after a prefix (``_called``), and
    not a prefix alone on both sides (every son may be a Muhammad)."""
    r_tokens = _given_tokens(child)
    if _called(q_first, q_middle, r_tokens) is not _Called.SAME:
        return False
    return not r_tokens or r_tokens[0] not in PREFIX_NAMES or bool(_after_first(r_tokens))


class _Called(Enum):
    """How the names after the first name compare (after a prefix: the name the child is called by)."""

    SAME = 1  # a form of the record's, or nothing to compare (either side gives none, no prefix)
    LEFT_OUT = 2  # the record's first name is a prefix and the query gives no name after it
    OTHER = 3  # both give names after the first, and none of the query's is a form of the record's


def _given_tokens(child: Child) -> tuple[str, ...]:
    """The record's given names, first name first, as canonical tokens."""
    return name_tokens(" ".join(split_given(child.given_name, child.middle_names)))


def _called(q_first: str, q_middle: str, r_tokens: tuple[str, ...]) -> _Called:
    """How the names after the first compare, the first names agreeing (the caller knows they do,
    or, at the same home, that they must). A form of the record's
    is the same, a listed variant, a nickname, its initial, or one keystroke apart unless both
    are listed names (Amara and Amira). Joao Pedro and Joao Lucas, Maria Jose and Maria Jesus, Ata
    Panyin and Ata Kakra are twins' names (``OTHER``); Muhammad typed for a held Muhammad James
    names either twin (``LEFT_OUT``). A record with its first name alone has nothing more to
    compare. ``r_tokens``: the record's given names (``_given_tokens``)."""
    r_after = _after_first(r_tokens)
    if not r_after:
        return _Called.SAME
    # The first names agree (a prefix typed with a typo too: Muhamad Hassan): what follows is compared.
    q_after = _after_first(name_tokens(f"{q_first} {q_middle}"))
    if not q_after:
        return _Called.LEFT_OUT if r_tokens[0] in PREFIX_NAMES else _Called.SAME
    known = known_given_names()
    if any(q == r or is_variant(q, r) or nickname_related(q, r)
           or (osa_distance(q, r, 1) <= 1 and not (q in known and r in known))
           or (min(len(q), len(r)) == 1 and q[0] == r[0])  # an initial (Oscar J)
           for q in q_after for r in r_after):
        return _Called.SAME
    return _Called.OTHER


_SIKH_NAMES = {"kaur": "singh", "singh": "kaur"}


def _sikh_names_differ(typed: str, held: str) -> bool:
    """One family name is Kaur (a Sikh girl's) and the other Singh (a Sikh boy's). Sikh given
    names are the same for girls and boys, so twins may share one and differ only here."""
    typed_tokens, held_tokens = set(name_tokens(typed)), set(name_tokens(held))
    return any(own in typed_tokens and other in held_tokens and other not in typed_tokens
               and own not in held_tokens for own, other in _SIKH_NAMES.items())


def _chinese_names_differ(q_first: str, q_middle: str, child: Child) -> bool:
    """A Chinese family name, and two different given names that both read as romanised Chinese
    syllables (Zihan and Zihao, Wei and Wen, Ka Ho and Ka Hei): twins commonly share one syllable
    and differ in the other, so a letter apart is another real name, not a typo."""
    if not chinese_family(child.family_name):
        return False
    typed = f"{q_first} {q_middle}".replace(" ", "")
    held = " ".join(split_given(child.given_name, child.middle_names)).replace(" ", "")
    return typed != held and chinese_syllables(typed) and chinese_syllables(held)


def _identifier_elsewhere(query: Identity, best: Comparison, others: list[Comparison]) -> bool:
    """Another held child's identifier: the best record has no number to compare, and the number
    typed is (or is a typo of) another record's. Either child may be the one meant."""
    if query.nhs_number and best.nhs is IdLevel.MISSING and any(c.nhs in _ID_AGREES for c in others):
        return True
    return bool(query.upn) and best.upn is IdLevel.MISSING and any(c.upn in _ID_AGREES for c in others)


def _deletions(word: str) -> set[str]:
    """The word and every string one deletion away from it."""
    return {word} | {word[:i] + word[i + 1:] for i in range(len(word))}



def _remembered_weight(remembered: dict[str, float], counts: Mapping[str, int], value: str, n: int,
                       default_rate: float, m: float, cap: float) -> float:
    """Weight of exact agreement on ``value`` (rarer values are stronger evidence, up to ``cap``),
    worked out once per value and remembered in ``remembered``."""
    weight = remembered.get(value)
    if weight is None:
        weight = min(bits(m, value_rate(counts.get(value, 0), n, default_rate)), cap)
        remembered[value] = weight
    return weight
