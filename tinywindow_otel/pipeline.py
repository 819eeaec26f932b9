"""How the facade's values reach OpenTelemetry: one lazily created MeterProvider.

Counters and gauges are OTel observable instruments whose callbacks report
the values the facade holds. Histograms have no observable instrument in
OTel, so the facade's bucket counts are turned into ``HistogramDataPoint``s
and merged into each collection's ``MetricsData`` by the readers defined
here. Every reader (Prometheus and OTLP alike) sees one and the same
``MetricsData``, so both paths expose identical data (docs/decisions.md).

Lifecycle: the pipeline starts on first use (or at ``configure()`` /
``MetricsServer.start()``); ``shutdown()`` flushes and returns within the
configured bound even when the collector is unreachable, and runs at exit.
After ``os.fork()`` the child drops the parent's pipeline, zeroes the
facade's values and builds a pipeline of its own (see ``_after_fork_in_child``).
"""

from __future__ import annotations

import atexit
import logging
import os
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
    MetricExporter,
    MetricReader,
    MetricsData,
    PeriodicExportingMetricReader,
    ResourceMetrics,
    ScopeMetrics,
)
from opentelemetry.sdk.resources import Resource
from opentelemetry.sdk.util.instrumentation import InstrumentationScope
from prometheus_client import CollectorRegistry

from . import __version__
from .catalog import Kind
from .exposition import Exposition, restore_counts_and_sums
from .config import Settings, build_otlp_exporter, check_available
from .metrics import REGISTRY, Counter, Gauge, HistogramSeries, MetricRegistry

_log = logging.getLogger("tinywindow_otel")

SCOPE_NAME = "tinywindow_otel"
# The facade enforces its own per-metric series limits; OTel's default of
# 2000 per stream must not fold series behind its back.
_NO_OTEL_LIMIT = 1_000_000
OTEL_CARDINALITY_LIMITS = {ObservableCounter: _NO_OTEL_LIMIT, ObservableGauge: _NO_OTEL_LIMIT}


class FacadeHistograms:
    """Builds OTel histogram ``Metric``s from the facade's histogram series."""

    def __init__(self, registry: MetricRegistry) -> None:
        self._histograms = [m for m in registry if m.spec.kind is Kind.HISTOGRAM]

    def metrics(self, now_ns: int, delta_state: dict | None = None) -> list[Metric]:
        """Cumulative points, or, given a reader's ``delta_state``, deltas since that reader's last collection.

        ``delta_state`` maps (metric, label values) to the snapshot last
        reported to one reader; it is updated in place. A series that was
        reset or recreated since (its ``created_ns`` changed) starts over.
        Delta min/max are only known when the interval holds every
        observation of the series; otherwise they are left unset (OTLP
        makes them optional) rather than reported wrong.
        """
        temporality = AggregationTemporality.CUMULATIVE if delta_state is None else AggregationTemporality.DELTA
        seen: set = set()
        result = []
        for metric in self._histograms:
            points = []
            for series in metric.series():
                assert isinstance(series, HistogramSeries)
                counts, total, low, high = series.snapshot()
                count = sum(counts)
                start_ns = series.created_ns
                low_out: float | None = low if count else 0.0
                high_out: float | None = high if count else 0.0
                if delta_state is not None:
                    key = (metric.spec.name, series.label_values)
                    seen.add(key)
                    previous = delta_state.get(key)
                    delta_state[key] = (series.created_ns, counts, total, now_ns)
                    if previous is not None and previous[0] == series.created_ns:
                        _, last_counts, last_total, last_ns = previous
                        last_count = sum(last_counts)
                        counts = [c - p for c, p in zip(counts, last_counts)]
                        total -= last_total
                        start_ns = last_ns
                        if last_count:
                            low_out = high_out = None
                        count = sum(counts)
                        if not count:
                            low_out = high_out = 0.0
                points.append(
                    HistogramDataPoint(
                        attributes=series.attributes,
                        start_time_unix_nano=start_ns,
                        time_unix_nano=now_ns,
                        count=count,
                        sum=total,
                        bucket_counts=counts,
                        explicit_bounds=metric.spec.buckets,
                        min=low_out,
                        max=high_out,
                    )
                )
            if points:
                result.append(
                    Metric(
                        name=metric.spec.name,
                        description=metric.spec.description,
                        unit=metric.spec.unit,
                        data=Histogram(data_points=points, aggregation_temporality=temporality),
                    )
                )
        if delta_state is not None:
            for key in set(delta_state) - seen:  # removed series: forget them
                del delta_state[key]
        return result

    def merge(self, metrics_data: MetricsData | None, resource: Resource, scope: InstrumentationScope,
              delta_state: dict | None = None) -> MetricsData:
        """``metrics_data`` with the facade's histograms added to our scope."""
        extra = self.metrics(time.time_ns(), delta_state)
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

    def _init_merging(self, histograms: FacadeHistograms, resource: Resource, scope: InstrumentationScope,
                      delta: bool = False) -> None:
        self._tw_histograms = histograms
        self._tw_resource = resource
        self._tw_scope = scope
        self._tw_lock = threading.Lock()
        self._tw_delivered = False
        # Delta readers remember what they last reported, per series: each
        # reader gets its own state, so two readers never share a delta.
        self._tw_delta_state: dict | None = {} if delta else None

    def collect(self, timeout_millis: float = 10_000) -> None:
        with self._tw_lock:
            self._tw_delivered = False
            super().collect(timeout_millis=timeout_millis)  # type: ignore[misc]
            if not self._tw_delivered:
                self._receive_metrics(None, timeout_millis=timeout_millis)

    def _receive_metrics(self, metrics_data: MetricsData | None, timeout_millis: float = 10_000, **kwargs) -> None:
        self._tw_delivered = True
        merged = self._tw_histograms.merge(metrics_data, self._tw_resource, self._tw_scope, self._tw_delta_state)
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
        self._last_collection: MetricsData = MetricsData(resource_metrics=[])
        registry.register(_SignedHistogramCollector(self))

    def _received(self, metrics_data: MetricsData) -> None:
        self._last_collection = metrics_data


class _SignedHistogramCollector:
    """Yields the exporter's families, restoring ``_count``/``_sum`` of signed histograms.

    The stock path, used when ``exposition.Exposition`` cannot read the
    exporter's internals; it needs only public prometheus_client API.
    """

    def __init__(self, reader: FacadePrometheusReader) -> None:
        self._reader = reader

    def collect(self):
        families = list(self._reader._exporter_registry.collect())
        restore_counts_and_sums(families, [self._reader._last_collection])
        return families


class FacadeOTLPReader(FacadeMergingReader, PeriodicExportingMetricReader):
    """Pushes the same ``MetricsData`` as /metrics to an OTLP exporter, periodically.

    Export runs on the reader's own thread and reads the facade through
    snapshots: a slow or dead collector never holds a lock the hot path needs.
    """

    def __init__(self, exporter: MetricExporter, histograms: FacadeHistograms, resource: Resource,
                 scope: InstrumentationScope, export_interval_millis: float, export_timeout_millis: float,
                 delta_histograms: bool = False) -> None:
        # Before the base class starts its export thread, which calls collect().
        self._init_merging(histograms, resource, scope, delta=delta_histograms)
        PeriodicExportingMetricReader.__init__(
            self, exporter, export_interval_millis=export_interval_millis,
            export_timeout_millis=export_timeout_millis, cardinality_limits=OTEL_CARDINALITY_LIMITS,
        )

    def _at_fork_reinit(self) -> None:
        # The SDK restarts the export thread in a forked child; this reader
        # belongs to the parent's pipeline, and the child builds its own.
        pass


class MetricsDisabledError(RuntimeError):
    """/metrics was scraped while the Prometheus exporter is not selected."""


def _observe(metric: Counter | Gauge):
    def callback(options: CallbackOptions) -> Iterable[Observation]:
        return [Observation(series.get(), series.attributes) for series in metric.series()]

    return callback


class Pipeline:
    """The MeterProvider, its readers and the instruments bound to the facade."""

    def __init__(self, registry: MetricRegistry = REGISTRY, resource: Resource | None = None,
                 extra_readers: Iterable[MetricReader] = (), settings: Settings | None = None,
                 forked: bool = False) -> None:
        self.settings = settings if settings is not None else Settings()
        self.resource = resource if resource is not None else Resource.create(self.settings.resource_attrs(forked))
        self.scope = InstrumentationScope(SCOPE_NAME, __version__)
        self.histograms = FacadeHistograms(registry)
        self.pid = os.getpid()
        readers: list[MetricReader] = []
        # A private registry: /metrics shows our families only, not the
        # process/platform collectors of prometheus_client's global REGISTRY.
        self.prometheus_registry = CollectorRegistry(auto_describe=False)
        self.prometheus_reader: FacadePrometheusReader | None = None
        if self.settings.prometheus:
            self.prometheus_reader = FacadePrometheusReader(self.histograms, self.resource, self.scope,
                                                            self.prometheus_registry)
            readers.append(self.prometheus_reader)
        self.otlp_reader: FacadeOTLPReader | None = None
        if self.settings.otlp:
            self.otlp_reader = FacadeOTLPReader(
                build_otlp_exporter(self.settings), self.histograms, self.resource, self.scope,
                export_interval_millis=self.settings.export_interval_millis,
                export_timeout_millis=self.settings.export_timeout_millis,
                delta_histograms=self.settings.temporality in ("delta", "lowmemory"),
            )
            readers.append(self.otlp_reader)
        self.provider = MeterProvider(
            metric_readers=[*readers, *extra_readers],
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
        if self.prometheus_reader is None:
            raise MetricsDisabledError(
                "/metrics is disabled: OTEL_METRICS_EXPORTER (or configure(exporters=...)) "
                f"selects {','.join(self.settings.exporters) or 'none'}, without prometheus")
        # The exporter's collector keeps collected data in a shared queue:
        # concurrent scrapes must not take each other's data.
        with self._scrape_lock:
            return self._exposition.render(self.prometheus_reader, self.prometheus_registry)

    def force_flush(self, timeout_millis: float = 10_000) -> bool:
        """Export now to the push (OTLP) reader; /metrics is pull-only and needs no flush."""
        if self.otlp_reader is None:
            return True
        return self.otlp_reader.force_flush(timeout_millis=timeout_millis)

    def shutdown(self, timeout_millis: float | None = None) -> bool:
        """Flush and stop; returns within ``timeout_millis`` (plus a few ms) whatever the collector does.

        The SDK's shutdown waits for the final export, whose HTTP request and
        retries can outlast any deadline it is given. So it runs on a daemon
        thread and is abandoned (with one log line) when the bound expires:
        the process can exit, and the export thread dies with it.
        Returns whether everything finished in time.
        """
        if timeout_millis is None:
            timeout_millis = self.settings.shutdown_timeout_millis
        done = threading.Event()

        def run() -> None:
            try:
                self.provider.shutdown(timeout_millis=timeout_millis)
            except Exception:  # noqa: BLE001 - shutdown must never raise into the caller
                _log.warning("metrics pipeline shutdown failed", exc_info=True)
            finally:
                done.set()

        threading.Thread(target=run, name="tinywindow-otel-shutdown", daemon=True).start()
        if done.wait(timeout_millis / 1000.0):
            return True
        _log.warning("metrics pipeline shutdown gave up after %.0f ms (is the collector at %s reachable?); "
                     "the last export is abandoned", timeout_millis, self.settings.endpoint)
        return False


_settings: Settings | None = None  # None: read the OTEL_* environment at first use
_pipeline: Pipeline | None = None
_pipeline_lock = threading.RLock()


def current_settings() -> Settings:
    """The settings the next pipeline will use (``configure()``'s, or the environment's)."""
    return _settings if _settings is not None else Settings.from_env()


def get_pipeline() -> Pipeline:
    """The process's pipeline, created on first use."""
    global _pipeline
    if _pipeline is None:
        with _pipeline_lock:
            if _pipeline is None:
                _pipeline = Pipeline(settings=current_settings())
                _arm_fork_handler()
    return _pipeline


def _start_on_first_use() -> None:
    # Runs inside the first labels()/inc() of the process: a bad OTEL_*
    # setting must not crash the trading loop there. It is logged; the next
    # get_pipeline() (MetricsServer.start(), a scrape, configure()) raises it.
    try:
        get_pipeline()
    except Exception:  # noqa: BLE001
        _log.exception("tinywindow_otel could not start its metrics pipeline")


def configure(**settings) -> Settings:
    """Configure the pipeline in code; arguments override the ``OTEL_*`` variables.

    Keyword arguments (each optional): ``exporters`` ("prometheus", "otlp",
    "prometheus,otlp", "none", or a list), ``endpoint`` (base URL),
    ``metrics_endpoint`` (full URL), ``protocol`` ("http/protobuf" | "grpc"),
    ``headers`` (dict or "k=v,..."), ``timeout_millis``,
    ``export_interval_millis``, ``export_timeout_millis``, ``temporality``
    ("cumulative" | "delta" | "lowmemory"), ``service_name``,
    ``resource_attributes`` (dict), ``shutdown_timeout_millis``.

    Raises ``ConfigurationError`` for an invalid value and
    ``MissingExtraError`` when OTLP is asked for without the ``[otlp]``
    extra. A running pipeline is flushed and replaced; values recorded so
    far are kept (they live in the facade).
    """
    global _settings, _pipeline
    new = Settings.from_env(**settings)
    check_available(new)
    with _pipeline_lock:
        old, _pipeline = _pipeline, None
        _settings = new
        if old is not None:
            old.shutdown()
            _pipeline = Pipeline(settings=new)
            _arm_fork_handler()
    return new


def force_flush(timeout_millis: float = 10_000) -> bool:
    """Push what the facade holds to the collector now (no-op without OTLP)."""
    pipeline = _pipeline
    return pipeline.force_flush(timeout_millis) if pipeline is not None else True


def shutdown(timeout_millis: float | None = None) -> bool:
    """Flush and stop the pipeline within the configured bound; the next use starts a new one.

    ``timeout_millis`` defaults to ``TINYWINDOW_OTEL_SHUTDOWN_TIMEOUT``
    (5000 ms): with the collector unreachable, this is how long it takes.
    """
    global _pipeline
    with _pipeline_lock:
        pipeline, _pipeline = _pipeline, None
    if pipeline is not None:
        return pipeline.shutdown(timeout_millis)
    return True


def _after_fork_in_child() -> None:
    """A forked child reports only what it records itself, under its own identity.

    The parent's pipeline (its export thread did not survive the fork, and
    its readers hold the parent's state) is dropped without a flush, so the
    parent's totals are never exported twice. The facade's values are
    zeroed (label sets stay), locks a parent thread may have held at fork
    time are replaced, and, if the parent had a pipeline, the child gets a
    new one at once with a new ``service.instance.id`` and ``process.pid``.
    """
    global _pipeline, _pipeline_lock
    _pipeline_lock = threading.RLock()
    parent, _pipeline = _pipeline, None
    try:
        REGISTRY.after_fork_in_child()
        if parent is not None:
            _pipeline = Pipeline(settings=parent.settings, forked=True)
    except Exception:  # noqa: BLE001 - never break the fork itself
        _log.exception("tinywindow_otel could not rebuild its metrics pipeline after fork")


_fork_handler_armed = False


def _arm_fork_handler() -> None:
    """Register the fork handler once, right after the first pipeline is built.

    Not at import: at-fork handlers run in registration order, and building
    the child's pipeline needs locks of modules first used while building a
    pipeline (e.g. ``concurrent.futures`` behind ``Resource.create``, which
    holds its global lock across the fork and releases it in its own
    handler). Registering after them lets their handlers run first; at
    import time the child deadlocked (found by test_fork_child_*).
    """
    global _fork_handler_armed
    if not _fork_handler_armed and hasattr(os, "register_at_fork"):
        _fork_handler_armed = True
        os.register_at_fork(after_in_child=_after_fork_in_child)


REGISTRY.set_first_use_hook(_start_on_first_use)
atexit.register(shutdown)
