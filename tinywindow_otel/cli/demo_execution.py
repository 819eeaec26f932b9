"""The demo's execution side: orders, feeds, rate limits, LLM calls and calibrated decisions.

Runs beside ``demo.TradingSimulation`` (``with_execution`` wraps it) so the
``tinywindow-execution`` and ``tinywindow-agents`` dashboards have data on
every panel. Latencies are simulated: timestamps are placed in the recent
past (the ``at=`` / ``started_at`` replay hooks), nothing sleeps. The
simulated system stays healthy, so the demo fires none of the execution
alerts: feeds deliver, rate limits stay below 90 %, rejections and slippage
stay low, spend stays under the budget and the agents are roughly calibrated.
"""

from __future__ import annotations

import random
from collections import deque
from time import perf_counter
from typing import TypeVar, cast

from ..calibration import DecisionId
from ..exchange import feed, record_rate_limit
from ..exporters import agent_exporter
from ..llm import llm_call
from ..metrics import REGISTRY
from ..orders import Order

# venue -> (typical ack latency s, reference price per symbol)
VENUES = {"binance": 0.015, "coinbase": 0.045}
STREAMS = ("trades", "depth")
REJECT_REASONS = ("insufficient_funds", "min_notional", "price_band")
REJECT_SPACING = 20  # HighOrderRejectRate is at 10% of submitted orders
MODELS = (("anthropic", "claude-sonnet-4-5", 1.8), ("openai", "gpt-4o-mini", 0.7))
AGENTS = ("market_analyst", "risk_manager")
LLM_ERROR = "max_tokens"  # the error.type of the simulated failed LLM calls (truncated answers)


class ExecutionSimulation:
    """One tick: every stream delivers, maybe an order, maybe an LLM call, maybe a decision or an outcome."""

    def __init__(self, seed: int | None = None, llm_call_probability: float = 0.01) -> None:
        self.rng = random.Random(None if seed is None else seed + 1)
        # ~1 call / 20 s at the demo's 5 ticks/s: under the 50 USD budget for two days.
        self.llm_call_probability = llm_call_probability
        self.feeds = [feed(venue, stream) for venue in VENUES for stream in STREAMS]
        for agent in AGENTS:  # at 0 from the start: the Expired Decisions panel shows 0, not "no data"
            REGISTRY.get("tinywindow_agent_decisions_expired_total").labels(agent)
        for provider, model, _ in MODELS:  # likewise the failed calls of the LLM Call Duration panel
            REGISTRY.get("gen_ai.client.operation.duration").labels("chat", provider, model, LLM_ERROR)
        self.pending: deque[tuple[int, DecisionId, float]] = deque()  # (due tick, decision id, confidence)
        self.ticks = 0
        # Orders per venue since its last rejection: at most one in REJECT_SPACING is refused, so
        # the first minutes' short rate windows (a handful of orders) never start with a spike.
        self.since_reject = dict.fromkeys(VENUES, 0)

    def tick(self) -> None:
        rng = self.rng
        self.ticks += 1
        for stream in self.feeds:
            stream.message()
            if rng.random() < 0.0005:
                stream.reconnected()
        record_rate_limit("binance", {"X-MBX-USED-WEIGHT-1M": str(int(rng.uniform(300, 3600)))})
        record_rate_limit("coinbase", {"X-RateLimit-Limit": "30",
                                       "X-RateLimit-Remaining": str(rng.randint(8, 29))})
        if rng.random() < 0.5:
            self._order(rng.choice(list(VENUES)))
        if rng.random() < self.llm_call_probability:
            self._llm_call(*rng.choice(MODELS))
        if rng.random() < 0.3:
            self._decide()
        while self.pending and self.pending[0][0] <= self.ticks:
            _, decision_id, confidence = self.pending.popleft()
            # Roughly calibrated: wins as often as it is confident.
            won = rng.random() < confidence
            agent_exporter.record_outcome(decision_id, rng.uniform(5, 200) * (1 if won else -1))

    def _order(self, venue: str) -> None:
        rng = self.rng
        side = rng.choice(("buy", "sell"))
        reference = 65_000.0 * (1 + rng.gauss(0, 0.001))
        quantity = round(rng.uniform(0.01, 0.5), 4)
        ack = rng.lognormvariate(0, 0.5) * VENUES[venue]
        fill = ack + rng.lognormvariate(0, 1.0) * 0.2
        now = perf_counter()
        start = now - fill - 0.01
        o = Order(venue, side, quantity, reference).submit(at=start)
        outcome = rng.random()
        self.since_reject[venue] += 1
        if outcome < 0.02 and self.since_reject[venue] >= REJECT_SPACING:
            self.since_reject[venue] = 0
            o.rejected(rng.choice(REJECT_REASONS))
            return
        o.acknowledged(at=start + ack)
        # Slippage in bps around +2 (costs) with a tail; price improvement happens too.
        bps = rng.gauss(2.0, 4.0)
        price = reference * (1 + (bps if side == "buy" else -bps) / 10_000)
        if outcome < 0.08:  # a resting order cancelled after a partial fill, or before any
            if rng.random() < 0.5:
                o.filled(quantity * rng.uniform(0.1, 0.9), price, at=start + fill)
            o.cancel_requested(at=now - 0.01)
            o.cancelled(at=now - 0.01 + rng.lognormvariate(0, 0.5) * VENUES[venue])
            return
        o.filled(quantity / 2, price, at=start + (ack + fill) / 2)
        o.filled(quantity - quantity / 2, price, at=start + fill)

    def _llm_call(self, provider: str, model: str, typical: float) -> None:
        rng = self.rng
        duration = rng.lognormvariate(0, 0.4) * typical
        with llm_call(provider, model) as call:
            call.started_at = perf_counter() - duration
            call.first_chunk_at = call.started_at + duration * rng.uniform(0.1, 0.3)
            if rng.random() < 0.05:  # a truncated answer: error.type without an exception
                call.error(LLM_ERROR)
            cached = rng.choice((0, 0, 2000, 4000))
            call.usage(input_tokens=rng.randint(800, 3000) + cached, output_tokens=rng.randint(50, 600),
                       cache_read_tokens=cached)

    def _decide(self) -> None:
        rng = self.rng
        confidence = min(1.0, max(0.0, rng.betavariate(8, 2)))
        decision_id = agent_exporter.record_decision(rng.choice(AGENTS), rng.choice(("buy", "sell")), confidence)
        if decision_id is not None and rng.random() < 0.8:  # some decisions never trade (no memory kept for them)
            self.pending.append((self.ticks + rng.randint(5, 50), decision_id, confidence))


class _WithExecution:
    """The trading simulation, ticking the execution side along with it."""

    def __init__(self, trading, execution: ExecutionSimulation) -> None:
        self._trading = trading
        self.execution = execution

    def __getattr__(self, name):
        return getattr(self._trading, name)

    def tick(self) -> None:
        self._trading.tick()
        self.execution.tick()


T = TypeVar("T")


def with_execution(trading: T, seed: int | None = None) -> T:
    """Wrap ``demo.TradingSimulation`` so each tick also simulates execution, feeds, LLM calls and outcomes.

    The wrapper forwards every other attribute, so callers keep using it as the simulation it wraps.
    """
    wrapped = _WithExecution(trading, ExecutionSimulation(seed))
    for _ in range(200):  # a history at the first scrape: every panel has data
        wrapped.execution.tick()
    return cast(T, wrapped)
