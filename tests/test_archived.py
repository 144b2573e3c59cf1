"""Whether a record is archived (18 or over) is one comparison of dates in the index's loops over
every child (``policy.archived_from``): the same answer as counting the age, on every day,
29 February included."""

from __future__ import annotations

from datetime import date

from hypothesis import given, settings
from hypothesis import strategies as st

from node.policy import archived_from, is_archived
from node.store import Child

DAYS = st.dates(min_value=date(1990, 1, 1), max_value=date(2060, 12, 31))
LEAP_DAYS = st.sampled_from([date(y, 2, 29) for y in (2024, 2028, 2032, 2044, 2048)])


def _child(born: date) -> Child:
    return Child("R-1", "p", None, None, "amara", "okafor", (), born, "F", None, False)


@settings(max_examples=2000, deadline=None)
@given(born=st.one_of(DAYS, LEAP_DAYS), today=st.one_of(DAYS, LEAP_DAYS))
def test_the_cutoff_says_what_the_age_says(born: date, today: date) -> None:
    assert (born <= archived_from(today)) == is_archived(_child(born), today)


def test_the_edges_of_the_eighteenth_birthday() -> None:
    assert archived_from(date(2026, 12, 7)) == date(2008, 12, 7)
    assert is_archived(_child(date(2008, 12, 7)), date(2026, 12, 7))
    assert not is_archived(_child(date(2008, 12, 8)), date(2026, 12, 7))
    # 29 February 2028: 18 years back, 2010 has no 29 February, and a child born on 1 March
    # 2010 is still 17.
    assert archived_from(date(2028, 2, 29)) == date(2010, 2, 28)
    # Born on 29 February 2008 (a leap year): 18 on 29 February 2026? 2026 has none; on 1 March.
    assert not is_archived(_child(date(2008, 2, 29)), date(2026, 2, 28))
    assert date(2008, 2, 29) > archived_from(date(2026, 2, 28))
    assert date(2008, 2, 29) <= archived_from(date(2026, 3, 1))
