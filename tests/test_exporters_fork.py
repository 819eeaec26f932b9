"""A real os.fork() while other threads record through the domain recorders: the child never hangs
and starts with no derived state of its parent (win/loss tally, peak, open breakers, heartbeats)."""

from __future__ import annotations

import json
import os

import pytest
from helpers import fork_child, fork_repeatedly_while, reap_child

from tinywindow_otel import win_rate
from tinywindow_otel.exporters import (
    agent_exporter, api_exporter, export_state, portfolio_exporter, risk_exporter, safety_exporter, trading_exporter,
)

pytestmark = pytest.mark.skipif(not hasattr(os, "fork"), reason="needs os.fork")

FORKS = 25
CHILD_TIMEOUT_S = 10.0


def _record_everything(i: int) -> None:
    portfolio_exporter.update_portfolio(50_000.0 + i, 10.0, {"BTC/USDT": 0.1, f"S{i % 7}": 1.0},
                                        prices={"BTC/USDT": 60_000.0, f"S{i % 7}": 2.0})
    trading_exporter.record_trade("BTC/USDT", "filled", pnl=1.0 if i % 2 else -1.0, amount_usd=100.0)
    agent_exporter.record_decision("analyst", "buy", 0.5)
    api_exporter.record_request("binance", 0.01, i % 3 != 0, "timeout")
    safety_exporter.record_circuit_breaker_trip("volatility")
    safety_exporter.reset_circuit_breaker("volatility")
    risk_exporter.set_var_95(100.0)


def test_fork_while_other_threads_record_never_hangs_the_child():
    hung, failed = fork_repeatedly_while(_record_everything, lambda: [_record_everything(k) for k in range(3)],
                                         forks=FORKS, child_timeout=CHILD_TIMEOUT_S)
    assert hung == 0, "a forked child hung on a lock held by a parent thread at fork time"
    assert failed == 0, f"{failed} of {FORKS} children raised"


def test_forked_child_starts_without_the_parents_derived_state():
    for _ in range(9):
        trading_exporter.record_trade("BTC/USDT", "filled", pnl=10.0)
    portfolio_exporter.update_portfolio(100_000.0, 0.0, {"BTC/USDT": 1.0}, prices={"BTC/USDT": 60_000.0})
    safety_exporter.record_circuit_breaker_trip("daily_loss")
    agent_exporter.record_decision("analyst", "buy", 0.9)
    read_end, write_end = os.pipe()

    def child():
        os.close(read_end)
        before = export_state()
        trading_exporter.record_trade("BTC/USDT", "filled", pnl=-5.0)
        portfolio_exporter.update_portfolio(80_000.0, 0.0, {})
        report = {"before": before, "after": export_state(),
                  "win_rate": [series.get() for series in win_rate.series()]}
        os.write(write_end, json.dumps(report).encode())
        os.close(write_end)

    pid = fork_child(child)
    os.close(write_end)
    code = reap_child(pid, CHILD_TIMEOUT_S)
    with os.fdopen(read_end, "rb") as pipe:
        report = json.loads(pipe.read() or b"null")
    assert code == 0 and report is not None
    before, after = report["before"], report["after"]
    assert before["trading"] == {"wins": 0, "losses": 0, "last_trade_time": None}
    assert before["portfolio"]["peak"] is None and before["portfolio"]["positions"] == {}
    assert before["safety"] == {"circuit_breakers_open": {}, "kill_switches_engaged": {}}
    assert before["agents"] == {"last_decision_times": {}}
    # The child's win rate is its own: one loss, 0 %, not (9 wins + 1 loss) = 90 %.
    assert after["trading"]["wins"] == 0 and after["trading"]["losses"] == 1
    assert report["win_rate"] == [0.0]
    assert after["portfolio"]["peak"] == 80_000.0  # not the parent's 100 000
    # The parent kept its own.
    assert trading_exporter.wins == 9
    assert export_state()["safety"]["circuit_breakers_open"]["daily_loss"] is True
