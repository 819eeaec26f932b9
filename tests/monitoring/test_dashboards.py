"""Grafana dashboards and provisioning: structure (Grafana is not installable here), documented panels, catalog use."""

from __future__ import annotations

import re

import jsonschema
import pytest
import yaml

from monitoring.assets import (
    DASHBOARD_UIDS, DASHBOARDS, ROOT, CORE_METRICS, CORE_PANELS, alerts_by_name, catalog_samples_used,
    check_expression, le_value, load_dashboards, panel_targets, references,
)
from tinywindow_otel.catalog import BY_NAME, SELF_METRICS

DATASOURCE_REF = {"type": "prometheus", "uid": "${datasource}"}
STEP = {"type": "object", "required": ["color", "value"],
        "properties": {"color": {"type": "string"}, "value": {"type": ["number", "null"]}}}
# The fields these dashboards rely on (Grafana schemaVersion 39).
SCHEMA = {
    "type": "object",
    "required": ["uid", "title", "schemaVersion", "panels", "templating", "time", "tags"],
    "properties": {
        "uid": {"enum": list(DASHBOARD_UIDS)},
        "schemaVersion": {"type": "integer", "minimum": 36},
        "templating": {"type": "object", "required": ["list"], "properties": {"list": {"type": "array", "contains": {
            "type": "object", "required": ["name", "type", "query"],
            "properties": {"name": {"const": "datasource"}, "type": {"const": "datasource"}, "query": {"const": "prometheus"}},
        }}}},
        "panels": {"type": "array", "minItems": 1, "items": {
            "type": "object",
            "required": ["id", "type", "title", "gridPos", "datasource", "targets", "fieldConfig"],
            "properties": {
                "id": {"type": "integer"},
                "type": {"enum": ["timeseries", "stat", "barchart", "bargauge"]},
                "title": {"type": "string", "minLength": 1},
                "datasource": {"const": DATASOURCE_REF},
                "gridPos": {"type": "object", "required": ["h", "w", "x", "y"],
                            "properties": {k: {"type": "integer", "minimum": 0} for k in "hwxy"}},
                "targets": {"type": "array", "minItems": 1, "items": {
                    "type": "object", "required": ["refId", "expr", "datasource"],
                    "properties": {"refId": {"type": "string"}, "expr": {"type": "string", "minLength": 1},
                                   "datasource": {"const": DATASOURCE_REF}}}},
                "fieldConfig": {"type": "object", "required": ["defaults"], "properties": {"defaults": {
                    "type": "object", "required": ["unit", "thresholds"],
                    "properties": {"unit": {"type": "string", "minLength": 1}, "thresholds": {
                        "type": "object", "required": ["mode", "steps"],
                        "properties": {"mode": {"const": "absolute"}, "steps": {"type": "array", "minItems": 1, "items": STEP}}}}}}},
            },
        }},
    },
}

# Units a trading team reads at a glance, per documented panel.
UNITS = {
    "Portfolio Value": "currencyUSD", "Daily P&L": "percent", "Win Rate": "percent",
    "Trade Volume by Symbol": "currencyUSD", "Unrealized P&L": "currencyUSD", "Current Drawdown": "percent",
    "Leverage Ratio": "short", "Value at Risk": "currencyUSD", "Drawdown Over Time": "percent",
    "Position Notional": "currencyUSD",
    "API Latency": "s", "API Request Rate": "reqps", "API Error Rate": "percentunit",
}
# Panel -> the alert whose threshold it must show as a threshold step.
THRESHOLDS = {
    "Daily P&L": "DailyLossExceeded", "Current Drawdown": "DrawdownExceeded",
    "Drawdown Over Time": "DrawdownExceeded", "Leverage Ratio": "HighLeverage",
    "API Error Rate": "HighAPIErrorRate", "API Latency": "HighAPILatency",
}


@pytest.fixture(scope="module")
def dashboards():
    return load_dashboards()


def panels_by_title(dashboards):
    return {panel["title"]: panel for d in dashboards.values() for panel in d["panels"]}


@pytest.mark.parametrize("uid", DASHBOARD_UIDS)
def test_dashboard_matches_schema(uid, dashboards):
    jsonschema.validate(dashboards[uid], SCHEMA)


def test_schema_rejects_a_hard_coded_datasource(dashboards):
    broken = load_dashboards()["tinywindow-risk"]
    broken["panels"][0]["datasource"] = {"type": "prometheus", "uid": "P1809F7CD0C75ACF3"}
    with pytest.raises(jsonschema.ValidationError):
        jsonschema.validate(broken, SCHEMA)


def test_file_names_are_the_uids(dashboards):
    assert sorted(p.stem for p in DASHBOARDS.glob("*.json")) == sorted(DASHBOARD_UIDS)


@pytest.mark.parametrize("uid", DASHBOARD_UIDS)
def test_documented_panel_titles_and_types(uid, dashboards):
    panels = {p["title"]: p["type"] for p in dashboards[uid]["panels"]}
    for title, types in CORE_PANELS[uid]:
        assert title in panels, f"{uid}: missing documented panel {title!r}"
        assert panels[title] in types, f"{uid}: {title!r} is {panels[title]}, documented as {types}"


@pytest.mark.parametrize("uid", DASHBOARD_UIDS)
def test_ids_unique_and_panels_do_not_overlap(uid, dashboards):
    panels = dashboards[uid]["panels"]
    assert len({p["id"] for p in panels}) == len(panels)
    cells = set()
    for p in panels:
        g = p["gridPos"]
        assert g["x"] + g["w"] <= 24
        area = {(x, y) for x in range(g["x"], g["x"] + g["w"]) for y in range(g["y"], g["y"] + g["h"])}
        assert not cells & area, f"{uid}: {p['title']!r} overlaps another panel"
        cells |= area


def test_no_hard_coded_datasource_uid_anywhere():
    for path in DASHBOARDS.glob("*.json"):
        uids = re.findall(r'"uid":\s*"([^"]*)"', path.read_text())
        assert set(uids) - set(DASHBOARD_UIDS) <= {"${datasource}", "-- Grafana --"}, path.name


def test_range_windows_are_rate_interval_range_or_an_alerts_window(dashboards):
    alert_windows = {w for rule in alerts_by_name().values() for w in re.findall(r"\[([0-9]+[smh])\]", rule["expr"])}
    for dashboard in dashboards.values():
        for panel, target in panel_targets(dashboard):
            for function, window in re.findall(r"\b(\w+)\([^()]*?\[([^\]]+)\]", target["expr"], re.S):
                assert window in {"$__range", "$__rate_interval"} | alert_windows, (panel["title"], window)
                if function in ("rate", "irate"):
                    assert window == "$__rate_interval", (panel["title"], window)
    exprs = " ".join(t["expr"] for d in dashboards.values() for _, t in panel_targets(d))
    assert "$__rate_interval" in exprs


# Panels that show what an alert evaluates: same windows, same grouping.
MIRRORS = {
    "Daily P&L": "DailyLossExceeded", "Current Drawdown": "DrawdownExceeded", "Drawdown Over Time": "DrawdownExceeded",
    "Leverage Ratio": "HighLeverage", "API Error Rate": "HighAPIErrorRate", "API Latency": "HighAPILatency",
    "Trade Rejection Rate": "HighTradeRejectionRate", "Position Notional": "LargePositionSize",
}


def groupings(expr: str) -> set[frozenset[str]]:
    return {frozenset(label.strip() for label in group.split(",") if label.strip())
            for group in re.findall(r"\bby\s*\(([^)]*)\)", expr)}


def test_panels_mirroring_an_alert_use_its_window_and_grouping(dashboards):
    panels = panels_by_title(dashboards)
    alerts = alerts_by_name()
    for title, alertname in MIRRORS.items():
        alert_expr = alerts[alertname]["expr"]
        for target in panels[title]["targets"]:
            windows = set(re.findall(r"\[([^\]]+)\]", target["expr"]))
            assert windows and windows <= set(re.findall(r"\[([^\]]+)\]", alert_expr)), (title, windows)
            if groupings(alert_expr) and alertname != "LargePositionSize":
                assert groupings(target["expr"]) <= groupings(alert_expr), (title, target["expr"])
        assert alertname in panels[title]["description"], f"{title}: description should name {alertname}"


def test_variables_job_instance_symbol_service(dashboards):
    for uid, dashboard in dashboards.items():
        names = [v["name"] for v in dashboard["templating"]["list"]]
        assert names == ["datasource", "job", "instance", "symbol", "service"], uid


def test_symbol_and_service_variables_filter_their_panels(dashboards):
    for dashboard in dashboards.values():
        for panel, target in panel_targets(dashboard):
            for ref in references(target["expr"]):
                if ref.spec is not None and "symbol" in ref.spec.labels:
                    assert ref.matchers.get("symbol") == ("=~", "$symbol"), (panel["title"], ref.sample)
                if ref.spec is not None and "service" in ref.spec.labels:
                    assert ref.matchers.get("service") == ("=~", "$service"), (panel["title"], ref.sample)


def test_halted_now_comes_from_the_state_gauges(dashboards):
    panel = panels_by_title(dashboards)["Trading Halted Now"]
    expr = panel["targets"][0]["expr"]
    assert "tinywindow_circuit_breaker_open" in expr and "tinywindow_kill_switch_engaged" in expr
    assert "_total" not in expr  # not from trip counts, which go stale and reset
    texts = {m["text"] for mapping in panel["fieldConfig"]["defaults"]["mappings"] for m in mapping["options"].values()}
    assert "HALTED" in texts


def test_position_notional_panel_in_usd_red_above_the_alert_limit(dashboards):
    panel = panels_by_title(dashboards)["Position Notional"]
    assert "tinywindow_position_notional_usd" in panel["targets"][0]["expr"]
    steps = panel["fieldConfig"]["defaults"]["thresholds"]["steps"]
    assert {"color": "red", "value": 10000} in steps


def test_loss_buckets_are_red(dashboards):
    panel = panels_by_title(dashboards)["Trade P&L Distribution"]
    [override] = panel["fieldConfig"]["overrides"]
    pattern = re.compile(override["matcher"]["options"])
    assert override["matcher"]["id"] == "byRegexp"
    assert {"id": "color", "value": {"mode": "fixed", "fixedColor": "red"}} in override["properties"]
    spec = BY_NAME["tinywindow_trade_pnl_usd"]
    for bound in spec.buckets:
        assert bool(pattern.search(le_value(bound))) == (bound < 0), bound


def test_breaker_and_kill_switch_annotations_from_the_state_gauges(dashboards):
    for uid, dashboard in dashboards.items():
        exprs = [a.get("expr", "") for a in dashboard["annotations"]["list"]]
        assert any("tinywindow_circuit_breaker_open" in e for e in exprs), uid
        assert any("tinywindow_kill_switch_engaged" in e for e in exprs), uid
        for expr in filter(None, exprs):
            assert not check_expression(expr), (uid, expr)


def test_sdk_panel_shows_zero_not_no_data(dashboards):
    panel = panels_by_title(dashboards)["SDK Dropped Measurements"]
    assert panel["fieldConfig"]["defaults"]["noValue"] == "0"
    for target in panel["targets"]:
        assert target["expr"].rstrip().endswith("or vector(0)"), target["expr"]


def test_units(dashboards):
    panels = panels_by_title(dashboards)
    for title, unit in UNITS.items():
        assert panels[title]["fieldConfig"]["defaults"]["unit"] == unit, title


def test_thresholds_match_the_alerts(dashboards):
    panels = panels_by_title(dashboards)
    alerts = alerts_by_name()
    for title, alertname in THRESHOLDS.items():
        threshold = float(re.search(r"(-?[0-9.]+)\s*$", alerts[alertname]["expr"].strip()).group(1))
        steps = [s["value"] for s in panels[title]["fieldConfig"]["defaults"]["thresholds"]["steps"]]
        assert threshold in steps, f"{title}: thresholds {steps} lack {alertname}'s {threshold}"
        assert steps[0] is None, f"{title}: the base step must be open-ended"


def test_every_query_uses_catalog_names_and_labels(dashboards):
    for uid, dashboard in dashboards.items():
        for panel, target in panel_targets(dashboard):
            legend_labels = set(re.findall(r"\{\{\s*(\w+)\s*\}\}", target.get("legendFormat", "")))
            problems = check_expression(target["expr"], legend_labels)
            assert not problems, f"{uid} / {panel['title']}: {problems}"


def test_every_catalog_metric_is_on_some_panel(dashboards):
    used = catalog_samples_used(t["expr"] for d in dashboards.values() for _, t in panel_targets(d))
    assert CORE_METRICS <= used, f"no panel shows {sorted(CORE_METRICS - used)}"
    assert {spec.name for spec in SELF_METRICS} <= used


def test_checker_catches_unknown_metrics_labels_and_buckets():
    assert check_expression("rate(tinywindow_trades[5m])")
    assert check_expression('tinywindow_trades_total{side="buy"}')
    assert check_expression("sum by (venue) (tinywindow_api_requests_total)")
    assert check_expression('tinywindow_api_latency_seconds_bucket{le="7.0"}')
    assert not check_expression('sum by (service, le) (tinywindow_api_latency_seconds_bucket{le="5.0"})')


def test_datasource_provisioning():
    config = yaml.safe_load((DASHBOARDS / "provisioning" / "datasources" / "prometheus.yml").read_text())
    [source] = config["datasources"]
    assert source["type"] == "prometheus"
    assert source["url"] == "http://prometheus:9090"
    assert source["jsonData"]["timeInterval"] == "15s"  # = scrape_interval, so $__rate_interval >= 4 scrapes


def test_dashboard_provisioning_path_is_where_compose_mounts_the_json():
    config = yaml.safe_load((DASHBOARDS / "provisioning" / "dashboards" / "tinywindow.yml").read_text())
    [provider] = config["providers"]
    assert provider["type"] == "file"
    compose = yaml.safe_load((ROOT / "compose.yaml").read_text())
    mounts = compose["services"]["grafana"]["volumes"]
    assert f"./dashboards:{provider['options']['path']}:ro" in mounts
    assert "./dashboards/provisioning:/etc/grafana/provisioning:ro" in mounts
