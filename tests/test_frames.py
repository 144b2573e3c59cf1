"""Channel frames (`federation.frames`): the pattern that reads exact `no_match` frames gives what
the full parse gives, and anything else still goes through the full parse and its refusals."""

from __future__ import annotations

import dataclasses

import pytest
from hypothesis import given
from hypothesis import strategies as st

from federation import frames
from federation.protocol import MessageError, QueryId

TEXT = st.text(st.characters(min_codepoint=0, max_codepoint=0x2FF, exclude_categories=("Cs",)),
               min_size=1, max_size=260)


@given(frame_id=TEXT, iss=TEXT, aud=TEXT, query_hash=TEXT, iat=st.integers(-(10**25), 10**25))
def test_a_no_match_frame_reads_the_same_by_the_pattern_and_by_the_full_parse(
        frame_id: str, iss: str, aud: str, query_hash: str, iat: int) -> None:
    """Proves that for any no_match frame as a node writes it (any strings, escapes and all, any
    integer time), `parse` gives the frame it was made from, exactly as the full JSON parse does."""
    frame = frames.NoMatchFrame(QueryId(frame_id), iss, aud, query_hash, iat)
    text = frame.to_text()
    try:
        full: frames.Frame | str = frames.parse_json(text)
    except MessageError as exc:
        full = exc.field
    try:
        fast: frames.Frame | str = frames.parse(text)
    except MessageError as exc:
        fast = exc.field
    assert full == fast
    assert isinstance(fast, str) or frame == fast


@pytest.mark.parametrize("text", [
    '{"v":1,"kind":"no_match","id":"q","iss":"n","aud":"b","query_hash":"h","iat":1,"iat":2}',
    '{"v":1,"kind":"no_match","id":"q","iss":"n","aud":"b","query_hash":"h","iat":true}',
    '{"v":2,"kind":"no_match","id":"q","iss":"n","aud":"b","query_hash":"h","iat":1}',
    '{"v":1,"kind":"no_match","id":"q","iss":"","aud":"b","query_hash":"h","iat":1}',
    '{"v":1,"kind":"no_match","id":"q","iss":"n","aud":"b","iat":1}',
    '{"v":1,"kind":"no_match","id":"q\\ud800","iss":"n","aud":"b","query_hash":"h","iat":1}',
], ids=["repeated key", "boolean time", "other version", "empty issuer", "no query hash", "lone surrogate"])
def test_frames_that_are_not_exact_no_match_frames_are_refused_by_the_full_parse(text: str) -> None:
    """Proves near-misses of the exact form are not read by the pattern but refused by the full parse."""
    with pytest.raises(MessageError):
        frames.parse(text)


EXACT = st.text(st.characters(min_codepoint=0x21, max_codepoint=0x7E, exclude_characters='"\\'),
                min_size=1, max_size=80)


@given(frame_id=EXACT, iss=EXACT, aud=EXACT, query_hash=EXACT, iat=st.integers(0, 10**19 - 1),
       other=st.sampled_from(["id", "iss", "aud", "query_hash", "none"]), junk=EXACT,
       cut=st.integers(0, 400), insert=st.sampled_from(["", " ", "0", "\\", '"', "}", "-"]))
def test_the_exact_no_match_check_accepts_only_what_the_parse_reads_as_that_frame(
        frame_id: str, iss: str, aud: str, query_hash: str, iat: int, other: str, junk: str, cut: int,
        insert: str) -> None:
    """Proves the broker's string comparison for no_match frames (`is_exact_no_match`) is never
    looser than the full path: whatever the text (the exact frame, one naming another id, node,
    audience or hash, or any of these with a character inserted anywhere), when the check accepts
    it, `parse` reads it as the frame expected, whatever its time (which neither path checks);
    and the exact frame itself is accepted."""
    frame = frames.NoMatchFrame(QueryId(frame_id), iss, aud, query_hash, iat)
    fields = {"id": frame_id, "iss": iss, "aud": aud, "query_hash": query_hash, other: junk}
    sent = frames.NoMatchFrame(QueryId(fields["id"]), fields["iss"], fields["aud"], fields["query_hash"],
                               iat).to_text()
    sent = sent[:cut] + insert + sent[cut:]
    expected = frames.no_match_text(frame_id, aud, query_hash)
    assert frames.is_exact_no_match(frame.to_text(), expected, iss)
    if frames.is_exact_no_match(sent, expected, iss):
        read = frames.parse(sent)
        assert isinstance(read, frames.NoMatchFrame)
        assert frame == dataclasses.replace(read, iat=iat)


JWS = st.text(st.sampled_from("ABCxyz019_-."), min_size=1, max_size=120)


@given(frame_id=TEXT, token=TEXT | JWS, kind=st.sampled_from(["query", "answer"]))
def test_a_query_or_answer_frame_reads_the_same_by_the_pattern_and_by_the_full_parse(
        frame_id: str, token: str, kind: str) -> None:
    """Proves that for any query or answer frame as the broker or a node writes it (any id, any
    envelope text, escapes and all), `parse` gives the frame it was made from, exactly as the full
    JSON parse does."""
    frame: frames.Frame = (frames.QueryFrame(QueryId(frame_id), token) if kind == "query"
                           else frames.AnswerFrame(QueryId(frame_id), token))
    text = frame.to_text()
    expected = frames.parse_json(text)
    actual = frames.parse(text)
    assert expected == actual == frame


@pytest.mark.parametrize("text", [
    '{"v":1,"kind":"query","id":"q","answer":"a.b.c"}',
    '{"v":1,"kind":"answer","id":"q","query":"a.b.c"}',
    '{"v":1,"kind":"query","id":"q","query":"a.b.c","query":"d.e.f"}',
    '{"v":2,"kind":"query","id":"q","query":"a.b.c"}',
    '{"v":1,"kind":"query","id":"","query":"a.b.c"}',
    '{"v":1,"kind":"query","id":"q","query":""}',
    '{"v":1,"kind":"query","id":"q","query":"' + "a" * (256 * 1024) + '"}',
], ids=["query kind, answer field", "answer kind, query field", "repeated key", "other version",
        "empty id", "empty envelope", "past the frame limit"])
def test_query_frames_that_are_not_exact_are_refused_by_the_full_parse(text: str) -> None:
    """Proves near-misses of the exact query and answer forms are not read by the pattern but
    refused by the full parse."""
    with pytest.raises(MessageError):
        frames.parse(text)
