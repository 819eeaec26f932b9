"""Property-based fuzzing of the facade (metrics.py) against a real /metrics scrape.

Every example feeds the public API arbitrary values and label sets, then checks the
contract of SPEC section 4:
- programming errors (wrong types, negative counter increments, missing/extra/too
  many labels) raise ValueError/TypeError naming the metric and the offending label;
- runtime data (NaN, +-inf, numbers beyond float range, lone surrogates, very long
  label values) never raises: it is dropped or rewritten and counted in a
  ``tinywindow_otel_*`` self-metric;
- the exposition stays parseable by prometheus_client's parsers (text and
  OpenMetrics) and carries exactly the values the model predicts.
"""

from __future__ import annotations

import math
import sys
from decimal import Decimal
from fractions import Fraction

import pytest
from helpers import fetch, parse, sample_value
from hypothesis import HealthCheck, event, given, settings
from hypothesis import strategies as st

from tinywindow_otel import MetricsServer
from tinywindow_otel.metrics import MAX_LABEL_VALUE_LENGTH, REGISTRY

FUZZ = settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.too_slow])

COUNTER = REGISTRY.by_attr("api_requests_total")  # labels: service
GAUGE = REGISTRY.by_attr("active_positions")  # labels: symbol
HISTOGRAM = REGISTRY.by_attr("trade_pnl_usd")  # no labels, negative values kept
LABELLED = [REGISTRY.by_attr(a) for a in ("trades_total", "api_errors_total", "trade_amount_usd", "agent_decisions_total")]
DROPPED = REGISTRY.get("tinywindow_otel_dropped_measurements_total")
SANITIZED = REGISTRY.get("tinywindow_otel_label_values_sanitized_total")


@pytest.fixture(scope="module")
def url():
    with MetricsServer(host="127.0.0.1", port=0) as server:
        yield server.url


def scrape_text(url: str) -> dict:
    """Scrape (always the text format, ADR 2) and parse it. Returns the families."""
    return parse(fetch(url))


def self_count(metric, *labels: str) -> float:
    return metric.labels(*labels).get()


# --- strategies ------------------------------------------------------------------

finite = st.floats(allow_nan=False, allow_infinity=False)
non_finite = st.sampled_from([math.nan, math.inf, -math.inf, -math.nan])
beyond_float = st.integers(min_value=2**1024, max_value=2**4000).flatmap(lambda n: st.sampled_from([n, -n, Fraction(n, 3)]))
wrong_type = st.one_of(
    st.none(), st.booleans(), st.text(max_size=5), st.binary(max_size=5), st.lists(st.integers(), max_size=2),
    st.dictionaries(st.text(max_size=2), st.integers(), max_size=1), st.just(object()), st.just(1j),
    st.decimals(allow_nan=False, allow_infinity=False, places=2).map(Decimal),
)
VALUE_CLASSES = {
    "finite": finite,
    "int": st.integers(min_value=-(2**60), max_value=2**60),
    "fraction": st.fractions(max_denominator=1000),
    "nan_inf": non_finite,
    "beyond_float": beyond_float,
    "huge_finite": st.floats(min_value=1e300, max_value=sys.float_info.max).flatmap(lambda v: st.sampled_from([v, -v])),
    "wrong_type": wrong_type,
}
# Every code point including lone surrogates (invalid UTF-8), controls, quotes, backslashes, U+2028.
any_char = st.characters(codec=None, categories=None)
label_text = st.one_of(
    st.text(any_char, max_size=40),
    st.sampled_from(['"', "\\", "\n", "\r\n", "\x00", "\u2028", "}", "{a=\"b\"}", "# HELP", "\ud800", "é中😀"]),
    st.tuples(any_char, st.integers(MAX_LABEL_VALUE_LENGTH - 2, 100_000)).map(lambda t: t[0] * t[1]),
)


def expected_label(value: str) -> tuple[str, str | None]:
    """What the facade stores for a label value, and the sanitize reason(s) if any."""
    reason = None
    try:
        value.encode("utf-8")
    except UnicodeEncodeError:
        value = value.encode("utf-8", "backslashreplace").decode("utf-8")
        reason = "invalid_utf8"
    if len(value) > MAX_LABEL_VALUE_LENGTH:
        value = value[:MAX_LABEL_VALUE_LENGTH]
        reason = "too_long" if reason is None else reason + "+too_long"
    return value, reason


def float_or_inf(value) -> float:
    try:
        return float(value)
    except OverflowError:
        return math.inf if value > 0 else -math.inf


# --- values --------------------------------------------------------------------------


@pytest.mark.parametrize("cls", sorted(VALUE_CLASSES))
@settings(FUZZ, max_examples=40)
@given(kind=st.sampled_from(["counter", "gauge_set", "gauge_inc", "gauge_dec", "histogram"]), data=st.data())
def test_values_raise_only_for_programming_errors_and_are_counted_otherwise(url, cls, kind, data):
    value = data.draw(VALUE_CLASSES[cls], label="value")
    event(f"kind: {kind}")
    metric = {"counter": COUNTER, "histogram": HISTOGRAM}.get(kind, GAUGE)
    series = metric.labels("fuzz") if metric is not HISTOGRAM else metric.series()[0]
    before = series.get() if kind != "histogram" else series.snapshot()
    number = None if cls == "wrong_type" else float_or_inf(value)
    bad_number = number is not None and not math.isfinite(number)
    reason = None if not bad_number else ("nan" if math.isnan(number) else "inf")
    drops_before = self_count(DROPPED, metric.name, reason) if reason else 0

    call = {
        "counter": series.inc if kind == "counter" else None,
        "gauge_set": getattr(series, "set", None), "gauge_inc": getattr(series, "inc", None),
        "gauge_dec": getattr(series, "dec", None), "histogram": getattr(series, "observe", None),
    }[kind]
    if cls == "wrong_type":
        with pytest.raises(TypeError) as excinfo:
            call(value)
        assert metric.name in str(excinfo.value)
    elif kind == "counter" and not bad_number and number < 0:
        with pytest.raises(ValueError) as excinfo:
            call(value)
        assert metric.name in str(excinfo.value) and "non-negative" in str(excinfo.value)
    else:
        call(value)  # must not raise
        if bad_number:
            assert self_count(DROPPED, metric.name, reason) == drops_before + 1
        elif kind == "counter":
            expected = before + number
            assert series.get() == (expected if math.isfinite(expected) else before)
        elif kind == "gauge_set":
            assert series.get() == number
        elif kind in ("gauge_inc", "gauge_dec"):
            expected = (before or 0.0) + (number if kind == "gauge_inc" else -number)  # None: no value yet
            assert series.get() == (expected if math.isfinite(expected) else before)
        else:
            counts, total, _, _ = series.snapshot()
            if math.isfinite(before[1] + number):
                assert sum(counts) == sum(before[0]) + 1 and total == before[1] + number
            else:  # the sum would leave float range: dropped, counted as overflow
                assert sum(counts) == sum(before[0])

    families = scrape_text(url)
    if kind == "counter":
        assert sample_value(families, COUNTER.name, service="fuzz") == series.get()
    elif kind.startswith("gauge"):
        assert sample_value(families, GAUGE.name, symbol="fuzz") == series.get()
    else:
        counts, total, _, _ = series.snapshot()
        assert sample_value(families, HISTOGRAM.name + "_bucket", le="+Inf") == sum(counts)
        # prometheus_client omits _sum/_count for histograms with negative bucket
        # bounds (the P&L one); where present they must match.
        scraped_sum = sample_value(families, HISTOGRAM.name + "_sum")
        assert scraped_sum is None or scraped_sum == total


def test_sums_beyond_float_range_are_dropped_as_overflow(url):
    counter = COUNTER.labels("big")
    counter.inc(sys.float_info.max)
    counter.inc(sys.float_info.max)  # would pin the counter at +Inf forever
    assert counter.get() == sys.float_info.max
    assert self_count(DROPPED, COUNTER.name, "overflow") == 1
    HISTOGRAM.observe(-sys.float_info.max)
    HISTOGRAM.observe(-sys.float_info.max)
    assert HISTOGRAM.series()[0].snapshot()[1] == -sys.float_info.max
    assert self_count(DROPPED, HISTOGRAM.name, "overflow") == 1
    families = scrape_text(url)
    assert sample_value(families, "tinywindow_otel_dropped_measurements_total",
                        metric=COUNTER.name, reason="overflow") == 1


# --- labels ------------------------------------------------------------------------


@FUZZ
@given(metric=st.sampled_from(LABELLED), data=st.data())
def test_any_label_text_round_trips_through_the_exposition(url, metric, data):
    closed = {name: metric.spec.allowed_values(name) for name in metric.labelnames}
    values = [data.draw(st.one_of(st.sampled_from(closed[name]), label_text) if closed[name] else label_text,
                        label=name) for name in metric.labelnames]
    outside = [name for name, value in zip(metric.labelnames, values) if closed[name] and value not in closed[name]]
    if outside:
        # A label from a closed set takes no other text: raised, nothing created or counted.
        event("value outside a closed set")
        series_before, sanitized_before = len(metric.series()), len(SANITIZED.series())
        with pytest.raises(ValueError) as excinfo:
            metric.labels(*values)
        assert str(excinfo.value).startswith(f"{metric.name}: label {outside[0]!r} must be one of ")
        assert len(metric.series()) == series_before and len(SANITIZED.series()) == sanitized_before
        return
    sanitized = [expected_label(v) for v in values]
    for _, reason in sanitized:
        if reason:
            event(f"label sanitized: {reason}")
    by_name = dict(zip(metric.labelnames, values))
    counts_before = {r: self_count(SANITIZED, metric.name, r) for r in ("invalid_utf8", "too_long")}

    child = metric.labels(**by_name) if data.draw(st.booleans(), label="by name") else metric.labels(*values)
    if hasattr(child, "inc"):
        child.inc()
    else:
        child.observe(1.0)

    stored = dict(zip(metric.labelnames, (s for s, _ in sanitized)))
    if child.label_values != tuple(stored.values()):
        # Only a full metric may hand out the overflow series instead.
        assert child.label_values == ("__overflow__",) * len(values) and len(metric.series()) > metric.max_series
    for reason in ("invalid_utf8", "too_long"):
        expected = sum(1 for _, r in sanitized if r and reason in r)
        assert self_count(SANITIZED, metric.name, reason) == counts_before[reason] + expected

    families = scrape_text(url)
    sample = metric.spec.exposed_name if metric.spec.kind.value == "counter" else metric.name + "_count"
    assert sample_value(families, sample, **dict(zip(metric.labelnames, child.label_values))) == child_value(child)


def child_value(child) -> float:
    return child.get() if hasattr(child, "get") else sum(child.snapshot()[0])


bad_label_value = st.one_of(
    st.none(), st.booleans(), st.binary(max_size=3), st.lists(st.text(max_size=2), max_size=2),
    st.just(object()), st.just(("tuple",)), st.dictionaries(st.text(max_size=1), st.text(max_size=1), max_size=1),
)


@pytest.mark.parametrize("mistake", ["missing", "extra", "wrong_type", "too_many", "too_few", "mixed"])
@settings(FUZZ, max_examples=30)
@given(metric=st.sampled_from(LABELLED), data=st.data())
def test_label_mistakes_raise_naming_the_metric_and_the_label(url, mistake, metric, data):
    names = list(metric.labelnames)
    good = {name: (metric.spec.allowed_values(name) or ("ok",))[0] for name in names}
    series_before = len(metric.series())
    if mistake == "missing":
        dropped = data.draw(st.sampled_from(names))
        kwargs = {k: v for k, v in good.items() if k != dropped}
        with pytest.raises(ValueError) as excinfo:
            metric.labels(**kwargs)
        offending = dropped
    elif mistake == "extra":
        extra = data.draw(st.text(st.characters(categories=["L"]), min_size=1, max_size=10).filter(lambda n: n not in names))
        with pytest.raises(ValueError) as excinfo:
            metric.labels(**good, **{extra: "x"})
        offending = extra
    elif mistake == "wrong_type":
        offending = data.draw(st.sampled_from(names))
        bad = data.draw(bad_label_value)
        kwargs = {**good, offending: bad}
        with pytest.raises(TypeError) as excinfo:
            if data.draw(st.booleans()):
                metric.labels(**kwargs)
            else:
                metric.labels(*kwargs.values())
    elif mistake == "too_many":
        with pytest.raises(ValueError) as excinfo:
            metric.labels(*good.values(), "surplus")
        offending = names[0]  # the message lists the expected names
    elif mistake == "too_few":
        with pytest.raises(ValueError) as excinfo:
            metric.labels(*list(good.values())[:-1])
        offending = names[-1]
    else:
        with pytest.raises(ValueError) as excinfo:
            metric.labels("ok", **{names[-1]: "ok"})
        offending = None
    message = str(excinfo.value)
    assert metric.name in message
    if offending is not None:
        assert repr(offending) in message or offending in message
    assert len(metric.series()) == series_before, "a rejected call must not create a series"
    scrape_text(url)


def test_unlabelled_misuse_raises_naming_the_metric():
    with pytest.raises(ValueError, match="tinywindow_trade_pnl_usd.*no labels"):
        HISTOGRAM.labels("x")
    with pytest.raises(ValueError, match="tinywindow_trade_pnl_usd.*unknown label.*symbol"):
        HISTOGRAM.labels(symbol="x")
    with pytest.raises(ValueError, match="tinywindow_trades_total.*call .labels"):
        REGISTRY.by_attr("trades_total").inc()


def test_bad_data_logs_one_line_per_kind(caplog):
    import logging

    from tinywindow_otel.testing import reset_values

    reset_values()  # earlier tests may have logged these kinds within the interval
    with caplog.at_level(logging.WARNING, logger="tinywindow_otel"):
        series = COUNTER.labels("logs")
        for _ in range(1000):
            series.inc(math.nan)
            series.inc(math.inf)
            COUNTER.labels("\ud800" * 2).inc()
    lines = [r.getMessage() for r in caplog.records if COUNTER.name in r.getMessage()]
    assert self_count(DROPPED, COUNTER.name, "nan") == 1000
    assert self_count(DROPPED, COUNTER.name, "inf") == 1000
    assert self_count(SANITIZED, COUNTER.name, "invalid_utf8") == 1000
    assert len(lines) == 3, lines  # nan, inf, invalid utf8: one line per kind per interval
