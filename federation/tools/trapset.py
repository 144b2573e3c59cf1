"""Adversarial queries for the synthetic set: children the node does not hold, each built to
look like a held child (the categories of ``federation.tools.traps``), half of them typed with
one of the errors people make."""

from __future__ import annotations

import dataclasses
import random
from collections.abc import Iterable
from datetime import date, timedelta
from typing import Any

from federation.identity import Identity, normalise_name, parse_identity
from federation.names import (
    canonical_token,
    is_variant,
    nickname_related,
    registered_given_names,
    registered_sex,
)
from federation.tools import synthetic, traps
from federation.tools.households import (
    AREA,
    PATTERNS,
    TODAY,
    Person,
    apply_pattern,
    given_pool,
)
from federation.tools.labelled import EvaluationError, LabelledQuery
from node.comparison import DateLevel, compare_dates
from node.matching import PREFIX_NAMES

__all__ = ["trap_queries"]


def trap_queries(rng: random.Random, homes: list[list[Person]], held: dict[str, Person],
                  per_category: int) -> list[LabelledQuery]:
    """Queries for children the node does not hold, each built to look like a held child.

    May add held children (the second twin of ``trap_twin_identifier``) to ``held``.
    """
    home_of = {p.key: home for home in homes for p in home}
    candidates = sorted(held.values(), key=lambda p: p.key)
    rng.shuffle(candidates)
    counter = 0

    typed_as: dict[str, str] = {}  # a trap's given name as typed, when that is the trap

    def person(template: Person, typed: str | None = None, **changes: Any) -> Person:
        nonlocal counter
        counter += 1
        made = dataclasses.replace(template, key=f"trap-{counter}", nhs=synthetic.nhs_number(rng),
                                   upn=None, aliases=[], twin=None, **changes)
        if typed is not None:
            typed_as[made.key] = typed
        return made

    def first(p: Person) -> str:
        return canonical_token(normalise_name(p.given).split()[0])

    by_family_dob: dict[tuple[str, date], set[str]] = {}
    for h in held.values():
        by_family_dob.setdefault((normalise_name(h.family), h.dob), set()).add(first(h))

    def clashes(q: Person) -> bool:
        """A held child with the trap's first name, family name and date of birth: no typed
        field could tell them apart, so that query would not be a trap but that child."""
        return _names_a_held_child(first(q), by_family_dob.get((normalise_name(q.family), q.dob), set()))

    def household_names(p: Person) -> set[str]:
        return {first(h) for h in home_of.get(p.key, [p])} | {
            canonical_token(t) for h in home_of.get(p.key, [p]) for t in normalise_name(h.given).split()}

    def build(category: str, p: Person) -> tuple[Person, str | None] | None:
        """The trap person for held child ``p`` and an NHS number to type (or None)."""
        if category == "trap_co_twin_lookalike":
            name = traps.lookalike_name(rng, first(p))
            # the co-twin's sex is the one the name is registered for, when England's lists say
            sex = (registered_sex(name) or rng.choice("FM")) if name else "F"
            return (person(p, given=name.capitalize(), sex=sex), None) if name else None
        if category == "trap_co_twin_typo":
            name = traps.lookalike_name(rng, first(p))
            held_first = normalise_name(p.given).split()[0]
            typed = traps.ambiguous_typo(rng, name, held_first) if name else None
            if name is None or typed is None:
                return None
            # the co-twin's sex is the one that name is registered for in England and Wales, or
            # given to here, when either is known (a co-twin named Georgia is a girl)
            sexes = [s for s in "FM" if name in {canonical_token(normalise_name(n).split()[0])
                                                 for n in given_pool(s)}]
            sex = registered_sex(name) or (sexes[0] if len(sexes) == 1 else rng.choice("FM"))
            return person(p, given=name.capitalize(), sex=sex, typed=typed.capitalize()), None
        if category == "trap_co_twin_short_form":
            name = traps.short_form_name(rng, first(p))
            return (person(p, given=name.capitalize()), None) if name else None
        if category == "trap_twin_identifier":
            if not p.nhs:
                return None
            sex = rng.choice("FM")
            return person(p, given=traps.other_name(rng, given_pool(sex), household_names(p)),
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
                dob = one_digit_date(rng, p.dob) or p.dob  # a twin, the date mistyped
            else:
                dob = p.dob - timedelta(days=rng.randint(300, 2000))  # an older sibling
            return person(p, given=middle.capitalize(), dob=dob, sex=rng.choice("FM")), None
        if category == "trap_namesake_dob":
            away = traps.two_digits_away(rng, p.dob, TODAY)
            if away is None:
                return None
            return person(p, dob=away, postcode=synthetic.postcode(rng, AREA)), None
        if category in ("trap_co_twin_prefix", "trap_co_twin_second_name"):
            tokens = normalise_name(p.given).split()
            if len(tokens) < 2 or (canonical_token(tokens[0]) in PREFIX_NAMES) != (
                    category == "trap_co_twin_prefix"):
                return None
            other = traps.other_name(rng, given_pool(p.sex), household_names(p)).split()[0]
            # typed in full, or as the prefix alone (which names either twin)
            alone = category == "trap_co_twin_prefix" and rng.random() < 0.3
            typed = tokens[0].capitalize() if alone else None
            return person(p, given=f"{tokens[0].capitalize()} {other}", typed=typed), None
        if category == "trap_cousin":
            sex = rng.choice("FM")
            return person(p, given=traps.other_name(rng, given_pool(sex), household_names(p)), sex=sex,
                          postcode=synthetic.postcode(rng, AREA)), None
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
            # its first name is the held twin's, by design
            prefix = category in ("trap_co_twin_prefix", "trap_co_twin_second_name")
            if not prefix and clashes(trap):
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
                applied = (pattern,) if pattern and apply_pattern(rng, pattern, raw, trap) else ()
            typed = parse_identity(raw)
            typed_first = canonical_token((typed.given_name or " ").split()[0])
            typed_key = (typed.family_name or "", typed.date_of_birth or trap.dob)
            if prefix:
                alone_by_design = trap.key in typed_as
                if ((applied and not alone_by_design) or _calls_a_held_child(typed, held.values())
                        or (len((typed.given_name or "").split()) < 2 and not alone_by_design)):
                    continue  # only the trap's own errors: the name after the first is the point
            elif _names_a_held_child(typed_first, by_family_dob.get(typed_key, set())):
                continue  # the error made the query exactly a held child's: not a trap any more
            elif applied and _names_held_child(typed_first, first(p)):
                continue  # the error turned the name into a listed form of the held child's
            if category == "trap_namesake_dob" and compare_dates(
                    typed.date_of_birth, p.dob) is not DateLevel.DIFFERENT:
                continue  # the error brought the date within a typo of the held child's
            asked.add(identity_key)
            out.append(LabelledQuery(typed, None, applied, p.key, category))
            made += 1
    return out


def _names_a_held_child(typed: str, held: set[str]) -> bool:
    """The first name is a held child's of the same family name and date of birth, or a form of
    it that no child is registered under (Faduma for a held Fatima Stevens born that day): the
    query then names that child, moved or not, and is no trap."""
    return typed in held or any(_names_held_child(typed, h) for h in held)


def _calls_a_held_child(typed: Identity, held: Iterable[Person]) -> bool:
    """A held child of the typed family name and date of birth is called by the name typed after
    the prefix (then the query is that child's, not a trap)."""
    typed_tokens = normalise_name(typed.given_name or "").split()
    called = {canonical_token(t) for t in typed_tokens[1:]}
    return bool(called) and any(
        normalise_name(h.family) == typed.family_name and h.dob == typed.date_of_birth
        and called & {canonical_token(t) for t in normalise_name(h.given).split()[1:]} for h in held)


def _names_held_child(typed: str, held: str) -> bool:
    """A mistyped trap name that has become a listed form of the held child's name (Lottie
    mistyped as Lotte, a listed short form of Charlotte that children are not registered
    under): the query then names the held child in every field, and is no trap."""
    return typed != held and (is_variant(typed, held) or (
        nickname_related(typed, held) and typed not in registered_given_names()))


def _related_names(a: str, b: str) -> bool:
    return a == b or nickname_related(a, b)


def one_digit_date(rng: random.Random, dob: date) -> date | None:
    """A real date one digit away from ``dob`` (a typo of it), or None."""
    text = dob.strftime("%Y%m%d")
    for _ in range(20):
        i = rng.choice((3, 5, 6, 7))
        new = text[:i] + str(rng.randint(0, 9)) + text[i + 1:]
        try:
            candidate = date(int(new[:4]), int(new[4:6]), int(new[6:]))
        except ValueError:
            continue
        if candidate != dob and candidate <= TODAY:
            return candidate
    return None

