"""A trading program using the execution, exchange, LLM and calibration API, checked with mypy --strict."""

from __future__ import annotations

from tinywindow_otel.exchange import feed, instrument_ccxt, record_rate_limit
from tinywindow_otel.exporters import agent_exporter
from tinywindow_otel.llm import llm_call, prices
from tinywindow_otel.orders import Order, order


def place() -> None:
    with order("binance", "buy", 0.5, reference_price=65_000.0) as o:
        o.acknowledged()
        o.filled(0.5, 65_010.0)
    resting = Order("binance", "sell", 1.0).submit()
    resting.cancel_requested()
    resting.cancelled()


@llm_call("anthropic", "claude-sonnet-4-5")
def ask(prompt: str) -> dict[str, object]:
    return {"usage": {"input_tokens": 1, "output_tokens": 2}}


def main() -> None:
    place()
    ask("x")
    with llm_call("openai", "gpt-4o") as call:
        call.usage(input_tokens=3, output_tokens=4)
    prices.set("openai", "gpt-4o", input=2.5, output=10.0)
    ws = feed("binance", "trades")
    ws.message()
    ws.reconnected()
    record_rate_limit("binance", {"X-MBX-USED-WEIGHT-1M": "10"})
    decision = agent_exporter.record_decision("analyst", "buy", 0.8)
    if decision is not None:
        agent_exporter.record_outcome(decision, 12.0)
    instrument_ccxt(object(), venue="x")
