"""Measuring the matcher on labelled data: FEBRL and synthetic children with realistic errors.

A labelled set is a node's records and a list of queries, each with the record it should find
(or ``None`` when the node does not hold that child, so that any ``match`` is false). Every query
goes through the real ``MatchIndex.match``; the report gives precision, recall, false matches,
misses, ``possible_match`` answers and per-query latency.

Sets (``federation.tools.datasets``):

- ``febrl1`` .. ``febrl3``: the deduplication sets of the FEBRL generator (originals as the
  node's records, duplicates as queries). Thresholds were chosen on these and ``synthetic``.
- ``febrl4``: dataset A as the node's records, every record of B as a query. Reported only.
  (``federation.tools.febrl``)
- ``synthetic``: seeded UK children in households (siblings, twins, common names, aliases)
  with the errors people make when typing them (``federation.tools.households``), and
  adversarial traps for children the node does not hold (``federation.tools.trapset``).

This module runs a set through the matcher and reports (``run``, ``format_report``,
``eval_matching``).
"""

from __future__ import annotations

import math
import random
import statistics
import time
from collections import Counter
from collections.abc import Callable
from typing import Any

from federation.protocol import Status
from federation.tools.datasets import DATASETS, list_datasets, load, synthetic_set
from federation.tools.febrl import load_febrl
from federation.tools.labelled import EvaluationError, LabelledQuery, LabelledSet
from node.matching import MatchIndex

# The sets and their loaders live in federation.tools.datasets (and febrl, households, trapset);
# they are named here too, as the one door the command line and tests use.
__all__ = ["DATASETS", "EvaluationError", "LabelledQuery", "LabelledSet", "eval_matching",
           "format_report", "list_datasets", "load", "load_febrl", "percentile", "run",
           "synthetic_set"]


def percentile(values: list[float], q: float) -> float:
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
            for pattern in _pattern_keys(q.patterns):
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
        "latency_p50_ms": percentile(latencies, 0.50) * 1000,
        "latency_p99_ms": percentile(latencies, 0.99) * 1000,
        "latency_mean_ms": statistics.fmean(latencies) * 1000 if latencies else 0.0,
        "build_seconds": build,
        "outcomes": dict(outcome),
        "by_pattern": {k: dict(v) for k, v in sorted(by_pattern.items())},
        "by_category": {k: _category_figures(v) for k, v in sorted(by_category.items())},
    }


# Error patterns also reported when they come with a second error (the hardest combinations).
COMBINED_PATTERNS = ("dob_digit", "moved", "typo_given", "nickname")


def _pattern_keys(patterns: tuple[str, ...]) -> list[str]:
    """The rows a held child's query counts in: each of its error patterns (or ``none``), and
    ``<pattern>+another`` for those of ``COMBINED_PATTERNS`` that came with a second error."""
    keys = list(patterns) or ["none"]
    if len(patterns) > 1:
        keys.extend(f"{p}+another" for p in patterns if p in COMBINED_PATTERNS)
    return keys


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

