"""Settings from the standard OTEL_* variables and from configure(): parsing, precedence, errors."""

from __future__ import annotations

import sys

import pytest

import tinywindow_otel
from tinywindow_otel import pipeline
from tinywindow_otel.testing import reset
from tinywindow_otel.config import (
    ConfigurationError,
    MissingExtraError,
    Settings,
    build_otlp_exporter,
    check_available,
    preferred_temporality,
)


@pytest.fixture(autouse=True)
def restore_pipeline():
    yield
    reset()


def test_defaults_are_prometheus_only_cumulative():
    s = Settings.from_env({})
    assert s.exporters == ("prometheus",) and s.prometheus and not s.otlp
    assert s.protocol == "http/protobuf"
    assert s.endpoint == "http://localhost:4318/v1/metrics"
    assert s.temporality == "cumulative"
    assert (s.timeout_millis, s.export_interval_millis, s.export_timeout_millis) == (10_000, 15_000, 30_000)
    assert s.shutdown_timeout_millis == 5_000
    assert s.service_name == "tinywindow"


@pytest.mark.parametrize("value, expected", [
    ("prometheus", ("prometheus",)),
    ("otlp", ("otlp",)),
    ("prometheus,otlp", ("prometheus", "otlp")),
    (" OTLP , prometheus ", ("otlp", "prometheus")),
    ("none", ()),
])
def test_metrics_exporter_values(value, expected):
    assert Settings.from_env({"OTEL_METRICS_EXPORTER": value}).exporters == expected


@pytest.mark.parametrize("value", ["zipkin", "prometheus,console", "none,otlp"])
def test_unknown_exporter_names_the_variable(value):
    with pytest.raises(ConfigurationError, match="OTEL_METRICS_EXPORTER"):
        Settings.from_env({"OTEL_METRICS_EXPORTER": value})


def test_endpoint_rules_follow_the_otel_spec():
    base = Settings.from_env({"OTEL_EXPORTER_OTLP_ENDPOINT": "http://collector:4318/"})
    assert base.endpoint == "http://collector:4318/v1/metrics"
    specific = Settings.from_env({"OTEL_EXPORTER_OTLP_ENDPOINT": "http://collector:4318",
                                  "OTEL_EXPORTER_OTLP_METRICS_ENDPOINT": "https://gw.example/otlp/metrics"})
    assert specific.endpoint == "https://gw.example/otlp/metrics"
    grpc = Settings.from_env({"OTEL_EXPORTER_OTLP_PROTOCOL": "grpc"})
    assert grpc.endpoint == "http://localhost:4317"
    with pytest.raises(ConfigurationError, match="OTEL_EXPORTER_OTLP_ENDPOINT='collector:4318'"):
        Settings.from_env({"OTEL_EXPORTER_OTLP_ENDPOINT": "collector:4318"})


def test_signal_specific_variables_win_over_generic_ones():
    s = Settings.from_env({
        "OTEL_EXPORTER_OTLP_PROTOCOL": "http/protobuf", "OTEL_EXPORTER_OTLP_METRICS_PROTOCOL": "grpc",
        "OTEL_EXPORTER_OTLP_TIMEOUT": "1000", "OTEL_EXPORTER_OTLP_METRICS_TIMEOUT": "2500",
        "OTEL_EXPORTER_OTLP_HEADERS": "a=1", "OTEL_EXPORTER_OTLP_METRICS_HEADERS": "b=2",
    })
    assert (s.protocol, s.timeout_millis, dict(s.headers)) == ("grpc", 2500.0, {"b": "2"})


def test_headers_are_url_decoded_pairs():
    s = Settings.from_env({"OTEL_EXPORTER_OTLP_HEADERS": "Authorization=Bearer%20abc, x-tenant = desk%2C1"})
    assert dict(s.headers) == {"Authorization": "Bearer abc", "x-tenant": "desk,1"}
    with pytest.raises(ConfigurationError, match="OTEL_EXPORTER_OTLP_HEADERS.*'novalue'"):
        Settings.from_env({"OTEL_EXPORTER_OTLP_HEADERS": "a=1,novalue"})


@pytest.mark.parametrize("var", ["OTEL_METRIC_EXPORT_INTERVAL", "OTEL_METRIC_EXPORT_TIMEOUT",
                                 "OTEL_EXPORTER_OTLP_TIMEOUT", "TINYWINDOW_OTEL_SHUTDOWN_TIMEOUT"])
@pytest.mark.parametrize("value", ["abc", "0", "-5", "inf"])
def test_bad_durations_name_the_variable(var, value):
    with pytest.raises(ConfigurationError, match=var):
        Settings.from_env({var: value})


def test_unsupported_protocol_and_temporality_are_rejected():
    with pytest.raises(ConfigurationError, match="OTEL_EXPORTER_OTLP_PROTOCOL='http/json'"):
        Settings.from_env({"OTEL_EXPORTER_OTLP_PROTOCOL": "http/json"})
    with pytest.raises(ConfigurationError, match="OTEL_EXPORTER_OTLP_METRICS_TEMPORALITY_PREFERENCE"):
        Settings.from_env({"OTEL_EXPORTER_OTLP_METRICS_TEMPORALITY_PREFERENCE": "sometimes"})
    assert Settings.from_env({"OTEL_EXPORTER_OTLP_METRICS_TEMPORALITY_PREFERENCE": "DELTA"}).temporality == "delta"


def test_resource_from_service_name_and_attributes():
    s = Settings.from_env({"OTEL_RESOURCE_ATTRIBUTES": "service.name=fromattrs,deployment.environment=prod,desk=a%20b"})
    assert s.service_name == "fromattrs"
    assert dict(s.resource_attributes) == {"deployment.environment": "prod", "desk": "a b"}
    s = Settings.from_env({"OTEL_RESOURCE_ATTRIBUTES": "service.name=fromattrs", "OTEL_SERVICE_NAME": "trader"})
    assert s.service_name == "trader"  # OTEL_SERVICE_NAME takes precedence, as the spec says
    attrs = s.resource_attrs()
    assert attrs["service.name"] == "trader" and isinstance(attrs["process.pid"], int)
    # One identity per process, whichever pipeline reports: a rebuilt pipeline is the same instance.
    assert attrs["service.instance.id"] == s.resource_attrs()["service.instance.id"]


def test_configured_instance_id_is_kept_in_the_parent_and_suffixed_in_a_child():
    s = Settings.from_env({"OTEL_RESOURCE_ATTRIBUTES": "service.instance.id=trader-1"})
    assert s.resource_attrs()["service.instance.id"] == "trader-1"
    assert s.resource_attrs(forked=True)["service.instance.id"] == f"trader-1-{s.resource_attrs()['process.pid']}"


def test_code_arguments_override_the_environment():
    env = {"OTEL_METRICS_EXPORTER": "otlp", "OTEL_EXPORTER_OTLP_ENDPOINT": "http://env:4318",
           "OTEL_SERVICE_NAME": "env", "OTEL_METRIC_EXPORT_INTERVAL": "1000"}
    s = Settings.from_env(env, exporters=["prometheus"], endpoint="http://code:4318", service_name="code",
                          export_interval_millis=250, headers={"k": "v"}, temporality="delta",
                          resource_attributes={"desk": "x"})
    assert s.exporters == ("prometheus",)
    assert s.endpoint == "http://code:4318/v1/metrics"
    assert (s.service_name, s.export_interval_millis, dict(s.headers)) == ("code", 250.0, {"k": "v"})
    assert s.temporality == "delta" and s.resource_attributes["desk"] == "x"
    # None means "not given": the environment's value stays.
    assert Settings.from_env(env, exporters=None).exporters == ("otlp",)
    assert Settings.from_env(env, metrics_endpoint="http://full/x").endpoint == "http://full/x"


def test_configure_rejects_unknown_keywords_and_bad_values():
    with pytest.raises(TypeError, match="intervall"):
        tinywindow_otel.configure(intervall=5)
    with pytest.raises(ConfigurationError, match="export_interval_millis"):
        tinywindow_otel.configure(export_interval_millis=-1)


def test_http_exporter_is_built_for_http_protobuf():
    from opentelemetry.exporter.otlp.proto.http.metric_exporter import OTLPMetricExporter

    exporter = build_otlp_exporter(Settings.from_env({"OTEL_METRICS_EXPORTER": "otlp"}))
    assert isinstance(exporter, OTLPMetricExporter)
    exporter.shutdown()


def test_grpc_exporter_is_chosen_for_protocol_grpc():
    from opentelemetry.exporter.otlp.proto.grpc.metric_exporter import OTLPMetricExporter

    settings = Settings.from_env({"OTEL_METRICS_EXPORTER": "otlp", "OTEL_EXPORTER_OTLP_PROTOCOL": "grpc",
                                  "OTEL_EXPORTER_OTLP_ENDPOINT": "http://127.0.0.1:4317"})
    exporter = build_otlp_exporter(settings)
    assert isinstance(exporter, OTLPMetricExporter)
    exporter.shutdown()


def test_temporality_preferences_map_per_instrument():
    from opentelemetry.sdk.metrics import Histogram, ObservableCounter, ObservableGauge
    from opentelemetry.sdk.metrics.export import AggregationTemporality as T

    def prefs(value):
        return preferred_temporality(Settings.from_env({}, temporality=value))

    assert set(prefs("cumulative").values()) == {T.CUMULATIVE}
    assert prefs("delta")[ObservableCounter] is T.DELTA and prefs("delta")[Histogram] is T.DELTA
    assert prefs("delta")[ObservableGauge] is T.CUMULATIVE
    assert prefs("lowmemory")[ObservableCounter] is T.CUMULATIVE and prefs("lowmemory")[Histogram] is T.DELTA


@pytest.mark.parametrize("protocol, module", [
    ("http/protobuf", "opentelemetry.exporter.otlp.proto.http.metric_exporter"),
    ("grpc", "opentelemetry.exporter.otlp.proto.grpc.metric_exporter"),
])
def test_otlp_without_the_extra_names_the_extra(monkeypatch, protocol, module):
    # None in sys.modules makes the import fail as if the package were absent.
    monkeypatch.setitem(sys.modules, module, None)
    settings = Settings.from_env({"OTEL_METRICS_EXPORTER": "otlp", "OTEL_EXPORTER_OTLP_PROTOCOL": protocol})
    with pytest.raises(MissingExtraError, match=r"pip install 'tinywindow-otel\[otlp\]'") as info:
        check_available(settings)
    assert isinstance(info.value, ImportError) and module in str(info.value)
    with pytest.raises(MissingExtraError, match=r"tinywindow-otel\[otlp\]"):
        tinywindow_otel.configure(exporters="otlp", protocol=protocol)
    # Prometheus alone needs no extra.
    check_available(Settings.from_env({"OTEL_EXPORTER_OTLP_PROTOCOL": protocol}))


def test_missing_extra_from_the_environment_does_not_crash_recording(monkeypatch, caplog):
    """Set only by env, the error surfaces at MetricsServer.start()/get_pipeline, not inside inc()."""
    monkeypatch.setitem(sys.modules, "opentelemetry.exporter.otlp.proto.http.metric_exporter", None)
    monkeypatch.setenv("OTEL_METRICS_EXPORTER", "otlp")
    reset()  # forget the pipeline: the next first use builds one from the environment
    tinywindow_otel.trades_total.labels("filled", "BTC/USDT").inc()  # the first use: logs, does not raise
    assert "tinywindow-otel[otlp]" in caplog.text
    tinywindow_otel.trades_total.labels("filled", "BTC/USDT").inc()  # recording still works
    with pytest.raises(MissingExtraError):
        pipeline.get_pipeline()
    with pytest.raises(MissingExtraError):
        tinywindow_otel.MetricsServer(port=0).start()
