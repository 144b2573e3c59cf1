"""The node as an operator runs it: `signpost node serve` in its own process."""

from __future__ import annotations

import dataclasses
import json
import socket
import subprocess
import sys
from pathlib import Path

from federation import config as configfile
from tests.conftest import build_federation, default_records


def test_a_node_that_cannot_bind_its_port_says_so_and_exits(tmp_path: Path) -> None:
    """Regression: a node whose port was taken used to crash (segmentation fault) while shutting
    down, because the start-up purge was still using the SQLite connection being closed. Now the
    purge has its own connection and shutdown waits for it: the node exits 2 with one line."""
    fed = build_federation(tmp_path / "federation", default_records())
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        config = dataclasses.replace(fed.node_configs["alpha"], port=port)
        path = tmp_path / "node.json"
        configfile.dump(config, path)
        assert port == json.loads(path.read_text())["port"]
        for _ in range(3):  # the crash was a race: try it a few times
            result = subprocess.run(
                [sys.executable, "-X", "faulthandler", "-m", "federation.commands.main", "node", "serve",
                 "--config", str(path)],
                capture_output=True, text=True, timeout=60, check=False)
            assert 2 == result.returncode, result.stderr[-2000:]
            assert "address already in use" in result.stderr
            assert "Fatal Python error" not in result.stderr
