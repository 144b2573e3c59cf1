"""``signpost status`` and the import summary: what operators see at a glance."""

from __future__ import annotations

import io
from datetime import UTC, datetime
from pathlib import Path

import pytest

from broker.api import BROKER
from federation.commands.main import main
from federation.commands.progress import ProgressBar, table
from federation.tools.status import collect, render
from node.api import NODE
from tests.conftest import (
    AMARA,
    CHILD_HEADER,
    INVOLVEMENT_HEADER,
    Federation,
    child_row,
    involvement_row,
    write_rows,
    years_ago,
)


async def test_status_shows_each_member_and_who_is_down(federation: Federation) -> None:
    """Proves status probes every member: nodes and broker reachable with their trust-list
    version, members without an endpoint marked as such, a stopped node reported unreachable."""
    await federation.stop("beta")
    trust = federation.runners["broker"].app[BROKER].trust.current
    now = datetime.now(UTC)
    statuses = {s.id: s for s in await collect(trust, timeout=2.0, now=now)}
    assert {"alpha": True, "beta": False, "gamma": True, "broker": True, "alpha-idp": None} == {
        k: statuses[k].reachable for k in ("alpha", "beta", "gamma", "broker", "alpha-idp")}
    assert trust.version == statuses["alpha"].trust_list_version
    text = render(trust, list(statuses.values()), now)
    assert "1 member(s) not reachable: beta" in text
    assert "n/a" in text  # no audit log endpoint answered: shown as n/a, not an error


async def test_status_shows_why_a_member_is_degraded(federation: Federation) -> None:
    """Proves a member whose /healthz says degraded (its audit log stopped accepting entries) is
    reachable, marked DEGRADED, and its reasons are printed."""
    node = federation.runners["alpha"].app[NODE]
    assert node.audit.log is not None
    node.audit.log._broken = "OSError: [Errno 28] No space left on device"  # as after a failed write
    trust = federation.runners["broker"].app[BROKER].trust.current
    now = datetime.now(UTC)
    statuses = {s.id: s for s in await collect(trust, timeout=2.0, now=now)}
    assert (True, True) == (statuses["alpha"].reachable, bool(statuses["alpha"].reasons))
    text = render(trust, list(statuses.values()), now)
    assert "DEGRADED" in text and "alpha is degraded:" in text
    assert "audit-log-not-writable: the audit log stopped accepting entries: OSError" in text
    status, answer = await federation.search({"identity": AMARA, "purpose": "child_protection_enquiry"})
    alpha = next(r for r in answer["results"] if r["authority"]["id"] == "alpha")
    assert (200, "unavailable") == (status, alpha["status"])  # nothing answered unlogged


def test_import_prints_a_summary_table(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    """Proves ``signpost node import`` ends with accepted/added/.../rejected per file and the time."""
    children = write_rows(tmp_path / "children.csv", CHILD_HEADER, [
        child_row("C-1", "Amara", "Okafor", years_ago(7), sex="F"),
        child_row("C-2", "Leo", "Smith", "not-a-date", sex="M"),
    ])
    involvements = write_rows(tmp_path / "involvements.csv", INVOLVEMENT_HEADER,
                              [involvement_row("I-1", "C-1")])
    code = main(["node", "import", "--database", str(tmp_path / "node.sqlite3"),
                 "--children", str(children), "--involvements", str(involvements)])
    out = capsys.readouterr().out
    assert 0 == code
    lines = out.splitlines()
    assert ["", "accepted", "added", "updated", "unchanged", "removed", "rejected"] == ["", *lines[0].split()]
    assert ["children", "1", "1", "0", "0", "0", "1"] == lines[2].split()
    assert ["involvements", "1", "1", "0", "0", "0", "0"] == lines[3].split()
    assert "rejected rows: 1" in out and "time:" in out


def test_progress_bar_shows_percentage_rate_and_eta() -> None:
    """Proves the progress line's content, and that it stays silent when not on a terminal."""
    stream = io.StringIO()
    bar = ProgressBar("importing", stream=stream, width=10)
    line = bar.line(500, 1000, now=bar.started + 1.0)
    assert "importing [#####.....]  50%  500/1,000 rows  500 rows/s  ETA 1 s" == line
    bar.update(1000, 1000)
    assert "" == stream.getvalue()


def test_table_aligns_numbers_right() -> None:
    """Proves the summary table's layout."""
    assert "x      n\n-  -----\na  1,234" == table(("x", "n"), [("a", 1234)])
