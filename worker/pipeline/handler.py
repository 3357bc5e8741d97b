"""Answers one delivery: a prompt (validate, take the turn, stream it) or a cancellation."""

from __future__ import annotations

import asyncio
import logging
import traceback
from collections.abc import AsyncGenerator, Sequence
from dataclasses import dataclass, replace
from typing import ClassVar

from pydantic import ValidationError

from worker.contract.events import Failed
from worker.contract.prompt import CancelRequest, Prompt
from worker.errors import InvalidPrompt, PoisonPill, SidecarError, WorkerError
from worker.llm.base import ChatMessage, LLMBackend, LLMRequest, StreamItem
from worker.llm.registry import BackendRegistry
from worker.observability.metrics import Metrics
from worker.observability.tracing import bind_trace, outbound_trace, traced_turn  # [otel]
from worker.pipeline.cancellation import Cancellations, CancelWatch
from worker.pipeline.guard import Ticket, TurnGuard
from worker.pipeline.history import ConversationHistory, with_history
from worker.pipeline.inbound import InboundMessage
from worker.pipeline.intake import Accepted, Limits, Rejected, read_prompt
from worker.pipeline.keyed_lock import KeyedLock
from worker.pipeline.outcome import Outcome, OutcomePolicy
from worker.pipeline.ports import EventSink
from worker.pipeline.publisher import EventStream, TurnAddress
from worker.pipeline.scrub import PiiScrubber
from worker.pipeline.turn import TurnResult, run_turn

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
        guard: TurnGuard,
        cancellations: Cancellations,
        scrubber: PiiScrubber,
        limits: Limits,
        policy: PublishPolicy,
        cancel_topic: str,
        metrics: Metrics | None = None,
    ) -> None:
        self._sink = sink
        self._backends = backends
        self._history = history
        self._guard = guard
        self._cancellations = cancellations
        self._scrubber = scrubber
        self._limits = limits
        self._policy = policy
        self._cancel_topic = cancel_topic
        self._contexts = KeyedLock()
        self._metrics = metrics
        self._outcomes = OutcomePolicy()

    async def handle(self, message: InboundMessage) -> Outcome:
        """Every error of a delivery ends here, as that delivery's outcome."""
        bind_trace(message.extensions)  # [otel] this delivery's log lines carry its trace id
        try:
            if message.topic == self._cancel_topic:
                await self._cancel(message)
            else:
                await self._answer(message)
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
        await self._cancellations.cancel(request.context_id, request.request_id)

    def _stream(
        self, message: InboundMessage, context_id: str, request_id: str, topic: str, attempt: int
    ) -> EventStream:
        trace = outbound_trace(message.extensions)  # [otel] the turn span's, else the prompt's
        address = TurnAddress(
            context_id=context_id,
            request_id=request_id,
            attempt=attempt,
            pubsub=self._policy.pubsub,
            topic=topic,
            source=self._policy.source,
            traceparent=trace.traceparent,  # [otel]
            tracestate=trace.tracestate,  # [otel]
        )
        return EventStream(
            self._sink,
            address,
            attempts=self._policy.attempts,
            backoff=self._policy.backoff,
            metrics=self._metrics,
        )

    async def _answer(self, message: InboundMessage) -> None:
        intake = read_prompt(message, self._limits)
        if isinstance(intake, Rejected):
            if intake.context_id is not None and intake.request_id is not None:
                await self._refuse(
                    message, intake.context_id, intake.request_id, intake.reply_topic, intake.error
                )
            raise intake.error
        try:
            backend = self._backend_for(intake.prompt)
        except WorkerError as exc:
            await self._refuse(
                message, intake.context_id, intake.request_id, intake.reply_topic, exc
            )
            raise
        struck_out = self._outcomes.struck_out(message.id)
        if struck_out:
            backend = _StruckOut(backend.name, backend.model, backend.provider)
        given = [ChatMessage(m.role, m.content) for m in intake.prompt.messages]
        # Scrubbed once, here, whatever the backend: what the history keeps and what any
        # LLM is sent (Dapr 1.18 scrubs a conversation request's inputs only when each
        # input asks, so its request-level flag alone would pass the raw prompt on).
        sent = self._scrub(given) if intake.prompt.scrub_pii else given
        with self._cancellations.watch(intake.context_id, intake.request_id) as watch:
            # One turn per context at a time: in arrival order here, by lease across replicas.
            async with self._contexts.hold(intake.context_id):
                while True:
                    ticket = await self._guard.admit(intake.context_id, intake.request_id)
                    if ticket is None:
                        return  # done already: a duplicate, acknowledged without an LLM call
                    if ticket.replay:
                        await self._replay(message, intake, ticket)
                        return
                    result = await self._attempt(message, intake, backend, sent, ticket, watch)
                    if result is not None:
                        await self._guard.finish(ticket, result.status)
                        await self._remember(intake, sent, result)
                        if struck_out:
                            raise PoisonPill(_StruckOut.reason)
                        return
                    # Lost the lease mid-stream: wait for whoever took over to finish.

    async def _attempt(
        self,
        message: InboundMessage,
        intake: Accepted,
        backend: LLMBackend,
        messages: Sequence[ChatMessage],
        ticket: Ticket,
        watch: CancelWatch,
    ) -> TurnResult | None:
        """Stream one attempt while holding the lease; None if the lease slipped away."""
        try:
            async with asyncio.TaskGroup() as group:
                keep_alive = group.create_task(self._guard.keep_alive(ticket))
                remote_cancel = group.create_task(
                    self._cancellations.poll(watch, self._guard.heartbeat_seconds)
                )
                turn = group.create_task(
                    traced_turn(  # [otel] the turn runs in its `chat {model}` span
                        self._turn(message, intake, backend, messages, ticket, watch),
                        message.extensions,
                        backend,
                        context_id=intake.context_id,
                        request_id=intake.request_id,
                        temperature=intake.prompt.temperature,
                        max_tokens=intake.prompt.max_tokens,
                    )
                )
                lost = group.create_task(ticket.lost.wait())
                await asyncio.wait({turn, lost}, return_when=asyncio.FIRST_COMPLETED)
                for task in (keep_alive, remote_cancel, lost):
                    task.cancel()
                if not turn.done():
                    turn.cancel()
        except BaseException as error:
            # Sidecar trouble or shutdown: free the context at once for the redelivery
            # (the request stays "running", so it is answered again as attempt + 1).
            await self._guard.abandon(ticket)
            if isinstance(error, BaseExceptionGroup):
                raise _first(error) from None
            raise
        if turn.cancelled():
            return None
        return turn.result()

    async def _turn(
        self,
        message: InboundMessage,
        intake: Accepted,
        backend: LLMBackend,
        messages: Sequence[ChatMessage],
        ticket: Ticket,
        watch: CancelWatch,
    ) -> TurnResult:
        prompt = intake.prompt
        if not watch.event.is_set():
            await self._cancellations.check(watch)  # cancelled while queued elsewhere?
        text_filter = None
        if prompt.scrub_pii and not backend.scrubs_pii:
            text_filter = self._scrubber.stream()  # the reply, scrubbed as it streams
        sent = messages
        if prompt.history:
            # Loaded only now, holding the context: the previous turn is complete. Stored
            # unscrubbed by a turn that did not ask, it is scrubbed for one that does.
            history = await self._history.load(intake.context_id)
            sent = with_history(messages, self._scrub(history) if prompt.scrub_pii else history)
        request = LLMRequest(
            messages=sent,
            temperature=prompt.temperature,
            max_tokens=prompt.max_tokens,
            scrub_pii=prompt.scrub_pii,
            traceparent=message.traceparent,
        )
        stream = self._stream(
            message, intake.context_id, intake.request_id, intake.reply_topic, ticket.attempt
        )
        result = await run_turn(
            stream,
            backend,
            request,
            metadata=prompt.metadata,
            restarted=ticket.restarted,
            text_filter=text_filter,
            cancel=watch.event,
            cancel_reason=watch.reason or "cancelled by request",
            on_ending=lambda events, status: self._guard.ending(ticket, events, status),
        )
        log.info(
            "request %s (context %s, attempt %d) %s: %d chars, %d tokens",
            intake.request_id,
            intake.context_id,
            ticket.attempt,
            result.status,
            len(result.reply),
            result.usage.total_tokens,
        )
        return result

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
        """A `failed` event that stands alone: the prompt is never started."""
        stream = self._stream(message, context_id, request_id, topic, attempt=1)
        await stream.emit(Failed, code=error.code, message=error.message, retryable=error.retryable)

    def _scrub(self, messages: Sequence[ChatMessage]) -> list[ChatMessage]:
        return [replace(m, content=self._scrubber.scrub(m.content)) for m in messages]

    async def _replay(self, message: InboundMessage, intake: Accepted, ticket: Ticket) -> None:
        """Publish again what a dead attempt recorded as its last events, then finish."""
        stream = self._stream(
            message, intake.context_id, intake.request_id, intake.reply_topic, ticket.attempt
        )
        try:
            for body in ticket.replay:
                await stream.send("replayed", body)
        except BaseException:
            await self._guard.abandon(ticket)
            raise
        await self._guard.finish(ticket, ticket.terminal)

    async def _remember(
        self, intake: Accepted, messages: Sequence[ChatMessage], result: TurnResult
    ) -> None:
        if result.status != "completed":
            return
        try:
            await self._history.append(intake.context_id, messages, result.reply)
        except SidecarError as exc:
            # The reply is out; losing the memory of it must not trigger a regeneration.
            log.warning("context %s: history not saved: %s", intake.context_id, exc)


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


def _first(group: BaseExceptionGroup[BaseException]) -> BaseException:
    """The first leaf error of a task group's failure, for the one-outcome decision."""
    error: BaseException = group
    while isinstance(error, BaseExceptionGroup):
        error = error.exceptions[0]
    return error
