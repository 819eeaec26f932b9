"""Overhead of a decorated no-op call vs a bare one, measured in the same run.

    PYTHONPATH=. python benchmarks/instrument_overhead.py
"""

from __future__ import annotations

import asyncio
import timeit

from tinywindow_otel import api_errors_total, api_latency_seconds
from tinywindow_otel.instrument import agent_decision, api_call, trade

N = 200_000
REPEAT = 5


def noop():
    return None


def decision():
    return ("buy", 0.8)


def best_ns(stmt) -> float:
    return min(timeit.repeat(stmt, number=N, repeat=REPEAT)) / N * 1e9


def main() -> None:
    cases = {
        "Histogram.time()": api_latency_seconds.labels(service="bench").time()(noop),
        "Counter.count_exceptions()": api_errors_total.labels(service="bench", type="x").count_exceptions()(noop),
        "api_call()": api_call("bench")(noop),
        "trade()": trade("BENCH/USDT")(noop),
        "agent_decision()": agent_decision("bench")(decision),
    }
    bare = best_ns(noop)
    print(f"{'bare no-op call':30s} {bare:8.0f} ns")
    for name, fn in cases.items():
        ns = best_ns(fn)
        print(f"{name:30s} {ns:8.0f} ns  (+{ns - bare:.0f} ns, x{ns / bare:.1f})")

    async def anoop():
        return None

    timed = api_call("bench")(anoop)

    async def loop(fn, n):
        for _ in range(n):
            await fn()

    def run(fn):
        return min(timeit.repeat(lambda: asyncio.run(loop(fn, N // 10)), number=1, repeat=REPEAT)) / (N // 10) * 1e9

    bare_async, wrapped_async = run(anoop), run(timed)
    print(f"{'bare await (async def)':30s} {bare_async:8.0f} ns")
    print(f"{'api_call() async def':30s} {wrapped_async:8.0f} ns  (+{wrapped_async - bare_async:.0f} ns, "
          f"x{wrapped_async / bare_async:.1f})")


if __name__ == "__main__":
    main()
