"""The governance commands: multi-party signing, verify, rotation and revocation from the CLI."""

from __future__ import annotations

import json
import subprocess
import sys
from datetime import datetime
from pathlib import Path

import pytest

from federation.commands.main import main


def run(capsys: pytest.CaptureFixture[str], *argv: str) -> tuple[int, str]:
    code = main(list(argv))
    captured = capsys.readouterr()
    return code, captured.out + captured.err


def test_draft_needs_the_threshold_before_it_is_published(tmp_path: Path,
                                                          capsys: pytest.CaptureFixture[str]) -> None:
    """add-member --draft, one signature (refused), a second signature, publish, verify."""
    fed = str(tmp_path / "fed")
    assert 0 == run(capsys, "federation", "create", fed, "--name", "t", "--governance-keys", "3",
                    "--threshold", "2")[0]
    assert 0 == run(capsys, "federation", "add-member", fed, "--id", "alpha", "--role", "node", "--draft")[0]
    assert 0 == run(capsys, "federation", "sign", fed, "--key", f"{fed}/governance/governance-2.pem")[0]
    code, text = run(capsys, "federation", "publish", fed)
    assert (2, True) == (code, "1 valid governance signature(s), threshold is 2" in text)
    assert 0 == run(capsys, "federation", "sign", fed, "--key", f"{fed}/governance/governance-3.pem")[0]
    code, text = run(capsys, "federation", "publish", fed)
    assert (0, True) == (code, "Published trust list version 2" in text)
    code, text = run(capsys, "federation", "verify", fed)
    assert (0, True) == (code, "version 2" in text)


def test_rotate_and_revoke_member_keys(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    """rotate-key adds a key with an overlap; revoke-key removes the old one in the next version."""
    fed = tmp_path / "fed"
    assert 0 == run(capsys, "federation", "create", str(fed), "--name", "t")[0]
    assert 0 == run(capsys, "federation", "add-member", str(fed), "--id", "broker", "--role", "broker")[0]
    old_kid = json.loads((fed / "trustlist.json").read_text())["signed"]["members"][0]["keys"][0]["kid"]
    code, _ = run(capsys, "federation", "rotate-key", str(fed), "--id", "broker", "--overlap-hours", "2")
    keys = json.loads((fed / "trustlist.json").read_text())["signed"]["members"][0]["keys"]
    assert (0, 2, old_kid) == (code, len(keys), keys[0]["kid"])
    assert "not_after" in keys[0] and "not_before" in keys[1]
    assert 0 == run(capsys, "federation", "revoke-key", str(fed), "--id", "broker", "--kid", old_kid)[0]
    keys = json.loads((fed / "trustlist.json").read_text())["signed"]["members"][0]["keys"]
    assert [k["kid"] for k in keys] == [keys[0]["kid"]] and old_kid != keys[0]["kid"]


def test_tls_command_creates_the_ca_and_pins_a_member_certificate(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """`federation tls --id X --bind` issues X's certificate and pins its fingerprint."""
    fed = tmp_path / "fed"
    run(capsys, "federation", "create", str(fed), "--name", "t")
    run(capsys, "federation", "add-member", str(fed), "--id", "alpha", "--role", "node")
    code, text = run(capsys, "federation", "tls", str(fed), "--id", "alpha", "--bind")
    member = json.loads((fed / "trustlist.json").read_text())["signed"]["members"][0]
    assert (0, True) == (code, member["tls_fingerprint"] in text)
    assert (fed / "tls" / "ca.pem").exists() and (fed / "tls" / "alpha.key").exists()


def test_rotate_governance_keeps_verifying_against_the_new_root(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """After rotate-governance the published list verifies against the new root.json."""
    fed = tmp_path / "fed"
    run(capsys, "federation", "create", str(fed), "--name", "t", "--governance-keys", "2", "--threshold", "2")
    old_root = (fed / "root.json").read_text()
    assert 0 == run(capsys, "federation", "rotate-governance", str(fed), "--governance-keys", "3",
                    "--threshold", "2")[0]
    assert old_root != (fed / "root.json").read_text()
    (tmp_path / "old-root.json").write_text(old_root)
    assert 0 == run(capsys, "federation", "verify", str(fed))[0]
    assert 0 == run(capsys, "federation", "verify", str(fed), "--root", str(tmp_path / "old-root.json"))[0]


@pytest.mark.parametrize(("case", "command"), [
    ("remove-member", ["remove-member", "--id", "alpha"]),
    ("rotate-key", ["rotate-key", "--id", "alpha"]),
    ("tls --bind", ["tls", "--id", "alpha", "--bind"]),
])
def test_list_changes_keep_the_lifetime_unless_told(tmp_path: Path, capsys: pytest.CaptureFixture[str],
                                                    case: str, command: list[str]) -> None:
    """Proves a list change keeps the current version's lifetime (7 days here, not a default 30),
    and that --valid-days still sets it when given."""
    fed = str(tmp_path / "fed")
    assert 0 == run(capsys, "federation", "create", fed, "--name", "t", "--valid-days", "7")[0]
    assert 0 == run(capsys, "federation", "add-member", fed, "--id", "alpha", "--role", "node")[0]
    assert 0 == run(capsys, "federation", command[0], fed, *command[1:])[0], case
    assert 7 == round(_lifetime_days(Path(fed))), case
    assert 0 == run(capsys, "federation", "add-member", fed, "--id", "beta", "--role", "node",
                    "--valid-days", "3")[0]
    assert 3 == round(_lifetime_days(Path(fed))), case


def _lifetime_days(fed: Path) -> float:
    signed = json.loads((fed / "trustlist.json").read_text())["signed"]
    issued, expires = (datetime.fromisoformat(signed[k].replace("Z", "+00:00"))
                       for k in ("issued", "expires"))
    return (expires - issued).total_seconds() / 86400


def test_show_stops_quietly_when_its_reader_goes_away(tmp_path: Path,
                                                      capsys: pytest.CaptureFixture[str]) -> None:
    """Proves `signpost federation show fed | head -1` ends without a 'Broken pipe' message: the
    reading end is closed before the command writes anything."""
    fed = str(tmp_path / "fed")
    assert 0 == run(capsys, "federation", "create", fed, "--name", "t")[0]
    script = ("import sys; from federation.commands.main import main; "
              f"sys.exit(main(['federation', 'show', {fed!r}]))")
    with subprocess.Popen([sys.executable, "-c", script], stdout=subprocess.PIPE,
                          stderr=subprocess.PIPE) as shown:
        assert shown.stdout is not None and shown.stderr is not None
        shown.stdout.close()
        errors = shown.stderr.read().decode()
        assert ("", 1) == (errors, shown.wait(timeout=60))
