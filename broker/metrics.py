"""The broker's metrics: searches, answers by status, per-node latency, errors.

Labels carry authority ids (councils), statuses and channels only; never a practitioner, a
child, a token or a query id.
"""

from __future__ import annotations

from collections.abc import Iterable

from broker.fanout import NodeResult
from federation.metrics import Registry
from federation.protocol import Status


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
        results = list(results)
        self.searches.inc()
        self.answers.inc_each((r.authority, r.status.value) for r in results)
        self.node_latency.observe_each((r.seconds, (r.authority,)) for r in results)
        self.integrity.inc_each((r.authority,) for r in results if r.integrity_failure)
        self.abandoned.inc_each((r.authority,) for r in results if r.abandoned)
        if any(r.status is Status.UNAVAILABLE for r in results):
            self.incomplete.inc()
