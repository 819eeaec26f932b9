"""alerts/alertmanager.yml: valid for amtool, routes by severity, groups, inhibits, holds no secret."""

from __future__ import annotations

import re
import subprocess

import pytest
import yaml

from helpers import require_tool
from monitoring.assets import ALERTMANAGER, alerts_by_name
from tinywindow_otel.cli.stack import TOKEN_PLACEHOLDER, WEBHOOK_PLACEHOLDER, alertmanager_config

# Every test here runs on Debian's Prometheus 2.42/Alertmanager 0.25 and on Prometheus 3.x/Alertmanager 0.35.
pytestmark = pytest.mark.usefixtures("toolchain")


def amtool(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run([require_tool("amtool"), *args], capture_output=True, text=True, timeout=60)


def duration_seconds(text: str) -> float:
    units = {"ms": 0.001, "s": 1, "m": 60, "h": 3600, "d": 86400}
    return sum(float(n) * units[u] for n, u in re.findall(r"(\d+(?:\.\d+)?)(ms|s|m|h|d)", text))


def config() -> dict:
    return yaml.safe_load(ALERTMANAGER.read_text())


def test_amtool_check_config_passes():
    result = amtool("check-config", str(ALERTMANAGER))
    assert result.returncode == 0, result.stdout + result.stderr
    assert "SUCCESS" in result.stdout


@pytest.mark.parametrize("alertname", sorted(alerts_by_name()))
def test_each_alert_routes_to_the_receiver_of_its_severity(alertname):
    rule = alerts_by_name()[alertname]
    expected = {"critical": "trading-pager", "warning": "trading-chat"}[rule["labels"]["severity"]]
    result = amtool("config", "routes", "test", f"--config.file={ALERTMANAGER}", f"--verify.receivers={expected}",
                    f"alertname={alertname}", f"severity={rule['labels']['severity']}", "service=binance")
    assert result.returncode == 0, result.stdout + result.stderr
    assert result.stdout.strip() == expected


def test_routes_test_rejects_a_wrong_receiver():
    # The verification above could not pass by accident: amtool does fail on a mismatch.
    result = amtool("config", "routes", "test", f"--config.file={ALERTMANAGER}", "--verify.receivers=trading-pager",
                    "alertname=HighLeverage", "severity=warning")
    assert result.returncode != 0


def test_critical_pages_faster_and_repeats_more_often_than_warning():
    routes = {tuple(r["matchers"]): r for r in config()["route"]["routes"]}
    critical, warning = routes[('severity="critical"',)], routes[('severity="warning"',)]
    for key in ("group_wait", "group_interval", "repeat_interval"):
        assert duration_seconds(critical[key]) < duration_seconds(warning[key]), key


def test_grouping_by_alertname_and_service_or_symbol():
    assert config()["route"]["group_by"] == ["alertname", "service", "symbol"]


def test_kill_switch_inhibits_trading_warnings_of_the_same_instance():
    rules = config()["inhibit_rules"]
    kill = [r for r in rules if r["source_matchers"] == ['alertname="KillSwitchActivated"']]
    assert len(kill) == 1
    assert 'severity="warning"' in kill[0]["target_matchers"]
    targets = re.search(r'alertname=~"([^"]+)"', " ".join(kill[0]["target_matchers"])).group(1).split("|")
    alerts = alerts_by_name()
    for name in targets:
        assert alerts[name]["labels"]["severity"] == "warning", name
    assert kill[0]["equal"] == ["instance"]


def test_no_secret_in_the_file_and_receivers_are_placeholders():
    text = ALERTMANAGER.read_text()
    assert not re.search(r"(api_url|password|credentials|token)\s*:", text.replace("credentials_file", "")), \
        "secrets must come from files, not the config"
    for receiver in config()["receivers"]:
        for hook in receiver["webhook_configs"]:
            assert hook["url"].startswith(WEBHOOK_PLACEHOLDER)
            assert hook["http_config"]["authorization"]["credentials_file"] == TOKEN_PLACEHOLDER


def test_local_rewrite_used_by_the_stack_is_still_valid(tmp_path):
    token = tmp_path / "token"
    token.write_text("t")
    rewritten = alertmanager_config(ALERTMANAGER.read_text(), "http://127.0.0.1:1", token)
    assert WEBHOOK_PLACEHOLDER not in rewritten and TOKEN_PLACEHOLDER not in rewritten
    path = tmp_path / "alertmanager.yml"
    path.write_text(rewritten)
    result = amtool("check-config", str(path))
    assert result.returncode == 0, result.stdout + result.stderr
