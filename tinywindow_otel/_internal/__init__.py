"""The machinery under the public modules; nothing here is a public API.

Dependencies flow one way, top to bottom (a test checks there are no cycles):

- ``forksafe``: what a forked child gets fresh (locks, series guards) or
  forgets (derived state), for every object of the package that owns one.
- ``selfmetrics``: the drop reporter each registry owns (what the SDK drops,
  folds or rewrites instead of raising), logged rarely.
- ``series``: one labelled series per kind, its guard (a one-token list, not a
  lock) and the number checks.
- ``labels``: label value rules (sanitising, reserved values) and series caps.
- ``wrapper``: the one call wrapper behind ``.time()``, ``.count_exceptions()``
  and the decorators.
- ``producer``: the registry's state as OTel ``MetricsData``, and the one
  cumulative -> delta conversion.
- ``render``: ``MetricsData`` -> Prometheus text format.
- ``runtime``: process and Python runtime metrics (prometheus_client's names).
- ``otel``: the MeterProvider, the /metrics reader, the OTLP reader's
  exporter, configuration, shutdown and fork handling.
"""
