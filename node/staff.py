"""The signposting officers' pages: a separate listener, for the authority's own staff only.

Served on ``staff_host:staff_port`` (never on the broker-facing port), from the same process as
the node. Officers sign in through their council's OpenID Connect provider (``node.staff_sign_in``);
sessions, cookies and rendering are ``node.staff_web``.

Pages: the queue of checks; one check, with the identity as typed beside the node's candidate
records (this node's records only: the pages have no way to reach any other), and the decision
form; and, for one record, every search and check that reached it, read from the node's own
audit log.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator
from datetime import UTC, datetime

from aiohttp import web

from federation.checks import CheckState, Decision
from federation.http import runner as app_runner
from federation.identity import Identity
from federation.pagesafety import SECURITY_HEADERS, stylesheet
from node import staff_sign_in
from node.checks import Check, CheckDesk, CheckError
from node.staff_web import (
    IDENTITY_ROWS,
    STAFF,
    STATE_LABELS,
    Staff,
    StaffSession,
    log,
    message_page,
    redirect,
    render,
    security_headers,
    signed_in,
)
from node.store import Child
from trust import auditor
from trust.logapi import AuditUnavailable

# --- the queue and one check ----------------------------------------------------------------


def _day(moment: int) -> str:
    stamp = datetime.fromtimestamp(moment, UTC)
    return f"{stamp.day} {stamp:%B %Y} {stamp:%H:%M}"


def _purpose(staff: Staff, code: str) -> str:
    found = staff.desk.trust.current.policy.purpose(code)
    return found.label if found is not None else code


async def handle_queue(request: web.Request) -> web.Response:
    session = signed_in(request)
    if session is None:
        return redirect("/sign-in")
    staff = request.app[STAFF]
    rows = [{"id": c.id, "received": _day(c.received), "name": str(c.request.practitioner.get("name", "")),
             "org": str(c.request.practitioner.get("org", "")), "purpose": _purpose(staff, c.request.purpose),
             "state": c.state.value, "state_label": STATE_LABELS[c.state], "expires": _day(c.expires)}
            for c in await staff.desk.queue()]
    return render(request, "queue.html", session=session, title="Checks", checks=rows)


def _value(source: Identity | Child, name: str) -> str:
    value = getattr(source, name, None)
    return "" if value is None else str(value)


async def _check_page(request: web.Request, session: StaffSession, check: Check,
                      errors: list[dict[str, str]], status: int = 200) -> web.Response:
    staff = request.app[STAFF]
    now = datetime.now(UTC)
    candidates = await staff.desk.candidates(check, now.date())
    assert session.officer is not None
    try:
        await staff.desk.viewed(check, session.officer, candidates, now)
    except CheckError:
        return message_page(request, "The check cannot be shown", "Views cannot be recorded in the audit log "
                            "just now, so nothing is shown. Try again later.", 503, session)
    typed = check.identity
    rows = [(label, _value(typed, name), [_value(c, name) for c in candidates])
            for name, label in IDENTITY_ROWS]
    practitioner = check.request.practitioner
    return render(
        request, "check.html", status, session=session, title="Check", check=check, errors=errors,
        asker={"name": practitioner.get("name", ""), "role": practitioner.get("role", ""),
               "org": practitioner.get("org", "")},
        contact=list(check.request.contact.to_wire().values()),
        on_behalf_of=check.request.on_behalf_of,
        purpose=_purpose(staff, check.request.purpose),
        state_label=STATE_LABELS[check.state], expires=_day(check.expires), candidates=candidates, rows=rows,
        open=check.state is CheckState.PENDING, can_ask=check.information is None)


async def handle_check(request: web.Request) -> web.Response:
    session = signed_in(request)
    if session is None:
        return redirect("/sign-in")
    check = await request.app[STAFF].desk.get(request.match_info["check_id"])
    if check is None:
        return message_page(request, "Check not found", "It may have expired and been deleted.", 404, session)
    return await _check_page(request, session, check, [])


async def handle_decision(request: web.Request) -> web.Response:
    session = signed_in(request)
    form = await request.post()
    if session is None or not session.csrf_ok(form.get("csrf_token")):
        return message_page(request, "Your session has ended", "Sign in again to decide.", 403)
    assert session.officer is not None
    desk = request.app[STAFF].desk
    check_id = request.match_info["check_id"]
    choice = form.get("decision")
    message = form.get("message")
    message = message.strip()[:1000] if isinstance(message, str) else ""
    record_id: str | None = None
    decision: Decision | None = None
    if isinstance(choice, str) and choice.startswith("same:"):
        decision, record_id = Decision.SAME_CHILD, choice.removeprefix("same:")
    elif choice in (Decision.NOT_THIS_CHILD.value, Decision.MORE_INFORMATION.value):
        decision = Decision(str(choice))
    errors: list[dict[str, str]] = []
    if decision is None:
        errors.append({"anchor": "decision", "text": "Select your decision"})
    elif decision is Decision.MORE_INFORMATION and not message:
        errors.append({"anchor": "message", "text": "Say what more information you need"})
    if not errors and decision is not None:
        try:
            await desk.decide(check_id, session.officer, decision, datetime.now(UTC), record_id=record_id,
                              message=message or None)
        except CheckError as exc:
            if exc.status == 404:
                return message_page(request, "Check not found", "It may have expired and been deleted.", 404,
                                    session)
            errors.append({"anchor": "decision", "text": str(exc).split(": ", 1)[-1].capitalize()})
        else:
            return redirect(f"/checks/{check_id}")
    check = await desk.get(check_id)
    if check is None:
        return message_page(request, "Check not found", "It may have expired and been deleted.", 404, session)
    return await _check_page(request, session, check, errors, 400)


# --- who has looked -------------------------------------------------------------------------


async def handle_looked(request: web.Request) -> web.Response:
    session = signed_in(request)
    if session is None:
        return redirect("/sign-in")
    assert session.officer is not None
    desk = request.app[STAFF].desk
    record_id = request.match_info["record_id"]
    child = await desk.child(record_id)
    if child is None:
        return message_page(request, "Record not found", f"There is no record {record_id}.", 404, session)
    audit = desk.audit.log
    entries: list[tuple[int, bytes]] = []
    if audit is not None:
        size = audit.size
        found = await asyncio.to_thread(lambda: list(audit.iter_entries(0, size)))
        entries = list(enumerate(found))
    parsed, _ = auditor.parse_entries(entries, node=desk.config.id)
    rows = auditor.access_rows(parsed, child.pseudonym)
    now = datetime.now(UTC)
    try:
        await desk.audit.append({"v": 1, "type": "access-view", "node": desk.config.id,
                                 "time": now.isoformat(timespec="milliseconds"),
                                 "officer": {"sub": session.officer.sub, "name": session.officer.name,
                                             "iss": session.officer.issuer},
                                 "pseudonym": child.pseudonym})
    except AuditUnavailable:
        return message_page(request, "Not available", "Views cannot be recorded in the audit log just now, "
                            "so nothing is shown. Try again later.", 503, session)
    return render(request, "looked.html", session=session, title="Who has looked", record_id=record_id,
                  rows=rows)


async def handle_root(request: web.Request) -> web.Response:
    return redirect("/checks")


async def handle_static(request: web.Request) -> web.Response:
    return stylesheet(request, {"staff.css": ("node", "static/staff.css")})


def create_app(desk: CheckDesk) -> web.Application:
    """The officers' aiohttp application (its own listener: see ``install``)."""
    app = web.Application(middlewares=[security_headers], client_max_size=64 * 1024)
    app[STAFF] = Staff(desk)
    app.router.add_get("/", handle_root)
    staff_sign_in.add_routes(app)  # /sign-in, /sign-in/oidc, its callback, /sign-out
    app.router.add_get("/checks", handle_queue)
    app.router.add_get("/checks/{check_id}", handle_check)
    app.router.add_post("/checks/{check_id}/decision", handle_decision)
    app.router.add_get("/children/{record_id}/looked", handle_looked)
    app.router.add_get("/static/{name}", handle_static)

    async def provider_client(app: web.Application) -> AsyncIterator[None]:
        sign_in = app[STAFF].oidc
        if sign_in is not None:
            await sign_in.open()
        yield
        if sign_in is not None:
            await sign_in.close()

    app.cleanup_ctx.append(provider_client)
    return app


def install(app: web.Application, desk: CheckDesk) -> None:
    """Serve the staff pages on ``staff_host:staff_port`` for as long as the node's app runs."""
    config = desk.config
    if config.staff_port is None:
        return

    async def listener(_: web.Application) -> AsyncIterator[None]:
        runner = app_runner(create_app(desk))
        await runner.setup()
        await web.TCPSite(runner, config.staff_host, config.staff_port).start()
        log.info("staff pages on %s:%d", config.staff_host, config.staff_port)
        yield
        with contextlib.suppress(Exception):
            await runner.cleanup()

    app.cleanup_ctx.append(listener)


__all__ = ["SECURITY_HEADERS", "create_app", "install"]
