"""HTTP helpers shared by the broker and the nodes: RFC 9457 problem documents, JSON bodies."""

from __future__ import annotations

import asyncio
import json
import logging
import ssl
from collections.abc import Iterable
from dataclasses import dataclass
from typing import Any

import aiohttp
import orjson
from aiohttp import web

from federation import safejson
from federation.canonical import JsonObject
from federation.errors import FieldError
from federation.safejson import JsonError, JsonLimits

PROBLEM_TYPE_BASE = "https://signpost.example/problems/"


def problem(
    status: int,
    title: str,
    detail: str,
    *,
    kind: str = "about:blank",
    errors: Iterable[FieldError] = (),
    headers: dict[str, str] | None = None,
    **extra: Any,
) -> web.Response:
    """An RFC 9457 ``application/problem+json`` response; field errors go in ``errors``."""
    return web.Response(
        status=status,
        text=json.dumps(problem_document(status, title, detail, kind=kind, errors=errors, **extra)),
        content_type="application/problem+json",
        headers=headers,
    )


def problem_document(status: int, title: str, detail: str, *, kind: str = "about:blank",
                     errors: Iterable[FieldError] = (), **extra: Any) -> JsonObject:
    """The RFC 9457 problem document ``problem`` sends (a channel's ``refused`` frame carries it)."""
    body: JsonObject = {
        "type": kind if kind == "about:blank" else PROBLEM_TYPE_BASE + kind,
        "title": title,
        "status": status,
        "detail": detail,
    }
    listed = [{"field": e.field, "detail": e.message} for e in errors]
    if listed:
        body["errors"] = listed
    body.update(extra)
    return body


async def read_capped(stream: aiohttp.StreamReader, limit: int) -> bytes:
    """The whole body, or its first ``limit + 1`` bytes when it is longer (so the caller can refuse
    it): ``StreamReader.read(n)`` alone may return only the part that has arrived so far."""
    body = bytearray()
    while len(body) <= limit:
        chunk = await stream.read(limit + 1 - len(body))
        if not chunk:
            break
        body += chunk
    return bytes(body)


async def read_json_object(request: web.Request, limit: int) -> JsonObject:
    """Read a JSON object body of at most ``limit`` bytes through ``federation.safejson``.

    Raises ``FieldError('body', ...)`` (a ``JsonError``) for anything else: too long, nested too
    deep, a number too long, a repeated key, not UTF-8, not JSON, not an object.
    """
    if request.content_length is not None and request.content_length > limit:
        raise JsonError("body", f"expected at most {limit} bytes, got {request.content_length}")
    try:
        raw = await read_capped(request.content, limit)
    except (ValueError, aiohttp.ClientPayloadError, web.HTTPException) as exc:
        raise JsonError("body", f"expected a readable body ({exc.__class__.__name__})") from None
    return safejson.parse_object(raw, "body", JsonLimits(max_bytes=limit))


@dataclass(frozen=True)
class HealthReason:
    """Why a service is not fully able to do its work: a short code and what an operator reads."""

    code: str
    detail: str

    def to_wire(self) -> dict[str, str]:
        return {"code": self.code, "detail": self.detail}


def health(member_id: str, role: str, trust: Any, reasons: Iterable[HealthReason] = (),
           **extra: Any) -> web.Response:
    """``GET /healthz``: who this is, which trust list it runs on, and whether it can work.

    ``trust`` is a ``TrustList``. With no ``reasons`` the status is ``ok`` (HTTP 200); with any,
    it is ``degraded`` (HTTP 503, so a load balancer's readiness check takes it out) and the
    reasons are listed. Each part of a service adds its own reasons.
    """
    listed = [r.to_wire() for r in reasons]
    body = {
        "status": "degraded" if listed else "ok",
        "id": member_id,
        "role": role,
        "trust_list_version": trust.version,
        "trust_list_expires": trust.expires.isoformat(),
        **extra,
    }
    if listed:
        body["reasons"] = listed
    return json_response(body, status=503 if listed else 200)


def json_response(data: Any, status: int = 200, headers: dict[str, str] | None = None) -> web.Response:
    """A JSON response that is never cached (answers concern children).

    Written by orjson (a search's response lists every authority: ten times faster than
    ``json.dumps``), or by ``json.dumps`` for what orjson does not write (an integer past 64 bits);
    compact and UTF-8 either way."""
    merged = {"Cache-Control": "no-store"}
    merged.update(headers or {})
    try:
        body = orjson.dumps(data)
    except orjson.JSONEncodeError:
        body = json.dumps(data, separators=(",", ":"), ensure_ascii=False).encode("utf-8")
    return web.Response(body=body, status=status, headers=merged, content_type="application/json",
                        charset="utf-8")


def setup_logging(verbose: bool) -> None:
    """Logging for a service process (``signpost node serve``, ``signpost broker serve``)."""
    logging.basicConfig(
        level=logging.DEBUG if verbose else logging.INFO,
        format="%(asctime)s %(levelname)s %(name)s: %(message)s",
    )
    logging.getLogger("aiohttp.access").setLevel(logging.WARNING)


SHUTDOWN_GRACE_SECONDS = 5.0
"""How long a stopping service waits for requests under way before cancelling them. A query's
deadline is 3 s, so waiting longer helps no one; aiohttp's own default (60 s) also applied to a
connection that had sent no request yet, such as a broker reopening its channel at that moment,
so a stopping node or broker waited a minute for nothing."""


def runner(app: web.Application, *, grace: float = SHUTDOWN_GRACE_SECONDS) -> web.AppRunner:
    """An ``AppRunner`` for ``app`` with no access log and a shutdown grace (by default the one above)."""
    return web.AppRunner(app, access_log=None, shutdown_timeout=grace)


def serve(app: web.Application, host: str, port: int, context: ssl.SSLContext | None, *,
          loop: asyncio.AbstractEventLoop | None = None) -> None:
    """Serve ``app`` until the process is stopped: no start-up banner, no access log. ``loop``:
    the event loop to serve on (by default a new one of asyncio's own)."""
    web.run_app(app, host=host, port=port, print=None, access_log=None, ssl_context=context,
                shutdown_timeout=SHUTDOWN_GRACE_SECONDS, loop=loop)
