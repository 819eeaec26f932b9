"""One workload, four ways into Prometheus 3, the same series on every path.

    (a) scrape      app /metrics                                      -> Prometheus A
    (b) collector   app -OTLP-> otelcol-tinywindow -> prometheus exporter -> scrape -> Prometheus B
    (c) remote      app -OTLP-> otelcol-tinywindow -> prometheus_remote_write  -> Prometheus C
    (d) native      app -OTLP-> Prometheus D's own OTLP receiver (prometheus/otlp-receiver.yml)

The collector runs collector/otelcol.yaml unchanged. Each path is queried back
and must hold the same metric names, the same label sets (job = service.name,
instance = service.instance.id, resource attributes as labels; on the scrape
path the same labels come from the target's labels in prometheus.yml) and the
same values, negative P&L and every histogram bucket included. Bucket bounds
are compared as numbers: the push paths spell them as Go formats floats
(le="10000"), the scrape path as the exposition does (le="10000.0").
"""

from __future__ import annotations

import math
import time

import pytest

from helpers import wait_until
from monitoring.deploy import Collector, Processes, Prometheus, Workload, otlp_env, prometheus_config
import tinywindow_otel
from tinywindow_otel.catalog import BY_NAME, Kind

IDENTITY = {"job": "tinywindow", "instance": "bot-1", "deployment_environment": "test", "desk": "crypto"}
RESOURCE = {"service.instance.id": "bot-1", "deployment.environment": "test", "desk": "crypto"}
SELECTOR = '{__name__=~"tinywindow_.*"}'


def normalised(series: dict[tuple, float]) -> dict[tuple, float]:
    """le compared as a number; everything else as stored."""
    out = {}
    for (name, labels), value in series.items():
        labels = tuple((k, repr(float(v)) if k == "le" else v) for k, v in labels)
        out[(name, labels)] = value
    return out


def difference(reference: dict, other: dict, clock_skew: float = 0.0) -> list[str]:
    """Problems of ``other`` against ``reference``; ``clock_skew``: how far apart the
    *_timestamp_seconds gauges may be (the native path's app is a second process)."""
    problems = []
    for key in sorted(set(reference) - set(other)):
        problems.append(f"missing {key}")
    for key in sorted(set(other) - set(reference)):
        problems.append(f"extra {key}")
    for key in sorted(set(reference) & set(other)):
        a, b = reference[key], other[key]
        if key[0].endswith("_timestamp_seconds") and abs(a - b) <= clock_skew:
            continue
        if not (a == b or (math.isnan(a) and math.isnan(b)) or math.isclose(a, b, rel_tol=1e-12)):
            problems.append(f"value {key}: {a} != {b}")
    return problems


def le_spellings(series: dict[tuple, float], bound: float) -> set[str]:
    return {v for (_, labels), _ in series.items() for k, v in labels if k == "le" and float(v) == bound}


def test_scrape_collector_remote_write_and_native_otlp_store_the_same_series(tmp_path, prometheus3, otelcol):
    started = time.monotonic()
    with Processes(tmp_path) as procs:
        remote = Prometheus(procs, prometheus3.prometheus, "prometheus-remote-write", prometheus_config(),
                            "--web.enable-remote-write-receiver")
        native = Prometheus(procs, prometheus3.prometheus, "prometheus-otlp", prometheus_config(otlp=True),
                            "--web.enable-otlp-receiver")
        collector = Collector(procs, otelcol, remote.url + "/api/v1/write")

        pushed_and_scraped = Workload(procs, "app-collector", otlp_env(
            collector.otlp_http + "/v1/metrics", exporters="prometheus,otlp", **RESOURCE))
        Workload(procs, "app-native", otlp_env(native.url + "/api/v1/otlp/v1/metrics", **RESOURCE))

        target_labels = {k: v for k, v in IDENTITY.items() if k != "job"}
        scrape = Prometheus(procs, prometheus3.prometheus, "prometheus-scrape", prometheus_config(scrape=[
            {"job_name": "tinywindow", "static_configs": [
                {"targets": [f"127.0.0.1:{pushed_and_scraped.port}"], "labels": target_labels}]}]))
        via_exporter = Prometheus(procs, prometheus3.prometheus, "prometheus-collector-scrape", prometheus_config(scrape=[
            {"job_name": "otel-collector-exporter", "honor_labels": True,
             "static_configs": [{"targets": [collector.prometheus_target]}]}]))

        # Every family the workload records (the core 18) on the reference path first.
        recorded = set()
        for spec in (BY_NAME["tinywindow_" + attribute] for attribute in tinywindow_otel.METRIC_NAMES):
            if spec.kind is Kind.HISTOGRAM:
                recorded |= {spec.exposed_name + suffix for suffix in ("_bucket", "_sum", "_count")}
            else:
                recorded.add(spec.exposed_name)
        reference = wait_until(
            lambda: (s := scrape.series(SELECTOR)) and recorded <= {name for name, _ in s} and s,
            timeout=30, interval=0.25, what="every recorded family scraped from /metrics")
        reference = normalised(reference)

        paths = {"collector exporter": via_exporter, "remote write": remote, "native OTLP": native}
        last: dict[str, list[str]] = {}

        def same_everywhere():
            for name, prometheus in paths.items():
                last[name] = difference(reference, normalised(prometheus.series(SELECTOR)),
                                        clock_skew=60.0 if prometheus is native else 0.0)
            return not any(last.values())

        try:
            wait_until(same_everywhere, timeout=40, interval=0.5, what="the same series on every path")
        except AssertionError:
            report = "\n".join(f"[{name}] " + "\n  ".join(problems[:25]) for name, problems in last.items() if problems)
            raise AssertionError("paths differ from the direct scrape:\n" + report) from None

        # What "the same" means, spelled out on the stored data.
        for (name, labels), value in reference.items():
            labels = dict(labels)
            assert {k: labels[k] for k in IDENTITY} == IDENTITY, (name, labels)
        assert reference[("tinywindow_trade_pnl_usd_sum", tuple(sorted(IDENTITY.items())))] == pytest.approx(
            120.5 - 250.25 - 1_500.0)
        negative = [v for (n, ls), v in reference.items()
                    if n == "tinywindow_trade_pnl_usd_bucket" and float(dict(ls)["le"]) < 0]
        assert negative and max(negative) >= 1, "negative P&L buckets hold the losses"

        spellings = {name: le_spellings(p.series('tinywindow_trade_amount_usd_bucket'), 10_000.0)
                     for name, p in {"scrape": scrape, **paths}.items()}
        print(f"le of the $10K bucket per path: {spellings}")
    print(f"four paths agree on {len(reference)} series; {time.monotonic() - started:.1f}s")
