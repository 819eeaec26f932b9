"""The per-metric series cap (metrics.py): configurable, folds into __overflow__, memory stays flat."""

from __future__ import annotations

import gc
import sys
import time
import tracemalloc

import pytest
from helpers import sample_value

from tinywindow_otel.catalog import BY_NAME, MAX_SYMBOLS
from tinywindow_otel.metrics import OVERFLOW_LABEL_VALUE, REGISTRY

POSITIONS = REGISTRY.by_attr("active_positions")
OVERFLOWS = REGISTRY.get("tinywindow_otel_cardinality_overflow_total")


@pytest.fixture(autouse=True)
def restore_limits():
    saved = {metric.name: metric.max_series for metric in REGISTRY}
    yield
    REGISTRY.set_limits(saved)


def test_catalog_defaults_cap_symbols_at_500():
    for name in ("tinywindow_active_positions", "tinywindow_trade_amount_usd"):
        assert BY_NAME[name].max_series == MAX_SYMBOLS == 500
        assert REGISTRY.get(name).max_series == 500
    assert REGISTRY.by_attr("trades_total").max_series == 5 * MAX_SYMBOLS  # one per trade status and symbol


def test_beyond_the_cap_new_label_sets_fold_into_one_overflow_series(scrape_metrics):
    POSITIONS.set_max_series(3)
    for i in range(10):
        POSITIONS.labels(f"S{i}").set(i)
    series = POSITIONS.series()
    assert [s.label_values[0] for s in series] == ["S0", "S1", "S2", OVERFLOW_LABEL_VALUE]
    assert OVERFLOWS.labels(POSITIONS.name).get() == 7
    # Existing series keep working after the cap is reached.
    POSITIONS.labels("S1").set(42)
    families = scrape_metrics()
    assert sample_value(families, POSITIONS.name, symbol="S1") == 42
    assert sample_value(families, POSITIONS.name, symbol=OVERFLOW_LABEL_VALUE) == 9  # the last value set
    assert sample_value(families, "tinywindow_otel_cardinality_overflow_total", metric=POSITIONS.name) == 7
    # Removing a series frees a slot.
    POSITIONS.remove("S0")
    POSITIONS.labels("fresh").set(1)
    assert sample_value(scrape_metrics(), POSITIONS.name, symbol="fresh") == 1


def test_counter_overflow_keeps_the_total(scrape_metrics):
    trades = REGISTRY.by_attr("trades_total")
    trades.set_max_series(2)
    for i in range(100):
        trades.labels("filled", f"S{i}").inc()
    families = scrape_metrics()
    total = sum(s.value for f in families.values() for s in f.samples if s.name == "tinywindow_trades_total")
    assert total == 100, "folding must not lose a single increment"


def test_set_limits_by_name_or_python_name_and_rejects_bad_input():
    REGISTRY.set_limits({"active_positions": 7, "tinywindow_trades_total": 9})
    assert POSITIONS.max_series == 7 and REGISTRY.by_attr("trades_total").max_series == 9
    with pytest.raises(ValueError, match="unknown metric 'nope'"):
        REGISTRY.set_limits({"active_positions": 1, "nope": 5})
    assert POSITIONS.max_series == 7, "a rejected mapping changes nothing"
    for bad in (0, -1, 1.5, True, "10"):
        with pytest.raises(ValueError, match="tinywindow_active_positions: max_series"):
            POSITIONS.set_max_series(bad)


def test_memory_stays_flat_over_one_million_distinct_label_values():
    """1M distinct symbols at a cap of 500: allocated memory must not grow with the count.

    Two independent measures: the interpreter's allocated-block count across the
    whole million, and tracemalloc over the last 200k (tracing the whole run would
    take minutes). A leak of even one small object per value shows in both.
    """
    total, traced = 1_000_000, 200_000
    labels = POSITIONS.labels
    started = time.monotonic()
    for i in range(10_000):  # fill the cap and create the overflow series
        labels(f"S{i}").set(i)
    gc.collect()
    blocks_before = sys.getallocatedblocks()
    for i in range(10_000, total - traced):
        labels(f"S{i}").set(i)
    tracemalloc.start()
    try:
        gc.collect()
        traced_before = tracemalloc.get_traced_memory()[0]
        for i in range(total - traced, total):
            labels(f"S{i}").set(i)
        gc.collect()
        traced_growth = tracemalloc.get_traced_memory()[0] - traced_before
    finally:
        tracemalloc.stop()
    gc.collect()
    block_growth = sys.getallocatedblocks() - blocks_before
    elapsed = time.monotonic() - started

    assert len(POSITIONS.series()) == POSITIONS.max_series + 1
    assert OVERFLOWS.labels(POSITIONS.name).get() == total - POSITIONS.max_series
    assert traced_growth < 64 * 1024, f"{traced_growth} bytes retained over {traced} new label values"
    assert block_growth < 10_000, f"{block_growth} blocks retained over {total} label values"
    print(f"\n1M distinct label values: {elapsed:.1f}s, traced growth {traced_growth} B, block growth {block_growth}")
