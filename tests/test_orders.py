"""order(): the lifecycle of an order on /metrics (real scrape), OTLP, bad input, sync and async."""

from __future__ import annotations

import asyncio
import math
import threading

import pytest
from helpers import sample_value

from tinywindow_otel.testing import reset
from tinywindow_otel.catalog import BY_NAME, EXECUTION_METRICS, SLIPPAGE_BUCKETS
from tinywindow_otel.metrics import REGISTRY
from tinywindow_otel.orders import CLOSING_STATUSES, Order, order, slippage_bps

ORDERS = "tinywindow_orders_total"


def value(name, **labels):
    metric = REGISTRY.get(name)
    for series in metric.series():
        if series.attributes == labels:
            return series.get() if hasattr(series, "get") else series.snapshot()
    return None


def hist(name, **labels):
    """(count, sum) of one histogram series, or None."""
    snap = value(name, **labels)
    return None if snap is None else (sum(snap[0]), snap[1])


def test_full_lifecycle_appears_on_metrics_with_catalog_names(scrape_metrics):
    with order("binance", "buy", 1.0, reference_price=100.0) as o:
        o.acknowledged()
        o.filled(0.25, 100.0)
        o.filled(0.75, 100.2)
    assert o.status == "filled"
    with order("binance", "sell", 1.0) as rejected:
        rejected.rejected("min_notional")
    families = scrape_metrics()
    for spec in EXECUTION_METRICS:
        assert spec.exposed_name in families, spec.exposed_name
    assert sample_value(families, ORDERS, venue="binance", status="submitted") == 2.0
    assert sample_value(families, ORDERS, venue="binance", status="acknowledged") == 1.0
    assert sample_value(families, ORDERS, venue="binance", status="filled") == 1.0
    assert sample_value(families, "tinywindow_order_latency_seconds_count", venue="binance", stage="ack") == 1.0
    assert sample_value(families, "tinywindow_order_latency_seconds_count", venue="binance", stage="fill") == 1.0
    assert sample_value(families, "tinywindow_order_fill_ratio_sum", venue="binance") == 1.0
    # VWAP 100.15 vs 100.0 on a buy: 15 bps worse.
    assert sample_value(families, "tinywindow_slippage_bps_sum", venue="binance", side="buy") == pytest.approx(15.0)
    assert sample_value(families, "tinywindow_last_order_fill_timestamp_seconds", venue="binance") > 1.6e9


def test_negative_slippage_is_kept_with_count_and_sum(scrape_metrics):
    with order("kraken", "sell", 2.0, reference_price=100.0) as o:
        o.filled(2.0, 100.5)  # sold higher than the reference: price improvement
    families = scrape_metrics()
    assert sample_value(families, "tinywindow_slippage_bps_sum", venue="kraken", side="sell") == pytest.approx(-50.0)
    assert sample_value(families, "tinywindow_slippage_bps_count", venue="kraken", side="sell") == 1.0
    # -50 falls in the le="-50" bucket and every later one, not in le="-100".
    assert sample_value(families, "tinywindow_slippage_bps_bucket", venue="kraken", side="sell", le="-50.0") == 1.0
    assert sample_value(families, "tinywindow_slippage_bps_bucket", venue="kraken", side="sell", le="-100.0") == 0.0
    assert BY_NAME["tinywindow_slippage_bps"].buckets == SLIPPAGE_BUCKETS


def test_slippage_sign_by_side():
    assert slippage_bps("buy", 100.0, 101.0) == pytest.approx(100.0)
    assert slippage_bps("sell", 100.0, 101.0) == pytest.approx(-100.0)
    assert slippage_bps("sell", 100.0, 99.0) == pytest.approx(100.0)


def test_cancel_after_partial_fill_is_partially_filled_with_cancel_latency():
    o = Order("binance", "buy", 4.0, 10.0).submit()
    o.filled(1.0, 10.0)
    o.cancel_requested()
    o.cancelled()
    assert o.status == "partially_filled"
    assert value(ORDERS, venue="binance", status="partially_filled") == 1.0
    assert value(ORDERS, venue="binance", status="cancelled") is None
    assert hist("tinywindow_order_latency_seconds", venue="binance", stage="cancel")[0] == 1
    assert hist("tinywindow_order_fill_ratio", venue="binance") == (1, 0.25)


def test_exactly_one_closing_status_per_order_even_with_late_reports():
    o = Order("binance", "buy", 1.0).submit()
    o.filled(1.0, 5.0)
    o.cancelled()
    o.rejected("late")
    o.expired()
    o.filled(1.0, 5.0)
    o.close()
    closing = sum(value(ORDERS, venue="binance", status=s) or 0 for s in CLOSING_STATUSES)
    assert closing == 1.0
    assert value("tinywindow_order_rejections_total", venue="binance", reason="late") in (None, 0.0)


def test_rejection_by_reason_and_not_in_fill_ratio():
    with order("binance", "buy", 1.0) as o:
        o.rejected("insufficient_funds")
    assert value(ORDERS, venue="binance", status="rejected") == 1.0
    assert value("tinywindow_order_rejections_total", venue="binance", reason="insufficient_funds") == 1.0
    assert hist("tinywindow_order_fill_ratio", venue="binance") is None


def test_exception_before_ack_is_a_rejection_named_after_it_and_propagates():
    class InsufficientFunds(Exception):
        pass

    with pytest.raises(InsufficientFunds):
        with order("binance", "buy", 1.0):
            raise InsufficientFunds("no money")
    assert value("tinywindow_order_rejections_total", venue="binance", reason="InsufficientFunds") == 1.0


def test_block_ending_acknowledged_but_unfilled_is_expired():
    with order("binance", "buy", 1.0) as o:
        o.acknowledged()
    assert o.status == "expired"
    assert hist("tinywindow_order_fill_ratio", venue="binance") == (1, 0.0)


def test_async_decorator_reads_a_ccxt_order_structure():
    @order("bybit", "buy", 2.0, reference_price=50.0)
    async def place():
        await asyncio.sleep(0)
        return {"id": "1", "status": "closed", "filled": 2.0, "average": 50.05, "amount": 2.0}

    assert asyncio.run(place())["id"] == "1"
    assert value(ORDERS, venue="bybit", status="filled") == 1.0
    assert value(ORDERS, venue="bybit", status="acknowledged") == 1.0
    assert hist("tinywindow_slippage_bps", venue="bybit", side="buy")[1] == pytest.approx(10.0)


def test_async_context_manager():
    async def main():
        async with order("okx", "sell", 1.0, 20.0) as o:
            o.acknowledged()
            o.filled(1.0, 19.9)
        return o

    assert asyncio.run(main()).status == "filled"
    assert hist("tinywindow_slippage_bps", venue="okx", side="sell")[1] == pytest.approx(50.0)


def test_update_is_idempotent_and_maps_ccxt_statuses():
    o = Order("binance", "buy", 2.0, 100.0).submit()
    partial = {"status": "open", "filled": 1.0, "average": 100.0}
    o.update(partial)
    o.update(partial)
    assert o.filled_quantity == 1.0 and not o.closed
    o.update({"status": "canceled", "filled": 1.0, "average": 100.0})
    assert o.status == "partially_filled"
    expired = Order("binance", "buy", 2.0).submit()
    expired.update({"status": "expired", "filled": 0.0, "average": None})
    assert expired.status == "expired"


@pytest.mark.parametrize("args, match", [
    (("binance", "long", 1.0), "tinywindow_slippage_bps: side"),
    (("binance", "buy", 0.0), "tinywindow_orders_total: quantity"),
    (("binance", "buy", -1.0), "tinywindow_orders_total: quantity"),
    (("binance", "buy", math.nan), "tinywindow_orders_total: quantity"),
    (("binance", "buy", 1.0, -5.0), "tinywindow_slippage_bps: reference_price"),
])
def test_bad_arguments_raise_naming_the_metric(args, match):
    with pytest.raises(ValueError, match=match):
        order(*args)
    assert not value(ORDERS, venue="binance", status="submitted")  # nothing counted


def test_bad_types_raise_naming_the_metric():
    with pytest.raises(TypeError, match="tinywindow_orders_total"):
        order("binance", "buy", "1")
    with pytest.raises(TypeError, match="tinywindow_orders_total"):
        order(None, "buy", 1.0)
    o = Order("binance", "buy", 1.0).submit()
    with pytest.raises(ValueError, match="tinywindow_orders_total"):
        o.filled(-1.0, 10.0)
    with pytest.raises(RuntimeError, match="not submitted"):
        Order("binance", "buy", 1.0).acknowledged()


def test_nan_fill_is_dropped_and_counted_and_the_order_stays_consistent():
    o = Order("binance", "buy", 1.0, 10.0).submit()
    o.filled(math.nan, 10.0)
    o.filled(1.0, math.inf)
    assert o.filled_quantity == 0.0
    dropped = REGISTRY.get("tinywindow_otel_dropped_measurements_total")
    assert dropped.labels(ORDERS, "nan").get() == 1.0
    assert dropped.labels(ORDERS, "inf").get() == 1.0
    o.filled(1.0, 10.0)
    assert o.status == "filled"


def test_venue_cap_folds_into_overflow():
    metric = REGISTRY.get(ORDERS)
    old = metric.max_series
    metric.set_max_series(4)
    try:
        for i in range(10):
            Order(f"venue{i}", "buy", 1.0).submit()
        assert len(metric.series()) <= 5
        overflow = metric.series()[-1]  # the overflow series is listed last
        assert overflow.label_values == ("__overflow__", "__overflow__") and overflow.get() > 0
    finally:
        metric.set_max_series(old)


def test_concurrent_fills_from_threads_close_once():
    o = Order("binance", "buy", 100.0, 1.0).submit()
    barrier = threading.Barrier(4)

    def fill():
        barrier.wait()
        for _ in range(50):
            o.filled(1.0, 1.0)

    threads = [threading.Thread(target=fill) for _ in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(10)
    assert o.status == "filled" and o.filled_quantity == 100.0
    assert value(ORDERS, venue="binance", status="filled") == 1.0


def test_otlp_and_metrics_agree_on_execution_metrics(tmp_path):
    from helpers import scrape
    from otlp_receiver import OTLPReceiver, metrics_of, point

    import tinywindow_otel as tw
    from tinywindow_otel import MetricsServer, pipeline
    from tinywindow_otel.testing import reset

    with OTLPReceiver() as receiver:
        try:
            tw.configure(endpoint=receiver.endpoint, exporters="prometheus,otlp", export_interval_millis=600_000)
            p = pipeline.get_pipeline()
            with order("binance", "sell", 1.0, 100.0) as o:
                o.filled(1.0, 99.5)
            assert p.force_flush()
            _, request = receiver.wait_for(lambda reqs: reqs[-1] if reqs else None)
            metrics = metrics_of(request)
            slip = point(metrics["tinywindow_slippage_bps"], venue="binance", side="sell")
            assert slip.sum == pytest.approx(50.0) and slip.count == 1
            filled = point(metrics[ORDERS], venue="binance", status="filled")
            with MetricsServer(port=0) as server:
                families = scrape(server.url)
            assert sample_value(families, ORDERS, venue="binance", status="filled") == filled.as_double
        finally:
            reset()  # tinywindow_otel.testing: the next test starts from the environment's settings
