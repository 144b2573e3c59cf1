"""Checks in the audit logs and to the lead practitioner: every step logged on both sides and
paired by `signpost audit reconcile`, the access report and "who has looked" list check steps,
and the lead practitioner's signed message reaches a real webhook receiver."""

from __future__ import annotations

import asyncio
import csv
import io
import json
from collections.abc import AsyncIterator
from datetime import UTC, datetime
from pathlib import Path

import pytest

from federation.tools.ports import free_port
from node.checks import DESK
from node.outbox import NOTIFICATION_TYPE
from tests.checkfed import (
    LEO,
    StaffClient,
    api,
    ask,
    build_check_federation,
    officer_token,
    possible_match,
    staff_url,
)
from tests.conftest import Federation
from tests.test_audit import audit_args, entries, run_cli
from tests.test_notifications import Receiver
from trust import envelope


@pytest.fixture
async def with_receiver(tmp_path: Path) -> AsyncIterator[tuple[Federation, Receiver]]:
    receiver = Receiver(free_port())
    await receiver.start()
    fed = build_check_federation(tmp_path / "federation", receiver.url)
    await fed.start()
    try:
        yield fed, receiver
    finally:
        await fed.close()
        await receiver.stop()


async def confirm(fed: Federation, check_id: str, choice: str, message: str = "") -> StaffClient:
    officer = StaffClient(staff_url(fed, "alpha"))
    assert 303 == await officer.sign_in(officer_token(fed, "alpha"))
    await officer.get(f"/checks/{check_id}")
    decision = {"decision": choice, "message": message}
    status, _, _ = await officer.post(f"/checks/{check_id}/decision", decision)
    assert 303 == status
    return officer


async def test_lead_practitioner_is_told_and_every_step_reconciles(
        with_receiver: tuple[Federation, Receiver], tmp_path: Path,
        capsys: pytest.CaptureFixture[str]) -> None:
    """Proves a confirmed check (after a round of more information) sends the lead practitioner a
    message signed by the node naming who asked, their contact and purpose; the practitioner is
    told the lead was informed; both logs hold every step and reconcile finds no discrepancy; the
    officer's "who has looked" page and `signpost audit access-report` list the check's steps."""
    fed, receiver = with_receiver
    search_id = await possible_match(fed, LEO)
    _, body = await ask(fed, search_id, LEO)
    check_id = body["check"]["check_id"]
    officer = await confirm(fed, check_id, "more_information", "Which school?")
    await officer.close()
    for _ in range(100):
        _, body = await api(fed, "GET", f"/v1/checks/{check_id}")
        if body["check"]["state"] == "more_information":
            break
        await asyncio.sleep(0.05)
    more = {"identity": {"postcode": "LS6 1AA"}}
    status, _ = await api(fed, "POST", f"/v1/checks/{check_id}/information", more)
    assert 200 == status
    officer = await confirm(fed, check_id, "same:L-2")
    await receiver.wait_for(1)
    claims, signer = envelope.verify(receiver.bodies[0], fed.runners["alpha"].app[DESK].trust.current,
                                     role="node", typ=NOTIFICATION_TYPE, now=datetime.now(UTC))
    assert "alpha" == signer.id
    assert ("check-disclosure", "Sam Patel", {"email": "sam.patel@example.gov.uk", "phone": "0113 496 0999"},
            "child_protection_enquiry", check_id) == (
        claims["type"], claims["searcher"]["name"], claims["contact"], claims["purpose"], claims["check_id"])
    _, body = await api(fed, "GET", f"/v1/checks/{check_id}")
    assert ("same_child", True, "match") == (body["check"]["state"], body["check"]["lead_informed"],
                                             body["check"]["disclosure"]["status"])

    status, page = await officer.get("/children/L-2/looked")
    await officer.close()
    assert 200 == status and "check decided by a signposting officer" in page and "check answered" in page

    node_types = [e["type"] for e in await entries(fed, "alpha") if e["type"].startswith("check-")]
    broker_types = [e["type"] for e in await entries(fed, "broker") if e["type"].startswith("check-")]
    steps = {"check-request", "check-information", "check-decision", "check-outcome", "check-view"}
    assert steps <= set(node_types)
    assert {"check-request", "check-information", "check-answer"} <= set(broker_types)
    code, out = await run_cli(audit_args(fed, tmp_path / "state", "audit", "reconcile", "--json"), capsys)
    assert (0, []) == (code, json.loads(out)["discrepancies"])

    report = tmp_path / "report"
    code, printed = await run_cli(audit_args(
        fed, tmp_path / "state", "audit", "access-report", "--node", "alpha", "--record-id", "L-2",
        "--database", str(fed.node_configs["alpha"].database), "--out", str(report)), capsys)
    assert 0 == code, printed
    rows = list(csv.DictReader(io.StringIO((report / "access-alpha-L-2.csv").read_text())))
    steps = [(r["practitioner"], r["outcome"], r["how_matched"]) for r in rows]
    assert {("Sam Patel", "check requested", "check asked (one of the candidates)"),
            ("Olu Officer", "decided same_child", "check decided by a signposting officer"),
            ("Sam Patel", "same_child, disclosed match", "check answered")} <= set(steps), steps

