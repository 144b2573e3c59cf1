"""``signpost bench federation``: the broker's cost of asking N authorities, beside a central index.

Builds (once, then cached in a folder) a federation of N authorities, each a real
``signpost node serve`` process with its own SQLite file, signing key and TLS certificate, the
broker talking to every node over mutual TLS exactly as in production; and a *central baseline*:
one node holding all N x M children behind its own broker. Both run the same searches (half for
children some authority holds) one at a time and C at a time. CPU is read from each process's own
clock (``/proc/<pid>/stat``, user + system), so the broker's figure is the broker's alone.

Ports are taken below the kernel's ephemeral range, so that hundreds of outgoing connections
never collide with a listening node.
"""

from __future__ import annotations

import asyncio
import contextlib
import itertools
import json
import os
import random
import shutil
import socket
import statistics
import subprocess
import time
from collections import Counter
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from datetime import UTC, date, datetime, timedelta
from pathlib import Path
from typing import Any

import aiohttp

from broker.config import BrokerConfig
from federation import config as configfile
from federation.tools import demo, ports, provision, synthetic
from node import audit as node_audit
from node.config import NodeConfig
from node.importer import import_files
from node.store import Store
from trust import keys as keyfiles
from trust import tls, tokens

FORMAT = 2  # bump when the cached layout changes (configs or logs an older build wrote)
BROKER_ID = "broker"
ISSUER = "bench-idp"
AUDIENCE = "signpost-broker"
FIRST_PORT = 20_000
UNLIMITED = {"practitioner_per_minute": 1_000_000, "practitioner_per_day": 10_000_000,
             "organisation_per_minute": 1_000_000, "organisation_per_day": 10_000_000}
AREAS = ("leeds", "rochdale", "haringey", "kent", "cornwall")  # synthetic postcodes come from these
UNKNOWN_FAMILY = ("Quillfeather", "Marrowdown", "Thistlewick", "Bramblecote", "Yarrowmere", "Fenwhistle")


def pick_ports(count: int, first: int = FIRST_PORT) -> list[int]:
    """``count`` free loopback ports from ``first`` upward, never inside the ephemeral range."""
    return ports.pick_ports(count, first)


def proc_cpu_split(pid: int) -> tuple[float, float]:
    """User and system CPU seconds a process has used so far (its own clock, from ``/proc``).

    On loopback the kernel delivers what a process sends to the receiving socket inside the
    sender's system call, so the broker's system time includes part of the nodes' networking."""
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    tick = os.sysconf("SC_CLK_TCK")
    return int(fields[11]) / tick, int(fields[12]) / tick


def proc_cpu_seconds(pid: int) -> float:
    """User + system CPU seconds a process has used so far (its own clock, from ``/proc``)."""
    return sum(proc_cpu_split(pid))


@dataclass(frozen=True)
class Side:
    """One federation on disk (the federated one, or the central baseline): its members' files."""

    folder: Path
    nodes: dict[str, Path]  # node id -> node.json
    broker: Path  # broker.json
    broker_port: int

    @property
    def broker_url(self) -> str:
        return f"http://127.0.0.1:{self.broker_port}"

    def node_urls(self) -> dict[str, str]:
        return {n: f"https://127.0.0.1:{configfile.load(NodeConfig, p).port}" for n, p in self.nodes.items()}


def _node_ids(n: int) -> list[str]:
    return [f"la{i:03d}" for i in range(1, n + 1)]


def _build_side(folder: Path, name: str, holdings: dict[str, list[synthetic.SyntheticChild]],
                today: date, out: Callable[[str], None]) -> Side:
    """A federation whose nodes hold ``holdings`` (node id -> children), one broker, mutual TLS."""
    folder.mkdir(parents=True, exist_ok=True)
    provision.create(folder, name, valid_days=30)
    ids = list(holdings)
    ports = pick_ports(len(ids) + 1)
    node_ports, broker_port = dict(zip(ids, ports, strict=False)), ports[-1]
    tls_dir = folder / "tls"
    tls.create_ca(tls_dir / "ca.pem", tls_dir / "ca.key", name)
    pins = {m: tls.issue_certificate(tls_dir / "ca.pem", tls_dir / "ca.key", m, tls_dir / f"{m}.pem",
                                     tls_dir / f"{m}.key") for m in (BROKER_ID, *ids)}
    broker_key, issuer_key = keyfiles.generate(), keyfiles.generate()
    entries = [
        (provision.member_entry(BROKER_ID, "Bench broker", ["broker"], broker_key,
                                endpoint=f"http://127.0.0.1:{broker_port}", tls_fingerprint=pins[BROKER_ID]),
         broker_key),
        (provision.member_entry(ISSUER, "Bench identity provider", ["token_issuer"], issuer_key,
                                authority=ids[0]), issuer_key),
    ]
    for i, node_id in enumerate(ids, start=1):
        key = keyfiles.generate()
        contact = {"name": f"Authority {i} signposting team", "phone": "0300 555 0100",
                   "secure_email": f"signposting@{node_id}.gov.uk"}
        entries.append((provision.member_entry(
            node_id, f"Authority {i}", ["node"], key, endpoint=f"https://127.0.0.1:{node_ports[node_id]}",
            authority=node_id, contact=contact, tls_fingerprint=pins[node_id]), key))
    provision.add_members(folder, entries, valid_days=30)
    rng = random.Random(name)
    nodes: dict[str, Path] = {}
    for node_id, kids in holdings.items():
        home = folder / node_id
        home.mkdir(exist_ok=True)
        counter = itertools.count(1)
        invs = [inv for kid in kids
                for inv in synthetic.involvements(rng, kid, node_id, node_id.title(), counter, today)]
        demo.write_csv(home / "children.csv", demo.CHILD_FIELDS, kids)
        demo.write_csv(home / "involvements.csv", demo.INVOLVEMENT_FIELDS, invs)
        config = NodeConfig(
            id=node_id, database=home / "node.sqlite3", key=folder / "keys" / f"{node_id}.pem",
            trust_list=folder / "trustlist.json", trust_root=home / "root.json", port=node_ports[node_id],
            audit_log=home / "audit.log", tls_cert=tls_dir / f"{node_id}.pem",
            tls_key=tls_dir / f"{node_id}.key", tls_ca=tls_dir / "ca.pem",
        )
        shutil.copy(folder / "root.json", home / "root.json")
        configfile.dump(config, home / "node.json")
        store = Store(config.database)
        summary = import_files(store, home / "children.csv", home / "involvements.csv")
        node_audit.record(store, config.audit_log, node_audit.import_entry(
            node_id, datetime.now(UTC), summary.to_json(), full=False, children_file="children.csv",
            involvements_file="involvements.csv"))
        store.close()
        (home / "children.csv").unlink()
        (home / "involvements.csv").unlink()
        nodes[node_id] = home / "node.json"
    home = folder / "broker"
    home.mkdir(exist_ok=True)
    shutil.copy(folder / "root.json", home / "root.json")
    broker_config = BrokerConfig(
        id=BROKER_ID, key=folder / "keys" / f"{BROKER_ID}.pem", trust_list=folder / "trustlist.json",
        trust_root=home / "root.json", port=broker_port, audience=AUDIENCE, audit_log=home / "audit.log",
        tls_cert=tls_dir / f"{BROKER_ID}.pem", tls_key=tls_dir / f"{BROKER_ID}.key",
        tls_ca=tls_dir / "ca.pem", serve_tls=False, rate_limits=UNLIMITED,
    )
    configfile.dump(broker_config, home / "broker.json")
    out(f"  {name}: {len(ids)} node(s), {sum(len(k) for k in holdings.values()):,} children")
    return Side(folder, nodes, home / "broker.json", broker_port)


def _identity(kid: synthetic.SyntheticChild) -> dict[str, str]:
    return {"given_name": kid.given_name, "family_name": kid.family_name,
            "date_of_birth": kid.date_of_birth.isoformat(), "sex": kid.sex}


@dataclass(frozen=True)
class Layout:
    """A cached benchmark federation: the federated side, the central side, the search bodies."""

    federated: Side
    central: Side
    bodies: list[dict[str, Any]]


def build(folder: Path, nodes: int, children: int, *, seed: int = 11,
          out: Callable[[str], None] = print) -> Layout:
    """Write both sides into ``folder`` (the federated one and the central baseline)."""
    today = datetime.now(UTC).date()
    rng = random.Random(seed)
    holdings: dict[str, list[synthetic.SyntheticChild]] = {}
    for i, node_id in enumerate(_node_ids(nodes)):
        holdings[node_id] = [synthetic.child(rng, f"{node_id.upper()}-{j:06d}", AREAS[i % len(AREAS)], today)
                             for j in range(1, children + 1)]
    everyone = [kid for kids in holdings.values() for kid in kids]
    held = rng.sample(everyone, min(50, len(everyone)))
    unknown = [{"given_name": rng.choice(synthetic.GIVEN_NAMES_F), "family_name": rng.choice(UNKNOWN_FAMILY),
                "date_of_birth": (today - timedelta(days=rng.randint(400, 6000))).isoformat(), "sex": "F"}
               for _ in range(len(held))]
    purposes = [p for p, _ in provision.DEFAULT_PURPOSES]
    bodies = [{"identity": ident, "purpose": purposes[i % len(purposes)]}
              for i, ident in enumerate(itertools.chain.from_iterable(
                  zip((_identity(k) for k in held), unknown, strict=True)))]
    out(f"building {nodes} authorities x {children:,} children, and the central baseline, in {folder} ...")
    federated = _build_side(folder / "federated", "signpost-bench", holdings, today, out)
    central = _build_side(folder / "central", "signpost-bench-central", {"central": everyone}, today, out)
    (folder / "layout.json").write_text(json.dumps({
        "format": FORMAT, "nodes": nodes, "children": children, "built": datetime.now(UTC).isoformat(),
        "bodies": bodies,
        "sides": {label: {"nodes": {k: str(v) for k, v in side.nodes.items()}, "broker": str(side.broker),
                          "broker_port": side.broker_port}
                  for label, side in (("federated", federated), ("central", central))},
    }, indent=1))
    return Layout(federated, central, bodies)


def load_or_build(folder: Path, nodes: int, children: int, out: Callable[[str], None] = print) -> Layout:
    """The cached federation in ``folder`` if it matches and its trust lists are good for a week."""
    saved = folder / "layout.json"
    if saved.exists():
        data = json.loads(saved.read_text())
        built = datetime.fromisoformat(data["built"])
        fresh = datetime.now(UTC) - built < timedelta(days=21)
        if data.get("format") == FORMAT and data["nodes"] == nodes and data["children"] == children and fresh:
            sides = {label: Side(folder / label, {k: Path(v) for k, v in s["nodes"].items()},
                                 Path(s["broker"]), s["broker_port"])
                     for label, s in data["sides"].items()}
            out(f"using the federation cached in {folder}")
            return Layout(sides["federated"], sides["central"], data["bodies"])
    if folder.exists():
        shutil.rmtree(folder)
    return build(folder, nodes, children, out=out)


def _token(side: Side) -> str:
    key = keyfiles.load_private(side.folder / "keys" / f"{ISSUER}.pem")
    return tokens.issue(issuer=ISSUER, key=key, audience=AUDIENCE, sub="bench.user", name="Bench User",
                        org="Bench Children's Social Care", role="practitioner", now=datetime.now(UTC),
                        lifetime_seconds=15 * 60)


@dataclass
class Phase:
    """One batch of searches against one side: what it cost and how long each took."""

    searches: int
    concurrency: int
    seconds: float
    latencies: list[float]
    incomplete: int
    failed: int  # not answered with 200 (``refused`` of them with 503: the broker was saturated)
    refused: int
    broker_cpu: float
    nodes_cpu: float
    nodes: int
    handshakes: int
    broker_system: float = 0.0  # of broker_cpu, the kernel's part
    problems: dict[str, int] = field(default_factory=dict)  # non-200 answers by problem type
    answered: list[float] = field(default_factory=list)  # latencies of the searches answered (200)

    def summary(self) -> dict[str, Any]:
        # CPU is shared out over the searches that ran (a search refused with 503 costs next to nothing).
        ran = max(1, self.searches - self.failed)
        ordered = sorted(self.latencies)
        return {
            "searches": self.searches, "concurrency": self.concurrency,
            "p50_ms": 1000 * statistics.median(ordered) if ordered else 0.0,
            "p99_ms": 1000 * ordered[min(len(ordered) - 1, int(0.99 * len(ordered)))] if ordered else 0.0,
            "searches_per_s": self.searches / self.seconds if self.seconds else 0.0,
            "broker_cpu_ms_per_search": 1000 * self.broker_cpu / ran,
            "broker_user_ms_per_search": 1000 * (self.broker_cpu - self.broker_system) / ran,
            "broker_system_ms_per_search": 1000 * self.broker_system / ran,
            "nodes_cpu_ms_per_answer": 1000 * self.nodes_cpu / (ran * max(1, self.nodes)),
            "incomplete": self.incomplete, "failed": self.failed, "refused_503": self.refused,
            "new_tls_handshakes": self.handshakes, "problems": dict(sorted(self.problems.items())),
            "answered": len(self.answered), "answered_p50_ms": _quantile(self.answered, 0.5),
            "answered_p99_ms": _quantile(self.answered, 0.99),
        }


def _quantile(values: list[float], q: float) -> float:
    """The ``q`` quantile of ``values`` (seconds) in milliseconds, 0 for none."""
    ordered = sorted(values)
    return 1000 * ordered[min(len(ordered) - 1, int(q * len(ordered)))] if ordered else 0.0


async def _handshakes(session: aiohttp.ClientSession, url: str) -> int:
    """New connections the broker has opened to nodes so far (each one a TLS handshake)."""
    async with session.get(f"{url}/metrics") as response:
        text = await response.text()
    total = 0
    for line in text.splitlines():
        if line.startswith("signpost_broker_node_connections_total"):
            total += int(float(line.rsplit(" ", 1)[1]))
    return total


class Running:
    """One side's processes, started, with their pids for CPU readings."""

    def __init__(self, side: Side, procs: demo.Processes) -> None:
        self.side = side
        self.procs = procs
        self.token = _token(side)

    def pids(self) -> tuple[int, list[int]]:
        by_name = {name: proc.pid for name, proc in self.procs.procs}
        return by_name["broker"], [by_name[n] for n in self.side.nodes]

    def cpu(self) -> tuple[float, float, float]:
        """Broker CPU, the broker's system part of it, and every node's CPU, in seconds so far."""
        broker, nodes = self.pids()
        user, system = proc_cpu_split(broker)
        return user + system, system, sum(proc_cpu_seconds(p) for p in nodes)

    async def phase(self, bodies: list[dict[str, Any]], searches: int, concurrency: int,
                    seconds: float | None = None) -> Phase:
        """``searches`` searches by ``concurrency`` clients (or as many as they send in ``seconds``)."""
        latencies: list[float] = []
        answered: list[float] = []
        incomplete = failed = refused = 0
        problems: Counter[str] = Counter()
        counter = itertools.count() if seconds is not None else iter(range(searches))
        headers = {"Authorization": f"Bearer {self.token}"}
        url = self.side.broker_url
        stop_at = time.perf_counter() + (seconds or 0.0)

        async def client(session: aiohttp.ClientSession) -> None:
            nonlocal incomplete, failed, refused
            for i in counter:
                if seconds is not None and time.perf_counter() >= stop_at:
                    return
                started = time.perf_counter()
                async with session.post(f"{url}/v1/search", json=bodies[i % len(bodies)],
                                        headers=headers) as response:
                    answer = await response.json(content_type=None)
                took = time.perf_counter() - started
                latencies.append(took)
                if response.status != 200:
                    failed += 1
                    refused += response.status == 503
                    kind = answer.get("type", "") if isinstance(answer, dict) else ""
                    problems[f"{response.status} {str(kind).rsplit('/', 1)[-1]}".strip()] += 1
                    wait = response.headers.get("Retry-After", "")
                    if seconds is not None and wait.isdigit():
                        await asyncio.sleep(min(float(wait), 5.0))  # a client that does as it is told
                    continue
                answered.append(took)
                if not answer.get("complete"):
                    incomplete += 1

        timeout = aiohttp.ClientTimeout(total=120)
        connector = aiohttp.TCPConnector(limit=max(100, concurrency))
        async with aiohttp.ClientSession(timeout=timeout, connector=connector) as session:
            shakes = await _handshakes(session, url)
            broker0, system0, nodes0 = self.cpu()
            started = time.perf_counter()
            await asyncio.gather(*(client(session) for _ in range(concurrency)))
            elapsed = time.perf_counter() - started
            broker1, system1, nodes1 = self.cpu()
            shakes = await _handshakes(session, url) - shakes
        return Phase(len(latencies), concurrency, elapsed, latencies, incomplete, failed, refused,
                     broker1 - broker0, nodes1 - nodes0, len(self.side.nodes), shakes,
                     system1 - system0, dict(problems), answered)


def _start(side: Side, procs: demo.Processes, out: Callable[[str], None], *, http: bool = False,
           redis_url: str | None = None) -> Running:
    busy = [p for p in [side.broker_port, *(configfile.load(NodeConfig, c).port for c in side.nodes.values())]
            if not ports.port_free(p)]
    if busy:
        raise RuntimeError(f"port(s) already in use: {busy[:5]}; stop what holds them or pass a new --dir")
    started = time.monotonic()
    for node_id, config in side.nodes.items():
        procs.start(node_id, ["node", "serve", "--config", str(config)])
    broker_config = side.broker
    if http or redis_url:  # the same broker asking every node over POST /v1/query, or using Redis
        settings = json.loads(side.broker.read_text())
        broker_config = side.broker.with_name("broker.run.json")
        broker_config.write_text(json.dumps({**settings, "node_channel": not http, "redis_url": redis_url},
                                            indent=2))
    procs.start("broker", ["broker", "serve", "--config", str(broker_config)])
    tls_dir = side.folder / "tls"
    health_tls = tls.client_context(tls.TlsFiles(tls_dir / f"{BROKER_ID}.pem",
                                                 tls_dir / f"{BROKER_ID}.key", tls_dir / "ca.pem"))
    asyncio.run(demo.wait_healthy({**side.node_urls(), "broker": side.broker_url}, procs,
                                  timeout=600, ssl_context=health_tls))
    out(f"  {len(side.nodes)} node process(es) and the broker up in {time.monotonic() - started:.0f} s")
    return Running(side, procs)


def _load() -> str:
    return " ".join(Path("/proc/loadavg").read_text().split()[:3])


class PrivateRedis:
    """A ``redis-server`` of the bench's own on a free port outside the ephemeral range (no disk)."""

    def __init__(self, folder: Path) -> None:
        self.folder = folder
        self.port = pick_ports(1, FIRST_PORT + 5_000)[0]
        self.process: subprocess.Popen[bytes] | None = None

    @property
    def url(self) -> str:
        return f"redis://127.0.0.1:{self.port}/0"

    def __enter__(self) -> PrivateRedis:
        binary = shutil.which("redis-server")
        if binary is None:
            raise RuntimeError("--redis: redis-server is not installed")
        self.folder.mkdir(parents=True, exist_ok=True)
        self.process = subprocess.Popen(
            [binary, "--port", str(self.port), "--bind", "127.0.0.1", "--save", "", "--appendonly", "no",
             "--dir", str(self.folder)], stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        deadline = time.monotonic() + 10
        while time.monotonic() < deadline:
            if self.ping() is not None:
                return self
            time.sleep(0.05)
        self.__exit__()
        raise RuntimeError(f"redis-server did not start on port {self.port}")

    def ping(self, timeout: float = 0.5) -> float | None:
        """Seconds a PING took, or None if Redis did not answer within ``timeout``."""
        started = time.perf_counter()
        try:
            with socket.create_connection(("127.0.0.1", self.port), timeout=timeout) as s:
                s.sendall(b"PING\r\n")
                if s.recv(16).startswith(b"+PONG"):
                    return time.perf_counter() - started
        except OSError:
            return None
        return None

    def __exit__(self, *_: object) -> None:
        if self.process is not None:
            self.process.terminate()
            self.process.wait(timeout=10)
            self.process = None


async def _watch_redis(redis: PrivateRedis, every: float, seen: list[float | None]) -> None:
    """PING Redis every ``every`` s from its own thread (so the bench's loop cannot make it late)."""
    while True:
        seen.append(await asyncio.to_thread(redis.ping))
        await asyncio.sleep(every)


def load(side: Side, bodies: list[dict[str, Any]], *, seconds: float, concurrency: int,
         out: Callable[[str], None], http: bool = False, redis: bool = False) -> dict[str, Any]:
    """Start one side (with a private Redis behind the broker, if ``redis``), warm it up, then keep
    ``concurrency`` searches in flight for ``seconds``; Redis is PINGed from the side twice a second
    meanwhile, so that a 503 blaming Redis can be told from a Redis that really was slow."""
    with contextlib.ExitStack() as stack:
        private = stack.enter_context(PrivateRedis(side.folder / "redis")) if redis else None
        procs = stack.enter_context(demo.Processes(side.folder))
        running = _start(side, procs, out, http=http, redis_url=private.url if private else None)
        asyncio.run(running.phase(bodies, 10, 2))
        result: dict[str, Any] = {"load_before": _load(), "redis": bool(redis)}

        async def measured() -> tuple[Phase, list[float | None]]:
            pings: list[float | None] = []
            watcher = asyncio.create_task(_watch_redis(private, 0.5, pings)) if private else None
            try:
                return await running.phase(bodies, 0, concurrency, seconds=seconds), pings
            finally:
                if watcher is not None:
                    watcher.cancel()

        phase, pings = asyncio.run(measured())
        result["timed"] = {**phase.summary(), "seconds": seconds}
        if private is not None:
            answered = sorted(p for p in pings if p is not None)
            result["redis_pings"] = {"sent": len(pings), "unanswered": len(pings) - len(answered),
                                     "max_ms": 1000 * answered[-1] if answered else None}
        result["load_after"] = _load()
        return result


def measure(side: Side, bodies: list[dict[str, Any]], *, searches: int, concurrency: int, idle: float,
            out: Callable[[str], None], http: bool = False) -> dict[str, Any]:
    """Start one side, warm it up, then: one at a time, ``concurrency`` at a time, after ``idle`` s."""
    with demo.Processes(side.folder) as procs:
        running = _start(side, procs, out, http=http)
        asyncio.run(running.phase(bodies, 10, 2))  # warm up: connections, indexes, caches
        result: dict[str, Any] = {"load_before": _load()}
        result["one_at_a_time"] = asyncio.run(running.phase(bodies, searches, 1)).summary()
        result["in_flight"] = asyncio.run(running.phase(bodies, searches, concurrency)).summary()
        if idle > 0:
            hot = asyncio.run(running.phase(bodies, 5, 1)).summary()
            time.sleep(idle)
            cold = asyncio.run(running.phase(bodies, 1, 1)).summary()
            result["after_idle"] = {"idle_s": idle, "hot_broker_cpu_ms": hot["broker_cpu_ms_per_search"],
                                    "cold_broker_cpu_ms": cold["broker_cpu_ms_per_search"],
                                    "cold_new_tls_handshakes": cold["new_tls_handshakes"]}
        result["load_after"] = _load()
        return result


@contextlib.contextmanager
def processes_from(source: Path | None) -> Iterator[None]:
    """Node and broker processes started inside run the code of checkout ``source`` (the bench
    itself, already imported, keeps running this one's). They start with ``python -m``, which puts
    the working folder first on the path, so the working folder is ``source`` too meanwhile."""
    if source is None:
        yield
        return
    before, cwd = os.environ.get("PYTHONPATH"), os.getcwd()
    os.environ["PYTHONPATH"] = str(source.resolve())
    os.chdir(source)
    try:
        yield
    finally:
        os.chdir(cwd)
        if before is None:
            os.environ.pop("PYTHONPATH", None)
        else:
            os.environ["PYTHONPATH"] = before


def run(*, nodes: int, children: int = 1000, concurrency: int = 8, searches: int = 48, idle: float = 0,
        folder: Path | None = None, central: bool = True, http: bool = False, seconds: float | None = None,
        redis: bool = False, baseline_source: Path | None = None,
        out: Callable[[str], None] = print) -> dict[str, Any]:
    """Measure the federated side and the central baseline; return every figure as one object.

    With ``seconds``, measure the federated side only, under ``concurrency`` searches in flight
    for that long (``load``). With ``baseline_source``, measure the federated side a second time
    with the node and broker processes of that checkout (``baseline``), in the same run."""
    where = folder or Path.home() / ".cache" / "signpost" / "bench" / f"federation-{nodes}x{children}"
    where = where.resolve()  # the processes of a baseline checkout run in another working folder
    layout = load_or_build(where, nodes, children, out=out)
    report: dict[str, Any] = {
        "nodes": nodes, "children_per_node": children, "concurrency": concurrency, "searches": searches,
        "cpus": os.cpu_count(), "folder": str(where), "transport": "http" if http else "channel",
    }
    sides = [("federated", None), *([("baseline", baseline_source)] if baseline_source else [])]
    if seconds is not None:
        for label, source in sides:
            out(f"{label}: {nodes} node processes, {concurrency} searches in flight for {seconds:g} s ...")
            with processes_from(source):
                report[label] = load(layout.federated, layout.bodies, seconds=seconds,
                                     concurrency=concurrency, out=out, http=http, redis=redis)
        return report
    for label, source in sides:
        out(f"{label}: {nodes} node processes ...")
        with processes_from(source):
            report[label] = measure(layout.federated, layout.bodies, searches=searches,
                                    concurrency=concurrency, idle=idle, out=out, http=http)
    if central:
        out("central baseline: one node with every child ...")
        report["central"] = measure(layout.central, layout.bodies, searches=searches,
                                    concurrency=concurrency, idle=0, out=out, http=http)
        fed, cen = report["federated"]["one_at_a_time"], report["central"]["one_at_a_time"]
        report["ratios"] = {
            "broker_cpu_federated_over_central": fed["broker_cpu_ms_per_search"]
            / max(1e-9, cen["broker_cpu_ms_per_search"]),
            "p50_federated_over_central": fed["p50_ms"] / max(1e-9, cen["p50_ms"]),
        }
    return report


def render_load(report: dict[str, Any]) -> str:
    """A ``load`` report as text (this checkout, then the baseline checkout if one ran)."""
    return "\n\n".join(_render_load(report, label) for label in ("federated", "baseline") if label in report)


def _render_load(report: dict[str, Any], label: str) -> str:
    side, p = report[label], report[label]["timed"]
    lines = [f"{label}: {report['nodes']} authorities x {report['children_per_node']:,} children, "
             f"{report['concurrency']} searches in flight for {p['seconds']:g} s, {report['cpus']} CPU(s), "
             f"broker to nodes over {report['transport']}{', rate limits in Redis' if side['redis'] else ''}",
             f"load {side['load_before']} -> {side['load_after']}",
             f"searches {p['searches']}: answered {p['answered']} ({p['answered'] / p['seconds']:.1f}/s), "
             f"p50 {p['answered_p50_ms']:.0f} ms, p99 {p['answered_p99_ms']:.0f} ms, "
             f"incomplete {p['incomplete']}; not 200: {p['failed']} (clients wait as Retry-After says)",
             f"broker CPU {p['broker_cpu_ms_per_search']:.2f} ms/search "
             f"(user {p['broker_user_ms_per_search']:.2f}, system {p['broker_system_ms_per_search']:.2f})"]
    for kind, count in p["problems"].items():
        lines.append(f"  {kind}: {count}")
    if "redis_pings" in side:
        r = side["redis_pings"]
        slowest = "-" if r["max_ms"] is None else f"{r['max_ms']:.1f} ms"
        lines.append(f"Redis PINGed {r['sent']} times during the run: {r['unanswered']} unanswered "
                     f"within 0.5 s, slowest {slowest}")
    return "\n".join(lines)


def render(report: dict[str, Any]) -> str:
    """The report as a table a person reads."""
    if "timed" in report["federated"]:
        return render_load(report)
    lines = [f"{report['nodes']} authorities x {report['children_per_node']:,} children, "
             f"{report['searches']} searches per phase, {report['cpus']} CPU(s), "
             f"broker to nodes over {report.get('transport', 'http')}"]
    header = (f"{'':<24}{'p50 ms':>8}{'p99 ms':>8}{'search/s':>9}{'broker CPU':>11}{'node CPU':>10}"
              f"{'incompl.':>9}{'failed':>7}{'503':>5}{'new TLS':>8}")
    for label in ("federated", "baseline", "central"):
        if label not in report:
            continue
        side = report[label]
        lines.append(f"\n{label} (load {side['load_before']} -> {side['load_after']})")
        lines.append(header)
        lines.append(f"{'':<24}{'':>8}{'':>8}{'':>9}{'ms/search':>11}{'ms/answer':>10}")
        for phase in ("one_at_a_time", "in_flight"):
            p = side[phase]
            name = "1 at a time" if phase == "one_at_a_time" else f"{p['concurrency']} in flight"
            lines.append(f"  {name:<22}{p['p50_ms']:>8.1f}{p['p99_ms']:>8.1f}{p['searches_per_s']:>9.1f}"
                         f"{p['broker_cpu_ms_per_search']:>11.2f}{p['nodes_cpu_ms_per_answer']:>10.2f}"
                         f"{p['incomplete']:>9}{p['failed']:>7}{p['refused_503']:>5}{p['new_tls_handshakes']:>8}")
            lines.append(f"  {'':<22}broker CPU: user {p['broker_user_ms_per_search']:.2f} ms, "
                         f"system {p['broker_system_ms_per_search']:.2f} ms (loopback delivery to the nodes "
                         "is counted here)")
        if "after_idle" in side:
            a = side["after_idle"]
            lines.append(f"  after {a['idle_s']:g} s idle: broker CPU {a['cold_broker_cpu_ms']:.2f} ms "
                         f"(hot {a['hot_broker_cpu_ms']:.2f} ms), {a['cold_new_tls_handshakes']} new TLS")
    if "ratios" in report:
        r = report["ratios"]
        lines.append(f"\nfederated / central, one at a time: broker CPU "
                     f"{r['broker_cpu_federated_over_central']:.1f}x, "
                     f"p50 {r['p50_federated_over_central']:.1f}x")
    return "\n".join(lines)
