"""LLM calls on the OpenTelemetry GenAI semantic conventions, with their cost.

    >>> from tinywindow_otel.llm import llm_call
    >>> @llm_call("anthropic", "claude-sonnet-4-5")
    ... async def ask(prompt):
    ...     return await client.messages.create(...)      # usage is read from the response

    >>> with llm_call("openai", "gpt-4o") as call:
    ...     for chunk in client.chat.completions.create(..., stream=True,
    ...                                                 stream_options={"include_usage": True}):
    ...         call.chunk(chunk)                           # first chunk -> time to first chunk

Each call records (``catalog.GEN_AI_METRICS``):

- ``gen_ai.client.operation.duration`` (``error.type`` only when it failed);
- ``gen_ai.client.token.usage`` twice, ``gen_ai.token.type`` = ``input`` and
  ``output``. As the conventions say, ``input`` counts *all* input tokens:
  Anthropic's ``input_tokens`` excludes cache reads and writes, so they are
  added; OpenAI's ``prompt_tokens`` already includes ``cached_tokens``;
- ``gen_ai.client.operation.time_to_first_chunk`` for streams;
- ``tinywindow_llm_cost_usd_total{provider,model}`` from :data:`prices`,
  cache reads and writes at their own price;
- ``tinywindow_api_requests_total`` / ``_latency_seconds`` /
  ``_errors_total`` with ``service`` = the provider, so the API panels still
  count the call.

The shipped prices are examples (USD per million tokens at the time of
writing); set yours with ``prices.set(...)``. A model without a price records
tokens but no cost, counted as dropped with reason ``no_price``.
"""

from __future__ import annotations

import threading
from collections.abc import Mapping
from dataclasses import dataclass
from time import perf_counter
from typing import Any

from ._internal.forksafe import reset_after_fork
from ._internal.series import check_number as _check_number
from ._internal.wrapper import CallWrapper, Probe, is_error
from .metrics import REGISTRY, MetricRegistry

__all__ = ["DEFAULT_PRICES", "LLMCall", "Price", "PriceTable", "Usage", "llm_call", "prices", "read_usage"]

TOKEN_USAGE = "gen_ai.client.token.usage"
DURATION = "gen_ai.client.operation.duration"
TIME_TO_FIRST_CHUNK = "gen_ai.client.operation.time_to_first_chunk"
COST = "tinywindow_llm_cost_usd_total"
ERROR_TYPE = "error.type"


@dataclass(frozen=True)
class Price:
    """USD per million tokens. Cache prices default to the input price when unknown."""

    input: float
    output: float
    cache_read: float | None = None
    cache_write: float | None = None

    def __post_init__(self) -> None:
        for field in ("input", "output", "cache_read", "cache_write"):
            value = getattr(self, field)
            if value is None and field.startswith("cache"):
                continue
            number = _check_number(COST, value, f"price.{field}")
            if not (0 <= number < float("inf")):
                raise ValueError(f"{COST}: price.{field} must be a finite number >= 0, got {value!r}")

    def cost(self, usage: Usage) -> float:
        uncached = max(0, usage.input_tokens - usage.cache_read_tokens - usage.cache_write_tokens)
        read = self.input if self.cache_read is None else self.cache_read
        write = self.input if self.cache_write is None else self.cache_write
        return (uncached * self.input + usage.cache_read_tokens * read + usage.cache_write_tokens * write
                + usage.output_tokens * self.output) / 1_000_000.0


# Examples only: list prices when this table was written. Check your
# provider's price page and override with ``prices.set(...)``.
DEFAULT_PRICES: dict[tuple[str, str], Price] = {
    ("anthropic", "claude-opus-4"): Price(15.0, 75.0, 1.5, 18.75),
    ("anthropic", "claude-sonnet-4"): Price(3.0, 15.0, 0.3, 3.75),
    ("anthropic", "claude-haiku-4"): Price(1.0, 5.0, 0.1, 1.25),
    ("openai", "gpt-4o"): Price(2.5, 10.0, 1.25),
    ("openai", "gpt-4o-mini"): Price(0.15, 0.6, 0.075),
}


class PriceTable:
    """(provider, model) -> :class:`Price`. A model matches its longest priced prefix.

    ``claude-sonnet-4-5-20250929`` is priced as ``claude-sonnet-4`` unless it
    has an entry of its own.
    """

    def __init__(self, table: Mapping[tuple[str, str], Price] | None = None) -> None:
        self._lock = threading.Lock()
        self._table: dict[tuple[str, str], Price] = {}
        self._resolved: dict[tuple[str, str], Price | None] = {}
        reset_after_fork(self)
        for (provider, model), price in (DEFAULT_PRICES if table is None else table).items():
            self.set(provider, model, price)


    def after_fork_in_child(self) -> None:
        self._lock = threading.Lock()  # a parent thread may have held it at fork time
    def set(self, provider: str, model: str, price: Price | None = None, *, input: float | None = None,
            output: float | None = None, cache_read: float | None = None,
            cache_write: float | None = None) -> None:
        """Price a model: ``prices.set("anthropic", "claude-sonnet-4", input=3, output=15, cache_read=0.3)``."""
        if not isinstance(provider, str) or not isinstance(model, str) or not provider or not model:
            raise TypeError(f"{COST}: provider and model must be non-empty strings, got {provider!r}, {model!r}")
        if price is None:
            if input is None or output is None:
                raise TypeError(f"{COST}: a price needs input= and output= (USD per million tokens)")
            price = Price(input, output, cache_read, cache_write)
        elif not isinstance(price, Price):
            raise TypeError(f"{COST}: price must be a Price, got {type(price).__name__}")
        with self._lock:
            self._table[(provider, model)] = price
            self._resolved = {}

    def remove(self, provider: str, model: str) -> None:
        with self._lock:
            self._table.pop((provider, model), None)
            self._resolved = {}

    def get(self, provider: str, model: str) -> Price | None:
        key = (provider, model)
        try:
            return self._resolved[key]
        except KeyError:
            pass
        with self._lock:
            price = self._table.get(key)
            if price is None:
                candidates = [m for (p, m) in self._table if p == provider and model.startswith(m)]
                if candidates:
                    price = self._table[(provider, max(candidates, key=len))]
            if len(self._resolved) < 10_000:  # models come from configuration; bound it anyway
                self._resolved[key] = price
        return price


prices = PriceTable()
"""The process-wide price table ``llm_call`` uses by default."""


@dataclass
class Usage:
    """Token counts of one call; ``input_tokens`` includes the cached ones (GenAI conventions)."""

    input_tokens: int = 0
    output_tokens: int = 0
    cache_read_tokens: int = 0
    cache_write_tokens: int = 0


def _get(obj: Any, key: str) -> Any:
    if obj is None:
        return None
    if obj.__class__ is dict:  # parsed JSON: the common case, without the ABC check
        return obj.get(key)
    value = getattr(obj, key, None)  # SDK response objects (pydantic models)
    if value is None and isinstance(obj, Mapping):
        return obj.get(key)
    return value


def _count(value: Any) -> int | None:
    if value is None or isinstance(value, bool) or not isinstance(value, (int, float)):
        return None
    if value != value or value in (float("inf"), float("-inf")) or value < 0:
        return None
    return int(value)


_FIELDS = ("input_tokens", "output_tokens", "cache_read_input_tokens", "cache_creation_input_tokens",
           "prompt_tokens", "completion_tokens")


def _as_dict(obj: Any) -> Mapping | None:
    """A mapping view of a usage object: dicts as they are, SDK models (pydantic) by their ``__dict__``."""
    if obj is None or obj.__class__ is dict:
        return obj
    if isinstance(obj, Mapping):
        return obj
    fields = getattr(obj, "__dict__", None)
    if fields is not None:
        return fields
    if isinstance(obj, (str, bytes, int, float)):
        return None
    return {name: getattr(obj, name, None) for name in (*_FIELDS, "prompt_tokens_details", "input_tokens_details")}


def read_usage(response: Any) -> dict[str, int] | None:
    """The raw token fields of a response or stream chunk, or None if it carries none.

    Looks at ``response.usage`` (Anthropic messages, OpenAI chat/responses),
    ``response.message.usage`` (Anthropic's ``message_start`` event) and the
    object itself (a bare usage object or dict). Cached counts come from
    ``cache_read_input_tokens`` / ``cache_creation_input_tokens`` (Anthropic,
    not part of ``input_tokens``) or ``prompt_tokens_details.cached_tokens`` /
    ``input_tokens_details.cached_tokens`` (OpenAI, part of the prompt).
    Counts that are not non-negative finite numbers are ignored.
    """
    for usage in (_get(response, "usage"), _get(_get(response, "message"), "usage"), response):
        fields = _as_dict(usage)
        if not fields:
            continue
        found = {}
        for field in _FIELDS:
            value = fields.get(field)
            if value is not None:
                if value.__class__ is not int or value < 0:
                    value = _count(value)
                    if value is None:
                        continue
                found[field] = value
        details = fields.get("prompt_tokens_details") or fields.get("input_tokens_details")
        if details is not None:
            cached = _count(_get(details, "cached_tokens"))
            if cached is not None:
                found["cached_tokens"] = cached
        if found:
            return found
    return None


def _usage_from(fields: Mapping[str, int]) -> Usage:
    if "prompt_tokens" in fields or "completion_tokens" in fields:  # OpenAI chat completions
        return Usage(fields.get("prompt_tokens", 0), fields.get("completion_tokens", 0),
                     fields.get("cached_tokens", 0), 0)
    if "cached_tokens" in fields:  # OpenAI responses API: input_tokens includes the cached ones
        return Usage(fields.get("input_tokens", 0), fields.get("output_tokens", 0), fields["cached_tokens"], 0)
    read = fields.get("cache_read_input_tokens", 0)
    write = fields.get("cache_creation_input_tokens", 0)
    return Usage(fields.get("input_tokens", 0) + read + write, fields.get("output_tokens", 0), read, write)


class LLMCall:
    """The ``call`` in ``with llm_call(...) as call``: feed it the response or the stream's chunks."""

    __slots__ = ("started_at", "first_chunk_at", "_fields", "error_type", "usage_override")

    def __init__(self) -> None:
        self.started_at = perf_counter()  # perf_counter() readings; adjustable to replay recorded timings
        self.first_chunk_at: float | None = None
        self._fields: dict[str, int] | None = None
        self.error_type: str | None = None
        self.usage_override: Usage | None = None

    def record(self, response: Any) -> None:
        """Read token usage from a response (or a stream event); later values of a field win."""
        fields = read_usage(response)
        if fields:
            if self._fields is None:
                self._fields = fields
            else:
                self._fields.update(fields)

    def chunk(self, chunk: Any = None) -> None:
        """A stream chunk arrived: the first one sets the time to first chunk; usage in it is read."""
        if self.first_chunk_at is None:
            self.first_chunk_at = perf_counter()
        if chunk is not None:
            self.record(chunk)

    def usage(self, input_tokens: int = 0, output_tokens: int = 0, cache_read_tokens: int = 0,
              cache_write_tokens: int = 0) -> None:
        """Set the token counts explicitly (``input_tokens`` including the cached ones)."""
        counts = (input_tokens, output_tokens, cache_read_tokens, cache_write_tokens)
        for name, value in zip(("input_tokens", "output_tokens", "cache_read_tokens", "cache_write_tokens"), counts):
            number = _check_number(TOKEN_USAGE, value, name)
            if not (0 <= number < float("inf")):
                raise ValueError(f"{TOKEN_USAGE}: {name} must be a finite number >= 0, got {value!r}")
        self.usage_override = Usage(*(int(v) for v in counts))

    def error(self, error_type: str) -> None:
        """Mark the call failed without raising (e.g. a refusal or a truncated answer)."""
        if not isinstance(error_type, str) or not error_type:
            raise TypeError(f"{DURATION}: error.type must be a non-empty string, got {error_type!r}")
        self.error_type = error_type

    @property
    def tokens(self) -> Usage | None:
        if self.usage_override is not None:
            return self.usage_override
        return _usage_from(self._fields) if self._fields else None


class _Bound:
    """The series one (operation, provider, model) writes, looked up once per ``llm_call``."""

    __slots__ = ("key", "duration_ok", "input", "output", "cost", "requests", "latency", "m")

    def __init__(self, m: _Metrics, operation: str, provider: str, model: str) -> None:
        self.key = (operation, provider, model)
        self.m = m
        self.duration_ok = m.duration.labels(operation, provider, model, "")
        # error.type is conditionally required: absent, not empty, on success.
        if self.duration_ok.attributes.get(ERROR_TYPE) == "":  # not the overflow series
            self.duration_ok.attributes.pop(ERROR_TYPE)
        self.input = m.tokens.labels(operation, provider, model, "input")
        self.output = m.tokens.labels(operation, provider, model, "output")
        self.cost = m.cost.labels(provider, model)
        self.requests = m.requests.labels(provider)
        self.latency = m.latency.labels(provider)


class _Metrics:
    def __init__(self, registry: MetricRegistry) -> None:
        self.drops = registry.drops
        self.tokens = registry.get(TOKEN_USAGE)
        self.duration = registry.get(DURATION)
        self.ttfc = registry.get(TIME_TO_FIRST_CHUNK)
        self.cost = registry.get(COST)
        self.requests = registry.get("tinywindow_api_requests_total")
        self.latency = registry.get("tinywindow_api_latency_seconds")
        self.errors = registry.get("tinywindow_api_errors_total")


_metrics = _Metrics(REGISTRY)


class _LLMProbe(Probe):
    metric = DURATION
    exposes_state = True
    wants_items = True

    def __init__(self, bound: _Bound, price_table: PriceTable) -> None:
        self._b = bound
        self._prices = price_table
        self.drops = bound.m.drops

    def start(self, args, kwargs) -> LLMCall:
        return LLMCall()

    def item(self, call: LLMCall, value: Any) -> None:
        call.chunk(value)

    def finish(self, call: LLMCall, exc, result) -> None:
        elapsed = perf_counter() - call.started_at
        b = self._b
        operation, provider, model = b.key
        m = b.m
        b.requests.inc()
        b.latency.observe(elapsed)
        error_type = type(exc).__qualname__ if is_error(exc) else call.error_type
        if error_type is None:
            b.duration_ok.observe(elapsed)
        else:
            m.duration.labels(operation, provider, model, error_type).observe(elapsed)
            if exc is not None:
                m.errors.labels(provider, error_type).inc()
        if call.first_chunk_at is not None:
            m.ttfc.labels(operation, provider, model).observe(call.first_chunk_at - call.started_at)
        if exc is None and result is not None and call._fields is None:
            call.record(result)
        usage = call.tokens
        if usage is None:
            return
        b.input.observe(usage.input_tokens)
        b.output.observe(usage.output_tokens)
        price = self._prices.get(provider, model)
        if price is None:
            self.drops.dropped(COST, "no_price", b.key)
        else:
            b.cost.inc(price.cost(usage))


def llm_call(provider: str, model: str, operation: str = "chat", *, price_table: PriceTable | None = None,
             registry: MetricRegistry | None = None) -> CallWrapper:
    """Time one LLM call and record its tokens and cost; a decorator and (async) context manager.

    ``provider`` is the GenAI ``gen_ai.provider.name`` (``anthropic``,
    ``openai``, ...; also the ``service`` of the api metrics), ``model`` the
    requested model, ``operation`` the ``gen_ai.operation.name`` (``chat``,
    ``text_completion``, ``embeddings``, ...).

    Decorated functions: the return value's usage is read; generators and
    async generators are streams whose items are chunks (the first sets the
    time to first chunk, usage is read from each). An exception records
    ``error.type`` = its class name and is re-raised. Telemetry faults never
    reach the caller.
    """
    for what, value in (("gen_ai.provider.name", provider), ("gen_ai.request.model", model),
                        ("gen_ai.operation.name", operation)):
        if not isinstance(value, str) or not value:
            raise TypeError(f"{DURATION}: {what} must be a non-empty string, got {value!r}")
    m = _metrics if registry is None else _Metrics(registry)
    return CallWrapper(_LLMProbe(_Bound(m, operation, provider, model), prices if price_table is None else price_table))
