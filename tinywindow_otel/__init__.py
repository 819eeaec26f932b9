"""tinywindow-otel: the TinyWindow trading metrics, on OpenTelemetry.

    from tinywindow_otel import MetricsServer, trades_total, trade_pnl_usd

    MetricsServer(port=8000).start()
    trades_total.labels(status="filled", symbol="BTC/USDT").inc()
    trade_pnl_usd.observe(-120.5)   # losses are kept

Metric objects are named after the catalog's metrics (the metric name without
``tinywindow_``); their definitions live in ``tinywindow_otel.catalog``.
Declare your own with ``Counter(name, documentation, labelnames)``,
``Gauge(...)`` and ``Histogram(..., buckets=...)``.
"""

__version__ = "0.1.0"

from typing import TypeVar as _TypeVar  # noqa: E402

from .metrics import REGISTRY as _REGISTRY  # noqa: E402
from .metrics import Counter, Gauge, Histogram, MetricRegistry  # noqa: E402
from .config import ConfigurationError, MissingExtraError  # noqa: E402
from .pipeline import configure, force_flush, shutdown  # noqa: E402  (importing it also arms the lazy pipeline)
from .server import MetricsServer, MetricsServerError  # noqa: E402
from .apps import make_asgi_app, make_wsgi_app  # noqa: E402


_M = _TypeVar("_M", Counter, Gauge, Histogram)


def _catalog_metric(attr: str, kind: type[_M]) -> _M:
    """The registry's object for a catalog entry, typed as its kind (so type checkers know ``observe``)."""
    metric = _REGISTRY.by_attr(attr)
    if not isinstance(metric, kind):
        raise TypeError(f"catalog entry {attr} is a {type(metric).__name__}, not a {kind.__name__}")
    return metric


# One facade object per catalog entry; a test checks these match the catalog.
trades_total = _catalog_metric("trades_total", Counter)
trade_pnl_usd = _catalog_metric("trade_pnl_usd", Histogram)
trade_amount_usd = _catalog_metric("trade_amount_usd", Histogram)
win_rate = _catalog_metric("win_rate", Gauge)
active_positions = _catalog_metric("active_positions", Gauge)
portfolio_value_usd = _catalog_metric("portfolio_value_usd", Gauge)
unrealized_pnl_usd = _catalog_metric("unrealized_pnl_usd", Gauge)
drawdown_pct = _catalog_metric("drawdown_pct", Gauge)
daily_pnl_pct = _catalog_metric("daily_pnl_pct", Gauge)
leverage_ratio = _catalog_metric("leverage_ratio", Gauge)
portfolio_var_95 = _catalog_metric("portfolio_var_95", Gauge)
api_latency_seconds = _catalog_metric("api_latency_seconds", Histogram)
api_errors_total = _catalog_metric("api_errors_total", Counter)
api_requests_total = _catalog_metric("api_requests_total", Counter)
agent_decisions_total = _catalog_metric("agent_decisions_total", Counter)
agent_confidence = _catalog_metric("agent_confidence", Histogram)
circuit_breaker_trips = _catalog_metric("circuit_breaker_trips", Counter)
kill_switch_activations = _catalog_metric("kill_switch_activations", Counter)
circuit_breaker_open = _catalog_metric("circuit_breaker_open", Gauge)
kill_switch_engaged = _catalog_metric("kill_switch_engaged", Gauge)
position_notional_usd = _catalog_metric("position_notional_usd", Gauge)
last_trade_timestamp_seconds = _catalog_metric("last_trade_timestamp_seconds", Gauge)
last_decision_timestamp_seconds = _catalog_metric("last_decision_timestamp_seconds", Gauge)

METRIC_NAMES = (
    "trades_total", "trade_pnl_usd", "trade_amount_usd", "win_rate",
    "active_positions", "portfolio_value_usd", "unrealized_pnl_usd",
    "drawdown_pct", "daily_pnl_pct", "leverage_ratio", "portfolio_var_95",
    "api_latency_seconds", "api_errors_total", "api_requests_total",
    "agent_decisions_total", "agent_confidence",
    "circuit_breaker_trips", "kill_switch_activations",
)
STATE_METRIC_NAMES = (
    "circuit_breaker_open", "kill_switch_engaged", "position_notional_usd",
    "last_trade_timestamp_seconds", "last_decision_timestamp_seconds",
)

REGISTRY = _REGISTRY

from .decorators import agent_decision, api_call, trade  # noqa: E402
from .exchange import feed, instrument_ccxt, record_rate_limit  # noqa: E402
from .llm import llm_call  # noqa: E402
from .orders import order  # noqa: E402

__all__ = [
    "Counter", "Gauge", "Histogram", "MetricRegistry", "REGISTRY", "MetricsServer", "MetricsServerError", "shutdown",
    "make_asgi_app", "make_wsgi_app",
    "agent_decision", "api_call", "trade",
    "order", "feed", "record_rate_limit", "instrument_ccxt", "llm_call",
    "configure", "force_flush", "ConfigurationError", "MissingExtraError",
    *METRIC_NAMES, *STATE_METRIC_NAMES,
]
