"""Every HTML page and report, rendered through its templates with hostile strings in every field.

A node is another council's system: whatever it sends (contact names, organisations, phone
numbers, emails, roles, dates, service codes) is data, never markup. The same goes for what a
practitioner types, the claims in their token and the audit log's entries in the access report.
"""

from __future__ import annotations

from collections.abc import Callable
from datetime import UTC, datetime
from html.parser import HTMLParser
from types import SimpleNamespace
from typing import Any

import pytest

from broker import pages
from broker.pages import FormError
from node import staff_web
from trust import auditor
from trust.auditclient import access_html
from trust.checkpoint import Checkpoint
from trust.tokens import Practitioner

HOSTILE = ("<script>alert(1)</script>\"'><img src=x onerror=alert(2)>{{ 7*7 }}{% if 1 %}x{% endif %}"
           "&amp;<!--")
# Looks enough like an email address to become a mailto: link, and still tries to break out.
HOSTILE_EMAIL = "o&amp;b=\u0060x{{7*7}}@example.gov.uk"


class Page(HTMLParser):
    """The elements, attributes and text a browser would see in a page."""

    def __init__(self, markup: str) -> None:
        super().__init__(convert_charrefs=True)
        self.tags: set[str] = set()
        self.attributes: list[tuple[str, str]] = []
        self.text: list[str] = []
        self.comments: list[str] = []
        self.inputs: dict[str, str] = {}  # each input's id and class
        self.feed(markup)
        self.close()

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        self.tags.add(tag)
        self.attributes.extend((name, value or "") for name, value in attrs)
        if tag == "input":
            self.inputs[dict(attrs).get("id") or ""] = dict(attrs).get("class") or ""

    def handle_data(self, data: str) -> None:
        self.text.append(data)

    def handle_comment(self, data: str) -> None:
        self.comments.append(data)


def who(value: str) -> Practitioner:
    return Practitioner("leeds-idp", value, value, value, "practitioner", ("pwd", "otp"), "leeds", "j", 1)


def contact(value: str) -> dict[str, str]:
    return {"name": value, "organisation": value, "phone": value, "secure_email": value}


def answer(value: str, email: str) -> dict[str, object]:
    """A broker answer with ``value`` in every field a node (or the trust list) can fill."""
    involvement = {"service_category": value, "organisation": value, "practitioner_name": value,
                   "practitioner_role": value, "phone": value, "secure_email": value, "since": value,
                   "lead": True}
    linked = {**involvement, "phone": "0113 496 0001 " + value, "secure_email": email}
    authority = {"id": value, "name": value}
    return {
        "query_id": value, "complete": False, "unavailable": [value],
        "results": [
            {"status": "match", "authority": authority, "involvements": [involvement, linked],
             "assessment": contact(value)},
            {"status": "possible_match", "authority": authority, "contact": contact(value)},
            {"status": "shielded", "authority": authority,
             "contact": {**contact(value), "secure_email": email}},
            {"status": "no_match", "authority": authority},
        ],
    }


def form_values(value: str) -> dict[str, str]:
    fields = ("nhs_number", "upn", "given_name", "family_name", "dob-day", "dob-month", "dob-year", "sex",
              "postcode", "purpose", "obo-name", "obo-organisation", "obo-role", "obo-phone", "username")
    return dict.fromkeys(fields, value)


def errors(value: str) -> list[FormError]:
    return [FormError(anchor, value) for anchor in ("identity", "dob-day", "sex", "purpose", "obo-name",
                                                    "username", value)]


def check(value: str, email: str, status: str | None) -> dict[str, object]:
    """A check page's data with ``value`` in every field a node or the practitioner can fill."""
    results = answer(value, email)["results"]
    disclosure = next((r for r in results if r["status"] == status), None)  # type: ignore[index]
    return {"id": value, "search_id": value, "authority": value, "label": value, "text": value,
            "message": value if disclosure is None else None, "can_add_information": disclosure is None,
            "lead_informed": disclosure is not None, "disclosure": disclosure, "unavailable": True}


def access_rows(value: str) -> list[dict[str, str]]:
    return [dict.fromkeys(auditor.ACCESS_COLUMNS, value)]


PAGES: dict[str, Callable[[str, str], str]] = {
    "sign-in": lambda v, e: pages.sign_in_page(v, form_values(v), errors(v), [v]),
    "no identity provider": lambda v, e: pages.no_identity_provider_page(),
    "choose a provider": lambda v, e: pages.choose_provider_page([(v, v)]),
    "signed out": lambda v, e: pages.signed_out_page(v),
    "message": lambda v, e: pages.message_page(v, v, who=who(v), csrf=v),
    "search": lambda v, e: pages.search_page(who(v), v, [(v, v)], form_values(v), errors(v), False),
    "mediator's search": lambda v, e: pages.search_page(who(v), v, [(v, v)], form_values(v), errors(v), True),
    "results": lambda v, e: pages.results_page(who(v), v, answer(v, e), [(v, v)]),
    "results with a check to ask": lambda v, e: pages.results_page(
        who(v), v, answer(v, e), [(v, v)], ask={"search_id": v, "id-given_name": v}, notice=True),
    "ask for a check": lambda v, e: pages.ask_check_page(
        who(v), v, {"search_id": v, "id-given_name": v}, v, {"contact-email": v}, errors(v)),
    "your checks": lambda v, e: pages.checks_page(
        who(v), v, [{"id": v, "authority": v, "label": v, "unseen": True, "expires": v}]),
    "a confirmed check": lambda v, e: pages.check_page(who(v), v, check(v, e, "match"), []),
    "a shielded check": lambda v, e: pages.check_page(who(v), v, check(v, e, "shielded"), []),
    "a check needing more": lambda v, e: pages.check_page(who(v), v, check(v, e, None), errors(v)),
    "access report": lambda v, e: access_html(
        access_rows(v), node=v, node_name=v, record_id=v, checkpoint=Checkpoint(v, 3, bytes(32)),
        generated=datetime(2026, 1, 2, tzinfo=UTC)),
}


def staff_page(template: str, **values: Any) -> Callable[[str, str], str]:
    """A staff page (a node's officers' pages) with every value it shows set to ``v``."""

    def render(v: str, e: str) -> str:
        officer = SimpleNamespace(name=v, org=v)
        shown = {key: value(v, e) if callable(value) else value for key, value in values.items()}
        return staff_web._TEMPLATES.get_template(template).render(
            authority=v, officer=officer, csrf=v, errors=[], title=v, **shown)

    return render


def _check(v: str, e: str) -> SimpleNamespace:
    return SimpleNamespace(id=v, search_id=v, message=v)


def _queued(v: str, e: str) -> list[SimpleNamespace]:
    return [SimpleNamespace(id=v, name=v, org=v, purpose=v, received=v, expires=v, state="pending",
                            state_label=v)]


STAFF_PAGES: dict[str, Callable[[str, str], str]] = {
    "staff sign in": staff_page("sign_in.html", open_id=True, token_sign_in=True),
    "staff message": staff_page("message.html", text=lambda v, e: v, link="/checks",
                                link_text=lambda v, e: v),
    "staff queue": staff_page("queue.html", checks=_queued),
    "staff check": staff_page(
        "check.html", check=_check, asker=lambda v, e: SimpleNamespace(name=v, org=v, role=v),
        on_behalf_of=lambda v, e: SimpleNamespace(name=v, organisation=v, role=v, phone=v),
        contact=lambda v, e: [v, e], purpose=lambda v, e: v, state_label=lambda v, e: v,
        expires=lambda v, e: v, rows=lambda v, e: [(v, v, [v, v])],
        candidates=lambda v, e: [SimpleNamespace(record_id=v, shielded=False)], can_ask=True, open=True),
    "staff who has looked": staff_page(
        "looked.html", record_id=lambda v, e: v, open=True,
        rows=lambda v, e: [SimpleNamespace(time=v, practitioner=v, role=v, organisation=v, purpose=v,
                                           outcome=v, how_matched=v)]),
}


@pytest.mark.parametrize("name", [*PAGES, *STAFF_PAGES])
def test_hostile_values_are_text_on_every_page(name: str) -> None:
    """Proves a value full of markup (a script, a broken-out attribute with an event handler, a
    comment, template syntax) adds no element, attribute or comment to the page, and reaches the
    reader as the same text, template syntax included and unevaluated."""
    render = PAGES.get(name) or STAFF_PAGES[name]
    plain, hostile = Page(render("plain", "plain@example.gov.uk")), Page(render(HOSTILE, HOSTILE_EMAIL))
    assert plain.tags == hostile.tags
    assert sorted({a for a, _ in plain.attributes}) == sorted({a for a, _ in hostile.attributes})
    assert plain.comments == hostile.comments
    if name != "no identity provider":  # the one page that shows nothing it is given
        assert HOSTILE in "".join(hostile.text)


def test_node_contacts_become_links_that_carry_only_the_contact() -> None:
    """Proves a node's phone number becomes a ``tel:`` link of its digits alone, and an address that
    looks like an email a ``mailto:`` link carrying exactly that address (its ampersand, entity and
    template syntax kept as text inside the attribute); nothing else becomes a link."""
    page = Page(pages.results_page(who("Sam"), "csrf", answer(HOSTILE, HOSTILE_EMAIL), []))
    links = {value for attribute, value in page.attributes if attribute == "href" and ":" in value}
    assert {"mailto:" + HOSTILE_EMAIL, "tel:0113496000112771", "tel:12771"} == links


def test_only_the_date_boxes_at_fault_are_marked() -> None:
    """Proves an error naming the month and year marks those two boxes in error and not the day."""
    error = FormError("dob-month", "Date of birth must include a month and a year", ("dob-month", "dob-year"))
    page = Page(pages.search_page(who("Sam"), "csrf", [("p", "P")], {"dob-day": "3"}, [error], False))
    assert {"dob-day": "w-2", "dob-month": "w-2 input-error", "dob-year": "w-4 input-error"} == {
        i: page.inputs[i] for i in ("dob-day", "dob-month", "dob-year")}
