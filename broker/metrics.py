"""The broker's metrics: searches, answers by status, per-node latency, errors.

Labels carry authority ids (councils), statuses and channels only; never a practitioner, a
child, a token or a query id.
"""

from __future__ import annotations

from collections.abc import Iterable

from broker.fanout import NodeResult
from federation.metrics import Registry


class BrokerMetrics(Registry):
    """Everything the broker counts."""

    def __init__(self) -> None:
        super().__init__()
        self.searches = self.counter(
            "signpost_broker_searches_total", "Searches fanned out to the nodes.")
        self.refused = self.counter(
            "signpost_broker_searches_refused_total",
            "Searches refused before fan-out, by reason.", ("reason",))
        self.answers = self.counter(
            "signpost_broker_answers_total", "Per-authority outcomes of searches, by status.",
            ("authority", "status"))
        self.incomplete = self.counter(
            "signpost_broker_incomplete_searches_total",
            "Searches where at least one authority did not answer.")
        self.integrity = self.counter(
            "signpost_broker_integrity_failures_total",
            "Answers that arrived but failed verification, by authority.", ("authority",))
        self.node_latency = self.histogram(
            "signpost_broker_node_latency_seconds", "Time each node took to answer (or to fail).",
            ("authority",))
        self.connections = self.counter(
            "signpost_broker_node_connections_total",
            "New connections the broker opened to nodes (each one a TLS handshake under mutual TLS).")
        self.channels_opened = self.counter(
            "signpost_broker_channels_opened_total", "Node channels (WebSockets) opened, by authority.",
            ("authority",))
        self.dropped = self.counter(
            "signpost_broker_answers_dropped_total",
            "Answer frames a node sent (and logged) that the broker no longer waited for, by authority.",
            ("authority",))
        self.abandoned = self.counter(
            "signpost_broker_answers_abandoned_total",
            "Queries sent to a node whose answer the broker stopped waiting for, by authority.",
            ("authority",))
        self.sessions = self.counter(
            "signpost_web_sign_ins_total", "Practitioner web sign-ins, by outcome.", ("outcome",))

    def record_search(self, results: Iterable[NodeResult]) -> None:
        """Count one fanned-out search and each authority's outcome."""
        self.searches.inc()
        incomplete = False
        for r in results:
            self.answers.inc(r.authority, r.status.value)
            self.node_latency.observe(r.seconds, r.authority)
            if r.integrity_failure:
                self.integrity.inc(r.authority)
            if r.abandoned:
                self.abandoned.inc(r.authority)
            if r.status.value == "unavailable":
                incomplete = True
        if incomplete:
            self.incomplete.inc()
