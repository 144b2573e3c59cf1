"""Audit evidence that cannot be bent: checkpoints signed on an interval and at shutdown, a log
that lost its checkpoint refused at start, and ``audit verify --log`` that reads a folder without
changing a byte, reports a torn tail and unchecked entries, and names an edited entry."""

from __future__ import annotations

import asyncio
import dataclasses
import hashlib
import json
import shutil
import struct
import time
from collections.abc import AsyncIterator
from pathlib import Path

import pytest

from federation.http import runner as app_runner
from node.api import create_app as create_node
from tests.conftest import AMARA, TEST_GRACE, Federation, build_federation, default_records
from tests.test_audit import audit_args, entries, run_cli
from trust.checkpoint import parse_checkpoint
from trust.logapi import AuditUnavailable
from trust.logfiles import read_evidence
from trust.merkle import leaf_hash
from trust.tlog import AuditLog

PURPOSE = "child_protection_enquiry"


@pytest.fixture
async def fast(tmp_path: Path) -> AsyncIterator[Federation]:
    """The three-node federation, alpha signing a checkpoint every 0.1 s when its log grew."""
    fed = build_federation(tmp_path / "federation", default_records())
    fed.node_configs["alpha"] = dataclasses.replace(fed.node_configs["alpha"],
                                                    checkpoint_interval_seconds=0.1)
    await fed.start()
    try:
        yield fed
    finally:
        await fed.close()


def folder_of(fed: Federation, node_id: str) -> Path:
    folder = fed.node_configs[node_id].audit_log
    assert folder is not None
    return folder


def fingerprint(folder: Path) -> dict[str, str]:
    return {p.name: hashlib.sha256(p.read_bytes()).hexdigest() for p in sorted(folder.iterdir())}


async def test_a_grown_log_is_signed_within_the_checkpoint_interval(fast: Federation) -> None:
    """Proves a node signs a checkpoint by itself (no auditor asking) once its log grew: after a
    search, the stored checkpoint comes to cover every entry within a few intervals."""
    assert 200 == (await fast.search({"identity": AMARA, "purpose": PURPOSE}))[0]
    size = len(await entries(fast, "alpha"))
    note = folder_of(fast, "alpha") / "checkpoint"
    deadline = time.monotonic() + 10
    while parse_checkpoint(note.read_text()).size < size and time.monotonic() < deadline:
        await asyncio.sleep(0.05)
    assert size == parse_checkpoint(note.read_text()).size


async def test_shutdown_signs_the_last_entries(federation: Federation) -> None:
    """Proves stopping a node signs a checkpoint over every entry, with the default (10 s) interval."""
    for _ in range(2):
        assert 200 == (await federation.search({"identity": AMARA, "purpose": PURPOSE}))[0]
    await federation.stop("alpha")
    evidence = read_evidence(folder_of(federation, "alpha"))
    assert evidence.note is not None
    assert len(evidence.records) == parse_checkpoint(evidence.note).size


async def test_verify_reads_evidence_without_changing_it_and_reports_tail_and_unchecked(
        federation: Federation, tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    """Proves `audit verify --log` on a copy with entries past its checkpoint and 10 bytes cut off
    the end leaves every file byte for byte, reports the torn tail and the unchecked entries, passes
    without --strict and fails with it."""
    assert 200 == (await federation.search({"identity": AMARA, "purpose": PURPOSE}))[0]
    await federation.stop("alpha")
    copy = tmp_path / "copy"
    shutil.copytree(folder_of(federation, "alpha"), copy)
    with AuditLog.open(copy) as log:  # entries appended and never signed
        signed = log.signed_size
        log.append_many_sync([{"v": 1, "type": "note", "n": i} for i in range(5)])
    with (copy / "entries").open("r+b") as fh:
        fh.truncate((copy / "entries").stat().st_size - 10)
    before = fingerprint(copy)
    code, out = await run_cli(audit_args(federation, tmp_path / "state", "audit", "verify",
                                         "--service", "alpha", "--log", f"alpha={copy}"), capsys)
    assert (0, before) == (code, fingerprint(copy))
    assert f"alpha: ok, {signed} entries" in out
    assert "UNCHECKED: 4 entries after the last signed checkpoint" in out
    assert "TORN TAIL: record" in out
    code, out = await run_cli(audit_args(federation, tmp_path / "state", "audit", "verify", "--strict",
                                         "--service", "alpha", "--log", f"alpha={copy}"), capsys)
    assert (1, before) == (code, fingerprint(copy))


def edit_entry(folder: Path, index: int, old: bytes, new: bytes) -> None:
    """Change entry ``index`` in place and make its check bytes and the leaf index agree (a careful
    forger): only the signed checkpoint and an auditor's saved state can tell."""
    data = bytearray((folder / "entries").read_bytes())
    position = 8
    for _ in range(index):
        (length,) = struct.unpack_from(">I", data, position)
        position += 8 + length
    (length,) = struct.unpack_from(">I", data, position)
    payload = bytes(data[position + 8: position + 8 + length])
    assert old in payload and len(old) == len(new)
    changed = payload.replace(old, new, 1)
    leaf = leaf_hash(changed)
    data[position + 4: position + 8 + length] = leaf[:4] + changed
    (folder / "entries").write_bytes(bytes(data))
    leaves = bytearray((folder / "leaves").read_bytes())
    leaves[index * 32: index * 32 + 32] = leaf
    (folder / "leaves").write_bytes(bytes(leaves))


async def test_an_edited_entry_is_named_by_index_from_the_auditors_state(
        federation: Federation, tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    """Proves an entry edited together with its check bytes and the leaf index is reported as
    `entry-mismatch (entry N)` against the leaf hashes this auditor saved before."""
    for _ in range(2):
        assert 200 == (await federation.search({"identity": AMARA, "purpose": PURPOSE}))[0]
    state = tmp_path / "state"
    code, out = await run_cli(audit_args(federation, state, "audit", "verify", "--service", "alpha"), capsys)
    assert 0 == code, out
    await federation.stop("alpha")
    logged = [json.loads(p) for p, _ in read_evidence(folder_of(federation, "alpha")).records]
    index = next(i for i, e in enumerate(logged) if e.get("type") == "query")
    edit_entry(folder_of(federation, "alpha"), index, b'"type":"query"', b'"type":"QUERY"')
    code, out = await run_cli(audit_args(federation, state, "audit", "verify", "--service", "alpha",
                                         "--log", f"alpha={folder_of(federation, 'alpha')}"), capsys)
    assert 1 == code
    assert f"entry-mismatch (entry {index})" in out


async def test_a_log_without_its_checkpoint_refuses_to_start_unless_a_reset_is_accepted(
        federation: Federation) -> None:
    """Proves deleting a node's checkpoint file does not let it start on a possibly rolled-back
    log; with unsafe_accept_audit_log_reset it starts, and the reset is the log's next entry."""
    assert 200 == (await federation.search({"identity": AMARA, "purpose": PURPOSE}))[0]
    await federation.stop("alpha")
    (folder_of(federation, "alpha") / "checkpoint").unlink()
    runner = app_runner(create_node(federation.node_configs["alpha"]), grace=TEST_GRACE)
    with pytest.raises(AuditUnavailable, match="signed checkpoint is missing"):
        await runner.setup()
    await runner.cleanup()
    federation.node_configs["alpha"] = dataclasses.replace(
        federation.node_configs["alpha"], unsafe_accept_audit_log_reset=True)
    await federation.start_node("alpha")
    logged = await entries(federation, "alpha")
    assert "log-reset" in [e["type"] for e in logged]
