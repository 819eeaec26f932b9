"""The facade: prometheus_client-style metric objects built from the catalog.

Values are aggregated here, in plain Python objects guarded by a lock per
series, exactly like prometheus_client does; OpenTelemetry reads them at
collection time (see ``pipeline.py``). Keeping the aggregation in the facade
is what lets the hot path cost what prometheus_client costs and lets the P&L
histogram keep negative values (docs/decisions.md, ADR 1).

    >>> from tinywindow_otel import trades_total, trade_pnl_usd
    >>> trades_total.labels(status="filled", symbol="BTC/USDT").inc()
    >>> trade_pnl_usd.observe(-120.5)
"""

from __future__ import annotations

import logging
import math
import sys
import threading
import time
from bisect import bisect_left
from collections.abc import Callable, Iterator, Mapping
from numbers import Real

from .catalog import ALL_METRICS, Kind, MetricSpec

_log = logging.getLogger("tinywindow_otel")

OVERFLOW_LABEL_VALUE = "__overflow__"
# Label values longer than this are truncated (and counted): one runaway value
# from a data feed must not make every scrape megabytes long.
MAX_LABEL_VALUE_LENGTH = 256
_INF = math.inf
# Comparing against the largest float (not infinity) also rejects ints too
# large to convert to float, at the same cost on the hot path.
_MAX = sys.float_info.max
# One log line per (metric, reason) at most this often: telemetry must not
# flood the trading system's logs when a feed goes bad.
_LOG_INTERVAL_S = 60.0


class _DropReporter:
    """Counts measurements the SDK dropped or folded, logging each kind rarely."""

    def __init__(self) -> None:
        self._last_logged: dict[tuple[str, str], float] = {}
        self.registry: MetricRegistry | None = None

    def dropped(self, metric: str, reason: str, value: object = None) -> None:
        registry = self.registry
        if registry is not None:
            registry.get("tinywindow_otel_dropped_measurements_total").labels(metric, reason).inc()
        self._log_rarely(metric, reason, "dropped a measurement of %s (%s): %.80r", metric, reason, value)

    def sanitized(self, metric: str, label: str, reason: str) -> None:
        registry = self.registry
        if registry is not None:
            registry.get("tinywindow_otel_label_values_sanitized_total").labels(metric, reason).inc()
        self._log_rarely(metric, "label_" + reason, "%s: label %r had a value that is %s; it was rewritten",
                         metric, label, reason.replace("_", " "))

    def overflowed(self, metric: str, limit: int) -> None:
        registry = self.registry
        if registry is not None:
            registry.get("tinywindow_otel_cardinality_overflow_total").labels(metric).inc()
        self._log_rarely(
            metric, "overflow",
            "%s reached its limit of %d series; new label sets fold into the %s series",
            metric, limit, OVERFLOW_LABEL_VALUE,
        )

    def _log_rarely(self, metric: str, reason: str, msg: str, *args: object) -> None:
        now = time.monotonic()
        key = (metric, reason)
        last = self._last_logged.get(key)
        if last is None or now - last >= _LOG_INTERVAL_S:
            self._last_logged[key] = now
            _log.warning(msg, *args)


_drops = _DropReporter()


def _check_number(metric: str, value: object, what: str = "value") -> float:
    """Return ``value`` as a float, raising TypeError for anything non-numeric.

    Numbers beyond float range (huge ints, Fractions) become +-inf, which the
    callers drop and count like any other infinity: that is data, not a bug.
    """
    if value.__class__ is float:  # the common case, without the ABC isinstance checks
        return value  # type: ignore[return-value]
    if isinstance(value, bool) or not isinstance(value, Real):
        raise TypeError(f"{metric}: {what} must be a real number, got {type(value).__name__} {value!r}")
    try:
        return float(value)
    except OverflowError:
        return _INF if value > 0 else -_INF


def _drop_reason(value: float) -> str:
    return "nan" if math.isnan(value) else "inf"


# --- series (bound children) -------------------------------------------------


class _Series:
    __slots__ = ("_lock", "_metric", "attributes", "label_values", "created_ns")

    def __init__(self, metric: str, label_values: tuple[str, ...], attributes: dict[str, str]) -> None:
        self._lock = threading.Lock()
        self._metric = metric
        self.label_values = label_values
        self.attributes = attributes
        self.created_ns = time.time_ns()


class CounterSeries(_Series):
    """One labelled counter series; what ``Counter.labels(...)`` returns."""

    __slots__ = ("_value",)

    def __init__(self, *args) -> None:
        super().__init__(*args)
        self._value = 0.0

    def inc(self, amount: float = 1) -> None:
        """Increment by ``amount`` (>= 0). NaN/inf are dropped and counted."""
        cls = amount.__class__
        # Fast path: an int or finite float >= 0 (NaN fails ``>= 0``).
        if not ((cls is int or cls is float) and 0 <= amount <= _MAX):
            value = _check_number(self._metric, amount, "increment")
            if math.isnan(value) or math.isinf(value):
                _drops.dropped(self._metric, _drop_reason(value), amount)
                return
            if value < 0:
                raise ValueError(f"{self._metric}: counters can only be incremented by non-negative amounts, "
                                 f"got {amount!r}")
            amount = value
        with self._lock:
            total = self._value + amount
            if total != _INF:
                self._value = total
                return
        # A total beyond float range would pin the counter at +Inf for good.
        _drops.dropped(self._metric, "overflow", amount)

    def get(self) -> float:
        return self._value

    def count_exceptions(self, exception: type[BaseException] | tuple = Exception):
        """Decorator / context manager: +1 per call raising ``exception`` (sync, async, generators)."""
        from .decorators import count_exceptions
        return count_exceptions(self, exception)

    def _reset(self) -> None:
        with self._lock:
            self._value = 0.0
        self.created_ns = time.time_ns()


class GaugeSeries(_Series):
    """One labelled gauge series; what ``Gauge.labels(...)`` returns."""

    __slots__ = ("_value",)

    def __init__(self, *args) -> None:
        super().__init__(*args)
        self._value = 0.0

    def _finite(self, value: object) -> float | None:
        cls = value.__class__
        if (cls is float or cls is int) and -_MAX <= value <= _MAX:
            return value  # type: ignore[return-value]
        number = _check_number(self._metric, value)
        if math.isnan(number) or math.isinf(number):
            _drops.dropped(self._metric, _drop_reason(number), value)
            return None
        return number

    def _add(self, amount: float) -> None:
        with self._lock:
            total = self._value + amount
            if -_INF < total < _INF:
                self._value = total
                return
        _drops.dropped(self._metric, "overflow", amount)

    def set(self, value: float) -> None:
        """Set to ``value``. NaN/inf are dropped (the previous value stays) and counted."""
        number = self._finite(value)
        if number is not None:
            self._value = float(number)

    def inc(self, amount: float = 1) -> None:
        number = self._finite(amount)
        if number is not None:
            self._add(number)

    def dec(self, amount: float = 1) -> None:
        number = self._finite(amount)
        if number is not None:
            self._add(-number)

    def get(self) -> float:
        return self._value

    def _reset(self) -> None:
        self._value = 0.0


class HistogramSeries(_Series):
    """One labelled histogram series; what ``Histogram.labels(...)`` returns.

    Buckets are OTel explicit buckets: bucket ``i`` counts values in
    ``(bounds[i-1], bounds[i]]``, the last one values above every bound,
    which is Prometheus' ``le`` semantics too. Negative values are kept.
    """

    __slots__ = ("_bounds", "_counts", "_sum", "_min", "_max")

    def __init__(self, metric, label_values, attributes, bounds: tuple[float, ...]) -> None:
        super().__init__(metric, label_values, attributes)
        self._bounds = bounds
        self._counts = [0] * (len(bounds) + 1)
        self._sum = 0.0
        self._min = _INF
        self._max = -_INF

    def observe(self, value: float) -> None:
        """Record one observation. NaN/inf are dropped and counted."""
        cls = value.__class__
        if not ((cls is float or cls is int) and -_MAX <= value <= _MAX):
            number = _check_number(self._metric, value)
            if math.isnan(number) or math.isinf(number):
                _drops.dropped(self._metric, _drop_reason(number), value)
                return
            value = number
        index = bisect_left(self._bounds, value)
        with self._lock:
            total = self._sum + value
            if -_INF < total < _INF:
                self._counts[index] += 1
                self._sum = total
                if value < self._min:
                    self._min = value
                if value > self._max:
                    self._max = value
                return
        # A sum beyond float range would make _sum (and any mean) +-Inf for good.
        _drops.dropped(self._metric, "overflow", value)

    def time(self):
        """Decorator / context manager observing elapsed seconds (sync, async, generators)."""
        from .decorators import time_histogram
        return time_histogram(self)

    def snapshot(self) -> tuple[list[int], float, float, float]:
        """(bucket counts, sum, min, max), consistent with each other."""
        with self._lock:
            return list(self._counts), self._sum, self._min, self._max

    def _reset(self) -> None:
        with self._lock:
            self._counts = [0] * (len(self._bounds) + 1)
            self._sum = 0.0
            self._min = _INF
            self._max = -_INF
        self.created_ns = time.time_ns()


# --- metrics (families) --------------------------------------------------------


class _Metric:
    """A metric family: ``labels()`` hands out cached series."""

    _series_class: type[_Series]

    def __init__(self, spec: MetricSpec, registry: MetricRegistry) -> None:
        self.spec = spec
        self.name = spec.name
        self._labelnames = spec.labels
        self._registry = registry
        self._children: dict[tuple, _Series] = {}
        self._lock = threading.Lock()
        self._overflow: _Series | None = None
        self.max_series = spec.max_series

    def __repr__(self) -> str:
        return f"<{type(self).__name__} {self.name} labels={list(self._labelnames)}>"

    def set_max_series(self, limit: int) -> None:
        """Cap the distinct label sets of this metric (the catalog sets a default).

        Beyond the cap, new label sets fold into one series whose label values
        are all ``__overflow__``, counted in
        ``tinywindow_otel_cardinality_overflow_total``. Lowering the cap below
        the current count keeps existing series; only new ones fold.
        """
        if isinstance(limit, bool) or not isinstance(limit, int) or limit < 1:
            raise ValueError(f"{self.name}: max_series must be a positive int, got {limit!r}")
        with self._lock:
            self.max_series = limit

    def labels(self, *values: object, **kwargs: object):
        """Return the series for these label values (cached; create on first use).

        Accepts either all values positionally, in declared order, or all by name.
        """
        if kwargs:
            if values:
                raise ValueError(f"{self.name}: pass label values either positionally or by name, not both")
            try:
                values = tuple([kwargs[name] for name in self._labelnames])
            except KeyError:
                raise self._label_error(kwargs) from None
            if len(kwargs) != len(self._labelnames):
                raise self._label_error(kwargs)
        try:
            return self._children[values]
        except (KeyError, TypeError):  # new label set, or an unhashable value to report
            return self._new_child(values)

    def _label_error(self, given: dict) -> ValueError:
        missing = [n for n in self._labelnames if n not in given]
        unknown = [n for n in given if n not in self._labelnames]
        parts = []
        if missing:
            parts.append(f"missing label(s) {', '.join(missing)}")
        if unknown:
            parts.append(f"unknown label(s) {', '.join(unknown)}")
        expected = ", ".join(self._labelnames) or "none"
        return ValueError(f"{self.name}: {'; '.join(parts)} (expected: {expected})")

    def _canonical(self, values: tuple) -> tuple[str, ...]:
        if not self._labelnames:
            raise ValueError(f"{self.name}: this metric has no labels; call it directly instead of .labels()")
        if len(values) != len(self._labelnames):
            raise ValueError(
                f"{self.name}: expected {len(self._labelnames)} label value(s) "
                f"({', '.join(self._labelnames)}), got {len(values)}"
            )
        canonical = []
        for name, value in zip(self._labelnames, values):
            if isinstance(value, str):
                canonical.append(value if value.isascii() and len(value) <= MAX_LABEL_VALUE_LENGTH
                                 else self._sanitize(name, value))
            elif isinstance(value, (int, float)) and not isinstance(value, bool):
                canonical.append(str(value))
            else:
                raise TypeError(
                    f"{self.name}: label {name!r} must be a string (or number), got {type(value).__name__} {value!r}"
                )
        return tuple(canonical)

    def _sanitize(self, label: str, value: str) -> str:
        """A label value the exposition can carry: valid UTF-8, bounded length.

        Such values come from data (an exchange's symbol, an error string),
        so they are rewritten and counted rather than raised.
        """
        try:
            value.encode("utf-8")
        except UnicodeEncodeError:  # lone surrogates: every scrape would fail to encode
            value = value.encode("utf-8", "backslashreplace").decode("utf-8")
            _drops.sanitized(self.name, label, "invalid_utf8")
        if len(value) > MAX_LABEL_VALUE_LENGTH:
            value = value[:MAX_LABEL_VALUE_LENGTH]
            _drops.sanitized(self.name, label, "too_long")
        return value

    def _new_child(self, values: tuple) -> _Series:
        canonical = self._canonical(values)
        self._registry.first_use()
        with self._lock:
            child = self._children.get(canonical)
            if child is None:
                if len(self._children) >= self.max_series:
                    return self._overflow_child()
                child = self._make_series(canonical)
                self._children[canonical] = child
        return child

    def _overflow_child(self) -> _Series:
        # Called with self._lock held. The overflow series is not cached under
        # the new label values, so memory stays flat however many arrive.
        _drops.overflowed(self.name, self.max_series)
        if self._overflow is None:
            self._overflow = self._make_series((OVERFLOW_LABEL_VALUE,) * len(self._labelnames))
        return self._overflow

    def _make_series(self, label_values: tuple[str, ...]) -> _Series:
        attributes = dict(zip(self._labelnames, label_values))
        return self._series_class(self.name, label_values, attributes)

    def _unlabelled(self) -> _Series:
        child = self._children.get(())
        if child is None:
            if self._labelnames:
                raise ValueError(
                    f"{self.name}: this metric has labels ({', '.join(self._labelnames)}); "
                    f"call .labels(...) first"
                )
            self._registry.first_use()
            with self._lock:
                child = self._children.setdefault((), self._make_series(()))
        return child

    def remove(self, *values: object) -> None:
        """Remove one series; it disappears from /metrics."""
        canonical = self._canonical(values)
        with self._lock:
            self._children.pop(canonical, None)

    def clear(self) -> None:
        """Remove every series."""
        with self._lock:
            self._children.clear()
            self._overflow = None

    def series(self) -> list[_Series]:
        """A snapshot of the live series, the overflow series last."""
        with self._lock:
            children = list(self._children.values())
            if self._overflow is not None:
                children.append(self._overflow)
        return children

    def _reset_values(self) -> None:
        for child in self.series():
            child._reset()


class Counter(_Metric):
    """A monotonically increasing counter.

        >>> from tinywindow_otel import trades_total
        >>> trades_total.labels(status="filled", symbol="BTC/USDT").inc()
    """

    _series_class = CounterSeries

    def inc(self, amount: float = 1) -> None:
        self._unlabelled().inc(amount)

    def count_exceptions(self, exception: type[BaseException] | tuple = Exception):
        """Decorator / context manager counting calls that raise ``exception``; see ``decorators.py``.

            >>> @api_errors_total.labels(service="claude", type="any").count_exceptions()
            ... def ask(): ...
        """
        return self._unlabelled().count_exceptions(exception)


class Gauge(_Metric):
    """A value that goes up and down.

        >>> from tinywindow_otel import portfolio_value_usd
        >>> portfolio_value_usd.set(50_000.0)
    """

    _series_class = GaugeSeries

    def set(self, value: float) -> None:
        self._unlabelled().set(value)

    def inc(self, amount: float = 1) -> None:
        self._unlabelled().inc(amount)

    def dec(self, amount: float = 1) -> None:
        self._unlabelled().dec(amount)


class Histogram(_Metric):
    """A distribution with the catalog's bucket boundaries.

        >>> from tinywindow_otel import api_latency_seconds
        >>> api_latency_seconds.labels(service="claude").observe(0.42)
    """

    _series_class = HistogramSeries

    def _make_series(self, label_values: tuple[str, ...]) -> HistogramSeries:
        attributes = dict(zip(self._labelnames, label_values))
        return HistogramSeries(self.name, label_values, attributes, self.spec.buckets)

    def observe(self, value: float) -> None:
        self._unlabelled().observe(value)

    def time(self):
        """Decorator / context manager observing elapsed seconds; see ``decorators.py``.

            >>> @api_latency_seconds.labels(service="claude").time()
            ... async def ask(): ...
        """
        return self._unlabelled().time()


_CLASSES: dict[Kind, type[_Metric]] = {Kind.COUNTER: Counter, Kind.GAUGE: Gauge, Kind.HISTOGRAM: Histogram}


class MetricRegistry:
    """Every facade metric, built from the catalog; the one place OTel reads from."""

    def __init__(self, specs: tuple[MetricSpec, ...] = ALL_METRICS) -> None:
        self._metrics: dict[str, _Metric] = {spec.name: _CLASSES[spec.kind](spec, self) for spec in specs}
        self._on_first_use: Callable[[], None] | None = None
        self._started = False

    def __iter__(self) -> Iterator[_Metric]:
        return iter(self._metrics.values())

    def get(self, name: str) -> _Metric:
        return self._metrics[name]

    def by_attr(self, attr: str) -> _Metric:
        return self._metrics["tinywindow_" + attr]

    def set_limits(self, limits: Mapping[str, int]) -> None:
        """Set series caps for several metrics at once, by name or Python name.

            REGISTRY.set_limits({"trades_total": 4000, "tinywindow_active_positions": 200})
        """
        resolved = []
        for key, limit in limits.items():
            metric = self._metrics.get(key) or self._metrics.get("tinywindow_" + str(key))
            if metric is None:
                raise ValueError(f"set_limits: unknown metric {key!r}")
            resolved.append((metric, limit))
        for metric, limit in resolved:  # validate all names before changing any cap
            metric.set_max_series(limit)

    def set_first_use_hook(self, hook: Callable[[], None] | None) -> None:
        """Called once, when the first series is created (starts the OTel pipeline lazily)."""
        self._on_first_use = hook
        self._started = False

    def first_use(self) -> None:
        if not self._started and self._on_first_use is not None:
            self._started = True
            self._on_first_use()

    def reset_values(self) -> None:
        """Zero every series, keeping the label sets (used in a forked child)."""
        for metric in self:
            metric._reset_values()

    def after_fork_in_child(self) -> None:
        """Fresh locks (a parent thread may have held one at fork time), then zeroed values."""
        for metric in self:
            metric._lock = threading.Lock()
            for child in metric.series():
                child._lock = threading.Lock()
        self.reset_values()


REGISTRY = MetricRegistry()
_drops.registry = REGISTRY
