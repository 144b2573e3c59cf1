"""The operator guide's "join a federation" walk, run exactly as written, from an empty folder."""

from __future__ import annotations

import contextlib
import json
import os
import re
import signal
import subprocess
import sys
from pathlib import Path

from federation.config import strip_comments
from federation.tools.ports import free_port

GUIDE = Path(__file__).resolve().parent.parent / "docs" / "operator-guide.md"
MARKER = "<!-- walk: join a federation -->"


def walk_block() -> str:
    """The shell block that follows the marker in the operator guide."""
    text = GUIDE.read_text()
    found = re.search(re.escape(MARKER) + r"\s*```sh\n(.*?)```", text, re.DOTALL)
    assert found is not None, "the operator guide has no walk block"
    return found.group(1)


def test_the_join_a_federation_walk_ends_in_a_successful_search(tmp_path: Path) -> None:
    """Proves every command of the guide's walk works as written, in order, from an empty folder
    (only the ports are changed to free ones), and the final search finds the child."""
    script = walk_block()
    script = script.replace("8700", str(free_port())).replace("8701", str(free_port()))
    (tmp_path / "walk.sh").write_text(script)
    env = {**os.environ, "PATH": f"{Path(sys.executable).parent}{os.pathsep}{os.environ.get('PATH', '')}"}
    runner = "set -euo pipefail; trap 'kill $(jobs -p) 2>/dev/null' EXIT; source walk.sh"
    with subprocess.Popen(["bash", "-c", runner], cwd=tmp_path, env=env, stdout=subprocess.PIPE,
                          stderr=subprocess.STDOUT, text=True, start_new_session=True) as walk:
        try:
            output, _ = walk.communicate(timeout=240)
        finally:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(walk.pid, signal.SIGTERM)
    assert 0 == walk.returncode, output[-4000:]
    assert ("complete: yes", "MATCH", "Oakfield Primary School") == tuple(
        w for w in ("complete: yes", "MATCH", "Oakfield Primary School") if w in output)


def test_the_guide_shows_the_configs_init_writes() -> None:
    """Proves the guide's example configs are valid config files (comments and all)."""
    text = GUIDE.read_text()
    blocks = re.findall(r"```jsonc\n(.*?)```", text, re.DOTALL)
    names = [json.loads(strip_comments(b))["id"] for b in blocks]
    assert ["leeds", "broker"] == names
