"""Hostile input never reaches a 500: every untrusted door is total and bounded.

The HTTP table sends each service the inputs an outside probe found (JSON nested thousands deep,
a 5,000-digit integer, names of 10,000 characters, a NUL inside a name, unknown and duplicate
keys) and expects a 400 problem naming the field. The property tests drive each parser with
arbitrary input and expect either a value or that parser's own typed error, never Python's.
"""

from __future__ import annotations

import contextlib
import json
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import aiohttp
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from federation import safejson
from federation.errors import ValidationError
from federation.identity import parse_identity
from federation.protocol import AnswerClaims, MessageError, QueryClaims
from federation.tools import fuzzbench, provision
from tests.conftest import AMARA, Federation
from trust import auditor, envelope, keys, trustlist
from trust.checkpoint import CheckpointError, parse_checkpoint
from trust.errors import TrustError
from trust.jws import check_compact

PURPOSE = "child_protection_enquiry"
PROPERTY = settings(max_examples=200, deadline=None, suppress_health_check=[HealthCheck.too_slow])


def nested(depth: int) -> str:
    return "[" * depth + "]" * depth


def with_identity(**changes: Any) -> str:
    return json.dumps({"identity": {**AMARA, **changes}, "purpose": PURPOSE})


# name -> (raw body, field the problem must name)
BROKER_BODIES: dict[str, tuple[bytes, str]] = {
    "JSON nested 8,000 deep": (('{"identity": ' + nested(8000) + "}").encode(), "body"),
    "a 5,000-digit integer": (('{"identity": {}, "purpose": ' + "1" * 5000 + "}").encode(), "body"),
    "a float too large to be finite": (b'{"identity": {}, "purpose": 1e999}', "body"),
    "NaN": (b'{"identity": {}, "purpose": NaN}', "body"),
    "duplicate keys": (('{"purpose": "x", ' + with_identity()[1:]).encode(), "body"),
    "a lone surrogate": (b'{"identity": {"given_name": "\\ud800"}, "purpose": "x"}', "body"),
    "not UTF-8": (b'{"identity": "\xff"}', "body"),
    "not an object": (b"[1, 2]", "body"),
    "a 10,000-character name": (with_identity(given_name="A" * 10_000).encode(), "identity.given_name"),
    "a NUL inside a name": (with_identity(family_name="Oka\u0000for").encode(), "identity.family_name"),
    "a control character in a postcode": (with_identity(postcode="OL11\u00073HG").encode(),
                                          "identity.postcode"),
    "an unknown key inside identity": (with_identity(middle_names_typo="Ada").encode(),
                                       "identity.middle_names_typo"),
    "a number where a name goes": (with_identity(given_name=7).encode(), "identity.given_name"),
}


async def post(url: str, body: bytes, token: str | None = None) -> tuple[int, str, Any]:
    headers = {"Content-Type": "application/json"}
    if token:
        headers["Authorization"] = f"Bearer {token}"
    async with aiohttp.ClientSession() as session, session.post(url, data=body, headers=headers) as response:
        text = await response.text()
        return response.status, response.content_type, json.loads(text) if text.startswith("{") else text


@pytest.mark.parametrize("case", BROKER_BODIES)
async def test_hostile_search_bodies_get_a_400_naming_the_field(federation: Federation, case: str) -> None:
    """Each hostile body sent to the broker's search gets a 400 problem naming the field at fault."""
    body, field = BROKER_BODIES[case]
    status, kind, problem = await post(federation.broker_url + "/v1/search", body, federation.token())
    assert (400, "application/problem+json") == (status, kind), problem
    assert field in [e["field"] for e in problem.get("errors", [])], problem


NODE_BODIES: dict[str, bytes] = {
    "JSON nested 20,000 deep": ('{"query": ' + nested(20_000) + "}").encode(),
    "a 5,000-digit integer": ('{"query": ' + "9" * 5000 + "}").encode(),
    "duplicate keys": b'{"query": "a.b.c", "query": "d.e.f"}',
    "not UTF-8": b'{"query": "\xfe"}',
}


@pytest.mark.parametrize("case", NODE_BODIES)
async def test_hostile_query_bodies_get_a_400(federation: Federation, case: str) -> None:
    """Each hostile body sent to a node's query route gets a 400 problem, never a 500."""
    status, kind, problem = await post(federation.node_url("alpha") + "/v1/query", NODE_BODIES[case])
    assert (400, "application/problem+json") == (status, kind), problem
    assert "body" in [e["field"] for e in problem["errors"]]


def b64json(text: str) -> str:
    return keys.b64url(text.encode())


HOSTILE_TOKENS: dict[str, str] = {
    "header nested 2,000 deep": b64json(nested(2_000)) + "." + b64json("{}") + ".sig",
    "claims with a 5,000-digit iat": b64json('{"alg":"EdDSA"}') + "." + b64json('{"iat":' + "1" * 5000 + "}")
    + ".sig",
    "claims with duplicate iss": b64json('{"alg":"EdDSA"}') + "." + b64json('{"iss":"a","iss":"broker"}')
    + ".s",
    "not base64": "%%%.%%%.%%%",
}


@pytest.mark.parametrize("case", HOSTILE_TOKENS)
async def test_hostile_tokens_are_refused_not_crashed_on(federation: Federation, case: str) -> None:
    """A hostile bearer token at the broker gets 401, and a hostile query envelope at a node a 4xx
    problem (the JWT library never sees either)."""
    token = HOSTILE_TOKENS[case]
    status, _, _ = await post(federation.broker_url + "/v1/search", with_identity().encode(), token)
    assert 401 == status
    status, kind, problem = await post(federation.node_url("alpha") + "/v1/query",
                                       json.dumps({"query": token}).encode())
    assert 400 <= status < 500 and "application/problem+json" == kind, problem


# --- properties: each parser raises only its own typed error ---------------------------------

JSON = st.recursive(
    st.none() | st.booleans() | st.integers(min_value=-(2**63), max_value=2**63) | st.text(max_size=20),
    lambda inner: st.lists(inner, max_size=4) | st.dictionaries(st.text(max_size=8), inner, max_size=4),
    max_leaves=20,
)


@PROPERTY
@given(st.binary(max_size=300))
def test_safejson_raises_only_jsonerror_on_arbitrary_bytes(raw: bytes) -> None:
    """Any bytes: a JSON value or ``JsonError``."""
    with contextlib.suppress(safejson.JsonError):
        safejson.parse(raw)


@PROPERTY
@given(JSON)
def test_safejson_reads_back_what_json_writes(value: Any) -> None:
    """A bounded JSON value written by ``json.dumps`` reads back equal."""
    assert value == safejson.parse(json.dumps(value))


@PROPERTY
@given(st.integers(min_value=1, max_value=200))
def test_safejson_depth_limit_is_exact(depth: int) -> None:
    """Nesting up to the limit is accepted; one more is refused with ``JsonError``."""
    limits = safejson.JsonLimits(max_depth=32)
    if depth <= 32:
        assert safejson.parse(nested(depth), limits=limits) is not None
    else:
        with pytest.raises(safejson.JsonError):
            safejson.parse(nested(depth), limits=limits)


@PROPERTY
@given(JSON, st.booleans())
def test_parse_identity_raises_only_validation_error(value: Any, strict: bool) -> None:
    """Any JSON value as an identity: an ``Identity`` or ``ValidationError``."""
    with contextlib.suppress(ValidationError):
        parse_identity(value, strict=strict)


@PROPERTY
@given(st.dictionaries(st.sampled_from(["iss", "aud", "iat", "exp", "jti", "practitioner", "purpose",
                                        "on_behalf_of", "identity", "query_jti", "query_hash", "authority",
                                        "status", "involvements", "contact", "assessment", "x"]), JSON))
def test_message_claims_raise_only_message_error(claims: dict[str, Any]) -> None:
    """Any claims object: typed query and answer claims, or ``MessageError``."""
    for kind in (QueryClaims, AnswerClaims):
        with contextlib.suppress(MessageError):
            kind.from_wire(claims)


@PROPERTY
@given(st.text(max_size=300))
def test_jws_door_and_envelope_raise_only_trust_errors(token: str) -> None:
    """Any string as a compact JWS: ``check_compact`` and ``envelope.unverified_issuer`` stay typed."""
    with contextlib.suppress(TrustError):
        check_compact(token, "envelope", TrustError)
    envelope.unverified_issuer(token)


@PROPERTY
@given(st.text(max_size=300))
def test_parse_checkpoint_raises_only_checkpoint_error(note: str) -> None:
    """Any text as a checkpoint note: a ``Checkpoint`` or ``CheckpointError``."""
    with contextlib.suppress(CheckpointError):
        parse_checkpoint(note)


@pytest.fixture(scope="module")
def signed_federation(tmp_path_factory: pytest.TempPathFactory) -> tuple[dict[str, Any], Any, list[Any]]:
    folder: Path = tmp_path_factory.mktemp("fed") / "fed"
    provision.create(folder, "test")
    key = keys.generate()
    provision.add_members(folder, [(provision.member_entry("alpha", "Alpha", ["node"], key), key)])
    signed = provision.load_signed(folder)
    root = trustlist.GovernanceRoot.from_json(json.loads((folder / "root.json").read_text()))
    return signed, root, provision.governance_keys(folder)


FIELDS = st.sampled_from(["version", "issued", "expires", "governance", "members", "policy", "federation",
                          "type", "members.0", "members.0.keys", "members.0.keys.0", "members.0.roles",
                          "members.0.contact", "policy.purposes", "policy.rate_limits",
                          "policy.retention_age", "governance.keys", "governance.threshold"])


def replaced(document: dict[str, Any], path: str, value: Any) -> dict[str, Any]:
    copy = json.loads(json.dumps(document))
    *parents, last = path.split(".")
    node: Any = copy
    for part in parents:
        node = node[int(part)] if isinstance(node, list) else node[part]
    if isinstance(node, list):
        node[int(last)] = value
    else:
        node[last] = value
    return copy


@PROPERTY
@given(FIELDS, JSON)
def test_a_signed_but_malformed_trust_list_raises_only_trust_error(
        signed_federation: tuple[dict[str, Any], Any, list[Any]], path: str, value: Any) -> None:
    """A trust list signed by the real governance key with any field replaced by any JSON value:
    a ``TrustList`` or ``TrustError`` (the refresh loop's only expected failure), never Python's."""
    signed, root, governance = signed_federation
    document = trustlist.sign(replaced(signed, path, value), governance)
    with contextlib.suppress(TrustError):
        trustlist.verify(document, root, datetime.now(UTC))


@PROPERTY
@given(st.binary(max_size=300))
def test_trust_document_door_raises_only_trust_error(raw: bytes) -> None:
    """Any bytes offered as a trust list or root: a JSON object or ``TrustError``."""
    try:
        document = trustlist.parse_document(raw)
        trustlist.verify(document, trustlist.GovernanceRoot(1, {"k": keys.generate().public_key()}),
                         datetime.now(UTC) + timedelta(days=1))
    except TrustError:
        pass


def test_fuzz_command_finds_no_crash_on_a_small_budget() -> None:
    """Proves `signpost bench fuzz` drives every parser and, on a small fixed budget, finds no crash
    (the release run uses 100,000 inputs per parser; see docs/performance.md)."""
    tallies = fuzzbench.run(150, seed=7, out=lambda _: None)
    assert 8 == len(tallies)
    assert [(t.name, 150, 0) for t in tallies] == [(t.name, t.inputs, t.crashes) for t in tallies]


@PROPERTY
@given(st.lists(st.binary(max_size=200), max_size=5), st.integers(min_value=1000, max_value=3000))
def test_auditor_reads_any_fetched_entry_as_an_object_or_a_discrepancy(
        entries: list[bytes], depth: int) -> None:
    """Entries served by an audited service (any bytes, or JSON nested far too deep) are parsed into
    objects or reported as unreadable entries; the auditor never crashes on them."""
    served = [*entries, nested(depth).encode()]
    parsed, problems = auditor.parse_entries(list(enumerate(served)), node="alpha")
    assert len(served) == len(parsed) + len(problems)
    assert problems[-1].kind is auditor.DiscrepancyKind.UNREADABLE_ENTRY


@PROPERTY
@given(st.dictionaries(st.sampled_from(["iss", "aud", "iat", "jti", "x"]), JSON), st.booleans())
def test_the_unverified_issuer_is_what_the_claims_say_or_none(claims: dict[str, Any], spoil: bool) -> None:
    """A node's cheap look at a query's ``iss`` (before the signature is checked) reads the claims
    exactly as ``check_compact`` parses them, and gives ``None`` whenever they do not parse."""
    token = envelope.sign(claims, keys.generate(), envelope.QUERY_TYPE)
    if spoil:
        header, _, signature = token.split(".")
        token = f"{header}.{keys.b64url(b'{not json')}.{signature}"
    try:
        check_compact(token, "envelope", TrustError)
    except TrustError:
        assert envelope.unverified_issuer(token) is None
        return
    issuer = claims.get("iss")
    assert (issuer if isinstance(issuer, str) else None) == envelope.unverified_issuer(token)
