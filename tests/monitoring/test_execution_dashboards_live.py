"""Every panel of the execution and agents dashboards returns data from a real Prometheus scraping the demo.

The demo is the product's own `tinywindow-otel demo` (orders, feeds, rate limits,
LLM calls, linked outcomes), in a child process on a free port; Prometheus is
the stack's (`LocalStack`, packaged rules), scraping every second, on both
supported versions. Time is compressed on both sides: the test scrapes every
second and reads 10s rate windows (Grafana's 4 scrapes, as in test_live_stack.py)
where the packaged stack scrapes every 15s and reads 60s windows, so the demo runs
10x faster than its default 5 ticks/s; a panel then sees at least as many orders,
LLM calls (one per 20 s at the default rate) and outcomes per window as it does on
the default demo behind the compose stack. Series that stay at 0 in a healthy run
(expired decisions, failed LLM calls) are created at 0 by the demo, so they show 0,
not "no data".
"""

from __future__ import annotations

import json
import os
import queue
import re
import subprocess
import sys
import threading
import time
import urllib.parse

import pytest

from helpers import fetch, require_tool, wait_until
from monitoring.assets import ROOT
from monitoring.panels import panels_without_data
from tinywindow_otel.cli.stack import LocalStack

DASHBOARDS = ("tinywindow-execution", "tinywindow-agents")
RATE = 50  # ticks per second: 10x the default (see the module docstring)
BUDGET_SECONDS = 90


def prometheus_query(stack: LocalStack, expr: str) -> list[dict]:
    body = json.loads(fetch(f"{stack.prometheus_url}/api/v1/query?" + urllib.parse.urlencode({"query": expr})))
    assert body["status"] == "success", body
    return body["data"]["result"]


@pytest.fixture
def demo():
    """`tinywindow-otel demo` on a free port; yields its host:port, then stops it and checks it stopped cleanly."""
    process = subprocess.Popen([sys.executable, "-m", "tinywindow_otel", "demo", "--port", "0", "--rate", str(RATE)],
                               stdout=subprocess.PIPE, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL,
                               env=os.environ.copy(), text=True)
    output: list[str] = []
    serving: queue.Queue[str] = queue.Queue()

    def read() -> None:
        for line in process.stdout:
            output.append(line)
            match = re.search(r"demo: serving https?://([^/\s]+)/metrics", line)
            if match:
                serving.put(match.group(1))

    reader = threading.Thread(target=read, daemon=True)
    reader.start()
    try:
        try:
            target = serving.get(timeout=30)
        except queue.Empty:
            raise AssertionError(f"the demo printed no serving line in 30s: {''.join(output)}") from None
        yield target
    finally:
        process.terminate()  # SIGTERM: the demo stops cleanly
        try:
            process.wait(10)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait(10)
        reader.join(10)
    assert process.returncode == 0, "".join(output)
    assert "Traceback" not in "".join(output), "".join(output)


def test_every_execution_and_agents_panel_has_data_from_the_demo(demo, toolchain):  # both versions
    require_tool("prometheus")
    require_tool("prometheus-alertmanager")
    started = time.monotonic()
    with LocalStack(demo, assets=ROOT, prometheus_port=0, alertmanager_port=0, interval="1s") as stack:
        wait_until(lambda: prometheus_query(stack, 'count_over_time(up{job="tinywindow"}[1m]) >= 4'),
                   timeout=30, interval=0.2, what="four scrapes of the demo")
        assert prometheus_query(stack, 'up{job="tinywindow"} == 1'), "the demo is not scraped"
        empty: list[str] = []

        def all_panels_have_data() -> bool:
            empty[:] = panels_without_data(lambda expr: prometheus_query(stack, expr), DASHBOARDS)
            return not empty

        try:
            wait_until(all_panels_have_data, timeout=45, interval=1.0, what="data on every panel")
        except AssertionError:
            raise AssertionError("panel queries without data:\n" + "\n".join(empty)) from None
    elapsed = time.monotonic() - started
    print(f"execution and agents dashboards: every panel has data {elapsed:.1f}s after the stack started")
    assert elapsed < BUDGET_SECONDS
