"""What an auditor checks about one log, given its entries and a signed checkpoint.

Pure: the caller fetches entries, leaf hashes and checkpoints (from a service or from disk) and
passes them in; the answer is a ``LogReport`` listing every problem found, each named, with the
index of the entry at fault where there is one.

- The checkpoint must be well formed and signed by the service's key.
- The entries must hash to the checkpoint's root. When the caller also has a recorded leaf hash
  for each entry (the log's ``leaves`` file, or the hashes the auditor kept from its last run),
  every entry is compared with its own, so a changed entry is named by its index.
- Against the last checkpoint this auditor accepted: a smaller size is a rollback; the same size
  with another root, a history whose prefix no longer hashes to the old root, or a consistency
  proof that fails, is a fork.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from enum import StrEnum

from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PublicKey

from trust.checkpoint import (
    Checkpoint,
    CheckpointError,
    NoteSignatureError,
    parse_checkpoint,
    verify_checkpoint,
)
from trust.merkle import EMPTY_ROOT, Frontier, ProofError, leaf_hash, verify_consistency

MAX_REPORTED_ENTRIES = 20
"""Most entry mismatches listed one by one; the rest are counted in one summary problem."""


class ProblemKind(StrEnum):
    """What kind of thing is wrong."""

    MALFORMED_CHECKPOINT = "malformed-checkpoint"
    """The checkpoint note does not parse."""
    BAD_SIGNATURE = "bad-signature"
    """The checkpoint is not validly signed by the expected key."""
    ENTRY_MISMATCH = "entry-mismatch"
    """An entry no longer hashes to the leaf hash recorded for it."""
    DAMAGED_RECORD = "damaged-record"
    """A stored record is damaged (its length or check bytes are wrong)."""
    MISSING_ENTRIES = "missing-entries"
    """Fewer entries than the checkpoint covers."""
    EXTRA_ENTRIES = "extra-entries"
    """More entries than the checkpoint covers."""
    ROOT_MISMATCH = "root-mismatch"
    """The entries do not hash to the checkpoint's root."""
    ROLLBACK = "rollback"
    """The checkpoint is smaller than one seen before."""
    FORK = "fork"
    """The checkpoint is not an extension of one seen before."""
    ORIGIN_CHANGED = "origin-changed"
    """The checkpoint names another log than the one seen before."""


@dataclass(frozen=True)
class Problem:
    """One thing wrong with a log, and the entry it concerns when there is one."""

    kind: ProblemKind
    message: str
    index: int | None = None

    def __str__(self) -> str:
        where = "" if self.index is None else f" (entry {self.index})"
        return f"{self.kind}{where}: {self.message}"


@dataclass(frozen=True)
class LogReport:
    """The outcome of verifying one log.

    ``checkpoint`` is the checkpoint as parsed (even if its signature failed, so that the
    report can say what it claimed), ``entries`` how many entries were read, ``root`` the root
    recomputed over the checkpoint's size (``None`` if there were too few entries or no usable
    checkpoint).
    """

    checkpoint: Checkpoint | None
    entries: int
    root: bytes | None
    problems: tuple[Problem, ...]

    @property
    def ok(self) -> bool:
        """True when nothing is wrong."""
        return not self.problems

    @property
    def first_bad_index(self) -> int | None:
        """The lowest entry index any problem names, if any does."""
        indexes = [p.index for p in self.problems if p.index is not None]
        return min(indexes) if indexes else None

    def with_problems(self, extra: Iterable[Problem]) -> LogReport:
        """This report with more problems (for example from the storage layer) added."""
        extra = tuple(extra)
        if not extra:
            return self
        return dataclasses.replace(self, problems=(*extra, *self.problems))


def check_consistency(
    previous: Checkpoint,
    current: Checkpoint,
    *,
    proof: Sequence[bytes] | None = None,
    prefix_root: bytes | None = None,
) -> tuple[Problem, ...]:
    """Problems with ``current`` as the successor of ``previous`` (an empty tuple if none).

    ``proof`` is a consistency proof from the service; ``prefix_root`` is the root the auditor
    itself computed over the first ``previous.size`` entries. Either, both or neither may be
    given; without them only rollbacks and same-size forks can be seen.
    """
    problems: list[Problem] = []
    if previous.origin != current.origin:
        problems.append(
            Problem(
                ProblemKind.ORIGIN_CHANGED,
                f"checkpoint origin is {current.origin!r}, seen before as {previous.origin!r}",
            )
        )
    if current.size < previous.size:
        problems.append(
            Problem(
                ProblemKind.ROLLBACK,
                f"checkpoint size {current.size} is smaller than size {previous.size} seen before",
            )
        )
        return tuple(problems)
    if current.size == previous.size:
        if current.root != previous.root:
            problems.append(
                Problem(
                    ProblemKind.FORK,
                    f"two checkpoints of size {current.size} with different roots: "
                    f"{previous.root.hex()} seen before, {current.root.hex()} now",
                )
            )
        return tuple(problems)
    if previous.size == 0:
        if previous.root != EMPTY_ROOT:
            problems.append(
                Problem(
                    ProblemKind.FORK,
                    f"checkpoint of size 0 seen before has root {previous.root.hex()}, "
                    f"not the empty tree's {EMPTY_ROOT.hex()}",
                )
            )
        return tuple(problems)
    if prefix_root is not None and prefix_root != previous.root:
        problems.append(
            Problem(
                ProblemKind.FORK,
                f"the first {previous.size} entries now hash to {prefix_root.hex()}, but the "
                f"checkpoint seen before at that size has root {previous.root.hex()}",
            )
        )
    if proof is not None:
        try:
            verify_consistency(previous.size, current.size, proof, previous.root, current.root)
        except ProofError as exc:
            problems.append(
                Problem(
                    ProblemKind.FORK,
                    f"size {current.size} is not an extension of size {previous.size}: {exc}",
                )
            )
    return tuple(problems)


def verify_log(
    entries: Iterable[bytes],
    note: str,
    key_name: str,
    public_key: Ed25519PublicKey,
    *,
    previous: Checkpoint | None = None,
    leaf_hashes: Iterable[bytes] | None = None,
    consistency_proof: Sequence[bytes] | None = None,
) -> LogReport:
    """Verify a whole log: ``entries`` (from index 0) against the signed checkpoint ``note``.

    ``leaf_hashes``, when given, are the hashes recorded for the same entries; each entry is
    compared with its own so a changed entry is named by index. ``previous`` is the last
    checkpoint this auditor accepted for the log, and ``consistency_proof`` a proof from it to
    ``note``'s checkpoint, as served by the log.
    """
    problems: list[Problem] = []
    checkpoint: Checkpoint | None = None
    try:
        checkpoint = verify_checkpoint(note, key_name, public_key)
    except NoteSignatureError as exc:
        problems.append(Problem(ProblemKind.BAD_SIGNATURE, str(exc)))
        try:
            checkpoint = parse_checkpoint(note)
        except CheckpointError:
            checkpoint = None
    except CheckpointError as exc:
        problems.append(Problem(ProblemKind.MALFORMED_CHECKPOINT, str(exc)))

    size = checkpoint.size if checkpoint is not None else -1
    prefix_size = previous.size if previous is not None and previous.size < size else -1
    root_at_size = EMPTY_ROOT if size == 0 else None
    prefix_root: bytes | None = None
    frontier = Frontier()
    reference = iter(leaf_hashes) if leaf_hashes is not None else None
    mismatches = 0
    first_mismatch: int | None = None
    for index, entry in enumerate(entries):
        leaf = leaf_hash(entry)
        if reference is not None:
            recorded = next(reference, None)
            if recorded is None:
                problems.append(
                    Problem(
                        ProblemKind.ENTRY_MISMATCH,
                        f"no recorded leaf hash for entry {index} to compare it with",
                        index,
                    )
                )
                reference = None
            elif recorded != leaf:
                mismatches += 1
                if first_mismatch is None:
                    first_mismatch = index
                if mismatches <= MAX_REPORTED_ENTRIES:
                    problems.append(
                        Problem(
                            ProblemKind.ENTRY_MISMATCH,
                            f"entry {index} hashes to {leaf.hex()}, "
                            f"its recorded leaf hash is {bytes(recorded).hex()}",
                            index,
                        )
                    )
        frontier.add(leaf)
        count = index + 1
        if count == prefix_size:
            prefix_root = frontier.root()
        if count == size:
            root_at_size = frontier.root()
    count = frontier.size
    if mismatches > MAX_REPORTED_ENTRIES:
        problems.append(
            Problem(
                ProblemKind.ENTRY_MISMATCH,
                f"{mismatches - MAX_REPORTED_ENTRIES} more entries do not match their recorded "
                f"leaf hashes ({mismatches} in all)",
            )
        )

    if checkpoint is not None:
        if count < size:
            problems.append(
                Problem(
                    ProblemKind.MISSING_ENTRIES,
                    f"checkpoint covers {size} entries, got {count}: entries from index {count} are missing",
                    count,
                )
            )
        elif count > size:
            problems.append(
                Problem(
                    ProblemKind.EXTRA_ENTRIES,
                    f"got {count} entries, the checkpoint covers {size}: entries from index "
                    f"{size} are not covered by it",
                    size,
                )
            )
        if root_at_size is not None and root_at_size != checkpoint.root:
            where = "" if first_mismatch is None else f"; entry {first_mismatch} is the first changed"
            problems.append(
                Problem(
                    ProblemKind.ROOT_MISMATCH,
                    f"the first {size} entries hash to root {root_at_size.hex()}, the checkpoint "
                    f"says {checkpoint.root.hex()}{where}",
                    first_mismatch,
                )
            )
        if previous is not None:
            problems.extend(
                check_consistency(previous, checkpoint, proof=consistency_proof, prefix_root=prefix_root)
            )
    return LogReport(checkpoint=checkpoint, entries=count, root=root_at_size, problems=tuple(problems))
