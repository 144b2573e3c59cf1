"""HTTP helpers shared by the broker and the nodes: RFC 9457 problem documents, JSON bodies."""

from __future__ import annotations

import json
import logging
import ssl
from collections.abc import Iterable
from typing import Any

from aiohttp import web

from federation.canonical import JsonObject
from federation.errors import FieldError

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
    return web.Response(
        status=status,
        text=json.dumps(body),
        content_type="application/problem+json",
        headers=headers,
    )


async def read_json_object(request: web.Request, limit: int) -> JsonObject:
    """Read a JSON object body of at most ``limit`` bytes, or raise ``FieldError('body', ...)``."""
    if request.content_length is not None and request.content_length > limit:
        raise FieldError("body", f"expected at most {limit} bytes, got {request.content_length}")
    raw = await request.content.read(limit + 1)
    if len(raw) > limit:
        raise FieldError("body", f"expected at most {limit} bytes")
    try:
        data = json.loads(raw)
    except (UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise FieldError("body", f"expected a JSON object ({exc.__class__.__name__})") from None
    if not isinstance(data, dict):
        raise FieldError("body", f"expected a JSON object, got {type(data).__name__}")
    return data


def health(member_id: str, role: str, trust: Any, **extra: Any) -> web.Response:
    """``GET /healthz``: who this is, and which trust list it runs on (``trust`` a ``TrustList``)."""
    return json_response({
        "status": "ok",
        "id": member_id,
        "role": role,
        "trust_list_version": trust.version,
        "trust_list_expires": trust.expires.isoformat(),
        **extra,
    })


def json_response(data: Any, status: int = 200, headers: dict[str, str] | None = None) -> web.Response:
    """A JSON response that is never cached (answers concern children)."""
    merged = {"Cache-Control": "no-store"}
    merged.update(headers or {})
    return web.json_response(data, status=status, headers=merged)


def setup_logging(verbose: bool) -> None:
    """Logging for a service process (``signpost node serve``, ``signpost broker serve``)."""
    logging.basicConfig(
        level=logging.DEBUG if verbose else logging.INFO,
        format="%(asctime)s %(levelname)s %(name)s: %(message)s",
    )
    logging.getLogger("aiohttp.access").setLevel(logging.WARNING)


def serve(app: web.Application, host: str, port: int, context: ssl.SSLContext | None) -> None:
    """Serve ``app`` until the process is stopped: no start-up banner, no access log."""
    web.run_app(app, host=host, port=port, print=None, access_log=None, ssl_context=context)
