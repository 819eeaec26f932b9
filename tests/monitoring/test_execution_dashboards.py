"""The execution and agents dashboards show every execution, exchange, GenAI and calibration metric."""

from __future__ import annotations

from monitoring.assets import catalog_samples_used, load_dashboards, panel_targets
from tinywindow_otel.catalog import CALIBRATION_METRICS, EXCHANGE_METRICS, EXECUTION_METRICS, GEN_AI_METRICS


def test_every_new_metric_is_on_a_panel_of_its_dashboard():
    dashboards = load_dashboards()
    for uid, specs in (("tinywindow-execution", EXECUTION_METRICS + EXCHANGE_METRICS),
                       ("tinywindow-agents", GEN_AI_METRICS + CALIBRATION_METRICS)):
        used = catalog_samples_used(t["expr"] for _, t in panel_targets(dashboards[uid]))
        missing = {spec.name for spec in specs} - used
        assert not missing, f"{uid}: no panel shows {sorted(missing)}"


def test_slippage_distribution_keeps_the_negative_side():
    dashboard = load_dashboards()["tinywindow-execution"]
    [panel] = [p for p in dashboard["panels"] if p["title"] == "Slippage Distribution"]
    [target] = panel["targets"]
    # All buckets, not a filtered le range: price improvement (negative bps) stays visible.
    assert "tinywindow_slippage_bps_bucket{" in target["expr"] and "le=" not in target["expr"]
    assert target["format"] == "heatmap"


def test_reliability_diagram_is_win_share_per_confidence_bucket():
    dashboard = load_dashboards()["tinywindow-agents"]
    [panel] = [p for p in dashboard["panels"] if p["title"] == "Reliability Diagram"]
    assert panel["options"]["xField"] == "confidence_bucket"
    assert 'outcome="win"' in panel["targets"][0]["expr"]
