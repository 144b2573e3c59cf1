"""Search budgets: GCRA per practitioner and organisation, shared through a real redis-server by
several broker processes, with the same behaviour in process, and failing closed without Redis."""

from __future__ import annotations

import dataclasses
import re
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import aiohttp
import pytest
from redis.asyncio import Redis

from broker.ratelimit import (
    Limit,
    MemoryLimiter,
    RateLimitUnavailable,
    RedisLimiter,
    gcra_step,
    limits_from,
    subjects_for,
)
from federation.tools.ports import free_port
from tests.brokerprocs import broker_processes
from tests.conftest import AMARA, Federation
from tests.conftest_redis import RedisServer, redis_server  # noqa: F401  (fixture)

PURPOSE = "child_protection_enquiry"
REPO = Path(__file__).resolve().parent.parent
MINUTE = 60_000
KEY = b"pseudonym key for the tests 0123"


def test_gcra_lets_a_burst_through_then_one_per_interval() -> None:
    """5 a minute: five at once, the sixth waits 12 s, and after 12 s one more goes."""
    limits = [Limit("practitioner_per_minute", "practitioner", 5, MINUTE)]
    tats: list[int | None] = [None]
    outcomes = []
    for _ in range(6):
        decision, new = gcra_step(tats, limits, 1_000_000)
        outcomes.append(decision.allowed)
        if new is not None:
            tats = list(new)
    assert [True] * 5 + [False] == outcomes
    denied, _ = gcra_step(tats, limits, 1_000_000)
    assert (False, "practitioner_per_minute", 12_000, 12) == (
        denied.allowed, denied.limit, denied.retry_after_ms, denied.retry_after)
    later, _ = gcra_step(tats, limits, 1_012_000)
    assert later.allowed


def test_gcra_counts_all_budgets_or_none() -> None:
    """A search refused by one budget is not counted against the others (atomic step)."""
    limits = [Limit("practitioner_per_minute", "practitioner", 10, MINUTE),
              Limit("organisation_per_minute", "organisation", 1, MINUTE)]
    first, tats = gcra_step([None, None], limits, 0)
    assert first.allowed and tats is not None
    second, unchanged = gcra_step(tats, limits, 0)
    assert (False, "organisation_per_minute", None) == (second.allowed, second.limit, unchanged)


LIMIT_TABLE = {
    "defaults": ({}, None, {"practitioner_per_minute": 30, "practitioner_per_day": 300}),
    "trust-list policy": ({"practitioner_per_minute": 10}, None, {"practitioner_per_minute": 10}),
    "broker override wins": ({"practitioner_per_minute": 10}, {"practitioner_per_minute": 3},
                             {"practitioner_per_minute": 3}),
}


@pytest.mark.parametrize("name", LIMIT_TABLE)
def test_limits_come_from_policy_then_config(name: str) -> None:
    """Defaults, then the trust list's policy.rate_limits, then the broker config's override."""
    policy, override, expected = LIMIT_TABLE[name]
    counts = {limit.name: limit.count for limit in limits_from(policy, override)}
    assert expected == {k: counts[k] for k in expected}


def test_unknown_or_zero_limits_are_refused() -> None:
    """A misspelt or empty budget is a configuration error, never 'no limit'."""
    with pytest.raises(ValueError, match=r"rate_limits\.per_minute"):
        limits_from({}, {"per_minute": 5})
    with pytest.raises(ValueError, match="expected at least 1"):
        limits_from({}, {"practitioner_per_minute": 0})


SMALL = [Limit("practitioner_per_minute", "practitioner", 3, MINUTE),
         Limit("organisation_per_minute", "organisation", 5, MINUTE)]


async def _run(limiter: Any) -> list[tuple[bool, str | None]]:
    out = []
    for person in ("a", "a", "a", "a", "b", "b", "b"):
        decision = await limiter.check(subjects_for("idp", person, "org", KEY))
        out.append((decision.allowed, decision.limit))
    return out


EXPECTED_SEQUENCE = [(True, None)] * 3 + [(False, "practitioner_per_minute")] + [(True, None)] * 2 + [
    (False, "organisation_per_minute")]


async def test_in_process_store_behaves_as_specified() -> None:
    """Three per person and five per organisation a minute, in process."""
    assert EXPECTED_SEQUENCE == await _run(MemoryLimiter(SMALL))


async def test_redis_store_behaves_exactly_like_the_in_process_one(redis_server: RedisServer) -> None:  # noqa: F811
    """The Lua script gives the same decisions as the in-process store for the same sequence."""
    limiter = RedisLimiter(redis_server.url, SMALL, prefix="t1")
    try:
        assert EXPECTED_SEQUENCE == await _run(limiter)
    finally:
        await limiter.close()


async def test_redis_unreachable_raises_not_allows(tmp_path: Path) -> None:
    """A configured Redis that does not answer raises RateLimitUnavailable (fail closed)."""
    limiter = RedisLimiter(f"redis://127.0.0.1:{free_port()}/0", SMALL, timeout_seconds=0.2)
    try:
        with pytest.raises(RateLimitUnavailable, match="Redis did not answer"):
            await limiter.check(subjects_for("idp", "a", "org", KEY))
    finally:
        await limiter.close()


async def _search(url: str, token: str) -> tuple[int, dict[str, Any], dict[str, str]]:
    async with aiohttp.ClientSession() as session, session.post(
        f"{url}/v1/search", json={"identity": AMARA, "purpose": PURPOSE},
        headers={"Authorization": f"Bearer {token}"},
    ) as response:
        return response.status, await response.json(content_type=None), dict(response.headers)


async def _restart_broker(federation: Federation, **changes: Any) -> None:
    await federation.stop("broker")
    federation.broker_config = dataclasses.replace(federation.broker_config, **changes)
    await federation.start_broker()


async def test_429_with_retry_after_in_process(federation: Federation) -> None:
    """Without Redis one broker enforces the budget itself: 429, Retry-After, per person."""
    await _restart_broker(federation, rate_limits={"practitioner_per_minute": 2})
    token = federation.token()
    statuses = [(await _search(federation.broker_url, token))[0] for _ in range(3)]
    status, problem, headers = await _search(federation.broker_url, token)
    assert [200, 200, 429] == statuses
    assert 429 == status
    assert "practitioner_per_minute" == problem["limit"]
    assert 1 <= int(headers["Retry-After"]) <= 30
    other, _, _ = await _search(federation.broker_url, federation.token("mediator"))
    assert 400 == other  # another person's budget is untouched (refused only for missing mediation)


async def test_redis_stopped_mid_run_fails_closed(
        federation: Federation, redis_server: RedisServer,  # noqa: F811
) -> None:
    """Searches go through while Redis answers, get 503 (never unlimited) once it stops, and
    resume when it is back."""
    await _restart_broker(federation, redis_url=redis_server.url, redis_timeout_seconds=0.3)
    token = federation.token()
    before, _, _ = await _search(federation.broker_url, token)
    redis_server.stop()
    during = [await _search(federation.broker_url, token) for _ in range(3)]
    redis_server.start()
    after, _, _ = await _search(federation.broker_url, token)
    assert 200 == before
    assert [503, 503, 503] == [s for s, _, _ in during]
    assert during[0][1]["type"].endswith("rate-limit-unavailable")
    assert 200 == after


@pytest.fixture
def two_brokers(
        federation: Federation, redis_server: RedisServer, tmp_path: Path,  # noqa: F811
) -> Iterator[list[str]]:
    """Two `signpost broker serve` processes sharing one redis-server."""
    configs = [dataclasses.replace(federation.broker_config, port=free_port(), redis_url=redis_server.url,
                                   rate_limits={"practitioner_per_minute": 4}, audit_log=None,
                                   unsafe_no_audit_log=True) for _ in range(2)]
    with broker_processes(configs, tmp_path) as urls:
        yield urls


async def test_two_broker_processes_share_one_budget(federation: Federation, two_brokers: list[str]) -> None:
    """Four a minute across two broker processes: alternating between them, the fifth is refused."""
    token = federation.token()
    results = [await _search(two_brokers[i % 2], token) for i in range(6)]
    assert [200, 200, 200, 200, 429, 429] == [s for s, _, _ in results]
    assert int(results[4][2]["Retry-After"]) >= 1


async def test_redis_keys_carry_no_practitioner_id(federation: Federation, two_brokers: list[str],
                                                   redis_server: RedisServer) -> None:  # noqa: F811
    """Proves budgets are kept under keyed pseudonyms: after searches, no Redis key names the
    practitioner or their organisation, and both brokers used the same keys."""
    token = federation.token()
    for i in range(2):
        assert 200 == (await _search(two_brokers[i], token))[0]
    client = Redis.from_url(redis_server.url)
    try:
        keys = [k.decode() for k in await client.keys("*")]
    finally:
        await client.aclose()
    subjects = {k.rsplit(":", 1)[1] for k in keys if ":rl:" in k}
    assert (2, True, False, False) == (
        len(subjects), all(re.fullmatch("[0-9a-f]{32}", s) for s in subjects),
        any("practitioner@alpha" in k for k in keys), any("children" in k for k in keys))
