"""The node's metrics: queries answered by status, refusals, time to answer.

Labels carry statuses and reasons only; never a practitioner, a child or a query id.
"""

from __future__ import annotations

from federation.metrics import Registry


class NodeMetrics(Registry):
    """Everything a node counts."""

    def __init__(self) -> None:
        super().__init__()
        self.answers = self.counter(
            "signpost_node_answers_total", "Signed answers sent to the broker, by status.", ("status",))
