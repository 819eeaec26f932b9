"""Execution, exchange, LLM-cost and calibration alerts: promtool-proven, catalog-consistent, with runbooks."""

from __future__ import annotations

import re
import shutil
import subprocess

import pytest
import yaml

from monitoring.assets import (
    EXECUTION_RULE_TESTS, EXECUTION_RULES, ROOT, RUNBOOK_DEFAULT_BASE, RUNBOOKS, alerts_by_name, check_expression,
    load_rules, references, run_tool,
)
from tinywindow_otel.catalog import BY_NAME

# Like the main rule file: on Debian's Prometheus 2.42 and on Prometheus 3.x.
pytestmark = pytest.mark.usefixtures("toolchain")

RUNBOOK_URL = re.compile(r"^\{\{ with \$externalLabels\.runbook_base \}\}\{\{ \. \}\}\{\{ else \}\}"
                         + re.escape(RUNBOOK_DEFAULT_BASE) + r"\{\{ end \}\}#([a-z0-9-]+)$")
EXPECTED = {
    "ExchangeFeedStale": "critical",
    "RateLimitNearlyExhausted": "warning",
    "HighOrderRejectRate": "warning",
    "HighSlippage": "warning",
    "LLMDailyCostBudgetExceeded": "warning",
    "AgentCalibrationDrift": "warning",
}


def promtool(*args: str) -> subprocess.CompletedProcess:
    return run_tool("promtool", *args, cwd=ROOT)


def alerts():
    return alerts_by_name(EXECUTION_RULES)


def test_promtool_check_rules_passes():
    result = promtool("check", "rules", str(EXECUTION_RULES))
    assert result.returncode == 0, result.stdout + result.stderr
    assert f"SUCCESS: {len(load_rules(EXECUTION_RULES))} rules found" in result.stdout


def test_promtool_unit_tests_pass():
    result = promtool("test", "rules", str(EXECUTION_RULE_TESTS))
    assert result.returncode == 0, result.stdout + result.stderr


def test_the_six_alerts_with_their_severities():
    assert {name: rule["labels"]["severity"] for name, rule in alerts().items()} == EXPECTED


def test_every_alert_is_proven_firing_and_silent():
    tests = yaml.safe_load(EXECUTION_RULE_TESTS.read_text())["tests"]
    fired = {case["alertname"] for test in tests for case in test["alert_rule_test"] if case.get("exp_alerts")}
    silent = {case["alertname"] for test in tests for case in test["alert_rule_test"] if not case.get("exp_alerts")}
    assert fired == set(EXPECTED) == silent


# Weakening a rule must make the promtool tests fail: they test what they claim.
REJECT_VOLUME = 'increase(tinywindow_orders_total{status="rejected"}[5m])) >= 5'
MUTATIONS = {
    "feed threshold moved": ("tinywindow_exchange_feed_age_seconds[45s]) > 60", "tinywindow_exchange_feed_age_seconds[45s]) > 90"),
    "feed alert made to wait": ("> 60\n        for: 0m", "> 60\n        for: 1m"),
    "rate limit at 90% counted as over": ("used_ratio[45s]) > 0.9", "used_ratio[45s]) >= 0.9"),
    "unguarded reject denominator": ('(rate(tinywindow_orders_total{status="submitted"}[5m])) > 0)',
                                     '(rate(tinywindow_orders_total{status="submitted"}[5m])) >= 0)'),
    "reject rate threshold moved": ("          ) > 0.1\n", "          ) > 0.04\n"),
    "reject rate without the volume guard": ("\n          and on (job, instance, venue)\n"
                                             "          sum by (job, instance, venue) (" + REJECT_VOLUME, ""),
    "reject volume minimum lowered to 3": (REJECT_VOLUME, REJECT_VOLUME.replace(">= 5", ">= 3")),
    "reject volume counted over all submitted orders": (REJECT_VOLUME, REJECT_VOLUME.replace("rejected", "submitted")),
    "slippage threshold moved": ("          ) > 25\n", "          ) > 100\n"),
    "slippage p95 by side only, not venue": ("sum by (job, instance, venue, le)", "sum by (job, instance, le)"),
    "budget changed": ("expr: vector(50)", "expr: vector(60)"),
    "calibration without the outcome guard": ("and on (job, instance, agent)\n          (sum by (job, instance, agent) "
                                              "(increase(tinywindow_agent_outcomes_total[1d])) >= 50)",
                                              "or on (job, instance, agent)\n          (sum by (job, instance, agent) "
                                              "(increase(tinywindow_agent_outcomes_total[1d])) >= 50)"),
    "calibration judged after 20 outcomes again": ("(increase(tinywindow_agent_outcomes_total[1d])) >= 50)",
                                                   "(increase(tinywindow_agent_outcomes_total[1d])) >= 20)"),
    "calibration threshold moved": ("tinywindow_agent_brier_score[45s]) > 0.25", "tinywindow_agent_brier_score[45s]) > 0.5"),
    "a failed scrape resolves the stale-feed alert": ("max_over_time(tinywindow_exchange_feed_age_seconds[45s])",
                                                      "tinywindow_exchange_feed_age_seconds"),
    # Exactly at each threshold: `>` -> `>=` (`>=` -> `>`) must make a test fail.
    "a feed exactly 60 s old counted as stale": ("feed_age_seconds[45s]) > 60", "feed_age_seconds[45s]) >= 60"),
    "exactly 10% rejected orders counted as high": ("          ) > 0.1\n", "          ) >= 0.1\n"),
    "exactly 5 rejections not enough to page": (REJECT_VOLUME, REJECT_VOLUME.replace(">= 5", "> 5")),
    "a p95 slippage of exactly 25 bps counted as high": ("          ) > 25\n", "          ) >= 25\n"),
    "spend of exactly the budget counted as over it": ("> on () group_left ()", ">= on () group_left ()"),
    "a Brier score of exactly 0.25 counted as drift": ("brier_score[45s]) > 0.25", "brier_score[45s]) >= 0.25"),
    "exactly 50 outcomes not enough to judge": ("(increase(tinywindow_agent_outcomes_total[1d])) >= 50)",
                                                "(increase(tinywindow_agent_outcomes_total[1d])) > 50)"),
    "calibration judged from a window emptied by a restart": (
        "\n          and on (job, instance, agent)\n          (sum by (job, instance, agent) (tinywindow_agent_outcomes_total) >= 50)", ""),
}


@pytest.mark.parametrize("mutation", sorted(MUTATIONS))
def test_promtool_tests_catch_a_weakened_rule(mutation, tmp_path):
    old, new = MUTATIONS[mutation]
    source = EXECUTION_RULES.read_text()
    assert old in source, f"mutation {mutation!r} no longer applies"
    (tmp_path / "tests").mkdir()
    (tmp_path / EXECUTION_RULES.name).write_text(source.replace(old, new))
    check = promtool("check", "rules", str(tmp_path / EXECUTION_RULES.name))
    assert check.returncode == 0, f"{mutation}: the mutated rules do not load: {check.stdout}{check.stderr}"
    shutil.copy(EXECUTION_RULE_TESTS, tmp_path / "tests" / EXECUTION_RULE_TESTS.name)
    result = promtool("test", "rules", str(tmp_path / "tests" / EXECUTION_RULE_TESTS.name))
    assert result.returncode != 0, f"promtool tests still pass with: {mutation}"


def test_expressions_use_catalog_names_labels_and_buckets():
    for name, rule in alerts().items():
        labels_in_text = set(re.findall(r"\$labels\.([a-zA-Z_]+)", rule["annotations"]["description"]))
        problems = check_expression(rule["expr"], labels_in_text)
        assert not problems, f"{name}: {problems}"


def test_thresholds_on_histograms_are_bucket_boundaries():
    assert 25.0 in BY_NAME["tinywindow_slippage_bps"].buckets
    assert "> 25" in alerts()["HighSlippage"]["expr"]


def test_every_alert_has_explicit_for_annotations_and_a_runbook_section():
    text = RUNBOOKS.read_text()
    for name, rule in alerts().items():
        assert "for" in rule, name
        annotations = rule["annotations"]
        assert set(annotations) == {"summary", "description", "runbook_url"}, name
        assert "{{" not in annotations["summary"], name
        assert "$labels." in annotations["description"] and "$value" in annotations["description"], name
        match = RUNBOOK_URL.match(annotations["runbook_url"])
        assert match and match.group(1) == re.sub(r"[^a-z0-9 _-]", "", name.lower()), annotations["runbook_url"]
        assert f"\n## {name}\n" in text, f"docs/runbooks.md has no section for {name}"
        section = text.split(f"## {name}\n", 1)[1].split("\n## ", 1)[0]
        assert f"`for: {rule['for']}`" in section, name
        for part in ("Meaning", "Impact", "Diagnosis", "Mitigation"):
            assert f"**{part}**" in section, f"{name}: runbook section has no {part}"


def test_counters_are_referenced_by_exposed_names_and_test_series_exist():
    for rule in alerts().values():
        for ref in references(rule["expr"]):
            if ref.spec is not None and ref.spec.kind.value == "counter":
                assert ref.sample == ref.spec.exposed_name
    for test in yaml.safe_load(EXECUTION_RULE_TESTS.read_text())["tests"]:
        for series in test["input_series"]:
            problems = check_expression(series["series"])
            assert not problems, f"{test['name']}: {problems}"


def test_prometheus_loads_this_rule_file():
    config = yaml.safe_load((ROOT / "prometheus" / "prometheus.yml").read_text())
    patterns = config["rule_files"]
    assert any(EXECUTION_RULES.match(pattern) for pattern in patterns), patterns
