"""OpenTelemetry spans of a turn, through the real pipeline, into an in-memory exporter."""

from __future__ import annotations

import contextvars
import json
import logging
from collections.abc import Iterator
from typing import Any

import pytest
from opentelemetry.sdk.trace import ReadableSpan, TracerProvider
from opentelemetry.sdk.trace.export import SimpleSpanProcessor
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter
from opentelemetry.trace import SpanKind, StatusCode

from tests.fakes.handler import fake_handler
from tests.fakes.ports import FakeSink, FakeStateStore, ScriptedBackend
from worker.contract.envelopes import InboundMessage
from worker.contract.trace import TraceContext
from worker.errors import LLMError
from worker.llm.base import ChatMessage, Finish, LLMRequest, StreamItem, TextDelta, Usage
from worker.observability.logs import JsonFormatter, TextFormatter, TraceIdFilter
from worker.observability.otel import OTelTracing
from worker.observability.tracing import (
    bind_trace,
    installed,
    outbound_trace,
    start_tracing,
    traced_sink,
    traced_stream,
    wanted_exporter,
)
from worker.pipeline.outcome import Outcome

TRACE_ID = "0af7651916cd43dd8448eb211c80319c"
PARENT_SPAN = "b7ad6b7169203331"
TRACEPARENT = f"00-{TRACE_ID}-{PARENT_SPAN}-01"
TRACESTATE = "congo=t61rcWkgMzE,rojo=00f067aa0ba902b7"

REPLY: list[StreamItem | Exception] = [
    TextDelta("Hello"),
    TextDelta(" there"),
    Usage(7, 2, 9),
    Finish("length"),
]


@pytest.fixture
def spans() -> Iterator[InMemorySpanExporter]:
    exporter = InMemorySpanExporter()
    provider = TracerProvider()
    provider.add_span_processor(SimpleSpanProcessor(exporter))
    with installed(OTelTracing(provider)):
        yield exporter
    provider.shutdown()


def _delivery(prompt: dict[str, Any], **extensions: str) -> InboundMessage:
    return InboundMessage(
        id="evt-1",
        topic="prompts",
        data=json.dumps(prompt).encode(),
        data_content_type="application/json",
        extensions=extensions,
    )


def _prompt(**fields: Any) -> dict[str, Any]:
    return {
        "messages": [{"role": "user", "content": "Hi"}],
        "context_id": "ctx-1",
        "request_id": "req-1",
        **fields,
    }


async def _answer(
    script: list[StreamItem | Exception], prompt: dict[str, Any], **extensions: str
) -> tuple[FakeSink, ScriptedBackend]:
    sink, backend = FakeSink(), ScriptedBackend(script)
    handler = fake_handler(sink, backend, store=FakeStateStore())
    await handler.handle(_delivery(prompt, **extensions))
    return sink, backend


def _by_name(exporter: InMemorySpanExporter) -> dict[str, list[ReadableSpan]]:
    found: dict[str, list[ReadableSpan]] = {}
    for span in exporter.get_finished_spans():
        found.setdefault(span.name, []).append(span)
    return found


def _hex(span_id: int) -> str:
    return f"{span_id:016x}"


async def test_a_turn_is_a_chat_span_in_the_prompts_trace(spans: InMemorySpanExporter) -> None:
    sink, _ = await _answer(
        REPLY,
        _prompt(temperature=0.3, max_tokens=64),
        traceparent=TRACEPARENT,
        tracestate=TRACESTATE,
    )
    assert sink.types() == ["started", "chunk", "usage", "completed"]
    named = _by_name(spans)
    (turn,) = named["chat scripted-model"]
    context = turn.context
    assert context is not None
    assert f"{context.trace_id:032x}" == TRACE_ID
    assert turn.parent is not None
    assert _hex(turn.parent.span_id) == PARENT_SPAN
    assert turn.parent.is_remote
    assert context.trace_state.to_header() == TRACESTATE
    assert dict(turn.attributes or {}) == {
        "gen_ai.operation.name": "chat",
        "gen_ai.provider.name": "scripted",
        "gen_ai.request.model": "scripted-model",
        "gen_ai.request.temperature": 0.3,
        "gen_ai.request.max_tokens": 64,
        "gen_ai.conversation.id": "ctx-1",
        "gen_ai.usage.input_tokens": 7,
        "gen_ai.usage.output_tokens": 2,
        "gen_ai.response.finish_reasons": ("length",),
        "llm_stream.request_id": "req-1",
        "llm_stream.llm_component": "scripted",
        "llm_stream.status": "completed",
    }
    assert turn.status.status_code is StatusCode.UNSET


async def test_the_llm_call_and_every_publish_are_children_of_the_turn(
    spans: InMemorySpanExporter,
) -> None:
    sink, backend = await _answer(REPLY, _prompt(), traceparent=TRACEPARENT)
    named = _by_name(spans)
    (turn,) = named["chat scripted-model"]
    assert turn.context is not None
    turn_span_id = turn.context.span_id
    (llm,) = named["stream scripted"]
    assert llm.kind is SpanKind.CLIENT
    assert llm.parent is not None
    assert llm.parent.span_id == turn_span_id
    assert [event.name for event in llm.events] == ["gen_ai.first_chunk"]
    # The LLM is called in the LLM span's context (an OpenAI backend sends it as a header).
    assert llm.context is not None
    llm_traceparent = backend.requests[0].traceparent
    assert llm_traceparent == f"00-{TRACE_ID}-{_hex(llm.context.span_id)}-01"
    publishes = named["publish responses"]
    assert len(publishes) == len(sink.published) == 4
    for publish in publishes:
        assert publish.kind is SpanKind.PRODUCER
        assert publish.parent is not None
        assert publish.parent.span_id == turn_span_id
        assert (publish.attributes or {})["messaging.destination.name"] == "responses"
    # The sidecar's span of each publish call is a child of that publish's span.
    assert sink.traceparents == [
        f"00-{TRACE_ID}-{_hex(p.context.span_id)}-01" for p in publishes if p.context
    ]
    # The events carry the turn span's context, so consumers continue under it.
    turn_traceparent = f"00-{TRACE_ID}-{_hex(turn_span_id)}-01"
    assert {p.event["traceparent"] for p in sink.published} == {turn_traceparent}
    assert {p.event["traceid"] for p in sink.published} == {turn_traceparent}


async def test_tracestate_is_carried_onto_the_published_events(
    spans: InMemorySpanExporter,
) -> None:
    sink, _ = await _answer(REPLY, _prompt(), traceparent=TRACEPARENT, tracestate=TRACESTATE)
    assert {p.event["tracestate"] for p in sink.published} == {TRACESTATE}


async def test_without_tracing_the_events_carry_the_prompts_own_context() -> None:
    sink, backend = await _answer(REPLY, _prompt(), traceparent=TRACEPARENT, tracestate=TRACESTATE)
    assert {p.event["traceparent"] for p in sink.published} == {TRACEPARENT}
    assert {p.event["tracestate"] for p in sink.published} == {TRACESTATE}
    assert set(sink.traceparents) == {TRACEPARENT}
    assert backend.requests[0].traceparent == TRACEPARENT


async def test_a_failed_llm_call_marks_both_spans_as_errors(spans: InMemorySpanExporter) -> None:
    sink, _ = await _answer(
        [TextDelta("Hel"), LLMError("upstream said no")], _prompt(), traceparent=TRACEPARENT
    )
    assert sink.types()[-1] == "failed"
    named = _by_name(spans)
    (turn,) = named["chat scripted-model"]
    (llm,) = named["stream scripted"]
    for span in (turn, llm):
        assert span.status.status_code is StatusCode.ERROR
        assert (span.attributes or {})["error.type"] == "llm_error"
    assert "gen_ai.response.finish_reasons" not in (turn.attributes or {})
    assert (turn.attributes or {})["llm_stream.status"] == "failed"


async def test_a_prompt_without_trace_context_starts_a_trace_of_its_own(
    spans: InMemorySpanExporter,
) -> None:
    sink, _ = await _answer(REPLY, _prompt())
    (turn,) = _by_name(spans)["chat scripted-model"]
    assert turn.parent is None
    assert turn.context is not None
    assert {p.event["traceparent"].split("-")[1] for p in sink.published} == {
        f"{turn.context.trace_id:032x}"
    }


async def test_an_invalid_prompt_has_no_span_and_keeps_the_prompts_context(
    spans: InMemorySpanExporter,
) -> None:
    sink = FakeSink()
    handler = fake_handler(sink, ScriptedBackend(REPLY), store=FakeStateStore())
    outcome = await handler.handle(
        _delivery({"messages": [], "context_id": "c", "request_id": "r"}, traceparent=TRACEPARENT)
    )
    assert outcome is Outcome.DROP
    assert spans.get_finished_spans() == ()
    assert [p.event["traceparent"] for p in sink.published] == [TRACEPARENT]


def test_tracing_off_leaves_everything_as_it_is() -> None:
    sink, backend = FakeSink(), ScriptedBackend(REPLY)
    assert traced_sink(sink) is sink
    assert outbound_trace({"traceparent": TRACEPARENT}) == TraceContext(TRACEPARENT, None)
    stream = traced_stream(backend, LLMRequest(messages=[ChatMessage("user", "Hi")]))
    assert "ScriptedBackend.stream " in repr(stream)  # the backend's own generator


@pytest.mark.parametrize(
    ("env", "kind"),
    [
        ({}, None),
        ({"OTEL_EXPORTER_OTLP_ENDPOINT": "http://collector:4318"}, "otlp"),
        ({"OTEL_EXPORTER_OTLP_TRACES_ENDPOINT": "http://c:4318/v1/traces"}, "otlp"),
        ({"OTEL_TRACES_EXPORTER": "otlp"}, "otlp"),
        ({"OTEL_TRACES_EXPORTER": "console"}, "console"),
        ({"OTEL_TRACES_EXPORTER": "none", "OTEL_EXPORTER_OTLP_ENDPOINT": "http://c:4318"}, None),
        ({"OTEL_SDK_DISABLED": "true", "OTEL_EXPORTER_OTLP_ENDPOINT": "http://c:4318"}, None),
        ({"OTEL_TRACES_EXPORTER": "zipkin"}, None),
    ],
)
def test_the_standard_variables_decide_whether_tracing_is_on(
    env: dict[str, str], kind: str | None
) -> None:
    assert wanted_exporter(env)[0] == kind


def test_start_tracing_says_what_it_did() -> None:
    with start_tracing("llm-stream-worker", {}) as how:
        assert how.startswith("tracing off")
        assert traced_sink(FakeSink()).__class__ is FakeSink
    with start_tracing("llm-stream-worker", {"OTEL_TRACES_EXPORTER": "console"}) as how:
        assert how == "tracing on: spans to stdout (OTEL_TRACES_EXPORTER=console)"
        assert traced_sink(FakeSink()).__class__ is not FakeSink
    assert traced_sink(FakeSink()).__class__ is FakeSink


def _log_line(formatter: logging.Formatter, message: InboundMessage) -> str:
    """One line logged while `message` is handled (in a context of its own, as a task)."""

    def log() -> str:
        bind_trace(message.extensions)
        record = logging.makeLogRecord({"name": "worker", "levelname": "INFO", "msg": "turn done"})
        TraceIdFilter().filter(record)
        return formatter.format(record)

    return contextvars.copy_context().run(log)


def test_log_lines_carry_the_trace_id() -> None:
    message = _delivery(_prompt(), traceparent=TRACEPARENT)
    assert json.loads(_log_line(JsonFormatter(), message))["trace_id"] == TRACE_ID
    assert _log_line(TextFormatter(), message).endswith(f"turn done trace_id={TRACE_ID}")
    untraced = _delivery(_prompt())
    assert "trace_id" not in json.loads(_log_line(JsonFormatter(), untraced))
    assert _log_line(TextFormatter(), untraced).endswith("turn done")
