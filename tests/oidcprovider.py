"""A real OpenID Connect provider process for tests (``oidc-provider-mock``), and a browser for it.

The provider signs real RS256 ID tokens with its own key and publishes its JWKS; its users are
given as claims. Claims named like registered ones (``aud``, ``exp``) override what the provider
would put there, which is how a test gets a token for another audience or one already expired.
"""

from __future__ import annotations

import json
import subprocess
import sys
import time
import urllib.request
from collections.abc import Iterator, Mapping
from dataclasses import dataclass
from typing import Any

import aiohttp

from federation.tools.ports import free_port

CLIENT_ID = "signpost-broker"
LEEDS_MAPPING: dict[str, Any] = {
    "version": 1,
    "algorithms": ["RS256"],
    "mfa": {"amr": ["mfa", "otp"], "acr": ["urn:signpost:mfa"]},
    "organisation": {"claim": "org"},
    "role": {"claim": "roles", "values": {"Signpost.Practitioner": "practitioner",
                                          "Signpost.Mediator": "mediator"}},
    "name_claim": "name",
}


def _user(sub: str, **claims: Any) -> dict[str, Any]:
    return {"sub": sub, "name": "Sam Patel", "org": "Leeds Children's Social Care",
            "roles": ["Signpost.Practitioner"], "amr": ["pwd", "mfa"], **claims}


def provider_users(now: float) -> list[dict[str, Any]]:
    """The provider's users: one for each way a sign-in can go."""
    return [
        _user("sam"),
        _user("acr-only", amr=["pwd"], acr="urn:signpost:mfa"),
        _user("no-mfa", amr=["pwd"]),
        _user("other-audience", aud="another-client"),
        _user("expired", exp=int(now) - 600),
        _user("no-role", roles=["Finance.Reader"]),
    ]


@dataclass
class Provider:
    """A running provider process."""

    port: int
    process: subprocess.Popen[bytes]

    @property
    def issuer(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def mapping(self) -> dict[str, Any]:
        return {**LEEDS_MAPPING, "issuer": self.issuer}


def start_provider(users: list[Mapping[str, Any]]) -> Provider:
    port = free_port()
    command = [sys.executable, "-m", "oidc_provider_mock", "--port", str(port), "--host", "127.0.0.1",
               "--require-nonce"]
    for user in users:
        command += ["--user-claims", json.dumps(user)]
    process = subprocess.Popen(command, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    provider = Provider(port, process)
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline:
        try:
            with urllib.request.urlopen(provider.issuer + "/.well-known/openid-configuration",  # noqa: S310
                                        timeout=1) as answer:
                if answer.status == 200:
                    return provider
        except OSError:
            time.sleep(0.1)
    stop_provider(provider)
    raise RuntimeError("the OpenID provider did not start")


def stop_provider(provider: Provider) -> None:
    provider.process.terminate()
    provider.process.wait(timeout=10)


def running_provider() -> Iterator[Provider]:
    provider = start_provider(provider_users(time.time()))
    try:
        yield provider
    finally:
        stop_provider(provider)


async def sign_in_at_provider(session: aiohttp.ClientSession, authorize_url: str, sub: str) -> str:
    """Pick ``sub`` on the provider's sign-in form; return the redirect back to the broker."""
    async with session.post(authorize_url, data={"sub": sub}, allow_redirects=False) as answer:
        assert answer.status in (302, 303), await answer.text()
        return answer.headers["Location"]
