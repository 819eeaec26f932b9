"""Decorators under concurrency and hostile labels."""

from __future__ import annotations

import asyncio
import threading

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from helpers import parse, fetch, sample_value
from tinywindow_otel import api_call, trade
from tinywindow_otel.metrics import REGISTRY

TASKS = 200
CALLS_PER_TASK = 250


def test_asyncio_tasks_through_api_call_lose_nothing(server):
    failures = {"n": 0}

    @api_call("exchange")
    async def fetch_ticker(i: int) -> int:
        await asyncio.sleep(0)  # yield to the other tasks mid-call
        if i % 10 == 0:
            failures["n"] += 1
            raise TimeoutError("exchange timed out")
        return i

    async def worker() -> None:
        for i in range(CALLS_PER_TASK):
            try:
                await fetch_ticker(i)
            except TimeoutError:
                pass

    async def main() -> None:
        await asyncio.gather(*(worker() for _ in range(TASKS)))

    asyncio.run(main())
    families = parse(fetch(server.url))
    total = TASKS * CALLS_PER_TASK
    assert sample_value(families, "tinywindow_api_requests_total", service="exchange") == total
    assert sample_value(families, "tinywindow_api_latency_seconds_count", service="exchange") == total
    assert sample_value(families, "tinywindow_api_errors_total", service="exchange", type="TimeoutError") \
        == failures["n"] == total // 10


def test_threads_through_trade_context_manager_keep_exact_counts(server):
    threads, per_thread = 8, 2_000

    def worker() -> None:
        for i in range(per_thread):
            with trade("ETH/USDT") as t:
                t.filled(pnl=1.0 if i % 2 else -1.0, amount_usd=100.0)

    running = [threading.Thread(target=worker) for _ in range(threads)]
    for thread in running:
        thread.start()
    for thread in running:
        thread.join(60)
    families = parse(fetch(server.url))
    total = threads * per_thread
    assert sample_value(families, "tinywindow_trades_total", status="filled", symbol="ETH/USDT") == total
    assert sample_value(families, "tinywindow_trade_pnl_usd_count") == total
    assert sample_value(families, "tinywindow_trade_pnl_usd_sum") == 0.0
    assert sample_value(families, "tinywindow_win_rate") == 50.0


@settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(service=st.text(max_size=300))
def test_api_call_with_any_unicode_service_keeps_the_endpoint_parseable(server, service):
    REGISTRY.by_attr("api_requests_total").clear()

    @api_call(service)
    def call() -> str:
        return "ok"

    assert call() == "ok"
    families = parse(fetch(server.url))
    samples = families["tinywindow_api_requests_total"].samples
    assert len(samples) == 1 and samples[0].value == 1.0
