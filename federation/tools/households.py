"""Synthetic children in households, and the errors people make when typing them.

Seeded UK children in households of one area (siblings, twins, realistic name frequencies with
a long tail of rare names, middle names, double-barrelled names, former names), as a node would
hold them; and queries for them carrying the errors people make (``PATTERNS``: typos, a typo
that is also one keystroke from another registered name, nicknames and other-language forms,
transliterations, accents and punctuation, swapped names, middle name dropped or added, part of
a double-barrelled name, alias, day/month swap, one digit wrong, moved, postcode typo, no
postcode, neither postcode nor sex). Pure: every function takes a seeded ``random.Random``.
"""

from __future__ import annotations

import functools
import random
from dataclasses import dataclass, field
from datetime import date, timedelta

from federation.identity import Identity, normalise_name, parse_identity
from federation.names import (
    canonical_token,
    is_variant,
    known_given_names,
    nickname_related,
    osa_distance,
    other_language_forms,
    registered_given_names,
    short_forms,
)
from federation.tools import synthetic
from federation.tools.labelled import EvaluationError
from federation.tools.traps import one_keystroke_typos
from node.store import Child

__all__ = ["AREA", "PATTERNS", "TODAY", "Person", "apply_pattern", "as_child", "given_pool",
           "population", "query_for"]


TODAY = date(2025, 9, 1)
AREA = "leeds"
_ACCENTED = {"zoe": "Zoë", "sian": "Siân", "climbie": "Climbié", "chloe": "Chloë",
             "noemi": "Noémi", "jose": "José", "renee": "Renée", "francois": "François"}


@dataclass
class Person:
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
                  "Noémi", "Renée", "Ellie", "Ella", "Lola", "Isabelle", "Isobel",
                  # names of the other naming traditions common in England (Polish, other
                  # Slavic, Romanian, Lithuanian, Yoruba, Igbo, Turkish, Somali)
                  "Katarzyna", "Małgorzata", "Aleksandra", "Zofia", "Agnieszka", "Magdalena",
                  "Weronika", "Wiktoria", "Anastasia", "Ekaterina", "Tatiana", "Natalia",
                  "Ioana", "Elena", "Emilija", "Oluwakemi", "Temitope", "Chiamaka", "Zeynep",
                  "Faduma", "Hatice")
_EXTRA_GIVEN_M = ("William", "Robert", "Samuel", "Alexander", "Charles", "Jake", "Jack",
                  "Jon", "John", "Aidan", "Aiden", "Sean", "Shaun", "Frederick", "José",
                  "François", "Nicholas", "Zachary", "Benjamin", "Oliver",
                  "Wojciech", "Krzysztof", "Mikołaj", "Franciszek", "Aleksander", "Piotr",
                  "Tomasz", "Bartosz", "Mateusz", "Dmitri", "Mikhail", "Sergei", "Ivan",
                  "Alexandru", "Gheorghe", "Constantin", "Jonas", "Tomas", "Oluwafemi",
                  "Babatunde", "Adebayo", "Chukwuemeka", "Chinonso", "Mehmet", "Abdirahman")


def given_pool(sex: str) -> tuple[str, ...]:
    """The given names the generator draws for a child of that sex."""
    return (synthetic.GIVEN_NAMES_F + _EXTRA_GIVEN_F) if sex == "F" else (
        synthetic.GIVEN_NAMES_M + _EXTRA_GIVEN_M)


def _given(rng: random.Random, sex: str, avoid: set[str]) -> str:
    pool = given_pool(sex)
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


def population(rng: random.Random, households: int) -> list[list[Person]]:
    """Households of one to four children; about 3% of children are twins."""
    out: list[list[Person]] = []
    counter = 0
    for h in range(households):
        family = (_rare_family_name(rng) if rng.random() < 0.6
                  else _zipf_choice(rng, synthetic.FAMILY_NAMES, 0.5))
        if rng.random() < 0.03:
            family = f"{family}-{rng.choice(synthetic.FAMILY_NAMES)}"
        postcode = synthetic.postcode(rng, AREA)
        size = rng.choices((1, 2, 3, 4), (45, 35, 15, 5))[0]
        kids: list[Person] = []
        used: set[str] = set()
        dobs: list[date] = []
        for _ in range(size):
            dob = TODAY - timedelta(days=rng.randint(30, 17 * 365 + 300))
            if any(abs((dob - d).days) < 300 for d in dobs):
                continue
            dobs.append(dob)
            births = 2 if rng.random() < 0.015 else 1
            twins: list[Person] = []
            for _ in range(births):
                sex = rng.choice("FM")
                given = _given(rng, sex, used)
                used.add(canonical_token(normalise_name(given).split()[0]))
                counter += 1
                kid = Person(
                    key=f"syn-{counter}", given=given, family=family, dob=dob, sex=sex,
                    postcode=postcode,
                    nhs=synthetic.nhs_number(rng) if rng.random() < 0.9 else None,
                    upn=synthetic.upn(rng, 383) if (TODAY - dob).days > 4 * 365 else None,
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


def as_child(p: Person) -> Child:
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


def other_forms(first: str) -> list[str]:
    """The other names a child registered as ``first`` (canonical) is known by: its short forms,
    its forms in the other languages of its group, and their short forms (Jakub: Kuba, Jacob,
    Jake)."""
    forms = set(short_forms(first))
    for other in other_language_forms(first):
        forms.add(other)
        forms.update(short_forms(other))
    forms.discard(first)
    return sorted(forms)


def _nickname(rng: random.Random, given: str) -> str | None:
    options = other_forms(canonical_token(normalise_name(given).split()[0]))
    return rng.choice(options) if options else None


def typo_near_another_name(rng: random.Random, first: str) -> str | None:
    """A one-keystroke typo of ``first`` (not of its first letter) that is also one keystroke
    from another registered given name, and is not itself a name: what makes a typed given name
    ambiguous (Jamse: James, or Jamie?)."""
    known = known_given_names()
    own = canonical_token(first)
    options = []
    for typed in sorted(one_keystroke_typos(first)):
        if len(typed) < 3 or typed[0] != first[0] or typed in known or canonical_token(typed) in known:
            continue
        if any(name not in (own, first) and not is_variant(name, own)
               and not nickname_related(name, own) and osa_distance(typed, name, 1) <= 1
               for name in _registered_near(typed)):
            options.append(typed)
    return rng.choice(options) if options else None


@functools.cache
def _registered_deletions() -> dict[str, frozenset[str]]:
    index: dict[str, set[str]] = {}
    for name in registered_given_names():
        for variant in _deletions(name):
            index.setdefault(variant, set()).add(name)
    return {k: frozenset(v) for k, v in index.items()}


def _deletions(word: str) -> set[str]:
    return {word} | {word[:i] + word[i + 1:] for i in range(len(word))}


def _registered_near(typed: str) -> set[str]:
    """Registered given names that may be one keystroke from ``typed`` (share a deletion)."""
    index = _registered_deletions()
    found: set[str] = set()
    for variant in _deletions(typed):
        found.update(index.get(variant, ()))
    return found


_VARIANTS = {"muhammad": ("Mohammed", "Mohamed", "Muhammed"), "mohammed": ("Muhammad", "Mohamed"),
             "mohamed": ("Mohammed", "Muhammad"), "aisha": ("Ayesha",), "yusuf": ("Yousuf",),
             "fatima": ("Fatimah",), "zainab": ("Zaynab",), "hamza": ("Hamzah",),
             "khadija": ("Khadijah",), "maryam": ("Mariam",), "ahmed": ("Ahmad",),
             "hussain": ("Hussein",), "aidan": ("Aiden",), "sophie": ("Sofie",),
             "mcdonald": ("MacDonald",), "macleod": ("McLeod",)}


def apply_pattern(rng: random.Random, pattern: str, q: dict[str, str], p: Person) -> bool:
    """Apply one error pattern to the query fields; ``False`` if it does not apply to ``p``."""
    given, family = q["given_name"], q["family_name"]
    if pattern == "typo_given":
        q["given_name"] = _typo(rng, normalise_name(given).split()[0])
    elif pattern == "typo_family":
        q["family_name"] = _typo(rng, normalise_name(family).replace(" ", ""))
    elif pattern == "typo_given_near_name":
        typed = typo_near_another_name(rng, normalise_name(given).split()[0])
        if typed is None:
            return False
        q["given_name"] = typed
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
            if candidate != p.dob and candidate <= TODAY:
                q["date_of_birth"] = candidate.isoformat()
                return True
        return False
    elif pattern in ("moved", "postcode_typo", "no_postcode", "no_postcode_no_sex") and (
            "postcode" not in q):
        return False
    elif pattern == "moved":
        q["postcode"] = synthetic.postcode(rng, rng.choice(("leeds", "bristol", "kent")))
    elif pattern == "postcode_typo":
        pc = q["postcode"]
        i = len(pc) - rng.choice((1, 2))
        q["postcode"] = pc[:i] + rng.choice("ABDEFGHJLNPQRSTUWXYZ") + pc[i + 1:]
    elif pattern == "no_postcode":
        q.pop("postcode")
    elif pattern == "no_postcode_no_sex":
        q.pop("postcode")
        q.pop("sex", None)
    else:
        raise EvaluationError(f"unknown error pattern {pattern!r}")
    return True


PATTERNS = ("typo_given", "typo_given_near_name", "typo_family", "nickname", "variant",
            "accents_punctuation", "swapped_names", "middle_name", "double_barrelled_part", "alias",
            "day_month_swap", "dob_digit", "moved", "postcode_typo", "no_postcode",
            "no_postcode_no_sex")


def query_for(rng: random.Random, p: Person, with_identifier: bool,
               patterns: tuple[str, ...]) -> tuple[Identity, tuple[str, ...]]:
    raw: dict[str, str] = {"given_name": p.given, "family_name": p.family,
                           "date_of_birth": p.dob.isoformat(), "postcode": p.postcode}
    if rng.random() < 0.85:
        raw["sex"] = p.sex
    if with_identifier and p.nhs and rng.random() < 0.7:
        raw["nhs_number"] = p.nhs
    applied = tuple(pat for pat in patterns if apply_pattern(rng, pat, raw, p))
    return parse_identity(raw), applied

