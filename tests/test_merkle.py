"""RFC 9162 Merkle hashing and proofs: published vectors, known answers, a naive reference tree."""

from __future__ import annotations

import base64
import functools
import json
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from trust import merkle
from trust.merkle import (
    EMPTY_ROOT,
    MemoryTree,
    ProofError,
    TreeRangeError,
    consistency_proof,
    inclusion_proof,
    leaf_hash,
    node_hash,
    verify_consistency,
    verify_inclusion,
)

# Published vectors, copied into the repository with their licence and provenance (README.md there).
VECTORS = Path(__file__).resolve().parent / "vectors" / "merkle"
VECTOR_FILES = sorted(VECTORS.rglob("*.json"))

# RFC 6962 §2.1 reference leaves, as used by every Certificate Transparency implementation.
RFC_LEAVES = [
    bytes.fromhex(h)
    for h in [
        "",
        "00",
        "10",
        "2021",
        "3031",
        "40414243",
        "5051525354555657",
        "606162636465666768696a6b6c6d6e6f",
    ]
]

# Enough entries for every tree up to 64 leaves.
ENTRIES = [f"entry {i}".encode() for i in range(64)]


@functools.cache
def naive_mth(start: int, end: int) -> bytes:
    """MTH(D[start:end]) exactly as RFC 9162 §2.1.1 defines it."""
    n = end - start
    if n == 0:
        return merkle.EMPTY_ROOT
    if n == 1:
        return leaf_hash(ENTRIES[start])
    k = 1
    while k * 2 < n:
        k *= 2
    return node_hash(naive_mth(start, start + k), naive_mth(start + k, end))


def naive_path(m: int, start: int, end: int) -> list[bytes]:
    """PATH(m, D[start:end]) exactly as RFC 9162 §2.1.3.1 defines it."""
    n = end - start
    if n == 1:
        return []
    k = 1
    while k * 2 < n:
        k *= 2
    if m < k:
        return [*naive_path(m, start, start + k), naive_mth(start + k, end)]
    return [*naive_path(m - k, start + k, end), naive_mth(start, start + k)]


def naive_subproof(m: int, start: int, end: int, whole: bool) -> list[bytes]:
    """SUBPROOF(m, D[start:end], b) exactly as RFC 9162 §2.1.4.1 defines it."""
    n = end - start
    if m == n:
        return [] if whole else [naive_mth(start, end)]
    k = 1
    while k * 2 < n:
        k *= 2
    if m <= k:
        return [*naive_subproof(m, start, start + k, whole), naive_mth(start + k, end)]
    return [*naive_subproof(m - k, start + k, end, False), naive_mth(start, start + k)]


def naive_nodes(level: int, index: int) -> bytes:
    """A NodeHash served by the naive tree."""
    return naive_mth(index << level, (index + 1) << level)


def b64(text: str) -> bytes:
    return base64.b64decode(text)


def run_vector(vector: dict[str, Any]) -> None:
    """Verify one published vector, raising ProofError if the verifier rejects it."""
    proof = [b64(p) for p in vector["proof"] or []]
    if "leafIdx" in vector:
        verify_inclusion(
            b64(vector["leafHash"]), vector["leafIdx"], vector["treeSize"], proof, b64(vector["root"])
        )
    else:
        verify_consistency(
            vector["size1"], vector["size2"], proof, b64(vector["root1"]), b64(vector["root2"])
        )


def test_vector_directory_is_present() -> None:
    """The published vectors ship with the tests; without them the vector test proves nothing, so fail."""
    assert VECTORS.is_dir(), f"published Merkle test vectors missing: {VECTORS}"
    expected = True
    actual = len(VECTOR_FILES) > 100
    assert expected == actual


@pytest.mark.parametrize("path", VECTOR_FILES, ids=[str(p.relative_to(VECTORS)) for p in VECTOR_FILES])
def test_published_vector(path: Path) -> None:
    """Every transparency-dev/merkle vector gives its expected answer (wantErr means reject)."""
    vector = json.loads(path.read_text())
    try:
        run_vector(vector)
        rejected = False
    except ProofError:
        rejected = True
    assert vector["wantErr"] == rejected, vector["desc"]


def test_empty_tree_known_answer() -> None:
    """The empty tree hashes to SHA-256 of the empty string (RFC 6962 §2.1)."""
    expected = "e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855"
    assert expected == merkle.tree_root([]).hex()
    assert expected == EMPTY_ROOT.hex()


def test_eight_leaf_known_answer() -> None:
    """The eight RFC 6962 reference leaves hash to the published root."""
    expected = "5dc9da79a70659a9ad559cb701ded9a2ab9d823aad2f4960cfe370eff4604328"
    assert expected == merkle.tree_root(RFC_LEAVES).hex()
    assert expected == MemoryTree(leaf_hash(e) for e in RFC_LEAVES).root().hex()


def test_leaf_and_node_hash_domain_separation() -> None:
    """Leaves and nodes are hashed with different prefixes, so a node cannot pose as a leaf."""
    left, right = leaf_hash(b"a"), leaf_hash(b"b")
    assert leaf_hash(left + right) != node_hash(left, right)


@pytest.mark.parametrize("size", range(65))
def test_roots_match_naive_tree(size: int) -> None:
    """The streaming root, the in-memory tree and subtree hashing agree with RFC 9162 for sizes 0..64."""
    expected = naive_mth(0, size)
    assert expected == merkle.tree_root(ENTRIES[:size])
    assert expected == merkle.tree_root_at(naive_nodes, size)
    assert expected == MemoryTree(leaf_hash(e) for e in ENTRIES[:64]).root(size)


def test_subtree_root_of_unaligned_ranges() -> None:
    """subtree_root gives MTH of any range, also ones whose start is not aligned."""
    for start in range(0, 20):
        for end in range(start + 1, 40):
            assert naive_mth(start, end) == merkle.subtree_root(naive_nodes, start, end)


@pytest.mark.parametrize("size", range(1, 65))
def test_inclusion_proofs_match_naive_tree_and_verify(size: int) -> None:
    """For every index of every size up to 64 the proof is RFC 9162's PATH and it verifies."""
    root = naive_mth(0, size)
    for index in range(size):
        expected = naive_path(index, 0, size)
        actual = inclusion_proof(index, size, naive_nodes)
        assert expected == actual
        verify_inclusion(leaf_hash(ENTRIES[index]), index, size, actual, root)


@pytest.mark.parametrize("size2", range(1, 65))
def test_consistency_proofs_match_naive_tree_and_verify(size2: int) -> None:
    """For every size1 <= size2 <= 64 the proof is RFC 9162's PROOF and it verifies."""
    root2 = naive_mth(0, size2)
    for size1 in range(1, size2 + 1):
        expected = naive_subproof(size1, 0, size2, True)
        actual = consistency_proof(size1, size2, naive_nodes)
        assert expected == actual
        verify_consistency(size1, size2, actual, naive_mth(0, size1), root2)


def test_wrong_inclusion_claims_are_rejected() -> None:
    """A proof does not verify for another leaf, index, size or root, nor with a hash flipped."""
    size, index = 13, 6
    proof = inclusion_proof(index, size, naive_nodes)
    leaf, root = leaf_hash(ENTRIES[index]), naive_mth(0, size)
    bad_claims = {
        "other leaf": (leaf_hash(b"x"), index, size, proof, root),
        "other index": (leaf, index + 1, size, proof, root),
        # Only sizes that change the proof's shape: the size itself is bound by the signed
        # checkpoint that carries it with the root, not by the proof.
        "other size": (leaf, index, 7, proof, root),
        "other root": (leaf, index, size, proof, naive_mth(0, size - 1)),
        "proof cut": (leaf, index, size, proof[:-1], root),
        "proof padded": (leaf, index, size, [*proof, root], root),
        "index at size": (leaf, size, size, proof, root),
        "negative index": (leaf, -1, size, proof, root),
        "short leaf": (leaf[:31], index, size, proof, root),
        "long root": (leaf, index, size, proof, root + b"\x00"),
    }
    for position in range(len(proof)):
        flipped = bytearray(proof[position])
        flipped[0] ^= 1
        bad_claims[f"bit flipped in proof[{position}]"] = (
            leaf,
            index,
            size,
            [*proof[:position], bytes(flipped), *proof[position + 1 :]],
            root,
        )
    for name, claim in bad_claims.items():
        with pytest.raises(ProofError):
            verify_inclusion(*claim)
            pytest.fail(f"accepted: {name}")


def test_wrong_consistency_claims_are_rejected() -> None:
    """A consistency proof fails for other sizes or roots, a size-0 start, or a short hash."""
    size1, size2 = 6, 13
    proof = consistency_proof(size1, size2, naive_nodes)
    root1, root2 = naive_mth(0, size1), naive_mth(0, size2)
    bad_claims = {
        "other size1": (size1 + 1, size2, proof, root1, root2),
        "other size2": (size1, 8, proof, root1, root2),
        "other root1": (size1, size2, proof, naive_mth(0, size1 + 1), root2),
        "other root2": (size1, size2, proof, root1, naive_mth(0, size2 - 1)),
        "swapped roots": (size1, size2, proof, root2, root1),
        "empty proof": (size1, size2, [], root1, root2),
        "size1 zero": (0, size2, proof, EMPTY_ROOT, root2),
        "size1 zero, equal sizes": (0, 0, [], EMPTY_ROOT, EMPTY_ROOT),
        "size1 above size2": (size2, size1, proof, root2, root1),
        "short hash in proof": (size1, size2, [proof[0][:31], *proof[1:]], root1, root2),
        "equal sizes with a proof": (size1, size1, proof[:1], root1, root1),
        "equal sizes, other roots": (size1, size1, [], root1, root2),
    }
    for name, claim in bad_claims.items():
        with pytest.raises(ProofError):
            verify_consistency(*claim)
            pytest.fail(f"accepted: {name}")


def test_proofs_for_meaningless_ranges_are_refused() -> None:
    """Generating a proof outside the tree, or from the empty tree, raises TreeRangeError."""
    calls: list[Callable[[], object]] = [
        lambda: inclusion_proof(3, 3, naive_nodes),
        lambda: inclusion_proof(-1, 3, naive_nodes),
        lambda: consistency_proof(0, 3, naive_nodes),
        lambda: consistency_proof(4, 3, naive_nodes),
        lambda: merkle.subtree_root(naive_nodes, 3, 3),
    ]
    for call in calls:
        with pytest.raises(TreeRangeError):
            call()


@settings(max_examples=200, deadline=None)
@given(st.data())
def test_inclusion_proof_property(data: st.DataObject) -> None:
    """For random trees and leaves the proof verifies, and fails once any bit of it is flipped."""
    leaves = data.draw(st.lists(st.binary(max_size=8), min_size=1, max_size=300), label="leaves")
    tree = MemoryTree(leaf_hash(e) for e in leaves)
    size = data.draw(st.integers(1, len(leaves)), label="size")
    index = data.draw(st.integers(0, size - 1), label="index")
    proof = tree.inclusion_proof(index, size)
    verify_inclusion(leaf_hash(leaves[index]), index, size, proof, tree.root(size))
    if proof:
        position = data.draw(st.integers(0, len(proof) - 1), label="position")
        bit = data.draw(st.integers(0, 255), label="bit")
        flipped = bytearray(proof[position])
        flipped[bit // 8] ^= 1 << (bit % 8)
        proof[position] = bytes(flipped)
        with pytest.raises(ProofError):
            verify_inclusion(leaf_hash(leaves[index]), index, size, proof, tree.root(size))


@settings(max_examples=200, deadline=None)
@given(st.data())
def test_consistency_proof_property(data: st.DataObject) -> None:
    """For random trees the consistency proof verifies, and not against another tree's old root."""
    count = data.draw(st.integers(1, 300), label="count")
    tree = MemoryTree(leaf_hash(i.to_bytes(4, "big")) for i in range(count))
    size2 = data.draw(st.integers(1, count), label="size2")
    size1 = data.draw(st.integers(1, size2), label="size1")
    proof = tree.consistency_proof(size1, size2)
    verify_consistency(size1, size2, proof, tree.root(size1), tree.root(size2))
    other = MemoryTree(leaf_hash(b"other" + i.to_bytes(4, "big")) for i in range(size1))
    with pytest.raises(ProofError):
        verify_consistency(size1, size2, proof, other.root(), tree.root(size2))


@settings(max_examples=100, deadline=None)
@given(st.lists(st.binary(max_size=16), max_size=200))
def test_frontier_root_property(entries: list[bytes]) -> None:
    """The streaming Frontier gives the same root as the in-memory tree, at every size."""
    frontier = merkle.Frontier()
    tree = MemoryTree(leaf_hash(e) for e in entries)
    for size, entry in enumerate(entries, start=1):
        frontier.add(leaf_hash(entry))
        assert tree.root(size) == frontier.root()
    assert len(entries) == frontier.size
