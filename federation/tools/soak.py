"""``signpost bench soak``: the demo federation under a steady load for minutes, watched per minute.

Starts the demo federation (five nodes and the broker as processes, mutual TLS, durable audit
logs), sends searches at a fixed rate (open loop: a slow answer does not slow the sender), and
prints per minute: searches, errors (any status but 200, or an incomplete answer), latency p50
and p99, and each process's resident memory. At the end the processes are stopped (each signs a
last checkpoint) and every log is verified and reconciled from its folder, read-only.
"""

from __future__ import annotations

import asyncio
import json
import tempfile
import time
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import aiohttp

from federation.tools import demo, provision
from federation.tools.searchbench import UNLIMITED
from trust.auditclient import LogSources, reconcile_federation


@dataclass
class Minute:
    """What one minute of the soak saw."""

    index: int
    latencies: list[float] = field(default_factory=list)
    errors: int = 0
    rss_mib: dict[str, float] = field(default_factory=dict)

    def percentile(self, fraction: float) -> float:
        ordered = sorted(self.latencies)
        return 1000 * ordered[min(len(ordered) - 1, int(fraction * len(ordered)))] if ordered else 0.0


def rss_mib(pid: int) -> float:
    """Resident memory of process ``pid`` in MiB (Linux ``/proc``), 0 when it is gone."""
    try:
        for line in Path(f"/proc/{pid}/status").read_text().splitlines():
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) / 1024
    except OSError:
        pass
    return 0.0


async def drive(broker_url: str, token: str, bodies: list[dict[str, Any]], minutes: float, rate: float,
                procs: demo.Processes, out: Callable[[str], None]) -> list[Minute]:
    """Send ``rate`` searches a second for ``minutes``; one ``Minute`` per minute."""
    started = time.monotonic()
    total = int(minutes * 60 * rate)
    rows: list[Minute] = []
    tasks: set[asyncio.Task[None]] = set()

    def minute(at: float) -> Minute:
        index = int((at - started) // 60)
        while len(rows) <= index:
            rows.append(Minute(len(rows)))
        return rows[index]

    async def one(session: aiohttp.ClientSession, body: dict[str, Any]) -> None:
        sent = time.monotonic()
        try:
            async with session.post(f"{broker_url}/v1/search", json=body,
                                    headers={"Authorization": f"Bearer {token}"}) as response:
                answer = await response.json(content_type=None)
                ok = response.status == 200 and bool(answer.get("complete"))
        except (aiohttp.ClientError, OSError, TimeoutError, ValueError):
            ok = False
        row = minute(sent)
        row.latencies.append(time.monotonic() - sent)
        row.errors += 0 if ok else 1

    async with aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=30)) as session:
        for i in range(total):
            due = started + i / rate
            await asyncio.sleep(max(0.0, due - time.monotonic()))
            row = minute(time.monotonic())
            if not row.rss_mib:  # first search of a minute: sample every process
                row.rss_mib = {name: rss_mib(proc.pid) for name, proc in procs.procs}
                if row.index:
                    report(rows[row.index - 1], out)
            task = asyncio.create_task(one(session, bodies[i % len(bodies)]))
            tasks.add(task)
            task.add_done_callback(tasks.discard)
        await asyncio.gather(*tasks)
    report(rows[-1], out)
    return rows


def report(row: Minute, out: Callable[[str], None]) -> None:
    memory = " ".join(f"{name}={mib:.0f}" for name, mib in sorted(row.rss_mib.items()))
    out(f"minute {row.index + 1:>3}: {len(row.latencies):>6} searches {row.errors:>4} errors  "
        f"p50 {row.percentile(0.5):7.1f} ms  p99 {row.percentile(0.99):7.1f} ms  RSS MiB {memory}")


def run(*, minutes: float, rate: float, children: int = 5_000,
        out: Callable[[str], None] = print) -> dict[str, Any]:
    """Build and start the demo federation, soak it, reconcile its logs; return the figures."""
    with tempfile.TemporaryDirectory(prefix="signpost-soak-") as tmp:
        folder = Path(tmp)
        out(f"building 5 authorities x {children:,} children ...")
        layout = demo.build(folder, children=children, out=lambda _: None)
        broker_config = Path(layout["broker"]["config"])
        settings = json.loads(broker_config.read_text())
        settings["rate_limits"] = UNLIMITED  # one demo practitioner sends every search
        broker_config.write_text(json.dumps(settings, indent=2))
        with demo.Processes(folder) as procs:
            broker_url, _ = demo.start(folder, layout, procs)
            out(f"soaking at {rate:g} searches/s for {minutes:g} min")
            rows = asyncio.run(drive(broker_url, demo.demo_token(folder, minutes=15),
                                     [s.body for s in layout["samples"]], minutes, rate, procs, out))
        trust = provision.verify_file(folder / "trustlist.json", folder / "root.json")
        broker = trust.with_role("broker")[0]
        nodes = trust.with_role("node")
        disk = {n.id: folder / n.id / "audit.log" for n in nodes}
        disk[broker.id] = folder / "broker" / "audit.log"
        results, reconciled = reconcile_federation(LogSources(state=folder / "audit-state", disk=disk),
                                                   broker, nodes, datetime.now(UTC))
    errors = sum(r.errors for r in rows)
    warm = rows[1].rss_mib if len(rows) > 2 else rows[0].rss_mib
    last = rows[-1].rss_mib
    growth = {name: 100 * (last[name] - warm[name]) / warm[name] for name in warm if warm[name]}
    verified = all(f.ok for f in results)
    out(f"searches {sum(len(r.latencies) for r in rows)}, errors {errors}; memory growth after the "
        "first minute: " + ", ".join(f"{n} {g:+.1f}%" for n, g in sorted(growth.items())))
    kinds = Counter(str(d.kind) for d in reconciled.discrepancies)
    out(f"logs verified: {'yes' if verified else 'NO'}; reconcile: {reconciled.searches} searches, "
        f"{len(reconciled.discrepancies)} discrepancies"
        + "".join(f"\n  {kind}: {count}" for kind, count in sorted(kinds.items())))
    return {"errors": errors, "growth_percent": growth, "verified": verified,
            "discrepancies": len(reconciled.discrepancies), "searches": reconciled.searches}
