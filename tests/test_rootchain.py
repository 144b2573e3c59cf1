"""Catching up across several governance root rotations (TUF's root chain walk).

The step rules are a table over the pure ``trust.rootchain.verify_step``; the walk is a table of
scenarios over real federation folders made by ``federation.tools.provision`` and a party's real
``TrustStore`` (file source), plus one walk over HTTP from a real server on loopback.
"""

from __future__ import annotations

import json
import shutil
from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest
from aiohttp import web
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

from federation.http import runner as app_runner
from federation.tools import provision
from tests.conftest import TEST_GRACE
from trust import keys as keyfiles
from trust import rootchain, trustlist
from trust.errors import RollbackError, RootChainError, SignatureError, TrustError
from trust.rootchain import TrustedRoot
from trust.store import TrustStore
from trust.trustlist import DOCUMENT_TYPE, GovernanceRoot, format_time

NOW = datetime(2026, 11, 21, 12, 0, tzinfo=UTC)
K1 = [keyfiles.generate() for _ in range(3)]
K2 = [keyfiles.generate() for _ in range(3)]
K3 = [keyfiles.generate() for _ in range(3)]
EVIL = [keyfiles.generate() for _ in range(3)]


def root_of(keys: list[Ed25519PrivateKey], threshold: int = 2) -> GovernanceRoot:
    return GovernanceRoot(threshold, {keyfiles.key_id(k.public_key()): k.public_key() for k in keys})


def listed(version: int, root: GovernanceRoot, *,
           expires_in: timedelta = timedelta(days=7)) -> dict[str, Any]:
    return {
        "type": DOCUMENT_TYPE, "federation": "test", "version": version,
        "issued": format_time(NOW - timedelta(days=30)), "expires": format_time(NOW + expires_in),
        "governance": root.to_json(), "members": [],
    }


# --- One step of the walk, pure ----------------------------------------------------------------


@dataclass(frozen=True)
class Step:
    name: str
    signed: dict[str, Any]
    signers: list[Ed25519PrivateKey]
    expected: type[Exception] | None
    floor: int = 0


AT_R1 = TrustedRoot(root_of(K1), index=1, since_version=1)

STEPS = [
    Step("next root signed by old and new thresholds", listed(4, root_of(K2)), [*K1[:2], *K2[:2]], None),
    Step("an expired intermediate still proves the step",
         listed(4, root_of(K2), expires_in=-timedelta(days=1)), [*K1[:2], *K2[:2]], None),
    Step("forged: signed by the new keys only", listed(4, root_of(K2)), K2, SignatureError),
    Step("forged: signed by the old keys only", listed(4, root_of(K2)), K1, SignatureError),
    Step("forged: an outsider's root signed by the outsider", listed(4, root_of(EVIL)), EVIL, SignatureError),
    Step("old threshold met, new one not", listed(4, root_of(K2)), [*K1[:2], K2[0]], SignatureError),
    Step("skips a rotation: signed by the next root and the one after",
         listed(6, root_of(K3)), [*K2[:2], *K3[:2]], SignatureError),
    Step("replayed older step: version not above the version already accepted",
         listed(4, root_of(K2)), [*K1[:2], *K2[:2]], RollbackError, floor=5),
    Step("replayed older step: version not above the trusted root's own",
         listed(1, root_of(K2)), [*K1[:2], *K2[:2]], RollbackError),
    Step("a step that does not change the root", listed(4, root_of(K1)), K1, RootChainError),
]


@pytest.mark.parametrize("case", STEPS, ids=[c.name for c in STEPS])
def test_root_step_rules(case: Step) -> None:
    """Each step must be signed by a threshold of the trusted root and of the new one, be newer
    than anything trusted, and change the root; otherwise it is refused with the named error."""
    document = trustlist.sign(case.signed, case.signers)
    if case.expected is None:
        reached = rootchain.verify_step(document, AT_R1, case.floor, NOW)
        assert (2, case.signed["version"], case.signed["governance"]) == (
            reached.index, reached.since_version, reached.root.to_json())
    else:
        with pytest.raises(case.expected):
            rootchain.verify_step(document, AT_R1, case.floor, NOW)


def test_a_step_needs_the_trusted_roots_place_in_the_chain() -> None:
    """Without knowing which published root it trusts, a party cannot take a step (fail closed)."""
    document = trustlist.sign(listed(4, root_of(K2)), [*K1, *K2])
    with pytest.raises(RootChainError, match="place in the published chain is unknown"):
        rootchain.verify_step(document, TrustedRoot(root_of(K1)), 0, NOW)


# --- The walk in a party's store -----------------------------------------------------------------


def enrol(folder: Path, party: Path) -> TrustStore:
    """A party pinning the federation's current root and accepting its current list."""
    party.mkdir()
    shutil.copy(folder / "root.json", party / "root.json")
    store = TrustStore(party / "root.json", folder / "trustlist.json")
    store.load()
    return store


def rotate(folder: Path, times: int) -> None:
    """``times`` governance rotations, each followed by an ordinary change (a new member)."""
    for i in range(times):
        provision.rotate_governance(folder, keys=3, threshold=2)
        key = keyfiles.generate()
        provision.add_members(folder, [(provision.member_entry(f"m{i}", f"M{i}", ["node"], key), key)])


def pinned(store: TrustStore) -> dict[str, Any]:
    return dict(json.loads(store.state_path.read_text())["root"])


def forge_root_2(folder: Path) -> None:
    """Replace published root 2 with a rotation to an outsider's root, signed by the outsider."""
    signed = dict(json.loads((folder / "roots" / "2.json").read_text())["signed"])
    signed["governance"] = root_of(EVIL).to_json()
    (folder / "roots" / "2.json").write_text(json.dumps(trustlist.sign(signed, EVIL)))


def replay_root_2_as_3(folder: Path) -> None:
    """Serve the published root 2 again in the place of root 3."""
    shutil.copy(folder / "roots" / "2.json", folder / "roots" / "3.json")


@dataclass(frozen=True)
class Walk:
    name: str
    rotations: int
    tamper: Callable[[Path], None] | None
    expected: type[Exception] | None
    match: str = ""
    pinned_after: int = 1  # which published root the party trusts afterwards


WALKS = [
    Walk("catch up across two rotations", 2, None, None, pinned_after=3),
    Walk("catch up across three rotations", 3, None, None, pinned_after=4),
    Walk("forged intermediate root refused", 2, forge_root_2, SignatureError, "roots/2.json"),
    Walk("missing intermediate root refused", 2, lambda f: (f / "roots" / "2.json").unlink(),
         RootChainError, "root 2 is missing"),
    Walk("missing last root refused, the proven step kept", 3, lambda f: (f / "roots" / "4.json").unlink(),
         RootChainError, "root 4 is missing", pinned_after=3),
    Walk("replayed older root in place of the next refused, the proven step kept", 2, replay_root_2_as_3,
         RollbackError, "roots/3.json", pinned_after=2),
]


@pytest.mark.parametrize("case", WALKS, ids=[c.name for c in WALKS])
def test_root_chain_walk(case: Walk, tmp_path: Path) -> None:
    """A party pinned to root 1 that missed ``rotations`` rotations walks the published roots;
    a forged, missing or replayed step stops the walk, the newest list is refused (fail closed),
    and the party keeps every step it did prove."""
    folder = tmp_path / "fed"
    provision.create(folder, "test", governance=3, threshold=2)
    store = enrol(folder, tmp_path / "party")
    rotate(folder, case.rotations)
    if case.tamper is not None:
        case.tamper(folder)
    newest = json.loads((folder / "trustlist.json").read_text())["signed"]
    roots = {i: json.loads((folder / "roots" / f"{i}.json").read_text())["signed"]["governance"]
             for i in range(1, provision.published_roots(folder) + 1)}
    if case.expected is None:
        accepted = store.load()
        assert (newest["version"], newest["governance"]) == (accepted.version, accepted.governance.to_json())
        restarted = TrustStore(store.root_path, store.list_path)
        assert newest["version"] == restarted.load().version
    else:
        with pytest.raises(case.expected, match=case.match):
            store.load()
        assert 1 == store.current.version
    assert roots[case.pinned_after] == pinned(store)


def test_root_rollback_is_refused_after_catching_up(tmp_path: Path) -> None:
    """Once a party trusts root 3, lists signed by the retired keys — an old list, or a new
    version naming an old root — are refused, and the pinned root stays root 3."""
    folder = tmp_path / "fed"
    provision.create(folder, "test", governance=3, threshold=2)
    store = enrol(folder, tmp_path / "party")
    first = (folder / "trustlist.json").read_text()
    old_keys = provision.governance_keys(folder)
    rotate(folder, 2)
    newest = store.load()
    root_3 = pinned(store)
    (folder / "trustlist.json").write_text(first)
    with pytest.raises(RootChainError, match="root 4 is missing"):
        store.load()
    signed = dict(json.loads(first)["signed"], version=newest.version + 1)
    (folder / "trustlist.json").write_text(json.dumps(trustlist.sign(signed, old_keys)))
    with pytest.raises(TrustError):
        store.load()
    assert (newest.version, root_3) == (store.current.version, pinned(store))


def test_rotation_published_from_a_signed_draft_extends_the_root_history(tmp_path: Path) -> None:
    """A rotation installed with ``publish_draft`` (multi-party signing) is published as the next
    root, so parties can walk through it like one signed at once."""
    folder = tmp_path / "fed"
    provision.create(folder, "test", governance=3, threshold=2)
    store = enrol(folder, tmp_path / "party")
    new = [keyfiles.generate() for _ in range(3)]
    signed = provision.load_signed(folder)
    signed["governance"] = root_of(new).to_json()
    provision.publish(folder, signed, draft=True)
    for key in [*provision.governance_keys(folder)[:2], *new[:2]]:
        provision.sign_draft(folder, key)
    provision.publish_draft(folder)
    for i, key in enumerate(new, start=1):
        keyfiles.save_private(key, folder / "governance" / f"governance-{i}.pem")
    rotate(folder, 1)
    assert 3 == provision.published_roots(folder)
    assert 4 == store.load().version


def test_a_federation_without_root_history_starts_it_at_the_next_rotation(tmp_path: Path) -> None:
    """A folder made before roots were published gets ``roots/1.json`` (the list in force) on
    its first rotation, so parties pinned to that root can walk from there."""
    folder = tmp_path / "fed"
    provision.create(folder, "test", governance=3, threshold=2)
    shutil.rmtree(folder / "roots")
    store = enrol(folder, tmp_path / "party")
    rotate(folder, 2)
    assert 3 == provision.published_roots(folder)
    assert json.loads((folder / "trustlist.json").read_text())["signed"]["version"] == store.load().version


async def test_root_chain_walk_over_http(tmp_path: Path) -> None:
    """With ``trust_list_url`` the roots come from ``roots/<n>.json`` under the same base URL:
    a party pinned to root 1 catches up across two rotations on refresh, and a 404 for a
    needed root refuses the list."""
    folder = tmp_path / "fed"
    provision.create(folder, "test", governance=3, threshold=2)
    app = web.Application()
    app.router.add_static("/fed/", folder)
    runner = app_runner(app, grace=TEST_GRACE)
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", 0)
    await site.start()
    port = runner.addresses[0][1]
    try:
        party = tmp_path / "party"
        party.mkdir()
        shutil.copy(folder / "root.json", party / "root.json")
        store = TrustStore(party / "root.json", party / "trustlist.json",
                           url=f"http://127.0.0.1:{port}/fed/trustlist.json")
        assert 1 == (await store.refresh()).version
        rotate(folder, 2)
        (folder / "roots" / "3.json").rename(folder / "roots" / "3.json.held")
        with pytest.raises(RootChainError, match="root 3 is missing"):
            await store.refresh()
        (folder / "roots" / "3.json.held").rename(folder / "roots" / "3.json")
        newest = json.loads((folder / "trustlist.json").read_text())["signed"]
        assert newest["version"] == (await store.refresh()).version
        assert newest["governance"] == pinned(store)
    finally:
        await runner.cleanup()


def test_verify_file_walks_the_published_roots_without_changing_state(tmp_path: Path) -> None:
    """``federation verify --root OLD`` answers what a party pinned to OLD would: the newest list
    verifies across two rotations, and not once a needed root is missing."""
    folder = tmp_path / "fed"
    provision.create(folder, "test", governance=3, threshold=2)
    old_root = tmp_path / "old-root.json"
    shutil.copy(folder / "root.json", old_root)
    rotate(folder, 2)
    newest = provision.verify_file(folder / "trustlist.json", old_root)
    assert (5, []) == (newest.version, sorted(p.name for p in tmp_path.glob("*.state.json")))
    (folder / "roots" / "3.json").unlink()
    with pytest.raises(RootChainError, match="root 3 is missing"):
        provision.verify_file(folder / "trustlist.json", old_root)
