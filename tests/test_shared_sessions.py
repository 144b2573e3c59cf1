"""Two broker processes share practitioners' web sessions through one real redis-server."""

from __future__ import annotations

import dataclasses
from collections.abc import AsyncIterator
from pathlib import Path

import pytest

from broker.demo_idp import DEMO_PASSWORD
from federation.tools.ports import free_port
from tests.brokerprocs import broker_processes
from tests.conftest import AMARA, Federation
from tests.conftest_redis import RedisServer, redis_server
from tests.webfed import Browser, build_web_federation, csrf_of, fresh_code

__all__ = ["redis_server"]

@pytest.fixture
async def two_web_brokers(tmp_path: Path,
                          redis_server: RedisServer) -> AsyncIterator[tuple[Federation, list[str]]]:
    """The web federation's nodes in process, and two `signpost broker serve` processes (demo
    identity provider on) with one Redis for sessions and rate limits."""
    fed = build_web_federation(tmp_path / "federation")
    for node_id in fed.node_configs:
        await fed.start_node(node_id)
    configs = [dataclasses.replace(fed.broker_config, port=free_port(), redis_url=redis_server.url,
                                   audit_log=fed.folder / "broker" / f"audit-{i}.log") for i in range(2)]
    try:
        with broker_processes(configs, tmp_path) as urls:
            yield fed, urls
    finally:
        await fed.close()


async def test_sessions_follow_the_practitioner_across_broker_processes(
        two_web_brokers: tuple[Federation, list[str]]) -> None:
    """Proves a practitioner who signs in on one broker is signed in on the other, with requests
    alternating between them: the sign-in form from A posted to B, the search page from A, the
    search posted to B, sign-out on A ending the session on B too."""
    _, (first, second) = two_web_brokers
    browser = Browser(first)
    try:
        _, page, _ = await browser.get("/demo-idp/sign-in")  # the form from the first broker ...
        browser.base = second  # ... posted to the second
        status, _, _ = await browser.post("/demo-idp/sign-in", {
            "csrf_token": csrf_of(page), "username": "sam.patel", "password": DEMO_PASSWORD,
            "code": fresh_code()})
        assert 303 == status
        seen = []
        for i in range(4):
            browser.base = (first, second)[i % 2]
            status, page, _ = await browser.get("/search")
            seen.append(status)
        assert [200, 200, 200, 200] == seen
        year, month, day = AMARA["date_of_birth"].split("-")
        browser.base = second
        status, page, _ = await browser.post("/search", {
            "csrf_token": csrf_of(page), "given_name": "Amara", "family_name": "Okafor", "dob-day": day,
            "dob-month": month, "dob-year": year, "sex": "F", "purpose": "early_help"})
        assert (200, True) == (status, "Oakfield Primary School" in page)
        browser.base = first
        status, _, _ = await browser.post("/sign-out", {"csrf_token": csrf_of(page)})
        browser.base = second
        after, _, _ = await browser.get("/search")
        assert (303, 303) == (status, after)
    finally:
        await browser.close()
