"""Names and dates for adversarial queries: children the node does not hold who look like one
it does (a co-twin with a look-alike or short-form name, a namesake born on a nearby date).

Pure helpers for ``federation.tools.trapset``: every function takes a seeded
``random.Random`` and returns ``None`` when the held child offers no such trap.
"""

from __future__ import annotations

import functools
import random
from datetime import date

from federation.names import (
    canonical_token,
    is_variant,
    known_given_names,
    nickname_formals,
    nickname_related,
    osa_distance,
    registered_given_names,
    short_forms,
    typo_cost,
)

TRAP_CATEGORIES = (
    "trap_co_twin_lookalike",  # an unheld co-twin whose name is one or two keystrokes away
    "trap_co_twin_short_form",  # an unheld co-twin named with a registered short form
    "trap_co_twin_typo",  # an unheld co-twin's look-alike name typed as close to the held twin's
    "trap_twin_identifier",  # one twin's NHS number typed with the other twin's demographics
    "trap_sibling_middle_name",  # an unheld sibling whose first name is a held child's middle name
    "trap_namesake_dob",  # same names, the date of birth two typos away, living elsewhere
    "trap_cousin",  # same family name and date of birth, another given name, another home
    "trap_co_twin_prefix",  # an unheld co-twin given the same prefix first name (Muhammad), then another
    "trap_co_twin_second_name",  # an unheld co-twin given the same first name, then another (Joao Lucas)
)


@functools.cache
def _registered_sorted() -> tuple[str, ...]:
    return tuple(sorted(registered_given_names()))


def _related(a: str, b: str) -> bool:
    return a == b or is_variant(a, b) or nickname_related(a, b)


def lookalike_name(rng: random.Random, first: str) -> str | None:
    """A different registered given name one or two keystrokes from ``first`` (Jack: Jake)."""
    first = canonical_token(first)
    close = [n for n in _registered_sorted()
             if abs(len(n) - len(first)) <= 2 and not _related(n, first)
             and osa_distance(n, first, 2) <= (1 if len(first) < 5 else 2)]
    return rng.choice(close) if close else None


def short_form_name(rng: random.Random, first: str) -> str | None:
    """A registered given name that is a short form of ``first`` (Frederick: Freddie), or the
    formal name of which ``first`` is a registered short form (Alfie: Alfred)."""
    first = canonical_token(first)
    registered = registered_given_names()
    options = [s for s in short_forms(first) if s in registered and s != first]
    if first in registered:
        options.extend(f for f in nickname_formals(first) if f != first)
    return rng.choice(sorted(options)) if options else None


def one_keystroke_typos(name: str) -> set[str]:
    """Every string one keystroke from ``name`` (a letter dropped, added, changed, or two
    adjacent letters swapped), the first letter included."""
    letters = "abcdefghijklmnopqrstuvwxyz"
    out = {name[:i] + name[i + 1:] for i in range(len(name))}
    out |= {name[:i] + c + name[i:] for i in range(len(name) + 1) for c in letters}
    out |= {name[:i] + c + name[i + 1:] for i in range(len(name)) for c in letters}
    out |= {name[:i] + name[i + 1] + name[i] + name[i + 2:] for i in range(len(name) - 1)}
    out.discard(name)
    return out


def ambiguous_typo(rng: random.Random, twin: str, held: str) -> str | None:
    """A one-keystroke typo of ``twin`` (the unheld co-twin's first name) that is exactly as
    close to ``held`` (the held twin's) by ``typo_cost``, and is not itself a real name: what
    a practitioner searching for the co-twin may type, and what reads as a typo of either
    (a typo nearer the held name than the twin's reads as the held child, and is matched)."""
    known = known_given_names()

    def cost(typed: str, name: str) -> int:  # to the name as spelt or in canonical spelling
        return min(typo_cost(typed, name), typo_cost(typed, canonical_token(name)))

    options = sorted(t for t in one_keystroke_typos(twin)
                     if len(t) >= 3 and t not in known and canonical_token(t) == t
                     and cost(t, held) == cost(t, twin))
    return rng.choice(options) if options else None


def other_name(rng: random.Random, pool: tuple[str, ...], avoid: set[str]) -> str:
    """A name from ``pool`` unrelated to every name in ``avoid`` (canonical first tokens)."""
    while True:
        name = rng.choice(pool)
        token = canonical_token(name.casefold().split()[0])
        if not any(_related(token, a) for a in avoid):
            return name


def two_digits_away(rng: random.Random, dob: date, today: date) -> date | None:
    """A real date whose YYYYMMDD form differs from ``dob`` in exactly two positions (not a swap
    of adjacent digits), on or before ``today``."""
    text = f"{dob.year:04d}{dob.month:02d}{dob.day:02d}"
    for _ in range(50):
        i, j = sorted(rng.sample((2, 3, 4, 5, 6, 7), 2))
        new = list(text)
        new[i] = rng.choice([d for d in "0123456789" if d != text[i]])
        new[j] = rng.choice([d for d in "0123456789" if d != text[j]])
        if j == i + 1 and new[i] == text[j] and new[j] == text[i]:
            continue
        if new[:4] == list(text[:4]) and new[4:6] == list(text[6:8]) and new[6:8] == list(text[4:6]):
            continue  # day and month swapped: one typing error, not another date
        digits = "".join(new)
        try:
            candidate = date(int(digits[:4]), int(digits[4:6]), int(digits[6:]))
        except ValueError:
            continue
        if candidate <= today and abs((candidate - dob).days) > 0:
            return candidate
    return None
