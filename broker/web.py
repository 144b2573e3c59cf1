"""The practitioner web pages, served by the broker: sign in, search, results, sign out.

The pages are a thin skin over the API: a search goes through ``Broker.validate`` and
``Broker.search``, the same path as ``POST /v1/search``. Safety rules:

* Results are rendered straight into the ``POST /search`` response with ``Cache-Control:
  no-store``; nothing about a child ever appears in a URL, a redirect, a cookie or a log line.
* Sessions are server-side (``broker.sessions``, in Redis when the broker has a Redis URL); the
  cookie is ``HttpOnly``, ``SameSite=Strict`` and, over HTTPS, ``Secure`` with the ``__Host-``
  prefix. Only when the browser reached the broker at a loopback address over plain HTTP (the
  demo, the tests) is the cookie sent without ``Secure``, because browsers would not return it
  otherwise.
* Sign-in is through the practitioner's own OpenID Connect provider (``trust.oidc``): the
  sign-in in progress is named by a second, short-lived ``SameSite=Lax`` cookie (the provider's
  redirect back is a cross-site navigation, which a Strict cookie would not survive) and is
  taken from the store exactly once, so a replayed callback is refused. The demo keeps its own
  identity provider.
* Every form carries the session's CSRF token; every page a strict Content-Security-Policy
  (``'self'`` only, no scripts at all).
"""

from __future__ import annotations

import logging
import time
from collections.abc import AsyncIterator, Awaitable, Callable
from datetime import UTC, datetime
from typing import Any
from urllib.parse import quote

from aiohttp import web

from broker import pages, ratelimit
from broker.api import BROKER
from broker.checks import CHECKS
from broker.demo_idp import DemoIdentityProvider
from broker.pages import FormError
from broker.sessions import Session, SessionStore, SessionStoreUnavailable
from federation.errors import ValidationError
from federation.pagesafety import SECURITY_HEADERS as SECURITY_HEADERS  # the pages' headers, re-exported
from federation.pagesafety import add_safety_headers, cookie_name, loopback_http, stylesheet
from federation.rules import SEARCHING_ROLES
from trust import oidc, tokens
from trust.errors import ExpiredError, TrustError, UnknownMemberError
from trust.logapi import AuditUnavailable

log = logging.getLogger("signpost.broker.web")

SECURE_COOKIE = "__Host-signpost-session"
LOOPBACK_COOKIE = "signpost-session"
SECURE_SIGN_IN_COOKIE = "__Host-signpost-sign-in"
LOOPBACK_SIGN_IN_COOKIE = "signpost-sign-in"
FIELD_LIMIT = 200
FORM_FIELDS = ("nhs_number", "upn", "given_name", "family_name", "dob-day", "dob-month", "dob-year",
               "sex", "postcode", "purpose", "obo-name", "obo-organisation", "obo-role", "obo-phone",
               "contact-email", "contact-phone")
DOB_FIELDS = ("dob-day", "dob-month", "dob-year")
LABELS = {
    "nhs_number": "NHS number", "upn": "UPN", "given_name": "Given name", "family_name": "Family name",
    "date_of_birth": "Date of birth", "sex": "Sex", "postcode": "Postcode", "purpose": "Purpose",
    "name": "Their full name", "organisation": "Their organisation", "role": "Their role",
    "phone": "Their phone number",
}


class WebState:
    """The pages' own state: sessions, OpenID sign-in and, in the demo only, the demo identity provider."""

    def __init__(self, sessions: SessionStore, idp: DemoIdentityProvider | None,
                 sign_in: oidc.OpenIdSignIn | None = None) -> None:
        self.sessions = sessions
        self.idp = idp
        self.oidc = sign_in


WEB = web.AppKey("web", WebState)
Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]


# --- responses and cookies ------------------------------------------------------------------


@web.middleware
async def security_headers(request: web.Request, handler: Handler) -> web.StreamResponse:
    """Strict headers on every response; nothing the broker serves may be cached.

    A session store that cannot be asked stops the pages (503), never lets a request through.
    """
    try:
        response = await handler(request)
    except SessionStoreUnavailable as exc:
        log.error("pages refused: %s", exc)
        response = html(pages.message_page("Signpost is not available", "Sign-in cannot be checked just "
                                           "now. Try again in a minute."), status=503)
    add_safety_headers(response.headers)
    return response


def html(body: str, status: int = 200) -> web.Response:
    return web.Response(text=body, status=status, content_type="text/html", charset="utf-8",
                        headers={"Pragma": "no-cache"})


def redirect(location: str) -> web.Response:
    return web.Response(status=303, headers={"Location": location})


def _cookie_name(request: web.Request) -> str:
    return cookie_name(request, SECURE_COOKIE, LOOPBACK_COOKIE)


def set_cookie(request: web.Request, response: web.Response, session: Session) -> None:
    response.set_cookie(_cookie_name(request), session.id, path="/", httponly=True,
                        secure=not loopback_http(request), samesite="Strict")


def clear_cookie(request: web.Request, response: web.Response) -> None:
    response.del_cookie(_cookie_name(request), path="/", secure=not loopback_http(request),
                        httponly=True, samesite="Strict")


async def current_session(request: web.Request) -> Session | None:
    return await request.app[WEB].sessions.get(request.cookies.get(_cookie_name(request)), time.time())


# --- sign in and out ------------------------------------------------------------------------


async def handle_root(request: web.Request) -> web.Response:
    return redirect("/search")


def _providers(request: web.Request) -> list[tuple[str, str]]:
    """Token issuers with an OpenID provider in the trust list that this broker is registered with."""
    state = request.app[WEB]
    if state.oidc is None:
        return []
    issuers = request.app[BROKER].trust.current.with_role("token_issuer")
    return [(m.id, m.name) for m in issuers if m.oidc is not None and m.id in state.oidc.clients]


async def handle_sign_in(request: web.Request) -> web.Response:
    if request.app[WEB].idp is not None:
        return redirect("/demo-idp/sign-in")
    providers = _providers(request)
    if len(providers) == 1:
        return redirect(f"/sign-in/oidc/{quote(providers[0][0], safe='')}")
    if providers:
        return html(pages.choose_provider_page(providers))
    return html(pages.no_identity_provider_page())


async def handle_demo_sign_in_form(request: web.Request) -> web.Response:
    state = request.app[WEB]
    if state.idp is None:
        raise web.HTTPNotFound()
    session = await current_session(request) or await state.sessions.new(time.time())
    response = html(pages.sign_in_page(session.csrf, {}, [], sorted(state.idp.users)))
    set_cookie(request, response, session)
    return response


def _expired_form(request: web.Request) -> web.Response:
    response = html(pages.signed_out_page("Your session has ended"), status=403)
    clear_cookie(request, response)
    return response


async def handle_demo_sign_in(request: web.Request) -> web.Response:
    state = request.app[WEB]
    broker = request.app[BROKER]
    if state.idp is None:
        raise web.HTTPNotFound()
    session = await current_session(request)
    form = await request.post()
    if session is None or not session.csrf_ok(_text(form.get("csrf_token"))):
        return _expired_form(request)
    username = _text(form.get("username"))
    password = _text(form.get("password"), limit=500)
    code = _text(form.get("code"))
    errors = [FormError(anchor, f"Enter your {what}") for anchor, what, value in (
        ("username", "username", username), ("password", "password", password),
        ("code", "one-time code", code)) if not value]
    user = None
    if not errors:
        user = state.idp.check(username, password, code, time.time())
        if user is None:
            errors.append(FormError("username", "The username, password or one-time code is not right"))
    if user is None:
        broker.metrics.sessions.inc("refused")
        response = html(pages.sign_in_page(session.csrf, {"username": username}, errors,
                                           sorted(state.idp.users)), status=400)
        set_cookie(request, response, session)
        return response
    now = datetime.now(UTC)
    token = state.idp.issue(user, now)
    # The same verification as every API call: the trust list decides whether this issuer counts.
    try:
        who = tokens.verify(token, broker.trust.current, audience=broker.config.audience, now=now)
    except TrustError as exc:
        log.error("demo identity provider token refused: %s", exc)
        return html(pages.message_page("Sign-in failed", "Your identity provider is not trusted by the "
                                       "federation. Contact the Signpost team."), status=403)
    fresh = await state.sessions.sign_in(session, who, time.time())
    broker.metrics.sessions.inc("signed_in")
    response = redirect("/search")
    set_cookie(request, response, fresh)
    return response


def _sign_in_cookie_name(request: web.Request) -> str:
    return cookie_name(request, SECURE_SIGN_IN_COOKIE, LOOPBACK_SIGN_IN_COOKIE)


def _sign_in_failed(request: web.Request, status: int, text: str) -> web.Response:
    request.app[BROKER].metrics.sessions.inc("refused")
    response = html(pages.message_page("Sign-in failed", text), status=status)
    response.del_cookie(_sign_in_cookie_name(request), path="/", secure=not loopback_http(request),
                        httponly=True, samesite="Lax")
    return response


def _issuer(request: web.Request, member_id: str) -> Any:
    try:
        return request.app[BROKER].trust.current.member(member_id, "token_issuer")
    except UnknownMemberError:
        raise web.HTTPNotFound() from None


async def handle_oidc_start(request: web.Request) -> web.Response:
    """Send the browser to the practitioner's OpenID provider (state, nonce and PKCE kept here)."""
    state = request.app[WEB]
    if state.oidc is None:  # no OpenID sign-in on this broker: the sign-in page says what there is
        return redirect("/sign-in")
    member = _issuer(request, request.match_info["issuer"])
    try:
        url, pending = await state.oidc.start(member)
    except oidc.ProviderUnavailable as exc:
        log.warning("sign-in with %s: provider unavailable: %s", member.id, exc)
        return _sign_in_failed(request, 503, "Your organisation's sign-in service did not answer. "
                                             "Try again in a minute.")
    except oidc.OidcError as exc:
        log.error("sign-in with %s refused: %s", member.id, exc)
        return _sign_in_failed(request, 403, "Your organisation's sign-in is not set up for Signpost. "
                                             "Contact the Signpost team.")
    transaction = oidc.new_transaction_id()
    await state.sessions.put_pending(transaction, pending.to_record(), oidc.PENDING_SECONDS)
    response = redirect(url)
    response.set_cookie(_sign_in_cookie_name(request), transaction, path="/", httponly=True,
                        secure=not loopback_http(request), samesite="Lax", max_age=oidc.PENDING_SECONDS)
    return response


async def handle_oidc_callback(request: web.Request) -> web.Response:
    """The provider's redirect back: exchange the code, verify the ID token, start a session."""
    state = request.app[WEB]
    broker = request.app[BROKER]
    if state.oidc is None:
        return redirect("/sign-in")
    transaction = request.cookies.get(_sign_in_cookie_name(request), "")
    record = await state.sessions.take_pending(transaction) if transaction else None
    if record is None:
        return _sign_in_failed(request, 400, "This sign-in has already been used or has timed out. "
                                             "Sign in again.")
    pending = oidc.PendingSignIn.from_record(record)
    if "error" in request.query:
        return _sign_in_failed(request, 403, "Your organisation's sign-in did not complete. Sign in again.")
    code, returned_state = request.query.get("code", ""), request.query.get("state", "")
    if not code or not returned_state:
        return _sign_in_failed(request, 400, "The sign-in answer was incomplete. Sign in again.")
    member = _issuer(request, pending.issuer_member)
    try:
        who = await state.oidc.finish(member, pending, returned_state, code, time.time())
    except oidc.MfaRequired as exc:
        log.warning("sign-in refused: %s", exc)
        return _sign_in_failed(request, 403, "Signpost needs a sign-in with a second factor (a code, an app "
                                             "or a security key). Sign in again with one.")
    except oidc.ProviderUnavailable as exc:
        log.warning("sign-in with %s: provider unavailable: %s", member.id, exc)
        return _sign_in_failed(request, 503, "Your organisation's sign-in service did not answer. "
                                             "Try again in a minute.")
    except oidc.OidcError as exc:
        log.error("sign-in refused: %s", exc)
        return _sign_in_failed(request, 403, "Your sign-in could not be accepted. Sign in again, or "
                                             "contact the Signpost team if this keeps happening.")
    old = await current_session(request)
    fresh = await state.sessions.sign_in(old, who, time.time(), provider=member.id)
    broker.metrics.sessions.inc("signed_in")
    # A page rather than a redirect: browsers send no SameSite=Strict cookie on a redirect chain
    # that began at another site, so the next page is reached by a same-site navigation.
    response = html(pages.signed_in_page())
    set_cookie(request, response, fresh)
    response.del_cookie(_sign_in_cookie_name(request), path="/", secure=not loopback_http(request),
                        httponly=True, samesite="Lax")
    return response


async def handle_sign_out(request: web.Request) -> web.Response:
    state = request.app[WEB]
    session = await current_session(request)
    location = "/signed-out"
    if session is not None:
        form = await request.post()
        if not session.csrf_ok(_text(form.get("csrf_token"))):
            return html(pages.message_page("Sign-out failed", "Reload the page and try again."), status=403)
        await state.sessions.drop(session.id)
        if session.provider is not None and state.oidc is not None:
            member = request.app[BROKER].trust.current.members.get(session.provider)
            base = request.app[BROKER].config.public_url or ""
            if member is not None and member.oidc is not None and member.id in state.oidc.clients:
                location = await state.oidc.sign_out_url(member, base + "/signed-out") or location
    response = redirect(location)
    clear_cookie(request, response)
    return response


async def handle_signed_out(request: web.Request) -> web.Response:
    return html(pages.signed_out_page("You have signed out"))


# --- search ---------------------------------------------------------------------------------


def _text(value: Any, limit: int = FIELD_LIMIT) -> str:
    return value.strip()[:limit] if isinstance(value, str) else ""


def _purposes(request: web.Request) -> list[tuple[str, str]]:
    return [(p.code, p.label) for p in request.app[BROKER].trust.current.policy.purposes]


def _date_of_birth(values: dict[str, str]) -> tuple[str | None, FormError | None]:
    """Three fields to ``YYYY-MM-DD`` (or an error naming what is missing)."""
    parts = {p: values.get(f"dob-{p}", "") for p in ("day", "month", "year")}
    if not any(parts.values()):
        return None, None
    missing = [p for p, v in parts.items() if not v]
    if missing:
        return None, FormError(f"dob-{missing[0]}", f"Date of birth must include a {' and a '.join(missing)}",
                               tuple(f"dob-{p}" for p in missing))
    wrong = [p for p, v in parts.items() if not v.isdigit() or (p == "year" and len(v) != 4)]
    if wrong:
        return None, FormError(f"dob-{wrong[0]}", "Date of birth must be a real date, for example 27 3 2015",
                               tuple(f"dob-{p}" for p in wrong))
    return f"{int(parts['year']):04d}-{int(parts['month']):02d}-{int(parts['day']):02d}", None


def _anchor(field: str) -> str:
    if field.startswith("identity."):
        name = field.removeprefix("identity.")
        return "dob-day" if name == "date_of_birth" else name
    if field.startswith("on_behalf_of"):
        name = field.partition(".")[2] or "name"
        return f"obo-{name}"
    if field.startswith("contact"):
        return "contact-phone" if field == "contact.phone" else "contact-email"
    return field if field in ("purpose", "identity") else "identity"


# The page's words for the API's field errors, GOV.UK style (say what to do; never echo the
# input back): per field, the first entry whose prefix starts the API's message.
PAGE_MESSAGES: dict[str, tuple[tuple[str, str], ...]] = {
    "identity.nhs_number": (("expected 10 digits", "NHS number must be 10 digits"),
                            ("", "NHS number is not right: check it against the child's records")),
    "identity.upn": (("expected a check letter", "Enter the unique pupil number (UPN) in the right "
                                                "format: 13 characters, for example A123456789012"),
                     ("", "Unique pupil number (UPN) is not right: check it against the child's records")),
    "identity.given_name": (("wildcards", "Enter the child's full given name"),
                            ("", "Given name must be at least 2 letters")),
    "identity.family_name": (("wildcards", "Enter the child's full family name"),
                             ("", "Family name must be at least 2 letters")),
    "identity.postcode": (("", "Enter a real postcode, for example LS1 4AB"),),
    "identity.sex": (("", "Select the child's sex"),),
    "identity.date_of_birth": (("expected", "Date of birth must be a real date, for example 27 3 2015"),),
    "contact.email": (("", "Enter your email address in the right format, for example name@example.gov.uk"),),
    "contact.phone": (("", "Enter your phone number, for example 0113 496 0000"),),
}


def _message(error_field: str, message: str) -> str:
    if error_field == "identity":
        # The sets are the federation's policy (the trust list's), named in the message.
        sets = message.removeprefix("expected one of these sets: ").split("; ")
        return "Enter enough to identify one child: " + ", or ".join(sets)
    if error_field == "purpose":
        return "Select why you are searching"
    if error_field.startswith("on_behalf_of.") and message.startswith("is required"):
        return f"Enter {LABELS.get(error_field.partition('.')[2], 'their details').lower()}"
    for start, text in PAGE_MESSAGES.get(error_field, ()):
        if message.startswith(start):
            return text
    label = LABELS.get(error_field.rpartition(".")[2], error_field)
    return f"{label} {message}" if message.startswith("must") else f"{label}: {message}"


async def _signed_in(request: web.Request) -> tuple[Session, tokens.Practitioner] | None:
    session = await current_session(request)
    if session is None or session.practitioner is None:
        return None
    return session, session.practitioner


def _refusal(request: web.Request, session: Session, who: tokens.Practitioner) -> web.Response | None:
    if who.role not in SEARCHING_ROLES:
        return html(pages.message_page("You cannot search", f"Your role ({who.role}) does not allow "
                                       "searching for children.", who=who, csrf=session.csrf), status=403)
    if not who.has_mfa:
        return html(pages.message_page("You cannot search", "Searching needs a sign-in with a one-time "
                                       "code or security key.", who=who, csrf=session.csrf), status=403)
    return None


async def handle_search_form(request: web.Request) -> web.Response:
    signed_in = await _signed_in(request)
    if signed_in is None:
        return redirect("/sign-in")
    session, who = signed_in
    refusal = _refusal(request, session, who)
    if refusal is not None:
        return refusal
    notice = await request.app[CHECKS].unseen(who) > 0
    return html(pages.search_page(who, session.csrf, _purposes(request), {}, [], who.role == "mediator",
                                  notice))


async def handle_search(request: web.Request) -> web.Response:
    broker = request.app[BROKER]
    form = await request.post()
    signed_in = await _signed_in(request)
    if signed_in is None:
        return _expired_form(request)
    session, who = signed_in
    if not session.csrf_ok(_text(form.get("csrf_token"))):
        return _expired_form(request)
    refusal = _refusal(request, session, who)
    if refusal is not None:
        return refusal
    now = datetime.now(UTC)
    try:
        broker.trust.current.check_current(now)
    except ExpiredError:
        return html(pages.message_page("Signpost is not available", "The federation's trust list has "
                                       "expired. Try again later.", who=who, csrf=session.csrf), status=503)
    over = await ratelimit.admit(request.app, who.issuer, who.sub, who.org)
    if over is not None:  # the same budgets as the API, counted before validation as there
        retry = over.headers.get("Retry-After", "60")
        title = "Too many searches" if over.status == 429 else "Searching is unavailable"
        return html(pages.message_page(title, f"Try again in {retry} seconds.", who=who, csrf=session.csrf),
                    status=over.status)
    values = {name: _text(form.get(name)) for name in FORM_FIELDS}
    mediator = who.role == "mediator"
    dob, dob_error = _date_of_birth(values)
    ident = {k: values[k] for k in ("nhs_number", "upn", "given_name", "family_name", "sex", "postcode")
             if values[k]}
    if dob:
        ident["date_of_birth"] = dob
    body: dict[str, Any] = {"identity": ident}
    if values["purpose"]:
        body["purpose"] = values["purpose"]
    if mediator:
        body["on_behalf_of"] = {k: values[f"obo-{k}"] for k in ("name", "organisation", "role", "phone")}
    contact = {k: values[f"contact-{k}"] for k in ("email", "phone") if values[f"contact-{k}"]}
    if contact:
        body["contact"] = contact
    errors: list[FormError] = [dob_error] if dob_error else []
    try:
        search = broker.validate(body, who, now)
    except ValidationError as exc:
        for e in exc.errors:
            if dob_error is not None and e.field == "identity":
                continue  # the missing set is explained by the date error already
            at_fault = DOB_FIELDS if e.field == "identity.date_of_birth" else ()  # not a real date
            errors.append(FormError(_anchor(e.field), _message(e.field, e.message), at_fault))
    if errors:
        broker.metrics.refused.inc("invalid")
        return html(pages.search_page(who, session.csrf, _purposes(request), values, errors, mediator),
                    status=400)
    try:
        answer = await broker.search(search, who, now)
    except AuditUnavailable:
        return html(pages.message_page("Signpost is not available", "Searches cannot be recorded in the "
                                       "audit log just now, so none are made. Try again later.",
                                       who=who, csrf=session.csrf), status=503)
    log.info("web search %s answered", answer.query_id)
    typed = {**{k: values[k] for k in ("nhs_number", "upn", "given_name", "family_name", "postcode")},
             "date_of_birth": dob or "", "sex": dict(pages.SEX_OPTIONS).get(values["sex"], values["sex"])}
    searched = [(LABELS[k], pages.long_date(typed[k]) if k == "date_of_birth" else typed[k])
                for k in LABELS if typed.get(k)]
    ask = {"search_id": answer.query_id, "purpose": search.purpose,
           **{f"id-{k}": str(v) for k, v in search.identity.to_wire().items()}}
    return html(pages.results_page(who, session.csrf, answer.to_wire(), searched, ask=ask,
                                   notice=await request.app[CHECKS].unseen(who) > 0,
                                   contact_given=search.contact is not None))


async def handle_static(request: web.Request) -> web.Response:
    return stylesheet(request, {})


def add_routes(app: web.Application, sessions: SessionStore, idp: DemoIdentityProvider | None,
               sign_in: oidc.OpenIdSignIn | None = None) -> None:
    """Register the practitioner pages on the broker's app; the stores open and close with it."""
    app[WEB] = WebState(sessions, idp, sign_in)
    app.middlewares.append(security_headers)

    async def lifetime(app: web.Application) -> AsyncIterator[None]:
        if sign_in is not None:
            await sign_in.open()
        yield
        if sign_in is not None:
            await sign_in.close()
        await sessions.close()

    app.cleanup_ctx.append(lifetime)
    app.router.add_get("/", handle_root)
    app.router.add_get("/sign-in", handle_sign_in)
    app.router.add_get(oidc.CALLBACK_PATH, handle_oidc_callback)
    app.router.add_get("/sign-in/oidc/{issuer}", handle_oidc_start)
    app.router.add_get("/demo-idp/sign-in", handle_demo_sign_in_form)
    app.router.add_post("/demo-idp/sign-in", handle_demo_sign_in)
    app.router.add_post("/sign-out", handle_sign_out)
    app.router.add_get("/signed-out", handle_signed_out)
    app.router.add_get("/search", handle_search_form)
    app.router.add_post("/search", handle_search)
    app.router.add_get("/static/{name}", handle_static)
