"""The signposting officers' pages: a separate listener, for the authority's own staff only.

Served on ``staff_host:staff_port`` (never on the broker-facing port), from the same process as
the node. An officer signs in through the council's own OpenID Connect provider
(``staff_oidc_issuer``: a token issuer in the trust list whose ``oidc`` entry says how its claims
read, ``trust.oidc``): authorization code flow with PKCE S256, ``state`` and ``nonce`` kept
server-side and named by a short-lived ``SameSite=Lax`` cookie, the ID token checked against the
provider's JWKS. Whatever the sign-in, the person must map to ``role`` ``signposting_officer``,
come from an issuer whose ``authority`` is this node's, and show multi-factor sign-in.

For development and tests only, ``unsafe_staff_token_sign_in`` lets an officer paste a token
instead (the same EdDSA/ES256 practitioner tokens the broker accepts, audience
``staff_audience``, by default the node's id), checked by the same rules.

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
import os
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
from federation.errors import ConfigError
from federation.http import runner as app_runner
from federation.identity import Identity
from federation.pagesafety import SECURITY_HEADERS, add_safety_headers, cookie_name, loopback_http
from node.checks import Check, CheckDesk, CheckError
from node.store import Child
from trust import auditor, oidc, tokens
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


MAX_PENDING = 2000
LOOPBACK_SIGN_IN_COOKIE = "signpost-staff-sign-in"
SECURE_SIGN_IN_COOKIE = "__Host-signpost-staff-sign-in"


def open_id(desk: CheckDesk) -> oidc.OpenIdSignIn | None:
    """Sign-in through the officers' OpenID provider, when the node's config names one."""
    config = desk.config
    if config.staff_oidc_issuer is None or config.staff_oidc_client_id is None:
        return None
    secret_env = config.staff_oidc_client_secret_env
    secret = os.environ.get(secret_env) if secret_env else None
    if secret_env and not secret:
        raise ConfigError(f"staff_oidc_client_secret_env: variable {secret_env} is not set")
    return oidc.OpenIdSignIn({config.staff_oidc_issuer: oidc.OidcClient(config.staff_oidc_client_id, secret)},
                             (config.staff_public_url or "").rstrip("/") + oidc.CALLBACK_PATH,
                             session_seconds=config.staff_session_max_seconds)


class Staff:
    """The staff app's state."""

    def __init__(self, desk: CheckDesk) -> None:
        self.desk = desk
        self.sessions = StaffSessions(desk.config.staff_idle_seconds)
        self.authority = desk.trust.current.member(desk.config.id, "node").name
        self.oidc = open_id(desk)
        # Sign-ins under way: transaction id -> (what to check at the callback, when it lapses).
        self.pending: OrderedDict[str, tuple[oidc.PendingSignIn, float]] = OrderedDict()

    def put_pending(self, transaction: str, pending: oidc.PendingSignIn, now: float) -> None:
        while len(self.pending) >= MAX_PENDING:
            self.pending.popitem(last=False)
        self.pending[transaction] = (pending, now + oidc.PENDING_SECONDS)

    def take_pending(self, transaction: str, now: float) -> oidc.PendingSignIn | None:
        """The sign-in ``transaction`` names, once (a replayed callback finds nothing)."""
        found = self.pending.pop(transaction, None)
        return found[0] if found is not None and found[1] > now else None

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


def _sign_in_page(request: web.Request, session: StaffSession, status: int = 200,
                  errors: list[str] | None = None) -> web.Response:
    staff = request.app[STAFF]
    return render(request, "sign_in.html", status, session=StaffSession("", session.csrf, 0), title="Sign in",
                  errors=errors or [], open_id=staff.oidc is not None,
                  token_sign_in=staff.desk.config.unsafe_staff_token_sign_in)


async def handle_sign_in_form(request: web.Request) -> web.Response:
    staff = request.app[STAFF]
    session = _session(request) or staff.sessions.new(time.time())
    response = _sign_in_page(request, session)
    _set_cookie(request, response, session)
    return response


async def handle_sign_in(request: web.Request) -> web.Response:
    """The development sign-in: a pasted token (only with ``unsafe_staff_token_sign_in``)."""
    staff = request.app[STAFF]
    if not staff.desk.config.unsafe_staff_token_sign_in:
        return _message(request, "Sign in with your organisation's account",
                        "These pages take no pasted tokens: use the sign-in button.", 403)
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
        return _sign_in_page(request, session, 400, errors)
    staff.sessions.drop(session.id)
    fresh = staff.sessions.new(time.time(), who)
    response = _redirect("/checks")
    _set_cookie(request, response, fresh)
    return response


def _sign_in_cookie(request: web.Request) -> str:
    return cookie_name(request, SECURE_SIGN_IN_COOKIE, LOOPBACK_SIGN_IN_COOKIE)


def _sign_in_failed(request: web.Request, status: int, text: str) -> web.Response:
    response = _message(request, "Sign-in failed", text, status)
    response.del_cookie(_sign_in_cookie(request), path="/", secure=not loopback_http(request),
                        httponly=True, samesite="Lax")
    return response


async def handle_oidc_start(request: web.Request) -> web.Response:
    """Send the officer's browser to the council's OpenID provider (state, nonce, PKCE kept here)."""
    staff = request.app[STAFF]
    if staff.oidc is None:
        return _redirect("/sign-in")
    issuer = staff.desk.config.staff_oidc_issuer or ""
    try:
        member = staff.desk.trust.current.member(issuer, "token_issuer")
        if member.authority != staff.desk.config.id:
            raise oidc.SignInRefused(f"{issuer}: a token issuer of another authority")
        url, pending = await staff.oidc.start(member)
    except oidc.ProviderUnavailable as exc:
        log.warning("staff sign-in: provider unavailable: %s", exc)
        return _sign_in_failed(request, 503, "Your organisation's sign-in service did not answer. "
                                             "Try again in a minute.")
    except (oidc.OidcError, TrustError) as exc:
        log.error("staff sign-in is not set up: %s", exc)
        return _sign_in_failed(request, 403, "Sign-in to these pages is not set up. Contact your "
                                             "Signpost operator.")
    transaction = oidc.new_transaction_id()
    staff.put_pending(transaction, pending, time.time())
    response = web.Response(status=303, headers={"Location": url})
    response.set_cookie(_sign_in_cookie(request), transaction, path="/", httponly=True,
                        secure=not loopback_http(request), samesite="Lax", max_age=oidc.PENDING_SECONDS)
    return response


async def handle_oidc_callback(request: web.Request) -> web.Response:
    """The provider's redirect back: exchange the code, verify the ID token, check the officer."""
    staff = request.app[STAFF]
    if staff.oidc is None:
        return _redirect("/sign-in")
    now = time.time()
    pending = staff.take_pending(request.cookies.get(_sign_in_cookie(request), ""), now)
    if pending is None:
        return _sign_in_failed(request, 400, "This sign-in has already been used or has timed out. "
                                             "Sign in again.")
    if "error" in request.query:
        return _sign_in_failed(request, 403, "Your organisation's sign-in did not complete. Sign in again.")
    code, state = request.query.get("code", ""), request.query.get("state", "")
    if not code or not state:
        return _sign_in_failed(request, 400, "The sign-in answer was incomplete. Sign in again.")
    try:
        member = staff.desk.trust.current.member(pending.issuer_member, "token_issuer")
        who = await staff.oidc.finish(member, pending, state, code, now)
    except oidc.MfaRequired as exc:
        log.warning("staff sign-in refused: %s", exc)
        return _sign_in_failed(request, 403, "These pages need a sign-in with a second factor (a code, an "
                                             "app or a security key). Sign in again with one.")
    except oidc.ProviderUnavailable as exc:
        log.warning("staff sign-in: provider unavailable: %s", exc)
        return _sign_in_failed(request, 503, "Your organisation's sign-in service did not answer. "
                                             "Try again in a minute.")
    except (oidc.OidcError, TrustError) as exc:
        log.error("staff sign-in refused: %s", exc)
        return _sign_in_failed(request, 403, "Your sign-in could not be accepted. Sign in again.")
    refusal = check_officer(who, staff.desk.config.id)
    if refusal is not None:
        log.warning("staff sign-in refused: not an officer of this authority")
        return _sign_in_failed(request, 403, refusal)
    old = _session(request)
    if old is not None:
        staff.sessions.drop(old.id)
    fresh = staff.sessions.new(now, who)
    # A page rather than a redirect: browsers send no SameSite=Strict cookie on a redirect chain
    # that began at another site, so the queue is reached by a same-site navigation.
    response = render(request, "message.html", session=fresh, title="You are signed in",
                      text=f"Signed in as {who.name}, signposting officer of {staff.authority}.",
                      link="/checks", link_text="Go to the checks waiting for you")
    _set_cookie(request, response, fresh)
    response.del_cookie(_sign_in_cookie(request), path="/", secure=not loopback_http(request),
                        httponly=True, samesite="Lax")
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
        on_behalf_of=check.request.on_behalf_of,
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
    app.router.add_get("/sign-in/oidc", handle_oidc_start)
    app.router.add_get(oidc.CALLBACK_PATH, handle_oidc_callback)
    app.router.add_post("/sign-out", handle_sign_out)
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
