"""The one-command demo: separate processes, real HTTP, the sample searches all as expected."""

from __future__ import annotations

import argparse
import contextlib
import io
import signal
import subprocess
import sys
from pathlib import Path

import pytest

from federation.commands.main import build_parser


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


def test_demo_stopped_by_sigterm_leaves_no_processes(tmp_path: Path) -> None:
    """Regression: a demo stopped with SIGTERM (a service manager, `timeout`) used to leave its
    node and broker processes running; now it stops them before it exits."""
    folder = tmp_path / "demo"
    demo = subprocess.Popen(
        [sys.executable, "-m", "federation.commands.main", "demo", "--children", "200", "--dir", str(folder)],
        stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    try:
        assert demo.stdout is not None
        for line in demo.stdout:
            if "Press Ctrl-C to stop." in line:
                break
        children = [p for p in _processes_mentioning(str(folder)) if p != demo.pid]
        assert 6 == len(children)  # five nodes and the broker
        demo.send_signal(signal.SIGTERM)
        demo.wait(timeout=60)
    finally:
        if demo.poll() is None:
            demo.kill()
            demo.wait()
        assert demo.stdout is not None
        demo.stdout.close()
    assert [] == [p for p in _processes_mentioning(str(folder)) if p != demo.pid]
