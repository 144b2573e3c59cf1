"""`federation.files.write_atomic`: writers sharing a file never break each other."""

from __future__ import annotations

import threading
from pathlib import Path

from federation.files import write_atomic


def test_writers_sharing_a_file_never_lose_each_others_temporary_file(tmp_path: Path) -> None:
    """Proves regression for a broker replica that exited with "No such file or directory:
    root.state.json.tmp": two writers replacing the same file at once (as broker replicas sharing
    a folder save the trust-list state) each finish, the file holds one writer's whole contents,
    and no temporary file is left behind."""
    target = tmp_path / "root.state.json"
    errors: list[BaseException] = []

    def write(text: str) -> None:
        try:
            for _ in range(40):
                write_atomic(target, text * 100)
        except BaseException as exc:  # any failure fails the test below
            errors.append(exc)

    threads = [threading.Thread(target=write, args=(letter,)) for letter in "ab"]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert [] == errors
    assert target.read_text() in ("a" * 100, "b" * 100)
    assert ["root.state.json"] == [p.name for p in tmp_path.iterdir()]
    assert 0o600 == target.stat().st_mode & 0o777
