"""The process's OpenTelemetry pipeline: configure, flush, shut down, render /metrics.

The implementation lives in ``tinywindow_otel._internal.otel``; this module
is what servers and applications call:

- ``render_metrics()`` -> ``(body, content_type)`` for a /metrics response
  (``render_metrics_chunks()``: the body as encoded pieces, written in order,
  so a large body never holds the GIL for one long encode);
  ``MetricsDisabledError`` when Prometheus is not selected (answer 503).
- ``configure()``, ``force_flush()``, ``shutdown()``: also exported by
  ``tinywindow_otel``.
- ``get_pipeline()``: the ``Pipeline`` object (``collect()`` gives the
  ``MetricsData`` a scrape shows; ``meter_provider()`` for OTel instruments
  of your own).
"""

from ._internal.otel import (
    MetricsDisabledError,
    Pipeline,
    configure,
    current_settings,
    force_flush,
    get_pipeline,
    render_metrics,
    render_metrics_chunks,
    shutdown,
)

__all__ = [
    "MetricsDisabledError", "Pipeline", "configure", "current_settings", "force_flush", "get_pipeline",
    "render_metrics", "render_metrics_chunks", "shutdown",
]
