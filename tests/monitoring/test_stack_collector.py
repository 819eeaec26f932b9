"""`tinywindow-otel stack --collector`: demo -> OTLP -> our collector -> remote write -> Prometheus, on both toolchains."""

from __future__ import annotations

import json
import os
import queue
import re
import signal
import socket
import subprocess
import sys
import threading
import urllib.parse

import pytest

from helpers import fetch, wait_until
from monitoring.assets import ROOT
from tinywindow_otel.cli import stack


def query(prometheus: str, expr: str) -> list[dict]:
    body = json.loads(fetch(prometheus + "/api/v1/query?" + urllib.parse.urlencode({"query": expr})))
    assert body["status"] == "success", body
    return body["data"]["result"]


def test_prometheus_config_for_a_pushing_app_scrapes_only_the_collector():
    import yaml

    config = yaml.safe_load(stack.prometheus_config(None, "127.0.0.1:9093", "1s", "127.0.0.1:8888"))
    assert [(j["job_name"], j["static_configs"][0]["targets"]) for j in config["scrape_configs"]] == [
        (stack.COLLECTOR_JOB, ["127.0.0.1:8888"]), (stack.ALERTMANAGER_JOB, ["127.0.0.1:9093"])]


def test_a_bad_interval_is_a_clear_error():
    with pytest.raises(stack.StackError, match="5 seconds"):
        stack.duration_millis("5 seconds")
    assert stack.duration_millis("1m30s") == 90_000


@pytest.mark.usefixtures("toolchain")  # remote write into Prometheus 2.42 and 3.x
def test_stack_collector_pushes_the_demo_through_the_collector(otelcol):
    process = subprocess.Popen(
        [sys.executable, "-m", "tinywindow_otel", "stack", "--collector", "--otelcol", otelcol,
         "--prometheus-port", "0", "--alertmanager-port", "0", "--interval", "1s", "--seed", "1"],
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
                match = re.match(r"\s+(otlp|prometheus|alerts|alertmanager)\s+(http://\S+)", line)
                if match:
                    urls[match.group(1)] = match.group(2)
            return len(urls) == 4 or process.poll() is not None
        wait_until(read_urls, timeout=40, interval=0.1, what="the stack's URLs")
        assert len(urls) == 4, "".join(output)
        prometheus = urls["prometheus"]

        # The demo's series arrive by remote write, labelled with its resource, not scraped.
        pushed = wait_until(
            lambda: query(prometheus, 'tinywindow_portfolio_value_usd{job="tinywindow", instance="stack-demo"}'),
            timeout=30, interval=0.25, what="the demo's series remote-written by the collector")
        assert pushed[0]["metric"]["deployment_environment"] == "local"
        assert query(prometheus, 'up{job="tinywindow"}') == []  # nothing scraped from the app
        wait_until(lambda: query(prometheus, 'up{job="otel-collector"} == 1'), timeout=20, interval=0.25,
                   what="the collector's own metrics scraped")
        sent = wait_until(lambda: query(prometheus, 'otelcol_exporter_sent_metric_points_total'
                                                    '{exporter="prometheus_remote_write"} > 0'),
                          timeout=20, interval=0.25, what="the collector counting what it remote-wrote")
        assert sent
        # Rate windows see one point per interval (push interval = scrape interval here).
        samples = wait_until(lambda: query(prometheus, 'count_over_time(tinywindow_portfolio_value_usd[5s]) >= 4'),
                             timeout=20, interval=0.25, what="4 pushed samples in a 5s window at a 1s push interval")
        assert samples

        process.send_signal(signal.SIGTERM)
        assert process.wait(30) == 0
    finally:
        if process.poll() is None:
            process.kill()
            process.wait(10)
    reader.join(10)  # the pipe closed: everything printed is in the queue
    rest = []
    while not lines.empty():
        rest.append(lines.get())
    assert "tinywindow-otel stack: stopped" in "".join(output + rest)
    for name in ("otlp", "prometheus", "alertmanager"):  # the collector is stopped with the rest
        host, port = urllib.parse.urlsplit(urls[name]).hostname, urllib.parse.urlsplit(urls[name]).port
        with socket.socket() as sock:
            sock.settimeout(1)
            assert sock.connect_ex((host, port)) != 0, f"{name} still listening after stop"
