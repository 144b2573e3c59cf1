"""The federation benchmark's set-up: ports outside the ephemeral range, a federated side and a
central baseline that hold the same children, the baseline checkout, and the load mode."""

from __future__ import annotations

import os
import shutil
from pathlib import Path

import pytest

from federation import config as configfile
from federation.tools import fedbench, ports
from node.config import NodeConfig
from node.store import Store


def test_ports_are_chosen_outside_the_ephemeral_range() -> None:
    """Proves neither the benchmark nor the demo and tests listen on a port the kernel may hand
    out for outgoing connections."""
    low, high = ports.ephemeral_range()
    chosen = fedbench.pick_ports(20)
    expected: list[int] = []
    assert expected == [p for p in chosen if low <= p <= high]
    assert 20 == len(set(chosen))
    single = [ports.free_port() for _ in range(50)]
    assert expected == [p for p in single if low <= p <= high]
    assert all(ports.port_free(p) for p in single)


def test_a_port_handed_out_is_not_handed_out_again_before_it_is_bound() -> None:
    """Proves a process asking for many ports before binding any (a test federation asks for four)
    gets a different one each time, though each stays free until its service binds it."""
    chosen = [ports.free_port() for _ in range(3000)]
    assert len(chosen) == len(set(chosen))


def test_the_central_baseline_holds_every_child_of_the_federation(tmp_path: Path) -> None:
    """Proves the build gives N node configs (each on its own port, with its own children) and one
    central node holding all of them, searches for held and unknown children alike, and that a
    second call reuses the cached folder."""
    layout = fedbench.build(tmp_path / "bench", nodes=2, children=6, out=lambda _: None)
    counts = []
    for config_path in [*layout.federated.nodes.values(), *layout.central.nodes.values()]:
        store = Store(configfile.load(NodeConfig, config_path).database)
        counts.append(sum(1 for _ in store.children()))
        store.close()
    assert [6, 6, 12] == counts
    assert 24 == len(layout.bodies)  # every child searched for, and as many no authority holds
    again = fedbench.load_or_build(tmp_path / "bench", 2, 6, out=lambda _: None)
    assert layout.federated.broker == again.federated.broker


def test_cpu_is_read_from_the_process_clock() -> None:
    """Proves the CPU reading is the process's own user + system time (it only grows)."""
    before = fedbench.proc_cpu_seconds(os.getpid())
    sum(i * i for i in range(200_000))
    assert fedbench.proc_cpu_seconds(os.getpid()) >= before


def test_processes_started_for_a_baseline_run_another_checkout(tmp_path: Path) -> None:
    """Proves `--baseline-source` points the processes started inside at the other checkout (their
    PYTHONPATH, and the working folder that `python -m` puts first on the path) and puts both back
    afterwards."""
    before, cwd = os.environ.get("PYTHONPATH"), os.getcwd()
    with fedbench.processes_from(tmp_path):
        inside = (os.environ.get("PYTHONPATH"), os.getcwd())
    source = str(tmp_path.resolve())
    assert ((source, source), (before, cwd)) == (inside, (os.environ.get("PYTHONPATH"), os.getcwd()))


@pytest.mark.skipif(shutil.which("redis-server") is None, reason="redis-server is not installed")
def test_the_load_mode_keeps_searches_in_flight_and_reports_every_refusal_by_type(tmp_path: Path) -> None:
    """Proves `bench federation --seconds --redis` runs real node and broker processes with rate
    limits in a private Redis, accounts for every search it sent (answered, or refused by problem
    type), PINGs Redis during the run, and never sees a 503 blaming Redis while every PING was
    answered."""
    report = fedbench.run(nodes=2, children=6, concurrency=40, seconds=2, redis=True,
                          folder=tmp_path / "bench", out=lambda _: None)
    timed, pings = report["federated"]["timed"], report["federated"]["redis_pings"]
    assert timed["searches"] == timed["answered"] + sum(timed["problems"].values())
    assert timed["answered"] > 0 and pings["sent"] > 0
    blamed = timed["problems"].get("503 rate-limit-unavailable", 0)
    assert 0 == (blamed if pings["unanswered"] == 0 else 0)
    assert "answered_p99_ms" in timed and "broker_system_ms_per_search" in timed
