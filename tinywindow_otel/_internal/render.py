"""``MetricsData`` -> the Prometheus text format, as the stock exporter path writes it.

The stock path (``PrometheusMetricReader`` translating every point into
prometheus_client samples, then ``generate_latest``) is slow and, to be
fast, would need the exporter's private names. This renderer follows the
same rules (the OTel Prometheus compatibility spec as the exporter
implements it, prometheus_client's text encoder) with public code only, and
``tests/test_render.py`` checks its output is byte-identical to the stock
path wherever that path is defined. Each facade series caches its line up
to the value on its attributes object, so a scrape formats numbers only and
a removed series takes its cache with it.

Only the Prometheus text format is written, never OpenMetrics: that format
forbids ``_sum`` on a histogram with negative buckets, and the P&L
histogram's ``_sum`` is the net P&L. Unlike prometheus_client, a histogram
whose first bound is negative keeps ``_count`` and ``_sum``, so /metrics
agrees with OTLP, which always carries both (docs/decisions.md).
"""

from __future__ import annotations

import json
import re
from itertools import accumulate, chain
from time import sleep

from opentelemetry.sdk.metrics.export import AggregationTemporality, Gauge, Histogram, Metric, Sum
from prometheus_client import CONTENT_TYPE_LATEST
from prometheus_client.utils import floatToGoString

from .series import Attributes

# The text format prometheus_client writes, under the content type it announces for it.
CONTENT_TYPE = CONTENT_TYPE_LATEST
_INF = float("inf")
# Rendered text is encoded in pieces of about this many series: encoding one
# multi-megabyte string would hold the GIL for milliseconds at a time.
CHUNK_SERIES = 500

# --- the OTel -> Prometheus naming rules (the Prometheus exporter's mapping) ---

_NAME_RE = re.compile(r"[^a-zA-Z0-9:]+")
_LABEL_RE = re.compile(r"[^a-zA-Z0-9]+")
_UNIT_ANNOTATION = re.compile(r"{.*}")
_VALID_NAME = re.compile(r"[a-zA-Z_:][a-zA-Z0-9_:]*\Z")
_UNITS = {
    "d": "days", "h": "hours", "min": "minutes", "s": "seconds", "ms": "milliseconds", "us": "microseconds",
    "ns": "nanoseconds", "By": "bytes", "KiBy": "kibibytes", "MiBy": "mebibytes", "GiBy": "gibibytes",
    "TiBy": "tibibytes", "KBy": "kilobytes", "MBy": "megabytes", "GBy": "gigabytes", "TBy": "terabytes",
    "m": "meters", "V": "volts", "A": "amperes", "J": "joules", "W": "watts", "g": "grams", "Cel": "celsius",
    "Hz": "hertz", "1": "", "%": "percent",
}
_PER_UNITS = {"s": "second", "m": "minute", "h": "hour", "d": "day", "w": "week", "mo": "month", "y": "year"}


def metric_name(name: str) -> str:
    if name and name[0].isdigit():
        name = "_" + name[1:]
    return _NAME_RE.sub("_", name)


def label_name(key: str) -> str:
    if key and key[0].isdigit():
        key = "_" + key[1:]
    return _LABEL_RE.sub("_", key)


def unit_suffix(unit: str) -> str:
    unit = _UNIT_ANNOTATION.sub("", unit)
    if unit in _UNITS:
        return _UNITS[unit]
    parts = unit.split("/", maxsplit=1)
    if len(parts) == 2:
        bottom = _NAME_RE.sub("_", parts[1])
        if bottom:
            top = _NAME_RE.sub("_", parts[0])
            top = _UNITS.get(top, top)
            bottom = _PER_UNITS.get(bottom, bottom)
            return f"{top}_per_{bottom}" if top else f"per_{bottom}"
    return _NAME_RE.sub("_", unit).strip("_")


def family_name(kind: str, raw_name: str, unit: str) -> tuple[str, str]:
    """(family, name on the samples) as /metrics shows a metric: prometheus_client's naming.

    Counters lose a ``_total`` suffix (it comes back on the samples), a unit is
    appended when the name does not already end in it (``s`` -> ``_seconds``).
    """
    name = metric_name(raw_name)
    suffix = unit_suffix(unit)
    if kind == "counter" and name.endswith("_total"):
        name = name[:-6]
    if suffix and not name.endswith("_" + suffix):
        name += "_" + suffix
    if not _VALID_NAME.match(name):
        raise UnsupportedData(f"metric name {raw_name!r} gives no valid Prometheus name")
    return name, name + "_total" if kind == "counter" else name


def _label_value(value: object) -> str:
    # The exporter's rule: strings as they are, anything else as JSON.
    return value if isinstance(value, str) else json.dumps(value, default=str)


def _escape_value(value: str) -> str:
    return value.replace("\\", r"\\").replace("\n", r"\n").replace('"', r'\"')


def _go(value) -> str:
    """prometheus_client's ``floatToGoString``, with the common cases inlined."""
    cls = value.__class__
    if cls is int and -1_000_000 < value < 1_000_000:
        return f"{value}.0"
    if cls is float and -_INF < value < 1_000_000.0:
        return repr(value)
    return floatToGoString(value)


class UnsupportedData(ValueError):
    """A collection holds something the Prometheus text format cannot show (e.g. an exponential histogram)."""


class _Family:
    __slots__ = ("kind", "name", "sample", "header", "points", "uniform")

    def __init__(self, kind: str, name: str, sample: str, header: str) -> None:
        self.kind = kind
        self.name = name
        self.sample = sample
        self.header = header
        self.points: list = []
        self.uniform = True  # every point is a facade series of this one family


class Renderer:
    """Renders metrics; keeps the headers of the families it has seen (series cache their own lines)."""

    def __init__(self) -> None:
        self._headers: dict[tuple, tuple[str, str, str, str]] = {}

    def render(self, metrics: list[Metric]) -> bytes:
        return b"".join(self.render_chunks(metrics))

    def render_chunks(self, metrics: list[Metric]) -> list[bytes]:
        """The exposition as a list of encoded pieces (write them in order)."""
        families: dict[str, _Family] = {}
        for metric in metrics:
            family = self._family(metric, families)
            points = metric.data.data_points
            if family.uniform and family.points:
                family.uniform = False  # two metrics merged into one family (the exporter merges them too)
            family.points.extend(points)
        chunks: list[bytes] = []
        out: list[str] = []
        append = out.append
        budget = CHUNK_SERIES
        for family in families.values():
            append(family.header)
            points = family.points
            if not points:
                continue
            first = points[0].attributes
            width = len(first)
            # One facade family whose series all carry its declared labels
            # (a series may drop one, e.g. an attribute that is conditionally absent).
            if (family.uniform and first.__class__ is Attributes
                    and all([len(p.attributes) == width for p in points])):
                keys = tuple(sorted(map(label_name, first)))
            else:
                family.uniform = False
                keys = tuple(sorted(frozenset().union(*(map(label_name, p.attributes) for p in points))))
            for start in range(0, len(points), budget):
                part = points[start:start + budget]
                if family.kind == "histogram":
                    self._histograms(family, part, keys, append)
                else:
                    self._numbers(family, part, keys, append)
                if len(out) > budget:
                    chunks.append("".join(out).encode("utf-8"))
                    out.clear()
                    # Hand the GIL to any thread waiting for it (an event loop,
                    # the trading thread) instead of keeping it for the whole
                    # switch interval: a large scrape must not delay them.
                    sleep(0)
        if out:
            chunks.append("".join(out).encode("utf-8"))
        return chunks

    def _family(self, metric: Metric, families: dict[str, _Family]) -> _Family:
        data = metric.data
        if isinstance(data, Sum):
            gauge = not data.is_monotonic and data.aggregation_temporality == AggregationTemporality.CUMULATIVE
            kind = "gauge" if gauge else "counter"
        elif isinstance(data, Gauge):
            kind = "gauge"
        elif isinstance(data, Histogram):
            kind = "histogram"
        else:
            raise UnsupportedData(f"{metric.name}: {type(data).__name__} has no Prometheus text form here")
        description = metric.description or ""
        key = (metric.name, description, metric.unit or "", kind)
        cached = self._headers.get(key)
        if cached is None:
            cached = self._headers[key] = self._header(kind, metric.name, description, metric.unit or "")
        family_id, name, sample, header = cached
        family = families.get(family_id)
        if family is None:
            family = families[family_id] = _Family(kind, name, sample, header)
        return family

    @staticmethod
    def _header(kind: str, raw_name: str, description: str, unit: str) -> tuple[str, str, str, str]:
        suffix = unit_suffix(unit)
        family_id = "|".join((metric_name(raw_name), description, suffix))
        name, exposed = family_name(kind, raw_name, unit)
        help_text = description.replace("\\", r"\\").replace("\n", r"\n")
        return family_id, name, exposed, f"# HELP {exposed} {help_text}\n# TYPE {exposed} {kind}\n"

    @staticmethod
    def _items(attributes, keys: tuple[str, ...]) -> list[tuple[str, str]]:
        labels = {label_name(k): _label_value(v) for k, v in attributes.items()}
        return [(key, labels.get(key, "")) for key in keys]

    def _numbers(self, family: _Family, points, keys, append) -> None:
        sample = family.sample
        uniform = family.uniform
        for point in points:
            attributes = point.attributes
            line = getattr(attributes, "line", None) if uniform else None
            if line is None or line[0] is not sample or line[1] != keys:
                line = (sample, keys, _prefix(sample, self._items(attributes, keys)))
                if uniform:
                    attributes.line = line
            append(line[2])
            append(_go(point.value))
            append("\n")

    def _histograms(self, family: _Family, points, keys, append) -> None:
        uniform = family.uniform
        name = family.name
        for point in points:
            attributes = point.attributes
            bounds = tuple(point.explicit_bounds)
            line = getattr(attributes, "line", None) if uniform else None
            if line is None or line[0] is not family.sample or line[1] != bounds or line[2] != keys:
                items = self._items(attributes, keys)
                prefixes = []
                for le in chain(map(str, bounds), ["+Inf"]):
                    labelled = dict(items)
                    labelled["le"] = le
                    prefixes.append(_prefix(name + "_bucket", sorted(labelled.items())))
                prefixes.append(_prefix(name + "_count", items))
                prefixes.append(_prefix(name + "_sum", items))
                # One %-template per series: a scrape formats the numbers only.
                line = (family.sample, bounds, keys, "".join(p.replace("%", "%%") + "%s\n" for p in prefixes))
                if uniform:
                    attributes.line = line
            cumulative = list(accumulate(point.bucket_counts))
            if len(cumulative) != len(bounds) + 1:
                raise UnsupportedData(f"{name}: {len(cumulative)} bucket counts for {len(bounds)} bounds")
            first, last = cumulative[0], cumulative[-1]
            # Non-negative int counts (what the facade holds): int + float is
            # float, so int first and last means all ints.
            if first.__class__ is int and last.__class__ is int and 0 <= first and last < 1_000_000:
                values = [f"{count}.0" for count in cumulative]
            else:
                values = [_go(count) for count in cumulative]
            values.append(values[-1])
            values.append(_go(point.sum))
            append(line[3] % tuple(values))


def _prefix(sample_name: str, items) -> str:
    """A sample line up to its value, exactly as prometheus_client's text encoder writes it."""
    labelstr = ",".join([f'{k}="{_escape_value(v)}"' for k, v in items])
    return f"{sample_name}{{{labelstr}}} " if labelstr else f"{sample_name} "
