"""A `PromptHandler` wired to the in-memory fakes, for unit tests."""

from __future__ import annotations

from tests.fakes.ports import FakeSink, ScriptedBackend
from worker.llm.registry import BackendRegistry
from worker.pipeline.cancellation import Cancellations
from worker.pipeline.guard import GuardSettings, TurnGuard
from worker.pipeline.handler import PromptHandler, PublishPolicy
from worker.pipeline.history import ConversationHistory
from worker.pipeline.intake import Limits
from worker.pipeline.ports import StateStore
from worker.pipeline.scrub import PiiScrubber

__all__ = ["fake_handler"]


def fake_handler(
    sink: FakeSink,
    *backends: ScriptedBackend,
    store: StateStore,
    lease_seconds: int = 3,
    history_max_chars: int = 10_000,
    max_wait_seconds: float = 600,
) -> PromptHandler:
    """The first backend is the default; the guard polls every 10 ms."""
    settings = GuardSettings(
        lease_seconds=lease_seconds, poll_seconds=0.01, max_wait_seconds=max_wait_seconds
    )
    return PromptHandler(
        sink=sink,
        backends=BackendRegistry(backends, backends[0].name),
        history=ConversationHistory(
            store,
            "statestore",
            max_turns=5,
            max_chars=history_max_chars,
            ttl_seconds=60,
            timeout=settings.call_timeout,
        ),
        guard=TurnGuard(store, "statestore", settings),
        cancellations=Cancellations(store, "statestore", timeout=settings.call_timeout),
        scrubber=PiiScrubber(),
        limits=Limits(
            max_prompt_bytes=10_000,
            max_messages=10,
            reply_topics=frozenset({"responses"}),
            default_reply_topic="responses",
        ),
        policy=PublishPolicy(pubsub="pubsub", source="/llm-stream-worker", attempts=2, backoff=0),
        cancel_topic="cancellations",
    )
