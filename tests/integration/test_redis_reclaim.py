"""Redis Streams' own redelivery, on the real daprd and Redis: a message reclaimed while
its first copy still streams (Kafka has no reclaim: a partition waits for its answer)."""

from __future__ import annotations

import asyncio
import json
from collections.abc import Awaitable, Callable

import pytest

from testbed.stack import Stack
from tests.fakes.openai_server import FakeOpenAIServer
from tests.integration.contract_checks import assert_turn, reply_text
from tests.integration.test_delivery import LEASES, QUICK_RECLAIM, _prompt

pytestmark = pytest.mark.dapr

MakeStack = Callable[..., Awaitable[Stack]]


async def test_redis_reclaims_a_message_still_streaming_and_it_is_answered_once(
    make_stack: MakeStack,
) -> None:
    # processingTimeout (2 s, in bare milliseconds so that daprd applies it) is shorter
    # than the reply (about 8 s): Redis hands the same message again, to either replica,
    # while its first copy is still streaming. With "2s" daprd would keep its 60 s default
    # and nothing would be reclaimed here.
    async with FakeOpenAIServer([f"t{i} " for i in range(40)], token_interval=0.2) as llm:
        stack = await make_stack(
            replicas=2,
            pubsub_metadata={"redis": QUICK_RECLAIM},
            worker_env={
                **LEASES,
                "WORKER_OPENAI": json.dumps(
                    [{"name": "openai", "base_url": llm.base_url, "model": "m"}]
                ),
                "DAPR_LLM_COMPONENT_DEFAULT": "openai",
            },
        )
        await stack.publish(_prompt("go", context_id="ctx-reclaim", request_id="reclaim"))
        await stack.turn("reclaim", timeout=40)
        await asyncio.sleep(2)
    logs = stack.worker_logs()
    # The one published message, delivered again while it streamed: reclaimed.
    assert logs.count("delivery of") >= 2
    assert len(llm.requests) == 1
    events = stack.of("reclaim")
    assert {e.data["attempt"] for e in events} == {1}
    assert_turn(events, request_id="reclaim", context_id="ctx-reclaim")
    assert reply_text(events) == "".join(f"t{i} " for i in range(40))
