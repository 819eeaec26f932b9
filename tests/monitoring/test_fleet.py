"""A fleet through the repository's prometheus/prometheus.yml and collector/otelcol.yaml, on Prometheus 3.

Three bots push OTLP through the collector (remote write), one is scraped;
each keeps its own identity (instance), nothing is stored twice, alerts fire
per instance. Then the two outages the collector's settings are there for,
each measured (the numbers are printed; docs/deployment.md quotes them):

* the remote-write target refuses (HTTP 503, as a Prometheus that is down or
  restarting behind a proxy): the collector queues and retries, CollectorExportFailing
  fires, and once the target is back the backlog arrives - no sample is lost;
* the collector is SIGKILLed and started again: what it held in memory and the
  pushes of the outage are lost as samples, but no count: the cumulative totals
  recorded meanwhile arrive with the first push after the restart.
"""

from __future__ import annotations

import re
import threading
import time
import urllib.error
import urllib.request
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import yaml

from helpers import free_port, wait_until
from monitoring.assets import ROOT, RULES
from monitoring.deploy import Collector, Processes, Prometheus, Workload, otlp_env, repo_prometheus_config
from tinywindow_otel.cli.stack import shorten_for

PUSHERS = ("bot-1", "bot-2", "bot-3")
OUTAGE_SECONDS = 5.0
PUSH_MS = 1000
COLLECTOR = yaml.safe_load((ROOT / "collector" / "otelcol.yaml").read_text())
BATCH_TIMEOUT = float(COLLECTOR["processors"]["batch"]["timeout"].rstrip("s"))
# CollectorExportFailing's windows (2m, 5m) scaled down for a test of seconds, like its `for:`:
# the expression and the collector's metrics it reads are the real ones.
EXPORT_ALERT_WINDOW = "10s"


class WriteGate:
    """A loopback proxy in front of Prometheus' remote-write receiver that can refuse writes (503)."""

    def __init__(self, backend: str) -> None:
        self.backend, self.open, self.refused = backend, True, 0
        gate = self

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self) -> None:  # noqa: N802
                body = self.rfile.read(int(self.headers.get("Content-Length", 0)))
                status, answer = gate._forward(self.path, body, dict(self.headers))
                self.send_response(status)
                self.send_header("Content-Length", str(len(answer)))
                self.end_headers()
                self.wfile.write(answer)

            def log_message(self, format: str, *args) -> None:  # noqa: A002
                pass

        self._httpd = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self._httpd.server_address[1]}/api/v1/write"
        self._thread = threading.Thread(target=self._httpd.serve_forever, kwargs={"poll_interval": 0.1}, daemon=True)
        self._thread.start()

    def _forward(self, path: str, body: bytes, headers: dict[str, str]) -> tuple[int, bytes]:
        if not self.open:
            self.refused += 1
            return 503, b"receiver unavailable\n"
        keep = {k: v for k, v in headers.items() if k.lower() in ("content-type", "content-encoding")
                or k.lower().startswith("x-prometheus-remote-write")}
        request = urllib.request.Request(self.backend + path, data=body, headers=keep, method="POST")
        try:
            with urllib.request.urlopen(request, timeout=10) as response:
                return response.status, response.read()
        except urllib.error.HTTPError as exc:
            return exc.code, exc.read()
        except OSError as exc:
            return 502, str(exc).encode()

    def close(self) -> None:
        self._httpd.shutdown()
        self._httpd.server_close()
        self._thread.join(5)


def fleet_rules() -> str:
    """The rules with `for:` at 1s and CollectorExportFailing's windows at EXPORT_ALERT_WINDOW."""
    rules = yaml.safe_load(shorten_for(RULES.read_text(), "1s"))
    [rule] = [r for g in rules["groups"] for r in g["rules"] if r.get("alert") == "CollectorExportFailing"]
    assert re.findall(r"\[(\w+)\]", rule["expr"]) == ["5m", "2m", "2m"], rule["expr"]
    rule["expr"] = re.sub(r"\[\w+\]", f"[{EXPORT_ALERT_WINDOW}]", rule["expr"])
    return yaml.safe_dump(rules, sort_keys=False)


def by_instance(prometheus: Prometheus, expr: str) -> dict[str, float]:
    return {r["metric"].get("instance", ""): float(r["value"][1]) for r in prometheus.query(expr)}


def sample_times(prometheus: Prometheus, selector: str, window: str = "3m") -> list[float]:
    result = prometheus.query(f"{selector}[{window}]")
    assert len(result) == 1, result
    return [float(t) for t, _ in result[0]["values"]]


def largest_gap(prometheus: Prometheus, instance: str, since: float) -> float:
    """The longest time between two stored samples of a pushed gauge, from ``since`` on."""
    times = [t for t in sample_times(prometheus, f'tinywindow_portfolio_value_usd{{instance="{instance}"}}')
             if t >= since]
    assert len(times) >= 2, (instance, times)
    return max(b - a for a, b in zip(times, times[1:]))


def record_round(bots) -> None:
    for bot in bots:
        bot.record(wait=False)
    for bot in bots:
        bot.recorded()


def test_fleet_identity_single_ingestion_alerts_and_outages(tmp_path, prometheus3, otelcol):
    with Processes(tmp_path) as procs:
        prometheus_port = free_port()
        gate = WriteGate(f"http://127.0.0.1:{prometheus_port}")
        try:
            run_fleet(procs, prometheus3, otelcol, prometheus_port, gate)
        finally:
            gate.close()


def run_fleet(procs: Processes, prometheus3, otelcol: str, prometheus_port: int, gate: WriteGate) -> None:
    collector = Collector(procs, otelcol, gate.url)
    bots = {name: Workload(procs, name, otlp_env(collector.otlp_http + "/v1/metrics", interval_ms=PUSH_MS,
                                                 **{"service.instance.id": name, "deployment.environment": "test"}))
            for name in PUSHERS}
    scraped = Workload(procs, "bot-scraped", otlp_env("http://127.0.0.1:1/unused", exporters="prometheus"))
    scraped_instance = f"127.0.0.1:{scraped.port}"
    # prometheus/prometheus.yml as it is, on loopback: the app target is the scraped bot, the
    # collector (found by DNS in compose) runs, Alertmanager does not (alerts are read from ALERTS).
    config = repo_prometheus_config({"app:8000": scraped_instance, "collector:8888": collector.telemetry_target,
                                     "localhost:9090": f"127.0.0.1:{prometheus_port}", "alertmanager:9093": None})
    prometheus = Prometheus(procs, prometheus3.prometheus, "prometheus", config, "--web.enable-remote-write-receiver",
                            port=prometheus_port, files={"alerts/" + RULES.name: fleet_rules()})

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
    record_round([*bots.values(), scraped])
    firing = wait_until(
        lambda: (f := {a["metric"]["instance"] for a in prometheus.query(
            'ALERTS{alertname="KillSwitchActivated", alertstate="firing"}')}) >= fleet and f,
        timeout=30, interval=0.25, what="KillSwitchActivated firing for each instance")
    assert firing == fleet
    assert not prometheus.query('ALERTS{alertname="CollectorExportFailing"}'), "healthy exports do not alert"

    # --- The remote-write target refuses: queued and retried, alerted, nothing lost. ---
    def pushed_totals() -> dict[str, float]:
        return by_instance(prometheus, 'sum by (instance) (tinywindow_trades_total{instance=~"bot-.*"})')

    wait_until(lambda: (t := pushed_totals()) and all(t.get(n) == 2 * one_bot for n in PUSHERS),
               timeout=30, interval=0.25, what="the second round stored for every pusher")
    refused_from = time.time()
    gate.open = False
    record_round(bots.values())  # counted while nothing can be written
    [alert] = wait_until(
        lambda: prometheus.query('ALERTS{alertname="CollectorExportFailing", alertstate="firing"}'),
        timeout=60, interval=0.25, what="CollectorExportFailing while remote write is refused")
    alerted_after = time.time() - refused_from
    assert alert["metric"]["exporter"] == "prometheus_remote_write" and alert["metric"]["job"] == "otel-collector"
    queued = float(prometheus.query('otelcol_exporter_queue_size{exporter="prometheus_remote_write"}')[0]["value"][1])
    assert gate.refused >= 2 and queued >= 1, (gate.refused, queued)
    assert pushed_totals() == {n: 2 * one_bot for n in PUSHERS}, "nothing written while refused"
    gate.open = True
    reopened = time.time()
    wait_until(lambda: all(v == 3 * one_bot for v in pushed_totals().values()) and len(pushed_totals()) == 3,
               timeout=60, interval=0.25, what="the queued pushes delivered once remote write is back")
    backlog_after = time.time() - reopened
    # Every push of the refusal is stored (retried from the queue): the gaps stay those of
    # healthy operation (push interval + batch timeout), none spans the refusal.
    wait_until(lambda: all(sample_times(prometheus, f'tinywindow_portfolio_value_usd{{instance="{n}"}}')[-1] > reopened
                           for n in PUSHERS), timeout=30, interval=0.25, what="samples after the refusal")
    refusal_gaps = {name: largest_gap(prometheus, name, refused_from - 5) for name in PUSHERS}
    assert all(gap <= PUSH_MS / 1000 + BATCH_TIMEOUT + 1.5 for gap in refusal_gaps.values()), refusal_gaps
    refused_for = reopened - refused_from

    # --- The collector is killed; each pusher records one more round while it is down. ---
    before = {name: max(sample_times(prometheus, f'tinywindow_portfolio_value_usd{{instance="{name}"}}'))
              for name in PUSHERS}
    collector.kill()
    killed = time.time()
    record_round(bots.values())
    wait_until(lambda: time.time() - killed >= OUTAGE_SECONDS, timeout=OUTAGE_SECONDS + 5, interval=0.1,
               what="the outage")
    collector.start()
    restarted = time.time()

    # Counts are not lost: the totals recorded during the outage arrive after the restart.
    after = wait_until(lambda: (t := pushed_totals()) and all(t.get(name) == 4 * one_bot for name in PUSHERS) and t,
                       timeout=30, interval=0.25, what="the outage's trades counted after the collector restart")
    assert after == {name: 4 * one_bot for name in PUSHERS}
    for bot in bots.values():
        assert bot.process.poll() is None, "a collector outage must not stop the app"
    wait_until(lambda: all(sample_times(prometheus, f'tinywindow_portfolio_value_usd{{instance="{n}"}}')[-1] > restarted
                           for n in PUSHERS), timeout=30, interval=0.25, what="samples after the restart")

    # Samples are what is lost: the pushes of the outage, and what the collector held in
    # memory when killed (the batch of the last BATCH_TIMEOUT; the queue is empty when
    # remote write is healthy). So a gap of at least the outage, and at most the outage
    # plus a batch timeout and a push interval on each side.
    down = restarted - killed
    gaps = {name: largest_gap(prometheus, name, before[name] - 5) for name in PUSHERS}
    ceiling = down + 2 * (BATCH_TIMEOUT + PUSH_MS / 1000) + 1.5
    assert all(OUTAGE_SECONDS - 1 <= gap <= ceiling for gap in gaps.values()), (gaps, ceiling)
    # The scraped bot does not depend on the collector: no gap there.
    scraped_times = sample_times(prometheus, f'tinywindow_portfolio_value_usd{{instance="{scraped_instance}"}}')
    assert max(b - a for a, b in zip(scraped_times, scraped_times[1:])) < OUTAGE_SECONDS
    print(f"\nremote write refused {refused_for:.1f}s: CollectorExportFailing firing after {alerted_after:.1f}s "
          f"(windows {EXPORT_ALERT_WINDOW}, for 1s), {gate.refused} writes refused, backlog stored "
          f"{backlog_after:.1f}s after recovery, largest push-path gap "
          + ", ".join(f"{n} {g:.1f}s" for n, g in refusal_gaps.items()) + " (no sample lost)")
    print(f"collector down {down:.1f}s (SIGKILL, restart): push-path sample gaps "
          + ", ".join(f"{n} {g:.1f}s" for n, g in gaps.items()) + f" (ceiling {ceiling:.1f}s); no counts lost")
