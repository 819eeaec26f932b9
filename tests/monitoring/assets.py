"""Shared by the monitoring tests: asset paths, loaders, and PromQL references checked against the catalog."""

from __future__ import annotations

import json
import re
import subprocess
from dataclasses import dataclass
from pathlib import Path

import yaml
from prometheus_client.utils import floatToGoString

from helpers import require_tool
from tinywindow_otel.catalog import ALL_METRICS, BUILD_INFO, CATALOG, Kind, MetricSpec

ROOT = Path(__file__).resolve().parents[2]
RULES = ROOT / "alerts" / "tinywindow.rules.yml"
RULE_TESTS = ROOT / "alerts" / "tests" / "tinywindow.rules.test.yml"
EXECUTION_RULES = ROOT / "alerts" / "tinywindow-execution.rules.yml"
EXECUTION_RULE_TESTS = ROOT / "alerts" / "tests" / "tinywindow-execution.rules.test.yml"
ALERTMANAGER = ROOT / "alerts" / "alertmanager.yml"
PROMETHEUS = ROOT / "prometheus" / "prometheus.yml"
RUNBOOKS = ROOT / "docs" / "runbooks.md"
DASHBOARDS = ROOT / "dashboards"
DASHBOARD_UIDS = ("tinywindow-trading", "tinywindow-risk", "tinywindow-system",
                  "tinywindow-execution", "tinywindow-agents")

# The documented alert table (tests/data/monitoring-interface.md): name -> (severity, comparison, threshold).
CORE_ALERTS = {
    "DailyLossExceeded": ("critical", "<", -10.0),
    "DrawdownExceeded": ("critical", ">", 15.0),
    "HighAPIErrorRate": ("warning", ">", 0.1),
    "CircuitBreakerTripped": ("critical", ">", 0.0),
    "KillSwitchActivated": ("critical", ">", 0.0),
    "LargePositionSize": ("warning", ">", 0.0),   # > 0 trades above the $10K bucket
    "HighLeverage": ("warning", ">", 15.0),
    "HighAPILatency": ("warning", ">", 5.0),
}
ENDPOINT_ALERTS = ("MetricsEndpointDown", "MetricsEndpointAbsent")
# Beyond the documented alerts: the pipeline watching itself, and trading health.
OPERATIONS_ALERTS = {
    "Watchdog": "none",
    "TradingStalled": "warning",
    "HighTradeRejectionRate": "warning",
    "TelemetryMeasurementsDropped": "warning",
    "MetricCardinalityOverflow": "warning",
    "AlertmanagerNotificationsFailing": "critical",
    "CollectorExportFailing": "warning",
    "APIErrorBudgetBurn": "warning",
}
# Core alerts on events: their value is a count or a state, not a level worth printing.
EVENT_ALERTS = ("CircuitBreakerTripped", "KillSwitchActivated", "LargePositionSize")
RUNBOOK_DEFAULT_BASE = "https://github.com/tinywindow/tinywindow-otel/blob/main/docs/runbooks.md"

# The documented dashboard panels: uid -> [(title, allowed Grafana panel types)].
# The trading, risk and system dashboards (variables, annotations, linter rules, live data).
CORE_DASHBOARDS = ("tinywindow-trading", "tinywindow-risk", "tinywindow-system")
CORE_PANELS = {
    "tinywindow-trading": [
        ("Portfolio Value", {"timeseries"}), ("Daily P&L", {"stat"}), ("Win Rate", {"stat"}),
        ("Trade Volume by Symbol", {"barchart", "bargauge"}), ("Active Positions", {"stat"}),
        ("Unrealized P&L", {"stat"}),
    ],
    "tinywindow-risk": [
        ("Current Drawdown", {"stat"}), ("Leverage Ratio", {"stat"}), ("Value at Risk", {"stat"}),
        ("Drawdown Over Time", {"timeseries"}), ("Circuit Breaker Trips", {"stat"}),
        ("Kill Switch Activations", {"stat"}),
    ],
    "tinywindow-system": [
        ("API Latency", {"timeseries"}), ("API Request Rate", {"timeseries"}), ("API Errors", {"timeseries"}),
        ("API Error Rate", {"stat"}), ("Agent Decisions", {"timeseries"}),
        ("Agent Confidence Distribution", {"barchart", "bargauge"}),
    ],
    # Order execution, exchange health, LLM cost and calibration.
    "tinywindow-execution": [
        ("Order Latency p50 / p95", {"timeseries"}), ("Fill Ratio", {"timeseries"}),
        ("Slippage Distribution", {"barchart", "bargauge"}), ("Rejections by Reason", {"timeseries"}),
        ("Feed Age", {"timeseries"}), ("Rate-Limit Headroom", {"bargauge"}),
    ],
    "tinywindow-agents": [
        ("Token Use", {"timeseries"}), ("LLM Cost per Day by Model", {"timeseries"}),
        ("Time to First Token", {"timeseries"}), ("Reliability Diagram", {"barchart"}),
        ("Brier Score", {"timeseries"}),
    ],
}

# Labels Prometheus adds to every scraped series.
TARGET_LABELS = {"job", "instance"}
# Series the rules read that the SDK does not declare: name -> labels beyond job/instance.
EXTERNAL_METRICS = {
    "up": set(),
    # Plus other resource attributes (process_pid: a new target_info series per process); the rules use job/instance only.
    "target_info": {"service_name", "process_pid"},
    "process_start_time_seconds": set(),
    "alertmanager_notifications_failed_total": {"integration"},
    "otelcol_exporter_send_failed_metric_points": {"exporter"},
    "otelcol_exporter_send_failed_metric_points_total": {"exporter"},
    # Names as the collector v0.165 exposes them on :8888 (queue size is a gauge, no _total).
    "otelcol_exporter_sent_metric_points": {"exporter"},
    "otelcol_exporter_sent_metric_points_total": {"exporter"},
    "otelcol_exporter_queue_size": {"exporter", "data_type"},
}
HISTOGRAM_SUFFIXES = ("_bucket", "_sum", "_count")


def run_tool(name: str, *args: str, cwd: Path = ROOT, timeout: float = 60) -> subprocess.CompletedProcess:
    """Run promtool, amtool (or another monitoring binary) by name, as found on PATH.

    Every monitoring test calls the binaries through here (or through
    ``require_tool``), so a fixture that puts another toolchain first on PATH
    runs the same test against it.
    """
    return subprocess.run([require_tool(name), *args], cwd=cwd, capture_output=True, text=True, timeout=timeout)


def load_rules(path: Path = RULES) -> list[dict]:
    return [rule for group in yaml.safe_load(path.read_text())["groups"] for rule in group["rules"]]


def alerts_by_name(path: Path = RULES) -> dict[str, dict]:
    return {rule["alert"]: rule for rule in load_rules(path) if "alert" in rule}


def load_dashboards() -> dict[str, dict]:
    return {uid: json.loads((DASHBOARDS / f"{uid}.json").read_text()) for uid in DASHBOARD_UIDS}


def panel_targets(dashboard: dict):
    for panel in dashboard["panels"]:
        for target in panel.get("targets", []):
            yield panel, target


def le_value(bound: float) -> str:
    """How the exposition spells a bucket boundary (prometheus_client's formatting)."""
    return floatToGoString(bound)


@dataclass(frozen=True)
class Reference:
    sample: str            # as written in PromQL, e.g. tinywindow_api_latency_seconds_bucket
    spec: MetricSpec | None
    matchers: dict[str, tuple[str, str]]   # label -> (operator, value as written)


_SELECTOR = re.compile(r"(?<![:\w])((?:tinywindow_|gen_ai_client_|up\b|target_info\b|process_start_time_seconds\b|alertmanager_|otelcol_)[A-Za-z0-9_]*)"
                       r"\s*(\{[^}]*\})?")
_NAME_REGEX = re.compile(r'\{__name__=~"([^"]*)"')
_MATCHER = re.compile(r'([A-Za-z_][A-Za-z0-9_]*)\s*(=~|!~|!=|=)\s*"([^"]*)"')
_GROUPING = re.compile(r"\b(?:by|without|on|ignoring)\s*\(([^)]*)\)")


def spec_for_sample(sample: str) -> MetricSpec | None:
    by_exposed = {spec.exposed_name: spec for spec in (*ALL_METRICS, BUILD_INFO)}
    if sample in by_exposed:
        return by_exposed[sample]
    for suffix in HISTOGRAM_SUFFIXES:
        base = sample[: -len(suffix)]
        if sample.endswith(suffix) and base in by_exposed and by_exposed[base].kind is Kind.HISTOGRAM:
            return by_exposed[base]
    return None


def references(expr: str) -> list[Reference]:
    refs = []
    for match in _SELECTOR.finditer(expr):
        sample = match.group(1)
        matchers = {name: (op, value) for name, op, value in _MATCHER.findall(match.group(2) or "")}
        refs.append(Reference(sample, None if sample in EXTERNAL_METRICS else spec_for_sample(sample), matchers))
    for pattern in _NAME_REGEX.findall(expr):
        names = [name for name in EXTERNAL_METRICS if re.fullmatch(promql_unescape(pattern), name)]
        refs += [Reference(name, None, {}) for name in names]
    return refs


def promql_unescape(text: str) -> str:
    """A PromQL double-quoted string's content as the regex engine sees it."""
    return text.encode().decode("unicode_escape")


def le_regex_bounds(pattern: str, bounds: tuple[float, ...]) -> set[float]:
    """The bucket boundaries an ``le=~`` regex selects, each in any of its spellings."""
    regex = re.compile(promql_unescape(pattern))
    return {b for b in bounds for spelling in le_spellings(b) if regex.fullmatch(spelling)}


def le_spellings(bound: float) -> set[str]:
    """How scrapes, Prometheus 3 normalisation and OTLP/remote-write spell a boundary."""
    candidates = {le_value(bound), repr(float(bound)), f"{bound:g}", f"{bound:.0e}",
                  format(bound, "f").rstrip("0").rstrip(".")}
    return {text for text in candidates if float(text) == bound}


def grouping_labels(expr: str) -> set[str]:
    return {label.strip() for group in _GROUPING.findall(expr) for label in group.split(",") if label.strip()}


def allowed_labels(ref: Reference) -> set[str]:
    if ref.sample in EXTERNAL_METRICS:
        return TARGET_LABELS | EXTERNAL_METRICS[ref.sample]
    assert ref.spec is not None
    labels = set(ref.spec.exposed_labels) | TARGET_LABELS
    if ref.sample.endswith("_bucket"):
        labels.add("le")
    return labels


def check_expression(expr: str, extra_labels: set[str] = frozenset()) -> list[str]:
    """Problems with an expression's metric names, label names and bucket values, read from the catalog."""
    problems = []
    refs = references(expr)
    if not refs:
        problems.append(f"no metric referenced in {expr!r}")
    usable: set[str] = set()
    for ref in refs:
        if ref.sample not in EXTERNAL_METRICS and ref.spec is None:
            problems.append(f"{ref.sample} is not in the catalog")
            continue
        allowed = allowed_labels(ref)
        usable |= allowed
        for name, (op, value) in ref.matchers.items():
            if name not in allowed:
                problems.append(f"{ref.sample} has no label {name!r}")
            if name != "le" or value == "+Inf":
                continue
            if op == "=~":
                if len(le_regex_bounds(value, ref.spec.buckets)) != 1:
                    problems.append(f"{ref.sample}{{le=~{value!r}}} does not select exactly one catalog bucket")
            elif value not in {text for b in ref.spec.buckets for text in le_spellings(b)}:
                problems.append(f"{ref.sample}{{le={value!r}}} is not a catalog bucket boundary")
    for label in grouping_labels(expr) | set(extra_labels):
        if label not in usable:
            problems.append(f"label {label!r} is not on any metric of {expr!r}")
    return problems


def catalog_samples_used(exprs) -> set[str]:
    """Catalog metric names (declared) referenced by these expressions."""
    return {ref.spec.name for expr in exprs for ref in references(expr) if ref.spec is not None}


CORE_METRICS = {spec.name for spec in CATALOG}
