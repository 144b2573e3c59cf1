"""Rate limits follow the trust list: a new ``policy.rate_limits`` applies without a restart.

The live tests run the real three-node federation with a broker that re-reads the trust list
every 0.2 s, with the in-process limiter and with a real redis-server, and republish the list
with a lower limit using the same provisioning functions the command line uses.
"""

from __future__ import annotations

import asyncio
import dataclasses
from collections.abc import AsyncIterator
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import aiohttp
import pytest

from broker.ratelimit import FollowingLimits
from federation.tools import provision
from tests.conftest import AMARA, Federation, build_federation, default_records
from tests.conftest_redis import RedisServer, redis_server  # noqa: F401  (fixture)
from trust.trustlist import Policy, TrustList

REFRESH = 0.2
PURPOSE = "child_protection_enquiry"


def trust_list(folder: Path) -> TrustList:
    return provision.verify_file(folder / "trustlist.json", folder / "root.json")


@dataclasses.dataclass(frozen=True)
class Change:
    name: str
    policy: dict[str, Any]
    override: dict[str, int]
    expected: dict[str, int]


CHANGES = [
    Change("a new version's policy applies", {"practitioner_per_minute": 5}, {},
           {"practitioner_per_minute": 5, "practitioner_per_day": 300}),
    Change("the broker override still wins", {"practitioner_per_minute": 5, "practitioner_per_day": 50},
           {"practitioner_per_minute": 3}, {"practitioner_per_minute": 3, "practitioner_per_day": 50}),
    Change("an invalid policy leaves the previous limits in force", {"practitioner_per_minute": 0}, {},
           {"practitioner_per_minute": 30, "practitioner_per_day": 300}),
    Change("a policy without rate limits falls back to the defaults", {}, {},
           {"practitioner_per_minute": 30, "organisation_per_day": 20000}),
]


@pytest.mark.parametrize("case", CHANGES, ids=[c.name for c in CHANGES])
def test_limits_are_recomputed_when_the_trust_list_version_changes(case: Change, tmp_path: Path) -> None:
    """``FollowingLimits`` gives the limits of the list in force: recomputed on a new version,
    the broker override applied on top, and never dropped for an invalid policy."""
    provision.create(tmp_path / "fed", "test")
    first = trust_list(tmp_path / "fed")
    current = {"list": first}
    limits = FollowingLimits(lambda: current["list"], case.override)
    before = {limit.name: limit.count for limit in limits()}
    current["list"] = dataclasses.replace(first, version=first.version + 1,
                                          policy=Policy(rate_limits=case.policy))
    after = {limit.name: limit.count for limit in limits()}
    assert (case.override.get("practitioner_per_minute", 30), case.expected) == (
        before["practitioner_per_minute"], {k: after[k] for k in case.expected})


@pytest.fixture
async def live(tmp_path: Path) -> AsyncIterator[Federation]:
    """The standard federation with the broker refreshing its trust list every 0.2 s (not started)."""
    fed = build_federation(tmp_path / "federation", default_records())
    fed.broker_config = dataclasses.replace(fed.broker_config, trust_refresh_seconds=REFRESH)
    for node_id in fed.node_configs:
        await fed.start_node(node_id)
    try:
        yield fed
    finally:
        await fed.close()


async def broker_version(fed: Federation) -> int:
    async with aiohttp.ClientSession() as session, session.get(fed.broker_url + "/healthz") as response:
        return int((await response.json())["trust_list_version"])


async def statuses(fed: Federation, token: str, count: int) -> list[int]:
    return [(await fed.search({"identity": AMARA, "purpose": PURPOSE}, token))[0] for _ in range(count)]


@pytest.mark.parametrize("store", ["in-process", "redis"])
async def test_a_lower_limit_in_a_new_trust_list_applies_without_restart(
        live: Federation, store: str, request: pytest.FixtureRequest) -> None:
    """A running broker whose trust list is republished with 2 searches a minute (was 30)
    refuses the third search of a practitioner within one refresh interval; a practitioner who
    searched under the old limit keeps that use counted against the new rate."""
    if store == "redis":
        server: RedisServer = request.getfixturevalue("redis_server")
        live.broker_config = dataclasses.replace(live.broker_config, redis_url=server.url)
    await live.start_broker()
    alpha = live.token(authority="alpha", now=datetime.now(UTC))
    beta = live.token(authority="beta", now=datetime.now(UTC))
    assert [200, 200, 200] == await statuses(live, alpha, 3)
    signed = provision.load_signed(live.folder)
    signed["policy"] = {**signed["policy"],
                        "rate_limits": {**signed["policy"]["rate_limits"], "practitioner_per_minute": 2}}
    lowered = int(provision.publish(live.folder, signed)["signed"]["version"])
    for _ in range(int(3 / REFRESH)):
        if await broker_version(live) == lowered:
            break
        await asyncio.sleep(REFRESH / 2)
    assert lowered == await broker_version(live)
    assert [200, 200, 429] == await statuses(live, beta, 3)
    # alpha's three searches at 30 a minute used 6 s of budget: one more fits 2 a minute.
    assert [200, 429] == await statuses(live, alpha, 2)
    status, problem = await live.search({"identity": AMARA, "purpose": PURPOSE}, beta)
    assert (429, "practitioner_per_minute") == (status, problem["limit"])
