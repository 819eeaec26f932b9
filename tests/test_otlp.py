"""OTLP push against a real in-process OTLP/HTTP receiver: same data as /metrics, delta, lifecycle, fork."""

from __future__ import annotations

import math
import os
import subprocess
import sys
import textwrap
import time

import pytest
from helpers import fork_child, free_port, reap_child, scrape, wait_until
from otlp_receiver import (
    Blackhole,
    OTLPReceiver,
    as_prometheus_samples,
    export_threads,
    metrics_of,
    point,
    resource_of,
    reset_after_pushes,
    scrape_as_samples,
)

import tinywindow_otel as tw
from tinywindow_otel import MetricsServer, pipeline
from tinywindow_otel.catalog import PNL_BUCKETS
from tinywindow_otel.exporters import api_exporter, portfolio_exporter, safety_exporter, trading_exporter

PNL = "tinywindow_trade_pnl_usd"


@pytest.fixture(autouse=True)
def restore_pipeline():
    yield
    reset_after_pushes()


@pytest.fixture
def receiver():
    with OTLPReceiver() as running:
        yield running


def push_to(receiver, **kw):
    """Configure OTLP to ``receiver`` (no periodic export unless asked) and start the pipeline."""
    kw.setdefault("exporters", "prometheus,otlp")
    kw.setdefault("export_interval_millis", 600_000)
    kw.setdefault("runtime_metrics", False)  # process_*/python_gc_* move between a push and a scrape
    tw.configure(endpoint=receiver.endpoint, **kw)
    return pipeline.get_pipeline()


def record_session():
    """A small trading session through the public exporters, losses included."""
    for pnl, amount in ((-200.0, 1500.0), (-50.5, 800.0), (120.0, 12_000.0)):
        trading_exporter.record_trade("BTC/USDT", "filled", pnl=pnl, amount_usd=amount)
    trading_exporter.record_trade("ETH/USDT", "rejected")
    api_exporter.record_request("claude", 0.42, True)
    api_exporter.record_request("binance", 6.0, False, error_type="Timeout")
    portfolio_exporter.update_portfolio(50_000.0, -130.5, {"BTC/USDT": 0.5, "ETH/USDT": -2.0}, leverage=3.0)
    safety_exporter.record_circuit_breaker_trip("daily_loss")


def test_otlp_carries_names_attributes_values_buckets_and_negative_pnl(receiver):
    p = push_to(receiver, service_name="trader", resource_attributes={"deployment.environment": "test"},
                headers={"x-tenant": "desk-1"})
    record_session()
    assert p.force_flush()
    headers, request = receiver.wait_for(lambda reqs: reqs[-1] if reqs else None)
    assert headers["x-tenant"] == "desk-1"
    assert headers["content-type"] == "application/x-protobuf"

    resource = resource_of(request)
    assert resource["service.name"] == "trader"
    assert resource["deployment.environment"] == "test"
    assert resource["process.pid"] == os.getpid()
    assert resource["service.instance.id"]
    scopes = [sm.scope.name for rm in request.resource_metrics for sm in rm.scope_metrics]
    assert scopes == ["tinywindow_otel"]

    metrics = metrics_of(request)
    trades = metrics["tinywindow_trades_total"]
    assert trades.sum.is_monotonic and trades.sum.aggregation_temporality == 2  # CUMULATIVE
    assert point(trades, status="filled", symbol="BTC/USDT").as_double == 3
    assert point(trades, status="rejected", symbol="ETH/USDT").as_double == 1
    assert point(metrics["tinywindow_circuit_breaker_trips"], reason="daily_loss").as_double == 1
    assert point(metrics["tinywindow_api_errors_total"], service="binance", type="Timeout").as_double == 1
    assert point(metrics["tinywindow_active_positions"], symbol="ETH/USDT").as_double == -2.0
    assert point(metrics["tinywindow_unrealized_pnl_usd"]).as_double == -130.5
    assert point(metrics["tinywindow_win_rate"]).as_double == pytest.approx(100 / 3)

    pnl = metrics[PNL]
    assert pnl.histogram.aggregation_temporality == 2
    p_pnl = point(pnl)
    assert p_pnl.count == 3
    assert p_pnl.sum == pytest.approx(-130.5)  # the net realised P&L: losses were kept
    assert (p_pnl.min, p_pnl.max) == (-200.0, 120.0)
    assert list(p_pnl.explicit_bounds) == list(PNL_BUCKETS)
    expected = [0] * (len(PNL_BUCKETS) + 1)
    for value in (-200.0, -50.5, 120.0):
        expected[next(i for i, b in enumerate([*PNL_BUCKETS, math.inf]) if value <= b)] += 1
    assert list(p_pnl.bucket_counts) == expected
    latency = point(metrics["tinywindow_api_latency_seconds"], service="binance")
    assert latency.count == 1 and latency.sum == 6.0 and 5.0 in latency.explicit_bounds
    amount = point(metrics["tinywindow_trade_amount_usd"], symbol="BTC/USDT")
    assert amount.bucket_counts[list(amount.explicit_bounds).index(10000.0) + 1] == 1  # 12000 is above 10K


def test_otlp_equals_what_metrics_shows(receiver):
    p = push_to(receiver)
    record_session()
    tw.trade_pnl_usd.observe(-99_999.0)  # below the lowest bucket
    with MetricsServer(port=0) as server:
        families = scrape(server.url)
        assert p.force_flush()
    _, request = receiver.wait_for(lambda reqs: reqs[-1] if reqs else None)
    otlp = as_prometheus_samples(request)
    shown = scrape_as_samples(families)
    assert otlp[(PNL + "_sum", frozenset())] == pytest.approx(-130.5 - 99_999.0)
    assert otlp[(PNL + "_count", frozenset())] == 4
    # Every sample, the P&L histogram's _count and _sum included (ADR 2).
    assert otlp == shown
    assert len(otlp) > 60  # every family of the session, not a vacuous match


def test_metrics_shows_pnl_sum_and_count():
    with MetricsServer(port=0) as server:
        tw.trade_pnl_usd.observe(-200.0)
        tw.trade_pnl_usd.observe(50.0)
        samples = scrape_as_samples(scrape(server.url))
    assert samples[(PNL + "_sum", frozenset())] == -150.0
    assert samples[(PNL + "_count", frozenset())] == 2


def test_delta_temporality_reports_increments_per_reader(receiver):
    p = push_to(receiver, temporality="delta")
    trades = tw.trades_total.labels("filled", "BTC/USDT")
    trades.inc(3)
    for v in (-200.0, 100.0):
        tw.trade_pnl_usd.observe(v)
    assert p.force_flush()
    trades.inc(2)
    tw.trade_pnl_usd.observe(-50.0)
    assert p.force_flush()
    assert p.force_flush()  # nothing new
    reqs = receiver.wait_for(lambda r: r if len(r) >= 3 else None)
    first, second, third = (metrics_of(r) for _, r in reqs[-3:])

    assert first[PNL].histogram.aggregation_temporality == 1  # DELTA
    p1, p2, p3 = (point(m[PNL]) for m in (first, second, third))
    assert (p1.count, p1.sum, p1.min, p1.max) == (2, -100.0, -200.0, 100.0)
    assert (p2.count, p2.sum) == (1, -50.0)
    assert p2.bucket_counts[PNL_BUCKETS.index(-50.0)] == 1 and sum(p2.bucket_counts) == 1
    # The interval's min/max are not derivable from cumulative state: left unset, never wrong.
    assert not p2.HasField("min") and not p2.HasField("max")
    assert p2.start_time_unix_nano == p1.time_unix_nano
    assert (p3.count, p3.sum) == (0, 0.0)

    t1, t2, t3 = (point(m["tinywindow_trades_total"], status="filled", symbol="BTC/USDT") for m in (first, second, third))
    assert first["tinywindow_trades_total"].sum.aggregation_temporality == 1
    assert (t1.as_double, t2.as_double, t3.as_double) == (3, 2, 0)

    # /metrics is another reader: still cumulative, unaffected by the OTLP deltas.
    with MetricsServer(port=0) as server:
        families = scrape(server.url)
    shown = scrape_as_samples(families)
    assert shown[(PNL + "_bucket", frozenset({"le": math.inf}.items()))] == 3
    assert shown[("tinywindow_trades_total", frozenset({"status": "filled", "symbol": "BTC/USDT"}.items()))] == 5


def test_exporters_none_disables_metrics_and_push(receiver):
    from helpers import fetch

    tw.configure(exporters="none", endpoint=receiver.endpoint)
    p = pipeline.get_pipeline()
    assert p.otlp_reader is None and p.scrape_reader is None
    with MetricsServer(port=0) as server:
        with pytest.raises(Exception, match="503"):
            fetch(server.url)


# --- lifecycle ---------------------------------------------------------------------


def test_shutdown_with_collector_down_is_bounded(receiver):
    """Closed port: the final export fails and retries; shutdown returns at its bound."""
    tw.configure(exporters="otlp", endpoint=f"http://127.0.0.1:{free_port()}",
                 export_interval_millis=600_000, shutdown_timeout_millis=1000)
    pipeline.get_pipeline()
    tw.trade_pnl_usd.observe(-1.0)
    start = time.monotonic()
    tw.shutdown()
    elapsed = time.monotonic() - start
    print(f"shutdown with a closed port (bound 1000 ms): {elapsed * 1000:.0f} ms")
    assert elapsed < 1.5


def test_shutdown_with_hung_collector_is_bounded_by_default():
    """A collector that accepts and never answers, with the default 5 s bound and 10 s export timeout."""
    hole = Blackhole()
    try:
        tw.configure(exporters="otlp", endpoint=hole.endpoint, export_interval_millis=600_000)
        pipeline.get_pipeline()
        tw.trades_total.labels("filled", "BTC/USDT").inc()
        start = time.monotonic()
        tw.shutdown()
        elapsed = time.monotonic() - start
        print(f"shutdown with a hung collector (default bound 5000 ms): {elapsed * 1000:.0f} ms")
        assert hole.connected.is_set()  # the final export really was attempted
        assert 4.5 < elapsed < 5.5
    finally:
        hole.close()


def test_recording_never_blocks_or_touches_otel_while_an_export_hangs():
    hole = Blackhole()
    try:
        tw.configure(exporters="prometheus,otlp", endpoint=hole.endpoint, export_interval_millis=100,
                     timeout_millis=30_000, shutdown_timeout_millis=500)
        pipeline.get_pipeline()
        series = tw.trades_total.labels("filled", "BTC/USDT")
        series.inc()
        assert hole.connected.wait(10), "the exporter never reached the hung collector"

        otel_calls = []

        def profiler(frame, event, arg):
            if event == "call" and "opentelemetry" in frame.f_code.co_filename:
                otel_calls.append(frame.f_code.co_filename)

        sys.setprofile(profiler)  # this thread only: the recording thread
        start = time.monotonic()
        try:
            for i in range(20_000):
                series.inc()
                tw.trade_pnl_usd.observe(-float(i % 300))
                tw.active_positions.labels(symbol="BTC/USDT").set(i)
                tw.trades_total.labels("filled", f"SYM{i % 50}").inc()
        finally:
            sys.setprofile(None)
        elapsed = time.monotonic() - start
        assert otel_calls == []  # the hot path never enters OpenTelemetry
        assert elapsed < 5.0, f"80k recordings took {elapsed:.2f}s while an export hung"
        # And /metrics (its own reader) answers meanwhile, with the new values.
        with MetricsServer(port=0) as server:
            families = scrape(server.url)
        assert any(s.name == "tinywindow_trades_total" and s.value == 20_001
                   and s.labels == {"status": "filled", "symbol": "BTC/USDT"}
                   for s in families["tinywindow_trades_total"].samples)
        start = time.monotonic()
        tw.shutdown()
        assert time.monotonic() - start < 1.0
    finally:
        hole.close()


def _run(code: str, env_extra: dict, timeout: float = 30) -> tuple[subprocess.CompletedProcess, float]:
    env = {**os.environ, **env_extra}
    start = time.monotonic()
    proc = subprocess.run([sys.executable, "-c", textwrap.dedent(code)], env=env, capture_output=True,
                          text=True, timeout=timeout)
    return proc, time.monotonic() - start


def test_env_only_configuration_flushes_at_exit(receiver):
    proc, _ = _run("""
        from tinywindow_otel.exporters import trading_exporter
        trading_exporter.record_trade("BTC/USDT", "filled", pnl=-75.0, amount_usd=100.0)
    """, {"OTEL_METRICS_EXPORTER": "otlp", "OTEL_EXPORTER_OTLP_ENDPOINT": receiver.endpoint,
          "OTEL_SERVICE_NAME": "env-trader", "OTEL_METRIC_EXPORT_INTERVAL": "600000"})
    assert proc.returncode == 0, proc.stderr
    _, request = receiver.wait_for(lambda reqs: reqs[-1] if reqs else None)
    assert resource_of(request)["service.name"] == "env-trader"
    pnl = point(metrics_of(request)[PNL])
    assert (pnl.count, pnl.sum) == (1, -75.0)


def test_exit_with_collector_down_is_bounded_by_the_env_setting():
    code = """
        import tinywindow_otel as tw
        tw.trades_total.labels("filled", "BTC/USDT").inc()
    """
    env = {"OTEL_METRICS_EXPORTER": "otlp", "OTEL_EXPORTER_OTLP_ENDPOINT": f"http://127.0.0.1:{free_port()}",
           "OTEL_METRIC_EXPORT_INTERVAL": "600000"}
    baseline, base_s = _run(code, {**env, "TINYWINDOW_OTEL_SHUTDOWN_TIMEOUT": "100"})
    bounded, bounded_s = _run(code, {**env, "TINYWINDOW_OTEL_SHUTDOWN_TIMEOUT": "1500"})
    assert baseline.returncode == 0 and bounded.returncode == 0, bounded.stderr
    print(f"process exit with collector down: bound 100 ms -> {base_s:.2f}s, bound 1500 ms -> {bounded_s:.2f}s")
    assert bounded_s - base_s < 1.5 + 0.5


# --- fork ------------------------------------------------------------------------------


@pytest.mark.skipif(not hasattr(os, "fork"), reason="needs os.fork")
def test_fork_child_reports_only_its_own_recordings(receiver):
    p = push_to(receiver, shutdown_timeout_millis=3000)
    tw.trades_total.labels("filled", "BTC/USDT").inc(5)
    tw.trade_pnl_usd.observe(-300.0)
    tw.portfolio_value_usd.set(50_000.0)
    assert p.force_flush()
    parent_request = receiver.wait_for(lambda reqs: reqs[-1][1] if reqs else None)
    parent_id = resource_of(parent_request)["service.instance.id"]

    def in_child() -> None:  # record, flush through its own pipeline (exit 0), or raise (exit 3)
        child = pipeline.get_pipeline()
        assert child is not p and child.pid == os.getpid()
        tw.trades_total.labels("filled", "BTC/USDT").inc(2)
        tw.trade_pnl_usd.observe(-40.0)
        assert tw.shutdown()

    pid = fork_child(in_child)
    assert reap_child(pid, 20) == 0

    child_requests = receiver.wait_for(
        lambda reqs: [r for _, r in reqs if resource_of(r)["process.pid"] == pid] or None)
    request = child_requests[-1]
    resource = resource_of(request)
    assert resource["service.instance.id"] != parent_id
    metrics = metrics_of(request)
    assert point(metrics["tinywindow_trades_total"], status="filled", symbol="BTC/USDT").as_double == 2
    pnl = point(metrics[PNL])
    assert (pnl.count, pnl.sum, pnl.min, pnl.max) == (1, -40.0, -40.0, -40.0)
    assert "tinywindow_portfolio_value_usd" not in metrics  # not the parent's 50000: no value, no sample
    assert pnl.start_time_unix_nano > point(metrics_of(parent_request)[PNL]).time_unix_nano

    # The parent is untouched: its totals and its pipeline carry on.
    assert p.force_flush()
    latest = receiver.wait_for(lambda reqs: [r for _, r in reqs if resource_of(r)["process.pid"] == os.getpid()][-1])
    assert resource_of(latest)["service.instance.id"] == parent_id
    assert point(metrics_of(latest)["tinywindow_trades_total"], status="filled", symbol="BTC/USDT").as_double == 5
    assert point(metrics_of(latest)[PNL]).sum == -300.0


@pytest.mark.skipif(not hasattr(os, "fork"), reason="needs os.fork")
def test_a_forked_child_has_exactly_one_export_thread(receiver):
    """The SDK restarts the parent reader's export thread in a child; the at-fork handler stops that
    one, so only the child's own pipeline exports from the child (no ghost thread)."""
    p = push_to(receiver)
    assert len(export_threads()) == 1
    def in_child() -> None:
        child = pipeline.get_pipeline()
        wait_until(lambda: len(export_threads()) == 1, timeout=10, interval=0.01,
                   what="the parent's export thread to stop in the child")
        tw.trades_total.labels("filled", "FORK/USDT").inc()
        assert child is not p and child.force_flush(5_000) and len(export_threads()) == 1

    pid = fork_child(in_child)
    assert reap_child(pid, 30) == 0, "a ghost export thread in the child, or its flush failed"
    assert len(export_threads()) == 1  # the parent's own, untouched
