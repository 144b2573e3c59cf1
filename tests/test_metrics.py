"""The services' counters and histograms: what a scrape shows, exactly as prometheus_client would."""

from __future__ import annotations

import threading

import prometheus_client
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from prometheus_client.parser import text_string_to_metric_families

from federation.metrics import LATENCY_BUCKETS, Registry


def samples(registry: Registry, name: str) -> dict[tuple[str, tuple[tuple[str, str], ...]], float]:
    return {(s.name, tuple(sorted(s.labels.items()))): s.value
            for family in text_string_to_metric_families(registry.render().decode())
            for s in family.samples if s.name.startswith(name)}


latencies = st.lists(st.one_of(st.sampled_from(LATENCY_BUCKETS),
                               st.floats(min_value=0, max_value=20, allow_nan=False)), max_size=40)


@settings(max_examples=60, deadline=None)
@given(latencies)
def test_a_histogram_scrapes_as_prometheus_clients_own(values: list[float]) -> None:
    """Proves every bucket, the count and the sum match prometheus_client's Histogram fed the same
    observations (a value on a bound counts in that bound's bucket)."""
    ours = Registry()
    histogram = ours.histogram("signpost_test_seconds", "Test.", ("authority",))
    theirs = prometheus_client.CollectorRegistry()
    reference = prometheus_client.Histogram("signpost_test_seconds", "Test.", ("authority",), registry=theirs,
                                            buckets=LATENCY_BUCKETS)
    for value in values:
        histogram.observe(value, "kent")
        reference.labels("kent").observe(value)
    text = prometheus_client.generate_latest(theirs).decode()
    expected = {(s.name, tuple(sorted(s.labels.items()))): s.value
                for family in text_string_to_metric_families(text)
                for s in family.samples if not s.name.endswith("_created")}
    actual = samples(ours, "signpost_test_seconds")
    assert expected.keys() == actual.keys()
    for key, value in expected.items():
        assert actual[key] == pytest.approx(value), key


def test_counters_count_per_label_set_and_a_plain_one_shows_zero() -> None:
    registry = Registry()
    answers = registry.counter("signpost_test_answers_total", "Test.", ("authority", "status"))
    searches = registry.counter("signpost_test_searches_total", "Test.")
    assert {("signpost_test_searches_total", ()): 0.0} == samples(registry, "signpost_test_searches")
    answers.inc("kent", "no_match")
    answers.inc("kent", "no_match")
    answers.inc("leeds", "match", amount=3)
    searches.inc()
    assert {("signpost_test_answers_total", (("authority", "kent"), ("status", "no_match"))): 2.0,
            ("signpost_test_answers_total", (("authority", "leeds"), ("status", "match"))): 3.0} \
        == samples(registry, "signpost_test_answers")
    assert {("kent", "no_match"): 2.0, ("leeds", "match"): 3.0} == answers.values
    assert {(): 1.0} == searches.values


def test_counts_from_many_threads_are_all_kept() -> None:
    """Proves increments from several threads at once (the node counts from more than one) add up."""
    registry = Registry()
    counter = registry.counter("signpost_test_total", "Test.", ("authority",))
    histogram = registry.histogram("signpost_test_seconds", "Test.", ("authority",))

    def work() -> None:
        for _ in range(20_000):
            counter.inc("kent")
            histogram.observe(0.02, "kent")

    threads = [threading.Thread(target=work) for _ in range(4)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert {("kent",): 80_000.0} == counter.values
    assert 80_000.0 == samples(registry, "signpost_test_seconds")[
        ("signpost_test_seconds_count", (("authority", "kent"),))]


def test_misuse_is_refused_with_the_metric_named() -> None:
    registry = Registry()
    counter = registry.counter("signpost_test_total", "Test.", ("authority",))
    with pytest.raises(ValueError, match="signpost_test_total: expected labels"):
        counter.inc()
    with pytest.raises(ValueError, match="only goes up"):
        counter.inc("kent", amount=-1)
    with pytest.raises(ValueError, match="ending in _total"):
        registry.counter("signpost_test", "Test.")
    with pytest.raises(ValueError, match="Duplicated timeseries"):
        registry.counter("signpost_test_total", "Again.")
    with pytest.raises(ValueError, match="increasing order"):
        registry.histogram("signpost_test_b_seconds", "Test.", buckets=(1.0, 0.5))
    with pytest.raises(ValueError, match="signpost_test_seconds: expected labels"):
        registry.histogram("signpost_test_seconds", "Test.", ("authority",)).observe(0.1)


@settings(max_examples=30, deadline=None)
@given(latencies)
def test_counting_a_search_at_once_equals_counting_each(values: list[float]) -> None:
    """Proves ``inc_each`` and ``observe_each`` (one lock for a search's outcomes) leave the same
    samples as one call per outcome."""
    one, each = Registry(), Registry()
    pairs = [(value, (f"authority-{i % 3}",)) for i, value in enumerate(values)]
    one_counter = one.counter("signpost_test_total", "Test.", ("authority",))
    one_histogram = one.histogram("signpost_test_seconds", "Test.", ("authority",))
    for value, labels in pairs:
        one_counter.inc(*labels)
        one_histogram.observe(value, *labels)
    each.counter("signpost_test_total", "Test.", ("authority",)).inc_each(labels for _, labels in pairs)
    each.histogram("signpost_test_seconds", "Test.", ("authority",)).observe_each(pairs)
    assert samples(one, "signpost_test") == samples(each, "signpost_test")
