"""A running federation for the practitioner pages: the demo identity provider switched on.

The authorities are named after the demo's (leeds, rochdale, haringey) because the demo
identity provider's users belong to them; ``kent`` is a fourth node that tests stop to make an
answer incomplete.
"""

from __future__ import annotations

import dataclasses
import re
import time
from collections.abc import AsyncIterator
from pathlib import Path

import aiohttp
import pytest

from broker.demo_idp import DEMO_PASSWORD, current_code
from tests.conftest import (
    AMARA,
    AMARA_NHS,
    JORDAN,
    JORDAN_NHS,
    LEO_NHS,
    Federation,
    build_federation,
    child_row,
    involvement_row,
    years_ago,
)

LEO_DOB = years_ago(5, 6, 1)


def web_records() -> dict[str, tuple[list[dict[str, str]], list[dict[str, str]]]]:
    return {
        "leeds": (
            [child_row("L-1", "Amara", "Okafor", AMARA["date_of_birth"], sex="F", nhs_number=AMARA_NHS,
                       postcode="LS8 2QR"),
             child_row("L-2", "Leo", "Smith", LEO_DOB, sex="M", nhs_number=LEO_NHS, postcode="LS6 1AA"),
             child_row("L-3", "Leo", "Smith", LEO_DOB, sex="M", postcode="LS9 7TT")],
            [involvement_row("L-I1", "L-1", lead="true"),
             involvement_row("L-I2", "L-1", "health_visiting", practitioner_name="Sue Brown",
                             practitioner_role="Health Visitor", phone="0113 496 0001",
                             secure_email="sue.brown@example.nhs.uk"),
             involvement_row("L-I3", "L-2", "early_help", practitioner_name="Mo Khan",
                             practitioner_role="Family Support Worker"),
             involvement_row("L-I4", "L-3", "education", practitioner_name="Di Ross",
                             practitioner_role="Class Teacher")],
        ),
        "rochdale": (
            [child_row("R-1", "Amara", "Okafor", AMARA["date_of_birth"], sex="F", nhs_number=AMARA_NHS,
                       postcode="OL11 3HG")],
            [involvement_row("R-I1", "R-1", "education", organisation="Oakfield Primary School",
                             practitioner_name="Ray Hall", practitioner_role="Designated Safeguarding Lead",
                             lead="true")],
        ),
        "haringey": (
            [child_row("H-1", "Jordan", "Whitfield", JORDAN["date_of_birth"], sex="M",
                       nhs_number=JORDAN_NHS, postcode="N17 6AB", shielded="true")],
            [involvement_row("H-I1", "H-1", lead="true")],
        ),
        "kent": ([child_row("K-1", "Ada", "Lovelace", years_ago(9), sex="F")], []),
    }


def build_web_federation(folder: Path) -> Federation:
    fed = build_federation(folder, web_records())
    fed.broker_config = dataclasses.replace(fed.broker_config, unsafe_demo_identity_provider=folder / "keys")
    return fed


@pytest.fixture
async def web_federation(tmp_path: Path) -> AsyncIterator[Federation]:
    """Four nodes and a broker serving the practitioner pages, with the demo identity provider."""
    fed = build_web_federation(tmp_path / "federation")
    await fed.start()
    try:
        yield fed
    finally:
        await fed.close()


CSRF = re.compile(r'name="csrf_token" value="([^"]+)"')


def csrf_of(page: str) -> str:
    found = CSRF.search(page)
    assert found is not None, "no CSRF token on the page"
    return found.group(1)


def fresh_code() -> str:
    """A one-time code not used before in this process (codes are single use per step)."""
    return current_code(time.time())


class Browser:
    """A plain HTTP client with a cookie jar, for page-level tests without a real browser."""

    def __init__(self, base: str) -> None:
        self.base = base
        self.session = aiohttp.ClientSession(cookie_jar=aiohttp.CookieJar(unsafe=True))

    async def get(self, path: str) -> tuple[int, str, aiohttp.ClientResponse]:
        async with self.session.get(self.base + path, allow_redirects=False) as r:
            return r.status, await r.text(), r

    async def post(self, path: str, data: dict[str, str]) -> tuple[int, str, aiohttp.ClientResponse]:
        async with self.session.post(self.base + path, data=data, allow_redirects=False) as r:
            return r.status, await r.text(), r

    async def sign_in(self, username: str = "sam.patel", code: str | None = None) -> str:
        """Sign in through the demo identity provider; return the search page's CSRF token."""
        _, page, _ = await self.get("/demo-idp/sign-in")
        status, _, response = await self.post("/demo-idp/sign-in", {
            "csrf_token": csrf_of(page), "username": username, "password": DEMO_PASSWORD,
            "code": code or fresh_code()})
        assert status == 303, "sign-in refused"
        assert response.headers["Location"] == "/search"
        _, page, _ = await self.get("/search")
        return csrf_of(page)

    async def close(self) -> None:
        await self.session.close()
