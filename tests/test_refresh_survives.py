"""The trust refresh survives anything a publication point can send, says so on ``/healthz``, and
keeps "did not answer" apart from "answered wrong"; ``/healthz`` reports each degraded reason, and
``/metrics`` the refresh's last success and last error."""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import json
import time
from collections.abc import AsyncIterator, Callable
from pathlib import Path
from typing import Any

import aiohttp
import pytest
from aiohttp import web
from prometheus_client.parser import text_string_to_metric_families

from federation.http import runner as app_runner
from federation.tools import provision
from federation.tools.ports import free_port
from tests.conftest import AMARA, TEST_GRACE, Federation, build_federation, default_records
from trust import trustlist
from trust.errors import DownloadError
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


async def refresh_metrics(url: str) -> dict[tuple[str, tuple[tuple[str, str], ...]], float]:
    """The trust samples of ``/metrics``, read with prometheus_client's own parser."""
    async with aiohttp.ClientSession() as session, session.get(url + "/metrics") as response:
        assert 200 == response.status
        text = await response.text()
    return {(s.name, tuple(sorted(s.labels.items()))): s.value
            for family in text_string_to_metric_families(text) if family.name.startswith("signpost_trust")
            for s in family.samples}


async def test_refresh_success_and_errors_are_on_metrics_at_broker_and_node(
        source: Source, tmp_path: Path) -> None:
    """Proves `/metrics` at the broker and at a node (parsed by prometheus_client's parser) carries
    the refresh's attempts, the time of its last success, whether it is failing, and the time and
    kind of its last error: `answered-wrong` for a malformed list, `did-not-answer` for HTTP 503;
    the last success stays while it fails, and the version in force is shown."""
    fed = build_federation(tmp_path / "federation", {"alpha": default_records()["alpha"]})
    source.body = (fed.folder / "trustlist.json").read_bytes()
    version = float(json.loads(source.body)["signed"]["version"])
    fed.broker_config = dataclasses.replace(fed.broker_config, trust_list_url=source.url,
                                            trust_refresh_seconds=0.05)
    fed.node_configs["alpha"] = dataclasses.replace(fed.node_configs["alpha"], trust_list_url=source.url,
                                                    trust_refresh_seconds=0.05)
    await fed.start()
    urls = {"broker": fed.broker_url, "alpha": fed.node_url("alpha")}
    failing = ("signpost_trust_refresh_failing", ())
    success = ("signpost_trust_refresh_last_success_timestamp_seconds", ())

    async def reach(what: str, ready: Callable[[dict[Any, float]], bool]) -> dict[str, dict[Any, float]]:
        deadline = time.monotonic() + 30
        while True:
            found = {name: await refresh_metrics(url) for name, url in urls.items()}
            if all(ready(samples) for samples in found.values()):
                return found
            assert time.monotonic() < deadline, f"never saw {what}: {found}"
            await asyncio.sleep(0.05)

    def error(kind: str) -> tuple[str, tuple[tuple[str, str], ...]]:
        return ("signpost_trust_refresh_last_error_timestamp_seconds", (("kind", kind),))

    try:
        started = time.time()
        found = await reach("a success", lambda m: m.get(failing) == 0 and success in m)
        for samples in found.values():
            assert samples[success] >= started - 1
            assert version == samples[("signpost_trust_list_version", ())]
            assert samples[("signpost_trust_refresh_attempts_total", ())] >= 1
            assert not any(name.endswith("error_timestamp_seconds") for name, _ in samples)
        source.body = b'{"signed": [], "signatures": []}'
        found = await reach("answered-wrong", lambda m: m.get(failing) == 1 and error("answered-wrong") in m)
        assert all(success in samples for samples in found.values())
        source.status = 503
        await reach("did-not-answer", lambda m: m.get(failing) == 1 and error("did-not-answer") in m)
    finally:
        await fed.close()


async def test_a_source_that_drips_its_answer_is_cut_off_as_did_not_answer() -> None:
    """Proves regression for a fetch that a publication point could hold for ever: a source that
    sends its headers and then one byte every 50 ms, without end, is cut off by the fetcher's
    deadline and reported as "did not answer" (before, each read waited for a whole 64 KiB and
    the deadline was looked at only between reads, so the refresh hung)."""
    stop = asyncio.Event()

    async def drip(request: web.Request) -> web.StreamResponse:
        response = web.StreamResponse(headers={"Content-Type": "application/json"})
        await response.prepare(request)
        with contextlib.suppress(ConnectionError):
            while not stop.is_set():
                await response.write(b" ")
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(stop.wait(), 0.05)
        return response

    app = web.Application()
    app.router.add_get("/trustlist.json", drip)
    runner = web.AppRunner(app, access_log=None, shutdown_timeout=0.1)
    await runner.setup()
    await web.TCPSite(runner, "127.0.0.1", 0).start()
    url = f"http://127.0.0.1:{runner.addresses[0][1]}/trustlist.json"
    try:
        # The bound only stops a regression from hanging the suite; the fetch ends at its deadline.
        with pytest.raises(DownloadError, match=r"did not finish within 0\.5 s"):
            await asyncio.wait_for(Fetcher(timeout=0.5).fetch(url), 60)
    finally:
        stop.set()
        await runner.cleanup()


async def test_stopping_the_services_leaves_no_task_behind(tmp_path: Path) -> None:
    """Proves every background task of broker and nodes (trust refresh, checkpoint signer, index
    keeper, outbox, purge, channels and their reopening) is stopped and finished when they stop:
    after a search over the channels and a stop, no task but the test's own is left on the loop
    (a task left running, or cancelled and never run to its end, would be listed)."""
    fed = build_federation(tmp_path / "federation", default_records())
    for node_id, config in fed.node_configs.items():
        fed.node_configs[node_id] = dataclasses.replace(config, trust_refresh_seconds=0.05)
    fed.broker_config = dataclasses.replace(fed.broker_config, trust_refresh_seconds=0.05)
    await fed.start()
    try:
        status, answer = await fed.search({"identity": AMARA, "purpose": "child_protection_enquiry"})
        assert (200, True) == (status, answer["complete"])
        names = {t.get_name() for t in asyncio.all_tasks()}
        assert {"trust-refresh", "audit-checkpoints"} <= names  # running while the services run
    finally:
        await fed.close()
    assert [] == [t for t in asyncio.all_tasks() if t is not asyncio.current_task()]
