"""The disclosure matrix: role x shielded x sensitive x consent x archived x same/other authority.

Every cell asserts the exact answer the node would sign (``Disclosure.to_wire``): which status,
which keys, which involvements. The expected answers are written out independently of
``node.policy`` from the rules in docs/policy.md.
"""

from __future__ import annotations

import itertools
from dataclasses import dataclass
from datetime import date
from typing import Any

import pytest

from federation.protocol import DISCLOSED_FIELDS, Contact, QueryClaims, Status
from node.policy import PolicyRefusal, Requester, check_query, decide, notifications
from node.store import Child, Involvement

TODAY = date(2026, 11, 21)
AUTHORITY = "alpha"
CONTACT = Contact(name="alpha signposting team", phone="0300 555 0100",
                  secure_email="signposting@alpha.example.gov.uk", organisation="Alpha Council")
SENSITIVE_CATEGORIES = frozenset({"sexual_health", "substance_misuse"})
PURPOSES = ("child_protection_enquiry", "early_help")


def child(record_id: str = "C-1", *, shielded: bool = False, archived: bool = False) -> Child:
    dob = date(2008, 1, 1) if archived else date(2019, 5, 5)
    return Child(record_id=record_id, pseudonym=f"p-{record_id}", nhs_number=None, upn=None,
                 given_name="amara", family_name="okafor", other_names=(), date_of_birth=dob,
                 sex="F", postcode="LS8 2QR", shielded=shielded)


def involvement(record_id: str, category: str, *, lead: bool = False, sensitive: bool = False,
                consent: bool = False, assessment: bool = False, end: date | None = None,
                notify_url: str | None = None, organisation: str = "Children's Social Care") -> Involvement:
    return Involvement(
        record_id=record_id, child_record_id="C-1", organisation=organisation,
        service_category=category, practitioner_name=f"Worker {record_id}", practitioner_role="Role",
        phone="0113 496 0000", secure_email=f"{record_id}@example.gov.uk", start_date=date(2025, 1, 1),
        end_date=end, lead=lead, sensitive=sensitive, consent=consent,
        notify_on_access=notify_url is not None, assessment=assessment, notify_url=notify_url,
    )


def requester(role: str, same_authority: bool) -> Requester:
    return Requester(sub=f"{role}@x", org="Some organisation", role=role,
                     authority=AUTHORITY if same_authority else "beta", name="Sam Patel")


SOCIAL_CARE = involvement("I-1", "social_care", lead=True)


def wire_involvement(inv: Involvement) -> dict[str, Any]:
    return {"organisation": inv.organisation, "service_category": inv.service_category,
            "practitioner_name": inv.practitioner_name, "practitioner_role": inv.practitioner_role,
            "phone": inv.phone, "secure_email": inv.secure_email, "since": "2025-01-01", "lead": inv.lead}


@dataclass(frozen=True)
class Cell:
    role: str
    same_authority: bool
    shielded: bool
    sensitive: bool
    consent: bool
    archived: bool

    @property
    def id(self) -> str:
        flags = [name for name in ("shielded", "sensitive", "consent", "archived") if getattr(self, name)]
        return f"{self.role}-{'same' if self.same_authority else 'other'}-{'+'.join(flags) or 'plain'}"

    def second(self) -> Involvement:
        # A second involvement: sexual health (a sensitive category) or a school nurse.
        if self.sensitive:
            return involvement("I-2", "sexual_health", consent=self.consent)
        return involvement("I-2", "school_nursing", consent=self.consent)

    def expected(self) -> dict[str, Any]:
        if self.archived:
            return {"status": "no_match"}
        own_officer = self.role == "signposting_officer" and self.same_authority
        if self.shielded and not own_officer:
            return {"status": "shielded", "contact": CONTACT.to_wire()}
        shown = [SOCIAL_CARE]
        if not self.sensitive or self.consent:
            shown.append(self.second())
        return {"status": "match", "involvements": [wire_involvement(i) for i in shown], "assessment": None}


CELLS = [Cell(*values) for values in itertools.product(
    ("practitioner", "mediator", "signposting_officer"), (True, False), (False, True), (False, True),
    (False, True), (False, True))]


@pytest.mark.parametrize("cell", CELLS, ids=[c.id for c in CELLS])
def test_disclosure_matrix(cell: Cell) -> None:
    """Each combination discloses exactly the fields the rules allow, and nothing else."""
    answer = decide(
        status=Status.MATCH, child=child(shielded=cell.shielded, archived=cell.archived),
        involvements=[SOCIAL_CARE, cell.second()], requester=requester(cell.role, cell.same_authority),
        authority_id=AUTHORITY, signposting_contact=CONTACT, sensitive_categories=SENSITIVE_CATEGORIES,
        today=TODAY,
    ).to_wire()
    assert cell.expected() == answer
    for inv in answer.get("involvements", []):
        assert DISCLOSED_FIELDS == set(inv)


def test_matrix_covers_every_combination() -> None:
    """96 cells: 3 roles x same/other authority x 2^4 record flags."""
    assert 96 == len({c.id for c in CELLS})


@pytest.mark.parametrize("role", ["auditor", "operator", "", "admin"])
def test_non_searching_roles_learn_nothing(role: str) -> None:
    """A role that may not search gets no_match and nothing else, even for a plain match."""
    answer = decide(status=Status.MATCH, child=child(), involvements=[SOCIAL_CARE],
                    requester=requester(role, True), authority_id=AUTHORITY, signposting_contact=CONTACT,
                    sensitive_categories=SENSITIVE_CATEGORIES, today=TODAY)
    assert {"status": "no_match"} == answer.to_wire()


SENSITIVE_CASES = {
    "flagged sensitive, no consent": (involvement("S", "youth_club", sensitive=True), False),
    "flagged sensitive, consent": (involvement("S", "youth_club", sensitive=True, consent=True), True),
    "policy category substance misuse, no consent": (involvement("S", "substance_misuse"), False),
    "policy category substance misuse, need recorded": (
        involvement("S", "substance_misuse", consent=True), True),
    "ended involvement": (involvement("S", "social_care", end=date(2026, 1, 1)), False),
}


@pytest.mark.parametrize("name", SENSITIVE_CASES)
def test_sensitive_involvement_shown_only_with_consent_or_need(name: str) -> None:
    """Sensitive services (flagged, or a category in the policy) appear only with consent or need."""
    inv, shown = SENSITIVE_CASES[name]
    answer = decide(status=Status.MATCH, child=child(), involvements=[SOCIAL_CARE, inv],
                    requester=requester("practitioner", False), authority_id=AUTHORITY,
                    signposting_contact=CONTACT, sensitive_categories=SENSITIVE_CATEGORIES, today=TODAY)
    names = [i.practitioner_name for i in answer.involvements]
    assert (["Worker I-1", "Worker S"] if shown else ["Worker I-1"]) == names


def test_only_a_hidden_involvement_is_no_match_not_an_empty_match() -> None:
    """A child known only to a hidden sensitive service answers no_match: an empty match would hint."""
    answer = decide(status=Status.MATCH, child=child(), involvements=[involvement("S", "sexual_health")],
                    requester=requester("practitioner", False), authority_id=AUTHORITY,
                    signposting_contact=CONTACT, sensitive_categories=SENSITIVE_CATEGORIES, today=TODAY)
    assert {"status": "no_match"} == answer.to_wire()


def test_assessment_contact_is_disclosed() -> None:
    """An early-help assessment is disclosed as existing, with its lead's contact only."""
    early_help = involvement("E", "early_help", assessment=True)
    answer = decide(status=Status.MATCH, child=child(), involvements=[SOCIAL_CARE, early_help],
                    requester=requester("practitioner", False), authority_id=AUTHORITY,
                    signposting_contact=CONTACT, sensitive_categories=SENSITIVE_CATEGORIES, today=TODAY)
    assert {"name": "Worker E", "phone": "0113 496 0000", "secure_email": "E@example.gov.uk",
            "organisation": "Children's Social Care"} == answer.to_wire()["assessment"]


POSSIBLE_CASES = {
    # name: (candidates shielded?, requester role, same authority, expected wire answer)
    "no shielded candidate": ((False, False), "practitioner", False,
                              {"status": "possible_match", "contact": CONTACT.to_wire()}),
    "one candidate shielded": ((False, True), "practitioner", False,
                               {"status": "shielded", "contact": CONTACT.to_wire()}),
    "all candidates shielded": ((True, True), "mediator", True,
                                {"status": "shielded", "contact": CONTACT.to_wire()}),
    "other authority's officer": ((False, True), "signposting_officer", False,
                                  {"status": "shielded", "contact": CONTACT.to_wire()}),
    "own signposting officer": ((False, True), "signposting_officer", True,
                                {"status": "possible_match", "contact": CONTACT.to_wire()}),
}


@pytest.mark.parametrize("name", POSSIBLE_CASES)
def test_possible_match_never_hints_at_a_shielded_child(name: str) -> None:
    """An ambiguous query near a shielded record is answered as a shielded match would be."""
    flags, role, same, expected = POSSIBLE_CASES[name]
    candidates = [child(f"C-{i}", shielded=s) for i, s in enumerate(flags)]
    answer = decide(status=Status.POSSIBLE_MATCH, child=None, involvements=[],
                    requester=requester(role, same), authority_id=AUTHORITY, signposting_contact=CONTACT,
                    sensitive_categories=SENSITIVE_CATEGORIES, today=TODAY, candidates=candidates)
    assert expected == answer.to_wire()


def claims(**over: Any) -> QueryClaims:
    """A signed query's claims as a node reads them, with ``over`` replacing the defaults."""
    base: dict[str, Any] = {
        "v": 1, "iss": "broker", "aud": "fed", "iat": 1, "exp": 61, "jti": "q-1", "identity": {},
        "practitioner": {"sub": "s", "org": "o", "role": "practitioner", "name": "Sam"},
        "purpose": "early_help",
        "on_behalf_of": None,
    }
    base.update(over)
    if isinstance(base["practitioner"], dict):
        base["practitioner"] = {"amr": ["pwd", "otp"], **base["practitioner"]}
    return QueryClaims.from_wire(base)


MEDIATED = {"name": "Dr Ada Obi", "organisation": "Oak Surgery", "role": "GP", "phone": "0113 000 0000"}
REFUSED_QUERIES = {
    "auditor may not search": (claims(practitioner={"sub": "s", "org": "o", "role": "auditor"}), "role"),
    "operator may not search": (claims(practitioner={"sub": "s", "org": "o", "role": "operator"}), "role"),
    "unknown purpose": (claims(purpose="curiosity"), "purpose"),
    "no purpose": (claims(purpose=None), "purpose"),
    "mediator without professional": (
        claims(practitioner={"sub": "s", "org": "o", "role": "mediator"}), "mediation"),
    "mediator with a blank phone": (
        claims(practitioner={"sub": "s", "org": "o", "role": "mediator"},
               on_behalf_of={**MEDIATED, "phone": ""}), "mediation"),
    "practitioner on behalf of someone": (claims(on_behalf_of=MEDIATED), "mediation"),
    "no practitioner": (claims(practitioner=None), "practitioner"),
    "no multi-factor authentication": (
        claims(practitioner={"sub": "s", "org": "o", "role": "practitioner", "amr": ["pwd"]}), "mfa"),
    "amr missing": (claims(practitioner={"sub": "s", "org": "o", "role": "practitioner", "amr": None}),
                    "mfa"),
}


@pytest.mark.parametrize("name", REFUSED_QUERIES)
def test_node_refuses_queries_breaking_the_rules(name: str) -> None:
    """The node re-checks role, purpose and mediation itself, whatever the broker signed."""
    query, rule = REFUSED_QUERIES[name]
    with pytest.raises(PolicyRefusal) as caught:
        check_query(query, PURPOSES)
    assert rule == caught.value.rule
    assert str(caught.value).startswith(("role", "purpose", "on_behalf_of", "practitioner"))


def test_mediated_query_is_accepted_with_the_professional() -> None:
    """A mediator naming the professional (name, organisation, role, phone) may search."""
    context = check_query(claims(practitioner={"sub": "s", "org": "o", "role": "mediator"},
                                 on_behalf_of=MEDIATED), PURPOSES)
    assert MEDIATED == context.on_behalf_of


def test_notifications_go_to_other_organisations_searches_only() -> None:
    """Notify-on-access tells the lead who searched, from where and why, never any answer."""
    from datetime import UTC, datetime

    lead = involvement("N", "social_care", notify_url="http://127.0.0.1:9/hook")
    context = check_query(claims(practitioner={"sub": "s", "org": "Oak Surgery", "role": "mediator",
                                               "name": "Jo Bloggs"}, on_behalf_of=MEDIATED), PURPOSES)
    when = datetime(2026, 11, 21, 10, 0, tzinfo=UTC)
    messages = notifications(child=child(), involvements=[lead, SOCIAL_CARE], query=context, query_jti="q-1",
                             authority_id=AUTHORITY, searched_at=when, today=TODAY)
    assert [{
        "type": "access", "authority": "alpha", "child_record_id": "C-1", "involvement_record_id": "N",
        "url": "http://127.0.0.1:9/hook",
        "searcher": {"name": "Jo Bloggs", "organisation": "Oak Surgery", "role": "mediator"},
        "on_behalf_of": MEDIATED, "purpose": "early_help", "searched_at": "2026-11-21T10:00:00+00:00",
        "query_id": "q-1",
    }] == messages
    same_org = check_query(claims(practitioner={"sub": "s", "org": "children's social care",
                                                "role": "practitioner"}), PURPOSES)
    assert [] == notifications(child=child(), involvements=[lead], query=same_org, query_jti="q-2",
                               authority_id=AUTHORITY, searched_at=when, today=TODAY)
