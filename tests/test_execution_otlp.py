"""OTLP parity: every execution, exchange, GenAI and calibration series pushed over OTLP equals its /metrics sample."""

from __future__ import annotations

import math

import pytest
from helpers import scrape
from otlp_receiver import OTLPReceiver, attrs, metrics_of, scrape_as_samples

import tinywindow_otel as tw
from tinywindow_otel import MetricsServer, pipeline
from tinywindow_otel.catalog import BY_NAME, CALIBRATION_METRICS, EXCHANGE_METRICS, EXECUTION_METRICS, GEN_AI_METRICS
from tinywindow_otel.exchange import feed, record_rate_limit
from tinywindow_otel.exporters import agent_exporter
from tinywindow_otel.llm import llm_call
from tinywindow_otel.orders import order
from tinywindow_otel.testing import reset

NEW = {spec.name for spec in EXECUTION_METRICS + EXCHANGE_METRICS + GEN_AI_METRICS + CALIBRATION_METRICS}
# Read at collection time, so the two collections (push, then scrape) legitimately differ.
MOVING = {"tinywindow_exchange_feed_age_seconds"}


def as_exposed_samples(request) -> dict:
    """The new metrics of one OTLP request, named and labelled as /metrics shows them."""
    samples = {}
    for name, metric in metrics_of(request).items():
        if name not in NEW or name in MOVING:
            continue
        spec = BY_NAME[name]
        kind = metric.WhichOneof("data")
        for p in getattr(metric, kind).data_points:
            labels = {key.replace(".", "_"): value for key, value in attrs(p.attributes).items()}
            if kind == "histogram":
                running = 0
                for bound, count in zip([*p.explicit_bounds, math.inf], p.bucket_counts):
                    running += count
                    key = frozenset({**labels, "le": bound}.items())
                    samples[(spec.exposed_name + "_bucket", key)] = float(running)
                samples[(spec.exposed_name + "_sum", frozenset(labels.items()))] = p.sum
                samples[(spec.exposed_name + "_count", frozenset(labels.items()))] = float(p.count)
            else:
                value = p.as_double if p.WhichOneof("value") == "as_double" else float(p.as_int)
                samples[(spec.exposed_name, frozenset(labels.items()))] = value
    return samples


def record_everything():
    with order("binance", "buy", 1.0, reference_price=100.0) as o:
        o.filled(1.0, 99.9)  # price improvement: negative slippage
    with order("binance", "sell", 1.0) as o:
        o.rejected("min_notional")
    ws = feed("binance", "trades")
    ws.message()
    ws.reconnected()
    record_rate_limit("binance", {"X-MBX-USED-WEIGHT-1M": "3000"})

    @llm_call("anthropic", "claude-sonnet-4-5")
    def ask():
        yield {"type": "message_start", "message": {"usage": {"input_tokens": 10, "cache_read_input_tokens": 90}}}
        yield {"type": "message_delta", "usage": {"output_tokens": 7}}

    list(ask())
    with pytest.raises(TimeoutError):
        with llm_call("openai", "gpt-4o"):
            raise TimeoutError
    agent_exporter.calibration.reset()
    agent_exporter.record_outcome(agent_exporter.record_decision("analyst", "buy", 0.7), 5.0)


def test_otlp_and_metrics_agree_on_every_new_series():
    with OTLPReceiver() as receiver:
        try:
            tw.configure(endpoint=receiver.endpoint, exporters="prometheus,otlp", export_interval_millis=600_000)
            p = pipeline.get_pipeline()
            record_everything()
            assert p.force_flush()
            _, request = receiver.wait_for(lambda reqs: reqs[-1] if reqs else None)
            pushed = as_exposed_samples(request)
            with MetricsServer(port=0) as server:
                families = scrape(server.url)
        finally:
            reset()  # shut the OTLP pipeline down and forget configure()'s settings
    scraped = {key: value for key, value in scrape_as_samples(families).items()
               if any(key[0].startswith(BY_NAME[name].exposed_name) for name in NEW - MOVING)}
    # Prometheus shows a missing label as ""; OTLP omits error.type on success.
    scraped = {(name, frozenset((k, v) for k, v in labels if v != "")): value
               for (name, labels), value in scraped.items()}
    assert pushed == scraped
    names = {name for name, _ in pushed}
    for spec_name in NEW - MOVING - {"tinywindow_agent_decisions_expired_total"}:
        exposed = BY_NAME[spec_name].exposed_name
        assert exposed in names or exposed + "_count" in names, exposed
    otlp_names = set(metrics_of(request))
    assert {"gen_ai.client.token.usage", "gen_ai.client.operation.duration",
            "tinywindow_exchange_feed_age_seconds"} <= otlp_names
