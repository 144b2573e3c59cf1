"""Search budgets per practitioner and per organisation, shared by every broker replica.

The algorithm is GCRA (the generic cell rate algorithm): each budget ("30 a minute") keeps one
number, the theoretical arrival time (TAT). A limit of ``count`` per ``period`` lets a burst of
``count`` through at once and then one every ``period / count``. A search must fit every budget
that applies to it (practitioner per minute and per day, organisation per minute and per day);
it is counted against all of them or none, in one atomic step.

Two stores with the same behaviour: ``RedisLimiter`` runs the step as one Lua script inside
Redis (so any number of brokers share one budget, on Redis's clock), ``MemoryLimiter`` runs the
same step in process for a single broker without Redis. If Redis is configured but cannot be
reached, ``check`` raises ``RateLimitUnavailable`` and the broker refuses searches (503): a
broken limiter never means unlimited searching.

The budgets follow the trust list: each check is given the limits in force (``FollowingLimits``
recomputes them from ``policy.rate_limits`` whenever a new trust-list version is accepted, the
broker config's ``rate_limits`` still overriding), so a changed limit applies from the next
search without a restart. A bucket's TAT is kept across a change: the searches already made
count against the new rate (a lowered limit refuses sooner, a raised one frees budget sooner).
"""

from __future__ import annotations

import asyncio
import logging
import math
import time
from collections.abc import AsyncIterator, Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import Protocol

from aiohttp import web
from redis.asyncio import Redis
from redis.asyncio.retry import Retry
from redis.backoff import NoBackoff
from redis.exceptions import RedisError

from broker.admission import ADMISSION, overloaded
from federation.errors import SignpostError
from federation.http import HealthReason, problem
from federation.rules import DEFAULT_RATE_LIMITS
from trust.trustlist import TrustList

log = logging.getLogger("signpost.broker")

# Names in the trust list's ``policy.rate_limits`` (and the broker config's override).
LIMIT_PERIODS = {
    "practitioner_per_minute": ("practitioner", 60),
    "practitioner_per_day": ("practitioner", 86400),
    "organisation_per_minute": ("organisation", 60),
    "organisation_per_day": ("organisation", 86400),
}


class RateLimitError(SignpostError):
    """Base class for rate limiting errors."""


class RateLimitUnavailable(RateLimitError):
    """The shared store could not be asked; searches must stop (fail closed)."""


@dataclass(frozen=True)
class Limit:
    """One budget: ``count`` searches per ``period_ms`` for one subject (practitioner or organisation)."""

    name: str
    subject: str
    count: int
    period_ms: int

    def __post_init__(self) -> None:
        if self.count < 1:
            raise ValueError(f"rate_limits.{self.name}: expected at least 1, got {self.count}")
        if self.period_ms < 1:
            raise ValueError(f"rate_limits.{self.name}: expected a positive period")

    @property
    def interval_ms(self) -> int:
        return max(1, self.period_ms // self.count)


def limits_from(policy: Mapping[str, int], override: Mapping[str, int] | None = None
                ) -> tuple[Limit, ...]:
    """The budgets in force: defaults, then the trust-list policy, then the broker's override."""
    merged = dict(DEFAULT_RATE_LIMITS)
    merged.update({k: v for k, v in policy.items() if k in LIMIT_PERIODS})
    for name, value in (override or {}).items():
        if name not in LIMIT_PERIODS:
            raise ValueError(f"rate_limits.{name}: expected one of {', '.join(LIMIT_PERIODS)}")
        merged[name] = value
    out = []
    for name, (subject, seconds) in LIMIT_PERIODS.items():
        value = merged[name]
        if not isinstance(value, int) or isinstance(value, bool):
            raise ValueError(f"rate_limits.{name}: expected an integer, got {value!r}")
        out.append(Limit(name, subject, value, seconds * 1000))
    return tuple(out)


class FollowingLimits:
    """The budgets in force, recomputed when the trust list in force changes version.

    Calling it returns the limits for the next check. The first computation happens here, so a
    bad broker override or policy stops the broker at start. A later list whose
    ``policy.rate_limits`` are invalid leaves the previous limits in force and is logged: budgets
    are never dropped (fail closed), and a governance typo does not stop every search either.
    """

    def __init__(self, current: Callable[[], TrustList], override: Mapping[str, int] | None = None) -> None:
        self._current = current
        self._override = dict(override or {})
        trust = current()
        self._version = trust.version
        self._limits = limits_from(trust.policy.rate_limits, self._override)

    def __call__(self) -> tuple[Limit, ...]:
        trust = self._current()
        if trust.version != self._version:
            self._version = trust.version
            try:
                limits = limits_from(trust.policy.rate_limits, self._override)
            except ValueError as exc:
                log.error("trust list version %d: rate limits not changed: %s", trust.version, exc)
            else:
                if limits != self._limits:
                    log.info("trust list version %d: rate limits now %s", trust.version,
                             ", ".join(f"{limit.name}={limit.count}" for limit in limits))
                self._limits = limits
        return self._limits


@dataclass(frozen=True)
class Decision:
    """The outcome of one check. ``retry_after`` is in seconds, rounded up (for the header)."""

    allowed: bool
    limit: str | None = None
    retry_after_ms: int = 0

    @property
    def retry_after(self) -> int:
        return max(1, math.ceil(self.retry_after_ms / 1000)) if not self.allowed else 0


def gcra_step(tats: Sequence[int | None], limits: Sequence[Limit], now_ms: int
              ) -> tuple[Decision, list[int] | None]:
    """One atomic GCRA step over several budgets: the decision and, if allowed, the new TATs.

    Pure; ``RedisLimiter``'s Lua script is a line-for-line transcription of this function.
    """
    wait = 0
    worst: str | None = None
    new: list[int] = []
    for tat, limit in zip(tats, limits, strict=True):
        start = now_ms if tat is None or tat < now_ms else tat
        candidate = start + limit.interval_ms
        allow_at = candidate - limit.period_ms
        if allow_at > now_ms and allow_at - now_ms > wait:
            wait = allow_at - now_ms
            worst = limit.name
        new.append(candidate)
    if wait > 0:
        return Decision(False, worst, wait), None
    return Decision(True), new


def _budgets(limits: Sequence[Limit]) -> tuple[Limit, ...]:
    """The budgets for one check; none at all is an error, never an unlimited search."""
    if not limits:
        raise RateLimitError("rate limits: expected at least one budget, got none")
    return tuple(limits)


def bucket_keys(prefix: str, limits: Sequence[Limit], subjects: Mapping[str, str]) -> list[str]:
    """Storage keys: one per budget and subject (``subjects`` maps 'practitioner'/'organisation')."""
    return [f"{prefix}:{limit.name}:{subjects[limit.subject]}" for limit in limits]


class RateLimiter(Protocol):
    async def check(self, subjects: Mapping[str, str], limits: Sequence[Limit] | None = None
                    ) -> Decision: ...

    async def close(self) -> None: ...

    async def problem(self) -> str | None:
        """Why the store cannot be asked right now, or None when it can (for ``/healthz``)."""
        ...


class MemoryLimiter:
    """The in-process store: the same GCRA step, for a single broker without Redis.

    ``limits`` given to the constructor are the default for checks that name none.
    """

    def __init__(self, limits: Sequence[Limit] = (), *, prefix: str = "signpost:rl",
                 clock: Callable[[], float] = time.time) -> None:
        self.limits = tuple(limits)
        self.prefix = prefix
        self._clock = clock
        self._tats: dict[str, int] = {}  # key -> TAT (ms); a TAT in the past is as good as none
        self._lock = asyncio.Lock()

    async def check(self, subjects: Mapping[str, str], limits: Sequence[Limit] | None = None
                    ) -> Decision:
        budgets = _budgets(self.limits if limits is None else limits)
        keys = bucket_keys(self.prefix, budgets, subjects)
        async with self._lock:
            now_ms = int(self._clock() * 1000)
            if len(self._tats) > 100_000:
                self._tats = {k: v for k, v in self._tats.items() if v > now_ms}
            decision, new = gcra_step([self._tats.get(k) for k in keys], budgets, now_ms)
            if new is not None:
                self._tats.update(zip(keys, new, strict=True))
            return decision

    async def close(self) -> None:
        self._tats.clear()

    async def problem(self) -> str | None:
        return None


# KEYS: one per budget. ARGV: interval_ms, period_ms for each budget, in the same order.
# Uses Redis's own clock, so every broker replica agrees on "now".
GCRA_LUA = """
local t = redis.call('TIME')
local now = tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
local wait = 0
local worst = 0
local new = {}
for i = 1, #KEYS do
  local interval = tonumber(ARGV[2 * i - 1])
  local period = tonumber(ARGV[2 * i])
  local tat = tonumber(redis.call('GET', KEYS[i]))
  if tat == nil or tat < now then tat = now end
  local candidate = tat + interval
  local allow_at = candidate - period
  if allow_at > now and allow_at - now > wait then
    wait = allow_at - now
    worst = i
  end
  new[i] = candidate
end
if wait > 0 then
  return {0, wait, worst}
end
for i = 1, #KEYS do
  redis.call('SET', KEYS[i], new[i], 'PX', math.max(1, new[i] - now))
end
return {1, 0, 0}
"""


class RedisLimiter:
    """Budgets kept in Redis, checked and counted by one Lua script (atomic across replicas).

    The limits travel with each call (as script arguments), so replicas that have accepted a new
    trust list apply its limits at once; ``limits`` given to the constructor are the default.
    """

    def __init__(self, url: str, limits: Sequence[Limit] = (), *, prefix: str = "signpost:rl",
                 timeout_seconds: float = 0.5) -> None:
        self.limits = tuple(limits)
        self.prefix = prefix
        self.redis = Redis.from_url(
            url, socket_timeout=timeout_seconds, socket_connect_timeout=timeout_seconds,
            retry=Retry(NoBackoff(), 0), health_check_interval=0,
        )
        self._script = self.redis.register_script(GCRA_LUA)
        self._timeout = timeout_seconds

    async def check(self, subjects: Mapping[str, str], limits: Sequence[Limit] | None = None
                    ) -> Decision:
        budgets = _budgets(self.limits if limits is None else limits)
        keys = bucket_keys(self.prefix, budgets, subjects)
        args: list[int] = []
        for limit in budgets:
            args += [limit.interval_ms, limit.period_ms]
        try:
            async with asyncio.timeout(self._timeout * 2):
                allowed, wait, worst = await self._script(keys=keys, args=args)
        except (RedisError, OSError, TimeoutError) as exc:
            raise RateLimitUnavailable(
                f"rate limit store: Redis did not answer ({exc.__class__.__name__})") from exc
        if int(allowed) == 1:
            return Decision(True)
        return Decision(False, budgets[int(worst) - 1].name, int(wait))

    async def close(self) -> None:
        await self.redis.aclose()

    async def problem(self) -> str | None:
        try:
            async with asyncio.timeout(self._timeout * 2):
                await self.redis.ping()
        except (RedisError, OSError, TimeoutError) as exc:
            return f"rate limit store: Redis did not answer ({exc.__class__.__name__})"
        return None


def create_limiter(redis_url: str | None, limits: Sequence[Limit], *, prefix: str = "signpost:rl",
                   timeout_seconds: float = 0.5) -> RateLimiter:
    """A Redis limiter when a URL is configured, otherwise the in-process one."""
    if redis_url:
        return RedisLimiter(redis_url, limits, prefix=prefix, timeout_seconds=timeout_seconds)
    return MemoryLimiter(limits, prefix=prefix)


def subjects_for(issuer: str, sub: str, org: str) -> dict[str, str]:
    """Budget subjects for one signed-in person: the person, and their organisation."""
    return {"practitioner": f"{issuer}|{sub}", "organisation": f"{issuer}|{org}"}


# --- aiohttp wiring -------------------------------------------------------------------------

LIMITER = web.AppKey("ratelimiter", RateLimiter)
LIMITS: web.AppKey[Callable[[], Sequence[Limit]]] = web.AppKey("ratelimits")


def install(app: web.Application, redis_url: str | None,
            limits: Sequence[Limit] | Callable[[], Sequence[Limit]], *,
            prefix: str = "signpost:rl", timeout_seconds: float = 0.5) -> None:
    """Open the limiter with the app and close it on shutdown.

    ``limits`` is either fixed, or a callable giving the limits in force for each search
    (``FollowingLimits``, so the limits follow the trust list).
    """
    fixed = tuple(limits) if not callable(limits) else ()
    app[LIMITS] = limits if callable(limits) else (lambda: fixed)

    async def context(app: web.Application) -> AsyncIterator[None]:
        app[LIMITER] = create_limiter(redis_url, (), prefix=prefix, timeout_seconds=timeout_seconds)
        yield
        await app[LIMITER].close()

    app.cleanup_ctx.append(context)


async def health_reasons(app: web.Application) -> list[HealthReason]:
    """``redis-unreachable`` when the shared store cannot be asked (every search would get 503)."""
    limiter = app.get(LIMITER)
    if limiter is None:
        return [HealthReason("rate-limit-unavailable", "rate limit store: not running")]
    detail = await limiter.problem()
    return [HealthReason("redis-unreachable", detail)] if detail else []


async def admit(app: web.Application, issuer: str, sub: str, org: str) -> web.Response | None:
    """Count one search; ``None`` when it may go ahead, else the problem response to send.

    429 with ``Retry-After`` when a budget is spent; 503 when the shared store cannot be asked
    (fail closed: a broken limiter never means unlimited searching).
    """
    limiter = app.get(LIMITER)
    if limiter is None:
        return problem(503, "Searching unavailable", "rate limit store: not running",
                       kind="rate-limit-unavailable", headers={"Retry-After": "5"})
    try:
        decision = await limiter.check(subjects_for(issuer, sub, org), app[LIMITS]())
    except RateLimitUnavailable as exc:
        admission = app.get(ADMISSION)
        if admission is not None and admission.behind():
            # Redis was asked, but this broker's own event loop was too late to hear the answer.
            log.warning("search refused: the broker is overloaded (%s)", exc)
            return overloaded(f"its event loop is {1000 * admission.lag_seconds:.0f} ms behind")
        log.error("searches refused: %s", exc)
        return problem(503, "Searching unavailable", str(exc), kind="rate-limit-unavailable",
                       headers={"Retry-After": "5"})
    if decision.allowed:
        return None
    return problem(429, "Too many searches",
                   f"{decision.limit}: search budget spent; try again in {decision.retry_after} s",
                   kind="rate-limited", headers={"Retry-After": str(decision.retry_after)},
                   limit=decision.limit)
