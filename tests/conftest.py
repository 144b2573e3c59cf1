"""Shared fixtures: a real federation on loopback (signed trust list, SQLite nodes, a broker).

Every server is a real aiohttp server on 127.0.0.1 with real keys and real SQLite files in
``tmp_path``; nothing of Signpost's own is mocked.
"""

from __future__ import annotations

import csv
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from datetime import UTC, date, datetime
from pathlib import Path
from typing import Any

import aiohttp
import pytest
from aiohttp import web

from broker.app import create_app as create_broker
from broker.config import BrokerConfig
from federation.http import runner as app_runner
from federation.tools import provision
from federation.tools.ports import free_port
from node.api import NODE
from node.api import create_app as create_node
from node.config import NodeConfig
from node.importer import import_files
from node.store import Store
from trust import keys as keyfiles
from trust import tokens

AUDIENCE = "signpost-broker"
TODAY = datetime.now(UTC).date()

TEST_GRACE = 1.0
"""Shutdown grace for test servers: their requests are short, and a stopping server otherwise
waits the whole grace for a connection accepted just before it stopped."""


def years_ago(years: int, month: int = 3, day: int = 14) -> str:
    return date(TODAY.year - years, month, day).isoformat()


CHILD_HEADER = ["record_id", "nhs_number", "upn", "given_name", "family_name", "other_names",
                "date_of_birth", "sex", "postcode", "shielded"]
INVOLVEMENT_HEADER = ["record_id", "child_record_id", "organisation", "service_category",
                      "practitioner_name", "practitioner_role", "phone", "secure_email",
                      "start_date", "end_date", "lead", "sensitive", "consent", "notify_on_access",
                      "assessment", "notify_url"]

# NHS numbers with valid check digits.
AMARA_NHS = "9434765919"
JORDAN_NHS = "9434765870"
LEO_NHS = "9434765862"

AMARA = {"given_name": "Amara", "family_name": "Okafor", "date_of_birth": years_ago(7), "sex": "F"}
JORDAN = {"given_name": "Jordan", "family_name": "Whitfield", "date_of_birth": years_ago(12, 11, 2),
          "postcode": "N17 6AB"}


def child_row(record_id: str, given: str, family: str, dob: str, **kw: Any) -> dict[str, str]:
    row = dict.fromkeys(CHILD_HEADER, "")
    row.update(record_id=record_id, given_name=given, family_name=family, date_of_birth=dob)
    row.update({k: str(v) for k, v in kw.items()})
    return row


def involvement_row(record_id: str, child: str, category: str = "social_care", **kw: Any) -> dict[str, str]:
    row = dict.fromkeys(INVOLVEMENT_HEADER, "")
    row.update(
        record_id=record_id, child_record_id=child, organisation="Children's Social Care",
        service_category=category, practitioner_name="Pat Jones", practitioner_role="Social Worker",
        phone="0113 496 0000", secure_email="pat.jones@example.gov.uk", start_date=years_ago(1),
    )
    row.update({k: str(v) for k, v in kw.items()})
    return row


def write_rows(path: Path, header: list[str], rows: list[dict[str, str]]) -> Path:
    with open(path, "w", newline="") as fh:
        writer = csv.DictWriter(fh, fieldnames=header)
        writer.writeheader()
        writer.writerows(rows)
    return path


def default_records() -> dict[str, tuple[list[dict[str, str]], list[dict[str, str]]]]:
    """The children each test node holds."""
    amara = {**AMARA, "nhs_number": AMARA_NHS, "postcode": "LS8 2QR"}
    return {
        "alpha": (
            [child_row("A-1", **{k: v for k, v in amara.items() if k not in ("given_name", "family_name",
                                                                              "date_of_birth")},
                       given="Amara", family="Okafor", dob=amara["date_of_birth"]),
             child_row("A-2", "Leo", "Smith", years_ago(5, 6, 1), nhs_number=LEO_NHS, sex="M",
                       postcode="LS6 1AA")],
            [involvement_row("A-I1", "A-1", lead="true"),
             involvement_row("A-I2", "A-1", "health_visiting", practitioner_name="Sue Brown",
                             practitioner_role="Health Visitor"),
             involvement_row("A-I3", "A-2", "sexual_health", practitioner_name="Kim Lee",
                             practitioner_role="Nurse Practitioner", sensitive="true")],
        ),
        "beta": (
            [child_row("B-1", "Amara", "Okafor", AMARA["date_of_birth"], sex="F", nhs_number=AMARA_NHS,
                       postcode="OL11 3HG")],
            [involvement_row("B-I1", "B-1", "education", organisation="Oakfield Primary School",
                             practitioner_name="Ray Hall", practitioner_role="Designated Safeguarding Lead",
                             lead="true")],
        ),
        "gamma": (
            [child_row("G-1", "Jordan", "Whitfield", JORDAN["date_of_birth"], sex="M",
                       nhs_number=JORDAN_NHS, postcode="N17 6AB", shielded="true")],
            [involvement_row("G-I1", "G-1", lead="true")],
        ),
    }


@dataclass
class Federation:
    """A running test federation: the folder, the servers, and helpers to use them."""

    folder: Path
    broker_config: BrokerConfig
    node_configs: dict[str, NodeConfig]
    runners: dict[str, web.AppRunner] = field(default_factory=dict)

    @property
    def broker_url(self) -> str:
        return f"http://127.0.0.1:{self.broker_config.port}"

    def node_url(self, node_id: str) -> str:
        return f"http://127.0.0.1:{self.node_configs[node_id].port}"

    async def _serve(self, name: str, app: web.Application, port: int) -> None:
        runner = app_runner(app, grace=TEST_GRACE)
        await runner.setup()
        try:
            await web.TCPSite(runner, "127.0.0.1", port).start()
        except BaseException:
            await runner.cleanup()  # nothing of a service that did not start is left open
            raise
        self.runners[name] = runner

    async def start_node(self, node_id: str, *, ready: bool = True,
                         app: web.Application | None = None) -> None:
        """Serve one node (``app``, if already made); with ``ready``, return once it has built
        its index and answers."""
        app = app or create_node(self.node_configs[node_id])
        await self._serve(node_id, app, self.node_configs[node_id].port)
        if ready:
            await app[NODE].indexes.ready.wait()

    async def start_broker(self) -> None:
        await self._serve("broker", create_broker(self.broker_config), self.broker_config.port)

    async def start(self) -> None:
        """Start every node, then the broker; if one cannot start, stop those that did."""
        try:
            for node_id in self.node_configs:
                await self.start_node(node_id)
            await self.start_broker()
        except BaseException:
            await self.close()
            raise

    async def stop(self, name: str) -> None:
        runner = self.runners.pop(name)
        await runner.cleanup()

    async def close(self) -> None:
        """Stop every service, each even if stopping another failed (then raise the first error)."""
        failed: list[BaseException] = []
        for name in list(self.runners):
            try:
                await self.stop(name)
            except Exception as exc:
                failed.append(exc)
        if failed:
            raise failed[0]

    def token(self, role: str = "practitioner", authority: str = "alpha", *,
              amr: tuple[str, ...] = ("pwd", "otp"),
              lifetime: int = 600, now: datetime | None = None, org: str | None = None) -> str:
        key = keyfiles.load_private(self.folder / "keys" / f"{authority}-idp.pem")
        return tokens.issue(issuer=f"{authority}-idp", key=key, audience=AUDIENCE, sub=f"{role}@{authority}",
                            name="Sam Patel", org=org or f"{authority} children's services", role=role,
                            amr=amr, now=now or datetime.now(UTC), lifetime_seconds=lifetime)

    async def search(self, body: Any, token: str | None = None,
                     headers: dict[str, str] | None = None) -> tuple[int, dict[str, Any]]:
        auth = {"Authorization": f"Bearer {token or self.token()}"}
        async with aiohttp.ClientSession() as session, session.post(
            f"{self.broker_url}/v1/search", json=body, headers={**auth, **(headers or {})}
        ) as response:
            return response.status, await response.json(content_type=None)


def build_federation(folder: Path, records: dict[str, tuple[list[dict[str, str]], list[dict[str, str]]]]
                     ) -> Federation:
    """Write a federation (keys, trust list, configs, imported nodes) into ``folder``."""
    provision.create(folder, "test-federation")
    broker_port = free_port()
    entries = []

    def member(member_id: str, role: str, **extra: Any) -> None:
        key = keyfiles.generate()
        entries.append((provision.member_entry(member_id, member_id.title(), [role], key, **extra), key))

    member("broker", "broker", endpoint=f"http://127.0.0.1:{broker_port}")
    ports = {}
    for node_id in records:
        ports[node_id] = free_port()
        member(node_id, "node", endpoint=f"http://127.0.0.1:{ports[node_id]}", authority=node_id,
               contact={"name": f"{node_id} signposting team", "phone": "0300 555 0100",
                        "secure_email": f"signposting@{node_id}.example.gov.uk"})
        member(f"{node_id}-idp", "token_issuer", authority=node_id)
    provision.add_members(folder, entries)
    node_configs = {}
    for node_id, (children, involvements) in records.items():
        home = folder / node_id
        home.mkdir()
        (home / "root.json").write_text((folder / "root.json").read_text())
        config = NodeConfig(id=node_id, database=home / "node.sqlite3",
                            key=folder / "keys" / f"{node_id}.pem",
                            trust_list=folder / "trustlist.json", trust_root=home / "root.json",
                            port=ports[node_id], audit_log=home / "audit.log",
                            unsafe_plain_http=True)
        store = Store(config.database)
        # Test receivers are loopback http:// servers (the nodes say so: unsafe_http_webhooks).
        summary = import_files(store, write_rows(home / "children.csv", CHILD_HEADER, children),
                               write_rows(home / "involvements.csv", INVOLVEMENT_HEADER, involvements),
                               unsafe_http_webhooks=True)
        store.close()
        assert summary.rejected == 0, summary.rejects
        node_configs[node_id] = config
    (folder / "broker").mkdir()
    (folder / "broker" / "root.json").write_text((folder / "root.json").read_text())
    broker_config = BrokerConfig(id="broker", key=folder / "keys" / "broker.pem",
                                 trust_list=folder / "trustlist.json",
                                 trust_root=folder / "broker" / "root.json", port=broker_port,
                                 audience=AUDIENCE, node_deadline_seconds=2.0,
                                 audit_log=folder / "broker" / "audit.log", unsafe_plain_http=True)
    return Federation(folder, broker_config, node_configs)


@pytest.fixture
async def federation(tmp_path: Path) -> AsyncIterator[Federation]:
    """Three nodes (alpha, beta, gamma) and a broker, all running on loopback."""
    fed = build_federation(tmp_path / "federation", default_records())
    await fed.start()
    try:
        yield fed
    finally:
        await fed.close()
