"""Metrics and traces of a real turn: the worker's /metrics and the events' trace context."""

from __future__ import annotations

import asyncio
import json
from collections.abc import Awaitable, Callable

import pytest

from tests.fakes.openai_server import FakeOpenAIServer
from tests.harness.scrape import scrape, series
from tests.harness.stack import TRACE_ID, Stack

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

    labels = {"gen_ai_request_model": "fake-model", "llm_component": "openai"}
    ttfc_count = series(text, "gen_ai_client_operation_time_to_first_chunk_seconds_count", **labels)
    ttfc_sum = series(text, "gen_ai_client_operation_time_to_first_chunk_seconds_sum", **labels)
    assert ttfc_count == 1
    assert 0.05 <= ttfc_sum < 5  # at least the source's own time to first token
    output = series(text, "gen_ai_client_token_usage_sum", gen_ai_token_type="output", **labels)
    assert output == len(tokens)  # the provider's figure
    assert series(text, "gen_ai_client_token_usage_sum", gen_ai_token_type="input") == 3
    duration = series(
        text, "gen_ai_client_operation_duration_seconds_count", outcome="completed", **labels
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
