"""Signed checkpoints: the C2SP tlog-checkpoint body inside a C2SP signed note (Ed25519).

A checkpoint commits a log to its size and root hash::

    example.org/signpost/broker        <- origin
    1042                               <- tree size
    Xi3v...=                           <- base64 root hash

    — example.org/signpost/broker AbCd...=

The note text (the body, including its final newline) is signed. Each signature line is an em
dash, a space, the key name, a space and ``base64(key ID || Ed25519 signature)``, where the key
ID is ``SHA-256(key name || 0x0A || 0x01 || raw public key)[:4]``
(https://c2sp.org/signed-note, https://c2sp.org/tlog-checkpoint).

Pure: no files, no clocks, no sockets.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import re
from dataclasses import dataclass

from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey, Ed25519PublicKey

from trust.errors import SignatureError
from trust.merkle import HASH_SIZE, LogError

ED25519_SIGNATURE_TYPE = 0x01
"""Signature type byte of Ed25519 in the signed-note key ID."""

MAX_SIGNATURES = 100
"""Most signature lines a note may carry (the format asks verifiers to accept at least 16)."""

MAX_NOTE_BYTES = 1 << 20
"""Largest note accepted, in UTF-8 bytes."""

_DASH = "\u2014 "
_SIZE_RE = re.compile(r"0|[1-9][0-9]{0,19}")
_KEY_ID_BYTES = 4
_ED25519_SIGNATURE_BYTES = 64


class CheckpointError(LogError):
    """A signed note or checkpoint is malformed, or its signature cannot be accepted."""


class MalformedNoteError(CheckpointError):
    """The text does not follow the signed-note or tlog-checkpoint format."""


class NoteSignatureError(CheckpointError, SignatureError):
    """The note carries no signature by the expected key, or a signature by it does not verify."""


@dataclass(frozen=True)
class NoteSignature:
    """One signature line of a note: who claims to have signed, and the bytes they signed with."""

    name: str
    key_id: bytes
    signature: bytes

    def __post_init__(self) -> None:
        _check_key_name(self.name)
        if len(self.key_id) != _KEY_ID_BYTES:
            raise MalformedNoteError(f"key ID: expected {_KEY_ID_BYTES} bytes, got {len(self.key_id)}")
        if not self.signature:
            raise MalformedNoteError(f"signature by {self.name!r}: empty signature")

    def line(self) -> str:
        """The signature line as it appears in the note, with its newline."""
        blob = base64.b64encode(self.key_id + self.signature).decode("ascii")
        return f"{_DASH}{self.name} {blob}\n"


@dataclass(frozen=True)
class SignedNote:
    """A note split into its signed text and its signature lines (not yet verified)."""

    text: str
    signatures: tuple[NoteSignature, ...]

    def __post_init__(self) -> None:
        _check_note_text(self.text)
        if not self.signatures:
            raise MalformedNoteError("note: expected at least one signature line, got none")
        if len(self.signatures) > MAX_SIGNATURES:
            raise MalformedNoteError(
                f"note: expected at most {MAX_SIGNATURES} signatures, got {len(self.signatures)}"
            )

    def format(self) -> str:
        """The note as text: the signed text, a blank line, the signature lines."""
        return self.text + "\n" + "".join(sig.line() for sig in self.signatures)


@dataclass(frozen=True)
class Checkpoint:
    """A log's size and root hash, named by the log's origin line."""

    origin: str
    size: int
    root: bytes
    extensions: tuple[str, ...] = ()

    def __post_init__(self) -> None:
        if not isinstance(self.origin, str) or not self.origin:
            raise MalformedNoteError(f"checkpoint origin: expected a non-empty line, got {self.origin!r}")
        _check_line(self.origin, "checkpoint origin")
        if isinstance(self.size, bool) or not isinstance(self.size, int) or self.size < 0:
            raise MalformedNoteError(f"checkpoint size: expected a non-negative integer, got {self.size!r}")
        if not isinstance(self.root, bytes) or len(self.root) != HASH_SIZE:
            got = len(self.root) if isinstance(self.root, bytes) else type(self.root).__name__
            raise MalformedNoteError(f"checkpoint root: expected {HASH_SIZE} bytes, got {got}")
        for line in self.extensions:
            if not line:
                raise MalformedNoteError("checkpoint extension line: expected non-empty text")
            _check_line(line, "checkpoint extension line")

    def body(self) -> str:
        """The note text of this checkpoint (the part that is signed)."""
        lines = [self.origin, str(self.size), base64.b64encode(self.root).decode("ascii")]
        return "\n".join([*lines, *self.extensions]) + "\n"


def _check_line(text: str, what: str) -> None:
    for char in text:
        if char < " ":
            raise MalformedNoteError(f"{what}: control character {char!r} in {text!r}")


def _check_note_text(text: str) -> None:
    if not text.endswith("\n"):
        raise MalformedNoteError("note text: expected it to end with a newline")
    for char in text:
        if char < " " and char != "\n":
            raise MalformedNoteError(f"note text: control character {char!r} is not allowed")


def _check_key_name(name: str) -> None:
    if not isinstance(name, str) or not name:
        raise MalformedNoteError(f"key name: expected non-empty text, got {name!r}")
    if "+" in name or any(char.isspace() or char < " " for char in name):
        raise MalformedNoteError(f"key name: expected no spaces, '+' or control characters, got {name!r}")


def _strict_b64(text: str, what: str) -> bytes:
    try:
        raw = base64.b64decode(text.encode("ascii"), validate=True)
    except (binascii.Error, UnicodeEncodeError) as exc:
        raise MalformedNoteError(f"{what}: expected standard base64, got {text!r}") from exc
    if base64.b64encode(raw).decode("ascii") != text:
        raise MalformedNoteError(f"{what}: expected canonical base64, got {text!r}")
    return raw


def _raw_public(key: Ed25519PublicKey) -> bytes:
    return key.public_bytes(serialization.Encoding.Raw, serialization.PublicFormat.Raw)


def key_id(key_name: str, public_key: Ed25519PublicKey) -> bytes:
    """The 4-byte signed-note key ID of an Ed25519 key under ``key_name``."""
    _check_key_name(key_name)
    material = key_name.encode("utf-8") + b"\n" + bytes([ED25519_SIGNATURE_TYPE])
    return hashlib.sha256(material + _raw_public(public_key)).digest()[:_KEY_ID_BYTES]


def verifier_key(key_name: str, public_key: Ed25519PublicKey) -> str:
    """The key in the ``name+hexid+base64(type||key)`` text form used by Go's note tools."""
    blob = base64.b64encode(bytes([ED25519_SIGNATURE_TYPE]) + _raw_public(public_key))
    return f"{key_name}+{key_id(key_name, public_key).hex()}+{blob.decode('ascii')}"


def sign_note(text: str, key_name: str, private_key: Ed25519PrivateKey) -> str:
    """Sign ``text`` (which must end with a newline) and return the signed note."""
    _check_note_text(text)
    signature = NoteSignature(
        name=key_name,
        key_id=key_id(key_name, private_key.public_key()),
        signature=private_key.sign(text.encode("utf-8")),
    )
    return SignedNote(text=text, signatures=(signature,)).format()


def parse_note(note: str) -> SignedNote:
    """Split a signed note into text and signature lines; raise ``MalformedNoteError`` if it is not one.

    Checks the format only; ``verify_note`` checks signatures.
    """
    if not isinstance(note, str):
        raise MalformedNoteError(f"note: expected text, got {type(note).__name__}")
    if len(note.encode("utf-8", errors="surrogatepass")) > MAX_NOTE_BYTES:
        raise MalformedNoteError(f"note: larger than {MAX_NOTE_BYTES} bytes")
    try:
        note.encode("utf-8")
    except UnicodeEncodeError as exc:
        raise MalformedNoteError("note: not valid UTF-8 text") from exc
    if not note.endswith("\n"):
        raise MalformedNoteError("note: expected it to end with a newline")
    for char in note:
        if char < " " and char != "\n":
            raise MalformedNoteError(f"note: control character {char!r} is not allowed")
    split = note.rfind("\n\n")
    if split < 0:
        raise MalformedNoteError("note: expected a blank line between the text and the signatures")
    text, block = note[: split + 1], note[split + 2 :]
    signatures: list[NoteSignature] = []
    for line in block.split("\n")[:-1]:
        if not line.startswith(_DASH):
            raise MalformedNoteError(
                f"signature line: expected it to start with an em dash and a space, got {line!r}"
            )
        parts = line[len(_DASH) :].split(" ")
        if len(parts) != 2:
            raise MalformedNoteError(
                f"signature line: expected '— <key name> <base64 signature>', got {line!r}"
            )
        name, blob = parts
        raw = _strict_b64(blob, f"signature by {name!r}")
        if len(raw) <= _KEY_ID_BYTES:
            raise MalformedNoteError(
                f"signature by {name!r}: expected a key ID and a signature, got {len(raw)} bytes"
            )
        signatures.append(NoteSignature(name=name, key_id=raw[:_KEY_ID_BYTES], signature=raw[_KEY_ID_BYTES:]))
    return SignedNote(text=text, signatures=tuple(signatures))


def verify_note(note: str, key_name: str, public_key: Ed25519PublicKey) -> SignedNote:
    """Parse ``note`` and check it is signed by ``public_key`` under ``key_name``.

    Signatures by other keys are ignored, as the format requires. Raises ``MalformedNoteError``
    for a note that does not parse and ``NoteSignatureError`` when no signature by the key is
    present or any signature by it fails to verify.
    """
    parsed = parse_note(note)
    wanted = key_id(key_name, public_key)
    ours = [s for s in parsed.signatures if s.name == key_name and s.key_id == wanted]
    if not ours:
        raise NoteSignatureError(
            f"note: expected a signature by {key_name!r} (key ID {wanted.hex()}), got "
            f"{', '.join(f'{s.name!r} ({s.key_id.hex()})' for s in parsed.signatures)}"
        )
    message = parsed.text.encode("utf-8")
    for sig in ours:
        if len(sig.signature) != _ED25519_SIGNATURE_BYTES:
            raise NoteSignatureError(
                f"signature by {key_name!r}: expected {_ED25519_SIGNATURE_BYTES} bytes of "
                f"Ed25519 signature, got {len(sig.signature)}"
            )
        try:
            public_key.verify(sig.signature, message)
        except InvalidSignature as exc:
            raise NoteSignatureError(
                f"signature by {key_name!r} (key ID {wanted.hex()}) does not verify"
            ) from exc
    return parsed


def parse_checkpoint(note: str) -> Checkpoint:
    """The checkpoint a signed note carries, without checking any signature.

    For display and bookkeeping only: use ``verify_checkpoint`` before trusting the values.
    """
    return parse_checkpoint_body(parse_note(note).text)


def parse_checkpoint_body(text: str) -> Checkpoint:
    """Parse a checkpoint body: origin, size and root hash lines, then any extension lines."""
    _check_note_text(text)
    lines = text.split("\n")[:-1]
    if len(lines) < 3:
        raise MalformedNoteError(
            f"checkpoint: expected origin, size and root hash lines, got {len(lines)} lines"
        )
    origin, size_text, root_text, *extensions = lines
    if not _SIZE_RE.fullmatch(size_text):
        raise MalformedNoteError(
            f"checkpoint size: expected a decimal number without leading zeros, got {size_text!r}"
        )
    root = _strict_b64(root_text, "checkpoint root")
    if len(root) != HASH_SIZE:
        raise MalformedNoteError(f"checkpoint root: expected {HASH_SIZE} bytes, got {len(root)}")
    return Checkpoint(origin=origin, size=int(size_text), root=root, extensions=tuple(extensions))


def sign_checkpoint(checkpoint: Checkpoint, key_name: str, private_key: Ed25519PrivateKey) -> str:
    """The checkpoint as a note signed by ``private_key`` under ``key_name``."""
    return sign_note(checkpoint.body(), key_name, private_key)


def verify_checkpoint(note: str, key_name: str, public_key: Ed25519PublicKey) -> Checkpoint:
    """Check the note's signature by ``(key_name, public_key)`` and return the checkpoint it signs."""
    checkpoint = parse_checkpoint(note)
    verify_note(note, key_name, public_key)
    return checkpoint
