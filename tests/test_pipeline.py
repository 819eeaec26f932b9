"""What /metrics shows (SPEC section 2), scraped over HTTP and parsed by prometheus_client."""

from __future__ import annotations

from helpers import fetch, parse_all, sample_value
from tinywindow_otel import catalog
from tinywindow_otel.catalog import CATALOG, Kind
from tinywindow_otel.metrics import REGISTRY

RUNTIME_FAMILIES = {
    "process_cpu_seconds_total", "process_resident_memory_bytes", "process_virtual_memory_bytes",
    "process_open_fds", "process_max_fds", "process_start_time_seconds", "python_gc_objects_collected_total",
    "python_gc_objects_uncollectable_total", "python_gc_collections_total", "python_info",
}


def record_one_of_each() -> None:
    for spec in CATALOG:
        metric = REGISTRY.get(spec.name)
        values = [(spec.allowed_values(name) or (f"{name}-value",))[0] for name in spec.labels]
        series = metric.labels(*values) if spec.labels else metric
        if spec.kind is Kind.COUNTER:
            series.inc()
        elif spec.kind is Kind.GAUGE:
            series.set(1.5)
        else:
            series.observe(spec.buckets[0])


def test_every_catalog_metric_is_exposed_with_its_type_and_labels(scrape_metrics):
    record_one_of_each()
    families = scrape_metrics()
    for spec in CATALOG:
        family = families.get(spec.exposed_name)
        assert family is not None, f"{spec.exposed_name} missing from /metrics"
        assert family.type == spec.prometheus_type, spec.name
        for sample in family.samples:
            label_names = set(sample.labels) - {"le"}
            assert label_names == set(spec.labels), (spec.name, sample)
    extra = set(families) - {spec.exposed_name for spec in catalog.ALL_METRICS}
    assert all(name.startswith(catalog.SELF_PREFIX) for name in extra), extra


def test_no_scope_labels_target_info_or_unit_suffixes(server):
    record_one_of_each()
    text = fetch(server.url)
    assert "otel_scope" not in text
    assert "target_info" not in text
    assert "_percent" not in text and "_USD" not in text
    for line in text.splitlines():
        if line.startswith("# TYPE"):
            name = line.split()[2]
            known = name in catalog.BY_EXPOSED_NAME or name in RUNTIME_FAMILIES or name == catalog.BUILD_INFO.name
            assert known, f"unexpected family {name}"


def test_histogram_buckets_are_the_catalog_boundaries(scrape_metrics):
    record_one_of_each()
    families = scrape_metrics()
    for spec in CATALOG:
        if spec.kind is not Kind.HISTOGRAM:
            continue
        les = [s.labels["le"] for s in families[spec.exposed_name].samples if s.name.endswith("_bucket")]
        assert [float(le) for le in les] == [*spec.buckets, float("inf")], spec.name


def test_negative_pnl_is_kept_sum_is_net_and_count_is_trades(scrape_metrics):
    from tinywindow_otel import trade_pnl_usd

    pnls = [-1200.0, -35.5, 0.0, 80.0, 2500.0, -7.25]
    for pnl in pnls:
        trade_pnl_usd.observe(pnl)
    families = scrape_metrics()
    assert sample_value(families, "tinywindow_trade_pnl_usd_sum") == sum(pnls)
    assert sample_value(families, "tinywindow_trade_pnl_usd_count") == len(pnls)
    for le, expected in (("-1000.0", 1), ("-10.0", 2), ("0.0", 4), ("100.0", 5), ("2500.0", 6), ("+Inf", 6)):
        assert sample_value(families, "tinywindow_trade_pnl_usd_bucket", le=le) == expected, le


def test_a_fresh_scrape_shows_every_family_unlabelled_counters_at_zero_and_no_invented_gauge(server):
    text = fetch(server.url)
    families = parse_all(text)  # every family, samples or not
    for spec in catalog.ALL_METRICS:
        samples = families[spec.exposed_name].samples
        assert families[spec.exposed_name].type == spec.prometheus_type, spec.name
        if spec.initial:  # the self-metrics: one series with empty labels, at 0
            assert [(s.labels, s.value) for s in samples] == [({n: "" for n in spec.labels}, 0)], spec.name
        elif spec.labels or spec.kind is Kind.GAUGE:
            assert samples == [], spec.name  # no label set known yet; a gauge has no value yet
        else:
            assert samples and all(s.value == 0 for s in samples), spec.name
    assert RUNTIME_FAMILIES <= set(families)


def test_initialise_creates_known_label_sets_at_zero(scrape_metrics):
    REGISTRY.by_attr("trades_total").initialise({"status": "filled", "symbol": "BTC/USDT"}, ("rejected", "ETH/USDT"))
    families = scrape_metrics()
    assert sample_value(families, "tinywindow_trades_total", status="filled", symbol="BTC/USDT") == 0
    assert sample_value(families, "tinywindow_trades_total", status="rejected", symbol="ETH/USDT") == 0


def test_runtime_metrics_can_be_switched_off(monkeypatch):
    import tinywindow_otel
    from tinywindow_otel.testing import reset

    monkeypatch.setenv("TINYWINDOW_OTEL_RUNTIME_METRICS", "false")
    reset()
    try:
        with tinywindow_otel.MetricsServer(port=0) as server:
            text = fetch(server.url)
        assert "process_" not in text and "python_gc" not in text
        assert "# TYPE tinywindow_trades_total counter" in text
    finally:
        monkeypatch.delenv("TINYWINDOW_OTEL_RUNTIME_METRICS")
        reset()


def test_removed_series_disappear(scrape_metrics):
    from tinywindow_otel import active_positions

    active_positions.labels(symbol="BTC/USDT").set(1)
    active_positions.labels(symbol="ETH/USDT").set(2)
    assert sample_value(scrape_metrics(), "tinywindow_active_positions", symbol="ETH/USDT") == 2
    active_positions.remove("ETH/USDT")
    families = scrape_metrics()
    assert sample_value(families, "tinywindow_active_positions", symbol="ETH/USDT") is None
    assert sample_value(families, "tinywindow_active_positions", symbol="BTC/USDT") == 1


def test_otel_does_not_fold_series_the_facade_allows(scrape_metrics):
    """The SDK's own limit (2000 per stream) must not fold series into otel_metric_overflow."""
    metric = REGISTRY.get("tinywindow_api_requests_total")
    default = metric.max_series
    metric.max_series = 3000
    try:
        for i in range(2500):
            metric.labels(service=f"svc-{i}").inc()
        family = scrape_metrics()["tinywindow_api_requests_total"]
    finally:
        metric.max_series = default
    assert len(family.samples) == 2500
    assert all("otel_metric_overflow" not in sample.labels for sample in family.samples)
