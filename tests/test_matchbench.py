"""``signpost bench matching`` prints its figures, and the machine's load, as JSON."""

from __future__ import annotations

import json

import pytest

from federation.commands.main import main


def test_bench_matching_json_carries_the_figures_and_the_machine(
        capsys: pytest.CaptureFixture[str]) -> None:
    """A small run answers every query and reports build, memory, latency and the machine's
    CPUs and load average before and after (no figure is asserted: speed is reported, not
    tested)."""
    assert 0 == main(["bench", "matching", "--children", "1500", "--queries", "120", "--json"])
    report = json.loads(capsys.readouterr().out)
    expected = (1500, 120, 120, {"cpus", "python", "load_average"})
    actual = (report["children"], report["queries"], sum(report["statuses"].values()),
              set(report["machine_before"]) & set(report["machine_after"]))
    assert expected == actual
    assert {"build_seconds", "resident_bytes", "latency_p99_ms"} <= set(report)
