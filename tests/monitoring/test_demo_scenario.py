"""`demo --scenario breach|calm`: each core alert's condition, read from real scrapes, goes over its threshold and back.

The phases are driven with the scenario's own clock (elapsed seconds), five
ticks per second as in `tinywindow-otel stack`; the 5-minute ratios are
computed from counter snapshots one second apart, as `rate(x[5m])` would.
That every alert then fires and resolves in Prometheus/Alertmanager is the
rules' business (alerts/tests, test_live_stack.py).
"""

from __future__ import annotations

import pytest

from helpers import sample_value, scrape
from tinywindow_otel.cli.demo import BREACH_PHASES, Breach, TradingSimulation

TICKS_PER_SECOND = 5
WINDOW = 300  # seconds: the API alerts' rate window


def total(families: dict, name: str, **labels: str) -> float:
    """Sum of the samples of ``name`` whose labels include ``labels``."""
    return sum(sample.value for family in families.values() for sample in family.samples
               if sample.name == name and all(sample.labels.get(k) == v for k, v in labels.items()))


class Run:
    def __init__(self, url: str, scenario: str, seed: int = 11) -> None:
        self.url = url
        self.trading = TradingSimulation(seed)
        self.trading.initialise_series()
        self.breach = Breach(self.trading) if scenario == "breach" else None
        self.snapshots: dict[int, dict] = {}

    def advance(self, until: int) -> None:
        start = max(self.snapshots, default=-1) + 1
        for second in range(start, until + 1):
            for tick in range(TICKS_PER_SECOND):
                if self.breach is not None:
                    self.breach.apply(second + tick / TICKS_PER_SECOND)
                self.trading.tick()
            self.snapshots[second] = scrape(self.url)

    def at(self, second: int) -> dict:
        self.advance(second)
        return self.snapshots[second]

    def over_window(self, second: int, name: str, **labels: str) -> float:
        return total(self.at(second), name, **labels) - total(self.snapshots[max(0, second - WINDOW)], name, **labels)

    def error_ratio(self, second: int, service: str) -> float:
        return (self.over_window(second, "tinywindow_api_errors_total", service=service)
                / self.over_window(second, "tinywindow_api_requests_total", service=service))

    def share_above_5s(self, second: int, service: str) -> float:
        count = self.over_window(second, "tinywindow_api_latency_seconds_count", service=service)
        below = self.over_window(second, "tinywindow_api_latency_seconds_bucket", service=service, le="5.0")
        return (count - below) / count


def phase(alert: str):
    return next(p for p in BREACH_PHASES if p.alert == alert)


@pytest.fixture
def breach(server):
    return Run(server.url, "breach")


def value(families: dict, name: str, **labels: str) -> float | None:
    return sample_value(families, name, **labels)


def test_breach_phases_fit_the_five_minute_demo():
    assert [p.alert for p in BREACH_PHASES] == sorted((p.alert for p in BREACH_PHASES),
                                                      key=lambda a: phase(a).start)
    assert {p.alert for p in BREACH_PHASES} == {
        "DailyLossExceeded", "DrawdownExceeded", "HighAPIErrorRate", "CircuitBreakerTripped",
        "KillSwitchActivated", "LargePositionSize", "HighLeverage", "HighAPILatency"}
    # Event alerts hold 2 minutes after the event; everything must resolve well inside 5 minutes.
    assert max(p.end for p in BREACH_PHASES) <= 200
    # HighLeverage is inhibited while KillSwitchActivated fires (2 minutes after the activation).
    assert phase("HighLeverage").start >= phase("KillSwitchActivated").start + 120


def test_breach_drives_each_condition_over_its_threshold_and_back(breach):
    kill = phase("KillSwitchActivated")
    mid = (kill.start + kill.end) // 2
    assert value(breach.at(mid), "tinywindow_kill_switch_engaged", mode="manual") == 1
    assert value(breach.at(kill.end + 2), "tinywindow_kill_switch_engaged", mode="manual") == 0

    large = phase("LargePositionSize")
    during = breach.at(large.start + 5)
    above = (total(during, "tinywindow_trade_amount_usd_count", symbol="SOL/USDT")
             - total(during, "tinywindow_trade_amount_usd_bucket", symbol="SOL/USDT", le="10000.0"))
    assert above >= 1
    assert value(during, "tinywindow_position_notional_usd", symbol="SOL/USDT") > 10_000
    assert (value(breach.at(large.end + 2), "tinywindow_position_notional_usd", symbol="SOL/USDT") or 0) < 10_000

    breaker = phase("CircuitBreakerTripped")
    assert value(breach.at(breaker.start + 5), "tinywindow_circuit_breaker_open", reason="volatility") == 1
    assert value(breach.at(breaker.end + 2), "tinywindow_circuit_breaker_open", reason="volatility") == 0

    loss = phase("DailyLossExceeded")
    assert value(breach.at(loss.start + 5), "tinywindow_daily_pnl_pct") < -10
    assert value(breach.at(loss.start + 5), "tinywindow_drawdown_pct") < 15  # this phase is the loss alone
    assert value(breach.at(loss.end + 2), "tinywindow_daily_pnl_pct") > -10

    drawdown = phase("DrawdownExceeded")
    assert value(breach.at(drawdown.start + 5), "tinywindow_drawdown_pct") > 15
    assert value(breach.at(drawdown.end + 2), "tinywindow_drawdown_pct") < 15

    errors = phase("HighAPIErrorRate")
    # Over the threshold for long enough to outlast `for:` and the scrape/evaluation lag ...
    over = [s for s in range(errors.start, errors.end + 10) if breach.error_ratio(s, "binance") > 0.1]
    assert len(over) >= 15, over
    # ... and back under it once the backlog drained.
    assert breach.error_ratio(errors.end + 25, "binance") < 0.1

    leverage = phase("HighLeverage")
    assert value(breach.at(leverage.start + 5), "tinywindow_leverage_ratio") > 15
    assert value(breach.at(leverage.end + 2), "tinywindow_leverage_ratio") < 15

    latency = phase("HighAPILatency")
    assert breach.share_above_5s(latency.end, "claude") > 0.05  # p95 above 5 s
    assert breach.share_above_5s(latency.end + 25, "claude") < 0.05
    assert breach.breach.done


def test_calm_stays_inside_every_threshold(server):
    calm = Run(server.url, "calm")
    for second in (10, 20, 30, 60, 120, 180, 240):  # early: the first minutes of rate windows are short
        families = calm.at(second)
        assert all(sample.value == 0 for family in families.values() for sample in family.samples
                   if sample.name in ("tinywindow_circuit_breaker_open", "tinywindow_kill_switch_engaged",
                                      "tinywindow_circuit_breaker_trips_total",
                                      "tinywindow_kill_switch_activations_total"))
        notionals = [sample.value for family in families.values() for sample in family.samples
                     if sample.name == "tinywindow_position_notional_usd"]
        assert max(notionals, default=0) < 10_000
        assert total(families, "tinywindow_trade_amount_usd_count") == total(
            families, "tinywindow_trade_amount_usd_bucket", le="10000.0")
        assert value(families, "tinywindow_daily_pnl_pct") > -10
        assert value(families, "tinywindow_drawdown_pct") < 15
        assert (value(families, "tinywindow_leverage_ratio") or 0) < 15
        for service in ("binance", "coinbase", "claude"):
            assert calm.error_ratio(second, service) < 0.1
            assert calm.share_above_5s(second, service) < 0.05
