"""End-to-end search benchmark: the demo federation's processes, real HTTP and mutual TLS.

Measures what a practitioner waits for: one search signed by the broker, fanned out to every
node over mutual TLS, matched, signed, logged at both ends and verified. Prints latency
percentiles and throughput at a given concurrency.
"""

from __future__ import annotations

import asyncio
import json
import statistics
import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import aiohttp

from federation.tools import demo

UNLIMITED = {"practitioner_per_minute": 1_000_000, "practitioner_per_day": 10_000_000,
             "organisation_per_minute": 1_000_000, "organisation_per_day": 10_000_000}


def _percentile(values: list[float], fraction: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(fraction * len(ordered)))]


async def _drive(broker_url: str, folder: Path, bodies: list[dict[str, Any]], searches: int,
                 concurrency: int) -> tuple[list[float], int]:
    token = demo.demo_token(folder)
    latencies: list[float] = []
    failures = 0
    counter = iter(range(searches))

    async def client(session: aiohttp.ClientSession) -> None:
        nonlocal failures
        for i in counter:
            started = time.perf_counter()
            async with session.post(f"{broker_url}/v1/search", json=bodies[i % len(bodies)],
                                    headers={"Authorization": f"Bearer {token}"}) as response:
                answer = await response.json(content_type=None)
            latencies.append(time.perf_counter() - started)
            if response.status != 200 or not answer.get("complete"):
                failures += 1

    async with aiohttp.ClientSession() as session:
        await asyncio.gather(*(client(session) for _ in range(concurrency)))
    return latencies, failures


def run(*, children: int = 20_000, searches: int = 1_000, concurrency: int = 8,
        out: Callable[[str], None] = print) -> dict[str, float]:
    """Build the demo federation (5 authorities), start it, time ``searches`` searches."""
    with tempfile.TemporaryDirectory(prefix="signpost-bench-") as tmp:
        folder = Path(tmp)
        out(f"building 5 authorities x {children:,} children ...")
        layout = demo.build(folder, children=children, out=lambda _: None)
        broker_config = Path(layout["broker"]["config"])
        settings = json.loads(broker_config.read_text())
        settings["rate_limits"] = UNLIMITED  # the benchmark measures searching, not the limiter
        broker_config.write_text(json.dumps(settings, indent=2))
        with demo.Processes(folder) as procs:
            broker_url, _ = demo.start(folder, layout, procs)
            bodies = [s.body for s in layout["samples"]]
            asyncio.run(_drive(broker_url, folder, bodies, 50, concurrency))  # warm up
            started = time.perf_counter()
            latencies, failures = asyncio.run(
                _drive(broker_url, folder, bodies, searches, concurrency))
            elapsed = time.perf_counter() - started
    result = {
        "searches": float(searches),
        "concurrency": float(concurrency),
        "throughput_per_s": searches / elapsed,
        "p50_ms": 1000 * statistics.median(latencies),
        "p95_ms": 1000 * _percentile(latencies, 0.95),
        "p99_ms": 1000 * _percentile(latencies, 0.99),
        "failures": float(failures),
    }
    out(f"{searches:,} searches, {concurrency} at a time, 5 nodes over mutual TLS, "
        f"both ends logging durably")
    out(f"  throughput   {result['throughput_per_s']:.0f} searches/s")
    out(f"  latency      p50 {result['p50_ms']:.1f} ms, p95 {result['p95_ms']:.1f} ms, "
        f"p99 {result['p99_ms']:.1f} ms")
    out(f"  failures     {failures}")
    return result
