"""One workload, four ways into Prometheus 3, the same series on every path.

    (a) scrape      app /metrics                                      -> Prometheus A
    (b) collector   app -OTLP-> otelcol-tinywindow -> prometheus exporter -> scrape -> Prometheus B
    (c) remote      app -OTLP-> otelcol-tinywindow -> prometheus_remote_write  -> Prometheus C
    (d) native      app -OTLP-> Prometheus D's own OTLP receiver (prometheus/otlp-receiver.yml)

The collector runs collector/otelcol.yaml unchanged. Each path is queried back
and must hold the same metric names, the same label sets (job = service.name,
instance = service.instance.id, resource attributes as labels; on the scrape
path the same labels come from the target's labels in prometheus.yml) and the
same values, negative P&L and every histogram bucket included. The runtime
families (process_*, python_*) have the same names and label sets everywhere;
target_info exists on the push paths only, with the same labels on each.

Bucket bounds are compared as numbers, and their spelling is asserted per path
(docs/deployment.md): Prometheus 3 stores le="10000.0" for what it scrapes
(from /metrics or from the collector's exporter, which exposes le="10000") and
le="10000" for what is pushed to it; Prometheus 2.42 scraping the collector's
exporter stores le="10000" as exposed. The rules' bucket matchers must accept
every spelling seen.
"""

from __future__ import annotations

import math
import os
import re
import time
import urllib.request

import pytest

from helpers import wait_until
from monitoring.assets import alerts_by_name
from monitoring.deploy import Collector, Processes, Prometheus, Workload, otlp_env, prometheus_config
from monitoring.toolchain import ToolUnavailable, toolchain as resolve_toolchain
import tinywindow_otel
from tinywindow_otel.catalog import BY_NAME, Kind

IDENTITY = {"job": "tinywindow", "instance": "bot-1", "deployment_environment": "test", "desk": "crypto"}
RESOURCE = {"service.instance.id": "bot-1", "deployment.environment": "test", "desk": "crypto"}
SELECTOR = '{__name__=~"tinywindow_.*"}'
RUNTIME = '{__name__=~"process_.*|python_.*"}'
# Runtime values that do not move while the workload runs (the others do: CPU, memory, gc).
STABLE_RUNTIME = ("python_info", "process_max_fds", "process_start_time_seconds")
LE_RE = re.compile(r'le="([^"]+)"')


@pytest.fixture(scope="module")
def prometheus2() -> str:
    """Debian's Prometheus 2.42: how the oldest supported version stores the collector exporter's buckets."""
    try:
        return resolve_toolchain("debian").prometheus
    except ToolUnavailable as exc:
        if os.environ.get("CI") == "true":
            pytest.fail(str(exc))
        pytest.skip(str(exc))


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


def rule_bucket_matchers() -> set[str]:
    """The regexes LargePositionSize selects the $10K bucket with (PromQL string escapes undone)."""
    expr = alerts_by_name()["LargePositionSize"]["expr"]
    return {m.replace("\\\\", "\\") for m in re.findall(r'le=~"([^"]+)"', expr)}


def test_scrape_collector_remote_write_and_native_otlp_store_the_same_series(tmp_path, prometheus3, prometheus2,
                                                                             otelcol):
    started = time.monotonic()
    with Processes(tmp_path) as procs:
        remote = Prometheus(procs, prometheus3.prometheus, "prometheus-remote-write", prometheus_config(),
                            "--web.enable-remote-write-receiver")
        native = Prometheus(procs, prometheus3.prometheus, "prometheus-otlp", prometheus_config(otlp=True),
                            "--web.enable-otlp-receiver")
        collector = Collector(procs, otelcol, remote.url + "/api/v1/write")

        pushed_and_scraped = Workload(procs, "app-collector", otlp_env(
            collector.otlp_http + "/v1/metrics", exporters="prometheus,otlp", **RESOURCE))
        native_app = Workload(procs, "app-native", otlp_env(native.url + "/api/v1/otlp/v1/metrics", **RESOURCE))

        target_labels = {k: v for k, v in IDENTITY.items() if k != "job"}
        scrape = Prometheus(procs, prometheus3.prometheus, "prometheus-scrape", prometheus_config(scrape=[
            {"job_name": "tinywindow", "static_configs": [
                {"targets": [f"127.0.0.1:{pushed_and_scraped.port}"], "labels": target_labels}]}]))
        exporter_job = [{"job_name": "otel-collector-exporter", "honor_labels": True,
                         "static_configs": [{"targets": [collector.prometheus_target]}]}]
        via_exporter = Prometheus(procs, prometheus3.prometheus, "prometheus-collector-scrape",
                                  prometheus_config(scrape=exporter_job))
        via_exporter_2 = Prometheus(procs, prometheus2, "prometheus2-collector-scrape",
                                    prometheus_config(scrape=exporter_job))

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

        paths = {"collector exporter": via_exporter, "remote write": remote, "native OTLP": native,
                 "collector exporter, Prometheus 2": via_exporter_2}
        last: dict[str, list[str]] = {}

        def same_everywhere():
            runtime_reference = set(scrape.series(RUNTIME))
            for name, prometheus in paths.items():
                last[name] = difference(reference, normalised(prometheus.series(SELECTOR)),
                                        clock_skew=60.0 if prometheus is native else 0.0)
                runtime = set(prometheus.series(RUNTIME))
                last[name] += [f"runtime missing {k}" for k in sorted(runtime_reference - runtime)]
                last[name] += [f"runtime extra {k}" for k in sorted(runtime - runtime_reference)]
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

        # Runtime families: the same names and label sets (compared above); values that do not move
        # are equal, those of the same process exactly, the native path's second process within skew.
        runtime = {"scrape": scrape.series(RUNTIME), **{name: p.series(RUNTIME) for name, p in paths.items()}}
        families = {name for name, _ in runtime["scrape"]}
        assert {"process_cpu_seconds_total", "process_resident_memory_bytes", "process_start_time_seconds",
                "python_gc_collections_total", "python_info"} <= families, families
        for name, series in runtime.items():
            for key, value in series.items():
                if key[0] in STABLE_RUNTIME:
                    expected = runtime["scrape"][key]
                    tolerance = 60.0 if name == "native OTLP" and key[0] == "process_start_time_seconds" else 0.0
                    assert abs(value - expected) <= tolerance, (name, key, value, expected)

        # target_info: the resource, on the push paths only (the scrape path's identity is the
        # target's labels), the same labels on each; process_pid is the pushing process's.
        assert scrape.series("target_info") == {}
        pids = {"collector exporter": pushed_and_scraped, "remote write": pushed_and_scraped,
                "native OTLP": native_app, "collector exporter, Prometheus 2": pushed_and_scraped}
        infos = {}
        for name, prometheus in paths.items():
            [(_, labels)] = prometheus.series("target_info")
            labels = dict(labels)
            assert labels.pop("process_pid") == str(pids[name].process.pid), name
            infos[name] = labels
        first = next(iter(infos.values()))
        assert all(labels == first for labels in infos.values()), infos
        assert {k: first[k] for k in IDENTITY} == IDENTITY
        assert {"telemetry_sdk_language", "telemetry_sdk_name", "telemetry_sdk_version"} <= set(first), first

        # Bucket bound spellings per path, and the rules accept each (also the raw exposition
        # of the collector's exporter, which is what any Prometheus 2 scraping it stores).
        spellings = {name: le_spellings(p.series('tinywindow_trade_amount_usd_bucket'), 10_000.0)
                     for name, p in {"scrape": scrape, **paths}.items()}
        with urllib.request.urlopen(f"http://{collector.prometheus_target}/metrics", timeout=10) as response:
            exposed = response.read().decode()
        spellings["collector exporter, exposed"] = {
            v for line in exposed.splitlines() if line.startswith("tinywindow_trade_amount_usd_bucket")
            for v in LE_RE.findall(line) if v != "+Inf" and float(v) == 10_000.0}
        assert spellings == {"scrape": {"10000.0"}, "collector exporter": {"10000.0"}, "remote write": {"10000"},
                             "native OTLP": {"10000"}, "collector exporter, Prometheus 2": {"10000"},
                             "collector exporter, exposed": {"10000"}}, spellings
        matchers = rule_bucket_matchers()
        assert matchers, "LargePositionSize selects the $10K bucket"
        for spelling in set().union(*spellings.values()):
            assert all(re.fullmatch(m, spelling) for m in matchers), (spelling, matchers)
        print(f"le of the $10K bucket per path: {spellings}")
    print(f"four paths (five servers) agree on {len(reference)} series and the runtime families; "
          f"{time.monotonic() - started:.1f}s")
