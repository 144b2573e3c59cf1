"""Ed25519 keys: generation, files, and the raw encodings used in trust lists."""

from __future__ import annotations

import base64
import hashlib
import os
from pathlib import Path

from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey, Ed25519PublicKey

from trust.errors import TrustError


def b64url(data: bytes) -> str:
    """Unpadded base64url, as in JOSE."""
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode("ascii")


def b64url_decode(text: str) -> bytes:
    """Decode unpadded (or padded) base64url."""
    return base64.urlsafe_b64decode(text + "=" * (-len(text) % 4))


def generate() -> Ed25519PrivateKey:
    """A fresh Ed25519 private key."""
    return Ed25519PrivateKey.generate()


def public_raw(key: Ed25519PublicKey) -> bytes:
    """The 32 raw bytes of a public key."""
    return key.public_bytes(serialization.Encoding.Raw, serialization.PublicFormat.Raw)


def public_b64(key: Ed25519PublicKey) -> str:
    """A public key as it appears in a trust list (base64url of the raw 32 bytes)."""
    return b64url(public_raw(key))


def public_from_b64(text: str) -> Ed25519PublicKey:
    """Parse a trust-list public key, raising ``TrustError`` if it is not 32 raw bytes."""
    try:
        raw = b64url_decode(text)
        if len(raw) != 32:
            raise ValueError(f"expected 32 bytes, got {len(raw)}")
        return Ed25519PublicKey.from_public_bytes(raw)
    except ValueError as exc:
        raise TrustError(f"public_key: expected base64url Ed25519 key, {exc}") from exc


def key_id(key: Ed25519PublicKey) -> str:
    """A short, stable key identifier: the first 16 hex digits of SHA-256 of the raw key."""
    return hashlib.sha256(public_raw(key)).hexdigest()[:16]


def save_private(key: Ed25519PrivateKey, path: Path) -> None:
    """Write a private key as PKCS#8 PEM, readable by the owner only."""
    pem = key.private_bytes(
        serialization.Encoding.PEM,
        serialization.PrivateFormat.PKCS8,
        serialization.NoEncryption(),
    )
    path.parent.mkdir(parents=True, exist_ok=True)
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "wb") as fh:
        fh.write(pem)


def load_private(path: Path) -> Ed25519PrivateKey:
    """Read a PKCS#8 PEM Ed25519 private key."""
    try:
        key = serialization.load_pem_private_key(path.read_bytes(), password=None)
    except (OSError, ValueError) as exc:
        raise TrustError(f"{path}: cannot read private key: {exc}") from exc
    if not isinstance(key, Ed25519PrivateKey):
        raise TrustError(f"{path}: expected an Ed25519 private key")
    return key
