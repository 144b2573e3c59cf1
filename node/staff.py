"""The signposting officers' pages: a separate listener, for the authority's own staff only.

Served on ``staff_host:staff_port`` (never on the broker-facing port), from the same process as
the node. An officer signs in with a token from an identity provider in the trust list (the same
EdDSA/ES256 practitioner tokens the broker accepts, audience ``staff_audience``, by default the
node's id); it must say ``role`` ``signposting_officer``, come from an issuer whose ``authority``
is this node's, and show multi-factor sign-in (``amr``). Pasting a token is the sign-in for now;
an OpenID Connect redirect to the authority's provider can replace it without changing anything
behind it.

Pages: the queue of checks; one check, with the identity as typed beside the node's candidate
records (this node's records only: the pages have no way to reach any other), and the decision
form; and, for one record, every search and check that reached it, read from the node's own
audit log. Sessions are server-side; the cookie is ``HttpOnly`` and ``SameSite=Strict``; every
form carries a CSRF token; every response carries the broker pages' safety headers and
``Cache-Control: no-store``. Templates are jinja2 with autoescaping on.
"""

from __future__ import annotations

import asyncio
import contextlib
import hmac
import logging
import secrets
import time
from collections import OrderedDict
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass
from datetime import UTC, datetime
from importlib import resources
from typing import Any

import jinja2
from aiohttp import web

from federation.checks import CheckState, Decision
from federation.http import runner as app_runner
from federation.identity import Identity
from federation.pagesafety import SECURITY_HEADERS, add_safety_headers, cookie_name, loopback_http
from node.checks import Check, CheckDesk, CheckError
from node.store import Child
from trust import auditor, tokens
from trust.errors import TrustError
from trust.logapi import AuditUnavailable
from trust.tokens import Practitioner

log = logging.getLogger("signpost.node.staff")

OFFICER_ROLE = "signposting_officer"
LOOPBACK_COOKIE = "signpost-staff"
SECURE_COOKIE = "__Host-signpost-staff"
MAX_SESSIONS = 2000
TOKEN_LIMIT = 8000
STATE_LABELS = {
    CheckState.PENDING: "Waiting for you", CheckState.SAME_CHILD: "Same child",
    CheckState.NOT_THIS_CHILD: "Not this child", CheckState.MORE_INFORMATION: "Asked for more information",
    CheckState.EXPIRED: "Expired",
}
IDENTITY_ROWS = (("nhs_number", "NHS number"), ("upn", "UPN"), ("given_name", "Given name"),
                 ("family_name", "Family name"), ("date_of_birth", "Date of birth"), ("sex", "Sex"),
                 ("postcode", "Postcode"))

_TEMPLATES = jinja2.Environment(
    loader=jinja2.PackageLoader("node", "templates"),
    autoescape=True,
    undefined=jinja2.StrictUndefined,
)


@dataclass
class StaffSession:
    id: str
    csrf: str
    last_seen: float
    officer: Practitioner | None = None

    def csrf_ok(self, presented: object) -> bool:
        return isinstance(presented, str) and hmac.compare_digest(self.csrf, presented)


class StaffSessions:
    """Officers' sessions in memory; idle or token-expired sessions end."""

    def __init__(self, idle_seconds: int) -> None:
        self.idle_seconds = idle_seconds
        self._sessions: OrderedDict[str, StaffSession] = OrderedDict()

    def new(self, now: float, officer: Practitioner | None = None) -> StaffSession:
        while len(self._sessions) >= MAX_SESSIONS:
            self._sessions.popitem(last=False)
        session = StaffSession(secrets.token_urlsafe(32), secrets.token_urlsafe(32), now, officer)
        self._sessions[session.id] = session
        return session

    def get(self, session_id: str | None, now: float) -> StaffSession | None:
        session = self._sessions.get(session_id or "")
        if session is None:
            return None
        if now - session.last_seen > self.idle_seconds or (
                session.officer is not None and now >= session.officer.expires):
            del self._sessions[session.id]
            return None
        session.last_seen = now
        self._sessions.move_to_end(session.id)
        return session

    def drop(self, session_id: str) -> None:
        self._sessions.pop(session_id, None)


class Staff:
    """The staff app's state."""

    def __init__(self, desk: CheckDesk) -> None:
        self.desk = desk
        self.sessions = StaffSessions(desk.config.staff_idle_seconds)
        self.authority = desk.trust.current.member(desk.config.id, "node").name

    @property
    def audience(self) -> str:
        return self.desk.config.staff_audience or self.desk.config.id


STAFF = web.AppKey("staff", Staff)
Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]


@web.middleware
async def security_headers(request: web.Request, handler: Handler) -> web.StreamResponse:
    try:
        response = await handler(request)
    except web.HTTPException as exc:
        add_safety_headers(exc.headers)
        raise
    add_safety_headers(response.headers)
    return response


def _cookie(request: web.Request) -> str:
    return cookie_name(request, SECURE_COOKIE, LOOPBACK_COOKIE)


def _set_cookie(request: web.Request, response: web.Response, session: StaffSession) -> None:
    response.set_cookie(_cookie(request), session.id, path="/", httponly=True,
                        secure=not loopback_http(request), samesite="Strict")


def _session(request: web.Request) -> StaffSession | None:
    return request.app[STAFF].sessions.get(request.cookies.get(_cookie(request)), time.time())


def render(request: web.Request, template: str, status: int = 200, *, session: StaffSession | None = None,
           **values: Any) -> web.Response:
    staff = request.app[STAFF]
    officer = session.officer if session is not None else None
    page = _TEMPLATES.get_template(template).render(
        authority=staff.authority, officer=officer, csrf=session.csrf if session else "",
        errors=values.pop("errors", []), **values)
    return web.Response(text=page, status=status, content_type="text/html", charset="utf-8")


def _message(request: web.Request, title: str, text: str, status: int, session: StaffSession | None = None,
             ) -> web.Response:
    return render(request, "message.html", status, session=session, title=title, text=text, link="",
                  link_text="")


def _signed_in(request: web.Request) -> StaffSession | None:
    session = _session(request)
    return session if session is not None and session.officer is not None else None


def _redirect(location: str) -> web.Response:
    return web.Response(status=303, headers={"Location": location})


# --- sign in --------------------------------------------------------------------------------


def check_officer(who: Practitioner, authority_id: str) -> str | None:
    """Why ``who`` may not use this authority's staff pages, or ``None`` if they may."""
    if who.role != OFFICER_ROLE:
        return f"Your role ({who.role}) is not signposting officer."
    if who.authority != authority_id:
        return "You are not a signposting officer of this authority."
    if not who.has_mfa:
        return "Signing in here needs a one-time code or security key."
    return None


async def handle_sign_in_form(request: web.Request) -> web.Response:
    staff = request.app[STAFF]
    session = _session(request) or staff.sessions.new(time.time())
    response = render(request, "sign_in.html", session=StaffSession("", session.csrf, 0), title="Sign in")
    _set_cookie(request, response, session)
    return response


async def handle_sign_in(request: web.Request) -> web.Response:
    staff = request.app[STAFF]
    session = _session(request)
    form = await request.post()
    if session is None or not session.csrf_ok(form.get("csrf_token")):
        return _message(request, "Your session has ended", "Go back to the sign-in page and try again.", 403)
    token = form.get("token")
    token = token.strip() if isinstance(token, str) else ""
    errors: list[str] = []
    who: Practitioner | None = None
    if not token or len(token) > TOKEN_LIMIT:
        errors.append("Enter your sign-in token")
    else:
        try:
            who = tokens.verify(token, staff.desk.trust.current, audience=staff.audience,
                                now=datetime.now(UTC))
        except TrustError as exc:
            log.warning("staff sign-in refused: %s", exc.__class__.__name__)
            errors.append("The sign-in token is not valid for this authority's staff pages")
    if who is not None:
        refusal = check_officer(who, staff.desk.config.id)
        if refusal is not None:
            log.warning("staff sign-in refused: not an officer of this authority")
            return _message(request, "You cannot use these pages", refusal, 403)
    if errors or who is None:
        response = render(request, "sign_in.html", 400, session=StaffSession("", session.csrf, 0),
                          title="Sign in", errors=errors)
        return response
    staff.sessions.drop(session.id)
    fresh = staff.sessions.new(time.time(), who)
    response = _redirect("/checks")
    _set_cookie(request, response, fresh)
    return response


async def handle_sign_out(request: web.Request) -> web.Response:
    session = _session(request)
    if session is not None:
        form = await request.post()
        if not session.csrf_ok(form.get("csrf_token")):
            return _message(request, "Sign-out failed", "Reload the page and try again.", 403)
        request.app[STAFF].sessions.drop(session.id)
    response = _redirect("/sign-in")
    response.del_cookie(_cookie(request), path="/")
    return response


# --- the queue and one check ----------------------------------------------------------------


def _day(moment: int) -> str:
    stamp = datetime.fromtimestamp(moment, UTC)
    return f"{stamp.day} {stamp:%B %Y} {stamp:%H:%M}"


def _purpose(staff: Staff, code: str) -> str:
    found = staff.desk.trust.current.policy.purpose(code)
    return found.label if found is not None else code


async def handle_queue(request: web.Request) -> web.Response:
    session = _signed_in(request)
    if session is None:
        return _redirect("/sign-in")
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
        return _message(request, "The check cannot be shown", "Views cannot be recorded in the audit log "
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
        purpose=_purpose(staff, check.request.purpose),
        state_label=STATE_LABELS[check.state], expires=_day(check.expires), candidates=candidates, rows=rows,
        open=check.state is CheckState.PENDING, can_ask=check.information is None)


async def handle_check(request: web.Request) -> web.Response:
    session = _signed_in(request)
    if session is None:
        return _redirect("/sign-in")
    check = await request.app[STAFF].desk.get(request.match_info["check_id"])
    if check is None:
        return _message(request, "Check not found", "It may have expired and been deleted.", 404, session)
    return await _check_page(request, session, check, [])


async def handle_decision(request: web.Request) -> web.Response:
    session = _signed_in(request)
    form = await request.post()
    if session is None or not session.csrf_ok(form.get("csrf_token")):
        return _message(request, "Your session has ended", "Sign in again to decide.", 403)
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
                return _message(request, "Check not found", "It may have expired and been deleted.", 404,
                                session)
            errors.append({"anchor": "decision", "text": str(exc).split(": ", 1)[-1].capitalize()})
        else:
            return _redirect(f"/checks/{check_id}")
    check = await desk.get(check_id)
    if check is None:
        return _message(request, "Check not found", "It may have expired and been deleted.", 404, session)
    return await _check_page(request, session, check, errors, 400)


# --- who has looked -------------------------------------------------------------------------


async def handle_looked(request: web.Request) -> web.Response:
    session = _signed_in(request)
    if session is None:
        return _redirect("/sign-in")
    assert session.officer is not None
    desk = request.app[STAFF].desk
    record_id = request.match_info["record_id"]
    child = await desk.child(record_id)
    if child is None:
        return _message(request, "Record not found", f"There is no record {record_id}.", 404, session)
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
        return _message(request, "Not available", "Views cannot be recorded in the audit log just now, "
                        "so nothing is shown. Try again later.", 503, session)
    return render(request, "looked.html", session=session, title="Who has looked", record_id=record_id,
                  rows=rows)


async def handle_root(request: web.Request) -> web.Response:
    return _redirect("/checks")


async def handle_static(request: web.Request) -> web.Response:
    if request.match_info["name"] != "staff.css":
        raise web.HTTPNotFound()
    css = resources.files("node").joinpath("static/staff.css").read_bytes()
    return web.Response(body=css, content_type="text/css", charset="utf-8")


def create_app(desk: CheckDesk) -> web.Application:
    """The officers' aiohttp application (its own listener: see ``install``)."""
    app = web.Application(middlewares=[security_headers], client_max_size=64 * 1024)
    app[STAFF] = Staff(desk)
    app.router.add_get("/", handle_root)
    app.router.add_get("/sign-in", handle_sign_in_form)
    app.router.add_post("/sign-in", handle_sign_in)
    app.router.add_post("/sign-out", handle_sign_out)
    app.router.add_get("/checks", handle_queue)
    app.router.add_get("/checks/{check_id}", handle_check)
    app.router.add_post("/checks/{check_id}/decision", handle_decision)
    app.router.add_get("/children/{record_id}/looked", handle_looked)
    app.router.add_get("/static/{name}", handle_static)
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
