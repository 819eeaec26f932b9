"""Benchmarks for tinywindow-otel against prometheus_client and the raw OTel SDK (``python -m benchmarks``)."""
