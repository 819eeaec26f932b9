"""A program written against the public API, type-checked with ``mypy --strict`` (tests/test_typing.py).

It is never run: it shows that the package's annotations reach users (py.typed)
and that the documented calls type-check as written.
"""

from __future__ import annotations

import asyncio

from tinywindow_otel import (
    Counter,
    Histogram,
    MetricsServer,
    agent_decision,
    api_call,
    api_latency_seconds,
    configure,
    force_flush,
    shutdown,
    trade,
    trade_pnl_usd,
    trades_total,
)
from tinywindow_otel.exporters import api_exporter, portfolio_exporter, trading_exporter


@api_call("claude")
async def ask(prompt: str) -> str:
    await asyncio.sleep(0)
    return prompt.upper()


def main() -> None:
    configure(service_name="trader")
    server: MetricsServer = MetricsServer(host="127.0.0.1", port=8000)
    server.start()
    trades_total.labels(status="filled", symbol="BTC/USDT").inc()
    trade_pnl_usd.observe(-120.5)
    api_latency_seconds.labels(service="claude").observe(0.42)
    signals = Counter("signals_total", "Signals emitted by a strategy", ["strategy"])
    signals.labels(strategy="momentum").inc()
    fills = Histogram("fill_seconds", "Time to fill", buckets=(0.1, 1.0, 10.0))
    fills.observe(0.5)
    trading_exporter.record_trade(symbol="BTC/USDT", status="filled", pnl=150.0, amount_usd=1000.0)
    portfolio_exporter.update_portfolio(total_value=50000.0, unrealized_pnl=500.0,
                                        positions={"BTC/USDT": 0.1}, leverage=1.5)
    api_exporter.record_request(service="binance", latency_seconds=0.15, success=True)
    with trade("BTC/USDT") as t:
        t.filled(pnl=150.0, amount_usd=1000.0)
    with agent_decision("risk") as d:
        d.record("sell", 0.8)
    answer: str = asyncio.run(ask("hello"))
    print(answer, server.url)
    force_flush()
    server.stop()
    shutdown()
