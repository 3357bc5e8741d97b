"""Delivery guarantees on the real daprd and Redis: duplicates, crashes, order, cancellation."""

from __future__ import annotations

import asyncio
import json
from collections.abc import Awaitable, Callable
from typing import Any

import pytest

from testbed.brokers import BOTH_BROKERS, Broker
from testbed.components import inbound_retries
from testbed.stack import Received, Stack
from tests.fakes.openai_server import FakeOpenAIServer
from tests.integration.contract_checks import assert_turn, reply_text

pytestmark = [pytest.mark.dapr, BOTH_BROKERS]

MakeStack = Callable[..., Awaitable[Stack]]

# Redis reclaims a message unacknowledged for 2 s: shorter than the streams below.
# Bare milliseconds: components-contrib ignores "2s" and keeps its 60 s default.
# (Kafka needs no such knob: its sidecar redelivers a message the app failed to answer.)
QUICK_RECLAIM = {"processingTimeout": "2000", "redeliverInterval": "500"}
LEASES = {"WORKER_LEASE_SECONDS": "3"}


def _prompt(text: str, **fields: Any) -> dict[str, Any]:
    return {"messages": [{"role": "user", "content": text}], **fields}


def _words(n: int) -> str:
    return " ".join(f"w{i}" for i in range(n))


def _completed(stack: Stack, request_id: str) -> list[Received]:
    return [e for e in stack.of(request_id) if e.kind == "completed"]


async def test_the_same_prompt_published_twice_gets_one_reply(make_stack: MakeStack) -> None:
    stack = await make_stack(worker_env={"WORKER_ECHO__DELAY_SECONDS": "0.01", **LEASES})
    prompt = _prompt(_words(10), context_id="ctx-dup", request_id="dup")
    await stack.publish(prompt)
    await stack.publish(prompt)
    events = await stack.turn("dup")
    await asyncio.sleep(2)  # room for a second reply, were one coming
    events = stack.of("dup")
    assert_turn(events, request_id="dup", context_id="ctx-dup")
    assert "done already" in stack.worker.logs()


async def test_a_duplicate_arriving_while_the_original_streams_on_another_replica_waits(
    make_stack: MakeStack,
) -> None:
    # What a reclaimed message looks like to the workers: the same request id delivered
    # again while its first delivery is still streaming, here to the other replica.
    async with FakeOpenAIServer([f"t{i} " for i in range(40)], token_interval=0.05) as llm:
        stack = await make_stack(
            replicas=2,
            worker_env={
                **LEASES,
                "WORKER_OPENAI": json.dumps(
                    [{"name": "openai", "base_url": llm.base_url, "model": "m"}]
                ),
                "DAPR_LLM_COMPONENT_DEFAULT": "openai",
            },
        )
        prompt = _prompt("go", context_id="ctx-re", request_id="re")
        for n in range(4):
            # On Kafka, over every partition, so that both replicas get a copy.
            await stack.publish(prompt, metadata={"partitionNumber": str(n % 3)})
        await stack.turn("re", timeout=30)
        await asyncio.sleep(2)
    assert len(llm.requests) == 1
    logs = stack.worker_logs()
    assert logs.count("delivery of") >= 4
    assert "waits for context ctx-re" in logs
    assert_turn(stack.of("re"), request_id="re", context_id="ctx-re")
    assert reply_text(stack.of("re")) == "".join(f"t{i} " for i in range(40))


async def test_a_worker_killed_mid_stream_is_completed_as_attempt_two(
    make_stack: MakeStack, broker: Broker
) -> None:
    stack = await make_stack(
        pubsub_metadata={"redis": QUICK_RECLAIM},
        extra_components=[inbound_retries(*broker.prompt_pubsubs)],
        worker_env={"WORKER_ECHO__DELAY_SECONDS": "0.05", **LEASES},
    )
    text = _words(40)
    await stack.publish(_prompt(text, context_id="ctx-kill", request_id="kill"))
    await stack.wait_for(lambda got: sum(e.kind == "chunk" for e in got) >= 3)
    stack.worker.kill()  # SIGKILL: no goodbye, the lease just stops being renewed
    await stack.restart_worker()
    await stack.wait_for(
        lambda got: any(e.kind == "completed" and e.data["attempt"] == 2 for e in got),
        timeout=40,
    )
    first = [e for e in stack.of("kill") if e.data["attempt"] == 1]
    second = [e for e in stack.of("kill") if e.data["attempt"] == 2]
    assert first[0].kind == "started"
    assert all(e.kind not in {"completed", "failed", "cancelled"} for e in first)
    assert_turn(second, request_id="kill", context_id="ctx-kill", attempt=2)
    assert second[0].data["restarted"] is True
    assert reply_text(second) == text


async def test_two_prompts_of_one_context_do_not_interleave_across_two_workers(
    make_stack: MakeStack,
) -> None:
    stack = await make_stack(
        replicas=2, worker_env={"WORKER_ECHO__DELAY_SECONDS": "0.02", **LEASES}
    )
    ids = [f"turn{i}" for i in range(4)]
    for n, request_id in enumerate(ids):
        # On Kafka, one conversation spread over every partition (as a publisher without
        # partitionKey may do), so both replicas get some of it. Redis ignores the key.
        await stack.publish(
            _prompt(_words(15), context_id="ctx-one", request_id=request_id),
            metadata={"partitionNumber": str(n % 3)},
        )
    await stack.wait_for(
        lambda got: sum(e.kind == "completed" for e in got) == len(ids), timeout=60
    )
    order = [e.data["request_id"] for e in stack.received if e.topic == "responses"]
    blocks = [r for i, r in enumerate(order) if i == 0 or order[i - 1] != r]
    assert sorted(blocks) == ids, f"interleaved: {blocks}"
    for request_id in ids:
        assert_turn(stack.of(request_id), request_id=request_id, context_id="ctx-one")
    # Both replicas took part: the exclusion held across processes.
    assert all("completed" in worker.logs() for worker in stack.workers)


async def test_cancel_mid_stream_closes_the_llm_call_and_ends_with_usage_then_cancelled(
    make_stack: MakeStack,
) -> None:
    async with FakeOpenAIServer([f"t{i} " for i in range(200)], token_interval=0.05) as llm:
        stack = await make_stack(
            worker_env={
                **LEASES,
                "WORKER_OPENAI": json.dumps(
                    [{"name": "openai", "base_url": llm.base_url, "model": "m"}]
                ),
                "DAPR_LLM_COMPONENT_DEFAULT": "openai",
            }
        )
        await stack.publish(_prompt("go", context_id="ctx-c", request_id="c1"))
        await stack.wait_for(lambda got: any(e.kind == "chunk" for e in got))
        await stack.publish({"context_id": "ctx-c", "request_id": "c1"}, topic="cancellations")
        events = await stack.turn("c1")
        await asyncio.sleep(0.5)
        disconnected = llm.disconnected
    assert_turn(events, request_id="c1", context_id="ctx-c", terminal="cancelled")
    assert events[-1].data["reason"]
    usage = events[-2].data
    assert 0 < usage["completion_tokens"] < 200
    assert disconnected == 1  # no tokens kept being paid for
    assert len(reply_text(events).split()) < 200
