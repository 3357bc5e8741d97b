"""Per-conversation order across replicas on Kafka: the client keys prompts by context.

Kafka keeps a partition's order and gives each partition to one replica; the client
publishes with `partitionKey=<context_id>`, so a conversation's turns reach one replica
in publish order, and the worker answers them one at a time in that order.
"""

from __future__ import annotations

import asyncio
import json
from collections.abc import Awaitable, Callable
from typing import Any

import pytest

from testbed.stack import Stack
from tests.fakes.openai_server import FakeOpenAIServer
from worker.client import AsyncClient, AsyncReplyStream

pytestmark = [
    pytest.mark.dapr,
    pytest.mark.parametrize(
        "broker", [pytest.param("kafka", marks=pytest.mark.kafka)], indirect=True
    ),
]

MakeStack = Callable[..., Awaitable[Stack]]
CONVERSATIONS = 20
TURNS = 5


def _reply_to(body: dict[str, Any]) -> list[str]:
    """The fake LLM answers "re <last user message>", a word at a time."""
    last = body["messages"][-1]["content"]
    return ["re", *(f" {word}" for word in last.split(" "))]


def _user_turns(messages: list[dict[str, str]]) -> list[str]:
    return [m["content"] for m in messages if m["role"] == "user"]


async def test_three_replicas_answer_each_conversation_in_publish_order_with_its_history(
    make_stack: MakeStack,
) -> None:
    async with FakeOpenAIServer(_reply_to, token_interval=0.02) as llm:
        stack = await make_stack(
            replicas=3,
            worker_env={
                "WORKER_OPENAI": json.dumps(
                    [{"name": "openai", "base_url": llm.base_url, "model": "m"}]
                ),
                "DAPR_LLM_COMPONENT_DEFAULT": "openai",
            },
        )
        async with AsyncClient(stack.worker_sidecar.grpc_address, timeout=120) as client:
            streams: list[AsyncReplyStream] = []
            # Turn by turn, every conversation's turn n published before its turn n + 1;
            # nothing waits for a reply, so later turns queue behind earlier ones.
            for turn in range(TURNS):
                for conversation in range(CONVERSATIONS):
                    streams.append(
                        await client.generate(
                            f"c{conversation} t{turn}", context_id=f"ctx-{conversation}"
                        )
                    )

            async def text(stream: AsyncReplyStream) -> str:
                async with stream:
                    async for _ in stream:
                        pass
                return stream.text

            replies = await asyncio.gather(*(text(s) for s in streams))
    assert len(replies) == CONVERSATIONS * TURNS
    assert all(reply.startswith("re c") for reply in replies)

    # The LLM saw each conversation's turns in publish order, each with the whole
    # conversation before it: every earlier turn and its complete reply.
    by_conversation: dict[str, list[list[dict[str, str]]]] = {}
    for request in llm.requests:
        messages = request["json"]["messages"]
        by_conversation.setdefault(messages[-1]["content"].split()[0], []).append(messages)
    assert len(by_conversation) == CONVERSATIONS
    for name, requests in by_conversation.items():
        asked = [_user_turns(messages)[-1] for messages in requests]
        assert asked == [f"{name} t{turn}" for turn in range(TURNS)], asked
        for turn, messages in enumerate(requests):
            expected: list[dict[str, str]] = []
            for earlier in range(turn):
                said = f"{name} t{earlier}"
                expected += [
                    {"role": "user", "content": said},
                    {"role": "assistant", "content": f"re {said}"},
                ]
            expected.append({"role": "user", "content": f"{name} t{turn}"})
            assert messages == expected
    # The three replicas shared the work: the partitions were spread over them.
    assert sum("completed" in worker.logs() for worker in stack.workers) >= 2
