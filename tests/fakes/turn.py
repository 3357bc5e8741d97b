"""One `Turn` run to its end on in-memory fakes, for tests of what a turn publishes."""

from __future__ import annotations

import asyncio
from collections.abc import Mapping

from tests.fakes.ports import FakeStateStore
from worker.contract.prompt import Prompt
from worker.llm.base import ChatMessage, LLMBackend
from worker.observability.metrics import Metrics
from worker.pipeline.cancellation import Cancellations
from worker.pipeline.guard import GuardSettings, TurnGuard
from worker.pipeline.history import ConversationHistory
from worker.pipeline.intake import Accepted
from worker.pipeline.ports import EventSink
from worker.pipeline.publisher import PublishPolicy
from worker.pipeline.scrub import PiiScrubber
from worker.pipeline.turn import TextFilter, Turn, TurnResult, TurnServices

__all__ = ["TRACEPARENT", "run_turn"]

TRACEPARENT = "00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01"


async def run_turn(
    sink: EventSink,
    backend: LLMBackend,
    *,
    text: str = "Say hello to the world",
    metadata: Mapping[str, str] | None = None,
    cancel: asyncio.Event | None = None,
    text_filter: TextFilter | None = None,
    attempts: int = 5,
    context_id: str = "ctx-1",
    request_id: str = "req-1",
    metrics: Metrics | None = None,
) -> TurnResult:
    """Lease, run and finish one turn (no history); its result, or the error it raised."""
    store = FakeStateStore()
    guard = TurnGuard(store, "statestore", GuardSettings(lease_seconds=30, poll_seconds=0.01))
    cancellations = Cancellations(store, "statestore")
    services = TurnServices(
        sink=sink,
        guard=guard,
        history=ConversationHistory(
            store, "statestore", max_turns=5, max_chars=10_000, ttl_seconds=60
        ),
        cancellations=cancellations,
        policy=PublishPolicy(
            pubsub="pubsub", source="/llm-stream-worker", attempts=attempts, backoff=0.001
        ),
        scrubber=PiiScrubber(),
        metrics=metrics,
    )
    given = [ChatMessage("user", text)]
    prompt = Prompt.model_validate(
        {"messages": [{"role": "user", "content": text}], "metadata": dict(metadata or {})}
    )
    intake = Accepted(prompt, context_id, request_id, "responses")
    ticket = await guard.admit(context_id, request_id)
    assert ticket is not None
    with cancellations.watch(context_id, request_id) as watch:
        if cancel is not None:
            watch.event = cancel
        turn = Turn(
            services,
            intake,
            ticket,
            watch,
            backend=backend,
            sent=given,
            text_filter=text_filter,
            extensions={"traceparent": TRACEPARENT},
        )
        assert await turn.run()
    assert turn.result is not None
    return turn.result
