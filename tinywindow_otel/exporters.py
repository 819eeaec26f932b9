"""Domain-level recorders: one call per trading event, several metrics each.

    >>> from tinywindow_otel.exporters import trading_exporter
    >>> trading_exporter.record_trade(symbol="BTC/USDT", status="filled", pnl=150.0, amount_usd=1000.0)

Derived values (win rate, drawdown, daily P&L, leverage, VaR) are computed
here from what is recorded, with the rules in ``risk.py``. What they need to
survive a restart (win/loss tally, peak, day start, returns window, open
circuit breakers, engaged kill switches, positions, heartbeats) is one JSON
document: ``export_state()`` / ``restore_state()`` in this module.

Every recorder resets its lock and its derived state in a forked child (the
child reports only what it records itself, like the metric values).
"""

from __future__ import annotations

import json
import math
import threading
import time
import weakref
from collections.abc import Mapping
from datetime import datetime
from typing import TYPE_CHECKING, Any

from ._internal.forksafe import reset_after_fork
from ._internal.selfmetrics import OVERFLOW_LABEL_VALUE
from ._internal.series import GaugeSeries
from ._internal.series import check_number as _check_number
from .calibration import CalibrationTracker, DecisionId
from .catalog import TRADE_STATUSES
from .metrics import REGISTRY, Gauge, MetricRegistry
from .risk import (DEFAULT_RETURN_INTERVAL_S, DEFAULT_VAR_MIN_SAMPLES, DEFAULT_VAR_WINDOW, VAR_METHODS,
                   PortfolioState, PortfolioTracker, is_finite_number, leverage_ratio, win_rate_pct)

if TYPE_CHECKING:
    from typing import TypedDict

    class _TrackerOptions(TypedDict):
        """PortfolioTracker's keyword options, kept to build a fresh tracker on reset."""

        window: int
        return_interval_s: float

UNKNOWN_ERROR_TYPE = "unknown"

# TRADE_STATUSES (the catalog's closed set for tinywindow_trades_total{status}): every status a
# trade can be recorded with; anything else raises ``ValueError``.
_STATUSES = frozenset(TRADE_STATUSES)

STATE_VERSION = 2


class _Recorder:
    """Owns one lock and derived state over one registry; a forked child gets a fresh lock and none of the
    derived state (``_internal/forksafe.py``).

    The registry resets it too (``tinywindow_otel.testing.reset()``), and it
    reports what it drops into that registry's self-metrics.
    """

    def __init__(self, registry: MetricRegistry) -> None:
        self._lock = threading.Lock()
        self.registry = registry
        self.drops = registry.drops
        reset_after_fork(self)
        registry.attach_recorder(self)

    def reset(self) -> None:
        """Forget the derived state (the metrics' values stay)."""
        with self._lock:
            self._forget()

    def after_fork_in_child(self) -> None:
        self._lock = threading.Lock()
        self._forget()

    def _forget(self) -> None:
        """Drop derived state (called with the lock held, or in a forked child)."""


def _state_key(metric: Gauge, series: GaugeSeries, value: object) -> str:
    """The label value /metrics shows for ``value`` (the key of recorder state restored later).

    The series already holds it, unless it is the overflow series, which stands
    for many values: then the value's own canonical text.
    """
    key = series.label_values[0]
    return key if key != OVERFLOW_LABEL_VALUE else metric.canonical_labels(value)[0]


def _load_json(state: str | bytes | bytearray | Mapping, what: str) -> dict:
    """The dict from ``export_state()``, or its JSON text."""
    if isinstance(state, (str, bytes, bytearray)):
        try:
            state = json.loads(state)
        except ValueError as exc:
            raise ValueError(f"{what}: not valid JSON ({exc})") from None
    if not isinstance(state, Mapping):
        raise TypeError(f"{what}: expected the mapping export_state() returns or its JSON text, "
                        f"got {type(state).__name__}")
    return dict(state)


def _check_fields(data: Mapping, known: set[str], what: str) -> None:
    unknown = set(data) - known
    if unknown:
        raise ValueError(f"{what}: unknown field(s) {', '.join(sorted(map(str, unknown)))}")


def _timestamp(value: object, what: str) -> float | None:
    if value is None:
        return None
    if not is_finite_number(value) or value < 0:
        raise ValueError(f"{what} must be a non-negative finite number or null, got {value!r:.80}")
    return float(value)


def _check_non_negative(metric: str, value: object, what: str) -> float:
    """``value`` as a float; ValueError naming the metric when it is below 0 (NaN passes: dropped later)."""
    number = _check_number(metric, value, what)
    if number < 0:
        raise ValueError(f"{metric}: {what} must be >= 0, got {value!r:.80}")
    return number


def check_trade(status: object, pnl: object = None, amount_usd: object = None) -> tuple[float | None, float | None]:
    """Validate a trade's status and numbers without recording; returns (pnl, amount_usd) as floats.

    The status must be one of :data:`TRADE_STATUSES`; ``amount_usd`` must not
    be negative. NaN/infinity pass here and are dropped (and counted) when recorded.
    """
    if status not in TRADE_STATUSES or not isinstance(status, str):
        raise (ValueError if isinstance(status, str) else TypeError)(
            f"tinywindow_trades_total: label 'status' must be one of {', '.join(TRADE_STATUSES)}, "
            f"got {type(status).__name__} {status!r:.80}")
    pnl_value = _check_number("tinywindow_trade_pnl_usd", pnl, "pnl") if pnl is not None else None
    amount = (_check_non_negative("tinywindow_trade_amount_usd", amount_usd, "amount_usd")
              if amount_usd is not None else None)
    return pnl_value, amount


class TradingExporter(_Recorder):
    """Trades: counts, realised P&L, notional, the win rate derived from them, and a heartbeat."""

    def __init__(self, registry: MetricRegistry = REGISTRY) -> None:
        super().__init__(registry)
        self._trades = registry.counter("trades_total")
        self._pnl = registry.histogram("trade_pnl_usd")
        self._amount = registry.histogram("trade_amount_usd")
        self._win_rate = registry.gauge("win_rate")
        self._last_trade = registry.gauge("last_trade_timestamp_seconds")
        self.wins = 0
        self.losses = 0
        self.last_trade_time: float | None = None

    def prepare(self, symbol: str, status: str = "filled") -> None:
        """Create the ``tinywindow_trades_total{status,symbol}`` series at 0 (so ``rate()`` sees the first trade).

        Raises at once for a bad symbol or status.
        """
        check_trade(status)
        self._trades.labels(status=status, symbol=symbol)

    def record_trade(self, symbol: str, status: str, pnl: float | None = None, amount_usd: float | None = None) -> None:
        """Count a trade; ``pnl`` (realised, signed) and ``amount_usd`` (>= 0) when known.

        ``status`` is one of :data:`TRADE_STATUSES`. Also sets
        ``tinywindow_last_trade_timestamp_seconds`` (the trading heartbeat).
        """
        # Validate everything before recording anything: a bad argument must
        # not leave a half-recorded trade behind. A bare status (the common
        # decorator case) is checked here without a call.
        if pnl is None and amount_usd is None and status.__class__ is str and status in _STATUSES:
            pnl_value = amount_value = None
        else:
            pnl_value, amount_value = check_trade(status, pnl, amount_usd)
        trades = self._trades.labels(status, symbol)  # positional: the declared order (status, symbol)
        amount = self._amount.labels(symbol=symbol) if amount_usd is not None else None
        trades.inc()
        if amount is not None:
            amount.observe(amount_value)  # type: ignore[arg-type]  # not None: amount_usd is not
        if pnl_value is not None:
            self._pnl.observe(pnl)  # type: ignore[arg-type]  # not None: pnl_value is its check
            if pnl_value != 0 and math.isfinite(pnl_value):  # a huge int is dropped by the histogram: no win
                self._count_outcome(pnl_value > 0)
        now = time.time()
        self.last_trade_time = now
        self._last_trade.set(now)

    def reset(self) -> None:
        """Forget the win/loss tally and heartbeat (e.g. at the start of a new trading session)."""
        super().reset()

    def _forget(self) -> None:
        self.wins = self.losses = 0
        self.last_trade_time = None

    def _count_outcome(self, won: bool) -> None:
        with self._lock:  # the gauge is set under the lock too, so it never goes back to an older rate
            if won:
                self.wins += 1
            else:
                self.losses += 1
            self._win_rate.set(win_rate_pct(self.wins, self.losses))  # type: ignore[arg-type]  # a trade was decided

    def export_state(self) -> dict:
        """Win/loss tally and last trade time (JSON-serialisable)."""
        with self._lock:
            return {"wins": self.wins, "losses": self.losses, "last_trade_time": self.last_trade_time}

    def restore_state(self, state: str | bytes | Mapping) -> None:
        """Adopt a state from :meth:`export_state` (dict or JSON text); republishes win rate and heartbeat."""
        self._apply_state(*self._parse_state(_load_json(state, "trading state")))

    @staticmethod
    def _parse_state(data: dict) -> tuple[int, int, float | None]:
        _check_fields(data, {"wins", "losses", "last_trade_time"}, "trading state")
        tally = []
        for name in ("wins", "losses"):
            value = data.get(name, 0)
            if isinstance(value, bool) or not isinstance(value, int) or value < 0:
                raise ValueError(f"trading state: {name} must be a non-negative integer, got {value!r:.80}")
            tally.append(value)
        return tally[0], tally[1], _timestamp(data.get("last_trade_time"), "trading state: last_trade_time")

    def _apply_state(self, wins: int, losses: int, last: float | None) -> None:
        with self._lock:
            self.wins, self.losses = wins, losses
            rate = win_rate_pct(wins, losses)
            if rate is not None:
                self._win_rate.set(rate)
            else:
                self._win_rate.clear()  # no decided trade: no win rate, not the one before the restore
            # A heartbeat is the latest time known, restored or recorded since start.
            if last is not None and (self.last_trade_time is None or last > self.last_trade_time):
                self.last_trade_time = last
                self._last_trade.set(last)


class _PortfolioGauges(_Recorder):
    """The one writer of a registry's position gauges and its four risk gauges.

    Positions: the published snapshot (``publish``) replaces the previous one
    under one lock, whichever exporter or thread publishes it. Risk gauges:
    values come from two sources, derived by a :class:`PortfolioExporter` or
    set explicitly through :class:`RiskExporter` (a risk engine). Once a gauge
    is set explicitly it is owned by that source until ``reset_owners()``: the
    derived value no longer overwrites it, so the gauge never flips between
    two answers from one scrape to the next.
    """

    RISK_GAUGES = ("drawdown_pct", "daily_pnl_pct", "leverage_ratio", "portfolio_var_95")

    def __init__(self, registry: MetricRegistry) -> None:
        super().__init__(registry)
        self.gauges = {attr: registry.gauge(attr) for attr in self.RISK_GAUGES}
        self.positions = registry.gauge("active_positions")
        self.notional = registry.gauge("position_notional_usd")
        self.explicit: set[str] = set()
        # label value -> (size, notional or None): what this process recorded, for export_state().
        self.snapshot: dict[str, tuple[float, float | None]] = {}
        # The symbols on /metrics, to remove when absent from the next snapshot (kept across a fork:
        # the child's next snapshot still replaces the inherited series).
        self.published: set[str] = set()

    # -- positions ----------------------------------------------------------------

    def publish(self, snapshot: dict[str, tuple[float, float | None]]) -> None:
        with self._lock:
            # Series are looked up under the lock: another thread's update
            # cannot remove one between our lookup and our set.
            for key, (size, notional) in snapshot.items():
                self.positions.labels(symbol=key).set(size)
                self._set_notional(key, notional)
            for key in self.published - snapshot.keys():
                self.positions.remove(key)
                self.notional.remove(key)
            self.snapshot, self.published = snapshot, set(snapshot)

    def _set_notional(self, key: str, notional: float | None) -> None:
        if notional is None:
            self.notional.remove(key)
        elif math.isfinite(notional):
            self.notional.labels(symbol=key).set(notional)
        else:  # an overflowing size * price: no value rather than a stale one
            self.drops.dropped(self.notional.name, "nan" if notional != notional else "inf", notional)
            self.notional.remove(key)

    def export_positions(self) -> tuple[dict[str, float], dict[str, float]]:
        with self._lock:
            items = list(self.snapshot.items())
        positions = {key: size for key, (size, _) in items if math.isfinite(size)}
        notionals = {key: notional for key, (_, notional) in items if notional is not None and math.isfinite(notional)}
        return positions, notionals

    # -- risk gauges ----------------------------------------------------------------

    def set_explicit(self, attr: str, value: float) -> None:
        gauge = self.gauges[attr]
        _check_number(gauge.name, value)
        with self._lock:
            self.explicit.add(attr)
            gauge.set(value)

    def set_given(self, attr: str, value: float) -> None:
        """Publish a value the portfolio update was given (NaN/inf dropped and counted, previous value kept)."""
        with self._lock:
            if attr not in self.explicit:
                self.gauges[attr].set(value)

    def set_derived(self, attr: str, value: float | None) -> None:
        """Publish a derived value; None or a non-finite value removes the gauge (undefined, not stale)."""
        with self._lock:
            if attr in self.explicit:
                return
            gauge = self.gauges[attr]
            if value is None or not math.isfinite(value):
                gauge.clear()
            else:
                gauge.set(value)

    def reset_owners(self) -> None:
        with self._lock:
            self.explicit.clear()

    def reset(self) -> None:
        """With the registry's series cleared: no snapshot, nothing published, every risk gauge derived."""
        with self._lock:
            self.snapshot, self.published = {}, set()
            self.explicit.clear()

    def _forget(self) -> None:
        # In a forked child: the positions are the parent's. Which source owns a risk gauge is
        # configuration, and the published symbols are still on this registry: both stay.
        self.snapshot = {}


class _GaugesByRegistry:
    """One ``_PortfolioGauges`` per registry, shared by every portfolio and risk recorder on it."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._by_registry: weakref.WeakKeyDictionary[MetricRegistry, _PortfolioGauges] = weakref.WeakKeyDictionary()
        reset_after_fork(self)

    def of(self, registry: MetricRegistry) -> _PortfolioGauges:
        with self._lock:
            gauges = self._by_registry.get(registry)
            if gauges is None:
                gauges = self._by_registry[registry] = _PortfolioGauges(registry)
            return gauges

    def after_fork_in_child(self) -> None:
        self._lock = threading.Lock()


_portfolio_gauges = _GaugesByRegistry().of


class PortfolioExporter(_Recorder):
    """Portfolio snapshot: value, unrealised P&L, positions and their notional, and the risk values derived from them.

    Drawdown, daily P&L, leverage (when ``prices`` or ``notionals`` are given)
    and VaR 95 come from ``risk.py``. VaR: one return of the portfolio value
    per ``return_interval_s``, a window of ``var_window`` of them, scaled to
    one day by sqrt(time); the gauge is set only once ``var_min_samples``
    returns exist. ``var_method=None`` leaves VaR to ``risk_exporter.set_var_95``.
    A derived value that is undefined (daily P&L from a non-positive start,
    leverage with non-positive equity or a missing price) removes its gauge
    rather than leaving a stale value on /metrics. A risk gauge set through
    ``risk_exporter`` is no longer derived here (one owner per gauge).
    A non-finite ``total_value`` is dropped (and counted) with everything
    derived from it: the previous drawdown, leverage, ... stay.
    """

    def __init__(self, registry: MetricRegistry = REGISTRY, state: PortfolioState | None = None, *,
                 var_method: str | None = "historical", var_min_samples: int = DEFAULT_VAR_MIN_SAMPLES,
                 var_window: int = DEFAULT_VAR_WINDOW,
                 return_interval_s: float = DEFAULT_RETURN_INTERVAL_S) -> None:
        if var_method is not None and var_method not in VAR_METHODS:
            raise ValueError(f"tinywindow_portfolio_var_95: var_method must be one of "
                             f"{', '.join(VAR_METHODS)} or None, got {var_method!r}")
        super().__init__(registry)
        self._value = registry.gauge("portfolio_value_usd")
        self._unrealized = registry.gauge("unrealized_pnl_usd")
        self._gauges = _portfolio_gauges(registry)
        self._positions = self._gauges.positions
        self._notional = self._gauges.notional
        self._risk = self._gauges
        self.var_method = var_method
        self.var_min_samples = var_min_samples
        self._tracker_options: _TrackerOptions = {"window": var_window, "return_interval_s": return_interval_s}
        self.tracker = PortfolioTracker(state, **self._tracker_options)

    def update_portfolio(
        self,
        total_value: float,
        unrealized_pnl: float,
        positions: Mapping[str, float],
        leverage: float | None = None,
        *,
        prices: Mapping[str, float] | None = None,
        notionals: Mapping[str, float] | None = None,
        now: datetime | None = None,
    ) -> None:
        """Replace the portfolio snapshot. Symbols absent from ``positions`` disappear.

        ``tinywindow_position_notional_usd{symbol}`` is ``notionals[symbol]``
        (absolute USD) when given, else ``|size| * prices[symbol]``.
        ``leverage`` given wins; otherwise, with ``prices`` or ``notionals``,
        it is sum(notional) / total_value.
        """
        value = _check_number(self._value.name, total_value, "total_value")
        _check_number(self._unrealized.name, unrealized_pnl, "unrealized_pnl")
        if not isinstance(positions, Mapping):
            raise TypeError(f"{self._positions.name}: positions must be a mapping of symbol to size, "
                            f"got {type(positions).__name__}")
        # Each symbol as the label value /metrics shows, checked first with the metric API's
        # rules: an int subclass's own __str__ or a 5000-digit int never reaches a key or a message.
        label_of = self._positions.canonical_labels
        labels = {symbol: label_of(symbol)[0] for symbol in positions}
        sizes = {symbol: _check_number(self._positions.name, size, f"position size for {labels[symbol]!r}")
                 for symbol, size in positions.items()}
        leverage_name = self._risk.gauges["leverage_ratio"].name
        if leverage is not None:
            _check_number(leverage_name, leverage, "leverage")
        notional_by_symbol = self._notionals(sizes, prices, notionals)
        if now is not None and not isinstance(now, datetime):
            raise TypeError(f"{self._risk.gauges['daily_pnl_pct'].name}: now must be a datetime, "
                            f"got {type(now).__name__}")
        finite_value = math.isfinite(value)
        snapshot = {labels[symbol]: (size, notional_by_symbol.get(symbol)) for symbol, size in sizes.items()}

        with self._lock:
            self._value.set(value)
            self._unrealized.set(unrealized_pnl)
            self._gauges.publish(snapshot)
            if leverage is not None:
                self._risk.set_given("leverage_ratio", leverage)
            elif (prices is not None or notionals is not None) and finite_value:
                self._set_leverage(notional_by_symbol, sizes, value)
            if finite_value:
                self._derive_from_value(value, now)

    def _notionals(self, sizes: Mapping, prices: Mapping | None, notionals: Mapping | None) -> dict:
        """symbol -> absolute USD notional, for the positions whose notional is known."""
        name = self._notional.name
        # Prices were first used for leverage only: their errors keep naming it.
        price_metric = self._risk.gauges["leverage_ratio"].name
        result = {}
        for given, what, metric in ((prices, "prices", price_metric), (notionals, "notionals", name)):
            if given is not None and not isinstance(given, Mapping):
                raise TypeError(f"{metric}: {what} must be a mapping of symbol to {what[:-1]}, "
                                f"got {type(given).__name__}")
        if prices is not None:
            for symbol, price in prices.items():
                price = _check_number(price_metric, price, f"price for {symbol!r:.80}")
                if symbol in sizes:
                    result[symbol] = abs(sizes[symbol] * price)
        if notionals is not None:
            for symbol, notional in notionals.items():
                notional = _check_number(name, notional, f"notional for {symbol!r:.80}")
                if symbol not in sizes:
                    raise ValueError(f"{name}: notional for {symbol!r:.80}, which is not in positions")
                result[symbol] = abs(notional)
        return result

    def _set_leverage(self, notional_by_symbol: Mapping, sizes: Mapping, equity: float) -> None:
        missing = [symbol for symbol in sizes if symbol not in notional_by_symbol]
        if missing:
            self.drops.dropped(self._risk.gauges["leverage_ratio"].name, "missing_price", missing[0])
            self._risk.set_derived("leverage_ratio", None)
            return
        gross = math.fsum(notional_by_symbol[symbol] for symbol in sizes)
        self._risk.set_derived("leverage_ratio", leverage_ratio(gross, equity))

    def _derive_from_value(self, value: float, now: datetime | None) -> None:
        tracker = self.tracker
        drawdown, daily = tracker.update(value, now)
        self._risk.set_derived("drawdown_pct", drawdown)
        self._risk.set_derived("daily_pnl_pct", daily)
        if self.var_method is not None:
            tracker.sample_return(value, now)
            var = tracker.var(value, 0.95, self.var_method, min_samples=self.var_min_samples)
            if var is not None:  # below the minimum sample count the gauge stays unset
                self._risk.set_derived("portfolio_var_95", var)

    def reset(self) -> None:
        """Forget the peak, day-start value and returns window; risk gauges set via ``risk_exporter`` are derived again."""
        super().reset()
        self._gauges.reset_owners()

    def _forget(self) -> None:
        self.tracker = PortfolioTracker(**self._tracker_options)

    def export_state(self) -> dict:
        """Peak, day-start value, returns window and positions (JSON-serialisable, finite numbers only)."""
        with self._lock:
            data = self.tracker.state.to_dict()
        data["positions"], data["notionals"] = self._gauges.export_positions()
        return data

    def restore_state(self, state: str | bytes | Mapping) -> None:
        """Adopt a state from :meth:`export_state` (dict or JSON text); republishes the positions.

        A returns window longer than this exporter's keeps the newest returns.
        """
        self._apply_state(*self._parse_state(_load_json(state, "portfolio state")))

    @staticmethod
    def _parse_state(data: dict) -> tuple[PortfolioState, dict]:
        positions = data.pop("positions", None) or {}
        notionals = data.pop("notionals", None) or {}
        for field, mapping in (("positions", positions), ("notionals", notionals)):
            if not isinstance(mapping, Mapping) or not all(
                    isinstance(k, str) and is_finite_number(v) for k, v in mapping.items()):
                raise ValueError(f"portfolio state: {field} must map symbols to finite numbers")
        unknown = set(notionals) - set(positions)
        if unknown:
            raise ValueError(f"portfolio state: notionals for symbols not in positions: {', '.join(sorted(unknown))}")
        snapshot = {key: (float(size), abs(float(notionals[key])) if key in notionals else None)
                    for key, size in positions.items()}
        return PortfolioState.from_dict(data), snapshot

    def _apply_state(self, tracker_state: PortfolioState, snapshot: dict) -> None:
        with self._lock:
            self.tracker.load(tracker_state)
            self._gauges.publish(snapshot)


class RiskExporter:
    """Risk gauges set explicitly, for values computed elsewhere (e.g. the risk engine).

    A gauge set here is owned by this source from then on: ``portfolio_exporter``
    stops deriving it (until ``portfolio_exporter.reset()``), so the two never
    overwrite each other.
    """

    def __init__(self, registry: MetricRegistry = REGISTRY) -> None:
        self._risk = _portfolio_gauges(registry)

    def set_drawdown(self, pct: float) -> None:
        self._risk.set_explicit("drawdown_pct", pct)

    def set_daily_pnl(self, pct: float) -> None:
        self._risk.set_explicit("daily_pnl_pct", pct)

    def set_leverage(self, ratio: float) -> None:
        self._risk.set_explicit("leverage_ratio", ratio)

    def set_var_95(self, usd: float) -> None:
        """1-day 95% VaR in USD as a positive loss."""
        self._risk.set_explicit("portfolio_var_95", usd)


class BoundAPICall:
    """The series of one service, looked up once (what ``api_call(service)`` records into)."""

    __slots__ = ("service", "requests", "latency", "_errors")

    def __init__(self, exporter: APIExporter, service: str) -> None:
        self.service = service
        self.requests = exporter.requests.labels(service=service)
        self.latency = exporter.latency.labels(service=service)
        self._errors = exporter.errors

    def error(self, error_type: str) -> None:
        """Count one failed call of this service."""
        self._errors.labels(service=self.service, type=error_type).inc()


class APIExporter:
    """External API calls: every request counted, failures also by error type."""

    def __init__(self, registry: MetricRegistry = REGISTRY) -> None:
        self.registry = registry
        self.requests = registry.counter("api_requests_total")
        self.errors = registry.counter("api_errors_total")
        self.latency = registry.histogram("api_latency_seconds")

    def bind(self, service: str) -> BoundAPICall:
        """The series of ``service``, created now (raises for a bad label)."""
        return BoundAPICall(self, service)

    def record_request(self, service: str, latency_seconds: float, success: bool,
                       error_type: str | None = None) -> None:
        """Count a request, its latency (seconds, >= 0) and, if it failed, its error type."""
        _check_non_negative(self.latency.name, latency_seconds, "latency_seconds")
        requests = self.requests.labels(service=service)
        latency = self.latency.labels(service=service)
        errors = None
        if not success:
            # Only "not given" means unknown: a falsy wrong type ([] or 0) must still raise.
            kind = UNKNOWN_ERROR_TYPE if error_type is None or error_type == "" else error_type
            errors = self.errors.labels(service=service, type=kind)
        requests.inc()
        latency.observe(latency_seconds)
        if errors is not None:
            errors.inc()


class BoundDecisions:
    """One agent's series, looked up once (what ``agent_decision(agent)`` records into)."""

    __slots__ = ("agent", "drops", "_key", "_exporter", "_decisions", "_confidence", "_confidence_name",
                 "_heartbeat")

    def __init__(self, exporter: AgentExporter, agent: str) -> None:
        self.agent = agent
        self.drops = exporter.drops
        self._exporter = exporter
        self._decisions = exporter.decisions
        self._confidence = exporter.confidence.labels(agent=agent)  # a bad agent label raises here
        self._confidence_name = exporter.confidence.name
        self._heartbeat = exporter.last_decision.labels(agent=agent)
        self._key = _state_key(exporter.last_decision, self._heartbeat, agent)

    def record(self, action: str, confidence: float) -> DecisionId | None:
        """As ``AgentExporter.record_decision``; returns the decision's id for ``record_outcome``."""
        number = _check_number(self._confidence_name, confidence, "confidence")
        if not 0.0 <= number <= 1.0 and number == number:  # NaN is dropped (and counted) by the histogram
            raise ValueError(f"{self._confidence_name}: confidence must be in [0, 1], got {confidence!r:.80}")
        decisions = self._decisions.labels(action=action, agent=self.agent)
        now = time.time()
        decisions.inc()
        self._confidence.observe(confidence)
        # One dict item set: atomic, so no lock on this hot path.
        exporter = self._exporter
        exporter.last_decision_times[self._key] = now
        self._heartbeat.set(now)
        return exporter.calibration.register(self.agent, confidence)


class AgentExporter(_Recorder):
    """Agent decisions: count by action, the confidence distribution, and a heartbeat per agent."""

    def __init__(self, registry: MetricRegistry = REGISTRY) -> None:
        super().__init__(registry)
        self.decisions = registry.counter("agent_decisions_total")
        self.confidence = registry.histogram("agent_confidence")
        self.last_decision = registry.gauge("last_decision_timestamp_seconds")
        self.last_decision_times: dict[str, float] = {}
        self.calibration = CalibrationTracker(registry)

    def bind(self, agent: str) -> BoundDecisions:
        """The agent's series, created now (raises for a bad label)."""
        return BoundDecisions(self, agent)

    def record_decision(self, agent: str, action: str, confidence: float) -> DecisionId | None:
        """Count a decision; ``confidence`` in [0, 1]. Sets ``tinywindow_last_decision_timestamp_seconds{agent}``.

        Returns the decision's id for :meth:`record_outcome` (see ``calibration.py``).
        """
        number = _check_number(self.confidence.name, confidence, "confidence")
        if not 0.0 <= number <= 1.0 and number == number:  # NaN is dropped (and counted) by the histogram
            raise ValueError(f"{self.confidence.name}: confidence must be in [0, 1], got {confidence!r:.80}")
        decisions = self.decisions.labels(action=action, agent=agent)
        confidence_series = self.confidence.labels(agent=agent)
        heartbeat = self.last_decision.labels(agent=agent)
        now = time.time()
        decisions.inc()
        confidence_series.observe(confidence)
        # One dict item set: atomic, no lock on this hot path.
        self.last_decision_times[_state_key(self.last_decision, heartbeat, agent)] = now
        heartbeat.set(now)
        return self.calibration.register(agent, confidence)

    def record_outcome(self, decision_id: DecisionId, pnl: float) -> bool:
        """Link a later trade's realised P&L to a decision: outcomes by confidence decile and the Brier score."""
        return self.calibration.record_outcome(decision_id, pnl)

    def _forget(self) -> None:
        self.last_decision_times = {}

    def export_state(self) -> dict:
        """Last decision time per agent (JSON-serialisable)."""
        with self._lock:
            return {"last_decision_times": dict(self.last_decision_times)}

    def restore_state(self, state: str | bytes | Mapping) -> None:
        self._apply_state(*self._parse_state(_load_json(state, "agent state")))

    @staticmethod
    def _parse_state(data: dict) -> tuple[dict[str, float]]:
        _check_fields(data, {"last_decision_times"}, "agent state")
        times = data.get("last_decision_times") or {}
        if not isinstance(times, Mapping) or not all(
                isinstance(k, str) and v is not None for k, v in times.items()):
            raise ValueError("agent state: last_decision_times must map agent names to times")
        parsed: dict[str, float] = {}
        for agent, t in times.items():
            parsed[agent] = _timestamp(t, f"agent state: last decision time of {agent!r:.80}") or 0.0  # not None: checked
        return (parsed,)

    def _apply_state(self, times: dict[str, float]) -> None:
        with self._lock:
            # A heartbeat is the latest time known, restored or recorded since start.
            for agent, t in times.items():
                if t > self.last_decision_times.get(agent, -1.0):
                    self.last_decision.labels(agent=agent).set(t)
                    self.last_decision_times[agent] = t


class SafetyExporter(_Recorder):
    """Safety events and state: circuit breaker trips / open, kill switch activations / engaged."""

    def __init__(self, registry: MetricRegistry = REGISTRY) -> None:
        super().__init__(registry)
        self._trips = registry.counter("circuit_breaker_trips")
        self._kills = registry.counter("kill_switch_activations")
        self._open = registry.gauge("circuit_breaker_open")
        self._engaged = registry.gauge("kill_switch_engaged")
        self.breakers: dict[str, bool] = {}
        self.kill_switches: dict[str, bool] = {}

    def record_circuit_breaker_trip(self, reason: str) -> None:
        """Count a trip and mark the breaker open (``tinywindow_circuit_breaker_open{reason}`` 1)."""
        trips, state = self._trips.labels(reason=reason), self._open.labels(reason=reason)
        with self._lock:
            trips.inc()
            state.set(1)
            self.breakers[_state_key(self._open, state, reason)] = True

    def reset_circuit_breaker(self, reason: str) -> None:
        """Mark the breaker closed again (``tinywindow_circuit_breaker_open{reason}`` 0)."""
        state = self._open.labels(reason=reason)
        with self._lock:
            state.set(0)
            self.breakers[_state_key(self._open, state, reason)] = False

    def record_kill_switch_activation(self, mode: str) -> None:
        """Count an activation and mark the kill switch engaged (``tinywindow_kill_switch_engaged{mode}`` 1)."""
        kills, state = self._kills.labels(mode=mode), self._engaged.labels(mode=mode)
        with self._lock:
            kills.inc()
            state.set(1)
            self.kill_switches[_state_key(self._engaged, state, mode)] = True

    def release_kill_switch(self, mode: str) -> None:
        """Mark the kill switch released (``tinywindow_kill_switch_engaged{mode}`` 0)."""
        state = self._engaged.labels(mode=mode)
        with self._lock:
            state.set(0)
            self.kill_switches[_state_key(self._engaged, state, mode)] = False

    def _forget(self) -> None:
        self.breakers, self.kill_switches = {}, {}

    def export_state(self) -> dict:
        """Which breakers are open and which kill switches engaged (JSON-serialisable)."""
        with self._lock:
            return {"circuit_breakers_open": dict(self.breakers), "kill_switches_engaged": dict(self.kill_switches)}

    def restore_state(self, state: str | bytes | Mapping) -> None:
        self._apply_state(*self._parse_state(_load_json(state, "safety state")))

    @staticmethod
    def _parse_state(data: dict) -> tuple[dict[str, bool], dict[str, bool]]:
        _check_fields(data, {"circuit_breakers_open", "kill_switches_engaged"}, "safety state")
        parsed = []
        for field in ("circuit_breakers_open", "kill_switches_engaged"):
            mapping = data.get(field) or {}
            if not isinstance(mapping, Mapping) or not all(
                    isinstance(k, str) and isinstance(v, bool) for k, v in mapping.items()):
                raise ValueError(f"safety state: {field} must map names to true/false")
            parsed.append(dict(mapping))
        return parsed[0], parsed[1]

    def _apply_state(self, breakers: dict[str, bool], kill_switches: dict[str, bool]) -> None:
        # Merged by name: a breaker or kill switch this process has set since start and the
        # document does not name keeps its state.
        with self._lock:
            for reason, is_open in breakers.items():
                self._open.labels(reason=reason).set(1 if is_open else 0)
            for mode, engaged in kill_switches.items():
                self._engaged.labels(mode=mode).set(1 if engaged else 0)
            self.breakers = {**self.breakers, **breakers}
            self.kill_switches = {**self.kill_switches, **kill_switches}


trading_exporter = TradingExporter()
portfolio_exporter = PortfolioExporter()
risk_exporter = RiskExporter()
api_exporter = APIExporter()
agent_exporter = AgentExporter()
safety_exporter = SafetyExporter()

_STATE_PARTS: dict[str, Any] = {"trading": trading_exporter, "portfolio": portfolio_exporter,
                "agents": agent_exporter, "safety": safety_exporter}


def reset() -> None:
    """Forget the derived state of every default recorder (tally, peak, breakers, heartbeats, risk gauge owners)."""
    for recorder in (trading_exporter, portfolio_exporter, agent_exporter, safety_exporter):
        recorder.reset()


def export_state() -> dict:
    """Everything the default recorders need to survive a restart, as one JSON-serialisable dict.

        Path("state.json").write_text(json.dumps(export_state()))
        ...
        restore_state(Path("state.json").read_text())

    Only finite numbers: ``json.dumps(export_state(), allow_nan=False)`` always works.
    """
    state: dict = {"version": STATE_VERSION}
    for name, recorder in _STATE_PARTS.items():
        state[name] = recorder.export_state()
    return state


def restore_state(state: str | bytes | Mapping) -> None:
    """Restore what :func:`export_state` gave (the dict or its JSON text), all or nothing.

    Also accepts the portfolio-only dict of ``portfolio_exporter.export_state()``.
    Open circuit breakers, engaged kill switches, positions, win rate and
    heartbeats are published again at once.
    """
    data = _load_json(state, "state")
    if not data.keys() & {"version", *_STATE_PARTS}:  # a portfolio_exporter.export_state() dict
        data = {"portfolio": data}
    _check_fields(data, {"version", *_STATE_PARTS}, "state")
    version = data.get("version", STATE_VERSION)
    if version != STATE_VERSION:
        raise ValueError(f"state: version {version!r:.20} is not supported (expected {STATE_VERSION})")
    # Parse every part before applying any: a bad part leaves everything as it was.
    parsed = {name: recorder._parse_state(_load_json(data[name], f"{name} state"))
              for name, recorder in _STATE_PARTS.items() if data.get(name) is not None}
    for name, values in parsed.items():
        _STATE_PARTS[name]._apply_state(*values)


__all__ = [
    "APIExporter", "AgentExporter", "BoundAPICall", "BoundDecisions", "PortfolioExporter", "RiskExporter", "SafetyExporter",
    "TRADE_STATUSES", "TradingExporter", "agent_exporter", "api_exporter", "check_trade", "export_state",
    "portfolio_exporter", "reset", "restore_state", "risk_exporter", "safety_exporter", "trading_exporter",
]
