"""Order execution: how each order fared at its venue, from submit to close.

    >>> from tinywindow_otel.orders import order
    >>> with order("binance", "buy", quantity=0.5, reference_price=65_000.0) as o:
    ...     o.acknowledged()                 # the exchange accepted it
    ...     o.filled(0.5, 65_013.0)          # one fill (call once per fill)

One order records, in ``catalog.EXECUTION_METRICS``:

- ``tinywindow_orders_total{venue,status}``: ``submitted`` when it is sent,
  ``acknowledged`` when the venue accepts it, then exactly one closing status
  (``filled``, ``partially_filled``, ``rejected``, ``cancelled``, ``expired``),
  so ``submitted - sum(closing)`` is the number of orders in flight;
- ``tinywindow_order_latency_seconds{venue,stage}``: ``ack`` (submit ->
  acknowledgement), ``fill`` (submit -> last fill), ``cancel`` (cancel request
  -> confirmation);
- ``tinywindow_order_fill_ratio{venue}``: filled / requested quantity when
  the order closes (rejected orders never rested on the book and are left out);
- ``tinywindow_slippage_bps{venue,side}``: the volume-weighted fill price vs
  the reference price given at submit, positive = worse for the side;
- ``tinywindow_order_rejections_total{venue,reason}`` and
  ``tinywindow_last_order_fill_timestamp_seconds{venue}``.

Bad arguments (unknown side, non-positive quantity, a non-number) raise at
once, naming the metric; NaN/inf from an exchange payload are dropped and
counted in ``tinywindow_otel_dropped_measurements_total``.
"""

from __future__ import annotations

import math
import threading
import time
import weakref
from collections.abc import Mapping
from time import perf_counter
from typing import Any, Literal

from ._internal.forksafe import reset_after_fork
from ._internal.series import check_number as _check_number
from ._internal.wrapper import CallWrapper, Probe, is_error
from .catalog import ORDER_SIDES as SIDES
from .catalog import ORDER_STAGES as STAGES
from .catalog import ORDER_STATUSES
from .metrics import REGISTRY, MetricRegistry

__all__ = ["CLOSING_STATUSES", "ORDER_STATUSES", "SIDES", "STAGES", "Order", "order"]

# ORDER_STATUSES, STAGES and SIDES are the catalog's closed sets for the execution metrics' labels.
CLOSING_STATUSES = ("filled", "partially_filled", "rejected", "cancelled", "expired")

_ORDERS = "tinywindow_orders_total"
# A fill within this relative distance of the requested quantity completes
# the order: exchanges round quantities to their lot size.
_FILL_TOLERANCE = 1e-9
# ccxt's unified order ``status`` -> our closing status (``open`` closes nothing).
_CCXT_STATUS = {"closed": "filled", "canceled": "cancelled", "cancelled": "cancelled",
                "expired": "expired", "rejected": "rejected"}


class _Metrics:
    """The execution metrics of one registry, looked up once."""

    def __init__(self, registry: MetricRegistry) -> None:
        self.drops = registry.drops
        self.orders = registry.get(_ORDERS)
        self.latency = registry.get("tinywindow_order_latency_seconds")
        self.fill_ratio = registry.get("tinywindow_order_fill_ratio")
        self.slippage = registry.get("tinywindow_slippage_bps")
        self.rejections = registry.get("tinywindow_order_rejections_total")
        self.last_fill = registry.get("tinywindow_last_order_fill_timestamp_seconds")


_metrics = _Metrics(REGISTRY)
_by_registry: weakref.WeakKeyDictionary[MetricRegistry, _Metrics] = weakref.WeakKeyDictionary()


def _metrics_of(registry: MetricRegistry | None) -> _Metrics:
    if registry is None or registry is REGISTRY:
        return _metrics
    m = _by_registry.get(registry)
    if m is None:
        m = _by_registry[registry] = _Metrics(registry)
    return m


def _finite_positive(metric: str, value: object, what: str) -> float:
    number = _check_number(metric, value, what)
    if not (0 < number < math.inf):
        raise ValueError(f"{metric}: {what} must be a finite number > 0, got {value!r}")
    return number


def _side(value: object) -> str:
    side = value.lower() if isinstance(value, str) else None
    if side not in SIDES:
        raise ValueError(f"tinywindow_slippage_bps: side must be 'buy' or 'sell', got {value!r}")
    return side


def slippage_bps(side: str, reference_price: float, average_price: float) -> float:
    """Signed slippage in basis points: positive when the fill is worse than the reference for ``side``."""
    move = (average_price - reference_price) / reference_price * 10_000.0
    return move if side == "buy" else -move


class Order:
    """One order's lifecycle; what ``with order(...) as o`` binds.

    Without ``with``: ``o = Order(venue, side, quantity, reference_price).submit()``,
    then the same methods from wherever the exchange's answers arrive (a REST
    response, a websocket handler). Methods are thread-safe; reports after the
    order closed are ignored, so a fill seen on both the websocket and REST is
    not counted twice once the order is complete.
    """

    __slots__ = ("venue", "side", "quantity", "reference_price", "status", "reason", "filled_quantity",
                 "_notional", "_t0", "_acked", "_cancel_at", "_last_fill", "_lock", "_m", "__weakref__")

    def __init__(self, venue: str, side: str, quantity: float, reference_price: float | None = None, *,
                 registry: MetricRegistry | None = None) -> None:
        m = _metrics_of(registry)
        m.orders.labels(venue, "submitted")  # a bad venue raises here, before anything is counted
        self.venue = venue
        self.side = _side(side)
        self.quantity = _finite_positive(_ORDERS, quantity, "quantity")
        self.reference_price = (None if reference_price is None
                                else _finite_positive("tinywindow_slippage_bps", reference_price, "reference_price"))
        self.status: str | None = None  # the closing status, once closed
        self.reason: str | None = None
        self.filled_quantity = 0.0
        self._notional = 0.0
        self._t0: float | None = None
        self._acked = False
        self._cancel_at: float | None = None
        self._last_fill: float | None = None
        self._lock = threading.Lock()
        self._m = m
        # Open orders can outlive a fork (held by the caller or the ccxt adapter).
        reset_after_fork(self)


    def after_fork_in_child(self) -> None:
        self._lock = threading.Lock()  # a parent thread may have held it at fork time
    def __repr__(self) -> str:
        return (f"<Order {self.venue} {self.side} {self.filled_quantity:g}/{self.quantity:g} "
                f"{self.status or ('open' if self._t0 is not None else 'new')}>")

    @property
    def closed(self) -> bool:
        return self.status is not None

    @property
    def average_price(self) -> float | None:
        """Volume-weighted fill price so far (None before the first fill)."""
        return self._notional / self.filled_quantity if self.filled_quantity else None

    # -- context manager and decorator ---------------------------------------

    def __enter__(self) -> Order:
        return self.submit()

    def __exit__(self, exc_type, exc, tb) -> Literal[False]:
        try:
            self.close(exc)
        except Exception as fault:  # noqa: BLE001 - telemetry never replaces the caller's exception
            self._m.drops.dropped(_ORDERS, "instrumentation_error", fault)
        return False

    async def __aenter__(self) -> Order:
        return self.submit()

    async def __aexit__(self, exc_type, exc, tb) -> Literal[False]:
        return self.__exit__(exc_type, exc, tb)

    def __call__(self, func):
        """Decorate a function placing orders like this one: each call is a new order (sync, async)."""
        if self._t0 is not None:
            raise RuntimeError(f"{_ORDERS}: an order already submitted cannot decorate a function")
        probe = _OrderProbe(self.venue, self.side, self.quantity, self.reference_price, self._m)
        return CallWrapper(probe)(func)

    # -- lifecycle ------------------------------------------------------------

    def submit(self, at: float | None = None) -> Order:
        """The order is sent now: counts ``submitted`` and starts the latency clocks.

        ``at`` (here and in the other lifecycle methods): when it happened, as a
        ``time.perf_counter()`` reading, for replaying recorded timings; default now.
        """
        if self._t0 is not None:
            raise RuntimeError(f"{_ORDERS}: order at {self.venue} was already submitted")
        self._m.orders.labels(self.venue, "submitted").inc()
        self._t0 = perf_counter() if at is None else _check_number(_ORDERS, at, "at")
        return self

    def acknowledged(self, at: float | None = None) -> None:
        """The venue accepted the order (an order id came back). Later calls are ignored."""
        now = self._when(at)
        with self._lock:
            self._ack_locked(now)

    def _ack_locked(self, now: float) -> None:
        if self._acked or self.status is not None:
            return
        start = self._started()
        self._acked = True
        m = self._m
        m.orders.labels(self.venue, "acknowledged").inc()
        m.latency.labels(self.venue, "ack").observe(now - start)

    def filled(self, quantity: float, price: float, at: float | None = None) -> None:
        """One fill of ``quantity`` at ``price`` (call once per fill; a fill implies the acknowledgement).

        The order closes as ``filled`` once the fills reach the requested quantity.
        """
        qty = _check_number(_ORDERS, quantity, "fill quantity")
        px = _check_number("tinywindow_slippage_bps", price, "fill price")
        if not (math.isfinite(qty) and math.isfinite(px)):
            self._m.drops.dropped(_ORDERS, "nan" if math.isnan(qty) or math.isnan(px) else "inf", (quantity, price))
            return
        if qty < 0 or px <= 0:
            raise ValueError(f"{_ORDERS}: a fill needs quantity >= 0 and price > 0, got {quantity!r} @ {price!r}")
        now = self._when(at)
        with self._lock:
            if self.status is not None or qty == 0:
                return
            self._ack_locked(now)
            self.filled_quantity += qty
            self._notional += qty * px
            self._last_fill = now
            self._m.last_fill.labels(self.venue).set(time.time())
            if self.filled_quantity >= self.quantity * (1 - _FILL_TOLERANCE):
                self._close_locked("filled", None)

    def rejected(self, reason: str = "unknown") -> None:
        """The venue refused the order; ``reason`` is a short code (``insufficient_funds``), not a message."""
        self._m.rejections.labels(self.venue, reason)  # a bad reason raises before closing
        with self._lock:
            self._close_locked("rejected", reason)

    def cancel_requested(self, at: float | None = None) -> None:
        """A cancel was sent now; ``cancelled()`` then records the cancel latency."""
        now = self._when(at)
        with self._lock:
            if self._cancel_at is None:
                self._cancel_at = now

    def cancelled(self, at: float | None = None) -> None:
        """The venue confirmed the cancel (``partially_filled`` if some quantity had filled)."""
        now = self._when(at, self._cancel_at)
        with self._lock:
            if self.status is None and self._cancel_at is not None:
                self._m.latency.labels(self.venue, "cancel").observe(now - self._cancel_at)
            self._close_locked("cancelled", None)

    def expired(self) -> None:
        """The order ended unfilled by its time in force (``partially_filled`` if some quantity had filled)."""
        with self._lock:
            self._close_locked("expired", None)

    def close(self, exc: BaseException | None = None) -> None:
        """Close an order nobody reported closed (what leaving ``with order(...)`` does).

        Fully filled -> ``filled``; partly -> ``partially_filled``; an error
        before the venue acknowledged it -> ``rejected`` with the exception's
        class name as reason; acknowledged but unfilled -> ``expired``.
        """
        with self._lock:
            if self.status is not None:
                return
            if is_error(exc) and not self._acked and not self.filled_quantity:
                reason = type(exc).__name__
                self._m.rejections.labels(self.venue, reason)
                self._close_locked("rejected", reason)
            else:
                self._close_locked("expired", None)

    def update(self, info: Mapping[str, Any] | Any) -> None:
        """Apply an order structure as ccxt returns it (``status``, ``filled``, ``average``/``price``).

        Idempotent: the totals in ``info`` replace what was known, so the
        same structure seen twice counts once.
        """
        get = info.get if isinstance(info, Mapping) else (lambda key, default=None: getattr(info, key, default))
        status = get("status")
        filled = get("filled")
        price = get("average") or get("price")
        now = perf_counter()
        with self._lock:
            if self.status is not None:
                return
            if status is not None or filled is not None:
                self._ack_locked(now)
            if filled is not None and price is not None:
                total = _check_number(_ORDERS, filled, "filled")
                px = _check_number("tinywindow_slippage_bps", price, "average")
                if not (math.isfinite(total) and math.isfinite(px)):
                    self._m.drops.dropped(_ORDERS, "nan" if math.isnan(total) or math.isnan(px) else "inf", info)
                elif total > self.filled_quantity and px > 0:
                    self.filled_quantity = total
                    self._notional = total * px
                    self._last_fill = now
                    self._m.last_fill.labels(self.venue).set(time.time())
            closing = _CCXT_STATUS.get(status) if isinstance(status, str) else None
            if closing == "filled" and self.filled_quantity < self.quantity * (1 - _FILL_TOLERANCE):
                closing = "partially_filled" if self.filled_quantity else "expired"
            if closing == "rejected":
                self._m.rejections.labels(self.venue, "rejected")
                self._close_locked("rejected", "rejected")
            elif closing is not None:
                self._close_locked(closing, None)

    # -- internals --------------------------------------------------------------

    def _when(self, at: float | None, since: float | None = None) -> float:
        """``at`` (or now) checked not to precede the submit: a latency is never negative."""
        if at is None:
            return perf_counter()
        now = _check_number(_ORDERS, at, "at")
        start = self._t0 if since is None else since
        if start is not None and now < start:
            raise ValueError(f"tinywindow_order_latency_seconds: at={at!r} is before the order's "
                             f"{'submit' if since is None else 'cancel request'} at {start!r}")
        return now

    def _started(self) -> float:
        if self._t0 is None:
            raise RuntimeError(f"{_ORDERS}: order at {self.venue} was not submitted; call submit() "
                               f"or use `with order(...)`")
        return self._t0

    def _close_locked(self, status: str, reason: str | None) -> None:
        if self.status is not None:
            return
        start = self._started()
        if status in ("cancelled", "expired") and self.filled_quantity:
            status = "partially_filled"
        self.status, self.reason = status, reason
        m, venue = self._m, self.venue
        m.orders.labels(venue, status).inc()
        if status == "rejected":
            m.rejections.labels(venue, reason).inc()
            return
        if self._last_fill is not None:
            m.latency.labels(venue, "fill").observe(self._last_fill - start)
        m.fill_ratio.labels(venue).observe(min(1.0, self.filled_quantity / self.quantity))
        if self.reference_price is not None and self.filled_quantity:
            average = self._notional / self.filled_quantity
            m.slippage.labels(venue, self.side).observe(slippage_bps(self.side, self.reference_price, average))


class _OrderProbe(Probe):
    metric = _ORDERS
    exposes_state = True

    def __init__(self, venue, side, quantity, reference_price, metrics: _Metrics) -> None:
        self._args = (venue, side, quantity, reference_price)
        self._m = metrics
        self.drops = metrics.drops

    def start(self, args, kwargs) -> Order:
        o = Order(*self._args)
        o._m = self._m
        return o.submit()

    def finish(self, o: Order, exc, result) -> None:
        if exc is None and result is not None and not isinstance(result, (str, bytes)):
            if isinstance(result, Mapping) or hasattr(result, "status"):
                o.update(result)
        o.close(exc)


def order(venue: str, side: str, quantity: float, reference_price: float | None = None, *,
          registry: MetricRegistry | None = None) -> Order:
    """One order's lifecycle: a context manager (sync and async), or a decorator.

        with order("binance", "buy", 0.5, reference_price=mid) as o:
            placed = exchange.create_order("BTC/USDT", "limit", "buy", 0.5, limit_price)
            o.acknowledged()
            for fill in fills: o.filled(fill.qty, fill.price)

        @order("binance", "sell", 1.0, reference_price=3_200.0)
        async def place(): return await exchange.create_order(...)   # a ccxt order structure is read

    Entering submits (``submitted``, clocks start); leaving closes the order
    if nothing closed it (:meth:`Order.close`). As a decorator every call is
    a new order, and the return value, when it is an order structure
    (ccxt's unified ``status``, ``filled``, ``average``), is applied with
    :meth:`Order.update`. For orders that outlive a block (a resting limit
    order), keep the :class:`Order` and call ``submit()`` yourself.
    Arguments are validated here: a bad one raises before anything is counted.
    """
    return Order(venue, side, quantity, reference_price, registry=registry)
