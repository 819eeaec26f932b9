"""Side-by-side measurements against prometheus_client, in one process and run.

Each function returns rows for a table and the ratios the targets read.
"""

from __future__ import annotations

import asyncio
import gc
import os
import statistics
import threading
import time
import tracemalloc
import urllib.request
from collections.abc import Callable, Iterator
from contextlib import contextmanager

import prometheus_client as pc

from tinywindow_otel import MetricsServer
from tinywindow_otel import decorators
from tinywindow_otel import exporters as tw_exporters
from tinywindow_otel.catalog import (ALL_METRICS, AMOUNT_BUCKETS, BY_NAME, CONFIDENCE_BUCKETS, LATENCY_BUCKETS,
                                     PNL_BUCKETS)
from tinywindow_otel.metrics import REGISTRY, MetricRegistry
from tinywindow_otel.pipeline import get_pipeline

COUNTER = "tinywindow_api_requests_total"
HISTOGRAM = "tinywindow_api_latency_seconds"


def _best(func: Callable[[], object], repeat: int) -> float:
    func()  # warm-up: caches, connections
    best = float("inf")
    for _ in range(repeat):
        start = time.perf_counter()
        func()
        best = min(best, time.perf_counter() - start)
    return best


def _interleaved_best(funcs: list[Callable[[], object]], repeat: int) -> list[float]:
    """Best time of each function over ``repeat`` rounds, the functions taking turns in each round."""
    for func in funcs:
        func()  # warm-up: caches, connections
    best = [float("inf")] * len(funcs)
    for _ in range(repeat):
        for i, func in enumerate(funcs):
            start = time.perf_counter()
            func()
            best[i] = min(best[i], time.perf_counter() - start)
    return best


def _traced(create: Callable[[], object]) -> int:
    gc.collect()
    tracemalloc.start()
    try:
        base = tracemalloc.get_traced_memory()[0]
        create()
        gc.collect()
        return tracemalloc.get_traced_memory()[0] - base
    finally:
        tracemalloc.stop()


def _prom_family(kind: str, registry: pc.CollectorRegistry):
    spec = BY_NAME[COUNTER if kind == "counter" else HISTOGRAM]
    if kind == "counter":
        return pc.Counter(spec.name, spec.description, list(spec.labels), registry=registry)
    return pc.Histogram(spec.name, spec.description, list(spec.labels), buckets=spec.buckets, registry=registry)


def _fill(family, kind: str, n: int) -> None:
    for i in range(n):
        series = family.labels(f"svc-{i:05d}")
        if kind == "counter":
            series.inc(i)
        else:
            series.observe((i % 97) / 10)


@contextmanager
def _without_created() -> Iterator[None]:
    """prometheus_client writes no ``_created`` samples meanwhile: the body /metrics serves has none.

    With them its body for 10k counter series is 2.3x as long (1.34 MB vs 0.58 MB), so a
    comparison with them on would flatter the facade. ``disable_created_metrics()`` is
    prometheus_client's documented switch; it is read at collection time.
    """
    pc.disable_created_metrics()
    try:
        yield
    finally:
        pc.enable_created_metrics()


def _family_block(text: str, exposed: str) -> str:
    """One family's lines (HELP, TYPE, samples) from an exposition."""
    start = text.index(f"# HELP {exposed} ")
    end = text.find("# HELP ", start + 1)
    return text[start:] if end == -1 else text[start:end]


class _Facade:
    """The process registry with ``n`` series of one family, restored on exit."""

    def __init__(self, kind: str, n: int) -> None:
        self.metric = REGISTRY.get(COUNTER if kind == "counter" else HISTOGRAM)
        self.kind, self.n = kind, n

    def __enter__(self):
        REGISTRY.clear()
        self.limit = self.metric.max_series
        self.metric.max_series = self.n + 10
        return self

    def __exit__(self, *exc) -> None:
        self.metric.max_series = self.limit
        REGISTRY.clear()


def scrapes_vs_prometheus_client(n: int, repeat: int) -> tuple[list[list[str]], dict]:
    """HTTP GET of /metrics with ``n`` series vs prometheus_client's generate_latest of the same series.

    The family's text is checked to be identical in both bodies (no ``_created`` lines on
    either side); /metrics also carries the other catalog families' HELP/TYPE and the
    runtime metrics, about 1 % of the body at 10k series.
    """
    pipeline = get_pipeline()
    rows, ratios = [], {}
    for kind in ("counter", "histogram"):
        registry = pc.CollectorRegistry(auto_describe=False)
        family = _prom_family(kind, registry)
        _fill(family, kind, n)
        with _Facade(kind, n) as facade, MetricsServer(port=0) as server, _without_created():
            _fill(facade.metric, kind, n)

            def get() -> bytes:
                with urllib.request.urlopen(server.url, timeout=120) as response:
                    return response.read()

            exposed = facade.metric.spec.exposed_name
            body, baseline = get().decode(), pc.generate_latest(registry).decode()
            if _family_block(body, exposed) != _family_block(baseline, exposed):
                raise AssertionError(f"{exposed}: /metrics and generate_latest differ; the ratio would compare "
                                     f"different outputs")
            # Interleaved, best of each: a slow spell of the machine hits both sides alike.
            ours, render, theirs = _interleaved_best(
                [get, pipeline.render, lambda: pc.generate_latest(registry)],
                max(1, repeat // 2) if kind == "histogram" else repeat)
        ratios[kind] = ours / theirs
        rows.append([f"{n:,} {kind} series", f"{ours * 1e3:,.1f}", f"{render * 1e3:,.1f}", f"{theirs * 1e3:,.1f}",
                     f"{ours / theirs:.2f}x"])
    return rows, ratios


def memory_vs_prometheus_client(n: int) -> tuple[list[list[str]], dict]:
    """Traced bytes per series: facade + pipeline + the scrape's line cache, vs prometheus_client's child."""
    pipeline = get_pipeline()
    rows, ratios = [], {}
    for kind in ("counter", "histogram"):
        registry = pc.CollectorRegistry(auto_describe=False)
        family = _prom_family(kind, registry)
        theirs = _traced(lambda: _fill(family, kind, n)) / n
        with _Facade(kind, n) as facade:
            pipeline.render()

            def create() -> None:
                _fill(facade.metric, kind, n)
                pipeline.render()  # the first scrape caches each series' line

            ours = _traced(create) / n
        ratios[kind] = ours / theirs
        rows.append([f"{kind} series", f"{ours:,.0f}", f"{theirs:,.0f}", f"{ours / theirs:.2f}x"])
    return rows, ratios


# --- decorators vs the prometheus_client code a user writes ---------------------------


def _noop():
    return None


def _decide():
    return ("buy", 0.8)


def _closed_trade():
    return {"status": "filled", "pnl": -12.5, "amount_usd": 1000.0}


def _ns(func: Callable[[], object], number: int, repeat: int) -> float:
    import timeit

    timer = timeit.Timer("f()", globals={"f": func})
    timer.timeit(min(number, 1000))
    return min(timer.repeat(repeat=repeat, number=number)) / number * 1e9


def decorators_vs_prometheus_client(number: int, repeat: int) -> tuple[list[list[str]], dict]:
    registry = MetricRegistry(ALL_METRICS)
    api = tw_exporters.APIExporter(registry)
    trading = tw_exporters.TradingExporter(registry)
    agents = tw_exporters.AgentExporter(registry)

    pr = pc.CollectorRegistry(auto_describe=False)
    requests = pc.Counter("api_requests", "r", ["service"], registry=pr)
    latency = pc.Histogram("api_latency_seconds", "l", ["service"], buckets=LATENCY_BUCKETS, registry=pr)
    errors = pc.Counter("api_errors", "e", ["service", "type"], registry=pr)
    trades = pc.Counter("trades", "t", ["status", "symbol"], registry=pr)
    last_trade = pc.Gauge("last_trade_timestamp_seconds", "h", registry=pr)
    pnl = pc.Histogram("trade_pnl_usd", "p", buckets=PNL_BUCKETS, registry=pr)
    amount = pc.Histogram("trade_amount_usd", "a", ["symbol"], buckets=AMOUNT_BUCKETS, registry=pr)
    win_rate = pc.Gauge("win_rate", "w", registry=pr)
    tally = {"wins": 0, "losses": 0}
    decisions = pc.Counter("agent_decisions", "d", ["action", "agent"], registry=pr)
    confidence = pc.Histogram("agent_confidence", "c", ["agent"], buckets=CONFIDENCE_BUCKETS, registry=pr)
    last_decision = pc.Gauge("last_decision_timestamp_seconds", "h", ["agent"], registry=pr)

    # What a prometheus_client user writes for the same samples.
    @errors.labels("claude", "any").count_exceptions()
    @latency.labels("claude").time()
    def prom_api():
        requests.labels("claude").inc()
        return None

    def prom_trade():
        result = _noop()
        trades.labels("filled", "BTC/USDT").inc()
        last_trade.set(time.time())
        return result

    def prom_trade_closed():
        # The same samples as trade() reading a closed trade from the return value: the counter,
        # both histograms, the win rate from a tally, the heartbeat.
        result = _closed_trade()
        status, result_pnl, result_amount = result["status"], result.get("pnl"), result.get("amount_usd")
        trades.labels(status, "BTC/USDT").inc()
        amount.labels("BTC/USDT").observe(result_amount)
        pnl.observe(result_pnl)
        tally["wins" if result_pnl > 0 else "losses"] += 1
        win_rate.set(100.0 * tally["wins"] / (tally["wins"] + tally["losses"]))
        last_trade.set(time.time())
        return result

    def prom_decision():
        action, score = _decide()
        decisions.labels(action, "analyst").inc()
        confidence.labels("analyst").observe(score)
        last_decision.labels("analyst").set(time.time())
        return action, score

    cases = {
        "api_call('claude')": (decorators.api_call("claude", exporter=api)(_noop), prom_api),
        "trade('BTC/USDT')": (decorators.trade("BTC/USDT", exporter=trading)(_noop), prom_trade),
        "trade() -> status, pnl, amount": (decorators.trade("BTC/USDT", exporter=trading)(_closed_trade),
                                           prom_trade_closed),
        "agent_decision('analyst')": (decorators.agent_decision("analyst", exporter=agents)(_decide), prom_decision),
    }
    bare = min(_ns(_noop, number, repeat), _ns(_decide, number, repeat), _ns(_closed_trade, number, repeat))
    rows, ratios = [], {}
    for name, (ours_func, theirs_func) in cases.items():
        ours = theirs = float("inf")
        for _ in range(repeat):  # interleaved, best of each
            ours = min(ours, _ns(ours_func, number, 1))
            theirs = min(theirs, _ns(theirs_func, number, 1))
        ratio = (ours - bare) / (theirs - bare)
        ratios[name] = ratio
        rows.append([name, f"{ours - bare:,.0f}", f"{theirs - bare:,.0f}", f"{ratio:.2f}x"])
    return rows, ratios


# --- scrape interference ------------------------------------------------------------------


def _wakeup_delays(seconds: float) -> list[float]:
    """An asyncio task sleeping 1 ms, timing how late each wake-up is (ms)."""
    async def run() -> list[float]:
        delays = []
        end = time.perf_counter() + seconds
        while time.perf_counter() < end:
            start = time.perf_counter()
            await asyncio.sleep(0.001)
            delays.append((time.perf_counter() - start - 0.001) * 1e3)
        return delays

    return asyncio.run(run())


def _p999(values: list[float]) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(len(ordered) * 0.999))]


def _while_scraping(url: str, seconds: float) -> tuple[float, float, int]:
    stop = threading.Event()
    scrapes = [0]

    def scrape_forever() -> None:
        while not stop.is_set():
            with urllib.request.urlopen(url, timeout=120) as response:
                response.read()
            scrapes[0] += 1

    thread = threading.Thread(target=scrape_forever, daemon=True)
    thread.start()
    try:
        delays = _wakeup_delays(seconds)
    finally:
        stop.set()
        thread.join(120)
    return _p999(delays), statistics.median(delays), scrapes[0]


def scrape_interference(n: int, seconds: float) -> tuple[list[list[str]], float]:
    """p99.9 wake-up delay of a 1 ms asyncio sleeper while another thread scrapes ``n`` histogram series."""
    registry = pc.CollectorRegistry(auto_describe=False)
    _fill(_prom_family("histogram", registry), "histogram", n)
    server, thread = pc.start_http_server(0, addr="127.0.0.1", registry=registry)
    try:
        with _without_created():  # the same body as ours, not 10k _created lines more
            theirs = _while_scraping(f"http://127.0.0.1:{server.server_address[1]}/metrics", seconds)
    finally:
        server.shutdown()
        server.server_close()
        thread.join(10)
    del registry
    gc.collect()
    with _Facade("histogram", n) as facade, MetricsServer(port=0) as ours_server:
        _fill(facade.metric, "histogram", n)
        ours = _while_scraping(ours_server.url, seconds)
    quiet = _wakeup_delays(min(seconds, 1.0))
    rows = [
        ["no scrapes", f"{_p999(quiet):.2f}", f"{statistics.median(quiet):.3f}", "-"],
        [f"tinywindow-otel MetricsServer, {n:,} histogram series", f"{ours[0]:.2f}", f"{ours[1]:.3f}", str(ours[2])],
        [f"prometheus_client start_http_server, same series", f"{theirs[0]:.2f}", f"{theirs[1]:.3f}", str(theirs[2])],
    ]
    return rows, ours[0] / theirs[0]


# --- create/remove churn --------------------------------------------------------------------


def _rss_bytes() -> int:
    with open("/proc/self/statm") as statm:
        return int(statm.read().split()[1]) * os.sysconf("SC_PAGE_SIZE")


def churn(cycles: int, live: int, repeat: int) -> tuple[list[list[str]], dict]:
    """``cycles`` create/remove cycles with at most ``live`` series alive; RSS and scrape time of the live ones."""
    pipeline = get_pipeline()
    metric = REGISTRY.get("tinywindow_active_positions")
    REGISTRY.clear()
    for i in range(live):
        metric.labels(symbol=f"S{i}").set(i)
    gc.collect()
    scrape_before = _best(pipeline.render, repeat * 4)
    rss_before = _rss_bytes()
    for i in range(live, cycles + live):
        metric.labels(symbol=f"S{i}").set(i)
        metric.remove(f"S{i - live}")
        if i % 1000 == 0:
            pipeline.render()  # scrapes meanwhile, as Prometheus would
    gc.collect()
    rss_growth = _rss_bytes() - rss_before
    scrape_after = _best(pipeline.render, repeat * 4)
    REGISTRY.clear()
    rows = [[f"{cycles:,} cycles, <= {live} live series", f"{rss_growth / 2**20:.2f}",
             f"{scrape_before * 1e3:.3f}", f"{scrape_after * 1e3:.3f}"]]
    return rows, {"rss_mib": rss_growth / 2**20, "scrape_ratio": scrape_after / scrape_before}
