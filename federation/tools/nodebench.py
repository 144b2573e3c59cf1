"""``signpost bench node``: one authority's node at size, through its real commands and HTTP.

Every step runs the shipped commands as separate processes (``signpost node import``,
``signpost node serve``) on synthetic records, so the figures are what an operator sees:

1. fresh import of N children and their involvements; then an unchanged re-import;
2. node start until ``/healthz`` says ready, and until the first answer;
3. queries one at a time over HTTP: latency, and the node process's CPU per answered query
   (and its event loop thread's share);
   then eight at a time (the audit log's group commit at work);
4. a re-import with 1% of the children changed into the live node, with queries running
   throughout until the node answers from the new index: failures and p99;
5. the node's resident memory and its index build time;
6. a restart with the records as they are (and the index the node saved): ready and first answer;
7. the CPU per query again at 1,000 children.

The machine (CPUs, model, memory) and the load average at every step are part of the result:
on a shared machine wall-clock figures mean little without them.

``source`` (another checkout of Signpost) runs the same steps with it first, on the same records
in the same run, as the baseline printed beside this checkout's figures.
"""

from __future__ import annotations

import asyncio
import contextlib
import csv
import itertools
import json
import os
import random
import re
import statistics
import subprocess
import sys
import tempfile
import time
import uuid
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import aiohttp

from federation.tools import provision, synthetic
from federation.tools.ports import free_port
from trust import envelope
from trust import keys as keyfiles

FEDERATION = "bench-federation"
CHILD_FIELDS = ("record_id", "nhs_number", "upn", "given_name", "family_name", "date_of_birth",
                "sex", "postcode")
INVOLVEMENT_FIELDS = ("record_id", "child_record_id", "organisation", "service_category",
                      "practitioner_name", "practitioner_role", "phone", "secure_email",
                      "start_date", "lead", "sensitive", "consent", "assessment")


@dataclass
class Files:
    children: Path
    involvements: Path
    involvement_rows: int
    samples: list[dict[str, Any]] = field(default_factory=list)


def _cell(value: Any) -> str:
    if value is None:
        return ""
    if isinstance(value, bool):
        return "true" if value else "false"
    return str(value)


def write_records(folder: Path, children: int, *, seed: int = 7, changed: float = 0.0,
                  samples: int = 500) -> Files:
    """Synthetic children.csv and involvements.csv; ``changed`` of the children get a new postcode
    (the same seed gives the same records otherwise)."""
    rng = random.Random(seed)
    change = random.Random(seed + 1)
    today = datetime.now(UTC).date()
    counter = itertools.count(1)
    files = Files(folder / "children.csv", folder / "involvements.csv", 0)
    with open(files.children, "w", newline="") as c_fh, open(files.involvements, "w", newline="") as i_fh:
        c_out, i_out = csv.writer(c_fh), csv.writer(i_fh)
        c_out.writerow(CHILD_FIELDS)
        i_out.writerow(INVOLVEMENT_FIELDS)
        for n in range(children):
            kid = synthetic.child(rng, f"C-{n:07d}", "leeds", today)
            postcode = kid.postcode
            if changed and change.random() < changed:
                postcode = synthetic.postcode(change, "leeds")
            c_out.writerow([_cell(getattr(kid, f)) if f != "postcode" else postcode for f in CHILD_FIELDS])
            for inv in synthetic.involvements(rng, kid, "leeds", "Leeds", counter, today):
                i_out.writerow([_cell(getattr(inv, f)) for f in INVOLVEMENT_FIELDS])
                files.involvement_rows += 1
            if len(files.samples) < samples and n % max(1, children // samples) == 0:
                files.samples.append({"given_name": kid.given_name, "family_name": kid.family_name,
                                      "date_of_birth": kid.date_of_birth.isoformat(), "postcode": postcode})
    return files


@dataclass
class Node:
    """A provisioned one-node federation in a folder: its config file and the broker's key."""

    folder: Path
    config: Path
    port: int
    broker_key: Any

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"


def provision_node(folder: Path, *, say_plain_http: bool = True) -> Node:
    """Keys, a signed trust list with one broker and one node, and the node's config file.

    The node serves plain HTTP on loopback (``unsafe_plain_http``; a checkout from before that
    setting existed is not told, as it would refuse a setting it does not know)."""
    provision.create(folder, FEDERATION)
    port = free_port()
    broker_key, node_key = keyfiles.generate(), keyfiles.generate()
    entries = [(provision.member_entry("broker", "Broker", ["broker"], broker_key), broker_key),
               (provision.member_entry("leeds", "Leeds", ["node"], node_key, endpoint=f"http://127.0.0.1:{port}",
                                       authority="leeds"), node_key)]
    provision.add_members(folder, entries)
    home = folder / "leeds"
    home.mkdir()
    (home / "root.json").write_text((folder / "root.json").read_text())
    settings = {"id": "leeds", "database": str(home / "node.sqlite3"),
                "key": str(folder / "keys" / "leeds.pem"), "trust_list": str(folder / "trustlist.json"),
                "trust_root": str(home / "root.json"), "port": port, "audit_log": str(home / "audit.log")}
    if say_plain_http:
        settings["unsafe_plain_http"] = True
    (home / "node.json").write_text(json.dumps(settings, indent=2))
    return Node(folder, home / "node.json", port, keyfiles.load_private(folder / "keys" / "broker.pem"))


def _command(source: Path | None, *args: str) -> tuple[list[str], dict[str, str]]:
    env = dict(os.environ)
    if source is not None:
        env["PYTHONPATH"] = str(source)
    return [sys.executable, "-m", "federation.commands.main", *args], env


def run_import(node: Node, files: Files, source: Path | None, *, alone: bool = True) -> dict[str, float]:
    """``signpost node import`` as a process: wall time, peak memory, CPU.

    ``alone``: no node is serving, so the import keeps the normal CPU priority (``--nice 0``, for
    a checkout that has the option) and its wall time compares with a baseline's; otherwise it
    runs as an operator would run it beside a live node (its default priority).
    """
    args = ["node", "import", "--config", str(node.config), "--children", str(files.children),
            "--involvements", str(files.involvements)]
    if alone and _knows(source, "federation/commands/main.py", '"--nice"'):
        args += ["--nice", "0"]
    argv, env = _command(source, *args)
    started = time.perf_counter()
    with tempfile.TemporaryFile() as errors, tempfile.TemporaryFile() as output:
        proc = subprocess.Popen(argv, env=env, cwd=source, stdout=output, stderr=errors)
        _, status, usage = os.wait4(proc.pid, 0)
        seconds = time.perf_counter() - started
        proc.returncode = os.waitstatus_to_exitcode(status)
        if proc.returncode != 0:
            errors.seek(0)
            raise RuntimeError(f"import failed: {errors.read().decode(errors='replace')}")
        output.seek(0)
        index = _index_seconds(output.read().decode(errors="replace"))
    return {"seconds": seconds, "peak_rss_mib": usage.ru_maxrss / 1024,
            "cpu_seconds": usage.ru_utime + usage.ru_stime, **index}


def _index_seconds(printed: str) -> dict[str, float]:
    """The part of an import's wall time spent building the match index it saved for the node's
    next start (``match index: N children, built in S s ...``; none for a checkout or an import
    that saved none)."""
    found = re.search(r"^match index: .* built in ([0-9.]+) s", printed, re.MULTILINE)
    return {"index_seconds": float(found.group(1))} if found else {}


def _knows(source: Path | None, file: str, text: str) -> bool:
    """Whether a checkout (``None``: this one) has ``text`` in ``file`` (an option, a setting)."""
    return source is None or text in (source / file).read_text()


def _cpu_seconds(pid: int, thread: int | None = None) -> float:
    """CPU seconds (user and system) of process ``pid``, or of its thread ``thread`` alone."""
    stat = Path(f"/proc/{pid}/task/{thread}/stat" if thread is not None else f"/proc/{pid}/stat")
    fields = stat.read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def _memory_mib(pid: int) -> dict[str, float]:
    found = {}
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        name, _, value = line.partition(":")
        if name in ("VmRSS", "VmHWM"):
            found[name] = int(value.split()[0]) / 1024
    return found


def _percentile(values: list[float], fraction: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(fraction * len(ordered)))] if ordered else float("nan")


class Client:
    """Signs queries as the broker would and asks the node over HTTP."""

    def __init__(self, node: Node, samples: list[dict[str, Any]]) -> None:
        self.node = node
        self.samples = samples
        self.count = 0

    def token(self) -> str:
        now = int(time.time())
        identity = self.samples[self.count % len(self.samples)]
        self.count += 1
        claims = {"v": 1, "iss": "broker", "aud": FEDERATION, "iat": now, "exp": now + 60,
                  "jti": str(uuid.uuid4()), "purpose": "child_protection_enquiry", "identity": identity,
                  "on_behalf_of": None,
                  "practitioner": {"iss": "leeds-idp", "sub": "bench@leeds", "name": "Bench", "org": "Leeds",
                                   "role": "practitioner", "authority": "leeds", "amr": ["pwd", "otp"]}}
        return envelope.sign(claims, self.node.broker_key, envelope.QUERY_TYPE)

    async def ask(self, session: aiohttp.ClientSession) -> tuple[int, float]:
        body = {"v": 1, "query": self.token()}
        started = time.perf_counter()
        async with session.post(self.node.url + "/v1/query", json=body) as response:
            await response.read()
            return response.status, time.perf_counter() - started


async def _health(session: aiohttp.ClientSession, node: Node) -> tuple[int, dict[str, Any]]:
    try:
        async with session.get(node.url + "/healthz", timeout=aiohttp.ClientTimeout(total=2)) as response:
            return response.status, await response.json(content_type=None)
    except (aiohttp.ClientError, TimeoutError, ValueError):
        return 0, {}


class Serving:
    """``signpost node serve`` as a process, with what it took to become ready."""

    def __init__(self, node: Node, source: Path | None) -> None:
        argv, env = _command(source, "node", "serve", "--config", str(node.config))
        self.started = time.perf_counter()
        self.proc = subprocess.Popen(argv, env=env, cwd=source, stdout=subprocess.DEVNULL,
                                     stderr=subprocess.DEVNULL)

    def stop(self) -> None:
        self.proc.terminate()
        self.proc.wait(timeout=30)


async def _until_ready(node: Node, serving: Serving, client: Client) -> dict[str, float]:
    """Seconds from start until /healthz says ready (200), and until the first query is answered."""
    result: dict[str, float] = {}
    async with aiohttp.ClientSession() as session:
        while "ready_seconds" not in result:
            if serving.proc.poll() is not None:
                raise RuntimeError("node exited during start-up")
            status, _ = await _health(session, node)
            if status == 200:
                result["ready_seconds"] = time.perf_counter() - serving.started
            else:
                await asyncio.sleep(0.05)
        while "first_answer_seconds" not in result:
            try:
                status, _ = await asyncio.wait_for(client.ask(session), 120)
            except (aiohttp.ClientError, TimeoutError):
                status = 0
            if status == 200:
                result["first_answer_seconds"] = time.perf_counter() - serving.started
            else:
                await asyncio.sleep(0.05)
    return result


async def _query_cost(node: Node, serving: Serving, client: Client, queries: int,
                      in_flight: int = 1) -> dict[str, float]:
    """Queries ``in_flight`` at a time (one by default): latency, and the node's CPU per answered
    query. With more than one in flight, the node's audit log writes several entries with one
    fsync (group commit), which a one-at-a-time client never lets it do."""
    latencies: list[float] = []
    answered = 0
    async with aiohttp.ClientSession() as session:
        for _ in range(min(100, queries)):  # warm up
            await client.ask(session)
        remaining = queries

        async def asker() -> None:
            nonlocal answered, remaining
            while remaining > 0:
                remaining -= 1
                status, seconds = await client.ask(session)
                answered += status == 200
                latencies.append(seconds)

        pid = serving.proc.pid
        # The loop thread is read inside the process's reading at both ends, so that its share
        # never exceeds the whole by a clock tick that fell between two readings.
        cpu = _cpu_seconds(pid)
        loop = _cpu_seconds(pid, pid)
        await asyncio.gather(*(asker() for _ in range(in_flight)))
        loop = _cpu_seconds(pid, pid) - loop
        cpu = _cpu_seconds(pid) - cpu
    return {"queries": float(queries), "answered": float(answered), "in_flight": float(in_flight),
            "p50_ms": 1000 * statistics.median(latencies), "p99_ms": 1000 * _percentile(latencies, 0.99),
            "cpu_ms_per_query": 1000 * cpu / max(answered, 1),
            "event_loop_cpu_ms_per_query": 1000 * loop / max(answered, 1)}


async def _during_import(node: Node, client: Client, files: Files, source: Path | None,
                         concurrency: int = 4) -> dict[str, Any]:
    """Re-import into the live node while ``concurrency`` clients query, until its index is new."""
    latencies: list[float] = []
    failures = 0
    statuses: dict[str, int] = {}
    done = asyncio.Event()
    async with aiohttp.ClientSession() as session:
        _, before = await _health(session, node)
        imported = asyncio.ensure_future(asyncio.to_thread(run_import, node, files, source, alone=False))

        async def watch() -> None:
            await asyncio.shield(imported)
            start = time.perf_counter()
            while time.perf_counter() - start < 120:
                _, body = await _health(session, node)
                index = body.get("index") or {}
                if not before.get("index") or index.get("generation") != before["index"].get("generation"):
                    break
                await asyncio.sleep(0.05)
            done.set()

        async def ask_until_done() -> None:
            nonlocal failures
            while not done.is_set():
                try:
                    status, seconds = await client.ask(session)
                except aiohttp.ClientError:
                    status, seconds = 0, 0.0
                latencies.append(seconds)
                failures += status != 200
                statuses[str(status)] = statuses.get(str(status), 0) + 1

        await asyncio.gather(watch(), *(ask_until_done() for _ in range(concurrency)))
        import_result = await imported
    return {"queries": float(len(latencies)), "failures": float(failures), "statuses": statuses,
            "p50_ms": 1000 * statistics.median(latencies), "p99_ms": 1000 * _percentile(latencies, 0.99),
            "import_seconds": import_result["seconds"], "import_cpu_seconds": import_result["cpu_seconds"]}


def machine() -> dict[str, Any]:
    """What the figures were measured on: CPUs, their model, memory, Python, and the load now."""
    model = ""
    with contextlib.suppress(OSError):
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                model = line.split(":", 1)[1].strip()
                break
    memory = 0.0
    with contextlib.suppress(OSError, ValueError, IndexError):
        memory = int(Path("/proc/meminfo").read_text().split()[1]) / 1024 / 1024
    return {"cpus": os.cpu_count(), "cpu_model": model, "memory_gib": round(memory, 1),
            "python": sys.version.split()[0], "load_average": os.getloadavg()}


def _load() -> str:
    return "/".join(f"{x:.1f}" for x in os.getloadavg())


def run(children: int = 50_000, *, queries: int = 2_000, source: Path | None = None,
        out: Callable[[str], None] = print) -> dict[str, Any]:
    """All the node's figures at ``children`` (and CPU per query at 1,000); see the module docstring.

    With ``source`` (another checkout), its figures are measured first, on the same records and
    in the same run, as ``baseline``; this checkout's follow.
    """
    result: dict[str, Any] = {"children": children, "machine": machine()}
    with tempfile.TemporaryDirectory(prefix="signpost-nodebench-") as tmp:
        folder = Path(tmp)
        out(f"machine           {result['machine']['cpus']} CPUs ({result['machine']['cpu_model']}), "
            f"load {_load()}")
        out(f"writing {children:,} synthetic children ...")
        for part in ("records", "changed", "small"):
            (folder / part).mkdir()
        files = write_records(folder / "records", children)
        changed = write_records(folder / "changed", children, changed=0.01)
        small = write_records(folder / "small", 1_000)
        result["involvements"] = files.involvement_rows
        runs = [("baseline", source), ("this", None)] if source is not None else [("this", None)]
        for name, checkout in runs:
            out(f"--- {name}: {checkout or 'this checkout'}")
            result[name] = _run_one(folder / name, children, (files, changed, small), checkout, queries, out)
    return result


def _run_one(folder: Path, children: int, records: tuple[Files, Files, Files], source: Path | None,
             queries: int, out: Callable[[str], None]) -> dict[str, Any]:
    """Every step for one checkout (``source``, else this one), in a folder of its own.

    ``records``: the children and involvements, the same with 1% changed, and 1,000 children.
    """
    files, changed, small = records
    plain = _knows(source, "node/config.py", "unsafe_plain_http")
    result: dict[str, Any] = {"source": str(source) if source else "this checkout"}
    folder.mkdir()
    node = provision_node(folder / "federation", say_plain_http=plain)

    result["load_at_start"] = os.getloadavg()
    fresh = run_import(node, files, source)
    result["fresh_import"] = {**fresh, "children_per_s": children / fresh["seconds"],
                              "children_per_cpu_s": children / fresh["cpu_seconds"],
                              "rows_per_s": (children + files.involvement_rows) / fresh["seconds"]}
    out(f"fresh import      {fresh['seconds']:.1f} s = {children / fresh['seconds']:,.0f} children/s "
        f"(+ {files.involvement_rows:,} involvements), CPU {fresh['cpu_seconds']:.1f} s, "
        f"peak {fresh['peak_rss_mib']:.0f} MiB, load {_load()}"
        + (f"; of which {fresh['index_seconds']:.1f} s building the index it saved"
           if "index_seconds" in fresh else ""))
    again = run_import(node, files, source)
    result["unchanged_import"] = {**again, "children_per_s": children / again["seconds"],
                                  "children_per_cpu_s": children / again["cpu_seconds"]}
    out(f"unchanged import  {again['seconds']:.1f} s = {children / again['seconds']:,.0f} children/s, "
        f"CPU {again['cpu_seconds']:.1f} s, load {_load()}")

    client = Client(node, files.samples)
    serving = Serving(node, source)
    try:
        ready = asyncio.run(_until_ready(node, serving, client))
        index = asyncio.run(_health_once(node)).get("index") or {}
        result["start"] = {**ready, "index": index, "load": os.getloadavg()}
        out(f"start             ready {ready['ready_seconds']:.1f} s, first answer "
            f"{ready['first_answer_seconds']:.1f} s (index: {index.get('source', 'built')}, full build "
            f"{index.get('full_build_seconds')} s), load {_load()}")
        cost = asyncio.run(_query_cost(node, serving, client, queries))
        result["queries"] = {**cost, "load": os.getloadavg()}
        out(f"queries           p50 {cost['p50_ms']:.1f} ms, p99 {cost['p99_ms']:.1f} ms, "
            f"node CPU {cost['cpu_ms_per_query']:.2f} ms per answer (event loop "
            f"{cost['event_loop_cpu_ms_per_query']:.2f}), load {_load()}")
        busy = asyncio.run(_query_cost(node, serving, client, queries, in_flight=8))
        result["queries_8_in_flight"] = {**busy, "load": os.getloadavg()}
        out(f"8 in flight       p50 {busy['p50_ms']:.1f} ms, p99 {busy['p99_ms']:.1f} ms, "
            f"node CPU {busy['cpu_ms_per_query']:.2f} ms per answer, load {_load()}")
        live = asyncio.run(_during_import(node, client, changed, source))
        result["live_reimport"] = {**live, "load": os.getloadavg()}
        out(f"live re-import    {live['queries']:.0f} queries during a {live['import_seconds']:.1f} s "
            f"(CPU {live['import_cpu_seconds']:.1f} s) import (1% changed, every row read) and the index "
            f"swap: {live['failures']:.0f} failed, "
            f"p50 {live['p50_ms']:.1f} ms, p99 {live['p99_ms']:.1f} ms, load {_load()}")
        memory = _memory_mib(serving.proc.pid)
        result["node_memory_mib"] = memory
        out(f"node memory       RSS {memory.get('VmRSS', 0):.0f} MiB, peak {memory.get('VmHWM', 0):.0f} MiB")
    finally:
        serving.stop()

    serving = Serving(node, source)  # a restart, with the records (and any saved index) as they are
    try:
        ready = asyncio.run(_until_ready(node, serving, client))
        index = asyncio.run(_health_once(node)).get("index") or {}
        result["restart"] = {**ready, "index": index, "load": os.getloadavg()}
        out(f"restart           ready {ready['ready_seconds']:.1f} s, first answer "
            f"{ready['first_answer_seconds']:.1f} s (index: {index.get('source', 'built')}), load {_load()}")
        result["node_memory_after_restart_mib"] = _memory_mib(serving.proc.pid)
    finally:
        serving.stop()

    result["start_unsaved"] = _start_without_saved_index(node, source, client, out)

    small_node = provision_node(folder / "small", say_plain_http=plain)
    run_import(small_node, small, source)
    small_client = Client(small_node, small.samples)
    serving = Serving(small_node, source)
    try:
        asyncio.run(_until_ready(small_node, serving, small_client))
        cost = asyncio.run(_query_cost(small_node, serving, small_client, queries))
        result["queries_at_1000"] = {**cost, "load": os.getloadavg()}
        out(f"queries at 1,000  p50 {cost['p50_ms']:.1f} ms, node CPU {cost['cpu_ms_per_query']:.2f} ms "
            f"per answer (event loop {cost['event_loop_cpu_ms_per_query']:.2f}), load {_load()}")
    finally:
        serving.stop()
    return result


def _start_without_saved_index(node: Node, source: Path | None, client: Client,
                               out: Callable[[str], None]) -> dict[str, Any]:
    """A start with the saved index removed, so the node builds its index: ready, first answer,
    and the full build's own time (the figure the build target is about)."""
    database = Path(json.loads(node.config.read_text())["database"])
    database.with_name(database.name + ".index").unlink(missing_ok=True)
    serving = Serving(node, source)
    try:
        ready = asyncio.run(_until_ready(node, serving, client))
        index = asyncio.run(_health_once(node)).get("index") or {}
    finally:
        serving.stop()
    out(f"start, no saved  ready {ready['ready_seconds']:.1f} s, first answer "
        f"{ready['first_answer_seconds']:.1f} s (full build {index.get('full_build_seconds')} s), "
        f"load {_load()}")
    return {**ready, "index": index, "load": os.getloadavg()}


async def _health_once(node: Node) -> dict[str, Any]:
    async with aiohttp.ClientSession() as session:
        return (await _health(session, node))[1]
