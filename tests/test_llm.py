"""llm_call(): GenAI convention metrics, cost and api_* on /metrics (real scrape) and OTLP; streams; bad input."""

from __future__ import annotations

import asyncio
import math
from types import SimpleNamespace

import pytest
from helpers import sample_value

from tinywindow_otel.testing import reset
from tinywindow_otel.catalog import BY_NAME, GEN_AI_DURATION_BUCKETS, GEN_AI_METRICS, GEN_AI_TOKEN_BUCKETS
from tinywindow_otel.llm import Price, PriceTable, llm_call, prices, read_usage
from tinywindow_otel.metrics import REGISTRY

TOKENS = "gen_ai_client_token_usage"
DURATION = "gen_ai_client_operation_duration_seconds"
TTFC = "gen_ai_client_operation_time_to_first_chunk_seconds"
COST = "tinywindow_llm_cost_usd_total"
GENAI = {"gen_ai_operation_name": "chat", "gen_ai_provider_name": "anthropic",
         "gen_ai_request_model": "claude-sonnet-4-5"}


def anthropic_message(input_tokens=100, output_tokens=50, cache_read=0, cache_write=0):
    """The shape of anthropic.types.Message: attributes, usage with cache fields."""
    usage = SimpleNamespace(input_tokens=input_tokens, output_tokens=output_tokens,
                            cache_read_input_tokens=cache_read, cache_creation_input_tokens=cache_write)
    return SimpleNamespace(id="msg_1", model="claude-sonnet-4-5", usage=usage, content=[])


def test_exposed_names_buckets_and_dots_to_underscores(scrape_metrics):
    @llm_call("anthropic", "claude-sonnet-4-5")
    def ask():
        return anthropic_message(100, 50, cache_read=1000, cache_write=200)

    ask()
    families = scrape_metrics()
    for spec in GEN_AI_METRICS:
        if spec.name != "gen_ai.client.operation.time_to_first_chunk":
            assert spec.exposed_name in families, spec.exposed_name
    assert {s.exposed_name for s in GEN_AI_METRICS} >= {TOKENS, DURATION}
    # input = 100 + cache read 1000 + cache write 200 (the conventions count all input).
    assert sample_value(families, TOKENS + "_sum", **GENAI, gen_ai_token_type="input") == 1300.0
    assert sample_value(families, TOKENS + "_sum", **GENAI, gen_ai_token_type="output") == 50.0
    assert sample_value(families, DURATION + "_count", **GENAI) == 1.0  # no error_type label on success
    les = {s.labels["le"] for s in families[TOKENS].samples if s.name.endswith("_bucket")}
    assert {float(le) for le in les if le != "+Inf"} == set(GEN_AI_TOKEN_BUCKETS)
    les = {s.labels["le"] for s in families[DURATION].samples if s.name.endswith("_bucket")}
    assert {float(le) for le in les if le != "+Inf"} == set(GEN_AI_DURATION_BUCKETS)
    # cost: 100 uncached x 3 + 1000 read x 0.3 + 200 write x 3.75 + 50 out x 15, per million.
    expected = (100 * 3 + 1000 * 0.3 + 200 * 3.75 + 50 * 15) / 1e6
    assert sample_value(families, COST, provider="anthropic", model="claude-sonnet-4-5") == pytest.approx(expected)
    # The api metrics count the same call under service=<provider>.
    assert sample_value(families, "tinywindow_api_requests_total", service="anthropic") == 1.0
    assert sample_value(families, "tinywindow_api_latency_seconds_count", service="anthropic") == 1.0


def test_openai_chat_usage_includes_cached_prompt_tokens():
    fields = read_usage({"usage": {"prompt_tokens": 1000, "completion_tokens": 20,
                                   "prompt_tokens_details": {"cached_tokens": 800}}})
    assert fields == {"prompt_tokens": 1000, "completion_tokens": 20, "cached_tokens": 800}
    table = PriceTable({("openai", "gpt-4o"): Price(2.5, 10.0, 1.25)})

    @llm_call("openai", "gpt-4o", price_table=table)
    def ask():
        return {"usage": {"prompt_tokens": 1000, "completion_tokens": 20,
                          "prompt_tokens_details": {"cached_tokens": 800}}}

    ask()
    cost = REGISTRY.get("tinywindow_llm_cost_usd_total").labels("openai", "gpt-4o").get()
    assert cost == pytest.approx((200 * 2.5 + 800 * 1.25 + 20 * 10.0) / 1e6)
    tokens = REGISTRY.get("gen_ai.client.token.usage").labels("chat", "openai", "gpt-4o", "input")
    assert tokens.snapshot()[1] == 1000.0


def test_anthropic_stream_events_time_to_first_chunk_and_usage():
    events = [
        {"type": "message_start", "message": {"usage": {"input_tokens": 30, "output_tokens": 1,
                                                        "cache_read_input_tokens": 70}}},
        {"type": "content_block_delta", "delta": {"text": "buy"}},
        {"type": "message_delta", "usage": {"output_tokens": 42}},
    ]

    @llm_call("anthropic", "claude-haiku-4-5")
    async def stream():
        for event in events:
            await asyncio.sleep(0)
            yield event

    async def consume():
        return [e async for e in stream()]

    assert len(asyncio.run(consume())) == 3
    key = ("chat", "anthropic", "claude-haiku-4-5")
    assert REGISTRY.get("gen_ai.client.token.usage").labels(*key, "input").snapshot()[1] == 100.0
    assert REGISTRY.get("gen_ai.client.token.usage").labels(*key, "output").snapshot()[1] == 42.0
    ttfc = REGISTRY.get("gen_ai.client.operation.time_to_first_chunk").labels(*key).snapshot()
    duration = REGISTRY.get("gen_ai.client.operation.duration").labels(*key, "").snapshot()
    assert sum(ttfc[0]) == 1 and 0 <= ttfc[1] <= duration[1]


def test_context_manager_with_explicit_chunks_and_usage(scrape_metrics):
    with llm_call("openai", "gpt-4o-mini") as call:
        call.chunk({"choices": [{"delta": {"content": "hi"}}]})
        call.usage(input_tokens=12, output_tokens=3)
    families = scrape_metrics()
    labels = {"gen_ai_operation_name": "chat", "gen_ai_provider_name": "openai",
              "gen_ai_request_model": "gpt-4o-mini"}
    assert sample_value(families, TTFC + "_count", **labels) == 1.0
    assert sample_value(families, TOKENS + "_sum", **labels, gen_ai_token_type="input") == 12.0


def test_error_sets_error_type_counts_api_error_and_propagates(scrape_metrics):
    @llm_call("anthropic", "claude-sonnet-4-5")
    async def ask():
        raise TimeoutError("slow")

    with pytest.raises(TimeoutError):
        asyncio.run(ask())
    families = scrape_metrics()
    assert sample_value(families, DURATION + "_count", **GENAI, error_type="TimeoutError") == 1.0
    assert sample_value(families, "tinywindow_api_errors_total", service="anthropic", type="TimeoutError") == 1.0
    assert not sample_value(families, TOKENS + "_count", **GENAI, gen_ai_token_type="input")  # no usage, no tokens


def test_unknown_model_records_tokens_but_no_cost_and_counts_it():
    @llm_call("localai", "llama-3")
    def ask():
        return {"usage": {"input_tokens": 5, "output_tokens": 5}}

    ask()
    assert REGISTRY.get("gen_ai.client.token.usage").labels("chat", "localai", "llama-3", "input").snapshot()[1] == 5
    assert REGISTRY.get("tinywindow_llm_cost_usd_total").labels("localai", "llama-3").get() == 0.0
    dropped = REGISTRY.get("tinywindow_otel_dropped_measurements_total")
    assert dropped.labels("tinywindow_llm_cost_usd_total", "no_price").get() == 1.0


def test_price_table_override_and_prefix_match():
    table = PriceTable()
    assert table.get("anthropic", "claude-sonnet-4-5-20250929") == table.get("anthropic", "claude-sonnet-4")
    table.set("anthropic", "claude-sonnet-4-5", input=1.0, output=2.0)
    assert table.get("anthropic", "claude-sonnet-4-5-20250929").input == 1.0
    assert table.get("nobody", "x") is None
    assert prices.get("openai", "gpt-4o-mini-2024-07-18").input == 0.15  # longest prefix, not gpt-4o


def test_nan_and_garbage_usage_fields_are_ignored_not_recorded():
    assert read_usage({"usage": {"input_tokens": math.nan, "output_tokens": "12"}}) is None
    assert read_usage("text") is None
    assert read_usage(None) is None


@pytest.mark.parametrize("args, exc, match", [
    (("anthropic", None), TypeError, "gen_ai.request.model"),
    (("", "m"), TypeError, "gen_ai.provider.name"),
    (("anthropic", "m", 3), TypeError, "gen_ai.operation.name"),
])
def test_bad_arguments_raise_naming_the_metric(args, exc, match):
    with pytest.raises(exc, match=match):
        llm_call(*args)


def test_bad_prices_and_usage_raise_naming_the_metric():
    with pytest.raises(ValueError, match="tinywindow_llm_cost_usd_total"):
        Price(-1.0, 1.0)
    with pytest.raises(TypeError, match="tinywindow_llm_cost_usd_total"):
        PriceTable().set("openai", "gpt", input=1.0)
    with llm_call("openai", "gpt-4o") as call:
        with pytest.raises(ValueError, match="gen_ai.client.token.usage"):
            call.usage(input_tokens=-1)
        with pytest.raises(TypeError, match="gen_ai.client.token.usage"):
            call.usage(input_tokens="many")


def test_model_cap_folds_into_overflow():
    metric = REGISTRY.get("gen_ai.client.operation.duration")
    old = metric.max_series
    metric.set_max_series(3)
    try:
        for i in range(6):
            with llm_call("openai", f"model-{i}"):
                pass
        assert len(metric.series()) <= 4
    finally:
        metric.set_max_series(old)
    assert BY_NAME["gen_ai.client.operation.duration"].max_series == old


def test_otlp_keeps_dotted_attribute_names_and_omits_error_type_on_success():
    from otlp_receiver import OTLPReceiver, attrs, metrics_of

    import tinywindow_otel as tw
    from tinywindow_otel import pipeline
    from tinywindow_otel.testing import reset

    with OTLPReceiver() as receiver:
        try:
            tw.configure(endpoint=receiver.endpoint, exporters="prometheus,otlp", export_interval_millis=600_000)
            p = pipeline.get_pipeline()

            @llm_call("anthropic", "claude-sonnet-4-5")
            def ask():
                return anthropic_message(10, 20)

            ask()
            with pytest.raises(ValueError):
                with llm_call("anthropic", "claude-sonnet-4-5"):
                    raise ValueError("bad request")
            assert p.force_flush()
            _, request = receiver.wait_for(lambda reqs: reqs[-1] if reqs else None)
            metrics = metrics_of(request)
            duration = metrics["gen_ai.client.operation.duration"]
            assert duration.unit == "s"
            points = [attrs(pt.attributes) for pt in duration.histogram.data_points]
            base = {"gen_ai.operation.name": "chat", "gen_ai.provider.name": "anthropic",
                    "gen_ai.request.model": "claude-sonnet-4-5"}
            assert base in points  # success: no error.type at all
            assert {**base, "error.type": "ValueError"} in points
            usage = metrics["gen_ai.client.token.usage"]
            assert usage.unit == "{token}"
            sums = {attrs(pt.attributes)["gen_ai.token.type"]: pt.sum for pt in usage.histogram.data_points}
            assert sums == {"input": 10.0, "output": 20.0}
            assert list(usage.histogram.data_points[0].explicit_bounds) == list(GEN_AI_TOKEN_BUCKETS)
        finally:
            reset()  # tinywindow_otel.testing: the next test starts from the environment's settings
