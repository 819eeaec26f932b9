"""Metrics server lifecycle faults (server.py, cli.py): port in use, stop mid-scrape, restart, SIGTERM."""

from __future__ import annotations

import http.client
import os
import re
import selectors
import signal
import socket
import subprocess
import sys
import threading
import time

import pytest
import requests
from certs import make_pki
from helpers import fetch, free_port, parse, sample_value, wait_until

from tinywindow_otel import MetricsServer, MetricsServerError
from tinywindow_otel.metrics import REGISTRY
from tinywindow_otel.pipeline import get_pipeline
from tinywindow_otel.security import hash_password


def test_port_in_use_names_host_and_port():
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        with pytest.raises(MetricsServerError, match=rf"127\.0\.0\.1:{port}: address already in use") as excinfo:
            MetricsServer(port=port).start()
        assert isinstance(excinfo.value, OSError)
    with MetricsServer(port=0) as first:
        with pytest.raises(MetricsServerError, match=rf"127\.0\.0\.1:{first.port}"):
            MetricsServer(port=first.port).start()
        assert requests.get(first.url, timeout=5).status_code == 200, "the running server is unaffected"


def test_stop_while_a_scrape_is_in_flight():
    REGISTRY.by_attr("trades_total").labels("filled", "BTC/USDT").inc(7)
    server = MetricsServer(port=0).start()
    port = server.port
    result: dict = {}

    def scrape() -> None:
        try:
            result["text"] = fetch(server.url, timeout=20)
        except Exception as exc:  # noqa: BLE001 - asserted below
            result["error"] = exc

    scrape_lock = get_pipeline().scrape_lock
    with scrape_lock:  # the real lock every scrape takes: the scrape blocks inside render()
        scraper = threading.Thread(target=scrape)
        scraper.start()
        wait_until(lambda: any(t.name.endswith("(process_request_thread)") for t in threading.enumerate()),
                   timeout=10, what="the scrape to reach the server")
        started = time.monotonic()
        server.stop()
        stop_took = time.monotonic() - started
        assert not server.running
    scraper.join(timeout=20)
    assert stop_took < 2.0, f"stop() waited {stop_took:.1f}s for an in-flight scrape"
    assert "error" not in result, result.get("error")
    assert sample_value(parse(result["text"]), "tinywindow_trades_total", status="filled", symbol="BTC/USDT") == 7
    # The port was released: a new server can take it at once.
    with MetricsServer(port=port) as again:
        assert requests.get(again.url, timeout=5).status_code == 200


def test_start_after_stop_and_idempotence():
    port = free_port()
    server = MetricsServer(port=port)
    server.stop()  # stopping a server that never started is a no-op
    for _ in range(3):
        assert server.start() is server
        assert server.start() is server  # idempotent while running
        assert server.port == port
        assert requests.get(server.url, timeout=5).status_code == 200
        server.stop()
        server.stop()
        with pytest.raises(requests.ConnectionError):
            requests.get(server.url, timeout=5)


# --- the demo process -------------------------------------------------------------------


def start_demo(*args: str) -> tuple[subprocess.Popen, str]:
    process = subprocess.Popen(
        [sys.executable, "-m", "tinywindow_otel", "demo", "--host", "127.0.0.1", "--port", "0", "--rate", "50",
         "--seed", "1", *args],
        stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=dict(os.environ),
    )
    selector = selectors.DefaultSelector()
    selector.register(process.stdout, selectors.EVENT_READ)
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline:
        if selector.select(timeout=max(0.0, deadline - time.monotonic())):
            line = process.stdout.readline()
            match = re.search(r"serving (\S+)", line)
            if match:
                return process, match.group(1)
            if not line:
                break
    process.kill()
    raise AssertionError(f"demo did not report its URL: {process.stderr.read()}")


def stop_demo(process: subprocess.Popen) -> tuple[int, str, str]:
    process.send_signal(signal.SIGTERM)
    try:
        out, err = process.communicate(timeout=20)
    except subprocess.TimeoutExpired:
        process.kill()
        out, err = process.communicate()
        raise AssertionError(f"demo ignored SIGTERM for 20s: {err}")
    return process.returncode, out, err


def test_sigterm_stops_the_demo_cleanly():
    process, url = start_demo()
    try:
        families = wait_until(lambda: (lambda f: "tinywindow_trades_total" in f and f)(parse(fetch(url))),
                              timeout=20, what="the demo's /metrics")
        assert "tinywindow_trades_total" in families
        # SIGTERM while a scrape is being served.
        def keep_scraping() -> None:
            try:
                for _ in range(20):
                    fetch(url)
            except (OSError, http.client.HTTPException):
                pass  # the process is going away; only its exit status matters here

        inflight = threading.Thread(target=keep_scraping, daemon=True)
        inflight.start()
    finally:
        code, out, err = stop_demo(process)
    assert code == 0, err
    assert "stopped" in out
    assert "Traceback" not in err, err


def test_demo_serves_tls_and_basic_auth_from_flags(tmp_path):
    pki = make_pki(tmp_path)
    hash_file = tmp_path / "hash"
    hash_file.write_text(hash_password("demo-pass", iterations=10_000))
    process, url = start_demo("--tls-cert", pki.server_cert, "--tls-key", pki.server_key,
                              "--basic-auth-user", "prometheus", "--basic-auth-hash-file", str(hash_file))
    try:
        assert url.startswith("https://")
        assert requests.get(url, verify=pki.server_ca.cert_path, timeout=5).status_code == 401
        response = requests.get(url, verify=pki.server_ca.cert_path, auth=("prometheus", "demo-pass"), timeout=5)
        assert response.status_code == 200 and "tinywindow_trades_total" in response.text
    finally:
        code, _, err = stop_demo(process)
    assert code == 0, err
