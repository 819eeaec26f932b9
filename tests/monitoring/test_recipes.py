"""The deployment recipes' timing: every rate window holds at least 4 samples on the scrape and the push path.

Only functions that compute a rate of change need the samples (rate, increase,
...); a *_over_time window over a gauge only bridges a failed scrape.
"""

from __future__ import annotations

import re

import yaml

from monitoring.assets import DASHBOARDS, PROMETHEUS, ROOT, load_dashboards, load_rules, panel_targets

UNITS = {"ms": 0.001, "s": 1, "m": 60, "h": 3600, "d": 86400, "w": 604800}
# The range of rate(x[5m]), increase(x{a="b"}[1m]), ...: the selector holds no ( ) [ ].
RANGE = re.compile(r"\b(?:rate|irate|increase|delta|idelta|deriv)\s*\(\s*[^\[\]()]*\[([^\]:]+)(?::[^\]]*)?\]")
MIN_SAMPLES = 4


def seconds(duration: str) -> float:
    parts = re.findall(r"(\d+(?:\.\d+)?)(ms|s|m|h|d|w)", duration)
    assert parts and "".join(n + u for n, u in parts) == duration, f"not a duration: {duration!r}"
    return sum(float(n) * UNITS[u] for n, u in parts)


def sample_interval() -> float:
    """The slower of the documented scrape interval and push interval (compose's pushing app)."""
    scrape = seconds(yaml.safe_load(PROMETHEUS.read_text())["global"]["scrape_interval"])
    services = yaml.safe_load((ROOT / "compose.yaml").read_text())["services"]
    push = int(services["app-push"]["environment"]["OTEL_METRIC_EXPORT_INTERVAL"]) / 1000
    return max(scrape, push)


def test_push_interval_equals_scrape_interval():
    scrape = seconds(yaml.safe_load(PROMETHEUS.read_text())["global"]["scrape_interval"])
    assert sample_interval() == scrape == 15


def test_rule_windows_hold_four_samples():
    interval = sample_interval()
    short = []
    for rule in load_rules():
        for window in RANGE.findall(rule["expr"]):
            if seconds(window) < MIN_SAMPLES * interval:
                short.append(f"{rule.get('alert') or rule.get('record')}: [{window}]")
    assert not short, f"windows under {MIN_SAMPLES} x {interval}s: {short}"


def test_dashboard_windows_hold_four_samples():
    interval = sample_interval()
    datasource = yaml.safe_load((DASHBOARDS / "provisioning" / "datasources" / "prometheus.yml").read_text())
    # Grafana's $__rate_interval is at least 4 x timeInterval.
    assert seconds(datasource["datasources"][0]["jsonData"]["timeInterval"]) >= interval
    short = []
    for uid, dashboard in load_dashboards().items():
        for panel, target in panel_targets(dashboard):
            for window in RANGE.findall(target["expr"]):
                if window.startswith("$"):
                    assert window in ("$__rate_interval", "$__range"), f"{uid}/{panel['title']}: [{window}]"
                elif seconds(window) < MIN_SAMPLES * interval:
                    short.append(f"{uid}/{panel['title']}: [{window}]")
    assert not short, f"windows under {MIN_SAMPLES} x {interval}s: {short}"
