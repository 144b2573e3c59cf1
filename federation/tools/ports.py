"""Loopback ports for the demo, the benchmarks and the tests, chosen below the kernel's ephemeral range.

A port handed out by binding to port 0 lies inside the ephemeral range, so an outgoing connection
of any process may take it before the service that was promised it binds; on a busy machine
(hundreds of connections to nodes) that happens. Ports below the range are never given to
outgoing connections.
"""

from __future__ import annotations

import random
import socket
from collections import deque
from pathlib import Path

LOWEST = 10_000
"""Below this lie well-known and registered services."""


def ephemeral_range() -> tuple[int, int]:
    """The kernel's range for outgoing connections (Linux's default when it cannot be read)."""
    try:
        low, high = Path("/proc/sys/net/ipv4/ip_local_port_range").read_text().split()
        return int(low), int(high)
    except (OSError, ValueError):
        return 32_768, 60_999


def port_free(port: int) -> bool:
    """Whether a service could listen on ``port`` on loopback now."""
    with socket.socket() as s:
        s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            s.bind(("127.0.0.1", port))
        except OSError:
            return False
    return True


_GIVEN: deque[int] = deque(maxlen=4096)
"""The ports this process handed out lately. A port is free until its service binds it, so a
federation that picks four ports before starting any of them could otherwise be given one twice
(about once in 3,800 federations of four, and a test suite builds hundreds)."""


def free_port() -> int:
    """A free loopback port outside the ephemeral range, chosen at random so that processes
    choosing at the same time rarely choose alike, and never one this process handed out lately."""
    low, _ = ephemeral_range()
    for _ in range(1000):
        port = random.randrange(LOWEST, max(low, LOWEST + 1000))
        if port not in _GIVEN and port_free(port):
            _GIVEN.append(port)
            return port
    raise RuntimeError(f"no free loopback port between {LOWEST} and {low}")


def pick_ports(count: int, first: int) -> list[int]:
    """``count`` free loopback ports from ``first`` upward, never inside the ephemeral range."""
    low, high = ephemeral_range()
    found: list[int] = []
    port = first
    while len(found) < count:
        if low <= port <= high:
            port = high + 1
        if port > 65_535:
            raise RuntimeError(f"not enough free ports outside the ephemeral range {low}-{high}")
        if port_free(port):
            found.append(port)
        port += 1
    return found
