"""The demo command: starts, serves all 18 families within 5 s, stops cleanly on SIGINT."""

from __future__ import annotations

import os
import re
import shutil
import signal
import socket
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


def run_cli(*argv: str, timeout: float = 30) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "tinywindow_otel", *argv], capture_output=True, text=True,
                          timeout=timeout, env=os.environ.copy())


def test_version_is_the_package_version():
    from importlib.metadata import version

    import tinywindow_otel

    result = run_cli("--version")
    assert result.returncode == 0
    assert result.stdout.strip() == f"tinywindow-otel {tinywindow_otel.__version__}"
    assert tinywindow_otel.__version__ == version("tinywindow-otel")


def test_help_is_plain_text_for_people():
    for argv in ((), ("demo",), ("stack",), ("assets",), ("assets", "export")):
        result = run_cli(*argv, "--help")
        assert result.returncode == 0, argv
        assert "``" not in result.stdout and ":func:" not in result.stdout, argv
    top = run_cli("--help").stdout
    for command in ("demo", "stack", "assets", "hash-password", "docs"):
        assert re.search(rf"^    {command}\b", top, flags=re.MULTILINE), command
    assert "examples:" in top


def test_usage_errors_exit_2_with_one_line():
    for argv in (("no-such-command",), ("demo", "--port", "eighty"), ("demo", "--tls-key", "key.pem")):
        result = run_cli(*argv)
        assert result.returncode == 2, (argv, result.stderr)
        assert "Traceback" not in result.stderr
        assert "error: " in result.stderr.strip().splitlines()[-1], argv


def test_a_port_in_use_is_one_line_and_a_hint_naming_port():
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        result = run_cli("demo", "--port", str(port))
    assert result.returncode == 1
    lines = [line for line in result.stderr.splitlines() if " INFO " not in line]
    assert len(lines) == 2, result.stderr
    assert lines[0].startswith("tinywindow-otel demo: error: ") and f"127.0.0.1:{port}" in lines[0]
    assert "Errno" not in lines[0]
    assert lines[1] == "hint: another program uses that port: choose one with --port (0 = any free port)"
