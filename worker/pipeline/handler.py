"""Routes one delivery: a prompt (validate, wait for its conversation, run its turn) or a
cancellation, and maps how it ended to the answer Dapr gets."""

from __future__ import annotations

import contextlib
import logging
from collections.abc import Callable
from contextlib import AbstractAsyncContextManager
from dataclasses import replace

from pydantic import ValidationError

from worker.contract.events import Failed
from worker.contract.prompt import CancelRequest
from worker.errors import InvalidPrompt, WorkerError
from worker.llm.base import ChatMessage
from worker.llm.registry import BackendRegistry
from worker.observability.metrics import Metrics
from worker.pipeline.cancellation import Cancellations
from worker.pipeline.guard import TurnGuard
from worker.pipeline.history import ConversationHistory
from worker.pipeline.inbound import InboundMessage
from worker.pipeline.intake import Limits, Rejected, read_prompt
from worker.pipeline.keyed_lock import KeyedLock
from worker.pipeline.outcome import Outcome, outcome_for
from worker.pipeline.ports import EventSink
from worker.pipeline.publisher import EventStream, PublishPolicy
from worker.pipeline.scrub import PiiScrubber
from worker.pipeline.turn import Turn, TurnServices

__all__ = ["PromptHandler", "PublishPolicy", "Slot"]

log = logging.getLogger(__name__)

# A concurrency slot of the runtime, entered once the conversation is ours to answer.
Slot = Callable[[], AbstractAsyncContextManager[None]]


def _no_slot() -> AbstractAsyncContextManager[None]:
    return contextlib.nullcontext()


class PromptHandler:
    def __init__(
        self,
        *,
        sink: EventSink,
        backends: BackendRegistry,
        history: ConversationHistory,
        guard: TurnGuard,
        cancellations: Cancellations,
        scrubber: PiiScrubber,
        limits: Limits,
        policy: PublishPolicy,
        cancel_topic: str,
        metrics: Metrics | None = None,
    ) -> None:
        self._services = TurnServices(
            sink=sink,
            guard=guard,
            history=history,
            cancellations=cancellations,
            policy=policy,
            metrics=metrics,
        )
        self._backends = backends
        self._scrubber = scrubber
        self._limits = limits
        self._cancel_topic = cancel_topic
        self._contexts = KeyedLock()

    async def handle(self, message: InboundMessage, slot: Slot = _no_slot) -> Outcome:
        try:
            if message.topic == self._cancel_topic:
                await self._cancel(message)
            else:
                await self._answer(message, slot)
        except WorkerError as exc:
            log.warning("message %s: %s (%s)", message.id, exc.message, exc.code)
            return outcome_for(exc)
        except Exception as exc:
            log.exception("message %s: unexpected error", message.id)
            return outcome_for(exc)
        return outcome_for(None)

    async def _cancel(self, message: InboundMessage) -> None:
        try:
            request = CancelRequest.model_validate_json(message.data)
        except ValidationError as exc:
            raise InvalidPrompt(f"invalid cancel request: {exc.errors()[0]['msg']}") from exc
        await self._services.cancellations.cancel(
            request.context_id, request.request_id, published_at=message.published_at
        )

    async def _answer(self, message: InboundMessage, slot: Slot) -> None:
        intake = read_prompt(message, self._limits)
        if isinstance(intake, Rejected):
            if intake.context_id is not None and intake.request_id is not None:
                topic = self._limits.default_reply_topic
                await self._fail(message, intake.context_id, intake.request_id, topic, intake.error)
            raise intake.error
        try:
            backend = self._backends.get(intake.prompt.llm_component)
        except WorkerError as exc:
            await self._fail(message, intake.context_id, intake.request_id, intake.reply_topic, exc)
            raise
        prompt = intake.prompt
        given = [ChatMessage(m.role, m.content) for m in prompt.messages]
        # Scrubbed once: what the history keeps, and what a backend that does not scrub
        # itself is sent (Dapr's conversation components get the text and scrub it).
        scrubbed = (
            [replace(m, content=self._scrubber.scrub(m.content)) for m in given]
            if prompt.scrub_pii
            else given
        )
        cancellations = self._services.cancellations
        with cancellations.watch(
            intake.context_id, intake.request_id, published_at=message.published_at
        ) as watch:
            # One turn per context at a time: in arrival order here, by lease across
            # replicas. The conversation first, then a concurrency slot: prompts queued
            # behind one busy conversation must not hold the slots other ones need.
            async with self._contexts.hold(intake.context_id), slot():
                while True:
                    ticket = await self._services.guard.admit(intake.context_id, intake.request_id)
                    if ticket is None:
                        return  # done already: a duplicate, acknowledged without an LLM call
                    turn = Turn(
                        self._services,
                        intake,
                        ticket,
                        watch,
                        backend=backend,
                        sent=given if backend.scrubs_pii else scrubbed,
                        remembered=scrubbed,
                        # The reply, scrubbed as it streams.
                        text_filter=(
                            self._scrubber.stream()
                            if prompt.scrub_pii and not backend.scrubs_pii
                            else None
                        ),
                        traceparent=message.traceparent,
                    )
                    if await turn.run():
                        return
                    # The lease slipped away: wait for whoever took over (or take it again).

    async def _fail(
        self,
        message: InboundMessage,
        context_id: str,
        request_id: str,
        topic: str,
        error: WorkerError,
    ) -> None:
        """Tell the publisher that its prompt cannot be answered (no lease: nothing ran)."""
        stream: EventStream = self._services.stream(
            context_id, request_id, topic, 1, message.traceparent
        )
        await stream.emit(Failed, code=error.code, message=error.message, retryable=error.retryable)
