"""Metrics and traces of a real turn: the worker's /metrics and the events' trace context."""

from __future__ import annotations

import asyncio
import json
from collections.abc import Awaitable, Callable

import pytest

from testbed.scrape import scrape, series
from testbed.stack import TRACE_ID, Stack
from tests.fakes.openai_server import FakeOpenAIServer
from tests.fakes.otlp_receiver import OTLPReceiver

pytestmark = pytest.mark.dapr

MakeStack = Callable[..., Awaitable[Stack]]


async def test_metrics_and_trace_of_a_turn(make_stack: MakeStack) -> None:
    tokens = [f"tok{i} " for i in range(12)]
    async with FakeOpenAIServer(tokens, first_token_delay=0.05, token_interval=0.01) as llm:
        stack = await make_stack(
            worker_env={
                "WORKER_OPENAI": json.dumps(
                    [{"name": "openai", "base_url": llm.base_url, "model": "fake-model"}]
                ),
                "DAPR_LLM_COMPONENT_DEFAULT": "openai",
            }
        )
        await stack.publish(
            {
                "messages": [{"role": "user", "content": "three little words"}],
                "context_id": "ctx-obs",
                "request_id": "obs",
            }
        )
        events = await stack.turn("obs")
    text = ""
    for _ in range(50):  # the delivery is answered just after its terminal event is out
        text = await asyncio.to_thread(scrape, stack.worker.metrics_port)
        if 'llm_stream_messages_total{outcome="success",topic="prompts"}' in text:
            break
        await asyncio.sleep(0.1)

    labels = {
        "gen_ai_operation_name": "chat",
        "gen_ai_provider_name": "openai",
        "gen_ai_request_model": "fake-model",
        "llm_component": "openai",
    }
    ttfc_count = series(text, "gen_ai_client_operation_time_to_first_chunk_seconds_count", **labels)
    ttfc_sum = series(text, "gen_ai_client_operation_time_to_first_chunk_seconds_sum", **labels)
    assert ttfc_count == 1
    # From the request to the first chunk received: at least the source's own delay.
    assert 0.05 <= ttfc_sum < 5
    output = series(text, "gen_ai_client_token_usage_sum", gen_ai_token_type="output", **labels)
    assert output == len(tokens)  # the provider's figure
    assert series(text, "gen_ai_client_token_usage_sum", gen_ai_token_type="input") == 3
    duration = series(
        text, "gen_ai_client_operation_duration_seconds_count", error_type="", **labels
    )
    assert duration == 1
    chunks = sum(e.kind == "chunk" for e in events)
    publish_count = series(text, "llm_stream_publish_latency_seconds_count", event_type="chunk")
    publish_sum = series(text, "llm_stream_publish_latency_seconds_sum", event_type="chunk")
    assert publish_count == chunks
    assert 0 < publish_sum / publish_count < 1
    deltas = series(text, "llm_stream_coalesced_deltas_per_chunk_sum")
    assert deltas == len(tokens)
    assert series(text, "llm_stream_messages_total", topic="prompts", outcome="success") == 1
    assert series(text, "llm_stream_in_flight_streams") == 0

    # The prompt's trace: on every published event, and on the call to the LLM.
    assert {e.extensions["traceparent"].split("-")[1] for e in events} == {TRACE_ID}
    assert llm.requests[0]["headers"]["traceparent"].split("-")[1] == TRACE_ID
    # Logs name ids and counts, never the prompt or reply text.
    assert "three little words" not in stack.worker.logs()
    assert "tok3" not in stack.worker.logs()


async def test_the_worker_exports_its_spans_under_the_publishers_trace(
    make_stack: MakeStack,
) -> None:
    """With the [otel] extra and OTEL_* variables: the spans reach an OTLP/HTTP receiver."""
    tracestate = "congo=t61rcWkgMzE"
    tokens = ["one ", "two ", "three"]
    async with OTLPReceiver() as receiver, FakeOpenAIServer(tokens) as llm:
        stack = await make_stack(
            worker_env={
                "WORKER_OPENAI": json.dumps(
                    [{"name": "openai", "base_url": llm.base_url, "model": "fake-model"}]
                ),
                "DAPR_LLM_COMPONENT_DEFAULT": "openai",
                "OTEL_EXPORTER_OTLP_ENDPOINT": receiver.endpoint,
                "OTEL_SERVICE_NAME": "llm-stream-worker-test",
                "OTEL_BSP_SCHEDULE_DELAY": "100",  # export within 0.1 s, not 5 s
            }
        )
        await stack.publish(
            {
                "messages": [{"role": "user", "content": "count to three"}],
                "context_id": "ctx-otel",
                "request_id": "otel",
                "temperature": 0.5,
                "max_tokens": 50,
            },
            # Dapr 1.18.3 drops a `tracestate` gRPC header (the result of WithTraceState in
            # diagnostics/grpc_tracing.go is discarded); this override reaches the envelope.
            metadata={"cloudevent.tracestate": tracestate},
        )
        events = await stack.turn("otel")
        (turn,) = await receiver.wait_for("chat fake-model")
        (llm_call,) = await receiver.wait_for("stream openai")
        publishes = await receiver.wait_for("publish responses", count=len(events))

    assert "tracing on: OTLP/HTTP to " + receiver.endpoint in stack.worker.logs()
    assert turn.service == "llm-stream-worker-test"
    # The publisher's trace, continued through its sidecar and the worker's.
    assert turn.trace_id == TRACE_ID
    assert turn.parent_span_id  # the worker sidecar's delivery span
    assert turn.trace_state == tracestate
    assert turn.attributes == {
        "gen_ai.operation.name": "chat",
        "gen_ai.provider.name": "openai",
        "gen_ai.request.model": "fake-model",
        "gen_ai.request.temperature": 0.5,
        "gen_ai.request.max_tokens": 50,
        "gen_ai.conversation.id": "ctx-otel",
        "gen_ai.usage.input_tokens": 3,
        "gen_ai.usage.output_tokens": len(tokens),
        "gen_ai.response.finish_reasons": ("stop",),
        "llm_stream.request_id": "otel",
        "llm_stream.llm_component": "openai",
        "llm_stream.status": "completed",
    }
    for child in (llm_call, *publishes):
        assert (child.trace_id, child.parent_span_id) == (TRACE_ID, turn.span_id)
    # The LLM was called in the LLM span's context.
    header = llm.requests[0]["headers"]["traceparent"]
    assert header.split("-")[1:3] == [TRACE_ID, llm_call.span_id]
    # Consumers get events in the worker's turn span, with the publisher's tracestate.
    assert {e.extensions["traceparent"].split("-")[2] for e in events} == {turn.span_id}
    assert {e.extensions["tracestate"] for e in events} == {tracestate}
    # Every log line of the turn names its trace.
    turn_lines = [line for line in stack.worker.logs().splitlines() if "request otel " in line]
    assert turn_lines
    assert all(line.endswith(f"trace_id={TRACE_ID}") for line in turn_lines)
