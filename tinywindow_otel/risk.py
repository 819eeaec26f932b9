"""Derived risk values as pure functions, plus the small state they need.

The exporters feed these; nothing here touches a metric, so every rule can
be tested (and property-tested) on its own.
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass
from datetime import date, datetime, timezone


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


@dataclass
class PortfolioState:
    """What drawdown and daily P&L need to survive a restart.

    ``peak``: running peak of portfolio value; ``day``: the UTC day the
    ``day_start_value`` belongs to (ISO date).
    """

    peak: float | None = None
    day: str | None = None
    day_start_value: float | None = None

    def to_dict(self) -> dict:
        return asdict(self)

    @classmethod
    def from_dict(cls, data: dict) -> PortfolioState:
        unknown = set(data) - {"peak", "day", "day_start_value"}
        if unknown:
            raise ValueError(f"portfolio state: unknown field(s) {', '.join(sorted(unknown))}")
        # Reject bad state here, not on the next portfolio update in the trading loop.
        for field in ("peak", "day_start_value"):
            value = data.get(field)
            if value is not None and (isinstance(value, bool) or not isinstance(value, (int, float))
                                      or not math.isfinite(value)):
                raise ValueError(f"portfolio state: {field} must be a finite number or None, got {value!r}")
        day = data.get("day")
        if day is not None:
            try:
                date.fromisoformat(day)
            except (TypeError, ValueError):
                raise ValueError(f"portfolio state: day must be an ISO date string or None, got {day!r}") from None
        return cls(**data)


def utc_day(now: datetime | None = None) -> date:
    return (now or datetime.now(timezone.utc)).astimezone(timezone.utc).date()


class PortfolioTracker:
    """Running peak and day-start value; ``update`` returns (drawdown %, daily P&L %)."""

    def __init__(self, state: PortfolioState | None = None) -> None:
        self.state = state or PortfolioState()

    def update(self, value: float, now: datetime | None = None) -> tuple[float, float | None]:
        state = self.state
        today = utc_day(now).isoformat()
        if state.day != today or state.day_start_value is None:
            # First value seen after 00:00 UTC is the day's reference.
            state.day, state.day_start_value = today, value
        if state.peak is None or value > state.peak:
            state.peak = value
        return drawdown_pct(state.peak, value), change_pct(state.day_start_value, value)
