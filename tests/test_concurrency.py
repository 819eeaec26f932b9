"""Concurrent writers and scrapers (metrics.py, pipeline.py, server.py): nothing lost, nothing torn."""

from __future__ import annotations

import threading
import time

from helpers import fetch, parse, sample_value

from tinywindow_otel.metrics import REGISTRY

THREADS = 8
INCREMENTS = 100_000  # per thread: enough for any lost update to show


def test_eight_threads_lose_no_increment_and_scrapes_stay_consistent(server):
    trades = REGISTRY.by_attr("trades_total")
    latency = REGISTRY.by_attr("api_latency_seconds")
    shared = trades.labels("filled", "BTC/USDT")
    hist = latency.labels("binance")
    start = threading.Barrier(THREADS + 1)
    errors: list[BaseException] = []

    def writer(n: int) -> None:
        try:
            start.wait()
            # Half the threads use the cached child, half look the series up each time.
            if n % 2:
                for _ in range(INCREMENTS):
                    shared.inc()
                    hist.observe(0.2)
            else:
                for _ in range(INCREMENTS):
                    trades.labels(status="filled", symbol="BTC/USDT").inc()
                    latency.labels("binance").observe(0.2)
        except BaseException as exc:  # noqa: BLE001 - reported below
            errors.append(exc)

    threads = [threading.Thread(target=writer, args=(n,)) for n in range(THREADS)]
    for thread in threads:
        thread.start()
    started = time.monotonic()
    start.wait()

    # Scrape continuously while writing: every scrape must parse, counters must
    # never go backwards, and each histogram must be internally consistent.
    scrapes, last = 0, 0.0
    while any(t.is_alive() for t in threads) and time.monotonic() - started < 120:
        families = parse(fetch(server.url))
        value = sample_value(families, "tinywindow_trades_total", status="filled", symbol="BTC/USDT") or 0.0
        assert value >= last, "a counter went backwards between scrapes"
        last = value
        count = sample_value(families, "tinywindow_api_latency_seconds_count", service="binance")
        inf_bucket = sample_value(families, "tinywindow_api_latency_seconds_bucket", service="binance", le="+Inf")
        total = sample_value(families, "tinywindow_api_latency_seconds_sum", service="binance")
        if count is not None:
            assert count == inf_bucket
            assert abs(total - 0.2 * count) < 1e-6 * max(1.0, count), "sum and count torn apart"
        scrapes += 1
    for thread in threads:
        thread.join(timeout=120)
    elapsed = time.monotonic() - started
    assert not errors, errors

    families = parse(fetch(server.url))
    expected = THREADS * INCREMENTS
    assert sample_value(families, "tinywindow_trades_total", status="filled", symbol="BTC/USDT") == expected
    assert sample_value(families, "tinywindow_api_latency_seconds_count", service="binance") == expected
    assert sample_value(families, "tinywindow_api_latency_seconds_bucket", service="binance", le="0.25") == expected
    assert scrapes >= 2, "the scrapes did not overlap the writes"
    print(f"\n{THREADS}x{INCREMENTS} inc+observe in {elapsed:.1f}s with {scrapes} concurrent scrapes")


def test_concurrent_series_creation_yields_one_series_per_label_set(scrape_metrics):
    decisions = REGISTRY.by_attr("agent_decisions_total")
    start = threading.Barrier(THREADS)

    def writer() -> None:
        start.wait()
        for i in range(2_000):
            decisions.labels(action="buy", agent=f"agent-{i % 50}").inc()

    threads = [threading.Thread(target=writer) for _ in range(THREADS)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=60)
    assert len(decisions.series()) == 50
    families = scrape_metrics()
    for i in range(50):
        assert sample_value(families, "tinywindow_agent_decisions_total", action="buy", agent=f"agent-{i}") == THREADS * 40
