"""Beside `opentelemetry-instrument`: auto-instrumentation reads the same OTEL_METRICS_EXPORTER.

The real CLI (opentelemetry-distro's configurator sets up the *global*
MeterProvider from the environment) runs a program that records into both
that provider and this SDK. Each must follow its own setting, export only its
own metrics, and never take the other's over.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest
from helpers import fetch, free_port, parse, wait_until
from otlp_receiver import OTLPReceiver

PROGRAM = textwrap.dedent("""
    import sys, time
    from opentelemetry import metrics
    import tinywindow_otel as tw

    metrics.get_meter("app.auto").create_counter("app_requests").add(3)
    tw.trades_total.labels(status="filled", symbol="BTC/USDT").inc()
    server = tw.MetricsServer(port=int(sys.argv[1])).start() if len(sys.argv) > 1 else None
    tw.force_flush()
    if server is not None:
        print("ready", flush=True)
        sys.stdin.readline()  # serve until the test has scraped both endpoints
        server.stop()
""")


def instrument_cli() -> str:
    path = Path(sys.executable).with_name("opentelemetry-instrument")
    found = str(path) if path.exists() else shutil.which("opentelemetry-instrument")
    assert found, "opentelemetry-instrument is not installed (test extra: opentelemetry-distro)"
    return found


def env(**extra: str) -> dict:
    base = {k: v for k, v in os.environ.items() if not k.startswith(("OTEL_", "TINYWINDOW_OTEL_"))}
    return {**base, "OTEL_TRACES_EXPORTER": "none", "OTEL_LOGS_EXPORTER": "none",
            "OTEL_EXPORTER_OTLP_PROTOCOL": "http/protobuf", "OTEL_METRIC_EXPORT_INTERVAL": "600000", **extra}


def pushed_by_scope(receiver: OTLPReceiver) -> dict[str, set[str]]:
    scopes: dict[str, set[str]] = {}
    for _, request in receiver.requests:
        for resource in request.resource_metrics:
            for scope in resource.scope_metrics:
                scopes.setdefault(scope.scope.name, set()).update(m.name for m in scope.metrics)
    return scopes


def run_instrumented(receiver: OTLPReceiver, **extra: str) -> subprocess.CompletedProcess:
    proc = subprocess.run([instrument_cli(), sys.executable, "-c", PROGRAM],
                          env=env(OTEL_EXPORTER_OTLP_ENDPOINT=receiver.endpoint, **extra),
                          capture_output=True, text=True, timeout=60)
    assert proc.returncode == 0, proc.stderr
    return proc


def test_otlp_for_both_each_pushes_its_own_metrics_once():
    with OTLPReceiver() as receiver:
        run_instrumented(receiver, OTEL_METRICS_EXPORTER="otlp")
        scopes = pushed_by_scope(receiver)
    ours = {scope for scope, names in scopes.items() if "tinywindow_trades_total" in names}
    theirs = {scope for scope, names in scopes.items() if "app_requests" in names}
    assert theirs == {"app.auto"}, scopes  # auto-instrumentation pushed its metric
    assert len(ours) == 1 and not ours & theirs, scopes  # ours, once, under our own scope
    assert not any(name.startswith("tinywindow_") for name in scopes["app.auto"]), scopes


def test_our_own_variable_keeps_the_sdk_off_the_push_auto_instrumentation_makes():
    with OTLPReceiver() as receiver:
        run_instrumented(receiver, OTEL_METRICS_EXPORTER="otlp", TINYWINDOW_OTEL_METRICS_EXPORTER="prometheus")
        scopes = pushed_by_scope(receiver)
    assert scopes.get("app.auto") == {"app_requests"}, scopes
    assert not any("tinywindow_trades_total" in names for names in scopes.values()), scopes


@pytest.mark.timeout(90)
def test_prometheus_for_both_serves_two_endpoints_each_with_its_own_metrics():
    ours, theirs = free_port(), free_port()
    proc = subprocess.Popen([instrument_cli(), sys.executable, "-c", PROGRAM, str(ours)],
                            env=env(OTEL_METRICS_EXPORTER="prometheus", OTEL_EXPORTER_PROMETHEUS_HOST="127.0.0.1",
                                    OTEL_EXPORTER_PROMETHEUS_PORT=str(theirs)),
                            stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        assert proc.stdout.readline().strip() == "ready", proc.stderr.read() if proc.poll() is not None else ""
        our_families = parse(fetch(f"http://127.0.0.1:{ours}/metrics"))
        their_families = wait_until(lambda: parse(fetch(f"http://127.0.0.1:{theirs}/metrics")), timeout=20,
                                    what="auto-instrumentation's Prometheus exporter to answer")
    finally:
        if proc.poll() is None:
            proc.stdin.write("\n")
            proc.stdin.flush()
        proc.communicate(timeout=30)
    our_samples = {s.name for family in our_families.values() for s in family.samples}
    their_samples = {s.name for family in their_families.values() for s in family.samples}
    assert "tinywindow_trades_total" in our_samples and not any(n.startswith("app_") for n in our_samples)
    assert "app_requests_total" in their_samples, their_samples
    assert not any(name.startswith("tinywindow_") for name in their_samples), their_samples
