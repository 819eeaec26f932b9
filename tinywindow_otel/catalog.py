"""The metric catalog: every metric this SDK exposes is declared here, once.

The facade objects, ``docs/metrics.md``, the alert/dashboard checks and the
tests all read this module; nothing else spells a metric's name, labels,
unit or buckets.

Units are OpenTelemetry units chosen so the Prometheus exporter appends no
suffix: curly-brace annotations (``{trade}``, ``{percent}``) map to nothing,
``usd`` on a name ending in ``_usd`` and ``s`` on a name ending in
``_seconds`` are already present.
"""

from __future__ import annotations

from dataclasses import dataclass
from enum import Enum

PREFIX = "tinywindow_"
SELF_PREFIX = "tinywindow_otel_"

# Default cap on distinct label sets per metric; beyond it new label sets fold
# into one overflow series (see docs/decisions.md). Symbols come from data
# (exchange listings), so symbol-labelled metrics get a tighter cap per symbol.
DEFAULT_MAX_SERIES = 2000
MAX_SYMBOLS = 500


class Kind(str, Enum):
    COUNTER = "counter"
    GAUGE = "gauge"
    HISTOGRAM = "histogram"


@dataclass(frozen=True)
class MetricSpec:
    """One metric: how it is declared, how it is exposed, how it is bucketed."""

    name: str
    kind: Kind
    description: str
    labels: tuple[str, ...] = ()
    unit: str = ""
    buckets: tuple[float, ...] = ()
    max_series: int = DEFAULT_MAX_SERIES

    @property
    def attr(self) -> str:
        """The facade attribute name, as in the seed: the name without ``tinywindow_``."""
        return self.name[len(PREFIX):]

    @property
    def exposed_name(self) -> str:
        """The family name a scrape of /metrics shows (counters gain ``_total``)."""
        if self.kind is Kind.COUNTER and not self.name.endswith("_total"):
            return self.name + "_total"
        return self.name

    @property
    def prometheus_type(self) -> str:
        return self.kind.value

    @property
    def is_self_metric(self) -> bool:
        return self.name.startswith(SELF_PREFIX)


# Latency in seconds; 5 s (the HighAPILatency threshold) is a boundary so the
# alert's p95 is exact at the threshold, and LLM calls up to a minute resolve.
LATENCY_BUCKETS = (0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0)
# Realised P&L spans losses and gains symmetrically; 0 splits them.
PNL_BUCKETS = (
    -10000.0, -5000.0, -2500.0, -1000.0, -500.0, -250.0, -100.0, -50.0, -10.0, 0.0,
    10.0, 50.0, 100.0, 250.0, 500.0, 1000.0, 2500.0, 5000.0, 10000.0,
)
# Notional per trade; 10000 (the LargePositionSize threshold) is a boundary.
AMOUNT_BUCKETS = (10.0, 50.0, 100.0, 250.0, 500.0, 1000.0, 2500.0, 5000.0, 10000.0, 25000.0, 50000.0, 100000.0, 1000000.0)
CONFIDENCE_BUCKETS = (0.1, 0.2, 0.3, 0.4, 0.5, 0.6, 0.7, 0.8, 0.9, 1.0)

C, G, H = Kind.COUNTER, Kind.GAUGE, Kind.HISTOGRAM

# The 18 metrics of seed/monitoring.md, in the seed's order.
CATALOG: tuple[MetricSpec, ...] = (
    # Trade metrics
    MetricSpec("tinywindow_trades_total", C, "Total trades by status and symbol.", ("status", "symbol"), "{trade}",
               max_series=4 * MAX_SYMBOLS),  # ~4 statuses per symbol
    MetricSpec("tinywindow_trade_pnl_usd", H, "Realised P&L per closed trade in USD; losses are negative.", (), "usd", PNL_BUCKETS),
    MetricSpec("tinywindow_trade_amount_usd", H, "Notional amount per trade in USD.", ("symbol",), "usd", AMOUNT_BUCKETS, MAX_SYMBOLS),
    MetricSpec("tinywindow_win_rate", G, "Percent (0-100) of closed trades with pnl > 0 among those with pnl != 0.", (), "{percent}"),
    # Position metrics
    MetricSpec("tinywindow_active_positions", G, "Signed position size by symbol; symbols absent from the latest update are removed.", ("symbol",), "{position}",
               max_series=MAX_SYMBOLS),
    MetricSpec("tinywindow_portfolio_value_usd", G, "Total portfolio value (mark-to-market) in USD.", (), "usd"),
    MetricSpec("tinywindow_unrealized_pnl_usd", G, "Unrealised P&L in USD, signed.", (), "usd"),
    # Risk metrics
    MetricSpec("tinywindow_drawdown_pct", G, "Percent (>= 0) below the running peak of portfolio value.", (), "{percent}"),
    MetricSpec("tinywindow_daily_pnl_pct", G, "Percent change vs the first portfolio value seen after 00:00 UTC.", (), "{percent}"),
    MetricSpec("tinywindow_leverage_ratio", G, "Gross exposure / equity (x).", (), "{ratio}"),
    MetricSpec("tinywindow_portfolio_var_95", G, "1-day 95% Value at Risk in USD, reported as a positive loss.", (), "{usd}"),
    # API metrics
    MetricSpec("tinywindow_api_latency_seconds", H, "API call latency in seconds by service.", ("service",), "s", LATENCY_BUCKETS),
    MetricSpec("tinywindow_api_errors_total", C, "API errors by service and error type.", ("service", "type"), "{error}"),
    MetricSpec("tinywindow_api_requests_total", C, "API requests by service, failed ones included.", ("service",), "{request}"),
    # Agent metrics
    MetricSpec("tinywindow_agent_decisions_total", C, "Agent decisions by action and agent.", ("action", "agent"), "{decision}"),
    MetricSpec("tinywindow_agent_confidence", H, "Agent decision confidence scores (0-1).", ("agent",), "1", CONFIDENCE_BUCKETS),
    # Safety metrics
    MetricSpec("tinywindow_circuit_breaker_trips", C, "Circuit breaker trips by reason.", ("reason",), "{trip}"),
    MetricSpec("tinywindow_kill_switch_activations", C, "Kill switch activations by mode.", ("mode",), "{activation}"),
)

# State beside the seed's events: alerts read "is trading halted now?" and
# "how large is the position?" from these, not from counters that can go stale
# or reset, and a stalled bot shows as an old heartbeat.
STATE_METRICS: tuple[MetricSpec, ...] = (
    MetricSpec("tinywindow_circuit_breaker_open", G, "1 while the circuit breaker for this reason is open, 0 once reset.", ("reason",), "{state}"),
    MetricSpec("tinywindow_kill_switch_engaged", G, "1 while the kill switch in this mode is engaged, 0 once released.", ("mode",), "{state}"),
    MetricSpec("tinywindow_position_notional_usd", G, "Absolute USD notional of the open position by symbol; removed with the position.", ("symbol",), "usd",
               max_series=MAX_SYMBOLS),
    MetricSpec("tinywindow_last_trade_timestamp_seconds", G, "Unix time of the last recorded trade.", (), "s"),
    MetricSpec("tinywindow_last_decision_timestamp_seconds", G, "Unix time of the agent's last decision.", ("agent",), "s"),
)

# Metrics about the SDK itself: what it dropped or folded instead of raising.
SELF_METRICS: tuple[MetricSpec, ...] = (
    MetricSpec(
        "tinywindow_otel_dropped_measurements_total", C,
        "Measurements dropped by the SDK instead of raising (NaN, infinity, export failure).",
        ("metric", "reason"), "{measurement}",
    ),
    MetricSpec(
        "tinywindow_otel_label_values_sanitized_total", C,
        "Label values rewritten by the SDK instead of raising (invalid UTF-8, longer than the limit).",
        ("metric", "reason"), "{value}",
    ),
    MetricSpec(
        "tinywindow_otel_cardinality_overflow_total", C,
        "Measurements folded into the overflow series because a metric reached its series limit.",
        ("metric",), "{measurement}",
    ),
)

# Held by the OpenTelemetry SDK itself, not the facade: the SDK hands a
# collection to its exporters only when it holds a point of its own.
BUILD_INFO = MetricSpec(
    "tinywindow_otel_build_info", G, "Always 1; the version label is the reporting tinywindow-otel version.",
    ("version",), "",
)

ALL_METRICS: tuple[MetricSpec, ...] = CATALOG + STATE_METRICS + SELF_METRICS
BY_NAME: dict[str, MetricSpec] = {spec.name: spec for spec in ALL_METRICS}
BY_EXPOSED_NAME: dict[str, MetricSpec] = {spec.exposed_name: spec for spec in ALL_METRICS}


def render_markdown() -> str:
    """The metrics reference (``docs/metrics.md``), generated from the catalog."""
    lines = [
        "# Metrics reference",
        "",
        "Generated from `tinywindow_otel/catalog.py` by `tinywindow-otel docs`; "
        "a test fails when this file and the catalog drift.",
        "",
    ]
    for title, specs in (("Trading metrics", CATALOG), ("State metrics", STATE_METRICS), ("SDK self-metrics", SELF_METRICS)):
        lines += [
            f"## {title}",
            "",
            "| family on /metrics | declared as | Python name | type | labels | unit | buckets | description |",
            "|---|---|---|---|---|---|---|---|",
        ]
        for spec in specs:
            labels = ", ".join(spec.labels) or "-"
            buckets = ", ".join(f"{b:g}" for b in spec.buckets) or "-"
            lines.append(
                f"| `{spec.exposed_name}` | `{spec.name}` | `{spec.attr}` | {spec.kind.value} | {labels} "
                f"| `{spec.unit}` | {buckets} | {spec.description} |"
            )
        lines.append("")
    return "\n".join(lines)
