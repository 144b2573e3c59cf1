"""OpenID Connect sign-in for the practitioner pages, against a real provider process.

The provider (``oidc-provider-mock``) runs as its own process on loopback with its own RSA key;
the broker discovers it, sends the browser there with state, nonce and a PKCE challenge,
exchanges the code and verifies the ID token against the provider's JWKS.
"""

from __future__ import annotations

import dataclasses
import html
from collections.abc import AsyncIterator, Iterator
from pathlib import Path
from urllib.parse import parse_qs, urlsplit

import pytest

from broker.config import BrokerConfig
from federation.tools import provision
from tests.conftest import AMARA, Federation
from tests.oidcprovider import CLIENT_ID, LEEDS_MAPPING, Provider, running_provider, sign_in_at_provider
from tests.webfed import Browser, build_web_federation, csrf_of
from trust.errors import TrustError
from trust.oidc_mapping import parse
from trust.tokens import PRACTITIONER_ROLES


@pytest.fixture(scope="module")
def provider() -> Iterator[Provider]:
    """One provider process for the module."""
    yield from running_provider()


@pytest.fixture
async def oidc_federation(tmp_path: Path, provider: Provider,
                          monkeypatch: pytest.MonkeyPatch) -> AsyncIterator[Federation]:
    """The web federation without the demo identity provider: leeds-idp signs in through the provider
    (the broker a confidential client, its secret in the environment)."""
    monkeypatch.setenv("SIGNPOST_TEST_OIDC_SECRET", "broker-secret")
    fed = build_web_federation(tmp_path / "federation")
    provision.set_oidc(fed.folder, "leeds-idp", provider.mapping())
    fed.broker_config = dataclasses.replace(
        fed.broker_config, unsafe_demo_identity_provider=None,
        public_url=f"http://127.0.0.1:{fed.broker_config.port}",
        oidc_clients={"leeds-idp": {"client_id": CLIENT_ID,
                                    "client_secret_env": "SIGNPOST_TEST_OIDC_SECRET"}})
    await fed.start()
    try:
        yield fed
    finally:
        await fed.close()


async def _start(browser: Browser) -> str:
    """From the broker's sign-in page to the provider's authorization URL."""
    status, _, response = await browser.get("/sign-in")
    assert (303, "/sign-in/oidc/leeds-idp") == (status, response.headers["Location"])
    status, _, response = await browser.get("/sign-in/oidc/leeds-idp")
    assert 303 == status
    return response.headers["Location"]


async def _sign_in(browser: Browser, sub: str) -> tuple[int, str, str]:
    """The whole round trip for ``sub``: status and page of the callback, and the callback path."""
    authorize = await _start(browser)
    back = await sign_in_at_provider(browser.session, authorize, sub)
    callback = urlsplit(back)
    path = f"{callback.path}?{callback.query}"
    status, page, _ = await browser.get(path)
    return status, page, path


async def test_sign_in_with_the_provider_then_search(oidc_federation: Federation, provider: Provider) -> None:
    """Proves the authorization request carries state, nonce and an S256 PKCE challenge, and that a
    practitioner the provider vouches for (with MFA) gets a session whose claims come from the
    trust list's mapping, and can search."""
    browser = Browser(oidc_federation.broker_url)
    try:
        authorize = await _start(browser)
        query = parse_qs(urlsplit(authorize).query)
        assert authorize.startswith(provider.issuer + "/")
        assert ("code", CLIENT_ID, "S256", True, True, True) == (
            query["response_type"][0], query["client_id"][0], query["code_challenge_method"][0],
            len(query["code_challenge"][0]) >= 43, len(query["state"][0]) >= 32, len(query["nonce"][0]) >= 32)
        back = urlsplit(await sign_in_at_provider(browser.session, authorize, "sam"))
        status, page, _ = await browser.get(f"{back.path}?{back.query}")
        assert (200, True) == (status, 'url=/search"' in page)
        status, page, _ = await browser.get("/search")
        assert (200, True, True) == (status, "Sam Patel" in page,
                                     "Leeds Children's Social Care" in html.unescape(page))
        year, month, day = AMARA["date_of_birth"].split("-")
        status, page, _ = await browser.post("/search", {
            "csrf_token": csrf_of(page), "given_name": "Amara", "family_name": "Okafor", "dob-day": day,
            "dob-month": month, "dob-year": year, "sex": "F", "purpose": "early_help"})
        assert (200, True) == (status, "Oakfield Primary School" in page)
    finally:
        await browser.close()


async def test_sign_in_refusals(oidc_federation: Federation, caplog: pytest.LogCaptureFixture) -> None:
    """Proves each sign-in the broker must refuse is refused, for the right reason, with no session:
    a provider that does not assert MFA, an ID token for another audience, an expired ID token, no
    role that maps."""
    cases = [("no MFA asserted", "no-mfa", "second factor", "did not assert multi-factor"),
             ("wrong audience", "other-audience", "could not be accepted", "Invalid claim: 'aud'"),
             ("expired ID token", "expired", "could not be accepted", "expired_token"),
             ("no role maps", "no-role", "could not be accepted", "no Signpost role maps")]
    for case, sub, says, reason in cases:
        browser = Browser(oidc_federation.broker_url)
        caplog.clear()
        try:
            status, page, _ = await _sign_in(browser, sub)
            assert (403, True, True) == (status, says in page, reason in caplog.text), case
            status, _, response = await browser.get("/search")
            assert (303, "/sign-in") == (status, response.headers["Location"]), case
        finally:
            await browser.close()


async def test_mfa_asserted_through_acr_is_accepted(oidc_federation: Federation) -> None:
    """Proves an acr value the mapping lists counts as multi-factor sign-in when amr does not say so."""
    browser = Browser(oidc_federation.broker_url)
    try:
        status, _, _ = await _sign_in(browser, "acr-only")
        search, _, _ = await browser.get("/search")
        assert (200, 200) == (status, search)
    finally:
        await browser.close()


async def test_a_replayed_callback_is_refused(oidc_federation: Federation) -> None:
    """Proves a callback (code and state) works once: replayed, in the same browser or another,
    it is refused, and a callback whose state was not issued to this browser is refused too."""
    browser, other = Browser(oidc_federation.broker_url), Browser(oidc_federation.broker_url)
    try:
        status, _, callback = await _sign_in(browser, "sam")
        assert 200 == status
        replayed, page, _ = await browser.get(callback)
        assert (400, True) == (replayed, "already been used" in page)
        stolen, _, _ = await other.get(callback)
        assert 400 == stolen
        authorize = await _start(other)  # other's own sign-in, answered with browser's state
        back = urlsplit(await sign_in_at_provider(other.session, authorize, "sam"))
        forged = {**parse_qs(back.query), "state": parse_qs(urlsplit(callback).query)["state"]}
        query = "&".join(f"{k}={v[0]}" for k, v in forged.items())
        status, _, _ = await other.get(f"{back.path}?{query}")
        assert 403 == status
        status, _, _ = await other.get("/search")
        assert 303 == status
    finally:
        await browser.close()
        await other.close()


async def test_sign_out_ends_the_session_and_goes_to_the_provider(oidc_federation: Federation,
                                                                  provider: Provider) -> None:
    """Proves sign-out drops the session and sends the browser to the provider's end-session page."""
    browser = Browser(oidc_federation.broker_url)
    try:
        await _sign_in(browser, "sam")
        _, page, _ = await browser.get("/search")
        status, _, response = await browser.post("/sign-out", {"csrf_token": csrf_of(page)})
        location = response.headers["Location"]
        assert (303, True, True) == (status, location.startswith(provider.issuer + "/"),
                                     "post_logout_redirect_uri=" in location)
        status, _, _ = await browser.get("/search")
        assert 303 == status
    finally:
        await browser.close()


@pytest.mark.parametrize(("case", "change", "message"), [
    ("no MFA rule", {"mfa": {}}, "oidc.mfa"),
    ("unknown role", {"role": {"value": "superuser"}}, "oidc.role"),
    ("plain http off loopback", {"issuer": "http://login.example.com"}, "oidc.issuer"),
    ("organisation twice", {"organisation": {"claim": "org", "value": "Leeds"}}, "oidc.organisation"),
])
def test_the_trust_list_mapping_is_checked(case: str, change: dict[str, object], message: str) -> None:
    """Proves an OpenID mapping that would let a sign-in through unchecked is refused when parsed."""
    entry = {**provider_mapping(), **change}
    with pytest.raises(TrustError) as caught:
        parse(entry, "members[0].oidc", PRACTITIONER_ROLES)
    assert message in str(caught.value), case


def test_a_newer_mapping_version_is_ignored_not_fatal() -> None:
    """Proves a mapping of a version this software does not know leaves the issuer without OpenID
    sign-in rather than making the whole trust list unreadable."""
    assert None is parse({**provider_mapping(), "version": 2}, "members[0].oidc", PRACTITIONER_ROLES)


def provider_mapping() -> dict[str, object]:
    return {**LEEDS_MAPPING, "issuer": "https://login.example.com"}


def test_broker_config_needs_its_public_url_for_openid() -> None:
    """Proves a broker registered with a provider but without its own public address is refused."""
    with pytest.raises(ValueError, match="public_url"):
        BrokerConfig(id="b", key=Path("k"), trust_list=Path("t"), trust_root=Path("r"),
                     audit_log=Path("audit.log"), unsafe_plain_http=True,
                     oidc_clients={"leeds-idp": {"client_id": "x"}})
