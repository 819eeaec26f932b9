"""How the facade's values reach OpenTelemetry: one lazily created MeterProvider.

Counters and gauges are OTel observable instruments whose callbacks report
the values the facade holds. Histograms have no observable instrument in
OTel, so the facade's bucket counts are turned into ``HistogramDataPoint``s
and merged into each collection's ``MetricsData`` by the readers defined
here. Every reader (Prometheus and OTLP alike) sees one and the same
``MetricsData``, so both paths expose identical data (docs/decisions.md).
"""

from __future__ import annotations

import atexit
import threading
import time
from collections.abc import Iterable

from opentelemetry.exporter.prometheus import PrometheusMetricReader
from opentelemetry.metrics import CallbackOptions, Observation
from opentelemetry.sdk.metrics import MeterProvider, ObservableCounter, ObservableGauge
from opentelemetry.sdk.metrics.export import (
    AggregationTemporality,
    Histogram,
    HistogramDataPoint,
    Metric,
    MetricReader,
    MetricsData,
    ResourceMetrics,
    ScopeMetrics,
)
from opentelemetry.sdk.resources import Resource
from opentelemetry.sdk.util.instrumentation import InstrumentationScope
from prometheus_client import CollectorRegistry
from prometheus_client.samples import Sample

from . import __version__
from .catalog import Kind
from .exposition import Exposition
from .metrics import REGISTRY, Counter, Gauge, HistogramSeries, MetricRegistry

SCOPE_NAME = "tinywindow_otel"
# The facade enforces its own per-metric series limits; OTel's default of
# 2000 per stream must not fold series behind its back.
_NO_OTEL_LIMIT = 1_000_000
OTEL_CARDINALITY_LIMITS = {ObservableCounter: _NO_OTEL_LIMIT, ObservableGauge: _NO_OTEL_LIMIT}


class FacadeHistograms:
    """Builds OTel histogram ``Metric``s from the facade's histogram series."""

    def __init__(self, registry: MetricRegistry) -> None:
        self._histograms = [m for m in registry if m.spec.kind is Kind.HISTOGRAM]

    def metrics(self, now_ns: int) -> list[Metric]:
        result = []
        for metric in self._histograms:
            points = []
            for series in metric.series():
                assert isinstance(series, HistogramSeries)
                counts, total, low, high = series.snapshot()
                count = sum(counts)
                points.append(
                    HistogramDataPoint(
                        attributes=series.attributes,
                        start_time_unix_nano=series.created_ns,
                        time_unix_nano=now_ns,
                        count=count,
                        sum=total,
                        bucket_counts=counts,
                        explicit_bounds=metric.spec.buckets,
                        min=low if count else 0.0,
                        max=high if count else 0.0,
                    )
                )
            if points:
                result.append(
                    Metric(
                        name=metric.spec.name,
                        description=metric.spec.description,
                        unit=metric.spec.unit,
                        data=Histogram(data_points=points, aggregation_temporality=AggregationTemporality.CUMULATIVE),
                    )
                )
        return result

    def merge(self, metrics_data: MetricsData | None, resource: Resource, scope: InstrumentationScope) -> MetricsData:
        """``metrics_data`` with the facade's histograms added to our scope."""
        extra = self.metrics(time.time_ns())
        resource_metrics = list(metrics_data.resource_metrics) if metrics_data is not None else []
        if not extra:
            return MetricsData(resource_metrics=resource_metrics)
        if not resource_metrics:
            return MetricsData(
                resource_metrics=[
                    ResourceMetrics(
                        resource=resource,
                        scope_metrics=[ScopeMetrics(scope=scope, metrics=extra, schema_url="")],
                        schema_url=resource.schema_url,
                    )
                ]
            )
        first = resource_metrics[0]
        scopes = list(first.scope_metrics)
        for i, scope_metrics in enumerate(scopes):
            if scope_metrics.scope.name == scope.name:
                scopes[i] = ScopeMetrics(
                    scope=scope_metrics.scope,
                    metrics=list(scope_metrics.metrics) + extra,
                    schema_url=scope_metrics.schema_url,
                )
                break
        else:
            scopes.append(ScopeMetrics(scope=scope, metrics=extra, schema_url=""))
        resource_metrics[0] = ResourceMetrics(resource=first.resource, scope_metrics=scopes, schema_url=first.schema_url)
        return MetricsData(resource_metrics=resource_metrics)


class FacadeMergingReader:
    """Mixin for a ``MetricReader``: every collection carries the facade's histograms.

    ``MetricReader.collect`` skips ``_receive_metrics`` when the SDK itself
    has nothing; a facade histogram may still have data then, so collection
    is completed here (serialised, since the flag is per reader).
    """

    def _init_merging(self, histograms: FacadeHistograms, resource: Resource, scope: InstrumentationScope) -> None:
        self._tw_histograms = histograms
        self._tw_resource = resource
        self._tw_scope = scope
        self._tw_lock = threading.Lock()
        self._tw_delivered = False

    def collect(self, timeout_millis: float = 10_000) -> None:
        with self._tw_lock:
            self._tw_delivered = False
            super().collect(timeout_millis=timeout_millis)  # type: ignore[misc]
            if not self._tw_delivered:
                self._receive_metrics(None, timeout_millis=timeout_millis)

    def _receive_metrics(self, metrics_data: MetricsData | None, timeout_millis: float = 10_000, **kwargs) -> None:
        self._tw_delivered = True
        merged = self._tw_histograms.merge(metrics_data, self._tw_resource, self._tw_scope)
        if merged.resource_metrics:
            self._received(merged)
            super()._receive_metrics(merged, timeout_millis=timeout_millis, **kwargs)  # type: ignore[misc]

    def _received(self, metrics_data: MetricsData) -> None:
        """Hook for subclasses: the merged data, before it is exported."""


class FacadePrometheusReader(FacadeMergingReader, PrometheusMetricReader):
    """The Prometheus reader behind /metrics: no target_info, no otel_scope_* labels.

    prometheus_client's ``HistogramMetricFamily`` omits ``_count`` and
    ``_sum`` when a bucket boundary is negative (an OpenMetrics rule). The
    P&L histogram must keep both (``_sum`` is the net realised P&L), so the
    exporter's output goes through ``_SignedHistogramCollector``, which puts
    them back from the same ``MetricsData``.
    """

    def __init__(self, histograms: FacadeHistograms, resource: Resource, scope: InstrumentationScope,
                 registry: CollectorRegistry) -> None:
        self._exporter_registry = CollectorRegistry(auto_describe=False)
        PrometheusMetricReader.__init__(
            self,
            disable_target_info=True,
            scope_info_enabled=False,
            registry=self._exporter_registry,
            cardinality_limits=OTEL_CARDINALITY_LIMITS,
        )
        self._init_merging(histograms, resource, scope)
        self._histogram_totals: dict[tuple[str, frozenset], tuple[int, float]] = {}
        registry.register(_SignedHistogramCollector(self))

    def _received(self, metrics_data: MetricsData) -> None:
        totals = {}
        for resource_metrics in metrics_data.resource_metrics:
            for scope_metrics in resource_metrics.scope_metrics:
                for metric in scope_metrics.metrics:
                    if isinstance(metric.data, Histogram):
                        for point in metric.data.data_points:
                            key = frozenset((k, str(v)) for k, v in point.attributes.items())
                            totals[(metric.name, key)] = (point.count, point.sum)
        self._histogram_totals = totals


class _SignedHistogramCollector:
    """Yields the exporter's families, restoring ``_count``/``_sum`` of signed histograms."""

    def __init__(self, reader: FacadePrometheusReader) -> None:
        self._reader = reader

    def collect(self):
        families = list(self._reader._exporter_registry.collect())
        totals = self._reader._histogram_totals
        for family in families:
            if family.type == "histogram" and totals:
                family.samples = _with_count_and_sum(family.name, family.samples, totals)
        return families


def _with_count_and_sum(name: str, samples: list, totals: dict) -> list:
    has_count = {frozenset(s.labels.items()) for s in samples if s.name == name + "_count"}
    result = []
    for sample in samples:
        result.append(sample)
        if sample.name == name + "_bucket" and sample.labels.get("le") == "+Inf":
            labels = {k: v for k, v in sample.labels.items() if k != "le"}
            key = frozenset(labels.items())
            if key not in has_count and (name, key) in totals:
                count, total = totals[(name, key)]
                result.append(Sample(name + "_count", labels, float(count)))
                result.append(Sample(name + "_sum", labels, total))
    return result


def _observe(metric: Counter | Gauge):
    def callback(options: CallbackOptions) -> Iterable[Observation]:
        return [Observation(series.get(), series.attributes) for series in metric.series()]

    return callback


class Pipeline:
    """The MeterProvider, its readers and the instruments bound to the facade."""

    def __init__(self, registry: MetricRegistry = REGISTRY, resource: Resource | None = None,
                 extra_readers: Iterable[MetricReader] = ()) -> None:
        self.resource = resource if resource is not None else Resource.create()
        self.scope = InstrumentationScope(SCOPE_NAME, __version__)
        self.histograms = FacadeHistograms(registry)
        # A private registry: /metrics shows our families only, not the
        # process/platform collectors of prometheus_client's global REGISTRY.
        self.prometheus_registry = CollectorRegistry(auto_describe=False)
        self.prometheus_reader = FacadePrometheusReader(self.histograms, self.resource, self.scope,
                                                        self.prometheus_registry)
        self.provider = MeterProvider(
            metric_readers=[self.prometheus_reader, *extra_readers],
            resource=self.resource,
            # Our own atexit hook shuts down whichever pipeline is current.
            shutdown_on_exit=False,
        )
        meter = self.provider.get_meter(SCOPE_NAME, __version__)
        for metric in registry:
            spec = metric.spec
            if spec.kind is Kind.COUNTER:
                meter.create_observable_counter(spec.name, [_observe(metric)], spec.unit, spec.description)
            elif spec.kind is Kind.GAUGE:
                meter.create_observable_gauge(spec.name, [_observe(metric)], spec.unit, spec.description)
        self._scrape_lock = threading.Lock()
        self._exposition = Exposition()

    def render(self) -> tuple[bytes, str]:
        """The exposition for a scrape, always in the Prometheus text format.

        Not OpenMetrics: it forbids ``_sum`` on histograms with negative
        buckets, and the P&L histogram's ``_sum`` is the net P&L (ADR 2).
        """
        # The exporter's collector keeps collected data in a shared queue:
        # concurrent scrapes must not take each other's data.
        with self._scrape_lock:
            return self._exposition.render(self.prometheus_reader, self.prometheus_registry, None)

    def shutdown(self, timeout_millis: float = 30_000) -> None:
        self.provider.shutdown(timeout_millis=timeout_millis)


_pipeline: Pipeline | None = None
_pipeline_lock = threading.RLock()


def get_pipeline() -> Pipeline:
    """The process's pipeline, created on first use."""
    global _pipeline
    if _pipeline is None:
        with _pipeline_lock:
            if _pipeline is None:
                _pipeline = Pipeline()
    return _pipeline


def shutdown(timeout_millis: float = 30_000) -> None:
    """Flush and stop the pipeline; the next use starts a new one."""
    global _pipeline
    with _pipeline_lock:
        pipeline, _pipeline = _pipeline, None
    if pipeline is not None:
        pipeline.shutdown(timeout_millis)


REGISTRY.set_first_use_hook(get_pipeline)
atexit.register(shutdown)
