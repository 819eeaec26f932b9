"""Exchange health: feed age at collection time, reconnects, rate-limit headers, the ccxt adapter.

The adapter is tested against a fake exchange with ccxt's method names and
signatures (checked against the real package below) and against the real
``ccxt`` package over a real ``requests`` session whose transport adapter
answers locally: no network.
"""

from __future__ import annotations

import asyncio
import inspect
import json
import socket

import pytest
from helpers import sample_value, wait_until

from tinywindow_otel import exchange as exchange_module
from tinywindow_otel.catalog import EXCHANGE_METRICS
from tinywindow_otel.exchange import feed, instrument_ccxt, rate_limit_used_ratio, record_rate_limit, tracked_orders
from tinywindow_otel.metrics import REGISTRY
from tinywindow_otel.testing import reset_values

AGE = "tinywindow_exchange_feed_age_seconds"


def metric_value(name, *labels):
    return REGISTRY.get(name).labels(*labels).get()


# --- feeds ---------------------------------------------------------------------------


def test_feed_age_is_computed_at_collection_time(scrape_metrics):
    trades = feed("binance", "trades")
    trades.set_age(30.0)  # as if the last message was 30 s ago
    first = sample_value(scrape_metrics(), AGE, venue="binance", stream="trades")
    assert 30.0 <= first < 40.0
    # Nothing is recorded in between: the age still grows, scrape by scrape.
    wait_until(lambda: sample_value(scrape_metrics(), AGE, venue="binance", stream="trades") > first,
               what="a later scrape to show an older feed")
    trades.message()
    assert sample_value(scrape_metrics(), AGE, venue="binance", stream="trades") < first


def test_a_feed_that_never_delivers_ages_from_when_it_was_opened():
    silent = feed("kraken", "book")
    assert 0.0 <= silent.age < 5.0
    again = feed("kraken", "book")  # the same stream shares its clock
    silent.set_age(100.0)
    assert again.age >= 100.0


def test_reconnects_and_close(scrape_metrics):
    ws = feed("binance", "depth")
    ws.reconnected()
    ws.reconnected()
    families = scrape_metrics()
    assert sample_value(families, "tinywindow_exchange_reconnects_total", venue="binance", stream="depth") == 2.0
    assert sample_value(families, AGE, venue="binance", stream="depth") is not None
    ws.close()
    assert sample_value(scrape_metrics(), AGE, venue="binance", stream="depth") is None


def test_feed_bad_labels_raise_naming_the_metric():
    with pytest.raises(TypeError, match=AGE):
        feed(None, "trades")
    with pytest.raises(TypeError, match=AGE):
        feed("binance", "trades").set_age("30 s")


def test_feed_age_nan_is_dropped_and_counted():
    ws = feed("binance", "ticker")
    ws.set_age(float("nan"))
    assert 0.0 <= ws.age < 5.0
    assert REGISTRY.get("tinywindow_otel_dropped_measurements_total").labels(AGE, "nan").get() == 1.0


# --- rate limits -----------------------------------------------------------------------


@pytest.mark.parametrize("headers, expected", [
    ({"X-MBX-USED-WEIGHT-1M": "1500"}, 0.25),
    ({"x-mbx-used-weight-1m": "6000", "X-MBX-ORDER-COUNT-10S": "10"}, 1.0),
    ({"X-MBX-ORDER-COUNT-10S": "90", "X-MBX-USED-WEIGHT-1M": "60"}, 0.9),
    ({"X-RateLimit-Limit": "100", "X-RateLimit-Remaining": "25"}, 0.75),
    ({"RateLimit-Limit": "100, 100;w=60", "RateLimit-Remaining": "40"}, 0.6),
    ({"Retry-After": "3", "X-RateLimit-Limit": "100", "X-RateLimit-Remaining": "99"}, 1.0),
    ({"X-MBX-USED-WEIGHT-1S": "5"}, None),  # no known limit for that window
    ({"Content-Type": "application/json"}, None),
    ({"X-RateLimit-Limit": "garbage", "X-RateLimit-Remaining": "1"}, None),
])
def test_rate_limit_headers(headers, expected):
    ratio = rate_limit_used_ratio(headers)
    assert ratio == (pytest.approx(expected) if expected is not None else None)


def test_rate_limit_custom_limits_and_gauge(scrape_metrics):
    assert record_rate_limit("binance-futures", {"X-MBX-USED-WEIGHT-1M": "1200"}, {"weight-1m": 2400}) == 0.5
    assert record_rate_limit("binance-futures", {"Server": "x"}) is None  # unchanged
    families = scrape_metrics()
    assert sample_value(families, "tinywindow_exchange_rate_limit_used_ratio", venue="binance-futures") == 0.5


def test_rate_limit_bad_headers_raise_naming_the_metric():
    with pytest.raises(TypeError, match="tinywindow_exchange_rate_limit_used_ratio"):
        record_rate_limit("binance", ["X-MBX-USED-WEIGHT-1M", "5"])


# --- ccxt adapter against a fake exchange -------------------------------------------------


class InsufficientFunds(Exception):
    """ccxt.InsufficientFunds's role."""


class FakeExchange:
    """ccxt's unified method shapes; answers from canned order structures."""

    id = "fakex"

    def __init__(self) -> None:
        self.last_response_headers = None
        self.orders: dict[str, dict] = {}
        self.next_fill: float | None = None
        self.fail_with: Exception | None = None

    def _respond(self, used: int) -> None:
        self.last_response_headers = {"X-RateLimit-Limit": "100", "X-RateLimit-Remaining": str(100 - used)}

    def create_order(self, symbol, type, side, amount, price=None, params={}):  # noqa: A002,B006 - ccxt's shape
        self._respond(10)
        if self.fail_with is not None:
            raise self.fail_with
        filled = amount if self.next_fill is None else self.next_fill
        order = {"id": str(len(self.orders) + 1), "symbol": symbol, "type": type, "side": side, "amount": amount,
                 "price": price, "filled": filled, "average": (price or 100.0) * 1.001 if filled else None,
                 "status": "closed" if filled == amount else "open"}
        self.orders[order["id"]] = order
        return dict(order)

    def cancel_order(self, id, symbol=None, params={}):  # noqa: A002,B006
        self._respond(20)
        self.orders[id]["status"] = "canceled"
        return dict(self.orders[id])

    def fetch_order(self, id, symbol=None, params={}):  # noqa: A002,B006
        self._respond(30)
        return dict(self.orders[id])

    def fetch_ticker(self, symbol, params={}):  # noqa: B006
        self._respond(40)
        return {"symbol": symbol, "bid": 99.0, "ask": 101.0}


class AsyncFakeExchange(FakeExchange):
    async def create_order(self, symbol, type, side, amount, price=None, params={}):  # noqa: A002,B006
        await asyncio.sleep(0)
        return FakeExchange.create_order(self, symbol, type, side, amount, price, params)

    async def fetch_ticker(self, symbol, params={}):  # noqa: B006
        await asyncio.sleep(0)
        return FakeExchange.fetch_ticker(self, symbol, params)


def test_fake_exchange_filled_order_fills_order_api_and_rate_limit_metrics(scrape_metrics):
    ex = instrument_ccxt(FakeExchange())
    order = ex.create_order("BTC/USDT", "limit", "buy", 2.0, 100.0)
    assert order["status"] == "closed"
    ex.fetch_ticker("BTC/USDT")
    families = scrape_metrics()
    for spec in EXCHANGE_METRICS:
        if spec.name == "tinywindow_exchange_rate_limit_used_ratio":
            assert spec.exposed_name in families
    assert sample_value(families, "tinywindow_orders_total", venue="fakex", status="filled") == 1.0
    assert sample_value(families, "tinywindow_order_latency_seconds_count", venue="fakex", stage="ack") == 1.0
    assert sample_value(families, "tinywindow_slippage_bps_sum", venue="fakex", side="buy") == pytest.approx(10.0)
    assert sample_value(families, "tinywindow_api_requests_total", service="fakex") == 2.0
    assert sample_value(families, "tinywindow_exchange_rate_limit_used_ratio", venue="fakex") == pytest.approx(0.4)


def test_fake_exchange_open_order_followed_through_fetch_and_cancel():
    ex = instrument_ccxt(FakeExchange())
    ex.next_fill = 0.5
    placed = ex.create_order("ETH/USDT", "limit", "sell", 2.0, 100.0)
    assert placed["status"] == "open"
    [(order_id, followed)] = tracked_orders(ex).items()
    assert order_id == placed["id"] and followed.filled_quantity == 0.5 and not followed.closed
    ex.fetch_order(placed["id"])  # still open: nothing closes
    assert metric_value("tinywindow_orders_total", "fakex", "partially_filled") == 0.0
    ex.cancel_order(placed["id"])
    assert metric_value("tinywindow_orders_total", "fakex", "partially_filled") == 1.0
    assert REGISTRY.get("tinywindow_order_latency_seconds").labels("fakex", "cancel").snapshot()[0] != [0] * 16
    assert sum(REGISTRY.get("tinywindow_order_latency_seconds").labels("fakex", "cancel").snapshot()[0]) == 1
    assert tracked_orders(ex) == {}


def test_fake_exchange_rejection_is_counted_by_exception_class_and_propagates():
    ex = instrument_ccxt(FakeExchange())
    ex.fail_with = InsufficientFunds("fakex: balance too low")
    with pytest.raises(InsufficientFunds):
        ex.create_order("BTC/USDT", "market", "buy", 1.0)
    assert metric_value("tinywindow_order_rejections_total", "fakex", "InsufficientFunds") == 1.0
    assert metric_value("tinywindow_api_errors_total", "fakex", "InsufficientFunds") == 1.0


def test_async_exchange_keeps_coroutine_methods():
    ex = instrument_ccxt(AsyncFakeExchange(), venue="fakex-async",
                         reference_price=lambda symbol, side: 100.0)
    assert inspect.iscoroutinefunction(ex.create_order)
    assert not inspect.iscoroutinefunction(ex.fetch_order)

    async def main():
        await ex.fetch_ticker("BTC/USDT")
        return await ex.create_order("BTC/USDT", "market", "buy", 1.0)

    assert asyncio.run(main())["status"] == "closed"
    assert metric_value("tinywindow_orders_total", "fakex-async", "filled") == 1.0
    assert metric_value("tinywindow_api_requests_total", "fakex-async") == 2.0


def test_instrumenting_twice_is_a_noop_and_bad_venue_raises():
    ex = FakeExchange()
    instrument_ccxt(ex)
    wrapped = ex.create_order
    assert instrument_ccxt(ex).create_order is wrapped
    nameless = FakeExchange()
    nameless.id = None
    with pytest.raises(TypeError, match="tinywindow_orders_total"):
        instrument_ccxt(nameless)


def test_tracked_open_orders_are_bounded(monkeypatch):
    monkeypatch.setattr(exchange_module, "MAX_TRACKED_ORDERS", 5)
    ex = instrument_ccxt(FakeExchange())
    ex.next_fill = 0.0
    for _ in range(20):
        ex.create_order("BTC/USDT", "limit", "buy", 1.0, 100.0)
    assert len(tracked_orders(ex)) == 5
    dropped = REGISTRY.get("tinywindow_otel_dropped_measurements_total")
    assert dropped.labels("tinywindow_orders_total", "untracked_order").get() == 15.0


class BrokenHeadersExchange(FakeExchange):
    """An exchange object whose response headers cannot even be read."""

    @property
    def last_response_headers(self):
        raise RuntimeError("headers unavailable")

    @last_response_headers.setter
    def last_response_headers(self, value):
        pass


def test_telemetry_fault_never_breaks_the_exchange_call():
    ex = instrument_ccxt(BrokenHeadersExchange())
    assert ex.fetch_ticker("BTC/USDT")["bid"] == 99.0
    dropped = REGISTRY.get("tinywindow_otel_dropped_measurements_total")
    assert dropped.labels("tinywindow_api_requests_total", "instrumentation_error").get() == 1.0
    assert metric_value("tinywindow_api_requests_total", "fakex") == 1.0  # recorded before the fault


def test_tracked_orders_needs_an_instrumented_exchange_and_reset_forgets_them():
    with pytest.raises(TypeError, match="not instrumented"):
        tracked_orders(FakeExchange())
    ex = instrument_ccxt(FakeExchange())
    ex.next_fill = 0.0
    ex.create_order("BTC/USDT", "limit", "buy", 1.0, 100.0)
    assert len(tracked_orders(ex)) == 1
    reset_values()  # what tests start from: no series, so no order is followed either
    assert tracked_orders(ex) == {}


class UnhashableExchange(FakeExchange):
    """Compares by value, so it has no hash: it cannot be a weak dictionary key."""

    def __eq__(self, other):
        return isinstance(other, UnhashableExchange) and other.id == self.id


def test_an_unhashable_exchange_is_instrumented_once():
    ex = UnhashableExchange()
    assert instrument_ccxt(ex) is ex
    wrapped = ex.fetch_ticker
    instrument_ccxt(ex)
    assert ex.fetch_ticker is wrapped
    ex.next_fill = 0.0
    ex.create_order("BTC/USDT", "limit", "buy", 1.0, 100.0)
    assert len(tracked_orders(ex)) == 1
    with pytest.raises(TypeError, match="not instrumented"):
        tracked_orders(UnhashableExchange())  # equal, but another object


# --- the real ccxt package -------------------------------------------------------------------


def _market():
    return {"id": "BTCUSDT", "symbol": "BTC/USDT", "base": "BTC", "quote": "USDT", "baseId": "BTC",
            "quoteId": "USDT", "active": True, "type": "spot", "spot": True, "margin": False, "swap": False,
            "future": False, "option": False, "contract": False, "linear": None, "inverse": None,
            "precision": {"amount": 0.00001, "price": 0.01}, "lowercaseId": "btcusdt",
            "limits": {"amount": {"min": 0.00001, "max": 9000}, "price": {"min": 0.01, "max": 1e6},
                       "cost": {"min": 5, "max": None}},
            "info": {"orderTypes": ["LIMIT", "MARKET"]}}


def _binance_transport():
    """A requests transport adapter answering Binance REST paths locally: ccxt's real request path, no network."""
    import requests
    from requests.adapters import BaseAdapter

    class Transport(BaseAdapter):
        def __init__(self) -> None:
            super().__init__()
            self.calls = []

        def send(self, request, **kwargs):
            self.calls.append((request.method, request.url.split("?")[0]))
            response = requests.Response()
            response.status_code, response.reason, response.url, response.request = 200, "OK", request.url, request
            if "/api/v3/order" in request.url:
                body = {"symbol": "BTCUSDT", "orderId": 42, "clientOrderId": "c1", "transactTime": 1700000000000,
                        "price": "0.00", "origQty": "0.5", "executedQty": "0.5", "cummulativeQuoteQty": "32550.0",
                        "status": "FILLED", "timeInForce": "GTC", "type": "MARKET", "side": "BUY", "fills": []}
                response.headers.update({"X-MBX-USED-WEIGHT-1M": "1200", "X-MBX-ORDER-COUNT-10S": "3"})
            else:
                body = {"serverTime": 1700000000000}
                response.headers.update({"X-MBX-USED-WEIGHT-1M": "600"})
            response._content = json.dumps(body).encode()
            return response

        def close(self) -> None:
            pass

    return Transport()


def _offline_binance():
    """A real ``ccxt.binance`` whose requests session answers locally; returns (exchange, transport)."""
    import ccxt  # in the test extra: a missing package fails, never skips
    import requests

    ex = ccxt.binance({"apiKey": "key", "secret": "secret"})
    transport = _binance_transport()
    session = requests.Session()
    session.mount("https://", transport)
    ex.session = session
    ex.set_markets([_market()])
    return ex, transport


def test_real_ccxt_binance_over_a_local_transport(scrape_metrics):
    ex, transport = _offline_binance()
    instrument_ccxt(ex, reference_price=lambda symbol, side: 65_000.0)
    assert ex.fetch_time() == 1700000000000
    assert metric_value("tinywindow_exchange_rate_limit_used_ratio", "binance") == pytest.approx(0.1)
    order = ex.create_order("BTC/USDT", "market", "buy", 0.5)
    assert order["status"] == "closed" and order["average"] == pytest.approx(65_100.0)
    assert [m for m, _ in transport.calls] == ["GET", "POST"]
    families = scrape_metrics()
    assert sample_value(families, "tinywindow_orders_total", venue="binance", status="filled") == 1.0
    # 65100 vs 65000 on a buy: 15.38 bps worse.
    assert sample_value(families, "tinywindow_slippage_bps_sum", venue="binance", side="buy") == pytest.approx(
        (65_100 - 65_000) / 65_000 * 1e4)
    assert sample_value(families, "tinywindow_exchange_rate_limit_used_ratio", venue="binance") == pytest.approx(0.2)
    assert sample_value(families, "tinywindow_api_requests_total", service="binance") == 2.0


def test_real_ccxt_camel_case_aliases_are_instrumented_once(scrape_metrics):
    """ccxt's own examples call ``createOrder``/``fetchTime``: the aliases it copies every method to."""
    ex, transport = _offline_binance()
    instrument_ccxt(ex, reference_price=lambda symbol, side: 65_000.0)
    assert ex.fetchTime() == 1700000000000
    order = ex.createOrder("BTC/USDT", "market", "buy", 0.5)
    assert order["status"] == "closed"
    assert [m for m, _ in transport.calls] == ["GET", "POST"]
    families = scrape_metrics()
    assert sample_value(families, "tinywindow_api_requests_total", service="binance") == 2.0
    assert sample_value(families, "tinywindow_orders_total", venue="binance", status="filled") == 1.0
    assert sample_value(families, "tinywindow_exchange_rate_limit_used_ratio", venue="binance") == pytest.approx(0.2)
    # One wrapper per method, whichever name it is called by (fetch_ohlcv -> fetchOHLCV, as ccxt spells it).
    for snake, camel in (("create_order", "createOrder"), ("cancel_order", "cancelOrder"),
                         ("fetch_ticker", "fetchTicker"), ("fetch_ohlcv", "fetchOHLCV"),
                         ("fetch_balance", "fetchBalance"), ("fetch_open_orders", "fetchOpenOrders")):
        assert getattr(ex, camel) is getattr(ex, snake), camel


class CamelCaseExchange(FakeExchange):
    """Aliases as ccxt makes them: the camelCase name is the same function on the class."""

    createOrder = FakeExchange.create_order
    cancelOrder = FakeExchange.cancel_order
    fetchOrder = FakeExchange.fetch_order

    def fetchTicker(self, symbol, params={}):  # noqa: N802,B006 - an alias delegating to the snake_case method
        return self.fetch_ticker(symbol, params)


def test_fake_exchange_camel_case_calls_count_once_and_follow_orders():
    ex = instrument_ccxt(CamelCaseExchange())
    ex.next_fill = 0.5
    placed = ex.createOrder("ETH/USDT", "limit", "sell", 2.0, 100.0)
    assert list(tracked_orders(ex)) == [placed["id"]]
    ex.fetchOrder(placed["id"])
    ex.cancelOrder(placed["id"])
    assert tracked_orders(ex) == {}
    assert metric_value("tinywindow_orders_total", "fakex", "partially_filled") == 1.0
    ex.fetchTicker("BTC/USDT")  # delegates to fetch_ticker: still one request
    ex.fetch_ticker("BTC/USDT")
    assert metric_value("tinywindow_api_requests_total", "fakex") == 5.0
    assert ex.fetchTicker is ex.fetch_ticker
    assert not hasattr(ex, "fetchBalance")  # names the exchange lacks are not invented


def test_fake_exchange_has_ccxt_method_shapes():
    import ccxt
    import ccxt.async_support as ccxt_async

    real = ccxt.binance()
    for name in ("create_order", "cancel_order", "fetch_order", "fetch_ticker"):
        fake_params = list(inspect.signature(getattr(FakeExchange, name)).parameters)[1:]
        real_params = list(inspect.signature(getattr(real, name)).parameters)
        assert fake_params == real_params, name
    assert hasattr(real, "last_response_headers")
    async_ex = ccxt_async.binance()
    instrument_ccxt(async_ex)
    assert inspect.iscoroutinefunction(async_ex.create_order)
    assert inspect.iscoroutinefunction(async_ex.fetch_ticker)
    assert async_ex.createOrder is async_ex.create_order
    assert inspect.signature(async_ex.create_order) == inspect.signature(ccxt_async.binance().create_order)


def test_real_async_ccxt_binance_against_a_local_http_server():
    """ccxt.async_support over real HTTP (aiohttp, its own transport) to a local server answering Binance's paths."""
    import ccxt.async_support as ccxt_async
    from aiohttp import web

    calls = []

    async def server_time(request):
        calls.append(("GET", request.path))
        return web.json_response({"serverTime": 1700000000000}, headers={"X-MBX-USED-WEIGHT-1M": "300"})

    async def new_order(request):
        calls.append(("POST", request.path))
        body = {"symbol": "BTCUSDT", "orderId": 7, "clientOrderId": "c7", "transactTime": 1700000000000,
                "price": "0.00", "origQty": "1.0", "executedQty": "1.0", "cummulativeQuoteQty": "64935.0",
                "status": "FILLED", "timeInForce": "GTC", "type": "MARKET", "side": "SELL", "fills": []}
        return web.json_response(body, headers={"X-MBX-USED-WEIGHT-1M": "5700"})

    async def main():
        app = web.Application()
        app.router.add_get("/api/v3/time", server_time)
        app.router.add_post("/api/v3/order", new_order)
        runner = web.AppRunner(app)
        await runner.setup()
        sock = socket.socket()
        sock.bind(("127.0.0.1", 0))  # port 0: a free port, bound before the server takes the socket
        port = sock.getsockname()[1]
        await web.SockSite(runner, sock).start()
        ex = ccxt_async.binance({"apiKey": "key", "secret": "secret"})
        try:
            for name, url in list(ex.urls["api"].items()):
                if isinstance(url, str) and url.startswith("https://api.binance.com"):
                    ex.urls["api"][name] = url.replace("https://api.binance.com", f"http://127.0.0.1:{port}")
            ex.set_markets([_market()])
            instrument_ccxt(ex, reference_price=lambda symbol, side: 65_000.0)
            assert await ex.fetch_time() == 1700000000000
            assert metric_value("tinywindow_exchange_rate_limit_used_ratio", "binance") == pytest.approx(0.05)
            return await ex.create_order("BTC/USDT", "market", "sell", 1.0)
        finally:
            await ex.close()
            await runner.cleanup()

    order = asyncio.run(main())
    assert order["status"] == "closed" and order["average"] == pytest.approx(64_935.0)
    assert calls == [("GET", "/api/v3/time"), ("POST", "/api/v3/order")]
    assert metric_value("tinywindow_orders_total", "binance", "filled") == 1.0
    # Sold at 64935 vs 65000: 10 bps worse for a sell.
    slippage = REGISTRY.get("tinywindow_slippage_bps").labels("binance", "sell").snapshot()
    assert slippage[1] == pytest.approx((65_000 - 64_935) / 65_000 * 1e4)
    assert metric_value("tinywindow_exchange_rate_limit_used_ratio", "binance") == pytest.approx(0.95)
    assert metric_value("tinywindow_api_requests_total", "binance") == 2.0
