"""The facade's prometheus_client-style API and its bad-input rules (SPEC section 4)."""

from __future__ import annotations

import math
import re

import pytest

from helpers import sample_value
from tinywindow_otel import (
    MetricRegistry,
    active_positions,
    api_latency_seconds,
    portfolio_value_usd,
    trade_pnl_usd,
    trades_total,
)


def test_labels_by_name_and_by_position_return_the_same_cached_series():
    by_name = trades_total.labels(status="filled", symbol="BTC/USDT")
    assert trades_total.labels("filled", "BTC/USDT") is by_name
    assert trades_total.labels(symbol="BTC/USDT", status="filled") is by_name


def test_numeric_label_values_are_stringified_to_one_series():
    assert active_positions.labels(symbol=1) is active_positions.labels(symbol="1")


@pytest.mark.parametrize(
    "call, message",
    [
        (lambda: trades_total.labels(status="filled"), "missing label(s) symbol"),
        (lambda: trades_total.labels(status="filled", symbol="X", venue="y"), "unknown label(s) venue"),
        (lambda: trades_total.labels("filled"), "expected 2 label value(s)"),
        (lambda: trades_total.labels("filled", symbol="X"), "either positionally or by name"),
        (lambda: trade_pnl_usd.labels("x"), "has no labels"),
        (lambda: trades_total.inc(), "call .labels(...) first"),
    ],
)
def test_label_mistakes_raise_value_error_naming_the_metric(call, message):
    with pytest.raises(ValueError) as info:
        call()
    assert message in str(info.value)
    assert "tinywindow_" in str(info.value)


def test_label_of_wrong_type_raises_type_error_naming_metric_and_label():
    with pytest.raises(TypeError, match=r"tinywindow_trades_total: label 'symbol'"):
        trades_total.labels(status="filled", symbol=None)
    with pytest.raises(TypeError, match="tinywindow_trades_total"):
        trades_total.labels(status="filled", symbol=["BTC"])


def test_negative_counter_increment_raises_and_keeps_the_total():
    series = trades_total.labels(status="filled", symbol="BTC/USDT")
    series.inc(2)
    with pytest.raises(ValueError, match="tinywindow_trades_total: counters can only be incremented by non-negative"):
        series.inc(-1)
    assert series.get() == 2


@pytest.mark.parametrize("bad", ["10", None, object(), True])
def test_non_numeric_values_raise_type_error_naming_the_metric(bad):
    with pytest.raises(TypeError, match="tinywindow_trades_total"):
        trades_total.labels(status="filled", symbol="X").inc(bad)
    with pytest.raises(TypeError, match="tinywindow_portfolio_value_usd"):
        portfolio_value_usd.set(bad)
    with pytest.raises(TypeError, match="tinywindow_trade_pnl_usd"):
        trade_pnl_usd.observe(bad)


def test_nan_and_inf_are_dropped_counted_and_do_not_corrupt(scrape_metrics):
    portfolio_value_usd.set(100.0)
    portfolio_value_usd.set(math.nan)
    trade_pnl_usd.observe(-5.0)
    trade_pnl_usd.observe(math.inf)
    trade_pnl_usd.observe(-math.inf)
    trades_total.labels(status="filled", symbol="X").inc(math.nan)
    families = scrape_metrics()
    assert sample_value(families, "tinywindow_portfolio_value_usd") == 100.0
    assert sample_value(families, "tinywindow_trade_pnl_usd_sum") == -5.0
    assert sample_value(families, "tinywindow_trade_pnl_usd_count") == 1.0
    assert sample_value(families, "tinywindow_trades_total", status="filled", symbol="X") == 0.0
    dropped = "tinywindow_otel_dropped_measurements_total"
    assert sample_value(families, dropped, metric="tinywindow_portfolio_value_usd", reason="nan") == 1.0
    assert sample_value(families, dropped, metric="tinywindow_trade_pnl_usd", reason="inf") == 2.0
    assert sample_value(families, dropped, metric="tinywindow_trades_total", reason="nan") == 1.0


def test_drops_log_once_per_kind_not_per_call(caplog):
    from tinywindow_otel.testing import reset_values

    reset_values()  # forget what earlier tests logged: this kind is logged again, once
    with caplog.at_level("WARNING", logger="tinywindow_otel"):
        for _ in range(50):
            api_latency_seconds.labels(service="log-test").observe(math.nan)
    lines = [r for r in caplog.records if "tinywindow_api_latency_seconds" in r.getMessage()]
    assert len(lines) == 1


def test_gauge_set_inc_dec():
    series = active_positions.labels(symbol="SOL/USDT")
    series.set(3)
    series.inc()
    series.dec(0.5)
    assert series.get() == 3.5


def test_histogram_boundary_values_land_in_their_own_bucket(scrape_metrics):
    api_latency_seconds.labels(service="claude").observe(5.0)
    api_latency_seconds.labels(service="claude").observe(5.0001)
    families = scrape_metrics()
    assert sample_value(families, "tinywindow_api_latency_seconds_bucket", service="claude", le="5.0") == 1
    assert sample_value(families, "tinywindow_api_latency_seconds_bucket", service="claude", le="10.0") == 2


def test_typed_registry_lookups_return_the_metric_and_name_a_wrong_kind():
    registry = MetricRegistry()
    assert registry.counter("trades_total") is registry.by_attr("trades_total")
    assert registry.gauge("win_rate") is registry.by_attr("win_rate")
    assert registry.histogram("trade_pnl_usd") is registry.by_attr("trade_pnl_usd")
    with pytest.raises(TypeError, match="tinywindow_trades_total is a Counter, not a Gauge"):
        registry.gauge("trades_total")
    with pytest.raises(KeyError):
        registry.counter("no_such_metric")


# --- physical ranges of histogram observations ---------------------------------------------------

BOUNDED = [
    ("tinywindow_api_latency_seconds", ("claude",), -1, "observations must be >= 0"),
    ("tinywindow_trade_amount_usd", ("BTC/USDT",), -5, "observations must be >= 0"),
    ("tinywindow_agent_confidence", ("analyst",), 1.5, r"observations must be in \[0, 1\]"),
    ("tinywindow_agent_confidence", ("analyst",), -0.2, r"observations must be in \[0, 1\]"),
    ("tinywindow_order_fill_ratio", ("binance",), 1.01, r"observations must be in \[0, 1\]"),
    ("tinywindow_order_latency_seconds", ("binance", "ack"), -0.001, "observations must be >= 0"),
    ("gen_ai.client.token.usage", ("chat", "anthropic", "claude", "input"), -3, "observations must be >= 0"),
    ("gen_ai.client.operation.duration", ("chat", "anthropic", "claude", ""), -2.5, "observations must be >= 0"),
]


@pytest.mark.parametrize("name, labels, value, message", BOUNDED)
def test_an_observation_outside_the_physical_range_raises_naming_metric_and_value(name, labels, value, message):
    registry = MetricRegistry()
    histogram = registry.get(name)
    series = histogram.labels(*labels)
    with pytest.raises(ValueError, match=rf"{re.escape(name)}: {message}, got {value!r}"):
        series.observe(value)
    counts, total, _, _ = series.snapshot()
    assert sum(counts) == 0 and total == 0.0  # nothing recorded: the sum never goes down
    low = 0 if value < 0 else 1  # the bound itself is inside
    series.observe(low)
    assert sum(series.snapshot()[0]) == 1


def test_signed_histograms_keep_negative_values_and_bounds_leave_nan_inf_to_the_drop_counter():
    registry = MetricRegistry()
    pnl, slippage = registry.histogram("trade_pnl_usd"), registry.histogram("slippage_bps").labels("binance", "buy")
    pnl.observe(-120.5)
    slippage.observe(-3.0)
    assert pnl.series()[0].snapshot()[1] == -120.5 and slippage.snapshot()[1] == -3.0
    latency = registry.histogram("api_latency_seconds").labels("claude")
    for bad in (math.nan, -math.inf, math.inf):
        latency.observe(bad)  # data, not a programming error: dropped and counted, never raised
    dropped = registry.counter("otel_dropped_measurements_total")
    assert dropped.labels("tinywindow_api_latency_seconds", "nan").get() == 1
    assert dropped.labels("tinywindow_api_latency_seconds", "inf").get() == 2
    assert sum(latency.snapshot()[0]) == 0


def test_your_own_histogram_is_unbounded():
    registry = MetricRegistry(())
    from tinywindow_otel import Histogram

    mine = Histogram("temperature_celsius", "A signed reading", buckets=(-10, 0, 10), registry=registry)
    mine.observe(-40)
    assert mine.series()[0].snapshot()[:2] == ([1, 0, 0, 0], -40.0)
