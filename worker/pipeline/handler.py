"""Routes one delivery: a prompt (validate, wait for its conversation, run its turn) or a
cancellation, and maps how it ended to the answer Dapr gets."""

from __future__ import annotations

import contextlib
import logging
import traceback
from collections.abc import AsyncGenerator, Callable, Sequence
from contextlib import AbstractAsyncContextManager
from dataclasses import dataclass, replace
from typing import ClassVar

from pydantic import ValidationError

from worker.contract.envelopes import InboundMessage
from worker.contract.events import Failed
from worker.contract.prompt import CancelRequest, Prompt
from worker.contract.trace import TraceContext
from worker.errors import InvalidPrompt, PoisonPill, WorkerError
from worker.llm.base import ChatMessage, LLMBackend, LLMRequest, StreamItem
from worker.llm.registry import BackendRegistry
from worker.observability.metrics import Metrics
from worker.observability.tracing import bind_trace, traced_turn  # [otel]
from worker.pipeline.cancellation import Cancellations
from worker.pipeline.guard import TurnGuard
from worker.pipeline.history import ConversationHistory
from worker.pipeline.intake import Limits, Rejected, read_prompt
from worker.pipeline.keyed_lock import KeyedLock
from worker.pipeline.outcome import Outcome, OutcomePolicy
from worker.pipeline.ports import EventSink
from worker.pipeline.publisher import PublishPolicy
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
            scrubber=scrubber,
            metrics=metrics,
        )
        self._backends = backends
        self._scrubber = scrubber
        self._limits = limits
        self._cancel_topic = cancel_topic
        self._contexts = KeyedLock()
        self._outcomes = OutcomePolicy()

    async def handle(self, message: InboundMessage, slot: Slot = _no_slot) -> Outcome:
        """Every error of a delivery ends here, as that delivery's outcome."""
        bind_trace(message.extensions)  # [otel] this delivery's log lines carry its trace id
        try:
            if message.topic == self._cancel_topic:
                await self._cancel(message)
            else:
                await self._answer(message, slot)
        except WorkerError as exc:
            log.warning("message %s: %s (%s)", message.id, exc.message, exc.code)
            return self._outcomes.decide(message.id, exc)
        except Exception as exc:
            # Where, not what: a foreign error's text may quote the prompt.
            frames = "".join(traceback.format_list(traceback.extract_tb(exc.__traceback__)))
            log.error("message %s: unexpected %s\n%s", message.id, type(exc).__name__, frames)
            return self._outcomes.decide(message.id, exc)
        return self._outcomes.decide(message.id, None)

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
                await self._refuse(
                    message, intake.context_id, intake.request_id, intake.reply_topic, intake.error
                )
            raise intake.error
        prompt = intake.prompt
        try:
            backend = self._backend_for(prompt)
        except WorkerError as exc:
            await self._refuse(
                message, intake.context_id, intake.request_id, intake.reply_topic, exc
            )
            raise
        struck_out = self._outcomes.struck_out(message.id)
        if struck_out:
            backend = _StruckOut(backend.name, backend.model, backend.provider)
        given = [ChatMessage(m.role, m.content) for m in prompt.messages]
        # Scrubbed once, here, whatever the backend: what the history keeps and what any
        # LLM is sent (Dapr 1.18 scrubs a conversation request's inputs only when each
        # input asks, so its request-level flag alone would pass the raw prompt on).
        sent = self._scrub(given) if prompt.scrub_pii else given
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
                        sent=sent,
                        # The reply, scrubbed as it streams (unless the backend does it).
                        text_filter=(
                            self._scrubber.stream()
                            if prompt.scrub_pii and not backend.scrubs_pii
                            else None
                        ),
                        extensions=message.extensions,
                    )
                    answered = await traced_turn(  # [otel] the turn in its `chat` span
                        turn.run(),
                        message.extensions,
                        backend,
                        context_id=intake.context_id,
                        request_id=intake.request_id,
                        temperature=prompt.temperature,
                        max_tokens=prompt.max_tokens,
                    )
                    if answered:
                        if struck_out:
                            raise PoisonPill(_StruckOut.reason)
                        return
                    # The lease slipped away: wait for whoever took over (or take it again).

    def _backend_for(self, prompt: Prompt) -> LLMBackend:
        backend = self._backends.get(prompt.llm_component)
        if prompt.max_tokens is not None and not backend.honours_max_tokens:
            raise InvalidPrompt(
                f"max_tokens: LLM component {backend.name!r} cannot limit a reply's tokens "
                "(Dapr 1.18's conversation API has no max_tokens): leave it out"
            )
        return backend

    async def _refuse(
        self,
        message: InboundMessage,
        context_id: str,
        request_id: str,
        topic: str,
        error: WorkerError,
    ) -> None:
        """A `failed` event that stands alone: the prompt is never started (no lease)."""
        stream = self._services.stream(
            context_id, request_id, topic, 1, TraceContext.of(message.extensions)
        )
        await stream.emit(Failed, code=error.code, message=error.message, retryable=error.retryable)

    def _scrub(self, messages: Sequence[ChatMessage]) -> list[ChatMessage]:
        return [replace(m, content=self._scrubber.scrub(m.content)) for m in messages]


@dataclass(frozen=True, slots=True)
class _StruckOut:
    """Stands in for the LLM on a poison pill's last delivery: the turn ends `failed`."""

    name: str
    model: str | None
    provider: str
    scrubs_pii: bool = False
    honours_max_tokens: bool = True
    reason: ClassVar[str] = "this prompt failed unexpectedly on every delivery; it was dropped"

    async def stream(self, request: LLMRequest) -> AsyncGenerator[StreamItem, None]:
        raise PoisonPill(self.reason)
        yield  # an async generator, like every backend  # pragma: no cover
