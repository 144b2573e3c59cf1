"""Minimum identity sets come from the trust list's policy: today's sets unless governance
states others, and a list that states unsafe or malformed sets is refused."""

from __future__ import annotations

from datetime import UTC, date, datetime, timedelta
from typing import Any

import pytest

from federation.errors import ValidationError
from federation.identity import MINIMUM_SETS, check_searchable, minimum_sets_to_json, parse_identity
from trust import keys as keyfiles
from trust import trustlist
from trust.errors import TrustError
from trust.trustlist import DOCUMENT_TYPE, GovernanceRoot, format_time

NOW = datetime(2026, 11, 21, 12, 0, tzinfo=UTC)
GOV = [keyfiles.generate() for _ in range(2)]
ROOT = GovernanceRoot(2, {keyfiles.key_id(k.public_key()): k.public_key() for k in GOV})
NAMES_AND_DATE = {"given_name": "Amara", "family_name": "Okafor", "date_of_birth": "2016-02-29"}


def verified(policy: dict[str, Any] | None) -> trustlist.TrustList:
    """A trust list with ``policy``, signed by the governance threshold and verified."""
    signed: dict[str, Any] = {
        "type": DOCUMENT_TYPE, "federation": "test", "version": 1,
        "issued": format_time(NOW - timedelta(hours=1)), "expires": format_time(NOW + timedelta(days=1)),
        "governance": ROOT.to_json(), "members": [],
    }
    if policy is not None:
        signed["policy"] = policy
    return trustlist.verify(trustlist.sign(signed, GOV), ROOT, NOW)


def test_default_sets_are_todays() -> None:
    """A trust list that states no sets gets the defaults (NHS number or UPN with the date of
    birth; both names and the date of birth)."""
    expected = MINIMUM_SETS
    actual = verified({"purposes": []}).policy.minimum_identity_sets
    assert expected == actual


def test_both_names_and_the_date_of_birth_are_enough_by_default() -> None:
    """Without sex or postcode, both names and the date of birth are accepted by default (the
    node then matches only on names rare in England, else answers possible_match)."""
    query = parse_identity(NAMES_AND_DATE)
    check_searchable(query, date(2026, 11, 21), minimum_sets=verified(None).policy.minimum_identity_sets)


def test_governance_may_ask_for_sex_or_postcode_as_well() -> None:
    """With sets that need sex or postcode besides both names and the date of birth, a search
    without either is refused, naming the sets."""
    sets = [*minimum_sets_to_json(MINIMUM_SETS[:2]),
            {"label": "names, date of birth and sex",
             "fields": ["given_name", "family_name", "date_of_birth", "sex"]},
            {"label": "names, date of birth and postcode",
             "fields": ["given_name", "family_name", "date_of_birth", "postcode"]}]
    policy = verified({"minimum_identity_sets": sets}).policy
    query = parse_identity(NAMES_AND_DATE)
    with pytest.raises(ValidationError, match=r"expected one of these sets: .*names, date of birth and sex"):
        check_searchable(query, date(2026, 11, 21), minimum_sets=policy.minimum_identity_sets)
    check_searchable(parse_identity({**NAMES_AND_DATE, "sex": "F"}), date(2026, 11, 21),
                     minimum_sets=policy.minimum_identity_sets)


@pytest.mark.parametrize(("case", "sets", "message"), [
    ("empty list", [], "expected a non-empty list"),
    ("not a list", {"fields": ["nhs_number"]}, "expected a non-empty list"),
    ("unknown field", [{"label": "x", "fields": ["nhs_number", "date_of_birth", "eye_colour"]}],
     "eye_colour"),
    ("no date of birth", [{"label": "x", "fields": ["nhs_number", "postcode"]}],
     "expected date_of_birth"),
    ("date and postcode only (browsing)", [{"label": "x", "fields": ["date_of_birth", "postcode"]}],
     "expected nhs_number, upn, or both given_name and family_name"),
    ("one name only", [{"label": "x", "fields": ["family_name", "date_of_birth", "sex"]}],
     "both given_name and family_name"),
    ("empty label", [{"label": " ", "fields": ["upn", "date_of_birth"]}], "label"),
])
def test_unsafe_or_malformed_sets_refuse_the_trust_list(case: str, sets: Any, message: str) -> None:
    """Every set must name known fields, include the date of birth and an identifier or both
    names; otherwise the whole trust list is refused, naming the set at fault."""
    with pytest.raises(TrustError, match=r"policy\.minimum_identity_sets") as caught:
        verified({"minimum_identity_sets": sets})
    assert message in str(caught.value), case
