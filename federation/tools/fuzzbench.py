"""``signpost bench fuzz``: every door for untrusted input, driven with many hostile inputs.

Each parser gets ``inputs`` inputs made by mutating valid examples (bytes flipped, inserted,
deleted, cut; hostile fragments spliced in: deep nesting, long numbers, NaN, lone surrogates,
repeated keys, NUL) and by replacing fields of valid objects with random JSON values. An input
is *accepted* (a value came back), *refused* (the parser's own typed error), or a *crash* (any
other exception) -- the only number that must be 0. Crashes are printed (the inputs are
synthetic: no identity of a real child is ever involved).
"""

from __future__ import annotations

import json
import random
import time
from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

from federation import safejson
from federation.errors import ValidationError
from federation.identity import parse_identity
from federation.protocol import AnswerClaims, MessageError, QueryClaims
from trust import envelope, trustlist
from trust.checkpoint import Checkpoint, CheckpointError, parse_checkpoint, sign_checkpoint
from trust.errors import TrustError
from trust.jws import check_compact
from trust.keys import key_id, public_b64

FRAGMENTS: tuple[bytes, ...] = (
    b"[" * 5000, b"{\"a\":" * 3000, b"9" * 5000, b"-" + b"1" * 400, b"1e999", b"NaN", b"Infinity",
    b'"\\ud800"', b'"\\u0000"', b'{"a":1,"a":2}', b"\xff\xfe", b"\x00", b'"' + b"A" * 10_000 + b'"',
    b"null", b"true", b"[]", b"{}", b"\"", b",", b":", b"\\",
)


@dataclass
class Tally:
    """What one parser did with its inputs."""

    name: str
    inputs: int = 0
    accepted: int = 0
    refused: int = 0
    crashes: int = 0
    seconds: float = 0.0
    first_crash: str = ""


def mutate(rng: random.Random, seed: bytes) -> bytes:
    """One hostile variant of ``seed``."""
    data = bytearray(seed)
    for _ in range(rng.randint(1, 4)):
        operation = rng.randrange(6)
        at = rng.randint(0, len(data))
        if operation == 0 and data:
            data[rng.randrange(len(data))] = rng.randrange(256)
        elif operation == 1:
            data[at:at] = bytes(rng.randrange(256) for _ in range(rng.randint(1, 8)))
        elif operation == 2 and data:
            del data[at:at + rng.randint(1, 16)]
        elif operation == 3:
            data[at:at] = rng.choice(FRAGMENTS)
        elif operation == 4:
            del data[at:]
        else:
            fragment = rng.choice(FRAGMENTS)
            data = bytearray(fragment[: len(fragment) // 2]) + data + bytearray(fragment[len(fragment) // 2:])
    return bytes(data)


def random_json(rng: random.Random, depth: int = 0) -> Any:
    """A random JSON value, sometimes deep or large."""
    kind = rng.randrange(9 if depth < 6 else 6)
    if kind == 0:
        return None
    if kind == 1:
        return rng.choice([True, False])
    if kind == 2:
        return rng.choice([0, -1, 2**63, -(2**70), rng.randint(-10**6, 10**6)])
    if kind == 3:
        return rng.choice(["", "x", "A" * 200, "\u0000", "Oka\u0000for", "é", "2015-02-31", "LS1 4AB", "Z"])
    if kind == 4:
        return rng.choice(["match", "no_match", "EdDSA", "ES256", "node", "broker", "2026-11-21T09:00:00Z"])
    if kind == 5:
        return []
    if kind == 6:
        return [random_json(rng, depth + 1) for _ in range(rng.randint(0, 3))]
    keys = ["id", "name", "keys", "roles", "code", "given_name", "iss", "status", "x", "public_key", "alg"]
    return {rng.choice(keys): random_json(rng, depth + 1) for _ in range(rng.randint(0, 4))}


def replace_field(rng: random.Random, value: Any) -> Any:
    """``value`` (a JSON object) with one nested field replaced by a random JSON value."""
    copy = json.loads(json.dumps(value))
    node = copy
    while True:
        if isinstance(node, dict) and node:
            key = rng.choice(sorted(node))
            if rng.random() < 0.5 or not isinstance(node[key], dict | list) or not node[key]:
                node[key] = random_json(rng)
                return copy
            node = node[key]
        elif isinstance(node, list) and node:
            index = rng.randrange(len(node))
            if rng.random() < 0.5 or not isinstance(node[index], dict | list) or not node[index]:
                node[index] = random_json(rng)
                return copy
            node = node[index]
        else:
            return copy


def run_one(tally: Tally, inputs: int, make: Callable[[], Any], parse: Callable[[Any], Any],
            refused: tuple[type[BaseException], ...]) -> Tally:
    """Feed ``inputs`` inputs from ``make`` to ``parse``; count outcomes."""
    started = time.perf_counter()
    for _ in range(inputs):
        sample = make()
        tally.inputs += 1
        try:
            parse(sample)
        except refused:
            tally.refused += 1
        except Exception as exc:  # a crash: exactly what this command looks for
            tally.crashes += 1
            if not tally.first_crash:
                tally.first_crash = f"{exc.__class__.__name__}: {exc!s:.200} on {sample!r:.200}"
        else:
            tally.accepted += 1
    tally.seconds = time.perf_counter() - started
    return tally


def run(inputs: int = 100_000, seed: int = 1, out: Callable[[str], None] = print) -> list[Tally]:
    """Fuzz every parser with ``inputs`` inputs each; print a table; return the tallies."""
    rng = random.Random(seed)
    now = datetime.now(UTC)
    governance = Ed25519PrivateKey.from_private_bytes(rng.randbytes(32))
    root = trustlist.GovernanceRoot(1, {key_id(governance.public_key()): governance.public_key()})
    signed = {"type": trustlist.DOCUMENT_TYPE, "federation": "fuzz", "version": 2,
              "issued": trustlist.format_time(now), "expires": "2099-01-01T00:00:00Z",
              "governance": root.to_json(), "members": [
                  {"id": "alpha", "name": "Alpha", "roles": ["node"], "endpoint": "https://a.example",
                   "keys": [{"public_key": public_b64(governance.public_key())}]}],
              "policy": {"purposes": [{"code": "p", "label": "P"}], "sensitive_categories": ["s"],
                         "rate_limits": {"practitioner_per_minute": 5}, "retention_age": 24}}
    document = trustlist.sign(signed, [governance])
    identity = {"nhs_number": "943 476 5919", "given_name": "Amara", "family_name": "Okafor",
                "date_of_birth": "2018-03-14", "sex": "F", "postcode": "OL11 3HG"}
    query = {"v": 1, "iss": "broker", "aud": "fuzz", "iat": 1, "exp": 2, "jti": "q", "purpose": "p",
             "practitioner": {"sub": "s"}, "on_behalf_of": None, "identity": identity}
    answer = {"v": 1, "iss": "alpha", "aud": "broker", "iat": 1, "exp": 2, "jti": "a", "query_jti": "q",
              "query_hash": "h", "authority": {"id": "alpha", "name": "Alpha"}, "status": "match",
              "involvements": [{"organisation": "o", "service_category": "c", "practitioner_name": "n",
                                "practitioner_role": "r", "phone": None, "secure_email": None,
                                "since": None, "lead": True}], "contact": {"name": "t"}}
    token = envelope.sign(query, governance, envelope.QUERY_TYPE)
    note = sign_checkpoint(Checkpoint("signpost.fuzz/alpha", 7, bytes(32)), "alpha", governance)
    body = json.dumps({"identity": identity, "purpose": "p"}).encode()
    document_bytes = json.dumps(document).encode()

    def verify_list(raw: bytes) -> Any:
        return trustlist.verify(trustlist.parse_document(raw), root, now)

    def verify_signed(value: Any) -> Any:
        return trustlist.verify(trustlist.sign(value, [governance]), root, now)

    def identity_of(value: Any) -> Any:
        return parse_identity(value.get("identity") if isinstance(value, dict) else value, strict=True)

    jobs: list[tuple[str, Callable[[], Any], Callable[[Any], Any], tuple[type[BaseException], ...]]] = [
        ("request body (safejson)", lambda: mutate(rng, body), safejson.parse, (safejson.JsonError,)),
        ("identity (parse_identity)", lambda: replace_field(rng, {"identity": identity}), identity_of,
         (ValidationError,)),
        ("query claims (from_wire)", lambda: replace_field(rng, query), QueryClaims.from_wire,
         (MessageError,)),
        ("answer claims (from_wire)", lambda: replace_field(rng, answer), AnswerClaims.from_wire,
         (MessageError,)),
        ("compact JWS (check_compact)", lambda: mutate(rng, token.encode()).decode("utf-8", "replace"),
         lambda t: check_compact(t, "envelope", TrustError), (TrustError,)),
        ("trust list bytes (parse + verify)", lambda: mutate(rng, document_bytes), verify_list,
         (TrustError,)),
        ("signed trust list (verify)", lambda: replace_field(rng, signed), verify_signed, (TrustError,)),
        ("checkpoint note (parse)", lambda: mutate(rng, note.encode()).decode("utf-8", "replace"),
         parse_checkpoint, (CheckpointError,)),
    ]
    tallies = [run_one(Tally(name), inputs, make, parse, refused) for name, make, parse, refused in jobs]
    out(f"{'parser':<36} {'inputs':>9} {'accepted':>9} {'refused':>9} {'crashes':>8} {'seconds':>8}")
    for t in tallies:
        out(f"{t.name:<36} {t.inputs:>9} {t.accepted:>9} {t.refused:>9} {t.crashes:>8} {t.seconds:>8.1f}")
    for t in tallies:
        if t.first_crash:
            out(f"first crash in {t.name}: {t.first_crash}")
    return tallies
