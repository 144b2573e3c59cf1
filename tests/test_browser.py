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


# Run in the page: every WCAG 2.2 AA basic this test checks, as a list of problems (empty = good).
A11Y_CHECK = """
() => {
  const problems = [];
  const lum = (rgb) => {
    const [r, g, b] = rgb.map((v) => {
      v /= 255;
      return v <= 0.03928 ? v / 12.92 : ((v + 0.055) / 1.055) ** 2.4;
    });
    return 0.2126 * r + 0.7152 * g + 0.0722 * b;
  };
  const parse = (c) => (c.match(/[\\d.]+/g) || []).map(Number);
  const background = (el) => {
    for (let e = el; e; e = e.parentElement) {
      const c = parse(getComputedStyle(e).backgroundColor);
      if (c.length === 3 || (c.length === 4 && c[3] > 0)) return c.slice(0, 3);
    }
    return [255, 255, 255];
  };
  if (!document.documentElement.lang) problems.push('html has no lang');
  if (document.querySelectorAll('h1').length !== 1) problems.push('expected exactly one h1');
  for (const sel of ['header', 'main', 'footer']) {
    if (!document.querySelector(sel)) problems.push('no ' + sel + ' landmark');
  }
  for (const input of document.querySelectorAll('input, select, textarea')) {
    if (['hidden', 'submit', 'button'].includes(input.type)) continue;
    const labelled = (input.id && document.querySelector('label[for="' + input.id + '"]'))
      || input.closest('label') || input.getAttribute('aria-labelledby') || input.getAttribute('aria-label');
    if (!labelled) problems.push('unlabelled ' + input.tagName + ' ' + (input.name || input.id));
  }
  for (const img of document.querySelectorAll('img')) {
    if (!img.hasAttribute('alt')) problems.push('img without alt');
  }
  const walker = document.createTreeWalker(document.body, NodeFilter.SHOW_TEXT);
  for (let node = walker.nextNode(); node; node = walker.nextNode()) {
    const el = node.parentElement;
    if (!node.textContent.trim() || !el || !el.offsetParent) continue;
    const style = getComputedStyle(el);
    const fg = parse(style.color).slice(0, 3);
    const [l1, l2] = [lum(fg), lum(background(el))].sort((a, b) => b - a);
    const ratio = (l1 + 0.05) / (l2 + 0.05);
    const size = parseFloat(style.fontSize);
    const large = size >= 24 || (size >= 18.66 && Number(style.fontWeight) >= 700);
    if (ratio < (large ? 3 : 4.5)) {
      problems.push('contrast ' + ratio.toFixed(2) + ' for "' + node.textContent.trim().slice(0, 30) + '"');
    }
  }
  return problems;
}
"""


async def test_pages_meet_the_wcag_basics(web_federation: Federation) -> None:
    """Proves each page a practitioner sees — sign-in, search form with errors, results — has a
    language, one h1, header/main/footer landmarks, a label for every field, text contrast of at
    least 4.5:1 (3:1 for large text), and that the first Tab reaches the skip link."""
    fed = web_federation
    async with playwright_api.async_playwright() as p:
        browser = await p.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_ARGS)
        try:
            page = await browser.new_page(viewport={"width": 1024, "height": 900})
            found: dict[str, list[str]] = {}
            await page.goto(fed.broker_url + "/")
            found["sign-in"] = await page.evaluate(A11Y_CHECK)
            await page.keyboard.press("Tab")
            first_focus = await page.evaluate("document.activeElement.textContent.trim()")
            await page.fill("#username", "sam.patel")
            await page.fill("#password", DEMO_PASSWORD)
            await page.fill("#code", fresh_code())
            await page.click("button[type=submit]")
            found["search form"] = await page.evaluate(A11Y_CHECK)
            await page.click("button[type=submit]:has-text('Search')")
            found["search form with errors"] = await page.evaluate(A11Y_CHECK)
            await page.fill("#given_name", "Amara")
            await page.fill("#family_name", "Okafor")
            await fill_date(page, AMARA["date_of_birth"])
            await page.check("#sex")
            await page.check("input[name=purpose][value=early_help]")
            await page.click("button[type=submit]:has-text('Search')")
            assert "Search results" == await page.text_content("h1")
            found["results"] = await page.evaluate(A11Y_CHECK)
        finally:
            await browser.close()
    assert "Skip to main content" == first_focus
    assert {name: [] for name in found} == found
