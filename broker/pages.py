"""The practitioner pages' HTML: pure functions from data to markup, through jinja2 templates.

Every page is a template in ``broker/templates/`` rendered with autoescape on, so every value
that reaches a page (a node's contact names, organisations, phone numbers, emails, roles; what
the practitioner typed) is escaped by jinja2 and never by hand. No scripts, no inline styles.
"""

from __future__ import annotations

import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from datetime import date
from typing import Any

from jinja2 import Environment, PackageLoader, StrictUndefined

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


_PHONE_CHARS = re.compile(r"[^0-9+]")
_EMAIL = re.compile(r"^[^@\s<>\"']+@[^@\s<>\"']+\.[^@\s<>\"']+$")


def tel_digits(phone: str | None) -> str:
    """What a ``tel:`` link may carry: digits and ``+`` only (empty when nothing is left)."""
    return _PHONE_CHARS.sub("", phone or "")


def is_email(address: object) -> bool:
    """Whether ``address`` looks enough like an email address to be a ``mailto:`` link."""
    return isinstance(address, str) and _EMAIL.match(address) is not None


SERVICE_NAMES = {
    "social_care": "Children's social care", "early_help": "Early help", "health_visiting": "Health visiting",
    "school_nursing": "School nursing", "education": "Education", "youth_justice": "Youth justice",
    "camhs": "Child and adolescent mental health", "gp": "GP", "police": "Police",
}


def service_name(code: str) -> str:
    return SERVICE_NAMES.get(code, code.replace("_", " ").capitalize())


_TEMPLATES = Environment(
    loader=PackageLoader("broker", "templates"),
    autoescape=True,  # every template here is HTML
    undefined=StrictUndefined,
    trim_blocks=True,
    lstrip_blocks=True,
)
_TEMPLATES.filters.update(long_date=long_date, tel_digits=tel_digits, service=service_name)
_TEMPLATES.tests["email"] = is_email


@dataclass(frozen=True)
class FormError:
    """One error shown in the summary and beside its field.

    ``anchor`` is the id the summary links to; ``fields`` every field at fault (by default the
    anchor alone), so a date missing its month and year marks those two boxes and not the day.
    """

    anchor: str
    text: str
    fields: tuple[str, ...] = ()

    @property
    def at_fault(self) -> tuple[str, ...]:
        return self.fields or (self.anchor,)


def _invalid(errors: Sequence[FormError]) -> dict[str, FormError]:
    """Each field at fault and the first error that names it."""
    found: dict[str, FormError] = {}
    for error in errors:
        for field_id in error.at_fault:
            found.setdefault(field_id, error)
    return found


def _render(template: str, *, title: str, who: Practitioner | None = None, csrf: str | None = None,
            environment: str = "Demo", errors: Sequence[FormError] = (), **context: Any) -> str:
    return _TEMPLATES.get_template(template).render(
        title=title, who=who, csrf=csrf, environment=environment, errors=list(errors),
        invalid=_invalid(errors), **context)


# --- pages ----------------------------------------------------------------------------------


def sign_in_page(csrf: str, values: Mapping[str, str], errors: Sequence[FormError],
                 users: Sequence[str]) -> str:
    return _render("sign_in.html", title="Sign in", csrf=csrf, errors=errors, values=values,
                   users=list(users))


def no_identity_provider_page() -> str:
    return _render("no_identity_provider.html", title="Sign in", environment="Live")


def choose_provider_page(providers: Sequence[tuple[str, str]]) -> str:
    """Sign in: one link per identity provider (member id, name) the federation lists."""
    return _render("choose_provider.html", title="Sign in", environment="Live", providers=list(providers))


def signed_in_page() -> str:
    """After an OpenID sign-in: on to the search page by a same-site navigation."""
    return _render("signed_in.html", title="Signed in", environment="Live")


def signed_out_page(reason: str) -> str:
    return _render("signed_out.html", title=reason)


def message_page(title: str, text: str, *, who: Practitioner | None = None, csrf: str | None = None) -> str:
    return _render("message.html", title=title, text=text, who=who, csrf=csrf)


SEX_OPTIONS = (("F", "Female"), ("M", "Male"), ("X", "Other"), ("U", "Not known"))


def search_page(who: Practitioner, csrf: str, purposes: Sequence[tuple[str, str]],
                values: Mapping[str, str], errors: Sequence[FormError], mediator: bool,
                notice: bool = False) -> str:
    """``notice``: an authority answered one of the practitioner's checks since they last looked."""
    return _render("search.html", title="Search for a child", who=who, csrf=csrf, errors=errors,
                   purposes=list(purposes), values=values, mediator=mediator, sex_options=SEX_OPTIONS,
                   notice=notice)


def _names(unavailable: Sequence[Any]) -> list[str]:
    """The authorities that did not answer, by name (an entry is a name, or an object with one)."""
    return [str(u.get("name", u.get("id", ""))) if isinstance(u, Mapping) else str(u) for u in unavailable]


def results_page(who: Practitioner, csrf: str, answer: Mapping[str, Any],
                 searched: Sequence[tuple[str, str]], ask: Mapping[str, str] | None = None,
                 notice: bool = False, contact_given: bool = False) -> str:
    """``ask``: the hidden fields of "Ask this authority to check" (the search's reference, purpose
    and the identity as typed, posted in a form body, never a URL); ``None`` shows no button."""
    results = answer["results"]
    by_status = {status: [r for r in results if r["status"] == status]
                 for status in ("match", "possible_match", "shielded", "no_match")}
    return _render("results.html", title="Search results", who=who, csrf=csrf,
                   complete=answer["complete"], unavailable=_names(answer.get("unavailable", [])),
                   matched=by_status["match"], possible=by_status["possible_match"],
                   shielded=by_status["shielded"], nothing=by_status["no_match"],
                   searched=list(searched), query_id=answer["query_id"], ask=ask, notice=notice,
                   contact_given=contact_given)


def ask_check_page(who: Practitioner, csrf: str, carried: Mapping[str, str], authority: str,
                   values: Mapping[str, str], errors: Sequence[FormError]) -> str:
    """Ask one authority to check: the practitioner's contact; ``carried`` goes on as hidden fields."""
    return _render("check_ask.html", title=f"Ask {authority} to check", who=who, csrf=csrf, errors=errors,
                   carried=carried, authority=authority, values=values)


def checks_page(who: Practitioner, csrf: str, checks: Sequence[Mapping[str, Any]]) -> str:
    """Your checks: each with ``id``, ``authority``, ``label``, ``unseen`` and ``expires``."""
    return _render("checks.html", title="Your checks", who=who, csrf=csrf, checks=list(checks))


def check_page(who: Practitioner, csrf: str, check: Mapping[str, Any], errors: Sequence[FormError]) -> str:
    """One check: ``id``, ``search_id``, ``authority``, ``label``, ``text``, ``message``,
    ``can_add_information``, ``lead_informed``, ``unavailable`` and, when confirmed, ``disclosure``
    (what a match discloses, as a node answer's fields)."""
    return _render("check.html", title=f"Check with {check['authority']}", who=who, csrf=csrf,
                   errors=errors, check=check)
