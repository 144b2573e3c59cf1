"""A party's view of the trust list: the pinned root, the highest version accepted, refresh.

This is the I/O shell around ``trust.trustlist.verify``. Every party pins the governance root
at enrolment (``root.json``), remembers the highest trust-list version it has accepted (a small
state file) and refuses anything older, so a replayed old list is useless.

The list comes from a file or, when ``url`` is given, from a URL (the federation's publication
point); a list fetched and accepted is also written to the file, so a restart without the
network still starts from the newest accepted version. ``refresh`` is what the services' refresh
loops call once per interval: a new version (a removed member, a revoked key) is in force from
the moment it returns.
"""

from __future__ import annotations

import asyncio
import json
import logging
import os
import urllib.request
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import aiohttp

from trust.errors import TrustError
from trust.trustlist import GovernanceRoot, TrustList, verify

log = logging.getLogger("signpost.trust")


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

    def __init__(self, root_path: Path, list_path: Path, state_path: Path | None = None,
                 *, url: str | None = None, fetch_timeout: float = 10.0) -> None:
        self.root_path = root_path
        self.list_path = list_path
        self.url = url
        self.fetch_timeout = fetch_timeout
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
        """Read, verify and accept the trust list file; raise ``TrustError`` if it is not good.

        On a first start with a URL and no cached file yet, the list is downloaded once
        (blocking: this runs before the service serves anything) and cached.
        """
        if self.url and not self.list_path.exists():
            document = self._download_blocking(self.url)
            accepted = self.accept(document, now)
            self.list_path.parent.mkdir(parents=True, exist_ok=True)
            _write_atomic(self.list_path, json.dumps(document, indent=2, ensure_ascii=False) + "\n")
            return accepted
        return self.accept(read_json(self.list_path), now)

    def _download_blocking(self, url: str) -> Any:
        if not url.startswith(("https://", "http://")):
            raise TrustError(f"trust_list_url: expected an http(s) URL, got {url!r}")
        try:
            with urllib.request.urlopen(url, timeout=self.fetch_timeout) as response:  # noqa: S310
                return json.loads(response.read())
        except (OSError, ValueError) as exc:
            raise TrustError(f"{url}: cannot fetch the trust list: {exc.__class__.__name__}") from exc

    def accept(self, document: Any, now: datetime | None = None) -> TrustList:
        """Verify ``document`` against the pinned root and the highest version accepted; keep it."""
        moment = now or datetime.now(UTC)
        state = self._state()
        accepted = verify(
            document,
            self._root(),
            moment,
            min_version=int(state.get("version", 0)),
        )
        if accepted.version != state.get("version") or accepted.governance.to_json() != state.get("root"):
            _write_atomic(self.state_path, json.dumps(
                {"version": accepted.version, "root": accepted.governance.to_json()}, indent=2))
        self._current = accepted
        return accepted

    async def fetch(self, url: str, now: datetime | None = None) -> TrustList:
        """Download the list from ``url``, accept it, and cache it in the list file."""
        try:
            async with aiohttp.ClientSession(
                timeout=aiohttp.ClientTimeout(total=self.fetch_timeout)
            ) as session, session.get(url) as response:
                if response.status != 200:
                    raise TrustError(f"{url}: expected HTTP 200, got {response.status}")
                text = await response.text()
            document = json.loads(text)
        except (aiohttp.ClientError, OSError, TimeoutError, ValueError) as exc:
            raise TrustError(f"{url}: cannot fetch the trust list: {exc.__class__.__name__}") from exc
        accepted = self.accept(document, now)
        self.list_path.parent.mkdir(parents=True, exist_ok=True)
        _write_atomic(self.list_path, json.dumps(document, indent=2, ensure_ascii=False) + "\n")
        return accepted

    async def refresh(self, now: datetime | None = None) -> TrustList:
        """One refresh: from the URL when configured, otherwise from the file."""
        if self.url:
            return await self.fetch(self.url, now)
        return self.load(now)

    @property
    def current(self) -> TrustList:
        if self._current is None:
            raise TrustError("trust list not loaded")
        return self._current

    async def refresh_forever(self, interval: float) -> None:
        """Refresh every ``interval`` seconds until cancelled; a refused list keeps the current one.

        A refused list is logged and never installed: the party keeps the list it had, and once
        that expires every search stops (fail closed).
        """
        while True:
            await asyncio.sleep(interval)
            try:
                before = self.current.version
                after = (await self.refresh()).version
                if after != before:
                    log.info("trust list version %d accepted (was %d)", after, before)
            except TrustError as exc:
                log.error("trust list refresh refused: %s", exc)
