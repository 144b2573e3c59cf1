"""``trust.auditor``: reconciling a broker log with node logs, and one child's access rows.

The rules as a table of named cases: each builds a broker log and node logs from a clean search
with one thing changed, and names the discrepancies expected, with both sides' indexes."""

from __future__ import annotations

import copy
from collections.abc import Callable
from typing import Any

import pytest

from trust.auditor import DiscrepancyKind, access_rows, parse_entries, reconcile

Log = list[dict[str, Any]]


def clean() -> tuple[Log, dict[str, Log]]:
    """Query q1 asked of alpha (match) and beta (no match); both logged on every side."""
    broker: Log = [
        {"type": "search", "query_id": "q1", "query_hash": "h1", "nodes": ["alpha", "beta"]},
        {"type": "outcome", "query_id": "q1", "results": {
            "alpha": {"status": "match", "answer_hash": "a1"},
            "beta": {"status": "no_match", "answer_hash": "b1"}}},
    ]
    nodes: dict[str, Log] = {
        "alpha": [{"type": "purge"}, {"type": "query", "query_id": "q1", "query_hash": "h1",
                                      "outcome": "match", "pseudonym": "p-amara", "answer_hash": "a1"}],
        "beta": [{"type": "query", "query_id": "q1", "query_hash": "h1", "outcome": "no_match",
                  "pseudonym": None, "answer_hash": "b1"}],
    }
    return broker, nodes


def _drop_node_entry(b: Log, n: dict[str, Log]) -> None:
    del n["alpha"][1]


def _bypass(b: Log, n: dict[str, Log]) -> None:
    n["beta"].append({"type": "query", "query_id": "q2", "query_hash": "h2", "outcome": "match",
                      "answer_hash": "b2"})


def _node_down(b: Log, n: dict[str, Log]) -> None:
    b[1]["results"]["alpha"] = {"status": "unanswered", "reason": "not reachable"}
    del n["alpha"][1]


def _late(b: Log, n: dict[str, Log]) -> None:
    b[1]["results"]["alpha"] = {"status": "unanswered", "reason": "no answer within 3 s"}


def _abandoned(b: Log, n: dict[str, Log]) -> None:
    b[1]["results"]["alpha"] = {"status": "unanswered", "reason": "no answer within 3 s", "abandoned": True}


def _abandoned_never_answered(b: Log, n: dict[str, Log]) -> None:
    _abandoned(b, n)
    del n["alpha"][1]


def _forget_beta(b: Log, n: dict[str, Log]) -> None:
    b[1]["results"].pop("beta")


def _set(path: tuple[Any, ...], value: Any) -> Callable[[Log, dict[str, Log]], None]:
    def change(b: Log, n: dict[str, Log]) -> None:
        target: Any = b if path[0] == "broker" else n[path[0]]
        for key in path[1:-1]:
            target = target[key]
        target[path[-1]] = value
    return change


CASES: dict[str, tuple[Callable[[Log, dict[str, Log]], None], list[tuple[str, str | None, int | None,
                                                                          int | None]]]] = {
    "clean": (lambda b, n: None, []),
    "node down, logged unanswered (fine)": (_node_down, []),
    "broker says alpha answered, alpha's log has nothing": (
        _drop_node_entry, [("broker-answer-without-node-entry", "alpha", 1, None)]),
    "query posted straight to a node": (_bypass, [("node-query-without-broker-search", "beta", None, 1)]),
    "query hash differs": (_set(("beta", 0, "query_hash"), "hX"), [("query-hash-mismatch", "beta", 0, 0)]),
    "answer hash differs": (
        _set(("alpha", 1, "answer_hash"), "aX"), [("answer-hash-mismatch", "alpha", 1, 1)]),
    "node answered, broker logged unanswered": (_late, [("node-answered-broker-unanswered", "alpha", 1, 1)]),
    "node answered after the broker logged the query abandoned (late, counted)": (_abandoned, []),
    "query abandoned and never answered (fine)": (_abandoned_never_answered, []),
    "abandoned flag that is not true": (
        lambda b, n: (_abandoned(b, n), b[1]["results"]["alpha"].update(abandoned="yes")),
        [("node-answered-broker-unanswered", "alpha", 1, 1)]),
    "node not in the fan-out": (
        _set(("broker", 0, "nodes"), ["alpha"]), [("node-not-in-fan-out", "beta", 0, 0)]),
    "outcome forgets a node": (
        _forget_beta, [("node-missing-from-outcome", "beta", 1, None)]),
    "search without outcome": (lambda b, n: b.__delitem__(1), [("search-without-outcome", None, 0, None)]),
    "outcome without search": (
        lambda b, n: b.append({"type": "outcome", "query_id": "q9", "results": {}}),
        [("outcome-without-search", None, 2, None)]),
}


@pytest.mark.parametrize("case", CASES)
def test_reconcile_rules(case: str) -> None:
    """Proves each reconcile rule reports exactly its discrepancy, naming both sides' indexes."""
    change, expected = CASES[case]
    broker, nodes = copy.deepcopy(clean())
    change(broker, nodes)
    report = reconcile(list(enumerate(broker)), {k: list(enumerate(v)) for k, v in nodes.items()})
    assert expected == [(str(d.kind), d.node, d.broker_index, d.node_index) for d in report.discrepancies]
    assert (not expected) == report.ok


def test_late_answers_to_abandoned_queries_are_counted_per_node() -> None:
    """Proves regression for the soak's unexplained discrepancies: a node that logged an answer
    after the broker logged the query sent and abandoned (its deadline passed) is counted in
    ``late_answers`` for that node, not reported as a discrepancy; the same answer without the
    broker's ``abandoned`` is still a discrepancy (see the table above)."""
    broker, nodes = copy.deepcopy(clean())
    _abandoned(broker, nodes)
    report = reconcile(list(enumerate(broker)), {k: list(enumerate(v)) for k, v in nodes.items()})
    assert (True, {"alpha": 1, "beta": 0}) == (report.ok, dict(report.late_answers))


def test_refused_entries_are_counted_not_reconciled() -> None:
    """Proves queries refused before verification (forged, unsigned) are counted per node, not
    reported as discrepancies: nobody vouched for them, so the broker cannot have logged them."""
    broker, nodes = clean()
    nodes["beta"].append({"type": "refused", "claimed_query_id": "zz", "kind": "untrusted-query"})
    report = reconcile(list(enumerate(broker)), {k: list(enumerate(v)) for k, v in nodes.items()})
    assert (True, {"alpha": 0, "beta": 1}, 1) == (report.ok, dict(report.refused), report.searches)


def test_unreadable_entries_are_named() -> None:
    """Proves an entry that is not a JSON object is reported with its index and side."""
    parsed, problems = parse_entries([(0, b'{"type":"purge"}'), (1, b"[1]"), (2, b"\xff")], node="alpha")
    assert [0] == [i for i, _ in parsed]
    assert [(DiscrepancyKind.UNREADABLE_ENTRY, 1), (DiscrepancyKind.UNREADABLE_ENTRY, 2)] == [
        (p.kind, p.node_index) for p in problems]


def test_access_rows_hold_matches_and_candidate_listings_only() -> None:
    """Proves one child's access rows are the queries that matched its pseudonym or listed it as a
    possible match, with who, organisation, role, purpose and mediation."""
    who = {"iss": "leeds-idp", "sub": "sam", "name": "Sam Patel", "org": "Leeds CSC", "role": "practitioner"}
    log: Log = [
        {"type": "query", "time": "t1", "query_id": "q1", "practitioner": who, "purpose": "p",
         "outcome": "match", "pseudonym": "p-amara", "candidate_pseudonyms": []},
        {"type": "query", "time": "t2", "query_id": "q2", "practitioner": who, "purpose": "p",
         "outcome": "match", "pseudonym": "p-leo", "candidate_pseudonyms": []},
        {"type": "query", "time": "t3", "query_id": "q3", "practitioner": {**who, "role": "mediator"},
         "purpose": "p", "outcome": "possible_match", "pseudonym": None,
         "candidate_pseudonyms": ["p-amara", "p-other"],
         "on_behalf_of": {"name": "Dr Lee", "organisation": "GP", "role": "GP", "phone": "1"}},
        {"type": "purge"},
    ]
    rows = access_rows(list(enumerate(log)), "p-amara")
    assert [("t1", "0", "Sam Patel", "Leeds CSC", "practitioner", "", "matched"),
            ("t3", "2", "Sam Patel", "Leeds CSC", "mediator", "Dr Lee, GP, GP, 1",
             "possible match (one of several candidates)")] == [
        (r["time"], r["log_index"], r["practitioner"], r["organisation"], r["role"], r["on_behalf_of"],
         r["how_matched"]) for r in rows]
