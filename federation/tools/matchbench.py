"""The matcher at the size of England's largest authorities: ``signpost bench matching``.

Builds a node of synthetic children (households with siblings, twins and common names; the same
generator as the ``synthetic`` evaluation set), then times queries carrying realistic errors,
half of them for children the node does not hold. Reports index build time, the process's
resident memory and per-query latency. Everything runs in this process: no HTTP, no SQLite.
"""

from __future__ import annotations

import gc
import os
import platform
import random
import resource
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

from federation.protocol import Status
from federation.tools import evaluation, households
from node.matching import MatchIndex


def resident_memory_bytes() -> int:
    """The process's resident set size now (Linux), else its peak as the OS reports it."""
    status = Path("/proc/self/status")
    if status.exists():
        for line in status.read_text().splitlines():
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) * 1024
    return peak_memory_bytes()


def machine() -> dict[str, Any]:
    """The machine and its load, reported with every figure (the load average of other work
    on a shared machine changes latencies more than anything in the matcher)."""
    return {"cpus": os.cpu_count(), "python": platform.python_version(),
            "load_average": [round(x, 2) for x in os.getloadavg()]}


def peak_memory_bytes() -> int:
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    return peak if sys.platform == "darwin" else peak * 1024


def bench_matching(children: int = 350_000, queries: int = 10_000, seed: int = 0,
                   out: Callable[[str], None] = print) -> dict[str, Any]:
    """Build an index of ``children`` synthetic children and time ``queries`` queries."""
    machine_before = machine()
    rng = random.Random(seed)
    homes = max(1, int(children / 1.6))
    people = [p for home in households.population(rng, homes) for p in home]
    rng.shuffle(people)
    held = people[:children]
    spare = people[children:]
    # Queries: half for held children, half for children the node does not hold (made up if the
    # population ran short), each with zero to two error patterns.
    asked = rng.sample(held, min(queries // 2, len(held)))
    not_held = spare[: queries - len(asked)]
    while len(asked) + len(not_held) < queries:
        extra = [p for home in households.population(rng, 1000) for p in home]
        not_held.extend(extra[: queries - len(asked) - len(not_held)])
    # Not-held children keep their own identity: relabel so none shares a held record id.
    for p in not_held:
        p.key = "absent-" + p.key
    query_list = []
    for p in asked + not_held:
        count = rng.choices((0, 1, 2), (20, 55, 25))[0]
        identity, _ = households.query_for(rng, p, False, tuple(rng.sample(households.PATTERNS, count)))
        query_list.append(identity)
    records = [households.as_child(p) for p in held]
    del people, held, spare, asked, not_held
    gc.collect()
    before = resident_memory_bytes()

    started = time.perf_counter()
    index = MatchIndex(records)
    build_seconds = time.perf_counter() - started
    del records
    gc.collect()
    after = resident_memory_bytes()

    latencies: list[float] = []
    statuses: dict[str, int] = {s.value: 0 for s in (Status.MATCH, Status.POSSIBLE_MATCH, Status.NO_MATCH)}
    for identity in query_list:
        t0 = time.perf_counter()
        result = index.match(identity)
        latencies.append(time.perf_counter() - t0)
        statuses[result.status.value] += 1
    latencies.sort()
    report: dict[str, Any] = {
        "children": len(index),
        "queries": len(query_list),
        "build_seconds": build_seconds,
        "resident_bytes": after,
        "index_bytes": after - before,
        "peak_resident_bytes": peak_memory_bytes(),
        "latency_p50_ms": evaluation.percentile(latencies, 0.50) * 1000,
        "latency_p99_ms": evaluation.percentile(latencies, 0.99) * 1000,
        "latency_max_ms": latencies[-1] * 1000 if latencies else 0.0,
        "statuses": statuses,
        "machine_before": machine_before,
        "machine_after": machine(),
    }
    mib = 1024 * 1024
    out(f"matching: {report['children']:,} children, {report['queries']:,} queries "
        "(half for children not held)")
    out(f"  index build     {build_seconds:.1f} s")
    out(f"  resident memory {after / mib:,.0f} MiB (index and records {report['index_bytes'] / mib:,.0f} MiB,"
        f" peak {report['peak_resident_bytes'] / mib:,.0f} MiB)")
    out(f"  latency         p50 {report['latency_p50_ms']:.3f} ms, p99 {report['latency_p99_ms']:.3f} ms,"
        f" max {report['latency_max_ms']:.1f} ms")
    out(f"  answers         {statuses}")
    out(f"  machine         {machine_before['cpus']} CPUs, Python {machine_before['python']}, load average "
        f"{machine_before['load_average']} before, {report['machine_after']['load_average']} after")
    return report
