"""``signpost bench node`` end to end at a tiny size: every step runs (real import and serve
processes), every figure is reported, and the steps behave as the benchmark says they do. Speed
is never asserted here; the figures go to docs/performance.md."""

from __future__ import annotations

from typing import Any

from federation.tools import nodebench


def test_the_node_benchmark_runs_every_step_and_reports_every_figure() -> None:
    """At 300 children: both imports (the first saving the index), a start and a restart that
    read it back and a start without it that builds it, queries answered one at a time and
    during a live re-import without a failure, the machine and the load reported."""
    lines: list[str] = []
    result: dict[str, Any] = nodebench.run(300, queries=20, out=lines.append)
    this = result["this"]
    assert {"cpus", "cpu_model", "memory_gib", "python", "load_average"} <= set(result["machine"])
    assert (20.0, 20.0, 20.0) == (this["queries"]["answered"], this["queries_8_in_flight"]["answered"],
                                  this["queries_at_1000"]["answered"])
    # The first import saved the index, so the first start reads it; without it the node builds.
    assert ("snapshot", "snapshot", "built") == (this["start"]["index"]["source"],
                                                 this["restart"]["index"]["source"],
                                                 this["start_unsaved"]["index"]["source"])
    assert this["fresh_import"]["index_seconds"] >= 0 and "index_seconds" not in this["unchanged_import"]
    assert 0.0 == this["live_reimport"]["failures"] and this["live_reimport"]["queries"] > 0
    assert {"VmRSS", "VmHWM"} <= set(this["node_memory_mib"])
    queries = this["queries"]
    assert 0 <= queries["event_loop_cpu_ms_per_query"] <= queries["cpu_ms_per_query"]
    assert any(line.startswith("restart") for line in lines)
