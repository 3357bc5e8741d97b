"""The app callback's bulk delivery (Kafka): a batch runs at once, each entry answered alone."""

from __future__ import annotations

import asyncio
import json
from collections.abc import AsyncIterator

import grpc
import pytest
from dapr.proto.runtime.v1 import appcallback_pb2, appcallback_pb2_grpc
from google.protobuf import empty_pb2

from testbed.net import free_port
from worker.contract.envelopes import InboundMessage
from worker.pipeline.outcome import Outcome
from worker.transport.dapr import AppServer, BulkSubscribe, Subscription

Status = appcallback_pb2.TopicEventResponse.TopicEventResponseStatus


class BarrierHandler:
    """Answers no entry before all `expected` have started: a batch run one entry at a
    time would never get past the first."""

    def __init__(self, expected: int) -> None:
        self.expected = expected
        self.started: list[str] = []
        self.all_started = asyncio.Event()

    async def __call__(self, message: InboundMessage) -> Outcome:
        self.started.append(message.id)
        if len(self.started) == self.expected:
            self.all_started.set()
        await self.all_started.wait()
        prompt = json.loads(message.data)
        return Outcome(prompt["answer"])


@pytest.fixture
async def callback() -> AsyncIterator[tuple[appcallback_pb2_grpc.AppCallbackStub, BarrierHandler]]:
    handler = BarrierHandler(expected=3)
    port = free_port()
    server = AppServer(
        host="127.0.0.1",
        port=port,
        subscriptions=[
            Subscription("pubsub", "prompts", "prompts-deadletter", bulk=BulkSubscribe(50, 200)),
            Subscription("pubsub", "cancellations"),
        ],
        handler=handler,
    )
    await server.start()
    try:
        async with grpc.aio.insecure_channel(f"127.0.0.1:{port}") as channel:
            yield appcallback_pb2_grpc.AppCallbackStub(channel), handler
    finally:
        await server.stop(None)


def _entry(n: int, answer: Outcome) -> appcallback_pb2.TopicEventBulkRequestEntry:
    return appcallback_pb2.TopicEventBulkRequestEntry(
        entry_id=f"e{n}",
        cloud_event=appcallback_pb2.TopicEventCERequest(
            id=f"ce-{n}",
            data=json.dumps({"answer": answer.value}).encode(),
            data_content_type="application/json",
        ),
    )


async def test_a_batch_runs_at_once_in_entry_order_and_each_entry_gets_its_own_status(
    callback: tuple[appcallback_pb2_grpc.AppCallbackStub, BarrierHandler],
) -> None:
    stub, handler = callback
    request = appcallback_pb2.TopicEventBulkRequest(
        topic="prompts",
        pubsub_name="pubsub",
        entries=[
            _entry(0, Outcome.SUCCESS),
            _entry(1, Outcome.RETRY),
            _entry(2, Outcome.DROP),
        ],
    )
    response = await asyncio.wait_for(stub.OnBulkTopicEvent(request), 10)
    assert [(s.entry_id, s.status) for s in response.statuses] == [
        ("e0", Status.SUCCESS),
        ("e1", Status.RETRY),
        ("e2", Status.DROP),
    ]
    # Taken up in the partition's order: the per-context lock then keeps turn order.
    assert handler.started == ["ce-0", "ce-1", "ce-2"]


async def test_only_the_prompt_topic_is_subscribed_in_bulk(
    callback: tuple[appcallback_pb2_grpc.AppCallbackStub, BarrierHandler],
) -> None:
    stub, _ = callback
    listed = await stub.ListTopicSubscriptions(empty_pb2.Empty())
    bulk = {s.topic: s.bulk_subscribe for s in listed.subscriptions}
    assert bulk["prompts"].enabled
    assert (bulk["prompts"].max_messages_count, bulk["prompts"].max_await_duration_ms) == (50, 200)
    assert not bulk["cancellations"].enabled
