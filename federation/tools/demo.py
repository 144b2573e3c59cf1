"""The local demo federation: several authorities, a broker and identity providers on loopback.

``build`` writes a complete federation into a folder (keys, signed trust list, synthetic records
imported into each node's SQLite file, configs); ``run`` starts every node and the broker as
separate processes, runs sample searches and prints the answers.
"""

from __future__ import annotations

import asyncio
import csv
import dataclasses
import itertools
import json
import os
import random
import signal
import ssl
import subprocess
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, date, datetime
from pathlib import Path
from typing import Any

import aiohttp

from broker.config import BrokerConfig
from broker.demo_idp import DEMO_PASSWORD, DEMO_TOTP_SECRET, current_code
from federation import config as configfile
from federation.tools import provision, synthetic
from federation.tools.ports import free_port
from federation.tools.render import answer_text
from node import audit as node_audit
from node.config import NodeConfig
from node.importer import import_files
from node.store import Store
from trust import keys as keyfiles
from trust import tls, tokens

AUTHORITIES = (
    # id, name, LA code for UPNs
    ("leeds", "Leeds City Council", 383),
    ("rochdale", "Rochdale Borough Council", 354),
    ("haringey", "London Borough of Haringey", 309),
    ("kent", "Kent County Council", 886),
    ("cornwall", "Cornwall Council", 908),
)
BROKER_ID = "broker"
AUDIENCE = "signpost-broker"
CHILD_FIELDS = [f.name for f in dataclasses.fields(synthetic.SyntheticChild)]
INVOLVEMENT_FIELDS = [f.name for f in dataclasses.fields(synthetic.SyntheticInvolvement)]


def _cell(value: Any) -> str:
    if value is None:
        return ""
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, list):
        return ";".join(value)
    if isinstance(value, date):
        return value.isoformat()
    return str(value)


def write_csv(path: Path, fields: list[str], rows: list[Any]) -> None:
    with open(path, "w", newline="") as fh:
        writer = csv.writer(fh)
        writer.writerow(fields)
        for row in rows:
            writer.writerow([_cell(getattr(row, f)) for f in fields])


@dataclass(frozen=True)
class Sample:
    """A sample search and what each authority must answer."""

    title: str
    body: dict[str, Any]
    expect: dict[str, str]
    role: str = "practitioner"


def _special_children(today: date) -> tuple[dict[str, list[Any]], list[Sample]]:
    """The hand-made children the samples look for, placed among the synthetic ones.

    Their family names are not in the synthetic name lists, so no generated child can come
    close enough to turn an expected answer into a ``possible_match``.
    """
    rng = random.Random(2000)
    dob = date(today.year - 7, 3, 14)
    moved = synthetic.SyntheticChild(
        record_id="", given_name="Amara", family_name="Okoye", date_of_birth=dob, sex="F",
        postcode="LS8 2QR", nhs_number=synthetic.nhs_number(rng), upn=None,
        other_names=["Amara Okoye-Mensah"],
    )
    shielded = synthetic.SyntheticChild(
        record_id="", given_name="Jordan", family_name="Whitfield",
        date_of_birth=date(today.year - 12, 11, 2),
        sex="M", postcode="N17 6AB", nhs_number=synthetic.nhs_number(rng), upn=None, shielded=True,
    )
    kent_child = synthetic.SyntheticChild(
        record_id="", given_name="Siân", family_name="O'Shaughnessy",
        date_of_birth=date(today.year - 4, 6, 30),
        sex="F", postcode="CT9 1XY", nhs_number=synthetic.nhs_number(rng), upn=None,
    )
    placed = {
        "leeds": [dataclasses.replace(moved, record_id="LDS-SPECIAL-1")],
        "rochdale": [dataclasses.replace(moved, record_id="RDL-SPECIAL-1", postcode="OL11 3HG")],
        "haringey": [dataclasses.replace(shielded, record_id="HGY-SPECIAL-1")],
        "kent": [dataclasses.replace(kent_child, record_id="KNT-SPECIAL-1")],
    }
    all_nodes = [a for a, _, _ in AUTHORITIES]
    samples = [
        Sample(
            "A child known to two authorities (name, date of birth, sex)",
            {"identity": {"given_name": "Amara", "family_name": "Okoye",
                          "date_of_birth": dob.isoformat(), "sex": "F"},
             "purpose": "child_protection_enquiry"},
            {a: "match" if a in ("leeds", "rochdale") else "no_match" for a in all_nodes},
        ),
        Sample(
            "The same child by NHS number and date of birth",
            {"identity": {"nhs_number": moved.nhs_number, "date_of_birth": dob.isoformat()},
             "purpose": "health_assessment"},
            {a: "match" if a in ("leeds", "rochdale") else "no_match" for a in all_nodes},
        ),
        Sample(
            "A shielded child",
            {"identity": {"given_name": "Jordan", "family_name": "Whitfield",
                          "date_of_birth": shielded.date_of_birth.isoformat(), "postcode": "N17 6AB"},
             "purpose": "child_in_need_assessment"},
            {a: "shielded" if a == "haringey" else "no_match" for a in all_nodes},
        ),
        Sample(
            "Accents and apostrophes typed differently (Sian OShaughnessy)",
            {"identity": {"given_name": "Sian", "family_name": "OShaughnessy",
                          "date_of_birth": kent_child.date_of_birth.isoformat(), "sex": "F"},
             "purpose": "early_help"},
            {a: "match" if a == "kent" else "no_match" for a in all_nodes},
        ),
        Sample(
            "A child no authority knows",
            {"identity": {"given_name": "Nobody", "family_name": "Knownhere",
                          "date_of_birth": date(today.year - 9, 1, 1).isoformat(), "sex": "M"},
             "purpose": "education_welfare"},
            {a: "no_match" for a in all_nodes},
        ),
    ]
    return {k: [v] if not isinstance(v, list) else v for k, v in placed.items()}, samples


def build(folder: Path, *, children: int = 3000, seed: int = 7, today: date | None = None,
          out: Callable[[str], None] = print, redis_url: str | None = None) -> dict[str, Any]:
    """Write a complete demo federation into ``folder`` and return its layout.

    With ``redis_url`` the broker keeps its rate limits and sessions in that Redis.
    """
    day = today or datetime.now(UTC).date()
    folder.mkdir(parents=True, exist_ok=True)
    provision.create(folder, "signpost-demo", valid_days=7)
    ports = {a: free_port() for a, _, _ in AUTHORITIES}
    broker_port = free_port()
    # Mutual TLS between the broker and the nodes: a federation CA, one certificate per member,
    # each pinned by fingerprint in the trust list.
    tls_dir = folder / "tls"
    tls.create_ca(tls_dir / "ca.pem", tls_dir / "ca.key", "signpost-demo")
    pins = {m: tls.issue_certificate(tls_dir / "ca.pem", tls_dir / "ca.key", m, tls_dir / f"{m}.pem",
                                     tls_dir / f"{m}.key")
            for m in (BROKER_ID, *(a for a, _, _ in AUTHORITIES))}
    # The auditor's client certificate (the nodes ask every client for one from the federation CA).
    tls.issue_certificate(tls_dir / "ca.pem", tls_dir / "ca.key", "auditor", tls_dir / "auditor.pem",
                          tls_dir / "auditor.key")
    def member(member_id: str, name: str, role: str, **extra: Any) -> tuple[dict[str, Any], Any]:
        key = keyfiles.generate()
        return provision.member_entry(member_id, name, [role], key, **extra), key

    entries = [member(BROKER_ID, "Signpost broker", "broker",
                      endpoint=f"http://127.0.0.1:{broker_port}", tls_fingerprint=pins[BROKER_ID])]
    for authority, name, _ in AUTHORITIES:
        contact = {"name": f"{name} signposting team", "phone": "0300 555 0100",
                   "secure_email": f"signposting@{authority}.gov.uk"}
        entries.append(member(authority, name, "node", endpoint=f"https://127.0.0.1:{ports[authority]}",
                              authority=authority, contact=contact, tls_fingerprint=pins[authority]))
        entries.append(member(f"{authority}-idp", f"{name} identity provider", "token_issuer",
                              authority=authority))
    provision.add_members(folder, entries, valid_days=7)

    special, samples = _special_children(day)
    rng = random.Random(seed)
    layout: dict[str, Any] = {"nodes": {}, "broker": None, "samples": samples}
    for authority, name, la_code in AUTHORITIES:
        home = folder / authority
        home.mkdir(exist_ok=True)
        counter = itertools.count(1)
        kids = [synthetic.child(rng, f"{authority.upper()[:3]}-{i:06d}", authority, day, la_code)
                for i in range(1, children + 1)]
        kids += special.get(authority, [])
        invs = [inv for kid in kids
                for inv in synthetic.involvements(rng, kid, authority, name.split(" ")[0], counter, day)]
        write_csv(home / "children.csv", CHILD_FIELDS, kids)
        write_csv(home / "involvements.csv", INVOLVEMENT_FIELDS, invs)
        node_config = NodeConfig(
            id=authority, database=home / "node.sqlite3", key=folder / "keys" / f"{authority}.pem",
            trust_list=folder / "trustlist.json", trust_root=home / "root.json",
            port=ports[authority], audit_log=home / "audit.log",
            tls_cert=tls_dir / f"{authority}.pem", tls_key=tls_dir / f"{authority}.key",
            tls_ca=tls_dir / "ca.pem",
            # The signposting officers' pages, on loopback. The demo has no council OpenID
            # provider, so officers paste a demo token (a development path, named unsafe).
            staff_port=free_port(), unsafe_staff_token_sign_in=True,
        )
        (home / "root.json").write_text((folder / "root.json").read_text())
        configfile.dump(node_config, home / "node.json")
        store = Store(node_config.database)
        summary = import_files(store, home / "children.csv", home / "involvements.csv",
                               rejects_path=home / "rejects.csv")
        node_audit.record(store, node_config.audit_log, node_audit.import_entry(
            authority, datetime.now(UTC), summary.to_json(), full=False, children_file="children.csv",
            involvements_file="involvements.csv"))
        store.close()
        out(f"  {name:<28} {summary.children_added:>6} children, "
            f"{summary.involvements_added:>6} involvements imported, {summary.rejected} rejected")
        layout["nodes"][authority] = {"config": home / "node.json", "port": ports[authority], "name": name,
                                      "staff_port": node_config.staff_port}
    broker_home = folder / "broker"
    broker_home.mkdir(exist_ok=True)
    (broker_home / "root.json").write_text((folder / "root.json").read_text())
    broker_config = BrokerConfig(
        id=BROKER_ID, key=folder / "keys" / f"{BROKER_ID}.pem", trust_list=folder / "trustlist.json",
        trust_root=broker_home / "root.json", port=broker_port, audience=AUDIENCE,
        audit_log=broker_home / "audit.log", unsafe_demo_identity_provider=folder / "keys",
        tls_cert=tls_dir / f"{BROKER_ID}.pem", tls_key=tls_dir / f"{BROKER_ID}.key",
        tls_ca=tls_dir / "ca.pem", serve_tls=False, redis_url=redis_url,
        check_poll_seconds=2,  # an officer's decision shows on the practitioner's page within 2 s
    )
    configfile.dump(broker_config, broker_home / "broker.json")
    layout["broker"] = {"config": broker_home / "broker.json", "port": broker_port}
    return layout


def demo_token(folder: Path, role: str = "practitioner", authority: str = "leeds",
               minutes: int = 15, audience: str = AUDIENCE) -> str:
    """A token from the demo identity provider of ``authority`` (for the broker, unless
    ``audience`` names a node: its staff pages take tokens for the node's id)."""
    key = keyfiles.load_private(folder / "keys" / f"{authority}-idp.pem")
    names = {"practitioner": ("sam.patel", "Sam Patel", f"{authority.title()} Children's Social Care"),
             "signposting_officer": ("jo.clarke", "Jo Clarke", f"{authority.title()} Signposting Team"),
             "mediator": ("lee.hughes", "Lee Hughes", f"{authority.title()} Front Door"),
             "auditor": ("ana.lopez", "Ana Lopez", "Federation audit")}
    sub, name, org = names.get(role, (f"demo.{role}", f"Demo {role}", f"{authority.title()} Council"))
    return tokens.issue(issuer=f"{authority}-idp", key=key, audience=audience, sub=sub, name=name,
                        org=org, role=role, now=datetime.now(UTC), lifetime_seconds=minutes * 60)


def _exit_on_signal(signum: int, _frame: object) -> None:
    raise SystemExit(128 + signum)


class Processes:
    """The demo's child processes: started together, stopped together (``with Processes(...)``).

    The children run in their own sessions, so Ctrl-C reaches only this process, which then stops
    them in order. While the ``with`` block runs, a SIGTERM or SIGHUP must stop them too, not
    orphan them: those become ``SystemExit`` so that leaving the block stops the children. The
    previous handlers come back afterwards.
    """

    def __init__(self, folder: Path) -> None:
        self.folder = folder
        self.procs: list[tuple[str, subprocess.Popen[bytes]]] = []
        self.commands: dict[str, list[str]] = {}
        self._previous: dict[int, Any] = {}

    def __enter__(self) -> Processes:
        for signum in (signal.SIGTERM, signal.SIGHUP):
            self._previous[signum] = signal.signal(signum, _exit_on_signal)
        return self

    def __exit__(self, *_: object) -> None:
        try:
            self.stop()
        finally:
            for signum, handler in self._previous.items():
                signal.signal(signum, handler)
            self._previous.clear()

    def start(self, name: str, args: list[str]) -> None:
        logs = self.folder / "logs"
        logs.mkdir(exist_ok=True)
        with open(logs / f"{name}.log", "ab") as log_file:
            proc = subprocess.Popen(
                [sys.executable, "-m", "federation.commands.main", *args],
                stdout=log_file, stderr=subprocess.STDOUT, start_new_session=True,
                env={**os.environ, "PYTHONUNBUFFERED": "1"},
            )
        self.procs.append((name, proc))
        self.commands[name] = list(args)

    def stop(self) -> None:
        for _, proc in self.procs:
            if proc.poll() is None:
                proc.send_signal(signal.SIGTERM)
        deadline = time.monotonic() + 10
        for _, proc in self.procs:
            try:
                proc.wait(timeout=max(0.1, deadline - time.monotonic()))
            except subprocess.TimeoutExpired:
                proc.kill()

    def dead(self) -> list[str]:
        return [name for name, proc in self.procs if proc.poll() is not None]


async def wait_healthy(urls: dict[str, str], procs: Processes, timeout: float = 60,
                       ssl_context: ssl.SSLContext | None = None) -> None:
    deadline = time.monotonic() + timeout
    pending = dict(urls)
    connector = aiohttp.TCPConnector(ssl=ssl_context) if ssl_context else None
    async with aiohttp.ClientSession(connector=connector) as session:
        while pending:
            if procs.dead():
                raise RuntimeError(f"process(es) exited early: {', '.join(procs.dead())} "
                                   f"(see {procs.folder / 'logs'})")
            for name, url in list(pending.items()):
                try:
                    async with session.get(url + "/healthz", timeout=aiohttp.ClientTimeout(total=2)) as r:
                        if r.status == 200:
                            del pending[name]
                except (aiohttp.ClientError, OSError, TimeoutError):
                    pass  # not listening yet: asked again on the next round
            if pending and time.monotonic() > deadline:
                raise RuntimeError(f"not healthy after {timeout:.0f} s: {', '.join(pending)}")
            if pending:
                await asyncio.sleep(0.2)


async def run_samples(broker_url: str, folder: Path, samples: list[Sample],
                      out: Callable[[str], None] = print) -> int:
    """Run each sample search; print the answers; return how many did not answer as expected."""
    failures = 0
    async with aiohttp.ClientSession() as session:
        for i, sample in enumerate(samples, start=1):
            token = demo_token(folder, sample.role)
            async with session.post(f"{broker_url}/v1/search", json=sample.body,
                                    headers={"Authorization": f"Bearer {token}"}) as response:
                answer = await response.json(content_type=None)
            out(f"\n{i}. {sample.title}")
            if response.status != 200:
                out(f"   HTTP {response.status}: {json.dumps(answer)}")
                failures += 1
                continue
            out(answer_text(answer))
            got = {r["authority"]["id"]: r["status"] for r in answer["results"]}
            if got != sample.expect:
                wrong = {k: f"{got.get(k)} (expected {v})" for k, v in sample.expect.items()
                         if got.get(k) != v}
                out(f"   ! unexpected: {wrong}")
                failures += 1
    return failures


def start(folder: Path, layout: dict[str, Any], procs: Processes) -> tuple[str, dict[str, str]]:
    """Start every node and the broker as processes; wait until all are healthy.

    Returns the broker's URL and each node's URL.
    """
    for authority, info in layout["nodes"].items():
        procs.start(authority, ["node", "serve", "--config", str(info["config"])])
    procs.start("broker", ["broker", "serve", "--config", str(layout["broker"]["config"])])
    urls = {a: f"https://127.0.0.1:{i['port']}" for a, i in layout["nodes"].items()}
    broker_url = f"http://127.0.0.1:{layout['broker']['port']}"
    tls_dir = folder / "tls"
    health_tls = tls.client_context(tls.TlsFiles(tls_dir / f"{BROKER_ID}.pem",
                                                 tls_dir / f"{BROKER_ID}.key", tls_dir / "ca.pem"))
    asyncio.run(wait_healthy({**urls, "broker": broker_url}, procs, ssl_context=health_tls))
    return broker_url, urls


def run(folder: Path, *, once: bool, children: int, out: Callable[[str], None] = print,
        checks: Callable[[Path], int] | None = None, redis_url: str | None = None,
        independent: bool = False) -> int:
    """Build and start the demo federation; run the samples; serve until Ctrl-C unless ``once``.

    ``checks`` runs after the samples (the command line passes the audit reconcile and status
    commands) and returns how many of them failed. With ``independent`` a process that exits
    (or is killed in a fault drill) is reported and the others keep serving; otherwise the demo
    stops when any one exits.
    """
    started = time.monotonic()
    out(f"Building a demo federation of {len(AUTHORITIES)} authorities in {folder}")
    layout = build(folder, children=children, out=out, redis_url=redis_url)
    with Processes(folder) as procs:
        broker_url, urls = start(folder, layout, procs)
        out(f"All {len(urls)} nodes and the broker are up ({time.monotonic() - started:.1f} s); "
            "broker and nodes talk over mutual TLS.")
        failures = asyncio.run(run_samples(broker_url, folder, layout["samples"], out))
        if checks is not None:
            failures += checks(folder)
        out("")
        if failures:
            out(f"{failures} sample search(es) did not answer as expected.")
        else:
            out(f"All {len(layout['samples'])} sample searches answered as expected.")
        if once:
            return 1 if failures else 0
        out("\nThe federation keeps running. Broker: " + broker_url)
        for authority, url in urls.items():
            out(f"  node {authority:<10} {url}")
        out("\nA practitioner token (valid 15 minutes):\n")
        out(demo_token(folder))
        out("\nTry:\n  signpost search --broker " + broker_url + " --token <token> "
            "--given-name Amara --family-name Okoye --date-of-birth "
            + layout["samples"][0].body["identity"]["date_of_birth"]
            + " --sex F --purpose child_protection_enquiry")
        out(f"\nNew token: signpost token --federation {folder} --issuer leeds-idp --sub sam.patel "
            "--name 'Sam Patel' --org 'Leeds Children's Social Care' --role practitioner")

        out(f"\nPractitioner pages: {broker_url}/  (demo sign-in: username sam.patel, lee.hughes or "
            f"jo.clarke; password {DEMO_PASSWORD}; one-time code now {current_code(time.time())}; "
            f"TOTP secret {DEMO_TOTP_SECRET}; new code: signpost demo-code)")
        out("\nSignposting officers' pages (one per authority, for checks of a possible match; "
            "demo sign-in: paste an officer token on the page):")
        for authority, node in layout["nodes"].items():
            out(f"  {authority:<10} http://127.0.0.1:{node['staff_port']}/sign-in")
        out("An officer token for leeds (valid 15 minutes; its audience is the node's id):\n")
        out(demo_token(folder, "signposting_officer", "leeds", audience="leeds"))
        out(f"\nNew officer token: signpost token --federation {folder} --issuer <authority>-idp "
            "--audience <authority> --sub jo.clarke --name 'Jo Clarke' --org '<Authority> Signposting Team' "
            "--role signposting_officer")
        if redis_url:
            out(f"\nThe broker keeps rate limits and sessions in Redis at {redis_url}.")
        out("\nProcesses (pid, command):")
        for name, proc in procs.procs:
            out(f"  {name:<10} {proc.pid:>7}  signpost {' '.join(procs.commands[name])}")
        if independent:
            out("Each keeps running if another exits: stop one with 'kill <pid>' for a fault drill and "
                "start it again with its command.")
        out("\nPress Ctrl-C to stop.")
        try:
            return _serve_until_stopped(procs, folder, independent, out)
        except KeyboardInterrupt:
            out("\nStopping.")
            return 0


def _serve_until_stopped(procs: Processes, folder: Path, independent: bool,
                         out: Callable[[str], None]) -> int:
    """Wait for Ctrl-C; report each process that exits; without ``independent`` stop at the first."""
    reported: set[str] = set()
    while True:
        dead = procs.dead()
        if dead and not independent:
            out(f"stopped: {', '.join(dead)} exited (see {folder / 'logs'})")
            return 1
        for name in dead:
            if name not in reported:
                reported.add(name)
                out(f"{name} exited; the others keep running (log: {folder / 'logs' / (name + '.log')})")
        if len(reported) == len(procs.procs):
            out("every process has exited")
            return 1
        time.sleep(1)
