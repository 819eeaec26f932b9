"""Regression guards for the hot path and the scrape cache; none of them is timed.

The numbers live in ``python -m benchmarks``; these tests pin the structural
reasons the numbers are good, so a refactor that loses them fails here on
any machine.
"""

from __future__ import annotations

import gc
import sys
import tracemalloc
from pathlib import Path

from tinywindow_otel import metrics as metrics_module
from tinywindow_otel.metrics import REGISTRY
from tinywindow_otel.pipeline import get_pipeline

CALLS = 5000


def test_labels_returns_the_cached_child_by_name_and_by_position():
    trades = REGISTRY.by_attr("trades_total")
    child = trades.labels(status="filled", symbol="BTC/USDT")
    assert trades.labels(status="filled", symbol="BTC/USDT") is child
    assert trades.labels(symbol="BTC/USDT", status="filled") is child
    assert trades.labels("filled", "BTC/USDT") is child
    assert len(trades.series()) == 1


def _hot_path_calls() -> None:
    trades = REGISTRY.by_attr("trades_total")
    latency = REGISTRY.by_attr("api_latency_seconds")
    value = REGISTRY.by_attr("portfolio_value_usd")
    bound = trades.labels("filled", "BTC/USDT")
    for i in range(CALLS):
        trades.labels(status="filled", symbol="BTC/USDT").inc()
        bound.inc(2)
        latency.labels(service="claude").observe(0.25)
        value.set(50_000.0 + i)


def test_hot_path_keeps_no_memory_after_warm_up():
    _hot_path_calls()  # warm-up: creates the series (and the pipeline)
    gc.collect()
    tracemalloc.start()
    try:
        before = tracemalloc.take_snapshot()
        blocks = sys.getallocatedblocks()
        _hot_path_calls()
        gc.collect()
        grown_blocks = sys.getallocatedblocks() - blocks
        after = tracemalloc.take_snapshot()
    finally:
        tracemalloc.stop()
    metrics_file = str(Path(metrics_module.__file__))
    growth = [
        stat for stat in after.compare_to(before, "lineno")
        if stat.traceback[0].filename == metrics_file and stat.size_diff > 0
    ]
    # No attribute dict, tuple or child kept per call (4 * CALLS calls above);
    # a handful of blocks is a value itself (a bucket count past the small-int cache).
    assert sum(stat.count_diff for stat in growth) < 10, growth
    assert grown_blocks < CALLS // 10, grown_blocks
    assert REGISTRY.by_attr("trades_total").labels("filled", "BTC/USDT").get() == 3 * 2 * CALLS


def test_scrape_cache_lives_with_the_series_and_goes_with_it():
    pipeline = get_pipeline()
    positions = REGISTRY.by_attr("active_positions")
    latency = REGISTRY.by_attr("api_latency_seconds")
    pipeline.render()
    gc.collect()
    tracemalloc.start()
    try:
        before = tracemalloc.get_traced_memory()[0]
        for round_ in range(3):
            for i in range(300):
                positions.labels(symbol=f"SYM{round_}-{i}").set(i)
                latency.labels(service=f"svc{round_}-{i}").observe(0.1)
            pipeline.render()
            assert all(s.attributes.line for s in positions.series())  # cached on the series itself
            positions.clear()
            latency.clear()
        body, _ = pipeline.render()
        gc.collect()
        grown = tracemalloc.get_traced_memory()[0] - before
    finally:
        tracemalloc.stop()
    assert b"SYM0" not in body
    # 1800 series created and removed; what stays is not per series (< 20 B each).
    assert grown < 1800 * 20, grown


def test_repeated_scrapes_reuse_cached_line_text():
    latency = REGISTRY.by_attr("api_latency_seconds")
    series = latency.labels(service="claude")
    series.observe(0.3)
    pipeline = get_pipeline()
    pipeline.render()
    template = series.attributes.line[3]
    series.observe(0.7)
    body, _ = pipeline.render()
    assert series.attributes.line[3] is template  # not rebuilt for a series that only changed value
    assert b'tinywindow_api_latency_seconds_count{service="claude"} 2.0' in body


def _python_calls(func) -> list[str]:
    """The Python functions ``func()`` calls (by name), from a profile hook: what a call costs in frames."""
    called: list[str] = []

    def hook(frame, event, arg):
        if event == "call":
            name = frame.f_code.co_name
            if name == "labels" and frame.f_locals.get("kwargs"):
                name = "labels(**kwargs)"
            called.append(name)

    sys.setprofile(hook)
    try:
        func()
    finally:
        sys.setprofile(None)
    return called[1:]  # func itself


def test_a_decorated_trade_takes_the_fast_paths():
    """``trade()`` around a function returning None or a status: no ABC isinstance check, no
    ``check_trade()`` call, no keyword ``labels()`` (each cost about as much as the rest of the trade)."""
    from tinywindow_otel.decorators import trade
    from tinywindow_otel.exporters import TradingExporter
    from tinywindow_otel.metrics import MetricRegistry

    registry = MetricRegistry()
    recorder = TradingExporter(registry)
    for result in (None, "filled", "rejected"):
        placed = trade("BTC/USDT", exporter=recorder)(lambda result=result: result)
        placed()  # warm-up: series created, methods bound
        called = _python_calls(placed)
        assert "__instancecheck__" not in called, called
        assert "check_trade" not in called, called
        assert called.count("labels") == 1 and "labels(**kwargs)" not in called, called
    assert registry.counter("trades_total").labels("rejected", "BTC/USDT").get() == 2
