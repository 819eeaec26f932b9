"""State beside the events (breaker open, kill switch engaged, notional, heartbeats), the restart state,
input validation of the recorders, and one owner of the risk gauges; all through the public API and real scrapes."""

from __future__ import annotations

import asyncio
import json
import math
import sys
import threading
import time
from datetime import datetime, timedelta, timezone

import pytest
from helpers import sample_value
from hypothesis import HealthCheck, event, given, settings
from hypothesis import strategies as st

from tinywindow_otel import active_positions, agent_decision, trade
from tinywindow_otel.exporters import (
    TRADE_STATUSES, PortfolioExporter, agent_exporter, api_exporter, export_state, portfolio_exporter, reset,
    restore_state, risk_exporter, safety_exporter, trading_exporter,
)
from tinywindow_otel.metrics import REGISTRY

T0 = datetime(2026, 3, 2, 12, 0, tzinfo=timezone.utc)


@pytest.fixture(autouse=True)
def fresh_recorders():
    """Every default recorder starts without derived state (the shared fixture clears the metrics)."""
    reset()


# --- state gauges -------------------------------------------------------------------------


def test_circuit_breaker_open_until_reset_and_kill_switch_engaged_until_released(scrape_metrics):
    safety_exporter.record_circuit_breaker_trip("daily_loss")
    safety_exporter.record_kill_switch_activation("manual")
    families = scrape_metrics()
    assert sample_value(families, "tinywindow_circuit_breaker_open", reason="daily_loss") == 1
    assert sample_value(families, "tinywindow_kill_switch_engaged", mode="manual") == 1
    assert sample_value(families, "tinywindow_circuit_breaker_trips_total", reason="daily_loss") == 1

    safety_exporter.reset_circuit_breaker("daily_loss")
    safety_exporter.release_kill_switch("manual")
    families = scrape_metrics()
    assert sample_value(families, "tinywindow_circuit_breaker_open", reason="daily_loss") == 0
    assert sample_value(families, "tinywindow_kill_switch_engaged", mode="manual") == 0
    # The events stay counted: closing is not un-tripping.
    assert sample_value(families, "tinywindow_circuit_breaker_trips_total", reason="daily_loss") == 1
    assert sample_value(families, "tinywindow_kill_switch_activations_total", mode="manual") == 1


def test_position_notional_from_prices_or_explicit_and_removed_with_the_position(scrape_metrics):
    portfolio_exporter.update_portfolio(100_000.0, 0.0, {"BTC/USDT": 0.5, "ETH/USDT": -10.0},
                                        prices={"BTC/USDT": 60_000.0, "ETH/USDT": 3_000.0})
    families = scrape_metrics()
    assert sample_value(families, "tinywindow_position_notional_usd", symbol="BTC/USDT") == 30_000.0
    assert sample_value(families, "tinywindow_position_notional_usd", symbol="ETH/USDT") == 30_000.0  # absolute
    assert sample_value(families, "tinywindow_leverage_ratio") == pytest.approx(0.6)

    portfolio_exporter.update_portfolio(100_000.0, 0.0, {"BTC/USDT": 0.5}, notionals={"BTC/USDT": -31_000.0})
    families = scrape_metrics()
    assert sample_value(families, "tinywindow_position_notional_usd", symbol="BTC/USDT") == 31_000.0
    assert sample_value(families, "tinywindow_position_notional_usd", symbol="ETH/USDT") is None
    assert sample_value(families, "tinywindow_active_positions", symbol="ETH/USDT") is None
    assert sample_value(families, "tinywindow_leverage_ratio") == pytest.approx(0.31)

    with pytest.raises(ValueError, match="tinywindow_position_notional_usd.*SOL/USDT.*not in positions"):
        portfolio_exporter.update_portfolio(100_000.0, 0.0, {"BTC/USDT": 0.5}, notionals={"SOL/USDT": 1.0})
    portfolio_exporter.update_portfolio(100_000.0, 0.0, {})
    assert sample_value(scrape_metrics(), "tinywindow_position_notional_usd", symbol="BTC/USDT") is None


def test_trade_and_decision_heartbeats_from_recorders_and_decorators(scrape_metrics):
    before = time.time()
    trading_exporter.record_trade("BTC/USDT", "rejected")
    agent_exporter.record_decision("analyst", "hold", 0.5)
    families = scrape_metrics()
    trade_beat = sample_value(families, "tinywindow_last_trade_timestamp_seconds")
    decision_beat = sample_value(families, "tinywindow_last_decision_timestamp_seconds", agent="analyst")
    assert before <= trade_beat <= time.time()
    assert before <= decision_beat <= time.time()

    @trade("ETH/USDT")
    def place():
        return "filled"

    @agent_decision("scanner")
    def decide():
        return ("buy", 0.9)

    later = time.time()
    place()
    decide()
    families = scrape_metrics()
    assert sample_value(families, "tinywindow_last_trade_timestamp_seconds") >= later
    assert sample_value(families, "tinywindow_last_decision_timestamp_seconds", agent="scanner") >= later
    assert sample_value(families, "tinywindow_last_decision_timestamp_seconds", agent="analyst") == decision_beat


# --- validation ---------------------------------------------------------------------------


@pytest.mark.parametrize("status", ["FILLED", "partial", "", "ok"])
def test_unknown_trade_status_raises_naming_value_and_allowed_set(status, scrape_metrics):
    with pytest.raises(ValueError) as excinfo:
        trading_exporter.record_trade("BTC/USDT", status, pnl=10.0)
    message = str(excinfo.value)
    assert "tinywindow_trades_total" in message and repr(status) in message
    assert ", ".join(TRADE_STATUSES) in message
    families = scrape_metrics()
    assert sample_value(families, "tinywindow_trades_total", status=status, symbol="BTC/USDT") is None
    assert sample_value(families, "tinywindow_trade_pnl_usd_count") in (None, 0)


def test_every_documented_status_records(scrape_metrics):
    assert TRADE_STATUSES == ("filled", "partially_filled", "rejected", "cancelled", "failed")
    for status in TRADE_STATUSES:
        trading_exporter.record_trade("BTC/USDT", status)
    families = scrape_metrics()
    for status in TRADE_STATUSES:
        assert sample_value(families, "tinywindow_trades_total", status=status, symbol="BTC/USDT") == 1


@pytest.mark.parametrize("call, metric", [
    (lambda: agent_exporter.record_decision("a", "buy", 1.5), "tinywindow_agent_confidence"),
    (lambda: agent_exporter.record_decision("a", "buy", 85), "tinywindow_agent_confidence"),
    (lambda: agent_exporter.record_decision("a", "buy", -0.2), "tinywindow_agent_confidence"),
    (lambda: agent_exporter.record_decision("a", "buy", math.inf), "tinywindow_agent_confidence"),
    (lambda: trading_exporter.record_trade("BTC/USDT", "filled", amount_usd=-1.0), "tinywindow_trade_amount_usd"),
    (lambda: api_exporter.record_request("binance", -0.001, True), "tinywindow_api_latency_seconds"),
])
def test_numbers_outside_their_domain_raise_and_record_nothing(call, metric, scrape_metrics):
    with pytest.raises(ValueError, match=metric):
        call()
    families = scrape_metrics()
    for name in ("tinywindow_agent_decisions_total", "tinywindow_trades_total", "tinywindow_api_requests_total"):
        family = families.get(name)
        assert not family or all(s.value == 0 for s in family.samples), name


def test_confidence_bounds_are_inclusive(scrape_metrics):
    agent_exporter.record_decision("a", "buy", 0)
    agent_exporter.record_decision("a", "sell", 1.0)
    assert sample_value(scrape_metrics(), "tinywindow_agent_confidence_count", agent="a") == 2


def test_decorators_raise_for_values_the_caller_passes_and_count_values_returned(scrape_metrics):
    with pytest.raises(ValueError, match="tinywindow_agent_confidence: confidence must be in \\[0, 1\\]"):
        with agent_decision("analyst") as d:
            d.record("buy", 1.5)

    @agent_decision("analyst")
    def decide():
        return ("buy", 85)

    @trade("BTC/USDT")
    def place():
        return {"status": "filled", "amount_usd": -10.0}

    assert decide() == ("buy", 85)  # a telemetry fault never reaches the caller
    assert place() == {"status": "filled", "amount_usd": -10.0}
    families = scrape_metrics()
    assert sample_value(families, "tinywindow_agent_decisions_total", action="buy", agent="analyst") is None
    assert sample_value(families, "tinywindow_trades_total", status="filled", symbol="BTC/USDT") == 0
    for metric in ("tinywindow_agent_decisions_total", "tinywindow_trades_total"):
        assert sample_value(families, "tinywindow_otel_dropped_measurements_total",
                            metric=metric, reason="instrumentation_error") == 1


def test_cancelled_trade_coroutine_is_recorded_as_cancelled_and_reraised(scrape_metrics):
    async def main():
        ready = asyncio.Event()

        @trade("BTC/USDT")
        async def place():
            ready.set()
            await asyncio.sleep(30)

        task = asyncio.create_task(place())
        await asyncio.wait_for(ready.wait(), 10)
        task.cancel()
        with pytest.raises(asyncio.CancelledError):
            await task

    asyncio.run(main())
    families = scrape_metrics()
    assert sample_value(families, "tinywindow_trades_total", status="cancelled", symbol="BTC/USDT") == 1
    assert sample_value(families, "tinywindow_trades_total", status="failed", symbol="BTC/USDT") is None


# --- restart state ------------------------------------------------------------------------


def test_state_round_trips_as_json_text_with_tally_breakers_positions_and_heartbeats(scrape_metrics):
    for pnl in (10.0, 20.0, -5.0, 30.0):
        trading_exporter.record_trade("BTC/USDT", "filled", pnl=pnl)
    agent_exporter.record_decision("analyst", "buy", 0.7)
    safety_exporter.record_circuit_breaker_trip("daily_loss")
    safety_exporter.record_kill_switch_activation("manual")
    safety_exporter.release_kill_switch("manual")
    portfolio_exporter.update_portfolio(120_000.0, 0.0, {"BTC/USDT": 1.0}, prices={"BTC/USDT": 60_000.0})
    text = json.dumps(export_state(), allow_nan=False)
    beats = scrape_metrics()

    # A restart: the process comes back with nothing.
    reset()
    assert export_state()["trading"]["wins"] == 0 and export_state()["safety"]["circuit_breakers_open"] == {}
    for metric in REGISTRY:
        metric.clear()

    restore_state(text)
    families = scrape_metrics()
    assert sample_value(families, "tinywindow_win_rate") == 75.0
    assert sample_value(families, "tinywindow_circuit_breaker_open", reason="daily_loss") == 1
    assert sample_value(families, "tinywindow_kill_switch_engaged", mode="manual") == 0
    assert sample_value(families, "tinywindow_active_positions", symbol="BTC/USDT") == 1.0
    assert sample_value(families, "tinywindow_position_notional_usd", symbol="BTC/USDT") == 60_000.0
    for name, labels in (("tinywindow_last_trade_timestamp_seconds", {}),
                         ("tinywindow_last_decision_timestamp_seconds", {"agent": "analyst"})):
        assert sample_value(families, name, **labels) == sample_value(beats, name, **labels)

    # The win rate goes on from the restored tally, and so does the drawdown from the restored peak.
    trading_exporter.record_trade("BTC/USDT", "filled", pnl=-1.0)
    portfolio_exporter.update_portfolio(90_000.0, 0.0, {})
    families = scrape_metrics()
    assert sample_value(families, "tinywindow_win_rate") == 60.0
    assert sample_value(families, "tinywindow_drawdown_pct") == pytest.approx(25.0)
    assert sample_value(families, "tinywindow_position_notional_usd", symbol="BTC/USDT") is None


def test_restore_accepts_the_dict_and_json_bytes_and_is_all_or_nothing():
    trading_exporter.record_trade("BTC/USDT", "filled", pnl=1.0)
    state = export_state()
    restore_state(state)
    restore_state(json.dumps(state).encode())
    assert trading_exporter.wins == 1

    broken = json.loads(json.dumps(state))
    broken["trading"]["wins"] = 5
    broken["safety"]["circuit_breakers_open"] = {"daily_loss": "yes"}
    with pytest.raises(ValueError, match="safety state"):
        restore_state(broken)
    assert trading_exporter.wins == 1  # the valid part was not applied either
    with pytest.raises(ValueError, match="not valid JSON"):
        restore_state("{nope")
    with pytest.raises(ValueError, match="unknown field"):
        restore_state({"version": 2, "trading": {}, "extra": 1})
    with pytest.raises(ValueError, match="version"):
        restore_state({"version": 99})
    with pytest.raises(ValueError, match="agent state"):
        restore_state({"agents": {"last_decision_times": {"analyst": None}}})
    with pytest.raises(ValueError, match="portfolio state: returns"):
        restore_state({"portfolio": {"returns": [1e400]}})  # JSON's 1e400 is infinity
    assert trading_exporter.wins == 1


def test_restore_replaces_the_tally_and_keeps_newer_heartbeats_and_unnamed_breakers(scrape_metrics):
    now = time.time()
    trading_exporter.record_trade("BTC/USDT", "filled", pnl=5.0)
    agent_exporter.record_decision("analyst", "buy", 0.5)
    safety_exporter.record_kill_switch_activation("manual")  # engaged since start, not in the document
    restore_state({"trading": {"wins": 0, "losses": 0, "last_trade_time": now - 3600},
                   "agents": {"last_decision_times": {"analyst": now - 3600, "scanner": now - 60}},
                   "safety": {"circuit_breakers_open": {"daily_loss": True}}})
    families = scrape_metrics()
    assert sample_value(families, "tinywindow_win_rate") is None  # the tally is replaced: nothing decided
    assert sample_value(families, "tinywindow_last_trade_timestamp_seconds") >= now  # the newer one stays
    assert sample_value(families, "tinywindow_last_decision_timestamp_seconds", agent="analyst") >= now
    assert sample_value(families, "tinywindow_last_decision_timestamp_seconds", agent="scanner") == now - 60
    assert sample_value(families, "tinywindow_kill_switch_engaged", mode="manual") == 1
    assert sample_value(families, "tinywindow_circuit_breaker_open", reason="daily_loss") == 1
    assert export_state()["safety"] == {"circuit_breakers_open": {"daily_loss": True},
                                        "kill_switches_engaged": {"manual": True}}


def test_portfolio_only_state_still_restores(scrape_metrics):
    portfolio_exporter.update_portfolio(50_000.0, 0.0, {}, now=T0)
    saved = json.dumps(portfolio_exporter.export_state())
    portfolio_exporter.reset()
    restore_state(saved)  # the older, portfolio-only document
    portfolio_exporter.update_portfolio(40_000.0, 0.0, {}, now=T0)
    assert sample_value(scrape_metrics(), "tinywindow_drawdown_pct") == pytest.approx(20.0)
    portfolio_exporter.reset()
    portfolio_exporter.restore_state(saved)
    portfolio_exporter.update_portfolio(45_000.0, 0.0, {}, now=T0)
    assert sample_value(scrape_metrics(), "tinywindow_drawdown_pct") == pytest.approx(10.0)


@pytest.mark.parametrize("total", [math.inf, 10**400, -math.inf])
def test_non_finite_total_value_invents_no_leverage_and_state_stays_valid_json(total, scrape_metrics):
    portfolio_exporter.update_portfolio(50_000.0, 0.0, {"BTC/USDT": 1.0}, prices={"BTC/USDT": 60_000.0}, now=T0)
    portfolio_exporter.update_portfolio(total, 0.0, {"BTC/USDT": 1.0}, prices={"BTC/USDT": 60_000.0}, now=T0)
    families = scrape_metrics()
    assert sample_value(families, "tinywindow_leverage_ratio") == pytest.approx(1.2)  # not 0
    assert sample_value(families, "tinywindow_portfolio_value_usd") == 50_000.0
    restore_state(json.dumps(export_state(), allow_nan=False))


def test_overflowing_returns_never_reach_the_state():
    exporter = PortfolioExporter(return_interval_s=1)
    values = [1e-300, 1e300, sys.float_info.max, 1e-300, 5.0]
    for i, value in enumerate(values):
        exporter.update_portfolio(value, 0.0, {}, now=T0 + timedelta(seconds=i))
    text = json.dumps(exporter.export_state(), allow_nan=False)
    PortfolioExporter(return_interval_s=1).restore_state(text)


@settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(st.lists(st.one_of(st.floats(allow_nan=True, allow_infinity=True), st.integers(-10**400, 10**400),
                          st.sampled_from([1e-308, 5e-324, sys.float_info.max, -sys.float_info.max])),
                min_size=1, max_size=12))
def test_any_portfolio_values_give_a_state_that_is_valid_json_and_restores(values):
    exporter = PortfolioExporter(return_interval_s=1, var_min_samples=2)
    for i, value in enumerate(values):
        exporter.update_portfolio(value, 0.0, {"BTC/USDT": 1.0}, prices={"BTC/USDT": value}, now=T0 + timedelta(seconds=i))
    text = json.dumps(exporter.export_state(), allow_nan=False)
    PortfolioExporter(return_interval_s=1).restore_state(text)


def test_restore_keeps_only_the_returns_window():
    state = {"returns": [0.001] * 20_000, "last_sample_value": 100.0, "last_sample_time": T0.timestamp()}
    exporter = PortfolioExporter(var_window=50, return_interval_s=1)
    exporter.restore_state(json.dumps(state))
    assert len(exporter.export_state()["returns"]) == 50
    restore_state({"portfolio": state})
    assert len(export_state()["portfolio"]["returns"]) == portfolio_exporter.tracker.window


# --- concurrency and ownership --------------------------------------------------------------


def test_two_threads_updating_the_portfolio_never_leave_it_without_positions():
    old_interval = sys.getswitchinterval()
    sys.setswitchinterval(1e-6)  # interleave the two writers as much as possible
    try:
        deadline = time.monotonic() + 5
        rounds = empty = 0
        while time.monotonic() < deadline and rounds < 400:
            barrier = threading.Barrier(2)

            def writer(symbol):
                barrier.wait(timeout=10)
                for _ in range(3):
                    portfolio_exporter.update_portfolio(1000.0, 0.0, {symbol: 1.0})

            threads = [threading.Thread(target=writer, args=(s,)) for s in ("BTC/USDT", "ETH/USDT")]
            for t in threads:
                t.start()
            for t in threads:
                t.join(timeout=10)
            rounds += 1
            live = {child.label_values for child in active_positions.series()}
            if not live:
                empty += 1
            assert len(live) <= 1, live
    finally:
        sys.setswitchinterval(old_interval)
    assert empty == 0, f"{empty} of {rounds} rounds ended with no position published"


def test_the_latest_snapshot_wins_across_exporters_and_resets(scrape_metrics):
    other = PortfolioExporter()  # a second exporter on the same registry publishes the same gauges
    portfolio_exporter.update_portfolio(1000.0, 0.0, {"BTC/USDT": 1.0}, prices={"BTC/USDT": 10.0})
    other.update_portfolio(1000.0, 0.0, {"ETH/USDT": 2.0}, prices={"ETH/USDT": 5.0})
    families = scrape_metrics()
    assert sample_value(families, "tinywindow_active_positions", symbol="BTC/USDT") is None
    assert sample_value(families, "tinywindow_position_notional_usd", symbol="BTC/USDT") is None
    assert sample_value(families, "tinywindow_position_notional_usd", symbol="ETH/USDT") == 10.0
    portfolio_exporter.reset()  # forgets derived state, not what is on /metrics
    portfolio_exporter.update_portfolio(1000.0, 0.0, {"SOL/USDT": 3.0})
    families = scrape_metrics()
    assert sample_value(families, "tinywindow_active_positions", symbol="ETH/USDT") is None
    assert sample_value(families, "tinywindow_position_notional_usd", symbol="ETH/USDT") is None
    assert sample_value(families, "tinywindow_active_positions", symbol="SOL/USDT") == 3.0


def test_risk_gauge_set_explicitly_is_not_overwritten_by_the_derived_value(scrape_metrics):
    exporter = PortfolioExporter(var_min_samples=2, return_interval_s=1)
    risk_exporter.set_drawdown(3.5)
    risk_exporter.set_var_95(1234.5)
    for i, value in enumerate((100.0, 80.0, 90.0, 70.0)):
        exporter.update_portfolio(value, 0.0, {}, now=T0 + timedelta(seconds=i))
    families = scrape_metrics()
    assert sample_value(families, "tinywindow_drawdown_pct") == 3.5
    assert sample_value(families, "tinywindow_portfolio_var_95") == 1234.5
    assert sample_value(families, "tinywindow_daily_pnl_pct") == pytest.approx(-30.0)  # still derived
    portfolio_exporter.reset()  # back to derived values
    exporter.update_portfolio(60.0, 0.0, {}, now=T0 + timedelta(seconds=10))
    assert sample_value(scrape_metrics(), "tinywindow_drawdown_pct") == pytest.approx(40.0)


class _PublicOnlyAPI:
    """An API recorder with only the documented surface: what api_call() may use."""

    def __init__(self):
        self.calls = []

    def bind(self, service):
        bound = api_exporter.bind(service)
        outer = self

        class Bound:
            requests, latency = bound.requests, bound.latency

            def error(self, kind):
                outer.calls.append(kind)
                bound.error(kind)
        return Bound()


class _PublicOnlyTrading:
    def __init__(self):
        self.trades = []

    def prepare(self, symbol, status="filled"):
        trading_exporter.prepare(symbol, status)

    def record_trade(self, symbol, status, pnl=None, amount_usd=None):
        self.trades.append((symbol, status))


class _PublicOnlyAgents:
    def __init__(self):
        self.decisions = []

    def bind(self, agent):
        outer = self

        class Bound:
            def record(self, action, confidence):
                outer.decisions.append((agent, action, confidence))
        return Bound()


def test_decorators_use_only_the_recorders_public_methods():
    api, trading, agents = _PublicOnlyAPI(), _PublicOnlyTrading(), _PublicOnlyAgents()

    @api_call_with(api)
    def ask():
        raise KeyError("x")

    with pytest.raises(KeyError):
        ask()
    with trade("BTC/USDT", exporter=trading) as t:
        t.partially_filled(amount_usd=5.0)
    with agent_decision("analyst", exporter=agents) as d:
        d.record("buy", 0.4)
    assert api.calls == ["KeyError"]
    assert trading.trades == [("BTC/USDT", "partially_filled")]
    assert agents.decisions == [("analyst", "buy", 0.4)]


def api_call_with(exporter):
    from tinywindow_otel import api_call
    return api_call("claude", exporter=exporter)


def test_domain_modules_read_no_private_attribute_defined_elsewhere():
    """``obj._name`` only on self/cls, or for a name this module defines itself (no reach into another module)."""
    import ast
    from pathlib import Path

    import tinywindow_otel

    package = Path(tinywindow_otel.__file__).parent
    offenders = []
    for module in ("exporters.py", "decorators.py", "risk.py"):
        tree = ast.parse((package / module).read_text())
        defined = {node.name for node in ast.walk(tree) if isinstance(node, (ast.FunctionDef, ast.ClassDef))}
        defined |= {target.attr for node in ast.walk(tree) if isinstance(node, (ast.Assign, ast.AnnAssign))
                    for target in (node.targets if isinstance(node, ast.Assign) else [node.target])
                    if isinstance(target, ast.Attribute)}
        for node in ast.walk(tree):
            if (isinstance(node, ast.Attribute) and node.attr.startswith("_") and not node.attr.startswith("__")
                    and not (isinstance(node.value, ast.Name) and node.value.id in ("self", "cls"))
                    and node.attr not in defined):
                offenders.append(f"{module}:{node.lineno} .{node.attr}")
    assert offenders == []


_json = st.recursive(
    st.none() | st.booleans() | st.floats() | st.integers(-10**30, 10**30) | st.text(max_size=4),
    lambda inner: st.lists(inner, max_size=3) | st.dictionaries(st.text(max_size=4), inner, max_size=3),
    max_leaves=6)
_mapping_of = st.dictionaries(st.sampled_from(["BTC/USDT", "x", ""]), _json, max_size=2)
_parts = {
    "trading": st.fixed_dictionaries({}, optional={"wins": _json, "losses": _json, "last_trade_time": _json}),
    "portfolio": st.fixed_dictionaries({}, optional={
        "peak": _json, "day": _json, "day_start_value": _json, "returns": _json, "last_sample_value": _json,
        "last_sample_time": _json, "positions": _mapping_of | _json, "notionals": _mapping_of | _json}),
    "agents": st.fixed_dictionaries({}, optional={"last_decision_times": _mapping_of | _json}),
    "safety": st.fixed_dictionaries({}, optional={"circuit_breakers_open": _mapping_of | _json,
                                                  "kill_switches_engaged": _mapping_of | _json}),
}


@settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(st.fixed_dictionaries({}, optional={"version": st.just(2) | _json, **{k: v | _json for k, v in _parts.items()}}))
def test_restoring_any_json_raises_a_clear_error_or_applies_and_round_trips(document):
    before = export_state()
    try:
        restore_state(json.dumps(document))
    except (ValueError, TypeError) as exc:
        event("rejected")
        assert "state" in str(exc), exc
        assert export_state() == before, "a rejected document was partly applied"
        return
    event("applied")
    restore_state(json.dumps(export_state(), allow_nan=False))  # what was restored exports and restores again
