"""The OpenTelemetry side of `worker.observability.tracing` (needs the `[otel]` extra).

Imported only by `tracing.start_tracing`, when the environment turns tracing on, and by
tests. The SDK reads its standard variables itself: `OTEL_EXPORTER_OTLP_(TRACES_)*`
(endpoint, headers, timeout, compression; OTLP over HTTP/protobuf), `OTEL_SERVICE_NAME`,
`OTEL_RESOURCE_ATTRIBUTES`, `OTEL_TRACES_SAMPLER(_ARG)`, `OTEL_BSP_*`.
"""

from __future__ import annotations

import contextlib
import os
from collections.abc import AsyncGenerator, Iterator, Mapping
from dataclasses import replace
from typing import Any, TypeVar, cast

from opentelemetry import trace
from opentelemetry.context import Context
from opentelemetry.sdk.resources import SERVICE_NAME, Resource
from opentelemetry.sdk.trace import TracerProvider
from opentelemetry.sdk.trace.export import (
    BatchSpanProcessor,
    ConsoleSpanExporter,
    SpanExporter,
)
from opentelemetry.trace import SpanKind, Status, StatusCode
from opentelemetry.trace.propagation.tracecontext import TraceContextTextMapPropagator

from worker.contract.trace import TraceContext
from worker.errors import WorkerError
from worker.llm.base import LLMBackend, LLMRequest, StreamItem, TextDelta

__all__ = ["OTelTracing", "exporter", "provider"]

Sink = TypeVar("Sink")

_propagator = TraceContextTextMapPropagator()


def exporter(kind: str) -> SpanExporter:
    """The exporter `tracing.wanted_exporter` chose; OTLP reads its settings itself."""
    if kind == "console":
        return ConsoleSpanExporter()
    # Imported here: it pulls in requests, which the console exporter does not need.
    from opentelemetry.exporter.otlp.proto.http.trace_exporter import OTLPSpanExporter

    return OTLPSpanExporter()  # endpoint, headers, timeout, compression: OTEL_EXPORTER_OTLP_*


def provider(span_exporter: SpanExporter, service_name: str) -> TracerProvider:
    """A provider exporting in batches; OTEL_SERVICE_NAME wins over `service_name`."""
    resource = Resource.create({SERVICE_NAME: os.environ.get("OTEL_SERVICE_NAME", service_name)})
    result = TracerProvider(resource=resource)
    result.add_span_processor(BatchSpanProcessor(span_exporter))
    return result


def _inject(context: Context | None = None) -> TraceContext:
    """The W3C headers of `context` (the current one by default)."""
    carrier: dict[str, str] = {}
    _propagator.inject(carrier, context=context)
    return TraceContext(carrier.get("traceparent"), carrier.get("tracestate"))


class OTelTracing:
    """Spans of turns, LLM calls and publishes, from one `TracerProvider`."""

    def __init__(self, provider: trace.TracerProvider) -> None:
        self._tracer = provider.get_tracer("llm-stream-worker")

    def outbound(self) -> TraceContext | None:
        if not trace.get_current_span().get_span_context().is_valid:
            return None
        return _inject()

    @contextlib.contextmanager
    def turn(
        self, parent: TraceContext, attributes: Mapping[str, Any], name: str
    ) -> Iterator[None]:
        carrier = {
            key: value
            for key, value in (
                ("traceparent", parent.traceparent),
                ("tracestate", parent.tracestate),
            )
            if value
        }
        with self._tracer.start_as_current_span(
            name,
            context=_propagator.extract(carrier),
            kind=SpanKind.INTERNAL,
            attributes=dict(attributes),
        ):
            yield

    def ending(self, attributes: Mapping[str, Any], error: str | None) -> None:
        span = trace.get_current_span()
        span.set_attributes(dict(attributes))
        if error is not None:
            span.set_attribute("error.type", error)
            span.set_status(Status(StatusCode.ERROR, error))

    async def stream(
        self, backend: LLMBackend, request: LLMRequest
    ) -> AsyncGenerator[StreamItem, None]:
        attributes: dict[str, Any] = {
            "gen_ai.operation.name": "chat",
            "gen_ai.provider.name": backend.provider,
            "llm_stream.llm_component": backend.name,
        }
        if backend.model:
            attributes["gen_ai.request.model"] = backend.model
        # Not made current: a generator's context may be entered and left in other tasks.
        span = self._tracer.start_span(
            f"stream {backend.name}", kind=SpanKind.CLIENT, attributes=attributes
        )
        outbound = _inject(trace.set_span_in_context(span))
        first = True
        try:
            async with contextlib.aclosing(
                backend.stream(replace(request, traceparent=outbound.traceparent))
            ) as items:
                async for item in items:
                    if first and isinstance(item, TextDelta):
                        first = False
                        span.add_event("gen_ai.first_chunk")
                    yield item
        except WorkerError as exc:
            span.record_exception(exc)
            span.set_attribute("error.type", exc.code)
            span.set_status(Status(StatusCode.ERROR, exc.code))
            raise
        finally:
            span.end()

    def sink(self, sink: Sink) -> Sink:
        return cast(Sink, _TracedSink(sink, self._tracer))


class _TracedSink:
    """An EventSink whose publishes within a turn are PRODUCER spans of that turn."""

    def __init__(self, sink: Any, tracer: trace.Tracer) -> None:
        self._sink = sink
        self._tracer = tracer

    async def publish(self, publication: Any, *, call_timeout: float | None = None) -> None:
        """Publishes the pipeline's `Publication` (a dataclass) within a PRODUCER span."""
        if not trace.get_current_span().get_span_context().is_valid:
            await self._sink.publish(publication, call_timeout=call_timeout)
            return
        with self._tracer.start_as_current_span(
            f"publish {publication.topic}",
            kind=SpanKind.PRODUCER,
            attributes={
                "messaging.system": "dapr",
                "messaging.operation.name": "publish",
                "messaging.operation.type": "send",
                "messaging.destination.name": publication.topic,
                "llm_stream.pubsub": publication.pubsub,
                "messaging.message.body.size": len(publication.data),
            },
        ):
            # The sidecar's span of this call is a child of the publish span.
            await self._sink.publish(
                replace(publication, traceparent=_inject().traceparent),
                call_timeout=call_timeout,
            )
