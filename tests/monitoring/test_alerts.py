"""The alert rules: what the interface documents, proven by promtool, consistent with the catalog and runbooks."""

from __future__ import annotations

import re
import shutil
import subprocess

import pytest
import yaml

from monitoring.assets import (
    ENDPOINT_ALERTS, EVENT_ALERTS, EXECUTION_RULE_TESTS, EXECUTION_RULES, OPERATIONS_ALERTS, ROOT, RULE_TESTS, RULES, RUNBOOK_DEFAULT_BASE, RUNBOOKS,
    CORE_ALERTS, alerts_by_name, check_expression, le_regex_bounds, le_spellings, load_rules, references, run_tool,
)
from tinywindow_otel.catalog import BY_NAME

# Every test here runs on Debian's Prometheus 2.42/Alertmanager 0.25 and on Prometheus 3.x/Alertmanager 0.35.
pytestmark = pytest.mark.usefixtures("toolchain")

COMPARISON_AT_END = re.compile(r"\)?\s*(<|>)\s*(-?[0-9.]+)\s*$")
RUNBOOK_URL = re.compile(r"^\{\{ with \$externalLabels\.runbook_base \}\}\{\{ \. \}\}\{\{ else \}\}"
                         + re.escape(RUNBOOK_DEFAULT_BASE) + r"\{\{ end \}\}#([a-z0-9-]+)$")


def promtool(*args: str, cwd=ROOT) -> subprocess.CompletedProcess:
    return run_tool("promtool", *args, cwd=cwd)


def alerts_by_name_in(text: str) -> dict[str, dict]:
    return {rule["alert"]: rule for group in yaml.safe_load(text)["groups"] for rule in group["rules"] if "alert" in rule}


def test_promtool_check_rules_passes():
    result = promtool("check", "rules", str(RULES))
    assert result.returncode == 0, result.stdout + result.stderr
    assert f"SUCCESS: {len(load_rules())} rules found" in result.stdout


def test_promtool_unit_tests_pass():
    result = promtool("test", "rules", str(RULE_TESTS))
    assert result.returncode == 0, result.stdout + result.stderr


def test_every_alert_has_a_promtool_test_that_expects_it_firing():
    tests = yaml.safe_load(RULE_TESTS.read_text())["tests"]
    fired = {case["alertname"] for test in tests for case in test["alert_rule_test"] if case.get("exp_alerts")}
    silent = {case["alertname"] for test in tests for case in test["alert_rule_test"] if not case.get("exp_alerts")}
    assert fired == set(alerts_by_name())
    assert silent == set(alerts_by_name()) - {"Watchdog"}  # and each is also proven silent somewhere


FAULT_CLASSES = {
    "failed scrape": ("stale", "failed scrape"),
    "Prometheus outage": ("_x24", "outage"),
    "restart and re-trip": ("process_start_time_seconds", "restart"),
    "two instances": ("app:8001", "per instance"),
    "le spelled three ways": ('le="1e+04"', "le spelling"),
    "oscillation at the limit": ("-10.5 -9.9 -10.5", "oscillating"),
    "vanishing series": ("stale", "vanishes"),
    "exactly at the threshold": ("-10 -10", "exactly"),
    "pushed instances": ('target_info{job="tinywindow", instance="bot-1"', "pushed"),
    "pushed restart without a new event": ('process_pid="202"', "Pushed restart with a fixed instance id"),
}


@pytest.mark.parametrize("fault", sorted(FAULT_CLASSES))
def test_promtool_tests_cover_each_fault_class(fault):
    in_series, in_name = FAULT_CLASSES[fault]
    text = RULE_TESTS.read_text()
    assert in_series in text
    assert any(in_name in test["name"] for test in yaml.safe_load(text)["tests"]), fault


LE_REGEX = 'le=~"10000|10000\\\\.0|1e\\\\+04"'


def pushed_now(counter: str, slack: str = "1") -> str:
    """The line that drops a sample missing from its instance's newest push (a pushed series left by an earlier process)."""
    return (f"\n            unless timestamp({counter}) + {slack} < on (job, instance) group_left max by (job, instance)"
            " (timestamp(target_info))")


BORN = "\n            and (count_over_time("
RESTART = "\n            and on (job, instance) (time() - process_start_time_seconds < 120)"
CB, KS, LPS = ("tinywindow_circuit_breaker_trips_total", "tinywindow_kill_switch_activations_total",
               "tinywindow_trade_amount_usd_count")
DROPPED, OVERFLOW = "tinywindow_otel_dropped_measurements_total", "tinywindow_otel_cardinality_overflow_total"
# Weakening a rule must make the promtool tests fail: they test what they claim.
MUTATIONS = {
    "a gauge read as an instant vector resolves on a failed scrape": (
        "max_over_time(tinywindow_drawdown_pct[45s]) > 15", "tinywindow_drawdown_pct > 15"),
    "a window as long as for: lets a loss hovering at the limit drop out": (
        "min_over_time(tinywindow_daily_pnl_pct[45s]) < -10", "tinywindow_daily_pnl_pct < -10"),
    "an event alert resolves on a failed scrape without keep_firing_for": (
        "          ) > 0\n        for: 0m\n        keep_firing_for: 1m\n        labels:\n          severity: warning\n"
        "        annotations:\n          summary: A trade or an open position",
        "          ) > 0\n        for: 0m\n        labels:\n          severity: warning\n"
        "        annotations:\n          summary: A trade or an open position"),
    "keep_firing_for dropped": ("max_over_time(tinywindow_drawdown_pct[45s]) > 15\n        for: 1m\n        keep_firing_for: 1m",
                                "max_over_time(tinywindow_drawdown_pct[45s]) > 15\n        for: 1m"),
    "the offset test for a new series pages after a failed scrape and an outage": (
        f"{CB} > 0{pushed_now(CB)}\n            and (count_over_time(tinywindow_circuit_breaker_trips_total[2m])"
        " < on (job, instance) group_left max by (job, instance) (sum_over_time(up[2m]) or count_over_time(target_info[2m])))",
        "(tinywindow_circuit_breaker_trips_total unless tinywindow_circuit_breaker_trips_total offset 5m) > 0"),
    "increase() alone misses a brand-new counter series": (
        f"{KS} > 0{pushed_now(KS)}\n            and (count_over_time(tinywindow_kill_switch_activations_total[2m])"
        " < on (job, instance) group_left max by (job, instance) (sum_over_time(up[2m]) or count_over_time(target_info[2m])))",
        "tinywindow_kill_switch_activations_total < 0"),
    "a re-trip right after a restart is missed without the process start": (
        f"{CB} > 0{pushed_now(CB)}{RESTART}", f"{CB} < 0"),
    "the event alert resolves while the breaker is still open": (
        "last_over_time(tinywindow_circuit_breaker_open[1m]) > 0", "tinywindow_circuit_breaker_open < 0"),
    "one le spelling only": (LE_REGEX, 'le="10000.0"'),
    "a pushed series born non-zero is missed without target_info": (
        "count_over_time(tinywindow_trade_amount_usd_count[2m]) < on (job, instance) group_left max by (job, instance) "
        "(sum_over_time(up[2m]) or count_over_time(target_info[2m])))",
        "count_over_time(tinywindow_trade_amount_usd_count[2m]) < on (job, instance) group_left max by (job, instance) "
        "(sum_over_time(up[2m])))"),
    "a pushed breaker trip (series born at 1, no up) is missed without target_info": (
        "count_over_time(tinywindow_circuit_breaker_trips_total[2m]) < on (job, instance) group_left max by (job, instance) "
        "(sum_over_time(up[2m]) or count_over_time(target_info[2m])))",
        "count_over_time(tinywindow_circuit_breaker_trips_total[2m]) < on (job, instance) group_left max by (job, instance) "
        "(sum_over_time(up[2m])))"),
    "a pushed kill-switch activation is missed without target_info": (
        "count_over_time(tinywindow_kill_switch_activations_total[2m]) < on (job, instance) group_left max by (job, instance) "
        "(sum_over_time(up[2m]) or count_over_time(target_info[2m])))",
        "count_over_time(tinywindow_kill_switch_activations_total[2m]) < on (job, instance) group_left max by (job, instance) "
        "(sum_over_time(up[2m])))"),
    "a push-only app pages as absent": (
        'absent(up{job="tinywindow"})\n          and absent_over_time(target_info{job="tinywindow"}[2m])',
        'absent(up{job="tinywindow"})'),
    "a collector outage is seen only once send_failed counts (after the retries)": (
        "min by (job, instance, exporter) (min_over_time(otelcol_exporter_queue_size[2m])) > 0",
        "min by (job, instance, exporter) (min_over_time(otelcol_exporter_queue_size[2m])) < 0"),
    "a busy queue that keeps sending counts as failing": (
        'increase({__name__=~"otelcol_exporter_sent_metric_points(_total)?"}[2m])\n            ) > 0',
        'increase({__name__=~"otelcol_exporter_sent_metric_points(_total)?"}[2m])\n            ) > 1e12'),
    "a pushed instance is never stalled without target_info": (
        "(max_over_time(up[1m]) == 1 or count_over_time(target_info[1m]) > 0)\n        for: 1m",
        "(max_over_time(up[1m]) == 1)\n        for: 1m"),
    "position notional ignored": ("last_over_time(tinywindow_position_notional_usd[1m]) > 10000",
                                  "tinywindow_position_notional_usd < 0"),
    "a position of exactly $10K counted as large": ("tinywindow_position_notional_usd[1m]) > 10000",
                                                     "tinywindow_position_notional_usd[1m]) >= 10000"),
    "HighLeverage resolves when the gauge vanishes": (
        "(last_over_time(tinywindow_leverage_ratio[1h]) unless max_over_time(tinywindow_leverage_ratio[45s])) > 15",
        "(last_over_time(tinywindow_leverage_ratio[1h]) unless max_over_time(tinywindow_leverage_ratio[45s])) < 0"),
    "Alertmanager and Prometheus count as stalled traders": (
        "\n                    and on (job, instance) last_over_time(tinywindow_otel_build_info[1m])", ""),
    "TradingStalled ignores the halt": ("last_over_time(tinywindow_circuit_breaker_open[1m]) == 1",
                                        "last_over_time(tinywindow_circuit_breaker_open[1m]) == 7"),
    "unguarded denominator alerts on a service with no requests": (
        "(sum by (job, instance, service) (rate(tinywindow_api_requests_total[5m])) > 0)",
        "sum by (job, instance, service) (rate(tinywindow_api_requests_total[5m]))"),
    "p95 threshold moved": ("          ) > 5\n", "          ) > 7.6\n"),
    "for: of a loss limit dropped": ("min_over_time(tinywindow_daily_pnl_pct[45s]) < -10\n        for: 1m",
                                     "min_over_time(tinywindow_daily_pnl_pct[45s]) < -10\n        for: 0m"),
    # Restart branches: a re-trip right after a restart brings the counter back to its old value.
    "a re-activation of the kill switch right after a restart is missed without the process start": (
        f"{KS} > 0{pushed_now(KS)}{RESTART}", f"{KS} < 0{pushed_now(KS)}{RESTART}"),
    "a large trade right after a restart is missed without the process start": (
        f"          ) > 0{pushed_now(LPS)}{RESTART}", f"          ) < 0{pushed_now(LPS)}{RESTART}"),
    # A Prometheus outage longer than 5m: the offset test pages for every old count once the gap is 5m behind.
    "the offset test pages an old kill-switch activation after an outage": (
        f"{KS} > 0{pushed_now(KS)}\n            and (count_over_time(tinywindow_kill_switch_activations_total[2m])"
        " < on (job, instance) group_left max by (job, instance) (sum_over_time(up[2m]) or count_over_time(target_info[2m])))",
        "(tinywindow_kill_switch_activations_total unless tinywindow_kill_switch_activations_total offset 5m) > 0"),
    "the offset test pages an old large trade after an outage": (
        "            and (count_over_time(tinywindow_trade_amount_usd_count[2m]) < on (job, instance) group_left max by (job, instance) "
        "(sum_over_time(up[2m]) or count_over_time(target_info[2m])))",
        "            unless on (job, instance, symbol) tinywindow_trade_amount_usd_count offset 5m"),
    "the offset test pages old dropped measurements after an outage": (
        f"{DROPPED} > 0{pushed_now(DROPPED)}\n            and (count_over_time(tinywindow_otel_dropped_measurements_total[15m])"
        " < on (job, instance) group_left max by (job, instance) (sum_over_time(up[15m]) or count_over_time(target_info[15m])))",
        "(tinywindow_otel_dropped_measurements_total unless tinywindow_otel_dropped_measurements_total offset 5m) > 0"),
    "the offset test pages an old cardinality overflow after an outage": (
        f"{OVERFLOW} > 0{pushed_now(OVERFLOW)}\n            and (count_over_time(tinywindow_otel_cardinality_overflow_total[15m])"
        " < on (job, instance) group_left max by (job, instance) (sum_over_time(up[15m]) or count_over_time(target_info[15m])))",
        "(tinywindow_otel_cardinality_overflow_total unless tinywindow_otel_cardinality_overflow_total offset 5m) > 0"),
    # Pushed instances: no `up`, no stale markers (an instant value lingers 5m after the last push).
    "a pushed instance's vanished leverage gauge resolves without target_info": (
        "(max_over_time(up[1m]) == 1 or count_over_time(target_info[1m]) > 0)\n          or\n",
        "(max_over_time(up[1m]) == 1)\n          or\n"),
    "a pushed leverage gauge's lingering instant value resolves the alert": (
        "unless max_over_time(tinywindow_leverage_ratio[45s])) > 15", "unless tinywindow_leverage_ratio) > 15"),
    "equity <= 0 on a pushed instance pages only once the instant value is 5m old": (
        "unless on (job, instance) max_over_time(tinywindow_leverage_ratio[45s])", "unless on (job, instance) tinywindow_leverage_ratio"),
    # Pushed data has no stale markers: after a restart with the same service.instance.id, the
    # previous process's last counts stay visible 5m. Without the newest-push line they page.
    "a pushed restart pages the previous process's breaker count as born non-zero": (
        f"{CB} > 0{pushed_now(CB)}{BORN}", f"{CB} > 0{BORN}"),
    "a pushed restart pages the previous process's breaker count as new": (
        f"{CB} > 0{pushed_now(CB)}{RESTART}", f"{CB} > 0{RESTART}"),
    "a pushed restart pages the previous process's kill-switch count as born non-zero": (
        f"{KS} > 0{pushed_now(KS)}{BORN}", f"{KS} > 0{BORN}"),
    "a pushed restart pages the previous process's kill-switch count as new": (
        f"{KS} > 0{pushed_now(KS)}{RESTART}", f"{KS} > 0{RESTART}"),
    "a pushed restart pages the previous process's large trade as born non-zero": (
        f"          ) > 0{pushed_now(LPS)}{BORN}", f"          ) > 0{BORN}"),
    "a pushed restart pages the previous process's large trade as new": (
        f"          ) > 0{pushed_now(LPS)}{RESTART}", f"          ) > 0{RESTART}"),
    "a pushed restart pages the previous process's dropped measurements": (
        f"{DROPPED} > 0{pushed_now(DROPPED)}{BORN}", f"{DROPPED} > 0{BORN}"),
    "a pushed restart pages the previous process's cardinality overflow": (
        f"{OVERFLOW} > 0{pushed_now(OVERFLOW)}{BORN}", f"{OVERFLOW} > 0{BORN}"),
    "a count one push old (a restart between two pushes) taken for a current one": (
        f"{CB} > 0{pushed_now(CB)}{RESTART}", f"{CB} > 0{pushed_now(CB, '15')}{RESTART}"),
    # Exactly at each threshold: `>` -> `>=` (`<` -> `<=`) must make a test fail.
    "a daily loss of exactly -10% counted as exceeded": ("tinywindow_daily_pnl_pct[45s]) < -10", "tinywindow_daily_pnl_pct[45s]) <= -10"),
    "a drawdown of exactly 15% counted as exceeded": ("tinywindow_drawdown_pct[45s]) > 15", "tinywindow_drawdown_pct[45s]) >= 15"),
    "leverage of exactly 15x counted as high": ("max_over_time(tinywindow_leverage_ratio[45s]) > 15\n",
                                                "max_over_time(tinywindow_leverage_ratio[45s]) >= 15\n"),
    "an API error rate of exactly 10% counted as high": ("          ) > 0.1\n", "          ) >= 0.1\n"),
    "a p95 latency of exactly 5s counted as high": ("          ) > 5\n", "          ) >= 5\n"),
    "exactly 20% rejected trades counted as high": ("          ) > 0.2\n", "          ) >= 0.2\n"),
    "exactly 5 rejections not enough": ('(increase(tinywindow_trades_total{status="rejected"}[10m])) >= 5',
                                        '(increase(tinywindow_trades_total{status="rejected"}[10m])) > 5'),
    "a heartbeat exactly the stall window old counted as stalled": (
        ") > on () group_left tinywindow:trading_stall_window_seconds", ") >= on () group_left tinywindow:trading_stall_window_seconds"),
    "a fast burn of exactly 14.4x counted as burning": ("> 0.144", ">= 0.144"),
    "a slow burn of exactly 6x counted as burning": ("> 0.06", ">= 0.06"),
    "a dropped-measurements counter at 0 counted as a drop (series born at 0)": (
        "tinywindow_otel_dropped_measurements_total > 0\n", "tinywindow_otel_dropped_measurements_total >= 0\n"),
    "a dropped-measurements counter standing at 0 counted as a drop": (
        "increase(tinywindow_otel_dropped_measurements_total[15m]) > 0", "increase(tinywindow_otel_dropped_measurements_total[15m]) >= 0"),
    "an overflow counter at 0 counted as an overflow (series born at 0)": (
        "tinywindow_otel_cardinality_overflow_total > 0\n", "tinywindow_otel_cardinality_overflow_total >= 0\n"),
    "an overflow counter standing at 0 counted as an overflow": (
        "increase(tinywindow_otel_cardinality_overflow_total[15m]) > 0", "increase(tinywindow_otel_cardinality_overflow_total[15m]) >= 0"),
    "no failed notification counted as failing": ("(increase(alertmanager_notifications_failed_total[10m])) > 0",
                                                   "(increase(alertmanager_notifications_failed_total[10m])) >= 0"),
    "no dropped point counted as an export failure": (
        '(_total)?"}[5m])\n          ) > 0', '(_total)?"}[5m])\n          ) >= 0'),
    "an empty queue counted as an export failure": ("min_over_time(otelcol_exporter_queue_size[2m])) > 0",
                                                    "min_over_time(otelcol_exporter_queue_size[2m])) >= 0"),
    "a queue with nothing sent counted as healthy": (
        'increase({__name__=~"otelcol_exporter_sent_metric_points(_total)?"}[2m])\n            ) > 0',
        'increase({__name__=~"otelcol_exporter_sent_metric_points(_total)?"}[2m])\n            ) >= 0'),
}


@pytest.mark.parametrize("mutation", sorted(MUTATIONS))
def test_promtool_tests_catch_a_weakened_rule(mutation, tmp_path):
    old, new = MUTATIONS[mutation]
    source = RULES.read_text()
    assert old in source, f"mutation {mutation!r} no longer applies"
    mutated = source.replace(old, new)
    # Only the test groups of the alerts the mutation changed run (promtool is slow on a busy machine).
    before, after = (alerts_by_name_in(text) for text in (source, mutated))
    changed = {name for name in before if before[name] != after.get(name)}
    assert changed, mutation
    document = yaml.safe_load(RULE_TESTS.read_text())
    document["tests"] = [test for test in document["tests"]
                         if any(case["alertname"] in changed for case in test["alert_rule_test"])]
    assert document["tests"], changed
    (tmp_path / "tests").mkdir()
    (tmp_path / RULES.name).write_text(mutated)
    (tmp_path / "tests" / RULE_TESTS.name).write_text(yaml.safe_dump(document, sort_keys=False))
    check = promtool("check", "rules", str(tmp_path / RULES.name))
    assert check.returncode == 0, f"{mutation}: the mutated rules do not load: {check.stdout}{check.stderr}"
    result = promtool("test", "rules", str(tmp_path / "tests" / RULE_TESTS.name))
    assert result.returncode != 0, f"promtool tests still pass with: {mutation}"


def test_documented_alerts_names_severities_and_thresholds():
    alerts = alerts_by_name()
    assert set(alerts) == set(CORE_ALERTS) | set(ENDPOINT_ALERTS) | set(OPERATIONS_ALERTS)
    for name, (severity, op, threshold) in CORE_ALERTS.items():
        rule = alerts[name]
        assert rule["labels"] == {"severity": severity}, name
        match = COMPARISON_AT_END.search(rule["expr"].strip())
        assert match, f"{name}: no trailing comparison in {rule['expr']!r}"
        assert (match.group(1), float(match.group(2))) == (op, threshold), name
    for name in ENDPOINT_ALERTS:
        assert alerts[name]["labels"] == {"severity": "critical"}
    for name, severity in OPERATIONS_ALERTS.items():
        assert alerts[name]["labels"] == {"severity": severity}, name


def test_large_position_threshold_is_the_10k_catalog_bucket_in_every_spelling():
    spec = BY_NAME["tinywindow_trade_amount_usd"]
    assert 10000.0 in spec.buckets
    expr = alerts_by_name()["LargePositionSize"]["expr"]
    patterns = set(re.findall(r'le=~"([^"]*)"', expr))
    assert len(patterns) == 1 and expr.count("le=~") == 3, expr
    (pattern,) = patterns
    assert le_regex_bounds(pattern, spec.buckets) == {10000.0}
    regex = re.compile(pattern.encode().decode("unicode_escape"))
    for spelling in ("10000", "10000.0", "1e+04") + tuple(le_spellings(10000.0)):
        assert regex.fullmatch(spelling), spelling
    for other in ("1000", "100000", "10000.5", "1e+05"):
        assert not regex.fullmatch(other), other
    assert "> 10000" in expr  # the position branch: notional above $10K


def test_latency_threshold_is_a_catalog_bucket():
    assert 5.0 in BY_NAME["tinywindow_api_latency_seconds"].buckets


def test_every_alert_has_explicit_for_and_annotations():
    for name, rule in alerts_by_name().items():
        assert "for" in rule, f"{name}: `for:` must be chosen, not defaulted"
        annotations = rule["annotations"]
        assert set(annotations) == {"summary", "description", "runbook_url"}, name
        assert "{{" not in annotations["summary"], f"{name}: summary should be static"
        if name not in ("MetricsEndpointAbsent", "Watchdog"):  # absent() and vector(1) carry no labels
            assert "$labels." in annotations["description"], name
        if name in CORE_ALERTS and name not in EVENT_ALERTS:
            assert "$value" in annotations["description"], name


def github_anchor(heading: str) -> str:
    return re.sub(r"[^a-z0-9 _-]", "", heading.strip().lower()).replace(" ", "-")


def test_runbook_urls_point_at_one_section_per_alert_under_a_configurable_base():
    anchors = {github_anchor(line[3:]) for line in RUNBOOKS.read_text().splitlines() if line.startswith("## ")}
    alerts = alerts_by_name()
    linked = set()
    for name, rule in alerts.items():
        url = rule["annotations"]["runbook_url"]
        match = RUNBOOK_URL.match(url)
        assert match, f"{name}: runbook_url must be <runbook_base external label or default>#anchor: {url}"
        anchor = match.group(1)
        assert anchor == github_anchor(name)
        assert anchor in anchors, f"docs/runbooks.md has no section for {name}"
        linked.add(anchor)
    # Sections of the execution rule file are checked by test_execution_alerts.py.
    execution = {github_anchor(name) for name in alerts_by_name(EXECUTION_RULES)}
    assert anchors - execution == linked, "a runbook section without an alert"


def test_runbooks_have_meaning_impact_diagnosis_mitigation():
    text = RUNBOOKS.read_text()
    for name in alerts_by_name():
        section = text.split(f"## {name}\n", 1)[1].split("\n## ", 1)[0]
        for part in ("Meaning", "Impact", "Diagnosis", "Mitigation"):
            assert f"**{part}**" in section, f"{name}: runbook section has no {part}"


def test_runbooks_state_each_alerts_for_duration():
    text = RUNBOOKS.read_text()
    for name, rule in alerts_by_name().items():
        section = text.split(f"## {name}\n", 1)[1].split("\n## ", 1)[0]
        assert f"for {rule['for']}" in section or f"`for: {rule['for']}`" in section, name


def test_alert_expressions_use_catalog_names_labels_and_buckets():
    for name, rule in alerts_by_name().items():
        if name == "Watchdog":
            assert rule["expr"] == "vector(1)"
            continue
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


@pytest.mark.parametrize("path", [RULE_TESTS, EXECUTION_RULE_TESTS], ids=lambda p: p.name)
def test_promtool_input_values_read_back_as_written(path):
    # The mutation test rewrites the test file through PyYAML: an unquoted `0x80`
    # ("0, 80 more times") is a YAML 1.1 hex integer there and comes back as 128.
    tests = yaml.safe_load(path.read_text())["tests"]
    for test in tests:
        for series in test["input_series"]:
            assert isinstance(series["values"], str), f"{test['name']}: quote {series['series']} values {series['values']!r}"
