"""Mutual TLS between broker and nodes, on real loopback sockets with certificates from a real CA.

The federation CA and member certificates are made by ``trust.tls`` (cryptography's x509); the
nodes serve HTTPS requiring a client certificate; the broker presents its certificate and checks
each node's certificate against the CA and the trust list.
"""

from __future__ import annotations

import asyncio
import dataclasses
import json
import ssl
from collections.abc import AsyncIterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import aiohttp
import pytest
from aiohttp import web

from federation import frames
from federation.http import runner as app_runner
from federation.protocol import QueryId
from federation.tools import provision
from node.api import NODE
from tests.conftest import AMARA, TEST_GRACE, Federation, build_federation, default_records
from tests.test_revocation import broker_query
from trust import keys as keyfiles
from trust import tls

PURPOSE = "child_protection_enquiry"


@dataclass
class TlsFederation:
    """A running federation whose broker-node traffic is mutual TLS."""

    fed: Federation
    tls_dir: Path

    def files(self, member: str) -> tls.TlsFiles:
        return tls.TlsFiles(self.tls_dir / f"{member}.pem", self.tls_dir / f"{member}.key",
                            self.tls_dir / "ca.pem")

    def node_url(self, node_id: str) -> str:
        return f"https://127.0.0.1:{self.fed.node_configs[node_id].port}"


def enable_tls(fed: Federation, extra_certs: tuple[str, ...] = ()) -> Path:
    """Create the CA and certificates, switch node endpoints to https, and set the TLS configs.

    A second broker member, ``broker-b``, is added (with its key under ``keys/``)."""
    tls_dir = fed.folder / "tls"
    second = keyfiles.generate()
    provision.add_members(fed.folder, [(provision.member_entry("broker-b", "Broker B", ["broker"], second),
                                        second)])
    tls.create_ca(tls_dir / "ca.pem", tls_dir / "ca.key", "test-federation")
    for member in ("broker", "broker-b", *fed.node_configs, *extra_certs):
        tls.issue_certificate(tls_dir / "ca.pem", tls_dir / "ca.key", member, tls_dir / f"{member}.pem",
                              tls_dir / f"{member}.key")
    signed = provision.load_signed(fed.folder)
    for entry in signed["members"]:
        if entry.get("endpoint", "").startswith("http://") and "node" in entry["roles"]:
            entry["endpoint"] = "https://" + entry["endpoint"].removeprefix("http://")
    provision.publish(fed.folder, signed)

    ca = tls_dir / "ca.pem"
    fed.node_configs = {k: dataclasses.replace(c, tls_cert=tls_dir / f"{k}.pem", tls_key=tls_dir / f"{k}.key",
                                               tls_ca=ca, trust_refresh_seconds=0.2)
                        for k, c in fed.node_configs.items()}
    fed.broker_config = dataclasses.replace(fed.broker_config, tls_cert=tls_dir / "broker.pem",
                                            tls_key=tls_dir / "broker.key", tls_ca=ca,
                                            trust_refresh_seconds=0.2)
    return tls_dir


async def serve_tls_node(fed: Federation, node_id: str) -> None:
    from node.api import create_app

    config = fed.node_configs[node_id]
    assert config.tls is not None
    runner = app_runner(create_app(config), grace=TEST_GRACE)
    await runner.setup()
    await web.TCPSite(runner, "127.0.0.1", config.port, ssl_context=tls.server_context(config.tls)).start()
    fed.runners[node_id] = runner


@pytest.fixture
async def tls_federation(tmp_path: Path) -> AsyncIterator[TlsFederation]:
    """Three nodes serving mutual TLS, and a broker that reaches them over it."""
    fed = build_federation(tmp_path / "federation", default_records())
    tls_dir = enable_tls(fed, extra_certs=("intruder",))
    for node_id in fed.node_configs:
        await serve_tls_node(fed, node_id)
    await fed.start_broker()
    try:
        yield TlsFederation(fed, tls_dir)
    finally:
        await fed.close()


async def test_search_runs_over_mutual_tls(tls_federation: TlsFederation) -> None:
    """A search fans out over mutual TLS on loopback and every node answers."""
    status, answer = await tls_federation.fed.search({"identity": AMARA, "purpose": PURPOSE})
    statuses = {r["authority"]["id"]: r["status"] for r in answer["results"]}
    assert (200, {"alpha": "match", "beta": "match", "gamma": "no_match"}) == (status, statuses)
    assert answer["complete"] is True


def foreign_ca_files(folder: Path) -> tls.TlsFiles:
    """A certificate for 'broker' from a CA that is not the federation's."""
    tls.create_ca(folder / "ca.pem", folder / "ca.key", "elsewhere")
    tls.issue_certificate(folder / "ca.pem", folder / "ca.key", "broker", folder / "broker.pem",
                          folder / "broker.key")
    return tls.TlsFiles(folder / "broker.pem", folder / "broker.key", folder / "ca.pem")


@dataclass(frozen=True)
class ClientCase:
    name: str
    client_cert: str | None  # a member certificate from the federation CA, "foreign", or None
    expected: str  # "handshake" (TLS refuses), or the HTTP status


CLIENT_CASES = [
    ClientCase("no client certificate", None, "handshake"),
    ClientCase("certificate from a foreign CA", "foreign", "handshake"),
    ClientCase("federation certificate of a non-member", "intruder", "403"),
    ClientCase("federation certificate of a node, not a broker", "beta", "403"),
    ClientCase("the broker's certificate", "broker", "400"),
]


@pytest.mark.parametrize("case", CLIENT_CASES, ids=[c.name for c in CLIENT_CASES])
async def test_node_refuses_clients_without_a_current_broker_certificate(
    tls_federation: TlsFederation, tmp_path: Path, case: ClientCase
) -> None:
    """Only a client holding a current broker's certificate reaches the query handler (which then
    answers 400 to the empty body); everyone else is stopped in the handshake or with 403."""
    ca = tls_federation.tls_dir / "ca.pem"
    context: ssl.SSLContext
    if case.client_cert is None:
        context = tls.plain_client_context(ca)
    elif case.client_cert == "foreign":
        foreign = foreign_ca_files(tmp_path / "foreign")
        context = tls.plain_client_context(ca)
        context.load_cert_chain(str(foreign.cert), str(foreign.key))
    else:
        context = tls.client_context(tls_federation.files(case.client_cert))
    outcome: str
    body: dict[str, Any] = {}
    async with aiohttp.ClientSession(connector=aiohttp.TCPConnector(ssl=context)) as session:
        try:
            async with session.post(tls_federation.node_url("alpha") + "/v1/query", json={}) as response:
                outcome = str(response.status)
                body = await response.json(content_type=None)
        except (aiohttp.ClientError, ssl.SSLError, ConnectionError):
            outcome = "handshake"
    assert case.expected == outcome
    if outcome == "403":
        assert "https://signpost.example/problems/client-certificate" == body["type"]


async def test_plain_http_to_a_tls_node_gets_nothing(tls_federation: TlsFederation) -> None:
    """A node configured for TLS does not speak plain HTTP at all."""
    url = tls_federation.node_url("alpha").replace("https://", "http://") + "/healthz"
    async with aiohttp.ClientSession() as session:
        with pytest.raises(aiohttp.ClientError):
            async with session.get(url) as response:
                await response.read()


async def test_broker_drops_a_node_whose_certificate_is_not_the_pinned_one(
    tls_federation: TlsFederation,
) -> None:
    """Pinning a different fingerprint for alpha in a new version makes the broker refuse alpha's
    (CA-valid) certificate: alpha is unavailable, flagged as an integrity failure."""
    fed = tls_federation.fed
    other = tls.certificate_fingerprint(tls_federation.tls_dir / "intruder.pem")
    provision.bind_certificate(fed.folder, "alpha", other)
    real = tls.certificate_fingerprint(tls_federation.tls_dir / "beta.pem")
    document = provision.bind_certificate(fed.folder, "beta", real)
    for _ in range(30):
        status, answer = await fed.search({"identity": AMARA, "purpose": PURPOSE})
        statuses = {r["authority"]["id"]: r["status"] for r in answer["results"]}
        if statuses["alpha"] == "unavailable":
            break
        await asyncio.sleep(0.1)
    assert (200, {"alpha": "unavailable", "beta": "match", "gamma": "no_match"}) == (status, statuses)
    assert document["signed"]["version"] >= 4


async def test_removing_the_broker_from_the_trust_list_closes_the_nodes_to_its_certificate(
    tls_federation: TlsFederation,
) -> None:
    """A broker removed in a new version is refused by the node at the next refresh (403), even
    though its certificate still chains to the federation CA: no restart, no CRL."""
    provision.remove_member(tls_federation.fed.folder, "broker")
    context = tls.client_context(tls_federation.files("broker"))
    status = 0
    async with aiohttp.ClientSession(connector=aiohttp.TCPConnector(ssl=context)) as session:
        for _ in range(30):
            async with session.post(tls_federation.node_url("alpha") + "/v1/query", json={}) as response:
                status = response.status
            if status == 403:
                break
            await asyncio.sleep(0.1)
    assert 403 == status


async def test_a_channel_of_a_broker_removed_from_the_trust_list_is_closed_at_its_next_frame(
    tls_federation: TlsFederation,
) -> None:
    """The node checks a channel's broker certificate again under each new trust list: a channel
    opened while the broker was a member is closed (1008) at the first frame after a list that no
    longer names it is in force, with no answer to that frame."""
    key = keyfiles.load_private(tls_federation.fed.folder / "keys" / "broker.pem")
    node = tls_federation.fed.runners["alpha"].app[NODE]
    context = tls.client_context(tls_federation.files("broker"))

    def query() -> str:
        token = broker_query(key)
        jti = json.loads(keyfiles.b64url_decode(token.split(".")[1]))["jti"]
        return frames.QueryFrame(QueryId(jti), token).to_text()

    async with aiohttp.ClientSession(connector=aiohttp.TCPConnector(ssl=context)) as session, \
            session.ws_connect(tls_federation.node_url("alpha") + frames.CHANNEL_PATH,
                               protocols=frames.SUBPROTOCOLS) as ws:
        await ws.send_str(query())
        first = frames.parse((await ws.receive(timeout=5)).data)
        version = node.trust.current.version
        provision.remove_member(tls_federation.fed.folder, "broker")
        for _ in range(50):
            if node.trust.current.version != version:
                break
            await asyncio.sleep(0.1)
        await ws.send_str(query())
        closed = await ws.receive(timeout=5)
    assert isinstance(first, frames.AnswerFrame)
    assert node.trust.current.version != version
    assert (aiohttp.WSMsgType.CLOSE, 1008) == (closed.type, closed.data)


@pytest.mark.parametrize(("certificate", "signer", "expected"), [
    ("broker", "broker", 200),
    ("broker-b", "broker-b", 200),
    ("broker-b", "broker", 403),
    ("broker", "broker-b", 403),
], ids=["broker as itself", "broker-b as itself", "broker-b relaying broker's query",
        "broker relaying broker-b's query"])
async def test_query_issuer_must_be_the_broker_holding_the_tls_connection(
    tls_federation: TlsFederation, certificate: str, signer: str, expected: int
) -> None:
    """A query is answered only when its signed issuer is the broker whose certificate carried it,
    so a stolen broker signing key is useless without that broker's TLS key too (and vice versa)."""
    key = keyfiles.load_private(tls_federation.fed.folder / "keys" / f"{signer}.pem")
    token = broker_query(key, signer)
    context = tls.client_context(tls_federation.files(certificate))
    async with aiohttp.ClientSession(connector=aiohttp.TCPConnector(ssl=context)) as session, session.post(
        tls_federation.node_url("alpha") + "/v1/query", json={"v": 1, "query": token}
    ) as response:
        assert expected == response.status


async def test_cli_search_reaches_an_https_broker_trusting_the_federation_ca(
    tls_federation: TlsFederation, capsys: pytest.CaptureFixture[str]
) -> None:
    """A broker serving practitioners over HTTPS with its member certificate answers
    `signpost search --ca`, and the search itself runs over mutual TLS to the nodes."""
    from broker.app import create_app
    from federation.commands.main import main

    fed = tls_federation.fed
    config = dataclasses.replace(fed.broker_config, audit_log=fed.folder / "broker" / "https-audit.log")
    assert config.tls is not None
    runner = app_runner(create_app(config), grace=TEST_GRACE)
    await runner.setup()
    await web.TCPSite(runner, "127.0.0.1", 0,
                      ssl_context=tls.server_context(config.tls, require_client=False)).start()
    port = runner.addresses[0][1]
    try:
        code = await asyncio.to_thread(main, [
            "search", "--broker", f"https://localhost:{port}",
            "--ca", str(tls_federation.tls_dir / "ca.pem"),
            "--token", fed.token(), "--given-name", AMARA["given_name"],
            "--family-name", AMARA["family_name"],
            "--date-of-birth", AMARA["date_of_birth"], "--sex", "F", "--purpose", PURPOSE, "--json"])
    finally:
        await runner.cleanup()
    answer = json.loads(capsys.readouterr().out)
    assert (0, {"alpha": "match", "beta": "match", "gamma": "no_match"}) == (
        code, {r["authority"]["id"]: r["status"] for r in answer["results"]})
