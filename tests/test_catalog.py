"""The catalog against the monitoring interface (tests/data), the facade and docs/metrics.md."""

from __future__ import annotations

import re

import pytest

import tinywindow_otel
from conftest import ROOT
from tinywindow_otel import catalog
from tinywindow_otel.catalog import CATALOG, Kind
from tinywindow_otel.metrics import REGISTRY, MetricRegistry

#: The documented interface the package implements: metric tables and usage snippets.
INTERFACE = ROOT / "tests" / "data" / "monitoring-interface.md"


def interface_metric_rows() -> dict[str, str]:
    """{metric name: type} from the interface's metric tables."""
    rows = re.findall(r"^\| `(tinywindow_\w+)` \| (\w+) \|", INTERFACE.read_text(), flags=re.MULTILINE)
    return {name: kind.lower() for name, kind in rows}


def test_catalog_declares_exactly_the_interface_metrics_with_their_types():
    documented = interface_metric_rows()
    assert len(documented) == 18
    assert {spec.name: spec.kind.value for spec in CATALOG} == documented


def test_every_catalog_entry_has_a_facade_object_under_its_documented_name():
    assert tinywindow_otel.METRIC_NAMES == tuple(spec.attr for spec in CATALOG)
    for spec in CATALOG:
        metric = getattr(tinywindow_otel, spec.attr)
        assert metric.name == spec.name
        assert metric.spec is spec


def test_histogram_boundaries_fit_their_units_and_alert_thresholds():
    by_attr = {spec.attr: spec for spec in CATALOG}
    for spec in CATALOG:
        assert (spec.kind is Kind.HISTOGRAM) == bool(spec.buckets), spec.name
        assert list(spec.buckets) == sorted(set(spec.buckets)), spec.name
    assert 5.0 in by_attr["api_latency_seconds"].buckets  # HighAPILatency threshold
    assert max(by_attr["api_latency_seconds"].buckets) <= 120  # seconds, not milliseconds
    assert 10000.0 in by_attr["trade_amount_usd"].buckets  # LargePositionSize threshold
    assert by_attr["agent_confidence"].buckets == tuple(round(0.1 * i, 1) for i in range(1, 11))
    pnl = by_attr["trade_pnl_usd"].buckets
    assert min(pnl) < 0 < max(pnl) and 0.0 in pnl  # losses and gains both resolved


def test_counters_declared_without_total_are_exposed_with_it():
    exposed = {spec.name: spec.exposed_name for spec in CATALOG}
    assert exposed["tinywindow_circuit_breaker_trips"] == "tinywindow_circuit_breaker_trips_total"
    assert exposed["tinywindow_kill_switch_activations"] == "tinywindow_kill_switch_activations_total"
    assert exposed["tinywindow_trades_total"] == "tinywindow_trades_total"


def test_self_metrics_use_their_own_prefix():
    for spec in catalog.SELF_METRICS:
        assert spec.name.startswith(catalog.SELF_PREFIX)
        assert spec.is_self_metric
    assert not any(spec.is_self_metric for spec in CATALOG)


def test_docs_metrics_md_is_generated_from_the_catalog():
    generated = catalog.render_markdown()
    committed = (ROOT / "docs" / "metrics.md").read_text()
    assert committed == generated, "docs/metrics.md is stale: run `tinywindow-otel docs > docs/metrics.md`"
    for spec in catalog.ALL_METRICS:
        assert f"`{spec.exposed_name}`" in committed


# --- label values from a closed set ----------------------------------------------------------

CLOSED_LABELS = [(spec, label, values) for spec in catalog.ALL_METRICS for label, values in spec.allowed]


def test_the_documented_closed_sets_are_declared():
    closed = {(spec.name, label): values for spec, label, values in CLOSED_LABELS}
    assert closed == {
        ("tinywindow_trades_total", "status"): ("filled", "partially_filled", "rejected", "cancelled", "failed"),
        ("tinywindow_orders_total", "status"): ("submitted", "acknowledged", "filled", "partially_filled",
                                                "rejected", "cancelled", "expired"),
        ("tinywindow_order_latency_seconds", "stage"): ("ack", "fill", "cancel"),
        ("tinywindow_slippage_bps", "side"): ("buy", "sell"),
        ("gen_ai.client.token.usage", "gen_ai.token.type"): ("input", "output"),
        ("tinywindow_agent_outcomes_total", "confidence_bucket"): catalog.CONFIDENCE_DECILES,
        ("tinywindow_agent_outcomes_total", "outcome"): ("win", "loss"),
    }


@pytest.mark.parametrize("spec, label, values", CLOSED_LABELS, ids=lambda v: getattr(v, "name", None))
@pytest.mark.parametrize("bad", ["FILLED", "", "other", 1])
def test_a_raw_metric_rejects_a_value_outside_its_closed_set(spec, label, values, bad):
    metric = REGISTRY.get(spec.name)
    good = {name: spec.allowed_values(name)[0] if spec.allowed_values(name) else "x" for name in spec.labels}
    before = len(metric.series())
    with pytest.raises(ValueError) as excinfo:
        metric.labels(**{**good, label: bad})
    message = str(excinfo.value)
    assert message.startswith(spec.name + ":") and repr(label) in message and repr(bad) in message
    assert ", ".join(values) in message
    with pytest.raises(ValueError):  # positionally too, and through initialise()
        metric.labels(*{**good, label: bad}.values())
    with pytest.raises(ValueError):
        metric.initialise({**good, label: bad})
    assert len(metric.series()) == before  # nothing created
    for value in values:
        metric.labels(**{**good, label: value})
    assert len(metric.series()) == before + len(values)


def test_closed_sets_and_the_overflow_series():
    registry = MetricRegistry()
    trades = registry.counter("trades_total")
    trades.set_max_series(1)
    trades.initialise(("filled", "BTC/USDT"))
    folded = trades.labels("rejected", "ETH/USDT")  # a valid new label set beyond the cap folds
    assert folded.label_values == ("__overflow__", "__overflow__")
    overflow = registry.get("tinywindow_otel_cardinality_overflow_total").labels("tinywindow_trades_total")
    assert overflow.get() == 1.0
    with pytest.raises(ValueError, match="'FILLED'"):
        trades.labels("FILLED", "SOL/USDT")  # bad input raises even when the metric is full
    with pytest.raises(ValueError, match="'__overflow__'"):
        trades.labels("__overflow__", "SOL/USDT")  # the overflow marker is no status either
    assert overflow.get() == 1.0
    sanitized = registry.get("tinywindow_otel_label_values_sanitized_total")
    assert sanitized.labels("tinywindow_trades_total", "reserved").get() == 0.0


def test_a_spec_cannot_close_an_undeclared_label():
    with pytest.raises(ValueError, match="tinywindow_x_total"):
        catalog.MetricSpec("tinywindow_x_total", Kind.COUNTER, "x", ("a",), allowed=(("b", ("1",)),))
    with pytest.raises(ValueError, match="tinywindow_x_total"):
        catalog.MetricSpec("tinywindow_x_total", Kind.COUNTER, "x", ("a",), allowed=(("a", ()),))


def test_the_recorders_constants_are_the_catalogs():
    from tinywindow_otel import calibration, decorators, exporters, orders

    assert exporters.TRADE_STATUSES is catalog.TRADE_STATUSES
    assert decorators.TRADE_STATUSES is catalog.TRADE_STATUSES
    assert orders.ORDER_STATUSES is catalog.ORDER_STATUSES
    assert set(orders.CLOSING_STATUSES) < set(catalog.ORDER_STATUSES)
    assert orders.STAGES is catalog.ORDER_STAGES and orders.SIDES is catalog.ORDER_SIDES
    assert calibration.CONFIDENCE_BUCKETS is catalog.CONFIDENCE_DECILES


def test_the_catalog_imports_no_other_module_of_the_package():
    source = (ROOT / "tinywindow_otel" / "catalog.py").read_text()
    assert not re.findall(r"^\s*(?:from|import)\s+(?:\.|tinywindow_otel)", source, flags=re.MULTILINE)
