"""The trust list's security rules, as tables in the style of python-tuf's key-rotation tests.

Every case builds real Ed25519 keys and a real signed document, and runs the same verification
every party runs; nothing is mocked.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import jwt
import pytest
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

from federation.tools import provision
from trust import envelope, trustlist
from trust import keys as keyfiles
from trust.errors import ExpiredError, RollbackError, SignatureError, TrustError, UnknownMemberError
from trust.store import TrustStore
from trust.trustlist import DOCUMENT_TYPE, GovernanceRoot, format_time

NOW = datetime(2026, 11, 21, 12, 0, tzinfo=UTC)
GOV = [keyfiles.generate() for _ in range(3)]
NEW_GOV = [keyfiles.generate() for _ in range(3)]
OUTSIDER = keyfiles.generate()


def root_of(keys: list[Ed25519PrivateKey], threshold: int) -> GovernanceRoot:
    return GovernanceRoot(threshold, {keyfiles.key_id(k.public_key()): k.public_key() for k in keys})


def signed_part(version: int = 2, *, root: GovernanceRoot | None = None,
                expires_in: timedelta = timedelta(days=7),
                members: list[dict[str, Any]] | None = None) -> dict[str, Any]:
    return {
        "type": DOCUMENT_TYPE, "federation": "test", "version": version,
        "issued": format_time(NOW - timedelta(hours=1)), "expires": format_time(NOW + expires_in),
        "governance": (root or root_of(GOV, 2)).to_json(), "members": members or [],
    }


@dataclass(frozen=True)
class Case:
    name: str
    signed: dict[str, Any]
    signers: list[Ed25519PrivateKey]
    expected: type[Exception] | None
    min_version: int = 0
    pinned: GovernanceRoot | None = None


CASES = [
    Case("threshold met (2 of 3)", signed_part(), GOV[:2], None),
    Case("threshold met (3 of 3)", signed_part(), GOV, None),
    Case("threshold not met (1 of 3)", signed_part(), GOV[:1], SignatureError),
    Case("no signatures", signed_part(), [], SignatureError),
    Case("one key signing twice counts once", signed_part(), [GOV[0], GOV[0]], SignatureError),
    Case("a key outside the root does not count", signed_part(), [GOV[0], OUTSIDER], SignatureError),
    Case("rollback to an older version", signed_part(version=4), GOV[:2], RollbackError, min_version=5),
    Case("the same version again is accepted", signed_part(version=5), GOV[:2], None, min_version=5),
    Case("expired list", signed_part(expires_in=timedelta(seconds=-1)), GOV[:2], ExpiredError),
    Case("root rotation signed by the old keys only", signed_part(root=root_of(NEW_GOV, 2)), GOV[:2],
         SignatureError),
    Case("root rotation signed by the new keys only", signed_part(root=root_of(NEW_GOV, 2)), NEW_GOV[:2],
         SignatureError),
    Case("root rotation signed by old and new thresholds", signed_part(root=root_of(NEW_GOV, 2)),
         [*GOV[:2], *NEW_GOV[:2]], None),
    Case("root rotation: old threshold met, new one not", signed_part(root=root_of(NEW_GOV, 2)),
         [*GOV[:2], NEW_GOV[0]], SignatureError),
    Case("root rotation: new threshold met, old one not", signed_part(root=root_of(NEW_GOV, 2)),
         [GOV[0], *NEW_GOV], SignatureError),
    Case("threshold raised in the same root keys needs old and new thresholds",
         signed_part(root=root_of(GOV, 3)), GOV[:2], SignatureError),
]


@pytest.mark.parametrize("case", CASES, ids=[c.name for c in CASES])
def test_trust_list_verification_rules(case: Case) -> None:
    """Each named case is accepted or refused with the expected error, as TUF's root rules say."""
    document = trustlist.sign(case.signed, case.signers)
    pinned = case.pinned or root_of(GOV, 2)
    if case.expected is None:
        accepted = trustlist.verify(document, pinned, NOW, min_version=case.min_version)
        assert case.signed["version"] == accepted.version
    else:
        with pytest.raises(case.expected):
            trustlist.verify(document, pinned, NOW, min_version=case.min_version)


def test_tampered_list_is_refused() -> None:
    """Changing a signed field after signing (adding a member) breaks every signature."""
    document = trustlist.sign(signed_part(), GOV)
    document["signed"]["members"] = [{"id": "intruder", "roles": ["broker"], "keys": []}]
    with pytest.raises(SignatureError):
        trustlist.verify(document, root_of(GOV, 2), NOW)


def test_expired_list_can_be_shown_but_not_served() -> None:
    """``unsafe_allow_expired`` is for display only; the served check still refuses an expired list."""
    document = trustlist.sign(signed_part(expires_in=timedelta(seconds=-1)), GOV)
    shown = trustlist.verify(document, root_of(GOV, 2), NOW, unsafe_allow_expired=True)
    with pytest.raises(ExpiredError, match="searches are stopped"):
        shown.check_current(NOW)


# --- The party's store: pinned root, highest version, restart ---------------------------------


def write(path: Path, document: dict[str, Any]) -> None:
    path.write_text(json.dumps(document))


def test_store_persists_the_highest_version_across_restarts(tmp_path: Path) -> None:
    """A party that accepted version 3 refuses version 2 even after a restart (a new store)."""
    root, listed = tmp_path / "root.json", tmp_path / "trustlist.json"
    write(root, root_of(GOV, 2).to_json())
    write(listed, trustlist.sign(signed_part(version=3), GOV))
    assert 3 == TrustStore(root, listed).load(NOW).version
    write(listed, trustlist.sign(signed_part(version=2), GOV))
    with pytest.raises(RollbackError):
        TrustStore(root, listed).load(NOW)



def test_store_refresh_of_an_unchanged_list_checks_only_its_expiry(tmp_path: Path) -> None:
    """Proves a reload that finds the same bytes keeps the list in force without verifying it
    again (the same object), still refuses it once it has expired, verifies the same bytes again
    when the party's state changed under them (a higher version recorded: a rollback), and
    verifies a changed list."""
    root, listed = tmp_path / "root.json", tmp_path / "trustlist.json"
    write(root, root_of(GOV, 2).to_json())
    write(listed, trustlist.sign(signed_part(version=3), GOV))
    store = TrustStore(root, listed)
    first = store.load(NOW)
    again = store.load(NOW + timedelta(hours=1))
    with pytest.raises(ExpiredError):
        store.load(NOW + timedelta(days=8))
    state = json.loads(store.state_path.read_text())
    store.state_path.write_text(json.dumps({**state, "version": 4}))
    with pytest.raises(RollbackError):
        store.load(NOW)
    write(listed, trustlist.sign(signed_part(version=5), GOV))
    changed = store.load(NOW)
    assert (True, False, 5) == (again is first, changed is first, changed.version)

def test_store_follows_a_root_rotation_and_then_refuses_the_old_keys(tmp_path: Path) -> None:
    """After accepting a rotation, the store pins the new root: the old keys alone sign nothing."""
    root, listed = tmp_path / "root.json", tmp_path / "trustlist.json"
    write(root, root_of(GOV, 2).to_json())
    new_root = root_of(NEW_GOV, 2)
    write(listed, trustlist.sign(signed_part(version=2, root=new_root), [*GOV[:2], *NEW_GOV[:2]]))
    assert 2 == TrustStore(root, listed).load(NOW).version
    write(listed, trustlist.sign(signed_part(version=3, root=new_root), NEW_GOV[:2]))
    assert 3 == TrustStore(root, listed).load(NOW).version
    write(listed, trustlist.sign(signed_part(version=4, root=root_of(GOV, 2)), GOV))
    with pytest.raises(SignatureError):
        TrustStore(root, listed).load(NOW)


# --- Member keys: validity windows, rotation overlap, kid only a hint -------------------------


BROKER_OLD, BROKER_NEW, NODE_KEY = keyfiles.generate(), keyfiles.generate(), keyfiles.generate()


def key_entry(key: Ed25519PrivateKey, not_before: datetime | None = None,
              not_after: datetime | None = None) -> dict[str, Any]:
    entry: dict[str, Any] = {"kid": keyfiles.key_id(key.public_key()),
                             "public_key": keyfiles.public_b64(key.public_key())}
    if not_before:
        entry["not_before"] = format_time(not_before)
    if not_after:
        entry["not_after"] = format_time(not_after)
    return entry


ROTATED = trustlist.verify(trustlist.sign(signed_part(members=[
    {"id": "broker", "roles": ["broker"], "keys": [
        key_entry(BROKER_OLD, not_after=NOW + timedelta(hours=1)),
        key_entry(BROKER_NEW, not_before=NOW - timedelta(minutes=1))]},
    {"id": "alpha", "roles": ["node"], "keys": [key_entry(NODE_KEY)]},
]), GOV), root_of(GOV, 2), NOW)


def query(key: Ed25519PrivateKey, at: datetime, *, iss: str = "broker", kid: str | None = None) -> str:
    iat = int(at.timestamp())
    token = envelope.sign({"iss": iss, "aud": "test", "iat": iat, "exp": iat + 60, "jti": "q-1"}, key,
                          envelope.QUERY_TYPE)
    if kid is None:
        return token
    return jwt.encode({"iss": iss, "aud": "test", "iat": iat, "exp": iat + 60, "jti": "q-1"}, key,
                      algorithm="EdDSA", headers={"kid": kid, "typ": envelope.QUERY_TYPE})


@dataclass(frozen=True)
class KeyCase:
    name: str
    token: str
    at: datetime
    expected: type[Exception] | None


KEY_CASES = [
    KeyCase("old key inside the overlap", query(BROKER_OLD, NOW), NOW, None),
    KeyCase("new key inside the overlap", query(BROKER_NEW, NOW), NOW, None),
    KeyCase("old key after it retired", query(BROKER_OLD, NOW + timedelta(hours=2)),
            NOW + timedelta(hours=2), SignatureError),
    KeyCase("new key after the old one retired", query(BROKER_NEW, NOW + timedelta(hours=2)),
            NOW + timedelta(hours=2), None),
    KeyCase("new key before its not_before", query(BROKER_NEW, NOW - timedelta(hours=1)),
            NOW - timedelta(hours=1), SignatureError),
    KeyCase("a node's key claiming to be the broker (kid of the node)",
            query(NODE_KEY, NOW, kid=keyfiles.key_id(NODE_KEY.public_key())), NOW, SignatureError),
    KeyCase("a node's key claiming to be the broker (kid of the broker)",
            query(NODE_KEY, NOW, kid=keyfiles.key_id(BROKER_NEW.public_key())), NOW, SignatureError),
    KeyCase("a node signing as itself is not a broker", query(NODE_KEY, NOW, iss="alpha"), NOW,
            UnknownMemberError),
    KeyCase("an unknown issuer", query(OUTSIDER, NOW, iss="stranger"), NOW, UnknownMemberError),
]


@pytest.mark.parametrize("case", KEY_CASES, ids=[c.name for c in KEY_CASES])
def test_member_key_rules(case: KeyCase) -> None:
    """Keys verify only inside their validity window, and only for the member that lists them."""
    if case.expected is None:
        _claims, signer = envelope.verify(case.token, ROTATED, role="broker", typ=envelope.QUERY_TYPE,
                                         now=case.at, audience="test")
        assert "broker" == signer.id
    else:
        with pytest.raises(case.expected):
            envelope.verify(case.token, ROTATED, role="broker", typ=envelope.QUERY_TYPE, now=case.at,
                            audience="test")


# --- The governance workflow on disk ----------------------------------------------------------


def test_draft_is_published_only_when_the_threshold_signed_it(tmp_path: Path) -> None:
    """A draft signed by 1 of 3 (threshold 2) is refused; a second signature lets it publish."""
    folder = tmp_path / "fed"
    provision.create(folder, "test", governance=3, threshold=2)
    key = keyfiles.generate()
    provision.add_members(folder, [(provision.member_entry("alpha", "Alpha", ["node"], key), key)],
                          draft=True)
    provision.sign_draft(folder, keyfiles.load_private(folder / "governance" / "governance-1.pem"))
    with pytest.raises(SignatureError, match="1 valid governance signature"):
        provision.publish_draft(folder)
    assert 1 == provision.verify_file(folder / "trustlist.json", folder / "root.json").version
    provision.sign_draft(folder, keyfiles.load_private(folder / "governance" / "governance-3.pem"))
    published = provision.publish_draft(folder)
    assert (2, ["alpha"]) == (published.version, list(published.members))
    assert not (folder / provision.DRAFT).exists()


def test_draft_signed_by_a_foreign_key_does_not_publish(tmp_path: Path) -> None:
    """Signatures by keys outside the pinned root never count towards the threshold."""
    folder = tmp_path / "fed"
    provision.create(folder, "test", governance=2, threshold=1)
    key = keyfiles.generate()
    provision.add_members(folder, [(provision.member_entry("alpha", "Alpha", ["node"], key), key)],
                          draft=True)
    provision.sign_draft(folder, OUTSIDER)
    with pytest.raises(TrustError):
        provision.publish_draft(folder)


def test_governance_rotation_on_disk_is_followed_by_a_party_pinned_to_the_old_root(tmp_path: Path) -> None:
    """``rotate_governance`` signs with old and new keys, so a party pinned to the old root follows."""
    folder = tmp_path / "fed"
    provision.create(folder, "test", governance=2, threshold=2)
    party = tmp_path / "party"
    party.mkdir()
    (party / "root.json").write_text((folder / "root.json").read_text())
    store = TrustStore(party / "root.json", folder / "trustlist.json")
    assert 1 == store.load().version
    provision.rotate_governance(folder, keys=3, threshold=2)
    assert 2 == store.load().version
    assert 3 == len(store.current.governance.keys)


def test_member_key_rotation_keeps_the_old_key_valid_during_the_overlap(tmp_path: Path) -> None:
    """After ``rotate_member_key`` both keys verify now; the old one stops after the overlap."""
    folder = tmp_path / "fed"
    provision.create(folder, "test")
    old = keyfiles.generate()
    provision.add_members(folder, [(provision.member_entry("broker", "Broker", ["broker"], old), old)])
    now = datetime.now(UTC)
    provision.rotate_member_key(folder, "broker", overlap_hours=1, now=now)
    new = keyfiles.load_private(folder / "keys" / "broker.pem")
    trust = provision.verify_file(folder / "trustlist.json", folder / "root.json")
    for key in (old, new):
        iat = int(now.timestamp())
        token = envelope.sign({"iss": "broker", "iat": iat, "exp": iat + 60, "jti": "x"}, key,
                              envelope.QUERY_TYPE)
        _claims, signer = envelope.verify(token, trust, role="broker", typ=envelope.QUERY_TYPE, now=now)
        assert "broker" == signer.id
    later = now + timedelta(hours=2)
    iat = int(later.timestamp())
    token = envelope.sign({"iss": "broker", "iat": iat, "exp": iat + 60, "jti": "y"}, old,
                          envelope.QUERY_TYPE)
    with pytest.raises(SignatureError):
        envelope.verify(token, trust, role="broker", typ=envelope.QUERY_TYPE, now=later)
