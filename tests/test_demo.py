"""The one-command demo: separate processes, real HTTP, the sample searches all as expected."""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import io
import json
import os
import re
import signal
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

import pytest
from redis import Redis

from broker.demo_idp import current_code
from federation.commands.main import build_parser, main
from tests.checkfed import StaffClient
from tests.conftest_redis import RedisServer, redis_server

__all__ = ["redis_server"]


def test_demo_once_exits_zero(tmp_path: Path) -> None:
    """`signpost demo --once` builds a federation, starts every process, and all samples pass."""
    result = subprocess.run(
        [sys.executable, "-m", "federation.commands.main", "demo", "--once", "--children", "300",
         "--dir", str(tmp_path / "demo")],
        capture_output=True, text=True, timeout=240, check=False,
    )
    assert 0 == result.returncode, result.stdout[-3000:] + result.stderr[-3000:]
    assert "sample searches answered as expected" in result.stdout


def _commands(parser: argparse.ArgumentParser, prefix: list[str]) -> list[list[str]]:
    found = [prefix]
    for action in parser._actions:
        if isinstance(action, argparse._SubParsersAction):
            for name, child in action.choices.items():
                found += _commands(child, [*prefix, name])
    return found


def test_every_command_has_help() -> None:
    """`--help` works on every command and subcommand the parser knows (none is left out)."""
    commands = _commands(build_parser(), [])
    assert len(commands) > 25
    for command in commands:
        out = io.StringIO()
        with contextlib.redirect_stdout(out), pytest.raises(SystemExit) as done:
            build_parser().parse_args([*command, "--help"])
        assert 0 == done.value.code, command
        assert out.getvalue().startswith("usage: signpost"), command


def _processes_mentioning(text: str) -> list[int]:
    found = []
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            try:
                if text in (entry / "cmdline").read_bytes().decode(errors="replace"):
                    found.append(int(entry.name))
            except OSError:
                continue
    return found


async def _officer_signs_in(staff_url: str, token: str) -> tuple[int, int]:
    officer = StaffClient(staff_url)
    try:
        signed_in = await officer.sign_in(token)
        status, _ = await officer.get("/checks")
    finally:
        await officer.close()
    return signed_in, status


def test_demo_stopped_by_sigterm_leaves_no_processes(tmp_path: Path) -> None:
    """Regression: a demo stopped with SIGTERM (a service manager, `timeout`) used to leave its
    node and broker processes running; now it stops them before it exits. While it serves, it
    prints each authority's staff pages, and the officer token it prints signs in there."""
    folder = tmp_path / "demo"
    demo = subprocess.Popen(
        [sys.executable, "-m", "federation.commands.main", "demo", "--children", "200", "--dir", str(folder)],
        stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    try:
        assert demo.stdout is not None
        printed = []
        for line in demo.stdout:
            printed.append(line.rstrip("\n"))
            if "Press Ctrl-C to stop." in line:
                break
        children = [p for p in _processes_mentioning(str(folder)) if p != demo.pid]
        assert 6 == len(children)  # five nodes and the broker
        staff = [m.group(1) for line in printed
                 if (m := re.match(r"^\s+leeds\s+(http://\S+)/sign-in$", line))]
        after = printed[next(i for i, line in enumerate(printed) if "officer token for leeds" in line):]
        token = next(line for line in after if re.fullmatch(r"[\w-]+\.[\w-]+\.[\w-]+", line))
        assert 1 == len(staff), printed
        assert (303, 200) == asyncio.run(_officer_signs_in(staff[0], token))
        demo.send_signal(signal.SIGTERM)
        demo.wait(timeout=60)
    finally:
        if demo.poll() is None:
            demo.kill()
            demo.wait()
        assert demo.stdout is not None
        demo.stdout.close()
    assert [] == [p for p in _processes_mentioning(str(folder)) if p != demo.pid]


def test_demo_code_json(capsys: pytest.CaptureFixture[str]) -> None:
    """Proves `signpost demo-code --json` prints the current code as JSON a script can read."""
    assert 0 == main(["demo-code", "--json"])
    printed = json.loads(capsys.readouterr().out)
    assert (current_code(time.time()), True) == (printed["code"], 0 < printed["valid_seconds"] <= 30)


def test_demo_independent_with_redis_keeps_the_others_running(tmp_path: Path,
                                                              redis_server: RedisServer) -> None:
    """Proves `signpost demo --independent --redis URL`: the broker uses that Redis (its rate-limit
    keys appear there), and when one node is killed for a fault drill the demo says so and the
    broker keeps serving, with the node reported unavailable."""
    folder = tmp_path / "demo"
    demo = subprocess.Popen(
        [sys.executable, "-m", "federation.commands.main", "demo", "--children", "100", "--dir", str(folder),
         "--independent", "--redis", redis_server.url],
        stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    try:
        assert demo.stdout is not None
        pids: dict[str, int] = {}
        for line in demo.stdout:
            found = re.match(r"\s+(\w+)\s+(\d+)\s+signpost ", line)
            if found:
                pids[found.group(1)] = int(found.group(2))
            if "Press Ctrl-C to stop." in line:
                break
        broker_port = json.loads((folder / "broker" / "broker.json").read_text())["port"]
        assert redis_server.url == json.loads((folder / "broker" / "broker.json").read_text())["redis_url"]
        os.kill(pids["kent"], signal.SIGTERM)
        for line in demo.stdout:
            if "kent exited; the others keep running" in line:
                break
        with urllib.request.urlopen(f"http://127.0.0.1:{broker_port}/healthz", timeout=5) as answer:
            assert 200 == answer.status
        assert None is demo.poll()
        client = Redis.from_url(redis_server.url)
        try:
            keys = [k.decode() for k in client.keys("*")]
        finally:
            client.close()
        assert any(":rl:" in k for k in keys)
        demo.send_signal(signal.SIGTERM)
        demo.wait(timeout=60)
    finally:
        if demo.poll() is None:
            demo.kill()
        if demo.stdout is not None:
            demo.stdout.close()
