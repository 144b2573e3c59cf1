"""Changing the trust list while everything runs: revocation and expiry take effect on refresh.

Real nodes and a real broker on loopback re-read the trust list every 0.2 s; the tests publish a
new version with the same provisioning functions the command line uses and check that, within
one refresh interval, every party acts on it, without a restart.
"""

from __future__ import annotations

import asyncio
import dataclasses
import uuid
from collections.abc import AsyncIterator
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import aiohttp
import pytest
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

from federation.http import runner as app_runner
from federation.tools import provision
from tests.conftest import AMARA, TEST_GRACE, Federation, build_federation, default_records
from trust import envelope
from trust import keys as keyfiles

REFRESH = 0.2
PURPOSE = "child_protection_enquiry"


@pytest.fixture
async def live(tmp_path: Path) -> AsyncIterator[Federation]:
    """The standard three-node federation, refreshing its trust list every 0.2 s."""
    fed = build_federation(tmp_path / "federation", default_records())
    fed.node_configs = {k: dataclasses.replace(c, trust_refresh_seconds=REFRESH)
                        for k, c in fed.node_configs.items()}
    fed.broker_config = dataclasses.replace(fed.broker_config, trust_refresh_seconds=REFRESH)
    await fed.start()
    try:
        yield fed
    finally:
        await fed.close()


async def versions(fed: Federation) -> dict[str, int]:
    """The trust-list version each running party reports on /healthz."""
    urls = {n: fed.node_url(n) for n in fed.node_configs} | {"broker": fed.broker_url}
    out = {}
    async with aiohttp.ClientSession() as session:
        for name, url in urls.items():
            async with session.get(url + "/healthz") as response:
                out[name] = (await response.json())["trust_list_version"]
    return out


async def wait_for_version(fed: Federation, version: int) -> None:
    """Wait at most a few refresh intervals for every party to run ``version``."""
    for _ in range(int(3 / REFRESH)):
        if set((await versions(fed)).values()) == {version}:
            return
        await asyncio.sleep(REFRESH / 2)
    raise AssertionError(f"not every party reached version {version}: {await versions(fed)}")


def broker_query(key: Ed25519PrivateKey, issuer: str = "broker") -> str:
    """A well-formed query as the broker ``issuer`` would sign it, with ``key``."""
    iat = int(datetime.now(UTC).timestamp())
    return envelope.sign({
        "v": 1, "iss": issuer, "aud": "test-federation", "iat": iat, "exp": iat + 60,
        "jti": str(uuid.uuid4()), "purpose": PURPOSE, "on_behalf_of": None, "identity": AMARA,
        "practitioner": {"iss": "alpha-idp", "sub": "p@alpha", "name": "Sam Patel", "org": "Alpha",
                         "role": "practitioner", "authority": "alpha", "amr": ["pwd", "otp"]},
    }, key, envelope.QUERY_TYPE)


async def ask_node(url: str, token: str) -> tuple[int, dict[str, Any]]:
    async with aiohttp.ClientSession() as session, session.post(
        url + "/v1/query", json={"v": 1, "query": token}
    ) as response:
        return response.status, await response.json(content_type=None)


def version_of(document: dict[str, Any]) -> int:
    return int(document["signed"]["version"])


async def test_revoked_broker_key_is_refused_by_every_node_after_refresh(live: Federation) -> None:
    """A stolen broker key, once revoked in a new version, signs nothing any node will answer;
    the broker's new key keeps working (rotation with overlap, then revocation of the old key)."""
    old = keyfiles.load_private(live.folder / "keys" / "broker.pem")
    _, rotated = provision.rotate_member_key(live.folder, "broker", overlap_hours=1)
    new = keyfiles.load_private(live.folder / "keys" / "broker.pem")
    await wait_for_version(live, version_of(rotated))
    for node_id in live.node_configs:
        assert 200 == (await ask_node(live.node_url(node_id), broker_query(old)))[0], node_id
    revoked = provision.revoke_key(live.folder, "broker", keyfiles.key_id(old.public_key()))
    await wait_for_version(live, version_of(revoked))
    for node_id in live.node_configs:
        status, body = await ask_node(live.node_url(node_id), broker_query(old))
        assert (401, "Query not trusted") == (status, body["title"]), node_id
        assert 200 == (await ask_node(live.node_url(node_id), broker_query(new)))[0], node_id


async def test_answers_signed_by_a_revoked_node_key_are_dropped(live: Federation) -> None:
    """After alpha's key is revoked, alpha (still signing with it) is reported unavailable."""
    status, answer = await live.search({"identity": AMARA, "purpose": PURPOSE})
    assert (200, "match") == (status, answer["results"][0]["status"])
    alpha_key = keyfiles.load_private(live.folder / "keys" / "alpha.pem")
    revoked = provision.revoke_key(live.folder, "alpha", keyfiles.key_id(alpha_key.public_key()))
    await wait_for_version(live, version_of(revoked))
    status, answer = await live.search({"identity": AMARA, "purpose": PURPOSE})
    statuses = {r["authority"]["id"]: r["status"] for r in answer["results"]}
    assert (200, {"alpha": "unavailable", "beta": "match", "gamma": "no_match"}) == (status, statuses)
    assert answer["complete"] is False


async def test_tokens_of_a_removed_issuer_are_refused(live: Federation) -> None:
    """Removing an identity provider from the federation invalidates its tokens at once."""
    token = live.token()
    assert 200 == (await live.search({"identity": AMARA, "purpose": PURPOSE}, token))[0]
    removed = provision.remove_member(live.folder, "alpha-idp")
    await wait_for_version(live, version_of(removed))
    status, body = await live.search({"identity": AMARA, "purpose": PURPOSE}, token)
    assert (401, "Unauthorised") == (status, body["title"])
    assert "alpha-idp" in body["detail"]


async def test_an_older_trust_list_is_not_installed_by_refresh(live: Federation) -> None:
    """Putting back an older signed list (a replay) leaves every party on the newer version for at
    least three refresh attempts each (counted, so the test fails if a refresh task is dead)."""
    before = (live.folder / "trustlist.json").read_text()
    newer = provision.remove_member(live.folder, "gamma-idp")
    await wait_for_version(live, version_of(newer))
    (live.folder / "trustlist.json").write_text(before)
    # Three refresh attempts by every party after the replay (a dead refresh task makes none).
    started = await refresh_attempts(live)
    for _ in range(int(10 / REFRESH)):
        now = await refresh_attempts(live)
        if all(now[name] >= started[name] + 3 for name in started):
            break
        await asyncio.sleep(REFRESH / 2)
    assert all(now[name] >= started[name] + 3 for name in started), (started, now)
    assert {version_of(newer)} == set((await versions(live)).values())


async def refresh_attempts(fed: Federation) -> dict[str, int]:
    """How many trust-list refreshes each running party has attempted, from /healthz."""
    urls = {n: fed.node_url(n) for n in fed.node_configs} | {"broker": fed.broker_url}
    out = {}
    async with aiohttp.ClientSession() as session:
        for name, url in urls.items():
            async with session.get(url + "/healthz") as response:
                out[name] = (await response.json())["trust_refresh"]["attempts"]
    return out


async def test_an_expired_trust_list_stops_searches_with_a_clear_503(live: Federation) -> None:
    """When the list in force expires, the broker and every node refuse work with 503 problems."""
    signed = provision.load_signed(live.folder)
    short = provision.publish(live.folder, signed, valid_days=2.5 / 86400)
    await wait_for_version(live, version_of(short))
    expires = datetime.fromisoformat(short["signed"]["expires"].replace("Z", "+00:00"))
    while datetime.now(UTC) <= expires:  # wait on the condition itself: the list has expired
        await asyncio.sleep(0.05)
    status, body = await live.search({"identity": AMARA, "purpose": PURPOSE})
    assert (503, "Federation trust list expired") == (status, body["title"])
    assert "searches are stopped" in body["detail"]
    key = keyfiles.load_private(live.folder / "keys" / "broker.pem")
    for node_id in live.node_configs:
        status, body = await ask_node(live.node_url(node_id), broker_query(key))
        assert (503, "https://signpost.example/problems/trust-list-expired") == (status, body["type"])
    assert timedelta(0) < datetime.now(UTC) - expires


async def test_trust_list_is_fetched_from_a_url_and_cached(tmp_path: Path) -> None:
    """With a URL, refresh downloads the list, accepts it only if it verifies, and caches it in the
    list file; a replayed older version from the URL is refused."""
    from aiohttp import web

    from trust.errors import RollbackError
    from trust.store import TrustStore

    folder = tmp_path / "fed"
    provision.create(folder, "test")
    served = {"body": (folder / "trustlist.json").read_text()}

    async def handler(_: web.Request) -> web.Response:
        return web.Response(text=served["body"], content_type="application/json")

    app = web.Application()
    app.router.add_get("/trustlist.json", handler)
    runner = app_runner(app, grace=TEST_GRACE)
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", 0)
    await site.start()
    port = runner.addresses[0][1]
    try:
        party = tmp_path / "party"
        party.mkdir()
        (party / "root.json").write_text((folder / "root.json").read_text())
        store = TrustStore(party / "root.json", party / "trustlist.json",
                           url=f"http://127.0.0.1:{port}/trustlist.json")
        assert 1 == (await asyncio.to_thread(store.load)).version  # first start: no cached file yet
        assert (party / "trustlist.json").exists()
        assert 1 == (await store.refresh()).version
        old = served["body"]
        key = keyfiles.generate()
        provision.add_members(folder, [(provision.member_entry("alpha", "Alpha", ["node"], key), key)])
        served["body"] = (folder / "trustlist.json").read_text()
        assert 2 == (await store.refresh()).version
        assert 2 == TrustStore(party / "root.json", party / "trustlist.json").load().version
        served["body"] = old
        with pytest.raises(RollbackError):
            await store.refresh()
        assert 2 == store.current.version
    finally:
        await runner.cleanup()
