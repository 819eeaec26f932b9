"""What /metrics shows (SPEC section 2), scraped over HTTP and parsed by prometheus_client."""

from __future__ import annotations

from helpers import fetch, sample_value
from tinywindow_otel import catalog
from tinywindow_otel.catalog import CATALOG, Kind
from tinywindow_otel.metrics import REGISTRY


def record_one_of_each() -> None:
    for spec in CATALOG:
        metric = REGISTRY.get(spec.name)
        series = metric.labels(*[f"{name}-value" for name in spec.labels]) if spec.labels else metric
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
    extra = set(families) - {spec.exposed_name for spec in CATALOG}
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
            assert name in catalog.BY_EXPOSED_NAME, f"unexpected family {name}"


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


def test_a_scrape_with_nothing_recorded_is_empty_and_valid(scrape_metrics):
    assert scrape_metrics() == {}


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
