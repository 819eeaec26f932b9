from __future__ import annotations

import sys
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).parent))

from tinywindow_otel import MetricsServer  # noqa: E402
from tinywindow_otel.testing import reset_values  # noqa: E402

ROOT = Path(__file__).resolve().parent.parent


@pytest.fixture(autouse=True)
def clean_registry():
    """Every test starts with no series and fresh derived-value state."""
    reset_values()
    yield


@pytest.fixture
def server():
    """A real metrics server on a free loopback port."""
    with MetricsServer(host="127.0.0.1", port=0) as running:
        yield running


@pytest.fixture
def scrape_metrics(server):
    """Scrape the test server and parse the exposition with prometheus_client's parser."""
    from helpers import scrape

    return lambda: scrape(server.url)
