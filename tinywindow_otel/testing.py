"""Helpers for your tests (and ours): start each test from a clean state, through public calls.

    import pytest
    from tinywindow_otel.testing import reset

    @pytest.fixture(autouse=True)
    def clean_metrics():
        reset()
"""

from __future__ import annotations

from ._internal.otel import get_pipeline, reset_for_tests
from .metrics import REGISTRY, MetricRegistry

__all__ = ["reset", "reset_values", "collect"]


def reset_values(registry: MetricRegistry = REGISTRY) -> None:
    """Remove every series of every metric (unlabelled ones start again at 0); log every drop kind again.

    The state recorders derive from the values goes too: the win/loss tally,
    the portfolio peak and day start, risk gauge owners, open circuit
    breakers, heartbeats, calibration links and Brier windows, the orders an
    instrumented exchange follows. Configuration stays (LLM prices, caps).
    """
    registry.clear()
    registry.reset_recorders()
    registry.drops.forget_logged()


def reset(registry: MetricRegistry = REGISTRY) -> None:
    """``reset_values()`` plus: the pipeline is shut down and ``configure()``'s settings forgotten.

    The next use builds a pipeline from the ``OTEL_*`` environment again.
    """
    reset_for_tests()
    reset_values(registry)


def collect():
    """The ``MetricsData`` a scrape of /metrics would show right now."""
    return get_pipeline().collect()
