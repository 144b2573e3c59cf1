"""A running federation for checks: every node serves its officers' pages on a staff listener.

``alpha`` holds two boys called Leo Smith born the same day (one with an NHS number and a lead
social worker whose webhook is a test receiver, one without), so a search by names, date of
birth and sex is a ``possible_match`` there; a shielded girl with a twin record; and a child
whose only involvement is a sexual health service without consent. ``beta`` holds nobody of
interest: its officers are the "other authority".
"""

from __future__ import annotations

import dataclasses
import re
from collections.abc import AsyncIterator
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import aiohttp
import pytest

from federation.tools.ports import free_port
from tests.conftest import LEO_NHS, Federation, build_federation, child_row, involvement_row, years_ago
from trust import keys as keyfiles
from trust import tokens

PURPOSE = "child_protection_enquiry"
LEO_DOB = years_ago(5, 6, 1)
LEO = {"given_name": "Leo", "family_name": "Smith", "date_of_birth": LEO_DOB, "sex": "M"}
MAYA_DOB = years_ago(9, 2, 20)
MAYA = {"given_name": "Maya", "family_name": "Rahman", "date_of_birth": MAYA_DOB, "sex": "F"}
NOOR_DOB = years_ago(11, 8, 8)
NOOR = {"given_name": "Noor", "family_name": "Haddad", "date_of_birth": NOOR_DOB, "sex": "F"}
CONTACT = {"email": "sam.patel@example.gov.uk", "phone": "0113 496 0999"}


def check_records(lead_hook: str) -> dict[str, tuple[list[dict[str, str]], list[dict[str, str]]]]:
    return {
        "alpha": (
            [child_row("L-2", "Leo", "Smith", LEO_DOB, sex="M", nhs_number=LEO_NHS, postcode="LS6 1AA"),
             child_row("L-3", "Leo", "Smith", LEO_DOB, sex="M", postcode="LS9 7TT"),
             child_row("M-1", "Maya", "Rahman", years_ago(9, 9, 3), sex="F", postcode="LS8 1AA",
                       shielded="true"),
             child_row("M-2", "Maya", "Rahman", MAYA_DOB, sex="F", postcode="LS2 9JT"),
             child_row("M-3", "Maya", "Rahman", MAYA_DOB, sex="F", postcode="LS3 1AB"),
             child_row("N-1", "Noor", "Haddad", NOOR_DOB, sex="F", postcode="LS7 3QQ"),
             child_row("N-2", "Noor", "Haddad", NOOR_DOB, sex="F", postcode="LS11 5AB")],
            [involvement_row("L-I1", "L-2", lead="true", notify_url=lead_hook),
             involvement_row("L-I2", "L-2", "health_visiting", practitioner_name="Sue Brown",
                             practitioner_role="Health Visitor", secure_email="sue.brown@example.nhs.uk"),
             involvement_row("L-I3", "L-2", "social_care", practitioner_name="Old Worker",
                             end_date=(datetime.now(UTC).date() - timedelta(days=30)).isoformat()),
             involvement_row("L-I4", "L-3", "education", practitioner_name="Di Ross",
                             practitioner_role="Class Teacher"),
             involvement_row("M-I1", "M-1", lead="true"),
             involvement_row("M-I2", "M-2", "education"),
             involvement_row("M-I3", "M-3", "education"),
             involvement_row("N-I1", "N-1", "sexual_health", practitioner_name="Kim Lee",
                             practitioner_role="Nurse Practitioner", sensitive="true"),
             involvement_row("N-I2", "N-2", "education")],
        ),
        "beta": ([child_row("B-1", "Ada", "Lovelace", years_ago(9), sex="F")], []),
    }


def build_check_federation(folder: Path, lead_hook: str) -> Federation:
    fed = build_federation(folder, check_records(lead_hook))
    # The lead practitioner's webhook is a loopback receiver (plain HTTP: development only), and
    # officers paste tokens (tests/test_staff_oidc.py signs them in through an OpenID provider).
    fed.node_configs = {k: dataclasses.replace(c, staff_port=free_port(), unsafe_staff_token_sign_in=True,
                                               unsafe_http_webhooks=True)
                        for k, c in fed.node_configs.items()}
    # A generous node deadline: the first search builds each node's index, which on a loaded
    # machine can take longer than the default test deadline (a check needs a possible_match).
    fed.broker_config = dataclasses.replace(fed.broker_config, check_poll_seconds=0.2,
                                            node_deadline_seconds=10.0,
                                            unsafe_demo_identity_provider=folder / "keys")
    return fed


@pytest.fixture
async def check_federation(tmp_path: Path) -> AsyncIterator[Federation]:
    """Two nodes with staff listeners and a broker that follows checks every 0.2 s."""
    fed = build_check_federation(tmp_path / "federation", "http://127.0.0.1:9/unused")
    await fed.start()
    try:
        yield fed
    finally:
        await fed.close()


def staff_url(fed: Federation, node_id: str) -> str:
    return f"http://127.0.0.1:{fed.node_configs[node_id].staff_port}"


def officer_token(fed: Federation, authority: str, *, role: str = "signposting_officer",
                  audience: str | None = None, amr: tuple[str, ...] = ("pwd", "otp")) -> str:
    key = keyfiles.load_private(fed.folder / "keys" / f"{authority}-idp.pem")
    return tokens.issue(issuer=f"{authority}-idp", key=key, audience=audience or authority,
                        sub=f"officer@{authority}", name="Olu Officer", org=f"{authority} signposting team",
                        role=role, amr=amr, now=datetime.now(UTC))


CSRF = re.compile(r'name="csrf_token" value="([^"]+)"')


class StaffClient:
    """An officer's browser without a browser: a cookie jar and the CSRF token of the last page."""

    def __init__(self, base: str) -> None:
        self.base = base
        self.session = aiohttp.ClientSession(cookie_jar=aiohttp.CookieJar(unsafe=True))
        self.csrf = ""

    async def get(self, path: str) -> tuple[int, str]:
        async with self.session.get(self.base + path, allow_redirects=False) as r:
            text = await r.text()
        found = CSRF.search(text)
        self.csrf = found.group(1) if found else self.csrf
        return r.status, text

    async def post(self, path: str, data: dict[str, str]) -> tuple[int, str, str]:
        async with self.session.post(self.base + path, data={"csrf_token": self.csrf, **data},
                                     allow_redirects=False) as r:
            return r.status, await r.text(), r.headers.get("Location", "")

    async def sign_in(self, token: str) -> int:
        await self.get("/sign-in")
        status, _, _ = await self.post("/sign-in", {"token": token})
        return status

    async def close(self) -> None:
        await self.session.close()


async def api(fed: Federation, method: str, path: str, body: Any = None,
              token: str | None = None) -> tuple[int, dict[str, Any]]:
    headers = {"Authorization": f"Bearer {token or fed.token()}"}
    async with aiohttp.ClientSession() as session, session.request(
            method, fed.broker_url + path, json=body, headers=headers) as response:
        return response.status, await response.json(content_type=None)


async def possible_match(fed: Federation, identity: dict[str, str], token: str | None = None) -> str:
    """Search; assert alpha said possible_match; return the search's reference."""
    status, answer = await fed.search({"identity": identity, "purpose": PURPOSE}, token)
    assert 200 == status, answer
    statuses = {r["authority"]["id"]: r["status"] for r in answer["results"]}
    assert "possible_match" == statuses["alpha"], statuses
    return str(answer["query_id"])


async def ask(fed: Federation, search_id: str, identity: dict[str, str], token: str | None = None,
              authority: str = "alpha") -> tuple[int, dict[str, Any]]:
    return await api(fed, "POST", "/v1/checks", {"search_id": search_id, "authority": authority,
                                                  "identity": identity, "purpose": PURPOSE,
                                                  "contact": CONTACT}, token)
