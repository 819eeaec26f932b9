"""Hot path, decorators, threads, scrapes and memory: tinywindow-otel vs prometheus_client vs raw OTel.

    PYTHONPATH=$PWD python -m benchmarks            # full run (~2-3 min on 2 cores)
    PYTHONPATH=$PWD python -m benchmarks --quick    # fewer iterations (~40 s)

Everything is measured in the same process and run, interleaved, so the
ratios hold on any machine even when absolute numbers drift. Times are the
best of several repeats (least disturbed by other load). prometheus_client
uses its own private ``CollectorRegistry``; raw OTel is a separate
``MeterProvider`` with an ``InMemoryMetricReader`` and exemplars off.
Decorators from ``tinywindow_otel.decorators`` are measured only when they
exist in the tree being benchmarked ("n/a" otherwise). The Targets table at
the end says PASS or FAIL per target; the exit status is 1 when one fails.
"""

from __future__ import annotations

import argparse
import asyncio
import gc
import importlib.metadata
import os
import platform
import sys
import threading
import time
import timeit
import tracemalloc
import urllib.request

import prometheus_client as pc
from opentelemetry.sdk.metrics import AlwaysOffExemplarFilter, MeterProvider
from opentelemetry.sdk.metrics.export import InMemoryMetricReader

from tinywindow_otel import exporters as tw_exporters
from tinywindow_otel import decorators as instrument
from tinywindow_otel.catalog import ALL_METRICS, LATENCY_BUCKETS
from tinywindow_otel.metrics import REGISTRY, MetricRegistry

from . import peers
from . import targets as vs

ATTRS = {"status": "filled", "symbol": "BTC/USDT"}


# --- measuring ---------------------------------------------------------------


def best_ns(stmt: str, namespace: dict, number: int, repeat: int) -> float:
    """Best-of-``repeat`` ns per execution of ``stmt`` (a statement, so no extra call layer)."""
    timer = timeit.Timer(stmt, globals=namespace)
    timer.timeit(min(number, 1000))  # warm-up: caches, first-use paths
    return min(timer.repeat(repeat=repeat, number=number)) / number * 1e9


def interleaved(cases: dict[str, tuple[str, dict]], number: int, repeat: int) -> dict[str, float]:
    """Measure several statements round-robin, keeping each one's best time."""
    best = {name: float("inf") for name in cases}
    for _ in range(repeat):
        for name, (stmt, namespace) in cases.items():
            best[name] = min(best[name], best_ns(stmt, namespace, number, 1))
    return best


def retained_blocks_per_call(func, calls: int = 20_000) -> float:
    """Memory blocks still allocated after ``calls`` calls, per call (0 = nothing kept per call)."""
    for _ in range(1000):
        func()
    gc.collect()
    before = sys.getallocatedblocks()
    for _ in range(calls):
        func()
    gc.collect()
    return (sys.getallocatedblocks() - before) / calls


def transient_peak_bytes(func, calls: int = 2000) -> int:
    """Peak extra traced memory while making ``calls`` calls (short-lived allocations show here)."""
    func()
    tracemalloc.start()
    try:
        base = tracemalloc.get_traced_memory()[0]
        tracemalloc.reset_peak()
        for _ in range(calls):
            func()
        return tracemalloc.get_traced_memory()[1] - base
    finally:
        tracemalloc.stop()


def fmt_ns(value: float | None) -> str:
    if value is None:
        return "n/a"
    return f"{value:,.0f}"


def ratio(a: float | None, b: float | None) -> str:
    if a is None or b is None or not b:
        return "-"
    return f"{a / b:.2f}x"


def table(header: list[str], rows: list[list[str]]) -> str:
    widths = [max(len(str(row[i])) for row in [header, *rows]) for i in range(len(header))]
    lines = ["| " + " | ".join(str(h).ljust(w) for h, w in zip(header, widths)) + " |",
             "|" + "|".join("-" * (w + 2) for w in widths) + "|"]
    for row in rows:
        lines.append("| " + " | ".join(str(c).ljust(w) for c, w in zip(row, widths)) + " |")
    return "\n".join(lines)


# --- contenders --------------------------------------------------------------


def facade_objects() -> dict:
    registry = MetricRegistry(ALL_METRICS)  # private: no pipeline, nothing on /metrics
    trades = registry.by_attr("trades_total")
    latency = registry.by_attr("api_latency_seconds")
    gauge = registry.by_attr("portfolio_value_usd")
    return {
        "registry": registry, "c": trades, "bound": trades.labels(**ATTRS), "h": latency,
        "hb": latency.labels(service="claude"), "g": gauge,
    }


def prometheus_objects() -> dict:
    registry = pc.CollectorRegistry()
    counter = pc.Counter("bench_trades_total", "t", ["status", "symbol"], registry=registry)
    histogram = pc.Histogram("bench_latency_seconds", "l", ["service"], buckets=LATENCY_BUCKETS, registry=registry)
    gauge = pc.Gauge("bench_value", "v", registry=registry)
    return {"c": counter, "bound": counter.labels(**ATTRS), "hb": histogram.labels(service="claude"), "g": gauge}


def otel_objects() -> dict:
    reader = InMemoryMetricReader()
    provider = MeterProvider(metric_readers=[reader], exemplar_filter=AlwaysOffExemplarFilter(),
                             shutdown_on_exit=False)
    meter = provider.get_meter("bench")
    return {
        "provider": provider, "reader": reader,
        "c": meter.create_counter("bench_trades"),
        "h": meter.create_histogram("bench_latency", unit="s", explicit_bucket_boundaries_advisory=list(LATENCY_BUCKETS)),
        "g": meter.create_gauge("bench_value"),
        "attrs": dict(ATTRS), "hattrs": {"service": "claude"},
    }


HOT_PATH = [
    # (row, facade stmt, prometheus_client stmt, otel stmt)
    ("labels(..).inc()  [by name]", "c.labels(status='filled', symbol='BTC/USDT').inc()",
     "c.labels(status='filled', symbol='BTC/USDT').inc()",
     "c.add(1, {'status': 'filled', 'symbol': 'BTC/USDT'})"),
    ("labels(..).inc()  [positional]", "c.labels('filled', 'BTC/USDT').inc()", "c.labels('filled', 'BTC/USDT').inc()",
     None),
    ("bound inc()", "bound.inc()", "bound.inc()", "c.add(1, attrs)"),
    ("gauge set()", "g.set(50000.5)", "g.set(50000.5)", "g.set(50000.5)"),
    ("histogram observe()  [bound]", "hb.observe(0.42)", "hb.observe(0.42)", "h.record(0.42, hattrs)"),
    ("histogram labels(..).observe()", "h.labels(service='claude').observe(0.42)", None,
     "h.record(0.42, {'service': 'claude'})"),
]


def bench_hot_path(number: int, repeat: int) -> tuple[list[list[str]], dict]:
    fa, pr, ot = facade_objects(), prometheus_objects(), otel_objects()
    rows, results = [], {}
    for row, f_stmt, p_stmt, o_stmt in HOT_PATH:
        cases = {"f": (f_stmt, fa)}
        if p_stmt:
            cases["p"] = (p_stmt, pr)
        if o_stmt:
            cases["o"] = (o_stmt, ot)
        best = interleaved(cases, number, repeat)
        f, p, o = best["f"], best.get("p"), best.get("o")
        results[row] = (f, p, o)
        rows.append([row, fmt_ns(f), fmt_ns(p), fmt_ns(o), ratio(f, p), ratio(f, o)])
    ot["provider"].shutdown()
    return rows, results


def bench_allocations() -> list[list[str]]:
    fa, pr, ot = facade_objects(), prometheus_objects(), otel_objects()
    ops = [
        ("labels(..).inc()", lambda: fa["c"].labels(status="filled", symbol="BTC/USDT").inc(),
         lambda: pr["c"].labels(status="filled", symbol="BTC/USDT").inc(),
         lambda: ot["c"].add(1, {"status": "filled", "symbol": "BTC/USDT"})),
        ("bound inc()", fa["bound"].inc, pr["bound"].inc, lambda: ot["c"].add(1, ot["attrs"])),
        ("observe()", lambda: fa["hb"].observe(0.42), lambda: pr["hb"].observe(0.42),
         lambda: ot["h"].record(0.42, ot["hattrs"])),
    ]
    rows = []
    for name, f, p, o in ops:
        rows.append([name] + [f"{retained_blocks_per_call(fn):.3f} / {transient_peak_bytes(fn):,}" for fn in (f, p, o)])
    ot["provider"].shutdown()
    return rows


def bench_exporters(number: int, repeat: int) -> list[list[str]]:
    registry = MetricRegistry(ALL_METRICS)
    ns = {
        "trading": tw_exporters.TradingExporter(registry), "portfolio": tw_exporters.PortfolioExporter(registry),
        "risk": tw_exporters.RiskExporter(registry), "api": tw_exporters.APIExporter(registry),
        "agent": tw_exporters.AgentExporter(registry), "safety": tw_exporters.SafetyExporter(registry),
        "positions": {"BTC/USDT": 0.1, "ETH/USDT": -2.0},
    }
    calls = [
        ("trading.record_trade(pnl, amount)", "trading.record_trade('BTC/USDT', 'filled', pnl=-12.5, amount_usd=1000.0)"),
        ("portfolio.update_portfolio(2 positions)", "portfolio.update_portfolio(50000.0, 500.0, positions, leverage=1.5)"),
        ("risk.set_drawdown()", "risk.set_drawdown(3.2)"),
        ("api.record_request(ok)", "api.record_request('binance', 0.15, True)"),
        ("api.record_request(error)", "api.record_request('binance', 0.15, False, 'timeout')"),
        ("agent.record_decision()", "agent.record_decision('market_analyst', 'buy', 0.8)"),
        ("safety.record_circuit_breaker_trip()", "safety.record_circuit_breaker_trip('volatility')"),
    ]
    best = interleaved({name: (stmt, ns) for name, stmt in calls}, max(number // 10, 1000), repeat)
    return [[name, fmt_ns(best[name])] for name, _ in calls]


# --- decorators ----------------------------------------------------------------


def _noop():
    return None


async def _anoop():
    return None


def _decide():
    return ("buy", 0.8)


async def _adecide():
    return ("buy", 0.8)


def decorator_cases() -> dict:
    """name -> (decorator, sync function, async function), all on a private registry."""
    registry = MetricRegistry(ALL_METRICS)
    latency = registry.by_attr("api_latency_seconds").labels(service="claude")
    errors = registry.by_attr("api_errors_total").labels(service="claude", type="any")
    api = tw_exporters.APIExporter(registry)
    trading = tw_exporters.TradingExporter(registry)
    agents = tw_exporters.AgentExporter(registry)
    return {
        "series.time()": (latency.time, _noop, _anoop),
        "series.count_exceptions()": (errors.count_exceptions, _noop, _anoop),
        "api_call('claude')": (lambda: instrument.api_call("claude", exporter=api), _noop, _anoop),
        "trade('BTC/USDT')": (lambda: instrument.trade("BTC/USDT", exporter=trading), _noop, _anoop),
        # A decision-returning function: a None return records nothing.
        "agent_decision('analyst')": (lambda: instrument.agent_decision("analyst", exporter=agents), _decide, _adecide),
    }


def _async_ns(func, number: int, repeat: int) -> float:
    async def drive(n):
        for _ in range(n):
            await func()

    loop = asyncio.new_event_loop()
    try:
        loop.run_until_complete(drive(1000))
        best = float("inf")
        for _ in range(repeat):
            start = time.perf_counter_ns()
            loop.run_until_complete(drive(number))
            best = min(best, (time.perf_counter_ns() - start) / number)
        return best
    finally:
        loop.close()


def bench_decorators(number: int, repeat: int) -> tuple[list[list[str]], dict]:
    rows, overheads = [], {}
    number = max(number // 5, 2000)
    bare = best_ns("f()", {"f": _noop}, number, repeat)
    abare = _async_ns(_anoop, number, repeat)
    for name, (factory, sync_func, async_func) in decorator_cases().items():
        sync_wrapped = factory()(sync_func)
        async_wrapped = factory()(async_func)
        s = best_ns("f()", {"f": sync_wrapped}, number, repeat)
        a = _async_ns(async_wrapped, number, repeat)
        overheads[name] = max(s - bare, a - abare)
        rows.append([name, fmt_ns(s), fmt_ns(s - bare), fmt_ns(a), fmt_ns(a - abare)])
    rows.insert(0, ["bare call", fmt_ns(bare), "0", fmt_ns(abare), "0"])
    return rows, overheads


# --- threads ---------------------------------------------------------------------


def _threaded_ns(func, threads: int, calls: int) -> float:
    per_thread = calls // threads
    barrier = threading.Barrier(threads + 1)

    def work():
        barrier.wait()
        for _ in range(per_thread):
            func()

    workers = [threading.Thread(target=work) for _ in range(threads)]
    for worker in workers:
        worker.start()
    start = time.perf_counter_ns()
    barrier.wait()
    for worker in workers:
        worker.join()
    return (time.perf_counter_ns() - start) / (per_thread * threads)


def bench_threads(calls: int, repeat: int) -> tuple[list[list[str]], dict[str, float]]:
    """Wall ns per call with 1, 2 and 8 threads on one series; ratios to prometheus_client by row."""
    fa, pr, ot = facade_objects(), prometheus_objects(), otel_objects()
    rows, ratios = [], {}
    for threads in (1, 2, 8):
        ops = [("bound inc()", fa["bound"].inc, pr["bound"].inc, lambda: ot["c"].add(1, ot["attrs"])),
               ("observe()", lambda: fa["hb"].observe(0.42), lambda: pr["hb"].observe(0.42),
                lambda: ot["h"].record(0.42, ot["hattrs"]))]
        for name, f, p, o in ops:
            best = [min(_threaded_ns(fn, threads, calls) for _ in range(repeat)) for fn in (f, p, o)]
            rows.append([f"{threads} thread(s): {name}", *map(fmt_ns, best), ratio(best[0], best[1])])
            ratios[f"{threads} thread(s): {name}"] = best[0] / best[1]
    before = fa["bound"].get()
    _threaded_ns(fa["bound"].inc, 8, 80_000)
    assert fa["bound"].get() - before == 80_000, "lost increments under contention"
    ot["provider"].shutdown()
    return rows, ratios


# --- scrapes and memory --------------------------------------------------------------


def _scrape_times(render, repeat: int) -> float:
    render()  # the first scrape builds caches; steady state is what Prometheus sees
    return min(_timed(render) for _ in range(repeat))


def _timed(func) -> float:
    start = time.perf_counter()
    func()
    return time.perf_counter() - start


def _peak_bytes(func) -> int:
    gc.collect()
    tracemalloc.start()
    try:
        base = tracemalloc.get_traced_memory()[0]
        tracemalloc.reset_peak()
        func()
        return tracemalloc.get_traced_memory()[1] - base
    finally:
        tracemalloc.stop()


def _series_bytes(create) -> int:
    gc.collect()
    tracemalloc.start()
    try:
        base = tracemalloc.get_traced_memory()[0]
        create()
        gc.collect()
        return tracemalloc.get_traced_memory()[0] - base
    finally:
        tracemalloc.stop()


def bench_scrapes(sizes: tuple[int, ...], repeat: int) -> tuple[list[list[str]], dict]:
    from tinywindow_otel import MetricsServer
    from tinywindow_otel.pipeline import get_pipeline

    pipeline = get_pipeline()
    rows, results = [], {}
    counter = REGISTRY.get("tinywindow_api_requests_total")
    histogram = REGISTRY.get("tinywindow_api_latency_seconds")
    limits = counter.max_series, histogram.max_series
    with MetricsServer(host="127.0.0.1", port=0) as server:
        def http():
            with urllib.request.urlopen(server.url, timeout=60) as response:
                return response.read()

        try:
            for metric, kind in ((counter, "counters"), (histogram, "histograms")):
                for n in sizes:
                    for m in REGISTRY:
                        m.clear()
                    metric.max_series = n + 10

                    def create():
                        for i in range(n):
                            series = metric.labels(service=f"svc-{i:05d}")
                            if kind == "counters":
                                series.inc(i)
                            else:
                                series.observe((i % 97) / 10)

                    series_bytes = _series_bytes(create)
                    cache_bytes = _series_bytes(pipeline.render)  # first scrape: builds the per-series line cache
                    fast = _scrape_times(pipeline.render, repeat)
                    over_http = _scrape_times(http, repeat)
                    peak = _peak_bytes(pipeline.render)
                    results[(kind, n)] = fast
                    rows.append([f"{n:,} {kind}", f"{fast * 1e3:,.1f}", f"{over_http * 1e3:,.1f}",
                                 f"{peak / 1e6:,.1f}", f"{series_bytes / n:,.0f}", f"{cache_bytes / n:,.0f}"])
            for m in REGISTRY:
                m.clear()
            from tinywindow_otel.cli.demo import TradingSimulation

            simulation = TradingSimulation(seed=1)
            simulation.initialise_series()
            for _ in range(300):
                simulation.tick()
            nseries = sum(len(m.series()) for m in REGISTRY)
            fast = _scrape_times(pipeline.render, repeat * 3)
            over_http = _scrape_times(http, repeat * 3)
            peak = _peak_bytes(pipeline.render)
            results[("demo", nseries)] = fast
            rows.append([f"demo catalog ({nseries} series)", f"{fast * 1e3:,.2f}", f"{over_http * 1e3:,.2f}",
                         f"{peak / 1e6:,.2f}", "-", "-"])
        finally:
            counter.max_series, histogram.max_series = limits
            for m in REGISTRY:
                m.clear()
    return rows, results


# --- report ----------------------------------------------------------------------------


def environment() -> str:
    """What the ratios depend on: cores available and the versions compared (not the CPU model:
    every figure is a ratio against a reference measured in the same run)."""
    import opentelemetry.sdk.version as otel_version

    return (f"{len(os.sched_getaffinity(0))} CPU(s); "
            f"Python {platform.python_version()}; opentelemetry-sdk {otel_version.__version__}; "
            f"prometheus_client {importlib.metadata.version('prometheus_client')}")


def main(argv: list[str] | None = None) -> int:

    parser = argparse.ArgumentParser(prog="python -m benchmarks", description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="fewer iterations and repeats (~40 s)")
    args = parser.parse_args(argv)
    number, repeat = (20_000, 3) if args.quick else (100_000, 5)
    sizes = (1_000, 10_000)
    print(f"# tinywindow-otel benchmarks{' (--quick)' if args.quick else ''}\n\nEnvironment: {environment()}\n")

    # Many short interleaved repeats: on a shared machine the best one is the least disturbed.
    hot_rows, hot = bench_hot_path(number // 5, repeat * 4)
    print("## Hot path (ns per call, best of repeats)\n")
    print(table(["operation", "tinywindow-otel", "prometheus_client", "raw OTel", "vs prom", "vs OTel"], hot_rows))
    print("\nraw OTel: `counter.add` / `histogram.record` / `gauge.set` with an attributes dict "
          "(built per call in the labelled rows, pre-built in the bound rows); exemplars off.\n")

    print("## Allocations per call (retained blocks per call / transient peak bytes over 2,000 calls)\n")
    print(table(["operation", "tinywindow-otel", "prometheus_client", "raw OTel"], bench_allocations()))

    print("\n## Exporter calls (ns per call)\n")
    print(table(["call", "ns"], bench_exporters(number, repeat)))

    dec_rows, overheads = bench_decorators(number, repeat)
    print("\n## Decorators around a no-op (ns per call; overhead = minus the bare call)\n")
    print(table(["decorator", "sync", "sync overhead", "async", "async overhead"], dec_rows))

    print("\n## Threads (wall ns per call, all threads on one series)\n")
    thread_rows, vs_threads = bench_threads(number * 2 if not args.quick else number, max(repeat - 2, 1))
    print(table(["threads: operation", "tinywindow-otel", "prometheus_client", "raw OTel", "vs prom"], thread_rows))

    scrape_rows, scrapes = bench_scrapes(sizes, repeat)
    print("\n## Scrapes (ms; best of repeats after a warm-up scrape) and memory\n")
    print(table(["series", "render()", "HTTP GET", "peak MB (render)", "facade B/series",
                 "scrape cache B/series"], scrape_rows))

    n = 10_000 if not args.quick else 3_000
    vs_rows, vs_scrape = vs.scrapes_vs_prometheus_client(n, repeat)
    print(f"\n## /metrics vs prometheus_client (ms, best of repeats)\n")
    print(table(["series", "HTTP GET /metrics", "render()", "prometheus_client generate_latest", "ratio"], vs_rows))

    mem_rows, vs_mem = vs.memory_vs_prometheus_client(n)
    print("\n## Memory per series (traced bytes: facade + pipeline + scrape cache vs a prometheus_client child)\n")
    print(table(["kind", "tinywindow-otel", "prometheus_client", "ratio"], mem_rows))

    deco_rows, vs_deco = vs.decorators_vs_prometheus_client(max(number // 5, 2000), repeat)
    print("\n## Decorators vs the prometheus_client code for the same samples (sync overhead, ns per call)\n")
    print(table(["decorator", "tinywindow-otel", "prometheus_client", "ratio"], deco_rows))

    peer_rows, vs_peers = peers.peers_vs_prometheus_client(5_000 if args.quick else 20_000, repeat)
    print("\n## Execution, LLM and exchange helpers vs the prometheus_client code for the same samples "
          "(process CPU ns per call)\n")
    print(table(["operation", "tinywindow-otel", "prometheus_client", "ratio"], peer_rows))

    seconds = 2.0 if args.quick else 5.0
    inter_rows, vs_inter = vs.scrape_interference(n, seconds)
    print(f"\n## Scrape interference: a 1 ms asyncio sleeper while a thread scrapes continuously ({seconds:g} s each)\n")
    print(table(["scraping", "p99.9 wake-up delay (ms)", "median (ms)", "scrapes"], inter_rows))

    churn_rows, vs_churn = vs.churn(30_000, 10, repeat)
    print("\n## Series churn (create + remove)\n")
    print(table(["workload", "RSS growth (MiB)", "scrape before (ms)", "scrape after (ms)"], churn_rows))

    bound = hot["bound inc()"]
    labelled = hot["labels(..).inc()  [by name]"]
    observe = hot["histogram observe()  [bound]"]
    checks = [
        (f"HTTP GET of {n:,} counter series <= 0.5x generate_latest", vs_scrape["counter"], 0.5),
        (f"HTTP GET of {n:,} histogram series <= 0.15x generate_latest", vs_scrape["histogram"], 0.15),
        ("memory per counter series <= 1.5x prometheus_client", vs_mem["counter"], 1.5),
        ("memory per histogram series <= 1.0x prometheus_client", vs_mem["histogram"], 1.0),
        ("bound inc() <= 0.6x prometheus_client", bound[0] / bound[1], 0.6),
        ("histogram observe() <= 0.4x prometheus_client", observe[0] / observe[1], 0.4),
        ("labels(**kw).inc() <= 0.35x prometheus_client", labelled[0] / labelled[1], 0.35),
        ("2 and 8 threads on one series (inc, observe) <= 1.0x prometheus_client",
         max(value for key, value in vs_threads.items() if not key.startswith("1 ")), 1.0),
        ("api_call sync overhead <= 0.7x prometheus_client code", vs_deco["api_call('claude')"], 0.7),
        ("trade() sync overhead <= 1.0x prometheus_client code", vs_deco["trade('BTC/USDT')"], 1.0),
        ("trade() -> status, pnl, amount sync overhead <= 1.0x prometheus_client code",
         vs_deco["trade() -> status, pnl, amount"], 1.0),
        ("agent_decision() sync overhead <= 1.0x prometheus_client code", vs_deco["agent_decision('analyst')"], 1.0),
        ("order() lifecycle <= 1.0x prometheus_client equivalent", vs_peers[peers.ORDER_ROW], 1.0),
        ("llm_call <= 1.0x prometheus_client equivalent (2 histograms + counter)", vs_peers[peers.LLM_ROW], 1.0),
        ("scrape interference p99.9 <= 0.5x prometheus_client's server", vs_inter, 0.5),
        ("30k create/remove cycles: RSS growth < 5 MiB", vs_churn["rss_mib"], 5.0),
        ("30k create/remove cycles: scrape time after / before <= 1.5", vs_churn["scrape_ratio"], 1.5),
    ]
    print("\n## Targets\n")
    rows = [[name, f"{value:.3g}", f"{limit:g}", "PASS" if value <= limit else "FAIL"] for name, value, limit in checks]
    print(table(["target", "measured", "limit", "result"], rows))
    failed = [name for name, value, limit in checks if not value <= limit]
    if failed:
        print(f"\n{len(failed)} target(s) failed: {'; '.join(failed)}")
    return 1 if failed else 0


if __name__ == "__main__":
    raise SystemExit(main())
