"""``broker.ledger``: what the broker remembers of a search for a later check, and for how long."""

from __future__ import annotations

from broker.ledger import SearchLedger

LEO = {"given_name": "Leo", "family_name": "Okafor", "date_of_birth": "2019-06-01"}


def test_only_searches_with_a_possible_match_are_remembered_and_they_expire() -> None:
    """Proves regression for the broker's memory growing with every search in the soak: a search
    no authority answered possible_match is not remembered (no check can follow it); one that was
    is, for its owner and identity, until its lifetime ends, when it is dropped (oldest first)
    even if never looked up again."""
    ledger = SearchLedger(ttl_seconds=100, max_searches=10)
    ledger.remember("s1", "alpha-idp", "sam", [], LEO, now=0)
    ledger.remember("s2", "alpha-idp", "sam", ["alpha"], LEO, now=10)
    ledger.remember("s3", "alpha-idp", "sam", ["beta"], LEO, now=20)
    assert (None, 2) == (ledger.get("s1", now=30), len(ledger))
    found = ledger.get("s2", now=30)
    assert found is not None
    assert ("alpha-idp", "sam", frozenset({"alpha"}), ledger.digest(LEO)) == (
        found.issuer, found.sub, found.possible, found.identity_digest)
    ledger.remember("s4", "alpha-idp", "sam", ["alpha"], LEO, now=115)  # s2 expired at 110
    assert (["s3", "s4"], None) == (list(ledger._searches), ledger.get("s2", now=115))


def test_a_full_ledger_drops_its_oldest_search() -> None:
    """Proves the ledger never holds more than ``max_searches``: the oldest goes first."""
    ledger = SearchLedger(ttl_seconds=1000, max_searches=2)
    for i in range(3):
        ledger.remember(f"s{i}", "alpha-idp", "sam", ["alpha"], LEO, now=i)
    assert (2, None) == (len(ledger), ledger.get("s0", now=3))
