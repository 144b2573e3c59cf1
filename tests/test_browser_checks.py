"""A check end to end in a real headless Chromium: practitioner and signposting officer.

The practitioner gets a possible match from Leeds and asks it to check; a Leeds signposting
officer signs in at the node's staff pages through Leeds's OpenID Connect provider (a real
``oidc-provider-mock`` process), sees the request beside the candidate records and confirms one;
the practitioner sees the notice and the contacts. Skips, as test_browser does, when Playwright
or Debian's chromium is missing.
"""

from __future__ import annotations

import dataclasses
from collections.abc import AsyncIterator, Iterator
from pathlib import Path

import pytest

from broker.demo_idp import DEMO_PASSWORD
from broker.web import SECURITY_HEADERS as BROKER_HEADERS
from federation.tools import provision
from federation.tools.ports import free_port
from node.config import NodeConfig
from node.staff import SECURITY_HEADERS as STAFF_HEADERS
from tests.checkfed import staff_url
from tests.conftest import Federation
from tests.oidcprovider import LEEDS_MAPPING, Provider, start_provider, stop_provider
from tests.test_browser import CHROMIUM, CHROMIUM_ARGS, SHOTS, Checks, fill_date, playwright_api
from tests.webfed import LEO_DOB, build_web_federation, fresh_code

OFFICER = {"sub": "olu", "name": "Olu Officer", "org": "Leeds Signposting Team",
           "roles": ["Signpost.SignpostingOfficer"], "amr": ["pwd", "mfa"]}


@pytest.fixture(scope="module")
def provider() -> Iterator[Provider]:
    """Leeds's OpenID provider, with one signposting officer."""
    running = start_provider([OFFICER])
    try:
        yield running
    finally:
        stop_provider(running)


def _staff(config: NodeConfig) -> NodeConfig:
    """Leeds's officers sign in through the provider; the other nodes' pages are not visited."""
    port = free_port()
    if config.id != "leeds":
        return dataclasses.replace(config, staff_port=port, unsafe_staff_token_sign_in=True)
    return dataclasses.replace(config, staff_port=port, staff_oidc_issuer="leeds-idp",
                               staff_oidc_client_id="signpost-node",
                               staff_oidc_client_secret_env="SIGNPOST_TEST_STAFF_SECRET",
                               staff_public_url=f"http://127.0.0.1:{port}")


@pytest.fixture
async def staff_federation(tmp_path: Path, provider: Provider,
                           monkeypatch: pytest.MonkeyPatch) -> AsyncIterator[Federation]:
    monkeypatch.setenv("SIGNPOST_TEST_STAFF_SECRET", "node-secret")
    fed = build_web_federation(tmp_path / "federation")
    provision.set_oidc(fed.folder, "leeds-idp", {
        **LEEDS_MAPPING, "issuer": provider.issuer,
        "role": {"claim": "roles", "values": {"Signpost.SignpostingOfficer": "signposting_officer"}}})
    fed.node_configs = {k: _staff(c) for k, c in fed.node_configs.items()}
    fed.broker_config = dataclasses.replace(fed.broker_config, check_poll_seconds=0.2,
                                            node_deadline_seconds=10.0)  # see tests/checkfed.py
    await fed.start()
    try:
        yield fed
    finally:
        await fed.close()


def test_staff_pages_carry_the_broker_pages_safety_headers() -> None:
    """Proves the officers' pages send exactly the practitioner pages' safety headers."""
    assert BROKER_HEADERS == STAFF_HEADERS


async def test_possible_match_checked_by_an_officer_in_a_real_browser(staff_federation: Federation) -> None:
    """Proves the whole check in Chromium with no script and no CSP violation: possible match,
    ask, the officer sees the typed identity beside both Leeds candidates and confirms, and the
    practitioner sees the notice and the confirmed child's contacts. Every page state on both
    sides (the practitioner's check pages and the officers' staff pages) has no axe violation at
    1024 and 320 px and does not scroll sideways at 320 px."""
    fed = staff_federation
    SHOTS.mkdir(parents=True, exist_ok=True)
    console: list[str] = []
    async with playwright_api.async_playwright() as p:
        browser = await p.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_ARGS)
        try:
            page = await browser.new_page(viewport={"width": 1024, "height": 900})
            page.on("console", lambda m: console.append(m.text))
            practitioner_checks = Checks(page)
            await page.goto(fed.broker_url + "/")
            await page.fill("#username", "sam.patel")
            await page.fill("#password", DEMO_PASSWORD)
            await page.fill("#code", fresh_code())
            await page.click("button[type=submit]")
            await page.fill("#given_name", "Leo")
            await page.fill("#family_name", "Smith")
            await fill_date(page, LEO_DOB)
            await page.check("input[name=sex][value=M]")
            await page.check("input[name=purpose][value=early_help]")
            await page.click("button[type=submit]:has-text('Search')")
            await page.click("button:has-text('Ask Leeds to check')")
            assert "Ask Leeds to check" == await page.text_content("h1")
            await practitioner_checks.state("check-ask")
            await page.fill("#contact-email", "sam.patel@example.gov.uk")
            await page.click("button:has-text('Ask for a check')")
            assert "Waiting" in (await page.locator("main").text_content() or "")
            await practitioner_checks.state("check-waiting")
            await page.screenshot(path=str(SHOTS / "10-check-asked.png"), full_page=True)

            officer = await browser.new_page(viewport={"width": 1200, "height": 900})
            officer.on("console", lambda m: console.append(m.text))
            officer_checks = Checks(officer)
            await officer.goto(staff_url(fed, "leeds") + "/")
            assert officer.url.endswith("/sign-in")
            await officer_checks.state("staff-sign-in")
            await officer.click("a:has-text('Sign in with your Leeds')")
            await officer.click("button[name=sub][value=olu]")  # the provider's own page
            assert "You are signed in" == await officer.text_content("h1")
            await officer_checks.state("staff-signed-in")
            await officer.click("a:has-text('Go to the checks')")
            assert "Checks" == await officer.text_content("h1")
            await officer_checks.state("staff-queue")
            await officer.click("table a")
            compare = await officer.locator("table.compare").inner_text()
            assert "Record L-2" in compare and "Record L-3" in compare and "leo" in compare.lower()
            await officer_checks.state("staff-decide")
            await officer.screenshot(path=str(SHOTS / "11-officer-check.png"), full_page=True)
            await officer.check("input[value='same:L-2']")
            await officer.click("button:has-text('Save decision')")
            assert "Same child" in (await officer.locator("main").text_content() or "")
            await officer_checks.state("staff-decided")

            for _ in range(100):
                await page.goto(fed.broker_url + "/search")
                if await page.locator("text=An authority has answered your check").count():
                    break
                await page.wait_for_timeout(100)
            await page.click("text=See your checks")
            await page.click("table a")
            main = await page.locator("main").text_content() or ""
            assert "Confirmed" in main and "Mo Khan" in main
            await practitioner_checks.state("check-confirmed")
            await page.screenshot(path=str(SHOTS / "12-check-confirmed.png"), full_page=True)
        finally:
            await browser.close()
    assert [] == [m for m in console if "Content Security Policy" in m]
    for checks in (practitioner_checks, officer_checks):
        assert {name: [] for name in checks.violations} == checks.violations
        assert dict.fromkeys(checks.states, 0) == checks.overflow
