"""The execution rule file on a real Prometheus + Alertmanager: loads healthy, quiet on a calm workload,
and a silent market-data stream pages end to end. On both toolchains (Prometheus 2.42 + Alertmanager 0.25,
Prometheus 3.x + Alertmanager 0.35)."""

from __future__ import annotations

import json
import shutil
import signal
import threading
import urllib.parse

import pytest
from helpers import fetch, wait_until

from monitoring.assets import EXECUTION_RULES, ROOT, alerts_by_name
from monitoring.toolchain import Toolchain, prometheus_version
from tinywindow_otel import MetricsServer
from tinywindow_otel.cli.demo_execution import ExecutionSimulation
from tinywindow_otel.cli.stack import LocalStack
from tinywindow_otel.exchange import feed

EXECUTION_ALERTS = set(alerts_by_name(EXECUTION_RULES))


def query(stack: LocalStack, expr: str) -> list[dict]:
    body = json.loads(fetch(f"{stack.prometheus_url}/api/v1/query?" + urllib.parse.urlencode({"query": expr})))
    assert body["status"] == "success", body
    return body["data"]["result"]


def execution_rules(stack: LocalStack) -> dict[str, str]:
    groups = json.loads(fetch(f"{stack.prometheus_url}/api/v1/rules"))["data"]["groups"]
    return {rule["name"]: rule["health"] for group in groups if group["file"].endswith(EXECUTION_RULES.name)
            for rule in group["rules"]}


@pytest.fixture
def calm_workload():
    """The demo's execution side, recorded in this process and served on a free port."""
    stop = threading.Event()
    simulation = ExecutionSimulation(seed=3, llm_call_probability=0.2)
    thread = threading.Thread(target=lambda: [simulation.tick() for _ in iter(lambda: stop.wait(0.05), True)],
                              daemon=True)
    with MetricsServer(host="127.0.0.1", port=0) as server:
        thread.start()
        try:
            yield server
        finally:
            stop.set()
            thread.join(10)


def assert_runs(stack: LocalStack, toolchain: Toolchain) -> None:
    """The stack runs this toolchain's binaries (first on PATH), not whichever else is installed."""
    running = json.loads(fetch(f"{stack.prometheus_url}/api/v1/status/buildinfo"))["data"]["version"]
    assert running == prometheus_version(toolchain.prometheus), (toolchain.name, running)
    amtool = json.loads(fetch(f"{stack.alertmanager_url}/api/v2/status"))["versionInfo"]["version"]
    assert amtool.split(".")[:2] == {"debian": ["0", "25"], "current": ["0", "35"]}[toolchain.name], amtool


def test_execution_rules_on_a_live_stack(calm_workload, toolchain):
    with LocalStack(f"127.0.0.1:{calm_workload.port}", assets=ROOT, prometheus_port=0, alertmanager_port=0,
                    interval="1s") as stack:
        assert_runs(stack, toolchain)
        # The stack starts with the main rule file; add this one beside it and reload, as a deployment would.
        shutil.copy(EXECUTION_RULES, stack.workdir / "alerts" / EXECUTION_RULES.name)
        stack._processes["prometheus"].send_signal(signal.SIGHUP)
        health = wait_until(lambda: (lambda h: h if set(h) >= EXECUTION_ALERTS and set(h.values()) == {"ok"}
                                     and query(stack, "tinywindow:llm_daily_cost_budget_usd") else None)(
                                execution_rules(stack)),
                            timeout=60, interval=0.5, what="the execution rules loaded and evaluated")
        assert set(health) == EXECUTION_ALERTS | {"tinywindow:llm_daily_cost_budget_usd"}
        assert float(query(stack, "tinywindow:llm_daily_cost_budget_usd")[0]["value"][1]) == 50.0

        # Calm: every series the rules read is there, and nothing fires.
        wait_until(lambda: query(stack, 'count_over_time(tinywindow_exchange_feed_age_seconds[1m]) >= 5'),
                   timeout=30, interval=0.5, what="five scrapes of the workload")
        for metric in ("tinywindow_exchange_rate_limit_used_ratio", "tinywindow_orders_total",
                       "tinywindow_slippage_bps_bucket", "tinywindow_llm_cost_usd_total",
                       "tinywindow_agent_brier_score"):
            assert query(stack, metric), metric
        alerts = json.loads(fetch(f"{stack.prometheus_url}/api/v1/alerts"))["data"]["alerts"]
        assert not [a for a in alerts if a["labels"]["alertname"] in EXECUTION_ALERTS], alerts

        # A stream that stops delivering pages: critical, with its venue and stream.
        silent = feed("kraken", "trades")
        silent.set_age(120.0)  # last message two minutes ago

        def stale_alert():
            alerts = json.loads(fetch(f"{stack.alertmanager_url}/api/v2/alerts"))
            return [a for a in alerts if a["labels"]["alertname"] == "ExchangeFeedStale"]

        [alert] = wait_until(stale_alert, timeout=60, interval=0.5, what="ExchangeFeedStale in Alertmanager")
        assert alert["labels"]["severity"] == "critical"
        assert (alert["labels"]["venue"], alert["labels"]["stream"]) == ("kraken", "trades")
        assert alert["annotations"]["runbook_url"].endswith("docs/runbooks.md#exchangefeedstale")
