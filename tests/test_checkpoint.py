"""C2SP signed notes and tlog checkpoints: interoperability, format rules, signature rules."""

from __future__ import annotations

import base64
import contextlib

import pytest
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey
from hypothesis import given, settings
from hypothesis import strategies as st

from trust.checkpoint import (
    Checkpoint,
    CheckpointError,
    MalformedNoteError,
    NoteSignatureError,
    key_id,
    parse_checkpoint,
    parse_checkpoint_body,
    parse_note,
    sign_checkpoint,
    sign_note,
    verifier_key,
    verify_checkpoint,
    verify_note,
)
from trust.errors import SignatureError, TrustError

# The example key and note of Go's golang.org/x/mod/sumdb/note (its package documentation).
GO_SIGNER_KEY = "PRIVATE+KEY+PeterNeumann+c74f20a3+AYEKFALVFGyNhPJEMzD1QIDr+Y7hfZx09iUvxdXHKDFz"
GO_VERIFIER_KEY = "PeterNeumann+c74f20a3+ARpc2QcUPDhMQegwxbzhKqiBfsVkmqq/LDE4izWy10TW"
GO_TEXT = (
    "If you think cryptography is the answer to your problem,\nthen you don't know what your problem is.\n"
)
GO_NOTE = (
    GO_TEXT + "\n— PeterNeumann x08go/ZJkuBS9UG/SffcvIAQxVBtiFupLLr8pAcElZInNIuGUgYN1FFYC2pZSNXgKvqfq"
    "dngotpRZb6KE6RyyBwJnAM=\n"
)

ORIGIN = "example.org/signpost/broker"
ROOT = bytes(range(32))


def go_private_key() -> Ed25519PrivateKey:
    seed = base64.b64decode(GO_SIGNER_KEY.split("+", 4)[4])
    assert seed[0] == 1, "expected an Ed25519 key"
    return Ed25519PrivateKey.from_private_bytes(seed[1:])


@pytest.fixture(scope="module")
def key() -> Ed25519PrivateKey:
    return Ed25519PrivateKey.generate()


def test_go_note_is_reproduced_byte_for_byte() -> None:
    """Signing Go's example text with Go's example key gives Go's note exactly (Ed25519 is deterministic)."""
    expected = GO_NOTE
    actual = sign_note(GO_TEXT, "PeterNeumann", go_private_key())
    assert expected == actual


def test_go_note_verifies_and_key_id_matches() -> None:
    """Go's note verifies, and the key ID and verifier key text are the ones Go prints."""
    public = go_private_key().public_key()
    expected = (GO_TEXT, "c74f20a3", GO_VERIFIER_KEY)
    actual = (
        verify_note(GO_NOTE, "PeterNeumann", public).text,
        key_id("PeterNeumann", public).hex(),
        verifier_key("PeterNeumann", public),
    )
    assert expected == actual


def test_checkpoint_round_trip(key: Ed25519PrivateKey) -> None:
    """A signed checkpoint has the tlog-checkpoint body and verifies back to the same values."""
    checkpoint = Checkpoint(origin=ORIGIN, size=1042, root=ROOT)
    note = sign_checkpoint(checkpoint, ORIGIN, key)
    expected_body = f"{ORIGIN}\n1042\n{base64.b64encode(ROOT).decode()}\n"
    assert note.startswith(expected_body + "\n— " + ORIGIN + " ")
    assert checkpoint == verify_checkpoint(note, ORIGIN, key.public_key())
    assert checkpoint == parse_checkpoint(note)
    assert checkpoint == parse_checkpoint_body(expected_body)


def test_extension_lines_are_kept(key: Ed25519PrivateKey) -> None:
    """Optional extension lines survive signing and parsing."""
    checkpoint = Checkpoint(origin=ORIGIN, size=0, root=ROOT, extensions=("Timestamp: 1",))
    assert checkpoint == verify_checkpoint(sign_checkpoint(checkpoint, ORIGIN, key), ORIGIN, key.public_key())


def test_unknown_signatures_are_ignored(key: Ed25519PrivateKey) -> None:
    """A cosignature by some other key does not stop the note verifying with ours."""
    other = Ed25519PrivateKey.generate()
    body = Checkpoint(origin=ORIGIN, size=7, root=ROOT).body()
    ours = sign_note(body, ORIGIN, key)
    theirs = sign_note(body, "witness.example/w1", other).split("\n\n", 1)[1]
    note = ours + theirs
    expected = (7, 2)
    actual = (verify_checkpoint(note, ORIGIN, key.public_key()).size, len(parse_note(note).signatures))
    assert expected == actual


SIGNATURE_CASES = {
    "signed by another key under the same name": lambda k, note: verify_note(
        note, ORIGIN, Ed25519PrivateKey.generate().public_key()
    ),
    "expected under another name": lambda k, note: verify_note(note, "other.example", k.public_key()),
    "text changed after signing": lambda k, note: verify_note(
        note.replace("\n5\n", "\n6\n"), ORIGIN, k.public_key()
    ),
    "signature bytes changed": lambda k, note: verify_note(
        note[:-10] + ("A" if note[-10] != "A" else "B") + note[-9:], ORIGIN, k.public_key()
    ),
}


@pytest.mark.parametrize("case", SIGNATURE_CASES)
def test_signature_failures(key: Ed25519PrivateKey, case: str) -> None:
    """Each way of getting the signature wrong raises NoteSignatureError (a SignatureError)."""
    note = sign_checkpoint(Checkpoint(origin=ORIGIN, size=5, root=ROOT), ORIGIN, key)
    with pytest.raises(NoteSignatureError) as raised:
        SIGNATURE_CASES[case](key, note)
    assert isinstance(raised.value, SignatureError)
    assert isinstance(raised.value, TrustError)


def test_one_bad_signature_by_our_key_rejects_the_note(key: Ed25519PrivateKey) -> None:
    """If any signature by the expected key fails, the whole note is rejected."""
    body = Checkpoint(origin=ORIGIN, size=5, root=ROOT).body()
    good = sign_note(body, ORIGIN, key)
    forged = sign_note(body.replace("\n5\n", "\n6\n"), ORIGIN, key).split("\n\n", 1)[1]
    with pytest.raises(NoteSignatureError):
        verify_note(good + forged, ORIGIN, key.public_key())


ROOT_B64 = base64.b64encode(ROOT).decode()
SIG = "— k " + base64.b64encode(b"\x00" * 68).decode() + "\n"

MALFORMED_NOTES = {
    "no final newline": f"o\n1\n{ROOT_B64}\n\n" + SIG[:-1],
    "no blank line": f"o\n1\n{ROOT_B64}\n" + SIG,
    "no signature": f"o\n1\n{ROOT_B64}\n\n",
    "hyphen instead of em dash": f"o\n1\n{ROOT_B64}\n\n" + SIG.replace("—", "-"),
    "signature without key name": f"o\n1\n{ROOT_B64}\n\n— " + SIG[4:],
    "signature with extra field": f"o\n1\n{ROOT_B64}\n\n" + SIG[:-1] + " x\n",
    "signature not base64": f"o\n1\n{ROOT_B64}\n\n— k !!!!\n",
    "signature base64 not canonical": f"o\n1\n{ROOT_B64}\n\n— k AAAAAB==\n",
    "signature only a key ID": f"o\n1\n{ROOT_B64}\n\n— k AAAAAA==\n",
    "key name with plus": f"o\n1\n{ROOT_B64}\n\n" + SIG.replace("— k ", "— k+1 "),
    "carriage return": f"o\r\n1\n{ROOT_B64}\n\n" + SIG,
    "tab": f"o\t\n1\n{ROOT_B64}\n\n" + SIG,
    "two lines only": "o\n1\n\n" + SIG,
    "empty origin": f"\n1\n{ROOT_B64}\n\n" + SIG,
    "size with leading zero": f"o\n01\n{ROOT_B64}\n\n" + SIG,
    "negative size": f"o\n-1\n{ROOT_B64}\n\n" + SIG,
    "size not ASCII digits": f"o\n١\n{ROOT_B64}\n\n" + SIG,
    "size with spaces": f"o\n 1\n{ROOT_B64}\n\n" + SIG,
    "root too short": f"o\n1\n{base64.b64encode(ROOT[:31]).decode()}\n\n" + SIG,
    "root not base64": f"o\n1\n{ROOT_B64[:-2]}!=\n\n" + SIG,
    "root base64url": "o\n1\n" + base64.urlsafe_b64encode(b"\xff" * 32).decode() + "\n\n" + SIG,
    "too many signatures": f"o\n1\n{ROOT_B64}\n\n" + SIG * 101,
}


@pytest.mark.parametrize("case", MALFORMED_NOTES)
def test_malformed_notes_are_rejected(key: Ed25519PrivateKey, case: str) -> None:
    """Each malformed note raises MalformedNoteError, from parsing and from verifying."""
    note = MALFORMED_NOTES[case]
    with pytest.raises(MalformedNoteError):
        parse_checkpoint(note)
    with pytest.raises(MalformedNoteError):
        verify_checkpoint(note, "k", key.public_key())


def test_checkpoint_values_are_checked() -> None:
    """A Checkpoint cannot be built with an empty origin, a negative size or a short root."""
    for bad in [
        {"origin": "", "size": 1, "root": ROOT},
        {"origin": "a\nb", "size": 1, "root": ROOT},
        {"origin": ORIGIN, "size": -1, "root": ROOT},
        {"origin": ORIGIN, "size": True, "root": ROOT},
        {"origin": ORIGIN, "size": 1, "root": ROOT[:31]},
        {"origin": ORIGIN, "size": 1, "root": ROOT, "extensions": ("",)},
    ]:
        with pytest.raises(CheckpointError):
            Checkpoint(**bad)  # type: ignore[arg-type]


def test_bad_key_names_are_refused(key: Ed25519PrivateKey) -> None:
    """Key names with spaces or '+' cannot be used to sign."""
    for name in ["", "a b", "a+b", "a\u00a0b"]:
        with pytest.raises(MalformedNoteError):
            sign_note("text\n", name, key)


@settings(max_examples=100, deadline=None)
@given(
    origin=st.text(
        st.characters(min_codepoint=0x21, max_codepoint=0x2FFF, exclude_categories=["Cs"]),
        min_size=1,
        max_size=40,
    ),
    size=st.integers(0, 2**63),
    root=st.binary(min_size=32, max_size=32),
)
def test_checkpoint_round_trip_property(key: Ed25519PrivateKey, origin: str, size: int, root: bytes) -> None:
    """Any valid checkpoint signs and verifies back to itself."""
    checkpoint = Checkpoint(origin=origin, size=size, root=root)
    assert checkpoint == verify_checkpoint(
        sign_checkpoint(checkpoint, "log.example", key), "log.example", key.public_key()
    )


@settings(max_examples=300, deadline=None)
@given(st.text(max_size=300))
def test_parser_only_raises_malformed_note_error(text: str) -> None:
    """Arbitrary text either parses or raises MalformedNoteError, never anything else."""
    for parse in (parse_checkpoint, parse_checkpoint_body, parse_note):
        with contextlib.suppress(MalformedNoteError):
            parse(text)


@settings(max_examples=200, deadline=None)
@given(st.data())
def test_any_changed_character_breaks_the_note(key: Ed25519PrivateKey, data: st.DataObject) -> None:
    """Changing any one character of a signed checkpoint makes verification fail."""
    note = sign_checkpoint(Checkpoint(origin=ORIGIN, size=99, root=ROOT), ORIGIN, key)
    position = data.draw(st.integers(0, len(note) - 1))
    replacement = data.draw(st.characters(min_codepoint=0x20, max_codepoint=0x7E))
    if replacement == note[position]:
        return
    changed = note[:position] + replacement + note[position + 1 :]
    with pytest.raises(CheckpointError):
        verify_checkpoint(changed, ORIGIN, key.public_key())
