"""The README speaks to people about the product: its tour, both Compose versions, nothing else."""

from __future__ import annotations

import re

from conftest import ROOT

README = (ROOT / "README.md").read_text()


def sections() -> dict[str, str]:
    parts = re.split(r"^## (.+)$", README, flags=re.MULTILINE)
    return dict(zip(parts[1::2], parts[2::2]))


# What a reader of the product's text must not meet: where the text came from rather than the
# product. (`--seed N`, the demo's random seed, is an option, not a reference; "on any machine"
# and "one machine" speak of the reader's machine.)
NOT_THE_PRODUCT = {
    "a seed": r"(?<![-\w])seeds?\b",
    "an issue": r"\bissues?\b",
    "a session": r"\bsessions?\b",
    "the contract file": r"\bSPEC\.md\b|\.\./shared\b",
    "the machine the text was written on": r"\b(?:this|that|the|our)\s+(?:[\w-]+\s+){0,3}machine\b",
    "what else ran on it": r"\bother\s+(?:[\w-]+\s+(?:and\s+)?){1,3}(?:running|ran|were running)\b",
}
PRODUCT_TEXTS = [ROOT / "README.md", ROOT / "CHANGELOG.md", *sorted((ROOT / "docs").glob("*.md"))]


def not_the_product(text: str) -> list[str]:
    """'line N: <what>: <the words>' for every mention of something other than the product.

    The whole text is searched, so a phrase wrapped over two lines is found too.
    """
    found = []
    for what, pattern in NOT_THE_PRODUCT.items():
        for match in re.finditer(pattern, text, flags=re.IGNORECASE):
            line = text.count("\n", 0, match.start()) + 1
            found.append(f"line {line}: {what}: {' '.join(match.group(0).split())!r}")
    return sorted(found, key=lambda problem: int(problem.split()[1].rstrip(":")))


def test_the_patterns_catch_what_they_are_for():
    for text in ("as the seed document says", "see issue 7", "in the last session", "read SPEC.md",
                 "on this shared 2-core machine", "on this shared 2-core\nmachine", "on the 2-core machine", "(other jobs running)",
                 "while other builds and test suites ran"):
        assert not_the_product(text), text
    for text in ("`--seed 1` gives a reproducible run", "the ratios hold on any machine",
                 "See alerts fire on one machine", "a loaded machine attributes time slices to the wrong case"):
        assert not not_the_product(text), text


def test_the_readme_and_docs_speak_of_the_product_only():
    found = [f"{path.relative_to(ROOT)} {problem}" for path in PRODUCT_TEXTS if path.exists()
             for problem in not_the_product(path.read_text(encoding="utf-8"))]
    assert not found, "\n".join(found)


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
