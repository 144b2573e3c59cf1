"""kill -9 at the worst moment (rows of docs/fault-matrix.md): a broker in the middle of a search,
an import in the middle of its files, an audit log in the middle of its appends. Each victim is a
real process (`signpost broker serve`, `signpost node import`, a Python process appending to a
real log folder) killed with SIGKILL; what it left behind is then read as an operator or an
auditor would."""

from __future__ import annotations

import asyncio
import contextlib
import csv
import dataclasses
import json
import os
import pty
import re
import select
import signal
import subprocess
import sys
import time
from collections.abc import AsyncIterator, Iterator
from pathlib import Path
from typing import Any

import aiohttp
import pytest
from aiohttp import web

from federation import config as configfile
from node.store import Store
from tests.conftest import (
    AMARA,
    CHILD_HEADER,
    INVOLVEMENT_HEADER,
    build_federation,
    child_row,
    default_records,
    involvement_row,
    write_rows,
    years_ago,
)
from tests.test_audit import audit_args, entries, run_cli
from trust import keys as keyfiles
from trust.logfiles import read_evidence
from trust.tlog import AuditLog

PURPOSE = "child_protection_enquiry"
SIGNPOST = [sys.executable, "-m", "federation.commands.main"]


async def await_until(condition: Any, what: str, seconds: float = 60.0) -> None:
    """Poll the coroutine ``condition()`` until it is true; fail naming ``what`` after ``seconds``."""
    deadline = time.monotonic() + seconds
    while not await condition():
        if time.monotonic() > deadline:
            raise AssertionError(f"gave up waiting for {what}")
        await asyncio.sleep(0.02)


@contextlib.contextmanager
def process(args: list[str], **kwargs: Any) -> Iterator[subprocess.Popen[bytes]]:
    with subprocess.Popen(args, **kwargs) as proc:  # closes its pipes on the way out
        try:
            yield proc
        finally:
            if proc.poll() is None:
                proc.kill()
            proc.wait(timeout=30)


# --- broker killed mid-search ---------------------------------------------------------------


@contextlib.asynccontextmanager
async def stalled_node(port: int) -> AsyncIterator[asyncio.Event]:
    """A node that takes the query and never answers (it holds the broker mid-search); the event
    is set once a query has arrived. It has no channel, so the broker asks it over HTTP."""
    arrived = asyncio.Event()
    release = asyncio.Event()

    async def stall(_: web.Request) -> web.Response:
        arrived.set()
        await release.wait()
        return web.json_response({})

    app = web.Application()
    app.router.add_post("/v1/query", stall)
    runner = web.AppRunner(app, shutdown_timeout=0.1)
    await runner.setup()
    await web.TCPSite(runner, "127.0.0.1", port).start()
    try:
        yield arrived
    finally:
        release.set()
        await runner.cleanup()


async def healthy(url: str) -> bool:
    with contextlib.suppress(aiohttp.ClientError, OSError):
        async with aiohttp.ClientSession() as session, session.get(url + "/healthz") as response:
            return response.status in (200, 503)
    return False


async def test_a_broker_killed_mid_search_leaves_the_search_logged_and_reconcile_names_it(
        tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    """Proves the broker-killed row: with two nodes answered and a third holding the search open,
    SIGKILL to `signpost broker serve` gives the practitioner nothing (the connection drops, no
    answer); the broker's log already holds the `search` entry (written before any node was
    asked, with the same query hash the nodes logged); the nodes that answered hold their `query`
    entries with the answer's hash; and after the broker is restarted, `audit reconcile` reports
    exactly one discrepancy: that search, without an outcome."""
    fed = build_federation(tmp_path / "federation", default_records())
    config = tmp_path / "broker.json"
    # A deadline far beyond the test, so that the search is still waiting on gamma when killed.
    configfile.dump(dataclasses.replace(fed.broker_config, node_deadline_seconds=30), config)
    try:
        await fed.start_node("alpha")
        await fed.start_node("beta")
        async with stalled_node(fed.node_configs["gamma"].port) as gamma_asked:
            with (tmp_path / "broker.err").open("wb") as errors, process(
                    [*SIGNPOST, "broker", "serve", "--config", str(config)], stdout=subprocess.DEVNULL,
                    stderr=errors) as broker:
                await await_until(lambda: healthy(fed.broker_url), "the broker to serve")
                search = asyncio.create_task(fed.search({"identity": AMARA, "purpose": PURPOSE}))

                async def answered() -> bool:
                    logged = [await entries(fed, n) for n in ("alpha", "beta")]
                    return gamma_asked.is_set() and all(
                        any(e["type"] == "query" for e in log) for log in logged)

                await await_until(answered, "alpha and beta to answer and gamma to be asked")
                assert not search.done()
                broker.send_signal(signal.SIGKILL)
                assert -signal.SIGKILL == await asyncio.to_thread(broker.wait, 30)
                with pytest.raises(aiohttp.ClientError):
                    await search
        node_entries = {n: [e for e in await entries(fed, n) if e["type"] == "query"]
                        for n in ("alpha", "beta")}
        # Restarted (as an operator would), the broker signs a checkpoint over what it had logged.
        await fed.start_broker()
        await fed.stop("broker")
        evidence = read_evidence(fed.broker_config.audit_log)  # type: ignore[arg-type]
        logged = [json.loads(payload) for payload, _ in evidence.records]
        assert ["search"] == [e["type"] for e in logged]
        (search_entry,) = logged
        for node, (entry,) in node_entries.items():
            assert (search_entry["query_id"], search_entry["query_hash"]) == (entry["query_id"],
                                                                              entry["query_hash"]), node
            assert entry["answer_hash"], node
        code, out = await run_cli(audit_args(fed, tmp_path / "state", "audit", "reconcile", "--json",
                                             "--node", "alpha", "--node", "beta",
                                             "--log", f"broker={fed.broker_config.audit_log}"), capsys)
        report = json.loads(out)
        assert 1 == code
        assert [("search-without-outcome", search_entry["query_id"], 0)] == [
            (d["kind"], d["query_id"], d["broker_index"]) for d in report["discrepancies"]]
    finally:
        await fed.close()


# --- kill -9 during an import ---------------------------------------------------------------


def big_import(folder: Path, children: int) -> tuple[Path, Path]:
    """``children`` children with one involvement each, and one bad row in each file."""
    dob = years_ago(7)
    kids = [child_row(f"K-{i}", f"Given{i}", f"Family{i}", dob, sex="F") for i in range(children)]
    kids.append(child_row("K-bad", "Bad", "Date", "31/02/2015"))
    involvements = [involvement_row(f"KI-{i}", f"K-{i}") for i in range(children)]
    involvements.append(involvement_row("KI-bad", "K-nobody", category="no_such_category"))
    return (write_rows(folder / "children.csv", CHILD_HEADER, kids),
            write_rows(folder / "involvements.csv", INVOLVEMENT_HEADER, involvements))


def counts(database: Path) -> tuple[int, int]:
    with Store(database) as store:
        return (store.db.execute("SELECT count(*) FROM children").fetchone()[0],
                store.db.execute("SELECT count(*) FROM involvements").fetchone()[0])


ROWS_DRAWN = re.compile(r"([\d,]+)/([\d,]+) rows")


def kill_import_when(args: list[str], reading: bool) -> tuple[int, str]:
    """Run an import with its progress bar on a terminal and SIGKILL it: with ``reading``, at the
    first progress drawn with rows still to read; otherwise once every row is read (the one
    write transaction comes next). Returns the exit status and what it had drawn."""
    leader, follower = pty.openpty()
    drawn = ""

    def due() -> bool:
        for done, total in ROWS_DRAWN.findall(drawn):
            done_rows, total_rows = int(done.replace(",", "")), int(total.replace(",", ""))
            if (done_rows < total_rows) if reading else (done_rows == total_rows):
                return True
        return False

    try:
        with process(args, stdout=subprocess.DEVNULL, stderr=follower) as proc:
            os.close(follower)
            follower = -1
            deadline = time.monotonic() + 120
            while not due():
                assert time.monotonic() < deadline, f"gave up waiting for the progress: {drawn[-300:]!r}"
                if select.select([leader], [], [], 0.5)[0]:
                    try:
                        drawn += os.read(leader, 65536).decode(errors="replace")
                    except OSError:  # the terminal closed: the import ended before the moment came
                        raise AssertionError(f"the import ended first: {drawn[-300:]!r}") from None
            proc.send_signal(signal.SIGKILL)
            return proc.wait(timeout=30), drawn
    finally:
        os.close(leader)
        if follower >= 0:
            os.close(follower)


@pytest.mark.parametrize("moment", ["while reading the files", "as the last row is read"])
def test_kill_9_during_an_import_leaves_all_old_or_all_new_and_the_next_import_succeeds(
        tmp_path: Path, moment: str) -> None:
    """Proves the import row: SIGKILL to `signpost node import` while it reads its files leaves
    the store exactly as before; killed as it starts writing (every row read, the one write
    transaction next) leaves it as before or wholly imported, never half; the store then opens,
    and the same import run again succeeds and still reports its two rejected rows."""
    fed = build_federation(tmp_path / "federation", default_records())
    config = tmp_path / "node.json"
    configfile.dump(fed.node_configs["alpha"], config)
    database = fed.node_configs["alpha"].database
    before = counts(database)
    children, involvements = big_import(tmp_path, 20_000)
    after = (before[0] + 20_000, before[1] + 20_000)
    argv = [*SIGNPOST, "node", "import", "--config", str(config), "--children", str(children),
            "--involvements", str(involvements)]
    reading = moment == "while reading the files"
    code, drawn = kill_import_when(argv, reading)
    assert -signal.SIGKILL == code, drawn
    found = counts(database)
    assert found == before if reading else found in (before, after), found
    result = subprocess.run(argv, capture_output=True, text=True, timeout=300, check=False)
    assert 0 == result.returncode, result.stderr[-2000:]
    assert "rejected rows: 2" in result.stdout
    with (tmp_path / "rejects.csv").open() as fh:
        assert ["K-bad", "KI-bad"] == sorted(row["record_id"] for row in csv.DictReader(fh))
    assert after == counts(database)


# --- kill -9 during audit log appends -------------------------------------------------------

APPENDER = """
import sys
from pathlib import Path
from trust.tlog import AuditLog

log = AuditLog.open(Path(sys.argv[1]))
i = log.size
while True:
    index = log.append_sync({"type": "test", "n": i, "pad": "x" * (i % 700)})
    print(index, flush=True)  # acknowledged: the entry is durable
    i += 1
"""


def test_kill_9_during_log_appends_keeps_every_acknowledged_entry(tmp_path: Path) -> None:
    """Proves the append row with a real process: SIGKILL to a process appending as fast as it can
    loses no acknowledged entry; an auditor's read-only view of the folder before any repair
    holds every acknowledged entry (a cut-short last record, if any, is reported as a torn tail,
    never as damage); the log then opens (the torn tail cut), takes new entries, and a checkpoint
    signed over it verifies."""
    folder = tmp_path / "audit.log"
    AuditLog.open(folder).close()
    acknowledged: list[int] = []
    with process([sys.executable, "-c", APPENDER, str(folder)], stdout=subprocess.PIPE,
                 stderr=subprocess.PIPE) as appender:
        assert appender.stdout is not None
        while len(acknowledged) < 300:
            line = appender.stdout.readline()
            assert line, appender.stderr.read() if appender.stderr else "appender stopped"
            acknowledged.append(int(line))
        appender.send_signal(signal.SIGKILL)
        assert -signal.SIGKILL == appender.wait(timeout=30)
        acknowledged += [int(line) for line in appender.stdout.read().split()]
    assert list(range(len(acknowledged))) == acknowledged
    evidence = read_evidence(folder)
    assert len(evidence.records) >= len(acknowledged)
    assert all(damage is None for _, damage in evidence.records)
    for index in acknowledged:
        entry = json.loads(evidence.records[index][0])
        assert ("test", index) == (entry["type"], entry["n"])
    with AuditLog.open(folder) as log:
        assert len(evidence.records) == log.size  # nothing acknowledged or whole was cut
        assert log.size == log.append_sync({"type": "after"})
        key = keyfiles.generate()
        note = log.checkpoint("signpost.test/appender", "appender", key)
        report = log.audit(note, "appender", key.public_key())
    assert report.ok, report
