"""Signposting officers sign in to the node's staff pages through their council's OpenID Connect
provider: a real provider process (``oidc-provider-mock``) on loopback, the node as a
confidential client, the ID token checked against the provider's JWKS, and the officer role of
that authority and a second factor required."""

from __future__ import annotations

import dataclasses
from collections.abc import AsyncIterator, Iterator
from pathlib import Path
from urllib.parse import parse_qs, urlsplit

import pytest

from federation.tools import provision
from node.config import NodeConfig
from tests.checkfed import LEO, ask, build_check_federation, officer_token, possible_match, staff_url
from tests.conftest import Federation
from tests.oidcprovider import LEEDS_MAPPING, Provider, sign_in_at_provider, start_provider, stop_provider
from tests.webfed import Browser, csrf_of

OFFICER_ROLES = {"Signpost.SignpostingOfficer": "signposting_officer",
                 "Signpost.Practitioner": "practitioner"}


def _user(sub: str, **claims: object) -> dict[str, object]:
    return {"sub": sub, "name": "Olu Officer", "org": "Alpha signposting team",
            "roles": ["Signpost.SignpostingOfficer"], "amr": ["pwd", "mfa"], **claims}


@pytest.fixture(scope="module")
def provider() -> Iterator[Provider]:
    """One provider process for the module, with an officer, a practitioner and an officer
    without a second factor."""
    running = start_provider([_user("olu"), _user("sam", roles=["Signpost.Practitioner"]),
                              _user("no-mfa", amr=["pwd"])])
    try:
        yield running
    finally:
        stop_provider(running)


@pytest.fixture
async def staff_oidc(tmp_path: Path, provider: Provider,
                     monkeypatch: pytest.MonkeyPatch) -> AsyncIterator[Federation]:
    """The check federation whose staff pages sign in through alpha's provider only (beta is
    misconfigured with alpha's provider, which is not its own)."""
    monkeypatch.setenv("SIGNPOST_TEST_STAFF_SECRET", "node-secret")
    fed = build_check_federation(tmp_path / "federation", "http://127.0.0.1:9/unused")
    provision.set_oidc(fed.folder, "alpha-idp", {**LEEDS_MAPPING, "issuer": provider.issuer,
                                                 "role": {"claim": "roles", "values": OFFICER_ROLES}})

    def signing_in(config: NodeConfig) -> NodeConfig:
        return dataclasses.replace(
            config, unsafe_staff_token_sign_in=False, staff_oidc_issuer="alpha-idp",
            staff_oidc_client_id="signpost-node", staff_oidc_client_secret_env="SIGNPOST_TEST_STAFF_SECRET",
            staff_public_url=f"http://127.0.0.1:{config.staff_port}")

    fed.node_configs = {k: signing_in(c) for k, c in fed.node_configs.items()}
    await fed.start()
    try:
        yield fed
    finally:
        await fed.close()


async def sign_in(browser: Browser, sub: str) -> tuple[int, str, str]:
    """The round trip for ``sub``: the callback's status and page, and the callback path."""
    status, page, _ = await browser.get("/sign-in")
    assert 200 == status and 'href="/sign-in/oidc"' in page and 'name="token"' not in page
    status, _, response = await browser.get("/sign-in/oidc")
    assert 303 == status, "the sign-in did not start"
    back = urlsplit(await sign_in_at_provider(browser.session, response.headers["Location"], sub))
    path = f"{back.path}?{back.query}"
    status, page, _ = await browser.get(path)
    return status, page, path


async def test_an_officer_signs_in_through_the_council_provider_and_decides(
        staff_oidc: Federation) -> None:
    """Proves the code flow (state, nonce, S256 challenge), that the officer the provider vouches
    for (role mapped by the trust list, second factor) gets a staff session, sees the queue and
    decides a check; and that a replayed callback is refused."""
    fed = staff_oidc
    search_id = await possible_match(fed, LEO)
    _, body = await ask(fed, search_id, LEO)
    check_id = body["check"]["check_id"]
    browser = Browser(staff_url(fed, "alpha"))
    try:
        await browser.get("/sign-in")
        _, _, response = await browser.get("/sign-in/oidc")
        query = parse_qs(urlsplit(response.headers["Location"]).query)
        assert ("S256", "signpost-node", True, True) == (
            query["code_challenge_method"][0], query["client_id"][0], bool(query["state"][0]),
            bool(query["nonce"][0]))
        status, page, callback = await sign_in(browser, "olu")
        assert 200 == status and "You are signed in" in page, page
        status, queue, _ = await browser.get("/checks")
        assert 200 == status and f"/checks/{check_id}" in queue
        status, page, _ = await browser.get(f"/checks/{check_id}")
        assert 200 == status
        status, _, response = await browser.post(f"/checks/{check_id}/decision",
                                                 {"csrf_token": csrf_of(page), "decision": "not_this_child"})
        assert (303, f"/checks/{check_id}") == (status, response.headers["Location"])
        status, page, _ = await browser.get(callback)
        assert 400 == status and "already been used" in page
    finally:
        await browser.close()


@pytest.mark.parametrize(("sub", "refusal"), [
    ("sam", "is not signposting officer"),
    ("no-mfa", "second factor"),
])
async def test_only_an_officer_with_a_second_factor_is_let_in(staff_oidc: Federation, sub: str,
                                                              refusal: str) -> None:
    """Proves a practitioner of the same council, or an officer without a second factor, is refused
    and gets no session."""
    browser = Browser(staff_url(staff_oidc, "alpha"))
    try:
        status, page, _ = await sign_in(browser, sub)
        queue_status, _, _ = await browser.get("/checks")
    finally:
        await browser.close()
    assert (403, True, 303) == (status, refusal in page, queue_status)


async def test_another_authoritys_provider_cannot_sign_officers_in(staff_oidc: Federation) -> None:
    """Proves beta's pages refuse to start a sign-in with alpha's provider: its officers would be
    alpha's, never beta's."""
    browser = Browser(staff_url(staff_oidc, "beta"))
    try:
        await browser.get("/sign-in")
        status, page, _ = await browser.get("/sign-in/oidc")
    finally:
        await browser.close()
    assert 403 == status and "not set up" in page


async def test_a_pasted_token_is_refused_without_the_unsafe_setting(staff_oidc: Federation) -> None:
    """Proves the development sign-in is off unless `unsafe_staff_token_sign_in` is set: even a
    valid officer token gets no session."""
    browser = Browser(staff_url(staff_oidc, "alpha"))
    try:
        await browser.get("/sign-in")  # no token form, and so no form token to send
        status, _, _ = await browser.post("/sign-in", {"csrf_token": "", "token": officer_token(staff_oidc,
                                                                                                 "alpha")})
        queue_status, _, _ = await browser.get("/checks")
    finally:
        await browser.close()
    assert (403, 303) == (status, queue_status)


@pytest.mark.parametrize(("settings", "field"), [
    ({"staff_port": 8799}, "staff_oidc_issuer"),
    ({"staff_port": 8799, "staff_oidc_issuer": "alpha-idp"}, "staff_oidc_client_id"),
    ({"staff_port": 8799, "staff_oidc_issuer": "alpha-idp", "staff_oidc_client_id": "c"}, "staff_public_url"),
    ({"staff_port": 8799, "staff_oidc_issuer": "alpha-idp", "staff_oidc_client_id": "c",
      "staff_public_url": "http://staff.example.gov.uk"}, "staff_public_url"),
])
def test_staff_sign_in_settings_are_checked(tmp_path: Path, settings: dict[str, object], field: str) -> None:
    """Proves closed by default: staff pages without a provider (or without the unsafe development
    setting) refuse to start, naming the setting at fault."""
    with pytest.raises(ValueError, match=field):
        NodeConfig(id="alpha", database=tmp_path / "d", key=tmp_path / "k", trust_list=tmp_path / "t",
                   trust_root=tmp_path / "r", audit_log=tmp_path / "log", unsafe_plain_http=True,
                   **settings)  # type: ignore[arg-type]


async def test_a_callback_with_another_state_is_refused(staff_oidc: Federation) -> None:
    """Proves the `state` the node sent must come back: a callback carrying another one (a forged
    or mixed-up sign-in) gets no session, and the sign-in cannot be finished afterwards."""
    browser = Browser(staff_url(staff_oidc, "alpha"))
    try:
        await browser.get("/sign-in")
        _, _, response = await browser.get("/sign-in/oidc")
        back = urlsplit(await sign_in_at_provider(browser.session, response.headers["Location"], "olu"))
        query = parse_qs(back.query)
        status, page, _ = await browser.get(f"{back.path}?code={query['code'][0]}&state=forged")
        again, _, _ = await browser.get(f"{back.path}?{back.query}")
        queue_status, _, _ = await browser.get("/checks")
    finally:
        await browser.close()
    assert (403, 400, 303) == (status, again, queue_status), page
