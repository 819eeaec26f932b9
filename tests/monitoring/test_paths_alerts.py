"""Every core alert fires on the push paths too: collector exporter, collector remote write, native OTLP.

The live stack test proves the scrape path; here the same scenario driver
pushes OTLP, and Prometheus 3 evaluates the repository's rules (non-zero
``for:`` shortened to 2s) on what each path stored.
"""

from __future__ import annotations

from pathlib import Path

from helpers import wait_until
from monitoring.assets import RULES, CORE_ALERTS
from monitoring.deploy import Collector, Processes, Prometheus, Workload, otlp_env, prometheus_config
from tinywindow_otel.cli.stack import shorten_for

DRIVER = Path(__file__).with_name("scenario_driver.py")
RESOURCE = {"service.instance.id": "bot-1", "deployment.environment": "test"}


def firing(prometheus: Prometheus) -> set[str]:
    return {a["metric"]["alertname"] for a in prometheus.query('ALERTS{alertstate="firing"}')}


# Pushed instances have no `up` (nothing scrapes them); their liveness series is
# target_info. Rules that find "a brand-new series already > 0" through `up` alone
# miss pushed instances (docs/deployment.md). process_start_time_seconds is pushed
# with the runtime metrics, under the instance's job and instance, so the rules'
# restart branch covers pushed instances too.
def test_every_core_alert_fires_on_every_push_path(tmp_path, prometheus3, otelcol):
    rules = {"alerts/" + RULES.name: shorten_for(RULES.read_text(), "2s")}
    with Processes(tmp_path) as procs:
        def server(name, *flags, scrape=None, otlp=False):
            config = prometheus_config(scrape=scrape, otlp=otlp)
            config["rule_files"] = ["alerts/*.rules.yml"]
            return Prometheus(procs, prometheus3.prometheus, name, config, *flags, files=rules)

        remote = server("remote-write", "--web.enable-remote-write-receiver")
        native = server("native-otlp", "--web.enable-otlp-receiver", otlp=True)
        collector = Collector(procs, otelcol, remote.url + "/api/v1/write")
        exporter = server("collector-exporter", scrape=[{
            "job_name": "otel-collector-exporter", "honor_labels": True,
            "static_configs": [{"targets": [collector.prometheus_target]}]}])
        drivers = [
            Workload(procs, "driver-collector", otlp_env(collector.otlp_http + "/v1/metrics", **RESOURCE), DRIVER),
            Workload(procs, "driver-native", otlp_env(native.url + "/api/v1/otlp/v1/metrics", **RESOURCE), DRIVER),
        ]
        paths = {"collector exporter": exporter, "remote write": remote, "native OTLP": native}
        # Calm first: several pushes, nothing firing.
        wait_until(lambda: all(p.query('count_over_time(tinywindow_portfolio_value_usd[1m]) >= 4')
                               for p in paths.values()), timeout=30, interval=0.25, what="four pushes on every path")
        calm = {name: firing(p) & set(CORE_ALERTS) for name, p in paths.items()}
        assert calm == {name: set() for name in paths}, calm
        # Pushed data has no up{job="tinywindow"}: its target_info proves the app is there.
        absent = {name: "MetricsEndpointAbsent" in firing(p) for name, p in paths.items()}
        assert absent == {name: False for name in paths}, absent
        # The restart branch joins process_start_time_seconds on (job, instance): pushed too.
        starts = {name: {(r["metric"]["job"], r["metric"]["instance"])
                         for r in p.query('time() - process_start_time_seconds{job="tinywindow"} < 120')}
                  for name, p in paths.items()}
        assert starts == {name: {("tinywindow", "bot-1")} for name in paths}, starts

        for driver in drivers:
            driver.send("breach")
        missing: dict[str, set[str]] = {}

        def all_fire():
            for name, prometheus in paths.items():
                missing[name] = set(CORE_ALERTS) - firing(prometheus)
            return not any(missing.values())
        try:
            wait_until(all_fire, timeout=40, interval=0.5, what="every core alert on every push path")
        except AssertionError:
            raise AssertionError(f"core alerts not firing: {missing}") from None
        # Events only a counter tells (the daily_loss breaker tripped and reset at once, the
        # first $25K SOL trade; positions stay below $10K): the new-event branches keep a
        # series of the instance's newest push (they drop only samples older than its target_info).
        events = {name: {(a["metric"]["alertname"], a["metric"].get("reason") or a["metric"].get("symbol"))
                         for a in p.query('ALERTS{alertstate="firing", alertname=~"CircuitBreakerTripped|LargePositionSize"}')}
                  for name, p in paths.items()}
        expected = {("CircuitBreakerTripped", "daily_loss"), ("LargePositionSize", "SOL/USDT")}
        assert all(expected <= found for found in events.values()), events
