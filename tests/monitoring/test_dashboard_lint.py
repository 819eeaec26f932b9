"""grafana/dashboard-linter's rules, as tests of dashboards/*.json.

The rules (lint/rule_*.go in github.com/grafana/dashboard-linter): panel-datasource,
panel-units, panel-title-description, target-rate-interval, target-job,
target-instance, template-datasource, template-job, template-instance. Each is
also shown to reject a dashboard that breaks it.
"""

from __future__ import annotations

import copy
import re

import pytest

from monitoring.assets import DASHBOARD_UIDS, load_dashboards, references

# The linter's valid units (panel-units-rule), those a trading dashboard may use.
VALID_UNITS = {
    "none", "string", "short", "percent", "percentunit", "currencyUSD", "currencyEUR", "currencyBTC",
    "ns", "µs", "ms", "s", "m", "h", "d", "dtdurations", "dtdurationms",
    "cps", "ops", "reqps", "rps", "wps", "iops", "cpm", "opm", "rpm", "wpm", "bool", "bool_yes_no", "bool_on_off",
    "dateTimeAsIso", "dateTimeFromNow", "bytes", "decbytes",
}
UNIT_PANELS = {"stat", "singlestat", "graph", "table", "timeseries", "gauge"}
DATASOURCE_PANELS = {"singlestat", "graph", "table", "timeseries"}
RATE_FUNCTIONS = re.compile(r"\b(rate|irate)\s*\(([^()]*?)\[([^\]]+)\]")


def templated(dashboard: dict, name: str) -> dict | None:
    return next((v for v in dashboard["templating"]["list"] if v["name"] == name), None)


def lint(dashboard: dict) -> list[str]:
    """Problems under the nine rules (an empty list = clean)."""
    problems = []
    datasources = [v for v in dashboard["templating"]["list"] if v["type"] == "datasource"]
    # template-datasource-rule
    if not datasources:
        problems.append("template-datasource: no templated data source")
    for source in datasources:
        if source["name"] not in ("datasource", f"{source['query'].lower()}_datasource"):
            problems.append(f"template-datasource: variable named {source['name']!r}")
        if source.get("label") not in ("Data source", f"{source['query'].title()} data source"):
            problems.append(f"template-datasource: variable labeled {source.get('label')!r}")
    names = {f"${s['name']}" for s in datasources} | {f"${{{s['name']}}}" for s in datasources}
    # template-job-rule, template-instance-rule
    for name in ("job", "instance"):
        variable = templated(dashboard, name)
        if variable is None:
            problems.append(f"template-{name}: missing")
            continue
        if variable.get("datasource", {}).get("uid") not in ("$datasource", "${datasource}"):
            problems.append(f"template-{name}: datasource is not $datasource")
        if variable["type"] != "query":
            problems.append(f"template-{name}: not a query variable")
        if variable.get("label") != name.title():
            problems.append(f"template-{name}: label {variable.get('label')!r}")
        if not variable.get("multi"):
            problems.append(f"template-{name}: not multi-select")
        if variable.get("allValue") != ".+":
            problems.append(f"template-{name}: allValue {variable.get('allValue')!r}")
    for panel in dashboard["panels"]:
        where = f"panel {panel.get('title')!r}"
        # panel-datasource-rule
        if panel["type"] in DATASOURCE_PANELS and panel.get("datasource", {}).get("uid") not in names:
            problems.append(f"panel-datasource: {where} uses {panel.get('datasource')}")
        # panel-units-rule
        if panel["type"] in UNIT_PANELS:
            unit = panel.get("fieldConfig", {}).get("defaults", {}).get("unit", "")
            if unit not in VALID_UNITS:
                problems.append(f"panel-units: {where} has unit {unit!r}")
        # panel-title-description-rule (here: every panel type)
        if not panel.get("title") or not panel.get("description"):
            problems.append(f"panel-title-description: {where} lacks a title or description")
        for target in panel.get("targets", []):
            expr = target["expr"]
            # target-rate-interval-rule
            for function, _, window in RATE_FUNCTIONS.findall(expr):
                if window != "$__rate_interval":
                    problems.append(f"target-rate-interval: {where} {function}(...[{window}])")
            # target-job-rule, target-instance-rule
            for ref in references(expr):
                for label in ("job", "instance"):
                    if ref.matchers.get(label) != ("=~", f"${label}"):
                        problems.append(f"target-{label}: {where} selector {ref.sample} lacks {label}=~\"${label}\"")
    return problems


@pytest.mark.parametrize("uid", DASHBOARD_UIDS)
def test_dashboard_passes_the_linter_rules(uid):
    assert lint(load_dashboards()[uid]) == []


def broken(change) -> list[str]:
    dashboard = copy.deepcopy(load_dashboards()["tinywindow-system"])
    change(dashboard)
    return lint(dashboard)


def panel(dashboard: dict, title: str) -> dict:
    return next(p for p in dashboard["panels"] if p["title"] == title)


@pytest.mark.parametrize("rule, change", [
    ("panel-datasource", lambda d: panel(d, "API Latency").update(datasource={"type": "prometheus", "uid": "abc"})),
    ("panel-units", lambda d: panel(d, "API Latency")["fieldConfig"]["defaults"].update(unit="suffix: s")),
    ("panel-title-description", lambda d: panel(d, "API Latency").update(description="")),
    ("target-rate-interval", lambda d: panel(d, "API Request Rate")["targets"][0].update(
        expr='sum(rate(tinywindow_api_requests_total{job=~"$job", instance=~"$instance"}[5m]))')),
    ("target-job", lambda d: panel(d, "API Request Rate")["targets"][0].update(
        expr='sum(rate(tinywindow_api_requests_total{instance=~"$instance"}[$__rate_interval]))')),
    ("target-instance", lambda d: panel(d, "API Request Rate")["targets"][0].update(
        expr='sum(rate(tinywindow_api_requests_total{job=~"$job"}[$__rate_interval]))')),
    ("template-datasource", lambda d: d["templating"]["list"][0].update(name="prom")),
    ("template-job", lambda d: templated(d, "job").update(allValue=None)),
    ("template-instance", lambda d: templated(d, "instance").update(multi=False)),
])
def test_each_rule_rejects_a_dashboard_that_breaks_it(rule, change):
    problems = broken(change)
    assert any(p.startswith(rule) for p in problems), problems
