"""The practitioner pages in a real headless Chromium, driven by Playwright.

One walk through the service as a practitioner would take it: sign in with a one-time code, a
search with mistakes then corrected, a match, a shielded answer, an incomplete answer, sign
out. Screenshots go to ``test-artifacts/screenshots/``. Skips (with the reason) when Playwright
or Debian's ``chromium`` is missing; CI installs both.
"""

from __future__ import annotations

import shutil
from pathlib import Path

import pytest

from broker.demo_idp import DEMO_PASSWORD
from tests.conftest import AMARA, JORDAN, Federation
from tests.webfed import LEO_DOB, fresh_code, web_federation

__all__ = ["web_federation"]

CHROMIUM = shutil.which("chromium") or "/usr/bin/chromium"
SHOTS = Path(__file__).resolve().parent.parent / "test-artifacts" / "screenshots"
CHROMIUM_ARGS = ["--no-sandbox", "--disable-gpu", "--disable-background-networking",
                 "--disable-component-update", "--disable-sync", "--no-first-run", "--disable-quic"]

playwright_api = pytest.importorskip("playwright.async_api", reason="pip install playwright")
if not Path(CHROMIUM).exists():
    pytest.skip("Debian's chromium is not installed (apt-get install chromium)", allow_module_level=True)


async def fill_date(page: object, iso: str) -> None:
    year, month, day = iso.split("-")
    await page.fill("#dob-day", str(int(day)))  # type: ignore[attr-defined]
    await page.fill("#dob-month", str(int(month)))  # type: ignore[attr-defined]
    await page.fill("#dob-year", year)  # type: ignore[attr-defined]


async def test_a_practitioner_signs_in_searches_and_signs_out(web_federation: Federation) -> None:
    """Proves the pages work end to end in a real browser, with no script and no CSP violation:
    the error summary links to fields, results show contacts as tel:/mailto: links, shielded and
    incomplete answers are explained, URLs never carry the child, and sign-out ends the session."""
    fed = web_federation
    SHOTS.mkdir(parents=True, exist_ok=True)
    console: list[str] = []
    async with playwright_api.async_playwright() as p:
        browser = await p.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_ARGS)
        try:
            page = await browser.new_page(viewport={"width": 1024, "height": 900})
            page.on("console", lambda m: console.append(m.text))
            visited: list[str] = []
            page.on("framenavigated", lambda f: visited.append(f.url))

            await page.goto(fed.broker_url + "/")
            assert page.url.endswith("/demo-idp/sign-in")
            await page.screenshot(path=str(SHOTS / "01-sign-in.png"), full_page=True)
            await page.fill("#username", "sam.patel")
            await page.fill("#password", DEMO_PASSWORD)
            await page.fill("#code", fresh_code())
            await page.click("button[type=submit]")
            assert "Search for a child" == await page.text_content("h1")
            await page.screenshot(path=str(SHOTS / "02-search.png"), full_page=True)

            # Mistakes: only a given name and a day of birth, no purpose.
            await page.fill("#given_name", "Amara")
            await page.fill("#dob-day", "14")
            await page.click("button[type=submit]:has-text('Search')")
            summary = page.locator(".error-summary")
            assert "There is a problem" == await summary.locator("h2").text_content()
            links = await summary.locator("a").evaluate_all("els => els.map(e => e.getAttribute('href'))")
            assert ["#dob-month", "#purpose"] == links
            assert (await page.title()).startswith("Error: ")
            await summary.locator("a").first.click()
            assert "dob-month" == await page.evaluate("document.activeElement.id")
            await page.screenshot(path=str(SHOTS / "03-errors.png"), full_page=True)

            # Fixed: a match in two authorities.
            await page.fill("#family_name", "Okafor")
            await fill_date(page, AMARA["date_of_birth"])
            await page.check("#sex")
            await page.check("input[name=purpose][value=child_protection_enquiry]")
            await page.click("button[type=submit]:has-text('Search')")
            assert "Search results" == await page.text_content("h1")
            tel = await page.locator("a[href^='tel:']").evaluate_all("els => els.map(e => e.href)")
            assert "tel:01134960001" in tel
            assert await page.locator("a[href='mailto:sue.brown@example.nhs.uk']").count() == 1
            assert 0 == await page.locator(".warning").count()
            await page.screenshot(path=str(SHOTS / "04-match.png"), full_page=True)

            # A shielded child: only the signposting contact.
            await page.click("text=Start a new search")
            await page.fill("#given_name", "Jordan")
            await page.fill("#family_name", "Whitfield")
            await fill_date(page, JORDAN["date_of_birth"])
            await page.fill("#postcode", "N17 6AB")
            await page.check("input[name=purpose][value=child_in_need_assessment]")
            await page.click("button[type=submit]:has-text('Search')")
            shielded = await page.locator("section.panel").inner_text()
            assert "cannot be shown here" in shielded
            assert "signposting@haringey.example.gov.uk" in shielded
            await page.screenshot(path=str(SHOTS / "05-shielded.png"), full_page=True)

            # Kent stops answering; two Leo Smiths in Leeds make the answer ambiguous.
            await fed.stop("kent")
            await page.click("text=Start a new search")
            await page.fill("#given_name", "Leo")
            await page.fill("#family_name", "Smith")
            await fill_date(page, LEO_DOB)
            await page.check("input[name=sex][value=M]")
            await page.check("input[name=purpose][value=early_help]")
            await page.click("button[type=submit]:has-text('Search')")
            warning = await page.locator(".warning").inner_text()
            assert "Results may be incomplete" in warning
            assert "Kent" in warning
            assert "Possible match" in (await page.locator("main").text_content() or "")
            await page.screenshot(path=str(SHOTS / "06-incomplete.png"), full_page=True)

            await page.click("text=Sign out")
            assert "You have signed out" == await page.text_content("h1")
            await page.screenshot(path=str(SHOTS / "07-signed-out.png"), full_page=True)
            await page.goto(fed.broker_url + "/search")
            assert page.url.endswith("/demo-idp/sign-in")
        finally:
            await browser.close()
    children = ("amara", "okafor", "jordan", "whitfield", "leo", "smith", "n17")
    assert [] == [u for u in visited if any(c in u.lower() for c in children) or "?" in u]
    assert [] == [m for m in console if "Content Security Policy" in m]
