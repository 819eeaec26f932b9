"""A simulated trading workload that exercises every metric, for dashboards and demos.

Each tick: agents decide, API calls succeed or fail with realistic latency,
some decisions become trades with wins and losses, the portfolio is marked
to market. Every label set that dashboards and alerts expect is created at 0
up front, so all 18 families are on /metrics from the first scrape (and
alerts see a counter go 0 -> 1, not appear at 1).

Scenarios: ``calm`` (the default) stays inside every alert threshold however
long it runs (no safety event, positions capped below $10K notional, prices
and the portfolio value revert towards where they started); ``breach`` drives each
of the eight trading/API alerts over its threshold in turn and back again
(``BREACH_PHASES``, one condition at a time), so
``tinywindow-otel stack --fast-alerts --scenario breach`` shows each one
FIRING and then RESOLVED within 5 minutes.
"""

from __future__ import annotations

import math
import random
import threading
import time
from dataclasses import dataclass

from .. import agent_confidence, agent_decisions_total, api_errors_total, api_latency_seconds, api_requests_total
from .. import circuit_breaker_trips, kill_switch_activations
from .. import trade_amount_usd, trades_total
from ..exporters import agent_exporter, api_exporter, portfolio_exporter, risk_exporter, safety_exporter
from ..exporters import trading_exporter
from .demo_execution import with_execution

SYMBOLS = {"BTC/USDT": 65_000.0, "ETH/USDT": 3_200.0, "SOL/USDT": 150.0}
SERVICES = {"binance": 0.08, "coinbase": 0.12, "claude": 1.2}  # typical latency, seconds
ERROR_TYPES = ("timeout", "rate_limited", "server_error")
AGENTS = ("market_analyst", "risk_manager", "executor")
ACTIONS = ("buy", "sell", "hold")
STATUSES = ("filled", "rejected", "cancelled", "failed")
BREAKER_REASONS = ("daily_loss", "volatility", "api_errors")
KILL_SWITCH_MODES = ("manual", "automatic")
SCENARIOS = ("calm", "breach")
#: Calm trading keeps each position below this notional (LargePositionSize is at $10K).
CALM_MAX_NOTIONAL = 8_000.0
#: Per tick: price volatility, and the pull of each price back towards its reference
#: (a range-bound market: calm drawdown and daily P&L stay within a few percent for hours).
PRICE_VOLATILITY = 0.002
PRICE_REVERSION = 0.01
#: Per closing trade, the pull of the portfolio's value back towards where it started: the
#: noise of trading (positions times price moves, fills against a noisy entry) is a random walk.
PNL_REVERSION = 0.01


@dataclass(frozen=True)
class Phase:
    """One alert's condition held from ``start`` to ``end`` seconds after the scenario starts."""

    alert: str
    start: float
    end: float
    what: str  # printed when the phase starts

    def active(self, elapsed: float) -> bool:
        return self.start <= elapsed < self.end


# One condition at a time, back to back; how long each alert then takes to
# show FIRING and RESOLVED with --fast-alerts (for: and keep_firing_for: 10s,
# 5s scrapes) is the rules' doing:
#   - events (activation, trade, trip) first: their alerts hold for the rules'
#     2-minute event window after the event, whatever the phase's length;
#   - daily loss, drawdown, leverage: the 45s range window + keep_firing_for,
#     about a minute after the phase ends;
#   - API errors and latency: a burst of healthy calls after the phase (a
#     client draining its queue) brings the 5-minute ratios back in seconds.
# HighLeverage starts after KillSwitchActivated has resolved (Alertmanager
# inhibits it while the kill switch alert is active). The last RESOLVED comes
# well inside 5 minutes (tests/monitoring/test_breach_scenario.py).
BREACH_PHASES = (
    Phase("KillSwitchActivated", 5, 25, 'kill switch "manual" engaged'),
    Phase("LargePositionSize", 25, 35, "buy $25K of SOL; then sell it in trades below $10K"),
    Phase("CircuitBreakerTripped", 35, 55, 'circuit breaker "volatility" open'),
    Phase("DailyLossExceeded", 55, 85, "portfolio marked to a 12% loss on the day, drawdown below 15%"),
    Phase("HighAPIErrorRate", 85, 120, "every binance call fails"),
    Phase("DrawdownExceeded", 120, 150, "a rally to a new peak, then 18% below it; the day stays above -10%"),
    Phase("HighLeverage", 150, 180, "the risk engine reports 20x"),
    Phase("HighAPILatency", 180, 210, "claude calls take 8s"),
)
#: The drawdown phase's rally to a new peak lasts this long (one scrape sees it) before the fall.
RALLY_SECONDS = 5.0
DAILY_LOSS = 0.12     # of the day's start value: below the -10% limit
RALLY = 0.15          # above the day's peak so far
DRAWDOWN = 0.18       # below the rally's peak: above the 15% limit, the day at -5.7% or better
RECOVERY_SECONDS = 20.0
RECOVERY_CALLS_PER_TICK = 40


class TradingSimulation:
    """A deterministic (seeded) random walk of a small crypto portfolio."""

    def __init__(self, seed: int | None = None, starting_value: float = 50_000.0) -> None:
        self.rng = random.Random(seed)
        self.prices = dict(SYMBOLS)
        self.positions: dict[str, float] = {}
        self.cash = starting_value
        self.starting_value = starting_value
        self.realised = 0.0
        # The portfolio values reported so far: the first (the day's start, within one UTC day) and the highest.
        self.first_value: float | None = None
        self.peak_value: float | None = None
        # What a breach scenario changes for this tick (see Breach.apply).
        self.mark = 1.0                     # the portfolio is reported at this multiple of its value
        self.leverage: float | None = None  # reported by "the risk engine" instead of computed
        self.failing: set[str] = set()      # services whose calls all fail
        self.slow: set[str] = set()         # services whose calls take 8 s
        self.recovering: set[str] = set()   # services draining a backlog of healthy calls
        self.halted = False                 # breaker open or kill switch engaged: no new trades

    def initialise_series(self) -> None:
        """Create the expected label sets at 0 so every family is visible at once."""
        for symbol in SYMBOLS:
            trade_amount_usd.labels(symbol=symbol)
            for status in STATUSES:
                trades_total.labels(status=status, symbol=symbol)
        for service in SERVICES:
            api_requests_total.labels(service=service)
            api_latency_seconds.labels(service=service)
            for error_type in ERROR_TYPES:
                api_errors_total.labels(service=service, type=error_type)
        for agent in AGENTS:
            agent_confidence.labels(agent=agent)
            for action in ACTIONS:
                agent_decisions_total.labels(action=action, agent=agent)
        for reason in BREAKER_REASONS:
            circuit_breaker_trips.labels(reason=reason)
        for mode in KILL_SWITCH_MODES:
            kill_switch_activations.labels(mode=mode)

    def portfolio_value(self) -> float:
        return self.cash + sum(size * self.prices[s] for s, size in self.positions.items())

    def tick(self) -> None:
        rng = self.rng
        for symbol, price in self.prices.items():
            pull = PRICE_REVERSION * math.log(price / SYMBOLS[symbol])
            self.prices[symbol] = price * math.exp(rng.gauss(0.0, PRICE_VOLATILITY) - pull)

        for service, typical in SERVICES.items():
            latency = rng.lognormvariate(0.0, 0.5) * typical
            ok = rng.random() > 0.02  # calm: well below HighAPIErrorRate even over the first minute
            if service in self.failing:
                ok = False
            if service in self.slow:
                latency = 8.0
            api_exporter.record_request(service, latency, ok, None if ok else rng.choice(ERROR_TYPES))
            if service in self.recovering:
                for _ in range(RECOVERY_CALLS_PER_TICK):
                    api_exporter.record_request(service, rng.lognormvariate(0.0, 0.3) * typical * 0.5, True)

        agent = rng.choice(AGENTS)
        action = "hold" if self.halted else rng.choice(ACTIONS)
        agent_exporter.record_decision(agent, action, min(1.0, max(0.0, rng.betavariate(5, 2))))
        if action != "hold":
            self._trade(rng.choice(list(self.prices)), action)

        value = self.portfolio_value() * self.mark
        unrealised = value - self.starting_value - self.realised
        portfolio_exporter.update_portfolio(
            total_value=value,
            unrealized_pnl=unrealised,
            positions={s: size for s, size in self.positions.items() if size},
            leverage=self.leverage,
            prices=self.prices,  # leverage (unless reported) and each position's notional
        )
        risk_exporter.set_var_95(abs(rng.gauss(0.02, 0.005)) * value)
        if self.first_value is None:
            self.first_value = value
        self.peak_value = value if self.peak_value is None else max(self.peak_value, value)

    def mark_to(self, value: float) -> None:
        """Report the portfolio at ``value`` from now on (moving with the market from there)."""
        self.mark = value / self.portfolio_value()

    def _trade(self, symbol: str, action: str) -> None:
        rng = self.rng
        amount = rng.choice((250.0, 1_000.0, 2_500.0, 5_000.0)) * rng.uniform(0.5, 1.5)
        held_notional = self.positions.get(symbol, 0.0) * self.prices[symbol]
        signed = amount if action == "buy" else -amount
        if abs(held_notional + signed) > CALM_MAX_NOTIONAL:
            action = "sell" if action == "buy" else "buy"  # the risk limit turns it into a reducing trade
        self.record_fill(symbol, action, amount)

    def record_fill(self, symbol: str, action: str, amount: float) -> None:
        """One trade of ``amount`` USD: rejected/cancelled/failed sometimes, else filled and booked."""
        rng = self.rng
        status = rng.choices(STATUSES, weights=(90, 5, 3, 2))[0]
        if status != "filled":
            trading_exporter.record_trade(symbol, status, amount_usd=amount)
            return
        size = amount / self.prices[symbol] * (1 if action == "buy" else -1)
        held = self.positions.get(symbol, 0.0)
        pnl = None
        if held and (held > 0) != (size > 0):
            # Closing (part of) a position realises P&L against a noisy entry, pulled towards flat.
            closed = min(abs(held), abs(size))
            drift = self.portfolio_value() - self.starting_value
            pnl = round(closed * self.prices[symbol] * rng.gauss(0.0, 0.02) - PNL_REVERSION * drift, 2)
            self.realised += pnl
            self.cash += pnl
        self.positions[symbol] = held + size
        self.cash -= size * self.prices[symbol]
        trading_exporter.record_trade(symbol, "filled", pnl=pnl, amount_usd=amount)

    def book(self, symbol: str, action: str, amount: float) -> None:
        """A filled trade of ``amount`` USD, whatever the calm limits say (breach scenario)."""
        size = amount / self.prices[symbol] * (1 if action == "buy" else -1)
        self.positions[symbol] = self.positions.get(symbol, 0.0) + size
        self.cash -= size * self.prices[symbol]
        trading_exporter.record_trade(symbol, "filled", amount_usd=amount)


class Breach:
    """Drives ``BREACH_PHASES`` on a simulation, by the time elapsed since the scenario started."""

    def __init__(self, simulation: TradingSimulation, out=None) -> None:
        self.simulation = simulation
        self.out = out
        self.started: set[str] = set()
        self.ended: set[str] = set()
        self._sol_before = 0.0          # SOL held before the large buy
        self._rally_peak: float | None = None
        self._fallen = False

    def _say(self, text: str) -> None:
        if self.out is not None:
            self.out(f"scenario breach: {text}")

    def apply(self, elapsed: float) -> None:
        sim = self.simulation
        for phase in BREACH_PHASES:
            if elapsed >= phase.start and phase.alert not in self.started:
                self.started.add(phase.alert)
                self._say(f"{phase.alert} condition on for {phase.end - phase.start:.0f}s: {phase.what}")
                self._start(phase.alert)
            if (phase.alert == "DrawdownExceeded" and not self._fallen and phase.alert in self.started
                    and elapsed >= phase.start + RALLY_SECONDS):
                self._fallen = True
                assert self._rally_peak is not None
                sim.mark_to(self._rally_peak * (1.0 - DRAWDOWN))
            if elapsed >= phase.end and phase.alert in self.started and phase.alert not in self.ended:
                self.ended.add(phase.alert)
                self._say(f"{phase.alert} condition off")
                self._end(phase.alert)
        recovering = set()
        for phase, service in ((_phase("HighAPIErrorRate"), "binance"), (_phase("HighAPILatency"), "claude")):
            if phase.end <= elapsed < phase.end + RECOVERY_SECONDS:
                recovering.add(service)
        sim.recovering = recovering

    def _start(self, alert: str) -> None:
        sim = self.simulation
        if alert == "LargePositionSize":
            self._sol_before = sim.positions.get("SOL/USDT", 0.0)
            sim.book("SOL/USDT", "buy", 25_000.0)
        elif alert == "CircuitBreakerTripped":
            safety_exporter.record_circuit_breaker_trip("volatility")
            sim.halted = True
        elif alert == "KillSwitchActivated":
            safety_exporter.record_kill_switch_activation("manual")
            sim.halted = True
        elif alert == "DailyLossExceeded":
            start, peak = self._day()
            # 12% down on the day, but never 13% below the peak: this phase is the loss alone.
            sim.mark_to(max(start * (1.0 - DAILY_LOSS), peak * 0.87))
        elif alert == "DrawdownExceeded":
            _, peak = self._day()
            self._rally_peak = peak * (1.0 + RALLY)
            sim.mark_to(self._rally_peak)
        elif alert == "HighLeverage":
            sim.leverage = 20.0
        elif alert == "HighAPIErrorRate":
            sim.failing.add("binance")
        elif alert == "HighAPILatency":
            sim.slow.add("claude")

    def _end(self, alert: str) -> None:
        sim = self.simulation
        if alert == "LargePositionSize":
            excess = (sim.positions.get("SOL/USDT", 0.0) - self._sol_before) * sim.prices["SOL/USDT"]
            chunks = math.ceil(excess / 9_000.0)  # each sale below the $10K trade limit
            for _ in range(chunks):
                sim.book("SOL/USDT", "sell", excess / chunks)
        elif alert == "CircuitBreakerTripped":
            safety_exporter.reset_circuit_breaker("volatility")
            sim.halted = "KillSwitchActivated" in self.started - self.ended
        elif alert == "KillSwitchActivated":
            safety_exporter.release_kill_switch("manual")
            sim.halted = "CircuitBreakerTripped" in self.started - self.ended
        elif alert == "DailyLossExceeded":
            sim.mark = 1.0
        elif alert == "DrawdownExceeded":
            assert self._rally_peak is not None
            sim.mark_to(self._rally_peak)  # recovered to the peak: back inside both limits
        elif alert == "HighLeverage":
            sim.leverage = None
        elif alert == "HighAPIErrorRate":
            sim.failing.discard("binance")
        elif alert == "HighAPILatency":
            sim.slow.discard("claude")

    def _day(self) -> tuple[float, float]:
        """The day's first and highest reported portfolio values (the current value before any tick)."""
        sim = self.simulation
        now = sim.portfolio_value() * sim.mark
        return (sim.first_value if sim.first_value is not None else now,
                sim.peak_value if sim.peak_value is not None else now)

    @property
    def done(self) -> bool:
        return len(self.ended) == len(BREACH_PHASES)


def _phase(alert: str) -> Phase:
    return next(phase for phase in BREACH_PHASES if phase.alert == alert)


def run(stop: threading.Event, ticks_per_second: float = 5.0, seed: int | None = None,
        scenario: str = "calm", out=None) -> None:
    """Run the simulation until ``stop`` is set; ``scenario`` is one of ``SCENARIOS``."""
    if scenario not in SCENARIOS:
        raise ValueError(f"unknown scenario {scenario!r}; one of {', '.join(SCENARIOS)}")
    trading = TradingSimulation(seed)
    trading.initialise_series()
    simulation = with_execution(trading, seed)  # orders, feeds, LLM calls, calibration (demo_execution.py)
    # Catch up until a trade has closed, so win rate and P&L have data at the first scrape.
    for _ in range(1000):
        if trading_exporter.wins + trading_exporter.losses:
            break
        simulation.tick()
    breach = Breach(trading, out) if scenario == "breach" else None  # it sets the trading side's knobs
    started = time.monotonic()
    interval = 1.0 / ticks_per_second
    while not stop.is_set():
        if breach is not None and not breach.done:
            breach.apply(time.monotonic() - started)
        simulation.tick()
        stop.wait(interval)
