"""Prometheus metrics for every service, through the official client library (prometheus_client).

Each service keeps its own ``CollectorRegistry`` (never the process-wide default), so several
apps in one process — the tests, a benchmark — do not mix their numbers. Labels name services,
routes, statuses and authorities only -- never a person, a child, a token or a query id.
``GET /metrics`` serves the text exposition format (version 0.0.4) that ``generate_latest``
writes.
"""

from __future__ import annotations

import bisect
import itertools
import math
import threading
import time
from collections.abc import Awaitable, Callable, Iterable, Iterator

import prometheus_client
from aiohttp import web
from prometheus_client import CollectorRegistry, generate_latest
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, HistogramMetricFamily, Metric
from prometheus_client.registry import Collector

CONTENT_TYPE = prometheus_client.CONTENT_TYPE_LATEST
LATENCY_BUCKETS = (0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0)
LabelValues = tuple[str, ...]


class Counter(Collector):
    """A monotonically increasing count per label set.

    Kept in a plain dictionary and turned into Prometheus samples only when scraped: the broker
    counts every authority's outcome of every search (152 label sets a search), and
    ``prometheus_client``'s own counter cost several times more per increment.
    """

    def __init__(self, registry: CollectorRegistry, name: str, help: str, labels: tuple[str, ...]) -> None:
        if not name.endswith("_total"):
            raise ValueError(f"counter name: expected a name ending in _total, got {name!r}")
        self.name = name
        self.help = help
        self.labels = labels
        self._counts: dict[LabelValues, float] = {} if labels else {(): 0.0}
        self._lock = threading.Lock()  # the node counts from more than one thread
        registry.register(self)

    def inc(self, *label_values: str, amount: float = 1.0) -> None:
        if len(label_values) != len(self.labels):
            raise ValueError(f"{self.name}: expected labels {self.labels}, got {label_values}")
        if amount < 0:
            raise ValueError(f"{self.name}: a counter only goes up, got {amount}")
        with self._lock:
            self._counts[label_values] = self._counts.get(label_values, 0.0) + amount

    def inc_each(self, label_sets: Iterable[LabelValues]) -> None:
        """Count one for each label set given (one lock for all: a search's 152 outcomes)."""
        wanted = len(self.labels)
        counts = self._counts
        with self._lock:
            for label_values in label_sets:
                if len(label_values) != wanted:
                    raise ValueError(f"{self.name}: expected labels {self.labels}, got {label_values}")
                counts[label_values] = counts.get(label_values, 0.0) + 1.0

    @property
    def values(self) -> dict[LabelValues, float]:
        """The current count of each label set (for tests and the status tools)."""
        with self._lock:
            return dict(self._counts)

    def describe(self) -> Iterator[Metric]:
        yield CounterMetricFamily(self.name.removesuffix("_total"), self.help, labels=self.labels)

    def collect(self) -> Iterator[Metric]:
        family = CounterMetricFamily(self.name.removesuffix("_total"), self.help, labels=self.labels)
        for values, value in sorted(self.values.items()):
            family.add_metric(list(values), value)
        yield family


class Histogram(Collector):
    """Observations counted into cumulative buckets per label set, kept as ``Counter`` keeps its
    counts: one bucket found by bisection and two additions per observation."""

    def __init__(self, registry: CollectorRegistry, name: str, help: str, labels: tuple[str, ...],
                 buckets: tuple[float, ...]) -> None:
        if list(buckets) != sorted(set(buckets)) or not buckets or buckets[-1] == math.inf:
            raise ValueError(f"{name}: expected finite bucket bounds in increasing order, got {buckets}")
        self.name = name
        self.help = help
        self.labels = labels
        self._bounds = buckets
        self._series: dict[LabelValues, list[float]] = {}  # per bucket, then +Inf, then the sum
        self._lock = threading.Lock()
        registry.register(self)

    def observe(self, value: float, *label_values: str) -> None:
        self.observe_each(((value, label_values),))

    def observe_each(self, observations: Iterable[tuple[float, LabelValues]]) -> None:
        """Observe each (value, label set) given, under one lock: the value is counted in the
        first bucket whose bound it is at or below."""
        wanted, bounds, size = len(self.labels), self._bounds, len(self._bounds) + 2
        every = self._series
        with self._lock:
            for value, label_values in observations:
                if len(label_values) != wanted:
                    raise ValueError(f"{self.name}: expected labels {self.labels}, got {label_values}")
                series = every.get(label_values)
                if series is None:
                    series = every[label_values] = [0.0] * size
                series[bisect.bisect_left(bounds, value)] += 1
                series[-1] += value

    def describe(self) -> Iterator[Metric]:
        yield HistogramMetricFamily(self.name, self.help, labels=self.labels)

    def collect(self) -> Iterator[Metric]:
        family = HistogramMetricFamily(self.name, self.help, labels=self.labels)
        with self._lock:
            copied = sorted((values, list(series)) for values, series in self._series.items())
        bounds = [*(repr(float(b)) for b in self._bounds), "+Inf"]  # as prometheus_client writes "le"
        for values, series in copied:
            family.add_metric(list(values), list(zip(bounds, itertools.accumulate(series[:-1]), strict=True)),
                              sum_value=series[-1])
        yield family


Samples = Iterable[tuple[LabelValues, float]]


class Watched(Collector):
    """A gauge or counter whose samples are read from ``read()`` each time ``/metrics`` is scraped,
    for state kept elsewhere (the trust refresh's last success, say)."""

    def __init__(self, name: str, help: str, kind: str, labels: tuple[str, ...],
                 read: Callable[[], Samples]) -> None:
        if kind not in ("gauge", "counter"):
            raise ValueError(f"kind: expected 'gauge' or 'counter', got {kind!r}")
        if kind == "counter" and not name.endswith("_total"):
            raise ValueError(f"counter name: expected a name ending in _total, got {name!r}")
        self.name, self.help, self.kind, self.labels, self.read = name, help, kind, labels, read

    def _family(self) -> GaugeMetricFamily | CounterMetricFamily:
        if self.kind == "counter":
            return CounterMetricFamily(self.name.removesuffix("_total"), self.help, labels=self.labels)
        return GaugeMetricFamily(self.name, self.help, labels=self.labels)

    def describe(self) -> Iterator[Metric]:
        yield self._family()

    def collect(self) -> Iterator[Metric]:
        family = self._family()
        for values, value in self.read():
            family.add_metric(list(values), value)
        yield family


class Registry:
    """The metrics of one service, in a registry of its own."""

    def __init__(self) -> None:
        self.registry = CollectorRegistry(auto_describe=True)
        self.http_responses = self.counter(
            "signpost_http_responses_total", "HTTP responses by route and status code.",
            ("route", "code"))
        self.http_seconds = self.histogram(
            "signpost_http_request_seconds", "Time to answer HTTP requests, by route.", ("route",))

    def counter(self, name: str, help: str, labels: tuple[str, ...] = ()) -> Counter:
        return Counter(self.registry, name, help, labels)

    def histogram(self, name: str, help: str, labels: tuple[str, ...] = (),
                  buckets: tuple[float, ...] = LATENCY_BUCKETS) -> Histogram:
        return Histogram(self.registry, name, help, labels, buckets)

    def watch(self, name: str, help: str, read: Callable[[], Samples], *, kind: str = "gauge",
              labels: tuple[str, ...] = ()) -> None:
        """Serve ``name`` with the samples ``read()`` returns at each scrape (see ``Watched``)."""
        self.registry.register(Watched(name, help, kind, labels, read))

    def render(self) -> bytes:
        """The text exposition of every metric."""
        return generate_latest(self.registry)


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
    return web.Response(body=request.app[METRICS].render(),
                        headers={"Content-Type": CONTENT_TYPE, "Cache-Control": "no-store"})


def install(app: web.Application, registry: Registry) -> None:
    """Serve ``GET /metrics`` and count every response of ``app``."""
    app[METRICS] = registry
    app.middlewares.append(count_responses)
    app.router.add_get("/metrics", handle_metrics)
