"""Process and Python runtime metrics, with prometheus_client's names, types and help.

prometheus_client's own collectors (public API, ``registry=None``) read
``/proc`` and the ``gc`` module; their families become OTel metrics here so
/metrics and OTLP carry them like any other, and dashboards built for
prometheus_client (``process_cpu_seconds_total``, ``python_gc_*``) work.
"""

from __future__ import annotations

import time

from opentelemetry.sdk.metrics.export import AggregationTemporality, Gauge, Metric, NumberDataPoint, Sum
from prometheus_client import CollectorRegistry, GCCollector, PlatformCollector, ProcessCollector

_START_NS = time.time_ns()


class RuntimeMetrics:
    """A metric source for the producer: ``source(now_ns)`` -> OTel metrics."""

    def __init__(self) -> None:
        # A private registry: only these three, not prometheus_client's global one.
        self._registry = CollectorRegistry(auto_describe=False)
        self._collectors = [ProcessCollector(registry=self._registry), GCCollector(registry=self._registry),
                            PlatformCollector(registry=self._registry)]

    def __call__(self, now_ns: int) -> list[Metric]:
        result = []
        for collector in self._collectors:
            try:
                families = list(collector.collect())
            except Exception:  # noqa: BLE001 - e.g. /proc unreadable: no runtime metrics, no failed scrape
                continue
            for family in families:
                if family.type == "counter":
                    points = [NumberDataPoint(dict(s.labels), _START_NS, now_ns, s.value)
                              for s in family.samples if s.name.endswith("_total")]
                    data: Sum | Gauge = Sum(points, AggregationTemporality.CUMULATIVE, True)
                    name = family.name + "_total"
                elif family.type in ("gauge", "info"):
                    points = [NumberDataPoint(dict(s.labels), _START_NS, now_ns, s.value) for s in family.samples]
                    data = Gauge(points)
                    name = family.name + ("_info" if family.type == "info" else "")
                else:
                    continue
                if points:
                    result.append(Metric(name, family.documentation, family.unit or "", data))
        return result
