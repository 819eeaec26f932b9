"""End to end: a scenario driver behind a scrape proxy, a real Prometheus and a real Alertmanager on loopback.

Rules are the repository's, with every non-zero `for:`/`keep_firing_for:`
shortened to 2s in a temporary copy (windows and thresholds untouched) and
Alertmanager's group waits shortened. Every core alert must reach
Alertmanager; the proxy fails one scrape (HTTP 500) while counters that
existed from the first scrape are on /metrics, and again while the alerts
fire; then the driver restarts (new process, scrapes failing meanwhile) with
its circuit breaker tripped again at once, the counter back at the value it
had. No false page, no missed page, no RESOLVED for the breaker while trading
is halted. Critical alerts must reach the pager receiver with the token from
the secret file, and every dashboard panel query must return data.
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
from monitoring.assets import CORE_DASHBOARDS, ROOT, CORE_ALERTS, load_dashboards, panel_targets
from monitoring.scrape_proxy import ScrapeProxy
from tinywindow_otel.cli.stack import LocalStack

DRIVER = Path(__file__).with_name("scenario_driver.py")
# What Grafana would substitute at a 1s scrape interval (rate interval >= 4 scrapes), "All" for the variables.
GRAFANA_VARIABLES = {"$__rate_interval": "10s", "$__range": "1m", "$__interval": "1s",
                     "$job": ".+", "$instance": ".+", "$symbol": ".+", "$service": ".+"}
BUDGET_SECONDS = 180
# Alerts the counters present from the first scrape must never cause.
NEVER = {"TelemetryMeasurementsDropped", "MetricCardinalityOverflow"}


def prometheus_query(stack: LocalStack, expr: str) -> list[dict]:
    body = json.loads(fetch(f"{stack.prometheus_url}/api/v1/query?" + urllib.parse.urlencode({"query": expr})))
    assert body["status"] == "success", body
    return body["data"]["result"]


def am_alerts(stack: LocalStack) -> list[dict]:
    return [a for a in json.loads(fetch(f"{stack.alertmanager_url}/api/v2/alerts"))
            if a["labels"]["alertname"] != "Watchdog"]


def rule_health(stack: LocalStack) -> dict[str, str]:
    groups = json.loads(fetch(f"{stack.prometheus_url}/api/v1/rules"))["data"]["groups"]
    return {rule["name"]: rule["health"] for group in groups for rule in group["rules"]}


def notified(stack: LocalStack, status: str | None = None) -> list[tuple[str, dict]]:
    """(receiver path, alert) for every alert in every notification the sink got."""
    return [(path, alert) for path, ok, payload in list(stack.sink.notifications) for alert in payload.get("alerts", [])
            if status is None or alert["status"] == status]


class Driver:
    """The scenario driver as a child process; ``start`` again to restart it."""

    def __init__(self, proxy: ScrapeProxy) -> None:
        self.proxy = proxy
        self.process: subprocess.Popen | None = None

    def start(self, *args: str) -> None:
        process = subprocess.Popen([sys.executable, str(DRIVER), *args], stdin=subprocess.PIPE,
                                   stdout=subprocess.PIPE, env=os.environ.copy(), text=True)
        lines: queue.Queue[str] = queue.Queue()
        threading.Thread(target=lambda: [lines.put(line) for line in process.stdout], daemon=True).start()
        self.process = process
        port = json.loads(lines.get(timeout=20))["port"]
        self.proxy.backend = f"http://127.0.0.1:{port}"

    def send(self, command: str) -> None:
        self.process.stdin.write(command + "\n")
        self.process.stdin.flush()

    def stop(self) -> None:
        self.proxy.backend = None  # scrapes fail while the process is gone, as with a real restart
        if self.process is not None and self.process.poll() is None:
            self.process.terminate()
            self.process.wait(10)


@pytest.fixture
def proxy():
    proxy = ScrapeProxy().start()
    yield proxy
    proxy.stop()


@pytest.fixture
def driver(proxy):
    driver = Driver(proxy)
    driver.start()
    yield driver
    driver.stop()


def fail_one_scrape(stack: LocalStack, proxy: ScrapeProxy) -> None:
    before = proxy.fail_next(1)
    wait_until(lambda: proxy.failed > before, timeout=10, interval=0.1, what="the injected scrape failure")
    wait_until(lambda: prometheus_query(stack, 'min_over_time(up{job="tinywindow"}[5s]) == 0'),
               timeout=10, interval=0.2, what="Prometheus recording the failed scrape")
    wait_until(lambda: prometheus_query(stack, 'up{job="tinywindow"} == 1'), timeout=10, interval=0.2,
               what="the next scrape succeeding")


def test_every_core_alert_reaches_alertmanager_through_failed_scrapes_and_a_restart(driver, proxy, toolchain):  # both versions
    require_tool("prometheus")
    require_tool("prometheus-alertmanager")
    started = time.monotonic()
    with LocalStack(proxy.target, assets=ROOT, prometheus_port=0, alertmanager_port=0,
                    interval="1s", for_override="2s") as stack:
        # Calm: once the rules have run over a few scrapes, nothing fires but the Watchdog.
        wait_until(lambda: prometheus_query(stack, 'count_over_time(up{job="tinywindow"}[1m]) >= 4'),
                   timeout=30, interval=0.2, what="four scrapes of the driver")
        wait_until(lambda: prometheus_query(stack, "tinywindow_otel_cardinality_overflow_total"),
                   timeout=10, interval=0.2, what="the self-metrics scraped")
        health = rule_health(stack)
        assert set(health.values()) == {"ok"}, health
        wait_until(lambda: any(path == "/deadmans-switch" for path, _ in notified(stack)), timeout=20,
                   interval=0.25, what="the Watchdog at the dead-man's switch")
        # One failed scrape (HTTP 500): counters that were there all along page nobody.
        fail_one_scrape(stack, proxy)
        assert am_alerts(stack) == []

        driver.send("breach")
        breached = time.monotonic()

        def all_core_alerts():
            alerts = am_alerts(stack)
            return alerts if set(CORE_ALERTS) <= {a["labels"]["alertname"] for a in alerts} else None

        alerts = wait_until(all_core_alerts, timeout=60, interval=0.25, what="all core alerts in Alertmanager")
        time_to_alerts = time.monotonic() - breached
        by_name: dict[str, list[dict]] = {}
        for alert in alerts:
            by_name.setdefault(alert["labels"]["alertname"], []).append(alert)

        instance = proxy.target
        for name, (severity, _, _) in CORE_ALERTS.items():
            for alert in by_name[name]:
                assert alert["labels"]["severity"] == severity
                assert alert["annotations"]["runbook_url"].endswith("docs/runbooks.md#" + name.lower())
        assert {a["labels"]["reason"] for a in by_name["CircuitBreakerTripped"]} == {"daily_loss", "volatility"}
        assert {a["labels"]["mode"] for a in by_name["KillSwitchActivated"]} == {"manual"}
        assert {a["labels"]["symbol"] for a in by_name["LargePositionSize"]} == {"SOL/USDT"}
        assert {a["labels"]["service"] for a in by_name["HighAPIErrorRate"]} == {"binance"}
        assert {a["labels"]["service"] for a in by_name["HighAPILatency"]} == {"claude"}
        assert by_name["DailyLossExceeded"][0]["annotations"]["description"].startswith(
            f"Daily P&L on {instance} reached -20.00%")

        # Inhibition: the kill switch silences HighLeverage of the same instance, not LargePositionSize.
        def inhibited():
            current = {a["labels"]["alertname"]: a for a in am_alerts(stack)}
            leverage, large = current["HighLeverage"]["status"], current["LargePositionSize"]["status"]
            return leverage["state"] == "suppressed" and leverage["inhibitedBy"] and large["state"] == "active"
        wait_until(inhibited, timeout=10, interval=0.25, what="HighLeverage inhibited by the kill switch")

        # Critical alerts reach the pager receiver, with the bearer token from the secret file.
        def paged():
            names = {a["labels"]["alertname"] for path, a in notified(stack, "firing") if path == "/trading-pager"}
            return {"DailyLossExceeded", "DrawdownExceeded", "KillSwitchActivated", "CircuitBreakerTripped"} <= names
        wait_until(paged, timeout=30, interval=0.25, what="critical alerts delivered to the pager receiver")
        assert all(ok for _, ok, _ in stack.sink.notifications)

        # A failed scrape while everything fires: nothing resolves.
        fail_one_scrape(stack, proxy)
        assert set(CORE_ALERTS) <= {a["labels"]["alertname"] for a in am_alerts(stack)}
        assert set(rule_health(stack).values()) == {"ok"}

        # Every panel of the trading, risk and system dashboards returns data from this Prometheus.
        empty = []
        for uid, dashboard in load_dashboards().items():
            if uid not in CORE_DASHBOARDS:
                continue  # execution and agent panels need order data: tests/test_execution_dashboards.py
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

        # Restart: scrapes fail while the process is gone; the new process trips
        # the breaker again at once (its counter is back at 1, the old value).
        driver.stop()
        wait_until(lambda: prometheus_query(stack, 'up{job="tinywindow"} == 0'), timeout=10, interval=0.2,
                   what="the restart seen as a failed scrape")
        driver.start("--retrip")
        wait_until(lambda: prometheus_query(stack, 'up{job="tinywindow"} == 1'), timeout=10, interval=0.2,
                   what="the restarted driver scraped")
        # Halted before, halted after: the breaker alert stays active and never resolved.
        settled = time.monotonic() + 5
        wait_until(lambda: time.monotonic() > settled and any(
            a["labels"]["alertname"] == "CircuitBreakerTripped" and a["labels"].get("reason") == "volatility"
            and a["status"]["state"] == "active" for a in am_alerts(stack)),
            timeout=20, interval=0.25, what="CircuitBreakerTripped (volatility) active after the restart")
        resolved = [(p, a["labels"]) for p, a in notified(stack, "resolved")
                    if a["labels"]["alertname"] == "CircuitBreakerTripped" and a["labels"].get("reason") == "volatility"]
        assert resolved == [], f"RESOLVED sent while the breaker was open: {resolved}"
        false_pages = [(p, a["labels"]) for p, a in notified(stack) if a["labels"]["alertname"] in NEVER]
        assert false_pages == [], f"pages from counters present since the first scrape: {false_pages}"

        # The endpoint going away is noticed too.
        driver.stop()
        wait_until(lambda: any(a["labels"]["alertname"] == "MetricsEndpointDown" for a in am_alerts(stack)),
                   timeout=30, interval=0.25, what="MetricsEndpointDown in Alertmanager")

    elapsed = time.monotonic() - started
    print(f"live stack: all core alerts in Alertmanager {time_to_alerts:.1f}s after the breach; total {elapsed:.1f}s")
    assert elapsed < BUDGET_SECONDS
