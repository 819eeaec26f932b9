"""A fixed workload for the deployment-path tests, using only the public API.

Configured by the standard OTel variables (OTEL_METRICS_EXPORTER,
OTEL_EXPORTER_OTLP_METRICS_ENDPOINT, OTEL_RESOURCE_ATTRIBUTES, ...). Records the
same values on every run: every metric family, negative P&L, a trade above the
$10K bucket, then prints {"port": N or null} (N when /metrics is served) and keeps
pushing the unchanged totals until stdin reaches EOF or a line "record" asks for
one more round (the fleet test's way to move counters on).

    python otlp_workload.py
"""

from __future__ import annotations

import json
import os
import sys

import tinywindow_otel
from tinywindow_otel import (
    MetricsServer, agent_confidence, api_errors_total, circuit_breaker_trips, kill_switch_activations,
    trade_amount_usd, trade_pnl_usd,
)
from tinywindow_otel.exporters import (
    agent_exporter, api_exporter, portfolio_exporter, risk_exporter, trading_exporter,
)


def record_round() -> None:
    trading_exporter.record_trade("BTC/USDT", "filled", pnl=120.5, amount_usd=1_000.0)
    trading_exporter.record_trade("ETH/USDT", "filled", pnl=-250.25, amount_usd=25_000.0)   # a loss, above $10K
    trading_exporter.record_trade("SOL/USDT", "rejected", amount_usd=10_000.0)               # exactly on the bucket
    trade_pnl_usd.observe(-1_500.0)
    trade_amount_usd.labels(symbol="BTC/USDT").observe(50.0)
    api_exporter.record_request("binance", 0.12, True)
    api_exporter.record_request("binance", 7.5, False, "timeout")
    api_exporter.record_request("claude", 1.25, True)
    api_errors_total.labels(service="claude", type="rate_limit").inc(0)
    agent_exporter.record_decision("market_analyst", "buy", 0.85)
    agent_exporter.record_decision("risk_manager", "hold", 0.3)
    agent_confidence.labels(agent="market_analyst").observe(1.0)
    circuit_breaker_trips.labels(reason="daily_loss").inc()
    kill_switch_activations.labels(mode="manual").inc()


def main() -> int:
    exporters = os.environ.get("OTEL_METRICS_EXPORTER", "prometheus")
    server = MetricsServer(host="127.0.0.1", port=0).start() if "prometheus" in exporters else None
    record_round()
    portfolio_exporter.update_portfolio(total_value=48_000.0, unrealized_pnl=-2_000.0,
                                        positions={"BTC/USDT": 0.5, "ETH/USDT": -2.0}, leverage=3.5)
    risk_exporter.set_var_95(960.0)
    tinywindow_otel.force_flush()
    print(json.dumps({"port": server.port if server else None}), flush=True)
    for line in sys.stdin:
        if line.strip() == "record":
            record_round()
            tinywindow_otel.force_flush(timeout_millis=3_000)  # bounded: the collector may be down
            print(json.dumps({"recorded": True}), flush=True)
    if server is not None:
        server.stop()
    tinywindow_otel.shutdown()
    return 0


if __name__ == "__main__":
    sys.exit(main())
