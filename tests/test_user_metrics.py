"""Your own metrics: prometheus_client's constructor signature, series caps, drops and OTLP."""

from __future__ import annotations

import inspect

import prometheus_client as pc
import pytest
from helpers import parse, sample_value, scrape
from otlp_receiver import OTLPReceiver, as_prometheus_samples, reset_after_pushes, scrape_as_samples

import tinywindow_otel as tw
from tinywindow_otel import Counter, Gauge, Histogram, MetricsServer, pipeline
from tinywindow_otel.metrics import OVERFLOW_LABEL_VALUE, REGISTRY, MetricRegistry

DROPPED = REGISTRY.get("tinywindow_otel_dropped_measurements_total")
OVERFLOWED = REGISTRY.get("tinywindow_otel_cardinality_overflow_total")


@pytest.fixture
def own():
    """Declare metrics in the process-wide registry; they are unregistered after the test."""
    made = []

    def declare(cls, *args, **kwargs):
        metric = cls(*args, **kwargs)
        made.append(metric)
        return metric

    yield declare
    for metric in made:
        REGISTRY.unregister(metric)


# --- series caps, drops and OTLP -------------------------------------------------------------


def record(metric, series, value: float = 1.0):
    if isinstance(metric, Histogram):
        series.observe(value)
    elif isinstance(metric, Gauge):
        series.set(value)
    else:
        series.inc(value)


def sample_of(metric) -> str:
    """The sample /metrics shows the metric's value (a histogram's: its count) under."""
    return metric.name + {Counter: "_total", Gauge: "", Histogram: "_count"}[type(metric)]


@pytest.mark.parametrize("cls", [Counter, Gauge, Histogram])
def test_a_third_label_set_folds_into_overflow_and_is_counted(cls, own, scrape_metrics):
    name = f"user_capped_{cls.__name__.lower()}"
    metric = own(cls, name, "Capped at two label sets", ["strategy"], max_series=2)
    for strategy in ("momentum", "carry", "arbitrage", "mean_reversion"):
        record(metric, metric.labels(strategy))
    assert [s.label_values for s in metric.series()] == [("momentum",), ("carry",), (OVERFLOW_LABEL_VALUE,)]
    assert OVERFLOWED.labels(name).get() == 2.0  # arbitrage and mean_reversion
    families = scrape_metrics()
    for strategy, expected in (("momentum", 1.0), ("carry", 1.0), (OVERFLOW_LABEL_VALUE, 2.0)):
        shown = sample_value(families, sample_of(metric), strategy=strategy)
        assert shown == (1.0 if cls is Gauge else expected), strategy  # a folded gauge holds the last value
    assert sample_value(families, sample_of(metric), strategy="arbitrage") is None
    assert sample_value(families, "tinywindow_otel_cardinality_overflow_total", metric=name) == 2.0


def test_nan_infinity_and_negative_increments_on_your_own_metrics(own, scrape_metrics):
    signals = own(Counter, "user_signals", "Signals", ["strategy"])
    depth = own(Gauge, "user_depth", "Book depth")
    fill = own(Histogram, "user_fill", "Fill time", buckets=(0.1, 1.0))
    signals.labels("momentum").inc(2)
    depth.set(5)
    fill.observe(0.5)
    signals.labels("momentum").inc(float("nan"))
    depth.set(float("inf"))
    fill.observe(float("nan"))
    with pytest.raises(ValueError, match="user_signals.*negative|user_signals.*>= 0"):
        signals.labels("momentum").inc(-1)
    with pytest.raises(TypeError, match="user_fill"):
        fill.observe("0.5")
    assert DROPPED.labels("user_signals", "nan").get() == 1.0
    assert DROPPED.labels("user_depth", "inf").get() == 1.0
    assert DROPPED.labels("user_fill", "nan").get() == 1.0
    families = scrape_metrics()
    assert sample_value(families, "user_signals_total", strategy="momentum") == 2.0  # untouched
    assert sample_value(families, "user_depth") == 5.0
    assert sample_value(families, "user_fill_count") == 1.0 and sample_value(families, "user_fill_sum") == 0.5
    assert sample_value(families, "tinywindow_otel_dropped_measurements_total", metric="user_fill", reason="nan") == 1


@pytest.fixture
def receiver():
    with OTLPReceiver() as running:
        yield running
    reset_after_pushes()


def test_your_own_metrics_arrive_over_otlp_with_the_values_on_metrics(own, receiver):
    tw.configure(endpoint=receiver.endpoint, exporters="prometheus,otlp", export_interval_millis=600_000,
                 runtime_metrics=False)
    p = pipeline.get_pipeline()
    signals = own(Counter, "user_otlp_signals", "Signals", ["strategy"], max_series=2)
    depth = own(Gauge, "user_otlp_depth", "Book depth", ["venue"])
    fill = own(Histogram, "user_otlp_fill", "Fill time", ["venue"], buckets=(0.1, 1.0, 10.0))
    for strategy in ("momentum", "carry", "arbitrage"):  # the third folds
        signals.labels(strategy).inc(3)
    depth.labels("binance").set(-2.5)
    for value in (0.05, 0.5, 5.0, 50.0):
        fill.labels("binance").observe(value)
    with MetricsServer(port=0) as server:
        shown = scrape_as_samples(scrape(server.url))
        assert p.force_flush()
    _, request = receiver.wait_for(lambda reqs: reqs[-1] if reqs else None)
    pushed = as_prometheus_samples(request)
    names = ("user_otlp_signals_total", "user_otlp_depth", "user_otlp_fill_bucket", "user_otlp_fill_sum",
             "user_otlp_fill_count")
    mine = {key: value for key, value in shown.items() if key[0] in names}
    assert {key: pushed.get(key) for key in mine} == mine
    assert mine[("user_otlp_signals_total", frozenset({"strategy": OVERFLOW_LABEL_VALUE}.items()))] == 3.0
    assert mine[("user_otlp_depth", frozenset({"venue": "binance"}.items()))] == -2.5
    assert mine[("user_otlp_fill_count", frozenset({"venue": "binance"}.items()))] == 4.0
    assert len(mine) == 3 + 1 + 4 + 2  # every sample of the three families, not a vacuous match
    overflow = ("tinywindow_otel_cardinality_overflow_total", frozenset({"metric": "user_otlp_signals"}.items()))
    assert pushed[overflow] == shown[overflow] == 1.0


# --- prometheus_client's constructor signature --------------------------------------------------

PROMETHEUS_PARAMETERS = ["name", "documentation", "labelnames", "namespace", "subsystem", "unit", "registry"]


@pytest.mark.parametrize("ours, theirs", [(Counter, pc.Counter), (Gauge, pc.Gauge), (Histogram, pc.Histogram)])
def test_the_positional_parameters_are_prometheus_clients(ours, theirs):
    mine = inspect.signature(ours).parameters
    positional = [n for n, p in mine.items() if p.kind is inspect.Parameter.POSITIONAL_OR_KEYWORD]
    assert positional == PROMETHEUS_PARAMETERS
    assert list(inspect.signature(theirs).parameters)[:7] == PROMETHEUS_PARAMETERS
    assert mine["max_series"].kind is inspect.Parameter.KEYWORD_ONLY
    if ours is Histogram:
        assert mine["buckets"].kind is inspect.Parameter.KEYWORD_ONLY


def test_ported_positional_namespace_and_subsystem_give_prometheus_clients_name():
    registry = MetricRegistry()
    ours = Counter("orders", "Orders sent", ["venue"], "trader", "execution", registry=registry)
    theirs = pc.Counter("orders", "Orders sent", ["venue"], "trader", "execution", registry=pc.CollectorRegistry())
    assert ours.name == "trader_execution_orders" == theirs._name
    assert registry.get("trader_execution_orders") is ours
    only_namespace = Gauge("depth", "Depth", (), "trader", registry=registry)
    assert only_namespace.name == "trader_depth"


def test_arguments_beyond_registry_are_keyword_only():
    with pytest.raises(TypeError):
        Histogram("fill", "Fill time", (), "", "", "", None, (0.1, 1.0))  # buckets positionally
    with pytest.raises(TypeError):
        Counter("orders", "Orders", (), "", "", "", None, ("a",))  # prometheus_client's _labelvalues


@pytest.mark.parametrize("unit", ["seconds", "s"])
def test_a_unit_is_appended_to_the_exposed_name_as_prometheus_client_does(unit, own, scrape_metrics):
    theirs_registry = pc.CollectorRegistry()
    theirs = pc.Histogram("user_fill", "Fill time", ["venue"], "desk", unit="seconds", registry=theirs_registry,
                          buckets=(0.1, 1.0))
    theirs.labels("binance").observe(0.5)
    ours = own(Histogram, "user_fill", "Fill time", ["venue"], "desk", unit=unit, buckets=(0.1, 1.0))
    ours.labels("binance").observe(0.5)
    expected = parse(pc.generate_latest(theirs_registry).decode())
    shown = scrape_metrics()
    assert "desk_user_fill_seconds" in expected and "desk_user_fill_seconds" in shown
    assert {s.name: s.value for s in shown["desk_user_fill_seconds"].samples if s.name.endswith(("_count", "_sum"))} \
        == {s.name: s.value for s in expected["desk_user_fill_seconds"].samples if s.name.endswith(("_count", "_sum"))}
    with pytest.raises(ValueError, match="duplicate metric 'desk_user_fill_seconds'.*desk_user_fill"):
        own(Histogram, "desk_user_fill_seconds", "The same family on /metrics")


def test_a_counter_with_a_unit_keeps_total_last():
    registry = MetricRegistry()
    Counter("sent_total", "Bytes sent", unit="bytes", registry=registry)
    with pytest.raises(ValueError, match="duplicate metric"):
        Counter("sent_bytes_total", "Bytes sent, declared with the unit in the name", registry=registry)


def test_bad_namespace_subsystem_or_unit_raise_naming_the_metric():
    registry = MetricRegistry()
    with pytest.raises(TypeError, match="orders: namespace must be a string"):
        Counter("orders", "Orders", ["venue"], ["trader"], registry=registry)
    with pytest.raises(TypeError, match="orders: unit must be a string"):
        Counter("orders", "Orders", unit=1, registry=registry)
    with pytest.raises(ValueError, match="invalid metric name 'trader-desk_orders'"):
        Counter("orders", "Orders", namespace="trader-desk", registry=registry)
