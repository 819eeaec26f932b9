"""The catalog against the monitoring interface (tests/data), the facade and docs/metrics.md."""

from __future__ import annotations

import re

import tinywindow_otel
from conftest import ROOT
from tinywindow_otel import catalog
from tinywindow_otel.catalog import CATALOG, Kind

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
