"""Derived risk values as pure functions, plus the small state they need.

The exporters feed these; nothing here touches a metric, so every rule can
be tested (and property-tested) on its own.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from dataclasses import asdict, dataclass, field
from datetime import date, datetime, timezone
from statistics import NormalDist
from typing import TypeGuard

# Below this many returns a VaR estimate is noise: the gauge is left unset.
DEFAULT_VAR_MIN_SAMPLES = 30
DEFAULT_VAR_WINDOW = 500
DEFAULT_RETURN_INTERVAL_S = 3600.0


def win_rate_pct(wins: int, losses: int) -> float | None:
    """Percent of decided trades that won; breakeven trades are not decided.

    None when no trade has been decided yet (the gauge is then left unset).
    """
    decided = wins + losses
    if decided <= 0:
        return None
    return 100.0 * wins / decided


def drawdown_pct(peak: float, value: float) -> float:
    """Percent below the running peak, >= 0; 0 at a new peak.

    With a non-positive peak there is no meaningful drawdown percentage; a
    fall from a positive peak to zero or below is reported as 100.
    """
    if peak <= 0:
        return 0.0
    if value >= peak:
        return 0.0
    return min(100.0, 100.0 * (peak - value) / peak)


def change_pct(start: float, value: float) -> float | None:
    """Percent change from ``start`` to ``value``; None when start is not positive."""
    if start <= 0:
        return None
    return 100.0 * (value - start) / start


def gross_exposure(positions: Mapping[str, float], prices: Mapping[str, float]) -> float:
    """Sum of ``|size| * price`` over positions; KeyError naming the symbol when a price is missing."""
    total = 0.0
    for symbol, size in positions.items():
        if symbol not in prices:
            raise KeyError(f"no price for position {symbol!r}")
        total += abs(size * prices[symbol])
    return total


def leverage_ratio(gross: float, equity: float) -> float | None:
    """Gross exposure / equity (x). None when equity is not positive (leverage is undefined)."""
    if equity <= 0:
        return None
    return gross / equity


def _quantile(sorted_values: Sequence[float], p: float) -> float:
    """Linear-interpolation quantile (numpy's default) of already sorted values."""
    pos = p * (len(sorted_values) - 1)
    low = math.floor(pos)
    high = min(low + 1, len(sorted_values) - 1)
    return sorted_values[low] + (sorted_values[high] - sorted_values[low]) * (pos - low)


def _check_var_args(returns: Sequence[float], confidence: float, min_samples: int) -> bool:
    if not 0 < confidence < 1:
        raise ValueError(f"VaR confidence must be in (0, 1), got {confidence!r}")
    if min_samples < 2:
        raise ValueError(f"VaR min_samples must be >= 2, got {min_samples!r}")
    return len(returns) >= min_samples


def historical_var(returns: Sequence[float], confidence: float = 0.95, value: float = 1.0,
                   min_samples: int = DEFAULT_VAR_MIN_SAMPLES) -> float | None:
    """Historical VaR: the loss not exceeded with ``confidence``, as a positive amount of ``value``.

    ``returns`` are fractional returns over the VaR horizon. None with fewer
    than ``min_samples`` returns; 0 when even the bad tail is a gain.
    Non-decreasing in ``confidence``.
    """
    if not _check_var_args(returns, confidence, min_samples):
        return None
    q = _quantile(sorted(returns), 1.0 - confidence)
    return max(0.0, -q) * value


def parametric_var(returns: Sequence[float], confidence: float = 0.95, value: float = 1.0,
                   min_samples: int = DEFAULT_VAR_MIN_SAMPLES) -> float | None:
    """Gaussian (variance-covariance) VaR: ``(z_c * sigma - mu) * value``, floored at 0.

    Same contract as :func:`historical_var`; sigma is the sample standard deviation.
    """
    if not _check_var_args(returns, confidence, min_samples):
        return None
    n = len(returns)
    mu = math.fsum(returns) / n
    sigma = math.sqrt(math.fsum((r - mu) ** 2 for r in returns) / (n - 1))
    z = NormalDist().inv_cdf(confidence)
    return max(0.0, z * sigma - mu) * value


VAR_METHODS = {"historical": historical_var, "parametric": parametric_var}


@dataclass
class PortfolioState:
    """What drawdown and daily P&L need to survive a restart.

    ``peak``: running peak of portfolio value; ``day``: the UTC day the
    ``day_start_value`` belongs to (ISO date); ``returns``: the VaR window of
    per-interval returns, oldest first; ``last_sample_value`` /
    ``last_sample_time`` (UTC epoch seconds): where the next return starts.
    A dict from an older version (without the return fields) still restores.
    """

    peak: float | None = None
    day: str | None = None
    day_start_value: float | None = None
    returns: list[float] = field(default_factory=list)
    last_sample_value: float | None = None
    last_sample_time: float | None = None

    def to_dict(self) -> dict:
        data = asdict(self)
        data["returns"] = list(self.returns)
        return data

    @classmethod
    def from_dict(cls, data: dict) -> PortfolioState:
        known = {"peak", "day", "day_start_value", "returns", "last_sample_value", "last_sample_time"}
        unknown = set(data) - known
        if unknown:
            raise ValueError(f"portfolio state: unknown field(s) {', '.join(sorted(unknown))}")
        for name in ("peak", "day_start_value", "last_sample_value", "last_sample_time"):
            value = data.get(name)
            if value is not None and not is_finite_number(value):
                raise ValueError(f"portfolio state: {name} must be a finite number or null, got {value!r:.80}")
        day = data.get("day")
        if day is not None:
            try:
                date.fromisoformat(day)
            except (TypeError, ValueError):
                raise ValueError(f"portfolio state: day must be an ISO date string or None, got {day!r}") from None
        returns = data.get("returns") or []
        if not isinstance(returns, list) or not all(is_finite_number(r) for r in returns):
            raise ValueError("portfolio state: returns must be a list of finite numbers")
        floats = {name: float(data[name]) for name in ("peak", "day_start_value", "last_sample_value",
                                                       "last_sample_time") if data.get(name) is not None}
        return cls(**{**data, **floats, "returns": [float(r) for r in returns]})


def is_finite_number(value: object) -> TypeGuard[float]:
    """A real number (not a bool) that is finite as a float; huge ints are not (they overflow)."""
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        return False
    try:
        return math.isfinite(value)
    except OverflowError:
        return False


def utc_day(now: datetime | None = None) -> date:
    return (now or datetime.now(timezone.utc)).astimezone(timezone.utc).date()


class PortfolioTracker:
    """Running peak and day-start value; ``update`` returns (drawdown %, daily P&L %).

    ``sample_return`` keeps the VaR window: one return per ``return_interval_s``
    (a value arriving sooner is ignored for VaR), at most ``window`` of them.
    """

    def __init__(self, state: PortfolioState | None = None, *, window: int = DEFAULT_VAR_WINDOW,
                 return_interval_s: float = DEFAULT_RETURN_INTERVAL_S) -> None:
        if window < 2:
            raise ValueError(f"returns window must hold at least 2 returns, got {window!r}")
        if not return_interval_s > 0:
            raise ValueError(f"return interval must be > 0 seconds, got {return_interval_s!r}")
        self.window = window
        self.return_interval_s = return_interval_s
        self.load(state or PortfolioState())

    def load(self, state: PortfolioState) -> None:
        """Adopt ``state`` (e.g. restored after a restart), keeping only the newest ``window`` returns."""
        if len(state.returns) > self.window:
            state.returns = state.returns[-self.window:]
        self.state = state

    def sample_return(self, value: float, now: datetime | None = None) -> float | None:
        """Append the return since the last sample if ``return_interval_s`` has passed; return it.

        A non-positive value has no defined return: it ends the current chain
        (the next positive value starts a new one) instead of poisoning the window.
        """
        state = self.state
        t = (now or datetime.now(timezone.utc)).timestamp()
        if value <= 0:
            state.last_sample_value = state.last_sample_time = None
            return None
        if state.last_sample_value is None or state.last_sample_time is None or t < state.last_sample_time:
            state.last_sample_value, state.last_sample_time = value, t
            return None
        if t - state.last_sample_time < self.return_interval_s:
            return None
        ret = value / state.last_sample_value - 1.0
        if not math.isfinite(ret):
            # An overflowing ratio (a tiny value, then a huge one) is no return: start a new chain,
            # so the window (and the persisted state) holds finite numbers only.
            state.last_sample_value, state.last_sample_time = value, t
            return None
        state.returns.append(ret)
        if len(state.returns) > self.window:
            del state.returns[: len(state.returns) - self.window]
        state.last_sample_value, state.last_sample_time = value, t
        return ret

    def var(self, value: float, confidence: float = 0.95, method: str = "historical",
            horizon_s: float = 86400.0, min_samples: int = DEFAULT_VAR_MIN_SAMPLES) -> float | None:
        """VaR in USD of ``value`` over ``horizon_s``, scaled from the interval returns by sqrt(time).

        None below ``min_samples`` returns or when ``value`` is not positive.
        """
        if value <= 0:
            return None
        per_interval = VAR_METHODS[method](self.state.returns, confidence, value, min_samples)
        if per_interval is None:
            return None
        return per_interval * math.sqrt(horizon_s / self.return_interval_s)

    def update(self, value: float, now: datetime | None = None) -> tuple[float, float | None]:
        state = self.state
        today = utc_day(now).isoformat()
        if state.day != today or state.day_start_value is None:
            # First value seen after 00:00 UTC is the day's reference.
            state.day, state.day_start_value = today, value
        if state.peak is None or value > state.peak:
            state.peak = value
        return drawdown_pct(state.peak, value), change_pct(state.day_start_value, value)
