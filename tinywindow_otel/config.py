"""Settings for the pipeline, read from the standard ``OTEL_*`` variables or given in code.

    >>> import tinywindow_otel
    >>> tinywindow_otel.configure(exporters="otlp",
    ...                           endpoint="http://collector:4318",
    ...                           resource_attributes={"service.instance.id": "bot-1"})   # doctest: +SKIP

Environment variables (all optional; code arguments win over them):

=========================================================  =================================
``OTEL_METRICS_EXPORTER``                                  ``prometheus`` (default), ``otlp``,
                                                           ``prometheus,otlp``, ``none``
``TINYWINDOW_OTEL_METRICS_EXPORTER``                       the same, for this SDK only; wins
                                                           over ``OTEL_METRICS_EXPORTER``
``OTEL_EXPORTER_OTLP_[METRICS_]ENDPOINT``                  base URL (``/v1/metrics`` appended
                                                           for HTTP) / full metrics URL
``OTEL_EXPORTER_OTLP_[METRICS_]PROTOCOL``                  ``http/protobuf`` (default), ``grpc``
``OTEL_EXPORTER_OTLP_[METRICS_]HEADERS``                   ``k=v,k2=v2`` (values URL-encoded)
``OTEL_EXPORTER_OTLP_[METRICS_]TIMEOUT``                   per export, ms (default 10000)
``OTEL_EXPORTER_OTLP_METRICS_TEMPORALITY_PREFERENCE``      ``cumulative`` (default), ``delta``,
                                                           ``lowmemory``
``OTEL_METRIC_EXPORT_INTERVAL`` / ``_TIMEOUT``             ms (default 15000 / 30000)
``OTEL_SERVICE_NAME``, ``OTEL_RESOURCE_ATTRIBUTES``        the OTLP resource
``TINYWINDOW_OTEL_SHUTDOWN_TIMEOUT``                       bound on ``shutdown()``, ms
                                                           (default 5000)
``TINYWINDOW_OTEL_RUNTIME_METRICS``                        ``true`` (default) / ``false``:
                                                           ``process_*`` and ``python_*``
``OTEL_SDK_DISABLED``                                      ``true``: no /metrics, no OTLP
=========================================================  =================================

``OTEL_METRICS_EXPORTER`` is also what ``opentelemetry-instrument`` reads to
set up the *global* MeterProvider (auto-instrumentation). This SDK never
touches the global provider; with both in one process, each follows the
variable on its own: ``OTEL_METRICS_EXPORTER=otlp`` makes both push (to the
same endpoint, under different scopes), ``prometheus`` makes the
auto-instrumentation start its own exporter (port 9464, or
``OTEL_EXPORTER_PROMETHEUS_PORT``) beside ``MetricsServer``, each serving
only its own metrics. Set ``TINYWINDOW_OTEL_METRICS_EXPORTER`` to give this SDK
a different choice (e.g. ``prometheus`` here, ``otlp`` for the rest).

Durations are milliseconds everywhere, as the OTel specification says (the
Python OTLP exporters on their own read ``OTEL_EXPORTER_OTLP_TIMEOUT`` as
seconds; this module passes the timeout explicitly, so the spec's unit holds).
"""

from __future__ import annotations

import importlib
import logging
import os
import uuid
from collections.abc import Mapping
from dataclasses import dataclass, field, replace
from urllib.parse import unquote, urlsplit

from opentelemetry.sdk.metrics import (
    Counter,
    Histogram,
    ObservableCounter,
    ObservableGauge,
    ObservableUpDownCounter,
    UpDownCounter,
)
from opentelemetry.sdk.metrics.export import AggregationTemporality

_log = logging.getLogger("tinywindow_otel")

EXPORTERS = ("prometheus", "otlp")
PROTOCOLS = ("http/protobuf", "grpc")
TEMPORALITIES = ("cumulative", "delta", "lowmemory")
OTLP_EXTRA_HINT = "pip install 'tinywindow-otel[otlp]'"

DEFAULT_SERVICE_NAME = "tinywindow"
DEFAULT_HTTP_ENDPOINT = "http://localhost:4318"
DEFAULT_GRPC_ENDPOINT = "http://localhost:4317"
DEFAULT_OTLP_TIMEOUT_MS = 10_000.0
# Not OTel's 60 s: the shipped rules read gauges over 45 s and rates over >= 1 m,
# which need a push every 15 s (3 and 4 samples); at 60 s the loss, drawdown and
# leverage alerts never get through `for:` and rate() panels go empty.
DEFAULT_EXPORT_INTERVAL_MS = 15_000.0
# The longest push interval the shipped rules and dashboards hold enough samples
# at (tests/monitoring/test_recipes.py derives it from the rules); a longer one
# set by the user is allowed, with a warning.
RULES_MAX_EXPORT_INTERVAL_MS = 15_000.0
DEFAULT_EXPORT_TIMEOUT_MS = 30_000.0
# A trading process must restart quickly even when the collector is gone:
# shutdown gives the final export this long, then returns regardless.
DEFAULT_SHUTDOWN_TIMEOUT_MS = 5_000.0

SHUTDOWN_TIMEOUT_ENV = "TINYWINDOW_OTEL_SHUTDOWN_TIMEOUT"
RUNTIME_METRICS_ENV = "TINYWINDOW_OTEL_RUNTIME_METRICS"
EXPORTER_ENV = "TINYWINDOW_OTEL_METRICS_EXPORTER"
# Below this, periodic export would busy a core (0.001 ms measured 664
# exports/s): a typo in OTEL_METRIC_EXPORT_INTERVAL must not do that.
MIN_EXPORT_INTERVAL_MS = 100.0
# One process-wide identity: a pipeline rebuilt by configure() reports as the
# same instance (a collector keeps one series, deltas continue).
_INSTANCE_IDS: dict[int, str] = {}


class ConfigurationError(ValueError):
    """A setting (environment variable or ``configure()`` argument) is invalid."""


class MissingExtraError(ConfigurationError, ImportError):
    """OTLP was asked for but the exporter packages are not installed."""


@dataclass(frozen=True)
class Settings:
    """Everything the pipeline needs to know; build with ``from_env()`` or ``configure()``."""

    exporters: tuple[str, ...] = ("prometheus",)
    protocol: str = "http/protobuf"
    # Full URL the exporter posts to (HTTP: ends in /v1/metrics); gRPC: host URL.
    endpoint: str = DEFAULT_HTTP_ENDPOINT + "/v1/metrics"
    headers: Mapping[str, str] = field(default_factory=dict)
    timeout_millis: float = DEFAULT_OTLP_TIMEOUT_MS
    export_interval_millis: float = DEFAULT_EXPORT_INTERVAL_MS
    export_timeout_millis: float = DEFAULT_EXPORT_TIMEOUT_MS
    temporality: str = "cumulative"
    service_name: str = DEFAULT_SERVICE_NAME
    resource_attributes: Mapping[str, str] = field(default_factory=dict)
    shutdown_timeout_millis: float = DEFAULT_SHUTDOWN_TIMEOUT_MS
    runtime_metrics: bool = True
    sdk_disabled: bool = False

    @property
    def otlp(self) -> bool:
        return "otlp" in self.exporters

    @property
    def prometheus(self) -> bool:
        return "prometheus" in self.exporters

    @classmethod
    def from_env(cls, environ: Mapping[str, str] | None = None, **overrides) -> Settings:
        """Settings from ``environ`` (default ``os.environ``), then ``overrides`` on top.

        ``overrides`` are ``configure()``'s keyword arguments; ``None`` means "not given".
        """
        env = os.environ if environ is None else environ
        given = {k: v for k, v in overrides.items() if v is not None}
        unknown = set(given) - _CONFIGURE_ARGS
        if unknown:
            raise TypeError(f"configure() got unknown setting(s): {', '.join(sorted(unknown))}")

        def pick(*names: str) -> tuple[str, str] | None:
            for name in names:
                value = env.get(name, "").strip()
                if value:
                    return name, value
            return None

        # Ours first: OTEL_METRICS_EXPORTER is also read by opentelemetry-instrument
        # for the global provider, and the two may need different values.
        exporters = _parse_exporters(*(("exporters", given["exporters"]) if "exporters" in given
                                       else pick(EXPORTER_ENV, "OTEL_METRICS_EXPORTER")
                                       or ("OTEL_METRICS_EXPORTER", "prometheus")))
        found = pick("OTEL_SDK_DISABLED")
        sdk_disabled = _parse_bool(*found) if found else False
        if sdk_disabled:
            exporters = ()  # the whole SDK, both ways: not a /metrics without OTLP or half a pipeline
        if "runtime_metrics" in given:
            runtime_metrics = _parse_bool("runtime_metrics", given["runtime_metrics"])
        else:
            found = pick(RUNTIME_METRICS_ENV)
            runtime_metrics = _parse_bool(*found) if found else True

        if "protocol" in given:
            protocol = _check_choice("protocol", given["protocol"], PROTOCOLS)
        else:
            found = pick("OTEL_EXPORTER_OTLP_METRICS_PROTOCOL", "OTEL_EXPORTER_OTLP_PROTOCOL")
            protocol = _check_choice(found[0], found[1], PROTOCOLS) if found else "http/protobuf"

        endpoint = _resolve_endpoint(protocol, given, pick)

        if "headers" in given:
            headers = given["headers"]
            if isinstance(headers, str):
                headers = _parse_pairs("headers", headers)
            headers = {str(k): str(v) for k, v in dict(headers).items()}
        else:
            found = pick("OTEL_EXPORTER_OTLP_METRICS_HEADERS", "OTEL_EXPORTER_OTLP_HEADERS")
            headers = _parse_pairs(*found) if found else {}

        def millis(arg: str, env_names: tuple[str, ...], default: float) -> float:
            if arg in given:
                return _check_millis(arg, given[arg])
            found = pick(*env_names)
            return _check_millis(*found) if found else default

        timeout = millis("timeout_millis", ("OTEL_EXPORTER_OTLP_METRICS_TIMEOUT", "OTEL_EXPORTER_OTLP_TIMEOUT"),
                         DEFAULT_OTLP_TIMEOUT_MS)
        if timeout < 50:
            _log.warning("OTLP export timeout is %g ms: OTEL_EXPORTER_OTLP_TIMEOUT is in milliseconds "
                         "(did you mean %g s?)", timeout, timeout)
        interval = millis("export_interval_millis", ("OTEL_METRIC_EXPORT_INTERVAL",), DEFAULT_EXPORT_INTERVAL_MS)
        if interval < MIN_EXPORT_INTERVAL_MS:
            source = "export_interval_millis" if "export_interval_millis" in given else "OTEL_METRIC_EXPORT_INTERVAL"
            raise ConfigurationError(f"{source}={interval:g} is below the minimum of {MIN_EXPORT_INTERVAL_MS:g} ms "
                                     f"(the value is in milliseconds; the default is {DEFAULT_EXPORT_INTERVAL_MS:g})")
        if interval > RULES_MAX_EXPORT_INTERVAL_MS and "otlp" in exporters:
            source = "export_interval_millis" if "export_interval_millis" in given else "OTEL_METRIC_EXPORT_INTERVAL"
            _log.warning("%s=%g ms is longer than the %g ms the shipped alert rules and dashboards are written "
                         "for (too few pushes in their windows): pushed loss, drawdown and leverage alerts may "
                         "never fire, rate() panels go empty; see docs/deployment.md", source, interval,
                         RULES_MAX_EXPORT_INTERVAL_MS)
        export_timeout = millis("export_timeout_millis", ("OTEL_METRIC_EXPORT_TIMEOUT",), DEFAULT_EXPORT_TIMEOUT_MS)
        shutdown_timeout = millis("shutdown_timeout_millis", (SHUTDOWN_TIMEOUT_ENV,), DEFAULT_SHUTDOWN_TIMEOUT_MS)

        if "temporality" in given:
            temporality = _check_choice("temporality", str(given["temporality"]).lower(), TEMPORALITIES)
        else:
            found = pick("OTEL_EXPORTER_OTLP_METRICS_TEMPORALITY_PREFERENCE")
            temporality = _check_choice(found[0], found[1].lower(), TEMPORALITIES) if found else "cumulative"

        found = pick("OTEL_RESOURCE_ATTRIBUTES")
        attributes = _parse_pairs(*found) if found else {}
        if "resource_attributes" in given:
            attributes.update({str(k): str(v) for k, v in dict(given["resource_attributes"]).items()})
        if "service_name" in given:
            service_name = str(given["service_name"])
        else:
            found = pick("OTEL_SERVICE_NAME")
            service_name = found[1] if found else attributes.get("service.name", DEFAULT_SERVICE_NAME)
        attributes.pop("service.name", None)

        return cls(
            exporters=exporters, protocol=protocol, endpoint=endpoint, headers=headers,
            timeout_millis=timeout, export_interval_millis=interval, export_timeout_millis=export_timeout,
            temporality=temporality, service_name=service_name, resource_attributes=attributes,
            shutdown_timeout_millis=shutdown_timeout, runtime_metrics=runtime_metrics, sdk_disabled=sdk_disabled,
        )

    def resource_attrs(self, forked: bool = False) -> dict[str, str | int]:
        """The resource for this process: service name, user attributes, and who is reporting.

        ``service.instance.id`` is a UUID per process (the same for every
        pipeline the process builds; a forked child gets its own), unless the user set one, in which case a forked
        child's is suffixed with ``-<pid>``: parent and children never share
        an identity, so a collector keeps their series apart.
        """
        pid = os.getpid()
        attrs: dict[str, str | int] = {**self.resource_attributes, "service.name": self.service_name,
                                    "process.pid": pid}
        configured = self.resource_attributes.get("service.instance.id")
        if configured:
            attrs["service.instance.id"] = f"{configured}-{pid}" if forked else configured
        else:
            attrs["service.instance.id"] = _INSTANCE_IDS.setdefault(pid, str(uuid.uuid4()))
        return attrs

    def with_changes(self, **changes) -> Settings:
        return replace(self, **changes)


_CONFIGURE_ARGS = {
    "exporters", "endpoint", "metrics_endpoint", "protocol", "headers", "timeout_millis",
    "export_interval_millis", "export_timeout_millis", "temporality", "service_name",
    "resource_attributes", "shutdown_timeout_millis", "runtime_metrics",
}


def _parse_bool(source: str, value) -> bool:
    if isinstance(value, bool):
        return value
    text = str(value).strip().lower()
    if text in ("true", "1", "yes", "on"):
        return True
    if text in ("false", "0", "no", "off", ""):
        return False
    raise ConfigurationError(f"{source}={value!r} is not a boolean (use true or false)")


def _check_choice(source: str, value: str, choices: tuple[str, ...]) -> str:
    value = value.strip()
    if value not in choices:
        raise ConfigurationError(f"{source}={value!r} is not supported; use one of: {', '.join(choices)}")
    return value


def _parse_exporters(source: str, value) -> tuple[str, ...]:
    items = [v.strip().lower() for v in value.split(",")] if isinstance(value, str) else [str(v).lower() for v in value]
    items = [v for v in items if v]
    if items == ["none"]:
        return ()
    if not items or "none" in items:
        raise ConfigurationError(f"{source}={value!r}: 'none' cannot be combined with other exporters")
    for item in items:
        if item not in EXPORTERS:
            raise ConfigurationError(
                f"{source}={value!r}: unknown exporter {item!r}; use prometheus, otlp, prometheus,otlp or none")
    return tuple(dict.fromkeys(items))


def _check_millis(source: str, value) -> float:
    try:
        number = float(value)
    except (TypeError, ValueError):
        raise ConfigurationError(f"{source}={value!r} is not a number of milliseconds") from None
    if not number > 0 or number == float("inf"):
        raise ConfigurationError(f"{source}={value!r} must be a positive, finite number of milliseconds")
    return number


def _parse_pairs(source: str, value: str) -> dict[str, str]:
    """``k=v,k2=v2`` with URL-encoded values (the W3C-baggage-like format of OTEL_*_HEADERS)."""
    pairs: dict[str, str] = {}
    for item in value.split(","):
        if not item.strip():
            continue
        key, sep, val = item.partition("=")
        if not sep or not key.strip():
            raise ConfigurationError(f"{source}: {item.strip()!r} is not a key=value pair")
        pairs[unquote(key.strip())] = unquote(val.strip())
    return pairs


def _check_url(source: str, url: str) -> str:
    parts = urlsplit(url)
    if parts.scheme not in ("http", "https") or not parts.netloc:
        raise ConfigurationError(f"{source}={url!r} is not an http(s) URL (e.g. http://collector:4318)")
    return url


def _resolve_endpoint(protocol: str, given: dict, pick) -> str:
    """The URL the exporter talks to, following the OTel spec's endpoint rules."""
    if "metrics_endpoint" in given:  # used as is, like OTEL_EXPORTER_OTLP_METRICS_ENDPOINT
        return _check_url("metrics_endpoint", given["metrics_endpoint"])
    if "endpoint" not in given:
        found = pick("OTEL_EXPORTER_OTLP_METRICS_ENDPOINT")
        if found:
            return _check_url(*found)
    source, base = ("endpoint", given["endpoint"]) if "endpoint" in given else (
        pick("OTEL_EXPORTER_OTLP_ENDPOINT") or ("default", DEFAULT_GRPC_ENDPOINT if protocol == "grpc"
                                                else DEFAULT_HTTP_ENDPOINT))
    _check_url(source, base)
    if protocol == "grpc":
        return base
    return base.rstrip("/") + "/v1/metrics"


# --- exporters ------------------------------------------------------------------


def _require(module: str, protocol: str):
    try:
        return importlib.import_module(module)
    except ImportError as exc:
        raise MissingExtraError(
            f"OTEL_METRICS_EXPORTER asks for otlp ({protocol}) but the OTLP exporter is not installed "
            f"(cannot import {module}: {exc}); install it with: {OTLP_EXTRA_HINT}"
        ) from exc


def check_available(settings: Settings) -> None:
    """Raise ``MissingExtraError`` now if the settings need packages that are absent."""
    if settings.otlp:
        _require(_EXPORTER_MODULES[settings.protocol], settings.protocol)


_EXPORTER_MODULES = {
    "http/protobuf": "opentelemetry.exporter.otlp.proto.http.metric_exporter",
    "grpc": "opentelemetry.exporter.otlp.proto.grpc.metric_exporter",
}


def preferred_temporality(settings: Settings) -> dict:
    """Per-instrument temporality for the OTLP exporter, as the OTel spec defines each preference.

    Applies to instruments created on the SDK provider; the facade's own
    metrics follow the same preference through ``DeltaConverter``.
    """
    cumulative, delta = AggregationTemporality.CUMULATIVE, AggregationTemporality.DELTA
    sums = {
        "cumulative": (cumulative, cumulative, cumulative),
        "delta": (delta, delta, delta),
        "lowmemory": (delta, cumulative, delta),
    }[settings.temporality]
    counter, observable_counter, histogram = sums
    return {
        Counter: counter, ObservableCounter: observable_counter, Histogram: histogram,
        UpDownCounter: cumulative, ObservableUpDownCounter: cumulative, ObservableGauge: cumulative,
    }


def build_otlp_exporter(settings: Settings):
    """The OTLP metric exporter for ``settings`` (HTTP/protobuf or gRPC)."""
    module = _require(_EXPORTER_MODULES[settings.protocol], settings.protocol)
    timeout_s = settings.timeout_millis / 1000.0
    temporality = preferred_temporality(settings)
    if settings.protocol == "grpc":
        return module.OTLPMetricExporter(
            endpoint=settings.endpoint, insecure=urlsplit(settings.endpoint).scheme == "http",
            headers=dict(settings.headers) or None, timeout=timeout_s, preferred_temporality=temporality,
        )
    return module.OTLPMetricExporter(
        endpoint=settings.endpoint, headers=dict(settings.headers), timeout=timeout_s,
        preferred_temporality=temporality,
    )
