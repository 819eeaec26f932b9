"""The alert rules: what the seed asks for, proven by promtool, consistent with the catalog and runbooks."""

from __future__ import annotations

import re
import shutil
import subprocess

import pytest
import yaml

from helpers import require_tool
from monitoring.assets import (
    ENDPOINT_ALERTS, EXECUTION_RULES, ROOT, RULE_TESTS, RULES, RUNBOOKS, SEED_ALERTS, alerts_by_name, check_expression,
    le_value, references,
)
from tinywindow_otel.catalog import BY_NAME

RUNBOOK_BASE = "https://github.com/tinywindow/tinywindow-otel/blob/main/docs/runbooks.md#"
COMPARISON_AT_END = re.compile(r"\)?\s*(<|>)\s*(-?[0-9.]+)\s*$")


def promtool(*args: str, cwd=ROOT) -> subprocess.CompletedProcess:
    return subprocess.run([require_tool("promtool"), *args], cwd=cwd, capture_output=True, text=True, timeout=60)


def test_promtool_check_rules_passes():
    result = promtool("check", "rules", str(RULES))
    assert result.returncode == 0, result.stdout + result.stderr
    assert f"SUCCESS: {len(alerts_by_name())} rules found" in result.stdout


def test_promtool_unit_tests_pass():
    result = promtool("test", "rules", str(RULE_TESTS))
    assert result.returncode == 0, result.stdout + result.stderr


def test_every_alert_has_a_promtool_test_that_expects_it_firing():
    tests = yaml.safe_load(RULE_TESTS.read_text())["tests"]
    fired = {case["alertname"] for test in tests for case in test["alert_rule_test"] if case.get("exp_alerts")}
    silent = {case["alertname"] for test in tests for case in test["alert_rule_test"] if not case.get("exp_alerts")}
    assert fired == set(alerts_by_name())
    assert silent == set(alerts_by_name())  # and each is also proven silent somewhere


# Weakening a rule must make the promtool tests fail: they test what they claim.
MUTATIONS = {
    "increase() alone misses a brand-new counter series": (
        "          or\n          (tinywindow_circuit_breaker_trips_total unless "
        "tinywindow_circuit_breaker_trips_total offset 5m) > 0\n", ""),
    "unguarded denominator alerts on a service with no requests": (
        "(sum by (job, instance, service) (rate(tinywindow_api_requests_total[5m])) > 0)",
        "sum by (job, instance, service) (rate(tinywindow_api_requests_total[5m]))"),
    "p95 threshold moved": (") > 5\n", ") > 10\n"),
    "a trade of exactly $10K counted as large": ('le="10000.0"', 'le="5000.0"'),
    "for: of a loss limit dropped": ("tinywindow_daily_pnl_pct < -10\n        for: 1m", "tinywindow_daily_pnl_pct < -10\n        for: 0m"),
}


@pytest.mark.parametrize("mutation", sorted(MUTATIONS))
def test_promtool_tests_catch_a_weakened_rule(mutation, tmp_path):
    old, new = MUTATIONS[mutation]
    source = RULES.read_text()
    assert old in source, f"mutation {mutation!r} no longer applies"
    (tmp_path / "tests").mkdir()
    (tmp_path / RULES.name).write_text(source.replace(old, new))
    shutil.copy(RULE_TESTS, tmp_path / "tests" / RULE_TESTS.name)
    result = promtool("test", "rules", str(tmp_path / "tests" / RULE_TESTS.name))
    assert result.returncode != 0, f"promtool tests still pass with: {mutation}"


def test_seed_alerts_names_severities_and_thresholds():
    alerts = alerts_by_name()
    assert set(alerts) == set(SEED_ALERTS) | set(ENDPOINT_ALERTS)
    for name, (severity, op, threshold) in SEED_ALERTS.items():
        rule = alerts[name]
        assert rule["labels"] == {"severity": severity}, name
        match = COMPARISON_AT_END.search(rule["expr"].strip())
        assert match, f"{name}: no trailing comparison in {rule['expr']!r}"
        assert (match.group(1), float(match.group(2))) == (op, threshold), name
    for name in ENDPOINT_ALERTS:
        assert alerts[name]["labels"] == {"severity": "critical"}


def test_large_position_threshold_is_the_10k_catalog_bucket():
    spec = BY_NAME["tinywindow_trade_amount_usd"]
    assert 10000.0 in spec.buckets
    assert f'le="{le_value(10000.0)}"' in alerts_by_name()["LargePositionSize"]["expr"]


def test_latency_threshold_is_a_catalog_bucket():
    assert 5.0 in BY_NAME["tinywindow_api_latency_seconds"].buckets


def test_every_alert_has_explicit_for_and_annotations():
    for name, rule in alerts_by_name().items():
        assert "for" in rule, f"{name}: `for:` must be chosen, not defaulted"
        annotations = rule["annotations"]
        assert set(annotations) == {"summary", "description", "runbook_url"}, name
        assert "{{" not in annotations["summary"], f"{name}: summary should be static"
        if name != "MetricsEndpointAbsent":  # absent() has neither a useful value nor labels
            assert "$labels." in annotations["description"], name
        if name in SEED_ALERTS:
            assert "$value" in annotations["description"], name


def github_anchor(heading: str) -> str:
    return re.sub(r"[^a-z0-9 _-]", "", heading.strip().lower()).replace(" ", "-")


def test_runbook_urls_point_at_one_section_per_alert():
    anchors = {github_anchor(line[3:]) for line in RUNBOOKS.read_text().splitlines() if line.startswith("## ")}
    alerts = alerts_by_name()
    linked = set()
    for name, rule in alerts.items():
        url = rule["annotations"]["runbook_url"]
        assert url.startswith(RUNBOOK_BASE), url
        anchor = url[len(RUNBOOK_BASE):]
        assert anchor == github_anchor(name)
        assert anchor in anchors, f"docs/runbooks.md has no section for {name}"
        linked.add(anchor)
    # Sections of the execution rule file are checked by test_execution_alerts.py.
    execution = {github_anchor(name) for name in alerts_by_name(EXECUTION_RULES)}
    assert anchors - execution == linked, "a runbook section without an alert"


def test_runbooks_state_each_alerts_for_duration():
    text = RUNBOOKS.read_text()
    for name, rule in alerts_by_name().items():
        section = text.split(f"## {name}\n", 1)[1].split("\n## ", 1)[0]
        assert f"for {rule['for']}" in section or f"`for: {rule['for']}`" in section, name


def test_alert_expressions_use_catalog_names_labels_and_buckets():
    for name, rule in alerts_by_name().items():
        labels_in_text = set(re.findall(r"\$labels\.([a-zA-Z_]+)", rule["annotations"]["description"]))
        problems = check_expression(rule["expr"], labels_in_text)
        assert not problems, f"{name}: {problems}"


def test_alert_expressions_on_counters_use_exposed_names():
    for rule in alerts_by_name().values():
        for ref in references(rule["expr"]):
            if ref.spec is not None and ref.spec.kind.value == "counter":
                assert ref.sample == ref.spec.exposed_name


def test_promtool_input_series_exist_in_the_catalog():
    tests = yaml.safe_load(RULE_TESTS.read_text())["tests"]
    for test in tests:
        for series in test["input_series"]:
            problems = check_expression(series["series"])
            assert not problems, f"{test['name']}: {problems}"
