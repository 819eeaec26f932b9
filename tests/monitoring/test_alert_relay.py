"""alerts/relay.py, compose's alert-relay service: a real Alertmanager (0.25 and 0.35) with the
repository's alertmanager.yml delivers to it; it checks the token and is the dead-man's switch."""

from __future__ import annotations

import json
import sys
import urllib.error
import urllib.request
from pathlib import Path

import pytest
import yaml

from helpers import free_port, require_tool, wait_until
from monitoring.assets import ROOT
from monitoring.deploy import Processes

RELAY = ROOT / "alerts" / "relay.py"
ALERTMANAGER = ROOT / "alerts" / "alertmanager.yml"
TOKEN = "relay-test-token"


def start_relay(procs: Processes, tmp_path: Path, deadmans_timeout: float) -> str:
    token_file = tmp_path / "webhook-token"
    token_file.write_text(TOKEN + "\n")
    process = procs.start("relay", [sys.executable, str(RELAY), "--host", "127.0.0.1", "--port", "0",
                                    "--token-file", str(token_file), "--deadmans-timeout", str(deadmans_timeout)])

    def address():
        assert process.poll() is None, procs.log("relay")
        for record in records(procs):
            if record.get("status") == "listening":
                return "http://" + record["address"]
        return None
    return wait_until(address, timeout=15, interval=0.05, what="the relay listening")


def records(procs: Processes) -> list[dict]:
    return [json.loads(line) for line in procs.log("relay", lines=10_000).splitlines() if line.startswith("{")]


def status(url: str, data: bytes | None = None, token: str | None = TOKEN) -> int:
    request = urllib.request.Request(url, data=data, method="POST" if data is not None else "GET")
    if token is not None:
        request.add_header("Authorization", f"Bearer {token}")
    request.add_header("Content-Type", "application/json")
    try:
        with urllib.request.urlopen(request, timeout=5) as response:
            return response.status
    except urllib.error.HTTPError as error:
        return error.code


def health(url: str) -> str:
    with urllib.request.urlopen(url + "/healthz", timeout=5) as response:
        return response.read().decode()


def payload(alertname: str) -> bytes:
    return json.dumps({"version": "4", "status": "firing", "receiver": "trading-pager", "alerts": [
        {"status": "firing", "labels": {"alertname": alertname, "severity": "critical"},
         "annotations": {"summary": "s"}, "startsAt": "2026-01-01T00:00:00Z"}]}).encode()


def test_relay_rejects_what_is_not_an_authenticated_webhook_and_lapses_without_watchdog(tmp_path):
    with Processes(tmp_path) as procs:
        url = start_relay(procs, tmp_path, deadmans_timeout=1.5)
        assert status(url + "/page", payload("X"), token=None) == 401
        assert status(url + "/page", payload("X"), token="wrong") == 401
        assert status(url + "/nowhere", payload("X")) == 404
        assert status(url + "/page", b"{not json") == 400
        assert status(url + "/page", b'{"alerts": 3}') == 400
        assert not [r for r in records(procs) if r.get("receiver") == "page"]  # nothing rejected was logged
        assert status(url + "/page", payload("CircuitBreakerTripped")) == 200
        assert [r["alertname"] for r in records(procs) if r.get("receiver") == "page"] == ["CircuitBreakerTripped"]
        # No Watchdog within the timeout: unhealthy, logged once; a Watchdog makes it healthy again.
        wait_until(lambda: status(url + "/healthz") == 503, timeout=15, interval=0.1, what="the switch lapsing")
        wait_until(lambda: any(r.get("status") == "lapsed" for r in records(procs)), timeout=15, interval=0.1,
                   what="the lapse logged")
        assert status(url + "/deadmans-switch", payload("Watchdog")) == 200
        assert status(url + "/healthz") == 200
        assert "last Watchdog" in health(url)


@pytest.mark.usefixtures("toolchain")
def test_alertmanager_delivers_pages_and_the_watchdog_to_the_relay(tmp_path):
    with Processes(tmp_path) as procs:
        url = start_relay(procs, tmp_path, deadmans_timeout=600)
        config = (ALERTMANAGER.read_text()
                  .replace("http://alert-relay:5001", url)
                  .replace("/run/secrets/webhook-token", str(tmp_path / "webhook-token")))
        for secret in ("pagerduty-routing-key", "slack-api-url"):
            config = config.replace(f"/run/secrets/{secret}", str(ROOT / "alerts" / f"{secret}.example"))
        parsed = yaml.safe_dump(yaml.safe_load(config))  # without the comments
        assert "http://alert-relay" not in parsed and "/run/secrets/" not in parsed
        (tmp_path / "alertmanager.yml").write_text(config)
        port = free_port()
        alertmanager = procs.start("alertmanager", [
            require_tool("alertmanager"), f"--config.file={tmp_path / 'alertmanager.yml'}",
            f"--storage.path={tmp_path / 'am-data'}", f"--web.listen-address=127.0.0.1:{port}",
            "--cluster.listen-address="])
        base = f"http://127.0.0.1:{port}"
        procs.wait_http("alertmanager", alertmanager, base + "/-/ready")
        alerts = [{"labels": {"alertname": "Watchdog", "severity": "none"}},
                  {"labels": {"alertname": "CircuitBreakerTripped", "severity": "critical", "instance": "app:8000",
                              "reason": "volatility"}, "annotations": {"summary": "The circuit breaker tripped"}}]
        assert status(base + "/api/v2/alerts", json.dumps(alerts).encode(), token=None) == 200

        def delivered():
            got = {(r.get("receiver"), r.get("alertname")) for r in records(procs)}
            return ("page", "CircuitBreakerTripped") in got or None
        # The critical route waits 10s (group_wait) before the first page.
        wait_until(delivered, timeout=40, interval=0.25, what="the page relayed")
        page = next(r for r in records(procs) if r.get("receiver") == "page")
        assert page["status"] == "firing" and page["labels"]["reason"] == "volatility"
        assert page["summary"] == "The circuit breaker tripped"
        # The Watchdog reached the dead-man's switch (group_wait 0s), and only it: not the pager or the chat.
        wait_until(lambda: "last Watchdog" in health(url), timeout=20, interval=0.25, what="the Watchdog relayed")
        assert not [r for r in records(procs) if r.get("alertname") == "Watchdog"]
