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
from broker.pages import FormError, esc, hidden_csrf, layout, text_input
from broker.web import current_session, html, redirect
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


def _signed_in(request: web.Request) -> tuple[str, Practitioner] | None:
    session = current_session(request)
    if session is None or session.practitioner is None:
        return None
    return session.csrf, session.practitioner


def _text(value: Any, limit: int = 200) -> str:
    return value.strip()[:limit] if isinstance(value, str) else ""


def ask_page(who: Practitioner, csrf: str, carried: dict[str, str], authority_name: str,
             values: dict[str, str], errors: list[FormError]) -> str:
    hidden = "".join(f'<input type="hidden" name="{esc(k)}" value="{esc(v)}">'
                     for k, v in sorted(carried.items()))
    content = (
        pages.error_summary(errors)
        + f'<h1>Ask {esc(authority_name)} to check</h1>'
        '<p class="lead">Its signposting officers will compare what you typed with their records and decide '
        'whether they hold this child.</p>'
        '<p>They see your name, organisation, role, the reason for your search, what you typed and how to '
        'reach you. If they confirm the child you will see what a match shows, here and in "Your checks". '
        'If a child\'s lead practitioner is told, you will see that too.</p>'
        f'<form method="post" action="/checks/new" novalidate>{hidden_csrf(csrf)}{hidden}'
        + text_input("contact-email", "Your secure email", values.get("contact-email", ""), errors,
                     hint="We send a short message here when the authority answers", kind="email",
                     autocomplete="email")
        + text_input("contact-phone", "Your phone number", values.get("contact-phone", ""), errors,
                     width="w-10", kind="tel", autocomplete="tel")
        + '<button class="button" type="submit">Ask for a check</button></form>'
    )
    return layout(f"Ask {authority_name} to check", content, who=who, csrf=csrf, errors=bool(errors))


def list_page(who: Practitioner, csrf: str, checks: list[BrokerCheck]) -> str:
    rows = "".join(
        f'<tr><td><a href="/checks/{esc(c.id)}">{esc(c.authority_name)}</a></td>'
        f'<td><strong class="tag{"" if c.unseen else " tag-grey"}">{esc(STATE_TEXT[c.state][0])}</strong>'
        + (' <span class="hint">New</span>' if c.unseen else "")
        + f'</td><td>{esc(pages.long_date(c.expires[:10]))}</td></tr>' for c in checks)
    body = ('<table><caption class="visually-hidden">Your checks</caption><thead><tr>'
            '<th scope="col">Authority</th><th scope="col">Status</th><th scope="col">Expires</th>'
            '</tr></thead><tbody>' + rows
            + '</tbody></table>') if checks else '<p>You have not asked for any checks.</p>'
    content = ('<h1>Your checks</h1><p class="lead">Authorities you asked to check a possible match.</p>'
               + body
               + '<p><a class="button button-secondary" href="/search">Start a new search</a></p>')
    return layout("Your checks", content, who=who, csrf=csrf)


def check_page(who: Practitioner, csrf: str, check: BrokerCheck, outcome: CheckOutcome | None,
               errors: list[FormError]) -> str:
    label, text = STATE_TEXT[check.state]
    parts = [pages.error_summary(errors), f'<span class="caption">Check {esc(check.id)}</span>',
             f'<h1>{esc(check.authority_name)}</h1>',
             f'<p><strong class="tag">{esc(label)}</strong> {esc(text)}</p>']
    disclosure = outcome.disclosure.to_wire() if outcome is not None and outcome.disclosure else None
    if outcome is None and check.state is not CheckState.EXPIRED and not errors:
        parts.append('<div class="warning" role="alert">'
                     '<span class="warning-icon" aria-hidden="true">!</span>'
                     '<div>The authority could not be reached just now: this is the last news Signpost had. '
                     'Try again in a few minutes.</div></div>')
    if check.state is CheckState.SAME_CHILD and disclosure is not None:
        if disclosure["status"] == "match":
            parts.append('<h2>Who is involved</h2>' + pages.involvements_table(disclosure))
        elif disclosure["status"] == "shielded":
            parts.append('<p>This authority holds information about the child that cannot be shown here. '
                         'Contact its signposting team, who will decide what can be shared.</p>'
                         + pages.contact_list(disclosure.get("contact")))
        else:
            parts.append('<p>This authority has nothing it can show you about this child.</p>')
        if check.lead_informed:
            parts.append('<div class="inset">The child\'s lead practitioner at this authority has been told '
                         'that you asked, with your contact details.</div>')
    if check.state is CheckState.MORE_INFORMATION and check.message:
        parts.append(f'<div class="inset">They asked: {esc(check.message)}</div>')
        if not check.information_used:
            parts.append(
                f'<form method="post" action="/checks/{esc(check.id)}/information" novalidate>'
                f'{hidden_csrf(csrf)}<h2>Give more information</h2>'
                '<p class="hint">You can answer once. Give any of these you have.</p>'
                + "".join(text_input(f"more-{name}", label_, "", errors, width="w-10")
                          for name, label_ in MORE_FIELDS)
                + '<button class="button" type="submit">Send</button></form>')
    parts.append(f'<p>Reference of your search: <span class="reference">{esc(check.search_id)}</span></p>'
                 '<p><a href="/checks">Your checks</a></p>')
    return layout(f"Check with {check.authority_name}", "".join(parts), who=who, csrf=csrf,
                  errors=bool(errors))


# --- handlers -------------------------------------------------------------------------------


async def _form(request: web.Request) -> tuple[dict[str, str], str, Practitioner] | web.Response:
    form = await request.post()
    signed_in = _signed_in(request)
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
    return html(ask_page(who, csrf, carried, name, {}, []))


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
            return html(ask_page(who, csrf, carried, name, values, errors), status=400)
        reason = str(exc).split(": ", 1)[-1].capitalize()
        return html(pages.message_page("The check cannot be asked", reason, who=who, csrf=csrf),
                    status=exc.status)
    except AuditUnavailable:
        return html(pages.message_page("Signpost is not available", "Checks cannot be recorded in the "
                                       "audit log just now, so none are sent. Try again later.", who=who,
                                       csrf=csrf),
                    status=503)
    return redirect(f"/checks/{check.id}")


async def handle_list(request: web.Request) -> web.Response:
    signed_in = _signed_in(request)
    if signed_in is None:
        return redirect("/sign-in")
    csrf, who = signed_in
    return html(list_page(who, csrf, request.app[CHECKS].list_mine(who)))


async def handle_check(request: web.Request) -> web.Response:
    signed_in = _signed_in(request)
    if signed_in is None:
        return redirect("/sign-in")
    csrf, who = signed_in
    try:
        check, outcome = await request.app[CHECKS].look(who, request.match_info["check_id"],
                                                        datetime.now(UTC))
    except CheckRefused:
        return html(pages.message_page("Check not found", "It may have expired.", who=who, csrf=csrf), 404)
    except AuditUnavailable:
        return html(pages.message_page("Signpost is not available", "Try again later.", who=who, csrf=csrf),
                    503)
    return html(check_page(who, csrf, check, outcome, []))


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
    except CheckRefused as exc:
        if exc.status != 400:
            return html(pages.message_page("The information was not sent", str(exc).split(": ", 1)[-1],
                                           who=who, csrf=csrf), status=exc.status)
        errors = [FormError(f"more-{e.field.rpartition('.')[2]}" if "." in e.field else "more-nhs_number",
                            "Give at least one of these" if e.field == "identity"
                            else e.message.capitalize())
                  for e in exc.errors]
        check = service.mine(who, check_ref)
        return html(check_page(who, csrf, check, None, errors), status=400)
    return redirect(f"/checks/{check_ref}")


def add_routes(app: web.Application) -> None:
    app.router.add_post("/checks/ask", handle_ask_form)
    app.router.add_post("/checks/new", handle_ask)
    app.router.add_get("/checks", handle_list)
    app.router.add_get("/checks/{check_id}", handle_check)
    app.router.add_post("/checks/{check_id}/information", handle_information)
