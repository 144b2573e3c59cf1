"""The demo identity provider: username, password and a one-time code (RFC 6238 TOTP).

Only for the local demo and tests. It signs practitioner tokens with the demo issuers' keys
from the federation folder, exactly as an authority's own identity provider would; the broker
then verifies them against the trust list like any other token. The credentials are fixed and
public (see ``docs/practitioner-guide.md``); never enable it in production.
"""

from __future__ import annotations

import base64
import hmac
import struct
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path

from trust import keys as keyfiles
from trust import tokens

DEMO_PASSWORD = "signpost-demo"  # noqa: S105 - public demo credential
DEMO_TOTP_SECRET = "SIGNPOSTDEMOSECRETKEY234"  # noqa: S105 - public demo secret (base32)
TOTP_STEP_SECONDS = 30
TOTP_DIGITS = 6
TOKEN_MINUTES = 15


@dataclass(frozen=True)
class DemoUser:
    """A demo practitioner and the identity provider (authority) that vouches for them."""

    username: str
    name: str
    org: str
    role: str
    authority: str


DEMO_USERS = (
    DemoUser("sam.patel", "Sam Patel", "Leeds Children's Social Care", "practitioner", "leeds"),
    DemoUser("lee.hughes", "Lee Hughes", "Leeds Front Door", "mediator", "leeds"),
    DemoUser("jo.clarke", "Jo Clarke", "Haringey Signposting Team", "signposting_officer", "haringey"),
    DemoUser("ana.lopez", "Ana Lopez", "Federation audit", "auditor", "leeds"),
)


def hotp(secret: bytes, counter: int, digits: int = TOTP_DIGITS, digest: str = "sha1") -> str:
    """RFC 4226 HOTP: HMAC the 8-byte counter, truncate dynamically, keep ``digits`` digits."""
    mac = hmac.new(secret, struct.pack(">Q", counter), digest).digest()
    offset = mac[-1] & 0x0F
    value = struct.unpack(">I", mac[offset:offset + 4])[0] & 0x7FFFFFFF
    return str(value % 10 ** digits).zfill(digits)


def totp(secret: bytes, unix_time: float, *, step: int = TOTP_STEP_SECONDS, digits: int = TOTP_DIGITS,
         digest: str = "sha1") -> str:
    """RFC 6238 TOTP: HOTP over the number of ``step``-second periods since the Unix epoch."""
    return hotp(secret, int(unix_time // step), digits, digest)


def decode_secret(base32_secret: str) -> bytes:
    padded = base32_secret.upper() + "=" * (-len(base32_secret) % 8)
    return base64.b32decode(padded)


def current_code(unix_time: float) -> str:
    """The demo users' one-time code right now (printed by the demo and ``signpost demo-code``)."""
    return totp(decode_secret(DEMO_TOTP_SECRET), unix_time)


class DemoIdentityProvider:
    """Checks demo credentials and issues tokens signed by the user's authority's demo issuer."""

    def __init__(self, keys_folder: Path, audience: str) -> None:
        self.keys_folder = keys_folder
        self.audience = audience
        self.users = {u.username: u for u in DEMO_USERS
                      if (keys_folder / f"{u.authority}-idp.pem").exists()}
        self._last_step: dict[str, int] = {}

    def check(self, username: str, password: str, code: str, unix_time: float) -> DemoUser | None:
        """The user if all three factors are right (each code usable once); otherwise ``None``."""
        user = self.users.get(username.strip())
        password_ok = hmac.compare_digest(password.encode(), DEMO_PASSWORD.encode())
        step = self._matching_step(code.strip().replace(" ", ""), unix_time)
        if user is None or not password_ok or step is None:
            return None
        if step <= self._last_step.get(user.username, -1):
            return None  # a code is single use
        self._last_step[user.username] = step
        return user

    @staticmethod
    def _matching_step(code: str, unix_time: float) -> int | None:
        secret = decode_secret(DEMO_TOTP_SECRET)
        now_step = int(unix_time // TOTP_STEP_SECONDS)
        for step in (now_step - 1, now_step, now_step + 1):  # one step of clock drift each way
            if hmac.compare_digest(hotp(secret, step), code):
                return step
        return None

    def issue(self, user: DemoUser, now: datetime) -> str:
        key = keyfiles.load_private(self.keys_folder / f"{user.authority}-idp.pem")
        return tokens.issue(issuer=f"{user.authority}-idp", key=key, audience=self.audience,
                            sub=user.username, name=user.name, org=user.org, role=user.role,
                            amr=("pwd", "otp"), now=now, lifetime_seconds=TOKEN_MINUTES * 60)
