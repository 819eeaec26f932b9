"""A simulated trading workload that exercises every metric, for dashboards and demos.

Each tick: agents decide, API calls succeed or fail with realistic latency,
some decisions become trades with wins and losses, the portfolio is marked
to market. Safety events are rare. Every label set that dashboards and
alerts expect is created at 0 up front, so all 18 families are on /metrics
from the first scrape (and alerts see a counter go 0 -> 1, not appear at 1).
"""

from __future__ import annotations

import random
import threading

from .. import agent_confidence, agent_decisions_total, api_errors_total, api_latency_seconds, api_requests_total
from .. import circuit_breaker_trips, kill_switch_activations, trade_amount_usd, trades_total
from ..exporters import agent_exporter, api_exporter, portfolio_exporter, risk_exporter, safety_exporter
from ..exporters import trading_exporter
from .demo_execution import with_execution

SYMBOLS = {"BTC/USDT": 65_000.0, "ETH/USDT": 3_200.0, "SOL/USDT": 150.0}
SERVICES = {"binance": 0.08, "coinbase": 0.12, "claude": 1.8}  # typical latency, seconds
ERROR_TYPES = ("timeout", "rate_limited", "server_error")
AGENTS = ("market_analyst", "risk_manager", "executor")
ACTIONS = ("buy", "sell", "hold")
STATUSES = ("filled", "rejected", "cancelled", "failed")
BREAKER_REASONS = ("daily_loss", "volatility", "api_errors")
KILL_SWITCH_MODES = ("manual", "automatic")


class TradingSimulation:
    """A deterministic (seeded) random walk of a small crypto portfolio."""

    def __init__(self, seed: int | None = None, starting_value: float = 50_000.0) -> None:
        self.rng = random.Random(seed)
        self.prices = dict(SYMBOLS)
        self.positions: dict[str, float] = {}
        self.cash = starting_value
        self.realised = 0.0

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
        for symbol in self.prices:
            self.prices[symbol] *= 1.0 + rng.gauss(0.0, 0.002)

        for service, typical in SERVICES.items():
            latency = rng.lognormvariate(0.0, 0.5) * typical
            ok = rng.random() > 0.04
            api_exporter.record_request(service, latency, ok, None if ok else rng.choice(ERROR_TYPES))

        agent = rng.choice(AGENTS)
        action = rng.choice(ACTIONS)
        agent_exporter.record_decision(agent, action, min(1.0, max(0.0, rng.betavariate(5, 2))))
        if action != "hold":
            self._trade(rng.choice(list(self.prices)), action)

        value = self.portfolio_value()
        unrealised = value - 50_000.0 - self.realised
        gross = sum(abs(size) * self.prices[s] for s, size in self.positions.items())
        portfolio_exporter.update_portfolio(
            total_value=value,
            unrealized_pnl=unrealised,
            positions={s: size for s, size in self.positions.items() if size},
            leverage=gross / value if value > 0 else 0.0,
        )
        risk_exporter.set_var_95(abs(rng.gauss(0.02, 0.005)) * value)

        if rng.random() < 0.002:
            safety_exporter.record_circuit_breaker_trip(rng.choice(BREAKER_REASONS))
        if rng.random() < 0.0003:
            safety_exporter.record_kill_switch_activation(rng.choice(KILL_SWITCH_MODES))

    def _trade(self, symbol: str, action: str) -> None:
        rng = self.rng
        amount = rng.choice((250.0, 1_000.0, 2_500.0, 5_000.0)) * rng.uniform(0.5, 1.5)
        status = rng.choices(STATUSES, weights=(90, 5, 3, 2))[0]
        if status != "filled":
            trading_exporter.record_trade(symbol, status, amount_usd=amount)
            return
        size = amount / self.prices[symbol] * (1 if action == "buy" else -1)
        held = self.positions.get(symbol, 0.0)
        pnl = None
        if held and (held > 0) != (size > 0):
            # Closing (part of) a position realises P&L against a noisy entry.
            closed = min(abs(held), abs(size))
            pnl = round(closed * self.prices[symbol] * rng.gauss(0.0, 0.02), 2)
            self.realised += pnl
            self.cash += pnl
        self.positions[symbol] = held + size
        self.cash -= size * self.prices[symbol]
        trading_exporter.record_trade(symbol, "filled", pnl=pnl, amount_usd=amount)


def run(stop: threading.Event, ticks_per_second: float = 5.0, seed: int | None = None) -> None:
    """Run the simulation until ``stop`` is set."""
    simulation = TradingSimulation(seed)
    simulation.initialise_series()
    simulation = with_execution(simulation, seed)  # orders, feeds, LLM calls, calibration (demo_execution.py)
    # Catch up until a trade has closed, so win rate and P&L have data at the first scrape.
    for _ in range(1000):
        if trading_exporter.wins + trading_exporter.losses:
            break
        simulation.tick()
    interval = 1.0 / ticks_per_second
    while not stop.is_set():
        simulation.tick()
        stop.wait(interval)
