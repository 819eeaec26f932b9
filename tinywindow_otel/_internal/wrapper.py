"""The one call wrapper behind ``.time()``, ``.count_exceptions()`` and the decorators.

:class:`CallWrapper` wraps one :class:`Probe` (what a call records) so the
hard cases are solved once (prometheus_client gets ``async def`` wrong,
#535/#767):

- ``def``: measured around the call; the return value is passed through.
- ``async def``: the wrapper is itself ``async def`` (``inspect.iscoroutinefunction``
  stays true) and measures the *awaited* time, not coroutine creation.
- generators / async generators: the wrapper is a (async) generator, so the
  call stays lazy; measurement starts at the first ``next()`` and ends when
  the generator is exhausted, raises, or is closed. ``send``/``throw``/``close``
  (``asend``/``athrow``/``aclose``) are forwarded.
- exceptions are re-raised unchanged (same object, same traceback).
  ``GeneratorExit`` is how a generator is closed, never an error.
- a fault inside the telemetry (a probe raising) never reaches the caller:
  it is counted in ``tinywindow_otel_dropped_measurements_total{reason="instrumentation_error"}``
  and logged rarely.
"""

from __future__ import annotations

import functools
import inspect
from collections.abc import Callable
from time import perf_counter
from typing import Any, Literal

from .selfmetrics import DropReporter, default_drops

__all__ = ["FAILED", "CallWrapper", "Probe", "count_exceptions", "is_error", "time_histogram"]

# Returned by a probe's start() that failed: finish() is then skipped.
FAILED = object()


class Probe:
    """What one instrumented call records. ``start`` -> state; ``finish`` records.

    ``item`` is called with every value a generator yields (only when
    ``wants_items``); ``finish`` gets the exception that ended the call (or
    None) and the return value (for generators: the ``return`` value).
    """

    metric = "tinywindow_otel"  # named in fault reports
    drops: DropReporter = default_drops  # where faults are counted: the registry the probe records into
    wants_items = False
    exposes_state = False  # whether ``with`` binds the state (``as t``)

    def start(self, args: tuple | None, kwargs: dict | None) -> Any:
        """``args``/``kwargs`` of the decorated call; None in the ``with`` form."""
        return perf_counter()

    def item(self, state: Any, value: Any) -> None:  # pragma: no cover - overridden
        pass

    def finish(self, state: Any, exc: BaseException | None, result: Any) -> None:  # pragma: no cover
        raise NotImplementedError


def _fault(probe: Probe, exc: BaseException) -> None:
    """A telemetry fault: counted and logged rarely, never raised to the caller."""
    try:
        probe.drops.dropped(probe.metric, "instrumentation_error", exc)
    except Exception:  # noqa: BLE001 - the last line of defence must not raise
        pass


def _start(probe: Probe, args: tuple | None = None, kwargs: dict | None = None) -> Any:
    try:
        return probe.start(args, kwargs)
    except Exception as exc:  # noqa: BLE001
        _fault(probe, exc)
        return FAILED


def _finish(probe: Probe, state: Any, exc: BaseException | None, result: Any) -> None:
    if state is FAILED:
        return
    try:
        probe.finish(state, exc, result)
    except Exception as fault:  # noqa: BLE001
        _fault(probe, fault)


def _item(probe: Probe, state: Any, value: Any) -> None:
    if state is FAILED:
        return
    try:
        probe.item(state, value)
    except Exception as fault:  # noqa: BLE001
        _fault(probe, fault)


class CallWrapper:
    """Decorator and (async) context manager around one :class:`Probe`."""

    __slots__ = ("_probe", "_states")

    def __init__(self, probe: Probe) -> None:
        self._probe = probe
        self._states: list[Any] = []

    def __repr__(self) -> str:
        return f"<CallWrapper {type(self._probe).__name__} {self._probe.metric}>"

    @property
    def probe(self) -> Probe:
        """What each call records (for wrappers built on this one)."""
        return self._probe

    # -- context manager ------------------------------------------------------

    def __enter__(self) -> Any:
        state = _start(self._probe)
        self._states.append(state)
        return state if self._probe.exposes_state and state is not FAILED else None

    def __exit__(self, exc_type, exc, tb) -> Literal[False]:
        state = self._states.pop() if self._states else FAILED
        _finish(self._probe, state, exc, None)
        return False  # never swallow the caller's exception

    async def __aenter__(self) -> Any:
        return self.__enter__()

    async def __aexit__(self, exc_type, exc, tb) -> bool:
        return self.__exit__(exc_type, exc, tb)

    # -- decorator --------------------------------------------------------------

    def __call__(self, func: Callable) -> Callable:
        if not callable(func):
            raise TypeError(f"{self._probe.metric}: can only decorate a callable, got {type(func).__name__}")
        probe = self._probe
        if inspect.isasyncgenfunction(func):
            wrapper = _wrap_async_generator(func, probe)
        elif inspect.iscoroutinefunction(func):
            wrapper = _wrap_coroutine(func, probe)
        elif inspect.isgeneratorfunction(func):
            wrapper = _wrap_generator(func, probe)
        else:
            wrapper = _wrap_function(func, probe)
        return functools.wraps(func)(wrapper)


def _wrap_function(func: Callable, probe: Probe) -> Callable:
    start, finish = probe.start, probe.finish

    def wrapper(*args, **kwargs):
        # _start/_finish inlined on the success path: this wraps hot calls.
        try:
            state = start(args, kwargs)
        except Exception as fault:  # noqa: BLE001
            _fault(probe, fault)
            state = FAILED
        try:
            result = func(*args, **kwargs)
        except BaseException as exc:
            _finish(probe, state, exc, None)
            raise
        if state is not FAILED:
            try:
                finish(state, None, result)
            except Exception as fault:  # noqa: BLE001
                _fault(probe, fault)
        return result

    return wrapper


def _wrap_coroutine(func: Callable, probe: Probe) -> Callable:
    async def wrapper(*args, **kwargs):
        state = _start(probe, args, kwargs)
        try:
            result = await func(*args, **kwargs)
        except BaseException as exc:
            _finish(probe, state, exc, None)
            raise
        _finish(probe, state, None, result)
        return result

    return wrapper


def _wrap_generator(func: Callable, probe: Probe) -> Callable:
    # The PEP 380 expansion of ``yield from``, with a hook on every item.
    def wrapper(*args, **kwargs):
        state = _start(probe, args, kwargs)
        wants_items = probe.wants_items
        try:
            inner = func(*args, **kwargs)
            try:
                value = next(inner)
                while True:
                    if wants_items:
                        _item(probe, state, value)
                    try:
                        sent = yield value
                    except GeneratorExit:
                        inner.close()
                        raise
                    except BaseException as thrown:
                        value = inner.throw(thrown)
                    else:
                        value = next(inner) if sent is None else inner.send(sent)
            except StopIteration as stop:
                result = stop.value
        except BaseException as exc:
            _finish(probe, state, exc, None)
            raise
        _finish(probe, state, None, result)
        return result

    return wrapper


def _wrap_async_generator(func: Callable, probe: Probe) -> Callable:
    async def wrapper(*args, **kwargs):
        state = _start(probe, args, kwargs)
        wants_items = probe.wants_items
        try:
            inner = func(*args, **kwargs)
            try:
                value = await inner.__anext__()
                while True:
                    if wants_items:
                        _item(probe, state, value)
                    try:
                        sent = yield value
                    except GeneratorExit:
                        await inner.aclose()
                        raise
                    except BaseException as thrown:
                        value = await inner.athrow(thrown)
                    else:
                        value = await (inner.__anext__() if sent is None else inner.asend(sent))
            except StopAsyncIteration:
                pass
        except BaseException as exc:
            _finish(probe, state, exc, None)
            raise
        _finish(probe, state, None, None)

    return wrapper


def is_error(exc: BaseException | None, kinds: type | tuple = Exception) -> bool:
    # GeneratorExit is the close protocol; KeyboardInterrupt, SystemExit and
    # asyncio.CancelledError are BaseExceptions, so Exception excludes them too.
    return exc is not None and not isinstance(exc, GeneratorExit) and isinstance(exc, kinds)


# --- facade idioms: Histogram.time(), Counter.count_exceptions() ------------------


class _TimeProbe(Probe):
    def __init__(self, series) -> None:
        self.metric = series.metric
        self.drops = series.drops
        self._observe = series.observe

    def finish(self, state, exc, result) -> None:
        self._observe(perf_counter() - state)


class _ExceptionProbe(Probe):
    def __init__(self, series, exception) -> None:
        self.metric = series.metric
        self.drops = series.drops
        self._inc = series.inc
        self._exception = exception

    def start(self, args, kwargs) -> None:
        return None

    def finish(self, state, exc, result) -> None:
        if is_error(exc, self._exception):
            self._inc()


def time_histogram(series) -> CallWrapper:
    """What ``Histogram.time()`` / ``HistogramSeries.time()`` return: observe elapsed seconds."""
    return CallWrapper(_TimeProbe(series))


def count_exceptions(series, exception: type[BaseException] | tuple = Exception) -> CallWrapper:
    """What ``Counter.count_exceptions()`` returns: +1 per call that raises ``exception``.

    The exception still propagates. ``GeneratorExit`` (closing a generator) never counts.
    """
    kinds = exception if isinstance(exception, tuple) else (exception,)
    if not kinds or not all(isinstance(k, type) and issubclass(k, BaseException) for k in kinds):
        raise TypeError(f"{series.metric}: count_exceptions() takes an exception class or a tuple of them, "
                        f"got {exception!r}")
    return CallWrapper(_ExceptionProbe(series, kinds))

