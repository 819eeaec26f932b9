"""A scenario driver for the live stack test, using only the public API.

Prints {"port": N} once /metrics is served, then records a calm trading
workload until it reads "breach" on stdin; from then on every core alert's
condition holds. ``--retrip``: the process was just restarted and, before the
first scrape, its circuit breaker tripped again at once: reason volatility stays
open, reason api_errors is reset at once (its counter back at 1, the value the
``--tripped-before`` process had: only the process start tells it is new).
``--tripped-before``: the event counters are already above zero at the first
scrape, from trips that are over (breaker api_errors tripped and reset, kill
switch automatic activated and released, a $25K ETH/USDT trade): old events
that must never page. Run it without runtime metrics
(TINYWINDOW_OTEL_RUNTIME_METRICS=false) to stand for a process that did this
long ago: with a process start time younger than 2 minutes the rules rightly
report every count as new.
Run as a subprocess: python scenario_driver.py [--retrip | --tripped-before]
"""

from __future__ import annotations

import json
import signal
import sys
import threading

from tinywindow_otel import (
    MetricsServer, api_errors_total, api_latency_seconds, api_requests_total, circuit_breaker_trips,
    kill_switch_activations, trade_pnl_usd, trades_total,
)
from tinywindow_otel.cli.demo_execution import ExecutionSimulation
from tinywindow_otel.exporters import (
    agent_exporter, api_exporter, portfolio_exporter, risk_exporter, safety_exporter, trading_exporter,
)

SERVICES = ("binance", "coinbase", "claude")
TICK_SECONDS = 0.05
PRICES = {"BTC/USDT": 65_000.0, "ETH/USDT": 3_200.0}
POSITIONS = {"BTC/USDT": 0.1, "ETH/USDT": -1.0}


def trip(reason: str, keep_open: bool) -> None:
    safety_exporter.record_circuit_breaker_trip(reason)
    if not keep_open:
        safety_exporter.reset_circuit_breaker(reason)


def main() -> int:
    retrip = "--retrip" in sys.argv[1:]
    tripped_before = "--tripped-before" in sys.argv[1:]
    breach = threading.Event()
    stop = threading.Event()
    signal.signal(signal.SIGTERM, lambda *_: stop.set())

    def read_commands() -> None:
        for line in sys.stdin:
            if line.strip() == "breach":
                breach.set()

    for service in SERVICES:
        api_requests_total.labels(service=service)
        api_latency_seconds.labels(service=service)
        api_errors_total.labels(service=service, type="timeout")
    circuit_breaker_trips.labels(reason="volatility")  # exists at 0: the breach increments it
    safety_exporter.reset_circuit_breaker("volatility")
    kill_switch_activations.labels(mode="automatic")   # exists before the breach, which uses a brand-new mode
    safety_exporter.release_kill_switch("automatic")
    for status, symbol in (("filled", "BTC/USDT"), ("rejected", "BTC/USDT"), ("filled", "SOL/USDT")):
        trades_total.labels(status=status, symbol=symbol)  # before the probes below fill the series limit
    if tripped_before:
        trip("api_errors", keep_open=False)
        safety_exporter.record_kill_switch_activation("automatic")
        safety_exporter.release_kill_switch("automatic")
        trading_exporter.record_trade("ETH/USDT", "filled", amount_usd=25_000.0)
    if retrip:
        trip("volatility", keep_open=True)
        trip("api_errors", keep_open=False)
    else:
        # The SDK self-metrics, already non-zero at the first scrape: one dropped
        # measurement, one rewritten label value, one label set beyond the series limit.
        trade_pnl_usd.observe(float("nan"))
        api_requests_total.labels(service="x" * 300)
        for i in range(trades_total.max_series + 1):
            trades_total.labels(status="cancelled", symbol=f"PROBE{i}")  # a documented status: no alert reads it
    server = MetricsServer(host="127.0.0.1", port=0).start()

    threading.Thread(target=read_commands, daemon=True).start()
    print(json.dumps({"port": server.port}), flush=True)

    tick = 0
    breached = False
    execution = ExecutionSimulation(seed=1, llm_call_probability=0.2)  # the execution and agents dashboards
    while not stop.is_set():
        tick += 1
        execution.tick()
        if breach.is_set() and not breached:
            breached = True
            trip("daily_loss", keep_open=False)                       # a series that never existed, reset at once
            trip("volatility", keep_open=True)                        # a series that existed at 0, stays open
            safety_exporter.record_kill_switch_activation("manual")   # a series that never existed
            trading_exporter.record_trade("SOL/USDT", "filled", amount_usd=25_000.0)  # first trade of SOL
        value = 40_000.0 if breached else 50_000.0 + (tick % 7)
        portfolio_exporter.update_portfolio(
            total_value=value, unrealized_pnl=value - 50_000.0, positions=POSITIONS,
            leverage=20.0 if breached else 2.0, prices=PRICES,
        )
        risk_exporter.set_var_95(value * 0.02)
        for service in SERVICES:
            failed = (tick % 2 == 0) if (breached and service == "binance") else (tick % 50 == 0)
            latency = 8.0 if (breached and service == "claude") else 0.1 + (tick % 5) * 0.05
            api_exporter.record_request(service, latency, not failed, "timeout" if failed else None)
        agent_exporter.record_decision("market_analyst", ("buy", "sell", "hold")[tick % 3], 0.5 + (tick % 5) / 10)
        if tick % 10 == 0:
            trading_exporter.record_trade("BTC/USDT", "rejected", amount_usd=1_000.0)
        else:
            trading_exporter.record_trade("BTC/USDT", "filled", pnl=10.0 if tick % 3 else -5.0, amount_usd=1_000.0)
        stop.wait(TICK_SECONDS)
    server.stop()
    return 0


if __name__ == "__main__":
    sys.exit(main())
