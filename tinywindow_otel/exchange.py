"""Exchange health: market-data feed age, reconnects, rate-limit headroom, and a ccxt adapter.

    >>> from tinywindow_otel.exchange import feed, record_rate_limit, instrument_ccxt
    >>> trades = feed("binance", "trades")       # once, where the websocket is opened
    >>> trades.message()                         # in the message handler: cheap
    >>> trades.reconnected()                     # after a reconnect
    >>> record_rate_limit("binance", response.headers)
    >>> exchange = instrument_ccxt(ccxt.binance({...}))   # orders, api and rate-limit metrics fill themselves

``tinywindow_exchange_feed_age_seconds{venue,stream}`` is computed when
metrics are collected (a scrape or an OTLP export) from the last
``message()``, so a websocket that died silently shows a growing age even
though nothing calls the SDK any more. ``feed()`` starts the clock, so a
stream that never delivers ages too; ``close()`` removes the series when a
stream is closed on purpose.
"""

from __future__ import annotations

import functools
import inspect
import re
import threading
import weakref
from collections import OrderedDict
from collections.abc import Callable, Iterable, Mapping
from time import monotonic, perf_counter
from typing import Any

from ._internal.forksafe import reset_after_fork
from .metrics import REGISTRY, GaugeSeries, MetricRegistry
from .orders import Order

__all__ = [
    "BINANCE_LIMITS", "Feed", "feed", "instrument_ccxt", "rate_limit_used_ratio", "record_rate_limit",
    "tracked_orders",
]

FEED_AGE = "tinywindow_exchange_feed_age_seconds"
RECONNECTS = "tinywindow_exchange_reconnects_total"
RATE_LIMIT = "tinywindow_exchange_rate_limit_used_ratio"


class _FeedAgeSeries(GaugeSeries):
    """A gauge whose value is the age of a monotonic timestamp, read at collection time."""

    __slots__ = ()

    def __init__(self, *args) -> None:
        super().__init__(*args)
        self._value = monotonic()

    def touch(self) -> None:
        self._value = monotonic()

    def get(self) -> float:
        last = self._value
        age = monotonic() - last if last is not None else 0.0
        return age if age > 0.0 else 0.0

    def set(self, value: float) -> None:
        """Set the age now (e.g. from an exchange's own message timestamp)."""
        number = self._finite(value)
        if number is not None:
            self._value = monotonic() - float(number)

    def _reset(self) -> None:
        pass  # a point in time, not a tally: a forked child keeps it


def _bind_age_series(registry: MetricRegistry) -> Any:
    metric = registry.gauge("exchange_feed_age_seconds")
    # Every series of this gauge is an age; this module is the one place feed ages are written.
    metric.set_series_class(_FeedAgeSeries)
    return metric


_feed_age = _bind_age_series(REGISTRY)


class Feed:
    """One market-data stream of one venue; from :func:`feed`."""

    __slots__ = ("venue", "stream", "_series", "_reconnects", "_metric")

    def __init__(self, venue: str, stream: str, registry: MetricRegistry | None = None) -> None:
        metric = _feed_age if registry is None else _bind_age_series(registry)
        series = metric.labels(venue, stream)
        if not isinstance(series, _FeedAgeSeries):  # created before this module set the class
            metric.remove(venue, stream)
            series = metric.labels(venue, stream)
        self._metric = metric
        self._series = series
        self._reconnects = (REGISTRY if registry is None else registry).get(RECONNECTS).labels(venue, stream)
        self.venue, self.stream = venue, stream

    def __repr__(self) -> str:
        return f"<Feed {self.venue}/{self.stream} age={self.age:.3f}s>"

    def message(self) -> None:
        """A message arrived on this stream now (the hot path: one clock read, no checks)."""
        self._series.touch()

    def set_age(self, seconds: float) -> None:
        """The last message is ``seconds`` old now, e.g. from the exchange's own event timestamp.

        The age keeps growing from there until the next message. NaN/inf are
        dropped (and counted); a non-number raises ``TypeError`` naming the metric.
        """
        self._series.set(seconds)

    @property
    def age(self) -> float:
        return self._series.get()

    def reconnected(self) -> None:
        """The stream was re-established (counts a reconnect; the age is not reset until a message)."""
        self._reconnects.inc()

    def close(self) -> None:
        """The stream is closed on purpose: its age leaves /metrics (no stale-feed alert)."""
        self._metric.remove(self.venue, self.stream)


def feed(venue: str, stream: str, *, registry: MetricRegistry | None = None) -> Feed:
    """The :class:`Feed` for ``venue``/``stream`` (e.g. ``"binance"``, ``"btcusdt@trade"``).

    Call it once when the stream is opened and keep the object; calling it
    again for the same stream shares its clock.
    """
    return Feed(venue, stream, registry)


# --- rate limits ---------------------------------------------------------------------

# Binance's documented spot limits (request weight per minute, orders per 10 s
# and per day), used when ``limits`` is not given. Examples: check the
# exchangeInfo ``rateLimits`` of your account and market (futures differ).
BINANCE_LIMITS: dict[str, float] = {"weight-1m": 6000.0, "order-10s": 100.0, "order-1d": 200000.0}
_MBX = re.compile(r"x-mbx-(used-weight|order-count)(?:-(\d+[smhd]))?$")
_NUMBER = re.compile(r"\s*(-?\d+(?:\.\d+)?)")


def _first_number(value: Any) -> float | None:
    if isinstance(value, (int, float)) and not isinstance(value, bool):
        return float(value)
    if isinstance(value, bytes):
        value = value.decode("latin-1")
    if not isinstance(value, str):
        return None
    match = _NUMBER.match(value)  # "100, 100;w=60" (IETF RateLimit) -> 100
    return float(match.group(1)) if match else None


def _items(headers: Any) -> Iterable[tuple[Any, Any]]:
    if isinstance(headers, Mapping):
        return headers.items()
    items = getattr(headers, "items", None)
    if callable(items):  # http.client.HTTPMessage, multidicts
        return items()
    raise TypeError(f"{RATE_LIMIT}: headers must be a mapping of header name to value, got {type(headers).__name__}")


def rate_limit_used_ratio(headers: Any, limits: Mapping[str, float] | None = None) -> float | None:
    """Share (0..1) of the rate limit used, from response headers; None when they say nothing.

    Understood: ``Retry-After`` (back off now: 1.0); Binance's
    ``X-MBX-USED-WEIGHT-<interval>`` and ``X-MBX-ORDER-COUNT-<interval>``
    against ``limits`` (keys ``weight-1m``, ``order-10s``, ...; defaults
    :data:`BINANCE_LIMITS`); ``X-RateLimit-Limit`` with
    ``X-RateLimit-Remaining`` (also without ``X-``). The tightest wins.
    """
    limits = BINANCE_LIMITS if limits is None else limits
    ratio: float | None = None
    limit = remaining = None
    for name, value in _items(headers):
        key = name.lower() if isinstance(name, str) else str(name).lower()
        used_ratio = None
        if key == "retry-after":
            used_ratio = 1.0
        elif key.startswith("x-mbx-"):
            match = _MBX.match(key)
            used = _first_number(value) if match else None
            if match is not None and used is not None:
                kind = "weight" if match.group(1) == "used-weight" else "order"
                cap = limits.get(f"{kind}-{match.group(2) or '1m'}")
                if cap:
                    used_ratio = used / cap
        elif key in ("x-ratelimit-limit", "ratelimit-limit"):
            limit = _first_number(value)
        elif key in ("x-ratelimit-remaining", "ratelimit-remaining"):
            remaining = _first_number(value)
        if used_ratio is not None and (ratio is None or used_ratio > ratio):
            ratio = used_ratio
    if limit and remaining is not None and limit > 0:
        generic = 1.0 - remaining / limit
        if ratio is None or generic > ratio:
            ratio = generic
    if ratio is None or ratio != ratio:
        return None
    return min(1.0, max(0.0, ratio))


def record_rate_limit(venue: str, headers: Any, limits: Mapping[str, float] | None = None, *,
                      registry: MetricRegistry | None = None) -> float | None:
    """Set ``tinywindow_exchange_rate_limit_used_ratio{venue}`` from one response's headers.

    Returns the ratio, or None (gauge unchanged) when no rate-limit header was present.
    """
    gauge = (REGISTRY if registry is None else registry).get(RATE_LIMIT).labels(venue)  # bad venue raises
    ratio = rate_limit_used_ratio(headers, limits)
    if ratio is not None:
        gauge.set(ratio)
    return ratio


# --- ccxt -----------------------------------------------------------------------------

# ccxt's unified REST calls that read state; each becomes an api_* request.
CCXT_FETCH_METHODS = (
    "fetch_ticker", "fetch_tickers", "fetch_order_book", "fetch_ohlcv", "fetch_trades", "fetch_balance",
    "fetch_order", "fetch_orders", "fetch_open_orders", "fetch_closed_orders", "fetch_my_trades",
    "fetch_positions", "fetch_funding_rate", "fetch_time", "fetch_status",
)
_ORDER_READERS = ("fetch_order", "fetch_orders", "fetch_open_orders", "fetch_closed_orders")
# Open orders followed between create_order and the call that closes them;
# beyond this many the oldest is forgotten (counted), so memory stays bounded.
MAX_TRACKED_ORDERS = 10_000


# Instrumented exchange -> its tracker, without setting attributes on the exchange object.
_BY_EXCHANGE: weakref.WeakKeyDictionary = weakref.WeakKeyDictionary()
# Exchanges that cannot be weak dictionary keys (unhashable: they define __eq__), by id with a strong reference.
_BY_ID: dict[int, tuple[Any, _CcxtTracker]] = {}


class _CcxtTracker:
    """What one instrumented exchange shares between its wrapped methods."""

    def __init__(self, exchange: Any, venue: str, reference_price, limits, registry: MetricRegistry) -> None:
        self.exchange = exchange
        self.venue = venue
        self.reference_price = reference_price
        self.limits = limits
        self.registry = registry
        self.open: OrderedDict[str, Order] = OrderedDict()
        self.lock = threading.Lock()
        self.drops = registry.drops
        reset_after_fork(self)
        registry.attach_recorder(self)
        self.requests = registry.get("tinywindow_api_requests_total")
        self.latency = registry.get("tinywindow_api_latency_seconds")
        self.errors = registry.get("tinywindow_api_errors_total")
        self.order_latency = registry.get("tinywindow_order_latency_seconds")
        registry.get(RATE_LIMIT).labels(venue)  # a bad venue raises at instrument time

    def reset(self) -> None:
        """Forget the open orders being followed (with the registry's series cleared)."""
        with self.lock:
            self.open.clear()

    def after_fork_in_child(self) -> None:
        self.lock = threading.Lock()  # a parent thread may have held it at fork time

    # -- around every call ---------------------------------------------------------

    def after(self, started: float, exc: BaseException | None) -> None:
        venue = self.venue
        self.requests.labels(venue).inc()
        self.latency.labels(venue).observe(perf_counter() - started)
        if exc is not None and isinstance(exc, Exception):
            self.errors.labels(venue, type(exc).__name__).inc()
        headers = getattr(self.exchange, "last_response_headers", None)
        if headers:
            try:
                record_rate_limit(venue, headers, self.limits, registry=self.registry)
            except Exception as fault:  # noqa: BLE001 - exchange data must not break the call
                self.drops.dropped(RATE_LIMIT, "unreadable_headers", fault)

    # -- orders ------------------------------------------------------------------------

    def new_order(self, args: tuple, kwargs: dict) -> Order | None:
        bound = _bind(_CREATE_ORDER, args, kwargs)
        side, amount, price, symbol = bound.get("side"), bound.get("amount"), bound.get("price"), bound.get("symbol")
        reference = self.reference_price(symbol, side) if self.reference_price is not None else None
        if reference is None and price is not None:
            reference = price
        try:
            quantity = float(amount)  # type: ignore[arg-type]  # None or junk raises TypeError/ValueError below
            reference = float(reference) if reference is not None else None
            return Order(self.venue, str(side), quantity, reference, registry=self.registry).submit()
        except (TypeError, ValueError) as fault:
            # ccxt validates its own arguments; a shape we cannot read is not the caller's problem here.
            self.drops.dropped("tinywindow_orders_total", "unreadable_order", fault)
            return None

    def created(self, order: Order | None, exc: BaseException | None, result: Any) -> None:
        if order is None:
            return
        if exc is not None:
            order.close(exc)
            return
        if isinstance(result, Mapping):
            order.update(result)
            order_id = result.get("id")
            if not order.closed and order_id is not None:
                self._track(str(order_id), order)
        else:
            order.acknowledged()

    def _track(self, order_id: str, order: Order) -> None:
        with self.lock:
            self.open[order_id] = order
            while len(self.open) > MAX_TRACKED_ORDERS:
                self.open.popitem(last=False)
                self.drops.dropped("tinywindow_orders_total", "untracked_order", order_id)

    def order_seen(self, info: Any) -> None:
        if not isinstance(info, Mapping) or info.get("id") is None:
            return
        order_id = str(info["id"])
        with self.lock:
            order = self.open.get(order_id)
        if order is None:
            return
        order.update(info)
        if order.closed:
            with self.lock:
                self.open.pop(order_id, None)

    def read(self, result: Any) -> None:
        if isinstance(result, Mapping):
            self.order_seen(result)
        elif isinstance(result, list):
            for info in result:
                self.order_seen(info)

    def cancel_started(self, args: tuple, kwargs: dict) -> Order | None:
        order_id = _bind(_CANCEL_ORDER, args, kwargs).get("id")
        with self.lock:
            order = self.open.get(str(order_id)) if order_id is not None else None
        if order is not None:
            order.cancel_requested()
        return order

    def cancelled(self, order: Order | None, started: float, exc: BaseException | None, result: Any) -> None:
        if exc is not None:
            return
        if order is None:  # placed before instrumenting: the call itself is the cancel latency
            self.order_latency.labels(self.venue, "cancel").observe(perf_counter() - started)
            return
        if isinstance(result, Mapping) and result.get("status") in ("closed", "expired", "rejected"):
            order.update(result)
        else:
            if isinstance(result, Mapping):
                order.update({"filled": result.get("filled"), "average": result.get("average")})
            order.cancelled()
        with self.lock:
            self.open.pop(next((k for k, v in self.open.items() if v is order), ""), None)


# ccxt's spelling of a snake_case method's camelCase alias (``Exchange.__init__``): parts after
# the first are capitalised, a few acronyms are upper-cased whole (fetch_ohlcv -> fetchOHLCV).
_CAMEL_ACRONYMS = {"ohlcv": "OHLCV", "le": "LE", "be": "BE", "adl": "ADL"}


def _ccxt_camel_case(name: str) -> str:
    """The camelCase alias ccxt gives a unified method: ``create_order`` -> ``createOrder``."""
    first, *rest = name.split("_")
    return first + "".join(_CAMEL_ACRONYMS.get(part, part[:1].upper() + part[1:]) for part in rest)


def _create_order(symbol, type, side, amount, price=None, params=None):  # noqa: A002 - ccxt's names
    pass


def _cancel_order(id, symbol=None, params=None):  # noqa: A002
    pass


_CREATE_ORDER = inspect.signature(_create_order)
_CANCEL_ORDER = inspect.signature(_cancel_order)


def _bind(signature: inspect.Signature, args: tuple, kwargs: dict) -> dict:
    try:
        return signature.bind_partial(*args, **kwargs).arguments
    except TypeError:
        return {}


def _wrap(method: Callable, before: Callable | None, after: Callable, tracker: _CcxtTracker) -> Callable:
    """Wrap one bound method: api metrics and rate limits always, ``before``/``after`` for orders."""

    def start(args, kwargs):
        try:
            return before(args, kwargs) if before is not None else None
        except Exception as fault:  # noqa: BLE001
            tracker.drops.dropped("tinywindow_api_requests_total", "instrumentation_error", fault)
            return None

    def finish(state, started, exc, result):
        try:
            tracker.after(started, exc)
            after(state, started, exc, result)
        except Exception as fault:  # noqa: BLE001 - telemetry never breaks the exchange call
            tracker.drops.dropped("tinywindow_api_requests_total", "instrumentation_error", fault)

    if inspect.iscoroutinefunction(method):
        @functools.wraps(method)
        async def async_wrapper(*args, **kwargs):
            state = start(args, kwargs)
            started = perf_counter()
            try:
                result = await method(*args, **kwargs)
            except BaseException as exc:
                finish(state, started, exc, None)
                raise
            finish(state, started, None, result)
            return result

        return async_wrapper

    @functools.wraps(method)
    def wrapper(*args, **kwargs):
        state = start(args, kwargs)
        started = perf_counter()
        try:
            result = method(*args, **kwargs)
        except BaseException as exc:
            finish(state, started, exc, None)
            raise
        finish(state, started, None, result)
        return result

    return wrapper


def instrument_ccxt(exchange: Any, venue: str | None = None, *,
                    reference_price: Callable[[str, str], float | None] | None = None,
                    limits: Mapping[str, float] | None = None,
                    registry: MetricRegistry | None = None) -> Any:
    """Instrument a ccxt exchange object (sync or ``ccxt.async_support``) in place; returns it.

    Duck-typed, ccxt is not imported: any object with ccxt's method names
    and signatures works. ``venue`` defaults to ``exchange.id``.

    - every ``create_order``, ``cancel_order`` and ``fetch_*`` call, by its snake_case name or
      ccxt's camelCase alias (``createOrder``, ``fetchOHLCV``; one wrapper, counted once):
      ``tinywindow_api_requests_total`` / ``_latency_seconds`` /
      ``_errors_total{type=<ccxt exception class>}`` with ``service=venue``,
      then the rate-limit gauge from ``exchange.last_response_headers``;
    - ``create_order``: an :class:`~tinywindow_otel.orders.Order` (ack =
      the call's duration, the returned order structure applied); an order
      still open is followed by id through ``fetch_order(s)`` /
      ``fetch_open_orders`` / ``fetch_closed_orders`` / ``cancel_order``
      until it closes. An exception from ``create_order`` closes the order as
      ``rejected`` with the exception's class as reason (``InsufficientFunds``).
    - slippage needs a reference price: the limit ``price``, or
      ``reference_price(symbol, side)`` (e.g. the mid price you decided on).

    Instrumenting twice is a no-op.
    """
    if _tracker_of(exchange) is not None:
        return exchange
    if venue is None:
        venue = getattr(exchange, "id", None)
    if not isinstance(venue, str) or not venue:
        raise TypeError(f"tinywindow_orders_total: instrument_ccxt needs a venue name (exchange.id), got {venue!r}")
    if reference_price is not None and not callable(reference_price):
        raise TypeError("tinywindow_slippage_bps: reference_price must be a callable (symbol, side) -> price")
    tracker = _CcxtTracker(exchange, venue, reference_price, limits, REGISTRY if registry is None else registry)

    def read_after(state, started, exc, result):
        if exc is None:
            tracker.read(result)

    def nothing(state, started, exc, result):
        pass

    plan: dict[str, tuple[Callable | None, Callable]] = {
        "create_order": (tracker.new_order, lambda state, started, exc, result: tracker.created(state, exc, result)),
        "cancel_order": (tracker.cancel_started, tracker.cancelled),
    }
    for name in CCXT_FETCH_METHODS:
        plan[name] = (None, read_after if name in _ORDER_READERS else nothing)
    for name, (before, after) in plan.items():
        # ccxt copies every method to a camelCase alias on the class (``createOrder``), and its
        # examples call those: both names get the one wrapper around the snake_case method, so a
        # call counts once by either name, even where the alias delegates to the snake_case one.
        names = [n for n in (name, _ccxt_camel_case(name)) if callable(getattr(exchange, n, None))]
        if names:
            wrapper = _wrap(getattr(exchange, names[0]), before, after, tracker)
            for attr in names:
                setattr(exchange, attr, wrapper)
    try:
        _BY_EXCHANGE[exchange] = tracker
    except TypeError:  # unhashable
        _BY_ID[id(exchange)] = (exchange, tracker)
    return exchange


def _tracker_of(exchange: Any) -> _CcxtTracker | None:
    try:
        tracker = _BY_EXCHANGE.get(exchange)
    except TypeError:
        tracker = None
    if tracker is None:
        kept = _BY_ID.get(id(exchange))
        if kept is not None and kept[0] is exchange:
            tracker = kept[1]
    return tracker


def tracked_orders(exchange: Any) -> dict[str, Order]:
    """The open orders ``instrument_ccxt`` follows on ``exchange``, by order id (a copy).

    An order leaves once it closes (filled, cancelled, ...); at most
    :data:`MAX_TRACKED_ORDERS` are followed. Raises ``TypeError`` for an
    exchange that was not instrumented.
    """
    tracker = _tracker_of(exchange)
    if tracker is None:
        raise TypeError(f"tinywindow_orders_total: {type(exchange).__name__} object was not instrumented "
                        f"with instrument_ccxt()")
    with tracker.lock:
        return dict(tracker.open)

