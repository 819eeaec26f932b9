"""Soak test: simulated trading at a high rate for a long time, watching RSS and scrape latency.

    python benchmarks/soak.py                      # 10 minutes, the release check
    python benchmarks/soak.py --duration 60 --json soak.json

A trading thread runs the demo's simulation (every catalog metric, ~12 metric
operations per tick) as fast as ``--rate`` allows while a scraper hits
``/metrics`` every ``--scrape-interval`` seconds over real HTTP. Each report window
prints ticks/s, RSS and scrape latency (p50/p99/max). Memory is "flat" when RSS after
warm-up grows less than ``--max-rss-growth-mb``; latency is "stable" when the last
window's p99 is within ``--max-latency-ratio`` of the first one's (plus 5 ms of slack
for timer noise). Exit status 1 when either check fails. Not part of the test
suite; ``tests/test_soak.py`` runs a few seconds of the same loop.
"""

from __future__ import annotations

import argparse
import gc
import json
import os
import statistics
import sys
import threading
import time
import urllib.request
from dataclasses import asdict, dataclass, field

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), ".."))

from tinywindow_otel import MetricsServer  # noqa: E402
from tinywindow_otel.cli.demo import TradingSimulation  # noqa: E402


def rss_mb() -> float:
    """Resident set size of this process, from /proc (Linux), in MiB."""
    with open("/proc/self/status", encoding="ascii") as status:
        for line in status:
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) / 1024
    raise RuntimeError("no VmRSS in /proc/self/status")


@dataclass
class Window:
    t: float
    ticks: int
    ticks_per_s: float
    rss_mb: float
    scrapes: int
    p50_ms: float
    p99_ms: float
    max_ms: float
    body_kb: float


@dataclass
class Result:
    duration_s: float
    ticks: int
    windows: list[Window] = field(default_factory=list)
    rss_growth_mb: float = 0.0
    latency_ratio: float = 0.0
    errors: list[str] = field(default_factory=list)

    def ok(self, max_rss_growth_mb: float, max_latency_ratio: float) -> bool:
        first, last = self.windows[0], self.windows[-1]
        return (not self.errors and self.rss_growth_mb <= max_rss_growth_mb
                and last.p99_ms <= first.p99_ms * max_latency_ratio + 5.0)


def _percentile(values: list[float], q: float) -> float:
    if not values:
        return 0.0
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(q * len(ordered)))]


def soak(duration: float, rate: float = 0.0, scrape_interval: float = 0.5, windows: int = 10,
         seed: int = 7, report=print) -> Result:
    """Run the soak for ``duration`` seconds; ``rate`` ticks/s (0 = as fast as possible)."""
    simulation = TradingSimulation(seed)
    simulation.initialise_series()
    stop = threading.Event()
    ticks = 0
    errors: list[str] = []

    def trade() -> None:
        nonlocal ticks
        interval = 1.0 / rate if rate > 0 else 0.0
        next_at = time.monotonic()
        try:
            while not stop.is_set():
                simulation.tick()
                ticks += 1
                if interval:
                    next_at += interval
                    delay = next_at - time.monotonic()
                    if delay > 0:
                        stop.wait(delay)
        except Exception as exc:  # noqa: BLE001 - reported, and fails the run
            errors.append(f"trading loop: {exc!r}")

    result = Result(duration_s=duration, ticks=0)
    with MetricsServer(host="127.0.0.1", port=0) as server:
        trader = threading.Thread(target=trade, name="soak-trader", daemon=True)
        gc.collect()
        started = time.monotonic()
        trader.start()
        window_length = duration / windows
        latencies: list[float] = []
        body_bytes = 0
        window_start, window_ticks = started, 0
        report(f"{'t(s)':>6} {'ticks/s':>9} {'RSS MiB':>8} {'scrapes':>7} {'p50 ms':>7} {'p99 ms':>7} "
               f"{'max ms':>7} {'body KiB':>8}")
        next_scrape = started
        while True:
            now = time.monotonic()
            if now >= next_scrape:
                t0 = time.perf_counter()
                try:
                    with urllib.request.urlopen(server.url, timeout=10) as response:
                        body = response.read()
                    latencies.append((time.perf_counter() - t0) * 1000)
                    body_bytes = len(body)
                except OSError as exc:
                    errors.append(f"scrape: {exc!r}")
                next_scrape += scrape_interval
            now = time.monotonic()
            if now - window_start >= window_length or now - started >= duration:
                done = ticks
                window = Window(
                    t=round(now - started, 1), ticks=done,
                    ticks_per_s=round((done - window_ticks) / (now - window_start), 1),
                    rss_mb=round(rss_mb(), 1), scrapes=len(latencies),
                    p50_ms=round(statistics.median(latencies), 2) if latencies else 0.0,
                    p99_ms=round(_percentile(latencies, 0.99), 2), max_ms=round(max(latencies, default=0.0), 2),
                    body_kb=round(body_bytes / 1024, 1),
                )
                result.windows.append(window)
                report(f"{window.t:6.1f} {window.ticks_per_s:9.1f} {window.rss_mb:8.1f} {window.scrapes:7d} "
                       f"{window.p50_ms:7.2f} {window.p99_ms:7.2f} {window.max_ms:7.2f} {window.body_kb:8.1f}")
                latencies = []
                window_start, window_ticks = now, done
                if now - started >= duration:
                    break
            stop.wait(max(0.0, min(next_scrape, window_start + window_length) - time.monotonic()))
        stop.set()
        trader.join(timeout=10)
    result.ticks = ticks
    result.errors = errors
    # The first window is warm-up (allocator arenas, caches, first series): compare after it.
    baseline = result.windows[1] if len(result.windows) > 2 else result.windows[0]
    result.rss_growth_mb = round(result.windows[-1].rss_mb - baseline.rss_mb, 1)
    first_p99 = result.windows[0].p99_ms or 1e-9
    result.latency_ratio = round(result.windows[-1].p99_ms / first_p99, 2)
    return result


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--duration", type=float, default=600.0, help="seconds (default 600)")
    parser.add_argument("--rate", type=float, default=0.0, help="ticks per second; 0 = as fast as possible")
    parser.add_argument("--scrape-interval", type=float, default=0.5, help="seconds between scrapes (default 0.5)")
    parser.add_argument("--windows", type=int, default=10, help="report windows (default 10)")
    parser.add_argument("--max-rss-growth-mb", type=float, default=10.0)
    parser.add_argument("--max-latency-ratio", type=float, default=2.0)
    parser.add_argument("--json", help="also write the result to this file")
    args = parser.parse_args(argv)

    result = soak(args.duration, args.rate, args.scrape_interval, args.windows)
    ok = result.ok(args.max_rss_growth_mb, args.max_latency_ratio)
    print(f"ticks: {result.ticks} ({result.ticks / args.duration:.0f}/s); RSS growth after warm-up: "
          f"{result.rss_growth_mb} MiB; last/first p99 scrape latency: {result.latency_ratio}x; "
          f"errors: {len(result.errors)} -> {'OK' if ok else 'FAIL'}")
    for error in result.errors[:5]:
        print("  " + error)
    if args.json:
        with open(args.json, "w", encoding="utf-8") as out:
            json.dump({**asdict(result), "ok": ok}, out, indent=2)
    return 0 if ok else 1


if __name__ == "__main__":
    raise SystemExit(main())
