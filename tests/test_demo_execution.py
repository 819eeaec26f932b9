"""The demo's execution side fills every new family, and stays on the healthy side of every new alert."""

from __future__ import annotations

from helpers import sample_value

from tinywindow_otel.catalog import CALIBRATION_METRICS, EXCHANGE_METRICS, EXECUTION_METRICS, GEN_AI_METRICS
from tinywindow_otel.cli.demo import TradingSimulation
from tinywindow_otel.cli.demo_execution import with_execution
from tinywindow_otel.exporters import agent_exporter


def total(families, name, **match):
    family = families[name]
    return sum(s.value for s in family.samples
               if s.name == name and all(s.labels.get(k) == v for k, v in match.items()))


def test_demo_fills_every_execution_exchange_genai_and_calibration_family(scrape_metrics):
    agent_exporter.calibration.reset()
    simulation = with_execution(TradingSimulation(seed=7), seed=7)
    for _ in range(3000):
        simulation.tick()
    families = scrape_metrics()
    expected = {spec.exposed_name for spec in EXECUTION_METRICS + EXCHANGE_METRICS + GEN_AI_METRICS}
    # Decisions expire after a week of waiting: none do in a short demo.
    expected |= {spec.exposed_name for spec in CALIBRATION_METRICS
                 if spec.name != "tinywindow_agent_decisions_expired_total"}
    assert expected <= set(families), sorted(expected - set(families))

    orders = "tinywindow_orders_total"
    for venue in ("binance", "coinbase"):
        submitted = total(families, orders, venue=venue, status="submitted")
        rejected = total(families, orders, venue=venue, status="rejected")
        assert submitted > 100 and rejected / submitted < 0.1  # HighOrderRejectRate stays silent
        assert sample_value(families, "tinywindow_exchange_rate_limit_used_ratio", venue=venue) <= 0.9
        # Both sides of the slippage distribution have data: price improvement is simulated too.
        assert sample_value(families, "tinywindow_slippage_bps_bucket", venue=venue, side="buy", le="0.0") > 0
    for stream_age in (s.value for s in families["tinywindow_exchange_feed_age_seconds"].samples):
        assert stream_age < 60  # ExchangeFeedStale stays silent
    for brier in families["tinywindow_agent_brier_score"].samples:
        assert brier.value < 0.25  # AgentCalibrationDrift stays silent
    assert total(families, "tinywindow_llm_cost_usd_total") > 0
