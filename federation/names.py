"""Names as the matcher compares them: tokens, spelling variants, nicknames, phonetic keys and
string similarity.

``federation.identity.normalise_name`` turns whatever a person typed into lower-case letters and
single spaces (accents folded, apostrophes dropped, hyphens as spaces). Everything here starts
from that normalised form and is pure and total: no function raises on any string.

The curated tables live in ``federation/data``:

- ``name_variants.csv``: spellings people write interchangeably (Mohammed / Muhammad / Mohamed,
  Aidan / Aiden, McDonald / MacDonald), one group a line, the first spelling canonical;
- ``nicknames.csv``: a formal given name and its short forms (William: Will, Bill, Liam),
  English and from other naming traditions (Polish, Slavic, Romanian, Yoruba, Igbo);
- ``equivalents.csv``: one given name in several languages (Jakub, Jacob; Piotr, Peter);
- ``given_names.txt``: given names known to be real names, so that two different real names
  (Jack and Jake) are not mistaken for a typing error;
- ``given_names_sex.csv``: the names of that list registered overwhelmingly for one sex.
"""

from __future__ import annotations

import csv
import functools
import hashlib
import io
from importlib import resources
from typing import Any

from rapidfuzz.distance import OSA as _OSA
from rapidfuzz.distance import Jaro as _JARO

# --- curated tables -------------------------------------------------------------------------


def tables_digest(folder: Any = None) -> int:
    """A number that changes whenever any curated table in ``federation/data`` (or ``folder``)
    changes: canonical spellings, and so the match index's keys and statistics, depend on them,
    and an index saved under other tables must not be read back (``node.candidates.KEY_CHECK``)."""
    root = folder if folder is not None else _data_root()
    digest = hashlib.blake2b(digest_size=8)
    for entry in sorted(root.iterdir(), key=lambda e: e.name):
        if entry.is_file():
            digest.update(entry.name.encode() + b"\0" + entry.read_bytes() + b"\0")
    return int.from_bytes(digest.digest(), "big")


def _data_root() -> Any:
    """The curated tables' folder (``federation/data``, wherever the package is installed)."""
    return resources.files("federation").joinpath("data")


def _data_lines(name: str) -> list[str]:
    text = _data_root().joinpath(name).read_text(encoding="utf-8")
    return [line for line in text.splitlines() if line.strip() and not line.startswith("#")]


@functools.cache
def _variants() -> dict[str, str]:
    table: dict[str, str] = {}
    for row in csv.reader(io.StringIO("\n".join(_data_lines("name_variants.csv")))):
        spellings = [s.strip() for s in row if s.strip()]
        for spelling in spellings:
            table.setdefault(spelling, spellings[0])
    return table


@functools.cache
def _nicknames() -> tuple[dict[str, frozenset[str]], frozenset[str]]:
    """Short form → the formal names it stands for; and the set of formal names."""
    shorts: dict[str, set[str]] = {}
    formals: set[str] = set()
    rows = csv.reader(io.StringIO("\n".join(_data_lines("nicknames.csv"))))
    next(rows)  # header
    for row in rows:
        formal = canonical_token(row[0].strip())
        formals.add(formal)
        for short in row[1].split():
            shorts.setdefault(canonical_token(short), set()).add(formal)
    return {k: frozenset(v) for k, v in shorts.items()}, frozenset(formals)


@functools.cache
def _equivalents() -> dict[str, int]:
    """Canonical token → the number of its group of cross-language forms (equivalents.csv)."""
    table: dict[str, int] = {}
    for number, row in enumerate(csv.reader(io.StringIO("\n".join(_data_lines("equivalents.csv"))))):
        for name in row:
            if name.strip():
                table.setdefault(canonical_token(name.strip()), number)
    return table


def is_equivalent(a: str, b: str) -> bool:
    """Whether two tokens are listed forms of one name in different languages (Jakub, Jacob)."""
    table = _equivalents()
    group = table.get(a)
    return group is not None and group == table.get(b)


@functools.cache
def registered_given_names() -> frozenset[str]:
    """Canonical given names registered in their own right (the curated list only: a short
    form such as Alfie or Freddie is here when children are registered under it)."""
    return frozenset(canonical_token(line.strip()) for line in _data_lines("given_names.txt"))


@functools.cache
def _name_sexes() -> dict[str, str]:
    rows = csv.reader(io.StringIO("\n".join(_data_lines("given_names_sex.csv"))))
    next(rows)  # header
    table: dict[str, str] = {}
    clash: set[str] = set()
    for name, sex in rows:
        token = canonical_token(name.strip())
        if table.setdefault(token, sex.strip()) != sex.strip():
            clash.add(token)  # two spellings of one name listed for both sexes: either
    return {name: sex for name, sex in table.items() if name not in clash}


def registered_sex(token: str) -> str | None:
    """``F`` or ``M`` when a (canonical) given name is registered overwhelmingly for that sex in
    England and Wales (``given_names_sex.csv``), else ``None`` (either, or not known)."""
    return _name_sexes().get(token)


@functools.cache
def known_given_names() -> frozenset[str]:
    """Canonical given names known to be real names (curated list, variants and nicknames)."""
    names = {canonical_token(line.strip()) for line in _data_lines("given_names.txt")}
    shorts, formals = _nicknames()
    names.update(shorts)
    names.update(formals)
    names.update(v for v in _variants().values())
    names.update(_equivalents())
    return frozenset(names)


# --- tokens and canonical forms -------------------------------------------------------------


def canonical_token(token: str) -> str:
    """The canonical spelling of one name token (``mohamed`` → ``muhammad``), else itself."""
    return _variants().get(token, token)


def is_variant(a: str, b: str) -> bool:
    """Whether two tokens are listed spellings of the same name."""
    table = _variants()
    return a in table and table.get(a) == table.get(b)


@functools.lru_cache(maxsize=1 << 16)
def name_tokens(normalised: str) -> tuple[str, ...]:
    """The tokens of a normalised name, each in canonical spelling."""
    return tuple(canonical_token(t) for t in normalised.split())


def nickname_formals(token: str) -> frozenset[str]:
    """The formal names a short form stands for (empty if it is not a known short form)."""
    return _nicknames()[0].get(token, frozenset())


def short_forms(formal: str) -> list[str]:
    """The listed short forms of a formal given name (canonical spelling), sorted."""
    return sorted(s for s, formals in _nicknames()[0].items() if formal in formals)


def other_language_forms(token: str) -> list[str]:
    """The listed forms of a name in the other languages of its group (Jakub: Jacob, Jakob,
    Jokubas), canonical spelling, sorted; empty if it has none."""
    table = _equivalents()
    group = table.get(token)
    if group is None:
        return []
    return sorted(name for name, number in table.items() if number == group and name != token)


def nickname_related(a: str, b: str) -> bool:
    """One token is a short form of the other, or both are short forms of one formal name.

    Two formal names that merely share a short form (Oliver and Olivia, both Ollie) are not
    related: they are different children's names.
    """
    if a == b or is_equivalent(a, b):
        return True
    fa, fb = nickname_formals(a), nickname_formals(b)
    if b in fa or a in fb or bool(fa & fb):
        return True
    # A short form of one language's form of the name (Kuba for Jacob: Kuba is Jakub's)
    return any(is_equivalent(f, b) for f in fa) or any(is_equivalent(f, a) for f in fb)


def nickname_ambiguous(a: str, b: str) -> bool:
    """Whether the short form linking two tokens stands for more than one formal name."""
    fa, fb = nickname_formals(a), nickname_formals(b)
    return len(fa) > 1 or len(fb) > 1


# --- phonetic key ---------------------------------------------------------------------------

_GROUPS = {
    **dict.fromkeys("bfpv", "1"), **dict.fromkeys("cgjkqsxz", "2"), **dict.fromkeys("dt", "3"),
    "l": "4", **dict.fromkeys("mn", "5"), "r": "6",
}
_PREFIXES = (("ph", "f"), ("kn", "n"), ("wr", "r"), ("gn", "n"), ("ps", "s"), ("wh", "w"))


@functools.lru_cache(maxsize=1 << 16)
def phonetic_key(token: str) -> str:
    """A Soundex-like key in which the first letter is coded too.

    Standard Soundex keeps the first letter, so Climbié / Klimbie or Catherine / Katherine get
    different keys. Here every letter is coded by sound group (vowels, h, w and y as ``0`` at
    the start), so those pairs agree: ``2451`` and ``2365``. Four characters, zero-padded.
    """
    if not token:
        return ""
    word = "".join(c for c in token if "a" <= c <= "z")
    if not word:
        return ""
    for prefix, sound in _PREFIXES:
        if word.startswith(prefix):
            word = sound + word[len(prefix):]
            break
    first = _GROUPS.get(word[0], "0")
    out = [first]
    last = first
    for c in word[1:]:
        code = _GROUPS.get(c)
        if code is None:
            if c not in "hw":
                last = ""  # a vowel separates two consonants of one group
            continue
        if code != last:
            out.append(code)
            if len(out) == 4:
                break
        last = code
    return "".join(out).ljust(4, "0")


# --- string similarity ----------------------------------------------------------------------


def osa_distance(a: str, b: str, limit: int | None = None) -> int:
    """Damerau-Levenshtein distance (optimal string alignment): edits, adjacent swaps count one.

    With ``limit``, any distance above it is returned as ``limit + 1`` and the work stops early,
    which is all a matcher asking "one or two keystrokes apart?" needs. (RapidFuzz's ``OSA``,
    compiled: the matcher asks this for most candidates; decision 21.)
    """
    return _OSA.distance(a, b, score_cutoff=limit)


def within_one_edit(a: str, b: str) -> bool:
    """Whether ``osa_distance(a, b) <= 1``, in one pass (for postcodes and identifiers)."""
    la, lb = len(a), len(b)
    if la == lb:
        diff = [i for i in range(la) if a[i] != b[i]]
        if len(diff) <= 1:
            return True
        i, j = diff[0], diff[-1]
        return len(diff) == 2 and j == i + 1 and a[i] == b[j] and a[j] == b[i]
    if abs(la - lb) != 1:
        return False
    if la > lb:
        a, b = b, a
    i = 0
    while i < len(a) and a[i] == b[i]:
        i += 1
    return a[i:] == b[i + 1:]


def jaro_winkler(a: str, b: str) -> float:
    """Jaro-Winkler similarity in [0, 1] (prefix scale 0.1, prefix up to 4 characters, the
    prefix bonus given at every Jaro similarity, not only above 0.7)."""
    jaro = _JARO.similarity(a, b)
    prefix = 0
    for x, y in zip(a[:4], b[:4], strict=False):
        if x != y:
            break
        prefix += 1
    return jaro + prefix * 0.1 * (1 - jaro)


def typo_cost(a: str, b: str) -> int:
    """Keystrokes from ``a`` to ``b`` (optimal string alignment), where an edit touching the
    first letter costs two: people (and the FEBRL generator) rarely mistype a name's first
    letter, so ``rily`` is more likely ``riley`` with a letter dropped than ``lily`` with its
    first letter changed."""
    la, lb = len(a), len(b)
    d = [[0] * (lb + 1) for _ in range(la + 1)]
    for i in range(1, la + 1):
        d[i][0] = d[i - 1][0] + (2 if i == 1 else 1)
    for j in range(1, lb + 1):
        d[0][j] = d[0][j - 1] + (2 if j == 1 else 1)
    for i in range(1, la + 1):
        for j in range(1, lb + 1):
            substitute = 2 if i == 1 or j == 1 else 1
            best = d[i - 1][j - 1] + (0 if a[i - 1] == b[j - 1] else substitute)
            best = min(best, d[i - 1][j] + (2 if i == 1 else 1), d[i][j - 1] + (2 if j == 1 else 1))
            if i > 1 and j > 1 and a[i - 1] == b[j - 2] and a[i - 2] == b[j - 1]:
                best = min(best, d[i - 2][j - 2] + (2 if i == 2 or j == 2 else 1))
            d[i][j] = best
    return d[la][lb]


# --- Chinese given names ----------------------------------------------------------------------


@functools.cache
def _chinese() -> tuple[frozenset[str], frozenset[str]]:
    """(syllables of romanised Chinese given names, common Chinese family names)."""
    found: dict[str, set[str]] = {"syllables": set(), "families": set()}
    for line in _data_lines("chinese_romanisation.txt"):
        kind, _, names = line.partition(":")
        found[kind.strip()].update(names.split())
    return frozenset(found["syllables"]), frozenset(found["families"])


@functools.lru_cache(maxsize=1 << 14)
def chinese_syllables(name: str) -> bool:
    """Whether ``name`` (normalised, spaces ignored) reads as one to three syllables of a
    romanised Chinese given name (Zihan, Zi Han, Wei, Ka Ho)."""
    syllables = _chinese()[0]
    letters = name.replace(" ", "")
    # reach[i]: the fewest syllables that spell letters[:i] (None: none do)
    reach: list[int | None] = [0] + [None] * len(letters)
    for end in range(1, len(letters) + 1):
        options = [count for start in range(max(0, end - 6), end)
                   if (count := reach[start]) is not None and letters[start:end] in syllables]
        reach[end] = min(options) + 1 if options else None
    return bool(letters) and reach[-1] is not None and reach[-1] <= 3


def chinese_family(family: str) -> bool:
    """Whether a normalised family name is a common Chinese one (in either romanisation), wholly:
    Lee Evans is not (Lee is an English family name too)."""
    tokens = family.split()
    return bool(tokens) and all(token in _chinese()[1] for token in tokens)
