"""``signpost bench soak``: the demo federation under a steady load for minutes, watched per minute.

Starts the demo federation (five nodes and the broker as processes, mutual TLS, durable audit
logs), sends searches at a fixed rate (open loop: a slow answer does not slow the sender), and
prints per minute: searches, errors (any status but 200, or an incomplete answer) with their
causes, latency p50 and p99, and each process's resident memory. The practitioner's token is
issued again every half of its lifetime, as a session signing in again would. At the end the
processes are stopped (each signs a last checkpoint) and every log is verified and reconciled
from its folder, read-only.
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
from trust.tokens import MAX_LIFETIME_SECONDS


@dataclass
class Minute:
    """What one minute of the soak saw."""

    index: int
    latencies: list[float] = field(default_factory=list)
    errors: int = 0
    rss_mib: dict[str, float] = field(default_factory=dict)
    causes: Counter[str] = field(default_factory=Counter)
    """Why each error happened (an HTTP status and problem kind, or why an authority was missing)."""

    def to_json(self) -> dict[str, Any]:
        return {"minute": self.index + 1, "searches": len(self.latencies), "errors": self.errors,
                "p50_ms": round(self.percentile(0.5), 1), "p99_ms": round(self.percentile(0.99), 1),
                "rss_mib": {k: round(v, 1) for k, v in sorted(self.rss_mib.items())},
                "causes": dict(self.causes)}

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


class Tokens:
    """The practitioner's token for the next search, issued again before the old one runs out.

    A token lives at most ``tokens.MAX_LIFETIME_SECONDS`` (15 minutes), so a soak longer than
    that signs in again, as a practitioner's session would.
    """

    def __init__(self, issue: Callable[[], str], *, lifetime_seconds: float = MAX_LIFETIME_SECONDS,
                 clock: Callable[[], float] = time.monotonic) -> None:
        self.issue, self.clock = issue, clock
        self.renew_after = lifetime_seconds / 2  # well before it expires, whatever the clocks say
        self.token, self.issued = issue(), clock()

    def current(self) -> str:
        if self.clock() - self.issued >= self.renew_after:
            self.token, self.issued = self.issue(), self.clock()
        return self.token


def cause(status: int, answer: Any) -> str | None:
    """Why a search's answer counts as an error, or None when it is a complete 200."""
    if not isinstance(answer, dict):
        return f"HTTP {status}: not a JSON object"
    if status != 200:
        kind = str(answer.get("type", "")).rsplit("/", 1)[-1]
        return f"HTTP {status} {kind}".rstrip()
    if answer.get("complete") is True:
        return None
    results = answer.get("results")
    missing = [r for r in results if isinstance(r, dict) and r.get("status") == "unavailable"] \
        if isinstance(results, list) else []
    reasons = sorted({str(r.get("reason", "unavailable")) for r in missing})
    return "incomplete: " + ("; ".join(reasons) if reasons else "complete is not true")


async def drive(broker_url: str, token: str | Tokens, bodies: list[dict[str, Any]], minutes: float,
                rate: float, procs: demo.Processes, out: Callable[[str], None]) -> list[Minute]:
    """Send ``rate`` searches a second for ``minutes``; one ``Minute`` per minute."""
    source = token if isinstance(token, Tokens) else Tokens(lambda: token)
    started = time.monotonic()
    total = int(minutes * 60 * rate)
    rows: list[Minute] = []
    tasks: set[asyncio.Task[None]] = set()

    def minute(at: float) -> Minute:
        index = int((at - started) // 60)
        while len(rows) <= index:
            rows.append(Minute(len(rows)))
        return rows[index]

    async def one(session: aiohttp.ClientSession, body: dict[str, Any], bearer: str) -> None:
        sent = time.monotonic()
        why: str | None
        try:
            async with session.post(f"{broker_url}/v1/search", json=body,
                                    headers={"Authorization": f"Bearer {bearer}"}) as response:
                why = cause(response.status, await response.json(content_type=None))
        except (aiohttp.ClientError, OSError, TimeoutError, ValueError) as exc:
            why = f"client: {exc.__class__.__name__}"
        row = minute(sent)
        row.latencies.append(time.monotonic() - sent)
        if why is not None:
            row.errors += 1
            row.causes[why] += 1

    async with aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=30)) as session:
        for i in range(total):
            due = started + i / rate
            await asyncio.sleep(max(0.0, due - time.monotonic()))
            row = minute(time.monotonic())
            if not row.rss_mib:  # first search of a minute: sample every process
                row.rss_mib = {name: rss_mib(proc.pid) for name, proc in procs.procs}
                if row.index:
                    report(rows[row.index - 1], out)
            task = asyncio.create_task(one(session, bodies[i % len(bodies)], source.current()))
            tasks.add(task)
            task.add_done_callback(tasks.discard)
        await asyncio.gather(*tasks)
    report(rows[-1], out)
    return rows


def report(row: Minute, out: Callable[[str], None]) -> None:
    memory = " ".join(f"{name}={mib:.0f}" for name, mib in sorted(row.rss_mib.items()))
    out(f"minute {row.index + 1:>3}: {len(row.latencies):>6} searches {row.errors:>4} errors  "
        f"p50 {row.percentile(0.5):7.1f} ms  p99 {row.percentile(0.99):7.1f} ms  RSS MiB {memory}")
    for why, count in sorted(row.causes.items()):
        out(f"            {count:>4} x {why}")


def growth(rows: list[Minute], end: dict[str, float]) -> dict[str, float]:
    """Each process's resident memory growth in percent, from the end of warm-up (the start of
    the second minute; the first when the run is shorter) to the end of the run."""
    warm = rows[1].rss_mib if len(rows) > 1 else rows[0].rss_mib
    return {name: 100 * (end.get(name, 0.0) - mib) / mib for name, mib in warm.items() if mib}


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
            tokens = Tokens(lambda: demo.demo_token(folder, minutes=MAX_LIFETIME_SECONDS // 60))
            rows = asyncio.run(drive(broker_url, tokens, [s.body for s in layout["samples"]], minutes,
                                     rate, procs, out))
            end = {name: rss_mib(proc.pid) for name, proc in procs.procs}  # before they are stopped
        trust = provision.verify_file(folder / "trustlist.json", folder / "root.json")
        broker = trust.with_role("broker")[0]
        nodes = trust.with_role("node")
        disk = {n.id: folder / n.id / "audit.log" for n in nodes}
        disk[broker.id] = folder / "broker" / "audit.log"
        results, reconciled = reconcile_federation(LogSources(state=folder / "audit-state", disk=disk),
                                                   broker, nodes, datetime.now(UTC))
    errors = sum(r.errors for r in rows)
    grown = growth(rows, end)
    verified = all(f.ok for f in results)
    causes: Counter[str] = Counter()
    for row in rows:
        causes.update(row.causes)
    out(f"searches {sum(len(r.latencies) for r in rows)}, errors {errors}; memory growth from the "
        "end of the first minute to the end: "
        + ", ".join(f"{n} {g:+.1f}%" for n, g in sorted(grown.items())))
    kinds = Counter(str(d.kind) for d in reconciled.discrepancies)
    late = {k: v for k, v in reconciled.late_answers.items() if v}
    out(f"logs verified: {'yes' if verified else 'NO'}; reconcile: {reconciled.searches} searches, "
        f"{len(reconciled.discrepancies)} discrepancies"
        + "".join(f"\n  {kind}: {count}" for kind, count in sorted(kinds.items()))
        + (f"\n  late answers (after the broker stopped waiting): {sum(late.values())}" if late else ""))
    return {"minutes": minutes, "rate": rate, "children": children,
            "searches_sent": sum(len(r.latencies) for r in rows), "errors": errors,
            "error_causes": dict(causes), "growth_percent": {k: round(v, 2) for k, v in grown.items()},
            "rss_mib_end": {k: round(v, 1) for k, v in end.items()}, "verified": verified,
            "discrepancies": len(reconciled.discrepancies), "discrepancy_kinds": dict(kinds),
            "late_answers": late, "searches": reconciled.searches,
            "per_minute": [r.to_json() for r in rows]}
