"""prometheus/prometheus.yml: valid for promtool, scrapes the app on :8000, loads the rules, alerts to Alertmanager."""

from __future__ import annotations

import shutil
import subprocess

import pytest
import yaml

from helpers import require_tool
from monitoring.assets import PROMETHEUS, RULES, alerts_by_name, load_rules
from tinywindow_otel.cli import stack

# promtool of both toolchains (Debian's 2.42 and 3.x) must accept the configs.
pytestmark = pytest.mark.usefixtures("toolchain")


def test_the_matrix_puts_the_toolchains_binaries_first_on_path(toolchain):
    versions = {tool: subprocess.run([require_tool(tool), "--version"], capture_output=True, text=True,
                                     timeout=30) for tool in ("prometheus", "promtool", "amtool")}
    text = {tool: result.stdout + result.stderr for tool, result in versions.items()}
    expected = {"debian": ("2.", "0.2"), "current": ("3.", "0.3")}[toolchain.name]
    assert f"prometheus, version {expected[0]}" in text["prometheus"], text["prometheus"]
    assert f"promtool, version {expected[0]}" in text["promtool"], text["promtool"]
    assert f"amtool, version {expected[1]}" in text["amtool"], text["amtool"]


def container_layout(tmp_path):
    """The files as compose.yaml mounts them: prometheus.yml with alerts/ beside it."""
    (tmp_path / "alerts").mkdir()
    shutil.copy(PROMETHEUS, tmp_path / "prometheus.yml")
    shutil.copy(RULES, tmp_path / "alerts" / RULES.name)
    return tmp_path / "prometheus.yml"


def test_promtool_check_config_passes_and_finds_the_rules(tmp_path):
    result = subprocess.run([require_tool("promtool"), "check", "config", str(container_layout(tmp_path))],
                            capture_output=True, text=True, timeout=60)
    assert result.returncode == 0, result.stdout + result.stderr
    assert "SUCCESS: 1 rule files found" in result.stdout
    assert f"SUCCESS: {len(load_rules())} rules found" in result.stdout


def test_scrapes_the_app_on_8000_as_the_job_the_alerts_select():
    config = yaml.safe_load(PROMETHEUS.read_text())
    jobs = {job["job_name"]: job for job in config["scrape_configs"]}
    assert stack.JOB in jobs
    assert [t.rsplit(":", 1)[1] for t in jobs[stack.JOB]["static_configs"][0]["targets"]] == ["8000"]
    for name in ("MetricsEndpointDown", "MetricsEndpointAbsent"):
        assert f'job="{stack.JOB}"' in alerts_by_name()[name]["expr"]


def test_scrapes_alertmanager_where_it_sends_alerts():
    # AlertmanagerNotificationsFailing has data only if Alertmanager itself is scraped.
    config = yaml.safe_load(PROMETHEUS.read_text())
    jobs = {job["job_name"]: job for job in config["scrape_configs"]}
    alerting = config["alerting"]["alertmanagers"][0]["static_configs"][0]["targets"]
    assert jobs[stack.ALERTMANAGER_JOB]["static_configs"][0]["targets"] == alerting
    assert "alertmanager_notifications_failed_total" in alerts_by_name()["AlertmanagerNotificationsFailing"]["expr"]


def test_points_at_alertmanager_and_loads_the_rule_glob():
    config = yaml.safe_load(PROMETHEUS.read_text())
    assert config["alerting"]["alertmanagers"][0]["static_configs"][0]["targets"] == ["alertmanager:9093"]
    assert config["rule_files"] == ["alerts/*.rules.yml"]


def test_stack_config_matches_the_repo_config(tmp_path):
    # tinywindow-otel stack writes its own (JSON) config: same job, rules and labels, local targets.
    repo = yaml.safe_load(PROMETHEUS.read_text())
    local = yaml.safe_load(stack.prometheus_config("127.0.0.1:8000", "127.0.0.1:9093", "1s"))
    assert local["rule_files"] == repo["rule_files"]
    assert local["global"]["external_labels"] == repo["global"]["external_labels"]
    assert [j["job_name"] for j in local["scrape_configs"]] == [stack.JOB, stack.ALERTMANAGER_JOB]
    assert local["scrape_configs"][1]["static_configs"][0]["targets"] == ["127.0.0.1:9093"]
    (tmp_path / "alerts").mkdir()
    shutil.copy(RULES, tmp_path / "alerts" / RULES.name)
    (tmp_path / "prometheus.yml").write_text(stack.prometheus_config("127.0.0.1:8000", "127.0.0.1:9093", "1s"))
    result = subprocess.run([require_tool("promtool"), "check", "config", str(tmp_path / "prometheus.yml")],
                            capture_output=True, text=True, timeout=60)
    assert result.returncode == 0, result.stdout + result.stderr


def test_shorten_for_changes_only_non_zero_durations(tmp_path):
    shortened = stack.shorten_for(RULES.read_text(), "2s")
    rules = {r["alert"]: r for g in yaml.safe_load(shortened)["groups"] for r in g["rules"] if "alert" in r}
    for name, rule in alerts_by_name().items():
        assert rules[name]["for"] == ("0m" if rule["for"] == "0m" else "2s"), name
        assert rules[name]["expr"] == rule["expr"]
    path = tmp_path / "rules.yml"
    path.write_text(shortened)
    result = subprocess.run([require_tool("promtool"), "check", "rules", str(path)], capture_output=True, text=True)
    assert result.returncode == 0, result.stdout + result.stderr


def test_otlp_receiver_block_is_valid_for_prometheus_3(tmp_path, prometheus3):
    # prometheus/otlp-receiver.yml is merged into prometheus.yml for the native OTLP path
    # (Prometheus 2.x does not know the section, hence its own file).
    from monitoring.deploy import OTLP_RECEIVER_CONFIG

    path = container_layout(tmp_path)
    config = yaml.safe_load(path.read_text()) | yaml.safe_load(OTLP_RECEIVER_CONFIG.read_text())
    path.write_text(yaml.safe_dump(config))
    result = subprocess.run([prometheus3.promtool, "check", "config", str(path)], capture_output=True, text=True,
                            timeout=60)
    assert result.returncode == 0, result.stdout + result.stderr
