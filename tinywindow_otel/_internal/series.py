"""One labelled series per kind: the values, their guard, and the number checks.

Values live here as plain Python numbers, one guard per series, as in
prometheus_client; the producer reads them at collection time.

The guard is a one-token list, not a ``threading.Lock``: ``tokens.pop()``
takes the token (``IndexError`` while another thread holds it),
``tokens.append(token)`` gives it back; both are atomic on every CPython,
free-threaded builds included. Why not a lock (docs/decisions.md): CPython
may switch threads right after any C call returns, ``lock.acquire()``
included, so the lock is sometimes held by a thread that is not running;
another thread recording on the series then blocks on it, and from then on
every release wakes a waiter through the OS (a lock convoy): 2-7x slower than
prometheus_client with 2-8 threads on one series, and a loop doing 8 us of
work between recordings ran 2.5x slower. ``with lock`` avoids the switch but
costs more than the whole ``inc()``. A thread that finds the token taken
never blocks: it yields (``sleep(0)``) until the holder, which needs only to
run again, gives it back. Critical sections cannot raise (a lost token would
stall the series).

A series knows its family (``_family``: name and drop reporter), its label
values and the dict of attributes the producer hands to OTel (one object per
series, so the text renderer can cache the series' line under it).
"""

from __future__ import annotations

import math
import sys
import time
from bisect import bisect_left
from numbers import Real
from time import sleep

from .wrapper import count_exceptions, time_histogram

INF = math.inf
# Comparing against the largest float (not infinity) also rejects ints too
# large to convert to float, at the same cost on the hot path.
MAX = sys.float_info.max


def check_number(metric: str, value: object, what: str = "value") -> float:
    """Return ``value`` as a float, raising TypeError for anything non-numeric.

    Numbers beyond float range (huge ints, Fractions) become +-inf, which the
    callers drop and count like any other infinity: that is data, not a bug.
    """
    if value.__class__ is float:  # the common case, without the ABC isinstance checks
        return value
    if isinstance(value, bool) or not isinstance(value, Real):
        raise TypeError(f"{metric}: {what} must be a real number, got {type(value).__name__} {value!r}")
    try:
        return float(value)
    except OverflowError:
        return INF if value > 0 else -INF  # type: ignore[operator]  # the numbers.Real stub has no __gt__


def drop_reason(value: float) -> str:
    return "nan" if math.isnan(value) else "inf"


class Attributes(dict):
    """A series' label names -> values, as OTel attributes; carries the renderer's cached line."""

    __slots__ = ("line",)


def take_token(tokens: list[bool]) -> bool:
    """The slow path of taking a series' token: another thread holds it; yield until it is back."""
    while True:
        try:
            return tokens.pop()
        except IndexError:
            sleep(0)  # lets the holder run; it gives the token back within its next few instructions


class Series:
    __slots__ = ("_tokens", "_family", "label_values", "attributes", "created_ns")

    def __init__(self, family, label_values: tuple[str, ...], attributes: Attributes) -> None:
        self._tokens: list[bool] = [True]  # the guard: a one-token list (see the module docstring)
        self._family = family
        self.label_values = label_values
        self.attributes = attributes
        self.created_ns = time.time_ns()

    @property
    def metric(self) -> str:
        """The metric (family) name, for error messages and drop reports."""
        return self._family.name

    @property
    def drops(self):
        """The drop reporter of the registry this series belongs to."""
        return self._family.drops

    def _dropped(self, reason: str, value: object) -> None:
        self._family.drops.dropped(self._family.name, reason, value)

    def _number(self, value: object, what: str = "value") -> float | None:
        """``value`` as a finite float, or None after counting it as dropped (NaN/inf)."""
        number = check_number(self._family.name, value, what)
        if math.isnan(number) or math.isinf(number):
            self._dropped(drop_reason(number), value)
            return None
        return number

    def after_fork_in_child(self) -> None:
        self._tokens = [True]  # a parent thread may have held the token at fork time
        self._reset()

    def _reset(self) -> None:  # pragma: no cover - overridden
        raise NotImplementedError


class CounterSeries(Series):
    """One labelled counter series; what ``Counter.labels(...)`` returns."""

    __slots__ = ("_value",)

    def __init__(self, *args) -> None:
        super().__init__(*args)
        self._value = 0.0

    def inc(self, amount: float = 1) -> None:
        """Increment by ``amount`` (>= 0). NaN/inf are dropped and counted."""
        cls = amount.__class__
        # Fast paths: an int up to 2**53 (compared with an int constant: cheaper than
        # with a float), or a finite float >= 0 (NaN fails ``>= 0``). Larger ints take
        # the slow path, which converts them.
        if (cls is int and 0 <= amount <= 9_007_199_254_740_992) or (cls is float and 0 <= amount <= MAX):
            tokens = self._tokens
            try:
                token = tokens.pop()
            except IndexError:
                token = take_token(tokens)
            total = self._value + amount
            if total != INF:
                self._value = total
                tokens.append(token)
                return
            tokens.append(token)
            # A total beyond float range would pin the counter at +Inf for good.
            self._dropped("overflow", amount)
            return
        value = self._number(amount, "increment")
        if value is None:
            return
        if value < 0:
            raise ValueError(f"{self._family.name}: counters can only be incremented by non-negative amounts, "
                             f"got {amount!r}")
        self.inc(value)

    def get(self) -> float:
        return self._value

    @staticmethod
    def points(series: list[CounterSeries], point, now_ns: int) -> list:
        """``point(attributes, created_ns, now_ns, value)`` for each series: the producer's bulk read.

        One comprehension over the stored values (a scrape of 10k counters
        spends most of its time here; a ``get()`` call per series would add to it).
        """
        return [point(s.attributes, s.created_ns, now_ns, s._value) for s in series]

    def count_exceptions(self, exception: type[BaseException] | tuple = Exception):
        """Decorator / context manager: +1 per call raising ``exception`` (sync, async, generators)."""
        return count_exceptions(self, exception)

    def _reset(self) -> None:
        self._value = 0.0
        self.created_ns = time.time_ns()


class GaugeSeries(Series):
    """One labelled gauge series; what ``Gauge.labels(...)`` returns.

    A gauge has no value until one is set (``get()`` is None then) and no
    sample is published for it: a first value of NaN/inf is dropped, not
    replaced by an invented 0.
    """

    __slots__ = ("_value",)

    def __init__(self, *args) -> None:
        super().__init__(*args)
        self._value: float | None = None

    def _finite(self, value: object) -> float | None:
        """``value`` as a finite float, or None after counting it as dropped (for subclasses)."""
        return self._number(value)

    def set(self, value: float) -> None:
        """Set to ``value``. NaN/inf are dropped (the previous value stays) and counted."""
        cls = value.__class__
        if not ((cls is float or cls is int) and -MAX <= value <= MAX):
            value = self._number(value)  # type: ignore[assignment]  # None: dropped, next line
            if value is None:
                return
        value = float(value)  # before taking the token: no call while holding it
        tokens = self._tokens
        try:
            token = tokens.pop()
        except IndexError:
            token = take_token(tokens)
        self._value = value
        tokens.append(token)

    def _add(self, amount: object, sign: float) -> None:
        number = self._number(amount)
        if number is None:
            return
        tokens = self._tokens
        try:
            token = tokens.pop()
        except IndexError:
            token = take_token(tokens)
        total = (self._value or 0.0) + sign * number
        if -INF < total < INF:
            self._value = total
            tokens.append(token)
            return
        tokens.append(token)
        self._dropped("overflow", amount)

    def inc(self, amount: float = 1) -> None:
        self._add(amount, 1.0)

    def dec(self, amount: float = 1) -> None:
        self._add(amount, -1.0)

    def get(self) -> float | None:
        return self._value

    def _reset(self) -> None:
        self._value = None
        self.created_ns = time.time_ns()


class HistogramSeries(Series):
    """One labelled histogram series; what ``Histogram.labels(...)`` returns.

    Buckets are OTel explicit buckets: bucket ``i`` counts values in
    ``(bounds[i-1], bounds[i]]``, the last one values above every bound,
    which is Prometheus' ``le`` semantics too. Negative values are kept.
    """

    __slots__ = ("_bounds", "_counts", "_sum", "_min", "_max", "_low", "_high")

    def __init__(self, family, label_values, attributes, bounds: tuple[float, ...],
                 minimum: float | None = None, maximum: float | None = None) -> None:
        super().__init__(family, label_values, attributes)
        self._bounds = bounds
        self._counts = [0] * (len(bounds) + 1)
        self._sum = 0.0
        self._min = INF
        self._max = -INF
        # The range a finite observation must be in (a latency or an amount is never negative).
        self._low = -MAX if minimum is None else minimum
        self._high = MAX if maximum is None else maximum

    def observe(self, value: float) -> None:
        """Record one observation. NaN/inf are dropped and counted; a value outside the metric's range raises."""
        cls = value.__class__
        # One chained comparison checks the type's range, the metric's range and NaN (which fails it).
        if not ((cls is float or cls is int) and self._low <= value <= self._high):
            number = self._number(value)
            if number is None:
                return
            if not self._low <= number <= self._high:
                raise ValueError(f"{self._family.name}: {self._range()}, got {value!r:.80}")
            value = number
        index = bisect_left(self._bounds, value)
        tokens = self._tokens
        try:
            token = tokens.pop()
        except IndexError:
            token = take_token(tokens)
        total = self._sum + value
        if -INF < total < INF:
            self._counts[index] += 1
            self._sum = total
            if value < self._min:
                self._min = value
            if value > self._max:
                self._max = value
            tokens.append(token)
            return
        tokens.append(token)
        # A sum beyond float range would make the sum (and any mean) +-Inf for good.
        self._dropped("overflow", value)

    def _range(self) -> str:
        low = None if self._low == -MAX else f"{self._low:g}"
        high = None if self._high == MAX else f"{self._high:g}"
        if high is None:
            return f"observations must be >= {low}"
        if low is None:
            return f"observations must be <= {high}"
        return f"observations must be in [{low}, {high}]"

    def time(self):
        """Decorator / context manager observing elapsed seconds (sync, async, generators)."""
        return time_histogram(self)

    def snapshot(self) -> tuple[list[int], float, float, float]:
        """(bucket counts, sum, min, max), consistent with each other."""
        tokens = self._tokens
        try:
            token = tokens.pop()
        except IndexError:
            token = take_token(tokens)
        counts, total, low, high = self._counts, self._sum, self._min, self._max
        self._counts = counts[:]  # later observations go to a copy (a slice: no call while holding the token)
        tokens.append(token)
        return counts, total, low, high

    def _reset(self) -> None:
        self._counts = [0] * (len(self._bounds) + 1)
        self._sum = 0.0
        self._min = INF
        self._max = -INF
        self.created_ns = time.time_ns()
