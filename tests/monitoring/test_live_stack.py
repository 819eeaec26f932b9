"""End to end: a scenario driver, a real Prometheus and a real Alertmanager on loopback.

Rules are the repository's, with every non-zero `for:` shortened to 2s in a
temporary copy; windows and thresholds are untouched. Every seed alert must
reach Alertmanager, the inhibition must hold, critical alerts must reach the
pager webhook with the token from the secret file, and every dashboard panel
query must return data from the same Prometheus.
"""

from __future__ import annotations

import json
import math
import os
import queue
import subprocess
import sys
import threading
import time
import urllib.parse
from pathlib import Path

import pytest

from helpers import fetch, require_tool, wait_until
from monitoring.assets import ROOT, SEED_ALERTS, load_dashboards, panel_targets
from tinywindow_otel.cli.stack import LocalStack

DRIVER = Path(__file__).with_name("scenario_driver.py")
# What Grafana would substitute at a 1s scrape interval (rate interval >= 4 scrapes).
GRAFANA_VARIABLES = {"$__rate_interval": "10s", "$__range": "1m", "$__interval": "1s"}
BUDGET_SECONDS = 180


def prometheus_query(stack: LocalStack, expr: str) -> list[dict]:
    body = json.loads(fetch(f"{stack.prometheus_url}/api/v1/query?" + urllib.parse.urlencode({"query": expr})))
    assert body["status"] == "success", body
    return body["data"]["result"]


def am_alerts(stack: LocalStack) -> list[dict]:
    return json.loads(fetch(f"{stack.alertmanager_url}/api/v2/alerts"))


def rule_health(stack: LocalStack) -> dict[str, str]:
    groups = json.loads(fetch(f"{stack.prometheus_url}/api/v1/rules"))["data"]["groups"]
    return {rule["name"]: rule["health"] for group in groups for rule in group["rules"]}


@pytest.fixture
def driver():
    process = subprocess.Popen([sys.executable, str(DRIVER)], stdin=subprocess.PIPE, stdout=subprocess.PIPE,
                               env=os.environ.copy(), text=True)
    lines: queue.Queue[str] = queue.Queue()
    threading.Thread(target=lambda: [lines.put(line) for line in process.stdout], daemon=True).start()
    try:
        process.port = json.loads(lines.get(timeout=20))["port"]
        yield process
    finally:
        if process.poll() is None:
            process.terminate()
            process.wait(10)


def test_every_seed_alert_reaches_alertmanager_and_every_panel_has_data(driver, toolchain):  # both versions
    require_tool("prometheus")
    require_tool("prometheus-alertmanager")
    started = time.monotonic()
    with LocalStack(f"127.0.0.1:{driver.port}", assets=ROOT, prometheus_port=0, alertmanager_port=0,
                    interval="1s", for_override="2s") as stack:
        # Calm: once the rules have run over a few scrapes, nothing fires.
        wait_until(lambda: prometheus_query(stack, 'count_over_time(up{job="tinywindow"}[1m]) >= 4'),
                   timeout=30, interval=0.2, what="four scrapes of the driver")
        wait_until(lambda: prometheus_query(stack, "tinywindow_otel_cardinality_overflow_total"),
                   timeout=10, interval=0.2, what="the self-metrics scraped")
        health = rule_health(stack)
        assert set(health.values()) == {"ok"}, health
        assert am_alerts(stack) == []
        assert json.loads(fetch(f"{stack.prometheus_url}/api/v1/alerts"))["data"]["alerts"] == []

        driver.stdin.write("breach\n")
        driver.stdin.flush()
        breached = time.monotonic()

        def all_seed_alerts():
            alerts = am_alerts(stack)
            return alerts if set(SEED_ALERTS) <= {a["labels"]["alertname"] for a in alerts} else None

        alerts = wait_until(all_seed_alerts, timeout=60, interval=0.25, what="all seed alerts in Alertmanager")
        time_to_alerts = time.monotonic() - breached
        by_name: dict[str, list[dict]] = {}
        for alert in alerts:
            by_name.setdefault(alert["labels"]["alertname"], []).append(alert)

        instance = f"127.0.0.1:{driver.port}"
        for name, (severity, _, _) in SEED_ALERTS.items():
            for alert in by_name[name]:
                assert alert["labels"]["severity"] == severity
                assert alert["annotations"]["runbook_url"].endswith("docs/runbooks.md#" + name.lower())
        assert {a["labels"]["reason"] for a in by_name["CircuitBreakerTripped"]} == {"daily_loss", "volatility"}
        assert {a["labels"]["mode"] for a in by_name["KillSwitchActivated"]} == {"manual"}
        assert {a["labels"]["symbol"] for a in by_name["LargePositionSize"]} == {"SOL/USDT"}
        assert {a["labels"]["service"] for a in by_name["HighAPIErrorRate"]} == {"binance"}
        assert {a["labels"]["service"] for a in by_name["HighAPILatency"]} == {"claude"}
        assert by_name["DailyLossExceeded"][0]["annotations"]["description"].startswith(
            f"Daily P&L on {instance} is -20.00%")

        # Inhibition: the kill switch silences the trading warnings of the same instance.
        def suppressed():
            current = {a["labels"]["alertname"]: a for a in am_alerts(stack)}
            return all(current[n]["status"]["state"] == "suppressed" and current[n]["status"]["inhibitedBy"]
                       for n in ("LargePositionSize", "HighLeverage"))
        wait_until(suppressed, timeout=10, interval=0.25, what="trading warnings inhibited by the kill switch")
        assert {a["status"]["state"] for a in by_name["DailyLossExceeded"]} == {"active"}

        # Critical alerts reach the pager receiver, with the bearer token from the secret file.
        def paged():
            names = {a["labels"]["alertname"] for path, ok, payload in stack.sink.notifications
                     if path == "/page" and ok for a in payload["alerts"]}
            return {"DailyLossExceeded", "DrawdownExceeded", "KillSwitchActivated", "CircuitBreakerTripped"} <= names
        wait_until(paged, timeout=30, interval=0.25, what="critical alerts delivered to the pager webhook")
        assert all(ok for _, ok, _ in stack.sink.notifications)

        assert set(rule_health(stack).values()) == {"ok"}

        # Every dashboard panel query returns data from this Prometheus.
        empty = []
        for uid, dashboard in load_dashboards().items():
            for panel, target in panel_targets(dashboard):
                expr = target["expr"]
                for variable, value in GRAFANA_VARIABLES.items():
                    expr = expr.replace(variable, value)
                assert "$" not in expr, f"unsubstituted variable in {expr!r}"
                result = prometheus_query(stack, expr)
                values = [float(r["value"][1]) for r in result]
                if not any(math.isfinite(v) for v in values):
                    empty.append(f"{uid} / {panel['title']} / {target['refId']}: {expr}")
        assert not empty, "panel queries without data:\n" + "\n".join(empty)

        # The endpoint going away is noticed too.
        driver.terminate()
        driver.wait(10)
        wait_until(lambda: any(a["labels"]["alertname"] == "MetricsEndpointDown" for a in am_alerts(stack)),
                   timeout=30, interval=0.25, what="MetricsEndpointDown in Alertmanager")

    elapsed = time.monotonic() - started
    print(f"live stack: all seed alerts in Alertmanager {time_to_alerts:.1f}s after the breach; total {elapsed:.1f}s")
    assert elapsed < BUDGET_SECONDS
