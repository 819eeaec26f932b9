"""alerts/alertmanager.yml: valid for amtool, routes by severity, reaches PagerDuty, Slack and a webhook, holds no secret."""

from __future__ import annotations

import re
import subprocess

import pytest
import yaml

from monitoring.assets import ALERTMANAGER, ROOT, alerts_by_name, run_tool
from tinywindow_otel.cli.stack import alertmanager_config

pytestmark = pytest.mark.usefixtures("toolchain")  # amtool 0.25 and 0.35

SECRET_DIR = "/run/secrets/"
# The receiver each alert must reach, by severity; some alerts are routed by name.
RECEIVER_BY_SEVERITY = {"critical": "trading-pager", "warning": "trading-chat", "none": "deadmans-switch"}
RECEIVERS_BY_NAME = {"AlertmanagerNotificationsFailing": "trading-chat,trading-pager", "Watchdog": "deadmans-switch"}


def amtool(*args: str) -> subprocess.CompletedProcess:
    return run_tool("amtool", *args)


def duration_seconds(text: str) -> float:
    units = {"ms": 0.001, "s": 1, "m": 60, "h": 3600, "d": 86400}
    return sum(float(n) * units[u] for n, u in re.findall(r"(\d+(?:\.\d+)?)(ms|s|m|h|d)", text))


def config() -> dict:
    return yaml.safe_load(ALERTMANAGER.read_text())


def receivers() -> dict[str, dict]:
    return {receiver["name"]: receiver for receiver in config()["receivers"]}


def test_amtool_check_config_passes():
    result = amtool("check-config", str(ALERTMANAGER))
    assert result.returncode == 0, result.stdout + result.stderr
    assert "SUCCESS" in result.stdout


@pytest.mark.parametrize("alertname", sorted(alerts_by_name()))
def test_each_alert_routes_to_the_receiver_of_its_severity(alertname):
    severity = alerts_by_name()[alertname]["labels"]["severity"]
    expected = RECEIVERS_BY_NAME.get(alertname, RECEIVER_BY_SEVERITY[severity])
    result = amtool("config", "routes", "test", f"--config.file={ALERTMANAGER}", f"--verify.receivers={expected}",
                    f"alertname={alertname}", f"severity={severity}", "service=binance")
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


def test_watchdog_heartbeat_reaches_the_dead_mans_switch_every_few_minutes():
    route = next(r for r in config()["route"]["routes"] if r["matchers"] == ['alertname="Watchdog"'])
    assert route["receiver"] == "deadmans-switch"
    assert duration_seconds(route["repeat_interval"]) <= 5 * 60
    assert not route.get("continue"), "the heartbeat must not page or reach chat"


def test_grouping_by_alertname_and_service_or_symbol():
    assert config()["route"]["group_by"] == ["alertname", "service", "symbol"]


def test_kill_switch_inhibits_leverage_but_not_large_positions():
    rules = config()["inhibit_rules"]
    kill = [r for r in rules if r["source_matchers"] == ['alertname="KillSwitchActivated"']]
    assert len(kill) == 1
    assert 'severity="warning"' in kill[0]["target_matchers"]
    targets = re.search(r'alertname=~"([^"]+)"', " ".join(kill[0]["target_matchers"])).group(1).split("|")
    assert "LargePositionSize" not in targets, "a trade while the kill switch is engaged must be seen"
    alerts = alerts_by_name()
    for name in targets:
        assert alerts[name]["labels"]["severity"] == "warning", name
    assert kill[0]["equal"] == ["instance"]


def test_receivers_reach_pagerduty_slack_and_a_webhook_with_secrets_only_in_files():
    found = receivers()
    pager = found["trading-pager"]["pagerduty_configs"][0]
    assert pager["routing_key_file"].startswith(SECRET_DIR) and not {"routing_key", "service_key"} & set(pager)
    slack = found["trading-chat"]["slack_configs"][0]
    assert slack["api_url_file"].startswith(SECRET_DIR) and "api_url" not in slack
    for receiver in found.values():
        for hook in receiver.get("webhook_configs", []):
            assert hook["http_config"]["authorization"]["credentials_file"].startswith(SECRET_DIR)
            assert "credentials" not in hook["http_config"]["authorization"]
    text = ALERTMANAGER.read_text()
    assert not re.search(r"^\s*(api_url|routing_key|service_key|password|credentials|token)\s*:", text, re.MULTILINE), \
        "secrets must come from files, not the config"


def test_every_secret_file_has_a_placeholder_example():
    paths = set(re.findall(re.escape(SECRET_DIR) + r"([\w-]+)", ALERTMANAGER.read_text()))
    assert paths == {"pagerduty-routing-key", "slack-api-url", "webhook-token"}
    for name in paths:
        example = ROOT / "alerts" / f"{name}.example"
        assert example.is_file(), f"alerts/{name}.example is missing"
        assert example.read_text().strip(), example


def test_local_rewrite_used_by_the_stack_is_still_valid(tmp_path):
    token = tmp_path / "token"
    token.write_text("t")
    rewritten = alertmanager_config(ALERTMANAGER.read_text(), "http://127.0.0.1:1", token, fast=True)
    path = tmp_path / "alertmanager.yml"
    path.write_text(rewritten)
    result = amtool("check-config", str(path))
    assert result.returncode == 0, result.stdout + result.stderr
    local = yaml.safe_load(rewritten)
    assert local["route"] != config()["route"]  # shortened waits ...
    assert local["inhibit_rules"] == config()["inhibit_rules"]  # ... same inhibitions
    assert {r["name"]: r["webhook_configs"][0]["url"] for r in local["receivers"]} == {
        name: f"http://127.0.0.1:1/{name}" for name in receivers()}
    assert SECRET_DIR not in str(local["receivers"])


def test_compose_provides_every_secret_file_alertmanager_reads():
    compose = yaml.safe_load((ROOT / "compose.yaml").read_text())
    wanted = set(re.findall(re.escape(SECRET_DIR) + r"([\w-]+)", ALERTMANAGER.read_text()))
    assert wanted <= set(compose["services"]["alertmanager"]["secrets"])
    for name in wanted:
        assert f"./alerts/{name}.example" in compose["secrets"][name]["file"], name


def test_the_exported_readme_describes_every_receiver_and_secret_file():
    """The README `tinywindow-otel assets export` writes must match alertmanager.yml: each receiver,
    each secret file with the key that reads it, each webhook address, the dead-man's switch."""
    from tinywindow_otel.cli.assets import EXPORT_README

    readme = EXPORT_README.format(version="x")
    for name, receiver in receivers().items():
        assert f"`{name}`" in readme, name
        for kind, configs in receiver.items():
            if kind.endswith("_configs"):
                assert f"{kind}." in readme, f"{name}: {kind} not described"
                for hook in configs:
                    if "url" in hook:
                        assert "/" + hook["url"].rsplit("/", 1)[1] in readme, hook["url"]
    for secret_file in set(re.findall(re.escape(SECRET_DIR) + r"[\w-]+", ALERTMANAGER.read_text())):
        assert f"`{secret_file}`" in readme, secret_file
    for key in ("routing_key_file", "api_url_file", "credentials_file"):
        assert key in readme and key in ALERTMANAGER.read_text(), key
    assert "`Watchdog`" in readme and "dead-man" in readme
    assert "http://alert-relay:5001" in readme and "http://alert-relay:5001" in ALERTMANAGER.read_text()
