"""The broker's check API: ``POST /v1/checks``, ``GET /v1/checks``, ``GET /v1/checks/{id}`` and
``POST /v1/checks/{id}/information`` for practitioners (bearer tokens, as ``/v1/search``), and the
follow-up task that asks nodes about pending checks every ``check_poll_seconds``.

What a check is and the rules it follows live in ``broker.checks``; this module reads requests,
turns refusals into problem documents and registers the routes.
"""

from __future__ import annotations

import logging
from collections.abc import AsyncIterator
from datetime import UTC, datetime

from aiohttp import web

from broker import ratelimit
from broker.api import BROKER
from broker.checks import CHECKS, CheckRefused, CheckService
from broker.ledger import LedgerUnavailable
from federation.checks import CheckState
from federation.errors import FieldError
from federation.http import json_response, problem, read_json_object
from federation.tasks import every
from trust import logapi
from trust.errors import TrustError
from trust.tokens import Practitioner

log = logging.getLogger("signpost.broker.checks")

def _ledger_down(exc: LedgerUnavailable) -> web.Response:
    return problem(503, "Checks unavailable", f"the broker cannot read or keep checks just now: {exc}",
                   kind="ledger-unavailable")


def _problem(exc: CheckRefused) -> web.Response:
    return problem(exc.status, "Check refused" if exc.status != 400 else "Invalid check", str(exc),
                   kind=exc.kind, errors=exc.errors)


async def _who(request: web.Request, now: datetime) -> Practitioner | web.Response:
    broker = request.app[BROKER]
    try:
        return broker.authenticate(request, now)
    except TrustError as exc:
        return problem(401, "Unauthorised", str(exc), kind="unauthorised",
                       headers={"WWW-Authenticate": 'Bearer realm="signpost"'})


async def handle_ask(request: web.Request) -> web.Response:
    now = datetime.now(UTC)
    who = await _who(request, now)
    if isinstance(who, web.Response):
        return who
    service = request.app[CHECKS]
    over = await ratelimit.admit(request.app, who.issuer, who.sub, who.org)  # a check counts as a search
    if over is not None:
        return over
    try:
        body = await read_json_object(request, service.broker.config.body_limit)
        check = await service.ask(who, body, now)
    except FieldError as exc:
        return problem(400, "Invalid check", str(exc), errors=[exc], kind="invalid-check")
    except CheckRefused as exc:
        return _problem(exc)
    except logapi.AuditUnavailable as exc:
        return problem(503, "Audit log unavailable", "the broker cannot log checks, so it does not send "
                       f"them: {exc}", kind="audit-unavailable")
    except LedgerUnavailable as exc:
        return _ledger_down(exc)
    return json_response({"check": check.to_wire()}, status=201,
                         headers={"Location": f"/v1/checks/{check.id}"})


async def handle_get(request: web.Request) -> web.Response:
    now = datetime.now(UTC)
    who = await _who(request, now)
    if isinstance(who, web.Response):
        return who
    try:
        check, outcome = await request.app[CHECKS].look(who, request.match_info["check_id"], now)
    except CheckRefused as exc:
        return _problem(exc)
    except logapi.AuditUnavailable as exc:
        return problem(503, "Audit log unavailable", str(exc), kind="audit-unavailable")
    except LedgerUnavailable as exc:
        return _ledger_down(exc)
    unavailable = outcome is None and check.state is not CheckState.EXPIRED
    return json_response({"check": check.to_wire(outcome, unavailable=unavailable)})


async def handle_list(request: web.Request) -> web.Response:
    now = datetime.now(UTC)
    who = await _who(request, now)
    if isinstance(who, web.Response):
        return who
    try:
        mine = await request.app[CHECKS].list_mine(who)
    except LedgerUnavailable as exc:
        return _ledger_down(exc)
    return json_response({"checks": [c.to_wire() for c in mine]})


async def handle_information(request: web.Request) -> web.Response:
    now = datetime.now(UTC)
    who = await _who(request, now)
    if isinstance(who, web.Response):
        return who
    service = request.app[CHECKS]
    try:
        body = await read_json_object(request, service.broker.config.body_limit)
        check = await service.add_information(who, request.match_info["check_id"], body, now)
    except FieldError as exc:
        return problem(400, "Invalid check", str(exc), errors=[exc], kind="invalid-check")
    except CheckRefused as exc:
        return _problem(exc)
    except logapi.AuditUnavailable as exc:
        return problem(503, "Audit log unavailable", str(exc), kind="audit-unavailable")
    except LedgerUnavailable as exc:
        return _ledger_down(exc)
    return json_response({"check": check.to_wire()})


def install(app: web.Application) -> None:
    """Register ``/v1/checks`` and start the follow-up task (after the broker's HTTP client)."""
    service = CheckService(app[BROKER])
    app[CHECKS] = service
    app.router.add_post("/v1/checks", handle_ask)
    app.router.add_get("/v1/checks", handle_list)
    app.router.add_get("/v1/checks/{check_id}", handle_get)
    app.router.add_post("/v1/checks/{check_id}/information", handle_information)

    async def following(_: web.Application) -> AsyncIterator[None]:
        async with every(service.broker.config.check_poll_seconds,
                         lambda: service.poll_pending(datetime.now(UTC)), log=log,
                         failure="check follow-up failed"):
            yield
        await service.broker.ledger.close()

    app.cleanup_ctx.append(following)



__all__ = ["install"]
