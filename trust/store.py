"""A party's view of the trust list: the pinned root, the highest version accepted, refresh.

This is the I/O shell around ``trust.trustlist.verify``. Every party pins the governance root
at enrolment (``root.json``), remembers the highest trust-list version it has accepted (a small
state file) and refuses anything older, so a replayed old list is useless.

The list comes from a file or, when ``url`` is given, from a URL (the federation's publication
point); a list fetched and accepted is also written to the file, so a restart without the
network still starts from the newest accepted version. ``refresh`` is what the services' refresh
loops call once per interval: a new version (a removed member, a revoked key) is in force from
the moment it returns.

When an offered list names a governance root other than the pinned one, the store first walks
the published roots (``roots/<n>.json`` beside the list file, or under the URL's base) from the
pinned one forwards, verifying each step with ``trust.rootchain`` and persisting the root it
reaches after each step, so a party that missed several root rotations catches up; a missing,
forged or replayed step stops the walk and the list is refused (fail closed).
"""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import json
import logging
from collections.abc import AsyncIterator
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

from federation.canonical import JsonObject
from federation.files import write_atomic
from federation.http import HealthReason
from federation.metrics import Registry
from trust import rootchain
from trust.errors import DownloadError, NotPublishedError, SignatureError, TrustError
from trust.fetcher import Fetcher
from trust.rootchain import TrustedRoot, same_root
from trust.trustlist import GovernanceRoot, TrustList, parse_document, verify

log = logging.getLogger("signpost.trust")

MAX_ROOTS = 1000  # a bound on the published chain, so a misbehaving source cannot loop forever


def read_json(path: Path) -> Any:
    """A trust document from disk through the bounded door (``trustlist.parse_document``)."""
    return _parsed(path, _read(path))


def _read(path: Path) -> bytes:
    try:
        return path.read_bytes()
    except OSError as exc:
        raise TrustError(f"{path}: cannot read: {exc}") from exc


def _parsed(path: Path, raw: bytes) -> Any:
    try:
        return parse_document(raw)
    except TrustError as exc:
        raise TrustError(f"{path}: {exc}") from None


EXPIRY_WARNING = timedelta(days=1)


@dataclass
class RefreshStatus:
    """What the refresh loop last did, for ``/healthz`` and ``/metrics``."""

    attempts: int = 0
    last_success: datetime | None = None
    last_error: str | None = None
    last_error_time: datetime | None = None
    last_error_unreachable: bool = False  # True: the source did not answer; False: it answered wrong

    @property
    def failing(self) -> bool:
        """The last attempt failed (a success since clears it)."""
        return self.last_error_time is not None and (
            self.last_success is None or self.last_error_time > self.last_success)

    def to_wire(self) -> JsonObject:
        def stamp(moment: datetime | None) -> str | None:
            return moment.isoformat(timespec="seconds") if moment else None
        return {"attempts": self.attempts, "last_success": stamp(self.last_success),
                "last_error": self.last_error, "last_error_time": stamp(self.last_error_time),
                "last_error_unreachable": self.last_error_unreachable}


def _bytes_or_empty(path: Path) -> bytes:
    try:
        return path.read_bytes()
    except OSError:
        return b""


def _list_text(document: Any) -> str:
    return json.dumps(document, indent=2, ensure_ascii=False) + "\n"


class TrustStore:
    """Holds the current verified trust list for one party."""

    def __init__(self, root_path: Path, list_path: Path, state_path: Path | None = None,
                 *, url: str | None = None, fetch_timeout: float = 10.0,
                 fetcher: Fetcher | None = None) -> None:
        self.root_path = root_path
        self.list_path = list_path
        self.url = url
        self.fetcher = fetcher or Fetcher(timeout=fetch_timeout)
        self.status = RefreshStatus()
        self.state_path = state_path or root_path.with_name(root_path.stem + ".state.json")
        self._current: TrustList | None = None
        # What the list in force was accepted from (``_inputs``), so that a refresh that finds the
        # same bytes only checks the time instead of parsing and verifying them again.
        self._accepted_from: str | None = None

    def _state(self) -> JsonObject:
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
            write_atomic(self.list_path, _list_text(document), mode=0o644)
            return accepted
        raw = _read(self.list_path)
        unchanged = self._unchanged(raw, now)
        if unchanged is not None:
            return unchanged
        accepted = self.accept(_parsed(self.list_path, raw), now)
        self._accepted_from = self._inputs(raw)
        return accepted

    def _inputs(self, raw: bytes) -> str:
        """A digest of everything accepting the list ``raw`` depends on but the time: its bytes,
        this party's state (the version and root accepted so far) and the pinned root file."""
        digest = hashlib.sha256()
        for part in (raw, *(_bytes_or_empty(p) for p in (self.state_path, self.root_path))):
            digest.update(len(part).to_bytes(8, "big") + part)
        return digest.hexdigest()

    def _unchanged(self, raw: bytes, now: datetime | None) -> TrustList | None:
        """The list in force, when ``raw`` and the state are what it was accepted from: verifying
        them again would give the same list, so only its expiry is checked (``ExpiredError``, as
        ``verify`` would raise). ``None`` when anything differs."""
        current = self._current
        if current is None or self._accepted_from is None or self._inputs(raw) != self._accepted_from:
            return None
        current.check_current(now or datetime.now(UTC))
        return current

    def _download_blocking(self, url: str) -> Any:
        return parse_document(self.fetcher.fetch_blocking(url))

    def _trusted(self) -> TrustedRoot:
        state = self._state()
        index, since = state.get("root_index"), state.get("root_since", 0)
        return TrustedRoot(self._root(), index if isinstance(index, int) and index > 0 else None,
                           since if isinstance(since, int) and since > 0 else 0)

    def _save_root(self, trusted: TrustedRoot) -> None:
        state = self._state()
        state.update(root=trusted.root.to_json(), root_index=trusted.index, root_since=trusted.since_version)
        write_atomic(self.state_path, json.dumps(state, indent=2))

    def roots_location(self) -> str:
        """Where the published roots are read from: ``roots/`` beside the list, or under the URL."""
        if self.url:
            return self.url.rsplit("/", 1)[0] + "/" + rootchain.ROOTS_FOLDER + "/"
        return str(self.list_path.parent / rootchain.ROOTS_FOLDER) + "/"

    def _published_root(self, index: int) -> Any | None:
        """Published root ``index`` from the list's source, or None when it is not published."""
        name = rootchain.root_file(index)
        if self.url:
            url = self.url.rsplit("/", 1)[0] + "/" + name
            try:
                return parse_document(self.fetcher.fetch_blocking(url))
            except NotPublishedError:
                return None
        path = self.list_path.parent / name
        return read_json(path) if path.exists() else None

    def _locate(self, trusted: TrustedRoot, moment: datetime) -> TrustedRoot | None:
        """Find the pinned root's place in the published chain (the last root equal to it)."""
        found: TrustedRoot | None = None
        for index in range(1, MAX_ROOTS + 1):
            document = self._published_root(index)
            if document is None:
                break
            named = rootchain.offered_root(document)
            if named is not None and same_root(named, trusted.root):
                found = rootchain.verify_anchor(document, trusted, index, moment)
        return found

    def catch_up(self, document: Any, now: datetime | None = None) -> TrustedRoot:
        """Walk the published roots towards the root ``document`` names; return the root reached.

        Nothing is read when the document names the pinned root (or none at all). Each step is
        verified with the root trusted before it (``rootchain.verify_step``) and persisted at
        once; the walk stops at the document's root or at the first root not published.
        """
        moment = now or datetime.now(UTC)
        trusted = self._trusted()
        target = rootchain.offered_root(document)
        if target is None or same_root(target, trusted.root):
            return trusted
        if trusted.index is None:
            located = self._locate(trusted, moment)
            if located is None:
                return trusted
            trusted = located
            self._save_root(trusted)
        floor = int(self._state().get("version", 0))
        while trusted.index is not None and trusted.index < MAX_ROOTS:
            step = self._published_root(trusted.index + 1)
            if step is None:
                break
            trusted = rootchain.verify_step(step, trusted, floor, moment)
            self._save_root(trusted)
            log.info("governance root %d now trusted (published root chain)", trusted.index)
            if same_root(trusted.root, target):
                break
        return trusted

    def accept(self, document: Any, now: datetime | None = None) -> TrustList:
        """Verify ``document`` against the pinned root and the highest version accepted; keep it.

        A document naming another governance root is verified against the root reached by
        walking the published roots first (``catch_up``).
        """
        return self._accept(document, now, self.catch_up(document, now))

    def _accept(self, document: Any, now: datetime | None, trusted: TrustedRoot) -> TrustList:
        moment = now or datetime.now(UTC)
        state = self._state()
        try:
            accepted = verify(document, trusted.root, moment, min_version=int(state.get("version", 0)))
        except SignatureError as exc:
            target = rootchain.offered_root(document)
            if target is not None and not same_root(target, trusted.root) and trusted.index is not None:
                version = document["signed"].get("version")
                raise rootchain.unreachable(version, trusted, self.roots_location()) from exc
            raise
        updated = dict(state, version=accepted.version, root=accepted.governance.to_json())
        if not same_root(accepted.governance, trusted.root):
            # One rotation followed directly (signed by old and new): its place in the published
            # chain is found again by the next walk.
            updated.update(root_index=None, root_since=accepted.version)
        if updated != state:
            write_atomic(self.state_path, json.dumps(updated, indent=2))
        self._current, self._accepted_from = accepted, None  # the caller records its inputs
        return accepted

    async def fetch(self, url: str, now: datetime | None = None) -> TrustList:
        """Download the list from ``url``, accept it, and cache it in the list file."""
        raw = await self.fetcher.fetch(url)
        unchanged = self._unchanged(raw, now)
        if unchanged is not None:
            return unchanged
        document = parse_document(raw)
        trusted = self._trusted()
        target = rootchain.offered_root(document)
        if target is not None and not same_root(target, trusted.root):
            trusted = await asyncio.to_thread(self.catch_up, document, now)  # blocking fetches
        accepted = self._accept(document, now, trusted)
        self.list_path.parent.mkdir(parents=True, exist_ok=True)
        write_atomic(self.list_path, _list_text(document), mode=0o644)
        self._accepted_from = self._inputs(raw)
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

        Nothing but cancellation ends the loop: a refused list, an unreachable source, and any
        error no one foresaw are logged and recorded in ``status`` (shown on ``/healthz``), and
        the next interval tries again. A refused list is never installed: the party keeps the
        list it had, and once that expires every search stops (fail closed).
        """
        while True:
            await asyncio.sleep(interval)
            await self.refresh_once()

    async def refresh_once(self) -> None:
        """One attempt of the refresh loop, recorded in ``status``; never raises (but cancellation)."""
        self.status.attempts += 1
        try:
            before = self.current.version
            after = (await self.refresh()).version
        except DownloadError as exc:
            self._failed(f"did not answer: {exc}", unreachable=True)
        except TrustError as exc:
            self._failed(f"refused: {exc}", unreachable=False)
        except Exception as exc:  # the loop must outlive anything one document can cause
            log.exception("trust list refresh failed unexpectedly")
            self._failed(f"failed: {exc.__class__.__name__}", unreachable=False)
        else:
            self.status.last_success = datetime.now(UTC)
            if after != before:
                log.info("trust list version %d accepted (was %d)", after, before)

    def _failed(self, message: str, *, unreachable: bool) -> None:
        log.error("trust list refresh %s", message)
        self.status.last_error = message[:500]
        self.status.last_error_time = datetime.now(UTC)
        self.status.last_error_unreachable = unreachable

    @contextlib.asynccontextmanager
    async def refreshing(self, interval: float) -> AsyncIterator[None]:
        """Run ``refresh_forever`` for the life of the block; cancel it and wait for it on exit."""
        task = asyncio.create_task(self.refresh_forever(interval), name="trust-refresh")
        try:
            yield
        finally:
            task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await task

    def report_metrics(self, registry: Registry) -> None:
        """Serve the refresh's state on ``/metrics`` beside ``/healthz``: attempts, the time of the
        last success and of the last error (labelled ``did-not-answer`` or ``answered-wrong``),
        whether it is failing now, and the version in force and when it expires."""
        status = self.status

        def stamp(moment: datetime | None, *labels: str) -> list[tuple[tuple[str, ...], float]]:
            return [(labels, moment.timestamp())] if moment is not None else []

        def version() -> list[tuple[tuple[str, ...], float]]:
            return [((), float(self._current.version))] if self._current is not None else []

        def expiry() -> list[tuple[tuple[str, ...], float]]:
            return [((), self._current.expires.timestamp())] if self._current is not None else []

        registry.watch("signpost_trust_refresh_attempts_total", "Trust-list refresh attempts.",
                       lambda: [((), float(status.attempts))], kind="counter")
        registry.watch("signpost_trust_refresh_last_success_timestamp_seconds",
                       "When a trust-list refresh last succeeded (Unix time; absent before the first).",
                       lambda: stamp(status.last_success))
        registry.watch("signpost_trust_refresh_last_error_timestamp_seconds",
                       "When a trust-list refresh last failed (Unix time), and how: the source did not "
                       "answer, or it answered with a list that was refused.",
                       lambda: stamp(status.last_error_time, "did-not-answer" if status.last_error_unreachable
                                     else "answered-wrong"), labels=("kind",))
        registry.watch("signpost_trust_refresh_failing",
                       "1 while the last trust-list refresh failed (a success since clears it), else 0.",
                       lambda: [((), 1.0 if status.failing else 0.0)])
        registry.watch("signpost_trust_list_version", "The trust-list version in force.", version)
        registry.watch("signpost_trust_list_expiry_timestamp_seconds",
                       "When the trust list in force expires (Unix time).", expiry)

    def health_reasons(self, now: datetime | None = None) -> list[HealthReason]:
        """Why this party's trust is not healthy: list expired or expiring within a day, refresh failing."""
        moment = now or datetime.now(UTC)
        reasons: list[HealthReason] = []
        if self._current is not None:
            expires = self._current.expires
            if moment > expires:
                reasons.append(HealthReason("trust-list-expired", f"trust list version "
                                            f"{self._current.version} expired at {expires.isoformat()}"))
            elif expires - moment < EXPIRY_WARNING:
                reasons.append(HealthReason("trust-list-expiring", f"trust list version "
                                            f"{self._current.version} expires at {expires.isoformat()}"))
        if self.status.failing:
            reasons.append(HealthReason("trust-refresh-failing", self.status.last_error or "refresh failed"))
        return reasons
