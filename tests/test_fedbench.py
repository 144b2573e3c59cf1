"""The federation benchmark's set-up: ports outside the ephemeral range, and a federated side and a
central baseline that hold the same children."""

from __future__ import annotations

import os
from pathlib import Path

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
