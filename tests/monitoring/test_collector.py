"""collector/: our collector distribution, built from its Go module, running collector/otelcol.yaml unchanged."""

from __future__ import annotations

import re
import subprocess
import urllib.request

import yaml

from helpers import free_port, sample_value, scrape, wait_until
from monitoring.assets import ROOT, alerts_by_name
from monitoring.deploy import Collector, Processes, Workload, otlp_env

CONFIG = ROOT / "collector" / "otelcol.yaml"
GOMOD = ROOT / "collector" / "go.mod"
ENV_DEFAULT = re.compile(r"^\$\{env:([A-Z_]+):-(.+)\}$")


def load() -> dict:
    return yaml.safe_load(CONFIG.read_text())


def run(binary: str, *args: str, env: dict | None = None) -> subprocess.CompletedProcess:
    return subprocess.run([binary, *args], capture_output=True, text=True, timeout=60, env=env)


def test_the_config_validates_in_our_distribution(otelcol):
    result = run(otelcol, "validate", f"--config={CONFIG}")
    assert result.returncode == 0, result.stdout + result.stderr


def test_validate_does_reject_a_broken_config(otelcol, tmp_path):
    # The check above could not pass by accident: an unknown exporter is refused.
    broken = tmp_path / "otelcol.yaml"
    broken.write_text(CONFIG.read_text().replace("exporters: [prometheus, prometheus_remote_write]",
                                                 "exporters: [prometheus, otlp_nowhere]"))
    result = run(otelcol, "validate", f"--config={broken}")
    assert result.returncode != 0
    assert "otlp_nowhere" in result.stdout + result.stderr


def test_distribution_has_exactly_the_configured_components_at_one_release(otelcol):
    components = yaml.safe_load(run(otelcol, "components").stdout)
    config = load()
    for kind in ("receivers", "processors", "exporters", "extensions"):
        assert {c["name"] for c in components[kind]} == set(config[kind]), kind
    versions = {c["module"].split()[1] for kind in ("receivers", "processors", "exporters", "extensions")
                for c in components[kind]}
    core = {v for v in versions if v.startswith("v0.")}
    assert {v.rsplit(".", 1)[0] for v in core} == {"v0.165"}, versions  # core v0.165.0, contrib v0.165.1
    required = {line.split()[-1] for line in GOMOD.read_text().splitlines()
                if "go.opentelemetry.io/collector/otelcol " in line}
    assert required == {"v0.165.0"}


def test_pipeline_limits_memory_first_keeps_resources_and_batches_last():
    pipeline = load()["service"]["pipelines"]["metrics"]
    assert pipeline["receivers"] == ["otlp"]
    assert pipeline["processors"][0] == "memory_limiter" and pipeline["processors"][-1] == "batch"
    assert set(pipeline["exporters"]) == {"prometheus", "prometheus_remote_write"}


def test_addresses_default_to_the_container_ports_and_are_overridable():
    config = load()
    defaults = {
        "grpc": config["receivers"]["otlp"]["protocols"]["grpc"]["endpoint"],
        "http": config["receivers"]["otlp"]["protocols"]["http"]["endpoint"],
        "prometheus": config["exporters"]["prometheus"]["endpoint"],
        "health": config["extensions"]["health_check"]["endpoint"],
    }
    ports = {name: ENV_DEFAULT.match(value).group(2).rsplit(":", 1)[1] for name, value in defaults.items()}
    assert ports == {"grpc": "4317", "http": "4318", "prometheus": "8889", "health": "13133"}
    remote = ENV_DEFAULT.match(config["exporters"]["prometheus_remote_write"]["endpoint"])
    assert remote.groups() == ("PROMETHEUS_REMOTE_WRITE_URL", "http://prometheus:9090/api/v1/write")


def test_names_and_resource_labels_match_prometheus_3_otlp_settings():
    exporters = load()["exporters"]
    receiver = yaml.safe_load((ROOT / "prometheus" / "otlp-receiver.yml").read_text())["otlp"]
    for name in ("prometheus", "prometheus_remote_write"):
        assert exporters[name]["translation_strategy"] == receiver["translation_strategy"]
        excluded = exporters[name]["resource_constant_labels"]["excluded"]
        # Per-process and SDK attributes never become labels (restarts would start new series).
        for attribute in ("service.instance.id", "process.*", "telemetry.*"):
            assert attribute in excluded, (name, attribute)
    assert exporters["prometheus"]["without_scope_info"] is True
    assert exporters["prometheus_remote_write"]["disable_scope_info"] is True


def test_runs_serves_health_and_its_own_metrics(otelcol, tmp_path):
    with Processes(tmp_path) as procs:
        collector = Collector(procs, otelcol, "http://127.0.0.1:1/api/v1/write")
        with urllib.request.urlopen(collector.health_url, timeout=5) as response:
            assert b"Server available" in response.read()

        def own_metrics():
            with urllib.request.urlopen(f"http://{collector.telemetry_target}/metrics", timeout=5) as response:
                return response.read().decode()
        text = wait_until(own_metrics, timeout=15, what="the collector's own metrics")
        assert 'exporter="prometheus_remote_write"' in text
        assert collector.process.poll() is None


def test_a_failing_remote_write_shows_in_its_own_metrics(otelcol, tmp_path):
    """What an export-failure alert can read: the queue fills, nothing counts as sent to remote write
    (send_failed only counts once a batch's retries run out, after retry_on_failure.max_elapsed_time)."""
    with Processes(tmp_path) as procs:
        collector = Collector(procs, otelcol, f"http://127.0.0.1:{free_port()}/api/v1/write")  # nobody listening
        Workload(procs, "app", otlp_env(collector.otlp_http + "/v1/metrics", **{"service.instance.id": "bot-1"}))
        url = f"http://{collector.telemetry_target}/metrics"
        remote = {"exporter": "prometheus_remote_write"}

        def queued():
            families = scrape(url)
            size = sample_value(families, "otelcol_exporter_queue_size", data_type="metrics", **remote)
            return families if size is not None and size >= 2 else None
        families = wait_until(queued, timeout=20, interval=0.25, what="remote-write batches queueing up")
        assert sample_value(families, "otelcol_receiver_accepted_metric_points_total", receiver="otlp",
                            transport="http") > 0
        assert sample_value(families, "otelcol_exporter_sent_metric_points_total", exporter="prometheus") > 0
        assert not sample_value(families, "otelcol_exporter_sent_metric_points_total", **remote)  # sent nothing
        assert collector.process.poll() is None
        # CollectorExportFailing reads exactly these names (the sent counter by a regex that also
        # accepts the name without _total), per exporter.
        expr = alerts_by_name()["CollectorExportFailing"]["expr"]
        assert "min_over_time(otelcol_exporter_queue_size[" in expr
        sent = re.search(r'__name__=~"(otelcol_exporter_sent_metric_points[^"]*)"', expr)
        assert sent and re.fullmatch(sent.group(1), "otelcol_exporter_sent_metric_points_total")
        assert "by (job, instance, exporter)" in expr
