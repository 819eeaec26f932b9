"""Decorators and context managers of ``instrument.py``, on every kind of callable, against real scrapes."""

from __future__ import annotations

import asyncio
import inspect
import time
from dataclasses import dataclass

import pytest
from helpers import sample_value
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from tinywindow_otel import api_errors_total, api_latency_seconds, trade_pnl_usd, trades_total
from tinywindow_otel.catalog import LATENCY_BUCKETS
from tinywindow_otel.decorators import TRADE_STATUSES, agent_decision, api_call, trade
from tinywindow_otel.metrics import REGISTRY, HistogramSeries

KINDS = ("sync", "async", "gen", "agen")
PAUSE = 0.02  # work inside the measured call; latency must include it
ITEMS = (1, 2)


class Boom(Exception):
    pass


def make(kind, work, name="work", items=ITEMS):
    """A callable of ``kind`` that pauses, yields ITEMS (generators), then returns ``work()``."""
    if kind == "sync":
        def f():
            """doc"""
            time.sleep(PAUSE)
            return work()
    elif kind == "async":
        async def f():
            """doc"""
            await asyncio.sleep(PAUSE)
            return work()
    elif kind == "gen":
        def f():
            """doc"""
            yield from items
            time.sleep(PAUSE)
            return work()
    else:
        async def f():
            """doc"""
            for item in items:
                yield item
            await asyncio.sleep(PAUSE)
            work()
    f.__name__ = f.__qualname__ = name
    return f


def drive(kind, fn, *args, **kwargs):
    """Call ``fn`` to the end: (yielded items, return value). Exceptions propagate."""
    if kind == "sync":
        return [], fn(*args, **kwargs)
    if kind == "async":
        return [], asyncio.run(fn(*args, **kwargs))
    if kind == "gen":
        gen, items = fn(*args, **kwargs), []
        while True:
            try:
                items.append(next(gen))
            except StopIteration as stop:
                return items, stop.value

    async def consume():
        return [item async for item in fn(*args, **kwargs)]

    return asyncio.run(consume()), None


KIND_CHECK = {"sync": inspect.isfunction, "async": inspect.iscoroutinefunction,
              "gen": inspect.isgeneratorfunction, "agen": inspect.isasyncgenfunction}


def assert_same_shape(kind, original, wrapped):
    assert wrapped.__name__ == original.__name__ and wrapped.__doc__ == "doc"
    assert wrapped.__wrapped__ is original
    assert KIND_CHECK[kind](wrapped)
    assert inspect.iscoroutinefunction(wrapped) == inspect.iscoroutinefunction(original)


# --- api_call ---------------------------------------------------------------------


@pytest.mark.parametrize("kind", KINDS)
def test_api_call_decorator_counts_times_and_reraises(kind, scrape_metrics):
    ok = make(kind, lambda: "answer", "ok")
    wrapped_ok = api_call("claude")(ok)
    assert_same_shape(kind, ok, wrapped_ok)
    items, result = drive(kind, wrapped_ok)
    assert items == ([] if kind in ("sync", "async") else list(ITEMS))
    assert result == (None if kind == "agen" else "answer")

    error = Boom("rate limited")

    def fail():
        raise error

    with pytest.raises(Boom) as raised:
        drive(kind, api_call("claude")(make(kind, fail)))
    assert raised.value is error

    families = scrape_metrics()
    assert sample_value(families, "tinywindow_api_requests_total", service="claude") == 2
    assert sample_value(families, "tinywindow_api_errors_total", service="claude", type="Boom") == 1
    assert sample_value(families, "tinywindow_api_latency_seconds_count", service="claude") == 2
    # Awaited / iterated time, not the time to create a coroutine or generator.
    assert sample_value(families, "tinywindow_api_latency_seconds_sum", service="claude") >= 2 * PAUSE


def test_api_call_context_managers(scrape_metrics):
    with api_call("binance"):
        time.sleep(PAUSE)
    with pytest.raises(KeyError):
        with api_call("binance"):
            raise KeyError("BTC")

    async def main():
        async with api_call("binance"):
            await asyncio.sleep(PAUSE)

    asyncio.run(main())
    families = scrape_metrics()
    assert sample_value(families, "tinywindow_api_requests_total", service="binance") == 3
    assert sample_value(families, "tinywindow_api_errors_total", service="binance", type="KeyError") == 1
    assert sample_value(families, "tinywindow_api_latency_seconds_sum", service="binance") >= 2 * PAUSE


def test_api_call_cancellation_is_a_request_not_an_error(scrape_metrics):
    @api_call("claude")
    async def slow():
        await asyncio.sleep(10)

    async def main():
        task = asyncio.create_task(slow())
        await asyncio.sleep(0)
        task.cancel()
        with pytest.raises(asyncio.CancelledError):
            await task

    asyncio.run(main())
    families = scrape_metrics()
    assert sample_value(families, "tinywindow_api_requests_total", service="claude") == 1
    # No error sample of any type for this service.
    errors = [s for f in families.values() for s in f.samples if s.name == "tinywindow_api_errors_total"]
    assert all(s.labels.get("service") != "claude" for s in errors)
    assert REGISTRY.get("tinywindow_api_errors_total").series() == []  # not even at 0


def test_unawaited_coroutine_records_nothing():
    @api_call("claude")
    async def ask():
        return 1

    coroutine = ask()
    coroutine.close()
    # The series exist from decoration on (at 0, so rate() sees the first call), but nothing was timed.
    assert api_latency_seconds.labels(service="claude").snapshot()[0] == [0] * (len(LATENCY_BUCKETS) + 1)


def test_generator_wrapper_is_lazy_and_forwards_send_throw_close(scrape_metrics):
    received = []

    @api_call("stream")
    def echo():
        try:
            while True:
                received.append((yield len(received)))
        except Boom:
            yield "recovered"

    gen = echo()
    assert sum(api_latency_seconds.labels(service="stream").snapshot()[0]) == 0  # not started: nothing measured
    assert next(gen) == 0
    assert gen.send("a") == 1
    assert gen.throw(Boom()) == "recovered"
    time.sleep(PAUSE)
    gen.close()  # closed early: latency up to here, not an error
    assert received == ["a"]
    families = scrape_metrics()
    assert sample_value(families, "tinywindow_api_requests_total", service="stream") == 1
    assert sample_value(families, "tinywindow_api_latency_seconds_sum", service="stream") >= PAUSE
    assert sample_value(families, "tinywindow_api_errors_total", service="stream", type="GeneratorExit") is None


def test_async_generator_wrapper_forwards_asend_athrow_aclose(scrape_metrics):
    @api_call("stream")
    async def echo():
        try:
            value = None
            while True:
                value = yield value
        except Boom:
            yield "recovered"

    async def main():
        gen = echo()
        assert await gen.__anext__() is None
        assert await gen.asend("x") == "x"
        assert await gen.athrow(Boom()) == "recovered"
        await gen.aclose()

    asyncio.run(main())
    families = scrape_metrics()
    assert sample_value(families, "tinywindow_api_requests_total", service="stream") == 1
    assert sample_value(families, "tinywindow_api_errors_total", service="stream", type="GeneratorExit") is None


def test_api_call_rejects_a_bad_service_at_once():
    with pytest.raises(TypeError, match="tinywindow_api_requests_total"):
        api_call(None)


def test_telemetry_fault_never_breaks_the_call(monkeypatch):
    def broken_observe(self, value):
        raise RuntimeError("telemetry bug")

    monkeypatch.setattr(HistogramSeries, "observe", broken_observe)

    @api_call("claude")
    def ask():
        return 42

    @api_call("claude")
    def fail():
        raise Boom

    assert ask() == 42
    with pytest.raises(Boom):  # the caller's exception, not the telemetry's
        fail()
    dropped = REGISTRY.get("tinywindow_otel_dropped_measurements_total")
    assert dropped.labels("tinywindow_api_requests_total", "instrumentation_error").get() == 2


# --- Histogram.time() / Counter.count_exceptions() ------------------------------------


@pytest.mark.parametrize("kind", KINDS)
def test_histogram_time_on_family_and_series(kind, scrape_metrics):
    series = api_latency_seconds.labels(service="timed")
    fn = make(kind, lambda: 7)
    wrapped = series.time()(fn)
    assert_same_shape(kind, fn, wrapped)
    assert drive(kind, wrapped)[1] == (None if kind == "agen" else 7)
    with pytest.raises(Boom):
        drive(kind, trade_pnl_usd.time()(make(kind, lambda: (_ for _ in ()).throw(Boom()))))
    with series.time():
        time.sleep(PAUSE)

    families = scrape_metrics()
    assert sample_value(families, "tinywindow_api_latency_seconds_count", service="timed") == 2
    assert sample_value(families, "tinywindow_api_latency_seconds_sum", service="timed") >= 2 * PAUSE
    # Timed although it raised. (The P&L histogram has negative buckets, so prometheus_client
    # exposes no _count/_sum for it, per OpenMetrics: read the +Inf bucket and the facade.)
    assert sample_value(families, "tinywindow_trade_pnl_usd_bucket", le="+Inf") == 1
    assert trade_pnl_usd.series()[0].snapshot()[1] >= PAUSE


@pytest.mark.parametrize("kind", KINDS)
def test_count_exceptions_counts_only_matching(kind, scrape_metrics):
    series = api_errors_total.labels(service="x", type="lookup")
    counted = series.count_exceptions(LookupError)

    def raise_key():
        raise KeyError("k")

    def raise_value():
        raise ValueError("v")

    assert drive(kind, counted(make(kind, lambda: 1)))[1] == (None if kind == "agen" else 1)
    with pytest.raises(KeyError):
        drive(kind, counted(make(kind, raise_key)))
    with pytest.raises(ValueError):
        drive(kind, counted(make(kind, raise_value)))
    with pytest.raises(IndexError):
        with series.count_exceptions((IndexError, KeyError)):
            raise IndexError(0)

    families = scrape_metrics()
    assert sample_value(families, "tinywindow_api_errors_total", service="x", type="lookup") == 2


def test_count_exceptions_never_counts_closing_a_generator():
    series = api_errors_total.labels(service="x", type="any")

    @series.count_exceptions(BaseException)
    def gen():
        yield 1
        yield 2

    g = gen()
    next(g)
    g.close()
    assert series.get() == 0


def test_facade_idioms_raise_programming_errors_at_once():
    with pytest.raises(ValueError, match="tinywindow_api_latency_seconds.*labels"):
        api_latency_seconds.time()
    with pytest.raises(TypeError, match="tinywindow_api_errors_total"):
        api_errors_total.labels(service="x", type="y").count_exceptions("ValueError")
    with pytest.raises(TypeError, match="callable"):
        api_latency_seconds.labels(service="x").time()(42)


# --- trade -------------------------------------------------------------------------


@pytest.mark.parametrize("kind", KINDS)
def test_trade_decorator_status_from_outcome(kind, scrape_metrics):
    outcome = {"status": "filled", "pnl": -40.0, "amount_usd": 12_000.0}
    filled = trade("BTC/USDT")(make(kind, lambda: outcome))
    drive(kind, filled)

    def fail():
        raise ConnectionError("exchange down")

    with pytest.raises(ConnectionError):
        drive(kind, trade("BTC/USDT")(make(kind, fail)))
    with pytest.raises(PermissionError):
        drive(kind, trade("BTC/USDT", reject_on=PermissionError)(make(kind, lambda: (_ for _ in ()).throw(
            PermissionError("insufficient funds")))))

    families = scrape_metrics()
    # Async generators cannot return a value: their outcome is the default (filled), without P&L.
    assert sample_value(families, "tinywindow_trades_total", status="filled", symbol="BTC/USDT") == 1
    assert sample_value(families, "tinywindow_trades_total", status="failed", symbol="BTC/USDT") == 1
    assert sample_value(families, "tinywindow_trades_total", status="rejected", symbol="BTC/USDT") == 1
    if kind != "agen":
        assert sample_value(families, "tinywindow_trade_pnl_usd_bucket", le="-10.0") == 1
        assert sample_value(families, "tinywindow_trade_pnl_usd_bucket", le="-50.0") == 0
        assert sample_value(families, "tinywindow_trade_amount_usd_bucket", symbol="BTC/USDT", le="10000.0") == 0
        assert sample_value(families, "tinywindow_win_rate") == 0.0


@pytest.mark.parametrize("kind", KINDS)
def test_trade_symbol_from_the_call(kind):
    if kind == "sync":
        def place(symbol, amount):
            return "cancelled"
    elif kind == "async":
        async def place(symbol, amount):
            return "cancelled"
    elif kind == "gen":
        def place(symbol, amount):
            yield amount
            return "cancelled"
    else:
        async def place(symbol, amount):
            yield amount
    wrapped = trade()(place)
    drive(kind, wrapped, "ETH/USDT", amount=3)
    status = "filled" if kind == "agen" else "cancelled"
    assert trades_total.labels(status=status, symbol="ETH/USDT").get() == 1


def test_trade_without_symbol_needs_a_symbol_argument():
    with pytest.raises(TypeError, match="symbol"):
        trade()(lambda pair: None)
    with pytest.raises(TypeError, match="needs a symbol"):
        with trade():
            pass


def test_trade_context_manager(scrape_metrics):
    with trade("BTC/USDT") as t:
        t.filled(pnl=150.0, amount_usd=1000.0)
    with trade("BTC/USDT") as t:
        t.filled(pnl=0.0)  # breakeven: counted, not a win nor a loss
    with pytest.raises(RuntimeError):
        with trade("BTC/USDT") as t:
            t.filled(pnl=-50.0)
            raise RuntimeError("post-trade bookkeeping failed")  # the fill still happened
    with pytest.raises(TimeoutError):
        with trade("ETH/USDT"):
            raise TimeoutError

    async def main():
        async with trade("SOL/USDT") as t:
            t.rejected(amount_usd=5.0)

    asyncio.run(main())
    families = scrape_metrics()
    assert sample_value(families, "tinywindow_trades_total", status="filled", symbol="BTC/USDT") == 3
    assert sample_value(families, "tinywindow_trades_total", status="failed", symbol="ETH/USDT") == 1
    assert sample_value(families, "tinywindow_trades_total", status="rejected", symbol="SOL/USDT") == 1
    assert sample_value(families, "tinywindow_trade_pnl_usd_bucket", le="+Inf") == 3
    assert sample_value(families, "tinywindow_win_rate") == 50.0


def test_trade_outcome_errors_raise_in_the_block():
    with pytest.raises(ValueError, match="'FILLED'.*filled, partially_filled, rejected, cancelled, failed"
                                         "|filled, partially_filled, rejected, cancelled, failed.*'FILLED'"):
        with trade("BTC/USDT") as t:
            t.report("FILLED")
    with pytest.raises(ValueError, match="tinywindow_trade_amount_usd: amount_usd must be >= 0"):
        with trade("BTC/USDT") as t:
            t.filled(amount_usd=-1.0)
    with pytest.raises(ValueError, match="already reported"):
        with trade("BTC/USDT") as t:
            t.filled()
            t.cancelled()
    with pytest.raises(TypeError, match="tinywindow_trade_pnl_usd"):
        with trade("BTC/USDT") as t:
            t.filled(pnl="150")
    with pytest.raises(ValueError, match="default"):
        trade("BTC/USDT", default="done")
    assert TRADE_STATUSES == ("filled", "partially_filled", "rejected", "cancelled", "failed")


# --- agent_decision -------------------------------------------------------------------


@dataclass
class Decision:
    action: str
    confidence: float


@pytest.mark.parametrize("kind", KINDS)
def test_agent_decision_reads_every_documented_shape(kind, scrape_metrics):
    shapes = [("buy", 0.9), {"action": "sell", "confidence": 0.6}, Decision("hold", 0.3), None, "garbage"]
    for shape in shapes:
        if kind in ("sync", "async"):
            fn = make(kind, lambda shape=shape: shape)
        elif kind == "gen":
            def fn(shape=shape):
                yield shape
        else:
            async def fn(shape=shape):
                yield shape
        drive(kind, agent_decision("analyst")(fn))

    with pytest.raises(Boom):
        drive(kind, agent_decision("analyst")(make(kind, lambda: (_ for _ in ()).throw(Boom()), items=())))

    families = scrape_metrics()
    for action in ("buy", "sell", "hold"):
        assert sample_value(families, "tinywindow_agent_decisions_total", action=action, agent="analyst") == 1
    assert sample_value(families, "tinywindow_agent_confidence_count", agent="analyst") == 3
    assert sample_value(families, "tinywindow_agent_confidence_sum", agent="analyst") == pytest.approx(1.8)
    assert sample_value(families, "tinywindow_otel_dropped_measurements_total",
                        metric="tinywindow_agent_decisions_total", reason="unreadable_decision") == 1


def test_agent_decision_context_manager():
    with agent_decision("risk") as d:
        d.record("sell", 0.75)
    with pytest.raises(TypeError, match="tinywindow_agent_decisions_total"):
        with agent_decision("risk") as d:
            d.record(3, 0.5)
    decisions = REGISTRY.by_attr("agent_decisions_total")
    assert decisions.labels(action="sell", agent="risk").get() == 1


# --- properties ------------------------------------------------------------------------

exception_types = st.builds(
    lambda name, base: type(name, (base,), {}),
    st.from_regex(r"[A-Z][A-Za-z0-9]{0,20}", fullmatch=True),
    st.sampled_from([Exception, ValueError, OSError, KeyError, RuntimeError, ArithmeticError]),
)


@settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(exc_type=exception_types, kind=st.sampled_from(KINDS))
def test_any_exception_propagates_unchanged_and_is_counted_once(exc_type, kind):
    global PAUSE
    error = exc_type("boom")

    def fail():
        raise error

    errors = api_errors_total.labels(service="prop", type=exc_type.__name__)
    requests = REGISTRY.by_attr("api_requests_total").labels(service="prop")
    counter = api_errors_total.labels(service="prop", type="counted")
    before = errors.get(), requests.get(), counter.get()

    saved, PAUSE = PAUSE, 0
    try:
        wrapped = counter.count_exceptions()(api_call("prop")(make(kind, fail)))
        with pytest.raises(exc_type) as raised:
            drive(kind, wrapped)
    finally:
        PAUSE = saved
    assert raised.value is error
    assert type(raised.value) is exc_type
    assert (errors.get(), requests.get(), counter.get()) == (before[0] + 1, before[1] + 1, before[2] + 1)
