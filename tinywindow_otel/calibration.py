"""Is the agent's confidence worth anything? Decisions linked to trade outcomes.

    >>> from tinywindow_otel.exporters import agent_exporter
    >>> decision_id = agent_exporter.record_decision("analyst", "buy", 0.8)
    >>> ...                                           # the trade closes, later
    >>> agent_exporter.record_outcome(decision_id, pnl=125.0)

From each linked pair:

- ``tinywindow_agent_outcomes_total{agent,confidence_bucket,outcome}``:
  ``confidence_bucket`` is the decile (``"0.8-0.9"``; 1.0 falls in
  ``"0.9-1.0"``), ``outcome`` is ``win`` (pnl > 0) or ``loss`` (pnl < 0).
  ``win / (win + loss)`` per bucket is the reliability diagram: a calibrated
  agent's 0.8-0.9 decisions win 80-90 % of the time. Breakeven outcomes
  (pnl == 0) are neither and are not counted.
- ``tinywindow_agent_brier_score{agent}``: mean of (confidence - won)^2 over
  the agent's last ``window`` linked decisions. 0 is perfect; always saying
  0.5 scores 0.25; above 0.25 the confidence is worse than a coin flip.

Decisions waiting for an outcome are kept at most ``ttl_seconds`` and at
most ``max_pending`` of them (oldest first out); each one forgotten counts
in ``tinywindow_agent_decisions_expired_total{agent}``, so memory stays
bounded however many decisions never lead to a trade.
"""

from __future__ import annotations

import math
import os
import threading
import weakref
from collections import OrderedDict, deque
from collections.abc import Hashable
from itertools import count
from time import monotonic

from ._internal.selfmetrics import default_drops as _drops
from ._internal.series import check_number as _check_number
from .metrics import REGISTRY, MetricRegistry

__all__ = ["CONFIDENCE_BUCKETS", "CalibrationTracker", "confidence_bucket"]

OUTCOMES = "tinywindow_agent_outcomes_total"
BRIER = "tinywindow_agent_brier_score"
EXPIRED = "tinywindow_agent_decisions_expired_total"

CONFIDENCE_BUCKETS = tuple(f"{i / 10:.1f}-{(i + 1) / 10:.1f}" for i in range(10))
DEFAULT_WINDOW = 500
DEFAULT_TTL_SECONDS = 7 * 24 * 3600.0  # swing trades close within days; older decisions are noise
DEFAULT_MAX_PENDING = 50_000  # ~100 bytes each: a few MB at most


# Every tracker alive: a forked child gets fresh locks and no pending decisions
# (a parent thread may hold a lock at fork time; the parent's ids are not the child's).
_TRACKERS: weakref.WeakSet = weakref.WeakSet()


def _after_fork_in_child() -> None:
    for tracker in list(_TRACKERS):
        tracker._lock = threading.Lock()
        tracker._pending = OrderedDict()
        tracker._errors = {}


if hasattr(os, "register_at_fork"):
    os.register_at_fork(after_in_child=_after_fork_in_child)


def confidence_bucket(confidence: float) -> str:
    """The decile label of a confidence in [0, 1]: 0.83 -> ``"0.8-0.9"``, 1.0 -> ``"0.9-1.0"``."""
    return CONFIDENCE_BUCKETS[min(9, int(confidence * 10))]


class CalibrationTracker:
    """Pending decisions by id, and per agent the window of squared errors behind the Brier score."""

    def __init__(self, registry: MetricRegistry = REGISTRY, *, window: int = DEFAULT_WINDOW,
                 ttl_seconds: float = DEFAULT_TTL_SECONDS, max_pending: int = DEFAULT_MAX_PENDING) -> None:
        for name, value in (("window", window), ("max_pending", max_pending)):
            if isinstance(value, bool) or not isinstance(value, int) or value < 1:
                raise ValueError(f"{BRIER}: {name} must be a positive int, got {value!r}")
        ttl = _check_number(EXPIRED, ttl_seconds, "ttl_seconds")
        if not (0 < ttl < math.inf):
            raise ValueError(f"{EXPIRED}: ttl_seconds must be a finite number > 0, got {ttl_seconds!r}")
        self._outcomes = registry.get(OUTCOMES)
        self._brier = registry.get(BRIER)
        self._expired = registry.get(EXPIRED)
        self.window = window
        self.ttl_seconds = ttl
        self.max_pending = max_pending
        self._ids = count(1)
        self._lock = threading.Lock()
        self._pending: OrderedDict[Hashable, tuple[str, float, float]] = OrderedDict()
        self._errors: dict[str, deque[float]] = {}
        _TRACKERS.add(self)

    def __len__(self) -> int:
        """Decisions waiting for an outcome."""
        return len(self._pending)

    def register(self, agent: str, confidence: float, now: float | None = None) -> int | None:
        """Remember a decision; returns its id (None when the confidence is not a finite value in [0, 1])."""
        if not (0.0 <= confidence <= 1.0):  # NaN fails too; the confidence histogram counted it
            return None
        decision_id = next(self._ids)
        now = monotonic() if now is None else now
        with self._lock:
            self._pending[decision_id] = (agent, float(confidence), now)
            self._expire_locked(now)
        return decision_id

    def record_outcome(self, decision_id: Hashable, pnl: float, now: float | None = None) -> bool:
        """Link a trade's realised ``pnl`` to the decision; True if it was counted.

        A NaN/inf ``pnl`` is dropped and counted, and the decision stays
        pending (a corrected outcome may follow). An unknown or expired id is
        counted as dropped (reason ``unknown_decision``), not raised: outcomes
        arrive long after decisions, across restarts.
        """
        value = _check_number(OUTCOMES, pnl, "pnl")
        if math.isnan(value) or math.isinf(value):
            _drops.dropped(OUTCOMES, "nan" if math.isnan(value) else "inf", pnl)
            return False
        try:
            hash(decision_id)
        except TypeError:
            raise TypeError(f"{OUTCOMES}: decision_id must be the id record_decision returned, "
                            f"got {type(decision_id).__name__}") from None
        now = monotonic() if now is None else now
        with self._lock:
            self._expire_locked(now)
            decision = self._pending.pop(decision_id, None)
        if decision is None:
            _drops.dropped(OUTCOMES, "unknown_decision", decision_id)
            return False
        if value == 0:
            return False  # breakeven: neither a win nor a loss
        agent, confidence, _ = decision
        won = value > 0
        self._outcomes.labels(agent, confidence_bucket(confidence), "win" if won else "loss").inc()
        error = (confidence - (1.0 if won else 0.0)) ** 2
        with self._lock:
            errors = self._errors.get(agent)
            if errors is None:
                errors = self._errors[agent] = deque(maxlen=self.window)
            errors.append(error)
            score = math.fsum(errors) / len(errors)  # no running sum: no drift over millions of outcomes
        self._brier.labels(agent).set(score)
        return True

    def expire(self, now: float | None = None) -> None:
        """Forget decisions older than the time to live (also done on every register/outcome)."""
        with self._lock:
            self._expire_locked(monotonic() if now is None else now)

    def _expire_locked(self, now: float) -> None:
        pending = self._pending
        deadline = now - self.ttl_seconds
        while pending:
            oldest_id = next(iter(pending))
            agent, _, created = pending[oldest_id]
            if created >= deadline and len(pending) <= self.max_pending:
                return
            del pending[oldest_id]
            self._expired.labels(agent).inc()

    def after_fork_in_child(self) -> None:
        """In a forked child: a new lock (a parent thread may have held it) and none of the parent's decisions."""
        self._lock = threading.Lock()
        self._pending = OrderedDict()
        self._errors = {}

    def reset(self) -> None:
        """Forget pending decisions and Brier windows (the counters stay)."""
        with self._lock:
            self._pending.clear()
            self._errors.clear()
