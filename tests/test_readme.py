"""The README speaks to people about the product: its tour, both Compose versions, nothing else."""

from __future__ import annotations

import asyncio
import re
import subprocess
import sys

from conftest import ROOT
from helpers import parse, parse_all, sample_value

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


def test_the_tour_says_how_to_install_without_a_package_index():
    # The wheel route is the one tests/test_packaging.py takes (python -m build, then pip install
    # the wheel in a fresh venv outside the checkout) before following the rest of the tour.
    install = sections()["Five-minute tour"].split("**2.", 1)[0]
    for command in ("pip install tinywindow-otel", "pip install ./tinywindow-otel", "pip install build",
                    "python -m build ./tinywindow-otel", "pip install ./tinywindow-otel/dist/tinywindow_otel-*.whl"):
        assert command in install, command


def test_both_compose_versions_are_explained():
    docker = sections()["Monitoring assets"]
    assert "docker compose up -d" in docker and "docker-compose up -d" in docker
    assert "Compose v2" in docker and "Compose v1" in docker


# --- every python block of the README runs, or says why not ------------------------------------


def python_blocks() -> dict[str, str]:
    """{"<heading> #<n>": code} for every ```python block; n counts the blocks under one heading."""
    blocks: dict[str, str] = {}
    heading, counts = "", {}
    for match in re.finditer(r"^(#{2,4} [^\n]+)$|^```python\n(.*?)^```", README, flags=re.MULTILINE | re.DOTALL):
        if match.group(1):
            heading = match.group(1).lstrip("#").strip()
            continue
        number = counts.get(heading, 0)
        counts[heading] = number + 1
        blocks[f"{heading} #{number}"] = match.group(2)
    return blocks


def block(key: str) -> str:
    return python_blocks()[key]


RUN_HERE: dict[str, str] = {}  # block -> the test below that runs it


def runs(*keys: str):
    def mark(test):
        for key in keys:
            RUN_HERE[key] = test.__name__
        return test
    return mark


RUN_ELSEWHERE = {
    "Five-minute tour #0": "tests/test_packaging.py::test_the_tour_program_serves_what_the_readme_shows "
                           "runs it from the installed wheel",
}
NOT_RUN = {
    "Securing `/metrics` #0": "needs the reader's certificate, key, CA and password hash files; "
                              "tests/test_server_security.py makes the same calls with generated ones",
}


def test_every_python_block_of_the_readme_runs_or_says_why_not():
    blocks = set(python_blocks())
    accounted = set(RUN_HERE) | set(RUN_ELSEWHERE) | set(NOT_RUN)
    assert not blocks - accounted, f"README python blocks that no test runs: {sorted(blocks - accounted)}"
    assert not accounted - blocks, f"entries for blocks the README no longer has: {sorted(accounted - blocks)}"


MARKER = "--- /metrics ---"
SHOW_METRICS = (f"print({MARKER!r})\n"
                "from tinywindow_otel.pipeline import render_metrics\n"
                "print(render_metrics()[0].decode())\n")


def run_program(*parts: str, timeout: float = 60) -> str:
    """Run the parts as one program in a fresh interpreter (its own registry); its stdout."""
    result = subprocess.run([sys.executable, "-c", "\n".join(parts)], capture_output=True, text=True,
                            timeout=timeout, cwd=ROOT)
    assert result.returncode == 0, result.stderr
    return result.stdout


def metrics_after(*parts: str) -> dict:
    """The /metrics body (parsed) once the program made of ``parts`` has run."""
    return parse(run_program(*parts, SHOW_METRICS).split(MARKER, 1)[1])


@runs("Usage #0", "Usage #1")
def test_the_usage_blocks_record_what_they_say():
    usage = block("Usage #0")
    assert "port=8000" in usage
    families = metrics_after(usage.replace("port=8000", "port=0"), block("Usage #1"), "server.stop()")

    def value(name, **labels):
        return sample_value(families, name, **labels)

    assert value("tinywindow_trades_total", status="filled", symbol="BTC/USDT") == 2  # raw inc + record_trade
    assert value("tinywindow_trades_total", status="rejected", symbol="BTC/USDT") == 0  # initialise()
    assert value("tinywindow_trade_pnl_usd_sum") == -120.5 + 150.0  # the loss is kept
    assert value("tinywindow_trade_pnl_usd_bucket", le="0.0") == 1
    assert value("tinywindow_win_rate") == 100.0  # from record_trade; a raw observe() is no trade
    assert value("tinywindow_portfolio_value_usd") == 50000.0
    assert value("tinywindow_active_positions", symbol="BTC/USDT") == 0.1
    assert value("tinywindow_leverage_ratio") == 1.5
    assert value("tinywindow_api_latency_seconds_count", service="claude") == 1
    assert value("tinywindow_api_requests_total", service="binance") == 1


@runs("Your own metrics #0")
def test_the_own_metrics_example_shows_on_metrics():
    families = metrics_after(block("Your own metrics #0"))
    assert sample_value(families, "signals_total", strategy="momentum") == 1
    assert sample_value(families, "open_orders", exchange="binance") == 3
    assert sample_value(families, "fill_seconds_bucket", exchange="binance", le="0.5") == 1
    assert sample_value(families, "fill_seconds_count", exchange="binance") == 1


@runs("`/metrics` in your own web server #0")
def test_the_fastapi_block_serves_metrics_at_the_path_itself():
    from test_apps import check_metrics_endpoint, uvicorn_serving

    namespace: dict = {}
    exec(block("`/metrics` in your own web server #0"), namespace)
    with uvicorn_serving(namespace["app"]) as (_, base):
        check_metrics_endpoint(base + "/metrics")  # 200 at /metrics (no redirect), same body as MetricsServer


@runs("`/metrics` in your own web server #1")
def test_the_flask_block_serves_metrics_beside_the_app():
    from flask import Flask
    from test_apps import check_metrics_endpoint, waitress_serving

    namespace: dict = {"flask_app": Flask("the_readers_app")}
    exec(block("`/metrics` in your own web server #1"), namespace)
    with waitress_serving(namespace["flask_app"]) as base:
        check_metrics_endpoint(base + "/metrics")


# Names the README's blocks take from the reader's program, as small stand-ins.
EXCHANGE = """
class Exchange:
    def fetch_ticker(self, symbol):
        return {"symbol": symbol, "last": 64000.0}

    def create_order(self, symbol, type, side, amount, price=None):
        return {"id": "1", "status": "closed", "filled": amount}

exchange = Exchange()
"""


@runs("API calls #0")
def test_the_api_call_block_counts_both_calls():
    families = metrics_after(EXCHANGE, block("API calls #0"), "import asyncio\nasyncio.run(ask('hello'))")
    for service in ("claude", "binance"):
        assert sample_value(families, "tinywindow_api_requests_total", service=service) == 1, service
        assert sample_value(families, "tinywindow_api_latency_seconds_count", service=service) == 1, service


@runs("Trades #0")
def test_the_trades_block_records_both_trades():
    families = metrics_after(EXCHANGE, "from ccxt import InvalidOrder", block("Trades #0"),
                             "import asyncio\nasyncio.run(place(symbol='ETH/USDT', side='buy', amount=0.1))")
    assert sample_value(families, "tinywindow_trades_total", status="filled", symbol="BTC/USDT") == 1
    assert sample_value(families, "tinywindow_trades_total", status="filled", symbol="ETH/USDT") == 1
    assert sample_value(families, "tinywindow_trade_pnl_usd_sum") == 150.0  # the ETH trade has no P&L
    assert sample_value(families, "tinywindow_trade_amount_usd_sum", symbol="ETH/USDT") == 1000.0


@runs("Agent decisions #0")
def test_the_agent_decisions_block_records_each_decision():
    decision = "from dataclasses import dataclass\n@dataclass\nclass Decision:\n    action: str\n    confidence: float\n"
    drive = ("import asyncio\n"
             "assert decide('market') is None  # the block's body returns no decision\n"
             "async def consume():\n"
             "    return [item async for item in scan(['BTC/USDT', 'ETH/USDT'])]\n"
             "asyncio.run(consume())\n")
    families = metrics_after(decision, block("Agent decisions #0"), drive)
    assert sample_value(families, "tinywindow_agent_decisions_total", action="buy", agent="scanner") == 2
    assert sample_value(families, "tinywindow_agent_decisions_total", action="sell", agent="risk") == 1
    assert sample_value(families, "tinywindow_agent_confidence_count", agent="analyst") == 0  # None: no decision


@runs("Timing and counting exceptions with any metric #0")
def test_the_timing_block_times_and_counts():
    drive = "import asyncio\nasyncio.run(ask('hello'))\ncall()\n"
    families = metrics_after(block("Timing and counting exceptions with any metric #0"), drive)
    assert sample_value(families, "tinywindow_api_latency_seconds_count", service="claude") == 1
    assert sample_value(families, "tinywindow_api_latency_seconds_count", service="binance") == 1
    assert sample_value(families, "tinywindow_api_errors_total", service="claude", type="timeout") == 0


@runs("State: trading halted, positions, heartbeats, restarts #0")
def test_the_state_block_round_trips_through_json():
    code = block("State: trading halted, positions, heartbeats, restarts #0")
    check = ("assert isinstance(state, dict)\n"
             "assert json.loads(saved) == state\n"
             "exporters.restore_state(state)  # the dict works too\n")
    families = metrics_after(code, check)
    assert sample_value(families, "tinywindow_circuit_breaker_trips_total", reason="daily_loss") == 1
    assert sample_value(families, "tinywindow_circuit_breaker_open", reason="daily_loss") == 0
    assert sample_value(families, "tinywindow_kill_switch_activations_total", mode="manual") == 1
    assert sample_value(families, "tinywindow_kill_switch_engaged", mode="manual") == 0


@runs("Orders, exchange feeds, LLM calls and agent calibration #0")
def test_the_orders_feeds_llm_and_calibration_block_fills_each_area():
    context = ("import ccxt\n"  # the real package: constructing an exchange needs no network
               "from types import SimpleNamespace\n"
               "response = SimpleNamespace(headers={'X-MBX-USED-WEIGHT-1M': '1200'})\n")
    drive = "import asyncio\nasyncio.run(ask('hello'))\nassert exchange.create_order.__wrapped__\n"
    families = metrics_after(context, block("Orders, exchange feeds, LLM calls and agent calibration #0"), drive)

    def value(name, **labels):
        return sample_value(families, name, **labels)

    for status in ("submitted", "acknowledged", "filled"):
        assert value("tinywindow_orders_total", venue="binance", status=status) == 1, status
    assert value("tinywindow_slippage_bps_count", venue="binance", side="buy") == 1
    assert value("tinywindow_order_fill_ratio_sum", venue="binance") == 1.0
    assert value("tinywindow_exchange_feed_age_seconds", venue="binance", stream="trades") is not None
    assert value("tinywindow_exchange_rate_limit_used_ratio", venue="binance") == 1200 / 6000
    assert value("gen_ai_client_operation_duration_seconds_count", gen_ai_operation_name="chat",
                 gen_ai_provider_name="anthropic", gen_ai_request_model="claude-sonnet-4") == 1  # no error.type
    assert value("tinywindow_agent_outcomes_total", agent="analyst", confidence_bucket="0.8-0.9", outcome="loss") == 1
    assert value("tinywindow_agent_brier_score", agent="analyst") == 0.8 ** 2


@runs("Sending to a collector #0")
def test_the_configure_block_pushes_to_the_collector_it_names():
    from otlp_receiver import OTLPReceiver, metrics_of, resource_of

    code = block("Sending to a collector #0")
    assert '"http://otel-collector:4318"' in code
    with OTLPReceiver() as receiver:
        run_program(code.replace("http://otel-collector:4318", receiver.endpoint),
                    "from tinywindow_otel import trades_total\n"
                    "trades_total.labels(status='filled', symbol='BTC/USDT').inc()\n"
                    "tinywindow_otel.force_flush()\n")
        [(_, request), *_] = receiver.wait_for(lambda requests: requests)
    resource = resource_of(request)
    assert resource["service.name"] == "tinywindow"  # job="tinywindow", as the alert rules select
    assert resource["service.instance.id"] == "bot-1"  # instance, the same after a restart
    assert "tinywindow_trades_total" in metrics_of(request)


@runs("Cardinality caps #0")
def test_the_cardinality_block_sets_the_caps_it_names():
    check = ("assert active_positions.max_series == 1000\n"
             "assert REGISTRY.get('tinywindow_trades_total').max_series == 8000\n"
             "assert REGISTRY.get('tinywindow_trade_amount_usd').max_series == 1000\n")
    run_program(block("Cardinality caps #0"), check)


# --- what the README says about the first scrape, and where its links go --------------------------


def test_the_first_scrape_shows_what_the_readme_says():
    from tinywindow_otel.catalog import ALL_METRICS

    paragraph = README.split("Every catalog family is on `/metrics` from the first scrape", 1)[1].split("\n\n")[0]
    said = " ".join(paragraph.split())
    assert "unlabelled histogram (`tinywindow_trade_pnl_usd`) shows its series at 0" in said
    assert "unlabelled gauge (`tinywindow_win_rate`, `tinywindow_portfolio_value_usd`) shows no sample" in said
    assert "each `tinywindow_otel_*` self-metric (one series with empty labels" in said
    families = parse_all(run_program(SHOW_METRICS).split(MARKER, 1)[1])  # a fresh process, nothing recorded
    assert {spec.exposed_name for spec in ALL_METRICS} <= set(families)  # HELP and TYPE of every family
    assert sample_value(families, "tinywindow_trade_pnl_usd_count") == 0
    for gauge in ("tinywindow_win_rate", "tinywindow_portfolio_value_usd"):
        assert families[gauge].samples == [], gauge
    assert families["tinywindow_trades_total"].samples == []  # labelled: no label set used yet
    self_metrics = [spec.exposed_name for spec in ALL_METRICS if spec.exposed_name.startswith("tinywindow_otel_")
                    and spec.kind.value == "counter"]
    assert self_metrics
    for name in self_metrics:
        samples = [(set(s.labels.values()), s.value) for s in families[name].samples if s.name == name]
        assert samples == [({""}, 0.0)], name  # every label empty: stored without labels


def slug(heading: str) -> str:
    """The anchor GitHub gives a heading."""
    return re.sub(r"[^\w\- ]", "", heading.strip().lower()).replace(" ", "-")


def anchors(path) -> set[str]:
    return {slug(h) for h in re.findall(r"^#{1,6} (.+)$", path.read_text(encoding="utf-8"), flags=re.MULTILINE)}


def test_every_relative_link_of_the_readme_and_docs_leads_somewhere():
    broken = []
    for path in PRODUCT_TEXTS:
        for target in re.findall(r"\]\(([^)\s]+)\)", path.read_text(encoding="utf-8")):
            if re.match(r"[a-z]+:", target):
                continue  # http(s), mailto: outside the repository
            name, _, anchor = target.partition("#")
            linked = (path.parent / name).resolve() if name else path
            if not linked.exists():
                broken.append(f"{path.relative_to(ROOT)}: {target} (no such file)")
            elif anchor and linked.suffix == ".md" and anchor not in anchors(linked):
                broken.append(f"{path.relative_to(ROOT)}: {target} (no such heading)")
    assert not broken, "\n".join(broken)
