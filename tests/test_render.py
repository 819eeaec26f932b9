"""The /metrics renderer writes exactly what the stock exporter path (the oracle) writes."""

from __future__ import annotations

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
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
from prometheus_client import exposition as text_format

from helpers import parse
from oracle import SCOPE_OPTIONS, plain_collector, stock, with_points
from tinywindow_otel._internal.render import CONTENT_TYPE, Renderer
from tinywindow_otel.metrics import REGISTRY
from tinywindow_otel.pipeline import get_pipeline
from tinywindow_otel.testing import collect

label_values = st.text(
    alphabet=st.sampled_from(['a', 'Z', '0', ' ', '"', '\\', '\n', '%', 's', '=', ',', '{', '}', 'é', '€', '.', '_']),
    max_size=8,
)
numbers = st.one_of(
    st.integers(min_value=0, max_value=10**8),
    st.floats(allow_nan=True, allow_infinity=True),
)


# Series of one family with different label names: the exporter backfills the
# missing ones with "" in sorted order since the versions with scope options
# (older ones keep the order of first appearance); /metrics follows the former.
SORTED_BACKFILL = SCOPE_OPTIONS


def render(renderer: Renderer, data: MetricsData) -> bytes:
    return renderer.render([m for rm in data.resource_metrics for sm in rm.scope_metrics for m in sm.metrics])


def metrics_data(metrics: list[Metric]) -> MetricsData:
    scope = InstrumentationScope("tinywindow_otel", "0")
    return MetricsData([ResourceMetrics(Resource.create({}), [ScopeMetrics(scope, metrics, "")], "")])


def number_point(attributes, value) -> NumberDataPoint:
    return NumberDataPoint(attributes=attributes, start_time_unix_nano=1, time_unix_nano=2, value=value)


def histogram_point(attributes, counts, total, bounds) -> HistogramDataPoint:
    return HistogramDataPoint(attributes=attributes, start_time_unix_nano=1, time_unix_nano=2, count=sum(counts),
                              sum=total, bucket_counts=counts, explicit_bounds=bounds, min=0.0, max=0.0)


def build(rows) -> MetricsData:
    """rows: [(label value a, label value b, number, histogram counts, histogram sum)]."""
    counter_points = [number_point({"status": a, "symbol": b}, abs(v) if v == v else v) for a, b, v, _, _ in rows]
    gauge_points = [number_point({"symbol": a, "odd.key": b}, v) for a, b, v, _, _ in rows]
    bounds = (-100.0, 0.0, 0.5, 2500.0)
    hist_points = [histogram_point({"service": a + b}, counts, total, bounds) for a, b, _, counts, total in rows]
    sparse = [number_point({"only_a": a} if i % 2 else {"only_b": b}, i) for i, (a, b, *_) in enumerate(rows)]
    return metrics_data([
        Metric("tinywindow_trades_total", "Trades \"by\" status\\n\nline", "{trade}",
               Sum(counter_points, AggregationTemporality.CUMULATIVE, True)),
        Metric("tinywindow_win_rate", "percent", "%", Gauge(gauge_points)),
        Metric("tinywindow_open_orders", "up-down", "", Sum(gauge_points, AggregationTemporality.CUMULATIVE, False)),
        Metric("tinywindow_latency_seconds", "latency", "s", Histogram(hist_points, AggregationTemporality.CUMULATIVE)),
        *([Metric("tinywindow_sparse", "backfilled labels", "1", Gauge(sparse))] if SORTED_BACKFILL else []),
        Metric("tinywindow_empty_total", "no points", "", Sum([], AggregationTemporality.CUMULATIVE, True)),
    ])


rows_strategy = st.lists(
    st.tuples(label_values, label_values, numbers, st.lists(st.integers(0, 3000), min_size=5, max_size=5),
              st.floats(allow_nan=False, allow_infinity=False, width=32)),
    max_size=6,
)


@settings(max_examples=60, deadline=None)
@given(first=rows_strategy, second=rows_strategy)
def test_fast_rendering_is_byte_identical_to_the_stock_path(first, second):
    renderer = Renderer()
    # Twice with different data: the later runs render from the warm cache.
    for rows in (first, second, first):
        data = with_points(build(rows))
        assert render(renderer, data) == stock([data])


def test_a_family_without_points_shows_help_and_type_only():
    data = build([])
    assert render(Renderer(), data).decode().endswith(
        "# HELP tinywindow_empty_total no points\n# TYPE tinywindow_empty_total counter\n")


def test_without_negative_bounds_it_matches_unmodified_prometheus_client():
    data = build([("x", "y", 3, [1, 2, 3, 4, 5], 12.5)])
    collector = plain_collector()
    # Drop the negative-bound histogram: prometheus_client alone would omit its _count/_sum.
    metrics = [m for m in data.resource_metrics[0].scope_metrics[0].metrics if m.name != "tinywindow_latency_seconds"]
    data = with_points(metrics_data(metrics))
    collector.add_metrics_data(data)

    class Registry:
        collect = staticmethod(collector.collect)

    assert render(Renderer(), data) == text_format.generate_latest(Registry())


def test_negative_bound_histogram_keeps_count_and_sum_like_otlp():
    data = build([("x", "", 0, [1, 2, 0, 0, 1], -75.5)])
    families = parse(render(Renderer(), data).decode())
    samples = {s.name: s.value for s in families["tinywindow_latency_seconds"].samples if s.name != "tinywindow_latency_seconds_bucket"}
    assert samples == {"tinywindow_latency_seconds_count": 4.0, "tinywindow_latency_seconds_sum": -75.5}


def test_two_metrics_of_one_family_are_merged_like_the_stock_path():
    data = metrics_data([
        Metric("x.y", "d", "", Gauge([number_point({"a": "1"}, 1.0)])),
        Metric("x_y", "d", "", Gauge([number_point({"a": "2"}, 2.0)])),
    ])
    assert render(Renderer(), data) == stock([data])


def test_pipeline_scrape_equals_the_stock_rendering_of_the_same_collection():
    """/metrics is the Prometheus text format (ADR 2), as the stock encoder writes it."""
    from tinywindow_otel.cli.demo import TradingSimulation

    simulation = TradingSimulation(seed=7)
    simulation.initialise_series()
    for _ in range(50):
        simulation.tick()
    REGISTRY.by_attr("api_errors_total").labels(service='we"ird\\', type="new\nline").inc(2)
    pipeline = get_pipeline()
    body, content_type = pipeline.render()
    assert content_type == text_format.CONTENT_TYPE_LATEST == CONTENT_TYPE
    data = collect()
    assert render(Renderer(), with_points(data)) == stock([with_points(data)])

    # The scrape is that collection, empty families' headers included (the
    # runtime metrics, e.g. GC counts, move between two collections).
    def steady(text: bytes) -> list[bytes]:
        return [line for line in text.splitlines() if b"python_gc" not in line and b"process_" not in line]

    assert steady(body) == steady(pipeline.render()[0]) == steady(render(Renderer(), data))


def test_stock_oracle_also_keeps_pnl_count_and_sum():
    from tinywindow_otel import trade_pnl_usd

    for pnl in (-50.0, 20.0, -7.5):
        trade_pnl_usd.observe(pnl)
    families = parse(stock([collect()]).decode())
    samples = {s.name: s.value for s in families["tinywindow_trade_pnl_usd"].samples if not s.name.endswith("_bucket")}
    assert samples == {"tinywindow_trade_pnl_usd_count": 3.0, "tinywindow_trade_pnl_usd_sum": -37.5}
