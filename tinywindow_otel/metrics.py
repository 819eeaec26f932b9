"""The facade: prometheus_client-style metrics, the catalog's and your own.

    >>> from tinywindow_otel import trades_total, trade_pnl_usd, Counter
    >>> trades_total.labels(status="filled", symbol="BTC/USDT").inc()
    >>> trade_pnl_usd.observe(-120.5)
    >>> orders = Counter("tinywindow_orders_open_total", "Open orders", ["symbol"])  # doctest: +SKIP

Values are aggregated in the facade's own series (``_internal/series.py``);
``_internal/producer.py`` turns them into OpenTelemetry ``MetricsData`` for
/metrics and OTLP alike (docs/decisions.md, "ADR 1: One producer").

Every metric lives in a :class:`MetricRegistry`: the process-wide
``REGISTRY`` holds one facade object per catalog entry plus the metrics you
declare, with the same validation, series caps and self-metrics.
"""

from __future__ import annotations

import threading
import weakref
from collections.abc import Callable, Iterable, Iterator, Mapping
from operator import itemgetter
from typing import Any, Generic, TypeVar

from ._internal import labels as _labels
from ._internal.forksafe import reset_after_fork
from ._internal.labels import MAX_LABEL_VALUE_LENGTH, RESERVED_REPLACEMENT
from ._internal.render import family_name
from ._internal.selfmetrics import OVERFLOW_LABEL_VALUE, DropReporter, default_drops
from ._internal.series import Attributes, CounterSeries, GaugeSeries, HistogramSeries, Series, check_number
from ._internal.wrapper import count_exceptions as _count_exceptions
from ._internal.wrapper import time_histogram as _time_histogram
from .catalog import ALL_METRICS, DEFAULT_MAX_SERIES, Kind, MetricSpec

__all__ = [
    "Counter", "Gauge", "Histogram", "MetricRegistry", "REGISTRY", "DEFAULT_BUCKETS",
    "CounterSeries", "GaugeSeries", "HistogramSeries", "OVERFLOW_LABEL_VALUE", "MAX_LABEL_VALUE_LENGTH",
    "RESERVED_REPLACEMENT", "check_number",
]

# prometheus_client's default buckets, for a Histogram declared without any.
DEFAULT_BUCKETS = (0.005, 0.01, 0.025, 0.05, 0.075, 0.1, 0.25, 0.5, 0.75, 1.0, 2.5, 5.0, 7.5, 10.0)
_DEFAULT = object()
# The series class of a metric family: what ``labels()`` returns.
_S = TypeVar("_S", bound=Series)
_M = TypeVar("_M", "Counter", "Gauge", "Histogram")


class _Metric(Generic[_S]):
    """A metric family: ``labels()`` hands out cached series."""

    _series_class: type[_S]
    kind: Kind

    def __init__(self, name: str, documentation: str, labelnames: Iterable[str] = (), namespace: str = "",
                 subsystem: str = "", unit: str = "", registry: MetricRegistry | None | object = _DEFAULT, *,
                 max_series: int = DEFAULT_MAX_SERIES, buckets: Iterable[float] = ()) -> None:
        """prometheus_client's signature, positionally too; ``registry=None`` keeps the metric out of any registry.

        The name is ``namespace_subsystem_name``; a ``unit`` is appended on /metrics
        when the name does not end in it (``unit="seconds"`` or the OpenTelemetry
        ``"s"`` -> ``_seconds``); over OTLP the name stays and the unit is the unit.
        """
        for what, value in (("namespace", namespace), ("subsystem", subsystem), ("unit", unit)):
            if not isinstance(value, str):
                raise TypeError(f"{name}: {what} must be a string, got {type(value).__name__} {value!r:.80}")
        full = "_".join(part for part in (namespace, subsystem, name) if part)
        _labels.check_metric_name(full)
        if not isinstance(documentation, str):
            raise TypeError(f"{full}: documentation must be a string, got {type(documentation).__name__}")
        names = _labels.check_label_names(full, labelnames, histogram=self.kind is Kind.HISTOGRAM)
        spec = MetricSpec(full, self.kind, documentation, names, unit, tuple(buckets),
                          _labels.check_max_series(full, max_series))
        target = REGISTRY if registry is _DEFAULT else registry
        self._setup(spec, target if isinstance(target, MetricRegistry) else None)
        if target is not None:
            if not isinstance(target, MetricRegistry):
                raise TypeError(f"{full}: registry must be a tinywindow_otel MetricRegistry, got {target!r}")
            target.register(self)

    @classmethod
    def _from_spec(cls, spec: MetricSpec, registry: MetricRegistry | None) -> _Metric[Any]:
        metric = cls.__new__(cls)
        metric._setup(spec, registry)
        return metric

    def _setup(self, spec: MetricSpec, registry: MetricRegistry | None) -> None:
        self.spec = spec
        self.name = spec.name
        # The name a scrape shows on the samples (unit and _total applied): two metrics may not share it.
        self._exposed_name = family_name(spec.kind.value, spec.name, spec.unit)[1]
        self.documentation = spec.description
        self.labelnames = spec.labels
        self._registry = registry
        self.drops: DropReporter = registry.drops if registry is not None else default_drops
        self._children: dict[tuple, _S] = {}
        self._lock = threading.Lock()
        self._overflow: _S | None = None
        # Registered or not, a metric gets fresh locks in a forked child.
        reset_after_fork(self)
        self.max_series = spec.max_series
        # The spec's initial label sets do not count against the cap.
        self._preset = len(spec.initial)
        n = len(spec.labels)
        self._first_label = spec.labels[0] if n == 1 else None
        self._key_of = itemgetter(*spec.labels) if n > 1 else None
        # Per label, the closed set of values it may take (None: any); checked where a label set is new.
        self._allowed = tuple(spec.allowed_values(label) for label in spec.labels) if spec.allowed else None
        self._new_default()

    def __repr__(self) -> str:
        return f"<{type(self).__name__} {self.name} labels={list(self.labelnames)}>"

    def set_series_class(self, series_class: type[_S]) -> None:
        """Make every series created from now on a ``series_class`` (a subclass of this kind's series).

        For a value computed at collection time (``exchange.feed()``'s age is
        a ``GaugeSeries`` whose ``get()`` reads a clock). Series that already
        exist keep their class; ``remove()`` one to re-create it.
        """
        base = type(self)._series_class
        if not (isinstance(series_class, type) and issubclass(series_class, base)):
            raise TypeError(f"{self.name}: series_class must be a subclass of {base.__name__}, got {series_class!r}")
        with self._lock:
            self._series_class = series_class

    def set_max_series(self, limit: int) -> None:
        """Cap the distinct label sets of this metric (the catalog sets a default).

        Beyond the cap, new label sets fold into one series whose label values
        are all ``__overflow__``, counted in
        ``tinywindow_otel_cardinality_overflow_total``. Lowering the cap below
        the current count keeps existing series; only new ones fold.
        """
        limit = _labels.check_max_series(self.name, limit)
        with self._lock:
            self.max_series = limit

    def labels(self, *values: object, **kwargs: object) -> _S:
        """Return the series for these label values (cached; created on first use).

        Accepts either all values positionally, in declared order, or all by name.
        """
        if kwargs:
            if values:
                raise ValueError(f"{self.name}: pass label values either positionally or by name, not both")
            try:
                if self._key_of is not None:
                    values = self._key_of(kwargs)
                else:
                    # No label at all (None) raises the KeyError reported below.
                    values = (kwargs[self._first_label],)  # type: ignore[index]
            except KeyError:
                raise self._label_error(kwargs) from None
            if len(kwargs) != len(self.labelnames):
                raise self._label_error(kwargs)
        try:
            return self._children[values]
        except (KeyError, TypeError):  # new label set, or an unhashable value to report
            return self._new_child(values)

    def initialise(self, *label_sets: Mapping[str, object] | Iterable[object]) -> None:
        """Create these label sets now, so /metrics shows them (at 0) before anything is recorded.

            trades_total.initialise({"status": "filled", "symbol": "BTC/USDT"}, ("rejected", "BTC/USDT"))
        """
        for label_set in label_sets:
            if isinstance(label_set, Mapping):
                self.labels(**label_set)
            else:
                self.labels(*label_set)

    def _label_error(self, given: dict) -> ValueError:
        missing = [n for n in self.labelnames if n not in given]
        unknown = [n for n in given if n not in self.labelnames]
        parts = []
        if missing:
            parts.append(f"missing label(s) {', '.join(missing)}")
        if unknown:
            parts.append(f"unknown label(s) {', '.join(map(str, unknown))}")
        if self._first_label is None and self._key_of is None:
            parts.append("this metric has no labels; call it directly")
        expected = ", ".join(self.labelnames) or "none"
        return ValueError(f"{self.name}: {'; '.join(parts)} (expected: {expected})")

    def canonical_labels(self, *values: object) -> tuple[str, ...]:
        """The label values as the series stores and /metrics shows them (numbers formatted,
        invalid UTF-8, over-long and reserved values rewritten and counted); raises like ``labels()``."""
        return self._canonical(values)

    def _canonical(self, values: tuple) -> tuple[str, ...]:
        return _labels.canonical(self.name, self.labelnames, values, self.drops, self._allowed)

    def _new_child(self, values: tuple) -> _S:
        canonical = self._canonical(values)
        if self._registry is not None:
            self._registry.first_use()
        folded = False
        with self._lock:
            child = self._children.get(canonical)
            if child is None:
                if len(self._children) - self._preset >= self.max_series:
                    folded = True
                    child = self._overflow
                    if child is None:
                        child = self._overflow = self._make_series((OVERFLOW_LABEL_VALUE,) * len(self.labelnames))
                else:
                    child = self._children[canonical] = self._make_series(canonical)
        if folded:
            # Reported with our lock released: the self-metric it counts into
            # may itself be at its cap (no re-entry, no recursion).
            self.drops.overflowed(self.name, self.max_series)
        return child

    def _make_series(self, label_values: tuple[str, ...]) -> _S:
        return self._series_class(self, label_values, Attributes(zip(self.labelnames, label_values)))

    def _new_default(self) -> None:
        """Unlabelled metrics have their one series from the start (shown at 0 before any use),
        and so have the label sets the spec lists as ``initial``."""
        for name in ("inc", "dec", "set", "observe"):
            self.__dict__.pop(name, None)
        self._default: _S | None = self._make_series(()) if not self.labelnames else None
        for values in self.spec.initial:
            canonical = self._canonical(values)
            self._children[canonical] = self._make_series(canonical)

    def _unlabelled(self) -> _S:
        default = self._default
        if default is None:
            raise ValueError(
                f"{self.name}: this metric has labels ({', '.join(self.labelnames)}); call .labels(...) first"
            )
        if self._registry is not None:
            self._registry.first_use()
        return default

    def _bind(self, method: str):
        """The unlabelled series' method, bound on this object from now on (no lookup per call)."""
        bound = getattr(self._unlabelled(), method)
        setattr(self, method, bound)
        return bound

    def remove(self, *values: object) -> None:
        """Remove one series; it disappears from /metrics (and its memory is freed)."""
        canonical = self._canonical(values)
        with self._lock:
            removed = self._children.pop(canonical, None)
            if self._overflow is not None and self.kind is Kind.GAUGE and (
                    removed is None or len(self._children) - self._preset < self.max_series):
                # A folded gauge holds the last value of some folded label set:
                # removing a label set that was folded (not among the series), or
                # making room, may leave that value stale; no value beats a stale one.
                self._overflow = None

    def clear(self) -> None:
        """Remove every series (an unlabelled metric gets a fresh one)."""
        with self._lock:
            self._children = {}
            self._overflow = None
            self._new_default()

    def series(self) -> list[_S]:
        """A snapshot of the live series, the overflow series last."""
        with self._lock:
            children = list(self._children.values())
            default = self._default
            # An unlabelled gauge's series counts once it has a value (no value, no sample).
            if default is not None and (not isinstance(default, GaugeSeries) or default.get() is not None):
                children.insert(0, default)
            if self._overflow is not None:
                children.append(self._overflow)
        return children

    def after_fork_in_child(self) -> None:
        """Fresh locks and series guards (a parent thread may have held one at fork time)."""
        self._lock = threading.Lock()
        for child in self.series():
            child.after_fork_in_child()


class Counter(_Metric[CounterSeries]):
    """A monotonically increasing counter.

        >>> from tinywindow_otel import trades_total
        >>> trades_total.labels(status="filled", symbol="BTC/USDT").inc()
    """

    _series_class = CounterSeries
    kind = Kind.COUNTER

    def inc(self, amount: float = 1) -> None:
        self._bind("inc")(amount)

    def count_exceptions(self, exception: type[BaseException] | tuple = Exception):
        """Decorator / context manager counting calls that raise ``exception``.

            >>> @api_errors_total.labels(service="claude", type="any").count_exceptions()
            ... def ask(): ...
        """
        return _count_exceptions(self._unlabelled(), exception)

    def get(self) -> float:
        return self._unlabelled().get()


class Gauge(_Metric[GaugeSeries]):
    """A value that goes up and down; no sample until the first value is set.

        >>> from tinywindow_otel import portfolio_value_usd
        >>> portfolio_value_usd.set(50_000.0)
    """

    _series_class = GaugeSeries
    kind = Kind.GAUGE

    def set(self, value: float) -> None:
        self._bind("set")(value)

    def inc(self, amount: float = 1) -> None:
        self._bind("inc")(amount)

    def dec(self, amount: float = 1) -> None:
        self._bind("dec")(amount)

    def get(self) -> float | None:
        return self._unlabelled().get()


class Histogram(_Metric[HistogramSeries]):
    """A distribution with fixed bucket boundaries (the catalog's, or ``buckets=``).

        >>> from tinywindow_otel import api_latency_seconds
        >>> api_latency_seconds.labels(service="claude").observe(0.42)
    """

    _series_class = HistogramSeries
    kind = Kind.HISTOGRAM

    def __init__(self, name: str, documentation: str, labelnames: Iterable[str] = (), namespace: str = "",
                 subsystem: str = "", unit: str = "", registry: MetricRegistry | None | object = _DEFAULT, *,
                 buckets: Iterable[float] = DEFAULT_BUCKETS, max_series: int = DEFAULT_MAX_SERIES) -> None:
        super().__init__(name, documentation, labelnames, namespace, subsystem, unit, registry,
                         max_series=max_series, buckets=_check_buckets(name, buckets))

    def _make_series(self, label_values: tuple[str, ...]) -> HistogramSeries:
        spec = self.spec
        return HistogramSeries(self, label_values, Attributes(zip(self.labelnames, label_values)), spec.buckets,
                               spec.minimum, spec.maximum)

    def observe(self, value: float) -> None:
        self._bind("observe")(value)

    def time(self):
        """Decorator / context manager observing elapsed seconds.

            >>> @api_latency_seconds.labels(service="claude").time()
            ... async def ask(): ...
        """
        return _time_histogram(self._unlabelled())


def _check_buckets(name: str, buckets: Iterable[float]) -> tuple[float, ...]:
    try:
        bounds = [float(b) for b in buckets]
    except (TypeError, ValueError):
        raise ValueError(f"{name}: buckets must be numbers, got {buckets!r}") from None
    if bounds and bounds[-1] == float("inf"):
        bounds.pop()  # prometheus_client lists +Inf; here it is implicit
    if not bounds or any(b != b or abs(b) == float("inf") for b in bounds) or bounds != sorted(set(bounds)):
        raise ValueError(f"{name}: buckets must be finite, strictly increasing and non-empty, got {buckets!r}")
    return tuple(bounds)


_CLASSES: dict[Kind, type[_Metric[Any]]] = {Kind.COUNTER: Counter, Kind.GAUGE: Gauge, Kind.HISTOGRAM: Histogram}


class MetricRegistry:
    """Metrics by name: the catalog's (built from ``specs``) and any registered later.

    Each registry owns its drop reporter, counting into its own self-metrics.
    """

    def __init__(self, specs: tuple[MetricSpec, ...] = ALL_METRICS, drops: DropReporter | None = None) -> None:
        self.drops = drops if drops is not None else DropReporter()
        self.drops.bind(self)
        self._lock = threading.Lock()
        # Every registry, the process-wide one and any a caller made, becomes a child's at fork.
        reset_after_fork(self)
        self._metrics: dict[str, _Metric[Any]] = {}
        self._exposed: dict[str, str] = {}
        self._on_first_use: Callable[[], None] | None = None
        self._started = False
        # Recorders holding state derived from this registry's metrics (win rate tally, peaks, ...).
        self._recorders: weakref.WeakSet = weakref.WeakSet()
        for spec in specs:
            self.register(_CLASSES[spec.kind]._from_spec(spec, self))

    def __iter__(self) -> Iterator[_Metric[Any]]:
        return iter(list(self._metrics.values()))

    def register(self, metric: _Metric[Any]) -> None:
        """Add a metric; a name (or the name it is exposed under) already taken raises ValueError."""
        if not isinstance(metric, _Metric):
            raise TypeError(f"register() takes a Counter, Gauge or Histogram, got {type(metric).__name__}")
        exposed = metric._exposed_name
        with self._lock:
            taken = self._metrics.get(metric.name)
            if taken is metric:
                return
            other = taken or self._metrics.get(self._exposed.get(exposed, ""))
            if other is not None:
                raise ValueError(f"duplicate metric {metric.name!r}: {other.name!r} is already registered "
                                 f"(exposed as {other._exposed_name})")
            metric._registry = self
            metric.drops = self.drops
            metrics = dict(self._metrics)
            metrics[metric.name] = metric
            self._metrics = metrics  # copy-on-write: collections iterate without the lock
            self._exposed[exposed] = metric.name

    def unregister(self, metric: _Metric[Any]) -> None:
        with self._lock:
            if self._metrics.get(metric.name) is metric:
                metrics = dict(self._metrics)
                del metrics[metric.name]
                self._metrics = metrics
                self._exposed.pop(metric._exposed_name, None)

    def get(self, name: str) -> _Metric[Any]:
        return self._metrics[name]

    def find(self, name: str) -> _Metric[Any] | None:
        return self._metrics.get(name)

    def by_attr(self, attr: str) -> _Metric[Any]:
        return self._metrics["tinywindow_" + attr]

    # Typed lookups by Python name (a catalog entry's ``attr``), for code that needs the kind's methods.

    def counter(self, attr: str) -> Counter:
        return self._of_kind(attr, Counter)

    def gauge(self, attr: str) -> Gauge:
        return self._of_kind(attr, Gauge)

    def histogram(self, attr: str) -> Histogram:
        return self._of_kind(attr, Histogram)

    def _of_kind(self, attr: str, kind: type[_M]) -> _M:
        metric = self.by_attr(attr)
        if not isinstance(metric, kind):
            raise TypeError(f"{metric.name} is a {type(metric).__name__}, not a {kind.__name__}")
        return metric

    def set_limits(self, limits: Mapping[str, int]) -> None:
        """Set series caps for several metrics at once, by name or Python name: all or none.

            REGISTRY.set_limits({"trades_total": 4000, "tinywindow_active_positions": 200})
        """
        resolved = []
        for key, limit in dict(limits).items():
            metric = self._metrics.get(key) or self._metrics.get("tinywindow_" + str(key))
            if metric is None:
                raise ValueError(f"set_limits: unknown metric {key!r}")
            resolved.append((metric, _labels.check_max_series(metric.name, limit)))
        for metric, limit in resolved:  # every name and value checked before any cap changes
            metric.set_max_series(limit)

    def set_first_use_hook(self, hook: Callable[[], None] | None) -> None:
        """Called once, when the first series is used (starts the OTel pipeline lazily)."""
        self._on_first_use = hook
        self._started = False

    def first_use(self) -> None:
        if not self._started and self._on_first_use is not None:
            self._started = True
            self._on_first_use()

    def clear(self) -> None:
        """Remove every series of every metric (label sets included)."""
        for metric in self:
            metric.clear()

    def attach_recorder(self, recorder) -> None:
        """Have :meth:`reset_recorders` call ``recorder.reset()`` (kept by weak reference).

        For objects that derive state from this registry's metrics: the
        domain recorders of ``exporters``, ``calibration`` and ``exchange``.
        """
        self._recorders.add(recorder)

    def reset_recorders(self) -> None:
        """Reset the derived state of every attached recorder (``tinywindow_otel.testing.reset()`` calls it)."""
        for recorder in list(self._recorders):
            recorder.reset()

    def after_fork_in_child(self) -> None:
        """A fresh lock (a parent thread may have held it at fork time).

        Each metric resets its own lock and series (registered in ``_Metric._setup``).
        """
        self._lock = threading.Lock()
        self.drops.after_fork_in_child()


REGISTRY = MetricRegistry(drops=default_drops)
