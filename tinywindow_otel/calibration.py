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

The decision id *is* the decision (:class:`DecisionId`: agent, confidence,
time, serial), so nothing is stored for a decision that is never linked:
unlinked decisions cost no memory at all, however many there are. An outcome
arriving more than ``ttl_seconds`` after its decision is not linked and
counts in ``tinywindow_agent_decisions_expired_total{agent}``. To catch an
outcome recorded twice, the last ``max_linked`` linked ids are remembered
(bounded: only decisions that became trades are).
"""

from __future__ import annotations

import math
import threading
import time
from collections import OrderedDict, deque
from collections.abc import Sequence
from itertools import count
from typing import Any, NamedTuple

from ._internal.forksafe import reset_after_fork
from ._internal.series import check_number as _check_number
from .catalog import CONFIDENCE_DECILES as CONFIDENCE_BUCKETS
from .metrics import REGISTRY, MetricRegistry

__all__ = ["CONFIDENCE_BUCKETS", "CalibrationTracker", "DecisionId", "confidence_bucket"]

OUTCOMES = "tinywindow_agent_outcomes_total"
BRIER = "tinywindow_agent_brier_score"
EXPIRED = "tinywindow_agent_decisions_expired_total"

# CONFIDENCE_BUCKETS: the catalog's closed set for the confidence_bucket label ("0.0-0.1" .. "0.9-1.0").
DEFAULT_WINDOW = 500
DEFAULT_TTL_SECONDS = 7 * 24 * 3600.0  # swing trades close within days; older decisions are noise
DEFAULT_MAX_LINKED = 10_000


class DecisionId(NamedTuple):
    """What ``record_decision`` returns: everything ``record_outcome`` needs, so nothing is kept meanwhile.

    A plain tuple: store it with the order, or as JSON (``list(decision_id)``)
    and rebuild it with ``DecisionId(*values)`` after a restart.
    """

    agent: str
    confidence: float
    decided_at: float  # Unix time
    serial: int


_new_id = tuple.__new__

def confidence_bucket(confidence: float) -> str:
    """The decile label of a confidence in [0, 1]: 0.83 -> ``"0.8-0.9"``, 1.0 -> ``"0.9-1.0"``."""
    return CONFIDENCE_BUCKETS[min(9, int(confidence * 10))]


class CalibrationTracker:
    """Links outcomes to decisions; per agent the window of squared errors behind the Brier score."""

    def __init__(self, registry: MetricRegistry = REGISTRY, *, window: int = DEFAULT_WINDOW,
                 ttl_seconds: float = DEFAULT_TTL_SECONDS, max_linked: int = DEFAULT_MAX_LINKED) -> None:
        for name, value in (("window", window), ("max_linked", max_linked)):
            if isinstance(value, bool) or not isinstance(value, int) or value < 1:
                raise ValueError(f"{BRIER}: {name} must be a positive int, got {value!r}")
        ttl = _check_number(EXPIRED, ttl_seconds, "ttl_seconds")
        if not (0 < ttl < math.inf):
            raise ValueError(f"{EXPIRED}: ttl_seconds must be a finite number > 0, got {ttl_seconds!r}")
        self.drops = registry.drops
        self._outcomes = registry.get(OUTCOMES)
        self._brier = registry.get(BRIER)
        self._expired = registry.get(EXPIRED)
        self.window = window
        self.ttl_seconds = ttl
        self.max_linked = max_linked
        self._serials = count(1)
        self._lock = threading.Lock()
        self._linked: OrderedDict[tuple[str, float, int], None] = OrderedDict()
        self._errors: dict[str, deque[float]] = {}
        reset_after_fork(self)
        registry.attach_recorder(self)

    def __len__(self) -> int:
        """Linked ids remembered to catch duplicates (never more than ``max_linked``)."""
        return len(self._linked)

    def register(self, agent: str, confidence: float, now: float | None = None) -> DecisionId | None:
        """The id of a decision made now (None when the confidence is not a finite value in [0, 1]).

        Nothing is stored: the id carries the decision.
        """
        if not (0.0 <= confidence <= 1.0):  # NaN fails too; the confidence histogram counted it
            return None
        # tuple.__new__ skips the NamedTuple's Python-level __new__: this runs on every decision.
        return _new_id(DecisionId, (agent, float(confidence), time.time() if now is None else now, next(self._serials)))

    def record_outcome(self, decision_id: DecisionId | Sequence, pnl: float, now: float | None = None) -> bool:
        """Link a trade's realised ``pnl`` to the decision; True if it was counted.

        Not counted (and not raised: outcomes arrive long after decisions):
        a NaN/inf ``pnl`` (dropped and counted; the decision can still be
        linked later), an outcome past the time to live (counted as expired),
        a second outcome for the same decision (dropped, ``duplicate_outcome``)
        and breakeven (pnl == 0). An id that is not a decision id raises
        ``TypeError`` naming the metric.
        """
        value = _check_number(OUTCOMES, pnl, "pnl")
        decision = self._decision(decision_id)
        if math.isnan(value) or math.isinf(value):
            self.drops.dropped(OUTCOMES, "nan" if math.isnan(value) else "inf", pnl)
            return False
        agent, confidence, decided_at, serial = decision
        now = time.time() if now is None else now
        if now - decided_at > self.ttl_seconds:
            self._expired.labels(agent).inc()
            return False
        key = (agent, decided_at, serial)
        with self._lock:
            if key in self._linked:
                duplicate = True
            else:
                duplicate = False
                self._linked[key] = None
                if len(self._linked) > self.max_linked:
                    self._linked.popitem(last=False)
        if duplicate:
            self.drops.dropped(OUTCOMES, "duplicate_outcome", decision_id)
            return False
        if value == 0:
            return False  # breakeven: neither a win nor a loss
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

    @staticmethod
    def _decision(decision_id: object) -> DecisionId:
        if isinstance(decision_id, DecisionId):
            return decision_id
        values: Any = decision_id
        try:  # rebuilt from storage: [agent, confidence, decided_at, serial]
            agent, confidence, decided_at, serial = values
        except (TypeError, ValueError):
            raise TypeError(f"{OUTCOMES}: decision_id must be the DecisionId record_decision returned, "
                            f"got {type(decision_id).__name__} {decision_id!r:.80}") from None
        numbers_ok = all(isinstance(v, (int, float)) and not isinstance(v, bool) for v in (confidence, decided_at))
        if not isinstance(agent, str) or not numbers_ok or not isinstance(serial, int) \
                or not 0.0 <= confidence <= 1.0:
            raise TypeError(f"{OUTCOMES}: decision_id must be the DecisionId record_decision returned, "
                            f"got {decision_id!r:.80}")
        return DecisionId(agent, float(confidence), float(decided_at), serial)

    def after_fork_in_child(self) -> None:
        """In a forked child: a new lock (a parent thread may have held it), none of the parent's links or windows."""
        self._lock = threading.Lock()
        self._linked = OrderedDict()
        self._errors = {}

    def reset(self) -> None:
        """Forget remembered links and Brier windows (the counters stay)."""
        with self._lock:
            self._linked.clear()
            self._errors.clear()
