"""What the broker returns for one authority (`broker.fanout.NodeResult.to_wire`)."""

from __future__ import annotations

import itertools

import pytest

from broker.fanout import NodeResult
from federation.protocol import Contact, Status, disclosure_wire

CONTACTS = [None, Contact("Signposting team", phone="0113 000 0000")]
REASONS = [None, "no answer within 3 s"]


@pytest.mark.parametrize(("status", "contact", "reason"),
                         list(itertools.product(list(Status), CONTACTS, REASONS)))
def test_every_result_is_written_as_the_disclosure_rules_say(
        status: Status, contact: Contact | None, reason: str | None) -> None:
    """Proves the short way a plain ``no_match`` is written gives exactly what the general rules
    (``disclosure_wire``) give, and every other result still goes through them."""
    result = NodeResult("kent", "Kent", status, contact=contact, reason=reason, answer_hash="ab" * 32)
    expected = {"authority": {"id": "kent", "name": "Kent"},
                **disclosure_wire(status, (), contact, None)}
    if status is Status.MATCH:
        expected["lead_informed"] = False
    if reason is not None:
        expected["reason"] = reason
    assert expected == result.to_wire()
    assert list(expected) == list(result.to_wire())  # the same order of keys, too
