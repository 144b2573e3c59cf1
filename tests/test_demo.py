"""The one-command demo: separate processes, real HTTP, the sample searches all as expected."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path


def test_demo_once_exits_zero(tmp_path: Path) -> None:
    """`signpost demo --once` builds a federation, starts every process, and all samples pass."""
    result = subprocess.run(
        [sys.executable, "-m", "federation.cli", "demo", "--once", "--children", "300",
         "--dir", str(tmp_path / "demo")],
        capture_output=True, text=True, timeout=240, check=False,
    )
    assert 0 == result.returncode, result.stdout[-3000:] + result.stderr[-3000:]
    assert "sample searches answered as expected" in result.stdout


def test_every_command_has_help() -> None:
    """`--help` works on every command and subcommand."""
    commands = [[], ["demo"], ["federation"], ["federation", "create"], ["federation", "add-member"],
                ["federation", "remove-member"], ["federation", "show"], ["token"], ["node"],
                ["node", "serve"], ["node", "import"], ["broker"], ["broker", "serve"], ["search"]]
    for command in commands:
        result = subprocess.run([sys.executable, "-m", "federation.cli", *command, "--help"],
                                capture_output=True, text=True, timeout=60, check=False)
        assert 0 == result.returncode, (command, result.stderr)
        assert "usage: signpost" in result.stdout
