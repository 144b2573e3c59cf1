"""The trust refresh survives anything a publication point can send, says so on ``/healthz``, and
keeps "did not answer" apart from "answered wrong"; ``/healthz`` reports each degraded reason."""

from __future__ import annotations

import asyncio
import dataclasses
import json
import time
from collections.abc import AsyncIterator, Callable
from pathlib import Path
from typing import Any

import aiohttp
import pytest
from aiohttp import web

from federation.http import runner as app_runner
from federation.tools import provision
from federation.tools.ports import free_port
from tests.conftest import TEST_GRACE, Federation, build_federation, default_records
from trust import trustlist
from trust.fetcher import Fetcher
from trust.store import TrustStore


@dataclasses.dataclass
class Source:
    """A publication point on loopback whose answer the test sets."""

    url: str
    status: int = 200
    body: bytes = b""


@pytest.fixture
async def source() -> AsyncIterator[Source]:
    served = Source("")

    async def handler(_: web.Request) -> web.Response:
        return web.Response(status=served.status, body=served.body, content_type="application/json")

    app = web.Application()
    app.router.add_get("/trustlist.json", handler)
    runner = app_runner(app, grace=TEST_GRACE)
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", 0)
    await site.start()
    served.url = f"http://127.0.0.1:{runner.addresses[0][1]}/trustlist.json"
    try:
        yield served
    finally:
        await runner.cleanup()


def governed(folder: Path) -> Callable[[dict[str, Any]], bytes]:
    """Sign any ``signed`` part with the federation's real governance keys."""
    return lambda signed: json.dumps(trustlist.sign(signed, provision.governance_keys(folder))).encode()


# name -> (what the source does, whether that is "did not answer")
def bad_answers(folder: Path) -> dict[str, tuple[Callable[[Source], None], bool]]:
    sign = governed(folder)
    current = provision.load_signed(folder)

    def body(data: bytes, status: int = 200) -> Callable[[Source], None]:
        def apply(s: Source) -> None:
            s.body, s.status = data, status
        return apply

    return {
        "not JSON": (body(b"{"), False),
        "a JSON list": (body(b"[]"), False),
        "signed is a list": (body(b'{"signed": [], "signatures": []}'), False),
        "nested 10,000 deep": (body(b"[" * 10_000 + b"]" * 10_000), False),
        "a 5,000-digit version": (body(b'{"signed": {"version": ' + b"1" * 5000 + b"}, \"signatures\": []}"),
                                  False),
        "duplicate keys": (body(b'{"signed": {}, "signed": {}, "signatures": []}'), False),
        "validly signed, members not a list": (body(sign({**current, "version": 9, "members": "x"})), False),
        "validly signed, a key that is a number": (body(sign({**current, "version": 9, "members": [
            {"id": "m", "keys": [7]}]})), False),
        "validly signed, policy purposes of numbers": (body(sign({**current, "version": 9, "policy": {
            "purposes": [1, 2]}})), False),
        "larger than the cap": (body(b" " * 70_000 + b"{}"), False),
        "HTTP 403": (body(b"{}", 403), False),
        "HTTP 503": (body(b"{}", 503), True),
    }


async def test_refresh_survives_every_bad_answer_and_tells_them_apart(source: Source, tmp_path: Path) -> None:
    """Proves each bad answer is refused and recorded (never raised out of the loop), the list in
    force stays, an unreachable source is told apart from a wrong answer, and a good list is
    accepted afterwards."""
    folder = tmp_path / "fed"
    provision.create(folder, "test")
    party = tmp_path / "party"
    party.mkdir()
    (party / "root.json").write_text((folder / "root.json").read_text())
    source.body = (folder / "trustlist.json").read_bytes()
    store = TrustStore(party / "root.json", party / "trustlist.json", url=source.url,
                       fetcher=Fetcher(timeout=2, max_bytes=64 * 1024))
    assert 1 == (await asyncio.to_thread(store.load)).version
    for attempt, (case, (apply, unreachable)) in enumerate(bad_answers(folder).items(), start=1):
        apply(source)
        await store.refresh_once()
        assert (attempt, True, unreachable, 1) == (store.status.attempts, store.status.failing,
                                                   store.status.last_error_unreachable,
                                                   store.current.version), (case, store.status.last_error)
    store.url = f"http://127.0.0.1:{free_port()}/trustlist.json"  # nobody listening
    await store.refresh_once()
    assert (True, True) == (store.status.failing, store.status.last_error_unreachable)
    store.url = source.url
    source.status = 200
    source.body = json.dumps(provision.publish(folder, provision.load_signed(folder))).encode()
    await store.refresh_once()
    assert (2, False) == (store.current.version, store.status.failing)


async def test_the_refresh_loop_outlives_a_malformed_list(source: Source, tmp_path: Path) -> None:
    """Proves the background task keeps running after malformed lists: it makes further attempts
    and installs the next good version (the loop that died on one bad document is gone)."""
    folder = tmp_path / "fed"
    provision.create(folder, "test")
    party = tmp_path / "party"
    party.mkdir()
    (party / "root.json").write_text((folder / "root.json").read_text())
    source.body = (folder / "trustlist.json").read_bytes()
    store = TrustStore(party / "root.json", party / "trustlist.json", url=source.url)
    await asyncio.to_thread(store.load)
    source.body = governed(folder)({**provision.load_signed(folder), "version": 5, "members": {"a": 1}})
    async with store.refreshing(0.05):
        deadline = time.monotonic() + 10
        while store.status.attempts < 3 and time.monotonic() < deadline:
            await asyncio.sleep(0.02)
        assert (True, 1) == (store.status.failing, store.current.version)
        source.body = json.dumps(provision.publish(folder, provision.load_signed(folder))).encode()
        while store.current.version != 2 and time.monotonic() < deadline:
            await asyncio.sleep(0.02)
    assert (2, False) == (store.current.version, store.status.failing)


async def healthz(url: str) -> tuple[int, dict[str, Any]]:
    async with aiohttp.ClientSession() as session, session.get(url + "/healthz") as response:
        return response.status, await response.json()


async def test_healthz_is_degraded_when_redis_is_unreachable_or_the_list_expires_soon(tmp_path: Path) -> None:
    """Proves /healthz says `degraded` with HTTP 503 and names each reason: the broker's Redis
    not answering, and (at broker and node) a trust list expiring within a day."""
    fed: Federation = build_federation(tmp_path / "federation", default_records())
    provision.publish(fed.folder, provision.load_signed(fed.folder), valid_days=0.5)
    fed.broker_config = dataclasses.replace(fed.broker_config, redis_url=f"redis://127.0.0.1:{free_port()}",
                                            redis_timeout_seconds=0.2)
    await fed.start()
    try:
        status, body = await healthz(fed.broker_url)
        assert (503, "degraded") == (status, body["status"])
        assert {"redis-unreachable", "trust-list-expiring"} == {r["code"] for r in body["reasons"]}
        status, body = await healthz(fed.node_url("alpha"))
        assert (503, ["trust-list-expiring"]) == (status, [r["code"] for r in body["reasons"]])
    finally:
        await fed.close()


async def test_healthz_is_ok_when_nothing_is_wrong(federation: Federation) -> None:
    """Proves a healthy broker and node answer 200 `ok` without reasons, and show refresh status."""
    for url in (federation.broker_url, federation.node_url("alpha")):
        status, body = await healthz(url)
        assert (200, "ok", None) == (status, body["status"], body.get("reasons"))
        assert body["trust_refresh"]["last_error"] is None
