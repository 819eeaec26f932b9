"""MetricsServer: background serving, port 0, errors naming host and port, idempotent start."""

from __future__ import annotations

import socket
import urllib.error
import urllib.request

import pytest

from helpers import fetch
from tinywindow_otel import MetricsServer, MetricsServerError, trades_total


def test_start_returns_at_once_and_serves_from_a_background_thread():
    server = MetricsServer(port=0)
    assert server.start() is server
    try:
        assert server.port != 0
        assert server.url == f"http://127.0.0.1:{server.port}/metrics"
        trades_total.labels(status="filled", symbol="BTC/USDT").inc()
        assert 'tinywindow_trades_total{status="filled",symbol="BTC/USDT"} 1.0' in fetch(server.url)
    finally:
        server.stop()


def test_default_host_is_loopback():
    assert MetricsServer().host == "127.0.0.1"


def test_port_in_use_raises_an_error_naming_host_and_port():
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        with pytest.raises(MetricsServerError, match=rf"127\.0\.0\.1:{port}: address already in use"):
            MetricsServer(port=port).start()


def test_start_twice_does_not_start_a_second_server(server):
    port = server.port
    server.start()
    assert server.port == port


def test_stop_releases_the_port_and_start_after_stop_works():
    server = MetricsServer(port=0).start()
    port = server.port
    server.stop()
    server.stop()  # idempotent
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", port))  # free again
    again = MetricsServer(port=port).start()
    try:
        assert "\ntinywindow_trades_total" not in fetch(again.url)  # HELP/TYPE only: nothing recorded
    finally:
        again.stop()


def test_healthz_and_404(server):
    base = f"http://127.0.0.1:{server.port}"
    assert fetch(base + "/healthz") == "ok\n"
    with pytest.raises(urllib.error.HTTPError) as info:
        urllib.request.urlopen(base + "/admin", timeout=5)
    assert info.value.code == 404


def test_prometheus_text_format_even_when_openmetrics_is_asked_for(server):
    from tinywindow_otel import trade_pnl_usd

    trade_pnl_usd.observe(-40.0)
    request = urllib.request.Request(server.url, headers={"Accept": "application/openmetrics-text; version=1.0.0"})
    with urllib.request.urlopen(request, timeout=5) as response:
        assert response.headers["Content-Type"].startswith("text/plain;")
        body = response.read().decode()
    assert "tinywindow_trade_pnl_usd_sum -40.0" in body
    assert "# EOF" not in body
