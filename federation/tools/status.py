"""``signpost status``: the federation at a glance.

For every member of the verified trust list: its roles, whether its endpoint answers
``/healthz``, the trust-list version it runs, and -- where the service keeps an audit log --
the log's size and the age of its latest signed checkpoint. Members without an endpoint (token
issuers, auditors) are listed as such. Nothing here needs a credential: ``/healthz`` is public
and carries ``log_size`` and ``checkpoint_time``; the signed checkpoint itself
(``/v1/log/checkpoint``) answers auditor tokens only, so it is asked only of services whose
``/healthz`` does not say.
"""

from __future__ import annotations

import asyncio
import email.utils
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

import aiohttp

from trust.trustlist import Member, TrustList

CHECKPOINT_PATH = "/v1/log/checkpoint"


@dataclass(frozen=True)
class MemberStatus:
    """What one probe of one member found."""

    id: str
    roles: tuple[str, ...]
    endpoint: str | None
    reachable: bool | None  # None: nothing to reach (no endpoint)
    trust_list_version: int | None = None
    log_size: int | None = None
    checkpoint_age_seconds: float | None = None
    detail: str = ""
    reasons: tuple[str, ...] = ()  # why /healthz says degraded ("code: detail"), empty when ok


def _checkpoint_size(note: str) -> int | None:
    lines = note.split("\n")
    return int(lines[1]) if len(lines) > 2 and lines[1].isdigit() else None


def _age(health: dict[str, Any], last_modified: str | None, now: datetime) -> float | None:
    if isinstance(health.get("checkpoint_age_seconds"), int | float):
        return float(health["checkpoint_age_seconds"])
    stamp: datetime | None = None
    if isinstance(health.get("checkpoint_time"), str):
        try:
            stamp = datetime.fromisoformat(health["checkpoint_time"])
        except ValueError:
            stamp = None
    elif last_modified:
        try:
            stamp = email.utils.parsedate_to_datetime(last_modified)
        except (TypeError, ValueError):
            stamp = None
    if stamp is None:
        return None
    if stamp.tzinfo is None:
        stamp = stamp.replace(tzinfo=UTC)
    return max(0.0, (now - stamp).total_seconds())


async def probe(session: aiohttp.ClientSession, member: Member, timeout: float,
                now: datetime) -> MemberStatus:
    """Ask one member for its health and its latest checkpoint."""
    roles = tuple(sorted(member.roles))
    if not member.endpoint:
        return MemberStatus(member.id, roles, None, None, detail="no endpoint")
    base = member.endpoint.rstrip("/")
    limit = aiohttp.ClientTimeout(total=timeout)
    try:
        async with session.get(base + "/healthz", timeout=limit) as response:
            if response.status not in (200, 503):  # 503: degraded, with its reasons
                return MemberStatus(member.id, roles, base, False, detail=f"HTTP {response.status}")
            health = await response.json(content_type=None)
    except (aiohttp.ClientError, OSError, TimeoutError, ValueError) as exc:
        return MemberStatus(member.id, roles, base, False, detail=exc.__class__.__name__)
    if not isinstance(health, dict) or (response.status == 503 and health.get("status") != "degraded"):
        return MemberStatus(member.id, roles, base, False, detail="healthz is not a health document")
    listed = health.get("reasons")
    reasons = tuple(f"{r.get('code')}: {r.get('detail')}" for r in listed
                    if isinstance(r, dict)) if isinstance(listed, list) else ()
    version = health.get("trust_list_version")
    size = health.get("log_size") if isinstance(health.get("log_size"), int) else None
    last_modified = None
    if size is None:
        try:
            async with session.get(base + CHECKPOINT_PATH, timeout=limit) as response:
                if response.status == 200:
                    size = _checkpoint_size(await response.text())
                    last_modified = response.headers.get("Last-Modified")
        except (aiohttp.ClientError, OSError, TimeoutError, ValueError):
            size = None
    return MemberStatus(member.id, roles, base, True, version if isinstance(version, int) else None,
                        size, _age(health, last_modified, now), reasons=reasons)


async def collect(trust: TrustList, *, timeout: float = 3.0, now: datetime | None = None,
                  ssl: Any = None) -> list[MemberStatus]:
    """Probe every member at once, each within ``timeout`` seconds."""
    when = now or datetime.now(UTC)
    members = sorted(trust.members.values(), key=lambda m: (sorted(m.roles), m.id))
    connector = aiohttp.TCPConnector(ssl=ssl) if ssl is not None else None
    async with aiohttp.ClientSession(connector=connector) as session:
        return list(await asyncio.gather(*(probe(session, m, timeout, when) for m in members)))


def _age_text(seconds: float | None) -> str:
    if seconds is None:
        return "n/a"
    if seconds < 120:
        return f"{seconds:.0f} s"
    if seconds < 7200:
        return f"{seconds / 60:.0f} min"
    return f"{seconds / 3600:.1f} h"


def render(trust: TrustList, statuses: Sequence[MemberStatus], now: datetime) -> str:
    """A fixed-width table, one line per member, with a headline and a verdict."""
    expired = " (EXPIRED)" if trust.expires < now else ""
    lines = [f"federation {trust.federation}  trust list version {trust.version}  expires "
             f"{trust.expires:%Y-%m-%d %H:%M}Z{expired}", ""]
    header = ("member", "role", "reachable", "health", "trust list", "log size", "checkpoint age", "endpoint")
    rows = [header]
    for s in statuses:
        reachable = "-" if s.reachable is None else ("yes" if s.reachable else f"NO ({s.detail})")
        health = "-" if not s.reachable else ("DEGRADED" if s.reasons else "ok")
        if s.trust_list_version is None:
            version = "n/a"
        else:
            behind = "" if s.trust_list_version == trust.version else " (behind)"
            version = f"v{s.trust_list_version}{behind}"
        size = "n/a" if s.log_size is None else str(s.log_size)
        rows.append((s.id, ",".join(s.roles), reachable, health, version, size,
                     _age_text(s.checkpoint_age_seconds), s.endpoint or "-"))
    widths = [max(len(r[i]) for r in rows) for i in range(len(header))]
    for row in rows:
        lines.append("  ".join(cell.ljust(w) for cell, w in zip(row, widths, strict=True)).rstrip())
    down = [s.id for s in statuses if s.reachable is False]
    lines.append("")
    lines.append(f"{len(down)} member(s) not reachable: {', '.join(down)}" if down
                 else "every member with an endpoint is reachable")
    for s in statuses:
        if s.reasons:
            lines.append(f"{s.id} is degraded:")
            lines.extend(f"  {reason}" for reason in s.reasons)
    return "\n".join(lines)
