"""Answers one prompt delivery: validate, pick the backend, stream the turn, remember it."""

from __future__ import annotations

import logging
from collections.abc import Sequence
from dataclasses import dataclass, replace

from worker.contract.events import Failed
from worker.errors import SidecarError, WorkerError
from worker.llm.base import ChatMessage, LLMRequest
from worker.llm.registry import BackendRegistry
from worker.pipeline.history import ConversationHistory, with_history
from worker.pipeline.inbound import InboundMessage
from worker.pipeline.intake import Accepted, Limits, Rejected, read_prompt
from worker.pipeline.outcome import Outcome, outcome_for
from worker.pipeline.ports import EventSink
from worker.pipeline.publisher import EventStream, TurnAddress
from worker.pipeline.scrub import PiiScrubber
from worker.pipeline.turn import run_turn

__all__ = ["PromptHandler", "PublishPolicy"]

log = logging.getLogger(__name__)


@dataclass(frozen=True, slots=True)
class PublishPolicy:
    pubsub: str
    source: str
    attempts: int
    backoff: float


class PromptHandler:
    def __init__(
        self,
        *,
        sink: EventSink,
        backends: BackendRegistry,
        history: ConversationHistory,
        scrubber: PiiScrubber,
        limits: Limits,
        policy: PublishPolicy,
    ) -> None:
        self._sink = sink
        self._backends = backends
        self._history = history
        self._scrubber = scrubber
        self._limits = limits
        self._policy = policy

    async def handle(self, message: InboundMessage) -> Outcome:
        try:
            await self._answer(message)
        except WorkerError as exc:
            log.warning("prompt %s: %s (%s)", message.id, exc.message, exc.code)
            return outcome_for(exc)
        except Exception as exc:
            log.exception("prompt %s: unexpected error", message.id)
            return outcome_for(exc)
        return outcome_for(None)

    def _stream(
        self, message: InboundMessage, context_id: str, request_id: str, topic: str
    ) -> EventStream:
        address = TurnAddress(
            context_id=context_id,
            request_id=request_id,
            attempt=1,
            pubsub=self._policy.pubsub,
            topic=topic,
            source=self._policy.source,
            traceparent=message.traceparent,
        )
        return EventStream(
            self._sink, address, attempts=self._policy.attempts, backoff=self._policy.backoff
        )

    async def _answer(self, message: InboundMessage) -> None:
        intake = read_prompt(message, self._limits)
        if isinstance(intake, Rejected):
            if intake.context_id is not None and intake.request_id is not None:
                stream = self._stream(
                    message, intake.context_id, intake.request_id, self._limits.default_reply_topic
                )
                await _fail(stream, intake.error)
            raise intake.error
        await self._answer_accepted(message, intake)

    async def _answer_accepted(self, message: InboundMessage, intake: Accepted) -> None:
        prompt = intake.prompt
        stream = self._stream(message, intake.context_id, intake.request_id, intake.reply_topic)
        try:
            backend = self._backends.get(prompt.llm_component)
        except WorkerError as exc:
            await _fail(stream, exc)
            raise
        messages: Sequence[ChatMessage] = [ChatMessage(m.role, m.content) for m in prompt.messages]
        text_filter = None
        if prompt.scrub_pii and not backend.scrubs_pii:
            messages = [replace(m, content=self._scrubber.scrub(m.content)) for m in messages]
            text_filter = self._scrubber.stream()
        sent = messages
        if prompt.history:
            sent = with_history(messages, await self._history.load(intake.context_id))
        request = LLMRequest(
            messages=sent,
            temperature=prompt.temperature,
            max_tokens=prompt.max_tokens,
            scrub_pii=prompt.scrub_pii,
        )
        result = await run_turn(
            stream, backend, request, metadata=prompt.metadata, text_filter=text_filter
        )
        log.info(
            "prompt %s (context %s) %s: %d chars, %d tokens",
            intake.request_id,
            intake.context_id,
            result.status,
            len(result.reply),
            result.usage.total_tokens,
        )
        if result.status == "completed":
            try:
                await self._history.append(intake.context_id, messages, result.reply)
            except SidecarError as exc:
                # The reply is out; losing the memory of it must not trigger a regeneration.
                log.warning("context %s: history not saved: %s", intake.context_id, exc)


async def _fail(stream: EventStream, error: WorkerError) -> None:
    await stream.emit(Failed, code=error.code, message=error.message, retryable=error.retryable)
