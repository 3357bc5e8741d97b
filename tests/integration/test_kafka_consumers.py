"""Several Kafka consumers in one replica: prompts on different partitions stream at once.

Dapr's Kafka subscriber runs one bulk batch at a time per component, across all the
partitions the component holds. With one pub/sub component per partition it holds
(`WORKER_PROMPT_PUBSUBS`, all in one consumer group), a replica streams the batches of
its partitions side by side, and a conversation's turns still come one after another,
in publish order, each with the turns before it.
"""

from __future__ import annotations

import asyncio
import json
from collections.abc import Awaitable, Callable
from typing import Any

import pytest

from testbed.brokers import Broker, KafkaBroker
from testbed.stack import Received, Stack
from tests.fakes.openai_server import FakeOpenAIServer

pytestmark = [
    pytest.mark.dapr,
    pytest.mark.parametrize(
        "broker", [pytest.param("kafka", marks=pytest.mark.kafka)], indirect=True
    ),
]

MakeStack = Callable[..., Awaitable[Stack]]
TERMINAL = {"completed", "failed", "cancelled"}
PARTITIONS = 3  # the broker fixture's
# About 4 s a reply at 0.1 s a token: long enough for the others to start meanwhile.
WORDS = 40


def _reply_to(body: dict[str, Any]) -> list[str]:
    """The fake LLM answers "re <last user message>", a word at a time."""
    last = body["messages"][-1]["content"]
    return ["re", *(f" {word}" for word in last.split(" "))]


def _prompt(name: str, context_id: str) -> dict[str, Any]:
    text = " ".join([name, *(f"w{i}" for i in range(WORDS))])
    return {
        "messages": [{"role": "user", "content": text}],
        "context_id": context_id,
        "request_id": name.replace(" ", "-"),
    }


def _position(events: list[Received], request_id: str, kinds: set[str]) -> int:
    return next(
        n
        for n, event in enumerate(events)
        if event.data.get("request_id") == request_id and event.kind in kinds
    )


async def test_one_replica_with_a_consumer_per_partition_streams_the_partitions_at_once(
    make_stack: MakeStack, broker: Broker
) -> None:
    assert isinstance(broker, KafkaBroker)
    async with FakeOpenAIServer(_reply_to, token_interval=0.1) as llm:
        stack = await make_stack(
            # As k8s/overlays/kafka: three consumers (one per partition here), in bulk.
            broker=KafkaBroker.deployed(broker.server),
            worker_env={
                "WORKER_OPENAI": json.dumps(
                    [{"name": "openai", "base_url": llm.base_url, "model": "m"}]
                ),
                "DAPR_LLM_COMPONENT_DEFAULT": "openai",
            },
        )
        # One daprd, three members of the worker's consumer group, a partition each.
        members = await asyncio.to_thread(broker.server.group_members, "llm-stream-worker")
        assert members == PARTITIONS
        # One conversation per partition; the first has a second turn behind its first.
        for partition in range(PARTITIONS):
            await stack.publish(
                _prompt(f"c{partition} t0", f"ctx-{partition}"),
                metadata={"partitionNumber": str(partition)},
            )
        await stack.publish(_prompt("c0 t1", "ctx-0"), metadata={"partitionNumber": "0"})
        firsts = [f"c{partition}-t0" for partition in range(PARTITIONS)]
        events = await stack.wait_for(
            lambda got: sum(e.kind in TERMINAL for e in got) >= PARTITIONS + 1, timeout=120
        )

    assert {e.data["request_id"] for e in events if e.kind == "completed"} == {*firsts, "c0-t1"}
    # The three partitions' replies overlapped: each started before any of them ended.
    last_start = max(_position(events, r, {"started"}) for r in firsts)
    first_end = min(_position(events, r, TERMINAL) for r in firsts)
    assert last_start < first_end, [(e.kind, e.data.get("request_id")) for e in events]
    # A conversation's turns one after the other, in publish order, the second with the
    # first and its whole reply as history.
    assert _position(events, "c0-t0", TERMINAL) < _position(events, "c0-t1", {"started"})
    asked = [
        r["json"]["messages"]
        for r in llm.requests
        if r["json"]["messages"][-1]["content"].startswith("c0 ")
    ]
    assert [m[-1]["content"].split()[:2] for m in asked] == [["c0", "t0"], ["c0", "t1"]]
    first_text = asked[0][-1]["content"]
    assert asked[1][:2] == [
        {"role": "user", "content": first_text},
        {"role": "assistant", "content": f"re {first_text}"},
    ]
