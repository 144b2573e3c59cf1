"""The audit log's HTTP side, shared by the broker and every node.

Each service keeps one ``trust.tlog.AuditLog``. ``LogService`` owns it for the life of the app:
it appends (raising ``AuditUnavailable`` when it cannot, so the caller refuses to answer), signs
checkpoints with the service's own Ed25519 key (origin ``signpost.<federation>/<member id>``,
key name = member id), and serves auditors four read-only routes:

- ``GET /v1/log/checkpoint`` -- a fresh checkpoint over every acknowledged entry (C2SP signed note)
- ``GET /v1/log/entries?start=&end=`` -- at most ``MAX_PAGE`` entries, each the exact logged text
- ``GET /v1/log/proof/inclusion?index=&size=`` -- RFC 9162 inclusion proof
- ``GET /v1/log/proof/consistency?from=&to=`` -- RFC 9162 consistency proof

Every route needs a practitioner token with role ``auditor`` from an issuer in the trust list,
for the audience ``audience`` (the broker's audience by default on broker and nodes, so one
auditor token opens every log of the federation). ``/healthz`` carries only ``log_size`` and
``checkpoint_time``.
"""

from __future__ import annotations

import asyncio
import base64
import contextlib
import logging
import os
from collections.abc import AsyncIterator, Callable, Mapping
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from aiohttp import web
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

from federation.canonical import JsonObject
from federation.errors import SignpostError
from federation.http import HealthReason, json_response, problem
from trust import tokens
from trust.errors import TrustError
from trust.merkle import LogError
from trust.tlog import AuditLog
from trust.trustlist import TrustList

log = logging.getLogger("signpost.audit")

CHECKPOINT_INTERVAL_SECONDS = 10.0
"""Default: sign a checkpoint this often when the log grew (and always on shutdown)."""

MAX_PAGE = 1000
"""Most entries one ``/v1/log/entries`` request returns."""

AUDITOR_ROLE = "auditor"


class AuditUnavailable(SignpostError):
    """The audit log cannot take the entry, so the service must not answer."""


def origin_for(federation: str, member_id: str) -> str:
    """The checkpoint origin line of one member's log."""
    return f"signpost.{federation}/{member_id}"


def b64(data: bytes) -> str:
    return base64.b64encode(data).decode("ascii")


class LogService:
    """One service's open audit log, its signing key, and what it last signed."""

    def __init__(self, path: Path | None, member_id: str, key: Ed25519PrivateKey,
                 trust: Callable[[], TrustList], audience: str, *,
                 checkpoint_interval: float = CHECKPOINT_INTERVAL_SECONDS,
                 accept_reset: bool = False) -> None:
        self.path = path
        self.member_id = member_id
        self.key = key
        self.trust = trust
        self.audience = audience
        self.checkpoint_interval = checkpoint_interval
        self.accept_reset = accept_reset
        self.log: AuditLog | None = None
        self.checkpoint_time: datetime | None = None

    @property
    def origin(self) -> str:
        return origin_for(self.trust().federation, self.member_id)

    def open(self) -> None:
        """Open the log (crash recovery happens here); without a configured path, stay closed."""
        if self.path is None:
            log.warning("no audit_log configured: queries are not logged (development only)")
            return
        self.log = AuditLog.open(self.path)
        if self.log.latest_checkpoint is None:
            self._start_signed(self.log)
        stamp = self.path / "checkpoint"
        if self.log.latest_checkpoint is not None and stamp.exists():
            self.checkpoint_time = datetime.fromtimestamp(stamp.stat().st_mtime, UTC)

    def _start_signed(self, audit: AuditLog) -> None:
        """Sign the first checkpoint of a log that has none, or refuse a log that lost its own.

        A new log is signed at once (size 0), so from then on a missing checkpoint can only mean
        the file was removed -- and the entries beside it may have been rolled back. Such a log is
        refused unless ``accept_reset`` (``unsafe_accept_audit_log_reset``), and accepting it is
        itself the next entry of the log.
        """
        size = audit.size
        if size:
            if not self.accept_reset:
                audit.close()
                self.log = None
                raise AuditUnavailable(
                    f"{self.path}: the log holds {size} entries but its signed checkpoint is missing, so "
                    "it may have been rolled back; refusing to start. Restore the checkpoint file, or "
                    "set unsafe_accept_audit_log_reset to accept the log as it is (the reset is logged)")
            log.warning("audit log %s: checkpoint missing for %d entries; reset accepted and logged",
                        self.path, size)
            audit.append_sync({"v": 1, "type": "log-reset", "member": self.member_id,
                               "time": datetime.now(UTC).strftime("%Y-%m-%dT%H:%M:%SZ"), "size": size,
                               "reason": "signed checkpoint missing; accepted by "
                                         "unsafe_accept_audit_log_reset"})
        audit.checkpoint(self.origin, self.member_id, self.key)

    def grew(self) -> bool:
        """The log holds entries its last signed checkpoint does not cover."""
        return self.log is not None and self.log.size != (self.log.signed_size or 0)

    async def sign_when_grown(self) -> None:
        """Sign a checkpoint if the log grew; a failure is logged (and shows on ``/healthz``)."""
        if not self.grew():
            return
        try:
            await self.checkpoint()
        except (LogError, AuditUnavailable, OSError) as exc:
            log.error("audit log checkpoint not signed: %s", exc)

    async def sign_forever(self) -> None:
        """Every ``checkpoint_interval`` seconds, sign a checkpoint when the log grew."""
        while True:
            await asyncio.sleep(self.checkpoint_interval)
            await self.sign_when_grown()

    async def close(self) -> None:
        if self.log is not None:
            log_, self.log = self.log, None
            await log_.aclose()

    async def append(self, entry: Mapping[str, Any]) -> int:
        """Append ``entry`` durably and return its index; ``AuditUnavailable`` if that fails.

        Without a configured log (development only) nothing is written and -1 comes back.
        """
        if self.path is None:
            return -1
        if self.log is None:
            raise AuditUnavailable("audit log is not open")
        try:
            return await self.log.append(entry)
        except (LogError, OSError) as exc:
            log.error("audit log append failed: %s", exc)
            raise AuditUnavailable(f"audit log: {exc}") from exc

    def append_sync(self, entry: Mapping[str, Any]) -> int:
        """Append from ordinary (non-async) code, such as the purge job's thread."""
        if self.path is None:
            return -1
        if self.log is None:
            raise AuditUnavailable("audit log is not open")
        try:
            return self.log.append_sync(entry)
        except (LogError, OSError) as exc:
            log.error("audit log append failed: %s", exc)
            raise AuditUnavailable(f"audit log: {exc}") from exc

    async def checkpoint(self) -> str:
        """Sign (and remember) a checkpoint over every acknowledged entry."""
        if self.log is None:
            raise AuditUnavailable("audit log is not open")
        note = await asyncio.to_thread(self.log.checkpoint, self.origin, self.member_id, self.key)
        self.checkpoint_time = datetime.now(UTC)
        return note

    def health_reasons(self) -> list[HealthReason]:
        """``audit-log-not-writable`` when entries cannot be logged (so nothing is answered)."""
        if self.path is None:
            return []
        if self.log is None:
            return [HealthReason("audit-log-not-writable", "the audit log is not open")]
        broken = self.log.broken
        if broken is not None:
            return [HealthReason("audit-log-not-writable",
                                 f"the audit log stopped accepting entries: {broken}")]
        if not os.access(self.path / "entries", os.W_OK):
            return [HealthReason("audit-log-not-writable", f"{self.path / 'entries'} is not writable")]
        return []

    def health(self) -> JsonObject:
        """What ``/healthz`` says about the log (size and when it last signed)."""
        if self.log is None:
            return {"log_size": None, "checkpoint_time": None}
        stamp = self.checkpoint_time
        return {"log_size": self.log.size,
                "checkpoint_time": stamp.isoformat(timespec="seconds") if stamp else None}


LOG_SERVICE = web.AppKey("log_service", LogService)


def _auditor_only(request: web.Request, service: LogService) -> web.Response | None:
    header = request.headers.get("Authorization", "")
    scheme, _, token = header.partition(" ")
    if scheme.lower() != "bearer" or not token.strip():
        return problem(401, "Unauthorised", "Authorization: expected 'Bearer <auditor token>'",
                       kind="unauthorised", headers={"WWW-Authenticate": 'Bearer realm="signpost"'})
    try:
        who = tokens.verify(token.strip(), service.trust(), audience=service.audience, now=datetime.now(UTC))
    except TrustError as exc:
        return problem(401, "Unauthorised", str(exc), kind="unauthorised",
                       headers={"WWW-Authenticate": 'Bearer realm="signpost"'})
    if who.role != AUDITOR_ROLE:
        return problem(403, "Forbidden", f"role: expected 'auditor', got {who.role!r}", kind="forbidden-role")
    log.info("audit log read by %s (%s)", who.sub, who.issuer)
    return None


def _int_param(request: web.Request, name: str, default: int | None = None) -> int:
    raw = request.query.get(name)
    if raw is None:
        if default is None:
            raise ValueError(f"{name}: is required (a non-negative integer)")
        return default
    if not raw.isdigit() or len(raw) > 19:
        raise ValueError(f"{name}: expected a non-negative integer, got {raw!r}")
    return int(raw)


def _open_log(request: web.Request) -> tuple[LogService, AuditLog] | web.Response:
    service = request.app[LOG_SERVICE]
    refused = _auditor_only(request, service)
    if refused is not None:
        return refused
    if service.log is None:
        return problem(503, "Audit log unavailable", "the audit log is not open", kind="audit-unavailable")
    return service, service.log


def _bad(detail: str) -> web.Response:
    return problem(400, "Bad request", detail, kind="bad-log-request")


async def handle_checkpoint(request: web.Request) -> web.StreamResponse:
    opened = _open_log(request)
    if isinstance(opened, web.Response):
        return opened
    service, _ = opened
    try:
        note = await service.checkpoint()
    except (LogError, AuditUnavailable) as exc:
        return problem(503, "Audit log unavailable", str(exc), kind="audit-unavailable")
    return web.Response(text=note, content_type="text/plain", headers={"Cache-Control": "no-store"})


async def handle_entries(request: web.Request) -> web.StreamResponse:
    opened = _open_log(request)
    if isinstance(opened, web.Response):
        return opened
    _, audit = opened
    size = audit.size
    try:
        start = _int_param(request, "start", 0)
        end = min(_int_param(request, "end", min(size, start + MAX_PAGE)), start + MAX_PAGE)
        if not start <= end <= size:
            raise ValueError(f"range: expected 0 <= start <= end <= {size}, got [{start}, {end})")
    except ValueError as exc:
        return _bad(str(exc))
    try:
        entries = await asyncio.to_thread(audit.entries, start, end)
    except LogError as exc:
        return problem(500, "Audit log damaged", str(exc), kind="audit-damaged",
                       index=getattr(exc, "index", None))
    return json_response({"start": start, "end": end, "size": size,
                          "entries": [e.decode("utf-8", errors="replace") for e in entries]})


async def handle_inclusion(request: web.Request) -> web.StreamResponse:
    opened = _open_log(request)
    if isinstance(opened, web.Response):
        return opened
    _, audit = opened
    try:
        size = _int_param(request, "size", audit.size)
        index = _int_param(request, "index")
        if not index < size <= audit.size:
            raise ValueError(f"index, size: expected index < size <= {audit.size}, got {index}, {size}")
        proof = audit.inclusion_proof(index, size)
        root = audit.root(size)
    except (ValueError, LogError) as exc:
        return _bad(str(exc))
    return json_response({"index": index, "size": size, "root": b64(root), "proof": [b64(p) for p in proof]})


async def handle_consistency(request: web.Request) -> web.StreamResponse:
    opened = _open_log(request)
    if isinstance(opened, web.Response):
        return opened
    _, audit = opened
    try:
        second = _int_param(request, "to", audit.size)
        first = _int_param(request, "from")
        if not first <= second <= audit.size:
            raise ValueError(f"from, to: expected from <= to <= {audit.size}, got {first}, {second}")
        proof = audit.consistency_proof(first, second)
    except (ValueError, LogError) as exc:
        return _bad(str(exc))
    return json_response({"from": first, "to": second, "proof": [b64(p) for p in proof]})


def install(app: web.Application, service: LogService) -> None:
    """Add the auditor routes, and open and close the log with the app."""
    app[LOG_SERVICE] = service

    async def lifetime(_: web.Application) -> AsyncIterator[None]:
        service.open()
        if service.log is not None:
            log.info("audit log %s open: %d entries", service.path, service.log.size)
        signer = asyncio.create_task(service.sign_forever(), name="audit-checkpoints")
        yield
        signer.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await signer
        await service.sign_when_grown()  # the last entries are covered by a signed checkpoint
        await service.close()

    app.cleanup_ctx.append(lifetime)
    app.router.add_get("/v1/log/checkpoint", handle_checkpoint)
    app.router.add_get("/v1/log/entries", handle_entries)
    app.router.add_get("/v1/log/proof/inclusion", handle_inclusion)
    app.router.add_get("/v1/log/proof/consistency", handle_consistency)
