"""Property-based fuzzing of the domain exporters (exporters.py) against a real /metrics scrape.

Each example runs a random sequence of exporter calls with arbitrary arguments.
A call with an argument of the wrong type, an unknown trade status or a number
outside its domain (negative amount or latency, confidence outside [0, 1]) must
raise TypeError/ValueError naming the metric and record nothing (no
half-recorded trade); any other call, whatever its numbers or label text, must
not raise. After the sequence the exposition must
parse, derived gauges must stay in range and the trade count must equal the number
of accepted ``record_trade`` calls.
"""

from __future__ import annotations

import math
from datetime import date, timezone

import pytest
from helpers import parse, fetch, sample_value
from hypothesis import HealthCheck, event, given, note, settings
from hypothesis import strategies as st
from test_metrics_fuzz import VALUE_CLASSES, float_or_inf, label_text

from tinywindow_otel import MetricsServer
from tinywindow_otel.exporters import (
    TRADE_STATUSES, agent_exporter, api_exporter, portfolio_exporter, risk_exporter, safety_exporter, trading_exporter,
)
from tinywindow_otel.metrics import REGISTRY

TRADES = REGISTRY.by_attr("trades_total")


@pytest.fixture(scope="module")
def url():
    with MetricsServer(host="127.0.0.1", port=0) as server:
        yield server.url


GOOD = object()  # marker: the argument is of an accepted type
number = st.one_of(*(s.map(lambda v, c=c: (c, v)) for c, s in VALUE_CLASSES.items()))
wrong_label = st.one_of(st.none(), st.booleans(), st.binary(max_size=3), st.lists(st.integers(), max_size=2),
                        st.just(object()), st.decimals(allow_nan=False, places=1))
text_label = label_text.map(lambda v: ("text", v))
# Mostly valid: a sequence of calls should get far enough to exercise derived values.
label = st.one_of(text_label, text_label, text_label, st.integers(-5, 5).map(lambda v: ("int_label", v)),
                  wrong_label.map(lambda v: ("wrong_type", v)))


def optional(arg):
    """None is a valid value for an optional argument ("not known")."""
    return None if arg is None or arg[1] is None else arg


def bad(*args: tuple[str, object]) -> bool:
    return any(cls == "wrong_type" for cls, _ in args)


def outside(arg: tuple[str, object] | None, low: float, high: float = math.inf) -> bool:
    """A number (not NaN: that is dropped and counted) outside [low, high]: raises ValueError."""
    if arg is None or arg[0] == "wrong_type":
        return False
    number = float_or_inf(arg[1])
    return not math.isnan(number) and not low <= number <= high


status_label = st.one_of(label, st.sampled_from(TRADE_STATUSES).map(lambda v: ("status", v)))


def bad_status(arg: tuple[str, object]) -> bool:
    return not (isinstance(arg[1], str) and arg[1] in TRADE_STATUSES)


@st.composite
def calls(draw):
    kind = draw(st.sampled_from(["trade", "portfolio", "request", "decision", "safety", "risk", "restore"]))
    if kind == "trade":
        symbol, status = draw(label), draw(status_label)
        pnl = optional(draw(st.one_of(st.none(), number)))
        amount = optional(draw(st.one_of(st.none(), number)))
        args = [symbol, status] + [a for a in (pnl, amount) if a is not None]
        note(f"record_trade{(symbol, status, pnl, amount)!r:.300}")
        return kind, bad(*args) or bad_status(status) or outside(amount, 0), lambda: trading_exporter.record_trade(
            symbol[1], status[1], pnl=None if pnl is None else pnl[1], amount_usd=None if amount is None else amount[1])
    if kind == "portfolio":
        total, unrealized = draw(number), draw(number)
        positions = draw(st.lists(st.tuples(label, number), max_size=6))
        leverage = optional(draw(st.one_of(st.none(), number)))
        now = draw(st.one_of(st.none(), st.datetimes(timezones=st.just(timezone.utc)).map(lambda d: ("now", d)),
                             st.just(("wrong_type", "yesterday"))))
        # Unhashable keys cannot be put in a dict at all; keep hashable ones.
        mapping = {}
        for key, size in positions:
            try:
                hash(key[1])
            except TypeError:
                continue
            mapping[key[1]] = size
        # Judge the keys the dict really holds (True and 1 are the same key).
        args = [total, unrealized, *mapping.values()]
        args += [("wrong_type" if isinstance(k, bool) or not isinstance(k, (str, int, float)) else "key", k)
                 for k in mapping]
        args += [leverage] if leverage is not None else []
        args += [now] if now is not None else []
        return kind, bad(*args), lambda: portfolio_exporter.update_portfolio(
            total[1], unrealized[1], {k: v[1] for k, v in mapping.items()},
            leverage=None if leverage is None else leverage[1], now=None if now is None else now[1])
    if kind == "request":
        service, latency = draw(label), draw(number)
        error_type = optional(draw(st.one_of(st.none(), label)))  # None means "not given": valid
        success = draw(st.booleans())
        args = [service, latency] + ([error_type] if error_type is not None and not success else [])
        note(f"record_request{(service, latency, success, error_type)!r:.300}")
        return kind, bad(*args) or outside(latency, 0), lambda: api_exporter.record_request(
            service[1], latency[1], success, None if error_type is None else error_type[1])
    if kind == "decision":
        agent, action, confidence = draw(label), draw(label), draw(number)
        return kind, bad(agent, action, confidence) or outside(confidence, 0, 1), lambda: agent_exporter.record_decision(
            agent[1], action[1], confidence[1])
    if kind == "safety":
        reason = draw(label)
        which = draw(st.sampled_from([safety_exporter.record_circuit_breaker_trip,
                                      safety_exporter.record_kill_switch_activation,
                                      safety_exporter.reset_circuit_breaker, safety_exporter.release_kill_switch]))
        return kind, bad(reason), lambda: which(reason[1])
    if kind == "risk":
        value = draw(number)
        setter = draw(st.sampled_from([risk_exporter.set_drawdown, risk_exporter.set_daily_pnl,
                                       risk_exporter.set_leverage, risk_exporter.set_var_95]))
        return kind, bad(value), lambda: setter(value[1])
    state = draw(st.fixed_dictionaries({}, optional={
        "peak": st.one_of(st.none(), st.floats(), st.text(max_size=3)),
        "day": st.one_of(st.none(), st.dates().map(lambda d: d.isoformat()), st.text(max_size=5), st.integers()),
        "day_start_value": st.one_of(st.none(), st.floats(), st.booleans()),
        "bogus": st.integers(),
    }))
    valid = "bogus" not in state and all(
        v is None or (isinstance(v, float) and math.isfinite(v)) for k, v in state.items() if k != "day"
    ) and (state.get("day") is None or _is_iso_date(state["day"]))
    return "restore", not valid, lambda: portfolio_exporter.restore_state(state)


def _is_iso_date(value) -> bool:
    try:
        date.fromisoformat(value)
        return True
    except (TypeError, ValueError):
        return False


@settings(max_examples=200, deadline=None, suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large])
@given(sequence=st.lists(calls(), min_size=1, max_size=8))
def test_exporter_calls_raise_only_for_programming_errors(url, sequence):
    for metric in REGISTRY:  # each example starts clean (the autouse fixture runs once per test)
        metric.clear()
    trading_exporter.reset()
    portfolio_exporter.reset()
    accepted_trades = 0
    for kind, is_bad, call in sequence:
        event(f"{kind}: {'wrong type' if is_bad else 'accepted'}")
        before = sum(child.get() for child in TRADES.series())
        if is_bad:
            with pytest.raises((TypeError, ValueError)) as excinfo:
                call()
            message = str(excinfo.value)
            assert "tinywindow_" in message or "portfolio state" in message, message
            assert sum(child.get() for child in TRADES.series()) == before, "a rejected trade was half-recorded"
        else:
            call()
            if kind == "trade":
                accepted_trades += 1

    families = parse(fetch(url))
    scraped_trades = sum(s.value for f in families.values() for s in f.samples if s.name == "tinywindow_trades_total")
    assert scraped_trades == accepted_trades
    derived = [("tinywindow_win_rate", 0, 100)]
    if not any(kind == "risk" for kind, _, _ in sequence):  # set_drawdown() passes any number through
        derived.append(("tinywindow_drawdown_pct", 0, 100))
    for gauge, low, high in derived:
        value = sample_value(families, gauge)
        assert value is None or low <= value <= high, (gauge, value)
    for family in families.values():
        for sample in family.samples:
            if family.type == "gauge":
                assert math.isfinite(sample.value), sample


def test_positions_with_non_string_symbols_are_kept(url):
    """Found by fuzzing: an int key was stored as "1" and then removed as absent."""
    portfolio_exporter.update_portfolio(10_000.0, 0.0, {1: 2.0, "ETH/USDT": -1.5})
    families = parse(fetch(url))
    assert sample_value(families, "tinywindow_active_positions", symbol="1") == 2.0
    assert sample_value(families, "tinywindow_active_positions", symbol="ETH/USDT") == -1.5


def test_huge_int_pnl_is_dropped_not_counted_as_a_win(url):
    """Found by fuzzing: 10**400 was dropped by the histogram but counted as a win."""
    trading_exporter.record_trade("BTC/USDT", "filled", pnl=-5.0)
    trading_exporter.record_trade("BTC/USDT", "filled", pnl=10**400)
    families = parse(fetch(url))
    assert sample_value(families, "tinywindow_win_rate") == 0.0
    assert sample_value(families, "tinywindow_otel_dropped_measurements_total",
                        metric="tinywindow_trade_pnl_usd", reason="inf") == 1
