"""OpenTelemetry wiring: one lazily created MeterProvider, its two readers, lifecycle and fork.

Only public SDK extension points are used:

- /metrics: :class:`ScrapeReader`, a ``MetricReader`` implementing its
  documented override ``_receive_metrics``; a scrape collects whatever the
  SDK itself holds through it, adds the producer's metrics and renders the
  result with ``render.Renderer``.
- OTLP: the stock ``PeriodicExportingMetricReader`` around
  :class:`FacadeExporter`, a ``MetricExporter`` that adds the producer's
  metrics (as deltas when the temporality preference says so) to each
  export and hands the result to the stock OTLP exporter.
- The SDK calls an exporter only when it has collected something itself, so
  the provider holds one instrument of its own: ``tinywindow_otel_build_info``
  (an up-down counter, added to once: always 1). It appears on /metrics and OTLP alike.
- Fork: ``os.register_at_fork`` only (see :func:`_after_fork_in_child`).

Lifecycle: the pipeline starts on first use (or at ``configure()`` /
``MetricsServer.start()``); ``shutdown()`` flushes within a bound without
starting a thread (interpreters at exit refuse new threads), and runs at exit.
"""

from __future__ import annotations

import atexit
import gc
import importlib.metadata
import logging
import os
import threading
from collections.abc import Iterable, Iterator
from contextlib import contextmanager

from opentelemetry.sdk.metrics import MeterProvider
from opentelemetry.sdk.metrics.export import (
    MetricExporter,
    MetricExportResult,
    MetricReader,
    MetricsData,
    PeriodicExportingMetricReader,
)
from opentelemetry.sdk.resources import Resource
from opentelemetry.sdk.util.instrumentation import InstrumentationScope

from ..catalog import BUILD_INFO
from ..config import Settings, build_otlp_exporter, check_available, preferred_temporality
from ..metrics import REGISTRY, MetricRegistry
from .forksafe import reset_after_fork
from .producer import DeltaConverter, Producer
from .producer import metrics_data as combine
from .render import CONTENT_TYPE, Renderer
from .runtime import RuntimeMetrics

_log = logging.getLogger("tinywindow_otel")

SCOPE_NAME = "tinywindow_otel"
try:
    __version__ = importlib.metadata.version("tinywindow-otel")
except importlib.metadata.PackageNotFoundError:  # run from a source tree that is not installed
    __version__ = "0+unknown"


class _CyclicGCPause:
    """No cyclic garbage collection while a scrape builds its body.

    A scrape of 10k histogram series allocates ~70k short-lived containers,
    all freed by reference counting when it ends; with the collector on they
    survive the young collections they trigger and fill the old generation,
    whose full collections then stopped every thread for tens of ms. The
    collector is left alone if the application turned it off itself.
    Scrapes on several threads share one pause (a count of pausers).
    """

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._pausers = 0
        self._resume = False
        reset_after_fork(self)

    @contextmanager
    def paused(self) -> Iterator[None]:
        with self._lock:
            if self._pausers == 0:
                self._resume = gc.isenabled()
                gc.disable()
            self._pausers += 1
        try:
            yield
        finally:
            with self._lock:
                self._pausers -= 1
                if self._pausers == 0 and self._resume:
                    gc.enable()

    def after_fork_in_child(self) -> None:
        # Forked in the middle of a scrape: that scrape is the parent's and never
        # ends here, so the child would run without cyclic GC for good.
        self._lock = threading.Lock()
        if self._pausers:
            self._pausers = 0
            if self._resume:
                gc.enable()


_cyclic_gc_paused = _CyclicGCPause().paused


class MetricsDisabledError(RuntimeError):
    """/metrics was scraped while the Prometheus exporter is not selected."""


class ScrapeReader(MetricReader):
    """The pull reader behind /metrics: hands over what the SDK collected for one scrape."""

    def __init__(self) -> None:
        super().__init__()
        self.lock = threading.Lock()
        self._received: MetricsData | None = None

    def _receive_metrics(self, metrics_data: MetricsData, timeout_millis: float = 10_000, **kwargs) -> None:
        self._received = metrics_data

    def take(self) -> MetricsData | None:
        """Collect now; what the SDK holds (None when it holds nothing)."""
        with self.lock:
            self._received = None
            self.collect()
            data, self._received = self._received, None
        return data

    def shutdown(self, timeout_millis: float = 30_000, **kwargs) -> None:
        pass


class FacadeExporter(MetricExporter):
    """Adds the facade's metrics to each export and passes it to the real (OTLP) exporter.

    ``delta`` converts the facade's cumulative sums and histograms for a
    collector that prefers delta; it outlives this exporter when the
    pipeline is rebuilt under the same identity, so nothing is sent twice.
    In a forked child this exporter (the parent's) sends nothing.
    """

    def __init__(self, inner: MetricExporter, producer: Producer, scope: InstrumentationScope,
                 resource: Resource, delta: DeltaConverter | None, temporality: dict) -> None:
        super().__init__(preferred_temporality=temporality)
        self._inner = inner
        self._producer = producer
        self._drops = producer.registry.drops  # failed exports count in the registry being exported
        self._scope = scope
        self._resource = resource
        self._delta = delta
        self._pid = os.getpid()
        self.exports = 0
        self.last_ok = True

    def export(self, metrics_data: MetricsData, timeout_millis: float = 10_000, **kwargs) -> MetricExportResult:
        if os.getpid() != self._pid:
            return MetricExportResult.SUCCESS  # the parent's pipeline, inherited by a fork: not ours to send
        try:
            metrics = self._producer.metrics()
            if self._delta is not None:
                metrics = self._delta.convert(metrics)
            result = self._inner.export(combine(self._resource, self._scope, metrics, metrics_data),
                                        timeout_millis=timeout_millis)
        except Exception:  # noqa: BLE001 - counted and logged; the next export tries again
            _log.warning("OTLP export failed", exc_info=True)
            result = MetricExportResult.FAILURE
        ok = result is MetricExportResult.SUCCESS
        if ok:
            if self._delta is not None:
                self._delta.commit()
        else:
            self._drops.dropped("otlp_export", "export_failed")
        self.last_ok = ok
        self.exports += 1
        return result

    def force_flush(self, timeout_millis: float = 10_000) -> bool:
        return self._inner.force_flush(timeout_millis=timeout_millis)

    def shutdown(self, timeout_millis: float = 30_000, **kwargs) -> None:
        if os.getpid() == self._pid:
            self._inner.shutdown(timeout_millis=timeout_millis)


# Delta state per exporting identity (resource + endpoint): a pipeline rebuilt
# by configure() in the same process continues where the last one stopped.
_delta_states: dict[tuple, DeltaConverter] = {}


class Pipeline:
    """The MeterProvider, its readers and the producer."""

    def __init__(self, registry: MetricRegistry = REGISTRY, resource: Resource | None = None,
                 extra_readers: Iterable[MetricReader] = (), settings: Settings | None = None,
                 forked: bool = False) -> None:
        self.settings = settings if settings is not None else Settings()
        self.resource = resource if resource is not None else Resource.create(self.settings.resource_attrs(forked))
        self.scope = InstrumentationScope(SCOPE_NAME, __version__)
        self.registry = registry
        self.producer = Producer(registry, [RuntimeMetrics()] if self.settings.runtime_metrics else [])
        self.pid = os.getpid()
        readers: list[MetricReader] = []
        self.scrape_reader: ScrapeReader | None = None
        if self.settings.prometheus:
            self.scrape_reader = ScrapeReader()
            readers.append(self.scrape_reader)
        self.exporter: FacadeExporter | None = None
        self.otlp_reader: PeriodicExportingMetricReader | None = None
        if self.settings.otlp:
            delta = None
            if self.settings.temporality in ("delta", "lowmemory"):
                identity = (tuple(sorted((k, str(v)) for k, v in self.resource.attributes.items())),
                            self.settings.endpoint)
                delta = _delta_states.setdefault(identity, DeltaConverter())
            self.exporter = FacadeExporter(build_otlp_exporter(self.settings), self.producer, self.scope,
                                           self.resource, delta, preferred_temporality(self.settings))
            self.otlp_reader = PeriodicExportingMetricReader(
                self.exporter, export_interval_millis=self.settings.export_interval_millis,
                export_timeout_millis=self.settings.export_timeout_millis,
            )
            readers.append(self.otlp_reader)
        self.provider = MeterProvider(
            metric_readers=[*readers, *extra_readers],
            resource=self.resource,
            # Our own atexit hook shuts down whichever pipeline is current.
            shutdown_on_exit=False,
        )
        meter = self.provider.get_meter(SCOPE_NAME, __version__)
        # An up-down counter (stable API; cumulative in every temporality
        # preference) added to once: shown as a gauge, always 1.
        info = meter.create_up_down_counter(BUILD_INFO.name, BUILD_INFO.unit, BUILD_INFO.description)
        info.add(1, {"version": __version__})
        self._renderer = Renderer()
        # Held while a scrape collects from the SDK (scrapes of the facade itself run in parallel).
        self.scrape_lock = self.scrape_reader.lock if self.scrape_reader is not None else threading.Lock()

    def meter_provider(self) -> MeterProvider:
        """The provider, for OTel instruments of your own: they show on /metrics and OTLP too."""
        return self.provider

    def collect(self) -> MetricsData:
        """What a scrape shows, as OTel data: the SDK's metrics, then the facade's (cumulative)."""
        self._check_prometheus()
        sdk_data = self.scrape_reader.take()  # type: ignore[union-attr]
        return combine(self.resource, self.scope, self.producer.metrics(with_empty=True), sdk_data)

    def render_chunks(self) -> tuple[list[bytes], str]:
        """The /metrics body in pieces (write them in order) and its content type."""
        self._check_prometheus()
        sdk_data = self.scrape_reader.take()  # type: ignore[union-attr]
        metrics: list = []
        if sdk_data is not None:
            for resource_metrics in sdk_data.resource_metrics:
                for scope_metrics in resource_metrics.scope_metrics:
                    metrics.extend(scope_metrics.metrics)
        with _cyclic_gc_paused():
            metrics.extend(self.producer.metrics(with_empty=True))
            chunks = self._renderer.render_chunks(metrics)
            del metrics  # freed here, by reference counting
        return chunks, CONTENT_TYPE

    def render(self) -> tuple[bytes, str]:
        """The /metrics body (Prometheus text format, never OpenMetrics: docs/decisions.md) and its type."""
        chunks, content_type = self.render_chunks()
        return b"".join(chunks), content_type

    def _check_prometheus(self) -> None:
        if self.scrape_reader is None:
            reason = ("OTEL_SDK_DISABLED=true" if self.settings.sdk_disabled else
                      "OTEL_METRICS_EXPORTER (or configure(exporters=...)) selects "
                      f"{','.join(self.settings.exporters) or 'none'}, without prometheus")
            raise MetricsDisabledError(f"/metrics is disabled: {reason}")

    def force_flush(self, timeout_millis: float = 10_000) -> bool:
        """Export now to the push (OTLP) reader; True only if that export succeeded.

        /metrics is pull-only and needs no flush (True without OTLP).
        """
        reader, exporter = self.otlp_reader, self.exporter
        if reader is None or exporter is None:
            return True
        before = exporter.exports
        done = threading.Event()

        def flush() -> None:
            try:
                reader.force_flush(timeout_millis=timeout_millis)
            except Exception:  # noqa: BLE001
                _log.warning("OTLP flush failed", exc_info=True)
            finally:
                done.set()

        # The OTLP exporters bound a push by their own timeout, not the caller's:
        # the push runs on a thread of its own and the caller waits only
        # ``timeout_millis`` for it (it finishes, or fails, in the background).
        try:
            threading.Thread(target=flush, name="tinywindow-otel-flush", daemon=True).start()
        except RuntimeError:  # interpreter shutting down: no new threads, push inline
            flush()
        if not done.wait(max(timeout_millis, 0) / 1000):
            _log.warning("OTLP flush did not finish within %.0f ms (is the collector at %s reachable?)",
                         timeout_millis, self.settings.endpoint)
            return False
        return exporter.exports > before and exporter.last_ok

    def shutdown(self, timeout_millis: float | None = None) -> bool:
        """Flush and stop within about ``timeout_millis``, whatever the collector does.

        The final export runs on the reader's own (daemon) thread; this
        waits for it at most the bound, then gives up with one log line, so
        the process can exit. No thread is started here: at interpreter
        exit, Python 3.12.0-3.12.2 refuse new threads.
        """
        if timeout_millis is None:
            timeout_millis = self.settings.shutdown_timeout_millis
        reader = self.otlp_reader
        try:
            self.provider.shutdown(timeout_millis=timeout_millis)
        except Exception:  # noqa: BLE001 - shutdown must never raise into the caller
            _log.warning("metrics pipeline shutdown failed", exc_info=True)
            return False
        if reader is not None and any(t.name == "OtelPeriodicExportingMetricReader" and t.is_alive()
                                      for t in threading.enumerate()):
            _log.warning("metrics pipeline shutdown gave up after %.0f ms (is the collector at %s reachable?); "
                         "the last export is abandoned", timeout_millis, self.settings.endpoint)
            return False
        return True


_settings: Settings | None = None  # None: read the OTEL_* environment at first use
_pipeline: Pipeline | None = None
_pipeline_lock = threading.RLock()


def current_settings() -> Settings:
    """The settings the next pipeline will use (``configure()``'s, or the environment's)."""
    return _settings if _settings is not None else Settings.from_env()


def get_pipeline() -> Pipeline:
    """The process's pipeline, created on first use."""
    global _pipeline
    pipeline = _pipeline
    if pipeline is None:
        with _pipeline_lock:
            if _pipeline is None:
                _pipeline = Pipeline(settings=current_settings())
                _arm_fork_handler()
            pipeline = _pipeline
    return pipeline


def render_metrics() -> tuple[bytes, str]:
    """The /metrics body and content type; raises ``MetricsDisabledError`` when Prometheus is off."""
    return get_pipeline().render()


def render_metrics_chunks() -> tuple[list[bytes], str]:
    """``render_metrics()`` as encoded pieces, for servers that write the body in parts."""
    return get_pipeline().render_chunks()


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
    ``export_interval_millis`` (>= 100), ``export_timeout_millis``,
    ``temporality`` ("cumulative" | "delta" | "lowmemory"), ``service_name``,
    ``resource_attributes`` (dict), ``shutdown_timeout_millis``,
    ``runtime_metrics`` (bool: process_* and python_* metrics, default on).

    Raises ``ConfigurationError`` for an invalid value and
    ``MissingExtraError`` when OTLP is asked for without the ``[otlp]``
    extra. A running pipeline is flushed and replaced; values recorded so
    far are kept (they live in the facade), and with delta temporality
    nothing already pushed under the same identity is pushed again.
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
    """Push what the facade holds to the collector now; False if that push failed (True without OTLP)."""
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


def reset_for_tests() -> None:
    """Drop the pipeline (shut down quickly) and forget ``configure()``'s settings and delta state."""
    global _settings
    # Settings first: a recording on another thread (an export abandoned by an
    # earlier shutdown counting its failure) may build the next pipeline at any
    # moment, and must build it from the environment, not from these settings.
    with _pipeline_lock:
        _settings = None
        _delta_states.clear()
    shutdown(1000)
    REGISTRY.set_first_use_hook(_start_on_first_use)


def _after_fork_in_child() -> None:
    """A forked child reports only what it records itself, under its own identity.

    The registry has already zeroed its values and replaced its locks (its
    own at-fork handler). The parent's pipeline is dropped without a flush
    (its exporter refuses to send from another process, so the parent's
    totals are never exported twice), its export thread, which the SDK
    restarts in the child, is told to stop, and, if the parent had a
    pipeline, the child gets a new one at once with a new
    ``service.instance.id`` and ``process.pid``.
    """
    global _pipeline, _pipeline_lock
    _pipeline_lock = threading.RLock()
    _delta_states.clear()
    parent, _pipeline = _pipeline, None
    try:
        if parent is not None:
            if parent.otlp_reader is not None:
                parent.otlp_reader.shutdown(timeout_millis=0)
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
    handler). Registering after them lets their handlers run first.
    """
    global _fork_handler_armed
    if not _fork_handler_armed and hasattr(os, "register_at_fork"):
        _fork_handler_armed = True
        os.register_at_fork(after_in_child=_after_fork_in_child)


REGISTRY.set_first_use_hook(_start_on_first_use)
atexit.register(shutdown)
