"""Each registry owns its drop reporter and its recorders' derived state; testing.reset() clears both."""

from __future__ import annotations

import gc
import math
import threading
import weakref
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import pytest

import tinywindow_otel as tw
from tinywindow_otel.calibration import CalibrationTracker
from tinywindow_otel.config import Settings
from tinywindow_otel.decorators import agent_decision, trade
from tinywindow_otel.exchange import instrument_ccxt
from tinywindow_otel.exporters import (AgentExporter, PortfolioExporter, SafetyExporter, TradingExporter,
                                       agent_exporter, portfolio_exporter, risk_exporter, safety_exporter,
                                       trading_exporter)
from tinywindow_otel.llm import PriceTable, llm_call
from tinywindow_otel.metrics import REGISTRY, MetricRegistry
from tinywindow_otel.orders import order
from tinywindow_otel.pipeline import Pipeline
from tinywindow_otel.testing import reset_values

DROPPED = "tinywindow_otel_dropped_measurements_total"


def drops(registry: MetricRegistry) -> dict[tuple[str, ...], float]:
    """The registry's dropped-measurement counts by (metric, reason), without the empty baseline series."""
    return {s.label_values: s.get() for s in registry.get(DROPPED).series() if any(s.label_values)}


def test_portfolio_exporter_counts_a_missing_price_in_its_own_registry():
    registry = MetricRegistry()
    process_before = drops(REGISTRY)
    PortfolioExporter(registry).update_portfolio(10_000.0, 0.0, {"BTC/USDT": 0.1, "ETH/USDT": 2.0},
                                                 prices={"BTC/USDT": 50_000.0})  # no price for ETH
    assert drops(registry) == {("tinywindow_leverage_ratio", "missing_price"): 1.0}
    assert drops(REGISTRY) == process_before


class _Exchange:
    id = "own-registry"
    last_response_headers = None

    def create_order(self, symbol, type, side, amount, price=None, params={}):  # noqa: A002,B006 - ccxt's shape
        return {"id": "1", "status": "open"}


def _order_nan(registry):
    with order("binance", "buy", 1.0, 100.0, registry=registry) as o:
        o.filled(math.nan, 100.0)


def _llm_without_price(registry):
    @llm_call("anthropic", "unpriced-model", registry=registry, price_table=PriceTable({}))
    def ask():
        return {"usage": {"input_tokens": 10, "output_tokens": 2}}

    ask()


def _outcome_nan(registry):
    tracker = CalibrationTracker(registry)
    tracker.record_outcome(tracker.register("analyst", 0.7), math.nan)


def _unreadable_decision(registry):
    agent_decision("analyst", exporter=AgentExporter(registry))(lambda: "not a decision")()


def _trade_fault(registry):
    # No symbol in the call: a telemetry fault, counted, never raised to the caller.
    trade(exporter=TradingExporter(registry))(lambda symbol: None)(None)


def _ccxt_unreadable_order(registry):
    instrument_ccxt(_Exchange(), registry=registry).create_order("BTC/USDT", "market", "buy", None)


@pytest.mark.parametrize("record, metric, reason", [
    (_order_nan, "tinywindow_orders_total", "nan"),
    (_llm_without_price, "tinywindow_llm_cost_usd_total", "no_price"),
    (_outcome_nan, "tinywindow_agent_outcomes_total", "nan"),
    (_unreadable_decision, "tinywindow_agent_decisions_total", "unreadable_decision"),
    (_trade_fault, "tinywindow_trades_total", "instrumentation_error"),
    (_ccxt_unreadable_order, "tinywindow_orders_total", "unreadable_order"),
], ids=lambda v: getattr(v, "__name__", None) if callable(v) else None)
def test_every_recorder_reports_drops_into_the_registry_it_records_into(record, metric, reason):
    registry = MetricRegistry()
    process_before = drops(REGISTRY)
    record(registry)
    assert drops(registry).get((metric, reason)) == 1.0, drops(registry)
    assert drops(REGISTRY) == process_before


class _Refusing(BaseHTTPRequestHandler):
    def do_POST(self) -> None:  # noqa: N802 - http.server's name
        self.send_response(400)  # not retryable: the export fails at once
        self.send_header("Content-Length", "0")
        self.end_headers()

    def log_message(self, *args) -> None:
        pass


def test_a_failed_export_counts_in_the_registry_being_exported():
    server = ThreadingHTTPServer(("127.0.0.1", 0), _Refusing)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    registry = MetricRegistry()
    settings = Settings.from_env(exporters="otlp", endpoint=f"http://127.0.0.1:{server.server_address[1]}",
                                 export_interval_millis=600_000, runtime_metrics=False)
    pipeline = Pipeline(registry=registry, settings=settings)
    process_before = drops(REGISTRY)
    try:
        registry.counter("trades_total").labels("filled", "BTC/USDT").inc()
        assert pipeline.force_flush(5_000) is False
        assert drops(registry) == {("otlp_export", "export_failed"): 1.0}
        assert drops(REGISTRY) == process_before
    finally:
        pipeline.shutdown(1_000)
        server.shutdown()
        server.server_close()
        thread.join(10)


# --- testing.reset_values(): the derived state goes with the values ----------------------------


def test_reset_forgets_the_win_loss_tally():
    trading_exporter.record_trade("BTC/USDT", "filled", pnl=100.0)
    reset_values()
    trading_exporter.record_trade("BTC/USDT", "filled", pnl=-50.0)
    assert tw.win_rate.get() == 0.0  # one loss out of one decided trade, not one win out of two
    assert trading_exporter.export_state()["wins"] == 0


def test_reset_forgets_the_portfolio_peak_and_risk_gauge_owners():
    portfolio_exporter.update_portfolio(100_000.0, 0.0, {})
    risk_exporter.set_drawdown(7.0)  # owned by the risk engine from now on
    reset_values()
    portfolio_exporter.update_portfolio(50_000.0, 0.0, {})
    assert tw.drawdown_pct.get() == 0.0  # a first value is its own peak, and derived again
    assert portfolio_exporter.export_state()["peak"] == 50_000.0


def test_reset_forgets_breakers_heartbeats_and_calibration():
    safety_exporter.record_circuit_breaker_trip("daily_loss")
    decision = agent_exporter.record_decision("analyst", "buy", 0.9)
    assert agent_exporter.record_outcome(decision, 10.0)  # a win at 0.9: Brier 0.01
    reset_values()
    assert safety_exporter.export_state() == {"circuit_breakers_open": {}, "kill_switches_engaged": {}}
    assert agent_exporter.export_state() == {"last_decision_times": {}}
    decision = agent_exporter.record_decision("analyst", "buy", 0.9)
    assert agent_exporter.record_outcome(decision, -10.0)  # a loss at 0.9: 0.81 alone, not (0.01 + 0.81) / 2
    assert REGISTRY.gauge("agent_brier_score").labels("analyst").get() == pytest.approx(0.81)


def test_a_recorder_of_another_registry_is_reset_with_that_registry_only():
    registry = MetricRegistry()
    mine = TradingExporter(registry)
    mine.record_trade("BTC/USDT", "filled", pnl=5.0)
    trading_exporter.record_trade("BTC/USDT", "filled", pnl=5.0)
    reset_values(registry)
    assert mine.export_state()["wins"] == 0
    assert trading_exporter.export_state()["wins"] == 1
    gone = weakref.ref(SafetyExporter(registry))
    gc.collect()
    assert gone() is None  # the registry holds its recorders weakly: a dropped one is not kept alive
    reset_values(registry)
