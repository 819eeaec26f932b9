"""Rendering /metrics from the collected ``MetricsData``, fast and byte-identical.

The stock path (``PrometheusMetricReader``'s collector translating every data
point into prometheus_client ``Sample``s, then ``generate_latest`` escaping
and sorting every label of every sample) costs ~280 µs per 10-bucket
histogram series: ~2.8 s for 10k series, holding the GIL. This module reads
the *same* ``MetricsData`` the reader collected (so /metrics and OTLP still
come from one collection) and writes the exposition itself, with the text of
each line up to its value cached per series. A scrape then only formats
numbers. Only the Prometheus text format is written (ADR 2: /metrics never
serves OpenMetrics), with prometheus_client's default name escaping, and
``tests/test_exposition.py`` checks the output is byte-identical to the stock
path for awkward label values (docs/decisions.md, "Scrape rendering").

Private names relied on, all checked by the differential tests: the OTel
exporter's ``_collector``, its ``_metrics_datas`` queue, its option
attributes, ``_translate_to_prometheus`` (fallback only) and ``_mapping``
helpers; prometheus_client's ``_is_valid_legacy_metric_name``.

One deliberate difference, shared with the fallback path below: a histogram
whose first bucket bound is negative (``trade_pnl_usd``) keeps its ``_count``
and ``_sum`` samples. prometheus_client drops them for such histograms (an
OpenMetrics rule for negative *observations*), which would make /metrics
disagree with OTLP, which always carries count and sum.
"""

from __future__ import annotations

import json
from collections.abc import Iterable
from functools import lru_cache
from itertools import accumulate, chain

from opentelemetry.exporter.prometheus._mapping import map_unit, sanitize_attribute, sanitize_full_name
from opentelemetry.sdk.metrics.export import AggregationTemporality, Gauge, Histogram, MetricsData, Sum
from prometheus_client import CONTENT_TYPE_LATEST, generate_latest
from prometheus_client.openmetrics.exposition import UNDERSCORES, escape_label_name
from prometheus_client.samples import Sample
from prometheus_client.utils import floatToGoString
from prometheus_client.validation import _is_valid_legacy_metric_name

_INF = float("inf")


class Unsupported(Exception):
    """This collection has a shape only the stock translator handles."""


def _go(value) -> str:
    """``floatToGoString`` with the common cases (small ints, ordinary floats) inlined."""
    cls = value.__class__
    if cls is int and -1_000_000 < value < 1_000_000:
        return f"{value}.0"
    if cls is float and -_INF < value < 1_000_000.0:
        return repr(value)
    return floatToGoString(value)


def _label_value(value: object) -> str:
    # The exporter's _check_value: strings as they are, anything else as JSON.
    return value if isinstance(value, str) else json.dumps(value, default=str)


class _Series:
    """Cached per-series text: the sanitised labels and each line up to its value."""

    __slots__ = ("labels", "keys", "label_keys", "prefixes")

    def __init__(self, attributes) -> None:
        labels: dict[str, str] = {}
        for key, value in attributes.items():
            labels[sanitize_attribute(key)] = _label_value(value)
        self.labels = labels
        self.keys = frozenset(labels)
        self.label_keys: tuple[str, ...] | None = None
        self.prefixes: tuple[str, ...] = ()


class _Family:
    """One exposed family: its header text and its series' cached line prefixes."""

    __slots__ = ("kind", "name", "header", "series", "bounds", "le")

    def __init__(self, kind: str, name: str, header: str) -> None:
        self.kind = kind
        self.name = name
        self.header = header
        self.series: dict = {}
        self.bounds: tuple | None = None
        self.le: tuple[str, ...] = ()


class Exposition:
    """Renders collections for one Prometheus reader; keeps a cache of live series only."""

    def __init__(self) -> None:
        self._families: dict[tuple, _Family] = {}

    # -- entry point -----------------------------------------------------------

    def render(self, reader, registry) -> tuple[bytes, str]:
        """Collect through ``reader`` and render the Prometheus text format."""
        collector = getattr(reader, "_collector", None)
        if not _plain_collector(collector):
            # Options this renderer does not reproduce (scope labels, target
            # info, prefixes): the stock path, untouched.
            return generate_latest(registry), CONTENT_TYPE_LATEST
        datas = _collect(reader, collector)
        if len(datas) == 1:
            try:
                return self.render_data(datas[0]), CONTENT_TYPE_LATEST
            except Unsupported:
                pass
        return generate_latest(StockTranslation(collector, datas)), CONTENT_TYPE_LATEST

    # -- rendering -------------------------------------------------------------

    def render_data(self, metrics_data: MetricsData) -> bytes:
        out: list[str] = []
        append = out.append
        previous = self._families
        families: dict[tuple, _Family] = {}
        seen: set[str] = set()
        for resource_metrics in metrics_data.resource_metrics:
            for scope_metrics in resource_metrics.scope_metrics:
                for metric in scope_metrics.metrics:
                    family = self._family(metric, previous, families, seen)
                    if family is not None:
                        append(family.header)
                        self._render_points(family, metric.data.data_points, append)
        self._families = families  # series and families gone from this collection leave the cache
        return "".join(out).encode("utf-8")

    def _family(self, metric, previous, families, seen) -> _Family | None:
        data = metric.data
        if isinstance(data, Sum):
            gauge = not data.is_monotonic and data.aggregation_temporality == AggregationTemporality.CUMULATIVE
            kind = "gauge" if gauge else "counter"
        elif isinstance(data, Gauge):
            kind = "gauge"
        elif isinstance(data, Histogram):
            kind = "histogram"
        else:
            raise Unsupported(type(data).__name__)
        name = sanitize_full_name(metric.name)
        description = metric.description or ""
        unit = map_unit(metric.unit or "")
        family_id = "|".join((name, description, unit))
        if family_id in seen:
            raise Unsupported("two metrics share one family")  # the stock path merges them
        seen.add(family_id)
        key = (family_id, kind)
        family = previous.get(key)
        if family is None:
            family = self._new_family(kind, name, description, unit)
        families[key] = family
        return family

    @staticmethod
    def _new_family(kind, name, description, unit) -> _Family:
        # prometheus_client's family naming: counters lose a "_total" suffix
        # (it comes back on the samples), a unit is appended when missing.
        if kind == "counter" and name.endswith("_total"):
            name = name[:-6]
        if unit and not name.endswith("_" + unit):
            name += "_" + unit
        if not _is_valid_legacy_metric_name(name):
            raise Unsupported(f"metric name {name!r}")
        exposed = name + "_total" if kind == "counter" else name
        help_text = description.replace("\\", r"\\").replace("\n", r"\n")
        header = f"# HELP {exposed} {help_text}\n# TYPE {exposed} {kind}\n"
        return _Family(kind, name, header)

    def _render_points(self, family: _Family, points, append) -> None:
        cache = family.series
        live: dict = {}
        entries = []
        keysets = set()
        for point in points:
            attributes = point.attributes
            try:
                key = tuple(attributes.items())
                entry = cache.get(key)
            except TypeError:
                raise Unsupported("unhashable attribute value") from None
            if entry is None:
                entry = _Series(attributes)
            live[key] = entry
            entries.append(entry)
            keysets.add(entry.keys)
        family.series = live
        if not entries:
            return
        # Like the exporter: every series carries the union of the label names, "" if absent.
        label_keys = tuple(sorted(next(iter(keysets)) if len(keysets) == 1 else frozenset().union(*keysets)))
        kind = family.kind
        if kind == "histogram":
            self._render_histogram(family, points, entries, label_keys, append)
            return
        sample_name = family.name + "_total" if kind == "counter" else family.name
        for point, entry in zip(points, entries):
            if entry.label_keys != label_keys:
                entry.prefixes = (_prefix(sample_name, _items(entry, label_keys)),)
                entry.label_keys = label_keys
            append(entry.prefixes[0])
            append(_go(point.value))
            append("\n")

    def _render_histogram(self, family, points, entries, label_keys, append) -> None:
        name = family.name
        nbuckets = len(family.le)
        for point, entry in zip(points, entries):
            bounds = point.explicit_bounds
            if bounds is not family.bounds and tuple(bounds) != family.bounds:
                family.bounds = tuple(bounds)
                family.le = tuple(f"{bound}" for bound in chain(bounds, ["+Inf"]))
                nbuckets = len(family.le)
                for stale in family.series.values():
                    stale.label_keys = None
            if entry.label_keys != label_keys:
                items = _items(entry, label_keys)
                prefixes = []
                for le in family.le:
                    labelled = dict(items)
                    labelled["le"] = le
                    prefixes.append(_prefix(name + "_bucket", sorted(labelled.items())))
                prefixes.append(_prefix(name + "_count", items))
                prefixes.append(_prefix(name + "_sum", items))
                # One %-template per series: a scrape formats the numbers only.
                entry.prefixes = ("".join(prefix.replace("%", "%%") + "%s\n" for prefix in prefixes),)
                entry.label_keys = label_keys
            cumulative = list(accumulate(point.bucket_counts))
            if len(cumulative) != nbuckets:
                raise Unsupported("bucket counts do not match the bounds")
            first, last = cumulative[0], cumulative[-1]
            # Non-negative int counts (what both the facade and the SDK hold):
            # int + float is float, so int first and last means all ints.
            if first.__class__ is int and last.__class__ is int and 0 <= first and last < 1_000_000:
                values = [f"{count}.0" for count in cumulative]
            else:
                values = [_go(count) for count in cumulative]
            values.append(values[-1])
            values.append(_go(point.sum))
            append(entry.prefixes[0] % tuple(values))


def _prefix(sample_name: str, items) -> str:
    """A sample line up to its value, exactly as prometheus_client's text encoder writes it."""
    labelstr = ",".join([f'{_label_name(k)}="{_escape_value(v)}"' for k, v in items])
    return f"{sample_name}{{{labelstr}}} " if labelstr else f"{sample_name} "


@lru_cache(maxsize=4096)
def _label_name(name: str) -> str:
    return escape_label_name(name, UNDERSCORES)


def _escape_value(value: str) -> str:
    # prometheus_client's _escape(value, ALLOWUTF8, ...), used by both encoders for label values.
    return value.replace("\\", r"\\").replace("\n", r"\n").replace('"', r'\"')


def _items(entry: _Series, label_keys: tuple[str, ...]) -> list[tuple[str, str]]:
    labels = entry.labels
    return [(key, labels.get(key, "")) for key in label_keys]  # already sorted by key


def _plain_collector(collector) -> bool:
    """The exporter options this renderer reproduces: ours (no scope labels, target info or prefix)."""
    return (
        collector is not None
        and getattr(collector, "_disable_target_info", False) is True
        and getattr(collector, "_scope_info_enabled", True) is False
        and not getattr(collector, "_prefix", "x")
        and getattr(collector, "_resource_attribute_filter", 1) is None
        and hasattr(collector, "_metrics_datas")
    )


def _collect(reader, collector) -> list[MetricsData]:
    """Run one collection through ``reader`` and take what it queued for its collector."""
    queue = collector._metrics_datas
    queue.clear()  # a collection left behind by an earlier failure must not be served now
    reader.collect()
    datas = list(queue)
    queue.clear()
    return datas


class StockTranslation:
    """The exporter's own translation of collected data, as a registry for the stock encoders.

    Used when ``Exposition`` meets a shape it does not handle, and by the
    tests as the reference. Histograms keep ``_count``/``_sum`` even with a
    negative first bound (see the module docstring).
    """

    def __init__(self, collector, datas: Iterable[MetricsData]) -> None:
        self._collector = collector
        self._datas = list(datas)

    def collect(self):
        families: dict = {}
        for data in self._datas:
            self._collector._translate_to_prometheus(data, families)
        restore_counts_and_sums(families.values(), self._datas)
        return list(families.values())


def restore_counts_and_sums(families: Iterable, datas: Iterable[MetricsData]) -> None:
    """Give the histogram families translated from ``datas`` back their ``_count``/``_sum``.

    prometheus_client leaves both out of a histogram whose first bound is
    negative; the sums come from the data points, in the order the exporter
    translated them. Families are matched by name and HELP text, as the
    exporter groups them.
    """
    sums: dict[tuple[str, str], list[float]] = {}
    for data in datas:
        for resource_metrics in data.resource_metrics:
            for scope_metrics in resource_metrics.scope_metrics:
                for metric in scope_metrics.metrics:
                    if isinstance(metric.data, Histogram):
                        key = (_family_name(metric), metric.description or "")
                        sums.setdefault(key, []).extend(p.sum for p in metric.data.data_points)
    for family in families:
        point_sums = sums.get((family.name, family.documentation)) if family.type == "histogram" else None
        if point_sums is not None:
            _restore_count_and_sum(family, point_sums)


def _family_name(metric) -> str:
    """The name prometheus_client gives the family: the unit is appended unless already there."""
    name = sanitize_full_name(metric.name)
    unit = map_unit(metric.unit or "")
    return name + "_" + unit if unit and not name.endswith("_" + unit) else name


def _restore_count_and_sum(family, point_sums: list[float]) -> None:
    """Put back the ``_count``/``_sum`` samples prometheus_client leaves out after a negative bound."""
    count_name, sum_name = family.name + "_count", family.name + "_sum"
    if any(sample.name == count_name for sample in family.samples):
        return
    bucket_name = family.name + "_bucket"
    ends = sum(1 for sample in family.samples if sample.name == bucket_name and sample.labels.get("le") == "+Inf")
    if ends != len(point_sums):
        return  # not the translation of these points: leave it as prometheus_client made it
    samples: list[Sample] = []
    sums = iter(point_sums)
    for sample in family.samples:
        samples.append(sample)
        if sample.name == bucket_name and sample.labels.get("le") == "+Inf":
            labels = {k: v for k, v in sample.labels.items() if k != "le"}
            samples.append(Sample(count_name, labels, sample.value, sample.timestamp))
            samples.append(Sample(sum_name, dict(labels), next(sums), sample.timestamp))
    family.samples = samples
