"""Hostile input on the real daprd and Redis: no event kills the worker or loops forever.

Each test sends what once broke the worker (issue: poison pills and hostile input) through
the sidecar, as any Dapr app could, or straight at the app port, as anyone who reaches it
could, and checks the contract's answer: a reply, or a `failed` event and the prompt on
the dead-letter topic, and the worker still serving.
"""

from __future__ import annotations

import asyncio
import json
import uuid
from collections.abc import Awaitable, Callable
from typing import Any

import grpc
import pytest
from dapr.proto.runtime.v1 import appcallback_pb2, appcallback_pb2_grpc

from testbed.components import ComponentSpec, inbound_retries
from testbed.scrape import scrape, series
from testbed.stack import Stack
from tests.fakes.openai_server import FakeOpenAIServer
from tests.integration.contract_checks import assert_turn, reply_text

pytestmark = pytest.mark.dapr

MakeStack = Callable[..., Awaitable[Stack]]
FAST_ECHO = {"WORKER_ECHO__DELAY_SECONDS": "0.002"}
TOKEN = "app-token-" + uuid.uuid4().hex
Status = appcallback_pb2.TopicEventResponse.TopicEventResponseStatus


def _prompt(text: str, **fields: Any) -> dict[str, Any]:
    return {"messages": [{"role": "user", "content": text}], **fields}


def _cloudevent(data: Any, **attributes: str) -> bytes:
    """A structured CloudEvent, published as-is (Dapr keeps its attributes)."""
    event = {
        "specversion": "1.0",
        "id": attributes.pop("id", uuid.uuid4().hex),
        "source": "/hostile",
        "type": "prompt",
        "datacontenttype": "application/json",
        "data": data,
        **attributes,
    }
    return json.dumps(event).encode()


async def _served_after(stack: Stack, request_id: str) -> None:
    """The worker is alive and the next valid prompt is answered in full."""
    await stack.publish(
        _prompt("still here", context_id=f"ctx-{request_id}", request_id=request_id)
    )
    events = await stack.turn(request_id)
    assert_turn(events, request_id=request_id, context_id=f"ctx-{request_id}")
    assert reply_text(events) == "still here"
    assert all(worker.process.poll() is None for worker in stack.workers)


async def _outcomes(stack: Stack, answered: int) -> dict[str, float]:
    """How the worker answered deliveries of prompts, once `answered` were answered.

    Each delivery is answered just after its last event is out, so this waits a moment.
    """
    outcomes: dict[str, float] = {}
    for _ in range(100):
        text = await asyncio.to_thread(scrape, stack.worker.metrics_port)
        outcomes = {
            outcome: series(text, "llm_stream_messages_total", topic="prompts", outcome=outcome)
            for outcome in ("success", "retry", "drop")
            if f'outcome="{outcome}",topic="prompts"' in text
        }
        if sum(outcomes.values()) >= answered:
            break
        await asyncio.sleep(0.1)
    return outcomes


@pytest.mark.parametrize(
    "traceparent",
    [
        "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01\nx-forged: yes",
        "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-é1",
    ],
)
async def test_a_trace_context_that_is_no_trace_is_answered_and_kills_nothing(
    make_stack: MakeStack, traceparent: str
) -> None:
    # It used to travel on as gRPC metadata; grpc refused it and the process exited,
    # on every redelivery, taking every other conversation's ending with it.
    stack = await make_stack(worker_env=FAST_ECHO, extra_components=[inbound_retries()])
    await stack.publish(
        None,
        raw=_cloudevent(
            _prompt("a poisoned trace", context_id="ctx-trace", request_id="req-trace"),
            traceparent=traceparent,
            traceid=traceparent,
        ),
        content_type="application/cloudevents+json",
    )
    events = await stack.turn("req-trace")
    assert_turn(events, request_id="req-trace", context_id="ctx-trace", trace=False)
    assert all("\n" not in str(e.extensions.get("traceparent", "")) for e in events)
    await _served_after(stack, "req-after-trace")
    assert await _outcomes(stack, answered=2) == {"success": 2}


async def test_deep_json_is_dead_lettered_once_not_retried_forever(make_stack: MakeStack) -> None:
    stack = await make_stack(worker_env=FAST_ECHO, extra_components=[inbound_retries()])
    deep = b'{"request_id": "req-deep", "context_id": "ctx-deep", "messages": '
    deep += b"[" * 5000 + b"]" * 5000 + b"}"
    await stack.publish(None, raw=deep)
    events = await stack.wait_for(
        lambda got: (
            any(e.topic == "prompts-deadletter" for e in got)
            and any(e.kind == "failed" for e in got)
        )
    )
    [failed] = [e for e in events if e.kind == "failed"]
    [dead] = [e for e in events if e.topic == "prompts-deadletter"]
    assert failed.data["code"] == "invalid_prompt"
    assert failed.data["message"] == "prompt is not valid JSON: nested too deeply"
    # Unreadable JSON names no ids of its own: the request id is its CloudEvent's.
    assert failed.data["request_id"] == dead.id
    await _served_after(stack, "req-after-deep")
    assert await _outcomes(stack, answered=2) == {"drop": 1, "success": 1}


async def test_a_prompt_over_4_mib_is_dead_lettered_not_retried_forever(
    make_stack: MakeStack,
) -> None:
    # gRPC's default 4 MiB receive limit refused it before the worker's own size check,
    # and the sidecar redelivered it without end.
    stack = await make_stack(
        worker_env=FAST_ECHO,
        extra_components=[inbound_retries()],
        sidecar_args=["--max-body-size", "16Mi"],
    )
    big = _prompt("x" * (5 * 1024 * 1024), context_id="ctx-big", request_id="req-big")
    await stack.publish(big)
    events = await stack.wait_for(
        lambda got: (
            any(e.topic == "prompts-deadletter" for e in got)
            and any(e.kind == "failed" for e in got)
        ),
        timeout=60,
    )
    [failed] = [e for e in events if e.kind == "failed"]
    assert failed.data["code"] == "invalid_prompt"
    assert failed.data["message"].endswith("bytes; the limit is 262144")
    await _served_after(stack, "req-after-big")
    assert await _outcomes(stack, answered=2) == {"drop": 1, "success": 1}


async def test_the_app_port_answers_only_the_sidecar_that_holds_the_token(
    make_stack: MakeStack,
) -> None:
    stack = await make_stack(worker_env=FAST_ECHO, app_token=TOKEN)
    # Through the sidecar, which presents APP_API_TOKEN: served as ever.
    await _served_after(stack, "req-through-sidecar")
    request = appcallback_pb2.TopicEventRequest(
        id="direct",
        topic="prompts",
        pubsub_name="pubsub",
        data=json.dumps(_prompt("free tokens?", context_id="ctx-x", request_id="req-x")).encode(),
        data_content_type="application/json",
    )
    async with grpc.aio.insecure_channel(f"127.0.0.1:{stack.worker.app_port}") as channel:
        stub = appcallback_pb2_grpc.AppCallbackStub(channel)
        for metadata in ((), (("dapr-api-token", "guess"),)):
            with pytest.raises(grpc.aio.AioRpcError) as refused:
                await stub.OnTopicEvent(request, metadata=metadata, timeout=10)
            assert refused.value.code() == grpc.StatusCode.UNAUTHENTICATED
        answer = await stub.OnTopicEvent(request, metadata=(("dapr-api-token", TOKEN),), timeout=30)
        assert answer.status == Status.SUCCESS  # the token is the whole difference
    await _served_after(stack, "req-after-direct")
    answered = [e for e in stack.received if e.data.get("request_id") == "req-x"]
    assert [e.kind for e in answered if e.kind != "chunk"] == ["started", "usage", "completed"]


async def test_a_dapr_conversation_component_never_receives_unscrubbed_pii(
    make_stack: MakeStack,
) -> None:
    # Dapr 1.18 scrubs a conversation request's inputs only when each input asks; its
    # request-level scrub_pii covers the output. The provider records what it receives.
    email, phone = "bob.jones@example.org", "+1 415 555 0132"
    async with FakeOpenAIServer(["Write to ", "ada@example.com", " today"]) as llm:
        stack = await make_stack(
            worker_env={**FAST_ECHO, "WORKER_CONVERSATION_COMPONENTS": '["dapr-openai"]'},
            extra_components=[
                ComponentSpec(
                    "dapr-openai",
                    "conversation.openai",
                    {
                        "key": "sk-test-conversation",
                        "model": "fake-model",
                        "endpoint": llm.base_url,
                    },
                )
            ],
        )
        # A turn that did not ask for scrubbing: stored in the history as it was.
        await stack.publish(
            _prompt(
                f"I am {email}",
                context_id="ctx-pii",
                request_id="req-plain",
                llm_component="dapr-openai",
            )
        )
        await stack.turn("req-plain")
        await stack.publish(
            _prompt(
                f"Call me on {phone}, or mail {email}",
                context_id="ctx-pii",
                request_id="req-scrubbed",
                llm_component="dapr-openai",
                scrub_pii=True,
            )
        )
        events = await stack.turn("req-scrubbed")
    assert_turn(events, request_id="req-scrubbed", context_id="ctx-pii")
    assert len(llm.requests) == 2
    seen = json.dumps(llm.requests[1]["json"])
    assert email not in seen
    assert "555 0132" not in seen
    assert "<EMAIL_ADDRESS>" in seen
    # The reply is Dapr's to scrub, and it did.
    assert reply_text(events) == "Write to <EMAIL_ADDRESS> today"


async def test_max_tokens_for_a_dapr_conversation_component_is_refused_by_name(
    make_stack: MakeStack,
) -> None:
    stack = await make_stack(
        worker_env={**FAST_ECHO, "WORKER_CONVERSATION_COMPONENTS": '["dapr-echo"]'}
    )
    await stack.publish(
        _prompt(
            "hi", context_id="ctx-mt", request_id="req-mt", llm_component="dapr-echo", max_tokens=10
        )
    )
    events = await stack.wait_for(
        lambda got: (
            any(e.topic == "prompts-deadletter" for e in got)
            and any(e.kind == "failed" for e in got)
        )
    )
    [failed] = [e for e in events if e.kind == "failed"]
    assert failed.data["request_id"] == "req-mt"
    assert failed.data["code"] == "invalid_prompt"
    assert failed.data["message"].startswith("max_tokens: LLM component 'dapr-echo' cannot")
