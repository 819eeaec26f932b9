"""tinywindow_otel/stack.py and `tinywindow-otel stack`: real binaries on loopback, clean start and stop.

The tests that start binaries run on both toolchains (Prometheus 2.42 + Alertmanager 0.25,
Prometheus 3.x + Alertmanager 0.35: the ``toolchain`` fixture puts one set first on PATH).
"""

from __future__ import annotations

import json
import os
import queue
import re
import shutil
import signal
import socket
import subprocess
import sys
import threading
import urllib.parse

import pytest
import yaml

from helpers import fetch, wait_until
from monitoring.assets import ROOT
from monitoring.toolchain import prometheus_version
from tinywindow_otel.cli import stack


@pytest.fixture
def binaries(toolchain):
    return toolchain


def refuses_connections(url: str) -> bool:
    host, port = re.match(r"http://([^:/]+):(\d+)", url).groups()
    with socket.socket() as sock:
        sock.settimeout(1)
        return sock.connect_ex((host, int(port))) != 0


def test_find_assets_names_what_is_missing(tmp_path):
    with pytest.raises(stack.StackError, match="alerts/tinywindow.rules.yml"):
        stack.find_assets(tmp_path)
    assert stack.find_assets(ROOT) == ROOT


def test_missing_binary_is_a_clear_error():
    with pytest.raises(stack.StackError, match="no-such-prometheus.*apt-get install"):
        stack.find_binary(("no-such-prometheus",))


def test_a_broken_rule_file_stops_startup_with_prometheus_log(binaries, tmp_path):
    shutil.copytree(ROOT / "alerts", tmp_path / "alerts")
    rules = tmp_path / "alerts" / "tinywindow.rules.yml"
    rules.write_text(rules.read_text().replace("tinywindow_drawdown_pct[45s]) > 15", "tinywindow_drawdown_pct[45s]) >>> 15"))
    local = stack.LocalStack("127.0.0.1:1", assets=tmp_path, prometheus_port=0, alertmanager_port=0)
    with pytest.raises(stack.StackError, match="prometheus exited"):
        local.start(timeout=30)
    assert local.workdir is None  # cleaned up
    assert refuses_connections(local.alertmanager_url)  # and Alertmanager was stopped again


def test_stack_command_prints_urls_that_answer_and_stops_cleanly(binaries):
    process = subprocess.Popen(
        [sys.executable, "-m", "tinywindow_otel", "stack", "--port", "0", "--prometheus-port", "0",
         "--alertmanager-port", "0", "--interval", "1s", "--seed", "1"],
        cwd=ROOT, env=os.environ.copy(), stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
    )
    lines: queue.Queue[str] = queue.Queue()
    reader = threading.Thread(target=lambda: [lines.put(line) for line in process.stdout], daemon=True)
    reader.start()
    urls: dict[str, str] = {}
    output: list[str] = []
    try:
        def read_urls():
            while not lines.empty():
                line = lines.get()
                output.append(line)
                match = re.match(r"\s+(metrics|prometheus|alerts|alertmanager)\s+(http://\S+)", line)
                if match:
                    urls[match.group(1)] = match.group(2)
            return len(urls) == 4 or process.poll() is not None
        wait_until(read_urls, timeout=40, interval=0.1, what="the stack's URLs")
        assert len(urls) == 4, "".join(output)
        assert all(u.startswith("http://127.0.0.1:") for u in urls.values())

        assert "tinywindow_portfolio_value_usd" in fetch(urls["metrics"])
        assert "Ready" in fetch(urls["prometheus"] + "/-/ready")
        fetch(urls["alertmanager"] + "/-/ready")  # raises unless 200
        status = json.loads(fetch(urls["alertmanager"] + "/api/v2/status"))
        assert status["cluster"]["status"] == "disabled"
        # The command found this toolchain's binaries on PATH.
        build = json.loads(fetch(urls["prometheus"] + "/api/v1/status/buildinfo"))["data"]["version"]
        assert build == prometheus_version(binaries.prometheus), (binaries.name, build)
        assert status["versionInfo"]["version"].split(".")[:2] == {"debian": ["0", "25"], "current": ["0", "35"]}[
            binaries.name], status["versionInfo"]

        def scraped():
            query = 'up{job="tinywindow"} == 1'
            body = json.loads(fetch(urls["prometheus"] + "/api/v1/query?query=" + urllib.parse.quote(query)))
            return body["data"]["result"]
        wait_until(scraped, timeout=20, interval=0.2, what="Prometheus scraping the demo")
        rules = json.loads(fetch(urls["prometheus"] + "/api/v1/rules"))["data"]["groups"]
        assert sum(len(g["rules"]) for g in rules) == sum(
            len(group["rules"]) for path in (ROOT / "alerts").glob("*.rules.yml")
            for group in yaml.safe_load(path.read_text())["groups"])

        process.send_signal(signal.SIGTERM)
        assert process.wait(20) == 0
    finally:
        if process.poll() is None:
            process.kill()
            process.wait(10)
    reader.join(10)  # the pipe closed: everything printed is in the queue
    rest = []
    while not lines.empty():
        rest.append(lines.get())
    assert "tinywindow-otel stack: stopped" in "".join(output + rest)
    for name in ("metrics", "prometheus", "alertmanager"):
        assert refuses_connections(urls[name]), f"{name} still listening after stop"
