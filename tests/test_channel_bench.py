"""`signpost bench channel` runs end to end: three clients, real TLS servers in their own processes."""

from __future__ import annotations

import json

import pytest

from federation.commands.main import main


def test_the_channel_bench_measures_three_clients_over_tls(capsys: pytest.CaptureFixture[str]) -> None:
    """Proves the bench opens its channels over TLS to server processes of its own, completes every
    fan-out with each of the three clients (a fan-out ends only when every node's answer is in),
    and reports each client's CPU per node; no figure is judged here."""
    code = main(["bench", "channel", "--nodes", "6", "--fanouts", "3", "--servers", "2",
                 "--spread-ms", "5", "--json"])
    report = json.loads(capsys.readouterr().out)
    assert 0 == code
    assert ["aiohttp", "wsclient, at once", "wsclient, together"] == [c["client"] for c in report["clients"]]
    assert all(c["cpu_us_per_node"] > 0 and c["wall_ms_per_fanout"] > 0 for c in report["clients"])
    assert (6, 3, 2) == (report["nodes"], report["fanouts"], report["servers"])
