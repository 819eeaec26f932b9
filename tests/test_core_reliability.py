"""Regression tests for the core: delta pushes, re-configuration, flush results, hostile values, caps."""

from __future__ import annotations

import inspect
import os
import sys
import threading
import time

import pytest
from helpers import fetch, free_port, parse, parse_all, sample_value, scrape
from otlp_receiver import Blackhole, OTLPReceiver, metrics_of, point

import tinywindow_otel as tw
from tinywindow_otel import Counter, Gauge, Histogram, MetricsServer, pipeline
from tinywindow_otel.config import ConfigurationError, Settings
from tinywindow_otel.metrics import OVERFLOW_LABEL_VALUE, REGISTRY, GaugeSeries, MetricRegistry
from tinywindow_otel.exporters import portfolio_exporter
from tinywindow_otel.testing import reset

SANITIZED = "tinywindow_otel_label_values_sanitized_total"
OVERFLOWED = "tinywindow_otel_cardinality_overflow_total"


@pytest.fixture(autouse=True)
def restore_pipeline():
    yield
    reset()


@pytest.fixture
def receiver():
    with OTLPReceiver() as running:
        yield running


def counter_points(receiver, name: str, **labels) -> list[float]:
    """The value of one counter series in every request the receiver got, in order."""
    values = []
    for _, request in receiver.requests:
        metric = metrics_of(request).get(name)
        if metric is not None:
            found = [p for p in metric.sum.data_points if {a.key: a.value.string_value for a in p.attributes} == labels]
            values.extend(p.as_double for p in found)
    return values


# --- delta temporality ------------------------------------------------------------------


def test_delta_of_a_removed_and_recreated_series_starts_from_zero(receiver):
    tw.configure(exporters="otlp", endpoint=receiver.endpoint, export_interval_millis=600_000,
                 temporality="delta", runtime_metrics=False)
    series = tw.trades_total.labels("filled", "BTC/USDT")
    series.inc(10)
    assert tw.force_flush()
    tw.trades_total.remove("filled", "BTC/USDT")
    tw.trades_total.labels("filled", "BTC/USDT").inc(1)
    assert tw.force_flush()
    values = counter_points(receiver, "tinywindow_trades_total", status="filled", symbol="BTC/USDT")
    assert values == [10.0, 1.0]  # never -9 for a monotonic counter


def test_configure_again_does_not_resend_what_was_pushed(receiver):
    settings = dict(exporters="otlp", endpoint=receiver.endpoint, export_interval_millis=600_000,
                    temporality="delta", runtime_metrics=False,
                    resource_attributes={"service.instance.id": "trader-1"})
    tw.configure(**settings)
    tw.trades_total.labels("filled", "ETH/USDT").inc(10)
    assert tw.force_flush()
    tw.configure(**settings)  # the same identity, a new pipeline
    assert tw.force_flush()
    tw.trades_total.labels("filled", "ETH/USDT").inc(2)
    assert tw.force_flush()
    values = counter_points(receiver, "tinywindow_trades_total", status="filled", symbol="ETH/USDT")
    # 10, then nothing new (the old pipeline's final push and the flush), then 2.
    assert values[0] == 10 and values[-1] == 2 and set(values[1:-1]) == {0.0}
    assert sum(values) == 12  # the collector's total is what was recorded


def test_delta_pushed_after_a_failed_push_carries_what_the_failed_one_held(receiver):
    tw.configure(exporters="otlp", endpoint=receiver.endpoint, export_interval_millis=600_000,
                 temporality="delta", runtime_metrics=False)
    receiver.refuse_with = 400  # a collector refusing the batch (not retried by the exporter)
    tw.trades_total.labels("filled", "SOL/USDT").inc(10)
    assert not tw.force_flush()
    assert receiver.refused == 1
    receiver.refuse_with = None
    tw.trades_total.labels("filled", "SOL/USDT").inc(1)
    assert tw.force_flush()
    assert tw.force_flush()  # nothing new: a delta of 0, not the 11 again
    values = counter_points(receiver, "tinywindow_trades_total", status="filled", symbol="SOL/USDT")
    assert values == [11.0, 0.0]  # the collector's total is what was recorded


def test_force_flush_honours_its_timeout_when_the_collector_hangs():
    hung = Blackhole()
    try:
        tw.configure(exporters="otlp", endpoint=hung.endpoint, export_interval_millis=600_000,
                     timeout_millis=5_000, runtime_metrics=False)
        tw.trades_total.labels("filled", "BTC/USDT").inc()
        started = time.monotonic()
        assert not tw.force_flush(timeout_millis=300)
        took = time.monotonic() - started
        assert hung.connected.is_set()  # the push did reach the collector, which never answered
        assert took < 2.5, f"force_flush(timeout_millis=300) took {took:.2f} s"
    finally:
        hung.close()


def test_force_flush_is_false_when_the_push_fails():
    tw.configure(exporters="otlp", endpoint=f"http://127.0.0.1:{free_port()}", export_interval_millis=600_000,
                 timeout_millis=500, runtime_metrics=False)
    tw.trades_total.labels("filled", "BTC/USDT").inc()
    assert tw.force_flush(timeout_millis=1000) is False


def test_force_flush_is_true_when_the_push_succeeds(receiver):
    tw.configure(exporters="otlp", endpoint=receiver.endpoint, export_interval_millis=600_000)
    tw.trades_total.labels("filled", "BTC/USDT").inc()
    assert tw.force_flush() is True
    assert point(metrics_of(receiver.requests[-1][1])["tinywindow_trades_total"],
                 status="filled", symbol="BTC/USDT").as_double == 1


def test_runtime_metrics_are_pushed_too(receiver):
    tw.configure(exporters="otlp", endpoint=receiver.endpoint, export_interval_millis=600_000)
    tw.trades_total.labels("filled", "BTC/USDT").inc()
    assert tw.force_flush()
    names = set(metrics_of(receiver.requests[-1][1]))
    assert {"process_cpu_seconds_total", "process_resident_memory_bytes", "python_gc_collections_total",
            "python_info", "tinywindow_otel_build_info"} <= names


# --- configuration --------------------------------------------------------------------------


@pytest.mark.parametrize("value", ["0.001", "50", "99.9"])
def test_export_interval_below_the_minimum_is_refused(value):
    with pytest.raises(ConfigurationError, match="OTEL_METRIC_EXPORT_INTERVAL.*minimum of 100"):
        Settings.from_env({"OTEL_METRIC_EXPORT_INTERVAL": value})
    with pytest.raises(ConfigurationError, match="export_interval_millis"):
        tw.configure(export_interval_millis=float(value))
    assert Settings.from_env({"OTEL_METRIC_EXPORT_INTERVAL": "100"}).export_interval_millis == 100


def test_sdk_disabled_disables_both_ways_not_half(monkeypatch):
    monkeypatch.setenv("OTEL_SDK_DISABLED", "true")
    monkeypatch.setenv("OTEL_METRICS_EXPORTER", "prometheus,otlp")
    reset()
    p = pipeline.get_pipeline()
    assert p.otlp_reader is None and p.scrape_reader is None
    with MetricsServer(port=0) as server:
        with pytest.raises(Exception, match="503"):
            fetch(server.url)


def test_own_exporter_variable_wins_over_the_one_auto_instrumentation_reads(monkeypatch):
    """opentelemetry-instrument reads OTEL_METRICS_EXPORTER for the global provider; ours can differ."""
    monkeypatch.setenv("OTEL_METRICS_EXPORTER", "otlp")
    monkeypatch.setenv("TINYWINDOW_OTEL_METRICS_EXPORTER", "prometheus")
    reset()
    p = pipeline.get_pipeline()
    assert p.otlp_reader is None and p.scrape_reader is not None
    # Both side by side under the real opentelemetry-instrument: tests/test_auto_instrumentation.py.


# --- label values -----------------------------------------------------------------------------


class Hostile(int):
    def __str__(self) -> str:
        return "\ud800bad"

    __repr__ = __str__


def test_numeric_label_values_are_formatted_by_the_number_type_and_sanitised():
    trades = REGISTRY.by_attr("trades_total")
    trades.labels("filled", Hostile(7)).inc()  # the subclass's __str__ is not used
    trades.labels("filled", 10**300).inc()  # 301 digits: truncated and counted
    with pytest.raises(ValueError, match="tinywindow_trades_total: label 'symbol'"):
        trades.labels("filled", 10**5000)
    with MetricsServer(port=0) as running:
        families = scrape(running.url)  # the scrape still works (no lone surrogate anywhere)
    assert sample_value(families, "tinywindow_trades_total", status="filled", symbol="7") == 1
    long = [s for s in families["tinywindow_trades_total"].samples if s.labels["symbol"].startswith("1000")]
    assert len(long) == 1 and len(long[0].labels["symbol"]) == 256
    assert sample_value(families, SANITIZED, metric="tinywindow_trades_total", reason="too_long") == 1


def test_portfolio_symbols_get_the_same_label_rules_as_the_metric_api():
    from tinywindow_otel.exporters import export_state, portfolio_exporter

    portfolio_exporter.update_portfolio(10_000.0, 0.0, {Hostile(7): 1.0, "BTC/USDT": 0.5})
    assert export_state()["portfolio"]["positions"] == {"7": 1.0, "BTC/USDT": 0.5}  # not "\\ud800bad"
    with pytest.raises(ValueError, match="tinywindow_active_positions: label 'symbol'"):
        portfolio_exporter.update_portfolio(10_000.0, 0.0, {10**5000: 1.0})
    # The bad update recorded nothing: the previous snapshot stands.
    assert export_state()["portfolio"]["positions"] == {"7": 1.0, "BTC/USDT": 0.5}
    with MetricsServer(port=0) as running:
        families = scrape(running.url)
    assert sample_value(families, "tinywindow_active_positions", symbol="7") == 1.0


def test_a_real_label_value_equal_to_the_overflow_marker_does_not_collide():
    positions = REGISTRY.by_attr("active_positions")
    positions.set_max_series(2)
    try:
        positions.labels(symbol=OVERFLOW_LABEL_VALUE).set(5)  # a real value that looks like the marker
        positions.labels(symbol="A").set(1)
        positions.labels(symbol="B").set(7)  # beyond the cap: folds into the overflow series
        with MetricsServer(port=0) as running:
            text = fetch(running.url)
    finally:
        positions.set_max_series(500)
    families = parse(text)
    samples = [(s.labels["symbol"], s.value) for s in families["tinywindow_active_positions"].samples]
    assert sorted(samples) == sorted([("_overflow_", 5.0), ("A", 1.0), (OVERFLOW_LABEL_VALUE, 7.0)])
    assert sample_value(families, SANITIZED, metric="tinywindow_active_positions", reason="reserved") == 1


def test_a_real_histogram_label_equal_to_the_overflow_marker_stays_its_own_series():
    latency = REGISTRY.by_attr("api_latency_seconds")
    cap = latency.max_series
    latency.set_max_series(2)
    try:
        latency.labels(service=OVERFLOW_LABEL_VALUE).observe(0.1)
        latency.labels(service="binance").observe(0.2)
        latency.labels(service="claude").observe(0.3)  # beyond the cap: folds
        with MetricsServer(port=0) as running:
            text = fetch(running.url)
    finally:
        latency.set_max_series(cap)
    counts = {s.labels["service"]: s.value for s in parse(text)["tinywindow_api_latency_seconds"].samples
              if s.name.endswith("_count")}
    assert counts == {"_overflow_": 1.0, "binance": 1.0, OVERFLOW_LABEL_VALUE: 1.0}  # three distinct series
    series_lines = [line for line in text.splitlines() if line.startswith("tinywindow_api_latency_seconds_count")]
    assert len(series_lines) == len(set(series_lines)) == 3  # no label set emitted twice


# --- caps and self-metrics ---------------------------------------------------------------------


def test_set_limits_applies_all_caps_or_none():
    trades, positions = REGISTRY.by_attr("trades_total"), REGISTRY.by_attr("active_positions")
    before = trades.max_series, positions.max_series
    for bad in ({"trades_total": 5, "active_positions": 0}, {"trades_total": 5, "active_positions": "9"},
                {"trades_total": 5, "no_such_metric": 3}):
        with pytest.raises(ValueError):
            REGISTRY.set_limits(bad)
        assert (trades.max_series, positions.max_series) == before  # nothing changed
    REGISTRY.set_limits({"trades_total": 5, "tinywindow_active_positions": 6})
    try:
        assert (trades.max_series, positions.max_series) == (5, 6)
    finally:
        REGISTRY.set_limits({"trades_total": before[0], "active_positions": before[1]})


def test_a_self_metric_at_its_cap_never_blocks_or_recurses():
    registry = MetricRegistry()
    registry.set_limits({OVERFLOWED: 1, "trades_total": 1, "active_positions": 1})
    done = threading.Event()

    def overflow_two_metrics() -> None:
        trades, positions = registry.by_attr("trades_total"), registry.by_attr("active_positions")
        for i in range(3):
            trades.labels("filled", f"S{i}").inc()
            positions.labels(symbol=f"S{i}").set(i)
        done.set()

    worker = threading.Thread(target=overflow_two_metrics, daemon=True)
    worker.start()
    assert done.wait(10), "overflowing two metrics with the overflow self-metric at its cap blocked"
    counted = {s.label_values: s.get() for s in registry.get(OVERFLOWED).series()}
    assert counted[("tinywindow_trades_total",)] == 2  # the first label set the self-metric holds
    assert sum(counted.values()) == 4  # the second metric's folds land in the self-metric's own overflow


@pytest.fixture
def positions_capped_at_two():
    positions = REGISTRY.by_attr("active_positions")
    positions.set_max_series(2)
    yield positions
    positions.set_max_series(500)


@pytest.mark.parametrize(("removed", "left"), [
    ("A", {"B"}),  # room again: the value C folded in belongs to nobody now
    ("C", {"A", "B"}),  # still at the cap, but the folded value belonged to C
])
def test_an_overflowed_gauge_keeps_no_stale_value_once_its_symbols_are_gone(positions_capped_at_two, removed, left):
    for symbol in ("A", "B", "C"):
        positions_capped_at_two.labels(symbol=symbol).set(1)  # C folds into the overflow series
    positions_capped_at_two.remove(removed)
    families = parse(fetch_once())
    assert {s.labels["symbol"] for s in families["tinywindow_active_positions"].samples} == left


def test_update_portfolio_leaves_no_stale_overflow_position(positions_capped_at_two):
    portfolio_exporter.update_portfolio(total_value=1000, unrealized_pnl=0, positions={"A": 1, "B": 2, "C": 3})
    portfolio_exporter.update_portfolio(total_value=1000, unrealized_pnl=0, positions={"A": 1, "B": 2})
    families = parse(fetch_once())
    values = {s.labels["symbol"]: s.value for s in families["tinywindow_active_positions"].samples}
    assert values == {"A": 1.0, "B": 2.0}


def fetch_once() -> str:
    with MetricsServer(port=0) as running:
        return fetch(running.url)


def test_a_gauge_whose_first_value_is_nan_publishes_no_invented_zero():
    from tinywindow_otel.exporters import portfolio_exporter

    tw.portfolio_value_usd.set(float("nan"))
    tw.active_positions.labels(symbol="BTC/USDT").set(float("inf"))
    tw.leverage_ratio.set(float("nan"))
    portfolio_exporter.update_portfolio(float("nan"), 0.0, {}, leverage=float("inf"))
    text = fetch_once()
    families = parse(text)
    assert "tinywindow_portfolio_value_usd" not in families
    assert "tinywindow_active_positions" not in families
    assert "tinywindow_leverage_ratio" not in families
    assert "# TYPE tinywindow_portfolio_value_usd gauge" in text  # the family is still announced


def _lines_of(function, text: str) -> set[int]:
    source, first = inspect.getsourcelines(function)
    return {first + i for i, line in enumerate(source) if text in line}


def test_gauge_set_races_inc_without_losing_updates():
    """A set() landing inside an inc()'s read-modify-write waits for it: the set value is never
    overwritten by the total inc() computed from the value before it.

    The interleaving is forced, not hoped for: a trace function stops the incrementing thread
    right before it stores its total (the old value already read), and lets it go once the
    other thread has reached set()'s guard (it then waits there) or finished set() without one.
    """
    series = tw.active_positions.labels(symbol="RACE")
    series.set(0)
    store_lines = _lines_of(GaugeSeries._add, "self._value = total")
    take_lines = _lines_of(GaugeSeries.set, "tokens.pop()")  # none if set() takes no guard
    assert store_lines, "GaugeSeries._add no longer stores `self._value = total`: update this test"
    paused, set_reached = threading.Event(), threading.Event()
    stores = [0]
    incs, pause_at = 1000, 500

    def inc_tracer(frame, event, arg):
        if frame.f_code is not GaugeSeries._add.__code__:
            return None

        def local(frame, event, arg):
            if event == "line" and frame.f_lineno in store_lines:
                stores[0] += 1
                if stores[0] == pause_at:
                    paused.set()
                    set_reached.wait(10)
            return local
        return local

    def set_tracer(frame, event, arg):
        if frame.f_code is not GaugeSeries.set.__code__:
            return None

        def local(frame, event, arg):
            if event == "line" and frame.f_lineno in take_lines:
                set_reached.set()  # about to wait for the token the paused inc() holds
            return local
        return local

    def incrementer() -> None:
        sys.settrace(inc_tracer)
        try:
            for _ in range(incs):
                series.inc()
        finally:
            sys.settrace(None)

    def setter() -> None:
        assert paused.wait(10)
        sys.settrace(set_tracer)
        try:
            series.set(-1e9)
        finally:
            sys.settrace(None)
            set_reached.set()

    threads = [threading.Thread(target=incrementer, daemon=True), threading.Thread(target=setter, daemon=True)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(30)
    assert not any(thread.is_alive() for thread in threads), "the race did not finish"
    assert paused.is_set(), "the incrementing thread never reached its store"
    # The paused inc() stored first, then the set, then some of the remaining increments (the set
    # may get the token any time after the paused inc() gives it back). A lost set leaves 1000.
    assert -1e9 <= series.get() <= -1e9 + (incs - pause_at)


# --- your own metrics -------------------------------------------------------------------------------


def test_your_own_metrics_with_prometheus_client_signatures():
    orders = Counter("tinywindow_orders_open_total", "Open orders", ["symbol"])
    depth = Gauge("tinywindow_book_depth", "Order book depth", ("venue",), unit="")
    fill = Histogram("tinywindow_fill_seconds", "Time to fill", ["venue"], buckets=[0.1, 1, 10, float("inf")])
    plain = Gauge("tinywindow_heartbeat", "A gauge without labels")
    try:
        orders.labels(symbol="BTC/USDT").inc(2)
        depth.labels("binance").set(12)
        fill.labels(venue="binance").observe(0.5)
        plain.set(1)
        families = parse(fetch_once())
        assert sample_value(families, "tinywindow_orders_open_total", symbol="BTC/USDT") == 2
        assert sample_value(families, "tinywindow_book_depth", venue="binance") == 12
        assert sample_value(families, "tinywindow_fill_seconds_bucket", venue="binance", le="1.0") == 1
        assert sample_value(families, "tinywindow_heartbeat") == 1
        with pytest.raises(ValueError, match="duplicate metric 'tinywindow_orders_open_total'"):
            Counter("tinywindow_orders_open_total", "again", ["symbol"])
        with pytest.raises(ValueError, match="duplicate metric 'tinywindow_trades_total'"):
            Counter("tinywindow_trades_total", "a catalog name")
        with pytest.raises(ValueError, match="invalid label name"):
            Counter("tinywindow_x_total", "bad label", ["bad-label"])
        with pytest.raises(ValueError, match="strictly increasing"):
            Histogram("tinywindow_y_seconds", "bad buckets", buckets=[1, 0.5])
        with pytest.raises(ValueError, match="tinywindow_book_depth: expected 1 label value"):
            depth.labels("a", "b")
    finally:
        for metric in (orders, depth, fill, plain):
            REGISTRY.unregister(metric)


def test_the_process_registry_holds_every_catalog_spec():
    from tinywindow_otel.catalog import ALL_METRICS

    assert {spec.name for spec in ALL_METRICS} <= {metric.name for metric in REGISTRY}
    assert all(type(REGISTRY.get(spec.name)).__name__.lower() == spec.kind.value for spec in ALL_METRICS)


def test_every_family_and_runtime_metric_from_the_first_scrape():
    families = parse_all(fetch_once())
    assert {"process_cpu_seconds_total", "process_open_fds", "process_max_fds", "process_start_time_seconds",
            "process_virtual_memory_bytes", "process_resident_memory_bytes", "python_gc_objects_collected_total",
            "python_gc_collections_total", "python_info"} <= set(families)
    assert families["process_cpu_seconds_total"].type == "counter"
    assert families["python_info"].samples[0].labels["implementation"]
    assert os.getpid() and families[OVERFLOWED].type == "counter"
