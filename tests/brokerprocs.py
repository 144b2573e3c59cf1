"""Real `signpost broker serve` processes for the tests that need more than one broker."""

from __future__ import annotations

import contextlib
import os
import subprocess
import sys
import time
import urllib.request
from collections.abc import Iterator, Sequence
from pathlib import Path

from broker.config import BrokerConfig
from federation import config as configfile

REPO = Path(__file__).resolve().parent.parent


@contextlib.contextmanager
def broker_processes(configs: Sequence[BrokerConfig], folder: Path) -> Iterator[list[str]]:
    """Start one broker process per config (each on its own ``port``), wait until each says it
    is healthy, yield their URLs, and stop them all afterwards (killed if they will not stop)."""
    processes: list[tuple[subprocess.Popen[bytes], Path]] = []
    urls: list[str] = []
    env = {**os.environ, "PYTHONPATH": str(REPO)}
    try:
        for i, config in enumerate(configs):
            path = folder / f"broker-{i}.json"
            configfile.dump(config, path)
            stderr = folder / f"broker-{i}.stderr"
            command = [sys.executable, "-m", "federation.commands.main", "broker", "serve",
                       "--config", str(path)]
            with stderr.open("wb") as sink:
                processes.append((subprocess.Popen(command, cwd=REPO, env=env, stdout=subprocess.DEVNULL,
                                                   stderr=sink), stderr))
            urls.append(f"http://127.0.0.1:{config.port}")
        for url, (process, stderr) in zip(urls, processes, strict=True):
            _wait_healthy(url, process, stderr)
        yield urls
    finally:
        for process, _ in processes:
            process.terminate()
        for process, _ in processes:
            try:
                process.wait(timeout=30)
            except subprocess.TimeoutExpired:  # a busy machine: do not leave it running
                process.kill()
                process.wait(timeout=10)


def _wait_healthy(url: str, process: subprocess.Popen[bytes], stderr: Path, seconds: float = 90) -> None:
    """Wait for the broker's /healthz (generous: the machine may be busy); fail, with what the
    broker said, if it exits."""
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        if process.poll() is not None:
            said = stderr.read_text(errors="replace")[-2000:]
            raise AssertionError(f"broker at {url} exited with {process.returncode}: {said}")
        try:
            with urllib.request.urlopen(f"{url}/healthz", timeout=1) as response:  # noqa: S310
                if response.status == 200:
                    return
        except OSError:
            time.sleep(0.2)
    raise AssertionError(f"broker at {url} did not start within {seconds} s")
