"""Catching up across governance root rotations (The Update Framework's root chain walk).

A party pins one governance root. When a list names a different root, TUF's rule lets the party
follow only if the list is signed by a threshold of the pinned root *and* of the new one; that
covers one rotation. A party that was offline across two or more rotations needs the root
versions in between: governance publishes every root beside the list as ``roots/<n>.json``
(``n`` = 1, 2, 3 … in the order the roots came into force), and the party walks them in order,
verifying each step with the root it trusts already.

Each ``roots/<n>.json`` is the trust-list version that brought root ``n`` into force, as it was
signed and published (``roots/1.json`` is the list that first named the federation's root). We
reuse those documents rather than sign separate root documents because their signatures are
exactly TUF's rule for a root step — a threshold of the previous root and of the new one — so a
rotation needs one signing ceremony, not two, and a rotation published from a multi-party draft
leaves the same history as one signed at once. Only the ``governance`` section of an
intermediate list is ever used: it is never installed as the list in force, so its expiry does
not matter (TUF likewise ignores the expiry of intermediate roots). The list's own version
number is the signed, monotonic counter that refuses a replayed older step.

Everything here is pure: ``trust.store.TrustStore`` fetches ``roots/<n>.json`` and persists the
root it reaches after each step.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime
from typing import Any

from trust.errors import RollbackError, RootChainError, TrustError
from trust.trustlist import GovernanceRoot, TrustList, verify

ROOTS_FOLDER = "roots"


def root_file(index: int) -> str:
    """Where root ``index`` is published, relative to the folder (or URL base) of the list."""
    if index < 1:
        raise RootChainError(f"root index: expected a positive integer, got {index}")
    return f"{ROOTS_FOLDER}/{index}.json"


@dataclass(frozen=True)
class TrustedRoot:
    """The root a party trusts, where it sits in the published chain, and the list version that
    brought it into force (``index`` is None when the party does not know its place yet)."""

    root: GovernanceRoot
    index: int | None = None
    since_version: int = 0

    def __post_init__(self) -> None:
        if self.index is not None and self.index < 1:
            raise RootChainError(f"root index: expected a positive integer, got {self.index}")
        if self.since_version < 0:
            raise RootChainError(f"root since_version: expected 0 or more, got {self.since_version}")


def offered_root(document: Any) -> GovernanceRoot | None:
    """The governance root a (not yet verified) document names, or None if it names none.

    Used only to decide whether a walk is needed and when to stop; the document is verified
    afterwards against the root the walk reached.
    """
    if not isinstance(document, dict) or not isinstance(document.get("signed"), dict):
        return None
    try:
        return GovernanceRoot.from_json(document["signed"].get("governance"))
    except (TrustError, ValueError, TypeError, AttributeError):
        return None


def same_root(a: GovernanceRoot, b: GovernanceRoot) -> bool:
    return a.to_json() == b.to_json()


def verify_anchor(document: Any, trusted: TrustedRoot, index: int, now: datetime) -> TrustedRoot:
    """Confirm that published root ``index`` is the root the party pins, to learn its place.

    The document must name exactly the pinned root and carry a threshold of its signatures.
    """
    listed = verify(document, trusted.root, now, unsafe_allow_expired=True)
    if not same_root(listed.governance, trusted.root):
        raise RootChainError(f"{root_file(index)}: names a different root than the pinned one")
    return TrustedRoot(trusted.root, index, max(trusted.since_version, listed.version))


def verify_step(document: Any, trusted: TrustedRoot, floor: int, now: datetime) -> TrustedRoot:
    """Verify the next published root (``trusted.index + 1``) with the root trusted now.

    Refuses (``TrustError`` subclasses):
    - a step not signed by a threshold of the trusted root and of the new root (``SignatureError``);
    - a step whose list version is not above ``floor`` and the version that brought the trusted
      root into force: a replayed older step (``RollbackError``);
    - a step that does not change the root (``RootChainError``): the chain has only rotations.
    """
    if trusted.index is None:
        raise RootChainError("root chain: the pinned root's place in the published chain is unknown")
    index = trusted.index + 1
    where = root_file(index)
    try:
        listed: TrustList = verify(document, trusted.root, now, unsafe_allow_expired=True)
    except TrustError as exc:
        raise type(exc)(f"{where}: {exc}") from exc
    bound = max(floor, trusted.since_version)
    if listed.version <= bound:
        raise RollbackError(
            f"{where}: trust list version {listed.version} is not above version {bound} already "
            "trusted; an older root step was offered again"
        )
    if same_root(listed.governance, trusted.root):
        raise RootChainError(f"{where}: does not change the governance root (expected a rotation)")
    return TrustedRoot(listed.governance, index, listed.version)


def unreachable(offered_version: Any, trusted: TrustedRoot, location: str) -> RootChainError:
    """The error for a list whose root the party cannot reach: the next root is not published."""
    after = "?" if trusted.index is None else str(trusted.index + 1)
    return RootChainError(
        f"governance root: trust list version {offered_version} names a root this party cannot "
        f"reach: it trusts published root {trusted.index}, and root {after} is missing at "
        f"{location}; refusing it (fail closed)"
    )
