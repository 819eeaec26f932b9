"""collector/otelcol.yaml: structure of the OTel collector pipeline (no collector binary is installable here)."""

from __future__ import annotations

import yaml

from monitoring.assets import ROOT

CONFIG = ROOT / "collector" / "otelcol.yaml"


def load() -> dict:
    return yaml.safe_load(CONFIG.read_text())


def test_otlp_in_on_4317_grpc_and_4318_http():
    protocols = load()["receivers"]["otlp"]["protocols"]
    assert protocols["grpc"]["endpoint"].endswith(":4317")
    assert protocols["http"]["endpoint"].endswith(":4318")


def test_metrics_pipeline_limits_memory_first_then_batches_and_exports_both_ways():
    config = load()
    pipeline = config["service"]["pipelines"]["metrics"]
    assert pipeline["receivers"] == ["otlp"]
    assert pipeline["processors"] == ["memory_limiter", "batch"]
    assert set(pipeline["exporters"]) == {"prometheus", "prometheusremotewrite"}
    for kind in ("receivers", "processors", "exporters"):
        for name in pipeline[kind]:
            assert name in config[kind], f"{kind[:-1]} {name} used but not defined"


def test_exporters_keep_documented_names_and_read_the_endpoint_from_env():
    exporters = load()["exporters"]
    for name in ("prometheus", "prometheusremotewrite"):
        # _total on counters, as on the app's own /metrics; resource attributes not turned into labels.
        assert exporters[name]["add_metric_suffixes"] is True
        assert exporters[name]["resource_to_telemetry_conversion"]["enabled"] is False
    assert exporters["prometheusremotewrite"]["endpoint"] == "${env:PROMETHEUS_REMOTE_WRITE_URL}"


def test_health_check_extension_is_enabled():
    config = load()
    assert "health_check" in config["extensions"]
    assert "health_check" in config["service"]["extensions"]
