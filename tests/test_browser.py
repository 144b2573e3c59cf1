"""The practitioner pages in a real headless Chromium, driven by Playwright, checked by axe-core.

One walk through the service as a practitioner would take it: sign in (with and without
mistakes), a search with mistakes then corrected, a match, a possible match, a shielded answer,
an incomplete answer, sign out, and a mediator's form. Every state is checked twice, at 1024 and
at 320 CSS pixels wide: axe-core (bundled by ``axe-playwright-python``) with the WCAG 2.2 AA and
best-practice rules must find nothing, and at 320 px the page must not scroll sideways (WCAG
1.4.10 reflow). Screenshots of both widths go to ``test-artifacts/screenshots/``. Skips (with the
reason) when Playwright or Debian's ``chromium`` is missing; CI installs both.
"""

from __future__ import annotations

import asyncio
import json
import shutil
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pytest

from broker.demo_idp import DEMO_PASSWORD
from tests.conftest import AMARA, JORDAN, Federation
from tests.webfed import LEO_DOB, fresh_code, web_federation
from trust import auditor
from trust.auditclient import access_html
from trust.checkpoint import Checkpoint

__all__ = ["web_federation"]

CHROMIUM = shutil.which("chromium") or "/usr/bin/chromium"
SHOTS = Path(__file__).resolve().parent.parent / "test-artifacts" / "screenshots"
CHROMIUM_ARGS = ["--no-sandbox", "--disable-gpu", "--disable-background-networking",
                 "--disable-component-update", "--disable-sync", "--no-first-run", "--disable-quic"]
WIDE = {"width": 1024, "height": 900}
NARROW = {"width": 320, "height": 640}
AXE_TAGS = ["wcag2a", "wcag2aa", "wcag21a", "wcag21aa", "wcag22aa", "best-practice"]

playwright_api = pytest.importorskip("playwright.async_api", reason="pip install playwright")
axe_playwright = pytest.importorskip("axe_playwright_python.async_playwright",
                                     reason="pip install axe-playwright-python")
if not Path(CHROMIUM).exists():
    pytest.skip("Debian's chromium is not installed (apt-get install chromium)", allow_module_level=True)

# Where a followed error link left things: the target focused, and the label (or the legend of
# its fieldset) and the field itself inside the viewport.
AFTER_ERROR_LINK = """
(id) => {
  const target = document.getElementById(id);
  const fieldset = target.closest('fieldset');
  const label = (fieldset && fieldset.querySelector('legend'))
    || document.querySelector('label[for="' + id + '"]') || target;
  return {
    focused: document.activeElement === target,
    labelInView: label.getBoundingClientRect().top >= 0,
    fieldInView: target.getBoundingClientRect().bottom <= window.innerHeight,
  };
}
"""


async def fill_date(page: Any, iso: str) -> None:
    year, month, day = iso.split("-")
    await page.fill("#dob-day", str(int(day)))
    await page.fill("#dob-month", str(int(month)))
    await page.fill("#dob-year", year)


class Checks:
    """What every page state must pass, collected so that one run reports every failure at once."""

    def __init__(self, page: Any) -> None:
        self.page = page
        self.axe = axe_playwright.Axe()
        self.states: list[str] = []
        self.violations: dict[str, list[str]] = {}
        self.overflow: dict[str, int] = {}
        self.error_links: dict[str, dict[str, bool]] = {}
        self.measured: dict[str, Any] = {}  # written to test-artifacts/accessibility.json

    async def state(self, name: str) -> None:
        """axe at both widths, sideways scrolling at 320 px, a screenshot of each."""
        number = len(self.states) + 1
        self.states.append(name)
        for label, viewport in (("", WIDE), ("-320", NARROW)):
            await self.page.set_viewport_size(viewport)
            results = await self.axe.run(self.page, options={
                "runOnly": {"type": "tag", "values": AXE_TAGS}, "resultTypes": ["violations"]})
            self.violations[name + label] = [f"{v['id']} at {n['target']}"
                                             for v in results.response["violations"] for n in v["nodes"]]
            self.measured[name + label] = {
                "axe": results.response["testEngine"]["version"],
                "rules_passed": len(results.response["passes"]),
                "rules_inapplicable": len(results.response["inapplicable"]),
                "violations": len(results.response["violations"]),
                "page_width": await self.page.evaluate("document.documentElement.scrollWidth"),
                "viewport_width": viewport["width"]}
            if viewport is NARROW:
                self.overflow[name] = await self.page.evaluate(
                    "document.documentElement.scrollWidth - document.documentElement.clientWidth")
            await self.page.screenshot(path=str(SHOTS / f"{number:02d}-{name}{label}.png"), full_page=True)
        await self.page.set_viewport_size(WIDE)

    async def summary_has_focus(self) -> bool:
        """Whether the error summary takes focus once the page has loaded (``autofocus`` runs then)."""
        return await summary_has_focus(self.page)

    async def follow_error_links(self, name: str) -> list[str]:
        """Follow each link in the error summary, at both widths, from the top of the page."""
        summary = self.page.locator(".error-summary a")
        targets = await summary.evaluate_all("els => els.map(e => e.getAttribute('href').slice(1))")
        for label, viewport in (("", WIDE), ("-320", NARROW)):
            await self.page.set_viewport_size(viewport)
            for i, target in enumerate(targets):
                await self.page.evaluate("window.scrollTo(0, 0)")
                await summary.nth(i).click()
                where = await self.page.evaluate(AFTER_ERROR_LINK, target)
                self.error_links[f"{name}{label} #{target}"] = where
        await self.page.set_viewport_size(WIDE)
        return list(targets)

    def write_report(self) -> None:
        (SHOTS.parent / "accessibility.json").write_text(json.dumps(
            {"states": self.measured, "error_links": self.error_links}, indent=2, sort_keys=True))

    def assert_all_passed(self) -> None:
        assert {name: [] for name in self.violations} == self.violations
        assert dict.fromkeys(self.states, 0) == self.overflow
        fine = {"focused": True, "labelInView": True, "fieldInView": True}
        assert dict.fromkeys(self.error_links, fine) == self.error_links


async def summary_has_focus(page: Any) -> bool:
    """Whether the error summary has focus within five seconds (``autofocus`` runs after load).

    Polled from here: ``wait_for_function`` evaluates a string, which the pages' CSP forbids."""
    for _ in range(50):
        if await page.evaluate("() => document.activeElement !== null && "
                               "document.activeElement.classList.contains('error-summary')"):
            return True
        await asyncio.sleep(0.1)
    return False


async def sign_in(page: Any, username: str) -> None:
    await page.fill("#username", username)
    await page.fill("#password", DEMO_PASSWORD)
    await page.fill("#code", fresh_code())
    await page.click("button[type=submit]")


async def search_for(page: Any, given: str, family: str, dob: str, purpose: str, *, sex: str = "",
                     postcode: str = "") -> None:
    await page.click("text=Start a new search")
    await page.fill("#given_name", given)
    await page.fill("#family_name", family)
    await fill_date(page, dob)
    if sex:
        await page.check(f"input[name=sex][value={sex}]")
    if postcode:
        await page.fill("#postcode", postcode)
    await page.check(f"input[name=purpose][value={purpose}]")
    await page.click("button[type=submit]:has-text('Search')")


async def test_a_practitioner_signs_in_searches_and_signs_out(web_federation: Federation) -> None:
    """Proves the pages work end to end in a real browser, with no script and no CSP violation, and
    that every state (sign-in and its errors, search and its errors, match, possible match,
    shielded, incomplete, signed out, the mediator's form and its errors) has no axe-core
    violation at 1024 or 320 px and does not scroll sideways at 320 px; that after a failed
    submit the error summary has focus, each error link focuses its field with its label or
    legend still in view, and a date missing its month and year marks only those boxes; that
    results show contacts as tel:/mailto: links, URLs never carry the child, and sign-out ends
    the session."""
    fed = web_federation
    SHOTS.mkdir(parents=True, exist_ok=True)
    console: list[str] = []
    async with playwright_api.async_playwright() as p:
        browser = await p.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_ARGS)
        try:
            page = await browser.new_page(viewport=WIDE)
            page.on("console", lambda m: console.append(m.text))
            visited: list[str] = []
            page.on("framenavigated", lambda f: visited.append(f.url))
            checks = Checks(page)
            focused: dict[str, bool] = {}

            await page.goto(fed.broker_url + "/")
            assert page.url.endswith("/demo-idp/sign-in")
            await checks.state("sign-in")
            await page.click("button[type=submit]")
            focused["sign-in"] = await checks.summary_has_focus()
            await checks.state("sign-in-errors")
            assert ["username", "password", "code"] == await checks.follow_error_links("sign-in")
            await sign_in(page, "sam.patel")
            assert "Search for a child" == await page.text_content("h1")
            await checks.state("search")

            # Mistakes: only a given name and a day of birth, no purpose.
            await page.fill("#given_name", "Amara")
            await page.fill("#dob-day", "14")
            await page.click("button[type=submit]:has-text('Search')")
            focused["search"] = await checks.summary_has_focus()
            summary = page.locator(".error-summary")
            assert "There is a problem" == await summary.locator("h2").text_content()
            assert (await page.title()).startswith("Error: ")
            marked = await page.locator(".date input").evaluate_all(
                "els => els.map(e => [e.id, e.classList.contains('input-error')])")
            assert [["dob-day", False], ["dob-month", True], ["dob-year", True]] == marked
            await checks.state("search-errors")
            assert ["dob-month", "purpose"] == await checks.follow_error_links("search")

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
            await checks.state("match")

            # Two Leo Smiths in Leeds: a possible match, nothing shown.
            await search_for(page, "Leo", "Smith", LEO_DOB, "early_help", sex="M")
            assert "Possible match" in (await page.locator("main").text_content() or "")
            assert 0 == await page.locator(".warning").count()
            await checks.state("possible-match")

            # A shielded child: only the signposting contact.
            await search_for(page, "Jordan", "Whitfield", JORDAN["date_of_birth"], "child_in_need_assessment",
                             postcode="N17 6AB")
            shielded = await page.locator("section.panel").inner_text()
            assert "cannot be shown here" in shielded
            assert "signposting@haringey.example.gov.uk" in shielded
            await checks.state("shielded")

            # Kent stops answering: the answer is incomplete.
            await fed.stop("kent")
            await search_for(page, "Leo", "Smith", LEO_DOB, "early_help", sex="M")
            warning = await page.locator(".warning").inner_text()
            assert "Warning Results may be incomplete" in " ".join(warning.split())
            assert "Kent" in warning
            await checks.state("incomplete")

            await page.click("text=Sign out")
            assert "You have signed out" == await page.text_content("h1")
            await checks.state("signed-out")
            await page.goto(fed.broker_url + "/search")
            assert page.url.endswith("/demo-idp/sign-in")

            # A mediator searches on behalf of another professional, who must be named.
            await sign_in(page, "lee.hughes")
            assert "Who you are searching for" in (await page.locator("main").text_content() or "")
            await checks.state("mediator")
            await page.fill("#nhs_number", "485 777 3456")
            await fill_date(page, AMARA["date_of_birth"])
            await page.check("input[name=purpose][value=early_help]")
            await page.click("button[type=submit]:has-text('Search')")
            focused["mediator"] = await checks.summary_has_focus()
            await checks.state("mediator-errors")
            await checks.follow_error_links("mediator")
        finally:
            await browser.close()
            checks.write_report()
    checks.assert_all_passed()
    assert {"sign-in": True, "search": True, "mediator": True} == focused
    children = ("amara", "okafor", "jordan", "whitfield", "leo", "smith", "n17")
    assert [] == [u for u in visited if any(c in u.lower() for c in children) or "?" in u]
    assert [] == [m for m in console if "Content Security Policy" in m]


# The focused element's colours, and for a radio the drawn circle's border and ring.
FOCUS_STYLE = """
() => {
  const el = document.activeElement;
  const style = getComputedStyle(el);
  const circle = el.type === 'radio' ? getComputedStyle(el.nextElementSibling, '::before') : null;
  return {
    color: style.color, background: style.backgroundColor,
    ring: circle && circle.boxShadow, border: circle && circle.borderTopWidth + ' ' + circle.borderTopColor,
  };
}
"""

# Where the account's "Sign out" sits: on one line, and below the tagline rather than beside it.
SIGN_OUT_PLACE = """
() => {
  const button = document.querySelector('.account button').getBoundingClientRect();
  const tagline = document.querySelector('.header-tagline').getBoundingClientRect();
  const line = parseFloat(getComputedStyle(document.querySelector('.account button')).lineHeight);
  return {oneLine: button.height < 1.5 * line, belowTagline: button.top >= tagline.bottom};
}
"""

YELLOW, BLACK = "rgb(255, 221, 0)", "rgb(11, 12, 12)"


async def test_keyboard_focus_looks_as_gov_uk_specifies(web_federation: Federation) -> None:
    """Proves the first Tab reaches the skip link; a focused error-summary link is black on yellow
    (not red); a focused radio shows GOV.UK's ring (4px black border, 4px yellow shadow) rather
    than a yellow-only outline; and the header's "Sign out" stays on one line, beside the
    tagline at 1024 px and below it at 320 px."""
    fed = web_federation
    async with playwright_api.async_playwright() as p:
        browser = await p.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_ARGS)
        try:
            page = await browser.new_page(viewport=WIDE)
            await page.goto(fed.broker_url + "/")
            await page.keyboard.press("Tab")
            first_focus = await page.evaluate("document.activeElement.textContent.trim()")
            await page.goto(fed.broker_url + "/")  # the focused skip link pushes the form down
            await page.click("button[type=submit]")
            assert await summary_has_focus(page)
            await page.keyboard.press("Tab")  # from the focused summary to its first link
            summary_link = await page.evaluate(FOCUS_STYLE)
            await sign_in(page, "sam.patel")
            await page.focus("#purpose")
            await page.keyboard.press("ArrowDown")  # moves to, and selects, the second purpose
            radio = await page.evaluate(FOCUS_STYLE)
            sign_out = {"wide": await page.evaluate(SIGN_OUT_PLACE)}
            await page.set_viewport_size(NARROW)
            sign_out["320"] = await page.evaluate(SIGN_OUT_PLACE)
        finally:
            await browser.close()
    assert "Skip to main content" == first_focus
    assert {"color": BLACK, "background": YELLOW, "ring": None, "border": None} == summary_link
    assert {"color": BLACK, "background": "rgb(255, 255, 255)", "ring": f"{YELLOW} 0px 0px 0px 4px",
            "border": f"4px {BLACK}"} == radio
    assert {"wide": {"oneLine": True, "belowTagline": False},
            "320": {"oneLine": True, "belowTagline": True}} == sign_out


async def test_the_access_report_has_no_axe_violations() -> None:
    """Proves the auditor's access report (an HTML file an authority sends with its reply to a
    subject access request) has no axe-core violation, and that at 320 px only its table's own
    region scrolls sideways, never the page."""
    rows = [dict.fromkeys(auditor.ACCESS_COLUMNS, "sam.patel@leeds-children.example.gov.uk")] * 3
    report = access_html(rows, node="leeds", node_name="Leeds", record_id="L-1",
                         checkpoint=Checkpoint("leeds.example/log", 3, bytes(32)),
                         generated=datetime(2026, 1, 2, tzinfo=UTC))
    found: dict[str, list[str]] = {}
    overflow: dict[str, int] = {}
    async with playwright_api.async_playwright() as p:
        browser = await p.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_ARGS)
        try:
            page = await browser.new_page(viewport=WIDE)
            await page.set_content(report)
            for label, viewport in (("wide", WIDE), ("320", NARROW)):
                await page.set_viewport_size(viewport)
                results = await axe_playwright.Axe().run(page, options={
                    "runOnly": {"type": "tag", "values": AXE_TAGS}, "resultTypes": ["violations"]})
                found[label] = [f"{v['id']} at {n['target']}" for v in results.response["violations"]
                                for n in v["nodes"]]
                overflow[label] = await page.evaluate(
                    "document.documentElement.scrollWidth - document.documentElement.clientWidth")
            await page.screenshot(path=str(SHOTS / "access-report-320.png"), full_page=True)
        finally:
            await browser.close()
    assert {"wide": [], "320": []} == found
    assert {"wide": 0, "320": 0} == overflow
