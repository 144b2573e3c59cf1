"""RFC 9162 Merkle tree hashing, inclusion proofs and consistency proofs.

Pure functions: no files, no sockets. Storage serves proofs through a ``NodeHash`` callable
that returns the hash of one complete subtree, so a proof touches O(log n) stored hashes and
never the whole log.

Hashing (RFC 9162 §2.1.1): a leaf hashes as ``SHA-256(0x00 || entry)``, an inner node as
``SHA-256(0x01 || left || right)``, the empty tree as ``SHA-256("")``. A tree of ``n`` leaves
splits at ``k``, the largest power of two smaller than ``n``.

Addressing: the node at ``(level, index)`` is the root of the complete subtree over leaves
``[index * 2**level, (index + 1) * 2**level)``; level 0 holds the leaf hashes.
"""

from __future__ import annotations

import hashlib
from collections.abc import Callable, Iterable, Sequence

from trust.errors import TrustError

HASH_SIZE = 32
"""Bytes in every hash of the tree (SHA-256)."""

EMPTY_ROOT = hashlib.sha256(b"").digest()
"""Root hash of the tree with no leaves."""

NodeHash = Callable[[int, int], bytes]
"""``(level, index) -> hash`` of one complete subtree, as described in the module docstring."""

_LEAF_PREFIX = b"\x00"
_NODE_PREFIX = b"\x01"


class LogError(TrustError):
    """Base class for everything that can go wrong with an audit log, its proofs and checkpoints."""


class ProofError(LogError):
    """A Merkle proof is malformed or does not prove what it claims."""


class TreeRangeError(LogError):
    """An index or tree size lies outside the tree (or a proof was asked for a meaningless range)."""


def leaf_hash(entry: bytes) -> bytes:
    """The RFC 9162 hash of one log entry: ``SHA-256(0x00 || entry)``."""
    return hashlib.sha256(_LEAF_PREFIX + entry).digest()


def node_hash(left: bytes, right: bytes) -> bytes:
    """The RFC 9162 hash of an inner node: ``SHA-256(0x01 || left || right)``."""
    return hashlib.sha256(_NODE_PREFIX + left + right).digest()


def split_point(size: int) -> int:
    """The largest power of two strictly smaller than ``size`` (``size`` must be at least 2)."""
    if size < 2:
        raise TreeRangeError(f"split_point: expected a size of at least 2, got {size}")
    return 1 << ((size - 1).bit_length() - 1)


class Frontier:
    """The right edge of a growing tree: enough to compute its root, one leaf at a time.

    Holds one hash per set bit of the size (the complete subtrees the leaves so far decompose
    into), so a million leaves cost twenty hashes of memory.
    """

    __slots__ = ("_size", "_stack")

    def __init__(self) -> None:
        self._stack: list[bytes] = []
        self._size = 0

    @property
    def size(self) -> int:
        """Number of leaves added so far."""
        return self._size

    def add(self, leaf: bytes) -> None:
        """Add the next leaf hash (not the entry: call ``leaf_hash`` first)."""
        if len(leaf) != HASH_SIZE:
            raise ProofError(f"leaf hash: expected {HASH_SIZE} bytes, got {len(leaf)}")
        stack = self._stack
        size = self._size
        while size & 1:
            leaf = hashlib.sha256(_NODE_PREFIX + stack.pop() + leaf).digest()
            size >>= 1
        stack.append(leaf)
        self._size += 1

    def root(self) -> bytes:
        """Root hash of the leaves added so far."""
        if not self._stack:
            return EMPTY_ROOT
        result = self._stack[-1]
        for left in reversed(self._stack[:-1]):
            result = node_hash(left, result)
        return result


def tree_root(entries: Iterable[bytes]) -> bytes:
    """Root hash of the tree over ``entries`` (each hashed with ``leaf_hash``)."""
    frontier = Frontier()
    for entry in entries:
        frontier.add(leaf_hash(entry))
    return frontier.root()


def subtree_root(nodes: NodeHash, start: int, end: int) -> bytes:
    """``MTH(D[start:end])``: the hash of the leaves ``[start, end)`` as a tree of their own.

    For the ranges RFC 9162 proofs use (``start`` a multiple of the left part's size) this costs
    one ``nodes`` call per level of the right border; other ranges are correct but slower.
    """
    if not 0 <= start < end:
        raise TreeRangeError(f"subtree: expected 0 <= start < end, got [{start}, {end})")
    count = end - start
    if count & (count - 1) == 0 and start & (count - 1) == 0:
        level = count.bit_length() - 1
        return nodes(level, start >> level)
    # Walk down the right border, remembering the left halves, then hash back up.
    lefts: list[bytes] = []
    while not (count & (count - 1) == 0 and start & (count - 1) == 0):
        k = split_point(count)
        lefts.append(subtree_root(nodes, start, start + k))
        start += k
        count -= k
    level = count.bit_length() - 1
    result = nodes(level, start >> level)
    for left in reversed(lefts):
        result = node_hash(left, result)
    return result


def tree_root_at(nodes: NodeHash, size: int) -> bytes:
    """Root hash of the first ``size`` leaves of the tree that ``nodes`` serves."""
    if size < 0:
        raise TreeRangeError(f"tree size: expected a non-negative integer, got {size}")
    if size == 0:
        return EMPTY_ROOT
    return subtree_root(nodes, 0, size)


def inclusion_proof(index: int, size: int, nodes: NodeHash) -> list[bytes]:
    """The RFC 9162 §2.1.3.1 inclusion proof ``PATH(index, D[0:size])``, leaf end first."""
    if not 0 <= index < size:
        raise TreeRangeError(f"inclusion proof: expected 0 <= index < size, got index {index}, size {size}")
    path: list[bytes] = []
    start, end = 0, size
    while end - start > 1:
        k = split_point(end - start)
        if index < start + k:
            path.append(subtree_root(nodes, start + k, end))
            end = start + k
        else:
            path.append(subtree_root(nodes, start, start + k))
            start += k
    path.reverse()
    return path


def consistency_proof(size1: int, size2: int, nodes: NodeHash) -> list[bytes]:
    """The RFC 9162 §2.1.4.1 consistency proof ``PROOF(size1, D[0:size2])``.

    Requires ``0 < size1 <= size2``: a proof from the empty tree proves nothing, and the proof
    between two equal sizes is empty.
    """
    if not 0 < size1 <= size2:
        raise TreeRangeError(
            f"consistency proof: expected 0 < size1 <= size2, got size1 {size1}, size2 {size2}"
        )
    proof: list[bytes] = []
    start, end, m = 0, size2, size1
    whole = True  # the ``b`` flag of SUBPROOF: still on the path of the old tree's root
    while True:
        count = end - start
        if m == count:
            if not whole:
                proof.append(subtree_root(nodes, start, end))
            break
        k = split_point(count)
        if m <= k:
            proof.append(subtree_root(nodes, start + k, end))
            end = start + k
        else:
            proof.append(subtree_root(nodes, start, start + k))
            start += k
            m -= k
            whole = False
    proof.reverse()
    return proof


def _check_hash(value: bytes, what: str) -> None:
    if not isinstance(value, bytes | bytearray) or len(value) != HASH_SIZE:
        got = f"{len(value)} bytes" if isinstance(value, bytes | bytearray) else type(value).__name__
        raise ProofError(f"{what}: expected a {HASH_SIZE}-byte hash, got {got}")


def _check_size(value: int, what: str) -> None:
    if isinstance(value, bool) or not isinstance(value, int) or value < 0:
        raise ProofError(f"{what}: expected a non-negative integer, got {value!r}")


def verify_inclusion(leaf: bytes, index: int, size: int, proof: Sequence[bytes], root: bytes) -> None:
    """Check an inclusion proof (RFC 9162 §2.1.3.2); raise ``ProofError`` unless it holds.

    ``leaf`` is the leaf hash (``leaf_hash(entry)``), not the entry. Every hash must be exactly
    32 bytes.
    """
    _check_size(index, "leaf index")
    _check_size(size, "tree size")
    if index >= size:
        raise ProofError(f"inclusion proof: leaf index {index} is not below tree size {size}")
    _check_hash(leaf, "leaf hash")
    _check_hash(root, "root hash")
    for position, item in enumerate(proof):
        _check_hash(item, f"inclusion proof[{position}]")
    fn, sn = index, size - 1
    result = bytes(leaf)
    for item in proof:
        if sn == 0:
            raise ProofError(f"inclusion proof: too long for leaf {index} of {size} ({len(proof)} hashes)")
        if fn & 1 or fn == sn:
            result = node_hash(item, result)
            if not fn & 1:
                while fn and not fn & 1:
                    fn >>= 1
                    sn >>= 1
        else:
            result = node_hash(result, item)
        fn >>= 1
        sn >>= 1
    if sn != 0:
        raise ProofError(f"inclusion proof: too short for leaf {index} of {size} ({len(proof)} hashes)")
    if result != root:
        raise ProofError(
            f"inclusion proof: leaf {index} of {size} leads to root {result.hex()}, "
            f"expected {bytes(root).hex()}"
        )


def verify_consistency(size1: int, size2: int, proof: Sequence[bytes], root1: bytes, root2: bytes) -> None:
    """Check a consistency proof (RFC 9162 §2.1.4.2); raise ``ProofError`` unless it holds.

    Rejects ``size1 > size2`` and any proof from a tree of size 0 (it would prove nothing).
    Between two equal sizes the proof must be empty and the two roots equal. Otherwise every
    hash must be exactly 32 bytes.
    """
    _check_size(size1, "size1")
    _check_size(size2, "size2")
    if size1 > size2:
        raise ProofError(f"consistency proof: size1 {size1} is larger than size2 {size2}")
    if size1 == 0:
        raise ProofError("consistency proof: a proof from the empty tree (size1 0) proves nothing")
    if size1 == size2:
        if proof:
            raise ProofError(
                f"consistency proof: sizes are equal ({size1}) so the proof must be empty, "
                f"got {len(proof)} hashes"
            )
        if bytes(root1) != bytes(root2):
            raise ProofError(
                f"consistency proof: two different roots for the same size {size1}: "
                f"{bytes(root1).hex()} and {bytes(root2).hex()}"
            )
        return
    _check_hash(root1, "root1")
    _check_hash(root2, "root2")
    if not proof:
        raise ProofError(f"consistency proof: empty proof from size {size1} to {size2}")
    for position, item in enumerate(proof):
        _check_hash(item, f"consistency proof[{position}]")

    path = list(proof)
    if size1 & (size1 - 1) == 0:  # size1 is a power of two: its root is a node of the new tree
        path.insert(0, bytes(root1))
    fn, sn = size1 - 1, size2 - 1
    while fn & 1:
        fn >>= 1
        sn >>= 1
    first = second = bytes(path[0])
    for item in path[1:]:
        if sn == 0:
            raise ProofError(
                f"consistency proof: too long from size {size1} to {size2} ({len(proof)} hashes)"
            )
        if fn & 1 or fn == sn:
            first = node_hash(item, first)
            second = node_hash(item, second)
            if not fn & 1:
                while fn and not fn & 1:
                    fn >>= 1
                    sn >>= 1
        else:
            second = node_hash(second, item)
        fn >>= 1
        sn >>= 1
    if sn != 0:
        raise ProofError(f"consistency proof: too short from size {size1} to {size2} ({len(proof)} hashes)")
    if first != root1:
        raise ProofError(
            f"consistency proof: leads to old root {first.hex()} at size {size1}, "
            f"expected {bytes(root1).hex()}"
        )
    if second != root2:
        raise ProofError(
            f"consistency proof: leads to new root {second.hex()} at size {size2}, "
            f"expected {bytes(root2).hex()}"
        )


class MemoryTree:
    """Every node of a small tree held in memory: for tests, tools and short logs.

    Built once from the leaf hashes; ``node`` is a ``NodeHash`` for the proof functions.
    """

    def __init__(self, leaf_hashes: Iterable[bytes]) -> None:
        level = [bytes(h) for h in leaf_hashes]
        for position, item in enumerate(level):
            _check_hash(item, f"leaf hash {position}")
        self._levels: list[list[bytes]] = [level]
        while len(level) > 1:
            level = [node_hash(level[i], level[i + 1]) for i in range(0, len(level) - 1, 2)]
            self._levels.append(level)

    @property
    def size(self) -> int:
        """Number of leaves."""
        return len(self._levels[0])

    def node(self, level: int, index: int) -> bytes:
        """Hash of the complete subtree at ``(level, index)``."""
        if not (0 <= level < len(self._levels) and 0 <= index < len(self._levels[level])):
            raise TreeRangeError(f"no complete subtree at level {level}, index {index}")
        return self._levels[level][index]

    def root(self, size: int | None = None) -> bytes:
        """Root hash of the first ``size`` leaves (all of them by default)."""
        return tree_root_at(self.node, self.size if size is None else size)

    def inclusion_proof(self, index: int, size: int | None = None) -> list[bytes]:
        """Inclusion proof for leaf ``index`` in the first ``size`` leaves."""
        return inclusion_proof(index, self.size if size is None else size, self.node)

    def consistency_proof(self, size1: int, size2: int | None = None) -> list[bytes]:
        """Consistency proof from the first ``size1`` leaves to the first ``size2``."""
        return consistency_proof(size1, self.size if size2 is None else size2, self.node)
