"""Trace context of a turn, and its OpenTelemetry spans when the `[otel]` extra is on.

The pipeline calls the small functions below (hooks marked `# [otel]` where they are
called). With tracing off, the default, each is a pass-through that costs one global
read, and nothing of `opentelemetry` is imported; `worker.observability.otel` holds
what runs when it is on (`start_tracing`, from the standard `OTEL_*` variables).

Spans, after the OpenTelemetry GenAI semantic conventions (v1.41.0, which names the
provider `gen_ai.provider.name`; earlier versions called it `gen_ai.system`):
- `chat {model}`, one per turn, a child of the prompt's trace (`traceparent` and
  `tracestate` of the inbound CloudEvent), with the request, usage and finish reasons;
- under it, one CLIENT span for the LLM call, and one PRODUCER span per publish.
Published events carry the turn span's context, so consumers continue under it.
"""

from __future__ import annotations

import contextlib
import os
from collections.abc import AsyncGenerator, Coroutine, Iterator, Mapping
from contextvars import ContextVar
from typing import Any, Protocol, TypeVar

from worker.contract.trace import TraceContext
from worker.errors import WorkerError
from worker.llm.base import LLMBackend, LLMRequest, StreamItem, Usage

__all__ = [
    "Tracing",
    "bind_trace",
    "current_trace_id",
    "installed",
    "outbound_trace",
    "start_tracing",
    "trace_ending",
    "traced_sink",
    "traced_stream",
    "traced_turn",
    "wanted_exporter",
]

T = TypeVar("T")
Sink = TypeVar("Sink")  # the pipeline's EventSink (a floor above this one)

_trace_id: ContextVar[str | None] = ContextVar("llm_stream_trace_id", default=None)


class Tracing(Protocol):
    """What the OpenTelemetry side implements (`worker.observability.otel.OTelTracing`)."""

    def outbound(self) -> TraceContext | None: ...

    def turn(
        self, parent: TraceContext, attributes: Mapping[str, Any], name: str
    ) -> contextlib.AbstractContextManager[None]: ...

    def ending(self, attributes: Mapping[str, Any], error: str | None) -> None: ...

    def stream(
        self, backend: LLMBackend, request: LLMRequest
    ) -> AsyncGenerator[StreamItem, None]: ...

    def sink(self, sink: Sink) -> Sink: ...


_active: Tracing | None = None


@contextlib.contextmanager
def installed(tracing: Tracing) -> Iterator[Tracing]:
    """Turn tracing on for the block (the worker's lifetime, or one test)."""
    global _active
    previous, _active = _active, tracing
    try:
        yield tracing
    finally:
        _active = previous


def wanted_exporter(env: Mapping[str, str]) -> tuple[str | None, str]:
    """The exporter the standard `OTEL_*` variables ask for (`otlp`, `console`), or None,
    with the reason in words. Tracing is on only when asked for: an OTLP endpoint set,
    or `OTEL_TRACES_EXPORTER` named (the SDK's own default, localhost, is no request)."""
    if env.get("OTEL_SDK_DISABLED", "").strip().lower() == "true":
        return None, "off (OTEL_SDK_DISABLED=true)"
    kind = env.get("OTEL_TRACES_EXPORTER", "").strip().lower()
    endpoint = env.get("OTEL_EXPORTER_OTLP_TRACES_ENDPOINT") or env.get(
        "OTEL_EXPORTER_OTLP_ENDPOINT"
    )
    if kind == "console":
        return "console", "spans to stdout (OTEL_TRACES_EXPORTER=console)"
    if kind == "otlp" or (kind == "" and endpoint):
        return "otlp", f"OTLP/HTTP to {endpoint or 'the default endpoint'}"
    if kind in ("", "none"):
        return None, "off (no OTEL_EXPORTER_OTLP_ENDPOINT, OTEL_TRACES_EXPORTER unset or none)"
    return None, f"off (OTEL_TRACES_EXPORTER={kind!r}: only otlp, console, none)"


@contextlib.contextmanager
def start_tracing(service_name: str, env: Mapping[str, str] | None = None) -> Iterator[str]:
    """Tracing on for the block if the environment asks for it; yields what was done.

    The `[otel]` extra is imported only here, and only when asked for. On exit the
    provider is shut down, which exports the spans still buffered.
    """
    kind, how = wanted_exporter(os.environ if env is None else env)
    if kind is None:
        yield f"tracing {how}"
        return
    try:
        from worker.observability import otel
    except ImportError as exc:
        yield f"tracing off: {how} asked for, but the [otel] extra is not installed ({exc.name})"
        return
    provider = otel.provider(otel.exporter(kind), service_name)
    try:
        with installed(otel.OTelTracing(provider)):
            yield f"tracing on: {how}"
    finally:
        provider.shutdown()


def bind_trace(extensions: Mapping[str, object]) -> None:
    """Log lines of this delivery's task (and the tasks it starts) carry its trace id."""
    _trace_id.set(TraceContext.of(extensions).trace_id)


def current_trace_id() -> str | None:
    return _trace_id.get()


def outbound_trace(extensions: Mapping[str, object]) -> TraceContext:
    """The context published events carry: the turn span's, else the prompt's own."""
    if _active is not None:
        context = _active.outbound()
        if context is not None:
            return context
    return TraceContext.of(extensions)


async def traced_turn(
    turn: Coroutine[Any, Any, T],
    extensions: Mapping[str, object],
    backend: LLMBackend,
    *,
    context_id: str,
    request_id: str,
    temperature: float | None,
    max_tokens: int | None,
) -> T:
    """Runs one turn's coroutine inside its `chat {model}` span."""
    if _active is None:
        return await turn
    attributes: dict[str, Any] = {
        "gen_ai.operation.name": "chat",
        "gen_ai.provider.name": backend.provider,
        "gen_ai.conversation.id": context_id,
        "llm_stream.request_id": request_id,
        "llm_stream.llm_component": backend.name,
    }
    if backend.model:
        attributes["gen_ai.request.model"] = backend.model
    if temperature is not None:
        attributes["gen_ai.request.temperature"] = temperature
    if max_tokens is not None:
        attributes["gen_ai.request.max_tokens"] = max_tokens
    name = f"chat {backend.model}" if backend.model else "chat"
    with _active.turn(TraceContext.of(extensions), attributes, name):
        return await turn


def trace_ending(
    *, status: str, usage: Usage, finish_reason: str, error: WorkerError | None
) -> None:
    """Records how the current turn ended on its span."""
    if _active is None:
        return
    attributes: dict[str, Any] = {
        "gen_ai.usage.input_tokens": usage.prompt_tokens,
        "gen_ai.usage.output_tokens": usage.completion_tokens,
        "llm_stream.status": status,
    }
    if status == "completed":
        attributes["gen_ai.response.finish_reasons"] = (finish_reason,)
    _active.ending(attributes, error.code if status == "failed" and error else None)


def traced_stream(backend: LLMBackend, request: LLMRequest) -> AsyncGenerator[StreamItem, None]:
    """`backend.stream(request)`, in a span of its own when tracing is on."""
    if _active is None:
        return backend.stream(request)
    return _active.stream(backend, request)


def traced_sink(sink: Sink) -> Sink:
    """`sink`, whose publishes within a turn get a span each when tracing is on."""
    return sink if _active is None else _active.sink(sink)
