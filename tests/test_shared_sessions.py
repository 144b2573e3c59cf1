"""Two broker processes share practitioners' web sessions through one real redis-server."""

from __future__ import annotations

import dataclasses
import os
import subprocess
import sys
import time
import urllib.request
from collections.abc import AsyncIterator
from pathlib import Path

import pytest

from broker.demo_idp import DEMO_PASSWORD
from federation import config as configfile
from federation.tools.ports import free_port
from tests.conftest import AMARA, Federation
from tests.conftest_redis import RedisServer, redis_server
from tests.webfed import Browser, build_web_federation, csrf_of, fresh_code

__all__ = ["redis_server"]

REPO = Path(__file__).resolve().parent.parent


def _wait_healthy(url: str, process: subprocess.Popen[bytes], seconds: float = 90) -> None:
    """Wait for the broker's /healthz (generous: the machine may be busy); fail if it exits."""
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        assert process.poll() is None, f"broker at {url} exited with {process.returncode}"
        try:
            with urllib.request.urlopen(f"{url}/healthz", timeout=1) as response:  # noqa: S310
                if response.status == 200:
                    return
        except OSError:
            time.sleep(0.2)
    raise RuntimeError(f"broker at {url} did not start")


@pytest.fixture
async def two_web_brokers(tmp_path: Path,
                          redis_server: RedisServer) -> AsyncIterator[tuple[Federation, list[str]]]:
    """The web federation's nodes in process, and two `signpost broker serve` processes (demo
    identity provider on) with one Redis for sessions and rate limits."""
    fed = build_web_federation(tmp_path / "federation")
    for node_id in fed.node_configs:
        await fed.start_node(node_id)
    processes, urls = [], []
    env = {**os.environ, "PYTHONPATH": str(REPO)}
    try:
        for i in range(2):
            port = free_port()
            config = dataclasses.replace(fed.broker_config, port=port, redis_url=redis_server.url,
                                         audit_log=fed.folder / "broker" / f"audit-{i}.log")
            path = tmp_path / f"broker-{i}.json"
            configfile.dump(config, path)
            processes.append(subprocess.Popen(
                [sys.executable, "-m", "federation.commands.main", "broker", "serve", "--config", str(path)],
                cwd=REPO, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL))
            urls.append(f"http://127.0.0.1:{port}")
        for url, process in zip(urls, processes, strict=True):
            _wait_healthy(url, process)
        yield fed, urls
    finally:
        for process in processes:
            process.terminate()
        for process in processes:
            try:
                process.wait(timeout=30)
            except subprocess.TimeoutExpired:  # a busy machine: do not leave it running
                process.kill()
                process.wait(timeout=10)
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
