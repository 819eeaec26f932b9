"""The one producer: a registry's state as OpenTelemetry ``MetricsData``.

Every kind goes the same way: counter -> monotonic cumulative ``Sum``, gauge
-> ``Gauge`` (a gauge without a value has no point), histogram ->
``Histogram`` with every observation kept, negative ones included. /metrics
renders this data and the OTLP exporter sends it, so both carry the same
samples. :class:`DeltaConverter` is the one cumulative -> delta mechanism,
for sums and histograms alike, used by OTLP readers that prefer delta.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Iterable
from time import sleep

from opentelemetry.sdk.metrics.export import (
    AggregationTemporality,
    Gauge,
    Histogram,
    HistogramDataPoint,
    Metric,
    MetricsData,
    NumberDataPoint,
    ResourceMetrics,
    ScopeMetrics,
    Sum,
)
from opentelemetry.sdk.resources import Resource
from opentelemetry.sdk.util.instrumentation import InstrumentationScope

from ..catalog import Kind
from .series import CounterSeries

CUMULATIVE = AggregationTemporality.CUMULATIVE
YIELD_EVERY = 500
DELTA = AggregationTemporality.DELTA


class Producer:
    """Reads a registry (and optional extra sources) into OTel ``Metric``s."""

    def __init__(self, registry, extra: Iterable[Callable[[int], list[Metric]]] = ()) -> None:
        self.registry = registry
        self.extra = list(extra)

    def metrics(self, now_ns: int | None = None, with_empty: bool = False) -> list[Metric]:
        """Cumulative metrics, one per family; ``with_empty`` keeps families without points.

        /metrics shows every family's HELP/TYPE from the first scrape
        (``with_empty``); OTLP sends only metrics with points.
        """
        now = time.time_ns() if now_ns is None else now_ns
        result: list[Metric] = []
        for family in self.registry:
            spec = family.spec
            kind = spec.kind
            points: list = []
            everything = family.series()
            # In pieces, handing the GIL over between them (see render.py):
            # a large family must not hold up the threads that record.
            for start in range(0, len(everything), YIELD_EVERY):
                if start:
                    sleep(0)
                part = everything[start:start + YIELD_EVERY]
                if kind is Kind.COUNTER:
                    points += CounterSeries.points(part, NumberDataPoint, now)
                elif kind is Kind.GAUGE:
                    # get(), not the stored value: a gauge series may compute
                    # its value at collection time (e.g. the age of a timestamp).
                    for s in part:
                        value = s.get()
                        if value is not None:
                            points.append(NumberDataPoint(s.attributes, s.created_ns, now, value))
                else:
                    bounds = spec.buckets
                    for s in part:
                        counts, total, low, high = s.snapshot()
                        count = sum(counts)
                        if not count:
                            low = high = 0.0
                        points.append(HistogramDataPoint(s.attributes, s.created_ns, now, count, total,
                                                         counts, bounds, low, high))
            data: Sum | Gauge | Histogram
            if kind is Kind.COUNTER:
                data = Sum(points, CUMULATIVE, True)
            elif kind is Kind.GAUGE:
                data = Gauge(points)
            else:
                data = Histogram(points, CUMULATIVE)
            if points or with_empty:
                result.append(Metric(spec.name, spec.description, spec.unit, data))
        for source in self.extra:
            result.extend(source(now))
        return result


def metrics_data(resource: Resource, scope: InstrumentationScope, metrics: list[Metric],
                 sdk_data: MetricsData | None = None) -> MetricsData:
    """``metrics`` under ``scope``, after whatever the SDK itself collected (``sdk_data``).

    Metrics the SDK collected under the same scope share one ``ScopeMetrics``
    with ours: an OTLP encoder keeps one entry per scope.
    """
    resource_metrics = list(sdk_data.resource_metrics) if sdk_data is not None else []
    if not resource_metrics:
        ours = ScopeMetrics(scope=scope, metrics=metrics, schema_url="")
        return MetricsData([ResourceMetrics(resource=resource, scope_metrics=[ours], schema_url=resource.schema_url)])
    first = resource_metrics[0]
    scopes = list(first.scope_metrics)
    for i, scope_metrics in enumerate(scopes):
        if scope_metrics.scope == scope:
            scopes[i] = ScopeMetrics(scope=scope_metrics.scope, metrics=[*scope_metrics.metrics, *metrics],
                                     schema_url=scope_metrics.schema_url)
            break
    else:
        scopes.append(ScopeMetrics(scope=scope, metrics=metrics, schema_url=""))
    resource_metrics[0] = ResourceMetrics(resource=first.resource, scope_metrics=scopes, schema_url=first.schema_url)
    return MetricsData(resource_metrics=resource_metrics)


class DeltaConverter:
    """Cumulative -> delta for the metrics of one exporting identity.

    Remembers, per series (name, attributes, start time), what was last
    reported. A series removed and re-created has a new start time, so its
    deltas start from 0 (never negative); a series not seen in a collection
    is forgotten. Delta min/max are only known when the interval holds every
    observation of the series; otherwise they are left unset (OTLP makes
    them optional) rather than reported wrong.

    What was reported moves on only when the export is confirmed
    (:meth:`commit`): after a failed push the next delta covers both
    intervals, so a collector that was down loses nothing it is later sent.
    """

    def __init__(self) -> None:
        self._last: dict[tuple, tuple] = {}
        self._pending: dict[tuple, tuple] | None = None

    def reset(self) -> None:
        self._last = {}
        self._pending = None

    def commit(self) -> None:
        """The deltas of the last :meth:`convert` reached the collector: the next start after them."""
        if self._pending is not None:
            self._last, self._pending = self._pending, None

    def convert(self, metrics: list[Metric]) -> list[Metric]:
        last = self._last
        seen: dict[tuple, tuple] = {}
        result = []
        for metric in metrics:
            data = metric.data
            if isinstance(data, Sum) and data.is_monotonic:
                points = []
                for p in data.data_points:
                    key = (metric.name, tuple(p.attributes.items()), p.start_time_unix_nano)  # type: ignore[union-attr]
                    previous = last.get(key)
                    seen[key] = (p.value, p.time_unix_nano)
                    if previous is None:
                        points.append(p)
                    else:
                        points.append(NumberDataPoint(p.attributes, previous[1], p.time_unix_nano,
                                                      p.value - previous[0]))
                data = Sum(points, DELTA, True)
            elif isinstance(data, Histogram):
                hpoints: list[HistogramDataPoint] = []
                for h in data.data_points:
                    key = (metric.name, tuple(h.attributes.items()), h.start_time_unix_nano)  # type: ignore[union-attr]
                    previous = last.get(key)
                    seen[key] = (h.bucket_counts, h.sum, h.count, h.time_unix_nano)
                    if previous is None:
                        hpoints.append(h)
                        continue
                    last_counts, last_sum, last_count, last_ns = previous
                    counts = [c - q for c, q in zip(h.bucket_counts, last_counts)]
                    count = h.count - last_count
                    low, high = (None, None) if last_count else (h.min, h.max)
                    if not count:
                        low = high = 0.0
                    # min/max None: unknown for this interval, left unset (OTLP makes them optional).
                    hpoints.append(HistogramDataPoint(h.attributes, last_ns, h.time_unix_nano, count,
                                                      h.sum - last_sum, counts, h.explicit_bounds,
                                                      low, high))  # type: ignore[arg-type]
                data = Histogram(hpoints, DELTA)
            result.append(Metric(metric.name, metric.description, metric.unit, data))
        self._pending = seen
        return result
