"""The soak command's accounting: per-minute figures, why each error happened, memory growth, and
a practitioner token that outlives the longest token (the run itself is recorded in
docs/performance.md)."""

from __future__ import annotations

import os

from federation.tools.soak import Minute, Tokens, cause, growth, rss_mib


def test_minute_percentiles_and_resident_memory() -> None:
    """Proves p50/p99 are read from the minute's latencies (in ms), an empty minute reads 0, and
    resident memory is read for a live process and 0 for one that is gone."""
    row = Minute(0, latencies=[i / 1000 for i in range(1, 101)])
    assert (51.0, 100.0, 0.0) == (row.percentile(0.5), row.percentile(0.99), Minute(1).percentile(0.5))
    assert rss_mib(os.getpid()) > 1
    assert 0.0 == rss_mib(2**22 + 12345)


def test_a_soak_longer_than_a_token_signs_in_again() -> None:
    """Proves regression for a soak past 15 minutes failing every search with 401: the token is
    issued again once half its lifetime has passed, and not before."""
    now = [0.0]
    issued: list[str] = []

    def issue() -> str:
        issued.append(f"token-{len(issued)}")
        return issued[-1]

    source = Tokens(issue, lifetime_seconds=900, clock=lambda: now[0])
    seen = []
    for at in (0, 300, 449, 450, 800, 899, 900, 1800):
        now[0] = at
        seen.append(source.current())
    assert ["token-0", "token-0", "token-0", "token-1", "token-1", "token-1", "token-2", "token-3"] == seen


CAUSES = {
    "complete": (200, {"complete": True, "results": []}, None),
    "late node": (200, {"complete": False, "results": [
        {"status": "match"}, {"status": "unavailable", "reason": "no answer within 3 s"},
        {"status": "unavailable", "reason": "no answer within 3 s"}]}, "incomplete: no answer within 3 s"),
    "complete not true": (200, {"results": []}, "incomplete: complete is not true"),
    "problem": (503, {"type": "https://signpost.example/problems/broker-overloaded"},
                "HTTP 503 broker-overloaded"),
    "not an object": (502, ["x"], "HTTP 502: not a JSON object"),
}


def test_each_error_is_given_its_cause() -> None:
    """Proves an error is named by its HTTP status and problem kind, or, for an incomplete 200, by
    the reasons the missing authorities were unavailable; a complete 200 is no error."""
    assert {name: expected for name, (_, _, expected) in CAUSES.items()} == {
        name: cause(status, answer) for name, (status, answer, _) in CAUSES.items()}


def test_memory_growth_runs_from_the_end_of_warm_up_to_the_end() -> None:
    """Proves growth is measured from the start of the second minute (the first when the run is
    one minute) to the sample taken after the last search."""
    rows = [Minute(0, rss_mib={"broker": 50.0}), Minute(1, rss_mib={"broker": 80.0}),
            Minute(2, rss_mib={"broker": 90.0})]
    assert {"broker": 5.0} == growth(rows, {"broker": 84.0})
    assert {"broker": 10.0} == growth(rows[:1], {"broker": 55.0})
