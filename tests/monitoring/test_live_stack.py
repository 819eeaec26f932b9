"""End to end: a scenario driver behind a scrape proxy, a real Prometheus and a real Alertmanager on loopback.

Rules are the repository's, with every non-zero `for:`/`keep_firing_for:`
shortened to 2s in a temporary copy (windows and thresholds untouched) and
Alertmanager's group waits shortened. Every core alert must reach
Alertmanager; the proxy fails one scrape (HTTP 500) while counters that are
above zero since the first scrape are on /metrics (old breaker, kill-switch and
large-trade events, the SDK self-metrics), and again while the alerts fire;
then the driver restarts (new process, scrapes failing meanwhile) with its
circuit breaker tripped again at once, the counters back at the values they had:
one reason stays open (the alert must not resolve), one old reason that never
paged is reset at once (only the restart branch sees it: it must page now).
No false page, no missed page, no RESOLVED for the breaker while trading is
halted. After each failure the test waits until every rule group has been
evaluated past the failure plus the longest `for:` plus one interval, then reads
Prometheus' ALERTS series (every pending or firing state of every evaluation)
and each alert's activeAt. Critical alerts must reach the pager receiver with
the token from the secret file, and every dashboard panel query must return data.

The first driver runs without runtime metrics, so it has no
process_start_time_seconds: it stands for a process whose old events happened
long ago (with a start time younger than 2 minutes every count is rightly new).
The restarted driver has it, so the rules' restart branch is live there.
"""

from __future__ import annotations

import json
import math
import os
import queue
import re
import subprocess
import sys
import threading
import time
import urllib.parse
from datetime import datetime
from pathlib import Path

import pytest

from helpers import fetch, require_tool, wait_until
from monitoring.assets import CORE_ALERTS, CORE_DASHBOARDS, ROOT
from monitoring.panels import panels_without_data
from monitoring.scrape_proxy import ScrapeProxy
from tinywindow_otel.cli.stack import LocalStack

DRIVER = Path(__file__).with_name("scenario_driver.py")
BUDGET_SECONDS = 180
# Alerts the counters present from the first scrape must never cause.
NEVER = {"TelemetryMeasurementsDropped", "MetricCardinalityOverflow"}
# The events the first driver had before its first scrape (--tripped-before): alert, label, value.
OLD_EVENTS = {("CircuitBreakerTripped", "reason", "api_errors"), ("KillSwitchActivated", "mode", "automatic"),
              ("LargePositionSize", "symbol", "ETH/USDT")}


def prometheus_query(stack: LocalStack, expr: str) -> list[dict]:
    body = json.loads(fetch(f"{stack.prometheus_url}/api/v1/query?" + urllib.parse.urlencode({"query": expr})))
    assert body["status"] == "success", body
    return body["data"]["result"]


def am_alerts(stack: LocalStack) -> list[dict]:
    return [a for a in json.loads(fetch(f"{stack.alertmanager_url}/api/v2/alerts"))
            if a["labels"]["alertname"] != "Watchdog"]


def old_event(labels: dict[str, str]) -> bool:
    return any(labels["alertname"] == name and labels.get(label) == value for name, label, value in OLD_EVENTS)


def rule_groups(stack: LocalStack) -> list[dict]:
    return json.loads(fetch(f"{stack.prometheus_url}/api/v1/rules"))["data"]["groups"]


def rule_health(stack: LocalStack) -> dict[str, str]:
    return {rule["name"]: rule["health"] for group in rule_groups(stack) for rule in group["rules"]}


def prometheus_alerts(stack: LocalStack) -> dict[frozenset, dict]:
    """Pending and firing alerts in Prometheus now, by label set (the Watchdog left out)."""
    alerts = json.loads(fetch(f"{stack.prometheus_url}/api/v1/alerts"))["data"]["alerts"]
    return {frozenset(a["labels"].items()): a for a in alerts if a["labels"]["alertname"] != "Watchdog"}


def epoch(rfc3339: str) -> float:
    """Seconds since the epoch of a time as Prometheus' API writes it (Go RFC 3339, nanoseconds)."""
    match = re.fullmatch(r"(\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d)(\.\d+)?(Z|[+-]\d\d:\d\d)", rfc3339)
    assert match, rfc3339
    zone = "+00:00" if match[3] == "Z" else match[3]
    return datetime.fromisoformat(match[1] + zone).timestamp() + float(match[2] or 0)


def wait_for_evaluations_after(stack: LocalStack, moment: float) -> float:
    """Wait until every rule group has been evaluated after ``moment`` + the longest `for:` + one interval.

    By then any alert a fault at ``moment`` could cause has been pending and,
    past its `for:`, firing in at least one evaluation. Returns that deadline.
    """
    groups = rule_groups(stack)
    longest_for = max(rule.get("duration", 0) for group in groups for rule in group["rules"])
    deadline = moment + longest_for + max(group["interval"] for group in groups)
    wait_until(lambda: all(epoch(group["lastEvaluation"]) > deadline for group in rule_groups(stack)),
               timeout=deadline - time.time() + 20, interval=0.2,
               what=f"every rule group evaluated {longest_for}s + one interval after the fault")
    return deadline


def alert_states_since(stack: LocalStack, moment: float) -> list[dict]:
    """Label sets (with alertstate) of every alert pending or firing at any evaluation since ``moment``."""
    window = math.ceil(time.time() - moment) + 1
    return [r["metric"] for r in prometheus_query(stack, f'count_over_time(ALERTS{{alertname!="Watchdog"}}[{window}s])')]


def notified(stack: LocalStack, status: str | None = None) -> list[tuple[str, dict]]:
    """(receiver path, alert) for every alert in every notification the sink got."""
    return [(path, alert) for path, ok, payload in list(stack.sink.notifications) for alert in payload.get("alerts", [])
            if status is None or alert["status"] == status]


class Driver:
    """The scenario driver as a child process; ``start`` again to restart it."""

    def __init__(self, proxy: ScrapeProxy) -> None:
        self.proxy = proxy
        self.process: subprocess.Popen | None = None

    def start(self, *args: str, env: dict[str, str] | None = None) -> None:
        process = subprocess.Popen([sys.executable, str(DRIVER), *args], stdin=subprocess.PIPE,
                                   stdout=subprocess.PIPE, env={**os.environ, **(env or {})}, text=True)
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
    driver.start("--tripped-before", env={"TINYWINDOW_OTEL_RUNTIME_METRICS": "false"})
    yield driver
    driver.stop()


def fail_one_scrape(stack: LocalStack, proxy: ScrapeProxy) -> float:
    """Fail the next scrape; returns a time by which it had failed."""
    before = proxy.fail_next(1)
    wait_until(lambda: proxy.failed > before, timeout=10, interval=0.1, what="the injected scrape failure")
    failed_at = time.time()
    wait_until(lambda: prometheus_query(stack, 'min_over_time(up{job="tinywindow"}[5s]) == 0'),
               timeout=10, interval=0.2, what="Prometheus recording the failed scrape")
    wait_until(lambda: prometheus_query(stack, 'up{job="tinywindow"} == 1'), timeout=10, interval=0.2,
               what="the next scrape succeeding")
    return failed_at


def test_every_core_alert_reaches_alertmanager_through_failed_scrapes_and_a_restart(driver, proxy, toolchain):  # both versions
    require_tool("prometheus")
    require_tool("prometheus-alertmanager")
    started = time.monotonic()
    with LocalStack(proxy.target, assets=ROOT, prometheus_port=0, alertmanager_port=0,
                    interval="1s", for_override="2s") as stack:
        # Calm: once the rules have run over a few scrapes, nothing fires but the Watchdog.
        wait_until(lambda: prometheus_query(stack, 'count_over_time(up{job="tinywindow"}[1m]) >= 4'),
                   timeout=30, interval=0.2, what="four scrapes of the driver")
        calm_from = time.time()
        wait_until(lambda: prometheus_query(stack, "tinywindow_otel_cardinality_overflow_total"),
                   timeout=10, interval=0.2, what="the self-metrics scraped")
        health = rule_health(stack)
        assert set(health.values()) == {"ok"}, health
        old_counts = prometheus_query(stack, 'tinywindow_circuit_breaker_trips_total > 0 or tinywindow_kill_switch_activations_total > 0'
                                             ' or tinywindow_trade_amount_usd_count{symbol="ETH/USDT"} > 0')
        assert len(old_counts) == 3, old_counts
        assert prometheus_query(stack, 'process_start_time_seconds{job="tinywindow"}') == []
        wait_until(lambda: any(path == "/deadmans-switch" for path, _ in notified(stack)), timeout=20,
                   interval=0.25, what="the Watchdog at the dead-man's switch")
        # One failed scrape (HTTP 500): counters that were above zero all along page nobody.
        failed_at = fail_one_scrape(stack, proxy)
        wait_for_evaluations_after(stack, failed_at)
        states = alert_states_since(stack, failed_at - 1)
        assert [m for m in states if m["alertstate"] == "firing"] == [], f"fired after one failed scrape: {states}"
        # One evaluation may see up == 0; nothing else may even start to pend.
        assert [m for m in states if m["alertname"] != "MetricsEndpointDown"] == [], f"pending after one failed scrape: {states}"
        assert am_alerts(stack) == []
        # (Before the first scrape, absent(up) may fire with the shortened for: 2s: started before calm.)
        paged = [a["labels"] for _, a in notified(stack)
                 if a["labels"]["alertname"] != "Watchdog" and epoch(a["startsAt"]) >= calm_from]
        assert paged == [], f"notified after one failed scrape: {paged}"

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

        # A failed scrape while everything fires: nothing resolves (an alert that
        # resolved and came back would have a new activeAt).
        firing = {key: a for key, a in prometheus_alerts(stack).items()
                  if a["state"] == "firing" and a["labels"]["alertname"] in CORE_ALERTS}
        assert set(CORE_ALERTS) == {a["labels"]["alertname"] for a in firing.values()}
        failed_at = fail_one_scrape(stack, proxy)
        wait_for_evaluations_after(stack, failed_at)
        now = prometheus_alerts(stack)
        lost = {a["labels"]["alertname"]: a["labels"] for key, a in firing.items()
                if key not in now or now[key]["state"] != "firing" or now[key]["activeAt"] != a["activeAt"]}
        assert lost == {}, f"resolved (or restarted) by one failed scrape: {lost}"
        assert set(CORE_ALERTS) <= {a["labels"]["alertname"] for a in am_alerts(stack)}
        assert set(rule_health(stack).values()) == {"ok"}

        # Every panel of the trading, risk and system dashboards returns data from this Prometheus
        # (the execution and agents dashboards: test_execution_dashboards_live.py).
        empty = panels_without_data(lambda expr: prometheus_query(stack, expr), CORE_DASHBOARDS)
        assert not empty, "panel queries without data:\n" + "\n".join(empty)

        # Restart: scrapes fail while the process is gone; the new process trips
        # the breaker again at once: volatility stays open (its counter back at 1, the
        # old value), api_errors is reset at once (back at 1, the first process's old
        # trip, which never paged).
        def breaker_alerts(reason: str) -> list[dict]:
            return [a for a in prometheus_alerts(stack).values()
                    if a["labels"]["alertname"] == "CircuitBreakerTripped" and a["labels"]["reason"] == reason]
        (breaker,) = breaker_alerts("volatility")
        assert breaker_alerts("api_errors") == []
        restarted_at = time.time()
        driver.stop()
        wait_until(lambda: prometheus_query(stack, 'up{job="tinywindow"} == 0'), timeout=10, interval=0.2,
                   what="the restart seen as a failed scrape")
        driver.start("--retrip")
        wait_until(lambda: prometheus_query(stack, 'up{job="tinywindow"} == 1'), timeout=10, interval=0.2,
                   what="the restarted driver scraped")
        assert prometheus_query(stack, 'time() - process_start_time_seconds{job="tinywindow"} < 120'), "no process start"
        # Halted before, halted after: the breaker alert stays firing, never resolved in between.
        wait_for_evaluations_after(stack, time.time())
        after = [a for a in prometheus_alerts(stack).values()
                 if a["labels"]["alertname"] == "CircuitBreakerTripped" and a["labels"]["reason"] == "volatility"]
        assert [(a["state"], a["activeAt"]) for a in after] == [("firing", breaker["activeAt"])], after
        wait_until(lambda: any(
            a["labels"]["alertname"] == "CircuitBreakerTripped" and a["labels"].get("reason") == "volatility"
            and a["status"]["state"] == "active" for a in am_alerts(stack)),
            timeout=20, interval=0.25, what="CircuitBreakerTripped (volatility) active after the restart")
        resolved = [(p, a["labels"]) for p, a in notified(stack, "resolved")
                    if a["labels"]["alertname"] == "CircuitBreakerTripped" and a["labels"].get("reason") == "volatility"]
        assert resolved == [], f"RESOLVED sent while the breaker was open: {resolved}"
        # The api_errors re-trip: no state gauge (reset at once), no increase (1 before and
        # after), no series born non-zero (the restart's failed scrapes lower the scrape
        # and the series counts alike); only the young process start says it is new. A new page.
        wait_until(lambda: any(
            a["labels"]["alertname"] == "CircuitBreakerTripped" and a["labels"].get("reason") == "api_errors"
            and a["status"]["state"] == "active" for a in am_alerts(stack)),
            timeout=20, interval=0.25, what="CircuitBreakerTripped (api_errors) paged for the re-trip after the restart")
        assert [epoch(a["activeAt"]) >= restarted_at for a in breaker_alerts("api_errors")] == [True]

        def retrip_page(alert: dict) -> bool:
            return alert["labels"].get("reason") == "api_errors" and epoch(alert["startsAt"]) >= restarted_at
        # The old kill-switch activation and $25K trade are not in the restarted process: no page.
        false_pages = [(p, a["labels"]) for p, a in notified(stack)
                       if a["labels"]["alertname"] in NEVER or (old_event(a["labels"]) and not retrip_page(a))]
        assert false_pages == [], f"pages from counters present since the first scrape: {false_pages}"

        # The endpoint going away is noticed too.
        driver.stop()
        wait_until(lambda: any(a["labels"]["alertname"] == "MetricsEndpointDown" for a in am_alerts(stack)),
                   timeout=30, interval=0.25, what="MetricsEndpointDown in Alertmanager")

    elapsed = time.monotonic() - started
    print(f"live stack: all core alerts in Alertmanager {time_to_alerts:.1f}s after the breach; total {elapsed:.1f}s")
    assert elapsed < BUDGET_SECONDS
