"""Pure risk functions (with hypothesis properties) and the portfolio exporter that feeds them."""

from __future__ import annotations

import json
import math
from datetime import datetime, timedelta, timezone

import pytest
from helpers import sample_value
from hypothesis import given, settings
from hypothesis import strategies as st

from tinywindow_otel import daily_pnl_pct, drawdown_pct, leverage_ratio, portfolio_var_95
from tinywindow_otel.exporters import PortfolioExporter, portfolio_exporter
from tinywindow_otel.metrics import REGISTRY
from tinywindow_otel.risk import (
    PortfolioState, PortfolioTracker, change_pct, gross_exposure, historical_var, parametric_var, win_rate_pct,
)
from tinywindow_otel.risk import drawdown_pct as drawdown
from tinywindow_otel.risk import leverage_ratio as leverage

T0 = datetime(2024, 3, 1, 12, 0, tzinfo=timezone.utc)
values = st.floats(min_value=-1e9, max_value=1e9, allow_nan=False)
positive = st.floats(min_value=1e-6, max_value=1e9, allow_nan=False)
returns_lists = st.lists(st.floats(min_value=-0.99, max_value=10.0, allow_nan=False), min_size=2, max_size=200)
confidences = st.floats(min_value=0.5, max_value=0.999)


# --- properties ---------------------------------------------------------------------


@given(st.lists(values, min_size=1, max_size=100))
def test_drawdown_in_range_and_zero_at_a_new_peak(series):
    tracker = PortfolioTracker()
    peak = -math.inf
    for value in series:
        dd, _ = tracker.update(value, T0)
        assert 0.0 <= dd <= 100.0
        if value >= peak:
            assert dd == 0.0
        peak = max(peak, value)


@given(positive, positive)
def test_drawdown_is_the_fall_from_a_positive_peak(peak, value):
    expected = 0.0 if value >= peak else 100.0 * (peak - value) / peak
    assert drawdown(peak, value) == pytest.approx(expected)


@given(st.integers(0, 10**6), st.integers(0, 10**6))
def test_win_rate_in_range(wins, losses):
    rate = win_rate_pct(wins, losses)
    if wins + losses == 0:
        assert rate is None
    else:
        assert 0.0 <= rate <= 100.0


@given(returns_lists, confidences, confidences, st.sampled_from([historical_var, parametric_var]))
def test_var_monotone_in_confidence_and_non_negative(returns, c1, c2, method):
    low, high = sorted((c1, c2))
    var_low = method(returns, low, 1000.0, min_samples=2)
    var_high = method(returns, high, 1000.0, min_samples=2)
    assert var_low >= 0.0
    assert var_high >= var_low - 1e-9 * max(1.0, var_low)


@given(returns_lists, confidences)
def test_historical_var_bounded_by_the_worst_loss(returns, confidence):
    var = historical_var(returns, confidence, 1.0, min_samples=2)
    assert var <= max(0.0, -min(returns)) + 1e-12


@given(st.lists(st.floats(-0.5, 0.5, allow_nan=False), max_size=29), st.sampled_from([historical_var, parametric_var]))
def test_var_not_set_below_the_minimum_sample_count(returns, method):
    assert method(returns, 0.95, 1000.0) is None  # default minimum: 30


@given(st.dictionaries(st.text(min_size=1, max_size=5), st.floats(-1e6, 1e6, allow_nan=False), max_size=5),
       positive, positive)
def test_leverage_non_negative_and_scale_invariant(positions, price, equity):
    prices = {symbol: price for symbol in positions}
    gross = gross_exposure(positions, prices)
    ratio = leverage(gross, equity)
    assert ratio >= 0
    assert leverage(2 * gross, 2 * equity) == pytest.approx(ratio)


@settings(max_examples=50)
@given(st.lists(positive, min_size=2, max_size=60), st.integers(0, 59))
def test_state_restore_continues_exactly(series, split):
    split = min(split, len(series) - 1)
    times = [T0 + timedelta(hours=i) for i in range(len(series))]
    straight = PortfolioTracker(return_interval_s=3600)
    outputs = [straight.update(v, t) + (straight.sample_return(v, t),) for v, t in zip(series, times)]

    first = PortfolioTracker(return_interval_s=3600)
    for v, t in zip(series[:split], times[:split]):
        first.update(v, t)
        first.sample_return(v, t)
    saved = json.loads(json.dumps(first.state.to_dict()))
    restored = PortfolioTracker(PortfolioState.from_dict(saved), return_interval_s=3600)
    resumed = [restored.update(v, t) + (restored.sample_return(v, t),) for v, t in zip(series[split:], times[split:])]
    assert resumed == outputs[split:]
    assert restored.state.returns == straight.state.returns


# --- defined edge cases ----------------------------------------------------------------


def test_edge_cases():
    assert drawdown(0.0, -5.0) == 0.0  # no positive peak: no meaningful percentage
    assert drawdown(100.0, 0.0) == 100.0 and drawdown(100.0, -50.0) == 100.0  # wiped out, clamped
    assert change_pct(0.0, 10.0) is None and change_pct(-1.0, 10.0) is None
    assert win_rate_pct(0, 0) is None
    assert leverage(1000.0, 0.0) is None and leverage(1000.0, -5.0) is None
    assert leverage(0.0, 100.0) == 0.0  # flat book
    assert historical_var([], 0.95, 1.0) is None and parametric_var([], 0.95, 1.0) is None
    assert historical_var([0.01] * 30, 0.95, 1000.0) == 0.0  # only gains: no loss at risk
    with pytest.raises(KeyError, match="ETH"):
        gross_exposure({"ETH": 1.0}, {"BTC": 1.0})
    with pytest.raises(ValueError, match="confidence"):
        historical_var([0.0] * 40, 1.0)


def test_historical_var_matches_numpy_linear_quantile():
    returns = [i / 100 - 0.5 for i in range(101)]  # -0.50 .. 0.50
    assert historical_var(returns, 0.95, 1000.0, min_samples=2) == pytest.approx(450.0)


def test_parametric_var_on_known_moments():
    returns = [-0.01, 0.01] * 20  # mean 0, sample std sqrt(40/39) * 0.01
    sigma = 0.01 * math.sqrt(40 / 39)
    assert parametric_var(returns, 0.95, 1000.0) == pytest.approx(1.6448536 * sigma * 1000.0, rel=1e-6)


def test_daily_reference_resets_at_utc_midnight():
    tracker = PortfolioTracker()
    assert tracker.update(1000.0, datetime(2024, 3, 1, 23, 0, tzinfo=timezone.utc)) == (0.0, 0.0)  # first update
    assert tracker.update(900.0, datetime(2024, 3, 1, 23, 59, tzinfo=timezone.utc))[1] == pytest.approx(-10.0)
    # 01:30 in UTC+2 is still 2024-03-01 23:30 UTC: same day.
    plus2 = timezone(timedelta(hours=2))
    assert tracker.update(950.0, datetime(2024, 3, 2, 1, 30, tzinfo=plus2))[1] == pytest.approx(-5.0)
    dd, daily = tracker.update(800.0, datetime(2024, 3, 2, 0, 0, 1, tzinfo=timezone.utc))
    assert daily == 0.0 and dd == pytest.approx(20.0)  # new day; the peak is not reset


def test_returns_sampled_once_per_interval_and_window_bounded():
    tracker = PortfolioTracker(window=3, return_interval_s=60)
    assert tracker.sample_return(100.0, T0) is None  # first value: reference only
    assert tracker.sample_return(200.0, T0 + timedelta(seconds=30)) is None  # too soon
    assert tracker.sample_return(110.0, T0 + timedelta(seconds=60)) == pytest.approx(0.1)
    assert tracker.sample_return(-5.0, T0 + timedelta(seconds=120)) is None  # negative equity breaks the chain
    assert tracker.sample_return(100.0, T0 + timedelta(seconds=180)) is None
    for i in range(4):
        tracker.sample_return(100.0 + i + 1, T0 + timedelta(seconds=240 + 60 * i))
    assert len(tracker.state.returns) == 3


def test_state_from_dict_validates_and_accepts_the_old_shape():
    assert PortfolioState.from_dict({"peak": 1.0, "day": "2024-03-01", "day_start_value": 1.0}).returns == []
    with pytest.raises(ValueError, match="unknown"):
        PortfolioState.from_dict({"peek": 1.0})
    with pytest.raises(ValueError, match="peak"):
        PortfolioState.from_dict({"peak": "lots"})
    with pytest.raises(ValueError, match="returns"):
        PortfolioState.from_dict({"returns": [0.1, float("nan")]})


# --- the exporter feeding them, against real scrapes ---------------------------------------------


def test_portfolio_exporter_sets_var_once_enough_samples(scrape_metrics):
    exporter = PortfolioExporter(var_min_samples=30, return_interval_s=3600)
    value = 10_000.0
    for hour in range(31):  # 31 values -> 30 returns
        assert not portfolio_var_95.series(), "VaR must not be set below the minimum sample count"
        value *= 1.01 if hour % 2 else 0.98
        exporter.update_portfolio(value, 0.0, {}, now=T0 + timedelta(hours=hour))
    families = scrape_metrics()
    var = sample_value(families, "tinywindow_portfolio_var_95")
    expected = historical_var(exporter.tracker.state.returns, 0.95, value) * math.sqrt(24)
    assert var == pytest.approx(expected) and var > 0


def test_leverage_from_prices_and_undefined_cases(scrape_metrics):
    portfolio_exporter.update_portfolio(50_000.0, 0.0, {"BTC/USDT": 1.0, "ETH/USDT": -10.0},
                                        prices={"BTC/USDT": 60_000.0, "ETH/USDT": 3_000.0}, now=T0)
    assert sample_value(scrape_metrics(), "tinywindow_leverage_ratio") == pytest.approx(1.8)
    portfolio_exporter.update_portfolio(50_000.0, 0.0, {"BTC/USDT": 1.0}, leverage=3.0,
                                        prices={"BTC/USDT": 60_000.0}, now=T0)
    assert sample_value(scrape_metrics(), "tinywindow_leverage_ratio") == 3.0  # explicit leverage wins
    portfolio_exporter.update_portfolio(50_000.0, 0.0, {"BTC/USDT": 1.0}, prices={}, now=T0)
    families = scrape_metrics()
    assert sample_value(families, "tinywindow_leverage_ratio") is None  # missing price: removed, not stale
    assert sample_value(families, "tinywindow_otel_dropped_measurements_total",
                        metric="tinywindow_leverage_ratio", reason="missing_price") == 1
    portfolio_exporter.update_portfolio(-100.0, 0.0, {"BTC/USDT": 1.0}, prices={"BTC/USDT": 1.0}, now=T0)
    assert sample_value(scrape_metrics(), "tinywindow_leverage_ratio") is None  # negative equity
    with pytest.raises(TypeError, match="tinywindow_leverage_ratio"):
        portfolio_exporter.update_portfolio(1.0, 0.0, {}, prices={"BTC/USDT": "high"})


def test_documented_update_portfolio_interface_unchanged_and_state_survives_restart(scrape_metrics):
    portfolio_exporter.update_portfolio(total_value=50000.0, unrealized_pnl=500.0,
                                        positions={"BTC/USDT": 0.1}, leverage=1.5)
    portfolio_exporter.update_portfolio(60_000.0, 0.0, {}, now=T0)
    saved = json.dumps(portfolio_exporter.export_state())
    restarted = PortfolioExporter()
    restarted.restore_state(json.loads(saved))
    restarted.update_portfolio(45_000.0, 0.0, {}, now=T0 + timedelta(minutes=5))
    families = scrape_metrics()
    assert sample_value(families, "tinywindow_drawdown_pct") == pytest.approx(25.0)
    assert sample_value(families, "tinywindow_daily_pnl_pct") == pytest.approx(-25.0)


def test_daily_pnl_removed_when_day_start_is_not_positive(scrape_metrics):
    portfolio_exporter.update_portfolio(1000.0, 0.0, {}, now=T0)
    assert daily_pnl_pct.series()
    portfolio_exporter.update_portfolio(-10.0, 0.0, {}, now=T0 + timedelta(days=1))
    families = scrape_metrics()
    assert sample_value(families, "tinywindow_daily_pnl_pct") is None
    assert sample_value(families, "tinywindow_drawdown_pct") == 100.0
    assert drawdown_pct.series() and leverage_ratio is REGISTRY.by_attr("leverage_ratio")


def test_var_method_validated_and_can_be_disabled():
    with pytest.raises(ValueError, match="tinywindow_portfolio_var_95"):
        PortfolioExporter(var_method="monte-carlo")
    exporter = PortfolioExporter(var_method=None, var_min_samples=2, return_interval_s=1)
    for i in range(5):
        exporter.update_portfolio(100.0 - i, 0.0, {}, now=T0 + timedelta(seconds=i))
    assert not portfolio_var_95.series()
