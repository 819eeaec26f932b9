"""The interface's three usage snippets (tests/data) run with only the import path changed."""

from __future__ import annotations

import re

import pytest

from helpers import free_port, sample_value, scrape
from tinywindow_otel.metrics import REGISTRY
from test_catalog import INTERFACE


def interface_snippets() -> list[str]:
    blocks = re.findall(r"```python\n(.*?)```", INTERFACE.read_text(), flags=re.DOTALL)
    assert len(blocks) == 3, "the interface has three Python snippets"
    return [
        block.replace("from tinywindow.monitoring.exporters import", "from tinywindow_otel.exporters import")
        .replace("from tinywindow.monitoring import", "from tinywindow_otel import")
        for block in blocks
    ]


@pytest.fixture
def snippet_server():
    """Run the server snippet as written, but on a free port (and stop it afterwards)."""
    port = free_port()
    namespace: dict = {}
    exec(interface_snippets()[0].replace("port=8000", f"port={port}"), namespace)  # noqa: S102
    server = namespace["server"]
    assert server.host == "0.0.0.0"
    yield f"http://127.0.0.1:{port}/metrics"
    server.stop()


def test_server_snippet_serves_metrics(snippet_server):
    assert isinstance(scrape(snippet_server), dict)


def test_recording_snippet_produces_its_samples(snippet_server):
    exec(interface_snippets()[1], {"pnl_value": -250.0, "latency": 0.3})  # noqa: S102
    families = scrape(snippet_server)
    assert sample_value(families, "tinywindow_trades_total", status="filled", symbol="BTC/USDT") == 1.0
    assert sample_value(families, "tinywindow_trade_pnl_usd_sum") == -250.0
    assert sample_value(families, "tinywindow_trade_pnl_usd_count") == 1.0
    assert sample_value(families, "tinywindow_api_latency_seconds_count", service="claude") == 1.0
    assert sample_value(families, "tinywindow_api_latency_seconds_bucket", service="claude", le="0.25") == 0.0
    assert sample_value(families, "tinywindow_api_latency_seconds_bucket", service="claude", le="0.5") == 1.0


def test_exporters_snippet_produces_its_samples(snippet_server):
    exec(interface_snippets()[2], {})  # noqa: S102
    families = scrape(snippet_server)
    assert sample_value(families, "tinywindow_trades_total", status="filled", symbol="BTC/USDT") == 1.0
    assert sample_value(families, "tinywindow_trade_pnl_usd_sum") == 150.0
    assert sample_value(families, "tinywindow_trade_amount_usd_sum", symbol="BTC/USDT") == 1000.0
    assert sample_value(families, "tinywindow_win_rate") == 100.0
    assert sample_value(families, "tinywindow_portfolio_value_usd") == 50000.0
    assert sample_value(families, "tinywindow_unrealized_pnl_usd") == 500.0
    assert sample_value(families, "tinywindow_active_positions", symbol="BTC/USDT") == 0.1
    assert sample_value(families, "tinywindow_leverage_ratio") == 1.5
    assert sample_value(families, "tinywindow_api_requests_total", service="binance") == 1.0
    assert sample_value(families, "tinywindow_api_latency_seconds_sum", service="binance") == 0.15
    assert "tinywindow_api_errors_total" not in families or not families["tinywindow_api_errors_total"].samples
    assert len(REGISTRY.get("tinywindow_api_errors_total").series()) == 0
