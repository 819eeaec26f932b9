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
# Units the Prometheus exporter turns into a name suffix; every other unit
# used here is a curly-brace annotation (no suffix) or already in the name.
_UNIT_SUFFIXES = {"s": "seconds", "usd": "usd"}
SELF_PREFIX = "tinywindow_otel_"

# Default cap on distinct label sets per metric; beyond it new label sets fold
# into one overflow series (see docs/decisions.md). Symbols come from data
# (exchange listings), so symbol-labelled metrics get a tighter cap per symbol.
DEFAULT_MAX_SERIES = 2000
MAX_SYMBOLS = 500


# Label values from a closed set: a value outside raises ValueError where a new
# label set is created (``labels()``), on the raw metric as through the recorders.
# The recorders' own constants (``exporters.TRADE_STATUSES``, ``orders.SIDES``, ...)
# are these tuples.
TRADE_STATUSES = ("filled", "partially_filled", "rejected", "cancelled", "failed")
ORDER_STATUSES = ("submitted", "acknowledged", "filled", "partially_filled", "rejected", "cancelled", "expired")
ORDER_STAGES = ("ack", "fill", "cancel")
ORDER_SIDES = ("buy", "sell")
CONFIDENCE_DECILES = tuple(f"{i / 10:.1f}-{(i + 1) / 10:.1f}" for i in range(10))
OUTCOMES = ("win", "loss")
# gen_ai.token.type in the OpenTelemetry GenAI conventions (cached input counts as input).
GEN_AI_TOKEN_TYPES = ("input", "output")


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
    # The range a histogram's observations must be in (None: unbounded on that side). Only
    # physical bounds: a latency, an amount, a token count cannot be negative; P&L and
    # slippage are signed. An observation outside raises ValueError naming the metric.
    minimum: float | None = None
    maximum: float | None = None
    # Label sets that exist from the start (and again after ``clear()``), at 0.
    initial: tuple[tuple[str, ...], ...] = ()
    # (label, allowed values) for labels whose values come from a closed set; any other
    # value raises ValueError naming the metric, the label, the value and the allowed set.
    allowed: tuple[tuple[str, tuple[str, ...]], ...] = ()

    def __post_init__(self) -> None:
        for label, values in self.allowed:
            if label not in self.labels or not values or not all(isinstance(v, str) for v in values):
                raise ValueError(f"{self.name}: allowed values for {label!r} need a declared label "
                                 f"and a non-empty tuple of strings")

    def allowed_values(self, label: str) -> tuple[str, ...] | None:
        """The values ``label`` may take, or None when it is open (from data)."""
        return dict(self.allowed).get(label)

    @property
    def attr(self) -> str:
        """The facade attribute name, as documented: the name without ``tinywindow_``.

        A name from an OpenTelemetry semantic convention (``gen_ai.client.token.usage``)
        keeps its namespace, with dots as underscores (``gen_ai_client_token_usage``).
        """
        if self.name.startswith(PREFIX):
            return self.name[len(PREFIX):]
        return self.name.replace(".", "_")

    @property
    def exposed_name(self) -> str:
        """The family name a scrape of /metrics shows.

        As the Prometheus exporter writes it: dots become underscores, a unit
        the name does not already end in is appended (``s`` -> ``_seconds``),
        counters gain ``_total``.
        """
        name = self.name.replace(".", "_")
        suffix = _UNIT_SUFFIXES.get(self.unit)
        if suffix is not None:
            base = name[:-6] if self.kind is Kind.COUNTER and name.endswith("_total") else name
            if not base.endswith("_" + suffix):
                name = base + "_" + suffix
        if self.kind is Kind.COUNTER and not name.endswith("_total"):
            return name + "_total"
        return name

    @property
    def exposed_labels(self) -> tuple[str, ...]:
        """Label names as /metrics shows them: ``gen_ai.token.type`` -> ``gen_ai_token_type``."""
        return tuple(label.replace(".", "_") for label in self.labels)

    @property
    def prometheus_type(self) -> str:
        return self.kind.value

    @property
    def is_self_metric(self) -> bool:
        return self.name.startswith(SELF_PREFIX)

    @property
    def value_range(self) -> str:
        """What an observation may be, for the reference: ``>= 0``, ``0..1``, ``any`` (histograms only)."""
        if self.kind is not Kind.HISTOGRAM:
            return "-"
        if self.minimum is None and self.maximum is None:
            return "any"
        if self.maximum is None:
            return f">= {self.minimum:g}"
        if self.minimum is None:
            return f"<= {self.maximum:g}"
        return f"{self.minimum:g}..{self.maximum:g}"


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

# The 18 metrics of the TinyWindow monitoring interface, in its documented order.
CATALOG: tuple[MetricSpec, ...] = (
    # Trade metrics
    MetricSpec("tinywindow_trades_total", C, "Total trades by status and symbol.", ("status", "symbol"), "{trade}",
               max_series=len(TRADE_STATUSES) * MAX_SYMBOLS,  # one series per trade status and symbol
               allowed=(("status", TRADE_STATUSES),)),
    MetricSpec("tinywindow_trade_pnl_usd", H, "Realised P&L per closed trade in USD; losses are negative.", (), "usd", PNL_BUCKETS),
    MetricSpec("tinywindow_trade_amount_usd", H, "Notional amount per trade in USD.", ("symbol",), "usd", AMOUNT_BUCKETS, MAX_SYMBOLS,
               minimum=0.0),
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
    MetricSpec("tinywindow_api_latency_seconds", H, "API call latency in seconds by service.", ("service",), "s", LATENCY_BUCKETS,
               minimum=0.0),
    MetricSpec("tinywindow_api_errors_total", C, "API errors by service and error type.", ("service", "type"), "{error}"),
    MetricSpec("tinywindow_api_requests_total", C, "API requests by service, failed ones included.", ("service",), "{request}"),
    # Agent metrics
    MetricSpec("tinywindow_agent_decisions_total", C, "Agent decisions by action and agent.", ("action", "agent"), "{decision}"),
    MetricSpec("tinywindow_agent_confidence", H, "Agent decision confidence scores (0-1).", ("agent",), "1", CONFIDENCE_BUCKETS,
               minimum=0.0, maximum=1.0),
    # Safety metrics
    MetricSpec("tinywindow_circuit_breaker_trips", C, "Circuit breaker trips by reason.", ("reason",), "{trip}"),
    MetricSpec("tinywindow_kill_switch_activations", C, "Kill switch activations by mode.", ("mode",), "{activation}"),
)

# State beside the events above: alerts read "is trading halted now?" and
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

# Metrics about the SDK itself: what it dropped or folded instead of raising. Each has one
# series with empty labels at 0 from the start (Prometheus stores it without labels), so a
# fresh /metrics shows the self-metrics at 0 and ``sum(...)`` is 0, not empty, until the
# first drop; drops themselves count in labelled series.
SELF_METRICS: tuple[MetricSpec, ...] = (
    MetricSpec(
        "tinywindow_otel_dropped_measurements_total", C,
        "Measurements dropped by the SDK instead of raising (NaN, infinity, export failure).",
        ("metric", "reason"), "{measurement}", initial=(("", ""),),
    ),
    MetricSpec(
        "tinywindow_otel_label_values_sanitized_total", C,
        "Label values rewritten by the SDK instead of raising (invalid UTF-8, longer than the limit).",
        ("metric", "reason"), "{value}", initial=(("", ""),),
    ),
    MetricSpec(
        "tinywindow_otel_cardinality_overflow_total", C,
        "Measurements folded into the overflow series because a metric reached its series limit.",
        ("metric",), "{measurement}", initial=(("",),),
    ),
)

# --- Order execution, exchange health, LLM calls, agent calibration -------------

# Order latency from a co-located 1 ms ack to a 60 s fill of a resting order.
ORDER_LATENCY_BUCKETS = (0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0)
# Filled / requested quantity: 0 (nothing filled) and 1 (fully filled) are
# boundaries of their own, so "fully filled" is exactly the le="1" minus le="0.99" bucket.
FILL_RATIO_BUCKETS = (0.0, 0.1, 0.25, 0.5, 0.75, 0.9, 0.95, 0.99, 1.0)
# Slippage in basis points, signed (positive = worse than the reference
# price); symmetric around 0 like the P&L buckets, 25 bps (the HighSlippage
# threshold) is a boundary.
SLIPPAGE_BUCKETS = (-100.0, -50.0, -25.0, -10.0, -5.0, -2.0, -1.0, 0.0, 1.0, 2.0, 5.0, 10.0, 25.0, 50.0, 100.0)
# OpenTelemetry GenAI semantic conventions (gen-ai-metrics.md, Development
# status): the advised explicit bucket boundaries, copied exactly.
GEN_AI_TOKEN_BUCKETS = (1.0, 4.0, 16.0, 64.0, 256.0, 1024.0, 4096.0, 16384.0, 65536.0, 262144.0, 1048576.0,
                        4194304.0, 16777216.0, 67108864.0)
GEN_AI_DURATION_BUCKETS = (0.01, 0.02, 0.04, 0.08, 0.16, 0.32, 0.64, 1.28, 2.56, 5.12, 10.24, 20.48, 40.96, 81.92)
# Venues and streams are configured, not data; reasons come from exchange
# error messages and models from configuration, so they get small caps.
MAX_VENUES = 50
MAX_REASONS = 200

EXECUTION_METRICS: tuple[MetricSpec, ...] = (
    MetricSpec("tinywindow_orders_total", C,
               "Orders by venue and lifecycle status: submitted and acknowledged as they happen, then exactly one "
               "closing status per order (filled, partially_filled, rejected, cancelled, expired).",
               ("venue", "status"), "{order}", max_series=8 * MAX_VENUES, allowed=(("status", ORDER_STATUSES),)),
    MetricSpec("tinywindow_order_latency_seconds", H,
               "Order latency by venue and stage: ack = submit to exchange acknowledgement, fill = submit to last "
               "fill, cancel = cancel request to confirmation.",
               ("venue", "stage"), "s", ORDER_LATENCY_BUCKETS, 3 * MAX_VENUES, minimum=0.0,
               allowed=(("stage", ORDER_STAGES),)),
    MetricSpec("tinywindow_order_fill_ratio", H,
               "Filled / requested quantity per closed order (0-1); rejected orders are not included.",
               ("venue",), "1", FILL_RATIO_BUCKETS, MAX_VENUES, minimum=0.0, maximum=1.0),
    MetricSpec("tinywindow_slippage_bps", H,
               "Fill price vs the reference price given at submit, in basis points per filled order; "
               "positive = worse for the order's side, negative = price improvement.",
               ("venue", "side"), "{bps}", SLIPPAGE_BUCKETS, 2 * MAX_VENUES, allowed=(("side", ORDER_SIDES),)),
    MetricSpec("tinywindow_order_rejections_total", C, "Rejected orders by venue and reason.",
               ("venue", "reason"), "{order}", max_series=MAX_REASONS),
    MetricSpec("tinywindow_last_order_fill_timestamp_seconds", G, "Unix time of the last fill seen per venue.",
               ("venue",), "s", max_series=MAX_VENUES),
)

EXCHANGE_METRICS: tuple[MetricSpec, ...] = (
    MetricSpec("tinywindow_exchange_feed_age_seconds", G,
               "Seconds since the last message on this market-data stream, computed at collection time.",
               ("venue", "stream"), "s", max_series=20 * MAX_VENUES),
    MetricSpec("tinywindow_exchange_reconnects_total", C, "Reconnections of a market-data stream.",
               ("venue", "stream"), "{reconnect}", max_series=20 * MAX_VENUES),
    MetricSpec("tinywindow_exchange_rate_limit_used_ratio", G,
               "Share (0-1) of the venue's request rate limit used, from its response headers; 1 while "
               "the venue says to back off (Retry-After).",
               ("venue",), "1", max_series=MAX_VENUES),
)

GEN_AI_METRICS: tuple[MetricSpec, ...] = (
    MetricSpec("gen_ai.client.token.usage", H,
               "Number of input and output tokens used (OpenTelemetry GenAI conventions; input includes "
               "cached input tokens).",
               ("gen_ai.operation.name", "gen_ai.provider.name", "gen_ai.request.model", "gen_ai.token.type"),
               "{token}", GEN_AI_TOKEN_BUCKETS, max_series=400, minimum=0.0,
               allowed=(("gen_ai.token.type", GEN_AI_TOKEN_TYPES),)),
    MetricSpec("gen_ai.client.operation.duration", H,
               "GenAI operation duration (OpenTelemetry GenAI conventions); error.type is set when the call failed.",
               ("gen_ai.operation.name", "gen_ai.provider.name", "gen_ai.request.model", "error.type"),
               "s", GEN_AI_DURATION_BUCKETS, max_series=400, minimum=0.0),
    MetricSpec("gen_ai.client.operation.time_to_first_chunk", H,
               "Time from the request to the first chunk of a streamed response (OpenTelemetry GenAI conventions).",
               ("gen_ai.operation.name", "gen_ai.provider.name", "gen_ai.request.model"),
               "s", GEN_AI_DURATION_BUCKETS, max_series=200, minimum=0.0),
    MetricSpec("tinywindow_llm_cost_usd_total", C,
               "Estimated LLM spend in USD from token usage and the configured price table.",
               ("provider", "model"), "usd", max_series=200),
)

CALIBRATION_METRICS: tuple[MetricSpec, ...] = (
    MetricSpec("tinywindow_agent_outcomes_total", C,
               "Decisions linked to a trade outcome, by agent, confidence decile (\"0.8-0.9\") and outcome (win, loss).",
               ("agent", "confidence_bucket", "outcome"), "{decision}",
               allowed=(("confidence_bucket", CONFIDENCE_DECILES), ("outcome", OUTCOMES))),
    MetricSpec("tinywindow_agent_brier_score", G,
               "Mean squared error of confidence vs outcome (1 = win, 0 = loss) over the agent's last linked "
               "decisions: 0 is perfect, 0.25 is a coin flip at 0.5.",
               ("agent",), "1"),
    MetricSpec("tinywindow_agent_decisions_expired_total", C,
               "Outcomes that arrived after their decision's time to live and were not linked.",
               ("agent",), "{decision}"),
)

# Held by the OpenTelemetry SDK itself, not the facade: the SDK hands a
# collection to its exporters only when it holds a point of its own.
BUILD_INFO = MetricSpec(
    "tinywindow_otel_build_info", G, "Always 1; the version label is the reporting tinywindow-otel version.",
    ("version",), "",
)

ALL_METRICS: tuple[MetricSpec, ...] = CATALOG + STATE_METRICS + SELF_METRICS
ALL_METRICS += EXECUTION_METRICS + EXCHANGE_METRICS + GEN_AI_METRICS + CALIBRATION_METRICS
BY_NAME: dict[str, MetricSpec] = {spec.name: spec for spec in ALL_METRICS}
BY_EXPOSED_NAME: dict[str, MetricSpec] = {spec.exposed_name: spec for spec in ALL_METRICS}


def _label_cell(spec: MetricSpec, label: str) -> str:
    values = spec.allowed_values(label)
    return label if values is None else f"{label} ({', '.join(values)})"


def render_markdown() -> str:
    """The metrics reference (``docs/metrics.md``), generated from the catalog."""
    lines = [
        "# Metrics reference",
        "",
        "Generated from `tinywindow_otel/catalog.py` by `tinywindow-otel docs`; "
        "a test fails when this file and the catalog drift.",
        "",
        "A label followed by values in parentheses takes only those values: any other raises `ValueError`",
        "naming the metric, the label, the value and the allowed set, and creates no series.",
        "",
    ]
    runbooks = "The alerts built on these, and what to do when they fire: [runbooks](runbooks.md)."

    def explained_in(page: str) -> str:
        return f"What each one means for a trader, with examples: [{page}]({page})."

    # (title, metrics, where a trader reads about them)
    sections: tuple[tuple[str, tuple[MetricSpec, ...], str], ...] = (
        ("Trading metrics", CATALOG, runbooks), ("State metrics", STATE_METRICS, runbooks),
        ("SDK self-metrics", SELF_METRICS, runbooks),
        ("Order execution metrics", EXECUTION_METRICS, explained_in("execution.md")),
        ("Exchange health metrics", EXCHANGE_METRICS, explained_in("exchange.md")),
        ("LLM metrics (OpenTelemetry GenAI conventions)", GEN_AI_METRICS, explained_in("llm.md")),
        ("Agent calibration metrics", CALIBRATION_METRICS, explained_in("calibration.md")),
    )
    for title, specs, intro in sections:
        lines += [
            f"## {title}",
            "",
            intro,
            "",
            "| family on /metrics | declared as | Python name | type | labels | unit | buckets | values | description |",
            "|---|---|---|---|---|---|---|---|---|",
        ]
        for spec in specs:
            labels = ", ".join(_label_cell(spec, label) for label in spec.labels) or "-"
            buckets = ", ".join(f"{b:g}" for b in spec.buckets) or "-"
            lines.append(
                f"| `{spec.exposed_name}` | `{spec.name}` | `{spec.attr}` | {spec.kind.value} | {labels} "
                f"| `{spec.unit}` | {buckets} | {spec.value_range} | {spec.description} |"
            )
        lines.append("")
    lines += [
        "## Your own metrics",
        "",
        "Declare them like prometheus_client's; they join the same registry as the metrics above (same label",
        "rules, series caps, self-metrics, `/metrics` and OTLP). A name already taken raises `ValueError`.",
        "",
        "```python",
        "from tinywindow_otel import Counter, Gauge, Histogram",
        "",
        "orders_open = Counter(\"tinywindow_orders_open_total\", \"Open orders\", [\"symbol\"])",
        "book_depth = Gauge(\"tinywindow_book_depth\", \"Order book depth\", [\"venue\"], max_series=50)",
        "fill_time = Histogram(\"tinywindow_fill_seconds\", \"Time to fill\", [\"venue\"], unit=\"s\",",
        "                      buckets=(0.01, 0.1, 1, 10))",
        "orders_open.labels(symbol=\"BTC/USDT\").inc()",
        "orders_open.initialise((\"ETH/USDT\",))  # shown at 0 from the first scrape",
        "```",
        "",
        "The positional parameters are prometheus_client's, in its order: `(name, documentation, labelnames,",
        "namespace, subsystem, unit, registry)`; the name is `namespace_subsystem_name`, and `buckets=` and",
        "`max_series=` are keyword-only. A `unit` is appended to the name on /metrics unless the name ends in",
        "it (`\"seconds\"` or the OpenTelemetry `\"s\"` give `_seconds`; OpenTelemetry abbreviations are spelled",
        "out: `\"ms\"` gives `_milliseconds`, `\"1\"` and `{...}` annotations nothing); over OTLP the name is kept",
        "and the unit travels as the metric's unit.",
        "",
        "A metric that belongs to the product itself goes into `tinywindow_otel/catalog.py` instead (a",
        "`MetricSpec` in one of the tuples above, then `tinywindow-otel docs > docs/metrics.md`): the registry",
        "builds a facade object for every entry.",
        "",
    ]
    return "\n".join(lines)
