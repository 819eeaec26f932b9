"""tinywindow-otel: the TinyWindow trading metrics, on OpenTelemetry.

    from tinywindow_otel import MetricsServer, trades_total, trade_pnl_usd

    MetricsServer(port=8000).start()
    trades_total.labels(status="filled", symbol="BTC/USDT").inc()
    trade_pnl_usd.observe(-120.5)   # losses are kept

Metric objects are named as in the seed document (the metric name without
``tinywindow_``); their definitions live in ``tinywindow_otel.catalog``.
"""

__version__ = "0.1.0"

from .metrics import REGISTRY as _REGISTRY  # noqa: E402
from .metrics import Counter, Gauge, Histogram  # noqa: E402
from .config import ConfigurationError, MissingExtraError  # noqa: E402
from .pipeline import configure, force_flush, shutdown  # noqa: E402  (importing it also arms the lazy pipeline)
from .server import MetricsServer, MetricsServerError  # noqa: E402

# One facade object per catalog entry; a test checks these match the catalog.
trades_total = _REGISTRY.by_attr("trades_total")
trade_pnl_usd = _REGISTRY.by_attr("trade_pnl_usd")
trade_amount_usd = _REGISTRY.by_attr("trade_amount_usd")
win_rate = _REGISTRY.by_attr("win_rate")
active_positions = _REGISTRY.by_attr("active_positions")
portfolio_value_usd = _REGISTRY.by_attr("portfolio_value_usd")
unrealized_pnl_usd = _REGISTRY.by_attr("unrealized_pnl_usd")
drawdown_pct = _REGISTRY.by_attr("drawdown_pct")
daily_pnl_pct = _REGISTRY.by_attr("daily_pnl_pct")
leverage_ratio = _REGISTRY.by_attr("leverage_ratio")
portfolio_var_95 = _REGISTRY.by_attr("portfolio_var_95")
api_latency_seconds = _REGISTRY.by_attr("api_latency_seconds")
api_errors_total = _REGISTRY.by_attr("api_errors_total")
api_requests_total = _REGISTRY.by_attr("api_requests_total")
agent_decisions_total = _REGISTRY.by_attr("agent_decisions_total")
agent_confidence = _REGISTRY.by_attr("agent_confidence")
circuit_breaker_trips = _REGISTRY.by_attr("circuit_breaker_trips")
kill_switch_activations = _REGISTRY.by_attr("kill_switch_activations")

METRIC_NAMES = (
    "trades_total", "trade_pnl_usd", "trade_amount_usd", "win_rate",
    "active_positions", "portfolio_value_usd", "unrealized_pnl_usd",
    "drawdown_pct", "daily_pnl_pct", "leverage_ratio", "portfolio_var_95",
    "api_latency_seconds", "api_errors_total", "api_requests_total",
    "agent_decisions_total", "agent_confidence",
    "circuit_breaker_trips", "kill_switch_activations",
)

from .decorators import agent_decision, api_call, trade  # noqa: E402

__all__ = [
    "Counter", "Gauge", "Histogram", "MetricsServer", "MetricsServerError", "shutdown",
    "agent_decision", "api_call", "trade",
    "configure", "force_flush", "ConfigurationError", "MissingExtraError",
    *METRIC_NAMES,
]
