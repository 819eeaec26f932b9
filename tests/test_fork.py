"""A real os.fork() while other threads work through every lock-owning object of the SDK: orders,
the ccxt adapter, feeds, LLM calls, calibration, basic auth, scrapes. The child never hangs, keeps
its cyclic GC, and any registry (not only the process-wide one) starts the child at zero."""

from __future__ import annotations

import base64
import gc
import os
import urllib.request

import pytest
from helpers import fork_child, fork_repeatedly_while, reap_child

import tinywindow_otel as tw
from tinywindow_otel import Counter, MetricsServer
from tinywindow_otel.exchange import feed, instrument_ccxt
from tinywindow_otel.exporters import agent_exporter
from tinywindow_otel.llm import llm_call
from tinywindow_otel.metrics import MetricRegistry
from tinywindow_otel.orders import Order
from tinywindow_otel.security import BasicAuth, hash_password
from tinywindow_otel.testing import reset

pytestmark = pytest.mark.skipif(not hasattr(os, "fork"), reason="needs os.fork")

CHILD_TIMEOUT_S = 10.0


@pytest.fixture(autouse=True)
def clean():
    yield
    reset()


class RestingExchange:
    """ccxt's method shapes; every order rests open, so the adapter keeps following it."""

    id = "restx"

    def __init__(self) -> None:
        self.last_response_headers = {"X-RateLimit-Limit": "100", "X-RateLimit-Remaining": "90"}
        self.orders: dict[str, dict] = {}

    def create_order(self, symbol, type, side, amount, price=None, params={}):  # noqa: A002,B006 - ccxt's shape
        order = {"id": str(len(self.orders) + 1), "symbol": symbol, "type": type, "side": side, "amount": amount,
                 "price": price, "filled": 0.0, "average": None, "status": "open"}
        self.orders[order["id"]] = order
        return dict(order)

    def fetch_order(self, id, symbol=None, params={}):  # noqa: A002,B006
        return dict(self.orders[id])


class Usage:
    input_tokens = 100
    output_tokens = 20


class Reply:
    usage = Usage()


def test_fork_while_threads_use_orders_feeds_llm_calls_and_auth_never_hangs_the_child():
    resting = Order("binance", "buy", 1e9, reference_price=100.0).submit()  # never fills: stays open
    exchange = instrument_ccxt(RestingExchange(), venue="restx")
    followed = exchange.create_order("BTC/USDT", "limit", "buy", 1.0, 100.0)["id"]
    ticks = feed("binance", "trades")
    auth = BasicAuth("prometheus", hash_password("s3cret", iterations=10_000))
    wrong = "Basic " + base64.b64encode(b"prometheus:wrong").decode()

    def work(i: int) -> None:
        resting.filled(1e-6, 100.0 + i % 3)
        exchange.fetch_order(followed, "BTC/USDT")
        ticks.message()
        with llm_call("anthropic", "claude-sonnet-4") as call:
            call.record(Reply())
        agent_exporter.record_outcome(agent_exporter.record_decision("analyst", "buy", 0.6), 1.0)
        auth.check(wrong)  # the slow path: a derivation under its lock

    def child() -> None:
        work(0)
        work(1)
        with Order("binance", "sell", 1.0) as fresh:
            fresh.filled(1.0, 99.0)

    hung, failed = fork_repeatedly_while(work, child)
    assert hung == 0, "a forked child hung on a lock held by a parent thread at fork time"
    assert failed == 0, f"{failed} children raised"


def test_a_child_forked_during_a_scrape_keeps_its_cyclic_gc():
    assert gc.isenabled()
    with MetricsServer(port=0) as server:
        for i in range(2_000):  # enough series that a scrape takes a while
            tw.trades_total.labels("filled", f"S{i}/USDT").inc()
        url = server.url

        def work(i: int) -> None:
            with urllib.request.urlopen(url, timeout=10) as response:
                response.read()

        def child() -> None:
            if not gc.isenabled():
                raise AssertionError("cyclic GC disabled in the child")

        hung, failed = fork_repeatedly_while(work, child)
    assert hung == 0
    assert failed == 0, f"{failed} children were left without cyclic GC"
    assert gc.isenabled()


def test_a_registry_of_your_own_starts_the_child_at_zero_with_fresh_locks():
    registry = MetricRegistry(specs=())
    signals = Counter("signals_total", "Signals", ["strategy"], registry=registry)
    signals.labels("momentum").inc(5)
    read_end, write_end = os.pipe()

    def child() -> None:
        os.close(read_end)
        signals.labels("momentum").inc()
        os.write(write_end, repr(signals.labels("momentum").get()).encode())
        os.close(write_end)

    pid = fork_child(child)
    os.close(write_end)
    code = reap_child(pid, CHILD_TIMEOUT_S)
    with os.fdopen(read_end, "rb") as pipe:
        seen = pipe.read().decode()
    assert code == 0
    assert seen == "1.0"  # the child's own count, not the parent's 5 + 1
    assert signals.labels("momentum").get() == 5.0


@pytest.mark.parametrize("registered", [False, True], ids=["no registry", "in a registry"])
def test_a_series_guard_held_at_fork_time_is_free_in_the_child(registered):
    registry = MetricRegistry(specs=()) if registered else None
    signals = Counter("signals_total", "Signals", ["strategy"], registry=registry)
    series = signals.labels("momentum")
    series.inc(5)
    # Fault injection: the guard as another parent thread holds it for the instant of the fork.
    token = series._tokens.pop()
    try:
        read_end, write_end = os.pipe()

        def child() -> None:
            os.close(read_end)
            series.inc()  # spins for good on the parent's token unless the child got a fresh guard
            os.write(write_end, repr(series.get()).encode())
            os.close(write_end)

        pid = fork_child(child)
    finally:
        series._tokens.append(token)
    os.close(write_end)
    code = reap_child(pid, CHILD_TIMEOUT_S)
    with os.fdopen(read_end, "rb") as pipe:
        seen = pipe.read().decode()
    assert code == 0, "the child hung on the guard its parent held" if code is None else f"child exit {code}"
    assert seen == "1.0"  # a fresh guard and the child's own count
    assert series.get() == 5.0
