"""A party's view of the trust list: the pinned root, the highest version accepted, refresh.

This is the I/O shell around ``trust.trustlist.verify``. Every party pins the governance root
at enrolment (``root.json``), remembers the highest trust-list version it has accepted (a small
state file) and refuses anything older, so a replayed old list is useless.
"""

from __future__ import annotations

import json
import os
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from trust.errors import TrustError
from trust.trustlist import GovernanceRoot, TrustList, verify


def read_json(path: Path) -> Any:
    try:
        return json.loads(path.read_text())
    except (OSError, json.JSONDecodeError) as exc:
        raise TrustError(f"{path}: cannot read: {exc}") from exc


def _write_atomic(path: Path, text: str) -> None:
    tmp = path.with_name(path.name + ".tmp")
    with open(tmp, "w") as fh:
        fh.write(text)
        fh.flush()
        os.fsync(fh.fileno())
    os.replace(tmp, path)


class TrustStore:
    """Holds the current verified trust list for one party."""

    def __init__(self, root_path: Path, list_path: Path, state_path: Path | None = None) -> None:
        self.root_path = root_path
        self.list_path = list_path
        self.state_path = state_path or root_path.with_name(root_path.stem + ".state.json")
        self._current: TrustList | None = None

    def _state(self) -> dict[str, Any]:
        if not self.state_path.exists():
            return {}
        data = read_json(self.state_path)
        return data if isinstance(data, dict) else {}

    def _root(self) -> GovernanceRoot:
        state = self._state()
        if "root" in state:
            return GovernanceRoot.from_json(state["root"])
        return GovernanceRoot.from_json(read_json(self.root_path))

    def load(self, now: datetime | None = None) -> TrustList:
        """Read, verify and accept the trust list file; raise ``TrustError`` if it is not good."""
        moment = now or datetime.now(UTC)
        state = self._state()
        accepted = verify(
            read_json(self.list_path),
            self._root(),
            moment,
            min_version=int(state.get("version", 0)),
        )
        if accepted.version != state.get("version") or accepted.governance.to_json() != state.get("root"):
            _write_atomic(self.state_path, json.dumps(
                {"version": accepted.version, "root": accepted.governance.to_json()}, indent=2))
        self._current = accepted
        return accepted

    @property
    def current(self) -> TrustList:
        if self._current is None:
            raise TrustError("trust list not loaded")
        return self._current
