"""The door for a compact JWS before any JWT library reads it.

PyJWT decodes a token's header and claims with ``json.loads`` and turns only ``ValueError`` into
its own error, so a header nested thousands deep escapes as ``RecursionError``, and repeated keys
are read last-wins. ``check_compact`` passes both parts through ``federation.safejson`` first:
a token that reaches the library is shaped, bounded and unambiguous, or the caller's typed error
is raised naming what was wrong.
"""

from __future__ import annotations

import binascii

from federation.canonical import JsonObject
from federation.safejson import JsonError, JsonLimits, parse_object
from trust.errors import TrustError
from trust.keys import b64url_decode

MAX_TOKEN_BYTES = 64 * 1024
CLAIMS_LIMITS = JsonLimits(max_bytes=MAX_TOKEN_BYTES, max_depth=16)


def check_compact(token: str, what: str, error: type[TrustError]) -> None:
    """Raise ``error`` unless ``token`` is three base64url parts whose first two are bounded,
    duplicate-free JSON objects."""
    read_compact(token, what, error)


def read_compact(token: str, what: str, error: type[TrustError]) -> tuple[JsonObject, JsonObject]:
    """``check_compact``, returning the header and the claims as it read them (unverified: only
    for choosing a key and an algorithm, never for trust)."""
    if len(token) > MAX_TOKEN_BYTES:
        raise error(f"{what}: expected at most {MAX_TOKEN_BYTES} characters, got {len(token)}")
    parts = token.split(".")
    if len(parts) != 3:
        raise error(f"{what}: expected a compact JWS (three parts), got {len(parts)} part(s)")
    read: list[JsonObject] = []
    for name, part in (("header", parts[0]), ("claims", parts[1])):
        try:
            read.append(parse_object(b64url_decode(part), name, CLAIMS_LIMITS))
        except (JsonError, binascii.Error, ValueError) as exc:
            raise error(f"{what}: {exc}") from None
    return read[0], read[1]
