"""Identity validation and normalisation: check digits, names, postcodes, name keys."""

from __future__ import annotations

import pytest
from hypothesis import given
from hypothesis import strategies as st

from federation.errors import FieldError, ValidationError
from federation.identity import (
    nhs_check_digit,
    normalise_name,
    normalise_postcode,
    parse_identity,
    upn_check_letter,
    validate_nhs_number,
    validate_upn,
)
from federation.names import (
    canonical_token,
    jaro_winkler,
    name_tokens,
    nickname_related,
    osa_distance,
    phonetic_key,
    typo_cost,
    within_one_edit,
)

# --- NHS number -------------------------------------------------------------------------------

VALID_NHS = [
    ("published example", "9434765919"),
    ("spaced as printed on letters", "943 476 5919"),
    ("another valid number", "4010232137"),
    ("check digit 0 (remainder 0)", "1000000060"),
]
INVALID_NHS = [
    ("last digit changed", "9434765918"),
    ("two adjacent digits swapped", "9434765991"),
    ("check digit would be 10", "1000000011"),
    ("nine digits", "943476591"),
    ("letters", "94347659AB"),
    ("repeated digit passes modulus 11 but is not issued", "0000000000"),
]


@pytest.mark.parametrize(("name", "number"), VALID_NHS, ids=[c[0] for c in VALID_NHS])
def test_valid_nhs_numbers_are_accepted(name: str, number: str) -> None:
    """Known valid NHS numbers pass the modulus 11 check and come back as ten digits."""
    expected = number.replace(" ", "")
    actual = validate_nhs_number(number)
    assert expected == actual


@pytest.mark.parametrize(("name", "number"), INVALID_NHS, ids=[c[0] for c in INVALID_NHS])
def test_invalid_nhs_numbers_are_refused(name: str, number: str) -> None:
    """Mistyped or malformed NHS numbers are refused with a field error."""
    with pytest.raises(FieldError):
        validate_nhs_number(number)


def test_nhs_check_digit_ten_means_no_valid_number() -> None:
    """Nine digits whose modulus 11 check would be 10 can never start a valid number."""
    expected = None
    actual = nhs_check_digit("100000001")
    assert expected == actual


@given(st.text(alphabet="0123456789", min_size=9, max_size=9), st.integers(0, 8),
       st.integers(1, 9))
def test_one_wrong_digit_never_gives_another_valid_nhs_number(first: str, position: int,
                                                              delta: int) -> None:
    """Modulus 11 catches every single-digit error: two valid numbers differ in 2+ digits.

    This is why the matcher treats two different valid NHS numbers as a conflict, not a typo.
    """
    check = nhs_check_digit(first)
    if check is None:
        return
    digits = list(first)
    digits[position] = str((int(digits[position]) + delta) % 10)
    changed = "".join(digits)
    expected = False
    actual = nhs_check_digit(changed) == check
    assert expected == actual


# --- Unique Pupil Number ----------------------------------------------------------------------

VALID_UPN = [
    ("corrected support-site example", "P207000016049"),
    ("lower case and spaces", "p207 0000 16049"),
    ("temporary UPN ending in a letter", upn_check_letter("20700001604A") + "20700001604A"),
]
INVALID_UPN = [
    # Widely copied from school-system support pages, but its check letter is wrong.
    ("support-site example with the wrong check letter", "B207000016049"),
    ("one digit changed", "P207000016048"),
    ("check letter I is never used", "I207000016049"),
    ("twelve characters", "P20700001604"),
]


def test_upn_check_letter_of_the_support_site_example_is_p() -> None:
    """The DfE algorithm (weights 2 to 13, modulus 23) gives P for 207000016049, not B."""
    expected = "P"
    actual = upn_check_letter("207000016049")
    assert expected == actual


@pytest.mark.parametrize(("name", "upn"), VALID_UPN, ids=[c[0] for c in VALID_UPN])
def test_valid_upns_are_accepted(name: str, upn: str) -> None:
    """Valid UPNs pass the check letter and come back upper case without spaces."""
    expected = upn.upper().replace(" ", "")
    actual = validate_upn(upn)
    assert expected == actual


@pytest.mark.parametrize(("name", "upn"), INVALID_UPN, ids=[c[0] for c in INVALID_UPN])
def test_invalid_upns_are_refused(name: str, upn: str) -> None:
    """A UPN with a wrong check letter or shape is refused."""
    with pytest.raises(FieldError):
        validate_upn(upn)


# --- names ------------------------------------------------------------------------------------

NAME_CASES = [
    ("diaeresis", "Zoë", "zoe"),
    ("circumflex", "Siân", "sian"),
    ("acute accent", "Climbié", "climbie"),
    ("apostrophe", "O'Neill", "oneill"),
    ("curly apostrophe", "O’Brien", "obrien"),
    ("hyphenated family name", "Smith-Jones", "smith jones"),
    ("multiple given names and spaces", "  Mary   Jane ", "mary jane"),
    ("capitals", "MCDONALD", "mcdonald"),
    ("Polish letters", "Wiśniewski", "wisniewski"),
    ("Irish spacing", "Ní Bhriain", "ni bhriain"),
    ("digits and symbols become spaces", "Anne2-Marie!", "anne marie"),
]


@pytest.mark.parametrize(("name", "raw", "expected"), NAME_CASES, ids=[c[0] for c in NAME_CASES])
def test_normalise_name(name: str, raw: str, expected: str) -> None:
    """Case, accents, apostrophes, hyphens and spaces are normalised as documented."""
    actual = normalise_name(raw)
    assert expected == actual


@given(st.text())
def test_normalise_name_is_idempotent_and_total(raw: str) -> None:
    """Normalising twice changes nothing, for any string, and never raises."""
    once = normalise_name(raw)
    expected = once
    actual = normalise_name(once)
    assert expected == actual


@given(st.text())
def test_normalised_names_use_only_lower_case_letters_and_single_spaces(raw: str) -> None:
    """What the node stores and the matcher compares is plain a-z in single-spaced tokens."""
    name = normalise_name(raw)
    expected = True
    actual = all(c == " " or "a" <= c <= "z" for c in name) and "  " not in name and name == name.strip()
    assert expected == actual


@given(st.text())
def test_name_keys_are_total(raw: str) -> None:
    """Tokens, canonical spellings and phonetic keys never raise and are stable."""
    name = normalise_name(raw)
    tokens = name_tokens(name)
    expected = tokens
    actual = tuple(canonical_token(t) for t in tokens)
    assert expected == actual
    for token in tokens:
        assert len(phonetic_key(token)) == 4


TRANSLITERATIONS = [
    ("Mohammed", "Muhammad"), ("Mohamed", "Muhammad"), ("Mohammad", "Muhammed"),
    ("Ayesha", "Aisha"), ("Yousuf", "Yusuf"), ("Hussein", "Hussain"), ("MacDonald", "McDonald"),
]


@pytest.mark.parametrize(("a", "b"), TRANSLITERATIONS)
def test_transliteration_variants_share_a_canonical_spelling(a: str, b: str) -> None:
    """Common transliterations of one name compare equal after canonicalisation."""
    expected = name_tokens(normalise_name(a))
    actual = name_tokens(normalise_name(b))
    assert expected == actual


PHONETIC = [("climbie", "klimbie"), ("catherine", "kathryn"), ("philip", "filip"),
            ("mohammed", "muhammad"), ("sean", "shaun")]


@pytest.mark.parametrize(("a", "b"), PHONETIC)
def test_phonetic_key_survives_a_different_first_letter(a: str, b: str) -> None:
    """The first letter is coded by sound, so C/K and Ph/F spellings share a key."""
    expected = phonetic_key(a)
    actual = phonetic_key(b)
    assert expected == actual


def test_nicknames() -> None:
    """Short forms relate to their formal names; two formal names sharing a short form do not."""
    expected = (True, True, True, False)
    actual = (nickname_related("bill", "william"), nickname_related("alfie", "alfred"),
              nickname_related("liz", "beth"), nickname_related("oliver", "olivia"))
    assert expected == actual


# --- string similarity ------------------------------------------------------------------------

def _reference_osa(a: str, b: str) -> int:
    rows = [[0] * (len(b) + 1) for _ in range(len(a) + 1)]
    for i in range(len(a) + 1):
        rows[i][0] = i
    for j in range(len(b) + 1):
        rows[0][j] = j
    for i in range(1, len(a) + 1):
        for j in range(1, len(b) + 1):
            cost = 0 if a[i - 1] == b[j - 1] else 1
            rows[i][j] = min(rows[i - 1][j] + 1, rows[i][j - 1] + 1, rows[i - 1][j - 1] + cost)
            if i > 1 and j > 1 and a[i - 1] == b[j - 2] and a[i - 2] == b[j - 1]:
                rows[i][j] = min(rows[i][j], rows[i - 2][j - 2] + 1)
    return rows[len(a)][len(b)]


short_words = st.text(alphabet="abcd", max_size=8)


@given(short_words, short_words, st.integers(0, 3))
def test_osa_distance_agrees_with_the_textbook_algorithm(a: str, b: str, limit: int) -> None:
    """The optimised, bounded distance equals the plain dynamic programme (capped at limit+1)."""
    reference = _reference_osa(a, b)
    expected = (reference, min(reference, limit + 1), reference <= 1)
    actual = (osa_distance(a, b), osa_distance(a, b, limit), within_one_edit(a, b))
    assert expected == actual


@pytest.mark.parametrize(("a", "b", "cost"), [
    ("rily", "riley", 1), ("rily", "lily", 2), ("jakc", "jack", 1), ("jakc", "jake", 1),
    ("ab", "axb", 1), ("ab", "xab", 2), ("abc", "bac", 2), ("joh", "john", 1), ("same", "same", 0),
])
def test_typo_cost_counts_an_edit_to_the_first_letter_twice(a: str, b: str, cost: int) -> None:
    """Keystrokes between two names, where changing, adding, dropping or swapping the first
    letter counts two and any other edit one."""
    expected = cost
    actual = typo_cost(a, b)
    assert expected == actual


@given(short_words, short_words)
def test_typo_cost_lies_between_one_and_two_per_keystroke(a: str, b: str) -> None:
    """The weighted cost is at least the plain distance and at most twice it."""
    d = _reference_osa(a, b)
    expected = True
    actual = d <= typo_cost(a, b) <= 2 * d
    assert expected == actual


def test_jaro_winkler_known_values() -> None:
    """Jaro-Winkler matches the published MARTHA/MARHTA and DWAYNE/DUANE values; the prefix
    bonus is given below a Jaro of 0.7 too (SO/SX: 0.667 + 0.1 x 0.333)."""
    expected = (0.961, 0.84, 1.0, 0.0, 0.7)
    actual = (round(jaro_winkler("martha", "marhta"), 3), round(jaro_winkler("dwayne", "duane"), 3),
              jaro_winkler("same", "same"), jaro_winkler("", "abc"), round(jaro_winkler("so", "sx"), 12))
    assert expected == actual


def _reference_jaro_winkler(a: str, b: str) -> float:
    """Jaro-Winkler as the textbook writes it (matching window, half-transpositions), with the
    prefix bonus (scale 0.1, up to four characters) at every Jaro similarity."""
    if a == b:
        return 1.0
    if not a or not b:
        return 0.0
    window = max(max(len(a), len(b)) // 2 - 1, 0)
    used = [False] * len(b)
    matched_a = []
    for i, ca in enumerate(a):
        for j in range(max(0, i - window), min(len(b), i + window + 1)):
            if not used[j] and b[j] == ca:
                used[j] = True
                matched_a.append(ca)
                break
    m = len(matched_a)
    if not m:
        return 0.0
    matched_b = [b[j] for j in range(len(b)) if used[j]]
    half = sum(x != y for x, y in zip(matched_a, matched_b, strict=True)) // 2
    jaro = (m / len(a) + m / len(b) + (m - half) / m) / 3
    prefix = next((k for k in range(min(4, len(a), len(b))) if a[k] != b[k]), min(4, len(a), len(b)))
    return jaro + prefix * 0.1 * (1 - jaro)


@given(short_words, short_words)
def test_jaro_winkler_agrees_with_the_textbook_algorithm(a: str, b: str) -> None:
    """The compiled Jaro with our prefix bonus equals the plain algorithm, below a Jaro of 0.7
    too (where a bonus given only above 0.7 would differ)."""
    expected = round(_reference_jaro_winkler(a, b), 12)
    actual = round(jaro_winkler(a, b), 12)
    assert expected == actual


# --- postcodes --------------------------------------------------------------------------------

@pytest.mark.parametrize(("raw", "expected"), [("ls14ab", "LS1 4AB"), (" sw1a 1aa ", "SW1A 1AA"),
                                               ("M1 1AE", "M1 1AE"), ("ec1a1bb", "EC1A 1BB")])
def test_normalise_postcode(raw: str, expected: str) -> None:
    """UK postcodes come back upper case with one space before the inward code."""
    actual = normalise_postcode(raw)
    assert expected == actual


@given(st.text(max_size=12))
def test_normalise_postcode_is_idempotent_or_refuses(raw: str) -> None:
    """A postcode either normalises to a fixed point or is refused with a FieldError."""
    try:
        once = normalise_postcode(raw)
    except FieldError:
        return
    expected = once
    actual = normalise_postcode(once)
    assert expected == actual


@pytest.mark.parametrize(("fields", "expected"), [
    ({"given_name": "Oscar", "middle_name": "Jean-Luc"}, "jean luc"),
    ({"given_name": "Oscar", "middle_names": "James Paul"}, "james paul"),
    ({"given_name": "Oscar", "middle_names": ""}, None),
    ({"given_name": "Oscar"}, None),
])
def test_middle_names_are_parsed_from_either_spelling(fields: dict[str, str], expected: str | None) -> None:
    """A search identity may carry ``middle_name`` or ``middle_names``; it is normalised like any
    name and travels as ``middle_names``."""
    parsed = parse_identity(fields)
    actual = (parsed.middle_names, parsed.to_wire().get("middle_names"), parsed.extra)
    assert (expected, expected, {}) == actual


@pytest.mark.parametrize(("fields", "field", "reason"), [
    ({"middle_name": "James"}, "identity.middle_name", "only together with given_name"),
    ({"given_name": "Oscar", "middle_name": "A", "middle_names": "Bo"}, "identity.middle_name",
     "got both"),
    ({"given_name": "Oscar", "middle_names": "J"}, "identity.middle_names", "at least 2 letters"),
    ({"given_name": "Oscar", "middle_names": 3}, "identity.middle_names", "expected a string"),
    ({"given_name": "Oscar", "middle_name": "J*"}, "identity.middle_name", "wildcards"),
])
def test_bad_middle_names_are_refused_naming_the_field(fields: dict[str, object], field: str,
                                                       reason: str) -> None:
    """A middle name without a given name, both spellings at once, or a bad value is refused
    with the field named and what was expected."""
    with pytest.raises(ValidationError) as caught:
        parse_identity(fields)
    messages = [(e.field, e.message) for e in caught.value.errors]
    expected = True
    actual = any(f == field and reason in m for f, m in messages)
    assert expected == actual, messages


@given(st.text(min_size=1), st.text())
def test_middle_names_round_trip_through_the_wire(given_name: str, middle: str) -> None:
    """Whatever is typed, a parsed identity's wire form parses back to the same identity."""
    try:
        parsed = parse_identity({"given_name": given_name, "middle_names": middle})
    except ValidationError:
        return
    expected = parsed
    actual = parse_identity(parsed.to_wire())
    assert expected == actual
    assert actual.middle_names is None or actual.middle_names == normalise_name(actual.middle_names)
