"""Benchmark of the audit log: durable appends, verifying a large log, proof latency.

Run with ``python -m federation.tools.logbench`` (``--help`` for sizes). Targets: at least 10,000 durable
appends per second from concurrent appenders, a 1,000,000-entry log verified in under 30 s,
inclusion proofs in under 1 ms.
"""

from __future__ import annotations

import argparse
import asyncio
import random
import statistics
import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

from federation.canonical import canonical_json
from trust.merkle import leaf_hash, verify_consistency, verify_inclusion
from trust.tlog import AuditLog

ORIGIN = "bench.signpost.example/audit"

APPEND_TARGET = 10_000.0
VERIFY_TARGET_SECONDS = 30.0
PROOF_TARGET_MS = 1.0


def _record(index: int) -> dict[str, Any]:
    """An entry shaped like a node's record of one answered query (about 300 bytes)."""
    return {
        "v": 1,
        "kind": "query-answered",
        "query_id": f"q-{index:012d}-7f3a9c2e",
        "at": 1_760_000_000 + index,
        "broker": "broker.signpost.example",
        "practitioner": f"sha256:{index * 2654435761 % 2**64:016x}",
        "purpose": "section-47-enquiry",
        "identity_fields": ["nhs_number", "date_of_birth", "family_name"],
        "matches": index % 3,
        "disclosed": ["organisation", "service_category", "secure_email"],
        "envelope": f"{index * 40503 % 2**32:08x}" * 8,
    }


def _percentile(samples: list[float], fraction: float) -> float:
    ordered = sorted(samples)
    return ordered[min(len(ordered) - 1, int(fraction * len(ordered)))]


async def _append_concurrently(log: AuditLog, total: int, appenders: int) -> list[float]:
    """Append ``total`` entries from ``appenders`` coroutines; return each append's latency."""
    latencies: list[float] = []
    per_appender = total // appenders

    async def appender(number: int) -> None:
        for i in range(per_appender):
            started = time.perf_counter()
            await log.append(_record(number * per_appender + i))
            latencies.append(time.perf_counter() - started)

    await asyncio.gather(*(appender(n) for n in range(appenders)))
    return latencies


def run(
    entries: int = 1_000_000,
    *,
    appends: int = 50_000,
    appenders: int = 500,
    proofs: int = 5_000,
    directory: str | None = None,
    out: Callable[[str], object] = print,
) -> dict[str, float]:
    """Run the benchmark, print one line per measurement through ``out``, return the numbers.

    ``entries`` is the size of the log that is verified and proved against; ``appends`` how many
    durable appends ``appenders`` coroutines make; ``directory`` where the temporary logs go
    (the system temporary directory by default; its disk decides the fsync cost).
    """
    key = Ed25519PrivateKey.generate()
    results: dict[str, float] = {}
    appends = max(appenders, appends - appends % appenders)
    with tempfile.TemporaryDirectory(prefix="signpost-logbench-", dir=directory) as tmp:
        out(f"audit log benchmark: {entries:,} entries, logs in {tmp}")

        # 1. Durable appends from concurrent coroutines (group commit).
        log = AuditLog.open(Path(tmp) / "appends")
        loop = asyncio.new_event_loop()
        try:
            started = time.perf_counter()
            latencies = loop.run_until_complete(_append_concurrently(log, appends, appenders))
            elapsed = time.perf_counter() - started
            loop.run_until_complete(log.aclose())
        finally:
            loop.close()
        rate = appends / elapsed
        results.update(
            append_per_second=rate,
            append_p50_ms=_percentile(latencies, 0.5) * 1000,
            append_p99_ms=_percentile(latencies, 0.99) * 1000,
        )
        out(
            f"durable appends: {appends:,} from {appenders} concurrent appenders in {elapsed:.2f} s"
            f" = {rate:,.0f} entries/s (latency p50 {results['append_p50_ms']:.1f} ms,"
            f" p99 {results['append_p99_ms']:.1f} ms); target >= {APPEND_TARGET:,.0f}/s"
        )

        # 2. A large log: bulk load, reopen, sign, verify from the entries.
        path = Path(tmp) / "large"
        batch = 4096
        log = AuditLog.open(path)
        started = time.perf_counter()
        for first in range(0, entries, batch):
            log.append_many_sync(
                [canonical_json(_record(i)) for i in range(first, min(entries, first + batch))]
            )
        elapsed = time.perf_counter() - started
        log.close()
        results["load_per_second"] = entries / elapsed
        size_mb = sum(f.stat().st_size for f in path.iterdir()) / 1e6
        out(
            f"bulk load (sync, {batch}-entry batches): {entries:,} entries in {elapsed:.1f} s"
            f" = {entries / elapsed:,.0f} entries/s, {size_mb:,.0f} MB on disk"
        )

        started = time.perf_counter()
        log = AuditLog.open(path)
        results["open_seconds"] = time.perf_counter() - started
        out(f"open (rebuild the in-memory tree from the leaf index): {results['open_seconds']:.2f} s")

        note = log.checkpoint(ORIGIN, ORIGIN, key)
        started = time.perf_counter()
        report = log.audit(note, ORIGIN, key.public_key())
        results["verify_seconds"] = time.perf_counter() - started
        if not report.ok:
            raise AssertionError(f"benchmark log failed its audit: {report.problems}")
        out(
            f"verify {entries:,} entries (read, check each record and leaf hash, recompute the"
            f" root, check the signed checkpoint): {results['verify_seconds']:.1f} s;"
            f" target < {VERIFY_TARGET_SECONDS:.0f} s"
        )

        # 3. Proof latency at full size.
        rng = random.Random(9162)
        size, root = log.size, log.root()
        timings: list[float] = []
        verify_timings: list[float] = []
        for _ in range(proofs):
            index = rng.randrange(size)
            started = time.perf_counter()
            proof = log.inclusion_proof(index, size)
            timings.append(time.perf_counter() - started)
            leaf = leaf_hash(log.entry(index))
            started = time.perf_counter()
            verify_inclusion(leaf, index, size, proof, root)
            verify_timings.append(time.perf_counter() - started)
        results.update(
            inclusion_mean_ms=statistics.fmean(timings) * 1000,
            inclusion_p99_ms=_percentile(timings, 0.99) * 1000,
            inclusion_verify_mean_ms=statistics.fmean(verify_timings) * 1000,
        )
        out(
            f"inclusion proof at size {size:,}: mean {results['inclusion_mean_ms'] * 1000:.0f} µs,"
            f" p99 {results['inclusion_p99_ms'] * 1000:.0f} µs (verify mean"
            f" {results['inclusion_verify_mean_ms'] * 1000:.0f} µs); target < {PROOF_TARGET_MS:.0f} ms"
        )

        timings = []
        for _ in range(proofs):
            old = rng.randrange(1, size + 1)
            started = time.perf_counter()
            proof = log.consistency_proof(old, size)
            timings.append(time.perf_counter() - started)
        verify_consistency(old, size, proof, log.root(old), root)
        results.update(
            consistency_mean_ms=statistics.fmean(timings) * 1000,
            consistency_p99_ms=_percentile(timings, 0.99) * 1000,
        )
        out(
            f"consistency proof to size {size:,}: mean {results['consistency_mean_ms'] * 1000:.0f} µs,"
            f" p99 {results['consistency_p99_ms'] * 1000:.0f} µs"
        )
        log.close()
    return results


def main(argv: list[str] | None = None) -> int:
    """Command-line entry point: ``python -m federation.tools.logbench``."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else None)
    parser.add_argument("--entries", type=int, default=1_000_000, help="size of the verified log")
    parser.add_argument("--appends", type=int, default=50_000, help="durable appends to time")
    parser.add_argument("--appenders", type=int, default=500, help="concurrent appending coroutines")
    parser.add_argument("--proofs", type=int, default=5_000, help="proofs to time")
    parser.add_argument("--dir", default=None, help="where to put the temporary logs")
    args = parser.parse_args(argv)
    run(
        args.entries,
        appends=args.appends,
        appenders=args.appenders,
        proofs=args.proofs,
        directory=args.dir,
    )
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
