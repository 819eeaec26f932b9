"""Exporter semantics (SPEC section 2 table), checked on a real scrape."""

from __future__ import annotations

from datetime import datetime, timezone

import pytest

from helpers import sample_value
from tinywindow_otel.exporters import (
    agent_exporter,
    api_exporter,
    portfolio_exporter,
    risk_exporter,
    safety_exporter,
    trading_exporter,
)


def test_win_rate_counts_only_trades_with_nonzero_pnl(scrape_metrics):
    for pnl in (100.0, -50.0, 0.0, 0.0, 20.0, None):
        trading_exporter.record_trade("BTC/USDT", "filled", pnl=pnl)
    families = scrape_metrics()
    assert sample_value(families, "tinywindow_win_rate") == pytest.approx(200 / 3)
    assert sample_value(families, "tinywindow_trades_total", status="filled", symbol="BTC/USDT") == 6
    assert sample_value(families, "tinywindow_trade_pnl_usd_count") == 5
    assert sample_value(families, "tinywindow_trade_pnl_usd_sum") == 70.0


def test_win_rate_absent_until_a_trade_is_decided(scrape_metrics):
    trading_exporter.record_trade("BTC/USDT", "filled", pnl=0.0)
    assert "tinywindow_win_rate" not in scrape_metrics()


def test_failed_requests_count_as_requests_and_as_errors(scrape_metrics):
    api_exporter.record_request("binance", 0.1, True)
    api_exporter.record_request("binance", 0.2, False, error_type="timeout")
    api_exporter.record_request("binance", 0.3, False)
    families = scrape_metrics()
    assert sample_value(families, "tinywindow_api_requests_total", service="binance") == 3
    assert sample_value(families, "tinywindow_api_errors_total", service="binance", type="timeout") == 1
    assert sample_value(families, "tinywindow_api_errors_total", service="binance", type="unknown") == 1
    assert sample_value(families, "tinywindow_api_latency_seconds_count", service="binance") == 3


def test_positions_absent_from_the_latest_update_disappear(scrape_metrics):
    portfolio_exporter.update_portfolio(50_000, 0, {"BTC/USDT": 0.1, "ETH/USDT": -2.0})
    portfolio_exporter.update_portfolio(50_000, 0, {"BTC/USDT": 0.2})
    families = scrape_metrics()
    assert sample_value(families, "tinywindow_active_positions", symbol="BTC/USDT") == 0.2
    assert sample_value(families, "tinywindow_active_positions", symbol="ETH/USDT") is None


def test_drawdown_from_running_peak_and_daily_pnl_from_day_start(scrape_metrics):
    day1 = datetime(2026, 11, 24, 23, 0, tzinfo=timezone.utc)
    day2 = datetime(2026, 11, 25, 0, 5, tzinfo=timezone.utc)
    portfolio_exporter.update_portfolio(100_000, 0, {}, now=day1)
    portfolio_exporter.update_portfolio(120_000, 0, {}, now=day1)
    portfolio_exporter.update_portfolio(90_000, 0, {}, now=day2)  # first value of the new UTC day
    portfolio_exporter.update_portfolio(81_000, 0, {}, now=day2)
    families = scrape_metrics()
    assert sample_value(families, "tinywindow_drawdown_pct") == pytest.approx(32.5)
    assert sample_value(families, "tinywindow_daily_pnl_pct") == pytest.approx(-10.0)


def test_portfolio_state_survives_a_restart(scrape_metrics):
    portfolio_exporter.update_portfolio(120_000, 0, {})
    saved = portfolio_exporter.export_state()
    portfolio_exporter.reset()
    portfolio_exporter.restore_state(saved)
    portfolio_exporter.update_portfolio(96_000, 0, {})
    assert sample_value(scrape_metrics(), "tinywindow_drawdown_pct") == pytest.approx(20.0)


def test_bad_trade_input_records_nothing_at_all(scrape_metrics):
    with pytest.raises(TypeError, match="tinywindow_trade_pnl_usd: pnl"):
        trading_exporter.record_trade("BTC/USDT", "filled", pnl="150")
    with pytest.raises(TypeError, match="tinywindow_trade_amount_usd: amount_usd"):
        trading_exporter.record_trade("BTC/USDT", "filled", pnl=10.0, amount_usd=[1000])
    with pytest.raises(TypeError, match="tinywindow_trades_total: label 'status'"):
        trading_exporter.record_trade("BTC/USDT", None, pnl=10.0)
    families = scrape_metrics()
    assert sample_value(families, "tinywindow_trades_total", status="filled", symbol="BTC/USDT") in (None, 0.0)
    assert sample_value(families, "tinywindow_trade_pnl_usd_count") == 0  # shown from the start, at 0
    assert "tinywindow_win_rate" not in families


def test_bad_portfolio_input_keeps_previous_snapshot(scrape_metrics):
    portfolio_exporter.update_portfolio(50_000, 10, {"BTC/USDT": 0.1})
    with pytest.raises(TypeError, match="tinywindow_active_positions"):
        portfolio_exporter.update_portfolio(60_000, 10, {"BTC/USDT": "lots"})
    families = scrape_metrics()
    assert sample_value(families, "tinywindow_portfolio_value_usd") == 50_000
    assert sample_value(families, "tinywindow_active_positions", symbol="BTC/USDT") == 0.1


def test_agent_safety_and_risk_exporters(scrape_metrics):
    agent_exporter.record_decision("market_analyst", "buy", 0.85)
    safety_exporter.record_circuit_breaker_trip("daily_loss")
    safety_exporter.record_kill_switch_activation("manual")
    risk_exporter.set_drawdown(3.5)
    risk_exporter.set_daily_pnl(-1.25)
    risk_exporter.set_leverage(2.0)
    risk_exporter.set_var_95(1234.5)
    families = scrape_metrics()
    assert sample_value(families, "tinywindow_agent_decisions_total", action="buy", agent="market_analyst") == 1
    assert sample_value(families, "tinywindow_agent_confidence_bucket", agent="market_analyst", le="0.9") == 1
    assert sample_value(families, "tinywindow_agent_confidence_bucket", agent="market_analyst", le="0.8") == 0
    assert sample_value(families, "tinywindow_circuit_breaker_trips_total", reason="daily_loss") == 1
    assert sample_value(families, "tinywindow_kill_switch_activations_total", mode="manual") == 1
    assert sample_value(families, "tinywindow_drawdown_pct") == 3.5
    assert sample_value(families, "tinywindow_daily_pnl_pct") == -1.25
    assert sample_value(families, "tinywindow_leverage_ratio") == 2.0
    assert sample_value(families, "tinywindow_portfolio_var_95") == 1234.5
