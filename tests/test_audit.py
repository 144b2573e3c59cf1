"""The audit logs in a running federation: what the broker and nodes log, who may read it, that a
service which cannot log does not answer, and what ``signpost audit`` finds (verify, reconcile,
access report) -- over HTTP from real servers and from log folders on disk."""

from __future__ import annotations

import asyncio
import csv
import dataclasses
import io
import json
import uuid
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import aiohttp
import pytest

from broker import audit as broker_audit
from broker.api import BROKER
from federation import config as configfile
from federation.commands.main import main
from node.api import NODE
from node.store import Store
from tests.conftest import AMARA, AMARA_NHS, JORDAN, LEO_NHS, Federation, years_ago
from trust import envelope
from trust import keys as keyfiles
from trust.tlog import AuditLog

PURPOSE = "child_protection_enquiry"
ROUTES = ("/v1/log/checkpoint", "/v1/log/entries", "/v1/log/proof/inclusion?index=0",
          "/v1/log/proof/consistency?from=1")
LEO = {"nhs_number": LEO_NHS, "date_of_birth": years_ago(5, 6, 1)}


def audit_args(federation: Federation, state: Path, *extra: str) -> list[str]:
    return [*extra, "--federation", str(federation.folder), "--state", str(state),
            "--token", federation.token(role="auditor")]


async def run_cli(argv: list[str], capsys: pytest.CaptureFixture[str]) -> tuple[int, str]:
    """Run ``signpost`` in a thread (it runs its own event loop) and return its exit code and output."""
    capsys.readouterr()
    code = await asyncio.to_thread(main, argv)
    return code, capsys.readouterr().out


async def get(url: str, token: str | None) -> tuple[int, str]:
    headers = {"Authorization": f"Bearer {token}"} if token is not None else {}
    async with aiohttp.ClientSession() as session, session.get(url, headers=headers) as response:
        return response.status, await response.text()


async def entries(federation: Federation, service: str) -> list[dict[str, Any]]:
    """Every entry of a running service's log, read through its auditor API."""
    base = federation.broker_url if service == "broker" else federation.node_url(service)
    status, text = await get(base + "/v1/log/entries?start=0", federation.token(role="auditor"))
    assert 200 == status, text
    return [json.loads(e) for e in json.loads(text)["entries"]]


def broker_signed_query(federation: Federation, identity: dict[str, Any], *, lifetime: int = 60) -> str:
    """A query signed with the broker's real key, as if the broker had sent it."""
    key = keyfiles.load_private(federation.folder / "keys" / "broker.pem")
    now = int(datetime.now(UTC).timestamp())
    claims = {"v": 1, "iss": "broker", "aud": "test-federation", "iat": now, "exp": now + lifetime,
              "jti": str(uuid.uuid4()), "purpose": PURPOSE, "identity": identity, "on_behalf_of": None,
              "practitioner": {"iss": "alpha-idp", "sub": "rogue@alpha", "name": "Rogue", "org": "alpha",
                               "role": "practitioner", "authority": "alpha", "amr": ["pwd", "otp"]}}
    return envelope.sign(claims, key, envelope.QUERY_TYPE)


async def post_query(federation: Federation, node_id: str, token: str) -> tuple[int, dict[str, Any]]:
    async with aiohttp.ClientSession() as session, session.post(
        federation.node_url(node_id) + "/v1/query", json={"v": 1, "query": token}
    ) as response:
        return response.status, await response.json(content_type=None)


async def test_search_is_logged_without_the_identity(federation: Federation) -> None:
    """Proves the broker logs a search entry (practitioner, purpose, nodes asked, a keyed commitment to
    the identity -- never the identity) and an outcome per node with answer hashes; each node logs
    the query hash, outcome, the matched record's pseudonym (never its record id) and answer hash,
    and these agree with each other."""
    status, answer = await federation.search({"identity": {**AMARA, "nhs_number": AMARA_NHS},
                                              "purpose": PURPOSE})
    assert 200 == status
    broker_log = await entries(federation, "broker")
    assert ["search", "outcome"] == [e["type"] for e in broker_log]
    search, outcome = broker_log
    assert answer["query_id"] == search["query_id"] == outcome["query_id"]
    assert ["alpha", "beta", "gamma"] == search["nodes"]
    assert {"sub": "practitioner@alpha", "org": "alpha children's services", "role": "practitioner",
            "iss": "alpha-idp"}.items() <= search["practitioner"].items()
    assert PURPOSE == search["purpose"]
    raw = json.dumps(broker_log)
    assert all(secret not in raw for secret in (AMARA_NHS, "Okafor", "Amara", AMARA["date_of_birth"]))
    commitment = search["identity_commitment"]
    assert "HMAC-SHA256" == commitment["alg"]
    key = federation.runners["broker"].app[BROKER].commitment_key
    from federation.identity import parse_identity
    wire = parse_identity({**AMARA, "nhs_number": AMARA_NHS}).to_wire()
    assert broker_audit.opens(key, commitment, wire)
    assert not broker_audit.opens(b"\0" * 32, commitment, wire)
    assert {"alpha": "match", "beta": "match", "gamma": "no_match"} == {
        k: v["status"] for k, v in outcome["results"].items()}

    alpha = [e for e in await entries(federation, "alpha") if e["type"] == "query"]
    assert 1 == len(alpha)
    entry = alpha[0]
    store = Store(federation.node_configs["alpha"].database)
    child = store.child("A-1")
    store.close()
    assert child is not None
    assert (search["query_hash"], "match", child.pseudonym, outcome["results"]["alpha"]["answer_hash"]) == (
        entry["query_hash"], entry["outcome"], entry["pseudonym"], entry["answer_hash"])
    assert "A-1" not in json.dumps(alpha) and AMARA_NHS not in json.dumps(alpha)
    gamma = [e for e in await entries(federation, "gamma") if e["type"] == "query"]
    assert (None, "no_match") == (gamma[0]["pseudonym"], gamma[0]["outcome"])


AUDITOR_ONLY = {
    "no token": (None, 401),
    "not a token": ("garbage", 401),
    "practitioner": ("practitioner", 403),
    "mediator": ("mediator", 403),
    "operator": ("operator", 403),
    "auditor": ("auditor", 200),
}


@pytest.mark.parametrize("case", AUDITOR_ONLY)
async def test_log_routes_answer_auditors_only(federation: Federation, case: str) -> None:
    """Proves every /v1/log route of the broker and of a node refuses anyone but an auditor."""
    who, expected = AUDITOR_ONLY[case]
    await federation.search({"identity": AMARA, "purpose": PURPOSE})
    token = who if who in (None, "garbage") else federation.token(role=who)
    found = {}
    for base in (federation.broker_url, federation.node_url("beta")):
        for route in ROUTES:
            status, _ = await get(base + route, token)
            found[base + route] = status
    assert {k: expected for k in found} == found


async def test_checkpoint_and_proofs_over_http(federation: Federation) -> None:
    """Proves the checkpoint is a C2SP note signed by the node's trust-list key under origin
    signpost.<federation>/<id>, and the served proofs verify against it; /healthz shows the size."""
    import base64

    from trust.checkpoint import verify_checkpoint
    from trust.merkle import leaf_hash, verify_consistency, verify_inclusion

    for _ in range(3):
        await federation.search({"identity": AMARA, "purpose": PURPOSE})
    token = federation.token(role="auditor")
    base = federation.node_url("alpha")
    status, note = await get(base + "/v1/log/checkpoint", token)
    assert 200 == status
    member = federation.runners["alpha"].app[NODE].trust.current.member("alpha")
    checkpoint = verify_checkpoint(note, "alpha", member.keys[0].public_key)  # type: ignore[arg-type]
    assert "signpost.test-federation/alpha" == checkpoint.origin
    logged = await entries(federation, "alpha")
    assert checkpoint.size == len(logged)
    _, text = await get(base + f"/v1/log/proof/inclusion?index=1&size={checkpoint.size}", token)
    proof = [base64.b64decode(p) for p in json.loads(text)["proof"]]
    _, raw = await get(base + "/v1/log/entries?start=1&end=2", token)
    verify_inclusion(leaf_hash(json.loads(raw)["entries"][0].encode()), 1, checkpoint.size, proof,
                     checkpoint.root)
    _, text = await get(base + f"/v1/log/proof/consistency?from=1&to={checkpoint.size}", token)
    _, first = await get(base + "/v1/log/entries?start=0&end=1", token)
    verify_consistency(1, checkpoint.size, [base64.b64decode(p) for p in json.loads(text)["proof"]],
                       leaf_hash(json.loads(first)["entries"][0].encode()), checkpoint.root)
    status, health = await get(base + "/healthz", None)
    assert checkpoint.size == json.loads(health)["log_size"]
    assert json.loads(health)["checkpoint_time"] is not None
    status, _ = await get(base + "/v1/log/entries?start=5&end=2", token)
    assert 400 == status


async def test_verify_and_reconcile_report_a_clean_federation(
        federation: Federation, tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    """Proves that after real searches (matches, no matches, a shielded child) `signpost audit
    verify` and `reconcile` over HTTP find nothing wrong, twice in a row (the second run checks
    consistency with the checkpoints and leaf hashes kept by the first)."""
    for identity in (AMARA, LEO, JORDAN, {"given_name": "Nobody", "family_name": "Known", "sex": "F",
                                          "date_of_birth": years_ago(9)}):
        status, _ = await federation.search({"identity": identity, "purpose": PURPOSE})
        assert 200 == status
    state = tmp_path / "state"
    for searches in (4, 5):
        code, out = await run_cli(audit_args(federation, state, "audit", "verify"), capsys)
        assert 0 == code, out
        assert 4 == out.count(": ok,")
        code, out = await run_cli(audit_args(federation, state, "audit", "reconcile"), capsys)
        assert 0 == code, out
        assert f"reconciled {searches} broker searches" in out and "no discrepancies" in out
        await federation.search({"identity": AMARA, "purpose": PURPOSE})
    assert {"alpha", "beta", "gamma", "broker"} == {p.name for p in state.iterdir()}


async def test_reconcile_reports_a_query_that_bypassed_the_broker(
        federation: Federation, tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    """Proves a query signed with the broker's key but posted straight to a node (so the broker never
    logged it) is answered by the node, and reconcile reports it with the node's entry index."""
    await federation.search({"identity": AMARA, "purpose": PURPOSE})
    token = broker_signed_query(federation, {**AMARA})
    status, _ = await post_query(federation, "beta", token)
    assert 200 == status
    beta = await entries(federation, "beta")
    index = next(i for i, e in enumerate(beta) if e.get("query_hash") == envelope.envelope_hash(token))
    code, out = await run_cli(audit_args(federation, tmp_path / "state", "audit", "reconcile", "--json"),
                              capsys)
    assert 1 == code
    found = json.loads(out)["discrepancies"]
    assert [("node-query-without-broker-search", "beta", index, None)] == [
        (d["kind"], d["node"], d["node_index"], d["broker_index"]) for d in found]


async def test_answers_after_the_deadline_are_logged_abandoned_and_reconciled_as_late(
        federation: Federation, tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    """Proves regression for the soak's unexplained discrepancies: when the broker's deadline passes
    before the nodes answer (an overloaded machine), its outcome entry logs each node unanswered
    and ``abandoned``; the nodes still log their answers; reconcile counts those as late answers
    per node and reports no discrepancy."""
    status, answer = await federation.search({"identity": AMARA, "purpose": PURPOSE})
    assert (200, True) == (status, answer["complete"])  # every node's channel is open now
    broker = federation.runners["broker"].app[BROKER]
    broker.config = dataclasses.replace(broker.config, node_deadline_seconds=0.001)
    status, answer = await federation.search({"identity": AMARA, "purpose": PURPOSE})
    assert (200, False) == (status, answer["complete"])
    outcome = (await entries(federation, "broker"))[-1]
    assert ("outcome", answer["query_id"]) == (outcome["type"], outcome["query_id"])
    assert {node: ("unanswered", True) for node in ("alpha", "beta", "gamma")} == {
        node: (r["status"], r.get("abandoned")) for node, r in outcome["results"].items()}
    for _ in range(200):  # the nodes answer after the broker stopped waiting: wait for their entries
        logged = {node: [e for e in await entries(federation, node)
                         if e.get("query_id") == answer["query_id"]] for node in ("alpha", "beta", "gamma")}
        if all(logged.values()):
            break
        await asyncio.sleep(0.05)
    assert all(e[0]["answer_hash"] for e in logged.values()), logged
    code, out = await run_cli(audit_args(federation, tmp_path / "state", "audit", "reconcile", "--json"),
                              capsys)
    report = json.loads(out)
    assert (0, [], {"alpha": 1, "beta": 1, "gamma": 1}) == (code, report["discrepancies"],
                                                            report["late_answers"])


async def test_a_node_that_cannot_log_does_not_answer(federation: Federation) -> None:
    """Proves a node whose audit log fails answers 503 with no answer in the body, and the broker
    reports that authority unavailable (logged as unanswered); the other nodes still answer."""
    node = federation.runners["alpha"].app[NODE]
    assert node.audit.log is not None
    node.audit.log.close()
    status, body = await post_query(federation, "alpha", broker_signed_query(federation, {**AMARA}))
    assert 503 == status
    assert "answer" not in body and "audit-unavailable" in body["type"]
    status, answer = await federation.search({"identity": AMARA, "purpose": PURPOSE})
    assert 200 == status
    assert {"alpha": "unavailable", "beta": "match", "gamma": "no_match"} == {
        r["authority"]["id"]: r["status"] for r in answer["results"]}
    outcome = (await entries(federation, "broker"))[-1]
    assert {"status": "unanswered",
            "reason": "node refused the query (HTTP 503)"} == outcome["results"]["alpha"]


async def test_a_broker_that_cannot_log_does_not_search(federation: Federation) -> None:
    """Proves a broker whose audit log fails answers 503 and sends no query to any node."""
    before = {n: len(await entries(federation, n)) for n in ("alpha", "beta", "gamma")}
    broker = federation.runners["broker"].app[BROKER]
    assert broker.audit.log is not None
    broker.audit.log.close()
    status, body = await federation.search({"identity": AMARA, "purpose": PURPOSE})
    assert 503 == status
    assert "audit-unavailable" in body["type"] and "results" not in body
    assert before == {n: len(await entries(federation, n)) for n in ("alpha", "beta", "gamma")}


async def test_refused_queries_are_logged_with_the_reason(federation: Federation) -> None:
    """Proves a replayed query and a query with a broken signature are logged by the node as refused,
    with the reason, and the replay is tied to the original query id."""
    token = broker_signed_query(federation, {**AMARA})
    assert 200 == (await post_query(federation, "gamma", token))[0]
    assert 409 == (await post_query(federation, "gamma", token))[0]
    header, payload, signature = token.split(".")
    forged = ".".join([header, payload, signature[:-4] + ("AAAA" if signature[-4:] != "AAAA" else "BBBB")])
    assert 401 == (await post_query(federation, "gamma", forged))[0]
    logged = [e for e in await entries(federation, "gamma") if e["type"] in ("query", "refused")]
    claims = json.loads(keyfiles.b64url_decode(payload))
    assert [("query", "no_match", None), ("query", "refused", "replayed-query"),
            ("refused", None, "untrusted-query")] == [
        (e["type"], e.get("outcome"), e.get("reason") if e["type"] == "query" else e["kind"]) for e in logged]
    assert claims["jti"] == logged[1]["query_id"] == logged[2]["claimed_query_id"]


async def test_access_report_lists_who_searched_for_one_child(
        federation: Federation, tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    """Proves the access report for one record holds exactly the searches that matched it -- who,
    organisation, role, purpose, mediation -- as CSV and as an HTML page, and none for others."""
    await federation.search({"identity": AMARA, "purpose": PURPOSE})
    await federation.search({"identity": LEO, "purpose": PURPOSE})
    mediated = {"name": "Dr Ann <Lee>", "organisation": "Leeds GP", "role": "GP", "phone": "0113 000 0000"}
    status, _ = await federation.search({"identity": AMARA, "purpose": PURPOSE, "on_behalf_of": mediated},
                                        token=federation.token(role="mediator", authority="beta"))
    assert 200 == status
    out = tmp_path / "report"
    code, printed = await run_cli(audit_args(
        federation, tmp_path / "state", "audit", "access-report", "--node", "alpha", "--record-id", "A-1",
        "--database", str(federation.node_configs["alpha"].database), "--out", str(out)), capsys)
    assert 0 == code, printed
    rows = list(csv.DictReader(io.StringIO((out / "access-alpha-A-1.csv").read_text())))
    assert [("practitioner@alpha", "alpha children's services", "practitioner", PURPOSE, "", "match"),
            ("mediator@beta", "beta children's services", "mediator", PURPOSE,
             "Dr Ann <Lee>, Leeds GP, GP, 0113 000 0000", "match")] == [
        (r["practitioner_id"], r["organisation"], r["role"], r["purpose"], r["on_behalf_of"], r["outcome"])
        for r in rows]
    page = (out / "access-alpha-A-1.html").read_text()
    assert "Searches that reached record A-1" in page and "Dr Ann &lt;Lee&gt;" in page
    assert "<Lee>" not in page
    code, printed = await run_cli(audit_args(
        federation, tmp_path / "state", "audit", "access-report", "--node", "alpha", "--record-id", "A-2",
        "--database", str(federation.node_configs["alpha"].database), "--out", str(out)), capsys)
    assert 0 == code
    assert 1 == len(list(csv.DictReader(io.StringIO((out / "access-alpha-A-2.csv").read_text()))))


async def test_imports_and_purges_are_logged_even_while_the_node_runs(
        federation: Federation, tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    """Proves an import (node stopped: written at once) and a purge (node running: queued, then
    logged by the node) both reach the node's audit log, as counts only."""
    config = federation.node_configs["beta"]
    path = tmp_path / "node.json"
    configfile.dump(config, path)
    await federation.stop("beta")
    home = config.database.parent
    code, out = await run_cli(["node", "import", "--config", str(path), "--children",
                               str(home / "children.csv"), "--involvements", str(home / "involvements.csv")],
                              capsys)
    assert 0 == code and "import summary: audit log entry" in out
    await federation.start_node("beta")
    code, out = await run_cli(["node", "purge", "--config", str(path)], capsys)
    assert 0 == code and "queued for the node's audit log" in out
    for _ in range(50):  # the node logs what was queued within PENDING_INTERVAL_SECONDS
        logged = await entries(federation, "beta")
        since = [e["type"] for e in logged][[e["type"] for e in logged].index("import"):]
        if since.count("purge") == 2:
            break
        await asyncio.sleep(0.1)
    assert ["import", "purge", "purge"] == since  # the node's own purge at start, then the command's
    imported = next(e for e in logged if e["type"] == "import")
    assert {"added": 0, "updated": 0, "unchanged": 1, "removed": 0} == imported["children"]


async def test_disk_verify_names_a_changed_entry_and_a_fork(
        federation: Federation, tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    """Proves `audit verify --log` over a stopped node's folder names the entry whose byte was
    changed, and that a checkpoint of the same size as one seen before but another root (a log
    rewritten and re-signed with the node's own key) is reported as a fork."""
    for _ in range(3):
        await federation.search({"identity": AMARA, "purpose": PURPOSE})
    state = tmp_path / "state"
    code, out = await run_cli(audit_args(federation, state, "audit", "verify", "--service", "alpha"), capsys)
    assert 0 == code, out
    await federation.stop("alpha")
    folder = federation.node_configs["alpha"].audit_log
    assert folder is not None
    # The operator rewrites history: same number of entries, one changed, re-signed with the node key.
    forged = tmp_path / "forged"
    with AuditLog.open(folder) as original:
        size, logged = original.size, original.entries(0, original.size)
    with AuditLog.open(forged) as rewritten:
        changed = [e.replace(b'"match"', b'"no_match"') if i == 1 else e for i, e in enumerate(logged)]
        assert changed != logged
        rewritten.append_many_sync(changed)
        rewritten.checkpoint("signpost.test-federation/alpha", "alpha",
                             keyfiles.load_private(federation.folder / "keys" / "alpha.pem"))
    assert 4 == size  # the purge at start and 3 queries
    code, out = await run_cli(audit_args(federation, state, "audit", "verify", "--service", "alpha",
                                         "--log", f"alpha={forged}"), capsys)
    assert 1 == code
    assert "fork" in out and "entry 1" in out

    # A byte flipped in the stored log itself.
    data = bytearray((folder / "entries").read_bytes())
    data[8 + 8 + 10] ^= 0x01
    (folder / "entries").write_bytes(bytes(data))
    code, out = await run_cli(audit_args(federation, state, "audit", "verify", "--service", "alpha",
                                         "--log", f"alpha={folder}"), capsys)
    assert 1 == code
    assert "entry 0" in out
