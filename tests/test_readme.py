"""The README speaks to people about the product: its tour, both Compose versions, nothing else."""

from __future__ import annotations

import re

from conftest import ROOT

README = (ROOT / "README.md").read_text()


def sections() -> dict[str, str]:
    parts = re.split(r"^## (.+)$", README, flags=re.MULTILINE)
    return dict(zip(parts[1::2], parts[2::2]))


def test_the_readme_speaks_of_the_product_only():
    # The Performance section reports benchmark ratios and is checked with the benchmarks.
    text = "\n".join(body for title, body in sections().items() if title != "Performance")
    # (`--seed N`, the demo's random seed, is an option, not a reference.)
    for pattern in (r"(?<![-\w])seeds?\b", r"\bissues?\b", r"\bthis machine\b", r"\bsession\b"):
        assert not re.search(pattern, text, flags=re.IGNORECASE), pattern


def test_the_tour_goes_from_pip_install_to_a_firing_alert():
    tour = sections()["Five-minute tour"]
    steps = ["pip install tinywindow-otel", "tinywindow-otel --version", "MetricsServer(", "Counter(",
             "tinywindow-otel assets export", "tinywindow-otel stack", "[FIRING]"]
    positions = [tour.find(step) for step in steps]
    assert -1 not in positions, dict(zip(steps, positions))
    assert positions == sorted(positions)


def test_both_compose_versions_are_explained():
    docker = sections()["Monitoring assets"]
    assert "docker compose up -d" in docker and "docker-compose up -d" in docker
    assert "Compose v2" in docker and "Compose v1" in docker


def python_block_after(heading: str) -> str:
    body = README.split(heading + "\n", 1)[1]
    return re.search(r"```python\n(.*?)```", body, flags=re.DOTALL).group(1)


def test_the_own_metrics_example_runs_and_shows_on_metrics():
    import subprocess
    import sys

    program = python_block_after("### Your own metrics") + (
        "import urllib.request\n"
        "from tinywindow_otel import MetricsServer\n"
        "with MetricsServer(port=0) as server:\n"
        "    print(urllib.request.urlopen(server.url, timeout=5).read().decode())\n"
    )
    result = subprocess.run([sys.executable, "-c", program], capture_output=True, text=True, timeout=60)
    assert result.returncode == 0, result.stderr
    for line in ('signals_total{strategy="momentum"} 1.0', 'open_orders{exchange="binance"} 3.0',
                 'fill_seconds_bucket{exchange="binance",le="0.5"} 1.0', 'fill_seconds_count{exchange="binance"} 1.0'):
        assert line in result.stdout.splitlines(), line
