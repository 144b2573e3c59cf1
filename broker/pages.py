"""The practitioner pages' HTML: pure functions from data to escaped markup.

Every value that did not come from this file goes through ``esc``; the layout is
``templates/layout.html`` filled with ``string.Template``. No scripts, no inline styles.
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from datetime import date
from html import escape
from importlib import resources
from string import Template
from typing import Any

from trust.tokens import Practitioner


def long_date(iso: str | None) -> str:
    """A date as GOV.UK writes it: ``2025-03-14`` becomes ``14 March 2025`` (others unchanged)."""
    if not iso:
        return ""
    try:
        day = date.fromisoformat(iso)
    except ValueError:
        return iso
    return f"{day.day} {day:%B %Y}"


def esc(value: object) -> str:
    return escape(str(value), quote=True)


_LAYOUT = Template(resources.files("broker").joinpath("templates/layout.html").read_text("utf-8"))


@dataclass(frozen=True)
class FormError:
    """One error shown in the summary and beside its field (``anchor`` is the field's id)."""

    anchor: str
    text: str


def layout(title: str, content: str, *, who: Practitioner | None = None, csrf: str | None = None,
           environment: str = "Demo", errors: bool = False) -> str:
    account = ""
    if who is not None and csrf is not None:
        account = (
            '<nav class="account" aria-label="Account">'
            f'<span>{esc(who.name)}, {esc(who.org)}</span>'
            '<form method="post" action="/sign-out">'
            f'<input type="hidden" name="csrf_token" value="{esc(csrf)}">'
            '<button class="link-button" type="submit">Sign out</button></form></nav>'
        )
    prefix = "Error: " if errors else ""
    return _LAYOUT.substitute(title=esc(prefix + title), account=account, content=content,
                              environment=esc(environment))


def error_summary(errors: Sequence[FormError]) -> str:
    if not errors:
        return ""
    items = "".join(f'<li><a href="#{esc(e.anchor)}">{esc(e.text)}</a></li>' for e in errors)
    return ('<div class="error-summary" role="alert" aria-labelledby="error-summary-title" tabindex="-1">'
            '<h2 id="error-summary-title">There is a problem</h2>'
            f'<ul>{items}</ul></div>')


def _error_for(anchors: Iterable[str], errors: Sequence[FormError]) -> FormError | None:
    wanted = set(anchors)
    return next((e for e in errors if e.anchor in wanted), None)


def _error_line(error: FormError | None, field_id: str) -> str:
    if error is None:
        return ""
    return (f'<p id="{field_id}-error" class="error-message">'
            f'<span class="visually-hidden">Error:</span> {esc(error.text)}</p>')


def text_input(field_id: str, label: str, value: str, errors: Sequence[FormError], *, hint: str = "",
               width: str = "", kind: str = "text", autocomplete: str = "off",
               spellcheck: bool = False) -> str:
    error = _error_for([field_id], errors)
    described = " ".join(x for x in (f"{field_id}-hint" if hint else "",
                                     f"{field_id}-error" if error else "") if x)
    hint_html = f'<span id="{field_id}-hint" class="hint">{esc(hint)}</span>' if hint else ""
    classes = " ".join(x for x in (width, "input-error" if error else "") if x)
    return (
        f'<div class="form-group{" form-group-error" if error else ""}">'
        f'<label for="{field_id}">{esc(label)}</label>{hint_html}{_error_line(error, field_id)}'
        f'<input type="{kind}" id="{field_id}" name="{field_id}" value="{esc(value)}"'
        f'{f" class={chr(34)}{classes}{chr(34)}" if classes else ""}'
        f'{f" aria-describedby={chr(34)}{described}{chr(34)}" if described else ""}'
        f' autocomplete="{autocomplete}" spellcheck="{"true" if spellcheck else "false"}"></div>'
    )


def radios(name: str, legend: str, options: Sequence[tuple[str, str]], chosen: str,
           errors: Sequence[FormError], *, hint: str = "", inline: bool = False) -> str:
    error = _error_for([name], errors)
    described = " ".join(x for x in (f"{name}-hint" if hint else "", f"{name}-error" if error else "") if x)
    hint_html = f'<span id="{name}-hint" class="hint">{esc(hint)}</span>' if hint else ""
    items = []
    for i, (value, text) in enumerate(options):
        field_id = name if i == 0 else f"{name}-{i + 1}"
        checked = " checked" if value == chosen else ""
        items.append(f'<div class="radio"><input type="radio" id="{field_id}" name="{name}" '
                     f'value="{esc(value)}"{checked}><label for="{field_id}">{esc(text)}</label></div>')
    return (
        f'<div class="form-group{" form-group-error" if error else ""}">'
        f'<fieldset{f" aria-describedby={chr(34)}{described}{chr(34)}" if described else ""}>'
        f'<legend class="legend-s">{esc(legend)}</legend>{hint_html}{_error_line(error, name)}'
        f'<div class="{"radios-inline" if inline else "radios"}">{"".join(items)}</div></fieldset></div>'
    )


def date_input(prefix: str, legend: str, values: dict[str, str], errors: Sequence[FormError],
               hint: str) -> str:
    error = _error_for([f"{prefix}-day", f"{prefix}-month", f"{prefix}-year"], errors)
    parts = []
    for part, label, width in (("day", "Day", "w-2"), ("month", "Month", "w-2"), ("year", "Year", "w-4")):
        field_id = f"{prefix}-{part}"
        cls = f"{width} input-error" if error else width
        parts.append(f'<div><label for="{field_id}">{label}</label>'
                     f'<input type="text" id="{field_id}" name="{field_id}" class="{cls}" '
                     f'inputmode="numeric" autocomplete="off" value="{esc(values.get(field_id, ""))}"></div>')
    described = f"{prefix}-hint" + (f" {prefix}-error" if error else "")
    return (
        f'<div class="form-group{" form-group-error" if error else ""}">'
        f'<fieldset role="group" aria-describedby="{described}">'
        f'<legend class="legend-s">{esc(legend)}</legend>'
        f'<span id="{prefix}-hint" class="hint">{esc(hint)}</span>{_error_line(error, prefix)}'
        f'<div class="date">{"".join(parts)}</div></fieldset></div>'
    )


def hidden_csrf(csrf: str) -> str:
    return f'<input type="hidden" name="csrf_token" value="{esc(csrf)}">'


# --- pages ----------------------------------------------------------------------------------


def sign_in_page(csrf: str, values: dict[str, str], errors: Sequence[FormError], users: Sequence[str]) -> str:
    content = (
        f'{error_summary(errors)}'
        '<span class="caption">Demo identity provider</span><h1>Sign in</h1>'
        '<p>This stands in for your authority\'s own sign-in. Use one of the demo accounts: '
        f'{esc(", ".join(users))}.</p>'
        f'<form method="post" action="/demo-idp/sign-in" novalidate>{hidden_csrf(csrf)}'
        + text_input("username", "Username", values.get("username", ""), errors, width="w-10",
                     autocomplete="username")
        + text_input("password", "Password", "", errors, kind="password", width="w-10",
                     autocomplete="current-password")
        + text_input("code", "One-time code", "", errors, width="w-10", autocomplete="one-time-code",
                     hint="The 6-digit code from your authenticator app")
        + '<button class="button" type="submit">Sign in</button></form>'
    )
    return layout("Sign in", content, errors=bool(errors))


def no_identity_provider_page() -> str:
    content = (
        '<h1>Sign in</h1><p>Sign in through your organisation\'s single sign-on. '
        'If this page does not send you there, ask your IT service desk to connect Signpost to '
        "your authority's identity provider.</p>"
    )
    return layout("Sign in", content, environment="Live")


def signed_out_page(reason: str) -> str:
    content = (f'<h1>{esc(reason)}</h1>'
               '<p>Nothing you searched for is kept in this browser or on the server.</p>'
               '<p><a class="button" href="/sign-in">Sign in again</a></p>')
    return layout(reason, content)


def message_page(title: str, text: str, *, who: Practitioner | None = None, csrf: str | None = None) -> str:
    return layout(title, f'<h1>{esc(title)}</h1><p>{esc(text)}</p>', who=who, csrf=csrf)


SEX_OPTIONS = (("F", "Female"), ("M", "Male"), ("X", "Other"), ("U", "Not known"))


def search_page(who: Practitioner, csrf: str, purposes: Sequence[tuple[str, str]],
                values: dict[str, str], errors: Sequence[FormError], mediator: bool, notice: str = "") -> str:
    identity_error = _error_for(["identity"], errors)
    mediated = ""
    if mediator:
        mediated = (
            '<h2>Who you are searching for</h2>'
            '<p class="hint">You are searching on behalf of another professional. Their details are '
            'logged with the search and shown to the authorities that answer.</p>'
            + text_input("obo-name", "Their full name", values.get("obo-name", ""), errors)
            + text_input("obo-organisation", "Their organisation", values.get("obo-organisation", ""), errors)
            + text_input("obo-role", "Their role", values.get("obo-role", ""), errors,
                         hint="For example, health visitor or designated safeguarding lead")
            + text_input("obo-phone", "Their phone number", values.get("obo-phone", ""), errors,
                         width="w-10")
        )
    content = (
        f'{notice}{error_summary(errors)}'
        '<h1>Search for a child</h1>'
        '<p class="lead">Find out which services in other authorities are working with a child, '
        'and how to contact them.</p>'
        f'<form method="post" action="/search" novalidate autocomplete="off">{hidden_csrf(csrf)}'
        f'<div id="identity" tabindex="-1" class="form-group{" form-group-error" if identity_error else ""}">'
        '<h2>The child</h2>'
        '<p class="hint">Give the NHS number or unique pupil number (UPN) with the date of birth if you '
        'have them. Otherwise give both names, the date of birth, and the sex or postcode.</p>'
        f'{_error_line(identity_error, "identity")}'
        + text_input("nhs_number", "NHS number", values.get("nhs_number", ""), errors, width="w-10",
                     hint="10 digits, for example 485 777 3456")
        + text_input("upn", "Unique pupil number (UPN)", values.get("upn", ""), errors, width="w-10",
                     hint="13 characters, for example A123456789012")
        + text_input("given_name", "Given name", values.get("given_name", ""), errors)
        + text_input("family_name", "Family name", values.get("family_name", ""), errors)
        + date_input("dob", "Date of birth", values, errors, "For example, 27 3 2015")
        + radios("sex", "Sex", SEX_OPTIONS, values.get("sex", ""), errors, inline=True)
        + text_input("postcode", "Postcode", values.get("postcode", ""), errors, width="w-10",
                     hint="Where the child lives now")
        + '</div>'
        + mediated
        + '<h2>Why you are searching</h2>'
        + radios("purpose", "Purpose of this search", purposes, values.get("purpose", ""), errors,
                 hint="Your purpose is recorded and can be seen by every authority you search.")
        + '<button class="button" type="submit">Search</button></form>'
    )
    return layout("Search for a child", content, who=who, csrf=csrf, errors=bool(errors))


_PHONE_CHARS = re.compile(r"[^0-9+]")
_EMAIL = re.compile(r"^[^@\s<>\"']+@[^@\s<>\"']+\.[^@\s<>\"']+$")


def phone_link(phone: str | None) -> str:
    if not phone:
        return ""
    digits = _PHONE_CHARS.sub("", phone)
    if not digits:
        return esc(phone)
    return f'<a href="tel:{esc(digits)}">{esc(phone)}</a>'


def mail_link(address: str | None) -> str:
    if not address:
        return ""
    if not _EMAIL.match(address):
        return esc(address)
    return f'<a href="mailto:{esc(address)}">{esc(address)}</a>'


def _contact(c: dict[str, Any] | None, who: str = "Team") -> str:
    """A contact as a summary list; ``who`` labels the name (a team, or a lead practitioner)."""
    if not c:
        return ""
    rows = [(who, esc(c.get("name", "")))]
    if c.get("organisation"):
        rows.append(("Organisation", esc(c["organisation"])))
    if c.get("phone"):
        rows.append(("Phone", phone_link(c["phone"])))
    if c.get("secure_email"):
        rows.append(("Secure email", mail_link(c["secure_email"])))
    return '<dl class="summary">' + "".join(f"<div><dt>{k}</dt><dd>{v}</dd></div>" for k, v in rows) + "</dl>"


SERVICE_NAMES = {
    "social_care": "Children's social care", "early_help": "Early help", "health_visiting": "Health visiting",
    "school_nursing": "School nursing", "education": "Education", "youth_justice": "Youth justice",
    "camhs": "Child and adolescent mental health", "gp": "GP", "police": "Police",
}


def _service(code: str) -> str:
    return SERVICE_NAMES.get(code, code.replace("_", " ").capitalize())


def _involvements(result: dict[str, Any]) -> str:
    rows = []
    for inv in result.get("involvements", []):
        lead = ' <strong class="tag tag-green">Lead</strong>' if inv.get("lead") else ""
        links = (phone_link(inv.get("phone")), mail_link(inv.get("secure_email")))
        reach = "<br>".join(x for x in links if x)
        rows.append(
            f'<tr><td>{esc(_service(inv["service_category"]))}<br><span class="hint">'
            f'{esc(inv["organisation"])}</span></td>'
            f'<td>{esc(inv["practitioner_name"])}{lead}<br><span class="hint">{esc(inv["practitioner_role"])}'
            f'</span></td><td>{reach}</td><td>{esc(long_date(inv.get("since")))}</td></tr>')
    table = ('<table><caption class="visually-hidden">Who is involved</caption><thead><tr>'
             '<th scope="col">Service</th><th scope="col">Practitioner</th><th scope="col">Contact</th>'
             '<th scope="col">Since</th></tr></thead><tbody>' + "".join(rows) + "</tbody></table>")
    assessment = ""
    if result.get("assessment"):
        assessment = ('<h3>An early help assessment exists</h3><p>Ask its lead for it:</p>'
                      + _contact(result["assessment"], "Lead practitioner"))
    return table + assessment


def ask_button(result: dict[str, Any], csrf: str, ask: Mapping[str, str] | None) -> str:
    """"Ask this authority to check" for a possible match: the search's reference and the identity
    as typed travel in the form's body (never a URL), to the check page."""
    if ask is None:
        return ""
    hidden = "".join(f'<input type="hidden" name="{esc(k)}" value="{esc(v)}">'
                     for k, v in sorted(ask.items()))
    return ('<form method="post" action="/checks/ask">' + hidden_csrf(csrf) + hidden
            + f'<input type="hidden" name="authority" value="{esc(result["authority"]["id"])}">'
            + f'<button class="button" type="submit">Ask {esc(result["authority"]["name"])} to check</button>'
            '</form>')


def involvements_table(result: dict[str, Any]) -> str:
    """The involvements of a match (or of a confirmed check), as the results page shows them."""
    return _involvements(result)


def contact_list(contact: dict[str, Any] | None) -> str:
    return _contact(contact)


def check_notice(unseen: int) -> str:
    """Shown on the next page a practitioner loads after an authority answered their check."""
    if not unseen:
        return ""
    return ('<div class="inset" role="status"><strong>An authority has answered your check.</strong> '
            '<a href="/checks">See your checks</a></div>')


def results_page(who: Practitioner, csrf: str, answer: dict[str, Any],
                 searched: Sequence[tuple[str, str]], ask: Mapping[str, str] | None = None,
                 notice: str = "") -> str:
    results = answer["results"]
    parts: list[str] = [notice, '<h1>Search results</h1>']
    if not answer["complete"]:
        names = ", ".join(answer["unavailable"])
        parts.append(
            '<div class="warning" role="alert"><span class="warning-icon" aria-hidden="true">!</span>'
            f'<div>Results may be incomplete. No answer came from: {esc(names)}. '
            'Search again in a few minutes, or contact those authorities directly.</div></div>')
    matched = [r for r in results if r["status"] == "match"]
    possible = [r for r in results if r["status"] == "possible_match"]
    shielded = [r for r in results if r["status"] == "shielded"]
    nothing = [r for r in results if r["status"] == "no_match"]
    if not matched and not possible and not shielded:
        parts.append('<p class="lead">No authority that answered holds a record of this child.</p>')
    for r in matched:
        parts.append(f'<section class="panel" aria-labelledby="a-{esc(r["authority"]["id"])}">'
                     f'<h2 id="a-{esc(r["authority"]["id"])}">{esc(r["authority"]["name"])}</h2>'
                     '<p><strong class="tag tag-green">Known</strong> These services are working with the '
                     'child.</p>' + _involvements(r) + "</section>")
    for r in possible:
        parts.append(
            f'<section class="panel" aria-labelledby="a-{esc(r["authority"]["id"])}">'
            f'<h2 id="a-{esc(r["authority"]["id"])}">{esc(r["authority"]["name"])}</h2>'
            '<p><strong class="tag">Possible match</strong> This authority may know the child, but the '
            'details you gave are not enough to be sure. Nothing has been shown.</p>'
            '<div class="inset">Search again adding the NHS number or unique pupil number (UPN), or the '
            'postcode and sex, so only one child can match. Or ask this authority\'s signposting team to '
            'check by hand: they see what you typed, not the reverse.</div>'
            + ask_button(r, csrf, ask) + _contact(r.get("contact")) + "</section>")
    for r in shielded:
        parts.append(
            f'<section class="panel" aria-labelledby="a-{esc(r["authority"]["id"])}">'
            f'<h2 id="a-{esc(r["authority"]["id"])}">{esc(r["authority"]["name"])}</h2>'
            '<p><strong class="tag tag-red">Contact the authority</strong> This authority holds information '
            'about the child that cannot be shown here. Contact its signposting team, who will '
            'decide what can be shared and put you in touch.</p>' + _contact(r.get("contact")) + "</section>")
    if nothing:
        parts.append('<h2>No record</h2><ul>' + "".join(
            f'<li>{esc(r["authority"]["name"])}</li>' for r in nothing) + "</ul>")
    if searched:
        parts.append('<h2>You searched for</h2><dl class="summary">' + "".join(
            f"<div><dt>{esc(k)}</dt><dd>{esc(v)}</dd></div>" for k, v in searched) + "</dl>")
    parts.append(f'<p>Reference for this search: <span class="reference">{esc(answer["query_id"])}</span>'
                 '<br><span class="hint">Quote it if you contact an authority or the Signpost team.'
                 '</span></p>')
    parts.append('<p><a class="button button-secondary" href="/search">Start a new search</a></p>')
    return layout("Search results", "".join(parts), who=who, csrf=csrf)
