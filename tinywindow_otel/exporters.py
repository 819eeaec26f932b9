"""Domain-level recorders: one call per trading event, several metrics each.

    >>> from tinywindow_otel.exporters import trading_exporter
    >>> trading_exporter.record_trade(symbol="BTC/USDT", status="filled", pnl=150.0, amount_usd=1000.0)

Derived values (win rate, drawdown, daily P&L) are computed here from what
is recorded, with the rules in ``risk.py``.
"""

from __future__ import annotations

import math
import threading
from collections.abc import Mapping
from datetime import datetime

from .calibration import CalibrationTracker
from .metrics import REGISTRY, MetricRegistry, _check_number, _drops
from .risk import (DEFAULT_RETURN_INTERVAL_S, DEFAULT_VAR_MIN_SAMPLES, DEFAULT_VAR_WINDOW, VAR_METHODS,
                   PortfolioState, PortfolioTracker, gross_exposure, leverage_ratio, win_rate_pct)

UNKNOWN_ERROR_TYPE = "unknown"


class TradingExporter:
    """Trades: counts, realised P&L, notional, and the win rate derived from them."""

    def __init__(self, registry: MetricRegistry = REGISTRY) -> None:
        self._trades = registry.by_attr("trades_total")
        self._pnl = registry.by_attr("trade_pnl_usd")
        self._amount = registry.by_attr("trade_amount_usd")
        self._win_rate = registry.by_attr("win_rate")
        self._lock = threading.Lock()
        self.wins = 0
        self.losses = 0

    def record_trade(self, symbol: str, status: str, pnl: float | None = None, amount_usd: float | None = None) -> None:
        """Count a trade; ``pnl`` (realised, signed) and ``amount_usd`` when known."""
        # Validate everything before recording anything: a bad argument must
        # not leave a half-recorded trade behind.
        trades = self._trades.labels(status=status, symbol=symbol)
        pnl_value = _check_number(self._pnl.name, pnl, "pnl") if pnl is not None else None
        amount = self._amount.labels(symbol=symbol) if amount_usd is not None else None
        if amount_usd is not None:
            _check_number(self._amount.name, amount_usd, "amount_usd")
        trades.inc()
        if amount is not None:
            amount.observe(amount_usd)
        if pnl_value is not None:
            self._pnl.observe(pnl)
            self._count_outcome(pnl_value)  # the float: a huge int counts as dropped, not as a win

    def reset(self) -> None:
        """Forget the win/loss tally (e.g. at the start of a new trading session)."""
        with self._lock:
            self.wins = self.losses = 0

    def _count_outcome(self, pnl: float) -> None:
        if not math.isfinite(pnl):
            return  # dropped (and counted) by the histogram already
        with self._lock:
            if pnl > 0:
                self.wins += 1
            elif pnl < 0:
                self.losses += 1
            else:
                return  # breakeven: neither a win nor a loss
            rate = win_rate_pct(self.wins, self.losses)
        if rate is not None:
            self._win_rate.set(rate)


class PortfolioExporter:
    """Portfolio snapshot: value, unrealised P&L, positions, and the risk values derived from them.

    Drawdown, daily P&L, leverage (when ``prices`` are given) and VaR 95 come
    from ``risk.py``. VaR: one return of the portfolio value per
    ``return_interval_s``, a window of ``var_window`` of them, scaled to one
    day by sqrt(time); the gauge is set only once ``var_min_samples`` returns
    exist. ``var_method=None`` leaves VaR to ``risk_exporter.set_var_95``.
    A derived value that is undefined (daily P&L from a non-positive start,
    leverage with non-positive equity or a missing price) removes its gauge
    rather than leaving a stale value on /metrics.
    """

    def __init__(self, registry: MetricRegistry = REGISTRY, state: PortfolioState | None = None, *,
                 var_method: str | None = "historical", var_min_samples: int = DEFAULT_VAR_MIN_SAMPLES,
                 var_window: int = DEFAULT_VAR_WINDOW,
                 return_interval_s: float = DEFAULT_RETURN_INTERVAL_S) -> None:
        if var_method is not None and var_method not in VAR_METHODS:
            raise ValueError(f"tinywindow_portfolio_var_95: var_method must be one of "
                             f"{', '.join(VAR_METHODS)} or None, got {var_method!r}")
        self._value = registry.by_attr("portfolio_value_usd")
        self._unrealized = registry.by_attr("unrealized_pnl_usd")
        self._positions = registry.by_attr("active_positions")
        self._leverage = registry.by_attr("leverage_ratio")
        self._drawdown = registry.by_attr("drawdown_pct")
        self._daily = registry.by_attr("daily_pnl_pct")
        self._var = registry.by_attr("portfolio_var_95")
        self._lock = threading.Lock()
        self.var_method = var_method
        self.var_min_samples = var_min_samples
        self._tracker_options = {"window": var_window, "return_interval_s": return_interval_s}
        self.tracker = PortfolioTracker(state, **self._tracker_options)

    def update_portfolio(
        self,
        total_value: float,
        unrealized_pnl: float,
        positions: Mapping[str, float],
        leverage: float | None = None,
        *,
        prices: Mapping[str, float] | None = None,
        now: datetime | None = None,
    ) -> None:
        """Replace the portfolio snapshot. Symbols absent from ``positions`` disappear.

        ``leverage`` given wins; otherwise with ``prices`` (symbol -> price) it is
        computed as sum(|size| * price) / total_value.
        """
        value = _check_number(self._value.name, total_value, "total_value")
        _check_number(self._unrealized.name, unrealized_pnl, "unrealized_pnl")
        if not isinstance(positions, Mapping):
            raise TypeError(f"{self._positions.name}: positions must be a mapping of symbol to size, "
                            f"got {type(positions).__name__}")
        sizes = {symbol: _check_number(self._positions.name, size, f"position size for {symbol!r}")
                 for symbol, size in positions.items()}
        series = {symbol: self._positions.labels(symbol=symbol) for symbol in sizes}
        if leverage is not None:
            _check_number(self._leverage.name, leverage, "leverage")
        elif prices is not None:
            if not isinstance(prices, Mapping):
                raise TypeError(f"{self._leverage.name}: prices must be a mapping of symbol to price, "
                                f"got {type(prices).__name__}")
            for symbol, price in prices.items():
                _check_number(self._leverage.name, price, f"price for {symbol!r}")
        if now is not None and not isinstance(now, datetime):
            raise TypeError(f"{self._daily.name}: now must be a datetime, got {type(now).__name__}")
        # Compare canonical label values: a non-str key (say 1) is stored as "1".
        keep = {child.label_values for child in series.values()}

        with self._lock:
            self._value.set(value)
            self._unrealized.set(unrealized_pnl)
            for symbol, size in sizes.items():
                series[symbol].set(size)
            for child in self._positions.series():
                if child.label_values not in keep:
                    self._positions.remove(*child.label_values)
            if leverage is not None:
                self._leverage.set(leverage)
            elif prices is not None:
                self._set_leverage_from_prices(sizes, prices, value)
            if value == value and abs(value) != float("inf"):
                drawdown, daily = self.tracker.update(value, now)
                self._drawdown.set(drawdown)
                if daily is not None:
                    self._daily.set(daily)
                else:
                    self._daily.clear()
                if self.var_method is not None:
                    self.tracker.sample_return(value, now)
                    var = self.tracker.var(value, 0.95, self.var_method, min_samples=self.var_min_samples)
                    if var is not None:
                        self._var.set(var)

    def _set_leverage_from_prices(self, sizes: Mapping[str, float], prices: Mapping[str, float],
                                  equity: float) -> None:
        try:
            ratio = leverage_ratio(gross_exposure(sizes, prices), equity)
        except KeyError as missing:
            _drops.dropped(self._leverage.name, "missing_price", missing.args[0])
            ratio = None
        if ratio is None or ratio != ratio or ratio == float("inf"):
            self._leverage.clear()
        else:
            self._leverage.set(ratio)

    def reset(self) -> None:
        """Forget the peak, day-start value and returns window."""
        with self._lock:
            self.tracker = PortfolioTracker(**self._tracker_options)

    def export_state(self) -> dict:
        """Peak, day-start value and returns window (JSON-serialisable), to persist across a restart."""
        with self._lock:
            return self.tracker.state.to_dict()

    def restore_state(self, state: Mapping) -> None:
        with self._lock:
            self.tracker.state = PortfolioState.from_dict(dict(state))


class RiskExporter:
    """Risk gauges set explicitly, for values computed elsewhere (e.g. the risk engine)."""

    def __init__(self, registry: MetricRegistry = REGISTRY) -> None:
        self._drawdown = registry.by_attr("drawdown_pct")
        self._daily = registry.by_attr("daily_pnl_pct")
        self._leverage = registry.by_attr("leverage_ratio")
        self._var = registry.by_attr("portfolio_var_95")

    def set_drawdown(self, pct: float) -> None:
        self._drawdown.set(pct)

    def set_daily_pnl(self, pct: float) -> None:
        self._daily.set(pct)

    def set_leverage(self, ratio: float) -> None:
        self._leverage.set(ratio)

    def set_var_95(self, usd: float) -> None:
        """1-day 95% VaR in USD as a positive loss."""
        self._var.set(usd)


class APIExporter:
    """External API calls: every request counted, failures also by error type."""

    def __init__(self, registry: MetricRegistry = REGISTRY) -> None:
        self._requests = registry.by_attr("api_requests_total")
        self._errors = registry.by_attr("api_errors_total")
        self._latency = registry.by_attr("api_latency_seconds")

    def record_request(self, service: str, latency_seconds: float, success: bool,
                       error_type: str | None = None) -> None:
        requests = self._requests.labels(service=service)
        latency = self._latency.labels(service=service)
        _check_number(self._latency.name, latency_seconds, "latency_seconds")
        errors = None
        if not success:
            # Only "not given" means unknown: a falsy wrong type ([] or 0) must still raise.
            kind = UNKNOWN_ERROR_TYPE if error_type is None or error_type == "" else error_type
            errors = self._errors.labels(service=service, type=kind)
        requests.inc()
        latency.observe(latency_seconds)
        if errors is not None:
            errors.inc()


class AgentExporter:
    """Agent decisions: count by action and the confidence distribution."""

    def __init__(self, registry: MetricRegistry = REGISTRY) -> None:
        self._decisions = registry.by_attr("agent_decisions_total")
        self._confidence = registry.by_attr("agent_confidence")
        self.calibration = CalibrationTracker(registry)

    def record_decision(self, agent: str, action: str, confidence: float) -> int | None:
        """Count a decision; returns its id for :meth:`record_outcome` (see ``calibration.py``)."""
        decisions = self._decisions.labels(action=action, agent=agent)
        confidence_series = self._confidence.labels(agent=agent)
        _check_number(self._confidence.name, confidence, "confidence")
        decisions.inc()
        confidence_series.observe(confidence)
        return self.calibration.register(agent, confidence)

    def record_outcome(self, decision_id, pnl: float) -> bool:
        """Link a later trade's realised P&L to a decision: outcomes by confidence decile and the Brier score."""
        return self.calibration.record_outcome(decision_id, pnl)


class SafetyExporter:
    """Safety events: circuit breaker trips and kill switch activations."""

    def __init__(self, registry: MetricRegistry = REGISTRY) -> None:
        self._trips = registry.by_attr("circuit_breaker_trips")
        self._kills = registry.by_attr("kill_switch_activations")

    def record_circuit_breaker_trip(self, reason: str) -> None:
        self._trips.labels(reason=reason).inc()

    def record_kill_switch_activation(self, mode: str) -> None:
        self._kills.labels(mode=mode).inc()


trading_exporter = TradingExporter()
portfolio_exporter = PortfolioExporter()
risk_exporter = RiskExporter()
api_exporter = APIExporter()
agent_exporter = AgentExporter()
safety_exporter = SafetyExporter()

__all__ = [
    "APIExporter", "AgentExporter", "PortfolioExporter", "RiskExporter", "SafetyExporter", "TradingExporter",
    "agent_exporter", "api_exporter", "portfolio_exporter", "risk_exporter", "safety_exporter", "trading_exporter",
]
