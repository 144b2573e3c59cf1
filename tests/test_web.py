"""The practitioner pages over plain HTTP: sign-in, CSRF, sessions, headers, and what never leaks."""

from __future__ import annotations

import dataclasses
import logging
import re
from datetime import date
from pathlib import Path

import aiohttp
import pytest
from prometheus_client.parser import text_string_to_metric_families
from yarl import URL

from broker import web
from broker.api import BROKER
from broker.demo_idp import DEMO_PASSWORD, DemoIdentityProvider, current_code, hotp, totp
from federation.errors import ValidationError
from federation.identity import MINIMUM_SETS, check_searchable, parse_identity
from node.api import NODE
from tests.conftest import AMARA, Federation
from tests.webfed import Browser, build_web_federation, csrf_of, fresh_code, web_federation

__all__ = ["web_federation"]

RFC6238_SHA1_SECRET = b"12345678901234567890"


@pytest.mark.parametrize(("unix_time", "expected"), [
    (59, "94287082"), (1111111109, "07081804"), (1111111111, "14050471"),
    (1234567890, "89005924"), (2000000000, "69279037"), (20000000000, "65353130"),
])
def test_totp_matches_the_rfc_6238_test_vectors(unix_time: int, expected: str) -> None:
    """Proves the one-time codes are RFC 6238 TOTP (SHA-1, 30 s, appendix B vectors, 8 digits)."""
    assert expected == totp(RFC6238_SHA1_SECRET, unix_time, digits=8)


def test_hotp_matches_the_rfc_4226_test_vectors() -> None:
    """Proves the HOTP core against RFC 4226 appendix D."""
    expected = ["755224", "287082", "359152", "969429", "338314", "254676", "287922", "162583",
                "399871", "520489"]
    assert expected == [hotp(RFC6238_SHA1_SECRET, c) for c in range(10)]


def test_a_one_time_code_works_once_and_only_near_its_time(tmp_path: object) -> None:
    """Proves the demo identity provider refuses a reused code, an old code and a wrong password."""
    folder = Path(str(tmp_path))
    (folder / "leeds-idp.pem").write_text("unused")
    idp = DemoIdentityProvider(folder, "aud")
    now = 1_800_000_000.0
    code = current_code(now)
    assert idp.check("sam.patel", "wrong", code, now) is None
    assert idp.check("sam.patel", DEMO_PASSWORD, current_code(now - 120), now) is None
    assert "sam.patel" == getattr(idp.check("sam.patel", DEMO_PASSWORD, code, now), "username", None)
    assert idp.check("sam.patel", DEMO_PASSWORD, code, now) is None


def _amara_form(csrf: str) -> dict[str, str]:
    year, month, day = AMARA["date_of_birth"].split("-")
    return {"csrf_token": csrf, "given_name": "Amara", "family_name": "Okafor", "dob-day": day,
            "dob-month": month, "dob-year": year, "sex": "F", "purpose": "early_help"}


async def test_sign_in_sets_a_strict_cookie_and_refuses_bad_codes(web_federation: Federation) -> None:
    """Proves the session cookie is HttpOnly and SameSite=Strict, a wrong code shows an error
    summary, and the right one signs in."""
    browser = Browser(web_federation.broker_url)
    try:
        status, page, response = await browser.get("/demo-idp/sign-in")
        cookie = response.headers["Set-Cookie"]
        assert (200, True, True) == (status, "HttpOnly" in cookie, "SameSite=Strict" in cookie)
        status, page, _ = await browser.post("/demo-idp/sign-in", {
            "csrf_token": csrf_of(page), "username": "sam.patel", "password": DEMO_PASSWORD,
            "code": "000000"})
        assert 400 == status
        assert 'href="#username">The username, password or one-time code is not right' in page
        await browser.sign_in()
    finally:
        await browser.close()


async def test_a_cookie_for_a_public_host_is_secure_with_the_host_prefix(web_federation: Federation) -> None:
    """Proves that outside plain-HTTP loopback the cookie is ``__Host-`` and ``Secure``."""
    async with aiohttp.ClientSession() as session, session.get(
            web_federation.broker_url + "/demo-idp/sign-in",
            headers={"Host": "signpost.example.gov.uk"}) as r:
        cookie = r.headers["Set-Cookie"]
    assert (True, True) == (cookie.startswith("__Host-signpost-session="), "Secure" in cookie)


@pytest.mark.parametrize(("case", "token"), [("missing", None), ("wrong", "x" * 43)])
async def test_forms_without_the_csrf_token_are_refused(web_federation: Federation, case: str,
                                                       token: str | None) -> None:
    """Proves a search without the session's CSRF token is refused and nothing is searched."""
    browser = Browser(web_federation.broker_url)
    try:
        await browser.sign_in()
        form = _amara_form(token or "")
        if token is None:
            del form["csrf_token"]
        status, page, _ = await browser.post("/search", form)
        assert (403, False) == (status, "Search results" in page), case
        assert 0 == web_federation.runners["broker"].app[BROKER].metrics.searches.values.get((), 0)
    finally:
        await browser.close()


async def test_results_are_never_stored_and_never_in_a_url_or_log(web_federation: Federation,
                                                                  caplog: pytest.LogCaptureFixture) -> None:
    """Proves results come in the POST response with no-store and a strict CSP, and that no log
    line names the child."""
    caplog.set_level(logging.DEBUG)
    browser = Browser(web_federation.broker_url)
    try:
        csrf = await browser.sign_in()
        status, page, response = await browser.post("/search", _amara_form(csrf))
        assert 200 == status
        assert "Search results" in page and "tel:01134960001" in page
        assert "no-store" == response.headers["Cache-Control"]
        assert "default-src 'none'" in response.headers["Content-Security-Policy"]
        assert "script" not in page.lower()
        assert "Location" not in response.headers
    finally:
        await browser.close()
    logged = "\n".join(r.getMessage() for r in caplog.records).lower()
    assert [] == [w for w in ("amara", "okafor") if w in logged]


@pytest.mark.parametrize(("case", "path"), [
    ("sign-in", "/demo-idp/sign-in"), ("signed out", "/signed-out"), ("stylesheet", "/static/govuk.css"),
])
async def test_every_page_has_the_safety_headers(web_federation: Federation, case: str, path: str) -> None:
    """Proves each page carries no-store, a 'self'-only CSP, nosniff and frame denial."""
    async with aiohttp.ClientSession() as session, session.get(web_federation.broker_url + path) as r:
        headers = r.headers
    assert ("no-store", "nosniff", "DENY") == (headers["Cache-Control"], headers["X-Content-Type-Options"],
                                               headers["X-Frame-Options"]), case
    assert "http" not in headers["Content-Security-Policy"]


async def test_a_mediator_must_name_the_professional(web_federation: Federation) -> None:
    """Proves the web search applies the API's rules: a mediator without on-behalf-of details
    gets errors linked to each missing field."""
    browser = Browser(web_federation.broker_url)
    try:
        csrf = await browser.sign_in("lee.hughes", fresh_code())
        status, page, _ = await browser.post("/search", _amara_form(csrf))
        assert 400 == status
        assert ['#obo-name', '#obo-organisation', '#obo-role', '#obo-phone'] == re.findall(
            r'href="(#obo-[a-z]+)"', page)
        assert ["Enter their full name", "Enter their organisation", "Enter their role",
                "Enter their phone number"] == re.findall(r'href="#obo-[a-z]+">([^<]+)</a>', page)
    finally:
        await browser.close()


async def test_sign_out_ends_the_session(web_federation: Federation) -> None:
    """Proves that after sign-out the old session cannot search."""
    browser = Browser(web_federation.broker_url)
    try:
        csrf = await browser.sign_in()
        cookie = dict(browser.session.cookie_jar.filter_cookies(URL(web_federation.broker_url)))
        status, _, _ = await browser.post("/sign-out", {"csrf_token": csrf})
        assert 303 == status
        for name, morsel in cookie.items():
            browser.session.cookie_jar.update_cookies({name: morsel.value})
        status, page, _ = await browser.post("/search", _amara_form(csrf))
        assert (403, False) == (status, "Search results" in page)
    finally:
        await browser.close()


def _samples(text: str) -> dict[tuple[str, tuple[tuple[str, str], ...]], float]:
    """Every sample of an exposition, as read by prometheus_client's own parser."""
    return {(s.name, tuple(sorted(s.labels.items()))): s.value
            for family in text_string_to_metric_families(text) for s in family.samples}


async def test_metrics_count_answers_without_identities(web_federation: Federation) -> None:
    """Proves /metrics on broker and node parse with prometheus_client's parser, count searches
    and answers, and carry no identity."""
    browser = Browser(web_federation.broker_url)
    try:
        csrf = await browser.sign_in()
        await browser.post("/search", _amara_form(csrf))
        _, broker_text, response = await browser.get("/metrics")
        node = Browser(web_federation.node_url("leeds"))
        _, node_text, _ = await node.get("/metrics")
        await node.close()
    finally:
        await browser.close()
    assert response.headers["Content-Type"].startswith("text/plain; version=")
    broker_samples, node_samples = _samples(broker_text), _samples(node_text)
    assert 1.0 == broker_samples[("signpost_broker_searches_total", ())]
    leeds_match = (("authority", "leeds"), ("status", "match"))
    assert 1.0 == broker_samples[("signpost_broker_answers_total", leeds_match)]
    assert 1.0 == broker_samples[("signpost_broker_node_latency_seconds_count", (("authority", "kent"),))]
    assert 1.0 == node_samples[("signpost_node_answers_total", (("status", "match"),))]
    everything = (broker_text + node_text).lower()
    assert [] == [w for w in ("amara", "okafor", "sam.patel", AMARA["date_of_birth"]) if w in everything]


async def test_page_searches_share_the_api_rate_limit(tmp_path: Path) -> None:
    """Proves the pages spend the same search budget as the API: within a minute,
    with a small budget, later searches are refused with 429 and nothing is searched."""
    fed = build_web_federation(tmp_path / "federation")
    fed.broker_config = dataclasses.replace(fed.broker_config, rate_limits={"practitioner_per_minute": 2})
    await fed.start()
    browser = Browser(fed.broker_url)
    try:
        csrf = await browser.sign_in()
        statuses = [(await browser.post("/search", _amara_form(csrf)))[0] for _ in range(3)]
        _, page, _ = await browser.post("/search", _amara_form(csrf))
        assert (200, 429) == (statuses[0], statuses[-1])
        assert "Too many searches" in page
    finally:
        await browser.close()
        await fed.close()


async def test_a_page_search_the_broker_cannot_log_is_not_made(web_federation: Federation) -> None:
    """Proves the pages fail closed like the API: when the broker's audit log cannot be written,
    the practitioner gets a 503 page saying so, no results, and no node is asked."""
    browser = Browser(web_federation.broker_url)
    try:
        csrf = await browser.sign_in()
        broker = web_federation.runners["broker"].app[BROKER]
        nodes = [web_federation.runners[n].app[NODE] for n in web_federation.node_configs]
        asked_before = [sum(n.metrics.answers.values.values()) for n in nodes]
        assert broker.audit.log is not None
        broker.audit.log.close()
        status, page, response = await browser.post("/search", _amara_form(csrf))
    finally:
        await browser.close()
    assert asked_before == [sum(n.metrics.answers.values.values()) for n in nodes]
    assert 503 == status
    assert "Signpost is not available" in page
    assert "Search results" not in page and "tel:" not in page
    assert "no-store" == response.headers["Cache-Control"]


@pytest.mark.parametrize(("identity", "expected"), [
    ({"nhs_number": "485 777 345"}, "NHS number must be 10 digits"),
    ({"nhs_number": "485 777 3456"}, "NHS number is not right: check it against the child's records"),
    ({"nhs_number": "111 111 1111"}, "NHS number is not right: check it against the child's records"),
    ({"upn": "A12"}, "Enter the unique pupil number (UPN) in the right format: 13 characters, for example "
                     "A123456789012"),
    ({"upn": "B123456789012"},
     "Unique pupil number (UPN) is not right: check it against the child's records"),
    ({"given_name": "Am*"}, "Enter the child's full given name"),
    ({"family_name": "O"}, "Family name must be at least 2 letters"),
    ({"postcode": "nowhere"}, "Enter a real postcode, for example LS1 4AB"),
    ({"sex": "Q"}, "Select the child's sex"),
    ({"date_of_birth": "2015-02-31"}, "Date of birth must be a real date, for example 27 3 2015"),
])
def test_the_pages_word_each_identity_error_as_gov_uk_does(identity: dict[str, str], expected: str) -> None:
    """Proves each error the shared identity rules raise reaches the page as a GOV.UK-style message
    that says what to do and never repeats what was typed."""
    with pytest.raises(ValidationError) as caught:
        parse_identity(identity)
    assert [expected] == [web._message(e.field, e.message) for e in caught.value.errors]


def test_the_page_names_the_federations_own_minimum_sets() -> None:
    """Proves a search without enough to single out one child is told which sets the federation's
    policy accepts (the default sets, or the trust list's own), not a fixed text."""
    identity = parse_identity({"given_name": "Amara", "date_of_birth": "2015-03-27"})
    own = (("NHS number and date of birth", frozenset({"nhs_number", "date_of_birth"})),
           ("both names, sex and date of birth",
            frozenset({"given_name", "family_name", "sex", "date_of_birth"})))
    said = []
    for sets in (MINIMUM_SETS, own):
        with pytest.raises(ValidationError) as caught:
            check_searchable(identity, date(2026, 12, 1), minimum_sets=sets)
        said.append([web._message(e.field, e.message) for e in caught.value.errors])
    assert [["Enter enough to identify one child: NHS number and date of birth, or UPN and date of "
             "birth, or given name, family name and date of birth"],
            ["Enter enough to identify one child: NHS number and date of birth, or both names, sex and "
             "date of birth"]] == said
