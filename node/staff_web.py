"""The staff pages' web plumbing: officers' sessions, cookies, safety headers and rendering.

Shared by the sign-in (``node.staff_sign_in``) and the pages (``node.staff``). Sessions are
server-side, in this node's memory; the cookie is ``HttpOnly`` and ``SameSite=Strict``; every
form carries a CSRF token; every response carries the broker pages' safety headers and
``Cache-Control: no-store``. Templates are jinja2 with autoescaping on.
"""

from __future__ import annotations

import hmac
import logging
import os
import secrets
import time
from collections import OrderedDict
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import Any

import jinja2
from aiohttp import web

from federation.checks import CheckState
from federation.errors import ConfigError
from federation.pagesafety import add_safety_headers, cookie_name, loopback_http
from node.checks import CheckDesk
from trust import oidc
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


def session_cookie(request: web.Request) -> str:
    return cookie_name(request, SECURE_COOKIE, LOOPBACK_COOKIE)


def set_session_cookie(request: web.Request, response: web.Response, session: StaffSession) -> None:
    response.set_cookie(session_cookie(request), session.id, path="/", httponly=True,
                        secure=not loopback_http(request), samesite="Strict")


def session_of(request: web.Request) -> StaffSession | None:
    return request.app[STAFF].sessions.get(request.cookies.get(session_cookie(request)), time.time())


def render(request: web.Request, template: str, status: int = 200, *, session: StaffSession | None = None,
           **values: Any) -> web.Response:
    staff = request.app[STAFF]
    officer = session.officer if session is not None else None
    page = _TEMPLATES.get_template(template).render(
        authority=staff.authority, officer=officer, csrf=session.csrf if session else "",
        errors=values.pop("errors", []), **values)
    return web.Response(text=page, status=status, content_type="text/html", charset="utf-8")


def message_page(request: web.Request, title: str, text: str, status: int,
                 session: StaffSession | None = None) -> web.Response:
    return render(request, "message.html", status, session=session, title=title, text=text, link="",
                  link_text="")


def signed_in(request: web.Request) -> StaffSession | None:
    session = session_of(request)
    return session if session is not None and session.officer is not None else None


def redirect(location: str) -> web.Response:
    return web.Response(status=303, headers={"Location": location})
