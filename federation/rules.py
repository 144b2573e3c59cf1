"""Federation rules that both sides of the broker/node wall enforce, stated once.

The broker checks a search against these before it signs a query; every node checks the signed
query against them again (a trusted broker is no excuse to break a rule). Both sides import the
rule from here, so they cannot drift apart, and both give the same error text.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Final

from federation.errors import FieldError

SEARCHING_ROLES: Final = frozenset({"practitioner", "mediator", "signposting_officer"})
"""Roles that may search. Auditors read logs; they never search."""

PRACTITIONER_ROLES: Final = frozenset(
    {"practitioner", "mediator", "signposting_officer", "auditor", "operator"})
"""Every role a practitioner token (or a mapped OpenID Connect sign-in) may carry."""

MEDIATOR_ROLE: Final = "mediator"

MEDIATED_FIELDS: Final = ("name", "organisation", "role", "phone")
"""What a mediator must say about the professional they search on behalf of."""

ARCHIVE_AGE: Final = 18
"""Records are archived (signposting contact only) from the 18th birthday."""

DEFAULT_RETENTION_AGE: Final = 24
"""Records are deleted at this birthday unless the trust list's policy says otherwise."""

DEFAULT_RATE_LIMITS: Final[Mapping[str, int]] = {
    "practitioner_per_minute": 30,
    "practitioner_per_day": 300,
    "organisation_per_minute": 600,
    "organisation_per_day": 20000,
}
"""Searches allowed per practitioner and per organisation, unless the trust list's policy says."""


def check_role(role: str) -> FieldError | None:
    """``None`` if ``role`` may search, else the error naming the roles that may."""
    if role in SEARCHING_ROLES:
        return None
    allowed = ", ".join(sorted(SEARCHING_ROLES))
    return FieldError("role", f"{role!r} may not search (expected one of {allowed})")


def check_mediation(role: str, mediated: object) -> tuple[dict[str, str] | None, list[FieldError]]:
    """The professional a mediator names (cleaned), or the errors naming each field at fault.

    A mediator must name the professional (every field of ``MEDIATED_FIELDS``, at least two
    characters each); anyone else must not name one.
    """
    if role != MEDIATOR_ROLE:
        if mediated is None:
            return None, []
        return None, [FieldError("on_behalf_of", "only a mediator may search on behalf of someone")]
    if not isinstance(mediated, Mapping):
        return None, [FieldError("on_behalf_of", "a mediator must name the professional "
                                 f"({', '.join(MEDIATED_FIELDS)})")]
    named: dict[str, str] = {}
    errors: list[FieldError] = []
    for name in MEDIATED_FIELDS:
        value = mediated.get(name)
        if not isinstance(value, str) or len(value.strip()) < 2:
            errors.append(FieldError(f"on_behalf_of.{name}", "is required for a mediator"))
        else:
            named[name] = value.strip()
    return (None if errors else named), errors
