"""A fleet through the repository's prometheus/prometheus.yml and collector/otelcol.yaml, on Prometheus 3.

Three bots push OTLP through the collector (remote write), one is scraped;
each keeps its own identity (instance), nothing is stored twice, alerts fire
per instance, and killing the collector (SIGKILL) and starting it again loses
samples of the outage only: the cumulative totals recorded meanwhile arrive
with the first push after the restart. The measured gap is printed.
"""

from __future__ import annotations

import time

from helpers import free_port, wait_until
from monitoring.assets import RULES
from monitoring.deploy import Collector, Processes, Prometheus, Workload, otlp_env, repo_prometheus_config
from tinywindow_otel.cli.stack import shorten_for

PUSHERS = ("bot-1", "bot-2", "bot-3")
OUTAGE_SECONDS = 5.0
PUSH_MS = 1000


def by_instance(prometheus: Prometheus, expr: str) -> dict[str, float]:
    return {r["metric"].get("instance", ""): float(r["value"][1]) for r in prometheus.query(expr)}


def sample_times(prometheus: Prometheus, selector: str, window: str = "2m") -> list[float]:
    result = prometheus.query(f"{selector}[{window}]")
    assert len(result) == 1, result
    return [float(t) for t, _ in result[0]["values"]]


def test_fleet_identity_single_ingestion_alerts_and_collector_restart(tmp_path, prometheus3, otelcol):
    with Processes(tmp_path) as procs:
        prometheus_port = free_port()
        collector = Collector(procs, otelcol, f"http://127.0.0.1:{prometheus_port}/api/v1/write")
        bots = {name: Workload(procs, name, otlp_env(collector.otlp_http + "/v1/metrics", interval_ms=PUSH_MS,
                                                     **{"service.instance.id": name, "deployment.environment": "test"}))
                for name in PUSHERS}
        scraped = Workload(procs, "bot-scraped", otlp_env("http://127.0.0.1:1/unused", exporters="prometheus"))
        scraped_instance = f"127.0.0.1:{scraped.port}"
        prometheus = Prometheus(
            procs, prometheus3.prometheus, "prometheus",
            # prometheus/prometheus.yml on loopback: the collector (found by DNS in compose) runs,
            # Alertmanager does not (alerts are read from ALERTS).
            repo_prometheus_config({"app:8000": scraped_instance, "collector:8888": collector.telemetry_target,
                                    "localhost:9090": f"127.0.0.1:{prometheus_port}", "alertmanager:9093": None}),
            "--web.enable-remote-write-receiver", port=prometheus_port,
            files={"alerts/" + RULES.name: shorten_for(RULES.read_text(), "1s")})

        fleet = {*PUSHERS, scraped_instance}
        trades = wait_until(lambda: (t := by_instance(prometheus, "sum by (instance) (tinywindow_trades_total)"))
                            and set(t) == fleet and t,
                            timeout=30, interval=0.25, what="all four bots in Prometheus, each as its own instance")
        assert len(set(trades.values())) == 1, f"same workload, same totals per instance: {trades}"
        one_bot = trades["bot-1"]

        # Nothing stored twice: one series per label set, the same series count on every instance.
        assert prometheus.query("count by (job, instance, symbol, status) (tinywindow_trades_total) > 1") == []
        counts = by_instance(prometheus, 'count by (instance) ({__name__=~"tinywindow_trade.*|tinywindow_api.*"})')
        assert set(counts) == fleet and len(set(counts.values())) == 1, counts
        # Selectable and aggregatable by instance.
        assert float(prometheus.query("sum(tinywindow_trades_total)")[0]["value"][1]) == 4 * one_bot
        assert float(prometheus.query('sum(tinywindow_trades_total{instance=~"bot-.*"})')[0]["value"][1]) == 3 * one_bot
        assert by_instance(prometheus, 'up{job="tinywindow"}') == {scraped_instance: 1.0}
        wait_until(lambda: prometheus.query('up{job="otel-collector"} == 1'), timeout=15, interval=0.25,
                   what="the collector's own metrics scraped")

        # Alerts per instance: every bot activates its kill switch once more (an increase
        # on every path; a series first seen at 1 is only caught on the scrape path).
        for bot in [*bots.values(), scraped]:
            bot.record(wait=False)
        for bot in [*bots.values(), scraped]:
            bot.recorded()
        firing = wait_until(
            lambda: (f := {a["metric"]["instance"] for a in prometheus.query(
                'ALERTS{alertname="KillSwitchActivated", alertstate="firing"}')}) >= fleet and f,
            timeout=30, interval=0.25, what="KillSwitchActivated firing for each instance")
        assert firing == fleet

        # Collector killed; each pusher records one more round while it is down.
        before = {name: max(sample_times(prometheus, f'tinywindow_portfolio_value_usd{{instance="{name}"}}'))
                  for name in PUSHERS}
        collector.kill()
        killed = time.time()
        for bot in bots.values():
            bot.record(wait=False)
        for bot in bots.values():
            bot.recorded()
        wait_until(lambda: time.time() - killed >= OUTAGE_SECONDS, timeout=OUTAGE_SECONDS + 5, interval=0.1,
                   what="the outage")
        collector.start()
        restarted = time.time()

        # Counts are not lost: the totals recorded during the outage arrive after the restart.
        after = wait_until(
            lambda: (t := by_instance(prometheus, 'sum by (instance) (tinywindow_trades_total{instance=~"bot-.*"})'))
            and all(t.get(name) == 3 * one_bot for name in PUSHERS) and t,
            timeout=30, interval=0.25, what="the outage's trades counted after the collector restart")
        assert after == {name: 3 * one_bot for name in PUSHERS}
        for bot in bots.values():
            assert bot.process.poll() is None, "a collector outage must not stop the app"

        # Samples of the outage are what is lost: measure the gap per pusher.
        gaps = {}
        for name in PUSHERS:
            times = sample_times(prometheus, f'tinywindow_portfolio_value_usd{{instance="{name}"}}')
            around = [t for t in times if t >= before[name] - 5]
            gaps[name] = max(b - a for a, b in zip(around, around[1:]))
        # The collector was down OUTAGE_SECONDS, plus its batch timeout (2s) and the
        # time to start again; samples pushed while it was down are gone.
        assert all(OUTAGE_SECONDS - 1 <= gap <= restarted - killed + 10 for gap in gaps.values()), gaps
        # The scraped bot does not depend on the collector: no gap there.
        scraped_times = sample_times(prometheus, f'tinywindow_portfolio_value_usd{{instance="{scraped_instance}"}}')
        assert max(b - a for a, b in zip(scraped_times, scraped_times[1:])) < OUTAGE_SECONDS
        print(f"collector down {restarted - killed:.1f}s (SIGKILL, restart): push-path sample gaps "
              + ", ".join(f"{n} {g:.1f}s" for n, g in gaps.items()) + "; no counts lost")
