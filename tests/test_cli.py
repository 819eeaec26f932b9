"""The demo command: starts, serves all 18 families within 5 s, stops cleanly on SIGINT."""

from __future__ import annotations

import os
import shutil
import signal
import subprocess
import sys
from pathlib import Path

import pytest

from helpers import free_port, scrape, wait_until
from tinywindow_otel.catalog import CATALOG


def console_script() -> list[str]:
    script = Path(sys.executable).with_name("tinywindow-otel")
    found = str(script) if script.exists() else shutil.which("tinywindow-otel")
    if found is None:
        pytest.fail("console script tinywindow-otel is not installed (pip install -e .)")
    return [found]


@pytest.mark.parametrize("command", [[sys.executable, "-m", "tinywindow_otel"], "console-script"])
def test_demo_serves_all_families_and_stops_on_sigint(command):
    argv = console_script() if command == "console-script" else command
    port = free_port()
    process = subprocess.Popen(
        [*argv, "demo", "--port", str(port), "--rate", "20"],
        stdout=subprocess.PIPE, stderr=subprocess.STDOUT, env=os.environ.copy(), text=True,
    )
    try:
        expected = {spec.exposed_name for spec in CATALOG}
        families = wait_until(
            lambda: (lambda f: f if expected <= set(f) else None)(scrape(f"http://127.0.0.1:{port}/metrics")),
            timeout=5.0, what="all 18 families on the demo's /metrics",
        )
        assert expected <= set(families)
        process.send_signal(signal.SIGINT)
        output, _ = process.communicate(timeout=10)
        assert process.returncode == 0, output
        assert "stopped" in output
        assert "Traceback" not in output
    finally:
        if process.poll() is None:
            process.kill()
            process.wait(5)


def test_docs_command_prints_the_catalog_table():
    result = subprocess.run([sys.executable, "-m", "tinywindow_otel", "docs"], capture_output=True, text=True,
                            timeout=30, env=os.environ.copy())
    assert result.returncode == 0
    assert all(spec.exposed_name in result.stdout for spec in CATALOG)
