"""Dashboard panel queries against a live Prometheus: what Grafana would send, and which return nothing.

    empty = panels_without_data(lambda expr: prometheus_query(stack, expr), ["tinywindow-execution"])
    assert not empty, "\n".join(empty)

A query "has data" when at least one of its series has a finite value: a
histogram_quantile over a window without observations is NaN, which Grafana
draws as a gap, so it counts as no data.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Iterable

from monitoring.assets import load_dashboards, panel_targets

# What Grafana would substitute at a 1s scrape interval (rate interval >= 4 scrapes), "All" for the variables.
GRAFANA_VARIABLES = {"$__rate_interval": "10s", "$__range": "1m", "$__interval": "1s",
                     "$job": ".+", "$instance": ".+", "$symbol": ".+", "$service": ".+"}


def substitute(expr: str, variables: dict[str, str] = GRAFANA_VARIABLES) -> str:
    for variable, value in variables.items():
        expr = expr.replace(variable, value)
    assert "$" not in expr, f"unsubstituted variable in {expr!r}"
    return expr


def panel_queries(uids: Iterable[str], variables: dict[str, str] = GRAFANA_VARIABLES):
    """(uid, panel title, refId, PromQL as Grafana would send it) for every target of these dashboards."""
    dashboards = load_dashboards()
    for uid in uids:
        for panel, target in panel_targets(dashboards[uid]):
            yield uid, panel["title"], target["refId"], substitute(target["expr"], variables)


def panels_without_data(query: Callable[[str], list[dict]], uids: Iterable[str],
                        variables: dict[str, str] = GRAFANA_VARIABLES) -> list[str]:
    """'uid / title / refId: expr' for each panel query whose instant result has no finite value."""
    empty = []
    for uid, title, ref_id, expr in panel_queries(uids, variables):
        values = [float(result["value"][1]) for result in query(expr)]
        if not any(math.isfinite(value) for value in values):
            empty.append(f"{uid} / {title} / {ref_id}: {expr}")
    return empty
