"""The deployment recipes' timing and the scrape-only recipe on a live Prometheus.

Every range selector of the rules and dashboards holds enough samples at the
documented sample interval (the scrape interval, compose's push interval, the
SDK's default push interval, all 15 s):

* rate-type functions (rate, increase, ...) need 4 samples: fewer and one late
  sample swings the result, and Grafana's ``$__rate_interval`` is 4 intervals;
* ``*_over_time`` over a gauge (the loss, drawdown and leverage alerts'
  ``min/max_over_time(...[45s])``) needs 3: with one scrape or push missed the
  gap between two samples is 2 intervals, so a window of 3 still holds a sample
  (with an interval of jitter to spare) and a pending alert keeps its ``for:``.
  At OTel's default 60 s push a 45 s window is empty a quarter of the time, and
  those alerts never fire.

The longest interval these windows allow is what the SDK warns above
(``RULES_MAX_EXPORT_INTERVAL_MS``), and its default push interval.
"""

from __future__ import annotations

import logging
import re
from pathlib import Path

import pytest
import yaml

from helpers import free_port, wait_until
from monitoring.assets import (
    DASHBOARDS, EXECUTION_RULES, PROMETHEUS, ROOT, RULES, load_dashboards, load_rules, panel_targets,
)
from monitoring.deploy import Processes, Prometheus, Workload, otlp_env, repo_prometheus_config
from tinywindow_otel.cli.stack import shorten_for
from tinywindow_otel.config import DEFAULT_EXPORT_INTERVAL_MS, RULES_MAX_EXPORT_INTERVAL_MS, Settings

UNITS = {"ms": 0.001, "s": 1, "m": 60, "h": 3600, "d": 86400, "w": 604800}
# The range of rate(x[5m]), max_over_time(x{a="b"}[45s]), ...: the selector holds no ( ) [ ].
SELECTOR = r"\s*\(\s*[^\[\]()]*\[([^\]:]+)(?::[^\]]*)?\]"
RATE = re.compile(r"\b(?:rate|irate|increase|delta|idelta|deriv)" + SELECTOR)
OVER_TIME = re.compile(r"\b[a-z]+_over_time" + SELECTOR)
MIN_RATE_SAMPLES = 4
MIN_OVER_TIME_SAMPLES = 3
DRIVER = Path(__file__).with_name("scenario_driver.py")


def seconds(duration: str) -> float:
    parts = re.findall(r"(\d+(?:\.\d+)?)(ms|s|m|h|d|w)", duration)
    assert parts and "".join(n + u for n, u in parts) == duration, f"not a duration: {duration!r}"
    return sum(float(n) * UNITS[u] for n, u in parts)


def scrape_interval() -> float:
    return seconds(yaml.safe_load(PROMETHEUS.read_text())["global"]["scrape_interval"])


def compose_push_interval() -> float:
    services = yaml.safe_load((ROOT / "compose.yaml").read_text())["services"]
    return int(services["app-push"]["environment"]["OTEL_METRIC_EXPORT_INTERVAL"]) / 1000


def sample_interval() -> float:
    """The slowest documented way a sample arrives: scrape, compose's pushing app, the SDK's default push."""
    return max(scrape_interval(), compose_push_interval(), DEFAULT_EXPORT_INTERVAL_MS / 1000)


def windows(expr: str) -> list[tuple[str, int]]:
    """(window, samples it must hold) of every range selector in ``expr`` that needs samples."""
    return ([(w, MIN_RATE_SAMPLES) for w in RATE.findall(expr)]
            + [(w, MIN_OVER_TIME_SAMPLES) for w in OVER_TIME.findall(expr)])


def rule_exprs() -> dict[str, str]:
    return {rule.get("alert") or rule["record"]: rule["expr"] for path in (RULES, EXECUTION_RULES)
            for rule in load_rules(path)}


def test_every_sample_interval_is_15s():
    assert scrape_interval() == compose_push_interval() == DEFAULT_EXPORT_INTERVAL_MS / 1000 == 15


def test_the_window_checks_see_gauge_and_rate_windows():
    # The patterns find what they must (else the tests below would pass on nothing).
    exprs = rule_exprs()
    assert windows(exprs["DailyLossExceeded"]) == [("45s", MIN_OVER_TIME_SAMPLES)]
    assert ("45s", MIN_OVER_TIME_SAMPLES) in windows(exprs["HighLeverage"])
    assert ("5m", MIN_RATE_SAMPLES) in windows(exprs["HighAPIErrorRate"])
    assert windows(exprs["ExchangeFeedStale"]) == [("45s", MIN_OVER_TIME_SAMPLES)]
    assert sum(len(windows(e)) for e in exprs.values()) >= 40


def test_rule_windows_hold_enough_samples():
    interval = sample_interval()
    short = [f"{name}: [{window}] < {need} x {interval:g}s" for name, expr in rule_exprs().items()
             for window, need in windows(expr) if seconds(window) < need * interval]
    assert not short, short


def test_dashboard_windows_hold_enough_samples():
    interval = sample_interval()
    datasource = yaml.safe_load((DASHBOARDS / "provisioning" / "datasources" / "prometheus.yml").read_text())
    # Grafana's $__rate_interval is at least 4 x timeInterval.
    assert seconds(datasource["datasources"][0]["jsonData"]["timeInterval"]) >= interval
    short = []
    for uid, dashboard in load_dashboards().items():
        for panel, target in panel_targets(dashboard):
            for window, need in windows(target["expr"]):
                if window.startswith("$"):
                    assert window in ("$__rate_interval", "$__range"), f"{uid}/{panel['title']}: [{window}]"
                elif seconds(window) < need * interval:
                    short.append(f"{uid}/{panel['title']}: [{window}] < {need} x {interval:g}s")
    assert not short, short


def longest_supported_interval() -> float:
    """The longest sample interval at which every literal window of the rules and dashboards holds enough samples."""
    exprs = list(rule_exprs().values()) + [target["expr"] for dashboard in load_dashboards().values()
                                           for _, target in panel_targets(dashboard)]
    return min(seconds(window) / need for expr in exprs for window, need in windows(expr)
               if not window.startswith("$"))


def test_the_sdk_default_and_warning_threshold_are_what_the_rules_allow():
    assert RULES_MAX_EXPORT_INTERVAL_MS / 1000 == longest_supported_interval() == 15
    assert Settings.from_env({}).export_interval_millis == DEFAULT_EXPORT_INTERVAL_MS == RULES_MAX_EXPORT_INTERVAL_MS
    # The environment variable and configure() still win over the default.
    assert Settings.from_env({"OTEL_METRIC_EXPORT_INTERVAL": "5000"}).export_interval_millis == 5000
    assert Settings.from_env({}, export_interval_millis=1000).export_interval_millis == 1000


@pytest.mark.parametrize("setting", ["env", "argument"])
def test_a_push_interval_longer_than_the_rules_allow_is_honoured_with_a_warning(caplog, setting):
    env = {"OTEL_METRICS_EXPORTER": "otlp"}
    overrides = {}
    if setting == "env":
        env["OTEL_METRIC_EXPORT_INTERVAL"] = "60000"
    else:
        overrides["export_interval_millis"] = 60_000
    with caplog.at_level(logging.WARNING, logger="tinywindow_otel"):
        settings = Settings.from_env(env, **overrides)
    assert settings.export_interval_millis == 60_000
    [record] = [r for r in caplog.records if "shipped alert rules" in r.getMessage()]
    name = "OTEL_METRIC_EXPORT_INTERVAL" if setting == "env" else "export_interval_millis"
    assert record.levelno == logging.WARNING and f"{name}=60000 ms" in record.getMessage()
    assert "15000 ms" in record.getMessage()


def test_no_warning_at_the_supported_interval_or_without_otlp(caplog):
    with caplog.at_level(logging.WARNING, logger="tinywindow_otel"):
        Settings.from_env({"OTEL_METRICS_EXPORTER": "otlp"})
        Settings.from_env({"OTEL_METRICS_EXPORTER": "otlp", "OTEL_METRIC_EXPORT_INTERVAL": "15000"})
        Settings.from_env({"OTEL_METRICS_EXPORTER": "prometheus", "OTEL_METRIC_EXPORT_INTERVAL": "60000"})
    assert not [r for r in caplog.records if "shipped alert rules" in r.getMessage()]


def alertmanager_config(directory: Path) -> Path:
    # Only a receiver of the alerts: the recipe here is about what Prometheus scrapes and evaluates.
    path = directory / "alertmanager.yml"
    path.write_text(yaml.safe_dump({"route": {"receiver": "null"}, "receivers": [{"name": "null"}]}))
    return path


def test_the_scrape_only_recipe_has_no_down_target_and_fires_nothing_without_a_collector(tmp_path, toolchain):
    """compose without the collector profile: prometheus/prometheus.yml as it is (the collector, found
    by DNS, is simply not there), the app scraped, every rule file loaded (non-zero `for:` shortened to 1s)."""
    rules = {f"alerts/{path.name}": shorten_for(path.read_text(), "1s") for path in (ROOT / "alerts").glob("*.rules.yml")}
    with Processes(tmp_path) as procs:
        app = Workload(procs, "app", otlp_env("http://127.0.0.1:1/unused", exporters="prometheus"), DRIVER)
        alertmanager_port, prometheus_port = free_port(), free_port()
        alertmanager = procs.start("alertmanager", [
            toolchain.alertmanager, f"--config.file={alertmanager_config(tmp_path)}",
            f"--storage.path={tmp_path / 'alertmanager-data'}", f"--web.listen-address=127.0.0.1:{alertmanager_port}",
            "--cluster.listen-address="])
        procs.wait_http("alertmanager", alertmanager, f"http://127.0.0.1:{alertmanager_port}/-/ready")
        config = repo_prometheus_config({"app:8000": f"127.0.0.1:{app.port}",
                                         "alertmanager:9093": f"127.0.0.1:{alertmanager_port}",
                                         "localhost:9090": f"127.0.0.1:{prometheus_port}"})
        prometheus = Prometheus(procs, toolchain.prometheus, "prometheus", config, port=prometheus_port, files=rules)

        # Six evaluations of every group with the app scraped: an alert on a missing collector
        # (absent(), up == 0; `for:` 1s) is pending after one and firing after two.
        wait_until(lambda: prometheus.query('count_over_time(up{job="tinywindow"}[1m]) >= 6'),
                   timeout=40, interval=0.25, what="six scrapes of the app")
        groups = wait_until(lambda: (g := prometheus.query("prometheus_rule_group_iterations_total"))
                            and all(float(r["value"][1]) >= 6 for r in g) and g,
                            timeout=30, interval=0.25, what="six evaluations of every rule group")
        assert len(groups) == sum(len(yaml.safe_load(text)["groups"]) for text in rules.values())

        targets = {(t["labels"]["job"], t["health"]) for t in prometheus.get("/api/v1/targets")["activeTargets"]}
        assert targets == {("tinywindow", "up"), ("alertmanager", "up"), ("prometheus", "up")}, targets
        assert prometheus.query('up{job="otel-collector"}') == []
        alerts = {(a["metric"]["alertname"], a["metric"]["alertstate"]) for a in prometheus.query("ALERTS")}
        assert alerts == {("Watchdog", "firing")}, alerts
