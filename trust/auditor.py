"""Reconciling the broker's audit log with the nodes' logs, and reading one child's accesses.

Pure: the caller fetches (and first verifies, see ``trust.logverify``) every log and passes the
entries in as ``(index, bytes)`` pairs. What must hold between the logs:

- every query a node logged has a ``search`` entry in the broker's log with the same query id and
  the same query hash, and names that node among those asked;
- every node the broker says answered (an ``outcome`` result with an ``answer_hash``) has a
  ``query`` entry for that query with the same answer hash;
- every ``search`` has an ``outcome`` that accounts for each node asked (an answer, or
  ``unanswered`` with the reason), and every ``outcome`` has its ``search``.

Each ``Discrepancy`` names the query, the node, and the index of the entry on each side that
has one.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from enum import StrEnum
from typing import Any

from federation import safejson
from federation.canonical import JsonObject

Entries = Sequence[tuple[int, Mapping[str, Any]]]


class DiscrepancyKind(StrEnum):
    """What does not agree between two logs."""

    UNREADABLE_ENTRY = "unreadable-entry"
    """An entry is not a JSON object (its log verified, so it was logged like that)."""
    NODE_QUERY_WITHOUT_SEARCH = "node-query-without-broker-search"
    """A node answered (or refused) a verified query the broker never logged."""
    QUERY_HASH_MISMATCH = "query-hash-mismatch"
    """Broker and node logged the same query id with different query hashes."""
    NODE_NOT_ASKED = "node-not-in-fan-out"
    """A node logged a query the broker's search entry says was not sent to it."""
    ANSWER_WITHOUT_NODE_ENTRY = "broker-answer-without-node-entry"
    """The broker logged an answer from a node whose log has no answer to that query."""
    ANSWER_HASH_MISMATCH = "answer-hash-mismatch"
    """Broker and node logged different answers to the same query."""
    ANSWERED_BUT_UNANSWERED = "node-answered-broker-unanswered"
    """The node logged an answer the broker logged as unanswered without saying it had sent the
    query and stopped waiting (an answer lost or rejected; a late answer to a query the broker
    logged ``abandoned`` is counted in ``ReconcileReport.late_answers`` instead)."""
    SEARCH_WITHOUT_OUTCOME = "search-without-outcome"
    """A search has no outcome entry (still in flight, or the broker stopped mid-search)."""
    NODE_MISSING_FROM_OUTCOME = "node-missing-from-outcome"
    """An outcome does not account for a node the search entry says was asked."""
    OUTCOME_WITHOUT_SEARCH = "outcome-without-search"
    """An outcome entry has no search entry before it."""
    CHECK_NODE_WITHOUT_BROKER = "check-step-without-broker-entry"
    """A node answered a check message the broker never logged an answer to (or a different one)."""
    CHECK_BROKER_WITHOUT_NODE = "check-answer-without-node-entry"
    """The broker logged a node's answer to a check message that node never logged."""
    CHECK_WITHOUT_POSSIBLE_MATCH = "check-without-possible-match"
    """The broker sent a check to a node that did not answer that search ``possible_match``."""
    CHECK_REQUEST_UNANSWERED = "check-request-without-answer"
    """The broker logged a check message but no answer (nor ``unanswered``) for it."""


@dataclass(frozen=True)
class Discrepancy:
    """One disagreement, with the entry index on each side that has one."""

    kind: DiscrepancyKind
    message: str
    query_id: str | None = None
    node: str | None = None
    broker_index: int | None = None
    node_index: int | None = None

    def __str__(self) -> str:
        where = []
        if self.broker_index is not None:
            where.append(f"broker entry {self.broker_index}")
        if self.node_index is not None:
            where.append(f"{self.node} entry {self.node_index}")
        at = f" [{', '.join(where)}]" if where else ""
        return f"{self.kind}{at}: {self.message}"

    def to_json(self) -> JsonObject:
        return {"kind": str(self.kind), "message": self.message, "query_id": self.query_id,
                "node": self.node, "broker_index": self.broker_index, "node_index": self.node_index}


@dataclass(frozen=True)
class ReconcileReport:
    """The outcome of reconciling one broker log with the logs of some nodes."""

    searches: int
    node_queries: Mapping[str, int]
    discrepancies: tuple[Discrepancy, ...]
    refused: Mapping[str, int] = field(default_factory=dict)
    late_answers: Mapping[str, int] = field(default_factory=dict)
    """Per node: answers it logged to queries the broker logged as sent and ``abandoned`` (its
    deadline passed first). Both logs agree on what happened and nothing reached the
    practitioner, so these are counted, not reported as discrepancies."""

    @property
    def ok(self) -> bool:
        return not self.discrepancies


ENTRY_LIMITS = safejson.JsonLimits(max_bytes=16 * 1024 * 1024, max_depth=32)
"""Bounds on one logged entry as the auditor reads it (the log's own entry size limit)."""


def parse_entries(raw: Iterable[tuple[int, bytes]], *, node: str | None = None
                  ) -> tuple[list[tuple[int, Mapping[str, Any]]], list[Discrepancy]]:
    """Decode logged entries; anything that is not a JSON object becomes a discrepancy."""
    parsed: list[tuple[int, Mapping[str, Any]]] = []
    problems: list[Discrepancy] = []
    for index, data in raw:
        try:
            value = safejson.parse(data, "entry", ENTRY_LIMITS)  # entries come from the audited service
        except safejson.JsonError:
            value = None
        if not isinstance(value, dict):
            side = {"node_index": index} if node is not None else {"broker_index": index}
            problems.append(Discrepancy(DiscrepancyKind.UNREADABLE_ENTRY,
                                        "expected a JSON object", node=node, **side))  # type: ignore[arg-type]
            continue
        parsed.append((index, value))
    return parsed, problems


def _str(entry: Mapping[str, Any], name: str) -> str | None:
    value = entry.get(name)
    return value if isinstance(value, str) else None


def reconcile(broker: Entries, nodes: Mapping[str, Entries]) -> ReconcileReport:
    """Check the broker's entries against each node's (see the module docstring)."""
    found: list[Discrepancy] = []
    searches: dict[str, tuple[int, Mapping[str, Any]]] = {}
    outcomes: dict[str, tuple[int, Mapping[str, Any]]] = {}
    for index, entry in broker:
        qid = _str(entry, "query_id")
        if qid is None:
            continue
        if entry.get("type") == "search":
            searches.setdefault(qid, (index, entry))
        elif entry.get("type") == "outcome":
            outcomes.setdefault(qid, (index, entry))
            if qid not in searches:
                found.append(Discrepancy(DiscrepancyKind.OUTCOME_WITHOUT_SEARCH,
                                         f"outcome of query {qid} has no search entry before it",
                                         qid, broker_index=index))

    counts: dict[str, int] = {}
    refused: dict[str, int] = {}
    late: dict[str, int] = {}
    answered: dict[tuple[str, str], tuple[int, Mapping[str, Any]]] = {}
    for node_id, entries in sorted(nodes.items()):
        counts[node_id] = 0
        refused[node_id] = 0
        late[node_id] = 0
        for index, entry in entries:
            if entry.get("type") == "refused":
                refused[node_id] += 1
                continue
            if entry.get("type") != "query":
                continue
            counts[node_id] += 1
            qid = _str(entry, "query_id") or ""
            answer_hash = _str(entry, "answer_hash")
            if answer_hash is not None:
                answered.setdefault((node_id, qid), (index, entry))
            search = searches.get(qid)
            if search is None:
                found.append(Discrepancy(
                    DiscrepancyKind.NODE_QUERY_WITHOUT_SEARCH,
                    f"{node_id} logged query {qid} (outcome {entry.get('outcome')!r}) but the broker "
                    "never logged a search with that id", qid, node_id, node_index=index))
                continue
            b_index, b_entry = search
            if b_entry.get("query_hash") != entry.get("query_hash"):
                found.append(Discrepancy(
                    DiscrepancyKind.QUERY_HASH_MISMATCH,
                    f"query {qid}: broker logged hash {b_entry.get('query_hash')}, {node_id} logged "
                    f"{entry.get('query_hash')}", qid, node_id, b_index, index))
            asked = b_entry.get("nodes")
            if isinstance(asked, list) and node_id not in asked:
                found.append(Discrepancy(
                    DiscrepancyKind.NODE_NOT_ASKED,
                    f"query {qid} reached {node_id}, which the broker's search entry does not list",
                    qid, node_id, b_index, index))
            if answer_hash is None:
                continue
            outcome = outcomes.get(qid)
            result = outcome[1].get("results", {}).get(node_id) if outcome is not None else None
            if outcome is None or not isinstance(result, Mapping):
                continue  # reported below from the broker's side
            if result.get("status") == "unanswered" and result.get("abandoned") is True:
                late[node_id] += 1  # sent, then given up on: the node's answer came too late
            elif result.get("status") == "unanswered":
                found.append(Discrepancy(
                    DiscrepancyKind.ANSWERED_BUT_UNANSWERED,
                    f"{node_id} logged an answer to query {qid}; the broker logged it unanswered "
                    f"({result.get('reason')})", qid, node_id, outcome[0], index))
            elif result.get("answer_hash") != answer_hash:
                found.append(Discrepancy(
                    DiscrepancyKind.ANSWER_HASH_MISMATCH,
                    f"query {qid}: broker logged answer hash {result.get('answer_hash')}, {node_id} "
                    f"logged {answer_hash}", qid, node_id, outcome[0], index))

    for qid, (s_index, s_entry) in searches.items():
        found_outcome = outcomes.get(qid)
        if found_outcome is None:
            found.append(Discrepancy(
                DiscrepancyKind.SEARCH_WITHOUT_OUTCOME,
                f"search {qid} has no outcome entry (in flight when the log was read, or the broker "
                "stopped during the search)", qid, broker_index=s_index))
            continue
        o_index, o_entry = found_outcome
        results = o_entry.get("results")
        results = results if isinstance(results, Mapping) else {}
        asked = s_entry.get("nodes")
        for node_id in asked if isinstance(asked, list) else []:
            if node_id not in results:
                found.append(Discrepancy(
                    DiscrepancyKind.NODE_MISSING_FROM_OUTCOME,
                    f"search {qid} was sent to {node_id}, but its outcome says nothing about it",
                    qid, node_id, o_index))
        for node_id, result in results.items():
            if node_id not in nodes or not isinstance(result, Mapping):
                continue
            if isinstance(result.get("answer_hash"), str) and (node_id, qid) not in answered:
                found.append(Discrepancy(
                    DiscrepancyKind.ANSWER_WITHOUT_NODE_ENTRY,
                    f"the broker logged an answer from {node_id} to query {qid} (status "
                    f"{result.get('status')!r}), but {node_id}'s log has no answer to it",
                    qid, node_id, o_index))
    found.extend(reconcile_checks(broker, nodes, outcomes))
    found.sort(key=lambda d: (d.broker_index if d.broker_index is not None else -1,
                              d.node or "", d.node_index if d.node_index is not None else -1))
    return ReconcileReport(len(searches), counts, tuple(found), refused, late)


ACCESS_COLUMNS = ("time", "query_id", "log_index", "practitioner", "practitioner_id", "organisation",
                  "role", "identity_provider", "purpose", "on_behalf_of", "outcome", "how_matched")


def access_rows(entries: Entries, pseudonym: str) -> list[dict[str, str]]:
    """Every query in one node's log that touched the record with ``pseudonym``, oldest first:
    who searched, when, from which organisation, in which role and for what purpose."""
    rows: list[dict[str, str]] = []
    for index, entry in entries:
        kind = entry.get("type")
        if kind not in ("query", *CHECK_ACCESS):
            continue
        candidates = entry.get("candidate_pseudonyms")
        if kind in CHECK_ACCESS:
            how = _check_access(entry, pseudonym)
            if how is None:
                continue
        elif entry.get("pseudonym") == pseudonym:
            how = "matched"
        elif isinstance(candidates, list) and pseudonym in candidates:
            how = "possible match (one of several candidates)"
        else:
            continue
        who = entry.get("practitioner") or entry.get("officer")
        who = who if isinstance(who, Mapping) else {}
        mediated = entry.get("on_behalf_of")
        on_behalf_of = ""
        if isinstance(mediated, Mapping):
            on_behalf_of = ", ".join(str(mediated[k]) for k in ("name", "organisation", "role", "phone")
                                     if mediated.get(k))
        rows.append({
            "time": str(entry.get("time", "")),
            "query_id": str(entry.get("query_id", "")),
            "log_index": str(index),
            "practitioner": str(who.get("name", "")),
            "practitioner_id": str(who.get("sub", "")),
            "organisation": str(who.get("org", "")),
            "role": str(who.get("role", "")),
            "identity_provider": str(who.get("iss", "")),
            "purpose": str(entry.get("purpose") or ""),
            "on_behalf_of": on_behalf_of,
            "outcome": (_check_outcome(entry) if kind in CHECK_ACCESS else str(entry.get("outcome", "")))
            + (f" ({entry['reason']})" if entry.get("reason") else ""),
            "how_matched": how,
        })
    return rows


CHECK_ACCESS = ("check-request", "check-view", "check-decision", "check-outcome")
"""Check steps that reach a record (see ``node.checks``): asked about it, shown it, decided, disclosed."""


def _check_access(entry: Mapping[str, Any], pseudonym: str) -> str | None:
    """How a check step reached the record with ``pseudonym``, or ``None`` if it did not."""
    kind = entry.get("type")
    candidates = entry.get("candidate_pseudonyms")
    if kind in ("check-request", "check-view"):
        if isinstance(candidates, list) and pseudonym in candidates:
            return ("check asked (one of the candidates)" if kind == "check-request"
                    else "check opened by a signposting officer (one of the candidates)")
        return None
    if entry.get("pseudonym") != pseudonym:
        return None
    return "check decided by a signposting officer" if kind == "check-decision" else "check answered"


def _check_outcome(entry: Mapping[str, Any]) -> str:
    kind = entry.get("type")
    if kind == "check-decision":
        return f"decided {entry.get('decision')}"
    if kind == "check-outcome":
        disclosed = entry.get("disclosed")
        return f"{entry.get('state')}" + (f", disclosed {disclosed}" if disclosed else "")
    if kind == "check-view":
        return "viewed"
    return "check requested"


CHECK_NODE_STEPS = ("check-request", "check-information", "check-outcome")
CHECK_BROKER_SENT = ("check-request", "check-information")


def reconcile_checks(broker: Entries, nodes: Mapping[str, Entries],
                     outcomes: Mapping[str, tuple[int, Mapping[str, Any]]]) -> list[Discrepancy]:
    """Pair every check step (see ``node.checks`` and ``broker.checks``) between the logs.

    Each node answer to a check message (request, information, outcome) is paired by its answer
    hash with the broker's ``check-answer`` entry, and the reverse; each ``check-request`` the
    broker sent names a search whose outcome says that node answered ``possible_match``; each
    request or information the broker logged has its ``check-answer`` (an answer or
    ``unanswered``). Officers' decisions, views and expiries are the node's own steps: they are
    read from its log alone (``access_rows``).
    """
    found: list[Discrepancy] = []
    answers: dict[str, tuple[int, Mapping[str, Any]]] = {}
    answered_requests: set[str] = set()
    for index, entry in broker:
        if entry.get("type") == "check-answer":
            if isinstance(entry.get("answer_hash"), str) and entry.get("status") != "unanswered":
                answers.setdefault(str(entry["answer_hash"]), (index, entry))
            answered_requests.add(str(entry.get("request_hash")))
    for index, entry in broker:
        kind = entry.get("type")
        if kind not in CHECK_BROKER_SENT:
            continue
        check = _str(entry, "check_id")
        node = _str(entry, "authority")
        if str(entry.get("request_hash")) not in answered_requests:
            found.append(Discrepancy(DiscrepancyKind.CHECK_REQUEST_UNANSWERED,
                                     f"{kind} for check {check} has no check-answer entry", check, node,
                                     broker_index=index))
        if kind == "check-request":
            outcome = outcomes.get(_str(entry, "search_id") or "")
            results = outcome[1].get("results") if outcome is not None else None
            result = results.get(node) if isinstance(results, Mapping) and node else None
            if not isinstance(result, Mapping) or result.get("status") != "possible_match":
                found.append(Discrepancy(DiscrepancyKind.CHECK_WITHOUT_POSSIBLE_MATCH,
                                         f"check {check} was sent to {node}, which did not answer search "
                                         f"{entry.get('search_id')} possible_match", check, node,
                                         broker_index=index))
    seen: set[str] = set()
    for node_id, entries in sorted(nodes.items()):
        for index, entry in entries:
            if entry.get("type") not in CHECK_NODE_STEPS or not isinstance(entry.get("answer_hash"), str):
                continue
            answer_hash = str(entry["answer_hash"])
            seen.add(answer_hash)
            paired = answers.get(answer_hash)
            if (paired is None or paired[1].get("check_id") != entry.get("check_id")
                    or paired[1].get("authority") != node_id
                    or paired[1].get("request_hash") != entry.get("request_hash")):
                found.append(Discrepancy(DiscrepancyKind.CHECK_NODE_WITHOUT_BROKER,
                                         f"{node_id} logged {entry.get('type')} for check "
                                         f"{entry.get('check_id')} but the broker logged no matching "
                                         "check-answer",
                                         _str(entry, "check_id"), node_id, node_index=index))
    for answer_hash, (index, entry) in answers.items():
        if answer_hash not in seen and entry.get("authority") in nodes:
            found.append(Discrepancy(DiscrepancyKind.CHECK_BROKER_WITHOUT_NODE,
                                     f"the broker logged an answer from {entry.get('authority')} to check "
                                     f"{entry.get('check_id')} that the node never logged",
                                     _str(entry, "check_id"), _str(entry, "authority"), broker_index=index))
    return found
