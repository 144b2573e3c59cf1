"""Frames on the broker↔node channel: one WebSocket per node over the existing mutual TLS.

The channel carries the same signed envelopes as ``POST /v1/query`` (``federation.protocol``);
a frame only says which query an envelope belongs to. Every frame is one JSON object:

* ``{"v": 1, "kind": "query", "id": <query jti>, "query": <signed query envelope>}`` broker → node
* ``{"v": 1, "kind": "answer", "id": <query jti>, "answer": <signed answer envelope>}`` node → broker
* ``{"v": 1, "kind": "refused", "id": <query jti>, "status": <HTTP status>, "problem": {...}}``
  node → broker: the query was read, logged and refused (the same problem document HTTP gives)
* ``{"v": 1, "kind": "no_match", "id": <query jti>, "iss": <node id>, "aud": <broker id>,
  "query_hash": <SHA-256 hex of the query envelope>, "iat": <seconds>}`` node → broker, only on a
  channel that agreed subprotocol ``signpost.v2``: the node does not hold the child. It is not
  signed: the mutually authenticated channel says who sent it, ``id`` and ``query_hash`` bind it
  to one exact query, and both ends log the SHA-256 of the frame's exact text as the answer's
  hash (decision 6). The kind can say nothing but ``no_match``: every answer that discloses
  anything (``match``, ``possible_match``, ``shielded``) is a signed ``answer`` frame.

``id`` names the query in flight; the broker matches an answer to what it is waiting for by
``id`` and then checks the signed binding inside the envelope (``query_jti`` and
``query_hash``), so the frame's ``id`` is never trusted on its own.

Room for a two-phase exchange: a frame's ``kind`` is open. A later version adds
``{"kind": "probe", "id", "tokens": [...]}`` (keyed blocking tokens, no identity) and
``{"kind": "candidates", "id", "answer": <signed>}`` (does this node hold candidates?) and sends
``query`` (with the identity) only to nodes that said yes. A reader refuses kinds it does not
know with a ``refused`` frame (status 400), so a newer broker learns an older node's limits
without a failed search. Unknown fields are ignored.
"""

from __future__ import annotations

import json
import re
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from federation import safejson
from federation.protocol import PROTOCOL_VERSION, MessageError, QueryId

CHANNEL_PATH = "/v1/channel"
SUBPROTOCOL = "signpost.v1"  # signed answers only
SUBPROTOCOL_V2 = "signpost.v2"  # also unsigned ``no_match`` frames (decision 6)
SUBPROTOCOLS = (SUBPROTOCOL_V2, SUBPROTOCOL)  # offered and served, most capable first
FRAME_LIMITS = safejson.JsonLimits(max_bytes=256 * 1024, max_depth=16)  # a frame holds one envelope
HEARTBEAT_SECONDS = 20.0  # WebSocket ping interval: keeps the connection warm and finds dead peers


@dataclass(frozen=True)
class QueryFrame:
    """A signed query for the node."""

    id: QueryId
    query: str

    def to_text(self) -> str:
        return json.dumps({"v": PROTOCOL_VERSION, "kind": "query", "id": self.id, "query": self.query},
                          separators=(",", ":"))


@dataclass(frozen=True)
class AnswerFrame:
    """A node's signed answer to the query ``id``."""

    id: QueryId
    answer: str

    def to_text(self) -> str:
        return json.dumps({"v": PROTOCOL_VERSION, "kind": "answer", "id": self.id, "answer": self.answer},
                          separators=(",", ":"))


@dataclass(frozen=True)
class RefusedFrame:
    """The node read the query ``id``, logged it, and refused it (``status`` as HTTP would say)."""

    id: QueryId
    status: int
    problem: Mapping[str, Any]

    def to_text(self) -> str:
        return json.dumps({"v": PROTOCOL_VERSION, "kind": "refused", "id": self.id, "status": self.status,
                           "problem": dict(self.problem)}, separators=(",", ":"))


@dataclass(frozen=True)
class NoMatchFrame:
    """The node ``iss`` does not hold the child the query ``id`` (with hash ``query_hash``) asked for.

    Unsigned: sent only on a ``signpost.v2`` channel, whose mutual TLS names the node; the hash of
    the frame's exact text is what both ends log.
    """

    id: QueryId
    iss: str
    aud: str
    query_hash: str
    iat: int

    def to_text(self) -> str:
        return json.dumps({"v": PROTOCOL_VERSION, "kind": "no_match", "id": self.id, "iss": self.iss,
                           "aud": self.aud, "query_hash": self.query_hash, "iat": self.iat},
                          separators=(",", ":"))


Frame = QueryFrame | AnswerFrame | RefusedFrame | NoMatchFrame

NO_MATCH_HEAD = '{"v":1,"kind":"no_match","id":"'
"""How every ``no_match`` frame's text begins; its ``id`` follows, up to the next quote."""


def no_match_text(query_id: str, aud: str, query_hash: str) -> tuple[str, str]:
    """The exact text of a ``no_match`` frame for ``query_id``, ``aud`` and ``query_hash``, around
    the two values only the node fills in: ``head + iss + tail + str(iat) + "}"`` is what
    ``NoMatchFrame.to_text`` writes when no value needs escaping. A reader that compares a frame
    with these strings has checked its id, audience and query hash without parsing it."""
    return f'{NO_MATCH_HEAD}{query_id}","iss":"', f'","aud":"{aud}","query_hash":"{query_hash}","iat":'


def is_exact_no_match(text: str, expected: tuple[str, str], iss: str) -> bool:
    """True if ``text`` is exactly the ``no_match`` frame ``expected`` (from ``no_match_text``)
    describes, sent by ``iss``, with any non-negative integer ``iat``: then ``parse(text)`` gives
    that frame. Anything else (another id, node, audience or hash, escapes, spaces, another
    order) is False, and is left to ``parse``."""
    head, tail = expected
    at = len(head) + len(iss) + len(tail)
    iat = text[at:-1]
    return (text.startswith(head) and text.startswith(iss + tail, len(head)) and text.endswith("}")
            and iat.isascii() and iat.isdigit() and len(iat) <= 19)


# A no_match frame exactly as ``NoMatchFrame.to_text`` writes it: fixed key order, no escapes, so
# nothing a general JSON parse could read differently (no duplicates, no depth, no surrogates).
_NO_MATCH_TEXT = re.compile(
    r'\{"v":1,"kind":"no_match","id":"([\x21\x23-\x5b\x5d-\x7e]{1,200})",'
    r'"iss":"([\x21\x23-\x5b\x5d-\x7e]{1,200})","aud":"([\x21\x23-\x5b\x5d-\x7e]{1,200})",'
    r'"query_hash":"([\x21\x23-\x5b\x5d-\x7e]{1,200})","iat":(-?[0-9]{1,19})\}')

# A query or answer frame exactly as ``QueryFrame.to_text`` and ``AnswerFrame.to_text`` write it
# around a compact JWS (base64url parts and dots, which JSON never escapes). The length is bounded
# by the frame's own limit, checked before the pattern.
_ENVELOPE_TEXT = re.compile(
    r'\{"v":1,"kind":"(query|answer)","id":"([\x21\x23-\x5b\x5d-\x7e]{1,200})",'
    r'"(query|answer)":"([A-Za-z0-9_.\-]+)"\}')


def parse(data: str | bytes) -> Frame:
    """The one door for channel frames: text in (through ``federation.safejson``, bounded and
    duplicate-free), a typed frame out, or ``MessageError``.

    Most frames a broker reads are ``no_match`` frames in exactly the form ``NoMatchFrame.to_text``
    writes, and every frame a node reads is a query frame as ``QueryFrame.to_text`` writes it;
    those (and answer frames so written) are read by anchored patterns (printable ASCII without
    quotes or backslashes in every string, base64url and dots in an envelope), which give the
    same frame a full parse would, at a fraction of the cost. Anything else takes the full parse."""
    if isinstance(data, str) and len(data) <= FRAME_LIMITS.max_bytes:
        exact = _NO_MATCH_TEXT.fullmatch(data)
        if exact is not None:
            frame_id, iss, aud, query_hash, iat = exact.groups()
            return NoMatchFrame(QueryId(frame_id), iss, aud, query_hash, int(iat))
        envelope = _ENVELOPE_TEXT.fullmatch(data)
        if envelope is not None:
            kind, frame_id, field, token = envelope.groups()
            if kind == field == "query":
                return QueryFrame(QueryId(frame_id), token)
            if kind == field == "answer":
                return AnswerFrame(QueryId(frame_id), token)
    return parse_json(data)


def parse_json(data: str | bytes) -> Frame:
    """``parse`` without the pattern for exact ``no_match`` frames: every frame by the full parse."""
    try:
        value = safejson.parse_object(data, "frame", FRAME_LIMITS)
    except safejson.JsonError as exc:
        raise MessageError(exc.field, exc.message) from None
    version = value.get("v")
    if version != PROTOCOL_VERSION:
        raise MessageError("v", f"expected {PROTOCOL_VERSION}, got {version!r}")
    frame_id = value.get("id")
    if not isinstance(frame_id, str) or not frame_id:
        raise MessageError("id", "expected a non-empty string")
    kind = value.get("kind")
    if kind == "query":
        return QueryFrame(QueryId(frame_id), _text(value, "query"))
    if kind == "answer":
        return AnswerFrame(QueryId(frame_id), _text(value, "answer"))
    if kind == "refused":
        status, problem = value.get("status"), value.get("problem")
        if isinstance(status, bool) or not isinstance(status, int) or not 400 <= status <= 599:
            raise MessageError("status", f"expected an HTTP error status, got {status!r}")
        return RefusedFrame(QueryId(frame_id), status, problem if isinstance(problem, dict) else {})
    if kind == "no_match":
        iat = value.get("iat")
        if isinstance(iat, bool) or not isinstance(iat, int):
            raise MessageError("iat", f"expected an integer, got {iat!r}")
        return NoMatchFrame(QueryId(frame_id), _string(value, "iss"), _string(value, "aud"),
                            _string(value, "query_hash"), iat)
    raise MessageError("kind", f"expected query, answer, refused or no_match, got {kind!r}")


def _string(value: Mapping[str, Any], name: str) -> str:
    text = value.get(name)
    if not isinstance(text, str) or not text:
        raise MessageError(name, "expected a non-empty string")
    return text


def _text(value: Mapping[str, Any], name: str) -> str:
    text = value.get(name)
    if not isinstance(text, str) or not text:
        raise MessageError(name, "expected a compact JWS string")
    return text
