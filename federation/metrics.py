"""Prometheus metrics without a client library: counters, histograms and the text exposition.

Labels name services, routes, statuses and authorities only -- never a person, a child, a token
or a query id. ``Registry.render`` writes the text format version 0.0.4
(https://prometheus.io/docs/instrumenting/exposition_formats/).
"""

from __future__ import annotations

import math
import re
import time
from collections.abc import Awaitable, Callable, Iterable, Sequence
from dataclasses import dataclass, field

from aiohttp import web

CONTENT_TYPE = "text/plain; version=0.0.4; charset=utf-8"
_NAME = re.compile(r"^[a-zA-Z_:][a-zA-Z0-9_:]*$")
LATENCY_BUCKETS = (0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0)
LabelValues = tuple[str, ...]


def _escape(value: str) -> str:
    return value.replace("\\", "\\\\").replace("\n", "\\n").replace('"', '\\"')


def _labels(names: Sequence[str], values: Sequence[str], extra: str = "") -> str:
    parts = [f'{n}="{_escape(v)}"' for n, v in zip(names, values, strict=True)]
    if extra:
        parts.append(extra)
    return "{" + ",".join(parts) + "}" if parts else ""


def _number(value: float) -> str:
    if math.isinf(value):
        return "+Inf" if value > 0 else "-Inf"
    return repr(float(value)) if not float(value).is_integer() else str(int(value))


@dataclass
class Counter:
    """A monotonically increasing count per label set."""

    name: str
    help: str
    labels: tuple[str, ...] = ()
    values: dict[LabelValues, float] = field(default_factory=dict)

    def __post_init__(self) -> None:
        if not _NAME.match(self.name) or not self.name.endswith("_total"):
            raise ValueError(f"counter name: expected [a-zA-Z_:][a-zA-Z0-9_:]*_total, got {self.name!r}")

    def inc(self, *label_values: str, amount: float = 1.0) -> None:
        if len(label_values) != len(self.labels):
            raise ValueError(f"{self.name}: expected labels {self.labels}, got {label_values}")
        if amount < 0:
            raise ValueError(f"{self.name}: a counter cannot decrease")
        self.values[label_values] = self.values.get(label_values, 0.0) + amount

    def render(self) -> Iterable[str]:
        yield f"# HELP {self.name} {self.help}"
        yield f"# TYPE {self.name} counter"
        for values, count in sorted(self.values.items()):
            yield f"{self.name}{_labels(self.labels, values)} {_number(count)}"


@dataclass
class Histogram:
    """Observations counted into cumulative buckets per label set."""

    name: str
    help: str
    labels: tuple[str, ...] = ()
    buckets: tuple[float, ...] = LATENCY_BUCKETS
    counts: dict[LabelValues, list[int]] = field(default_factory=dict)
    sums: dict[LabelValues, float] = field(default_factory=dict)

    def __post_init__(self) -> None:
        if not _NAME.match(self.name):
            raise ValueError(f"histogram name: expected [a-zA-Z_:][a-zA-Z0-9_:]*, got {self.name!r}")
        if list(self.buckets) != sorted(set(self.buckets)):
            raise ValueError(f"{self.name}: buckets must increase strictly")

    def observe(self, value: float, *label_values: str) -> None:
        if len(label_values) != len(self.labels):
            raise ValueError(f"{self.name}: expected labels {self.labels}, got {label_values}")
        counts = self.counts.setdefault(label_values, [0] * (len(self.buckets) + 1))
        for i, bound in enumerate(self.buckets):
            if value <= bound:
                counts[i] += 1
        counts[-1] += 1
        self.sums[label_values] = self.sums.get(label_values, 0.0) + value

    def render(self) -> Iterable[str]:
        yield f"# HELP {self.name} {self.help}"
        yield f"# TYPE {self.name} histogram"
        for values, counts in sorted(self.counts.items()):
            for bound, count in zip((*self.buckets, math.inf), counts, strict=True):
                le = f'le="{_number(bound)}"'
                yield f"{self.name}_bucket{_labels(self.labels, values, le)} {count}"
            yield f"{self.name}_sum{_labels(self.labels, values)} {_number(self.sums[values])}"
            yield f"{self.name}_count{_labels(self.labels, values)} {counts[-1]}"


Metric = Counter | Histogram


class Registry:
    """The metrics of one service."""

    def __init__(self) -> None:
        self.metrics: list[Metric] = []
        self.http_responses = self.counter(
            "signpost_http_responses_total", "HTTP responses by route and status code.",
            ("route", "code"))
        self.http_seconds = self.histogram(
            "signpost_http_request_seconds", "Time to answer HTTP requests, by route.", ("route",))

    def counter(self, name: str, help: str, labels: tuple[str, ...] = ()) -> Counter:
        metric = Counter(name, help, labels)
        self.metrics.append(metric)
        return metric

    def histogram(self, name: str, help: str, labels: tuple[str, ...] = (),
                  buckets: tuple[float, ...] = LATENCY_BUCKETS) -> Histogram:
        metric = Histogram(name, help, labels, buckets)
        self.metrics.append(metric)
        return metric

    def render(self) -> str:
        return "\n".join(line for m in self.metrics for line in m.render()) + "\n"


METRICS = web.AppKey("metrics", Registry)
Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]


def _route(request: web.Request) -> str:
    """The route's pattern (never the concrete path, which could carry anything)."""
    resource = request.match_info.route.resource
    return resource.canonical if resource is not None else "unmatched"


@web.middleware
async def count_responses(request: web.Request, handler: Handler) -> web.StreamResponse:
    registry = request.app[METRICS]
    started = time.monotonic()
    route = _route(request)
    try:
        response = await handler(request)
    except web.HTTPException as exc:
        registry.http_responses.inc(route, str(exc.status))
        raise
    except Exception:
        registry.http_responses.inc(route, "500")
        raise
    registry.http_responses.inc(route, str(response.status))
    registry.http_seconds.observe(time.monotonic() - started, route)
    return response


async def handle_metrics(request: web.Request) -> web.Response:
    body = request.app[METRICS].render()
    return web.Response(body=body.encode(), headers={"Content-Type": CONTENT_TYPE,
                                                      "Cache-Control": "no-store"})


def install(app: web.Application, registry: Registry) -> None:
    """Serve ``GET /metrics`` and count every response of ``app``."""
    app[METRICS] = registry
    app.middlewares.append(count_responses)
    app.router.add_get("/metrics", handle_metrics)
