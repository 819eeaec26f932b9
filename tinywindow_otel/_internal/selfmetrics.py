"""What the SDK drops, folds or rewrites instead of raising: counted and logged rarely.

Each registry owns one reporter, counting into that registry's
``tinywindow_otel_*`` self-metrics. A self-metric never reports about itself
(no recursion), and reporting never takes a lock the caller may hold: the
series it updates are looked up and incremented with the family lock
released (see ``MetricRegistry``).
"""

from __future__ import annotations

import logging
import threading
import time

_log = logging.getLogger("tinywindow_otel")

OVERFLOW_LABEL_VALUE = "__overflow__"
DROPPED = "tinywindow_otel_dropped_measurements_total"
SANITIZED = "tinywindow_otel_label_values_sanitized_total"
OVERFLOWED = "tinywindow_otel_cardinality_overflow_total"
SELF_PREFIX = "tinywindow_otel_"
# One log line per (metric, reason) at most this often: telemetry must not
# flood the trading system's logs when a feed goes bad.
LOG_INTERVAL_S = 60.0


class DropReporter:
    """Counts measurements the SDK dropped or folded, logging each kind rarely."""

    def __init__(self) -> None:
        self._last_logged: dict[tuple[str, str], float] = {}
        self._registry = None
        self._local = threading.local()

    def bind(self, registry) -> None:
        """Count into ``registry``'s self-metrics (a reporter without one only logs)."""
        self._registry = registry

    def forget_logged(self) -> None:
        """Log the next occurrence of every kind again (tests; a new process)."""
        self._last_logged = {}

    def _count(self, name: str, *labels: str) -> None:
        registry = self._registry
        if registry is None or getattr(self._local, "busy", False):
            return  # a report while reporting (a self-metric at its cap): log only
        self._local.busy = True
        try:
            family = registry.find(name)
            if family is not None:
                family.labels(*labels).inc()
        except Exception:  # noqa: BLE001 - reporting must never fail the caller
            pass
        finally:
            self._local.busy = False

    def dropped(self, metric: str, reason: str, value: object = None) -> None:
        self._count(DROPPED, metric, reason)
        self._log_rarely(metric, reason, "dropped a measurement of %s (%s): %.80r", metric, reason, value)

    def sanitized(self, metric: str, label: str, reason: str) -> None:
        self._count(SANITIZED, metric, reason)
        self._log_rarely(metric, "label_" + reason, "%s: label %r had a value that is %s; it was rewritten",
                         metric, label, reason.replace("_", " "))

    def overflowed(self, metric: str, limit: int) -> None:
        if not metric.startswith(SELF_PREFIX):
            self._count(OVERFLOWED, metric)
        self._log_rarely(
            metric, "overflow",
            "%s reached its limit of %d series; new label sets fold into the %s series",
            metric, limit, OVERFLOW_LABEL_VALUE,
        )

    def _log_rarely(self, metric: str, reason: str, msg: str, *args: object) -> None:
        now = time.monotonic()
        key = (metric, reason)
        last = self._last_logged.get(key)
        if last is None or now - last >= LOG_INTERVAL_S:
            self._last_logged[key] = now
            _log.warning(msg, *args)

    def after_fork_in_child(self) -> None:
        self._local = threading.local()


# The reporter of the process-wide registry (``tinywindow_otel.metrics.REGISTRY``
# binds it); modules recording into that registry report through it.
default_drops = DropReporter()
