"""Prompts in, ordered CloudEvents out: the worker on the real daprd and Redis."""

from __future__ import annotations

import asyncio
import json
from collections.abc import Awaitable, Callable
from typing import Any

import grpc
import pytest
from dapr.proto.runtime.v1 import appcallback_pb2_grpc
from google.protobuf import empty_pb2

from testbed.brokers import BOTH_BROKERS, Broker
from testbed.components import http_endpoint
from testbed.stack import Stack
from tests.fakes.faulty_sidecar import FaultySidecar
from tests.fakes.openai_server import FakeOpenAIServer
from tests.integration.contract_checks import assert_turn, reply_text

pytestmark = [pytest.mark.dapr, BOTH_BROKERS]

MakeStack = Callable[..., Awaitable[Stack]]
FAST_ECHO = {"WORKER_ECHO__DELAY_SECONDS": "0.005"}


def _prompt(text: str, **fields: Any) -> dict[str, Any]:
    return {"messages": [{"role": "user", "content": text}], **fields}


async def test_echo_prompt_streams_the_contract_sequence(make_stack: MakeStack) -> None:
    stack = await make_stack(worker_env=FAST_ECHO)
    text = "The quick brown fox jumps over the lazy dog"
    await stack.publish(
        _prompt(text, context_id="ctx-echo", request_id="req-echo", metadata={"user": "u1"})
    )
    events = await stack.turn("req-echo")

    assert_turn(events, request_id="req-echo", context_id="ctx-echo")
    assert reply_text(events) == text
    started = events[0].data
    assert started["llm_component"] == "echo"
    assert started["model"] == "echo"
    assert started["metadata"] == {"user": "u1"}
    assert started["restarted"] is False
    assert events[-2].data["source"] == "estimated"
    assert events[-1].data["finish_reason"] == "stop"


async def test_default_request_and_context_ids(make_stack: MakeStack) -> None:
    stack = await make_stack(worker_env=FAST_ECHO)
    await stack.publish(_prompt("no ids given"))
    events = await stack.wait_for(lambda got: any(e.kind == "completed" for e in got))
    request_id = events[0].data["request_id"]
    context_id = events[0].data["context_id"]
    # The request id defaults to the prompt CloudEvent's id; the context id is assigned.
    assert context_id.startswith("ctx-")
    assert_turn(stack.of(request_id), request_id=request_id, context_id=context_id)


async def test_dapr_conversation_component(make_stack: MakeStack) -> None:
    stack = await make_stack(
        worker_env={**FAST_ECHO, "WORKER_CONVERSATION_COMPONENTS": '["dapr-echo"]'}
    )
    await stack.publish(
        _prompt(
            "Hello through the Dapr conversation API",
            context_id="ctx-conv",
            request_id="req-conv",
            llm_component="dapr-echo",
            temperature=0.2,
        )
    )
    events = await stack.turn("req-conv")
    assert_turn(events, request_id="req-conv", context_id="ctx-conv")
    # The whole reply arrives at once: one chunk.
    assert [e.kind for e in events].count("chunk") == 1
    assert reply_text(events) == "Hello through the Dapr conversation API"
    assert events[0].data["llm_component"] == "dapr-echo"


async def test_openai_compatible_server_called_directly(make_stack: MakeStack) -> None:
    tokens = ["Once", " upon", " a", " time", ",", " the", " end", "."]
    async with FakeOpenAIServer(tokens, token_interval=0.01) as llm:
        stack = await make_stack(
            worker_env={
                "WORKER_OPENAI": json.dumps(
                    [
                        {
                            "name": "openai",
                            "base_url": llm.base_url,
                            "model": "fake-model",
                            "api_key": "sk-test-direct",
                        }
                    ]
                )
            }
        )
        await stack.publish(
            _prompt(
                "Tell me a story",
                context_id="ctx-oa",
                request_id="req-oa",
                llm_component="openai",
                temperature=0.3,
                max_tokens=40,
            )
        )
        events = await stack.turn("req-oa")
    assert_turn(events, request_id="req-oa", context_id="ctx-oa")
    assert reply_text(events) == "".join(tokens)
    usage = events[-2].data
    assert usage["source"] == "provider"
    assert usage["completion_tokens"] == len(tokens)
    body = llm.requests[0]["json"]
    assert body["stream"] is True
    assert body["stream_options"] == {"include_usage": True}
    assert body["temperature"] == 0.3
    assert body["max_tokens"] == 40
    assert llm.requests[0]["headers"]["Authorization"] == "Bearer sk-test-direct"
    assert "sk-test-direct" not in stack.worker.logs()


async def test_openai_compatible_server_through_a_dapr_http_endpoint(
    make_stack: MakeStack,
) -> None:
    tokens = [f"word{i} " for i in range(12)]
    async with FakeOpenAIServer(tokens, token_interval=0.01) as llm:
        origin = llm.base_url.removesuffix("/v1")
        stack = await make_stack(
            # The sidecar adds the key: the worker never sees it.
            extra_components=[http_endpoint("llm", origin, Authorization="Bearer sk-in-dapr")],
            worker_env=lambda http_port: {
                "WORKER_OPENAI": json.dumps(
                    [
                        {
                            "name": "via-dapr",
                            "base_url": f"http://127.0.0.1:{http_port}/v1.0/invoke/llm/method/v1",
                            "model": "fake-model",
                        }
                    ]
                ),
                "DAPR_LLM_COMPONENT_DEFAULT": "via-dapr",
            },
        )
        await stack.publish(_prompt("Hi", context_id="ctx-ep", request_id="req-ep"))
        events = await stack.turn("req-ep")
    assert_turn(events, request_id="req-ep", context_id="ctx-ep")
    assert reply_text(events) == "".join(tokens)
    assert events[0].data["llm_component"] == "via-dapr"
    assert llm.requests[0]["headers"]["Authorization"] == "Bearer sk-in-dapr"
    # Streamed through the sidecar, not buffered: several chunks, not one.
    assert [e.kind for e in events].count("chunk") > 1


async def test_context_continuity_across_turns(make_stack: MakeStack) -> None:
    async with FakeOpenAIServer(["Nice", " to", " meet", " you"]) as llm:
        stack = await make_stack(
            worker_env={
                "WORKER_OPENAI": json.dumps(
                    [{"name": "openai", "base_url": llm.base_url, "model": "m"}]
                ),
                "DAPR_LLM_COMPONENT_DEFAULT": "openai",
            }
        )
        await stack.publish(_prompt("I am Ada", context_id="ctx-h", request_id="h1"))
        await stack.turn("h1")
        await stack.publish(_prompt("Who am I?", context_id="ctx-h", request_id="h2"))
        await stack.turn("h2")
        await stack.publish(
            _prompt("Fresh start", context_id="ctx-h", request_id="h3", history=False)
        )
        await stack.turn("h3")
    second = llm.requests[1]["json"]["messages"]
    assert second == [
        {"role": "user", "content": "I am Ada"},
        {"role": "assistant", "content": "Nice to meet you"},
        {"role": "user", "content": "Who am I?"},
    ]
    assert llm.requests[2]["json"]["messages"] == [{"role": "user", "content": "Fresh start"}]


async def test_scrub_pii_in_prompt_and_in_a_split_reply(make_stack: MakeStack) -> None:
    # The e-mail address is split across three tokens of the reply.
    tokens = ["Write to ", "ada.lovel", "ace@exam", "ple.com today"]
    async with FakeOpenAIServer(tokens) as llm:
        stack = await make_stack(
            worker_env={
                "WORKER_OPENAI": json.dumps(
                    [{"name": "openai", "base_url": llm.base_url, "model": "m"}]
                ),
                "DAPR_LLM_COMPONENT_DEFAULT": "openai",
            }
        )
        await stack.publish(
            _prompt(
                "My card is 4111 1111 1111 1111, call 555-123-4567",
                context_id="ctx-pii",
                request_id="pii",
                scrubPII=True,
            )
        )
        events = await stack.turn("pii")
    assert_turn(events, request_id="pii", context_id="ctx-pii")
    reply = reply_text(events)
    assert "@" not in reply
    assert reply == "Write to <EMAIL_ADDRESS> today"
    sent = llm.requests[0]["json"]["messages"][0]["content"]
    assert "4111" not in sent
    assert "555-123-4567" not in sent


async def test_invalid_prompts_are_dead_lettered_with_a_failed_event(
    make_stack: MakeStack,
) -> None:
    stack = await make_stack(worker_env=FAST_ECHO)
    bad_role = _prompt("x", context_id="ctx-bad", request_id="bad-role")
    bad_role["messages"][0]["role"] = "wizard"
    await stack.publish(bad_role)
    await stack.publish(None, raw=b"this is not json", content_type="text/plain")
    await stack.publish(
        _prompt("x", context_id="ctx-bad", request_id="bad-topic", reply_topic="not-allowed")
    )

    def settled(events: list[Any]) -> bool:
        dead = [e for e in events if e.topic == "prompts-deadletter"]
        failed = [e for e in events if e.kind == "failed"]
        return len(dead) >= 3 and len(failed) >= 3

    events = await stack.wait_for(settled)
    failed = {e.data["request_id"]: e.data for e in events if e.kind == "failed"}
    assert failed["bad-role"]["code"] == "invalid_prompt"
    assert failed["bad-role"]["message"].startswith("messages.0.role")
    assert failed["bad-role"]["retryable"] is False
    assert failed["bad-topic"]["message"].startswith("reply_topic")
    not_json = [d for r, d in failed.items() if r not in {"bad-role", "bad-topic"}]
    assert len(not_json) == 1
    assert "not valid JSON" in not_json[0]["message"]
    # The prompts themselves land on the dead-letter topic, nothing lost.
    dead = [e for e in events if e.topic == "prompts-deadletter"]
    dead_ids = {e.data.get("request_id") for e in dead if e.data}
    assert {"bad-role", "bad-topic"} <= dead_ids
    assert "rejected" in stack.worker.logs() or "invalid_prompt" in stack.worker.logs()
    # Each failed event is alone: no started, no usage for a prompt never begun.
    for request_id in ("bad-role", "bad-topic"):
        assert [e.kind for e in stack.of(request_id)] == ["failed"]


async def test_unknown_component_fails_and_dead_letters(make_stack: MakeStack) -> None:
    stack = await make_stack(worker_env=FAST_ECHO)
    await stack.publish(_prompt("x", context_id="c", request_id="unk", llm_component="gpt-9"))
    events = await stack.wait_for(
        lambda got: (
            any(e.topic == "prompts-deadletter" for e in got)
            and any(e.kind == "failed" for e in got)
        )
    )
    failed = next(e.data for e in events if e.kind == "failed")
    assert failed["code"] == "unknown_component"
    assert "gpt-9" in failed["message"]


async def test_sigterm_finishes_the_stream_then_exits(make_stack: MakeStack) -> None:
    stack = await make_stack(
        worker_env={"WORKER_ECHO__DELAY_SECONDS": "0.05", "WORKER_SHUTDOWN_GRACE_SECONDS": "20"}
    )
    words = " ".join(f"w{i}" for i in range(40))  # about two seconds of streaming
    await stack.publish(_prompt(words, context_id="ctx-term", request_id="term"))
    await stack.wait_for(lambda got: any(e.kind == "chunk" for e in got))
    exit_code = await asyncio.to_thread(stack.worker.terminate)
    events = await stack.turn("term")
    assert exit_code == 0
    assert_turn(events, request_id="term", context_id="ctx-term")
    assert reply_text(events) == words


# The worker publishes over daprd's HTTP API, or its gRPC API: both must survive refusals.
PUBLISH_PROTOCOLS = pytest.mark.parametrize("publish_protocol", ["http", "grpc"])


async def _behind_proxy(make_stack: MakeStack, proxy: FaultySidecar, **kwargs: Any) -> Stack:
    """A stack whose worker reaches its sidecar, on both ports, only through `proxy`."""
    stack = await make_stack(
        sidecar_port_for_worker=lambda _: proxy.grpc_port,
        sidecar_http_port_for_worker=lambda _: proxy.http_port,
        **kwargs,
    )
    await proxy.start(stack.worker_sidecar.grpc_port, stack.worker_sidecar.http_port)
    return stack


@PUBLISH_PROTOCOLS
async def test_a_refused_publish_is_retried_and_nothing_is_lost(
    make_stack: MakeStack, publish_protocol: str
) -> None:
    # Publishes 2 and 3 (the first chunk, then its retry) are refused by the "sidecar".
    proxy = FaultySidecar(fail=lambda n: n in (2, 3))
    stack = await _behind_proxy(
        make_stack,
        proxy,
        worker_env={**FAST_ECHO, "WORKER_PUBLISH_PROTOCOL": publish_protocol},
    )
    try:
        await stack.publish(_prompt("one two three four", context_id="ctx-r", request_id="r"))
        events = await stack.turn("r")
    finally:
        await proxy.stop()
    assert set(proxy.publish_calls) == {publish_protocol}
    assert proxy.refused == 2
    assert_turn(events, request_id="r", context_id="ctx-r")
    assert reply_text(events) == "one two three four"
    assert "retrying" in stack.worker.logs()


@PUBLISH_PROTOCOLS
async def test_concurrent_turns_share_bulk_publishes_and_refused_events_are_retried(
    make_stack: MakeStack, publish_protocol: str
) -> None:
    # One publish call out at a time, so that the turns' events queue and leave in bulk;
    # every fifth bulk-published event is refused by the "sidecar" and must be retried.
    proxy = FaultySidecar(fail=lambda n: False, fail_entry=lambda n: n % 5 == 0)
    stack = await _behind_proxy(
        make_stack,
        proxy,
        worker_env={
            **FAST_ECHO,
            "WORKER_PUBLISH_MAX_IN_FLIGHT": "1",
            "WORKER_PUBLISH_PROTOCOL": publish_protocol,
        },
    )
    texts = {f"b{i}": _words_text(12 + i % 5) for i in range(24)}
    try:
        await asyncio.gather(
            *(
                stack.publish(_prompt(text, context_id=f"ctx-{rid}", request_id=rid))
                for rid, text in texts.items()
            )
        )
        turns = {rid: await stack.turn(rid) for rid in texts}
    finally:
        await proxy.stop()
    assert set(proxy.publish_calls) == {publish_protocol}
    assert proxy.bulk_calls > 0
    assert proxy.refused_entries > 0
    for rid, events in turns.items():
        assert_turn(events, request_id=rid, context_id=f"ctx-{rid}")
        assert reply_text(events) == texts[rid]


async def test_health_checks_answer_while_hundreds_of_streams_are_in_flight(
    make_stack: MakeStack, broker: Broker
) -> None:
    # The stock threaded App would have all ten threads streaming, none for the check.
    streams = 250
    stack = await make_stack(
        # The Redis component itself delivers at most `concurrency` messages at a time.
        pubsub_metadata={
            "redis": {"concurrency": str(streams + 50), "queueDepth": str(streams + 50)}
        },
        worker_env={"WORKER_ECHO__DELAY_SECONDS": "0.2", **_whole_burst_in_bulk(broker, streams)},
    )
    text = _words_text(30)  # about six seconds per stream
    await asyncio.gather(
        *(
            stack.publish(
                _prompt(text, context_id=f"ctx-h{i}", request_id=f"h{i}"),
                # Kafka: all in one partition, handed over as one bulk batch.
                metadata={"partitionNumber": "0"},
            )
            for i in range(streams)
        )
    )
    await stack.wait_for(lambda got: sum(e.kind == "started" for e in got) >= 200, timeout=30)
    in_flight = {e.data["request_id"] for e in stack.received if e.kind == "started"} - {
        e.data["request_id"] for e in stack.received if e.kind == "completed"
    }
    assert len(in_flight) >= 200
    async with grpc.aio.insecure_channel(f"127.0.0.1:{stack.worker.app_port}") as channel:
        stub = appcallback_pb2_grpc.AppCallbackHealthCheckStub(channel)
        await stub.HealthCheck(empty_pb2.Empty(), timeout=2)
    await stack.wait_for(lambda got: sum(e.kind == "completed" for e in got) >= streams, timeout=60)


def _whole_burst_in_bulk(broker: Broker, streams: int) -> dict[str, str]:
    """On Kafka, hundreds in flight at once only in bulk: one batch, whose window takes
    the whole burst (Dapr runs a replica's batches one at a time)."""
    if broker.name != "kafka":
        return {}
    return {
        "WORKER_BULK_SUBSCRIBE__ENABLED": "true",
        "WORKER_BULK_SUBSCRIBE__MAX_AWAIT_MS": "3000",
        "WORKER_BULK_SUBSCRIBE__MAX_MESSAGES": str(streams),
    }


def _words_text(n: int) -> str:
    return " ".join(f"w{i}" for i in range(n))
