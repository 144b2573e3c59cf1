"""How a signposting officer signs in to the staff pages, and out again.

Through the council's own OpenID Connect provider (``staff_oidc_issuer``: a token issuer in the
trust list whose ``oidc`` entry says how its claims read, ``trust.oidc``): authorization code
flow with PKCE S256, ``state`` and ``nonce`` kept server-side and named by a short-lived
``SameSite=Lax`` cookie, used once; the ID token checked against the provider's JWKS. Whatever
the sign-in, the person must map to ``role`` ``signposting_officer``, come from an issuer whose
``authority`` is this node's, and show multi-factor sign-in (``check_officer``).

For development and tests only, ``unsafe_staff_token_sign_in`` lets an officer paste a token
instead (the same EdDSA/ES256 practitioner tokens the broker accepts, audience
``staff_audience``, by default the node's id), checked by the same rules.
"""

from __future__ import annotations

import time
from datetime import UTC, datetime

from aiohttp import web

from federation.pagesafety import cookie_name, loopback_http
from node.staff_web import (
    LOOPBACK_SIGN_IN_COOKIE,
    OFFICER_ROLE,
    SECURE_SIGN_IN_COOKIE,
    STAFF,
    TOKEN_LIMIT,
    StaffSession,
    log,
    message_page,
    redirect,
    render,
    session_cookie,
    session_of,
    set_session_cookie,
)
from trust import oidc, tokens
from trust.errors import TrustError
from trust.tokens import Practitioner


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
    session = session_of(request) or staff.sessions.new(time.time())
    response = _sign_in_page(request, session)
    set_session_cookie(request, response, session)
    return response


async def handle_sign_in(request: web.Request) -> web.Response:
    """The development sign-in: a pasted token (only with ``unsafe_staff_token_sign_in``)."""
    staff = request.app[STAFF]
    if not staff.desk.config.unsafe_staff_token_sign_in:
        return message_page(request, "Sign in with your organisation's account",
                            "These pages take no pasted tokens: use the sign-in button.", 403)
    session = session_of(request)
    form = await request.post()
    if session is None or not session.csrf_ok(form.get("csrf_token")):
        return message_page(request, "Your session has ended", "Go back to the sign-in page and try again.",
                            403)
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
            return message_page(request, "You cannot use these pages", refusal, 403)
    if errors or who is None:
        return _sign_in_page(request, session, 400, errors)
    staff.sessions.drop(session.id)
    fresh = staff.sessions.new(time.time(), who)
    response = redirect("/checks")
    set_session_cookie(request, response, fresh)
    return response


def _sign_in_cookie(request: web.Request) -> str:
    return cookie_name(request, SECURE_SIGN_IN_COOKIE, LOOPBACK_SIGN_IN_COOKIE)


def _sign_in_failed(request: web.Request, status: int, text: str) -> web.Response:
    response = message_page(request, "Sign-in failed", text, status)
    response.del_cookie(_sign_in_cookie(request), path="/", secure=not loopback_http(request),
                        httponly=True, samesite="Lax")
    return response


async def handle_oidc_start(request: web.Request) -> web.Response:
    """Send the officer's browser to the council's OpenID provider (state, nonce, PKCE kept here)."""
    staff = request.app[STAFF]
    if staff.oidc is None:
        return redirect("/sign-in")
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
        return redirect("/sign-in")
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
    old = session_of(request)
    if old is not None:
        staff.sessions.drop(old.id)
    fresh = staff.sessions.new(now, who)
    # A page rather than a redirect: browsers send no SameSite=Strict cookie on a redirect chain
    # that began at another site, so the queue is reached by a same-site navigation.
    response = render(request, "message.html", session=fresh, title="You are signed in",
                      text=f"Signed in as {who.name}, signposting officer of {staff.authority}.",
                      link="/checks", link_text="Go to the checks waiting for you")
    set_session_cookie(request, response, fresh)
    response.del_cookie(_sign_in_cookie(request), path="/", secure=not loopback_http(request),
                        httponly=True, samesite="Lax")
    return response


async def handle_sign_out(request: web.Request) -> web.Response:
    session = session_of(request)
    if session is not None:
        form = await request.post()
        if not session.csrf_ok(form.get("csrf_token")):
            return message_page(request, "Sign-out failed", "Reload the page and try again.", 403)
        request.app[STAFF].sessions.drop(session.id)
    response = redirect("/sign-in")
    response.del_cookie(session_cookie(request), path="/")
    return response


def add_routes(app: web.Application) -> None:
    app.router.add_get("/sign-in", handle_sign_in_form)
    app.router.add_post("/sign-in", handle_sign_in)
    app.router.add_get("/sign-in/oidc", handle_oidc_start)
    app.router.add_get(oidc.CALLBACK_PATH, handle_oidc_callback)
    app.router.add_post("/sign-out", handle_sign_out)
