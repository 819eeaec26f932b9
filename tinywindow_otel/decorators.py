"""Decorators and context managers that time calls and count their failures.

    >>> from tinywindow_otel.decorators import api_call, trade, agent_decision
    >>> @api_call("claude")
    ... async def ask(prompt): ...
    >>> with trade("BTC/USDT") as t:
    ...     t.filled(pnl=150.0, amount_usd=1000.0)

Every helper here, and ``Histogram.time()`` / ``Counter.count_exceptions()``
on the facade, goes through ONE wrapper (``_internal/wrapper.py``, which says
how each kind of callable is measured): plain, ``async def``, generator and
async generator functions keep their behaviour, exceptions pass unchanged,
and a fault in the telemetry never reaches the caller.

A context-manager object keeps its in-flight state on a stack, so nesting
the same object works; share one object between threads or tasks only as a
decorator (each call then has its own state), as with prometheus_client.
"""

from __future__ import annotations

import asyncio
import inspect
from collections.abc import Callable, Mapping
from time import perf_counter
from typing import Any, cast

from ._internal.selfmetrics import default_drops
from ._internal.wrapper import CallWrapper, Probe, count_exceptions, is_error, time_histogram  # noqa: F401
from .exporters import TRADE_STATUSES, agent_exporter, api_exporter, check_trade, trading_exporter


# --- API calls --------------------------------------------------------------------


class _ApiProbe(Probe):
    metric = "tinywindow_api_requests_total"

    def __init__(self, service: str, recorder) -> None:
        # Bound once here, so a call costs two series updates, not label lookups.
        bound = recorder.bind(service)
        self.drops = bound.requests.drops
        self._inc = bound.requests.inc
        self._observe = bound.latency.observe
        self._error = bound.error

    def finish(self, state, exc, result) -> None:
        elapsed = perf_counter() - state
        self._inc()
        self._observe(elapsed)
        if exc is not None and is_error(exc):
            self._error(type(exc).__name__)


def api_call(service: str, *, exporter=None) -> CallWrapper:
    """Time an external API call and count it (and its failure) for ``service``.

        @api_call("claude")
        async def ask(prompt): ...

        with api_call("binance"):
            exchange.fetch_ticker("BTC/USDT")

    The same series as ``api_exporter.record_request`` (bound once, at decoration).
    Records ``tinywindow_api_requests_total{service}`` and
    ``tinywindow_api_latency_seconds{service}`` for every call, and
    ``tinywindow_api_errors_total{service,type}`` when the call raises an
    ``Exception`` (``type`` = the exception's class name). Cancellation
    (``asyncio.CancelledError``), ``KeyboardInterrupt`` and closing a generator
    count as requests, not errors: put a timeout *inside* the decorated
    function if timeouts should count as errors.
    """
    return CallWrapper(_ApiProbe(service, api_exporter if exporter is None else exporter))


# --- trades -----------------------------------------------------------------------

# TRADE_STATUSES (from exporters): ``failed`` = the block raised before reporting an outcome,
# ``cancelled`` also when the task was cancelled (asyncio.CancelledError).


class TradeOutcome:
    """The ``t`` in ``with trade("BTC/USDT") as t``: report the outcome once."""

    __slots__ = ("symbol", "status", "pnl", "amount_usd")

    def __init__(self, symbol: str | None) -> None:
        self.symbol = symbol
        self.status: str | None = None
        self.pnl: float | None = None
        self.amount_usd: float | None = None

    def __repr__(self) -> str:
        return f"<TradeOutcome {self.symbol} {self.status or 'pending'}>"

    def report(self, status: str, pnl: float | None = None, amount_usd: float | None = None) -> None:
        """Set the outcome. Raises at once for an unknown status, bad numbers, or a second report."""
        check_trade(status, pnl, amount_usd)
        if self.status is not None:
            raise ValueError(f"tinywindow_trades_total: outcome for {self.symbol} already reported "
                             f"as {self.status!r}")
        self.status, self.pnl, self.amount_usd = status, pnl, amount_usd

    def filled(self, pnl: float | None = None, amount_usd: float | None = None) -> None:
        self.report("filled", pnl, amount_usd)

    def partially_filled(self, pnl: float | None = None, amount_usd: float | None = None) -> None:
        self.report("partially_filled", pnl, amount_usd)

    def rejected(self, amount_usd: float | None = None) -> None:
        self.report("rejected", None, amount_usd)

    def cancelled(self, amount_usd: float | None = None) -> None:
        self.report("cancelled", None, amount_usd)

    def failed(self, amount_usd: float | None = None) -> None:
        self.report("failed", None, amount_usd)


_STATUSES = frozenset(TRADE_STATUSES)


def _read_outcome(value: Any) -> tuple[str, float | None, float | None] | None:
    """(status, pnl, amount_usd) from a status string, a mapping, or an object; None if not an outcome."""
    # The common returns first, without the Mapping ABC check (it costs more than the rest of a trade).
    if value is None:
        return None
    cls = value.__class__
    if cls is str:
        return (value, None, None) if value in _STATUSES else None
    if isinstance(value, str):
        return (value, None, None) if value in TRADE_STATUSES else None
    if cls is dict or isinstance(value, Mapping):
        get = value.get
    else:
        def get(key, default=None):
            return getattr(value, key, default)
    status = get("status")
    if not isinstance(status, str) or status not in TRADE_STATUSES:
        return None
    return status, get("pnl"), get("amount_usd")


class _TradeProbe(Probe):
    metric = "tinywindow_trades_total"
    exposes_state = True

    def __init__(self, symbol, default, reject_on, symbol_from, recorder) -> None:
        self.symbol = symbol
        self.default = default
        self.reject_on = reject_on
        self.symbol_from = symbol_from
        self.recorder = recorder  # a TradingExporter: its registry's trade metrics
        # Faults count in the recorder's registry (one with only the public methods: the process's).
        self.drops = getattr(recorder, "drops", default_drops)
        # Set by _TradeWrapper on the probe of a function decorated without a symbol,
        # the only probe whose start() reads it.
        self.signature = cast(inspect.Signature, None)

    def start(self, args, kwargs) -> TradeOutcome:
        symbol = self.symbol
        if symbol is None and args is not None:
            try:
                symbol = self.signature.bind_partial(*args, **kwargs).arguments.get(self.symbol_from)
            except TypeError:
                symbol = None  # the call itself raises the TypeError
        return TradeOutcome(symbol)

    def finish(self, outcome: TradeOutcome, exc, result) -> None:
        if outcome.status is None:
            read = _read_outcome(result) if exc is None else None
            if read is not None:
                outcome.status, outcome.pnl, outcome.amount_usd = read
            elif exc is not None and not isinstance(exc, GeneratorExit):
                if isinstance(exc, self.reject_on):
                    outcome.status = "rejected"
                elif isinstance(exc, asyncio.CancelledError):
                    outcome.status = "cancelled"  # the caller gave up on the order: not a failure
                else:
                    outcome.status = "failed"
            else:
                outcome.status = self.default
        if outcome.symbol is None:
            raise ValueError("tinywindow_trades_total: no symbol for this trade")
        self.recorder.record_trade(outcome.symbol, outcome.status, outcome.pnl, outcome.amount_usd)


class _TradeWrapper(CallWrapper):
    __slots__ = ()

    def __call__(self, func: Callable) -> Callable:
        probe: _TradeProbe = self.probe  # type: ignore[assignment]
        if probe.symbol is None:
            signature = inspect.signature(func)
            if probe.symbol_from not in signature.parameters:
                raise TypeError(f"tinywindow_trades_total: trade() without a symbol needs "
                                f"{func.__qualname__}() to take a {probe.symbol_from!r} argument")
            # A fresh probe per decorated function: each holds its own signature.
            probe = _TradeProbe(None, probe.default, probe.reject_on, probe.symbol_from, probe.recorder)
            probe.signature = signature
            return CallWrapper(probe)(func)
        return super().__call__(func)

    def __enter__(self) -> Any:
        if self.probe.symbol is None:  # type: ignore[attr-defined]
            raise TypeError("tinywindow_trades_total: `with trade(...)` needs a symbol")
        return super().__enter__()


def trade(symbol: str | None = None, *, default: str = "filled",
          reject_on: type[BaseException] | tuple = (), symbol_from: str = "symbol",
          exporter=None) -> CallWrapper:
    """Count one order placement in ``tinywindow_trades_total{status,symbol}``.

        with trade("BTC/USDT") as t:
            order = exchange.create_order(...)
            t.filled(pnl=order.pnl, amount_usd=order.cost)

        @trade()                      # symbol from the call's ``symbol`` argument
        async def place(symbol, side, amount):
            ...
            return {"status": "filled", "amount_usd": 1000.0}

    The status (one of :data:`TRADE_STATUSES`) is, in order of precedence:
    the outcome reported on ``t`` (``t.filled/partially_filled/rejected/cancelled/failed``,
    even if the block raises afterwards: the order did happen); for the
    decorator, the return value (a status string, or a mapping / object with
    ``status`` and optional ``pnl``, ``amount_usd``); ``rejected`` if the call
    raised one of ``reject_on`` (e.g. ``ccxt.InvalidOrder``); ``cancelled`` if the
    task was cancelled (``asyncio.CancelledError``, re-raised); ``failed`` if it
    raised anything else; otherwise ``default`` (the call returned, or the
    generator was closed, without reporting). The trade goes through
    ``trading_exporter.record_trade`` so P&L, notional and win rate stay consistent.
    """
    if default not in TRADE_STATUSES or not isinstance(default, str):
        raise ValueError(f"tinywindow_trades_total: default must be one of {', '.join(TRADE_STATUSES)}, "
                         f"got {default!r}")
    kinds = reject_on if isinstance(reject_on, tuple) else (reject_on,)
    if not all(isinstance(k, type) and issubclass(k, BaseException) for k in kinds):
        raise TypeError(f"tinywindow_trades_total: reject_on takes exception classes, got {reject_on!r}")
    recorder = trading_exporter if exporter is None else exporter
    if symbol is not None:
        recorder.prepare(symbol, default)  # a bad symbol raises here
    return _TradeWrapper(_TradeProbe(symbol, default, kinds, symbol_from, recorder))


# --- agent decisions ---------------------------------------------------------------


def _read_decision(value: Any) -> tuple[str, float] | None:
    """(action, confidence) from an object, a mapping or a 2-tuple; None if unreadable."""
    if isinstance(value, tuple) and len(value) == 2:
        action, confidence = value
    elif isinstance(value, Mapping):
        action, confidence = value.get("action"), value.get("confidence")
    else:
        action, confidence = getattr(value, "action", None), getattr(value, "confidence", None)
    action = getattr(action, "value", action)  # an Enum member -> its value
    if not isinstance(action, str):
        return None
    if isinstance(confidence, bool) or not isinstance(confidence, (int, float)):
        return None
    return action, float(confidence)


class DecisionRecorder:
    """The ``d`` in ``with agent_decision("analyst") as d``: call ``d.record(action, confidence)``."""

    __slots__ = ("_probe", "decision_id")

    def __init__(self, probe: _DecisionProbe) -> None:
        self._probe = probe
        self.decision_id = None  # for agent_exporter.record_outcome()

    def record(self, action: str, confidence: float):
        """Record the decision; returns its id (also kept as ``d.decision_id``)."""
        self.decision_id = self._probe.record((action, confidence), strict=True)
        return self.decision_id


class _DecisionProbe(Probe):
    metric = "tinywindow_agent_decisions_total"
    exposes_state = True

    def __init__(self, agent: str, recorder) -> None:
        bound = recorder.bind(agent)  # a bad agent label raises here
        self._record = bound.record
        self.drops = getattr(bound, "drops", default_drops)
        self.wants_items = True

    def start(self, args, kwargs) -> DecisionRecorder:
        return DecisionRecorder(self)

    def record(self, value: Any, strict: bool = False) -> Any:
        if value is None:
            return None  # the agent made no decision
        decision = _read_decision(value)
        if decision is None:
            if strict:
                raise TypeError(f"{self.metric}: a decision is (action: str, confidence: number), got {value!r}")
            self.drops.dropped(self.metric, "unreadable_decision", value)
            return None
        return self._record(*decision)

    def item(self, state, value) -> None:
        self.record(value)

    def finish(self, state, exc, result) -> None:
        if exc is None:
            self.record(result)


def agent_decision(agent: str, *, exporter=None) -> CallWrapper:
    """Record what an agent decided: ``tinywindow_agent_decisions_total{action,agent}``
    and ``tinywindow_agent_confidence{agent}``.

        @agent_decision("analyst")
        async def decide(market) -> Decision: ...

    A decision is read from, in order: a 2-tuple ``(action, confidence)``; a
    mapping with keys ``"action"`` and ``"confidence"``; an object with
    ``.action`` and ``.confidence`` attributes. ``action`` is a string (an
    ``Enum`` member's ``.value`` is used), ``confidence`` a number (0..1).
    Functions: the return value is read; generators and async generators:
    every yielded item is read (a stream of decisions). ``None`` means "no
    decision" and records nothing; any other shape records nothing and counts
    ``tinywindow_otel_dropped_measurements_total{reason="unreadable_decision"}``.
    A call that raises records no decision. Context-manager form:
    ``with agent_decision("analyst") as d: d.record("buy", 0.8)``.
    """
    return CallWrapper(_DecisionProbe(agent, agent_exporter if exporter is None else exporter))
