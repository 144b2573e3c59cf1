"""The practitioner's check pages: ask an authority to check, "Your checks", and one check.

The same safety rules as the search pages (``broker.web``): server-side sessions, a CSRF token in
every form, nothing about a child in a URL, every value escaped. The identity as typed reaches
the ask page in the body of the results page's form and goes on, in a form body again, to
``CheckService.ask``: the same door as ``POST /v1/checks``.
"""

from __future__ import annotations

import logging
from datetime import UTC, datetime
from typing import Any

from aiohttp import web

from broker import pages, ratelimit
from broker.checks import CHECKS, BrokerCheck, CheckRefused
from broker.ledger import LedgerUnavailable
from broker.pages import FormError
from broker.web import current_session, html, redirect
from federation.canonical import JsonObject
from federation.checks import CheckOutcome, CheckState
from federation.identity import IDENTITY_FIELDS
from trust.logapi import AuditUnavailable
from trust.tokens import Practitioner

log = logging.getLogger("signpost.broker.checks")

STATE_TEXT = {
    CheckState.PENDING: ("Waiting", "The authority's signposting team has not decided yet."),
    CheckState.SAME_CHILD: ("Confirmed", "The authority confirmed it holds this child."),
    CheckState.NOT_THIS_CHILD: ("Not this child", "The authority checked: the child it holds is not the "
                                "child you searched for. Nothing is shown."),
    CheckState.MORE_INFORMATION: ("More information needed",
                                  "The authority needs more information to decide."),
    CheckState.EXPIRED: ("Expired", "The authority did not decide in time and the check was deleted. "
                         "Phone its signposting team if you still need to know."),
}
MORE_FIELDS = (("nhs_number", "NHS number"), ("upn", "Unique pupil number (UPN)"), ("postcode", "Postcode"))


async def _signed_in(request: web.Request) -> tuple[str, Practitioner] | None:
    session = await current_session(request)
    if session is None or session.practitioner is None:
        return None
    return session.csrf, session.practitioner


def _text(value: Any, limit: int = 200) -> str:
    return value.strip()[:limit] if isinstance(value, str) else ""


def _check_view(check: BrokerCheck, outcome: CheckOutcome | None, *, looked: bool) -> JsonObject:
    """What the check page shows (``looked``: the node was asked just now)."""
    label, text = STATE_TEXT[check.state]
    disclosure = outcome.disclosure.to_wire() if outcome is not None and outcome.disclosure else None
    return {"id": check.id, "search_id": check.search_id, "authority": check.authority_name, "label": label,
            "text": text, "message": check.message if check.state is CheckState.MORE_INFORMATION else None,
            "can_add_information": check.state is CheckState.MORE_INFORMATION and not check.information_used,
            "lead_informed": check.lead_informed and disclosure is not None, "disclosure": disclosure,
            "unavailable": looked and outcome is None and check.state is not CheckState.EXPIRED}


# --- handlers -------------------------------------------------------------------------------


async def _form(request: web.Request) -> tuple[dict[str, str], str, Practitioner] | web.Response:
    form = await request.post()
    signed_in = await _signed_in(request)
    if signed_in is None or form.get("csrf_token") != signed_in[0]:
        return html(pages.signed_out_page("Your session has ended"), status=403)
    return {k: _text(v) for k, v in form.items() if isinstance(v, str)}, signed_in[0], signed_in[1]


def _carried(values: dict[str, str]) -> dict[str, str]:
    keep = {"search_id", "purpose", "authority"} | {f"id-{f}" for f in IDENTITY_FIELDS}
    return {k: v for k, v in values.items() if k in keep and v}


async def handle_ask_form(request: web.Request) -> web.Response:
    got = await _form(request)
    if isinstance(got, web.Response):
        return got
    values, csrf, who = got
    carried = _carried(values)
    name = next((m.name for m in request.app[CHECKS].broker.trust.current.with_role("node")
                 if m.id == carried.get("authority")), carried.get("authority", ""))
    return html(pages.ask_check_page(who, csrf, carried, name, {}, []))


async def handle_ask(request: web.Request) -> web.Response:
    got = await _form(request)
    if isinstance(got, web.Response):
        return got
    values, csrf, who = got
    service = request.app[CHECKS]
    over = await ratelimit.admit(request.app, who.issuer, who.sub, who.org)  # as the API: one search's worth
    if over is not None:
        retry = over.headers.get("Retry-After", "60")
        return html(pages.message_page("Too many searches", f"Try again in {retry} seconds.", who=who,
                                       csrf=csrf), status=over.status)
    carried = _carried(values)
    contact = {k: values[f"contact-{k}"] for k in ("email", "phone") if values.get(f"contact-{k}")}
    body = {"search_id": carried.get("search_id"), "authority": carried.get("authority"),
            "purpose": carried.get("purpose"), "contact": contact,
            "identity": {k.removeprefix("id-"): v for k, v in carried.items() if k.startswith("id-")}}
    try:
        check = await service.ask(who, body, datetime.now(UTC))
    except CheckRefused as exc:
        if exc.status == 400 and all(e.field.startswith("contact") for e in exc.errors):
            errors = [FormError("contact-phone" if e.field == "contact.phone" else "contact-email",
                                "Enter your secure email or phone number" if e.field == "contact"
                                else "Enter a real "
                                + ("phone number" if e.field.endswith("phone") else "email"))
                      for e in exc.errors]
            name = service.broker.trust.current.member(str(carried.get("authority")), "node").name
            return html(pages.ask_check_page(who, csrf, carried, name, values, errors), status=400)
        reason = str(exc).split(": ", 1)[-1].capitalize()
        return html(pages.message_page("The check cannot be asked", reason, who=who, csrf=csrf),
                    status=exc.status)
    except (AuditUnavailable, LedgerUnavailable):
        return html(pages.message_page("Signpost is not available", "Checks cannot be recorded just now, "
                                       "so none are sent. Try again later.", who=who, csrf=csrf),
                    status=503)
    return redirect(f"/checks/{check.id}")


async def handle_list(request: web.Request) -> web.Response:
    signed_in = await _signed_in(request)
    if signed_in is None:
        return redirect("/sign-in")
    csrf, who = signed_in
    try:
        mine = await request.app[CHECKS].list_mine(who)
    except LedgerUnavailable:
        return html(pages.message_page("Signpost is not available", "Your checks cannot be read just now. "
                                       "Try again later.", who=who, csrf=csrf), 503)
    rows = [{"id": c.id, "authority": c.authority_name, "label": STATE_TEXT[c.state][0], "unseen": c.unseen,
             "expires": c.expires[:10]} for c in mine]
    return html(pages.checks_page(who, csrf, rows))


async def handle_check(request: web.Request) -> web.Response:
    signed_in = await _signed_in(request)
    if signed_in is None:
        return redirect("/sign-in")
    csrf, who = signed_in
    try:
        check, outcome = await request.app[CHECKS].look(who, request.match_info["check_id"],
                                                        datetime.now(UTC))
    except CheckRefused:
        return html(pages.message_page("Check not found", "It may have expired.", who=who, csrf=csrf), 404)
    except (AuditUnavailable, LedgerUnavailable):
        return html(pages.message_page("Signpost is not available", "Try again later.", who=who, csrf=csrf),
                    503)
    return html(pages.check_page(who, csrf, _check_view(check, outcome, looked=True), []))


async def handle_information(request: web.Request) -> web.Response:
    got = await _form(request)
    if isinstance(got, web.Response):
        return got
    values, csrf, who = got
    service = request.app[CHECKS]
    check_ref = request.match_info["check_id"]
    identity = {name: values[f"more-{name}"] for name, _ in MORE_FIELDS if values.get(f"more-{name}")}
    try:
        await service.add_information(who, check_ref, {"identity": identity}, datetime.now(UTC))
    except (AuditUnavailable, LedgerUnavailable):
        return html(pages.message_page("Signpost is not available", "Try again later.", who=who, csrf=csrf),
                    503)
    except CheckRefused as exc:
        if exc.status != 400:
            return html(pages.message_page("The information was not sent", str(exc).split(": ", 1)[-1],
                                           who=who, csrf=csrf), status=exc.status)
        errors = [FormError(f"more-{e.field.rpartition('.')[2]}" if "." in e.field else "more-nhs_number",
                            "Give at least one of these" if e.field == "identity"
                            else e.message.capitalize())
                  for e in exc.errors]
        check = await service.mine(who, check_ref)
        return html(pages.check_page(who, csrf, _check_view(check, None, looked=False), errors), status=400)
    return redirect(f"/checks/{check_ref}")


def add_routes(app: web.Application) -> None:
    app.router.add_post("/checks/ask", handle_ask_form)
    app.router.add_post("/checks/new", handle_ask)
    app.router.add_get("/checks", handle_list)
    app.router.add_get("/checks/{check_id}", handle_check)
    app.router.add_post("/checks/{check_id}/information", handle_information)
