"""Execution, exchange and LLM hot paths vs the prometheus_client code they replace.

    PYTHONPATH=$PWD python -m benchmarks.peers            # ~30 s on 2 cores
    PYTHONPATH=$PWD python -m benchmarks.peers --quick

Also part of ``python -m benchmarks`` (its Targets table has the order() and
llm_call rows).

Each row measures, interleaved in one process, one call of the SDK helper
and the hand-written prometheus_client code recording the same samples
(labels looked up per call, the same clock reads and arithmetic), so the
ratio holds on any machine. Times are process CPU time, best of repeats. Both sides write to private registries: no
pipeline runs and nothing is exported.
"""

from __future__ import annotations

import argparse
import time
import timeit
from time import perf_counter
from types import SimpleNamespace

import prometheus_client as pc

from tinywindow_otel.catalog import ALL_METRICS, BY_NAME
from tinywindow_otel.exchange import feed
from tinywindow_otel.llm import PriceTable, llm_call
from tinywindow_otel.metrics import MetricRegistry
from tinywindow_otel.orders import order, slippage_bps


def interleaved(cases: dict[str, tuple[str, dict]], number: int, repeat: int) -> dict[str, float]:
    """Best ns per execution of each statement, measured round-robin."""
    best = {name: float("inf") for name in cases}
    # CPU time of this process, not wall time: on a shared, loaded machine
    # other processes' time slices would otherwise land in whichever case
    # happened to be running.
    timers = {name: timeit.Timer(stmt, globals=ns, timer=time.process_time) for name, (stmt, ns) in cases.items()}
    for timer in timers.values():
        timer.timeit(min(number, 1000))  # warm-up: first-use paths, caches
    for _ in range(repeat):
        for name, timer in timers.items():
            best[name] = min(best[name], timer.timeit(number) / number * 1e9)
    return best


def _pc_metrics() -> dict:
    """prometheus_client twins of the catalog entries used here (same labels and buckets)."""
    registry = pc.CollectorRegistry()
    out = {}
    for name in ("tinywindow_orders_total", "tinywindow_order_latency_seconds", "tinywindow_order_fill_ratio",
                 "tinywindow_slippage_bps", "tinywindow_last_order_fill_timestamp_seconds",
                 "gen_ai.client.token.usage", "gen_ai.client.operation.duration", "tinywindow_llm_cost_usd_total",
                 "tinywindow_api_requests_total", "tinywindow_api_latency_seconds",
                 "tinywindow_exchange_feed_age_seconds"):
        spec = BY_NAME[name]
        pc_name = name.replace(".", "_").removesuffix("_total")
        labels = [label.replace(".", "_") for label in spec.labels]
        if spec.kind.value == "counter":
            out[name] = pc.Counter(pc_name, spec.description, labels, registry=registry)
        elif spec.kind.value == "gauge":
            out[name] = pc.Gauge(pc_name, spec.description, labels, registry=registry)
        else:
            out[name] = pc.Histogram(pc_name, spec.description, labels, buckets=spec.buckets, registry=registry)
    return out


def _pc_order_lifecycle(m: dict) -> None:
    """What order() records for a submitted, acknowledged, fully filled buy, by hand."""
    orders, latency = m["tinywindow_orders_total"], m["tinywindow_order_latency_seconds"]
    t0 = perf_counter()
    orders.labels("binance", "submitted").inc()
    t_ack = perf_counter()
    orders.labels("binance", "acknowledged").inc()
    latency.labels("binance", "ack").observe(t_ack - t0)
    t_fill = perf_counter()
    m["tinywindow_last_order_fill_timestamp_seconds"].labels("binance").set(time.time())
    orders.labels("binance", "filled").inc()
    latency.labels("binance", "fill").observe(t_fill - t0)
    m["tinywindow_order_fill_ratio"].labels("binance").observe(min(1.0, 1.0 / 1.0))
    m["tinywindow_slippage_bps"].labels("binance", "buy").observe(slippage_bps("buy", 100.0, 100.05))


def _tw_order_lifecycle(registry: MetricRegistry) -> None:
    with order("binance", "buy", 1.0, 100.0, registry=registry) as o:
        o.acknowledged()
        o.filled(1.0, 100.05)


RESPONSE = SimpleNamespace(usage=SimpleNamespace(input_tokens=1200, output_tokens=300,
                                                 cache_read_input_tokens=None, cache_creation_input_tokens=None))
PRICE_IN, PRICE_OUT = 3.0, 15.0


def _pc_llm(m: dict, with_api: bool):
    """A decorated LLM call by hand: the two GenAI histograms and the cost counter (and api_*)."""
    tokens, duration, cost = (m["gen_ai.client.token.usage"], m["gen_ai.client.operation.duration"],
                              m["tinywindow_llm_cost_usd_total"])
    requests, api_latency = m["tinywindow_api_requests_total"], m["tinywindow_api_latency_seconds"]

    def ask():
        t0 = perf_counter()
        response = RESPONSE
        elapsed = perf_counter() - t0
        usage = response.usage
        inp, out = usage.input_tokens, usage.output_tokens
        duration.labels("chat", "anthropic", "claude-sonnet-4", "").observe(elapsed)
        tokens.labels("chat", "anthropic", "claude-sonnet-4", "input").observe(inp)
        tokens.labels("chat", "anthropic", "claude-sonnet-4", "output").observe(out)
        cost.labels("anthropic", "claude-sonnet-4").inc((inp * PRICE_IN + out * PRICE_OUT) / 1e6)
        if with_api:
            requests.labels("anthropic").inc()
            api_latency.labels("anthropic").observe(elapsed)
        return response

    return ask


ROWS = [
    # (row, tinywindow-otel statement, prometheus_client statement, target or None)
    ("order() lifecycle: submit, ack, fill, close", "tw_order(registry)", "pc_order(pcm)", 1.0),
    ("llm_call decorated call vs 2 histograms + counter", "tw_ask()", "pc_ask()", 1.0),
    ("llm_call decorated call vs the same + api_* (like for like)", "tw_ask()", "pc_ask_api()", None),
    ("feed.message() vs bound gauge.set_to_current_time()", "ws.message()", "pc_age.set_to_current_time()", None),
]
ORDER_ROW, LLM_ROW = ROWS[0][0], ROWS[1][0]


def peers_vs_prometheus_client(number: int, repeat: int) -> tuple[list[list[str]], dict[str, float]]:
    """Rows for a table (operation, ns, ns, ratio) and each row's ratio, by row name."""
    registry = MetricRegistry(ALL_METRICS)  # private: no pipeline
    pcm = _pc_metrics()
    table = PriceTable()

    @llm_call("anthropic", "claude-sonnet-4", registry=registry, price_table=table)
    def tw_ask():
        return RESPONSE

    ws = feed("binance", "trades", registry=registry)
    pc_age = pcm["tinywindow_exchange_feed_age_seconds"].labels("binance", "trades")
    ns = {"tw_order": _tw_order_lifecycle, "pc_order": _pc_order_lifecycle, "registry": registry, "pcm": pcm,
          "tw_ask": tw_ask, "pc_ask": _pc_llm(pcm, False), "pc_ask_api": _pc_llm(pcm, True), "ws": ws,
          "pc_age": pc_age}
    rows, ratios = [], {}
    for name, tw_stmt, pc_stmt, _ in ROWS:
        best = interleaved({"tw": (tw_stmt, ns), "pc": (pc_stmt, ns)}, number, repeat)
        ratios[name] = best["tw"] / best["pc"]
        rows.append([name, f"{best['tw']:,.0f}", f"{best['pc']:,.0f}", f"{ratios[name]:.2f}x"])
    return rows, ratios


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m benchmarks.peers", description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="fewer iterations")
    args = parser.parse_args(argv)
    number, repeat = (5_000, 3) if args.quick else (20_000, 5)
    rows, ratios = peers_vs_prometheus_client(number, repeat)
    print(f"# tinywindow-otel execution/LLM benchmarks{' (--quick)' if args.quick else ''}\n")
    print("| operation | tinywindow-otel ns | prometheus_client ns | ratio |")
    print("|---|---|---|---|")
    for row in rows:
        print("| " + " | ".join(row) + " |")
    failed = 0
    print()
    for name, _, _, limit in ROWS:
        if limit is not None:
            ok = ratios[name] <= limit
            failed += not ok
            print(f"{'PASS' if ok else 'FAIL'}: {name} {ratios[name]:.2f}x (target <= {limit:g}x)")
    return 1 if failed else 0


if __name__ == "__main__":
    raise SystemExit(main())
