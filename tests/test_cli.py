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


# Each is refused when the command line is read: nothing starts, so a missing check shows as a
# traceback, a non-2 status, a "serving" line or the subprocess timeout (the demo runs until stopped).
USAGE_ERRORS = [
    ("no-such-command",),
    (),
    ("demo", "--port", "eighty"),
    ("demo", "--tls-key", "key.pem"),
    ("demo", "--rate", "0"),
    ("demo", "--rate", "-1"),
    ("demo", "--rate", "nan"),
    ("demo", "--rate", "inf"),
    ("demo", "--rate", "1e6"),
    ("demo", "--port", "70000"),
    ("demo", "--port", "-1"),
    ("demo", "--seed", "1.5"),
    ("stack", "--interval", "bogus"),
    ("stack", "--interval", "0s"),
    ("stack", "--interval", "-5s"),
    ("stack", "--interval", "1h"),
    ("stack", "--rate", "0"),
    ("stack", "--port", "70000"),
    ("stack", "--prometheus-port", "65536"),
    ("stack", "--alertmanager-port", "-1"),
    ("stack", "--port", "0", "--prometheus-port", "9999", "--alertmanager-port", "9999"),
    ("stack", "--assets", "no-such-folder"),
    ("stack", "--otelcol", "no-such-collector"),
    ("hash-password", "--iterations", "0"),
    ("hash-password", "--iterations", "-3"),
    ("hash-password", "--iterations", "100"),
    ("hash-password", "--iterations", "ten"),
    ("assets",),
    ("assets", "export"),
]


@pytest.mark.parametrize("argv", USAGE_ERRORS, ids=lambda argv: " ".join(argv) or "(none)")
def test_usage_errors_are_one_line_and_a_hint_with_status_2_before_anything_starts(argv):
    result = subprocess.run([sys.executable, "-m", "tinywindow_otel", *argv], capture_output=True, text=True,
                            timeout=15, input="password\n", env=os.environ.copy())
    assert result.returncode == 2, (argv, result.stderr)
    assert result.stdout == "", result.stdout
    lines = result.stderr.splitlines()
    assert len(lines) == 2, result.stderr
    # The command that was given, or the program when the command itself is wrong.
    command = " ".join(["tinywindow-otel", *[a for a in argv[:2] if re.fullmatch(r"demo|stack|assets|export|hash-password", a)]])
    assert lines[0].startswith(f"{command}: error: "), (command, lines[0])
    assert lines[1].startswith("hint: "), lines[1]
    assert "Traceback" not in result.stderr and "serving" not in result.stderr


def test_usage_errors_name_what_was_wrong_and_the_allowed_range():
    def error(*argv: str) -> str:
        return run_cli(*argv, timeout=15).stderr.splitlines()[0]

    assert "--rate" in error("demo", "--rate", "0") and "above 0" in error("demo", "--rate", "0")
    assert "--port" in error("demo", "--port", "70000") and "0 to 65535" in error("demo", "--port", "70000")
    assert "'bogus'" in error("stack", "--interval", "bogus") and "1s to 15s" in error("stack", "--interval", "bogus")
    assert "10000" in error("hash-password", "--iterations", "0")
    assert "differ" in error("stack", "--port", "9999", "--prometheus-port", "9999")


def test_hash_password_takes_the_fewest_iterations_the_server_accepts():
    from tinywindow_otel.security import BasicAuth

    result = subprocess.run([sys.executable, "-m", "tinywindow_otel", "hash-password", "--iterations", "10000"],
                            capture_output=True, text=True, timeout=30, input="s3cret\n", env=os.environ.copy())
    assert result.returncode == 0, result.stderr
    assert result.stdout.startswith("pbkdf2_sha256$10000$")
    BasicAuth("prometheus", result.stdout.strip())  # the server accepts the hash


def test_stack_without_prometheus_says_so_before_serving_anything(tmp_path):
    # PATH without prometheus/alertmanager: refused before the demo's server starts (no "serving" line).
    result = subprocess.run([sys.executable, "-m", "tinywindow_otel", "stack", "--port", "0", "--prometheus-port", "0",
                             "--alertmanager-port", "0"], capture_output=True, text=True, timeout=15,
                            env={**os.environ, "PATH": str(tmp_path)})
    assert result.returncode == 1, result.stderr
    assert result.stderr.splitlines() == [
        "tinywindow-otel stack: error: none of prometheus is installed "
        "(Debian: apt-get install prometheus prometheus-alertmanager)"]
    assert result.stdout == ""


def test_demo_help_says_what_the_demo_simulates():
    text = " ".join(run_cli("demo", "--help").stdout.split())
    for thing in ("orders", "exchange feeds", "LLM calls", "calibration"):
        assert thing in text, thing


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
