"""Rules that weigh what the node cannot see (issue 13, second round): children elsewhere in
England who share a held child's names and date of birth, the sex England registers a name for,
and a brother given a held child's names the other way round."""

from __future__ import annotations

import random
from datetime import date, timedelta

import pytest

from federation.names import known_given_names, registered_sex
from federation.protocol import Status
from federation.tools import synthetic
from node.comparison import NameLevel, compare_given
from node.matching import NATIONAL_POPULATION, MatchIndex
from node.store import Child
from tests.test_matching import ask, make_child


def _common_names_node() -> MatchIndex:
    """A node of 2,000 children where Oliver and Smith are common (2% and 1.5% of children), with
    one Oliver Smith and one child of rare names."""
    rng = random.Random(13)
    kids: list[Child] = []
    for i in range(2000):
        given = "Oliver" if i % 50 == 0 else synthetic.GIVEN_NAMES_M[i % len(synthetic.GIVEN_NAMES_M)]
        family = "Smith" if i % 67 == 0 else "".join(rng.choice("bcdfghklmnprstvwz") + rng.choice("aeiou")
                                                     for _ in range(4))
        dob = (date(2008, 1, 1) + timedelta(days=rng.randrange(6570))).isoformat()
        kids.append(make_child(f"c{i}", given, family, dob, synthetic.postcode(rng, "leeds"), "M"))
    kids.append(make_child("oliver", "Oliver", "Smith", "2016-03-04", "LS6 2QX", "M"))
    kids.append(make_child("rare", "Wojciech", "Przybylski", "2016-03-04", "LS6 2QY", "M"))
    return MatchIndex(kids)


NODE = _common_names_node()


@pytest.mark.parametrize(("case", "fields", "status"), [
    ("common names, the home typed", dict(given_name="Oliver", family_name="Smith", sex="M",
                                          postcode="LS6 2QX"), Status.MATCH),
    ("common names, the sex typed (a set accepted before names and date of birth alone)",
     dict(given_name="Oliver", family_name="Smith", sex="M"), Status.MATCH),
    ("common names, neither postcode nor sex: a namesake elsewhere could be meant",
     dict(given_name="Oliver", family_name="Smith"), Status.POSSIBLE_MATCH),
    ("rare names, neither postcode nor sex: decisive", dict(given_name="Wojciech",
                                                            family_name="Przybylski"), Status.MATCH),
])
def test_trap_namesake_elsewhere_from_names_and_date_of_birth_alone(
        case: str, fields: dict[str, str], status: Status) -> None:
    """Both names and the date of birth alone (no postcode, no sex, no agreeing identifier) say
    nothing about where the child lives: a ``match`` needs the evidence to reach the threshold
    against every child in England (``NATIONAL_POPULATION``), so common names born on one day
    are ``possible_match`` and only names rare enough are decisive."""
    result = NODE.match(ask(date_of_birth="2016-03-04", **fields))
    expected = status
    actual = result.status
    assert expected == actual, case


def test_an_agreeing_identifier_places_the_child() -> None:
    """With the child's NHS number, common names need neither postcode nor sex."""
    nhs = "9434765919"
    others = [c for c in NODE.children.values() if c.record_id not in ("oliver", "rare")]
    node = MatchIndex([*others, make_child("oliver", "Oliver", "Smith", "2016-03-04", "LS6 2QX",
                                           "M", nhs=nhs)])
    result = node.match(ask(given_name="Oliver", family_name="Smith", date_of_birth="2016-03-04",
                            nhs_number=nhs))
    expected = (Status.MATCH, "oliver")
    actual = (result.status, result.record_id)
    assert expected == actual


def test_national_population_is_england_s_children() -> None:
    """About 12 million children aged 0-17 live in England (ONS mid-year estimates)."""
    assert 11_000_000 <= NATIONAL_POPULATION <= 13_000_000


@pytest.mark.parametrize(("name", "sex"), [("jade", "F"), ("georgia", "F"), ("james", "M"),
                                           ("jamie", None), ("charlie", None), ("noor", None)])
def test_registered_sex_leaves_names_of_both_sexes_out(name: str, sex: str | None) -> None:
    expected = sex
    actual = registered_sex(name)
    assert expected == actual


def _james_node() -> MatchIndex:
    return MatchIndex([make_child("held", "James", "Pemberton", "2016-05-11", "LS7 3JT", "M")])


@pytest.mark.parametrize(("case", "typed", "sex", "status"), [
    ("as close to Jade, registered for girls; a boy is searched for", "Jades", "M", Status.MATCH),
    ("the sex not given: a girl named Jade could be meant", "Jades", None, Status.POSSIBLE_MATCH),
    ("a girl searched for: Jade, a co-twin the node does not hold", "Jades", "F",
     Status.POSSIBLE_MATCH),
    ("as close to Jamie, given to boys and girls", "Jamis", "M", Status.POSSIBLE_MATCH),
])
def test_typo_as_close_to_a_name_of_the_other_sex(case: str, typed: str, sex: str | None,
                                                  status: Status) -> None:
    """A typo as close to another registered name as to the held child's is matched when the
    sex is given, agrees, and England registers that other name for the other sex only (the
    node holding no child of the query's sex with it): a co-twin so named would be of the
    other sex. A name given to both sexes keeps the guard."""
    fields = dict(given_name=typed, family_name="Pemberton", date_of_birth="2016-05-11",
                  postcode="LS7 3JT") | ({"sex": sex} if sex else {})
    expected = status
    actual = _james_node().match(ask(**fields)).status
    assert expected == actual, case


@pytest.mark.parametrize(("case", "query", "record", "level"), [
    ("the same names the other way round", ("leo", "muhammad"), ("muhammad", "leo"), NameLevel.MIDDLE),
    ("spaces aside", ("ja", "xson"), ("jaxson", ""), NameLevel.EXACT),
    ("the same first and middle names", ("mary", "jane"), ("mary", "jane"), NameLevel.EXACT),
])
def test_names_in_another_order_are_a_middle_name_agreement(
        case: str, query: tuple[str, str], record: tuple[str, str], level: NameLevel) -> None:
    """Leo Muhammad typed for a held Muhammad Leo agrees only through a middle name: a brother
    given the same two names the other way round looks like this."""
    expected = level
    actual = compare_given(*query, *record, known_given_names())
    assert expected == actual, case


def test_trap_brother_with_the_names_the_other_way_round() -> None:
    """Family name, home and a date one digit out agree; the typed first name is the held
    child's middle name and the typed middle name its first: never a ``match``."""
    held = make_child("held", "Muhammad", "Fieham", "2014-05-28", "LS1 5PU", "M")
    held = held._replace(middle_names="leo")
    result = MatchIndex([held]).match(ask(given_name="Leo Muhammad", family_name="Fieham",
                                          date_of_birth="2014-09-28", postcode="LS1 5PU", sex="M"))
    expected = Status.POSSIBLE_MATCH
    actual = result.status
    assert expected == actual
