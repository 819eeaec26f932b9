"""The stock exporter path, as a test oracle only: PrometheusMetricReader's translation + generate_latest.

Private names of opentelemetry-exporter-prometheus are used here on purpose
(the package itself never imports them): the oracle must be exactly what the
stock path writes for a given ``MetricsData``.
"""

from __future__ import annotations

import inspect
from collections.abc import Iterable

from opentelemetry.exporter.prometheus import _CustomCollector
from opentelemetry.exporter.prometheus._mapping import map_unit, sanitize_full_name
from opentelemetry.sdk.metrics.export import Histogram, MetricsData, ResourceMetrics, ScopeMetrics
from prometheus_client import exposition as text_format
from prometheus_client.samples import Sample


def stock(datas: Iterable[MetricsData]) -> bytes:
    """The exporter's own translation, written by prometheus_client's text encoder.

    Histograms keep ``_count``/``_sum`` even with a negative first bound, as
    /metrics does (prometheus_client alone drops them; docs/decisions.md).
    """
    datas = list(datas)
    collector = plain_collector()

    class Translation:
        @staticmethod
        def collect():
            families: dict = {}
            for data in datas:
                collector._translate_to_prometheus(data, families)
            restore_counts_and_sums(families.values(), datas)
            return list(families.values())

    return text_format.generate_latest(Translation())


# Whether the installed exporter has the scope options (older versions write no scope labels at all).
SCOPE_OPTIONS = "scope_info_enabled" in inspect.signature(_CustomCollector).parameters


def plain_collector() -> _CustomCollector:
    """The exporter's collector without target_info and without scope labels."""
    options = {"disable_target_info": True}
    if SCOPE_OPTIONS:
        options["scope_info_enabled"] = False
    return _CustomCollector(**options)


def restore_counts_and_sums(families, datas) -> None:
    sums: dict[tuple[str, str], list[float]] = {}
    for data in datas:
        for resource_metrics in data.resource_metrics:
            for scope_metrics in resource_metrics.scope_metrics:
                for metric in scope_metrics.metrics:
                    if isinstance(metric.data, Histogram):
                        name = sanitize_full_name(metric.name)
                        unit = map_unit(metric.unit or "")
                        if unit and not name.endswith("_" + unit):
                            name += "_" + unit
                        sums.setdefault((name, metric.description or ""), []).extend(
                            p.sum for p in metric.data.data_points)
    for family in families:
        point_sums = sums.get((family.name, family.documentation)) if family.type == "histogram" else None
        if point_sums is None:
            continue
        count_name, sum_name, bucket_name = family.name + "_count", family.name + "_sum", family.name + "_bucket"
        if any(sample.name == count_name for sample in family.samples):
            continue
        samples = []
        it = iter(point_sums)
        for sample in family.samples:
            samples.append(sample)
            if sample.name == bucket_name and sample.labels.get("le") == "+Inf":
                labels = {k: v for k, v in sample.labels.items() if k != "le"}
                samples.append(Sample(count_name, labels, sample.value, sample.timestamp))
                samples.append(Sample(sum_name, dict(labels), next(it), sample.timestamp))
        family.samples = samples


def with_points(data: MetricsData) -> MetricsData:
    """``data`` without metrics that have no point: older exporters show no family for them, newer
    ones HELP/TYPE only, like /metrics. The comparison covers what every version defines."""
    return MetricsData([
        ResourceMetrics(rm.resource, [ScopeMetrics(sm.scope, [m for m in sm.metrics if m.data.data_points],
                                                   sm.schema_url) for sm in rm.scope_metrics], rm.schema_url)
        for rm in data.resource_metrics
    ])
